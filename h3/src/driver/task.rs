//! The connection's one task: it moves bytes between quinn and [`ConnectionState`].
//!
//! [`start`] makes the connection's [`Shared`], opens our control stream and writes our SETTINGS
//! on it at once (`open_control_now`), and spawns `drive`, a hand-written poll loop (no task per
//! stream, no `select!`) that:
//!
//! - writes what the state machine queues for our control stream (whoever queues
//!   bytes wakes it, see [`Inner::flush_waker`]), and opens our QPACK encoder and decoder
//!   streams only when they first have an instruction to carry (RFC 9204 §4.2); a header
//!   section that may reference new dynamic table entries waits in [`Shared::encode`] until
//!   the encoder stream is open;
//! - accepts the peer's unidirectional streams and reads their types, then reads the control
//!   and QPACK streams into the state machine, hands extension streams out and stops the rest;
//! - on a client, reads the extension signal of the server's bidirectional streams and hands
//!   them out;
//! - on a server with a [`Handler`], accepts the request streams and gives them, and the
//!   extension streams, to the handler, which it polls at the end of each wake-up
//!   (`Shared::begin_poll` and `Shared::end_poll` take it out and put it back).
//!
//! The task ends with the connection. On one connection in eight it also sends a GREASE stream,
//! right after its SETTINGS. Request streams are not read here: the user's task reads and writes
//! them directly and takes the lock only to QPACK-encode or decode a header section.
//!
//! This module keeps the task, what it holds between wake-ups, and the writing and opening of
//! our streams; reading the peer's streams (prefixes, routing, the critical streams) is
//! [`read`]'s.

mod read;

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, RandomState};
use std::ops::ControlFlow;
use std::pin::{Pin, pin};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use quay_transport::{Connection, RecvStream, SendStream, VarInt, quinn};
use tokio::sync::Notify;

use super::grease::{send_grease_stream, sends_grease_stream};
use super::routes::DatagramRoutes;
use super::shared::{BUDGET, Inner, Shared, Taker};
use crate::config::Config;
use crate::connection::{ConnectionState, Side, UniStream};
use crate::qlog::StreamKind;
use crate::server::connection::admit;
use crate::server::{Handler, HandlerSlot};
use crate::waiter::Waiters;

/// Starts the tasks of a connection. Must be called inside a tokio runtime.
/// `handshake` is how long the QUIC handshake took, and `odcid` the client's original destination
/// connection ID, when the caller saw them (a server that accepted the connection).
pub(crate) fn start(
    conn: Connection,
    config: Config,
    side: Side,
    handshake: Option<Duration>,
    odcid: Option<quinn::ConnectionId>,
    qlog: Option<quay_transport::Qlog>,
) -> Arc<Shared> {
    // RUST_LOG can follow one connection: its events carry these fields.
    let span = tracing::debug_span!(
        "h3",
        side = ?side,
        conn = conn.stable_id(),
        peer = %super::shared::canonical(conn.remote_address()),
        odcid = odcid.map(tracing::field::display),
    );
    let seed = RandomState::new().hash_one(conn.stable_id());
    let mut proto = ConnectionState::new(side, &config, seed);
    proto.set_quic_datagrams(conn.max_datagram_size().is_some());
    if qlog.is_some() {
        proto.record_table_events();
    }
    let wants_extensions =
        !config.extension_uni_stream_types.is_empty() || !config.extension_bidi_signals.is_empty();
    if side == Side::Server
        && let Some(max) = config.max_concurrent_requests
    {
        conn.set_max_concurrent_bi_streams(VarInt::from_u32(max));
    }
    let grease = config.grease;
    let shared = Arc::new(Shared {
        conn,
        config: config.connection_config(),
        side,
        inner: Mutex::new(Inner {
            proto,
            error: None,
            datagrams: DatagramRoutes::default(),
            encoder_stream_open: false,
            extensions: VecDeque::new(),
            extension_taker: if wants_extensions {
                Taker::Handle
            } else {
                Taker::Nobody
            },
            driver_waiters: Waiters::default(),
            extension_waiters: Waiters::default(),
            handler: HandlerSlot::default(),
            serving: false,
        }),
        changed: Notify::new(),
        grease_frame: AtomicBool::new(grease),
        grease_stream: grease && sends_grease_stream(seed),
        handshake,
        span: (!span.is_disabled()).then(|| Box::new(span)),
        qlog,
    });
    crate::metrics::connection_opened(side, handshake);
    let control = open_control_now(&shared);
    // Not instrumented: the span would ride in every idle connection's task; events carry it
    // as their parent instead (`Shared::span`).
    tokio::spawn(drive(shared.clone(), control));
    shared
}

