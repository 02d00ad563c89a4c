//! The connection state machine: pure, no tasks, no sockets, no clock.
//!
//! This module owns [`ConnectionState`], everything an HTTP/3 connection keeps beyond single
//! request streams: our SETTINGS and the peer's, the QPACK [`Encoder`] and [`Decoder`], the
//! peer's control stream (SETTINGS first and once, which frames may appear), the rule that each
//! critical stream exists once, GOAWAY in both directions, and the bytes we owe on our own
//! control and QPACK streams. Every violation is a [`ProtocolError`], a connection error whose
//! [`Code`] comes from one exhaustive `From`.
//!
//! It does not own request streams (their frames go through [`crate::proto::reader`] and
//! [`crate::proto::message`] in the user's task), QUIC, or any waiting: the driver
//! moves bytes between quinn and this type.
//!
//! # Call order
//!
//! 1. [`ConnectionState::new`]; open our control stream and write
//!    [`ConnectionState::poll_control`] to it (it starts with the stream type and SETTINGS).
//!    Open our QPACK encoder or decoder stream only once [`ConnectionState::poll_encoder`] or
//!    [`ConnectionState::poll_decoder`] first returns bytes (they then start with the stream
//!    type): RFC 9204 §4.2 lets an endpoint leave out a QPACK stream it does not use, so a
//!    connection whose header sections need neither stays at one stream of ours.
//! 2. For each unidirectional stream the peer opens, [`ConnectionState::handle_uni_stream`] with
//!    its decoded type, then feed its bytes to [`ConnectionState::handle_control`],
//!    [`ConnectionState::handle_encoder_stream`] or [`ConnectionState::handle_decoder_stream`]; a
//!    critical stream that ends goes to [`ConnectionState::handle_critical_end`].
//! 3. [`ConnectionState::encode_headers`] / [`ConnectionState::decode_headers`] for header
//!    sections; a section that came back [`Decoded::Blocked`] is picked up with
//!    [`ConnectionState::take_unblocked`] after a later encoder-stream chunk.
//! 4. After any call, poll the three outputs again and write what they return.
//!
//! For logs (quay-h3's qlog): [`ConnectionState::handle_control_observed`] shows each frame of
//! the peer's control stream as it is read, and after [`ConnectionState::record_table_events`]
//! [`ConnectionState::take_table_events`] gives the changes to both QPACK tables.
//!
//! After a `ProtocolError` close the connection with its code; the state is not meant to be used
//! further.

use std::num::NonZeroU64;
use std::sync::Arc;

use crate::proto::Codec;
use crate::proto::VarInt;
use bytes::Bytes;
use quay_qpack::{Decoded, Decoder, DecoderConfig, Encoder, EncoderConfig, Field, TableEvent};

use crate::config::Config;
use crate::error::Code;
use crate::proto::frame::{Frame, FrameError, FrameType, PriorityElement, PriorityUpdate};
use crate::proto::headers::{FieldLine, FromFieldLine};
use crate::proto::message::{ControlStreamFrames, FrameOrderError, Sender};
use crate::proto::reader::{FrameEvent, FrameReader};
use crate::proto::settings::{SettingId, Settings, SettingsError};
use crate::proto::stream::{StreamType, UniStreamHeader};
use crate::stats::{Count, FrameStats, H3Counts, H3Stats};

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Side {
    /// We opened the connection and send requests.
    Client,
    /// We accepted the connection and answer requests.
    Server,
}

/// A connection error caused by what the peer sent. [`Code::from`] gives the code to close the
/// connection with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame could not be decoded, or broke a size rule.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame arrived where it is not allowed, or the control stream did not start with
    /// SETTINGS.
    #[error(transparent)]
    FrameOrder(#[from] FrameOrderError),
    /// The peer opened a stream it must not open: a second control or QPACK stream, or a push
    /// stream to a server (RFC 9114 §6.2).
    #[error("stream creation error: {0}")]
    StreamCreation(&'static str),
    /// The peer closed or reset its control stream or a QPACK stream (RFC 9114 §6.2.1, RFC 9204
    /// §4.2).
    #[error("critical stream {0:?} closed")]
    ClosedCriticalStream(StreamType),
    /// A stream or push ID was used wrongly: a GOAWAY that grew or named a stream that cannot be
    /// a request stream, or a push stream we never allowed (RFC 9114 §5.2, §4.6).
    #[error("ID error: {0}")]
    Id(&'static str),
    /// QPACK failed: a field section, the encoder stream or the decoder stream (RFC 9204 §6).
    #[error(transparent)]
    Qpack(#[from] quay_qpack::Error),
    /// An HTTP datagram could not be parsed (RFC 9297 §2.1).
    #[error(transparent)]
    Datagram(#[from] crate::proto::datagram::DatagramError),
    /// An invariant of this crate broke; not the peer's fault.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<&ProtocolError> for Code {
    fn from(error: &ProtocolError) -> Self {
        match error {
            ProtocolError::Frame(e) => (*e).into(),
            ProtocolError::FrameOrder(e) => (*e).into(),
            ProtocolError::StreamCreation(_) => Self::H3_STREAM_CREATION_ERROR,
            ProtocolError::ClosedCriticalStream(_) => Self::H3_CLOSED_CRITICAL_STREAM,
            ProtocolError::Id(_) => Self::H3_ID_ERROR,
            // RFC 9204 §6: 0x200, 0x201 or 0x202, which always fit in a varint.
            ProtocolError::Qpack(e) => {
                Self::from_varint(VarInt::from_u64(e.code()).unwrap_or(VarInt::from_u32(0x200)))
            }
            ProtocolError::Datagram(e) => (*e).into(),
            ProtocolError::Internal(_) => Self::H3_INTERNAL_ERROR,
        }
    }
}

impl From<ProtocolError> for Code {
    fn from(error: ProtocolError) -> Self {
        Self::from(&error)
    }
}

/// What to do with a unidirectional stream the peer opened, once its type is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UniStream {
    /// The peer's control stream: feed it to [`ConnectionState::handle_control`].
    Control,
    /// The peer's QPACK encoder stream: [`ConnectionState::handle_encoder_stream`].
    Encoder,
    /// The peer's QPACK decoder stream: [`ConnectionState::handle_decoder_stream`].
    Decoder,
    /// A configured extension type: read the session ID varint that follows and hand the stream
    /// out.
    Extension(StreamType),
    /// Anything else (unknown, GREASE): discard it if [`UniStream::discards_whole`] says so,
    /// else stop reading it with H3_STREAM_CREATION_ERROR (RFC 9114 §6.2.3).
    Discard,
}

impl UniStream {
    /// The most bytes after its type that a [`UniStream::Discard`] stream may hold and still be
    /// read to its end and dropped rather than stopped.
    pub const DISCARD_LIMIT: usize = 1024;

    /// Whether a stream of an unknown type is read to its end and its bytes dropped (`true`)
    /// rather than stopped with H3_STREAM_CREATION_ERROR: RFC 9114 §6.2.3 allows either. Only
    /// a stream whose end has arrived (`finished`) with at most [`Self::DISCARD_LIMIT`] bytes
    /// after its type is discarded: the GREASE streams peers send are like that, and stopping
    /// them would cost a STOP_SENDING frame, often a packet of its own, for a stream that has
    /// already ended. Anything else is stopped, so a peer cannot make us read without bound.
    pub fn discards_whole(len: usize, finished: bool) -> bool {
        finished && len <= Self::DISCARD_LIMIT
    }
}

/// Which QPACK dynamic table a [`TableEvent`] happened to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpackTable {
    /// Our encoder's: the table our encoder stream builds in the peer's decoder.
    Encoder,
    /// Our decoder's: the table the peer's encoder stream builds.
    Decoder,
}

/// The outcome of [`ConnectionState::decode_headers`] that concerns only one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderBlock {
    /// The decoded field lines.
    Fields(Vec<Field>),
    /// The section waits for encoder-stream data (RFC 9204 §2.2.1).
    Blocked,
    /// The decoded section is larger than our SETTINGS_MAX_FIELD_SECTION_SIZE; the stream should
    /// be reset (RFC 9114 §4.2.2).
    TooLarge,
}

/// The pure state of one HTTP/3 connection. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct ConnectionState {
    side: Side,
    local_settings: Settings,
    peer_settings: Option<Settings>,
    encoder: Encoder,
    decoder: Decoder,
    control_reader: FrameReader,
    control_frames: ControlStreamFrames,
    seen_control: bool,
    seen_encoder: bool,
    seen_decoder: bool,
    extension_uni: Arc<[StreamType]>,
    control_out: Vec<u8>,
    /// Bytes for our QPACK encoder and decoder streams, from the first instruction on: a
    /// connection whose header sections use only the static table never has any.
    qpack_out: Option<Box<QpackOut>>,
    /// Whether our encoder and decoder streams have been started (their type queued).
    encoder_started: bool,
    decoder_started: bool,
    goaway_sent: MaybeId,
    goaway_received: MaybeId,
    peer_max_push_id: MaybeId,
    /// Blocked field sections decoded since and not taken yet, by stream ID. Few streams block
    /// at once (the peer's limit is our SETTINGS_QPACK_BLOCKED_STREAMS), so a list does; it
    /// holds no buffer while empty.
    unblocked: Vec<(u64, Result<Vec<Field>, quay_qpack::Error>)>,
    /// Whether QUIC datagrams (RFC 9221) were negotiated, for the H3_DATAGRAM rule.
    quic_datagrams: bool,
    /// Live request streams, and how many of them are settled (finished on our side with
    /// nothing more wanted from the peer).
    requests_live: usize,
    requests_settled: usize,
    /// Server: the highest request stream ID accepted, for our GOAWAY.
    max_request_id: MaybeId,
    /// The application dropped its handle on the connection.
    handle_gone: bool,
    /// Server: [`CloseAction::Linger`] was given.
    lingering: bool,
    /// The counters of [`ConnectionState::stats`] that are not read off other state.
    stats: H3Counts,
}

