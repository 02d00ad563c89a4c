//! [`SessionTable`]: the sessions of one connection, sans-IO: which session a peer's
//! WebTransport stream belongs to, which streams wait for a session not established yet, how
//! many sessions a connection may carry, and which streams are refused with which code
//! (WT_SESSION_GONE, WT_BUFFERED_STREAM_REJECTED).
//!
//! It does not own the sessions' own state ([`super::session::SessionCore`] does), nor any
//! stream, lock or task: the glue (`crate::routes`) holds one table behind a
//! `std::sync::Mutex`, feeds it what happened and acts on what it returns. `S` is whatever the
//! glue calls a routed stream, `H` its handle to an established session.
//!
//! # Call order
//!
//! For each session: [`handle_request`](SessionTable::handle_request) when its CONNECT
//! request is sent (client) or read (server), then
//! [`handle_established`](SessionTable::handle_established) once it is accepted, then
//! [`handle_close`](SessionTable::handle_close) once it ends or is refused (any number of
//! times). A peer's stream may come at any point, even before the request: each goes to
//! [`handle_stream`](SessionTable::handle_stream). At the connection's end,
//! [`handle_connection_closed`](SessionTable::handle_connection_closed). After each input, the
//! glue refuses the streams [`poll_refused`](SessionTable::poll_refused) gives, until `None`.

use quay_h3::Code;

use crate::proto::error::{WT_BUFFERED_STREAM_REJECTED, WT_SESSION_GONE};

/// Where a peer's stream goes, from [`SessionTable::handle_stream`].
#[derive(Debug)]
pub(crate) enum Route<S, H> {
    /// To this established session.
    Deliver(H, S),
    /// Kept until its session is established or gone.
    Buffered,
    /// Refused with this code (RESET_STREAM and STOP_SENDING).
    Refuse(S, Code),
    /// The peer broke the protocol: close the connection with this code (the stream is
    /// dropped with it).
    CloseConnection(Code),
}

/// The most sessions a server takes from one client (draft-16 §5.2): up to `max_sessions`
/// (ours) when the client pools sessions (it announced a session count, draft-07..14, or flow
/// control is on, draft-16 §5.1), one otherwise.
pub(crate) fn server_session_limit(
    max_sessions: usize,
    client_counted: bool,
    flow_on: bool,
) -> usize {
    if client_counted || flow_on {
        max_sessions
    } else {
        1
    }
}

/// The most sessions a client opens to one server: the count the server announced binds
/// (draft-07..14); without one, up to `max_sessions` (ours) when flow control is on, one
/// otherwise (draft-16 §5.1).
pub(crate) fn client_session_limit(
    announced: Option<usize>,
    flow_on: bool,
    max_sessions: usize,
) -> usize {
    match announced {
        Some(count) => count,
        None if flow_on => max_sessions,
        None => 1,
    }
}

#[derive(Debug)]
enum Slot<S, H> {
    /// Not established yet (or not even requested yet: streams can overtake their CONNECT).
    Waiting {
        streams: Vec<S>,
        /// Whether the CONNECT request is known (and counted in `sessions`).
        requested: bool,
    },
    Established(H),
}

/// The session table of one connection. See the module docs for the call order.
#[derive(Debug)]
pub(crate) struct SessionTable<S, H> {
    /// Sessions requested, established, or with streams waiting for their CONNECT: few at a
    /// time, so a short list (with room for exactly one at first: most connections carry one
    /// session).
    slots: Vec<(u64, Slot<S, H>)>,
    /// Sessions that ended or were refused, sorted: their streams get WT_SESSION_GONE.
    gone: Vec<u64>,
    /// Streams waiting in [`Slot::Waiting`] slots, all sessions together.
    buffered: usize,
    /// At most this many streams wait for sessions not established (draft-16 §4.6).
    max_buffered: usize,
    /// Sessions requested or established.
    sessions: usize,
    /// The connection is gone: nothing is routed any more.
    closed: bool,
    /// Streams to refuse with WT_SESSION_GONE.
    refused: Vec<S>,
}

impl<S, H: Clone> SessionTable<S, H> {
    /// An empty table that buffers at most `max_buffered` early streams.
    pub(crate) fn new(max_buffered: usize) -> Self {
        Self {
            slots: Vec::new(),
            gone: Vec::new(),
            buffered: 0,
            max_buffered,
            sessions: 0,
            closed: false,
            refused: Vec::new(),
        }
    }

