//! Misbehaving peers and error codes on the deterministic [`Pair`]: a client and a server core
//! joined in memory, with raw bytes injected where a real peer would break a rule. No socket, no
//! task, no sleep: each test runs in microseconds and gives the same result every time.
//!
//! Each test names the rule (RFC 9114, RFC 9204, RFC 9297) and checks the exact code on the
//! wire: the connection's close, or the reset and stop of one stream while the connection stays
//! up. The loopback tests (`misbehaving.rs`) prove that the glue puts these codes on quinn.

use std::time::Duration;

use bytes::Bytes;
use quay_h3::Code;
use quay_h3::Config;
use quay_h3::connection::UniStream;
use quay_h3::pair::{Direction, Pair, StreamAction, Transfer};

fn config() -> Config {
    Config::default().with_grease(false)
}

/// A pair that has exchanged SETTINGS.
fn ready() -> Pair {
    let mut pair = Pair::default();
    pair.drive();
    assert!(pair.client.state().peer_settings().is_some());
    assert!(pair.server.state().peer_settings().is_some());
    pair
}

/// The client opens a unidirectional stream with `bytes`; returns the server's close code.
fn server_closes_with(bytes: &[u8]) -> Option<Code> {
    let mut pair = ready();
    pair.client.open_uni_raw(bytes, false);
    pair.drive();
    let code = pair.server.closed_with();
    assert_eq!(
        pair.client.peer_closed_with(),
        code,
        "the close reaches the peer"
    );
    code
}

/// Makes the first bytes of one side's control stream `control` (its type included) on their
/// way: a real endpoint opens its control stream at once, so rules about its first frames are
/// tested by altering those bytes.
fn replace_control(pair: &mut Pair, towards: Direction, control: &'static [u8]) {
    let id = match towards {
        Direction::ToServer => pair.client.control_stream_id(),
        Direction::ToClient => pair.server.control_stream_id(),
    };
    pair.tamper(move |direction, transfer| {
        if let Transfer::Stream { id: on, bytes, .. } = transfer
            && direction == towards
            && *on == id
            && bytes.first() == Some(&0x00)
        {
            *bytes = Bytes::from_static(control);
        }
        true
    });
}

/// The client's control stream carries `control` instead; returns the server's close code.
fn server_closes_on_control(control: &'static [u8]) -> Option<Code> {
    let mut pair = Pair::new(config(), config());
    replace_control(&mut pair, Direction::ToServer, control);
    pair.drive();
    pair.server.closed_with()
}

/// The server's control stream carries `control` instead; returns the client's close code.
fn client_closes_on_control(control: &'static [u8]) -> Option<Code> {
    let mut pair = Pair::new(config(), config());
    replace_control(&mut pair, Direction::ToClient, control);
    pair.drive();
    pair.client.closed_with()
}

fn request(path: &str) -> http::Request<()> {
    http::Request::get(format!("https://example.com{path}"))
        .body(())
        .unwrap()
}

#[test]
fn a_request_and_response_go_through() {
    let mut pair = ready();
    let id = pair.client.send_request(&request("/a"), b"", true);
    pair.drive();
    let received = pair.server.message(id).expect("the server has the request");
    assert_eq!(received.request.as_ref().unwrap().uri().path(), "/a");
    assert!(received.ended);
    let response = http::Response::builder().status(200).body(()).unwrap();
    pair.server.send_response(id, &response, b"hello", true);
    pair.drive();
    let message = pair.client.message(id).unwrap();
    assert_eq!(message.response.as_ref().unwrap().status(), 200);
    assert_eq!(message.body, b"hello");
    assert!(message.ended);
    assert_eq!(pair.server.closed_with(), None);
    assert_eq!(pair.client.closed_with(), None);
}