/// How the connection should end, from [`ConnectionState::poll_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseAction {
    /// Close the connection now with H3_NO_ERROR: neither side can use it any more.
    Close,
    /// Server: nothing can use the connection, and a GOAWAY is queued. Close it once the client
    /// closes it or after a short linger, so that the last responses are delivered rather than
    /// discarded by the QUIC close.
    Linger,
}

/// A stream or push ID, or none, in 8 bytes rather than `Option<VarInt>`'s 16: an ID is a
/// varint, below 2^62, so the ID plus one is never zero. [`ConnectionState`] keeps four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MaybeId(Option<NonZeroU64>);

impl MaybeId {
    const NONE: Self = Self(None);

    fn some(id: VarInt) -> Self {
        Self(NonZeroU64::new(id.into_inner() + 1))
    }

    fn get(self) -> Option<VarInt> {
        let id = self.0?.get() - 1;
        // Always a varint: `some` took one.
        VarInt::from_u64(id).ok()
    }

    fn is_some(self) -> bool {
        self.0.is_some()
    }

    fn is_none(self) -> bool {
        self.0.is_none()
    }
}

/// What [`ConnectionState`] queued for our QPACK encoder and decoder streams.
#[derive(Debug, Default)]
struct QpackOut {
    encoder: Vec<u8>,
    decoder: Vec<u8>,
}

impl ConnectionState {
    /// A connection for `side` announcing the settings of `config`. `seed` picks the GREASE
    /// values (any number; the driver uses a random one).
    pub fn new(side: Side, config: &Config, seed: u64) -> Self {
        let local_settings = config.settings(seed);
        let encoder = Encoder::new(
            EncoderConfig::default().max_table_capacity(config.qpack_max_table_capacity),
        );
        let decoder = Decoder::new(
            DecoderConfig::default()
                .max_table_capacity(config.qpack_max_table_capacity)
                .max_blocked_streams(config.qpack_blocked_streams)
                .max_field_section_size(config.max_field_section_size),
        );
        let mut control_out = Vec::new();
        let mut stats = H3Counts::default();
        UniStreamHeader::Control.encode(&mut control_out);
        let mut frames = vec![Frame::Settings(local_settings.clone())];
        if config.grease {
            // RFC 9114 §7.2.8: reserved frame types must be ignored; send one to check.
            frames.push(Frame::grease(seed % 1000, Bytes::from_static(b"quay")));
        }
        for frame in frames {
            stats
                .frames_sent
                .count(frame.ty(), frame.encoded_len() as u64);
            frame.encode(&mut control_out);
        }
        let peer = match side {
            Side::Client => Sender::Server,
            Side::Server => Sender::Client,
        };
        Self {
            side,
            local_settings,
            peer_settings: None,
            encoder,
            decoder,
            control_reader: FrameReader::new(config.max_frame_payload),
            control_frames: ControlStreamFrames::new(peer),
            seen_control: false,
            seen_encoder: false,
            seen_decoder: false,
            extension_uni: config
                .connection_config()
                .extension_uni_stream_types
                .clone(),
            control_out,
            qpack_out: None,
            encoder_started: false,
            decoder_started: false,
            goaway_sent: MaybeId::NONE,
            goaway_received: MaybeId::NONE,
            peer_max_push_id: MaybeId::NONE,
            unblocked: Vec::new(),
            // RFC 9297 §2.1.1 needs QUIC datagrams only when both ends announce H3_DATAGRAM; a
            // state made without the transport's answer assumes they are there.
            quic_datagrams: true,
            requests_live: 0,
            requests_settled: 0,
            max_request_id: MaybeId::NONE,
            handle_gone: false,
            lingering: false,
            stats,
        }
    }

    /// Which end we are.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The SETTINGS we announce.
    pub fn local_settings(&self) -> &Settings {
        &self.local_settings
    }

    /// The peer's SETTINGS, once received.
    pub fn peer_settings(&self) -> Option<&Settings> {
        self.peer_settings.as_ref()
    }

