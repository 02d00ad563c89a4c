//! [`Session`]: the public handle of one WebTransport session, over HTTP/3 or over a bare QUIC
//! connection, and [`Closing`], its close.
//!
//! This module owns the session's API: which calls are the session's own and which pass to
//! the connection, the stream headers it writes (0x41 / 0x54 and its session ID) and its
//! datagrams' prefix, and starting an established session (its state, its routes, the task
//! that reads its CONNECT stream). It decides no protocol rule: the session's rules are
//! `crate::core`'s, reached through `crate::state`; the CONNECT stream's reader is
//! `crate::connect_reader`'s; routing the peer's streams is `crate::routes`'s; building
//! datagrams is `crate::datagram`'s; the streams' code mapping is [`crate::stream`]'s.
//!
//! Establishing a session (the CONNECT request and its response) is [`crate::server`]'s and
//! [`crate::client`]'s.

mod closing;
mod streams;

pub use closing::Closing;

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use quay_h3::proto::datagram::Datagram;
use quay_h3::proto::frame::FrameType;
use quay_h3::proto::stream::StreamType;
use quay_h3::proto::{Codec, VarInt};
use quay_h3::stream::{RecvHalf, SendHalf};
use quay_transport::{Connection, SendDatagramError};

use crate::connect_reader::read_connect_stream;
use crate::datagram::{Prefix, prefixed};
use crate::error::{DatagramError, SessionError, Violation};
use crate::flow::FlowControl;
use crate::metrics::SessionLabels;
use crate::proto::settings::{Draft, FlowControlLimits};
use crate::routes::Routes;
use crate::state::SessionState;
use crate::stats::{self, SessionCounters, SessionStats};
use crate::stream::Mapping;

/// One WebTransport session. Cheap to clone; the session ends (as a close with code 0) when every
/// clone is dropped.
///
/// It derefs to the QUIC [`Connection`] for what the sessions of a connection share, and has
/// its own version of every connection method whose meaning changes inside a session:
///
/// | `Session` method | what it does instead of the connection's |
/// | --- | --- |
/// | [`open_bi`](Session::open_bi), [`open_uni`](Session::open_uni) | write the session's stream header first, and wait for the session's stream credit (draft-16 flow control) |
/// | [`accept_bi`](Session::accept_bi), [`accept_uni`](Session::accept_uni) | this session's streams only, header read |
/// | [`send_datagram`](Session::send_datagram), [`send_datagram_wait`](Session::send_datagram_wait), [`read_datagram`](Session::read_datagram) | with the session's datagram prefix; this session's datagrams only |
/// | [`max_datagram_size`](Session::max_datagram_size), [`datagram_send_buffer_space`](Session::datagram_send_buffer_space) | less the prefix |
/// | [`close`](Session::close), [`closed`](Session::closed), [`close_reason`](Session::close_reason) | the session's end (WT_CLOSE_SESSION, `u32` codes), not the connection's |
/// | [`stats`](Session::stats) | the session's own counters (W3C `getStats()`); the connection's quinn stats are `session.connection().stats()` |
/// | [`remote_address`](Session::remote_address) | an IPv4 peer of a dual-stack endpoint as IPv4, not as an IPv4-mapped IPv6 address |
///
/// Everything else goes to the connection as it is and is about the connection, shared by its
/// sessions: `local_ip`, `rtt`, `stable_id`,
/// `congestion_state`, `handshake_data`, `peer_identity`, `export_keying_material`,
/// `force_key_update`, and the connection-wide limits (`set_max_concurrent_bi_streams`,
/// `set_max_concurrent_uni_streams`, `set_send_window`, `set_receive_window`).
#[derive(Clone, Debug)]
pub struct Session {
    inner: Arc<Inner>,
    /// This handle's own pending `poll_*` operations of `web-transport-trait`; a clone starts
    /// with none.
    #[cfg(feature = "web-transport-trait")]
    poll: crate::trait_impl::SessionPoll,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// `None` for a raw session.
    h3: Option<Http3Session>,
}

