//! [`SessionState`]: what one HTTP/3 session's handles, its streams and its CONNECT stream's
//! reader share. It is the session's core (`crate::core::session`) behind a
//! `std::sync::Mutex`, the wakers of the tasks waiting on it, the CONNECT stream's sending
//! half and the session's datagrams; every method feeds the core one input and carries out
//! what it returns (wakes, the end's publication, refusals, writes on the CONNECT stream).
//! Waiting on the core (for credit, streams, the end) is [`wait`]'s.
//!
//! It decides no protocol rule (the core does), reads nothing from the network (the CONNECT
//! stream's reader is `crate::connect_reader`, streams are routed by `crate::routes`) and has
//! no public API ([`crate::Session`] is that).

mod wait;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use quay_h3::stream::{Datagrams, ExtensionStream, SendHalf};

use crate::core::session::{Event, SessionCore, Transmit};
use crate::error::{SessionError, StreamError};
use crate::flow::FlowControl;
use crate::held::HeldRef;
use crate::metrics::SessionLabels;
use crate::proto::capsule::Direction;
use crate::proto::error::WT_SESSION_GONE;
use crate::qlog::{Qlog, initiator, session_event};
use crate::stats::{FlowCredit, SessionCounters};
use crate::waiter::{Interest, Waiters};

/// What one HTTP/3 session's handles, its streams and its CONNECT-stream task share: the
/// session's core behind a lock, the wakers of those waiting on it, and the CONNECT stream's
/// sending half.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// The session has ended (a copy of the core's end, readable without the lock).
    gone: AtomicBool,
    /// The peer drained the session (a copy of the core's).
    drained: AtomicBool,
    /// The CONNECT stream's reader is done: the session ended and the peer answered, or the
    /// wait for its answer is over.
    connect_done: AtomicBool,
    /// Whether draft-16 flow control is on (fixed at the start).
    flow_on: bool,
    inner: Mutex<StateInner>,
    /// The CONNECT stream's sending half, for capsules and FIN.
    connect: tokio::sync::Mutex<SendHalf>,
    /// The session's datagrams, stopped when it ends.
    datagrams: Datagrams,
    /// What the session's handles and streams did, for its stats.
    pub(crate) counters: SessionCounters,
    /// The session's streams, ended with it.
    held: Mutex<HeldSlots>,
    /// When the session was established, and its metrics' labels.
    started: Instant,
    labels: SessionLabels,
    /// The connection's qlog and the session ID, when the connection has a qlog (boxed: most
    /// have none).
    qlog: Option<Box<(Qlog, u64)>>,
}

#[derive(Debug)]
struct StateInner {
    core: SessionCore<ExtensionStream, quay_h3::ConnectionError>,
    /// Every task waiting on the session: acceptors, streams waiting for credit or the end,
    /// the CONNECT stream's reader, closes waiting for it.
    waiters: Waiters,
    /// A task writes the core's transmits on the CONNECT stream.
    writing: bool,
}

/// The session's streams, to reset and stop when it ends (draft-16 §6): a slot per live
/// stream, given back when the stream is dropped (so a dropped stream's handle is freed at
/// once), and reused. Behind a lock of its own: streams come and go far more often than
/// anything else in the session changes.
#[derive(Debug, Default)]
struct HeldSlots {
    slots: Vec<Option<HeldRef>>,
    free: Vec<u32>,
    /// The session ended: streams are ended as they come.
    closed: bool,
}

impl SessionState {
    pub(crate) fn new(
        connect: SendHalf,
        datagrams: Datagrams,
        flow: Option<FlowControl>,
        labels: SessionLabels,
    ) -> Self {
        let core = SessionCore::new(flow);
        crate::metrics::session_started(labels);
        let qlog = connect
            .qlog()
            .map(|qlog| Box::new((qlog.clone(), u64::from(connect.id()))));
        Self {
            gone: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            connect_done: AtomicBool::new(false),
            flow_on: core.flow_on(),
            inner: Mutex::new(StateInner {
                core,
                waiters: Waiters::default(),
                writing: false,
            }),
            held: Mutex::new(HeldSlots::default()),
            connect: tokio::sync::Mutex::new(connect),
            datagrams,
            counters: SessionCounters::default(),
            started: Instant::now(),
            labels,
            qlog,
        }
    }

    /// The tracing span of the session's connection.
    pub(crate) fn connection_span(&self) -> tracing::Span {
        // The writer holds the CONNECT stream's lock only while it writes; a session being set
        // up has no writer yet.
        match self.connect.try_lock() {
            Ok(connect) => connect.connection_span().clone(),
            Err(_) => tracing::Span::none(),
        }
    }

