//! What a server does with a CONNECT stream whose peer breaks WebTransport's rules: how a session
//! ends (draft-16 §6, RFC 9297 §3.3) and what a client must announce (draft-16 §3.1), on loopback
//! with a hand-written client. The peer must learn why on the wire, as a reset of the CONNECT
//! stream with H3_MESSAGE_ERROR.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use quay_h3::Code;
use quay_h3::client::RequestStream;
use quay_h3::proto::VarInt;
use quay_h3::proto::frame::FrameType;
use quay_h3::proto::headers::Protocol;
use quay_h3::proto::settings::SettingId;
use quay_h3::stream::{RecvHalf, SendHalf};
use quay_transport::ClientBuilder;
use quay_webtransport::proto::capsule::WtCapsule;
use quay_webtransport::{Server, SessionError};
use tokio::sync::mpsc;

mod common;

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

/// The URL of a session on `server`.
fn session_url(server: &Server) -> String {
    format!(
        "https://localhost:{}/s",
        server.local_addr().unwrap().port()
    )
}

/// Ends the session of `connect` as a client does by hand: WT_CLOSE_SESSION with `code` and
/// `reason`, then FIN. Returns both halves for the caller to keep: dropping the receiving half
/// would stop the CONNECT stream.
async fn close_by_hand(connect: RequestStream, code: u32, reason: &str) -> (SendHalf, RecvHalf) {
    let (mut send, recv) = connect.split();
    send.send_capsule(&WtCapsule::close(code, reason).to_capsule())
        .await
        .unwrap();
    send.finish().unwrap();
    (send, recv)
}

/// A server that accepts every session and reports how each ended; the URL and a client
/// builder that trusts it.
fn server() -> (String, ClientBuilder, mpsc::UnboundedReceiver<SessionError>) {
    let (server, builder) = common::default_server();
    let url = session_url(&server);
    let (ended, endings) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(request) = server.accept().await {
            let ended = ended.clone();
            tokio::spawn(async move {
                let session = request.ok().await.expect("accepting");
                let _ = ended.send(session.closed().await);
            });
        }
    });
    (url, builder, endings)
}

/// What the server answers on the CONNECT stream after the client's last bytes: `Ok(None)` for
/// FIN (capsules in between are skipped), or the error (a reset).
async fn answer(stream: &mut RequestStream) -> Result<Option<()>, quay_h3::StreamError> {
    loop {
        match bounded(stream.recv_capsule()).await {
            Ok(Some(_)) => continue,
            Ok(None) => return Ok(None),
            Err(error) => return Err(error),
        }
    }
}

fn close_capsule() -> quay_h3::proto::capsule::Capsule {
    WtCapsule::close(42, "bye").to_capsule()
}

// draft-16 §6: after WT_CLOSE_SESSION the sender sends FIN, and the receiver answers.
#[tokio::test]
async fn a_close_then_fin_is_answered_with_fin() {
    let (url, builder, mut endings) = server();
    let (_client, mut stream) = common::open_raw_session(&url, &builder).await;
    stream.send_capsule(&close_capsule()).await.unwrap();
    stream.finish().unwrap();
    assert!(matches!(answer(&mut stream).await, Ok(None)));
    assert!(matches!(
        bounded(endings.recv()).await,
        Some(SessionError::PeerClosed { code: 42, ref reason }) if reason == "bye"
    ));
}

// draft-16 §6: stream data after WT_CLOSE_SESSION resets the CONNECT stream with
// H3_MESSAGE_ERROR; the session still ended with the peer's close, which came first.
#[tokio::test]
async fn bytes_after_a_close_capsule_reset_the_connect_stream_with_h3_message_error() {
    let (url, builder, mut endings) = server();
    let after: [(&str, Bytes); 3] = [
        ("a second capsule", {
            let mut bytes = Vec::new();
            WtCapsule::DrainSession.to_capsule().encode(&mut bytes);
            bytes.into()
        }),
        (
            "an unknown capsule",
            Bytes::from_static(&[0x17, 0x02, 0xaa, 0xbb]),
        ),
        ("a lone byte", Bytes::from_static(&[0x40])),
    ];
    for (what, bytes) in after {
        let (_client, mut stream) = common::open_raw_session(&url, &builder).await;
        stream.send_capsule(&close_capsule()).await.unwrap();
        stream.send_data(bytes).await.unwrap();
        stream.finish().unwrap();
        match answer(&mut stream).await {
            Err(quay_h3::StreamError::Reset(Code::H3_MESSAGE_ERROR)) => {}
            other => panic!("{what} after the close: the server answered {other:?}"),
        }
        match bounded(endings.recv()).await {
            Some(SessionError::PeerClosed { code: 42, reason }) if reason == "bye" => {}
            other => panic!("{what} after the close: the session ended with {other:?}"),
        }
    }
}

