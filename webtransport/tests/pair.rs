//! WebTransport's error codes and session rules on the deterministic [`Pair`]: a client and a
//! server session table and session cores over two HTTP/3 cores joined in memory, with raw
//! bytes injected or transfers tampered where a real peer would break a rule. No socket, no
//! task, no sleep: the virtual clock stands in for the wait after a close.
//!
//! Each test names the rule (draft-ietf-webtrans-http3-16, RFC 9297) and checks the exact code
//! on the wire or the end reason the core decided. The loopback tests prove that the glue puts
//! the same codes on quinn.

use bytes::Bytes;
use quay_h3::Code;
use quay_h3::pair::{Direction, Transfer};
use quay_h3::proto::VarInt;
use quay_h3::proto::capsule::{Capsule, CapsuleType};
use quay_h3::proto::headers::Protocol;
use quay_h3::proto::settings::SettingId;
use quay_webtransport::Config;
use quay_webtransport::Violation;
use quay_webtransport::pair::{
    CLOSE_LINGER, End, Pair, bidi_prefix, connect_request_with, data_frame, uni_prefix,
};
use quay_webtransport::proto::capsule::{Direction as Kind, WtCapsule};
use quay_webtransport::proto::error::{
    WT_BUFFERED_STREAM_REJECTED, WT_FLOW_CONTROL_ERROR, WT_SESSION_GONE,
};
use quay_webtransport::proto::settings::FlowControlLimits;

fn config() -> Config {
    Config::default().with_h3(quay_h3::Config::default().with_grease(false))
}

fn limits(max_data: u64, bidi: u64, uni: u64) -> FlowControlLimits {
    let mut limits = FlowControlLimits::default();
    limits.max_data = max_data;
    limits.max_streams_bidi = bidi;
    limits.max_streams_uni = uni;
    limits
}

/// A pair with one session to `/s` established.
fn session() -> (Pair, u64) {
    let mut pair = Pair::new(config(), config());
    let id = pair.establish("/s");
    (pair, id)
}

/// A capsule's bytes, as one DATA frame on the CONNECT stream.
fn capsule_frame(capsule: &Capsule) -> Vec<u8> {
    let mut bytes = Vec::new();
    capsule.encode(&mut bytes);
    data_frame(&bytes)
}

fn close_capsule(code: u32, reason: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    WtCapsule::close(code, reason)
        .to_capsule()
        .encode(&mut bytes);
    bytes
}

fn peer_closed(code: u32, reason: &str) -> Option<End<Code>> {
    Some(End::PeerClosed {
        code,
        reason: reason.into(),
    })
}

/// The code the server reset the CONNECT stream `id` with, as the client saw it.
fn client_saw_reset(pair: &mut Pair, id: u64) -> Option<Code> {
    pair.client().h3().message(id)?.reset_by_peer
}

// draft-16 §6: WT_CLOSE_SESSION carries the code and reason to the peer, which answers with
// FIN alone; the closer's session ended locally.
#[test]
fn the_client_closes_with_code_and_reason() {
    let (mut pair, id) = session();
    pair.client().close(id, 7, "bye");
    pair.drive();
    assert_eq!(pair.server().end(id), peer_closed(7, "bye"));
    assert_eq!(pair.client().end(id), Some(End::LocallyClosed));
    let answer = pair.client().h3().message(id).unwrap();
    assert!(answer.ended, "the server answered with FIN");
    assert_eq!(answer.reset_by_peer, None);
    assert!(answer.body.is_empty(), "FIN alone, no capsule");
    // Both sides retired the session.
    assert_eq!(pair.server().sessions(), 0);
    assert_eq!(pair.client().sessions(), 0);
}

// draft-16 §6: the same from the server.
#[test]
fn the_server_closes_with_code_and_reason() {
    let (mut pair, id) = session();
    pair.server().close(id, 0x1234_5678, "server done");
    pair.drive();
    assert_eq!(
        pair.client().end(id),
        peer_closed(0x1234_5678, "server done")
    );
    assert_eq!(pair.server().end(id), Some(End::LocallyClosed));
    let answer = pair.server().h3().message(id).unwrap();
    assert!(answer.ended, "the client answered with FIN");
    assert_eq!(answer.reset_by_peer, None);
}

