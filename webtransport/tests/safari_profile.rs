//! The "Safari profile": a WebTransport client written on quay-h3 that keeps the rules Safari
//! 26.4+ is reported to keep (Safari cannot run here), against quay's server with its default
//! configuration.
//!
//! What Safari is reported to do (webtransport-go #261 and #355, fails-components/webtransport
//! #490; summed up in the project's wire facts):
//! - it announces SETTINGS_WT_MAX_SESSIONS (draft-13/14, 0x14e9cd29);
//! - it refuses a server that announces SETTINGS_WT_MAX_SESSIONS above 1 without all three
//!   WT_INITIAL_* settings (draft-16 §5.5: 0x2b61, 0x2b64, 0x2b65), and one that announces none;
//! - it sends no stream data before it has WT_MAX_DATA credit (draft-16 §5.4: from
//!   SETTINGS_WT_INITIAL_MAX_DATA or a WT_MAX_DATA capsule), and opens no more streams than its
//!   stream credit;
//! - it sends `:protocol webtransport` (not draft-15's `webtransport-h3`).
//!
//! Whether Safari announces flow-control limits of its own is not reported, so the profile runs
//! both ways: with the three WT_INITIAL_* settings (flow control on at both ends) and without
//! (the server's limits bind Safari only). Each run checks streams both ways, datagrams, and a
//! close each way with code and reason.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request};
use quay_h3::proto::frame::FrameType;
use quay_h3::proto::headers::Protocol;
use quay_h3::proto::settings::{SettingId, Settings};
use quay_h3::proto::stream::StreamType;
use quay_h3::proto::{Codec, VarInt};
use quay_h3::stream::ExtensionStream;
use quay_transport::ClientBuilder;
use quay_webtransport::proto::capsule::{CAPSULE_TYPES, WtCapsule};
use quay_webtransport::{Server, Session, SessionError};
use tokio::sync::{mpsc, watch};

mod common;

const CLIENT_CLOSE: (u32, &str) = (42, "bye");
const SERVER_CLOSE: (u32, &str) = (7, "bye from the server");
const ECHO_PATH: &str = "/echo";
const SERVER_CLOSE_PATH: &str = "/server-close";

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(10), future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: timed out"),
    }
}

/// quay's server, default configuration: echoes on [`ECHO_PATH`], closes at once on
/// [`SERVER_CLOSE_PATH`]; reports how each echo session ended.
fn serve(server: Server) -> mpsc::UnboundedReceiver<SessionError> {
    let (ended, endings) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(request) = server.accept().await {
            let ended = ended.clone();
            tokio::spawn(async move {
                let path = request.path().to_owned();
                let session = request.ok().await.expect("accepting the session");
                if path == SERVER_CLOSE_PATH {
                    session.close(SERVER_CLOSE.0, SERVER_CLOSE.1);
                    return;
                }
                echo(&session);
                let _ = ended.send(session.closed().await);
            });
        }
    });
    endings
}

/// Echoes every bidi stream, uni stream (on a new uni stream) and datagram of `session`.
fn echo(session: &Session) {
    let bidi = session.clone();
    tokio::spawn(async move {
        while let Ok(Some((mut send, mut recv))) = bidi.accept_bi().await {
            tokio::spawn(async move {
                let data = recv.read_to_end(1 << 20).await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            });
        }
    });
    let uni = session.clone();
    tokio::spawn(async move {
        while let Ok(Some(mut recv)) = uni.accept_uni().await {
            let data = recv.read_to_end(1 << 20).await.unwrap();
            let mut send = uni.open_uni().await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
        }
    });
    let datagrams = session.clone();
    tokio::spawn(async move {
        while let Ok(datagram) = datagrams.read_datagram().await {
            let _ = datagrams.send_datagram(datagram);
        }
    });
}

/// The flow-control limits the profile announces when it announces any.
const PROFILE_LIMITS: [(SettingId, u32); 3] = [
    (SettingId::WT_INITIAL_MAX_DATA, 1 << 20),
    (SettingId::WT_INITIAL_MAX_STREAMS_UNI, 4),
    (SettingId::WT_INITIAL_MAX_STREAMS_BIDI, 4),
];

/// A connection of the Safari profile, its session's CONNECT stream and what the server granted.
struct Safari {
    client: quay_h3::client::Connection,
    session_id: VarInt,
    connect: quay_h3::stream::SendHalf,
    datagrams: quay_h3::stream::Datagrams,
    /// WT_MAX_DATA: the server's limit on our stream bytes, updated by its capsules.
    max_data: watch::Receiver<u64>,
    /// The server's WT_CLOSE_SESSION, once read.
    closed: watch::Receiver<Option<(u32, String)>>,
    /// Stream bytes sent so far (stream headers excluded, draft-16 §5.4).
    sent: u64,
    /// Streams opened so far, and the server's initial limits (bidi, uni).
    opened: [u64; 2],
    stream_limits: [u64; 2],
}

