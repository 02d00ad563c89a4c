//! The pure core of WebTransport over HTTP/3: the rules of one session
//! ([`session::SessionCore`]) and of the sessions of one connection
//! ([`table::SessionTable`]), with no tokio, no quinn and no clock.
//!
//! Both take inputs through `handle_*` methods and give outputs through `poll_*` methods, as
//! quinn-proto's `Connection` does; each documents its call order. The glue (`crate::state`,
//! `crate::routes`, the CONNECT stream's reader) holds them behind a lock, feeds them what the
//! network and the application did, and carries out what they ask for. Tests drive them
//! directly, with no network, task or timer.
//!
//! Not here: how capsules are framed (`quay_h3::proto::capsule`), what a WebTransport capsule
//! means on the wire ([`crate::proto::capsule`]), the counting of flow control
//! (`crate::flow`, which the session core drives), and establishing a session
//! ([`crate::server`], [`crate::client`]).

pub(crate) mod session;
pub(crate) mod table;
