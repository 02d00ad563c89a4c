//! Extension streams on [`Shared`]: the peer streams that an extension (WebTransport) claims by
//! a unidirectional stream type or a bidirectional signal, handed to the connection handle or to
//! an [`ExtensionStreams`], or refused with H3_STREAM_CREATION_ERROR when nobody takes them.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use quay_transport::{RecvStream, SendStream, VarInt};

use super::shared::{Shared, Taker};
use crate::error::Code;
use crate::error::{ConnectionError, StreamError};
use crate::proto::frame::FrameType;
use crate::stream::extension::ExtensionStream;

impl Shared {
    /// Hands the next extension stream to `taker`: `Ok(None)` when `taker` does not take them
    /// (none are configured, or they were taken by someone else) or the connection ended
    /// normally.
    pub(crate) async fn next_extension_stream(
        &self,
        taker: Taker,
    ) -> Result<Option<ExtensionStream>, ConnectionError> {
        let next = self.wait_for(|inner| {
            if inner.extension_taker != taker {
                return Some(None);
            }
            Some(Some(inner.next_extension()?))
        });
        match next.await {
            Ok(next) => Ok(next),
            Err(StreamError::ConnectionLost(error)) => error.end_of_accept(),
            // `wait_for` ends only with the connection.
            Err(_) => Ok(None),
        }
    }

    /// The next extension stream for an [`ExtensionStreams`]; `None` once they were given up
    /// or the connection is gone. One task at a time waits.
    pub(crate) fn poll_extension_stream(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<ExtensionStream>> {
        let mut inner = self.lock();
        if inner.extension_taker != Taker::Taken {
            return Poll::Ready(None);
        }
        if let Some(stream) = inner.next_extension() {
            return Poll::Ready(Some(stream));
        }
        // Datagram routing ends, and these waiters are woken, when the connection is gone.
        if inner.datagrams.is_ended() || inner.error.is_some() || self.conn.close_reason().is_some()
        {
            return Poll::Ready(None);
        }
        inner.extension_waiters.register(cx.waker());
        Poll::Pending
    }

    /// Moves the extension streams from the handle to an [`ExtensionStreams`]; false when none
    /// are configured or they were taken already.
    pub(crate) fn take_extension_streams(&self) -> bool {
        let mut inner = self.lock();
        if inner.extension_taker != Taker::Handle {
            return false;
        }
        inner.extension_taker = Taker::Taken;
        // A handle waiting in `accept_extension_stream` returns `None`.
        drop(inner);
        self.changed.notify_waiters();
        true
    }

    /// The [`ExtensionStreams`] was dropped: refuse the streams it never took, and later ones.
    pub(crate) fn drop_extension_streams(&self) {
        let refused = {
            let mut inner = self.lock();
            inner.extension_taker = Taker::Nobody;
            std::mem::take(&mut inner.extensions)
        };
        for stream in refused {
            stream.refuse(Code::H3_STREAM_CREATION_ERROR);
        }
    }
}

/// Hands out a bidirectional stream that opened with an extension's `(signal, session ID)`;
/// `buffered` is what followed the signal.
pub(crate) fn hand_out_bidi(
    shared: &Shared,
    (signal, session_id): (FrameType, VarInt),
    send: SendStream,
    recv: RecvStream,
    buffered: Bytes,
) {
    let stream = ExtensionStream::Bidi {
        signal,
        session_id,
        send,
        recv,
        buffered,
    };
    hand_out(shared, stream);
}

/// Hands out an extension stream to whoever takes them, or refuses it with
/// H3_STREAM_CREATION_ERROR when nobody does.
pub(crate) fn hand_out(shared: &Shared, stream: ExtensionStream) {
    {
        let mut inner = shared.lock();
        // A handler takes them: the connection's task hands them over at the end of its
        // wake-up. While it runs, the handler is out of its slot and the task sees this stream
        // before it puts the handler back (under this lock); otherwise, it is woken.
        if inner.extension_taker == Taker::Handler {
            inner.extensions.push_back(stream);
            if inner.handler.0.is_some() {
                let waiters = inner.driver_waiters.take();
                drop(inner);
                waiters.for_each(Waker::wake);
            }
            return;
        }
        if inner.extension_taker != Taker::Nobody {
            inner.extensions.push_back(stream);
            let waiters = inner.extension_waiters.take();
            drop(inner);
            waiters.for_each(Waker::wake);
            shared.changed.notify_waiters();
            return;
        }
    }
    stream.refuse(Code::H3_STREAM_CREATION_ERROR);
}

/// The streams claimed by an extension on one connection, taken out of the client or server
/// handle (`take_extension_streams`) so that a task can wait for them without keeping the
/// handle alive.
#[derive(Debug)]
pub struct ExtensionStreams {
    shared: Arc<Shared>,
}

impl ExtensionStreams {
    pub(crate) fn take(shared: &Arc<Shared>) -> Option<Self> {
        shared.take_extension_streams().then(|| Self {
            shared: shared.clone(),
        })
    }

    /// The next stream; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<ExtensionStream> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next stream, or the waker registered to be woken when one arrives; `None` once the
    /// connection is gone. A task that waits for these all connection long keeps no future.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<ExtensionStream>> {
        self.shared.poll_extension_stream(cx)
    }
}

impl Drop for ExtensionStreams {
    fn drop(&mut self) {
        self.shared.drop_extension_streams();
    }
}
