//! [`Session`]: one WebTransport session, over HTTP/3 or over a bare QUIC connection.
//!
//! This module owns what one session is on the wire once it is established: the stream headers
//! it writes (0x41 / 0x54 and its session ID), the datagram prefix (its quarter stream ID), the
//! code mapping of its streams, the task that reads its CONNECT stream for WT_CLOSE_SESSION and
//! WT_DRAIN_SESSION, and the glue of draft-16 flow control (waiting for the peer's credit,
//! sending ours; the counting is `crate::flow`'s). It also owns `Routes`, the per-connection
//! table that hands the peer's streams to their session, buffers those that come early and
//! refuses those that come late.
//!
//! Establishing a session (the CONNECT request and its response) is [`crate::server`]'s and
//! [`crate::client`]'s.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quay_h3::Code;
use quay_h3::proto::capsule::Capsule;
use quay_h3::proto::datagram::Datagram;
use quay_h3::proto::frame::FrameType;
use quay_h3::proto::stream::StreamType;
use quay_h3::proto::{Codec, VarInt};
use quay_h3::stream::{Datagrams, ExtensionStream, RecvHalf, SendHalf};
use quay_transport::{Connection, SendDatagramError};
use tokio::sync::Notify;

use crate::error::{DatagramError, SessionError, StreamError};
use crate::flow::{FlowControl, FlowControlError};
use crate::proto::capsule::{CAPSULE_TYPES, Direction, WtCapsule};
use crate::proto::error::{WT_BUFFERED_STREAM_REJECTED, WT_FLOW_CONTROL_ERROR, WT_SESSION_GONE};
use crate::proto::settings::FlowControlLimits;
use crate::stream::{Mapping, RecvStream, SendStream};

/// How long, after we close a session, its CONNECT stream is read for the peer's answer before
/// we stop reading it.
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// Why a session ends when the peer breaks its flow control.
const FLOW_CONTROL_BROKEN: &str = "the peer broke WebTransport flow control";

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
///
/// Everything else goes to the connection as it is and is about the connection, shared by its
/// sessions: addresses (`remote_address`, `local_ip`), `rtt`, `stats`, `stable_id`,
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
    bidi_header: Prefix,
    uni_header: Prefix,
    datagram_prefix: Prefix,
    protocol: Option<String>,
    /// Shared with the CONNECT-stream task, the session's streams and [`Routes`].
    state: Arc<SessionState>,
    routes: Arc<Routes>,
    /// Keeps a client's HTTP/3 connection open while the session lives.
    _client: Option<quay_h3::Client>,
}

