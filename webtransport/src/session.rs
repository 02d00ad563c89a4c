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
use quay_h3::proto::capsule::{Capsule, CapsuleType};
use quay_h3::proto::datagram::Datagram;
use quay_h3::proto::frame::FrameType;
use quay_h3::proto::stream::StreamType;
use quay_h3::proto::{Codec, VarInt};
use quay_h3::stream::{Datagrams, ExtensionStream, RecvHalf, SendHalf};
use quay_transport::{Connection, SendDatagramError};
use tokio::sync::Notify;

use crate::core::session::{Credit, Event, ReadOn, SessionCore, Transmit, index};
use crate::core::table::{Route, SessionTable};
use crate::error::{DatagramError, SessionError, StreamError};
use crate::flow::FlowControl;
use crate::proto::capsule::{CAPSULE_TYPES, Direction};
use crate::proto::error::WT_SESSION_GONE;
use crate::proto::settings::FlowControlLimits;
use crate::stream::{Mapping, RecvStream, SendStream};

/// How long, after we close a session, its CONNECT stream is read for the peer's answer before
/// we stop reading it.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

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
        let state = Arc::new(SessionState::new(send, datagrams, flow));
        // Sends the first credit, if a limit we announced was 0.
        state.with_core(|_| ());
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
        if h3.state.close(code, reason) {
            h3.routes.close(h3.id.into_inner());
        }
        Closing {
            state: Some(ClosingState::Started(h3.state.clone())),
        }
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

/// Reads the CONNECT stream until the session ends: WT_CLOSE_SESSION, WT_DRAIN_SESSION, the
/// stream's end or reset, or the connection's loss, handing each to the session's core in the
/// order it was read. After a local close it goes on reading for [`CLOSE_LINGER`] for the
/// peer's answer. Then retires the session's routes.
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
        let read = poll_fn(|cx| match poll_capsules(&mut recv, &state, cx) {
            Poll::Ready(read) => Poll::Ready(Some(read)),
            Poll::Pending => state.poll_ended(cx).map(|()| None),
        })
        .await;
        // Boxed: it runs once, at the end, and the task should not keep room for its timer
        // and locks all session long.
        Box::pin(end_session(recv, state.clone(), routes, id, read)).await;
        state.set_connect_done();
    }
}

/// The end of [`read_connect_stream`]: after a local close (`read` is `None`), reads on for
/// [`CLOSE_LINGER`]; hands the CONNECT stream's end to the core and writes what it asks for;
/// retires the session's routes.
async fn end_session(
    mut recv: RecvHalf,
    state: Arc<SessionState>,
    routes: Arc<Routes>,
    id: u64,
    read: Option<ConnectRead>,
) {
    let read = match read {
        Some(read) => read,
        None => {
            let linger = tokio::time::timeout(
                CLOSE_LINGER,
                poll_fn(|cx| poll_capsules(&mut recv, &state, cx)),
            );
            match linger.await {
                Ok(read) => read,
                Err(_) => {
                    recv.stop(state.with_core(SessionCore::handle_linger_over));
                    state.write_pending().await;
                    routes.close(id);
                    return;
                }
            }
        }
    };
    match read {
        ConnectRead::Close(capsule) => {
            // The peer ended the session: all we may still send on the CONNECT stream is FIN,
            // which a connection close makes moot. Said before the application learns of the
            // close, so that a GOAWAY its reaction causes leaves at once.
            state.connect.lock().await.settle();
            match state.with_core(|core| core.handle_capsule(&capsule)) {
                ReadOn::FinOnly => after_close_capsule(&mut recv, &state).await,
                ReadOn::Stop(code) => recv.stop(code),
                ReadOn::Capsules => {}
            }
        }
        ConnectRead::Stopped => {}
        ConnectRead::Fin => state.with_core(SessionCore::handle_connect_fin),
        ConnectRead::Reset(code) => state.with_core(|core| core.handle_connect_reset(code)),
        ConnectRead::Malformed(code) => {
            state.with_core(|core| core.handle_connect_malformed(code));
        }
        ConnectRead::Lost(error) => state.with_core(|core| core.handle_connection_lost(error)),
    }
    state.write_pending().await;
    routes.close(id);
}