    /// Sessions requested or established on the connection.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions
    }

    /// A stream the peer opened for session `id`.
    pub(crate) fn handle_stream(&mut self, id: u64, stream: S) -> Route<S, H> {
        // draft-16 §4.1: a session ID is a client-initiated bidirectional stream ID.
        if !id.is_multiple_of(4) {
            return Route::CloseConnection(Code::H3_ID_ERROR);
        }
        // draft-16 §6: the streams of a session that ended (or never will exist) are gone.
        if self.closed || self.is_gone(id) {
            return Route::Refuse(stream, WT_SESSION_GONE);
        }
        let buffered = self.buffered;
        let max_buffered = self.max_buffered;
        match self.slot(id) {
            Slot::Established(session) => Route::Deliver(session.clone(), stream),
            // draft-16 §4.6: early streams wait for their session, up to a bound.
            Slot::Waiting { streams, .. } if buffered < max_buffered => {
                streams.push(stream);
                self.buffered += 1;
                Route::Buffered
            }
            Slot::Waiting { .. } => Route::Refuse(stream, WT_BUFFERED_STREAM_REJECTED),
        }
    }

    /// A CONNECT request for session `id` arrived (server) or was sent (client). `false`,
    /// and nothing changes, when `limit` sessions are requested or established already (the
    /// request is then refused, draft-16 §5.2) or `id` is gone or known.
    pub(crate) fn handle_request(&mut self, id: u64, limit: usize) -> bool {
        if self.sessions >= limit || self.is_gone(id) {
            return false;
        }
        match self.slot(id) {
            Slot::Waiting { requested, .. } if !*requested => {
                *requested = true;
                self.sessions += 1;
                true
            }
            _ => false,
        }
    }

    /// Session `id` is established: the streams that waited for it are returned, in the order
    /// they came, for the session; later ones are routed to `session`.
    pub(crate) fn handle_established(&mut self, id: u64, session: H) -> Vec<S> {
        let slot = self.slot(id);
        let waiting = match std::mem::replace(slot, Slot::Established(session)) {
            Slot::Waiting { streams, .. } => streams,
            Slot::Established(_) => Vec::new(),
        };
        self.buffered -= waiting.len();
        waiting
    }

    /// Session `id` ended or was refused: its waiting streams, and any later ones, get
    /// WT_SESSION_GONE. Idempotent.
    pub(crate) fn handle_close(&mut self, id: u64) {
        if let Err(i) = self.gone.binary_search(&id) {
            self.gone.insert(i, id);
        }
        match self.take_slot(id) {
            Some(Slot::Waiting { streams, requested }) => {
                self.buffered -= streams.len();
                if requested {
                    self.sessions -= 1;
                }
                self.refused.extend(streams);
            }
            Some(Slot::Established(_)) => self.sessions -= 1,
            None => {}
        }
    }

    /// The connection is gone: every waiting stream is refused, and nothing is routed any
    /// more.
    pub(crate) fn handle_connection_closed(&mut self) {
        self.closed = true;
        self.buffered = 0;
        for (_, slot) in std::mem::take(&mut self.slots) {
            if let Slot::Waiting { streams, .. } = slot {
                self.refused.extend(streams);
            }
        }
    }

    /// The next stream to refuse with WT_SESSION_GONE.
    pub(crate) fn poll_refused(&mut self) -> Option<S> {
        let stream = self.refused.pop();
        if self.refused.is_empty() && self.refused.capacity() > 0 {
            self.refused = Vec::new();
        }
        stream
    }

    fn is_gone(&self, id: u64) -> bool {
        self.gone.binary_search(&id).is_ok()
    }

    /// The slot of session `id`, made a waiting one if there is none. Not for gone sessions.
    fn slot(&mut self, id: u64) -> &mut Slot<S, H> {
        let i = match self.slots.iter().position(|(slot_id, _)| *slot_id == id) {
            Some(i) => i,
            None => {
                if self.slots.is_empty() {
                    self.slots.reserve_exact(1);
                }
                self.slots.push((
                    id,
                    Slot::Waiting {
                        streams: Vec::new(),
                        requested: false,
                    },
                ));
                self.slots.len() - 1
            }
        };
        &mut self.slots[i].1
    }

    fn take_slot(&mut self, id: u64) -> Option<Slot<S, H>> {
        let i = self.slots.iter().position(|(slot_id, _)| *slot_id == id)?;
        let (_, slot) = self.slots.swap_remove(i);
        if self.slots.is_empty() {
            self.slots = Vec::new();
        }
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams are numbers, session handles names.
    fn table(max_buffered: usize) -> SessionTable<u32, &'static str> {
        SessionTable::new(max_buffered)
    }

    fn refused(table: &mut SessionTable<u32, &'static str>) -> Vec<u32> {
        let mut refused: Vec<u32> = std::iter::from_fn(|| table.poll_refused()).collect();
        refused.sort_unstable();
        refused
    }

    // draft-16 §4.1: the session ID is the CONNECT stream's, a client bidirectional stream
    // ID; anything else is H3_ID_ERROR on the connection.
    #[test]
    fn a_session_id_that_is_no_client_bidi_stream_closes_the_connection() {
        let mut table = table(4);
        for id in [1, 2, 3, 5, 7] {
            assert!(matches!(
                table.handle_stream(id, 9),
                Route::CloseConnection(Code::H3_ID_ERROR)
            ));
        }
        assert!(matches!(table.handle_stream(4, 9), Route::Buffered));
    }

    // draft-16 §4.6: streams that come before their session wait for it, in order, and go to
    // it once it is established.
    #[test]
    fn early_streams_wait_for_their_session() {
        let mut table = table(4);
        assert!(matches!(table.handle_stream(0, 1), Route::Buffered));
        assert!(matches!(table.handle_stream(0, 2), Route::Buffered));
        assert!(table.handle_request(0, 1));
        assert_eq!(table.handle_established(0, "s0"), [1, 2]);
        assert!(matches!(table.handle_stream(0, 3), Route::Deliver("s0", 3)));
        assert_eq!(table.sessions(), 1);
    }

    // draft-16 §4.6: past the bound on buffered streams (all sessions together), a stream is
    // refused with WT_BUFFERED_STREAM_REJECTED; an established session takes more.
    #[test]
    fn too_many_early_streams_are_rejected() {
        let mut table = table(2);
        assert!(matches!(table.handle_stream(0, 1), Route::Buffered));
        assert!(matches!(table.handle_stream(4, 2), Route::Buffered));
        assert!(matches!(
            table.handle_stream(8, 3),
            Route::Refuse(3, WT_BUFFERED_STREAM_REJECTED)
        ));
        assert!(table.handle_request(0, 2));
        assert_eq!(table.handle_established(0, "s0"), [1]);
        // The room it freed is the others'.
        assert!(matches!(table.handle_stream(8, 4), Route::Buffered));
        assert!(matches!(table.handle_stream(0, 5), Route::Deliver("s0", 5)));
    }

    // draft-16 §6: the streams of a session that ended, or was refused, get WT_SESSION_GONE,
    // those waiting and those to come.
    #[test]
    fn streams_of_a_gone_session_are_refused() {
        let mut table = table(4);
        assert!(matches!(table.handle_stream(4, 1), Route::Buffered));
        assert!(table.handle_request(4, 1));
        table.handle_close(4);
        assert_eq!(refused(&mut table), [1]);
        assert!(matches!(
            table.handle_stream(4, 2),
            Route::Refuse(2, WT_SESSION_GONE)
        ));
        assert_eq!(table.sessions(), 0);
        // A gone session cannot be requested again, and closing twice changes nothing.
        assert!(!table.handle_request(4, 1));
        table.handle_close(4);
        assert_eq!(table.sessions(), 0);
        // An established session that ends frees its place.
        assert!(table.handle_request(0, 1));
        table.handle_established(0, "s0");
        table.handle_close(0);
        assert_eq!(table.sessions(), 0);
        assert!(matches!(
            table.handle_stream(0, 3),
            Route::Refuse(3, WT_SESSION_GONE)
        ));
    }

    // draft-16 §6: once the connection is gone, waiting streams are refused and nothing is
    // routed.
    #[test]
    fn the_connection_end_refuses_everything() {
        let mut table = table(4);
        assert!(matches!(table.handle_stream(0, 1), Route::Buffered));
        assert!(matches!(table.handle_stream(4, 2), Route::Buffered));
        table.handle_connection_closed();
        assert_eq!(refused(&mut table), [1, 2]);
        assert!(matches!(
            table.handle_stream(8, 3),
            Route::Refuse(3, WT_SESSION_GONE)
        ));
    }

    // draft-16 §5.2: sessions past the limit are refused; a request is counted once.
    #[test]
    fn requests_past_the_limit_are_refused() {
        let mut table = table(4);
        assert!(table.handle_request(0, 2));
        assert!(!table.handle_request(0, 2));
        assert!(table.handle_request(4, 2));
        assert!(!table.handle_request(8, 2));
        assert_eq!(table.sessions(), 2);
        table.handle_close(0);
        assert!(table.handle_request(8, 2));
    }

    // draft-16 §5.1, §5.2: without flow control and without an announced session count (draft-16
    // and draft-02 peers), one session per connection; draft-07..14's count binds a client.
    #[test]
    fn session_limits_per_draft() {
        assert_eq!(server_session_limit(16, false, false), 1);
        assert_eq!(server_session_limit(16, true, false), 16);
        assert_eq!(server_session_limit(16, false, true), 16);
        assert_eq!(client_session_limit(None, false, 16), 1);
        assert_eq!(client_session_limit(None, true, 16), 16);
        assert_eq!(client_session_limit(Some(3), false, 16), 3);
        assert_eq!(client_session_limit(Some(3), true, 16), 3);
    }

    // The table is small: every connection keeps one.
    #[test]
    fn the_table_stays_small() {
        assert!(size_of::<SessionTable<u32, &'static str>>() <= 112);
    }
}
