//! The QPACK decoder: decodes field sections, applies the peer's encoder stream and produces
//! our decoder stream.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::{Error, Reason};
use crate::field::{ENTRY_OVERHEAD, Field, entry_size};
use crate::static_table;
use crate::table_event::{TableEvent, TableLog};
use crate::wire::{RawString, Reader, WireError, put_int};

/// Limits the decoder enforces; the first two are what we announce in SETTINGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecoderConfig {
    /// Our `SETTINGS_QPACK_MAX_TABLE_CAPACITY` (RFC 9204 §5): the largest dynamic table the
    /// peer's encoder may use. Default 4096.
    pub max_table_capacity: u64,
    /// Our `SETTINGS_QPACK_BLOCKED_STREAMS` (RFC 9204 §5): how many streams may wait for
    /// encoder-stream data at once. Default 16.
    pub max_blocked_streams: u64,
    /// Our `SETTINGS_MAX_FIELD_SECTION_SIZE` (RFC 9114 §4.2.2), counted as name + value + 32
    /// per field. Default 64 KiB.
    pub max_field_section_size: u64,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_table_capacity: 4096,
            max_blocked_streams: 16,
            max_field_section_size: 64 * 1024,
        }
    }
}

impl DecoderConfig {
    /// Sets [`DecoderConfig::max_table_capacity`].
    pub fn max_table_capacity(mut self, value: u64) -> Self {
        self.max_table_capacity = value;
        self
    }

    /// Sets [`DecoderConfig::max_blocked_streams`].
    pub fn max_blocked_streams(mut self, value: u64) -> Self {
        self.max_blocked_streams = value;
        self
    }

    /// Sets [`DecoderConfig::max_field_section_size`].
    pub fn max_field_section_size(mut self, value: u64) -> Self {
        self.max_field_section_size = value;
        self
    }

    /// floor(max_table_capacity / 32), used to decode the Required Insert Count.
    fn max_entries(&self) -> u64 {
        self.max_table_capacity / ENTRY_OVERHEAD
    }
}

/// The outcome of [`Decoder::decode_section`].
///
/// Not `#[non_exhaustive]`: a field section is either decoded or waiting, and callers should
/// match both cases without a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The field lines, in order.
    Fields(Vec<Field>),
    /// The section needs dynamic table entries that have not arrived yet (RFC 9204 §2.2.1).
    /// The decoder keeps it; it comes back from [`Decoder::handle_encoder_stream`] once the
    /// entries arrive, unless [`Decoder::cancel_stream`] drops it.
    Blocked,
}

/// A field section that was blocked and has now been decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unblocked {
    /// The stream the section was received on.
    pub stream_id: u64,
    /// The fields, or [`Error::FieldSectionTooLarge`] (any other error fails the whole call).
    pub result: Result<Vec<Field>, Error>,
}

/// A QPACK decoder for one connection.
///
/// Sans-IO: it never reads or writes a stream. The HTTP/3 layer:
/// 1. creates it with our settings ([`DecoderConfig`]) and announces them in SETTINGS;
/// 2. passes every chunk read from the peer's encoder stream to
///    [`handle_encoder_stream`](Self::handle_encoder_stream) (chunks may split instructions
///    anywhere), which returns the field sections this unblocked;
/// 3. passes each HEADERS frame payload to [`decode_section`](Self::decode_section);
/// 4. calls [`cancel_stream`](Self::cancel_stream) when it resets or stops reading a request
///    stream before its field sections were decoded;
/// 5. after any of these, sends what [`poll_decoder_stream`](Self::poll_decoder_stream)
///    returns on our decoder stream.
///
/// Every error is a connection error carrying its RFC 9204 §6 code, except
/// [`Error::FieldSectionTooLarge`], which concerns one stream only.
///
/// Until the peer's encoder uses the dynamic table, the decoder holds no more than its
/// settings: the table, the blocked sections and the decoder-stream output are allocated with
/// the first encoder-stream byte, the first section that references the table, or the first
/// Stream Cancellation, whichever comes first.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    /// Created on first use (see above).
    state: Option<Box<State>>,
}

/// The dynamic table and everything that only exists because of it.
#[derive(Debug)]
struct State {
    config: DecoderConfig,
    table: Table,
    /// The start of an encoder instruction whose end has not arrived yet.
    partial: Vec<u8>,
    blocked: Vec<BlockedSection>,
    /// Decoder-stream bytes not yet handed out.
    out: Vec<u8>,
    /// The Known Received Count as the peer's encoder sees it (what we have told it).
    acknowledged: u64,
}

/// An encoded field section prefix (RFC 9204 §4.5.1), decoded.
#[derive(Debug, Clone, Copy)]
struct Prefix {
    required: u64,
    base: u64,
    /// Where the field lines start in the section.
    start: usize,
}

#[derive(Debug)]
struct BlockedSection {
    stream_id: u64,
    prefix: Prefix,
    data: Bytes,
}

impl Decoder {
    /// A decoder that enforces `config`; announce the same values in SETTINGS.
    pub fn new(config: DecoderConfig) -> Self {
        Self {
            config,
            state: None,
        }
    }

