//! Request stream halves and extension streams.
//!
//! This module owns [`SendHalf`] and [`RecvHalf`], the two directions of a request stream that
//! [`client::RequestStream`](crate::client::RequestStream) and
//! [`server::RequestStream`](crate::server::RequestStream) are made of: frames are written and
//! read directly on the quinn streams in the caller's task, with no task or channel in between;
//! the connection lock is taken only to QPACK-encode or decode a header section. It also has
//! [`ExtensionStream`] and [`ExtensionStreams`] (streams handed to an extension such as
//! WebTransport), and, for older paths, the errors [`ConnectionError`] and [`StreamError`]
//! (which live in [`crate::error`]).
//!
//! It does not own the message rules ([`crate::request`], [`crate::proto::headers`]) or the
//! connection state ([`crate::connection`]).

pub(crate) mod extension;
mod live;
mod recv;
mod send;

pub use crate::driver::extensions::ExtensionStreams;
pub use crate::error::{ConnectionError, StreamError};
pub use extension::ExtensionStream;
pub(crate) use live::Live;
pub use recv::{Datagrams, RecvHalf};
pub use send::SendHalf;
