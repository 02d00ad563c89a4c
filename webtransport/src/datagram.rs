//! Building a session's outgoing datagrams: [`Prefix`], the few bytes a session puts in front
//! of its streams and datagrams, and [`prefixed`], which joins a prefix and a payload in a
//! buffer shared by the datagrams a thread sends.
//!
//! Which prefix a session uses, and reading datagrams, are not here: [`crate::session`] builds
//! its prefixes, and `quay_h3` routes the datagrams received to their session.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};

/// A few bytes a session puts in front of its streams or datagrams (a stream type or signal
/// and the session ID, or the quarter stream ID), kept inline: a session lives long and most of
/// its streams are the peer's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefix {
    len: u8,
    /// Two varints at most: 16 bytes.
    bytes: [u8; 16],
}

impl Prefix {
    pub(crate) fn new(write: impl FnOnce(&mut &mut [u8])) -> Self {
        let mut bytes = [0; 16];
        let mut rest = &mut bytes[..];
        write(&mut rest);
        let len = 16 - rest.len();
        Self {
            len: len as u8,
            bytes,
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// How many bytes of outgoing datagrams one allocation holds (see [`prefixed`]).
const DATAGRAM_BUFFER: usize = 16 * 1024;

thread_local! {
    /// Where this thread builds outgoing datagrams; what is left of the current allocation.
    static DATAGRAM_OUT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `prefix` then `payload` in one buffer, as quinn sends a datagram. Datagrams are split off a
/// per-thread buffer of [`DATAGRAM_BUFFER`] bytes: one allocation serves a dozen or so instead
/// of one each, which is a measurable part of a datagram's cost. The buffer is freed once
/// quinn has sent the last datagram cut from it, and a thread keeps at most one.
pub(crate) fn prefixed(prefix: &[u8], payload: &[u8]) -> Bytes {
    let len = prefix.len() + payload.len();
    if len > DATAGRAM_BUFFER / 8 {
        let mut buf = BytesMut::with_capacity(len);
        buf.put_slice(prefix);
        buf.put_slice(payload);
        return buf.freeze();
    }
    DATAGRAM_OUT.with_borrow_mut(|buf| {
        if buf.capacity() < len {
            *buf = BytesMut::with_capacity(DATAGRAM_BUFFER);
        }
        buf.put_slice(prefix);
        buf.put_slice(payload);
        buf.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_cut_from_the_thread_buffer_stay_apart() {
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|n| vec![n; 1000]).collect();
        // 40 KB: more than two of the thread's buffers.
        let mut datagrams: Vec<Bytes> = payloads.iter().map(|p| prefixed(&[7, 9], p)).collect();
        for (datagram, payload) in datagrams.iter().zip(&payloads) {
            assert_eq!(&datagram[..2], [7, 9]);
            assert_eq!(&datagram[2..], &payload[..]);
        }
        // Dropping some leaves the others intact.
        datagrams.drain(..20);
        let later = prefixed(&[1], b"later");
        assert_eq!(later, &b"\x01later"[..]);
        assert_eq!(&datagrams[19][2..], &payloads[39][..]);
        // A large one gets a buffer of its own.
        let large = prefixed(&[3], &[5; DATAGRAM_BUFFER]);
        assert_eq!(large.len(), DATAGRAM_BUFFER + 1);
        assert_eq!((large[0], large[DATAGRAM_BUFFER]), (3, 5));
    }
}
