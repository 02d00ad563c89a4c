//! A deterministic pair of WebTransport endpoints joined in memory, for tests.
//!
//! [`Pair`] runs WebTransport's pure cores on top of `quay_h3::pair::Pair` (two HTTP/3 cores
//! joined in memory, with a virtual clock, a tamper hook and raw injection): per side a session
//! table (which session a peer's stream belongs to, early streams, refusals) and, per session,
//! a session core (capsules on the CONNECT stream, the end reason, draft-16 flow control). The
//! client opens a session with Extended CONNECT (`:protocol` `webtransport-h3`), the server accepts
//! it with 200, capsules go in DATA frames on the CONNECT stream, and WebTransport streams
//! (unidirectional type 0x54, bidirectional signal 0x41, each with its session ID) are routed
//! by the tables. There is no task, socket or real clock: [`Pair::step`] delivers one
//! transfer and hands what it changed to the cores at once, so every end reason is decided in
//! the order the bytes arrived; [`Pair::advance`] moves the virtual clock (the wait for the
//! peer's answer to a close).
//!
//! The application's part is played by the caller through [`Endpoint`]: accept or refuse a
//! session, close or drain it, open, write, accept and read streams. A misbehaving peer is
//! played through the HTTP/3 pair underneath ([`Pair::h3`]): raw streams, raw bytes on the
//! CONNECT stream, tampered transfers.
//!
//! Not modelled: datagrams, and what the server writes back on a bidirectional stream the
//! client opened (the HTTP/3 pair reads a client's own bidirectional stream as a response).
//! The glue's loopback tests prove the same rules over quinn. It is not part of the stable
//! API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use quay_h3::Code;
use quay_h3::pair::{Peer, frame_bytes, varint_bytes};
use quay_h3::proto::capsule::CapsuleReader;
use quay_h3::proto::frame::Frame;
use quay_h3::proto::headers::Protocol;

use crate::config::Config;
pub use crate::core::session::End;
use crate::core::session::{Event, ReadOn, SessionCore, Transmit};
use crate::core::table::{Route, SessionTable, client_session_limit, server_session_limit};
use crate::flow::FlowControl;
use crate::proto::capsule::{CAPSULE_TYPES, Direction};
use crate::proto::connect;
use crate::proto::error::WT_SESSION_GONE;
use crate::proto::settings::{FlowControlLimits, announced_session_count, client_draft};

/// How long, after a close, the CONNECT stream is read for the peer's answer: the glue's wait.
pub const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Which end of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Side {
    /// The client, which opens sessions.
    Client,
    /// The server, which accepts them.
    Server,
}

/// How far the CONNECT stream of a session has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Capsules.
    Capsules,
    /// The peer's WT_CLOSE_SESSION came: only FIN may follow (draft-16 §6).
    AfterClose,
    /// Over: the stream ended, was reset or stopped, or the connection is gone.
    Done,
}

/// One established session of one side.
#[derive(Debug)]
struct Session {
    core: SessionCore<u64, Code>,
    reader: CapsuleReader,
    /// Bytes of the CONNECT stream's body handed to the reader.
    fed: usize,
    reading: Reading,
    /// When the wait for the peer's answer to a close is over (virtual time).
    linger_until: Option<Duration>,
    drained: bool,
}

/// A server's CONNECT request, read and counted, waiting for the application.
#[derive(Debug)]
struct Pending {
    id: u64,
    flow: Option<(FlowControlLimits, FlowControlLimits)>,
}

/// The WebTransport state of one side: its session table and sessions.
#[derive(Debug)]
pub struct State {
    side: Side,
    config: Config,
    table: SessionTable<u64, u64>,
    sessions: BTreeMap<u64, Session>,
    /// Server: requests read (accepted, refused or waiting); client: CONNECTs sent.
    requests: BTreeSet<u64>,
    /// Server: requests waiting for [`Endpoint::accept`] or [`Endpoint::reject`]; client:
    /// CONNECTs waiting for their response.
    pending: Vec<Pending>,
    /// Peer streams routed (delivered, buffered or refused).
    routed: BTreeSet<u64>,
    /// Our streams and the session of each.
    ours: BTreeMap<u64, u64>,
    /// Peer streams handed to a session: its session and the bytes the application read.
    delivered: BTreeMap<u64, (u64, usize)>,
    refused: Vec<(u64, Code)>,
    rejected: Vec<(u64, Code)>,
    connection_done: bool,
}

