//! Entry points for fuzz targets: each decodes arbitrary bytes and panics if a round trip or a
//! cross-check between decoders fails. Errors on bad input are fine; panics are bugs.
//!
//! The fuzz targets in `fuzz/` are one-line calls into these; `tests/fuzz_seeds.rs` replays the
//! seed corpora in `fuzz/corpus/h3_*/` through them on the stable toolchain, and `tests/proptests.rs`
//! runs them on random input.

use bytes::Bytes;

use crate::proto::capsule::{Capsule, CapsuleError, CapsuleReader, CapsuleType};
use crate::proto::datagram::Datagram;
use crate::proto::frame::{Frame, FrameError, FrameType};
use crate::proto::headers::{
    self, FieldLine, RequestHead, parse_request, parse_response, parse_trailers,
};
use crate::proto::reader::{FrameEvent, FrameReader};
use crate::proto::settings::Settings;

/// The payload bound the fuzz functions use for non-DATA frames and capsules.
const MAX_PAYLOAD: u64 = 4096;

/// Decodes `data` as a stream of frames, twice: whole frames with [`Frame::decode`], and through
/// [`FrameReader`] fed in chunks whose sizes come from the data. Both must agree, and every
/// decoded frame must re-encode to something that decodes to the same frame.
pub fn frame(data: &[u8]) {
    let (whole, whole_err) = decode_whole_frames(data);
    for frame in &whole {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        assert_eq!(buf.len(), frame.encoded_len());
        let again = Frame::decode(&mut &buf[..], MAX_PAYLOAD).expect("re-encoded frame decodes");
        assert_eq!(&again, frame);
    }

    // The chunked reader: split at sizes taken from the input itself.
    let mut reader = FrameReader::new(MAX_PAYLOAD);
    let mut streamed = Vec::new();
    // The DATA frame being reassembled and the bytes it still needs.
    let mut data_frame: Option<(Vec<u8>, u64)> = None;
    let mut reader_err = None;
    let mut rest = data;
    let mut step = 0;
    'feed: while !rest.is_empty() {
        let size = (usize::from(rest[0] % 7) + step % 3 + 1).min(rest.len());
        step += 1;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        reader.handle_data(Bytes::copy_from_slice(chunk));
        loop {
            match reader.poll_event() {
                Ok(Some(FrameEvent::Header(h))) => {
                    assert!(data_frame.is_none(), "a header inside a DATA frame");
                    if h.ty == FrameType::DATA {
                        if h.len.into_inner() == 0 {
                            streamed.push(Frame::Data(Bytes::new()));
                        } else {
                            data_frame = Some((Vec::new(), h.len.into_inner()));
                        }
                    }
                }
                Ok(Some(FrameEvent::Data(chunk))) => {
                    let (payload, remaining) =
                        data_frame.as_mut().expect("DATA chunk inside a DATA frame");
                    assert!(!chunk.is_empty() && chunk.len() as u64 <= *remaining);
                    payload.extend_from_slice(&chunk);
                    *remaining -= chunk.len() as u64;
                    if *remaining == 0 {
                        let (payload, _) = data_frame.take().expect("checked above");
                        streamed.push(Frame::Data(payload.into()));
                    }
                }
                Ok(Some(FrameEvent::Frame(frame))) => {
                    assert!(data_frame.is_none(), "a frame inside a DATA frame");
                    streamed.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    reader_err = Some(e);
                    break 'feed;
                }
            }
        }
    }
    // The reader skips unknown frames that whole-frame decoding returns.
    let known: Vec<_> = whole
        .iter()
        .filter(|f| !matches!(f, Frame::Unknown { .. }))
        .cloned()
        .collect();
    match (whole_err, reader_err) {
        // The reader skips unknown frames whatever their size, where whole-frame decoding
        // refuses them over the bound: from there on the two legitimately differ.
        (Some(FrameError::TooLarge { ty, .. }), _) if !ty.is_known() => {}
        (None, None) => {
            assert!(reader.is_idle());
            reader.handle_end().expect("a complete stream ends cleanly");
            assert_eq!(streamed, known);
        }
        (Some(FrameError::Incomplete), None) => {
            assert!(!reader.is_idle());
            assert_eq!(reader.handle_end(), Err(FrameError::Truncated));
            assert_eq!(streamed, known);
        }
        (Some(whole_err), Some(reader_err)) => {
            assert_eq!(whole_err, reader_err);
            assert_eq!(streamed, known);
        }
        (whole_err, reader_err) => {
            panic!("decoders disagree: whole {whole_err:?}, reader {reader_err:?}")
        }
    }
}