    /// The limits this decoder enforces.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Number of entries inserted into the dynamic table so far (the Insert Count).
    pub fn insert_count(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.table.insert_count())
    }

    /// The size of the dynamic table now (RFC 9204 §3.2.1: each entry's name and value lengths
    /// plus 32), and how many entries it holds.
    pub fn table_size(&self) -> (u64, usize) {
        self.state
            .as_ref()
            .map_or((0, 0), |s| (s.table.size, s.table.entries.len()))
    }

    /// Number of streams with a blocked field section.
    pub fn blocked_streams(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.blocked_streams())
    }

    /// Decodes one encoded field section (a HEADERS frame payload) received on `stream_id`.
    ///
    /// A blocked section is kept (its bytes count against the stream's flow control in the
    /// HTTP/3 layer, RFC 9204 §2.2.1) until the inserts it needs arrive or the stream is
    /// cancelled; at most `max_blocked_streams` streams can be blocked at once.
    pub fn decode_section(&mut self, stream_id: u64, section: Bytes) -> Result<Decoded, Error> {
        let prefix = Prefix::parse(&section, self.insert_count(), self.config.max_entries())?;
        match &mut self.state {
            Some(state) => state.decode_section(stream_id, prefix, section),
            // Nothing is blocked, so a section that needs no entry decodes at once, and it is
            // not acknowledged: the state is not needed.
            None if prefix.required == 0 => {
                field_lines(&self.config, None, prefix, &section).map(Decoded::Fields)
            }
            None => self.state_mut().decode_section(stream_id, prefix, section),
        }
    }

    /// Processes a chunk of the peer's encoder stream and returns the field sections that the
    /// new entries unblocked, in the order they were received.
    ///
    /// An instruction cut at the end of `data` is kept until the rest arrives; its size is
    /// bounded by the table capacity, so a peer cannot make this buffer grow without limit.
    pub fn handle_encoder_stream(&mut self, data: &[u8]) -> Result<Vec<Unblocked>, Error> {
        if data.is_empty() {
            // No instruction, so no insert and nothing unblocked.
            return Ok(Vec::new());
        }
        self.state_mut().handle_encoder_stream(data)
    }

    /// Abandons `stream_id` (it was reset, or we stopped reading it): drops its blocked field
    /// section, if any, and tells the peer's encoder with a Stream Cancellation
    /// (RFC 9204 §4.4.2) so that it can release the entries the stream referenced.
    pub fn cancel_stream(&mut self, stream_id: u64) {
        if let Some(state) = &mut self.state {
            state.blocked.retain(|b| b.stream_id != stream_id);
        }
        // RFC 9204 §2.2.2.2: with no dynamic table there is nothing to release. With one, the
        // stream may have referenced entries whose inserts we have not read yet, so the
        // cancellation goes out even if nothing was inserted.
        if self.config.max_table_capacity > 0 {
            put_int(&mut self.state_mut().out, 6, 0x40, stream_id);
        }
    }

    /// Bytes to send on our decoder stream, if any.
    ///
    /// Insert Count Increments are computed here, so that entries already covered by a Section
    /// Acknowledgment are not acknowledged twice (RFC 9204 §2.2.2.3).
    pub fn poll_decoder_stream(&mut self) -> Option<Bytes> {
        self.state.as_mut()?.poll_decoder_stream()
    }

    /// Makes the decoder record each change to its dynamic table (the capacity the peer's
    /// encoder sets, the inserts and evictions) for [`Decoder::take_table_events`]. Without
    /// this call nothing is recorded or allocated for it; with it, the table state (otherwise
    /// made on first use) is made now.
    pub fn record_table_events(&mut self) {
        self.state_mut().table.log.enable();
    }

    /// The changes to the dynamic table since the last call, oldest first (none unless
    /// [`Decoder::record_table_events`] was called).
    pub fn take_table_events(&mut self) -> impl Iterator<Item = TableEvent> + '_ {
        self.state
            .iter_mut()
            .flat_map(|state| state.table.log.drain())
    }

    fn state_mut(&mut self) -> &mut State {
        self.state
            .get_or_insert_with(|| Box::new(State::new(self.config)))
    }
}

impl Prefix {
    /// Reads the prefix of `section`, given the Insert Count.
    fn parse(section: &Bytes, insert_count: u64, max_entries: u64) -> Result<Self, Error> {
        let fail = |e: WireError| match e {
            WireError::Incomplete => Error::DecompressionFailed(Reason::Truncated),
            WireError::Invalid(r) => Error::DecompressionFailed(r),
        };
        let mut r = Reader::new(section);
        let encoded = r.int(8).map_err(fail)?;
        let required = required_insert_count(encoded, insert_count, max_entries)?;
        let negative = r.peek().map_err(fail)? & 0x80 != 0;
        let delta = r.int(7).map_err(fail)?;
        // RFC 9204 §4.5.1.2: the Base is Required Insert Count plus or minus (delta + 1); it
        // must not go below zero.
        let base = if negative {
            required
                .checked_sub(delta + 1)
                .ok_or(Error::DecompressionFailed(Reason::InvalidBase))?
        } else {
            required + delta
        };
        Ok(Self {
            required,
            base,
            start: r.position(),
        })
    }
}

/// RFC 9204 §4.5.1.1: rebuilds the Required Insert Count from its encoding.
fn required_insert_count(encoded: u64, insert_count: u64, max_entries: u64) -> Result<u64, Error> {
    if encoded == 0 {
        return Ok(0);
    }
    let invalid = Error::DecompressionFailed(Reason::InvalidRequiredInsertCount);
    let full_range = 2 * max_entries;
    if encoded > full_range {
        return Err(invalid);
    }
    let max_value = insert_count + max_entries;
    let max_wrapped = max_value / full_range * full_range;
    let mut required = max_wrapped + encoded - 1;
    if required > max_value {
        if required <= full_range {
            return Err(invalid);
        }
        required -= full_range;
    }
    if required == 0 {
        return Err(invalid);
    }
    Ok(required)
}

