//! Reading a request body by polling ([`RecvHalf::poll_recv_data`],
//! [`RecvHalf::poll_recv_capsule`]): a raw peer cuts the body at awkward places, the server's
//! [`RecvHalf`] is polled between the pieces, and some reads are dropped midway.

mod common;

use std::future::poll_fn;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{accept, raw_connection, server, t};
use quay_h3::Config;
use quay_h3::proto::capsule::Capsule;
use quay_h3::stream::{RecvHalf, SendHalf};
use quay_transport::{Connection, SendStream};

/// Both ends of one request whose head is sent: the raw client's connection and request
/// stream, and the server's halves.
struct Request {
    client: Connection,
    control: SendStream,
    body: SendStream,
    _server: quay_h3::server::Connection,
    _response: SendHalf,
    recv: RecvHalf,
}

impl Request {
    /// Connects a raw client to our server and sends `POST /` (static table only, no
    /// content-length).
    async fn post() -> Self {
        let fixture = server(Config::default());
        let target = fixture.target();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let connection = accept(&fixture).await;
            let (_, stream) = t(connection.accept()).await.unwrap().unwrap();
            let _ = tx.send((connection, stream));
        });
        let client = raw_connection(target).await;
        let mut control = t(client.open_uni()).await.unwrap();
        // Control stream (0x00): an empty SETTINGS frame.
        t(control.write_all(&[0x00, 0x04, 0x00])).await.unwrap();
        let (mut body, _recv) = t(client.open_bi()).await.unwrap();
        // HEADERS: prefix 0 0; :method POST (static 20), :scheme https (static 23), :path /
        // (static 1), :authority localhost (static name 0).
        let mut section = vec![0x00, 0x00, 0xd4, 0xd7, 0xc1, 0x50, 0x09];
        section.extend_from_slice(b"localhost");
        let mut frame = vec![0x01, section.len() as u8];
        frame.extend_from_slice(&section);
        t(body.write_all(&frame)).await.unwrap();
        let (server, stream) = t(rx).await.unwrap();
        let (response, recv) = stream.split();
        Self {
            client,
            control,
            body,
            _server: server,
            _response: response,
            recv,
        }
    }

    /// Writes `bytes` on the request stream and gives them time to reach the server.
    async fn send(&mut self, bytes: &[u8]) {
        t(self.body.write_all(bytes)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Keeps the control stream open to the end: closing it is a connection error.
    fn end(self) {
        std::mem::forget(self.control);
        drop(self.client);
    }
}

/// Polls once, with a waker that does nothing.
fn poll_now<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
    poll(&mut Context::from_waker(Waker::noop()))
}

/// `payload` in a DATA frame (its length in one byte).
fn data_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x00, u8::try_from(payload.len()).unwrap()];
    frame.extend_from_slice(payload);
    frame
}

