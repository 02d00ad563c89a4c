//! QPACK (RFC 9204): field compression for HTTP/3, with the dynamic table on both sides.
//!
//! This crate is pure: it does no I/O, has no async code and no clock. The HTTP/3 layer reads
//! the peer's QPACK streams and HEADERS frames, hands the bytes to a [`Decoder`] or
//! [`Encoder`], and writes the bytes they produce to the right stream. It also does not know
//! about `http` types or header validation: fields are byte strings ([`Field`]).
//!
//! - [`Decoder`]: decodes field sections, applies the peer's encoder stream, reports blocked
//!   sections and unblocks them, and produces our decoder stream (Section Acknowledgment,
//!   Stream Cancellation, Insert Count Increment).
//! - [`Encoder`]: encodes field lists using the static table and a dynamic table within what
//!   the peer allows, produces our encoder stream and processes the peer's decoder stream.
//! - [`TableEvent`]: what changed in either one's dynamic table (capacity, inserts,
//!   evictions), reported to a caller that asked for it ([`Encoder::record_table_events`],
//!   [`Decoder::record_table_events`]) and costing nothing otherwise.
//!
//! Errors are [`Error`]s; [`Error::code`] gives the HTTP/3 error code (0x200, 0x201, 0x202).
//!
//! ```
//! use bytes::Bytes;
//! use quay_qpack::{Decoded, Decoder, DecoderConfig, Encoder, EncoderConfig, Field};
//!
//! let mut decoder = Decoder::new(DecoderConfig::default());
//! let mut encoder = Encoder::new(EncoderConfig::default());
//! // The peer's SETTINGS (here: our decoder's) tell the encoder what it may use.
//! let settings = decoder.config();
//! encoder.apply_peer_settings(settings.max_table_capacity, settings.max_blocked_streams);
//!
//! let fields = [Field::new(":method", "GET"), Field::new(":path", "/index.html")];
//! let encoded = encoder.encode(4, &fields);
//! decoder.handle_encoder_stream(&encoded.encoder_stream).unwrap();
//! let Decoded::Fields(decoded) = decoder.decode_section(4, encoded.field_section).unwrap() else {
//!     unreachable!("the encoder stream was delivered first")
//! };
//! assert_eq!(decoded, fields);
//! if let Some(bytes) = decoder.poll_decoder_stream() {
//!     encoder.handle_decoder_stream(&bytes).unwrap();
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod decoder;
mod encoder;
mod error;
mod field;
#[doc(hidden)]
pub mod fuzzing;
mod huffman;
mod static_table;
mod table_event;
#[cfg(test)]
mod test_util;
mod wire;

pub use decoder::{Decoded, Decoder, DecoderConfig, Unblocked};
pub use encoder::{Encoded, Encoder, EncoderConfig};
pub use error::{
    Error, QPACK_DECODER_STREAM_ERROR, QPACK_DECOMPRESSION_FAILED, QPACK_ENCODER_STREAM_ERROR,
    Reason,
};
pub use field::{ENTRY_OVERHEAD, Field};
pub use table_event::TableEvent;
