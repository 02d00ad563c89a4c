//! [`Waiters`]: the tasks waiting for one thing, kept under the lock of what they wait for.
//!
//! This is the one waker list of the crate's glue (the connection task waiting for bytes to
//! write, readers waiting for a stream's datagrams, a task waiting for extension streams).
//! Wait-for-a-change loops that re-check a condition use tokio's `Notify` instead; this type is
//! for places that are polled by hand (`poll_*` functions), where a future per waiter would cost
//! more than a waker.
//!
//! Chosen over `atomic-waker` (one waker only, and the datagram routes have several readers)
//! and `event-listener` (a heap node per listener, and a second lock beside the one these places
//! already hold): a list behind the caller's own lock is what they need, and it stays 24 bytes
//! while it holds one waker or none (checked by a `size_of` test).

use std::task::Waker;

/// How many wakers a list keeps; one more wakes them all (they poll again and re-register), so
/// a thing that sees waiter after waiter does not grow.
const MAX_WAITERS: usize = 8;

/// The tasks waiting for one thing. Registering the same task twice keeps one waker; taking
/// them hands every waker out, to wake once the lock is released.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// The usual single waiter, without an allocation.
    first: Option<Waker>,
    /// Further concurrent waiters; usually none, so it allocates nothing, and boxed, so that
    /// the list is two words smaller than with a `Vec` inline.
    #[allow(clippy::box_collection)] // On purpose: see above.
    more: Option<Box<Vec<Waker>>>,
}

impl Waiters {
    /// Registers `waker` to be woken by the next [`Waiters::take`].
    pub(crate) fn register(&mut self, waker: &Waker) {
        match &mut self.first {
            None => self.first = Some(waker.clone()),
            Some(first) if first.will_wake(waker) => {}
            Some(_) => {
                let more = self.more.get_or_insert_default();
                if more.iter().any(|kept| kept.will_wake(waker)) {
                    return;
                }
                if more.len() >= MAX_WAITERS {
                    more.drain(..).for_each(Waker::wake);
                }
                more.push(waker.clone());
            }
        }
    }

    /// Takes every registered waker, to wake once the lock is released.
    #[must_use = "the wakers must be woken"]
    pub(crate) fn take(&mut self) -> impl Iterator<Item = Waker> + use<> {
        let more = self.more.take().map(|more| *more);
        self.first
            .take()
            .into_iter()
            .chain(more.into_iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn stays_small() {
        // One waker or none, as most waiting places hold, in 24 bytes with no allocation.
        assert_eq!(size_of::<Waiters>(), 24);
        let (_, waker) = counter();
        let mut waiters = Waiters::default();
        waiters.register(&waker);
        assert!(waiters.more.is_none());
    }

    #[test]
    fn the_same_task_is_kept_once_and_each_is_woken_once() {
        let (a, wa) = counter();
        let (b, wb) = counter();
        let mut waiters = Waiters::default();
        waiters.register(&wa);
        waiters.register(&wb);
        waiters.register(&wa);
        waiters.register(&wb);
        waiters.take().for_each(Waker::wake);
        assert_eq!(a.0.load(Ordering::Relaxed), 1);
        assert_eq!(b.0.load(Ordering::Relaxed), 1);
        assert_eq!(waiters.take().count(), 0);
    }

    #[test]
    fn too_many_waiters_are_woken_rather_than_kept() {
        let counters: Vec<_> = (0..20).map(|_| counter()).collect();
        let mut waiters = Waiters::default();
        for (_, waker) in &counters {
            waiters.register(waker);
        }
        assert!(
            waiters
                .more
                .as_ref()
                .is_some_and(|more| more.len() <= MAX_WAITERS)
        );
        waiters.take().for_each(Waker::wake);
        // Every task was woken: either when the list overflowed, or by `take`.
        for (count, _) in &counters {
            assert!(count.0.load(Ordering::Relaxed) >= 1);
        }
    }
}