// draft-16 §6: a clean end of the CONNECT stream without a capsule is a close with code 0 and
// no reason.
#[test]
fn a_bare_fin_is_a_close_with_code_zero() {
    let (mut pair, id) = session();
    pair.client().h3().send_raw(id, &[], true);
    pair.drive();
    assert_eq!(pair.server().end(id), peer_closed(0, ""));
    assert!(pair.client().h3().message(id).unwrap().ended);
}

// draft-16 §6: the end is decided in the order the bytes arrived: a close capsule followed by
// the connection's close (as Firefox sends them) is the peer's close.
#[test]
fn a_close_then_the_connection_close_is_the_peer_close() {
    let (mut pair, id) = session();
    pair.client().close(id, 42, "leaving");
    pair.client().h3().close_connection(Code::H3_NO_ERROR);
    pair.drive();
    assert_eq!(pair.server().end(id), peer_closed(42, "leaving"));
    assert_eq!(
        pair.server().h3().peer_closed_with(),
        Some(Code::H3_NO_ERROR)
    );
}

// draft-16 §6: the connection's close read before any close capsule is the end (here the
// capsule is lost on its way, so the close comes first).
#[test]
fn the_connection_close_first_is_the_end() {
    let (mut pair, id) = session();
    pair.h3.tamper(move |direction, transfer| {
        !(direction == Direction::ToServer
            && matches!(transfer, Transfer::Stream { id: on, .. } if *on == id))
    });
    pair.client().close(id, 42, "leaving");
    pair.client().h3().close_connection(Code::H3_NO_ERROR);
    pair.drive();
    assert_eq!(
        pair.server().end(id),
        Some(End::ConnectionLost(Code::H3_NO_ERROR))
    );
}

// draft-16 §6: anything but FIN after WT_CLOSE_SESSION resets the CONNECT stream with
// H3_MESSAGE_ERROR; the session still ended as the peer's close. Bytes in the same DATA
// frame as the capsule, and bytes in a later transfer.
#[test]
fn data_after_the_close_capsule_is_a_message_error() {
    for split in [false, true] {
        let (mut pair, id) = session();
        let mut bytes = close_capsule(9, "x");
        if split {
            pair.client().h3().send_raw(id, &data_frame(&bytes), false);
            pair.drive();
            bytes.clear();
        }
        bytes.extend_from_slice(b"\x00\x01z");
        pair.client().h3().send_raw(id, &data_frame(&bytes), false);
        pair.drive();
        assert_eq!(pair.server().end(id), peer_closed(9, "x"), "split {split}");
        assert_eq!(
            client_saw_reset(&mut pair, id),
            Some(Code::H3_MESSAGE_ERROR),
            "split {split}"
        );
    }
}

/// The client writes `bytes` (with `fin`) on the CONNECT stream of a new session; returns how
/// the server's session ended and the code the client saw the CONNECT stream reset with.
fn server_after_connect_bytes(bytes: &[u8], fin: bool) -> (Option<End<Code>>, Option<Code>) {
    let (mut pair, id) = session();
    pair.client().h3().send_raw(id, bytes, fin);
    pair.drive();
    (pair.server().end(id), client_saw_reset(&mut pair, id))
}

// RFC 9297 §3.3: a capsule cut short by the stream's FIN is a malformed message:
// H3_MESSAGE_ERROR.
#[test]
fn a_capsule_cut_by_fin_is_a_message_error() {
    let close = close_capsule(1, "cut short");
    let cut = data_frame(&close[..close.len() - 2]);
    assert_eq!(
        server_after_connect_bytes(&cut, true),
        (
            Some(End::Protocol(Violation::MalformedConnectCapsule)),
            Some(Code::H3_MESSAGE_ERROR)
        )
    );
}

// draft-16 §6: a WT_CLOSE_SESSION too short for its code, or with a reason over 1024 bytes,
// is malformed: H3_MESSAGE_ERROR.
#[test]
fn a_malformed_close_capsule_is_a_message_error() {
    for payload in [vec![0, 0], vec![b'x'; 4 + 1025]] {
        let capsule = Capsule {
            ty: CapsuleType::WT_CLOSE_SESSION,
            payload: Bytes::from(payload),
        };
        assert_eq!(
            server_after_connect_bytes(&capsule_frame(&capsule), false),
            (
                Some(End::Protocol(Violation::MalformedCapsule)),
                Some(Code::H3_MESSAGE_ERROR)
            )
        );
    }
}