/// Decodes the field lines of a section whose Required Insert Count is satisfied, against
/// `table` (`None`: the dynamic table is empty).
fn field_lines(
    config: &DecoderConfig,
    table: Option<&Table>,
    prefix: Prefix,
    data: &Bytes,
) -> Result<Vec<Field>, Error> {
    let limit = config.max_field_section_size;
    let too_large = Error::FieldSectionTooLarge { limit };
    let mut r = Reader::at(data, prefix.start);
    let lines = FieldLines {
        table,
        required: prefix.required,
        base: prefix.base,
        data,
    };
    let mut fields = Vec::new();
    let mut size = 0u64;
    while !r.is_empty() {
        let budget = limit.saturating_sub(size);
        let field = lines.next(&mut r, budget).map_err(|e| match e {
            LineError::TooLarge => too_large.clone(),
            LineError::Wire(WireError::Incomplete) => Error::DecompressionFailed(Reason::Truncated),
            LineError::Wire(WireError::Invalid(r)) => Error::DecompressionFailed(r),
        })?;
        size += field.size();
        if size > limit {
            return Err(too_large);
        }
        fields.push(field);
    }
    Ok(fields)
}

impl State {
    fn new(config: DecoderConfig) -> Self {
        Self {
            config,
            table: Table::default(),
            partial: Vec::new(),
            blocked: Vec::new(),
            out: Vec::new(),
            acknowledged: 0,
        }
    }

    fn blocked_streams(&self) -> usize {
        let mut streams: Vec<u64> = self.blocked.iter().map(|b| b.stream_id).collect();
        streams.sort_unstable();
        streams.dedup();
        streams.len()
    }

    fn decode_section(
        &mut self,
        stream_id: u64,
        prefix: Prefix,
        section: Bytes,
    ) -> Result<Decoded, Error> {
        // A later section (trailers) on a stream whose earlier section is still blocked waits
        // behind it, so that sections come out in order.
        let queued = self.blocked.iter().any(|b| b.stream_id == stream_id);
        if queued || prefix.required > self.table.insert_count() {
            // RFC 9204 §2.2.1: wait for the inserts, within our blocked-streams promise.
            if !queued && self.blocked_streams() as u64 >= self.config.max_blocked_streams {
                return Err(Error::DecompressionFailed(Reason::TooManyBlockedStreams));
            }
            self.blocked.push(BlockedSection {
                stream_id,
                prefix,
                data: section,
            });
            return Ok(Decoded::Blocked);
        }
        self.finish_section(stream_id, prefix, &section)
            .map(Decoded::Fields)
    }

    fn handle_encoder_stream(&mut self, data: &[u8]) -> Result<Vec<Unblocked>, Error> {
        let before = self.table.insert_count();
        if self.partial.is_empty() {
            let used = self.apply_instructions(data)?;
            self.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(data);
            let used = self.apply_instructions(&buf)?;
            buf.drain(..used);
            self.partial = buf;
        }
        if self.table.insert_count() == before || self.blocked.is_empty() {
            return Ok(Vec::new());
        }
        let count = self.table.insert_count();
        let mut unblocked = Vec::new();
        // Streams with a section still blocked: their later sections must keep waiting.
        let mut waiting: Vec<u64> = Vec::new();
        let mut i = 0;
        while i < self.blocked.len() {
            let stream_id = self.blocked[i].stream_id;
            if self.blocked[i].prefix.required > count || waiting.contains(&stream_id) {
                waiting.push(stream_id);
                i += 1;
                continue;
            }
            let b = self.blocked.remove(i);
            let result = match self.finish_section(b.stream_id, b.prefix, &b.data) {
                Err(e @ Error::FieldSectionTooLarge { .. }) => Err(e),
                Err(e) => return Err(e),
                Ok(fields) => Ok(fields),
            };
            unblocked.push(Unblocked {
                stream_id: b.stream_id,
                result,
            });
        }
        Ok(unblocked)
    }

    fn poll_decoder_stream(&mut self) -> Option<Bytes> {
        let count = self.table.insert_count();
        if count > self.acknowledged {
            put_int(&mut self.out, 6, 0x00, count - self.acknowledged);
            self.acknowledged = count;
        }
        if self.out.is_empty() {
            None
        } else {
            Some(Bytes::from(std::mem::take(&mut self.out)))
        }
    }

    /// Decodes the field lines of a section whose Required Insert Count is satisfied, then
    /// acknowledges it if it used the dynamic table.
    fn finish_section(
        &mut self,
        stream_id: u64,
        prefix: Prefix,
        data: &Bytes,
    ) -> Result<Vec<Field>, Error> {
        let result = field_lines(&self.config, Some(&self.table), prefix, data);
        // RFC 9204 §4.4.1: acknowledge every section with a non-zero Required Insert Count.
        // A section that is merely too large was still fully understood, so it is acknowledged
        // too and the peer's encoder can release its references.
        let understood = matches!(result, Ok(_) | Err(Error::FieldSectionTooLarge { .. }));
        if prefix.required > 0 && understood {
            put_int(&mut self.out, 7, 0x80, stream_id);
            self.acknowledged = self.acknowledged.max(prefix.required);
        }
        result
    }

    /// Applies every complete encoder instruction at the start of `buf`; returns the number of
    /// bytes used (the rest is the start of an instruction).
    fn apply_instructions(&mut self, buf: &[u8]) -> Result<usize, Error> {
        let mut r = Reader::new(buf);
        loop {
            let start = r.position();
            if r.is_empty() {
                return Ok(start);
            }
            match self.apply_instruction(&mut r) {
                Ok(()) => {}
                Err(WireError::Incomplete) => return Ok(start),
                Err(WireError::Invalid(reason)) => return Err(Error::EncoderStream(reason)),
            }
        }
    }