#[test]
fn dynamic_table_sections_arrive_even_when_blocked() {
    // RFC 9204 §2.1.2: a section that references entries the encoder stream has not delivered
    // yet waits for it. Hold the encoder stream back until the request stream has arrived.
    let mut pair = ready();
    let mut request = request("/x");
    request
        .headers_mut()
        .insert("x-custom", "a value long enough to insert".parse().unwrap());
    // The encoder inserts a field the second time it sees it.
    pair.client.send_request(&request, b"", true);
    pair.drive();
    let control = pair.client.control_stream_id();
    let mut passed_request = false;
    let held = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Transfer>::new()));
    let keep = held.clone();
    pair.tamper(move |direction, transfer| {
        if direction != Direction::ToServer {
            return true;
        }
        match transfer {
            // Client-initiated unidirectional streams are 2 mod 4: the encoder stream.
            Transfer::Stream { id, .. } if *id % 4 == 2 && *id != control && !passed_request => {
                keep.borrow_mut().push(transfer.clone());
                false
            }
            Transfer::Stream { id, .. } if *id % 4 == 0 => {
                passed_request = true;
                true
            }
            _ => true,
        }
    });
    let id = pair.client.send_request(&request, b"", true);
    pair.drive();
    let held = held.take();
    assert!(!held.is_empty(), "the encoder stream was held back");
    assert!(
        pair.server.message(id).unwrap().request.is_none(),
        "the head waits for the encoder stream"
    );
    for transfer in held {
        pair.client_replay(transfer);
    }
    pair.drive();
    let received = pair.server.message(id).unwrap();
    assert_eq!(
        received.request.as_ref().unwrap().headers()["x-custom"],
        "a value long enough to insert"
    );
}

/// Replays a held transfer from the client.
trait Replay {
    fn client_replay(&mut self, transfer: Transfer);
}

impl Replay for Pair {
    fn client_replay(&mut self, transfer: Transfer) {
        let Transfer::Stream { id, bytes, fin } = transfer else {
            panic!("only stream bytes are held");
        };
        self.client.send_raw(id, &bytes, fin);
    }
}

#[test]
fn control_stream_without_settings() {
    // RFC 9114 §6.2.1: the first frame of the control stream must be SETTINGS; here GOAWAY
    // (0x07, length 1, ID 0).
    assert_eq!(
        server_closes_on_control(&[0x00, 0x07, 0x01, 0x00]),
        Some(Code::H3_MISSING_SETTINGS)
    );
}

#[test]
fn two_settings_frames() {
    // RFC 9114 §7.2.4: SETTINGS only once.
    assert_eq!(
        server_closes_on_control(&[0x00, 0x04, 0x00, 0x04, 0x00]),
        Some(Code::H3_FRAME_UNEXPECTED)
    );
}

#[test]
fn data_on_the_control_stream() {
    // RFC 9114 §7.2.1: DATA on the control stream is H3_FRAME_UNEXPECTED.
    assert_eq!(
        server_closes_on_control(&[0x00, 0x04, 0x00, 0x00, 0x01, 0xaa]),
        Some(Code::H3_FRAME_UNEXPECTED)
    );
}

#[test]
fn malformed_goaway() {
    // RFC 9114 §7.1: a GOAWAY whose payload is longer than its one varint.
    assert_eq!(
        server_closes_on_control(&[0x00, 0x04, 0x00, 0x07, 0x02, 0x00, 0x00]),
        Some(Code::H3_FRAME_ERROR)
    );
}

#[test]
fn an_http2_setting() {
    // RFC 9114 §7.2.4.1: HTTP/2 setting 0x02 is H3_SETTINGS_ERROR.
    assert_eq!(
        server_closes_on_control(&[0x00, 0x04, 0x02, 0x02, 0x00]),
        Some(Code::H3_SETTINGS_ERROR)
    );
}

#[test]
fn a_second_control_stream() {
    // RFC 9114 §6.2.1: only one control stream.
    assert_eq!(
        server_closes_with(&[0x00, 0x04, 0x00]),
        Some(Code::H3_STREAM_CREATION_ERROR)
    );
}

#[test]
fn a_push_stream_from_a_client() {
    // RFC 9114 §6.2.2: only servers push.
    assert_eq!(
        server_closes_with(&[0x01, 0x00]),
        Some(Code::H3_STREAM_CREATION_ERROR)
    );
}

#[test]
fn the_control_stream_ends() {
    // RFC 9114 §6.2.1: FIN on the control stream.
    let mut pair = ready();
    let control = pair.client.control_stream_id();
    pair.client.send_raw(control, b"", true);
    pair.drive();
    assert_eq!(
        pair.server.closed_with(),
        Some(Code::H3_CLOSED_CRITICAL_STREAM)
    );
}

#[test]
fn the_control_stream_is_reset() {
    // RFC 9114 §6.2.1: a reset control stream is H3_CLOSED_CRITICAL_STREAM.
    let mut pair = ready();
    let control = pair.client.control_stream_id();
    pair.client.reset(control, Code::H3_NO_ERROR);
    pair.drive();
    assert_eq!(
        pair.server.closed_with(),
        Some(Code::H3_CLOSED_CRITICAL_STREAM)
    );
}

