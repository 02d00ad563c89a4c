//! Cross-crate tests, interop helpers and benchmarks for quay.
//!
//! This crate is not published and nothing depends on it. Its library holds what the bench
//! targets (`benches/h3.rs`, `benches/webtransport.rs`) and the integration tests in `tests/`
//! share:
//! - [`setup`]: loopback endpoints built with quay-transport (self-signed identity, hash pinning,
//!   default [`TransportOptions`](quay_transport::TransportOptions)), so every implementation under
//!   test runs with the same TLS, crypto and QUIC settings;
//! - [`relay`]: an impairing UDP relay (loss, reordering, duplication, delay) between a client
//!   and a server on loopback, for the bad-network tests;
//! - [`raw`]: the floor, a tiny request/response protocol on bare quinn streams;
//! - [`hyperium`]: an HTTP/3 server and client on hyperium `h3` + `h3-quinn` (also meant for the
//!   interop tests);
//! - [`wtq`]: a WebTransport echo server and client on `web-transport-quinn`;
//! - [`quaywt`]: the same server and client on quay's `quay-webtransport`;
//! - [`browser`]: Debian's headless Chromium running a WebTransport test page against a server;
//! - [`bench`](mod@bench): the benchmark harness (two processes pinned to one core each) and its table.
//!
//! Nothing here is a test by itself; the helpers panic on nothing and report errors with
//! [`anyhow`].

pub mod bench;
pub mod browser;
pub mod hyperium;
pub mod quaywt;
pub mod raw;
pub mod relay;
pub mod setup;
pub mod wtq;
