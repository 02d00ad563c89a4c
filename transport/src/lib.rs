//! QUIC endpoints for quay: [quinn] and [rustls] set up for HTTP/3 and WebTransport.
//!
//! This crate owns what sits below HTTP/3:
//! - server and client endpoint builders ([`ServerBuilder`], [`ClientBuilder`]) with
//!   documented defaults ([`TransportOptions`]): ALPN `h3`, QUIC datagrams on, idle timeout,
//!   keep-alive, stream limits, flow-control windows, congestion controller;
//! - server certificates ([`Identity`]): PEM files, or a self-signed ECDSA P-256 certificate
//!   valid for 14 days whose SHA-256 ([`CertificateHash`]) a browser can pin;
//! - client trust ([`Trust`]): system roots, explicit roots, certificate-hash pinning with the
//!   browsers' rules, and an insecure mode named `Danger…`;
//! - `SSLKEYLOGFILE`: when the variable names a file, TLS secrets are appended to it so Wireshark
//!   can decrypt captures;
//! - scale-out: endpoints that share a port, one per core ([`workers`]), connection IDs a QUIC-LB
//!   load balancer can route ([`quic_lb`]), and keys shared by every endpoint of a service
//!   ([`keys`]).
//!
//! It does not speak HTTP/3 (see `quay-h3`) and never reads from streams itself. Endpoints need a
//! tokio runtime. The crypto provider is aws-lc-rs, for the whole workspace ([`crypto_provider`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use quay_transport::{ClientBuilder, Identity, ServerBuilder, Trust};
//!
//! let identity = Identity::self_signed(["localhost"])?;
//! let hash = identity.certificate_hash();
//! let server = ServerBuilder::new(identity).bind("127.0.0.1:4433".parse()?)?;
//! let client = ClientBuilder::new()
//!     .trust(Trust::CertificateHashes(vec![hash]))
//!     .build()?;
//! let connection = client.connect(server.local_addr()?, "localhost")?.await?;
//! let (mut send, _recv) = connection.open_bi().await?;
//! send.write_all(b"hello").await?;
//! # Ok(())
//! # }
//! ```

// One module, `reuseport`, needs `unsafe` for socket options and bpf(2); it allows it for itself.
#![deny(unsafe_code)]
#![deny(missing_docs)]

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub mod client;
pub mod identity;
pub mod keys;
pub mod options;
pub mod qlog;
pub mod quic_lb;
#[cfg(target_os = "linux")]
mod reuseport;
pub mod server;
pub mod trust;
pub mod workers;

pub use client::ClientBuilder;
pub use identity::{CertificateError, CertificateHash, Identity};
pub use options::{ALPN_H3, CongestionController, TransportOptions};
pub use qlog::{Acceptor, Connector, Qlog};
pub use server::ServerBuilder;
pub use trust::{PinningError, Trust};

pub use quinn;
pub use rustls;

pub use quinn::{
    ClosedStream, ConnectError, Connection, ConnectionError, Endpoint, Incoming, ReadError,
    ReadExactError, ReadToEndError, RecvStream, SendDatagramError, SendStream, StoppedError,
    StreamId, VarInt, WriteError,
};

/// The QUIC variable-length integer codec (RFC 9000 §16), shared by every layer of quay.
///
/// One [`Codec`](coding::Codec) trait decodes from any `bytes::Buf` and encodes into any
/// `bytes::BufMut`; [`VarInt`] implements it. Upper layers use this instead of writing their own.
pub mod coding {
    pub use quinn_proto::coding::{Codec, UnexpectedEnd};
}

/// The rustls crypto provider every quay endpoint uses: aws-lc-rs, with TLS 1.3's
/// AES-128-GCM-SHA256 suite preferred.
///
/// aws-lc-rs is quinn's and rustls's default and the faster of the two providers for bulk
/// AES-GCM; it builds from source with a C compiler only. rustls lists AES-256-GCM-SHA384
/// first; AES-128 encrypts faster and hashes the handshake with SHA-256 instead of SHA-384, at
/// no loss of security that matters here, and it is what browsers offer first.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::aws_lc_rs::default_provider();
            provider.cipher_suites.sort_by_key(|suite| {
                suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            });
            Arc::new(provider)
        })
        .clone()
}

/// Why an endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The UDP socket could not be bound (address in use, no permission, no tokio runtime).
    #[error("cannot bind UDP socket at {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// rustls refused the configuration (for example a certificate it cannot use).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// `Trust::SystemRoots` found no usable root certificate on this machine.
    #[error(
        "no system root certificates found ({0}); install ca-certificates, pass explicit roots, or enable the webpki-roots feature"
    )]
    NoRootCertificates(String),
    /// The TLS configuration has no cipher suite QUIC can use.
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(String),
    /// A worker group could not join its port for a hand-over ([`workers::Handover`]).
    #[error("{0}")]
    Handover(#[from] workers::HandoverError),
    /// A worker group has 1 to [`workers::MAX_WORKERS`] workers
    /// ([`ServerBuilder::bind_workers`]), or [`workers::MAX_HANDOVER_WORKERS`] with a
    /// hand-over.
    #[error("a worker group has 1 to {max} workers here, not {workers}")]
    WorkerCount {
        /// The number asked for.
        workers: usize,
        /// [`workers::MAX_WORKERS`].
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_prefers_aes_128_gcm() {
        let provider = crypto_provider();
        let suites: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(suites.contains(&rustls::CipherSuite::TLS13_AES_256_GCM_SHA384));
    }
}
