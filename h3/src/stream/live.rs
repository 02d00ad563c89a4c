//! [`Live`]: what both halves of a request stream share.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use quay_transport::VarInt;

use crate::client::pool::Lease;
use crate::driver::shared::Shared;
use crate::error::Code;

/// What both halves of a request stream share: the connection (the stream counts as live
/// until both halves are gone), and whether the peer's message was found malformed.
#[derive(Debug)]
pub(crate) struct Live {
    pub(super) shared: Arc<Shared>,
    /// The code the receiving half stopped the stream with when it found the peer's message
    /// malformed (0: it has not). The sending half resets with it (see
    /// [`SendHalf::reset_if_malformed`](super::SendHalf::reset_if_malformed)): a message that ended early has no STOP_SENDING to
    /// carry the error, so only our RESET_STREAM tells the peer why (RFC 9114 §4.1.2).
    pub(super) malformed: AtomicU64,
    /// Settled ([`SendHalf::settle`](super::SendHalf::settle)).
    pub(super) settled: AtomicBool,
    /// A pooled client's count of this request: held until both halves are gone. Boxed: 80
    /// bytes that every other request stream and WebTransport session would carry as `None`
    /// (`Live` is 32 bytes with it boxed, 112 without).
    _lease: Option<Box<Lease>>,
}

impl Live {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<Self> {
        Self::leased(shared, None)
    }

    /// A request stream that a pooled client counts in flight until both halves are gone.
    pub(crate) fn leased(shared: Arc<Shared>, lease: Option<Lease>) -> Arc<Self> {
        shared.stream_opened();
        Arc::new(Self {
            shared,
            malformed: AtomicU64::new(0),
            settled: AtomicBool::new(false),
            _lease: lease.map(Box::new),
        })
    }

    /// The code the peer's message was found malformed with, if it was.
    pub(super) fn malformed(&self) -> Option<Code> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request stream and WebTransport session keeps one `Live` for its whole life; a
    /// pooled client's lease is boxed so the others do not carry its room.
    #[test]
    fn live_stays_small() {
        assert!(size_of::<Live>() <= 32, "{}", size_of::<Live>());
    }
}
