//! Per-connection qlog files: one JSON-SEQ file (RFC 7464; `.sqlog`) per connection, which
//! quinn's transport events and quay's own HTTP/3, QPACK and WebTransport events share.
//!
//! This module owns where the files go ([`qlog_dir`]: the directory a builder was given, else the
//! `QLOGDIR` environment variable), how they are named (`<odcid>_server.sqlog` and
//! `<odcid>_client.sqlog`, the original destination connection ID in hex), the per-connection
//! transport configuration that hands quinn its end of the file ([`Acceptor`] on a server,
//! [`Connector`] on a client), and the writer both ends write through ([`Qlog`]), which keeps
//! every record whole. It does not decide which events a protocol logs; quay-h3 and
//! quay-webtransport do, through [`Qlog::emit`].
//!
//! The file's first record is the header quinn's qlog crate writes (`qlog_version` "0.3",
//! `qlog_format` "JSON-SEQ"); quinn's transport events follow that crate's names
//! (`transport:packet_sent`, ...). quay's events are written as draft-ietf-quic-qlog-main-schema
//! §6 describes an event (`time` in milliseconds since the file's reference time, `name`,
//! `data`, plus the `group_id` quinn also writes), with the names of
//! draft-ietf-quic-qlog-h3-events (`http3:`, `http:` for capsules) and quay's own namespaces
//! `quay-qpack:` and `quay-webtransport:` (documented in the crates that write them).
//!
//! Without the `qlog` cargo feature [`Qlog`] has no values: every event site is a check of an
//! `Option` that is always `None`.

use std::path::{Path, PathBuf};

/// The environment variable naming the directory qlog files go to when no builder named one
/// (the convention of quiche, ngtcp2 and quic-go).
pub const QLOGDIR: &str = "QLOGDIR";

/// Where a connection's qlog goes: `configured` if given, else `$QLOGDIR` if set and not empty,
/// else nowhere.
pub fn qlog_dir(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(dir) => Some(dir.to_path_buf()),
        None => std::env::var_os(QLOGDIR)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from),
    }
}

/// Which end of the connection a qlog file is written by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The endpoint that accepted the connection.
    Server,
    /// The endpoint that opened it.
    Client,
}

impl Role {
    /// `"server"` or `"client"`: the file name's suffix and the trace's vantage point.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }
}

/// The file name of a connection's qlog: `<odcid in hex>_<role>.sqlog`.
pub fn file_name(odcid: &[u8], role: Role) -> String {
    let mut name = hex(odcid);
    name.push('_');
    name.push_str(role.as_str());
    name.push_str(".sqlog");
    name
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, bytes: &[u8]) {
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2 + 13);
    push_hex(&mut out, bytes);
    out
}

/// The fields of one JSON object being written into a qlog record: each method adds one
/// member. Keys are trusted (they are the code's own); string values are escaped.
pub struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Fields<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    /// Adds `key: value` for an unsigned integer.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        use std::fmt::Write;
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// Adds `key: value` for a boolean.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// Adds `key: "value"`, escaping the string as JSON requires (RFC 8259 §7).
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        escape(self.out, value);
        self
    }

    /// Adds `key: "hex"`, the bytes in lowercase hex (qlog's `hexstring`).
    pub fn hex(&mut self, key: &str, value: &[u8]) -> &mut Self {
        self.key(key);
        self.out.push('"');
        push_hex(self.out, value);
        self.out.push('"');
        self
    }

    /// Adds `key: {...}`, an object whose members `fill` adds.
    pub fn object(&mut self, key: &str, fill: impl FnOnce(&mut Fields<'_>)) -> &mut Self {
        self.key(key);
        let mut inner = Fields::open(self.out);
        fill(&mut inner);
        inner.out.push('}');
        self
    }

    /// Adds `key: [{...}, ...]`, one object for each item, whose members `fill` adds.
    pub fn objects<T>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = T>,
        mut fill: impl FnMut(&mut Fields<'_>, T),
    ) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let mut inner = Fields::open(self.out);
            fill(&mut inner, item);
            inner.out.push('}');
        }
        self.out.push(']');
        self
    }
}

