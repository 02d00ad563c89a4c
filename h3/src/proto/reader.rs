//! Chunk-fed readers for type-length-value streams (frames here, capsules in
//! [`crate::proto::capsule`]).
//!
//! This module owns [`FrameReader`]: a sans-IO reader that takes a stream's bytes in whatever
//! chunks QUIC delivers ([`FrameReader::handle_data`]) and hands back frame events
//! ([`FrameReader::poll_event`]). DATA payloads come out as zero-copy slices of the input chunks,
//! never buffered whole; other known frames are buffered up to a bound and decoded; unknown and
//! GREASE frames are skipped without buffering (RFC 9114 §9). It does not own the order of frames
//! on a stream ([`crate::proto::message`]) or anything QPACK does with a field section.
//!
//! # Call order
//!
//! 1. Optionally [`FrameReader::take_prefix`] until it returns `Some`, for a stream that starts
//!    with a stream type or the WebTransport signal.
//! 2. For each chunk read from the stream: [`FrameReader::handle_data`], then
//!    [`FrameReader::poll_event`] until it returns `Ok(None)`.
//! 3. When the stream ends cleanly: [`FrameReader::handle_end`], which fails if a frame was cut.
//!
//! After an error the reader's state is unspecified: close the connection or stream with
//! `Code::from(error)`.

use std::collections::VecDeque;

use crate::proto::VarInt;
use crate::proto::{Codec, UnexpectedEnd};
use bytes::{Buf, Bytes, BytesMut};

use crate::proto::frame::{Frame, FrameError, FrameHeader, FrameType};

/// The longest type-length header: two 8-byte varints. Also the longest prefix
/// [`FrameReader::take_prefix`] can read.
const HEADER_MAX: usize = 16;

/// What to do with the payload of an element whose header was just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Hand the payload out in chunks as they arrive.
    Stream,
    /// Collect the payload and hand it out whole (the caller bounded the length).
    Buffer,
    /// Drop the payload.
    Skip,
}

/// One step of a [`TlvReader`].
#[derive(Debug)]
pub(crate) enum TlvEvent {
    /// A header was read and the policy accepted it.
    Header { ty: VarInt, len: VarInt },
    /// A non-empty piece of a streamed payload.
    Chunk(Bytes),
    /// A whole buffered payload.
    Payload { ty: VarInt, payload: Bytes },
}

/// The longest payload a reader buffers whole, whatever bound it was given: a buffered length
/// is kept in 32 bits ([`State`]). Anything longer is refused as too large.
pub(crate) const MAX_BUFFERED_PAYLOAD: u64 = u32::MAX as u64;

/// Where the reader is. 16 bytes: a buffered payload's length is a `u32` (a payload that must
/// be held in memory at once is far smaller), so the tag fits beside it.
#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Stream { remaining: u64 },
    Buffer { ty: VarInt, len: u32 },
    Skip { remaining: u64 },
}

/// The engine shared by frames and capsules: both are a type varint, a length varint and a
/// payload (RFC 9114 §7.1, RFC 9297 §3.2).
#[derive(Debug)]
pub(crate) struct TlvReader {
    /// Input chunks not yet looked at.
    queue: VecDeque<Bytes>,
    /// Bytes copied out of `queue` to make a header or a buffered payload contiguous. They come
    /// before anything in `queue`. Boxed, and dropped once emptied: most readers seldom need it
    /// (only when a header or payload is split across input chunks), and every request stream,
    /// control stream and WebTransport session keeps a reader.
    scratch: Option<Box<BytesMut>>,
    state: State,
}

// Every long-lived stream keeps one or two (frames, and capsules inside them).
const _: () = assert!(size_of::<TlvReader>() <= 56);