fn decode_whole_frames(data: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    let mut frames = Vec::new();
    let mut cur = data;
    while !cur.is_empty() {
        let mut attempt = cur;
        match Frame::decode(&mut attempt, MAX_PAYLOAD) {
            Ok(frame) => {
                assert!(attempt.len() < cur.len(), "a frame consumes bytes");
                cur = attempt;
                frames.push(frame);
            }
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

/// Decodes `data` as a capsule stream, whole and through [`CapsuleReader`] one byte at a time;
/// both must agree, and decoded capsules must round-trip.
pub fn capsule(data: &[u8]) {
    let mut whole = Vec::new();
    let mut whole_err = None;
    let mut cur = data;
    while !cur.is_empty() {
        match Capsule::decode(&mut cur, MAX_PAYLOAD) {
            Ok(capsule) => {
                let mut buf = Vec::new();
                capsule.encode(&mut buf);
                assert_eq!(buf.len(), capsule.encoded_len());
                assert_eq!(
                    Capsule::decode(&mut &buf[..], MAX_PAYLOAD),
                    Ok(capsule.clone())
                );
                whole.push(capsule);
            }
            Err(e) => {
                whole_err = Some(e);
                break;
            }
        }
    }

    let mut reader = CapsuleReader::new(MAX_PAYLOAD);
    reader.accept(CapsuleType::WT_CLOSE_SESSION);
    let mut streamed = Vec::new();
    let mut reader_err = None;
    'feed: for b in data {
        reader.handle_data(Bytes::copy_from_slice(&[*b]));
        loop {
            match reader.poll_capsule() {
                Ok(Some(c)) => streamed.push(c),
                Ok(None) => break,
                Err(e) => {
                    reader_err = Some(e);
                    break 'feed;
                }
            }
        }
    }
    let is_accepted =
        |ty: CapsuleType| ty == CapsuleType::DATAGRAM || ty == CapsuleType::WT_CLOSE_SESSION;
    let accepted: Vec<_> = whole
        .iter()
        .filter(|c| is_accepted(c.ty))
        .cloned()
        .collect();
    match (whole_err, reader_err) {
        // The reader skips other types whatever their size: from there on the two differ.
        (Some(CapsuleError::TooLarge { ty, .. }), _) if !is_accepted(ty) => {}
        (None, None) => {
            reader
                .handle_end()
                .expect("a complete capsule stream ends cleanly");
            assert_eq!(streamed, accepted);
        }
        (Some(CapsuleError::Incomplete), None) => {
            assert_eq!(reader.handle_end(), Err(CapsuleError::Truncated));
            assert_eq!(streamed, accepted);
        }
        (Some(whole_err), Some(reader_err)) => {
            assert_eq!(whole_err, reader_err);
            assert_eq!(streamed, accepted);
        }
        (whole_err, reader_err) => {
            panic!("decoders disagree: whole {whole_err:?}, reader {reader_err:?}")
        }
    }
}

/// Decodes `data` as a SETTINGS payload; a decoded list must re-encode and decode to itself.
pub fn settings(data: &[u8]) {
    if let Ok(settings) = Settings::decode(&mut &data[..]) {
        let mut buf = Vec::new();
        settings.encode(&mut buf);
        assert_eq!(buf.len(), settings.encoded_len());
        assert_eq!(Settings::decode(&mut &buf[..]), Ok(settings));
    }
}

/// Decodes `data` as an HTTP/3 datagram; a decoded one must round-trip.
pub fn datagram(data: &[u8]) {
    if let Ok(datagram) = Datagram::decode(Bytes::copy_from_slice(data)) {
        let mut buf = Vec::new();
        datagram
            .encode(&mut buf)
            .expect("a decoded stream ID is a request stream");
        assert_eq!(Datagram::decode(buf.into()), Ok(datagram));
    }
}

/// Reads `data` as a field list and validates it as a request, a response and a trailer
/// section. Whatever validates must turn back into field lines that validate to the same head.
///
/// Input format: repeated `[len][name][len][value]`, where each `len` is one byte; the high bit
/// of the name's length byte is the never-index flag.
pub fn header_fields(data: &[u8]) {
    let fields = field_list(data);
    if let Ok(head) = parse_request(&fields) {
        let lines: Vec<(Bytes, Bytes, bool)> =
            headers::request_fields(&head.request).expect("a parsed request can be sent");
        let again = parse_request(&lines).expect("a sent request parses");
        assert_same_request(&head, &again);
    }
    if let Ok(head) = parse_response(&fields) {
        let lines: Vec<(Bytes, Bytes, bool)> =
            headers::response_fields(&head.response).expect("a parsed response can be sent");
        let again = parse_response(&lines).expect("a sent response parses");
        assert_eq!(head.response.status(), again.response.status());
        assert_eq!(head.response.headers(), again.response.headers());
        assert_eq!(head.content_length, again.content_length);
    }
    if let Ok(trailers) = parse_trailers(&fields) {
        let lines: Vec<(Bytes, Bytes, bool)> =
            headers::trailer_fields(&trailers).expect("parsed trailers can be sent");
        assert_eq!(
            parse_trailers(&lines).expect("sent trailers parse"),
            trailers
        );
    }
}

fn assert_same_request(a: &RequestHead, b: &RequestHead) {
    assert_eq!(a.request.method(), b.request.method());
    assert_eq!(a.request.uri(), b.request.uri());
    assert_eq!(a.protocol, b.protocol);
    assert_eq!(a.content_length, b.content_length);
    // Same headers in the same order, never-index flags included.
    let pairs = |h: &http::HeaderMap| {
        h.iter()
            .map(|(n, v)| (n.clone(), v.as_bytes().to_vec(), v.is_sensitive()))
            .collect::<Vec<_>>()
    };
    assert_eq!(pairs(a.request.headers()), pairs(b.request.headers()));
}

/// Parses the field-list input format of [`header_fields`].
pub fn field_list(mut data: &[u8]) -> Vec<(Bytes, Bytes, bool)> {
    let mut fields = Vec::new();
    while let Some((&name_len, rest)) = data.split_first() {
        let never_index = name_len & 0x80 != 0;
        let name_len = usize::from(name_len & 0x7f).min(rest.len());
        let (name, rest) = rest.split_at(name_len);
        let Some((&value_len, rest)) = rest.split_first() else {
            break;
        };
        let value_len = usize::from(value_len).min(rest.len());
        let (value, rest) = rest.split_at(value_len);
        data = rest;
        fields.push((
            Bytes::copy_from_slice(name),
            Bytes::copy_from_slice(value),
            never_index,
        ));
    }
    fields
}

/// Encodes fields in the input format of [`header_fields`], for building seeds.
pub fn encode_field_list<F: FieldLine>(fields: &[F]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields {
        let name = &field.name()[..field.name().len().min(0x7f)];
        let value = &field.value()[..field.value().len().min(0xff)];
        out.push(name.len() as u8 | if field.never_index() { 0x80 } else { 0 });
        out.extend_from_slice(name);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    }
    out
}

/// Drives a [`Pair`](crate::pair::Pair) with the operations `data` encodes: either side opens
/// streams with arbitrary bytes, writes, resets and stops any stream seen so far, sends valid
/// requests and responses, and moves the clock. Checks that nothing panics, that the pair always
/// goes quiet (no endless exchange), that every connection close and stream error carries an
/// HTTP/3 or QPACK code (RFC 9114 §8.1, RFC 9204 §6), and that what a peer keeps is bounded by
/// what it was sent.
pub fn pair(data: &[u8]) {
    use crate::error::Code;
    use crate::pair::{Pair, StreamAction};

    fn take<'a>(rest: &mut &'a [u8], n: usize) -> &'a [u8] {
        let n = n.min(rest.len());
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        head
    }
    fn byte(rest: &mut &[u8]) -> u8 {
        take(rest, 1).first().copied().unwrap_or(0)
    }
    fn is_rfc_code(code: Code) -> bool {
        let code = code.into_inner();
        (0x100..=0x110).contains(&code) || (0x200..=0x202).contains(&code)
    }

    let mut rest = data;
    let flags = byte(&mut rest);
    let config = crate::Config {
        grease: flags & 1 != 0,
        enable_extended_connect: flags & 2 != 0,
        enable_datagrams: flags & 4 != 0,
        qpack_max_table_capacity: if flags & 8 != 0 { 0 } else { 4096 },
        ..crate::Config::default()
    };
    let mut pair = Pair::new(config.clone(), config);
    let mut streams = vec![
        pair.client.control_stream_id(),
        pair.server.control_stream_id(),
    ];
    let request = http::Request::get("https://example.com/fuzz")
        .header("x-fuzz", "a value worth inserting")
        .body(())
        .expect("a valid request");
    let response = http::Response::builder()
        .status(200)
        .header("x-fuzz", "a value worth inserting")
        .body(())
        .expect("a valid response");
    // Bounded by the input: every operation consumes at least one byte.
    while !rest.is_empty() {
        let op = byte(&mut rest);
        let fin = op & 0x80 != 0;
        let peer = if op & 1 == 0 {
            &mut pair.client
        } else {
            &mut pair.server
        };
        match (op >> 1) & 0x7 {
            0 => {
                let len = usize::from(byte(&mut rest));
                streams.push(peer.open_uni_raw(take(&mut rest, len), fin));
            }
            1 => {
                let len = usize::from(byte(&mut rest));
                streams.push(peer.open_bidi_raw(take(&mut rest, len), fin));
            }
            2 => {
                let id = streams[usize::from(byte(&mut rest)) % streams.len()];
                let len = usize::from(byte(&mut rest));
                peer.send_raw(id, take(&mut rest, len), fin);
            }
            3 => {
                let id = streams[usize::from(byte(&mut rest)) % streams.len()];
                peer.reset(id, Code::from_u32(u32::from(byte(&mut rest)) + 0xff));
            }
            4 => {
                let id = streams[usize::from(byte(&mut rest)) % streams.len()];
                peer.stop_sending(id, Code::from_u32(u32::from(byte(&mut rest)) + 0xff));
            }
            5 => {
                if op & 1 == 0 {
                    streams.push(pair.client.send_request(&request, b"body", fin));
                } else {
                    let id = streams[usize::from(byte(&mut rest)) % streams.len()];
                    pair.server.send_response(id, &response, b"body", fin);
                }
            }
            6 => {
                let by = std::time::Duration::from_millis(u64::from(byte(&mut rest)) * 100);
                pair.advance(by);
            }
            _ => {
                for _ in 0..byte(&mut rest) % 8 {
                    pair.step();
                }
            }
        }
        assert!(pair.drive_bounded(100_000), "the pair never went quiet");
    }
    for peer in [&pair.client, &pair.server] {
        if let Some(code) = peer.closed_with() {
            assert!(is_rfc_code(code), "closed with {code:?}");
        }
        for action in peer.actions() {
            let (StreamAction::Reset(_, code) | StreamAction::Stopped(_, code)) = *action;
            assert!(is_rfc_code(code), "{action:?}");
        }
        let kept: usize = peer.messages().map(|(_, message)| message.body.len()).sum();
        assert!(kept <= data.len() + 8 * streams.len(), "kept {kept} bytes");
    }
}
