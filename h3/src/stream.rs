//! Request stream halves, extension streams, and the errors of the connection layer.
//!
//! This module owns [`SendHalf`] and [`RecvHalf`], the two directions of a request stream that
//! [`client::RequestStream`](crate::client::RequestStream) and
//! [`server::RequestStream`](crate::server::RequestStream) are made of: frames are written and
//! read directly on the quinn streams in the caller's task, with no task or channel in between;
//! the connection lock is taken only to QPACK-encode or decode a header section. It also owns
//! [`ExtensionStream`] (streams handed to an extension such as WebTransport) and the public errors
//! [`ConnectionError`] and [`StreamError`].
//!
//! It does not own the message rules ([`crate::proto::headers`], [`crate::proto::message`]) or
//! the connection state ([`crate::connection`]).

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use crate::proto::Codec;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use quay_qpack::Field;
use quay_transport::{RecvStream, SendStream, VarInt};

use crate::connection::{HeaderBlock, ProtocolError, Side};
use crate::driver::Shared;
use crate::error::Code;
use crate::proto::capsule::{Capsule, CapsuleError, CapsuleReader};
use crate::proto::datagram::Datagram;
use crate::proto::frame::{Frame, FrameHeader, FrameType};
use crate::proto::headers::{self, MessageError};
use crate::proto::stream::StreamType;
use crate::request::{RecvError, RecvEvent, RequestState};

/// Why an HTTP/3 connection ended.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the protocol; we closed the connection with [`ProtocolError`]'s code.
    #[error("protocol error (closed with {code}): {0}", code = Code::from(.0))]
    Protocol(ProtocolError),
    /// The peer closed the connection with an HTTP/3 error code (H3_NO_ERROR for a normal
    /// close).
    #[error("peer closed the connection with {code}: {reason}")]
    PeerClosed {
        /// The code.
        code: Code,
        /// The reason phrase, lossily decoded.
        reason: String,
    },
    /// We closed the connection (the handle was dropped, or a graceful shutdown ended).
    #[error("connection closed locally")]
    LocallyClosed,
    /// QUIC or TLS ended the connection (timeout, reset, handshake failure, ...).
    #[error(transparent)]
    Transport(quay_transport::ConnectionError),
}

