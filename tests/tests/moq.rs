//! moq-net 0.3 on quay: MoQ sessions over quay WebTransport sessions, through
//! quay-webtransport's `web-transport-trait` implementation.
//!
//! Three quay WebTransport sessions on loopback: a publisher and a subscriber, each a client of
//! a quay WebTransport server that is a minimal MoQ relay. The relay runs every session it
//! accepts with one moq-net origin as both publisher and subscriber, so what the publisher
//! announces is served to the subscriber, and a subscription travels back to the publisher. The
//! client offers moq-net's versions as WebTransport subprotocols; the server chooses one and
//! moq-net reads it from `protocol()`.
//!
//! Every wait is bounded by `setup::bounded`; nothing sleeps to synchronise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moq_net::track::{self, Subscription};
use moq_net::{Hop, Timestamp, origin};
use quay_tests::relay::{Impairment, Relay};
use quay_tests::setup::{self, bounded};
use quay_webtransport::quay_transport::CertificateHash;
use quay_webtransport::{Config, Server, SessionOptions};
use tokio::sync::mpsc;

/// The broadcast the publisher announces.
const BROADCAST: &str = "room";
/// How long a group may lag the live edge before moq-net skips it: long enough that no group of
/// these tests is ever skipped, since they check that every one arrives.
const MAX_AGE: Duration = Duration::from_secs(600);

/// A moq-net origin with its driver running.
fn origin(hop: u64) -> origin::Producer {
    let hop = Hop::new(hop).expect("a valid hop id");
    let (producer, driver) = origin::Producer::new(origin::Config::new(hop));
    tokio::spawn(moq_net::time::run(driver));
    producer
}

/// A quay WebTransport server on loopback that relays MoQ: every session shares `origin`.
struct MoqRelay {
    addr: SocketAddr,
    hash: CertificateHash,
    task: tokio::task::JoinHandle<()>,
    /// The protocols the relay chose, one per session, for the tests to check.
    chosen: mpsc::UnboundedReceiver<Option<String>>,
}

impl Drop for MoqRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_relay() -> MoqRelay {
    start_server(moq_net::Server::new().with_origin(origin(2)))
}

/// A quay WebTransport server on loopback that runs MoQ as `moq` on every session.
fn start_server(moq: moq_net::Server) -> MoqRelay {
    let identity = setup::identity().unwrap();
    let hash = identity.certificate_hash();
    let server = Server::bind(setup::loopback_any_port(), identity, Config::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let (report, chosen) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(request) = server.accept().await {
            let (moq, report) = (moq.clone(), report.clone());
            tokio::spawn(async move {
                // The client's most preferred protocol that moq-net speaks.
                let offered = request.protocols();
                let chosen = offered
                    .into_iter()
                    .find(|protocol| moq_net::ALPNS.contains(&protocol.as_str()));
                let session = match &chosen {
                    Some(protocol) => request.ok_with_protocol(protocol).await,
                    None => request.ok().await,
                };
                let _ = report.send(chosen);
                let Ok(session) = session else { return };
                let Ok((session, driver)) = moq.accept(Instant::now(), session).await else {
                    return;
                };
                // The MoQ session lives as long as its driver runs.
                let _closed = moq_net::time::run(driver).await;
                drop(session);
            });
        }
    });
    MoqRelay {
        addr,
        hash,
        task,
        chosen,
    }
}

/// Opens a quay WebTransport session to the relay at `addr`, offering the moq-net versions
/// `offered` (their ALPN names) as subprotocols, and starts MoQ on it as `client`.
async fn connect(
    addr: SocketAddr,
    hash: CertificateHash,
    offered: &[&str],
    client: moq_net::Client,
) -> moq_net::Session {
    let connection = setup::connect_pinned(addr, hash).await;
    let client_wt = quay_webtransport::Client::new(connection, Config::default());
    let options = offered
        .iter()
        .fold(SessionOptions::default(), |options, alpn| {
            options.protocol(*alpn)
        });
    let url = format!("https://{}:{}/moq", setup::SERVER_NAME, addr.port());
    let session = bounded(client_wt.open(&url, &options)).await.unwrap();
    // The relay chose the first protocol offered, and the session reports it to moq-net.
    assert_eq!(session.protocol(), offered.first().copied());
    let (session, driver) = bounded(client.connect(Instant::now(), session))
        .await
        .expect("MoQ handshake over quay");
    tokio::spawn(moq_net::time::run(driver));
    session
}

