//! Connection settings shared by HTTP/3 clients and servers.
//!
//! [`Config`] is plain data: what we announce in SETTINGS, the limits we enforce on the peer, and
//! the extension points that `quay-webtransport` uses (extra settings, unidirectional stream types
//! and bidirectional stream signals handed out by
//! [`Connection::accept_extension_stream`](crate::server::Connection::accept_extension_stream)).
//! It opens nothing and knows no WebTransport rule.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::proto::VarInt;

use crate::proto::frame::FrameType;
use crate::proto::settings::{SettingId, Settings};
use crate::proto::stream::StreamType;

/// Settings and limits of one HTTP/3 connection. Every default is documented on its field.
///
/// ```
/// use quay_h3::Config;
///
/// let mut config = Config::default();
/// config.enable_extended_connect = true;
/// config.enable_datagrams = true;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// SETTINGS_QPACK_MAX_TABLE_CAPACITY we announce: the dynamic table the peer's encoder may use
    /// (RFC 9204 §5). Also the largest table our encoder keeps. Default 4096.
    pub qpack_max_table_capacity: u64,
    /// SETTINGS_QPACK_BLOCKED_STREAMS we announce (RFC 9204 §5). Default 16.
    pub qpack_blocked_streams: u64,
    /// SETTINGS_MAX_FIELD_SECTION_SIZE we announce and enforce (RFC 9114 §4.2.2). Default 64 KiB.
    pub max_field_section_size: u64,
    /// The largest payload of a frame other than DATA (HEADERS, SETTINGS, ...) we accept; larger
    /// ones close the connection with H3_EXCESSIVE_LOAD. Default 80 KiB, a little over the field
    /// section limit.
    pub max_frame_payload: u64,
    /// The largest capsule we buffer on an Extended CONNECT stream. Default 64 KiB.
    pub max_capsule_size: u64,
    /// Servers: how many request streams the client may have open at once, set on the QUIC
    /// connection. `None` keeps the transport's value. Default `None`.
    pub max_concurrent_requests: Option<u32>,
    /// Announce and accept Extended CONNECT (RFC 9220): SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 on a
    /// server; on a client, allow sending requests with a `:protocol`. Default off.
    pub enable_extended_connect: bool,
    /// Announce and accept HTTP datagrams (RFC 9297): SETTINGS_H3_DATAGRAM = 1. QUIC datagrams
    /// must be on in the transport too. Default off.
    pub enable_datagrams: bool,
    /// More settings to announce, after ours (for instance WebTransport's). Default empty.
    pub extra_settings: Vec<(SettingId, VarInt)>,
    /// Unidirectional stream types that carry a session ID varint after the type and are handed
    /// out whole instead of being discarded (WebTransport: 0x54). Default empty.
    pub extension_uni_stream_types: Vec<StreamType>,
    /// Signals that, in place of the first frame type of a bidirectional stream, mark a stream
    /// that carries a session ID varint and is handed out whole (WebTransport: 0x41). Default
    /// empty.
    pub extension_bidi_signals: Vec<FrameType>,
    /// Servers: how long a request stream may take, from its opening, to deliver a complete
    /// request head (or an extension's signal and session ID). A stream still without one is
    /// reset with H3_REQUEST_INCOMPLETE (RFC 9114 §4.1.2), so a peer cannot hold its streams
    /// open with a few bytes each for ever. Extensions that also wait for the client's SETTINGS
    /// before a request (WebTransport's drafts) keep to the same bound. Default 10 s.
    pub request_head_timeout: Duration,
    /// Send reserved (GREASE) settings and frames, so peers that choke on unknown values are found
    /// early (RFC 9114 §7.2.4.1, §7.2.8), and on one connection in eight a stream of a reserved
    /// type (§6.2.3). Default on.
    pub grease: bool,
    /// What the connections made with this config, or with a clone of it, keep of it: made by
    /// the first, shared by the others whose fields still match (see
    /// [`Config::connection_config`]).
    pub(crate) connection: Arc<OnceLock<Arc<ConnectionConfig>>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            qpack_max_table_capacity: 4096,
            qpack_blocked_streams: 16,
            max_field_section_size: 64 * 1024,
            max_frame_payload: 80 * 1024,
            max_capsule_size: 64 * 1024,
            max_concurrent_requests: None,
            enable_extended_connect: false,
            enable_datagrams: false,
            extra_settings: Vec::new(),
            extension_uni_stream_types: Vec::new(),
            extension_bidi_signals: Vec::new(),
            request_head_timeout: Duration::from_secs(10),
            grease: true,
            connection: Arc::default(),
        }
    }
}

