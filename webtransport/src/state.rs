//! [`SessionState`]: what one HTTP/3 session's handles, its streams and its CONNECT stream's
//! reader share. It is the session's core (`crate::core::session`) behind a
//! `std::sync::Mutex`, the wakers of the tasks waiting on it, the CONNECT stream's sending
//! half and the session's datagrams; every method feeds the core one input and carries out
//! what it returns (wakes, the end's publication, refusals, writes on the CONNECT stream).
//!
//! It decides no protocol rule (the core does), reads nothing from the network (the CONNECT
//! stream's reader is `crate::connect_reader`, streams are routed by `crate::routes`) and has
//! no public API ([`crate::Session`] is that).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use quay_h3::stream::{Datagrams, ExtensionStream, SendHalf};
use tokio::sync::Notify;

use crate::core::session::{Credit, Event, SessionCore, Transmit, index};
use crate::error::{SessionError, StreamError};
use crate::flow::FlowControl;
use crate::proto::capsule::Direction;
use crate::proto::error::WT_SESSION_GONE;

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
    /// Wakes waiters when the session ends, is drained, or the peer gives stream credit.
    changed: Notify,
    /// The CONNECT stream's sending half, for capsules and FIN.
    connect: tokio::sync::Mutex<SendHalf>,
    /// The session's datagrams, stopped when it ends.
    datagrams: Datagrams,
}

#[derive(Debug)]
struct StateInner {
    core: SessionCore<ExtensionStream, quay_h3::ConnectionError>,
    /// Tasks waiting in `accept_bi` / `accept_uni`: woken by a stream of their kind or the end,
    /// not by every change of the session (as [`SessionState::changed`] waiters are).
    accept_wakers: [Vec<Waker>; 2],
    /// Streams waiting for the peer's data credit.
    send_wakers: Vec<Waker>,
    /// The CONNECT stream's reader, waiting for the session's end as well as for capsules.
    connect_reader: Option<Waker>,
    /// A task writes the core's transmits on the CONNECT stream.
    writing: bool,
}