impl From<quay_transport::ConnectionError> for ConnectionError {
    fn from(error: quay_transport::ConnectionError) -> Self {
        match error {
            quay_transport::ConnectionError::ApplicationClosed(close) => Self::PeerClosed {
                code: Code::from_varint(close.error_code),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            quay_transport::ConnectionError::LocallyClosed => Self::LocallyClosed,
            other => Self::Transport(other),
        }
    }
}

impl From<ConnectionError> for io::Error {
    fn from(error: ConnectionError) -> Self {
        let kind = match &error {
            ConnectionError::Protocol(_) => io::ErrorKind::InvalidData,
            ConnectionError::Transport(quay_transport::ConnectionError::TimedOut) => {
                io::ErrorKind::TimedOut
            }
            _ => io::ErrorKind::ConnectionAborted,
        };
        Self::new(kind, error)
    }
}

/// Why an operation on one request stream failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    /// The peer reset the stream (RESET_STREAM) with this code. H3_REQUEST_REJECTED means the
    /// server did not process the request, which may be retried.
    #[error("stream reset by the peer with {0}")]
    Reset(Code),
    /// The peer stopped reading (STOP_SENDING) with this code.
    #[error("peer stopped reading with {0}")]
    Stopped(Code),
    /// The message is malformed: received (the stream was reset with H3_MESSAGE_ERROR) or about
    /// to be sent (nothing was sent).
    #[error("malformed message: {0}")]
    Message(#[from] MessageError),
    /// A received field section is over our SETTINGS_MAX_FIELD_SECTION_SIZE (the stream was
    /// reset with H3_EXCESSIVE_LOAD), or one to send is over the peer's (nothing was sent).
    #[error("field section too large")]
    HeadersTooLarge,
    /// A capsule was malformed or too large; the stream was reset with its code.
    #[error("capsule: {0}")]
    Capsule(#[from] CapsuleError),
    /// The stream ended before the message head.
    #[error("stream ended before the message head")]
    Incomplete,
    /// The server sent GOAWAY: this request was not sent, or will not be processed. It may be
    /// retried on a new connection.
    #[error("the server is going away; request not sent")]
    GoingAway,
    /// The operation does not fit the stream's state (data after trailers, a second response,
    /// ...), or the stream was already finished or reset.
    #[error("invalid use: {0}")]
    Invalid(&'static str),
    /// The peer or our configuration does not allow this (Extended CONNECT or datagrams not
    /// enabled on both sides).
    #[error("not negotiated: {0}")]
    NotNegotiated(&'static str),
}

impl StreamError {
    /// Whether the request was certainly not processed by the server and may be retried
    /// (GOAWAY, or a reset with H3_REQUEST_REJECTED; RFC 9114 §4.1.1).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::GoingAway | Self::Reset(Code::H3_REQUEST_REJECTED)
        )
    }
}

impl From<StreamError> for io::Error {
    fn from(error: StreamError) -> Self {
        let kind = match &error {
            StreamError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            StreamError::Reset(_) | StreamError::Stopped(_) => io::ErrorKind::ConnectionReset,
            StreamError::Message(_)
            | StreamError::HeadersTooLarge
            | StreamError::Capsule(_)
            | StreamError::Incomplete => io::ErrorKind::InvalidData,
            StreamError::GoingAway => io::ErrorKind::ConnectionRefused,
            StreamError::Invalid(_) | StreamError::NotNegotiated(_) => io::ErrorKind::InvalidInput,
        };
        Self::new(kind, error)
    }
}

/// A stream claimed by an extension (for instance WebTransport): its type or signal and the
/// session ID after it have been read; the rest is the extension's.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExtensionStream {
    /// A unidirectional stream of a type in
    /// [`Config::extension_uni_stream_types`](crate::Config::extension_uni_stream_types).
    Uni {
        /// The stream type.
        ty: StreamType,
        /// The varint after the type.
        session_id: VarInt,
        /// The stream.
        recv: RecvStream,
        /// Bytes already read past the session ID; they come before anything read from `recv`.
        buffered: Bytes,
    },
    /// A bidirectional stream that started with a signal in
    /// [`Config::extension_bidi_signals`](crate::Config::extension_bidi_signals).
    Bidi {
        /// The signal.
        signal: FrameType,
        /// The varint after the signal.
        session_id: VarInt,
        /// The sending side.
        send: SendStream,
        /// The receiving side.
        recv: RecvStream,
        /// Bytes already read past the session ID; they come before anything read from `recv`.
        buffered: Bytes,
    },
}

impl ExtensionStream {
    /// Refuses the stream with `code`: stops reading it, and resets a bidirectional stream's
    /// sending side.
    pub fn refuse(self, code: Code) {
        match self {
            Self::Uni { mut recv, .. } => {
                let _ = recv.stop(code.to_varint());
            }
            Self::Bidi {
                mut send, mut recv, ..
            } => {
                let _ = recv.stop(code.to_varint());
                let _ = send.reset(code.to_varint());
            }
        }
    }
}

/// What both halves of a request stream share: the connection (the stream counts as live
/// until both halves are gone), and whether the peer's message was found malformed.
#[derive(Debug)]
pub(crate) struct Live {
    shared: Arc<Shared>,
    /// The code the receiving half stopped the stream with when it found the peer's message
    /// malformed (0: it has not). The sending half resets with it (see
    /// [`SendHalf::reset_if_malformed`]): a message that ended early has no STOP_SENDING to
    /// carry the error, so only our RESET_STREAM tells the peer why (RFC 9114 §4.1.2).
    malformed: AtomicU64,
    /// Settled ([`SendHalf::settle`]).
    settled: AtomicBool,
}

impl Live {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Self> {
        shared.stream_opened();
        Arc::new(Self {
            shared,
            malformed: AtomicU64::new(0),
            settled: AtomicBool::new(false),
        })
    }

