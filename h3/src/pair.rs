//! A deterministic pair of HTTP/3 endpoints joined in memory, for tests and fuzzing.
//!
//! [`Pair`] runs a client and a server [`Peer`] made of the pure cores the async glue runs:
//! [`ConnectionState`] for the connection, [`RequestState`] for each request stream, and the
//! stream-prefix decoders of [`crate::proto::stream`]. QUIC is reduced to what HTTP/3 sees of
//! it: ordered, reliable byte streams with FIN, RESET_STREAM and STOP_SENDING, and a connection
//! close ([`Transfer`]). There is no task, socket or real clock: [`Pair::step`] delivers one
//! transfer, [`Pair::drive`] delivers until nothing moves, and [`Pair::advance`] moves a virtual
//! clock. [`Pair::tamper`] sees every transfer before it is delivered and may alter or drop it;
//! [`Peer::open_uni_raw`], [`Peer::open_bidi_raw`] and [`Peer::send_raw`] inject bytes a
//! well-behaved endpoint never sends.
//!
//! It does not model QUIC itself (loss, flow control, stream limits, datagrams) or the glue's
//! waiting (QPACK-blocked sections are retried when the encoder stream moves): the loopback
//! tests prove the glue over quinn. It is not part of the stable API.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response};
use quay_qpack::Field;

use crate::config::Config;
use crate::connection::{ConnectionState, HeaderBlock, ProtocolError, Side, UniStream};
use crate::error::Code;
use crate::proto::frame::Frame;
use crate::proto::headers;
use crate::proto::stream::{StreamType, decode_bidi_signal, decode_uni_prefix};
use crate::proto::{Codec, VarInt};
use crate::request::{RecvError, RecvEvent, RequestState};
use crate::stats::FrameStats;

/// What one endpoint hands the other through the in-memory QUIC connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// Bytes on a stream (opened by its first transfer), and whether they end it.
    Stream {
        /// The QUIC stream ID.
        id: u64,
        /// The bytes, in order after the stream's earlier ones.
        bytes: Bytes,
        /// FIN.
        fin: bool,
    },
    /// RESET_STREAM: the sender abandons its side of a stream.
    Reset {
        /// The QUIC stream ID.
        id: u64,
        /// The application error code.
        code: Code,
    },
    /// STOP_SENDING: the sender wants no more of a stream.
    StopSending {
        /// The QUIC stream ID.
        id: u64,
        /// The application error code.
        code: Code,
    },
    /// CONNECTION_CLOSE with an application error code.
    Close {
        /// The code.
        code: Code,
    },
}

/// Which way a transfer goes, for [`Pair::tamper`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

/// Something a peer did to one of its streams because of what it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamAction {
    /// It reset its sending side with the code.
    Reset(u64, Code),
    /// It stopped its receiving side with the code.
    Stopped(u64, Code),
}

/// A message a peer received on a request stream.
#[derive(Debug, Default)]
pub struct Message {
    /// The request, on a server.
    pub request: Option<Request<()>>,
    /// The final response, on a client.
    pub response: Option<Response<()>>,
    /// How many interim responses came first.
    pub interim: usize,
    /// The body received.
    pub body: Vec<u8>,
    /// The trailers, if any.
    pub trailers: Option<HeaderMap>,
    /// The stream ended cleanly after the message.
    pub ended: bool,
    /// The peer reset the stream with this code.
    pub reset_by_peer: Option<Code>,
    /// The peer stopped our side with this code.
    pub stopped_by_peer: Option<Code>,
}

/// The receiving side of a stream the peer writes to.
#[derive(Debug)]
enum Incoming {
    /// A peer unidirectional stream whose type is not complete yet.
    UniPrefix(BytesMut),
    /// A peer bidirectional stream whose extension signal is not known yet (on a client, only
    /// with an extension configured).
    BidiPrefix(BytesMut),
    /// The peer's control or QPACK stream.
    Critical(UniStream),
    /// An extension's stream, handed out: its session ID and bytes are kept.
    Extension { session: u64, bytes: Vec<u8> },
    /// A stream of an unknown type, stopped and ignored.
    Discarded,
    /// A request stream (either side).
    Request {
        state: Box<RequestState>,
        /// A head or trailer section QPACK-blocked on the encoder stream.
        blocked: Option<Section>,
    },
    /// A request stream we gave up on (reset, stopped, or malformed).
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Head,
    Trailers,
}

