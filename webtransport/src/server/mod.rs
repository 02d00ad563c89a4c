//! WebTransport servers: [`Server`] on its own endpoint, or [`Connection`] on a connection of an
//! existing `quay_h3` server, so that HTTP/3 requests and sessions share a port and even a
//! connection.
//!
//! Each connection's request streams are taken on the connection's own task, the HTTP/3 one
//! (as its `quay_h3::server::Handler`), which reads their heads (several at once, so a slow
//! client delays no one) and sorts them: a WebTransport CONNECT becomes a [`Request`],
//! anything else an HTTP/3 request for the application ([`Incoming::Http`]); WebTransport
//! streams go to their session. A [`Request`] is looked at
//! (URL, `origin`, headers, offered subprotocols, the client's draft) and then accepted with
//! [`Request::ok`] or refused with [`Request::reject`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use quay_webtransport::{Config, Server};
//! use quay_transport::Identity;
//!
//! let identity = Identity::self_signed(["localhost"])?;
//! println!("certificate hash: {}", identity.certificate_hash());
//! let server = Server::bind("[::]:4433".parse()?, identity, Config::default())?;
//! while let Some(request) = server.accept().await {
//!     if request.path() != "/echo" {
//!         request.reject(http::StatusCode::NOT_FOUND).await;
//!         continue;
//!     }
//!     let session = request.ok().await?;
//!     tokio::spawn(async move {
//!         while let Ok(Some((mut send, mut recv))) = session.accept_bi().await {
//!             let data = recv.read_to_end(1 << 20).await?;
//!             send.write_all(&data).await?;
//!             send.finish()?;
//!         }
//!         Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!     });
//! }
//! # Ok(())
//! # }
//! ```

mod request;

use request::Pending;
pub use request::Request;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use http::{Method, Response, StatusCode};
use quay_h3::Code;
use quay_h3::proto::VarInt;
use quay_h3::proto::headers::Protocol;
use quay_h3::server::{Handler, IncomingRequest, RequestStream};
use quay_transport::{Acceptor, Endpoint, EndpointError, Identity, ServerBuilder};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::core::table::server_session_limit;
use crate::proto::connect;
use crate::proto::settings::{FlowControlLimits, announced_session_count, client_draft};
use crate::qlog::{initiator, session_event};
use crate::routes::Routes;

/// What a connection's peer asked for, from [`Connection::accept`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// A WebTransport session request.
    Session(Request),
    /// A plain HTTP/3 request, to answer with `quay_h3`. Boxed, as a [`Request`]'s parts are:
    /// both wait in a queue sized for the larger.
    Http(Box<http::Request<()>>, Box<RequestStream>),
}

/// A WebTransport server on its own QUIC endpoint.
///
/// Plain HTTP/3 requests that reach it are answered 404; to serve both, run a `quay_h3` server
/// and wrap its connections in [`Connection`].
#[derive(Debug)]
pub struct Server {
    endpoint: Endpoint,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl Server {
    /// Binds a server endpoint with `identity` and quay-transport's default options (which
    /// enable datagrams), with a qlog file per connection in `$QLOGDIR` when it is set. Must be
    /// called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        config: Config,
    ) -> Result<Self, EndpointError> {
        let builder = ServerBuilder::new(identity);
        let endpoint = builder.bind(addr)?;
        Ok(Self::start(endpoint, Some(builder.acceptor()?), config))
    }

    /// Serves WebTransport on an endpoint set up elsewhere (ALPN `h3`, QUIC datagrams on). Must
    /// be called inside a tokio runtime.
    pub fn from_endpoint(endpoint: Endpoint, config: Config) -> Self {
        Self::start(endpoint, None, config)
    }

    /// As [`Server::from_endpoint`], accepting connections through `acceptor`
    /// (`ServerBuilder::acceptor`, or a worker's), which gives each a qlog file when the builder
    /// has a qlog directory.
    pub fn from_endpoint_with(endpoint: Endpoint, acceptor: Acceptor, config: Config) -> Self {
        Self::start(endpoint, Some(acceptor), config)
    }

