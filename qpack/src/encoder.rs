//! The QPACK encoder: encodes field lists, maintains the dynamic table the peer's decoder
//! mirrors, and processes the peer's decoder stream.
//!
//! # Insertion strategy
//!
//! Tuned on the QIF corpus (`../shared/qifs`); the corpus test prints the resulting sizes.
//!
//! The connection's first field section inserts nothing: it is sent with the static table and
//! literals only, and is not recorded in the history below. Many connections carry a single
//! request (a WebTransport session, above all), whose fields never come back; an insert there
//! would open our encoder stream and the peer's decoder stream (RFC 9204 §4.2: a QPACK stream
//! that is not used need not be opened), and make the peer keep the entry and us the history,
//! all for nothing. The encoder allocates its table state only when a second section is
//! encoded (and the table capacity is not zero); from then on the rules below apply. On the
//! corpus this costs 0.2% (the first section's fields go out as literals once more when they
//! repeat); on an idle WebTransport session it saves the server about 1.9 KiB.
//!
//! For each field, in order of preference:
//! 1. a static table match (name and value) is sent as an index;
//! 2. a dynamic table match is sent as an index when the decoder is known to have the entry,
//!    or when this stream may block (RFC 9204 §2.1.2: it already blocks, or fewer streams
//!    block than the peer's `SETTINGS_QPACK_BLOCKED_STREAMS` and the section is worth a slot,
//!    below). A match in the draining area (the oldest entries that the next inserts will need
//!    to evict) is first re-inserted with Duplicate so that the old copy can drain;
//! 3. otherwise the field is inserted when it is worth it (below) and referenced if the stream
//!    may block, or sent as a literal with a name reference (static first, then dynamic) or a
//!    literal name.
//!
//! A field is worth inserting when it is not sensitive, takes at most 3/4 of the table, and
//! was seen recently (a history of field hashes: the last 512 fields, or 64 when the peer
//! allows no blocked streams, since then an insert only pays if the field comes back soon)
//! and at least 30% of the values of its name repeat. Until a name has been seen 4 times, any
//! name may be inserted on first sight (after the first section) except a short list whose
//! values are nearly always unique (`:path`, `date`, `content-length`, ...). For a field not
//! worth inserting whose name is in neither table, the name alone is inserted (with an empty
//! value) so later literals can reference it.
//!
//! Entries that are referenced at least twice and reach the oldest quarter of the table are
//! re-inserted with Duplicate before they would be evicted, so a busy table keeps its most
//! useful entries.
//!
//! Entries the decoder has not acknowledged are capped: with blocked streams allowed, at the
//! whole table; without, at a sixteenth of it until the peer first acknowledges anything
//! (they are useless until acknowledged, and a peer may never acknowledge).
//!
//! Blocked stream slots are rationed. A stream that references unacknowledged entries holds
//! one of the peer's `SETTINGS_QPACK_BLOCKED_STREAMS` slots until the peer acknowledges, and a
//! peer may never do so; handing the slots to the first sections that come along then leaves
//! the rest of the connection without the dynamic table. Each section that would take a slot
//! gets a gain estimate: the literal bytes it would save by referencing entries it cannot use
//! otherwise (existing ones, and the ones it would insert). The encoder expects as many more
//! sections as it has encoded since the last decoder instruction; while that is no more than
//! the slots left, any section may take one. Beyond that, a section takes a slot only if its
//! gain ranks within the best `slots left / sections expected` of the last 64 sections'
//! gains (ties count in its favour, as identical sections are common). A decoder that
//! acknowledges keeps the count of expected sections low, so the rationing then never
//! applies.
//!
//! Sensitive fields are never inserted and are sent with the N bit: anything marked
//! [`Field::never_index`], `authorization`, `proxy-authorization`, `set-cookie`, and `cookie`
//! unless [`EncoderConfig::danger_index_cookies`] is set.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

use crate::error::{Error, Reason};
use crate::field::{ENTRY_OVERHEAD, Field, entry_size};
use crate::static_table::{self, Match};
use crate::table_event::{TableEvent, TableLog};
use crate::wire::{Reader, WireError, put_int, put_string, string_len};

/// Local choices for the encoder. The peer's limits come from
/// [`Encoder::apply_peer_settings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncoderConfig {
    /// The largest dynamic table we are willing to keep (memory per connection), whatever the
    /// peer allows. Default 4096.
    pub max_table_capacity: u64,
    /// Insert `cookie` values into the dynamic table. Off by default: a table shared by several
    /// principals on one connection lets one of them guess another's cookie from compressed
    /// sizes (RFC 9204 §7.1). Only turn it on when every request on the connection comes from
    /// one trusted party. `set-cookie` stays sensitive either way: its values are secrets the
    /// server hands out and rarely repeat, so indexing them would cost space for no gain.
    pub danger_index_cookies: bool,
    /// Use Huffman coding for strings it makes shorter. Default on.
    pub huffman: bool,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            max_table_capacity: 4096,
            danger_index_cookies: false,
            huffman: true,
        }
    }
}

impl EncoderConfig {
    /// Sets [`EncoderConfig::max_table_capacity`].
    pub fn max_table_capacity(mut self, value: u64) -> Self {
        self.max_table_capacity = value;
        self
    }

    /// Sets [`EncoderConfig::huffman`].
    pub fn huffman(mut self, value: bool) -> Self {
        self.huffman = value;
        self
    }

    /// Sets [`EncoderConfig::danger_index_cookies`].
    pub fn danger_index_cookies(mut self, value: bool) -> Self {
        self.danger_index_cookies = value;
        self
    }

    /// Fields that are never inserted and are sent with the N bit (module docs).
    fn is_sensitive(&self, field: &Field) -> bool {
        if field.never_index {
            return true;
        }
        match &field.name[..] {
            b"authorization" | b"proxy-authorization" => true,
            b"set-cookie" => true,
            b"cookie" => !self.danger_index_cookies,
            _ => false,
        }
    }
}

/// The output of [`Encoder::encode`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// The encoded field section: the HEADERS frame payload.
    pub field_section: Bytes,
    /// Bytes for our encoder stream (possibly empty). Send them no later than the field
    /// section; the peer blocks the stream until they arrive.
    pub encoder_stream: Bytes,
}

/// A QPACK encoder for one connection.
///
/// Sans-IO. The HTTP/3 layer:
/// 1. creates it, and once the peer's SETTINGS arrive calls
///    [`apply_peer_settings`](Self::apply_peer_settings) (until then only the static table is
///    used);
/// 2. calls [`encode`](Self::encode) for each header or trailer section and sends
///    [`Encoded::encoder_stream`] on our encoder stream and [`Encoded::field_section`] in a
///    HEADERS frame;
/// 3. passes every chunk read from the peer's decoder stream to
///    [`handle_decoder_stream`](Self::handle_decoder_stream); chunks may split instructions
///    anywhere.
///
/// An encoder that has encoded one field section, or whose table capacity is zero, holds no
/// more than its settings: the dynamic table and all that goes with it are allocated when a
/// section may first insert.
#[derive(Debug)]
pub struct Encoder {
    config: EncoderConfig,
    /// The peer's `SETTINGS_QPACK_MAX_TABLE_CAPACITY` and `SETTINGS_QPACK_BLOCKED_STREAMS`,
    /// once they arrived.
    peer: Option<(u64, u64)>,
    /// Field sections encoded so far.
    sections: u64,
    /// Created on first use (module docs: the first section never uses the table).
    state: Option<Box<State>>,
    /// [`Encoder::record_table_events`] was called: the state records from its creation.
    record: bool,
}