/// What [`Session::new_http3`] needs: an established session's CONNECT stream and routes.
pub(crate) struct Established {
    pub(crate) conn: Connection,
    pub(crate) send: SendHalf,
    pub(crate) recv: RecvHalf,
    pub(crate) routes: Arc<Routes>,
    pub(crate) protocol: Option<String>,
    pub(crate) client: Option<quay_h3::Client>,
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
            client,
            flow,
        } = established;
        let id = send.id();
        let datagrams = recv
            .take_datagrams()
            .map_err(|_| SessionError::Protocol("HTTP datagrams are off"))?;
        let flow = flow.map(|(local, peer)| FlowControl::new(local, peer));
        let credit_due = flow.as_ref().is_some_and(FlowControl::credit_due);
        let state = Arc::new(SessionState::new(send, datagrams, flow));
        if credit_due {
            state.send_flow_updates();
        }
        routes.open(id.into_inner(), &state);
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
                    bidi_header: Prefix::new(|buf| {
                        FrameType::WEBTRANSPORT_STREAM.to_varint().encode(buf);
                        id.encode(buf);
                    }),
                    uni_header: Prefix::new(|buf| {
                        StreamType::WEBTRANSPORT.to_varint().encode(buf);
                        id.encode(buf);
                    }),
                    // Session IDs are client bidirectional stream IDs: a multiple of 4.
                    datagram_prefix: Prefix::new(|buf| {
                        let _ = Datagram::encode_prefix(id, buf);
                    }),
                    protocol,
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
    pub fn session_id(&self) -> Option<VarInt> {
        self.inner.h3.as_ref().map(|h3| h3.id)
    }

    /// The subprotocol the server chose (`wt-protocol`), if any.
    pub fn protocol(&self) -> Option<&str> {
        self.inner.h3.as_ref()?.protocol.as_deref()
    }

    /// The QUIC connection, shared with the other sessions on it.
    pub fn connection(&self) -> &Connection {
        &self.inner.conn
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

    /// Opens a bidirectional stream. Waits while the peer's stream limit is reached (QUIC's, and
    /// the session's when flow control is on).
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        self.check_open()?;
        if let Some(h3) = &self.inner.h3 {
            h3.state.stream_credit(Direction::Bidi).await?;
        }
        let (mut send, recv) = match self.inner.conn.open_bi().await {
            Ok(stream) => stream,
            Err(error) => return Err(self.lost(error).await),
        };
        if let Some(h3) = &self.inner.h3 {
            self.write_header(&mut send, h3.bidi_header).await?;
        }
        let mapping = self.mapping();
        Ok((
            SendStream::new(send, mapping.clone()),
            RecvStream::new(recv, Bytes::new(), mapping),
        ))
    }

    /// Opens a unidirectional stream. Waits while the peer's stream limit is reached (QUIC's,
    /// and the session's when flow control is on).
    pub async fn open_uni(&self) -> Result<SendStream, SessionError> {
        self.check_open()?;
        if let Some(h3) = &self.inner.h3 {
            h3.state.stream_credit(Direction::Uni).await?;
        }
        let mut send = match self.inner.conn.open_uni().await {
            Ok(send) => send,
            Err(error) => return Err(self.lost(error).await),
        };
        if let Some(h3) = &self.inner.h3 {
            self.write_header(&mut send, h3.uni_header).await?;
        }
        Ok(SendStream::new(send, self.mapping()))
    }

    async fn write_header(
        &self,
        send: &mut quay_transport::SendStream,
        header: Prefix,
    ) -> Result<(), SessionError> {
        // The session may have ended while the stream waited for credit.
        self.check_open()?;
        match send
            .write_chunk(Bytes::copy_from_slice(header.as_slice()))
            .await
        {
            Ok(()) => Ok(()),
            Err(quay_transport::WriteError::ConnectionLost(e)) => Err(self.lost(e).await),
            // Stopped before a byte was read: the session is gone at the peer.
            Err(_) => Err(self
                .check_open()
                .err()
                .unwrap_or(SessionError::LocallyClosed)),
        }
    }

    /// Waits for the peer's next bidirectional stream of this session.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        let Some(h3) = &self.inner.h3 else {
            let (send, recv) = self.inner.conn.accept_bi().await.map_err(raw_end)?;
            return Ok((
                SendStream::new(send, Mapping::Raw),
                RecvStream::new(recv, Bytes::new(), Mapping::Raw),
            ));
        };
        match h3.state.next_arrival(Direction::Bidi).await? {
            ExtensionStream::Bidi {
                send,
                recv,
                buffered,
                ..
            } => {
                let mapping = self.mapping();
                Ok((
                    SendStream::new(send, mapping.clone()),
                    RecvStream::new(recv, buffered, mapping),
                ))
            }
            _ => Err(SessionError::Protocol(
                "unidirectional stream routed as bidi",
            )),
        }
    }

    /// Waits for the peer's next unidirectional stream of this session.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        let Some(h3) = &self.inner.h3 else {
            let recv = self.inner.conn.accept_uni().await.map_err(raw_end)?;
            return Ok(RecvStream::new(recv, Bytes::new(), Mapping::Raw));
        };
        match h3.state.next_arrival(Direction::Uni).await? {
            ExtensionStream::Uni { recv, buffered, .. } => {
                Ok(RecvStream::new(recv, buffered, self.mapping()))
            }
            _ => Err(SessionError::Protocol("bidirectional stream routed as uni")),
        }
    }

    /// Sends an unreliable datagram of this session. When the connection's datagram send
    /// buffer is full, the oldest datagrams in it (of any session) are dropped to make room;
    /// [`Session::send_datagram_wait`] waits instead.
    pub fn send_datagram(&self, payload: Bytes) -> Result<(), DatagramError> {
        self.check_open()?;
        let datagram = self.datagram(payload);
        self.inner
            .conn
            .send_datagram(datagram)
            .map_err(|error| self.datagram_error(error))
    }

    /// Sends an unreliable datagram of this session, waiting while the connection's datagram
    /// send buffer has no room for it (nothing already queued is dropped). The datagram may
    /// still be lost on the way.
    pub async fn send_datagram_wait(&self, payload: Bytes) -> Result<(), DatagramError> {
        self.check_open()?;
        let datagram = self.datagram(payload);
        let sent = self.inner.conn.send_datagram_wait(datagram).await;
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
            Some(h3) => prefixed(h3.datagram_prefix.as_slice(), &payload),
            None => payload,
        }
    }

    /// The length of this session's datagram prefix (0 on a raw session).
    fn datagram_prefix_len(&self) -> usize {
        self.inner
            .h3
            .as_ref()
            .map_or(0, |h3| h3.datagram_prefix.as_slice().len())
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
        if let Some(datagram) = h3.state.datagrams.recv().await {
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
            return Closing { state: None };
        };
        if h3.state.end(SessionError::LocallyClosed) {
            h3.routes.close(h3.id.into_inner());
            let capsule = WtCapsule::close(code, reason).to_capsule();
            h3.state.write_connect(ConnectWrite::Capsule {
                capsule: Some(capsule),
                finish: true,
            });
        }
        Closing {
            state: Some(ClosingState::Started(h3.state.clone())),
        }
    }

    /// Asks the peer to wind the session down (WT_DRAIN_SESSION); the session stays open. Does
    /// nothing on a raw session.
    pub fn drain(&self) {
        if let Some(h3) = &self.inner.h3
            && !h3.state.is_gone()
        {
            h3.state.write_connect(ConnectWrite::Capsule {
                capsule: Some(WtCapsule::DrainSession.to_capsule()),
                finish: false,
            });
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

/// A session's close, started by [`Session::close`]; await it to wait until the CONNECT
/// stream is done: the peer answered with its FIN or its own close, or the few seconds a closed
/// session waits for that passed, or the connection is gone. Ready at once on a raw session.
pub struct Closing {
    state: Option<ClosingState>,
}

enum ClosingState {
    Started(Arc<SessionState>),
    /// Boxed: built on the first poll; a close is rare.
    Waiting(Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl fmt::Debug for Closing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closing")
            .field("done", &self.state.is_none())
            .finish()
    }
}

impl Future for Closing {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let waiting = match self.state.take() {
            None => return Poll::Ready(()),
            Some(ClosingState::Started(state)) => {
                Box::pin(async move { state.connect_done().await }) as Pin<Box<_>>
            }
            Some(ClosingState::Waiting(waiting)) => waiting,
        };
        let mut waiting = waiting;
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.state = Some(ClosingState::Waiting(waiting));
                Poll::Pending
            }
        }
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
            && h3.state.end(SessionError::LocallyClosed)
        {
            h3.routes.close(h3.id.into_inner());
            h3.state.write_connect(ConnectWrite::Capsule {
                capsule: None,
                finish: true,
            });
        }
    }
}

