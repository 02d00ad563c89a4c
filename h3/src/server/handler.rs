//! [`Handler`]: an extension's code that runs on a server connection's own task, in place of an
//! accept loop in a task of its own.
//!
//! This module owns the trait and the slot the connection keeps it in. When the connection's
//! task calls it, and what it does with the streams before, is the driver's.

use std::fmt;
use std::task::Context;

use super::request::IncomingRequest;
use crate::stream::ExtensionStream;

/// What an extension (WebTransport) does with a server connection's streams, called from the
/// connection's own task as they arrive (see [`Connection::set_handler`]).
///
/// An accept loop in a task of its own costs that task, a wake-up of it for each stream, and
/// one more wake-up for each extension stream the connection's task hands it; a handler costs
/// none of these. In return it must never block: each method returns at once, and anything
/// that waits is polled in [`Handler::poll`].
///
/// [`Connection::set_handler`]: super::Connection::set_handler
pub trait Handler: Send + 'static {
    /// A request stream the client opened, past the checks `accept_stream` makes (our GOAWAY's
    /// limit, an extension's signal in its first bytes). Its head is still to be read
    /// ([`IncomingRequest::resolve`]).
    fn request(&mut self, request: IncomingRequest);

    /// A stream claimed by an extension (see `Config::extension_uni_stream_types` and
    /// `Config::extension_bidi_signals`).
    fn extension_stream(&mut self, stream: ExtensionStream);

    /// Polled each time the connection's task runs, after the streams that arrived were handed
    /// over: for the handler's own waits (request heads still arriving, timers), whose wakers
    /// wake the connection's task.
    fn poll(&mut self, cx: &mut Context<'_>) {
        let _ = cx;
    }

    /// The connection is gone; the handler is dropped after this.
    fn closed(&mut self) {}
}

/// A connection's [`Handler`], if it has one. Taken out by the connection's task while it
/// calls it, so that the handler may use the connection's state freely.
#[derive(Default)]
pub(crate) struct HandlerSlot(pub(crate) Option<Box<dyn Handler>>);

impl fmt::Debug for HandlerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(Handler)"
        } else {
            "None"
        })
    }
}
