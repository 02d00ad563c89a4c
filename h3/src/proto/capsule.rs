//! The Capsule Protocol (RFC 9297 §3).
//!
//! This module owns capsule types ([`CapsuleType`], including the WebTransport ones from
//! DESIGN.md as named constants), whole capsules ([`Capsule`]) with their encoder, and
//! [`CapsuleReader`], a chunk-fed reader for the capsules carried in the DATA payloads of an
//! Extended CONNECT stream. It does not own the meaning of any capsule value beyond DATAGRAM's
//! (WebTransport's capsules are parsed by `quay-webtransport`), nor the DATA framing around the
//! capsule stream (feed [`FrameEvent::Data`](crate::proto::reader::FrameEvent::Data) chunks in).
//!
//! # Errors
//!
//! RFC 9297 §3.3 makes any capsule error a malformed message, which RFC 9114 §4.1.2 turns into a
//! stream error of type H3_MESSAGE_ERROR. A capsule over the local size bound is
//! H3_EXCESSIVE_LOAD, by the same reasoning as oversized frames (see
//! [`crate::proto::frame`]).

use std::borrow::Cow;

use crate::proto::Codec;
use crate::proto::VarInt;
use bytes::{Buf, BufMut, Bytes};

use crate::error::Code;
use crate::proto::reader::{MAX_BUFFERED_PAYLOAD, Policy, TlvEvent, TlvReader};
use crate::proto::{len_varint, varint_len};

wire_values! {
    /// A capsule type (RFC 9297 §3.2, §5.4).
    ///
    /// Types not in this table, the reserved `0x29 * N + 0x17` ones included, are values; the
    /// receiver drops such capsules (RFC 9297 §3.2).
    pub struct CapsuleType;
    grease = 0x29 * N + 0x17;

    /// DATAGRAM: an HTTP datagram sent on the stream (RFC 9297 §3.5).
    DATAGRAM = 0x00;
    /// WebTransport: close the session (DESIGN.md).
    WT_CLOSE_SESSION = 0x2843;
    /// WebTransport: drain the session (DESIGN.md).
    WT_DRAIN_SESSION = 0x78ae;
    /// WebTransport: session data limit (DESIGN.md).
    WT_MAX_DATA = 0x190b4d3d;
    /// WebTransport: bidirectional stream limit (DESIGN.md).
    WT_MAX_STREAMS_BIDI = 0x190b4d3f;
    /// WebTransport: unidirectional stream limit (DESIGN.md).
    WT_MAX_STREAMS_UNI = 0x190b4d40;
    /// WebTransport: blocked by the session data limit (DESIGN.md).
    WT_DATA_BLOCKED = 0x190b4d41;
    /// WebTransport: blocked by the bidirectional stream limit (DESIGN.md).
    WT_STREAMS_BLOCKED_BIDI = 0x190b4d43;
    /// WebTransport: blocked by the unidirectional stream limit (DESIGN.md).
    WT_STREAMS_BLOCKED_UNI = 0x190b4d44;
}

/// One capsule: a type and its raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capsule {
    /// The capsule type.
    pub ty: CapsuleType,
    /// The capsule value.
    pub payload: Bytes,
}

impl Capsule {
    /// A DATAGRAM capsule carrying `payload` (RFC 9297 §3.5).
    pub fn datagram(payload: Bytes) -> Self {
        Self {
            ty: CapsuleType::DATAGRAM,
            payload,
        }
    }

    /// Decodes one capsule from the front of `buf`. [`CapsuleError::Incomplete`] means more bytes
    /// are needed (decode from a copy: `buf` may have been partly consumed). A value longer than
    /// `max_payload` is [`CapsuleError::TooLarge`], whatever the type.
    pub fn decode<B: Buf>(buf: &mut B, max_payload: u64) -> Result<Self, CapsuleError> {
        let ty = CapsuleType::decode(buf).map_err(|_| CapsuleError::Incomplete)?;
        let len = VarInt::decode(buf).map_err(|_| CapsuleError::Incomplete)?;
        check_len(ty, len, max_payload)?;
        let len = usize::try_from(len.into_inner()).map_err(|_| CapsuleError::Incomplete)?;
        if buf.remaining() < len {
            return Err(CapsuleError::Incomplete);
        }
        Ok(Self {
            ty,
            payload: buf.copy_to_bytes(len),
        })
    }