/// Safari's check of the server's SETTINGS; `Err` says why Safari would refuse the server.
fn safari_accepts(settings: &Settings) -> Result<(), String> {
    let value = |id| settings.get(id).map(VarInt::into_inner);
    let Some(sessions) = value(SettingId::WT_MAX_SESSIONS) else {
        return Err("the server announces no SETTINGS_WT_MAX_SESSIONS".into());
    };
    if sessions == 0 {
        return Err("the server announces SETTINGS_WT_MAX_SESSIONS = 0".into());
    }
    let initial = [
        SettingId::WT_INITIAL_MAX_DATA,
        SettingId::WT_INITIAL_MAX_STREAMS_UNI,
        SettingId::WT_INITIAL_MAX_STREAMS_BIDI,
    ];
    let missing: Vec<_> = initial.iter().filter(|id| value(**id).is_none()).collect();
    if sessions > 1 && !missing.is_empty() {
        return Err(format!(
            "the server announces {sessions} sessions without {missing:?}"
        ));
    }
    if !settings.h3_datagram() || !settings.enable_connect_protocol() {
        return Err("the server lacks H3_DATAGRAM or Extended CONNECT".into());
    }
    Ok(())
}

impl Safari {
    async fn open(
        addr: SocketAddr,
        builder: &ClientBuilder,
        path: &str,
        announce_flow: bool,
    ) -> Self {
        let mut config = quay_h3::Config::default();
        config.enable_extended_connect = true;
        config.enable_datagrams = true;
        config.extra_settings = vec![(SettingId::WT_MAX_SESSIONS, VarInt::from_u32(1))];
        if announce_flow {
            config.extra_settings.extend(
                PROFILE_LIMITS
                    .iter()
                    .map(|&(id, value)| (id, VarInt::from_u32(value))),
            );
        }
        config.extension_uni_stream_types = vec![StreamType::WEBTRANSPORT];
        config.extension_bidi_signals = vec![FrameType::WEBTRANSPORT_STREAM];
        let url = format!("https://localhost:{}{path}", addr.port());
        let client = quay_h3::client::Connection::connect(&url, builder, config)
            .await
            .expect("connecting");
        let settings = client.settings().await.expect("the server's SETTINGS");
        if let Err(why) = safari_accepts(&settings) {
            panic!("Safari would refuse quay's default server: {why}");
        }
        let initial = |id| settings.get(id).map_or(0, VarInt::into_inner);

        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = url.parse().unwrap();
        request.extensions_mut().insert(Protocol::WEBTRANSPORT);
        request.headers_mut().insert(
            http::header::ORIGIN,
            HeaderValue::from_static("https://localhost"),
        );
        let mut stream = client.send_request(request).await.expect("CONNECT");
        let response = stream.recv_response().await.expect("the response");
        assert!(response.status().is_success(), "{response:?}");
        let session_id = stream.id();
        let (connect, mut recv) = stream.split();
        let datagrams = recv.take_datagrams().expect("HTTP datagrams");
        recv.accept_capsules(&CAPSULE_TYPES);
        let (max_data_tx, max_data) = watch::channel(initial(SettingId::WT_INITIAL_MAX_DATA));
        let (closed_tx, closed) = watch::channel(None);
        tokio::spawn(async move {
            while let Ok(Some(capsule)) = recv.recv_capsule().await {
                match WtCapsule::decode(&capsule) {
                    // draft-16 §5.6.2: the limit only grows.
                    Ok(Some(WtCapsule::MaxData(max))) => {
                        max_data_tx.send_modify(|limit| *limit = (*limit).max(max.into_inner()));
                    }
                    Ok(Some(WtCapsule::CloseSession { code, reason })) => {
                        let _ = closed_tx.send(Some((code, reason)));
                    }
                    _ => {}
                }
            }
        });
        Self {
            client,
            session_id: session_id.into(),
            connect,
            datagrams,
            max_data,
            closed,
            sent: 0,
            opened: [0; 2],
            stream_limits: [
                initial(SettingId::WT_INITIAL_MAX_STREAMS_BIDI),
                initial(SettingId::WT_INITIAL_MAX_STREAMS_UNI),
            ],
        }
    }

    /// Waits, as Safari does, until the server's WT_MAX_DATA covers `len` more bytes, and
    /// counts a new stream against the server's initial stream limit of its kind.
    async fn credit(&mut self, bidi: bool, len: usize) {
        let kind = usize::from(!bidi);
        self.opened[kind] += 1;
        assert!(
            self.opened[kind] <= self.stream_limits[kind],
            "the server gave no credit for stream {} ({})",
            self.opened[kind],
            if bidi { "bidi" } else { "uni" }
        );
        let want = self.sent + len as u64;
        bounded(
            "WT_MAX_DATA credit",
            self.max_data.wait_for(|limit| *limit >= want),
        )
        .await
        .expect("the capsule reader ended");
        self.sent = want;
    }

