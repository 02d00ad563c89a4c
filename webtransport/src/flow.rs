//! Draft-16 session flow control (draft-ietf-webtrans-http3-16 §5), sans-IO: [`FlowControl`]
//! counts one session's streams and stream bytes both ways and says which capsules to send.
//!
//! It is on only when both endpoints announce a non-zero initial limit in SETTINGS (§5.1); a
//! session without it has no `FlowControl` at all. The limits we give the peer are windows: the
//! peer may open as many streams as the application has accepted plus the initial stream limit,
//! and send as many bytes as the application has read plus the initial data limit. Credit is
//! announced (WT_MAX_STREAMS, WT_MAX_DATA) once half a window is used, so a steady reader never
//! stalls its peer. The peer's bytes are counted as the application reads them: a peer past
//! its limit is caught once the excess is read (quinn does not tell us how much a stream has
//! buffered, nor the final size of a reset stream).
//!
//! The session core (`crate::core::session`) drives it; the async glue (waiting for credit,
//! sending the capsules) is `crate::state`'s and [`crate::stream`]'s.

use quay_h3::proto::VarInt;

use crate::proto::capsule::{Direction, WtCapsule};
use crate::proto::settings::FlowControlLimits;

/// The window used for a limit announced as 0 (we then send the first credit at once): bytes.
const DEFAULT_DATA_WINDOW: u64 = 16 * 1024 * 1024;
/// The window used for a stream limit announced as 0.
const DEFAULT_STREAM_WINDOW: u64 = 100;

/// The peer broke session flow control: the session ends with WT_FLOW_CONTROL_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FlowControlError {
    /// It opened more streams than we allowed.
    #[error("the peer opened more streams than the session allows")]
    TooManyStreams,
    /// It sent more stream bytes than we allowed.
    #[error("the peer sent more data than the session allows")]
    TooMuchData,
    /// A WT_MAX_DATA or WT_MAX_STREAMS capsule that does not raise the limit.
    #[error("a flow-control capsule that does not raise the limit")]
    LimitNotRaised,
}

/// One limit we give the peer: what it has used, what we allow, and what we have told it (the
/// peer is held to that).
#[derive(Debug, Clone, Copy)]
struct Credit {
    window: u64,
    used: u64,
    allowed: u64,
    announced: u64,
}

impl Credit {
    fn new(initial: u64, default_window: u64) -> Self {
        let window = if initial == 0 {
            default_window
        } else {
            initial
        };
        Self {
            window,
            used: 0,
            allowed: window,
            announced: initial,
        }
    }

    /// `n` more used (read, or accepted); the allowance follows. `true` when an announcement is
    /// due.
    fn consume(&mut self, n: u64) -> bool {
        self.used = self.used.saturating_add(n);
        self.allowed = self.used.saturating_add(self.window);
        self.due()
    }

    fn due(&self) -> bool {
        self.allowed.saturating_sub(self.announced) >= (self.window / 2).max(1)
    }

    /// The value to announce, if one is due; it counts as announced.
    fn announce(&mut self) -> Option<u64> {
        if !self.due() {
            return None;
        }
        self.announced = self.allowed;
        Some(self.allowed)
    }
}

/// One limit the peer gives us.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    max: u64,
    used: u64,
    /// The limit at which we last sent a *_BLOCKED capsule, so it goes once per limit.
    blocked_at: Option<u64>,
}

impl Allowance {
    fn new(max: u64) -> Self {
        Self {
            max,
            used: 0,
            blocked_at: None,
        }
    }

    fn available(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }

    /// Notes that we are blocked; `true` if the peer has not been told at this limit.
    fn blocked(&mut self) -> bool {
        let first = self.blocked_at != Some(self.max);
        self.blocked_at = Some(self.max);
        first
    }

    fn raise(&mut self, max: u64) -> Result<(), FlowControlError> {
        // §5.6.2, §5.6.4: a capsule that does not increase the limit is an error.
        if max <= self.max {
            return Err(FlowControlError::LimitNotRaised);
        }
        self.max = max;
        Ok(())
    }
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::Bidi => 0,
        Direction::Uni => 1,
    }
}

