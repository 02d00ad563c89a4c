//! [`IncomingRequest`] (a request stream whose head is still to be read) and [`RequestStream`]
//! (one request being answered).

use std::future::poll_fn;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response};
use quay_qpack::Field;
use tokio::time::Instant;

use crate::connection::Side;
use crate::driver::extensions::hand_out_bidi;
use crate::driver::prefix::poll_prefix;
use crate::driver::shared::Shared;
use crate::error::Code;
use crate::error::Misuse;
use crate::proto::capsule::Capsule;
use crate::proto::headers;
use crate::proto::stream::decode_bidi_signal;
use crate::request::RequestState;
use crate::stats::RequestStats;
use crate::stream::{Live, RecvHalf, SendHalf, StreamError};

/// A request stream whose head has not been read yet, from [`Connection::accept_stream`](super::Connection::accept_stream).
#[derive(Debug)]
pub struct IncomingRequest {
    pub(super) shared: Arc<Shared>,
    pub(super) send: quay_transport::SendStream,
    pub(super) recv: quay_transport::RecvStream,
    /// Bytes read from the stream already (while looking for an extension's signal).
    pub(super) initial: Bytes,
}

impl IncomingRequest {
    /// The QUIC stream ID.
    pub fn id(&self) -> quay_transport::StreamId {
        self.send.id()
    }

    /// Reads and checks the request head.
    ///
    /// `Ok(None)` when the stream was not a request: it started with an extension signal (and
    /// went to [`Connection::accept_extension_stream`](super::Connection::accept_extension_stream)), or it was malformed, ended early, or
    /// did not deliver its head within [`Config::request_head_timeout`] (and was reset with
    /// H3_MESSAGE_ERROR or H3_REQUEST_INCOMPLETE, RFC 9114 §4.1.2).
    ///
    /// [`Config::request_head_timeout`]: crate::Config::request_head_timeout
    pub async fn resolve(self) -> Result<Option<(Request<()>, RequestStream)>, StreamError> {
        let Self {
            shared,
            mut send,
            mut recv,
            initial,
        } = self;
        let deadline = Instant::now() + shared.config.request_head_timeout;
        let signals = &shared.config.extension_bidi_signals;
        let mut read = BytesMut::from(initial);
        let prefix = poll_fn(|cx| {
            poll_prefix(cx, &mut recv, &mut read, |cur| {
                decode_bidi_signal(signals, cur)
            })
        });
        let Ok(prefix) = tokio::time::timeout_at(deadline, prefix).await else {
            // RFC 9114 §4.1.2: no complete request in time.
            let code = Code::H3_REQUEST_INCOMPLETE.to_varint();
            let _ = recv.stop(code);
            let _ = send.reset(code);
            shared.request_error(Code::H3_REQUEST_INCOMPLETE);
            return Ok(None);
        };
        let buffered = match prefix {
            Ok(Some((Some(signal), buffered))) => {
                hand_out_bidi(&shared, signal, send, recv, buffered);
                return Ok(None);
            }
            Ok(Some((None, buffered))) => buffered,
            Ok(None) => {
                // RFC 9114 §4.1.2: the stream ended before a request.
                let _ = send.reset(Code::H3_REQUEST_INCOMPLETE.to_varint());
                shared.request_error(Code::H3_REQUEST_INCOMPLETE);
                return Ok(None);
            }
            Err(quay_transport::ReadError::ConnectionLost(error)) => {
                return Err(StreamError::ConnectionLost(shared.connection_error(error)));
            }
            Err(quay_transport::ReadError::Reset(code)) => {
                return Err(StreamError::Reset(Code::from_varint(code)));
            }
            Err(_) => return Err(StreamError::Invalid(Misuse::StreamClosed)),
        };
        let live = Live::new(shared.clone());
        let mut state = RequestState::request(shared.config.max_frame_payload);
        state.set_head_deadline(deadline.into_std());
        // The state's deadline, which the bidirectional signal's wait above shared.
        let deadline = state.poll_timeout().map_or(deadline, Instant::from_std);
        let mut recv = RecvHalf::new(recv, state, buffered, live.clone());
        let mut send = SendHalf::new(send, live);
        let Ok(head) = tokio::time::timeout_at(deadline, recv.recv_head()).await else {
            // RFC 9114 §4.1.2: no complete request in time.
            recv.stop(Code::H3_REQUEST_INCOMPLETE);
            send.reset(Code::H3_REQUEST_INCOMPLETE);
            shared.request_error(Code::H3_REQUEST_INCOMPLETE);
            return Ok(None);
        };
        let fields = match head {
            Ok(Some(fields)) => fields,
            Ok(None) => {
                send.reset(Code::H3_REQUEST_INCOMPLETE);
                shared.request_error(Code::H3_REQUEST_INCOMPLETE);
                return Ok(None);
            }
            Err(StreamError::HeadersTooLarge) => {
                // RFC 9114 §4.2.2: over our limit; reading was stopped already.
                send.reset(Code::H3_EXCESSIVE_LOAD);
                return Ok(None);
            }
            Err(error) => {
                send.reset(Code::H3_REQUEST_CANCELLED);
                return Err(error);
            }
        };
        let extended_connect = shared.config.enable_extended_connect;
        let head = match recv
            .state_mut()
            .handle_request_head(&fields, extended_connect)
        {
            Ok(head) => head,
            Err(error) => {
                // RFC 9114 §4.1.2: a malformed request is a stream error.
                recv.message_error(error);
                send.reset(Code::H3_MESSAGE_ERROR);
                return Ok(None);
            }
        };
        let connect = head.request.method() == Method::CONNECT;
        if connect && shared.config.enable_datagrams {
            recv.listen_datagrams();
        }
        let stream = RequestStream {
            send,
            recv,
            connect,
            head_request: head.request.method() == Method::HEAD,
        };
        Ok(Some((head.request, stream)))
    }
}

