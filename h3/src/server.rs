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
//!         let Ok(connection) = connection else { return };
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
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::task::JoinSet;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response};
use quay_qpack::Field;
use quay_transport::{Endpoint, EndpointError, Identity, ServerBuilder, VarInt};
use tokio::time::Instant;

use crate::config::Config;
use crate::connection::Side;
use crate::driver::extensions::hand_out_bidi;
use crate::driver::shared::{Shared, Taker};
use crate::driver::task::{self, poll_prefix};
use crate::error::Code;
use crate::error::Misuse;
use crate::proto::capsule::Capsule;
use crate::proto::headers;
use crate::proto::settings::Settings;
use crate::proto::stream::decode_bidi_signal;
use crate::request::RequestState;
use crate::stats::{ConnectionStats, RequestStats};
use crate::stream::{
    ConnectionError, ExtensionStream, ExtensionStreams, Live, RecvHalf, SendHalf, StreamError,
};

/// An HTTP/3 server: one QUIC endpoint, or one per address it listens on.
#[derive(Debug)]
pub struct Server {
    /// Never empty.
    endpoints: Vec<Endpoint>,
    config: Config,
    /// Handshakes under way, each in a task of its own: a slow one does not hold up the
    /// others, and a cancelled `accept` loses none.
    handshakes: tokio::sync::Mutex<JoinSet<Result<Connection, ConnectionError>>>,
}

