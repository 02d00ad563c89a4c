//! The WebTransport CONNECT request and its response headers (draft-ietf-webtrans-http3-16
//! §3.2, §3.3; draft-02 for Chromium).
//!
//! This module reads what a request asks for (the upgrade token, the draft-02 header, the
//! offered subprotocols) and writes the matching response headers. It does not validate the
//! HTTP/3 message itself (`quay_h3::proto::headers` does) or decide whether to accept.

use http::{HeaderMap, HeaderValue};
use quay_h3::proto::headers::Protocol;

/// The request header Chromium sends with draft-02 (`sec-webtransport-http3-draft02: 1`).
pub const DRAFT02_REQUEST_HEADER: &str = "sec-webtransport-http3-draft02";
/// The response header that confirms draft-02 to Chromium (`sec-webtransport-http3-draft:
/// draft02`).
pub const DRAFT02_RESPONSE_HEADER: &str = "sec-webtransport-http3-draft";
/// The request header listing the subprotocols a client offers (a structured-field list of
/// strings, draft-16 §3.3).
pub const AVAILABLE_PROTOCOLS_HEADER: &str = "wt-available-protocols";
/// The response header naming the subprotocol the server chose (a structured-field string).
pub const PROTOCOL_HEADER: &str = "wt-protocol";

/// Whether an extended CONNECT `:protocol` asks for a WebTransport session: `webtransport`
/// (draft-02 to -14) or `webtransport-h3` (draft-15 and later).
pub fn is_webtransport(protocol: &Protocol) -> bool {
    *protocol == Protocol::WEBTRANSPORT || *protocol == Protocol::WEBTRANSPORT_H3
}

/// Whether the request carries Chromium's draft-02 header, which the response must answer.
pub fn asks_draft02(headers: &HeaderMap) -> bool {
    headers
        .get(DRAFT02_REQUEST_HEADER)
        .is_some_and(|value| value.as_bytes() == b"1")
}

/// The subprotocols a request offers, most preferred first. Empty when the header is absent, or
/// malformed, or holds anything but strings: draft-16 §3.3 says to ignore such a field whole.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    let lines: Vec<&[u8]> = headers
        .get_all(AVAILABLE_PROTOCOLS_HEADER)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if lines.is_empty() {
        return Vec::new();
    }
    // Several header lines form one list, joined with commas (RFC 9651 §4.2).
    let joined = lines.join(&b","[..]);
    let Ok(list) = sfv::Parser::new(&joined).parse_list::<sfv::List>() else {
        return Vec::new();
    };
    let mut protocols = Vec::with_capacity(list.len());
    for entry in list {
        let sfv::ListEntry::Item(item) = entry else {
            return Vec::new();
        };
        let Some(protocol) = item.bare_item.as_string() else {
            return Vec::new();
        };
        protocols.push(protocol.as_str().to_owned());
    }
    protocols
}

/// The subprotocol a response names, or `None` when it names none or the field is malformed.
pub fn chosen_protocol(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(PROTOCOL_HEADER)?;
    let item = sfv::Parser::new(value.as_bytes())
        .parse_item::<sfv::Item>()
        .ok()?;
    Some(item.bare_item.as_string()?.as_str().to_owned())
}

/// `protocols` as a `wt-available-protocols` value, or `None` if one of them cannot be a
/// structured-field string (only printable ASCII can).
pub fn encode_offered_protocols(protocols: &[String]) -> Option<HeaderValue> {
    let mut serializer = sfv::ListSerializer::new();
    for protocol in protocols {
        serializer.bare_item(sfv::StringRef::from_str(protocol).ok()?);
    }
    HeaderValue::from_str(&serializer.finish()?).ok()
}

/// `protocol` as a `wt-protocol` value, or `None` if it cannot be a structured-field string.
pub fn encode_chosen_protocol(protocol: &str) -> Option<HeaderValue> {
    let string = sfv::StringRef::from_str(protocol).ok()?;
    let value = sfv::ItemSerializer::new().bare_item(string).finish();
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tokens() {
        assert!(is_webtransport(&Protocol::WEBTRANSPORT));
        assert!(is_webtransport(&Protocol::WEBTRANSPORT_H3));
        assert!(!is_webtransport(&Protocol::WEBSOCKET));
    }

    #[test]
    fn draft02_header() {
        assert!(asks_draft02(&headers(&[(DRAFT02_REQUEST_HEADER, "1")])));
        assert!(!asks_draft02(&headers(&[(DRAFT02_REQUEST_HEADER, "0")])));
        assert!(!asks_draft02(&HeaderMap::new()));
    }

    #[test]
    fn offered_protocols_parse_and_ignore_malformed_fields() {
        let offered = headers(&[(AVAILABLE_PROTOCOLS_HEADER, r#""moq-00", "chat";q=1"#)]);
        assert_eq!(offered_protocols(&offered), ["moq-00", "chat"]);
        let split = headers(&[
            (AVAILABLE_PROTOCOLS_HEADER, r#""a""#),
            (AVAILABLE_PROTOCOLS_HEADER, r#""b""#),
        ]);
        assert_eq!(offered_protocols(&split), ["a", "b"]);
        // A token instead of a string, an inner list, or bad syntax: the whole field is ignored.
        for bad in [r#""a", b"#, r#"("a" "b")"#, r#""unterminated"#] {
            let map = headers(&[(AVAILABLE_PROTOCOLS_HEADER, bad)]);
            assert!(offered_protocols(&map).is_empty(), "{bad}");
        }
        assert!(offered_protocols(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn protocol_values_round_trip() {
        let value = encode_chosen_protocol("moq-00").unwrap();
        assert_eq!(value, r#""moq-00""#);
        let mut map = HeaderMap::new();
        map.insert(PROTOCOL_HEADER, value);
        assert_eq!(chosen_protocol(&map).as_deref(), Some("moq-00"));
        map.insert(PROTOCOL_HEADER, HeaderValue::from_static("token"));
        assert_eq!(chosen_protocol(&map), None);

        let offered = ["a".to_owned(), "b \"q\"".to_owned()];
        let value = encode_offered_protocols(&offered).unwrap();
        let mut map = HeaderMap::new();
        map.insert(AVAILABLE_PROTOCOLS_HEADER, value);
        assert_eq!(offered_protocols(&map), offered);
        assert_eq!(encode_chosen_protocol("é"), None);
        assert_eq!(encode_offered_protocols(&[]), None);
    }
}