    /// The encoded length, type and length fields included.
    pub fn encoded_len(&self) -> usize {
        varint_len(self.ty.into_inner())
            + varint_len(self.payload.len() as u64)
            + self.payload.len()
    }

    /// Encodes the capsule.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        self.ty.encode(buf);
        len_varint(self.payload.len()).encode(buf);
        buf.put_slice(&self.payload);
    }
}

fn check_len(ty: CapsuleType, len: VarInt, max: u64) -> Result<(), CapsuleError> {
    if len.into_inner() > max {
        return Err(CapsuleError::TooLarge {
            ty,
            len: len.into_inner(),
            max,
        });
    }
    Ok(())
}

/// Why capsule bytes could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapsuleError {
    /// Not an error yet: more bytes are needed. At the clean end of the stream it means the last
    /// capsule was truncated (RFC 9297 §3.3).
    #[error("incomplete capsule")]
    Incomplete,
    /// The stream ended cleanly inside a capsule (RFC 9297 §3.3).
    #[error("stream ended inside a capsule")]
    Truncated,
    /// A capsule the reader would buffer is larger than the local bound.
    #[error("{ty:?} capsule of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The capsule type.
        ty: CapsuleType,
        /// The announced length.
        len: u64,
        /// The bound in force.
        max: u64,
    },
}

impl From<CapsuleError> for Code {
    fn from(error: CapsuleError) -> Self {
        match error {
            // RFC 9297 §3.3 with RFC 9114 §4.1.2: a malformed message, on this stream only.
            CapsuleError::Incomplete | CapsuleError::Truncated => Self::H3_MESSAGE_ERROR,
            // A local limit (RFC 9114 §10.5), see the module docs.
            CapsuleError::TooLarge { .. } => Self::H3_EXCESSIVE_LOAD,
        }
    }
}

/// Whether a reader that was told to accept `accepted` returns a capsule of type `ty`:
/// DATAGRAM always (RFC 9297 §3.5), the others when asked for.
fn accepts(accepted: &[CapsuleType], ty: CapsuleType) -> bool {
    ty == CapsuleType::DATAGRAM || accepted.contains(&ty)
}

/// Reads capsules from the content of an Extended CONNECT stream, fed in arbitrary chunks.
///
/// Capsules of the types it was told to accept ([`CapsuleType::DATAGRAM`] by default,
/// [`CapsuleReader::accept`] for more) are buffered up to the size bound and returned whole; all
/// other types are skipped without buffering, whatever their size, as RFC 9297 §3.2 asks.
///
/// Call order: [`CapsuleReader::handle_data`] with each chunk, then
/// [`CapsuleReader::poll_capsule`] until `Ok(None)`; [`CapsuleReader::handle_end`] at the clean
/// end of the stream.
///
/// ```
/// use bytes::Bytes;
/// use quay_h3::proto::capsule::{Capsule, CapsuleReader, CapsuleType};
///
/// let mut reader = CapsuleReader::new(1500);
/// reader.accept(CapsuleType::WT_CLOSE_SESSION);
/// // An unknown capsule (type 0x17, skipped), then a DATAGRAM capsule split in two chunks.
/// reader.handle_data(Bytes::from_static(&[0x17, 0x02, 0xaa, 0xbb, 0x00, 0x03, b'a']));
/// assert_eq!(reader.poll_capsule()?, None);
/// reader.handle_data(Bytes::from_static(b"bc"));
/// assert_eq!(reader.poll_capsule()?, Some(Capsule::datagram(Bytes::from_static(b"abc"))));
/// reader.handle_end()?;
/// # Ok::<(), quay_h3::proto::capsule::CapsuleError>(())
/// ```
#[derive(Debug)]
pub struct CapsuleReader {
    tlv: TlvReader,
    max_payload: u64,
    /// Types returned besides DATAGRAM: a static list ([`CapsuleReader::accept_all`]) or a
    /// buffer of exactly their number, since a reader lives as long as its stream (a
    /// WebTransport session's CONNECT stream, say).
    accepted: Cow<'static, [CapsuleType]>,
}

impl CapsuleReader {
    /// A reader that accepts DATAGRAM capsules of at most `max_payload` bytes (and of at most
    /// 4 GiB whatever `max_payload` says).
    pub fn new(max_payload: u64) -> Self {
        Self {
            tlv: TlvReader::new(),
            max_payload: max_payload.min(MAX_BUFFERED_PAYLOAD),
            accepted: Cow::Borrowed(&[]),
        }
    }