    /// RFC 9204 §4.3: one encoder instruction. Nothing changes unless the whole instruction is
    /// present and valid.
    fn apply_instruction(&mut self, r: &mut Reader<'_>) -> Result<(), WireError> {
        let first = r.peek()?;
        // An entry must fit in the table, so no string may be longer than the capacity; a
        // Huffman string can take up to 30/8 of its decoded length.
        let room = self.table.capacity.saturating_sub(ENTRY_OVERHEAD) as usize;
        let encoded_limit = room.saturating_mul(4);
        if first & 0x80 != 0 {
            // §4.3.2 Insert with Name Reference.
            let is_static = first & 0x40 != 0;
            let index = r.int(6)?;
            let value = r.string(8, encoded_limit)?;
            let name = if is_static {
                Bytes::from_static(
                    static_table::get(index)
                        .ok_or(Reason::InvalidStaticIndex)?
                        .0,
                )
            } else {
                let abs = self.table.relative_to_absolute(index)?;
                self.table
                    .get(abs)
                    .ok_or(Reason::InvalidDynamicIndex)?
                    .0
                    .clone()
            };
            let value = decode_owned(r, value, room.saturating_sub(name.len()))?;
            self.table.insert(name, value)?;
        } else if first & 0x40 != 0 {
            // §4.3.3 Insert with Literal Name.
            let name = r.string(6, encoded_limit)?;
            let value = r.string(8, encoded_limit)?;
            let name = decode_owned(r, name, room)?;
            let value = decode_owned(r, value, room - name.len())?;
            self.table.insert(name, value)?;
        } else if first & 0x20 != 0 {
            // §4.3.1 Set Dynamic Table Capacity: at most our advertised maximum.
            let capacity = r.int(5)?;
            if capacity > self.config.max_table_capacity {
                return Err(Reason::CapacityExceeded.into());
            }
            self.table.set_capacity(capacity);
        } else {
            // §4.3.4 Duplicate.
            let index = r.int(5)?;
            let abs = self.table.relative_to_absolute(index)?;
            let (name, value) = self
                .table
                .get(abs)
                .ok_or(Reason::InvalidDynamicIndex)?
                .clone();
            self.table.insert(name, value)?;
        }
        Ok(())
    }
}

/// Decodes an encoder-stream string into owned bytes, at most `limit` of them.
fn decode_owned(r: &Reader<'_>, raw: RawString, limit: usize) -> Result<Bytes, WireError> {
    let mut out = Vec::new();
    r.decode_string(raw, limit, &mut out).map_err(|e| match e {
        Reason::StringTooLong => Reason::EntryTooLarge,
        e => e,
    })?;
    Ok(Bytes::from(out))
}

enum LineError {
    Wire(WireError),
    TooLarge,
}

impl From<WireError> for LineError {
    fn from(e: WireError) -> Self {
        Self::Wire(e)
    }
}

impl From<Reason> for LineError {
    fn from(e: Reason) -> Self {
        Self::Wire(WireError::Invalid(e))
    }
}

/// Reads field line representations (RFC 9204 §4.5.2 to §4.5.6) against one table state.
struct FieldLines<'a> {
    /// `None` when no entry was ever inserted.
    table: Option<&'a Table>,
    required: u64,
    base: u64,
    data: &'a Bytes,
}

