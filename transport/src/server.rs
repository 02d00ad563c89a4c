//! Server endpoints: an [`Identity`] and [`TransportOptions`] turned into a bound quinn
//! [`Endpoint`] that accepts QUIC connections for HTTP/3.
//!
//! Servers that share an address with others can share their keys
//! ([`ServerBuilder::service_keys`]), issue connection IDs a QUIC-LB load balancer routes
//! ([`ServerBuilder::quic_lb`]), and run one endpoint per core on one port
//! ([`ServerBuilder::bind_workers`]; more than one needs Linux).
//!
//! This module does not speak HTTP/3; it only sets up QUIC and TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Endpoint, EndpointConfig};
use quinn_proto::HashedConnectionIdGenerator;

use crate::identity::Identity;
use crate::keys::ServiceKeys;
use crate::options::{TransportOptions, bind_endpoint};
use crate::quic_lb::{QuicLbConfig, QuicLbError, QuicLbGenerator, ServerId, WorkerField};
use crate::workers::Handover;
use crate::{Acceptor, EndpointError, crypto_provider};

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
    pub(crate) options: TransportOptions,
    keys: Option<ServiceKeys>,
    quic_lb: Option<(QuicLbConfig, ServerId)>,
    pub(crate) handover: Option<Handover>,
    qlog_dir: Option<PathBuf>,
}

impl ServerBuilder {
    /// A server presenting `identity`, with default [`TransportOptions`].
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            options: TransportOptions::default(),
            keys: None,
            quic_lb: None,
            handover: None,
            qlog_dir: None,
        }
    }

    /// Replaces the transport options.
    pub fn options(mut self, options: TransportOptions) -> Self {
        self.options = options;
        self
    }

    /// Writes a qlog file for each connection into `dir` (created if missing), named
    /// `<odcid>_server.sqlog`; without this, into `$QLOGDIR` when it is set. Needs the `qlog`
    /// feature (without it, nothing is written), and connections accepted through
    /// [`ServerBuilder::acceptor`]'s [`Acceptor`] (quay-h3's and quay-webtransport's servers do).
    pub fn qlog_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.qlog_dir = Some(dir.into());
        self
    }

    /// Accepts connections with per-connection settings: a qlog file each when
    /// [`ServerBuilder::qlog_dir`] or `$QLOGDIR` names a directory (read now), otherwise as
    /// `Incoming::accept`.
    pub fn acceptor(&self) -> Result<Acceptor, EndpointError> {
        self.acceptor_with(|| self.server_config())
    }

    pub(crate) fn acceptor_with(
        &self,
        config: impl FnOnce() -> Result<quinn::ServerConfig, EndpointError>,
    ) -> Result<Acceptor, EndpointError> {
        Acceptor::new(
            crate::qlog::qlog_dir(self.qlog_dir.as_deref()),
            config,
            &self.options,
        )
    }

    /// Uses `keys` for stateless resets, address-validation tokens and connection-ID checks
    /// instead of keys drawn at random per endpoint, so that every endpoint built with the same
    /// keys accepts the others' Retry and NEW_TOKEN tokens, resets connections the others lost,
    /// and recognises their connection IDs. Give every endpoint of one service the same keys.
    pub fn service_keys(mut self, keys: ServiceKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Issues QUIC-LB connection IDs of `config` carrying `server_id`, so that a QUIC-LB load
    /// balancer routes every packet of a connection to this server, whatever the client's
    /// address (see [`crate::quic_lb`]). Fails if `server_id` does not have the
    /// configuration's length.
    pub fn quic_lb(
        mut self,
        config: QuicLbConfig,
        server_id: ServerId,
    ) -> Result<Self, QuicLbError> {
        // Checked once here, so every endpoint's generator can be made without failing.
        QuicLbGenerator::new(config.clone(), server_id)?;
        self.quic_lb = Some((config, server_id));
        Ok(self)
    }

    /// The quinn endpoint configuration, for callers that set up their own endpoint: the
    /// service's reset key when [`ServerBuilder::service_keys`] was set, and the QUIC-LB
    /// connection IDs of [`ServerBuilder::quic_lb`].
    pub fn endpoint_config(&self) -> EndpointConfig {
        self.endpoint_config_for(None)
    }

    /// The endpoint configuration of one worker of a group, or of a lone endpoint.
    pub(crate) fn endpoint_config_for(&self, worker: Option<WorkerField>) -> EndpointConfig {
        let mut config = match (&self.keys, &self.quic_lb) {
            (Some(keys), Some((lb, _))) => {
                EndpointConfig::new(keys.reset_key_for(&lb.fingerprint()))
            }
            (Some(keys), None) => EndpointConfig::new(keys.reset_key()),
            (None, _) => EndpointConfig::default(),
        };
        match (&self.quic_lb, worker) {
            (Some((lb, server_id)), worker) => {
                let (lb, server_id) = (lb.clone(), *server_id);
                config.cid_generator(move || {
                    Box::new(QuicLbGenerator::unchecked(lb.clone(), server_id, worker))
                });
            }
            (None, Some(worker)) => crate::workers::worker_cids(&mut config, worker),
            (None, None) => {
                if let Some(keys) = &self.keys {
                    let key = keys.connection_id_key();
                    config.cid_generator(move || {
                        Box::new(HashedConnectionIdGenerator::from_key(key))
                    });
                }
            }
        }
        config
    }

    /// The quinn server configuration, for callers that set up their own endpoint.
    ///
    /// TLS 1.3 only (QUIC requires it), no client certificates, the identity's chain and key,
    /// the ALPN list from the options, `SSLKEYLOGFILE` honoured when set, and the service's
    /// token key when [`ServerBuilder::service_keys`] was set.
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
        let mut config = match &self.keys {
            Some(keys) => quinn::ServerConfig::new(Arc::new(quic), keys.token_key()),
            None => quinn::ServerConfig::with_crypto(Arc::new(quic)),
        };
        config.transport_config(Arc::new(self.options.transport_config()));
        Ok(config)
    }

    /// Binds a UDP socket at `addr` and returns an endpoint accepting connections on it.
    ///
    /// Must be called inside a tokio runtime. Port 0 picks a free port; read it back with
    /// [`Endpoint::local_addr`].
    pub fn bind(&self, addr: SocketAddr) -> Result<Endpoint, EndpointError> {
        let server = self.server_config()?;
        bind_endpoint(addr, &self.options, self.endpoint_config(), Some(server))
    }
}
