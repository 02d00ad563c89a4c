//! HTTP/3 (RFC 9114) for quay, with Extended CONNECT (RFC 9220), HTTP Datagrams and the Capsule
//! Protocol (RFC 9297), and PRIORITY_UPDATE parsing (RFC 9218).
//!
//! [`proto`] holds the pure codecs: frames, settings, stream types, capsules, datagram prefixes
//! and message validation, none of which does I/O. [`error`] holds the wire error codes.
//!
//! On top of them: [`connection`] is the pure connection state machine (SETTINGS, QPACK, critical
//! streams, GOAWAY); [`client::Client`] and [`server::Server`] / [`server::Connection`] speak
//! HTTP/3 over quinn with `http::Request` / `http::Response` heads, streaming bodies, trailers,
//! Extended CONNECT, capsules and datagrams; [`Config`] holds the settings and limits. Each
//! connection runs one small tokio task for its control and QPACK streams and datagrams;
//! request bodies are read and written in the caller's task, straight on the QUIC stream.
//!
//! # Limitations
//!
//! - No server push: a client never sends MAX_PUSH_ID (so push streams are H3_ID_ERROR) and a
//!   server never pushes.
//! - PRIORITY_UPDATE frames are parsed and ignored; quinn schedules streams by its own priority.
//! - [`server::Connection::accept`] reads each request head before returning the next request;
//!   use [`server::Connection::accept_stream`] to read heads concurrently.
//! - HTTP datagrams are routed to request streams only, with a small queue per stream; extra
//!   datagrams are dropped, as RFC 9297 allows. A few that overtake their request wait for it
//!   (16 per connection, for three round trips or 50 ms).
//!
//! This crate does not do QPACK (that is `quay-qpack`), QUIC or TLS (that is `quay-transport`),
//! or WebTransport's session rules (that is `quay-webtransport`, which plugs into the extension
//! points described in DESIGN.md).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod client;
pub mod config;
pub mod connection;
mod driver;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod proto;
pub mod server;
pub mod stream;

pub use client::{Client, Trailers};
pub use config::Config;
pub use error::Code;
pub use server::Server;
pub use stream::{ConnectionError, StreamError};

pub use http;
pub use quay_transport;