// RFC 9297 §3.3: a capsule cut short by FIN, in its type, its length or its payload, is a
// malformed message: the CONNECT stream is reset with H3_MESSAGE_ERROR (RFC 9114 §4.1.2).
#[tokio::test]
async fn a_capsule_cut_short_by_fin_resets_the_connect_stream_with_h3_message_error() {
    let (url, builder, mut endings) = server();
    let mut whole = Vec::new();
    close_capsule().encode(&mut whole);
    // WT_CLOSE_SESSION's type is the two-byte varint 0x68 0x43, its length one byte.
    assert_eq!(&whole[..2], [0x68, 0x43]);
    let cuts: [(&str, &[u8]); 3] = [
        ("in the type", &whole[..1]),
        ("in the length", &[0x68, 0x43, 0x40]),
        ("in the payload", &whole[..whole.len() - 1]),
    ];
    for (where_, bytes) in cuts {
        let (_client, mut stream) = common::open_raw_session(&url, &builder).await;
        stream
            .send_data(Bytes::copy_from_slice(bytes))
            .await
            .unwrap();
        stream.finish().unwrap();
        match answer(&mut stream).await {
            Err(quay_h3::StreamError::Reset(Code::H3_MESSAGE_ERROR)) => {}
            other => panic!("a capsule cut {where_}: the server answered {other:?}"),
        }
        match bounded(endings.recv()).await {
            Some(SessionError::Protocol(_)) => {}
            other => panic!("a capsule cut {where_}: the session ended with {other:?}"),
        }
    }
}

/// Sends a WebTransport CONNECT from a client that announces `settings` (Extended CONNECT is on
/// for it; HTTP datagrams only when `datagrams`); returns how the server answered.
async fn connect_with_settings(
    url: &str,
    builder: &ClientBuilder,
    settings: Vec<(SettingId, VarInt)>,
    datagrams: bool,
) -> Result<http::StatusCode, quay_h3::StreamError> {
    let mut config = quay_h3::Config::default();
    config.enable_extended_connect = true;
    config.enable_datagrams = datagrams;
    config.extra_settings = settings;
    let client = quay_h3::client::Connection::connect(url, builder, config)
        .await
        .expect("connecting");
    let mut request = http::Request::connect(url).body(()).unwrap();
    request.extensions_mut().insert(Protocol::WEBTRANSPORT_H3);
    let mut stream = client.send_request(request).await?;
    bounded(stream.recv_response())
        .await
        .map(|response| response.status())
}

// draft-16 §3.1: a server that receives SETTINGS without every setting WebTransport requires of
// a client treats the client's sessions as malformed: a stream error H3_MESSAGE_ERROR (RFC 9114
// §4.1.2), never a 2xx.
#[tokio::test]
async fn a_client_without_webtransport_settings_has_its_connect_reset_with_h3_message_error() {
    let (url, builder, _endings) = server();
    let one = VarInt::from_u32(1);
    let cases = [
        (
            "no SETTINGS_H3_DATAGRAM",
            vec![(SettingId::WT_ENABLED, one)],
            false,
        ),
        ("no WebTransport setting", Vec::new(), true),
    ];
    for (what, settings, datagrams) in cases {
        match connect_with_settings(&url, &builder, settings, datagrams).await {
            Err(quay_h3::StreamError::Reset(Code::H3_MESSAGE_ERROR)) => {}
            other => panic!("{what}: the server answered {other:?}"),
        }
    }
    // Each draft's own setting with HTTP datagrams is enough (Chromium and Firefox send
    // draft-02's, with both H3_DATAGRAM identifiers).
    let drafts = [
        vec![
            (SettingId::ENABLE_WEBTRANSPORT, one),
            (SettingId::H3_DATAGRAM_DRAFT04, one),
        ],
        vec![(SettingId::WEBTRANSPORT_MAX_SESSIONS, one)],
        vec![(SettingId::WT_MAX_SESSIONS, one)],
        vec![(SettingId::WT_ENABLED, one)],
    ];
    for settings in drafts {
        let status = connect_with_settings(&url, &builder, settings.clone(), true).await;
        assert!(
            matches!(status, Ok(status) if status.is_success()),
            "{settings:?}: {status:?}"
        );
    }
}

