//! The HTTP/3 datagram prefix (RFC 9297 §2.1).
//!
//! This module owns the Quarter Stream ID that starts every HTTP/3 datagram: encoding it from a
//! request stream ID and decoding it back, with the errors RFC 9297 names. It does not own
//! routing (which request or WebTransport session a stream ID belongs to), dropping datagrams for
//! closed streams, or whether datagrams were negotiated
//! ([`Settings::h3_datagram`](crate::proto::settings::Settings::h3_datagram)).

use crate::proto::Codec;
use crate::proto::VarInt;
use bytes::{BufMut, Bytes};

use crate::error::Code;
use crate::proto::varint_len;

/// The largest Quarter Stream ID: the largest stream ID, 2^62 - 1, divided by four
/// (RFC 9297 §2.1).
const MAX_QUARTER_STREAM_ID: u64 = (1 << 60) - 1;

/// A decoded HTTP/3 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The client-initiated bidirectional stream the datagram belongs to (four times the
    /// Quarter Stream ID).
    pub stream_id: VarInt,
    /// The HTTP datagram payload; may be empty.
    pub payload: Bytes,
}

impl Datagram {
    /// Splits the payload of a QUIC DATAGRAM frame into stream ID and payload (zero-copy).
    pub fn decode(mut datagram: Bytes) -> Result<Self, DatagramError> {
        let quarter = VarInt::decode(&mut datagram).map_err(|_| DatagramError::Truncated)?;
        // RFC 9297 §2.1: a Quarter Stream ID above 2^60 - 1 cannot name a stream.
        if quarter.into_inner() > MAX_QUARTER_STREAM_ID {
            return Err(DatagramError::QuarterStreamIdTooLarge(quarter));
        }
        // Cannot fail: quarter <= 2^60 - 1, so 4 * quarter < 2^62.
        let stream_id = VarInt::from_u64(quarter.into_inner() << 2).unwrap_or(VarInt::MAX);
        Ok(Self {
            stream_id,
            payload: datagram,
        })
    }

    /// Writes the Quarter Stream ID for `stream_id`; the payload follows it.
    ///
    /// Fails if `stream_id` is not a client-initiated bidirectional stream (a multiple of 4),
    /// the only streams datagrams can belong to.
    pub fn encode_prefix<B: BufMut>(
        stream_id: VarInt,
        buf: &mut B,
    ) -> Result<(), NotRequestStream> {
        quarter(stream_id)?.encode(buf);
        Ok(())
    }

    /// The length of the prefix [`Datagram::encode_prefix`] writes, for sizing against the QUIC
    /// maximum datagram size.
    pub fn prefix_len(stream_id: VarInt) -> usize {
        varint_len(stream_id.into_inner() >> 2)
    }

    /// Encodes the whole datagram.
    pub fn encode<B: BufMut>(&self, buf: &mut B) -> Result<(), NotRequestStream> {
        Self::encode_prefix(self.stream_id, buf)?;
        buf.put_slice(&self.payload);
        Ok(())
    }
}

fn quarter(stream_id: VarInt) -> Result<VarInt, NotRequestStream> {
    let id = stream_id.into_inner();
    if !id.is_multiple_of(4) {
        return Err(NotRequestStream(stream_id));
    }
    // Dividing a valid varint keeps it valid.
    Ok(VarInt::from_u64(id >> 2).unwrap_or(VarInt::MAX))
}

/// A received datagram that cannot be parsed. Both are connection errors of type
/// H3_DATAGRAM_ERROR (RFC 9297 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram is too short to hold a Quarter Stream ID.
    #[error("datagram too short for a quarter stream ID")]
    Truncated,
    /// The Quarter Stream ID is above 2^60 - 1.
    #[error("quarter stream ID {0} is out of range")]
    QuarterStreamIdTooLarge(VarInt),
}

impl From<DatagramError> for Code {
    fn from(error: DatagramError) -> Self {
        match error {
            // RFC 9297 §2.1, both cases.
            DatagramError::Truncated | DatagramError::QuarterStreamIdTooLarge(_) => {
                Self::H3_DATAGRAM_ERROR
            }
        }
    }
}

/// A local misuse: the stream ID given for a datagram is not a client-initiated bidirectional
/// stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream {0} is not a request stream")]
pub struct NotRequestStream(pub VarInt);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::test_util::vi;

    #[test]
    fn exact_bytes() {
        let datagram = Datagram {
            stream_id: vi(0x100),
            payload: Bytes::from_static(b"ab"),
        };
        let mut buf = Vec::new();
        datagram.encode(&mut buf).unwrap();
        // RFC 9297 §2.1: stream 0x100 is quarter stream ID 0x40, a two-byte varint.
        assert_eq!(buf, [0x40, 0x40, b'a', b'b']);
        assert_eq!(Datagram::prefix_len(vi(0x100)), 2);
        assert_eq!(Datagram::decode(Bytes::from(buf)), Ok(datagram));
        assert_eq!(
            Datagram::decode(Bytes::from_static(&[0x00])),
            Ok(Datagram {
                stream_id: vi(0),
                payload: Bytes::new()
            })
        );
    }

    #[test]
    fn malformed() {
        for bytes in [&[][..], &[0x40], &[0xc0, 0, 0, 0]] {
            let err = Datagram::decode(Bytes::copy_from_slice(bytes)).unwrap_err();
            assert_eq!(err, DatagramError::Truncated);
            assert_eq!(Code::from(err), Code::H3_DATAGRAM_ERROR);
        }
        // 2^60 as an 8-byte varint.
        let err = Datagram::decode(Bytes::from_static(&[0xd0, 0, 0, 0, 0, 0, 0, 0])).unwrap_err();
        assert_eq!(err, DatagramError::QuarterStreamIdTooLarge(vi(1 << 60)));
        assert_eq!(Code::from(err), Code::H3_DATAGRAM_ERROR);
        let top = Datagram::decode(Bytes::from_static(&[
            0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]));
        assert_eq!(top.unwrap().stream_id, vi((1 << 62) - 4));
    }

    #[test]
    fn only_request_streams() {
        let mut buf = Vec::new();
        assert_eq!(
            Datagram::encode_prefix(vi(2), &mut buf),
            Err(NotRequestStream(vi(2)))
        );
        assert!(buf.is_empty());
    }
}