/// The flow-control state of one session.
#[derive(Debug, Clone)]
pub(crate) struct FlowControl {
    /// What the peer lets us send.
    send_data: Allowance,
    /// What the peer lets us open, bidi then uni.
    send_streams: [Allowance; 2],
    /// What we let the peer send.
    recv_data: Credit,
    /// What we let the peer open, bidi then uni.
    recv_streams: [Credit; 2],
    /// Streams the peer opened, bidi then uni.
    peer_opened: [u64; 2],
}

impl FlowControl {
    /// The credit each way now, for the session's stats.
    pub(crate) fn credit(&self) -> crate::stats::FlowCredit {
        let left = |credit: &Credit| credit.announced.saturating_sub(credit.used);
        crate::stats::FlowCredit {
            send_data: self.send_data.available(),
            receive_data: left(&self.recv_data),
            send_streams_bidi: self.send_streams[0].available(),
            send_streams_uni: self.send_streams[1].available(),
            receive_streams_bidi: self.recv_streams[0]
                .announced
                .saturating_sub(self.peer_opened[0]),
            receive_streams_uni: self.recv_streams[1]
                .announced
                .saturating_sub(self.peer_opened[1]),
        }
    }

    /// A session's flow control, from our announced limits and the peer's.
    pub(crate) fn new(local: FlowControlLimits, peer: FlowControlLimits) -> Self {
        Self {
            send_data: Allowance::new(peer.max_data),
            send_streams: [
                Allowance::new(peer.max_streams_bidi),
                Allowance::new(peer.max_streams_uni),
            ],
            recv_data: Credit::new(local.max_data, DEFAULT_DATA_WINDOW),
            recv_streams: [
                Credit::new(local.max_streams_bidi, DEFAULT_STREAM_WINDOW),
                Credit::new(local.max_streams_uni, DEFAULT_STREAM_WINDOW),
            ],
            peer_opened: [0, 0],
        }
    }

    /// Takes one of the peer's stream credits for a stream we open. `Err(true)` when blocked
    /// and a WT_STREAMS_BLOCKED is due, `Err(false)` when blocked and it was sent.
    pub(crate) fn open(&mut self, direction: Direction) -> Result<(), bool> {
        let allowance = &mut self.send_streams[index(direction)];
        if allowance.available() == 0 {
            return Err(allowance.blocked());
        }
        allowance.used += 1;
        Ok(())
    }

    /// Takes up to `want` bytes of the peer's data credit. `Err(true)` when there is none and a
    /// WT_DATA_BLOCKED is due, `Err(false)` when there is none and it was sent.
    pub(crate) fn reserve(&mut self, want: usize) -> Result<usize, bool> {
        let available = self.send_data.available();
        if available == 0 && want > 0 {
            return Err(self.send_data.blocked());
        }
        let n = usize::try_from(available).map_or(want, |available| want.min(available));
        self.send_data.used += n as u64;
        Ok(n)
    }

    /// Gives back reserved bytes that were not sent.
    pub(crate) fn refund(&mut self, n: usize) {
        self.send_data.used = self.send_data.used.saturating_sub(n as u64);
    }

    /// The peer opened a stream of this session.
    pub(crate) fn on_peer_stream(&mut self, direction: Direction) -> Result<(), FlowControlError> {
        let i = index(direction);
        self.peer_opened[i] += 1;
        // §5.6.2: past the limit we announced is an error.
        if self.peer_opened[i] > self.recv_streams[i].announced {
            return Err(FlowControlError::TooManyStreams);
        }
        Ok(())
    }

    /// The application accepted one of the peer's streams. `true` when credit is due.
    pub(crate) fn on_accepted(&mut self, direction: Direction) -> bool {
        self.recv_streams[index(direction)].consume(1)
    }