impl TlvReader {
    pub(crate) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            scratch: None,
            state: State::Header,
        }
    }

    pub(crate) fn handle_data(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.queue.push_back(chunk);
        }
    }

    /// Whether the reader sits between two elements with nothing buffered.
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Header) && self.scratch.is_none() && self.queue.is_empty()
    }

    /// Whether the reader sits between two elements (possibly with the start of the next one
    /// buffered).
    pub(crate) fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header)
    }

    /// Drops the first input chunk, which has been used up. An empty queue keeps no buffer: a
    /// stream's reader mostly waits, with nothing queued, for its next chunk.
    fn pop_front(&mut self) {
        self.queue.pop_front();
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }

    /// Moves bytes from `queue` into `scratch` until it holds `target` bytes or `queue` is empty.
    /// Returns whether anything moved.
    fn fill(&mut self, target: usize) -> bool {
        let mut moved = false;
        while self.scratch_len() < target {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let scratch = self.scratch.get_or_insert_default();
            let n = (target - scratch.len()).min(front.len());
            scratch.extend_from_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                self.pop_front();
            }
            moved = true;
        }
        moved
    }

    /// How many bytes `scratch` holds.
    fn scratch_len(&self) -> usize {
        self.scratch.as_ref().map_or(0, |scratch| scratch.len())
    }

    /// Takes `n` bytes off the front of `scratch`, which holds at least that many, and drops it
    /// if that empties it.
    fn split_scratch(&mut self, n: usize) -> Bytes {
        let Some(scratch) = &mut self.scratch else {
            return Bytes::new();
        };
        let front = scratch.split_to(n).freeze();
        if scratch.is_empty() {
            self.scratch = None;
        }
        front
    }

    /// Decodes from the front of `scratch` with `decode`, consuming what it read only on
    /// success.
    fn decode_scratch<T>(
        &mut self,
        decode: impl FnOnce(&mut &[u8]) -> Result<T, UnexpectedEnd>,
    ) -> Result<T, UnexpectedEnd> {
        let scratch = self
            .scratch
            .as_deref()
            .map_or(&[][..], |scratch| &scratch[..]);
        let mut cur = scratch;
        let value = decode(&mut cur)?;
        let used = scratch.len() - cur.len();
        self.split_scratch(used);
        Ok(value)
    }

    /// Takes up to `max` bytes from the front of the input without copying queued chunks.
    fn take_front(&mut self, max: u64) -> Option<Bytes> {
        let held = self.scratch_len();
        if held > 0 {
            let n = usize::try_from(max).map_or(held, |m| m.min(held));
            return Some(self.split_scratch(n));
        }
        let front = self.queue.front_mut()?;
        let n = usize::try_from(max).map_or(front.len(), |m| m.min(front.len()));
        let chunk = front.split_to(n);
        if front.is_empty() {
            self.pop_front();
        }
        Some(chunk)
    }

    /// Decodes a prefix of at most [`HEADER_MAX`] bytes from the front of the input, consuming it
    /// only on success. Only valid between elements.
    pub(crate) fn take_prefix<T>(
        &mut self,
        decode: impl FnOnce(&mut &[u8]) -> Result<T, UnexpectedEnd>,
    ) -> Option<T> {
        debug_assert!(self.at_boundary());
        self.fill(HEADER_MAX);
        self.decode_scratch(decode).ok()
    }

    /// Applies the policy to a header just read and enters the matching state.
    fn start<E>(
        &mut self,
        ty: VarInt,
        len: VarInt,
        policy: &mut impl FnMut(VarInt, VarInt) -> Result<Policy, E>,
    ) -> Result<TlvEvent, E> {
        let remaining = len.into_inner();
        self.state = match policy(ty, len)? {
            Policy::Stream => State::Stream { remaining },
            Policy::Skip => State::Skip { remaining },
            Policy::Buffer => match u32::try_from(remaining) {
                Ok(len) => State::Buffer { ty, len },
                // Not reached: the frame and capsule readers bound what they buffer by
                // [`MAX_BUFFERED_PAYLOAD`], and refuse a longer payload before this.
                Err(_) => State::Skip { remaining },
            },
        };
        Ok(TlvEvent::Header { ty, len })
    }

    pub(crate) fn poll<E>(
        &mut self,
        mut policy: impl FnMut(VarInt, VarInt) -> Result<Policy, E>,
    ) -> Result<Option<TlvEvent>, E> {
        loop {
            match self.state {
                State::Header => {
                    if self.scratch.is_none()
                        && let Some(front) = self.queue.front_mut()
                    {
                        // Fast path: the header sits in one input chunk, read it in place.
                        let mut cur = &front[..];
                        if let Ok((ty, len)) = decode_header(&mut cur) {
                            let used = front.len() - cur.len();
                            front.advance(used);
                            if front.is_empty() {
                                self.pop_front();
                            }
                            return self.start(ty, len, &mut policy).map(Some);
                        }
                    }
                    let (ty, len) = match self.decode_scratch(decode_header) {
                        Ok(header) => header,
                        Err(UnexpectedEnd) => {
                            if self.fill(HEADER_MAX) {
                                continue;
                            }
                            return Ok(None);
                        }
                    };
                    return self.start(ty, len, &mut policy).map(Some);
                }
                State::Stream { remaining } => {
                    if remaining == 0 {
                        self.state = State::Header;
                        continue;
                    }
                    let Some(chunk) = self.take_front(remaining) else {
                        return Ok(None);
                    };
                    let remaining = remaining - chunk.len() as u64;
                    self.state = if remaining == 0 {
                        State::Header
                    } else {
                        State::Stream { remaining }
                    };
                    return Ok(Some(TlvEvent::Chunk(chunk)));
                }
                State::Buffer { ty, len } => {
                    // Lossless: `usize` is at least 32 bits wide on every target quay builds for.
                    let len = len as usize;
                    if self.scratch.is_none()
                        && let Some(front) = self.queue.front_mut()
                        && front.len() >= len
                    {
                        // The whole payload sits in one input chunk: no copy.
                        let payload = front.split_to(len);
                        if front.is_empty() {
                            self.pop_front();
                        }
                        self.state = State::Header;
                        return Ok(Some(TlvEvent::Payload { ty, payload }));
                    }
                    if self.scratch_len() < len && !self.fill(len) {
                        return Ok(None);
                    }
                    if self.scratch_len() < len {
                        return Ok(None);
                    }
                    let payload = self.split_scratch(len);
                    self.state = State::Header;
                    return Ok(Some(TlvEvent::Payload { ty, payload }));
                }
                State::Skip { remaining } => {
                    if remaining == 0 {
                        self.state = State::Header;
                        continue;
                    }
                    let Some(chunk) = self.take_front(remaining) else {
                        return Ok(None);
                    };
                    self.state = State::Skip {
                        remaining: remaining - chunk.len() as u64,
                    };
                }
            }
        }
    }
}

