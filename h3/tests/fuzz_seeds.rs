//! Replays the committed seed corpus (`fuzz-seeds/<target>/`) through the `fuzzing` functions on
//! the stable toolchain, so every decoder's round-trip and cross-checks run in CI without
//! cargo-fuzz. The same directories seed the fuzz targets.

use std::fs;
use std::path::Path;

use quay_h3::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz-seeds")
        .join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        run(&data);
        // Every prefix too: truncated input must never panic either.
        for end in 0..data.len() {
            run(&data[..end]);
        }
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn frame_seeds() {
    replay("frame", fuzzing::frame);
}

#[test]
fn capsule_seeds() {
    replay("capsule", fuzzing::capsule);
}

#[test]
fn settings_seeds() {
    replay("settings", fuzzing::settings);
}

#[test]
fn datagram_seeds() {
    replay("datagram", fuzzing::datagram);
}

#[test]
fn header_field_seeds() {
    replay("header_fields", fuzzing::header_fields);
}

#[test]
fn header_seeds_parse_as_intended() {
    use quay_h3::proto::headers::{parse_request, parse_response, parse_trailers};
    let read = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz-seeds/header_fields")
            .join(name);
        fuzzing::field_list(&fs::read(path).expect("seed"))
    };
    for ok in ["get", "extended_connect", "connect", "host_only"] {
        parse_request(read(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    parse_response(read("response")).expect("response seed");
    parse_trailers(read("trailers")).expect("trailers seed");
    for bad in ["uppercase", "pseudo_after_regular"] {
        assert!(parse_request(read(bad)).is_err(), "{bad}");
    }
}
