//! Entry points for the fuzz targets in `fuzz/` and for the tests that replay their seed
//! corpora. Not part of the public API.
//!
//! Each function takes arbitrary bytes, must never panic on them, and checks what can be
//! checked: Huffman strings re-encode to themselves, instruction streams give the same result
//! however they are split into chunks, and decoded field sections survive an encode/decode
//! round trip.

use bytes::Bytes;

use crate::huffman;
use crate::{Decoded, Decoder, DecoderConfig, Encoder, EncoderConfig, Error, Field};

/// Huffman decoding (RFC 7541 §5.2). A valid coding is unique (padding is fixed), so whatever
/// decodes must re-encode to the same bytes.
pub fn huffman_decode(data: &[u8]) {
    let mut out = Vec::new();
    if huffman::decode(data, usize::MAX, &mut out).is_ok() {
        let mut again = Vec::new();
        huffman::encode(&out, &mut again);
        assert_eq!(again, data, "Huffman decode/encode is not a round trip");
        assert_eq!(huffman::encoded_len(&out), data.len());
    }
}

/// The decoder's encoder-stream parser (RFC 9204 §4.3). The first byte picks a split point:
/// the stream fed in two chunks must end in the same state as fed whole.
pub fn encoder_stream(data: &[u8]) {
    let config = DecoderConfig::default().max_table_capacity(4096);
    let split = data.first().map_or(0, |b| usize::from(*b)) % (data.len() + 1);
    let mut whole = Decoder::new(config);
    let a = whole.handle_encoder_stream(data).map(|_| ());
    let mut parts = Decoder::new(config);
    let b = parts
        .handle_encoder_stream(&data[..split])
        .and_then(|_| parts.handle_encoder_stream(&data[split..]))
        .map(|_| ());
    assert_eq!(a, b, "result depends on chunking");
    if a.is_ok() {
        assert_eq!(whole.insert_count(), parts.insert_count());
        assert_eq!(whole.poll_decoder_stream(), parts.poll_decoder_stream());
        // A section referencing every entry decodes the same from both tables.
        let count = whole.insert_count();
        if count > 0 {
            let section = all_entries_section(count, config.max_table_capacity);
            let x = whole.decode_section(0, section.clone());
            let y = parts.decode_section(0, section);
            assert_eq!(x, y);
        }
    }
}

/// A field section that indexes the newest `min(count, 32)` dynamic entries.
fn all_entries_section(count: u64, max_capacity: u64) -> Bytes {
    let max_entries = max_capacity / 32;
    let mut out = Vec::new();
    crate::wire::put_int(&mut out, 8, 0, count % (2 * max_entries) + 1);
    out.push(0);
    for relative in 0..count.min(32) {
        crate::wire::put_int(&mut out, 6, 0x80, relative);
    }
    Bytes::from(out)
}

/// The encoder's decoder-stream parser (RFC 9204 §4.4), on an encoder with inserts and
/// unacknowledged sections on streams 0, 4, 8 and 12. The first byte picks a split point.
pub fn decoder_stream(data: &[u8]) {
    let make = || {
        let mut e = Encoder::new(EncoderConfig::default());
        e.apply_peer_settings(4096, 100);
        for id in 0..4u64 {
            e.encode(
                id * 4,
                &[
                    Field::new("x-fuzz", format!("value {id}")),
                    Field::new(":authority", "example.com"),
                ],
            );
        }
        e
    };
    let split = data.first().map_or(0, |b| usize::from(*b)) % (data.len() + 1);
    let mut whole = make();
    let a = whole.handle_decoder_stream(data);
    let mut parts = make();
    let b = parts
        .handle_decoder_stream(&data[..split])
        .and_then(|()| parts.handle_decoder_stream(&data[split..]));
    assert_eq!(a, b, "result depends on chunking");
    if a.is_ok() {
        assert_eq!(whole.known_received_count(), parts.known_received_count());
        // The encoder keeps working whatever it was told.
        let fields = [Field::new("x-fuzz", "value 1"), Field::new("x-new", "n")];
        let x = whole.encode(16, &fields);
        let y = parts.encode(16, &fields);
        assert_eq!(x, y);
    }
}