// draft-16 §6: when a session ends, the endpoint resets the send side and stops the receive side
// of the session's streams with WT_SESSION_GONE; a task waiting in a read or a write does not
// hold its stream until the connection dies.
#[tokio::test]
async fn a_read_or_write_that_waits_ends_with_the_session_and_its_stream_is_reset_and_stopped() {
    let (server, builder) = common::default_server();
    let url = session_url(&server);
    let (parked_tx, mut parked) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let session = server.accept().await.unwrap().ok().await.unwrap();
        let (mut send, mut recv) = session.accept_bi().await.unwrap().unwrap();
        // A reader that waits for more, and a writer that waits for room the peer never gives
        // (the peer reads nothing, and its stream window is 6 MiB).
        let reader = tokio::spawn(async move { recv.read_to_end(1 << 20).await });
        let writer = tokio::spawn(async move {
            let chunk = vec![0; 1 << 20];
            loop {
                if let Err(error) = send.write_all(&chunk).await {
                    return error;
                }
            }
        });
        let _ = parked_tx.send((reader.await.unwrap().err(), writer.await.unwrap()));
    });
    let (client, connect) = common::open_raw_session(&url, &builder).await;
    let id = connect.id();
    let (mut send, mut recv) = client.connection().open_bi().await.unwrap();
    let signal = FrameType::WEBTRANSPORT_STREAM.to_varint();
    let header = common::stream_header(signal, id, b"some bytes, no FIN");
    send.write_all(&header).await.unwrap();
    // Let the writer fill the stream's window, then end the session.
    let mut first = [0; 1];
    bounded(recv.read_exact(&mut first)).await.unwrap();
    let _connect = close_by_hand(connect, 9, "gone").await;

    let (read, write) = bounded(parked.recv()).await.unwrap();
    assert!(
        matches!(
            read,
            Some(quay_webtransport::ReadToEndError::Stream(
                quay_webtransport::StreamError::SessionGone
            ))
        ),
        "the waiting read ended with {read:?}"
    );
    assert!(
        matches!(write, quay_webtransport::StreamError::SessionGone),
        "the waiting write ended with {write:?}"
    );
    let gone = quay_webtransport::proto::error::WT_SESSION_GONE.to_varint();
    assert_eq!(bounded(send.stopped()).await.unwrap(), Some(gone));
    // Bounded by the 6 MiB the writer could send before it had to wait.
    assert_reset_with(&mut recv, gone).await;
}

/// Reads `recv` past what arrived before its reset, and checks the reset's code.
async fn assert_reset_with(recv: &mut quay_transport::RecvStream, code: VarInt) {
    // Bounded by what the peer sent before the reset.
    let reset = loop {
        match bounded(recv.read_chunk(usize::MAX, true)).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended cleanly"),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(reset, quay_transport::ReadError::Reset(got) if got == code),
        "{reset:?}"
    );
}

