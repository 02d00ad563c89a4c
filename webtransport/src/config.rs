//! What a WebTransport endpoint announces and enforces: [`Config`].
//!
//! This module turns WebTransport's needs into a `quay_h3::Config` (Extended CONNECT, HTTP
//! datagrams, the SETTINGS of every draft, the 0x54 stream type and the 0x41 signal). It opens
//! nothing.

use quay_h3::proto::frame::FrameType;
use quay_h3::proto::stream::StreamType;

use crate::proto::settings::{FlowControlLimits, local_settings};

/// Settings and limits of WebTransport on one connection. Every default is documented on its
/// field.
///
/// ```
/// let mut config = quay_webtransport::Config::default();
/// config.max_sessions = 4;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// How many sessions the peer may have open on one connection at once, announced in
    /// SETTINGS (draft-07..14 and Safari's draft-13 setting). A server refuses further CONNECT
    /// requests with H3_REQUEST_REJECTED. A client that announces no session count of its own
    /// (draft-02 Chromium, which does not pool sessions; draft-16, where pooling needs flow
    /// control) gets one session per connection unless flow control is on (draft-16 §5.1).
    /// Default 16, Chromium's own limit.
    pub max_sessions: u32,
    /// How many streams of the peer may wait, per connection, for a session that is not accepted
    /// yet (they can arrive before their CONNECT request, draft-16 §4.6). Further ones are refused
    /// with WT_BUFFERED_STREAM_REJECTED. Default 32.
    pub max_buffered_streams: usize,
    /// How many sessions or plain HTTP/3 requests wait for `accept` before new ones are refused
    /// (503 for requests, H3_REQUEST_REJECTED for sessions). Default 64.
    pub accept_queue: usize,
    /// Draft-16 session flow control (draft-16 §5): `Some(limits)` announces them as the initial
    /// limits in SETTINGS. When the peer announces limits too, both sides' are enforced on every
    /// session: the peer may open as many streams as the application accepted plus these, and
    /// send as many bytes as it read plus `max_data` (credit goes out as WT_MAX_STREAMS and
    /// WT_MAX_DATA capsules); our own streams and writes wait for the peer's credit. A peer
    /// past a limit ends the session with WT_FLOW_CONTROL_ERROR. A limit of 0 makes the first
    /// session capsule announce a default window (100 streams, 16 MiB). `None`: nothing is
    /// announced, and the peer's flow-control capsules are ignored.
    ///
    /// Default [`Config::DEFAULT_FLOW_CONTROL`]: offered to every peer, and on only with a peer
    /// that announces limits of its own (draft-16 §5.1). Chromium, Firefox and the drafts before
    /// -13 announce none, so with them it stays off; Safari is reported to refuse a server that
    /// allows several sessions without these settings, and to send no stream data before it has
    /// WT_MAX_DATA credit, so a server must offer them to work with it.
    pub flow_control: Option<FlowControlLimits>,
    /// The HTTP/3 layer underneath; [`Config::h3_config`] adds what WebTransport needs.
    /// Default: `quay_h3::Config::default()`.
    pub h3: quay_h3::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_sessions: 16,
            max_buffered_streams: 32,
            accept_queue: 64,
            flow_control: Some(Self::DEFAULT_FLOW_CONTROL),
            h3: quay_h3::Config::default(),
        }
    }
}

impl Config {
    /// The flow-control limits offered by default (draft-16 §5.5): 16 MiB of stream data and 100
    /// streams of each kind per session, as windows that move as the application reads and
    /// accepts.
    pub const DEFAULT_FLOW_CONTROL: FlowControlLimits = FlowControlLimits {
        max_data: 16 * 1024 * 1024,
        max_streams_uni: 100,
        max_streams_bidi: 100,
    };

    /// Sets [`Config::max_sessions`]. The `with_*` setters let a config (`#[non_exhaustive]`,
    /// so no struct literal outside this crate) be written as one expression:
    /// `Config::default().with_max_sessions(4).with_flow_control(None)`.
    #[must_use]
    pub fn with_max_sessions(mut self, value: u32) -> Self {
        self.max_sessions = value;
        self
    }

    /// Sets [`Config::max_buffered_streams`].
    #[must_use]
    pub fn with_max_buffered_streams(mut self, value: usize) -> Self {
        self.max_buffered_streams = value;
        self
    }

    /// Sets [`Config::accept_queue`].
    #[must_use]
    pub fn with_accept_queue(mut self, value: usize) -> Self {
        self.accept_queue = value;
        self
    }

    /// Sets [`Config::flow_control`].
    #[must_use]
    pub fn with_flow_control(mut self, value: Option<FlowControlLimits>) -> Self {
        self.flow_control = value;
        self
    }

    /// Sets [`Config::h3`].
    #[must_use]
    pub fn with_h3(mut self, value: quay_h3::Config) -> Self {
        self.h3 = value;
        self
    }

    /// The HTTP/3 configuration of a connection that carries WebTransport: [`Config::h3`] with
    /// Extended CONNECT and HTTP datagrams on, the WebTransport SETTINGS of every draft added
    /// (see DESIGN.md), and WebTransport streams handed to this crate.
    ///
    /// Use it for a `quay_h3::server::Connection` that [`crate::server::Connection`] then
    /// wraps, so HTTP/3 requests and sessions share one connection.
    pub fn h3_config(&self) -> quay_h3::Config {
        let mut h3 = self.h3.clone();
        h3.enable_extended_connect = true;
        h3.enable_datagrams = true;
        for (id, value) in local_settings(self.max_sessions.max(1), self.flow_control) {
            if !h3.extra_settings.iter().any(|(known, _)| *known == id) {
                h3.extra_settings.push((id, value));
            }
        }
        if !h3
            .extension_uni_stream_types
            .contains(&StreamType::WEBTRANSPORT)
        {
            h3.extension_uni_stream_types.push(StreamType::WEBTRANSPORT);
        }
        if !h3
            .extension_bidi_signals
            .contains(&FrameType::WEBTRANSPORT_STREAM)
        {
            h3.extension_bidi_signals
                .push(FrameType::WEBTRANSPORT_STREAM);
        }
        h3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_one_expression() {
        let config = Config::default()
            .with_max_sessions(4)
            .with_flow_control(None)
            .with_h3(quay_h3::Config::default().with_grease(false));
        assert_eq!(config.max_sessions, 4);
        assert!(config.flow_control.is_none());
        assert!(!config.h3.grease);
        assert!(config.h3_config().enable_datagrams);
    }
}