// RFC 9297 §3.2: a capsule type nobody knows is skipped; the session goes on.
#[test]
fn an_unknown_capsule_is_skipped() {
    let (mut pair, id) = session();
    let capsule = Capsule {
        ty: CapsuleType::from_varint(VarInt::from_u32(0x1f * 7 + 0x21)),
        payload: Bytes::from_static(b"grease"),
    };
    pair.client()
        .h3()
        .send_raw(id, &capsule_frame(&capsule), false);
    pair.drive();
    assert_eq!(pair.server().end(id), None);
    pair.client().close(id, 3, "then");
    pair.drive();
    assert_eq!(pair.server().end(id), peer_closed(3, "then"));
}

// draft-16 §4.6: streams that arrive before their session's CONNECT wait for it, and go to
// the session, in order, with their bytes, once it is established.
#[test]
fn early_streams_wait_for_their_session() {
    let mut pair = Pair::new(config(), config());
    pair.drive();
    // Session 0 is the client's first request stream, not sent yet.
    let mut early = Vec::new();
    for body in [&b"first"[..], b"second"] {
        let mut bytes = uni_prefix(0);
        bytes.extend_from_slice(body);
        early.push(pair.client().h3().open_uni_raw(&bytes, true));
    }
    pair.drive();
    assert_eq!(pair.server().refused(), []);
    let id = pair.establish("/s");
    assert_eq!(id, 0);
    let got: Vec<u64> = std::iter::from_fn(|| pair.server().accept_uni(id)).collect();
    assert_eq!(got, early);
    assert_eq!(pair.server().read(early[0]).unwrap(), b"first");
    assert_eq!(pair.server().read(early[1]).unwrap(), b"second");
    assert_eq!(pair.server().refused(), []);
}

// draft-16 §4.3, §4.6: a server may open a stream of a session once it has the CONNECT
// request; one that reaches the client before the response waits for it.
#[test]
fn a_server_stream_before_the_response_waits_for_it() {
    let mut pair = Pair::new(config(), config());
    pair.drive();
    let id = pair.client().open_session("/s").unwrap();
    pair.drive();
    let mut bytes = bidi_prefix(id);
    bytes.extend_from_slice(b"from the server");
    let stream = pair.server().h3().open_bidi_raw(&bytes, true);
    // The stream goes before the response.
    pair.step();
    pair.step();
    assert!(!pair.client().is_established(id));
    assert!(pair.client().h3().extension_bytes(stream).is_some());
    pair.server().accept(id);
    pair.drive();
    assert_eq!(pair.client().accept_bi(id), Some(stream));
    assert_eq!(pair.client().read(stream).unwrap(), b"from the server");
    assert_eq!(pair.client().refused(), []);
}

// draft-16 §4.6: past the bound on buffered streams, a stream is refused with
// WT_BUFFERED_STREAM_REJECTED; those within it still reach the session.
#[test]
fn too_many_early_streams_are_rejected() {
    let server = config().with_max_buffered_streams(2);
    let mut pair = Pair::new(config(), server);
    pair.drive();
    let streams: Vec<u64> = (0..3)
        .map(|_| pair.client().h3().open_uni_raw(&uni_prefix(0), false))
        .collect();
    pair.drive();
    assert_eq!(
        pair.server().refused(),
        [(streams[2], WT_BUFFERED_STREAM_REJECTED)]
    );
    let id = pair.establish("/s");
    assert_eq!(pair.server().accept_uni(id), Some(streams[0]));
    assert_eq!(pair.server().accept_uni(id), Some(streams[1]));
    assert_eq!(pair.server().accept_uni(id), None);
}

// draft-16 §6: the streams of a session that ended are refused with WT_SESSION_GONE: those
// still waiting to be accepted when it ends, and those that come later.
#[test]
fn streams_of_an_ended_session_are_gone() {
    let (mut pair, id) = session();
    let waiting = pair.client().open_uni(id).unwrap();
    pair.client().write(waiting, b"unread", false);
    pair.drive();
    pair.client().close(id, 0, "");
    pair.drive();
    let late = pair.client().h3().open_uni_raw(&uni_prefix(id), false);
    pair.drive();
    assert_eq!(
        pair.server().refused(),
        [(waiting, WT_SESSION_GONE), (late, WT_SESSION_GONE)]
    );
}