    /// The ID in the last GOAWAY we sent.
    pub fn goaway_sent(&self) -> Option<VarInt> {
        self.goaway_sent.get()
    }

    /// The ID in the last GOAWAY the peer sent: a server's names the first request stream it
    /// will not process (RFC 9114 §5.2).
    pub fn goaway_received(&self) -> Option<VarInt> {
        self.goaway_received.get()
    }

    /// The QPACK encoder, for inspection.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// The QPACK decoder, for inspection.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Classifies a unidirectional stream from its decoded prefix (RFC 9114 §6.2).
    pub fn handle_uni_stream(
        &mut self,
        header: UniStreamHeader,
    ) -> Result<UniStream, ProtocolError> {
        let counts = &mut self.stats;
        let kind = match header {
            UniStreamHeader::Control => UniStream::Control,
            UniStreamHeader::QpackEncoder => UniStream::Encoder,
            UniStreamHeader::QpackDecoder => UniStream::Decoder,
            UniStreamHeader::Push { .. } => {
                counts.bump(Count::PeerPush);
                return Err(match self.side {
                    // RFC 9114 §6.2.2: only servers push.
                    Side::Server => ProtocolError::StreamCreation("push stream from a client"),
                    // RFC 9114 §4.6: we never sent MAX_PUSH_ID, so every push ID is over the
                    // limit.
                    Side::Client => ProtocolError::Id("push stream without MAX_PUSH_ID"),
                });
            }
            header if self.extension_uni.contains(&header.ty()) => {
                UniStream::Extension(header.ty())
            }
            _ => UniStream::Discard,
        };
        let seen = match kind {
            UniStream::Control => {
                counts.bump(Count::PeerControl);
                &mut self.seen_control
            }
            UniStream::Encoder => {
                counts.bump(Count::PeerQpack);
                &mut self.seen_encoder
            }
            UniStream::Decoder => {
                counts.bump(Count::PeerQpack);
                &mut self.seen_decoder
            }
            UniStream::Extension(_) => {
                counts.bump(Count::PeerExtension);
                return Ok(kind);
            }
            _ => {
                counts.bump(Count::PeerUnknown);
                return Ok(kind);
            }
        };
        // RFC 9114 §6.2.1, RFC 9204 §4.2: only one of each critical stream.
        if std::mem::replace(seen, true) {
            return Err(ProtocolError::StreamCreation(match kind {
                UniStream::Control => "second control stream",
                UniStream::Encoder => "second QPACK encoder stream",
                _ => "second QPACK decoder stream",
            }));
        }
        Ok(kind)
    }

    /// A bidirectional stream the peer opened; `extension` when it started with a configured
    /// extension's signal. A client accepts server-initiated bidirectional streams only for an
    /// extension (RFC 9114 §6.1: H3_STREAM_CREATION_ERROR otherwise); a server takes every one
    /// as a request stream.
    pub fn handle_peer_bidi_stream(&mut self, extension: bool) -> Result<(), ProtocolError> {
        self.stats.bump(Count::PeerBidi);
        if self.side == Side::Client && !extension {
            return Err(ProtocolError::StreamCreation(
                "server-initiated bidirectional stream without an extension signal",
            ));
        }
        Ok(())
    }

    /// Processes bytes from the peer's control stream (after its type).
    pub fn handle_control(&mut self, chunk: Bytes) -> Result<(), ProtocolError> {
        self.handle_control_observed(chunk, |_| {})
    }

    /// [`ConnectionState::handle_control`], showing `observe` each frame event as it is read,
    /// before it is checked: every frame's header (unknown and reserved types included, whose
    /// payload is then skipped) and each whole frame. For logs (qlog's `frame_parsed`).
    pub fn handle_control_observed(
        &mut self,
        chunk: Bytes,
        mut observe: impl FnMut(&FrameEvent),
    ) -> Result<(), ProtocolError> {
        self.control_reader.handle_data(chunk);
        while let Some(event) = self.control_reader.poll_event()? {
            observe(&event);
            match event {
                FrameEvent::Header(header) => {
                    let bytes = header.encoded_len() as u64 + header.len.into_inner();
                    self.stats.frames_received.count(header.ty, bytes);
                    self.control_frames.on_frame(header.ty)?;
                }
                // The order check refuses DATA before its payload is read.
                FrameEvent::Data(_) => {
                    return Err(FrameOrderError::Unexpected(FrameType::DATA).into());
                }
                FrameEvent::Frame(frame) => self.handle_control_frame(frame)?,
            }
        }
        Ok(())
    }

    fn handle_control_frame(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        match frame {
            Frame::Settings(settings) => {
                // RFC 9204 §5: the encoder may use what the peer's decoder allows.
                self.encoder.apply_peer_settings(
                    settings.qpack_max_table_capacity(),
                    settings.qpack_blocked_streams(),
                );
                // RFC 9297 §2.1.1: H3_DATAGRAM without QUIC datagrams (RFC 9221) is
                // H3_SETTINGS_ERROR, when we announced it too.
                if settings.h3_datagram()
                    && self.local_settings.h3_datagram()
                    && !self.quic_datagrams
                {
                    return Err(ProtocolError::Frame(FrameError::Settings(
                        SettingsError::InvalidValue {
                            id: SettingId::H3_DATAGRAM,
                            value: VarInt::from_u32(1),
                        },
                    )));
                }
                self.peer_settings = Some(settings);
            }
            Frame::Goaway(id) => {
                // RFC 9114 §5.2: a server's GOAWAY names a client-initiated bidirectional stream;
                // either side's GOAWAY must not grow.
                if self.side == Side::Client && id.into_inner() % 4 != 0 {
                    return Err(ProtocolError::Id(
                        "GOAWAY names a stream that is not a request stream",
                    ));
                }
                if self
                    .goaway_received
                    .get()
                    .is_some_and(|previous| id > previous)
                {
                    return Err(ProtocolError::Id("GOAWAY ID increased"));
                }
                self.goaway_received = MaybeId::some(id);
            }
            Frame::MaxPushId(id) => {
                // RFC 9114 §7.2.7: MAX_PUSH_ID must not decrease.
                if self
                    .peer_max_push_id
                    .get()
                    .is_some_and(|previous| id < previous)
                {
                    return Err(ProtocolError::Id("MAX_PUSH_ID decreased"));
                }
                self.peer_max_push_id = MaybeId::some(id);
            }
            Frame::CancelPush(id) => {
                // RFC 9114 §7.2.3: a push ID above what the connection allows. A client never
                // allows any (we send no MAX_PUSH_ID); a server allows what the client's
                // MAX_PUSH_ID says, though it never pushes.
                let allowed = match self.side {
                    Side::Client => false,
                    Side::Server => self.peer_max_push_id.get().is_some_and(|max| id <= max),
                };
                if !allowed {
                    return Err(ProtocolError::Id("CANCEL_PUSH for a push ID not allowed"));
                }
            }
            Frame::PriorityUpdate(PriorityUpdate {
                element: PriorityElement::Push(_),
                ..
            }) => {
                // RFC 9218 §7.2: we never promised a push, so no push ID is valid.
                return Err(ProtocolError::Id(
                    "PRIORITY_UPDATE for a push never promised",
                ));
            }
            Frame::PriorityUpdate(_) => {
                // Priorities are advisory (RFC 9218 §7); quinn schedules streams itself.
            }
            _ => {}
        }
        Ok(())
    }

