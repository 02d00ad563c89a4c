//! Reports of the changes to a dynamic table (RFC 9204 §3.2), for logs such as qlog.
//!
//! This module owns [`TableEvent`] and the recorder the [`Encoder`](crate::Encoder) and
//! [`Decoder`](crate::Decoder) keep. A recorder that was not asked to record holds no buffer
//! and costs one branch per change; the encoder and decoder decide when a change happens, and
//! the caller decides what to do with the reports.

use bytes::Bytes;

/// One change to a dynamic table, in the order the changes happened. Indices are absolute
/// (RFC 9204 §3.2.4: the first entry ever inserted is 0).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableEvent {
    /// The table capacity was set (RFC 9204 §3.2.3, the Set Dynamic Table Capacity
    /// instruction, §4.3.1): sent by an encoder, received by a decoder. Entries that no longer
    /// fit are reported as evicted right after it.
    Capacity(u64),
    /// An entry was inserted (RFC 9204 §3.2.2: Insert with Name Reference, Insert with
    /// Literal Name or Duplicate, §4.3.2 to §4.3.4). The entries it evicted to make room are
    /// reported just before it.
    Inserted {
        /// The new entry's absolute index.
        index: u64,
        /// Its name.
        name: Bytes,
        /// Its value.
        value: Bytes,
    },
    /// The oldest entry was evicted (RFC 9204 §3.2.2, §3.2.3).
    Evicted {
        /// Its absolute index.
        index: u64,
    },
}

/// The [`TableEvent`]s of one table, kept only once [`TableLog::enable`] was called.
#[derive(Debug, Default)]
pub(crate) struct TableLog(Option<Vec<TableEvent>>);

impl TableLog {
    /// Starts recording (no allocation until the first change).
    pub(crate) fn enable(&mut self) {
        self.0.get_or_insert_with(Vec::new);
    }

    /// Records the event `event` makes, if recording: nothing is built otherwise.
    #[inline]
    pub(crate) fn record(&mut self, event: impl FnOnce() -> TableEvent) {
        if let Some(events) = &mut self.0 {
            events.push(event());
        }
    }

    /// The events recorded since the last call, oldest first; the buffer is kept for reuse.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = TableEvent> + '_ {
        self.0.iter_mut().flat_map(|events| events.drain(..))
    }
}
