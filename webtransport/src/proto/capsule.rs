//! WebTransport's capsules on the CONNECT stream (draft-ietf-webtrans-http3-16 §5.6, §6):
//! session close and drain, and the flow-control capsules.
//!
//! The capsule framing itself (type, length, value; skipping unknown types) belongs to
//! `quay_h3::proto::capsule`; this module gives the WebTransport types their meaning.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quay_h3::error::Code;
use quay_h3::proto::capsule::{Capsule, CapsuleType};
use quay_h3::proto::{Codec, VarInt};

use crate::proto::error::WT_FLOW_CONTROL_ERROR;

/// The longest reason a WT_CLOSE_SESSION capsule may carry, in bytes (draft-16 §6).
pub const MAX_CLOSE_REASON: usize = 1024;

/// The largest stream count a WT_MAX_STREAMS or WT_STREAMS_BLOCKED capsule may carry: 2^60
/// (draft-16 §5.6.2).
pub const MAX_STREAM_COUNT: u64 = 1 << 60;

/// The capsule types WebTransport reads on a CONNECT stream; hand them to
/// `CapsuleReader::accept` so the reader keeps them (others are skipped).
pub const CAPSULE_TYPES: [CapsuleType; 8] = [
    CapsuleType::WT_CLOSE_SESSION,
    CapsuleType::WT_DRAIN_SESSION,
    CapsuleType::WT_MAX_DATA,
    CapsuleType::WT_MAX_STREAMS_BIDI,
    CapsuleType::WT_MAX_STREAMS_UNI,
    CapsuleType::WT_DATA_BLOCKED,
    CapsuleType::WT_STREAMS_BLOCKED_BIDI,
    CapsuleType::WT_STREAMS_BLOCKED_UNI,
];

/// Which kind of stream a stream-count capsule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Bidirectional streams.
    Bidi,
    /// Unidirectional streams.
    Uni,
}

/// A WebTransport capsule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WtCapsule {
    /// WT_CLOSE_SESSION: the session ends with an application code and a UTF-8 reason.
    CloseSession {
        /// The application error code.
        code: u32,
        /// Why, at most [`MAX_CLOSE_REASON`] bytes.
        reason: String,
    },
    /// WT_DRAIN_SESSION: the peer asks for the session to wind down.
    DrainSession,
    /// WT_MAX_DATA: the peer may send this many bytes on the session's streams in total.
    MaxData(VarInt),
    /// WT_MAX_STREAMS: the peer may open this many streams of this kind in total.
    MaxStreams(Direction, VarInt),
    /// WT_DATA_BLOCKED: the sender was blocked at this data limit.
    DataBlocked(VarInt),
    /// WT_STREAMS_BLOCKED: the sender was blocked at this stream limit.
    StreamsBlocked(Direction, VarInt),
}

impl WtCapsule {
    /// A WT_CLOSE_SESSION capsule; a reason over [`MAX_CLOSE_REASON`] bytes is cut at the last
    /// UTF-8 character boundary that fits (draft-16 §6).
    pub fn close(code: u32, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self::CloseSession {
            code,
            reason: reason[..end].to_owned(),
        }
    }

    /// Reads a WebTransport capsule; `Ok(None)` for any other capsule type (to be ignored).
    pub fn decode(capsule: &Capsule) -> Result<Option<Self>, WtCapsuleError> {
        let mut payload = capsule.payload.clone();
        let capsule = match capsule.ty {
            CapsuleType::WT_CLOSE_SESSION => {
                if payload.len() < 4 {
                    return Err(WtCapsuleError::Malformed);
                }
                let code = payload.get_u32();
                if payload.len() > MAX_CLOSE_REASON {
                    return Err(WtCapsuleError::ReasonTooLong);
                }
                let reason = String::from_utf8(payload.to_vec())
                    .map_err(|_| WtCapsuleError::ReasonNotUtf8)?;
                return Ok(Some(Self::CloseSession { code, reason }));
            }
            CapsuleType::WT_DRAIN_SESSION => Self::DrainSession,
            CapsuleType::WT_MAX_DATA => Self::MaxData(single_varint(&mut payload)?),
            CapsuleType::WT_DATA_BLOCKED => Self::DataBlocked(single_varint(&mut payload)?),
            CapsuleType::WT_MAX_STREAMS_BIDI => {
                Self::MaxStreams(Direction::Bidi, stream_count(&mut payload)?)
            }
            CapsuleType::WT_MAX_STREAMS_UNI => {
                Self::MaxStreams(Direction::Uni, stream_count(&mut payload)?)
            }
            CapsuleType::WT_STREAMS_BLOCKED_BIDI => {
                Self::StreamsBlocked(Direction::Bidi, stream_count(&mut payload)?)
            }
            CapsuleType::WT_STREAMS_BLOCKED_UNI => {
                Self::StreamsBlocked(Direction::Uni, stream_count(&mut payload)?)
            }
            _ => return Ok(None),
        };
        if payload.has_remaining() {
            return Err(WtCapsuleError::Malformed);
        }
        Ok(Some(capsule))
    }

