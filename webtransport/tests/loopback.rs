//! Our client against our server on loopback: every session feature, on real sockets.
//! Every wait is bounded by [`bounded`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use quay_h3::Code;
use quay_h3::proto::headers::Protocol;
use quay_h3::proto::settings::SettingId;
use quay_h3::proto::{Codec, VarInt};
use quay_transport::{ClientBuilder, Identity, TransportOptions, Trust};
use quay_webtransport::proto::error::{
    WT_BUFFERED_STREAM_REJECTED, WT_FLOW_CONTROL_ERROR, WT_SESSION_GONE,
};
use quay_webtransport::proto::settings::FlowControlLimits;
use quay_webtransport::server::{Connection, Incoming};
use quay_webtransport::{
    Client, Config, ConnectError, Server, Session, SessionError, SessionOptions, StreamError,
};

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("timed out")
}

struct Fixture {
    server: Server,
    addr: SocketAddr,
    builder: ClientBuilder,
}

fn fixture(config: Config) -> Fixture {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let hash = identity.certificate_hash();
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), identity, config).unwrap();
    let addr = server.local_addr().unwrap();
    let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]));
    Fixture {
        server,
        addr,
        builder,
    }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    async fn client(&self) -> Client {
        Client::connect(&self.url("/"), &self.builder, Config::default())
            .await
            .unwrap()
    }

    /// Opens a session at `path` and accepts it on the server.
    async fn pair(&self, client: &Client, path: &str) -> (Session, Session) {
        let url = self.url(path);
        let options = SessionOptions::default();
        let opening = client.open(&url, &options);
        let (client_session, server_session) = tokio::join!(opening, async {
            let request = self.server.accept().await.unwrap();
            assert_eq!(request.path(), path);
            request.ok().await.unwrap()
        });
        (client_session.unwrap(), server_session)
    }
}

/// Echoes every bidi stream, uni stream (as a new uni stream) and datagram of `session`.
fn echo(session: Session) {
    let bidi = session.clone();
    tokio::spawn(async move {
        while let Ok(Some((mut send, mut recv))) = bidi.accept_bi().await {
            tokio::spawn(async move {
                // Chunk by chunk, so a large stream is never held whole.
                while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX).await {
                    if send.write_chunk(chunk).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish();
            });
        }
    });
    let uni = session.clone();
    tokio::spawn(async move {
        while let Ok(Some(mut recv)) = uni.accept_uni().await {
            let uni = uni.clone();
            tokio::spawn(async move {
                let data = recv.read_to_end(1 << 20).await.unwrap();
                let mut send = uni.open_uni().await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            });
        }
    });
    tokio::spawn(async move {
        while let Ok(datagram) = session.read_datagram().await {
            let _ = session.send_datagram(datagram);
        }
    });
}

async fn bidi_echo(session: &Session, payload: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(payload).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(1 << 20).await.unwrap()
}

#[tokio::test]
async fn streams_and_datagrams_echo() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/echo").await;
        echo(server);
        assert_eq!(bidi_echo(&session, b"hello").await, b"hello");
        // Uni both ways: ours out, the server's back.
        let mut send = session.open_uni().await.unwrap();
        send.write_all(b"one way").await.unwrap();
        send.finish().unwrap();
        let mut back = session.accept_uni().await.unwrap().unwrap();
        assert_eq!(back.read_to_end(100).await.unwrap(), b"one way");
        // Datagrams: resend until one echo arrives (they may be lost).
        let max = session.max_datagram_size().unwrap();
        assert!(max > 1000 && max < 1500, "{max}");
        let datagram = loop {
            session.send_datagram(Bytes::from_static(b"ping")).unwrap();
            let read = tokio::time::timeout(Duration::from_millis(200), session.read_datagram());
            if let Ok(datagram) = read.await {
                break datagram.unwrap();
            }
        };
        assert_eq!(datagram, "ping");
        assert!(matches!(
            session.send_datagram(Bytes::from(vec![0; max + 1])),
            Err(quay_webtransport::DatagramError::TooLarge)
        ));
    })
    .await;
}