/// Writes `value` as a JSON string.
fn escape(out: &mut String, value: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(feature = "qlog")]
pub use enabled::{Acceptor, Connector, Qlog};

#[cfg(not(feature = "qlog"))]
pub use disabled::{Acceptor, Connector, Qlog};

#[cfg(feature = "qlog")]
mod enabled {
    use std::fmt;
    use std::fs::File;
    use std::io::{self, Write};
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Instant;

    use quinn::{ConnectError, Connecting, ConnectionError, Endpoint, Incoming};
    use quinn_proto::{ConnectionId, ConnectionIdGenerator, RandomConnectionIdGenerator};

    use super::{Fields, Role, file_name, hex};
    use crate::TransportOptions;

    /// One connection's qlog file. Cheap to clone; every clone (and quinn's end) writes to the
    /// same file, one whole record per write.
    #[derive(Clone)]
    pub struct Qlog {
        inner: Arc<Inner>,
    }

    struct Inner {
        path: PathBuf,
        /// The reference time of the file: event times are milliseconds since it.
        start: Instant,
        /// The original destination connection ID in hex, the events' `group_id` (as quinn's).
        group_id: String,
        out: Mutex<Out>,
    }

    struct Out {
        file: File,
        /// The record being written, kept to be reused.
        record: String,
    }

