//! [`Connection`]: the server side of one HTTP/3 connection, which accepts its requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Request;
use tokio::time::Instant;

use super::handler::Handler;
use super::request::{IncomingRequest, RequestStream};
use crate::config::Config;
use crate::connection::Side;
use crate::driver::extensions::hand_out_bidi;
use crate::driver::prefix::poll_prefix;
use crate::driver::shared::{Shared, Taker};
use crate::driver::task;
use crate::error::Code;
use crate::proto::settings::Settings;
use crate::proto::stream::decode_bidi_signal;
use crate::stats::ConnectionStats;
use crate::stream::{ConnectionError, ExtensionStream, ExtensionStreams, StreamError};

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
    /// for a server that runs its own accept loop; [`Server::accept`](super::Server::accept) is this on every incoming
    /// connection. Unlike [`Connection::new`], the connection's stats and metrics have the
    /// handshake's duration, and its log span the original destination connection ID. Must be
    /// called inside a tokio runtime.
    pub async fn from_incoming(
        incoming: quay_transport::quinn::Incoming,
        config: Config,
    ) -> Result<Self, ConnectionError> {
        Self::accept_with(incoming, None, config).await
    }

    /// As [`Connection::from_incoming`], accepting through `acceptor` when given (see
    /// `ServerBuilder::acceptor`: with a qlog directory, the connection gets a qlog file, which
    /// quinn's events and this crate's share).
    ///
    /// The connection is accepted (or refused, and its qlog file created) before this returns;
    /// the future only waits for the handshake. It borrows neither `acceptor` nor `incoming`,
    /// and keeps the configuration once (an `async fn` would keep its arguments twice), so a
    /// server that boxes it per connection allocates a few hundred bytes rather than 1.7 KiB.
    pub fn accept_with(
        incoming: quay_transport::quinn::Incoming,
        acceptor: Option<&quay_transport::Acceptor>,
        config: Config,
    ) -> impl Future<Output = Result<Self, ConnectionError>> + Send + use<> {
        let started = std::time::Instant::now();
        let odcid = Some(incoming.orig_dst_cid());
        let accepted = match acceptor {
            Some(acceptor) => acceptor.accept(incoming),
            None => incoming.accept().map(|connecting| (connecting, None)),
        };
        async move {
            let result = match accepted {
                Ok((connecting, qlog)) => connecting.await.map(|connection| (connection, qlog)),
                Err(error) => Err(error),
            };
            match result {
                Ok((connection, qlog)) => {
                    let handshake = Some(started.elapsed());
                    let shared =
                        task::start(connection, config, Side::Server, handshake, odcid, qlog);
                    Ok(Self { shared })
                }
                Err(error) => {
                    crate::metrics::handshake_failed(Side::Server, &error);
                    Err(error.into())
                }
            }
        }
    }

    /// Speaks HTTP/3 on an established QUIC connection. Must be called inside a tokio runtime.
    pub fn new(connection: quay_transport::Connection, config: Config) -> Self {
        Self {
            shared: task::start(connection, config, Side::Server, None, None, None),
        }
    }

    /// The connection's qlog file, if it has one: extensions (WebTransport) write their events
    /// to it, next to quinn's and this crate's.
    pub fn qlog(&self) -> Option<&quay_transport::Qlog> {
        self.shared.qlog.as_ref()
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &quay_transport::Connection {
        &self.shared.conn
    }

    /// The client's address. An IPv4 client of a dual-stack endpoint is reported as IPv4, not
    /// as an IPv4-mapped IPv6 address.
    pub fn remote_address(&self) -> SocketAddr {
        crate::driver::shared::canonical(self.shared.conn.remote_address())
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
        if shared.is_serving() {
            return Ok(None);
        }
        loop {
            let (send, recv) = match shared.conn.accept_bi().await {
                Ok(streams) => streams,
                Err(error) => return shared.connection_error(error).end_of_accept(),
            };
            if let Some(request) = admit(shared, send, recv) {
                return Ok(Some(request));
            }
        }
    }

    /// Gives this connection's streams to `handler`, called from the connection's own task as
    /// they arrive, instead of to [`Connection::accept_stream`] (which returns `Ok(None)` from
    /// then on) and [`Connection::accept_extension_stream`]. For an extension that sorts every
    /// request stream and routes every extension stream (WebTransport's server): it needs no
    /// task of its own, and each stream reaches it without waking one. Call it before anything
    /// accepts a stream.
    ///
    /// The connection still closes once this handle and its request streams are all dropped,
    /// as without a handler: a handler that serves the connection for its life keeps the handle
    /// (in an `Arc`). The connection's task drops the handler when the connection ends.
    ///
    /// Gives `handler` back, boxed, when the connection has one already, its extension streams
    /// were taken ([`Connection::take_extension_streams`]), or it is gone.
    pub fn set_handler(&self, handler: impl Handler) -> Result<(), Box<dyn Handler>> {
        self.shared.set_handler(Box::new(handler))
    }

    /// Takes the extension streams out, for a task that routes them (see
    /// [`ExtensionStreams`]); [`Self::accept_extension_stream`] returns `None` afterwards.
    /// `None` when none are configured or they were taken already.
    pub fn take_extension_streams(&self) -> Option<ExtensionStreams> {
        ExtensionStreams::take(&self.shared)
    }

    /// Waits for the next stream claimed by an extension (see
    /// [`Config::extension_uni_stream_types`] and [`Config::extension_bidi_signals`]).
    /// `Ok(None)` when none are configured, they were taken, or the connection ended normally
    /// (see [`ConnectionError::is_clean`]); the error when it ended otherwise.
    pub async fn accept_extension_stream(
        &self,
    ) -> Result<Option<ExtensionStream>, ConnectionError> {
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

/// A request stream the client opened, checked as [`Connection::accept_stream`] says: refused
/// at or above our GOAWAY's ID, handed to its extension when it opens with an extension's whole
/// signal, dropped when it ended or was reset before its first byte. `None` for those.
pub(crate) fn admit(
    shared: &Arc<Shared>,
    mut send: quay_transport::SendStream,
    mut recv: quay_transport::RecvStream,
) -> Option<IncomingRequest> {
    let id: u64 = send.id().into();
    {
        let mut inner = shared.lock();
        // RFC 9114 §5.2: requests at or above our GOAWAY ID are refused unprocessed.
        if !inner.proto.handle_request_accepted(id) {
            drop(inner);
            let _ = send.reset(Code::H3_REQUEST_REJECTED.to_varint());
            let _ = recv.stop(Code::H3_REQUEST_REJECTED.to_varint());
            return None;
        }
    }
    // An extension's stream usually brings its signal in its first packet: hand it out now,
    // without a task's detour through `resolve`.
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
                return None;
            }
            // Not an extension's: `resolve` reads the request from here on.
            Poll::Ready(Ok(Some((None, rest)))) => initial = rest,
            // RFC 9114 §4.1.2: the stream ended before a request.
            Poll::Ready(Ok(None)) => {
                let _ = send.reset(Code::H3_REQUEST_INCOMPLETE.to_varint());
                shared.request_error(Code::H3_REQUEST_INCOMPLETE);
                return None;
            }
            // Reset before its head, or the connection is gone (the next accept says).
            Poll::Ready(Err(_)) => return None,
            // What arrived so far goes to `resolve`.
            Poll::Pending => initial = read.freeze(),
        }
    }
    Some(IncomingRequest {
        shared: shared.clone(),
        send,
        recv,
        initial,
    })
}
