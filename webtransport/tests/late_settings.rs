//! A session request that arrives before the client's SETTINGS (a lost or late packet is
//! enough): draft-ietf-webtrans-http3-16 §3.1 says the server must not handle it until the
//! SETTINGS are in, since they say which draft the client speaks and whether flow control is
//! on. A server that went ahead saw no draft and no flow control, while the client, which had
//! the server's SETTINGS, kept to flow control: it stalled for good after the server's initial
//! 100 streams (found through quay-tests' impairing relay at 2% loss).
//!
//! A raw client sends the CONNECT request first and its SETTINGS only afterwards.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use quay_h3::proto::frame::Frame;
use quay_h3::proto::headers::{Protocol, request_fields};
use quay_h3::proto::{Codec, VarInt};
use quay_qpack::{Encoder, EncoderConfig, Field};
use quay_transport::{ClientBuilder, Identity, Trust};
use quay_webtransport::proto::settings::Draft;
use quay_webtransport::{Config, Server};

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_request_waits_for_the_clients_settings() {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let hash = identity.certificate_hash();
    let config = Config::default();
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), identity, config.clone()).unwrap();
    let addr = server.local_addr().unwrap();
    let endpoint = ClientBuilder::new()
        .trust(Trust::CertificateHashes(vec![hash]))
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let connection = bounded(endpoint.connect(addr, "localhost").unwrap())
        .await
        .unwrap();

    // The CONNECT request (QPACK: the static table and literals only).
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost:{}/late", addr.port()))
        .extension(Protocol::WEBTRANSPORT_H3)
        .body(())
        .unwrap();
    let fields: Vec<(Bytes, Bytes)> = request_fields(&request).unwrap();
    let fields: Vec<Field> = fields.into_iter().map(|(n, v)| Field::new(n, v)).collect();
    let (mut send, _recv) = bounded(connection.open_bi()).await.unwrap();
    let section = Encoder::new(EncoderConfig::default()).encode(0, &fields);
    let mut headers = BytesMut::new();
    Frame::Headers(section.field_section).encode(&mut headers);
    bounded(send.write_all(&headers)).await.unwrap();

    // Without the client's SETTINGS the request is not handed out (given time to arrive).
    let accept = server.accept();
    tokio::pin!(accept);
    let early = tokio::time::timeout(Duration::from_millis(200), &mut accept).await;
    assert!(
        early.is_err(),
        "a session request was handled before SETTINGS"
    );

    // The control stream: its type, then the SETTINGS quay's own client sends.
    let settings = config.h3_config().settings(0);
    let mut control = BytesMut::new();
    VarInt::from_u32(0x00).encode(&mut control);
    Frame::Settings(settings.clone()).encode(&mut control);
    let mut control_stream = bounded(connection.open_uni()).await.unwrap();
    bounded(control_stream.write_all(&control)).await.unwrap();

    // Now the request comes, with the client's draft.
    let request = bounded(accept).await.unwrap();
    assert_eq!(Some(request.draft()), Draft::from_settings(&settings));
    assert_eq!(request.draft(), Draft::Draft15);
    // The control stream must stay open while the connection lives (RFC 9114 §6.2.1).
    drop(request);
    drop(control_stream);
}
