//! A raw QUIC peer that breaks HTTP/3 rules against our server (and a raw server against our
//! client); each test checks the code that comes back on the wire (RFC 9114 §8, RFC 9204 §6).
//!
//! The rules themselves are tested on the deterministic Pair (`pair.rs`), one test per rule.
//! These tests prove the glue: one case for each path by which an error reaches quinn (the
//! connection task's control, QPACK and unknown streams; a request stream's frame, QPACK and
//! message errors; the head timeout; the client's side), with no sleep.

mod common;

use common::{Target, accept, raw_connection, server, t};
use quay_h3::{Code, Config};
use quay_transport::{Connection, ConnectionError, VarInt};

/// Starts our server on a fresh fixture, serving until the connection dies.
fn our_server() -> Target {
    our_server_with(Config::default())
}

/// [`our_server`] with `config`.
fn our_server_with(config: Config) -> Target {
    let fixture = server(config);
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        // Bounded by the connection, which every test gets closed.
        while let Ok(Some(_)) = connection.accept().await {}
    });
    target
}

/// Opens a unidirectional stream and writes `bytes` on it (and FIN when `fin`).
async fn send_uni(connection: &Connection, bytes: &[u8], fin: bool) {
    let mut stream = t(connection.open_uni()).await.unwrap();
    t(stream.write_all(bytes)).await.unwrap();
    if fin {
        stream.finish().unwrap();
    }
    // Keep the stream open (dropping it would finish it).
    std::mem::forget(stream);
}

/// Waits for the server to close the connection and returns its code.
async fn close_code(connection: &Connection) -> Code {
    match t(connection.closed()).await {
        ConnectionError::ApplicationClosed(close) => Code::from_varint(close.error_code),
        other => panic!("expected an application close, got {other:?}"),
    }
}

