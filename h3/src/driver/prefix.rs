//! Reading the prefix a peer's stream starts with (a unidirectional stream's type, an extension's
//! signal on a bidirectional stream, a session ID) without a task per stream: what arrived so
//! far waits in a buffer the caller keeps, and reading goes on at the next poll.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use quay_transport::RecvStream;

/// Reads from `recv` into `buf` until `decode` finds the prefix the stream starts with: `Some`
/// with the prefix and the bytes after it, or `None` if the stream ended first. While more
/// bytes are needed they wait in `buf`, so the caller can stop polling and go on later.
pub(crate) fn poll_prefix<T>(
    cx: &mut Context<'_>,
    recv: &mut RecvStream,
    buf: &mut BytesMut,
    decode: impl Fn(&mut &[u8]) -> Option<T>,
) -> Poll<Result<Option<(T, Bytes)>, quay_transport::ReadError>> {
    // Bounded: a prefix is a few varints, and each turn consumes a chunk.
    loop {
        let mut cur = &buf[..];
        if let Some(value) = decode(&mut cur) {
            let used = buf.len() - cur.len();
            buf.advance(used);
            return Poll::Ready(Ok(Some((value, std::mem::take(buf).freeze()))));
        }
        match ready!(pin!(recv.read_chunk(usize::MAX, true)).poll(cx))? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => return Poll::Ready(Ok(None)),
        }
    }
}