/// The dynamic table, the history and the peer's acknowledgements.
#[derive(Debug)]
struct State {
    config: EncoderConfig,
    /// The peer's `SETTINGS_QPACK_BLOCKED_STREAMS`.
    max_blocked: u64,
    /// floor(peer's SETTINGS_QPACK_MAX_TABLE_CAPACITY / 32), for the Required Insert Count.
    max_entries: u64,
    capacity: u64,
    /// `capacity` is not announced yet: its Set Dynamic Table Capacity goes out just before the
    /// first insert, so that an encoder that never inserts never writes to its encoder stream.
    capacity_pending: bool,
    /// Oldest first; `entries[i]` has absolute index `dropped + i`.
    entries: VecDeque<Entry>,
    dropped: u64,
    size: u64,
    /// Known Received Count (RFC 9204 §2.1.4).
    known_received: u64,
    /// Field hash -> newest absolute index with that name and value.
    by_field: HashMap<u64, u64, BuildHasherDefault<IdHasher>>,
    /// Name hash -> newest absolute index with that name.
    by_name: HashMap<u64, u64, BuildHasherDefault<IdHasher>>,
    /// Field sections not acknowledged yet, per stream, oldest first.
    unacked: HashMap<u64, VecDeque<Section>>,
    /// Bytes of our encoder stream not handed out yet.
    encoder_stream: Vec<u8>,
    /// The table's changes, when asked for.
    log: TableLog,
    /// The start of a decoder instruction whose end has not arrived yet.
    partial: Vec<u8>,
    history: History,
    scratch: Vec<Repr>,
    /// Number of sections in `unacked`.
    unacked_sections: usize,
    /// Whether the section being encoded may use the dynamic table.
    dynamic: bool,
    /// What recent sections would have gained from blocking, oldest first.
    gains: VecDeque<u64>,
    /// Field sections encoded since the last decoder instruction (an acknowledgement, an
    /// Insert Count Increment or a Stream Cancellation: anything that may free a blocked
    /// stream slot).
    since_ack: u64,
}

/// How many recent sections' blocking gains `Encoder::can_block` compares against.
const GAINS: usize = 64;

/// Sections we keep track of before we stop using the dynamic table: a peer that never
/// acknowledges must not make the encoder's memory grow with every request.
const MAX_UNACKED_SECTIONS: usize = 1024;

#[derive(Debug)]
struct Entry {
    name: Bytes,
    value: Bytes,
    size: u64,
    field_hash: u64,
    name_hash: u64,
    /// Unacknowledged field sections that reference this entry.
    refs: u32,
    /// Field lines that referenced this entry (or the entry it duplicates) since it was
    /// inserted; hot entries are refreshed before they are evicted.
    hits: u32,
    /// The entry this one duplicates, still usable while the copy is unacknowledged.
    original: Option<u64>,
}

#[derive(Debug)]
struct Section {
    required: u64,
    /// Distinct absolute indices referenced.
    refs: Vec<u64>,
}

/// How one field line will be encoded; indices into the field list.
#[derive(Debug, Clone, Copy)]
enum Repr {
    Static(u8),
    Dynamic(u64),
    StaticName {
        index: u8,
        field: usize,
        never: bool,
    },
    DynamicName {
        abs: u64,
        field: usize,
        never: bool,
    },
    Literal {
        field: usize,
        never: bool,
    },
}

impl Encoder {
    /// An encoder that uses only the static table until
    /// [`apply_peer_settings`](Self::apply_peer_settings) is called.
    pub fn new(config: EncoderConfig) -> Self {
        Self {
            config,
            peer: None,
            sections: 0,
            state: None,
            record: false,
        }
    }

    /// Makes the encoder record each change to its dynamic table (the capacity it sets, its
    /// inserts and evictions) for [`Encoder::take_table_events`]. Without this call nothing is
    /// recorded or allocated for it.
    pub fn record_table_events(&mut self) {
        self.record = true;
        if let Some(state) = &mut self.state {
            state.log.enable();
        }
    }

    /// The changes to the dynamic table since the last call, oldest first (none unless
    /// [`Encoder::record_table_events`] was called). The capacity is reported when its Set
    /// Dynamic Table Capacity instruction is written, which is just before the first insert.
    pub fn take_table_events(&mut self) -> impl Iterator<Item = TableEvent> + '_ {
        self.state.iter_mut().flat_map(|state| state.log.drain())
    }

    /// Applies the peer's `SETTINGS_QPACK_MAX_TABLE_CAPACITY` and
    /// `SETTINGS_QPACK_BLOCKED_STREAMS` (RFC 9204 §5). Call it once, when the peer's SETTINGS
    /// arrive; the Set Dynamic Table Capacity instruction it causes goes out with the first
    /// insert.
    pub fn apply_peer_settings(&mut self, max_table_capacity: u64, max_blocked_streams: u64) {
        self.peer = Some((max_table_capacity, max_blocked_streams));
        if let Some(state) = &mut self.state {
            state.apply_peer_settings(max_table_capacity, max_blocked_streams);
        }
    }

    /// The dynamic table capacity in use.
    pub fn capacity(&self) -> u64 {
        match (&self.state, self.peer) {
            (Some(state), _) => state.capacity,
            (None, Some((max, _))) => max.min(self.config.max_table_capacity),
            (None, None) => 0,
        }
    }

    /// Number of entries inserted so far.
    pub fn insert_count(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.insert_count())
    }

    /// The size of the dynamic table now (RFC 9204 §3.2.1: each entry's name and value lengths
    /// plus 32), and how many entries it holds.
    pub fn table_size(&self) -> (u64, usize) {
        self.state
            .as_ref()
            .map_or((0, 0), |s| (s.size, s.entries.len()))
    }

    /// The Known Received Count: inserts the peer's decoder has acknowledged.
    pub fn known_received_count(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.known_received)
    }

    /// Encodes one field section to be sent on `stream_id`.
    pub fn encode(&mut self, stream_id: u64, fields: &[Field]) -> Encoded {
        let encoded = if self.sections == 0 || (self.state.is_none() && self.capacity() == 0) {
            // The first section never uses the dynamic table (module docs), and without a
            // table no section does: neither needs the state.
            Encoded {
                field_section: encode_static(&self.config, fields),
                encoder_stream: Bytes::new(),
            }
        } else {
            self.state_mut().encode(stream_id, fields)
        };
        self.sections = self.sections.saturating_add(1);
        encoded
    }

    /// Processes a chunk of the peer's decoder stream (RFC 9204 §4.4).
    pub fn handle_decoder_stream(&mut self, data: &[u8]) -> Result<(), Error> {
        self.state_mut().handle_decoder_stream(data)
    }

    fn state_mut(&mut self) -> &mut State {
        self.state.get_or_insert_with(|| {
            let mut state = Box::new(State::new(self.config));
            // No decoder instruction came before (it would have created the state), so every
            // section encoded so far came after the last one.
            state.since_ack = self.sections;
            if self.record {
                state.log.enable();
            }
            if let Some((max_table_capacity, max_blocked_streams)) = self.peer {
                state.apply_peer_settings(max_table_capacity, max_blocked_streams);
            }
            state
        })
    }
}

