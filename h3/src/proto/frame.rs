//! HTTP/3 frames (RFC 9114 §7) and PRIORITY_UPDATE (RFC 9218 §7.2).
//!
//! This module owns frame types ([`FrameType`]), the type-and-length header ([`FrameHeader`]),
//! whole frames ([`Frame`]) with their encoders, decoding of a complete frame under a payload size
//! bound, and [`FrameError`] with its mapping to a [`Code`]. It does not own reading a stream
//! chunk by chunk (that is [`crate::proto::reader::FrameReader`]), which frames are allowed on
//! which stream ([`crate::proto::message`]), the SETTINGS payload
//! ([`crate::proto::settings`]), or field sections, which stay QPACK-encoded `Bytes` here.
//!
//! # Size bound
//!
//! Non-DATA frames are buffered whole before they are decoded, so their payload length is checked
//! against a caller-chosen bound first. A frame over the bound is [`FrameError::TooLarge`], which
//! maps to H3_EXCESSIVE_LOAD: the frame is well formed, the peer is just asking for more memory than
//! we grant (RFC 9114 §10.5 lets an endpoint treat such load as H3_EXCESSIVE_LOAD), whereas
//! H3_FRAME_ERROR is for frames that break the layout rules of §7.1. DATA payloads are not bounded
//! here because [`FrameReader`](crate::proto::reader::FrameReader) streams them.

use crate::proto::VarInt;
use crate::proto::{Codec, UnexpectedEnd};
use bytes::{Buf, BufMut, Bytes};

use crate::error::Code;
use crate::proto::settings::{Settings, SettingsError};
use crate::proto::{len_varint, varint_len};

wire_values! {
    /// A frame type (RFC 9114 §7.2, §11.2.1).
    ///
    /// Types not in this table, the reserved `0x1f * N + 0x21` ones included, decode as
    /// [`Frame::Unknown`] and are ignored by the connection (RFC 9114 §9).
    pub struct FrameType;
    grease = 0x1f * N + 0x21;

    /// DATA: request or response content (RFC 9114 §7.2.1).
    DATA = 0x0;
    /// HEADERS: a QPACK-encoded field section (RFC 9114 §7.2.2).
    HEADERS = 0x1;
    /// HTTP/2 PRIORITY, reserved in HTTP/3 (RFC 9114 §7.2.8).
    HTTP2_PRIORITY = 0x2;
    /// CANCEL_PUSH: a push ID (RFC 9114 §7.2.3).
    CANCEL_PUSH = 0x3;
    /// SETTINGS (RFC 9114 §7.2.4).
    SETTINGS = 0x4;
    /// PUSH_PROMISE: a push ID and a field section (RFC 9114 §7.2.5).
    PUSH_PROMISE = 0x5;
    /// HTTP/2 PING, reserved in HTTP/3 (RFC 9114 §7.2.8).
    HTTP2_PING = 0x6;
    /// GOAWAY: a stream ID or push ID (RFC 9114 §7.2.6).
    GOAWAY = 0x7;
    /// HTTP/2 WINDOW_UPDATE, reserved in HTTP/3 (RFC 9114 §7.2.8).
    HTTP2_WINDOW_UPDATE = 0x8;
    /// HTTP/2 CONTINUATION, reserved in HTTP/3 (RFC 9114 §7.2.8).
    HTTP2_CONTINUATION = 0x9;
    /// MAX_PUSH_ID: a push ID (RFC 9114 §7.2.7).
    MAX_PUSH_ID = 0xd;
    /// Not a frame: the signal that starts a WebTransport bidirectional stream, in the place of
    /// the first frame type (DESIGN.md). See [`crate::proto::stream::BidiStreamHeader`].
    WEBTRANSPORT_STREAM = 0x41;
    /// PRIORITY_UPDATE for a request stream (RFC 9218 §7.2).
    PRIORITY_UPDATE_REQUEST = 0xf0700;
    /// PRIORITY_UPDATE for a push stream (RFC 9218 §7.2).
    PRIORITY_UPDATE_PUSH = 0xf0701;
}

impl FrameType {
    /// Whether this is an HTTP/2 frame type that HTTP/3 forbids (RFC 9114 §7.2.8).
    pub const fn is_http2_reserved(self) -> bool {
        matches!(self.into_inner(), 0x2 | 0x6 | 0x8 | 0x9)
    }