// draft-16 §6, for streams nobody uses: the server accepts a stream and opens one of its own,
// then leaves both alone (the handles stay alive in its task). When the client closes the
// session, both are reset and stopped with WT_SESSION_GONE at once, not when the application
// next touches or drops them.
#[tokio::test]
async fn streams_nobody_uses_are_reset_and_stopped_when_the_session_ends() {
    let (server, builder) = common::default_server();
    let url = session_url(&server);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (release_tx, release) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let session = server.accept().await.unwrap().ok().await.unwrap();
        let accepted = session.accept_bi().await.unwrap().expect("a stream");
        let mut opened = session.open_uni().await.unwrap();
        opened.write_all(b"from the server").await.unwrap();
        let _ = ready_tx.send(());
        // Idle until the test is over: the streams are neither used nor dropped.
        let _ = release.await;
        drop((session, accepted, opened));
    });
    let (client, connect) = common::open_raw_session(&url, &builder).await;
    let id = connect.id();
    let (mut send, mut recv) = client.connection().open_bi().await.unwrap();
    let signal = FrameType::WEBTRANSPORT_STREAM.to_varint();
    send.write_all(&common::stream_header(signal, id, b"hello"))
        .await
        .unwrap();
    // The h3 client's connection task takes WebTransport's streams and hands them out.
    let Some(quay_h3::stream::ExtensionStream::Uni { recv: mut uni, .. }) =
        bounded(client.accept_extension_stream()).await.unwrap()
    else {
        panic!("the server's unidirectional stream");
    };
    bounded(ready).await.unwrap();
    let _connect = close_by_hand(connect, 7, "bye").await;

    let gone = quay_webtransport::proto::error::WT_SESSION_GONE.to_varint();
    // The accepted stream: its receive side stopped, its send side reset.
    assert_eq!(bounded(send.stopped()).await.unwrap(), Some(gone));
    let mut buf = [0; 64];
    let read = bounded(recv.read(&mut buf)).await;
    assert!(
        matches!(read, Err(quay_transport::ReadError::Reset(code)) if code == gone),
        "{read:?}"
    );
    // The server's own unidirectional stream: reset (after the bytes it had sent, if any
    // arrived first).
    assert_reset_with(&mut uni, gone).await;
    let _ = release_tx.send(());
}

// draft-16 §6, for a bidirectional stream whose application dropped one half and keeps the
// other: the half still held is ended with the session. Stream `A`: the server drops its send
// half and keeps the receive half, which must be stopped with WT_SESSION_GONE. Stream `B`: the
// server reads it to the end, drops the receive half and keeps the send half, which must be
// reset with WT_SESSION_GONE.
#[tokio::test]
async fn the_half_a_stream_keeps_is_ended_with_the_session_after_the_other_was_dropped() {
    let (server, builder) = common::default_server();
    let url = session_url(&server);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (release_tx, release) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let session = server.accept().await.unwrap().ok().await.unwrap();
        let mut kept = (None, None);
        // Bounded: two streams.
        for _ in 0..2 {
            let (send, mut recv) = session.accept_bi().await.unwrap().expect("a stream");
            let mut which = [0; 1];
            assert_eq!(recv.read(&mut which).await.unwrap(), Some(1));
            if which == *b"A" {
                drop(send);
                kept.0 = Some(recv);
            } else {
                recv.read_to_end(64).await.unwrap();
                drop(recv);
                kept.1 = Some(send);
            }
        }
        let _ = ready_tx.send(());
        // Idle until the test is over: the kept halves are neither used nor dropped.
        let _ = release.await;
        drop((session, kept));
    });
    let (client, connect) = common::open_raw_session(&url, &builder).await;
    let id = connect.id();
    let signal = FrameType::WEBTRANSPORT_STREAM.to_varint();
    let (mut a_send, mut a_recv) = client.connection().open_bi().await.unwrap();
    a_send
        .write_all(&common::stream_header(signal, id, b"A, no FIN"))
        .await
        .unwrap();
    let (mut b_send, mut b_recv) = client.connection().open_bi().await.unwrap();
    b_send
        .write_all(&common::stream_header(signal, id, b"B"))
        .await
        .unwrap();
    b_send.finish().unwrap();
    bounded(ready).await.unwrap();
    // The dropped send half of `A` was finished as usual.
    let mut buf = [0; 64];
    assert_eq!(bounded(a_recv.read(&mut buf)).await.unwrap(), None);
    let _connect = close_by_hand(connect, 7, "bye").await;

    let gone = quay_webtransport::proto::error::WT_SESSION_GONE.to_varint();
    assert_eq!(bounded(a_send.stopped()).await.unwrap(), Some(gone));
    assert_reset_with(&mut b_recv, gone).await;
    let _ = release_tx.send(());
}