/// A field section that uses only the static table and literals.
fn encode_static(config: &EncoderConfig, fields: &[Field]) -> Bytes {
    let mut out = Vec::with_capacity(fields.len() * 4 + 2);
    // RFC 9204 §4.5.1: Required Insert Count 0, Delta Base 0.
    out.extend_from_slice(&[0, 0]);
    for (i, field) in fields.iter().enumerate() {
        let never = config.is_sensitive(field);
        let stat = static_table::find(&field.name, &field.value);
        let repr = match stat {
            Match::Full(index) if !never => Repr::Static(index),
            _ => static_literal(i, stat, never).unwrap_or(Repr::Literal { field: i, never }),
        };
        put_repr(&mut out, repr, fields, 0, config.huffman);
    }
    Bytes::from(out)
}

/// A literal that names a static table entry, if one has the name.
fn static_literal(field: usize, stat: Match, never: bool) -> Option<Repr> {
    match stat {
        Match::Full(index) | Match::Name(index) => Some(Repr::StaticName {
            index,
            field,
            never,
        }),
        Match::None => None,
    }
}

/// Writes one field line of a section whose Base is `base`.
fn put_repr(out: &mut Vec<u8>, repr: Repr, fields: &[Field], base: u64, huffman: bool) {
    match repr {
        Repr::Static(index) => put_int(out, 6, 0xc0, index.into()),
        Repr::Dynamic(abs) => put_int(out, 6, 0x80, base - 1 - abs),
        Repr::StaticName {
            index,
            field,
            never,
        } => {
            put_int(out, 4, 0x50 | if never { 0x20 } else { 0 }, index.into());
            put_string(out, 8, 0, &fields[field].value, huffman);
        }
        Repr::DynamicName { abs, field, never } => {
            put_int(out, 4, 0x40 | if never { 0x20 } else { 0 }, base - 1 - abs);
            put_string(out, 8, 0, &fields[field].value, huffman);
        }
        Repr::Literal { field, never } => {
            put_string(
                out,
                4,
                0x20 | if never { 0x10 } else { 0 },
                &fields[field].name,
                huffman,
            );
            put_string(out, 8, 0, &fields[field].value, huffman);
        }
    }
}

impl State {
    fn new(config: EncoderConfig) -> Self {
        Self {
            config,
            max_blocked: 0,
            max_entries: 0,
            capacity: 0,
            capacity_pending: false,
            entries: VecDeque::new(),
            dropped: 0,
            size: 0,
            known_received: 0,
            by_field: HashMap::default(),
            by_name: HashMap::default(),
            unacked: HashMap::new(),
            encoder_stream: Vec::new(),
            log: TableLog::default(),
            partial: Vec::new(),
            history: History::new(HISTORY_NO_BLOCKING),
            scratch: Vec::new(),
            unacked_sections: 0,
            dynamic: true,
            gains: VecDeque::new(),
            since_ack: 0,
        }
    }

    fn apply_peer_settings(&mut self, max_table_capacity: u64, max_blocked_streams: u64) {
        self.max_blocked = max_blocked_streams;
        self.history.window = if max_blocked_streams > 0 {
            HISTORY
        } else {
            HISTORY_NO_BLOCKING
        };
        self.max_entries = max_table_capacity / ENTRY_OVERHEAD;
        let capacity = max_table_capacity.min(self.config.max_table_capacity);
        if capacity != self.capacity && self.entries.is_empty() {
            self.capacity = capacity;
            self.capacity_pending = true;
        }
    }

    /// The encoder stream, for an instruction that changes the table: the table capacity goes
    /// first if it was not announced yet (RFC 9204 §3.2.3: the decoder's table starts at
    /// capacity zero).
    fn table_instructions(&mut self) -> &mut Vec<u8> {
        if std::mem::take(&mut self.capacity_pending) {
            // RFC 9204 §4.3.1 Set Dynamic Table Capacity.
            put_int(&mut self.encoder_stream, 5, 0x20, self.capacity);
            let capacity = self.capacity;
            self.log.record(|| TableEvent::Capacity(capacity));
        }
        &mut self.encoder_stream
    }

    fn insert_count(&self) -> u64 {
        self.dropped + self.entries.len() as u64
    }

    fn encode(&mut self, stream_id: u64, fields: &[Field]) -> Encoded {
        let mut reprs = std::mem::take(&mut self.scratch);
        reprs.clear();
        let mut refs: Vec<u64> = Vec::new();
        self.dynamic = self.unacked_sections < MAX_UNACKED_SECTIONS;
        let can_block = self.can_block(stream_id, fields);
        self.since_ack = self.since_ack.saturating_add(1);
        let mut drain_below = self.draining_index();
        if self.refresh_hot(drain_below, can_block) {
            drain_below = self.draining_index();
        }
        for (i, field) in fields.iter().enumerate() {
            let repr = self.choose(i, field, can_block, drain_below);
            if let Repr::Dynamic(abs) = repr
                && let Some(e) = self.entry_mut(abs)
            {
                e.hits = e.hits.saturating_add(1);
            }
            if let Repr::Dynamic(abs) | Repr::DynamicName { abs, .. } = repr
                && !refs.contains(&abs)
            {
                refs.push(abs);
                if let Some(e) = self.entry_mut(abs) {
                    e.refs += 1;
                }
            }
            reprs.push(repr);
        }
        let required = refs.iter().max().map_or(0, |m| m + 1);
        let mut out = Vec::with_capacity(fields.len() * 4 + 2);
        // RFC 9204 §4.5.1: prefix. Base = Required Insert Count, so every reference is a
        // plain relative index and Delta Base is zero.
        let encoded_ric = if required == 0 {
            0
        } else {
            required % (2 * self.max_entries) + 1
        };
        put_int(&mut out, 8, 0, encoded_ric);
        out.push(0);
        for &repr in &reprs {
            put_repr(&mut out, repr, fields, required, self.config.huffman);
        }
        if !refs.is_empty() {
            self.unacked_sections += 1;
            self.unacked
                .entry(stream_id)
                .or_default()
                .push_back(Section { required, refs });
        }
        self.scratch = reprs;
        Encoded {
            field_section: Bytes::from(out),
            encoder_stream: Bytes::from(std::mem::take(&mut self.encoder_stream)),
        }
    }

