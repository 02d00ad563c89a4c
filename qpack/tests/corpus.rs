//! Interop and compression tests over the QIF corpus (`../shared/qifs`, format in its README).
//!
//! The corpus is not in the repository. These tests look for it in `$QUAY_QIFS`, else in
//! `../shared/qifs` next to the workspace, and are ignored by default; run them with
//! `cargo test -p quay-qpack --test corpus -- --ignored --nocapture`. When run, a missing
//! corpus fails the test: it never passes silently.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use quay_qpack::{Decoded, Decoder, DecoderConfig, Encoder, EncoderConfig, Field};

fn corpus() -> PathBuf {
    let dir = std::env::var_os("QUAY_QIFS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/qifs"),
        PathBuf::from,
    );
    assert!(
        dir.join("encoded/qpack-05").is_dir(),
        "QIF corpus not found at {} (set QUAY_QIFS to its path): these tests need it",
        dir.display()
    );
    dir
}

type List = Vec<(Vec<u8>, Vec<u8>)>;

fn parse_qif(path: &Path) -> Vec<List> {
    let text = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    quay_qpack::fuzzing::parse_qif(&text)
}

/// RFC 9204 Appendix B's field sections, in the order `examples.out.*` carries them.
fn appendix_b_lists() -> Vec<List> {
    let l = |pairs: &[(&str, &str)]| -> List {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    };
    vec![
        l(&[(":path", "/index.html")]),
        l(&[(":authority", "www.example.com"), (":path", "/sample/path")]),
        l(&[
            (":authority", "www.example.com"),
            (":path", "/"),
            ("custom-key", "custom-value"),
        ]),
    ]
}

/// (stream id, data) records.
fn parse_encoded(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut records = vec![];
    let mut rest = &data[..];
    while !rest.is_empty() {
        assert!(
            rest.len() >= 12,
            "{}: truncated record header",
            path.display()
        );
        let id = u64::from_be_bytes(rest[..8].try_into().unwrap());
        let len = u32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
        assert!(
            rest.len() >= 12 + len,
            "{}: truncated record",
            path.display()
        );
        records.push((id, rest[12..12 + len].to_vec()));
        rest = &rest[12 + len..];
    }
    records
}

fn as_list(fields: &[Field]) -> List {
    fields
        .iter()
        .map(|f| (f.name.to_vec(), f.value.to_vec()))
        .collect()
}