/// Opens our control stream and writes its first bytes (its type, our SETTINGS, a GREASE frame)
/// as the connection starts, rather than on the first poll of the connection's task, a
/// scheduling round later; the GREASE stream follows at once if they were all written. Returns
/// the stream with what is left to write, or `None` when quinn cannot open it at once (the task
/// then opens it as it opens the QPACK streams).
///
/// Written this early, our SETTINGS leave in the packets quinn sends as the handshake
/// completes. Measured with the WebTransport bench's `cost` (2,000 sessions, two runs of 5):
/// 29.5 and 29.6 UDP datagrams per session, against 29.8-29.9 when the task wrote them.
fn open_control_now(shared: &Shared) -> Option<Box<Ours>> {
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(mut stream)) = pin!(shared.conn.open_uni()).poll(&mut cx) else {
        return None;
    };
    let mut pending = shared.lock().proto.poll_control().unwrap_or_default();
    control_opened(shared, &stream, &pending);
    if let Poll::Ready(Ok(written)) = Pin::new(&mut stream).poll_write(&mut cx, &pending) {
        pending.advance(written);
    }
    if pending.is_empty() {
        pending = Bytes::new();
        if shared.grease_stream {
            send_grease_stream(&shared.conn);
        }
    }
    Some(Box::new(Ours {
        stream: Some(stream),
        pending,
    }))
}

/// Our control stream is open, with `queued` its first bytes: its priority, and its qlog events
/// (its type, those bytes, our SETTINGS).
fn control_opened(shared: &Shared, stream: &SendStream, queued: &Bytes) {
    if let Some(qlog) = &shared.qlog {
        let id = u64::from(stream.id());
        crate::qlog::stream_type_set(qlog, true, id, StreamKind::Known(UniStream::Control));
        // The stream's first bytes: its type, our SETTINGS and what followed (a GREASE frame,
        // a GOAWAY).
        crate::qlog::control_bytes_sent(qlog, id, queued.clone(), true);
        let inner = shared.lock();
        crate::qlog::parameters_set(qlog, true, inner.proto.local_settings());
    }
    let _ = stream.set_priority(1);
}

/// Our streams, in the order their bytes are written: QPACK instructions unblock header
/// sections, so they go first.
const OURS: [UniStream; 3] = [UniStream::Encoder, UniStream::Control, UniStream::Decoder];

/// What the connection's task keeps between wake-ups, apart from the peer's next
/// unidirectional stream it waits for.
#[derive(Default)]
struct Driver<'a> {
    /// A client's wait for the server's next bidirectional stream (extensions only).
    accept_bi: Option<Pin<Box<quinn::AcceptBi<'a>>>>,
    /// One of our streams being opened, and which: its index in [`OURS`] (a byte, where a
    /// `UniStream` would take eight more and the task the next size step).
    opening: Option<(u8, Pin<Box<quinn::OpenUni<'a>>>)>,
    /// Our control stream, once open.
    control: Ours,
    /// The peer's control stream, once identified.
    peer_control: Option<RecvStream>,
    /// The QPACK streams both ways, allocated when the first one is needed: a connection whose
    /// header sections use only the static table never opens them.
    qpack: Option<Box<QpackStreams>>,
    /// Peer streams whose type (unidirectional) or extension signal (bidirectional, clients
    /// only) has not arrived whole yet. Usually empty: the type comes in the first packet.
    incoming: Vec<Incoming>,
    /// Our GREASE stream is to be sent once our control stream's first bytes are written.
    grease_due: bool,
}