#[test]
fn our_control_stream_stopped_by_the_peer() {
    // RFC 9114 §6.2.1: STOP_SENDING on our control stream is a connection error too.
    let mut pair = ready();
    let control = pair.server.control_stream_id();
    pair.client.stop_sending(control, Code::H3_NO_ERROR);
    pair.drive();
    assert_eq!(
        pair.server.closed_with(),
        Some(Code::H3_CLOSED_CRITICAL_STREAM)
    );
}

#[test]
fn unknown_stream_types_are_read_no_further_and_ignored() {
    // RFC 9114 §6.2.3, §7.2.8: a GREASE stream type (0x21, and 0x40 in a two-byte varint) is
    // ignored without closing the connection: one still open is stopped with
    // H3_STREAM_CREATION_ERROR, one that arrived whole and small is dropped without a
    // STOP_SENDING (either is allowed; the second spares a frame); a GREASE frame on the control
    // stream is skipped.
    let mut pair = Pair::new(config(), config());
    replace_control(
        &mut pair,
        Direction::ToServer,
        &[0x00, 0x04, 0x00, 0x21, 0x02, 0xbe, 0xef],
    );
    pair.drive();
    let whole = pair.client.open_uni_raw(&[0x21, 0xde, 0xad], true);
    let open = pair
        .client
        .open_uni_raw(&[0x40, 0x40, 0x02, 0xbe, 0xef], false);
    let mut large = vec![0x21];
    large.resize(2 + UniStream::DISCARD_LIMIT, 0xee);
    let large = pair.client.open_uni_raw(&large, true);
    pair.drive();
    assert_eq!(pair.server.closed_with(), None);
    assert!(pair.server.state().peer_settings().is_some());
    let stopped: Vec<_> = pair.server.actions().to_vec();
    assert_eq!(
        stopped,
        [
            StreamAction::Stopped(open, Code::H3_STREAM_CREATION_ERROR),
            StreamAction::Stopped(large, Code::H3_STREAM_CREATION_ERROR),
        ]
    );
    assert!(!stopped.contains(&StreamAction::Stopped(
        whole,
        Code::H3_STREAM_CREATION_ERROR
    )));
}

#[test]
fn a_bad_qpack_encoder_stream() {
    // RFC 9204 §4.3.4: Duplicate (0b000) of an entry that does not exist.
    assert_eq!(
        server_closes_with(&[0x02, 0x00]),
        Some(Code::QPACK_ENCODER_STREAM_ERROR)
    );
}

#[test]
fn a_bad_qpack_decoder_stream() {
    // RFC 9204 §4.4.1: Section Acknowledgment for stream 4, which has no section outstanding.
    assert_eq!(
        server_closes_with(&[0x03, 0x84]),
        Some(Code::QPACK_DECODER_STREAM_ERROR)
    );
}

#[test]
fn a_second_qpack_encoder_stream() {
    // RFC 9204 §4.2: each QPACK stream exists once.
    let mut pair = ready();
    pair.client.open_uni_raw(&[0x02], false);
    pair.client.open_uni_raw(&[0x02], false);
    pair.drive();
    assert_eq!(
        pair.server.closed_with(),
        Some(Code::H3_STREAM_CREATION_ERROR)
    );
}

#[test]
fn a_bad_field_section() {
    // RFC 9204 §6: HEADERS whose field line names static index 200, which does not exist.
    let mut pair = ready();
    pair.client
        .open_bidi_raw(&[0x01, 0x05, 0x00, 0x00, 0xff, 0x89, 0x01], true);
    pair.drive();
    assert_eq!(
        pair.server.closed_with(),
        Some(Code::QPACK_DECOMPRESSION_FAILED)
    );
}

#[test]
fn data_before_headers() {
    // RFC 9114 §4.1: a request stream must start with HEADERS.
    let mut pair = ready();
    pair.client.open_bidi_raw(&[0x00, 0x01, 0xaa], true);
    pair.drive();
    assert_eq!(pair.server.closed_with(), Some(Code::H3_FRAME_UNEXPECTED));
}

#[test]
fn a_frame_cut_by_fin() {
    // RFC 9114 §7.1: HEADERS announcing 5 bytes, 2 before FIN.
    let mut pair = ready();
    pair.client.open_bidi_raw(&[0x01, 0x05, 0x00, 0x00], true);
    pair.drive();
    assert_eq!(pair.server.closed_with(), Some(Code::H3_FRAME_ERROR));
}

