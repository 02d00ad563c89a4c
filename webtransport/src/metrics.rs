//! Metrics pushed through the `metrics` crate's facade, as `quay_h3::metrics` does for
//! connections: nothing is recorded until the application installs a recorder. Every label is a
//! literal (one `static` key per combination), so a call allocates nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `quay_wt_sessions_total` | counter | `side`, `draft` | sessions established |
//! | `quay_wt_sessions_open` | gauge | `side`, `draft` | sessions open now |
//! | `quay_wt_sessions_ended_total` | counter | `side`, `reason` | sessions ended, by why: `peer_closed`, `peer_drained`, `locally_closed`, `reset`, `protocol`, `connection_lost` |
//! | `quay_wt_session_seconds` | histogram | `side` | session lifetimes |
//! | `quay_wt_datagrams_dropped_total` | counter | `direction` | datagrams not sent (`send`: too large, or the peer takes none); for datagrams dropped on arrival see [`Session::stats`](crate::Session::stats) |
//!
//! `side` is `client` or `server`; `draft` is `draft02`, `draft07`, `draft13` or `draft15`.

use std::time::Duration;

use crate::error::SessionError;
use crate::proto::settings::Draft;

/// Which end of a session we are, and the draft the peer speaks: the labels of its metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionLabels {
    /// We opened the session.
    pub(crate) client: bool,
    pub(crate) draft: Draft,
}

/// `::metrics::$kind!($name, "side" => .., $key => $value, ..)` for a session we opened
/// (`$client`) or accepted, with every label a literal: each arm's key is then a `static`, and
/// the call allocates nothing.
macro_rules! by_side {
    ($kind:ident, $client:expr, $name:literal $(, $key:literal => $value:literal)*) => {
        if $client {
            ::metrics::$kind!($name, "side" => "client" $(, $key => $value)*)
        } else {
            ::metrics::$kind!($name, "side" => "server" $(, $key => $value)*)
        }
    };
}

/// As `by_side!`, with the `draft` label too.
macro_rules! by_side_and_draft {
    ($kind:ident, $labels:expr, $name:literal) => {{
        let labels: SessionLabels = $labels;
        match labels.draft {
            Draft::Draft02 => by_side!($kind, labels.client, $name, "draft" => "draft02"),
            Draft::Draft07 => by_side!($kind, labels.client, $name, "draft" => "draft07"),
            Draft::Draft13 => by_side!($kind, labels.client, $name, "draft" => "draft13"),
            _ => by_side!($kind, labels.client, $name, "draft" => "draft15"),
        }
    }};
}

/// A session was established.
pub(crate) fn session_started(labels: SessionLabels) {
    by_side_and_draft!(counter, labels, "quay_wt_sessions_total").increment(1);
    by_side_and_draft!(gauge, labels, "quay_wt_sessions_open").increment(1.0);
}

/// A session ended, for `why`, after `lifetime`.
pub(crate) fn session_ended(labels: SessionLabels, why: &SessionError, lifetime: Duration) {
    by_side_and_draft!(gauge, labels, "quay_wt_sessions_open").decrement(1.0);
    let client = labels.client;
    let ended = match why {
        SessionError::PeerClosed { .. } => {
            by_side!(counter, client, "quay_wt_sessions_ended_total", "reason" => "peer_closed")
        }
        SessionError::PeerDrained => {
            by_side!(counter, client, "quay_wt_sessions_ended_total", "reason" => "peer_drained")
        }
        SessionError::LocallyClosed => {
            by_side!(counter, client, "quay_wt_sessions_ended_total", "reason" => "locally_closed")
        }
        SessionError::Reset(_) => {
            by_side!(counter, client, "quay_wt_sessions_ended_total", "reason" => "reset")
        }
        SessionError::Protocol(_) => {
            by_side!(counter, client, "quay_wt_sessions_ended_total", "reason" => "protocol")
        }
        _ => {
            by_side!(counter, client, "quay_wt_sessions_ended_total", "reason" => "connection_lost")
        }
    };
    ended.increment(1);
    by_side!(histogram, client, "quay_wt_session_seconds").record(lifetime.as_secs_f64());
}

/// A datagram was not sent.
pub(crate) fn datagram_dropped_on_send() {
    ::metrics::counter!("quay_wt_datagrams_dropped_total", "direction" => "send").increment(1);
}
