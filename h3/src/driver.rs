//! The async glue of one connection: tasks that move bytes between quinn and
//! [`ConnectionState`].
//!
//! This module owns [`Shared`], the part of a connection that request streams, the client and the
//! server handles share: the state machine behind a `std::sync::Mutex`, the wake-ups, the datagram
//! routes and the count of live request streams. [`start`] spawns the connection's tasks:
//!
//! - the writer, which opens our control stream and writes what the state machine queues for it
//!   whenever it is told to flush, opening our QPACK encoder and decoder streams only when they
//!   first have an instruction to carry (RFC 9204 §4.2);
//! - the unidirectional stream acceptor, with one small reader per peer stream (control, QPACK
//!   encoder, QPACK decoder; extension streams are handed out, others stopped);
//! - the datagram reader, when HTTP datagrams are on, which routes each datagram by its quarter
//!   stream ID.
//!
//! Request streams are not read here: the user's task reads and writes them directly and takes
//! the lock only to QPACK-encode or decode a header section. Any connection error closes the QUIC
//! connection with its code.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::proto::Codec;
use bytes::{Buf, Bytes, BytesMut};
use quay_qpack::Field;
use quay_transport::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::{Notify, mpsc};

use crate::config::Config;
use crate::connection::{ConnectionState, HeaderBlock, ProtocolError, Side, UniStream};
use crate::error::Code;
use crate::proto::datagram::Datagram;
use crate::proto::frame::{FrameError, FrameType};
use crate::proto::settings::{SettingId, SettingsError};
use crate::proto::stream::{StreamType, UniStreamHeader};
use crate::stream::{ConnectionError, ExtensionStream, StreamError};

/// How long a server whose handle and request streams are all gone waits, after its GOAWAY, for
/// the client to close the connection before closing it itself.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// How many datagrams wait per request stream before new ones are dropped.
const DATAGRAM_QUEUE: usize = 256;

/// The state request streams and handles share with the driver tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    pub(crate) config: Config,
    pub(crate) side: Side,
    inner: Mutex<Inner>,
    /// Something changed that waiters re-check: a blocked section was decoded, SETTINGS or
    /// GOAWAY arrived, a request stream ended, or the connection failed.
    pub(crate) changed: Notify,
    /// Our control or QPACK streams have bytes to write.
    flush: Notify,
    pub(crate) extensions:
        tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<Box<ExtensionStream>>>>,
    /// Whether the next header section we send gets a GREASE frame in front (once per
    /// connection, when grease is on).
    grease_frame: AtomicBool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) proto: ConnectionState,
    /// The error we closed the connection with, if any.
    pub(crate) error: Option<ConnectionError>,
    routes: HashMap<u64, mpsc::Sender<Bytes>>,
    /// Live request streams (both halves count as one).
    pub(crate) active: usize,
    /// The user dropped the client or server connection handle.
    pub(crate) handle_gone: bool,
    /// Server: the highest request stream ID accepted.
    pub(crate) max_request_id: Option<u64>,
    /// Server: the handle is gone and the connection waits for the client to close.
    lingering: bool,
    /// Our QPACK encoder stream is open, so header sections may reference the entries its
    /// instructions insert.
    encoder_stream_open: bool,
    /// Extension streams waiting to be taken. Unbounded on purpose: every one is an open QUIC
    /// stream, so the peer's stream limits bound them.
    extension_tx: Option<mpsc::UnboundedSender<Box<ExtensionStream>>>,
}

