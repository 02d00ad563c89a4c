//! A MoQ clock on quay: a publisher sends the time once a second as a moq-net broadcast, a quay
//! WebTransport server relays it, and a subscriber prints what arrives. moq-net runs on quay's
//! WebTransport sessions through quay-webtransport's `web-transport-trait` feature.
//!
//! All three on loopback in one process, for five ticks:
//!
//! ```text
//! cargo run -p quay-examples --features moq --bin moq-clock
//! ```
//!
//! Or as three programs, the relay first (it prints its certificate hash):
//!
//! ```text
//! cargo run -p quay-examples --features moq --bin moq-clock -- relay --bind 127.0.0.1:4443
//! cargo run -p quay-examples --features moq --bin moq-clock -- publish --url https://localhost:4443/ --cert-hash HASH
//! cargo run -p quay-examples --features moq --bin moq-clock -- subscribe --url https://localhost:4443/ --cert-hash HASH
//! ```

use std::error::Error;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use moq_net::track::Subscription;
use moq_net::{Hop, Timestamp, origin};
use quay_transport::{CertificateHash, ClientBuilder, Identity, Trust};
use quay_webtransport::{Client, Config, Server, SessionOptions};

type BoxError = Box<dyn Error + Send + Sync>;

/// The broadcast's path and its one track.
const BROADCAST: &str = "clock";
const TRACK: &str = "seconds";

#[derive(Parser)]
#[command(about = "A MoQ clock (moq-net) over quay WebTransport")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
}

#[derive(Subcommand)]
enum Role {
    /// Relay, publisher and subscriber on loopback in this process.
    Local {
        /// How many ticks the subscriber prints before the program ends.
        #[arg(long, default_value_t = 5)]
        ticks: u64,
    },
    /// A WebTransport server that relays every MoQ broadcast announced to it.
    Relay {
        /// The UDP address to listen on.
        #[arg(long, default_value = "127.0.0.1:4443")]
        bind: SocketAddr,
    },
    /// Publishes the time once a second to the relay at `url`.
    Publish {
        #[command(flatten)]
        peer: Peer,
    },
    /// Prints the time from the relay at `url`.
    Subscribe {
        #[command(flatten)]
        peer: Peer,
        /// Stop after this many ticks (default: run until the broadcast ends).
        #[arg(long)]
        ticks: Option<u64>,
    },
}

#[derive(clap::Args)]
struct Peer {
    /// The relay's URL.
    #[arg(long, default_value = "https://localhost:4443/")]
    url: String,
    /// The SHA-256 hash of the relay's certificate (hex), as the relay prints it.
    #[arg(long)]
    cert_hash: CertificateHash,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match Args::parse().role.unwrap_or(Role::Local { ticks: 5 }) {
        Role::Local { ticks } => local(ticks).await,
        Role::Relay { bind } => {
            let server = bind_relay(bind)?;
            relay(server).await;
            Ok(())
        }
        Role::Publish { peer } => {
            let origin = new_origin(1)?;
            let session = connect(&peer, moq_net::Client::new().with_publisher(&origin)).await?;
            tokio::select! {
                result = publish(&origin) => result,
                error = session.closed() => Err(format!("the relay ended the session: {error}").into()),
            }
        }
        Role::Subscribe { peer, ticks } => {
            let origin = new_origin(3)?;
            let session = connect(
                &peer,
                moq_net::Client::new().with_subscriber(origin.clone()),
            )
            .await?;
            let printed = subscribe(&origin, ticks).await;
            // Bounded by moq-net: it closes anyway after one second.
            let _ = session.close().await;
            printed
        }
    }
}

/// Relay, publisher and subscriber in one process, on loopback.
async fn local(ticks: u64) -> Result<(), BoxError> {
    let server = bind_relay("127.0.0.1:0".parse()?)?;
    let identity_hash = server.1;
    let url = format!("https://localhost:{}/", server.0.local_addr()?.port());
    tokio::spawn(relay(server));
    let peer = |url: &str| Peer {
        url: url.to_owned(),
        cert_hash: identity_hash,
    };

    let publish_origin = new_origin(1)?;
    let _publisher = connect(
        &peer(&url),
        moq_net::Client::new().with_publisher(&publish_origin),
    )
    .await?;
    let publisher = tokio::spawn(async move { publish(&publish_origin).await });

    let subscribe_origin = new_origin(3)?;
    let subscriber = connect(
        &peer(&url),
        moq_net::Client::new().with_subscriber(subscribe_origin.clone()),
    )
    .await?;
    let printed = subscribe(&subscribe_origin, Some(ticks)).await;
    let _ = subscriber.close().await;
    publisher.abort();
    printed
}

