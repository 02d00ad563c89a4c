//! HTTP/3 benchmark: `cargo bench -p quay-tests --bench h3 [-- <measurement>…]`.
//!
//! Server and client run as two processes pinned to one core each; see
//! `quay_tests::bench` for the harness and `quay_tests::bench::h3` for the measurements and
//! for how to add a column.

use std::process::ExitCode;

use quay_tests::bench::h3::{Hyperium, MEASUREMENTS, RawQuinn, column};

fn main() -> ExitCode {
    // The floor first, then the reference; both are used as ratio bases.
    let columns = [column::<RawQuinn>(), column::<Hyperium>()];
    quay_tests::bench::main(
        "quay HTTP/3 benchmark (loopback, 127.0.0.1)",
        &columns,
        &MEASUREMENTS,
    )
}
