//! WebTransport benchmark: `cargo bench -p quay-tests --bench webtransport [-- <measurement>…]`;
//! with `QUAY_BENCH_METRICS=1`, a fourth column runs quay with a metrics recorder installed.
//!
//! Server and client run as two processes pinned to one core each; see
//! `quay_tests::bench` for the harness and `quay_tests::bench::webtransport` for the
//! measurements and for how to add a column.

use std::process::ExitCode;

use quay_tests::bench::webtransport::{
    MEASUREMENTS, METRICS_COLUMN_VAR, Quay, QuayWithMetrics, RawQuinn, WebTransportQuinn, column,
};

fn main() -> ExitCode {
    // The floor first, then the reference; both are used as ratio bases.
    let mut columns = vec![
        column::<RawQuinn>(),
        column::<WebTransportQuinn>(),
        column::<Quay>(),
    ];
    // quay again with a metrics recorder installed: what recording quay's metrics costs.
    if std::env::var(METRICS_COLUMN_VAR).is_ok_and(|value| value == "1") {
        columns.push(column::<QuayWithMetrics>());
    }
    quay_tests::bench::main(
        "quay WebTransport benchmark (loopback, 127.0.0.1)",
        &columns,
        &MEASUREMENTS,
    )
}
