//! [`Request`]: a WebTransport session request as the application gets it, with its parts (URL,
//! `origin`, headers, offered subprotocols, the client's draft) and its answers: accepted (200,
//! and the session starts), refused with a status, or refused with H3_REQUEST_REJECTED when
//! dropped.
//!
//! It does not read request heads or decide which requests become sessions (the connection's
//! task in [`super`] does), and it keeps no session state: the accepted session is
//! [`Session`]'s.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri};
use quay_h3::Code;
use quay_h3::proto::headers::Protocol;
use quay_h3::server::RequestStream;

use crate::error::{SessionError, Violation};
use crate::proto::connect;
use crate::proto::settings::{Draft, FlowControlLimits};
use crate::qlog::{initiator, session_event};
use crate::routes::Routes;
use crate::session::{Established, Session};

/// A WebTransport session request, to accept with [`Request::ok`] or refuse with
/// [`Request::reject`]. Dropping it refuses the session with H3_REQUEST_REJECTED.
///
/// One pointer: a request waits in queues and in the application's task, which often awaits
/// [`Request::ok`] and then serves the session for hours, keeping room for the request all
/// that time.
#[derive(Debug)]
pub struct Request {
    inner: Box<Pending>,
}

/// What a [`Request`] holds until it is answered.
#[derive(Debug)]
pub(super) struct Pending {
    /// Boxed on its own: an accepted session keeps it (see [`Session::request`]).
    pub(super) head: Box<http::Request<()>>,
    /// Taken when the request is answered.
    pub(super) stream: Option<RequestStream>,
    pub(super) routes: Arc<Routes>,
    pub(super) conn: quay_transport::Connection,
    pub(super) draft: Draft,
    pub(super) id: u64,
    /// Our flow-control limits and the client's, when both sides turned it on.
    pub(super) flow: Option<(FlowControlLimits, FlowControlLimits)>,
}

impl Request {
    pub(super) fn new(pending: Pending) -> Self {
        Self {
            inner: Box::new(pending),
        }
    }

    /// Takes the stream back, unanswered (when the request cannot be queued).
    pub(super) fn take_stream(&mut self) -> Option<RequestStream> {
        self.inner.stream.take()
    }

    /// The request URL (`https://authority/path?query`).
    pub fn url(&self) -> &Uri {
        self.inner.head.uri()
    }

    /// The `:authority`.
    pub fn authority(&self) -> &str {
        self.inner.head.uri().authority().map_or("", |a| a.as_str())
    }

    /// The `:path`, without the query.
    pub fn path(&self) -> &str {
        self.inner.head.uri().path()
    }

    /// The `origin` header (browsers always send it), if present and text.
    pub fn origin(&self) -> Option<&str> {
        self.inner
            .head
            .headers()
            .get(http::header::ORIGIN)?
            .to_str()
            .ok()
    }

