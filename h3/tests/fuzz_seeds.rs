//! Replays the committed seed corpus (`fuzz/corpus/h3_<target>/`) through the `fuzzing` functions on
//! the stable toolchain, so every decoder's round-trip and cross-checks run in CI without
//! cargo-fuzz. The same directories seed the fuzz targets.

use std::fs;
use std::path::{Path, PathBuf};

use quay_h3::fuzzing;

/// The seed folder of fuzz target `h3_<target>`.
fn seeds(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(format!("h3_{target}"))
}

fn replay(target: &str, run: fn(&[u8])) {
    let dir = seeds(target);
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
        let path = seeds("header_fields").join(name);
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

/// The bad seeds fail with exactly the error the RFC asks for.
#[test]
fn bad_seeds_give_the_rfc_error() {
    use quay_h3::error::Code;
    use quay_h3::proto::capsule::Capsule;
    use quay_h3::proto::datagram::Datagram;
    use quay_h3::proto::frame::Frame;
    use quay_h3::proto::settings::Settings;

    let read = |target: &str, name: &str| fs::read(seeds(target).join(name)).expect("seed");
    let frame = |name: &str| {
        let data = read("frame", name);
        let mut cur = &data[..];
        loop {
            match Frame::decode(&mut cur, 4096) {
                Ok(_) => continue,
                Err(e) => break Code::from(e),
            }
        }
    };
    // RFC 9114 §7.2.8, §7.1, §7.2.4, §7.2.4.1; §10.5 for the local size bound.
    assert_eq!(frame("http2_ping"), Code::H3_FRAME_UNEXPECTED);
    assert_eq!(frame("malformed_goaway"), Code::H3_FRAME_ERROR);
    assert_eq!(frame("settings_duplicate"), Code::H3_SETTINGS_ERROR);
    assert_eq!(frame("settings_http2_id"), Code::H3_SETTINGS_ERROR);
    assert_eq!(frame("too_large_headers"), Code::H3_EXCESSIVE_LOAD);

    let settings =
        |name: &str| Settings::decode(&mut &read("settings", name)[..]).map_err(Code::from);
    assert_eq!(settings("http2_id").unwrap_err(), Code::H3_SETTINGS_ERROR);
    assert_eq!(settings("truncated").unwrap_err(), Code::H3_FRAME_ERROR);
    assert!(
        settings("webtransport")
            .expect("valid")
            .enable_connect_protocol()
    );

    // RFC 9297 §2.1.
    for name in ["quarter_too_large", "truncated"] {
        let err = Datagram::decode(read("datagram", name).into()).unwrap_err();
        assert_eq!(Code::from(err), Code::H3_DATAGRAM_ERROR, "{name}");
    }
    // RFC 9297 §3.3 via the local bound.
    let err = Capsule::decode(&mut &read("capsule", "too_large")[..], 4096).unwrap_err();
    assert_eq!(Code::from(err), Code::H3_EXCESSIVE_LOAD);
}

#[test]
fn pair_seeds() {
    // Whole seeds only: each drives a client and a server through every operation it holds, so
    // its prefixes are runs the fuzzer made on its way there; replaying them all takes minutes.
    let dir = seeds("pair");
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        fuzzing::pair(&fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}
