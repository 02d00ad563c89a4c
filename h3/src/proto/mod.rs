//! Pure HTTP/3 codecs: no I/O, no tasks, no clocks.
//!
//! This module owns the wire formats of RFC 9114 and its extensions:
//!
//! - [`frame`]: frame types, the frame header, whole-frame decoding with a size bound, and encoders
//!   (RFC 9114 §7, PRIORITY_UPDATE from RFC 9218 §7.2);
//! - [`reader`]: [`FrameReader`](reader::FrameReader), a push-based reader for a stream's bytes that
//!   arrive in arbitrary chunks, streaming DATA payloads without buffering them;
//! - [`settings`]: the SETTINGS payload (RFC 9114 §7.2.4, RFC 9220 §3, RFC 9297 §2.1.1);
//! - [`stream`]: stream types and the prefixes of unidirectional and WebTransport bidirectional
//!   streams (RFC 9114 §6.2);
//! - [`capsule`]: the Capsule Protocol (RFC 9297 §3.2) with its own chunk-fed reader;
//! - [`datagram`]: the quarter-stream-ID prefix of HTTP/3 datagrams (RFC 9297 §2.1);
//! - [`headers`]: validation of decoded field sections into `http` heads and back (RFC 9114
//!   §4.1-4.4, RFC 9220);
//! - [`message`]: the frame order on request and control streams and the `content-length` check.
//!
//! It does not own QPACK (field sections stay encoded `Bytes` here; `quay-qpack` turns them into
//! field lines), stream or connection state beyond one stream's frame order, or any quinn type
//! other than the [`VarInt`] and [`Codec`] it re-exports. The connection driver feeds bytes in and
//! maps every decode error to a [`Code`](crate::error::Code) with `Code::from`.
//!
//! Varints are quinn's, re-exported by `quay-transport`: one `VarInt`, one `Codec` (STYLE.md
//! §1). [`varint_len`] fills the one gap, quinn's encoded-size method being private.
//!
//! # Reading a request stream
//!
//! The pieces fit together like this on the server side; QPACK is stubbed out.
//!
//! ```
//! use bytes::Bytes;
//! use quay_h3::error::Code;
//! use quay_h3::proto::frame::Frame;
//! use quay_h3::proto::headers::{parse_request, parse_trailers};
//! use quay_h3::proto::message::{BodyLength, MessageFrames, MessagePart};
//! use quay_h3::proto::reader::{FrameEvent, FrameReader};
//!
//! # fn qpack_decode(_section: Bytes) -> Vec<(Bytes, Bytes)> {
//! #     [(":method", "POST"), (":scheme", "https"), (":authority", "a.example"), (":path", "/"),
//! #      ("content-length", "5")]
//! #         .iter()
//! #         .map(|(n, v)| (Bytes::from_static(n.as_bytes()), Bytes::from_static(v.as_bytes())))
//! #         .collect()
//! # }
//! fn read(chunks: &[&'static [u8]]) -> Result<Vec<u8>, Code> {
//!     let mut reader = FrameReader::new(64 * 1024);
//!     let mut order = MessageFrames::request();
//!     let mut part = MessagePart::Head;
//!     let mut body_len = BodyLength::new(None);
//!     let mut body = Vec::new();
//!     for chunk in chunks {
//!         reader.handle_data(Bytes::from_static(chunk));
//!         while let Some(event) = reader.poll_event()? {
//!             match event {
//!                 // Check the frame order from the header, before any payload is buffered.
//!                 FrameEvent::Header(header) => part = order.on_frame(header.ty)?,
//!                 FrameEvent::Frame(Frame::Headers(section)) if part == MessagePart::Head => {
//!                     let head = parse_request(qpack_decode(section))?;
//!                     body_len = BodyLength::new(head.content_length);
//!                 }
//!                 FrameEvent::Frame(Frame::Headers(section)) => {
//!                     body_len.on_end()?;
//!                     let _trailers = parse_trailers(qpack_decode(section))?;
//!                 }
//!                 FrameEvent::Data(chunk) => {
//!                     body_len.on_data(chunk.len() as u64)?;
//!                     body.extend_from_slice(&chunk);
//!                 }
//!                 _ => {}
//!             }
//!         }
//!     }
//!     reader.handle_end()?;
//!     body_len.on_end()?;
//!     Ok(body)
//! }
//!
//! // HEADERS (the stub decodes any section), then DATA "hello" in two chunks.
//! assert_eq!(read(&[&[0x01, 0x01, 0x00, 0x00, 0x05, b'h', b'e'], b"llo"]), Ok(b"hello".to_vec()));
//! // One byte short of content-length: a stream error of type H3_MESSAGE_ERROR.
//! assert_eq!(read(&[&[0x01, 0x01, 0x00, 0x00, 0x04, b'h', b'e'], b"ll"]), Err(Code::H3_MESSAGE_ERROR));
//! // DATA before HEADERS: a connection error of type H3_FRAME_UNEXPECTED.
//! assert_eq!(read(&[&[0x00, 0x00]]), Err(Code::H3_FRAME_UNEXPECTED));
//! ```

