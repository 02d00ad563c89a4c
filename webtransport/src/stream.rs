//! A session's streams: [`SendStream`] and [`RecvStream`] wrap quinn's, so that error codes are
//! WebTransport application codes (`u32`) and a stream of a session that has ended fails with
//! [`StreamError::SessionGone`].
//!
//! The stream header (0x41 or 0x54 and the session ID) is written by
//! [`Session`](crate::Session) when it opens a stream and read before it hands one out; these
//! types only carry the payload. They implement tokio's `AsyncRead` / `AsyncWrite`.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use quay_h3::proto::VarInt;
use quay_transport::quinn::StreamId;
use quay_transport::{ReadError, WriteError};
use tokio::io::ReadBuf;

use crate::error::{StreamError, peer_code};
use crate::held::Held;
use crate::proto::error::{WT_SESSION_GONE, app_code_to_h3};
use crate::state::SessionState;
use crate::stats;
use crate::waiter::WaitKey;

/// How a stream maps codes and learns that its session has ended.
#[derive(Debug, Clone)]
pub(crate) enum Mapping {
    /// A WebTransport-over-HTTP/3 stream: codes are mapped, the session may go away first.
    Http3(Arc<SessionState>),
    /// A stream of a raw QUIC session: codes are QUIC codes.
    Raw,
}

impl Mapping {
    fn to_wire(&self, code: u32) -> VarInt {
        match self {
            Self::Http3(_) => app_code_to_h3(code),
            Self::Raw => VarInt::from_u32(code),
        }
    }

    fn gone(&self) -> bool {
        matches!(self, Self::Http3(state) if state.is_gone())
    }

    fn mapped(&self) -> bool {
        matches!(self, Self::Http3(_))
    }

    /// The session's state when its flow control is on.
    fn flow(&self) -> Option<&Arc<SessionState>> {
        match self {
            Self::Http3(state) if state.flow_on() => Some(state),
            _ => None,
        }
    }

    /// Runs `op` until it completes or the session ends, whichever is first: a read or a write
    /// that waits must not hold its stream past the session (draft-16 §6), so it ends with
    /// [`StreamError::SessionGone`] (the caller then resets or stops the stream).
    async fn until_session_end<T>(
        &self,
        op: impl Future<Output = Result<T, StreamError>>,
    ) -> Result<T, StreamError> {
        match self {
            Self::Http3(state) => {
                tokio::select! {
                    biased;
                    result = op => result,
                    _ = state.ended() => Err(StreamError::SessionGone),
                }
            }
            Self::Raw => op.await,
        }
    }

    /// Counts `n` bytes the application read, for the session's stats and flow control.
    fn on_read(&self, n: usize) -> Result<(), StreamError> {
        if let Self::Http3(state) = self {
            stats::add(&state.counters.bytes_received, n);
        }
        match self.flow() {
            Some(state) => state.on_read(n),
            None => Ok(()),
        }
    }

    /// Counts `n` bytes the application wrote, for the session's stats.
    fn on_written(&self, n: usize) {
        if let Self::Http3(state) = self {
            stats::add(&state.counters.bytes_sent, n);
        }
    }
}

fn write_error(error: WriteError, mapping: &Mapping) -> StreamError {
    match error {
        WriteError::Stopped(code) => match peer_code(code, mapping.mapped()) {
            Ok(code) => StreamError::Stopped(code),
            Err(error) => error,
        },
        WriteError::ConnectionLost(error) => StreamError::ConnectionLost(error.into()),
        _ => StreamError::Closed,
    }
}

fn read_error(error: ReadError, mapping: &Mapping) -> StreamError {
    match error {
        ReadError::Reset(code) => match peer_code(code, mapping.mapped()) {
            Ok(code) => StreamError::Reset(code),
            Err(error) => error,
        },
        ReadError::ConnectionLost(error) => StreamError::ConnectionLost(error.into()),
        _ => StreamError::Closed,
    }
}

/// The sending side of a session's stream.
#[derive(Debug)]
pub struct SendStream {
    /// quinn's stream, which the session takes away and resets when it ends.
    inner: Held<quay_transport::SendStream>,
    id: StreamId,
    mapping: Mapping,
    /// Its place among the session's waiters while it waits for data credit.
    waiting: WaitKey,
    /// The pending `poll_closed` of `web-transport-trait`.
    #[cfg(feature = "web-transport-trait")]
    poll: crate::trait_impl::SendPoll,
}

