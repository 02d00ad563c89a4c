//! Per-stream message rules: which frames may come in which order (RFC 9114 §4.1, §6.2.1,
//! §7.2; RFC 9218 §7.2), and the check of `content-length` against the DATA received
//! (RFC 9114 §4.1.2).
//!
//! This module owns three small state machines the connection driver calls as frames arrive:
//! [`MessageFrames`] for request and push streams, [`ControlStreamFrames`] for the peer's control
//! stream, and [`BodyLength`] for content length. It does not own frame decoding
//! ([`crate::proto::reader`]), field validation ([`crate::proto::headers`]), or the
//! connection-level rules about IDs (GOAWAY monotonicity, push ID limits, which streams a
//! PRIORITY_UPDATE may name).

use crate::error::Code;
use crate::proto::frame::FrameType;
use crate::proto::headers::MessageError;

/// A frame that is not allowed where it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameOrderError {
    /// A frame not allowed on this stream or in this state: a connection error of type
    /// H3_FRAME_UNEXPECTED (RFC 9114 §4.1, §7.2).
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameType),
    /// The control stream started with something other than SETTINGS: a connection error of type
    /// H3_MISSING_SETTINGS (RFC 9114 §6.2.1).
    #[error("control stream starts with {0:?} instead of SETTINGS")]
    MissingSettings(FrameType),
}

impl From<FrameOrderError> for Code {
    fn from(error: FrameOrderError) -> Self {
        match error {
            FrameOrderError::Unexpected(_) => Self::H3_FRAME_UNEXPECTED,
            FrameOrderError::MissingSettings(_) => Self::H3_MISSING_SETTINGS,
        }
    }
}

/// What a frame on a request or push stream is, once [`MessageFrames`] accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessagePart {
    /// HEADERS carrying a header section (the request, or an interim or final response).
    Head,
    /// DATA.
    Data,
    /// HEADERS carrying the trailer section.
    Trailers,
    /// PUSH_PROMISE (only on response streams); not part of the message.
    PushPromise,
    /// A frame of an unknown type: ignore it (RFC 9114 §9).
    Extension,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the header section.
    Head,
    /// After the header section: DATA or trailers.
    Body,
    /// After the trailers: nothing but extension frames.
    Done,
}

/// The frame order of one HTTP message on a request or push stream: HEADERS, then DATA*, then an
/// optional trailing HEADERS, with unknown frames anywhere (RFC 9114 §4.1).
///
/// Call [`MessageFrames::on_frame`] with the type of every frame header as it arrives (for
/// instance on each [`FrameEvent::Header`](crate::proto::reader::FrameEvent::Header)); call
/// [`MessageFrames::on_interim_response`] after decoding a 1xx response, which a further header
/// section follows; call [`MessageFrames::tunnel`] once a CONNECT is established, after which
/// only DATA and extension frames are allowed (RFC 9114 §4.4).
///
/// ```
/// use quay_h3::proto::frame::FrameType;
/// use quay_h3::proto::message::{MessageFrames, MessagePart};
///
/// let mut order = MessageFrames::request();
/// assert_eq!(order.on_frame(FrameType::HEADERS), Ok(MessagePart::Head));
/// assert_eq!(order.on_frame(FrameType::DATA), Ok(MessagePart::Data));
/// assert_eq!(order.on_frame(FrameType::HEADERS), Ok(MessagePart::Trailers));
/// assert!(order.on_frame(FrameType::DATA).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct MessageFrames {
    stage: Stage,
    push_promise: bool,
    tunnel: bool,
}

impl MessageFrames {
    /// For a request received on a request stream (server side).
    pub fn request() -> Self {
        Self {
            stage: Stage::Head,
            push_promise: false,
            tunnel: false,
        }
    }

    /// For a response received on a request stream (client side): PUSH_PROMISE may come before,
    /// between or after the response's frames (RFC 9114 §4.1).
    pub fn response() -> Self {
        Self {
            push_promise: true,
            ..Self::request()
        }
    }

    /// For a pushed response on a push stream, where PUSH_PROMISE is not allowed (RFC 9114 §4.1).
    pub fn push_response() -> Self {
        Self::request()
    }

