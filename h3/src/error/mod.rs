//! Errors: the wire's error codes and the errors the async API returns.
//!
//! [`Code`] is the application error code carried by QUIC `CONNECTION_CLOSE`, `RESET_STREAM` and
//! `STOP_SENDING` (RFC 9114 §8.1, RFC 9204 §6, RFC 9297 §5.2); [`ConnectionError`] says why a
//! connection ended and [`StreamError`] why an operation on one request stream failed. Which
//! code a given failure gets is decided where the failure is found (each decoder's error enum
//! has one exhaustive `From<…> for Code`), not here.

mod api;
mod code;

pub use api::{ConnectionError, Feature, Misuse, StreamError};
pub use code::Code;