fn decode_header(cur: &mut &[u8]) -> Result<(VarInt, VarInt), UnexpectedEnd> {
    let ty = VarInt::decode(cur)?;
    let len = VarInt::decode(cur)?;
    Ok((ty, len))
}

/// One thing read from a stream by [`FrameReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameEvent {
    /// A frame header. It comes first for every frame, including unknown ones (whose payload is
    /// then skipped), so the caller can check the frame order before any payload arrives
    /// ([`crate::proto::message`]).
    Header(FrameHeader),
    /// A non-empty piece of the current DATA frame's payload, in order.
    Data(Bytes),
    /// A complete frame other than DATA and other than an unknown type.
    Frame(Frame),
}

/// Reads frames from a stream's bytes as they arrive. See the [module docs](self) for the call
/// order.
///
/// ```
/// use bytes::Bytes;
/// use quay_h3::proto::frame::{Frame, FrameType};
/// use quay_h3::proto::reader::{FrameEvent, FrameReader};
///
/// let mut reader = FrameReader::new(16 * 1024);
/// // HEADERS (3 bytes), then DATA "hello" split across two chunks.
/// reader.handle_data(Bytes::from_static(&[0x01, 0x03, 0x00, 0x00, 0xd1, 0x00, 0x05, b'h', b'e']));
/// reader.handle_data(Bytes::from_static(b"llo"));
/// let mut body = Vec::new();
/// while let Some(event) = reader.poll_event()? {
///     match event {
///         FrameEvent::Header(header) => assert!(header.ty == FrameType::HEADERS || header.ty == FrameType::DATA),
///         FrameEvent::Frame(Frame::Headers(section)) => assert_eq!(section.len(), 3),
///         FrameEvent::Data(chunk) => body.extend_from_slice(&chunk),
///         other => panic!("{other:?}"),
///     }
/// }
/// assert_eq!(body, b"hello");
/// reader.handle_end()?;
/// # Ok::<(), quay_h3::proto::frame::FrameError>(())
/// ```
#[derive(Debug)]
pub struct FrameReader {
    tlv: TlvReader,
    max_payload: u64,
}