    fn handle_decoder_stream(&mut self, data: &[u8]) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut self.partial);
        buf.extend_from_slice(data);
        let mut r = Reader::new(&buf);
        let mut used = 0;
        while !r.is_empty() {
            match self.apply_instruction(&mut r) {
                Ok(()) => {
                    used = r.position();
                    self.since_ack = 0;
                }
                Err(WireError::Incomplete) => break,
                Err(WireError::Invalid(reason)) => return Err(Error::DecoderStream(reason)),
            }
        }
        // An incomplete instruction is one prefixed integer: at most 10 bytes, or it would
        // already have failed as an overflow.
        buf.drain(..used);
        self.partial = buf;
        Ok(())
    }

    fn apply_instruction(&mut self, r: &mut Reader<'_>) -> Result<(), WireError> {
        let first = r.peek()?;
        if first & 0x80 != 0 {
            // §4.4.1 Section Acknowledgment: the oldest unacknowledged section on the stream.
            let stream_id = r.int(7)?;
            let section = self
                .unacked
                .get_mut(&stream_id)
                .and_then(VecDeque::pop_front)
                .ok_or(Reason::UnexpectedAcknowledgment)?;
            self.unacked_sections -= 1;
            if self.unacked.get(&stream_id).is_some_and(VecDeque::is_empty) {
                self.unacked.remove(&stream_id);
            }
            // §2.1.4: the decoder had every insert the section needed.
            self.known_received = self.known_received.max(section.required);
            self.release(&section.refs);
        } else if first & 0x40 != 0 {
            // §4.4.2 Stream Cancellation: every section on the stream is gone.
            let stream_id = r.int(6)?;
            if let Some(sections) = self.unacked.remove(&stream_id) {
                self.unacked_sections -= sections.len();
                for s in sections {
                    self.release(&s.refs);
                }
            }
        } else {
            // §4.4.3 Insert Count Increment.
            let increment = r.int(6)?;
            if increment == 0 {
                return Err(Reason::ZeroIncrement.into());
            }
            let known = self.known_received + increment;
            if known > self.insert_count() {
                return Err(Reason::IncrementTooLarge.into());
            }
            self.known_received = known;
        }
        Ok(())
    }

    fn release(&mut self, refs: &[u64]) {
        for &abs in refs {
            if let Some(e) = self.entry_mut(abs) {
                e.refs = e.refs.saturating_sub(1);
            }
        }
    }

    fn entry(&self, abs: u64) -> Option<&Entry> {
        let i = abs.checked_sub(self.dropped)?;
        self.entries.get(usize::try_from(i).ok()?)
    }

    fn entry_mut(&mut self, abs: u64) -> Option<&mut Entry> {
        let i = abs.checked_sub(self.dropped)?;
        self.entries.get_mut(usize::try_from(i).ok()?)
    }

    /// RFC 9204 §2.1.2: may this stream reference entries the decoder may not have yet?
    ///
    /// Within the peer's limit, a stream that would start blocking must also be worth one of
    /// the remaining slots (module docs: "Blocked stream slots are rationed").
    fn can_block(&mut self, stream_id: u64, fields: &[Field]) -> bool {
        let known = self.known_received;
        let mut blocking = 0;
        for (id, sections) in &self.unacked {
            if sections.iter().any(|s| s.required > known) {
                if *id == stream_id {
                    return true;
                }
                blocking += 1;
            }
        }
        if blocking == 0 {
            return self.max_blocked > 0;
        }
        let gain = self.blocking_gain(fields);
        if self.gains.len() >= GAINS {
            self.gains.pop_front();
        }
        self.gains.push_back(gain);
        if blocking >= self.max_blocked {
            return false;
        }
        let left = u128::from(self.max_blocked - blocking);
        let expected = u128::from(self.since_ack);
        if expected <= left {
            return true;
        }
        // rank / seen >= 1 - left / expected, where rank counts the recent gains (this one
        // included) no larger than this one: ties are common, as sections repeat.
        let rank = self.gains.iter().filter(|&&g| g <= gain).count() as u128;
        let seen = self.gains.len() as u128;
        gain > 0 && rank * expected >= (expected - left) * seen
    }

    /// Bytes a section would save by referencing entries the decoder may not have yet,
    /// instead of sending those fields as literals.
    fn blocking_gain(&self, fields: &[Field]) -> u64 {
        let mut gain = 0;
        for field in fields {
            if self.config.is_sensitive(field) {
                continue;
            }
            let stat = static_table::find(&field.name, &field.value);
            if let Match::Full(_) = stat {
                continue;
            }
            let name_hash = hash(&field.name);
            let field_hash = hash_field(name_hash, &field.value);
            match self.find_field(field_hash, field) {
                Some(abs) if abs < self.known_received => continue,
                Some(_) => {}
                // A field this section would insert saves its literal only if referenced.
                None => {
                    let size = entry_size(&field.name, &field.value);
                    let insertable = size <= self.capacity * 3 / 4
                        && self.worth_inserting(field, name_hash, self.history.seen(field_hash))
                        && self.within_budget(size)
                        && self.evictions_for(size).is_some();
                    if !insertable {
                        continue;
                    }
                }
            }
            let name = match stat {
                Match::Name(_) => 1,
                _ => string_len(4, &field.name),
            };
            gain += (name + string_len(8, &field.value)) as u64 - 1;
        }
        gain
    }

    /// RFC 9204 §2.1.1.1: the smallest absolute index we still reference. Entries below it
    /// are the next to be evicted; referencing them would pin them.
    fn draining_index(&self) -> u64 {
        let reserve = self.capacity / 4;
        let free = self.capacity - self.size;
        if free >= reserve {
            return self.dropped;
        }
        let mut freed = free;
        let mut abs = self.dropped;
        for e in &self.entries {
            if freed >= reserve {
                break;
            }
            freed += e.size;
            abs += 1;
        }
        abs
    }

    /// Re-inserts, with Duplicate, the entries about to drain that were referenced at least
    /// twice since they were inserted, so that a busy table does not push out the fields that
    /// repeat most. Returns whether anything was duplicated.
    fn refresh_hot(&mut self, drain_below: u64, can_block: bool) -> bool {
        let mut any = false;
        let mut abs = self.dropped;
        while abs < drain_below {
            // Only the newest copy of a field is worth refreshing.
            let hot = self
                .entry(abs)
                .is_some_and(|e| e.hits >= 2 && self.by_field.get(&e.field_hash) == Some(&abs));
            if hot {
                match self.duplicate(abs, can_block) {
                    Some(_) => any = true,
                    None => break,
                }
            }
            if let Some(e) = self.entry_mut(abs) {
                e.hits = 0;
            }
            abs = abs.max(self.dropped) + 1;
        }
        any
    }

    fn referenceable(&self, abs: u64, can_block: bool) -> bool {
        self.dynamic && abs >= self.dropped && (abs < self.known_received || can_block)
    }

    fn choose(&mut self, i: usize, field: &Field, can_block: bool, drain_below: u64) -> Repr {
        let never = self.config.is_sensitive(field);
        let stat = static_table::find(&field.name, &field.value);
        if let Match::Full(index) = stat
            && !never
        {
            return Repr::Static(index);
        }
        let name_hash = hash(&field.name);
        if never {
            return self.literal(i, &field.name, stat, name_hash, can_block, true);
        }
        let field_hash = hash_field(name_hash, &field.value);
        let repeated = self.history.observe(field_hash, name_hash);
        if let Some(abs) = self.find_field(field_hash, field) {
            if abs < drain_below
                && let Some(dup) = self.duplicate(abs, can_block)
                && self.referenceable(dup, can_block)
            {
                return Repr::Dynamic(dup);
            }
            if self.referenceable(abs, can_block) {
                return Repr::Dynamic(abs);
            }
            // A fresh duplicate may not be usable yet, but its original is.
            if let Some(orig) = self.entry(abs).and_then(|e| e.original)
                && self.referenceable(orig, can_block)
            {
                return Repr::Dynamic(orig);
            }
            return self.literal(i, &field.name, stat, name_hash, can_block, false);
        }
        let size = entry_size(&field.name, &field.value);
        let worth = self.worth_inserting(field, name_hash, repeated);
        if size <= self.capacity * 3 / 4 && worth {
            if let Some(abs) = self.insert(field, stat, name_hash, field_hash, size)
                && self.referenceable(abs, can_block)
            {
                return Repr::Dynamic(abs);
            }
        } else if stat == Match::None && !self.by_name.contains_key(&name_hash) {
            // Insert the name alone so later literals can reference it.
            let empty = Field::new(field.name.clone(), Bytes::new());
            let size = entry_size(&field.name, b"");
            if size <= self.capacity / 4 {
                let fh = hash_field(name_hash, b"");
                self.insert(&empty, stat, name_hash, fh, size);
            }
        }
        self.literal(i, &field.name, stat, name_hash, can_block, false)
    }

    /// Worth inserting: a recent repeat of a name whose values do repeat, or a name not
    /// known yet unless its values are known to be unique.
    fn worth_inserting(&self, field: &Field, name_hash: u64, repeated: bool) -> bool {
        match self.history.ratio(name_hash) {
            Some(ratio) => repeated && ratio >= 0.3,
            None => repeated || !UNIQUE_NAMES.contains(&&field.name[..]),
        }
    }

    fn literal(
        &self,
        i: usize,
        name: &[u8],
        stat: Match,
        name_hash: u64,
        can_block: bool,
        never: bool,
    ) -> Repr {
        if let Some(repr) = static_literal(i, stat, never) {
            return repr;
        }
        if let Some(&abs) = self.by_name.get(&name_hash)
            && self.referenceable(abs, can_block)
            && self.entry(abs).is_some_and(|e| e.name == name)
        {
            return Repr::DynamicName {
                abs,
                field: i,
                never,
            };
        }
        Repr::Literal { field: i, never }
    }

    fn find_field(&self, field_hash: u64, field: &Field) -> Option<u64> {
        let abs = *self.by_field.get(&field_hash)?;
        let e = self.entry(abs)?;
        (e.name == field.name && e.value == field.value).then_some(abs)
    }

    /// How many of the oldest entries must go to fit `size` more bytes, if they all may go
    /// (acknowledged and unreferenced, RFC 9204 §2.1.1).
    fn evictions_for(&self, size: u64) -> Option<usize> {
        if size > self.capacity {
            return None;
        }
        let mut free = self.capacity - self.size;
        let mut n = 0;
        for (i, e) in self.entries.iter().enumerate() {
            if free >= size {
                break;
            }
            let abs = self.dropped + i as u64;
            if abs >= self.known_received || e.refs > 0 {
                return None;
            }
            free += e.size;
            n += 1;
        }
        (free >= size).then_some(n)
    }

    /// Bytes of entries the decoder has not acknowledged.
    fn unacknowledged_bytes(&self) -> u64 {
        let skip = self.known_received.saturating_sub(self.dropped) as usize;
        self.entries.iter().skip(skip).map(|e| e.size).sum()
    }

    /// Caps entries the decoder has not acknowledged. With blocked streams they are usable at
    /// once, so the whole table may be unacknowledged. Without, they are useless until
    /// acknowledged: a sixteenth of the table (at least 256 bytes) until the peer has
    /// acknowledged anything (it may never), then the whole table.
    fn within_budget(&self, size: u64) -> bool {
        if !self.dynamic {
            return false;
        }
        let budget = if self.max_blocked > 0 || self.known_received > 0 {
            self.capacity
        } else {
            // Enough for a few typical entries even in a small table, or nothing would ever be
            // inserted, acknowledged, and so allowed.
            (self.capacity / 16).max(256).min(self.capacity)
        };
        self.unacknowledged_bytes() + size <= budget
    }

    /// Inserts a field (RFC 9204 §4.3.2 / §4.3.3) if the table can take it.
    fn insert(
        &mut self,
        field: &Field,
        stat: Match,
        name_hash: u64,
        field_hash: u64,
        size: u64,
    ) -> Option<u64> {
        if !self.within_budget(size) {
            return None;
        }
        let evict = self.evictions_for(size)?;
        let count = self.insert_count();
        let huffman = self.config.huffman;
        self.table_instructions();
        if let Match::Full(index) | Match::Name(index) = stat {
            put_int(&mut self.encoder_stream, 6, 0xc0, index.into());
        } else {
            // RFC 9204 §3.2.3 allows naming an entry that this very insert evicts.
            let name_abs = self
                .by_name
                .get(&name_hash)
                .copied()
                .filter(|&abs| self.entry(abs).is_some_and(|e| e.name == field.name));
            match name_abs {
                Some(abs) => {
                    let relative = count - 1 - abs;
                    // A name reference only pays off when it is shorter than the name.
                    if relative < 63 || string_len(6, &field.name) > 3 {
                        put_int(&mut self.encoder_stream, 6, 0x80, relative);
                    } else {
                        put_string(&mut self.encoder_stream, 6, 0x40, &field.name, huffman);
                    }
                }
                None => put_string(&mut self.encoder_stream, 6, 0x40, &field.name, huffman),
            }
        }
        put_string(&mut self.encoder_stream, 8, 0, &field.value, huffman);
        Some(self.push_entry(
            field.name.clone(),
            field.value.clone(),
            size,
            field_hash,
            name_hash,
            evict,
        ))
    }

    /// Re-inserts an entry with Duplicate (RFC 9204 §4.3.4), if the table can take it.
    ///
    /// The copy may evict the original (RFC 9204 §3.2.3 allows it) only when the current
    /// section can reference the copy; otherwise the original must stay usable.
    fn duplicate(&mut self, abs: u64, may_evict_original: bool) -> Option<u64> {
        let e = self.entry(abs)?;
        let (name, value, size, fh, nh, hits) = (
            e.name.clone(),
            e.value.clone(),
            e.size,
            e.field_hash,
            e.name_hash,
            e.hits,
        );
        if !self.within_budget(size) {
            return None;
        }
        let evict = self.evictions_for(size)?;
        let evicted_original = abs < self.dropped + evict as u64;
        if evicted_original && !may_evict_original {
            return None;
        }
        let relative = self.insert_count() - 1 - abs;
        put_int(self.table_instructions(), 5, 0x00, relative);
        let copy = self.push_entry(name, value, size, fh, nh, evict);
        if let Some(e) = self.entry_mut(copy) {
            // The copy inherits half the original's use: an entry used steadily but rarely
            // keeps being refreshed, one that stopped being used fades out.
            e.hits = hits / 2;
            if !evicted_original {
                e.original = Some(abs);
            }
        }
        Some(copy)
    }

    fn push_entry(
        &mut self,
        name: Bytes,
        value: Bytes,
        size: u64,
        field_hash: u64,
        name_hash: u64,
        evict: usize,
    ) -> u64 {
        for _ in 0..evict {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            let abs = self.dropped;
            self.dropped += 1;
            self.size -= old.size;
            self.log.record(|| TableEvent::Evicted { index: abs });
            if let MapEntry::Occupied(o) = self.by_field.entry(old.field_hash)
                && *o.get() == abs
            {
                o.remove();
            }
            if let MapEntry::Occupied(o) = self.by_name.entry(old.name_hash)
                && *o.get() == abs
            {
                o.remove();
            }
        }
        let abs = self.insert_count();
        self.log.record(|| TableEvent::Inserted {
            index: abs,
            name: name.clone(),
            value: value.clone(),
        });
        self.entries.push_back(Entry {
            name,
            value,
            size,
            field_hash,
            name_hash,
            refs: 0,
            hits: 0,
            original: None,
        });
        self.size += size;
        self.by_field.insert(field_hash, abs);
        self.by_name.insert(name_hash, abs);
        abs
    }
}