    /// Whether [`Frame::decode_payload`] parses this type; every other type is
    /// [`Frame::Unknown`] (or an error, for the HTTP/2 ones).
    pub const fn is_known(self) -> bool {
        matches!(
            self.into_inner(),
            0x0 | 0x1 | 0x3 | 0x4 | 0x5 | 0x7 | 0xd | 0xf0700 | 0xf0701
        )
    }
}

/// The type and length that start every frame (RFC 9114 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type.
    pub ty: FrameType,
    /// The payload length in bytes.
    pub len: VarInt,
}

impl FrameHeader {
    /// The header of a DATA frame whose payload is `len` bytes, for streaming a body: encode this,
    /// then write the payload bytes as they come.
    pub fn data(len: VarInt) -> Self {
        Self {
            ty: FrameType::DATA,
            len,
        }
    }

    /// The encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        varint_len(self.ty.into_inner()) + varint_len(self.len.into_inner())
    }

    /// Checks the rules that can be checked before the payload is read: HTTP/2 types are
    /// refused (RFC 9114 §7.2.8) and frames other than DATA must fit in `max_payload` bytes.
    pub fn check(&self, max_payload: u64) -> Result<(), FrameError> {
        if self.ty.is_http2_reserved() {
            return Err(FrameError::UnexpectedHttp2(self.ty));
        }
        if self.ty != FrameType::DATA && self.len.into_inner() > max_payload {
            return Err(FrameError::TooLarge {
                ty: self.ty,
                len: self.len.into_inner(),
                max: max_payload,
            });
        }
        Ok(())
    }
}

impl Codec for FrameHeader {
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, UnexpectedEnd> {
        let ty = FrameType::decode(buf)?;
        let len = VarInt::decode(buf)?;
        Ok(Self { ty, len })
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        self.ty.encode(buf);
        self.len.encode(buf);
    }
}

/// What a PRIORITY_UPDATE frame reprioritizes (RFC 9218 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PriorityElement {
    /// A request stream, by stream ID (frame type 0xf0700).
    Request(VarInt),
    /// A push, by push ID (frame type 0xf0701).
    Push(VarInt),
}

/// A PRIORITY_UPDATE frame (RFC 9218 §7.2).
///
/// Whether the ID refers to a valid request stream or promised push (H3_ID_ERROR otherwise) is
/// for the connection to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityUpdate {
    /// The stream or push being reprioritized.
    pub element: PriorityElement,
    /// The new priority, in the ASCII form of the `priority` header field (RFC 9218 §5).
    pub field_value: Bytes,
}

/// A PUSH_PROMISE frame (RFC 9114 §7.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPromise {
    /// The push ID.
    pub push_id: VarInt,
    /// The QPACK-encoded request field section.
    pub field_section: Bytes,
}

/// A complete HTTP/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// DATA with its whole payload. [`FrameReader`](crate::proto::reader::FrameReader) never
    /// produces this: it streams DATA payloads as chunks instead.
    Data(Bytes),
    /// HEADERS with its QPACK-encoded field section.
    Headers(Bytes),
    /// CANCEL_PUSH with a push ID.
    CancelPush(VarInt),
    /// SETTINGS.
    Settings(Settings),
    /// PUSH_PROMISE.
    PushPromise(PushPromise),
    /// GOAWAY with a stream ID (sent by servers) or push ID (sent by clients).
    Goaway(VarInt),
    /// MAX_PUSH_ID with a push ID.
    MaxPushId(VarInt),
    /// PRIORITY_UPDATE, either variant.
    PriorityUpdate(PriorityUpdate),
    /// A frame type this crate does not parse, GREASE included: the receiver ignores it
    /// (RFC 9114 §7.2.8, §9). Senders use it for greasing ([`Frame::grease`]).
    Unknown {
        /// The frame type.
        ty: FrameType,
        /// The raw payload.
        payload: Bytes,
    },
}

impl Frame {
    /// A reserved frame (type `0x1f * n + 0x21`) with `payload`, for greasing (RFC 9114 §7.2.8).
    pub fn grease(n: u64, payload: Bytes) -> Self {
        Self::Unknown {
            ty: FrameType::grease(n),
            payload,
        }
    }