impl FrameReader {
    /// A reader that refuses known non-DATA frames with a payload over `max_payload` bytes
    /// ([`FrameError::TooLarge`]), and over 4 GiB whatever `max_payload` says.
    pub fn new(max_payload: u64) -> Self {
        Self {
            tlv: TlvReader::new(),
            max_payload: max_payload.min(MAX_BUFFERED_PAYLOAD),
        }
    }

    /// Adds the next chunk of the stream.
    pub fn handle_data(&mut self, chunk: Bytes) {
        self.tlv.handle_data(chunk);
    }

    /// Decodes a stream prefix that is a [`Codec`] value (such as
    /// [`UniStreamHeader`](crate::proto::stream::UniStreamHeader)) from the bytes received so
    /// far, consuming it only if complete. `None` means more bytes are needed. Call it only before
    /// the first [`FrameReader::poll_event`]; the prefix must be at most 16 bytes, which holds for
    /// every prefix in [`crate::proto::stream`].
    ///
    /// ```
    /// use bytes::Bytes;
    /// use quay_h3::proto::reader::FrameReader;
    /// use quay_h3::proto::stream::UniStreamHeader;
    ///
    /// let mut reader = FrameReader::new(1024);
    /// reader.handle_data(Bytes::from_static(&[0x40]));
    /// assert_eq!(reader.take_prefix::<UniStreamHeader>(), None);
    /// reader.handle_data(Bytes::from_static(&[0x54, 0x04]));
    /// assert_eq!(
    ///     reader.take_prefix::<UniStreamHeader>(),
    ///     Some(UniStreamHeader::WebTransport { session_id: 4u8.into() })
    /// );
    /// ```
    pub fn take_prefix<T: Codec>(&mut self) -> Option<T> {
        self.tlv.take_prefix(|buf| T::decode(buf))
    }

    /// Like [`FrameReader::take_prefix`] with a decode function that may leave bytes in place,
    /// such as [`BidiStreamHeader::decode`](crate::proto::stream::BidiStreamHeader::decode).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use quay_h3::proto::reader::FrameReader;
    /// use quay_h3::proto::stream::BidiStreamHeader;
    ///
    /// let mut reader = FrameReader::new(1024);
    /// reader.handle_data(Bytes::from_static(&[0x01, 0x00]));
    /// assert_eq!(reader.take_prefix_with(BidiStreamHeader::decode), Some(BidiStreamHeader::Request));
    /// ```
    pub fn take_prefix_with<T>(
        &mut self,
        decode: impl FnOnce(&mut &[u8]) -> Result<T, UnexpectedEnd>,
    ) -> Option<T> {
        self.tlv.take_prefix(decode)
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn poll_event(&mut self) -> Result<Option<FrameEvent>, FrameError> {
        let max = self.max_payload;
        let event = self.tlv.poll(|ty, len| -> Result<Policy, FrameError> {
            let header = FrameHeader {
                ty: FrameType::from_varint(ty),
                len,
            };
            if header.ty == FrameType::DATA {
                return Ok(Policy::Stream);
            }
            if !header.ty.is_known() && !header.ty.is_http2_reserved() {
                // RFC 9114 §9: unknown frame types are ignored, whatever their size.
                return Ok(Policy::Skip);
            }
            header.check(max)?;
            Ok(Policy::Buffer)
        })?;
        Ok(match event {
            None => None,
            Some(TlvEvent::Header { ty, len }) => Some(FrameEvent::Header(FrameHeader {
                ty: FrameType::from_varint(ty),
                len,
            })),
            Some(TlvEvent::Chunk(chunk)) => Some(FrameEvent::Data(chunk)),
            Some(TlvEvent::Payload { ty, payload }) => Some(FrameEvent::Frame(
                Frame::decode_payload(FrameType::from_varint(ty), payload)?,
            )),
        })
    }

    /// Whether the reader sits between frames with nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.tlv.is_idle()
    }