/// One end of a [`Pair`]: a [`ConnectionState`] with its streams.
#[derive(Debug)]
pub struct Peer {
    side: Side,
    config: Config,
    state: ConnectionState,
    outbox: VecDeque<Transfer>,
    /// Our control, encoder and decoder stream IDs, once opened.
    ours: [Option<u64>; 3],
    next_uni: u64,
    next_bidi: u64,
    incoming: BTreeMap<u64, Incoming>,
    messages: BTreeMap<u64, Message>,
    actions: Vec<StreamAction>,
    /// The code we closed the connection with.
    closed: Option<Code>,
    /// The code the peer closed the connection with.
    peer_closed: Option<Code>,
    now: Instant,
}

/// Our streams in the order their bytes go out: QPACK instructions unblock header sections.
const OURS: [UniStream; 3] = [UniStream::Encoder, UniStream::Control, UniStream::Decoder];

impl Peer {
    fn new(side: Side, config: Config, now: Instant) -> Self {
        // A fixed seed: the GREASE values, and so every byte, are the same each run.
        let state = ConnectionState::new(side, &config, 0x5eed);
        let (first_uni, first_bidi) = match side {
            Side::Client => (2, 0),
            Side::Server => (3, 1),
        };
        let mut peer = Self {
            side,
            config,
            state,
            outbox: VecDeque::new(),
            ours: [None; 3],
            next_uni: first_uni,
            next_bidi: first_bidi,
            incoming: BTreeMap::new(),
            messages: BTreeMap::new(),
            actions: Vec::new(),
            closed: None,
            peer_closed: None,
            now,
        };
        peer.flush();
        peer
    }

    /// The connection state.
    pub fn state(&self) -> &ConnectionState {
        &self.state
    }

    /// The connection state, to call its inputs directly (e.g. to send GOAWAY).
    pub fn state_mut(&mut self) -> &mut ConnectionState {
        &mut self.state
    }

    /// The code this peer closed the connection with, if it did.
    pub fn closed_with(&self) -> Option<Code> {
        self.closed
    }

    /// The code the other peer closed the connection with, if it did.
    pub fn peer_closed_with(&self) -> Option<Code> {
        self.peer_closed
    }

    /// What this peer did to its streams because of what it received, in order.
    pub fn actions(&self) -> &[StreamAction] {
        &self.actions
    }

    /// The message received on stream `id`.
    pub fn message(&self, id: u64) -> Option<&Message> {
        self.messages.get(&id)
    }

    /// The IDs of the request streams on which a message head arrived, in order.
    pub fn messages(&self) -> impl Iterator<Item = (u64, &Message)> {
        self.messages.iter().map(|(id, message)| (*id, message))
    }

    /// The bytes an extension's stream delivered (after its prefix).
    pub fn extension_bytes(&self, id: u64) -> Option<&[u8]> {
        match self.incoming.get(&id)? {
            Incoming::Extension { bytes, .. } => Some(bytes),
            _ => None,
        }
    }

    /// The peer's extension streams (WebTransport's), in stream ID order: the stream ID, the
    /// session ID its prefix named, and the bytes it delivered after the prefix.
    pub fn extension_streams(&self) -> impl Iterator<Item = (u64, u64, &[u8])> {
        self.incoming.iter().filter_map(|(id, entry)| match entry {
            Incoming::Extension { session, bytes } => Some((*id, *session, &bytes[..])),
            _ => None,
        })
    }

    /// Closes the connection with `code` (CONNECTION_CLOSE), as an extension does on a
    /// connection error.
    pub fn close_connection(&mut self, code: Code) {
        self.close(code);
    }

    /// Client: sends `request` with `body` on a new request stream; returns its ID.
    pub fn send_request(&mut self, request: &Request<()>, body: &[u8], fin: bool) -> u64 {
        let id = self.open_bidi();
        let fields: Vec<Field> =
            headers::request_fields(request).expect("a request the test can send");
        let mut bytes = self.encode_section(id, &fields);
        if !body.is_empty() {
            Frame::Data(Bytes::copy_from_slice(body)).encode(&mut bytes);
        }
        let state = RequestState::response(self.config.max_frame_payload, request.method());
        self.start_request(id, state);
        self.push_stream(id, bytes, fin);
        id
    }