#[tokio::test]
async fn server_opens_bidi_and_uni_streams() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/push").await;
        let (mut send, mut recv) = server.open_bi().await.unwrap();
        send.write_all(b"from the server").await.unwrap();
        send.finish().unwrap();
        let (mut answer, mut question) = session.accept_bi().await.unwrap().unwrap();
        assert_eq!(question.read_to_end(100).await.unwrap(), b"from the server");
        answer.write_all(b"from the client").await.unwrap();
        answer.finish().unwrap();
        assert_eq!(recv.read_to_end(100).await.unwrap(), b"from the client");
        let mut uni = server.open_uni().await.unwrap();
        uni.write_all(b"uni").await.unwrap();
        uni.finish().unwrap();
        let mut got = session.accept_uni().await.unwrap().unwrap();
        assert_eq!(got.read_to_end(100).await.unwrap(), b"uni");
    })
    .await;
}

#[tokio::test]
async fn a_thousand_concurrent_streams() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/echo").await;
        echo(server);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1000u32 {
            let session = session.clone();
            tasks.spawn(async move {
                let payload = format!("stream {i}");
                assert_eq!(
                    bidi_echo(&session, payload.as_bytes()).await,
                    payload.as_bytes()
                );
            });
        }
        let mut done = 0;
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
            done += 1;
        }
        assert_eq!(done, 1000);
    })
    .await;
}

