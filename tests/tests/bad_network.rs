//! quay through a bad network (issue 13): our client and our server on 127.0.0.1, every packet
//! both ways through a [`Relay`] with [`Impairment::BAD_NETWORK`] (2% loss, 2% reordering, 1%
//! duplication, 5 ms ± 2 ms of delay). Loss costs congestion-controlled throughput dearly, so
//! transfers are sized to take seconds in a debug build; each test prints how long its transfer
//! took and what the relay did (`-- --nocapture`).
//!
//! Every wait is bounded by [`within`] (60 s), which fails loudly.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use quay_h3::StreamError;
use quay_tests::relay::{Direction, Impairment, Relay};
use quay_tests::setup;
use quay_webtransport::{Client, Config, Server, Session, SessionError, SessionOptions};
use tokio::task::JoinSet;

/// How long any one wait may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The size of the large transfers.
const LARGE: usize = 10 * 1024 * 1024;

/// The chunks large bodies are written in.
const CHUNK: usize = 64 * 1024;

/// Awaits `future` for at most [`TIMEOUT`]; panics naming `what` past it.
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no progress in {TIMEOUT:?}"))
}

/// `len` bytes that differ from any shifted or truncated copy of themselves (xorshift64), so a
/// byte out of place shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let words = std::iter::repeat_with(|| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()
    });
    words.flatten().take(len).collect()
}

/// Asserts `got == want`, naming the first byte that differs rather than printing megabytes.
fn assert_same(got: &[u8], want: &[u8]) {
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    assert!(
        got.len() == want.len() && first.is_none(),
        "got {} bytes, want {}; first difference at {first:?}",
        got.len(),
        want.len()
    );
}

/// Prints how long `what` took and what the relay did to it.
fn report(what: &str, started: Instant, relay: &Relay) {
    println!(
        "{what}: {:.2?}\n  to server: {:?}\n  to client: {:?}",
        started.elapsed(),
        relay.stats(Direction::ToServer),
        relay.stats(Direction::ToClient),
    );
}

/// A bad-network relay in front of a fresh server endpoint, and what a client needs to reach
/// the server through it.
struct Network {
    relay: Relay,
    server: quinn::Endpoint,
    hash: quay_transport::CertificateHash,
}

impl Network {
    fn new(seed: u64) -> Self {
        let identity = setup::identity().unwrap();
        let hash = identity.certificate_hash();
        let server = setup::server_endpoint(identity).unwrap();
        let addr = server.local_addr().unwrap();
        let relay = Relay::start(addr, Impairment::BAD_NETWORK, seed).unwrap();
        Self {
            relay,
            server,
            hash,
        }
    }

    /// A QUIC connection to the server through the relay ("localhost" as the TLS name, the
    /// server's certificate pinned by hash).
    async fn connect(&self) -> quinn::Connection {
        let endpoint = setup::client_endpoint(self.hash).unwrap();
        within(
            "handshake",
            setup::connect(&endpoint, self.relay.local_addr()),
        )
        .await
        .unwrap()
    }

    fn url(&self, path: &str) -> String {
        url(self.relay.local_addr(), path)
    }
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{}:{}{path}", setup::SERVER_NAME, addr.port())
}