impl Server {
    /// Binds a server at `addr` presenting `identity`, with quay-transport's default transport
    /// options. Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        config: Config,
    ) -> Result<Self, EndpointError> {
        let endpoint = ServerBuilder::new(identity).bind(addr)?;
        Ok(Self::from_endpoint(endpoint, config))
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
        Self::from_endpoints(endpoints, config).ok_or_else(|| {
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
        }
    }

    /// Serves HTTP/3 on several endpoints set up elsewhere; `None` if there are none.
    pub fn from_endpoints(endpoints: Vec<Endpoint>, config: Config) -> Option<Self> {
        (!endpoints.is_empty()).then(|| Self {
            endpoints,
            config,
            handshakes: Default::default(),
        })
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

    /// Waits for the next connection and its handshake, from any endpoint. `None` once every
    /// endpoint is closed.
    ///
    /// Cancel-safe: handshakes run in tasks of their own, so dropping this future (in a
    /// `select!`, say) loses no connection, and one slow handshake does not hold up others.
    pub async fn accept(&self) -> Option<Result<Connection, ConnectionError>> {
        let mut handshakes = self.handshakes.lock().await;
        let mut endpoints_open = true;
        // Bounded by the endpoints: each turn starts a handshake, finishes one, or ends.
        loop {
            tokio::select! {
                biased;
                Some(done) = handshakes.join_next() => {
                    // A handshake task that panicked or was aborted loses only its connection.
                    if let Ok(done) = done {
                        return Some(done);
                    }
                }
                incoming = self.next_incoming(), if endpoints_open => match incoming {
                    Some(incoming) => {
                        let config = self.config.clone();
                        handshakes.spawn(Connection::from_incoming(incoming, config));
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

/// The server side of one HTTP/3 connection. The connection closes (H3_NO_ERROR) when this and
/// every request stream are dropped.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.handle_dropped();
    }
}

impl Connection {
    /// Completes the handshake of a connection the endpoint received and speaks HTTP/3 on it,
    /// for a server that runs its own accept loop; [`Server::accept`] is this on every incoming
    /// connection. Unlike [`Connection::new`], the connection's stats and metrics have the
    /// handshake's duration, and its log span the original destination connection ID. Must be
    /// called inside a tokio runtime.
    pub async fn from_incoming(
        incoming: quay_transport::quinn::Incoming,
        config: Config,
    ) -> Result<Self, ConnectionError> {
        let started = std::time::Instant::now();
        let odcid = Some(incoming.orig_dst_cid());
        match incoming.await {
            Ok(connection) => {
                let handshake = Some(started.elapsed());
                let shared = task::start(connection, config, Side::Server, handshake, odcid);
                Ok(Self { shared })
            }
            Err(error) => {
                crate::metrics::handshake_failed(Side::Server, &error);
                Err(error.into())
            }
        }
    }

    /// Speaks HTTP/3 on an established QUIC connection. Must be called inside a tokio runtime.
    pub fn new(connection: quay_transport::Connection, config: Config) -> Self {
        Self {
            shared: task::start(connection, config, Side::Server, None, None),
        }
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &quay_transport::Connection {
        &self.shared.conn
    }

    /// The client's address. An IPv4 client of a dual-stack endpoint is reported as IPv4, not
    /// as an IPv4-mapped IPv6 address.
    pub fn remote_address(&self) -> SocketAddr {
        canonical(self.shared.conn.remote_address())
    }

    /// The connection's stats: the transport's (RTT, congestion window, loss, UDP datagrams and
    /// bytes) and HTTP/3's (requests, streams and frames by type, QPACK, GOAWAY). Copies a few
    /// hundred bytes; allocates nothing.
    pub fn stats(&self) -> ConnectionStats {
        self.shared.stats()
    }

    /// The client's SETTINGS, once received.
    pub fn peer_settings(&self) -> Option<Settings> {
        self.shared.peer_settings()
    }

    /// Waits for the client's SETTINGS; fails if the connection ends first. A request can
    /// arrive before them (its stream may overtake the control stream): an extension whose
    /// rules depend on the client's SETTINGS (WebTransport's drafts) waits for them here.
    pub async fn settings(&self) -> Result<Settings, ConnectionError> {
        self.shared.settings().await
    }

    /// Waits for the next request. `Ok(None)` when the connection closed normally (or after
    /// [`Connection::shutdown`] refused further requests).
    ///
    /// Malformed requests are reset with H3_MESSAGE_ERROR and skipped; streams that start with an
    /// extension signal go to [`Connection::accept_extension_stream`].
    ///
    /// This reads each request's head before returning, so a client that opens a stream and
    /// sends its head slowly delays the requests behind it. Servers that must not wait use
    /// [`Connection::accept_stream`] and resolve each [`IncomingRequest`] in its own task.
    pub async fn accept(&self) -> Result<Option<(Request<()>, RequestStream)>, ConnectionError> {
        // Each turn takes one stream off the connection.
        loop {
            let Some(incoming) = self.accept_stream().await? else {
                return Ok(None);
            };
            match incoming.resolve().await {
                Ok(Some(request)) => return Ok(Some(request)),
                Ok(None) => {}
                Err(StreamError::ConnectionLost(error)) => return Err(error),
                Err(_) => {}
            }
        }
    }

    /// Waits for the next request stream; [`IncomingRequest::resolve`] reads the head.
    /// `Ok(None)` when the connection closed normally.
    ///
    /// When extension signals are configured, the stream's first bytes are looked at if they
    /// have arrived: a stream that opens with a whole signal is handed to the extension at
    /// once (see [`Self::take_extension_streams`]) and not returned, and one that ended or was
    /// reset before any byte is dropped here.
    ///
    /// Requests at or above our GOAWAY ID are refused here with H3_REQUEST_REJECTED.
    pub async fn accept_stream(&self) -> Result<Option<IncomingRequest>, ConnectionError> {
        let shared = &self.shared;
        loop {
            let (mut send, mut recv) = match shared.conn.accept_bi().await {
                Ok(streams) => streams,
                Err(error) => {
                    return match shared.connection_error(error) {
                        ConnectionError::LocallyClosed => Ok(None),
                        ConnectionError::PeerClosed {
                            code: Code::H3_NO_ERROR,
                            ..
                        } => Ok(None),
                        error => Err(error),
                    };
                }
            };
            let id: u64 = send.id().into();
            {
                let mut inner = shared.lock();
                // RFC 9114 §5.2: requests at or above our GOAWAY ID are refused unprocessed.
                if !inner.proto.handle_request_accepted(id) {
                    drop(inner);
                    let _ = send.reset(Code::H3_REQUEST_REJECTED.to_varint());
                    let _ = recv.stop(Code::H3_REQUEST_REJECTED.to_varint());
                    continue;
                }
            }
            // An extension's stream usually brings its signal in its first packet: hand it out
            // now, without a task's detour through `resolve`.
            let mut initial = Bytes::new();
            let signals = &shared.config.extension_bidi_signals;
            if !signals.is_empty() {
                let mut read = BytesMut::new();
                let prefix = poll_prefix(
                    &mut Context::from_waker(Waker::noop()),
                    &mut recv,
                    &mut read,
                    |cur| decode_bidi_signal(signals, cur),
                );
                match prefix {
                    Poll::Ready(Ok(Some((Some(signal), rest)))) => {
                        hand_out_bidi(shared, signal, send, recv, rest);
                        continue;
                    }
                    // Not an extension's: `resolve` reads the request from here on.
                    Poll::Ready(Ok(Some((None, rest)))) => initial = rest,
                    // RFC 9114 §4.1.2: the stream ended before a request.
                    Poll::Ready(Ok(None)) => {
                        let _ = send.reset(Code::H3_REQUEST_INCOMPLETE.to_varint());
                        shared
                            .lock()
                            .proto
                            .handle_request_error(Code::H3_REQUEST_INCOMPLETE);
                        continue;
                    }
                    // Reset before its head, or the connection is gone (the next accept says).
                    Poll::Ready(Err(_)) => continue,
                    // What arrived so far goes to `resolve`.
                    Poll::Pending => initial = read.freeze(),
                }
            }
            return Ok(Some(IncomingRequest {
                shared: shared.clone(),
                send,
                recv,
                initial,
            }));
        }
    }

    /// Takes the extension streams out, for a task that routes them (see
    /// [`ExtensionStreams`]); [`Self::accept_extension_stream`] returns `None` afterwards.
    /// `None` when none are configured or they were taken already.
    pub fn take_extension_streams(&self) -> Option<ExtensionStreams> {
        ExtensionStreams::take(&self.shared)
    }

    /// Waits for the next stream claimed by an extension (see
    /// [`Config::extension_uni_stream_types`] and [`Config::extension_bidi_signals`]). `None`
    /// when none are configured or the connection is gone.
    pub async fn accept_extension_stream(&self) -> Option<ExtensionStream> {
        self.shared.next_extension_stream(Taker::Handle).await
    }

    /// Graceful shutdown (RFC 9114 §5.2): sends GOAWAY naming the first request not accepted,
    /// refuses later requests with H3_REQUEST_REJECTED, lets accepted requests finish, then
    /// closes the connection with H3_NO_ERROR once they are done and the client has closed, or
    /// at `timeout` from now, whichever comes first.
    ///
    /// Keep calling [`Connection::accept`] meanwhile (it refuses the late requests and returns
    /// `Ok(None)` at the end), or those requests wait for the close.
    pub async fn shutdown(&self, timeout: Duration) {
        let shared = &self.shared;
        let deadline = Instant::now() + timeout;
        shared.begin_goaway();
        // Wait for the accepted requests; each end wakes us.
        loop {
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.lock().proto.live_requests() == 0 || shared.conn.close_reason().is_some() {
                break;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Responses may still be in flight: let the client close once it has them.
        tokio::select! {
            _ = shared.conn.closed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        shared.close(Code::H3_NO_ERROR, b"");
    }

    /// Closes the connection now with `code`.
    pub fn close(&self, code: Code, reason: &[u8]) {
        self.shared.close(code, reason);
    }

    /// Waits until the connection is closed.
    pub async fn closed(&self) -> ConnectionError {
        let error = self.shared.conn.closed().await;
        self.shared.connection_error(error)
    }
}

/// A request stream whose head has not been read yet, from [`Connection::accept_stream`].
#[derive(Debug)]
pub struct IncomingRequest {
    shared: Arc<Shared>,
    send: quay_transport::SendStream,
    recv: quay_transport::RecvStream,
    /// Bytes read from the stream already (while looking for an extension's signal).
    initial: Bytes,
}

impl IncomingRequest {
    /// The QUIC stream ID.
    pub fn id(&self) -> VarInt {
        self.send.id().into()
    }

    /// Reads and checks the request head.
    ///
    /// `Ok(None)` when the stream was not a request: it started with an extension signal (and
    /// went to [`Connection::accept_extension_stream`]), or it was malformed, ended early, or
    /// did not deliver its head within [`Config::request_head_timeout`] (and was reset with
    /// H3_MESSAGE_ERROR or H3_REQUEST_INCOMPLETE, RFC 9114 §4.1.2).
    ///
    /// [`Config::request_head_timeout`]: crate::Config::request_head_timeout
    pub async fn resolve(self) -> Result<Option<(Request<()>, RequestStream)>, StreamError> {
        let Self {
            shared,
            mut send,
            mut recv,
            initial,
        } = self;
        let deadline = Instant::now() + shared.config.request_head_timeout;
        let signals = &shared.config.extension_bidi_signals;
        let mut read = BytesMut::from(initial);
        let prefix = poll_fn(|cx| {
            poll_prefix(cx, &mut recv, &mut read, |cur| {
                decode_bidi_signal(signals, cur)
            })
        });
        let Ok(prefix) = tokio::time::timeout_at(deadline, prefix).await else {
            // RFC 9114 §4.1.2: no complete request in time.
            let code = Code::H3_REQUEST_INCOMPLETE.to_varint();
            let _ = recv.stop(code);
            let _ = send.reset(code);
            shared
                .lock()
                .proto
                .handle_request_error(Code::H3_REQUEST_INCOMPLETE);
            return Ok(None);
        };
        let buffered = match prefix {
            Ok(Some((Some(signal), buffered))) => {
                hand_out_bidi(&shared, signal, send, recv, buffered);
                return Ok(None);
            }
            Ok(Some((None, buffered))) => buffered,
            Ok(None) => {
                // RFC 9114 §4.1.2: the stream ended before a request.
                let _ = send.reset(Code::H3_REQUEST_INCOMPLETE.to_varint());
                shared
                    .lock()
                    .proto
                    .handle_request_error(Code::H3_REQUEST_INCOMPLETE);
                return Ok(None);
            }
            Err(quay_transport::ReadError::ConnectionLost(error)) => {
                return Err(StreamError::ConnectionLost(shared.connection_error(error)));
            }
            Err(quay_transport::ReadError::Reset(code)) => {
                return Err(StreamError::Reset(Code::from_varint(code)));
            }
            Err(_) => return Err(StreamError::Invalid(Misuse::StreamClosed)),
        };
        let live = Live::new(shared.clone());
        let mut state = RequestState::request(shared.config.max_frame_payload);
        state.set_head_deadline(deadline.into_std());
        // The state's deadline, which the bidirectional signal's wait above shared.
        let deadline = state.poll_timeout().map_or(deadline, Instant::from_std);
        let mut recv = RecvHalf::new(recv, state, buffered, live.clone());
        let mut send = SendHalf::new(send, live);
        let Ok(head) = tokio::time::timeout_at(deadline, recv.recv_head()).await else {
            // RFC 9114 §4.1.2: no complete request in time.
            recv.stop(Code::H3_REQUEST_INCOMPLETE);
            send.reset(Code::H3_REQUEST_INCOMPLETE);
            shared
                .lock()
                .proto
                .handle_request_error(Code::H3_REQUEST_INCOMPLETE);
            return Ok(None);
        };
        let fields = match head {
            Ok(Some(fields)) => fields,
            Ok(None) => {
                send.reset(Code::H3_REQUEST_INCOMPLETE);
                shared
                    .lock()
                    .proto
                    .handle_request_error(Code::H3_REQUEST_INCOMPLETE);
                return Ok(None);
            }
            Err(StreamError::HeadersTooLarge) => {
                // RFC 9114 §4.2.2: over our limit; reading was stopped already.
                send.reset(Code::H3_EXCESSIVE_LOAD);
                return Ok(None);
            }
            Err(error) => {
                send.reset(Code::H3_REQUEST_CANCELLED);
                return Err(error);
            }
        };
        let extended_connect = shared.config.enable_extended_connect;
        let head = match recv
            .state_mut()
            .handle_request_head(&fields, extended_connect)
        {
            Ok(head) => head,
            Err(error) => {
                // RFC 9114 §4.1.2: a malformed request is a stream error.
                recv.message_error(error);
                send.reset(Code::H3_MESSAGE_ERROR);
                return Ok(None);
            }
        };
        let connect = head.request.method() == Method::CONNECT;
        if connect && shared.config.enable_datagrams {
            recv.listen_datagrams();
        }
        let stream = RequestStream {
            send,
            recv,
            connect,
            head_request: head.request.method() == Method::HEAD,
        };
        Ok(Some((head.request, stream)))
    }
}

/// One request being answered: read its body and trailers, send the response.
#[derive(Debug)]
pub struct RequestStream {
    send: SendHalf,
    recv: RecvHalf,
    connect: bool,
    head_request: bool,
}

impl RequestStream {
    /// The QUIC stream ID.
    pub fn id(&self) -> VarInt {
        self.send.id()
    }

    /// This request's stats: body bytes and header sizes each way, and the codes of the peer's
    /// reset or stop.
    pub fn stats(&self) -> RequestStats {
        let sent = self.send.stats();
        RequestStats {
            body_sent: sent.body_sent,
            head_sent: sent.head_sent,
            trailers_sent: sent.trailers_sent,
            stopped_by_peer: sent.stopped_by_peer,
            ..self.recv.stats()
        }
    }

    /// Sends the response head. An interim (1xx) response may be sent first; the final one
    /// follows. A 2xx answer to CONNECT opens the tunnel (RFC 9114 §4.4).
    pub async fn send_response(&mut self, response: Response<()>) -> Result<(), StreamError> {
        let fields: Vec<Field> = headers::response_fields(&response)?;
        let status = response.status();
        let interim = status.is_informational();
        self.send.send_head(&fields, !interim).await?;
        crate::metrics::response(Side::Server, status);
        if self.connect && status.is_success() {
            self.recv.state_mut().tunnel();
        }
        Ok(())
    }

    /// Sends a piece of the response body. Bodies of responses to HEAD are not sent.
    pub async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
        if self.head_request {
            return Ok(());
        }
        self.send.send_data(data).await
    }

    /// Sends the response trailers and ends the response.
    pub async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
        self.send.send_trailers(trailers).await
    }

    /// Ends the response.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.send.finish()
    }

    /// The next piece of the request body, `None` at its end.
    pub async fn recv_data(&mut self) -> Result<Option<Bytes>, StreamError> {
        let received = self.recv.recv_data().await;
        self.after_recv(received)
    }

    /// The request trailers (reads and drops the rest of the body first).
    pub async fn recv_trailers(&mut self) -> Result<Option<HeaderMap>, StreamError> {
        let received = self.recv.recv_trailers().await;
        self.after_recv(received)
    }

    /// Sends a capsule on an Extended CONNECT stream, after a 2xx response (RFC 9297 §3.2).
    pub async fn send_capsule(&mut self, capsule: &Capsule) -> Result<(), StreamError> {
        self.send.send_capsule(capsule).await
    }

    /// The next capsule from the client, `None` at the end of the stream.
    pub async fn recv_capsule(&mut self) -> Result<Option<Capsule>, StreamError> {
        let received = self.recv.recv_capsule().await;
        self.after_recv(received)
    }

    /// Sends an HTTP datagram for this request (RFC 9297).
    pub fn send_datagram(&self, payload: Bytes) -> Result<(), StreamError> {
        self.send.send_datagram(payload)
    }

    /// The next HTTP datagram for this request.
    pub async fn recv_datagram(&mut self) -> Result<Option<Bytes>, StreamError> {
        self.recv.recv_datagram().await
    }

    /// Refuses or abandons the request: resets the response with `code` and stops reading the
    /// request (H3_REQUEST_REJECTED tells the client it may retry, RFC 9114 §4.1.1).
    pub fn reject(&mut self, code: Code) {
        self.send.reset(code);
        self.recv.stop(code);
    }

    /// Passes on what the receiving half returned; when it found the peer's message malformed,
    /// our side of the stream is reset with the same code at once (RFC 9114 §4.1.2), since a
    /// message that already ended has no STOP_SENDING to tell the peer.
    fn after_recv<T>(&mut self, received: Result<T, StreamError>) -> Result<T, StreamError> {
        if received.is_err() {
            let _ = self.send.reset_if_malformed();
        }
        received
    }

    /// Splits into the sending and receiving halves, for use from two tasks. Send the response
    /// head first: the halves have no `send_response`.
    pub fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket sees of
/// an IPv4 peer) given as the IPv4 address it stands for.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