#[tokio::test]
async fn a_100_mib_stream_arrives_byte_for_byte() {
    const SIZE: usize = 100 << 20;
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/big").await;
        let pattern = |i: usize| (i % 251) as u8;
        let sender = tokio::spawn(async move {
            let mut send = server.open_uni().await.unwrap();
            let chunk: Vec<u8> = (0..1 << 20).map(pattern).collect();
            let chunk = Bytes::from(chunk);
            for _ in 0..SIZE >> 20 {
                send.write_chunk(chunk.clone()).await.unwrap();
            }
            send.finish().unwrap();
            server
        });
        let mut recv = session.accept_uni().await.unwrap().unwrap();
        let mut offset = 0usize;
        while let Some(chunk) = recv.read_chunk(usize::MAX).await.unwrap() {
            for (i, byte) in chunk.iter().enumerate() {
                // 1 MiB chunks of the pattern: position within the chunk decides the byte.
                assert_eq!(
                    *byte,
                    pattern((offset + i) % (1 << 20)),
                    "at {}",
                    offset + i
                );
            }
            offset += chunk.len();
        }
        assert_eq!(offset, SIZE);
        drop(sender.await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn close_codes_and_reasons_both_ways() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/a").await;
        // A read that waits for a datagram ends with the session.
        let waiting = tokio::spawn({
            let server = server.clone();
            async move { server.read_datagram().await }
        });
        session.close(42, "bye from the client");
        assert!(matches!(
            session.closed().await,
            SessionError::LocallyClosed
        ));
        assert!(matches!(
            session.read_datagram().await,
            Err(SessionError::LocallyClosed)
        ));
        match server.closed().await {
            SessionError::PeerClosed { code, reason } => {
                assert_eq!((code, reason.as_str()), (42, "bye from the client"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            waiting.await.unwrap(),
            Err(SessionError::PeerClosed { code: 42, .. })
        ));
        assert!(matches!(
            server.open_bi().await,
            Err(SessionError::PeerClosed { code: 42, .. })
        ));

        let (session, server) = fx.pair(&client, "/b").await;
        // A reason over 1024 bytes is cut at a character boundary.
        let long = "é".repeat(600);
        server.close(u32::MAX, &long);
        match session.closed().await {
            SessionError::PeerClosed { code, reason } => {
                assert_eq!(code, u32::MAX);
                assert_eq!(reason, "é".repeat(512));
            }
            other => panic!("{other:?}"),
        }
        // The connection outlives both sessions.
        let (session, _server) = fx.pair(&client, "/c").await;
        assert!(session.close_reason().is_none());
    })
    .await;
}

/// Every accept has one shape: `Ok(None)` when its source ended normally, the error when it
/// ended otherwise. A session closed with code 0 ends normally; one closed with any other code
/// does not, and the accept carries the peer's code and reason.
#[tokio::test]
async fn accepts_end_with_none_on_a_clean_close_and_the_reason_otherwise() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/clean").await;
        let (bidi, uni) = (server.clone(), server.clone());
        let bidi = tokio::spawn(async move { bidi.accept_bi().await.map(|s| s.is_some()) });
        let uni = tokio::spawn(async move { uni.accept_uni().await.map(|s| s.is_some()) });
        session.close(0, "");
        assert!(matches!(bidi.await.unwrap(), Ok(false)));
        assert!(matches!(uni.await.unwrap(), Ok(false)));
        // We closed it ourselves: also normal.
        assert!(matches!(session.accept_uni().await, Ok(None)));

        let (session, server) = fx.pair(&client, "/code").await;
        session.close(42, "not clean");
        match server.accept_bi().await {
            Err(SessionError::PeerClosed { code, reason }) => {
                assert_eq!((code, reason.as_str()), (42, "not clean"));
            }
            other => panic!("{:?}", other.map(|s| s.is_some())),
        }
        assert!(matches!(
            server.accept_uni().await,
            Err(SessionError::PeerClosed { code: 42, .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn the_server_closes_the_connection_once_the_clients_last_session_is_closed() {
    // RFC 9114 §5.2: a client whose handle is gone and whose one request is a session it closed
    // says with GOAWAY that it wants nothing more; the server, once done with the session (its
    // handles gone), closes the connection itself, so the client need not wait for its FIN.
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/last").await;
        let connection = client.connection().clone();
        drop(client);
        session.close(7, "last");
        drop(session);
        match server.closed().await {
            SessionError::PeerClosed { code, reason } => {
                assert_eq!((code, reason.as_str()), (7, "last"));
            }
            other => panic!("{other:?}"),
        }
        // The server's CONNECT stream lives as long as a handle of the session does.
        drop(server);
        match connection.closed().await {
            quay_transport::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(Code::from_varint(close.error_code), Code::H3_NO_ERROR);
            }
            other => panic!("expected the server's close, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_ends_the_session_with_code_0() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/drop").await;
        drop(session);
        assert!(matches!(
            server.closed().await,
            SessionError::PeerClosed { code: 0, ref reason } if reason.is_empty()
        ));
    })
    .await;
}

#[tokio::test]
async fn drain_is_surfaced() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/drain").await;
        server.drain();
        session.drained().await;
        // Draining keeps the session open; a clean end after it reads as a drain.
        assert!(session.close_reason().is_none());
        assert_eq!(bidi_echo_after(&session, &server).await, b"still open");
        drop(server);
        drop(session);
        let (session, server) = fx.pair(&client, "/drain2").await;
        session.drain();
        server.drained().await;
        drop(session);
        assert!(matches!(server.closed().await, SessionError::PeerDrained));
    })
    .await;
}

async fn bidi_echo_after(session: &Session, server: &Session) -> Vec<u8> {
    echo(server.clone());
    bidi_echo(session, b"still open").await
}

#[tokio::test]
async fn reset_and_stop_codes_are_application_codes() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server) = fx.pair(&client, "/codes").await;
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        let (server_send, mut server_recv) = server.accept_bi().await.unwrap().unwrap();
        send.reset(77).unwrap();
        // Bounded: the reset arrives after at most the one byte.
        let error = loop {
            match server_recv.read_chunk(usize::MAX).await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("finished, not reset"),
                Err(error) => break error,
            }
        };
        assert!(matches!(error, StreamError::Reset(77)), "{error:?}");
        recv.stop(u32::MAX).unwrap();
        assert_eq!(server_send.stopped().await.unwrap(), Some(u32::MAX));
    })
    .await;
}