impl State {
    fn new(side: Side, config: Config) -> Self {
        Self {
            side,
            table: SessionTable::new(config.max_buffered_streams),
            config,
            sessions: BTreeMap::new(),
            requests: BTreeSet::new(),
            pending: Vec::new(),
            routed: BTreeSet::new(),
            ours: BTreeMap::new(),
            delivered: BTreeMap::new(),
            refused: Vec::new(),
            rejected: Vec::new(),
            connection_done: false,
        }
    }
}

/// One side of a [`Pair`]: its HTTP/3 peer and its WebTransport state, to act as the
/// application does and to look at what happened.
#[derive(Debug)]
pub struct Endpoint<'a> {
    h3: &'a mut Peer,
    wt: &'a mut State,
    now: Duration,
}

/// A client and a server WebTransport endpoint joined in memory. See the [module docs](self).
#[derive(Debug)]
pub struct Pair {
    /// The HTTP/3 pair underneath: for raw injection and the tamper hook. Deliver with
    /// [`Pair::step`] and [`Pair::drive`], not its own, so the cores see each transfer.
    pub h3: quay_h3::pair::Pair,
    client: State,
    server: State,
}

impl Pair {
    /// A client with `client` and a server with `server` (their HTTP/3 layer as
    /// [`Config::h3_config`] makes it), nothing delivered yet.
    pub fn new(client: Config, server: Config) -> Self {
        let (client_h3, server_h3) = (client.h3_config(), server.h3_config());
        Self::with_h3(client, client_h3, server, server_h3)
    }

    /// As [`Pair::new`], with the HTTP/3 configurations given (to announce other SETTINGS).
    pub fn with_h3(
        client: Config,
        client_h3: quay_h3::Config,
        server: Config,
        server_h3: quay_h3::Config,
    ) -> Self {
        Self {
            h3: quay_h3::pair::Pair::new(client_h3, server_h3),
            client: State::new(Side::Client, client),
            server: State::new(Side::Server, server),
        }
    }

    /// The client.
    pub fn client(&mut self) -> Endpoint<'_> {
        let now = self.h3.elapsed();
        Endpoint {
            h3: &mut self.h3.client,
            wt: &mut self.client,
            now,
        }
    }

    /// The server.
    pub fn server(&mut self) -> Endpoint<'_> {
        let now = self.h3.elapsed();
        Endpoint {
            h3: &mut self.h3.server,
            wt: &mut self.server,
            now,
        }
    }

    /// One side.
    pub fn side(&mut self, side: Side) -> Endpoint<'_> {
        match side {
            Side::Client => self.client(),
            Side::Server => self.server(),
        }
    }

    /// Delivers one transfer and hands what it changed to both sides' cores; `false` when
    /// neither side had one.
    pub fn step(&mut self) -> bool {
        let moved = self.h3.step();
        if moved {
            self.client().poll();
            self.server().poll();
        }
        moved
    }

    /// Steps until neither side has a transfer or `max_steps` were delivered; returns whether
    /// it went quiet.
    pub fn drive_bounded(&mut self, max_steps: usize) -> bool {
        for _ in 0..max_steps {
            if !self.step() {
                return true;
            }
        }
        !self.step()
    }

    /// Steps until neither side has a transfer. Panics after 100,000 steps.
    pub fn drive(&mut self) {
        assert!(self.drive_bounded(100_000), "the pair never went quiet");
    }

    /// Moves the virtual clock by `by`, fires the timers that are due (the HTTP/3 pair's, and
    /// the wait for the answer to a close), and drives.
    pub fn advance(&mut self, by: Duration) {
        self.drive();
        self.h3.advance(by);
        self.client().poll();
        self.server().poll();
        self.drive();
    }

    /// Opens a session from the client to `path`, has the server accept it, and drives;
    /// returns the session ID.
    pub fn establish(&mut self, path: &str) -> u64 {
        self.drive();
        let id = self
            .client()
            .open_session(path)
            .expect("the client may open a session");
        self.drive();
        assert!(
            self.server().requests().contains(&id),
            "the server has the request"
        );
        self.server().accept(id);
        self.drive();
        assert!(
            self.client().is_established(id),
            "the client has the session"
        );
        id
    }
}

