//! The async glue of one connection: one task that moves bytes between quinn and
//! [`ConnectionState`].
//!
//! This module owns [`Shared`], the part of a connection that request streams, the client and the
//! server handles share: the state machine behind a `std::sync::Mutex`, the wake-ups, the datagram
//! routes and the count of live request streams. [`start`] spawns the connection's one task,
//! `drive`, a hand-written poll loop (no task per stream, no `select!`) that:
//!
//! - opens our control stream and writes what the state machine queues for it (whoever queues
//!   bytes wakes it, see [`Inner::flush_waker`]), and opens our QPACK encoder and decoder
//!   streams only when they first have an instruction to carry (RFC 9204 §4.2); a header
//!   section that may reference new dynamic table entries waits in [`Shared::encode`] until
//!   the encoder stream is open;
//! - accepts the peer's unidirectional streams and reads their types, then reads the control
//!   and QPACK streams into the state machine, hands extension streams out and stops the rest;
//! - on a client, reads the extension signal of the server's bidirectional streams and hands
//!   them out.
//!
//! HTTP datagrams do not pass through the task: whoever waits for one reads quinn's datagrams
//! and routes them by their quarter stream ID ([`Shared::poll_datagram`]).
//!
//! The task ends with the connection. On one connection in eight it also sends a GREASE stream,
//! right after its SETTINGS.
//!
//! Request streams are not read here: the user's task reads and writes them directly and takes
//! the lock only to QPACK-encode or decode a header section. Any connection error closes the QUIC
//! connection with its code.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, RandomState};
use std::ops::ControlFlow;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use crate::proto::Codec;
use bytes::{Buf, Bytes, BytesMut};
use quay_qpack::Field;
use quay_transport::{Connection, RecvStream, SendStream, VarInt, quinn};
use tokio::sync::Notify;

use crate::config::{Config, ConnectionConfig};
use crate::connection::{
    CloseAction, ConnectionState, HeaderBlock, ProtocolError, Side, UniStream,
};
use crate::error::Code;
use crate::proto::datagram::Datagram;
use crate::proto::frame::FrameType;
use crate::proto::settings::Settings;
use crate::proto::stream::{UniStreamHeader, decode_bidi_signal, decode_uni_prefix};
use crate::stream::{ConnectionError, ExtensionStream, StreamError};

/// How long a server whose handle and request streams are all gone waits, after its GOAWAY, for
/// the client to close the connection before closing it itself.
const LINGER: Duration = Duration::from_secs(2);
/// How many datagrams wait per request stream before new ones are dropped.
const DATAGRAM_QUEUE: usize = 256;
/// How many datagrams for streams we have not seen yet wait, per connection, for their stream
/// (RFC 9297 §2.1: a datagram can overtake the request that creates its stream). The oldest
/// goes first.
const EARLY_DATAGRAMS: usize = 16;
/// How long such a datagram waits, at least; more on a slow path (three round trips): RFC 9297
/// §2.1 asks for "on the order of a round trip".
const EARLY_DATAGRAM_AGE: Duration = Duration::from_millis(50);

/// The state request streams and handles share with the connection's task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) config: ConnectionConfig,
    pub(crate) side: Side,
    inner: Mutex<Inner>,
    /// Something changed that waiters re-check: a blocked section was decoded, SETTINGS or
    /// GOAWAY arrived, a request stream ended, or the connection failed.
    pub(crate) changed: Notify,
    /// Whether the next header section we send gets a GREASE frame in front (once per
    /// connection, when grease is on).
    grease_frame: AtomicBool,
    /// Whether this connection opens a stream of a reserved type (see [`sends_grease_stream`]).
    grease_stream: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) proto: ConnectionState,
    /// The error we closed the connection with, if any. Boxed: most connections never have one.
    pub(crate) error: Option<Box<ConnectionError>>,
    /// Datagram queues by request stream ID. Routing stops when the connection ends.
    routes: Routes,
    /// The connection is gone: no datagram will be routed any more.
    routes_ended: bool,
    /// Datagrams for streams without a route yet, oldest first: stream ID, arrival, payload.
    early_datagrams: VecDeque<(u64, Instant, Bytes)>,
    /// Our QPACK encoder stream is open, so header sections may reference the entries its
    /// instructions insert.
    encoder_stream_open: bool,
    /// Extension streams waiting to be taken; waiters wait on [`Shared::changed`]. Unbounded on
    /// purpose: every one is an open QUIC stream, so the peer's stream limits bound them.
    extensions: VecDeque<ExtensionStream>,
    /// Who takes extension streams: the connection handle, an [`ExtensionStreams`], or nobody.
    extension_taker: Taker,
    /// The connection's task, woken (see [`Inner::flush_waker`]) when our control or QPACK
    /// streams have bytes: a waker rather than a `Notify`, so the long-lived task keeps no
    /// future for it.
    driver_waker: Option<Waker>,
    /// The [`ExtensionStreams`] waiting in [`Shared::poll_extension_stream`] (the handle's
    /// waiters wait on [`Shared::changed`]).
    extension_waker: Option<Waker>,
}

