//! The HTTP/3 events quay writes to a connection's qlog file (see `quay_transport::qlog`), as
//! draft-ietf-quic-qlog-h3-events defines them:
//!
//! - `http3:parameters_set` (§4.1), our SETTINGS (`initiator` "local") when our control stream
//!   opens and the peer's ("remote") when they are parsed, with the known settings as fields;
//! - `http3:stream_type_set` (§4.3), each unidirectional stream's type once known, ours and the
//!   peer's ("control", "qpack_encode", "qpack_decode", "push", "unknown" with
//!   `stream_type_bytes`, and "webtransport" for a WebTransport stream);
//! - `http3:frame_created` and `http3:frame_parsed` (§4.5, §4.6) for SETTINGS on the control
//!   streams and HEADERS on request streams (the field lines decoded, values of fields sent or
//!   received with QPACK's never-index bit left out);
//! - `http3:datagram_created` and `http3:datagram_parsed` (§4.7, §4.8), with the quarter stream
//!   ID and the payload length;
//! - `quay-h3:datagram_dropped` (`quarter_stream_id`, `trigger` "queue_full"), a received
//!   datagram dropped because its request stream's queue was full;
//! - `quay-qpack:section_blocked` and `quay-qpack:section_unblocked` (`stream_id`), a header
//!   section that waits for the peer's encoder stream (RFC 9204 §2.2.1) and its decode.
//!
//! This module only formats; the glue decides when (each site checks the connection's
//! `Option<Qlog>` once, so a connection without a qlog pays nothing else), and the pure
//! protocol code does not know about it.

use std::time::Instant;

use quay_qpack::Field;
use quay_transport::qlog::{Fields, Qlog};

use crate::connection::UniStream;
use crate::proto::settings::{SettingId, Settings};

/// `http3:parameters_set` for `settings`, sent (`local`) or received.
pub(crate) fn parameters_set(qlog: &Qlog, local: bool, settings: &Settings) {
    qlog.emit(Instant::now(), "http3:parameters_set", |data| {
        data.str("initiator", initiator(local));
        if let Some(size) = settings.max_field_section_size() {
            data.u64("max_field_section_size", size);
        }
        data.u64("max_table_capacity", settings.qpack_max_table_capacity())
            .u64("blocked_streams_count", settings.qpack_blocked_streams())
            .u64(
                "extended_connect",
                settings.enable_connect_protocol().into(),
            )
            .u64("h3_datagram", settings.h3_datagram().into());
    });
}

/// `http3:frame_created` or `http3:frame_parsed` of the SETTINGS frame on `stream_id`.
pub(crate) fn settings_frame(qlog: &Qlog, local: bool, stream_id: u64, settings: &Settings) {
    qlog.emit(Instant::now(), frame_event(local), |data| {
        data.u64("stream_id", stream_id).object("frame", |frame| {
            frame.str("frame_type", "settings");
            frame.objects("settings", settings.iter(), |entry, (id, value)| {
                match setting_name(id) {
                    Some(name) => entry.str("name", name),
                    None => entry
                        .str("name", "unknown")
                        .u64("name_bytes", id.into_inner()),
                };
                entry.u64("value", value.into_inner());
            });
        });
    });
}

/// `http3:stream_type_set` for a unidirectional stream, ours (`local`) or the peer's.
pub(crate) fn stream_type_set(qlog: &Qlog, local: bool, stream_id: u64, kind: StreamKind) {
    qlog.emit(Instant::now(), "http3:stream_type_set", |data| {
        data.str("initiator", initiator(local))
            .u64("stream_id", stream_id);
        match kind {
            StreamKind::Known(UniStream::Control) => data.str("stream_type", "control"),
            StreamKind::Known(UniStream::Encoder) => data.str("stream_type", "qpack_encode"),
            StreamKind::Known(UniStream::Decoder) => data.str("stream_type", "qpack_decode"),
            StreamKind::Known(UniStream::Extension(ty)) if ty.into_inner() == 0x54 => {
                data.str("stream_type", "webtransport")
            }
            StreamKind::Push => data.str("stream_type", "push"),
            StreamKind::Known(_) | StreamKind::Unknown(_) => {
                data.str("stream_type", "unknown");
                if let StreamKind::Unknown(ty) | StreamKind::Known(UniStream::Extension(ty)) = kind
                {
                    data.u64("stream_type_bytes", ty.into_inner());
                }
                data
            }
        };
    });
}

