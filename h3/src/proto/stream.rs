//! Stream types and stream prefixes (RFC 9114 §6.2, DESIGN.md for WebTransport).
//!
//! This module owns [`StreamType`], the first varint of a unidirectional stream, the decoded
//! prefix of a unidirectional stream ([`UniStreamHeader`]), and the optional WebTransport prefix
//! of a bidirectional stream ([`BidiStreamHeader`]). It does not own what happens to the stream
//! afterwards: that a second control stream is H3_STREAM_CREATION_ERROR, that unknown types are
//! read and discarded (RFC 9114 §6.2), or the WebTransport session rules.

use crate::proto::VarInt;
use crate::proto::{Codec, UnexpectedEnd};
use bytes::{Buf, BufMut};

use crate::proto::frame::FrameType;
use crate::proto::varint_len;

wire_values! {
    /// A unidirectional stream type (RFC 9114 §6.2, §11.2.4).
    ///
    /// Types not in this table, the reserved `0x1f * N + 0x21` ones included, are values; the
    /// receiver reads and discards such streams (RFC 9114 §6.2.3).
    pub struct StreamType;
    grease = 0x1f * N + 0x21;

    /// The control stream (RFC 9114 §6.2.1).
    CONTROL = 0x0;
    /// A push stream, followed by a push ID (RFC 9114 §6.2.2).
    PUSH = 0x1;
    /// The QPACK encoder stream (RFC 9204 §4.2).
    QPACK_ENCODER = 0x2;
    /// The QPACK decoder stream (RFC 9204 §4.2).
    QPACK_DECODER = 0x3;
    /// A WebTransport stream, followed by a session ID (DESIGN.md).
    WEBTRANSPORT = 0x54;
}

/// The prefix of a unidirectional stream: its type and, for push and WebTransport streams, the ID
/// that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UniStreamHeader {
    /// The control stream.
    Control,
    /// A push stream for `push_id`.
    Push {
        /// The push ID.
        push_id: VarInt,
    },
    /// The QPACK encoder stream.
    QpackEncoder,
    /// The QPACK decoder stream.
    QpackDecoder,
    /// A WebTransport unidirectional stream.
    WebTransport {
        /// The session ID: the stream ID of the CONNECT request.
        session_id: VarInt,
    },
    /// Any other type, GREASE included: read and discard the stream (RFC 9114 §6.2.3).
    Unknown(StreamType),
}

impl UniStreamHeader {
    /// A reserved stream type (`0x1f * n + 0x21`) for greasing (RFC 9114 §6.2.3).
    pub fn grease(n: u64) -> Self {
        Self::Unknown(StreamType::grease(n))
    }

    /// The stream type.
    pub fn ty(&self) -> StreamType {
        match self {
            Self::Control => StreamType::CONTROL,
            Self::Push { .. } => StreamType::PUSH,
            Self::QpackEncoder => StreamType::QPACK_ENCODER,
            Self::QpackDecoder => StreamType::QPACK_DECODER,
            Self::WebTransport { .. } => StreamType::WEBTRANSPORT,
            Self::Unknown(ty) => *ty,
        }
    }

    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        let id = match self {
            Self::Push { push_id: id } | Self::WebTransport { session_id: id } => {
                varint_len(id.into_inner())
            }
            _ => 0,
        };
        varint_len(self.ty().into_inner()) + id
    }
}

impl Codec for UniStreamHeader {
    fn decode<B: Buf>(buf: &mut B) -> Result<Self, UnexpectedEnd> {
        Ok(match StreamType::decode(buf)? {
            StreamType::CONTROL => Self::Control,
            StreamType::PUSH => Self::Push {
                push_id: VarInt::decode(buf)?,
            },
            StreamType::QPACK_ENCODER => Self::QpackEncoder,
            StreamType::QPACK_DECODER => Self::QpackDecoder,
            StreamType::WEBTRANSPORT => Self::WebTransport {
                session_id: VarInt::decode(buf)?,
            },
            ty => Self::Unknown(ty),
        })
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        self.ty().encode(buf);
        match self {
            Self::Push { push_id: id } | Self::WebTransport { session_id: id } => id.encode(buf),
            _ => {}
        }
    }
}

/// The start of a bidirectional stream: either a request (its first frame follows and nothing is
/// consumed) or the WebTransport signal 0x41 and a session ID (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BidiStreamHeader {
    /// An HTTP request stream: the bytes start with a frame.
    Request,
    /// A WebTransport bidirectional stream.
    WebTransport {
        /// The session ID: the stream ID of the CONNECT request.
        session_id: VarInt,
    },
}

