//! HTTP datagrams on [`Shared`]: whoever waits for one reads quinn's datagrams and routes them by
//! their quarter stream ID (RFC 9297 §2.1), so a datagram reaches its reader without a detour
//! through the connection's task, and the task is never woken for datagrams.
//!
//! The routes themselves are [`super::routes`]; this module owns reading and decoding.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use bytes::Bytes;
use quay_transport::quinn;

use super::routes::{EARLY_DATAGRAM_AGE, Popped};
use super::shared::{BUDGET, Shared};
use crate::proto::datagram::Datagram;

/// Where [`Shared::route_datagram`] put a datagram.
enum Routed {
    /// It is the reader's own: here is its payload.
    Mine(Bytes),
    /// Queued for another stream, kept for one not seen yet, or dropped.
    Elsewhere,
    /// Malformed: the connection failed.
    Malformed,
}

impl Shared {
    /// Starts routing datagrams for `stream_id`, for [`Shared::poll_datagram`].
    pub(crate) fn register_datagrams(&self, stream_id: u64) {
        let max_age = EARLY_DATAGRAM_AGE.max(self.conn.rtt() * 3);
        let now = Instant::now();
        self.lock().datagrams.register(stream_id, now, max_age);
    }

    /// How many datagrams for `stream_id` were dropped because its queue was full (0 once its
    /// routing stopped).
    pub(crate) fn datagrams_dropped(&self, stream_id: u64) -> u64 {
        self.lock().datagrams.dropped(stream_id)
    }

    /// Stops routing datagrams for `stream_id`; its waiting readers see the end.
    pub(crate) fn unregister_datagrams(&self, stream_id: u64) {
        let readers = self.lock().datagrams.unregister(stream_id);
        readers.for_each(Waker::wake);
    }

    /// The next datagram for `stream_id`; `None` once routing stopped (the connection is gone
    /// or sent a malformed datagram).
    ///
    /// Datagrams are read from quinn by whoever waits for one, through `read` (a future of
    /// `self.conn.read_datagram()` that the caller keeps between polls): one for this stream
    /// is returned at once, others are queued for their streams. Several tasks may wait per
    /// stream.
    pub(crate) fn poll_datagram<'a>(
        &'a self,
        stream_id: u64,
        cx: &mut Context<'_>,
        mut read: Pin<&mut quinn::ReadDatagram<'a>>,
    ) -> Poll<Option<Bytes>> {
        for _ in 0..BUDGET {
            // Registered under the lock that `route_datagram` takes, so a datagram that another
            // reader routes here is not missed.
            match self.lock().datagrams.pop(stream_id, cx.waker()) {
                Popped::Datagram(datagram) => return Poll::Ready(Some(datagram)),
                Popped::Gone => return Poll::Ready(None),
                Popped::Empty => {}
            }
            match ready!(read.as_mut().poll(cx)) {
                Ok(datagram) => {
                    read.set(self.conn.read_datagram());
                    match self.route_datagram(stream_id, datagram) {
                        Routed::Mine(payload) => return Poll::Ready(Some(payload)),
                        Routed::Elsewhere => {}
                        Routed::Malformed => return Poll::Ready(None),
                    }
                }
                // The connection is gone.
                Err(_) => {
                    self.end_datagrams();
                    return Poll::Ready(None);
                }
            }
        }
        // Others' datagrams kept coming: let other tasks run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The next datagram for `stream_id` if one has arrived, without waiting.
    pub(crate) fn try_datagram(&self, stream_id: u64) -> Option<Bytes> {
        let mut read = pin!(self.conn.read_datagram());
        match self.poll_datagram(
            stream_id,
            &mut Context::from_waker(Waker::noop()),
            read.as_mut(),
        ) {
            Poll::Ready(datagram) => datagram,
            Poll::Pending => None,
        }
    }

    /// Decodes a datagram's quarter stream ID (RFC 9297 §2.1) and hands its payload back if it
    /// belongs to `reader`, or queues it for its request stream. A malformed one fails the
    /// connection with H3_DATAGRAM_ERROR.
    fn route_datagram(&self, reader: u64, datagram: Bytes) -> Routed {
        let datagram = match Datagram::decode(datagram) {
            Ok(datagram) => datagram,
            Err(error) => {
                self.fail(error.into());
                self.end_datagrams();
                return Routed::Malformed;
            }
        };
        let (stream_id, payload) = (datagram.stream_id.into_inner(), datagram.payload);
        if let Some(qlog) = &self.qlog {
            crate::qlog::datagram(qlog, false, stream_id, payload.len());
        }
        if stream_id == reader {
            return Routed::Mine(payload);
        }
        let readers = {
            let mut inner = self.lock();
            let dropped = self
                .qlog
                .as_ref()
                .map(|_| inner.datagrams.dropped(stream_id));
            let readers = inner.datagrams.push(stream_id, Instant::now(), payload);
            if let (Some(qlog), Some(before)) = (&self.qlog, dropped)
                && inner.datagrams.dropped(stream_id) > before
            {
                crate::qlog::datagram_dropped(qlog, stream_id);
            }
            readers
        };
        readers.for_each(Waker::wake);
        Routed::Elsewhere
    }

    /// The connection is gone: every datagram receiver sees the end once its queue is empty,
    /// and so does an [`ExtensionStreams`](crate::stream::ExtensionStreams).
    pub(super) fn end_datagrams(&self) {
        let (readers, extension_waiters) = {
            let mut inner = self.lock();
            (inner.datagrams.end(), inner.extension_waiters.take())
        };
        readers.chain(extension_waiters).for_each(Waker::wake);
    }
}