    /// Also return capsules of type `ty` (bounded like the others) instead of skipping them.
    pub fn accept(&mut self, ty: CapsuleType) -> &mut Self {
        if !accepts(&self.accepted, ty) {
            let accepted = self.accepted.to_mut();
            accepted.reserve_exact(1);
            accepted.push(ty);
        }
        self
    }

    /// Also return capsules of the types in `types`, a list that lives as long as the program
    /// (a protocol's constant list): nothing is allocated for it.
    pub fn accept_all(&mut self, types: &'static [CapsuleType]) -> &mut Self {
        if self.accepted.is_empty() {
            self.accepted = Cow::Borrowed(types);
        } else {
            for &ty in types {
                self.accept(ty);
            }
        }
        self
    }

    /// Adds the next chunk of the capsule stream.
    pub fn handle_data(&mut self, chunk: Bytes) {
        self.tlv.handle_data(chunk);
    }

    /// The next accepted capsule, `Ok(None)` when more bytes are needed.
    pub fn poll_capsule(&mut self) -> Result<Option<Capsule>, CapsuleError> {
        let max = self.max_payload;
        let accepted = &*self.accepted;
        loop {
            let event = self.tlv.poll(|ty, len| -> Result<Policy, CapsuleError> {
                let ty = CapsuleType::from_varint(ty);
                if !accepts(accepted, ty) {
                    // RFC 9297 §3.2: unknown capsule types are dropped silently.
                    return Ok(Policy::Skip);
                }
                check_len(ty, len, max)?;
                Ok(Policy::Buffer)
            })?;
            match event {
                None => return Ok(None),
                Some(TlvEvent::Header { .. }) => continue,
                Some(TlvEvent::Payload { ty, payload }) => {
                    return Ok(Some(Capsule {
                        ty: CapsuleType::from_varint(ty),
                        payload,
                    }));
                }
                // The policy above never streams.
                Some(TlvEvent::Chunk(_)) => continue,
            }
        }
    }

    /// Whether the reader sits between two capsules with no byte of a next one: nothing has
    /// arrived past the last capsule returned or skipped.
    pub fn is_idle(&self) -> bool {
        self.tlv.is_idle()
    }

