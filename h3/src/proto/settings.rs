//! The SETTINGS frame payload (RFC 9114 §7.2.4).
//!
//! This module owns setting identifiers ([`SettingId`], including the WebTransport ones from
//! DESIGN.md as named constants), the decoded list ([`Settings`]) with the per-identifier rules the
//! RFCs put on values, and [`SettingsError`]. It does not own the frame around the payload
//! ([`crate::proto::frame`]), the rule that SETTINGS comes first and once on the control stream
//! ([`crate::proto::message`]), nor what the connection does with a value.

use std::fmt;

use crate::proto::Codec;
use crate::proto::VarInt;
use bytes::{Buf, BufMut};

use crate::error::Code;
use crate::proto::varint_len;

wire_values! {
    /// A setting identifier (RFC 9114 §7.2.4.1, §11.2.2).
    ///
    /// Identifiers not in this table are kept as values and ignored, as RFC 9114 §7.2.4 asks.
    pub struct SettingId;
    grease = 0x1f * N + 0x21;

    /// Reserved: an HTTP/2 identifier with no HTTP/3 meaning (RFC 9114 §11.2.2).
    HTTP2_RESERVED = 0x0;
    /// QPACK dynamic table capacity the sender's decoder allows (RFC 9204 §5).
    QPACK_MAX_TABLE_CAPACITY = 0x1;
    /// Reserved: HTTP/2 `SETTINGS_ENABLE_PUSH` (RFC 9114 §11.2.2).
    HTTP2_ENABLE_PUSH = 0x2;
    /// Reserved: HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9114 §11.2.2).
    HTTP2_MAX_CONCURRENT_STREAMS = 0x3;
    /// Reserved: HTTP/2 `SETTINGS_INITIAL_WINDOW_SIZE` (RFC 9114 §11.2.2).
    HTTP2_INITIAL_WINDOW_SIZE = 0x4;
    /// Reserved: HTTP/2 `SETTINGS_MAX_FRAME_SIZE` (RFC 9114 §11.2.2).
    HTTP2_MAX_FRAME_SIZE = 0x5;
    /// Largest field section the sender accepts (RFC 9114 §4.2.2); unlimited when absent.
    MAX_FIELD_SECTION_SIZE = 0x6;
    /// How many streams the sender's QPACK decoder lets block (RFC 9204 §5).
    QPACK_BLOCKED_STREAMS = 0x7;
    /// Extended CONNECT is allowed, 0 or 1 (RFC 9220 §3).
    ENABLE_CONNECT_PROTOCOL = 0x8;
    /// HTTP/3 datagrams are accepted, 0 or 1 (RFC 9297 §2.1.1).
    H3_DATAGRAM = 0x33;
    /// The draft identifier for H3 datagrams that Chromium still sends (DESIGN.md).
    H3_DATAGRAM_DRAFT04 = 0xffd277;
    /// WebTransport draft-02 enable flag (DESIGN.md; Chromium requires it).
    ENABLE_WEBTRANSPORT = 0x2b603742;
    /// WebTransport draft-07..12 session limit (DESIGN.md).
    WEBTRANSPORT_MAX_SESSIONS = 0xc671706a;
    /// WebTransport draft-13/14 session limit (DESIGN.md; Safari).
    WT_MAX_SESSIONS = 0x14e9cd29;
    /// WebTransport draft-15/16 enable flag (DESIGN.md).
    WT_ENABLED = 0x2c7cf000;
    /// WebTransport draft-16 initial session data limit (DESIGN.md).
    WT_INITIAL_MAX_DATA = 0x2b61;
    /// WebTransport draft-16 initial unidirectional stream limit (DESIGN.md).
    WT_INITIAL_MAX_STREAMS_UNI = 0x2b64;
    /// WebTransport draft-16 initial bidirectional stream limit (DESIGN.md).
    WT_INITIAL_MAX_STREAMS_BIDI = 0x2b65;
}

impl SettingId {
    /// Whether this identifier is one of HTTP/2's that HTTP/3 forbids (RFC 9114 §7.2.4.1).
    pub const fn is_http2_reserved(self) -> bool {
        matches!(self.into_inner(), 0x0 | 0x2 | 0x3 | 0x4 | 0x5)
    }
}

