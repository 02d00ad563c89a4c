//! The request state machine: pure, one per request stream, no tasks, no sockets, no clock.
//!
//! This module owns [`RequestState`], every rule about what the peer may send on one request
//! stream (RFC 9114 §4.1): the frame order (HEADERS, DATA, trailers; PUSH_PROMISE only towards a
//! client; unknown frame types skipped, known ones out of place a connection error), the
//! `content-length` check against the DATA received (§4.1.2), interim responses (§4.1), no
//! content after HEAD, 204 and 304 (RFC 9110 §6.4.1), the CONNECT tunnel (§4.4), and what a
//! malformed head means (§4.1.2).
//!
//! It does not own QPACK (a header section is handed out as its encoded bytes, decoded by
//! [`crate::connection::ConnectionState::decode_headers`], and given back as fields), the
//! capsules of an Extended CONNECT body ([`crate::proto::capsule::CapsuleReader`]), the sending
//! direction (whose order the request stream types' methods keep), or any waiting.
//!
//! # Call order
//!
//! 1. [`RequestState::request`] (server: the peer sends a request) or
//!    [`RequestState::response`] (client: the peer sends a response to `method`).
//! 2. Feed what the stream delivers with [`RequestState::handle_data`] and, at its end,
//!    [`RequestState::handle_end`].
//! 3. Call [`RequestState::poll_event`] until it returns `Ok(None)` (more bytes are needed):
//!    - [`RecvEvent::Head`]: decode the section, then hand the fields to
//!      [`RequestState::handle_request_head`] or [`RequestState::handle_response_head`];
//!    - [`RecvEvent::Data`]: a piece of the body, already counted against `content-length`;
//!    - [`RecvEvent::Trailers`]: decode the section, then [`RequestState::handle_trailers`];
//!    - [`RecvEvent::End`]: the stream ended cleanly (before any head, or after the body).
//!
//! A [`RecvError::Connection`] means closing the connection with its code; a
//! [`RecvError::Message`] means the message is malformed: stop reading and reset the stream with
//! its code (H3_MESSAGE_ERROR, RFC 9114 §4.1.2).

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::connection::ProtocolError;
use crate::error::Code;
use crate::proto::frame::Frame;
use crate::proto::headers::{self, FieldLine, MessageError, RequestHead, ResponseHead};
use crate::proto::message::{BodyLength, MessageFrames, MessagePart};
use crate::proto::reader::{FrameEvent, FrameReader};
use crate::stats::{FrameStats, StreamFrames};

/// What the peer sent next on a request stream; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvEvent {
    /// An encoded header section that opens a message (a request, an interim or a final
    /// response).
    Head(Bytes),
    /// A piece of the body (never empty).
    Data(Bytes),
    /// An encoded trailer section: the body is over.
    Trailers(Bytes),
    /// The stream ended cleanly: before any head, or after the body (its length checked).
    End,
}

/// Why a request stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The peer broke a connection-wide rule (RFC 9114 §7.1, §4.1): close the connection with
    /// the error's code.
    #[error(transparent)]
    Connection(#[from] ProtocolError),
    /// The message is malformed (RFC 9114 §4.1.2): a stream error with [`RecvError::code`].
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The request head did not arrive in time (see [`RequestState::set_head_deadline`]): a
    /// stream error with H3_REQUEST_INCOMPLETE (RFC 9114 §4.1.2).
    #[error("no complete request head in time")]
    Incomplete,
}

impl RecvError {
    /// The code to close the connection or reset the stream with.
    pub fn code(&self) -> Code {
        match self {
            Self::Connection(error) => Code::from(error),
            Self::Message(error) => Code::from(error.clone()),
            Self::Incomplete => Code::H3_REQUEST_INCOMPLETE,
        }
    }
}