fn encoded(capsule: &Capsule) -> Vec<u8> {
    let mut buf = BytesMut::new();
    capsule.encode(&mut buf);
    buf.to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capsules_cut_across_polls_and_frames() {
    // RFC 9297 §3.2: capsules are a byte stream across DATA frames, cut anywhere.
    let mut request = Request::post().await;
    let first = Capsule::datagram(Bytes::from_static(b"hello"));
    let second = Capsule::datagram(Bytes::from_static(b"capsule across frames"));
    let (first_bytes, second_bytes) = (encoded(&first), encoded(&second));
    let mut frame = data_frame(&[&first_bytes[..], &second_bytes[..2]].concat());
    let tail = frame.split_off(4);
    // The DATA frame's type alone, then its length with the capsule's type and length.
    request.send(&frame[..1]).await;
    assert!(poll_now(|cx| request.recv.poll_recv_capsule(cx)).is_pending());
    request.send(&frame[1..]).await;
    assert!(poll_now(|cx| request.recv.poll_recv_capsule(cx)).is_pending());
    // The capsule's value but for its last byte.
    request.send(&tail[..tail.len() - 3]).await;
    assert!(poll_now(|cx| request.recv.poll_recv_capsule(cx)).is_pending());
    // A read dropped while most of a capsule is buffered loses none of it.
    let dropped = tokio::time::timeout(Duration::from_millis(50), request.recv.recv_capsule());
    assert!(dropped.await.is_err());
    // Its last byte, and the next capsule's type and length.
    request.send(&tail[tail.len() - 3..]).await;
    let capsule = t(poll_fn(|cx| request.recv.poll_recv_capsule(cx))).await;
    assert_eq!(capsule.unwrap(), Some(first));
    // The second capsule: two bytes in the first DATA frame, the rest in a second one.
    assert!(poll_now(|cx| request.recv.poll_recv_capsule(cx)).is_pending());
    request.send(&data_frame(&second_bytes[2..])).await;
    let capsule = t(poll_fn(|cx| request.recv.poll_recv_capsule(cx))).await;
    assert_eq!(capsule.unwrap(), Some(second));
    request.body.finish().unwrap();
    assert_eq!(t(request.recv.recv_capsule()).await.unwrap(), None);
    request.end();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_data_reads_lose_no_bytes() {
    let mut request = Request::post().await;
    let mut received = BytesMut::new();
    // A DATA frame announcing 10 bytes, with 4 of them.
    request.send(&[0x00, 0x0a]).await;
    request.send(b"0123").await;
    received.put(t(request.recv.recv_data()).await.unwrap().unwrap());
    let dropped = tokio::time::timeout(Duration::from_millis(50), request.recv.recv_data());
    assert!(dropped.await.is_err());
    // The other 6, then the type of the next DATA frame alone.
    request.send(b"456789").await;
    request.send(&[0x00]).await;
    // Bounded: the 6 bytes arrived in at most 6 pieces.
    while let Poll::Ready(data) = poll_now(|cx| request.recv.poll_recv_data(cx)) {
        received.put(data.unwrap().unwrap());
    }
    let dropped = tokio::time::timeout(Duration::from_millis(50), request.recv.recv_data());
    assert!(dropped.await.is_err());
    request.send(&[0x03]).await;
    request.send(b"abc").await;
    request.body.finish().unwrap();
    // Bounded by the stream, which has ended.
    while let Some(data) = t(request.recv.recv_data()).await.unwrap() {
        received.put(data);
    }
    assert_eq!(&received[..], b"0123456789abc");
    assert_eq!(t(request.recv.recv_trailers()).await.unwrap(), None);
    request.end();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_trailers_survive_a_dropped_read() {
    // RFC 9204 §2.2.1: a trailer section that refers to a dynamic table entry not inserted yet
    // waits for the encoder stream; the wait is kept when the read waiting on it is dropped.
    let mut request = Request::post().await;
    request.send(&data_frame(b"hi")).await;
    // HEADERS, length 3: Required Insert Count 1 (encoded 2 with 128 entries), Base 1, then
    // dynamic index 0.
    request.send(&[0x01, 0x03, 0x02, 0x00, 0x80]).await;
    request.body.finish().unwrap();
    let data = t(request.recv.recv_data()).await.unwrap();
    assert_eq!(data.as_deref(), Some(&b"hi"[..]));
    let dropped = tokio::time::timeout(Duration::from_millis(100), request.recv.recv_data());
    assert!(dropped.await.is_err(), "read past blocked trailers");
    assert!(poll_now(|cx| request.recv.poll_recv_data(cx)).is_pending());
    // Encoder stream (0x02): Set Dynamic Table Capacity 4096, Insert With Literal Name
    // "x-checksum" value "abc".
    let mut encoder = t(request.client.open_uni()).await.unwrap();
    let mut instructions = vec![0x02, 0x3f, 0xe1, 0x1f, 0x4a];
    instructions.extend_from_slice(b"x-checksum");
    instructions.push(0x03);
    instructions.extend_from_slice(b"abc");
    t(encoder.write_all(&instructions)).await.unwrap();
    assert_eq!(t(request.recv.recv_data()).await.unwrap(), None);
    let trailers = t(request.recv.recv_trailers()).await.unwrap().unwrap();
    assert_eq!(trailers["x-checksum"], "abc");
    std::mem::forget(encoder);
    request.end();
}
