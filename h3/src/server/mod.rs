//! HTTP/3 servers: [`Server`] accepts QUIC connections, [`Connection`] accepts the requests of
//! one, [`RequestStream`] answers one request.
//!
//! Requests are read and answered in the caller's task, directly on the QUIC stream; the
//! connection's own task handles SETTINGS, the QPACK streams and datagrams.
//! [`Connection::shutdown`] is the graceful GOAWAY close of RFC 9114 §5.2.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::{Bytes, BytesMut};
//! use quay_h3::Config;
//! use quay_h3::server::Server;
//! use quay_transport::Identity;
//!
//! let server = Server::bind("[::]:4433".parse()?, Identity::self_signed(["localhost"])?, Config::default())?;
//! while let Some(connection) = server.accept().await {
//!     tokio::spawn(async move {
//!         while let Ok(Some((request, mut stream))) = connection.accept().await {
//!             tokio::spawn(async move {
//!                 let response = http::Response::builder().status(200).body(()).unwrap();
//!                 stream.send_response(response).await?;
//!                 stream.send_data(Bytes::from(format!("you asked for {}", request.uri()))).await?;
//!                 stream.finish()
//!             });
//!         }
//!     });
//! }
//! # Ok(())
//! # }
//! ```
use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;

use tokio::task::JoinSet;

use quay_transport::{Acceptor, Endpoint, EndpointError, Identity, ServerBuilder};

use crate::config::Config;
use crate::stream::ConnectionError;

/// An HTTP/3 server: one QUIC endpoint, or one per address it listens on.
#[derive(Debug)]
pub struct Server {
    /// Never empty.
    endpoints: Vec<Endpoint>,
    config: Config,
    /// Handshakes under way, each in a task of its own: a slow one does not hold up the
    /// others, and a cancelled `accept` loses none.
    handshakes: tokio::sync::Mutex<JoinSet<Result<Connection, ConnectionError>>>,
    /// Accepts connections with per-connection settings (qlog), when given.
    acceptor: Option<Acceptor>,
}

