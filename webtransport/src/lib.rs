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
//!   each draft, and CONNECT negotiation;
//! - `trait_impl` (feature `web-transport-trait`) implements `web-transport-trait` 0.4 for
//!   [`Session`] and its streams, so that moq-net and other code generic over that trait run on
//!   quay.
//!
//! # Quick start
//!
//! A server that echoes every bidirectional stream, and a client that opens a session to it,
//! on loopback with a self-signed certificate the client trusts by its hash (as a browser's
//! `serverCertificateHashes` does):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use quay_webtransport::quay_transport::{ClientBuilder, Identity, Trust};
//! use quay_webtransport::{Config, Server};
//!
//! let identity = Identity::self_signed(["localhost"])?;
//! let hash = identity.certificate_hash();
//! let server = Server::bind("127.0.0.1:0".parse()?, identity, Config::default())?;
//! let port = server.local_addr()?.port();
//! tokio::spawn(async move {
//!     while let Some(request) = server.accept().await {
//!         let Ok(session) = request.ok().await else { continue };
//!         tokio::spawn(async move {
//!             while let Ok(Some((mut send, mut recv))) = session.accept_bi().await {
//!                 let data = recv.read_to_end(64 * 1024).await?;
//!                 send.write_all(&data).await?;
//!                 send.finish()?;
//!             }
//!             Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!         });
//!     }
//! });
//!
//! let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]));
//! let url = format!("https://localhost:{port}/echo");
//! let session = quay_webtransport::connect(&url, &builder).await?;
//! let (mut send, mut recv) = session.open_bi().await?;
//! send.write_all(b"hello").await?;
//! send.finish()?;
//! assert_eq!(recv.read_to_end(1024).await?, b"hello");
//! // Awaited, the close waits until the server has answered it.
//! session.close(0, "done").await;
//! # Ok(())
//! # }
//! ```
//!
//! Draft-16 flow control ([`Config::flow_control`]) is offered by default and on with every peer
//! that offers it too; Chromium, Firefox and the older drafts do not, and run without it. Not
//! done: RESET_STREAM_AT is not sent (quinn lacks it).
//!
//! # qlog
//!
//! With the `qlog` feature (quay-transport's, forwarded) and a qlog directory (see
//! `quay_transport::qlog`), a session's events go to its connection's qlog file beside quinn's
//! and quay-h3's, in the namespace `quay-webtransport` (no qlog draft defines WebTransport
//! events). Each has `session_id` (the CONNECT stream's ID) and, where either end can cause it,
//! `initiator` ("local" or "remote"): `session_opened` (CONNECT sent or received, with `path`),
//! `session_accepted` and `session_refused` (with `status`, and `protocol` if one was chosen),
//! `session_closed` (`code` and `reason`; a session dropped without a close has code 0; an end
//! by reset, protocol error or lost connection has `error` instead), `session_drained`, and
//! `datagram_dropped` (`direction` "send", `length`: QUIC refused a datagram already logged as
//! created). A session's datagrams sent are `http3:datagram_created`, written as the
//! application hands them over; received ones are quay-h3's
//! `http3:datagram_parsed`. Capsules on the CONNECT stream are `http:capsule_created` and
//! `http:capsule_parsed` (draft-ietf-quic-qlog-h3-events §7; `capsule_type` "datagram", or
//! WebTransport's types in lowercase, such as "wt_close_session"). Servers log through an `Acceptor` ([`Server::bind`] uses one;
//! [`Server::from_endpoint_with`] takes one); [`Client::connect`] logs through its builder.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod config;
mod connect_reader;
mod core;
mod datagram;
pub mod error;
mod flow;
#[doc(hidden)]
pub mod fuzzing;
mod held;
pub mod metrics;
#[doc(hidden)]
pub mod pair;
pub mod proto;
mod qlog;
mod routes;
pub mod server;
pub mod session;
mod state;
pub mod stats;
pub mod stream;
#[cfg(feature = "web-transport-trait")]
pub mod trait_impl;
mod waiter;

pub use client::{Client, SessionOptions, connect};
pub use config::Config;
pub use error::{ConnectError, DatagramError, Missing, SessionError, StreamError, Violation};
pub use server::Server;
pub use session::Session;
pub use stream::{ReadToEndError, RecvStream, SendStream};

pub use http;
pub use quay_h3;
pub use quay_transport;