    /// This frame's type.
    pub fn ty(&self) -> FrameType {
        match self {
            Self::Data(_) => FrameType::DATA,
            Self::Headers(_) => FrameType::HEADERS,
            Self::CancelPush(_) => FrameType::CANCEL_PUSH,
            Self::Settings(_) => FrameType::SETTINGS,
            Self::PushPromise(_) => FrameType::PUSH_PROMISE,
            Self::Goaway(_) => FrameType::GOAWAY,
            Self::MaxPushId(_) => FrameType::MAX_PUSH_ID,
            Self::PriorityUpdate(PriorityUpdate {
                element: PriorityElement::Request(_),
                ..
            }) => FrameType::PRIORITY_UPDATE_REQUEST,
            Self::PriorityUpdate(PriorityUpdate {
                element: PriorityElement::Push(_),
                ..
            }) => FrameType::PRIORITY_UPDATE_PUSH,
            Self::Unknown { ty, .. } => *ty,
        }
    }

    /// Decodes one whole frame from the front of `buf`.
    ///
    /// Returns [`FrameError::Incomplete`] when `buf` does not yet hold the whole frame; `buf` may
    /// then have been partly consumed, so decode from a copy (for instance a `&[u8]` cursor) and
    /// retry with more bytes. Frames other than DATA whose payload exceeds `max_payload` fail with
    /// [`FrameError::TooLarge`] as soon as the header is read.
    pub fn decode<B: Buf>(buf: &mut B, max_payload: u64) -> Result<Self, FrameError> {
        let header = FrameHeader::decode(buf).map_err(|_| FrameError::Incomplete)?;
        header.check(max_payload)?;
        let len = usize::try_from(header.len.into_inner()).map_err(|_| FrameError::Incomplete)?;
        if buf.remaining() < len {
            return Err(FrameError::Incomplete);
        }
        Self::decode_payload(header.ty, buf.copy_to_bytes(len))
    }

    /// Decodes the payload of a frame of type `ty`, all of `payload` and nothing more.
    pub fn decode_payload(ty: FrameType, payload: Bytes) -> Result<Self, FrameError> {
        let frame = match ty {
            FrameType::DATA => Self::Data(payload),
            FrameType::HEADERS => Self::Headers(payload),
            FrameType::CANCEL_PUSH => Self::CancelPush(single_varint(ty, payload)?),
            FrameType::SETTINGS => Self::Settings(Settings::decode(&mut payload.clone())?),
            FrameType::PUSH_PROMISE => {
                let (push_id, field_section) = varint_then_rest(ty, payload)?;
                Self::PushPromise(PushPromise {
                    push_id,
                    field_section,
                })
            }
            FrameType::GOAWAY => Self::Goaway(single_varint(ty, payload)?),
            FrameType::MAX_PUSH_ID => Self::MaxPushId(single_varint(ty, payload)?),
            FrameType::PRIORITY_UPDATE_REQUEST | FrameType::PRIORITY_UPDATE_PUSH => {
                let (id, field_value) = varint_then_rest(ty, payload)?;
                // RFC 9218 §7.2: the value is ASCII text in Structured Fields form; control
                // characters other than tab cannot be part of it.
                if field_value
                    .iter()
                    .any(|&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
                {
                    return Err(FrameError::Malformed(ty));
                }
                let element = if ty == FrameType::PRIORITY_UPDATE_REQUEST {
                    // RFC 9218 §7.2: the request variant names a request stream, and those are
                    // client-initiated bidirectional streams, whose IDs are multiples of 4.
                    if !id.into_inner().is_multiple_of(4) {
                        return Err(FrameError::InvalidId(ty));
                    }
                    PriorityElement::Request(id)
                } else {
                    PriorityElement::Push(id)
                };
                Self::PriorityUpdate(PriorityUpdate {
                    element,
                    field_value,
                })
            }
            // RFC 9114 §7.2.8: HTTP/2 frame types are a connection error.
            ty if ty.is_http2_reserved() => return Err(FrameError::UnexpectedHttp2(ty)),
            ty => Self::Unknown { ty, payload },
        };
        Ok(frame)
    }

    /// The payload length this frame encodes to.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Data(b) | Self::Headers(b) | Self::Unknown { payload: b, .. } => b.len(),
            Self::CancelPush(v) | Self::Goaway(v) | Self::MaxPushId(v) => {
                varint_len(v.into_inner())
            }
            Self::Settings(s) => s.encoded_len(),
            Self::PushPromise(p) => varint_len(p.push_id.into_inner()) + p.field_section.len(),
            Self::PriorityUpdate(p) => {
                let (PriorityElement::Request(id) | PriorityElement::Push(id)) = p.element;
                varint_len(id.into_inner()) + p.field_value.len()
            }
        }
    }

    /// The length of the whole encoded frame, header included.
    pub fn encoded_len(&self) -> usize {
        let len = self.payload_len();
        varint_len(self.ty().into_inner()) + varint_len(len as u64) + len
    }

    /// Encodes the whole frame, header included.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        FrameHeader {
            ty: self.ty(),
            len: len_varint(self.payload_len()),
        }
        .encode(buf);
        match self {
            Self::Data(b) | Self::Headers(b) | Self::Unknown { payload: b, .. } => {
                buf.put_slice(b);
            }
            Self::CancelPush(v) | Self::Goaway(v) | Self::MaxPushId(v) => v.encode(buf),
            Self::Settings(s) => s.encode(buf),
            Self::PushPromise(p) => {
                p.push_id.encode(buf);
                buf.put_slice(&p.field_section);
            }
            Self::PriorityUpdate(p) => {
                let (PriorityElement::Request(id) | PriorityElement::Push(id)) = p.element;
                id.encode(buf);
                buf.put_slice(&p.field_value);
            }
        }
    }
}