/// The settings of one SETTINGS frame, in the order they were decoded or inserted.
///
/// Each identifier appears at most once and no HTTP/2 identifier appears: [`Settings::insert`]
/// enforces both, and [`Settings::decode`] goes through it. Unknown and GREASE identifiers are
/// kept (so a payload re-encodes to the same bytes) and the typed accessors ignore them.
///
/// The settings are kept as their encoded payload, in a buffer of exactly that size: a few
/// dozen bytes for a connection's whole SETTINGS, where a list of pairs takes 16 bytes a
/// setting and more for spare room. Lookups decode it again, which is cheap at the size
/// [`Settings::MAX_ENTRIES`] allows.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Identifier and value varints, alternating, each in its shortest form; checked on the way
    /// in, so decoding them again cannot fail.
    payload: Box<[u8]>,
}

impl Settings {
    /// The most settings one frame may carry; more is [`SettingsError::TooMany`]. The frame size
    /// bound already limits this; the count keeps the duplicate check cheap.
    pub const MAX_ENTRIES: usize = 64;

    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The settings of `entries` that [`Settings::insert`] would take, in order, built in one
    /// allocation; the others (duplicates, HTTP/2 identifiers, values out of range, entries past
    /// [`Settings::MAX_ENTRIES`]) are left out.
    pub(crate) fn from_entries_lossy(
        entries: impl IntoIterator<Item = (SettingId, VarInt)>,
    ) -> Self {
        let mut builder = Builder::with_capacity(32);
        for (id, value) in entries {
            let _ = builder.push(id, value);
        }
        builder.finish()
    }

    /// Adds a setting, enforcing the rules of RFC 9114 §7.2.4.1 and the value ranges of the known
    /// boolean settings.
    pub fn insert(&mut self, id: SettingId, value: VarInt) -> Result<(), SettingsError> {
        let mut builder = Builder::with_capacity(self.payload.len() + 16);
        for (known, value) in self.iter() {
            // Already checked.
            let _ = builder.push(known, value);
        }
        let result = builder.push(id, value);
        *self = builder.finish();
        result
    }

    /// Adds the reserved identifier number `n` with `value`, for greasing (RFC 9114 §7.2.4.1).
    ///
    /// Returns an error only if that identifier is already present or the list is full.
    pub fn insert_grease(&mut self, n: u64, value: VarInt) -> Result<(), SettingsError> {
        self.insert(SettingId::grease(n), value)
    }

    /// The value of `id`, if present.
    pub fn get(&self, id: SettingId) -> Option<VarInt> {
        self.iter().find(|(k, _)| *k == id).map(|(_, v)| v)
    }

    /// All settings in order, unknown and GREASE ones included.
    pub fn iter(&self) -> impl Iterator<Item = (SettingId, VarInt)> + '_ {
        pairs(&self.payload)
    }

    /// How many settings there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// SETTINGS_QPACK_MAX_TABLE_CAPACITY, 0 when absent (RFC 9204 §5).
    pub fn qpack_max_table_capacity(&self) -> u64 {
        self.value_or(SettingId::QPACK_MAX_TABLE_CAPACITY, 0)
    }

    /// SETTINGS_QPACK_BLOCKED_STREAMS, 0 when absent (RFC 9204 §5).
    pub fn qpack_blocked_streams(&self) -> u64 {
        self.value_or(SettingId::QPACK_BLOCKED_STREAMS, 0)
    }

    /// SETTINGS_MAX_FIELD_SECTION_SIZE, `None` (unlimited) when absent (RFC 9114 §4.2.2).
    pub fn max_field_section_size(&self) -> Option<u64> {
        self.get(SettingId::MAX_FIELD_SECTION_SIZE)
            .map(VarInt::into_inner)
    }

    /// Whether the sender accepts Extended CONNECT (RFC 9220 §3).
    pub fn enable_connect_protocol(&self) -> bool {
        self.value_or(SettingId::ENABLE_CONNECT_PROTOCOL, 0) == 1
    }

    /// Whether the sender accepts HTTP/3 datagrams: RFC 9297's identifier, or the draft one
    /// Chromium sends, set to 1.
    pub fn h3_datagram(&self) -> bool {
        self.value_or(SettingId::H3_DATAGRAM, 0) == 1
            || self.value_or(SettingId::H3_DATAGRAM_DRAFT04, 0) == 1
    }

    fn value_or(&self, id: SettingId, default: u64) -> u64 {
        self.get(id).map_or(default, VarInt::into_inner)
    }

    /// Decodes a whole SETTINGS payload: everything `payload` has left.
    ///
    /// A payload that ends inside an identifier/value pair is [`SettingsError::Truncated`]
    /// (RFC 9114 §7.1), never "need more bytes": the frame length says where the payload ends.
    pub fn decode<B: Buf>(payload: &mut B) -> Result<Self, SettingsError> {
        // The shortest encodings take no more room than the peer's, and no list takes more
        // than MAX_ENTRIES pairs of two 8-byte varints: one allocation, of a bounded size.
        let mut settings = Builder::with_capacity(payload.remaining().min(Self::MAX_ENTRIES * 16));
        while payload.has_remaining() {
            let id = SettingId::decode(payload).map_err(|_| SettingsError::Truncated)?;
            let value = VarInt::decode(payload).map_err(|_| SettingsError::Truncated)?;
            settings.push(id, value)?;
        }
        Ok(settings.finish())
    }

    /// Encodes the payload (without the frame header).
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_slice(&self.payload);
    }

    /// The length of [`Settings::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.payload.len()
    }
}

