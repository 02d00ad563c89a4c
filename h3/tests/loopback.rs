//! Client and server of this crate talking over 127.0.0.1.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{accept, client, server, t};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use quay_h3::server::RequestStream;
use quay_h3::{Config, StreamError};

/// Serves every request of one connection with `handler`, one task per request.
fn serve<F, Fut>(fixture: common::Fixture, handler: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(Request<()>, RequestStream) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        // Bounded by the client: it closes the connection at the end of each test.
        while let Ok(Some((request, stream))) = connection.accept().await {
            tokio::spawn(handler.clone()(request, stream));
        }
    })
}

fn ok() -> Response<()> {
    Response::builder().status(200).body(()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get() {
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |request, mut stream| async move {
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri().path(), "/hello");
        assert_eq!(request.headers()["user-agent"], "quay-test");
        let response = Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(())
            .unwrap();
        stream.send_response(response).await.unwrap();
        stream
            .send_data(Bytes::from_static(b"hello, world"))
            .await
            .unwrap();
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    let request = Request::get("https://localhost/hello")
        .header("user-agent", "quay-test")
        .body(Bytes::new())
        .unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(response.body(), &b"hello, world"[..]);
    assert_eq!(response.version(), http::Version::HTTP_3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_by_url() {
    let fixture = server(Config::default());
    // "localhost" may resolve to ::1 first; the server is on 127.0.0.1 only.
    let url = format!("https://localhost:{}/", fixture.addr.port());
    let builder = common::client_builder(&fixture.hash);
    serve(fixture, |_, mut stream| async move {
        stream.send_response(ok()).await.unwrap();
        stream.finish().unwrap();
    });
    let client = t(quay_h3::client::Connection::connect(
        &url,
        &builder,
        Config::default(),
    ))
    .await
    .unwrap();
    let request = Request::get(url).body(Bytes::new()).unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_streamed_both_ways() {
    let fixture = server(Config::default());
    let target = fixture.target();
    // The server echoes each piece as it arrives, upper-cased.
    serve(fixture, |request, mut stream| async move {
        assert_eq!(request.method(), "POST");
        stream.send_response(ok()).await.unwrap();
        while let Some(chunk) = t(stream.recv_data()).await.unwrap() {
            let upper = chunk.to_ascii_uppercase();
            stream.send_data(Bytes::from(upper)).await.unwrap();
        }
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    let request = Request::post("https://localhost/echo").body(()).unwrap();
    let mut stream = t(client.send_request(request)).await.unwrap();
    let response = {
        stream
            .send_data(Bytes::from_static(b"first "))
            .await
            .unwrap();
        t(stream.recv_response()).await.unwrap()
    };
    assert_eq!(response.status(), StatusCode::OK);
    let (mut send, mut recv) = stream.split();
    let writer = tokio::spawn(async move {
        for i in 0..10 {
            t(send.send_data(Bytes::from(format!("piece {i} "))))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        send.finish().unwrap();
    });
    let mut echoed = Vec::new();
    // Bounded by the server, which ends after our FIN.
    while let Some(chunk) = t(recv.recv_data()).await.unwrap() {
        echoed.extend_from_slice(&chunk);
    }
    t(writer).await.unwrap();
    let mut expected = String::from("FIRST ");
    for i in 0..10 {
        expected.push_str(&format!("PIECE {i} "));
    }
    assert_eq!(String::from_utf8(echoed).unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_both_ways() {
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |_, mut stream| async move {
        let mut body = Vec::new();
        while let Some(chunk) = t(stream.recv_data()).await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        assert_eq!(body, b"payload");
        let trailers = t(stream.recv_trailers()).await.unwrap().unwrap();
        assert_eq!(trailers["x-checksum"], "abc");
        stream.send_response(ok()).await.unwrap();
        stream
            .send_data(Bytes::from_static(b"reply"))
            .await
            .unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        stream.send_trailers(trailers).await.unwrap();
    });
    let client = client(target, Config::default()).await;
    let request = Request::post("https://localhost/rpc").body(()).unwrap();
    let mut stream = t(client.send_request(request)).await.unwrap();
    stream
        .send_data(Bytes::from_static(b"payload"))
        .await
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    t(stream.send_trailers(trailers)).await.unwrap();
    let response = t(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(t(stream.recv_data()).await.unwrap().unwrap(), &b"reply"[..]);
    assert_eq!(t(stream.recv_data()).await.unwrap(), None);
    let trailers = t(stream.recv_trailers()).await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    // The one-call form carries them in the extensions, both ways.
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let request = Request::post("https://localhost/rpc")
        .extension(quay_h3::Trailers(trailers))
        .body(Bytes::from_static(b"payload"))
        .unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.body(), &b"reply"[..]);
    let quay_h3::Trailers(trailers) = response.extensions().get().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests() {
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |request, mut stream| async move {
        let n = request.uri().path().trim_start_matches('/').to_owned();
        stream.send_response(ok()).await.unwrap();
        stream.send_data(Bytes::from(n)).await.unwrap();
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let request = Request::get(format!("https://localhost/{i}"))
                .body(Bytes::new())
                .unwrap();
            let response = client.request(request).await.unwrap();
            assert_eq!(response.body(), i.to_string().as_bytes());
        }));
    }
    for task in tasks {
        t(task).await.unwrap();
    }
}

/// A deterministic byte pattern that repeats only every 251 bytes.
fn pattern(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_body() {
    const TOTAL: u64 = 100 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |_, mut stream| async move {
        let mut received = 0u64;
        // Bounded by the client's FIN.
        while let Some(chunk) = t(stream.recv_data()).await.unwrap() {
            let expected = pattern(received, chunk.len());
            assert!(chunk == expected, "mismatch at offset {received}");
            received += chunk.len() as u64;
        }
        stream.send_response(ok()).await.unwrap();
        stream
            .send_data(Bytes::from(received.to_string()))
            .await
            .unwrap();
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    let request = Request::put("https://localhost/upload")
        .header("content-length", TOTAL)
        .body(())
        .unwrap();
    let mut stream = t(client.send_request(request)).await.unwrap();
    let chunk = pattern(0, CHUNK + 251 - CHUNK % 251);
    let step = CHUNK as u64 - CHUNK as u64 % 251;
    let mut sent = 0u64;
    while sent < TOTAL {
        let len = (TOTAL - sent).min(step) as usize;
        t(stream.send_data(chunk.slice(..len))).await.unwrap();
        sent += len as u64;
    }
    stream.finish().unwrap();
    let response = t(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = t(stream.recv_data()).await.unwrap().unwrap();
    assert_eq!(body, TOTAL.to_string().as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_with_requests_in_flight() {
    const IN_FLIGHT: usize = 20;
    let fixture = server(Config::default());
    let target = fixture.target();
    let accepted = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let (shutdown_done_tx, shutdown_done) = tokio::sync::oneshot::channel();
    let (goaway_queued_tx, goaway_queued) = tokio::sync::oneshot::channel();
    {
        let accepted = accepted.clone();
        let release = release.clone();
        tokio::spawn(async move {
            let connection = accept(&fixture).await;
            let mut handlers = Vec::new();
            for _ in 0..IN_FLIGHT {
                let (_, mut stream) = t(connection.accept()).await.unwrap().unwrap();
                accepted.fetch_add(1, Ordering::SeqCst);
                let release = release.clone();
                handlers.push(tokio::spawn(async move {
                    release.notified().await;
                    stream.send_response(ok()).await.unwrap();
                    stream.send_data(Bytes::from_static(b"done")).await.unwrap();
                    stream.finish().unwrap();
                }));
            }
            // `biased`: the shutdown is polled first, and queues the GOAWAY before the client is
            // told to send its late requests, so that the server refuses them all (a request
            // arriving before it would be accepted here).
            let connection = &connection;
            t(async {
                tokio::join!(
                    biased;
                    connection.shutdown(Duration::from_secs(10)),
                    async move {
                        let _ = goaway_queued_tx.send(());
                        // Later requests are refused; accept ends when the connection closes.
                        while let Ok(Some(_)) = t(connection.accept()).await {}
                    },
                )
            })
            .await;
            let _ = shutdown_done_tx.send(());
        });
    }
    let client = client(target, Config::default()).await;
    let mut requests = Vec::new();
    for i in 0..IN_FLIGHT {
        let client = client.clone();
        requests.push(tokio::spawn(async move {
            let request = Request::get(format!("https://localhost/{i}"))
                .body(Bytes::new())
                .unwrap();
            client.request(request).await
        }));
    }
    // Wait until the server holds every request and has queued its GOAWAY, then let the GOAWAY
    // out before answering.
    t(goaway_queued).await.unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), IN_FLIGHT);
    // GOAWAY reaches the client: new requests fail with a clear, retryable error.
    let mut refused = None;
    for _ in 0..300 {
        let request = Request::get("https://localhost/late").body(()).unwrap();
        match t(client.send_request(request)).await {
            Err(error) => {
                refused = Some(error);
                break;
            }
            Ok(mut stream) => {
                // Sent before GOAWAY arrived: the server refuses it unprocessed.
                stream.finish().unwrap();
                let error = t(stream.recv_response()).await.unwrap_err();
                assert!(error.is_retryable(), "{error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let refused = refused.expect("GOAWAY never arrived");
    assert!(matches!(refused, StreamError::GoingAway), "{refused}");
    assert!(refused.is_retryable());
    release.notify_waiters();
    // notify_waiters only wakes current waiters; handlers all wait by now, but make sure.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        release.notify_waiters();
    }
    for request in requests {
        let response = t(request).await.unwrap().unwrap();
        assert_eq!(response.body(), &b"done"[..]);
    }
    drop(client);
    t(shutdown_done).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qpack_dynamic_table_is_used() {
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |_, mut stream| async move {
        stream.send_response(ok()).await.unwrap();
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    // The encoder may use a dynamic table only once the server's SETTINGS allow one (RFC 9204
    // §3.2.3); on a loaded machine they can come after the first responses.
    t(client.settings()).await.unwrap();
    // A header the static table cannot help with, sent three times.
    let value: String = (0..1500)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let mut sent = Vec::new();
    for _ in 0..3 {
        let before = client.connection().stats().udp_tx.bytes;
        let request = Request::get("https://localhost/same")
            .header("x-large-header", value.as_str())
            .body(Bytes::new())
            .unwrap();
        let response = t(client.request(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        sent.push(client.connection().stats().udp_tx.bytes - before);
    }
    // The third request references the table entry instead of repeating the value.
    assert!(sent[2] + 300 < sent[0], "bytes sent per request: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_mismatch_is_a_message_error() {
    // RFC 9114 §4.1.2: a body shorter than content-length makes the response malformed.
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |_, mut stream| async move {
        let response = Response::builder()
            .status(200)
            .header("content-length", "10")
            .body(())
            .unwrap();
        stream.send_response(response).await.unwrap();
        stream
            .send_data(Bytes::from_static(b"short"))
            .await
            .unwrap();
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    let request = Request::get("https://localhost/")
        .body(Bytes::new())
        .unwrap();
    let error = t(client.request(request)).await.unwrap_err();
    assert!(matches!(error, StreamError::Message(_)), "{error}");
    // The connection is still fine.
    let request = Request::get("https://localhost/")
        .body(Bytes::new())
        .unwrap();
    assert!(matches!(
        t(client.request(request)).await,
        Err(StreamError::Message(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_response_head_and_reject() {
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |request, mut stream| async move {
        match request.uri().path() {
            "/interim" => {
                // RFC 9114 §4.1: 1xx responses come before the final one.
                let early = Response::builder().status(103).body(()).unwrap();
                stream.send_response(early).await.unwrap();
                stream.send_response(ok()).await.unwrap();
                stream
                    .send_data(Bytes::from_static(b"final"))
                    .await
                    .unwrap();
                stream.finish().unwrap();
            }
            "/head" => {
                let response = Response::builder()
                    .status(200)
                    .header("content-length", "1000")
                    .body(())
                    .unwrap();
                stream.send_response(response).await.unwrap();
                // Dropped for HEAD: no content (RFC 9110 §9.3.2).
                stream
                    .send_data(Bytes::from_static(b"ignored"))
                    .await
                    .unwrap();
                stream.finish().unwrap();
            }
            _ => stream.reject(quay_h3::Code::H3_REQUEST_REJECTED),
        }
    });
    let client = client(target, Config::default()).await;
    let request = Request::get("https://localhost/interim")
        .body(Bytes::new())
        .unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), &b"final"[..]);
    let request = Request::head("https://localhost/head")
        .body(Bytes::new())
        .unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.headers()["content-length"], "1000");
    assert!(response.body().is_empty());
    let request = Request::get("https://localhost/other")
        .body(Bytes::new())
        .unwrap();
    let error = t(client.request(request)).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_response_stream_is_reset_not_finished() {
    // A handler that drops its stream mid-body must not look like a complete response.
    let fixture = server(Config::default());
    let target = fixture.target();
    serve(fixture, |_, mut stream| async move {
        stream.send_response(ok()).await.unwrap();
        stream
            .send_data(Bytes::from_static(b"partial"))
            .await
            .unwrap();
        drop(stream);
    });
    let client = client(target, Config::default()).await;
    let request = Request::get("https://localhost/")
        .body(Bytes::new())
        .unwrap();
    let error = t(client.request(request)).await.unwrap_err();
    assert!(
        matches!(
            error,
            StreamError::Reset(quay_h3::Code::H3_REQUEST_CANCELLED)
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_does_not_block_others() {
    let fixture = server(Config::default());
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        // Bounded by the client closing the connection.
        while let Ok(Some(incoming)) = connection.accept_stream().await {
            tokio::spawn(async move {
                let Ok(Some((_, mut stream))) = incoming.resolve().await else {
                    return;
                };
                stream.send_response(ok()).await.unwrap();
                stream.finish().unwrap();
            });
        }
    });
    let client = client(target, Config::default()).await;
    // A stream with only the first byte of a HEADERS frame.
    let (mut slow, _recv) = t(client.connection().open_bi()).await.unwrap();
    t(slow.write_all(&[0x01])).await.unwrap();
    let request = Request::get("https://localhost/")
        .body(Bytes::new())
        .unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_section_size_limit() {
    let mut config = Config::default();
    config.max_field_section_size = 200;
    let fixture = server(config);
    let target = fixture.target();
    serve(fixture, |_, mut stream| async move {
        stream.send_response(ok()).await.unwrap();
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    let big = "x".repeat(300);
    // Before the server's SETTINGS arrive the server refuses the section itself...
    let request = Request::get("https://localhost/")
        .header("x-big", big.as_str())
        .body(Bytes::new())
        .unwrap();
    let early = t(client.request(request)).await;
    // ... after, the client does not send it (RFC 9114 §4.2.2).
    assert_eq!(
        t(client.settings()).await.unwrap().max_field_section_size(),
        Some(200)
    );
    let request = Request::get("https://localhost/")
        .header("x-big", big.as_str())
        .body(Bytes::new())
        .unwrap();
    let error = t(client.request(request)).await.unwrap_err();
    assert!(matches!(error, StreamError::HeadersTooLarge), "{error}");
    match early {
        Err(StreamError::HeadersTooLarge) => {}
        Err(StreamError::Reset(code)) => assert_eq!(code, quay_h3::Code::H3_EXCESSIVE_LOAD),
        other => panic!("{other:?}"),
    }
    // Small requests still work.
    let request = Request::get("https://localhost/")
        .body(Bytes::new())
        .unwrap();
    assert_eq!(t(client.request(request)).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_response_survives_a_dropped_connection_handle() {
    // The server drops its connection handle while a large response is being written: the
    // connection lingers after GOAWAY until the client has it all and closes.
    const SIZE: usize = 8 * 1024 * 1024;
    let fixture = server(Config::default());
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        let (_, mut stream) = t(connection.accept()).await.unwrap().unwrap();
        drop(connection);
        stream.send_response(ok()).await.unwrap();
        for _ in 0..8 {
            t(stream.send_data(Bytes::from(vec![7u8; SIZE / 8])))
                .await
                .unwrap();
        }
        stream.finish().unwrap();
    });
    let client = client(target, Config::default()).await;
    let request = Request::get("https://localhost/big")
        .body(Bytes::new())
        .unwrap();
    let response = t(client.request(request)).await.unwrap();
    assert_eq!(response.body().len(), SIZE);
    assert!(response.body().iter().all(|&b| b == 7));
    // GOAWAY arrived and nothing is in flight: the client closes.
    let error = t(client.closed()).await;
    assert!(
        matches!(error, quay_h3::ConnectionError::LocallyClosed),
        "{error}"
    );
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<quay_h3::client::Connection>();
    send_sync::<quay_h3::Client>();
    send_sync::<quay_h3::Server>();
    send_sync::<quay_h3::server::Connection>();
    send_sync::<Config>();
    send_sync::<quay_h3::ConnectionError>();
    send_sync::<StreamError>();
    send::<quay_h3::client::RequestStream>();
    send::<RequestStream>();
    send::<quay_h3::server::IncomingRequest>();
    send::<quay_h3::stream::SendHalf>();
    send::<quay_h3::stream::RecvHalf>();
    send::<quay_h3::stream::ExtensionStream>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_header_section_waits_for_the_encoder_stream() {
    // A raw peer sends a request whose :path is in the dynamic table before it sends the
    // encoder instruction that inserts it (RFC 9204 §2.2.1): the server must wait, then serve.
    let fixture = server(Config::default());
    let target = fixture.target();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        let (request, mut stream) = t(connection.accept()).await.unwrap().unwrap();
        tx.send(request.uri().path().to_owned()).await.unwrap();
        stream.send_response(ok()).await.unwrap();
        stream.finish().unwrap();
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let connection = common::raw_connection(target).await;
    let mut control = t(connection.open_uni()).await.unwrap();
    t(control.write_all(&[0x00, 0x04, 0x00])).await.unwrap();
    let (mut send, mut recv) = t(connection.open_bi()).await.unwrap();
    // Required Insert Count 1 (encoded 2 with 128 entries), Base 1; :method GET (static 17),
    // :scheme https (static 23), :authority localhost (static name 0), then dynamic index 0.
    let mut section = vec![0x02, 0x00, 0xd1, 0xd7, 0x50, 0x09];
    section.extend_from_slice(b"localhost");
    section.push(0x80);
    let mut frame = vec![0x01, section.len() as u8];
    frame.extend_from_slice(&section);
    t(send.write_all(&frame)).await.unwrap();
    send.finish().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err(), "served before the insert arrived");
    // Encoder stream: Set Dynamic Table Capacity 4096, Insert With Name Reference (static 1,
    // :path) value "/blocked".
    let mut encoder = t(connection.open_uni()).await.unwrap();
    let mut instructions = vec![0x02, 0x3f, 0xe1, 0x1f, 0xc1, 0x08];
    instructions.extend_from_slice(b"/blocked");
    t(encoder.write_all(&instructions)).await.unwrap();
    assert_eq!(t(rx.recv()).await.unwrap(), "/blocked");
    // The response comes back on the stream.
    let response = t(recv.read_to_end(1024)).await.unwrap();
    let mut reader = quay_h3::proto::reader::FrameReader::new(1024);
    reader.handle_data(Bytes::from(response));
    let mut headers = 0;
    // Bounded by the response bytes.
    while let Some(event) = reader.poll_event().unwrap() {
        if let quay_h3::proto::reader::FrameEvent::Frame(quay_h3::proto::frame::Frame::Headers(_)) =
            event
        {
            headers += 1;
        }
    }
    assert_eq!(headers, 1);
    std::mem::forget((control, encoder));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qpack_streams_are_opened_only_when_used() {
    // RFC 9204 §4.2: an endpoint may leave out an encoder or decoder stream it does not use.
    // A raw peer announces a dynamic table and sends a request that only uses the static table;
    // the server answers with `:status 200` alone, so it needs neither QPACK stream.
    let mut config = Config::default();
    config.grease = false;
    let fixture = server(config);
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        while let Ok(Some((_, mut stream))) = connection.accept().await {
            let _ = stream.send_response(ok()).await;
            let _ = stream.finish();
        }
    });
    let connection = common::raw_connection(target).await;
    let mut control = t(connection.open_uni()).await.unwrap();
    // SETTINGS: QPACK_MAX_TABLE_CAPACITY (0x01) 4096, QPACK_BLOCKED_STREAMS (0x07) 16.
    t(control.write_all(&[0x00, 0x04, 0x05, 0x01, 0x50, 0x00, 0x07, 0x10]))
        .await
        .unwrap();
    // The server's control stream comes first, with its SETTINGS.
    let mut server_control = t(connection.accept_uni()).await.unwrap();
    let mut first = [0u8; 1];
    t(server_control.read_exact(&mut first)).await.unwrap();
    assert_eq!(first, [0x00]);
    for _ in 0..2 {
        let (mut send, mut recv) = t(connection.open_bi()).await.unwrap();
        // :method GET (static 17), :scheme https (static 23), :path / (static 1), :authority
        // localhost (static name 0).
        let mut section = vec![0x00, 0x00, 0xd1, 0xd7, 0xc1, 0x50, 0x09];
        section.extend_from_slice(b"localhost");
        let mut frame = vec![0x01, section.len() as u8];
        frame.extend_from_slice(&section);
        t(send.write_all(&frame)).await.unwrap();
        send.finish().unwrap();
        // HEADERS (0x01), length 3: prefix 0 0, :status 200 (static 25).
        let response = t(recv.read_to_end(1024)).await.unwrap();
        assert_eq!(response, [0x01, 0x03, 0x00, 0x00, 0xd9]);
    }
    // No other unidirectional stream from the server.
    let more = tokio::time::timeout(Duration::from_millis(200), connection.accept_uni()).await;
    assert!(
        more.is_err(),
        "the server opened a QPACK stream it did not need"
    );
    std::mem::forget(control);
}

/// Accepts `count` connections and answers each one's requests with 200; reports each
/// connection's peer address and how it ended.
fn serve_connections(
    fixture: common::Fixture,
    count: usize,
) -> tokio::task::JoinHandle<Vec<(std::net::SocketAddr, quay_h3::ConnectionError)>> {
    tokio::spawn(async move {
        let mut ends = Vec::new();
        for _ in 0..count {
            let connection = accept(&fixture).await;
            ends.push(tokio::spawn(async move {
                // Bounded by the client, which closes the connection.
                while let Ok(Some((_request, mut stream))) = connection.accept().await {
                    stream.send_response(ok()).await.unwrap();
                    stream.finish().unwrap();
                }
                (
                    connection.connection().remote_address(),
                    connection.closed().await,
                )
            }));
        }
        let mut out = Vec::new();
        for end in ends {
            out.push(end.await.unwrap());
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_share_one_endpoint_and_wait_until_their_closes_have_left() {
    let fixture = server(Config::default());
    let url = format!("https://localhost:{}/", fixture.addr.port());
    let endpoint = common::client_builder(&fixture.hash)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let served = serve_connections(fixture, 2);
    let mut clients = Vec::new();
    for _ in 0..2 {
        let connecting =
            quay_h3::client::Connection::connect_on(&endpoint, &url, Config::default());
        clients.push(t(connecting).await.unwrap());
    }
    for client in &clients {
        let request = Request::get(url.as_str()).body(Bytes::new()).unwrap();
        let response = t(client.request(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        client.close(quay_h3::Code::H3_NO_ERROR, b"done");
    }
    t(endpoint.wait_idle()).await;
    let ends = t(served).await.unwrap();
    let local = endpoint.local_addr().unwrap();
    for (peer, end) in ends {
        // Both connections came from the one endpoint, and each close reached the server.
        assert_eq!(peer, local);
        assert!(
            matches!(end, quay_h3::ConnectionError::PeerClosed { code, .. } if code == quay_h3::Code::H3_NO_ERROR),
            "{end:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_its_own_endpoint_waits_until_its_close_has_left() {
    let fixture = server(Config::default());
    let url = format!("https://localhost:{}/", fixture.addr.port());
    let builder = common::client_builder(&fixture.hash);
    let served = serve_connections(fixture, 1);
    let client = t(quay_h3::client::Connection::connect(
        &url,
        &builder,
        Config::default(),
    ))
    .await
    .unwrap();
    client.close(quay_h3::Code::H3_NO_ERROR, b"done");
    t(client.wait_idle()).await;
    drop(client);
    let ends = t(served).await.unwrap();
    assert!(
        matches!(&ends[0].1, quay_h3::ConnectionError::PeerClosed { code, .. } if *code == quay_h3::Code::H3_NO_ERROR),
        "{:?}",
        ends[0].1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_on_both_ends() {
    // The glue fills what the cores cannot: quinn's transport counters, the RTT, the
    // handshake's duration, a request's time to its response head; and request streams add
    // their frames to the connection's when they end.
    let fixture = server(Config::default());
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        let (_, mut stream) = t(connection.accept()).await.unwrap().unwrap();
        assert_eq!(t(stream.recv_data()).await.unwrap().unwrap(), "ping");
        stream.send_response(ok()).await.unwrap();
        stream
            .send_data(Bytes::from_static(b"pong!"))
            .await
            .unwrap();
        stream.finish().unwrap();
        let request = stream.stats();
        drop(stream);
        let _ = tx.send((request, connection.stats()));
        // Keep the connection until the client is done with it.
        let _ = t(connection.closed()).await;
    });
    // Connected by URL, so that the client saw its handshake.
    let url = format!("https://127.0.0.1:{}/stats", target.addr.port());
    let builder = common::client_builder(&target.hash);
    let client = t(quay_h3::client::Connection::connect(
        &url,
        &builder,
        Config::default(),
    ))
    .await
    .unwrap();
    let request = Request::post("https://localhost/stats").body(()).unwrap();
    let mut stream = t(client.send_request(request)).await.unwrap();
    stream.send_data(Bytes::from_static(b"ping")).await.unwrap();
    stream.finish().unwrap();
    let response = t(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(t(stream.recv_data()).await.unwrap().unwrap(), "pong!");
    let stats = stream.stats();
    assert_eq!(stats.body_sent, 4);
    assert_eq!(stats.body_received, 5);
    assert!(stats.head_sent > 0 && stats.head_received > 0);
    assert!(stats.time_to_response_head.is_some());
    drop(stream);

    let (served, server) = t(rx).await.unwrap();
    assert_eq!(served.body_received, 4);
    assert_eq!(served.body_sent, 5);
    assert_eq!(server.h3.requests.opened, 1);
    assert_eq!(server.h3.frames_received.data.frames, 1);
    assert!(server.handshake.is_some());
    assert!(server.transport.udp_rx.datagrams > 0);

    let ours = client.stats();
    assert_eq!(ours.h3.requests.opened, 1);
    assert_eq!(ours.h3.frames_sent.data.frames, 1);
    assert_eq!(ours.h3.frames_sent.headers.frames, 1);
    assert_eq!(ours.h3.frames_received.data.frames, 1);
    assert!(ours.handshake.is_some());
    assert!(ours.rtt > Duration::ZERO);
    assert!(ours.transport.udp_tx.bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_on_several_addresses() {
    // Server::bind_all: an endpoint per address, one accept for all; a client of each address
    // is served.
    let identity = quay_transport::Identity::self_signed(["localhost"]).unwrap();
    let hash = identity.certificate_hash();
    let addrs = ["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    let server = quay_h3::Server::bind_all(&addrs, identity, Config::default()).unwrap();
    let bound = server.local_addrs().unwrap();
    assert_eq!(bound.len(), 2);
    assert!(bound[0].is_ipv4() && bound[1].is_ipv6());
    tokio::spawn(async move {
        // Bounded by the two clients below.
        for _ in 0..2 {
            let connection = t(server.accept()).await.unwrap();
            tokio::spawn(async move {
                while let Ok(Some((request, mut stream))) = connection.accept().await {
                    stream.send_response(ok()).await.unwrap();
                    let peer = connection.remote_address().to_string();
                    stream.send_data(Bytes::from(peer)).await.unwrap();
                    stream.finish().unwrap();
                    drop(request);
                }
            });
        }
    });
    for addr in bound {
        let endpoint = common::client_builder(&hash)
            .bind(if addr.is_ipv4() {
                "127.0.0.1:0".parse().unwrap()
            } else {
                "[::1]:0".parse().unwrap()
            })
            .unwrap();
        let url = format!("https://localhost:{}/", addr.port());
        let connection = t(endpoint.connect(addr, "localhost").unwrap())
            .await
            .unwrap();
        let client = quay_h3::client::Connection::new(connection, Config::default());
        let request = Request::get(&url).body(Bytes::new()).unwrap();
        let response = t(client.request(request)).await.unwrap();
        let peer: std::net::SocketAddr = std::str::from_utf8(response.body())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(peer.is_ipv4(), addr.is_ipv4(), "{peer} seen at {addr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_peers_of_dual_stack_endpoints_are_reported_as_ipv4() {
    // A dual-stack server endpoint ([::]) sees an IPv4 client as ::ffff:127.0.0.1, and a
    // dual-stack client endpoint (ClientBuilder::build) sees an IPv4 server the same way:
    // both report the IPv4 address.
    let identity = quay_transport::Identity::self_signed(["localhost"]).unwrap();
    let hash = identity.certificate_hash();
    let server =
        quay_h3::Server::bind("[::]:0".parse().unwrap(), identity, Config::default()).unwrap();
    let port = server.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let connection = t(server.accept()).await.unwrap();
        let _ = tx.send(connection.remote_address());
        let _ = t(connection.closed()).await;
    });
    let endpoint = common::client_builder(&hash).build().unwrap();
    assert!(
        endpoint.local_addr().unwrap().is_ipv6(),
        "a dual-stack client endpoint"
    );
    let url = format!("https://127.0.0.1:{port}/");
    let client = t(quay_h3::client::Connection::connect_on(
        &endpoint,
        &url,
        Config::default(),
    ))
    .await
    .unwrap();
    assert!(
        client.connection().remote_address().is_ipv6(),
        "quinn's view is mapped"
    );
    assert_eq!(
        client.remote_address(),
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    );
    let seen = t(rx).await.unwrap();
    assert!(seen.is_ipv4(), "{seen}");
    client.close(quay_h3::Code::H3_NO_ERROR, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_in_a_select_loses_no_connection() {
    // Server::accept is cancel-safe: a loop that gives up on it every millisecond (a select!
    // with a timer, as a server with other work does) still gets every connection. Before,
    // the handshake ran inside accept's future, and dropping it dropped the connection.
    let fixture = server(Config::default());
    let target = fixture.target();
    let served = tokio::spawn(async move {
        let mut connections = Vec::new();
        // Bounded: 10 s of 1 ms turns at most.
        for _ in 0..10_000 {
            tokio::select! {
                accepted = fixture.server.accept() => {
                    connections.push(accepted.unwrap());
                    if connections.len() == 3 {
                        return connections.len();
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
        connections.len()
    });
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(client(target, Config::default()).await);
    }
    assert_eq!(t(served).await.unwrap(), 3);
}

/// `Server::accept` returns only connections whose handshake succeeded: a client that offers
/// no protocol the server speaks (RFC 9001 §8.1: the server ends the handshake with
/// no_application_protocol) is skipped, and the next client is returned.
#[tokio::test]
async fn accept_skips_failed_handshakes() {
    let fixture = server(Config::default());
    let mut options = quay_transport::TransportOptions::default();
    options.alpn_protocols = vec![b"not-h3".to_vec()];
    let refused = common::client_builder(&fixture.hash)
        .options(options)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let refused = refused.connect(fixture.addr, "localhost").unwrap();
    let accepting = async { t(fixture.server.accept()).await.unwrap() };
    let (accepted, refused) = tokio::join!(accepting, async {
        let refused = refused.await;
        // Only after the first client was turned away does the second one connect.
        (refused, client(fixture.target(), Config::default()).await)
    });
    let (refused, good) = refused;
    assert!(refused.is_err(), "a client without h3 was accepted");
    // The refused client never had a connection: what was accepted is the good one, working.
    assert!(t(accepted.settings()).await.is_ok());
    assert!(t(good.settings()).await.is_ok());
    good.close(quay_h3::Code::H3_NO_ERROR, b"");
}

/// An extension-stream accept ends like every accept: `Ok(None)` on a clean close.
#[tokio::test]
async fn extension_stream_accept_ends_with_none_on_a_clean_close() {
    let mut config = Config::default();
    config
        .extension_uni_stream_types
        .push(quay_h3::proto::stream::StreamType::WEBTRANSPORT);
    let fixture = server(config);
    let target = fixture.target();
    let (accepted, peer) = tokio::join!(accept(&fixture), client(target, Config::default()));
    peer.close(quay_h3::Code::H3_NO_ERROR, b"bye");
    assert!(matches!(
        t(accepted.accept_extension_stream()).await,
        Ok(None)
    ));

    let (accepted, peer) = tokio::join!(accept(&fixture), client(target, Config::default()));
    peer.close(quay_h3::Code::H3_INTERNAL_ERROR, b"bad");
    match t(accepted.accept_extension_stream()).await {
        Err(quay_h3::ConnectionError::PeerClosed { code, .. }) => {
            assert_eq!(code, quay_h3::Code::H3_INTERNAL_ERROR);
        }
        other => panic!("{:?}", other.map(|s| s.is_some())),
    }
}
