//! The static Huffman code of RFC 7541 Appendix B, which QPACK string literals use unchanged
//! (RFC 9204 §4.1.2).
//!
//! The RFC's code is canonical: sorting the 257 symbols by (code length, symbol) and counting
//! upwards gives exactly its codes. So the only data kept here is the code length of each symbol;
//! codes and decoding tables are derived from it at compile time.
//!
//! Decoding is table driven: the top [`LOOKUP_BITS`] bits of a 64-bit window index a table that
//! gives the symbol and its length for every code of at most that many bits (all the common
//! header characters). Longer codes are found with the canonical "first code of each length"
//! limits, which needs one comparison per length instead of one step per bit.

use crate::error::Reason;

/// Code length in bits of each symbol; index 256 is EOS.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;
/// Bits resolved by one lookup in [`LOOKUP`].
const LOOKUP_BITS: u32 = 11;

/// Everything derived from [`LENGTHS`].
struct Tables {
    /// Canonical code of each symbol, right aligned.
    codes: [u32; 257],
    /// Symbols sorted by (length, symbol).
    sorted: [u16; 257],
    /// For each length: the first canonical code of that length.
    first: [u32; MAX_LEN + 1],
    /// For each length: index in `sorted` of the first symbol of that length.
    offset: [u16; MAX_LEN + 1],
    /// For each length: one past the last code of that length, left aligned to 32 bits
    /// (as u64 so that the final limit, 2^32, fits).
    limit: [u64; MAX_LEN + 1],
    /// Indexed by the top `LOOKUP_BITS` bits: `symbol | length << 9`, or 0 when the code is
    /// longer than `LOOKUP_BITS`.
    lookup: [u16; 1 << LOOKUP_BITS],
}

const TABLES: Tables = build();

const fn build() -> Tables {
    let mut count = [0u16; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut limit = [0u64; MAX_LEN + 1];
    let mut code = 0u32;
    let mut index = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        first[len] = code;
        offset[len] = index;
        code += count[len] as u32;
        index += count[len];
        limit[len] = (code as u64) << (32 - len);
        code <<= 1;
        len += 1;
    }
    // Hand out codes in canonical order.
    let mut codes = [0u32; 257];
    let mut sorted = [0u16; 257];
    let mut next = first;
    let mut fill = offset;
    let mut sym = 0;
    while sym < 257 {
        let l = LENGTHS[sym] as usize;
        codes[sym] = next[l];
        next[l] += 1;
        sorted[fill[l] as usize] = sym as u16;
        fill[l] += 1;
        sym += 1;
    }
    let mut lookup = [0u16; 1 << LOOKUP_BITS];
    let mut sym = 0;
    while sym < 257 {
        let l = LENGTHS[sym] as u32;
        if l <= LOOKUP_BITS {
            let start = (codes[sym] << (LOOKUP_BITS - l)) as usize;
            let end = start + (1 << (LOOKUP_BITS - l));
            let mut i = start;
            while i < end {
                lookup[i] = sym as u16 | (l as u16) << 9;
                i += 1;
            }
        }
        sym += 1;
    }
    Tables {
        codes,
        sorted,
        first,
        offset,
        limit,
        lookup,
    }
}

/// Number of bytes the Huffman coding of `data` takes.
pub(crate) fn encoded_len(data: &[u8]) -> usize {
    let bits: usize = data.iter().map(|&b| LENGTHS[b as usize] as usize).sum();
    bits.div_ceil(8)
}

