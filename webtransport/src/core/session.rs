//! [`SessionCore`]: the rules of one WebTransport-over-HTTP/3 session, sans-IO.
//!
//! It owns what a session decides: the end reason and the order in which it is decided, what
//! goes out on the CONNECT stream (WT_CLOSE_SESSION, WT_DRAIN_SESSION, the flow-control
//! capsules, FIN, RESET_STREAM), the peer's drain, draft-16 flow control (the counting is
//! [`FlowControl`]'s) and the peer's streams routed to the session and not accepted yet. It
//! does not own streams, tasks, locks, wakers or timers: the glue (`crate::state`) holds one
//! `SessionCore` behind a `std::sync::Mutex`, feeds it what happened and acts on what it asks
//! for. `S` is whatever the glue calls a routed stream; `E` is the connection's error, carried
//! in [`End::ConnectionLost`] untouched.
//!
//! # Call order
//!
//! Inputs are the `handle_*` methods (and the `poll_open` / `poll_reserve` / `poll_accept`
//! requests, which take credit or a stream when there is one); outputs are the `poll_*`
//! methods. After any input, the glue drains the outputs before it releases the lock:
//!
//! 1. [`SessionCore::poll_event`] until `None`: which waiters to wake ([`Event`]);
//! 2. [`SessionCore::poll_refused`] until `None`, once the session has ended: streams to refuse
//!    with WT_SESSION_GONE (draft-16 §6);
//! 3. [`SessionCore::poll_transmit`] until `None`, in order, on the CONNECT stream (the glue
//!    may do this later, in a task of its own, as long as it keeps the order).
//!
//! The CONNECT stream's reader feeds what it reads, in the order it read it:
//! [`handle_capsule`](SessionCore::handle_capsule) per capsule, then exactly one of
//! [`handle_connect_fin`](SessionCore::handle_connect_fin),
//! [`handle_connect_reset`](SessionCore::handle_connect_reset),
//! [`handle_connect_malformed`](SessionCore::handle_connect_malformed) or
//! [`handle_connection_lost`](SessionCore::handle_connection_lost). The first input that ends
//! the session decides the end reason and nothing changes it afterwards: a WT_CLOSE_SESSION
//! that was read is the peer's close even if the connection's loss is noticed a moment later
//! (draft-16 §6; Firefox sends CONNECTION_CLOSE in the packet after its close capsule).

use std::collections::VecDeque;

use quay_h3::Code;
use quay_h3::proto::capsule::Capsule;

use crate::flow::FlowControl;
use crate::proto::capsule::{Direction, WtCapsule};
use crate::proto::error::WT_FLOW_CONTROL_ERROR;

/// Why a session ended: the first cause the core was told of. Public for `crate::pair` only,
/// whose sessions carry the code the connection closed with in [`End::ConnectionLost`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum End<E> {
    /// WT_CLOSE_SESSION from the peer, or the clean end of its CONNECT stream (code 0, no
    /// reason).
    PeerClosed {
        /// The application code.
        code: u32,
        /// The reason, as received.
        reason: String,
    },
    /// The peer drained the session (WT_DRAIN_SESSION), then ended its CONNECT stream.
    PeerDrained,
    /// We closed the session, or every handle of it is gone.
    LocallyClosed,
    /// The peer reset the CONNECT stream with this code.
    Reset(Code),
    /// The peer broke the session's protocol.
    Protocol(Violation),
    /// The connection ended before anything else ended the session.
    ConnectionLost(E),
}

/// How the peer broke a session's protocol, in `SessionError::Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A WebTransport capsule that does not parse (draft-16 §5, §6).
    #[error("malformed WebTransport capsule")]
    MalformedCapsule,
    /// A capsule cut short, or bytes after WT_CLOSE_SESSION, on the CONNECT stream (RFC 9297
    /// §3.3, draft-16 §6).
    #[error("malformed capsule on the CONNECT stream")]
    MalformedConnectCapsule,
    /// The CONNECT stream broke HTTP/3's message rules.
    #[error("malformed CONNECT stream")]
    MalformedConnectStream,
    /// The peer broke draft-16 flow control (WT_FLOW_CONTROL_ERROR).
    #[error("the peer broke WebTransport flow control")]
    FlowControl,
    /// The session has no HTTP datagrams (the CONNECT stream's were taken or are off).
    #[error("HTTP datagrams are off")]
    DatagramsOff,
    /// The response to the CONNECT request could not be sent.
    #[error("could not send the response")]
    ResponseNotSent,
    /// A stream was handed to the session as the wrong direction (a bug, if ever seen).
    #[error("stream routed as the wrong direction")]
    WrongDirection,
}

/// A waiter the glue should wake, from [`SessionCore::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The session ended: every waiter, and the session's datagrams stop.
    Ended,
    /// The peer asked to drain the session.
    Drained,
    /// Send credit may be available again (the peer raised a limit, or credit was refunded).
    Credit,
    /// A stream of this kind waits to be accepted.
    Arrived(Direction),
}

