//! [`Held`]: a session stream's QUIC handle, shared with its session so that the session's end
//! resets or stops it at once.
//!
//! Draft-16 §6: when a session ends, the endpoint resets the sending side and stops the
//! receiving side of every stream of that session with WT_SESSION_GONE. quinn resets or stops a
//! stream only through its handle, and the handle belongs to the application's stream object,
//! which may sit unused. So the handle lives behind a lock the session can reach too: the
//! session keeps a weak reference ([`HeldRef`]) and, when it ends, takes every handle out and
//! resets or stops it. A stream whose handle was taken reports the session's end. Until then
//! each use of a stream takes this uncontended lock.
//!
//! This module does not decide when a session ends (the session core does) or what a stream
//! operation means (the stream types do).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use quay_transport::{RecvStream, SendStream};

use crate::error::StreamError;
use crate::proto::error::WT_SESSION_GONE;

/// A QUIC stream handle the session can take away; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Held<S>(Arc<Mutex<Option<S>>>);

impl<S> Held<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self(Arc::new(Mutex::new(Some(stream))))
    }

    fn lock(&self) -> MutexGuard<'_, Option<S>> {
        // A panic while holding the lock leaves a plain handle behind; keep going.
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Runs `op` on the stream; [`StreamError::SessionGone`] if the session took it away.
    pub(crate) fn with<T>(&self, op: impl FnOnce(&mut S) -> T) -> Result<T, StreamError> {
        self.lock().as_mut().map(op).ok_or(StreamError::SessionGone)
    }

    /// Polls one quinn operation on the stream, its error turned into ours by `error`;
    /// [`StreamError::SessionGone`] if the session took the stream away.
    pub(crate) fn poll<T, E>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut S, &mut Context<'_>) -> Poll<Result<T, E>>,
        error: impl FnOnce(E) -> StreamError,
    ) -> Poll<Result<T, StreamError>> {
        match self.with(|stream| op(stream, cx)) {
            Ok(Poll::Ready(result)) => Poll::Ready(result.map_err(error)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(gone) => Poll::Ready(Err(gone)),
        }
    }
}

impl<S: EndsWithSession> Held<S> {
    /// Ends the stream as its session's end does (nothing if the session took it already).
    pub(crate) fn end_with_session(&self) {
        let _ = self.with(S::end_with_session);
    }

    /// A weak reference for the session.
    pub(crate) fn for_session(&self) -> HeldRef {
        S::session_ref(Arc::downgrade(&self.0))
    }
}

/// One side of a session's stream, as the session's end ends it (draft-16 §6): a sending side
/// is reset, a receiving side stopped, with WT_SESSION_GONE.
pub(crate) trait EndsWithSession: Sized {
    /// Resets or stops the stream with WT_SESSION_GONE.
    fn end_with_session(&mut self);

    /// What the session keeps of this side.
    fn session_ref(held: Weak<Mutex<Option<Self>>>) -> HeldRef;
}

impl EndsWithSession for SendStream {
    fn end_with_session(&mut self) {
        let _ = self.reset(WT_SESSION_GONE.to_varint());
    }

    fn session_ref(held: Weak<Mutex<Option<Self>>>) -> HeldRef {
        HeldRef::Send(held)
    }
}

impl EndsWithSession for RecvStream {
    fn end_with_session(&mut self) {
        let _ = self.stop(WT_SESSION_GONE.to_varint());
    }

    fn session_ref(held: Weak<Mutex<Option<Self>>>) -> HeldRef {
        HeldRef::Recv(held)
    }
}

/// What a session keeps of each of its streams, to end them with it.
#[derive(Debug)]
pub(crate) enum HeldRef {
    /// A sending side: reset when the session ends.
    Send(Weak<Mutex<Option<SendStream>>>),
    /// A receiving side: stopped when the session ends.
    Recv(Weak<Mutex<Option<RecvStream>>>),
}

impl HeldRef {
    /// The session ended: takes the handle away and resets (send) or stops (receive) the
    /// stream with WT_SESSION_GONE (draft-16 §6). Nothing if the stream object is gone.
    pub(crate) fn end(self) {
        match self {
            Self::Send(weak) => end(&weak),
            Self::Recv(weak) => end(&weak),
        }
    }
}

fn end<S: EndsWithSession>(held: &Weak<Mutex<Option<S>>>) {
    if let Some(mut stream) = held.upgrade().and_then(|held| take(&held)) {
        stream.end_with_session();
    }
}

fn take<S>(held: &Mutex<Option<S>>) -> Option<S> {
    held.lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .take()
}
