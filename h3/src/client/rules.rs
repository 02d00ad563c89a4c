//! The pool's rules, with no sockets, tasks or clock: which connection takes a request, when a
//! connection is opened, and when one is retired. [`super::pool`] feeds them what happened and
//! does what they say.
//!
//! Per origin (scheme, host, port):
//!
//! - A request goes to the first connection that takes new requests (no GOAWAY, RFC 9114 §5.2)
//!   and has fewer requests in flight than the server lets it open. The server's limit
//!   (its MAX_STREAMS credit, RFC 9000 §4.6) is learned the first time opening a stream would
//!   wait: the streams open at that moment are the limit.
//! - When no connection has room, one connection is opened; at most one connect is in flight
//!   per origin, and other requests wait for it.
//! - A connection with nothing in flight for the idle timeout is retired; so is one that received
//!   GOAWAY once its last request ends, and one that is closed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where requests go: scheme, host (lower case, without IPv6 brackets) and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) scheme: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Origin {
    /// The origin of an absolute `https` URI; `None` for any other.
    pub(crate) fn of(uri: &http::Uri) -> Option<Self> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        if scheme != "https" {
            return None;
        }
        let host = uri.host()?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Self {
            scheme,
            host,
            port: uri.port_u16().unwrap_or(443),
        })
    }

    /// The origin as a URL to connect to.
    pub(crate) fn url(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}/", self.scheme, self.host, self.port)
        } else {
            format!("{}://{}:{}/", self.scheme, self.host, self.port)
        }
    }
}

/// What to do with a request, from [`Rules::pick`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick<C> {
    /// Open the request on this connection (its ID in the pool); it is counted in flight.
    Use(u64, C),
    /// Open a connection, then report [`Rules::handle_connected`] or
    /// [`Rules::handle_connect_failed`].
    Connect,
    /// A connect to this origin is in flight: wait for it, then pick again.
    Wait,
}

/// What to do when opening a stream would wait, from [`Rules::handle_blocked`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// The server's credit for this request is on its way (streams closed since): wait for it.
    Wait,
    /// The connection is full: end the request's count on it
    /// ([`Rules::handle_finished`]) and pick again.
    Repick,
}

/// How a pooled connection is doing, asked by [`Rules::handle_health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Takes new requests.
    Usable,
    /// Received GOAWAY: no new requests (RFC 9114 §5.2).
    GoingAway,
    /// Closed or lost.
    Closed,
}

#[derive(Debug)]
struct Entry<C> {
    id: u64,
    conn: C,
    /// Requests counted on it: picked and not yet finished.
    in_flight: usize,
    /// Of those, the ones whose stream is open.
    open: usize,
    /// The server's stream limit, once learned.
    limit: Option<usize>,
    going_away: bool,
    /// Since when nothing has been in flight.
    idle_since: Option<Instant>,
}

impl<C> Entry<C> {
    fn has_room(&self) -> bool {
        !self.going_away && self.limit.is_none_or(|limit| self.in_flight < limit)
    }
}

#[derive(Debug)]
struct Slots<C> {
    conns: Vec<Entry<C>>,
    connecting: bool,
}

impl<C> Default for Slots<C> {
    fn default() -> Self {
        Self {
            conns: Vec::new(),
            connecting: false,
        }
    }
}

/// The pool's state; `C` is a connection handle. Inputs are `handle_*`; [`Rules::pick`] and
/// [`Rules::poll_timeout`] are the outputs. Call order for one request: `pick`, then (on
/// `Connect`) `handle_connected` or `handle_connect_failed`, then `handle_opened` or
/// `handle_blocked` (or `handle_finished` when opening failed), then `handle_finished`.
#[derive(Debug)]
pub(crate) struct Rules<C> {
    origins: HashMap<Origin, Slots<C>>,
    idle_timeout: Duration,
    next_id: u64,
}