    /// The application read `n` bytes of the peer's stream data. `Ok(true)` when credit is due.
    pub(crate) fn on_read(&mut self, n: usize) -> Result<bool, FlowControlError> {
        let due = self.recv_data.consume(n as u64);
        // §5.6.4: past the limit we announced is an error.
        if self.recv_data.used > self.recv_data.announced {
            return Err(FlowControlError::TooMuchData);
        }
        Ok(due)
    }

    /// A flow-control capsule from the peer. `Ok(true)` when it gave us more credit.
    pub(crate) fn on_capsule(&mut self, capsule: &WtCapsule) -> Result<bool, FlowControlError> {
        match capsule {
            WtCapsule::MaxData(max) => self.send_data.raise(max.into_inner()).map(|()| true),
            WtCapsule::MaxStreams(direction, max) => self.send_streams[index(*direction)]
                .raise(max.into_inner())
                .map(|()| true),
            _ => Ok(false),
        }
    }

    /// The capsules to send now: credit that is due, then the blocked signals asked for.
    pub(crate) fn updates(
        &mut self,
        data_blocked: bool,
        streams_blocked: [bool; 2],
    ) -> Vec<WtCapsule> {
        let mut out = Vec::new();
        if let Some(max) = self.recv_data.announce() {
            out.push(WtCapsule::MaxData(varint(max)));
        }
        for direction in [Direction::Bidi, Direction::Uni] {
            if let Some(max) = self.recv_streams[index(direction)].announce() {
                out.push(WtCapsule::MaxStreams(direction, varint(max)));
            }
        }
        if data_blocked {
            out.push(WtCapsule::DataBlocked(varint(self.send_data.max)));
        }
        for direction in [Direction::Bidi, Direction::Uni] {
            if streams_blocked[index(direction)] {
                let max = self.send_streams[index(direction)].max;
                out.push(WtCapsule::StreamsBlocked(direction, varint(max)));
            }
        }
        out
    }

    /// Whether credit is due (a limit we gave was announced as 0, or half a window is used).
    pub(crate) fn credit_due(&self) -> bool {
        self.recv_data.due() || self.recv_streams.iter().any(Credit::due)
    }
}