#[test]
fn a_malformed_request_is_a_stream_error() {
    // RFC 9114 §4.1.2: a request without :method is reset and stopped with H3_MESSAGE_ERROR;
    // the connection stays up. Field section: prefix 0x0000, :path / (static 1 -> 0xc1).
    let mut pair = ready();
    let id = pair
        .client
        .open_bidi_raw(&[0x01, 0x03, 0x00, 0x00, 0xc1], true);
    pair.drive();
    assert_eq!(pair.server.closed_with(), None);
    assert_eq!(
        pair.server.actions(),
        [
            StreamAction::Stopped(id, Code::H3_MESSAGE_ERROR),
            StreamAction::Reset(id, Code::H3_MESSAGE_ERROR),
        ]
    );
    assert_eq!(
        pair.client.message(id).unwrap().reset_by_peer,
        Some(Code::H3_MESSAGE_ERROR)
    );
}

/// A POST whose `content-length: 10` promises more than its body (5 bytes) before FIN: a
/// HEADERS frame (QPACK, static table only: :method POST 0xd4, :scheme https 0xd7, :path /
/// 0xc1, :authority "localhost" 0x50, content-length "10" 0x54), then DATA "hello".
const SHORT_BODY_REQUEST: &[u8] = &[
    0x01, 0x14, 0x00, 0x00, 0xd4, 0xd7, 0xc1, 0x50, 0x09, b'l', b'o', b'c', b'a', b'l', b'h', b'o',
    b's', b't', 0x54, 0x02, b'1', b'0', 0x00, 0x05, b'h', b'e', b'l', b'l', b'o',
];

#[test]
fn a_body_shorter_than_its_content_length() {
    // RFC 9114 §4.1.2: DATA that does not add up to content-length is malformed: the stream is
    // stopped and reset with H3_MESSAGE_ERROR, the connection stays up.
    let mut pair = ready();
    let id = pair.client.open_bidi_raw(SHORT_BODY_REQUEST, true);
    pair.drive();
    assert_eq!(pair.server.closed_with(), None);
    let message = pair.server.message(id).unwrap();
    assert_eq!(message.request.as_ref().unwrap().method(), "POST");
    assert_eq!(message.body, b"hello");
    assert_eq!(
        pair.server.actions(),
        [
            StreamAction::Stopped(id, Code::H3_MESSAGE_ERROR),
            StreamAction::Reset(id, Code::H3_MESSAGE_ERROR),
        ]
    );
}

#[test]
fn a_request_that_ends_before_its_head() {
    // RFC 9114 §4.1.2: a request stream that ends before a complete request head.
    let mut pair = ready();
    let id = pair.client.open_bidi_raw(&[], true);
    pair.drive();
    assert_eq!(
        pair.server.actions(),
        [StreamAction::Reset(id, Code::H3_REQUEST_INCOMPLETE)]
    );
}

#[test]
fn a_request_head_not_complete_in_time() {
    // RFC 9114 §4.1.2 with Config::request_head_timeout: one byte of HEADERS, then nothing. At
    // the bound, and not before, the stream is stopped and reset with H3_REQUEST_INCOMPLETE.
    let mut pair = ready();
    let id = pair.client.open_bidi_raw(&[0x01], false);
    pair.drive();
    let timeout = Config::default().request_head_timeout;
    assert_eq!(pair.next_timeout(), Some(timeout));
    pair.advance(timeout - Duration::from_millis(1));
    assert!(pair.server.actions().is_empty());
    pair.advance(Duration::from_millis(1));
    assert_eq!(
        pair.server.actions(),
        [
            StreamAction::Stopped(id, Code::H3_REQUEST_INCOMPLETE),
            StreamAction::Reset(id, Code::H3_REQUEST_INCOMPLETE),
        ]
    );
    assert_eq!(pair.server.closed_with(), None);
    assert_eq!(pair.next_timeout(), None);
}

