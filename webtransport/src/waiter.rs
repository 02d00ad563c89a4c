//! [`Waiters`]: the one list of tasks waiting on a session, each for the changes it names
//! ([`Interest`]), kept under the session's lock, so that a waiter checks its condition and
//! registers under the same lock that a change is made and announced under (no wake-up is
//! lost).
//!
//! Each waiter owns its place ([`WaitKey`]) and gives it back when it is done or dropped, so a
//! future dropped while it waits leaves nothing behind; a change wakes only the waiters that
//! asked for it. It does not know what the changes mean: `crate::state` does.

use std::task::Waker;

/// What a waiter waits for: a set of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interest(u8);

impl Interest {
    /// The session ended.
    pub(crate) const ENDED: Self = Self(1);
    /// The peer drained the session.
    pub(crate) const DRAINED: Self = Self(1 << 1);
    /// Send credit may be back.
    pub(crate) const CREDIT: Self = Self(1 << 2);
    /// A bidirectional stream waits to be accepted.
    pub(crate) const ARRIVED_BIDI: Self = Self(1 << 3);
    /// A unidirectional stream waits to be accepted.
    pub(crate) const ARRIVED_UNI: Self = Self(1 << 4);
    /// The CONNECT stream's reader is done.
    pub(crate) const CONNECT_DONE: Self = Self(1 << 5);

    /// Both sets.
    pub(crate) const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    fn meets(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

/// A waiter's place in [`Waiters`]; [`WaitKey::NONE`] until it first waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitKey(u32);

impl WaitKey {
    /// Not registered.
    pub(crate) const NONE: Self = Self(u32::MAX);
}

#[derive(Debug)]
enum Entry {
    /// Nobody's.
    Free,
    /// A waiter's, waiting.
    Waiting(Interest, Waker),
    /// A waiter's, woken and not yet polled again.
    Woken,
}

/// The waiters of one session.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    /// Empty, allocating nothing, while nobody waits.
    entries: Vec<Entry>,
}

impl Waiters {
    /// Registers `waker` at `key` for `interest` (taking a free place if `key` has none);
    /// replaces what the key had.
    pub(crate) fn register(&mut self, key: &mut WaitKey, interest: Interest, waker: &Waker) {
        if let Some(entry) = self.entries.get_mut(key.0 as usize) {
            if let Entry::Waiting(had, old) = entry
                && *had == interest
                && old.will_wake(waker)
            {
                return;
            }
            *entry = Entry::Waiting(interest, waker.clone());
            return;
        }
        let entry = Entry::Waiting(interest, waker.clone());
        match self.entries.iter().position(|e| matches!(e, Entry::Free)) {
            Some(i) => {
                self.entries[i] = entry;
                *key = WaitKey(i as u32);
            }
            None => {
                if self.entries.is_empty() {
                    // A session usually has one or two waiters at a time (an acceptor, the
                    // CONNECT stream's reader): room for two, not the four a Vec would take.
                    self.entries.reserve_exact(2);
                }
                // Fewer waiters than tasks: far below u32::MAX.
                *key = WaitKey(self.entries.len() as u32);
                self.entries.push(entry);
            }
        }
    }

    /// Gives back `key`'s place. Idempotent.
    pub(crate) fn remove(&mut self, key: &mut WaitKey) {
        let i = key.0 as usize;
        *key = WaitKey::NONE;
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        *entry = Entry::Free;
        while matches!(self.entries.last(), Some(Entry::Free)) {
            self.entries.pop();
        }
        if self.entries.is_empty() {
            // An idle session keeps no buffer.
            self.entries = Vec::new();
        }
    }

    /// Takes, into `wake`, the wakers of those waiting for any of `interest`; to be woken
    /// once the lock is released.
    pub(crate) fn wake(&mut self, interest: Interest, wake: &mut Vec<Waker>) {
        for entry in &mut self.entries {
            if let Entry::Waiting(wants, _) = entry
                && wants.meets(interest)
                && let Entry::Waiting(_, waker) = std::mem::replace(entry, Entry::Woken)
            {
                wake.push(waker);
            }
        }
    }

    /// How many places are taken.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| !matches!(e, Entry::Free))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

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

    fn wake(waiters: &mut Waiters, interest: Interest) -> usize {
        let mut woken = Vec::new();
        waiters.wake(interest, &mut woken);
        let n = woken.len();
        woken.into_iter().for_each(Waker::wake);
        n
    }

    #[test]
    fn a_change_wakes_only_who_asked_for_it() {
        let mut waiters = Waiters::default();
        let (accepts, accept) = counter();
        let (ends, end) = counter();
        let (mut a, mut b) = (WaitKey::NONE, WaitKey::NONE);
        waiters.register(&mut a, Interest::ARRIVED_BIDI.or(Interest::ENDED), &accept);
        waiters.register(&mut b, Interest::ENDED, &end);
        assert_eq!(wake(&mut waiters, Interest::ARRIVED_UNI), 0);
        assert_eq!(wake(&mut waiters, Interest::ARRIVED_BIDI), 1);
        assert_eq!(accepts.0.load(Ordering::Relaxed), 1);
        // Woken once: it registers again to be woken again.
        assert_eq!(wake(&mut waiters, Interest::ENDED), 1);
        assert_eq!(ends.0.load(Ordering::Relaxed), 1);
        assert_eq!(waiters.len(), 2);
    }

    #[test]
    fn a_place_is_kept_until_given_back_and_then_reused() {
        let mut waiters = Waiters::default();
        let (_, waker) = counter();
        let (mut a, mut b) = (WaitKey::NONE, WaitKey::NONE);
        waiters.register(&mut a, Interest::CREDIT, &waker);
        waiters.register(&mut b, Interest::CREDIT, &waker);
        // Registering again keeps the place.
        let before = a;
        waiters.register(&mut a, Interest::ENDED, &waker);
        assert_eq!(a, before);
        assert_eq!(wake(&mut waiters, Interest::CREDIT), 1);
        waiters.remove(&mut a);
        assert_eq!(a, WaitKey::NONE);
        let mut c = WaitKey::NONE;
        waiters.register(&mut c, Interest::CREDIT, &waker);
        assert_eq!(c, before);
        waiters.remove(&mut b);
        waiters.remove(&mut c);
        waiters.remove(&mut c);
        assert_eq!(waiters.len(), 0);
        assert_eq!(waiters.entries.capacity(), 0);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_list_is_small() {
        // What a session keeps for its waiters while nobody waits: one empty Vec, where three
        // waker lists, a waker slot and a `Notify` took 120 bytes. A waiter takes one entry, a
        // waker's size and no more; a stream keeps a 4-byte key.
        assert_eq!(size_of::<Waiters>(), 24);
        assert_eq!(size_of::<Entry>(), 24);
        assert_eq!(size_of::<WaitKey>(), 4);
    }
}
