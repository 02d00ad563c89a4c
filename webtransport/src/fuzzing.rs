//! Entry points for the fuzz targets in `fuzz/` (`wt_*`), also replayed on their seed corpora
//! by `tests/fuzz_seeds.rs`. Each one must never panic on any input, and checks that whatever
//! decodes re-encodes to something that decodes to the same value.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use quay_h3::proto::capsule::Capsule;

use crate::proto::capsule::WtCapsule;
use crate::proto::connect;

/// Decodes `data` as one capsule, then as a WebTransport capsule.
pub fn capsule(data: &[u8]) {
    let Ok(capsule) = Capsule::decode(&mut Bytes::copy_from_slice(data), 64 * 1024) else {
        return;
    };
    if let Ok(Some(decoded)) = WtCapsule::decode(&capsule) {
        let again = WtCapsule::decode(&decoded.to_capsule());
        assert_eq!(again, Ok(Some(decoded)));
    }
}

/// Parses `data` as a `wt-available-protocols` header value.
pub fn available_protocols(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(connect::AVAILABLE_PROTOCOLS_HEADER, value);
    let protocols = connect::offered_protocols(&headers);
    if let Some(encoded) = connect::encode_offered_protocols(&protocols) {
        headers.insert(connect::AVAILABLE_PROTOCOLS_HEADER, encoded);
        assert_eq!(connect::offered_protocols(&headers), protocols);
    }
}