    fn header(&self, ty: VarInt, payload: &[u8]) -> Bytes {
        let mut bytes = BytesMut::new();
        ty.encode(&mut bytes);
        self.session_id.encode(&mut bytes);
        bytes.put_slice(payload);
        bytes.freeze()
    }

    async fn bidi_echo(&mut self, payload: &[u8]) -> Vec<u8> {
        self.credit(true, payload.len()).await;
        let (mut send, mut recv) = self.client.connection().open_bi().await.unwrap();
        let header = self.header(FrameType::WEBTRANSPORT_STREAM.to_varint(), payload);
        send.write_all(&header).await.unwrap();
        send.finish().unwrap();
        bounded("the bidi echo", recv.read_to_end(1 << 20))
            .await
            .unwrap()
    }

    async fn uni_echo(&mut self, payload: &[u8]) -> Vec<u8> {
        self.credit(false, payload.len()).await;
        let mut send = self.client.connection().open_uni().await.unwrap();
        let header = self.header(StreamType::WEBTRANSPORT.to_varint(), payload);
        send.write_all(&header).await.unwrap();
        send.finish().unwrap();
        let arrival = bounded(
            "the server's uni stream",
            self.client.accept_extension_stream(),
        )
        .await
        .expect("the connection ended")
        .expect("a stream");
        let ExtensionStream::Uni {
            session_id,
            mut recv,
            buffered,
            ..
        } = arrival
        else {
            panic!("want a uni stream");
        };
        assert_eq!(session_id, self.session_id);
        let rest = bounded("the uni answer", recv.read_to_end(1 << 20))
            .await
            .unwrap();
        [buffered.as_ref(), &rest].concat()
    }

    /// Sends a datagram every 20 ms until one comes back.
    async fn datagram_echo(&mut self, payload: &'static [u8]) -> Bytes {
        let datagrams = &self.datagrams;
        let connect = &self.connect;
        bounded("the datagram echo", async {
            loop {
                connect
                    .send_datagram(Bytes::from_static(payload))
                    .expect("sending a datagram");
                // Not a wait for a condition: datagrams may be lost (RFC 9221), so one is sent
                // again every 20 ms until an echo comes back.
                tokio::select! {
                    echo = datagrams.recv() => return echo.expect("datagrams ended"),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
        .await
    }

    async fn close(mut self, (code, reason): (u32, &str)) {
        self.connect
            .send_capsule(&WtCapsule::close(code, reason).to_capsule())
            .await
            .unwrap();
        self.connect.finish().unwrap();
    }
}

fn fixture() -> (
    SocketAddr,
    ClientBuilder,
    mpsc::UnboundedReceiver<SessionError>,
) {
    let (server, builder) = common::default_server();
    let addr = server.local_addr().unwrap();
    (addr, builder, serve(server))
}

async fn safari_checks(announce_flow: bool) {
    let (addr, builder, mut endings) = fixture();
    let mut safari = Safari::open(addr, &builder, ECHO_PATH, announce_flow).await;
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(safari.bidi_echo(&payload).await, payload, "bidi echo");
    assert_eq!(
        safari.uni_echo(&payload[..4000]).await,
        &payload[..4000],
        "uni echo"
    );
    assert_eq!(
        safari.datagram_echo(b"safari datagram").await,
        &b"safari datagram"[..]
    );
    safari.close(CLIENT_CLOSE).await;
    match bounded("the server's end", endings.recv()).await {
        Some(SessionError::PeerClosed { code, reason }) => {
            assert_eq!((code, reason.as_str()), CLIENT_CLOSE);
        }
        other => panic!("the server saw {other:?}"),
    }

    let safari = Safari::open(addr, &builder, SERVER_CLOSE_PATH, announce_flow).await;
    let mut closed = safari.closed.clone();
    let close = bounded("the server's close", closed.wait_for(Option::is_some))
        .await
        .expect("the capsule reader ended")
        .clone();
    assert_eq!(
        close,
        Some((SERVER_CLOSE.0, SERVER_CLOSE.1.to_owned())),
        "the server's close"
    );
}

#[tokio::test]
async fn the_default_server_passes_the_safari_profile_with_its_flow_control() {
    safari_checks(true).await;
}

#[tokio::test]
async fn the_default_server_passes_the_safari_profile_without_its_flow_control() {
    safari_checks(false).await;
}

#[test]
fn safari_refuses_many_sessions_without_initial_limits() {
    let mut settings = Settings::new();
    settings
        .insert(SettingId::WT_MAX_SESSIONS, VarInt::from_u32(16))
        .unwrap();
    settings
        .insert(SettingId::H3_DATAGRAM, VarInt::from_u32(1))
        .unwrap();
    settings
        .insert(SettingId::ENABLE_CONNECT_PROTOCOL, VarInt::from_u32(1))
        .unwrap();
    assert!(safari_accepts(&settings).is_err());
    for (id, value) in PROFILE_LIMITS {
        settings.insert(id, VarInt::from_u32(value)).unwrap();
    }
    assert_eq!(safari_accepts(&settings), Ok(()));
}
