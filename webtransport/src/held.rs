//! [`Held`]: a session stream's QUIC handles, shared with its session so that the session's end
//! resets or stops them at once.
//!
//! Draft-16 §6: when a session ends, the endpoint resets the sending side and stops the
//! receiving side of every stream of that session with WT_SESSION_GONE. quinn resets or stops a
//! stream only through its handle, and the handle belongs to the application's stream object,
//! which may sit unused. So the handles live behind a lock the session can reach too: the
//! session keeps a weak reference ([`HeldRef`]) and, when it ends, takes every handle out and
//! resets or stops it. A stream whose handle was taken reports the session's end. Until then
//! each use of a stream takes this uncontended lock.
//!
//! Both halves of a bidirectional stream share one [`Handles`]: one allocation, one weak
//! reference in the session and one slot, given back when the last half is dropped. A half
//! that is dropped first gives up its own handle at once (so quinn finishes or stops that side
//! then), and the session still ends the other. A unidirectional stream has a [`Handles`] with
//! one side.
//!
//! This module does not decide when a session ends (the session core does) or what a stream
//! operation means (the stream types do).

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use quay_transport::{RecvStream, SendStream};

use crate::error::StreamError;
use crate::proto::error::WT_SESSION_GONE;

/// The handles of one stream, both sides of a bidirectional one.
#[derive(Debug)]
pub(crate) struct Handles {
    send: Option<SendStream>,
    recv: Option<RecvStream>,
    /// Halves ([`Held`]s) not dropped yet: the session's slot is given back when none is left.
    halves: u8,
}

// What a stream costs the session: one small allocation, whichever its kind.
const _: () = assert!(size_of::<Mutex<Handles>>() <= 80);
// The session's list of streams holds one word per stream.
const _: () = assert!(size_of::<Option<HeldRef>>() == size_of::<usize>());

type Shared = Arc<Mutex<Handles>>;

fn lock(handles: &Mutex<Handles>) -> MutexGuard<'_, Handles> {
    // A panic while holding the lock leaves plain handles behind; keep going.
    handles.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// One side of a stream's QUIC handles, which the session can take away; see the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct Held<S> {
    shared: Shared,
    side: PhantomData<fn() -> S>,
}

impl<S: Side> Held<S> {
    /// A unidirectional stream's handle.
    pub(crate) fn new(stream: S) -> Self {
        let mut handles = Handles {
            send: None,
            recv: None,
            halves: 1,
        };
        *S::of(&mut handles) = Some(stream);
        Self::on(Arc::new(Mutex::new(handles)))
    }

    fn on(shared: Shared) -> Self {
        Self {
            shared,
            side: PhantomData,
        }
    }

    /// Runs `op` on the stream; [`StreamError::SessionGone`] if the session took it away.
    pub(crate) fn with<T>(&self, op: impl FnOnce(&mut S) -> T) -> Result<T, StreamError> {
        S::of(&mut lock(&self.shared))
            .as_mut()
            .map(op)
            .ok_or(StreamError::SessionGone)
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

    /// Ends this side as its session's end does (nothing if the session took it already).
    pub(crate) fn end_with_session(&self) {
        let _ = self.with(S::end_with_session);
    }

    /// A weak reference for the session, which ends every side of the stream.
    pub(crate) fn for_session(&self) -> HeldRef {
        HeldRef(Arc::downgrade(&self.shared))
    }

    /// This half is being dropped: drops its handle now (quinn finishes or stops a dropped
    /// handle as usual). True if it was the stream's last half, whose session slot is free.
    pub(crate) fn drop_half(&self) -> bool {
        let (stream, last) = {
            let mut handles = lock(&self.shared);
            handles.halves = handles.halves.saturating_sub(1);
            (S::of(&mut handles).take(), handles.halves == 0)
        };
        // Outside the lock: quinn takes the connection's lock to finish or stop it.
        drop(stream);
        last
    }
}

/// Both halves of a bidirectional stream, sharing one [`Handles`].
pub(crate) fn pair(send: SendStream, recv: RecvStream) -> (Held<SendStream>, Held<RecvStream>) {
    let shared = Arc::new(Mutex::new(Handles {
        send: Some(send),
        recv: Some(recv),
        halves: 2,
    }));
    (Held::on(shared.clone()), Held::on(shared))
}

/// One side of a session's stream, as the session's end ends it (draft-16 §6): a sending side
/// is reset, a receiving side stopped, with WT_SESSION_GONE.
pub(crate) trait Side: Sized {
    /// Resets or stops the stream with WT_SESSION_GONE.
    fn end_with_session(&mut self);

    /// This side's place in a stream's handles.
    fn of(handles: &mut Handles) -> &mut Option<Self>;
}

impl Side for SendStream {
    fn end_with_session(&mut self) {
        let _ = self.reset(WT_SESSION_GONE.to_varint());
    }

    fn of(handles: &mut Handles) -> &mut Option<Self> {
        &mut handles.send
    }
}

impl Side for RecvStream {
    fn end_with_session(&mut self) {
        let _ = self.stop(WT_SESSION_GONE.to_varint());
    }

    fn of(handles: &mut Handles) -> &mut Option<Self> {
        &mut handles.recv
    }
}

/// What a session keeps of each of its streams, to end them with it.
#[derive(Debug)]
pub(crate) struct HeldRef(Weak<Mutex<Handles>>);

impl HeldRef {
    /// The session ended: takes the handles away and resets the sending side and stops the
    /// receiving side with WT_SESSION_GONE (draft-16 §6). Nothing if the stream is gone.
    pub(crate) fn end(self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let (send, recv) = {
            let mut handles = lock(&shared);
            (handles.send.take(), handles.recv.take())
        };
        if let Some(mut send) = send {
            send.end_with_session();
        }
        if let Some(mut recv) = recv {
            recv.end_with_session();
        }
    }
}