    /// The code the peer's message was found malformed with, if it was.
    fn malformed(&self) -> Option<Code> {
        match self.malformed.load(Ordering::Relaxed) {
            0 => None,
            // Stored from a code, so it fits a varint.
            code => VarInt::from_u64(code).ok().map(Code::from_varint),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shared.stream_closed(*self.settled.get_mut());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendState {
    Head,
    Body,
    Done,
}

/// The sending half of a request stream: a message head (sent by the owner), DATA, optional
/// trailers, then the end.
#[derive(Debug)]
pub struct SendHalf {
    stream: SendStream,
    state: SendState,
    /// Also the way to the connection: one pointer for both.
    live: Arc<Live>,
}

impl SendHalf {
    pub(crate) fn new(stream: SendStream, live: Arc<Live>) -> Self {
        Self {
            stream,
            state: SendState::Head,
            live,
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.live.shared
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> VarInt {
        self.stream.id().into()
    }

    /// The QUIC stream ID, read from the stream rather than kept a second time.
    fn stream_id(&self) -> u64 {
        self.stream.id().into()
    }

    /// Sends a header section (request, response or interim response): QPACK-encodes it and
    /// writes a HEADERS frame.
    pub(crate) async fn send_head(
        &mut self,
        fields: &[Field],
        final_head: bool,
    ) -> Result<(), StreamError> {
        if self.state != SendState::Head {
            return Err(StreamError::Invalid("the message head was already sent"));
        }
        self.reset_if_malformed()?;
        self.send_section(fields).await?;
        if final_head {
            self.state = SendState::Body;
        }
        Ok(())
    }

    async fn send_section(&mut self, fields: &[Field]) -> Result<(), StreamError> {
        // RFC 9114 §4.2.2: do not send more than the peer's SETTINGS_MAX_FIELD_SECTION_SIZE.
        let limit = self
            .shared()
            .lock()
            .proto
            .peer_settings()
            .and_then(|s| s.max_field_section_size());
        if let Some(limit) = limit
            && fields.iter().map(Field::size).sum::<u64>() > limit
        {
            return Err(StreamError::HeadersTooLarge);
        }
        let section = self.shared().encode(self.stream_id(), fields).await?;
        let mut header = BytesMut::with_capacity(16);
        if self.shared().take_grease_frame() {
            Frame::grease(self.stream_id() % 1000, Bytes::from_static(b"quay")).encode(&mut header);
        }
        FrameHeader {
            ty: FrameType::HEADERS,
            len: len_varint(section.len()),
        }
        .encode(&mut header);
        self.write(&mut [header.freeze(), section]).await
    }

    /// Sends a piece of the body in one DATA frame. Empty pieces send nothing.
    pub async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
        if self.state != SendState::Body {
            return Err(StreamError::Invalid(match self.state {
                SendState::Head => "data before the message head",
                _ => "data after the end of the message",
            }));
        }
        self.reset_if_malformed()?;
        if data.is_empty() {
            return Ok(());
        }
        let mut header = BytesMut::with_capacity(9);
        FrameHeader::data(len_varint(data.len())).encode(&mut header);
        self.write(&mut [header.freeze(), data]).await
    }

    /// Sends the trailer section and ends the stream.
    pub async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
        if self.state != SendState::Body {
            return Err(StreamError::Invalid("trailers outside the body"));
        }
        self.reset_if_malformed()?;
        let fields: Vec<Field> = headers::trailer_fields(&trailers)?;
        self.send_section(&fields).await?;
        self.finish()
    }

    /// Sends a capsule (RFC 9297 §3.2) in a DATA frame, on an Extended CONNECT stream after the
    /// response head.
    pub async fn send_capsule(&mut self, capsule: &Capsule) -> Result<(), StreamError> {
        let mut buf = BytesMut::with_capacity(capsule.encoded_len());
        capsule.encode(&mut buf);
        self.send_data(buf.freeze()).await
    }

    /// Sends an HTTP datagram (RFC 9297 §2.1) for this request stream. Fails if either side did
    /// not enable datagrams; a datagram too large for the path is dropped with an error.
    pub fn send_datagram(&self, payload: Bytes) -> Result<(), StreamError> {
        send_datagram(self.shared(), self.stream_id(), payload)
    }

    /// Ends the stream cleanly (FIN). Idempotent.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        if self.state == SendState::Done {
            return Ok(());
        }
        self.reset_if_malformed()?;
        self.state = SendState::Done;
        self.stream
            .finish()
            .map_err(|_| StreamError::Invalid("stream already closed"))
    }

    /// Marks the request as settled: we have nothing left to deliver on it but FIN, and want
    /// nothing more from the peer, though the stream stays live until both halves are dropped
    /// (a WebTransport session that either side closed). A client whose handle is gone and
    /// whose live requests are all settled tells the server so with GOAWAY; a server that got
    /// GOAWAY closes the connection once its live requests are all settled, so the close takes
    /// no extra round trip for FINs nobody needs. Idempotent.
    pub fn settle(&self) {
        if !self.live.settled.swap(true, Ordering::Relaxed) {
            self.live.shared.stream_settled();
        }
    }

    /// Resets the stream with the code the receiving half stopped it with, if it found the
    /// peer's message malformed (and the stream is not done): `Err` then, for the operation
    /// that was about to send. Called before every send, on drop, and by the request streams
    /// as soon as their receiving half reports a malformed message.
    pub(crate) fn reset_if_malformed(&mut self) -> Result<(), StreamError> {
        match self.live.malformed() {
            Some(code) if self.state != SendState::Done => {
                self.reset(code);
                Err(StreamError::Invalid(
                    "the stream was reset: the peer's message was malformed",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Abandons the stream with `code` (RESET_STREAM), e.g. H3_REQUEST_CANCELLED.
    pub fn reset(&mut self, code: Code) {
        self.state = SendState::Done;
        let _ = self.stream.reset(code.to_varint());
    }

    /// Waits until the peer has acknowledged everything sent and the FIN (`Ok(None)`), or stopped
    /// the stream (`Ok(Some(code))`).
    pub async fn stopped(&self) -> Result<Option<Code>, StreamError> {
        match self.stream.stopped().await {
            Ok(code) => Ok(code.map(Code::from_varint)),
            Err(quay_transport::StoppedError::ConnectionLost(e)) => Err(
                StreamError::ConnectionLost(self.shared().connection_error(e)),
            ),
            Err(_) => Err(StreamError::Invalid("0-RTT rejected")),
        }
    }

    async fn write(&mut self, chunks: &mut [Bytes]) -> Result<(), StreamError> {
        self.stream
            .write_all_chunks(chunks)
            .await
            .map_err(|e| write_error(self.shared(), e))
    }
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        if self.state != SendState::Done {
            // quinn would finish a dropped stream, which would pass a cut message off as
            // complete; reset it instead (RFC 9114 §4.1.1), with the reason the peer's message
            // was refused if it was.
            let code = self.live.malformed().unwrap_or(Code::H3_REQUEST_CANCELLED);
            let _ = self.stream.reset(code.to_varint());
        }
    }
}

fn write_error(shared: &Shared, error: quay_transport::WriteError) -> StreamError {
    match error {
        quay_transport::WriteError::Stopped(code) => StreamError::Stopped(Code::from_varint(code)),
        quay_transport::WriteError::ConnectionLost(e) => {
            StreamError::ConnectionLost(shared.connection_error(e))
        }
        _ => StreamError::Invalid("stream already closed"),
    }
}

pub(crate) fn send_datagram(shared: &Shared, id: u64, payload: Bytes) -> Result<(), StreamError> {
    let negotiated = shared.config.enable_datagrams
        && shared
            .lock()
            .proto
            .peer_settings()
            .is_some_and(|s| s.h3_datagram());
    if !negotiated {
        return Err(StreamError::NotNegotiated("HTTP datagrams"));
    }
    let stream_id = VarInt::from_u64(id).unwrap_or(VarInt::MAX);
    let mut buf = BytesMut::with_capacity(Datagram::prefix_len(stream_id) + payload.len());
    Datagram::encode_prefix(stream_id, &mut buf)
        .map_err(|_| StreamError::Invalid("datagrams belong to request streams"))?;
    buf.extend_from_slice(&payload);
    shared
        .conn
        .send_datagram(buf.freeze())
        .map_err(|e| match e {
            quay_transport::SendDatagramError::ConnectionLost(e) => {
                StreamError::ConnectionLost(shared.connection_error(e))
            }
            quay_transport::SendDatagramError::TooLarge => {
                StreamError::Invalid("datagram too large")
            }
            _ => StreamError::NotNegotiated("QUIC datagrams"),
        })
}

fn len_varint(len: usize) -> VarInt {
    // A buffer in memory is shorter than 2^62 bytes.
    VarInt::try_from(len).unwrap_or(VarInt::MAX)
}

/// The trailer section of a message that [`RecvHalf`] reads: being decoded, then received.
enum Trailers {
    /// QPACK decoding, which may wait for the peer's encoder stream. Kept in the [`RecvHalf`]
    /// rather than in a caller's future so that reading by polling can resume it, and dropping
    /// the caller's future does not lose the section.
    Decoding(Pin<Box<dyn Future<Output = Result<HeaderBlock, StreamError>> + Send + Sync>>),
    /// Decoded and parsed, until [`RecvHalf::recv_trailers`] takes it.
    Received(HeaderMap),
}

impl fmt::Debug for Trailers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decoding(_) => f.write_str("Decoding"),
            Self::Received(trailers) => f.debug_tuple("Received").field(trailers).finish(),
        }
    }
}

/// The receiving half of a request stream: a message head (read by the owner), DATA, optional
/// trailers, then the end. The rules of what may arrive are [`RequestState`]'s; this type reads
/// quinn's stream into it and QPACK-decodes the sections it hands out.
#[derive(Debug)]
pub struct RecvHalf {
    stream: RecvStream,
    state: RequestState,
    /// Boxed: rare, and a request stream or session lives long.
    trailers: Option<Box<Trailers>>,
    capsules: Option<CapsuleReader>,
    /// Datagrams for this stream are routed to this half (until taken).
    datagrams: bool,
    datagrams_taken: bool,
    /// Also the way to the connection: one pointer for both.
    live: Arc<Live>,
}

impl RecvHalf {
    pub(crate) fn new(
        stream: RecvStream,
        mut state: RequestState,
        buffered: Bytes,
        live: Arc<Live>,
    ) -> Self {
        state.handle_data(buffered);
        Self {
            stream,
            state,
            trailers: None,
            capsules: None,
            datagrams: false,
            datagrams_taken: false,
            live,
        }
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> VarInt {
        self.stream.id().into()
    }

    /// The QUIC stream ID, read from the stream rather than kept a second time.
    fn stream_id(&self) -> u64 {
        self.stream.id().into()
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.live.shared
    }

    /// The stream's protocol state, for the head rules of the client and server.
    pub(crate) fn state_mut(&mut self) -> &mut RequestState {
        &mut self.state
    }

    pub(crate) fn listen_datagrams(&mut self) {
        if !self.datagrams && !self.datagrams_taken {
            self.shared().register_datagrams(self.stream_id());
            self.datagrams = true;
        }
    }

    /// The next event of [`RequestState`], reading the stream as needed. `Pending` leaves the
    /// waker with quinn's stream: a read future is made, polled once and dropped, so nothing is
    /// kept between polls but the state's own buffer.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<RecvEvent, StreamError>> {
        // Bounded by the stream: each turn consumes a chunk, ends, or returns.
        loop {
            match self.state.poll_event() {
                Ok(Some(event)) => return Poll::Ready(Ok(event)),
                Ok(None) => {}
                Err(RecvError::Connection(error)) => return Poll::Ready(Err(self.fail(error))),
                Err(RecvError::Message(error)) => {
                    return Poll::Ready(Err(self.message_error(error)));
                }
                // Deadlines are kept by the owner of the stream, which reads the head.
                Err(RecvError::Incomplete) => return Poll::Ready(Err(StreamError::Incomplete)),
            }
            let read = pin!(self.stream.read_chunk(usize::MAX, true)).poll(cx);
            match ready!(read) {
                Ok(Some(chunk)) => self.state.handle_data(chunk.bytes),
                Ok(None) => self.state.handle_end(),
                Err(quay_transport::ReadError::Reset(code)) => {
                    return Poll::Ready(Err(StreamError::Reset(Code::from_varint(code))));
                }
                Err(quay_transport::ReadError::ConnectionLost(e)) => {
                    let error = self.shared().connection_error(e);
                    return Poll::Ready(Err(StreamError::ConnectionLost(error)));
                }
                Err(_) => return Poll::Ready(Err(StreamError::Invalid("stream already closed"))),
            }
        }
    }

    fn fail(&self, error: ProtocolError) -> StreamError {
        self.shared().fail(error);
        StreamError::ConnectionLost(
            self.shared()
                .error()
                .unwrap_or(ConnectionError::LocallyClosed),
        )
    }

    /// Resets our view of the stream after a malformed message (RFC 9114 §4.1.2).
    fn malformed(&mut self, code: Code) {
        self.live
            .malformed
            .store(code.into_inner(), Ordering::Relaxed);
        let _ = self.stream.stop(code.to_varint());
    }

    /// Reads the next header section (the message head); `None` if the stream ended first.
    pub(crate) async fn recv_head(&mut self) -> Result<Option<Vec<Field>>, StreamError> {
        match poll_fn(|cx| self.poll_event(cx)).await? {
            RecvEvent::Head(section) => {
                let block = self.shared().decode(self.stream_id(), section).await;
                self.fields(block).map(Some)
            }
            RecvEvent::End => Ok(None),
            // The frame order puts a head before any body or trailers.
            RecvEvent::Data(_) | RecvEvent::Trailers(_) => {
                Err(StreamError::Invalid("body before the message head"))
            }
        }
    }

    /// The fields of a decoded header section.
    fn fields(
        &mut self,
        block: Result<HeaderBlock, StreamError>,
    ) -> Result<Vec<Field>, StreamError> {
        match block? {
            HeaderBlock::Fields(fields) => Ok(fields),
            HeaderBlock::TooLarge | HeaderBlock::Blocked => {
                // RFC 9114 §4.2.2: over our limit.
                self.malformed(Code::H3_EXCESSIVE_LOAD);
                Err(StreamError::HeadersTooLarge)
            }
        }
    }

    /// A message error on this stream: stop reading and report it.
    pub(crate) fn message_error(&mut self, error: MessageError) -> StreamError {
        self.malformed(Code::from(error.clone()));
        StreamError::Message(error)
    }

    /// The next piece of the body, `None` at its end (then [`RecvHalf::recv_trailers`] has the
    /// trailers, if any). See [`RecvHalf::poll_recv_data`].
    ///
    /// Cancel-safe: dropping the future loses nothing; the next call goes on where it stopped.
    pub fn recv_data(&mut self) -> impl Future<Output = Result<Option<Bytes>, StreamError>> + '_ {
        poll_fn(|cx| self.poll_recv_data(cx))
    }

    /// Polls for the next piece of the body: `Ready(Ok(Some(_)))` with a piece (never empty),
    /// `Ready(Ok(None))` at the body's end (the trailers, if any, are then kept for
    /// [`RecvHalf::recv_trailers`]), or an error, as [`RecvHalf::recv_data`].
    ///
    /// On `Pending`, `cx`'s waker is woken when more of the stream arrives or it ends, or, while
    /// a trailer section waits for the peer's QPACK encoder stream (RFC 9204 §2.2.1), when that
    /// wait may be over. Only the waker of the latest poll is kept.
    pub fn poll_recv_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamError>> {
        // Bounded by the stream: each turn consumes a frame event, or returns.
        loop {
            if let Some(Trailers::Decoding(decode)) = self.trailers.as_deref_mut() {
                let block = ready!(decode.as_mut().poll(cx));
                self.trailers = None;
                return Poll::Ready(self.on_trailers(block));
            }
            if self.state.is_body_done() {
                return Poll::Ready(Ok(None));
            }
            match ready!(self.poll_event(cx))? {
                RecvEvent::End => return Poll::Ready(Ok(None)),
                RecvEvent::Data(chunk) => return Poll::Ready(Ok(Some(chunk))),
                RecvEvent::Trailers(section) => {
                    // Boxed, and kept here rather than in the caller's future: trailers are
                    // rare, decoding them may wait for the encoder stream, and a body reader (a
                    // session's CONNECT stream reader lives as long as the session) should not
                    // keep room for that. Polled at the top of the loop.
                    let (shared, id) = (self.shared().clone(), self.stream_id());
                    let decode = async move { shared.decode(id, section).await };
                    self.trailers = Some(Box::new(Trailers::Decoding(Box::pin(decode))));
                }
                // The frame order allows a second head only after an interim response, which
                // the client reads with `recv_head`.
                RecvEvent::Head(_) => {
                    return Poll::Ready(Err(StreamError::Invalid("a second message head")));
                }
            }
        }
    }

    /// Takes in a decoded trailer section: the end of the body.
    fn on_trailers(
        &mut self,
        block: Result<HeaderBlock, StreamError>,
    ) -> Result<Option<Bytes>, StreamError> {
        let fields = self.fields(block)?;
        match self.state.handle_trailers(&fields) {
            Ok(trailers) => {
                self.trailers = Some(Box::new(Trailers::Received(trailers)));
                Ok(None)
            }
            Err(error) => Err(self.message_error(error)),
        }
    }

    /// The trailers, after the body. Reads and drops what is left of the body first.
    pub async fn recv_trailers(&mut self) -> Result<Option<HeaderMap>, StreamError> {
        // Bounded by the stream: each turn consumes input or ends.
        while self.recv_data().await?.is_some() {}
        match self.trailers.take().map(|trailers| *trailers) {
            Some(Trailers::Received(trailers)) => Ok(Some(trailers)),
            // The body has ended, so no decoding is pending.
            _ => Ok(None),
        }
    }

    /// The next capsule (RFC 9297 §3.2) from the body of an Extended CONNECT stream, `None` at
    /// the end. DATAGRAM capsules and unknown types are returned as they are; use
    /// [`RecvHalf::accept_capsule`] to have other known types returned too. See
    /// [`RecvHalf::poll_recv_capsule`].
    ///
    /// Cancel-safe: dropping the future loses nothing; the next call goes on where it stopped.
    pub fn recv_capsule(
        &mut self,
    ) -> impl Future<Output = Result<Option<Capsule>, StreamError>> + '_ {
        poll_fn(|cx| self.poll_recv_capsule(cx))
    }

