//! The `axum` example's site: one axum [`Router`] served over TCP (HTTP/1.1 and HTTP/2 with
//! TLS, through hyper-util) and over HTTP/3 (through [`quay_h3::serve()`]) on the same port
//! number, with WebTransport echo sessions beside the routes on the HTTP/3 side.
//!
//! Kept in the library so that the example binary and its browser test serve the same thing.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::routing::{get, post};
use http::{HeaderValue, Version, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use quay_h3::serve::{Accept, Incoming};
use quay_h3::server::Connection;
use quay_h3::{ConnectionError, Server};
use quay_transport::Identity;
use quay_webtransport::Config;
use quay_webtransport::server::{self, Request as SessionRequest};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// The path of the WebTransport echo sessions.
pub const WEBTRANSPORT_PATH: &str = "/wt";
/// The largest stream a WebTransport echo session reads.
const MAX_ECHO: usize = 1 << 20;

/// Requests served, by HTTP version.
#[derive(Debug, Default)]
pub struct Counts {
    /// HTTP/1.1 (and older) requests.
    pub http1: AtomicU64,
    /// HTTP/2 requests.
    pub http2: AtomicU64,
    /// HTTP/3 requests.
    pub http3: AtomicU64,
}

impl Counts {
    fn count(&self, version: Version) {
        let counter = match version {
            Version::HTTP_2 => &self.http2,
            Version::HTTP_3 => &self.http3,
            _ => &self.http1,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The site: `/` a short page, `/hello` a greeting, `/version` the HTTP version the request
/// came with, `POST /echo` the request body back. Each request is counted in `counts`.
pub fn router(counts: Arc<Counts>) -> Router {
    Router::new()
        .route("/", get(|| async { INDEX }))
        .route("/hello", get(|| async { "hello from quay\n" }))
        .route(
            "/version",
            get(|request: Request| async move { format!("{:?}", request.version()) }),
        )
        .route("/echo", post(|body: Bytes| async move { body }))
        .layer(axum::middleware::map_request(move |request: Request| {
            counts.count(request.version());
            async move { request }
        }))
}

const INDEX: &str = "quay serves this axum Router over HTTP/1.1, HTTP/2 and HTTP/3 on one port.\n\
                     Try /hello, /version, POST /echo, or a WebTransport session at /wt.\n";

/// `router` with `Alt-Svc: h3=":PORT"` on every response (RFC 7838 §3): what the TCP side
/// serves, so that browsers learn of HTTP/3 on the same port.
pub fn with_alt_svc(router: Router, port: u16) -> Router {
    let value = HeaderValue::try_from(format!("h3=\":{port}\"; ma=86400"))
        .expect("a port number makes a valid header value");
    router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            response
                .headers_mut()
                .insert(header::ALT_SVC, value.clone());
            async move { response }
        },
    ))
}

/// The TLS configuration of the TCP side: `identity`, ALPN `h2` and `http/1.1`.
pub fn tls_config(identity: &Identity) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            identity.certificate_chain().to_vec(),
            identity.private_key().clone_key(),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves `router` over TLS on `listener`, HTTP/1.1 or HTTP/2 by ALPN, each connection in a
/// task of its own, until `shutdown` completes (then the connections are dropped).
pub async fn serve_tcp(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Bounded by the listener: each turn takes a connection, reaps one, or ends.
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    // A handshake that stalls holds only its task, for at most 10 seconds.
                    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    let Ok(Ok(tls)) = tls.await else { return };
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Serves `router` over HTTP/3 on `server` (bound with `config.h3_config()`), and WebTransport
/// echo sessions at [`WEBTRANSPORT_PATH`] on the same connections, until `shutdown` completes;
/// then shuts down gracefully (GOAWAY, requests in flight finish) within `timeout`.
pub async fn serve_h3(
    server: Server,
    router: Router,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    timeout: Duration,
) {
    quay_h3::serve(server, router)
        .accept_with(move |connection| WithWebTransport::new(connection, config.clone()))
        .with_graceful_shutdown(shutdown, timeout)
        .await;
}

/// A connection's requests for the router, after WebTransport took its sessions: a
/// `quay_webtransport` connection reads the request heads, keeps the WebTransport CONNECTs
/// (answered here by [`echo_session`]) and passes on the rest.
#[derive(Debug)]
pub struct WithWebTransport {
    connection: server::Connection,
}

impl WithWebTransport {
    /// Puts WebTransport on `connection`, which was made with `config.h3_config()`.
    pub fn new(connection: Connection, config: Config) -> Self {
        Self {
            connection: server::Connection::new(connection, config),
        }
    }
}

impl Accept for WithWebTransport {
    async fn accept(&self) -> Result<Option<Incoming>, ConnectionError> {
        // Each turn takes one request; sessions are answered in tasks of their own.
        loop {
            match self.connection.accept().await {
                None => return Ok(None),
                Some(server::Incoming::Http(request, stream)) => {
                    return Ok(Some(Incoming::Request(request, stream)));
                }
                Some(server::Incoming::Session(request)) => {
                    tokio::spawn(echo_session(request));
                }
                Some(_) => {}
            }
        }
    }

    fn connection(&self) -> &Connection {
        self.connection.h3()
    }
}

/// Accepts a session at [`WEBTRANSPORT_PATH`] (others are 404) and echoes each bidirectional
/// stream, up to 1 MiB.
pub async fn echo_session(request: SessionRequest) {
    if request.path() != WEBTRANSPORT_PATH {
        request.reject(http::StatusCode::NOT_FOUND).await;
        return;
    }
    let Ok(session) = request.ok().await else {
        return;
    };
    // Bounded by the session: each turn echoes a stream, until the session ends.
    while let Ok(Some((mut send, mut recv))) = session.accept_bi().await {
        tokio::spawn(async move {
            let data = recv.read_to_end(MAX_ECHO).await?;
            send.write_all(&data).await?;
            send.finish()?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
}

/// Binds the TCP listener and the HTTP/3 server on `addr`, the same port number for both (the
/// UDP one is taken first, so port 0 picks a free UDP port and the TCP side follows it).
pub fn bind(
    addr: SocketAddr,
    identity: Identity,
    config: &Config,
) -> io::Result<(std::net::TcpListener, Server)> {
    let server = Server::bind(addr, identity, config.h3_config()).map_err(io::Error::other)?;
    let addr = server.local_addr()?;
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok((listener, server))
}