/// The request a client sends to open a session: Extended CONNECT with `:protocol`
/// `webtransport-h3` (draft-16 §3.2).
pub fn connect_request(path: &str) -> Request<()> {
    connect_request_with(path, Protocol::WEBTRANSPORT_H3)
}

/// A CONNECT request to `path` with `protocol` as its `:protocol`.
pub fn connect_request_with(path: &str, protocol: Protocol) -> Request<()> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://example.com{path}"))
        .body(())
        .expect("a valid request");
    request.extensions_mut().insert(protocol);
    request
}

/// The prefix of a WebTransport unidirectional stream of `session`: type 0x54, session ID
/// (draft-16 §4.2).
pub fn uni_prefix(session: u64) -> Vec<u8> {
    let mut bytes = varint_bytes(0x54);
    bytes.extend(varint_bytes(session));
    bytes
}

/// The prefix of a WebTransport bidirectional stream of `session`: signal 0x41, session ID
/// (draft-16 §4.3).
pub fn bidi_prefix(session: u64) -> Vec<u8> {
    let mut bytes = varint_bytes(0x41);
    bytes.extend(varint_bytes(session));
    bytes
}

/// `bytes` as one DATA frame, as capsules travel on the CONNECT stream.
pub fn data_frame(bytes: &[u8]) -> Vec<u8> {
    frame_bytes(&Frame::Data(Bytes::copy_from_slice(bytes)))
}

fn direction_of(stream: u64) -> Direction {
    if stream & 2 == 0 {
        Direction::Bidi
    } else {
        Direction::Uni
    }
}

impl<'a> Endpoint<'a> {
    // ---- The application's calls.

    /// Client: opens a session to `path`, once the server's SETTINGS are in (draft-16 §4.6)
    /// and within the number of sessions the client may have (draft-16 §5.2); `None`
    /// otherwise.
    pub fn open_session(&mut self, path: &str) -> Option<u64> {
        let settings = self.h3.state().peer_settings()?;
        let announced = announced_session_count(settings)
            .map(|count| usize::try_from(count).unwrap_or(usize::MAX));
        let limit = client_session_limit(
            announced,
            self.flow().is_some(),
            self.wt.config.max_sessions as usize,
        );
        if self.wt.table.sessions() >= limit {
            return None;
        }
        let id = self.open_session_raw(path);
        self.wt.table.handle_request(id, limit);
        Some(id)
    }

    /// Client: sends a CONNECT for a session to `path` whatever the limit (a misbehaving
    /// client); returns the session ID.
    pub fn open_session_raw(&mut self, path: &str) -> u64 {
        let id = self.h3.send_request(&connect_request(path), b"", false);
        self.wt.requests.insert(id);
        self.wt.pending.push(Pending { id, flow: None });
        id
    }

    /// Server: the CONNECT requests waiting to be accepted or refused.
    pub fn requests(&self) -> Vec<u64> {
        match self.wt.side {
            Side::Server => self.wt.pending.iter().map(|pending| pending.id).collect(),
            Side::Client => Vec::new(),
        }
    }

    /// Server: accepts the session `id` with 200.
    pub fn accept(&mut self, id: u64) {
        let Some(i) = self.wt.pending.iter().position(|pending| pending.id == id) else {
            return;
        };
        let pending = self.wt.pending.remove(i);
        let response = Response::new(());
        self.h3.send_response(id, &response, b"", false);
        self.establish(id, pending.flow);
        self.flush();
    }

    /// Server: refuses the session `id` with `status`.
    pub fn reject(&mut self, id: u64, status: StatusCode) {
        let Some(i) = self.wt.pending.iter().position(|pending| pending.id == id) else {
            return;
        };
        self.wt.pending.remove(i);
        let mut response = Response::new(());
        *response.status_mut() = status;
        self.h3.send_response(id, &response, b"", true);
        self.wt.table.handle_close(id);
        self.flush();
    }

