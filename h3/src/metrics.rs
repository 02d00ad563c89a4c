//! Metrics pushed through the `metrics` crate's facade: the ecosystem's convention, with no
//! exporter forced on the library. Nothing is recorded until the application installs a
//! recorder (e.g. `metrics-exporter-prometheus`); until then each call builds its label list
//! (one small allocation) and loads the recorder once. A connection makes about six calls in
//! its life, so this is well under a microsecond per connection.
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

/// A connection started, after a handshake that took `handshake` if it was seen.
pub(crate) fn connection_opened(of: Side, handshake: Option<Duration>) {
    let side = side(of);
    ::metrics::counter!("quay_h3_connections_total", "side" => side).increment(1);
    ::metrics::gauge!("quay_h3_connections_open", "side" => side).increment(1.0);
    if let Some(handshake) = handshake {
        ::metrics::histogram!("quay_h3_handshake_seconds", "side" => side)
            .record(handshake.as_secs_f64());
    }
}

/// A connection ended, with these transport totals.
pub(crate) fn connection_closed(of: Side, stats: &quinn::ConnectionStats) {
    let side = side(of);
    ::metrics::gauge!("quay_h3_connections_open", "side" => side).decrement(1.0);
    ::metrics::counter!("quay_h3_bytes_total", "side" => side, "direction" => "sent")
        .increment(stats.udp_tx.bytes);
    ::metrics::counter!("quay_h3_bytes_total", "side" => side, "direction" => "received")
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
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    ::metrics::counter!("quay_h3_responses_total", "side" => side(of), "class" => class)
        .increment(1);
}