/// Builds a [`Settings`] payload, checking each setting against the rules of RFC 9114
/// §7.2.4.1, the value ranges of the known boolean settings and the settings before it. It
/// keeps the identifiers it took apart from the payload, so the duplicate check compares
/// numbers instead of decoding the payload again for every setting.
struct Builder {
    payload: Vec<u8>,
    ids: [u64; Settings::MAX_ENTRIES],
    count: usize,
}

impl Builder {
    fn with_capacity(bytes: usize) -> Self {
        Self {
            payload: Vec::with_capacity(bytes),
            ids: [0; Settings::MAX_ENTRIES],
            count: 0,
        }
    }

    fn push(&mut self, id: SettingId, value: VarInt) -> Result<(), SettingsError> {
        // RFC 9114 §7.2.4.1: HTTP/2 identifiers without an HTTP/3 meaning are a settings error.
        if id.is_http2_reserved() {
            return Err(SettingsError::Http2Reserved(id));
        }
        // RFC 9114 §7.2.4: one identifier may only appear once per frame.
        if self.ids[..self.count].contains(&id.into_inner()) {
            return Err(SettingsError::Duplicate(id));
        }
        // RFC 9220 §3 (via RFC 8441 §3) and RFC 9297 §2.1.1: these flags are 0 or 1.
        if matches!(
            id,
            SettingId::ENABLE_CONNECT_PROTOCOL | SettingId::H3_DATAGRAM
        ) && value.into_inner() > 1
        {
            return Err(SettingsError::InvalidValue { id, value });
        }
        let Some(slot) = self.ids.get_mut(self.count) else {
            return Err(SettingsError::TooMany);
        };
        *slot = id.into_inner();
        self.count += 1;
        self.payload
            .reserve(varint_len(id.into_inner()) + varint_len(value.into_inner()));
        id.encode(&mut self.payload);
        value.encode(&mut self.payload);
        Ok(())
    }

    fn finish(self) -> Settings {
        Settings {
            payload: self.payload.into_boxed_slice(),
        }
    }
}

/// The settings of a payload that a [`Builder`] built.
fn pairs(mut payload: &[u8]) -> impl Iterator<Item = (SettingId, VarInt)> + '_ {
    // Every pair was checked on the way in, so a decode error (which would end the list early)
    // cannot happen.
    std::iter::from_fn(move || {
        let id = read_varint(&mut payload)?;
        let value = read_varint(&mut payload)?;
        Some((SettingId::from_varint(id), value))
    })
}

/// Reads one varint (RFC 9000 §16) off the front of `payload`; `None` at its end. By hand
/// rather than through [`Codec`]: lookups read the whole list each time, and this is most of
/// what a connection's settings cost.
fn read_varint(payload: &mut &[u8]) -> Option<VarInt> {
    let first = *payload.first()?;
    let (bytes, rest) = payload.split_at_checked(1 << (first >> 6))?;
    let value = bytes[1..]
        .iter()
        .fold(u64::from(first & 0x3f), |value, &byte| {
            value << 8 | u64::from(byte)
        });
    *payload = rest;
    // Below 2^62 by construction: six bits and at most seven bytes.
    VarInt::from_u64(value).ok()
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A SETTINGS payload that breaks a rule. Every variant is a connection error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The payload ended inside an identifier/value pair.
    #[error("SETTINGS payload ends inside a setting")]
    Truncated,
    /// An identifier appeared twice.
    #[error("setting {0:?} appears twice")]
    Duplicate(SettingId),
    /// An HTTP/2 identifier that HTTP/3 reserves.
    #[error("HTTP/2 setting {0:?} is not allowed in HTTP/3")]
    Http2Reserved(SettingId),
    /// A known setting has a value outside its range.
    #[error("setting {id:?} has invalid value {value}")]
    InvalidValue {
        /// The setting.
        id: SettingId,
        /// The value received.
        value: VarInt,
    },
    /// More than [`Settings::MAX_ENTRIES`] settings.
    #[error("too many settings")]
    TooMany,
}

