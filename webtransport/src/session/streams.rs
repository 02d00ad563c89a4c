//! Opening and accepting a session's streams: [`Session::open_bi`] and [`Session::open_uni`]
//! wait for the session's stream credit and put the session's stream header first;
//! [`Session::accept_bi`] and [`Session::accept_uni`] take this session's next routed stream, or
//! on a raw session the connection's next stream.
//!
//! It does not route the peer's streams (`crate::routes` does), decide stream credit (the core
//! does, through `crate::state`) or map the streams' codes ([`crate::stream`] does); the stream
//! headers themselves are built when the session starts, in [`super`].

use bytes::Bytes;
use quay_h3::stream::ExtensionStream;

use super::{Session, raw_end};
use crate::datagram::Prefix;
use crate::error::{SessionError, Violation};
use crate::proto::capsule::Direction;
use crate::stream::{self, Mapping, RecvStream, SendStream};

impl Session {
    /// Opens a bidirectional stream. Waits while the peer's stream limit is reached (QUIC's, and
    /// the session's when flow control is on).
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        self.check_open()?;
        if let Some(h3) = &self.inner.h3 {
            h3.state.stream_credit(Direction::Bidi).await?;
        }
        let (mut send, recv) = match self.inner.conn.open_bi().await {
            Ok(stream) => stream,
            Err(error) => return Err(self.lost(error).await),
        };
        if let Some(h3) = &self.inner.h3 {
            self.write_header(&mut send, h3.bidi_header()).await?;
        }
        self.count(|c| &c.streams_opened_bidi);
        let mapping = self.mapping();
        Ok(stream::bidi(send, recv, Bytes::new(), mapping))
    }

    /// Opens a unidirectional stream. Waits while the peer's stream limit is reached (QUIC's,
    /// and the session's when flow control is on). Its header goes out with its first bytes
    /// (or FIN), so a priority set before the first write (`SendStream::set_priority`) orders
    /// the stream from its first packet on.
    pub async fn open_uni(&self) -> Result<SendStream, SessionError> {
        self.check_open()?;
        if let Some(h3) = &self.inner.h3 {
            h3.state.stream_credit(Direction::Uni).await?;
        }
        let send = match self.inner.conn.open_uni().await {
            Ok(send) => send,
            Err(error) => return Err(self.lost(error).await),
        };
        self.count(|c| &c.streams_opened_uni);
        Ok(match &self.inner.h3 {
            // The header goes with the first write: the peer has nothing to read before.
            Some(h3) => {
                let header = Bytes::copy_from_slice(h3.uni_header().as_slice());
                SendStream::with_header(send, self.mapping(), header)
            }
            None => SendStream::new(send, self.mapping()),
        })
    }

    async fn write_header(
        &self,
        send: &mut quay_transport::SendStream,
        header: Prefix,
    ) -> Result<(), SessionError> {
        // The session may have ended while the stream waited for credit.
        self.check_open()?;
        match send
            .write_chunk(Bytes::copy_from_slice(header.as_slice()))
            .await
        {
            Ok(()) => Ok(()),
            Err(quay_transport::WriteError::ConnectionLost(e)) => Err(self.lost(e).await),
            // Stopped before a byte was read: the session is gone at the peer.
            Err(_) => Err(self
                .check_open()
                .err()
                .unwrap_or(SessionError::LocallyClosed)),
        }
    }

    /// Waits for the peer's next bidirectional stream of this session. `Ok(None)` once the
    /// session ended normally (see [`SessionError::is_clean`]), the error if it ended otherwise.
    pub async fn accept_bi(&self) -> Result<Option<(SendStream, RecvStream)>, SessionError> {
        match self.next_bi().await {
            Ok(streams) => Ok(Some(streams)),
            Err(end) => end.end_of_accept(),
        }
    }

    async fn next_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        let Some(h3) = &self.inner.h3 else {
            let (send, recv) = self.inner.conn.accept_bi().await.map_err(raw_end)?;
            return Ok(stream::bidi(send, recv, Bytes::new(), Mapping::Raw));
        };
        match h3.state.next_arrival(Direction::Bidi).await? {
            ExtensionStream::Bidi {
                send,
                recv,
                buffered,
                ..
            } => {
                self.count(|c| &c.streams_accepted_bidi);
                let mapping = self.mapping();
                Ok(stream::bidi(send, recv, buffered, mapping))
            }
            _ => Err(SessionError::Protocol(Violation::WrongDirection)),
        }
    }

    /// Waits for the peer's next unidirectional stream of this session. `Ok(None)` once the
    /// session ended normally (see [`SessionError::is_clean`]), the error if it ended otherwise.
    pub async fn accept_uni(&self) -> Result<Option<RecvStream>, SessionError> {
        match self.next_uni().await {
            Ok(stream) => Ok(Some(stream)),
            Err(end) => end.end_of_accept(),
        }
    }

    async fn next_uni(&self) -> Result<RecvStream, SessionError> {
        let Some(h3) = &self.inner.h3 else {
            let recv = self.inner.conn.accept_uni().await.map_err(raw_end)?;
            return Ok(RecvStream::new(recv, Bytes::new(), Mapping::Raw));
        };
        match h3.state.next_arrival(Direction::Uni).await? {
            ExtensionStream::Uni { recv, buffered, .. } => {
                self.count(|c| &c.streams_accepted_uni);
                Ok(RecvStream::new(recv, buffered, self.mapping()))
            }
            _ => Err(SessionError::Protocol(Violation::WrongDirection)),
        }
    }
}
