//! `web-transport-trait` 0.4 for [`Session`], [`SendStream`] and [`RecvStream`] (feature
//! `web-transport-trait`), so that code generic over that trait runs on quay: moq-net 0.3, the
//! MoQ stack, for one, takes a quay [`Session`] as it is.
//!
//! Both halves of the trait are implemented: the async one (`web_transport_trait::Session`,
//! whose methods are quay's own) and the poll one (`web_transport_trait::poll`, on `&mut self`),
//! which moq-net uses. A poll operation that has to wait keeps its future in the handle it was
//! polled on, so each clone of a [`Session`] has its own pending operations, as the poll
//! contract asks; a clone starts with none.
//!
//! | trait | quay |
//! | --- | --- |
//! | `accept_*`, `open_*`, `recv_datagram`, `closed` | [`Session`]'s methods of the same name ([`Session::read_datagram`] for `recv_datagram`) |
//! | `send_datagram` | [`Session::send_datagram`]; the poll half waits with [`Session::send_datagram_wait`] while the connection's datagram buffer is full, rather than drop older datagrams |
//! | `max_datagram_size` | [`Session::max_datagram_size`], 0 when the peer takes no datagrams |
//! | `protocol` | [`Session::protocol`]: the WebTransport subprotocol the server chose (`wt-protocol`); `None` on a raw session |
//! | `close` | [`Session::close`] (the close is started, not awaited) |
//! | `stats` | [`Stats`]: quinn's connection statistics, shared by the connection's sessions |
//! | `SendStream::set_priority` | quinn's stream priority: W3C `sendOrder` and quinn both send higher values first, so the value is passed on as it is |
//! | `SendStream::closed` | [`SendStream::stopped`]: `Ok` once the peer has everything, the error [`StreamError::Stopped`] if it stopped reading; `Ok` at once after our own reset |
//! | `RecvStream::closed` | quinn's `received_reset`: `Ok` once the peer finished the stream and all of it arrived, or we stopped it; the error [`StreamError::Reset`] if the peer reset it |
//!
//! A datagram that is too large, or one to a peer that takes none, is dropped without an error,
//! as the trait allows (its `Error` is the session's, [`SessionError`]). Errors say which code
//! the peer used: `session_error` is the code and reason of [`SessionError::PeerClosed`],
//! `stream_error` the code of [`StreamError::Reset`] or [`StreamError::Stopped`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use web_transport_trait::{MaybeSend, poll};

use crate::error::{DatagramError, SessionError, StreamError};
use crate::session::Session;
use crate::stream::{RecvStream, SendStream};

/// The poll operations of one [`Session`] handle that are waiting.
///
/// Behind a `Mutex` only so that `Session` stays `Sync`: it is reached through `&mut`, so the
/// lock is never taken ([`Mutex::get_mut`]).
#[derive(Default)]
pub(crate) struct SessionPoll(Mutex<Option<Box<SessionOps>>>);

#[derive(Default)]
struct SessionOps {
    accept_uni: Option<BoxFuture<'static, Result<RecvStream, SessionError>>>,
    accept_bi: Option<BoxFuture<'static, Result<(SendStream, RecvStream), SessionError>>>,
    open_uni: Option<BoxFuture<'static, Result<SendStream, SessionError>>>,
    open_bi: Option<BoxFuture<'static, Result<(SendStream, RecvStream), SessionError>>>,
    recv_datagram: Option<BoxFuture<'static, Result<Bytes, SessionError>>>,
    /// The datagram being waited for, so that a call with another one (the caller gave up on
    /// the first) starts over.
    send_datagram: Option<(Bytes, BoxFuture<'static, Result<(), DatagramError>>)>,
    closed: Option<BoxFuture<'static, SessionError>>,
}

impl SessionPoll {
    fn ops(&mut self) -> &mut SessionOps {
        self.0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Default::default)
    }
}

/// A clone has no pending operations: each handle waits on its own.
impl Clone for SessionPoll {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for SessionPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPoll").finish_non_exhaustive()
    }
}