    /// The peer's control stream or a QPACK stream ended or was reset, or the peer stopped one
    /// of ours (RFC 9114 §6.2.1, RFC 9204 §4.2).
    pub fn handle_critical_end(&mut self, stream: UniStream) -> ProtocolError {
        let ty = match stream {
            UniStream::Encoder => StreamType::QPACK_ENCODER,
            UniStream::Decoder => StreamType::QPACK_DECODER,
            _ => StreamType::CONTROL,
        };
        ProtocolError::ClosedCriticalStream(ty)
    }

    /// Processes bytes from the peer's QPACK encoder stream. Returns whether a blocked field
    /// section can now be picked up with [`ConnectionState::take_unblocked`].
    pub fn handle_encoder_stream(&mut self, chunk: &[u8]) -> Result<bool, ProtocolError> {
        self.stats.encoder_stream_received += chunk.len() as u64;
        let unblocked = self.decoder.handle_encoder_stream(chunk)?;
        let any = !unblocked.is_empty();
        for section in unblocked {
            let id = section.stream_id;
            match self.unblocked.iter_mut().find(|(known, _)| *known == id) {
                Some((_, result)) => *result = section.result,
                None => self.unblocked.push((id, section.result)),
            }
        }
        self.pull_decoder_stream();
        Ok(any)
    }

    /// Processes bytes from the peer's QPACK decoder stream.
    pub fn handle_decoder_stream(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        self.stats.decoder_stream_received += chunk.len() as u64;
        self.encoder.handle_decoder_stream(chunk)?;
        Ok(())
    }

    /// Makes the QPACK encoder and decoder record the changes to their dynamic tables, for
    /// [`ConnectionState::take_table_events`] (for logs; nothing is recorded without this).
    pub fn record_table_events(&mut self) {
        self.encoder.record_table_events();
        self.decoder.record_table_events();
    }