#[derive(Debug)]
struct Http3Session {
    id: VarInt,
    /// Boxed as a `str`: two words rather than a `String`'s three.
    protocol: Option<Box<str>>,
    /// The draft the peer speaks.
    draft: Draft,
    /// Server: the CONNECT request the session was accepted from.
    request: Option<Box<http::Request<()>>>,
    /// Shared with the CONNECT-stream task, the session's streams and [`Routes`].
    state: Arc<SessionState>,
    routes: Arc<Routes>,
    /// Keeps a client's HTTP/3 connection open while the session lives.
    _client: Option<quay_h3::client::Connection>,
}

impl Http3Session {
    /// What opens each of the session's bidirectional streams: the signal and the session ID.
    /// Made when needed rather than kept: a few instructions against 17 bytes a session.
    fn bidi_header(&self) -> Prefix {
        Prefix::new(|buf| {
            FrameType::WEBTRANSPORT_STREAM.to_varint().encode(buf);
            self.id.encode(buf);
        })
    }

    /// What opens each of the session's unidirectional streams: the type and the session ID.
    fn uni_header(&self) -> Prefix {
        Prefix::new(|buf| {
            StreamType::WEBTRANSPORT.to_varint().encode(buf);
            self.id.encode(buf);
        })
    }

    /// What goes before each of the session's datagrams: its quarter stream ID (session IDs
    /// are client bidirectional stream IDs: a multiple of 4).
    fn datagram_prefix(&self) -> Prefix {
        Prefix::new(|buf| {
            let _ = Datagram::encode_prefix(self.id, buf);
        })
    }
}

/// What [`Session::new_http3`] needs: an established session's CONNECT stream and routes.
pub(crate) struct Established {
    pub(crate) conn: Connection,
    pub(crate) send: SendHalf,
    pub(crate) recv: RecvHalf,
    pub(crate) routes: Arc<Routes>,
    pub(crate) protocol: Option<String>,
    /// The draft the peer speaks.
    pub(crate) draft: Draft,
    /// Server: the CONNECT request, kept for [`Session::request`].
    pub(crate) request: Option<Box<http::Request<()>>>,
    pub(crate) client: Option<quay_h3::client::Connection>,
    /// Our flow-control limits and the peer's, when both sides turned it on.
    pub(crate) flow: Option<(FlowControlLimits, FlowControlLimits)>,
}