/// A [`SendStream`]'s pending `poll_closed`, and whether we reset it.
#[derive(Default)]
pub(crate) struct SendPoll {
    closed: Mutex<Option<Stopped>>,
    reset: bool,
}

/// A wait for the peer to have all of a stream or to stop it ([`SendStream::stopped`]).
struct Stopped(BoxFuture<'static, Result<Option<u32>, StreamError>>);

impl fmt::Debug for SendPoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendPoll")
            .field("reset", &self.reset)
            .finish_non_exhaustive()
    }
}

/// Takes a datagram's outcome to the trait's: one that does not fit, or that the peer does not
/// take, is dropped (the trait allows it); only the session's end is an error.
fn datagram_result(result: Result<(), DatagramError>) -> Result<(), SessionError> {
    match result {
        Ok(()) | Err(DatagramError::TooLarge | DatagramError::Unsupported) => Ok(()),
        Err(DatagramError::Session(error)) => Err(error),
    }
}

/// The [`StreamError`] inside an error from [`SendStream`]'s or [`RecvStream`]'s tokio I/O
/// traits, which make every error from one.
fn from_io(error: std::io::Error) -> StreamError {
    match error
        .into_inner()
        .map(|inner| inner.downcast::<StreamError>())
    {
        Some(Ok(error)) => *error,
        // Not reached: the I/O traits of quay's streams only wrap `StreamError`s.
        _ => StreamError::Closed,
    }
}

impl Session {
    /// Polls the operation `pick` selects from this handle's pending ones, starting it with
    /// `start` on a clone of the session if none is waiting.
    fn poll_op<T>(
        &mut self,
        cx: &mut Context<'_>,
        pick: fn(&mut SessionOps) -> &mut Option<BoxFuture<'static, T>>,
        start: fn(Self) -> BoxFuture<'static, T>,
    ) -> Poll<T> {
        let waiting = pick(self.poll_state().ops()).take();
        let mut op = waiting.unwrap_or_else(|| start(self.clone()));
        match op.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(output),
            Poll::Pending => {
                *pick(self.poll_state().ops()) = Some(op);
                Poll::Pending
            }
        }
    }
}

/// Connection statistics for `web-transport-trait`, read from quinn when
/// [`stats`](poll::Session::stats) is called. They are the QUIC connection's, shared by every
/// session on it.
#[derive(Debug, Clone)]
pub struct Stats {
    quic: quay_transport::quinn::ConnectionStats,
}

impl Stats {
    /// The statistics of `session`'s connection, now.
    pub fn of(session: &Session) -> Self {
        Self {
            quic: session.connection().stats(),
        }
    }

    /// quinn's statistics, all of them.
    pub fn quic(&self) -> &quay_transport::quinn::ConnectionStats {
        &self.quic
    }
}

impl web_transport_trait::Stats for Stats {
    fn bytes_sent(&self) -> Option<u64> {
        Some(self.quic.udp_tx.bytes)
    }

    fn bytes_received(&self) -> Option<u64> {
        Some(self.quic.udp_rx.bytes)
    }

    fn bytes_lost(&self) -> Option<u64> {
        Some(self.quic.path.lost_bytes)
    }

    fn packets_sent(&self) -> Option<u64> {
        Some(self.quic.udp_tx.datagrams)
    }

    fn packets_received(&self) -> Option<u64> {
        Some(self.quic.udp_rx.datagrams)
    }

    fn packets_lost(&self) -> Option<u64> {
        Some(self.quic.path.lost_packets)
    }

    fn rtt(&self) -> Option<Duration> {
        Some(self.quic.path.rtt)
    }

    /// The congestion window sent once per round trip, in bits per second: quinn's congestion
    /// controllers keep no rate of their own. `None` before the first RTT sample.
    fn estimated_send_rate(&self) -> Option<u64> {
        let rtt = self.quic.path.rtt.as_secs_f64();
        let cwnd = self.quic.path.cwnd;
        (rtt > 0.0 && cwnd > 0).then(|| (cwnd as f64 * 8.0 / rtt) as u64)
    }
}

