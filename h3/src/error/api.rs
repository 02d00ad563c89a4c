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

impl ConnectionError {
    /// Whether this is a normal end: we closed the connection, or the peer closed it with
    /// H3_NO_ERROR. Every accept on a connection returns `Ok(None)` for such an end and the
    /// error for any other, so `while let Some(x) = connection.accept().await? { .. }` ends
    /// quietly on a normal close and with the reason otherwise.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            Self::LocallyClosed
                | Self::PeerClosed {
                    code: Code::H3_NO_ERROR,
                    ..
                }
        )
    }

    /// `Ok(None)` for a [clean](Self::is_clean) end, the error otherwise: the end of an accept.
    pub(crate) fn end_of_accept<T>(self) -> Result<Option<T>, Self> {
        if self.is_clean() { Ok(None) } else { Err(self) }
    }
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
    Invalid(Misuse),
    /// The peer or our configuration does not allow this (Extended CONNECT or datagrams not
    /// enabled on both sides).
    #[error("not negotiated: {0}")]
    NotNegotiated(Feature),
}

/// How an operation did not fit a request stream's state, in [`StreamError::Invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// The stream was already finished, reset or stopped.
    #[error("the stream is already closed")]
    StreamClosed,
    /// A second message head to send.
    #[error("the message head was already sent")]
    HeadAlreadySent,
    /// The response head was asked for twice.
    #[error("the response was already received")]
    ResponseAlreadyReceived,
    /// Body asked for, or arrived, before the message head.
    #[error("body before the message head")]
    BodyBeforeHead,
    /// Body to send after the message ended (trailers or FIN).
    #[error("data after the end of the message")]
    BodyAfterEnd,
    /// The stream was reset because the peer's message on it was malformed (RFC 9114 §4.1.2).
    #[error("the stream was reset: the peer's message was malformed")]
    PeerMessageMalformed,
    /// A second message head arrived where only body or trailers may.
    #[error("a second message head")]
    SecondHead,
    /// Trailers to send before the head or after the end.
    #[error("trailers outside the body")]
    TrailersOutsideBody,
    /// A datagram larger than the path allows now.
    #[error("datagram too large")]
    DatagramTooLarge,
    /// The stream's datagrams were already taken out of it.
    #[error("datagrams already taken")]
    DatagramsTaken,
    /// HTTP datagrams belong to client-initiated bidirectional (request) streams.
    #[error("datagrams belong to request streams")]
    NotARequestStream,
    /// The server rejected the 0-RTT data the stream was opened with.
    #[error("0-RTT rejected")]
    ZeroRttRejected,
}

/// What the peer or our configuration did not allow, in [`StreamError::NotNegotiated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Feature {
    /// Extended CONNECT (RFC 9220): our `enable_extended_connect` or the server's
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL.
    #[error("Extended CONNECT")]
    ExtendedConnect,
    /// HTTP datagrams (RFC 9297): our `enable_datagrams` or the peer's SETTINGS_H3_DATAGRAM.
    #[error("HTTP datagrams")]
    HttpDatagrams,
    /// QUIC datagrams (RFC 9221) in the transport.
    #[error("QUIC datagrams")]
    QuicDatagrams,
}

impl StreamError {
    /// Whether the request was certainly not processed by the server and may be retried:
    /// GOAWAY (RFC 9114 §5.2), or H3_REQUEST_REJECTED on either direction of the stream. A
    /// server that rejects a request resets its response and stops reading the request
    /// (§4.1.1), so a client still sending the body sees the stop first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::GoingAway
                | Self::Reset(Code::H3_REQUEST_REJECTED)
                | Self::Stopped(Code::H3_REQUEST_REJECTED)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9114 §4.1.1: H3_REQUEST_REJECTED in either direction means "not processed"; other
    /// codes, even on a reset, do not.
    #[test]
    fn retryable_errors() {
        assert!(StreamError::GoingAway.is_retryable());
        assert!(StreamError::Reset(Code::H3_REQUEST_REJECTED).is_retryable());
        assert!(StreamError::Stopped(Code::H3_REQUEST_REJECTED).is_retryable());
        assert!(!StreamError::Reset(Code::H3_REQUEST_CANCELLED).is_retryable());
        assert!(!StreamError::Stopped(Code::H3_NO_ERROR).is_retryable());
        assert!(!StreamError::Incomplete.is_retryable());
    }
}
