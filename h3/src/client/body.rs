//! `http_body::Body` on the pooled [`Client`] (cargo feature `http-body`): [`Client::send`]
//! takes any request body and returns an [`Incoming`] response body.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

use super::pool::{Client, RequestError, refused};
use super::recv_response_head;
use crate::error::Code;
use crate::stream::{RecvHalf, SendHalf};

impl Client {
    /// Sends a request with any `http_body::Body` and returns the response with its body as an
    /// [`Incoming`] (data frames, then the trailers frame if the server sent trailers).
    ///
    /// The request body is sent in its own task, frame by frame, each written before the next is
    /// polled (the QUIC stream's flow control is the backpressure); its trailers go as a trailers
    /// frame. The response may arrive before the body is all sent; dropping the [`Incoming`]
    /// stops the sending. A request the server refused unprocessed (RFC 9114 §4.1.1, §5.2) is
    /// sent once more on a new connection when its body is empty (`is_end_stream`); other
    /// bodies cannot be sent twice. [`super::Options::request_timeout`] bounds the whole
    /// exchange, the response body included.
    pub async fn send<B>(&self, request: Request<B>) -> Result<Response<Incoming>, RequestError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn Error + Send + Sync>>,
    {
        let deadline = self
            .options()
            .request_timeout
            .map(|limit| (Instant::now() + limit, limit));
        let (parts, body) = request.into_parts();
        let mut body = (!body.is_end_stream()).then_some(body);
        let exchange = async {
            let mut refused_by = None;
            loop {
                let head = Request::from_parts(parts.clone(), ());
                let (stream, id, conn) = self.acquire(&head, refused_by).await?;
                let stream_id = u64::from(stream.id());
                let (mut send, mut recv) = (stream.send, stream.recv);
                let sender = match body.take() {
                    Some(body) => Some(Sender(tokio::spawn(send_body(send, body)).abort_handle())),
                    None => {
                        send.finish()?;
                        None
                    }
                };
                match recv_response_head(&mut recv).await {
                    Err(error)
                        if sender.is_none()
                            && refused_by.is_none()
                            && refused(&error, stream_id, &conn) =>
                    {
                        tracing::debug!(%error, "request refused unprocessed; sending it again");
                        refused_by = Some(id);
                    }
                    Err(error) => return Err(error.into()),
                    Ok(head) => return Ok((head, recv, sender)),
                }
            }
        };
        let (head, recv, sender) = match deadline {
            None => exchange.await?,
            Some((at, limit)) => tokio::time::timeout_at(at, exchange)
                .await
                .unwrap_or(Err(RequestError::Timeout(limit)))?,
        };
        let (parts, ()) = head.into_parts();
        let incoming = Incoming {
            recv: Some(recv),
            _sender: sender,
            deadline: deadline.map(|(at, limit)| (Box::pin(tokio::time::sleep_until(at)), limit)),
        };
        Ok(Response::from_parts(parts, incoming))
    }
}

/// Sends `body` on `send`: its data, then its trailers (or the end of the stream).
async fn send_body<B>(mut send: SendHalf, body: B)
where
    B: Body,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    // Bounded by the body: each turn sends one of its frames.
    loop {
        // What to send, taken out of the frame before any await (the body's types need not be
        // `Send`).
        let next = match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => Next::End,
            Some(Err(error)) => {
                let error: Box<dyn Error + Send + Sync> = error.into();
                tracing::debug!(%error, "request body failed; cancelling the request");
                Next::Fail
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => Next::Data(data.copy_to_bytes(data.remaining())),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => Next::Trailers(trailers),
                    // A frame kind this crate does not know: skipped.
                    Err(_) => Next::Data(Bytes::new()),
                },
            },
        };
        let sent = match next {
            Next::Data(data) if data.is_empty() => continue,
            Next::Data(data) => match send.send_data(data).await {
                Ok(()) => continue,
                Err(error) => Err(error),
            },
            Next::Trailers(trailers) => send.send_trailers(trailers).await,
            Next::End => send.finish(),
            Next::Fail => {
                send.reset(Code::H3_REQUEST_CANCELLED);
                return;
            }
        };
        if let Err(error) = sent {
            // The server may have stopped reading once it answered (RFC 9114 §4.1).
            tracing::debug!(%error, "request body not sent whole");
        }
        return;
    }
}

/// What [`send_body`] does with the body's next frame.
enum Next {
    Data(Bytes),
    Trailers(http::HeaderMap),
    End,
    Fail,
}

/// A response body from [`Client::send`]: DATA frames as data, then the trailers, if any. Its
/// error is [`RequestError::Stream`], or [`RequestError::Timeout`] past the request timeout.
#[derive(Debug)]
pub struct Incoming {
    /// `None` once the body ended or failed.
    recv: Option<RecvHalf>,
    /// The task sending the request body, stopped when this body is dropped.
    _sender: Option<Sender>,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
}

/// The task sending a request body; stopped when dropped (the request failed or timed out, or
/// its response body is gone), so that a body nobody waits for is not sent on.
#[derive(Debug)]
struct Sender(AbortHandle);

impl Drop for Sender {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = RequestError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestError>>> {
        let this = self.get_mut();
        let Some(recv) = this.recv.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some((sleep, limit)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            let limit = *limit;
            if let Some(mut recv) = this.recv.take() {
                recv.stop(Code::H3_REQUEST_CANCELLED);
            }
            return Poll::Ready(Some(Err(RequestError::Timeout(limit))));
        }
        let frame = match ready!(recv.poll_recv_data(cx)) {
            Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
            // The body ended; the trailers, if any, are in hand (nothing left to wait for).
            Ok(None) => match std::pin::pin!(recv.recv_trailers()).poll(cx) {
                Poll::Ready(Ok(Some(trailers))) => Some(Ok(Frame::trailers(trailers))),
                Poll::Ready(Ok(None)) => None,
                Poll::Ready(Err(error)) => Some(Err(error.into())),
                // Cancel-safe: the next poll asks again.
                Poll::Pending => return Poll::Pending,
            },
            Err(error) => Some(Err(error.into())),
        };
        this.recv = None;
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
