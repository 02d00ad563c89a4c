//! [`RequestBody`]: a request's body and trailers as an [`http_body::Body`].

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame};

use crate::error::StreamError;
use crate::stream::RecvHalf;

/// The body of a request a server received, as an [`http_body::Body`]: each piece of a DATA
/// frame is a data frame, the trailer section (if any) a trailers frame, then the end.
///
/// Reads straight from the QUIC stream, so a service that does not poll it leaves the client
/// waiting on flow control. An error (the client reset the stream, a malformed message) ends
/// the body. Made by [`crate::serve()`] for the requests it hands to a service, or from the
/// receiving half of a [`RequestStream`](super::RequestStream) with [`RequestBody::new`].
#[derive(Debug)]
pub struct RequestBody {
    recv: RecvHalf,
    /// The end (or an error) was returned: nothing more follows.
    done: bool,
}

impl RequestBody {
    /// The body still to be read from `recv`.
    pub fn new(recv: RecvHalf) -> Self {
        Self { recv, done: false }
    }

    /// The receiving half back, for instance to read capsules or datagrams.
    pub fn into_inner(self) -> RecvHalf {
        self.recv
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.recv.poll_recv_data(cx)) {
            Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => this.recv.take_trailers().map(|t| Ok(Frame::trailers(t))),
            Err(error) => Some(Err(error)),
        };
        this.done = true;
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}