/// One request being answered: read its body and trailers, send the response.
#[derive(Debug)]
pub struct RequestStream {
    send: SendHalf,
    recv: RecvHalf,
    connect: bool,
    head_request: bool,
}

impl RequestStream {
    /// The QUIC stream ID.
    pub fn id(&self) -> quay_transport::StreamId {
        self.send.id()
    }

    /// The connection's qlog file, if it has one: extensions (WebTransport) write their events
    /// to it, next to quinn's and this crate's.
    pub fn qlog(&self) -> Option<&quay_transport::Qlog> {
        self.send.qlog()
    }

    /// This request's stats: body bytes and header sizes each way, and the codes of the peer's
    /// reset or stop.
    pub fn stats(&self) -> RequestStats {
        let sent = self.send.stats();
        RequestStats {
            body_sent: sent.body_sent,
            head_sent: sent.head_sent,
            trailers_sent: sent.trailers_sent,
            stopped_by_peer: sent.stopped_by_peer,
            ..self.recv.stats()
        }
    }

    /// Sends the response head. An interim (1xx) response may be sent first; the final one
    /// follows. A 2xx answer to CONNECT opens the tunnel (RFC 9114 §4.4).
    pub async fn send_response(&mut self, response: Response<()>) -> Result<(), StreamError> {
        let status = send_response_head(&mut self.send, &response).await?;
        if self.connect && status.is_success() {
            self.recv.state_mut().tunnel();
        }
        Ok(())
    }

    /// Sends a piece of the response body. Bodies of responses to HEAD are not sent.
    pub async fn send_data(&mut self, data: Bytes) -> Result<(), StreamError> {
        if self.head_request {
            return Ok(());
        }
        self.send.send_data(data).await
    }

    /// Sends the response trailers and ends the response.
    pub async fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), StreamError> {
        self.send.send_trailers(trailers).await
    }

    /// Ends the response.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.send.finish()
    }

    /// The next piece of the request body, `None` at its end.
    pub async fn recv_data(&mut self) -> Result<Option<Bytes>, StreamError> {
        let received = self.recv.recv_data().await;
        self.after_recv(received)
    }

    /// The request trailers (reads and drops the rest of the body first).
    pub async fn recv_trailers(&mut self) -> Result<Option<HeaderMap>, StreamError> {
        let received = self.recv.recv_trailers().await;
        self.after_recv(received)
    }

    /// Sends a capsule on an Extended CONNECT stream, after a 2xx response (RFC 9297 §3.2).
    pub async fn send_capsule(&mut self, capsule: &Capsule) -> Result<(), StreamError> {
        self.send.send_capsule(capsule).await
    }

    /// The next capsule from the client, `None` at the end of the stream.
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

    /// Refuses or abandons the request: resets the response with `code` and stops reading the
    /// request (H3_REQUEST_REJECTED tells the client it may retry, RFC 9114 §4.1.1).
    pub fn reject(&mut self, code: Code) {
        self.send.reset(code);
        self.recv.stop(code);
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

    /// The halves, and whether the request was HEAD (so the response has no body), for
    /// [`crate::serve()`], which sends the head on the sending half with [`send_response_head`]
    /// while the service reads the request body from the receiving half.
    #[cfg(feature = "tower")]
    pub(crate) fn into_serve_parts(self) -> (SendHalf, RecvHalf, bool) {
        (self.send, self.recv, self.head_request)
    }

    /// Splits into the sending and receiving halves, for use from two tasks. Send the response
    /// head first: the halves have no `send_response`.
    pub fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }
}

/// Sends a response head (interim or final) on `send`; the status it had.
pub(crate) async fn send_response_head(
    send: &mut SendHalf,
    response: &Response<()>,
) -> Result<http::StatusCode, StreamError> {
    let fields: Vec<Field> = headers::response_fields(response)?;
    let status = response.status();
    send.send_head(&fields, !status.is_informational()).await?;
    crate::metrics::response(Side::Server, status);
    Ok(status)
}