    fn start(endpoint: Endpoint, acceptor: Option<Acceptor>, config: Config) -> Self {
        let (tx, rx) = mpsc::channel(config.accept_queue.max(1));
        let acceptor = tokio::spawn(accept_connections(
            endpoint.clone(),
            acceptor,
            Arc::new(config),
            tx,
        ));
        Self {
            endpoint,
            incoming: tokio::sync::Mutex::new(rx),
            acceptor,
        }
    }

    /// The local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The QUIC endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Waits for the next session request, from any connection. `None` once the endpoint is
    /// closed.
    pub async fn accept(&self) -> Option<Request> {
        let mut incoming = self.incoming.lock().await;
        // Each turn takes one request off the queue.
        loop {
            match incoming.recv().await? {
                Incoming::Session(request) => return Some(request),
                Incoming::Http(_, stream) => answer(*stream, StatusCode::NOT_FOUND),
            }
        }
    }

    /// Closes every connection with H3_NO_ERROR and stops accepting.
    pub fn close(&self) {
        self.endpoint
            .close(Code::H3_NO_ERROR.to_varint(), b"server closing");
    }
}

/// Accepts the endpoint's connections, waits for their handshakes and hands each connection to
/// a [`Sorter`] on the connection's own task.
async fn accept_connections(
    endpoint: Endpoint,
    acceptor: Option<Acceptor>,
    config: Arc<Config>,
    tx: mpsc::Sender<Incoming>,
) {
    // Worked out once, not per connection.
    let h3_config = config.h3_config();
    // Handshakes under way, waited for here rather than each in a task of its own: the
    // handshake's work is quinn's, in the connection's own task; what waits here is its end,
    // and a slow one holds up no other.
    let mut handshakes = FuturesUnordered::new();
    // Bounded by the endpoint: each turn accepts a connection or ends a handshake.
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else {
                    break;
                };
                handshakes.push(quay_h3::server::Connection::accept_with(
                    incoming,
                    acceptor.as_ref(),
                    h3_config.clone(),
                ));
            }
            Some(handshake) = handshakes.next(), if !handshakes.is_empty() => {
                if let Ok(h3) = handshake {
                    // Refused only when the connection is gone already.
                    let _ = Sorter::start(Arc::new(h3), config.clone(), tx.clone());
                }
            }
        }
    }
}

/// WebTransport on one connection of a `quay_h3` server, next to its HTTP/3 requests.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use quay_webtransport::Config;
/// use quay_webtransport::server::{Connection, Incoming};
///
/// let config = Config::default();
/// let identity = quay_transport::Identity::self_signed(["localhost"])?;
/// let h3 = quay_h3::Server::bind("[::]:4433".parse()?, identity, config.h3_config())?;
/// while let Some(connection) = h3.accept().await {
///     let connection = Connection::new(connection, config.clone());
///     while let Some(incoming) = connection.accept().await {
///         match incoming {
///             Incoming::Session(request) => { let _session = request.ok().await?; }
///             Incoming::Http(_request, mut stream) => {
///                 stream.send_response(http::Response::new(())).await?;
///                 stream.finish()?;
///             }
///             _ => {}
///         }
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Connection {
    h3: Arc<quay_h3::server::Connection>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Incoming>>,
}

impl Connection {
    /// Takes over `connection`, which must have been made with [`Config::h3_config`] (or a
    /// configuration that includes it). Must be called inside a tokio runtime.
    pub fn new(connection: quay_h3::server::Connection, config: Config) -> Self {
        let h3 = Arc::new(connection);
        let (tx, rx) = mpsc::channel(config.accept_queue.max(1));
        // Refused when the connection is gone, has a handler, or its extension streams were
        // taken: `accept` then returns `None`.
        let _ = Sorter::start(h3.clone(), Arc::new(config), tx);
        Self {
            h3,
            incoming: tokio::sync::Mutex::new(rx),
        }
    }

