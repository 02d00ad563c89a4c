//! The pooled client (`quay_h3::Client`) against a loopback server that counts connections:
//! reuse, a second connection past the server's stream limit, GOAWAY and a refused request sent
//! again, idle close, timeouts. Counts come from the server, never from timings.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::origin::{Event, Mode, Origin};
use common::t;
use quay_h3::client::{Client, Options, RequestError};
use quay_h3::{Code, Config, ConnectionError};

fn get(url: String) -> http::Request<Bytes> {
    http::Request::get(url).body(Bytes::new()).unwrap()
}

fn client(origin: &Origin, options: Options) -> Client {
    Client::with_options(&origin.builder, Config::default(), options).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_one_origin_share_one_connection() {
    let mut origin = Origin::start(100, Mode::Normal);
    let client = client(&origin, Options::default());
    // Concurrent first requests to a new client's origin do not open one connection each.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (client, url) = (client.clone(), format!("{}/par{i}", origin.url));
        tasks.push(tokio::spawn(async move { client.request(get(url)).await }));
    }
    for task in tasks {
        assert_eq!(t(task).await.unwrap().unwrap().status(), 200);
    }
    for i in 0..5 {
        let response = t(client.request(get(format!("{}/seq{i}", origin.url))))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), &format!("/seq{i}"));
    }
    let conns: BTreeSet<usize> = origin.requests(15).await.into_iter().collect();
    assert_eq!(conns, BTreeSet::from([1]));
    assert_eq!(origin.connections(), 1);

    // Close, and wait for the close to have left: the server sees it.
    client.close();
    t(client.wait_idle()).await;
    loop {
        if let Event::Closed { conn, error } = origin.next().await {
            assert_eq!(conn, 1);
            assert!(matches!(
                error,
                ConnectionError::PeerClosed {
                    code: Code::H3_NO_ERROR,
                    ..
                }
            ));
            break;
        }
    }
    let error = client.request(get(format!("{}/late", origin.url))).await;
    assert!(matches!(error, Err(RequestError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_past_the_stream_limit_open_a_second_connection() {
    // RFC 9000 §4.6: the server lets each connection open two request streams at once.
    let mut origin = Origin::start(2, Mode::Normal);
    let client = client(&origin, Options::default());
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (client, url) = (client.clone(), format!("{}/hold", origin.url));
        tasks.push(tokio::spawn(async move { client.request(get(url)).await }));
    }
    // All three reach the server while none has been answered: two on one connection, one on
    // a second.
    let mut conns = origin.requests(3).await;
    conns.sort_unstable();
    assert_eq!(conns, [1, 1, 2]);
    assert_eq!(origin.connections(), 2);
    origin.release();
    for task in tasks {
        let response = t(task).await.unwrap().unwrap();
        assert_eq!(response.body(), "held");
    }
    // With both connections free again, the next request opens none.
    t(client.request(get(format!("{}/after", origin.url))))
        .await
        .unwrap();
    assert_eq!(origin.connections(), 2);
    client.close();
    t(client.wait_idle()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_at_goaway_succeeds_on_a_new_connection() {
    // The first connection takes two requests, sends GOAWAY, and refuses `/refused` with
    // H3_REQUEST_REJECTED (RFC 9114 §4.1.1, §5.2).
    let mut origin = Origin::start(100, Mode::GoawayAfterTwo);
    let client = client(&origin, Options::default());
    let (a, refused) = tokio::join!(
        t(client.request(get(format!("{}/a", origin.url)))),
        t(client.request(get(format!("{}/refused", origin.url)))),
    );
    assert_eq!(a.unwrap().body(), "/a");
    assert_eq!(refused.unwrap().body(), "/refused");
    // The connection that sent GOAWAY takes no new request.
    let c = t(client.request(get(format!("{}/c", origin.url)))).await;
    assert_eq!(c.unwrap().body(), "/c");
    let mut seen = Vec::new();
    // Bounded: the server saw four requests at most (the refused one twice).
    while seen.len() < 4 {
        if let Event::Request { conn, path } = origin.next().await {
            seen.push((path, conn));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("/a".to_owned(), 1),
            ("/c".to_owned(), 2),
            ("/refused".to_owned(), 1),
            ("/refused".to_owned(), 2),
        ]
    );
    assert_eq!(origin.connections(), 2);
    client.close();
    t(client.wait_idle()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_the_next_request_opens_another() {
    let mut origin = Origin::start(100, Mode::Normal);
    let options = Options::default().idle_timeout(Duration::from_millis(200));
    let client = client(&origin, options);
    t(client.request(get(format!("{}/one", origin.url))))
        .await
        .unwrap();
    // The server sees the pool close the idle connection (after its one request).
    loop {
        if let Event::Closed { conn, error } = origin.next().await {
            assert_eq!(conn, 1);
            assert!(matches!(
                error,
                ConnectionError::PeerClosed {
                    code: Code::H3_NO_ERROR,
                    ..
                }
            ));
            break;
        }
    }
    t(client.request(get(format!("{}/two", origin.url))))
        .await
        .unwrap();
    assert_eq!(origin.requests(1).await, [2]);
    assert_eq!(origin.connections(), 2);
    client.close();
    t(client.wait_idle()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_fails_with_timeout() {
    let mut origin = Origin::start(100, Mode::Normal);
    let limit = Duration::from_millis(300);
    let client = client(&origin, Options::default().request_timeout(limit));
    // `/hold` is not answered until released, which this test never does.
    let result = t(client.request(get(format!("{}/hold", origin.url)))).await;
    assert!(
        matches!(result, Err(RequestError::Timeout(d)) if d == limit),
        "{result:?}"
    );
    assert_eq!(origin.requests(1).await, [1]);
    client.close();
    t(client.wait_idle()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_past_its_timeout_fails_with_connect_timeout() {
    // A UDP socket that never answers: the handshake cannot complete.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let origin = Origin::start(100, Mode::Normal);
    let limit = Duration::from_millis(300);
    let client = client(&origin, Options::default().connect_timeout(limit));
    let result = t(client.request(get(format!("https://127.0.0.1:{port}/")))).await;
    assert!(
        matches!(result, Err(RequestError::ConnectTimeout(d)) if d == limit),
        "{result:?}"
    );
    // Not an https URI with a host.
    let result = client.request(get("/relative".to_owned())).await;
    assert!(matches!(result, Err(RequestError::Uri(_))), "{result:?}");
}
