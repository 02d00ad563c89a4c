//! WebTransport benchmark: `cargo bench -p quay-tests --bench webtransport [-- <measurement>…]`.
//!
//! Optional columns, each a variant of quay (the table adds its ratio to quay):
//! - `QUAY_BENCH_METRICS=1`: `quay + metrics`, quay with a metrics recorder installed.
//! - `QUAY_BENCH_QLOG=1`: `quay + qlog`, quay writing a qlog file for every connection on both
//!   sides, into a fresh directory under the system's temporary directory (`$TMPDIR` or
//!   `/tmp`) for each run, removed after it. Under the table, the files, bytes and records
//!   written (a run that wrote no event fails). The writes go to a real file system, and what
//!   they cost depends on which one and how busy it is: say which with the numbers, and set
//!   `TMPDIR` to compare (`TMPDIR=/dev/shm` for a tmpfs). Creating two files per session is
//!   most of what qlog costs on `sessions` with ext4. A 1 GiB run writes about 240 MiB.
//!
//! Server and client run as two processes pinned to one core each; see
//! `quay_tests::bench` for the harness and `quay_tests::bench::webtransport` for the
//! measurements and for how to add a column.

use std::process::ExitCode;

use quay_tests::bench::webtransport::{
    MEASUREMENTS, METRICS_COLUMN_VAR, QLOG_COLUMN_VAR, Quay, QuayWithMetrics, QuayWithQlog,
    RawQuinn, WebTransportQuinn, column,
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
    // quay again writing qlog files: what qlog costs when it is on.
    if std::env::var(QLOG_COLUMN_VAR).is_ok_and(|value| value == "1") {
        columns.push(column::<QuayWithQlog>());
    }
    quay_tests::bench::main(
        "quay WebTransport benchmark (loopback, 127.0.0.1)",
        &columns,
        &MEASUREMENTS,
    )
}