    /// The HTTP/3 connection (for its settings, GOAWAY shutdown, ...).
    pub fn h3(&self) -> &quay_h3::server::Connection {
        &self.h3
    }

    /// The next session request or HTTP/3 request; `None` once the connection is gone.
    pub async fn accept(&self) -> Option<Incoming> {
        self.incoming.lock().await.recv().await
    }
}

/// Answers `stream` with an empty response of `status`, in the background.
fn answer(mut stream: RequestStream, status: StatusCode) {
    tokio::spawn(async move {
        let mut response = Response::new(());
        *response.status_mut() = status;
        if stream.send_response(response).await.is_ok() {
            let _ = stream.finish();
        }
    });
}

/// The WebTransport side of one connection: it reads the request heads (several at once, so a
/// slow client delays no one), sorts sessions from HTTP/3 requests, and routes WebTransport
/// streams. It runs on the connection's own task, as its [`Handler`]: each stream reaches it
/// without a task of its own to wake.
struct Sorter {
    h3: Arc<quay_h3::server::Connection>,
    config: Arc<Config>,
    tx: mpsc::Sender<Incoming>,
    routes: Arc<Routes>,
    /// Request heads still on their way; dropped while there are none (most connections send
    /// one request, a session's CONNECT, whose head comes with its stream), since an empty set
    /// still holds an allocation; boxed, so that a connection's sorter is five words.
    heads: Option<Box<FuturesUnordered<HeadRead>>>,
}

/// A request head being read ([`read_head`]).
type HeadRead = Pin<Box<dyn Future<Output = HeadResult> + Send>>;
type HeadResult = Result<Option<(http::Request<()>, RequestStream)>, quay_h3::StreamError>;

impl Sorter {
    /// Hands `h3`'s streams to a new sorter; fails when the connection is gone, has a handler,
    /// or its extension streams were taken.
    fn start(
        h3: Arc<quay_h3::server::Connection>,
        config: Arc<Config>,
        tx: mpsc::Sender<Incoming>,
    ) -> Result<(), Box<dyn Handler>> {
        let sorter = Self {
            h3: h3.clone(),
            routes: Routes::new(config.max_buffered_streams),
            config,
            tx,
            heads: None,
        };
        h3.set_handler(sorter)
    }
}

impl Handler for Sorter {
    fn request(&mut self, request: IncomingRequest) {
        let timeout = self.config.h3.request_head_timeout;
        let mut head: HeadRead = Box::pin(read_head(request, self.h3.clone(), timeout));
        // A head usually comes in the stream's first packet: sorted at once, without a set made
        // for it. The poll's no-op waker is replaced when the set polls the head, at the end of
        // this wake-up of the connection's task.
        match head.as_mut().now_or_never() {
            Some(Ok(Some((request, stream)))) => {
                sort(
                    request,
                    stream,
                    &self.h3,
                    &self.routes,
                    &self.config,
                    &self.tx,
                );
            }
            Some(_) => {}
            None => self.heads.get_or_insert_default().push(head),
        }
    }

    fn extension_stream(&mut self, stream: quay_h3::stream::ExtensionStream) {
        self.routes.route(stream, self.h3.connection());
    }

    fn poll(&mut self, cx: &mut Context<'_>) {
        let Self {
            h3,
            config,
            tx,
            routes,
            heads,
        } = self;
        let Some(set) = heads else {
            return;
        };
        // Bounded: the set yields after polling each of its heads once.
        loop {
            match set.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(Some((request, stream))))) => {
                    sort(request, stream, h3, routes, config, tx);
                }
                Poll::Ready(Some(_)) => {}
                Poll::Ready(None) => {
                    *heads = None;
                    return;
                }
                Poll::Pending => return,
            }
        }
    }

    fn closed(&mut self) {
        self.routes.connection_closed();
    }
}