    /// Call when the stream has ended cleanly, after draining [`FrameReader::poll_event`]. Fails
    /// with [`FrameError::Truncated`] if the stream stopped inside a frame (RFC 9114 §7.1).
    pub fn handle_end(&mut self) -> Result<(), FrameError> {
        if self.tlv.is_idle() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use crate::proto::settings::Settings;
    use crate::proto::stream::{BidiStreamHeader, UniStreamHeader};
    use crate::proto::test_util::vi;

    fn drain(reader: &mut FrameReader) -> Result<Vec<FrameEvent>, FrameError> {
        let mut events = Vec::new();
        while let Some(event) = reader.poll_event()? {
            events.push(event);
        }
        Ok(events)
    }

    /// Merges adjacent `Data` events so that results do not depend on chunking.
    fn normalize(events: Vec<FrameEvent>) -> Vec<FrameEvent> {
        let mut out: Vec<FrameEvent> = Vec::new();
        for event in events {
            if let (Some(FrameEvent::Data(prev)), FrameEvent::Data(next)) = (out.last_mut(), &event)
            {
                let mut joined = prev.to_vec();
                joined.extend_from_slice(next);
                *prev = joined.into();
                continue;
            }
            out.push(event);
        }
        out
    }

    fn sample_stream() -> (Vec<u8>, Vec<FrameEvent>) {
        let mut bytes = Vec::new();
        let headers = Frame::Headers(Bytes::from_static(&[0x00, 0x00, 0xd1]));
        headers.encode(&mut bytes);
        let grease = Frame::grease(3, Bytes::from_static(b"ignored"));
        grease.encode(&mut bytes);
        Frame::Data(Bytes::from_static(b"hello ")).encode(&mut bytes);
        Frame::Data(Bytes::new()).encode(&mut bytes);
        Frame::Data(Bytes::from_static(b"world")).encode(&mut bytes);
        let trailers = Frame::Headers(Bytes::from_static(&[0x00, 0x00]));
        trailers.encode(&mut bytes);
        let data = |len: u64| FrameEvent::Header(FrameHeader::data(vi(len)));
        let expected = vec![
            FrameEvent::Header(FrameHeader {
                ty: FrameType::HEADERS,
                len: vi(3),
            }),
            FrameEvent::Frame(headers),
            FrameEvent::Header(FrameHeader {
                ty: grease.ty(),
                len: vi(7),
            }),
            data(6),
            FrameEvent::Data(Bytes::from_static(b"hello ")),
            data(0),
            data(5),
            FrameEvent::Data(Bytes::from_static(b"world")),
            FrameEvent::Header(FrameHeader {
                ty: FrameType::HEADERS,
                len: vi(2),
            }),
            FrameEvent::Frame(trailers),
        ];
        (bytes, expected)
    }

    #[test]
    fn every_chunking_gives_the_same_events() {
        let (bytes, expected) = sample_stream();
        for chunk_size in 1..=bytes.len() {
            let mut reader = FrameReader::new(1024);
            let mut events = Vec::new();
            for chunk in bytes.chunks(chunk_size) {
                reader.handle_data(Bytes::copy_from_slice(chunk));
                events.extend(drain(&mut reader).unwrap());
            }
            reader.handle_end().unwrap();
            assert_eq!(normalize(events), expected, "chunk size {chunk_size}");
        }
    }

    #[test]
    fn data_is_not_copied() {
        let chunk = Bytes::from(vec![0x00, 0x04, 1, 2, 3, 4]);
        let start = chunk.as_ptr() as usize;
        let mut reader = FrameReader::new(0);
        reader.handle_data(chunk.clone());
        assert!(matches!(
            reader.poll_event(),
            Ok(Some(FrameEvent::Header(_)))
        ));
        let Ok(Some(FrameEvent::Data(data))) = reader.poll_event() else {
            panic!("expected data");
        };
        assert_eq!(data.as_ptr() as usize, start + 2);
        assert_eq!(data, [1, 2, 3, 4][..]);
    }

    #[test]
    fn truncated_stream() {
        // RFC 9114 §7.1: a clean end inside a frame is H3_FRAME_ERROR.
        for bytes in [&[0x01][..], &[0x01, 0x03, 0x00], &[0x00, 0x05, b'a']] {
            let mut reader = FrameReader::new(1024);
            reader.handle_data(Bytes::copy_from_slice(bytes));
            drain(&mut reader).unwrap();
            let err = reader.handle_end().unwrap_err();
            assert_eq!(err, FrameError::Truncated);
            assert_eq!(Code::from(err), Code::H3_FRAME_ERROR);
        }
    }

    #[test]
    fn too_large_before_payload() {
        let mut reader = FrameReader::new(8);
        reader.handle_data(Bytes::from_static(&[0x04, 0x09]));
        let err = drain(&mut reader).unwrap_err();
        assert_eq!(Code::from(err), Code::H3_EXCESSIVE_LOAD);
    }

    #[test]
    fn no_bound_buffers_more_than_4_gib() {
        // A SETTINGS frame of 2^32 bytes (length varint 0xc0000001_00000000), with no bound
        // given: refused as too large rather than buffered or skipped.
        let mut reader = FrameReader::new(u64::MAX);
        reader.handle_data(Bytes::from_static(&[
            0x04, 0xc0, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        ]));
        let err = drain(&mut reader).unwrap_err();
        assert_eq!(Code::from(err), Code::H3_EXCESSIVE_LOAD);
        let mut capsules = crate::proto::capsule::CapsuleReader::new(u64::MAX);
        capsules.handle_data(Bytes::from_static(&[
            0x00, 0xc0, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        ]));
        let err = capsules.poll_capsule().unwrap_err();
        assert_eq!(Code::from(err), Code::H3_EXCESSIVE_LOAD);
    }

    #[test]
    fn huge_unknown_and_data_frames_are_fine() {
        // Unknown frames are skipped and DATA streamed, so neither is bound by the limit.
        let mut reader = FrameReader::new(8);
        reader.handle_data(Bytes::from_static(&[0x21, 0x50, 0x00]));
        reader.handle_data(Bytes::from(vec![0; 0x1000]));
        reader.handle_data(Bytes::from_static(&[0x00, 0x50, 0x00]));
        reader.handle_data(Bytes::from(vec![7; 0x1000]));
        let events = normalize(drain(&mut reader).unwrap());
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], FrameEvent::Data(Bytes::from(vec![7; 0x1000])));
        assert!(reader.is_idle());
    }

    #[test]
    fn http2_frame_refused_at_header() {
        let mut reader = FrameReader::new(1024);
        reader.handle_data(Bytes::from_static(&[0x06, 0x08]));
        let err = drain(&mut reader).unwrap_err();
        assert_eq!(err, FrameError::UnexpectedHttp2(FrameType::HTTP2_PING));
        assert_eq!(Code::from(err), Code::H3_FRAME_UNEXPECTED);
    }

    #[test]
    fn control_stream_with_prefix() {
        let mut bytes = Vec::new();
        UniStreamHeader::Control.encode(&mut bytes);
        let mut settings = Settings::new();
        settings
            .insert(
                crate::proto::settings::SettingId::QPACK_BLOCKED_STREAMS,
                vi(16),
            )
            .unwrap();
        Frame::Settings(settings.clone()).encode(&mut bytes);
        Frame::Goaway(vi(8)).encode(&mut bytes);
        for split in 0..=bytes.len() {
            let mut reader = FrameReader::new(1024);
            reader.handle_data(Bytes::copy_from_slice(&bytes[..split]));
            let mut prefix = reader.take_prefix::<UniStreamHeader>();
            reader.handle_data(Bytes::copy_from_slice(&bytes[split..]));
            if prefix.is_none() {
                prefix = reader.take_prefix::<UniStreamHeader>();
            }
            assert_eq!(prefix, Some(UniStreamHeader::Control));
            let frames: Vec<_> = drain(&mut reader)
                .unwrap()
                .into_iter()
                .filter_map(|e| match e {
                    FrameEvent::Frame(f) => Some(f),
                    _ => None,
                })
                .collect();
            assert_eq!(
                frames,
                [Frame::Settings(settings.clone()), Frame::Goaway(vi(8))]
            );
        }
    }

    #[test]
    fn webtransport_bidi_prefix() {
        let mut reader = FrameReader::new(1024);
        reader.handle_data(Bytes::from_static(&[0x01, 0x00]));
        assert_eq!(
            reader.take_prefix_with(BidiStreamHeader::decode),
            Some(BidiStreamHeader::Request)
        );
        assert!(matches!(
            reader.poll_event(),
            Ok(Some(FrameEvent::Header(_)))
        ));
        assert_eq!(
            reader.poll_event(),
            Ok(Some(FrameEvent::Frame(Frame::Headers(Bytes::new()))))
        );
    }
}