/// The receiving side of one request stream. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct RequestState {
    reader: FrameReader,
    frames: MessageFrames,
    body: BodyLength,
    /// The part the last frame header announced.
    part: MessagePart,
    /// The stream's end was fed.
    ended: bool,
    /// The body is over (end of stream, or trailers received).
    body_done: bool,
    /// Client: the request was HEAD, so no response has content (RFC 9110 §6.4.1).
    head_request: bool,
    /// Client: the request was CONNECT, so a 2xx response opens a tunnel (RFC 9114 §4.4).
    connect: bool,
    /// Server: when the request head must have arrived.
    head_deadline: Option<Instant>,
    /// A whole head section was handed out as [`RecvEvent::Head`].
    head_delivered: bool,
    /// Frames received, by type.
    received: StreamFrames,
    /// Encoded sizes of the last head and of the trailers received.
    head_bytes: u64,
    trailer_bytes: u64,
}

impl RequestState {
    /// The state of a stream on which the peer sends a request (a server's view). Frames with a
    /// payload over `max_frame_payload` are connection errors.
    pub fn request(max_frame_payload: u64) -> Self {
        Self::new(MessageFrames::request(), max_frame_payload, None)
    }

    /// The state of a stream on which the peer answers a request with `method` (a client's
    /// view).
    pub fn response(max_frame_payload: u64, method: &Method) -> Self {
        Self::new(MessageFrames::response(), max_frame_payload, Some(method))
    }

    fn new(frames: MessageFrames, max_frame_payload: u64, method: Option<&Method>) -> Self {
        Self {
            reader: FrameReader::new(max_frame_payload),
            frames,
            body: BodyLength::new(None),
            part: MessagePart::Head,
            ended: false,
            body_done: false,
            head_request: method == Some(&Method::HEAD),
            connect: method == Some(&Method::CONNECT),
            head_deadline: None,
            head_delivered: false,
            received: StreamFrames::default(),
            head_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Server: the request head must be complete by `deadline` (a bound on what a peer can
    /// hold open with a few bytes per stream); see [`RequestState::handle_timeout`].
    pub fn set_head_deadline(&mut self, deadline: Instant) {
        self.head_deadline = Some(deadline);
    }

    /// When [`RequestState::handle_timeout`] should be called next, if ever: the head deadline,
    /// until the head has arrived.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.head_deadline.filter(|_| !self.head_delivered)
    }

    /// The clock reached `now`. [`RecvError::Incomplete`] if the head deadline passed without a
    /// head: reset and stop the stream with H3_REQUEST_INCOMPLETE (RFC 9114 §4.1.2).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), RecvError> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(RecvError::Incomplete),
            _ => Ok(()),
        }
    }

    /// Takes bytes the stream delivered.
    pub fn handle_data(&mut self, chunk: Bytes) {
        self.reader.handle_data(chunk);
    }

    /// The stream ended (FIN). A frame it cut short is reported by
    /// [`RequestState::poll_event`] once the bytes before it are out (RFC 9114 §7.1).
    pub fn handle_end(&mut self) {
        self.ended = true;
    }

    /// Whether [`RequestState::handle_end`] was called.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether the HEADERS frame of the message head has started (its section may still be
    /// arriving).
    pub fn has_head(&self) -> bool {
        self.frames.has_head()
    }

    /// Whether the body is over (nothing but [`RecvEvent::End`] can follow).
    pub fn is_body_done(&self) -> bool {
        self.body_done
    }

    /// The next event, `Ok(None)` when more bytes (or the end) are needed.
    pub fn poll_event(&mut self) -> Result<Option<RecvEvent>, RecvError> {
        self.poll_event_observed(|_| {})
    }