// draft-16 §6: streams waiting for a session the server refuses get WT_SESSION_GONE, and so
// do later ones.
#[test]
fn streams_of_a_refused_session_are_gone() {
    let mut pair = Pair::new(config(), config());
    pair.drive();
    let early = pair.client().h3().open_uni_raw(&uni_prefix(0), false);
    let id = pair.client().open_session("/nowhere").unwrap();
    pair.drive();
    pair.server().reject(id, http::StatusCode::NOT_FOUND);
    pair.drive();
    let late = pair.client().h3().open_uni_raw(&uni_prefix(id), false);
    pair.drive();
    assert_eq!(
        pair.server().refused(),
        [(early, WT_SESSION_GONE), (late, WT_SESSION_GONE)]
    );
    let response = pair.client().h3().message(id).unwrap().response.clone();
    assert_eq!(response.unwrap().status(), 404);
    assert!(!pair.client().is_established(id));
}

// draft-16 §4: a session ID that is not a client-initiated bidirectional stream ID is a
// connection error of type H3_ID_ERROR.
#[test]
fn a_session_id_that_is_no_client_bidi_stream_closes_the_connection() {
    for session in [1, 2, 3, 6] {
        let mut pair = Pair::new(config(), config());
        pair.drive();
        pair.client().h3().open_uni_raw(&uni_prefix(session), false);
        pair.drive();
        assert_eq!(
            pair.server().h3().closed_with(),
            Some(Code::H3_ID_ERROR),
            "session {session}"
        );
        assert_eq!(
            pair.client().h3().peer_closed_with(),
            Some(Code::H3_ID_ERROR)
        );
    }
}

// draft-16 §5.1, §5.2: a server takes at most the sessions it allows; one more CONNECT is
// reset with H3_REQUEST_REJECTED, and a client that respects the server's count does not send
// it.
#[test]
fn sessions_past_the_limit_are_refused() {
    let server = config().with_max_sessions(1);
    let mut pair = Pair::new(config(), server);
    let first = pair.establish("/a");
    assert_eq!(
        pair.client().open_session("/b"),
        None,
        "the client keeps the count"
    );
    let second = pair.client().open_session_raw("/b");
    pair.drive();
    assert_eq!(
        pair.server().rejected(),
        [(second, Code::H3_REQUEST_REJECTED)]
    );
    assert_eq!(
        client_saw_reset(&mut pair, second),
        Some(Code::H3_REQUEST_REJECTED)
    );
    assert_eq!(pair.server().end(first), None);
    // Once the first ends, its place is free.
    pair.client().close(first, 0, "");
    pair.drive();
    let third = pair.client().open_session("/c").unwrap();
    pair.drive();
    assert_eq!(pair.server().requests(), [third]);
}

// draft-16 §3.1, §4.6: a client sends no WebTransport CONNECT before the server's SETTINGS.
#[test]
fn a_client_waits_for_the_server_settings() {
    let mut pair = Pair::new(config(), config());
    assert_eq!(pair.client().open_session("/s"), None);
    pair.drive();
    assert_eq!(pair.client().open_session("/s"), Some(0));
}

// draft-16 §3.2: the session is requested with `webtransport-h3`; a server takes the older
// drafts' `webtransport` too (both announced, DESIGN.md), and no other token.
#[test]
fn the_upgrade_tokens_a_server_takes() {
    let mut pair = Pair::new(config(), config());
    pair.drive();
    let ids: Vec<u64> = [Protocol::WEBTRANSPORT, Protocol::WEBSOCKET]
        .into_iter()
        .map(|token| {
            let request = connect_request_with("/old", token);
            pair.client().h3().send_request(&request, b"", false)
        })
        .collect();
    pair.drive();
    assert_eq!(pair.server().requests(), [ids[0]]);
    assert_eq!(pair.server().rejected(), []);
}

// draft-16 §3.1: a client whose SETTINGS announce no WebTransport draft has its sessions
// treated as malformed: the CONNECT stream is reset with H3_MESSAGE_ERROR.
#[test]
fn a_client_without_webtransport_settings_is_refused() {
    let client = config();
    let mut client_h3 = client.h3_config();
    client_h3.extra_settings.retain(|(id, _)| {
        ![
            SettingId::WT_ENABLED,
            SettingId::WT_MAX_SESSIONS,
            SettingId::WEBTRANSPORT_MAX_SESSIONS,
            SettingId::ENABLE_WEBTRANSPORT,
        ]
        .contains(id)
    });
    let server = config();
    let server_h3 = server.h3_config();
    let mut pair = Pair::with_h3(client, client_h3, server, server_h3);
    pair.drive();
    let id = pair.client().open_session_raw("/s");
    pair.drive();
    assert_eq!(pair.server().rejected(), [(id, Code::H3_MESSAGE_ERROR)]);
    assert_eq!(
        client_saw_reset(&mut pair, id),
        Some(Code::H3_MESSAGE_ERROR)
    );
}