#[tokio::test]
async fn rejected_sessions_report_their_status() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let url = fx.url("/forbidden");
        let options = SessionOptions::default();
        let (opened, ()) = tokio::join!(client.open(&url, &options), async {
            let request = fx.server.accept().await.unwrap();
            request.reject(StatusCode::FORBIDDEN).await;
        });
        assert!(
            matches!(opened, Err(ConnectError::Rejected(StatusCode::FORBIDDEN))),
            "{opened:?}"
        );
        // The connection is still good for the next one.
        let (session, _server) = fx.pair(&client, "/fine").await;
        assert!(session.close_reason().is_none());
    })
    .await;
}

#[tokio::test]
async fn request_details_and_subprotocols() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let url = fx.url("/details?room=7");
        let options = SessionOptions::default()
            .header(
                http::header::ORIGIN,
                "https://example.test".parse().unwrap(),
            )
            .protocol("moq-00")
            .protocol("moq-01");
        let (opened, ()) = tokio::join!(client.open(&url, &options), async {
            let request = fx.server.accept().await.unwrap();
            assert_eq!(request.path(), "/details");
            assert_eq!(request.url().query(), Some("room=7"));
            assert_eq!(request.authority(), format!("localhost:{}", fx.addr.port()));
            assert_eq!(request.origin(), Some("https://example.test"));
            assert_eq!(request.protocols(), ["moq-00", "moq-01"]);
            assert_eq!(request.upgrade_token(), Some("webtransport-h3"));
            assert_eq!(
                request.draft(),
                quay_webtransport::proto::settings::Draft::Draft15
            );
            let session = request.ok_with_protocol("moq-01").await.unwrap();
            assert_eq!(session.protocol(), Some("moq-01"));
        });
        assert_eq!(opened.unwrap().protocol(), Some("moq-01"));
    })
    .await;
}

#[tokio::test]
async fn two_sessions_share_a_connection_and_close_apart() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (first, first_server) = fx.pair(&client, "/one").await;
        let (second, second_server) = fx.pair(&client, "/two").await;
        assert_eq!(first.stable_id(), second.stable_id(), "one QUIC connection");
        assert_ne!(first.session_id(), second.session_id());
        // Streams and datagrams go to their own session.
        let mut uni = first.open_uni().await.unwrap();
        uni.write_all(b"for one").await.unwrap();
        uni.finish().unwrap();
        let mut uni = second.open_uni().await.unwrap();
        uni.write_all(b"for two").await.unwrap();
        uni.finish().unwrap();
        let mut got = second_server.accept_uni().await.unwrap().unwrap();
        assert_eq!(got.read_to_end(100).await.unwrap(), b"for two");
        let mut got = first_server.accept_uni().await.unwrap().unwrap();
        assert_eq!(got.read_to_end(100).await.unwrap(), b"for one");
        // Both sessions' readers wait at once; whichever reads a datagram off the connection
        // hands the other's over. Resent until both arrive (datagrams may be lost).
        let readers = tokio::spawn({
            let (one, two) = (first_server.clone(), second_server.clone());
            async move { tokio::join!(one.read_datagram(), two.read_datagram()) }
        });
        for _ in 0..50 {
            first
                .send_datagram(Bytes::from_static(b"dgram one"))
                .unwrap();
            second
                .send_datagram(Bytes::from_static(b"dgram two"))
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            if readers.is_finished() {
                break;
            }
        }
        let (one, two) = readers.await.unwrap();
        assert_eq!(one.unwrap(), "dgram one");
        assert_eq!(two.unwrap(), "dgram two");
        // One closing leaves the other running.
        first.close(1, "one is done");
        assert!(matches!(
            first_server.closed().await,
            SessionError::PeerClosed { code: 1, .. }
        ));
        echo(second_server);
        assert_eq!(bidi_echo(&second, b"two lives").await, b"two lives");
        assert!(second.close_reason().is_none());
        // A stream for the closed session is refused with WT_SESSION_GONE.
        let mut late = client.connection().open_uni().await.unwrap();
        late.write_all(&wt_uni_header(first.session_id().unwrap().into()))
            .await
            .unwrap();
        assert_eq!(
            late.stopped().await.unwrap(),
            Some(WT_SESSION_GONE.to_varint())
        );
    })
    .await;
}