    /// The capsule, ready for `Capsule::encode`.
    pub fn to_capsule(&self) -> Capsule {
        let mut payload = BytesMut::new();
        let ty = match self {
            Self::CloseSession { code, reason } => {
                payload.put_u32(*code);
                payload.put_slice(reason.as_bytes());
                CapsuleType::WT_CLOSE_SESSION
            }
            Self::DrainSession => CapsuleType::WT_DRAIN_SESSION,
            Self::MaxData(max) => {
                max.encode(&mut payload);
                CapsuleType::WT_MAX_DATA
            }
            Self::DataBlocked(max) => {
                max.encode(&mut payload);
                CapsuleType::WT_DATA_BLOCKED
            }
            Self::MaxStreams(direction, max) => {
                max.encode(&mut payload);
                match direction {
                    Direction::Bidi => CapsuleType::WT_MAX_STREAMS_BIDI,
                    Direction::Uni => CapsuleType::WT_MAX_STREAMS_UNI,
                }
            }
            Self::StreamsBlocked(direction, max) => {
                max.encode(&mut payload);
                match direction {
                    Direction::Bidi => CapsuleType::WT_STREAMS_BLOCKED_BIDI,
                    Direction::Uni => CapsuleType::WT_STREAMS_BLOCKED_UNI,
                }
            }
        };
        Capsule {
            ty,
            payload: payload.freeze(),
        }
    }
}

fn single_varint(payload: &mut Bytes) -> Result<VarInt, WtCapsuleError> {
    VarInt::decode(payload).map_err(|_| WtCapsuleError::Malformed)
}

fn stream_count(payload: &mut Bytes) -> Result<VarInt, WtCapsuleError> {
    let count = single_varint(payload)?;
    if count.into_inner() > MAX_STREAM_COUNT {
        return Err(WtCapsuleError::TooManyStreams);
    }
    Ok(count)
}

/// A WebTransport capsule that breaks the draft's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WtCapsuleError {
    /// The payload is not what the capsule type defines (too short, or bytes left over).
    #[error("malformed WebTransport capsule")]
    Malformed,
    /// A WT_CLOSE_SESSION reason longer than 1024 bytes.
    #[error("WT_CLOSE_SESSION reason longer than 1024 bytes")]
    ReasonTooLong,
    /// A WT_CLOSE_SESSION reason that is not UTF-8.
    #[error("WT_CLOSE_SESSION reason is not UTF-8")]
    ReasonNotUtf8,
    /// A stream count above 2^60.
    #[error("stream count above 2^60")]
    TooManyStreams,
}