// draft-16 §5.1, §5.2: a draft-16 client that announces no session count, without flow
// control, gets one session per connection, whatever the server's own count.
#[test]
fn without_counts_or_flow_control_one_session() {
    let client = config().with_flow_control(None);
    let mut client_h3 = client.h3_config();
    client_h3.extra_settings.retain(|(id, _)| {
        ![
            SettingId::WT_MAX_SESSIONS,
            SettingId::WEBTRANSPORT_MAX_SESSIONS,
        ]
        .contains(id)
    });
    let server = config().with_max_sessions(8);
    let server_h3 = server.h3_config();
    let mut pair = Pair::with_h3(client, client_h3, server, server_h3);
    pair.establish("/a");
    let second = pair.client().open_session_raw("/b");
    pair.drive();
    assert_eq!(
        pair.server().rejected(),
        [(second, Code::H3_REQUEST_REJECTED)]
    );
}

/// A session with draft-16 flow control on, the server allowing `server_limits`.
fn flowing(server_limits: FlowControlLimits) -> (Pair, u64) {
    let server = config().with_flow_control(Some(server_limits));
    let mut pair = Pair::new(config(), server);
    let id = pair.establish("/s");
    (pair, id)
}

/// draft-16 §5.6: the server ended session `id` for broken flow control, and reset the
/// CONNECT stream with WT_FLOW_CONTROL_ERROR.
fn assert_flow_control_broken(pair: &mut Pair, id: u64) {
    assert_eq!(
        pair.server().end(id),
        Some(End::Protocol(Violation::FlowControl))
    );
    assert_eq!(client_saw_reset(pair, id), Some(WT_FLOW_CONTROL_ERROR));
}

// draft-16 §5.3, §5.6.2: a peer that opens more streams than WT_MAX_STREAMS allowed breaks
// flow control: the session ends with WT_FLOW_CONTROL_ERROR on the CONNECT stream. A client
// that keeps to its credit opens no such stream.
#[test]
fn a_stream_past_max_streams_is_a_flow_control_error() {
    let (mut pair, id) = flowing(limits(1000, 10, 1));
    assert!(pair.client().open_uni(id).is_some());
    assert_eq!(pair.client().open_uni(id), None, "no credit left");
    pair.drive();
    assert_eq!(pair.server().end(id), None);
    pair.client().h3().open_uni_raw(&uni_prefix(id), false);
    pair.drive();
    assert_flow_control_broken(&mut pair, id);
}

// draft-16 §5.3, §5.6.1, §5.6.3: a client at its stream limit says WT_STREAMS_BLOCKED; the
// server's application accepting a stream sends WT_MAX_STREAMS, and the client goes on.
#[test]
fn accepting_gives_stream_credit() {
    let (mut pair, id) = flowing(limits(1000, 10, 2));
    let first = pair.client().open_uni(id).unwrap();
    pair.client().open_uni(id).unwrap();
    assert_eq!(pair.client().open_uni(id), None);
    pair.drive();
    assert_eq!(pair.client().open_uni(id), None, "still none");
    assert_eq!(pair.server().accept_uni(id), Some(first));
    pair.drive();
    assert!(pair.client().open_uni(id).is_some());
    pair.drive();
    assert_eq!(pair.server().end(id), None);
    // What the client told the server on the CONNECT stream: it was blocked at 2.
    let mut blocked = Vec::new();
    WtCapsule::StreamsBlocked(Kind::Uni, VarInt::from_u32(2))
        .to_capsule()
        .encode(&mut blocked);
    let body = &pair.server().h3().message(id).unwrap().body;
    assert!(body.windows(blocked.len()).any(|w| w == blocked));
}