/// What to do on the CONNECT stream's sending half, from [`SessionCore::poll_transmit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transmit {
    /// These capsules, in order.
    Capsules(Vec<WtCapsule>),
    /// FIN: our side of the CONNECT stream is done.
    Finish,
    /// RESET_STREAM with this code; nothing more is sent.
    Reset(Code),
}

/// What the CONNECT stream's reader does after a capsule, from
/// [`SessionCore::handle_capsule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOn {
    /// Read the next capsule.
    Capsules,
    /// The peer closed the session: only FIN may follow (draft-16 §6). Report anything else
    /// with [`SessionCore::handle_data_after_close`], FIN with
    /// [`SessionCore::handle_connect_fin`].
    FinOnly,
    /// Stop reading (STOP_SENDING) with this code; the session has ended.
    Stop(Code),
}

/// The answer to [`SessionCore::poll_open`] and [`SessionCore::poll_reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credit<T> {
    /// Taken.
    Ready(T),
    /// None now: wait for [`Event::Credit`].
    Blocked,
    /// The session has ended.
    Ended,
}

/// The last thing the session sends on its CONNECT stream, besides FIN. Boxed in the core: a
/// session sends it once at most.
#[derive(Debug)]
enum Last {
    Close(WtCapsule),
    Reset(Code),
}

/// The state of one session. See the module docs for the call order.
#[derive(Debug)]
pub(crate) struct SessionCore<S, E> {
    /// Set once; boxed, as it is set at the end only.
    end: Option<Box<End<E>>>,
    /// Boxed: off with most peers (Chromium, Firefox, the drafts before 16).
    flow: Option<Box<FlowControl>>,
    /// The peer's streams waiting to be accepted, bidi then uni. Emptied at the end, into
    /// [`SessionCore::poll_refused`]. An empty queue allocates nothing.
    queues: [VecDeque<S>; 2],
    /// What is waiting to go out last: our close capsule or a reset.
    last: Option<Box<Last>>,
    /// The peer sent WT_DRAIN_SESSION.
    drained: bool,
    /// The peer sent WT_CLOSE_SESSION.
    close_received: bool,
    /// FIN or a reset is queued or sent: nothing more goes out after it.
    send_closed: bool,
    /// Queued for [`SessionCore::poll_transmit`].
    out_drain: bool,
    out_flow: bool,
    out_fin: bool,
    /// WT_DATA_BLOCKED, WT_STREAMS_BLOCKED (bidi, uni) to send with the next flow update.
    data_blocked: bool,
    streams_blocked: [bool; 2],
    /// Pending [`Event`]s, one bit each.
    events: u8,
}

const EVENT_ENDED: u8 = 1;
const EVENT_DRAINED: u8 = 1 << 1;
const EVENT_CREDIT: u8 = 1 << 2;
const EVENT_ARRIVED_BIDI: u8 = 1 << 3;
const EVENT_ARRIVED_UNI: u8 = 1 << 4;

impl<S, E: Clone> SessionCore<S, E> {
    /// A session that has just been established; `flow` when draft-16 flow control is on for
    /// it (both sides announced limits, draft-16 §5.1).
    pub(crate) fn new(flow: Option<FlowControl>) -> Self {
        // draft-16 §5.5: a limit announced as 0 gets its first credit at once.
        let out_flow = flow.as_ref().is_some_and(FlowControl::credit_due);
        Self {
            end: None,
            flow: flow.map(Box::new),
            queues: [VecDeque::new(), VecDeque::new()],
            last: None,
            drained: false,
            close_received: false,
            send_closed: false,
            out_drain: false,
            out_flow,
            out_fin: false,
            data_blocked: false,
            streams_blocked: [false; 2],
            events: 0,
        }
    }

    /// Why the session ended, once it has.
    pub(crate) fn end(&self) -> Option<&End<E>> {
        self.end.as_deref()
    }

    /// Whether draft-16 flow control is on (fixed at the start).
    pub(crate) fn flow_on(&self) -> bool {
        self.flow.is_some()
    }

    /// The flow-control credit each way, when flow control is on.
    pub(crate) fn flow_credit(&self) -> Option<crate::stats::FlowCredit> {
        self.flow.as_ref().map(|flow| flow.credit())
    }

    // ---- Inputs from the application.

    /// The application closes the session with `code` and `reason` (cut to 1024 bytes at a
    /// UTF-8 boundary): WT_CLOSE_SESSION, then FIN (draft-16 §6). `false`, and nothing is sent,
    /// if the session had ended already.
    pub(crate) fn handle_close(&mut self, code: u32, reason: &str) -> bool {
        if !self.set_end(End::LocallyClosed) {
            return false;
        }
        if !self.send_closed {
            self.last = Some(Box::new(Last::Close(WtCapsule::close(code, reason))));
            self.queue_fin();
        }
        true
    }

    /// Every handle of the session is gone: it ends as a close with code 0, which is FIN
    /// alone (draft-16 §6). `false` if it had ended already.
    pub(crate) fn handle_dropped(&mut self) -> bool {
        if !self.set_end(End::LocallyClosed) {
            return false;
        }
        self.queue_fin();
        true
    }

