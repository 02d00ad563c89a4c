//! Errors and their RFC 9204 §6 wire codes.

/// `QPACK_DECOMPRESSION_FAILED` (RFC 9204 §6): a field section could not be decoded.
pub const QPACK_DECOMPRESSION_FAILED: u64 = 0x200;
/// `QPACK_ENCODER_STREAM_ERROR` (RFC 9204 §6): an encoder instruction could not be processed.
pub const QPACK_ENCODER_STREAM_ERROR: u64 = 0x201;
/// `QPACK_DECODER_STREAM_ERROR` (RFC 9204 §6): a decoder instruction could not be processed.
pub const QPACK_DECODER_STREAM_ERROR: u64 = 0x202;

/// A QPACK failure.
///
/// The first three variants are connection errors with the RFC 9204 §6 code that
/// [`Error::code`] returns. [`Error::FieldSectionTooLarge`] is not a QPACK error: the field
/// section was well formed but breaks our `SETTINGS_MAX_FIELD_SECTION_SIZE` (RFC 9114 §4.2.2);
/// the HTTP/3 layer decides what to do with the stream, and the decoder state stays in sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An encoded field section is invalid (`QPACK_DECOMPRESSION_FAILED`).
    #[error("QPACK decompression failed: {0}")]
    DecompressionFailed(Reason),
    /// An instruction on the peer's encoder stream is invalid (`QPACK_ENCODER_STREAM_ERROR`).
    #[error("QPACK encoder stream error: {0}")]
    EncoderStream(Reason),
    /// An instruction on the peer's decoder stream is invalid (`QPACK_DECODER_STREAM_ERROR`).
    #[error("QPACK decoder stream error: {0}")]
    DecoderStream(Reason),
    /// The decoded field section is larger than the configured maximum, counting each field as
    /// name length + value length + 32 bytes (RFC 9114 §4.2.2).
    #[error("field section exceeds the maximum size of {limit} bytes")]
    FieldSectionTooLarge {
        /// The configured maximum.
        limit: u64,
    },
}

impl Error {
    /// The HTTP/3 error code for this error: 0x200, 0x201 or 0x202.
    ///
    /// [`Error::FieldSectionTooLarge`] maps to `QPACK_DECOMPRESSION_FAILED` here only as a
    /// fallback; it is a stream-level condition (see the type docs) that the HTTP/3 layer should
    /// normally handle itself, e.g. with `H3_EXCESSIVE_LOAD` or a 431 response.
    pub fn code(&self) -> u64 {
        match self {
            Self::DecompressionFailed(_) | Self::FieldSectionTooLarge { .. } => {
                QPACK_DECOMPRESSION_FAILED
            }
            Self::EncoderStream(_) => QPACK_ENCODER_STREAM_ERROR,
            Self::DecoderStream(_) => QPACK_DECODER_STREAM_ERROR,
        }
    }

    /// The detailed cause, if this is one of the three QPACK errors.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::DecompressionFailed(r) | Self::EncoderStream(r) | Self::DecoderStream(r) => {
                Some(*r)
            }
            Self::FieldSectionTooLarge { .. } => None,
        }
    }
}

/// What exactly was wrong with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The input ended in the middle of a representation or instruction.
    #[error("truncated input")]
    Truncated,
    /// A prefixed integer does not fit in 62 bits.
    #[error("integer overflow")]
    IntegerOverflow,
    /// Invalid Huffman coding: bad padding or an EOS symbol.
    #[error("invalid Huffman coding")]
    InvalidHuffman,
    /// A string is longer than any limit allows.
    #[error("string too long")]
    StringTooLong,
    /// A static table index above 98.
    #[error("invalid static table index")]
    InvalidStaticIndex,
    /// A dynamic table reference to an entry that was evicted, not inserted yet, or not below
    /// the field section's Required Insert Count.
    #[error("invalid dynamic table reference")]
    InvalidDynamicIndex,
    /// The encoded Required Insert Count could not come from a conforming encoder.
    #[error("invalid Required Insert Count")]
    InvalidRequiredInsertCount,
    /// The Base would be negative.
    #[error("invalid Base")]
    InvalidBase,
    /// A field section references the dynamic table but the decoder's capacity is zero, or the
    /// section needs more inserts than the table can hold.
    #[error("dynamic table reference without a dynamic table")]
    NoDynamicTable,
    /// One more blocked stream than we allow with `SETTINGS_QPACK_BLOCKED_STREAMS`.
    #[error("too many blocked streams")]
    TooManyBlockedStreams,
    /// Set Dynamic Table Capacity above our `SETTINGS_QPACK_MAX_TABLE_CAPACITY`.
    #[error("dynamic table capacity above the maximum")]
    CapacityExceeded,
    /// An inserted entry is larger than the table capacity, or the capacity change would evict
    /// an entry that cannot be evicted.
    #[error("entry does not fit in the dynamic table")]
    EntryTooLarge,
    /// A Section Acknowledgment for a stream with no unacknowledged field section.
    #[error("acknowledgment for a stream without unacknowledged field sections")]
    UnexpectedAcknowledgment,
    /// An Insert Count Increment of zero.
    #[error("zero Insert Count Increment")]
    ZeroIncrement,
    /// An Insert Count Increment beyond the number of inserts sent.
    #[error("Insert Count Increment beyond the inserts sent")]
    IncrementTooLarge,
}