/// Recently seen fields and, per name, how often values repeat.
#[derive(Debug)]
struct History {
    /// How many recent fields count as "seen recently".
    window: usize,
    ring: VecDeque<u64>,
    counts: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    /// name hash -> (fields seen, fields seen before in the ring)
    names: HashMap<u64, (u32, u32), BuildHasherDefault<IdHasher>>,
}

/// History window when referencing new entries may block: an insert then costs little more
/// than the literal it replaces, so a repeat within the last ~35 requests is enough.
const HISTORY: usize = 512;
/// History window when it may not: the field goes out as a literal *and* as an insert, which
/// only pays if it repeats soon, so the repeat must be recent.
const HISTORY_NO_BLOCKING: usize = 64;
const MAX_NAMES: usize = 1024;

/// Names whose values are almost always new: inserting them mostly wastes table space.
const UNIQUE_NAMES: [&[u8]; 16] = [
    b":path",
    b"content-length",
    b"date",
    b"expires",
    b"last-modified",
    b"etag",
    b"age",
    b"if-modified-since",
    b"if-none-match",
    b"content-md5",
    b"x-fb-debug",
    b"x-request-id",
    b"content-range",
    b"location",
    b"x-fb-trace-id",
    b"x-amz-request-id",
];

impl History {
    fn new(window: usize) -> Self {
        Self {
            window,
            // Grown on demand: a connection that sends few header sections keeps a small ring.
            ring: VecDeque::new(),
            counts: HashMap::default(),
            names: HashMap::default(),
        }
    }

