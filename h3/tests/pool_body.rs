//! `http_body::Body` on the pooled client (feature `http-body`): a streamed request body with
//! trailers, echoed back as a response body with trailers.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::origin::{Mode, Origin};
use common::t;
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use quay_h3::Config;
use quay_h3::client::{Client, Options, RequestError};

/// A body of the given frames, in order.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc123".parse().unwrap());
    trailers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_body_and_trailers_come_back_as_a_response_body_and_trailers() {
    let mut origin = Origin::start(100, Mode::Normal);
    let client = Client::new(&origin.builder, Config::default()).unwrap();
    let body = Frames(VecDeque::from([
        Frame::data(Bytes::from_static(b"one ")),
        Frame::data(Bytes::from(vec![b'x'; 100_000])),
        Frame::data(Bytes::from_static(b" three")),
        Frame::trailers(trailers()),
    ]));
    let request = http::Request::post(format!("{}/echo", origin.url))
        .body(body)
        .unwrap();
    let response = t(client.send(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = t(response.into_body().collect()).await.unwrap();
    // RFC 9114 §4.1: the trailers come as a HEADERS frame after the DATA frames.
    assert_eq!(collected.trailers(), Some(&trailers()));
    let bytes = collected.to_bytes();
    assert_eq!(bytes.len(), 4 + 100_000 + 6);
    assert!(bytes.starts_with(b"one xx") && bytes.ends_with(b"x three"));

    // A response without trailers ends after its data; the same connection serves it.
    let request = http::Request::get(format!("{}/plain", origin.url))
        .body(Frames(VecDeque::new()))
        .unwrap();
    let response = t(client.send(request)).await.unwrap();
    let collected = t(response.into_body().collect()).await.unwrap();
    assert_eq!(collected.trailers(), None);
    assert_eq!(collected.to_bytes(), "/plain");
    assert_eq!(origin.requests(2).await, [1, 1]);
    client.close();
    t(client.wait_idle()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_past_the_request_timeout_fails_with_timeout() {
    let origin = Origin::start(100, Mode::Normal);
    let limit = Duration::from_millis(300);
    let options = Options::default().request_timeout(limit);
    let client = Client::with_options(&origin.builder, Config::default(), options).unwrap();
    // `/hold` is never released: the head does not come within the limit.
    let request = http::Request::get(format!("{}/hold", origin.url))
        .body(Frames(VecDeque::new()))
        .unwrap();
    let result = t(client.send(request)).await;
    assert!(
        matches!(result, Err(RequestError::Timeout(d)) if d == limit),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_past_the_request_timeout_fails_with_timeout() {
    let origin = Origin::start(100, Mode::Normal);
    let limit = Duration::from_millis(300);
    let options = Options::default().request_timeout(limit);
    let client = Client::with_options(&origin.builder, Config::default(), options).unwrap();
    // The head comes at once; the body is never released.
    let request = http::Request::get(format!("{}/head-then-hold", origin.url))
        .body(Frames(VecDeque::new()))
        .unwrap();
    let response = t(client.send(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let result = t(response.into_body().collect()).await;
    assert!(
        matches!(result, Err(RequestError::Timeout(d)) if d == limit),
        "{result:?}"
    );
}
