//! Metrics pushed through the `metrics` crate's facade: the ecosystem's convention, with no
//! exporter forced on the library. Nothing is recorded until the application installs a
//! recorder (e.g. `metrics-exporter-prometheus`); until then each call loads the recorder once.
//! The labels of every call on a connection's or a response's path are literals, one `static`
//! key per combination (`by_side!`), so those calls allocate nothing; only a failed
//! handshake builds its label list.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `quay_h3_connections_total` | counter | `side` | HTTP/3 connections started |
//! | `quay_h3_connections_open` | gauge | `side` | HTTP/3 connections open now |
//! | `quay_h3_handshake_seconds` | histogram | `side` | QUIC handshake duration |
//! | `quay_h3_handshakes_failed_total` | counter | `side`, `reason` | handshakes that failed |
//! | `quay_h3_responses_total` | counter | `side`, `class` | responses sent (server) or received (client), by status class (`1xx`..`5xx`) |
//! | `quay_h3_bytes_total` | counter | `side`, `direction` | UDP payload bytes of ended connections, `sent` or `received` |
//!
//! `side` is `client` or `server`. This module owns the names and labels; the glue calls it at
//! the points it documents.

use std::time::Duration;

use http::StatusCode;
use quay_transport::quinn;

use crate::connection::Side;

fn side(side: Side) -> &'static str {
    match side {
        Side::Client => "client",
        Side::Server => "server",
    }
}

/// `::metrics::$kind!($name, "side" => .., $key => $value, ..)` for the [`Side`] `$of`, with
/// every label a literal: each arm's key is then a `static`, and the call allocates nothing.
macro_rules! by_side {
    ($kind:ident, $of:expr, $name:literal $(, $key:literal => $value:literal)*) => {
        match $of {
            Side::Client => ::metrics::$kind!($name, "side" => "client" $(, $key => $value)*),
            Side::Server => ::metrics::$kind!($name, "side" => "server" $(, $key => $value)*),
        }
    };
}

/// A connection started, after a handshake that took `handshake` if it was seen.
pub(crate) fn connection_opened(of: Side, handshake: Option<Duration>) {
    by_side!(counter, of, "quay_h3_connections_total").increment(1);
    by_side!(gauge, of, "quay_h3_connections_open").increment(1.0);
    if let Some(handshake) = handshake {
        by_side!(histogram, of, "quay_h3_handshake_seconds").record(handshake.as_secs_f64());
    }
}

/// A connection ended, with these transport totals.
pub(crate) fn connection_closed(of: Side, stats: &quinn::ConnectionStats) {
    by_side!(gauge, of, "quay_h3_connections_open").decrement(1.0);
    by_side!(counter, of, "quay_h3_bytes_total", "direction" => "sent")
        .increment(stats.udp_tx.bytes);
    by_side!(counter, of, "quay_h3_bytes_total", "direction" => "received")
        .increment(stats.udp_rx.bytes);
}

/// A handshake failed with `error`.
pub(crate) fn handshake_failed(of: Side, error: &quinn::ConnectionError) {
    let reason = match error {
        quinn::ConnectionError::VersionMismatch => "version_mismatch",
        quinn::ConnectionError::TransportError(_) => "transport_error",
        quinn::ConnectionError::ConnectionClosed(_) => "connection_closed",
        quinn::ConnectionError::ApplicationClosed(_) => "application_closed",
        quinn::ConnectionError::Reset => "reset",
        quinn::ConnectionError::TimedOut => "timed_out",
        quinn::ConnectionError::LocallyClosed => "locally_closed",
        quinn::ConnectionError::CidsExhausted => "cids_exhausted",
    };
    ::metrics::counter!("quay_h3_handshakes_failed_total", "side" => side(of), "reason" => reason)
        .increment(1);
}

/// A response with `status` was sent (server) or received (client).
pub(crate) fn response(of: Side, status: StatusCode) {
    let responses = match status.as_u16() {
        100..=199 => by_side!(counter, of, "quay_h3_responses_total", "class" => "1xx"),
        200..=299 => by_side!(counter, of, "quay_h3_responses_total", "class" => "2xx"),
        300..=399 => by_side!(counter, of, "quay_h3_responses_total", "class" => "3xx"),
        400..=499 => by_side!(counter, of, "quay_h3_responses_total", "class" => "4xx"),
        _ => by_side!(counter, of, "quay_h3_responses_total", "class" => "5xx"),
    };
    responses.increment(1);
}
