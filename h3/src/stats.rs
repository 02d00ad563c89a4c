//! What a connection and a request stream did: plain counters, cheap to take.
//!
//! This module owns the stats types. [`H3Stats`] is what the pure
//! [`ConnectionState`](crate::connection::ConnectionState) counts (requests, streams, frames by
//! type each way, QPACK, GOAWAY, the peer's main SETTINGS); [`ConnectionStats`] adds what the
//! transport knows (RTT, congestion window, loss, UDP datagrams and bytes; quinn's own
//! `ConnectionStats`) and the handshake's duration; [`RequestStats`] is one request stream's.
//! Every type is `Copy`, so taking stats never allocates. Counting costs a few additions per
//! frame; request streams add theirs to the connection's when they end.
//!
//! It does not export anything (the `metrics` facade and qlog are separate).

use std::time::Duration;

use crate::error::Code;
use crate::proto::frame::FrameType;

/// Frames of one type and their bytes on the wire (type and length prefixes included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCount {
    /// How many frames.
    pub frames: u64,
    /// Their bytes, headers included.
    pub bytes: u64,
}

/// Frames by type, one direction (RFC 9114 §7.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FrameStats {
    /// DATA.
    pub data: FrameCount,
    /// HEADERS (heads and trailers).
    pub headers: FrameCount,
    /// SETTINGS.
    pub settings: FrameCount,
    /// GOAWAY.
    pub goaway: FrameCount,
    /// MAX_PUSH_ID.
    pub max_push_id: FrameCount,
    /// CANCEL_PUSH.
    pub cancel_push: FrameCount,
    /// PUSH_PROMISE.
    pub push_promise: FrameCount,
    /// PRIORITY_UPDATE, both variants (RFC 9218 §7).
    pub priority_update: FrameCount,
    /// Any other type: reserved (GREASE) and extension frames.
    pub other: FrameCount,
}

impl FrameStats {
    /// The counts in [`FrameTally`]'s order.
    fn slots(&self) -> [FrameCount; 9] {
        [
            self.data,
            self.headers,
            self.settings,
            self.goaway,
            self.max_push_id,
            self.cancel_push,
            self.push_promise,
            self.priority_update,
            self.other,
        ]
    }

    /// Every frame, whatever its type.
    pub fn total(&self) -> FrameCount {
        let mut sum = *self;
        let all = [
            sum.headers,
            sum.settings,
            sum.goaway,
            sum.max_push_id,
            sum.cancel_push,
            sum.push_promise,
            sum.priority_update,
            sum.other,
        ];
        for count in all {
            sum.data.frames += count.frames;
            sum.data.bytes += count.bytes;
        }
        sum.data
    }
}

/// Frames by type as a connection keeps them: counts as `u32`, bytes as `u64` for DATA,
/// HEADERS and unknown types (which may carry much) and as `u32` for the control frames (a few
/// bytes each), all saturating, so an idle connection holds 88 bytes per direction rather
/// than [`FrameStats`]' 144.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FrameTally {
    frames: [u32; 9],
    /// DATA, HEADERS, unknown: slots 0, 1 and 8.
    bulk_bytes: [u64; 3],
    /// Slots 2 to 7.
    control_bytes: [u32; 6],
}

impl FrameTally {
    fn slot(ty: FrameType) -> usize {
        match ty {
            FrameType::DATA => 0,
            FrameType::HEADERS => 1,
            FrameType::SETTINGS => 2,
            FrameType::GOAWAY => 3,
            FrameType::MAX_PUSH_ID => 4,
            FrameType::CANCEL_PUSH => 5,
            FrameType::PUSH_PROMISE => 6,
            FrameType::PRIORITY_UPDATE_REQUEST | FrameType::PRIORITY_UPDATE_PUSH => 7,
            _ => 8,
        }
    }

    /// Adds `frames` frames of `bytes` bytes in all to slot `i`.
    fn add_to(&mut self, i: usize, frames: u64, bytes: u64) {
        let frames = u32::try_from(frames).unwrap_or(u32::MAX);
        self.frames[i] = self.frames[i].saturating_add(frames);
        match i {
            0 | 1 => self.bulk_bytes[i] = self.bulk_bytes[i].saturating_add(bytes),
            8 => self.bulk_bytes[2] = self.bulk_bytes[2].saturating_add(bytes),
            _ => {
                let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
                self.control_bytes[i - 2] = self.control_bytes[i - 2].saturating_add(bytes);
            }
        }
    }

    /// Counts one frame of `ty` whose whole encoding is `bytes` long.
    pub(crate) fn count(&mut self, ty: FrameType, bytes: u64) {
        self.add_to(Self::slot(ty), 1, bytes);
    }

