//! Every method `Session` has in place of one of the QUIC connection's (it derefs to the
//! connection), called through a server `Session` against a hand-written HTTP/3 peer that sees
//! exactly what went on the wire: streams carry the session's header, datagrams its prefix, a
//! close its capsule.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use quay_h3::proto::frame::FrameType;
use quay_h3::proto::stream::StreamType;
use quay_h3::stream::ExtensionStream;
use quay_webtransport::SessionError;
use quay_webtransport::proto::capsule::{CAPSULE_TYPES, WtCapsule};

mod common;

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn each_shadowed_method_speaks_for_the_session_on_the_wire() {
    let (server, builder) = common::default_server();
    let url = format!(
        "https://localhost:{}/api",
        server.local_addr().unwrap().port()
    );
    let accepting = async { server.accept().await.unwrap().ok().await.unwrap() };
    let ((client, connect), session) =
        bounded(async { tokio::join!(common::open_raw_session(&url, &builder), accepting) }).await;
    let id = connect.id();
    assert_eq!(session.session_id(), Some(id));
    let (mut connect_send, mut connect_recv) = connect.split();
    let datagrams = connect_recv.take_datagrams().unwrap();
    connect_recv.accept_capsules(&CAPSULE_TYPES);
    // Session 0's datagram prefix is one byte (quarter stream ID 0, RFC 9297 §2.1).
    let conn = client.connection();

    // Datagrams: the peer's HTTP/3 layer routes them to the CONNECT stream by their prefix.
    let max = session.max_datagram_size().unwrap();
    assert_eq!(max, session.connection().max_datagram_size().unwrap() - 1);
    let space = session.datagram_send_buffer_space();
    assert_eq!(space, session.connection().datagram_send_buffer_space() - 1);
    session
        .send_datagram_wait(Bytes::from_static(b"waited"))
        .await
        .unwrap();
    assert_eq!(bounded(datagrams.recv()).await.unwrap(), &b"waited"[..]);
    session.send_datagram(Bytes::from_static(b"sent")).unwrap();
    assert_eq!(bounded(datagrams.recv()).await.unwrap(), &b"sent"[..]);
    connect_send
        .send_datagram(Bytes::from_static(b"from the peer"))
        .unwrap();
    assert_eq!(
        bounded(session.read_datagram()).await.unwrap(),
        &b"from the peer"[..]
    );

    // Streams we open carry the session's header (draft-16 §4.2, §4.3).
    let mut uni = session.open_uni().await.unwrap();
    uni.write_all(b"uni").await.unwrap();
    uni.finish().unwrap();
    match bounded(client.accept_extension_stream())
        .await
        .unwrap()
        .unwrap()
    {
        ExtensionStream::Uni {
            ty,
            session_id,
            mut recv,
            buffered,
        } => {
            assert_eq!((ty, session_id), (StreamType::WEBTRANSPORT, id.into()));
            let rest = bounded(recv.read_to_end(64)).await.unwrap();
            assert_eq!([buffered.as_ref(), &rest].concat(), b"uni");
        }
        other => panic!("{other:?}"),
    }
    let (mut send, _recv) = session.open_bi().await.unwrap();
    send.write_all(b"bidi").await.unwrap();
    send.finish().unwrap();
    match bounded(client.accept_extension_stream())
        .await
        .unwrap()
        .unwrap()
    {
        ExtensionStream::Bidi {
            signal,
            session_id,
            mut recv,
            buffered,
            ..
        } => {
            assert_eq!(
                (signal, session_id),
                (FrameType::WEBTRANSPORT_STREAM, id.into())
            );
            let rest = bounded(recv.read_to_end(64)).await.unwrap();
            assert_eq!([buffered.as_ref(), &rest].concat(), b"bidi");
        }
        other => panic!("{other:?}"),
    }

    // Streams the peer opens with the session's header are the session's.
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(&common::stream_header(
        StreamType::WEBTRANSPORT.to_varint(),
        id,
        b"peer uni",
    ))
    .await
    .unwrap();
    send.finish().unwrap();
    let mut recv = bounded(session.accept_uni()).await.unwrap().unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"peer uni");
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let signal = FrameType::WEBTRANSPORT_STREAM.to_varint();
    send.write_all(&common::stream_header(signal, id, b"peer bidi"))
        .await
        .unwrap();
    send.finish().unwrap();
    let (_send, mut recv) = bounded(session.accept_bi()).await.unwrap().unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"peer bidi");

    // close sends WT_CLOSE_SESSION and FIN (draft-16 §6); awaited, it returns once the peer
    // has answered with its FIN.
    assert!(session.close_reason().is_none());
    let closing = session.close(7, "shadowed");
    match bounded(connect_recv.recv_capsule()).await.unwrap() {
        Some(capsule) => assert_eq!(
            WtCapsule::decode(&capsule).unwrap(),
            Some(WtCapsule::close(7, "shadowed"))
        ),
        None => panic!("FIN before the close capsule"),
    }
    assert!(
        bounded(connect_recv.recv_capsule())
            .await
            .unwrap()
            .is_none()
    );
    connect_send.finish().unwrap();
    bounded(closing).await;
    assert!(matches!(
        session.closed().await,
        SessionError::LocallyClosed
    ));
    assert!(matches!(
        session.close_reason(),
        Some(SessionError::LocallyClosed)
    ));
    // The connection outlives the session.
    assert!(conn.close_reason().is_none());
}