async fn expect(control: &[u8], code: Code) {
    let connection = raw_connection(our_server()).await;
    send_uni(&connection, control, false).await;
    assert_eq!(close_code(&connection).await, code);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_stream_without_settings() {
    // RFC 9114 §6.2.1: control stream (0x00) starting with GOAWAY (0x07, length 1, ID 0).
    expect(&[0x00, 0x07, 0x01, 0x00], Code::H3_MISSING_SETTINGS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_control_stream() {
    // RFC 9114 §6.2.1: only one control stream.
    let connection = raw_connection(our_server()).await;
    send_uni(&connection, &[0x00, 0x04, 0x00], false).await;
    send_uni(&connection, &[0x00, 0x04, 0x00], false).await;
    assert_eq!(
        close_code(&connection).await,
        Code::H3_STREAM_CREATION_ERROR
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_stream_closed() {
    // RFC 9114 §6.2.1: the control stream must stay open.
    let connection = raw_connection(our_server()).await;
    send_uni(&connection, &[0x00, 0x04, 0x00], true).await;
    assert_eq!(
        close_code(&connection).await,
        Code::H3_CLOSED_CRITICAL_STREAM
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_stream_types_are_ignored() {
    // RFC 9114 §6.2.3, §7.2.8: a GREASE stream type (0x21) is read no further: the server
    // stops it with H3_STREAM_CREATION_ERROR and the connection stays up; a GREASE frame (0x21,
    // length 2) on the control stream is skipped. The Pair checks more types; this proves the
    // glue reads and stops the stream.
    let connection = raw_connection(our_server()).await;
    send_uni(
        &connection,
        &[0x00, 0x04, 0x00, 0x21, 0x02, 0xbe, 0xef],
        false,
    )
    .await;
    let mut grease = t(connection.open_uni()).await.unwrap();
    t(grease.write_all(&[0x21, 0xde, 0xad])).await.unwrap();
    match t(grease.stopped()).await {
        Ok(Some(code)) => assert_eq!(Code::from_varint(code), Code::H3_STREAM_CREATION_ERROR),
        other => panic!("expected STOP_SENDING, got {other:?}"),
    }
    assert!(connection.close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_qpack_encoder_stream() {
    // RFC 9204 §4.3.4: Duplicate (0b000) of an entry that does not exist.
    let connection = raw_connection(our_server()).await;
    send_uni(&connection, &[0x02, 0x00], false).await;
    assert_eq!(
        close_code(&connection).await,
        Code::QPACK_ENCODER_STREAM_ERROR
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_qpack_decoder_stream() {
    // RFC 9204 §4.4.1: Section Acknowledgment for stream 4, which has no section outstanding.
    let connection = raw_connection(our_server()).await;
    send_uni(&connection, &[0x03, 0x84], false).await;
    assert_eq!(
        close_code(&connection).await,
        Code::QPACK_DECODER_STREAM_ERROR
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_field_section() {
    // RFC 9204 §6: HEADERS whose field line names static index 200, which does not exist.
    let connection = raw_connection(our_server()).await;
    let (mut send, _recv) = t(connection.open_bi()).await.unwrap();
    t(send.write_all(&[0x01, 0x05, 0x00, 0x00, 0xff, 0x89, 0x01]))
        .await
        .unwrap();
    send.finish().unwrap();
    assert_eq!(
        close_code(&connection).await,
        Code::QPACK_DECOMPRESSION_FAILED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_before_headers() {
    // RFC 9114 §4.1: a request stream must start with HEADERS.
    let connection = raw_connection(our_server()).await;
    let (mut send, _recv) = t(connection.open_bi()).await.unwrap();
    t(send.write_all(&[0x00, 0x01, 0xaa])).await.unwrap();
    send.finish().unwrap();
    assert_eq!(close_code(&connection).await, Code::H3_FRAME_UNEXPECTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_is_a_stream_error() {
    // RFC 9114 §4.1.2: a request without :method is reset with H3_MESSAGE_ERROR; the
    // connection stays up. Field section: prefix 0x0000, :path / (static 1 -> 0xc1).
    let connection = raw_connection(our_server()).await;
    let (mut send, mut recv) = t(connection.open_bi()).await.unwrap();
    t(send.write_all(&[0x01, 0x03, 0x00, 0x00, 0xc1]))
        .await
        .unwrap();
    send.finish().unwrap();
    let mut buf = [0u8; 16];
    match t(recv.read(&mut buf)).await {
        Err(quay_transport::ReadError::Reset(code)) => {
            assert_eq!(Code::from_varint(code), Code::H3_MESSAGE_ERROR);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert!(connection.close_reason().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_not_complete_in_time_is_reset_with_h3_request_incomplete() {
    // RFC 9114 §4.1.2 and Config::request_head_timeout: a stream that holds a partial head (the
    // start of a HEADERS frame, 0x01) past the bound is reset and stopped with
    // H3_REQUEST_INCOMPLETE; the connection stays up.
    // The server's stats count it (requests.incomplete): read once the client saw the reset.
    let config = Config::default().with_request_head_timeout(std::time::Duration::from_millis(200));
    let fixture = server(config);
    let target = fixture.target();
    let (seen_tx, seen) = tokio::sync::oneshot::channel::<()>();
    let (stats_tx, stats) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let connection = accept(&fixture).await;
        tokio::select! {
            // Bounded by the connection, which the test closes.
            _ = async { while let Ok(Some(_)) = connection.accept().await {} } => {}
            _ = seen => {}
        }
        let _ = stats_tx.send(connection.stats().h3.requests);
    });
    let connection = raw_connection(target).await;
    let (mut send, mut recv) = t(connection.open_bi()).await.unwrap();
    t(send.write_all(&[0x01])).await.unwrap();
    let mut buf = [0u8; 16];
    match t(recv.read(&mut buf)).await {
        Err(quay_transport::ReadError::Reset(code)) => {
            assert_eq!(Code::from_varint(code), Code::H3_REQUEST_INCOMPLETE);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    match t(send.stopped()).await {
        Ok(Some(code)) => assert_eq!(Code::from_varint(code), Code::H3_REQUEST_INCOMPLETE),
        other => panic!("expected STOP_SENDING, got {other:?}"),
    }
    assert!(connection.close_reason().is_none());
    let _ = seen_tx.send(());
    let requests = t(stats).await.unwrap();
    assert_eq!(requests.incomplete, 1);
    assert_eq!(requests.opened, 1);
}

/// A POST whose `content-length: 10` promises more than its body (5 bytes) before FIN: a
/// HEADERS frame (QPACK, static table only: :method POST 0xd4, :scheme https 0xd7, :path /
/// 0xc1, :authority "localhost" 0x50, content-length "10" 0x54), then DATA "hello".
const SHORT_BODY_REQUEST: &[u8] = &[
    0x01, 0x14, 0x00, 0x00, 0xd4, 0xd7, 0xc1, 0x50, 0x09, b'l', b'o', b'c', b'a', b'l', b'h', b'o',
    b's', b't', 0x54, 0x02, b'1', b'0', 0x00, 0x05, b'h', b'e', b'l', b'l', b'o',
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_reset_with_h3_message_error() {
    // RFC 9114 §4.1.2: a body whose length does not match content-length makes the request
    // malformed, a stream error H3_MESSAGE_ERROR. The request has ended (FIN), so no
    // STOP_SENDING can carry it: the library resets the response with it, whether the
    // application then drops the stream or keeps it.
    for keep in [false, true] {
        let fixture = server(Config::default());
        let target = fixture.target();
        let (read_tx, read_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let connection = accept(&fixture).await;
            let (_request, mut stream) = t(connection.accept()).await.unwrap().unwrap();
            let mut body = Ok(Some(bytes::Bytes::new()));
            // Bounded: the body is 5 bytes.
            while let Ok(Some(_)) = body {
                body = t(stream.recv_data()).await;
            }
            let _ = read_tx.send(body.map(|_| ()));
            if keep {
                // The application holds the stream and does nothing with it.
                let _ = connection.closed().await;
                drop(stream);
            }
        });
        let connection = raw_connection(target).await;
        let (mut send, mut recv) = t(connection.open_bi()).await.unwrap();
        t(send.write_all(SHORT_BODY_REQUEST)).await.unwrap();
        send.finish().unwrap();
        let read = t(read_rx).await.unwrap();
        assert!(
            matches!(read, Err(quay_h3::StreamError::Message(_))),
            "the application read {read:?}"
        );
        let mut buf = [0u8; 64];
        match t(recv.read(&mut buf)).await {
            Err(quay_transport::ReadError::Reset(code)) => {
                assert_eq!(
                    Code::from_varint(code),
                    Code::H3_MESSAGE_ERROR,
                    "keep = {keep}"
                );
            }
            other => panic!("keep = {keep}: expected a reset, got {other:?}"),
        }
        connection.close(VarInt::from_u32(0x100), b"");
    }
}

/// A raw server sends `bytes` on a unidirectional stream to our client; returns the code our
/// client closes the connection with.
async fn client_closes_with(bytes: &'static [u8]) -> Code {
    let fixture = server(Config::default());
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let incoming = t(fixture.server.endpoint().accept()).await.unwrap();
        let connection = t(incoming.into_future()).await.unwrap();
        send_uni(&connection, bytes, false).await;
        let _ = tx.send(close_code(&connection).await);
    });
    let client = common::client(target, Config::default()).await;
    let code = t(rx).await.unwrap();
    drop(client);
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stream_without_max_push_id() {
    // RFC 9114 §4.6: we never sent MAX_PUSH_ID, so any push ID is an ID error.
    assert_eq!(client_closes_with(&[0x01, 0x00]).await, Code::H3_ID_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_naming_a_non_request_stream() {
    // RFC 9114 §5.2: a server's GOAWAY names a client-initiated bidirectional stream.
    assert_eq!(
        client_closes_with(&[0x00, 0x04, 0x00, 0x07, 0x01, 0x02]).await,
        Code::H3_ID_ERROR
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_initiated_bidi_stream() {
    // RFC 9114 §6.1: without an extension, a server must not open bidirectional streams.
    let fixture = server(Config::default());
    let target = fixture.target();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let incoming = t(fixture.server.endpoint().accept()).await.unwrap();
        let connection = t(incoming.into_future()).await.unwrap();
        let (mut send, _recv) = t(connection.open_bi()).await.unwrap();
        t(send.write_all(&[0x01, 0x00])).await.unwrap();
        let _ = tx.send(close_code(&connection).await);
        drop(send);
    });
    let client = common::client(target, Config::default()).await;
    assert_eq!(t(rx).await.unwrap(), Code::H3_STREAM_CREATION_ERROR);
    drop(client);
}
