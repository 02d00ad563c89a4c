//! HTTP/3 clients: [`Client`] pools connections per origin on one endpoint; [`Connection`] sends
//! requests on one connection; [`RequestStream`] is one request and its response.
//!
//! A client opens each request as a QUIC bidirectional stream and reads and writes it in the
//! caller's task. [`Connection::connect`] also sets up the QUIC endpoint (through `quay-transport`);
//! [`Connection::new`] wraps a connection made elsewhere. Connection-level work (SETTINGS, QPACK
//! streams, GOAWAY, datagram routing) runs in the connection's own task.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use quay_h3::Config;
//! use quay_h3::client::{Client, Connection};
//! use quay_transport::ClientBuilder;
//!
//! // A pool: connections per origin, opened as requests need them.
//! let client = Client::new(&ClientBuilder::new(), Config::default())?;
//! let request = http::Request::get("https://localhost:4433/hello").body(Bytes::new())?;
//! let response = client.request(request).await?;
//! println!("{}: {:?}", response.status(), response.body());
//! client.close();
//! client.wait_idle().await;
//!
//! // One connection, for what only a connection has (Extended CONNECT, datagrams, stats).
//! let url = "https://localhost:4433/";
//! let connection = Connection::connect(url, &ClientBuilder::new(), Config::default()).await?;
//! println!("{:?}", connection.stats());
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use quay_qpack::Field;
use quay_transport::{ClientBuilder, Connector, Endpoint, EndpointError, Qlog, VarInt};

#[cfg(feature = "http-body")]
mod body;
pub(crate) mod pool;
mod request;
mod rules;

#[cfg(feature = "http-body")]
pub use body::Incoming;
pub use pool::{Client, Options, RequestError};
pub use request::{RequestStream, Trailers};

use crate::config::Config;
use crate::connection::Side;
use crate::driver::shared::{Shared, Taker};
use crate::driver::task;
use crate::error::Code;
use crate::error::{Feature, Misuse};
use crate::proto::headers::{self, Protocol};
use crate::proto::settings::Settings;
use crate::request::RequestState;
use crate::stats::ConnectionStats;
use crate::stream::{
    ConnectionError, ExtensionStream, ExtensionStreams, Live, RecvHalf, SendHalf, StreamError,
};

/// Why [`Connection::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL could not be parsed or has no host.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// The endpoint could not be set up.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// quinn refused to start the connection.
    #[error(transparent)]
    Connect(#[from] quay_transport::ConnectError),
    /// The QUIC or TLS handshake failed.
    #[error(transparent)]
    Connection(#[from] quay_transport::ConnectionError),
}

/// The host of `url` (for TLS) and its addresses at the URL's port (443 when absent).
async fn resolve(url: &str) -> Result<(String, Vec<SocketAddr>), ConnectError> {
    let url = url::Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    let host = url
        .host_str()
        .ok_or_else(|| ConnectError::Url("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::Resolve {
            host,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        });
    }
    Ok((host, addrs))
}

/// Counts a handshake that failed, for the metrics.
fn count_failed_handshake(error: &ConnectError) {
    if let ConnectError::Connection(error) = error {
        crate::metrics::handshake_failed(Side::Client, error);
    }
}

/// Connects to the first IPv6 and the first IPv4 address of `addrs` at once and keeps whichever
/// handshake completes first ("localhost" often resolves to ::1 before 127.0.0.1, and a server may
/// listen on one family only).
async fn connect_any(
    endpoint: &Endpoint,
    connector: Option<&Connector>,
    addrs: &[SocketAddr],
    host: &str,
) -> Result<(quay_transport::Connection, Option<Qlog>), ConnectError> {
    let candidates = [
        addrs.iter().find(|a| a.is_ipv6()),
        addrs.iter().find(|a| a.is_ipv4()),
    ];
    let mut attempts = Vec::new();
    let mut refused = None;
    for addr in candidates.into_iter().flatten() {
        // An endpoint without IPv6 refuses an IPv6 address at once: try the other.
        let connecting = match connector {
            Some(connector) => connector.connect(endpoint, *addr, host),
            None => endpoint.connect(*addr, host).map(|c| (c, None)),
        };
        match connecting {
            Ok((connecting, qlog)) => {
                attempts.push(async move { connecting.await.map(|c| (c, qlog)) })
            }
            Err(error) => refused = Some(error),
        }
    }
    let second = attempts.pop();
    let first = attempts.pop();
    match (first, second) {
        (Some(first), Some(second)) => {
            tokio::pin!(first, second);
            tokio::select! {
                result = &mut first => match result {
                    Ok(connection) => Ok(connection),
                    Err(_) => Ok(second.await?),
                },
                result = &mut second => match result {
                    Ok(connection) => Ok(connection),
                    Err(_) => Ok(first.await?),
                },
            }
        }
        (None, Some(only)) | (Some(only), None) => Ok(only.await?),
        (None, None) => Err(match refused {
            Some(error) => error.into(),
            None => ConnectError::Url("the host has no address".into()),
        }),
    }
}