    /// Server: answers the request on stream `id` with `response` and `body`.
    pub fn send_response(&mut self, id: u64, response: &Response<()>, body: &[u8], fin: bool) {
        let fields: Vec<Field> =
            headers::response_fields(response).expect("a response the test can send");
        let mut bytes = self.encode_section(id, &fields);
        if !body.is_empty() {
            Frame::Data(Bytes::copy_from_slice(body)).encode(&mut bytes);
        }
        self.push_stream(id, bytes, fin);
    }

    /// A request stream starts: its receiving side is read by `state`.
    fn start_request(&mut self, id: u64, state: RequestState) {
        let (state, blocked) = (Box::new(state), None);
        self.incoming
            .insert(id, Incoming::Request { state, blocked });
        self.messages.insert(id, Message::default());
        self.state.handle_request_opened();
    }

    /// Encodes a header section as a HEADERS frame, queueing the encoder stream's bytes first.
    fn encode_section(&mut self, id: u64, fields: &[Field]) -> Vec<u8> {
        let section = self.state.encode_headers(id, fields);
        self.flush();
        let mut bytes = Vec::new();
        Frame::Headers(section).encode(&mut bytes);
        bytes
    }

    /// Opens a unidirectional stream with raw `bytes` (its type first); returns its ID.
    pub fn open_uni_raw(&mut self, bytes: &[u8], fin: bool) -> u64 {
        let id = self.open_uni();
        self.push_stream(id, bytes.to_vec(), fin);
        id
    }

    /// Opens a bidirectional stream with raw `bytes`; returns its ID. On a client the stream is
    /// read as a response to GET.
    pub fn open_bidi_raw(&mut self, bytes: &[u8], fin: bool) -> u64 {
        let id = self.open_bidi();
        if self.side == Side::Client {
            let state = RequestState::response(self.config.max_frame_payload, &Method::GET);
            self.start_request(id, state);
        }
        self.push_stream(id, bytes.to_vec(), fin);
        id
    }

    /// Writes raw `bytes` on a stream this peer opened or may write to.
    pub fn send_raw(&mut self, id: u64, bytes: &[u8], fin: bool) {
        self.push_stream(id, bytes.to_vec(), fin);
    }

    /// Resets our sending side of stream `id`.
    pub fn reset(&mut self, id: u64, code: Code) {
        self.outbox.push_back(Transfer::Reset { id, code });
    }

    /// Asks the peer to stop sending on stream `id`.
    pub fn stop_sending(&mut self, id: u64, code: Code) {
        self.outbox.push_back(Transfer::StopSending { id, code });
    }

    /// The ID of our control stream (always open).
    pub fn control_stream_id(&self) -> u64 {
        self.ours[1].expect("the control stream opens at once")
    }

    fn open_uni(&mut self) -> u64 {
        let id = self.next_uni;
        self.next_uni += 4;
        id
    }

    fn open_bidi(&mut self) -> u64 {
        let id = self.next_bidi;
        self.next_bidi += 4;
        id
    }

    fn push_stream(&mut self, id: u64, bytes: Vec<u8>, fin: bool) {
        self.outbox.push_back(Transfer::Stream {
            id,
            bytes: bytes.into(),
            fin,
        });
    }

    /// Moves what the connection state queued for our streams into the outbox.
    fn flush(&mut self) {
        if self.closed.is_some() {
            return;
        }
        // `ours` is indexed like `OURS`.
        for (slot, kind) in OURS.into_iter().enumerate() {
            let bytes = match kind {
                UniStream::Encoder => self.state.poll_encoder(),
                UniStream::Control => self.state.poll_control(),
                _ => self.state.poll_decoder(),
            };
            let Some(bytes) = bytes else { continue };
            let id = match self.ours[slot] {
                Some(id) => id,
                None => {
                    let id = self.open_uni();
                    self.ours[slot] = Some(id);
                    id
                }
            };
            self.outbox.push_back(Transfer::Stream {
                id,
                bytes,
                fin: false,
            });
        }
    }

    /// Closes the connection because of `error`.
    fn fail(&mut self, error: ProtocolError) {
        self.close(Code::from(&error));
    }

