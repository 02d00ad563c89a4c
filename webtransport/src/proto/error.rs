//! WebTransport error codes and the mapping between application codes and HTTP/3 codes.
//!
//! WebTransport applications reset streams with 32-bit codes; on the wire these live in a range
//! of the HTTP/3 error code space, skipping the reserved `0x1f * N + 0x21` code points
//! (draft-ietf-webtrans-http3-16 §4.4). This module owns that mapping and the protocol-level
//! codes (`WT_SESSION_GONE`, ...). It does not reset streams; the session does.

use quay_h3::error::Code;
use quay_h3::proto::VarInt;

/// The HTTP/3 code of application error 0.
const FIRST: u64 = 0x52e4_a40f_a8db;
/// The HTTP/3 code of application error `u32::MAX`.
const LAST: u64 = 0x52e5_ac98_3162;

/// A stream was refused because its session was not accepted in time, or too many streams were
/// waiting for it (draft-16 §4.6).
pub const WT_BUFFERED_STREAM_REJECTED: Code = Code::from_u32(0x3994_bd84);
/// The stream's session is gone (closed, or never existed) (draft-16 §6).
pub const WT_SESSION_GONE: Code = Code::from_u32(0x170d_7b68);
/// A flow-control limit of the session was broken (draft-16 §5).
pub const WT_FLOW_CONTROL_ERROR: Code = Code::from_u32(0x045d_4487);
/// Application protocol negotiation failed (draft-16 §3.3).
pub const WT_ALPN_ERROR: Code = Code::from_u32(0x0817_b3dd);
/// The peer's settings or transport parameters do not allow WebTransport (draft-16 §3.1).
pub const WT_REQUIREMENTS_NOT_MET: Code = Code::from_u32(0x212c_0d48);

/// The HTTP/3 error code that carries WebTransport application error `code` (draft-16 §4.4).
pub fn app_code_to_h3(code: u32) -> VarInt {
    let code = u64::from(code);
    let h3 = FIRST + code + code / 0x1e;
    // The largest result is LAST, below 2^62.
    VarInt::from_u64(h3).unwrap_or(VarInt::MAX)
}

/// The WebTransport application error code carried by HTTP/3 code `h3`, or `None` when `h3` is
/// outside the WebTransport range or one of the reserved code points inside it (draft-16 §4.4:
/// such a reset has no application code).
pub fn h3_code_to_app(h3: VarInt) -> Option<u32> {
    let h3 = h3.into_inner();
    if !(FIRST..=LAST).contains(&h3) || (h3 - 0x21).is_multiple_of(0x1f) {
        return None;
    }
    let shifted = h3 - FIRST;
    u32::try_from(shifted - shifted / 0x1f).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn range_ends() {
        // draft-16 §4.4: 0 maps to the first code, u32::MAX to the last.
        assert_eq!(app_code_to_h3(0).into_inner(), FIRST);
        assert_eq!(app_code_to_h3(u32::MAX).into_inner(), LAST);
        assert_eq!(h3_code_to_app(VarInt::from_u64(FIRST).unwrap()), Some(0));
        assert_eq!(
            h3_code_to_app(VarInt::from_u64(LAST).unwrap()),
            Some(u32::MAX)
        );
        assert_eq!(h3_code_to_app(VarInt::from_u64(FIRST - 1).unwrap()), None);
        assert_eq!(h3_code_to_app(VarInt::from_u64(LAST + 1).unwrap()), None);
        assert_eq!(h3_code_to_app(Code::H3_NO_ERROR.to_varint()), None);
    }

    #[test]
    fn reserved_code_points_are_skipped() {
        // The first reserved code point at or after FIRST, and the codes on either side of it.
        let reserved = (FIRST..).find(|h| (h - 0x21).is_multiple_of(0x1f)).unwrap();
        assert_eq!(h3_code_to_app(VarInt::from_u64(reserved).unwrap()), None);
        let before = h3_code_to_app(VarInt::from_u64(reserved - 1).unwrap()).unwrap();
        let after = h3_code_to_app(VarInt::from_u64(reserved + 1).unwrap()).unwrap();
        assert_eq!(
            after,
            before + 1,
            "neighbours of a reserved code are adjacent app codes"
        );
        for code in [before, after] {
            assert_ne!(app_code_to_h3(code).into_inner(), reserved);
        }
    }

    #[test]
    fn protocol_codes_are_not_application_codes() {
        for code in [
            WT_BUFFERED_STREAM_REJECTED,
            WT_SESSION_GONE,
            WT_FLOW_CONTROL_ERROR,
            WT_ALPN_ERROR,
            WT_REQUIREMENTS_NOT_MET,
        ] {
            assert_eq!(h3_code_to_app(code.to_varint()), None, "{code:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(code: u32) {
            let h3 = app_code_to_h3(code);
            prop_assert!(!Code::from_varint(h3).is_grease());
            prop_assert_eq!(h3_code_to_app(h3), Some(code));
        }

        #[test]
        fn every_h3_code_maps_back_or_is_refused(offset in 0..=(LAST - FIRST + 2)) {
            let h3 = VarInt::from_u64(FIRST - 1 + offset).unwrap();
            if let Some(app) = h3_code_to_app(h3) {
                prop_assert_eq!(app_code_to_h3(app), h3);
            }
        }
    }
}
