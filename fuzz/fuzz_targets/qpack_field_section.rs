//! Fuzz target: see `quay_qpack::fuzzing::field_section`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quay_qpack::fuzzing::field_section(data));
