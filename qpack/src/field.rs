//! Field lines as QPACK sees them.

use bytes::Bytes;

/// Per-entry overhead that RFC 9204 §3.2.1 adds to name and value lengths when sizing a dynamic
/// table entry; RFC 9114 §4.2.2 uses the same 32 to size a field section.
pub const ENTRY_OVERHEAD: u64 = 32;

/// One field line: a name, a value and the never-index flag.
///
/// Names and values are plain bytes; QPACK does not check them against HTTP's field syntax
/// (that, and conversion to `http::HeaderMap`, belongs to the HTTP/3 layer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    /// The field name (lowercase in HTTP/3).
    pub name: Bytes,
    /// The field value.
    pub value: Bytes,
    /// The N bit (RFC 9204 §4.5.4): this field must always be sent as a literal, here and by
    /// any intermediary that forwards it. The encoder never inserts such a field into the
    /// dynamic table; the decoder sets it when the peer sent the field with the N bit.
    pub never_index: bool,
}

impl Field {
    /// A field the encoder may compress with the dynamic table.
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            never_index: false,
        }
    }

    /// A sensitive field: sent as a literal with the N bit, never added to a dynamic table.
    pub fn sensitive(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            never_index: true,
        }
    }

    /// Size as RFC 9204 §3.2.1 and RFC 9114 §4.2.2 count it: name + value + 32 bytes.
    pub fn size(&self) -> u64 {
        entry_size(&self.name, &self.value)
    }
}

pub(crate) fn entry_size(name: &[u8], value: &[u8]) -> u64 {
    name.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD
}