impl<C: Clone> Rules<C> {
    /// Connections with nothing in flight for `idle_timeout` are retired.
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Self {
            origins: HashMap::new(),
            idle_timeout,
            next_id: 0,
        }
    }

    /// Where a request to `origin` goes; `exclude` is a connection that refused it before.
    pub(crate) fn pick(&mut self, origin: &Origin, exclude: Option<u64>) -> Pick<C> {
        let slots = self.origins.entry(origin.clone()).or_default();
        let entry = slots
            .conns
            .iter_mut()
            .find(|entry| entry.has_room() && Some(entry.id) != exclude);
        if let Some(entry) = entry {
            entry.in_flight += 1;
            entry.idle_since = None;
            return Pick::Use(entry.id, entry.conn.clone());
        }
        if slots.connecting {
            return Pick::Wait;
        }
        slots.connecting = true;
        Pick::Connect
    }

    /// The connect that [`Pick::Connect`] asked for succeeded; the request that asked is counted
    /// on it. Returns the connection's ID.
    pub(crate) fn handle_connected(&mut self, origin: &Origin, conn: C) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let slots = self.origins.entry(origin.clone()).or_default();
        slots.connecting = false;
        slots.conns.push(Entry {
            id,
            conn,
            in_flight: 1,
            open: 0,
            limit: None,
            going_away: false,
            idle_since: None,
        });
        id
    }

    /// The connect that [`Pick::Connect`] asked for failed (or was given up).
    pub(crate) fn handle_connect_failed(&mut self, origin: &Origin) {
        if let Some(slots) = self.origins.get_mut(origin) {
            slots.connecting = false;
        }
    }

    /// A request counted on connection `id` opened its stream.
    pub(crate) fn handle_opened(&mut self, origin: &Origin, id: u64) {
        if let Some(entry) = self.entry(origin, id) {
            entry.open += 1;
        }
    }

    /// Opening a stream on connection `id` would wait: the server's stream limit is reached.
    pub(crate) fn handle_blocked(&mut self, origin: &Origin, id: u64) -> Blocked {
        let Some(entry) = self.entry(origin, id) else {
            return Blocked::Repick;
        };
        // With nothing open, the credit for streams that ended is on its way: there is nothing to
        // learn from waiting.
        if entry.open == 0 {
            return Blocked::Wait;
        }
        let limit = *entry.limit.get_or_insert(entry.open);
        if entry.open < limit {
            return Blocked::Wait;
        }
        Blocked::Repick
    }

    /// A request counted on connection `id` ended (`opened`: its stream had been opened).
    /// Returns the connection when it is to be closed now (it received GOAWAY and this was its
    /// last request).
    pub(crate) fn handle_finished(
        &mut self,
        origin: &Origin,
        id: u64,
        opened: bool,
        now: Instant,
    ) -> Option<C> {
        let entry = self.entry(origin, id)?;
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if opened {
            entry.open = entry.open.saturating_sub(1);
        }
        if entry.in_flight > 0 {
            return None;
        }
        entry.idle_since = Some(now);
        if entry.going_away {
            return self.remove(origin, id);
        }
        None
    }

    /// Asks `health` about each connection to `origin`: closed ones leave the pool, ones that
    /// received GOAWAY take no new requests. Returns the connections that left, to be closed.
    pub(crate) fn handle_health(
        &mut self,
        origin: &Origin,
        health: impl Fn(&C) -> Health,
    ) -> Vec<C> {
        let Some(slots) = self.origins.get_mut(origin) else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        slots.conns.retain_mut(|entry| {
            let health = health(&entry.conn);
            entry.going_away |= health == Health::GoingAway;
            let keep = health != Health::Closed && !(entry.going_away && entry.in_flight == 0);
            if !keep {
                gone.push(entry.conn.clone());
            }
            keep
        });
        gone
    }

    /// When the next idle connection is due to be retired.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.origins
            .values()
            .flat_map(|slots| &slots.conns)
            .filter_map(|entry| entry.idle_since)
            .min()
            .map(|since| since + self.idle_timeout)
    }

    /// Retires the connections idle for the idle timeout at `now`; returns them, to be closed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Vec<C> {
        let mut gone = Vec::new();
        for slots in self.origins.values_mut() {
            slots.conns.retain(|entry| {
                let idle = entry
                    .idle_since
                    .is_some_and(|since| now >= since + self.idle_timeout);
                if idle {
                    gone.push(entry.conn.clone());
                }
                !idle
            });
        }
        self.origins
            .retain(|_, slots| slots.connecting || !slots.conns.is_empty());
        gone
    }

    /// Empties the pool; returns every connection, to be closed.
    pub(crate) fn drain(&mut self) -> Vec<C> {
        self.origins
            .drain()
            .flat_map(|(_, slots)| slots.conns)
            .map(|entry| entry.conn)
            .collect()
    }

    /// How many connections to `origin` are pooled.
    #[cfg(test)]
    fn connections(&self, origin: &Origin) -> usize {
        self.origins
            .get(origin)
            .map_or(0, |slots| slots.conns.len())
    }

    fn entry(&mut self, origin: &Origin, id: u64) -> Option<&mut Entry<C>> {
        let slots = self.origins.get_mut(origin)?;
        slots.conns.iter_mut().find(|entry| entry.id == id)
    }

    fn remove(&mut self, origin: &Origin, id: u64) -> Option<C> {
        let slots = self.origins.get_mut(origin)?;
        let at = slots.conns.iter().position(|entry| entry.id == id)?;
        Some(slots.conns.remove(at).conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::of(&"https://Example.com:4433/x".parse().unwrap()).unwrap()
    }

    fn rules() -> Rules<&'static str> {
        Rules::new(Duration::from_secs(30))
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        let o = origin();
        assert_eq!(
            (o.scheme.as_str(), o.host.as_str(), o.port),
            ("https", "example.com", 4433)
        );
        assert_eq!(o.url(), "https://example.com:4433/");
        let v6 = Origin::of(&"https://[::1]/".parse().unwrap()).unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 443));
        assert_eq!(v6.url(), "https://[::1]:443/");
        assert_eq!(Origin::of(&"http://example.com/".parse().unwrap()), None);
        assert_eq!(Origin::of(&"/relative".parse().unwrap()), None);
    }

    #[test]
    fn one_connect_per_origin_and_requests_share_it() {
        let mut r = rules();
        let o = origin();
        assert_eq!(r.pick(&o, None), Pick::Connect);
        // Others wait for the connect in flight instead of opening their own.
        assert_eq!(r.pick(&o, None), Pick::Wait);
        assert_eq!(r.pick(&o, None), Pick::Wait);
        let id = r.handle_connected(&o, "a");
        r.handle_opened(&o, id);
        assert_eq!(r.pick(&o, None), Pick::Use(id, "a"));
        assert_eq!(r.pick(&o, None), Pick::Use(id, "a"));
        assert_eq!(r.connections(&o), 1);
        // Another origin has its own connections.
        let other = Origin::of(&"https://example.com:4434/".parse().unwrap()).unwrap();
        assert_eq!(r.pick(&other, None), Pick::Connect);
    }

    #[test]
    fn a_failed_connect_lets_the_next_request_connect() {
        let mut r = rules();
        let o = origin();
        assert_eq!(r.pick(&o, None), Pick::Connect);
        assert_eq!(r.pick(&o, None), Pick::Wait);
        r.handle_connect_failed(&o);
        assert_eq!(r.pick(&o, None), Pick::Connect);
    }

    #[test]
    fn the_stream_limit_is_learned_and_a_second_connection_opened() {
        let mut r = rules();
        let o = origin();
        assert_eq!(r.pick(&o, None), Pick::Connect);
        let a = r.handle_connected(&o, "a");
        r.handle_opened(&o, a);
        assert_eq!(r.pick(&o, None), Pick::Use(a, "a"));
        r.handle_opened(&o, a);
        // The third would wait: the server allows two (RFC 9000 §4.6).
        assert_eq!(r.pick(&o, None), Pick::Use(a, "a"));
        assert_eq!(r.handle_blocked(&o, a), Blocked::Repick);
        assert_eq!(r.handle_finished(&o, a, false, Instant::now()), None);
        assert_eq!(r.pick(&o, None), Pick::Connect);
        let b = r.handle_connected(&o, "b");
        assert_eq!(r.connections(&o), 2);
        r.handle_opened(&o, b);
        // One ends on the first: it takes a request again, and waits for the credit.
        assert_eq!(r.handle_finished(&o, a, true, Instant::now()), None);
        assert_eq!(r.pick(&o, None), Pick::Use(a, "a"));
        r.handle_finished(&o, a, true, Instant::now());
        assert_eq!(r.handle_blocked(&o, a), Blocked::Wait);
    }

    #[test]
    fn blocked_with_nothing_open_waits_for_credit() {
        let mut r = rules();
        let o = origin();
        r.pick(&o, None);
        let a = r.handle_connected(&o, "a");
        assert_eq!(r.handle_blocked(&o, a), Blocked::Wait);
    }

    #[test]
    fn goaway_takes_no_new_requests_and_closes_when_done() {
        let mut r = rules();
        let o = origin();
        r.pick(&o, None);
        let a = r.handle_connected(&o, "a");
        r.handle_opened(&o, a);
        // RFC 9114 §5.2: after GOAWAY, new requests go elsewhere.
        assert!(r.handle_health(&o, |_| Health::GoingAway).is_empty());
        assert_eq!(r.pick(&o, None), Pick::Connect);
        assert_eq!(r.handle_finished(&o, a, true, Instant::now()), Some("a"));
        assert_eq!(r.connections(&o), 0);
    }

    #[test]
    fn a_refused_request_is_retried_on_another_connection() {
        let mut r = rules();
        let o = origin();
        r.pick(&o, None);
        let a = r.handle_connected(&o, "a");
        r.handle_opened(&o, a);
        r.handle_finished(&o, a, true, Instant::now());
        assert_eq!(r.pick(&o, Some(a)), Pick::Connect);
        let b = r.handle_connected(&o, "b");
        assert_ne!(a, b);
    }

    #[test]
    fn health_retires_closed_and_drained_connections() {
        let mut r = rules();
        let o = origin();
        r.pick(&o, None);
        let a = r.handle_connected(&o, "a");
        r.handle_finished(&o, a, false, Instant::now());
        assert_eq!(r.pick(&o, None), Pick::Use(a, "a"));
        // Going away with a request in flight: kept for it, but takes no new ones.
        assert!(r.handle_health(&o, |_| Health::GoingAway).is_empty());
        assert_eq!(r.pick(&o, None), Pick::Connect);
        let b = r.handle_connected(&o, "b");
        assert_eq!(
            r.handle_health(&o, |c| if *c == "b" {
                Health::Closed
            } else {
                Health::Usable
            }),
            vec!["b"]
        );
        assert_eq!(r.handle_finished(&o, b, false, Instant::now()), None);
        assert_eq!(r.handle_finished(&o, a, false, Instant::now()), Some("a"));
    }

    #[test]
    fn idle_connections_are_retired_after_the_idle_timeout() {
        let mut r = rules();
        let o = origin();
        let start = Instant::now();
        assert_eq!(r.poll_timeout(), None);
        r.pick(&o, None);
        let a = r.handle_connected(&o, "a");
        r.handle_opened(&o, a);
        assert_eq!(r.poll_timeout(), None);
        r.handle_finished(&o, a, true, start);
        let due = start + Duration::from_secs(30);
        assert_eq!(r.poll_timeout(), Some(due));
        assert!(r.handle_timeout(due - Duration::from_millis(1)).is_empty());
        // A request in between makes it busy again.
        assert_eq!(r.pick(&o, None), Pick::Use(a, "a"));
        assert_eq!(r.poll_timeout(), None);
        r.handle_finished(&o, a, false, due);
        assert_eq!(r.handle_timeout(due + Duration::from_secs(30)), vec!["a"]);
        assert_eq!(r.connections(&o), 0);
        assert_eq!(r.pick(&o, None), Pick::Connect);
    }

    #[test]
    fn drain_returns_every_connection() {
        let mut r = rules();
        let o = origin();
        r.pick(&o, None);
        r.handle_connected(&o, "a");
        assert_eq!(r.drain(), vec!["a"]);
        assert_eq!(r.connections(&o), 0);
    }
}
