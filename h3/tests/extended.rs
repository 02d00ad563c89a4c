//! Extended CONNECT (RFC 9220), HTTP datagrams and capsules (RFC 9297), and extension streams,
//! between our client and server over 127.0.0.1.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{accept, client, server, t};
use http::{Method, Request, Response, StatusCode};
use quay_h3::proto::capsule::{Capsule, CapsuleType};
use quay_h3::proto::frame::FrameType;
use quay_h3::proto::headers::Protocol;
use quay_h3::proto::stream::StreamType;
use quay_h3::server::{self, RequestStream};
use quay_h3::stream::ExtensionStream;
use quay_h3::{Config, StreamError};

fn extended() -> Config {
    let mut config = Config::default();
    config.enable_extended_connect = true;
    config.enable_datagrams = true;
    config
}

/// Claims WebTransport's unidirectional stream type and bidirectional signal.
fn webtransport_streams() -> Config {
    let mut config = Config::default();
    config
        .extension_uni_stream_types
        .push(StreamType::WEBTRANSPORT);
    config
        .extension_bidi_signals
        .push(FrameType::WEBTRANSPORT_STREAM);
    config
}

fn connect_udp() -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri("https://localhost/.well-known/masque/udp/192.0.2.6/443/")
        .extension(Protocol::CONNECT_UDP)
        .body(())
        .unwrap()
}

/// Accepts a connection and its first request, and answers it with 200.
async fn accept_and_answer(fixture: &common::Fixture) -> (server::Connection, RequestStream) {
    let connection = accept(fixture).await;
    let (_, mut stream) = t(connection.accept()).await.unwrap().unwrap();
    t(stream.send_response(Response::new(()))).await.unwrap();
    (connection, stream)
}