    /// Polls for the next capsule: `Ready(Ok(Some(_)))` with a capsule, `Ready(Ok(None))` at the
    /// body's end, or an error (a malformed capsule stops the stream with its code), as
    /// [`RecvHalf::recv_capsule`].
    ///
    /// On `Pending`, `cx`'s waker is woken as for [`RecvHalf::poll_recv_data`]: a capsule cut
    /// across chunks or DATA frames is kept here until its last byte arrives.
    pub fn poll_recv_capsule(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Capsule>, StreamError>> {
        // Bounded by the stream: each turn consumes a piece of the body, or returns.
        loop {
            match self.capsule_reader().poll_capsule() {
                Ok(Some(capsule)) => return Poll::Ready(Ok(Some(capsule))),
                Ok(None) => {}
                Err(error) => {
                    self.malformed(Code::from(error));
                    return Poll::Ready(Err(error.into()));
                }
            }
            match ready!(self.poll_recv_data(cx))? {
                Some(chunk) => self.capsule_reader().handle_data(chunk),
                None => {
                    if let Err(error) = self.capsule_reader().handle_end() {
                        self.malformed(Code::from(error));
                        return Poll::Ready(Err(error.into()));
                    }
                    return Poll::Ready(Ok(None));
                }
            }
        }
    }

    /// Polls for the clean end of an Extended CONNECT stream after its last capsule, when
    /// nothing more may come (a WebTransport session after WT_CLOSE_SESSION, draft-16 §6):
    /// `Ready(Ok(true))` when the stream ends with nothing past the capsules read so far,
    /// `Ready(Ok(false))` as soon as any byte of body is there past them (left unread), or the
    /// stream's error (a reset, the connection's loss).
    pub fn poll_clean_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, StreamError>> {
        if self
            .capsules
            .as_ref()
            .is_some_and(|reader| !reader.is_idle())
        {
            return Poll::Ready(Ok(false));
        }
        // A piece of body is never empty.
        Poll::Ready(ready!(self.poll_recv_data(cx)).map(|piece| piece.is_none()))
    }

    /// Makes [`RecvHalf::recv_capsule`] return capsules of type `ty` (DATAGRAM is always
    /// returned; other unknown types are skipped, RFC 9297 §3.2).
    pub fn accept_capsule(&mut self, ty: crate::proto::capsule::CapsuleType) {
        self.capsule_reader().accept(ty);
    }

    /// Makes [`RecvHalf::recv_capsule`] return capsules of the types in `types` too, a list
    /// that lives as long as the program: nothing is allocated for it.
    pub fn accept_capsules(&mut self, types: &'static [crate::proto::capsule::CapsuleType]) {
        self.capsule_reader().accept_all(types);
    }

    /// The stream's capsule reader, made on first use with the connection's size bound.
    fn capsule_reader(&mut self) -> &mut CapsuleReader {
        let max = self.shared().config.max_capsule_size;
        self.capsules.get_or_insert_with(|| CapsuleReader::new(max))
    }

    /// The next HTTP datagram for this stream (RFC 9297 §2.1); `None` when the connection is
    /// gone. Datagrams are routed from the first call on (from the start for CONNECT requests).
    pub async fn recv_datagram(&mut self) -> Result<Option<Bytes>, StreamError> {
        if !self.shared().config.enable_datagrams {
            return Err(StreamError::NotNegotiated("HTTP datagrams"));
        }
        self.listen_datagrams();
        if !self.datagrams {
            return Ok(None);
        }
        let (shared, id) = (self.shared(), self.stream_id());
        let mut read = pin!(shared.conn.read_datagram());
        tokio::select! {
            datagram = poll_fn(|cx| shared.poll_datagram(id, cx, read.as_mut())) => Ok(datagram),
            error = shared.conn.closed() => {
                Err(StreamError::ConnectionLost(shared.connection_error(error)))
            }
        }
    }

    /// Takes this stream's HTTP datagrams out, so they can be read while another task reads the
    /// stream (an extension reading capsules, say). [`RecvHalf::recv_datagram`] returns `None`
    /// afterwards.
    pub fn take_datagrams(&mut self) -> Result<Datagrams, StreamError> {
        if !self.shared().config.enable_datagrams {
            return Err(StreamError::NotNegotiated("HTTP datagrams"));
        }
        self.listen_datagrams();
        if !std::mem::take(&mut self.datagrams) {
            return Err(StreamError::Invalid("datagrams already taken"));
        }
        self.datagrams_taken = true;
        Ok(Datagrams {
            shared: self.shared().clone(),
            id: self.stream_id(),
        })
    }

    /// Stops reading with `code` (STOP_SENDING), e.g. H3_NO_ERROR once the response is complete
    /// and the rest of the request is not needed (RFC 9114 §4.1).
    pub fn stop(&mut self, code: Code) {
        let _ = self.stream.stop(code.to_varint());
    }
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        if self.datagrams {
            self.shared().unregister_datagrams(self.stream_id());
        }
        if !self.state.is_ended() && !self.state.has_head() {
            // RFC 9204 §2.2.2.2: the peer's encoder may hold table entries for a header section
            // we will never read; tell it to let them go.
            let flush = {
                let mut inner = self.shared().lock();
                inner.proto.cancel_stream(self.stream_id());
                inner.flush_waker()
            };
            if let Some(driver) = flush {
                driver.wake();
            }
        }
        if !self.state.is_ended() {
            // RFC 9114 §4.1: a server that has answered may stop reading the request with
            // H3_NO_ERROR; a client that drops a response cancels the request. (quinn would
            // send code 0, which is not an HTTP/3 code.)
            let code = match self.shared().side {
                Side::Server => Code::H3_NO_ERROR,
                Side::Client => Code::H3_REQUEST_CANCELLED,
            };
            let _ = self.stream.stop(code.to_varint());
        }
    }
}

/// The HTTP datagrams of one request stream (RFC 9297 §2.1), taken out of its [`RecvHalf`] with
/// [`RecvHalf::take_datagrams`]. Routing stops when this is dropped.
#[derive(Debug)]
pub struct Datagrams {
    shared: Arc<Shared>,
    id: u64,
}

impl Datagrams {
    /// The next datagram's payload; `None` once the connection is gone (or failed on a
    /// malformed datagram) or routing stopped. Several tasks may wait; each datagram goes to
    /// one of them.
    pub async fn recv(&self) -> Option<Bytes> {
        let mut read = pin!(self.shared.conn.read_datagram());
        poll_fn(|cx| self.shared.poll_datagram(self.id, cx, read.as_mut())).await
    }