/// Field sections interleaved with encoder-stream chunks, as a network delivers them.
///
/// Input: one byte of settings (bits 0-1: table capacity 0, 220, 256 or 4096; bits 2-7:
/// blocked streams), then records of `tag, length, bytes`: an even tag is encoder-stream data,
/// an odd tag a field section for stream `tag >> 1`. Every decoded section is re-encoded with
/// our encoder and decoded again, and must come back equal.
pub fn field_section(data: &[u8]) {
    let Some((&settings, mut rest)) = data.split_first() else {
        return;
    };
    let capacity = [0, 220, 256, 4096][usize::from(settings & 3)];
    let config = DecoderConfig::default()
        .max_table_capacity(capacity)
        .max_blocked_streams(u64::from(settings >> 2))
        .max_field_section_size(16 * 1024);
    let mut decoder = Decoder::new(config);
    while let [tag, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        let result = if tag & 1 == 0 {
            decoder.handle_encoder_stream(chunk).map(|unblocked| {
                for u in unblocked {
                    if let Ok(fields) = u.result {
                        check_round_trip(&fields);
                    }
                }
            })
        } else {
            match decoder.decode_section(u64::from(tag >> 1), Bytes::copy_from_slice(chunk)) {
                Ok(Decoded::Fields(fields)) => {
                    check_round_trip(&fields);
                    Ok(())
                }
                Ok(Decoded::Blocked) | Err(Error::FieldSectionTooLarge { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        };
        decoder.poll_decoder_stream();
        if result.is_err() {
            // A connection error ends the connection.
            return;
        }
        if tag & 0x80 != 0 {
            decoder.cancel_stream(u64::from(tag >> 1));
        }
    }
}

fn check_round_trip(fields: &[Field]) {
    let mut encoder = Encoder::new(EncoderConfig::default());
    encoder.apply_peer_settings(4096, 1);
    let mut decoder = Decoder::new(
        DecoderConfig::default()
            .max_blocked_streams(1)
            .max_field_section_size(u64::MAX),
    );
    let out = encoder.encode(0, fields);
    let got = match decoder.decode_section(0, out.field_section) {
        Ok(Decoded::Fields(got)) => got,
        Ok(Decoded::Blocked) => {
            let mut unblocked = decoder.handle_encoder_stream(&out.encoder_stream).unwrap();
            assert_eq!(unblocked.len(), 1);
            unblocked.pop().unwrap().result.unwrap()
        }
        Err(e) => panic!("our own encoding does not decode: {e}"),
    };
    assert_eq!(got.len(), fields.len());
    for (g, f) in got.iter().zip(fields) {
        assert_eq!((&g.name, &g.value), (&f.name, &f.value));
        assert!(!f.never_index || g.never_index, "N bit lost");
    }
}

/// Raw Huffman encoding, for the benchmark.
pub fn huffman_encode(data: &[u8], out: &mut Vec<u8>) {
    huffman::encode(data, out);
}

/// Raw Huffman decoding, for the benchmark; returns whether `data` was valid.
pub fn huffman_decode_into(data: &[u8], out: &mut Vec<u8>) -> bool {
    huffman::decode(data, usize::MAX, out).is_ok()
}

/// Appends an RFC 7541 §5.1 prefixed integer (for tests and benches that build instructions).
pub fn put_int(out: &mut Vec<u8>, prefix: u8, flags: u8, value: u64) {
    crate::wire::put_int(out, prefix, flags, value);
}

/// Parses a QIF file: one `name<TAB>value` line per field, `#` comments, a blank line ends a
/// header list.
pub fn parse_qif(text: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut lists = vec![];
    let mut current = vec![];
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"#") {
            continue;
        }
        if line.is_empty() {
            if !current.is_empty() {
                lists.push(std::mem::take(&mut current));
            }
            continue;
        }
        let tab = line.iter().position(|b| *b == b'\t').unwrap_or(line.len());
        let value = line.get(tab + 1..).unwrap_or_default();
        current.push((line[..tab].to_vec(), value.to_vec()));
    }
    if !current.is_empty() {
        lists.push(current);
    }
    lists
}