/// Starts the tasks of a connection. Must be called inside a tokio runtime.
pub(crate) fn start(conn: Connection, config: Config, side: Side) -> Arc<Shared> {
    let seed = RandomState::new().hash_one(conn.stable_id());
    let proto = ConnectionState::new(side, &config, seed);
    let wants_extensions =
        !config.extension_uni_stream_types.is_empty() || !config.extension_bidi_signals.is_empty();
    let (extension_tx, extension_rx) = if wants_extensions {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    if side == Side::Server
        && let Some(max) = config.max_concurrent_requests
    {
        conn.set_max_concurrent_bi_streams(VarInt::from_u32(max));
    }
    let datagrams = config.enable_datagrams;
    let grease = config.grease;
    let shared = Arc::new(Shared {
        conn,
        config,
        side,
        inner: Mutex::new(Inner {
            proto,
            error: None,
            routes: HashMap::new(),
            active: 0,
            handle_gone: false,
            max_request_id: None,
            lingering: false,
            encoder_stream_open: false,
            extension_tx,
        }),
        changed: Notify::new(),
        flush: Notify::new(),
        extensions: tokio::sync::Mutex::new(extension_rx),
        grease_frame: AtomicBool::new(grease),
    });
    tokio::spawn(writer(shared.clone()));
    tokio::spawn(accept_uni(shared.clone()));
    if side == Side::Client {
        tokio::spawn(accept_server_bidi(shared.clone()));
    }
    if datagrams {
        tokio::spawn(read_datagrams(shared.clone()));
    }
    shared
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Closes the connection because of `error`, unless it is already closed.
    pub(crate) fn fail(&self, error: ProtocolError) {
        let code = Code::from(&error);
        {
            let mut inner = self.lock();
            if inner.error.is_some() {
                return;
            }
            tracing::debug!(%error, ?code, "closing the connection");
            inner.error = Some(ConnectionError::Protocol(error.clone()));
        }
        let mut reason = error.to_string();
        // Keep the CONNECTION_CLOSE small; cut on a character boundary.
        let mut cut = reason.len().min(200);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        self.conn.close(code.to_varint(), reason.as_bytes());
        self.changed.notify_waiters();
    }

    /// Closes the connection without an error, unless it is already closed.
    pub(crate) fn close(&self, code: Code, reason: &[u8]) {
        {
            let mut inner = self.lock();
            if inner.error.is_none() {
                inner.error = Some(ConnectionError::LocallyClosed);
            }
        }
        self.conn.close(code.to_varint(), reason);
        self.changed.notify_waiters();
    }

    /// The error to report for a quinn connection error: ours if we closed the connection.
    pub(crate) fn connection_error(
        &self,
        error: quay_transport::ConnectionError,
    ) -> ConnectionError {
        if let Some(ours) = &self.lock().error {
            return ours.clone();
        }
        ConnectionError::from(error)
    }

    /// The connection error, if the connection is closed or closing.
    pub(crate) fn error(&self) -> Option<ConnectionError> {
        if let Some(error) = &self.lock().error {
            return Some(error.clone());
        }
        self.conn.close_reason().map(ConnectionError::from)
    }

    /// Whether to put a GREASE frame before the header section about to be sent: true once per
    /// connection when grease is on (RFC 9114 §7.2.8 allows reserved frames on request streams).
    pub(crate) fn take_grease_frame(&self) -> bool {
        self.grease_frame.load(Ordering::Relaxed)
            && self.grease_frame.swap(false, Ordering::Relaxed)
    }

    /// Tells the writer that our control or QPACK streams have bytes.
    pub(crate) fn flush(&self) {
        self.flush.notify_one();
    }

    /// QPACK-encodes a field section for `stream_id`.
    ///
    /// Our encoder stream is opened the first time the encoder inserts (RFC 9204 §4.2 lets an
    /// endpoint go without one until then); a section that may reference those inserts is held
    /// back until the stream is open, so its instructions can always be sent.
    pub(crate) async fn encode(
        &self,
        stream_id: u64,
        fields: &[Field],
    ) -> Result<Bytes, StreamError> {
        let (section, flush, wait) = {
            let mut inner = self.lock();
            let section = inner.proto.encode_headers(stream_id, fields);
            let wait = inner.proto.encoder_stream_started() && !inner.encoder_stream_open;
            (section, inner.proto.has_output(), wait)
        };
        if flush {
            self.flush();
        }
        if wait {
            self.wait_for(|inner| inner.encoder_stream_open.then_some(()))
                .await?;
        }
        Ok(section)
    }

    /// Waits until `ready` returns a value (it is called again whenever [`Shared::changed`]
    /// fires), or the connection ends.
    async fn wait_for<T>(
        &self,
        mut ready: impl FnMut(&mut Inner) -> Option<T>,
    ) -> Result<T, StreamError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                if let Some(value) = ready(&mut inner) {
                    return Ok(value);
                }
                if let Some(error) = &inner.error {
                    return Err(StreamError::ConnectionLost(error.clone()));
                }
            }
            if let Some(reason) = self.conn.close_reason() {
                return Err(StreamError::ConnectionLost(self.connection_error(reason)));
            }
            notified.await;
        }
    }

    /// QPACK-decodes a field section received on `stream_id`, waiting while it is blocked.
    pub(crate) async fn decode(
        &self,
        stream_id: u64,
        section: Bytes,
    ) -> Result<HeaderBlock, StreamError> {
        let result = {
            let mut inner = self.lock();
            let result = inner.proto.decode_headers(stream_id, section);
            let flush = inner.proto.has_output();
            drop(inner);
            if flush {
                self.flush();
            }
            result
        };
        match result {
            Ok(HeaderBlock::Blocked) => {}
            Ok(block) => return Ok(block),
            Err(error) => {
                self.fail(error);
                return Err(StreamError::ConnectionLost(
                    self.error().unwrap_or(ConnectionError::LocallyClosed),
                ));
            }
        }
        // RFC 9204 §2.2.1: wait for the encoder stream; the driver wakes us.
        let mut cancel = CancelOnDrop {
            shared: self,
            stream_id,
            armed: true,
        };
        let block = self
            .wait_for(|inner| inner.proto.take_unblocked(stream_id))
            .await?;
        cancel.armed = false;
        Ok(block)
    }

    /// Starts routing datagrams for `stream_id` to the returned receiver.
    pub(crate) fn register_datagrams(&self, stream_id: u64) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(DATAGRAM_QUEUE);
        self.lock().routes.insert(stream_id, tx);
        rx
    }

    /// Stops routing datagrams for `stream_id`.
    pub(crate) fn unregister_datagrams(&self, stream_id: u64) {
        self.lock().routes.remove(&stream_id);
    }

    /// A request stream started.
    pub(crate) fn stream_opened(&self) {
        self.lock().active += 1;
    }

    /// A request stream ended (both halves dropped).
    pub(crate) fn stream_closed(self: &Arc<Self>) {
        self.lock().active -= 1;
        self.changed.notify_waiters();
        self.release();
    }

    /// The user dropped the connection handle.
    pub(crate) fn handle_dropped(self: &Arc<Self>) {
        self.lock().handle_gone = true;
        self.release();
    }

    /// Ends the connection once nothing can use it any more. A client closes at once; a server
    /// first sends GOAWAY and lingers until the client closes (or [`LINGER`] passes), so that
    /// the last responses are delivered rather than discarded by the QUIC close.
    fn release(self: &Arc<Self>) {
        if self.side == Side::Client {
            return self.maybe_close();
        }
        let linger = {
            let mut inner = self.lock();
            let linger = inner.active == 0 && inner.handle_gone && !inner.lingering;
            inner.lingering |= linger;
            linger
        };
        if !linger {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.begin_goaway();
                let shared = self.clone();
                runtime.spawn(async move {
                    tokio::select! {
                        _ = shared.conn.closed() => {}
                        () = tokio::time::sleep(LINGER) => {}
                    }
                    shared.close(Code::H3_NO_ERROR, b"");
                });
            }
            // No runtime left to wait on: close now.
            Err(_) => self.close(Code::H3_NO_ERROR, b""),
        }
    }

    /// Server: sends GOAWAY naming the first request stream not accepted (RFC 9114 §5.2).
    pub(crate) fn begin_goaway(&self) {
        {
            let mut inner = self.lock();
            let next = inner.max_request_id.map_or(0, |id| id + 4);
            inner
                .proto
                .send_goaway(VarInt::from_u64(next).unwrap_or(VarInt::MAX));
        }
        self.flush();
    }

    /// Client: closes the connection with H3_NO_ERROR when nothing can use it any more: the
    /// handle is gone, or the server sent GOAWAY, and no request stream is live.
    pub(crate) fn maybe_close(&self) {
        if self.side != Side::Client {
            return;
        }
        let close = {
            let inner = self.lock();
            inner.active == 0 && (inner.handle_gone || inner.proto.goaway_received().is_some())
        };
        if close {
            self.close(Code::H3_NO_ERROR, b"");
        }
    }
}