impl FieldLines<'_> {
    /// The next field line; `budget` is what is left of the field section size limit.
    fn next(&self, r: &mut Reader<'_>, budget: u64) -> Result<Field, LineError> {
        let first = r.peek()?;
        if first & 0x80 != 0 {
            // §4.5.2 Indexed Field Line.
            let index = r.int(6)?;
            let (name, value) = if first & 0x40 != 0 {
                let (n, v) = static_table::get(index).ok_or(Reason::InvalidStaticIndex)?;
                (Bytes::from_static(n), Bytes::from_static(v))
            } else {
                self.dynamic(self.relative(index)?)?
            };
            return Ok(Field {
                name,
                value,
                never_index: false,
            });
        }
        if first & 0x40 != 0 {
            // §4.5.4 Literal Field Line with Name Reference.
            let never_index = first & 0x20 != 0;
            let index = r.int(4)?;
            let name = if first & 0x10 != 0 {
                Bytes::from_static(
                    static_table::get(index)
                        .ok_or(Reason::InvalidStaticIndex)?
                        .0,
                )
            } else {
                self.dynamic(self.relative(index)?)?.0
            };
            let value = self.value(r, &name, budget)?;
            return Ok(Field {
                name,
                value,
                never_index,
            });
        }
        if first & 0x20 != 0 {
            // §4.5.6 Literal Field Line with Literal Name.
            let never_index = first & 0x10 != 0;
            let raw = r.string(4, usize::MAX)?;
            let name = self.string(r, raw, budget.saturating_sub(ENTRY_OVERHEAD))?;
            let value = self.value(r, &name, budget)?;
            return Ok(Field {
                name,
                value,
                never_index,
            });
        }
        if first & 0x10 != 0 {
            // §4.5.3 Indexed Field Line with Post-Base Index.
            let index = r.int(4)?;
            let (name, value) = self.dynamic(self.post_base(index)?)?;
            return Ok(Field {
                name,
                value,
                never_index: false,
            });
        }
        // §4.5.5 Literal Field Line with Post-Base Name Reference.
        let never_index = first & 0x08 != 0;
        let index = r.int(3)?;
        let name = self.dynamic(self.post_base(index)?)?.0;
        let value = self.value(r, &name, budget)?;
        Ok(Field {
            name,
            value,
            never_index,
        })
    }

    /// §4.5.1.2 / §3.2.5: relative index -> absolute index.
    fn relative(&self, index: u64) -> Result<u64, Reason> {
        self.base
            .checked_sub(index + 1)
            .ok_or(Reason::InvalidDynamicIndex)
    }

    /// §3.2.6: post-Base index -> absolute index.
    fn post_base(&self, index: u64) -> Result<u64, Reason> {
        Ok(self.base + index)
    }

    /// §2.2.3: a reference must be below the Required Insert Count and not evicted.
    fn dynamic(&self, abs: u64) -> Result<(Bytes, Bytes), Reason> {
        if abs >= self.required {
            return Err(Reason::InvalidDynamicIndex);
        }
        self.table
            .and_then(|t| t.get(abs))
            .cloned()
            .ok_or(Reason::InvalidDynamicIndex)
    }

    fn value(&self, r: &mut Reader<'_>, name: &Bytes, budget: u64) -> Result<Bytes, LineError> {
        let raw = r.string(8, usize::MAX)?;
        let room = budget.saturating_sub(name.len() as u64 + ENTRY_OVERHEAD);
        self.string(r, raw, room)
    }

    /// A literal string, without copying when it is not Huffman coded. More than `room` bytes
    /// means the field section is too large; that is checked before allocating.
    fn string(&self, r: &Reader<'_>, raw: RawString, room: u64) -> Result<Bytes, LineError> {
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if raw.min_decoded_len() > room {
            return Err(LineError::TooLarge);
        }
        if !raw.huffman {
            return Ok(self.data.slice(raw.start..raw.end));
        }
        let mut out = Vec::new();
        r.decode_string(raw, room, &mut out).map_err(|e| match e {
            Reason::StringTooLong => LineError::TooLarge,
            e => e.into(),
        })?;
        Ok(Bytes::from(out))
    }
}

/// The decoder's copy of the dynamic table (RFC 9204 §3.2).
#[derive(Debug, Default)]
struct Table {
    /// Oldest first.
    entries: VecDeque<(Bytes, Bytes)>,
    /// Absolute index of `entries[0]` (= number of evicted entries).
    dropped: u64,
    size: u64,
    capacity: u64,
    /// The table's changes, when asked for.
    log: TableLog,
}

impl Table {
    fn insert_count(&self) -> u64 {
        self.dropped + self.entries.len() as u64
    }