impl SessionState {
    pub(crate) fn new(connect: SendHalf, datagrams: Datagrams, flow: Option<FlowControl>) -> Self {
        let core = SessionCore::new(flow);
        Self {
            gone: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            connect_done: AtomicBool::new(false),
            flow_on: core.flow_on(),
            inner: Mutex::new(StateInner {
                core,
                accept_wakers: [Vec::new(), Vec::new()],
                send_wakers: Vec::new(),
                connect_reader: None,
                writing: false,
            }),
            changed: Notify::new(),
            connect: tokio::sync::Mutex::new(connect),
            datagrams,
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
        let mut inner = self.lock();
        let value = input(&mut inner.core);
        self.after(inner);
        value
    }

    /// Carries out what the core asks for after an input, in its documented order: wakes
    /// waiters, publishes the end (stopping datagrams), refuses streams, and starts a task
    /// for the CONNECT stream's writes if none runs.
    fn after(self: &Arc<Self>, mut inner: MutexGuard<'_, StateInner>) {
        let mut wake = Vec::new();
        let mut ended = false;
        let mut changed = false;
        while let Some(event) = inner.core.poll_event() {
            match event {
                Event::Ended => {
                    ended = true;
                    let [bi, uni] = &mut inner.accept_wakers;
                    wake.extend(bi.drain(..).chain(uni.drain(..)));
                    wake.append(&mut inner.send_wakers);
                    wake.extend(inner.connect_reader.take());
                }
                Event::Drained => {
                    self.drained.store(true, Ordering::Release);
                    changed = true;
                }
                Event::Credit => {
                    wake.append(&mut inner.send_wakers);
                    changed = true;
                }
                Event::Arrived(direction) => {
                    wake.append(&mut inner.accept_wakers[index(direction)]);
                }
            }
        }
        let refused: Vec<_> = std::iter::from_fn(|| inner.core.poll_refused()).collect();
        let write = inner.core.wants_transmit() && !inner.writing;
        if write {
            inner.writing = true;
        }
        let finishing = inner.core.is_finishing();
        drop(inner);
        if ended {
            self.gone.store(true, Ordering::Release);
            changed = true;
        }
        for waker in wake {
            waker.wake();
        }
        if changed {
            self.changed.notify_waiters();
        }
        if ended {
            self.datagrams.stop();
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
                        if send.send_capsule(&capsule.to_capsule()).await.is_err() {
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
        self.with_core(|core| core.handle_close(code, reason))
    }

    /// Every handle is gone; `false` if the session had ended.
    pub(crate) fn dropped(self: &Arc<Self>) -> bool {
        self.with_core(SessionCore::handle_dropped)
    }

    /// Asks the peer to drain the session.
    pub(crate) fn drain(self: &Arc<Self>) {
        self.with_core(SessionCore::handle_drain);
    }

    /// Queues a routed stream for `accept_bi` / `accept_uni`; gives it back if the session has
    /// ended, or if it is one more than flow control allows (which ends the session).
    pub(crate) fn push(self: &Arc<Self>, arrival: ExtensionStream) -> Result<(), ExtensionStream> {
        let Some(direction) = direction(&arrival) else {
            return Err(arrival);
        };
        self.with_core(|core| core.handle_peer_stream(direction, arrival))
    }

    /// Waits for one of the peer's stream credits of `direction`, when flow control is on.
    pub(crate) async fn stream_credit(
        self: &Arc<Self>,
        direction: Direction,
    ) -> Result<(), SessionError> {
        if !self.flow_on {
            return Ok(());
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (credit, end) = {
                let mut inner = self.lock();
                let credit = inner.core.poll_open(direction);
                let end = inner.core.end().cloned();
                self.after(inner);
                (credit, end)
            };
            match credit {
                Credit::Ready(()) => return Ok(()),
                Credit::Ended => return Err(end.map_or(SessionError::LocallyClosed, Into::into)),
                Credit::Blocked => notified.await,
            }
        }
    }

    /// Whether flow control is on: writes and reads of the session's streams then go through
    /// [`SessionState::poll_data_credit`] and [`SessionState::on_read`].
    pub(crate) fn flow_on(&self) -> bool {
        self.flow_on
    }

    /// Takes up to `want` bytes of the peer's data credit, waiting while there is none.
    pub(crate) fn poll_data_credit(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<Result<usize, StreamError>> {
        let mut inner = self.lock();
        let credit = inner.core.poll_reserve(want);
        if credit == Credit::Blocked {
            inner.send_wakers.push(cx.waker().clone());
        }
        self.after(inner);
        match credit {
            Credit::Ready(n) => Poll::Ready(Ok(n)),
            Credit::Blocked => Poll::Pending,
            Credit::Ended => Poll::Ready(Err(StreamError::SessionGone)),
        }
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

    /// Waits for the next routed stream of `direction`, or the end of the session.
    pub(crate) async fn next_arrival(
        self: &Arc<Self>,
        direction: Direction,
    ) -> Result<ExtensionStream, SessionError> {
        poll_fn(|cx| self.poll_arrival(cx, direction)).await
    }

    fn poll_arrival(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<Result<ExtensionStream, SessionError>> {
        let mut inner = self.lock();
        if let Some(end) = inner.core.end() {
            return Poll::Ready(Err(end.clone().into()));
        }
        let Some(arrival) = inner.core.poll_accept(direction) else {
            // Registered under the lock that `push` takes, so no stream is missed.
            let wakers = &mut inner.accept_wakers[index(direction)];
            if !wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                // Usually one task accepts: room for exactly one (a Vec's first allocation
                // would hold four), kept while the session lives.
                if wakers.capacity() == 0 {
                    wakers.reserve_exact(1);
                }
                wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        };
        // Accepting may make stream credit due.
        self.after(inner);
        Poll::Ready(Ok(arrival))
    }

    /// Waits until `check`, run at first and after every change, gives a value.
    async fn wait_for<T>(&self, mut check: impl FnMut(&mut StateInner) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = check(&mut self.lock()) {
                return value;
            }
            notified.await;
        }
    }

    pub(crate) fn set_connect_done(&self) {
        self.connect_done.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    pub(crate) async fn connect_done(&self) {
        self.wait_for(|_| self.connect_done.load(Ordering::Acquire).then_some(()))
            .await;
    }

    pub(crate) async fn ended(&self) -> SessionError {
        self.wait_for(|inner| {
            if !self.is_gone() {
                return None;
            }
            inner.core.end().cloned().map(SessionError::from)
        })
        .await
    }

    /// Ready once the session has ended; for the CONNECT stream's reader (one waker).
    pub(crate) fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.core.end().is_some() {
            return Poll::Ready(());
        }
        if !inner
            .connect_reader
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            inner.connect_reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(crate) async fn drained(&self) {
        self.wait_for(|_| self.is_drained().then_some(())).await;
    }
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