    /// Checks the next frame type against the order.
    pub fn on_frame(&mut self, ty: FrameType) -> Result<MessagePart, FrameOrderError> {
        let part = match ty {
            FrameType::HEADERS => match self.stage {
                Stage::Head => {
                    self.stage = Stage::Body;
                    MessagePart::Head
                }
                // RFC 9114 §4.4: an established tunnel carries DATA only.
                Stage::Body if !self.tunnel => {
                    self.stage = Stage::Done;
                    MessagePart::Trailers
                }
                // RFC 9114 §4.1: nothing after the trailers.
                Stage::Body | Stage::Done => return Err(FrameOrderError::Unexpected(ty)),
            },
            FrameType::DATA => match self.stage {
                Stage::Body => MessagePart::Data,
                // RFC 9114 §4.1: DATA before HEADERS or after trailers.
                Stage::Head | Stage::Done => return Err(FrameOrderError::Unexpected(ty)),
            },
            // RFC 9114 §7.2.5: only servers send PUSH_PROMISE, and not on push streams.
            FrameType::PUSH_PROMISE if self.push_promise && !self.tunnel => {
                MessagePart::PushPromise
            }
            // RFC 9114 §7.2.3-§7.2.7, RFC 9218 §7.2: control-stream frames, and anything known
            // out of place.
            ty if ty.is_known() || ty.is_http2_reserved() => {
                return Err(FrameOrderError::Unexpected(ty));
            }
            _ => MessagePart::Extension,
        };
        Ok(part)
    }

    /// The header section just decoded was an interim (1xx) response: another header section
    /// follows (RFC 9114 §4.1).
    pub fn on_interim_response(&mut self) {
        if self.stage == Stage::Body {
            self.stage = Stage::Head;
        }
    }

    /// The CONNECT tunnel is established: from now on only DATA and extension frames are
    /// allowed (RFC 9114 §4.4).
    pub fn tunnel(&mut self) {
        self.tunnel = true;
    }

    /// Whether the header section has been received.
    pub fn has_head(&self) -> bool {
        self.stage != Stage::Head
    }
}

/// Which endpoint sent a control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sender {
    /// The client's control stream.
    Client,
    /// The server's control stream.
    Server,
}

/// The frame rules of the peer's control stream: SETTINGS first and once, no message frames,
/// MAX_PUSH_ID and PRIORITY_UPDATE only from clients (RFC 9114 §6.2.1, §7.2; RFC 9218 §7.2).
///
/// ```
/// use quay_h3::error::Code;
/// use quay_h3::proto::frame::FrameType;
/// use quay_h3::proto::message::{ControlStreamFrames, Sender};
///
/// let mut control = ControlStreamFrames::new(Sender::Client);
/// let err = control.on_frame(FrameType::GOAWAY).unwrap_err();
/// assert_eq!(Code::from(err), Code::H3_MISSING_SETTINGS);
/// ```
#[derive(Debug, Clone)]
pub struct ControlStreamFrames {
    sender: Sender,
    settings: bool,
}

impl ControlStreamFrames {
    /// For the control stream of `sender`, the peer.
    pub fn new(sender: Sender) -> Self {
        Self {
            sender,
            settings: false,
        }
    }

    /// Checks the next frame type.
    pub fn on_frame(&mut self, ty: FrameType) -> Result<(), FrameOrderError> {
        if !self.settings {
            // RFC 9114 §6.2.1: SETTINGS must be the first frame.
            if ty != FrameType::SETTINGS {
                return Err(FrameOrderError::MissingSettings(ty));
            }
            self.settings = true;
            return Ok(());
        }
        let allowed = match ty {
            // RFC 9114 §7.2.4: a second SETTINGS.
            FrameType::SETTINGS => false,
            // RFC 9114 §7.2.1, §7.2.2, §7.2.5: message frames.
            FrameType::DATA | FrameType::HEADERS | FrameType::PUSH_PROMISE => false,
            FrameType::CANCEL_PUSH | FrameType::GOAWAY => true,
            // RFC 9114 §7.2.7: only clients send MAX_PUSH_ID.
            FrameType::MAX_PUSH_ID => self.sender == Sender::Client,
            // RFC 9218 §7.2: only clients send PRIORITY_UPDATE.
            FrameType::PRIORITY_UPDATE_REQUEST | FrameType::PRIORITY_UPDATE_PUSH => {
                self.sender == Sender::Client
            }
            ty => !ty.is_http2_reserved(),
        };
        if allowed {
            Ok(())
        } else {
            Err(FrameOrderError::Unexpected(ty))
        }
    }