    fn get(&self, abs: u64) -> Option<&(Bytes, Bytes)> {
        let i = abs.checked_sub(self.dropped)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    /// §3.2.5: relative index in an encoder instruction -> absolute index.
    fn relative_to_absolute(&self, index: u64) -> Result<u64, Reason> {
        self.insert_count()
            .checked_sub(index + 1)
            .ok_or(Reason::InvalidDynamicIndex)
    }

    fn evict_to(&mut self, size: u64) {
        while self.size > size {
            let Some((n, v)) = self.entries.pop_front() else {
                break;
            };
            self.size -= entry_size(&n, &v);
            let index = self.dropped;
            self.dropped += 1;
            self.log.record(|| TableEvent::Evicted { index });
        }
    }

    /// §3.2.3: a smaller capacity evicts the oldest entries.
    fn set_capacity(&mut self, capacity: u64) {
        self.capacity = capacity;
        self.log.record(|| TableEvent::Capacity(capacity));
        self.evict_to(capacity);
    }

    /// §3.2.2: evicts until the entry fits; an entry larger than the capacity is an error.
    fn insert(&mut self, name: Bytes, value: Bytes) -> Result<(), Reason> {
        let size = entry_size(&name, &value);
        if size > self.capacity {
            return Err(Reason::EntryTooLarge);
        }
        self.evict_to(self.capacity - size);
        self.size += size;
        let index = self.insert_count();
        self.log.record(|| TableEvent::Inserted {
            index,
            name: name.clone(),
            value: value.clone(),
        });
        self.entries.push_back((name, value));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{hex, inserted};

    fn f(name: &str, value: &str) -> Field {
        Field::new(name.to_owned(), value.to_owned())
    }

    fn section(d: &mut Decoder, stream: u64, bytes: &str) -> Result<Decoded, Error> {
        d.decode_section(stream, Bytes::from(hex(bytes)))
    }

    fn table(d: &Decoder) -> &Table {
        &d.state.as_ref().expect("the table was used").table
    }

    fn appendix_b_decoder() -> Decoder {
        Decoder::new(
            DecoderConfig::default()
                .max_table_capacity(220)
                .max_blocked_streams(100),
        )
    }

    // RFC 9204 Appendix B.1 to B.5, decoder side: every field section decodes to the listed
    // fields and every decoder instruction we emit is byte for byte the RFC's.
    #[test]
    fn appendix_b_decoder_side() {
        let mut d = appendix_b_decoder();
        // B.1 Literal Field Line with Name Reference.
        assert_eq!(
            section(&mut d, 0, "0000 510b 2f69 6e64 6578 2e68 746d 6c"),
            Ok(Decoded::Fields(vec![f(":path", "/index.html")]))
        );
        assert_eq!(d.poll_decoder_stream(), None);
        // B.2 Dynamic Table.
        let enc = hex(
            "3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d c10c 2f73 616d 706c 652f 7061 7468",
        );
        assert_eq!(d.handle_encoder_stream(&enc), Ok(vec![]));
        assert_eq!(
            section(&mut d, 4, "0381 10 11"),
            Ok(Decoded::Fields(vec![
                f(":authority", "www.example.com"),
                f(":path", "/sample/path")
            ]))
        );
        // The Section Acknowledgment covers both inserts: no Insert Count Increment.
        assert_eq!(d.poll_decoder_stream().as_deref(), Some(&hex("84")[..]));
        // B.3 Speculative Insert.
        let enc = hex("4a63 7573 746f 6d2d 6b65 790c 6375 7374 6f6d 2d76 616c 7565");
        assert_eq!(d.handle_encoder_stream(&enc), Ok(vec![]));
        assert_eq!(d.poll_decoder_stream().as_deref(), Some(&hex("01")[..]));
        // B.4 Duplicate Instruction, Stream Cancellation: the section arrives first and blocks.
        assert_eq!(section(&mut d, 8, "0500 80 c1 81"), Ok(Decoded::Blocked));
        assert_eq!(d.blocked_streams(), 1);
        d.cancel_stream(8);
        assert_eq!(d.blocked_streams(), 0);
        assert_eq!(d.poll_decoder_stream().as_deref(), Some(&hex("48")[..]));
        assert_eq!(d.handle_encoder_stream(&hex("02")), Ok(vec![]));
        assert_eq!(d.poll_decoder_stream().as_deref(), Some(&hex("01")[..]));
        // B.5 Dynamic Table Insert, Eviction.
        let enc = hex("810d 6375 7374 6f6d 2d76 616c 7565 32");
        assert_eq!(d.handle_encoder_stream(&enc), Ok(vec![]));
        assert_eq!(d.insert_count(), 5);
        assert_eq!(table(&d).size, 215);
        assert_eq!(table(&d).dropped, 1);
        assert_eq!(
            table(&d).get(4),
            Some(&(Bytes::from("custom-key"), Bytes::from("custom-value2")))
        );
    }

    // RFC 9204 Appendix B's encoder stream, reported as table changes: the capacity (§3.2.3),
    // the inserts with their absolute indices (§3.2.4, a Duplicate is an insert too, §4.3.4),
    // and the eviction B.5's insert needs (§3.2.2: 217 + 55 bytes exceed 220, so the oldest
    // entry, 57 bytes, goes first). Then a smaller capacity evicts the oldest entries until
    // the rest fits (§3.2.3): 215 - 49 - 54 - 57 = 55 <= 100.
    #[test]
    fn table_events_follow_the_encoder_stream() {
        let mut d = appendix_b_decoder();
        d.record_table_events();
        let stream = hex(
            "3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d c10c 2f73 616d 706c 652f 7061 7468 \
             4a63 7573 746f 6d2d 6b65 790c 6375 7374 6f6d 2d76 616c 7565 \
             02 \
             810d 6375 7374 6f6d 2d76 616c 7565 32",
        );
        assert_eq!(d.handle_encoder_stream(&stream), Ok(vec![]));
        let events: Vec<_> = d.take_table_events().collect();
        assert_eq!(
            events,
            [
                TableEvent::Capacity(220),
                inserted(0, ":authority", "www.example.com"),
                inserted(1, ":path", "/sample/path"),
                inserted(2, "custom-key", "custom-value"),
                inserted(3, ":authority", "www.example.com"),
                TableEvent::Evicted { index: 0 },
                inserted(4, "custom-key", "custom-value2"),
            ]
        );
        assert_eq!(d.take_table_events().count(), 0, "taken once");
        // §4.3.1 Set Dynamic Table Capacity 100 (31 + 69).
        assert_eq!(d.handle_encoder_stream(&hex("3f45")), Ok(vec![]));
        let events: Vec<_> = d.take_table_events().collect();
        assert_eq!(
            events,
            [
                TableEvent::Capacity(100),
                TableEvent::Evicted { index: 1 },
                TableEvent::Evicted { index: 2 },
                TableEvent::Evicted { index: 3 },
            ]
        );
        assert_eq!(table(&d).size, 55);
    }

    #[test]
    fn table_events_are_not_recorded_unless_asked() {
        let mut d = appendix_b_decoder();
        let enc = hex("3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d");
        assert_eq!(d.handle_encoder_stream(&enc), Ok(vec![]));
        assert_eq!(d.insert_count(), 1);
        assert_eq!(d.take_table_events().count(), 0);
    }

    // RFC 9204 §2.2.1: a blocked section decodes once its inserts arrive, even when the
    // encoder stream arrives one byte at a time.
    #[test]
    fn blocked_section_unblocks_byte_by_byte() {
        let mut d = appendix_b_decoder();
        let enc = hex(
            "3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d c10c 2f73 616d 706c 652f 7061 7468",
        );
        assert_eq!(section(&mut d, 4, "0381 10 11"), Ok(Decoded::Blocked));
        let mut unblocked = vec![];
        for b in &enc {
            unblocked.extend(d.handle_encoder_stream(&[*b]).unwrap());
        }
        assert_eq!(
            unblocked,
            vec![Unblocked {
                stream_id: 4,
                result: Ok(vec![
                    f(":authority", "www.example.com"),
                    f(":path", "/sample/path")
                ])
            }]
        );
        assert_eq!(d.poll_decoder_stream().as_deref(), Some(&hex("84")[..]));
    }

    #[test]
    fn never_index_bit_is_kept() {
        let mut d = appendix_b_decoder();
        // Literal with static name ref (N=1) and literal with literal name (N=1).
        let fields = section(&mut d, 0, "0000 7503 6162 63 336b 6579 0376 616c").unwrap();
        assert_eq!(
            fields,
            Decoded::Fields(vec![
                Field::sensitive("cookie", "abc"),
                Field::sensitive("key", "val")
            ])
        );
    }

    fn decompression(d: &mut Decoder, bytes: &str) -> Option<Reason> {
        match section(d, 0, bytes) {
            Err(Error::DecompressionFailed(r)) => Some(r),
            other => panic!("expected QPACK_DECOMPRESSION_FAILED, got {other:?}"),
        }
    }

    fn encoder_stream(d: &mut Decoder, bytes: &str) -> Option<Reason> {
        match d.handle_encoder_stream(&hex(bytes)) {
            Err(e @ Error::EncoderStream(_)) => {
                assert_eq!(e.code(), 0x201);
                e.reason()
            }
            other => panic!("expected QPACK_ENCODER_STREAM_ERROR, got {other:?}"),
        }
    }

    #[test]
    fn field_section_errors_are_decompression_failed() {
        let mut d = appendix_b_decoder();
        assert_eq!(decompression(&mut d, ""), Some(Reason::Truncated));
        assert_eq!(decompression(&mut d, "00"), Some(Reason::Truncated));
        assert_eq!(decompression(&mut d, "0000 51"), Some(Reason::Truncated));
        assert_eq!(
            decompression(&mut d, "0000 510b 2f"),
            Some(Reason::Truncated)
        );
        // Static index 99 does not exist.
        assert_eq!(
            decompression(&mut d, "0000 ff24"),
            Some(Reason::InvalidStaticIndex)
        );
        // §4.5.1.1: an encoded Required Insert Count above 2 * MaxEntries (12).
        assert_eq!(
            decompression(&mut d, "0d00"),
            Some(Reason::InvalidRequiredInsertCount)
        );
        // §4.5.1.2: Base = 1 - 1 - 1 is negative.
        assert_eq!(decompression(&mut d, "0281"), Some(Reason::InvalidBase));
        // §2.2.3: with Required Insert Count 0 nothing in the dynamic table may be referenced.
        assert_eq!(
            decompression(&mut d, "0000 80"),
            Some(Reason::InvalidDynamicIndex)
        );
        assert_eq!(
            decompression(&mut d, "0000 10"),
            Some(Reason::InvalidDynamicIndex)
        );
        // RFC 7541 §5.2: Huffman padding of zeros.
        assert_eq!(
            decompression(&mut d, "0000 5181 00"),
            Some(Reason::InvalidHuffman)
        );
        // Integer overflow in an index.
        assert_eq!(
            decompression(&mut d, "0000 ffff ffff ffff ffff ffff 01"),
            Some(Reason::IntegerOverflow)
        );
        // A decoder with no dynamic table refuses any Required Insert Count.
        let mut none = Decoder::new(DecoderConfig::default().max_table_capacity(0));
        assert_eq!(
            decompression(&mut none, "0100"),
            Some(Reason::InvalidRequiredInsertCount)
        );
        let e = section(&mut none, 0, "0100").unwrap_err();
        assert_eq!(e.code(), 0x200);
    }

    // A trailer section behind a blocked header section waits for it, even if it could be
    // decoded at once, and both come out in order.
    #[test]
    fn sections_on_one_stream_stay_in_order() {
        let mut d = appendix_b_decoder();
        assert_eq!(section(&mut d, 4, "0381 10 11"), Ok(Decoded::Blocked));
        assert_eq!(section(&mut d, 4, "0000 d1"), Ok(Decoded::Blocked));
        assert_eq!(d.blocked_streams(), 1);
        let enc = hex(
            "3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d c10c 2f73 616d 706c 652f 7061 7468",
        );
        let out = d.handle_encoder_stream(&enc).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].result.as_ref().unwrap().len(), 2);
        assert_eq!(out[1].result, Ok(vec![f(":method", "GET")]));
    }