// draft-16 §5.6.4: a WT_MAX_DATA that does not raise the limit breaks flow control:
// WT_FLOW_CONTROL_ERROR.
#[test]
fn a_max_data_that_lowers_the_limit_is_a_flow_control_error() {
    let client = config().with_flow_control(Some(limits(1000, 10, 10)));
    let mut pair = Pair::new(client, config());
    let id = pair.establish("/s");
    let capsule = WtCapsule::MaxData(VarInt::from_u32(999)).to_capsule();
    pair.client()
        .h3()
        .send_raw(id, &capsule_frame(&capsule), false);
    pair.drive();
    assert_flow_control_broken(&mut pair, id);
}

// draft-16 §5.4, §5.6.4: stream data past WT_MAX_DATA breaks flow control:
// WT_FLOW_CONTROL_ERROR. Within the limit, the client's writes stop at its credit.
#[test]
fn data_past_max_data_is_a_flow_control_error() {
    let (mut pair, id) = flowing(limits(10, 10, 10));
    let stream = pair.client().open_uni(id).unwrap();
    assert_eq!(pair.client().write(stream, b"0123456789abc", false), 10);
    pair.drive();
    let accepted = pair.server().accept_uni(id).unwrap();
    assert_eq!(pair.server().read(accepted).unwrap(), b"0123456789");
    assert_eq!(pair.server().end(id), None);
    // The client writes past the credit it had: 10, then 20 in the WT_MAX_DATA the read
    // caused.
    let raw = pair.client().h3().open_uni_raw(&uni_prefix(id), false);
    pair.client().h3().send_raw(raw, &[b'x'; 16], false);
    pair.drive();
    let accepted = pair.server().accept_uni(id).unwrap();
    assert_eq!(pair.server().read(accepted), None);
    pair.drive();
    assert_flow_control_broken(&mut pair, id);
}

// draft-16 §4.7: WT_DRAIN_SESSION reaches the peer's application; the session lives on, and
// a FIN after it ends the session as drained (§6).
#[test]
fn a_drain_surfaces_then_ends_as_drained() {
    let (mut pair, id) = session();
    pair.server().drain(id);
    pair.drive();
    assert!(pair.client().drained(id));
    assert_eq!(pair.client().end(id), None);
    pair.server().h3().send_raw(id, &[], true);
    pair.drive();
    assert_eq!(pair.client().end(id), Some(End::PeerDrained));
}

// draft-16 §6: after our close, the CONNECT stream is read for the peer's answer for a while
// only; a peer that never answers has it stopped with WT_SESSION_GONE (virtual time).
#[test]
fn a_close_left_unanswered_stops_the_stream_with_session_gone() {
    let (mut pair, id) = session();
    // The server's answer (its FIN) is lost.
    pair.h3.tamper(move |direction, transfer| {
        !(direction == Direction::ToClient
            && matches!(transfer, Transfer::Stream { id: on, .. } if *on == id))
    });
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    pair.client().close(id, 5, "waiting");
    pair.drive();
    assert_eq!(pair.server().end(id), peer_closed(5, "waiting"));
    // Watch for the client's STOP_SENDING from now on.
    let log = seen.clone();
    pair.h3.tamper(move |direction, transfer| {
        if direction == Direction::ToServer
            && let Transfer::StopSending { id: on, code } = transfer
        {
            log.borrow_mut().push((*on, *code));
        }
        !(direction == Direction::ToClient
            && matches!(transfer, Transfer::Stream { id: on, .. } if *on == id))
    });
    pair.advance(CLOSE_LINGER / 2);
    assert!(seen.borrow().is_empty(), "still waiting");
    pair.advance(CLOSE_LINGER);
    assert_eq!(*seen.borrow(), [(id, WT_SESSION_GONE)]);
    assert_eq!(pair.client().sessions(), 0);
}

// The Pair is deterministic: the same session gives the same bytes every run.
#[test]
fn the_same_bytes_every_run() {
    fn run() -> Vec<(Direction, Transfer)> {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut pair = Pair::new(config(), config());
        let seen = log.clone();
        pair.h3.tamper(move |direction, transfer| {
            seen.borrow_mut().push((direction, transfer.clone()));
            true
        });
        let id = pair.establish("/s");
        let stream = pair.client().open_bi(id).unwrap();
        pair.client().write(stream, b"hello", true);
        pair.client().close(id, 1, "done");
        pair.drive();
        log.take()
    }
    let first = run();
    assert!(first.len() > 5, "{first:?}");
    assert_eq!(first, run());
}
