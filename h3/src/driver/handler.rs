//! A server connection's [`Handler`] on [`Shared`]: installing it, and the calls the
//! connection's task makes to it around each of its wake-ups.
//!
//! The handler is kept in [`Inner`](super::shared::Inner) and taken out while the task calls
//! it, so that it may lock the connection's state itself (to resolve a request, to reject one).

use std::mem;
use std::task::{Context, Waker};

use super::shared::{Shared, Taker};
use crate::connection::Side;
use crate::server::Handler;

impl Shared {
    /// Gives the connection's streams to `handler` from now on (see
    /// `server::Connection::set_handler`); gives it back when this is not a server connection,
    /// it has a handler already, its extension streams were taken, or it is gone.
    pub(crate) fn set_handler(&self, handler: Box<dyn Handler>) -> Result<(), Box<dyn Handler>> {
        let waiters = {
            let mut inner = self.lock();
            if self.side != Side::Server
                || inner.serving
                || inner.extension_taker == Taker::Taken
                || inner.datagrams.is_ended()
            {
                return Err(handler);
            }
            inner.serving = true;
            inner.handler.0 = Some(handler);
            if inner.extension_taker == Taker::Handle {
                inner.extension_taker = Taker::Handler;
            }
            inner.driver_waiters.take()
        };
        // The task starts accepting request streams; a handle waiting in
        // `accept_extension_stream` returns `None`.
        waiters.for_each(Waker::wake);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Whether a [`Handler`] takes the connection's request streams.
    pub(crate) fn is_serving(&self) -> bool {
        self.lock().serving
    }

    /// The start of a wake-up of the connection's task: registers it to be woken when bytes
    /// are queued for our streams (see `Inner::flush_waker`; before it looks for output, so
    /// bytes queued after that look wake it), and takes the handler out, if there is one.
    pub(super) fn begin_poll(&self, cx: &Context<'_>) -> Option<Box<dyn Handler>> {
        let mut inner = self.lock();
        inner.driver_waiters.register(cx.waker());
        inner.handler.0.take()
    }

    /// The end of a wake-up of the connection's task: polls `handler`, hands it the extension
    /// streams that arrived (those the poll handed out too: a request stream whose signal came
    /// late), and puts it back.
    pub(super) fn end_poll(&self, mut handler: Box<dyn Handler>, cx: &mut Context<'_>) {
        handler.poll(cx);
        // Bounded: routing a stream hands out no other, so the second turn finds none.
        loop {
            let mut inner = self.lock();
            if inner.extensions.is_empty() {
                inner.handler.0 = Some(handler);
                return;
            }
            let streams = mem::take(&mut inner.extensions);
            drop(inner);
            for stream in streams {
                handler.extension_stream(stream);
            }
        }
    }

    /// The connection is gone: the handler hears it and is dropped, with what it holds.
    pub(super) fn end_handler(&self) {
        let handler = self.lock().handler.0.take();
        if let Some(mut handler) = handler {
            handler.closed();
        }
    }
}
