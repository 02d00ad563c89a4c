//! Server endpoints: an [`Identity`] and [`TransportOptions`] turned into a bound quinn
//! [`Endpoint`] that accepts QUIC connections for HTTP/3.
//!
//! This module does not speak HTTP/3; it only sets up QUIC and TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::Endpoint;
use quinn::crypto::rustls::QuicServerConfig;

use crate::identity::Identity;
use crate::options::{TransportOptions, bind_endpoint};
use crate::{EndpointError, crypto_provider};

/// Builds server endpoints.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use quay_transport::{Identity, ServerBuilder};
///
/// let identity = Identity::self_signed(["localhost"])?;
/// println!("pin this: {}", identity.certificate_hash());
/// let endpoint = ServerBuilder::new(identity).bind("[::]:4433".parse()?)?;
/// while let Some(incoming) = endpoint.accept().await {
///     let connection = incoming.await?;
///     // hand `connection` to HTTP/3
/// #   drop(connection);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    identity: Identity,
    options: TransportOptions,
}

impl ServerBuilder {
    /// A server presenting `identity`, with default [`TransportOptions`].
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            options: TransportOptions::default(),
        }
    }

    /// Replaces the transport options.
    pub fn options(mut self, options: TransportOptions) -> Self {
        self.options = options;
        self
    }

    /// The quinn server configuration, for callers that set up their own endpoint.
    ///
    /// TLS 1.3 only (QUIC requires it), no client certificates, the identity's chain and key,
    /// the ALPN list from the options, and `SSLKEYLOGFILE` honoured when set.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, EndpointError> {
        let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(
                self.identity.certificate_chain().to_vec(),
                self.identity.private_key().clone_key(),
            )?;
        tls.alpn_protocols = self.options.alpn_protocols.clone();
        tls.key_log = Arc::new(rustls::KeyLogFile::new());
        let quic = QuicServerConfig::try_from(tls)
            .map_err(|error| EndpointError::Quic(error.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(Arc::new(self.options.transport_config()));
        Ok(config)
    }

    /// Binds a UDP socket at `addr` and returns an endpoint accepting connections on it.
    ///
    /// Must be called inside a tokio runtime. Port 0 picks a free port; read it back with
    /// [`Endpoint::local_addr`].
    pub fn bind(&self, addr: SocketAddr) -> Result<Endpoint, EndpointError> {
        bind_endpoint(addr, &self.options, Some(self.server_config()?))
    }
}