/// Our QPACK streams and the peer's.
#[derive(Default)]
struct QpackStreams {
    encoder: Ours,
    decoder: Ours,
    peer_encoder: Option<RecvStream>,
    peer_decoder: Option<RecvStream>,
}

/// One of our streams.
#[derive(Default)]
struct Ours {
    stream: Option<SendStream>,
    /// Bytes taken from the state machine and not written yet.
    pending: Bytes,
}

/// A peer stream whose prefix is being read.
struct Incoming {
    recv: RecvStream,
    /// The sending half of a bidirectional stream.
    send: Option<SendStream>,
    buf: BytesMut,
}

/// The connection's one task. It opens our control stream and writes what the state machine
/// queues for it, opening our QPACK streams when they first have bytes; accepts the peer's
/// unidirectional streams and reads their types, then reads the critical ones into the state
/// machine, hands out extension streams and stops the rest; on a client, does the same for the
/// server's extension bidirectional streams; on a server with a [`Handler`], accepts the request
/// streams for it. It ends with the connection.
///
/// Everything is polled by hand from one future, so an idle connection costs one small task
/// rather than one per stream; futures that are rarely pending, or exist on some connections
/// only, are boxed. The future is kept at 280 bytes at most, in tokio's 384-byte task step:
/// flushes wake it through a waker in the shared state, it is a function returning an `async
/// move` block (rustc keeps an async fn's arguments twice), its poll closure holds three
/// references, and the stream being opened is named by its index in [`OURS`]. Our control
/// stream, opened before the task starts, comes in boxed: one word.
#[allow(clippy::manual_async_fn)] // On purpose: see above.
fn drive(
    shared: Arc<Shared>,
    control: Option<Box<Ours>>,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        {
            let shared = &shared;
            let conn = &shared.conn;
            let mut driver = Driver {
                accept_bi: (shared.side == Side::Client).then(|| Box::pin(conn.accept_bi())),
                ..Driver::default()
            };
            // Opened by `open_control_now`; the GREASE stream is still due if bytes are left.
            if let Some(control) = control {
                driver.grease_due = !control.pending.is_empty() && shared.grease_stream;
                driver.control = *control;
            }
            let driver = &mut driver;
            let mut accept_uni = pin!(conn.accept_uni());
            // `move`: the closure keeps three references, not one per local it uses.
            poll_fn(move |cx| {
                let mut handler = shared.begin_poll(cx);
                let polled = driver.poll(cx, shared, accept_uni.as_mut(), handler.as_deref_mut());
                if let Some(handler) = handler {
                    shared.end_poll(handler, cx);
                }
                polled
            })
            .await;
        }
        // The connection is gone: every datagram receiver sees the end, and so does every
        // `wait_for` (it reads the close reason when woken), and a handler.
        shared.end_datagrams();
        shared.end_handler();
        shared.changed.notify_waiters();
        crate::metrics::connection_closed(shared.side, &shared.conn.stats());
    }
}

