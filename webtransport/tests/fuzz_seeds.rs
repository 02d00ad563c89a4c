//! Replays the committed seed corpora (`fuzz/corpus/wt_<target>/`) through the `fuzzing`
//! functions, every prefix included, so the stable toolchain exercises each decoder in CI.

use std::fs;
use std::path::Path;

use quay_webtransport::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(format!("wt_{target}"));
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = fs::read(entry.expect("directory entry").path()).expect("seed");
        for end in 0..=data.len() {
            run(&data[..end]);
        }
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn capsule_seeds() {
    replay("capsule", fuzzing::capsule);
}

#[test]
fn available_protocols_seeds() {
    replay("available_protocols", fuzzing::available_protocols);
}

mod properties {
    use proptest::prelude::*;

    use super::fuzzing;

    proptest! {
        #[test]
        fn capsule_never_panics(data: Vec<u8>) {
            fuzzing::capsule(&data);
        }

        #[test]
        fn available_protocols_never_panics(data: Vec<u8>) {
            fuzzing::available_protocols(&data);
        }
    }
}