    /// Records a field; returns whether it was seen recently.
    fn observe(&mut self, field_hash: u64, name_hash: u64) -> bool {
        let seen = self.counts.get(&field_hash).is_some_and(|c| *c > 0);
        if self.names.len() >= MAX_NAMES && !self.names.contains_key(&name_hash) {
            self.names.clear();
        }
        let stats = self.names.entry(name_hash).or_default();
        stats.0 = stats.0.saturating_add(1);
        if seen {
            stats.1 = stats.1.saturating_add(1);
        }
        if self.ring.len() >= self.window
            && let Some(old) = self.ring.pop_front()
            && let MapEntry::Occupied(mut o) = self.counts.entry(old)
        {
            *o.get_mut() -= 1;
            if *o.get() == 0 {
                o.remove();
            }
        }
        self.ring.push_back(field_hash);
        *self.counts.entry(field_hash).or_default() += 1;
        seen
    }

    /// Whether a field was seen recently, without recording it.
    fn seen(&self, field_hash: u64) -> bool {
        self.counts.get(&field_hash).is_some_and(|c| *c > 0)
    }

    fn ratio(&self, name_hash: u64) -> Option<f64> {
        let (seen, repeats) = self.names.get(&name_hash).copied().unwrap_or_default();
        (seen >= 4).then(|| f64::from(repeats) / f64::from(seen))
    }
}