/// Reads a request's head; for a WebTransport CONNECT, also waits for the client's SETTINGS,
/// which say whether and how the session may be served (draft-16 §3.1: a server processes no
/// WebTransport request before them), within the bound a head has. A client whose SETTINGS do
/// not come in that time has the CONNECT refused with H3_REQUEST_REJECTED (it was not
/// processed, and may be retried).
async fn read_head(
    stream: IncomingRequest,
    h3: Arc<quay_h3::server::Connection>,
    timeout: std::time::Duration,
) -> Result<Option<(http::Request<()>, RequestStream)>, quay_h3::StreamError> {
    let Some((request, mut stream)) = stream.resolve().await? else {
        return Ok(None);
    };
    if is_webtransport(&request)
        && h3.peer_settings().is_none()
        && tokio::time::timeout(timeout, h3.settings()).await.is_err()
    {
        stream.reject(Code::H3_REQUEST_REJECTED);
        return Ok(None);
    }
    Ok(Some((request, stream)))
}

/// Whether `request` asks for a WebTransport session: Extended CONNECT with either draft's
/// `:protocol` token.
fn is_webtransport(request: &http::Request<()>) -> bool {
    request.method() == Method::CONNECT
        && request
            .extensions()
            .get::<Protocol>()
            .is_some_and(connect::is_webtransport)
}

/// Sends one resolved request where it belongs.
fn sort(
    request: http::Request<()>,
    mut stream: RequestStream,
    h3: &Arc<quay_h3::server::Connection>,
    routes: &Arc<Routes>,
    config: &Config,
    tx: &mpsc::Sender<Incoming>,
) {
    if !is_webtransport(&request) {
        if let Err(error) = tx.try_send(Incoming::Http(Box::new(request), Box::new(stream)))
            && let Incoming::Http(_, stream) = error.into_inner()
        {
            answer(*stream, StatusCode::SERVICE_UNAVAILABLE);
        }
        return;
    }
    let id = VarInt::from(stream.id()).into_inner();
    let peer_settings = h3.peer_settings();
    // draft-16 §3.1: a client whose SETTINGS (or transport parameters: QUIC datagrams) lack
    // what WebTransport requires has every session treated as malformed (RFC 9114 §4.1.2).
    // Its SETTINGS are in: `read_head` waited for them.
    let draft = match peer_settings.as_ref().map(client_draft) {
        Some(Ok(draft)) if h3.connection().max_datagram_size().is_some() => draft,
        _ => {
            stream.reject(Code::H3_MESSAGE_ERROR);
            return;
        }
    };
    let flow = config.flow_control.zip(
        peer_settings
            .as_ref()
            .and_then(FlowControlLimits::from_settings),
    );
    // draft-07..14: up to the count we announced. draft-16 §5.1: a client that announced no
    // count gets one session unless flow control is on.
    let client_counted = peer_settings
        .as_ref()
        .and_then(announced_session_count)
        .is_some();
    let limit = server_session_limit(config.max_sessions as usize, client_counted, flow.is_some());
    if !routes.request(id, limit) {
        stream.reject(Code::H3_REQUEST_REJECTED);
        return;
    }
    if let Some(qlog) = stream.qlog() {
        session_event(qlog, "quay-webtransport:session_opened", id, |data| {
            data.str("initiator", initiator(false))
                .str("path", request.uri().path());
        });
    }
    let request = Request::new(Pending {
        head: Box::new(request),
        stream: Some(stream),
        routes: routes.clone(),
        conn: h3.connection().clone(),
        draft,
        id,
        flow,
    });
    if let Err(error) = tx.try_send(Incoming::Session(request))
        && let Incoming::Session(mut request) = error.into_inner()
        && let Some(mut stream) = request.take_stream()
    {
        stream.reject(Code::H3_REQUEST_REJECTED);
    }
}