/// The payload of frame `frame` of group `group` of `track`: a few hundred bytes that say where
/// they belong.
fn payload(track: &str, group: u64, frame: u64, size: usize) -> Bytes {
    let mut text = format!("{track} group {group} frame {frame} ").into_bytes();
    text.resize(size.max(text.len()), b'.');
    Bytes::from(text)
}

/// Writes `groups` groups of `frames` frames of `size` bytes each to `track`, each group
/// finished.
fn publish_groups(track: &track::Producer, name: &str, groups: u64, frames: u64, size: usize) {
    for group in 0..groups {
        let mut producer = track.append_group().unwrap();
        for frame in 0..frames {
            let timestamp = Timestamp::from_millis(group * frames + frame).unwrap();
            producer
                .write_frame(timestamp, payload(name, group, frame, size))
                .unwrap();
        }
        producer.finish().unwrap();
    }
}

/// The subscriber's side: the track `name` of the relayed broadcast, subscribed at `priority`.
async fn subscribe(
    broadcast: &moq_net::broadcast::Consumer,
    name: &str,
    priority: u8,
) -> track::Subscriber {
    let track = broadcast.track(name).unwrap();
    let subscription = Subscription::default()
        .with_priority(priority)
        .with_max_age(MAX_AGE);
    bounded(track.subscribe(subscription)).await.unwrap()
}

/// Reads every group of `subscriber` as it arrives, each to its end, and sends
/// `(name, sequence, frames)` on `done` once a group is complete. Ends after `groups` groups.
async fn read_groups(
    mut subscriber: track::Subscriber,
    name: &'static str,
    groups: u64,
    done: mpsc::UnboundedSender<(&'static str, u64, Vec<Bytes>)>,
) {
    let mut readers = Vec::new();
    for _ in 0..groups {
        let Some(mut group) = bounded(subscriber.recv_group()).await.unwrap() else {
            break;
        };
        let done = done.clone();
        // Groups are read side by side, as they arrive: one group's stream does not wait for
        // another's.
        readers.push(tokio::spawn(async move {
            let mut frames = Vec::new();
            while let Some(frame) = bounded(group.read_frame()).await.unwrap() {
                frames.push(frame.payload);
            }
            let _ = done.send((name, group.sequence, frames));
        }));
    }
    for reader in readers {
        reader.await.unwrap();
    }
}

/// A broadcast with one track of 100 groups of 5 frames, published on one quay session and
/// relayed by a quay server to a subscriber on another, over moq-lite (the version moq-net
/// prefers): every frame of every group arrives, in order within its group, and every group
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_track_of_100_groups_crosses_a_quay_relay() {
    relay_100_groups(moq_net::ALPNS).await;
}

/// The same over moq-transport draft 17 (IETF), the only version the clients offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_transport_draft_17_crosses_a_quay_relay() {
    let version: moq_net::Version = "moq-transport-17".parse().unwrap();
    relay_100_groups(&[version.alpn()]).await;
}

/// Publishes 100 groups of 5 frames through a quay relay, the clients offering `offered`, and
/// checks that the subscriber gets all of them.
async fn relay_100_groups(offered: &[&str]) {
    const GROUPS: u64 = 100;
    const FRAMES: u64 = 5;
    const SIZE: usize = 300;
    let started = Instant::now();
    let mut relay = start_relay();

    let publish = origin(1);
    let broadcast = publish.create_broadcast(BROADCAST).unwrap();
    let info = track::Info::default().with_max_age(MAX_AGE);
    let track = broadcast.create_track("frames", info).unwrap();
    broadcast.announce(Default::default()).unwrap();
    let _publisher = connect(
        relay.addr,
        relay.hash,
        offered,
        moq_net::Client::new().with_publisher(&publish),
    )
    .await;

    let subscribe_origin = origin(3);
    let _subscriber = connect(
        relay.addr,
        relay.hash,
        offered,
        moq_net::Client::new().with_subscriber(subscribe_origin.clone()),
    )
    .await;
    for _ in 0..2 {
        let chosen = bounded(relay.chosen.recv()).await.unwrap();
        assert_eq!(chosen.as_deref(), offered.first().copied());
    }

    let relayed = bounded(subscribe_origin.consume().routed_broadcast(BROADCAST))
        .await
        .unwrap();
    let subscriber = subscribe(&relayed, "frames", 128).await;
    // moq-net subscribes upstream once the subscriber waits for groups.
    let (done, mut arrived) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_groups(subscriber, "frames", GROUPS, done));
    // The subscription reached the publisher through the relay: publish from here on.
    bounded(track.used()).await.unwrap();
    publish_groups(&track, "frames", GROUPS, FRAMES, SIZE);

    let mut groups = HashMap::new();
    for _ in 0..GROUPS {
        let (_, sequence, frames) = bounded(arrived.recv()).await.expect("a group is missing");
        assert!(
            groups.insert(sequence, frames).is_none(),
            "group {sequence} arrived twice"
        );
    }
    bounded(reader).await.unwrap();
    for group in 0..GROUPS {
        let frames = groups
            .get(&group)
            .unwrap_or_else(|| panic!("group {group} is missing"));
        let expected: Vec<Bytes> = (0..FRAMES)
            .map(|frame| payload("frames", group, frame, SIZE))
            .collect();
        assert_eq!(frames, &expected, "group {group} has other frames");
    }
    eprintln!(
        "{GROUPS} groups of {FRAMES} frames through the relay over {} in {:?}",
        offered[0],
        started.elapsed()
    );
}