/// Chainable setters, one per field, so that a config (`#[non_exhaustive]`, so no struct
/// literal outside this crate) can be written as one expression:
/// `Config::default().with_enable_datagrams(true).with_grease(false)`.
impl Config {
    with_setters! {
        with_qpack_max_table_capacity => qpack_max_table_capacity: u64,
        with_qpack_blocked_streams => qpack_blocked_streams: u64,
        with_max_field_section_size => max_field_section_size: u64,
        with_max_frame_payload => max_frame_payload: u64,
        with_max_capsule_size => max_capsule_size: u64,
        with_max_concurrent_requests => max_concurrent_requests: Option<u32>,
        with_enable_extended_connect => enable_extended_connect: bool,
        with_enable_datagrams => enable_datagrams: bool,
        with_extra_settings => extra_settings: Vec<(SettingId, VarInt)>,
        with_extension_uni_stream_types => extension_uni_stream_types: Vec<StreamType>,
        with_extension_bidi_signals => extension_bidi_signals: Vec<FrameType>,
        with_request_head_timeout => request_head_timeout: Duration,
        with_grease => grease: bool,
    }
}

impl Config {
    /// The SETTINGS we announce, with a GREASE setting derived from `grease_seed` when
    /// [`Config::grease`] is on. Entries that break the SETTINGS rules (duplicates, HTTP/2
    /// identifiers) in [`Config::extra_settings`] are left out.
    pub fn settings(&self, grease_seed: u64) -> Settings {
        let flag = |on: bool, id: SettingId| on.then_some((id, 1));
        let known = [
            Some((
                SettingId::QPACK_MAX_TABLE_CAPACITY,
                self.qpack_max_table_capacity,
            )),
            Some((SettingId::QPACK_BLOCKED_STREAMS, self.qpack_blocked_streams)),
            Some((
                SettingId::MAX_FIELD_SECTION_SIZE,
                self.max_field_section_size,
            )),
            flag(
                self.enable_extended_connect,
                SettingId::ENABLE_CONNECT_PROTOCOL,
            ),
            flag(self.enable_datagrams, SettingId::H3_DATAGRAM),
        ];
        let extra = self
            .extra_settings
            .iter()
            .map(|&(id, value)| (id, value.into_inner()));
        // RFC 9114 §7.2.4.1: reserved identifiers with any value must be ignored.
        let grease = self.grease.then(|| {
            (
                SettingId::grease(grease_seed % 1000),
                u64::from(grease_seed as u32 & 0xffff),
            )
        });
        // Only duplicates, HTTP/2 identifiers and values past 2^62 fail, and those are dropped
        // on purpose.
        Settings::from_entries_lossy(
            known
                .into_iter()
                .flatten()
                .chain(extra)
                .chain(grease)
                .filter_map(|(id, value)| Some((id, VarInt::from_u64(value).ok()?))),
        )
    }
}

/// The part of a [`Config`] that a connection reads after it started: the rest has gone into
/// our SETTINGS and the QPACK state by then, and is not kept for the connection's life. Shared
/// by the connections of one config (see [`Config::connection_config`]).
#[derive(Debug)]
pub(crate) struct ConnectionConfig {
    /// [`Config::max_frame_payload`].
    pub(crate) max_frame_payload: u64,
    /// [`Config::max_capsule_size`].
    pub(crate) max_capsule_size: u64,
    /// [`Config::enable_extended_connect`].
    pub(crate) enable_extended_connect: bool,
    /// [`Config::enable_datagrams`].
    pub(crate) enable_datagrams: bool,
    /// [`Config::extension_uni_stream_types`].
    pub(crate) extension_uni_stream_types: Arc<[StreamType]>,
    /// [`Config::extension_bidi_signals`].
    pub(crate) extension_bidi_signals: Arc<[FrameType]>,
    /// [`Config::request_head_timeout`].
    pub(crate) request_head_timeout: Duration,
}

