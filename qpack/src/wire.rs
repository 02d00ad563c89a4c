//! Wire primitives shared by every QPACK instruction: prefixed integers and string literals.
//!
//! RFC 9204 §4.1 reuses the HPACK primitives (RFC 7541 §5.1 and §5.2) unchanged, except that a
//! string literal may start part-way through a byte (an "N-bit prefix string literal").

use crate::error::Reason;
use crate::huffman;

/// Why a primitive could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The input ends inside the primitive; more bytes may complete it.
    Incomplete,
    /// The input can never be valid.
    Invalid(Reason),
}

impl From<Reason> for WireError {
    fn from(reason: Reason) -> Self {
        Self::Invalid(reason)
    }
}

/// A cursor over a byte slice that reads QPACK primitives.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A string literal as it sits on the wire, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawString {
    /// Byte range of the string's data inside the reader's buffer.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Whether the data is Huffman coded (the H bit).
    pub(crate) huffman: bool,
}

impl RawString {
    /// The smallest number of bytes this string can decode to.
    pub(crate) fn min_decoded_len(&self) -> usize {
        let len = self.end - self.start;
        if self.huffman {
            // The longest Huffman code is 30 bits, so each decoded byte costs at most 30 bits.
            len * 8 / 30
        } else {
            len
        }
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// A reader that starts at `pos`.
    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// The next byte without consuming it.
    pub(crate) fn peek(&self) -> Result<u8, WireError> {
        self.buf.get(self.pos).copied().ok_or(WireError::Incomplete)
    }

    /// RFC 7541 §5.1 prefixed integer whose prefix is the low `prefix` bits of the next byte.
    ///
    /// Values that do not fit in 62 bits are refused (RFC 9204 §4.1.1 only asks for 62), which
    /// also keeps every later addition free of overflow.
    pub(crate) fn int(&mut self, prefix: u8) -> Result<u64, WireError> {
        debug_assert!((1..=8).contains(&prefix));
        let mask = ((1u16 << prefix) - 1) as u8;
        let first = self.peek()? & mask;
        let mut pos = self.pos + 1;
        if first < mask {
            self.pos = pos;
            return Ok(u64::from(first));
        }
        let mut value = u64::from(mask);
        let mut shift = 0u32;
        loop {
            let byte = *self.buf.get(pos).ok_or(WireError::Incomplete)?;
            pos += 1;
            let chunk = u64::from(byte & 0x7f);
            // 9 continuation bytes carry 63 bits; anything past 62 bits is an overflow.
            if shift > 56 {
                return Err(Reason::IntegerOverflow.into());
            }
            value = value
                .checked_add(chunk << shift)
                .filter(|v| *v < 1 << 62)
                .ok_or(WireError::Invalid(Reason::IntegerOverflow))?;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        self.pos = pos;
        Ok(value)
    }

    /// RFC 9204 §4.1.2 string literal: H bit at `0x80 >> (8 - prefix)`, then a (prefix - 1)-bit
    /// length. The length is checked against `limit` (encoded bytes) before anything else.
    pub(crate) fn string(&mut self, prefix: u8, limit: usize) -> Result<RawString, WireError> {
        let huffman = self.peek()? & (1 << (prefix - 1)) != 0;
        let len = self.int(prefix - 1)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= limit)
            .ok_or(WireError::Invalid(Reason::StringTooLong))?;
        let start = self.pos;
        if self.buf.len() - start < len {
            return Err(WireError::Incomplete);
        }
        self.pos = start + len;
        Ok(RawString {
            start,
            end: start + len,
            huffman,
        })
    }

    /// Decodes `raw` into `out` (appending), refusing output longer than `limit` bytes.
    pub(crate) fn decode_string(
        &self,
        raw: RawString,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Reason> {
        let data = &self.buf[raw.start..raw.end];
        if raw.huffman {
            huffman::decode(data, limit, out)
        } else if data.len() > limit {
            Err(Reason::StringTooLong)
        } else {
            out.extend_from_slice(data);
            Ok(())
        }
    }
}

/// Appends an RFC 7541 §5.1 prefixed integer; `flags` holds the bits above the prefix.
pub(crate) fn put_int(out: &mut Vec<u8>, prefix: u8, flags: u8, value: u64) {
    let max = (1u16 << prefix) as u64 - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Appends a string literal with a `prefix`-bit prefix; `flags` holds the bits above the H bit.
/// Huffman coding is used only when allowed and strictly shorter.
pub(crate) fn put_string(out: &mut Vec<u8>, prefix: u8, flags: u8, value: &[u8], huffman: bool) {
    let huffman_len = if huffman {
        huffman::encoded_len(value)
    } else {
        usize::MAX
    };
    let h_bit = 1u8 << (prefix - 1);
    if huffman_len < value.len() {
        put_int(out, prefix - 1, flags | h_bit, huffman_len as u64);
        huffman::encode(value, out);
    } else {
        put_int(out, prefix - 1, flags, value.len() as u64);
        out.extend_from_slice(value);
    }
}

/// How many bytes `put_string` will write.
pub(crate) fn string_len(prefix: u8, value: &[u8]) -> usize {
    let len = huffman::encoded_len(value).min(value.len());
    int_len(prefix - 1, len as u64) + len
}

/// How many bytes `put_int` will write.
pub(crate) fn int_len(prefix: u8, value: u64) -> usize {
    let max = (1u64 << prefix) - 1;
    if value < max {
        return 1;
    }
    let mut rest = value - max;
    let mut n = 2;
    while rest >= 0x80 {
        rest >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_round_trip(prefix: u8, value: u64) {
        let mut out = vec![];
        put_int(&mut out, prefix, 0, value);
        assert_eq!(out.len(), int_len(prefix, value));
        let mut r = Reader::new(&out);
        assert_eq!(r.int(prefix), Ok(value));
        assert!(r.is_empty());
        // Every strict prefix of the encoding is incomplete, never an error.
        for cut in 0..out.len() {
            assert_eq!(
                Reader::new(&out[..cut]).int(prefix),
                Err(WireError::Incomplete)
            );
        }
    }

    // RFC 7541 §C.1: the HPACK integer examples apply unchanged (RFC 9204 §4.1.1).
    #[test]
    fn rfc7541_integer_examples() {
        let mut out = vec![];
        put_int(&mut out, 5, 0, 10);
        assert_eq!(out, [0x0a]);
        out.clear();
        put_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        put_int(&mut out, 8, 0, 42);
        assert_eq!(out, [0x2a]);
    }

    #[test]
    fn integers_round_trip() {
        for prefix in 1..=8 {
            for value in [
                0,
                1,
                30,
                31,
                32,
                126,
                127,
                128,
                255,
                256,
                1 << 20,
                (1 << 62) - 1,
            ] {
                int_round_trip(prefix, value);
            }
        }
    }

    // RFC 9204 §4.1.1: values up to 62 bits must decode; longer ones are refused, not wrapped.
    #[test]
    fn integer_overflow_is_an_error() {
        let mut too_big = vec![0xff];
        too_big.extend_from_slice(&[0xff; 9]);
        too_big.push(0x01);
        assert_eq!(
            Reader::new(&too_big).int(8),
            Err(WireError::Invalid(Reason::IntegerOverflow))
        );
        let mut out = vec![];
        put_int(&mut out, 8, 0, 1 << 62);
        assert_eq!(
            Reader::new(&out).int(8),
            Err(WireError::Invalid(Reason::IntegerOverflow))
        );
        // Endless continuation bytes stop at the overflow, not at the end of input.
        let long = [0xffu8; 64];
        assert_eq!(
            Reader::new(&long).int(8),
            Err(WireError::Invalid(Reason::IntegerOverflow))
        );
    }

    #[test]
    fn string_length_is_checked_before_the_data() {
        // Length 1000 but only 3 bytes follow: refused by the limit, not "incomplete".
        let mut out = vec![];
        put_int(&mut out, 7, 0, 1000);
        out.extend_from_slice(b"abc");
        assert_eq!(
            Reader::new(&out).string(8, 999).map(|_| ()),
            Err(WireError::Invalid(Reason::StringTooLong))
        );
        assert_eq!(
            Reader::new(&out).string(8, 1000).map(|_| ()),
            Err(WireError::Incomplete)
        );
    }

    #[test]
    fn strings_round_trip_with_and_without_huffman() {
        for value in [
            &b""[..],
            b"a",
            b"www.example.com",
            b"\x00\xff\x10binary",
            b"{}{}{}",
        ] {
            for prefix in 2..=8 {
                let mut out = vec![];
                put_string(&mut out, prefix, 0, value, true);
                assert_eq!(out.len(), string_len(prefix, value));
                let mut r = Reader::new(&out);
                let raw = r.string(prefix, usize::MAX).unwrap();
                let mut decoded = vec![];
                r.decode_string(raw, usize::MAX, &mut decoded).unwrap();
                assert_eq!(decoded, value);
                assert!(r.is_empty());
            }
        }
    }
}