impl SendStream {
    pub(crate) fn new(inner: quay_transport::SendStream, mapping: Mapping) -> Self {
        let id = inner.id();
        let inner = Held::new(inner);
        if let Mapping::Http3(state) = &mapping {
            state.hold(inner.for_session());
        }
        Self {
            inner,
            id,
            mapping,
            waiting: WaitKey::NONE,
            #[cfg(feature = "web-transport-trait")]
            poll: Default::default(),
        }
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
        match self.inner.with(|stream| op(stream, cx)) {
            Ok(Poll::Ready(result)) => {
                Poll::Ready(result.map_err(|e| write_error(e, &self.mapping)))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(gone) => Poll::Ready(Err(gone)),
        }
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
        let _ = self
            .inner
            .with(|stream| stream.reset(WT_SESSION_GONE.to_varint()));
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
        let result = self
            .mapping
            .clone()
            .until_session_end(self.write_some(buf))
            .await;
        self.after_wait(result)
    }

    async fn write_some(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
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
            let mapping = self.mapping.clone();
            let write = async {
                // Bounded by `buf`: each turn writes at least one byte or fails.
                while !buf.is_empty() {
                    let written = poll_fn(|cx| {
                        self.poll_quinn(cx, |stream, cx| pin!(stream.write(buf)).poll(cx))
                    })
                    .await?;
                    mapping.on_written(written);
                    buf = &buf[written..];
                }
                Ok(())
            };
            let result = mapping.until_session_end(write).await;
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
        let result = self
            .mapping
            .clone()
            .until_session_end(self.write_whole_chunk(chunk))
            .await;
        self.after_wait(result)
    }

    async fn write_whole_chunk(&mut self, mut chunk: Bytes) -> Result<(), StreamError> {
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

    /// Ends the stream cleanly (FIN).
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.check_session()?;
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
        // quinn finishes a dropped stream; one of a session that has ended is reset instead
        // (draft-16 §6).
        if self.mapping.gone() {
            let _ = self
                .inner
                .with(|stream| stream.reset(WT_SESSION_GONE.to_varint()));
        }
        if let Some(state) = self.mapping.flow() {
            state.forget(&mut self.waiting);
        }
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

/// The receiving side of a session's stream.
#[derive(Debug)]
pub struct RecvStream {
    /// quinn's stream, which the session takes away and stops when it ends.
    inner: Held<quay_transport::RecvStream>,
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
        if let Mapping::Http3(state) = &mapping {
            state.hold(inner.for_session());
        }
        Self {
            inner,
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
        match self.inner.with(|stream| op(stream, cx)) {
            Ok(Poll::Ready(result)) => {
                Poll::Ready(result.map_err(|e| read_error(e, &self.mapping)))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(gone) => Poll::Ready(Err(gone)),
        }
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
        let _ = self
            .inner
            .with(|stream| stream.stop(WT_SESSION_GONE.to_varint()));
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
        let mapping = &self.mapping;
        let want = buf.len();
        let read = async {
            let n =
                poll_fn(|cx| self.poll_quinn(cx, |stream, cx| stream.poll_read(cx, buf))).await?;
            // quinn reads nothing into a non-empty buffer only at the end.
            Ok((n > 0 || want == 0).then_some(n))
        };
        let read = match mapping.until_session_end(read).await {
            Err(StreamError::SessionGone) => return Err(self.session_gone()),
            read => read?,
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
            let mapping = &self.mapping;
            let read = async {
                let chunk = poll_fn(|cx| {
                    self.poll_quinn(cx, |stream, cx| pin!(stream.read_chunk(max, true)).poll(cx))
                })
                .await?;
                Ok(chunk.map(|chunk| chunk.bytes))
            };
            match mapping.until_session_end(read).await {
                Err(StreamError::SessionGone) => return Err(self.session_gone()),
                read => read?,
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
        // quinn stops a dropped stream with code 0; one of a session that has ended is stopped
        // with WT_SESSION_GONE (draft-16 §6).
        if self.mapping.gone() {
            let _ = self
                .inner
                .with(|stream| stream.stop(WT_SESSION_GONE.to_varint()));
        }
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
            Ok(Some(code)) => Poll::Ready(peer_code(code, self.mapping.mapped()).map(Some)),
            Err(quay_transport::quinn::ResetError::ConnectionLost(error)) => {
                Poll::Ready(Err(StreamError::ConnectionLost(error.into())))
            }
            Err(_) => Poll::Ready(Err(StreamError::Closed)),
        }
    }
}

/// Why [`RecvStream::read_to_end`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReadToEndError {
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream is longer than the limit.
    #[error("stream longer than the limit")]
    TooLong,
}
