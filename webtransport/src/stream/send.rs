//! [`SendStream`]: the sending side of a session's stream.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use quay_transport::WriteError;
use quay_transport::quinn::StreamId;

use crate::error::{StreamError, peer_code};
use crate::held::Held;
use crate::state::SessionState;
use crate::waiter::WaitKey;

use super::{Mapping, write_error};

/// The sending side of a session's stream.
#[derive(Debug)]
pub struct SendStream {
    /// quinn's stream, which the session takes away and resets when it ends.
    inner: Held<quay_transport::SendStream>,
    /// Its slot among the session's streams (shared with the other half of a bidirectional
    /// stream).
    slot: u32,
    id: StreamId,
    mapping: Mapping,
    /// Its place among the session's waiters while it waits for data credit.
    waiting: WaitKey,
    /// A unidirectional stream's header, not written yet: it goes out with the first write or
    /// FIN, so that a priority set after the open applies to the stream from its first
    /// packet (quinn queues a stream at the priority it has when its first bytes are written).
    header: Option<Bytes>,
    /// The pending `poll_closed` of `web-transport-trait`.
    #[cfg(feature = "web-transport-trait")]
    poll: crate::trait_impl::SendPoll,
}

impl SendStream {
    pub(crate) fn new(inner: quay_transport::SendStream, mapping: Mapping) -> Self {
        let id = inner.id();
        let inner = Held::new(inner);
        let slot = mapping.hold(&inner);
        Self::from_held(inner, id, slot, mapping)
    }

    /// Stream `id`, whose handle is held already, in session slot `slot`.
    pub(crate) fn from_held(
        inner: Held<quay_transport::SendStream>,
        id: StreamId,
        slot: u32,
        mapping: Mapping,
    ) -> Self {
        Self {
            inner,
            slot,
            id,
            mapping,
            waiting: WaitKey::NONE,
            header: None,
            #[cfg(feature = "web-transport-trait")]
            poll: Default::default(),
        }
    }

    /// A stream whose `header` is written with its first bytes or its FIN.
    pub(crate) fn with_header(
        inner: quay_transport::SendStream,
        mapping: Mapping,
        header: Bytes,
    ) -> Self {
        let mut stream = Self::new(inner, mapping);
        stream.header = Some(header);
        stream
    }

    /// Writes what is left of the stream's header, if any.
    fn poll_header(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        // Bounded by the header: each turn writes some of it or returns.
        while let Some(header) = self.header.take() {
            let mut parts = [header];
            let written = self.poll_quinn(cx, |stream, cx| {
                pin!(stream.write_chunks(&mut parts)).poll(cx)
            });
            let [rest] = parts;
            match written {
                Poll::Pending => {
                    self.header = Some(rest);
                    return Poll::Pending;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(_)) if rest.is_empty() => {}
                Poll::Ready(Ok(_)) => self.header = Some(rest),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Polls one quinn operation on the stream, with its errors in our terms.
    fn poll_quinn<T>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnOnce(
            &mut quay_transport::SendStream,
            &mut Context<'_>,
        ) -> Poll<Result<T, WriteError>>,
    ) -> Poll<Result<T, StreamError>> {
        self.inner.poll(cx, op, |e| write_error(e, &self.mapping))
    }

    /// Fails with [`StreamError::SessionGone`], and resets the stream with WT_SESSION_GONE, once
    /// the session has ended (draft-16 §6).
    fn check_session(&mut self) -> Result<(), StreamError> {
        if self.mapping.gone() {
            return Err(self.session_gone());
        }
        Ok(())
    }

    /// The session has ended: resets the stream with WT_SESSION_GONE (draft-16 §6).
    fn session_gone(&mut self) -> StreamError {
        self.inner.end_with_session();
        StreamError::SessionGone
    }

    /// Passes on what a write returned; if the session ended while it waited, resets the
    /// stream.
    fn after_wait<T>(&mut self, result: Result<T, StreamError>) -> Result<T, StreamError> {
        if let Err(StreamError::SessionGone) = result {
            return Err(self.session_gone());
        }
        result
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Up to `want` bytes of the session's data credit: all of them unless flow control is on,
    /// then as many as the peer allows, waiting while it allows none.
    async fn credit(&mut self, want: usize) -> Result<usize, StreamError> {
        poll_fn(|cx| self.poll_credit(cx, want)).await
    }

    /// [`SendStream::credit`], polled.
    fn poll_credit(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<Result<usize, StreamError>> {
        match self.mapping.flow() {
            Some(state) => state.poll_data_credit(cx, &mut self.waiting, want),
            None => Poll::Ready(Ok(want)),
        }
    }

    fn refund(&self, n: usize) {
        if let Some(state) = self.mapping.flow() {
            state.refund_data_credit(n);
        }
    }

    /// Writes some of `buf`; returns how many bytes were taken. Ends with
    /// [`StreamError::SessionGone`] if the session ends while it waits.
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        self.check_session()?;
        let result = self.write_some(buf).await;
        self.after_wait(result)
    }

    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        poll_fn(|cx| self.poll_header(cx)).await?;
        let credit = self.credit(buf.len()).await?;
        // Given back if this future is dropped while the write waits: nothing was written then.
        let mut unused = Unused {
            state: self.mapping.flow().cloned(),
            bytes: credit,
        };
        let part = &buf[..credit];
        let written =
            poll_fn(|cx| self.poll_quinn(cx, |stream, cx| pin!(stream.write(part)).poll(cx)))
                .await?;
        unused.bytes = credit - written;
        self.mapping.on_written(written);
        Ok(written)
    }

    /// Writes all of `buf`. Ends with [`StreamError::SessionGone`] if the session ends while
    /// it waits.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), StreamError> {
        self.check_session()?;
        if self.mapping.flow().is_none() {
            let write = async {
                poll_fn(|cx| self.poll_header(cx)).await?;
                // Bounded by `buf`: each turn writes at least one byte or fails.
                while !buf.is_empty() {
                    let written = poll_fn(|cx| {
                        self.poll_quinn(cx, |stream, cx| pin!(stream.write(buf)).poll(cx))
                    })
                    .await?;
                    self.mapping.on_written(written);
                    buf = &buf[written..];
                }
                Ok(())
            };
            let result = write.await;
            return self.after_wait(result);
        }
        // Bounded by `buf`: each turn writes at least one byte or fails.
        while !buf.is_empty() {
            let written = self.write(buf).await?;
            buf = &buf[written..];
        }
        Ok(())
    }

    /// Writes `chunk` without copying it.
    ///
    /// With flow control on, dropping this future before it completes keeps the credit it
    /// took: part of the chunk may have gone out, and over-counting is the safe side.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), StreamError> {
        self.check_session()?;
        let result = self.write_whole_chunk(chunk).await;
        self.after_wait(result)
    }