/// Sends a datagram, retrying while the peer's SETTINGS are on their way.
async fn send_datagram(send: impl Fn() -> Result<(), StreamError>) {
    for _ in 0..100 {
        match send() {
            Err(StreamError::NotNegotiated(_)) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other.unwrap(),
        }
    }
    panic!("datagrams never negotiated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_udp_with_capsules_and_datagrams() {
    let fixture = server(extended());
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        let (request, mut stream) = t(connection.accept()).await.unwrap().unwrap();
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(
            request.extensions().get::<Protocol>(),
            Some(&Protocol::CONNECT_UDP)
        );
        let response = Response::builder()
            .status(200)
            .header("capsule-protocol", "?1")
            .body(())
            .unwrap();
        t(stream.send_response(response)).await.unwrap();
        // Capsules: the client's DATAGRAM capsule comes back; its unknown capsule is skipped.
        let capsule = t(stream.recv_capsule()).await.unwrap().unwrap();
        assert_eq!(
            capsule,
            Capsule::datagram(Bytes::from_static(b"via capsule"))
        );
        t(stream.send_capsule(&capsule)).await.unwrap();
        // Datagrams: echo one.
        let datagram = t(stream.recv_datagram()).await.unwrap().unwrap();
        assert_eq!(datagram, &b"ping"[..]);
        send_datagram(|| stream.send_datagram(Bytes::from_static(b"pong"))).await;
        // The client's FIN ends the capsule stream.
        assert_eq!(t(stream.recv_capsule()).await.unwrap(), None);
        stream.finish().unwrap();
        // Bounded by the client closing the connection.
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let client = client(target, extended()).await;
    let mut stream = t(client.send_request(connect_udp())).await.unwrap();
    let response = t(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let unknown = Capsule {
        ty: CapsuleType::grease(3),
        payload: Bytes::from_static(b"skip me"),
    };
    t(stream.send_capsule(&unknown)).await.unwrap();
    t(stream.send_capsule(&Capsule::datagram(Bytes::from_static(b"via capsule"))))
        .await
        .unwrap();
    let echoed = t(stream.recv_capsule()).await.unwrap().unwrap();
    assert_eq!(echoed.payload, &b"via capsule"[..]);
    send_datagram(|| stream.send_datagram(Bytes::from_static(b"ping"))).await;
    let datagram = t(stream.recv_datagram()).await.unwrap().unwrap();
    assert_eq!(datagram, &b"pong"[..]);
    stream.finish().unwrap();
    assert_eq!(t(stream.recv_capsule()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_that_overtake_their_request_wait_for_it() {
    // RFC 9297 §2.1: a datagram can arrive before its stream's request is read.
    let fixture = server(extended());
    let target = fixture.target();
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        // The request head is read only once the client's datagram is in.
        sent_rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (_, mut stream) = t(connection.accept()).await.unwrap().unwrap();
        let datagram = t(stream.recv_datagram()).await.unwrap().unwrap();
        assert_eq!(datagram, &b"early"[..]);
        t(stream.send_response(Response::new(()))).await.unwrap();
        stream.finish().unwrap();
        // Bounded by the client closing the connection.
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let client = client(target, extended()).await;
    let mut stream = t(client.send_request(connect_udp())).await.unwrap();
    send_datagram(|| stream.send_datagram(Bytes::from_static(b"early"))).await;
    sent_tx.send(()).unwrap();
    // The server answers only after it got the datagram.
    let response = t(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_another_stream_reads_wait_for_their_stream() {
    // Whoever waits for a datagram reads the connection's datagrams: here stream A's reader
    // takes stream B's datagram before B's request is accepted, and B gets it once it is.
    let fixture = server(extended());
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (connection, mut a) = accept_and_answer(&fixture).await;
        // Sent after B's datagram: once it is here, B's has been read and set aside.
        let after = t(a.recv_datagram()).await.unwrap().unwrap();
        let (_, mut b) = t(connection.accept()).await.unwrap().unwrap();
        let early = t(b.recv_datagram()).await.unwrap().unwrap();
        tx.send((after, early)).unwrap();
        // Bounded by the client closing the connection.
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let client = client(target, extended()).await;
    let mut a = t(client.send_request(connect_udp())).await.unwrap();
    let response = t(a.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let b = t(client.send_request(connect_udp())).await.unwrap();
    send_datagram(|| b.send_datagram(Bytes::from_static(b"for b"))).await;
    send_datagram(|| a.send_datagram(Bytes::from_static(b"for a"))).await;
    let (after, early) = t(rx).await.unwrap();
    assert_eq!(after, &b"for a"[..]);
    assert_eq!(early, &b"for b"[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_datagram_is_a_connection_error() {
    // RFC 9297 §2.1: a datagram whose Quarter Stream ID cannot be parsed is H3_DATAGRAM_ERROR.
    let fixture = server(extended());
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (_connection, mut stream) = accept_and_answer(&fixture).await;
        let read = t(stream.recv_datagram()).await;
        tx.send(matches!(read, Ok(Some(_)))).unwrap();
    });
    let conn = common::raw_connection(target).await;
    let client = quay_h3::client::Connection::new(conn.clone(), extended());
    let mut stream = t(client.send_request(connect_udp())).await.unwrap();
    t(stream.recv_response()).await.unwrap();
    // The first byte announces a two-byte varint that never comes.
    conn.send_datagram(Bytes::from_static(&[0x40])).unwrap();
    let quay_transport::quinn::ConnectionError::ApplicationClosed(close) = t(conn.closed()).await
    else {
        panic!("the server did not close the connection");
    };
    assert_eq!(
        close.error_code.into_inner(),
        quay_h3::Code::H3_DATAGRAM_ERROR.into_inner()
    );
    assert!(
        !t(rx).await.unwrap(),
        "the malformed datagram was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_connect_needs_both_sides() {
    // The server does not enable it: the client refuses to send (RFC 9220 §3).
    let fixture = server(Config::default());
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let client = client(target, extended()).await;
    let error = t(client.send_request(connect_udp())).await.unwrap_err();
    assert!(matches!(error, StreamError::NotNegotiated(_)), "{error}");
    // Datagrams on a stream are refused as well when the server did not enable them.
    let request = Request::get("https://localhost/").body(()).unwrap();
    let stream = t(client.send_request(request)).await.unwrap();
    let error = stream.send_datagram(Bytes::from_static(b"x")).unwrap_err();
    assert!(matches!(error, StreamError::NotNegotiated(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_signals_whole_or_split_and_requests_share_a_connection() {
    // The server hands out a stream whose signal came whole in its first packet at once, one
    // whose signal is split across packets once the rest arrives, and still answers requests.
    let mut config = Config::default();
    config
        .extension_bidi_signals
        .push(FrameType::WEBTRANSPORT_STREAM);
    let fixture = server(config.clone());
    let target = fixture.target();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let connection = Arc::new(accept(&fixture).await);
        {
            let connection = connection.clone();
            tokio::spawn(async move {
                // Bounded by the client closing the connection.
                while let Ok(Some((_, mut stream))) = connection.accept().await {
                    t(stream.send_response(Response::new(()))).await.unwrap();
                    stream.finish().unwrap();
                }
            });
        }
        for _ in 0..2 {
            let Some(ExtensionStream::Bidi {
                session_id,
                mut recv,
                buffered,
                ..
            }) = t(connection.accept_extension_stream()).await.unwrap()
            else {
                panic!("expected a bidirectional extension stream");
            };
            let mut data = buffered.to_vec();
            data.extend(t(recv.read_to_end(1024)).await.unwrap());
            tx.send((session_id.into_inner(), data)).await.unwrap();
        }
    });
    let client = client(target, config).await;
    let connection = client.connection();
    let (mut whole, _keep) = t(connection.open_bi()).await.unwrap();
    // Signal 0x41 (0x40 0x41), session ID 4, payload.
    t(whole.write_all(&[0x40, 0x41, 0x04, b'a', b'b']))
        .await
        .unwrap();
    whole.finish().unwrap();
    assert_eq!(t(rx.recv()).await.unwrap(), (4, b"ab".to_vec()));
    let (mut split, _keep) = t(connection.open_bi()).await.unwrap();
    t(split.write_all(&[0x40])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    t(split.write_all(&[0x41, 0x08, b'c'])).await.unwrap();
    split.finish().unwrap();
    assert_eq!(t(rx.recv()).await.unwrap(), (8, b"c".to_vec()));
    let request = Request::get("https://localhost/").body(()).unwrap();
    let mut stream = t(client.send_request(request)).await.unwrap();
    assert_eq!(
        t(stream.recv_response()).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_streams_are_handed_out() {
    let fixture = server(webtransport_streams());
    let target = fixture.target();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let connection = Arc::new(accept(&fixture).await);
        {
            let connection = connection.clone();
            tokio::spawn(async move { while let Ok(Some(_)) = connection.accept().await {} });
        }
        for _ in 0..2 {
            let stream = t(connection.accept_extension_stream())
                .await
                .unwrap()
                .unwrap();
            let text = match stream {
                ExtensionStream::Uni {
                    ty,
                    session_id,
                    mut recv,
                    buffered,
                    ..
                } => {
                    assert_eq!(ty, StreamType::WEBTRANSPORT);
                    let mut data = buffered.to_vec();
                    data.extend(t(recv.read_to_end(1024)).await.unwrap());
                    format!("uni {session_id} {}", String::from_utf8(data).unwrap())
                }
                ExtensionStream::Bidi {
                    signal,
                    session_id,
                    mut send,
                    mut recv,
                    buffered,
                    ..
                } => {
                    assert_eq!(signal, FrameType::WEBTRANSPORT_STREAM);
                    let mut data = buffered.to_vec();
                    data.extend(t(recv.read_to_end(1024)).await.unwrap());
                    t(send.write_all(b"back")).await.unwrap();
                    send.finish().unwrap();
                    std::mem::forget(send);
                    format!("bidi {session_id} {}", String::from_utf8(data).unwrap())
                }
                other => panic!("{other:?}"),
            };
            tx.send(text).await.unwrap();
        }
    });
    let client = client(target, Config::default()).await;
    let connection = client.connection();
    let mut uni = t(connection.open_uni()).await.unwrap();
    // Type 0x54 (two-byte varint 0x40 0x54), session ID 4, payload.
    t(uni.write_all(&[0x40, 0x54, 0x04])).await.unwrap();
    t(uni.write_all(b"hello")).await.unwrap();
    uni.finish().unwrap();
    let mut received = vec![t(rx.recv()).await.unwrap()];
    let (mut send, mut recv) = t(connection.open_bi()).await.unwrap();
    // Signal 0x41 (0x40 0x41), session ID 8, payload.
    t(send.write_all(&[0x40, 0x41, 0x08, b'h', b'i']))
        .await
        .unwrap();
    send.finish().unwrap();
    received.push(t(rx.recv()).await.unwrap());
    assert_eq!(received, ["uni 4 hello", "bidi 8 hi"]);
    assert_eq!(t(recv.read_to_end(1024)).await.unwrap(), b"back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_extension_streams_arrive_then_end_with_the_connection() {
    let mut config = Config::default();
    config
        .extension_uni_stream_types
        .push(StreamType::WEBTRANSPORT);
    let fixture = server(config);
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        let mut streams = connection.take_extension_streams().unwrap();
        assert!(connection.take_extension_streams().is_none());
        let first = t(streams.next()).await;
        // The end is seen as soon as the connection goes, not at some later wake-up.
        let waiting = std::time::Instant::now();
        let end = t(streams.next()).await;
        let prompt = waiting.elapsed() < Duration::from_secs(2);
        tx.send((first.is_some(), end.is_none() && prompt)).unwrap();
        drop(connection);
    });
    let client = client(target, Config::default()).await;
    let mut uni = t(client.connection().open_uni()).await.unwrap();
    // Type 0x54 (two-byte varint 0x40 0x54), session ID 4.
    t(uni.write_all(&[0x40, 0x54, 0x04])).await.unwrap();
    uni.finish().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.close(quay_h3::Code::H3_NO_ERROR, b"");
    assert_eq!(t(rx).await.unwrap(), (true, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_receives_extension_streams() {
    let config = webtransport_streams();
    let fixture = server(Config::default());
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        let quic = connection.connection().clone();
        let (mut send, _recv) = t(quic.open_bi()).await.unwrap();
        t(send.write_all(&[0x40, 0x41, 0x00, b'b'])).await.unwrap();
        send.finish().unwrap();
        let mut uni = t(quic.open_uni()).await.unwrap();
        t(uni.write_all(&[0x40, 0x54, 0x00, b'u'])).await.unwrap();
        uni.finish().unwrap();
        // Bounded by the client closing the connection.
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let client = client(target, config).await;
    let mut kinds = Vec::new();
    for _ in 0..2 {
        match t(client.accept_extension_stream()).await.unwrap().unwrap() {
            ExtensionStream::Uni {
                mut recv, buffered, ..
            }
            | ExtensionStream::Bidi {
                mut recv, buffered, ..
            } => {
                let mut data = buffered.to_vec();
                data.extend(t(recv.read_to_end(16)).await.unwrap());
                kinds.push(String::from_utf8(data).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["b", "u"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_capsule_is_a_message_error() {
    // RFC 9297 §3.3: a stream that ends inside a capsule is malformed.
    let fixture = server(extended());
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (connection, mut stream) = accept_and_answer(&fixture).await;
        let _ = tx.send(t(stream.recv_capsule()).await);
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let client = client(target, extended()).await;
    let mut stream = t(client.send_request(connect_udp())).await.unwrap();
    assert_eq!(t(stream.recv_response()).await.unwrap().status(), 200);
    // A DATAGRAM capsule announcing 5 bytes, with 1, then the end of the stream.
    t(stream.send_data(Bytes::from_static(&[0x00, 0x05, b'a'])))
        .await
        .unwrap();
    stream.finish().unwrap();
    let result = t(rx).await.unwrap();
    assert!(matches!(result, Err(StreamError::Capsule(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_datagrams_end_with_the_connection() {
    // RFC 9297 §2.1: datagrams taken out of a request stream keep arriving, queued until read,
    // and the receiver sees the end when the connection goes.
    let fixture = server(extended());
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (connection, stream) = accept_and_answer(&fixture).await;
        let (send, mut recv) = stream.split();
        let datagrams = recv.take_datagrams().unwrap();
        assert!(matches!(
            recv.take_datagrams(),
            Err(StreamError::Invalid(_))
        ));
        assert_eq!(t(recv.recv_datagram()).await.unwrap(), None);
        let mut got = vec![t(datagrams.recv()).await.unwrap()];
        // The second may already be queued; either way it comes next.
        got.push(match datagrams.try_recv() {
            Some(datagram) => datagram,
            None => t(datagrams.recv()).await.unwrap(),
        });
        // Bounded by the client closing the connection.
        let end = t(datagrams.recv()).await;
        tx.send((got, end)).unwrap();
        drop((send, recv, connection));
    });
    let client = client(target, extended()).await;
    let mut stream = t(client.send_request(connect_udp())).await.unwrap();
    let response = t(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    send_datagram(|| stream.send_datagram(Bytes::from_static(b"one"))).await;
    // Wait for the first to be read, so that loss of the second cannot reorder the check.
    tokio::time::sleep(Duration::from_millis(50)).await;
    send_datagram(|| stream.send_datagram(Bytes::from_static(b"two"))).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.close(quay_h3::Code::H3_NO_ERROR, b"");
    let (got, end) = t(rx).await.unwrap();
    assert_eq!(got, [&b"one"[..], &b"two"[..]]);
    assert_eq!(end, None);
}

/// What the test's [`Handler`] saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A request, by path, once its head was read in `poll`.
    Request(String),
    /// An extension stream: "uni" or "bidi", and its session ID.
    Extension(&'static str, u64),
    Closed,
}

type Resolving = std::pin::Pin<
    Box<dyn Future<Output = Result<Option<(Request<()>, RequestStream)>, StreamError>> + Send>,
>;

/// A handler that reads request heads in `poll` (so they wake the connection's task) and
/// answers each with 200 from a task of its own.
struct Recorder {
    seen: tokio::sync::mpsc::UnboundedSender<Seen>,
    resolving: Vec<Resolving>,
}

impl server::Handler for Recorder {
    fn request(&mut self, request: server::IncomingRequest) {
        self.resolving.push(Box::pin(request.resolve()));
    }

    fn extension_stream(&mut self, stream: ExtensionStream) {
        let seen = match stream {
            ExtensionStream::Uni { session_id, .. } => {
                Seen::Extension("uni", session_id.into_inner())
            }
            ExtensionStream::Bidi { session_id, .. } => {
                Seen::Extension("bidi", session_id.into_inner())
            }
            other => panic!("{other:?}"),
        };
        self.seen.send(seen).unwrap();
    }

    fn poll(&mut self, cx: &mut std::task::Context<'_>) {
        let seen = &self.seen;
        self.resolving
            .retain_mut(|resolving| match resolving.as_mut().poll(cx) {
                std::task::Poll::Pending => true,
                std::task::Poll::Ready(resolved) => {
                    if let Ok(Some((request, mut stream))) = resolved {
                        seen.send(Seen::Request(request.uri().path().into()))
                            .unwrap();
                        tokio::spawn(async move {
                            t(stream.send_response(Response::new(()))).await.unwrap();
                            stream.finish().unwrap();
                        });
                    }
                    false
                }
            });
    }

    fn closed(&mut self) {
        self.seen.send(Seen::Closed).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_takes_requests_and_extension_streams_on_the_connection_task() {
    let fixture = server(webtransport_streams());
    let target = fixture.target();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let (checked_tx, checked) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        let recorder = Recorder {
            seen: seen_tx.clone(),
            resolving: Vec::new(),
        };
        assert!(connection.set_handler(recorder).is_ok());
        // One handler per connection, and the handler has the streams.
        let second = Recorder {
            seen: seen_tx,
            resolving: Vec::new(),
        };
        assert!(connection.set_handler(second).is_err());
        assert!(t(connection.accept_stream()).await.unwrap().is_none());
        assert!(connection.take_extension_streams().is_none());
        // Dropping the handle would close the connection, as without a handler.
        checked_tx.send(connection).unwrap();
    });
    let client = client(target, Config::default()).await;
    let _server_connection = t(checked).await.unwrap();
    let connection = client.connection().clone();
    let mut uni = t(connection.open_uni()).await.unwrap();
    // Type 0x54 (two-byte varint 0x40 0x54), session ID 4.
    t(uni.write_all(&[0x40, 0x54, 0x04])).await.unwrap();
    assert_eq!(t(seen.recv()).await.unwrap(), Seen::Extension("uni", 4));
    // A signal that may come split across packets: if it is, the head read in `poll` hands
    // the stream out.
    let (mut split, _recv) = t(connection.open_bi()).await.unwrap();
    t(split.write_all(&[0x40])).await.unwrap();
    tokio::task::yield_now().await;
    t(split.write_all(&[0x41, 0x08])).await.unwrap();
    assert_eq!(t(seen.recv()).await.unwrap(), Seen::Extension("bidi", 8));
    let request = Request::get("https://localhost/handled").body(()).unwrap();
    let mut stream = t(client.send_request(request)).await.unwrap();
    assert_eq!(
        t(stream.recv_response()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        t(seen.recv()).await.unwrap(),
        Seen::Request("/handled".into())
    );
    connection.close(0u32.into(), b"done");
    assert_eq!(t(seen.recv()).await.unwrap(), Seen::Closed);
}