/// After the peer's WT_CLOSE_SESSION (draft-16 §6): reads on, for at most [`CLOSE_LINGER`],
/// until the CONNECT stream ends, and tells the core how it ended (which answers FIN with
/// FIN, anything else with H3_MESSAGE_ERROR, and a peer too slow with WT_SESSION_GONE).
async fn after_close_capsule(recv: &mut RecvHalf, state: &Arc<SessionState>) {
    let rest = tokio::time::timeout(CLOSE_LINGER, poll_fn(|cx| recv.poll_clean_end(cx))).await;
    match rest {
        Ok(Ok(false)) => recv.stop(state.with_core(SessionCore::handle_data_after_close)),
        // FIN, or the stream or connection is gone: nothing more to check.
        Ok(Ok(true) | Err(_)) => state.with_core(SessionCore::handle_connect_fin),
        Err(_) => recv.stop(state.with_core(SessionCore::handle_linger_over)),
    }
}

/// What ended the reading of the CONNECT stream, for [`end_session`].
enum ConnectRead {
    /// A WT_CLOSE_SESSION capsule, not yet handed to the core (see [`end_session`]).
    Close(Capsule),
    /// The core asked to stop reading (a malformed capsule, broken flow control); done.
    Stopped,
    /// The peer's FIN.
    Fin,
    /// The peer's reset, with its code.
    Reset(Code),
    /// Not capsules: with the code the reader stopped the stream with, if any.
    Malformed(Option<Code>),
    /// The connection's end.
    Lost(quay_h3::ConnectionError),
}

/// How many capsules one poll of [`poll_capsules`] handles before letting other tasks run.
const CAPSULE_BUDGET: usize = 32;