/// Cancels a blocked field section (RFC 9204 §4.4.2) if its waiter goes away.
struct CancelOnDrop<'a> {
    shared: &'a Shared,
    stream_id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let flush = {
                let mut inner = self.shared.lock();
                inner.proto.cancel_stream(self.stream_id);
                inner.proto.has_output()
            };
            if flush {
                self.shared.flush();
            }
        }
    }
}

/// Opens our control stream, then writes what the state machine queues for it and, opening
/// them when they first have bytes, for our QPACK streams.
async fn writer(shared: Arc<Shared>) {
    let result = async {
        let mut control = shared.conn.open_uni().await?;
        let mut encoder = None;
        let mut decoder = None;
        let _ = control.set_priority(1);
        if shared.config.grease {
            tokio::spawn(grease_stream(shared.conn.clone()));
        }
        loop {
            let notified = shared.flush.notified();
            let (c, e, d) = {
                let mut inner = shared.lock();
                (
                    inner.proto.poll_control(),
                    inner.proto.poll_encoder(),
                    inner.proto.poll_decoder(),
                )
            };
            if c.is_none() && e.is_none() && d.is_none() {
                tokio::select! {
                    () = notified => continue,
                    _ = shared.conn.closed() => return Ok(()),
                }
            }
            if let Some(bytes) = e {
                let stream = match &mut encoder {
                    Some(stream) => stream,
                    None => {
                        let stream = shared.conn.open_uni().await?;
                        // QPACK instructions unblock header sections: send them before request
                        // data.
                        let _ = stream.set_priority(1);
                        shared.lock().encoder_stream_open = true;
                        shared.changed.notify_waiters();
                        encoder.insert(stream)
                    }
                };
                write(stream, bytes).await?;
            }
            if let Some(bytes) = c {
                write(&mut control, bytes).await?;
            }
            if let Some(bytes) = d {
                let stream = match &mut decoder {
                    Some(stream) => stream,
                    None => decoder.insert(shared.conn.open_uni().await?),
                };
                write(stream, bytes).await?;
            }
        }
    }
    .await;
    if let Err(error) = result {
        match error {
            quay_transport::WriteError::ConnectionLost(_) => {}
            // RFC 9114 §6.2.1: the peer stopped one of our critical streams.
            _ => shared.fail(ProtocolError::ClosedCriticalStream(StreamType::CONTROL)),
        }
    }
}