    /// Adds `stats`' counts to these.
    pub(crate) fn add(&mut self, stats: &FrameStats) {
        for (i, count) in stats.slots().into_iter().enumerate() {
            self.add_to(i, count.frames, count.bytes);
        }
    }

    /// The counts as [`FrameStats`].
    pub(crate) fn to_stats(self) -> FrameStats {
        let count = |i: usize| FrameCount {
            frames: u64::from(self.frames[i]),
            bytes: match i {
                0 | 1 => self.bulk_bytes[i],
                8 => self.bulk_bytes[2],
                _ => u64::from(self.control_bytes[i - 2]),
            },
        };
        FrameStats {
            data: count(0),
            headers: count(1),
            settings: count(2),
            goaway: count(3),
            max_push_id: count(4),
            cancel_push: count(5),
            push_promise: count(6),
            priority_update: count(7),
            other: count(8),
        }
    }
}

/// The frames of one request stream, one direction: a request stream carries HEADERS and DATA,
/// and any other type is counted as `other`. Small, since every request stream and WebTransport
/// session keeps one per direction; added to the connection's [`FrameStats`] when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamFrames {
    pub(crate) headers: FrameCount,
    pub(crate) data: FrameCount,
    pub(crate) other: FrameCount,
}

impl StreamFrames {
    /// Counts one frame of `ty` whose whole encoding is `bytes` long.
    pub(crate) fn count(&mut self, ty: FrameType, bytes: u64) {
        let slot = match ty {
            FrameType::DATA => &mut self.data,
            FrameType::HEADERS => &mut self.headers,
            _ => &mut self.other,
        };
        slot.frames += 1;
        slot.bytes += bytes;
    }

    /// The same counts as connection-wide [`FrameStats`] (`other` there too).
    pub(crate) fn to_stats(self) -> FrameStats {
        FrameStats {
            headers: self.headers,
            data: self.data,
            other: self.other,
            ..FrameStats::default()
        }
    }
}

/// The streams the peer opened, by kind (RFC 9114 §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamCounts {
    /// Bidirectional streams: requests, and those an extension (WebTransport) claims.
    pub bidi: u64,
    /// Control streams (one, unless the peer broke the rules).
    pub control: u64,
    /// QPACK encoder and decoder streams.
    pub qpack: u64,
    /// Push streams (always refused: quay allows no push).
    pub push: u64,
    /// Unidirectional streams an extension (WebTransport) claims.
    pub extension: u64,
    /// Streams of unknown (or GREASE) types, read no further (RFC 9114 §6.2.3).
    pub unknown: u64,
}

/// What happened to request streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestCounts {
    /// Requests opened (client) or accepted for processing (server).
    pub opened: u64,
    /// Server: requests refused unprocessed with H3_REQUEST_REJECTED, after our GOAWAY.
    pub rejected: u64,
    /// Server: request streams reset with H3_REQUEST_INCOMPLETE because the head did not arrive
    /// in time (or the stream ended first).
    pub incomplete: u64,
    /// Messages found malformed (stream error H3_MESSAGE_ERROR and kin, RFC 9114 §4.1.2).
    pub malformed: u64,
    /// Request streams the peer reset.
    pub reset_by_peer: u64,
}

/// QPACK, both ways (RFC 9204).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QpackStats {
    /// Our encoder's dynamic table: its size in bytes (RFC 9204 §3.2.1) and entries.
    pub encoder_table_size: u64,
    /// Entries in our encoder's dynamic table.
    pub encoder_table_entries: u64,
    /// Inserts our encoder made.
    pub encoder_inserts: u64,
    /// Our decoder's copy of the peer's dynamic table: its size in bytes.
    pub decoder_table_size: u64,
    /// Entries in our decoder's dynamic table.
    pub decoder_table_entries: u64,
    /// Inserts the peer's encoder made.
    pub decoder_inserts: u64,
    /// Streams whose field section waits for the peer's encoder stream now.
    pub blocked_streams: u64,
    /// Field sections that ever had to wait.
    pub blocked_sections: u64,
    /// Bytes on our encoder stream.
    pub encoder_stream_sent: u64,
    /// Bytes on the peer's encoder stream.
    pub encoder_stream_received: u64,
    /// Bytes on our decoder stream.
    pub decoder_stream_sent: u64,
    /// Bytes on the peer's decoder stream.
    pub decoder_stream_received: u64,
}