    /// The session's datagrams, stopped when it ends.
    pub(crate) fn datagrams(&self) -> &Datagrams {
        &self.datagrams
    }

    /// Says that we want nothing more from the peer on the CONNECT stream but its FIN (see
    /// `SendHalf::settle`), once the stream's writer is done with what it is writing.
    pub(crate) async fn settle_connect(&self) {
        self.connect.lock().await.settle();
    }

    /// Keeps a stream of the session, to end it when the session ends; ends it at once if the
    /// session has ended already.
    pub(crate) fn hold(&self, stream: HeldRef) -> u32 {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if held.closed {
            drop(held);
            stream.end();
            return u32::MAX;
        }
        match held.free.pop() {
            Some(slot) => {
                held.slots[slot as usize] = Some(stream);
                slot
            }
            None => {
                let slot = u32::try_from(held.slots.len()).unwrap_or(u32::MAX);
                held.slots.push(Some(stream));
                slot
            }
        }
    }

    /// A stream of the session was dropped: its slot (from [`SessionState::hold`]) is free.
    pub(crate) fn release(&self, slot: u32) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(entry) = held.slots.get_mut(slot as usize)
            && entry.take().is_some()
        {
            held.free.push(slot);
            // The last live stream went: a session that waits, streamless, keeps no buffers.
            if held.free.len() == held.slots.len() {
                held.slots = Vec::new();
                held.free = Vec::new();
            }
        }
    }

    /// The session ended: every stream still held is reset and stopped (draft-16 §6), and
    /// streams made from now on are ended as they come.
    fn end_held(&self) {
        let slots = {
            let mut held = self
                .held
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            held.closed = true;
            held.free = Vec::new();
            std::mem::take(&mut held.slots)
        };
        for stream in slots.into_iter().flatten() {
            stream.end();
        }
    }

    /// The flow-control credit each way, when flow control is on.
    pub(crate) fn flow_credit(&self) -> Option<FlowCredit> {
        if !self.flow_on {
            return None;
        }
        self.lock().core.flow_credit()
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn reason(&self) -> Option<SessionError> {
        if !self.is_gone() {
            return None;
        }
        self.lock().core.end().cloned().map(SessionError::from)
    }

    /// Runs `input` on the core, then carries out what it asks for (see [`Self::after`]).
    pub(crate) fn with_core<T>(
        self: &Arc<Self>,
        input: impl FnOnce(&mut SessionCore<ExtensionStream, quay_h3::ConnectionError>) -> T,
    ) -> T {
        self.run_core(input, Writer::Task)
    }

    /// As [`Self::with_core`], for a caller that writes the core's transmits itself
    /// ([`Self::write_pending`]) right after: the CONNECT stream's reader as the session ends.
    /// No task is started for them.
    pub(crate) fn with_core_then_write<T>(
        self: &Arc<Self>,
        input: impl FnOnce(&mut SessionCore<ExtensionStream, quay_h3::ConnectionError>) -> T,
    ) -> T {
        self.run_core(input, Writer::Caller)
    }

    fn run_core<T>(
        self: &Arc<Self>,
        input: impl FnOnce(&mut SessionCore<ExtensionStream, quay_h3::ConnectionError>) -> T,
        writer: Writer,
    ) -> T {
        let mut inner = self.lock();
        let value = input(&mut inner.core);
        self.after(inner, writer);
        value
    }

    /// Carries out what the core asks for after an input, in its documented order: wakes
    /// waiters, publishes the end (stopping datagrams), refuses streams, and starts a task
    /// for the CONNECT stream's writes if none runs.
    fn after(self: &Arc<Self>, mut inner: MutexGuard<'_, StateInner>, writer: Writer) {
        let mut wake = Vec::new();
        let mut ended = false;
        while let Some(event) = inner.core.poll_event() {
            let interest = match event {
                Event::Ended => {
                    ended = true;
                    // Stored under the lock, so that a waiter that checks after this sees it.
                    self.gone.store(true, Ordering::Release);
                    Interest::ENDED
                }
                Event::Drained => {
                    self.log(|qlog, id| {
                        session_event(qlog, "quay-webtransport:session_drained", id, |data| {
                            data.str("initiator", initiator(false));
                        });
                    });
                    self.drained.store(true, Ordering::Release);
                    Interest::DRAINED
                }
                Event::Credit => Interest::CREDIT,
                Event::Arrived(Direction::Bidi) => Interest::ARRIVED_BIDI,
                Event::Arrived(Direction::Uni) => Interest::ARRIVED_UNI,
            };
            inner.waiters.wake(interest, &mut wake);
        }
        let refused: Vec<_> = std::iter::from_fn(|| inner.core.poll_refused()).collect();

        let write = writer == Writer::Task && inner.core.wants_transmit() && !inner.writing;
        if write {
            inner.writing = true;
        }
        let finishing = inner.core.is_finishing();
        let why = ended.then(|| end_of(&inner));
        drop(inner);
        if let Some(why) = why {
            self.publish_end(&why);
        }
        for waker in wake {
            waker.wake();
        }
        if ended {
            self.datagrams.stop();
            // Draft-16 §6: every stream of the session, used or not, is reset and stopped now.
            self.end_held();
        }
        for stream in refused {
            stream.refuse(WT_SESSION_GONE);
        }
        if write {
            self.spawn_writer(finishing);
        }
    }

    /// Writes the core's transmits in a task of its own: closing or giving credit must not
    /// wait for the peer's flow control. Outside a runtime (a session dropped there) it does
    /// nothing: the stream is dropped with the session, which resets it.
    fn spawn_writer(self: &Arc<Self>, finishing: bool) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if finishing && let Ok(send) = self.connect.try_lock() {
            // See `write_pending`; said at once when the stream is free, so that a GOAWAY
            // caused by the handles dropped right after the close is queued before the
            // close's writes.
            send.settle();
        }
        let state = self.clone();
        runtime.spawn(async move { state.write_pending().await });
    }

    /// Writes what the core has for the CONNECT stream, in order, until it has nothing.
    pub(crate) async fn write_pending(&self) {
        let mut send = self.connect.lock().await;
        loop {
            let (transmit, finishing) = {
                let mut inner = self.lock();
                match inner.core.poll_transmit() {
                    Some(transmit) => (transmit, inner.core.is_finishing()),
                    None => {
                        inner.writing = false;
                        return;
                    }
                }
            };
            if finishing {
                // We end our side (draft-16 §6): nothing the peer sends on the CONNECT stream
                // matters any more. Said before the writes, so that a GOAWAY it may cause
                // leaves in the same packet as they do.
                send.settle();
            }
            match transmit {
                Transmit::Capsules(capsules) => {
                    for capsule in capsules {
                        let capsule = capsule.to_capsule();
                        self.log(|qlog, id| crate::qlog::capsule(qlog, true, id, &capsule));
                        if send.send_capsule(&capsule).await.is_err() {
                            let mut inner = self.lock();
                            inner.core.handle_transmit_failed();
                            inner.writing = false;
                            return;
                        }
                    }
                }
                Transmit::Finish => {
                    let _ = send.finish();
                }
                Transmit::Reset(code) => send.reset(code),
            }
        }
    }

    /// The application closes the session; `false` if it had ended.
    pub(crate) fn close(self: &Arc<Self>, code: u32, reason: &str) -> bool {
        // Logged under the lock, so before the writer task logs the close's capsule.
        self.with_core(|core| {
            let closed = core.handle_close(code, reason);
            if closed {
                self.log_close(code, reason);
            }
            closed
        })
    }

    /// Every handle is gone; `false` if the session had ended.
    pub(crate) fn dropped(self: &Arc<Self>) -> bool {
        self.with_core(|core| {
            let closed = core.handle_dropped();
            if closed {
                self.log_close(0, "");
            }
            closed
        })
    }

    /// Asks the peer to drain the session.
    pub(crate) fn drain(self: &Arc<Self>) {
        self.with_core(SessionCore::handle_drain);
        self.log(|qlog, id| {
            session_event(qlog, "quay-webtransport:session_drained", id, |data| {
                data.str("initiator", initiator(true));
            });
        });
    }

    /// Writes an event to the connection's qlog, if it has one.
    pub(crate) fn log(&self, event: impl FnOnce(&Qlog, u64)) {
        if let Some(qlog) = &self.qlog {
            event(&qlog.0, qlog.1);
        }
    }

    /// `session_closed` for a close of ours.
    fn log_close(&self, code: u32, reason: &str) {
        self.log(|qlog, id| {
            session_event(qlog, "quay-webtransport:session_closed", id, |data| {
                data.str("initiator", initiator(true))
                    .u64("code", code.into())
                    .str("reason", reason);
            });
        });
    }

    /// Says that the session ended, and why: its qlog event, its trace event, its metrics.
    /// Once a session, out of the way of [`Self::after`]'s usual path (waking waiters).
    #[cold]
    #[inline(never)]
    fn publish_end(&self, why: &SessionError) {
        self.log_end(why);
        tracing::debug!(parent: &self.connection_span(), %why, "session ended");
        crate::metrics::session_ended(self.labels, why, self.started.elapsed());
    }

    /// `session_closed` for an end that was not our close (that one is logged by
    /// [`Self::log_close`]).
    fn log_end(&self, why: &SessionError) {
        self.log(|qlog, id| {
            let name = "quay-webtransport:session_closed";
            match why {
                SessionError::LocallyClosed => {}
                SessionError::PeerClosed { code, reason } => {
                    session_event(qlog, name, id, |data| {
                        data.str("initiator", initiator(false))
                            .u64("code", (*code).into())
                            .str("reason", reason);
                    })
                }
                SessionError::PeerDrained => session_event(qlog, name, id, |data| {
                    data.str("initiator", initiator(false))
                        .str("error", &why.to_string());
                }),
                _ => session_event(qlog, name, id, |data| {
                    data.str("error", &why.to_string());
                }),
            }
        });
    }

    /// Queues a routed stream for `accept_bi` / `accept_uni`; gives it back if the session has
    /// ended, or if it is one more than flow control allows (which ends the session).
    pub(crate) fn push(self: &Arc<Self>, arrival: ExtensionStream) -> Result<(), ExtensionStream> {
        let Some(direction) = direction(&arrival) else {
            return Err(arrival);
        };
        self.with_core(|core| core.handle_peer_stream(direction, arrival))
    }

    /// Whether flow control is on: writes and reads of the session's streams then go through
    /// [`SessionState::poll_data_credit`] and [`SessionState::on_read`].
    pub(crate) fn flow_on(&self) -> bool {
        self.flow_on
    }

    /// Gives back data credit that was taken and not used.
    pub(crate) fn refund_data_credit(self: &Arc<Self>, n: usize) {
        if n > 0 {
            self.with_core(|core| core.handle_refund(n));
        }
    }

    /// The application read `n` bytes of the peer's stream data: counts them, sends credit when
    /// due, and ends the session if the peer sent more than it was allowed.
    pub(crate) fn on_read(self: &Arc<Self>, n: usize) -> Result<(), StreamError> {
        if !self.flow_on {
            return Ok(());
        }
        self.with_core(|core| core.handle_read(n))
            .map_err(|()| StreamError::SessionGone)
    }

    pub(crate) fn set_connect_done(&self) {
        let mut wake = Vec::new();
        {
            let mut inner = self.lock();
            self.connect_done.store(true, Ordering::Release);
            inner.waiters.wake(Interest::CONNECT_DONE, &mut wake);
        }
        wake.into_iter().for_each(Waker::wake);
    }
}