/// What a unidirectional stream turned out to be, for [`stream_type_set`].
#[derive(Clone, Copy)]
pub(crate) enum StreamKind {
    /// A type the connection handles or hands out.
    Known(UniStream),
    /// A push stream (refused).
    Push,
    /// Any other type, GREASE included.
    Unknown(crate::proto::stream::StreamType),
}

/// `http3:frame_created` (`local`) or `http3:frame_parsed` of a HEADERS frame on `stream_id`
/// carrying `fields`.
pub(crate) fn headers_frame(qlog: &Qlog, local: bool, stream_id: u64, fields: &[Field]) {
    qlog.emit(Instant::now(), frame_event(local), |data| {
        data.u64("stream_id", stream_id).object("frame", |frame| {
            frame.str("frame_type", "headers");
            frame.objects("headers", fields, |entry, field| {
                text_or_bytes(entry, "name", "name_bytes", &field.name);
                // RFC 9204 §7.1.3: never-indexed fields are the sensitive ones; keep them out.
                if !field.never_index {
                    text_or_bytes(entry, "value", "value_bytes", &field.value);
                }
            });
        });
    });
}

/// `http3:datagram_created` (`local`) or `http3:datagram_parsed` of an HTTP datagram
/// (RFC 9297 §2.1) for the request stream `stream_id`.
pub(crate) fn datagram(qlog: &Qlog, local: bool, stream_id: u64, payload_length: usize) {
    let name = if local {
        "http3:datagram_created"
    } else {
        "http3:datagram_parsed"
    };
    qlog.emit(Instant::now(), name, |data| {
        data.u64("quarter_stream_id", stream_id / 4)
            .object("raw", |raw| {
                raw.u64("payload_length", payload_length as u64);
            });
    });
}

/// `quay-h3:datagram_dropped`: a received datagram for `stream_id` found its queue full.
pub(crate) fn datagram_dropped(qlog: &Qlog, stream_id: u64) {
    qlog.emit(Instant::now(), "quay-h3:datagram_dropped", |data| {
        data.u64("quarter_stream_id", stream_id / 4)
            .str("trigger", "queue_full");
    });
}

/// `quay-qpack:section_blocked` or `quay-qpack:section_unblocked` for the header section of
/// `stream_id`.
pub(crate) fn section_blocked(qlog: &Qlog, blocked: bool, stream_id: u64) {
    let name = if blocked {
        "quay-qpack:section_blocked"
    } else {
        "quay-qpack:section_unblocked"
    };
    qlog.emit(Instant::now(), name, |data| {
        data.u64("stream_id", stream_id);
    });
}

fn initiator(local: bool) -> &'static str {
    if local { "local" } else { "remote" }
}

fn frame_event(local: bool) -> &'static str {
    if local {
        "http3:frame_created"
    } else {
        "http3:frame_parsed"
    }
}

/// A field name or value as text when it is UTF-8, else as hex under `bytes_key`.
fn text_or_bytes(fields: &mut Fields<'_>, key: &str, bytes_key: &str, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(text) => fields.str(key, text),
        Err(_) => fields.hex(bytes_key, value),
    };
}

/// The name draft-ietf-quic-qlog-h3-events §5.7 gives a setting, if it has one.
fn setting_name(id: SettingId) -> Option<&'static str> {
    Some(match id {
        SettingId::QPACK_MAX_TABLE_CAPACITY => "settings_qpack_max_table_capacity",
        SettingId::MAX_FIELD_SECTION_SIZE => "settings_max_field_section_size",
        SettingId::QPACK_BLOCKED_STREAMS => "settings_qpack_blocked_streams",
        SettingId::ENABLE_CONNECT_PROTOCOL => "settings_enable_connect_protocol",
        SettingId::H3_DATAGRAM => "settings_h3_datagram",
        id if id.is_grease() => "reserved",
        _ => return None,
    })
}