    /// The application asks the peer to wind the session down: WT_DRAIN_SESSION, unless the
    /// session has ended.
    pub(crate) fn handle_drain(&mut self) {
        if self.end.is_none() && !self.send_closed {
            self.out_drain = true;
        }
    }

    /// Takes one of the peer's stream credits of `direction` for a stream we open (draft-16
    /// §5.3). Always ready when flow control is off.
    pub(crate) fn poll_open(&mut self, direction: Direction) -> Credit<()> {
        if self.end.is_some() {
            return Credit::Ended;
        }
        let Some(flow) = &mut self.flow else {
            return Credit::Ready(());
        };
        match flow.open(direction) {
            Ok(()) => Credit::Ready(()),
            Err(say_blocked) => {
                // §5.6.3: say once per limit that we are blocked by it.
                if say_blocked {
                    self.streams_blocked[index(direction)] = true;
                    self.out_flow = true;
                }
                Credit::Blocked
            }
        }
    }

    /// Takes up to `want` bytes of the peer's data credit (draft-16 §5.4): all of them when
    /// flow control is off.
    pub(crate) fn poll_reserve(&mut self, want: usize) -> Credit<usize> {
        if self.end.is_some() {
            return Credit::Ended;
        }
        let Some(flow) = &mut self.flow else {
            return Credit::Ready(want);
        };
        match flow.reserve(want) {
            Ok(n) => Credit::Ready(n),
            Err(say_blocked) => {
                // §5.6.5: say once per limit that we are blocked by it.
                if say_blocked {
                    self.data_blocked = true;
                    self.out_flow = true;
                }
                Credit::Blocked
            }
        }
    }

    /// Gives back `n` bytes of data credit that were taken and not sent.
    pub(crate) fn handle_refund(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(flow) = &mut self.flow {
            flow.refund(n);
            self.events |= EVENT_CREDIT;
        }
    }

    /// The application read `n` bytes of the peer's stream data (draft-16 §5.4). `Err` when
    /// that is more than we allowed: the session has ended with WT_FLOW_CONTROL_ERROR.
    pub(crate) fn handle_read(&mut self, n: usize) -> Result<(), ()> {
        let Some(flow) = &mut self.flow else {
            return Ok(());
        };
        match flow.on_read(n) {
            Ok(due) => {
                self.out_flow |= due;
                Ok(())
            }
            Err(_) => {
                self.flow_control_broken();
                Err(())
            }
        }
    }

    /// The next of the peer's streams of `direction` for the application, if one waits and
    /// the session has not ended. Accepting gives the peer stream credit (draft-16 §5.3).
    pub(crate) fn poll_accept(&mut self, direction: Direction) -> Option<S> {
        if self.end.is_some() {
            return None;
        }
        let queue = &mut self.queues[index(direction)];
        let stream = queue.pop_front()?;
        if queue.is_empty() {
            // An idle session keeps no buffer.
            *queue = VecDeque::new();
        }
        if let Some(flow) = &mut self.flow {
            self.out_flow |= flow.on_accepted(direction);
        }
        Some(stream)
    }

    // ---- Inputs from the session table.

    /// A stream the peer opened for this session. `Err` gives it back, to refuse with
    /// WT_SESSION_GONE: the session has ended, or the stream is one more than flow control
    /// allows (draft-16 §5.3), which ends the session.
    pub(crate) fn handle_peer_stream(&mut self, direction: Direction, stream: S) -> Result<(), S> {
        if self.end.is_some() {
            return Err(stream);
        }
        if let Some(flow) = &mut self.flow
            && flow.on_peer_stream(direction).is_err()
        {
            self.flow_control_broken();
            return Err(stream);
        }
        self.queues[index(direction)].push_back(stream);
        self.events |= match direction {
            Direction::Bidi => EVENT_ARRIVED_BIDI,
            Direction::Uni => EVENT_ARRIVED_UNI,
        };
        Ok(())
    }

    // ---- Inputs from the CONNECT stream's reader.

    /// A capsule the peer sent on the CONNECT stream (the framing is already checked;
    /// capsule types that are not WebTransport's are ignored).
    pub(crate) fn handle_capsule(&mut self, capsule: &Capsule) -> ReadOn {
        let capsule = match WtCapsule::decode(capsule) {
            Ok(Some(capsule)) => capsule,
            Ok(None) => return ReadOn::Capsules,
            Err(error) => {
                // draft-16 §6 and RFC 9297 §3.3: a malformed capsule (or a close reason that
                // is too long or not UTF-8) resets the stream; §5.6.2: a stream count above
                // 2^60 is a flow-control error.
                let code = Code::from(error);
                self.set_end(End::Protocol(Violation::MalformedCapsule));
                self.queue_reset(code);
                return ReadOn::Stop(code);
            }
        };
        match capsule {
            WtCapsule::CloseSession { code, reason } => {
                // draft-16 §6: the session ends with the peer's code and reason, whatever
                // is noticed after this (the connection's loss included).
                self.close_received = true;
                self.set_end(End::PeerClosed { code, reason });
                ReadOn::FinOnly
            }
            WtCapsule::DrainSession => {
                if !self.drained {
                    self.drained = true;
                    self.events |= EVENT_DRAINED;
                }
                ReadOn::Capsules
            }
            capsule => {
                // draft-16 §5.1: flow-control capsules are ignored unless flow control is on.
                let Some(flow) = &mut self.flow else {
                    return ReadOn::Capsules;
                };
                match flow.on_capsule(&capsule) {
                    Ok(true) => {
                        self.events |= EVENT_CREDIT;
                        ReadOn::Capsules
                    }
                    Ok(false) => ReadOn::Capsules,
                    Err(_) => {
                        self.flow_control_broken();
                        ReadOn::Stop(WT_FLOW_CONTROL_ERROR)
                    }
                }
            }
        }
    }