/// An HTTP/3 client on one connection (see [`Client`] for a pool of them). Cheap to clone; the connection closes (H3_NO_ERROR) when
/// every clone and every request stream is dropped.
#[derive(Clone, Debug)]
pub struct Connection {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    endpoint: Option<Endpoint>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.handle_dropped();
    }
}

impl Connection {
    /// Connects to the host and port of `url` (port 443 when absent): resolves the host, binds a
    /// client endpoint from `builder`, and uses the host as the TLS server name.
    pub async fn connect(
        url: &str,
        builder: &ClientBuilder,
        config: Config,
    ) -> Result<Self, ConnectError> {
        let (host, addrs) = resolve(url).await?;
        let endpoint = builder.build()?;
        let connector = builder.connector()?;
        let started = Instant::now();
        let (connection, qlog) = connect_any(&endpoint, Some(&connector), &addrs, &host)
            .await
            .inspect_err(count_failed_handshake)?;
        let handshake = Some(started.elapsed());
        Ok(Self::start(
            connection,
            config,
            Some(endpoint),
            handshake,
            qlog,
        ))
    }

    /// Connects to the host and port of `url` (port 443 when absent) on `endpoint`, which may
    /// carry any number of connections (one UDP socket for all of a program's clients; build it
    /// with `ClientBuilder::build`). Wait for the endpoint's `wait_idle` before the program
    /// exits, so that closes have left.
    pub async fn connect_on(
        endpoint: &Endpoint,
        url: &str,
        config: Config,
    ) -> Result<Self, ConnectError> {
        Self::connect_through(endpoint, None, url, config).await
    }

    /// [`Connection::connect_on`] through `connector` when given (a qlog file per connection
    /// when its builder has a qlog directory).
    pub(crate) async fn connect_through(
        endpoint: &Endpoint,
        connector: Option<&Connector>,
        url: &str,
        config: Config,
    ) -> Result<Self, ConnectError> {
        let (host, addrs) = resolve(url).await?;
        let started = Instant::now();
        let (connection, qlog) = connect_any(endpoint, connector, &addrs, &host)
            .await
            .inspect_err(count_failed_handshake)?;
        let handshake = Some(started.elapsed());
        Ok(Self::start(connection, config, None, handshake, qlog))
    }

    /// Waits until the connections of the endpoint this client made for itself
    /// ([`Connection::connect`]) are closed and their closes have been sent: call it after
    /// [`Connection::close`] (or dropping every request) before a program exits, or the peer may
    /// never learn of the close. Returns at once for a client on an endpoint it was given.
    pub async fn wait_idle(&self) {
        if let Some(endpoint) = &self.inner.endpoint {
            endpoint.wait_idle().await;
        }
    }

    /// Speaks HTTP/3 on an established QUIC connection (ALPN `h3`). Must be called inside a tokio
    /// runtime.
    pub fn new(connection: quay_transport::Connection, config: Config) -> Self {
        Self::start(connection, config, None, None, None)
    }

    /// As [`Connection::new`], on a connection opened through a `Connector`
    /// (`quay_transport::Connector::connect`, e.g. on an endpoint shared by many connections):
    /// this crate's events, and those of extensions such as WebTransport, go to `qlog`, the
    /// connection's file that `Connector::connect` returned beside it, next to quinn's. `None`
    /// is [`Connection::new`].
    pub fn with_qlog(
        connection: quay_transport::Connection,
        qlog: Option<Qlog>,
        config: Config,
    ) -> Self {
        Self::start(connection, config, None, None, qlog)
    }

    fn start(
        connection: quay_transport::Connection,
        config: Config,
        endpoint: Option<Endpoint>,
        handshake: Option<Duration>,
        qlog: Option<Qlog>,
    ) -> Self {
        let shared = task::start(connection, config, Side::Client, handshake, None, qlog);
        Self {
            inner: Arc::new(Handle { shared, endpoint }),
        }
    }