/// Reads capsules, handing each to the session's core, until the CONNECT stream says the
/// session is over. Polled by hand, so the task that waits here all session long keeps no
/// future for it.
fn poll_capsules(
    recv: &mut RecvHalf,
    state: &Arc<SessionState>,
    cx: &mut Context<'_>,
) -> Poll<ConnectRead> {
    for _ in 0..CAPSULE_BUDGET {
        let read = match ready!(recv.poll_recv_capsule(cx)) {
            Ok(Some(capsule)) if capsule.ty == CapsuleType::WT_CLOSE_SESSION => {
                ConnectRead::Close(capsule)
            }
            Ok(Some(capsule)) => match state.with_core(|core| core.handle_capsule(&capsule)) {
                ReadOn::Capsules | ReadOn::FinOnly => continue,
                ReadOn::Stop(code) => {
                    recv.stop(code);
                    ConnectRead::Stopped
                }
            },
            Ok(None) => ConnectRead::Fin,
            // RFC 9297 §3.3: a capsule cut short by FIN (or over our size bound) is a malformed
            // message; the reader stopped the stream with its code, and the stream is reset
            // with it too.
            Err(quay_h3::StreamError::Capsule(error)) => {
                ConnectRead::Malformed(Some(Code::from(error)))
            }
            Err(quay_h3::StreamError::Reset(code)) => ConnectRead::Reset(code),
            Err(quay_h3::StreamError::ConnectionLost(error)) => ConnectRead::Lost(error),
            Err(_) => ConnectRead::Malformed(None),
        };
        return Poll::Ready(read);
    }
    // More capsules than one turn takes: go on after other tasks.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// What one HTTP/3 session's handles, its streams and its CONNECT-stream task share: the
/// session's core behind a lock, the wakers of those waiting on it, and the CONNECT stream's
/// sending half.
#[derive(Debug)]
pub(crate) struct SessionState {
    /// The session has ended (a copy of the core's end, readable without the lock).
    gone: AtomicBool,
    /// The peer drained the session (a copy of the core's).
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

#[derive(Debug)]
struct StateInner {
    core: SessionCore<ExtensionStream, quay_h3::ConnectionError>,
    /// Tasks waiting in `accept_bi` / `accept_uni`: woken by a stream of their kind or the end,
    /// not by every change of the session (as [`SessionState::changed`] waiters are).
    accept_wakers: [Vec<Waker>; 2],
    /// Streams waiting for the peer's data credit.
    send_wakers: Vec<Waker>,
    /// The CONNECT stream's reader, waiting for the session's end as well as for capsules.
    connect_reader: Option<Waker>,
    /// A task writes the core's transmits on the CONNECT stream.
    writing: bool,
}

impl SessionState {
    fn new(connect: SendHalf, datagrams: Datagrams, flow: Option<FlowControl>) -> Self {
        let core = SessionCore::new(flow);
        Self {
            gone: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            connect_done: AtomicBool::new(false),
            flow_on: core.flow_on(),
            inner: Mutex::new(StateInner {
                core,
                accept_wakers: [Vec::new(), Vec::new()],
                send_wakers: Vec::new(),
                connect_reader: None,
                writing: false,
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
        self.lock().core.end().cloned().map(SessionError::from)
    }

    /// Runs `input` on the core, then carries out what it asks for (see [`Self::after`]).
    fn with_core<T>(
        self: &Arc<Self>,
        input: impl FnOnce(&mut SessionCore<ExtensionStream, quay_h3::ConnectionError>) -> T,
    ) -> T {
        let mut inner = self.lock();
        let value = input(&mut inner.core);
        self.after(inner);
        value
    }

    /// Carries out what the core asks for after an input, in its documented order: wakes
    /// waiters, publishes the end (stopping datagrams), refuses streams, and starts a task
    /// for the CONNECT stream's writes if none runs.
    fn after(self: &Arc<Self>, mut inner: MutexGuard<'_, StateInner>) {
        let mut wake = Vec::new();
        let mut ended = false;
        let mut changed = false;
        while let Some(event) = inner.core.poll_event() {
            match event {
                Event::Ended => {
                    ended = true;
                    let [bi, uni] = &mut inner.accept_wakers;
                    wake.extend(bi.drain(..).chain(uni.drain(..)));
                    wake.append(&mut inner.send_wakers);
                    wake.extend(inner.connect_reader.take());
                }
                Event::Drained => {
                    self.drained.store(true, Ordering::Release);
                    changed = true;
                }
                Event::Credit => {
                    wake.append(&mut inner.send_wakers);
                    changed = true;
                }
                Event::Arrived(direction) => {
                    wake.append(&mut inner.accept_wakers[index(direction)]);
                }
            }
        }
        let refused: Vec<_> = std::iter::from_fn(|| inner.core.poll_refused()).collect();
        let write = inner.core.wants_transmit() && !inner.writing;
        if write {
            inner.writing = true;
        }
        let finishing = inner.core.is_finishing();
        drop(inner);
        if ended {
            self.gone.store(true, Ordering::Release);
            changed = true;
        }
        for waker in wake {
            waker.wake();
        }
        if changed {
            self.changed.notify_waiters();
        }
        if ended {
            self.datagrams.stop();
        }
        for stream in refused {
            stream.refuse(WT_SESSION_GONE);
        }
        if write {
            self.spawn_writer(finishing);
        }
    }

    /// Writes the core's transmits in a task of its own: closing or giving credit must not
    /// wait for the peer's flow control. Outside a runtime (a session dropped there) it does
    /// nothing: the stream is dropped with the session, which resets it.
    fn spawn_writer(self: &Arc<Self>, finishing: bool) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if finishing && let Ok(send) = self.connect.try_lock() {
            // See `write_pending`; said at once when the stream is free, so that a GOAWAY
            // caused by the handles dropped right after the close is queued before the
            // close's writes.
            send.settle();
        }
        let state = self.clone();
        runtime.spawn(async move { state.write_pending().await });
    }

    /// Writes what the core has for the CONNECT stream, in order, until it has nothing.
    async fn write_pending(&self) {
        let mut send = self.connect.lock().await;
        loop {
            let (transmit, finishing) = {
                let mut inner = self.lock();
                match inner.core.poll_transmit() {
                    Some(transmit) => (transmit, inner.core.is_finishing()),
                    None => {
                        inner.writing = false;
                        return;
                    }
                }
            };
            if finishing {
                // We end our side (draft-16 §6): nothing the peer sends on the CONNECT stream
                // matters any more. Said before the writes, so that a GOAWAY it may cause
                // leaves in the same packet as they do.
                send.settle();
            }
            match transmit {
                Transmit::Capsules(capsules) => {
                    for capsule in capsules {
                        if send.send_capsule(&capsule.to_capsule()).await.is_err() {
                            let mut inner = self.lock();
                            inner.core.handle_transmit_failed();
                            inner.writing = false;
                            return;
                        }
                    }
                }
                Transmit::Finish => {
                    let _ = send.finish();
                }
                Transmit::Reset(code) => send.reset(code),
            }
        }
    }

    /// The application closes the session; `false` if it had ended.
    fn close(self: &Arc<Self>, code: u32, reason: &str) -> bool {
        self.with_core(|core| core.handle_close(code, reason))
    }

    /// Every handle is gone; `false` if the session had ended.
    fn dropped(self: &Arc<Self>) -> bool {
        self.with_core(SessionCore::handle_dropped)
    }

    /// Asks the peer to drain the session.
    fn drain(self: &Arc<Self>) {
        self.with_core(SessionCore::handle_drain);
    }

    /// Queues a routed stream for `accept_bi` / `accept_uni`; gives it back if the session has
    /// ended, or if it is one more than flow control allows (which ends the session).
    fn push(self: &Arc<Self>, arrival: ExtensionStream) -> Result<(), ExtensionStream> {
        let Some(direction) = direction(&arrival) else {
            return Err(arrival);
        };
        self.with_core(|core| core.handle_peer_stream(direction, arrival))
    }

    /// Waits for one of the peer's stream credits of `direction`, when flow control is on.
    async fn stream_credit(self: &Arc<Self>, direction: Direction) -> Result<(), SessionError> {
        if !self.flow_on {
            return Ok(());
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (credit, end) = {
                let mut inner = self.lock();
                let credit = inner.core.poll_open(direction);
                let end = inner.core.end().cloned();
                self.after(inner);
                (credit, end)
            };
            match credit {
                Credit::Ready(()) => return Ok(()),
                Credit::Ended => return Err(end.map_or(SessionError::LocallyClosed, Into::into)),
                Credit::Blocked => notified.await,
            }
        }
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
        let credit = inner.core.poll_reserve(want);
        if credit == Credit::Blocked {
            inner.send_wakers.push(cx.waker().clone());
        }
        self.after(inner);
        match credit {
            Credit::Ready(n) => Poll::Ready(Ok(n)),
            Credit::Blocked => Poll::Pending,
            Credit::Ended => Poll::Ready(Err(StreamError::SessionGone)),
        }
    }

    /// Gives back data credit that was taken and not used.
    pub(crate) fn refund_data_credit(self: &Arc<Self>, n: usize) {
        if n > 0 {
            self.with_core(|core| core.handle_refund(n));
        }
    }

    /// The application read `n` bytes of the peer's stream data: counts them, sends credit when
    /// due, and ends the session if the peer sent more than it was allowed.
    pub(crate) fn on_read(self: &Arc<Self>, n: usize) -> Result<(), StreamError> {
        if !self.flow_on {
            return Ok(());
        }
        self.with_core(|core| core.handle_read(n))
            .map_err(|()| StreamError::SessionGone)
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
        if let Some(end) = inner.core.end() {
            return Poll::Ready(Err(end.clone().into()));
        }
        let Some(arrival) = inner.core.poll_accept(direction) else {
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
        // Accepting may make stream credit due.
        self.after(inner);
        Poll::Ready(Ok(arrival))
    }

    /// Waits until `check`, run at first and after every change, gives a value.
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

    fn set_connect_done(&self) {
        self.connect_done.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    async fn connect_done(&self) {
        self.wait_for(|_| self.connect_done.load(Ordering::Acquire).then_some(()))
            .await;
    }

    pub(crate) async fn ended(&self) -> SessionError {
        self.wait_for(|inner| {
            if !self.is_gone() {
                return None;
            }
            inner.core.end().cloned().map(SessionError::from)
        })
        .await
    }

    /// Ready once the session has ended; for the CONNECT stream's reader (one waker).
    fn poll_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.core.end().is_some() {
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

/// Which queue a peer's WebTransport stream goes to; `None` for a kind this crate does not
/// know.
fn direction(stream: &ExtensionStream) -> Option<Direction> {
    match stream {
        ExtensionStream::Bidi { .. } => Some(Direction::Bidi),
        ExtensionStream::Uni { .. } => Some(Direction::Uni),
        _ => None,
    }
}

/// The per-connection table from session ID to session, where the peer's WebTransport streams
/// go: a [`SessionTable`] behind a lock, and the calls that carry out its answers.
#[derive(Debug)]
pub(crate) struct Routes {
    inner: Mutex<SessionTable<ExtensionStream, Arc<SessionState>>>,
}

impl Routes {
    pub(crate) fn new(max_buffered: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(SessionTable::new(max_buffered)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SessionTable<ExtensionStream, Arc<SessionState>>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Refuses, outside the lock, the streams the table gave up.
    fn refuse(mut table: MutexGuard<'_, SessionTable<ExtensionStream, Arc<SessionState>>>) {
        let refused: Vec<_> = std::iter::from_fn(|| table.poll_refused()).collect();
        drop(table);
        for stream in refused {
            stream.refuse(WT_SESSION_GONE);
        }
    }

    /// Sessions requested or open on the connection.
    pub(crate) fn sessions(&self) -> usize {
        self.lock().sessions()
    }

    /// Hands a peer stream to its session, buffers it, or refuses it (see
    /// [`SessionTable::handle_stream`]).
    pub(crate) fn route(&self, stream: ExtensionStream, conn: &Connection) {
        let (ExtensionStream::Uni { session_id, .. } | ExtensionStream::Bidi { session_id, .. }) =
            &stream
        else {
            return drop(stream);
        };
        let id = session_id.into_inner();
        let route = self.lock().handle_stream(id, stream);
        match route {
            Route::Deliver(session, stream) => {
                if let Err(stream) = session.push(stream) {
                    stream.refuse(WT_SESSION_GONE);
                }
            }
            Route::Buffered => {}
            Route::Refuse(stream, code) => stream.refuse(code),
            Route::CloseConnection(code) => conn.close(
                code.to_varint(),
                b"WebTransport session ID is not a client bidirectional stream",
            ),
        }
    }

    /// A CONNECT request for `id` arrived (server) or was sent (client). `false`, and nothing
    /// changes, when `limit` sessions are requested or open already.
    pub(crate) fn request(&self, id: u64, limit: usize) -> bool {
        self.lock().handle_request(id, limit)
    }

    /// The session `id` is established: its buffered streams and those to come go to
    /// `session`'s queues.
    fn open(&self, id: u64, session: &Arc<SessionState>) {
        let mut table = self.lock();
        // Pushed under the table's lock, so that no later stream overtakes them.
        for arrival in table.handle_established(id, session.clone()) {
            // The session has not ended: it is being set up.
            let _ = session.push(arrival);
        }
    }

    /// The session `id` ended or was refused: streams waiting for it, and later ones, get
    /// WT_SESSION_GONE. Idempotent.
    pub(crate) fn close(&self, id: u64) {
        let mut table = self.lock();
        table.handle_close(id);
        Self::refuse(table);
    }

    /// The connection is gone: every waiting stream is refused and every session's queues end.
    pub(crate) fn connection_closed(&self) {
        let mut table = self.lock();
        table.handle_connection_closed();
        Self::refuse(table);
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