    // RFC 9204 §2.2.1: one blocked stream more than we allow is an error.
    #[test]
    fn too_many_blocked_streams() {
        let mut d = Decoder::new(
            DecoderConfig::default()
                .max_table_capacity(220)
                .max_blocked_streams(1),
        );
        assert_eq!(section(&mut d, 4, "0200"), Ok(Decoded::Blocked));
        assert_eq!(
            section(&mut d, 8, "0200"),
            Err(Error::DecompressionFailed(Reason::TooManyBlockedStreams))
        );
        let mut zero = Decoder::new(
            DecoderConfig::default()
                .max_table_capacity(220)
                .max_blocked_streams(0),
        );
        assert_eq!(
            section(&mut zero, 4, "0200"),
            Err(Error::DecompressionFailed(Reason::TooManyBlockedStreams))
        );
    }

    #[test]
    fn encoder_stream_errors() {
        let mut d = appendix_b_decoder();
        // §4.3.1: capacity 221 is above our 220.
        assert_eq!(
            encoder_stream(&mut d, "3fbe01"),
            Some(Reason::CapacityExceeded)
        );
        let mut d = appendix_b_decoder();
        // Insert before any capacity is set: the entry does not fit.
        assert_eq!(encoder_stream(&mut d, "c0 00"), Some(Reason::EntryTooLarge));
        let mut d = appendix_b_decoder();
        assert_eq!(
            encoder_stream(&mut d, "3fbd01 ff24 0161"),
            Some(Reason::InvalidStaticIndex)
        );
        let mut d = appendix_b_decoder();
        // Duplicate and name reference of an entry that does not exist.
        assert_eq!(
            encoder_stream(&mut d, "3fbd01 00"),
            Some(Reason::InvalidDynamicIndex)
        );
        let mut d = appendix_b_decoder();
        assert_eq!(
            encoder_stream(&mut d, "3fbd01 80 0161"),
            Some(Reason::InvalidDynamicIndex)
        );
        let mut d = appendix_b_decoder();
        // A literal name longer than the table could hold is refused from its length alone.
        assert_eq!(
            encoder_stream(&mut d, "3fbd01 5f ff0f"),
            Some(Reason::StringTooLong)
        );
        let mut d = appendix_b_decoder();
        assert_eq!(
            encoder_stream(&mut d, "3f ffff ffff ffff ffff ff01"),
            Some(Reason::IntegerOverflow)
        );
    }

