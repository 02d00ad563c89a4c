//! A session's streams: [`SendStream`] and [`RecvStream`] wrap quinn's, so that error codes are
//! WebTransport application codes (`u32`) and a stream of a session that has ended fails with
//! [`StreamError::SessionGone`].
//!
//! The stream header (0x41 or 0x54 and the session ID) is written by
//! [`Session`](crate::Session) when it opens a stream and read before it hands one out; these
//! types only carry the payload. They implement tokio's `AsyncRead` / `AsyncWrite`.
use std::sync::Arc;

use bytes::Bytes;
use quay_h3::proto::VarInt;
use quay_transport::{ReadError, WriteError};

use crate::error::{StreamError, peer_code};
use crate::held::{self, Held, Side};
use crate::proto::error::app_code_to_h3;
use crate::state::SessionState;
use crate::stats;

/// How a stream maps codes and learns that its session has ended.
#[derive(Debug, Clone)]
pub(crate) enum Mapping {
    /// A WebTransport-over-HTTP/3 stream: codes are mapped, the session may go away first.
    Http3(Arc<SessionState>),
    /// A stream of a raw QUIC session: codes are QUIC codes.
    Raw,
}

impl Mapping {
    fn to_wire(&self, code: u32) -> VarInt {
        match self {
            Self::Http3(_) => app_code_to_h3(code),
            Self::Raw => VarInt::from_u32(code),
        }
    }

    fn gone(&self) -> bool {
        matches!(self, Self::Http3(state) if state.is_gone())
    }

    fn mapped(&self) -> bool {
        matches!(self, Self::Http3(_))
    }

    /// The session's state when its flow control is on.
    fn flow(&self) -> Option<&Arc<SessionState>> {
        match self {
            Self::Http3(state) if state.flow_on() => Some(state),
            _ => None,
        }
    }

    /// Registers a new stream's handles with its session, to end them with the session; the
    /// slot to give back when the stream's last half is dropped ([`Mapping::dropped`]).
    fn hold<S: Side>(&self, held: &Held<S>) -> u32 {
        match self {
            Self::Http3(state) => state.hold(held.for_session()),
            Self::Raw => u32::MAX,
        }
    }

    /// A stream's half is being dropped. quinn would finish (send) or stop with code 0
    /// (receive) a dropped stream; one of a session that has ended is ended as the session's
    /// end does instead (draft-16 §6). The stream's slot goes back to the session with its
    /// last half.
    fn dropped<S: Side>(&self, held: &Held<S>, slot: u32) {
        match self {
            Self::Http3(state) => {
                if state.is_gone() {
                    held.end_with_session();
                }
                if held.drop_half() {
                    state.release(slot);
                }
            }
            Self::Raw => {
                held.drop_half();
            }
        }
    }

    /// Counts `n` bytes the application read, for the session's stats and flow control.
    fn on_read(&self, n: usize) -> Result<(), StreamError> {
        if let Self::Http3(state) = self {
            stats::add(&state.counters.bytes_received, n);
        }
        match self.flow() {
            Some(state) => state.on_read(n),
            None => Ok(()),
        }
    }

    /// Counts `n` bytes the application wrote, for the session's stats.
    fn on_written(&self, n: usize) {
        if let Self::Http3(state) = self {
            stats::add(&state.counters.bytes_sent, n);
        }
    }
}

fn write_error(error: WriteError, mapping: &Mapping) -> StreamError {
    match error {
        WriteError::Stopped(code) => match peer_code(code, mapping.mapped()) {
            Ok(code) => StreamError::Stopped(code),
            Err(error) => error,
        },
        WriteError::ConnectionLost(error) => StreamError::ConnectionLost(error.into()),
        _ => StreamError::Closed,
    }
}

fn read_error(error: ReadError, mapping: &Mapping) -> StreamError {
    match error {
        ReadError::Reset(code) => match peer_code(code, mapping.mapped()) {
            Ok(code) => StreamError::Reset(code),
            Err(error) => error,
        },
        ReadError::ConnectionLost(error) => StreamError::ConnectionLost(error.into()),
        _ => StreamError::Closed,
    }
}

/// Why [`RecvStream::read_to_end`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReadToEndError {
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The stream is longer than the limit.
    #[error("stream longer than the limit")]
    TooLong,
}

/// Both halves of a bidirectional stream; `buffered` is payload read with its header. One
/// allocation and one session slot for the two ([`held::pair`]).
pub(crate) fn bidi(
    send: quay_transport::SendStream,
    recv: quay_transport::RecvStream,
    buffered: Bytes,
    mapping: Mapping,
) -> (SendStream, RecvStream) {
    let id = send.id();
    let (send, recv) = held::pair(send, recv);
    let slot = mapping.hold(&send);
    (
        SendStream::from_held(send, id, slot, mapping.clone()),
        RecvStream::from_held(recv, id, slot, buffered, mapping),
    )
}

mod recv;
mod send;

pub use recv::RecvStream;
pub use send::SendStream;