    /// Whether SETTINGS has been received.
    pub fn has_settings(&self) -> bool {
        self.settings
    }
}

/// Checks the content received against `content-length` (RFC 9114 §4.1.2).
///
/// Create it with the message's `content-length`, or `None` when the message cannot have
/// content whatever its `content-length` says (a response to HEAD, a 204 or 304 response; RFC
/// 9110 §6.4.1) or when there is none. Then report each DATA chunk and the end of the content.
///
/// ```
/// use quay_h3::proto::message::BodyLength;
///
/// let mut body = BodyLength::new(Some(5));
/// body.on_data(3)?;
/// assert!(body.on_end().is_err());
/// body.on_data(2)?;
/// body.on_end()?;
/// assert!(body.on_data(1).is_err());
/// # Ok::<(), quay_h3::proto::headers::MessageError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BodyLength {
    expected: Option<u64>,
    received: u64,
}

impl BodyLength {
    /// A tracker for a message whose `content-length` is `expected`.
    pub fn new(expected: Option<u64>) -> Self {
        Self {
            expected,
            received: 0,
        }
    }

    /// Counts `len` more bytes of content. Fails as soon as the total passes `content-length`.
    pub fn on_data(&mut self, len: u64) -> Result<(), MessageError> {
        self.received = self.received.saturating_add(len);
        match self.expected {
            Some(expected) if self.received > expected => {
                Err(MessageError::ContentLengthMismatch {
                    expected,
                    received: self.received,
                })
            }
            _ => Ok(()),
        }
    }

    /// The content has ended (trailers or the end of the stream). Fails if less than
    /// `content-length` arrived.
    pub fn on_end(&self) -> Result<(), MessageError> {
        match self.expected {
            Some(expected) if self.received != expected => {
                Err(MessageError::ContentLengthMismatch {
                    expected,
                    received: self.received,
                })
            }
            _ => Ok(()),
        }
    }