impl BidiStreamHeader {
    /// Looks at the first varint of a bidirectional stream. For [`BidiStreamHeader::Request`],
    /// `buf` is left untouched so that the first frame can be read from it; for
    /// [`BidiStreamHeader::WebTransport`] the signal and session ID are consumed. `UnexpectedEnd`
    /// means more bytes are needed; `buf` is then untouched.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, UnexpectedEnd> {
        let mut cur = *buf;
        if FrameType::decode(&mut cur)? != FrameType::WEBTRANSPORT_STREAM {
            return Ok(Self::Request);
        }
        let session_id = VarInt::decode(&mut cur)?;
        *buf = cur;
        Ok(Self::WebTransport { session_id })
    }

    /// Writes the prefix: nothing for a request, the signal and session ID for WebTransport.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        if let Self::WebTransport { session_id } = self {
            FrameType::WEBTRANSPORT_STREAM.encode(buf);
            session_id.encode(buf);
        }
    }
}

/// Decodes the prefix of a peer unidirectional stream: its header, and the session ID that
/// follows for a WebTransport stream (part of its header) or for one of the extension `types`
/// (RFC 9114 §6.2; the extension's own rule). `None` when more bytes are needed; `cur` then
/// stays where it was only if the caller keeps its own copy (the caller reads from a buffer it
/// keeps until a prefix is complete).
pub fn decode_uni_prefix(
    types: &[StreamType],
    cur: &mut &[u8],
) -> Option<(UniStreamHeader, Option<VarInt>)> {
    let header = UniStreamHeader::decode(cur).ok()?;
    let session_id = match header {
        UniStreamHeader::WebTransport { session_id } => Some(session_id),
        header if types.contains(&header.ty()) => Some(VarInt::decode(cur).ok()?),
        _ => None,
    };
    Some((header, session_id))
}

/// Decodes the extension signal and session ID that may start a bidirectional stream:
/// `Some(Some(_))` for one of `signals` (both consumed), `Some(None)` for anything else (nothing
/// consumed, so a request's first frame stays in place), `None` when more bytes are needed.
pub fn decode_bidi_signal(
    signals: &[FrameType],
    cur: &mut &[u8],
) -> Option<Option<(FrameType, VarInt)>> {
    let mut look = *cur;
    let ty = FrameType::decode(&mut look).ok()?;
    if !signals.contains(&ty) {
        return Some(None);
    }
    let session_id = VarInt::decode(&mut look).ok()?;
    *cur = look;
    Some(Some((ty, session_id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::test_util::vi;

    fn check_uni(header: UniStreamHeader, bytes: &[u8]) {
        let mut buf = Vec::new();
        header.encode(&mut buf);
        assert_eq!(buf, bytes);
        assert_eq!(header.encoded_len(), bytes.len());
        let mut cur = bytes;
        assert_eq!(UniStreamHeader::decode(&mut cur), Ok(header));
        assert!(cur.is_empty());
        for end in 0..bytes.len() {
            assert_eq!(
                UniStreamHeader::decode(&mut &bytes[..end]),
                Err(UnexpectedEnd)
            );
        }
    }

    #[test]
    fn uni_headers() {
        // RFC 9114 §6.2: the type is the first varint on a unidirectional stream.
        check_uni(UniStreamHeader::Control, &[0x00]);
        check_uni(
            UniStreamHeader::Push { push_id: vi(0x41) },
            &[0x01, 0x40, 0x41],
        );
        check_uni(UniStreamHeader::QpackEncoder, &[0x02]);
        check_uni(UniStreamHeader::QpackDecoder, &[0x03]);
        check_uni(
            UniStreamHeader::WebTransport { session_id: vi(4) },
            &[0x40, 0x54, 0x04],
        );
        // RFC 9114 §6.2.3: reserved types are values.
        check_uni(UniStreamHeader::grease(0), &[0x21]);
        assert!(UniStreamHeader::grease(7).ty().is_grease());
        check_uni(
            UniStreamHeader::Unknown(StreamType::from_u32(0x1234)),
            &[0x52, 0x34],
        );
    }

    #[test]
    fn bidi_headers() {
        let mut cur = &[0x40, 0x41, 0x08, 0xff][..];
        assert_eq!(
            BidiStreamHeader::decode(&mut cur),
            Ok(BidiStreamHeader::WebTransport { session_id: vi(8) })
        );
        assert_eq!(cur, [0xff]);
        // A HEADERS frame: nothing consumed.
        let mut cur = &[0x01, 0x02][..];
        assert_eq!(
            BidiStreamHeader::decode(&mut cur),
            Ok(BidiStreamHeader::Request)
        );
        assert_eq!(cur, [0x01, 0x02]);
        for partial in [&[][..], &[0x40], &[0x40, 0x41]] {
            let mut cur = partial;
            assert_eq!(BidiStreamHeader::decode(&mut cur), Err(UnexpectedEnd));
            assert_eq!(cur, partial);
        }
        let mut buf = Vec::new();
        BidiStreamHeader::WebTransport { session_id: vi(8) }.encode(&mut buf);
        BidiStreamHeader::Request.encode(&mut buf);
        assert_eq!(buf, [0x40, 0x41, 0x08]);
    }

    #[test]
    fn debug_names() {
        assert_eq!(format!("{:?}", StreamType::QPACK_ENCODER), "QPACK_ENCODER");
        assert_eq!(
            format!("{:?}", StreamType::from_u32(0x21)),
            "StreamType(0x21)"
        );
    }
}