impl Inner {
    /// The connection's task, to wake once the lock is released, if the state machine has bytes
    /// for our control or QPACK streams.
    pub(crate) fn flush_waker(&self) -> Option<Waker> {
        if self.proto.has_output() {
            self.driver_waker.clone()
        } else {
            None
        }
    }

    /// The oldest extension stream waiting to be taken.
    fn next_extension(&mut self) -> Option<ExtensionStream> {
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
    /// None are configured, or the [`ExtensionStreams`] that took them was dropped: refuse.
    Nobody,
    /// The client or server handle (`accept_extension_stream`).
    Handle,
    /// An [`ExtensionStreams`].
    Taken,
}

/// The datagrams waiting for one request stream, and the tasks that wait for them.
#[derive(Debug, Default)]
struct Route {
    queue: VecDeque<Bytes>,
    /// The reader, woken when another stream's reader queues a datagram here.
    waker: Option<Waker>,
    /// Further concurrent readers; usually empty, so it allocates nothing.
    more_wakers: Vec<Waker>,
}

/// The datagram routes of a connection, sorted by request stream ID: one allocation for the
/// few streams a connection usually routes datagrams for, and a binary search per datagram.
#[derive(Debug, Default)]
struct Routes(Vec<(u64, Route)>);

impl Routes {
    fn get_mut(&mut self, stream_id: u64) -> Option<&mut Route> {
        let i = self
            .0
            .binary_search_by_key(&stream_id, |(id, _)| *id)
            .ok()?;
        Some(&mut self.0[i].1)
    }

    /// Adds or replaces the route of `stream_id`.
    fn insert(&mut self, stream_id: u64, route: Route) {
        match self.0.binary_search_by_key(&stream_id, |(id, _)| *id) {
            Ok(i) => self.0[i].1 = route,
            Err(i) => {
                // Most connections route one stream: room for exactly one (a Vec's first
                // allocation would hold four).
                if self.0.is_empty() {
                    self.0.reserve_exact(1);
                }
                self.0.insert(i, (stream_id, route));
            }
        }
    }

    fn remove(&mut self, stream_id: u64) -> Option<Route> {
        let i = self
            .0
            .binary_search_by_key(&stream_id, |(id, _)| *id)
            .ok()?;
        let (_, route) = self.0.remove(i);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(route)
    }
}

/// How many further readers' wakers a route keeps; past that they are all woken (they poll
/// again and re-register), so a route that sees reader after reader does not grow.
const MORE_WAKERS: usize = 8;

impl Route {
    /// Registers `waker` to be woken when a datagram is queued here.
    fn wait(&mut self, waker: &Waker) {
        match &self.waker {
            Some(first) if first.will_wake(waker) => {}
            None => self.waker = Some(waker.clone()),
            Some(_) => {
                if self.more_wakers.iter().any(|w| w.will_wake(waker)) {
                    return;
                }
                if self.more_wakers.len() >= MORE_WAKERS {
                    self.more_wakers.drain(..).for_each(Waker::wake);
                }
                self.more_wakers.push(waker.clone());
            }
        }
    }

    /// Takes every registered waker, to wake once the lock is released.
    fn take_wakers(&mut self) -> impl Iterator<Item = Waker> + use<> {
        let more = std::mem::take(&mut self.more_wakers);
        self.waker.take().into_iter().chain(more)
    }
}

/// Keeps `waker` in `slot` to be woken later, unless the one there already wakes the same task.
fn keep_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(kept) => kept.clone_from(waker),
        None => *slot = Some(waker.clone()),
    }
}

/// Where [`Shared::route_datagram`] put a datagram.
enum Routed {
    /// It is the reader's own: here is its payload.
    Mine(Bytes),
    /// Queued for another stream, kept for one not seen yet, or dropped.
    Elsewhere,
    /// Malformed: the connection failed.
    Malformed,
}

/// Starts the tasks of a connection. Must be called inside a tokio runtime.
pub(crate) fn start(conn: Connection, config: Config, side: Side) -> Arc<Shared> {
    let seed = RandomState::new().hash_one(conn.stable_id());
    let mut proto = ConnectionState::new(side, &config, seed);
    proto.set_quic_datagrams(conn.max_datagram_size().is_some());
    let wants_extensions =
        !config.extension_uni_stream_types.is_empty() || !config.extension_bidi_signals.is_empty();
    if side == Side::Server
        && let Some(max) = config.max_concurrent_requests
    {
        conn.set_max_concurrent_bi_streams(VarInt::from_u32(max));
    }
    let grease = config.grease;
    let shared = Arc::new(Shared {
        conn,
        config: config.into(),
        side,
        inner: Mutex::new(Inner {
            proto,
            error: None,
            routes: Routes::default(),
            routes_ended: false,
            early_datagrams: VecDeque::new(),
            encoder_stream_open: false,
            extensions: VecDeque::new(),
            extension_taker: if wants_extensions {
                Taker::Handle
            } else {
                Taker::Nobody
            },
            driver_waker: None,
            extension_waker: None,
        }),
        changed: Notify::new(),
        grease_frame: AtomicBool::new(grease),
        grease_stream: grease && sends_grease_stream(seed),
    });
    tokio::spawn(drive(shared.clone()));
    shared
}