/// Opens a unidirectional stream of a reserved type with a few bytes on it, which the peer must
/// ignore (RFC 9114 §6.2.3).
async fn grease_stream(conn: Connection) {
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    let n = RandomState::new().hash_one(conn.stable_id()) % 1000;
    let mut bytes = BytesMut::new();
    UniStreamHeader::grease(n).encode(&mut bytes);
    bytes.extend_from_slice(b"quay");
    if stream.write_chunk(bytes.freeze()).await.is_ok() {
        let _ = stream.finish();
    }
}

async fn write(stream: &mut SendStream, bytes: Bytes) -> Result<(), quay_transport::WriteError> {
    stream.write_chunk(bytes).await
}

/// Accepts the peer's unidirectional streams and starts a reader for each.
async fn accept_uni(shared: Arc<Shared>) {
    while let Ok(stream) = shared.conn.accept_uni().await {
        tokio::spawn(uni_stream(shared.clone(), stream));
    }
}

/// Clients: the server may open bidirectional streams only for an extension (RFC 9114 §6.1);
/// such streams start with a configured signal and are handed out.
async fn accept_server_bidi(shared: Arc<Shared>) {
    while let Ok((send, mut recv)) = shared.conn.accept_bi().await {
        let signals = &shared.config.extension_bidi_signals;
        if signals.is_empty() {
            return shared.fail(ProtocolError::StreamCreation(
                "server-initiated bidirectional stream",
            ));
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let signals = &shared.config.extension_bidi_signals;
            let prefix = read_prefix(&mut recv, Bytes::new(), |cur| {
                decode_bidi_signal(signals, cur)
            })
            .await;
            match prefix {
                Ok(Some((Some((signal, session_id)), buffered))) => hand_out(
                    &shared,
                    ExtensionStream::Bidi {
                        signal,
                        session_id,
                        send,
                        recv,
                        buffered,
                    },
                ),
                Ok(Some((None, _))) => shared.fail(ProtocolError::StreamCreation(
                    "server-initiated bidirectional stream without an extension signal",
                )),
                Ok(None) | Err(_) => {}
            }
        });
    }
}

