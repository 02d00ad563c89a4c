//! Loopback endpoints for tests and benchmarks, built with quay-transport.
//!
//! The server presents a fresh self-signed identity and the client pins its SHA-256 hash
//! ([`Trust::CertificateHashes`]), the way a browser's `serverCertificateHashes` does. Both use
//! the default [`TransportOptions`] with ALPN `h3`, and bind
//! 127.0.0.1 only.
//!
//! Both bind through quay-transport's builders, whose default
//! [`TransportOptions::socket_buffer_size`] asks for 4 MiB kernel socket buffers: with Linux's
//! default of 208 KiB a fast sender overflows the receiver's socket buffer on loopback
//! (`RcvbufErrors` in `/proc/net/snmp`), and a benchmark would measure loss recovery instead of
//! the stack.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use quay_transport::{
    CertificateHash, ClientBuilder, Endpoint, Identity, ServerBuilder, TransportOptions, Trust,
};

/// The name in the self-signed certificate and the name clients connect to.
pub const SERVER_NAME: &str = "localhost";

/// 127.0.0.1 with a port chosen by the operating system.
pub fn loopback_any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A fresh self-signed identity for [`SERVER_NAME`].
pub fn identity() -> anyhow::Result<Identity> {
    Ok(Identity::self_signed([SERVER_NAME])?)
}

/// The server builder every implementation under test uses: `identity` and default options.
pub fn server_builder(identity: Identity) -> ServerBuilder {
    ServerBuilder::new(identity)
}

/// The client builder every implementation under test uses: pins `hash`, default options.
pub fn client_builder(hash: CertificateHash) -> ClientBuilder {
    ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]))
}

/// A server endpoint on 127.0.0.1 (port chosen by the system). Needs a tokio runtime.
pub fn server_endpoint(identity: Identity) -> anyhow::Result<Endpoint> {
    Ok(server_builder(identity).bind(loopback_any_port())?)
}

/// A client endpoint on 127.0.0.1 that trusts only the certificate with `hash`. Needs a tokio
/// runtime.
pub fn client_endpoint(hash: CertificateHash) -> anyhow::Result<Endpoint> {
    Ok(client_builder(hash).bind(loopback_any_port())?)
}

/// The socket buffer size the endpoints ask for, and the kernel's caps on what it grants
/// (`net.core.rmem_max`, `net.core.wmem_max`; `None` where they cannot be read).
pub fn socket_buffers() -> (Option<usize>, Option<usize>, Option<usize>) {
    let limit = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
    };
    (
        TransportOptions::default().socket_buffer_size,
        limit("rmem_max"),
        limit("wmem_max"),
    )
}

/// Connects `endpoint` to the server at `addr` (QUIC and TLS handshake only).
pub async fn connect(endpoint: &Endpoint, addr: SocketAddr) -> anyhow::Result<quinn::Connection> {
    Ok(endpoint.connect(addr, SERVER_NAME)?.await?)
}

/// How long a test waits for any one step before it fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Awaits `future` for at most [`STEP_TIMEOUT`]. For tests: panics past it.
pub async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .expect("timed out")
}

/// A QUIC connection (ALPN h3) to `addr` from a fresh [`client_endpoint`] pinning `hash`. For
/// tests: panics on failure or past [`STEP_TIMEOUT`].
pub async fn connect_pinned(addr: SocketAddr, hash: CertificateHash) -> quinn::Connection {
    let endpoint = client_endpoint(hash).unwrap();
    bounded(connect(&endpoint, addr)).await.unwrap()
}