/// A WebTransport session through the relay: the client's and the server's ends. The server
/// is returned so that its endpoint stays open.
async fn wt_session(network: &Network) -> (Session, Session, Server) {
    let server = Server::from_endpoint(network.server.clone(), Config::default());
    let client = Client::new(network.connect().await, Config::default());
    let url = network.url("/bad-network");
    let options = SessionOptions::default();
    let (client, accepted) = tokio::join!(
        within("session", client.open(&url, &options)),
        within("session request", async {
            server.accept().await.unwrap().ok().await
        }),
    );
    (client.unwrap(), accepted.unwrap(), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_stream_of_10_mib_arrives_intact() {
    let network = Network::new(1);
    let (client, server, _server) = wt_session(&network).await;
    let data = Bytes::from(pattern(LARGE));
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut recv = within("accept_uni", server.accept_uni())
            .await
            .unwrap()
            .expect("a stream");
        within("read", recv.read_to_end(2 * LARGE)).await.unwrap()
    });
    let mut send = client.open_uni().await.unwrap();
    for chunk in data.chunks(CHUNK) {
        within("write", send.write_chunk(data.slice_ref(chunk)))
            .await
            .unwrap();
    }
    send.finish().unwrap();
    let received = within("reader", reader).await.unwrap();
    report("10 MiB WebTransport stream", started, &network.relay);
    assert_same(&received, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_body_of_10_mib_arrives_intact() {
    let network = Network::new(2);
    let data = Bytes::from(pattern(LARGE));
    let server = quay_h3::Server::from_endpoint(network.server.clone(), quay_h3::Config::default());
    let body = data.clone();
    tokio::spawn(async move {
        let connection = server.accept().await.unwrap();
        let (_, mut stream) = connection.accept().await.unwrap().unwrap();
        stream.send_response(ok()).await.unwrap();
        for chunk in body.chunks(CHUNK) {
            stream.send_data(body.slice_ref(chunk)).await.unwrap();
        }
        stream.finish().unwrap();
        // Until the client has it all and closes.
        connection.closed().await;
    });
    let client =
        quay_h3::client::Connection::new(network.connect().await, quay_h3::Config::default());
    let started = Instant::now();
    let request = Request::get(network.url("/large")).body(Bytes::new());
    let response = within("response", client.request(request.unwrap()))
        .await
        .unwrap();
    report("10 MiB HTTP/3 body", started, &network.relay);
    assert_eq!(response.status(), StatusCode::OK);
    assert_same(response.body(), &data);
}

fn ok() -> Response<()> {
    Response::builder().status(200).body(()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_small_streams_complete() {
    const STREAMS: usize = 1000;
    const SIZE: usize = 100;
    let network = Network::new(3);
    let (client, server, _server) = wt_session(&network).await;
    // The server echoes every bidirectional stream.
    tokio::spawn(async move {
        while let Ok(Some((mut send, mut recv))) = server.accept_bi().await {
            tokio::spawn(async move {
                let data = recv.read_to_end(SIZE).await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
            });
        }
    });
    let data = pattern(STREAMS * SIZE);
    let started = Instant::now();
    let mut streams = JoinSet::new();
    for payload in data.chunks(SIZE) {
        let client = client.clone();
        let payload = payload.to_vec();
        streams.spawn(async move {
            let (mut send, mut recv) = client.open_bi().await.unwrap();
            send.write_all(&payload).await.unwrap();
            send.finish().unwrap();
            let echo = recv.read_to_end(SIZE).await.unwrap();
            assert_same(&echo, &payload);
        });
    }
    let mut done = 0;
    while let Some(stream) = within("streams", streams.join_next()).await {
        stream.unwrap();
        done += 1;
    }
    report("1,000 concurrent streams", started, &network.relay);
    assert_eq!(done, STREAMS);
}

/// The payload of datagram `seq`: its number, then bytes that depend on it, so that a
/// corrupted or misrouted datagram does not match [`datagram`] of its own number.
fn datagram(seq: u32) -> Bytes {
    const SIZE: usize = 800;
    let fill = (4..SIZE).map(|i| (seq as usize).wrapping_mul(131).wrapping_add(i * 7) as u8);
    seq.to_be_bytes().into_iter().chain(fill).collect()
}

/// Records a received datagram in `seen`, checking that it is intact and new.
fn take(seen: &mut BTreeSet<u32>, datagram: Bytes) {
    let seq = u32::from_be_bytes(datagram[..4].try_into().unwrap());
    assert_eq!(datagram, self::datagram(seq), "datagram {seq} altered");
    assert!(seen.insert(seq), "datagram {seq} delivered twice");
}

/// The interval `[lo, hi]` that a Binomial(`n`, `p`) count falls outside of with probability at
/// most `tail` on each side, from the exact distribution.
fn binomial_interval(n: u64, p: f64, tail: f64) -> (u64, u64) {
    // pmf(k + 1) = pmf(k) * (n - k) / (k + 1) * p / (1 - p), from pmf(0) = (1 - p)^n.
    let mut pmf = (1.0 - p).powf(n as f64);
    let mut cdf = 0.0;
    let (mut lo, mut hi) = (None, n);
    for k in 0..=n {
        cdf += pmf;
        if lo.is_none() && cdf > tail {
            lo = Some(k);
        }
        if 1.0 - cdf <= tail {
            hi = k;
            break;
        }
        pmf *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
    }
    (lo.unwrap_or(0), hi)
}

/// Datagrams client to server, one way so that a datagram crosses the relay's loss once.
///
/// Each datagram (800 bytes) is larger than half a packet (the largest is 1452 bytes of UDP
/// payload), so no packet carries two, and after the handshake QUIC puts one packet in each UDP
/// datagram: a datagram is lost exactly when the relay drops its packet, which it does with
/// probability 2%, independently of every other packet. QUIC does not retransmit datagrams,
/// and discards the relay's duplicates as packets it has seen. So of the `n` datagrams the
/// client put on the wire (quinn's count of DATAGRAM frames sent; any that its send buffer
/// dropped never were), the number lost is Binomial(`n`, 0.02): the test accepts any count
/// that falls outside the interval with probability at most 10⁻⁶ on each side (for n = 1500:
/// mean 30, interval [8, 59]). It also checks that none arrives twice or altered, and
/// that quay delivered every datagram quinn received, so that no more were lost than the relay
/// dropped packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_are_lost_as_configured_never_doubled_or_altered() {
    const COUNT: u32 = 1500;
    let network = Network::new(4);
    let (client, server, _server) = wt_session(&network).await;
    let started = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        // Until the client's end-of-datagrams stream arrives (see below)...
        let marker = within("end stream", server.accept_uni());
        tokio::pin!(marker);
        let mut marker = loop {
            tokio::select! {
                datagram = within("datagram", server.read_datagram()) => {
                    take(&mut seen, datagram.unwrap());
                }
                stream = &mut marker => break stream.unwrap().expect("a stream"),
            }
        };
        within("end", marker.read_to_end(16)).await.unwrap();
        // ...then until quay has delivered every datagram quinn received, now final.
        let received = server.connection().stats().frame_rx.datagram;
        while (seen.len() as u64) < received {
            let datagram = within("datagram", server.read_datagram()).await;
            take(&mut seen, datagram.unwrap());
        }
        seen
    });
    let empty = client.datagram_send_buffer_space();
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    for seq in 0..COUNT {
        pace.tick().await;
        client.send_datagram(datagram(seq)).unwrap();
    }
    // Every datagram leaves quinn's send buffer, then passes the relay, before the stream that
    // marks the end is written: the server reads that stream only after it has processed every
    // packet that carried a datagram.
    // (quinn has no event for an emptied buffer: it is polled, at most 1,000 times.)
    for _ in 0..1000 {
        if client.datagram_send_buffer_space() == empty {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(client.datagram_send_buffer_space(), empty);
    let sent_udp = client.connection().stats().udp_tx.datagrams;
    within(
        "relay",
        network.relay.wait_for(Direction::ToServer, |stats| {
            stats.received >= sent_udp && stats.settled()
        }),
    )
    .await;
    let mut marker = client.open_uni().await.unwrap();
    marker.write_all(b"end").await.unwrap();
    marker.finish().unwrap();
    let seen = within("receiver", receiver).await.unwrap();
    report("1,500 datagrams", started, &network.relay);
    let on_wire = client.connection().stats().frame_tx.datagram;
    let lost = on_wire - seen.len() as u64;
    let (lo, hi) = binomial_interval(on_wire, Impairment::BAD_NETWORK.loss, 1e-6);
    println!(
        "  datagrams: {COUNT} sent, {on_wire} on the wire, {} received, {lost} lost ({:.2}%), \
         accepted [{lo}, {hi}]",
        seen.len(),
        100.0 * lost as f64 / on_wire as f64,
    );
    // One datagram per packet (see above), and no loss but the relay's.
    assert!(client.max_datagram_size().unwrap() < 2 * datagram(0).len());
    assert!(lost <= network.relay.stats(Direction::ToServer).dropped);
    assert!(
        (lo..=hi).contains(&lost),
        "{lost} of {on_wire} datagrams lost, outside [{lo}, {hi}]"
    );
}

/// Sessions closed through the bad network, each way: enough that loss hits some closes.
const CLOSES: u64 = 10;

/// Closes `closer` with `code` and a reason, then drops it (and with it, when it was the last
/// handle, the connection); `peer` must report exactly that code and reason, and refuse new
/// streams afterwards.
async fn close_arrives(closer: Session, peer: Session, code: u32) {
    let reason = format!("closed with {code} through a bad network");
    closer.close(code, &reason);
    assert!(matches!(
        closer.close_reason(),
        Some(SessionError::LocallyClosed)
    ));
    assert!(closer.open_bi().await.is_err());
    drop(closer);
    let error = within("peer's close", peer.closed()).await;
    assert!(
        matches!(&error, SessionError::PeerClosed { code: c, reason: r } if *c == code && *r == reason),
        "{error}"
    );
    let refused = peer.open_bi().await.map(drop).unwrap_err();
    assert!(
        matches!(refused, SessionError::PeerClosed { .. }),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_close_code_and_reason_arrive_both_ways() {
    let started = Instant::now();
    for seed in 0..CLOSES {
        let network = Network::new(100 + seed);
        let (client, server, _server) = wt_session(&network).await;
        close_arrives(client, server, 42).await;
    }
    println!(
        "{CLOSES} session closes from the client: {:.2?}",
        started.elapsed()
    );
    let started = Instant::now();
    for seed in 0..CLOSES {
        let network = Network::new(200 + seed);
        let (client, server, server_endpoint) = wt_session(&network).await;
        // The server lets go of everything at once.
        drop(server_endpoint);
        close_arrives(server, client, 7).await;
    }
    println!(
        "{CLOSES} session closes from the server: {:.2?}",
        started.elapsed()
    );
}

/// RFC 9114 §5.2: after a server's GOAWAY, requests it had accepted complete; the client sends no
/// new request, and one it sent before the GOAWAY arrived is refused unprocessed (reset with
/// H3_REQUEST_REJECTED, which makes it safe to retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_lets_requests_in_flight_finish_and_refuses_new_ones() {
    const ROUNDS: u64 = 5;
    let started = Instant::now();
    let mut refused = 0;
    for seed in 0..ROUNDS {
        refused += goaway_round(300 + seed).await;
    }
    println!(
        "{ROUNDS} GOAWAYs: {:.2?}; {refused} requests sent before a GOAWAY arrived, all refused",
        started.elapsed()
    );
}

/// One connection shut down gracefully with a request in flight; returns how many requests
/// the client sent before the GOAWAY reached it.
async fn goaway_round(seed: u64) -> usize {
    let network = Network::new(seed);
    let server = quay_h3::Server::from_endpoint(network.server.clone(), quay_h3::Config::default());
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let later = Arc::new(AtomicUsize::new(0));
    let counted = later.clone();
    let serving = tokio::spawn(async move {
        let connection = server.accept().await.unwrap();
        let (_, mut stream) = connection.accept().await.unwrap().unwrap();
        // The request in flight is answered once the client has seen the GOAWAY.
        tokio::spawn(async move {
            released.await.unwrap();
            stream.send_response(ok()).await.unwrap();
            stream.send_data(Bytes::from(pattern(CHUNK))).await.unwrap();
            stream.finish().unwrap();
        });
        accepted_tx.send(()).unwrap();
        // `biased`: the shutdown is polled first, which sends GOAWAY before anything else is
        // accepted (an unbiased `join!` rotates which future goes first).
        tokio::join!(biased; connection.shutdown(TIMEOUT), async {
            while let Ok(Some(_)) = connection.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
    });
    let client =
        quay_h3::client::Connection::new(network.connect().await, quay_h3::Config::default());
    let request = Request::get(network.url("/in-flight")).body(()).unwrap();
    let mut in_flight = within("request", client.send_request(request))
        .await
        .unwrap();
    in_flight.finish().unwrap();
    within("server accepts", accepted).await.unwrap();
    // Requests until the GOAWAY arrives; each one sent before is refused, after a round trip.
    let mut refused = 0;
    let going_away = loop {
        assert!(refused < 1000, "GOAWAY never arrived");
        let request = Request::get(network.url("/late")).body(()).unwrap();
        match within("late request", client.send_request(request)).await {
            Err(error) => break error,
            Ok(mut late) => {
                late.finish().unwrap();
                let error = within("refusal", late.recv_response()).await.unwrap_err();
                assert!(error.is_retryable(), "{error}");
                refused += 1;
            }
        }
    };
    assert!(matches!(going_away, StreamError::GoingAway), "{going_away}");
    assert!(going_away.is_retryable());
    release.send(()).unwrap();
    let response = within("response", in_flight.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = Vec::new();
    while let Some(chunk) = within("body", in_flight.recv_data()).await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_same(&body, &pattern(CHUNK));
    drop(in_flight);
    // Nothing in flight after the GOAWAY: the client closes. (The server's shutdown ends when
    // that CONNECTION_CLOSE arrives; QUIC sends it once, so when the relay drops it the server
    // learns only at its idle timeout, and the test does not wait for that.)
    let closed = within("client close", client.closed()).await;
    assert!(
        matches!(closed, quay_h3::ConnectionError::LocallyClosed),
        "{closed}"
    );
    serving.abort();
    // Every late request was refused before the client saw the GOAWAY: none can come now.
    let later = later.load(Ordering::SeqCst);
    assert_eq!(later, 0, "the server accepted a request after its GOAWAY");
    refused
}
