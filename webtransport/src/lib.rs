//! WebTransport over HTTP/3 for quay (draft-ietf-webtrans-http3, draft-02 to draft-16).
//!
//! [`proto`] holds the pure parts: error-code mapping, WebTransport capsules, the settings that
//! announce each draft, and CONNECT negotiation. Sessions, the server and the client (on top of
//! `quay-h3`) are not written yet; see the README's feature table.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[doc(hidden)]
pub mod fuzzing;
pub mod proto;