/// A moq-net origin (a set of broadcasts) with its driver running.
fn new_origin(hop: u64) -> Result<origin::Producer, BoxError> {
    let (producer, driver) = origin::Producer::new(origin::Config::new(Hop::new(hop)?));
    tokio::spawn(moq_net::time::run(driver));
    Ok(producer)
}

/// A quay WebTransport server with a fresh self-signed certificate, whose hash it prints.
fn bind_relay(bind: SocketAddr) -> Result<(Server, CertificateHash), BoxError> {
    let identity = Identity::self_signed(["localhost", "127.0.0.1"])?;
    let hash = identity.certificate_hash();
    let server = Server::bind(bind, identity, Config::default())?;
    println!(
        "relay on https://localhost:{}/ (UDP {}), certificate hash {hash}",
        server.local_addr()?.port(),
        server.local_addr()?
    );
    Ok((server, hash))
}

/// Serves every session of `server` with one moq-net origin, so that what one session
/// announces the others can subscribe to.
async fn relay((server, _hash): (Server, CertificateHash)) {
    let origin = match new_origin(2) {
        Ok(origin) => origin,
        Err(error) => return eprintln!("relay: {error}"),
    };
    while let Some(request) = server.accept().await {
        let origin = origin.clone();
        tokio::spawn(async move {
            // moq-net's versions travel as WebTransport subprotocols: take the client's first
            // that moq-net speaks. None at all: moq-net negotiates in its SETUP instead.
            let chosen = request
                .protocols()
                .into_iter()
                .find(|offered| moq_net::ALPNS.contains(&offered.as_str()));
            let session = match &chosen {
                Some(protocol) => request.ok_with_protocol(protocol).await,
                None => request.ok().await,
            };
            let session = match session {
                Ok(session) => session,
                Err(error) => return eprintln!("relay: session not set up: {error}"),
            };
            let peer = session.remote_address();
            let moq = moq_net::Server::new().with_origin(origin);
            match moq.accept(Instant::now(), session).await {
                Ok((session, driver)) => {
                    println!(
                        "relay: {peer} speaks {}",
                        chosen.as_deref().unwrap_or("SETUP")
                    );
                    let ended = moq_net::time::run(driver).await;
                    println!("relay: {peer} left ({ended})");
                    drop(session);
                }
                Err(error) => eprintln!("relay: MoQ handshake with {peer} failed: {error}"),
            }
        });
    }
}

/// Opens a quay WebTransport session to `peer`, offering moq-net's versions, and runs MoQ on it
/// as `client`.
async fn connect(peer: &Peer, client: moq_net::Client) -> Result<moq_net::Session, BoxError> {
    let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![peer.cert_hash]));
    let wt = Client::connect(&peer.url, &builder, Config::default()).await?;
    let options = moq_net::ALPNS
        .iter()
        .fold(SessionOptions::default(), |options, alpn| {
            options.protocol(*alpn)
        });
    let session = wt.open(&peer.url, &options).await?;
    println!(
        "connected to {} with {}",
        peer.url,
        session.protocol().unwrap_or("no subprotocol")
    );
    let (session, driver) = client.connect(Instant::now(), session).await?;
    tokio::spawn(moq_net::time::run(driver));
    Ok(session)
}

/// Announces the clock broadcast on `origin` and writes the time into it once a second, one
/// group per tick.
async fn publish(origin: &origin::Producer) -> Result<(), BoxError> {
    let broadcast = origin.create_broadcast(BROADCAST)?;
    let track = broadcast.create_track(TRACK, None)?;
    broadcast.announce(Default::default())?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let millis = u64::try_from(started.elapsed().as_millis())?;
        let mut group = track.append_group()?;
        group.write_frame(Timestamp::from_millis(millis)?, wall_clock())?;
        group.finish()?;
    }
}

/// Prints every tick of the clock broadcast reachable from `origin`; ends after `ticks` ticks,
/// or when the broadcast ends.
async fn subscribe(origin: &origin::Producer, ticks: Option<u64>) -> Result<(), BoxError> {
    let broadcast = origin.consume().routed_broadcast(BROADCAST).await?;
    let mut track = broadcast
        .track(TRACK)?
        .subscribe(Subscription::default())
        .await?;
    let mut printed = 0;
    while ticks.is_none_or(|ticks| printed < ticks) {
        let Some(mut group) = track.recv_group().await? else {
            println!("the broadcast ended");
            break;
        };
        while let Some(frame) = group.read_frame().await? {
            println!(
                "tick {}: {}",
                group.sequence,
                String::from_utf8_lossy(&frame.payload)
            );
        }
        printed += 1;
    }
    Ok(())
}

/// The time of day in UTC, as `HH:MM:SS UTC`.
fn wall_clock() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let day = seconds % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}
