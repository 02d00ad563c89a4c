//! Property tests: every codec round-trips, the chunk-fed readers agree with whole decoding for
//! any chunking, and the `fuzzing` functions hold on random and structured input.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use quay_h3::fuzzing;
use quay_h3::proto::VarInt;
use quay_h3::proto::capsule::{Capsule, CapsuleReader, CapsuleType};
use quay_h3::proto::datagram::Datagram;
use quay_h3::proto::frame::{Frame, FrameType, PriorityElement, PriorityUpdate, PushPromise};
use quay_h3::proto::headers::{parse_request, request_fields};
use quay_h3::proto::reader::{FrameEvent, FrameReader};
use quay_h3::proto::settings::{SettingId, Settings};

fn varint() -> impl Strategy<Value = VarInt> {
    prop_oneof![0u64..0x40, 0u64..0x4000, 0u64..0x4000_0000, 0u64..(1 << 62),]
        .prop_map(|v| VarInt::from_u64(v).expect("in range"))
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn settings() -> impl Strategy<Value = Settings> {
    vec((varint(), varint()), 0..8).prop_map(|pairs| {
        let mut settings = Settings::new();
        for (id, value) in pairs {
            // Entries that break a rule (duplicates, HTTP/2 ids, bad booleans) are left out.
            let _ = settings.insert(SettingId::from_varint(id), value);
        }
        settings
    })
}

fn frame() -> impl Strategy<Value = Frame> {
    let ascii = vec(0x20u8..0x7f, 0..16).prop_map(Bytes::from);
    prop_oneof![
        bytes(64).prop_map(Frame::Data),
        bytes(64).prop_map(Frame::Headers),
        varint().prop_map(Frame::CancelPush),
        settings().prop_map(Frame::Settings),
        (varint(), bytes(32)).prop_map(|(push_id, field_section)| Frame::PushPromise(
            PushPromise {
                push_id,
                field_section
            }
        )),
        varint().prop_map(Frame::Goaway),
        varint().prop_map(Frame::MaxPushId),
        (varint(), any::<bool>(), ascii).prop_map(|(id, push, field_value)| {
            let element = if push {
                PriorityElement::Push(id)
            } else {
                // Request streams are client-initiated bidirectional: multiples of 4.
                PriorityElement::Request(VarInt::from_u64(id.into_inner() & !3).expect("in range"))
            };
            Frame::PriorityUpdate(PriorityUpdate {
                element,
                field_value,
            })
        }),
        (any::<u64>(), bytes(32)).prop_map(|(n, payload)| Frame::grease(n, payload)),
        (varint(), bytes(32))
            .prop_filter("an unknown type", |(ty, _)| {
                let ty = FrameType::from_varint(*ty);
                !ty.is_known() && !ty.is_http2_reserved()
            })
            .prop_map(|(ty, payload)| Frame::Unknown {
                ty: FrameType::from_varint(ty),
                payload
            }),
    ]
}

/// Cuts `data` into chunks at the given (sorted, deduplicated) offsets.
fn chunks(data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for cut in cuts.into_iter().chain([data.len()]) {
        out.push(Bytes::copy_from_slice(&data[start..cut]));
        start = cut;
    }
    out
}

proptest! {
    #[test]
    fn frame_round_trip(frame in frame()) {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        prop_assert_eq!(buf.len(), frame.encoded_len());
        let mut cur = &buf[..];
        prop_assert_eq!(Frame::decode(&mut cur, u64::MAX).expect("decodes"), frame);
        prop_assert!(cur.is_empty());
    }

    #[test]
    fn reader_agrees_with_whole_decoding(frames in vec(frame(), 0..8), cuts in vec(any::<usize>(), 0..12)) {
        let mut buf = Vec::new();
        for frame in &frames {
            frame.encode(&mut buf);
        }
        let mut reader = FrameReader::new(u64::MAX);
        let mut got = Vec::new();
        let mut data: Option<Vec<u8>> = None;
        for chunk in chunks(&buf, &cuts) {
            reader.handle_data(chunk);
            while let Some(event) = reader.poll_event().expect("valid stream") {
                match event {
                    FrameEvent::Header(h) => {
                        if let Some(d) = data.take() {
                            got.push(Frame::Data(d.into()));
                        }
                        if h.ty == FrameType::DATA {
                            data = Some(Vec::new());
                        }
                    }
                    FrameEvent::Data(chunk) => data.as_mut().expect("in DATA").extend_from_slice(&chunk),
                    FrameEvent::Frame(frame) => {
                        if let Some(d) = data.take() {
                            got.push(Frame::Data(d.into()));
                        }
                        got.push(frame);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        if let Some(d) = data.take() {
            got.push(Frame::Data(d.into()));
        }
        reader.handle_end().expect("ends between frames");
        let expected: Vec<_> = frames.into_iter().filter(|f| !matches!(f, Frame::Unknown { .. })).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn settings_round_trip(settings in settings()) {
        let mut buf = Vec::new();
        settings.encode(&mut buf);
        prop_assert_eq!(buf.len(), settings.encoded_len());
        prop_assert_eq!(Settings::decode(&mut &buf[..]).expect("decodes"), settings);
    }

    #[test]
    fn capsule_round_trip(capsules in vec((varint(), bytes(48)), 0..6), cuts in vec(any::<usize>(), 0..8)) {
        let capsules: Vec<Capsule> = capsules
            .into_iter()
            .map(|(ty, payload)| Capsule { ty: CapsuleType::from_varint(ty), payload })
            .collect();
        let mut buf = Vec::new();
        for capsule in &capsules {
            capsule.encode(&mut buf);
        }
        let mut cur = &buf[..];
        for capsule in &capsules {
            prop_assert_eq!(&Capsule::decode(&mut cur, 1024).expect("decodes"), capsule);
        }
        let mut reader = CapsuleReader::new(1024);
        let mut got = Vec::new();
        for chunk in chunks(&buf, &cuts) {
            reader.handle_data(chunk);
            while let Some(capsule) = reader.poll_capsule().expect("valid") {
                got.push(capsule);
            }
        }
        reader.handle_end().expect("complete");
        let datagrams: Vec<_> = capsules.into_iter().filter(|c| c.ty == CapsuleType::DATAGRAM).collect();
        prop_assert_eq!(got, datagrams);
    }

    #[test]
    fn datagram_round_trip(quarter in 0u64..(1 << 60), payload in bytes(64)) {
        let datagram = Datagram { stream_id: VarInt::from_u64(quarter * 4).expect("in range"), payload };
        let mut buf = Vec::new();
        datagram.encode(&mut buf).expect("request stream");
        prop_assert_eq!(buf.len(), Datagram::prefix_len(datagram.stream_id) + datagram.payload.len());
        prop_assert_eq!(Datagram::decode(buf.into()).expect("decodes"), datagram);
    }

    #[test]
    fn request_head_round_trip(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
        scheme in prop::sample::select(vec!["https", "http"]),
        authority in "[a-z]{1,10}(\\.[a-z]{2,5})?(:[1-9][0-9]{0,3})?",
        path in "/[a-z0-9/._-]{0,12}(\\?[a-z0-9=&]{0,10})?",
        headers in prop::collection::btree_map("x-[a-z0-9-]{1,10}", "[!-~]([ -~]{0,18}[!-~])?", 0..6),
    ) {
        let mut fields = vec![
            (Bytes::from_static(b":method"), Bytes::from(method)),
            (Bytes::from_static(b":scheme"), Bytes::from(scheme)),
            (Bytes::from_static(b":authority"), Bytes::from(authority)),
            (Bytes::from_static(b":path"), Bytes::from(path)),
        ];
        for (name, value) in headers {
            fields.push((Bytes::from(name), Bytes::from(value)));
        }
        let head = parse_request(&fields).expect("valid request");
        let back: Vec<(Bytes, Bytes)> = request_fields(&head.request).expect("sendable");
        prop_assert_eq!(back, fields);
    }

    #[test]
    fn fuzz_frame(data in vec(any::<u8>(), 0..256)) {
        fuzzing::frame(&data);
    }

    #[test]
    fn fuzz_frame_structured(frames in vec(frame(), 0..6), tail in vec(any::<u8>(), 0..8)) {
        let mut buf = Vec::new();
        for frame in &frames {
            frame.encode(&mut buf);
        }
        buf.extend_from_slice(&tail);
        fuzzing::frame(&buf);
    }

    #[test]
    fn fuzz_pair(data in vec(any::<u8>(), 0..512)) {
        fuzzing::pair(&data);
    }

    #[test]
    fn fuzz_capsule(data in vec(any::<u8>(), 0..256)) {
        fuzzing::capsule(&data);
    }

    #[test]
    fn fuzz_settings(data in vec(any::<u8>(), 0..64)) {
        fuzzing::settings(&data);
    }

    #[test]
    fn fuzz_datagram(data in vec(any::<u8>(), 0..16)) {
        fuzzing::datagram(&data);
    }

    #[test]
    fn fuzz_header_fields(fields in vec((
        prop::sample::select(vec![
            ":method", ":scheme", ":authority", ":path", ":protocol", ":status", ":foo",
            "host", "te", "content-length", "accept", "Accept", "connection", "cookie", "x y", "",
        ]),
        prop::sample::select(vec![
            "GET", "CONNECT", "OPTIONS", "https", "http", "example.com", "example.com:443",
            "a@b", "/", "/p?q", "*", "", "trailers", "5", "5, 5", "webtransport", "200", "101",
            " x", "a\rb", "\u{80}",
        ]),
        any::<bool>(),
    ), 0..10)) {
        let lines: Vec<(Bytes, Bytes, bool)> = fields
            .into_iter()
            .map(|(n, v, ni)| (Bytes::from(n), Bytes::from(v), ni))
            .collect();
        fuzzing::header_fields(&fuzzing::encode_field_list(&lines));
    }
}