/// A few bytes a session puts in front of its streams or datagrams (a stream type or signal
/// and the session ID, or the quarter stream ID), kept inline: a session lives long and most of
/// its streams are the peer's.
#[derive(Clone, Copy, Debug)]
struct Prefix {
    len: u8,
    /// Two varints at most: 16 bytes.
    bytes: [u8; 16],
}

impl Prefix {
    fn new(write: impl FnOnce(&mut &mut [u8])) -> Self {
        let mut bytes = [0; 16];
        let mut rest = &mut bytes[..];
        write(&mut rest);
        let len = 16 - rest.len();
        Self {
            len: len as u8,
            bytes,
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// How many bytes of outgoing datagrams one allocation holds (see [`prefixed`]).
const DATAGRAM_BUFFER: usize = 16 * 1024;

thread_local! {
    /// Where this thread builds outgoing datagrams; what is left of the current allocation.
    static DATAGRAM_OUT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `prefix` then `payload` in one buffer, as quinn sends a datagram. Datagrams are split off a
/// per-thread buffer of [`DATAGRAM_BUFFER`] bytes: one allocation serves a dozen or so instead
/// of one each, which is a measurable part of a datagram's cost. The buffer is freed once
/// quinn has sent the last datagram cut from it, and a thread keeps at most one.
fn prefixed(prefix: &[u8], payload: &[u8]) -> Bytes {
    let len = prefix.len() + payload.len();
    if len > DATAGRAM_BUFFER / 8 {
        let mut buf = BytesMut::with_capacity(len);
        buf.put_slice(prefix);
        buf.put_slice(payload);
        return buf.freeze();
    }
    DATAGRAM_OUT.with_borrow_mut(|buf| {
        if buf.capacity() < len {
            *buf = BytesMut::with_capacity(DATAGRAM_BUFFER);
        }
        buf.put_slice(prefix);
        buf.put_slice(payload);
        buf.split().freeze()
    })
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

/// What a background task writes on a session's CONNECT stream (see
/// [`SessionState::write_connect`]).
enum ConnectWrite {
    /// A capsule, if any, then FIN if `finish`.
    Capsule {
        capsule: Option<Capsule>,
        finish: bool,
    },
    /// The flow-control capsules that are due when the task runs: taken once the stream is
    /// ours, so they leave in increasing order.
    FlowUpdates,
    /// RESET_STREAM with this code.
    Reset(Code),
}

/// Reads the CONNECT stream until the session ends: WT_CLOSE_SESSION, WT_DRAIN_SESSION, the
/// stream's end or reset, or the connection's loss. After a local close it goes on reading for
/// [`CLOSE_LINGER`] for the peer's answer. Then answers a peer's close with FIN and retires the
/// session's routes.
///
/// The task lives as long as the session, so it is kept small (tokio's task sizes go in steps
/// of 128 bytes; this one is in the 512-byte step): the capsules are read by polling
/// ([`poll_capsules`]) and the session's end is waited for through a waker in its state, so
/// the long wait keeps no future; the end ([`end_session`]), with its timer and locks, is
/// boxed; and it returns an `async move` block rather than being an `async fn`, whose
/// arguments rustc stores twice (once as passed, once as bound).
#[allow(clippy::manual_async_fn)] // On purpose: see above.
fn read_connect_stream(
    mut recv: RecvHalf,
    state: Arc<SessionState>,
    routes: Arc<Routes>,
    id: u64,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        recv.accept_capsules(&CAPSULE_TYPES);
        let outcome = poll_fn(|cx| match poll_capsules(&mut recv, &state, cx) {
            Poll::Ready(outcome) => Poll::Ready(Some(outcome)),
            Poll::Pending => state.poll_ended(cx).map(|()| None),
        })
        .await;
        // Boxed: it runs once, at the end, and the task should not keep room for its timer
        // and locks all session long.
        Box::pin(end_session(recv, state.clone(), routes, id, outcome)).await;
        state.set_connect_done();
    }
}

/// The end of [`read_connect_stream`]: after a local close (`outcome` is `None`), reads on
/// for [`CLOSE_LINGER`]; resets or finishes the CONNECT stream as the outcome asks; retires the
/// session's routes.
async fn end_session(
    mut recv: RecvHalf,
    state: Arc<SessionState>,
    routes: Arc<Routes>,
    id: u64,
    outcome: Option<ConnectEnd>,
) {
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => {
            let linger = tokio::time::timeout(
                CLOSE_LINGER,
                poll_fn(|cx| poll_capsules(&mut recv, &state, cx)),
            );
            match linger.await {
                Ok(outcome) => outcome,
                Err(_) => {
                    recv.stop(WT_SESSION_GONE);
                    routes.close(id);
                    return;
                }
            }
        }
    };
    if outcome.close_capsule {
        // The peer ended the session: all we may still send on the CONNECT stream is FIN, which
        // a connection close makes moot.
        state.connect.lock().await.settle();
        // The application learns of the peer's close now, before the check below.
        let answer = state.end(outcome.reason);
        after_close_capsule(&mut recv, &state, answer).await;
        routes.close(id);
        return;
    }
    if let Some(code) = outcome.reset {
        state.connect.lock().await.reset(code);
    }
    if state.end(outcome.reason) {
        // The peer ended the session: end our side too (draft-16 §6).
        let _ = state.connect.lock().await.finish();
    }
    routes.close(id);
}

/// After the peer's WT_CLOSE_SESSION (draft-16 §6): reads on, for at most [`CLOSE_LINGER`],
/// until the CONNECT stream ends. Anything but FIN is an error: the stream is reset, both ways,
/// with H3_MESSAGE_ERROR. A clean end is answered with our FIN when `answer` (the session had
/// not ended on our side); a peer that does not end the stream in time is stopped with
/// WT_SESSION_GONE.
async fn after_close_capsule(recv: &mut RecvHalf, state: &SessionState, answer: bool) {
    let rest = tokio::time::timeout(CLOSE_LINGER, poll_fn(|cx| recv.poll_clean_end(cx))).await;
    let mut connect = state.connect.lock().await;
    match rest {
        Ok(Ok(false)) => {
            recv.stop(Code::H3_MESSAGE_ERROR);
            connect.reset(Code::H3_MESSAGE_ERROR);
            return;
        }
        // FIN, or the stream or connection is gone: nothing more to check.
        Ok(Ok(true) | Err(_)) => {}
        Err(_) => recv.stop(WT_SESSION_GONE),
    }
    if answer {
        let _ = connect.finish();
    }
}

/// How the CONNECT stream ended.
struct ConnectEnd {
    reason: SessionError,
    /// The peer broke the protocol: the stream is to be reset with this code.
    reset: Option<Code>,
    /// The peer sent WT_CLOSE_SESSION: nothing but FIN may follow (draft-16 §6).
    close_capsule: bool,
}

/// How many capsules one poll of [`poll_capsules`] handles before letting other tasks run.
const CAPSULE_BUDGET: usize = 32;

/// Reads capsules until the CONNECT stream says the session is over (noting WT_DRAIN_SESSION
/// on the way). Polled by hand, so the task that waits here all session long keeps no future
/// for it.
fn poll_capsules(
    recv: &mut RecvHalf,
    state: &Arc<SessionState>,
    cx: &mut Context<'_>,
) -> Poll<ConnectEnd> {
    let end = |reason| {
        Poll::Ready(ConnectEnd {
            reason,
            reset: None,
            close_capsule: false,
        })
    };
    for _ in 0..CAPSULE_BUDGET {
        match ready!(recv.poll_recv_capsule(cx)) {
            Ok(Some(capsule)) => match WtCapsule::decode(&capsule) {
                Ok(Some(WtCapsule::CloseSession { code, reason })) => {
                    // draft-16 §6: only FIN may follow, which `end_session` checks.
                    return Poll::Ready(ConnectEnd {
                        reason: SessionError::PeerClosed { code, reason },
                        reset: None,
                        close_capsule: true,
                    });
                }
                Ok(Some(WtCapsule::DrainSession)) => state.set_drained(),
                // Ignored unless flow control is on (draft-16 §5.1).
                Ok(Some(capsule)) => {
                    if state.on_flow_capsule(&capsule).is_err() {
                        recv.stop(WT_FLOW_CONTROL_ERROR);
                        return Poll::Ready(ConnectEnd {
                            reason: SessionError::Protocol(FLOW_CONTROL_BROKEN),
                            reset: Some(WT_FLOW_CONTROL_ERROR),
                            close_capsule: false,
                        });
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    let code = Code::from(error);
                    recv.stop(code);
                    return Poll::Ready(ConnectEnd {
                        reason: SessionError::Protocol("malformed WebTransport capsule"),
                        reset: Some(code),
                        close_capsule: false,
                    });
                }
            },
            Ok(None) => {
                return end(if state.is_drained() {
                    SessionError::PeerDrained
                } else {
                    SessionError::PeerClosed {
                        code: 0,
                        reason: String::new(),
                    }
                });
            }
            // RFC 9297 §3.3: a capsule cut short by FIN (or over our size bound) is a malformed
            // message; the reader stopped the stream with its code, and the stream is reset
            // with it too.
            Err(quay_h3::StreamError::Capsule(error)) => {
                return Poll::Ready(ConnectEnd {
                    reason: SessionError::Protocol("malformed capsule on the CONNECT stream"),
                    reset: Some(Code::from(error)),
                    close_capsule: false,
                });
            }
            Err(quay_h3::StreamError::Reset(code)) => return end(SessionError::Reset(code)),
            Err(quay_h3::StreamError::ConnectionLost(error)) => {
                return end(SessionError::ConnectionLost(error));
            }
            Err(_) => return end(SessionError::Protocol("malformed CONNECT stream")),
        }
    }
    // More capsules than one turn takes: go on after other tasks.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// What one HTTP/3 session's handles, its streams and its CONNECT-stream task share: the
/// CONNECT stream's sending half, whether and why the session ended, whether the peer asked to
/// drain it, and the peer's streams routed to it and not accepted yet.
#[derive(Debug)]
pub(crate) struct SessionState {
    gone: AtomicBool,
    drained: AtomicBool,
    /// The CONNECT stream's reader is done: the session ended and the peer answered, or the
    /// wait for its answer is over.
    connect_done: AtomicBool,
    /// Whether draft-16 flow control is on (fixed at the start).
    flow_on: bool,
    inner: Mutex<StateInner>,
    /// Wakes waiters when the session ends, is drained, or the peer gives stream credit.
    changed: Notify,
    /// The CONNECT stream's sending half, for capsules and FIN.
    connect: tokio::sync::Mutex<SendHalf>,
    /// The session's datagrams, stopped when it ends.
    datagrams: Datagrams,
}

#[derive(Debug, Default)]
struct StateInner {
    /// Boxed: set once, at the end.
    reason: Option<Box<SessionError>>,
    /// Routed streams waiting for `accept_bi` / `accept_uni`. Empty queues allocate nothing,
    /// which is what most idle sessions have.
    bi: VecDeque<ExtensionStream>,
    uni: VecDeque<ExtensionStream>,
    /// Boxed: off on most sessions.
    flow: Option<Box<FlowControl>>,
    /// Tasks waiting in `accept_bi` / `accept_uni`: woken by a stream of their kind or the end,
    /// not by every change of the session (as [`SessionState::changed`] waiters are).
    accept_wakers: [Vec<Waker>; 2],
    /// Streams waiting for the peer's data credit.
    send_wakers: Vec<Waker>,
    /// The CONNECT stream's reader, waiting for the session's end as well as for capsules.
    connect_reader: Option<Waker>,
    /// WT_DATA_BLOCKED and WT_STREAMS_BLOCKED (bidi, uni) to send.
    data_blocked: bool,
    streams_blocked: [bool; 2],
}

impl SessionState {
    fn new(connect: SendHalf, datagrams: Datagrams, flow: Option<FlowControl>) -> Self {
        Self {
            gone: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            connect_done: AtomicBool::new(false),
            flow_on: flow.is_some(),
            inner: Mutex::new(StateInner {
                flow: flow.map(Box::new),
                ..StateInner::default()
            }),
            changed: Notify::new(),
            connect: tokio::sync::Mutex::new(connect),
            datagrams,
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, StateInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn reason(&self) -> Option<SessionError> {
        if !self.is_gone() {
            return None;
        }
        self.lock().reason.as_deref().cloned()
    }

    /// Records the end of the session and refuses the streams that wait to be accepted;
    /// `false` if it had ended already (the first reason stays).
    fn end(&self, reason: SessionError) -> bool {
        let waiting = {
            let mut inner = self.lock();
            if inner.reason.is_some() {
                return false;
            }
            inner.reason = Some(Box::new(reason));
            let [bi_wakers, uni_wakers] = &mut inner.accept_wakers;
            for waker in bi_wakers.drain(..).chain(uni_wakers.drain(..)) {
                waker.wake();
            }
            for waker in inner.send_wakers.drain(..) {
                waker.wake();
            }
            if let Some(waker) = inner.connect_reader.take() {
                waker.wake();
            }
            let bi = std::mem::take(&mut inner.bi);
            let uni = std::mem::take(&mut inner.uni);
            bi.into_iter().chain(uni)
        };
        self.gone.store(true, Ordering::Release);
        self.changed.notify_waiters();
        self.datagrams.stop();
        for arrival in waiting {
            arrival.refuse(WT_SESSION_GONE);
        }
        true
    }

    /// Queues a routed stream for `accept_bi` / `accept_uni`; gives it back if the session has
    /// ended, or if it is one more than flow control allows (which ends the session).
    fn push(self: &Arc<Self>, arrival: ExtensionStream) -> Result<(), ExtensionStream> {
        let wakers = {
            let mut inner = self.lock();
            if inner.reason.is_some() {
                return Err(arrival);
            }
            let Some(direction) = direction(&arrival) else {
                return Err(arrival);
            };
            if let Some(flow) = &mut inner.flow
                && flow.on_peer_stream(direction).is_err()
            {
                drop(inner);
                self.flow_control_broken();
                return Err(arrival);
            }
            match direction {
                Direction::Bidi => inner.bi.push_back(arrival),
                Direction::Uni => inner.uni.push_back(arrival),
            }
            std::mem::take(&mut inner.accept_wakers[index(direction)])
        };
        for waker in wakers {
            waker.wake();
        }
        Ok(())
    }

    /// Ends the session because the peer broke flow control: WT_FLOW_CONTROL_ERROR resets the
    /// CONNECT stream (draft-16 §5.6).
    fn flow_control_broken(self: &Arc<Self>) {
        if !self.end(SessionError::Protocol(FLOW_CONTROL_BROKEN)) {
            return;
        }
        self.write_connect(ConnectWrite::Reset(WT_FLOW_CONTROL_ERROR));
    }

    /// Sends the flow-control capsules that are due, in the background.
    fn send_flow_updates(self: &Arc<Self>) {
        self.write_connect(ConnectWrite::FlowUpdates);
    }

    /// Does `write` on the CONNECT stream in a task of its own: closing or giving credit must
    /// not wait for the peer's flow control. Outside a runtime (a session dropped there) it does
    /// nothing: the stream is dropped with the session, which resets it.
    fn write_connect(self: &Arc<Self>, write: ConnectWrite) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let ConnectWrite::Capsule { finish: true, .. } = write
            && let Ok(send) = self.connect.try_lock()
        {
            // See below; said at once when the stream is free, so that a GOAWAY caused by the
            // handles dropped right after the close is queued before the close's writes.
            send.settle();
        }
        let state = self.clone();
        runtime.spawn(async move {
            let mut send = state.connect.lock().await;
            let (capsules, finish) = match write {
                ConnectWrite::Capsule { capsule, finish } => {
                    (capsule.into_iter().collect(), finish)
                }
                ConnectWrite::FlowUpdates => (state.flow_updates(), false),
                ConnectWrite::Reset(code) => {
                    send.reset(code);
                    return;
                }
            };
            if finish {
                // We end the session (WT_CLOSE_SESSION and FIN, draft-16 §6): nothing the peer
                // sends on the CONNECT stream matters any more. Said before the writes, so that
                // a GOAWAY it may cause leaves in the same packet as they do.
                send.settle();
            }
            for capsule in capsules {
                if send.send_capsule(&capsule).await.is_err() {
                    return;
                }
            }
            if finish {
                let _ = send.finish();
            }
        });
    }

    /// The flow-control capsules due now, with the blocked signals asked for.
    fn flow_updates(&self) -> Vec<Capsule> {
        let mut inner = self.lock();
        let data_blocked = std::mem::take(&mut inner.data_blocked);
        let streams_blocked = std::mem::take(&mut inner.streams_blocked);
        match &mut inner.flow {
            Some(flow) => flow
                .updates(data_blocked, streams_blocked)
                .iter()
                .map(WtCapsule::to_capsule)
                .collect(),
            None => Vec::new(),
        }
    }

    /// A WebTransport capsule other than close and drain from the peer: flow control's, applied
    /// when it is on and ignored otherwise (draft-16 §5.1).
    fn on_flow_capsule(&self, capsule: &WtCapsule) -> Result<(), FlowControlError> {
        let mut inner = self.lock();
        let Some(flow) = &mut inner.flow else {
            return Ok(());
        };
        if flow.on_capsule(capsule)? {
            for waker in inner.send_wakers.drain(..) {
                waker.wake();
            }
            drop(inner);
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Waits for one of the peer's stream credits of `direction`, when flow control is on.
    async fn stream_credit(self: &Arc<Self>, direction: Direction) -> Result<(), SessionError> {
        if !self.flow_on {
            return Ok(());
        }
        self.wait_for(|inner| {
            if let Some(reason) = &inner.reason {
                return Some(Err(SessionError::clone(reason)));
            }
            let flow = inner.flow.as_mut()?;
            match flow.open(direction) {
                Ok(()) => Some(Ok(())),
                Err(say_blocked) => {
                    if say_blocked {
                        inner.streams_blocked[index(direction)] = true;
                        // The task it spawns takes the lock later.
                        self.send_flow_updates();
                    }
                    None
                }
            }
        })
        .await
    }

    /// Whether flow control is on: writes and reads of the session's streams then go through
    /// [`SessionState::poll_data_credit`] and [`SessionState::on_read`].
    pub(crate) fn flow_on(&self) -> bool {
        self.flow_on
    }

    /// Takes up to `want` bytes of the peer's data credit, waiting while there is none.
    pub(crate) fn poll_data_credit(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<Result<usize, StreamError>> {
        let mut inner = self.lock();
        if inner.reason.is_some() {
            return Poll::Ready(Err(StreamError::SessionGone));
        }
        let Some(flow) = &mut inner.flow else {
            return Poll::Ready(Ok(want));
        };
        match flow.reserve(want) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(say_blocked) => {
                inner.send_wakers.push(cx.waker().clone());
                if say_blocked {
                    inner.data_blocked = true;
                    drop(inner);
                    self.send_flow_updates();
                }
                Poll::Pending
            }
        }
    }

    /// Gives back data credit that was taken and not used.
    pub(crate) fn refund_data_credit(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut inner = self.lock();
        if let Some(flow) = &mut inner.flow {
            flow.refund(n);
            for waker in inner.send_wakers.drain(..) {
                waker.wake();
            }
        }
    }

    /// The application read `n` bytes of the peer's stream data: counts them, sends credit when
    /// due, and ends the session if the peer sent more than it was allowed.
    pub(crate) fn on_read(self: &Arc<Self>, n: usize) -> Result<(), StreamError> {
        let mut inner = self.lock();
        let Some(flow) = &mut inner.flow else {
            return Ok(());
        };
        match flow.on_read(n) {
            Ok(due) => {
                drop(inner);
                if due {
                    self.send_flow_updates();
                }
                Ok(())
            }
            Err(_) => {
                drop(inner);
                self.flow_control_broken();
                Err(StreamError::SessionGone)
            }
        }
    }

    /// Waits for the next routed stream of `direction`, or the end of the session.
    async fn next_arrival(
        self: &Arc<Self>,
        direction: Direction,
    ) -> Result<ExtensionStream, SessionError> {
        poll_fn(|cx| self.poll_arrival(cx, direction)).await
    }

    fn poll_arrival(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        direction: Direction,
    ) -> Poll<Result<ExtensionStream, SessionError>> {
        let mut inner = self.lock();
        if let Some(reason) = &inner.reason {
            return Poll::Ready(Err(SessionError::clone(reason)));
        }
        let queue = match direction {
            Direction::Bidi => &mut inner.bi,
            Direction::Uni => &mut inner.uni,
        };
        let Some(arrival) = queue.pop_front() else {
            // Registered under the lock that `push` takes, so no stream is missed.
            let wakers = &mut inner.accept_wakers[index(direction)];
            if !wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                // Usually one task accepts: room for exactly one (a Vec's first allocation
                // would hold four), kept while the session lives.
                if wakers.capacity() == 0 {
                    wakers.reserve_exact(1);
                }
                wakers.push(cx.waker().clone());
            }
            return Poll::Pending;
        };
        if queue.is_empty() {
            // An idle session keeps no buffer.
            *queue = VecDeque::new();
        }
        if inner
            .flow
            .as_mut()
            .is_some_and(|flow| flow.on_accepted(direction))
        {
            // The task it spawns takes the lock later.
            self.send_flow_updates();
        }
        Poll::Ready(Ok(arrival))
    }

    /// Waits until `check`, run under the lock at first and after every change, gives a value.
    async fn wait_for<T>(&self, mut check: impl FnMut(&mut StateInner) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = check(&mut self.lock()) {
                return value;
            }
            notified.await;
        }
    }

    fn set_drained(&self) {
        self.drained.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn set_connect_done(&self) {
        self.connect_done.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    async fn connect_done(&self) {
        self.wait_for(|_| self.connect_done.load(Ordering::Acquire).then_some(()))
            .await;
    }

    pub(crate) async fn ended(&self) -> SessionError {
        self.wait_for(|inner| inner.reason.as_deref().cloned())
            .await
    }

    /// Ready once the session has ended; for the CONNECT stream's reader (one waker).
    fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.reason.is_some() {
            return Poll::Ready(());
        }
        if !inner
            .connect_reader
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            inner.connect_reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    async fn drained(&self) {
        self.wait_for(|_| self.is_drained().then_some(())).await;
    }
}

/// The slot of `direction` in per-direction arrays (bidi, uni).
fn index(direction: Direction) -> usize {
    usize::from(direction == Direction::Uni)
}

/// Which queue a peer's WebTransport stream goes to; `None` for a kind this crate does not
/// know.
fn direction(stream: &ExtensionStream) -> Option<Direction> {
    match stream {
        ExtensionStream::Bidi { .. } => Some(Direction::Bidi),
        ExtensionStream::Uni { .. } => Some(Direction::Uni),
        _ => None,
    }
}

/// The per-connection table from session ID to session: where the peer's WebTransport streams
/// go.
#[derive(Debug)]
pub(crate) struct Routes {
    inner: Mutex<RoutesInner>,
    max_buffered: usize,
}

#[derive(Debug, Default)]
struct RoutesInner {
    /// Sessions requested, open, or with streams waiting for their CONNECT: few at a time, so
    /// a short list (with room for exactly one at first: most connections carry one session).
    slots: Vec<(u64, Slot)>,
    /// Sessions that ended or were refused, sorted: their streams get WT_SESSION_GONE.
    gone: Vec<u64>,
    /// Streams waiting in [`Slot::Waiting`] slots, all sessions together.
    buffered: usize,
    /// Sessions requested or open.
    sessions: usize,
    /// The connection is gone: nothing is routed any more.
    closed: bool,
}

#[derive(Debug)]
enum Slot {
    /// Not accepted yet (or not even requested yet: streams can overtake their CONNECT).
    Waiting {
        streams: Vec<ExtensionStream>,
        /// Whether the CONNECT request is known (and counted in `sessions`).
        requested: bool,
    },
    Open(Arc<SessionState>),
}

impl RoutesInner {
    fn is_gone(&self, id: u64) -> bool {
        self.gone.binary_search(&id).is_ok()
    }

    /// The slot of session `id`, made a waiting one if there is none. Not for gone sessions.
    fn slot(&mut self, id: u64) -> &mut Slot {
        let i = match self.slots.iter().position(|(slot_id, _)| *slot_id == id) {
            Some(i) => i,
            None => {
                if self.slots.is_empty() {
                    self.slots.reserve_exact(1);
                }
                self.slots.push((
                    id,
                    Slot::Waiting {
                        streams: Vec::new(),
                        requested: false,
                    },
                ));
                self.slots.len() - 1
            }
        };
        &mut self.slots[i].1
    }

    fn take_slot(&mut self, id: u64) -> Option<Slot> {
        let i = self.slots.iter().position(|(slot_id, _)| *slot_id == id)?;
        let (_, slot) = self.slots.swap_remove(i);
        if self.slots.is_empty() {
            self.slots = Vec::new();
        }
        Some(slot)
    }
}

impl Routes {
    pub(crate) fn new(max_buffered: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(RoutesInner::default()),
            max_buffered,
        })
    }

    fn lock(&self) -> MutexGuard<'_, RoutesInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Sessions requested or open on the connection.
    pub(crate) fn sessions(&self) -> usize {
        self.lock().sessions
    }

    /// Hands a peer stream to its session, buffers it, or refuses it. A session ID that is not a
    /// client bidirectional stream ID closes the connection with H3_ID_ERROR (draft-16 §4.1).
    pub(crate) fn route(&self, stream: ExtensionStream, conn: &Connection) {
        let (ExtensionStream::Uni { session_id, .. } | ExtensionStream::Bidi { session_id, .. }) =
            &stream
        else {
            return drop(stream);
        };
        let id = session_id.into_inner();
        if id % 4 != 0 {
            conn.close(
                Code::H3_ID_ERROR.to_varint(),
                b"WebTransport session ID is not a client bidirectional stream",
            );
            return;
        }
        let mut inner = self.lock();
        if inner.closed {
            drop(inner);
            return stream.refuse(WT_SESSION_GONE);
        }
        if inner.is_gone(id) {
            drop(inner);
            return stream.refuse(WT_SESSION_GONE);
        }
        let buffered = inner.buffered;
        let refused = match inner.slot(id) {
            Slot::Open(session) => session
                .push(stream)
                .err()
                .map(|stream| (stream, WT_SESSION_GONE)),
            Slot::Waiting { streams, .. } if buffered < self.max_buffered => {
                streams.push(stream);
                inner.buffered += 1;
                None
            }
            Slot::Waiting { .. } => Some((stream, WT_BUFFERED_STREAM_REJECTED)),
        };
        drop(inner);
        if let Some((stream, code)) = refused {
            stream.refuse(code);
        }
    }

    /// A CONNECT request for `id` arrived (server) or was sent (client). `false`, and nothing
    /// changes, when `limit` sessions are requested or open already.
    pub(crate) fn request(&self, id: u64, limit: usize) -> bool {
        let mut inner = self.lock();
        if inner.sessions >= limit || inner.is_gone(id) {
            return false;
        }
        match inner.slot(id) {
            Slot::Waiting { requested, .. } if !*requested => {
                *requested = true;
                inner.sessions += 1;
                true
            }
            _ => false,
        }
    }

    /// The session `id` is established: its buffered streams and those to come go to
    /// `session`'s queues.
    fn open(&self, id: u64, session: &Arc<SessionState>) {
        let mut inner = self.lock();
        let slot = inner.slot(id);
        let waiting = match std::mem::replace(slot, Slot::Open(session.clone())) {
            Slot::Waiting { streams, .. } => streams,
            Slot::Open(_) => Vec::new(),
        };
        inner.buffered -= waiting.len();
        for arrival in waiting {
            // The session has not ended: it is being set up.
            let _ = session.push(arrival);
        }
    }

    /// The session `id` ended or was refused: streams waiting for it, and later ones, get
    /// WT_SESSION_GONE. Idempotent.
    pub(crate) fn close(&self, id: u64) {
        let mut inner = self.lock();
        if let Err(i) = inner.gone.binary_search(&id) {
            inner.gone.insert(i, id);
        }
        let refused = match inner.take_slot(id) {
            Some(Slot::Waiting { streams, requested }) => {
                inner.buffered -= streams.len();
                if requested {
                    inner.sessions -= 1;
                }
                streams
            }
            Some(Slot::Open(_)) => {
                inner.sessions -= 1;
                Vec::new()
            }
            None => Vec::new(),
        };
        drop(inner);
        for arrival in refused {
            arrival.refuse(WT_SESSION_GONE);
        }
    }

    /// The connection is gone: every waiting stream is refused and every session's queues end.
    pub(crate) fn connection_closed(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        let slots = std::mem::take(&mut inner.slots);
        inner.buffered = 0;
        drop(inner);
        for (_, slot) in slots {
            if let Slot::Waiting { streams, .. } = slot {
                for arrival in streams {
                    arrival.refuse(WT_SESSION_GONE);
                }
            }
        }
    }
}

/// Reads a connection's WebTransport streams and routes them until the connection is gone.
pub(crate) async fn route_streams(
    mut streams: quay_h3::stream::ExtensionStreams,
    routes: Arc<Routes>,
    conn: Connection,
) {
    while let Some(stream) = streams.next().await {
        routes.route(stream, &conn);
    }
    routes.connection_closed();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_cut_from_the_thread_buffer_stay_apart() {
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|n| vec![n; 1000]).collect();
        // 40 KB: more than two of the thread's buffers.
        let mut datagrams: Vec<Bytes> = payloads.iter().map(|p| prefixed(&[7, 9], p)).collect();
        for (datagram, payload) in datagrams.iter().zip(&payloads) {
            assert_eq!(&datagram[..2], [7, 9]);
            assert_eq!(&datagram[2..], &payload[..]);
        }
        // Dropping some leaves the others intact.
        datagrams.drain(..20);
        let later = prefixed(&[1], b"later");
        assert_eq!(later, &b"\x01later"[..]);
        assert_eq!(&datagrams[19][2..], &payloads[39][..]);
        // A large one gets a buffer of its own.
        let large = prefixed(&[3], &[5; DATAGRAM_BUFFER]);
        assert_eq!(large.len(), DATAGRAM_BUFFER + 1);
        assert_eq!((large[0], large[DATAGRAM_BUFFER]), (3, 5));
    }
}
