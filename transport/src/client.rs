//! Client endpoints: a [`Trust`] and [`TransportOptions`] turned into a quinn [`Endpoint`] whose
//! default configuration connects to HTTP/3 servers.
//!
//! This module does not speak HTTP/3; it only sets up QUIC and TLS.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, EndpointConfig};

use crate::EndpointError;
use crate::options::{TransportOptions, bind_endpoint};
use crate::trust::Trust;

/// Builds client endpoints.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use quay_transport::{CertificateHash, ClientBuilder, Trust};
///
/// let hash: CertificateHash = "5c3a…".parse()?;
/// let endpoint = ClientBuilder::new()
///     .trust(Trust::CertificateHashes(vec![hash]))
///     .build()?;
/// let connection = endpoint.connect("127.0.0.1:4433".parse()?, "localhost")?.await?;
/// # drop(connection);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    trust: Trust,
    options: TransportOptions,
}

impl ClientBuilder {
    /// A client that trusts the system's roots, with default [`TransportOptions`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets which server certificates are accepted.
    pub fn trust(mut self, trust: Trust) -> Self {
        self.trust = trust;
        self
    }

    /// Replaces the transport options.
    pub fn options(mut self, options: TransportOptions) -> Self {
        self.options = options;
        self
    }

    /// The quinn client configuration, for callers that set up their own endpoint or want to
    /// pass it to [`Endpoint::connect_with`].
    ///
    /// TLS 1.3 only, the trust rules, the ALPN list from the options, and `SSLKEYLOGFILE`
    /// honoured when set.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, EndpointError> {
        let mut tls = self.trust.client_crypto()?;
        tls.alpn_protocols = self.options.alpn_protocols.clone();
        tls.key_log = Arc::new(rustls::KeyLogFile::new());
        let quic = QuicClientConfig::try_from(tls)
            .map_err(|error| EndpointError::Quic(error.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(self.options.transport_config()));
        Ok(config)
    }

    /// Binds a UDP socket at `addr` and returns an endpoint whose [`Endpoint::connect`] uses
    /// this configuration. Must be called inside a tokio runtime.
    pub fn bind(&self, addr: SocketAddr) -> Result<Endpoint, EndpointError> {
        let config = self.client_config()?;
        let mut endpoint = bind_endpoint(addr, &self.options, EndpointConfig::default(), None)?;
        endpoint.set_default_client_config(config);
        Ok(endpoint)
    }

    /// Like [`ClientBuilder::bind`] on an ephemeral port: dual-stack `[::]:0`, which reaches
    /// IPv4 and IPv6 servers, or `0.0.0.0:0` where the machine has no IPv6.
    pub fn build(&self) -> Result<Endpoint, EndpointError> {
        let any_v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        match self.bind(any_v6) {
            Err(EndpointError::Bind { .. }) => {
                self.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            }
            other => other,
        }
    }
}
