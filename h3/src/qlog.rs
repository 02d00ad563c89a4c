//! The HTTP/3 events quay writes to a connection's qlog file (see `quay_transport::qlog`), as
//! draft-ietf-quic-qlog-h3-events defines them:
//!
//! - `http3:parameters_set` (§4.1), our SETTINGS (`initiator` "local") when our control stream
//!   opens and the peer's ("remote") when they are parsed, with the known settings as fields;
//! - `http3:stream_type_set` (§4.3), each unidirectional stream's type once known, ours and the
//!   peer's ("control", "qpack_encode", "qpack_decode", "push", "unknown" with
//!   `stream_type_bytes`, and "webtransport" for a WebTransport stream);
//! - `http3:frame_created` and `http3:frame_parsed` (§4.5, §4.6), each with `stream_id`, for
//!   every frame sent or parsed on the control streams and request streams:
//!   - HEADERS, heads and trailers alike (§5.3: the field lines decoded, values of fields sent
//!     or received with QPACK's never-index bit left out);
//!   - DATA (`raw` with `length` and `payload_length`; the payload itself never);
//!   - SETTINGS (§5.7), GOAWAY (`id`), MAX_PUSH_ID and CANCEL_PUSH (`push_id`),
//!     PRIORITY_UPDATE (`stream_id` or `push_id`, `priority_field_value`);
//!   - PUSH_PROMISE, parsed only (`push_id`; quay allows no push, so the frame is an error and
//!     its field section is not decoded);
//!   - frames of reserved (GREASE) and unknown types, `frame_type` "reserved" or "unknown"
//!     with `frame_type_bytes` and `raw`: the ones quay sends (one after its SETTINGS, one
//!     before its first header section) and the ones it skips.
//!
//!   Our control stream's frames are logged from the bytes the state machine queued for it,
//!   when they are taken to be written; the peer's as the frame reader reads them (DATA and
//!   skipped frames at their header), before they are checked, so a frame that breaks a
//!   rule is logged before the error;
//! - `http3:datagram_created` and `http3:datagram_parsed` (§4.7, §4.8), with the quarter stream
//!   ID and the payload length;
//! - `quay-h3:datagram_dropped` (`quarter_stream_id`, `trigger` "queue_full"), a received
//!   datagram dropped because its request stream's queue was full;
//! - `quay-qpack:section_blocked` and `quay-qpack:section_unblocked` (`stream_id`), a header
//!   section that waits for the peer's encoder stream (RFC 9204 §2.2.1) and its decode;
//! - the changes to the QPACK dynamic tables, each with `table`: "encoder" (ours, which the
//!   peer's decoder mirrors) or "decoder" (the one the peer's encoder builds), in the order
//!   they happen: `quay-qpack:table_capacity` (`capacity`: Set Dynamic Table Capacity, RFC
//!   9204 §3.2.3, sent or received), `quay-qpack:table_insert` (`index`, the absolute index of
//!   §3.2.4, and the entry's `name` and `value`, as `name_bytes`/`value_bytes` in hex when
//!   not UTF-8; a Duplicate is an insert) and `quay-qpack:table_evict` (`index`). The
//!   encoder's are logged when a section is encoded, before its HEADERS frame; the decoder's
//!   when the peer's encoder stream is read.
//!
//! This module only formats; the glue decides when (each site checks the connection's
//! `Option<Qlog>` once, so a connection without a qlog pays nothing else), and the pure
//! protocol code does not know about it.

use std::time::Instant;

use bytes::Bytes;

use quay_qpack::Field;
use quay_transport::qlog::{Fields, Qlog};

