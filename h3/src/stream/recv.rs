//! [`RecvHalf`]: the receiving direction of a request stream, read in the caller's task into
//! its [`RequestState`], and [`Datagrams`], a stream's HTTP datagrams taken out of it.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use quay_qpack::Field;
use quay_transport::RecvStream;

use super::live::Live;
use crate::connection::{HeaderBlock, ProtocolError, Side};
use crate::driver::shared::Shared;
use crate::error::{Code, ConnectionError, StreamError};
use crate::error::{Feature, Misuse};
use crate::proto::capsule::{Capsule, CapsuleReader};
use crate::proto::headers::MessageError;
use crate::request::{RecvError, RecvEvent, RequestState};
use crate::stats::{FrameStats, RequestStats};

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
    /// The code the peer reset the stream with, if it did.
    reset_by_peer: Option<Code>,
    /// Datagrams for this stream are routed to this half (until taken).
    datagrams: bool,
    datagrams_taken: bool,
    /// Also the way to the connection: one pointer for both.
    live: Arc<Live>,
}

// A WebTransport session's CONNECT-stream reader keeps one for the session's life: at this
// size, with the reader's own 56 bytes, its task is in tokio's 512-byte step (of 128).
const _: () = assert!(size_of::<RecvHalf>() <= 352);

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
            reset_by_peer: None,
            datagrams: false,
            datagrams_taken: false,
            live,
        }
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> quay_transport::StreamId {
        self.stream.id()
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
            let event = match &self.live.shared.qlog {
                None => self.state.poll_event(),
                Some(qlog) => {
                    let id = u64::from(self.stream.id());
                    self.state.poll_event_observed(|event| {
                        crate::qlog::frame_event(qlog, false, id, event);
                    })
                }
            };
            match event {
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
                    let code = Code::from_varint(code);
                    if self.reset_by_peer.replace(code).is_none() {
                        self.shared().lock().proto.handle_request_reset_by_peer();
                    }
                    return Poll::Ready(Err(StreamError::Reset(code)));
                }
                Err(quay_transport::ReadError::ConnectionLost(e)) => {
                    let error = self.shared().connection_error(e);
                    return Poll::Ready(Err(StreamError::ConnectionLost(error)));
                }
                Err(_) => return Poll::Ready(Err(StreamError::Invalid(Misuse::StreamClosed))),
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

    /// What this half received: body bytes, head and trailer sizes, and the code the peer reset
    /// the stream with, if it did.
    pub fn stats(&self) -> RequestStats {
        let (head_received, trailers_received) = self.state.section_sizes();
        RequestStats {
            body_received: self.state.body_received(),
            head_received,
            trailers_received,
            reset_by_peer: self.reset_by_peer,
            ..RequestStats::default()
        }
    }

    /// Resets our view of the stream after a malformed message (RFC 9114 §4.1.2).
    fn malformed(&mut self, code: Code) {
        self.live
            .malformed
            .store(code.into_inner(), Ordering::Relaxed);
        self.shared().request_error(code);
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
                Err(StreamError::Invalid(Misuse::BodyBeforeHead))
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
                    return Poll::Ready(Err(StreamError::Invalid(Misuse::SecondHead)));
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

    /// The trailers, once [`RecvHalf::poll_recv_data`] has returned the body's end; `None` if
    /// there were none (or they were taken).
    #[cfg(feature = "http-body")]
    pub(crate) fn take_trailers(&mut self) -> Option<HeaderMap> {
        match self.trailers.take().map(|trailers| *trailers) {
            Some(Trailers::Received(trailers)) => Some(trailers),
            Some(decoding @ Trailers::Decoding(_)) => {
                self.trailers = Some(Box::new(decoding));
                None
            }
            None => None,
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
            return Err(StreamError::NotNegotiated(Feature::HttpDatagrams));
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
            return Err(StreamError::NotNegotiated(Feature::HttpDatagrams));
        }
        self.listen_datagrams();
        if !std::mem::take(&mut self.datagrams) {
            return Err(StreamError::Invalid(Misuse::DatagramsTaken));
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
        {
            let received = self.state.frames_received();
            if received != FrameStats::default() {
                let mut inner = self.live.shared.lock();
                inner
                    .proto
                    .handle_request_frames(&FrameStats::default(), &received);
            }
        }
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

    /// How many of this stream's datagrams were dropped on arrival because its queue was full
    /// (RFC 9297 lets a receiver drop them); 0 once routing stopped.
    pub fn dropped(&self) -> u64 {
        self.shared.datagrams_dropped(self.id)
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
