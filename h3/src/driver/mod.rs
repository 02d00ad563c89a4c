//! The async glue of one connection: a lock, wakers and quinn calls around the pure
//! [`ConnectionState`](crate::connection::ConnectionState).
//!
//! - [`shared`]: [`Shared`](shared::Shared), the state request streams, handles and the connection's task share,
//!   and the connection-wide operations (errors, QPACK waits, the connection's end);
//! - [`task`]: the connection's one task, which reads the peer's control and QPACK streams,
//!   writes ours, and sorts the peer's new streams;
//! - [`datagrams`] and [`routes`]: HTTP datagrams, read by whoever waits for one and routed by
//!   stream;
//! - [`extensions`]: streams claimed by an extension, handed out or refused;
//! - [`prefix`]: reading the type or signal a peer's stream starts with;
//! - [`grease`]: the GREASE stream one connection in eight opens.
//!
//! Any connection error closes the QUIC connection with its code.

pub(crate) mod datagrams;
pub(crate) mod extensions;
mod grease;
mod handler;
pub(crate) mod prefix;
pub(crate) mod routes;
pub(crate) mod shared;
pub(crate) mod task;
