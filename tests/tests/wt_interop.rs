//! Interop with web-transport-quinn (from Cargo's registry): quay's WebTransport client against
//! its server, and its client against quay's server, on 127.0.0.1. Each side checks bidi streams,
//! server-initiated streams, datagrams, and close codes with reasons in both directions.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quay_tests::setup::{bounded, connect_pinned};
use quay_tests::{quaywt, setup, wtq};
use quay_webtransport::{Client, Config, Server, SessionError, SessionOptions};
use tokio::sync::mpsc;

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{}:{}{path}", setup::SERVER_NAME, addr.port())
}

/// Sends datagrams until one echo comes back (they may be lost), at most 50 tries.
async fn datagram_round_trip<S, R, F>(send: S, read: R) -> Bytes
where
    S: Fn(Bytes),
    R: Fn() -> F,
    F: Future<Output = Bytes>,
{
    for _ in 0..50 {
        send(Bytes::from_static(b"interop datagram"));
        if let Ok(datagram) = tokio::time::timeout(Duration::from_millis(200), read()).await {
            return datagram;
        }
    }
    panic!("no datagram came back in 50 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_web_transport_quinn_server() {
    let identity = setup::identity().unwrap();
    let hash = identity.certificate_hash();
    let endpoint = setup::server_endpoint(identity).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (closes, mut closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut server = web_transport_quinn::Server::new(endpoint);
        while let Some(request) = server.accept().await {
            let closes = closes.clone();
            tokio::spawn(async move {
                let path = request.url.path().to_owned();
                let Ok(session) = request.ok().await else {
                    return;
                };
                match path.as_str() {
                    "/push" => {
                        let mut send = session.open_uni().await.unwrap();
                        send.write_all(b"uni from wtq").await.unwrap();
                        send.finish().unwrap();
                        let (mut send, mut recv) = session.open_bi().await.unwrap();
                        send.write_all(b"bidi from wtq").await.unwrap();
                        send.finish().unwrap();
                        let answer = recv.read_to_end(100).await.unwrap();
                        assert_eq!(answer, b"answer from quay");
                        let _ = closes.send(format!("{}", session.closed().await));
                    }
                    "/close" => {
                        session.close(11, b"bye from wtq");
                        // web-transport-quinn ends its HTTP/3 control stream when the session
                        // is dropped, which RFC 9114 §6.2.1 makes a connection error; keep it
                        // until the capsule has surely arrived.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    _ => wtq::serve_session(session).await,
                }
            });
        }
    });
    bounded(async {
        // Streams and datagrams.
        let session = quaywt::connect(connect_pinned(addr, hash).await, addr.port())
            .await
            .unwrap();
        assert_eq!(
            quaywt::echo(&session, b"hello wtq").await.unwrap(),
            b"hello wtq"
        );
        assert_eq!(quaywt::download(&session, 1 << 20).await.unwrap(), 1 << 20);
        let datagram = datagram_round_trip(
            |d| quaywt::send_datagram(&session, d).unwrap(),
            || async { session.read_datagram().await.unwrap() },
        )
        .await;
        assert_eq!(datagram, "interop datagram");

        // Server-initiated streams, then our close code and reason.
        let client = Client::new(connect_pinned(addr, hash).await, Config::default());
        let session = client
            .open(&url(addr, "/push"), &SessionOptions::default())
            .await
            .unwrap();
        let mut uni = session.accept_uni().await.unwrap().unwrap();
        assert_eq!(uni.read_to_end(100).await.unwrap(), b"uni from wtq");
        let (mut send, mut recv) = session.accept_bi().await.unwrap().unwrap();
        assert_eq!(recv.read_to_end(100).await.unwrap(), b"bidi from wtq");
        send.write_all(b"answer from quay").await.unwrap();
        send.finish().unwrap();
        send.stopped().await.unwrap();
        session.close(21, "bye from quay");
        let seen = closed.recv().await.unwrap();
        assert!(
            seen.contains("21") && seen.contains("bye from quay"),
            "{seen}"
        );

        // Their close code and reason.
        let client = Client::new(connect_pinned(addr, hash).await, Config::default());
        let session = client
            .open(&url(addr, "/close"), &SessionOptions::default())
            .await
            .unwrap();
        match session.closed().await {
            SessionError::PeerClosed { code, reason } => {
                assert_eq!((code, reason.as_str()), (11, "bye from wtq"));
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_transport_quinn_client_against_our_server() {
    let identity = setup::identity().unwrap();
    let hash = identity.certificate_hash();
    let endpoint = setup::server_endpoint(identity).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (closes, mut closed) = mpsc::unbounded_channel();
    let server = Server::from_endpoint(endpoint, Config::default());
    tokio::spawn(async move {
        while let Some(request) = server.accept().await {
            let closes = closes.clone();
            tokio::spawn(async move {
                let path = request.path().to_owned();
                let Ok(session) = request.ok().await else {
                    return;
                };
                match path.as_str() {
                    "/push" => {
                        let mut send = session.open_uni().await.unwrap();
                        send.write_all(b"uni from quay").await.unwrap();
                        send.finish().unwrap();
                        let (mut send, mut recv) = session.open_bi().await.unwrap();
                        send.write_all(b"bidi from quay").await.unwrap();
                        send.finish().unwrap();
                        let answer = recv.read_to_end(100).await.unwrap();
                        assert_eq!(answer, b"answer from wtq");
                        let _ = closes.send(session.closed().await);
                    }
                    "/close" => session.close(13, "bye from quay").await,
                    _ => quaywt::serve_session(session).await,
                }
            });
        }
    });
    bounded(async {
        let session = wtq::connect(connect_pinned(addr, hash).await, addr.port())
            .await
            .unwrap();
        assert_eq!(
            wtq::echo(&session, b"hello quay").await.unwrap(),
            b"hello quay"
        );
        assert_eq!(wtq::download(&session, 1 << 20).await.unwrap(), 1 << 20);
        let datagram = datagram_round_trip(
            |d| wtq::send_datagram(&session, d).unwrap(),
            || async { session.read_datagram().await.unwrap() },
        )
        .await;
        assert_eq!(datagram, "interop datagram");

        let push: url::Url = url(addr, "/push").parse().unwrap();
        let session = web_transport_quinn::Session::connect(connect_pinned(addr, hash).await, push)
            .await
            .unwrap();
        let mut uni = session.accept_uni().await.unwrap();
        assert_eq!(uni.read_to_end(100).await.unwrap(), b"uni from quay");
        let (mut send, mut recv) = session.accept_bi().await.unwrap();
        assert_eq!(recv.read_to_end(100).await.unwrap(), b"bidi from quay");
        send.write_all(b"answer from wtq").await.unwrap();
        send.finish().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        session.close(23, b"bye from wtq");
        match closed.recv().await.unwrap() {
            SessionError::PeerClosed { code, reason } => {
                assert_eq!((code, reason.as_str()), (23, "bye from wtq"));
            }
            other => panic!("{other:?}"),
        }

        let close: url::Url = url(addr, "/close").parse().unwrap();
        let session =
            web_transport_quinn::Session::connect(connect_pinned(addr, hash).await, close)
                .await
                .unwrap();
        let reason = session.closed().await.to_string();
        assert!(
            reason.contains("13") && reason.contains("bye from quay"),
            "{reason}"
        );
    })
    .await;
}
