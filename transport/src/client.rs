//! Client endpoints: a [`Trust`] and [`TransportOptions`] turned into a quinn [`Endpoint`] whose
//! default configuration connects to HTTP/3 servers.
//!
//! This module does not speak HTTP/3; it only sets up QUIC and TLS.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Endpoint, EndpointConfig};

use crate::options::{TransportOptions, bind_endpoint};
use crate::trust::Trust;
use crate::{Connector, EndpointError};

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
    qlog_dir: Option<PathBuf>,
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

    /// Writes a qlog file for each connection into `dir` (created if missing), named
    /// `<odcid>_client.sqlog`; without this, into `$QLOGDIR` when it is set. Needs the `qlog`
    /// feature (without it, nothing is written), and connections opened through
    /// [`ClientBuilder::connector`]'s [`Connector`] (quay-h3's `Client::connect` does).
    pub fn qlog_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.qlog_dir = Some(dir.into());
        self
    }

    /// Opens connections with per-connection settings: a qlog file each when
    /// [`ClientBuilder::qlog_dir`] or `$QLOGDIR` names a directory (read now), otherwise as
    /// `Endpoint::connect` with the endpoint's default client configuration.
    pub fn connector(&self) -> Result<Connector, EndpointError> {
        Connector::new(
            crate::qlog::qlog_dir(self.qlog_dir.as_deref()),
            || self.client_config(),
            &self.options,
        )
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
