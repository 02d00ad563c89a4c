//! WebTransport over HTTP/3 for quay (draft-ietf-webtrans-http3, draft-02 to draft-16), for
//! browser-facing servers and native clients.
//!
//! - [`Server`] accepts session [`Request`](server::Request)s on its own endpoint;
//!   [`server::Connection`] does the same on a connection of a `quay_h3` server, next to its
//!   HTTP/3 requests;
//! - [`Client`] opens sessions on one connection; [`connect`] opens one on its own;
//! - [`Session`] derefs to the QUIC connection and has its own streams ([`SendStream`],
//!   [`RecvStream`]), datagrams and close; [`Session::raw`] gives the same API on a bare QUIC
//!   connection;
//! - [`proto`] holds the pure parts: error-code mapping, WebTransport capsules, the settings of
//!   each draft, and CONNECT negotiation.
//!
//! Draft-16 flow control ([`Config::flow_control`]) is offered by default and on with every peer
//! that offers it too; Chromium, Firefox and the older drafts do not, and run without it. Not
//! done: RESET_STREAM_AT is not sent (quinn lacks it).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod config;
pub mod error;
mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod proto;
pub mod server;
pub mod session;
pub mod stream;

pub use client::{Client, SessionOptions, connect};
pub use config::Config;
pub use error::{ConnectError, DatagramError, SessionError, StreamError};
pub use server::Server;
pub use session::Session;
pub use stream::{ReadToEndError, RecvStream, SendStream};