#[tokio::test]
async fn streams_never_accepted_are_refused_when_the_session_ends() {
    let fx = fixture(Config::default());
    bounded(async {
        let client = fx.client().await;
        let (session, server_session) = fx.pair(&client, "/").await;
        let mut uni = session.open_uni().await.unwrap();
        uni.write_all(b"nobody reads this").await.unwrap();
        let (mut bidi, _bidi_recv) = session.open_bi().await.unwrap();
        bidi.write_all(b"nor this").await.unwrap();
        // Routed to the server's session and queued there, never accepted.
        tokio::time::sleep(Duration::from_millis(50)).await;
        server_session.close(5, "done");
        assert!(matches!(
            session.closed().await,
            SessionError::PeerClosed { code: 5, .. }
        ));
        for stream in [&mut uni, &mut bidi] {
            assert!(matches!(
                stream.stopped().await,
                Err(StreamError::SessionGone)
            ));
        }
    })
    .await;
}

fn wt_uni_header(session_id: VarInt) -> Vec<u8> {
    let mut buf = Vec::new();
    VarInt::from_u32(0x54).encode(&mut buf);
    session_id.encode(&mut buf);
    buf
}

#[tokio::test]
async fn early_streams_are_buffered_then_refused_past_the_bound() {
    let mut config = Config::default();
    config.max_buffered_streams = 2;
    let fx = fixture(config);
    bounded(async {
        let client = fx.client().await;
        // Streams for session 400, which no CONNECT has named yet.
        let early = VarInt::from_u32(400);
        let mut streams = Vec::new();
        for _ in 0..3 {
            let mut send = client.connection().open_uni().await.unwrap();
            send.write_all(&wt_uni_header(early)).await.unwrap();
            streams.push(send);
        }
        // The third one is over the bound of two.
        let mut stopped = Vec::new();
        for send in &streams {
            let result = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
            stopped.push(result.ok().map(Result::unwrap));
        }
        assert_eq!(
            stopped,
            [
                None,
                None,
                Some(Some(WT_BUFFERED_STREAM_REJECTED.to_varint()))
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn session_limit_from_settings() {
    let mut config = Config::default();
    config.max_sessions = 1;
    let fx = fixture(config);
    bounded(async {
        let client = fx.client().await;
        let (_first, _server) = fx.pair(&client, "/only").await;
        let second = client
            .open(&fx.url("/more"), &SessionOptions::default())
            .await;
        assert!(
            matches!(second, Err(ConnectError::NotSupported(_))),
            "{second:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_draft16_client_without_flow_control_gets_one_session() {
    // draft-16 §5.1: no session count and no flow control means one session per connection.
    let fx = fixture(Config::default());
    bounded(async {
        let mut h3 = quay_h3::Config::default();
        h3.enable_extended_connect = true;
        h3.enable_datagrams = true;
        h3.extra_settings = vec![(SettingId::WT_ENABLED, VarInt::from_u32(1))];
        let client = quay_h3::client::Connection::connect(&fx.url("/"), &fx.builder, h3)
            .await
            .unwrap();
        let connect = || {
            let mut request = http::Request::connect(fx.url("/")).body(()).unwrap();
            request.extensions_mut().insert(Protocol::WEBTRANSPORT_H3);
            request
        };
        let mut first = client.send_request(connect()).await.unwrap();
        let accepted = async { fx.server.accept().await.unwrap().ok().await.unwrap() };
        let (response, _session) = tokio::join!(first.recv_response(), accepted);
        assert_eq!(response.unwrap().status(), StatusCode::OK);
        let mut second = client.send_request(connect()).await.unwrap();
        assert!(matches!(
            second.recv_response().await,
            Err(quay_h3::StreamError::Reset(Code::H3_REQUEST_REJECTED))
        ));
    })
    .await;
}

#[tokio::test]
async fn connect_errors_tell_tls_from_no_webtransport() {
    let fx = fixture(Config::default());
    bounded(async {
        // Pinned to a different certificate.
        let other = Identity::self_signed(["localhost"])
            .unwrap()
            .certificate_hash();
        let wrong = ClientBuilder::new().trust(Trust::CertificateHashes(vec![other]));
        let result = quay_webtransport::connect(&fx.url("/"), &wrong).await;
        assert!(matches!(result, Err(ConnectError::Tls(_))), "{result:?}");

        // A plain HTTP/3 server: no WebTransport settings.
        let identity = Identity::self_signed(["localhost"]).unwrap();
        let hash = identity.certificate_hash();
        let h3 = quay_h3::Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            identity,
            quay_h3::Config::default(),
        )
        .unwrap();
        let port = h3.local_addr().unwrap().port();
        // Keep the connections: a dropped server handle closes its connection.
        tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Some(connection) = h3.accept().await {
                connections.push(connection);
            }
        });
        let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]));
        let result =
            quay_webtransport::connect(&format!("https://localhost:{port}/"), &builder).await;
        assert!(
            matches!(result, Err(ConnectError::NotSupported(_))),
            "{result:?}"
        );

        // Nobody there: the handshake times out.
        let mut options = TransportOptions::default();
        options.idle_timeout = Duration::from_millis(300);
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let silent = fx.builder.clone().options(options);
        let result =
            quay_webtransport::connect(&format!("https://localhost:{port}/"), &silent).await;
        assert!(
            matches!(result, Err(ConnectError::Transport(_))),
            "{result:?}"
        );
        drop(socket);
    })
    .await;
}

#[tokio::test]
async fn http3_requests_and_sessions_share_one_connection() {
    let config = Config::default();
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let hash = identity.certificate_hash();
    let h3 = quay_h3::Server::bind("127.0.0.1:0".parse().unwrap(), identity, config.h3_config())
        .unwrap();
    let port = h3.local_addr().unwrap().port();
    let server_config = config.clone();
    tokio::spawn(async move {
        while let Some(connection) = h3.accept().await {
            let connection = Connection::new(connection, server_config.clone());
            tokio::spawn(async move {
                while let Some(incoming) = connection.accept().await {
                    match incoming {
                        Incoming::Session(request) => echo(request.ok().await.unwrap()),
                        Incoming::Http(request, mut stream) => {
                            stream.send_response(http::Response::new(())).await.unwrap();
                            let body = format!("plain {}", request.uri().path());
                            stream.send_data(Bytes::from(body)).await.unwrap();
                            stream.finish().unwrap();
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    bounded(async {
        let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]));
        let url = format!("https://localhost:{port}/wt");
        let client = Client::connect(&url, &builder, config).await.unwrap();
        let session = client.open(&url, &SessionOptions::default()).await.unwrap();
        assert_eq!(bidi_echo(&session, b"session").await, b"session");
        let request = http::Request::get(format!("https://localhost:{port}/page"))
            .body(Bytes::new())
            .unwrap();
        let response = client.h3().request(request).await.unwrap();
        assert_eq!(response.body(), "plain /page");
        assert_eq!(bidi_echo(&session, b"still").await, b"still");
    })
    .await;
}

#[tokio::test]
async fn raw_sessions_have_the_same_api_on_bare_quic() {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let hash = identity.certificate_hash();
    let mut options = TransportOptions::default();
    options.alpn_protocols = vec![b"moq-00".to_vec()];
    let server = quay_transport::ServerBuilder::new(identity)
        .options(options.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = server.local_addr().unwrap();
    bounded(async {
        let client = ClientBuilder::new()
            .trust(Trust::CertificateHashes(vec![hash]))
            .options(options)
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let (client_conn, server_conn) = tokio::join!(
            async { client.connect(addr, "localhost").unwrap().await.unwrap() },
            async { server.accept().await.unwrap().await.unwrap() }
        );
        let session = Session::raw(client_conn);
        let server = Session::raw(server_conn);
        assert_eq!(session.session_id(), None);
        echo(server.clone());
        assert_eq!(bidi_echo(&session, b"raw").await, b"raw");
        let max = session.max_datagram_size().unwrap();
        assert_eq!(
            max,
            session.connection().max_datagram_size().unwrap(),
            "no prefix"
        );
        let (mut send, _recv) = session.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        send.reset(9).unwrap();
        server.close(5, "raw bye");
        assert!(matches!(
            session.closed().await,
            SessionError::PeerClosed { code: 5, ref reason } if reason == "raw bye"
        ));
    })
    .await;
}

fn flow_config(max_data: u64, bidi: u64, uni: u64) -> Config {
    let mut limits = FlowControlLimits::default();
    limits.max_data = max_data;
    limits.max_streams_bidi = bidi;
    limits.max_streams_uni = uni;
    let mut config = Config::default();
    config.flow_control = Some(limits);
    config
}

#[tokio::test]
async fn flow_control_limits_streams_and_data_when_both_sides_turn_it_on() {
    let fx = fixture(flow_config(1_000, 2, 2));
    bounded(async {
        let client = Client::connect(&fx.url("/"), &fx.builder, flow_config(1_000, 2, 2))
            .await
            .unwrap();
        let (session, server_session) = fx.pair(&client, "/").await;
        // Two bidi streams are allowed; the third waits for the server to accept one.
        let mut first = session.open_bi().await.unwrap();
        let _second = session.open_bi().await.unwrap();
        first.0.write_all(b"x").await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(200), session.open_bi()).await;
        assert!(third.is_err(), "a third stream opened past the limit of 2");
        let (_send, mut recv) = server_session.accept_bi().await.unwrap().unwrap();
        assert_eq!(recv.read(&mut [0; 8]).await.unwrap(), Some(1));
        let _third = session.open_bi().await.unwrap();
        // 100 kB through a session window of 1,000 bytes: credit follows the reader.
        let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut uni = session.open_uni().await.unwrap();
        let writer = tokio::spawn({
            let payload = payload.clone();
            async move {
                uni.write_all(&payload).await.unwrap();
                uni.finish().unwrap();
            }
        });
        let mut got = server_session.accept_uni().await.unwrap().unwrap();
        assert_eq!(got.read_to_end(200_000).await.unwrap(), payload);
        writer.await.unwrap();
        // And the other way, through AsyncWrite.
        let mut uni = server_session.open_uni().await.unwrap();
        tokio::spawn({
            let payload = payload.clone();
            async move {
                tokio::io::AsyncWriteExt::write_all(&mut uni, &payload)
                    .await
                    .unwrap();
                uni.finish().unwrap();
            }
        });
        let mut got = session.accept_uni().await.unwrap().unwrap();
        assert_eq!(got.read_to_end(200_000).await.unwrap(), payload);
        assert!(session.close_reason().is_none());
    })
    .await;
}

#[tokio::test]
async fn a_peer_past_the_stream_limit_ends_the_session_with_wt_flow_control_error() {
    let fx = fixture(flow_config(1_000, 1, 1));
    bounded(async {
        let client = Client::connect(&fx.url("/"), &fx.builder, flow_config(1_000, 4, 4))
            .await
            .unwrap();
        let (session, server_session) = fx.pair(&client, "/").await;
        // Past our own client's checks: two bidi streams by hand where one is allowed.
        let id = session.session_id().unwrap();
        for _ in 0..2 {
            let (mut send, _recv) = client.connection().open_bi().await.unwrap();
            let mut header = Vec::new();
            VarInt::from_u32(0x41).encode(&mut header);
            id.encode(&mut header);
            send.write_all(&header).await.unwrap();
            std::mem::forget(send);
        }
        assert!(matches!(
            server_session.closed().await,
            SessionError::Protocol(_)
        ));
        let code = Code::from_varint(WT_FLOW_CONTROL_ERROR.to_varint());
        assert!(matches!(session.closed().await, SessionError::Reset(c) if c == code));
    })
    .await;
}

#[tokio::test]
async fn flow_control_is_off_unless_both_sides_turn_it_on() {
    // Only the server announces limits (of one stream): the client is not held to them.
    let fx = fixture(flow_config(10, 1, 1));
    bounded(async {
        let client = fx.client().await;
        let (session, server_session) = fx.pair(&client, "/").await;
        echo(server_session);
        for _ in 0..3 {
            assert_eq!(bidi_echo(&session, &[7; 100]).await, vec![7; 100]);
        }
    })
    .await;
}