impl From<WtCapsuleError> for Code {
    fn from(error: WtCapsuleError) -> Self {
        match error {
            // RFC 9297 §3.3: a malformed capsule makes the message malformed; draft-16 §6
            // names H3_MESSAGE_ERROR for a bad close reason.
            WtCapsuleError::Malformed
            | WtCapsuleError::ReasonTooLong
            | WtCapsuleError::ReasonNotUtf8 => Self::H3_MESSAGE_ERROR,
            // draft-16 §5.6.2: a count above 2^60 closes the session with a flow-control error.
            WtCapsuleError::TooManyStreams => WT_FLOW_CONTROL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(capsule: &WtCapsule) -> Vec<u8> {
        let mut bytes = Vec::new();
        capsule.to_capsule().encode(&mut bytes);
        bytes
    }

    fn parse(bytes: &[u8]) -> Result<Option<WtCapsule>, WtCapsuleError> {
        let capsule = Capsule::decode(&mut &bytes[..], 4096).unwrap();
        WtCapsule::decode(&capsule)
    }

    #[test]
    fn close_session_bytes() {
        // Type 0x2843 (2-byte varint 0x6843), length 7, code 42, "bye".
        let close = WtCapsule::close(42, "bye");
        let bytes = wire(&close);
        assert_eq!(bytes, [0x68, 0x43, 0x07, 0, 0, 0, 42, b'b', b'y', b'e']);
        assert_eq!(parse(&bytes), Ok(Some(close)));
    }

    #[test]
    fn drain_and_flow_control_bytes() {
        assert_eq!(
            wire(&WtCapsule::DrainSession),
            [0x80, 0x00, 0x78, 0xae, 0x00]
        );
        let max_data = WtCapsule::MaxData(VarInt::from_u32(0x4000));
        let bytes = wire(&max_data);
        assert_eq!(
            bytes,
            [0x99, 0x0b, 0x4d, 0x3d, 0x04, 0x80, 0x00, 0x40, 0x00]
        );
        assert_eq!(parse(&bytes), Ok(Some(max_data)));
        for capsule in [
            WtCapsule::DrainSession,
            WtCapsule::DataBlocked(VarInt::from_u32(7)),
            WtCapsule::MaxStreams(Direction::Bidi, VarInt::from_u32(100)),
            WtCapsule::MaxStreams(Direction::Uni, VarInt::from_u32(3)),
            WtCapsule::StreamsBlocked(Direction::Bidi, VarInt::from_u32(100)),
            WtCapsule::StreamsBlocked(Direction::Uni, VarInt::from_u32(0)),
        ] {
            assert_eq!(parse(&wire(&capsule)), Ok(Some(capsule)));
        }
    }

    #[test]
    fn long_reason_is_cut_at_a_character_boundary() {
        // 1023 ASCII bytes then a 3-byte character: the character does not fit whole.
        let reason = format!("{}€", "a".repeat(1023));
        let WtCapsule::CloseSession { reason: cut, .. } = WtCapsule::close(1, &reason) else {
            unreachable!()
        };
        assert_eq!(cut.len(), 1023);
        let exact = "b".repeat(1024);
        assert_eq!(
            WtCapsule::close(1, &exact),
            WtCapsule::CloseSession {
                code: 1,
                reason: exact.clone()
            }
        );
    }

    #[test]
    fn malformed_capsules() {
        let close = |payload: &[u8]| Capsule {
            ty: CapsuleType::WT_CLOSE_SESSION,
            payload: Bytes::copy_from_slice(payload),
        };
        assert_eq!(
            WtCapsule::decode(&close(&[0, 0, 1])),
            Err(WtCapsuleError::Malformed)
        );
        let mut long = vec![0, 0, 0, 1];
        long.extend(std::iter::repeat_n(b'x', 1025));
        assert_eq!(
            WtCapsule::decode(&close(&long)),
            Err(WtCapsuleError::ReasonTooLong)
        );
        assert_eq!(
            WtCapsule::decode(&close(&[0, 0, 0, 1, 0xff])),
            Err(WtCapsuleError::ReasonNotUtf8)
        );
        let drain = Capsule {
            ty: CapsuleType::WT_DRAIN_SESSION,
            payload: Bytes::from_static(b"x"),
        };
        assert_eq!(WtCapsule::decode(&drain), Err(WtCapsuleError::Malformed));
        let max_streams = |count: u64| {
            let mut payload = Vec::new();
            VarInt::from_u64(count).unwrap().encode(&mut payload);
            Capsule {
                ty: CapsuleType::WT_MAX_STREAMS_UNI,
                payload: payload.into(),
            }
        };
        assert!(WtCapsule::decode(&max_streams(MAX_STREAM_COUNT)).is_ok());
        let error = WtCapsule::decode(&max_streams(MAX_STREAM_COUNT + 1)).unwrap_err();
        assert_eq!(error, WtCapsuleError::TooManyStreams);
        assert_eq!(Code::from(error), WT_FLOW_CONTROL_ERROR);
        let empty_max_data = Capsule {
            ty: CapsuleType::WT_MAX_DATA,
            payload: Bytes::new(),
        };
        assert_eq!(
            WtCapsule::decode(&empty_max_data),
            Err(WtCapsuleError::Malformed)
        );
        assert_eq!(
            Code::from(WtCapsuleError::Malformed),
            Code::H3_MESSAGE_ERROR
        );
    }

    #[test]
    fn other_capsule_types_are_ignored() {
        let datagram = Capsule::datagram(Bytes::from_static(b"hi"));
        assert_eq!(WtCapsule::decode(&datagram), Ok(None));
        let grease = Capsule {
            ty: CapsuleType::grease(3),
            payload: Bytes::from_static(b"anything"),
        };
        assert_eq!(WtCapsule::decode(&grease), Ok(None));
    }
}
