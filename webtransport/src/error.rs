//! The errors of sessions, their streams and datagrams, and of opening a session.
//!
//! Codes seen here are WebTransport application codes (`u32`); the HTTP/3 codes that carry them on
//! the wire are mapped in [`crate::proto::error`]. A code from the peer that carries no
//! application code is reported as such ([`StreamError::InvalidCode`]), never guessed.

use std::io;

use http::StatusCode;
use quay_h3::proto::VarInt;
use quay_h3::{Code, ConnectionError};

use crate::core::session::End;
pub use crate::core::session::Violation;

/// Why a session ended, from [`Session::closed`](crate::Session::closed); also the error of
/// session operations once it has.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer closed the session with this application code and reason (WT_CLOSE_SESSION, or a
    /// clean end of the CONNECT stream, which means code 0 and no reason). In a raw session: the
    /// peer closed the QUIC connection with this code.
    #[error("session closed by the peer with code {code}: {reason:?}")]
    PeerClosed {
        /// The application code.
        code: u32,
        /// The reason, at most 1024 bytes.
        reason: String,
    },
    /// The peer asked the session to wind down (WT_DRAIN_SESSION), then ended it without a
    /// code.
    #[error("session drained by the peer")]
    PeerDrained,
    /// We closed the session.
    #[error("session closed locally")]
    LocallyClosed,
    /// The peer reset the CONNECT stream with this HTTP/3 code.
    #[error("CONNECT stream reset by the peer with {0}")]
    Reset(Code),
    /// The peer broke the session's protocol (a malformed capsule, data after
    /// WT_CLOSE_SESSION); we reset the CONNECT stream with H3_MESSAGE_ERROR.
    #[error("session protocol error: {0}")]
    Protocol(Violation),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
}

impl SessionError {
    /// Whether the session ended normally: we closed it, the peer drained it, or the peer closed
    /// it with code 0 (or ended the CONNECT stream cleanly, which means the same). The accepts of
    /// a [`Session`](crate::Session) return `Ok(None)` for such an end and the error for any
    /// other, so `while let Some(stream) = session.accept_uni().await? { .. }` ends quietly on a
    /// normal close and with the peer's code and reason otherwise.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            Self::LocallyClosed | Self::PeerDrained | Self::PeerClosed { code: 0, .. }
        )
    }

    /// `Ok(None)` for a [clean](Self::is_clean) end, the error otherwise: the end of an accept.
    pub(crate) fn end_of_accept<T>(self) -> Result<Option<T>, Self> {
        if self.is_clean() { Ok(None) } else { Err(self) }
    }
}

impl From<SessionError> for io::Error {
    fn from(error: SessionError) -> Self {
        let kind = match &error {
            SessionError::Protocol(_) => io::ErrorKind::InvalidData,
            SessionError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            _ => io::ErrorKind::ConnectionReset,
        };
        Self::new(kind, error)
    }
}

impl From<End<ConnectionError>> for SessionError {
    fn from(end: End<ConnectionError>) -> Self {
        match end {
            End::PeerClosed { code, reason } => Self::PeerClosed { code, reason },
            End::PeerDrained => Self::PeerDrained,
            End::LocallyClosed => Self::LocallyClosed,
            End::Reset(code) => Self::Reset(code),
            End::Protocol(what) => Self::Protocol(what),
            End::ConnectionLost(error) => Self::ConnectionLost(error),
        }
    }
}

/// What a server lacks for a WebTransport session, in [`ConnectError::NotSupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Missing {
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 9220).
    #[error("no Extended CONNECT")]
    ExtendedConnect,
    /// SETTINGS_H3_DATAGRAM (RFC 9297).
    #[error("no HTTP datagrams")]
    HttpDatagrams,
    /// QUIC datagrams (RFC 9221) in the transport.
    #[error("no QUIC datagrams")]
    QuicDatagrams,
    /// A setting of any WebTransport draft.
    #[error("no WebTransport setting")]
    WebTransportSetting,
    /// Room for another session on this connection: the server's session limit is reached.
    #[error("the server's session limit is reached")]
    SessionRoom,
}

/// Why an operation on a session's stream failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer reset the stream (RESET_STREAM) with this application code.
    #[error("stream reset by the peer with code {0}")]
    Reset(u32),
    /// The peer stopped reading (STOP_SENDING) with this application code.
    #[error("peer stopped reading with code {0}")]
    Stopped(u32),
    /// The peer reset or stopped the stream with an HTTP/3 code that carries no WebTransport
    /// application code (outside the range, or a reserved point in it).
    #[error("peer used error code {0:#x}, which is no WebTransport application code")]
    InvalidCode(u64),
    /// The session ended (here, or at the peer, which reset the stream with WT_SESSION_GONE).
    #[error("the session is gone")]
    SessionGone,
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// The stream was already finished or reset.
    #[error("stream already closed")]
    Closed,
}