#[test]
fn requests_after_our_goaway_are_rejected() {
    // RFC 9114 §5.2: a server refuses requests at or above the ID of its GOAWAY, unprocessed,
    // with H3_REQUEST_REJECTED; the ones below go on.
    let mut pair = ready();
    let first = pair.client.send_request(&request("/1"), b"", true);
    pair.drive();
    pair.server.state_mut().send_shutdown_goaway();
    // The GOAWAY leaves with the next flush: a transfer from the client triggers one.
    let second = pair.client.send_request(&request("/2"), b"", true);
    pair.drive();
    assert!(pair.server.message(first).unwrap().request.is_some());
    assert!(pair.server.message(second).is_none());
    assert!(
        pair.server
            .actions()
            .contains(&StreamAction::Reset(second, Code::H3_REQUEST_REJECTED))
    );
    assert_eq!(
        pair.client.state().goaway_received(),
        Some(quay_h3::proto::VarInt::from_u64(first + 4).unwrap())
    );
}

/// A raw server sends `bytes` on a unidirectional stream; returns the client's close code.
fn client_closes_with(bytes: &[u8]) -> Option<Code> {
    let mut pair = ready();
    pair.server.open_uni_raw(bytes, false);
    pair.drive();
    pair.client.closed_with()
}

#[test]
fn a_push_stream_without_max_push_id() {
    // RFC 9114 §4.6: we never sent MAX_PUSH_ID, so any push ID is an ID error.
    assert_eq!(client_closes_with(&[0x01, 0x00]), Some(Code::H3_ID_ERROR));
}

#[test]
fn a_push_promise_without_max_push_id() {
    // RFC 9114 §7.2.5: PUSH_PROMISE (0x05, length 2: push ID 0, empty section) on a response.
    let mut pair = ready();
    let id = pair.client.send_request(&request("/"), b"", true);
    pair.drive();
    pair.server
        .send_raw(id, &[0x05, 0x03, 0x00, 0x00, 0x00], false);
    pair.drive();
    assert_eq!(pair.client.closed_with(), Some(Code::H3_ID_ERROR));
}

#[test]
fn a_goaway_naming_a_non_request_stream() {
    // RFC 9114 §5.2: a server's GOAWAY names a client-initiated bidirectional stream.
    assert_eq!(
        client_closes_on_control(&[0x00, 0x04, 0x00, 0x07, 0x01, 0x02]),
        Some(Code::H3_ID_ERROR)
    );
}

#[test]
fn max_push_id_from_a_server() {
    // RFC 9114 §7.2.7: only clients send MAX_PUSH_ID.
    assert_eq!(
        client_closes_on_control(&[0x00, 0x04, 0x00, 0x0d, 0x01, 0x00]),
        Some(Code::H3_FRAME_UNEXPECTED)
    );
}

#[test]
fn a_server_initiated_bidirectional_stream() {
    // RFC 9114 §6.1: without an extension, a server must not open bidirectional streams.
    let mut pair = ready();
    pair.server.open_bidi_raw(&[0x01, 0x00], false);
    pair.drive();
    assert_eq!(
        pair.client.closed_with(),
        Some(Code::H3_STREAM_CREATION_ERROR)
    );
}

#[test]
fn h3_datagram_without_quic_datagrams() {
    // RFC 9297 §2.1.1: H3_DATAGRAM=1 on a connection without QUIC datagrams is
    // H3_SETTINGS_ERROR. The pair's connections have no transport, so the server is told there
    // are none.
    let datagrams = config().with_enable_datagrams(true);
    let mut pair = Pair::new(datagrams.clone(), datagrams);
    pair.server.state_mut().set_quic_datagrams(false);
    pair.drive();
    assert_eq!(pair.server.closed_with(), Some(Code::H3_SETTINGS_ERROR));
}

#[test]
fn interim_responses_then_the_final_one() {
    // RFC 9114 §4.1: any number of interim responses before the final one.
    let mut pair = ready();
    let id = pair.client.send_request(&request("/"), b"", true);
    pair.drive();
    for status in [100, 103, 200] {
        let response = http::Response::builder().status(status).body(()).unwrap();
        pair.server.send_response(id, &response, b"", status == 200);
    }
    pair.drive();
    let message = pair.client.message(id).unwrap();
    assert_eq!(message.interim, 2);
    assert_eq!(message.response.as_ref().unwrap().status(), 200);
    assert!(message.ended);
}

