//! [`Held`]: a session stream's QUIC handles, shared with its session so that the session's end
//! resets or stops them at once.
//!
//! Draft-16 §6: when a session ends, the endpoint resets the sending side and stops the
//! receiving side of every stream of that session with WT_SESSION_GONE. quinn resets or stops a
//! stream only through its handle, and the handle belongs to the application's stream object,
//! which may sit unused. So the handles live behind a lock the session can reach too: the
//! session keeps a weak reference ([`HeldRef`]) and, when it ends, takes every handle out and
//! resets or stops it. A stream whose handle was taken reports the session's end. Until then
//! each use of a stream takes this uncontended lock. An operation that waits on quinn leaves
//! its task's waker with the handle, and the session's end wakes it: a read or a write that
//! waits ends with the session rather than holding its stream past it, and needs no place
//! among the session's waiters.
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
use std::task::{Context, Poll, Waker};

use quay_transport::{RecvStream, SendStream};

use crate::error::StreamError;
use crate::proto::error::WT_SESSION_GONE;

/// The handles of one stream, both sides of a bidirectional one.
#[derive(Debug)]
pub(crate) struct Handles {
    send: Handle<SendStream>,
    recv: Handle<RecvStream>,
    /// Halves ([`Held`]s) not dropped yet: the session's slot is given back when none is left.
    halves: u8,
}

/// One side's handle, and the task waiting in an operation on it.
#[derive(Debug)]
pub(crate) struct Handle<S> {
    stream: Option<S>,
    /// Woken when the session takes the handle away, so that an operation that waits ends
    /// with the session (draft-16 §6) rather than when quinn next has news of the stream.
    waiting: Option<Waker>,
}

impl<S> Handle<S> {
    fn new(stream: Option<S>) -> Self {
        Self {
            stream,
            waiting: None,
        }
    }

    /// Takes the handle and the waiting task's waker out.
    fn take(&mut self) -> (Option<S>, Option<Waker>) {
        (self.stream.take(), self.waiting.take())
    }
}

// What a stream costs: one small allocation, whichever its kind (both handles and wakers).
const _: () = assert!(size_of::<Mutex<Handles>>() <= 112);
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
            send: Handle::new(None),
            recv: Handle::new(None),
            halves: 1,
        };
        S::of(&mut handles).stream = Some(stream);
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
            .stream
            .as_mut()
            .map(op)
            .ok_or(StreamError::SessionGone)
    }

    /// Polls one quinn operation on the stream, its error turned into ours by `error`;
    /// [`StreamError::SessionGone`] if the session took the stream away. While the operation
    /// waits, the session's end wakes it too.
    pub(crate) fn poll<T, E>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut S, &mut Context<'_>) -> Poll<Result<T, E>>,
        error: impl FnOnce(E) -> StreamError,
    ) -> Poll<Result<T, StreamError>> {
        let mut handles = lock(&self.shared);
        let slot = S::of(&mut handles);
        let Some(stream) = slot.stream.as_mut() else {
            return Poll::Ready(Err(StreamError::SessionGone));
        };
        match op(stream, cx) {
            Poll::Ready(result) => Poll::Ready(result.map_err(error)),
            Poll::Pending => {
                match &mut slot.waiting {
                    Some(waker) => waker.clone_from(cx.waker()),
                    none => *none = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
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
        let (taken, last) = {
            let mut handles = lock(&self.shared);
            handles.halves = handles.halves.saturating_sub(1);
            (S::of(&mut handles).take(), handles.halves == 0)
        };
        // Outside the lock: quinn takes the connection's lock to finish or stop it.
        drop(taken);
        last
    }
}

/// Both halves of a bidirectional stream, sharing one [`Handles`].
pub(crate) fn pair(send: SendStream, recv: RecvStream) -> (Held<SendStream>, Held<RecvStream>) {
    let shared = Arc::new(Mutex::new(Handles {
        send: Handle::new(Some(send)),
        recv: Handle::new(Some(recv)),
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
    fn of(handles: &mut Handles) -> &mut Handle<Self>;
}

impl Side for SendStream {
    fn end_with_session(&mut self) {
        let _ = self.reset(WT_SESSION_GONE.to_varint());
    }

    fn of(handles: &mut Handles) -> &mut Handle<Self> {
        &mut handles.send
    }
}

impl Side for RecvStream {
    fn end_with_session(&mut self) {
        let _ = self.stop(WT_SESSION_GONE.to_varint());
    }

    fn of(handles: &mut Handles) -> &mut Handle<Self> {
        &mut handles.recv
    }
}

/// What a session keeps of each of its streams, to end them with it.
#[derive(Debug)]
pub(crate) struct HeldRef(Weak<Mutex<Handles>>);

impl HeldRef {
    /// The session ended: takes the handles away, resets the sending side and stops the
    /// receiving side with WT_SESSION_GONE (draft-16 §6), and wakes the tasks waiting on
    /// them (they then fail with [`StreamError::SessionGone`]). Nothing if the stream is gone.
    pub(crate) fn end(self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let ((send, send_waiting), (recv, recv_waiting)) = {
            let mut handles = lock(&shared);
            (handles.send.take(), handles.recv.take())
        };
        if let Some(mut send) = send {
            send.end_with_session();
        }
        if let Some(mut recv) = recv {
            recv.end_with_session();
        }
        send_waiting
            .into_iter()
            .chain(recv_waiting)
            .for_each(Waker::wake);
    }
}
