//! What a session did, shaped like the W3C WebTransport API's `getStats()`: plain `Copy`
//! values, cheap to take.
//!
//! This module owns [`SessionStats`] and [`FlowCredit`], and the counters a session's handles
//! and streams add to as they go (`SessionCounters`, relaxed atomics: one addition per read,
//! write or datagram). It does not export anything; see `quay_h3::metrics` and
//! [`crate::metrics`] for pushed metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::proto::settings::Draft;

/// A session's stats; see [`Session::stats`](crate::Session::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Stream payload bytes written by the application, all streams of the session.
    pub bytes_sent: u64,
    /// Stream payload bytes read by the application.
    pub bytes_received: u64,
    /// Datagrams handed to the connection.
    pub datagrams_sent: u64,
    /// Datagrams the application read.
    pub datagrams_received: u64,
    /// Datagrams not sent: too large for the path, or the peer takes none.
    pub datagrams_dropped_on_send: u64,
    /// Datagrams that arrived for the session and were dropped because its queue was full.
    pub datagrams_dropped_on_receive: u64,
    /// Bidirectional streams the application opened.
    pub streams_opened_bidi: u64,
    /// Unidirectional streams the application opened.
    pub streams_opened_uni: u64,
    /// Bidirectional streams the application accepted from the peer.
    pub streams_accepted_bidi: u64,
    /// Unidirectional streams the application accepted from the peer.
    pub streams_accepted_uni: u64,
    /// The connection's smoothed round-trip time (shared by its sessions).
    pub rtt: Duration,
    /// The draft the peer speaks; `None` on a raw QUIC session.
    pub draft: Option<Draft>,
    /// Draft-16 flow-control credit each way, when it is on.
    pub flow: Option<FlowCredit>,
}

/// Draft-16 session flow control (§5): what each side may still send or open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowCredit {
    /// Stream bytes the peer still lets us send (its WT_MAX_DATA less what we sent).
    pub send_data: u64,
    /// Stream bytes we still let the peer send (what we announced less what it sent).
    pub receive_data: u64,
    /// Bidirectional streams the peer still lets us open.
    pub send_streams_bidi: u64,
    /// Unidirectional streams the peer still lets us open.
    pub send_streams_uni: u64,
    /// Bidirectional streams we still let the peer open.
    pub receive_streams_bidi: u64,
    /// Unidirectional streams we still let the peer open.
    pub receive_streams_uni: u64,
}

/// The counters behind [`SessionStats`], shared by a session's handles and streams.
#[derive(Debug, Default)]
pub(crate) struct SessionCounters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) datagrams_sent: AtomicU64,
    pub(crate) datagrams_received: AtomicU64,
    pub(crate) datagrams_dropped_on_send: AtomicU64,
    pub(crate) streams_opened_bidi: AtomicU64,
    pub(crate) streams_opened_uni: AtomicU64,
    pub(crate) streams_accepted_bidi: AtomicU64,
    pub(crate) streams_accepted_uni: AtomicU64,
}

/// Adds `n` to `counter`.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl SessionCounters {
    /// The counts now, into `stats`.
    pub(crate) fn read_into(&self, stats: &mut SessionStats) {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        stats.bytes_sent = get(&self.bytes_sent);
        stats.bytes_received = get(&self.bytes_received);
        stats.datagrams_sent = get(&self.datagrams_sent);
        stats.datagrams_received = get(&self.datagrams_received);
        stats.datagrams_dropped_on_send = get(&self.datagrams_dropped_on_send);
        stats.streams_opened_bidi = get(&self.streams_opened_bidi);
        stats.streams_opened_uni = get(&self.streams_opened_uni);
        stats.streams_accepted_bidi = get(&self.streams_accepted_bidi);
        stats.streams_accepted_uni = get(&self.streams_accepted_uni);
    }
}
