//! HTTP message validation (RFC 9114 §4.1-4.4, RFC 9220): decoded field lines to `http` heads,
//! and `http` heads back to field lines.
//!
//! This module owns the rules of a field section: lowercase and valid names, valid values, no
//! connection-specific fields, pseudo-header fields first, defined, not repeated, and exactly the
//! set a request, a CONNECT request, an Extended CONNECT request, a response or a trailer section
//! needs, plus `content-length` syntax. It works on field lines already decoded by QPACK (any type
//! implementing [`FieldLine`]) and produces `http::Request<()>` / `http::Response<()>` heads and a
//! typed `:protocol` ([`Protocol`]). Every violation is a [`MessageError`], a stream error of type
//! H3_MESSAGE_ERROR (RFC 9114 §4.1.2).
//!
//! It does not own QPACK, the field section size limit (the QPACK decoder applies
//! SETTINGS_MAX_FIELD_SECTION_SIZE), the frame order on the stream or the check of
//! `content-length` against the DATA received ([`crate::proto::message`]), or deciding which
//! `:protocol` values a server supports (RFC 9220 §3 suggests a 501 response for others).

use std::fmt;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Parts as UriParts, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};

use crate::error::Code;

/// One decoded field line, as QPACK produces it.
///
/// Implemented for `(Bytes, Bytes)`, `(Bytes, Bytes, bool)` (name, value, never-index) and
/// references to them; the connection adds an implementation for `quay_qpack::Field`.
pub trait FieldLine {
    /// The field name as received (HTTP/3 requires it lowercase).
    fn name(&self) -> &[u8];
    /// The field value.
    fn value(&self) -> &[u8];
    /// Whether the field must never be added to a compression table (RFC 9204 §4.5.4).
    fn never_index(&self) -> bool {
        false
    }
}

/// A field line type the encoders of this module can build, for handing to QPACK.
pub trait FromFieldLine: Sized {
    /// Builds a field line from its name, value and never-index flag.
    fn from_field_line(name: Bytes, value: Bytes, never_index: bool) -> Self;
}

impl<T: FieldLine + ?Sized> FieldLine for &T {
    fn name(&self) -> &[u8] {
        (**self).name()
    }
    fn value(&self) -> &[u8] {
        (**self).value()
    }
    fn never_index(&self) -> bool {
        (**self).never_index()
    }
}

impl FieldLine for (Bytes, Bytes) {
    fn name(&self) -> &[u8] {
        &self.0
    }
    fn value(&self) -> &[u8] {
        &self.1
    }
}

impl FromFieldLine for (Bytes, Bytes) {
    fn from_field_line(name: Bytes, value: Bytes, _never_index: bool) -> Self {
        (name, value)
    }
}

impl FieldLine for (Bytes, Bytes, bool) {
    fn name(&self) -> &[u8] {
        &self.0
    }
    fn value(&self) -> &[u8] {
        &self.1
    }
    fn never_index(&self) -> bool {
        self.2
    }
}

impl FromFieldLine for (Bytes, Bytes, bool) {
    fn from_field_line(name: Bytes, value: Bytes, never_index: bool) -> Self {
        (name, value, never_index)
    }
}

/// The `:protocol` pseudo-header of an Extended CONNECT request (RFC 9220, RFC 8441 §4): a token
/// such as `webtransport` or `websocket`.
///
/// [`parse_request`] also stores it in the request's extensions, and [`request_fields`] reads it
/// from there.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Protocol(Bytes);

impl Protocol {
    /// `webtransport`, the token of WebTransport draft-02..14 (DESIGN.md).
    pub const WEBTRANSPORT: Self = Self(Bytes::from_static(b"webtransport"));
    /// `webtransport-h3`, the token of WebTransport draft-15 and later (DESIGN.md).
    pub const WEBTRANSPORT_H3: Self = Self(Bytes::from_static(b"webtransport-h3"));
    /// `websocket` (RFC 9220).
    pub const WEBSOCKET: Self = Self(Bytes::from_static(b"websocket"));
    /// `connect-udp` (RFC 9298).
    pub const CONNECT_UDP: Self = Self(Bytes::from_static(b"connect-udp"));

    /// The tokens known by name: one of these takes no allocation and holds no received bytes.
    const KNOWN: [Self; 4] = [
        Self::WEBTRANSPORT,
        Self::WEBTRANSPORT_H3,
        Self::WEBSOCKET,
        Self::CONNECT_UDP,
    ];