    /// The bytes of content received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The declared `content-length`, if it applies.
    pub fn expected(&self) -> Option<u64> {
        self.expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN_CONTROL: [FrameType; 5] = [
        FrameType::CANCEL_PUSH,
        FrameType::SETTINGS,
        FrameType::GOAWAY,
        FrameType::MAX_PUSH_ID,
        FrameType::PRIORITY_UPDATE_REQUEST,
    ];

    fn unexpected(order: &mut MessageFrames, ty: FrameType) {
        let err = order.on_frame(ty).unwrap_err();
        assert_eq!(err, FrameOrderError::Unexpected(ty));
        assert_eq!(Code::from(err), Code::H3_FRAME_UNEXPECTED);
    }

    #[test]
    fn request_order() {
        // RFC 9114 §4.1: HEADERS, DATA*, optional trailing HEADERS; unknown frames anywhere.
        let grease = FrameType::grease(5);
        let mut order = MessageFrames::request();
        assert_eq!(order.on_frame(grease), Ok(MessagePart::Extension));
        assert!(!order.has_head());
        assert_eq!(order.on_frame(FrameType::HEADERS), Ok(MessagePart::Head));
        assert_eq!(order.on_frame(FrameType::DATA), Ok(MessagePart::Data));
        assert_eq!(order.on_frame(grease), Ok(MessagePart::Extension));
        assert_eq!(order.on_frame(FrameType::DATA), Ok(MessagePart::Data));
        assert_eq!(
            order.on_frame(FrameType::HEADERS),
            Ok(MessagePart::Trailers)
        );
        assert_eq!(order.on_frame(grease), Ok(MessagePart::Extension));
        unexpected(&mut order, FrameType::DATA);
        unexpected(&mut order, FrameType::HEADERS);
    }

    #[test]
    fn data_before_headers() {
        unexpected(&mut MessageFrames::request(), FrameType::DATA);
    }

    #[test]
    fn control_frames_on_request_streams() {
        for ty in KNOWN_CONTROL {
            unexpected(&mut MessageFrames::request(), ty);
            unexpected(&mut MessageFrames::response(), ty);
        }
        // RFC 9114 §7.2.5: servers never receive PUSH_PROMISE; push streams carry none.
        unexpected(&mut MessageFrames::request(), FrameType::PUSH_PROMISE);
        unexpected(&mut MessageFrames::push_response(), FrameType::PUSH_PROMISE);
    }

    #[test]
    fn interim_responses_and_push_promise() {
        let mut order = MessageFrames::response();
        assert_eq!(
            order.on_frame(FrameType::PUSH_PROMISE),
            Ok(MessagePart::PushPromise)
        );
        assert_eq!(order.on_frame(FrameType::HEADERS), Ok(MessagePart::Head));
        order.on_interim_response();
        assert_eq!(order.on_frame(FrameType::HEADERS), Ok(MessagePart::Head));
        assert_eq!(
            order.on_frame(FrameType::PUSH_PROMISE),
            Ok(MessagePart::PushPromise)
        );
        assert_eq!(order.on_frame(FrameType::DATA), Ok(MessagePart::Data));
        assert_eq!(
            order.on_frame(FrameType::HEADERS),
            Ok(MessagePart::Trailers)
        );
        assert_eq!(
            order.on_frame(FrameType::PUSH_PROMISE),
            Ok(MessagePart::PushPromise)
        );
    }

    #[test]
    fn tunnel_carries_data_only() {
        // RFC 9114 §4.4.
        let mut order = MessageFrames::request();
        order.on_frame(FrameType::HEADERS).unwrap();
        order.tunnel();
        assert_eq!(order.on_frame(FrameType::DATA), Ok(MessagePart::Data));
        unexpected(&mut order, FrameType::HEADERS);
    }

    #[test]
    fn control_stream() {
        // RFC 9114 §6.2.1: SETTINGS first.
        for ty in [FrameType::GOAWAY, FrameType::DATA, FrameType::grease(0)] {
            let err = ControlStreamFrames::new(Sender::Server)
                .on_frame(ty)
                .unwrap_err();
            assert_eq!(err, FrameOrderError::MissingSettings(ty));
            assert_eq!(Code::from(err), Code::H3_MISSING_SETTINGS);
        }
        let mut control = ControlStreamFrames::new(Sender::Server);
        control.on_frame(FrameType::SETTINGS).unwrap();
        assert!(control.has_settings());
        control.on_frame(FrameType::GOAWAY).unwrap();
        control.on_frame(FrameType::CANCEL_PUSH).unwrap();
        control.on_frame(FrameType::grease(9)).unwrap();
        for ty in [
            FrameType::SETTINGS,
            FrameType::DATA,
            FrameType::HEADERS,
            FrameType::PUSH_PROMISE,
            // Only clients send these two.
            FrameType::MAX_PUSH_ID,
            FrameType::PRIORITY_UPDATE_PUSH,
        ] {
            let err = control.on_frame(ty).unwrap_err();
            assert_eq!(Code::from(err), Code::H3_FRAME_UNEXPECTED, "{ty:?}");
        }
        let mut control = ControlStreamFrames::new(Sender::Client);
        control.on_frame(FrameType::SETTINGS).unwrap();
        control.on_frame(FrameType::MAX_PUSH_ID).unwrap();
        control
            .on_frame(FrameType::PRIORITY_UPDATE_REQUEST)
            .unwrap();
    }

    #[test]
    fn body_length() {
        // RFC 9114 §4.1.2: content-length must equal the sum of the DATA received.
        let mut body = BodyLength::new(Some(4));
        body.on_data(4).unwrap();
        body.on_end().unwrap();
        let err = body.on_data(1).unwrap_err();
        assert_eq!(
            err,
            MessageError::ContentLengthMismatch {
                expected: 4,
                received: 5
            }
        );
        assert_eq!(Code::from(err), Code::H3_MESSAGE_ERROR);
        let short = BodyLength::new(Some(4));
        assert_eq!(
            short.on_end(),
            Err(MessageError::ContentLengthMismatch {
                expected: 4,
                received: 0
            })
        );
        let mut none = BodyLength::new(None);
        none.on_data(u64::MAX).unwrap();
        none.on_data(u64::MAX).unwrap();
        none.on_end().unwrap();
    }
}
