//! `quay_h3::serve`: tower services over HTTP/3 on loopback, with quay's client.

#![cfg(feature = "tower")]

mod common;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{client, server, t};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use quay_h3::server::RequestBody;
use quay_h3::{Code, Config, StreamError, Trailers};
use quay_transport::TransportOptions;
use tokio::sync::{Notify, oneshot, watch};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn full(data: impl Into<Bytes>) -> BoxBody<Bytes, BoxError> {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

fn get(path: &str) -> Request<Bytes> {
    Request::get(format!("https://localhost{path}"))
        .body(Bytes::new())
        .unwrap()
}

/// Answers by path: `/echo` returns the request body and trailers, `/error` fails, `/panic`
/// panics, anything else is `METHOD PATH`.
async fn echo(
    request: Request<RequestBody>,
) -> Result<Response<BoxBody<Bytes, BoxError>>, BoxError> {
    match request.uri().path() {
        "/echo" => {
            let collected = request.into_body().collect().await?;
            let trailers = collected.trailers().cloned();
            let body = Full::new(collected.to_bytes())
                .map_err(|e| match e {})
                .with_trailers(async move { trailers.map(Ok) });
            Ok(Response::new(body.boxed()))
        }
        "/error" => Err("the service failed".into()),
        "/panic" => panic!("the service panicked"),
        path => Ok(Response::new(full(format!("{} {path}", request.method())))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_with_body_and_trailers() {
    let fixture = server(Config::default());
    let target = fixture.target();
    let serving =
        tokio::spawn(quay_h3::serve(fixture.server, tower::service_fn(echo)).into_future());
    let client = client(target, Config::default()).await;

    let response = t(client.request(get("/hello"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "GET /hello");

    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let body = Bytes::from(vec![7u8; 100_000]);
    let mut request = Request::post("https://localhost/echo")
        .body(body.clone())
        .unwrap();
    request.extensions_mut().insert(Trailers(trailers.clone()));
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), &body);
    let Some(Trailers(echoed)) = response.extensions().get::<Trailers>() else {
        panic!("no trailers in the response");
    };
    assert_eq!(echoed, &trailers);
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_error_is_500() {
    let fixture = server(Config::default());
    let target = fixture.target();
    let serving =
        tokio::spawn(quay_h3::serve(fixture.server, tower::service_fn(echo)).into_future());
    let client = client(target, Config::default()).await;
    let response = t(client.request(get("/error"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.body().is_empty());
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_service_is_500_and_the_connection_goes_on() {
    let fixture = server(Config::default());
    let target = fixture.target();
    let serving =
        tokio::spawn(quay_h3::serve(fixture.server, tower::service_fn(echo)).into_future());
    let client = client(target, Config::default()).await;
    let response = t(client.request(get("/panic"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // The same connection serves the next request.
    let response = t(client.request(get("/after"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "GET /after");
    serving.abort();
}

/// A body of `chunks` pieces of `CHUNK` bytes, then trailers, publishing how many bytes it has
/// handed out; with `fail_after`, an error after that many pieces instead.
struct Counted {
    left: usize,
    fail_after: Option<usize>,
    produced: Arc<watch::Sender<usize>>,
}

const CHUNK: usize = 16 * 1024;

impl Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.fail_after == Some(0) {
            return Poll::Ready(Some(Err("the body failed".into())));
        }
        if this.left == 0 {
            if this.fail_after.is_none() {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-done", "yes".parse().unwrap());
                this.fail_after = Some(usize::MAX);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        }
        this.left -= 1;
        if let Some(n) = &mut this.fail_after {
            *n -= 1;
        }
        this.produced.send_modify(|produced| *produced += CHUNK);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&[0x5a; CHUNK])))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_is_polled_as_the_client_reads() {
    // The client's stream window is small: the body must wait for it.
    const WINDOW: usize = 64 * 1024;
    const TOTAL_CHUNKS: usize = 256; // 4 MiB, 64 windows
    let fixture = server(Config::default());
    let target = fixture.target();
    let (produced_tx, mut produced) = watch::channel(0usize);
    let produced_tx = Arc::new(produced_tx);
    let service = tower::service_fn(move |_: Request<RequestBody>| {
        let body = Counted {
            left: TOTAL_CHUNKS,
            fail_after: None,
            produced: produced_tx.clone(),
        };
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let serving = tokio::spawn(quay_h3::serve(fixture.server, service).into_future());
    let mut options = TransportOptions::default();
    options.stream_receive_window = WINDOW as u32;
    let endpoint = common::client_builder(&target.hash)
        .options(options)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let connection = t(endpoint.connect(target.addr, "localhost").unwrap())
        .await
        .unwrap();
    let client = quay_h3::client::Connection::new(connection, Config::default());
    let mut stream =
        t(client.send_request(Request::get("https://localhost/big").body(()).unwrap()))
            .await
            .unwrap();
    stream.finish().unwrap();
    assert_eq!(
        t(stream.recv_response()).await.unwrap().status(),
        StatusCode::OK
    );
    // The server has started the body; an eager one would now run far ahead of the window.
    t(produced.wait_for(|produced| *produced >= WINDOW / 2))
        .await
        .unwrap();
    let mut read = 0;
    // Bounded by the body's length.
    while let Some(chunk) = t(stream.recv_data()).await.unwrap() {
        // What was produced is at most what the client took, its window (twice: one chunk of
        // the QUIC stream may be buffered in the reader), and the piece being written.
        let ahead = *produced.borrow() - read;
        assert!(
            ahead <= 2 * WINDOW + 2 * CHUNK,
            "{ahead} bytes ahead of the client"
        );
        read += chunk.len();
    }
    assert_eq!(read, TOTAL_CHUNKS * CHUNK);
    let trailers = t(stream.recv_trailers()).await.unwrap().unwrap();
    assert_eq!(trailers["x-done"], "yes");
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_error_mid_stream_resets_the_stream() {
    let fixture = server(Config::default());
    let target = fixture.target();
    let service = tower::service_fn(move |request: Request<RequestBody>| {
        let fail = request.uri().path() == "/fail";
        let body = Counted {
            left: if fail { 100 } else { 1 },
            fail_after: fail.then_some(3),
            produced: Arc::new(watch::channel(0).0),
        };
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let serving = tokio::spawn(quay_h3::serve(fixture.server, service).into_future());
    let client = client(target, Config::default()).await;
    let mut stream =
        t(client.send_request(Request::get("https://localhost/fail").body(()).unwrap()))
            .await
            .unwrap();
    stream.finish().unwrap();
    let mut read = 0;
    let error = match t(stream.recv_response()).await {
        // The reset may overtake the head.
        Err(error) => error,
        Ok(response) => {
            assert_eq!(response.status(), StatusCode::OK);
            // Bounded: the body fails after three pieces.
            loop {
                match t(stream.recv_data()).await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) => panic!("the body ended cleanly after {read} bytes"),
                    Err(error) => break error,
                }
            }
        }
    };
    // RFC 9114 §4.1.1: a response that cannot be completed is reset.
    assert!(
        matches!(error, StreamError::Reset(Code::H3_INTERNAL_ERROR)),
        "{error}"
    );
    assert!(read <= 3 * CHUNK);
    // The connection goes on.
    let response = t(client.request(get("/"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().len(), CHUNK);
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight_and_refuses_later_ones() {
    let fixture = server(Config::default());
    let target = fixture.target();
    let late_calls = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    // `/slow` waits to be released; anything else counts itself and answers at once.
    let service = {
        let (late_calls, entered, release) = (late_calls.clone(), entered.clone(), release.clone());
        tower::service_fn(move |request: Request<RequestBody>| {
            let slow = request.uri().path() == "/slow";
            if !slow {
                late_calls.fetch_add(1, Ordering::SeqCst);
            }
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                if slow {
                    entered.notify_one();
                    release.notified().await;
                    return Ok::<_, Infallible>(Response::new(full("finished")));
                }
                Ok(Response::new(full("early")))
            }
        })
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = quay_h3::serve(fixture.server, service).with_graceful_shutdown(
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(10),
    );
    let serving = tokio::spawn(serving.into_future());
    let client = client(target, Config::default()).await;
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.request(get("/slow")).await })
    };
    t(entered.notified()).await;
    stop.send(()).unwrap();
    // The server begins its shutdown a moment after the signal, so a late request may still
    // arrive before it (and be answered). RFC 9114 §5.2: the GOAWAY names the first request
    // not processed; each request from there on is refused, by the server (sent before the
    // GOAWAY arrived) or by the client (after).
    let mut answered = Vec::new();
    let mut rejected = Vec::new();
    let mut refused = None;
    for _ in 0..1000 {
        let request = Request::get("https://localhost/late").body(()).unwrap();
        match t(client.send_request(request)).await {
            Err(error) => {
                refused = Some(error);
                break;
            }
            Ok(mut stream) => {
                let id = quay_transport::VarInt::from(stream.id()).into_inner();
                stream.finish().unwrap();
                match t(stream.recv_response()).await {
                    Ok(response) => {
                        assert_eq!(response.status(), StatusCode::OK);
                        answered.push(id);
                    }
                    Err(error) => {
                        assert!(error.is_retryable(), "{error}");
                        rejected.push(id);
                    }
                }
            }
        }
    }
    let refused = refused.expect("GOAWAY never arrived");
    assert!(matches!(refused, StreamError::GoingAway), "{refused}");
    let goaway = client.stats().h3.goaway_received.expect("GOAWAY counted");
    assert!(
        answered.iter().all(|&id| id < goaway),
        "{answered:?} {goaway}"
    );
    assert!(
        rejected.iter().all(|&id| id >= goaway),
        "{rejected:?} {goaway}"
    );
    assert_eq!(
        late_calls.load(Ordering::SeqCst),
        answered.len(),
        "a refused request reached the service"
    );
    // The request in flight finishes.
    release.notify_one();
    let response = t(in_flight).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "finished");
    // Then the client closes, and serving ends.
    drop(client);
    t(serving).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_has_no_body() {
    let fixture = server(Config::default());
    let target = fixture.target();
    let serving =
        tokio::spawn(quay_h3::serve(fixture.server, tower::service_fn(echo)).into_future());
    let client = client(target, Config::default()).await;
    let request = Request::builder()
        .method(Method::HEAD)
        .uri("https://localhost/x")
        .body(Bytes::new())
        .unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.body().is_empty());
    serving.abort();
}
