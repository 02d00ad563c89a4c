//! The session's waits: every wait on the session's core (stream credit, data credit, the next
//! routed stream, the session's end or drain, the CONNECT stream's reader being done) goes
//! through one loop, `SessionState::wait` (`poll_wait` when polled by hand), which checks under
//! the lock and otherwise registers the caller among the waiters until a change it waits for.
//!
//! It wakes no one and publishes nothing: the events that wake waiters are carried out by
//! `SessionState::after` and `SessionState::set_connect_done`, in [`super`]; the wait list itself
//! is `crate::waiter`'s.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use quay_h3::stream::ExtensionStream;

use super::{SessionState, StateInner, Writer, end_of};
use crate::core::session::Credit;
use crate::error::{SessionError, StreamError};
use crate::proto::capsule::Direction;
use crate::waiter::{Interest, WaitKey};

impl SessionState {
    /// Waits for one of the peer's stream credits of `direction`, when flow control is on.
    pub(crate) async fn stream_credit(
        self: &Arc<Self>,
        direction: Direction,
    ) -> Result<(), SessionError> {
        if !self.flow_on {
            return Ok(());
        }
        let wanted = Interest::CREDIT.or(Interest::ENDED);
        self.wait(wanted, |inner| match inner.core.poll_open(direction) {
            Credit::Ready(()) => Some(Ok(())),
            Credit::Ended => Some(Err(end_of(inner))),
            Credit::Blocked => None,
        })
        .await
    }

    /// Takes up to `want` bytes of the peer's data credit, waiting while there is none; `key`
    /// is the caller's place among the waiters, to give back with [`SessionState::forget`].
    pub(crate) fn poll_data_credit(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        key: &mut WaitKey,
        want: usize,
    ) -> Poll<Result<usize, StreamError>> {
        let wanted = Interest::CREDIT.or(Interest::ENDED);
        self.poll_wait(cx, key, wanted, |inner| {
            match inner.core.poll_reserve(want) {
                Credit::Ready(n) => Some(Ok(n)),
                Credit::Ended => Some(Err(StreamError::SessionGone)),
                Credit::Blocked => None,
            }
        })
    }

    /// Waits for the next routed stream of `direction`, or the end of the session.
    pub(crate) async fn next_arrival(
        self: &Arc<Self>,
        direction: Direction,
    ) -> Result<ExtensionStream, SessionError> {
        let arrived = match direction {
            Direction::Bidi => Interest::ARRIVED_BIDI,
            Direction::Uni => Interest::ARRIVED_UNI,
        };
        self.wait(arrived.or(Interest::ENDED), |inner| {
            if inner.core.end().is_some() {
                return Some(Err(end_of(inner)));
            }
            // Accepting may make stream credit due: `poll_wait` carries that out.
            inner.core.poll_accept(direction).map(Ok)
        })
        .await
    }

    /// Waits until `check`, run under the lock at first and after each change in `interest`,
    /// gives a value. The only wait loop of the session: the others are built on it.
    async fn wait<T>(
        self: &Arc<Self>,
        interest: Interest,
        mut check: impl FnMut(&mut StateInner) -> Option<T>,
    ) -> T {
        let mut waiting = Registration {
            state: self,
            key: WaitKey::NONE,
        };
        poll_fn(|cx| self.poll_wait(cx, &mut waiting.key, interest, &mut check)).await
    }

    /// [`SessionState::wait`], polled: `check` under the lock; if it gives nothing, registers
    /// at `key` for `interest`, else gives `key`'s place back. Then carries out what the core
    /// asks for (a check may take credit or a stream).
    fn poll_wait<T>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        key: &mut WaitKey,
        interest: Interest,
        check: impl FnOnce(&mut StateInner) -> Option<T>,
    ) -> Poll<T> {
        let mut inner = self.lock();
        let value = check(&mut inner);
        match value {
            Some(_) => inner.waiters.remove(key),
            None => inner.waiters.register(key, interest, cx.waker()),
        }
        self.after(inner, Writer::Task);
        match value {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }

    /// Gives back `key`'s place among the waiters, if it has one.
    pub(crate) fn forget(&self, key: &mut WaitKey) {
        if *key != WaitKey::NONE {
            self.lock().waiters.remove(key);
        }
    }

    pub(crate) async fn connect_done(self: &Arc<Self>) {
        self.wait(Interest::CONNECT_DONE, |_| {
            self.connect_done.load(Ordering::Acquire).then_some(())
        })
        .await;
    }

    pub(crate) async fn ended(self: &Arc<Self>) -> SessionError {
        self.wait(Interest::ENDED, |inner| {
            inner.core.end().is_some().then(|| end_of(inner))
        })
        .await
    }

    /// Ready once the session has ended; for the CONNECT stream's reader, whose place among
    /// the waiters is `key`.
    pub(crate) fn poll_ended(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        key: &mut WaitKey,
    ) -> Poll<()> {
        self.poll_wait(cx, key, Interest::ENDED, |inner| {
            inner.core.end().map(|_| ())
        })
    }

    pub(crate) async fn drained(self: &Arc<Self>) {
        self.wait(Interest::DRAINED, |_| self.is_drained().then_some(()))
            .await;
    }
}

/// A waiter's place, given back when its wait is over or dropped.
struct Registration<'a> {
    state: &'a SessionState,
    key: WaitKey,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.state.forget(&mut self.key);
    }
}