    /// Stream data after the peer's WT_CLOSE_SESSION: the CONNECT stream is reset with
    /// H3_MESSAGE_ERROR (draft-16 §6); the end reason stays the peer's close. Returns the code
    /// to stop reading with.
    pub(crate) fn handle_data_after_close(&mut self) -> Code {
        self.queue_reset(Code::H3_MESSAGE_ERROR);
        Code::H3_MESSAGE_ERROR
    }

    /// The peer's CONNECT stream ended cleanly. Without a WT_CLOSE_SESSION before it, that is
    /// a close with code 0 and no reason, or a drain's end (draft-16 §6). We answer with FIN
    /// unless our side is done already.
    pub(crate) fn handle_connect_fin(&mut self) {
        self.set_end(if self.drained {
            End::PeerDrained
        } else {
            End::PeerClosed {
                code: 0,
                reason: String::new(),
            }
        });
        self.queue_fin();
    }

    /// The peer reset its CONNECT stream with `code`: the session ends (draft-16 §6) and our
    /// side ends too.
    pub(crate) fn handle_connect_reset(&mut self, code: Code) {
        self.set_end(End::Reset(code));
        self.queue_fin();
    }

    /// The CONNECT stream could not be read as capsules (RFC 9297 §3.3): a capsule cut short
    /// by FIN or over our size bound (`code` is the one the reader stopped the stream with,
    /// and our side is reset with it), or, with `code` `None`, a stream that broke some other
    /// way (our side ends with FIN).
    pub(crate) fn handle_connect_malformed(&mut self, code: Option<Code>) {
        match code {
            Some(code) => {
                self.set_end(End::Protocol(Violation::MalformedConnectCapsule));
                self.queue_reset(code);
            }
            None => {
                self.set_end(End::Protocol(Violation::MalformedConnectStream));
                self.queue_fin();
            }
        }
    }

    /// The connection ended. It ends the session only if nothing has before: what the peer
    /// sent before the connection's end was read first, and decided already.
    pub(crate) fn handle_connection_lost(&mut self, error: E) {
        self.set_end(End::ConnectionLost(error));
        self.queue_fin();
    }

    /// The wait for the peer's answer to a close (ours, or its close capsule's FIN) is over.
    /// Returns the code to stop reading with (draft-16 §6 allows WT_SESSION_GONE), and ends
    /// our side if the peer's close is still unanswered.
    pub(crate) fn handle_linger_over(&mut self) -> Code {
        if self.close_received {
            self.queue_fin();
        }
        crate::proto::error::WT_SESSION_GONE
    }

    // ---- Outputs.

