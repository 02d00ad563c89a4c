//! Loopback endpoints for tests and benchmarks, built with quay-transport.
//!
//! The server presents a fresh self-signed identity and the client pins its SHA-256 hash
//! ([`Trust::CertificateHashes`]), the way a browser's `serverCertificateHashes` does. Both use
//! the default [`TransportOptions`](quay_transport::TransportOptions) with ALPN `h3`, and bind
//! 127.0.0.1 only.
//!
//! The endpoints take their quinn configuration from quay-transport's builders
//! ([`ServerBuilder::server_config`], [`ClientBuilder::client_config`]) but bind their own UDP
//! socket with [`SOCKET_BUFFER`]-byte kernel buffers: with Linux's default of 208 KiB a fast
//! sender overflows the receiver's socket buffer on loopback (`RcvbufErrors` in
//! `/proc/net/snmp`), and the benchmark would measure loss recovery instead of the stack.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use quay_transport::{CertificateHash, ClientBuilder, Endpoint, Identity, ServerBuilder, Trust};
use quinn::udp::UdpSocketState;
use quinn::{EndpointConfig, TokioRuntime};

/// Kernel send and receive buffer asked for on every socket; Linux caps it at
/// `net.core.rmem_max` / `net.core.wmem_max`.
pub const SOCKET_BUFFER: usize = 4 << 20;

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
    let config = server_builder(identity).server_config()?;
    Ok(Endpoint::new(
        EndpointConfig::default(),
        Some(config),
        loopback_socket()?,
        Arc::new(TokioRuntime),
    )?)
}

/// A client endpoint on 127.0.0.1 that trusts only the certificate with `hash`. Needs a tokio
/// runtime.
pub fn client_endpoint(hash: CertificateHash) -> anyhow::Result<Endpoint> {
    let config = client_builder(hash).client_config()?;
    let mut endpoint = Endpoint::new(
        EndpointConfig::default(),
        None,
        loopback_socket()?,
        Arc::new(TokioRuntime),
    )?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A UDP socket on 127.0.0.1 with [`SOCKET_BUFFER`]-byte kernel buffers (or what the kernel
/// allows).
pub fn loopback_socket() -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind(loopback_any_port())?;
    let state = UdpSocketState::new((&socket).into())?;
    state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER)?;
    state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER)?;
    Ok(socket)
}

/// The kernel receive and send buffer sizes of a socket from [`loopback_socket`], as Linux
/// reports them (twice what it grants, for its bookkeeping).
pub fn socket_buffers() -> anyhow::Result<(usize, usize)> {
    let socket = loopback_socket()?;
    let state = UdpSocketState::new((&socket).into())?;
    Ok((
        state.recv_buffer_size((&socket).into())?,
        state.send_buffer_size((&socket).into())?,
    ))
}

/// Connects `endpoint` to the server at `addr` (QUIC and TLS handshake only).
pub async fn connect(endpoint: &Endpoint, addr: SocketAddr) -> anyhow::Result<quinn::Connection> {
    Ok(endpoint.connect(addr, SERVER_NAME)?.await?)
}