impl ConnectionConfig {
    fn new(config: &Config) -> Self {
        Self {
            max_frame_payload: config.max_frame_payload,
            max_capsule_size: config.max_capsule_size,
            enable_extended_connect: config.enable_extended_connect,
            enable_datagrams: config.enable_datagrams,
            extension_uni_stream_types: config.extension_uni_stream_types.as_slice().into(),
            extension_bidi_signals: config.extension_bidi_signals.as_slice().into(),
            request_head_timeout: config.request_head_timeout,
        }
    }

    /// Whether this is what `config` says now.
    fn matches(&self, config: &Config) -> bool {
        self.max_frame_payload == config.max_frame_payload
            && self.max_capsule_size == config.max_capsule_size
            && self.enable_extended_connect == config.enable_extended_connect
            && self.enable_datagrams == config.enable_datagrams
            && self.extension_uni_stream_types[..] == config.extension_uni_stream_types[..]
            && self.extension_bidi_signals[..] == config.extension_bidi_signals[..]
            && self.request_head_timeout == config.request_head_timeout
    }
}

impl Config {
    /// What a connection made with this config keeps of it. The first connection of a config
    /// (or of its clones) makes it, and the others share it, rather than keep a copy each
    /// (72 bytes, and two allocations, a connection); a clone whose fields were changed since
    /// gets its own.
    pub(crate) fn connection_config(&self) -> Arc<ConnectionConfig> {
        match self.connection.get() {
            Some(shared) if shared.matches(self) => shared.clone(),
            Some(_) => Arc::new(ConnectionConfig::new(self)),
            None => self
                .connection
                .get_or_init(|| Arc::new(ConnectionConfig::new(self)))
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings() {
        let config = Config {
            grease: false,
            ..Config::default()
        };
        let settings = config.settings(0);
        assert_eq!(settings.qpack_max_table_capacity(), 4096);
        assert_eq!(settings.qpack_blocked_streams(), 16);
        assert_eq!(settings.max_field_section_size(), Some(64 * 1024));
        assert!(!settings.enable_connect_protocol());
        assert!(!settings.h3_datagram());
        assert_eq!(settings.len(), 3);
    }

    #[test]
    fn grease_and_extras() {
        let mut config = Config {
            enable_extended_connect: true,
            enable_datagrams: true,
            ..Config::default()
        };
        config
            .extra_settings
            .push((SettingId::WT_MAX_SESSIONS, VarInt::from_u32(16)));
        // A duplicate is dropped rather than breaking SETTINGS.
        config
            .extra_settings
            .push((SettingId::H3_DATAGRAM, VarInt::from_u32(1)));
        let settings = config.settings(7);
        assert!(settings.enable_connect_protocol());
        assert!(settings.h3_datagram());
        assert_eq!(
            settings.get(SettingId::WT_MAX_SESSIONS),
            Some(VarInt::from_u32(16))
        );
        assert_eq!(settings.iter().filter(|(id, _)| id.is_grease()).count(), 1);
    }

    #[test]
    fn connections_of_one_config_share_what_they_keep_of_it() {
        let config =
            Config::default().with_extension_uni_stream_types(vec![StreamType::WEBTRANSPORT]);
        let first = config.connection_config();
        assert!(Arc::ptr_eq(&first, &config.clone().connection_config()));
        // A clone changed after the first connection gets its own, as it says.
        let changed = config.clone().with_max_frame_payload(1000);
        let own = changed.connection_config();
        assert!(!Arc::ptr_eq(&first, &own));
        assert_eq!(own.max_frame_payload, 1000);
        assert_eq!(first.max_frame_payload, Config::default().max_frame_payload);
        assert_eq!(
            &own.extension_uni_stream_types[..],
            [StreamType::WEBTRANSPORT]
        );
    }
}
