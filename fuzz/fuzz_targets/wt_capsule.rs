//! Fuzz target: see `quay_webtransport::fuzzing::capsule`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quay_webtransport::fuzzing::capsule(data));