    /// The next waiter to wake.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        let bit = self.events & self.events.wrapping_neg();
        self.events &= !bit;
        Some(match bit {
            0 => return None,
            EVENT_ENDED => Event::Ended,
            EVENT_DRAINED => Event::Drained,
            EVENT_CREDIT => Event::Credit,
            EVENT_ARRIVED_BIDI => Event::Arrived(Direction::Bidi),
            _ => Event::Arrived(Direction::Uni),
        })
    }

    /// The next stream to refuse with WT_SESSION_GONE: once the session has ended, those that
    /// were waiting to be accepted (draft-16 §6).
    pub(crate) fn poll_refused(&mut self) -> Option<S> {
        self.end.as_ref()?;
        for queue in &mut self.queues {
            if let Some(stream) = queue.pop_front() {
                if queue.is_empty() {
                    *queue = VecDeque::new();
                }
                return Some(stream);
            }
        }
        None
    }

    /// Whether [`SessionCore::poll_transmit`] has something.
    pub(crate) fn wants_transmit(&self) -> bool {
        self.out_drain || self.out_flow || self.out_fin || self.last.is_some()
    }

    /// Whether FIN or a reset is queued or sent: our side of the CONNECT stream is ending, and
    /// the peer's side no longer matters.
    pub(crate) fn is_finishing(&self) -> bool {
        self.send_closed
    }

    /// The next write on the CONNECT stream: capsules, then FIN; or a reset, which replaces
    /// everything queued before it.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        if matches!(self.last.as_deref(), Some(Last::Reset(_))) {
            let Some(Last::Reset(code)) = self.last.take().map(|last| *last) else {
                return None;
            };
            self.out_drain = false;
            self.out_flow = false;
            self.out_fin = false;
            return Some(Transmit::Reset(code));
        }
        let mut capsules = Vec::new();
        if std::mem::take(&mut self.out_drain) {
            capsules.push(WtCapsule::DrainSession);
        }
        if std::mem::take(&mut self.out_flow)
            && self.end.is_none()
            && let Some(flow) = &mut self.flow
        {
            let data_blocked = std::mem::take(&mut self.data_blocked);
            let streams_blocked = std::mem::take(&mut self.streams_blocked);
            capsules.extend(flow.updates(data_blocked, streams_blocked));
        }
        if let Some(Last::Close(close)) = self.last.take().map(|last| *last) {
            capsules.push(close);
        }
        if !capsules.is_empty() {
            return Some(Transmit::Capsules(capsules));
        }
        if std::mem::take(&mut self.out_fin) {
            return Some(Transmit::Finish);
        }
        None
    }

    /// A write on the CONNECT stream failed (the stream or the connection is gone): nothing
    /// more is sent.
    pub(crate) fn handle_transmit_failed(&mut self) {
        self.send_closed = true;
        self.last = None;
        self.out_drain = false;
        self.out_flow = false;
        self.out_fin = false;
    }

    // ---- Helpers.

    /// Records the end; `false` if the session had ended (the first reason stays).
    fn set_end(&mut self, end: End<E>) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.end = Some(Box::new(end));
        self.events |= EVENT_ENDED;
        true
    }

    /// draft-16 §5.6: the peer broke flow control; the session ends and the CONNECT stream is
    /// reset with WT_FLOW_CONTROL_ERROR.
    fn flow_control_broken(&mut self) {
        if self.set_end(End::Protocol(Violation::FlowControl)) {
            self.queue_reset(WT_FLOW_CONTROL_ERROR);
        }
    }

    fn queue_fin(&mut self) {
        if !self.send_closed {
            self.send_closed = true;
            self.out_fin = true;
        }
    }

    /// Resets our side, unless it is reset already.
    fn queue_reset(&mut self, code: Code) {
        if matches!(self.last.as_deref(), Some(Last::Reset(_))) {
            return;
        }
        self.send_closed = true;
        self.last = Some(Box::new(Last::Reset(code)));
    }
}

