//! Which WebTransport drafts a peer speaks, and the HTTP/3 SETTINGS that announce ours.
//!
//! Browsers and libraries in use today speak different drafts: Chromium negotiates draft-02,
//! Safari the draft-13 setting, current libraries draft-15/16 (DESIGN.md, "Wire facts"). A
//! server announces every one of them so each peer finds the setting it looks for; a peer's
//! SETTINGS tell which draft it speaks. This module only builds and reads setting lists; the
//! h3 layer sends and receives them.

use quay_h3::proto::VarInt;
use quay_h3::proto::settings::{SettingId, Settings};

/// A family of WebTransport drafts that share their wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Draft {
    /// draft-02: SETTINGS_ENABLE_WEBTRANSPORT; what Chromium negotiates by default.
    Draft02,
    /// draft-07 to draft-12: SETTINGS_WEBTRANSPORT_MAX_SESSIONS.
    Draft07,
    /// draft-13 and draft-14: SETTINGS_WT_MAX_SESSIONS (Safari).
    Draft13,
    /// draft-15 and draft-16: SETTINGS_WT_ENABLED and the `webtransport-h3` token.
    Draft15,
}

impl Draft {
    /// The newest draft whose setting the peer sent, or `None` if it announced no WebTransport
    /// support at all.
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let enabled = |id| settings.get(id).is_some_and(|value| value.into_inner() > 0);
        if enabled(SettingId::WT_ENABLED) {
            Some(Self::Draft15)
        } else if enabled(SettingId::WT_MAX_SESSIONS) {
            Some(Self::Draft13)
        } else if enabled(SettingId::WEBTRANSPORT_MAX_SESSIONS) {
            Some(Self::Draft07)
        } else if enabled(SettingId::ENABLE_WEBTRANSPORT) {
            Some(Self::Draft02)
        } else {
            None
        }
    }
}

/// The draft a client speaks, if its SETTINGS hold what WebTransport requires of a client
/// (draft-16 §3.1): SETTINGS_H3_DATAGRAM = 1 (RFC 9297, or the draft-04 identifier that
/// Chromium and Firefox send beside it) and a WebTransport setting of some draft (draft-02's
/// SETTINGS_ENABLE_WEBTRANSPORT, a session count of drafts 07..14, or draft-15/16's
/// SETTINGS_WT_ENABLED). `Err` names what is missing; a server then treats every session of
/// that connection as malformed.
pub fn client_draft(settings: &Settings) -> Result<Draft, &'static str> {
    if !settings.h3_datagram() {
        return Err("the client's SETTINGS lack SETTINGS_H3_DATAGRAM = 1");
    }
    Draft::from_settings(settings).ok_or("the client's SETTINGS announce no WebTransport draft")
}

/// Initial flow-control limits of a session (draft-16 §5.5), announced in SETTINGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FlowControlLimits {
    /// SETTINGS_WT_INITIAL_MAX_DATA: bytes the peer may send on a session's streams.
    pub max_data: u64,
    /// SETTINGS_WT_INITIAL_MAX_STREAMS_UNI: unidirectional streams the peer may open per session.
    pub max_streams_uni: u64,
    /// SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI: bidirectional streams the peer may open per session.
    pub max_streams_bidi: u64,
}

impl FlowControlLimits {
    /// The limits the peer announced, or `None` if it announced none other than 0: flow
    /// control is then off (draft-16 §5.1).
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let value = |id| settings.get(id).map(VarInt::into_inner);
        let limits = [
            value(SettingId::WT_INITIAL_MAX_DATA),
            value(SettingId::WT_INITIAL_MAX_STREAMS_UNI),
            value(SettingId::WT_INITIAL_MAX_STREAMS_BIDI),
        ];
        if limits.iter().all(|limit| limit.unwrap_or(0) == 0) {
            return None;
        }
        let [max_data, max_streams_uni, max_streams_bidi] = limits.map(Option::unwrap_or_default);
        Some(Self {
            max_data,
            max_streams_uni,
            max_streams_bidi,
        })
    }
}

