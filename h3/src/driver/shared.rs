//! [`Shared`]: what request streams, the client and server handles, and the connection's task
//! share. It holds the pure [`ConnectionState`] behind a `std::sync::Mutex`, the connection's
//! error, the extension streams waiting to be taken, the datagram routes ([`super::routes`]),
//! and the wake-ups: [`Shared::changed`] for waiters that re-check a condition, [`Waiters`] for
//! the connection's task. Its methods here are the connection-wide ones: closing with an error,
//! QPACK encoding and decoding (waiting while a section is blocked, RFC 9204 §2.1.2), and the
//! end of the connection, which [`ConnectionState::poll_close`] decides.
//!
//! It does not read or write streams (the task does, [`super::task`]; request streams do
//! themselves) and does not route datagrams or hand out extension streams
//! ([`super::datagrams`], [`super::extensions`] add those methods).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use quay_qpack::Field;
use quay_transport::Connection;
use tokio::sync::Notify;

use super::routes::DatagramRoutes;
use crate::config::ConnectionConfig;
use crate::connection::{CloseAction, ConnectionState, HeaderBlock, ProtocolError, Side};
use crate::error::{Code, ConnectionError, StreamError};
use crate::proto::settings::Settings;
use crate::server::HandlerSlot;
use crate::stats::ConnectionStats;
use crate::stream::extension::ExtensionStream;
use crate::waiter::Waiters;

/// How long a server whose handle and request streams are all gone waits, after its GOAWAY, for
/// the client to close the connection before closing it itself.
const LINGER: Duration = Duration::from_secs(2);
/// How many chunks or streams one source may hand the driver in one wake-up, or how many other
/// streams' datagrams a datagram reader routes, before letting other tasks run.
pub(super) const BUDGET: usize = 32;

/// The state request streams and handles share with the connection's task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) side: Side,
    pub(super) inner: Mutex<Inner>,
    /// Something changed that waiters re-check: a blocked section was decoded, SETTINGS or
    /// GOAWAY arrived, a request stream ended, or the connection failed.
    pub(crate) changed: Notify,
    /// Whether the next header section we send gets a GREASE frame in front (once per
    /// connection, when grease is on).
    pub(super) grease_frame: AtomicBool,
    /// Whether this connection opens a stream of a reserved type, right after its SETTINGS.
    pub(super) grease_stream: bool,
    /// How long the QUIC handshake took, when the caller saw it.
    pub(super) handshake: Option<Duration>,
    /// The connection's tracing span (side, connection, peer address, original destination
    /// connection ID), for the parent of its events and of extensions' spans ([`Shared::span`]).
    /// Boxed, and none when no subscriber wanted it: most connections' spans are disabled, and
    /// a span is five words.
    pub(super) span: Option<Box<tracing::Span>>,
    /// The connection's qlog file, if it has one (see `crate::qlog`).
    pub(crate) qlog: Option<quay_transport::Qlog>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) proto: ConnectionState,
    /// The error we closed the connection with, if any. Boxed: most connections never have one.
    pub(crate) error: Option<Box<ConnectionError>>,
    /// HTTP datagrams by request stream. Routing stops when the connection ends.
    pub(super) datagrams: DatagramRoutes,
    /// Our QPACK encoder stream is open, so header sections may reference the entries its
    /// instructions insert.
    pub(super) encoder_stream_open: bool,
    /// Extension streams waiting to be taken; waiters wait on [`Shared::changed`]. Unbounded on
    /// purpose: every one is an open QUIC stream, so the peer's stream limits bound them.
    pub(super) extensions: VecDeque<ExtensionStream>,
    /// Who takes extension streams: the connection handle, an
    /// [`ExtensionStreams`](crate::stream::ExtensionStreams), or nobody.
    pub(super) extension_taker: Taker,
    /// The connection's task, woken (see [`Inner::flush_waker`]) when our control or QPACK
    /// streams have bytes: a waker rather than a `Notify`, so the long-lived task keeps no
    /// future for it.
    pub(super) driver_waiters: Waiters,
    /// The [`ExtensionStreams`](crate::stream::ExtensionStreams) waiting in
    /// [`Shared::poll_extension_stream`] (the handle's waiters wait on [`Shared::changed`]).
    pub(super) extension_waiters: Waiters,
    /// The server connection's [`Handler`](crate::server::Handler), when it has one and the
    /// connection's task is not calling it.
    pub(super) handler: HandlerSlot,
    /// A handler was given: the connection's task accepts the request streams.
    pub(super) serving: bool,
}

impl Inner {
    /// The connection's task, to wake once the lock is released, if the state machine has bytes
    /// for our control or QPACK streams.
    pub(crate) fn flush_waker(&mut self) -> Option<Waker> {
        if self.proto.has_output() {
            self.driver_waiters.take().next()
        } else {
            None
        }
    }

    /// The oldest extension stream waiting to be taken.
    pub(super) fn next_extension(&mut self) -> Option<ExtensionStream> {
        let stream = self.extensions.pop_front()?;
        if self.extensions.is_empty() {
            // Keep no buffer while idle.
            self.extensions = VecDeque::new();
        }
        Some(stream)
    }
}