/// The trait's stream priority reaches quinn's scheduler: a quay session's server side opens
/// five streams at `set_priority(10)` and writes 200 KB to each, then five at
/// `set_priority(200)`, all through `web-transport-trait`'s poll half, towards a client behind a
/// UDP link with 60 ms of delay each way (so the congestion window holds the data back). The
/// high-priority streams, written last, finish first at the client.
///
/// Each stream's priority is set right after its open, as moq-net does, before its first
/// write: quay sends a unidirectional stream's header with its first bytes, so quinn queues the
/// stream at that priority from the start. One thread, so that every stream is written before
/// quinn's connection task sends any of them.
#[tokio::test(flavor = "current_thread")]
async fn trait_stream_priority_orders_quinn_sends() {
    use moq_net::transport::poll::{SendStream, Session};
    use moq_net::web_transport_trait::poll::SendStream as PollSend;

    const STREAMS: usize = 5;
    const SIZE: usize = 200_000;
    let started = Instant::now();
    let identity = setup::identity().unwrap();
    let hash = identity.certificate_hash();
    let server = Server::bind(setup::loopback_any_port(), identity, Config::default()).unwrap();
    let delay = Impairment::NONE.delay(Duration::from_millis(60), Duration::ZERO);
    let link = Relay::start_each_way(server.local_addr().unwrap(), delay, delay, 16).unwrap();
    let sender = tokio::spawn(async move {
        let request = bounded(server.accept()).await.unwrap();
        let mut session = bounded(request.ok()).await.unwrap();
        // Every stream is open before any is written to, so that no open waits for the
        // client's stream credit while the streams before it are sent.
        let mut streams = Vec::new();
        for (order, tag) in [(10, b'l'), (200, b'h')] {
            for _ in 0..STREAMS {
                // The trait's poll half, as moq-net drives it.
                let mut stream = bounded(Session::open_uni(&mut session)).await.unwrap();
                PollSend::set_priority(&mut stream, order);
                streams.push((stream, tag));
            }
        }
        for (stream, tag) in &mut streams {
            let data = Bytes::from(vec![*tag; SIZE]);
            bounded(SendStream::write_chunk(stream, data))
                .await
                .unwrap();
            PollSend::finish(stream).unwrap();
        }
        // Kept open until every stream is acknowledged.
        for (stream, _) in &mut streams {
            bounded(SendStream::closed(stream)).await.unwrap();
        }
        session
    });

    let connection = setup::connect_pinned(link.local_addr(), hash).await;
    let url = format!(
        "https://{}:{}/",
        setup::SERVER_NAME,
        link.local_addr().port()
    );
    let client = quay_webtransport::Client::new(connection, Config::default());
    let session = bounded(client.open(&url, &SessionOptions::default()))
        .await
        .unwrap();
    let (done, mut finished) = mpsc::unbounded_channel();
    for _ in 0..2 * STREAMS {
        let mut recv = bounded(session.accept_uni())
            .await
            .unwrap()
            .expect("a stream");
        let done = done.clone();
        tokio::spawn(async move {
            let data = bounded(recv.read_to_end(SIZE)).await.unwrap();
            let _ = done.send(data[0]);
        });
    }
    let mut order = Vec::new();
    for _ in 0..2 * STREAMS {
        order.push(char::from(bounded(finished.recv()).await.unwrap()));
    }
    let order: String = order.into_iter().collect();
    drop(bounded(sender).await.unwrap());
    eprintln!("completion order {order} in {:?}", started.elapsed());
    // At most the first low-priority stream, already under way, finishes before them.
    let last_high = order.rfind('h').unwrap();
    assert!(
        last_high <= STREAMS,
        "high-priority streams finished late: {order}"
    );
}

