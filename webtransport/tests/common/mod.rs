//! What several test files share: a session opened by hand on a bare HTTP/3 client, so a test
//! can write exactly the bytes it wants on the CONNECT stream.

use http::{Method, Request};
use quay_h3::client::RequestStream;
use quay_h3::proto::headers::Protocol;
use quay_transport::ClientBuilder;
use quay_webtransport::Config;

/// Connects a `quay_h3` client with WebTransport's settings to `url` and sends an Extended
/// CONNECT for it (`:protocol webtransport-h3`); returns the client and the CONNECT stream
/// once a 2xx response has arrived.
pub(crate) async fn open_raw_session(
    url: &str,
    builder: &ClientBuilder,
) -> (quay_h3::Client, RequestStream) {
    let client = quay_h3::Client::connect(url, builder, Config::default().h3_config())
        .await
        .expect("connecting");
    let mut request = Request::new(());
    *request.method_mut() = Method::CONNECT;
    *request.uri_mut() = url.parse().expect("a URL");
    request.extensions_mut().insert(Protocol::WEBTRANSPORT_H3);
    let mut stream = client.send_request(request).await.expect("CONNECT");
    let response = stream.recv_response().await.expect("the response");
    assert!(response.status().is_success(), "{response:?}");
    (client, stream)
}
