//! [`Client`]: a pool of HTTP/3 connections on one client endpoint, keyed by origin. The rules
//! (which connection takes a request, when to open or retire one) are [`super::rules`]; this is
//! the glue: a lock around them, a notify for requests waiting on a connect, the connects, and
//! one small task that closes idle connections.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use quay_transport::{ClientBuilder, Connector, Endpoint, EndpointError};
use tokio::sync::Notify;

use super::rules::{Blocked, Health, Origin, Pick, Rules};
use super::{ConnectError, Connection, RequestStream, Trailers};
use crate::config::Config;
use crate::error::{Code, StreamError};

/// The pool's timeouts and limits.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// A connection with no request in flight for this long is closed (H3_NO_ERROR). Default:
    /// 30 s, below the usual QUIC idle timeouts, so that the client rather than the network
    /// ends an unused connection.
    pub idle_timeout: Duration,
    /// How long a connect (resolving the host and the QUIC handshake) may take. Default: 10 s.
    pub connect_timeout: Duration,
    /// How long a whole request may take, from picking a connection to the end of the
    /// response. Default: none.
    pub request_timeout: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            request_timeout: None,
        }
    }
}

impl Options {
    /// Sets [`Options::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`Options::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`Options::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }
}

/// Why a request through [`Client`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request's URI is not an absolute `https` URI with a host.
    #[error("not an absolute https URI: {0}")]
    Uri(Uri),
    /// Connecting to the origin failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Connecting to the origin took longer than [`Options::connect_timeout`].
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The request took longer than [`Options::request_timeout`]; its stream was cancelled.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The request stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The request body failed; the request was cancelled (H3_REQUEST_CANCELLED).
    #[error("request body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// [`Client::close`] was called.
    #[error("the client is closed")]
    Closed,
}

