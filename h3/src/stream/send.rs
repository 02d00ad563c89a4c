//! [`SendHalf`]: the sending direction of a request stream, written in the caller's task.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use quay_qpack::Field;
use quay_transport::{SendStream, VarInt};

use super::live::Live;
use crate::driver::shared::Shared;
use crate::error::{Code, StreamError};
use crate::error::{Feature, Misuse};
use crate::proto::Codec;
use crate::proto::capsule::Capsule;
use crate::proto::datagram::Datagram;
use crate::proto::frame::{FrameHeader, FrameType};
use crate::proto::headers;
use crate::stats::{FrameStats, RequestStats, StreamFrames};

/// The payload of the GREASE frame sent before the first header section of a connection
/// (RFC 9114 §7.2.8: any payload).
const GREASE_PAYLOAD: &[u8] = b"quay";

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
    /// Frames sent, by type; added to the connection's when this half is dropped.
    frames: StreamFrames,
    /// Body bytes sent.
    body_sent: u64,
    /// Encoded sizes of the head and the trailers sent (a section is at most the peer's
    /// SETTINGS_MAX_FIELD_SECTION_SIZE, far below 4 GiB).
    head_sent: u32,
    trailers_sent: u32,
    /// The code the peer stopped the stream with, if a write saw it.
    stopped_by_peer: Option<Code>,
}

impl SendHalf {
    pub(crate) fn new(stream: SendStream, live: Arc<Live>) -> Self {
        Self {
            stream,
            state: SendState::Head,
            live,
            frames: StreamFrames::default(),
            body_sent: 0,
            head_sent: 0,
            trailers_sent: 0,
            stopped_by_peer: None,
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.live.shared
    }

    /// The tracing span of the stream's connection (side, connection, peer address, original
    /// destination connection ID), for an extension's own spans, such as a session's.
    pub fn connection_span(&self) -> &tracing::Span {
        self.live.shared.span()
    }

    /// The connection's qlog file, if it has one: extensions (WebTransport) write their events
    /// to it, next to quinn's and this crate's.
    pub fn qlog(&self) -> Option<&quay_transport::Qlog> {
        self.live.shared.qlog.as_ref()
    }

    /// The QUIC stream ID.
    pub fn id(&self) -> quay_transport::StreamId {
        self.stream.id()
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
            return Err(StreamError::Invalid(Misuse::HeadAlreadySent));
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
        // The GREASE frame goes before the HEADERS frame: decided, and logged, before the
        // section is encoded (which logs the HEADERS frame).
        let grease = self.shared().take_grease_frame().then(|| FrameHeader {
            ty: FrameType::grease(self.stream_id() % 1000),
            len: len_varint(GREASE_PAYLOAD.len()),
        });
        if let (Some(grease), Some(qlog)) = (&grease, self.qlog()) {
            crate::qlog::frame_header(qlog, true, self.stream_id(), grease);
        }
        let section = self.shared().encode(self.stream_id(), fields).await?;
        let mut header = BytesMut::with_capacity(16);
        if let Some(grease) = grease {
            let size = grease.encoded_len() + GREASE_PAYLOAD.len();
            self.frames.count(grease.ty, size as u64);
            grease.encode(&mut header);
            header.extend_from_slice(GREASE_PAYLOAD);
        }
        let headers = FrameHeader {
            ty: FrameType::HEADERS,
            len: len_varint(section.len()),
        };
        let size = (headers.encoded_len() + section.len()) as u64;
        self.frames.count(FrameType::HEADERS, size);
        let section_size = u32::try_from(section.len()).unwrap_or(u32::MAX);
        match self.state {
            SendState::Head => self.head_sent = section_size,
            _ => self.trailers_sent = section_size,
        }
        headers.encode(&mut header);
        self.write(&mut [header.freeze(), section]).await
    }

    /// Sends a piece of the body in one DATA frame. Empty pieces send nothing.
    pub async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
        if self.state != SendState::Body {
            return Err(StreamError::Invalid(match self.state {
                SendState::Head => Misuse::BodyBeforeHead,
                _ => Misuse::BodyAfterEnd,
            }));
        }
        self.reset_if_malformed()?;
        if data.is_empty() {
            return Ok(());
        }
        let mut header = BytesMut::with_capacity(9);
        let frame = FrameHeader::data(len_varint(data.len()));
        frame.encode(&mut header);
        let size = (frame.encoded_len() + data.len()) as u64;
        self.frames.count(FrameType::DATA, size);
        if let Some(qlog) = self.qlog() {
            crate::qlog::frame_header(qlog, true, self.stream_id(), &frame);
        }
        self.body_sent += data.len() as u64;
        self.write(&mut [header.freeze(), data]).await
    }

    /// Sends the trailer section and ends the stream.
    pub async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
        if self.state != SendState::Body {
            return Err(StreamError::Invalid(Misuse::TrailersOutsideBody));
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
            .map_err(|_| StreamError::Invalid(Misuse::StreamClosed))
    }

    /// What this half sent: body bytes, head and trailer sizes, and the code the peer stopped
    /// it with, if it did.
    pub fn stats(&self) -> RequestStats {
        RequestStats {
            body_sent: self.body_sent,
            head_sent: u64::from(self.head_sent),
            trailers_sent: u64::from(self.trailers_sent),
            stopped_by_peer: self.stopped_by_peer,
            ..RequestStats::default()
        }
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
                Err(StreamError::Invalid(Misuse::PeerMessageMalformed))
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
            Err(_) => Err(StreamError::Invalid(Misuse::ZeroRttRejected)),
        }
    }

    async fn write(&mut self, chunks: &mut [Bytes]) -> Result<(), StreamError> {
        let written = self.stream.write_all_chunks(chunks).await;
        written.map_err(|e| {
            let error = write_error(self.shared(), e);
            if let StreamError::Stopped(code) = error {
                self.stopped_by_peer = Some(code);
            }
            error
        })
    }
}

impl Drop for SendHalf {
    fn drop(&mut self) {
        if self.frames != StreamFrames::default() {
            let sent = self.frames.to_stats();
            let mut inner = self.live.shared.lock();
            inner
                .proto
                .handle_request_frames(&sent, &FrameStats::default());
        }
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
        _ => StreamError::Invalid(Misuse::StreamClosed),
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
        return Err(StreamError::NotNegotiated(Feature::HttpDatagrams));
    }
    let stream_id = VarInt::from_u64(id).unwrap_or(VarInt::MAX);
    let mut buf = BytesMut::with_capacity(Datagram::prefix_len(stream_id) + payload.len());
    Datagram::encode_prefix(stream_id, &mut buf)
        .map_err(|_| StreamError::Invalid(Misuse::NotARequestStream))?;
    buf.extend_from_slice(&payload);
    if let Some(qlog) = &shared.qlog {
        crate::qlog::datagram(qlog, true, id, payload.len());
    }
    shared
        .conn
        .send_datagram(buf.freeze())
        .map_err(|e| match e {
            quay_transport::SendDatagramError::ConnectionLost(e) => {
                StreamError::ConnectionLost(shared.connection_error(e))
            }
            quay_transport::SendDatagramError::TooLarge => {
                StreamError::Invalid(Misuse::DatagramTooLarge)
            }
            _ => StreamError::NotNegotiated(Feature::QuicDatagrams),
        })
}

fn len_varint(len: usize) -> VarInt {
    // A buffer in memory is shorter than 2^62 bytes.
    VarInt::try_from(len).unwrap_or(VarInt::MAX)
}