/// Why the session ended, from the core; only once it has.
fn end_of(inner: &StateInner) -> SessionError {
    inner
        .core
        .end()
        .cloned()
        .map_or(SessionError::LocallyClosed, SessionError::from)
}

/// Which queue a peer's WebTransport stream goes to; `None` for a kind this crate does not
/// know.
fn direction(stream: &ExtensionStream) -> Option<Direction> {
    match stream {
        ExtensionStream::Bidi { .. } => Some(Direction::Bidi),
        ExtensionStream::Uni { .. } => Some(Direction::Uni),
        _ => None,
    }
}

/// Who writes what the core has for the CONNECT stream after an input (see
/// [`SessionState::after`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A task started for it, unless one runs already.
    Task,
    /// The caller, right after.
    Caller,
}

#[cfg(test)]
mod tests {
    use super::*;

    // What a session keeps while idle, less its streams and its core's allocations. It was 320
    // bytes (176 under the lock) when its waiters were three waker lists, a waker slot and a
    // `Notify`; one `Waiters` list made it 248 (136); the CONNECT stream's send-side stats
    // (frames by type, body and section sizes, the peer's stop code) add 80, the slots of the
    // session's streams, ended with it (draft-16 §6), 64 behind their own lock, and the
    // session's stats counters, its start time and its metrics' labels, 88; the connection's
    // qlog and the session ID, 8 (a box, none without a qlog).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_shared_state_stays_small() {
        assert!(
            size_of::<SessionState>() <= 488,
            "{}",
            size_of::<SessionState>()
        );
        assert!(
            size_of::<StateInner>() <= 136,
            "{}",
            size_of::<StateInner>()
        );
    }
}