    /// Checks that `value` is a non-empty token (RFC 9110 §5.6.2). A known token (one of the
    /// constants) is kept as that constant, so a long-lived request (a session's CONNECT)
    /// does not keep the buffer it was received in.
    pub fn new(value: impl Into<Bytes>) -> Result<Self, MessageError> {
        let value = value.into();
        if let Some(known) = Self::KNOWN.into_iter().find(|known| known.0 == value) {
            return Ok(known);
        }
        if value.is_empty() || !value.iter().all(|&b| is_tchar(b)) {
            return Err(MessageError::InvalidPseudoValue(":protocol"));
        }
        Ok(Self(value))
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        // A token is ASCII (checked in `new`, or a constant above).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol({:?})", self.as_str())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated request head.
#[derive(Debug)]
#[non_exhaustive]
pub struct RequestHead {
    /// Method, URI (scheme, authority, path; authority-form for CONNECT), headers, version
    /// HTTP/3, and the [`Protocol`] extension for Extended CONNECT.
    pub request: Request<()>,
    /// `:protocol`, for Extended CONNECT.
    pub protocol: Option<Protocol>,
    /// The `content-length` value, if present (checked: all lines agree).
    pub content_length: Option<u64>,
}

/// A validated response head.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResponseHead {
    /// Status, headers and version HTTP/3.
    pub response: Response<()>,
    /// The `content-length` value, if present (checked: all lines agree).
    pub content_length: Option<u64>,
}

impl ResponseHead {
    /// Whether this is an interim (1xx) response, after which the final response follows
    /// (RFC 9114 §4.1).
    pub fn is_interim(&self) -> bool {
        self.response.status().is_informational()
    }
}

/// Why a field section is not a valid HTTP/3 message. All variants are stream errors of type
/// H3_MESSAGE_ERROR (RFC 9114 §4.1.2), except on the sending side, where they report a head
/// that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// A field name has an uppercase letter (RFC 9114 §4.2).
    #[error("uppercase field name")]
    UppercaseName,
    /// A field name is empty or has characters outside the token set (RFC 9110 §5.1).
    #[error("invalid field name")]
    InvalidName,
    /// A field value has NUL, CR, LF or another control character, or leading or trailing
    /// whitespace (RFC 9110 §5.5).
    #[error("invalid value for field {0}")]
    InvalidValue(HeaderName),
    /// A connection-specific field (RFC 9114 §4.2).
    #[error("connection-specific field {0}")]
    ConnectionSpecific(HeaderName),
    /// `te` with a value other than `trailers` (RFC 9114 §4.2).
    #[error("te other than trailers")]
    InvalidTe,
    /// A pseudo-header field after a regular field (RFC 9114 §4.3).
    #[error("pseudo-header field after a regular field")]
    PseudoAfterRegular,
    /// A pseudo-header field not defined for this kind of message (RFC 9114 §4.3).
    #[error("undefined pseudo-header field")]
    UnknownPseudo,
    /// A pseudo-header field repeated (RFC 9114 §4.3.1).
    #[error("repeated pseudo-header field {0}")]
    DuplicatePseudo(&'static str),
    /// A required pseudo-header field is absent (RFC 9114 §4.3.1, §4.3.2, §4.4).
    #[error("missing pseudo-header field {0}")]
    MissingPseudo(&'static str),
    /// A pseudo-header field that this kind of request must not have (RFC 9114 §4.4,
    /// RFC 9220).
    #[error("pseudo-header field {0} not allowed here")]
    UnexpectedPseudo(&'static str),
    /// A pseudo-header field with an invalid value.
    #[error("invalid value for {0}")]
    InvalidPseudoValue(&'static str),
    /// A pseudo-header field in a trailer section (RFC 9114 §4.3).
    #[error("pseudo-header field in trailers")]
    PseudoInTrailers,
    /// `:authority` and `host` disagree, or one of them is empty (RFC 9114 §4.3.1).
    #[error("host and :authority disagree")]
    AuthorityMismatch,
    /// `content-length` is not a number, or its lines disagree (RFC 9110 §8.6).
    #[error("invalid content-length")]
    InvalidContentLength,
    /// The DATA received does not add up to `content-length` (RFC 9114 §4.1.2).
    #[error("content-length {expected} but {received} bytes of content")]
    ContentLengthMismatch {
        /// The declared length.
        expected: u64,
        /// The content received so far (at least this much when too long).
        received: u64,
    },
}

impl From<MessageError> for Code {
    fn from(error: MessageError) -> Self {
        match error {
            // RFC 9114 §4.1.2: every malformed message is H3_MESSAGE_ERROR on its stream.
            MessageError::UppercaseName
            | MessageError::InvalidName
            | MessageError::InvalidValue(_)
            | MessageError::ConnectionSpecific(_)
            | MessageError::InvalidTe
            | MessageError::PseudoAfterRegular
            | MessageError::UnknownPseudo
            | MessageError::DuplicatePseudo(_)
            | MessageError::MissingPseudo(_)
            | MessageError::UnexpectedPseudo(_)
            | MessageError::InvalidPseudoValue(_)
            | MessageError::PseudoInTrailers
            | MessageError::AuthorityMismatch
            | MessageError::InvalidContentLength
            | MessageError::ContentLengthMismatch { .. } => Self::H3_MESSAGE_ERROR,
        }
    }
}

/// The request pseudo-header fields, as received.
#[derive(Default)]
struct RequestPseudo {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    protocol: Option<Bytes>,
}

fn set_once(
    slot: &mut Option<Bytes>,
    value: &[u8],
    name: &'static str,
) -> Result<(), MessageError> {
    if slot.is_some() {
        return Err(MessageError::DuplicatePseudo(name));
    }
    *slot = Some(Bytes::copy_from_slice(value));
    Ok(())
}

/// Validates a request header section (RFC 9114 §4.2, §4.3.1, §4.4; RFC 9220).
///
/// ```
/// use bytes::Bytes;
/// use quay_h3::proto::headers::parse_request;
///
/// let fields = [
///     (Bytes::from_static(b":method"), Bytes::from_static(b"GET")),
///     (Bytes::from_static(b":scheme"), Bytes::from_static(b"https")),
///     (Bytes::from_static(b":authority"), Bytes::from_static(b"example.com")),
///     (Bytes::from_static(b":path"), Bytes::from_static(b"/index.html")),
///     (Bytes::from_static(b"accept"), Bytes::from_static(b"*/*")),
/// ];
/// let head = parse_request(&fields)?;
/// assert_eq!(head.request.uri(), "https://example.com/index.html");
/// assert_eq!(head.request.headers()["accept"], "*/*");
/// # Ok::<(), quay_h3::proto::headers::MessageError>(())
/// ```
pub fn parse_request<I>(fields: I) -> Result<RequestHead, MessageError>
where
    I: IntoIterator,
    I::Item: FieldLine,
{
    let mut pseudo = RequestPseudo::default();
    let headers = split_fields(fields, |name, value| {
        let slot = match name {
            b":method" => (&mut pseudo.method, ":method"),
            b":scheme" => (&mut pseudo.scheme, ":scheme"),
            b":authority" => (&mut pseudo.authority, ":authority"),
            b":path" => (&mut pseudo.path, ":path"),
            b":protocol" => (&mut pseudo.protocol, ":protocol"),
            _ => return Err(MessageError::UnknownPseudo),
        };
        set_once(slot.0, value, slot.1)
    })?;
    check_fields(&headers, true)?;

    let method = pseudo
        .method
        .ok_or(MessageError::MissingPseudo(":method"))?;
    let method =
        Method::from_bytes(&method).map_err(|_| MessageError::InvalidPseudoValue(":method"))?;
    let protocol = match pseudo.protocol {
        // RFC 9220 / RFC 8441 §4: :protocol only on CONNECT.
        Some(_) if method != Method::CONNECT => {
            return Err(MessageError::UnexpectedPseudo(":protocol"));
        }
        Some(p) => Some(Protocol::new(p)?),
        None => None,
    };
    let host = headers.get(header::HOST);

    let mut uri = UriParts::default();
    if method == Method::CONNECT && protocol.is_none() {
        // RFC 9114 §4.4: plain CONNECT has :authority only.
        if pseudo.scheme.is_some() {
            return Err(MessageError::UnexpectedPseudo(":scheme"));
        }
        if pseudo.path.is_some() {
            return Err(MessageError::UnexpectedPseudo(":path"));
        }
        let authority = pseudo
            .authority
            .ok_or(MessageError::MissingPseudo(":authority"))?;
        uri.authority = Some(parse_authority(authority, host, false)?);
    } else {
        // RFC 9114 §4.3.1 and, for Extended CONNECT, RFC 8441 §4: :method, :scheme and :path.
        let scheme = pseudo
            .scheme
            .ok_or(MessageError::MissingPseudo(":scheme"))?;
        let scheme = Scheme::try_from(&scheme[..])
            .map_err(|_| MessageError::InvalidPseudoValue(":scheme"))?;
        let path = pseudo.path.ok_or(MessageError::MissingPseudo(":path"))?;
        let http_like = scheme == Scheme::HTTP || scheme == Scheme::HTTPS;
        if http_like {
            // RFC 9114 §4.3.1: non-empty, `/`-rooted, or `*` for OPTIONS.
            let valid =
                path.first() == Some(&b'/') || (&path[..] == b"*" && method == Method::OPTIONS);
            if !valid {
                return Err(MessageError::InvalidPseudoValue(":path"));
            }
        }
        let path = PathAndQuery::from_maybe_shared(path)
            .map_err(|_| MessageError::InvalidPseudoValue(":path"))?;
        let authority = match (pseudo.authority, host) {
            (Some(authority), host) => Some(parse_authority(authority, host, http_like)?),
            (None, Some(host)) => Some(parse_authority(
                Bytes::copy_from_slice(host.as_bytes()),
                None,
                http_like,
            )?),
            (None, None) if http_like || protocol.is_some() => {
                return Err(MessageError::MissingPseudo(":authority"));
            }
            (None, None) => None,
        };
        if authority.is_none() {
            // The `http` crate cannot express a scheme without an authority.
            return Err(MessageError::InvalidPseudoValue(":scheme"));
        }
        uri.scheme = Some(scheme);
        uri.authority = authority;
        uri.path_and_query = Some(path);
    }
    let uri = Uri::from_parts(uri).map_err(|_| MessageError::InvalidPseudoValue(":path"))?;

    let content_length = content_length(&headers)?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_3;
    *request.headers_mut() = headers;
    if let Some(protocol) = &protocol {
        request.extensions_mut().insert(protocol.clone());
    }
    Ok(RequestHead {
        request,
        protocol,
        content_length,
    })
}

/// Parses `:authority`, checks it against `host` (RFC 9114 §4.3.1) and refuses userinfo for
/// http and https.
fn parse_authority(
    authority: Bytes,
    host: Option<&HeaderValue>,
    http_like: bool,
) -> Result<Authority, MessageError> {
    if authority.is_empty() {
        return Err(MessageError::AuthorityMismatch);
    }
    if let Some(host) = host
        && host.as_bytes() != &authority[..]
    {
        return Err(MessageError::AuthorityMismatch);
    }
    // RFC 9114 §4.3.1: no deprecated userinfo in http(s) authorities.
    if http_like && authority.contains(&b'@') {
        return Err(MessageError::InvalidPseudoValue(":authority"));
    }
    Authority::from_maybe_shared(authority)
        .map_err(|_| MessageError::InvalidPseudoValue(":authority"))
}

/// Validates a response header section (RFC 9114 §4.2, §4.3.2).
pub fn parse_response<I>(fields: I) -> Result<ResponseHead, MessageError>
where
    I: IntoIterator,
    I::Item: FieldLine,
{
    let mut status = None;
    let headers = split_fields(fields, |name, value| {
        if name != b":status" {
            return Err(MessageError::UnknownPseudo);
        }
        set_once(&mut status, value, ":status")
    })?;
    check_fields(&headers, false)?;
    let status = status.ok_or(MessageError::MissingPseudo(":status"))?;
    // RFC 9110 §15: three digits, 100 to 599.
    let status = StatusCode::from_bytes(&status)
        .ok()
        .filter(|s| (100..600).contains(&s.as_u16()))
        .ok_or(MessageError::InvalidPseudoValue(":status"))?;
    let content_length = content_length(&headers)?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = Version::HTTP_3;
    *response.headers_mut() = headers;
    Ok(ResponseHead {
        response,
        content_length,
    })
}

/// Validates a trailer section: regular fields only (RFC 9114 §4.3).
pub fn parse_trailers<I>(fields: I) -> Result<HeaderMap, MessageError>
where
    I: IntoIterator,
    I::Item: FieldLine,
{
    let headers = split_fields(fields, |_, _| Err(MessageError::PseudoInTrailers))?;
    check_fields(&headers, false)?;
    Ok(headers)
}

/// Splits pseudo-header fields (handed to `pseudo`) from regular fields (collected), checking
/// names, values and order.
fn split_fields<I>(
    fields: I,
    mut pseudo: impl FnMut(&[u8], &[u8]) -> Result<(), MessageError>,
) -> Result<HeaderMap, MessageError>
where
    I: IntoIterator,
    I::Item: FieldLine,
{
    let mut headers = HeaderMap::new();
    for field in fields {
        let name = field.name();
        if name.first() == Some(&b':') {
            // RFC 9114 §4.3: pseudo-header fields come first.
            if !headers.is_empty() {
                return Err(MessageError::PseudoAfterRegular);
            }
            pseudo(name, field.value())?;
            continue;
        }
        // RFC 9114 §4.2: uppercase names are malformed. `HeaderName` would lowercase them.
        if name.iter().any(u8::is_ascii_uppercase) {
            return Err(MessageError::UppercaseName);
        }
        let name = HeaderName::from_bytes(name).map_err(|_| MessageError::InvalidName)?;
        let raw = field.value();
        // RFC 9110 §5.5: no leading or trailing whitespace.
        let padded =
            matches!(raw.first(), Some(b' ' | b'\t')) || matches!(raw.last(), Some(b' ' | b'\t'));
        let mut value = match HeaderValue::from_bytes(raw) {
            Ok(value) if !padded => value,
            _ => return Err(MessageError::InvalidValue(name)),
        };
        value.set_sensitive(field.never_index());
        headers.append(name, value);
    }
    Ok(headers)
}

/// RFC 9114 §4.2: no connection-specific fields; `te: trailers` only, and only in requests.
fn check_fields(headers: &HeaderMap, request: bool) -> Result<(), MessageError> {
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        if headers.contains_key(&name) {
            return Err(MessageError::ConnectionSpecific(name));
        }
    }
    for te in headers.get_all(header::TE) {
        if !request {
            return Err(MessageError::ConnectionSpecific(header::TE));
        }
        if te.as_bytes() != b"trailers" {
            return Err(MessageError::InvalidTe);
        }
    }
    Ok(())
}

/// The `content-length` of a header section: every line and list element must be the same
/// decimal number (RFC 9110 §8.6).
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, MessageError> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(MessageError::InvalidContentLength);
            }
            let n = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(MessageError::InvalidContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(MessageError::InvalidContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// The field lines of a request head: pseudo-header fields first, then the headers, names
/// lowercase (RFC 9114 §4.2, §4.3.1). CONNECT without a [`Protocol`] extension is sent in
/// authority form (RFC 9114 §4.4); with one, as Extended CONNECT (RFC 9220).
///
/// Fails, rather than send a malformed message, when the URI lacks what the method needs or a
/// header is connection-specific. Sensitive header values are marked never-index.
pub fn request_fields<F: FromFieldLine, T>(request: &Request<T>) -> Result<Vec<F>, MessageError> {
    let headers = request.headers();
    check_fields(headers, true)?;
    let uri = request.uri();
    let method = request.method();
    let protocol = request.extensions().get::<Protocol>();
    let mut fields = Vec::with_capacity(headers.len() + 5);
    fields.push(pseudo_line(":method", method.as_str().as_bytes()));
    let authority = uri
        .authority()
        .ok_or(MessageError::MissingPseudo(":authority"))?;
    if method == Method::CONNECT && protocol.is_none() {
        fields.push(pseudo_line(":authority", authority.as_str().as_bytes()));
    } else {
        if protocol.is_some() && method != Method::CONNECT {
            return Err(MessageError::UnexpectedPseudo(":protocol"));
        }
        let scheme = uri.scheme().ok_or(MessageError::MissingPseudo(":scheme"))?;
        let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let path = if path.is_empty() { "/" } else { path };
        fields.push(pseudo_line(":scheme", scheme.as_str().as_bytes()));
        fields.push(pseudo_line(":authority", authority.as_str().as_bytes()));
        fields.push(pseudo_line(":path", path.as_bytes()));
        if let Some(protocol) = protocol {
            fields.push(F::from_field_line(
                Bytes::from_static(b":protocol"),
                protocol.as_bytes().clone(),
                false,
            ));
        }
    }
    push_headers(&mut fields, headers);
    Ok(fields)
}

/// The field lines of a response head: `:status`, then the headers (RFC 9114 §4.3.2).
pub fn response_fields<F: FromFieldLine, T>(
    response: &Response<T>,
) -> Result<Vec<F>, MessageError> {
    let headers = response.headers();
    check_fields(headers, false)?;
    let mut fields = Vec::with_capacity(headers.len() + 1);
    fields.push(pseudo_line(
        ":status",
        response.status().as_str().as_bytes(),
    ));
    push_headers(&mut fields, headers);
    Ok(fields)
}

/// The field lines of a trailer section (RFC 9114 §4.1).
pub fn trailer_fields<F: FromFieldLine>(trailers: &HeaderMap) -> Result<Vec<F>, MessageError> {
    check_fields(trailers, false)?;
    let mut fields = Vec::with_capacity(trailers.len());
    push_headers(&mut fields, trailers);
    Ok(fields)
}

fn pseudo_line<F: FromFieldLine>(name: &'static str, value: &[u8]) -> F {
    F::from_field_line(
        Bytes::from_static(name.as_bytes()),
        Bytes::copy_from_slice(value),
        false,
    )
}

fn push_headers<F: FromFieldLine>(fields: &mut Vec<F>, headers: &HeaderMap) {
    for (name, value) in headers {
        // `HeaderName` is always lowercase.
        fields.push(F::from_field_line(
            Bytes::copy_from_slice(name.as_str().as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
            value.is_sensitive(),
        ));
    }
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Line = (Bytes, Bytes);

    fn lines(pairs: &[(&str, &str)]) -> Vec<Line> {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    Bytes::copy_from_slice(n.as_bytes()),
                    Bytes::copy_from_slice(v.as_bytes()),
                )
            })
            .collect()
    }

    const GET: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.com:4433"),
        (":path", "/a?b=c"),
    ];

    fn with(
        base: &[(&'static str, &'static str)],
        extra: &[(&'static str, &'static str)],
    ) -> Vec<Line> {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        lines(&all)
    }

    fn request_err(fields: &[Line]) -> MessageError {
        let err = parse_request(fields).unwrap_err();
        assert_eq!(Code::from(err.clone()), Code::H3_MESSAGE_ERROR);
        err
    }

    #[test]
    fn known_protocol_tokens_keep_no_received_bytes() {
        // A session keeps its CONNECT request, and with it this token, for its whole life.
        let received = Bytes::copy_from_slice(b"xwebtransport-h3");
        let protocol = Protocol::new(received.slice(1..)).unwrap();
        assert_eq!(protocol, Protocol::WEBTRANSPORT_H3);
        let inside = received
            .as_ptr_range()
            .contains(&protocol.as_bytes().as_ptr());
        assert!(!inside, "the token is a slice of the received bytes");
        // RFC 9110 §5.6.2: any other token is kept as it came.
        let other = Bytes::copy_from_slice(b"my-protocol");
        assert_eq!(Protocol::new(other.clone()).unwrap().as_bytes(), &other);
        assert!(Protocol::new(Bytes::from_static(b"not a token")).is_err());
    }

    #[test]
    fn get_round_trip() {
        let fields = with(
            GET,
            &[("accept", "*/*"), ("cookie", "a=1"), ("cookie", "b=2")],
        );
        let head = parse_request(&fields).unwrap();
        let req = &head.request;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "https://example.com:4433/a?b=c");
        assert_eq!(req.version(), Version::HTTP_3);
        assert_eq!(req.headers().get_all("cookie").iter().count(), 2);
        assert_eq!(head.protocol, None);
        assert_eq!(head.content_length, None);
        let back: Vec<Line> = request_fields(req).unwrap();
        assert_eq!(back, fields);
    }