/// The session count the peer announced (WT_MAX_SESSIONS of drafts 07..14, or the older
/// WEBTRANSPORT_MAX_SESSIONS; the larger if both), if any. Draft-16 has no such setting: there,
/// several sessions on one connection need flow control (§5.1), and without either an endpoint
/// takes one session.
pub fn announced_session_count(settings: &Settings) -> Option<u64> {
    let count = |id| settings.get(id).map(VarInt::into_inner);
    count(SettingId::WT_MAX_SESSIONS).max(count(SettingId::WEBTRANSPORT_MAX_SESSIONS))
}

/// The settings a WebTransport endpoint adds to HTTP/3's, for every draft at once: extended
/// CONNECT, HTTP datagrams (RFC 9297 and the old draft-04 id Chromium still sends), and each
/// draft's WebTransport setting with `max_sessions` where the draft carries a count.
///
/// `flow_control` adds the draft-16 initial limits; without it the settings say nothing about
/// flow control and sessions run without it.
pub fn local_settings(
    max_sessions: u32,
    flow_control: Option<FlowControlLimits>,
) -> Vec<(SettingId, VarInt)> {
    let one = VarInt::from_u32(1);
    let sessions = VarInt::from_u32(max_sessions);
    let mut settings = vec![
        (SettingId::ENABLE_CONNECT_PROTOCOL, one),
        (SettingId::H3_DATAGRAM, one),
        (SettingId::H3_DATAGRAM_DRAFT04, one),
        (SettingId::ENABLE_WEBTRANSPORT, one),
        (SettingId::WEBTRANSPORT_MAX_SESSIONS, sessions),
        (SettingId::WT_MAX_SESSIONS, sessions),
        (SettingId::WT_ENABLED, one),
    ];
    if let Some(limits) = flow_control {
        let varint = |value: u64| VarInt::from_u64(value).unwrap_or(VarInt::MAX);
        settings.extend([
            (SettingId::WT_INITIAL_MAX_DATA, varint(limits.max_data)),
            (
                SettingId::WT_INITIAL_MAX_STREAMS_UNI,
                varint(limits.max_streams_uni),
            ),
            (
                SettingId::WT_INITIAL_MAX_STREAMS_BIDI,
                varint(limits.max_streams_bidi),
            ),
        ]);
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(SettingId, u32)]) -> Settings {
        let mut settings = Settings::new();
        for &(id, value) in pairs {
            settings.insert(id, VarInt::from_u32(value)).unwrap();
        }
        settings
    }

    #[test]
    fn draft_from_each_setting() {
        let chromium = settings(&[
            (SettingId::H3_DATAGRAM, 1),
            (SettingId::ENABLE_WEBTRANSPORT, 1),
        ]);
        assert_eq!(Draft::from_settings(&chromium), Some(Draft::Draft02));
        let draft07 = settings(&[(SettingId::WEBTRANSPORT_MAX_SESSIONS, 16)]);
        assert_eq!(Draft::from_settings(&draft07), Some(Draft::Draft07));
        let safari = settings(&[(SettingId::WT_MAX_SESSIONS, 1)]);
        assert_eq!(Draft::from_settings(&safari), Some(Draft::Draft13));
        let all = settings(&[
            (SettingId::ENABLE_WEBTRANSPORT, 1),
            (SettingId::WT_MAX_SESSIONS, 1),
            (SettingId::WT_ENABLED, 1),
        ]);
        assert_eq!(
            Draft::from_settings(&all),
            Some(Draft::Draft15),
            "the newest wins"
        );
        let off = settings(&[(SettingId::WT_ENABLED, 0), (SettingId::H3_DATAGRAM, 1)]);
        assert_eq!(Draft::from_settings(&off), None);
    }

    #[test]
    fn local_settings_cover_every_draft() {
        let mut all = Settings::new();
        for (id, value) in local_settings(16, None) {
            all.insert(id, value).unwrap();
        }
        assert_eq!(Draft::from_settings(&all), Some(Draft::Draft15));
        assert!(all.enable_connect_protocol() && all.h3_datagram());
        for id in [
            SettingId::ENABLE_WEBTRANSPORT,
            SettingId::H3_DATAGRAM_DRAFT04,
            SettingId::WT_ENABLED,
        ] {
            assert_eq!(all.get(id), Some(VarInt::from_u32(1)), "{id:?}");
        }
        for id in [
            SettingId::WEBTRANSPORT_MAX_SESSIONS,
            SettingId::WT_MAX_SESSIONS,
        ] {
            assert_eq!(all.get(id), Some(VarInt::from_u32(16)), "{id:?}");
        }
        assert_eq!(FlowControlLimits::from_settings(&all), None);
    }

    // draft-16 §3.1: a client sends SETTINGS_H3_DATAGRAM and its draft's WebTransport setting.
    #[test]
    fn what_a_client_must_announce() {
        let chromium = settings(&[
            (SettingId::H3_DATAGRAM, 1),
            (SettingId::H3_DATAGRAM_DRAFT04, 1),
            (SettingId::ENABLE_WEBTRANSPORT, 1),
        ]);
        assert_eq!(client_draft(&chromium), Ok(Draft::Draft02));
        let old_datagram_id = settings(&[
            (SettingId::H3_DATAGRAM_DRAFT04, 1),
            (SettingId::WT_MAX_SESSIONS, 1),
        ]);
        assert_eq!(client_draft(&old_datagram_id), Ok(Draft::Draft13));
        let draft16 = settings(&[(SettingId::H3_DATAGRAM, 1), (SettingId::WT_ENABLED, 1)]);
        assert_eq!(client_draft(&draft16), Ok(Draft::Draft15));
        let no_datagrams = settings(&[(SettingId::WT_ENABLED, 1)]);
        assert!(client_draft(&no_datagrams).is_err());
        let datagrams_off = settings(&[(SettingId::H3_DATAGRAM, 0), (SettingId::WT_ENABLED, 1)]);
        assert!(client_draft(&datagrams_off).is_err());
        let no_webtransport = settings(&[(SettingId::H3_DATAGRAM, 1)]);
        assert!(client_draft(&no_webtransport).is_err());
    }

    #[test]
    fn session_counts_of_each_draft() {
        let draft14 = settings(&[(SettingId::WT_MAX_SESSIONS, 4)]);
        assert_eq!(announced_session_count(&draft14), Some(4));
        let both = settings(&[
            (SettingId::WT_MAX_SESSIONS, 4),
            (SettingId::WEBTRANSPORT_MAX_SESSIONS, 9),
        ]);
        assert_eq!(announced_session_count(&both), Some(9));
        let draft16 = settings(&[(SettingId::WT_ENABLED, 1)]);
        assert_eq!(announced_session_count(&draft16), None);
    }

    #[test]
    fn flow_control_limits_round_trip() {
        let limits = FlowControlLimits {
            max_data: 1 << 20,
            max_streams_uni: 10,
            max_streams_bidi: 100,
        };
        let mut all = Settings::new();
        for (id, value) in local_settings(1, Some(limits)) {
            all.insert(id, value).unwrap();
        }
        assert_eq!(FlowControlLimits::from_settings(&all), Some(limits));
        let partial = settings(&[(SettingId::WT_INITIAL_MAX_STREAMS_BIDI, 4)]);
        assert_eq!(
            FlowControlLimits::from_settings(&partial),
            Some(FlowControlLimits {
                max_streams_bidi: 4,
                ..FlowControlLimits::default()
            })
        );
        let zeros = settings(&[
            (SettingId::WT_INITIAL_MAX_DATA, 0),
            (SettingId::WT_INITIAL_MAX_STREAMS_BIDI, 0),
        ]);
        assert_eq!(FlowControlLimits::from_settings(&zeros), None, "0 is off");
    }
}