    /// The next datagram if one has arrived.
    pub fn try_recv(&self) -> Option<Bytes> {
        self.shared.try_datagram(self.id)
    }

    /// Stops routing this stream's datagrams, as dropping this does: waiting and later calls
    /// of [`Datagrams::recv`] return `None`, and datagrams that arrive for the stream are
    /// dropped.
    pub fn stop(&self) {
        self.shared.unregister_datagrams(self.id);
    }
}

impl Drop for Datagrams {
    fn drop(&mut self) {
        self.shared.unregister_datagrams(self.id);
    }
}

/// The streams claimed by an extension on one connection, taken out of the client or server
/// handle (`take_extension_streams`) so that a task can wait for them without keeping the
/// handle alive.
#[derive(Debug)]
pub struct ExtensionStreams {
    shared: Arc<Shared>,
}

impl ExtensionStreams {
    pub(crate) fn take(shared: &Arc<Shared>) -> Option<Self> {
        shared.take_extension_streams().then(|| Self {
            shared: shared.clone(),
        })
    }

    /// The next stream; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<ExtensionStream> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next stream, or the waker registered to be woken when one arrives; `None` once the
    /// connection is gone. A task that waits for these all connection long keeps no future.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<ExtensionStream>> {
        self.shared.poll_extension_stream(cx)
    }
}

impl Drop for ExtensionStreams {
    fn drop(&mut self) {
        self.shared.drop_extension_streams();
    }
}
