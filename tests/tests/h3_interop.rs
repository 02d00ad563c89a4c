//! Interop with hyperium `h3` + `h3-quinn` (from Cargo's registry): quay's HTTP/3 client
//! against hyperium's server, and hyperium's client against quay's server, on 127.0.0.1.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use quay_h3::Config;
use quay_h3::client::Connection;
use quay_h3::server::Server;
use quay_tests::setup::{bounded, connect_pinned};
use quay_tests::{hyperium, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_against_hyperium_server() {
    let identity = setup::identity().unwrap();
    let hash = identity.certificate_hash();
    let endpoint = setup::server_endpoint(identity).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(hyperium::serve(endpoint));
    let client = Connection::new(connect_pinned(addr, hash).await, Config::default());
    // A download, several times so QPACK state carries over between requests.
    for _ in 0..3 {
        let request = Request::get(hyperium::url("/bytes/100000"))
            .body(Bytes::new())
            .unwrap();
        let response = bounded(client.request(request)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().len(), 100_000);
    }
    // A body and trailers both ways.
    let request = Request::post(hyperium::url(hyperium::ECHO_PATH))
        .body(())
        .unwrap();
    let mut stream = bounded(client.send_request(request)).await.unwrap();
    bounded(stream.send_data(Bytes::from_static(b"echo me")))
        .await
        .unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-trailer", HeaderValue::from_static("yes"));
    bounded(stream.send_trailers(trailers)).await.unwrap();
    let response = bounded(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = Vec::new();
    while let Some(chunk) = bounded(stream.recv_data()).await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(body, b"echo me");
    let trailers = bounded(stream.recv_trailers()).await.unwrap().unwrap();
    assert_eq!(trailers["x-trailer"], "yes");
    // Not found.
    let request = Request::get(hyperium::url("/nothing"))
        .body(Bytes::new())
        .unwrap();
    assert_eq!(
        bounded(client.request(request)).await.unwrap().status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperium_client_against_our_server() {
    let identity = setup::identity().unwrap();
    let hash = identity.certificate_hash();
    let endpoint = setup::server_endpoint(identity).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let server = Server::from_endpoint(endpoint, Config::default());
    tokio::spawn(async move {
        let connection = bounded(server.accept()).await.unwrap();
        // Bounded by the client closing the connection.
        while let Ok(Some((request, mut stream))) = connection.accept().await {
            tokio::spawn(async move {
                let mut body = Vec::new();
                while let Some(chunk) = bounded(stream.recv_data()).await.unwrap() {
                    body.extend_from_slice(&chunk);
                }
                let trailers = bounded(stream.recv_trailers()).await.unwrap();
                let response = Response::builder()
                    .status(200)
                    .header("x-path", request.uri().path())
                    .body(())
                    .unwrap();
                stream.send_response(response).await.unwrap();
                stream.send_data(Bytes::from(body)).await.unwrap();
                match trailers {
                    Some(trailers) => stream.send_trailers(trailers).await.unwrap(),
                    None => stream.finish().unwrap(),
                }
            });
        }
    });
    let client = bounded(hyperium::Client::new(connect_pinned(addr, hash).await))
        .await
        .unwrap();
    for i in 0..3 {
        let request = Request::get(hyperium::url(&format!("/get/{i}")))
            .body(())
            .unwrap();
        let exchange = bounded(client.send(request, Bytes::new(), None))
            .await
            .unwrap();
        assert_eq!(exchange.response.status(), StatusCode::OK);
        assert_eq!(exchange.response.headers()["x-path"], format!("/get/{i}"));
        assert!(exchange.body.is_empty());
        assert!(exchange.trailers.is_none());
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("42"));
    let request = Request::post(hyperium::url("/post")).body(()).unwrap();
    let exchange =
        bounded(client.send(request, Bytes::from_static(b"posted body"), Some(trailers)))
            .await
            .unwrap();
    assert_eq!(exchange.body, &b"posted body"[..]);
    assert_eq!(exchange.trailers.unwrap()["x-sum"], "42");
    client.close();
}