/// The slot of `direction` in per-direction arrays (bidi, uni).
fn index(direction: Direction) -> usize {
    usize::from(direction == Direction::Uni)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use quay_h3::proto::VarInt;
    use quay_h3::proto::capsule::CapsuleType;

    use super::*;
    use crate::proto::error::WT_SESSION_GONE;
    use crate::proto::settings::FlowControlLimits;

    /// A session without flow control; streams are numbers, the connection's error a string.
    fn plain() -> SessionCore<u32, &'static str> {
        SessionCore::new(None)
    }

    fn limits(max_data: u64, bidi: u64, uni: u64) -> FlowControlLimits {
        FlowControlLimits {
            max_data,
            max_streams_uni: uni,
            max_streams_bidi: bidi,
        }
    }

    /// A session with flow control: we allow `ours`, the peer allows `peers`.
    fn flowing(
        ours: FlowControlLimits,
        peers: FlowControlLimits,
    ) -> SessionCore<u32, &'static str> {
        SessionCore::new(Some(FlowControl::new(ours, peers)))
    }

    fn close(code: u32, reason: &str) -> Capsule {
        WtCapsule::close(code, reason).to_capsule()
    }

    fn events(core: &mut SessionCore<u32, &'static str>) -> Vec<Event> {
        std::iter::from_fn(|| core.poll_event()).collect()
    }

    fn transmits(core: &mut SessionCore<u32, &'static str>) -> Vec<Transmit> {
        std::iter::from_fn(|| core.poll_transmit()).collect()
    }

    fn bye() -> End<&'static str> {
        End::PeerClosed {
            code: 42,
            reason: "bye".into(),
        }
    }

    fn varint(n: u64) -> VarInt {
        VarInt::from_u64(n).unwrap()
    }

    // draft-16 §6: a received WT_CLOSE_SESSION ends the session with the peer's code and
    // reason; the connection's loss noticed after it changes nothing (Firefox closes the
    // connection in the very next packet).
    #[test]
    fn a_received_close_outranks_the_connection_loss_after_it() {
        let mut core = plain();
        assert_eq!(core.handle_capsule(&close(42, "bye")), ReadOn::FinOnly);
        core.handle_connection_lost("connection lost");
        assert_eq!(core.end(), Some(&bye()));
        assert_eq!(events(&mut core), [Event::Ended]);
        // Nor does anything else read after it.
        core.handle_connect_reset(Code::H3_REQUEST_CANCELLED);
        core.handle_connect_malformed(None);
        assert_eq!(core.end(), Some(&bye()));
        assert_eq!(events(&mut core), []);
    }

    // draft-16 §6: the end is decided in the order the peer's bytes came, so a loss read
    // before any close is the end, and a close capsule read after it changes nothing.
    #[test]
    fn the_connection_loss_first_is_the_end() {
        let mut core = plain();
        core.handle_connection_lost("connection lost");
        assert_eq!(core.handle_capsule(&close(42, "bye")), ReadOn::FinOnly);
        assert_eq!(core.end(), Some(&End::ConnectionLost("connection lost")));
    }

    // draft-16 §6: after receiving WT_CLOSE_SESSION we end our side with FIN, once the peer's
    // FIN came (or the wait for it is over); what we send is FIN alone.
    #[test]
    fn a_peer_close_is_answered_with_fin() {
        let mut core = plain();
        core.handle_capsule(&close(42, "bye"));
        assert!(!core.wants_transmit());
        core.handle_connect_fin();
        assert_eq!(transmits(&mut core), [Transmit::Finish]);
        assert_eq!(core.end(), Some(&bye()));

        let mut core = plain();
        core.handle_capsule(&close(42, "bye"));
        assert_eq!(core.handle_linger_over(), WT_SESSION_GONE);
        assert_eq!(transmits(&mut core), [Transmit::Finish]);
    }

    // draft-16 §6: data after WT_CLOSE_SESSION resets the CONNECT stream with
    // H3_MESSAGE_ERROR; the session still ended as the peer's close.
    #[test]
    fn data_after_a_peer_close_resets_the_stream() {
        let mut core = plain();
        core.handle_capsule(&close(42, "bye"));
        assert_eq!(core.handle_data_after_close(), Code::H3_MESSAGE_ERROR);
        assert_eq!(
            transmits(&mut core),
            [Transmit::Reset(Code::H3_MESSAGE_ERROR)]
        );
        assert_eq!(core.end(), Some(&bye()));
    }

    // draft-16 §6: closing sends WT_CLOSE_SESSION, then FIN at once; the reason is cut to
    // 1024 bytes at a UTF-8 boundary.
    #[test]
    fn a_local_close_sends_the_capsule_then_fin() {
        let mut core = plain();
        let long = "é".repeat(600);
        assert!(core.handle_close(7, &long));
        assert_eq!(core.end(), Some(&End::LocallyClosed));
        let sent = transmits(&mut core);
        let [Transmit::Capsules(capsules), Transmit::Finish] = &sent[..] else {
            panic!("{sent:?}");
        };
        let [WtCapsule::CloseSession { code: 7, reason }] = &capsules[..] else {
            panic!("{capsules:?}");
        };
        assert_eq!(reason.len(), 1024);
        // A second close, or the handles' drop, sends nothing more.
        assert!(!core.handle_close(8, "again"));
        assert!(!core.handle_dropped());
        assert_eq!(transmits(&mut core), []);
    }

    // draft-16 §6: a clean end of the CONNECT stream means code 0 and no reason, so the last
    // handle's drop sends FIN alone.
    #[test]
    fn dropping_every_handle_sends_fin_alone() {
        let mut core = plain();
        assert!(core.handle_dropped());
        assert_eq!(transmits(&mut core), [Transmit::Finish]);
        assert_eq!(core.end(), Some(&End::LocallyClosed));
    }

    // draft-16 §6: our close first; the peer's close read while we wait for its answer
    // does not change the end, and is not answered again.
    #[test]
    fn a_peer_close_after_ours_keeps_ours() {
        let mut core = plain();
        core.handle_close(1, "mine");
        transmits(&mut core);
        core.handle_capsule(&close(42, "bye"));
        core.handle_connect_fin();
        core.handle_linger_over();
        assert_eq!(core.end(), Some(&End::LocallyClosed));
        assert_eq!(transmits(&mut core), []);
    }

    // The peer's close read before the application's close: the session ended as the peer's
    // close and the application's close sends nothing (only FIN may answer, draft-16 §6).
    #[test]
    fn a_local_close_after_the_peer_close_sends_nothing() {
        let mut core = plain();
        core.handle_capsule(&close(42, "bye"));
        assert!(!core.handle_close(1, "mine"));
        assert!(!core.wants_transmit());
        assert_eq!(core.end(), Some(&bye()));
    }

    // draft-16 §6: a clean end without a close capsule is code 0 and no reason; after
    // WT_DRAIN_SESSION it is the drain's end. Either way our side ends with FIN.
    #[test]
    fn a_clean_end_is_a_close_with_code_zero_or_a_drain() {
        let mut core = plain();
        core.handle_connect_fin();
        let closed = End::PeerClosed {
            code: 0,
            reason: String::new(),
        };
        assert_eq!(core.end(), Some(&closed));
        assert_eq!(transmits(&mut core), [Transmit::Finish]);

        let mut core = plain();
        let drain = WtCapsule::DrainSession.to_capsule();
        assert_eq!(core.handle_capsule(&drain), ReadOn::Capsules);
        assert_eq!(events(&mut core), [Event::Drained]);
        // Said once.
        core.handle_capsule(&drain);
        assert_eq!(events(&mut core), []);
        core.handle_connect_fin();
        assert_eq!(core.end(), Some(&End::PeerDrained));
    }

    // draft-16 §6: the CONNECT stream reset by the peer ends the session with its code.
    #[test]
    fn a_reset_connect_stream_ends_the_session() {
        let mut core = plain();
        core.handle_connect_reset(Code::H3_REQUEST_CANCELLED);
        assert_eq!(core.end(), Some(&End::Reset(Code::H3_REQUEST_CANCELLED)));
        assert_eq!(transmits(&mut core), [Transmit::Finish]);
    }

    // draft-16 §6: a close reason over 1024 bytes or not UTF-8 resets the stream with
    // H3_MESSAGE_ERROR; RFC 9297 §3.3: so does any malformed capsule.
    #[test]
    fn a_malformed_capsule_resets_the_connect_stream() {
        for payload in [
            Bytes::from_static(&[0, 0]),
            Bytes::from(vec![b'x'; 4 + 1025]),
            Bytes::from_static(&[0, 0, 0, 1, 0xff]),
        ] {
            let mut core = plain();
            let capsule = Capsule {
                ty: CapsuleType::WT_CLOSE_SESSION,
                payload,
            };
            assert_eq!(
                core.handle_capsule(&capsule),
                ReadOn::Stop(Code::H3_MESSAGE_ERROR)
            );
            assert_eq!(
                core.end(),
                Some(&End::Protocol(Violation::MalformedCapsule))
            );
            assert_eq!(
                transmits(&mut core),
                [Transmit::Reset(Code::H3_MESSAGE_ERROR)]
            );
        }
        // RFC 9297 §3.3: a capsule cut short by FIN; our side is reset with the reader's code.
        let mut core = plain();
        core.handle_connect_malformed(Some(Code::H3_MESSAGE_ERROR));
        assert_eq!(
            transmits(&mut core),
            [Transmit::Reset(Code::H3_MESSAGE_ERROR)]
        );
    }

    // RFC 9297 §3.2: capsule types we do not know are skipped.
    #[test]
    fn unknown_capsules_are_ignored() {
        let mut core = plain();
        let capsule = Capsule {
            ty: CapsuleType::from_varint(varint(0x1f * 3 + 0x29)),
            payload: Bytes::from_static(b"grease"),
        };
        assert_eq!(core.handle_capsule(&capsule), ReadOn::Capsules);
        assert_eq!(core.end(), None);
    }

    // draft-16 §6: once the session ended, the streams waiting to be accepted are refused
    // with WT_SESSION_GONE and later ones are given back to refuse.
    #[test]
    fn the_end_refuses_waiting_and_later_streams() {
        let mut core = plain();
        core.handle_peer_stream(Direction::Bidi, 1).unwrap();
        core.handle_peer_stream(Direction::Uni, 2).unwrap();
        assert_eq!(
            events(&mut core),
            [
                Event::Arrived(Direction::Bidi),
                Event::Arrived(Direction::Uni)
            ]
        );
        assert_eq!(core.poll_refused(), None);
        core.handle_connection_lost("gone");
        assert_eq!(core.poll_accept(Direction::Bidi), None);
        let refused: Vec<u32> = std::iter::from_fn(|| core.poll_refused()).collect();
        assert_eq!(refused, [1, 2]);
        assert_eq!(core.handle_peer_stream(Direction::Bidi, 3), Err(3));
    }

    #[test]
    fn streams_are_accepted_in_order_per_direction() {
        let mut core = plain();
        for (direction, stream) in [
            (Direction::Bidi, 1),
            (Direction::Uni, 2),
            (Direction::Bidi, 3),
        ] {
            core.handle_peer_stream(direction, stream).unwrap();
        }
        assert_eq!(core.poll_accept(Direction::Uni), Some(2));
        assert_eq!(core.poll_accept(Direction::Uni), None);
        assert_eq!(core.poll_accept(Direction::Bidi), Some(1));
        assert_eq!(core.poll_accept(Direction::Bidi), Some(3));
    }

    // draft-16 §6: after the end, no WT_DRAIN_SESSION goes out; before it, one does.
    #[test]
    fn drain_is_sent_only_while_the_session_lives() {
        let mut core = plain();
        core.handle_drain();
        assert_eq!(
            transmits(&mut core),
            [Transmit::Capsules(vec![WtCapsule::DrainSession])]
        );
        core.handle_close(0, "");
        transmits(&mut core);
        core.handle_drain();
        assert_eq!(transmits(&mut core), []);
    }

    // draft-16 §5.1: without flow control its capsules are ignored and credit is unlimited.
    #[test]
    fn flow_capsules_are_ignored_when_flow_control_is_off() {
        let mut core = plain();
        assert!(!core.flow_on());
        let capsule = WtCapsule::MaxData(varint(5)).to_capsule();
        assert_eq!(core.handle_capsule(&capsule), ReadOn::Capsules);
        assert_eq!(core.poll_open(Direction::Bidi), Credit::Ready(()));
        assert_eq!(core.poll_reserve(1 << 30), Credit::Ready(1 << 30));
        assert_eq!(core.handle_read(1 << 30), Ok(()));
        assert_eq!(core.end(), None);
    }

    // draft-16 §5.5: a limit announced as 0 gets its first credit at once.
    #[test]
    fn a_zero_limit_gets_credit_at_once() {
        let mut core = flowing(limits(0, 0, 0), limits(10, 1, 1));
        let sent = transmits(&mut core);
        let [Transmit::Capsules(capsules)] = &sent[..] else {
            panic!("{sent:?}");
        };
        assert_eq!(capsules.len(), 3);
    }

    // draft-16 §5.3, §5.6.3: we open at most as many streams as the peer allows, and say
    // WT_STREAMS_BLOCKED once per limit; WT_MAX_STREAMS lets the opener go on.
    #[test]
    fn opening_waits_for_the_peer_stream_credit() {
        let mut core = flowing(limits(100, 10, 10), limits(100, 1, 1));
        assert_eq!(core.poll_open(Direction::Bidi), Credit::Ready(()));
        assert_eq!(core.poll_open(Direction::Bidi), Credit::Blocked);
        assert_eq!(
            transmits(&mut core),
            [Transmit::Capsules(vec![WtCapsule::StreamsBlocked(
                Direction::Bidi,
                varint(1)
            )])]
        );
        assert_eq!(core.poll_open(Direction::Bidi), Credit::Blocked);
        assert_eq!(transmits(&mut core), []);
        let more = WtCapsule::MaxStreams(Direction::Bidi, varint(2)).to_capsule();
        assert_eq!(core.handle_capsule(&more), ReadOn::Capsules);
        assert_eq!(events(&mut core), [Event::Credit]);
        assert_eq!(core.poll_open(Direction::Bidi), Credit::Ready(()));
        core.handle_close(0, "");
        assert_eq!(core.poll_open(Direction::Uni), Credit::Ended);
    }

    // draft-16 §5.4, §5.6.5: we send at most as many bytes as the peer allows, say
    // WT_DATA_BLOCKED once per limit, and credit taken but not used comes back.
    #[test]
    fn sending_waits_for_the_peer_data_credit() {
        let mut core = flowing(limits(100, 10, 10), limits(10, 1, 1));
        assert_eq!(core.poll_reserve(8), Credit::Ready(8));
        assert_eq!(core.poll_reserve(8), Credit::Ready(2));
        assert_eq!(core.poll_reserve(8), Credit::Blocked);
        assert_eq!(
            transmits(&mut core),
            [Transmit::Capsules(vec![WtCapsule::DataBlocked(varint(10))])]
        );
        core.handle_refund(2);
        assert_eq!(events(&mut core), [Event::Credit]);
        assert_eq!(core.poll_reserve(8), Credit::Ready(2));
    }

    // draft-16 §5.6.2, §5.6.4: a limit that does not rise is a flow-control error, which
    // resets the CONNECT stream with WT_FLOW_CONTROL_ERROR.
    #[test]
    fn a_limit_that_does_not_rise_ends_the_session() {
        let mut core = flowing(limits(100, 10, 10), limits(10, 1, 1));
        let same = WtCapsule::MaxData(varint(10)).to_capsule();
        assert_eq!(
            core.handle_capsule(&same),
            ReadOn::Stop(WT_FLOW_CONTROL_ERROR)
        );
        assert_eq!(core.end(), Some(&End::Protocol(Violation::FlowControl)));
        assert_eq!(
            transmits(&mut core),
            [Transmit::Reset(WT_FLOW_CONTROL_ERROR)]
        );
    }

    // draft-16 §5.3: a peer that opens more streams than we allowed breaks flow control.
    #[test]
    fn a_stream_past_the_limit_ends_the_session() {
        let mut core = flowing(limits(100, 1, 1), limits(10, 1, 1));
        assert_eq!(core.handle_peer_stream(Direction::Uni, 1), Ok(()));
        assert_eq!(core.handle_peer_stream(Direction::Uni, 2), Err(2));
        assert_eq!(core.end(), Some(&End::Protocol(Violation::FlowControl)));
        assert_eq!(
            transmits(&mut core),
            [Transmit::Reset(WT_FLOW_CONTROL_ERROR)]
        );
        assert_eq!(core.poll_refused(), Some(1));
    }

    // draft-16 §5.3, §5.4: accepting streams and reading data give the peer credit, once half
    // a window is used; reading past the limit breaks flow control.
    #[test]
    fn reading_and_accepting_give_credit() {
        let mut core = flowing(limits(100, 2, 2), limits(10, 1, 1));
        core.handle_peer_stream(Direction::Bidi, 1).unwrap();
        assert_eq!(core.poll_accept(Direction::Bidi), Some(1));
        assert_eq!(core.handle_read(50), Ok(()));
        assert_eq!(
            transmits(&mut core),
            [Transmit::Capsules(vec![
                WtCapsule::MaxData(varint(150)),
                WtCapsule::MaxStreams(Direction::Bidi, varint(3)),
            ])]
        );
        assert_eq!(core.handle_read(101), Err(()));
        assert_eq!(core.end(), Some(&End::Protocol(Violation::FlowControl)));
    }

    // Nothing goes out after a failed write: the CONNECT stream is gone.
    #[test]
    fn a_failed_write_stops_the_transmits() {
        let mut core = plain();
        core.handle_close(3, "x");
        core.handle_transmit_failed();
        assert_eq!(transmits(&mut core), []);
    }

    // The core is small: an idle session keeps it all session long.
    #[test]
    fn the_core_stays_small() {
        assert!(size_of::<SessionCore<u32, &'static str>>() <= 112);
    }
}