    /// The connection's qlog file, if it has one: extensions (WebTransport) write their events
    /// to it, next to quinn's and this crate's.
    pub fn qlog(&self) -> Option<&Qlog> {
        self.inner.shared.qlog.as_ref()
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &quay_transport::Connection {
        &self.inner.shared.conn
    }

    /// The server's address. An IPv4 server reached from a dual-stack endpoint (the default,
    /// see `ClientBuilder::build`) is reported as IPv4, not as an IPv4-mapped IPv6 address.
    pub fn remote_address(&self) -> SocketAddr {
        crate::driver::shared::canonical(self.inner.shared.conn.remote_address())
    }

    /// The connection's stats: the transport's (RTT, congestion window, loss, UDP datagrams and
    /// bytes) and HTTP/3's (requests, streams and frames by type, QPACK, GOAWAY). Copies a few
    /// hundred bytes; allocates nothing.
    pub fn stats(&self) -> ConnectionStats {
        self.inner.shared.stats()
    }

    /// The server's SETTINGS, once received.
    pub fn peer_settings(&self) -> Option<Settings> {
        self.inner.shared.peer_settings()
    }

    /// Waits for the server's SETTINGS (needed before Extended CONNECT, RFC 9220 §3).
    pub async fn settings(&self) -> Result<Settings, ConnectionError> {
        self.inner.shared.settings().await
    }

    /// Sends a request head and returns the stream for its body and response. Waits while the
    /// server's stream limit is reached. Fails with [`StreamError::GoingAway`] after the server's
    /// GOAWAY.
    ///
    /// A request with a [`Protocol`] extension is an Extended CONNECT (RFC 9220): it waits for
    /// the server's SETTINGS and fails unless both sides enabled it.
    pub async fn send_request(&self, request: Request<()>) -> Result<RequestStream, StreamError> {
        let opened = self.open(request, &mut None, true).await?;
        // Waiting for stream credit, `open` always returns a stream.
        opened.ok_or(StreamError::Invalid(Misuse::StreamClosed))
    }

    /// [`Connection::send_request`] for the pool: the stream carries `lease` (the pool counts the
    /// request in flight until both halves are gone), and with `wait_for_credit` false it returns
    /// `Ok(None)` at once when the server's stream limit is reached instead of waiting.
    pub(crate) async fn open(
        &self,
        request: Request<()>,
        lease: &mut Option<pool::Lease>,
        wait_for_credit: bool,
    ) -> Result<Option<RequestStream>, StreamError> {
        let shared = &self.inner.shared;
        let extended = request.extensions().get::<Protocol>().is_some();
        if extended {
            let settings = self.settings().await?;
            if !shared.config.enable_extended_connect || !settings.enable_connect_protocol() {
                return Err(StreamError::NotNegotiated(Feature::ExtendedConnect));
            }
        }
        let fields: Vec<Field> = headers::request_fields(&request)?;
        self.check_goaway(None)?;
        let open = shared.conn.open_bi();
        tokio::pin!(open);
        let opened = if wait_for_credit {
            open.await
        } else {
            // One poll: ready unless the server's stream limit is reached.
            let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(open.as_mut().poll(cx)));
            match polled.await {
                std::task::Poll::Ready(opened) => opened,
                std::task::Poll::Pending => return Ok(None),
            }
        };
        let (send, recv) =
            opened.map_err(|e| StreamError::ConnectionLost(shared.connection_error(e)))?;
        let lease = lease.take().map(|mut lease| {
            lease.opened();
            lease
        });
        let live = Live::leased(shared.clone(), lease);
        let mut send = SendHalf::new(send, live.clone());
        if let Err(error) = self.check_goaway(Some(send.id().into())) {
            send.reset(Code::H3_REQUEST_CANCELLED);
            return Err(error);
        }
        let state = RequestState::response(shared.config.max_frame_payload, request.method());
        let mut recv = RecvHalf::new(recv, state, Bytes::new(), live);
        let connect = request.method() == Method::CONNECT;
        if connect && shared.config.enable_datagrams {
            recv.listen_datagrams();
        }
        send.send_head(&fields, true).await?;
        Ok(Some(RequestStream {
            send,
            recv,
            response_received: false,
            sent_at: Instant::now(),
            time_to_response_head: None,
        }))
    }

    /// The ID of the server's GOAWAY, once received: request streams at or above it will not be
    /// processed (RFC 9114 §5.2).
    pub(crate) fn goaway_received(&self) -> Option<VarInt> {
        self.inner.shared.lock().proto.goaway_received()
    }

    /// Whether the connection has ended (closed by either side or lost).
    pub(crate) fn is_closed(&self) -> bool {
        let shared = &self.inner.shared;
        shared.lock().error.is_some() || shared.conn.close_reason().is_some()
    }

    fn check_goaway(&self, id: Option<VarInt>) -> Result<(), StreamError> {
        // One lock; a connection closed by QUIC alone shows up when the stream is opened.
        let goaway = {
            let inner = self.inner.shared.lock();
            if let Some(error) = inner.error.as_deref() {
                return Err(StreamError::ConnectionLost(error.clone()));
            }
            inner.proto.goaway_received()
        };
        match (goaway, id) {
            // RFC 9114 §5.2: no new requests after GOAWAY; streams at or above its ID are not
            // processed.
            (Some(_), None) => Err(StreamError::GoingAway),
            (Some(limit), Some(id)) if id >= limit => Err(StreamError::GoingAway),
            _ => Ok(()),
        }
    }