/// Decodes the extension signal and session ID that may start a bidirectional stream:
/// `Some(Some(_))` for one of `signals` (both consumed), `Some(None)` for anything else (nothing
/// consumed, so a request's first frame stays in place), `None` when more bytes are needed.
pub(crate) fn decode_bidi_signal(
    signals: &[FrameType],
    cur: &mut &[u8],
) -> Option<Option<(FrameType, VarInt)>> {
    let mut look = *cur;
    let ty = FrameType::decode(&mut look).ok()?;
    if !signals.contains(&ty) {
        return Some(None);
    }
    let session_id = VarInt::decode(&mut look).ok()?;
    *cur = look;
    Some(Some((ty, session_id)))
}

/// Reads a varint-prefixed header from the start of a stream; returns it and the bytes after it.
pub(crate) async fn read_prefix<T>(
    recv: &mut RecvStream,
    initial: Bytes,
    decode: impl Fn(&mut &[u8]) -> Option<T>,
) -> Result<Option<(T, Bytes)>, quay_transport::ReadError> {
    let mut buf = BytesMut::from(initial);
    loop {
        let mut cur = &buf[..];
        if let Some(value) = decode(&mut cur) {
            let used = buf.len() - cur.len();
            buf.advance(used);
            return Ok(Some((value, buf.freeze())));
        }
        match recv.read_chunk(usize::MAX, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => return Ok(None),
        }
    }
}

async fn uni_stream(shared: Arc<Shared>, mut recv: RecvStream) {
    let Ok(Some((header, rest))) = read_prefix(&mut recv, Bytes::new(), |cur| {
        UniStreamHeader::decode(cur).ok()
    })
    .await
    else {
        return;
    };
    let kind = shared.lock().proto.handle_uni_stream(header);
    let kind = match kind {
        Ok(kind) => kind,
        Err(error) => return shared.fail(error),
    };
    match kind {
        UniStream::Discard => {
            // RFC 9114 §6.2: unknown stream types are not read.
            let _ = recv.stop(Code::H3_STREAM_CREATION_ERROR.to_varint());
        }
        UniStream::Extension(ty) => {
            let (session_id, rest) = match header {
                UniStreamHeader::WebTransport { session_id } => (session_id, rest),
                _ => {
                    // Other extension types carry a session ID varint after the type.
                    let Ok(Some(prefix)) =
                        read_prefix(&mut recv, rest, |cur| VarInt::decode(cur).ok()).await
                    else {
                        return;
                    };
                    prefix
                }
            };
            hand_out(
                &shared,
                ExtensionStream::Uni {
                    ty,
                    session_id,
                    recv,
                    buffered: rest,
                },
            );
        }
        UniStream::Control | UniStream::Encoder | UniStream::Decoder => {
            critical_stream(&shared, kind, recv, rest).await;
        }
    }
}

