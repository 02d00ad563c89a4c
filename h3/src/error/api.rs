//! The errors of the async API: [`ConnectionError`] (why a connection ended) and
//! [`StreamError`] (why an operation on one request stream failed).

use std::io;

use super::code::Code;
use crate::connection::ProtocolError;
use crate::proto::capsule::CapsuleError;
use crate::proto::headers::MessageError;

/// Why an HTTP/3 connection ended.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the protocol; we closed the connection with [`ProtocolError`]'s code.
    #[error("protocol error (closed with {code}): {0}", code = Code::from(.0))]
    Protocol(ProtocolError),
    /// The peer closed the connection with an HTTP/3 error code (H3_NO_ERROR for a normal
    /// close).
    #[error("peer closed the connection with {code}: {reason}")]
    PeerClosed {
        /// The code.
        code: Code,
        /// The reason phrase, lossily decoded.
        reason: String,
    },
    /// We closed the connection (the handle was dropped, or a graceful shutdown ended).
    #[error("connection closed locally")]
    LocallyClosed,
    /// QUIC or TLS ended the connection (timeout, reset, handshake failure, ...).
    #[error(transparent)]
    Transport(quay_transport::ConnectionError),
}

impl From<quay_transport::ConnectionError> for ConnectionError {
    fn from(error: quay_transport::ConnectionError) -> Self {
        match error {
            quay_transport::ConnectionError::ApplicationClosed(close) => Self::PeerClosed {
                code: Code::from_varint(close.error_code),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            quay_transport::ConnectionError::LocallyClosed => Self::LocallyClosed,
            other => Self::Transport(other),
        }
    }
}

impl From<ConnectionError> for io::Error {
    fn from(error: ConnectionError) -> Self {
        let kind = match &error {
            ConnectionError::Protocol(_) => io::ErrorKind::InvalidData,
            ConnectionError::Transport(quay_transport::ConnectionError::TimedOut) => {
                io::ErrorKind::TimedOut
            }
            _ => io::ErrorKind::ConnectionAborted,
        };
        Self::new(kind, error)
    }
}

/// Why an operation on one request stream failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    /// The peer reset the stream (RESET_STREAM) with this code. H3_REQUEST_REJECTED means the
    /// server did not process the request, which may be retried.
    #[error("stream reset by the peer with {0}")]
    Reset(Code),
    /// The peer stopped reading (STOP_SENDING) with this code.
    #[error("peer stopped reading with {0}")]
    Stopped(Code),
    /// The message is malformed: received (the stream was reset with H3_MESSAGE_ERROR) or about
    /// to be sent (nothing was sent).
    #[error("malformed message: {0}")]
    Message(#[from] MessageError),
    /// A received field section is over our SETTINGS_MAX_FIELD_SECTION_SIZE (the stream was
    /// reset with H3_EXCESSIVE_LOAD), or one to send is over the peer's (nothing was sent).
    #[error("field section too large")]
    HeadersTooLarge,
    /// A capsule was malformed or too large; the stream was reset with its code.
    #[error("capsule: {0}")]
    Capsule(#[from] CapsuleError),
    /// The stream ended before the message head.
    #[error("stream ended before the message head")]
    Incomplete,
    /// The server sent GOAWAY: this request was not sent, or will not be processed. It may be
    /// retried on a new connection.
    #[error("the server is going away; request not sent")]
    GoingAway,
    /// The operation does not fit the stream's state (data after trailers, a second response,
    /// ...), or the stream was already finished or reset.
    #[error("invalid use: {0}")]
    Invalid(&'static str),
    /// The peer or our configuration does not allow this (Extended CONNECT or datagrams not
    /// enabled on both sides).
    #[error("not negotiated: {0}")]
    NotNegotiated(&'static str),
}

impl StreamError {
    /// Whether the request was certainly not processed by the server and may be retried
    /// (GOAWAY, or a reset with H3_REQUEST_REJECTED; RFC 9114 §4.1.1).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::GoingAway | Self::Reset(Code::H3_REQUEST_REJECTED)
        )
    }
}

impl From<StreamError> for io::Error {
    fn from(error: StreamError) -> Self {
        let kind = match &error {
            StreamError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            StreamError::Reset(_) | StreamError::Stopped(_) => io::ErrorKind::ConnectionReset,
            StreamError::Message(_)
            | StreamError::HeadersTooLarge
            | StreamError::Capsule(_)
            | StreamError::Incomplete => io::ErrorKind::InvalidData,
            StreamError::GoingAway => io::ErrorKind::ConnectionRefused,
            StreamError::Invalid(_) | StreamError::NotNegotiated(_) => io::ErrorKind::InvalidInput,
        };
        Self::new(kind, error)
    }
}
