//! A peer that closes its session and then, in the very next packet, its QUIC connection (as
//! Firefox does: WT_CLOSE_SESSION, then CONNECTION_CLOSE with H3_NO_ERROR).
//!
//! draft-16 §6: the session ended with the peer's WT_CLOSE_SESSION, so that is what the server
//! reports, with its code and reason, whichever of its tasks notices the connection's end
//! first. The server here waits for a datagram (the task that used to decide "connection lost")
//! and for the session's end at once, on many sessions, a thousand times.
//!
//! Each client talks to the server through a [`Relay`] that, once the session is up, holds the
//! client's packets and hands them over together: the capsule's packet and the close's packet
//! reach the server's socket at once, as two packets sent back to back over a network do, and
//! the server's QUIC stack takes both in before any of its tasks runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quay_h3::Code;
use quay_transport::ClientBuilder;
use quay_webtransport::SessionError;
use quay_webtransport::proto::capsule::WtCapsule;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

mod common;

/// How many sessions are closed this way.
const ROUNDS: usize = 1000;
/// How many of them run at once.
const AT_ONCE: usize = 16;
const CODE: u32 = 42;
const REASON: &str = "bye";

/// How long the relay waits for the client's next packet before it hands over those it holds.
const HOLD: Duration = Duration::from_millis(20);

/// A UDP relay between one client and the server. While `hold` is set, it keeps the client's
/// packets and forwards them together once the client has sent none for [`HOLD`].
struct Relay {
    addr: SocketAddr,
    hold: Arc<AtomicBool>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let hold = Arc::new(AtomicBool::new(false));
        let holding = hold.clone();
        tokio::spawn(async move {
            let mut client = None;
            let mut held: Vec<Vec<u8>> = Vec::new();
            let mut buf = vec![0; 65536];
            loop {
                let received = if held.is_empty() {
                    socket.recv_from(&mut buf).await.ok()
                } else {
                    match tokio::time::timeout(HOLD, socket.recv_from(&mut buf)).await {
                        Ok(received) => received.ok(),
                        Err(_) => {
                            for packet in held.drain(..) {
                                let _ = socket.send_to(&packet, server).await;
                            }
                            continue;
                        }
                    }
                };
                // The relay ends with the test's runtime; a socket error ends it sooner.
                let Some((len, from)) = received else { return };
                let packet = &buf[..len];
                if from == server {
                    if let Some(client) = client {
                        let _ = socket.send_to(packet, client).await;
                    }
                } else {
                    client = Some(from);
                    if holding.load(Ordering::Relaxed) {
                        held.push(packet.to_vec());
                    } else {
                        let _ = socket.send_to(packet, server).await;
                    }
                }
            }
        });
        Self { addr, hold }
    }
}

/// The client: a bare HTTP/3 connection that opens one session, sends WT_CLOSE_SESSION and FIN,
/// lets its QUIC connection send them, then closes the connection.
async fn close_then_connection_close(server: SocketAddr, builder: &ClientBuilder) {
    let relay = Relay::start(server).await;
    let url = format!("https://localhost:{}/close", relay.addr.port());
    let (client, mut stream) = common::open_raw_session(&url, builder).await;
    relay.hold.store(true, Ordering::Relaxed);
    stream
        .send_capsule(&WtCapsule::close(CODE, REASON).to_capsule())
        .await
        .expect("sending WT_CLOSE_SESSION");
    stream.finish().expect("FIN");
    // Let the connection's task send the capsule in a packet of its own before the close.
    tokio::task::yield_now().await;
    client.close(Code::H3_NO_ERROR, b"");
}

fn peer_close(error: &SessionError) -> Option<(u32, &str)> {
    match error {
        SessionError::PeerClosed { code, reason } => Some((*code, reason.as_str())),
        _ => None,
    }
}

// A runtime of several threads, as servers run: its workers run the task woken last first, so
// the tasks that the connection's end wakes run before the CONNECT stream's reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_close_wins_over_the_connection_close_that_follows_it() {
    let (server, builder) = common::default_server();
    let addr = server.local_addr().unwrap();

    let serving = tokio::spawn(async move {
        let mut sessions = JoinSet::new();
        for _ in 0..ROUNDS {
            let request = server.accept().await.expect("a session");
            sessions.spawn(async move {
                let session = request.ok().await.expect("accepting");
                let reader = session.clone();
                let datagram = tokio::spawn(async move { reader.read_datagram().await });
                let closed = session.closed().await;
                let read = datagram.await.unwrap();
                (closed, read.err())
            });
        }
        let mut wrong = Vec::new();
        while let Some(outcome) = sessions.join_next().await {
            let (closed, read) = outcome.unwrap();
            let read_ok = read.as_ref().and_then(peer_close) == Some((CODE, REASON));
            if peer_close(&closed) != Some((CODE, REASON)) || !read_ok {
                wrong.push(format!("closed: {closed:?}; read_datagram: {read:?}"));
            }
        }
        wrong
    });

    let clients = async {
        let mut running = JoinSet::new();
        for round in 0..ROUNDS {
            if round >= AT_ONCE {
                running.join_next().await.unwrap().unwrap();
            }
            let builder = builder.clone();
            running.spawn(async move { close_then_connection_close(addr, &builder).await });
        }
        while let Some(done) = running.join_next().await {
            done.unwrap();
        }
    };
    let wrong = tokio::time::timeout(Duration::from_secs(120), async {
        clients.await;
        serving.await.unwrap()
    })
    .await
    .expect("timed out");
    assert!(
        wrong.is_empty(),
        "{} of {ROUNDS} sessions did not end with the peer's close ({CODE}, {REASON:?}); first: {}",
        wrong.len(),
        wrong[0]
    );
}
