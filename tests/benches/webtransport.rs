//! WebTransport benchmark: `cargo bench -p quay-tests --bench webtransport [-- <measurement>…]`.
//!
//! Server and client run as two processes pinned to one core each; see
//! `quay_tests::bench` for the harness and `quay_tests::bench::webtransport` for the
//! measurements and for how to add a column.

use std::process::ExitCode;

use quay_tests::bench::webtransport::{MEASUREMENTS, Quay, RawQuinn, WebTransportQuinn, column};

fn main() -> ExitCode {
    // The floor first, then the reference; both are used as ratio bases.
    let columns = [
        column::<RawQuinn>(),
        column::<WebTransportQuinn>(),
        column::<Quay>(),
    ];
    quay_tests::bench::main(
        "quay WebTransport benchmark (loopback, 127.0.0.1)",
        &columns,
        &MEASUREMENTS,
    )
}