pub(crate) fn hand_out(shared: &Shared, stream: ExtensionStream) {
    let tx = shared.lock().extension_tx.clone();
    let refused = match tx {
        // Boxed: the channel's first block then takes 256 bytes, not 3.5 KiB.
        Some(tx) => tx.send(Box::new(stream)).err().map(|e| *e.0),
        None => Some(stream),
    };
    if let Some(stream) = refused {
        stream.refuse(Code::H3_STREAM_CREATION_ERROR);
    }
}

/// Reads one of the peer's critical streams into the state machine until it ends.
async fn critical_stream(shared: &Shared, kind: UniStream, mut recv: RecvStream, first: Bytes) {
    if !first.is_empty() && !feed(shared, kind, first) {
        return;
    }
    loop {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                if !feed(shared, kind, chunk.bytes) {
                    return;
                }
            }
            // RFC 9114 §6.2.1, RFC 9204 §4.2: closing a critical stream is a connection error.
            Ok(None) | Err(quay_transport::ReadError::Reset(_)) => {
                let error = shared.lock().proto.handle_critical_end(kind);
                return shared.fail(error);
            }
            Err(_) => return,
        }
    }
}

/// Feeds a chunk of a critical stream; returns false once the connection failed.
fn feed(shared: &Shared, kind: UniStream, chunk: Bytes) -> bool {
    let (result, flush, changed) = {
        let mut inner = shared.lock();
        let before = (
            inner.proto.peer_settings().is_some(),
            inner.proto.goaway_received(),
        );
        let result = match kind {
            UniStream::Control => inner.proto.handle_control(chunk).map(|()| false),
            UniStream::Encoder => inner.proto.handle_encoder_stream(&chunk),
            _ => inner.proto.handle_decoder_stream(&chunk).map(|()| false),
        };
        let after = (
            inner.proto.peer_settings().is_some(),
            inner.proto.goaway_received(),
        );
        let changed = matches!(result, Ok(true)) || before != after;
        // RFC 9297 §2.1.1: H3_DATAGRAM without QUIC datagrams (RFC 9221) is a settings error.
        let result = match result {
            Ok(_)
                if before.0 != after.0
                    && shared.config.enable_datagrams
                    && inner.proto.peer_settings().is_some_and(|s| s.h3_datagram())
                    && shared.conn.max_datagram_size().is_none() =>
            {
                Err(ProtocolError::Frame(FrameError::Settings(
                    SettingsError::InvalidValue {
                        id: SettingId::H3_DATAGRAM,
                        value: VarInt::from_u32(1),
                    },
                )))
            }
            other => other,
        };
        (result, inner.proto.has_output(), changed)
    };
    if flush {
        shared.flush();
    }
    if let Err(error) = result {
        shared.fail(error);
        return false;
    }
    if changed {
        shared.changed.notify_waiters();
        shared.maybe_close();
    }
    true
}

/// Routes HTTP datagrams to the request streams that registered for them (RFC 9297 §2.1).
async fn read_datagrams(shared: Arc<Shared>) {
    while let Ok(datagram) = shared.conn.read_datagram().await {
        match Datagram::decode(datagram) {
            Ok(datagram) => {
                let route = shared
                    .lock()
                    .routes
                    .get(&datagram.stream_id.into_inner())
                    .cloned();
                // Datagrams for unknown streams, or beyond a full queue, are dropped (RFC 9297
                // §2.1 allows buffering a few; we keep none).
                if let Some(route) = route {
                    let _ = route.try_send(datagram.payload);
                }
            }
            Err(error) => {
                shared.fail(error.into());
                break;
            }
        }
    }
    // The connection is gone: every receiver sees the end.
    shared.lock().routes.clear();
}