    /// Sends a whole request and reads the whole response, body and trailers.
    ///
    /// Trailers travel in the extensions: a [`Trailers`] in the request's are sent after its
    /// body, and the response's trailers, if the server sent any, are a [`Trailers`] in the
    /// response's.
    pub async fn request(&self, request: Request<Bytes>) -> Result<Response<Bytes>, StreamError> {
        let (mut parts, body) = request.into_parts();
        let trailers = parts.extensions.remove::<Trailers>();
        let mut stream = self.send_request(Request::from_parts(parts, ())).await?;
        exchange(&mut stream, body, trailers).await
    }

    /// Takes the extension streams out, for a task that routes them (see
    /// [`ExtensionStreams`]); [`Self::accept_extension_stream`] returns `None` afterwards.
    /// `None` when none are configured or they were taken already.
    pub fn take_extension_streams(&self) -> Option<ExtensionStreams> {
        ExtensionStreams::take(&self.inner.shared)
    }

    /// Waits for the next stream the server opened for an extension (see
    /// [`Config::extension_uni_stream_types`] and [`Config::extension_bidi_signals`]).
    /// `Ok(None)` when none are configured, they were taken, or the connection ended normally
    /// (see [`ConnectionError::is_clean`]); the error when it ended otherwise.
    pub async fn accept_extension_stream(
        &self,
    ) -> Result<Option<ExtensionStream>, ConnectionError> {
        self.inner.shared.next_extension_stream(Taker::Handle).await
    }

    /// Closes the connection now with `code` (H3_NO_ERROR for a normal close).
    pub fn close(&self, code: Code, reason: &[u8]) {
        self.inner.shared.close(code, reason);
    }

    /// Waits until the connection is closed.
    pub async fn closed(&self) -> ConnectionError {
        let shared = &self.inner.shared;
        let error = shared.conn.closed().await;
        shared.connection_error(error)
    }
}

/// Waits for the final response head on `recv` (interim 1xx responses are skipped).
async fn recv_response_head(recv: &mut RecvHalf) -> Result<Response<()>, StreamError> {
    // Bounded by the stream: each turn consumes a head.
    loop {
        let Some(fields) = recv.recv_head().await? else {
            return Err(StreamError::Incomplete);
        };
        match recv.state_mut().handle_response_head(&fields) {
            Ok(Some(head)) => {
                crate::metrics::response(Side::Client, head.response.status());
                return Ok(head.response);
            }
            // An interim (1xx) response: the final one follows.
            Ok(None) => {}
            Err(error) => return Err(recv.message_error(error)),
        }
    }
}

/// Sends a whole request body (and trailers) on `stream` and reads the whole response.
async fn exchange(
    stream: &mut RequestStream,
    body: Bytes,
    trailers: Option<Trailers>,
) -> Result<Response<Bytes>, StreamError> {
    stream.send_data(body).await?;
    match trailers {
        Some(Trailers(trailers)) => stream.send_trailers(trailers).await?,
        None => stream.finish()?,
    }
    let response = stream.recv_response().await?;
    // The common one-chunk body is returned without a copy.
    let mut first = None;
    let mut buf = BytesMut::new();
    // Bounded by the stream's length.
    while let Some(chunk) = stream.recv_data().await? {
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            None => buf.extend_from_slice(&chunk),
            Some(previous) => {
                buf.extend_from_slice(&previous);
                buf.extend_from_slice(&chunk);
            }
        }
    }
    let body = first.unwrap_or_else(|| buf.freeze());
    let (mut parts, ()) = response.into_parts();
    if let Some(trailers) = stream.recv_trailers().await? {
        parts.extensions.insert(Trailers(trailers));
    }
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quay_transport::{Identity, ServerBuilder, Trust};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_any_takes_the_family_that_answers() {
        let identity = Identity::self_signed(["localhost"]).unwrap();
        let hash = identity.certificate_hash();
        let server = ServerBuilder::new(identity)
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let incoming = server.accept().await.unwrap();
            let connection = incoming.await.unwrap();
            connection.closed().await;
        });
        let endpoint = ClientBuilder::new()
            .trust(Trust::CertificateHashes(vec![hash]))
            .build()
            .unwrap();
        // Nothing listens on ::1 (and the machine may have no IPv6 at all).
        let addrs = [
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        ];
        let (connection, _) = tokio::time::timeout(
            Duration::from_secs(10),
            connect_any(&endpoint, None, &addrs, "localhost"),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(connection.remote_address().port() == port);
        assert!(
            connect_any(&endpoint, None, &[], "localhost")
                .await
                .is_err()
        );
    }
}