    impl fmt::Debug for Qlog {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Qlog")
                .field("path", &self.inner.path)
                .finish_non_exhaustive()
        }
    }

    impl Qlog {
        /// Creates (or truncates) `<dir>/<odcid>_<role>.sqlog`, creating `dir` if needed.
        pub fn create(dir: &Path, odcid: &[u8], role: Role) -> io::Result<Self> {
            std::fs::create_dir_all(dir)?;
            let path = dir.join(file_name(odcid, role));
            let file = File::create(&path)?;
            let group_id = hex(odcid);
            Ok(Self {
                inner: Arc::new(Inner {
                    path,
                    start: Instant::now(),
                    group_id,
                    out: Mutex::new(Out {
                        file,
                        record: String::new(),
                    }),
                }),
            })
        }

        /// The file's path.
        pub fn path(&self) -> &Path {
            &self.inner.path
        }

        /// Writes one event: `name` (`namespace:event_type`) at `now`, its `data` object's
        /// members added by `data`. A write that fails is dropped (the log is best effort).
        pub fn emit(&self, now: Instant, name: &str, data: impl FnOnce(&mut Fields<'_>)) {
            use std::fmt::Write as _;
            let mut out = self
                .inner
                .out
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Out { file, record } = &mut *out;
            record.clear();
            record.push('\u{1e}');
            let mut event = Fields::open(record);
            let millis = now
                .saturating_duration_since(self.inner.start)
                .as_secs_f64()
                * 1e3;
            event.key("time");
            let _ = write!(event.out, "{millis:.3}");
            event.str("name", name);
            event.str("group_id", &self.inner.group_id);
            event.object("data", data);
            record.push_str("}\n");
            let _ = file.write_all(record.as_bytes());
        }

        /// quinn's end of the file: a qlog stream that writes each of its records whole.
        fn transport_stream(&self, role: Role) -> Option<quinn_proto::QlogStream> {
            let mut config = quinn_proto::QlogConfig::default();
            config
                .writer(Box::new(TransportWriter {
                    qlog: self.clone(),
                    pending: Vec::new(),
                }))
                .title(Some(format!("quay {}", role.as_str())))
                .description(Some(format!("connection {}", self.inner.group_id)))
                .start_time(self.inner.start);
            config.into_stream()
        }
    }

    /// quinn's writer: gathers the pieces of a record (the qlog crate writes the separator,
    /// the JSON and the newline separately) and writes whole records, so quay's records never
    /// land inside one of quinn's.
    struct TransportWriter {
        qlog: Qlog,
        pending: Vec<u8>,
    }

    impl Write for TransportWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            // Serialized JSON has no raw newline: each one ends a record. The pending bytes
            // have none, so only the new ones are looked at.
            let ends_record = buf.contains(&b'\n');
            self.pending.extend_from_slice(buf);
            if ends_record && let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
                let mut out = self
                    .qlog
                    .inner
                    .out
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let written = out.file.write_all(&self.pending[..=end]);
                self.pending.drain(..=end);
                written?;
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Opens a qlog for a connection whose original destination connection ID is `odcid`, and
    /// a transport configuration from `options` that writes quinn's events to it. `None` (with
    /// a warning) if the file cannot be created: the connection goes on without a log.
    fn open(
        dir: &Path,
        odcid: &[u8],
        role: Role,
        options: &TransportOptions,
    ) -> Option<(Qlog, Arc<quinn::TransportConfig>)> {
        let qlog = match Qlog::create(dir, odcid, role) {
            Ok(qlog) => qlog,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot create a qlog file");
                return None;
            }
        };
        let mut transport = options.transport_config();
        transport.qlog_stream(qlog.transport_stream(role));
        Some((qlog, Arc::new(transport)))
    }

    /// What an [`Acceptor`] or a [`Connector`] keeps when it has a qlog directory.
    #[derive(Debug)]
    struct QlogParts<C> {
        dir: PathBuf,
        /// The QUIC configuration each connection's own is copied from (built only when
        /// there is a directory).
        config: C,
        /// What each connection's transport configuration is made from.
        options: TransportOptions,
    }

    impl<C> QlogParts<C> {
        fn new(
            dir: Option<PathBuf>,
            config: impl FnOnce() -> Result<C, crate::EndpointError>,
            options: &TransportOptions,
        ) -> Result<Option<Arc<Self>>, crate::EndpointError> {
            dir.map(|dir| {
                Ok(Arc::new(Self {
                    dir,
                    config: config()?,
                    options: options.clone(),
                }))
            })
            .transpose()
        }
    }

    /// Accepts a server's connections, each with a qlog file when the server has a qlog
    /// directory. Made by [`ServerBuilder::acceptor`](crate::ServerBuilder::acceptor); cheap to
    /// clone.
    #[derive(Clone, Debug)]
    pub struct Acceptor {
        qlog: Option<Arc<QlogParts<quinn::ServerConfig>>>,
    }

    impl Acceptor {
        pub(crate) fn new(
            dir: Option<PathBuf>,
            config: impl FnOnce() -> Result<quinn::ServerConfig, crate::EndpointError>,
            options: &TransportOptions,
        ) -> Result<Self, crate::EndpointError> {
            Ok(Self {
                qlog: QlogParts::new(dir, config, options)?,
            })
        }

        /// Accepts `incoming`: with a qlog directory, with a transport configuration of its own
        /// that logs to the connection's file, returned beside it.
        pub fn accept(
            &self,
            incoming: Incoming,
        ) -> Result<(Connecting, Option<Qlog>), ConnectionError> {
            let Some(parts) = &self.qlog else {
                return Ok((incoming.accept()?, None));
            };
            let QlogParts {
                dir,
                config,
                options,
            } = &**parts;
            let odcid = incoming.orig_dst_cid();
            match open(dir, &odcid, Role::Server, options) {
                Some((qlog, transport)) => {
                    let mut config = config.clone();
                    config.transport_config(transport);
                    Ok((incoming.accept_with(Arc::new(config))?, Some(qlog)))
                }
                None => Ok((incoming.accept()?, None)),
            }
        }
    }

    /// Opens a client's connections, each with a qlog file when the client has a qlog
    /// directory. Made by [`ClientBuilder::connector`](crate::ClientBuilder::connector); cheap
    /// to clone.
    #[derive(Clone, Debug)]
    pub struct Connector {
        qlog: Option<Arc<QlogParts<quinn::ClientConfig>>>,
    }

    impl Connector {
        pub(crate) fn new(
            dir: Option<PathBuf>,
            config: impl FnOnce() -> Result<quinn::ClientConfig, crate::EndpointError>,
            options: &TransportOptions,
        ) -> Result<Self, crate::EndpointError> {
            Ok(Self {
                qlog: QlogParts::new(dir, config, options)?,
            })
        }

        /// Connects `endpoint` to `addr` (TLS server name `server_name`): with a qlog
        /// directory, with a connection ID chosen here (so the file can be named by it) and a
        /// transport configuration that logs to the connection's file, returned beside it.
        pub fn connect(
            &self,
            endpoint: &Endpoint,
            addr: SocketAddr,
            server_name: &str,
        ) -> Result<(Connecting, Option<Qlog>), ConnectError> {
            let Some(parts) = &self.qlog else {
                return Ok((endpoint.connect(addr, server_name)?, None));
            };
            let QlogParts {
                dir,
                config,
                options,
            } = &**parts;
            // RFC 9000 §7.2: at least 8 unpredictable bytes; quinn's default length.
            let odcid: ConnectionId = RandomConnectionIdGenerator::new(20).generate_cid();
            match open(dir, &odcid, Role::Client, options) {
                Some((qlog, transport)) => {
                    let mut config = config.clone();
                    config.transport_config(transport);
                    config.initial_dst_cid_provider(Arc::new(move || odcid));
                    let connecting = endpoint.connect_with(config, addr, server_name)?;
                    Ok((connecting, Some(qlog)))
                }
                None => Ok((endpoint.connect(addr, server_name)?, None)),
            }
        }
    }
}