impl From<SettingsError> for Code {
    fn from(error: SettingsError) -> Self {
        match error {
            // RFC 9114 §7.1: a payload that stops before its fields end is a frame error.
            SettingsError::Truncated => Self::H3_FRAME_ERROR,
            // RFC 9114 §7.2.4, §7.2.4.1; RFC 9297 §2.1.1.
            SettingsError::Duplicate(_)
            | SettingsError::Http2Reserved(_)
            | SettingsError::InvalidValue { .. } => Self::H3_SETTINGS_ERROR,
            // A local limit, not a layout error (RFC 9114 §10.5).
            SettingsError::TooMany => Self::H3_EXCESSIVE_LOAD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::test_util::vi;

    #[test]
    fn exact_bytes() {
        let mut settings = Settings::new();
        settings
            .insert(SettingId::QPACK_MAX_TABLE_CAPACITY, vi(4096))
            .unwrap();
        settings
            .insert(SettingId::QPACK_BLOCKED_STREAMS, vi(16))
            .unwrap();
        settings
            .insert(SettingId::H3_DATAGRAM_DRAFT04, vi(1))
            .unwrap();
        let mut buf = Vec::new();
        settings.encode(&mut buf);
        let expected = [
            0x01, 0x50, 0x00, // capacity 4096
            0x07, 0x10, // 16 blocked streams
            0x80, 0xff, 0xd2, 0x77, 0x01, // draft datagram id, 1
        ];
        assert_eq!(buf, expected);
        assert_eq!(settings.encoded_len(), expected.len());
        assert_eq!(Settings::decode(&mut &expected[..]).unwrap(), settings);
        assert_eq!(settings.qpack_max_table_capacity(), 4096);
        assert_eq!(settings.qpack_blocked_streams(), 16);
        assert!(settings.h3_datagram());
        assert!(!settings.enable_connect_protocol());
        assert_eq!(settings.max_field_section_size(), None);
    }

    #[test]
    fn lookups_read_every_varint_length() {
        // RFC 9000 Appendix A.1's examples, one of each length, as the values of four unknown
        // settings (the fourth identifier in two bytes).
        let bytes = [
            0x0a, 0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c, // 8 bytes
            0x0b, 0x9d, 0x7f, 0x3e, 0x7d, // 4 bytes
            0x0c, 0x7b, 0xbd, // 2 bytes
            0x40, 0x4d, 0x25, // 1 byte
        ];
        let settings = Settings::decode(&mut &bytes[..]).unwrap();
        let values: Vec<_> = settings
            .iter()
            .map(|(id, value)| (id.into_inner(), value.into_inner()))
            .collect();
        assert_eq!(
            values,
            [
                (0x0a, 151_288_809_941_952_652),
                (0x0b, 494_878_333),
                (0x0c, 15_293),
                (0x4d, 37)
            ]
        );
        assert_eq!(settings.get(SettingId::from_u32(0x4d)), Some(vi(37)));
    }

    #[test]
    fn lossy_entries_skip_what_insert_refuses() {
        let settings = Settings::from_entries_lossy([
            (SettingId::QPACK_BLOCKED_STREAMS, vi(16)),
            (SettingId::HTTP2_ENABLE_PUSH, vi(1)),
            (SettingId::QPACK_BLOCKED_STREAMS, vi(17)),
            (SettingId::H3_DATAGRAM, vi(2)),
            (SettingId::H3_DATAGRAM, vi(1)),
        ]);
        let ids: Vec<_> = settings.iter().collect();
        assert_eq!(
            ids,
            [
                (SettingId::QPACK_BLOCKED_STREAMS, vi(16)),
                (SettingId::H3_DATAGRAM, vi(1))
            ]
        );
    }

    #[test]
    fn unknown_and_grease_kept() {
        // RFC 9114 §7.2.4.1: unknown identifiers, GREASE included, are ignored, not errors.
        let bytes = [0x40, 0x21, 0x05, 0x3f, 0x00];
        let settings = Settings::decode(&mut &bytes[..]).unwrap();
        let ids: Vec<_> = settings.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [SettingId::from_u32(0x21), SettingId::from_u32(0x3f)]);
        assert!(ids[0].is_grease());
        assert_eq!(
            format!("{settings:?}"),
            "{SettingId(0x21): 5, SettingId(0x3f): 0}"
        );
    }

    #[test]
    fn truncated_is_frame_error() {
        // RFC 9114 §7.1: a payload that ends mid-field.
        for bytes in [&[0x01][..], &[0x01, 0x50], &[0x40]] {
            let err = Settings::decode(&mut &bytes[..]).unwrap_err();
            assert_eq!(err, SettingsError::Truncated);
            assert_eq!(Code::from(err), Code::H3_FRAME_ERROR);
        }
    }

    #[test]
    fn duplicate_rejected() {
        // RFC 9114 §7.2.4: the same identifier twice is H3_SETTINGS_ERROR.
        let bytes = [0x06, 0x01, 0x06, 0x02];
        let err = Settings::decode(&mut &bytes[..]).unwrap_err();
        assert_eq!(
            err,
            SettingsError::Duplicate(SettingId::MAX_FIELD_SECTION_SIZE)
        );
        assert_eq!(Code::from(err), Code::H3_SETTINGS_ERROR);
    }

    #[test]
    fn longer_encodings_are_the_same_setting() {
        // RFC 9000 §16: a varint may use more bytes than it needs. Such a payload decodes to the
        // same settings and re-encodes in the shortest form.
        let long = [0x40, 0x01, 0x80, 0x00, 0x10, 0x00, 0x07, 0x10];
        let settings = Settings::decode(&mut &long[..]).unwrap();
        assert_eq!(
            settings,
            Settings::decode(&mut &[0x01, 0x50, 0x00, 0x07, 0x10][..]).unwrap()
        );
        assert_eq!(settings.encoded_len(), 5);
        assert_eq!(settings.qpack_max_table_capacity(), 4096);
        assert_eq!(settings.len(), 2);
        // RFC 9114 §7.2.4: a repeat is a repeat whatever its encoding.
        let err = Settings::decode(&mut &[0x06, 0x01, 0x40, 0x06, 0x02][..]).unwrap_err();
        assert_eq!(
            err,
            SettingsError::Duplicate(SettingId::MAX_FIELD_SECTION_SIZE)
        );
    }

    #[test]
    fn http2_ids_rejected() {
        // RFC 9114 §7.2.4.1: 0x0 and 0x2..=0x5 are H3_SETTINGS_ERROR.
        for id in [0x0, 0x2, 0x3, 0x4, 0x5] {
            let bytes = [id, 0x00];
            let err = Settings::decode(&mut &bytes[..]).unwrap_err();
            assert_eq!(
                err,
                SettingsError::Http2Reserved(SettingId::from_u32(id.into()))
            );
            assert_eq!(Code::from(err), Code::H3_SETTINGS_ERROR);
        }
    }

    #[test]
    fn boolean_values_checked() {
        // RFC 9297 §2.1.1 and RFC 9220 §3: only 0 and 1.
        let err = Settings::decode(&mut &[0x33, 0x02][..]).unwrap_err();
        assert_eq!(
            err,
            SettingsError::InvalidValue {
                id: SettingId::H3_DATAGRAM,
                value: vi(2)
            }
        );
        assert_eq!(Code::from(err), Code::H3_SETTINGS_ERROR);
        let err = Settings::decode(&mut &[0x08, 0x05][..]).unwrap_err();
        assert_eq!(Code::from(err), Code::H3_SETTINGS_ERROR);
        let ok = Settings::decode(&mut &[0x08, 0x01, 0x33, 0x01][..]).unwrap();
        assert!(ok.enable_connect_protocol() && ok.h3_datagram());
    }

    #[test]
    fn count_bounded() {
        let mut bytes = Vec::new();
        for i in 0..=Settings::MAX_ENTRIES as u64 {
            vi(0x100 + i).encode(&mut bytes);
            vi(0).encode(&mut bytes);
        }
        let err = Settings::decode(&mut &bytes[..]).unwrap_err();
        assert_eq!(err, SettingsError::TooMany);
        assert_eq!(Code::from(err), Code::H3_EXCESSIVE_LOAD);
    }

    #[test]
    fn webtransport_ids() {
        assert_eq!(SettingId::ENABLE_WEBTRANSPORT.into_inner(), 0x2b60_3742);
        assert_eq!(
            SettingId::WEBTRANSPORT_MAX_SESSIONS.into_inner(),
            0xc671_706a
        );
        assert_eq!(SettingId::WT_MAX_SESSIONS.into_inner(), 0x14e9_cd29);
        assert_eq!(SettingId::WT_ENABLED.into_inner(), 0x2c7c_f000);
        assert_eq!(format!("{:?}", SettingId::WT_ENABLED), "WT_ENABLED");
    }
}