/// Appends the Huffman coding of `data` to `out`, padded with the high bits of EOS (all ones)
/// as RFC 7541 §5.2 requires.
pub(crate) fn encode(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(encoded_len(data));
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &b in data {
        let len = LENGTHS[b as usize] as u32;
        acc = (acc << len) | u64::from(TABLES.codes[b as usize]);
        bits += len;
        if bits >= 32 {
            bits -= 32;
            out.extend_from_slice(&((acc >> bits) as u32).to_be_bytes());
        }
    }
    while bits >= 8 {
        bits -= 8;
        out.push((acc >> bits) as u8);
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
}

/// Symbol and code length of the code at the top of `window`.
#[inline]
fn lookup(window: u64) -> (u16, u32) {
    let t = &TABLES;
    let hit = t.lookup[(window >> (64 - LOOKUP_BITS)) as usize];
    if hit != 0 {
        return (hit & 0x1ff, u32::from(hit >> 9));
    }
    let top = window >> 32;
    let mut len = LOOKUP_BITS as usize + 1;
    // The last limit is 2^32, above any 32-bit value, so this always stops by MAX_LEN.
    while top >= t.limit[len] {
        len += 1;
    }
    let code = (top >> (32 - len)) as u32;
    let sym = t.sorted[t.offset[len] as usize + (code - t.first[len]) as usize];
    (sym, len as u32)
}

/// Decodes a Huffman coded string, appending at most `limit` bytes to `out`.
///
/// RFC 7541 §5.2: padding longer than 7 bits, padding that is not a prefix of EOS (all ones),
/// and an explicit EOS symbol are all errors.
pub(crate) fn decode(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), Reason> {
    // The shortest code is 5 bits, so the output is at most 8/5 of the input. Symbols are
    // written by index into room made up front (plus slack for one batch), then trimmed.
    let max_out = (data.len() * 8 / 5).min(limit);
    let start = out.len();
    let end = start + max_out;
    out.resize(end + BATCH_SLACK, 0);
    let mut n = start;
    let result = decode_into(data, out, &mut n, end);
    out.truncate(n);
    result
}

/// The most symbols one batch of [`decode_into`] can write past its check: 64 bits of 5-bit
/// codes.
const BATCH_SLACK: usize = 13;

fn decode_into(data: &[u8], out: &mut [u8], n: &mut usize, end: usize) -> Result<(), Reason> {
    // `acc` holds the next `bits` bits of input, most significant first. Below them it may
    // hold a few bits of the following byte: they are the real input bits in their final
    // positions, so OR-ing that byte in again later changes nothing.
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut i = 0;
    loop {
        if data.len() - i >= 8 {
            let word = u64::from_be_bytes([
                data[i],
                data[i + 1],
                data[i + 2],
                data[i + 3],
                data[i + 4],
                data[i + 5],
                data[i + 6],
                data[i + 7],
            ]);
            acc |= word >> bits;
            let take = (63 - bits) / 8;
            i += take as usize;
            bits += take * 8;
        } else {
            while bits <= 56 && i < data.len() {
                acc |= u64::from(data[i]) << (56 - bits);
                bits += 8;
                i += 1;
            }
        }
        if bits < MAX_LEN as u32 {
            break;
        }
        // At least 30 bits are there: every lookup sees a whole code.
        if *n > end {
            return Err(Reason::StringTooLong);
        }
        while bits >= MAX_LEN as u32 {
            let (sym, len) = lookup(acc);
            if sym == EOS {
                return Err(Reason::InvalidHuffman);
            }
            out[*n] = sym as u8;
            *n += 1;
            acc <<= len;
            bits -= len;
        }
    }
    // Fewer than 30 bits are left and the input is exhausted.
    if *n > end {
        return Err(Reason::StringTooLong);
    }
    loop {
        if bits == 0 {
            return Ok(());
        }
        // Fill what follows the input with ones, so that valid padding reads as part of EOS.
        let window = (acc & !(u64::MAX >> bits)) | (u64::MAX >> bits);
        let (sym, len) = lookup(window);
        if len > bits {
            let all_ones = acc >> (64 - bits) == (1 << bits) - 1;
            return if bits <= 7 && all_ones {
                Ok(())
            } else {
                Err(Reason::InvalidHuffman)
            };
        }
        if sym == EOS {
            return Err(Reason::InvalidHuffman);
        }
        if *n >= end {
            return Err(Reason::StringTooLong);
        }
        out[*n] = sym as u8;
        *n += 1;
        acc <<= len;
        bits -= len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    fn round_trip(plain: &[u8]) {
        let mut enc = vec![];
        encode(plain, &mut enc);
        assert_eq!(enc.len(), encoded_len(plain));
        let mut dec = vec![];
        decode(&enc, usize::MAX, &mut dec).unwrap();
        assert_eq!(dec, plain);
    }

    // Spot checks of the derived codes against RFC 7541 Appendix B.
    #[test]
    fn canonical_codes_match_the_rfc_table() {
        assert_eq!(TABLES.codes[b'0' as usize], 0x0);
        assert_eq!(TABLES.codes[b' ' as usize], 0x14);
        assert_eq!(TABLES.codes[b'a' as usize], 0x3);
        assert_eq!(TABLES.codes[0], 0x1ff8);
        assert_eq!(TABLES.codes[b'~' as usize], 0x1ffd);
        assert_eq!(TABLES.codes[0xff], 0x3ffffee);
        assert_eq!(TABLES.codes[256], 0x3fff_ffff);
    }

    // RFC 7541 §C.4 and §C.6 Huffman examples.
    #[test]
    fn rfc7541_examples() {
        for (plain, coded) in [
            (&b"www.example.com"[..], "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            (b"no-cache", "a8eb 1064 9cbf"),
            (b"custom-key", "25a8 49e9 5ba9 7d7f"),
            (b"custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            (b"302", "6402"),
            (b"private", "aec3 771a 4b"),
            (
                b"Mon, 21 Oct 2013 20:13:21 GMT",
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            ),
            (
                b"https://www.example.com",
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            ),
        ] {
            let mut enc = vec![];
            encode(plain, &mut enc);
            assert_eq!(enc, hex(coded), "{}", String::from_utf8_lossy(plain));
            let mut dec = vec![];
            decode(&enc, usize::MAX, &mut dec).unwrap();
            assert_eq!(dec, plain);
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        round_trip(&all);
        for b in 0..=255u8 {
            round_trip(&[b]);
            round_trip(&[b, b, b]);
        }
        round_trip(b"");
    }

    // RFC 7541 §5.2: padding must be the most significant bits of EOS, and at most 7 bits.
    #[test]
    fn padding_rules() {
        let mut out = vec![];
        // 'a' is 00011 (5 bits): padded with 111 is valid.
        assert_eq!(decode(&[0b0001_1111], 10, &mut out), Ok(()));
        assert_eq!(out, b"a");
        // Padding with a zero bit is invalid.
        assert_eq!(
            decode(&[0b0001_1110], 10, &mut out),
            Err(Reason::InvalidHuffman)
        );
        // A whole byte of padding (8 bits) is invalid.
        assert_eq!(decode(&[0xff], 10, &mut out), Err(Reason::InvalidHuffman));
        assert_eq!(
            decode(&[0b0001_1111, 0xff], 10, &mut out),
            Err(Reason::InvalidHuffman)
        );
        // An explicit EOS (30 ones) is invalid even when followed by valid padding.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], 10, &mut out),
            Err(Reason::InvalidHuffman)
        );
        // A truncated long code is invalid.
        assert_eq!(
            decode(&[0xff, 0xf0], 10, &mut out),
            Err(Reason::InvalidHuffman)
        );
    }

    #[test]
    fn output_limit_is_enforced_for_long_strings() {
        // Long enough to go through the batched path, for every limit around the real length.
        let plain = b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";
        let mut enc = vec![];
        encode(plain, &mut enc);
        for limit in plain.len() - 20..plain.len() + 3 {
            let mut out = vec![1, 2, 3];
            let r = decode(&enc, limit, &mut out);
            if limit >= plain.len() {
                assert_eq!(r, Ok(()));
                assert_eq!(&out[3..], plain);
            } else {
                assert_eq!(r, Err(Reason::StringTooLong), "limit {limit}");
            }
        }
    }

    #[test]
    fn output_limit_is_enforced() {
        let mut enc = vec![];
        encode(b"aaaaaaaaaa", &mut enc);
        let mut out = vec![];
        assert_eq!(decode(&enc, 9, &mut out), Err(Reason::StringTooLong));
        out.clear();
        assert_eq!(decode(&enc, 10, &mut out), Ok(()));
    }
}