use crate::connection::{QpackTable, UniStream};
use crate::proto::Codec;
use crate::proto::VarInt;
use crate::proto::frame::{Frame, FrameHeader, FrameType, PriorityElement};
use crate::proto::reader::{FrameEvent, FrameReader};
use crate::proto::settings::{SettingId, Settings};
use quay_qpack::TableEvent;

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
    qlog.emit(Instant::now(), frame_name(local), |data| {
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
    qlog.emit(Instant::now(), frame_name(local), |data| {
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

/// `http3:frame_created` (`local`) or `http3:frame_parsed` of a frame of `stream_id` seen as
/// its `event`: DATA and frames of unknown or reserved types by their header (with `raw`
/// `length` and `payload_length`; a DATA frame's payload itself is never logged), GOAWAY,
/// MAX_PUSH_ID, CANCEL_PUSH, PUSH_PROMISE, PRIORITY_UPDATE and SETTINGS whole. HEADERS are
/// logged with their decoded fields instead ([`headers_frame`]), pieces of DATA not at all.
pub(crate) fn frame_event(qlog: &Qlog, local: bool, stream_id: u64, event: &FrameEvent) {
    match event {
        FrameEvent::Header(header) => frame_header(qlog, local, stream_id, header),
        FrameEvent::Frame(Frame::Settings(settings)) => {
            settings_frame(qlog, local, stream_id, settings);
        }
        FrameEvent::Frame(frame) => frame_whole(qlog, local, stream_id, frame),
        FrameEvent::Data(_) => {}
    }
}

/// The frame events of our control stream's bytes `bytes` (whole frames, after the stream
/// type when `typed`), as `http3:frame_created` ([`frame_event`]): the state machine queues
/// frames as bytes, and re-reading them logs exactly what goes out.
pub(crate) fn control_bytes_sent(qlog: &Qlog, stream_id: u64, mut bytes: Bytes, typed: bool) {
    if typed && VarInt::decode(&mut bytes).is_err() {
        return;
    }
    // Our own frames, whole: no bound is needed.
    let mut reader = FrameReader::new(u64::MAX);
    reader.handle_data(bytes);
    // Bounded by the bytes: each event consumes some.
    while let Ok(Some(event)) = reader.poll_event() {
        frame_event(qlog, true, stream_id, &event);
    }
}

/// A frame logged by its header: DATA, or a type this crate does not parse (reserved or
/// unknown). Other types are logged whole, once read.
pub(crate) fn frame_header(qlog: &Qlog, local: bool, stream_id: u64, header: &FrameHeader) {
    let ty = header.ty;
    let name = if ty == FrameType::DATA {
        "data"
    } else if ty.is_grease() {
        "reserved"
    } else if !ty.is_known() {
        "unknown"
    } else {
        return;
    };
    let payload_length = header.len.into_inner();
    qlog.emit(Instant::now(), frame_name(local), |data| {
        data.u64("stream_id", stream_id).object("frame", |frame| {
            frame.str("frame_type", name);
            if ty != FrameType::DATA {
                frame.u64("frame_type_bytes", ty.into_inner());
            }
            frame.object("raw", |raw| {
                raw.u64("length", header.encoded_len() as u64 + payload_length)
                    .u64("payload_length", payload_length);
            });
        });
    });
}

/// A whole frame other than DATA, HEADERS and SETTINGS.
fn frame_whole(qlog: &Qlog, local: bool, stream_id: u64, frame: &Frame) {
    let (name, key, id) = match frame {
        Frame::Goaway(id) => ("goaway", "id", *id),
        Frame::MaxPushId(id) => ("max_push_id", "push_id", *id),
        Frame::CancelPush(id) => ("cancel_push", "push_id", *id),
        // Refused (no push is ever allowed), so its field section is not decoded.
        Frame::PushPromise(promise) => ("push_promise", "push_id", promise.push_id),
        Frame::PriorityUpdate(update) => match update.element {
            PriorityElement::Request(id) => ("priority_update", "stream_id", id),
            PriorityElement::Push(id) => ("priority_update", "push_id", id),
        },
        _ => return,
    };
    qlog.emit(Instant::now(), frame_name(local), |data| {
        data.u64("stream_id", stream_id).object("frame", |fields| {
            fields.str("frame_type", name).u64(key, id.into_inner());
            if let Frame::PriorityUpdate(update) = frame {
                text_or_bytes(
                    fields,
                    "priority_field_value",
                    "priority_field_value_bytes",
                    &update.field_value,
                );
            }
        });
    });
}

/// A change to a QPACK dynamic table, ours (`encoder`) or the one the peer's encoder builds
/// (`decoder`): `quay-qpack:table_capacity` (`capacity`), `quay-qpack:table_insert` (`index`,
/// the absolute index of RFC 9204 §3.2.4, and the entry's `name` and `value`) or
/// `quay-qpack:table_evict` (`index`), each with `table`.
pub(crate) fn table_event(qlog: &Qlog, table: QpackTable, event: &TableEvent) {
    let table = match table {
        QpackTable::Encoder => "encoder",
        QpackTable::Decoder => "decoder",
    };
    let name = match event {
        TableEvent::Capacity(_) => "quay-qpack:table_capacity",
        TableEvent::Inserted { .. } => "quay-qpack:table_insert",
        TableEvent::Evicted { .. } => "quay-qpack:table_evict",
        _ => return,
    };
    qlog.emit(Instant::now(), name, |data| {
        data.str("table", table);
        match event {
            TableEvent::Capacity(capacity) => {
                data.u64("capacity", *capacity);
            }
            TableEvent::Inserted { index, name, value } => {
                data.u64("index", *index);
                // Our encoder never inserts the fields it sends never-indexed (RFC 9204
                // §7.1.3), and a reference to an entry has no never-index bit (§4.5.2), so
                // what HEADERS events leave out never gets here from our side.
                text_or_bytes(data, "name", "name_bytes", name);
                text_or_bytes(data, "value", "value_bytes", value);
            }
            TableEvent::Evicted { index } => {
                data.u64("index", *index);
            }
            _ => {}
        }
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

fn frame_name(local: bool) -> &'static str {
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

#[cfg(all(test, feature = "qlog"))]
mod tests {
    use quay_transport::qlog::Role;

    use super::*;
    use crate::proto::frame::{PriorityUpdate, PushPromise};

    /// The events `log` writes to a fresh qlog file, each as its name and its `data` object's
    /// JSON text (members in the order they are written).
    fn logged(log: impl FnOnce(&Qlog)) -> Vec<(String, String)> {
        let dir = std::env::temp_dir().join(format!(
            "quay-h3-qlog-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let qlog = Qlog::create(&dir, &[1, 2, 3], Role::Client).unwrap();
        log(&qlog);
        let text = std::fs::read_to_string(qlog.path()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        text.split('\u{1e}')
            .filter(|record| !record.is_empty())
            .map(|record| {
                let name = record.split("\"name\":\"").nth(1).unwrap();
                let name = &name[..name.find('"').unwrap()];
                let data = &record[record.find("\"data\":").unwrap() + 7..];
                // The record ends with the event's `}` and a newline.
                (
                    name.to_owned(),
                    data.trim_end()[..data.trim_end().len() - 1].to_owned(),
                )
            })
            .collect()
    }

    fn parsed(data: &str) -> (String, String) {
        ("http3:frame_parsed".to_owned(), data.to_owned())
    }

    /// The frames quay only parses (RFC 9114 §7.2.3, §7.2.5, §7.2.7; RFC 9218 §7.2) and the
    /// ones logged by their header (DATA, §7.2.1, and an unknown type, §9), as
    /// draft-ietf-quic-qlog-h3-events §8 defines them; HEADERS and pieces of DATA are not
    /// logged here.
    #[test]
    fn frames_by_type() {
        let id = VarInt::from_u32;
        let events = [
            FrameEvent::Frame(Frame::MaxPushId(id(5))),
            FrameEvent::Frame(Frame::CancelPush(id(2))),
            FrameEvent::Frame(Frame::Goaway(id(8))),
            FrameEvent::Frame(Frame::PushPromise(PushPromise {
                push_id: id(1),
                field_section: Bytes::from_static(b"\0\0"),
            })),
            FrameEvent::Frame(Frame::PriorityUpdate(PriorityUpdate {
                element: PriorityElement::Request(id(4)),
                field_value: Bytes::from_static(b"u=1"),
            })),
            // 0x30 = 0x21 + 15: not a reserved type.
            FrameEvent::Header(FrameHeader {
                ty: FrameType::from_u32(0x30),
                len: id(3),
            }),
            // A 100-byte payload takes a 2-byte length (RFC 9000 §16).
            FrameEvent::Header(FrameHeader::data(id(100))),
            FrameEvent::Header(FrameHeader {
                ty: FrameType::HEADERS,
                len: id(3),
            }),
            FrameEvent::Frame(Frame::Headers(Bytes::from_static(b"\0\0\0"))),
            FrameEvent::Data(Bytes::from_static(b"abc")),
        ];
        let logged = logged(|qlog| {
            for event in &events {
                frame_event(qlog, false, 3, event);
            }
        });
        assert_eq!(
            logged,
            [
                parsed(r#"{"stream_id":3,"frame":{"frame_type":"max_push_id","push_id":5}}"#),
                parsed(r#"{"stream_id":3,"frame":{"frame_type":"cancel_push","push_id":2}}"#),
                parsed(r#"{"stream_id":3,"frame":{"frame_type":"goaway","id":8}}"#),
                parsed(r#"{"stream_id":3,"frame":{"frame_type":"push_promise","push_id":1}}"#),
                parsed(concat!(
                    r#"{"stream_id":3,"frame":{"frame_type":"priority_update","stream_id":4,"#,
                    r#""priority_field_value":"u=1"}}"#
                )),
                parsed(concat!(
                    r#"{"stream_id":3,"frame":{"frame_type":"unknown","frame_type_bytes":48,"#,
                    r#""raw":{"length":5,"payload_length":3}}}"#
                )),
                parsed(concat!(
                    r#"{"stream_id":3,"frame":{"frame_type":"data","#,
                    r#""raw":{"length":103,"payload_length":100}}}"#
                )),
            ]
        );
    }

    /// Our control stream's bytes are logged frame by frame, after the stream type.
    #[test]
    fn control_bytes_are_logged_as_created_frames() {
        // Control stream type, an empty SETTINGS, a reserved frame (0x21, 1 byte), GOAWAY 4.
        let bytes = Bytes::from_static(&[0x00, 0x04, 0x00, 0x21, 0x01, 0xff, 0x07, 0x01, 0x04]);
        let logged = logged(|qlog| control_bytes_sent(qlog, 3, bytes, true));
        let created = |data: &str| ("http3:frame_created".to_owned(), data.to_owned());
        assert_eq!(
            logged,
            [
                created(r#"{"stream_id":3,"frame":{"frame_type":"settings","settings":[]}}"#),
                created(concat!(
                    r#"{"stream_id":3,"frame":{"frame_type":"reserved","frame_type_bytes":33,"#,
                    r#""raw":{"length":3,"payload_length":1}}}"#
                )),
                created(r#"{"stream_id":3,"frame":{"frame_type":"goaway","id":4}}"#),
            ]
        );
    }

    #[test]
    fn table_changes() {
        let logged = logged(|qlog| {
            table_event(qlog, QpackTable::Decoder, &TableEvent::Capacity(220));
            let insert = TableEvent::Inserted {
                index: 3,
                name: Bytes::from_static(b"x"),
                value: Bytes::from_static(&[0xff]),
            };
            table_event(qlog, QpackTable::Encoder, &insert);
            table_event(qlog, QpackTable::Encoder, &TableEvent::Evicted { index: 0 });
        });
        let event = |name: &str, data: &str| (name.to_owned(), data.to_owned());
        assert_eq!(
            logged,
            [
                event(
                    "quay-qpack:table_capacity",
                    r#"{"table":"decoder","capacity":220}"#
                ),
                event(
                    "quay-qpack:table_insert",
                    r#"{"table":"encoder","index":3,"name":"x","value_bytes":"ff"}"#
                ),
                event("quay-qpack:table_evict", r#"{"table":"encoder","index":0}"#),
            ]
        );
    }
}