#[cfg(not(feature = "qlog"))]
mod disabled {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use quinn::{ConnectError, Connecting, ConnectionError, Endpoint, Incoming};

    use super::Fields;
    use crate::TransportOptions;

    /// One connection's qlog file; without the `qlog` feature there are none (this type has
    /// no values).
    #[derive(Clone, Debug)]
    pub enum Qlog {}

    impl Qlog {
        /// The file's path.
        pub fn path(&self) -> &Path {
            match *self {}
        }

        /// Writes one event (never called: there is no value to call it on).
        pub fn emit(&self, _now: Instant, _name: &str, _data: impl FnOnce(&mut Fields<'_>)) {
            match *self {}
        }
    }

    /// Accepts a server's connections; without the `qlog` feature, as `Incoming::accept`.
    #[derive(Clone, Debug)]
    pub struct Acceptor {}

    impl Acceptor {
        pub(crate) fn new(
            _dir: Option<PathBuf>,
            _config: impl FnOnce() -> Result<quinn::ServerConfig, crate::EndpointError>,
            _options: &TransportOptions,
        ) -> Result<Self, crate::EndpointError> {
            Ok(Self {})
        }

        /// Accepts `incoming`.
        pub fn accept(
            &self,
            incoming: Incoming,
        ) -> Result<(Connecting, Option<Qlog>), ConnectionError> {
            Ok((incoming.accept()?, None))
        }
    }

    /// Opens a client's connections; without the `qlog` feature, as `Endpoint::connect`.
    #[derive(Clone, Debug)]
    pub struct Connector {}

    impl Connector {
        pub(crate) fn new(
            _dir: Option<PathBuf>,
            _config: impl FnOnce() -> Result<quinn::ClientConfig, crate::EndpointError>,
            _options: &TransportOptions,
        ) -> Result<Self, crate::EndpointError> {
            Ok(Self {})
        }

        /// Connects `endpoint` to `addr` (TLS server name `server_name`).
        pub fn connect(
            &self,
            endpoint: &Endpoint,
            addr: SocketAddr,
            server_name: &str,
        ) -> Result<(Connecting, Option<Qlog>), ConnectError> {
            Ok((endpoint.connect(addr, server_name)?, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_hex_and_role() {
        assert_eq!(file_name(&[0x0a, 0xff], Role::Server), "0aff_server.sqlog");
        assert_eq!(file_name(&[], Role::Client), "_client.sqlog");
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        let mut fields = Fields::open(&mut out);
        fields.str("reason", "a\"b\\c\n\u{1}").u64("code", 7);
        fields.objects("list", [1u64, 2], |f, n| {
            f.u64("n", n);
        });
        out.push('}');
        assert_eq!(
            out,
            r#"{"reason":"a\"b\\c\n\u0001","code":7,"list":[{"n":1},{"n":2}]}"#
        );
    }
}