impl web_transport_trait::Error for SessionError {
    fn session_error(&self) -> Option<(u32, String)> {
        match self {
            Self::PeerClosed { code, reason } => Some((*code, reason.clone())),
            _ => None,
        }
    }
}

impl web_transport_trait::Error for StreamError {
    fn session_error(&self) -> Option<(u32, String)> {
        None
    }

    fn stream_error(&self) -> Option<u32> {
        match self {
            Self::Reset(code) | Self::Stopped(code) => Some(*code),
            _ => None,
        }
    }
}

/// The trait has no "ended normally" for an accept: a session that ended, however, is its
/// error.
async fn ended_is_error<T>(
    session: &Session,
    accepted: Result<Option<T>, SessionError>,
) -> Result<T, SessionError> {
    match accepted? {
        Some(accepted) => Ok(accepted),
        None => Err(session.closed().await),
    }
}

impl web_transport_trait::Session for Session {
    type SendStream = SendStream;
    type RecvStream = RecvStream;
    type Error = SessionError;

    async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        ended_is_error(self, Self::accept_uni(self).await).await
    }

    async fn accept_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        ended_is_error(self, Self::accept_bi(self).await).await
    }

    fn open_bi(
        &self,
    ) -> impl Future<Output = Result<(SendStream, RecvStream), SessionError>> + MaybeSend {
        Self::open_bi(self)
    }

    fn open_uni(&self) -> impl Future<Output = Result<SendStream, SessionError>> + MaybeSend {
        Self::open_uni(self)
    }

    fn send_datagram(&self, payload: Bytes) -> Result<(), SessionError> {
        datagram_result(Self::send_datagram(self, payload))
    }

    fn recv_datagram(&self) -> impl Future<Output = Result<Bytes, SessionError>> + MaybeSend {
        self.read_datagram()
    }

    fn max_datagram_size(&self) -> usize {
        Self::max_datagram_size(self).unwrap_or(0)
    }

    fn protocol(&self) -> Option<&str> {
        Self::protocol(self)
    }

    fn close(&self, code: u32, reason: &str) {
        // Started now; the returned `Closing` only waits for the peer's answer.
        let _closing = Self::close(self, code, reason);
    }

    fn closed(&self) -> impl Future<Output = SessionError> + MaybeSend {
        Self::closed(self)
    }

    fn stats(&self) -> impl web_transport_trait::Stats {
        Stats::of(self)
    }
}

impl poll::Session for Session {
    type SendStream = SendStream;
    type RecvStream = RecvStream;
    type Error = SessionError;

    fn poll_accept_uni(&mut self, cx: &mut Context<'_>) -> Poll<Result<RecvStream, SessionError>> {
        self.poll_op(
            cx,
            |ops| &mut ops.accept_uni,
            |session| {
                Box::pin(async move { ended_is_error(&session, session.accept_uni().await).await })
            },
        )
    }