/// An HTTP/3 client that keeps connections per origin (scheme, host, port) on one client
/// endpoint (one UDP socket). Cheap to clone; clones share the pool.
///
/// - Requests to one origin share a connection up to the server's limit on concurrent
///   request streams; past it, a second connection is opened. Requests that arrive while a
///   connection to their origin is being set up wait for it rather than open their own.
/// - A connection with no request in flight for [`Options::idle_timeout`] is closed.
/// - A connection that received GOAWAY takes no new requests and is closed once its last one
///   ends (RFC 9114 §5.2). [`Client::request`] sends a request that the server refused unprocessed
///   (reset with H3_REQUEST_REJECTED, RFC 9114 §4.1.1, or at or above the GOAWAY ID) once more on
///   a new connection.
///
/// Before a program exits, call [`Client::close`] and then [`Client::wait_idle`], so that the
/// closes reach the servers.
///
/// For one connection and what only a connection has (Extended CONNECT sessions, datagrams,
/// extension streams, stats), use [`Connection`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    /// Opens connections with the builder's per-connection settings (qlog), when built from one.
    connector: Option<Connector>,
    config: Config,
    options: Options,
    rules: Mutex<Rules<Connection>>,
    /// A connect ended: requests waiting for it pick again.
    connected: Notify,
    /// The idle deadline may have changed, or the client is gone: wakes the idle task.
    reaper: Arc<Notify>,
    reaper_started: AtomicBool,
    closed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reaper.notify_one();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint.local_addr().ok())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client on a new endpoint built from `builder` (its trust, transport options), with
    /// default [`Options`]. Call inside a tokio runtime.
    pub fn new(builder: &ClientBuilder, config: Config) -> Result<Self, EndpointError> {
        Self::with_options(builder, config, Options::default())
    }

    /// A client on a new endpoint built from `builder`, with `options`.
    pub fn with_options(
        builder: &ClientBuilder,
        config: Config,
        options: Options,
    ) -> Result<Self, EndpointError> {
        let connector = Some(builder.connector()?);
        Ok(Self::start(builder.build()?, connector, config, options))
    }

    /// A client on `endpoint` (from `ClientBuilder::build` or `bind`), which other clients may
    /// share.
    pub fn on_endpoint(endpoint: Endpoint, config: Config, options: Options) -> Self {
        Self::start(endpoint, None, config, options)
    }

    fn start(
        endpoint: Endpoint,
        connector: Option<Connector>,
        config: Config,
        options: Options,
    ) -> Self {
        let idle_timeout = options.idle_timeout;
        Self {
            inner: Arc::new(Inner {
                endpoint,
                connector,
                config,
                options,
                rules: Mutex::new(Rules::new(idle_timeout)),
                connected: Notify::new(),
                reaper: Arc::new(Notify::new()),
                reaper_started: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The client endpoint all connections use.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The pool's options.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Sends a whole request and reads the whole response, as [`Connection::request`] does
    /// (trailers travel as a [`Trailers`] in the extensions), on a pooled connection to the
    /// request URI's origin. A request the server refused unprocessed is sent once more on a
    /// new connection (RFC 9114 §4.1.1, §5.2). Bounded by [`Options::request_timeout`].
    pub async fn request(&self, request: Request<Bytes>) -> Result<Response<Bytes>, RequestError> {
        let (mut parts, body) = request.into_parts();
        let trailers = parts.extensions.remove::<Trailers>();
        self.within(async {
            let mut refused_by = None;
            loop {
                let head = Request::from_parts(parts.clone(), ());
                let (mut stream, id, conn) = self.acquire(&head, refused_by).await?;
                let stream_id = u64::from(stream.id());
                match super::exchange(&mut stream, body.clone(), trailers.clone()).await {
                    Err(error) if refused_by.is_none() && refused(&error, stream_id, &conn) => {
                        tracing::debug!(%error, "request refused unprocessed; sending it again");
                        refused_by = Some(id);
                    }
                    result => return Ok(result?),
                }
            }
        })
        .await
    }

    /// Sends a request head on a pooled connection to the request URI's origin and returns the
    /// stream for its body and response, as [`Connection::send_request`] does. The request
    /// counts as in flight on its connection until the stream (both halves, after
    /// [`RequestStream::split`]) is dropped. Picking a connection and sending the head is bounded
    /// by [`Options::request_timeout`]; the rest is the caller's.
    pub async fn send_request(&self, request: Request<()>) -> Result<RequestStream, RequestError> {
        let acquired = self.within(self.acquire(&request, None)).await?;
        Ok(acquired.0)
    }

    /// Closes every pooled connection now (H3_NO_ERROR); requests in flight fail, and new ones
    /// fail with [`RequestError::Closed`]. Then call [`Client::wait_idle`].
    pub fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        let gone = inner.lock().drain();
        close_all(gone);
        inner.connected.notify_waiters();
    }

    /// Waits until every connection on the client's endpoint is closed and its close has been
    /// sent (the endpoint's `wait_idle`). Call it after [`Client::close`] before a program exits,
    /// or the servers may never learn of the closes.
    pub async fn wait_idle(&self) {
        self.inner.endpoint.wait_idle().await;
    }

    /// Runs `work` within [`Options::request_timeout`].
    pub(crate) async fn within<T>(
        &self,
        work: impl Future<Output = Result<T, RequestError>>,
    ) -> Result<T, RequestError> {
        match self.inner.options.request_timeout {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or(Err(RequestError::Timeout(limit))),
        }
    }

    /// Opens `head` on a pooled connection to its origin (not on `exclude`, a connection that
    /// refused it): returns the stream, the connection's ID in the pool, and the connection.
    pub(crate) async fn acquire(
        &self,
        head: &Request<()>,
        exclude: Option<u64>,
    ) -> Result<(RequestStream, u64, Connection), RequestError> {
        let inner = &self.inner;
        let origin = Origin::of(head.uri()).ok_or_else(|| RequestError::Uri(head.uri().clone()))?;
        // A request refused before it was sent (GOAWAY arrived first) picks again; a few times
        // at most, as each GOAWAY retires a connection.
        let mut refusals = 0;
        // Each turn ends in a stream, an error, a wait for a connect, or a retired connection.
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return Err(RequestError::Closed);
            }
            let notified = inner.connected.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (pick, gone) = {
                let mut rules = inner.lock();
                let gone = rules.handle_health(&origin, health);
                (rules.pick(&origin, exclude), gone)
            };
            close_all(gone);
            let (id, conn) = match pick {
                Pick::Wait => {
                    notified.await;
                    continue;
                }
                Pick::Use(id, conn) => (id, conn),
                Pick::Connect => self.connect(&origin).await?,
            };
            let mut lease = Some(Lease {
                pool: Arc::downgrade(inner),
                origin: origin.clone(),
                id,
                opened: false,
            });
            let mut wait_for_credit = false;
            // At most two turns: the second waits for credit.
            let opened = loop {
                match conn.open(head.clone(), &mut lease, wait_for_credit).await {
                    Ok(Some(stream)) => break Ok(Some(stream)),
                    Ok(None) => match inner.lock().handle_blocked(&origin, id) {
                        Blocked::Wait => wait_for_credit = true,
                        Blocked::Repick => break Ok(None),
                    },
                    Err(error) => break Err(error),
                }
            };
            // Not opened: the request no longer counts on this connection.
            drop(lease);
            match opened {
                Ok(Some(stream)) => return Ok((stream, id, conn)),
                Ok(None) => {}
                Err(StreamError::GoingAway) if refusals < 3 => refusals += 1,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Connects to `origin` for [`Pick::Connect`]; the caller's request is counted on the new
    /// connection.
    async fn connect(&self, origin: &Origin) -> Result<(u64, Connection), RequestError> {
        let inner = &self.inner;
        let mut pending = Connecting {
            inner,
            origin,
            done: false,
        };
        let limit = inner.options.connect_timeout;
        let url = origin.url();
        let connector = inner.connector.as_ref();
        let connect =
            Connection::connect_through(&inner.endpoint, connector, &url, inner.config.clone());
        let conn = match tokio::time::timeout(limit, connect).await {
            Ok(connected) => connected?,
            Err(_) => return Err(RequestError::ConnectTimeout(limit)),
        };
        let id = inner.lock().handle_connected(origin, conn.clone());
        pending.done = true;
        inner.connected.notify_waiters();
        self.start_reaper();
        if inner.closed.load(Ordering::Acquire) {
            // Closed while connecting: `close` did not see this one.
            close_all(inner.lock().drain());
            return Err(RequestError::Closed);
        }
        Ok((id, conn))
    }

    /// Starts the task that closes idle connections, once. It holds the pool weakly and ends
    /// when the client is gone.
    fn start_reaper(&self) {
        let inner = &self.inner;
        if inner.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(inner);
        let wake = inner.reaper.clone();
        tokio::spawn(async move {
            // Each turn closes what is due and sleeps until the next deadline or a change.
            loop {
                let next = {
                    let Some(inner) = pool.upgrade() else { return };
                    let (gone, next) = {
                        let mut rules = inner.lock();
                        (rules.handle_timeout(Instant::now()), rules.poll_timeout())
                    };
                    close_all(gone);
                    next
                };
                match next {
                    Some(at) => tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep_until(at.into()) => {}
                    },
                    None => wake.notified().await,
                }
            }
        });
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Rules<Connection>> {
        // The rules hold no invariant a panic elsewhere could break halfway.
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a pooled connection is doing.
fn health(conn: &Connection) -> Health {
    if conn.is_closed() {
        Health::Closed
    } else if conn.goaway_received().is_some() {
        Health::GoingAway
    } else {
        Health::Usable
    }
}

/// Closes connections the pool let go (H3_NO_ERROR).
fn close_all(conns: Vec<Connection>) {
    for conn in conns {
        conn.close(Code::H3_NO_ERROR, b"");
    }
}

/// Whether the server refused request stream `id` unprocessed, so that it may be sent again.
pub(super) fn refused(error: &StreamError, id: u64, conn: &Connection) -> bool {
    match error {
        // RFC 9114 §4.1.1: H3_REQUEST_REJECTED says the request was not processed.
        StreamError::Reset(code) | StreamError::Stopped(code) => *code == Code::H3_REQUEST_REJECTED,
        StreamError::GoingAway => true,
        // RFC 9114 §5.2: requests at or above the GOAWAY ID were not processed.
        StreamError::ConnectionLost(_) => conn
            .goaway_received()
            .is_some_and(|limit| id >= limit.into_inner()),
        _ => false,
    }
}

/// A connect in flight; tells the pool when it is given up (failed or its future dropped).
struct Connecting<'a> {
    inner: &'a Inner,
    origin: &'a Origin,
    done: bool,
}

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.inner.lock().handle_connect_failed(self.origin);
            self.inner.connected.notify_waiters();
        }
    }
}

/// A request counted in flight on a pooled connection, until dropped (it lives in the request
/// stream's shared part, so until both halves are gone).
pub(crate) struct Lease {
    pool: Weak<Inner>,
    origin: Origin,
    id: u64,
    opened: bool,
}

impl Lease {
    /// The request's stream is open.
    pub(crate) fn opened(&mut self) {
        self.opened = true;
        if let Some(inner) = self.pool.upgrade() {
            inner.lock().handle_opened(&self.origin, self.id);
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("origin", &self.origin)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(inner) = self.pool.upgrade() else {
            return;
        };
        let retired =
            inner
                .lock()
                .handle_finished(&self.origin, self.id, self.opened, Instant::now());
        close_all(retired.into_iter().collect());
        inner.reaper.notify_one();
    }
}