impl Shared {
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
            tracing::debug!(%error, ?code, "closing the connection");
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

    /// Registers the connection's task to be woken when bytes are queued for our streams (see
    /// [`Inner::flush_waker`]). It does so before it looks for output, so bytes queued after
    /// that look wake it.
    fn set_driver_waker(&self, cx: &Context<'_>) {
        keep_waker(&mut self.lock().driver_waker, cx.waker());
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
            Ok(HeaderBlock::Blocked) => {}
            Ok(block) => return Ok(block),
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
        Ok(block)
    }

    /// Starts routing datagrams for `stream_id`, for [`Shared::poll_datagram`]. Nothing is
    /// allocated for the stream until its first datagram.
    pub(crate) fn register_datagrams(&self, stream_id: u64) {
        let max_age = self.early_datagram_age();
        let mut inner = self.lock();
        // After the end there is nothing to route: the receiver sees the end at once.
        if inner.routes_ended {
            return;
        }
        let mut route = Route::default();
        if !inner.early_datagrams.is_empty() {
            let now = Instant::now();
            inner.early_datagrams.retain(|(id, arrived, payload)| {
                if *id != stream_id {
                    return now.duration_since(*arrived) <= max_age;
                }
                if now.duration_since(*arrived) <= max_age {
                    route.queue.push_back(payload.clone());
                }
                false
            });
            if inner.early_datagrams.is_empty() {
                inner.early_datagrams = VecDeque::new();
            }
        }
        inner.routes.insert(stream_id, route);
    }

    fn early_datagram_age(&self) -> Duration {
        EARLY_DATAGRAM_AGE.max(self.conn.rtt() * 3)
    }

    /// Stops routing datagrams for `stream_id`; its waiting readers see the end.
    pub(crate) fn unregister_datagrams(&self, stream_id: u64) {
        let route = self.lock().routes.remove(stream_id);
        route
            .into_iter()
            .flat_map(|mut route| route.take_wakers())
            .for_each(Waker::wake);
    }