impl Session {
    /// A session straight on a QUIC connection, with no HTTP/3 underneath: streams and datagrams
    /// carry no header or prefix, codes are QUIC application codes, and `close` closes the
    /// connection. For native peers that speak WebTransport's API over QUIC (MoQ's, for one).
    pub fn raw(connection: Connection) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn: connection,
                h3: None,
            }),
            #[cfg(feature = "web-transport-trait")]
            poll: Default::default(),
        }
    }

    /// Starts a session on an answered CONNECT stream. Must be called inside a tokio runtime.
    pub(crate) fn new_http3(established: Established) -> Result<Self, SessionError> {
        let Established {
            conn,
            send,
            mut recv,
            routes,
            protocol,
            draft,
            request,
            client,
            flow,
        } = established;
        let id = VarInt::from(send.id());
        let datagrams = recv
            .take_datagrams()
            .map_err(|_| SessionError::Protocol(Violation::DatagramsOff))?;
        let flow = flow.map(|(local, peer)| FlowControl::new(local, peer));
        let labels = SessionLabels {
            client: client.is_some(),
            draft,
        };
        let state = Arc::new(SessionState::new(send, datagrams, flow, labels));
        // Sends the first credit, if a limit we announced was 0.
        state.with_core(|_| ());
        routes.open(id.into_inner(), &state);
        // RUST_LOG can follow one session: its events carry the session ID, inside the
        // connection's span (side, connection, peer). Not a span of its own in the CONNECT
        // stream's task, which every idle session keeps.
        tracing::debug!(
            parent: &state.connection_span(),
            session = id.into_inner(),
            ?draft,
            "session established"
        );
        tokio::spawn(read_connect_stream(
            recv,
            state.clone(),
            routes.clone(),
            id.into_inner(),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                h3: Some(Http3Session {
                    id,
                    protocol: protocol.map(String::into_boxed_str),
                    draft,
                    request,
                    state,
                    routes,
                    _client: client,
                }),
            }),
            #[cfg(feature = "web-transport-trait")]
            poll: Default::default(),
        })
    }

    /// The session ID (the CONNECT stream's ID); `None` for a raw session.
    pub fn session_id(&self) -> Option<quay_transport::StreamId> {
        self.inner.h3.as_ref().map(|h3| h3.id.into())
    }

    /// Server: the CONNECT request this session was accepted from (URL with its query, the
    /// `origin` and every header); `None` on a client or raw session. Its extensions are not
    /// kept: the `:protocol` they held is
    /// [`Request::upgrade_token`](crate::server::Request::upgrade_token) before the session is
    /// accepted, and follows from [`Session::draft`] after.
    pub fn request(&self) -> Option<&http::Request<()>> {
        self.inner.h3.as_ref()?.request.as_deref()
    }

    /// The WebTransport draft the peer speaks; `None` on a raw session.
    pub fn draft(&self) -> Option<Draft> {
        self.inner.h3.as_ref().map(|h3| h3.draft)
    }

    /// The subprotocol the server chose (`wt-protocol`), if any.
    pub fn protocol(&self) -> Option<&str> {
        self.inner.h3.as_ref()?.protocol.as_deref()
    }

    /// The QUIC connection, shared with the other sessions on it.
    pub fn connection(&self) -> &Connection {
        &self.inner.conn
    }

    /// This session's stats, shaped like the W3C WebTransport API's `getStats()`: stream bytes
    /// and datagrams each way, datagrams dropped on send and on receive, streams opened and
    /// accepted, the connection's RTT, the draft the peer speaks and draft-16 flow-control
    /// credit. A raw session reports only the RTT. Allocates nothing.
    pub fn stats(&self) -> SessionStats {
        let mut stats = SessionStats {
            rtt: self.inner.conn.rtt(),
            ..SessionStats::default()
        };
        if let Some(h3) = &self.inner.h3 {
            h3.state.counters.read_into(&mut stats);
            stats.datagrams_dropped_on_receive = h3.state.datagrams().dropped();
            stats.draft = Some(h3.draft);
            stats.flow = h3.state.flow_credit();
        }
        stats
    }

    /// The peer's address. An IPv4 peer of a dual-stack endpoint (a client's default, see
    /// `ClientBuilder::build`) is reported as IPv4, not as an IPv4-mapped IPv6 address.
    pub fn remote_address(&self) -> std::net::SocketAddr {
        let addr = self.inner.conn.remote_address();
        std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
    }

    /// The session's counters; `None` on a raw session.
    fn counters(&self) -> Option<&SessionCounters> {
        self.inner.h3.as_ref().map(|h3| &h3.state.counters)
    }

    /// Counts one of the session's counters up by one.
    fn count(&self, counter: impl FnOnce(&SessionCounters) -> &AtomicU64) {
        if let Some(counters) = self.counters() {
            stats::add(counter(counters), 1);
        }
    }

    fn mapping(&self) -> Mapping {
        match &self.inner.h3 {
            Some(h3) => Mapping::Http3(h3.state.clone()),
            None => Mapping::Raw,
        }
    }

    /// Why the session ended, once a QUIC call has failed with the connection's `error`.
    ///
    /// On HTTP/3 the CONNECT stream's reader decides, not the task that noticed first: it reads
    /// what the peer sent before the connection ended (quinn hands out received bytes before
    /// the connection's error), so a WT_CLOSE_SESSION that arrived is reported as the peer's
    /// close even when CONNECTION_CLOSE came in the very next packet (draft-16 §6; Firefox
    /// does this). The reader ends the session as soon as it reads the connection's error.
    async fn lost(&self, error: quay_transport::ConnectionError) -> SessionError {
        match &self.inner.h3 {
            Some(h3) => h3.state.ended().await,
            None => raw_end(error),
        }
    }

    fn check_open(&self) -> Result<(), SessionError> {
        match &self.inner.h3 {
            Some(h3) => match h3.state.reason() {
                Some(reason) => Err(reason),
                None => Ok(()),
            },
            None => match self.inner.conn.close_reason() {
                Some(error) => Err(raw_end(error)),
                None => Ok(()),
            },
        }
    }
    /// Sends an unreliable datagram of this session. When the connection's datagram send
    /// buffer is full, the oldest datagrams in it (of any session) are dropped to make room;
    /// [`Session::send_datagram_wait`] waits instead.
    pub fn send_datagram(&self, payload: Bytes) -> Result<(), DatagramError> {
        self.check_open()?;
        let length = payload.len();
        let datagram = self.datagram(payload);
        self.log_datagram(|qlog, id| crate::qlog::datagram_created(qlog, id, length));
        let sent = self.inner.conn.send_datagram(datagram);
        self.count_datagram_sent(sent.is_ok(), length);
        sent.map_err(|error| self.datagram_error(error))
    }

    /// Writes a datagram's event to the connection's qlog, if it has one.
    fn log_datagram(&self, event: impl FnOnce(&quay_transport::Qlog, u64)) {
        if let Some(h3) = &self.inner.h3 {
            h3.state.log(event);
        }
    }

    /// Counts a datagram of `length` payload bytes, sent or dropped (and logs a drop; the
    /// datagram was logged before it was handed to QUIC).
    fn count_datagram_sent(&self, sent: bool, length: usize) {
        if !sent {
            self.log_datagram(|qlog, id| crate::qlog::datagram_dropped(qlog, id, length));
            crate::metrics::datagram_dropped_on_send();
        }
        self.count(|c| match sent {
            true => &c.datagrams_sent,
            false => &c.datagrams_dropped_on_send,
        });
    }

    /// Sends an unreliable datagram of this session, waiting while the connection's datagram
    /// send buffer has no room for it (nothing already queued is dropped). The datagram may
    /// still be lost on the way.
    pub async fn send_datagram_wait(&self, payload: Bytes) -> Result<(), DatagramError> {
        self.check_open()?;
        let length = payload.len();
        let datagram = self.datagram(payload);
        self.log_datagram(|qlog, id| crate::qlog::datagram_created(qlog, id, length));
        let sent = self.inner.conn.send_datagram_wait(datagram).await;
        self.count_datagram_sent(sent.is_ok(), length);
        sent.map_err(|error| self.datagram_error(error))
    }

    /// Payload bytes of one datagram of this session that the connection's datagram send
    /// buffer has room for now. The buffer is the connection's, shared by its sessions; each
    /// datagram also takes the session's prefix.
    pub fn datagram_send_buffer_space(&self) -> usize {
        let space = self.inner.conn.datagram_send_buffer_space();
        space.saturating_sub(self.datagram_prefix_len())
    }

    /// `payload` as this session's datagram: after the prefix that names the session.
    fn datagram(&self, payload: Bytes) -> Bytes {
        match &self.inner.h3 {
            Some(h3) => prefixed(h3.datagram_prefix().as_slice(), &payload),
            None => payload,
        }
    }

    /// The length of this session's datagram prefix (0 on a raw session).
    fn datagram_prefix_len(&self) -> usize {
        self.inner
            .h3
            .as_ref()
            .map_or(0, |h3| h3.datagram_prefix().as_slice().len())
    }

    fn datagram_error(&self, error: SendDatagramError) -> DatagramError {
        match error {
            SendDatagramError::TooLarge => DatagramError::TooLarge,
            // Not waited for here: the CONNECT stream's reader records why the session ended
            // (see `lost`); until it has, the connection's error is the answer.
            SendDatagramError::ConnectionLost(e) => DatagramError::Session(
                self.check_open()
                    .err()
                    .unwrap_or_else(|| SessionError::ConnectionLost(e.into())),
            ),
            _ => DatagramError::Unsupported,
        }
    }

    /// Waits for the next datagram of this session.
    pub async fn read_datagram(&self) -> Result<Bytes, SessionError> {
        let Some(h3) = &self.inner.h3 else {
            return self.inner.conn.read_datagram().await.map_err(raw_end);
        };
        if let Some(reason) = h3.state.reason() {
            return Err(reason);
        }
        // The session's end stops its datagrams, so this one wait sees it too; it is all the
        // future holds, which keeps a task that waits for datagrams all session long small.
        if let Some(datagram) = h3.state.datagrams().recv().await {
            stats::add(&h3.state.counters.datagrams_received, 1);
            return Ok(datagram);
        }
        // Datagrams end with the session or the connection; the CONNECT stream's reader says
        // which (see `lost`). Boxed, so that the wait above is not made larger by it.
        Err(Box::pin(h3.state.ended()).await)
    }

    /// The largest datagram payload that fits in one QUIC packet now, less this session's
    /// prefix; `None` when the peer does not accept datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let max = self.inner.conn.max_datagram_size()?;
        Some(max.saturating_sub(self.datagram_prefix_len()))
    }

    /// Closes the session with application code `code` and `reason` (cut to 1024 bytes at a
    /// UTF-8 boundary): sends WT_CLOSE_SESSION, then FIN on the CONNECT stream. Other sessions
    /// on the connection go on. A raw session closes its QUIC connection with `code`.
    ///
    /// The close starts at once; the [`Closing`] it returns may be awaited, to wait until the
    /// peer has answered (its FIN or its own close on the CONNECT stream, draft-16 §6), or a
    /// few seconds have passed, or the connection is gone: for instance before closing the
    /// connection, so that the peer gets the code and reason first. Dropping it changes
    /// nothing.
    pub fn close(&self, code: u32, reason: &str) -> Closing {
        let Some(h3) = &self.inner.h3 else {
            self.inner
                .conn
                .close(VarInt::from_u32(code), reason.as_bytes());
            return Closing::done();
        };
        if h3.state.close(code, reason) {
            h3.routes.close(h3.id.into_inner());
        }
        Closing::started(h3.state.clone())
    }

    /// Asks the peer to wind the session down (WT_DRAIN_SESSION); the session stays open. Does
    /// nothing on a raw session.
    pub fn drain(&self) {
        if let Some(h3) = &self.inner.h3 {
            h3.state.drain();
        }
    }

    /// Waits until the peer asks to wind the session down (WT_DRAIN_SESSION). Returns at once if
    /// it has; never returns on a raw session, or if the session ends without it.
    pub async fn drained(&self) {
        match &self.inner.h3 {
            Some(h3) => h3.state.drained().await,
            None => std::future::pending().await,
        }
    }

    /// Waits until the session ends, and says why.
    pub async fn closed(&self) -> SessionError {
        match &self.inner.h3 {
            Some(h3) => h3.state.ended().await,
            None => raw_end(self.inner.conn.closed().await),
        }
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<SessionError> {
        self.check_open().err()
    }
}