/// Who receives the extension streams of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taker {
    /// None are configured, or the extension streams' taker was dropped: refuse.
    Nobody,
    /// The client or server handle (`accept_extension_stream`).
    Handle,
    /// An [`ExtensionStreams`](crate::stream::ExtensionStreams).
    Taken,
    /// The server connection's [`Handler`](crate::server::Handler), to which the connection's
    /// task hands them at the end of its wake-up.
    Handler,
}

/// The span of a connection whose span is disabled.
static DISABLED: tracing::Span = tracing::Span::none();

impl Shared {
    /// The connection's tracing span (see the field).
    pub(crate) fn span(&self) -> &tracing::Span {
        self.span.as_deref().unwrap_or(&DISABLED)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Closes the connection because of `error`, unless it is already closed.
    pub(crate) fn fail(&self, error: ProtocolError) {
        let code = Code::from(&error);
        {
            let mut inner = self.lock();
            if inner.error.is_some() {
                return;
            }
            tracing::debug!(parent: self.span(), %error, ?code, "closing the connection");
            inner.error = Some(Box::new(ConnectionError::Protocol(error.clone())));
        }
        let mut reason = error.to_string();
        // Keep the CONNECTION_CLOSE small; cut on a character boundary.
        let mut cut = reason.len().min(200);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        self.conn.close(code.to_varint(), reason.as_bytes());
        self.changed.notify_waiters();
    }

    /// Closes the connection without an error, unless it is already closed.
    pub(crate) fn close(&self, code: Code, reason: &[u8]) {
        {
            let mut inner = self.lock();
            if inner.error.is_none() {
                inner.error = Some(Box::new(ConnectionError::LocallyClosed));
            }
        }
        // Closed by the peer already: quinn would replace the peer's close with ours in what the
        // connection reports.
        if self.conn.close_reason().is_none() {
            self.conn.close(code.to_varint(), reason);
        }
        self.changed.notify_waiters();
    }

    /// The error to report for a quinn connection error: ours if we closed the connection.
    pub(crate) fn connection_error(
        &self,
        error: quay_transport::ConnectionError,
    ) -> ConnectionError {
        if let Some(ours) = self.lock().error.as_deref() {
            return ours.clone();
        }
        ConnectionError::from(error)
    }

    /// The connection error, if the connection is closed or closing.
    pub(crate) fn error(&self) -> Option<ConnectionError> {
        if let Some(error) = self.lock().error.as_deref() {
            return Some(error.clone());
        }
        self.conn.close_reason().map(ConnectionError::from)
    }

    /// The connection's stats: quinn's and the HTTP/3 layer's.
    pub(crate) fn stats(&self) -> ConnectionStats {
        let h3 = self.lock().proto.stats();
        ConnectionStats {
            transport: self.conn.stats(),
            rtt: self.conn.rtt(),
            handshake: self.handshake,
            h3,
        }
    }

    /// The peer's SETTINGS, once received.
    pub(crate) fn peer_settings(&self) -> Option<Settings> {
        self.lock().proto.peer_settings().cloned()
    }

    /// Waits for the peer's SETTINGS; fails if the connection ends first.
    pub(crate) async fn settings(&self) -> Result<Settings, ConnectionError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(settings) = self.peer_settings() {
                return Ok(settings);
            }
            if let Some(error) = self.error() {
                return Err(error);
            }
            tokio::select! {
                () = notified => {}
                error = self.conn.closed() => return Err(self.connection_error(error)),
            }
        }
    }

    /// Whether to put a GREASE frame before the header section about to be sent: true once per
    /// connection when grease is on (RFC 9114 §7.2.8 allows reserved frames on request streams).
    pub(crate) fn take_grease_frame(&self) -> bool {
        self.grease_frame.load(Ordering::Relaxed)
            && self.grease_frame.swap(false, Ordering::Relaxed)
    }

    /// QPACK-encodes a field section for `stream_id`.
    ///
    /// Our encoder stream is opened the first time the encoder inserts (RFC 9204 §4.2 lets an
    /// endpoint go without one until then); a section that may reference those inserts is held
    /// back until the stream is open, so its instructions can always be sent.
    pub(crate) async fn encode(
        &self,
        stream_id: u64,
        fields: &[Field],
    ) -> Result<Bytes, StreamError> {
        let (section, flush, wait) = {
            let mut inner = self.lock();
            let section = inner.proto.encode_headers(stream_id, fields);
            if let Some(qlog) = &self.qlog {
                // The inserts go out on the encoder stream before the section they serve.
                for (table, event) in inner.proto.take_table_events() {
                    crate::qlog::table_event(qlog, table, &event);
                }
                crate::qlog::headers_frame(qlog, true, stream_id, fields);
            }
            let wait = inner.proto.encoder_stream_started() && !inner.encoder_stream_open;
            (section, inner.flush_waker(), wait)
        };
        if let Some(driver) = flush {
            driver.wake();
        }
        if wait {
            self.wait_for(|inner| inner.encoder_stream_open.then_some(()))
                .await?;
        }
        Ok(section)
    }

    /// Waits until `ready` returns a value (it is called again whenever [`Shared::changed`]
    /// fires), or the connection ends.
    pub(crate) async fn wait_for<T>(
        &self,
        mut ready: impl FnMut(&mut Inner) -> Option<T>,
    ) -> Result<T, StreamError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if let Some(value) = ready(&mut inner) {
                    return Ok(value);
                }
                if let Some(error) = inner.error.as_deref() {
                    return Err(StreamError::ConnectionLost(error.clone()));
                }
            }
            if let Some(reason) = self.conn.close_reason() {
                return Err(StreamError::ConnectionLost(self.connection_error(reason)));
            }
            notified.await;
        }
    }

    /// QPACK-decodes a field section received on `stream_id`, waiting while it is blocked.
    pub(crate) async fn decode(
        &self,
        stream_id: u64,
        section: Bytes,
    ) -> Result<HeaderBlock, StreamError> {
        let result = {
            let mut inner = self.lock();
            let result = inner.proto.decode_headers(stream_id, section);
            let flush = inner.flush_waker();
            drop(inner);
            if let Some(driver) = flush {
                driver.wake();
            }
            result
        };
        match result {
            Ok(HeaderBlock::Blocked) => {
                if let Some(qlog) = &self.qlog {
                    crate::qlog::section_blocked(qlog, true, stream_id);
                }
            }
            Ok(block) => {
                self.log_headers(stream_id, &block);
                return Ok(block);
            }
            Err(error) => {
                self.fail(error);
                return Err(StreamError::ConnectionLost(
                    self.error().unwrap_or(ConnectionError::LocallyClosed),
                ));
            }
        }
        // RFC 9204 §2.2.1: wait for the encoder stream; the driver wakes us.
        let mut cancel = CancelOnDrop {
            shared: self,
            stream_id,
            armed: true,
        };
        let block = self
            .wait_for(|inner| inner.proto.take_unblocked(stream_id))
            .await?;
        cancel.armed = false;
        if let Some(qlog) = &self.qlog {
            crate::qlog::section_blocked(qlog, false, stream_id);
        }
        self.log_headers(stream_id, &block);
        Ok(block)
    }

    /// The HEADERS frame whose section decoded into `block`, for the qlog.
    fn log_headers(&self, stream_id: u64, block: &HeaderBlock) {
        if let (Some(qlog), HeaderBlock::Fields(fields)) = (&self.qlog, block) {
            crate::qlog::headers_frame(qlog, false, stream_id, fields);
        }
    }

    /// A request stream ended as a stream error with `code` (for the stats).
    pub(crate) fn request_error(&self, code: Code) {
        self.lock().proto.handle_request_error(code);
    }

    /// A request stream started.
    pub(crate) fn stream_opened(&self) {
        self.lock().proto.handle_request_opened();
    }

    /// A request stream ended (both halves dropped); `settled` if it had been settled.
    pub(crate) fn stream_closed(&self, settled: bool) {
        self.lock().proto.handle_request_closed(settled);
        self.changed.notify_waiters();
        self.maybe_close();
    }

    /// A live request stream was settled.
    pub(crate) fn stream_settled(&self) {
        self.lock().proto.handle_request_settled();
        self.maybe_close();
    }

    /// The user dropped the connection handle.
    pub(crate) fn handle_dropped(&self) {
        self.lock().proto.handle_handle_dropped();
        self.maybe_close();
    }

    /// Server: sends GOAWAY naming the first request stream not accepted (RFC 9114 §5.2).
    pub(crate) fn begin_goaway(&self) {
        let flush = {
            let mut inner = self.lock();
            inner.proto.send_shutdown_goaway();
            inner.flush_waker()
        };
        if let Some(driver) = flush {
            driver.wake();
        }
    }

    /// Ends the connection when [`ConnectionState::poll_close`] says so; checked whenever a
    /// request stream ends or is settled, the handle goes, or GOAWAY arrives. A lingering server
    /// closes once the client does, or after [`LINGER`].
    pub(crate) fn maybe_close(&self) {
        let (action, flush) = {
            let mut inner = self.lock();
            if inner.error.is_some() {
                return;
            }
            (inner.proto.poll_close(), inner.flush_waker())
        };
        if let Some(driver) = flush {
            driver.wake();
        }
        match action {
            None => {}
            Some(CloseAction::Linger) if tokio::runtime::Handle::try_current().is_ok() => {
                let conn = self.conn.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn.closed() => {}
                        () = tokio::time::sleep(LINGER) => {}
                    }
                    if conn.close_reason().is_none() {
                        conn.close(Code::H3_NO_ERROR.to_varint(), b"");
                    }
                });
            }
            // No runtime left to wait on: close now.
            Some(_) => self.close(Code::H3_NO_ERROR, b""),
        }
    }
}

/// Cancels a blocked field section (RFC 9204 §4.4.2) if its waiter goes away.
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    stream_id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let flush = {
                let mut inner = self.shared.lock();
                inner.proto.cancel_stream(self.stream_id);
                inner.flush_waker()
            };
            if let Some(driver) = flush {
                driver.wake();
            }
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket sees of
/// an IPv4 peer) given as the IPv4 address it stands for.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
