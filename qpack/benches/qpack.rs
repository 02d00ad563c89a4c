//! Throughput over the QIF corpus: `cargo bench -p quay-qpack`.
//!
//! The corpus is found in `$QUAY_QIFS` or `../shared/qifs` next to the workspace. Reported:
//! encode and decode throughput in bytes of uncompressed header data (name + value) and in
//! fields, with a dynamic table of 0 and 4096 bytes, and raw Huffman encode/decode speed.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quay_qpack::{Decoded, Decoder, DecoderConfig, Encoder, EncoderConfig, Field, fuzzing};

fn corpus() -> PathBuf {
    let dir = std::env::var_os("QUAY_QIFS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/qifs"),
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "QIF corpus not found at {} (set QUAY_QIFS)",
        dir.display()
    );
    dir
}

/// Every header list of the non-`-hq` QIF files.
fn lists() -> Vec<Vec<Field>> {
    let mut lists = vec![];
    for name in ["fb-req", "fb-resp", "netbsd"] {
        let text = std::fs::read(corpus().join(format!("{name}.qif"))).unwrap();
        for list in fuzzing::parse_qif(&text) {
            lists.push(list.into_iter().map(|(n, v)| Field::new(n, v)).collect());
        }
    }
    lists
}

/// Encodes every list; the peer acknowledges each section and insert at once.
fn encode_all(lists: &[Vec<Field>], capacity: u64) -> Vec<(Bytes, Bytes)> {
    let mut encoder = Encoder::new(EncoderConfig::default());
    encoder.apply_peer_settings(capacity, 100);
    let mut out = Vec::with_capacity(lists.len());
    let mut ack = Vec::new();
    for (i, list) in lists.iter().enumerate() {
        let id = i as u64 * 4;
        let encoded = encoder.encode(id, list);
        ack.clear();
        if encoded.field_section[0] != 0 {
            fuzzing::put_int(&mut ack, 7, 0x80, id);
        }
        encoder.handle_decoder_stream(&ack).unwrap();
        let pending = encoder.insert_count() - encoder.known_received_count();
        if pending > 0 {
            ack.clear();
            fuzzing::put_int(&mut ack, 6, 0, pending);
            encoder.handle_decoder_stream(&ack).unwrap();
        }
        out.push((encoded.encoder_stream, encoded.field_section));
    }
    out
}

fn decode_all(encoded: &[(Bytes, Bytes)], capacity: u64) -> usize {
    let mut decoder = Decoder::new(
        DecoderConfig::default()
            .max_table_capacity(capacity)
            .max_blocked_streams(100),
    );
    let mut fields = 0;
    for (i, (stream, section)) in encoded.iter().enumerate() {
        decoder.handle_encoder_stream(stream).unwrap();
        match decoder
            .decode_section(i as u64 * 4, section.clone())
            .unwrap()
        {
            Decoded::Fields(f) => fields += f.len(),
            Decoded::Blocked => unreachable!("encoder stream delivered first"),
        }
        black_box(decoder.poll_decoder_stream());
    }
    fields
}

fn bench(c: &mut Criterion) {
    let lists = lists();
    let bytes: usize = lists
        .iter()
        .flatten()
        .map(|f| f.name.len() + f.value.len())
        .sum();
    let fields: usize = lists.iter().map(Vec::len).sum();
    for capacity in [0u64, 4096] {
        let encoded = encode_all(&lists, capacity);
        let wire: usize = encoded.iter().map(|(a, b)| a.len() + b.len()).sum();
        eprintln!(
            "table {capacity}: {} lists, {fields} fields, {bytes} header bytes -> {wire} bytes",
            lists.len()
        );
        for (unit, throughput) in [
            ("bytes", Throughput::Bytes(bytes as u64)),
            ("fields", Throughput::Elements(fields as u64)),
        ] {
            let mut g = c.benchmark_group(format!("table{capacity}/{unit}"));
            g.throughput(throughput);
            g.bench_function("encode", |b| {
                b.iter(|| encode_all(black_box(&lists), capacity))
            });
            g.bench_function("decode", |b| {
                b.iter(|| decode_all(black_box(&encoded), capacity))
            });
            g.finish();
        }
    }
    let values: Vec<&[u8]> = lists.iter().flatten().map(|f| &f.value[..]).collect();
    let plain: usize = values.iter().map(|v| v.len()).sum();
    let coded: Vec<Vec<u8>> = values
        .iter()
        .map(|v| {
            let mut out = vec![];
            fuzzing::huffman_encode(v, &mut out);
            out
        })
        .collect();
    let mut g = c.benchmark_group("huffman");
    g.throughput(Throughput::Bytes(plain as u64));
    g.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(plain);
        b.iter(|| {
            out.clear();
            for v in &values {
                fuzzing::huffman_encode(black_box(v), &mut out);
            }
            out.len()
        })
    });
    g.bench_function("decode", |b| {
        let mut out = Vec::with_capacity(plain);
        b.iter(|| {
            out.clear();
            for v in &coded {
                assert!(fuzzing::huffman_decode_into(black_box(v), &mut out));
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