    async fn write_whole_chunk(&mut self, mut chunk: Bytes) -> Result<(), StreamError> {
        poll_fn(|cx| self.poll_header(cx)).await?;
        // Bounded by `chunk`: each turn writes at least one byte or fails.
        loop {
            let credit = self.credit(chunk.len()).await?;
            let mut part = [chunk.split_to(credit)];
            // Bounded by `part`: each turn writes at least one byte or fails. One write is
            // polled at a time, so that nothing is written by a future dropped half-way.
            while !part[0].is_empty() {
                let written = poll_fn(|cx| {
                    let parts = &mut part;
                    self.poll_quinn(cx, |stream, cx| pin!(stream.write_chunks(parts)).poll(cx))
                })
                .await;
                match written {
                    Ok(written) => self.mapping.on_written(written.bytes),
                    Err(error) => {
                        self.refund(part[0].len());
                        return Err(error);
                    }
                }
            }
            if chunk.is_empty() {
                return Ok(());
            }
        }
    }

    /// Ends the stream cleanly (FIN). A unidirectional stream that was never written to sends
    /// its header now, if quinn has room for it at once (it has, but for a connection out of
    /// send credit, in which case the empty stream ends without one and the peer ignores it).
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.check_session()?;
        if let Poll::Ready(Err(error)) = self.poll_header(&mut Context::from_waker(Waker::noop())) {
            return Err(error);
        }
        self.inner
            .with(|stream| stream.finish())?
            .map_err(|_| StreamError::Closed)
    }

    /// Abandons the stream with application code `code` (RESET_STREAM).
    pub fn reset(&mut self, code: u32) -> Result<(), StreamError> {
        let code = self.mapping.to_wire(code);
        self.inner
            .with(|stream| stream.reset(code))?
            .map_err(|_| StreamError::Closed)
    }

    /// Waits until the peer has everything (`Ok(None)`) or stopped reading (`Ok(Some(code))`).
    pub async fn stopped(&self) -> Result<Option<u32>, StreamError> {
        let stopped = self.inner.with(|stream| stream.stopped())?;
        match stopped.await {
            Ok(None) => Ok(None),
            Ok(Some(code)) => peer_code(code, self.mapping.mapped()).map(Some),
            Err(quay_transport::StoppedError::ConnectionLost(error)) => {
                Err(StreamError::ConnectionLost(error.into()))
            }
            Err(_) => Err(StreamError::Closed),
        }
    }

    /// Sets the stream's send priority (higher first; default 0).
    pub fn set_priority(&self, priority: i32) -> Result<(), StreamError> {
        self.inner
            .with(|stream| stream.set_priority(priority))?
            .map_err(|_| StreamError::Closed)
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if let Some(state) = self.mapping.flow() {
            state.forget(&mut self.waiting);
        }
        self.mapping.dropped(&self.inner, self.slot);
    }
}

/// Data credit taken for a write and not used; given back when dropped.
struct Unused {
    state: Option<Arc<SessionState>>,
    bytes: usize,
}

impl Drop for Unused {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.refund_data_credit(self.bytes);
        }
    }
}

impl tokio::io::AsyncWrite for SendStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check_session()?;
        ready!(this.poll_header(cx))?;
        let credit = ready!(this.poll_credit(cx, buf.len()))?;
        let part = &buf[..credit];
        let result = this.poll_quinn(cx, |stream, cx| Pin::new(stream).poll_write(cx, part));
        let written = match &result {
            Poll::Ready(Ok(written)) => *written,
            _ => 0,
        };
        this.refund(credit - written);
        this.mapping.on_written(written);
        let result = ready!(result);
        Poll::Ready(result.map_err(io::Error::from))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.finish().map_err(Into::into))
    }
}

#[cfg(feature = "web-transport-trait")]
impl SendStream {
    /// This stream's pending `poll_closed` (see [`crate::trait_impl`]).
    pub(crate) fn poll_state(&mut self) -> &mut crate::trait_impl::SendPoll {
        &mut self.poll
    }

    /// [`SendStream::stopped`] as a future that borrows nothing, so that it can be kept
    /// between polls.
    pub(crate) fn stopped_owned(
        &self,
    ) -> impl Future<Output = Result<Option<u32>, StreamError>> + Send + 'static {
        let stopped = self.inner.with(|stream| stream.stopped());
        let mapped = self.mapping.mapped();
        async move {
            match stopped?.await {
                Ok(None) => Ok(None),
                Ok(Some(code)) => peer_code(code, mapped).map(Some),
                Err(quay_transport::StoppedError::ConnectionLost(error)) => {
                    Err(StreamError::ConnectionLost(error.into()))
                }
                Err(_) => Err(StreamError::Closed),
            }
        }
    }
}