/// `<qif>.out.<table>.<blocked>.<ack>` -> (qif, table, blocked); other names get defaults.
fn settings(name: &str) -> (String, u64, u64) {
    let (qif, rest) = name.split_once(".out").unwrap_or((name, ""));
    let parts: Vec<u64> = rest.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts[..] {
        [table, blocked, _ack] => (qif.to_owned(), table, blocked),
        _ => (qif.to_owned(), 4096, 100),
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Decodes one encoded file, feeding encoder-stream records in uneven chunks.
fn decode_file(path: &Path, table: u64, blocked: u64, lists: &[List]) -> Result<(), String> {
    let records = parse_encoded(path);
    let ids: Vec<u64> = records.iter().filter(|r| r.0 != 0).map(|r| r.0).collect();
    let by_id = ids.iter().all(|id| (1..=lists.len() as u64).contains(id));
    let config = DecoderConfig::default()
        .max_table_capacity(table)
        .max_blocked_streams(blocked)
        .max_field_section_size(1 << 20);
    let mut decoder = Decoder::new(config);
    // qpack-05 (the draft these files were made with) started the dynamic table at the
    // maximum capacity; RFC 9204 §3.2.3 starts it at zero and needs an explicit Set Dynamic
    // Table Capacity. Files that rely on the draft's implicit capacity get that instruction
    // first, as an RFC 9204 encoder would have sent it; the decoder itself stays strict.
    let first_encoder_byte = records.iter().find(|r| r.0 == 0).and_then(|r| r.1.first());
    if table > 0 && first_encoder_byte.is_some_and(|b| b & 0xe0 != 0x20) {
        let mut set = vec![];
        quay_qpack::fuzzing::put_int(&mut set, 5, 0x20, table);
        decoder
            .handle_encoder_stream(&set)
            .map_err(|e| format!("set capacity: {e}"))?;
    }
    let mut decoded: BTreeMap<u64, List> = BTreeMap::new();
    let mut order = vec![];
    let mut chunk = 1;
    for (id, data) in records {
        if id == 0 {
            for piece in data.chunks(chunk) {
                let unblocked = decoder
                    .handle_encoder_stream(piece)
                    .map_err(|e| format!("encoder stream: {e}"))?;
                for u in unblocked {
                    let fields = u
                        .result
                        .map_err(|e| format!("stream {}: {e}", u.stream_id))?;
                    decoded.insert(u.stream_id, as_list(&fields));
                }
            }
            chunk = chunk % 13 + 3;
        } else {
            order.push(id);
            match decoder.decode_section(id, Bytes::from(data)) {
                Ok(Decoded::Fields(fields)) => {
                    decoded.insert(id, as_list(&fields));
                }
                Ok(Decoded::Blocked) => {}
                Err(e) => return Err(format!("stream {id}: {e}")),
            }
        }
        decoder.poll_decoder_stream();
    }
    if decoder.blocked_streams() > 0 {
        return Err(format!(
            "{} streams still blocked",
            decoder.blocked_streams()
        ));
    }
    for (n, id) in order.iter().enumerate() {
        let index = if by_id { *id as usize - 1 } else { n };
        let expected = lists.get(index).ok_or(format!("no header list {index}"))?;
        if decoded.get(id) != Some(expected) {
            return Err(format!(
                "stream {id} does not match header list {}",
                index + 1
            ));
        }
    }
    if order.len() != lists.len() {
        return Err(format!(
            "{} header blocks for {} lists",
            order.len(),
            lists.len()
        ));
    }
    Ok(())
}

#[test]
#[ignore = "needs ../shared/qifs"]
fn decode_every_encoded_file() {
    let root = corpus();
    let mut paths = vec![];
    files(&root.join("encoded/qpack-05"), &mut paths);
    paths.sort();
    assert!(
        paths.len() > 100,
        "expected the whole corpus, found {} files",
        paths.len()
    );
    let mut failures = vec![];
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (qif, table, blocked) = settings(&name);
        let lists = if qif == "examples" {
            appendix_b_lists()
        } else {
            parse_qif(&root.join(format!("{qif}.qif")))
        };
        if let Err(e) = decode_file(path, table, blocked, &lists) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    println!("decoded {} files, {} failures", paths.len(), failures.len());
    assert!(
        failures.is_empty(),
        "files that did not decode:\n{}",
        failures.join("\n")
    );
}

/// Total bytes (field sections + encoder stream) that our encoder produces for a QIF, checked
/// by decoding everything with our decoder. Field sections are delivered before the encoder
/// stream bytes they come with, so references to new entries really block.
fn encode_qif(lists: &[List], table: u64, blocked: u64, ack: bool, config: EncoderConfig) -> usize {
    let mut encoder = Encoder::new(config.max_table_capacity(table));
    encoder.apply_peer_settings(table, blocked);
    let mut decoder = Decoder::new(
        DecoderConfig::default()
            .max_table_capacity(table)
            .max_blocked_streams(blocked)
            .max_field_section_size(1 << 20),
    );
    let mut total = 0;
    let mut decoded: BTreeMap<u64, List> = BTreeMap::new();
    for (i, list) in lists.iter().enumerate() {
        let id = i as u64 + 1;
        let fields: Vec<Field> = list
            .iter()
            .map(|(n, v)| Field::new(n.clone(), v.clone()))
            .collect();
        let encoded = encoder.encode(id, &fields);
        total += encoded.field_section.len() + encoded.encoder_stream.len();
        match decoder.decode_section(id, encoded.field_section).unwrap() {
            Decoded::Fields(f) => {
                decoded.insert(id, as_list(&f));
            }
            Decoded::Blocked => {}
        }
        for u in decoder
            .handle_encoder_stream(&encoded.encoder_stream)
            .unwrap()
        {
            decoded.insert(u.stream_id, as_list(&u.result.unwrap()));
        }
        let feedback = decoder.poll_decoder_stream();
        if ack && let Some(bytes) = feedback {
            encoder.handle_decoder_stream(&bytes).unwrap();
        }
    }
    for (i, list) in lists.iter().enumerate() {
        assert_eq!(decoded.get(&(i as u64 + 1)), Some(list), "list {}", i + 1);
    }
    total
}

fn encoded_size(path: &Path) -> Option<usize> {
    path.exists()
        .then(|| parse_encoded(path).iter().map(|r| r.1.len()).sum())
}

#[test]
#[ignore = "needs ../shared/qifs"]
fn encode_every_qif_and_compare() {
    let root = corpus();
    let mut qifs: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".qif").map(str::to_owned)
        })
        .collect();
    qifs.sort();
    assert!(
        qifs.len() >= 7,
        "expected 7 QIF files, found {}",
        qifs.len()
    );
    let secure = EncoderConfig::default();
    let cookies = EncoderConfig::default().danger_index_cookies(true);
    println!(
        "{:<16} {:>5} {:>3} {:>3} {:>9} {:>9} {:>9} {:>9}  quay, quay+ck vs ls-qpack",
        "qif", "table", "blk", "ack", "quay", "quay+ck", "ls-qpack", "nghttp3"
    );
    let mut worse = vec![];
    let mut worse_ck = vec![];
    for qif in &qifs {
        let lists = parse_qif(&root.join(format!("{qif}.qif")));
        let static_only = encode_qif(&lists, 0, 0, true, secure);
        for table in [0, 256, 512, 4096] {
            for blocked in [0, 100] {
                for ack in [1, 0] {
                    let ours = encode_qif(&lists, table, blocked, ack == 1, secure);
                    let ours_ck = encode_qif(&lists, table, blocked, ack == 1, cookies);
                    // With acknowledgements, any dynamic table must beat the static table alone.
                    if ack == 1 && table > 0 && lists.len() > 3 {
                        assert!(
                            ours < static_only,
                            "{qif} {table} {blocked}: {ours} >= {static_only}"
                        );
                    }
                    let file = format!("{qif}.out.{table}.{blocked}.{ack}");
                    let ls = encoded_size(&root.join("encoded/qpack-05/ls-qpack").join(&file));
                    let ng = encoded_size(&root.join("encoded/qpack-05/nghttp3").join(&file));
                    let show = |v: Option<usize>| v.map_or("-".to_owned(), |v| v.to_string());
                    let pct = |ours: usize, ls: usize| (ours as f64 / ls as f64 - 1.0) * 100.0;
                    let verdict = match ls {
                        Some(ls) => {
                            if table == 4096 && ours > ls {
                                worse.push(format!("{file}: {ours} > {ls}"));
                            }
                            if table == 4096 && ours_ck > ls {
                                worse_ck.push(format!("{file}: {ours_ck} > {ls}"));
                            }
                            format!("{:+.1}% {:+.1}%", pct(ours, ls), pct(ours_ck, ls))
                        }
                        None => String::new(),
                    };
                    println!(
                        "{qif:<16} {table:>5} {blocked:>3} {ack:>3} {ours:>9} {ours_ck:>9} {:>9} {:>9}  {verdict}",
                        show(ls),
                        show(ng)
                    );
                }
            }
        }
    }
    println!("4096-byte table, larger than ls-qpack: default {worse:?}");
    println!("  with danger_index_cookies: {worse_ck:?}");
}

/// Encodes one QIF with one setting, for tuning: `QPACK_ONLY="fb-resp 4096 100 1"`.
#[test]
#[ignore = "tuning aid"]
fn encode_one() {
    let root = corpus();
    let Some(spec) = std::env::var_os("QPACK_ONLY") else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let p: Vec<&str> = spec.split(' ').collect();
    let lists = parse_qif(&root.join(format!("{}.qif", p[0])));
    let config = EncoderConfig::default().danger_index_cookies(true);
    let n = encode_qif(
        &lists,
        p[1].parse().unwrap(),
        p[2].parse().unwrap(),
        p[3] == "1",
        config,
    );
    println!("total {n}");
}
