//! Helpers for the unit tests.

use bytes::Bytes;

use crate::TableEvent;

/// Bytes from hex digits; white space is ignored.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The report of an insert at absolute index `index` of `name: value`.
pub(crate) fn inserted(index: u64, name: &'static str, value: &'static str) -> TableEvent {
    TableEvent::Inserted {
        index,
        name: Bytes::from_static(name.as_bytes()),
        value: Bytes::from_static(value.as_bytes()),
    }
}
