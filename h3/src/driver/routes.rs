//! [`DatagramRoutes`]: the HTTP datagrams of one connection waiting for their request streams
//! (RFC 9297 §2.1), and the readers waiting for them. Plain data kept behind the lock of
//! [`super::shared::Shared`]: the time a datagram arrived is an input, readers are [`Waiters`],
//! and every method hands back the wakers to wake once the lock is released.
//!
//! It does not read datagrams from quinn or decode them ([`super::datagrams`] does).

use std::collections::VecDeque;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::waiter::Waiters;

/// How many datagrams wait per request stream before new ones are dropped.
const DATAGRAM_QUEUE: usize = 256;
/// How many datagrams for streams we have not seen yet wait, per connection, for their stream
/// (RFC 9297 §2.1: a datagram can overtake the request that creates its stream). The oldest
/// goes first.
const EARLY_DATAGRAMS: usize = 16;
/// How long such a datagram waits, at least; more on a slow path (three round trips): RFC 9297
/// §2.1 asks for "on the order of a round trip".
pub(super) const EARLY_DATAGRAM_AGE: Duration = Duration::from_millis(50);

/// The datagrams waiting for one request stream, and the tasks that wait for them.
#[derive(Debug, Default)]
struct Route {
    queue: VecDeque<Bytes>,
    readers: Waiters,
    /// Datagrams dropped because the queue was full.
    dropped: u64,
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

/// What [`DatagramRoutes::pop`] found for a reader.
#[derive(Debug)]
pub(super) enum Popped {
    /// A datagram for the reader.
    Datagram(Bytes),
    /// Nothing yet; the reader is registered to be woken when one is queued.
    Empty,
    /// The stream is not routed (any more): the reader sees the end.
    Gone,
}

/// The datagrams of one connection by request stream; see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct DatagramRoutes {
    routes: Routes,
    /// The connection is gone: nothing is routed any more.
    ended: bool,
    /// Datagrams for streams without a route yet, oldest first: stream ID, arrival, payload.
    /// Boxed, and dropped once empty: most connections never have one, and the box is one
    /// word where the queue would be four.
    #[allow(clippy::box_collection)] // On purpose: see above.
    early: Option<Box<VecDeque<(u64, Instant, Bytes)>>>,
}

impl DatagramRoutes {
    /// Starts routing datagrams for `stream_id`, taking the early ones for it that are at most
    /// `max_age` old at `now`. Nothing is allocated for the stream until its first datagram.
    pub(super) fn register(&mut self, stream_id: u64, now: Instant, max_age: Duration) {
        // After the end there is nothing to route: the receiver sees the end at once.
        if self.ended {
            return;
        }
        let mut route = Route::default();
        if let Some(early) = &mut self.early {
            early.retain(|(id, arrived, payload)| {
                let fresh = now.duration_since(*arrived) <= max_age;
                if *id == stream_id && fresh {
                    route.queue.push_back(payload.clone());
                }
                *id != stream_id && fresh
            });
            if early.is_empty() {
                self.early = None;
            }
        }
        self.routes.insert(stream_id, route);
    }

    /// Stops routing datagrams for `stream_id`; returns its readers, who see the end.
    #[must_use = "the wakers must be woken"]
    pub(super) fn unregister(&mut self, stream_id: u64) -> impl Iterator<Item = Waker> + use<> {
        self.routes
            .remove(stream_id)
            .into_iter()
            .flat_map(|mut route| route.readers.take())
    }

    /// The next datagram for `stream_id`, or registers `waker` to be woken when one is queued.
    pub(super) fn pop(&mut self, stream_id: u64, waker: &Waker) -> Popped {
        let Some(route) = self.routes.get_mut(stream_id) else {
            return Popped::Gone;
        };
        if let Some(datagram) = route.queue.pop_front() {
            return Popped::Datagram(datagram);
        }
        route.readers.register(waker);
        // Idle: keep no buffer beyond a few slots.
        if route.queue.capacity() > 8 {
            route.queue = VecDeque::new();
        }
        Popped::Empty
    }

    /// Queues a datagram that arrived at `now` for `stream_id`: for its route (dropped beyond
    /// a full queue), or, for a stream without a route yet, among the early ones (the oldest
    /// goes beyond their bound). Returns the readers to wake.
    #[must_use = "the wakers must be woken"]
    pub(super) fn push(
        &mut self,
        stream_id: u64,
        now: Instant,
        payload: Bytes,
    ) -> impl Iterator<Item = Waker> + use<> {
        let mut woken = Waiters::default();
        match self.routes.get_mut(stream_id) {
            Some(route) if route.queue.len() < DATAGRAM_QUEUE => {
                route.queue.push_back(payload);
                woken = std::mem::take(&mut route.readers);
            }
            Some(route) => route.dropped += 1,
            None if self.ended => {}
            None => {
                let early = self.early.get_or_insert_default();
                if early.len() >= EARLY_DATAGRAMS {
                    early.pop_front();
                }
                early.push_back((stream_id, now, payload));
            }
        }
        woken.take()
    }

    /// The connection is gone: nothing more is routed, and every reader sees the end once its
    /// queue is empty. Returns the readers to wake.
    #[must_use = "the wakers must be woken"]
    pub(super) fn end(&mut self) -> impl Iterator<Item = Waker> + use<> {
        self.ended = true;
        self.early = None;
        std::mem::take(&mut self.routes)
            .0
            .into_iter()
            .flat_map(|(_, mut route)| route.readers.take())
    }

    /// How many datagrams for `stream_id` were dropped because its queue was full.
    pub(super) fn dropped(&mut self, stream_id: u64) -> u64 {
        self.routes
            .get_mut(stream_id)
            .map_or(0, |route| route.dropped)
    }

    /// Whether the connection is gone.
    pub(super) fn is_ended(&self) -> bool {
        self.ended
    }
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

    /// RFC 9297 §2.1: a datagram that overtakes its request waits for it, a little while.
    #[test]
    fn early_datagrams_wait_for_their_stream_for_a_while() {
        let start = Instant::now();
        let age = EARLY_DATAGRAM_AGE;
        let mut routes = DatagramRoutes::default();
        assert_eq!(routes.push(4, start, Bytes::from("early")).count(), 0);
        assert_eq!(routes.push(8, start, Bytes::from("stale")).count(), 0);
        routes.register(4, start + age, age);
        let waker = Waker::noop();
        assert!(matches!(routes.pop(4, waker), Popped::Datagram(d) if d == "early"));
        assert!(matches!(routes.pop(4, waker), Popped::Empty));
        routes.register(8, start + age * 2, age);
        assert!(matches!(routes.pop(8, waker), Popped::Empty), "too old");
        assert_eq!(routes.end().count(), 2, "both readers see the end");
        assert!(matches!(routes.pop(4, waker), Popped::Gone));
        assert_eq!(routes.push(12, start, Bytes::new()).count(), 0);
        assert!(routes.early.is_none(), "nothing is kept after the end");
    }
}
