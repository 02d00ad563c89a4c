//! The demo panel's stats feed (`quay_examples::panel::feed`) on loopback, read by quay's client
//! as the page reads it: one server-opened bidirectional stream of JSON lines. Every wait has a
//! deadline.

use std::time::Duration;

use bytes::Bytes;
use quay_examples::panel::{self, FeedEnd};
use quay_tests::setup;
use quay_webtransport::{Config, RecvStream, Server, Session};
use serde_json::Value;
use tokio::task::JoinHandle;

/// How long one step may take; a sample comes every second.
const STEP: Duration = Duration::from_secs(10);

/// `future`'s output, or a panic naming `what` after [`STEP`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing in {STEP:?}"))
}

/// A server whose one session echoes datagrams and runs the feed; the task returns how the
/// feed ended. Also the client's session and the feed's stream, as the client accepted it.
async fn start() -> (JoinHandle<FeedEnd>, Session, Lines) {
    let identity = setup::identity().unwrap();
    let hash = identity.certificate_hash();
    let endpoint = setup::server_endpoint(identity).unwrap();
    let port = endpoint.local_addr().unwrap().port();
    let server = Server::from_endpoint(endpoint, Config::default());
    let feed = tokio::spawn(async move {
        let request = server.accept().await.expect("a session request");
        let session = request.ok().await.expect("accepted");
        let echo = session.clone();
        tokio::spawn(async move {
            while let Ok(datagram) = echo.read_datagram().await {
                let _ = echo.send_datagram(datagram);
            }
        });
        let end = panel::feed(session).await;
        drop(server);
        end
    });
    let url = format!("https://{}:{port}/", setup::SERVER_NAME);
    let session = within(
        "the session",
        quay_webtransport::connect(&url, &setup::client_builder(hash)),
    )
    .await
    .expect("connected");
    let (_, recv) = within("the feed's stream", session.accept_bi())
        .await
        .expect("the session is open")
        .expect("the server opens the feed");
    let lines = Lines {
        recv,
        pending: Vec::new(),
    };
    (feed, session, lines)
}

/// The feed's lines, as JSON.
struct Lines {
    recv: RecvStream,
    pending: Vec<u8>,
}

impl Lines {
    /// The next sample and its length in bytes, newline included.
    async fn next(&mut self) -> (Value, usize) {
        loop {
            if let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let value = serde_json::from_slice(&line).expect("a JSON line");
                return (value, line.len());
            }
            assert!(self.pending.len() <= panel::MAX_LINE, "a line too long");
            let chunk = within("a sample", self.recv.read_chunk(4096))
                .await
                .expect("the feed goes on")
                .expect("the feed is not finished");
            self.pending.extend_from_slice(&chunk);
        }
    }
}

#[tokio::test]
async fn samples_count_the_session_without_the_feed() {
    let (_feed, session, mut lines) = start().await;
    let (first, first_len) = lines.next().await;
    assert_eq!(first["seq"], 0, "{first}");
    assert_eq!(first["feedBytes"], 0, "{first}");
    assert_eq!(
        first["bytesSent"], 0,
        "the feed's own bytes are left out: {first}"
    );
    assert_eq!(
        first["streamsOpened"], 0,
        "the feed's own stream is left out: {first}"
    );
    assert_eq!(first["datagramsReceived"], 0, "{first}");
    assert!(first["smoothedRttMs"].as_f64().unwrap() > 0.0, "{first}");

    // Datagrams may be lost: one every 100 ms until one comes back.
    within("a datagram echo", async {
        loop {
            session.send_datagram(Bytes::from_static(b"ping")).unwrap();
            let wait = Duration::from_millis(100);
            if let Ok(echo) = tokio::time::timeout(wait, session.read_datagram()).await {
                return echo.unwrap();
            }
        }
    })
    .await;
    let mut feed_bytes = first_len as u64;
    loop {
        let (sample, len) = lines.next().await;
        assert_eq!(sample["feedBytes"], feed_bytes, "{sample}");
        feed_bytes += len as u64;
        if sample["datagramsReceived"].as_u64() >= Some(1) {
            assert!(sample["seq"].as_u64() > Some(0), "{sample}");
            assert!(sample["datagramsSent"].as_u64() >= Some(1), "{sample}");
            assert_eq!(sample["bytesSent"], 0, "{sample}");
            break;
        }
    }
}

#[tokio::test]
async fn the_feed_ends_with_the_session() {
    let (feed, session, mut lines) = start().await;
    lines.next().await;
    session.close(0, "done");
    let end = within("the feed's end", feed).await.unwrap();
    assert!(matches!(end, FeedEnd::Session(_)), "{end}");
}

#[tokio::test]
async fn the_feed_ends_when_the_page_stops_it() {
    let (feed, _session, mut lines) = start().await;
    lines.next().await;
    lines.recv.stop(9).unwrap();
    // The next write, at most a second later, finds the stream stopped.
    let end = within("the feed's end", feed).await.unwrap();
    assert!(matches!(end, FeedEnd::Stream(_)), "{end}");
}
