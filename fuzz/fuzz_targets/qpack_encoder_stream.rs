//! Fuzz target: see `quay_qpack::fuzzing::encoder_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quay_qpack::fuzzing::encoder_stream(data));