impl Server {
    /// Binds a server at `addr` presenting `identity`, with quay-transport's default transport
    /// options (and a qlog file per connection in `$QLOGDIR` when it is set). Must be called
    /// inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        config: Config,
    ) -> Result<Self, EndpointError> {
        let builder = ServerBuilder::new(identity);
        let endpoint = builder.bind(addr)?;
        Ok(Self::from_endpoint(endpoint, config).with_acceptor(builder.acceptor()?))
    }

    /// Binds a server on each of `addrs` (say `0.0.0.0:443` and `[::]:443` with IPv6 only, or
    /// two interfaces), one QUIC endpoint each, all presenting `identity`;
    /// [`Server::accept`] takes connections from all of them. Fails if `addrs` is empty or any
    /// address cannot be bound. Must be called inside a tokio runtime.
    pub fn bind_all(
        addrs: &[SocketAddr],
        identity: Identity,
        config: Config,
    ) -> Result<Self, EndpointError> {
        let builder = ServerBuilder::new(identity);
        let endpoints = addrs
            .iter()
            .map(|addr| builder.bind(*addr))
            .collect::<Result<Vec<_>, _>>()?;
        let acceptor = builder.acceptor()?;
        let server = Self::from_endpoints(endpoints, config).map(|s| s.with_acceptor(acceptor));
        server.ok_or_else(|| {
            let error = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
            EndpointError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source: error,
            }
        })
    }

    /// Serves HTTP/3 on an endpoint set up elsewhere (its ALPN must include `h3`).
    pub fn from_endpoint(endpoint: Endpoint, config: Config) -> Self {
        Self {
            endpoints: vec![endpoint],
            config,
            handshakes: Default::default(),
            acceptor: None,
        }
    }

    /// Serves HTTP/3 on several endpoints set up elsewhere; `None` if there are none.
    pub fn from_endpoints(endpoints: Vec<Endpoint>, config: Config) -> Option<Self> {
        (!endpoints.is_empty()).then(|| Self {
            endpoints,
            config,
            handshakes: Default::default(),
            acceptor: None,
        })
    }

    /// Accepts connections through `acceptor` (`ServerBuilder::acceptor`, or a worker's), which
    /// gives each a qlog file when the builder has a qlog directory.
    pub fn with_acceptor(mut self, acceptor: Acceptor) -> Self {
        self.acceptor = Some(acceptor);
        self
    }

    /// The local address (of the first endpoint).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoints[0].local_addr()
    }

    /// The local address of every endpoint, in the order they were given.
    pub fn local_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        self.endpoints.iter().map(Endpoint::local_addr).collect()
    }

    /// The QUIC endpoint (the first one).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// Every QUIC endpoint.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits for the next connection whose handshake succeeded, from any endpoint. `None` once
    /// every endpoint is closed.
    ///
    /// A handshake that fails (a client that does not speak `h3`, a TLS alert, a timeout) is
    /// not returned: it is counted in the `quay_h3_handshakes_failed_total` metric by reason and
    /// logged at debug level, and `accept` waits for the next one. A server that wants each
    /// failure runs its own loop with [`Connection::from_incoming`].
    ///
    /// Like every accept in quay, the shape is "`None` when the source has ended": a server's
    /// endpoints cannot fail, so there is no error to return.
    ///
    /// Cancel-safe: handshakes run in tasks of their own, so dropping this future (in a
    /// `select!`, say) loses no connection, and one slow handshake does not hold up others.
    pub async fn accept(&self) -> Option<Connection> {
        let mut handshakes = self.handshakes.lock().await;
        let mut endpoints_open = true;
        // Bounded by the endpoints: each turn starts a handshake, finishes one, or ends.
        loop {
            tokio::select! {
                biased;
                Some(done) = handshakes.join_next() => match done {
                    Ok(Ok(connection)) => return Some(connection),
                    Ok(Err(error)) => tracing::debug!(%error, "handshake failed"),
                    // A handshake task that panicked or was aborted loses only its connection.
                    Err(_) => {}
                },
                incoming = self.next_incoming(), if endpoints_open => match incoming {
                    Some(incoming) => {
                        let config = self.config.clone();
                        handshakes.spawn(Connection::accept_with(
                            incoming,
                            self.acceptor.as_ref(),
                            config,
                        ));
                    }
                    None => endpoints_open = false,
                },
                else => return None,
            }
        }
    }

    /// The next connection attempt from any endpoint; `None` once every endpoint is closed.
    async fn next_incoming(&self) -> Option<quay_transport::quinn::Incoming> {
        match &self.endpoints[..] {
            [only] => only.accept().await,
            endpoints => {
                let mut accepts: Vec<_> = endpoints
                    .iter()
                    .map(|endpoint| Some(Box::pin(endpoint.accept())))
                    .collect();
                // Bounded: each endpoint's accept ends at most once with `None`.
                poll_fn(|cx| {
                    let mut open = false;
                    for slot in &mut accepts {
                        let Some(accept) = slot else { continue };
                        match accept.as_mut().poll(cx) {
                            Poll::Ready(Some(incoming)) => return Poll::Ready(Some(incoming)),
                            Poll::Ready(None) => *slot = None,
                            Poll::Pending => open = true,
                        }
                    }
                    if open {
                        Poll::Pending
                    } else {
                        Poll::Ready(None)
                    }
                })
                .await
            }
        }
    }
}

#[cfg(feature = "http-body")]
mod body;
pub(crate) mod connection;
mod handler;
mod request;

#[cfg(feature = "http-body")]
pub use body::RequestBody;
pub use connection::Connection;
pub use handler::Handler;
pub(crate) use handler::HandlerSlot;
#[cfg(feature = "tower")]
pub(crate) use request::send_response_head;
pub use request::{IncomingRequest, RequestStream};