    fn poll_accept_bi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SendStream, RecvStream), SessionError>> {
        self.poll_op(
            cx,
            |ops| &mut ops.accept_bi,
            |session| {
                Box::pin(async move { ended_is_error(&session, session.accept_bi().await).await })
            },
        )
    }

    fn poll_open_uni(&mut self, cx: &mut Context<'_>) -> Poll<Result<SendStream, SessionError>> {
        self.poll_op(
            cx,
            |ops| &mut ops.open_uni,
            |session| Box::pin(async move { session.open_uni().await }),
        )
    }

    fn poll_open_bi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SendStream, RecvStream), SessionError>> {
        self.poll_op(
            cx,
            |ops| &mut ops.open_bi,
            |session| Box::pin(async move { session.open_bi().await }),
        )
    }

    fn poll_send_datagram(
        &mut self,
        cx: &mut Context<'_>,
        payload: &[u8],
    ) -> Poll<Result<(), SessionError>> {
        let waiting = self.poll_state().ops().send_datagram.take();
        let op = match waiting {
            // The same datagram again: go on waiting for room.
            Some((datagram, op)) if datagram == payload => Some((datagram, op)),
            // Nothing waiting, or the caller gave up on the one that was: this one is new.
            _ if payload.len() <= self.datagram_send_buffer_space() => {
                let sent = Self::send_datagram(self, Bytes::copy_from_slice(payload));
                return Poll::Ready(datagram_result(sent));
            }
            _ => None,
        };
        let (datagram, mut op) = op.unwrap_or_else(|| {
            let datagram = Bytes::copy_from_slice(payload);
            let session = self.clone();
            let sent = datagram.clone();
            let op: BoxFuture<'static, _> =
                Box::pin(async move { session.send_datagram_wait(sent).await });
            (datagram, op)
        });
        match op.as_mut().poll(cx) {
            Poll::Ready(sent) => Poll::Ready(datagram_result(sent)),
            Poll::Pending => {
                self.poll_state().ops().send_datagram = Some((datagram, op));
                Poll::Pending
            }
        }
    }

    fn poll_recv_datagram(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, SessionError>> {
        self.poll_op(
            cx,
            |ops| &mut ops.recv_datagram,
            |session| Box::pin(async move { session.read_datagram().await }),
        )
    }

    fn max_datagram_size(&self) -> usize {
        Self::max_datagram_size(self).unwrap_or(0)
    }

    fn protocol(&self) -> Option<&str> {
        Self::protocol(self)
    }

    fn close(&mut self, code: u32, reason: &str) {
        let _closing = Self::close(self, code, reason);
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<SessionError> {
        self.poll_op(
            cx,
            |ops| &mut ops.closed,
            |session| Box::pin(async move { session.closed().await }),
        )
    }

    fn stats(&self) -> impl web_transport_trait::Stats {
        Stats::of(self)
    }
}

impl web_transport_trait::SendStream for SendStream {
    type Error = StreamError;

    fn write(
        &mut self,
        buf: &[u8],
    ) -> impl Future<Output = Result<usize, StreamError>> + MaybeSend {
        Self::write(self, buf)
    }

    fn write_chunk(
        &mut self,
        chunk: Bytes,
    ) -> impl Future<Output = Result<(), StreamError>> + MaybeSend {
        Self::write_chunk(self, chunk)
    }

    fn set_priority(&mut self, order: u8) {
        // A stream already finished or reset has no priority left to set.
        let _ = Self::set_priority(self, i32::from(order));
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        Self::finish(self)
    }

    fn reset(&mut self, code: u32) {
        poll::SendStream::reset(self, code);
    }

    fn closed(&mut self) -> impl Future<Output = Result<(), StreamError>> + MaybeSend {
        std::future::poll_fn(|cx| poll::SendStream::poll_closed(self, cx))
    }
}

impl poll::SendStream for SendStream {
    type Error = StreamError;

    /// Through the stream's `AsyncWrite`, which takes session flow-control credit before it
    /// takes any bytes and gives back what it did not use, so a pending write has taken
    /// nothing.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, StreamError>> {
        let written = ready!(AsyncWrite::poll_write(Pin::new(self), cx, buf));
        Poll::Ready(written.map_err(from_io))
    }

    fn set_priority(&mut self, order: u8) {
        let _ = Self::set_priority(self, i32::from(order));
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        Self::finish(self)
    }

    fn reset(&mut self, code: u32) {
        // Already finished or reset: nothing to abandon.
        let _ = Self::reset(self, code);
        let state = self.poll_state();
        state.reset = true;
        *state
            .closed
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        if self.poll_state().reset {
            return Poll::Ready(Ok(()));
        }
        let slot = self.poll_state().closed.get_mut();
        let waiting = slot.unwrap_or_else(PoisonError::into_inner).take();
        let mut op = waiting.unwrap_or_else(|| Stopped(Box::pin(self.stopped_owned())));
        // Kept between polls: quinn's wait for STOP_SENDING or the last ACK registers in the
        // future itself, and a new one each poll would miss the wake-up.
        let Poll::Ready(stopped) = op.0.as_mut().poll(cx) else {
            let slot = self.poll_state().closed.get_mut();
            *slot.unwrap_or_else(PoisonError::into_inner) = Some(op);
            return Poll::Pending;
        };
        match stopped {
            Ok(None) => Poll::Ready(Ok(())),
            Ok(Some(code)) => Poll::Ready(Err(StreamError::Stopped(code))),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl web_transport_trait::RecvStream for RecvStream {
    type Error = StreamError;

    fn read(
        &mut self,
        dst: &mut [u8],
    ) -> impl Future<Output = Result<Option<usize>, StreamError>> + MaybeSend {
        Self::read(self, dst)
    }

    fn read_chunk(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Bytes>, StreamError>> + MaybeSend {
        Self::read_chunk(self, max)
    }

    fn stop(&mut self, code: u32) {
        // Already stopped or finished: nothing more to refuse.
        let _ = Self::stop(self, code);
    }

    fn closed(&mut self) -> impl Future<Output = Result<(), StreamError>> + MaybeSend {
        std::future::poll_fn(|cx| poll::RecvStream::poll_closed(self, cx))
    }
}

impl poll::RecvStream for RecvStream {
    type Error = StreamError;

    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<Result<Option<usize>, StreamError>> {
        // Asking for no bytes is not the end of the stream.
        if dst.is_empty() {
            return Poll::Ready(Ok(Some(0)));
        }
        let mut buf = ReadBuf::new(dst);
        ready!(AsyncRead::poll_read(Pin::new(&mut *self), cx, &mut buf)).map_err(from_io)?;
        // `AsyncRead` reads nothing into a buffer with room only at the end of the stream.
        match buf.filled().len() {
            0 => Poll::Ready(Ok(None)),
            n => Poll::Ready(Ok(Some(n))),
        }
    }

    fn stop(&mut self, code: u32) {
        let _ = Self::stop(self, code);
    }

    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        match ready!(self.poll_received_reset(cx)) {
            Ok(None) => Poll::Ready(Ok(())),
            Ok(Some(code)) => Poll::Ready(Err(StreamError::Reset(code))),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    /// The poll state keeps quay's handles `Send` and `Sync`, as moq-net's `Boxable` needs.
    #[test]
    fn handles_stay_send_and_sync() {
        assert_send_sync::<Session>();
        assert_send_sync::<SendStream>();
        assert_send_sync::<RecvStream>();
    }

    #[test]
    fn oversized_or_unsupported_datagrams_are_dropped_not_errors() {
        assert!(datagram_result(Err(DatagramError::TooLarge)).is_ok());
        assert!(datagram_result(Err(DatagramError::Unsupported)).is_ok());
        assert!(matches!(
            datagram_result(Err(DatagramError::Session(SessionError::LocallyClosed))),
            Err(SessionError::LocallyClosed)
        ));
    }

    #[test]
    fn io_errors_give_back_the_stream_error() {
        let error = std::io::Error::from(StreamError::Stopped(7));
        assert!(matches!(from_io(error), StreamError::Stopped(7)));
    }

    #[test]
    fn codes_reach_the_trait() {
        use web_transport_trait::Error as _;
        let closed = SessionError::PeerClosed {
            code: 3,
            reason: "bye".into(),
        };
        assert_eq!(closed.session_error(), Some((3, "bye".to_owned())));
        assert_eq!(SessionError::LocallyClosed.session_error(), None);
        assert_eq!(StreamError::Reset(9).stream_error(), Some(9));
        assert_eq!(StreamError::Stopped(4).stream_error(), Some(4));
        assert_eq!(StreamError::Closed.stream_error(), None);
    }
}
