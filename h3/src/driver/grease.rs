//! GREASE streams (RFC 9114 §6.2.3, RFC 9297 §4): one connection in eight opens a
//! unidirectional stream of a reserved type, so that peers which choke on unknown stream types
//! are found. GREASE settings and frames are the state machine's (`crate::connection`).

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use quay_transport::Connection;

use crate::proto::Codec;
use crate::proto::stream::UniStreamHeader;

/// One connection in this many opens a GREASE stream: enough, across a peer's connections, to
/// find one that chokes on unknown stream types, while most connections spare both sides a
/// stream (its packets at set-up, and the state QUIC keeps for it).
const GREASE_STREAM_ONE_IN: u64 = 8;

/// Whether the connection with this random `seed` opens a GREASE stream.
pub(super) fn sends_grease_stream(seed: u64) -> bool {
    // The high bits: the low ones choose the GREASE setting and frame types.
    (seed >> 32).is_multiple_of(GREASE_STREAM_ONE_IN)
}

/// Opens a unidirectional stream of a reserved type with a few bytes and FIN on it, which the
/// peer must ignore (RFC 9114 §6.2.3). Without waiting: called right after our control stream's
/// first bytes are written, so that it leaves in the same packet as our SETTINGS rather than in
/// one of its own. Skipped when quinn cannot open or write it at once (no stream credit yet).
pub(super) fn send_grease_stream(conn: &Connection) {
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(mut stream)) = pin!(conn.open_uni()).poll(&mut cx) else {
        return;
    };
    let n = RandomState::new().hash_one(conn.stable_id()) % 1000;
    let mut bytes = BytesMut::new();
    UniStreamHeader::grease(n).encode(&mut bytes);
    bytes.extend_from_slice(b"quay");
    let written = Pin::new(&mut stream).poll_write(&mut cx, &bytes);
    if matches!(written, Poll::Ready(Ok(n)) if n == bytes.len()) {
        let _ = stream.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_connection_in_eight_sends_a_grease_stream() {
        let hasher = RandomState::new();
        let sending = (0..8_000u64)
            .filter(|n| sends_grease_stream(hasher.hash_one(n)))
            .count();
        // 1,000 expected; the bounds are six standard deviations out.
        assert!((820..1_180).contains(&sending), "{sending} of 8,000");
    }
}
