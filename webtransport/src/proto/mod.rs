//! Pure WebTransport codecs: no I/O, no tasks.
//!
//! - [`error`]: WebTransport's error codes and the application-code mapping;
//! - [`capsule`]: WT_CLOSE_SESSION, WT_DRAIN_SESSION and the flow-control capsules;
//! - [`settings`]: the SETTINGS a WebTransport endpoint sends and the draft a peer speaks;
//! - [`connect`]: what a CONNECT request asks for and the response headers that answer it.
//!
//! Stream prefixes (0x54 and 0x41 with the session ID), the capsule framing and the datagram
//! prefix are HTTP/3 codecs and live in `quay_h3::proto`.

pub mod capsule;
pub mod connect;
pub mod error;
pub mod settings;