    /// The changes to the QPACK dynamic tables since the last call, each with the table it
    /// happened to: the encoder's after [`ConnectionState::encode_headers`], the decoder's
    /// after [`ConnectionState::handle_encoder_stream`]. None unless
    /// [`ConnectionState::record_table_events`] was called.
    pub fn take_table_events(&mut self) -> impl Iterator<Item = (QpackTable, TableEvent)> + '_ {
        let encoder = self.encoder.take_table_events();
        let decoder = self.decoder.take_table_events();
        let encoder = encoder.map(|event| (QpackTable::Encoder, event));
        encoder.chain(decoder.map(|event| (QpackTable::Decoder, event)))
    }

    /// QPACK-encodes a field section to send on `stream_id`; returns the HEADERS payload. The
    /// encoder-stream bytes it needs are queued for [`ConnectionState::poll_encoder`].
    pub fn encode_headers(&mut self, stream_id: u64, fields: &[Field]) -> Bytes {
        let encoded = self.encoder.encode(stream_id, fields);
        if !encoded.encoder_stream.is_empty() {
            if !std::mem::replace(&mut self.encoder_started, true) {
                UniStreamHeader::QpackEncoder.encode(&mut self.qpack_out().encoder);
            }
            self.qpack_out()
                .encoder
                .extend_from_slice(&encoded.encoder_stream);
        }
        encoded.field_section
    }

    /// QPACK-decodes a HEADERS payload received on `stream_id`.
    pub fn decode_headers(
        &mut self,
        stream_id: u64,
        section: Bytes,
    ) -> Result<HeaderBlock, ProtocolError> {
        let result = self.decoder.decode_section(stream_id, section);
        self.pull_decoder_stream();
        match result {
            Ok(Decoded::Fields(fields)) => Ok(HeaderBlock::Fields(fields)),
            Ok(Decoded::Blocked) => {
                self.stats.bump(Count::BlockedSection);
                Ok(HeaderBlock::Blocked)
            }
            Err(quay_qpack::Error::FieldSectionTooLarge { .. }) => Ok(HeaderBlock::TooLarge),
            Err(e) => Err(e.into()),
        }
    }

    /// The field section of `stream_id` that was blocked and has since been decoded, if any.
    pub fn take_unblocked(&mut self, stream_id: u64) -> Option<HeaderBlock> {
        Some(match self.remove_unblocked(stream_id)? {
            Ok(fields) => HeaderBlock::Fields(fields),
            Err(_) => HeaderBlock::TooLarge,
        })
    }

    /// We gave up on `stream_id` (reset or stopped) before decoding its field section: tells the
    /// peer's encoder (RFC 9204 §4.4.2).
    pub fn cancel_stream(&mut self, stream_id: u64) {
        self.remove_unblocked(stream_id);
        self.decoder.cancel_stream(stream_id);
        self.pull_decoder_stream();
    }

    fn remove_unblocked(
        &mut self,
        stream_id: u64,
    ) -> Option<Result<Vec<Field>, quay_qpack::Error>> {
        let index = self.unblocked.iter().position(|(id, _)| *id == stream_id)?;
        let (_, section) = self.unblocked.swap_remove(index);
        if self.unblocked.is_empty() {
            // Keep no buffer while nothing waits.
            self.unblocked = Vec::new();
        }
        Some(section)
    }

    /// Queues a GOAWAY with `id` on our control stream (RFC 9114 §5.2). A server passes the first
    /// request stream ID it will not process. Ignored if it would grow the last one sent.
    pub fn send_goaway(&mut self, id: VarInt) {
        if self.goaway_sent.get().is_some_and(|previous| id > previous) {
            return;
        }
        self.goaway_sent = MaybeId::some(id);
        let frame = Frame::Goaway(id);
        self.stats
            .frames_sent
            .count(FrameType::GOAWAY, frame.encoded_len() as u64);
        frame.encode(&mut self.control_out);
    }

    /// Whether the QUIC connection negotiated datagrams (RFC 9221; quinn's
    /// `max_datagram_size().is_some()`). Call before the peer's SETTINGS are fed: with
    /// H3_DATAGRAM on both sides and no QUIC datagrams, the peer's SETTINGS are an error
    /// (RFC 9297 §2.1.1).
    pub fn set_quic_datagrams(&mut self, negotiated: bool) {
        self.quic_datagrams = negotiated;
    }

    /// Server: the peer opened request stream `id`. `false` if it is at or above the ID of the
    /// GOAWAY we sent: refuse it with H3_REQUEST_REJECTED, unprocessed (RFC 9114 §5.2).
    pub fn handle_request_accepted(&mut self, id: u64) -> bool {
        self.stats.bump(Count::PeerBidi);
        if self
            .goaway_sent
            .get()
            .is_some_and(|limit| id >= limit.into_inner())
        {
            self.stats.bump(Count::RequestRejected);
            return false;
        }
        let max = self
            .max_request_id
            .get()
            .map_or(id, |max| max.into_inner().max(id));
        // A QUIC stream ID is a varint.
        self.max_request_id = MaybeId::some(VarInt::from_u64(max).unwrap_or(VarInt::MAX));
        true
    }

    /// A request stream became live (opened by us, or accepted).
    pub fn handle_request_opened(&mut self) {
        self.requests_live += 1;
        self.stats.bump(Count::RequestOpened);
    }

    /// A request stream ended as a stream error: `code` is what we reset or stopped it with
    /// (H3_REQUEST_INCOMPLETE, H3_MESSAGE_ERROR, ...), counted in [`ConnectionState::stats`].
    pub fn handle_request_error(&mut self, code: Code) {
        self.stats.bump(match code {
            Code::H3_REQUEST_INCOMPLETE => Count::RequestIncomplete,
            Code::H3_REQUEST_REJECTED => Count::RequestRejected,
            _ => Count::RequestMalformed,
        });
    }

    /// The peer reset a request stream.
    pub fn handle_request_reset_by_peer(&mut self) {
        self.stats.bump(Count::RequestResetByPeer);
    }

    /// A request stream ended: adds the frames it sent and received to the connection's.
    pub fn handle_request_frames(&mut self, sent: &FrameStats, received: &FrameStats) {
        self.stats.frames_sent.add(sent);
        self.stats.frames_received.add(received);
    }

    /// The connection's HTTP/3 counters now. Request streams' frames count once they end.
    pub fn stats(&self) -> H3Stats {
        let mut stats = self.stats.to_stats();
        let qpack = &mut stats.qpack;
        let (size, entries) = self.encoder.table_size();
        (qpack.encoder_table_size, qpack.encoder_table_entries) = (size, entries as u64);
        qpack.encoder_inserts = self.encoder.insert_count();
        let (size, entries) = self.decoder.table_size();
        (qpack.decoder_table_size, qpack.decoder_table_entries) = (size, entries as u64);
        qpack.decoder_inserts = self.decoder.insert_count();
        qpack.blocked_streams = self.decoder.blocked_streams() as u64;
        stats.goaway_sent = self.goaway_sent.get().map(VarInt::into_inner);
        stats.goaway_received = self.goaway_received.get().map(VarInt::into_inner);
        if let Some(peer) = &self.peer_settings {
            stats.peer_settings_received = true;
            stats.peer_max_field_section_size = peer.max_field_section_size();
            stats.peer_qpack_max_table_capacity = peer.qpack_max_table_capacity();
            stats.peer_qpack_blocked_streams = peer.qpack_blocked_streams();
            stats.peer_extended_connect = peer.enable_connect_protocol();
            stats.peer_h3_datagram = peer.h3_datagram();
        }
        stats
    }

    /// A live request stream was settled: finished on our side, with nothing more wanted from
    /// the peer. Once per stream.
    pub fn handle_request_settled(&mut self) {
        self.requests_settled = (self.requests_settled + 1).min(self.requests_live);
    }

    /// A live request stream ended; `settled` if [`ConnectionState::handle_request_settled`]
    /// was called for it.
    pub fn handle_request_closed(&mut self, settled: bool) {
        self.requests_live = self.requests_live.saturating_sub(1);
        self.requests_settled = self
            .requests_settled
            .saturating_sub(usize::from(settled))
            .min(self.requests_live);
    }

    /// The application let go of the connection: no new request will be sent or accepted.
    pub fn handle_handle_dropped(&mut self) {
        self.handle_gone = true;
    }

    /// How many request streams are live.
    pub fn live_requests(&self) -> usize {
        self.requests_live
    }

    /// Server: queues a GOAWAY naming the first request stream not accepted, so that the client
    /// retries later ones elsewhere (RFC 9114 §5.2).
    pub fn send_shutdown_goaway(&mut self) {
        let next = self
            .max_request_id
            .get()
            .map_or(0, |id| id.into_inner() + 4);
        self.send_goaway(VarInt::from_u64(next).unwrap_or(VarInt::MAX));
    }

    /// Whether the connection should end now; ask after every request, handle or GOAWAY event.
    ///
    /// - A client closes it when nothing can use it any more (the handle is gone, or the server
    ///   sent GOAWAY) and no request stream is live.
    /// - A client whose handle is gone and whose live request streams are all settled wants
    ///   nothing more from the server: it queues a GOAWAY (push ID 0: it allows no pushes), once,
    ///   rather than wait for the server to end those streams (RFC 9114 §5.2).
    /// - A server closes it when the client sent GOAWAY and every live request stream is settled:
    ///   the accepted requests are done (RFC 9114 §5.2).
    /// - A server whose handle is gone and which has no live request stream queues GOAWAY and
    ///   lingers, once.
    pub fn poll_close(&mut self) -> Option<CloseAction> {
        let all_settled = self.requests_live == self.requests_settled;
        match self.side {
            Side::Client if self.requests_live == 0 => {
                (self.handle_gone || self.goaway_received.is_some()).then_some(CloseAction::Close)
            }
            Side::Client => {
                if self.handle_gone && all_settled && self.goaway_sent.is_none() {
                    self.send_goaway(VarInt::from_u32(0));
                }
                None
            }
            Side::Server if self.goaway_received.is_some() && all_settled => {
                Some(CloseAction::Close)
            }
            Side::Server if self.requests_live == 0 && self.handle_gone && !self.lingering => {
                self.lingering = true;
                self.send_shutdown_goaway();
                Some(CloseAction::Linger)
            }
            Side::Server => None,
        }
    }

    /// Bytes to write on our control stream.
    pub fn poll_control(&mut self) -> Option<Bytes> {
        take(&mut self.control_out)
    }

    /// Whether our QPACK encoder stream is needed: the encoder has queued an instruction (the
    /// first [`ConnectionState::poll_encoder`] bytes carry the stream type).
    pub fn encoder_stream_started(&self) -> bool {
        self.encoder_started
    }

    /// Bytes to write on our QPACK encoder stream; the first ones start with its type.
    pub fn poll_encoder(&mut self) -> Option<Bytes> {
        let bytes = take(&mut self.qpack_out.as_mut()?.encoder)?;
        self.stats.encoder_stream_sent += bytes.len() as u64;
        Some(bytes)
    }

    /// Bytes to write on our QPACK decoder stream; the first ones start with its type.
    pub fn poll_decoder(&mut self) -> Option<Bytes> {
        self.pull_decoder_stream();
        let bytes = take(&mut self.qpack_out.as_mut()?.decoder)?;
        self.stats.decoder_stream_sent += bytes.len() as u64;
        Some(bytes)
    }

    /// Whether any of the three outputs has bytes.
    pub fn has_output(&self) -> bool {
        !self.control_out.is_empty()
            || self
                .qpack_out
                .as_ref()
                .is_some_and(|out| !out.encoder.is_empty() || !out.decoder.is_empty())
    }

    fn pull_decoder_stream(&mut self) {
        if let Some(bytes) = self.decoder.poll_decoder_stream() {
            if !std::mem::replace(&mut self.decoder_started, true) {
                UniStreamHeader::QpackDecoder.encode(&mut self.qpack_out().decoder);
            }
            self.qpack_out().decoder.extend_from_slice(&bytes);
        }
    }

    /// The bytes for our QPACK streams, made when the first instruction is queued.
    fn qpack_out(&mut self) -> &mut QpackOut {
        self.qpack_out.get_or_insert_default()
    }
}

