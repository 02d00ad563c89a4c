//! [`ExtensionStream`]: a peer stream an extension (WebTransport) claimed by its type or
//! signal, with the session ID after it read. Plain quinn streams; nothing here waits.

use bytes::Bytes;
use quay_transport::{RecvStream, SendStream, VarInt};

use crate::error::Code;
use crate::proto::frame::FrameType;
use crate::proto::stream::StreamType;

/// A stream claimed by an extension (for instance WebTransport): its type or signal and the
/// session ID after it have been read; the rest is the extension's.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExtensionStream {
    /// A unidirectional stream of a type in
    /// [`Config::extension_uni_stream_types`](crate::Config::extension_uni_stream_types).
    Uni {
        /// The stream type.
        ty: StreamType,
        /// The varint after the type.
        session_id: VarInt,
        /// The stream.
        recv: RecvStream,
        /// Bytes already read past the session ID; they come before anything read from `recv`.
        buffered: Bytes,
    },
    /// A bidirectional stream that started with a signal in
    /// [`Config::extension_bidi_signals`](crate::Config::extension_bidi_signals).
    Bidi {
        /// The signal.
        signal: FrameType,
        /// The varint after the signal.
        session_id: VarInt,
        /// The sending side.
        send: SendStream,
        /// The receiving side.
        recv: RecvStream,
        /// Bytes already read past the session ID; they come before anything read from `recv`.
        buffered: Bytes,
    },
}

impl ExtensionStream {
    /// Refuses the stream with `code`: stops reading it, and resets a bidirectional stream's
    /// sending side.
    pub fn refuse(self, code: Code) {
        match self {
            Self::Uni { mut recv, .. } => {
                let _ = recv.stop(code.to_varint());
            }
            Self::Bidi {
                mut send, mut recv, ..
            } => {
                let _ = recv.stop(code.to_varint());
                let _ = send.reset(code.to_varint());
            }
        }
    }
}