/// Counts stay far below 2^62: they are bounded by bytes and streams that really moved.
fn varint(value: u64) -> VarInt {
    VarInt::from_u64(value).unwrap_or(VarInt::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_data: u64, bidi: u64, uni: u64) -> FlowControlLimits {
        FlowControlLimits {
            max_data,
            max_streams_uni: uni,
            max_streams_bidi: bidi,
        }
    }

    #[test]
    fn opening_stops_at_the_peer_limit_and_says_blocked_once() {
        let mut flow = FlowControl::new(limits(1000, 10, 10), limits(1000, 2, 0));
        assert_eq!(flow.open(Direction::Bidi), Ok(()));
        assert_eq!(flow.open(Direction::Bidi), Ok(()));
        assert_eq!(flow.open(Direction::Bidi), Err(true));
        assert_eq!(flow.open(Direction::Bidi), Err(false));
        assert_eq!(flow.open(Direction::Uni), Err(true));
        assert_eq!(
            flow.updates(false, [true, true]),
            vec![
                WtCapsule::StreamsBlocked(Direction::Bidi, VarInt::from_u32(2)),
                WtCapsule::StreamsBlocked(Direction::Uni, VarInt::from_u32(0)),
            ]
        );
        let raise = WtCapsule::MaxStreams(Direction::Bidi, VarInt::from_u32(3));
        assert_eq!(flow.on_capsule(&raise), Ok(true));
        assert_eq!(flow.open(Direction::Bidi), Ok(()));
        assert_eq!(
            flow.open(Direction::Bidi),
            Err(true),
            "blocked at a new limit"
        );
    }

    #[test]
    fn limits_that_do_not_rise_are_errors() {
        let mut flow = FlowControl::new(limits(1, 1, 1), limits(100, 4, 4));
        let same = WtCapsule::MaxData(VarInt::from_u32(100));
        assert_eq!(
            flow.on_capsule(&same),
            Err(FlowControlError::LimitNotRaised)
        );
        let lower = WtCapsule::MaxStreams(Direction::Uni, VarInt::from_u32(3));
        assert_eq!(
            flow.on_capsule(&lower),
            Err(FlowControlError::LimitNotRaised)
        );
        let blocked = WtCapsule::DataBlocked(VarInt::from_u32(7));
        assert_eq!(flow.on_capsule(&blocked), Ok(false));
    }

    #[test]
    fn sending_reserves_and_refunds_data_credit() {
        let mut flow = FlowControl::new(limits(1, 1, 1), limits(100, 1, 1));
        assert_eq!(flow.reserve(60), Ok(60));
        assert_eq!(flow.reserve(60), Ok(40));
        assert_eq!(flow.reserve(1), Err(true));
        assert_eq!(flow.reserve(1), Err(false));
        assert_eq!(flow.reserve(0), Ok(0));
        flow.refund(10);
        assert_eq!(flow.reserve(60), Ok(10));
        assert_eq!(
            flow.updates(true, [false, false]),
            vec![WtCapsule::DataBlocked(VarInt::from_u32(100))]
        );
        assert_eq!(
            flow.on_capsule(&WtCapsule::MaxData(VarInt::from_u32(150))),
            Ok(true)
        );
        assert_eq!(flow.reserve(100), Ok(50));
    }

    #[test]
    fn reading_grants_credit_every_half_window() {
        let mut flow = FlowControl::new(limits(100, 4, 4), limits(0, 0, 0));
        assert!(!flow.credit_due());
        assert_eq!(flow.on_read(49), Ok(false));
        assert_eq!(flow.on_read(1), Ok(true));
        assert_eq!(
            flow.updates(false, [false, false]),
            vec![WtCapsule::MaxData(VarInt::from_u32(150))]
        );
        assert!(!flow.credit_due());
        // Up to the allowance is fine, past it is the peer's error.
        assert_eq!(flow.on_read(100), Ok(true));
        assert_eq!(flow.on_read(1), Err(FlowControlError::TooMuchData));
    }

    #[test]
    fn peer_streams_are_counted_against_accepted_plus_window() {
        let mut flow = FlowControl::new(limits(100, 2, 1), limits(0, 0, 0));
        assert_eq!(flow.on_peer_stream(Direction::Bidi), Ok(()));
        assert_eq!(flow.on_peer_stream(Direction::Bidi), Ok(()));
        assert!(
            flow.on_accepted(Direction::Bidi),
            "half of 2 used: credit due"
        );
        assert_eq!(
            flow.updates(false, [false, false]),
            vec![WtCapsule::MaxStreams(Direction::Bidi, VarInt::from_u32(3))]
        );
        assert_eq!(flow.on_peer_stream(Direction::Bidi), Ok(()));
        assert_eq!(
            flow.on_peer_stream(Direction::Bidi),
            Err(FlowControlError::TooManyStreams)
        );
        assert_eq!(flow.on_peer_stream(Direction::Uni), Ok(()));
        assert_eq!(
            flow.on_peer_stream(Direction::Uni),
            Err(FlowControlError::TooManyStreams)
        );
    }

    #[test]
    fn a_limit_announced_as_zero_gets_a_default_window_at_once() {
        let mut flow = FlowControl::new(limits(0, 0, 5), limits(0, 0, 0));
        assert!(flow.credit_due());
        assert_eq!(
            flow.updates(false, [false, false]),
            vec![
                WtCapsule::MaxData(VarInt::from_u64(DEFAULT_DATA_WINDOW).unwrap()),
                WtCapsule::MaxStreams(
                    Direction::Bidi,
                    VarInt::from_u64(DEFAULT_STREAM_WINDOW).unwrap()
                ),
            ]
        );
        assert!(!flow.credit_due());
    }
}