    /// [`RequestState::poll_event`], showing `observe` each frame event as it is read, before
    /// it is checked: every frame's header (unknown and reserved types included, whose
    /// payload is then skipped), each piece of DATA, and each whole frame other than DATA.
    /// For logs (qlog's `frame_parsed`); the events say nothing about whether the frame is
    /// allowed.
    pub fn poll_event_observed(
        &mut self,
        mut observe: impl FnMut(&FrameEvent),
    ) -> Result<Option<RecvEvent>, RecvError> {
        // Bounded by the buffered bytes: each turn consumes a frame event or returns.
        loop {
            if self.body_done && !self.has_body_left() {
                return Ok(self.ended.then_some(RecvEvent::End));
            }
            let event = self
                .reader
                .poll_event()
                // RFC 9114 §7.1: frame errors are connection errors, wherever they happen.
                .map_err(|error| RecvError::Connection(error.into()))?;
            let Some(event) = event else {
                if !self.ended {
                    return Ok(None);
                }
                // RFC 9114 §7.1: a frame cut by the end of the stream is H3_FRAME_ERROR.
                self.reader
                    .handle_end()
                    .map_err(|error| RecvError::Connection(error.into()))?;
                if self.frames.has_head() && !self.body_done {
                    self.body_done = true;
                    // RFC 9114 §4.1.2: less content than content-length said.
                    self.body.on_end()?;
                }
                return Ok(Some(RecvEvent::End));
            };
            observe(&event);
            match event {
                FrameEvent::Header(header) => {
                    let bytes = header.encoded_len() as u64 + header.len.into_inner();
                    self.received.count(header.ty, bytes);
                    // RFC 9114 §4.1: a frame out of order is a connection error.
                    self.part = self
                        .frames
                        .on_frame(header.ty)
                        .map_err(|error| RecvError::Connection(error.into()))?;
                }
                FrameEvent::Data(chunk) => {
                    // RFC 9114 §4.1.2: more content than content-length said.
                    self.body.on_data(chunk.len() as u64)?;
                    return Ok(Some(RecvEvent::Data(chunk)));
                }
                FrameEvent::Frame(Frame::Headers(section)) => {
                    if self.part == MessagePart::Trailers {
                        self.trailer_bytes = section.len() as u64;
                        return Ok(Some(RecvEvent::Trailers(section)));
                    }
                    self.head_delivered = true;
                    self.head_bytes = section.len() as u64;
                    return Ok(Some(RecvEvent::Head(section)));
                }
                FrameEvent::Frame(Frame::PushPromise(_)) => {
                    // RFC 9114 §7.2.5: we never send MAX_PUSH_ID, so any push ID is too big.
                    return Err(ProtocolError::Id("PUSH_PROMISE without MAX_PUSH_ID").into());
                }
                FrameEvent::Frame(_) => {}
            }
        }
    }

    /// After the trailers, frames may still follow that the order rules must see (an error) and
    /// unknown frames to skip; none of them is body.
    fn has_body_left(&self) -> bool {
        !self.reader.is_idle()
    }

    /// Checks a decoded request head (RFC 9114 §4.3.1, RFC 9220 §3 when
    /// `extended_connect` is on) and starts counting its body against `content-length`.
    pub fn handle_request_head<I>(
        &mut self,
        fields: I,
        extended_connect: bool,
    ) -> Result<RequestHead, MessageError>
    where
        I: IntoIterator,
        I::Item: FieldLine,
    {
        let head = headers::parse_request(fields)?;
        if head.protocol.is_some() && !extended_connect {
            // RFC 9220 §3: :protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL is malformed.
            return Err(MessageError::UnexpectedPseudo(":protocol"));
        }
        self.body = BodyLength::new(head.content_length);
        if head.request.method() == Method::CONNECT {
            // RFC 9114 §4.4: a CONNECT request carries the tunnel's bytes, whose length is
            // unknown.
            self.body = BodyLength::new(None);
        }
        Ok(head)
    }

    /// Checks a decoded response head (RFC 9114 §4.3.2). `Ok(None)` for an interim (1xx)
    /// response: another head follows (RFC 9114 §4.1). A final response starts the body:
    /// none after HEAD, 204 or 304 (RFC 9110 §6.4.1), a tunnel after a 2xx to CONNECT
    /// (RFC 9114 §4.4), else counted against `content-length`.
    pub fn handle_response_head<I>(
        &mut self,
        fields: I,
    ) -> Result<Option<ResponseHead>, MessageError>
    where
        I: IntoIterator,
        I::Item: FieldLine,
    {
        let head = headers::parse_response(fields)?;
        if head.is_interim() {
            self.frames.on_interim_response();
            return Ok(None);
        }
        let status = head.response.status();
        let no_content = self.head_request || status == 204 || status == 304;
        self.body = BodyLength::new(if no_content {
            Some(0)
        } else {
            head.content_length
        });
        if self.connect && status.is_success() {
            self.frames.tunnel();
            self.body = BodyLength::new(None);
        }
        Ok(Some(head))
    }