/// A hasher for keys that are already hashes.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// A fast non-cryptographic hash; collisions are checked against the real bytes.
fn hash(data: &[u8]) -> u64 {
    let mut h = (data.len() as u64 ^ 0x2545_f491_4f6c_dd1d).wrapping_mul(K);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

fn hash_field(name_hash: u64, value: &[u8]) -> u64 {
    (name_hash.rotate_left(17) ^ hash(value)).wrapping_mul(K)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{hex, inserted};
    use crate::{Decoded, Decoder, DecoderConfig};

    fn f(name: &'static str, value: &'static str) -> Field {
        Field::new(name, value)
    }

    /// Inserts a field through the encoder's own instruction writer.
    fn insert(enc: &mut Encoder, name: &'static str, value: &'static str) -> u64 {
        let field = f(name, value);
        let stat = static_table::find(&field.name, &field.value);
        let nh = hash(&field.name);
        let fh = hash_field(nh, &field.value);
        enc.state_mut()
            .insert(&field, stat, nh, fh, field.size())
            .unwrap()
    }

    fn take_stream(enc: &mut Encoder) -> Vec<u8> {
        std::mem::take(&mut enc.state_mut().encoder_stream)
    }

    /// Encodes a static-only section, so that the next one may insert (module docs: the first
    /// section never does). It references nothing, so the decoder never hears of it.
    fn skip_first_section(enc: &mut Encoder) {
        let out = enc.encode(0, &[f(":method", "GET")]);
        assert!(out.encoder_stream.is_empty());
    }

    // The encoder's table changes (RFC 9204 §3.2): the capacity goes out with the first insert
    // (§3.2.3, §4.3.1), inserts get absolute indices from 0 (§3.2.4), and an insert that does
    // not fit evicts the oldest entry first (§3.2.2: 54 + 53 bytes exceed 100), which it may
    // only once the decoder acknowledged it (§2.1.1).
    #[test]
    fn table_events_report_capacity_inserts_and_evictions() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.record_table_events();
        enc.apply_peer_settings(100, 10);
        skip_first_section(&mut enc);
        assert_eq!(enc.take_table_events().count(), 0, "no table change yet");
        assert_eq!(insert(&mut enc, "custom-key", "custom-value"), 0);
        let events: Vec<_> = enc.take_table_events().collect();
        assert_eq!(
            events,
            [
                TableEvent::Capacity(100),
                inserted(0, "custom-key", "custom-value")
            ]
        );
        // §4.4.3 Insert Count Increment 1: entry 0 may now be evicted.
        enc.handle_decoder_stream(&[0x01]).unwrap();
        assert_eq!(insert(&mut enc, "other-key", "other-value1"), 1);
        let events: Vec<_> = enc.take_table_events().collect();
        assert_eq!(
            events,
            [
                TableEvent::Evicted { index: 0 },
                inserted(1, "other-key", "other-value1")
            ]
        );
        assert_eq!(enc.table_size(), (53, 1));
    }

    #[test]
    fn table_events_are_not_recorded_unless_asked() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(100, 10);
        skip_first_section(&mut enc);
        insert(&mut enc, "custom-key", "custom-value");
        assert_eq!(enc.take_table_events().count(), 0);
        // Asked for later: only the changes from then on.
        enc.record_table_events();
        enc.handle_decoder_stream(&[0x01]).unwrap();
        insert(&mut enc, "other-key", "other-value1");
        assert_eq!(enc.take_table_events().count(), 2);
    }

    // RFC 9204 Appendix B, encoder side: every encoder instruction is byte for byte the RFC's,
    // and so are the field sections of B.1 and B.4. B.2's section uses post-Base indexing,
    // which this encoder never emits (it always sets Base to the Required Insert Count); its
    // equivalent is checked to decode to the same fields.
    #[test]
    fn appendix_b_encoder_side() {
        let mut enc = Encoder::new(EncoderConfig::default().huffman(false));
        let mut dec = Decoder::new(
            DecoderConfig::default()
                .max_table_capacity(220)
                .max_blocked_streams(100),
        );
        // B.1
        let out = enc.encode(0, &[f(":path", "/index.html")]);
        assert_eq!(
            &out.field_section[..],
            hex("0000 510b 2f69 6e64 6578 2e68 746d 6c")
        );
        assert!(out.encoder_stream.is_empty());
        // B.2
        enc.apply_peer_settings(220, 100);
        assert_eq!(insert(&mut enc, ":authority", "www.example.com"), 0);
        assert_eq!(insert(&mut enc, ":path", "/sample/path"), 1);
        let stream = take_stream(&mut enc);
        assert_eq!(
            stream,
            hex(
                "3fbd01 c00f 7777 772e 6578 616d 706c 652e 636f 6d c10c 2f73 616d 706c 652f 7061 7468"
            )
        );
        dec.handle_encoder_stream(&stream).unwrap();
        let fields = [
            f(":authority", "www.example.com"),
            f(":path", "/sample/path"),
        ];
        let out = enc.encode(4, &fields);
        assert_eq!(&out.field_section[..], hex("0300 8180"));
        assert_eq!(
            dec.decode_section(4, out.field_section),
            Ok(Decoded::Fields(fields.to_vec()))
        );
        assert_eq!(enc.state_mut().entry(0).unwrap().refs, 1);
        enc.handle_decoder_stream(&hex("84")).unwrap();
        assert_eq!(enc.known_received_count(), 2);
        assert_eq!(enc.state_mut().entry(0).unwrap().refs, 0);
        // B.3
        assert_eq!(insert(&mut enc, "custom-key", "custom-value"), 2);
        assert_eq!(
            take_stream(&mut enc),
            hex("4a63 7573 746f 6d2d 6b65 790c 6375 7374 6f6d 2d76 616c 7565")
        );
        enc.handle_decoder_stream(&hex("01")).unwrap();
        assert_eq!(enc.known_received_count(), 3);
        // B.4
        assert_eq!(enc.state_mut().duplicate(0, true), Some(3));
        assert_eq!(take_stream(&mut enc), hex("02"));
        let out = enc.encode(
            8,
            &[
                f(":authority", "www.example.com"),
                f(":path", "/"),
                f("custom-key", "custom-value"),
            ],
        );
        assert_eq!(&out.field_section[..], hex("0500 80 c1 81"));
        assert!(out.encoder_stream.is_empty());
        assert_eq!(enc.state_mut().size, 217);
        enc.handle_decoder_stream(&hex("48")).unwrap();
        assert!(enc.state_mut().unacked.is_empty());
        // B.5: evicts entry 0, names entry 2 by relative index 1.
        assert_eq!(insert(&mut enc, "custom-key", "custom-value2"), 4);
        assert_eq!(
            take_stream(&mut enc),
            hex("810d 6375 7374 6f6d 2d76 616c 7565 32")
        );
        assert_eq!((enc.state_mut().dropped, enc.state_mut().size), (1, 215));
    }

    fn decoder_stream_error(enc: &mut Encoder, bytes: &str) -> Option<Reason> {
        match enc.handle_decoder_stream(&hex(bytes)) {
            Err(e @ Error::DecoderStream(_)) => {
                assert_eq!(e.code(), 0x202);
                e.reason()
            }
            other => panic!("expected QPACK_DECODER_STREAM_ERROR, got {other:?}"),
        }
    }

    // RFC 9204 §4.2: an encoder that does not insert need not use its encoder stream, so the
    // table capacity is announced (§4.3.1) with the first insert, not when the settings arrive.
    #[test]
    fn capacity_announced_with_the_first_insert() {
        let mut enc = Encoder::new(EncoderConfig::default().huffman(false));
        enc.apply_peer_settings(220, 100);
        let out = enc.encode(0, &[f(":method", "GET"), f(":status", "200")]);
        assert_eq!(&out.field_section[..], hex("0000 d1 d9"));
        assert!(out.encoder_stream.is_empty());
        assert_eq!(insert(&mut enc, "custom-key", "custom-value"), 0);
        assert_eq!(
            take_stream(&mut enc),
            hex("3fbd01 4a63 7573 746f 6d2d 6b65 790c 6375 7374 6f6d 2d76 616c 7565")
        );
        assert_eq!(insert(&mut enc, "custom-key", "other"), 1);
        assert_eq!(take_stream(&mut enc), hex("80 056f 7468 6572"));
    }

    // Module docs: the first section inserts nothing, so a connection that sends one request
    // never needs its encoder stream (RFC 9204 §4.2); fields seen again are inserted then.
    #[test]
    fn the_first_section_inserts_nothing() {
        let mut enc = Encoder::new(EncoderConfig::default().huffman(false));
        enc.apply_peer_settings(4096, 100);
        let mut dec = Decoder::new(DecoderConfig::default());
        // A WebTransport CONNECT: `:protocol` is not in the static table at all.
        let fields = [
            f(":method", "CONNECT"),
            f(":protocol", "webtransport"),
            f(":scheme", "https"),
            f(":authority", "example.com"),
            f(":path", "/chat"),
        ];
        let out = enc.encode(0, &fields);
        // Static index 15; literal name; static index 23; static name 0 and 1 with values.
        assert_eq!(
            &out.field_section[..],
            hex(
                "0000 cf 2702 3a70 726f 746f 636f 6c0c 7765 6274 7261 6e73 706f 7274 d7 500b 6578 616d 706c 652e 636f 6d 5105 2f63 6861 74"
            )
        );
        assert!(out.encoder_stream.is_empty());
        assert_eq!(enc.insert_count(), 0);
        assert!(enc.state.is_none(), "nothing is kept for the first section");
        assert_eq!(
            dec.decode_section(0, out.field_section),
            Ok(Decoded::Fields(fields.to_vec()))
        );
        assert_eq!(dec.poll_decoder_stream(), None);

        // The second time, `:protocol` and `:authority` go in (`:path` values rarely repeat).
        let out = enc.encode(4, &fields);
        assert_eq!(
            &out.encoder_stream[..],
            hex(
                "3fe11f 493a 7072 6f74 6f63 6f6c 0c77 6562 7472 616e 7370 6f72 74 c00b 6578 616d 706c 652e 636f 6d"
            )
        );
        // Required Insert Count 2; then relative indices 1 and 0 for the new entries.
        assert_eq!(
            &out.field_section[..],
            hex("0300 cf 81 d7 80 5105 2f63 6861 74")
        );
        dec.handle_encoder_stream(&out.encoder_stream).unwrap();
        assert_eq!(
            dec.decode_section(4, out.field_section),
            Ok(Decoded::Fields(fields.to_vec()))
        );
    }

    // Module docs: without a dynamic table nothing is allocated for it, and an encoder that
    // does not use it is small (it lives in every connection).
    #[test]
    fn no_table_state_without_a_table() {
        println!("Encoder: {} bytes", size_of::<Encoder>());
        assert!(size_of::<Encoder>() <= 64);
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(0, 100);
        for id in [0, 4, 8] {
            let out = enc.encode(id, &[f("x-custom", "value")]);
            assert!(out.encoder_stream.is_empty());
        }
        assert!(enc.state.is_none());
    }

    // RFC 9204 §4.4: each invalid decoder instruction is a QPACK_DECODER_STREAM_ERROR.
    #[test]
    fn decoder_stream_errors() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(4096, 16);
        // §4.4.1: no unacknowledged section on stream 4.
        assert_eq!(
            decoder_stream_error(&mut enc, "84"),
            Some(Reason::UnexpectedAcknowledgment)
        );
        // §4.4.3: zero increment, and an increment past what was inserted.
        assert_eq!(
            decoder_stream_error(&mut enc, "00"),
            Some(Reason::ZeroIncrement)
        );
        assert_eq!(
            decoder_stream_error(&mut enc, "01"),
            Some(Reason::IncrementTooLarge)
        );
        assert_eq!(
            decoder_stream_error(&mut enc, "3f ffff ffff ffff ffff ff01"),
            Some(Reason::IntegerOverflow)
        );
        // A cancellation of an unknown stream is harmless; a split instruction waits.
        enc.handle_decoder_stream(&hex("48")).unwrap();
        enc.handle_decoder_stream(&hex("ff")).unwrap();
        assert_eq!(
            decoder_stream_error(&mut enc, "80 01"),
            Some(Reason::UnexpectedAcknowledgment)
        );
    }

    // RFC 9204 §7.1.3: sensitive fields are literals with the N bit and never enter the table.
    #[test]
    fn sensitive_fields_are_never_indexed() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(4096, 100);
        let fields = [
            f("authorization", "Bearer secret"),
            f("proxy-authorization", "Basic secret"),
            f("cookie", "session=secret"),
            f("set-cookie", "a=b"),
            Field::sensitive("x-api-key", "secret"),
        ];
        let mut dec = Decoder::new(DecoderConfig::default());
        for id in [0, 4, 8] {
            let out = enc.encode(id, &fields);
            dec.handle_encoder_stream(&out.encoder_stream).unwrap();
            let Ok(Decoded::Fields(got)) = dec.decode_section(id, out.field_section) else {
                panic!("not decoded");
            };
            assert!(got.iter().all(|f| f.never_index));
        }
        assert!(
            enc.state_mut().entries.iter().all(|e| e.value.is_empty()),
            "only names may be inserted"
        );
    }

    // RFC 9204 §2.1.2: with no blocked streams allowed, only acknowledged entries are used.
    #[test]
    fn no_blocking_references_without_blocked_streams() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(4096, 0);
        skip_first_section(&mut enc);
        let fields = [f("x-custom", "value"), f(":authority", "example.com")];
        let out = enc.encode(0, &fields);
        assert_eq!(out.field_section[0], 0, "Required Insert Count must be 0");
        assert!(enc.insert_count() > 0);
        // Once acknowledged, the entries are used.
        enc.handle_decoder_stream(&[enc.insert_count() as u8])
            .unwrap();
        let out = enc.encode(4, &fields);
        assert_ne!(out.field_section[0], 0);
        assert_eq!(out.field_section.len(), 4);
    }

    // RFC 9204 §2.1.2: a peer that never acknowledges leaves every blocking stream counted
    // for good, so the last slots go to sections that gain much, not to the next comers.
    #[test]
    fn blocked_stream_slots_are_rationed_without_acknowledgements() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(4096, 4);
        skip_first_section(&mut enc);
        let mut dec = Decoder::new(
            DecoderConfig::default()
                .max_table_capacity(4096)
                .max_blocked_streams(4),
        );
        let big = || Field::new("x-big", "b".repeat(300));
        let small = || f("x-s", "1");
        let sections = [
            vec![big(), small()],
            vec![big()],
            vec![big()],
            vec![small()],
            vec![big()],
        ];
        let mut blocking = vec![];
        for (i, fields) in sections.iter().enumerate() {
            let id = i as u64 * 4;
            let out = enc.encode(id, fields);
            if out.field_section[0] != 0 {
                blocking.push(i);
            }
            dec.handle_encoder_stream(&out.encoder_stream).unwrap();
            assert_eq!(
                dec.decode_section(id, out.field_section),
                Ok(Decoded::Fields(fields.clone()))
            );
        }
        // The fourth section would save a few bytes, the fifth hundreds: the last slot waits.
        assert_eq!(blocking, [0, 1, 2, 4]);
    }

    // RFC 9204 §2.1.1: an entry referenced by an unacknowledged section is never evicted.
    #[test]
    fn referenced_entries_are_not_evicted() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(128, 100);
        skip_first_section(&mut enc);
        let out = enc.encode(
            0,
            &[f("x-a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")],
        );
        assert_eq!(enc.insert_count(), 1);
        assert_ne!(out.field_section[0], 0);
        // No room for a second entry while the first is referenced and unacknowledged.
        enc.handle_decoder_stream(&[0x01]).unwrap();
        enc.encode(
            4,
            &[f("x-b", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")],
        );
        assert_eq!(enc.insert_count(), 1);
        // After the Section Acknowledgment it can go.
        enc.handle_decoder_stream(&[0x80]).unwrap();
        enc.encode(
            8,
            &[f("x-b", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")],
        );
        assert_eq!((enc.insert_count(), enc.state_mut().dropped), (2, 1));
    }

    #[test]
    fn huffman_only_when_shorter() {
        let mut enc = Encoder::new(EncoderConfig::default());
        // "www.example.com" is shorter in Huffman (H bit set); "{}{}" is not.
        let out = enc.encode(0, &[f(":authority", "www.example.com"), f("x", "{}{}")]);
        assert_eq!(out.field_section[2], 0x50);
        assert_eq!(out.field_section[3], 0x80 | 12);
        let tail = &out.field_section[out.field_section.len() - 5..];
        assert_eq!(tail, b"\x04{}{}");
    }

    // Found by the round-trip property test: lookups by hash must check the bytes.
    #[test]
    fn hash_collisions_never_pick_the_wrong_entry() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(4096, 100);
        skip_first_section(&mut enc);
        let first = enc.encode(0, &[f("x-a", "1")]);
        assert_eq!(enc.insert_count(), 1);
        // Pretend "x-b" and its field collide with the entry of "x-a".
        let nh = hash(b"x-b");
        enc.state_mut().by_name.insert(nh, 0);
        enc.state_mut().by_field.insert(hash_field(nh, b"1"), 0);
        let out = enc.encode(4, &[f("x-b", "1")]);
        let mut dec = Decoder::new(DecoderConfig::default());
        dec.handle_encoder_stream(&first.encoder_stream).unwrap();
        dec.handle_encoder_stream(&out.encoder_stream).unwrap();
        let Ok(Decoded::Fields(got)) = dec.decode_section(4, out.field_section) else {
            panic!("not decoded");
        };
        assert_eq!(got, [f("x-b", "1")]);
    }

    // A peer that never acknowledges cannot make the encoder track sections without bound.
    #[test]
    fn unacknowledged_sections_are_bounded() {
        let mut enc = Encoder::new(EncoderConfig::default());
        enc.apply_peer_settings(4096, u64::MAX);
        for id in 0..2000u64 {
            enc.encode(id * 4, &[f("x-a", "1")]);
        }
        assert_eq!(enc.state_mut().unacked_sections, MAX_UNACKED_SECTIONS);
        let out = enc.encode(8000, &[f("x-a", "1")]);
        assert_eq!(
            out.field_section[0], 0,
            "no dynamic references past the bound"
        );
    }
}