/// moq-net's track priority holds on a quay session: a publisher's broadcast has two tracks, and
/// the subscriber, behind a UDP link with 60 ms of delay each way (so the congestion window
/// holds the data back at the relay), subscribes to `high` at priority 200 and to `low` at
/// priority 10. The publisher writes ten groups of 40 KB to `low` first, then ten to `high`;
/// the relay serves each group on a stream whose send order moq-net sets from the
/// subscription's priority, so the `high` groups arrive first.
///
/// Counted, not timed: the `low` groups among the first ten to arrive. A few may get ahead:
/// what the relay sent before the `high` groups reached it (the first congestion window, a
/// fraction of a 40 KB group), and, at the end, `low` groups that finish while the last `high`
/// one still waits (seen twice in 42 runs, `hhhhhhhhhllhllllllll`; a lost packet of that group
/// is the likely cause, not confirmed). So at most two. With `set_priority` ignored, the streams
/// share the link and finish in no set order: in 26 runs the first ten held 0 to 10 `low`
/// groups, and 22 of those runs failed here (`llllllllhhhhhhhhlhlh`, `lhhhhhhhhlllllhllllh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_high_priority_track_arrives_first_through_a_delayed_link() {
    const GROUPS: u64 = 10;
    const FRAMES: u64 = 8;
    const SIZE: usize = 5_000;
    let started = Instant::now();
    let relay = start_relay();
    let delay = Impairment::NONE.delay(Duration::from_millis(60), Duration::ZERO);
    let link = Relay::start_each_way(relay.addr, delay, delay, 17).unwrap();

    let publish = origin(1);
    let broadcast = publish.create_broadcast(BROADCAST).unwrap();
    let info = track::Info::default().with_max_age(MAX_AGE);
    let low = broadcast.create_track("low", info.clone()).unwrap();
    let high = broadcast.create_track("high", info).unwrap();
    broadcast.announce(Default::default()).unwrap();
    let _publisher = connect(
        relay.addr,
        relay.hash,
        moq_net::ALPNS,
        moq_net::Client::new().with_publisher(&publish),
    )
    .await;

    let subscribe_origin = origin(3);
    let _subscriber = connect(
        link.local_addr(),
        relay.hash,
        moq_net::ALPNS,
        moq_net::Client::new().with_subscriber(subscribe_origin.clone()),
    )
    .await;
    let relayed = bounded(subscribe_origin.consume().routed_broadcast(BROADCAST))
        .await
        .unwrap();
    let (done, mut arrived) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for (name, priority) in [("low", 10), ("high", 200)] {
        let subscriber = subscribe(&relayed, name, priority).await;
        readers.push(tokio::spawn(read_groups(
            subscriber,
            name,
            GROUPS,
            done.clone(),
        )));
    }
    bounded(low.used()).await.unwrap();
    bounded(high.used()).await.unwrap();
    publish_groups(&low, "low", GROUPS, FRAMES, SIZE);
    publish_groups(&high, "high", GROUPS, FRAMES, SIZE);

    let mut order = String::new();
    let mut groups = HashMap::new();
    for _ in 0..2 * GROUPS {
        let (name, sequence, frames) = bounded(arrived.recv()).await.expect("a group is missing");
        order.push(if name == "high" { 'h' } else { 'l' });
        assert!(
            groups.insert((name, sequence), frames).is_none(),
            "{name} group {sequence} arrived twice"
        );
    }
    for reader in readers {
        bounded(reader).await.unwrap();
    }
    for name in ["low", "high"] {
        for group in 0..GROUPS {
            let expected: Vec<Bytes> = (0..FRAMES)
                .map(|frame| payload(name, group, frame, SIZE))
                .collect();
            assert_eq!(
                groups.get(&(name, group)),
                Some(&expected),
                "{name} group {group}"
            );
        }
    }
    eprintln!("group arrival order {order} in {:?}", started.elapsed());
    let low_first = order[..GROUPS as usize].matches('l').count();
    assert!(
        low_first <= 2,
        "low-priority groups arrived before the high-priority ones: {order}"
    );
}