impl From<StreamError> for io::Error {
    fn from(error: StreamError) -> Self {
        let kind = match &error {
            StreamError::Reset(_) | StreamError::Stopped(_) | StreamError::SessionGone => {
                io::ErrorKind::ConnectionReset
            }
            StreamError::InvalidCode(_) => io::ErrorKind::InvalidData,
            StreamError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            StreamError::Closed => io::ErrorKind::NotConnected,
        };
        Self::new(kind, error)
    }
}

/// Why a datagram was not sent.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Larger than [`Session::max_datagram_size`](crate::Session::max_datagram_size).
    #[error("datagram too large")]
    TooLarge,
    /// The peer does not accept datagrams.
    #[error("the peer does not accept datagrams")]
    Unsupported,
    /// The session ended.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL could not be parsed, is not `https`, or has no host.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The host name did not resolve, or the endpoint could not be set up.
    #[error("cannot reach the server: {0}")]
    Setup(String),
    /// The TLS handshake failed (certificate not trusted, pinned hash mismatch, no common ALPN,
    /// ...).
    #[error("TLS handshake failed: {0}")]
    Tls(quay_transport::ConnectionError),
    /// The QUIC connection failed or ended (timeout, refused, closed).
    #[error("transport failure: {0}")]
    Transport(ConnectionError),
    /// The server answered the CONNECT request with this non-2xx status.
    #[error("session refused by the server with status {0}")]
    Rejected(StatusCode),
    /// The server does not speak WebTransport (its SETTINGS lack Extended CONNECT, HTTP
    /// datagrams or a WebTransport setting), or refuses more sessions on this connection.
    #[error("the server does not support WebTransport: {0}")]
    NotSupported(Missing),
    /// The CONNECT request failed at the HTTP/3 level (reset, malformed response, ...).
    #[error("CONNECT request failed: {0}")]
    Http3(quay_h3::StreamError),
}

impl ConnectError {
    /// Sorts a connection failure: TLS alerts (QUIC's CRYPTO_ERROR range, 0x100..=0x1ff) are
    /// [`ConnectError::Tls`], anything else [`ConnectError::Transport`].
    pub(crate) fn from_connection(error: quay_transport::ConnectionError) -> Self {
        use quay_transport::ConnectionError as Quic;
        let tls = match &error {
            Quic::TransportError(e) => is_crypto(u64::from(e.code)),
            Quic::ConnectionClosed(close) => is_crypto(u64::from(close.error_code)),
            _ => false,
        };
        if tls {
            Self::Tls(error)
        } else {
            Self::Transport(error.into())
        }
    }

    /// Sorts a failure to connect an HTTP/3 client.
    pub(crate) fn from_h3_connect(error: quay_h3::client::ConnectError) -> Self {
        match error {
            quay_h3::client::ConnectError::Url(url) => Self::Url(url),
            quay_h3::client::ConnectError::Connection(error) => Self::from_connection(error),
            error => Self::Setup(error.to_string()),
        }
    }

    pub(crate) fn from_h3(error: quay_h3::StreamError) -> Self {
        match error {
            quay_h3::StreamError::ConnectionLost(ConnectionError::Transport(error)) => {
                Self::from_connection(error)
            }
            quay_h3::StreamError::ConnectionLost(error) => Self::Transport(error),
            quay_h3::StreamError::NotNegotiated(feature) => Self::NotSupported(match feature {
                quay_h3::error::Feature::ExtendedConnect => Missing::ExtendedConnect,
                quay_h3::error::Feature::HttpDatagrams => Missing::HttpDatagrams,
                _ => Missing::QuicDatagrams,
            }),
            error => Self::Http3(error),
        }
    }
}

fn is_crypto(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

/// The application code carried by an HTTP/3 code the peer reset or stopped a stream with.
pub(crate) fn peer_code(code: VarInt, mapped: bool) -> Result<u32, StreamError> {
    if !mapped {
        return u32::try_from(code.into_inner())
            .map_err(|_| StreamError::InvalidCode(code.into_inner()));
    }
    if Code::from_varint(code) == crate::proto::error::WT_SESSION_GONE {
        return Err(StreamError::SessionGone);
    }
    crate::proto::error::h3_code_to_app(code).ok_or(StreamError::InvalidCode(code.into_inner()))
}