    /// Makes the stream a tunnel (RFC 9114 §4.4): from now on DATA and unknown frames only. A
    /// server calls it for an accepted CONNECT.
    pub fn tunnel(&mut self) {
        self.frames.tunnel();
        self.body = BodyLength::new(None);
    }

    /// Checks a decoded trailer section (RFC 9114 §4.1.2) and ends the body, checking its
    /// length.
    pub fn handle_trailers<I>(&mut self, fields: I) -> Result<HeaderMap, MessageError>
    where
        I: IntoIterator,
        I::Item: FieldLine,
    {
        self.body_done = true;
        let trailers = headers::parse_trailers(fields)?;
        self.body.on_end()?;
        Ok(trailers)
    }

    /// The body bytes received so far.
    pub fn body_received(&self) -> u64 {
        self.body.received()
    }

    /// The frames received so far, by type (HEADERS, DATA, and any other as `other`).
    pub fn frames_received(&self) -> FrameStats {
        self.received.to_stats()
    }

    /// Encoded sizes of the (last) head and of the trailers received so far.
    pub fn section_sizes(&self) -> (u64, u64) {
        (self.head_bytes, self.trailer_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Codec;
    use crate::proto::frame::FrameType;
    use bytes::BytesMut;

    const MAX: u64 = 1 << 20;

    fn frame(ty: FrameType, payload: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        ty.encode(&mut buf);
        crate::proto::VarInt::from_u64(payload.len() as u64)
            .unwrap()
            .encode(&mut buf);
        buf.extend_from_slice(payload);
        buf.freeze()
    }

    fn fields(lines: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
        lines
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect()
    }

    fn get(content_length: Option<&str>) -> Vec<(Bytes, Bytes)> {
        let mut lines = vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", "/"),
        ];
        if let Some(length) = content_length {
            lines.push(("content-length", length));
        }
        fields(&lines)
    }

    fn events(state: &mut RequestState) -> Result<Vec<RecvEvent>, RecvError> {
        let mut out = Vec::new();
        for _ in 0..100 {
            match state.poll_event()? {
                Some(event) => {
                    // A head or trailers is decoded and handed back before going on.
                    let stop = !matches!(event, RecvEvent::Data(_));
                    out.push(event);
                    if stop {
                        break;
                    }
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// RFC 9114 §4.1.2: "A request or response that is defined as having content when it
    /// contains a Content-Length header field is malformed if the value of the Content-Length
    /// header field does not equal the sum of the DATA frame lengths received."
    #[test]
    fn a_body_shorter_than_content_length_is_a_message_error() {
        let mut state = RequestState::request(MAX);
        state.handle_data(frame(FrameType::HEADERS, b"h"));
        assert_eq!(
            events(&mut state).unwrap(),
            [RecvEvent::Head(Bytes::from_static(b"h"))]
        );
        state.handle_request_head(get(Some("5")), false).unwrap();
        state.handle_data(frame(FrameType::DATA, b"abc"));
        state.handle_end();
        assert_eq!(state.poll_event(), Ok(Some(RecvEvent::Data("abc".into()))));
        let error = state.poll_event().unwrap_err();
        assert_eq!(error.code(), Code::H3_MESSAGE_ERROR);
    }

    /// RFC 9114 §4.1.2, the other way: more DATA than content-length fails at once.
    #[test]
    fn a_body_longer_than_content_length_is_a_message_error() {
        let mut state = RequestState::request(MAX);
        state.handle_data(frame(FrameType::HEADERS, b"h"));
        events(&mut state).unwrap();
        state.handle_request_head(get(Some("2")), false).unwrap();
        state.handle_data(frame(FrameType::DATA, b"abc"));
        assert_eq!(
            state.poll_event().unwrap_err().code(),
            Code::H3_MESSAGE_ERROR
        );
    }

    /// RFC 9114 §4.1: "Receipt of an invalid sequence of frames MUST be treated as a connection
    /// error of type H3_FRAME_UNEXPECTED."
    #[test]
    fn data_before_headers_is_a_connection_error() {
        let mut state = RequestState::request(MAX);
        state.handle_data(frame(FrameType::DATA, b"abc"));
        let error = state.poll_event().unwrap_err();
        assert!(matches!(error, RecvError::Connection(_)));
        assert_eq!(error.code(), Code::H3_FRAME_UNEXPECTED);
    }

    /// RFC 9114 §4.1: nothing but unknown frames after the trailers.
    #[test]
    fn data_after_trailers_is_a_connection_error() {
        let mut state = RequestState::request(MAX);
        state.handle_data(frame(FrameType::HEADERS, b"h"));
        events(&mut state).unwrap();
        state.handle_request_head(get(None), false).unwrap();
        state.handle_data(frame(FrameType::HEADERS, b"t"));
        assert_eq!(
            state.poll_event(),
            Ok(Some(RecvEvent::Trailers("t".into())))
        );
        state.handle_trailers(fields(&[("x", "1")])).unwrap();
        state.handle_data(frame(FrameType::DATA, b"abc"));
        assert_eq!(
            state.poll_event().unwrap_err().code(),
            Code::H3_FRAME_UNEXPECTED
        );
    }

    /// RFC 9114 §9: unknown frame types are skipped wherever they appear.
    #[test]
    fn unknown_frames_are_skipped() {
        let mut state = RequestState::request(MAX);
        state.handle_data(frame(
            FrameType::from_varint(crate::proto::VarInt::from_u32(0x21)),
            b"grease",
        ));
        state.handle_data(frame(FrameType::HEADERS, b"h"));
        state.handle_data(frame(
            FrameType::from_varint(crate::proto::VarInt::from_u32(0x21 + 0x1f)),
            b"",
        ));
        state.handle_data(frame(FrameType::DATA, b"x"));
        state.handle_end();
        assert_eq!(events(&mut state).unwrap(), [RecvEvent::Head("h".into())]);
        state.handle_request_head(get(Some("1")), false).unwrap();
        assert_eq!(
            events(&mut state).unwrap(),
            [RecvEvent::Data("x".into()), RecvEvent::End]
        );
    }

    /// RFC 9114 §7.2.5: a client that never sent MAX_PUSH_ID treats any PUSH_PROMISE as
    /// H3_ID_ERROR; a server never accepts one (H3_FRAME_UNEXPECTED).
    #[test]
    fn push_promise_is_a_connection_error_both_ways() {
        let mut client = RequestState::response(MAX, &Method::GET);
        client.handle_data(frame(FrameType::PUSH_PROMISE, &[0, 0]));
        assert_eq!(client.poll_event().unwrap_err().code(), Code::H3_ID_ERROR);
        let mut server = RequestState::request(MAX);
        server.handle_data(frame(FrameType::PUSH_PROMISE, &[0, 0]));
        assert_eq!(
            server.poll_event().unwrap_err().code(),
            Code::H3_FRAME_UNEXPECTED
        );
    }

    /// RFC 9114 §4.1: interim responses come before the final one; RFC 9110 §6.4.1: a response
    /// to HEAD has no content whatever content-length says.
    #[test]
    fn interim_responses_and_head() {
        let mut state = RequestState::response(MAX, &Method::HEAD);
        state.handle_data(frame(FrameType::HEADERS, b"1"));
        state.handle_data(frame(FrameType::HEADERS, b"2"));
        state.handle_end();
        assert_eq!(state.poll_event(), Ok(Some(RecvEvent::Head("1".into()))));
        let interim = fields(&[(":status", "103")]);
        assert!(state.handle_response_head(interim).unwrap().is_none());
        assert_eq!(state.poll_event(), Ok(Some(RecvEvent::Head("2".into()))));
        let head = fields(&[(":status", "200"), ("content-length", "10")]);
        assert!(state.handle_response_head(head).unwrap().is_some());
        assert_eq!(state.poll_event(), Ok(Some(RecvEvent::End)));
    }

    /// RFC 9114 §4.4: once a CONNECT tunnel is up, HEADERS is out of place.
    #[test]
    fn a_tunnel_carries_data_only() {
        let mut state = RequestState::response(MAX, &Method::CONNECT);
        state.handle_data(frame(FrameType::HEADERS, b"h"));
        events(&mut state).unwrap();
        let head = fields(&[(":status", "200")]);
        state.handle_response_head(head).unwrap();
        state.handle_data(frame(FrameType::DATA, b"tunnel"));
        assert_eq!(
            state.poll_event(),
            Ok(Some(RecvEvent::Data("tunnel".into())))
        );
        state.handle_data(frame(FrameType::HEADERS, b"t"));
        assert_eq!(
            state.poll_event().unwrap_err().code(),
            Code::H3_FRAME_UNEXPECTED
        );
    }

    /// RFC 9220 §3: `:protocol` is allowed only after SETTINGS_ENABLE_CONNECT_PROTOCOL.
    #[test]
    fn protocol_without_extended_connect_is_malformed() {
        let lines = fields(&[
            (":method", "CONNECT"),
            (":protocol", "webtransport"),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", "/"),
        ]);
        let mut state = RequestState::request(MAX);
        let error = state.handle_request_head(lines.clone(), false).unwrap_err();
        assert_eq!(Code::from(error), Code::H3_MESSAGE_ERROR);
        assert!(state.handle_request_head(lines, true).is_ok());
    }

    /// RFC 9114 §7.1: a frame cut by the end of the stream is H3_FRAME_ERROR.
    #[test]
    fn a_frame_cut_by_fin_is_a_frame_error() {
        let mut state = RequestState::request(MAX);
        let whole = frame(FrameType::HEADERS, b"abc");
        state.handle_data(whole.slice(..3));
        assert_eq!(state.poll_event(), Ok(None));
        state.handle_end();
        assert_eq!(state.poll_event().unwrap_err().code(), Code::H3_FRAME_ERROR);
    }

    /// RFC 9114 §4.1.2: a request stream without a complete head by the deadline is
    /// H3_REQUEST_INCOMPLETE; once the head is there the deadline no longer applies.
    #[test]
    fn a_head_not_complete_in_time_is_incomplete() {
        let start = Instant::now();
        let deadline = start + std::time::Duration::from_secs(10);
        let mut state = RequestState::request(MAX);
        state.set_head_deadline(deadline);
        let whole = frame(FrameType::HEADERS, b"abc");
        state.handle_data(whole.slice(..2));
        assert_eq!(state.poll_event(), Ok(None));
        assert_eq!(state.poll_timeout(), Some(deadline));
        assert_eq!(state.handle_timeout(start), Ok(()));
        let error = state.handle_timeout(deadline).unwrap_err();
        assert_eq!(error.code(), Code::H3_REQUEST_INCOMPLETE);

        let mut state = RequestState::request(MAX);
        state.set_head_deadline(deadline);
        state.handle_data(whole);
        assert_eq!(state.poll_event(), Ok(Some(RecvEvent::Head("abc".into()))));
        assert_eq!(state.poll_timeout(), None);
        assert_eq!(state.handle_timeout(deadline), Ok(()));
    }

    /// One lives in every request stream and WebTransport session: keep it small. The frame
    /// counters are most of it.
    #[test]
    fn stays_small() {
        assert!(
            size_of::<RequestState>() <= 384,
            "{}",
            size_of::<RequestState>()
        );
    }
}