#[test]
fn a_response_to_head_has_no_content() {
    // RFC 9110 §6.4.1 (RFC 9114 §4.1.2): DATA after a response to HEAD is malformed, whatever
    // content-length says.
    let mut pair = ready();
    let head = http::Request::head("https://example.com/")
        .body(())
        .unwrap();
    let id = pair.client.send_request(&head, b"", true);
    pair.drive();
    let response = http::Response::builder()
        .status(200)
        .header("content-length", "5")
        .body(())
        .unwrap();
    pair.server.send_response(id, &response, b"hello", true);
    pair.drive();
    assert!(
        pair.client
            .actions()
            .contains(&StreamAction::Stopped(id, Code::H3_MESSAGE_ERROR))
    );
    assert_eq!(pair.client.closed_with(), None);
}

#[test]
fn the_same_bytes_every_run() {
    // The pair is deterministic: two runs of the same exchange give the same transfers.
    fn run() -> Vec<(Direction, Transfer)> {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = seen.clone();
        let mut pair = Pair::default();
        pair.tamper(move |direction, transfer| {
            log.borrow_mut().push((direction, transfer.clone()));
            true
        });
        let id = pair.client.send_request(&request("/same"), b"body", true);
        pair.drive();
        let response = http::Response::builder().status(204).body(()).unwrap();
        pair.server.send_response(id, &response, b"", true);
        pair.drive();
        seen.take()
    }
    let first = run();
    // Both control streams, the request and the response.
    assert!(first.len() >= 4, "{first:?}");
    assert_eq!(first, run());
}

#[test]
fn the_connection_counts_what_happened() {
    // The counters of ConnectionState::stats, driven through the cores: a request and its
    // response with a dynamic-table field (inserted the second time it is seen), a malformed
    // request, and a head that never completes.
    let mut pair = ready();
    let mut with_field = request("/s");
    with_field
        .headers_mut()
        .insert("x-custom", "a value long enough to insert".parse().unwrap());
    for _ in 0..2 {
        let id = pair.client.send_request(&with_field, b"body", true);
        pair.drive();
        let response = http::Response::builder().status(200).body(()).unwrap();
        pair.server.send_response(id, &response, b"hello", true);
        pair.drive();
    }
    pair.client
        .open_bidi_raw(&[0x01, 0x03, 0x00, 0x00, 0xc1], true);
    pair.client.open_bidi_raw(&[0x01], false);
    pair.drive();
    pair.advance(Config::default().request_head_timeout);

    let server = pair.server.state().stats();
    assert_eq!(server.requests.opened, 4);
    assert_eq!(server.requests.malformed, 1);
    assert_eq!(server.requests.incomplete, 1);
    assert_eq!(server.peer_streams.bidi, 4);
    assert_eq!(server.peer_streams.control, 1);
    // The client's encoder stream, and its decoder stream, which cancels the two streams the
    // server reset before their responses (RFC 9204 §4.4.2).
    assert_eq!(server.peer_streams.qpack, 2);
    // Two whole requests with a body each: two HEADERS and two DATA frames, plus the malformed
    // one's HEADERS; the client's SETTINGS on the control stream.
    assert_eq!(server.frames_received.data.frames, 2);
    assert_eq!(server.frames_received.headers.frames, 3);
    assert_eq!(server.frames_received.settings.frames, 1);
    assert_eq!(server.frames_sent.settings.frames, 1);
    // The fields seen a second time are inserted (x-custom among them).
    assert!(server.qpack.decoder_inserts >= 1);
    assert!(server.qpack.decoder_table_size > 0);
    assert!(server.qpack.encoder_stream_received > 0);
    assert!(
        server.qpack.decoder_stream_sent > 0,
        "the section acknowledgement"
    );
    assert!(server.peer_settings_received);

    let client = pair.client.state().stats();
    assert_eq!(client.qpack.encoder_inserts, server.qpack.decoder_inserts);
    assert_eq!(
        client.qpack.encoder_table_entries,
        server.qpack.decoder_table_entries
    );
    assert_eq!(
        client.qpack.encoder_table_size,
        server.qpack.decoder_table_size
    );
    assert!(client.qpack.encoder_stream_sent > 0);
    assert_eq!(
        client.requests.reset_by_peer, 2,
        "the malformed and the incomplete"
    );
    assert_eq!(client.frames_received.data.frames, 2);
}

#[test]
fn a_query_reaches_the_server() {
    let mut pair = ready();
    let id = pair
        .client
        .send_request(&request("/q?room=1&x=2"), b"", true);
    pair.drive();
    let received = pair.server.message(id).unwrap().request.as_ref().unwrap();
    assert_eq!(received.uri().query(), Some("room=1&x=2"));
}