/// The HTTP/3 layer's own counters, from the pure connection state. A connection keeps its
/// counts of streams, requests and frames as 32 bits (and the bytes of control frames, a few
/// each): they stop at 2^32 - 1 rather than wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct H3Stats {
    /// Request streams.
    pub requests: RequestCounts,
    /// Streams the peer opened.
    pub peer_streams: StreamCounts,
    /// Frames we sent (request streams count once they end).
    pub frames_sent: FrameStats,
    /// Frames we received (request streams count once they end).
    pub frames_received: FrameStats,
    /// QPACK.
    pub qpack: QpackStats,
    /// The ID in the last GOAWAY we sent.
    pub goaway_sent: Option<u64>,
    /// The ID in the last GOAWAY the peer sent.
    pub goaway_received: Option<u64>,
    /// The peer's SETTINGS arrived.
    pub peer_settings_received: bool,
    /// The peer's SETTINGS_MAX_FIELD_SECTION_SIZE, if it sent one (RFC 9114 §7.2.4.1).
    pub peer_max_field_section_size: Option<u64>,
    /// The peer's SETTINGS_QPACK_MAX_TABLE_CAPACITY (RFC 9204 §5).
    pub peer_qpack_max_table_capacity: u64,
    /// The peer's SETTINGS_QPACK_BLOCKED_STREAMS (RFC 9204 §5).
    pub peer_qpack_blocked_streams: u64,
    /// The peer announced Extended CONNECT (RFC 9220).
    pub peer_extended_connect: bool,
    /// The peer announced HTTP datagrams (RFC 9297).
    pub peer_h3_datagram: bool,
}

/// One of the events [`H3Counts`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// A bidirectional stream from the peer ([`StreamCounts::bidi`]).
    PeerBidi,
    /// [`StreamCounts::control`].
    PeerControl,
    /// [`StreamCounts::qpack`].
    PeerQpack,
    /// [`StreamCounts::push`].
    PeerPush,
    /// [`StreamCounts::extension`].
    PeerExtension,
    /// [`StreamCounts::unknown`].
    PeerUnknown,
    /// [`RequestCounts::opened`].
    RequestOpened,
    /// [`RequestCounts::rejected`].
    RequestRejected,
    /// [`RequestCounts::incomplete`].
    RequestIncomplete,
    /// [`RequestCounts::malformed`].
    RequestMalformed,
    /// [`RequestCounts::reset_by_peer`].
    RequestResetByPeer,
    /// [`QpackStats::blocked_sections`].
    BlockedSection,
}

impl Count {
    /// How many there are: the last one's index, plus one.
    const ALL: usize = Self::BlockedSection as usize + 1;
}

/// What [`ConnectionState`](crate::connection::ConnectionState) counts itself; the rest of
/// [`H3Stats`] is read off its state when asked. Small, as every connection holds one: events
/// are counted as `u32`, saturating, and frames as [`FrameTally`] does.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct H3Counts {
    /// By [`Count`], in its order.
    events: [u32; Count::ALL],
    pub(crate) frames_sent: FrameTally,
    pub(crate) frames_received: FrameTally,
    /// QPACK: encoder and decoder stream bytes sent and received.
    pub(crate) encoder_stream_sent: u64,
    pub(crate) encoder_stream_received: u64,
    pub(crate) decoder_stream_sent: u64,
    pub(crate) decoder_stream_received: u64,
}

impl H3Counts {
    /// Counts one `event`.
    pub(crate) fn bump(&mut self, event: Count) {
        let n = &mut self.events[event as usize];
        *n = n.saturating_add(1);
    }

    /// The counts as [`H3Stats`], for the connection state to complete.
    pub(crate) fn to_stats(self) -> H3Stats {
        let n = |event: Count| u64::from(self.events[event as usize]);
        H3Stats {
            requests: RequestCounts {
                opened: n(Count::RequestOpened),
                rejected: n(Count::RequestRejected),
                incomplete: n(Count::RequestIncomplete),
                malformed: n(Count::RequestMalformed),
                reset_by_peer: n(Count::RequestResetByPeer),
            },
            peer_streams: StreamCounts {
                bidi: n(Count::PeerBidi),
                control: n(Count::PeerControl),
                qpack: n(Count::PeerQpack),
                push: n(Count::PeerPush),
                extension: n(Count::PeerExtension),
                unknown: n(Count::PeerUnknown),
            },
            frames_sent: self.frames_sent.to_stats(),
            frames_received: self.frames_received.to_stats(),
            qpack: QpackStats {
                blocked_sections: n(Count::BlockedSection),
                encoder_stream_sent: self.encoder_stream_sent,
                encoder_stream_received: self.encoder_stream_received,
                decoder_stream_sent: self.decoder_stream_sent,
                decoder_stream_received: self.decoder_stream_received,
                ..QpackStats::default()
            },
            ..H3Stats::default()
        }
    }
}

/// A connection's stats: the transport's and the HTTP/3 layer's.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// quinn's: UDP datagrams and bytes each way, frames, and the path (congestion window,
    /// congestion events, lost packets and bytes, MTU).
    pub transport: quay_transport::quinn::ConnectionStats,
    /// The smoothed round-trip time now.
    pub rtt: Duration,
    /// From the start of the handshake to the connection's establishment, when this side saw
    /// both (a server from the first Initial; a client from its connect).
    pub handshake: Option<Duration>,
    /// The HTTP/3 layer's counters.
    pub h3: H3Stats,
}

