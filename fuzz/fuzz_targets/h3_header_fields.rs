//! Fuzz target: see `quay_h3::fuzzing::header_fields`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quay_h3::fuzzing::header_fields(data));
