//! The WebTransport events quay writes to a connection's qlog file (see
//! `quay_transport::qlog`), in quay's own namespace `quay-webtransport` (no qlog draft defines
//! WebTransport events). Each has the session ID (`session_id`, the CONNECT stream's ID) and,
//! where both ends can cause it, an `initiator` ("local" or "remote"):
//!
//! - `session_opened`: a CONNECT sent (client, "local") or received (server, "remote");
//! - `session_accepted`: its 2xx response sent (server) or received (client), with `status`
//!   and the chosen `protocol` if any;
//! - `session_refused`: a response other than 2xx, with `status`;
//! - `session_closed`: the session ended: with `code` and `reason` when closed by
//!   WT_CLOSE_SESSION or [`Session::close`](crate::Session::close) (a session dropped without a
//!   close has code 0), or with `error` (the reason as text) when the CONNECT stream was reset,
//!   the peer broke the protocol or the connection was lost;
//! - `session_drained`: WT_DRAIN_SESSION sent or received;
//! - `http:capsule_created` and `http:capsule_parsed` (draft-ietf-quic-qlog-h3-events §7),
//!   each capsule on the CONNECT stream, sent or received, with `capsule_type` (WebTransport's
//!   in lowercase, such as "wt_close_session") and the payload length;
//! - `datagram_dropped`: a datagram the send buffer had no room for (`direction` "send").
//!   Received datagrams dropped because a session's queue was full are quay-h3's
//!   `quay-h3:datagram_dropped`.
//!
//! This module only formats; the glue decides when, after checking the connection's
//! `Option<Qlog>` once, and the session core (`core::session`) does not know about it.

use std::time::Instant;

use quay_h3::proto::capsule::{Capsule, CapsuleType};
use quay_transport::qlog::Fields;

pub(crate) use quay_transport::Qlog;

/// One `quay-webtransport:` event about session `session_id`, its other fields added by
/// `fill`.
pub(crate) fn session_event(
    qlog: &Qlog,
    name: &str,
    session_id: u64,
    fill: impl FnOnce(&mut Fields<'_>),
) {
    qlog.emit(Instant::now(), name, |data| {
        data.u64("session_id", session_id);
        fill(data);
    });
}

/// A datagram of session `session_id` with `length` payload bytes, as the application hands it
/// over: `http3:datagram_created` (draft-ietf-quic-qlog-h3-events §4.7; the session ID is the
/// stream's, so the quarter stream ID is a quarter of it). Written before the datagram goes to
/// QUIC, so that it comes before whatever the peer's answer causes.
pub(crate) fn datagram_created(qlog: &Qlog, session_id: u64, length: usize) {
    qlog.emit(Instant::now(), "http3:datagram_created", |data| {
        data.u64("quarter_stream_id", session_id / 4)
            .object("raw", |raw| {
                raw.u64("payload_length", length as u64);
            });
    });
}

/// `quay-webtransport:datagram_dropped`: QUIC refused a datagram of session `session_id` that
/// [`datagram_created`] logged.
pub(crate) fn datagram_dropped(qlog: &Qlog, session_id: u64, length: usize) {
    session_event(
        qlog,
        "quay-webtransport:datagram_dropped",
        session_id,
        |data| {
            data.str("direction", "send").u64("length", length as u64);
        },
    );
}

/// `http:capsule_created` (`local`) or `http:capsule_parsed` (draft-ietf-quic-qlog-h3-events
/// §7.1, §7.2) of a capsule on the CONNECT stream `stream_id`: its type (WebTransport's by
/// their names in lowercase, others "unknown" with `capsule_type_value`) and payload length.
pub(crate) fn capsule(qlog: &Qlog, local: bool, stream_id: u64, capsule: &Capsule) {
    let name = if local {
        "http:capsule_created"
    } else {
        "http:capsule_parsed"
    };
    qlog.emit(Instant::now(), name, |data| {
        data.u64("stream_id", stream_id)
            .object("capsule", |fields| {
                match capsule_type_name(capsule.ty) {
                    Some(name) => fields.str("capsule_type", name),
                    None => fields
                        .str("capsule_type", "unknown")
                        .u64("capsule_type_value", capsule.ty.into_inner()),
                };
                fields.object("raw", |raw| {
                    raw.u64("payload_length", capsule.payload.len() as u64);
                });
            });
    });
}

fn capsule_type_name(ty: CapsuleType) -> Option<&'static str> {
    Some(match ty {
        CapsuleType::DATAGRAM => "datagram",
        CapsuleType::WT_CLOSE_SESSION => "wt_close_session",
        CapsuleType::WT_DRAIN_SESSION => "wt_drain_session",
        CapsuleType::WT_MAX_DATA => "wt_max_data",
        CapsuleType::WT_MAX_STREAMS_BIDI => "wt_max_streams_bidi",
        CapsuleType::WT_MAX_STREAMS_UNI => "wt_max_streams_uni",
        CapsuleType::WT_DATA_BLOCKED => "wt_data_blocked",
        CapsuleType::WT_STREAMS_BLOCKED_BIDI => "wt_streams_blocked_bidi",
        CapsuleType::WT_STREAMS_BLOCKED_UNI => "wt_streams_blocked_uni",
        _ => return None,
    })
}

/// `"local"` or `"remote"`.
pub(crate) fn initiator(local: bool) -> &'static str {
    if local { "local" } else { "remote" }
}