/// One request stream's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestStats {
    /// Body bytes sent (DATA payloads).
    pub body_sent: u64,
    /// Body bytes received (DATA payloads).
    pub body_received: u64,
    /// Encoded size of the head we sent (its QPACK section).
    pub head_sent: u64,
    /// Encoded size of the head we received (the final one, after interim responses).
    pub head_received: u64,
    /// Encoded size of the trailers we sent.
    pub trailers_sent: u64,
    /// Encoded size of the trailers we received.
    pub trailers_received: u64,
    /// Client: from sending the request head to receiving the final response head.
    pub time_to_response_head: Option<Duration>,
    /// The code the peer reset the stream with (RESET_STREAM).
    pub reset_by_peer: Option<Code>,
    /// The code the peer stopped our side with (STOP_SENDING).
    pub stopped_by_peer: Option<Code>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_by_type_and_added_up() {
        let mut tally = FrameTally::default();
        tally.count(FrameType::DATA, 10);
        tally.count(FrameType::DATA, 5);
        tally.count(FrameType::HEADERS, 20);
        tally.count(
            FrameType::from_varint(crate::proto::VarInt::from_u32(0x21)),
            3,
        );
        tally.count(FrameType::GOAWAY, 3);
        let stats = tally.to_stats();
        assert_eq!(
            stats.data,
            FrameCount {
                frames: 2,
                bytes: 15
            }
        );
        assert_eq!(
            stats.other,
            FrameCount {
                frames: 1,
                bytes: 3
            }
        );
        assert_eq!(
            stats.total(),
            FrameCount {
                frames: 5,
                bytes: 41
            }
        );
    }

    #[test]
    fn a_connection_keeps_its_counts_small() {
        assert_eq!(size_of::<FrameTally>(), 88);
        assert!(size_of::<H3Counts>() <= 256, "{}", size_of::<H3Counts>());
        let mut tally = FrameTally::default();
        tally.count(FrameType::GOAWAY, 3);
        let more = FrameStats {
            goaway: FrameCount {
                frames: 1,
                bytes: 4,
            },
            ..FrameStats::default()
        };
        tally.add(&more);
        assert_eq!(
            tally.to_stats().goaway,
            FrameCount {
                frames: 2,
                bytes: 7
            }
        );
    }

    #[test]
    fn compact_counts_saturate_and_keep_bulk_bytes_wide() {
        let mut tally = FrameTally::default();
        let big = FrameCount {
            frames: u64::from(u32::MAX) + 5,
            bytes: 1 << 40,
        };
        tally.add(&FrameStats {
            data: big,
            settings: big,
            other: big,
            ..FrameStats::default()
        });
        tally.count(FrameType::SETTINGS, 9);
        let stats = tally.to_stats();
        assert_eq!(stats.data.bytes, 1 << 40);
        assert_eq!(stats.other.bytes, 1 << 40);
        assert_eq!(stats.data.frames, u64::from(u32::MAX));
        // A control frame type's bytes stop at 4 GiB; none of its frames is that large.
        assert_eq!(stats.settings.bytes, u64::from(u32::MAX));
        assert_eq!(stats.settings.frames, u64::from(u32::MAX));
        assert_eq!(stats.headers, FrameCount::default());

        let mut counts = H3Counts::default();
        counts.bump(Count::PeerBidi);
        counts.bump(Count::PeerBidi);
        counts.bump(Count::RequestMalformed);
        counts.bump(Count::BlockedSection);
        let stats = counts.to_stats();
        assert_eq!(stats.peer_streams.bidi, 2);
        assert_eq!(stats.requests.malformed, 1);
        assert_eq!(stats.qpack.blocked_sections, 1);
        assert_eq!(stats.requests.opened, 0);
    }

    #[test]
    fn stream_frames_are_kept_small() {
        // 48 bytes per direction per request stream or session.
        assert_eq!(size_of::<StreamFrames>(), 48);
        let mut frames = StreamFrames::default();
        frames.count(FrameType::HEADERS, 10);
        frames.count(FrameType::PUSH_PROMISE, 5);
        let stats = frames.to_stats();
        assert_eq!(
            stats.headers,
            FrameCount {
                frames: 1,
                bytes: 10
            }
        );
        assert_eq!(
            stats.other,
            FrameCount {
                frames: 1,
                bytes: 5
            }
        );
    }

    #[test]
    fn stats_are_small_plain_values() {
        // Taking stats copies them: keep them within ten cache lines.
        assert!(size_of::<H3Stats>() <= 640, "{}", size_of::<H3Stats>());
        assert!(
            size_of::<RequestStats>() <= 128,
            "{}",
            size_of::<RequestStats>()
        );
    }
}