pub mod capsule;
pub mod datagram;
pub mod frame;
pub mod headers;
pub mod message;
pub mod reader;
pub mod settings;
pub mod stream;

pub use quay_transport::VarInt;
pub use quay_transport::coding::{Codec, UnexpectedEnd};

/// The number of bytes the QUIC varint encoding of `value` takes (RFC 9000 §16): 1, 2, 4 or 8.
///
/// Values above [`VarInt::MAX`] cannot be encoded; they report 8 like the largest valid value.
pub const fn varint_len(value: u64) -> usize {
    if value < 1 << 6 {
        1
    } else if value < 1 << 14 {
        2
    } else if value < 1 << 30 {
        4
    } else {
        8
    }
}

/// Whether `value` is a reserved `mul * N + add` value: HTTP/3 reserves `0x1f * N + 0x21` in
/// its registries (RFC 9114 §6.2.3, §7.2.4.1, §7.2.8, §8.1), RFC 9297 §5.4 reserves
/// `0x29 * N + 0x17` for capsule types.
pub(crate) const fn is_reserved(mul: u64, add: u64, value: u64) -> bool {
    value >= add && (value - add).is_multiple_of(mul)
}

/// The reserved value `mul * N + add` for `N = n`, with `n` wrapped so that the result stays a
/// valid varint.
pub(crate) fn reserved_value(mul: u64, add: u64, n: u64) -> VarInt {
    let max_n = (VarInt::MAX.into_inner() - add) / mul;
    let value = mul * (n % (max_n + 1)) + add;
    // The wrap above keeps `value` at most `mul * max_n + add`, which is below 2^62.
    VarInt::from_u64(value).unwrap_or(VarInt::MAX)
}

/// Wraps a length that came from memory (a `usize`) into a varint.
///
/// # Panics
///
/// Panics if `len` is at least 2^62, which no buffer on a 64-bit machine reaches.
fn len_varint(len: usize) -> VarInt {
    VarInt::try_from(len).expect("a buffer length is below 2^62")
}

/// Helpers shared by the unit tests of the codecs.
#[cfg(test)]
pub(crate) mod test_util {
    use super::VarInt;

    /// A varint from a literal known to be in range.
    pub(crate) fn vi(v: u64) -> VarInt {
        VarInt::from_u64(v).expect("test values are below 2^62")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_quinn() {
        // RFC 9000 §16 boundaries and the Appendix A.1 examples.
        for value in [
            0,
            0x3f,
            0x40,
            0x3fff,
            0x4000,
            0x3fff_ffff,
            0x4000_0000,
            (1 << 62) - 1,
            37,
            15_293,
            494_878_333,
            151_288_809_941_952_652,
        ] {
            let mut buf = Vec::new();
            VarInt::from_u64(value).unwrap().encode(&mut buf);
            assert_eq!(varint_len(value), buf.len(), "{value:#x}");
        }
    }

    #[test]
    fn grease_values() {
        assert_eq!(reserved_value(0x1f, 0x21, 0).into_inner(), 0x21);
        assert_eq!(reserved_value(0x1f, 0x21, 2).into_inner(), 0x5f);
        assert!(is_reserved(0x1f, 0x21, 0x5f));
        assert!(!is_reserved(0x1f, 0x21, 0x20));
        assert!(!is_reserved(0x1f, 0x21, 0x22));
        for (mul, add) in [(0x1f, 0x21), (0x29, 0x17)] {
            let top = reserved_value(mul, add, u64::MAX);
            assert!(is_reserved(mul, add, top.into_inner()));
            assert!(top <= VarInt::MAX);
        }
    }
}