    // A section that is only too large was understood: it is still acknowledged, so the
    // peer's encoder can release what it referenced.
    #[test]
    fn too_large_sections_are_still_acknowledged() {
        let mut d = Decoder::new(
            DecoderConfig::default()
                .max_table_capacity(220)
                .max_field_section_size(40),
        );
        let enc = hex(
            "3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d c10c 2f73 616d 706c 652f 7061 7468",
        );
        d.handle_encoder_stream(&enc).unwrap();
        d.poll_decoder_stream();
        assert_eq!(
            section(&mut d, 4, "0381 10 11"),
            Err(Error::FieldSectionTooLarge { limit: 40 })
        );
        assert_eq!(d.poll_decoder_stream().as_deref(), Some(&hex("84")[..]));
    }

    // RFC 9204 §2.2.2.2: without a dynamic table there is nothing to cancel.
    #[test]
    fn cancellation_without_dynamic_table_is_silent() {
        let mut d = Decoder::new(DecoderConfig::default().max_table_capacity(0));
        d.cancel_stream(4);
        assert_eq!(d.poll_decoder_stream(), None);
        let mut d = Decoder::new(DecoderConfig::default());
        d.cancel_stream(4);
        assert_eq!(d.poll_decoder_stream().as_deref(), Some(&[0x44][..]));
    }

    // RFC 9114 §4.2.2: each field counts name + value + 32.
    #[test]
    fn field_section_size_limit() {
        let mut d = Decoder::new(DecoderConfig::default().max_field_section_size(32 + 5 + 11));
        assert!(section(&mut d, 0, "0000 510b 2f69 6e64 6578 2e68 746d 6c").is_ok());
        let mut d = Decoder::new(DecoderConfig::default().max_field_section_size(32 + 5 + 10));
        let e = section(&mut d, 0, "0000 510b 2f69 6e64 6578 2e68 746d 6c").unwrap_err();
        assert_eq!(e, Error::FieldSectionTooLarge { limit: 47 });
        // Static indexed fields count too.
        let mut d = Decoder::new(DecoderConfig::default().max_field_section_size(100));
        assert!(matches!(
            section(&mut d, 0, "0000 c1c1c1"),
            Err(Error::FieldSectionTooLarge { .. })
        ));
    }

    // Decoder docs: a peer whose encoder keeps to the static table and literals never makes
    // the decoder allocate its table state, even when a section is refused.
    #[test]
    fn static_only_sections_allocate_no_state() {
        assert!(size_of::<Decoder>() <= 32);
        let mut d = appendix_b_decoder();
        assert_eq!(
            section(&mut d, 0, "0000 510b 2f69 6e64 6578 2e68 746d 6c"),
            Ok(Decoded::Fields(vec![f(":path", "/index.html")]))
        );
        assert_eq!(
            section(&mut d, 4, "0000 d1 5f1d 0a74 6578 742f 706c 6169 6e"),
            Ok(Decoded::Fields(vec![
                f(":method", "GET"),
                f("content-type", "text/plain")
            ]))
        );
        assert_eq!(d.handle_encoder_stream(&[]), Ok(vec![]));
        assert_eq!(d.poll_decoder_stream(), None);
        assert_eq!(d.insert_count(), 0);
        assert_eq!(d.blocked_streams(), 0);
        // §2.2.3: a dynamic reference with Required Insert Count 0 is still an error.
        assert_eq!(
            decompression(&mut d, "0000 80"),
            Some(Reason::InvalidDynamicIndex)
        );
        assert!(d.state.is_none());
        // Without a dynamic table, a cancellation is not sent and allocates nothing either.
        let mut none = Decoder::new(DecoderConfig::default().max_table_capacity(0));
        none.cancel_stream(4);
        assert_eq!(none.poll_decoder_stream(), None);
        assert!(none.state.is_none());
    }

    // RFC 9204 §4.3.1: the first encoder instruction (here Set Dynamic Table Capacity) creates
    // the state; a section that needs an entry creates it too, to wait in.
    #[test]
    fn state_appears_with_the_encoder_stream() {
        let mut d = appendix_b_decoder();
        assert_eq!(d.handle_encoder_stream(&hex("3fbd01")), Ok(vec![]));
        assert_eq!(table(&d).capacity, 220);
        assert!(table(&d).entries.is_empty());
        // No insert, so nothing to acknowledge.
        assert_eq!(d.poll_decoder_stream(), None);
        let mut d = appendix_b_decoder();
        assert_eq!(section(&mut d, 4, "0381 10 11"), Ok(Decoded::Blocked));
        assert_eq!(table(&d).capacity, 0);
        assert_eq!(d.blocked_streams(), 1);
    }
}
