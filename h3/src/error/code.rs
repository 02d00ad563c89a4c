//! [`Code`]: HTTP/3 error codes as they appear on the wire.
//!
//! This module owns [`Code`], the application error code carried by QUIC `CONNECTION_CLOSE`,
//! `RESET_STREAM` and `STOP_SENDING`: the HTTP/3 codes (RFC 9114 §8.1), the QPACK codes
//! (RFC 9204 §6) and H3_DATAGRAM_ERROR (RFC 9297 §5.2). Each decoder in [`crate::proto`] has its
//! own small error enum with a single exhaustive `From<…> for Code`; this module does not decide
//! which code a given failure gets, nor whether it closes the connection or one stream (the
//! connection driver does, and each decode error documents its scope).

wire_values! {
    /// An HTTP/3 application error code (RFC 9114 §8).
    ///
    /// `Debug` prints the name for the codes below, `Code(0x..)` otherwise. Any varint is a
    /// valid code: unknown codes received from a peer are values, never errors (RFC 9114 §9),
    /// and the reserved codes `0x1f * N + 0x21` can be sent to exercise that rule
    /// ([`Code::grease`], RFC 9114 §8.1).
    pub struct Code;
    grease = 0x1f * N + 0x21;

    /// No error; used when closing the connection or a stream without a problem.
    H3_NO_ERROR = 0x100;
    /// The peer violated the protocol in a way no more specific code covers.
    H3_GENERAL_PROTOCOL_ERROR = 0x101;
    /// An internal error in the HTTP stack.
    H3_INTERNAL_ERROR = 0x102;
    /// The peer created a stream that it was not allowed to create.
    H3_STREAM_CREATION_ERROR = 0x103;
    /// A stream required by the connection (control, QPACK) was closed or reset.
    H3_CLOSED_CRITICAL_STREAM = 0x104;
    /// A frame was not allowed in the current state or on the current stream.
    H3_FRAME_UNEXPECTED = 0x105;
    /// A frame broke the layout rules or had an invalid size.
    H3_FRAME_ERROR = 0x106;
    /// The peer is generating excessive load (for instance, frames over a local size limit).
    H3_EXCESSIVE_LOAD = 0x107;
    /// A stream ID or push ID was used incorrectly.
    H3_ID_ERROR = 0x108;
    /// A SETTINGS frame had an error in its payload.
    H3_SETTINGS_ERROR = 0x109;
    /// The control stream did not start with SETTINGS.
    H3_MISSING_SETTINGS = 0x10a;
    /// The server refused a request before doing any processing of it.
    H3_REQUEST_REJECTED = 0x10b;
    /// The request or its response was cancelled.
    H3_REQUEST_CANCELLED = 0x10c;
    /// The stream ended before the message was complete.
    H3_REQUEST_INCOMPLETE = 0x10d;
    /// An HTTP message was malformed.
    H3_MESSAGE_ERROR = 0x10e;
    /// The TCP connection of a CONNECT request was reset or closed abnormally.
    H3_CONNECT_ERROR = 0x10f;
    /// The request should be retried over HTTP/1.1.
    H3_VERSION_FALLBACK = 0x110;
    /// QPACK could not decode a field section (RFC 9204 §6).
    QPACK_DECOMPRESSION_FAILED = 0x200;
    /// An instruction on the QPACK encoder stream was invalid (RFC 9204 §6).
    QPACK_ENCODER_STREAM_ERROR = 0x201;
    /// An instruction on the QPACK decoder stream was invalid (RFC 9204 §6).
    QPACK_DECODER_STREAM_ERROR = 0x202;
    /// An HTTP datagram or its capsule was malformed (RFC 9297 §5.2).
    H3_DATAGRAM_ERROR = 0x33;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_names() {
        assert_eq!(format!("{:?}", Code::H3_NO_ERROR), "H3_NO_ERROR");
        assert_eq!(
            format!("{:?}", Code::H3_VERSION_FALLBACK),
            "H3_VERSION_FALLBACK"
        );
        assert_eq!(
            format!("{:?}", Code::QPACK_DECODER_STREAM_ERROR),
            "QPACK_DECODER_STREAM_ERROR"
        );
        assert_eq!(
            format!("{:?}", Code::H3_DATAGRAM_ERROR),
            "H3_DATAGRAM_ERROR"
        );
        assert_eq!(format!("{:?}", Code::from_u32(0x1234)), "Code(0x1234)");
    }

    #[test]
    fn wire_values() {
        // RFC 9114 §8.1 table.
        assert_eq!(Code::H3_NO_ERROR.into_inner(), 0x100);
        assert_eq!(Code::H3_MESSAGE_ERROR.into_inner(), 0x10e);
        assert_eq!(Code::H3_VERSION_FALLBACK.into_inner(), 0x110);
        assert_eq!(Code::QPACK_DECOMPRESSION_FAILED.into_inner(), 0x200);
    }

    #[test]
    fn grease_codes() {
        // RFC 9114 §8.1: codes 0x1f * N + 0x21 are reserved and mean nothing.
        assert!(Code::grease(0).is_grease());
        assert_eq!(Code::grease(0).into_inner(), 0x21);
        assert_eq!(Code::grease(1).into_inner(), 0x40);
        assert!(!Code::H3_NO_ERROR.is_grease());
    }
}
