//! Fuzz target: see `quay_qpack::fuzzing::huffman_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quay_qpack::fuzzing::huffman_decode(data));
