//! What a WebTransport endpoint announces and enforces: [`Config`].
//!
//! This module turns WebTransport's needs into a `quay_h3::Config` (Extended CONNECT, HTTP
//! datagrams, the SETTINGS of every draft, the 0x54 stream type and the 0x41 signal). It opens
//! nothing.

use quay_h3::proto::frame::FrameType;
use quay_h3::proto::stream::StreamType;

use crate::proto::settings::local_settings;

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
    /// requests with H3_REQUEST_REJECTED. Default 16, Chromium's own limit.
    pub max_sessions: u32,
    /// How many streams of the peer may wait, per connection, for a session that is not accepted
    /// yet (they can arrive before their CONNECT request, draft-16 §4.6). Further ones are refused
    /// with WT_BUFFERED_STREAM_REJECTED. Default 32.
    pub max_buffered_streams: usize,
    /// How many sessions or plain HTTP/3 requests wait for `accept` before new ones are refused
    /// (503 for requests, H3_REQUEST_REJECTED for sessions). Default 64.
    pub accept_queue: usize,
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
            h3: quay_h3::Config::default(),
        }
    }
}

impl Config {
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
        for (id, value) in local_settings(self.max_sessions.max(1), None) {
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