    fn close(&mut self, code: Code) {
        if self.closed.is_none() && self.peer_closed.is_none() {
            self.closed = Some(code);
            self.outbox.push_back(Transfer::Close { code });
        }
    }

    fn is_open(&self) -> bool {
        self.closed.is_none() && self.peer_closed.is_none()
    }

    /// A request stream is over for us: its received frames count in the connection's stats.
    fn end_request(&mut self, id: u64) {
        if let Some(Incoming::Request { state, .. }) = self.incoming.insert(id, Incoming::Done) {
            let none = FrameStats::default();
            self.state
                .handle_request_frames(&none, &state.frames_received());
        }
    }

    /// Ends a request stream with `code` both ways, as the glue does for a stream error.
    fn stream_error(&mut self, id: u64, code: Code) {
        self.end_request(id);
        self.state.handle_request_error(code);
        self.actions.push(StreamAction::Stopped(id, code));
        self.outbox.push_back(Transfer::StopSending { id, code });
        self.actions.push(StreamAction::Reset(id, code));
        self.outbox.push_back(Transfer::Reset { id, code });
    }

    fn is_peer_initiated(&self, id: u64) -> bool {
        let client_initiated = id & 1 == 0;
        client_initiated == (self.side == Side::Server)
    }

    /// Takes a transfer from the other peer.
    fn receive(&mut self, transfer: Transfer) {
        if !self.is_open() {
            return;
        }
        match transfer {
            Transfer::Close { code } => self.peer_closed = Some(code),
            Transfer::Stream { id, bytes, fin } => self.receive_stream(id, bytes, fin),
            Transfer::Reset { id, code } => self.receive_reset(id, code),
            Transfer::StopSending { id, code } => self.receive_stop(id, code),
        }
        self.flush();
    }

    fn receive_stream(&mut self, id: u64, bytes: Bytes, fin: bool) {
        let uni = id & 2 != 0;
        if !self.incoming.contains_key(&id) {
            if !self.is_peer_initiated(id) {
                // Bytes on a stream of ours that the peer cannot write to: QUIC's business.
                return;
            }
            let entry = if uni {
                Incoming::UniPrefix(BytesMut::new())
            } else if self.side == Side::Server {
                if !self.state.handle_request_accepted(id) {
                    // RFC 9114 §5.2: past our GOAWAY, refused unprocessed.
                    self.stream_error(id, Code::H3_REQUEST_REJECTED);
                    return;
                }
                Incoming::BidiPrefix(BytesMut::new())
            } else if !self.config.extension_bidi_signals.is_empty() {
                // An extension's signal may start it: read on.
                Incoming::BidiPrefix(BytesMut::new())
            } else {
                // Without an extension, a server-initiated bidirectional stream is an error.
                if let Err(error) = self.state.handle_peer_bidi_stream(false) {
                    return self.fail(error);
                }
                Incoming::Discarded
            };
            self.incoming.insert(id, entry);
        }
        let Some(entry) = self.incoming.get_mut(&id) else {
            return;
        };
        match entry {
            Incoming::UniPrefix(buf) => {
                buf.extend_from_slice(&bytes);
                let types: &[StreamType] = &self.config.extension_uni_stream_types;
                let mut cur = &buf[..];
                let Some((header, session_id)) = decode_uni_prefix(types, &mut cur) else {
                    if fin {
                        // Ended before its type: nothing to do.
                        self.incoming.insert(id, Incoming::Done);
                    }
                    return;
                };
                let rest = Bytes::copy_from_slice(cur);
                match self.state.handle_uni_stream(header) {
                    Err(error) => self.fail(error),
                    Ok(UniStream::Extension(_)) => {
                        let session = session_id.map_or(0, VarInt::into_inner);
                        let bytes = rest.to_vec();
                        self.incoming
                            .insert(id, Incoming::Extension { session, bytes });
                    }
                    Ok(kind @ (UniStream::Control | UniStream::Encoder | UniStream::Decoder)) => {
                        self.incoming.insert(id, Incoming::Critical(kind));
                        self.feed_critical(kind, rest, fin);
                    }
                    Ok(_) => {
                        // RFC 9114 §6.2.3: an unknown stream is dropped if it is whole and
                        // small, and stopped otherwise.
                        self.incoming.insert(id, Incoming::Discarded);
                        if !UniStream::discards_whole(rest.len(), fin) {
                            let code = Code::H3_STREAM_CREATION_ERROR;
                            self.actions.push(StreamAction::Stopped(id, code));
                            self.outbox.push_back(Transfer::StopSending { id, code });
                        }
                    }
                }
            }
            Incoming::Critical(kind) => {
                let kind = *kind;
                self.feed_critical(kind, bytes, fin);
            }
            Incoming::Extension { bytes: kept, .. } => kept.extend_from_slice(&bytes),
            Incoming::BidiPrefix(buf) => {
                buf.extend_from_slice(&bytes);
                let signals = &self.config.extension_bidi_signals;
                let mut cur = &buf[..];
                match decode_bidi_signal(signals, &mut cur) {
                    None if !fin => {}
                    Some(Some((_, session))) => {
                        let (session, bytes) = (session.into_inner(), cur.to_vec());
                        self.incoming
                            .insert(id, Incoming::Extension { session, bytes });
                        if self.side == Side::Client {
                            // Counted; an extension's stream is no error.
                            let _ = self.state.handle_peer_bidi_stream(true);
                        }
                    }
                    _ if self.side == Side::Client => {
                        // RFC 9114 §6.1: a server's bidirectional stream without a signal.
                        self.incoming.insert(id, Incoming::Discarded);
                        if let Err(error) = self.state.handle_peer_bidi_stream(false) {
                            self.fail(error);
                        }
                    }
                    _ => {
                        let buffered = std::mem::take(buf).freeze();
                        let mut state = RequestState::request(self.config.max_frame_payload);
                        state.set_head_deadline(self.now + self.config.request_head_timeout);
                        self.start_request(id, state);
                        self.receive_request_bytes(id, buffered, fin);
                    }
                }
            }
            Incoming::Request { .. } => self.receive_request_bytes(id, bytes, fin),
            Incoming::Discarded | Incoming::Done => {}
        }
    }