/// RFC 9114 §7.1: a payload that is exactly one varint; anything more or less is malformed.
fn single_varint(ty: FrameType, mut payload: Bytes) -> Result<VarInt, FrameError> {
    let value = VarInt::decode(&mut payload).map_err(|_| FrameError::Malformed(ty))?;
    if payload.has_remaining() {
        return Err(FrameError::Malformed(ty));
    }
    Ok(value)
}

fn varint_then_rest(ty: FrameType, mut payload: Bytes) -> Result<(VarInt, Bytes), FrameError> {
    let value = VarInt::decode(&mut payload).map_err(|_| FrameError::Malformed(ty))?;
    Ok((value, payload))
}

/// Why frame bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not an error yet: more bytes are needed. If the stream has ended cleanly, the frame was
    /// truncated, which is H3_FRAME_ERROR (RFC 9114 §7.1).
    #[error("incomplete frame")]
    Incomplete,
    /// The stream ended cleanly in the middle of a frame (RFC 9114 §7.1).
    #[error("stream ended inside a frame")]
    Truncated,
    /// An HTTP/2 frame type (RFC 9114 §7.2.8).
    #[error("HTTP/2 frame type {0:?} is not allowed in HTTP/3")]
    UnexpectedHttp2(FrameType),
    /// A non-DATA frame larger than the local bound (see the module docs).
    #[error("{ty:?} frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The frame type.
        ty: FrameType,
        /// The announced payload length.
        len: u64,
        /// The bound in force.
        max: u64,
    },
    /// The payload does not have the layout its type requires (RFC 9114 §7.1).
    #[error("malformed {0:?} frame")]
    Malformed(FrameType),
    /// An ID in the payload cannot refer to what the frame type says, such as a
    /// PRIORITY_UPDATE for a stream that is not a request stream (RFC 9218 §7.2).
    #[error("{0:?} frame names an impossible ID")]
    InvalidId(FrameType),
    /// The SETTINGS payload broke a rule.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

