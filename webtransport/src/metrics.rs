//! Metrics pushed through the `metrics` crate's facade, as `quay_h3::metrics` does for
//! connections: nothing is recorded until the application installs a recorder.
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

impl SessionLabels {
    fn side(self) -> &'static str {
        if self.client { "client" } else { "server" }
    }

    fn draft(self) -> &'static str {
        match self.draft {
            Draft::Draft02 => "draft02",
            Draft::Draft07 => "draft07",
            Draft::Draft13 => "draft13",
            _ => "draft15",
        }
    }
}

/// A session was established.
pub(crate) fn session_started(labels: SessionLabels) {
    let (side, draft) = (labels.side(), labels.draft());
    ::metrics::counter!("quay_wt_sessions_total", "side" => side, "draft" => draft).increment(1);
    ::metrics::gauge!("quay_wt_sessions_open", "side" => side, "draft" => draft).increment(1.0);
}

/// A session ended, for `why`, after `lifetime`.
pub(crate) fn session_ended(labels: SessionLabels, why: &SessionError, lifetime: Duration) {
    let (side, draft) = (labels.side(), labels.draft());
    let reason = match why {
        SessionError::PeerClosed { .. } => "peer_closed",
        SessionError::PeerDrained => "peer_drained",
        SessionError::LocallyClosed => "locally_closed",
        SessionError::Reset(_) => "reset",
        SessionError::Protocol(_) => "protocol",
        _ => "connection_lost",
    };
    ::metrics::gauge!("quay_wt_sessions_open", "side" => side, "draft" => draft).decrement(1.0);
    ::metrics::counter!("quay_wt_sessions_ended_total", "side" => side, "reason" => reason)
        .increment(1);
    ::metrics::histogram!("quay_wt_session_seconds", "side" => side).record(lifetime.as_secs_f64());
}

/// A datagram was not sent.
pub(crate) fn datagram_dropped_on_send() {
    ::metrics::counter!("quay_wt_datagrams_dropped_total", "direction" => "send").increment(1);
}