    fn feed_critical(&mut self, kind: UniStream, bytes: Bytes, fin: bool) {
        if !bytes.is_empty() {
            let result = match kind {
                UniStream::Control => self.state.handle_control(bytes),
                UniStream::Encoder => match self.state.handle_encoder_stream(&bytes) {
                    Ok(true) => {
                        self.retry_blocked();
                        Ok(())
                    }
                    other => other.map(|_| ()),
                },
                _ => self.state.handle_decoder_stream(&bytes),
            };
            if let Err(error) = result {
                return self.fail(error);
            }
        }
        if fin {
            // RFC 9114 §6.2.1, RFC 9204 §4.2: a critical stream must not end.
            let error = self.state.handle_critical_end(kind);
            self.fail(error);
        }
    }

    fn receive_request_bytes(&mut self, id: u64, bytes: Bytes, fin: bool) {
        if let Some(Incoming::Request { state, .. }) = self.incoming.get_mut(&id) {
            state.handle_data(bytes);
            if fin {
                state.handle_end();
            }
        }
        self.pump(id);
    }

    /// Sections the encoder stream just unblocked.
    fn retry_blocked(&mut self) {
        let blocked: Vec<u64> = self
            .incoming
            .iter()
            .filter_map(|(id, entry)| match entry {
                Incoming::Request {
                    blocked: Some(_), ..
                } => Some(*id),
                _ => None,
            })
            .collect();
        for id in blocked {
            if let Some(block) = self.state.take_unblocked(id) {
                let Some(Incoming::Request { blocked, .. }) = self.incoming.get_mut(&id) else {
                    continue;
                };
                let Some(section) = blocked.take() else {
                    continue;
                };
                self.on_section(id, section, Ok(block));
                self.pump(id);
            }
        }
    }

