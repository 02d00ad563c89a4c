//! Fuzz target: see `quay_h3::fuzzing::pair`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quay_h3::fuzzing::pair(data));
