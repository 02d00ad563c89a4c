//! [`RecvStream`]: the receiving side of a session's stream.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use quay_transport::ReadError;
use quay_transport::quinn::StreamId;
use tokio::io::ReadBuf;

use crate::error::StreamError;
use crate::held::Held;

use super::{Mapping, ReadToEndError, read_error};

/// The receiving side of a session's stream.
#[derive(Debug)]
pub struct RecvStream {
    /// quinn's stream, which the session takes away and stops when it ends.
    inner: Held<quay_transport::RecvStream>,
    /// Its slot among the session's streams (shared with the other half of a bidirectional
    /// stream).
    slot: u32,
    id: StreamId,
    /// Payload read together with the stream header; comes before anything in `inner`.
    buffered: Bytes,
    mapping: Mapping,
}

impl RecvStream {
    pub(crate) fn new(
        inner: quay_transport::RecvStream,
        buffered: Bytes,
        mapping: Mapping,
    ) -> Self {
        let id = inner.id();
        let inner = Held::new(inner);
        let slot = mapping.hold(&inner);
        Self::from_held(inner, id, slot, buffered, mapping)
    }

    /// Stream `id`, whose handle is held already, in session slot `slot`.
    pub(crate) fn from_held(
        inner: Held<quay_transport::RecvStream>,
        id: StreamId,
        slot: u32,
        buffered: Bytes,
        mapping: Mapping,
    ) -> Self {
        Self {
            inner,
            slot,
            id,
            buffered,
            mapping,
        }
    }

    /// Polls one quinn operation on the stream, with its errors in our terms.
    fn poll_quinn<T>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut quay_transport::RecvStream, &mut Context<'_>) -> Poll<Result<T, ReadError>>,
    ) -> Poll<Result<T, StreamError>> {
        self.inner.poll(cx, op, |e| read_error(e, &self.mapping))
    }

    fn check_session(&mut self) -> Result<(), StreamError> {
        if self.mapping.gone() {
            return Err(self.session_gone());
        }
        Ok(())
    }

    /// The session has ended: stops the stream with WT_SESSION_GONE (draft-16 §6).
    fn session_gone(&mut self) -> StreamError {
        self.buffered.clear();
        self.inner.end_with_session();
        StreamError::SessionGone
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Reads into `buf`; `Ok(None)` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StreamError> {
        self.check_session()?;
        if !self.buffered.is_empty() {
            let n = buf.len().min(self.buffered.len());
            buf[..n].copy_from_slice(&self.buffered.split_to(n));
            self.mapping.on_read(n)?;
            return Ok(Some(n));
        }
        let want = buf.len();
        let read = poll_fn(|cx| self.poll_quinn(cx, |stream, cx| stream.poll_read(cx, buf))).await;
        let read = match read {
            Err(StreamError::SessionGone) => return Err(self.session_gone()),
            // quinn reads nothing into a non-empty buffer only at the end.
            read => Some(read?).filter(|&n| n > 0 || want == 0),
        };
        self.mapping.on_read(read.unwrap_or(0))?;
        Ok(read)
    }

    /// The next chunk of at most `max` bytes, in order, without copying; `Ok(None)` at the end.
    /// Ends with [`StreamError::SessionGone`] if the session ends while it waits (as do
    /// [`RecvStream::read`] and [`RecvStream::read_to_end`]).
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        self.check_session()?;
        let chunk = if !self.buffered.is_empty() {
            let n = max.min(self.buffered.len());
            Some(self.buffered.split_to(n))
        } else {
            let read = poll_fn(|cx| {
                self.poll_quinn(cx, |stream, cx| pin!(stream.read_chunk(max, true)).poll(cx))
            })
            .await;
            match read {
                Err(StreamError::SessionGone) => return Err(self.session_gone()),
                read => read?.map(|chunk| chunk.bytes),
            }
        };
        self.mapping.on_read(chunk.as_ref().map_or(0, Bytes::len))?;
        Ok(chunk)
    }

    /// Reads to the end of the stream. Fails with [`ReadToEndError::TooLong`] past `limit`
    /// bytes (and stops reading with application code 0).
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ReadToEndError> {
        let mut out = Vec::new();
        // Bounded by `limit`: each turn adds at least one byte or ends.
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            if out.len() + chunk.len() > limit {
                let _ = self.stop(0);
                return Err(ReadToEndError::TooLong);
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Stops reading with application code `code` (STOP_SENDING).
    pub fn stop(&mut self, code: u32) -> Result<(), StreamError> {
        self.buffered.clear();
        let code = self.mapping.to_wire(code);
        self.inner
            .with(|stream| stream.stop(code))?
            .map_err(|_| StreamError::Closed)
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        self.mapping.dropped(&self.inner, self.slot);
    }
}

impl tokio::io::AsyncRead for RecvStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.check_session()?;
        if !this.buffered.is_empty() {
            let n = buf.remaining().min(this.buffered.len());
            buf.put_slice(&this.buffered.split_to(n));
            this.mapping.on_read(n)?;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(this.poll_quinn(cx, |stream, cx| stream.poll_read_buf(cx, buf)))?;
        this.mapping.on_read(buf.filled().len() - before)?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(feature = "web-transport-trait")]
impl RecvStream {
    /// Polls until the peer resets the stream (`Ok(Some(code))`) or it can no longer be reset
    /// (`Ok(None)`: the peer finished it and everything arrived, or we stopped it). quinn keeps
    /// the waker with the connection, so nothing is kept between polls.
    pub(crate) fn poll_received_reset(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<u32>, StreamError>> {
        let polled = self
            .inner
            .with(|stream| std::pin::pin!(stream.received_reset()).poll(cx));
        match ready!(polled?) {
            Ok(None) => Poll::Ready(Ok(None)),
            Ok(Some(code)) => {
                Poll::Ready(crate::error::peer_code(code, self.mapping.mapped()).map(Some))
            }
            Err(quay_transport::quinn::ResetError::ConnectionLost(error)) => {
                Poll::Ready(Err(StreamError::ConnectionLost(error.into())))
            }
            Err(_) => Poll::Ready(Err(StreamError::Closed)),
        }
    }
}