impl From<FrameError> for Code {
    fn from(error: FrameError) -> Self {
        match error {
            // RFC 9114 §7.1: a frame cut short by the end of the stream, or a payload whose fields
            // do not fill it exactly.
            FrameError::Incomplete | FrameError::Truncated | FrameError::Malformed(_) => {
                Self::H3_FRAME_ERROR
            }
            // RFC 9114 §7.2.8.
            FrameError::UnexpectedHttp2(_) => Self::H3_FRAME_UNEXPECTED,
            // RFC 9114 §10.5; see the module docs.
            FrameError::TooLarge { .. } => Self::H3_EXCESSIVE_LOAD,
            // RFC 9218 §7.2.
            FrameError::InvalidId(_) => Self::H3_ID_ERROR,
            FrameError::Settings(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::settings::SettingId;
    use crate::proto::test_util::vi;

    const MAX: u64 = 1 << 16;

    /// Encodes `frame`, checks the bytes, decodes them back, and checks every strict prefix is
    /// `Incomplete`.
    fn check(frame: Frame, bytes: &[u8]) {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        assert_eq!(buf, bytes, "{frame:?}");
        assert_eq!(frame.encoded_len(), bytes.len());
        let mut cur = bytes;
        assert_eq!(Frame::decode(&mut cur, MAX).unwrap(), frame);
        assert!(cur.is_empty());
        for end in 0..bytes.len() {
            assert_eq!(
                Frame::decode(&mut &bytes[..end], MAX),
                Err(FrameError::Incomplete),
                "prefix of {end} bytes of {frame:?}"
            );
        }
    }

    #[test]
    fn data() {
        check(
            Frame::Data(Bytes::from_static(b"hi")),
            &[0x00, 0x02, b'h', b'i'],
        );
        check(Frame::Data(Bytes::new()), &[0x00, 0x00]);
    }

    #[test]
    fn headers() {
        check(
            Frame::Headers(Bytes::from_static(&[0x00, 0x00, 0xd1])),
            &[0x01, 0x03, 0x00, 0x00, 0xd1],
        );
    }

    #[test]
    fn cancel_push_goaway_max_push_id() {
        check(Frame::CancelPush(vi(3)), &[0x03, 0x01, 0x03]);
        check(Frame::Goaway(vi(0x3c)), &[0x07, 0x01, 0x3c]);
        check(
            Frame::Goaway(vi(0x4000)),
            &[0x07, 0x04, 0x80, 0x00, 0x40, 0x00],
        );
        check(Frame::MaxPushId(vi(0x40)), &[0x0d, 0x02, 0x40, 0x40]);
    }

    #[test]
    fn settings() {
        let mut s = Settings::new();
        s.insert(SettingId::MAX_FIELD_SECTION_SIZE, vi(0x10))
            .unwrap();
        s.insert(SettingId::ENABLE_CONNECT_PROTOCOL, vi(1)).unwrap();
        check(Frame::Settings(s), &[0x04, 0x04, 0x06, 0x10, 0x08, 0x01]);
        check(Frame::Settings(Settings::new()), &[0x04, 0x00]);
    }

    #[test]
    fn push_promise() {
        check(
            Frame::PushPromise(PushPromise {
                push_id: vi(1),
                field_section: Bytes::from_static(&[0xaa, 0xbb]),
            }),
            &[0x05, 0x03, 0x01, 0xaa, 0xbb],
        );
    }

    #[test]
    fn priority_update() {
        // RFC 9218 §7.2: 0xf0700 encodes as a 4-byte varint.
        check(
            Frame::PriorityUpdate(PriorityUpdate {
                element: PriorityElement::Request(vi(4)),
                field_value: Bytes::from_static(b"u=1"),
            }),
            &[0x80, 0x0f, 0x07, 0x00, 0x04, 0x04, b'u', b'=', b'1'],
        );
        check(
            Frame::PriorityUpdate(PriorityUpdate {
                element: PriorityElement::Push(vi(2)),
                field_value: Bytes::from_static(b"i"),
            }),
            &[0x80, 0x0f, 0x07, 0x01, 0x02, 0x02, b'i'],
        );
    }

    #[test]
    fn grease_frame() {
        // RFC 9114 §7.2.8: reserved types decode as values the receiver ignores.
        let frame = Frame::grease(1, Bytes::from_static(b"x"));
        assert_eq!(frame.ty().into_inner(), 0x40);
        assert!(frame.ty().is_grease());
        check(frame, &[0x40, 0x40, 0x01, b'x']);
        check(
            Frame::Unknown {
                ty: FrameType::from_u32(0x21),
                payload: Bytes::new(),
            },
            &[0x21, 0x00],
        );
    }

    #[test]
    fn http2_types_are_frame_unexpected() {
        // RFC 9114 §7.2.8: PRIORITY, PING, WINDOW_UPDATE, CONTINUATION.
        for ty in [0x02, 0x06, 0x08, 0x09] {
            let err = Frame::decode(&mut &[ty, 0x00][..], MAX).unwrap_err();
            assert_eq!(
                err,
                FrameError::UnexpectedHttp2(FrameType::from_u32(ty.into()))
            );
            assert_eq!(Code::from(err), Code::H3_FRAME_UNEXPECTED);
            // Refused from the header alone, before the payload arrives.
            let err = Frame::decode(&mut &[ty, 0x10][..], MAX).unwrap_err();
            assert_eq!(Code::from(err), Code::H3_FRAME_UNEXPECTED);
        }
    }

    #[test]
    fn too_large() {
        let err = Frame::decode(&mut &[0x01, 0x41, 0x00][..], 0xff).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                ty: FrameType::HEADERS,
                len: 0x100,
                max: 0xff
            }
        );
        assert_eq!(Code::from(err), Code::H3_EXCESSIVE_LOAD);
        // DATA is never bounded: a reader streams it.
        assert_eq!(
            Frame::decode(&mut &[0x00, 0x41, 0x00][..], 0xff),
            Err(FrameError::Incomplete)
        );
    }

    #[test]
    fn malformed_payloads() {
        // RFC 9114 §7.1: trailing bytes, or fields that stop before the payload does.
        let cases: &[(&[u8], FrameType)] = &[
            (&[0x03, 0x02, 0x01, 0x02], FrameType::CANCEL_PUSH),
            (&[0x07, 0x00], FrameType::GOAWAY),
            (&[0x07, 0x01, 0x40], FrameType::GOAWAY),
            (&[0x0d, 0x03, 0x01, 0x02, 0x03], FrameType::MAX_PUSH_ID),
            (&[0x05, 0x00], FrameType::PUSH_PROMISE),
            (
                &[0x80, 0x0f, 0x07, 0x00, 0x00],
                FrameType::PRIORITY_UPDATE_REQUEST,
            ),
            (
                &[0x80, 0x0f, 0x07, 0x00, 0x02, 0x00, 0x0a],
                FrameType::PRIORITY_UPDATE_REQUEST,
            ),
        ];
        for (bytes, ty) in cases {
            let err = Frame::decode(&mut &bytes[..], MAX).unwrap_err();
            assert_eq!(err, FrameError::Malformed(*ty), "{bytes:x?}");
            assert_eq!(Code::from(err), Code::H3_FRAME_ERROR);
        }
    }

    #[test]
    fn priority_update_for_a_non_request_stream() {
        // RFC 9218 §7.2: stream 2 is server-initiated, not a request stream.
        let err = Frame::decode(&mut &[0x80, 0x0f, 0x07, 0x00, 0x01, 0x02][..], MAX).unwrap_err();
        assert_eq!(
            err,
            FrameError::InvalidId(FrameType::PRIORITY_UPDATE_REQUEST)
        );
        assert_eq!(Code::from(err), Code::H3_ID_ERROR);
        // Push IDs have no such structure.
        assert!(Frame::decode(&mut &[0x80, 0x0f, 0x07, 0x01, 0x01, 0x02][..], MAX).is_ok());
    }

    #[test]
    fn settings_errors_pass_through() {
        let err = Frame::decode(&mut &[0x04, 0x02, 0x02, 0x00][..], MAX).unwrap_err();
        assert_eq!(
            err,
            FrameError::Settings(SettingsError::Http2Reserved(SettingId::HTTP2_ENABLE_PUSH))
        );
        assert_eq!(Code::from(err), Code::H3_SETTINGS_ERROR);
        let err = Frame::decode(&mut &[0x04, 0x01, 0x06][..], MAX).unwrap_err();
        assert_eq!(Code::from(err), Code::H3_FRAME_ERROR);
    }

    #[test]
    fn debug_names() {
        assert_eq!(
            format!("{:?}", FrameType::PRIORITY_UPDATE_PUSH),
            "PRIORITY_UPDATE_PUSH"
        );
        assert_eq!(
            format!("{:?}", FrameType::from_u32(0x21)),
            "FrameType(0x21)"
        );
    }
}