/// Hands the whole buffer over, so that once the caller has written and dropped the bytes
/// nothing of it stays allocated.
fn take(buf: &mut Vec<u8>) -> Option<Bytes> {
    if buf.is_empty() {
        None
    } else {
        Some(std::mem::take(buf).into())
    }
}

impl FieldLine for Field {
    fn name(&self) -> &[u8] {
        &self.name
    }
    fn value(&self) -> &[u8] {
        &self.value
    }
    fn never_index(&self) -> bool {
        self.never_index
    }
}

impl FromFieldLine for Field {
    fn from_field_line(name: Bytes, value: Bytes, never_index: bool) -> Self {
        Self {
            name,
            value,
            never_index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_optional_id_is_one_word() {
        assert_eq!(size_of::<MaybeId>(), 8);
        for id in [VarInt::from_u32(0), VarInt::from_u32(4), VarInt::MAX] {
            assert_eq!(MaybeId::some(id).get(), Some(id));
            assert!(MaybeId::some(id).is_some());
        }
        assert_eq!(MaybeId::NONE.get(), None);
        assert!(MaybeId::NONE.is_none());
    }

    fn config() -> Config {
        Config {
            grease: false,
            ..Config::default()
        }
    }

    fn state(side: Side) -> ConnectionState {
        ConnectionState::new(side, &config(), 0)
    }

    fn settings_bytes(settings: &Settings) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::Settings(settings.clone()).encode(&mut out);
        out
    }

    fn code(result: Result<(), ProtocolError>) -> Code {
        Code::from(result.unwrap_err())
    }

    #[test]
    fn opening_bytes() {
        let mut s = state(Side::Client);
        // Control: type 0x00, SETTINGS (0x04) length 10: 0x01=4096, 0x07=16, 0x06=65536.
        assert_eq!(
            s.poll_control().unwrap()[..],
            [
                0x00, 0x04, 0x0a, 0x01, 0x50, 0x00, 0x07, 0x10, 0x06, 0x80, 0x01, 0x00, 0x00
            ]
        );
        assert_eq!(s.poll_control(), None);
        // RFC 9204 §4.2: no QPACK stream until it has an instruction to carry.
        assert_eq!(s.poll_encoder(), None);
        assert_eq!(s.poll_decoder(), None);
        assert!(!s.has_output());
    }

    #[test]
    fn grease_on_control_stream() {
        let config = Config::default();
        let mut s = ConnectionState::new(Side::Server, &config, 5);
        let bytes = s.poll_control().unwrap();
        let mut reader = FrameReader::new(1024);
        reader.handle_data(bytes);
        assert_eq!(
            reader.take_prefix::<UniStreamHeader>(),
            Some(UniStreamHeader::Control)
        );
        let mut types = Vec::new();
        while let Some(event) = reader.poll_event().unwrap() {
            if let FrameEvent::Header(h) = event {
                types.push(h.ty);
            }
        }
        assert_eq!(types[0], FrameType::SETTINGS);
        assert!(types[1].is_grease());
        // The peer decoding our SETTINGS accepts the GREASE setting.
        let mut peer = state(Side::Client);
        peer.handle_uni_stream(UniStreamHeader::Control).unwrap();
        peer.handle_control(s.local_settings_frame()).unwrap();
    }

    impl ConnectionState {
        fn local_settings_frame(&self) -> Bytes {
            settings_bytes(&self.local_settings).into()
        }
    }

    #[test]
    fn settings_must_come_first() {
        // RFC 9114 §6.2.1: GOAWAY (0x07, len 1, id 0) before SETTINGS.
        let mut s = state(Side::Server);
        assert_eq!(
            s.handle_uni_stream(UniStreamHeader::Control),
            Ok(UniStream::Control)
        );
        let err = s.handle_control(Bytes::from_static(&[0x07, 0x01, 0x00]));
        assert_eq!(code(err), Code::H3_MISSING_SETTINGS);
    }

    #[test]
    fn second_settings_is_unexpected() {
        // RFC 9114 §7.2.4: SETTINGS only once.
        let mut s = state(Side::Server);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(Bytes::from_static(&[0x04, 0x00])).unwrap();
        assert!(s.peer_settings().is_some());
        let err = s.handle_control(Bytes::from_static(&[0x04, 0x00]));
        assert_eq!(code(err), Code::H3_FRAME_UNEXPECTED);
    }

    #[test]
    fn data_and_headers_on_control_are_unexpected() {
        for frame in [&[0x00, 0x01, 0xaa][..], &[0x01, 0x00]] {
            let mut s = state(Side::Client);
            s.handle_uni_stream(UniStreamHeader::Control).unwrap();
            s.handle_control(Bytes::from_static(&[0x04, 0x00])).unwrap();
            let err = s.handle_control(Bytes::copy_from_slice(frame));
            assert_eq!(code(err), Code::H3_FRAME_UNEXPECTED);
        }
    }

    #[test]
    fn malformed_frames() {
        // GOAWAY whose payload holds two varints: RFC 9114 §7.1.
        let mut s = state(Side::Client);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(Bytes::from_static(&[0x04, 0x00])).unwrap();
        let err = s.handle_control(Bytes::from_static(&[0x07, 0x02, 0x00, 0x00]));
        assert_eq!(code(err), Code::H3_FRAME_ERROR);
        // A repeated setting: H3_SETTINGS_ERROR (RFC 9114 §7.2.4).
        let mut s = state(Side::Client);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let err = s.handle_control(Bytes::from_static(&[0x04, 0x04, 0x06, 0x01, 0x06, 0x02]));
        assert_eq!(code(err), Code::H3_SETTINGS_ERROR);
        // An HTTP/2 setting.
        let mut s = state(Side::Client);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let err = s.handle_control(Bytes::from_static(&[0x04, 0x02, 0x02, 0x01]));
        assert_eq!(code(err), Code::H3_SETTINGS_ERROR);
    }

    #[test]
    fn critical_streams_once() {
        for header in [
            UniStreamHeader::Control,
            UniStreamHeader::QpackEncoder,
            UniStreamHeader::QpackDecoder,
        ] {
            let mut s = state(Side::Server);
            s.handle_uni_stream(header).unwrap();
            let err = s.handle_uni_stream(header).unwrap_err();
            assert_eq!(Code::from(err), Code::H3_STREAM_CREATION_ERROR);
        }
        let mut s = state(Side::Server);
        let err = s
            .handle_uni_stream(UniStreamHeader::Push {
                push_id: VarInt::from_u32(0),
            })
            .unwrap_err();
        assert_eq!(Code::from(err), Code::H3_STREAM_CREATION_ERROR);
        let mut s = state(Side::Client);
        let err = s
            .handle_uni_stream(UniStreamHeader::Push {
                push_id: VarInt::from_u32(0),
            })
            .unwrap_err();
        assert_eq!(Code::from(err), Code::H3_ID_ERROR);
        assert_eq!(
            s.handle_uni_stream(UniStreamHeader::grease(3)),
            Ok(UniStream::Discard)
        );
        assert_eq!(
            s.handle_uni_stream(UniStreamHeader::WebTransport {
                session_id: VarInt::from_u32(0)
            }),
            Ok(UniStream::Discard)
        );
    }

    #[test]
    fn extension_streams() {
        let mut config = config();
        config
            .extension_uni_stream_types
            .push(StreamType::WEBTRANSPORT);
        let mut s = ConnectionState::new(Side::Server, &config, 0);
        assert_eq!(
            s.handle_uni_stream(UniStreamHeader::WebTransport {
                session_id: VarInt::from_u32(0)
            }),
            Ok(UniStream::Extension(StreamType::WEBTRANSPORT))
        );
    }

    #[test]
    fn critical_end() {
        let mut s = state(Side::Server);
        assert_eq!(
            Code::from(s.handle_critical_end(UniStream::Control)),
            Code::H3_CLOSED_CRITICAL_STREAM
        );
    }

    /// The observer sees every frame of the control stream as it is read, a reserved one
    /// (whose payload is skipped, RFC 9114 §7.2.8) by its header, and a frame that breaks a
    /// rule before the error.
    #[test]
    fn control_frames_are_observed() {
        let mut s = state(Side::Client);
        let mut seen = Vec::new();
        // SETTINGS (empty), a reserved frame 0x21 with 2 bytes, GOAWAY 8, GOAWAY 12.
        let bytes = [
            0x04, 0x00, 0x21, 0x02, 0xaa, 0xbb, 0x07, 0x01, 0x08, 0x07, 0x01, 0x0c,
        ];
        let result = s.handle_control_observed(Bytes::copy_from_slice(&bytes), |event| {
            if !matches!(event, FrameEvent::Header(h) if h.ty.is_known()) {
                seen.push(event.clone());
            }
        });
        assert_eq!(Code::from(result.unwrap_err()), Code::H3_ID_ERROR);
        let reserved = crate::proto::frame::FrameHeader {
            ty: FrameType::from_u32(0x21),
            len: VarInt::from_u32(2),
        };
        assert_eq!(
            seen,
            [
                FrameEvent::Frame(Frame::Settings(Settings::default())),
                FrameEvent::Header(reserved),
                FrameEvent::Frame(Frame::Goaway(VarInt::from_u32(8))),
                FrameEvent::Frame(Frame::Goaway(VarInt::from_u32(12))),
            ]
        );
    }

    #[test]
    fn goaway_rules() {
        let mut s = state(Side::Client);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(Bytes::from_static(&[0x04, 0x00, 0x07, 0x01, 0x08]))
            .unwrap();
        assert_eq!(s.goaway_received(), Some(VarInt::from_u32(8)));
        s.handle_control(Bytes::from_static(&[0x07, 0x01, 0x04]))
            .unwrap();
        // RFC 9114 §5.2: the ID must not grow.
        let err = s.handle_control(Bytes::from_static(&[0x07, 0x01, 0x08]));
        assert_eq!(code(err), Code::H3_ID_ERROR);
        // A server's GOAWAY must name a client-initiated bidirectional stream.
        let mut s = state(Side::Client);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let err = s.handle_control(Bytes::from_static(&[0x04, 0x00, 0x07, 0x01, 0x02]));
        assert_eq!(code(err), Code::H3_ID_ERROR);
    }

    #[test]
    fn push_ids() {
        // RFC 9114 §7.2.3: CANCEL_PUSH (0x03) to a client that never sent MAX_PUSH_ID.
        let mut s = state(Side::Client);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let err = s.handle_control(Bytes::from_static(&[0x04, 0x00, 0x03, 0x01, 0x00]));
        assert_eq!(code(err), Code::H3_ID_ERROR);
        // A server: CANCEL_PUSH within MAX_PUSH_ID (0x0d) is fine, above it is not.
        let mut s = state(Side::Server);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(Bytes::from_static(&[
            0x04, 0x00, 0x0d, 0x01, 0x05, 0x03, 0x01, 0x05,
        ]))
        .unwrap();
        let err = s.handle_control(Bytes::from_static(&[0x03, 0x01, 0x06]));
        assert_eq!(code(err), Code::H3_ID_ERROR);
        // RFC 9114 §7.2.7: MAX_PUSH_ID must not decrease.
        let mut s = state(Side::Server);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let err = s.handle_control(Bytes::from_static(&[
            0x04, 0x00, 0x0d, 0x01, 0x05, 0x0d, 0x01, 0x04,
        ]));
        assert_eq!(code(err), Code::H3_ID_ERROR);
        // RFC 9218 §7.2: PRIORITY_UPDATE (0xf0701) for a push never promised.
        let mut s = state(Side::Server);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let err = s.handle_control(Bytes::from_static(&[
            0x04, 0x00, 0x80, 0x0f, 0x07, 0x01, 0x01, 0x00,
        ]));
        assert_eq!(code(err), Code::H3_ID_ERROR);
        // ... while one for a request stream is accepted and ignored.
        s = state(Side::Server);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(Bytes::from_static(&[
            0x04, 0x00, 0x80, 0x0f, 0x07, 0x00, 0x04, 0x00, b'u', b'=', b'1',
        ]))
        .unwrap();
    }

    #[test]
    fn goaway_sent_once_and_not_growing() {
        let mut s = state(Side::Server);
        s.poll_control();
        s.send_goaway(VarInt::from_u32(8));
        assert_eq!(s.poll_control().unwrap()[..], [0x07, 0x01, 0x08]);
        s.send_goaway(VarInt::from_u32(12));
        assert_eq!(s.poll_control(), None);
    }

    #[test]
    fn qpack_errors_map_to_their_codes() {
        // Encoder stream: Duplicate (0x00) of an entry that does not exist -> 0x201.
        let mut s = state(Side::Server);
        s.handle_uni_stream(UniStreamHeader::QpackEncoder).unwrap();
        let err = s.handle_encoder_stream(&[0x00]).unwrap_err();
        assert_eq!(Code::from(err), Code::QPACK_ENCODER_STREAM_ERROR);
        // Decoder stream: Section Acknowledgment (0x80 | id) for a stream with nothing
        // outstanding -> 0x202.
        let mut s = state(Side::Server);
        let err = s.handle_decoder_stream(&[0x84]).unwrap_err();
        assert_eq!(Code::from(err), Code::QPACK_DECODER_STREAM_ERROR);
        // Field section: static index 200 does not exist -> 0x200.
        let mut s = state(Side::Server);
        let err = s
            .decode_headers(0, Bytes::from_static(&[0x00, 0x00, 0xff, 0x89, 0x01]))
            .unwrap_err();
        assert_eq!(Code::from(err), Code::QPACK_DECOMPRESSION_FAILED);
    }

    #[test]
    fn headers_round_trip_with_dynamic_table() {
        let mut client = state(Side::Client);
        let mut server = state(Side::Server);
        // Exchange SETTINGS.
        client.handle_uni_stream(UniStreamHeader::Control).unwrap();
        server.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let mut to_client = server.poll_control().unwrap();
        let mut to_server = client.poll_control().unwrap();
        client.handle_control(to_client.split_off(1)).unwrap();
        server.handle_control(to_server.split_off(1)).unwrap();
        assert_eq!(
            client
                .peer_settings()
                .unwrap()
                .get(SettingId::QPACK_MAX_TABLE_CAPACITY),
            Some(VarInt::from_u32(4096))
        );
        server
            .handle_uni_stream(UniStreamHeader::QpackEncoder)
            .unwrap();
        client
            .handle_uni_stream(UniStreamHeader::QpackDecoder)
            .unwrap();
        // Settings alone put nothing on the encoder stream (RFC 9204 §4.2).
        assert_eq!(client.poll_encoder(), None);
        assert!(!client.encoder_stream_started());

        let fields = vec![
            Field::new(":method", "GET"),
            Field::new(":path", "/a/rather/long/path/that/repeats"),
            Field::new("x-custom", "a value that repeats too"),
        ];
        // The connection's first section inserts nothing (quay-qpack's insertion strategy), so
        // neither QPACK stream is needed yet.
        let only = client.encode_headers(0, &fields);
        assert!(!client.encoder_stream_started());
        assert_eq!(
            server.decode_headers(0, only).unwrap(),
            HeaderBlock::Fields(fields.clone())
        );
        assert_eq!(server.poll_decoder(), None);

        let first = client.encode_headers(4, &fields);
        // The first encoder-stream bytes open the stream: its type, then the instructions.
        assert!(client.encoder_stream_started());
        let encoder = client.poll_encoder().unwrap();
        assert_eq!(encoder[0], 0x02);
        let encoder = Some(encoder.slice(1..));
        // The section may be blocked until the encoder stream arrives.
        let mut decoded = server.decode_headers(4, first.clone()).unwrap();
        if let Some(bytes) = encoder {
            let unblocked = server.handle_encoder_stream(&bytes).unwrap();
            if decoded == HeaderBlock::Blocked {
                assert!(unblocked);
                decoded = server.take_unblocked(4).unwrap();
            }
        }
        assert_eq!(decoded, HeaderBlock::Fields(fields.clone()));
        client
            .handle_decoder_stream(&server.poll_decoder().unwrap()[1..])
            .unwrap();
        let second = client.encode_headers(8, &fields);
        assert!(
            second.len() < first.len(),
            "{} vs {}",
            second.len(),
            first.len()
        );
        if let Some(bytes) = client.poll_encoder() {
            server.handle_encoder_stream(&bytes).unwrap();
        }
        assert_eq!(
            server.decode_headers(8, second).unwrap(),
            HeaderBlock::Fields(fields)
        );
    }

    fn with_datagrams(side: Side) -> ConnectionState {
        let config = Config {
            grease: false,
            enable_datagrams: true,
            ..Config::default()
        };
        ConnectionState::new(side, &config, 0)
    }

    /// RFC 9297 §2.1.1: "An endpoint that receives the H3_DATAGRAM SETTINGS parameter with a
    /// value of 1 on a QUIC connection that did not negotiate the use of QUIC DATAGRAM frames
    /// MUST close the connection with an error of type H3_SETTINGS_ERROR."
    #[test]
    fn h3_datagram_without_quic_datagrams_is_a_settings_error() {
        let peer = with_datagrams(Side::Client);
        let mut s = with_datagrams(Side::Server);
        s.set_quic_datagrams(false);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        let err = s.handle_control(peer.local_settings_frame());
        assert_eq!(code(err), Code::H3_SETTINGS_ERROR);
        // With QUIC datagrams it is fine.
        let mut s = with_datagrams(Side::Server);
        s.set_quic_datagrams(true);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(peer.local_settings_frame()).unwrap();
    }

    /// RFC 9114 §5.2: requests at or above the ID of the GOAWAY a server sent are refused, and
    /// that GOAWAY names the first request not accepted.
    #[test]
    fn requests_past_our_goaway_are_refused() {
        let mut s = state(Side::Server);
        assert!(s.handle_request_accepted(0));
        assert!(s.handle_request_accepted(8));
        s.send_shutdown_goaway();
        assert_eq!(s.goaway_sent(), Some(VarInt::from_u32(12)));
        assert!(s.handle_request_accepted(4));
        assert!(!s.handle_request_accepted(12));
        assert!(!s.handle_request_accepted(16));
    }

    /// A server whose handle is gone lingers once, after a GOAWAY, when no request is live; one
    /// that received the client's GOAWAY closes once every live request is settled.
    #[test]
    fn server_close_when_idle() {
        let mut s = state(Side::Server);
        s.handle_request_opened();
        s.handle_handle_dropped();
        assert_eq!(s.poll_close(), None);
        s.handle_request_closed(false);
        assert_eq!(s.poll_close(), Some(CloseAction::Linger));
        assert_eq!(s.goaway_sent(), Some(VarInt::from_u32(0)));
        assert_eq!(s.poll_close(), None, "lingers once");

        let mut s = state(Side::Server);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(Bytes::from_static(&[0x04, 0x00])).unwrap();
        s.handle_request_opened();
        s.handle_request_opened();
        // GOAWAY from a client names a push ID (RFC 9114 §5.2).
        s.handle_control(Bytes::from_static(&[0x07, 0x01, 0x00]))
            .unwrap();
        s.handle_request_settled();
        assert_eq!(s.poll_close(), None);
        s.handle_request_settled();
        assert_eq!(s.poll_close(), Some(CloseAction::Close));
    }

    /// A client closes once nothing can use the connection; with its handle gone and every
    /// request settled it first says so with GOAWAY.
    #[test]
    fn client_close_when_idle() {
        let mut s = state(Side::Client);
        s.handle_request_opened();
        s.handle_handle_dropped();
        assert_eq!(s.poll_close(), None);
        assert_eq!(s.goaway_sent(), None);
        s.handle_request_settled();
        assert_eq!(s.poll_close(), None);
        assert_eq!(s.goaway_sent(), Some(VarInt::from_u32(0)));
        s.handle_request_closed(true);
        assert_eq!(s.poll_close(), Some(CloseAction::Close));

        // A server's GOAWAY: close once the last request ends, handle or not.
        let mut s = state(Side::Client);
        s.handle_uni_stream(UniStreamHeader::Control).unwrap();
        s.handle_control(Bytes::from_static(&[0x04, 0x00, 0x07, 0x01, 0x00]))
            .unwrap();
        s.handle_request_opened();
        assert_eq!(s.poll_close(), None);
        s.handle_request_closed(false);
        assert_eq!(s.poll_close(), Some(CloseAction::Close));
    }
}