    /// The next datagram for `stream_id`; `None` once routing stopped (the connection is gone
    /// or sent a malformed datagram).
    ///
    /// Datagrams are read from quinn by whoever waits for one, through `read` (a future of
    /// `self.conn.read_datagram()` that the caller keeps between polls): one for this stream
    /// is returned at once, others are queued for their streams. So a datagram reaches its
    /// reader without a detour through the connection's task, and the task is not woken for
    /// datagrams at all. Several tasks may wait per stream (see [`Route`]).
    pub(crate) fn poll_datagram<'a>(
        &'a self,
        stream_id: u64,
        cx: &mut Context<'_>,
        mut read: Pin<&mut quinn::ReadDatagram<'a>>,
    ) -> Poll<Option<Bytes>> {
        for _ in 0..BUDGET {
            {
                let mut inner = self.lock();
                let Some(route) = inner.routes.get_mut(stream_id) else {
                    return Poll::Ready(None);
                };
                if let Some(datagram) = route.queue.pop_front() {
                    return Poll::Ready(Some(datagram));
                }
                // Registered under the lock that `route_datagram` takes, so a datagram that
                // another reader routes here is not missed.
                route.wait(cx.waker());
                // Idle: keep no buffer beyond a few slots.
                if route.queue.capacity() > 8 {
                    route.queue = VecDeque::new();
                }
            }
            match ready!(read.as_mut().poll(cx)) {
                Ok(datagram) => {
                    read.set(self.conn.read_datagram());
                    match self.route_datagram(stream_id, datagram) {
                        Routed::Mine(payload) => return Poll::Ready(Some(payload)),
                        Routed::Elsewhere => {}
                        Routed::Malformed => return Poll::Ready(None),
                    }
                }
                // The connection is gone.
                Err(_) => {
                    self.end_datagrams();
                    return Poll::Ready(None);
                }
            }
        }
        // Others' datagrams kept coming: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The next datagram for `stream_id` if one has arrived, without waiting.
    pub(crate) fn try_datagram(&self, stream_id: u64) -> Option<Bytes> {
        let mut read = pin!(self.conn.read_datagram());
        match self.poll_datagram(
            stream_id,
            &mut Context::from_waker(Waker::noop()),
            read.as_mut(),
        ) {
            Poll::Ready(datagram) => datagram,
            Poll::Pending => None,
        }
    }

    /// Decodes a datagram's quarter stream ID (RFC 9297 §2.1) and hands its payload back if it
    /// belongs to `reader`, or queues it for its request stream. One for a stream without a
    /// route waits a little for it (see [`EARLY_DATAGRAMS`]); one beyond a full queue is
    /// dropped. A malformed one fails the connection.
    fn route_datagram(&self, reader: u64, datagram: Bytes) -> Routed {
        let datagram = match Datagram::decode(datagram) {
            Ok(datagram) => datagram,
            Err(error) => {
                self.fail(error.into());
                self.end_datagrams();
                return Routed::Malformed;
            }
        };
        let (stream_id, payload) = (datagram.stream_id.into_inner(), datagram.payload);
        if stream_id == reader {
            return Routed::Mine(payload);
        }
        let wakers = {
            let mut inner = self.lock();
            let Some(route) = inner.routes.get_mut(stream_id) else {
                if !inner.routes_ended {
                    if inner.early_datagrams.len() >= EARLY_DATAGRAMS {
                        inner.early_datagrams.pop_front();
                    }
                    inner
                        .early_datagrams
                        .push_back((stream_id, Instant::now(), payload));
                }
                return Routed::Elsewhere;
            };
            if route.queue.len() >= DATAGRAM_QUEUE {
                return Routed::Elsewhere;
            }
            route.queue.push_back(payload);
            route.take_wakers()
        };
        wakers.for_each(Waker::wake);
        Routed::Elsewhere
    }

    /// The connection is gone: every datagram receiver sees the end once its queue is empty,
    /// and so does an [`ExtensionStreams`].
    fn end_datagrams(&self) {
        let (routes, extension_waker) = {
            let mut inner = self.lock();
            inner.routes_ended = true;
            inner.early_datagrams = VecDeque::new();
            (
                std::mem::take(&mut inner.routes),
                inner.extension_waker.take(),
            )
        };
        if let Some(waker) = extension_waker {
            waker.wake();
        }
        for waker in routes
            .0
            .into_iter()
            .flat_map(|(_, mut route)| route.take_wakers())
        {
            waker.wake();
        }
    }

    /// Hands the next extension stream to `taker`: `None` when `taker` does not take them (none
    /// are configured, or they were taken by someone else) or the connection is gone.
    pub(crate) async fn next_extension_stream(&self, taker: Taker) -> Option<ExtensionStream> {
        self.wait_for(|inner| {
            if inner.extension_taker != taker {
                return Some(None);
            }
            Some(Some(inner.next_extension()?))
        })
        .await
        .ok()
        .flatten()
    }

    /// The next extension stream for an [`ExtensionStreams`]; `None` once they were given up
    /// or the connection is gone. One task at a time waits.
    pub(crate) fn poll_extension_stream(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<ExtensionStream>> {
        let mut inner = self.lock();
        if inner.extension_taker != Taker::Taken {
            return Poll::Ready(None);
        }
        if let Some(stream) = inner.next_extension() {
            return Poll::Ready(Some(stream));
        }
        // `routes_ended` is set, and this waker woken, when the connection's task ends.
        if inner.routes_ended || inner.error.is_some() || self.conn.close_reason().is_some() {
            return Poll::Ready(None);
        }
        keep_waker(&mut inner.extension_waker, cx.waker());
        Poll::Pending
    }

    /// Moves the extension streams from the handle to an [`ExtensionStreams`]; false when none
    /// are configured or they were taken already.
    pub(crate) fn take_extension_streams(&self) -> bool {
        let mut inner = self.lock();
        if inner.extension_taker != Taker::Handle {
            return false;
        }
        inner.extension_taker = Taker::Taken;
        // A handle waiting in `accept_extension_stream` returns `None`.
        drop(inner);
        self.changed.notify_waiters();
        true
    }

    /// The [`ExtensionStreams`] was dropped: refuse the streams it never took, and later ones.
    pub(crate) fn drop_extension_streams(&self) {
        let refused = {
            let mut inner = self.lock();
            inner.extension_taker = Taker::Nobody;
            std::mem::take(&mut inner.extensions)
        };
        for stream in refused {
            stream.refuse(Code::H3_STREAM_CREATION_ERROR);
        }
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

/// Our streams, in the order their bytes are written: QPACK instructions unblock header
/// sections, so they go first.
const OURS: [UniStream; 3] = [UniStream::Encoder, UniStream::Control, UniStream::Decoder];

/// How many chunks or streams one source may hand the driver in one wake-up, or how many other
/// streams' datagrams a datagram reader routes, before letting other tasks run.
const BUDGET: usize = 32;

/// What the connection's task keeps between wake-ups, apart from the peer's next
/// unidirectional stream it waits for.
#[derive(Default)]
struct Driver<'a> {
    /// A client's wait for the server's next bidirectional stream (extensions only).
    accept_bi: Option<Pin<Box<quinn::AcceptBi<'a>>>>,
    /// One of our streams being opened, and which.
    opening: Option<(UniStream, Pin<Box<quinn::OpenUni<'a>>>)>,
    /// Our control stream, once open.
    control: Ours,
    /// The peer's control stream, once identified.
    peer_control: Option<RecvStream>,
    /// The QPACK streams both ways, allocated when the first one is needed: a connection whose
    /// header sections use only the static table never opens them.
    qpack: Option<Box<QpackStreams>>,
    /// Peer streams whose type (unidirectional) or extension signal (bidirectional, clients
    /// only) has not arrived whole yet. Usually empty: the type comes in the first packet.
    incoming: Vec<Incoming>,
    /// Our GREASE stream is to be sent once our control stream's first bytes are written.
    grease_due: bool,
}

/// Our QPACK streams and the peer's.
#[derive(Default)]
struct QpackStreams {
    encoder: Ours,
    decoder: Ours,
    peer_encoder: Option<RecvStream>,
    peer_decoder: Option<RecvStream>,
}

/// One of our streams.
#[derive(Default)]
struct Ours {
    stream: Option<SendStream>,
    /// Bytes taken from the state machine and not written yet.
    pending: Bytes,
}

/// A peer stream whose prefix is being read.
struct Incoming {
    recv: RecvStream,
    /// The sending half of a bidirectional stream.
    send: Option<SendStream>,
    buf: BytesMut,
}

/// The connection's one task. It opens our control stream and writes what the state machine
/// queues for it, opening our QPACK streams when they first have bytes; accepts the peer's
/// unidirectional streams and reads their types, then reads the critical ones into the state
/// machine, hands out extension streams and stops the rest; on a client, does the same for the
/// server's extension bidirectional streams. It ends with the connection.
///
/// Everything is polled by hand from one future, so an idle connection costs one small task
/// rather than one per stream; futures that are rarely pending, or exist on some connections
/// only, are boxed. The task is kept under 280 bytes, in tokio's 384-byte step: flushes wake it
/// through a waker in the shared state, it is a function returning an `async move` block
/// (rustc keeps an async fn's arguments twice), and its poll closure holds three references.
#[allow(clippy::manual_async_fn)] // On purpose: see above.
fn drive(shared: Arc<Shared>) -> impl Future<Output = ()> + Send + 'static {
    async move {
        {
            let shared = &*shared;
            let conn = &shared.conn;
            let mut driver = Driver {
                accept_bi: (shared.side == Side::Client).then(|| Box::pin(conn.accept_bi())),
                ..Driver::default()
            };
            let driver = &mut driver;
            let mut accept_uni = pin!(conn.accept_uni());
            // `move`: the closure keeps three references, not one per local it uses.
            poll_fn(move |cx| {
                shared.set_driver_waker(cx);
                let conn = &shared.conn;
                let mut busy = false;
                let mut budget = BUDGET;
                loop {
                    match accept_uni.as_mut().poll(cx) {
                        Poll::Ready(Ok(recv)) => {
                            accept_uni.set(conn.accept_uni());
                            driver.incoming.push(Incoming {
                                recv,
                                send: None,
                                buf: BytesMut::new(),
                            });
                        }
                        // The connection is gone.
                        Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Pending => break,
                    }
                    budget -= 1;
                    if budget == 0 {
                        busy = true;
                        break;
                    }
                }
                if let Some(accept) = &mut driver.accept_bi {
                    let mut budget = BUDGET;
                    while let Poll::Ready(result) = accept.as_mut().poll(cx) {
                        let Ok((send, recv)) = result else {
                            return Poll::Ready(());
                        };
                        accept.set(conn.accept_bi());
                        // RFC 9114 §6.1: a server opens bidirectional streams only for an
                        // extension.
                        if shared.config.extension_bidi_signals.is_empty() {
                            shared.fail(ProtocolError::StreamCreation(
                                "server-initiated bidirectional stream",
                            ));
                            return Poll::Ready(());
                        }
                        driver.incoming.push(Incoming {
                            recv,
                            send: Some(send),
                            buf: BytesMut::new(),
                        });
                        budget -= 1;
                        if budget == 0 {
                            busy = true;
                            break;
                        }
                    }
                }
                if driver.read_incoming(cx, shared).is_break() {
                    return Poll::Ready(());
                }
                match driver.read_critical(cx, shared) {
                    ControlFlow::Break(()) => return Poll::Ready(()),
                    ControlFlow::Continue(more) => busy |= more,
                }
                if driver.write(cx, shared).is_break() {
                    return Poll::Ready(());
                }
                if let Some((index, open)) = &mut driver.opening
                    && let Poll::Ready(result) = open.as_mut().poll(cx)
                {
                    let Ok(stream) = result else {
                        return Poll::Ready(());
                    };
                    let index = *index;
                    driver.opening = None;
                    driver.opened(shared, index, stream);
                    // Write to it, and open the next one if needed.
                    busy = true;
                }
                if busy {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            })
            .await;
        }
        // The connection is gone: every datagram receiver sees the end.
        shared.end_datagrams();
    }
}

impl<'a> Driver<'a> {
    /// Reads the prefixes of new peer streams and routes the streams whose prefix is complete.
    /// Breaks once the connection failed.
    fn read_incoming(&mut self, cx: &mut Context<'_>, shared: &Shared) -> ControlFlow<()> {
        let mut i = 0;
        while i < self.incoming.len() {
            let Incoming { recv, send, buf } = &mut self.incoming[i];
            let ready = if send.is_some() {
                let signals = &shared.config.extension_bidi_signals;
                poll_prefix(cx, recv, buf, |cur| {
                    decode_bidi_signal(signals, cur).map(|signal| (None, signal))
                })
            } else {
                let types = &shared.config.extension_uni_stream_types;
                poll_prefix(cx, recv, buf, |cur| {
                    decode_uni_prefix(types, cur).map(|header| (Some(header), None))
                })
            };
            let Poll::Ready(prefix) = ready.map(|read| read.ok().flatten()) else {
                i += 1;
                continue;
            };
            // In order: streams are handed out in the order the peer opened them.
            let Incoming { recv, send, .. } = self.incoming.remove(i);
            // A stream that ended or failed before its prefix is dropped.
            let Some(((header, signal), rest)) = prefix else {
                continue;
            };
            match (header, signal, send) {
                (Some((header, session_id)), _, _) => {
                    self.route_uni(shared, header, session_id, recv, rest)?;
                }
                (None, Some(signal), Some(send)) => {
                    hand_out_bidi(shared, signal, send, recv, rest);
                }
                _ => {
                    if let Err(error) = shared.lock().proto.handle_peer_bidi_stream(false) {
                        shared.fail(error);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        if self.incoming.is_empty() {
            // Keep no buffer while idle.
            self.incoming = Vec::new();
        }
        ControlFlow::Continue(())
    }

    /// Routes a peer unidirectional stream by its type (RFC 9114 §6.2).
    fn route_uni(
        &mut self,
        shared: &Shared,
        header: UniStreamHeader,
        session_id: Option<VarInt>,
        mut recv: RecvStream,
        rest: Bytes,
    ) -> ControlFlow<()> {
        let kind = shared.lock().proto.handle_uni_stream(header);
        match kind {
            Err(error) => {
                shared.fail(error);
                return ControlFlow::Break(());
            }
            Ok(UniStream::Extension(ty)) => {
                if let Some(session_id) = session_id {
                    hand_out(
                        shared,
                        ExtensionStream::Uni {
                            ty,
                            session_id,
                            recv,
                            buffered: rest,
                        },
                    );
                }
            }
            Ok(kind @ (UniStream::Control | UniStream::Encoder | UniStream::Decoder)) => {
                if !rest.is_empty() && !feed(shared, kind, rest) {
                    return ControlFlow::Break(());
                }
                *self.peer_slot(kind) = Some(recv);
            }
            // RFC 9114 §6.2: unknown stream types are not read.
            Ok(_) => {
                let _ = recv.stop(Code::H3_STREAM_CREATION_ERROR.to_varint());
            }
        }
        ControlFlow::Continue(())
    }

    /// Reads the peer's critical streams into the state machine. Breaks once the connection
    /// failed; otherwise says whether a stream has more to read than one wake-up takes.
    fn read_critical(&mut self, cx: &mut Context<'_>, shared: &Shared) -> ControlFlow<(), bool> {
        let mut busy = false;
        for kind in OURS {
            let Some(slot) = self.peer(kind) else {
                continue;
            };
            let Some(recv) = slot else {
                continue;
            };
            let mut budget = BUDGET;
            loop {
                let read = pin!(recv.read_chunk(usize::MAX, true)).poll(cx);
                match read {
                    Poll::Ready(Ok(Some(chunk))) => {
                        if !feed(shared, kind, chunk.bytes) {
                            return ControlFlow::Break(());
                        }
                    }
                    // RFC 9114 §6.2.1, RFC 9204 §4.2: closing a critical stream is a connection
                    // error.
                    Poll::Ready(Ok(None) | Err(quay_transport::ReadError::Reset(_))) => {
                        let error = shared.lock().proto.handle_critical_end(kind);
                        shared.fail(error);
                        return ControlFlow::Break(());
                    }
                    Poll::Ready(Err(_)) => {
                        *slot = None;
                        break;
                    }
                    Poll::Pending => break,
                }
                budget -= 1;
                if budget == 0 {
                    busy = true;
                    break;
                }
            }
        }
        ControlFlow::Continue(busy)
    }

    /// Writes what the state machine queued for our streams; starts opening a stream that
    /// has bytes and is not open yet. Breaks once the connection is gone or failed.
    fn write(&mut self, cx: &mut Context<'_>, shared: &'a Shared) -> ControlFlow<()> {
        let idle = |ours: Option<&mut Ours>| ours.is_none_or(|ours| ours.pending.is_empty());
        if OURS.into_iter().any(|kind| idle(self.ours(kind))) {
            let mut inner = shared.lock();
            for kind in OURS {
                if idle(self.ours(kind)) {
                    let bytes = match kind {
                        UniStream::Encoder => inner.proto.poll_encoder(),
                        UniStream::Control => inner.proto.poll_control(),
                        _ => inner.proto.poll_decoder(),
                    };
                    if let Some(bytes) = bytes {
                        self.ours_or_new(kind).pending = bytes;
                    }
                }
            }
        }
        let mut to_open = None;
        let mut control_written = false;
        for kind in OURS {
            let Some(ours) = self.ours(kind) else {
                continue;
            };
            if ours.pending.is_empty() {
                continue;
            }
            let Some(stream) = &mut ours.stream else {
                to_open = to_open.or(Some(kind));
                continue;
            };
            while !ours.pending.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, &ours.pending) {
                    Poll::Ready(Ok(written)) => {
                        ours.pending.advance(written);
                        if ours.pending.is_empty() {
                            // Free the buffer rather than keep it behind an empty slice.
                            ours.pending = Bytes::new();
                        }
                    }
                    Poll::Ready(Err(quay_transport::WriteError::ConnectionLost(_))) => {
                        return ControlFlow::Break(());
                    }
                    // RFC 9114 §6.2.1: the peer stopped one of our critical streams.
                    Poll::Ready(Err(_)) => {
                        let error = shared.lock().proto.handle_critical_end(kind);
                        shared.fail(error);
                        return ControlFlow::Break(());
                    }
                    Poll::Pending => break,
                }
            }
            control_written |= kind == UniStream::Control && ours.pending.is_empty();
        }
        if control_written && std::mem::take(&mut self.grease_due) {
            send_grease_stream(&shared.conn);
        }
        if self.opening.is_none()
            && let Some(kind) = to_open
        {
            self.opening = Some((kind, Box::pin(shared.conn.open_uni())));
        }
        ControlFlow::Continue(())
    }

    /// One of our streams is open.
    fn opened(&mut self, shared: &Shared, kind: UniStream, stream: SendStream) {
        match kind {
            UniStream::Encoder => {
                // QPACK instructions unblock header sections: send them before request data.
                let _ = stream.set_priority(1);
                shared.lock().encoder_stream_open = true;
                shared.changed.notify_waiters();
            }
            UniStream::Control => {
                let _ = stream.set_priority(1);
                self.grease_due = shared.grease_stream;
            }
            _ => {}
        }
        self.ours_or_new(kind).stream = Some(stream);
    }

    /// Our stream of `kind` (control, encoder or decoder), if it has been needed.
    fn ours(&mut self, kind: UniStream) -> Option<&mut Ours> {
        match (kind, &mut self.qpack) {
            (UniStream::Control, _) => Some(&mut self.control),
            (UniStream::Encoder, Some(qpack)) => Some(&mut qpack.encoder),
            (_, Some(qpack)) => Some(&mut qpack.decoder),
            (_, None) => None,
        }
    }

    /// Where the peer's critical stream of `kind` is kept, if the QPACK streams have been
    /// needed (the control stream's place always exists).
    fn peer(&mut self, kind: UniStream) -> Option<&mut Option<RecvStream>> {
        match (kind, &mut self.qpack) {
            (UniStream::Control, _) => Some(&mut self.peer_control),
            (UniStream::Encoder, Some(qpack)) => Some(&mut qpack.peer_encoder),
            (_, Some(qpack)) => Some(&mut qpack.peer_decoder),
            (_, None) => None,
        }
    }

    /// Our stream of `kind`, allocating the QPACK streams if needed.
    fn ours_or_new(&mut self, kind: UniStream) -> &mut Ours {
        match kind {
            UniStream::Control => &mut self.control,
            UniStream::Encoder => &mut self.qpack.get_or_insert_default().encoder,
            _ => &mut self.qpack.get_or_insert_default().decoder,
        }
    }

    /// Where the peer's critical stream of `kind` is kept, allocating the QPACK streams if
    /// needed.
    fn peer_slot(&mut self, kind: UniStream) -> &mut Option<RecvStream> {
        match kind {
            UniStream::Encoder => &mut self.qpack.get_or_insert_default().peer_encoder,
            UniStream::Decoder => &mut self.qpack.get_or_insert_default().peer_decoder,
            _ => &mut self.peer_control,
        }
    }
}

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

/// One connection in this many opens a GREASE stream: enough, across a peer's connections, to
/// find one that chokes on unknown stream types, while most connections spare both sides a
/// stream (its packets at set-up, and the state QUIC keeps for it).
const GREASE_STREAM_ONE_IN: u64 = 8;

/// Whether the connection with this random `seed` opens a GREASE stream.
fn sends_grease_stream(seed: u64) -> bool {
    // The high bits: the low ones choose the GREASE setting and frame types.
    (seed >> 32).is_multiple_of(GREASE_STREAM_ONE_IN)
}

/// Opens a unidirectional stream of a reserved type with a few bytes and FIN on it, which the
/// peer must ignore (RFC 9114 §6.2.3). Without waiting: called right after our control stream's
/// first bytes are written, so that it leaves in the same packet as our SETTINGS rather than in
/// one of its own. Skipped when quinn cannot open or write it at once (no stream credit yet).
fn send_grease_stream(conn: &Connection) {
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(mut stream)) = pin!(conn.open_uni()).poll(&mut cx) else {
        return;
    };
    let n = RandomState::new().hash_one(conn.stable_id()) % 1000;
    let mut bytes = BytesMut::new();
    UniStreamHeader::grease(n).encode(&mut bytes);
    bytes.extend_from_slice(b"quay");
    let written = Pin::new(&mut stream).poll_write(&mut cx, &bytes);
    if matches!(written, Poll::Ready(Ok(n)) if n == bytes.len()) {
        let _ = stream.finish();
    }
}

/// Hands out a bidirectional stream that opened with an extension's `(signal, session ID)`;
/// `buffered` is what followed the signal.
pub(crate) fn hand_out_bidi(
    shared: &Shared,
    (signal, session_id): (FrameType, VarInt),
    send: SendStream,
    recv: RecvStream,
    buffered: Bytes,
) {
    let stream = ExtensionStream::Bidi {
        signal,
        session_id,
        send,
        recv,
        buffered,
    };
    hand_out(shared, stream);
}

pub(crate) fn hand_out(shared: &Shared, stream: ExtensionStream) {
    {
        let mut inner = shared.lock();
        if inner.extension_taker != Taker::Nobody {
            inner.extensions.push_back(stream);
            let waker = inner.extension_waker.take();
            drop(inner);
            if let Some(waker) = waker {
                waker.wake();
            }
            shared.changed.notify_waiters();
            return;
        }
    }
    stream.refuse(Code::H3_STREAM_CREATION_ERROR);
}

/// Feeds a chunk of a critical stream; returns false once the connection failed.
fn feed(shared: &Shared, kind: UniStream, chunk: Bytes) -> bool {
    let (result, flush, changed) = {
        let mut inner = shared.lock();
        let before = (
            inner.proto.peer_settings().is_some(),
            inner.proto.goaway_received(),
        );
        let result = match kind {
            UniStream::Control => inner.proto.handle_control(chunk).map(|()| false),
            UniStream::Encoder => inner.proto.handle_encoder_stream(&chunk),
            _ => inner.proto.handle_decoder_stream(&chunk).map(|()| false),
        };
        let after = (
            inner.proto.peer_settings().is_some(),
            inner.proto.goaway_received(),
        );
        let changed = matches!(result, Ok(true)) || before != after;
        (result, inner.flush_waker(), changed)
    };
    if let Some(driver) = flush {
        driver.wake();
    }
    if let Err(error) = result {
        shared.fail(error);
        return false;
    }
    if changed {
        shared.changed.notify_waiters();
        shared.maybe_close();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_stream_id_in_any_insertion_order() {
        let mut routes = Routes::default();
        for id in [8, 0, 16, 4] {
            routes.insert(id, Route::default());
            routes
                .get_mut(id)
                .unwrap()
                .queue
                .push_back(Bytes::from(id.to_string()));
        }
        assert_eq!(routes.0.capacity(), 4);
        let ids: Vec<u64> = routes.0.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [0, 4, 8, 16]);
        assert!(routes.get_mut(12).is_none());
        let route = routes.remove(8).unwrap();
        assert_eq!(route.queue[0], "8");
        assert!(routes.remove(8).is_none());
        assert_eq!(routes.get_mut(16).unwrap().queue[0], "16");
        for id in [0, 4, 16] {
            routes.remove(id).unwrap();
        }
        // An empty table keeps no allocation; the first route takes room for one.
        assert_eq!(routes.0.capacity(), 0);
        routes.insert(20, Route::default());
        assert_eq!(routes.0.capacity(), 1);
    }

    #[test]
    fn one_connection_in_eight_sends_a_grease_stream() {
        let hasher = RandomState::new();
        let sending = (0..8_000u64)
            .filter(|n| sends_grease_stream(hasher.hash_one(n)))
            .count();
        // 1,000 expected; the bounds are six standard deviations out.
        assert!((820..1_180).contains(&sending), "{sending} of 8,000");
    }
}