    /// Every request header.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.head.headers()
    }

    /// The subprotocols the client offers (`wt-available-protocols`), most preferred first.
    pub fn protocols(&self) -> Vec<String> {
        connect::offered_protocols(self.inner.head.headers())
    }

    /// The newest WebTransport draft the client's SETTINGS announce (Chromium and Firefox:
    /// draft-02). A client that announces none has its CONNECT refused before it becomes a
    /// `Request` (draft-16 §3.1).
    pub fn draft(&self) -> Draft {
        self.inner.draft
    }

    /// The `:protocol` the client used (`webtransport` or `webtransport-h3`).
    pub fn upgrade_token(&self) -> Option<&str> {
        self.inner
            .head
            .extensions()
            .get::<Protocol>()
            .map(Protocol::as_str)
    }

    /// The QUIC connection the request came on.
    pub fn connection(&self) -> &quay_transport::Connection {
        &self.inner.conn
    }

    /// The connection's qlog file, if it has one.
    pub fn qlog(&self) -> Option<&quay_transport::Qlog> {
        self.inner.stream.as_ref().and_then(|stream| stream.qlog())
    }

    /// Accepts the session (200).
    ///
    /// The returned future is boxed: a task that awaits it and then serves the session for
    /// hours keeps room for its largest await point the whole time, and sending a response
    /// needs far more than serving a session does.
    pub fn ok(self) -> impl Future<Output = Result<Session, SessionError>> + Send + 'static {
        Box::pin(self.accept(None))
    }

    /// Accepts the session (200) and chooses `protocol`, which should be one of
    /// [`Request::protocols`], in `wt-protocol`. Boxed, as [`Request::ok`] is.
    pub fn ok_with_protocol(
        self,
        protocol: &str,
    ) -> impl Future<Output = Result<Session, SessionError>> + Send + 'static {
        Box::pin(self.accept(Some(protocol.to_owned())))
    }

    /// A function returning an `async move` block rather than an `async fn`, which would keep
    /// `self` twice.
    #[allow(clippy::manual_async_fn)] // On purpose: see above.
    fn accept(
        mut self,
        protocol: Option<String>,
    ) -> impl Future<Output = Result<Session, SessionError>> + Send + 'static {
        async move {
            let Some(mut stream) = self.inner.stream.take() else {
                return Err(SessionError::LocallyClosed);
            };
            let mut response = Response::new(());
            if connect::asks_draft02(self.inner.head.headers()) {
                response.headers_mut().insert(
                    connect::DRAFT02_RESPONSE_HEADER,
                    HeaderValue::from_static("draft02"),
                );
            }
            let protocol = protocol.and_then(|p| {
                let value = connect::encode_chosen_protocol(&p)?;
                Some((p, value))
            });
            if let Some((_, value)) = &protocol {
                response
                    .headers_mut()
                    .insert(connect::PROTOCOL_HEADER, value.clone());
            }
            if let Err(error) = stream.send_response(response).await {
                self.inner.routes.close(self.inner.id);
                return Err(match error {
                    quay_h3::StreamError::ConnectionLost(error) => {
                        SessionError::ConnectionLost(error)
                    }
                    quay_h3::StreamError::Stopped(code) | quay_h3::StreamError::Reset(code) => {
                        SessionError::Reset(code)
                    }
                    _ => SessionError::Protocol(Violation::ResponseNotSent),
                });
            }
            if let Some(qlog) = stream.qlog() {
                session_event(
                    qlog,
                    "quay-webtransport:session_accepted",
                    self.inner.id,
                    |data| {
                        data.str("initiator", initiator(true)).u64("status", 200);
                        if let Some((protocol, _)) = &protocol {
                            data.str("protocol", protocol);
                        }
                    },
                );
            }
            let (send, recv) = stream.split();
            // The session keeps its request (Session::request); a placeholder stays behind.
            let head = detach(std::mem::take(&mut self.inner.head));
            Session::new_http3(Established {
                conn: self.inner.conn.clone(),
                send,
                recv,
                routes: self.inner.routes.clone(),
                protocol: protocol.map(|(p, _)| p),
                draft: self.inner.draft,
                request: Some(head),
                client: None,
                flow: self.inner.flow,
            })
        }
    }

    /// Refuses the session with `status` (which should not be 2xx) and an empty body. Boxed, as
    /// [`Request::ok`] is.
    pub fn reject(self, status: StatusCode) -> impl Future<Output = ()> + Send + 'static {
        Box::pin(self.refuse(status))
    }

    /// As [`Request::accept`], a function returning an `async move` block.
    #[allow(clippy::manual_async_fn)] // On purpose: see `accept`.
    fn refuse(mut self, status: StatusCode) -> impl Future<Output = ()> + Send + 'static {
        async move {
            self.inner.routes.close(self.inner.id);
            let Some(mut stream) = self.inner.stream.take() else {
                return;
            };
            if let Some(qlog) = stream.qlog() {
                session_event(
                    qlog,
                    "quay-webtransport:session_refused",
                    self.inner.id,
                    |data| {
                        data.str("initiator", initiator(true))
                            .u64("status", status.as_u16().into());
                    },
                );
            }
            let mut response = Response::new(());
            *response.status_mut() = status;
            if stream.send_response(response).await.is_ok() {
                let _ = stream.finish();
            }
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(mut stream) = self.inner.stream.take() {
            self.inner.routes.close(self.inner.id);
            stream.reject(Code::H3_REQUEST_REJECTED);
        }
    }
}

/// `request` as a session keeps it for its whole life: holding none of the bytes it was
/// received in, and no extensions.
///
/// - Its URI is a slice of the buffer quinn received the HEADERS frame in, which would stay
///   allocated. The URI is copied (one allocation for the authority and the path together);
///   header values are copies already.
/// - Its extensions hold only the `:protocol` (a map and a box: three allocations, 212 bytes),
///   which the session's draft already says.
fn detach(mut request: Box<http::Request<()>>) -> Box<http::Request<()>> {
    if let Ok(uri) = Uri::try_from(request.uri().to_string()) {
        *request.uri_mut() = uri;
    }
    *request.extensions_mut() = http::Extensions::new();
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An application's task that accepts a session and then serves it keeps room for the
    /// request all session long: one pointer.
    #[test]
    fn a_request_is_one_pointer() {
        assert_eq!(size_of::<Request>(), size_of::<usize>());
    }

    #[test]
    fn a_kept_request_holds_no_received_bytes_and_no_extensions() {
        let received = bytes::Bytes::from_static(b"/echo?x=1 example.com:4433");
        let uri = Uri::builder()
            .scheme("https")
            .authority(http::uri::Authority::from_maybe_shared(received.slice(10..)).unwrap())
            .path_and_query(
                http::uri::PathAndQuery::from_maybe_shared(received.slice(..9)).unwrap(),
            )
            .build()
            .unwrap();
        let request = http::Request::builder()
            .uri(uri)
            .header("origin", "https://example.com")
            .extension(Protocol::WEBTRANSPORT)
            .body(())
            .unwrap();
        let kept = detach(Box::new(request));
        assert_eq!(kept.uri(), "https://example.com:4433/echo?x=1");
        assert_eq!(kept.headers()["origin"], "https://example.com");
        let inside = |part: &str| received.as_ptr_range().contains(&part.as_ptr());
        assert!(!inside(kept.uri().path()));
        assert!(!inside(kept.uri().authority().unwrap().as_str()));
        assert!(kept.extensions().is_empty());
    }
}