    /// Takes the events of a request stream's state until it needs more bytes.
    fn pump(&mut self, id: u64) {
        // Bounded by the bytes the state holds: each event consumes some.
        while self.is_open() {
            let Some(Incoming::Request { state, blocked }) = self.incoming.get_mut(&id) else {
                return;
            };
            if blocked.is_some() {
                return;
            }
            let event = match state.poll_event() {
                Ok(Some(event)) => event,
                Ok(None) => return,
                Err(RecvError::Connection(error)) => return self.fail(error),
                Err(error) => return self.stream_error(id, error.code()),
            };
            match event {
                RecvEvent::Head(section) => {
                    let block = self.state.decode_headers(id, section);
                    self.on_section(id, Section::Head, block);
                }
                RecvEvent::Trailers(section) => {
                    let block = self.state.decode_headers(id, section);
                    self.on_section(id, Section::Trailers, block);
                }
                RecvEvent::Data(chunk) => {
                    if let Some(message) = self.messages.get_mut(&id) {
                        message.body.extend_from_slice(&chunk);
                    }
                }
                RecvEvent::End => {
                    let has_head = state.has_head();
                    if let Some(message) = self.messages.get_mut(&id) {
                        message.ended = true;
                    }
                    self.end_request(id);
                    if self.side == Side::Server && !has_head {
                        // RFC 9114 §4.1.2: the stream ended before a complete request.
                        let code = Code::H3_REQUEST_INCOMPLETE;
                        self.state.handle_request_error(code);
                        self.actions.push(StreamAction::Reset(id, code));
                        self.outbox.push_back(Transfer::Reset { id, code });
                    }
                    return;
                }
            }
        }
    }

    /// A decoded (or blocked) head or trailer section of request stream `id`.
    fn on_section(&mut self, id: u64, section: Section, block: Result<HeaderBlock, ProtocolError>) {
        let fields = match block {
            Ok(HeaderBlock::Fields(fields)) => fields,
            Ok(HeaderBlock::Blocked) => {
                if let Some(Incoming::Request { blocked, .. }) = self.incoming.get_mut(&id) {
                    *blocked = Some(section);
                }
                return;
            }
            // RFC 9114 §4.2.2: over our SETTINGS_MAX_FIELD_SECTION_SIZE.
            Ok(HeaderBlock::TooLarge) => return self.stream_error(id, Code::H3_EXCESSIVE_LOAD),
            Err(error) => return self.fail(error),
        };
        let Some(Incoming::Request { state, .. }) = self.incoming.get_mut(&id) else {
            return;
        };
        let Some(message) = self.messages.get_mut(&id) else {
            return;
        };
        let result = match (section, self.side) {
            (Section::Trailers, _) => state.handle_trailers(&fields).map(|trailers| {
                message.trailers = Some(trailers);
            }),
            (Section::Head, Side::Server) => state
                .handle_request_head(&fields, self.config.enable_extended_connect)
                .map(|head| {
                    message.request = Some(head.request);
                }),
            (Section::Head, _) => state.handle_response_head(&fields).map(|head| match head {
                Some(head) => message.response = Some(head.response),
                None => message.interim += 1,
            }),
        };
        if let Err(error) = result {
            // RFC 9114 §4.1.2: a malformed message is a stream error.
            self.stream_error(id, Code::from(error));
        }
    }

    fn receive_reset(&mut self, id: u64, code: Code) {
        match self.incoming.get(&id) {
            Some(Incoming::Critical(kind)) => {
                let error = self.state.handle_critical_end(*kind);
                self.fail(error);
            }
            Some(Incoming::Request { state, .. }) => {
                if !state.has_head() {
                    // RFC 9204 §4.4.2: the peer's encoder may let go of what the head used.
                    self.state.cancel_stream(id);
                }
                self.state.handle_request_reset_by_peer();
                self.end_request(id);
                if let Some(message) = self.messages.get_mut(&id) {
                    message.reset_by_peer = Some(code);
                }
            }
            _ => {}
        }
    }

    fn receive_stop(&mut self, id: u64, code: Code) {
        if let Some(slot) = self.ours.iter().position(|ours| *ours == Some(id)) {
            // RFC 9114 §6.2.1: the peer stopped one of our critical streams.
            let error = self.state.handle_critical_end(OURS[slot]);
            return self.fail(error);
        }
        if let Some(message) = self.messages.get_mut(&id) {
            message.stopped_by_peer = Some(code);
        }
    }

