//! [`RequestStream`]: one request of a client and its response, read and written in the
//! caller's task; and [`Trailers`], the trailers of a message handled whole.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response};
use quay_transport::Qlog;

use super::recv_response_head;
use crate::error::{Code, Misuse};
use crate::proto::capsule::Capsule;
use crate::stats::RequestStats;
use crate::stream::{RecvHalf, SendHalf, StreamError};

/// The trailers of a message handled whole by
/// [`Connection::request`](super::Connection::request), in the extensions of its `http::Request`
/// or `http::Response`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trailers(pub HeaderMap);

/// One request: send its body and trailers, read its response.
#[derive(Debug)]
pub struct RequestStream {
    pub(super) send: SendHalf,
    pub(super) recv: RecvHalf,
    pub(super) response_received: bool,
    /// When the request head was sent, and how long the final response head took after it.
    pub(super) sent_at: Instant,
    pub(super) time_to_response_head: Option<Duration>,
}

impl RequestStream {
    /// The QUIC stream ID.
    pub fn id(&self) -> quay_transport::StreamId {
        self.send.id()
    }

    /// The connection's qlog file, if it has one: extensions (WebTransport) write their events
    /// to it, next to quinn's and this crate's.
    pub fn qlog(&self) -> Option<&Qlog> {
        self.send.qlog()
    }

    /// Sends a piece of the request body.
    pub async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
        self.send.send_data(data).await
    }

    /// Sends the request trailers and ends the request.
    pub async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
        self.send.send_trailers(trailers).await
    }

    /// Ends the request.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.send.finish()
    }

    /// This request's stats: body bytes and header sizes each way, the time from sending the
    /// request head to the final response head, and the codes of the peer's reset or stop.
    pub fn stats(&self) -> RequestStats {
        let sent = self.send.stats();
        RequestStats {
            time_to_response_head: self.time_to_response_head,
            body_sent: sent.body_sent,
            head_sent: sent.head_sent,
            trailers_sent: sent.trailers_sent,
            stopped_by_peer: sent.stopped_by_peer,
            ..self.recv.stats()
        }
    }

    /// Waits for the final response head (interim 1xx responses are skipped).
    pub async fn recv_response(&mut self) -> Result<Response<()>, StreamError> {
        if self.response_received {
            return Err(StreamError::Invalid(Misuse::ResponseAlreadyReceived));
        }
        let response = recv_response_head(&mut self.recv).await?;
        self.response_received = true;
        self.time_to_response_head = Some(self.sent_at.elapsed());
        Ok(response)
    }

    /// The next piece of the response body, `None` at its end.
    pub async fn recv_data(&mut self) -> Result<Option<Bytes>, StreamError> {
        if !self.response_received {
            return Err(StreamError::Invalid(Misuse::BodyBeforeHead));
        }
        let received = self.recv.recv_data().await;
        self.after_recv(received)
    }

    /// The response trailers (reads and drops the rest of the body first).
    pub async fn recv_trailers(&mut self) -> Result<Option<HeaderMap>, StreamError> {
        let received = self.recv.recv_trailers().await;
        self.after_recv(received)
    }

    /// Sends a capsule on an Extended CONNECT stream (RFC 9297 §3.2).
    pub async fn send_capsule(&mut self, capsule: &Capsule) -> Result<(), StreamError> {
        self.send.send_capsule(capsule).await
    }

    /// The next capsule from the server, `None` at the end of the stream.
    pub async fn recv_capsule(&mut self) -> Result<Option<Capsule>, StreamError> {
        let received = self.recv.recv_capsule().await;
        self.after_recv(received)
    }

    /// Sends an HTTP datagram for this request (RFC 9297).
    pub fn send_datagram(&self, payload: Bytes) -> Result<(), StreamError> {
        self.send.send_datagram(payload)
    }

    /// The next HTTP datagram for this request.
    pub async fn recv_datagram(&mut self) -> Result<Option<Bytes>, StreamError> {
        self.recv.recv_datagram().await
    }

    /// Cancels the request: resets the sending side and stops the receiving side with
    /// H3_REQUEST_CANCELLED (RFC 9114 §4.1.1).
    pub fn cancel(&mut self) {
        self.send.reset(Code::H3_REQUEST_CANCELLED);
        self.recv.stop(Code::H3_REQUEST_CANCELLED);
    }

    /// Passes on what the receiving half returned; when it found the peer's message malformed,
    /// our side of the stream is reset with the same code at once (RFC 9114 §4.1.2), since a
    /// message that already ended has no STOP_SENDING to tell the peer.
    fn after_recv<T>(&mut self, received: Result<T, StreamError>) -> Result<T, StreamError> {
        if received.is_err() {
            let _ = self.send.reset_if_malformed();
        }
        received
    }

    /// Splits into the sending and receiving halves, for use from two tasks. Receive the
    /// response head first: the halves have no `recv_response`.
    pub fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }
}