    /// Call at the clean end of the stream, after draining [`CapsuleReader::poll_capsule`].
    /// Fails with [`CapsuleError::Truncated`] if the stream stopped inside a capsule
    /// (RFC 9297 §3.3).
    pub fn handle_end(&mut self) -> Result<(), CapsuleError> {
        if self.tlv.is_idle() {
            Ok(())
        } else {
            Err(CapsuleError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(capsule: Capsule, bytes: &[u8]) {
        let mut buf = Vec::new();
        capsule.encode(&mut buf);
        assert_eq!(buf, bytes);
        assert_eq!(capsule.encoded_len(), bytes.len());
        let mut cur = bytes;
        assert_eq!(Capsule::decode(&mut cur, 1024), Ok(capsule.clone()));
        assert!(cur.is_empty());
        for end in 0..bytes.len() {
            assert_eq!(
                Capsule::decode(&mut &bytes[..end], 1024),
                Err(CapsuleError::Incomplete)
            );
        }
        // The streaming reader agrees, byte by byte.
        let mut reader = CapsuleReader::new(1024);
        reader.accept(capsule.ty);
        let mut got = Vec::new();
        for b in bytes {
            reader.handle_data(Bytes::copy_from_slice(&[*b]));
            got.extend(reader.poll_capsule().unwrap());
        }
        reader.handle_end().unwrap();
        assert_eq!(got, [capsule]);
    }

    #[test]
    fn a_reader_returns_datagram_and_the_types_it_accepts_and_skips_the_rest() {
        static TYPES: [CapsuleType; 2] = [CapsuleType::from_u32(0x41), CapsuleType::from_u32(0x42)];
        let capsules: Vec<Capsule> = [0x41, 0x43, 0x00, 0x42, 0x44]
            .into_iter()
            .map(|ty| Capsule {
                ty: CapsuleType::from_u32(ty),
                payload: Bytes::from_static(b"x"),
            })
            .collect();
        let read = |reader: &mut CapsuleReader| {
            for capsule in &capsules {
                let mut buf = Vec::new();
                capsule.encode(&mut buf);
                reader.handle_data(buf.into());
            }
            let mut types = Vec::new();
            while let Some(capsule) = reader.poll_capsule().unwrap() {
                types.push(capsule.ty.into_inner());
            }
            types
        };
        // A static list: nothing allocated.
        let mut reader = CapsuleReader::new(16);
        reader.accept_all(&TYPES);
        assert!(matches!(reader.accepted, Cow::Borrowed(_)));
        assert_eq!(read(&mut reader), [0x41, 0x00, 0x42]);
        // One more on top of it, or the list on top of one.
        let mut reader = CapsuleReader::new(16);
        reader
            .accept_all(&TYPES)
            .accept(CapsuleType::from_u32(0x44));
        assert_eq!(read(&mut reader), [0x41, 0x00, 0x42, 0x44]);
        let mut reader = CapsuleReader::new(16);
        reader
            .accept(CapsuleType::from_u32(0x43))
            .accept_all(&TYPES);
        assert_eq!(read(&mut reader), [0x41, 0x43, 0x00, 0x42]);
        assert_eq!(reader.accepted.len(), 3);
    }

    #[test]
    fn exact_bytes() {
        // RFC 9297 §3.2: type, length, value.
        check(
            Capsule::datagram(Bytes::from_static(b"hi")),
            &[0x00, 0x02, b'h', b'i'],
        );
        check(Capsule::datagram(Bytes::new()), &[0x00, 0x00]);
        check(
            Capsule {
                ty: CapsuleType::WT_DRAIN_SESSION,
                payload: Bytes::new(),
            },
            &[0x80, 0x00, 0x78, 0xae, 0x00],
        );
        check(
            Capsule {
                ty: CapsuleType::WT_CLOSE_SESSION,
                payload: Bytes::from_static(&[0, 0, 0, 7]),
            },
            &[0x68, 0x43, 0x04, 0, 0, 0, 7],
        );
    }

    #[test]
    fn unknown_skipped_without_limit() {
        // RFC 9297 §3.2: unknown types are skipped, even when larger than the bound.
        let mut reader = CapsuleReader::new(4);
        let mut bytes = Vec::new();
        Capsule {
            ty: CapsuleType::grease(3),
            payload: Bytes::from(vec![9; 100]),
        }
        .encode(&mut bytes);
        Capsule::datagram(Bytes::from_static(b"ok")).encode(&mut bytes);
        reader.handle_data(bytes.into());
        assert_eq!(
            reader.poll_capsule(),
            Ok(Some(Capsule::datagram(Bytes::from_static(b"ok"))))
        );
        assert_eq!(reader.poll_capsule(), Ok(None));
        reader.handle_end().unwrap();
    }

    #[test]
    fn too_large() {
        let mut reader = CapsuleReader::new(4);
        reader.handle_data(Bytes::from_static(&[0x00, 0x05]));
        let err = reader.poll_capsule().unwrap_err();
        assert_eq!(
            err,
            CapsuleError::TooLarge {
                ty: CapsuleType::DATAGRAM,
                len: 5,
                max: 4
            }
        );
        assert_eq!(Code::from(err), Code::H3_EXCESSIVE_LOAD);
        assert_eq!(
            Capsule::decode(&mut &[0x21, 0x05][..], 4),
            Err(CapsuleError::TooLarge {
                ty: CapsuleType::from_u32(0x21),
                len: 5,
                max: 4
            })
        );
    }

    #[test]
    fn truncated_at_end() {
        // RFC 9297 §3.3: a clean end inside a capsule is a malformed message.
        for bytes in [&[0x00][..], &[0x00, 0x02, b'a'], &[0x17, 0x03]] {
            let mut reader = CapsuleReader::new(1024);
            reader.handle_data(Bytes::copy_from_slice(bytes));
            assert_eq!(reader.poll_capsule(), Ok(None));
            let err = reader.handle_end().unwrap_err();
            assert_eq!(err, CapsuleError::Truncated);
            assert_eq!(Code::from(err), Code::H3_MESSAGE_ERROR);
        }
    }

    #[test]
    fn grease_types() {
        assert_eq!(CapsuleType::grease(0).into_inner(), 0x17);
        assert_eq!(CapsuleType::grease(1).into_inner(), 0x40);
        assert!(CapsuleType::grease(u64::MAX).is_grease());
        assert!(!CapsuleType::DATAGRAM.is_grease());
        assert_eq!(format!("{:?}", CapsuleType::WT_MAX_DATA), "WT_MAX_DATA");
    }
}