    #[test]
    fn post_with_content_length() {
        let fields = with(
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "h"),
                (":path", "/"),
            ],
            &[("content-length", "5, 5"), ("te", "trailers")],
        );
        assert_eq!(parse_request(&fields).unwrap().content_length, Some(5));
    }

    #[test]
    fn connect() {
        // RFC 9114 §4.4: :authority only.
        let fields = lines(&[(":method", "CONNECT"), (":authority", "proxy.example:443")]);
        let head = parse_request(&fields).unwrap();
        assert_eq!(head.request.uri().authority().unwrap(), "proxy.example:443");
        assert_eq!(head.request.uri().scheme(), None);
        let back: Vec<Line> = request_fields(&head.request).unwrap();
        assert_eq!(back, fields);

        let mut bad = fields.clone();
        bad.push((Bytes::from_static(b":path"), Bytes::from_static(b"/")));
        bad.swap(1, 2);
        assert_eq!(request_err(&bad), MessageError::UnexpectedPseudo(":path"));
        let bad = lines(&[
            (":method", "CONNECT"),
            (":scheme", "https"),
            (":authority", "a"),
        ]);
        assert_eq!(request_err(&bad), MessageError::UnexpectedPseudo(":scheme"));
        let bad = lines(&[(":method", "CONNECT")]);
        assert_eq!(request_err(&bad), MessageError::MissingPseudo(":authority"));
    }

    #[test]
    fn extended_connect() {
        // RFC 9220 with RFC 8441 §4: :protocol plus :scheme, :authority and :path.
        let fields = lines(&[
            (":method", "CONNECT"),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", "/wt"),
            (":protocol", "webtransport"),
            ("origin", "https://example.com"),
        ]);
        let head = parse_request(&fields).unwrap();
        assert_eq!(head.protocol, Some(Protocol::WEBTRANSPORT));
        assert_eq!(
            head.request.extensions().get::<Protocol>(),
            Some(&Protocol::WEBTRANSPORT)
        );
        assert_eq!(head.request.uri(), "https://example.com/wt");
        let back: Vec<Line> = request_fields(&head.request).unwrap();
        // Sent with :protocol after the other pseudo-headers; parses to the same head.
        assert_eq!(back[4], fields[4]);
        assert_eq!(
            parse_request(&back).unwrap().protocol,
            Some(Protocol::WEBTRANSPORT)
        );

        let missing = lines(&[
            (":method", "CONNECT"),
            (":authority", "a"),
            (":protocol", "websocket"),
        ]);
        assert_eq!(
            request_err(&missing),
            MessageError::MissingPseudo(":scheme")
        );
        let not_connect = with(GET, &[]);
        let mut not_connect = not_connect;
        not_connect.push((
            Bytes::from_static(b":protocol"),
            Bytes::from_static(b"websocket"),
        ));
        assert_eq!(
            request_err(&not_connect),
            MessageError::UnexpectedPseudo(":protocol")
        );
        let bad_token = lines(&[
            (":method", "CONNECT"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/"),
            (":protocol", "web transport"),
        ]);
        assert_eq!(
            request_err(&bad_token),
            MessageError::InvalidPseudoValue(":protocol")
        );
    }

    #[test]
    fn required_pseudo_headers() {
        // RFC 9114 §4.3.1.
        for missing in [":method", ":scheme", ":path"] {
            let fields: Vec<_> = GET.iter().copied().filter(|(n, _)| *n != missing).collect();
            assert_eq!(
                request_err(&lines(&fields)),
                MessageError::MissingPseudo(missing)
            );
        }
        let no_authority: Vec<_> = GET
            .iter()
            .copied()
            .filter(|(n, _)| *n != ":authority")
            .collect();
        assert_eq!(
            request_err(&lines(&no_authority)),
            MessageError::MissingPseudo(":authority")
        );
        // Host stands in for :authority.
        let host = with(&no_authority, &[("host", "example.com")]);
        assert_eq!(
            parse_request(&host).unwrap().request.uri(),
            "https://example.com/a?b=c"
        );
        let mismatch = with(GET, &[("host", "other.example")]);
        assert_eq!(request_err(&mismatch), MessageError::AuthorityMismatch);
    }

    #[test]
    fn pseudo_header_rules() {
        // RFC 9114 §4.3: first, defined, once.
        let mut after = lines(&[("accept", "*/*")]);
        after.extend(lines(GET));
        assert_eq!(request_err(&after), MessageError::PseudoAfterRegular);
        let unknown = with(GET, &[])
            .into_iter()
            .chain(lines(&[(":foo", "x")]))
            .collect::<Vec<_>>();
        assert_eq!(request_err(&unknown), MessageError::UnknownPseudo);
        let status = with(GET, &[])
            .into_iter()
            .chain(lines(&[(":status", "200")]))
            .collect::<Vec<_>>();
        assert_eq!(request_err(&status), MessageError::UnknownPseudo);
        let dup = lines(&[
            (":method", "GET"),
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/"),
        ]);
        assert_eq!(request_err(&dup), MessageError::DuplicatePseudo(":method"));
    }

    #[test]
    fn invalid_pseudo_values() {
        let cases: &[(&str, &str, &str)] = &[
            (":path", "", ":path"),
            (":path", "relative", ":path"),
            (":path", "*", ":path"),
            (":method", "G T", ":method"),
            (":authority", "user@example.com", ":authority"),
        ];
        for (name, value, expected) in cases {
            let fields: Vec<_> = GET
                .iter()
                .map(|(n, v)| if n == name { (*n, *value) } else { (*n, *v) })
                .collect();
            assert_eq!(
                request_err(&lines(&fields)),
                MessageError::InvalidPseudoValue(expected),
                "{name}: {value}"
            );
        }
        let options = lines(&[
            (":method", "OPTIONS"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "*"),
        ]);
        assert!(parse_request(&options).is_ok());
    }

    #[test]
    fn field_names_and_values() {
        // RFC 9114 §4.2: lowercase only.
        assert_eq!(
            request_err(&with(GET, &[("Accept", "x")])),
            MessageError::UppercaseName
        );
        assert_eq!(
            request_err(&with(GET, &[("bad name", "x")])),
            MessageError::InvalidName
        );
        assert_eq!(
            request_err(&with(GET, &[("", "x")])),
            MessageError::InvalidName
        );
        for value in ["a\nb", "a\rb", "a\0b", " a", "a\t"] {
            let fields = vec![(
                Bytes::from_static(b"x"),
                Bytes::copy_from_slice(value.as_bytes()),
            )];
            let mut all = lines(GET);
            all.extend(fields);
            assert_eq!(
                request_err(&all),
                MessageError::InvalidValue(HeaderName::from_static("x")),
                "{value:?}"
            );
        }
    }

    #[test]
    fn connection_specific_fields() {
        // RFC 9114 §4.2.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            let err = request_err(&with(GET, &[(name, "x")]));
            assert_eq!(
                err,
                MessageError::ConnectionSpecific(HeaderName::from_static(name))
            );
        }
        assert_eq!(
            request_err(&with(GET, &[("te", "gzip")])),
            MessageError::InvalidTe
        );
        assert!(parse_request(with(GET, &[("te", "trailers")])).is_ok());
        let response = lines(&[(":status", "200"), ("te", "trailers")]);
        assert!(parse_response(&response).is_err());
    }

    #[test]
    fn content_length_syntax() {
        for bad in ["", "abc", "-1", "1, 2", "99999999999999999999999"] {
            assert_eq!(
                request_err(&with(GET, &[("content-length", bad)])),
                MessageError::InvalidContentLength,
                "{bad:?}"
            );
        }
        let two = with(GET, &[("content-length", "3"), ("content-length", "4")]);
        assert_eq!(request_err(&two), MessageError::InvalidContentLength);
    }

    #[test]
    fn responses() {
        let fields = lines(&[(":status", "204"), ("server", "quay")]);
        let head = parse_response(&fields).unwrap();
        assert_eq!(head.response.status(), StatusCode::NO_CONTENT);
        assert!(!head.is_interim());
        let back: Vec<Line> = response_fields(&head.response).unwrap();
        assert_eq!(back, fields);
        assert!(
            parse_response(lines(&[(":status", "103")]))
                .unwrap()
                .is_interim()
        );

        // RFC 9114 §4.3.2: exactly one :status, and only :status.
        let err = |f: &[(&str, &str)]| {
            let e = parse_response(lines(f)).unwrap_err();
            assert_eq!(Code::from(e.clone()), Code::H3_MESSAGE_ERROR);
            e
        };
        assert_eq!(
            err(&[("server", "x")]),
            MessageError::MissingPseudo(":status")
        );
        assert_eq!(
            err(&[(":status", "200"), (":status", "200")]),
            MessageError::DuplicatePseudo(":status")
        );
        assert_eq!(
            err(&[(":status", "200"), (":path", "/")]),
            MessageError::UnknownPseudo
        );
        for bad in ["20", "2000", "abc", "099", "600"] {
            assert_eq!(
                err(&[(":status", bad)]),
                MessageError::InvalidPseudoValue(":status")
            );
        }
    }

    #[test]
    fn trailers() {
        let fields = lines(&[("grpc-status", "0")]);
        let map = parse_trailers(&fields).unwrap();
        assert_eq!(map["grpc-status"], "0");
        let back: Vec<Line> = trailer_fields(&map).unwrap();
        assert_eq!(back, fields);
        // RFC 9114 §4.3: no pseudo-header fields in trailers.
        let err = parse_trailers(lines(&[(":status", "200")])).unwrap_err();
        assert_eq!(err, MessageError::PseudoInTrailers);
    }

    #[test]
    fn never_index_round_trips() {
        let mut fields: Vec<(Bytes, Bytes, bool)> =
            lines(GET).into_iter().map(|(n, v)| (n, v, false)).collect();
        fields.push((
            Bytes::from_static(b"authorization"),
            Bytes::from_static(b"secret"),
            true,
        ));
        let head = parse_request(&fields).unwrap();
        assert!(head.request.headers()["authorization"].is_sensitive());
        let back: Vec<(Bytes, Bytes, bool)> = request_fields(&head.request).unwrap();
        assert_eq!(back, fields);
    }

    #[test]
    fn sending_refuses_malformed_heads() {
        let mut req = Request::new(());
        *req.uri_mut() = Uri::from_static("/relative");
        assert_eq!(
            request_fields::<Line, _>(&req).unwrap_err(),
            MessageError::MissingPseudo(":authority")
        );
        let mut req = Request::new(());
        *req.uri_mut() = Uri::from_static("https://example.com/");
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(
            request_fields::<Line, _>(&req).unwrap_err(),
            MessageError::ConnectionSpecific(header::CONNECTION)
        );
    }
}
