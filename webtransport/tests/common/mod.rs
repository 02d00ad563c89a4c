//! What several test files share: a server with its default configuration on loopback, and a
//! session opened by hand on a bare HTTP/3 client, so a test can write exactly the bytes it
//! wants on the CONNECT stream.

// Each test file that includes this module uses part of it.
#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Request};
use quay_h3::client::RequestStream;
use quay_h3::proto::headers::Protocol;
use quay_h3::proto::{Codec, VarInt};
use quay_transport::{ClientBuilder, Identity, Trust};
use quay_webtransport::{Config, Server};

/// quay's server with its default configuration on 127.0.0.1 (a self-signed certificate for
/// "localhost"), and a client builder that trusts it.
pub(crate) fn default_server() -> (Server, ClientBuilder) {
    let identity = Identity::self_signed(["localhost"]).expect("a certificate");
    let builder =
        ClientBuilder::new().trust(Trust::CertificateHashes(vec![identity.certificate_hash()]));
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), identity, Config::default())
        .expect("binding the server");
    (server, builder)
}

/// Connects a `quay_h3` client with WebTransport's settings to `url` and sends an Extended
/// CONNECT for it (`:protocol webtransport-h3`); returns the client and the CONNECT stream
/// once a 2xx response has arrived.
pub(crate) async fn open_raw_session(
    url: &str,
    builder: &ClientBuilder,
) -> (quay_h3::client::Connection, RequestStream) {
    let client = quay_h3::client::Connection::connect(url, builder, Config::default().h3_config())
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

/// A WebTransport stream's first bytes: its type (uni) or signal (bidi), the session ID, then
/// `payload` (draft-16 §4.2, §4.3).
pub(crate) fn stream_header(ty: VarInt, session_id: impl Into<VarInt>, payload: &[u8]) -> Bytes {
    let session_id: VarInt = session_id.into();
    let mut bytes = BytesMut::new();
    ty.encode(&mut bytes);
    session_id.encode(&mut bytes);
    bytes.put_slice(payload);
    bytes.freeze()
}
