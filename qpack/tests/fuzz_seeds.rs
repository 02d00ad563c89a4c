//! Replays the committed fuzz seed corpora (`fuzz/corpus/<target>/`) through the same
//! functions the fuzz targets call, and runs a property test over each of them, so the
//! stable toolchain exercises every decoder the fuzzers cover.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use quay_qpack::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(format!("qpack_{target}"));
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {} is missing: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        run(&fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "seed corpus {} is empty", dir.display());
}

#[test]
fn replay_huffman_decode() {
    replay("huffman_decode", fuzzing::huffman_decode);
}

#[test]
fn replay_encoder_stream() {
    replay("encoder_stream", fuzzing::encoder_stream);
}

#[test]
fn replay_decoder_stream() {
    replay("decoder_stream", fuzzing::decoder_stream);
}

#[test]
fn replay_field_section() {
    replay("field_section", fuzzing::field_section);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_huffman_input(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::huffman_decode(&data);
    }

    #[test]
    fn any_encoder_stream(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::encoder_stream(&data);
    }

    #[test]
    fn any_decoder_stream(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        fuzzing::decoder_stream(&data);
    }

    #[test]
    fn any_field_section(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzzing::field_section(&data);
    }
}
