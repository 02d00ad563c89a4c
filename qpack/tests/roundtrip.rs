//! Property test: whatever the header lists, table size, blocked-stream limit and the order in
//! which a network delivers encoder-stream bytes, field sections and decoder-stream bytes, the
//! decoder reproduces every list the encoder was given (RFC 9204 §2).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use quay_qpack::{Decoded, Decoder, DecoderConfig, Encoder, EncoderConfig, Field};

const NAMES: &[&str] = &[
    ":method",
    ":path",
    ":authority",
    ":status",
    "content-type",
    "cookie",
    "authorization",
    "user-agent",
    "x-custom",
    "x-trace",
    "accept-encoding",
];
const VALUES: &[&str] = &[
    "GET",
    "/",
    "/index.html",
    "200",
    "text/html",
    "gzip, br",
    "a",
    "",
];

fn field() -> impl Strategy<Value = Field> {
    let name = prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(|n| n.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12),
    ];
    let value = prop_oneof![
        4 => proptest::sample::select(VALUES).prop_map(|v| v.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
    ];
    (name, value, proptest::bool::weighted(0.1)).prop_map(|(n, v, never)| Field {
        name: Bytes::from(n),
        value: Bytes::from(v),
        never_index: never,
    })
}

#[derive(Debug, Clone)]
struct Case {
    capacity: u64,
    blocked: u64,
    lists: Vec<Vec<Field>>,
    /// Each byte picks the next network event.
    steps: Vec<u8>,
    cookies: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(&[0u64, 32, 100, 256, 1000, 4096][..]),
        proptest::sample::select(&[0u64, 1, 2, 100][..]),
        proptest::collection::vec(proptest::collection::vec(field(), 0..12), 1..25),
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(capacity, blocked, lists, steps, cookies)| Case {
            capacity,
            blocked,
            lists,
            steps,
            cookies,
        })
}

fn run(case: &Case) {
    let mut encoder = Encoder::new(EncoderConfig::default().danger_index_cookies(case.cookies));
    encoder.apply_peer_settings(case.capacity, case.blocked);
    let mut decoder = Decoder::new(
        DecoderConfig::default()
            .max_table_capacity(case.capacity)
            .max_blocked_streams(case.blocked)
            .max_field_section_size(1 << 20),
    );
    let mut to_decoder: VecDeque<u8> = VecDeque::new();
    let mut to_encoder: VecDeque<u8> = VecDeque::new();
    let mut sections: Vec<(u64, Bytes)> = vec![];
    let mut decoded: BTreeMap<u64, Vec<Field>> = BTreeMap::new();
    let mut next = 0;
    let record = |decoded: &mut BTreeMap<u64, Vec<Field>>, id: u64, fields: Vec<Field>| {
        assert!(
            decoded.insert(id, fields).is_none(),
            "stream {id} decoded twice"
        );
    };
    let mut steps = case.steps.iter().copied().chain(std::iter::repeat(0xff));
    loop {
        let done = next == case.lists.len()
            && to_decoder.is_empty()
            && sections.is_empty()
            && to_encoder.is_empty();
        if done {
            break;
        }
        let step = steps.next().unwrap();
        let amount = usize::from(step >> 2) + 1;
        match step & 3 {
            // Encode the next list (stream IDs as a client would use them).
            0 if next < case.lists.len() => {
                let id = next as u64 * 4;
                let out = encoder.encode(id, &case.lists[next]);
                to_decoder.extend(out.encoder_stream.iter());
                sections.push((id, out.field_section));
                next += 1;
            }
            // Deliver a chunk of the encoder stream.
            1 if !to_decoder.is_empty() => {
                let chunk: Vec<u8> = to_decoder.drain(..amount.min(to_decoder.len())).collect();
                for u in decoder.handle_encoder_stream(&chunk).unwrap() {
                    record(&mut decoded, u.stream_id, u.result.unwrap());
                }
            }
            // Deliver one field section, picked among those in flight.
            2 if !sections.is_empty() => {
                let (id, bytes) = sections.remove(amount % sections.len());
                match decoder.decode_section(id, bytes).unwrap() {
                    Decoded::Fields(fields) => record(&mut decoded, id, fields),
                    Decoded::Blocked => {}
                }
            }
            // Deliver a chunk of the decoder stream.
            3 if !to_encoder.is_empty() => {
                let chunk: Vec<u8> = to_encoder.drain(..amount.min(to_encoder.len())).collect();
                encoder.handle_decoder_stream(&chunk).unwrap();
            }
            // The chosen event is impossible: deliver everything in order instead.
            _ => {
                if next < case.lists.len() {
                    let id = next as u64 * 4;
                    let out = encoder.encode(id, &case.lists[next]);
                    to_decoder.extend(out.encoder_stream.iter());
                    sections.push((id, out.field_section));
                    next += 1;
                }
                let chunk: Vec<u8> = to_decoder.drain(..).collect();
                for u in decoder.handle_encoder_stream(&chunk).unwrap() {
                    record(&mut decoded, u.stream_id, u.result.unwrap());
                }
                for (id, bytes) in std::mem::take(&mut sections) {
                    match decoder.decode_section(id, bytes).unwrap() {
                        Decoded::Fields(fields) => record(&mut decoded, id, fields),
                        Decoded::Blocked => panic!("blocked with the whole encoder stream"),
                    }
                }
                let chunk: Vec<u8> = to_encoder.drain(..).collect();
                encoder.handle_decoder_stream(&chunk).unwrap();
            }
        }
        if let Some(bytes) = decoder.poll_decoder_stream() {
            to_encoder.extend(bytes.iter());
        }
    }
    assert_eq!(decoder.blocked_streams(), 0);
    for (i, list) in case.lists.iter().enumerate() {
        let got = &decoded[&(i as u64 * 4)];
        assert_eq!(got.len(), list.len());
        for (g, want) in got.iter().zip(list) {
            assert_eq!((&g.name, &g.value), (&want.name, &want.value));
            // The N bit survives, and sensitive names always carry it.
            if want.never_index {
                assert!(g.never_index);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn round_trip_with_any_delivery_order(case in case()) {
        run(&case);
    }
}