    /// The clock moved to `now`: request heads past their deadline fail.
    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        let expired: Vec<(u64, Code)> = self
            .incoming
            .iter_mut()
            .filter_map(|(id, entry)| match entry {
                Incoming::Request { state, .. } => state
                    .handle_timeout(now)
                    .err()
                    .map(|error| (*id, error.code())),
                _ => None,
            })
            .collect();
        for (id, code) in expired {
            self.stream_error(id, code);
        }
        self.flush();
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.incoming
            .values()
            .filter_map(|entry| match entry {
                Incoming::Request { state, .. } => state.poll_timeout(),
                _ => None,
            })
            .min()
    }
}

/// What [`Pair::tamper`] calls for every transfer: it may alter it, and returns whether to
/// deliver it.
pub type Tamper = Box<dyn FnMut(Direction, &mut Transfer) -> bool>;

/// A client and a server [`Peer`] joined in memory. See the [module docs](self).
pub struct Pair {
    /// The client.
    pub client: Peer,
    /// The server.
    pub server: Peer,
    start: Instant,
    now: Instant,
    /// Whose transfer goes next, so that neither side waits on the other's long queue.
    client_turn: bool,
    tamper: Option<Tamper>,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("client", &self.client)
            .field("server", &self.server)
            .field("elapsed", &self.elapsed())
            .finish_non_exhaustive()
    }
}

impl Default for Pair {
    fn default() -> Self {
        let config = Config {
            grease: false,
            ..Config::default()
        };
        Self::new(config.clone(), config)
    }
}

impl Pair {
    /// A client with `client` and a server with `server`, each having queued its control
    /// stream and SETTINGS, nothing delivered yet.
    pub fn new(client: Config, server: Config) -> Self {
        let start = Instant::now();
        Self {
            client: Peer::new(Side::Client, client, start),
            server: Peer::new(Side::Server, server, start),
            start,
            now: start,
            client_turn: true,
            tamper: None,
        }
    }

    /// Calls `tamper` for every transfer before it is delivered: it may change it, and returns
    /// whether to deliver it.
    pub fn tamper(&mut self, tamper: impl FnMut(Direction, &mut Transfer) -> bool + 'static) {
        self.tamper = Some(Box::new(tamper));
    }

    /// Delivers one transfer, alternating sides; `false` when neither side has one.
    pub fn step(&mut self) -> bool {
        let from_client = if self.client_turn {
            !self.client.outbox.is_empty()
        } else {
            self.server.outbox.is_empty()
        };
        self.client_turn = !self.client_turn;
        let (from, to, direction) = if from_client {
            (&mut self.client, &mut self.server, Direction::ToServer)
        } else {
            (&mut self.server, &mut self.client, Direction::ToClient)
        };
        let Some(mut transfer) = from.outbox.pop_front() else {
            return false;
        };
        let deliver = match &mut self.tamper {
            Some(tamper) => tamper(direction, &mut transfer),
            None => true,
        };
        if deliver {
            to.receive(transfer);
        }
        true
    }

    /// Delivers transfers until neither side has one or `max_steps` were delivered; returns
    /// whether it went quiet.
    pub fn drive_bounded(&mut self, max_steps: usize) -> bool {
        for _ in 0..max_steps {
            if !self.step() {
                return true;
            }
        }
        self.client.outbox.is_empty() && self.server.outbox.is_empty()
    }

    /// Delivers transfers until neither side has one. Panics after 100,000 steps: two
    /// endpoints that never go quiet are a bug.
    pub fn drive(&mut self) {
        assert!(self.drive_bounded(100_000), "the pair never went quiet");
    }

    /// Moves the virtual clock by `by`, fires the timers that are due, and drives.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        self.client.handle_timeout(now);
        self.server.handle_timeout(now);
        self.drive();
    }

    /// How far the virtual clock has moved.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The earliest timer either side has, as time from now.
    pub fn next_timeout(&self) -> Option<Duration> {
        let next = [self.client.next_timeout(), self.server.next_timeout()]
            .into_iter()
            .flatten()
            .min()?;
        Some(next.saturating_duration_since(self.now))
    }
}

/// Encodes a frame into bytes, for tests that write raw streams.
pub fn frame_bytes(frame: &Frame) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame.encode(&mut bytes);
    bytes
}

/// Encodes a varint, for tests that write raw streams.
pub fn varint_bytes(value: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    VarInt::from_u64(value)
        .expect("a value below 2^62")
        .encode(&mut bytes);
    bytes
}