#[cfg(feature = "web-transport-trait")]
impl Session {
    /// This handle's pending `poll_*` operations (see [`crate::trait_impl`]).
    pub(crate) fn poll_state(&mut self) -> &mut crate::trait_impl::SessionPoll {
        &mut self.poll
    }
}

impl Deref for Session {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.inner.conn
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every handle is gone: end the session cleanly (code 0) unless it has ended.
        if let Some(h3) = &self.h3
            && h3.state.dropped()
        {
            h3.routes.close(h3.id.into_inner());
        }
    }
}

/// Why a raw session ended, from its connection's error.
fn raw_end(error: quay_transport::ConnectionError) -> SessionError {
    match error {
        quay_transport::ConnectionError::ApplicationClosed(close) => {
            match u32::try_from(close.error_code.into_inner()) {
                Ok(code) => SessionError::PeerClosed {
                    code,
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                },
                Err(_) => SessionError::ConnectionLost(
                    quay_transport::ConnectionError::ApplicationClosed(close).into(),
                ),
            }
        }
        quay_transport::ConnectionError::LocallyClosed => SessionError::LocallyClosed,
        error => SessionError::ConnectionLost(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_handle_keeps_no_prefixes() {
        // Every idle session keeps one: its stream headers and datagram prefix are made when
        // needed (17 bytes each, when kept), and its subprotocol is a boxed `str`, so its Arc
        // allocates 88 bytes rather than 144.
        assert!(size_of::<Inner>() <= 72, "{}", size_of::<Inner>());
    }
}
