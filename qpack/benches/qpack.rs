//! QPACK benchmarks (being written).
fn main() {}
