//! HTTP/3 (RFC 9114) for quay, with Extended CONNECT (RFC 9220), HTTP Datagrams and the Capsule
//! Protocol (RFC 9297), and PRIORITY_UPDATE parsing (RFC 9218).
//!
//! [`proto`] holds the pure codecs: frames, settings, stream types, capsules, datagram prefixes
//! and message validation, none of which does I/O. [`error`] holds the wire error codes.
//!
//! On top of them, the pure protocol core, with no tasks, sockets or clock: [`connection`] is
//! the connection state machine (SETTINGS, QPACK, critical streams, GOAWAY both ways, accepted
//! requests, close-when-idle, the H3_DATAGRAM rule) and [`request`] the state of one request
//! stream (frame order, content-length, interim responses, HEAD/204/304, CONNECT tunnels, the
//! head deadline). The async glue reads quinn into them and writes what they say.
//! [`client::Connection`] and [`server::Server`] / [`server::Connection`] speak
//! HTTP/3 over quinn with `http::Request` / `http::Response` heads, streaming bodies, trailers,
//! Extended CONNECT, capsules and datagrams; [`Config`] holds the settings and limits. Each
//! connection runs one small tokio task for its control and QPACK streams and datagrams;
//! request bodies are read and written in the caller's task, straight on the QUIC stream.
//! [`Client`] pools client connections per origin on one endpoint: it reuses a connection up
//! to the server's stream limit, closes idle ones, and moves off a connection that sent GOAWAY.
//! With the cargo feature `http-body`, `Client::send` takes and returns `http_body::Body`
//! bodies.
//!
//! # Features
//!
//! - `http-body`: `server::RequestBody`, a request's body and trailers as an `http_body::Body`.
//! - `tower`: `quay_h3::serve(server, service)` (module `serve`) runs any tower service of
//!   `http::Request<RequestBody>` (an axum `Router`, say) on a [`Server`], with graceful
//!   shutdown and a hook for WebTransport beside it.
//!
//! # Quick start
//!
//! A server that answers every request with its path, and a client that asks it once, on
//! loopback with a self-signed certificate the client trusts by its hash:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use bytes::Bytes;
//! use quay_h3::quay_transport::{ClientBuilder, Identity, Trust};
//! use quay_h3::{Client, Config, Server};
//!
//! let identity = Identity::self_signed(["localhost"])?;
//! let hash = identity.certificate_hash();
//! let server = Server::bind("127.0.0.1:0".parse()?, identity, Config::default())?;
//! let port = server.local_addr()?.port();
//! tokio::spawn(async move {
//!     while let Some(connection) = server.accept().await {
//!         tokio::spawn(async move {
//!             while let Ok(Some((request, mut stream))) = connection.accept().await {
//!                 let response = http::Response::builder().status(200).body(())?;
//!                 stream.send_response(response).await?;
//!                 stream.send_data(Bytes::from(request.uri().path().to_owned())).await?;
//!                 stream.finish()?;
//!             }
//!             Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//!         });
//!     }
//! });
//!
//! let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]));
//! let client = Client::new(&builder, Config::default())?;
//! let url = format!("https://localhost:{port}/hello");
//! let response = client.request(http::Request::get(&url).body(Bytes::new())?).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.body(), "/hello");
//! client.close();
//! client.wait_idle().await;
//! # Ok(())
//! # }
//! ```
//!
//! # qlog
//!
//! With the `qlog` feature and a qlog directory (`ServerBuilder::qlog_dir`,
//! `ClientBuilder::qlog_dir`, or `$QLOGDIR`; see `quay_transport::qlog`), each connection this
//! crate accepts or opens through a builder writes these events into its file, next to quinn's
//! transport events, with the names and fields of draft-ietf-quic-qlog-h3-events:
//! `http3:parameters_set` (our SETTINGS with `initiator` "local" when our control stream opens,
//! the peer's as "remote"), `http3:stream_type_set` (each unidirectional stream, ours and the
//! peer's), `http3:frame_created` / `http3:frame_parsed` for every frame on the control and
//! request streams (HEADERS, trailers included, with the field lines, values of never-indexed
//! fields left out; DATA with its length, never its bytes; SETTINGS, GOAWAY, MAX_PUSH_ID,
//! CANCEL_PUSH, PRIORITY_UPDATE, a refused PUSH_PROMISE; reserved and unknown types with
//! their type and length), `http3:datagram_created` / `http3:datagram_parsed`
//! (`quarter_stream_id`, payload length). In quay's own namespaces:
//! `quay-qpack:section_blocked` / `quay-qpack:section_unblocked` (`stream_id`: a header section
//! waiting for the encoder stream, RFC 9204 §2.2.1, and its decode),
//! `quay-qpack:table_capacity` / `quay-qpack:table_insert` / `quay-qpack:table_evict` (the
//! changes to our encoder's dynamic table and to our decoder's, with the absolute index and,
//! for an insert, the entry), and
//! `quay-h3:datagram_dropped` (`quarter_stream_id`, `trigger` "queue_full": a received
//! datagram its stream's queue had no room for). A connection without a qlog pays one check of
//! an `Option` per event site.
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
pub mod metrics;
#[doc(hidden)]
pub mod pair;
pub mod proto;
mod qlog;
pub mod request;
#[cfg(feature = "tower")]
pub mod serve;
pub mod server;
pub mod stats;
pub mod stream;
mod waiter;

pub use client::{Client, Trailers};
pub use config::Config;
pub use error::{Code, ConnectionError, StreamError};
#[cfg(feature = "tower")]
pub use serve::serve;
pub use server::Server;

pub use http;
pub use quay_transport;