impl<'a> Driver<'a> {
    /// One wake-up of the connection's task; `Ready` once the connection is gone or failed.
    /// `handler`, a server's, takes the request streams (which the task then accepts).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Arc<Shared>,
        mut accept_uni: Pin<&mut quinn::AcceptUni<'a>>,
        handler: Option<&mut dyn Handler>,
    ) -> Poll<()> {
        let conn = &shared.conn;
        let mut busy = false;
        let mut budget = BUDGET;
        loop {
            match accept_uni.as_mut().poll(cx) {
                Poll::Ready(Ok(recv)) => {
                    accept_uni.set(conn.accept_uni());
                    self.incoming.push(Incoming {
                        recv,
                        send: None,
                        buf: BytesMut::new(),
                    });
                }
                // The connection is gone.
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => break,
            }
            budget -= 1;
            if budget == 0 {
                busy = true;
                break;
            }
        }
        match (shared.side, handler) {
            (Side::Client, _) => match self.accept_extension_bidi(cx, shared) {
                ControlFlow::Break(()) => return Poll::Ready(()),
                ControlFlow::Continue(more) => busy |= more,
            },
            (Side::Server, Some(handler)) => match self.accept_requests(cx, shared, handler) {
                ControlFlow::Break(()) => return Poll::Ready(()),
                ControlFlow::Continue(more) => busy |= more,
            },
            (Side::Server, None) => {}
        }
        if self.read_incoming(cx, shared).is_break() {
            return Poll::Ready(());
        }
        match self.read_critical(cx, shared) {
            ControlFlow::Break(()) => return Poll::Ready(()),
            ControlFlow::Continue(more) => busy |= more,
        }
        if self.write(cx, shared).is_break() {
            return Poll::Ready(());
        }
        if let Some((index, open)) = &mut self.opening
            && let Poll::Ready(result) = open.as_mut().poll(cx)
        {
            let Ok(stream) = result else {
                return Poll::Ready(());
            };
            let kind = OURS[usize::from(*index)];
            self.opening = None;
            self.opened(shared, kind, stream);
            // Write to it, and open the next one if needed.
            busy = true;
        }
        if busy {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// A client's: accepts the server's bidirectional streams, which only an extension opens,
    /// for [`Driver::read_incoming`] to read their signal. Breaks once the connection is gone
    /// or failed; continues with whether the budget ran out.
    fn accept_extension_bidi(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Shared,
    ) -> ControlFlow<(), bool> {
        let Some(accept) = &mut self.accept_bi else {
            return ControlFlow::Continue(false);
        };
        let incoming = &mut self.incoming;
        accept_bidi(accept, cx, shared, |send, recv| {
            // RFC 9114 §6.1: a server opens bidirectional streams only for an extension.
            if shared.config.extension_bidi_signals.is_empty() {
                let refused = shared.lock().proto.handle_peer_bidi_stream(false);
                if let Err(error) = refused {
                    shared.fail(error);
                    return ControlFlow::Break(());
                }
            }
            incoming.push(Incoming {
                recv,
                send: Some(send),
                buf: BytesMut::new(),
            });
            ControlFlow::Continue(())
        })
    }

    /// A server's with a handler: accepts the client's request streams and gives them to
    /// `handler` (or to their extension, see [`admit`]). Breaks once the connection is gone;
    /// continues with whether the budget ran out.
    fn accept_requests(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Arc<Shared>,
        handler: &mut dyn Handler,
    ) -> ControlFlow<(), bool> {
        let accept = self
            .accept_bi
            .get_or_insert_with(|| Box::pin(shared.conn.accept_bi()));
        accept_bidi(accept, cx, shared, |send, recv| {
            if let Some(request) = admit(shared, send, recv) {
                handler.request(request);
            }
            ControlFlow::Continue(())
        })
    }

    /// Writes what the state machine queued for our streams; starts opening a stream that
    /// has bytes and is not open yet. Breaks once the connection is gone or failed.
    fn write(&mut self, cx: &mut Context<'_>, shared: &'a Shared) -> ControlFlow<()> {
        let idle = |ours: Option<&mut Ours>| ours.is_none_or(|ours| ours.pending.is_empty());
        if OURS.into_iter().any(|kind| idle(self.ours(kind))) {
            let mut inner = shared.lock();
            for kind in OURS {
                if idle(self.ours(kind)) {
                    let bytes = match kind {
                        UniStream::Encoder => inner.proto.poll_encoder(),
                        UniStream::Control => inner.proto.poll_control(),
                        _ => inner.proto.poll_decoder(),
                    };
                    if let Some(bytes) = bytes {
                        // Logged once the stream is open (see `opened`), whose ID they need.
                        if let (Some(qlog), UniStream::Control, Some(stream)) =
                            (&shared.qlog, kind, &self.control.stream)
                        {
                            let id = u64::from(stream.id());
                            crate::qlog::control_bytes_sent(qlog, id, bytes.clone(), false);
                        }
                        self.ours_or_new(kind).pending = bytes;
                    }
                }
            }
        }
        let mut to_open = None;
        let mut control_written = false;
        for (index, kind) in (0u8..).zip(OURS) {
            let Some(ours) = self.ours(kind) else {
                continue;
            };
            if ours.pending.is_empty() {
                continue;
            }
            let Some(stream) = &mut ours.stream else {
                to_open = to_open.or(Some(index));
                continue;
            };
            while !ours.pending.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, &ours.pending) {
                    Poll::Ready(Ok(written)) => {
                        ours.pending.advance(written);
                        if ours.pending.is_empty() {
                            // Free the buffer rather than keep it behind an empty slice.
                            ours.pending = Bytes::new();
                        }
                    }
                    Poll::Ready(Err(quay_transport::WriteError::ConnectionLost(_))) => {
                        return ControlFlow::Break(());
                    }
                    // RFC 9114 §6.2.1: the peer stopped one of our critical streams.
                    Poll::Ready(Err(_)) => {
                        let error = shared.lock().proto.handle_critical_end(kind);
                        shared.fail(error);
                        return ControlFlow::Break(());
                    }
                    Poll::Pending => break,
                }
            }
            control_written |= kind == UniStream::Control && ours.pending.is_empty();
        }
        if control_written && std::mem::take(&mut self.grease_due) {
            send_grease_stream(&shared.conn);
        }
        if self.opening.is_none()
            && let Some(index) = to_open
        {
            self.opening = Some((index, Box::pin(shared.conn.open_uni())));
        }
        ControlFlow::Continue(())
    }

    /// One of our streams is open.
    fn opened(&mut self, shared: &Shared, kind: UniStream, stream: SendStream) {
        if kind == UniStream::Control {
            // Its first bytes were queued before it opened.
            control_opened(shared, &stream, &self.control.pending);
            self.grease_due = shared.grease_stream;
        } else if let Some(qlog) = &shared.qlog {
            let id = u64::from(stream.id());
            crate::qlog::stream_type_set(qlog, true, id, StreamKind::Known(kind));
        }
        if kind == UniStream::Encoder {
            // QPACK instructions unblock header sections: send them before request data.
            let _ = stream.set_priority(1);
            shared.lock().encoder_stream_open = true;
            shared.changed.notify_waiters();
        }
        self.ours_or_new(kind).stream = Some(stream);
    }

    /// Our stream of `kind` (control, encoder or decoder), if it has been needed.
    fn ours(&mut self, kind: UniStream) -> Option<&mut Ours> {
        match (kind, &mut self.qpack) {
            (UniStream::Control, _) => Some(&mut self.control),
            (UniStream::Encoder, Some(qpack)) => Some(&mut qpack.encoder),
            (_, Some(qpack)) => Some(&mut qpack.decoder),
            (_, None) => None,
        }
    }

    /// Our stream of `kind`, allocating the QPACK streams if needed.
    fn ours_or_new(&mut self, kind: UniStream) -> &mut Ours {
        match kind {
            UniStream::Control => &mut self.control,
            UniStream::Encoder => &mut self.qpack.get_or_insert_default().encoder,
            _ => &mut self.qpack.get_or_insert_default().decoder,
        }
    }
}

/// Accepts the peer's bidirectional streams with `accept`, at most [`BUDGET`] of them, giving each
/// to `take`. Breaks once the connection is gone or `take` breaks; continues with whether the
/// budget ran out.
fn accept_bidi<'a>(
    accept: &mut Pin<Box<quinn::AcceptBi<'a>>>,
    cx: &mut Context<'_>,
    shared: &'a Shared,
    mut take: impl FnMut(SendStream, RecvStream) -> ControlFlow<()>,
) -> ControlFlow<(), bool> {
    for _ in 0..BUDGET {
        let Poll::Ready(result) = accept.as_mut().poll(cx) else {
            return ControlFlow::Continue(false);
        };
        let Ok((send, recv)) = result else {
            return ControlFlow::Break(());
        };
        accept.set(shared.conn.accept_bi());
        take(send, recv)?;
    }
    ControlFlow::Continue(true)
}