    /// Closes session `id` with `code` and `reason`: WT_CLOSE_SESSION, then FIN (draft-16 §6).
    pub fn close(&mut self, id: u64, code: u32, reason: &str) {
        if let Some(session) = self.wt.sessions.get_mut(&id) {
            session.core.handle_close(code, reason);
        }
        self.flush();
    }

    /// Asks the peer to wind session `id` down: WT_DRAIN_SESSION (draft-16 §4.7).
    pub fn drain(&mut self, id: u64) {
        if let Some(session) = self.wt.sessions.get_mut(&id) {
            session.core.handle_drain();
        }
        self.flush();
    }

    /// Opens a unidirectional stream of session `id` if the peer's stream credit allows
    /// (draft-16 §5.3); returns its ID.
    pub fn open_uni(&mut self, id: u64) -> Option<u64> {
        self.open(id, Direction::Uni)
    }

    /// Opens a bidirectional stream of session `id` if the peer's stream credit allows
    /// (draft-16 §5.3); returns its ID.
    pub fn open_bi(&mut self, id: u64) -> Option<u64> {
        self.open(id, Direction::Bidi)
    }

    fn open(&mut self, id: u64, direction: Direction) -> Option<u64> {
        let session = self.wt.sessions.get_mut(&id)?;
        let ready = matches!(
            session.core.poll_open(direction),
            crate::core::session::Credit::Ready(())
        );
        let stream = ready.then(|| match direction {
            Direction::Uni => self.h3.open_uni_raw(&uni_prefix(id), false),
            Direction::Bidi => self.h3.open_bidi_raw(&bidi_prefix(id), false),
        });
        if let Some(stream) = stream {
            self.wt.ours.insert(stream, id);
        }
        self.flush();
        stream
    }

    /// Writes as much of `bytes` on our stream `stream` as the peer's data credit allows
    /// (draft-16 §5.4), with FIN if all of it went and `fin`; returns how many bytes went.
    pub fn write(&mut self, stream: u64, bytes: &[u8], fin: bool) -> usize {
        let Some(session) = self
            .wt
            .ours
            .get(&stream)
            .and_then(|id| self.wt.sessions.get_mut(id))
        else {
            return 0;
        };
        let n = match session.core.poll_reserve(bytes.len()) {
            crate::core::session::Credit::Ready(n) => n,
            _ => 0,
        };
        if n > 0 || fin {
            self.h3
                .send_raw(stream, &bytes[..n], fin && n == bytes.len());
        }
        self.flush();
        n
    }

    /// The next of the peer's unidirectional streams of session `id`; accepting gives the
    /// peer stream credit (draft-16 §5.3).
    pub fn accept_uni(&mut self, id: u64) -> Option<u64> {
        self.accept_stream(id, Direction::Uni)
    }

    /// The next of the peer's bidirectional streams of session `id`.
    pub fn accept_bi(&mut self, id: u64) -> Option<u64> {
        self.accept_stream(id, Direction::Bidi)
    }

    fn accept_stream(&mut self, id: u64, direction: Direction) -> Option<u64> {
        let stream = self.wt.sessions.get_mut(&id)?.core.poll_accept(direction);
        if let Some(stream) = stream {
            self.wt.delivered.insert(stream, (id, 0));
        }
        self.flush();
        stream
    }

    /// Reads what arrived on the accepted peer stream `stream` since the last read. Reading
    /// past the data credit we gave ends the session with WT_FLOW_CONTROL_ERROR (draft-16
    /// §5.4); `None` then, or for a stream not accepted.
    pub fn read(&mut self, stream: u64) -> Option<Vec<u8>> {
        let (id, read) = *self.wt.delivered.get(&stream)?;
        let bytes = self.h3.extension_bytes(stream).unwrap_or_default();
        let new = bytes.get(read..).unwrap_or_default().to_vec();
        self.wt.delivered.insert(stream, (id, read + new.len()));
        let session = self.wt.sessions.get_mut(&id)?;
        let within = session.core.handle_read(new.len()).is_ok();
        self.flush();
        within.then_some(new)
    }

    // ---- What happened.

    /// Whether session `id` was established (and may have ended since).
    pub fn is_established(&self, id: u64) -> bool {
        self.wt.sessions.contains_key(&id)
    }

    /// Why session `id` ended, if it has.
    pub fn end(&self, id: u64) -> Option<End<Code>> {
        self.wt.sessions.get(&id)?.core.end().cloned()
    }

    /// Whether the peer asked to drain session `id` (WT_DRAIN_SESSION).
    pub fn drained(&self, id: u64) -> bool {
        self.wt
            .sessions
            .get(&id)
            .is_some_and(|session| session.drained)
    }

    /// Sessions requested or established, as the table counts them.
    pub fn sessions(&self) -> usize {
        self.wt.table.sessions()
    }

    /// The peer's streams this side refused, with the code (RESET_STREAM and STOP_SENDING on
    /// a bidirectional stream, STOP_SENDING on a unidirectional one), in order.
    pub fn refused(&self) -> &[(u64, Code)] {
        &self.wt.refused
    }

    /// Server: the CONNECT requests refused before the application saw them, with the code
    /// (reset and stopped), in order.
    pub fn rejected(&self) -> &[(u64, Code)] {
        &self.wt.rejected
    }

    /// The HTTP/3 peer underneath, to inject what a misbehaving peer sends.
    pub fn h3(self) -> &'a mut Peer {
        self.h3
    }

    // ---- The glue's part.

    /// The flow-control limits of a session: ours and the peer's, when both announced some
    /// (draft-16 §5.1).
    fn flow(&self) -> Option<(FlowControlLimits, FlowControlLimits)> {
        let peer = self
            .h3
            .state()
            .peer_settings()
            .and_then(FlowControlLimits::from_settings);
        self.wt.config.flow_control.zip(peer)
    }

    /// Session `id` is established: a core, and the streams that waited for it.
    fn establish(&mut self, id: u64, flow: Option<(FlowControlLimits, FlowControlLimits)>) {
        let flow = flow.map(|(ours, peers)| FlowControl::new(ours, peers));
        let mut reader = CapsuleReader::new(quay_h3::Config::default().max_capsule_size);
        reader.accept_all(&CAPSULE_TYPES);
        let mut session = Session {
            core: SessionCore::new(flow),
            reader,
            fed: 0,
            reading: Reading::Capsules,
            linger_until: None,
            drained: false,
        };
        for stream in self.wt.table.handle_established(id, id) {
            if let Err(stream) = session
                .core
                .handle_peer_stream(direction_of(stream), stream)
            {
                self.refuse(stream, WT_SESSION_GONE);
            }
        }
        self.wt.sessions.insert(id, session);
    }

    /// Refuses a peer's stream with `code`.
    fn refuse(&mut self, stream: u64, code: Code) {
        if direction_of(stream) == Direction::Bidi {
            self.h3.reset(stream, code);
        }
        self.h3.stop_sending(stream, code);
        self.wt.refused.push((stream, code));
    }

    /// Hands what the last transfer changed to the cores, then carries out what they ask.
    fn poll(&mut self) {
        if self.wt.connection_done {
            return;
        }
        match self.wt.side {
            Side::Server => self.read_requests(),
            Side::Client => self.read_responses(),
        }
        self.route_streams();
        let ids: Vec<u64> = self.wt.sessions.keys().copied().collect();
        for id in ids {
            self.read_connect(id);
        }
        let closed = self.h3.closed_with().or(self.h3.peer_closed_with());
        if let Some(code) = closed {
            // The connection's end comes after everything read before it (draft-16 §6).
            self.wt.connection_done = true;
            for session in self.wt.sessions.values_mut() {
                session.core.handle_connection_lost(code);
                session.core.handle_transmit_failed();
                session.reading = Reading::Done;
            }
            self.wt.table.handle_connection_closed();
        }
        self.flush();
    }

    /// Server: CONNECT requests whose head arrived.
    fn read_requests(&mut self) {
        // draft-16 §3.1: no WebTransport request is processed before the client's SETTINGS.
        let Some(settings) = self.h3.state().peer_settings() else {
            return;
        };
        let draft = client_draft(settings);
        let client_counted = announced_session_count(settings).is_some();
        let flow = self.flow();
        let new: Vec<u64> = self
            .h3
            .messages()
            .filter(|(id, message)| {
                !self.wt.requests.contains(id)
                    && message.request.as_ref().is_some_and(|request| {
                        request.method() == Method::CONNECT
                            && request
                                .extensions()
                                .get::<Protocol>()
                                .is_some_and(connect::is_webtransport)
                    })
            })
            .map(|(id, _)| id)
            .collect();
        for id in new {
            self.wt.requests.insert(id);
            // draft-16 §3.1: a client without what WebTransport requires has every session
            // treated as malformed.
            if draft.is_err() {
                self.reject_stream(id, Code::H3_MESSAGE_ERROR);
                continue;
            }
            // draft-16 §5.2: past the session limit, H3_REQUEST_REJECTED.
            let limit = server_session_limit(
                self.wt.config.max_sessions as usize,
                client_counted,
                flow.is_some(),
            );
            if !self.wt.table.handle_request(id, limit) {
                self.reject_stream(id, Code::H3_REQUEST_REJECTED);
                continue;
            }
            self.wt.pending.push(Pending { id, flow });
        }
    }

    fn reject_stream(&mut self, id: u64, code: Code) {
        self.h3.reset(id, code);
        self.h3.stop_sending(id, code);
        self.wt.rejected.push((id, code));
    }

    /// Client: responses to our CONNECT requests.
    fn read_responses(&mut self) {
        let mut i = 0;
        // Bounded by the pending list, which only shrinks here.
        while i < self.wt.pending.len() {
            let id = self.wt.pending[i].id;
            let Some(message) = self.h3.message(id) else {
                i += 1;
                continue;
            };
            let status = message.response.as_ref().map(Response::status);
            let refused = message.reset_by_peer.is_some() || message.stopped_by_peer.is_some();
            match status {
                Some(status) if status.is_success() => {
                    self.wt.pending.remove(i);
                    let flow = self.flow();
                    self.establish(id, flow);
                }
                Some(_) => {
                    self.wt.pending.remove(i);
                    self.wt.table.handle_close(id);
                }
                None if refused => {
                    self.wt.pending.remove(i);
                    self.wt.table.handle_close(id);
                }
                None => i += 1,
            }
        }
    }

    /// The peer's WebTransport streams not routed yet (draft-16 §4).
    fn route_streams(&mut self) {
        let new: Vec<(u64, u64)> = self
            .h3
            .extension_streams()
            .filter(|(stream, _, _)| !self.wt.routed.contains(stream))
            .map(|(stream, session, _)| (stream, session))
            .collect();
        for (stream, session) in new {
            self.wt.routed.insert(stream);
            match self.wt.table.handle_stream(session, stream) {
                Route::Deliver(id, stream) => {
                    let direction = direction_of(stream);
                    let Some(session) = self.wt.sessions.get_mut(&id) else {
                        continue;
                    };
                    if let Err(stream) = session.core.handle_peer_stream(direction, stream) {
                        self.refuse(stream, WT_SESSION_GONE);
                    }
                }
                Route::Buffered => {}
                Route::Refuse(stream, code) => self.refuse(stream, code),
                Route::CloseConnection(code) => {
                    self.h3.close_connection(code);
                    return;
                }
            }
        }
    }

    /// What arrived on the CONNECT stream of session `id`, handed to its core in order:
    /// capsules, then the stream's end.
    fn read_connect(&mut self, id: u64) {
        let Some(message) = self.h3.message(id) else {
            return;
        };
        let Some(session) = self.wt.sessions.get_mut(&id) else {
            return;
        };
        if session.reading == Reading::Done {
            return;
        }
        let new = message.body.get(session.fed..).unwrap_or_default();
        session.fed = message.body.len();
        let (ended, reset) = (message.ended, message.reset_by_peer);
        let broken = self.h3.actions().iter().any(|action| {
            matches!(action, quay_h3::pair::StreamAction::Reset(on, _)
                | quay_h3::pair::StreamAction::Stopped(on, _) if *on == id)
        });
        let mut stop = None;
        if session.reading == Reading::Capsules && !new.is_empty() {
            session.reader.handle_data(Bytes::copy_from_slice(new));
            // Bounded by the bytes just fed: each capsule consumes some.
            loop {
                match session.reader.poll_capsule() {
                    Ok(Some(capsule)) => match session.core.handle_capsule(&capsule) {
                        ReadOn::Capsules => continue,
                        ReadOn::FinOnly => {
                            session.reading = Reading::AfterClose;
                            session.linger_until = Some(self.now + CLOSE_LINGER);
                            // draft-16 §6: bytes after the close capsule, in the same chunk.
                            if !session.reader.is_idle() {
                                stop = Some(session.core.handle_data_after_close());
                            }
                            break;
                        }
                        ReadOn::Stop(code) => {
                            stop = Some(code);
                            break;
                        }
                    },
                    Ok(None) => break,
                    Err(error) => {
                        // RFC 9297 §3.3: a malformed capsule.
                        let code = Code::from(error);
                        session.core.handle_connect_malformed(Some(code));
                        stop = Some(code);
                        break;
                    }
                }
            }
        } else if session.reading == Reading::AfterClose && !new.is_empty() {
            // draft-16 §6: only FIN may follow WT_CLOSE_SESSION.
            stop = Some(session.core.handle_data_after_close());
        }
        if stop.is_none() && session.reading != Reading::Done {
            if broken {
                session.core.handle_connect_malformed(None);
                session.reading = Reading::Done;
            } else if let Some(code) = reset {
                session.core.handle_connect_reset(code);
                session.reading = Reading::Done;
            } else if ended {
                match (session.reading, session.reader.handle_end()) {
                    // RFC 9297 §3.3: a capsule cut short by FIN.
                    (Reading::Capsules, Err(error)) => {
                        let code = Code::from(error);
                        session.core.handle_connect_malformed(Some(code));
                        stop = Some(code);
                    }
                    _ => session.core.handle_connect_fin(),
                }
                session.reading = Reading::Done;
            }
        }
        if let Some(code) = stop {
            session.reading = Reading::Done;
            self.h3.stop_sending(id, code);
        }
        if session.reading == Reading::Done {
            self.wt.table.handle_close(id);
        } else if session.linger_until.is_none() && session.core.end().is_some() {
            session.linger_until = Some(self.now + CLOSE_LINGER);
        }
        if session.reading != Reading::Done
            && session.linger_until.is_some_and(|until| self.now >= until)
        {
            // draft-16 §6: the peer did not answer in time.
            let code = session.core.handle_linger_over();
            session.reading = Reading::Done;
            self.h3.stop_sending(id, code);
            self.wt.table.handle_close(id);
        }
    }

    /// Carries out what the cores and the table ask for: wake-ups, refusals, writes on the
    /// CONNECT streams.
    fn flush(&mut self) {
        let mut refused = Vec::new();
        let mut writes = Vec::new();
        let connection_done = self.wt.connection_done;
        for (id, session) in &mut self.wt.sessions {
            while let Some(event) = session.core.poll_event() {
                if event == Event::Drained {
                    session.drained = true;
                }
            }
            refused.extend(std::iter::from_fn(|| session.core.poll_refused()));
            if connection_done {
                continue;
            }
            if session.linger_until.is_none() && session.core.end().is_some() {
                session.linger_until = Some(self.now + CLOSE_LINGER);
            }
            while let Some(transmit) = session.core.poll_transmit() {
                writes.push((*id, transmit));
            }
        }
        refused.extend(std::iter::from_fn(|| self.wt.table.poll_refused()));
        for stream in refused {
            if !connection_done {
                self.refuse(stream, WT_SESSION_GONE);
            }
        }
        for (id, transmit) in writes {
            match transmit {
                Transmit::Capsules(capsules) => {
                    let mut payload = Vec::new();
                    for capsule in capsules {
                        capsule.to_capsule().encode(&mut payload);
                    }
                    self.h3.send_raw(id, &data_frame(&payload), false);
                }
                Transmit::Finish => self.h3.send_raw(id, &[], true),
                Transmit::Reset(code) => self.h3.reset(id, code),
            }
        }
    }
}
