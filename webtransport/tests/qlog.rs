//! qlog files on loopback (quay-transport's `qlog` feature): a known exchange (a GET, a
//! WebTransport session with a stream, a datagram each way and a close with a code and reason)
//! with a qlog directory on both sides, then the files read back. Each must be JSON-SEQ
//! (RFC 7464: every record is 0x1E, JSON, newline), start with quinn's header record, hold only
//! events with the fields draft-ietf-quic-qlog-main-schema §6 requires (`time`, `name`,
//! `data`), and have the exchange's events in order. Without a qlog directory (and without
//! `$QLOGDIR`) no connection has a qlog.
//!
//! A plain HTTP/3 exchange (quay-h3's client and server, whose events the WebTransport ones
//! sit on) checks the frames in both directions: DATA with its length, trailers, the GREASE
//! frames, the server's GOAWAY at a graceful shutdown, and the QPACK dynamic table's changes,
//! the client encoder's mirrored by the server's decoder.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use quay_transport::{ClientBuilder, Identity, ServerBuilder, Trust};
use quay_webtransport::{Client, Config, Server, SessionError, SessionOptions};
use serde_json::Value;

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

/// Runs the exchange against a server whose builder has `server_dir` as its qlog directory,
/// from a client whose builder has `client_dir`; returns whether each side's connection had a
/// qlog.
async fn exchange(server_dir: Option<&Path>, client_dir: Option<&Path>) -> (bool, bool) {
    let identity = Identity::self_signed(["localhost"]).expect("a certificate");
    let hash = identity.certificate_hash();
    let mut server_builder = ServerBuilder::new(identity);
    if let Some(dir) = server_dir {
        server_builder = server_builder.qlog_dir(dir);
    }
    let endpoint = server_builder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let acceptor = server_builder.acceptor().unwrap();
    let server = Server::from_endpoint_with(endpoint, acceptor, Config::default());
    let port = server.local_addr().unwrap().port();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(async move {
        let request = server.accept().await.expect("a session request");
        let had_qlog = request.qlog().is_some();
        let session = request.ok().await.expect("accepting");
        // Echo one stream and one datagram.
        let (mut send, mut recv) = session.accept_bi().await.unwrap().expect("a stream");
        let data = recv.read_to_end(1024).await.expect("the stream's data");
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        let datagram = session.read_datagram().await.expect("a datagram");
        session.send_datagram(datagram).unwrap();
        let end = session.closed().await;
        let _ = ended_tx.send(end);
        // The server lives until the client's connection is gone.
        server.endpoint().wait_idle().await;
        had_qlog
    });

    let mut client_builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![hash]));
    if let Some(dir) = client_dir {
        client_builder = client_builder.qlog_dir(dir);
    }
    let url = format!("https://localhost:{port}/session");
    let client = bounded(Client::connect(&url, &client_builder, Config::default()))
        .await
        .expect("connecting");
    let client_had_qlog = client.h3().qlog().is_some();

    // A GET: the WebTransport server answers plain requests with 404.
    let mut get = Request::new(());
    *get.method_mut() = Method::GET;
    *get.uri_mut() = format!("https://localhost:{port}/page").parse().unwrap();
    let mut stream = bounded(client.h3().send_request(get)).await.unwrap();
    stream.finish().unwrap();
    let response = bounded(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), 404);

    let session = bounded(client.open(&url, &SessionOptions::default()))
        .await
        .expect("opening the session");
    let (mut send, mut recv) = bounded(session.open_bi()).await.unwrap();
    send.write_all(b"hello").await.unwrap();
    send.finish().unwrap();
    let echoed = bounded(recv.read_to_end(1024)).await.unwrap();
    assert_eq!(echoed, b"hello");
    session.send_datagram(Bytes::from_static(b"ping")).unwrap();
    // A datagram may be lost even on loopback: send again until the echo comes (bounded).
    let mut echo = None;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_millis(200), session.read_datagram()).await {
            Ok(datagram) => {
                echo = Some(datagram.unwrap());
                break;
            }
            Err(_) => session.send_datagram(Bytes::from_static(b"ping")).unwrap(),
        }
    }
    assert_eq!(echo.as_deref(), Some(&b"ping"[..]));
    bounded(session.close(7, "done")).await;
    let end = bounded(ended).await.unwrap();
    assert!(
        matches!(&end, SessionError::PeerClosed { code: 7, reason } if reason == "done"),
        "{end:?}"
    );
    drop(session);
    client.h3().close(quay_h3::Code::H3_NO_ERROR, b"");
    bounded(client.wait_idle()).await;
    let server_had_qlog = bounded(serving).await.unwrap();
    (server_had_qlog, client_had_qlog)
}

/// The one file in `dir` whose name ends with `suffix`.
fn file_ending(dir: &Path, suffix: &str) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(files.len(), 1, "{files:?} in {}", dir.display());
    files.into_iter().next().unwrap()
}

/// The records of a JSON-SEQ file (RFC 7464 §2.2): each is 0x1E, a JSON text, and a newline.
fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read(path).unwrap();
    assert_eq!(
        text.first(),
        Some(&0x1e),
        "{} starts with RS",
        path.display()
    );
    assert_eq!(
        text.last(),
        Some(&b'\n'),
        "{} ends a record",
        path.display()
    );
    text[1..]
        .split(|&b| b == 0x1e)
        .map(|record| {
            assert_eq!(record.last(), Some(&b'\n'), "a record ends with LF");
            serde_json::from_slice(record)
                .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(record)))
        })
        .collect()
}

/// Checks the header and every event's required fields (draft-ietf-quic-qlog-main-schema §6:
/// `time`, `name`, `data`); returns the events.
fn events(path: &Path) -> Vec<Value> {
    let mut records = records(path).into_iter();
    let header = records.next().expect("a header record");
    assert_eq!(header["qlog_format"], "JSON-SEQ", "{header}");
    assert!(header["trace"].is_object(), "{header}");
    let events: Vec<_> = records.collect();
    for event in &events {
        assert!(event["time"].is_number(), "{event}");
        assert!(
            event["name"].as_str().is_some_and(|n| n.contains(':')),
            "{event}"
        );
        assert!(event["data"].is_object(), "{event}");
    }
    events
}

/// Finds each of `expected` (a name and a check of the event) in `events`, in order; fails
/// with the names seen if one is missing.
/// An event's name and a check of its data.
type Expected<'a> = (&'a str, &'a dyn Fn(&Value) -> bool);

fn assert_in_order(events: &[Value], expected: &[Expected<'_>]) {
    let mut rest = events.iter();
    for (name, check) in expected {
        let found = rest.any(|event| event["name"] == *name && check(&event["data"]));
        if !found {
            let names: Vec<_> = events.iter().map(|e| e["name"].to_string()).collect();
            panic!("no {name} (as expected, in order) among {names:?}");
        }
    }
}

fn initiator(which: &'static str) -> impl Fn(&Value) -> bool {
    move |data| data["initiator"] == which
}

/// A HEADERS frame that carries `name: value`.
fn headers_with(name: &'static str, value: &'static str) -> impl Fn(&Value) -> bool {
    move |data| {
        data["frame"]["frame_type"] == "headers"
            && data["frame"]["headers"]
                .as_array()
                .is_some_and(|h| h.iter().any(|f| f["name"] == name && f["value"] == value))
    }
}

fn closed_with(initiator: &'static str) -> impl Fn(&Value) -> bool {
    move |data| data["initiator"] == initiator && data["code"] == 7 && data["reason"] == "done"
}

/// A WT_CLOSE_SESSION capsule: 4 bytes of code and the reason "done".
fn close_capsule(data: &Value) -> bool {
    data["capsule"]["capsule_type"] == "wt_close_session"
        && data["capsule"]["raw"]["payload_length"] == 8
}

fn any(_: &Value) -> bool {
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_write_a_qlog_with_the_exchange_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = (dir.path().join("server"), dir.path().join("client"));
    let (server_had, client_had) = exchange(Some(&server_dir), Some(&client_dir)).await;
    assert!(server_had && client_had);

    let server_file = file_ending(&server_dir, "_server.sqlog");
    let client_file = file_ending(&client_dir, "_client.sqlog");
    // Both are named by the client's original destination connection ID.
    let odcid = |path: &Path| {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        name.split('_').next().unwrap().to_owned()
    };
    assert_eq!(odcid(&server_file), odcid(&client_file));
    assert!(odcid(&server_file).len() >= 16);

    let server = events(&server_file);
    let client = events(&client_file);
    // quinn's transport events share the file.
    for events in [&server, &client] {
        assert!(events.iter().any(|e| e["name"] == "transport:packet_sent"));
        assert!(
            events
                .iter()
                .any(|e| e["name"] == "transport:packet_received")
        );
    }
    // Our SETTINGS go out when our control stream opens, and the peer's may have arrived by
    // then: the two are in order only with their own frames.
    let settings = |data: &Value| data["frame"]["frame_type"] == "settings";
    let control = |data: &Value| data["stream_type"] == "control";
    for events in [&server, &client] {
        assert_in_order(
            events,
            &[
                ("http3:stream_type_set", &|d: &Value| {
                    control(d) && initiator("local")(d)
                }),
                ("http3:frame_created", &settings),
                ("http3:parameters_set", &initiator("local")),
            ],
        );
        assert_in_order(
            events,
            &[
                ("http3:stream_type_set", &|d: &Value| {
                    control(d) && initiator("remote")(d)
                }),
                ("http3:frame_parsed", &settings),
                ("http3:parameters_set", &initiator("remote")),
            ],
        );
    }
    assert_in_order(
        &server,
        &[
            ("http3:frame_parsed", &headers_with(":method", "GET")),
            ("http3:frame_created", &headers_with(":status", "404")),
            ("http3:frame_parsed", &headers_with(":method", "CONNECT")),
            ("quay-webtransport:session_opened", &initiator("remote")),
            ("quay-webtransport:session_accepted", &initiator("local")),
            ("http3:datagram_parsed", &any),
            ("http3:datagram_created", &any),
            ("http:capsule_parsed", &close_capsule),
            ("quay-webtransport:session_closed", &closed_with("remote")),
        ],
    );
    assert_in_order(
        &client,
        &[
            ("http3:frame_created", &headers_with(":method", "GET")),
            ("http3:frame_parsed", &headers_with(":status", "404")),
            ("http3:frame_created", &headers_with(":method", "CONNECT")),
            ("quay-webtransport:session_opened", &initiator("local")),
            ("http3:frame_parsed", &headers_with(":status", "200")),
            ("quay-webtransport:session_accepted", &initiator("remote")),
            ("http3:datagram_created", &any),
            ("http3:datagram_parsed", &any),
            ("quay-webtransport:session_closed", &closed_with("local")),
            ("http:capsule_created", &close_capsule),
        ],
    );
    // The settings a side sent are the ones the other parsed.
    let sent = server.iter().find(|e| e["name"] == "http3:parameters_set");
    let parsed = client
        .iter()
        .find(|e| e["name"] == "http3:parameters_set" && e["data"]["initiator"] == "remote");
    let fields = |e: &Value| {
        let mut data = e["data"].clone();
        data.as_object_mut().unwrap().remove("initiator");
        data
    };
    assert_eq!(fields(sent.unwrap()), fields(parsed.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_qlog_directory_no_connection_has_a_qlog() {
    // The fallback is the environment's: this test means nothing with it set.
    assert!(
        std::env::var_os("QLOGDIR").is_none_or(|dir| dir.is_empty()),
        "unset QLOGDIR to run this test"
    );
    let (server_had, client_had) = exchange(None, None).await;
    assert!(!server_had && !client_had);
}

/// The body and trailers each side of the HTTP/3 exchange sends.
const REQUEST_BODY: &[u8] = b"hello";
const RESPONSE_BODY: &[u8] = b"response body!";

fn trailers(name: &'static str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(name, HeaderValue::from_static("end"));
    trailers
}

/// One request of the HTTP/3 exchange: a POST to `path` with `x-token: token` when given,
/// [`REQUEST_BODY`] and an `x-trailer`, answered with [`RESPONSE_BODY`] and an
/// `x-reply-trailer`.
async fn round(client: &quay_h3::client::Connection, port: u16, path: &str, token: Option<&str>) {
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = format!("https://localhost:{port}{path}").parse().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("x-token", HeaderValue::from_str(token).unwrap());
    }
    let mut stream = bounded(client.send_request(request)).await.unwrap();
    bounded(stream.send_data(Bytes::from_static(REQUEST_BODY)))
        .await
        .unwrap();
    bounded(stream.send_trailers(trailers("x-trailer")))
        .await
        .unwrap();
    let response = bounded(stream.recv_response()).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = Vec::new();
    // Bounded by the response: the server sends one piece.
    while let Some(piece) = bounded(stream.recv_data()).await.unwrap() {
        body.extend_from_slice(&piece);
    }
    assert_eq!(body, RESPONSE_BODY);
    let received = bounded(stream.recv_trailers()).await.unwrap();
    assert_eq!(received, Some(trailers("x-reply-trailer")));
}

/// The server of the HTTP/3 exchange: answers each request of its one connection as
/// [`round`] expects until `done`, then shuts the connection down gracefully (GOAWAY,
/// RFC 9114 §5.2).
async fn serve_rounds(server: quay_h3::Server, mut done: tokio::sync::oneshot::Receiver<()>) {
    let conn = server.accept().await.expect("a connection");
    loop {
        let accepted = tokio::select! {
            accepted = conn.accept() => accepted,
            _ = &mut done => break,
        };
        let Ok(Some((_request, mut stream))) = accepted else {
            break;
        };
        let mut body = Vec::new();
        // Bounded by the request: the client sends one piece.
        while let Some(piece) = stream.recv_data().await.unwrap() {
            body.extend_from_slice(&piece);
        }
        assert_eq!(body, REQUEST_BODY);
        let received = stream.recv_trailers().await.unwrap();
        assert_eq!(received, Some(trailers("x-trailer")));
        stream.send_response(Response::new(())).await.unwrap();
        stream
            .send_data(Bytes::from_static(RESPONSE_BODY))
            .await
            .unwrap();
        stream
            .send_trailers(trailers("x-reply-trailer"))
            .await
            .unwrap();
    }
    conn.shutdown(Duration::from_secs(5)).await;
    server.endpoint().wait_idle().await;
}

/// A frame event's data for a frame of `frame_type` on `stream_id`.
fn frame_on(frame_type: &'static str, stream_id: u64) -> impl Fn(&Value) -> bool {
    move |data| data["stream_id"] == stream_id && data["frame"]["frame_type"] == frame_type
}

/// A DATA frame on `stream_id` with `payload_length` bytes (and a 2-byte header: type 0 and a
/// one-byte length, RFC 9114 §7.1).
fn data_frame(stream_id: u64, payload_length: usize) -> impl Fn(&Value) -> bool {
    move |data| {
        let raw = &data["frame"]["raw"];
        frame_on("data", stream_id)(data)
            && raw["payload_length"] == payload_length
            && raw["length"] == payload_length + 2
    }
}

/// The `quay-qpack:table_*` events of `table` ("encoder" or "decoder"), each as its name and
/// its data without the table.
fn table_events(events: &[Value], table: &str) -> Vec<(String, Value)> {
    events
        .iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("quay-qpack:table_"))
                && e["data"]["table"] == table
        })
        .map(|e| {
            let mut data = e["data"].clone();
            data.as_object_mut().unwrap().remove("table");
            (e["name"].as_str().unwrap().to_owned(), data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_frames_and_qpack_table_changes_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = (dir.path().join("server"), dir.path().join("client"));
    let identity = Identity::self_signed(["localhost"]).expect("a certificate");
    let hash = identity.certificate_hash();
    let server_builder = ServerBuilder::new(identity).qlog_dir(&server_dir);
    let endpoint = server_builder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // A small table: the client's encoder uses what the server's decoder allows (RFC 9204
    // §3.2.3). 160 bytes hold `:authority` (32 + 10 + 15 bytes, §3.2.1) and one `x-token`
    // (32 + 7 + 40) but leave less than the quarter quay's encoder keeps free, so each new
    // token pushes the oldest entries out.
    let config = quay_h3::Config::default().with_qpack_max_table_capacity(160);
    let server = quay_h3::Server::from_endpoint(endpoint, config)
        .with_acceptor(server_builder.acceptor().unwrap());
    let port = server.local_addr().unwrap().port();
    let (done, done_rx) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(serve_rounds(server, done_rx));

    let client_builder = ClientBuilder::new()
        .trust(Trust::CertificateHashes(vec![hash]))
        .qlog_dir(&client_dir);
    let url = format!("https://localhost:{port}/");
    let client = bounded(quay_h3::client::Connection::connect(
        &url,
        &client_builder,
        quay_h3::Config::default(),
    ))
    .await
    .expect("connecting");
    let client_file = file_ending(&client_dir, "_client.sqlog");
    // The first section never inserts (quay-qpack's encoder docs); later ones insert their
    // `x-token`, each a new value that needs the previous one evicted, which the encoder may
    // do once the server acknowledged it (RFC 9204 §2.1.1). Go on until the client logged an
    // eviction, then one more round so its insert is surely used.
    round(&client, port, "/first", None).await;
    let mut rounds = 1;
    let evicted = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        text.contains("quay-qpack:table_evict")
    };
    while rounds < 20 && !evicted(&client_file) {
        let token = format!("{rounds:0>40}");
        round(&client, port, &format!("/r{rounds}"), Some(&token)).await;
        rounds += 1;
    }
    assert!(evicted(&client_file), "no eviction in {rounds} rounds");
    round(&client, port, "/last", Some(&format!("{rounds:0>40}"))).await;
    rounds += 1;
    done.send(()).unwrap();
    // The server's GOAWAY makes the idle client close (RFC 9114 §5.2).
    bounded(client.closed()).await;
    drop(client);
    bounded(serving).await.unwrap();

    let server = events(&file_ending(&server_dir, "_server.sqlog"));
    let client = events(&client_file);
    // Request stream 0, both ways: the GREASE frame before the first HEADERS (RFC 9114
    // §7.2.8), the head, the body as one DATA frame with its length, the trailers.
    let reserved = |data: &Value| {
        frame_on("reserved", 0)(data)
            && data["frame"]["frame_type_bytes"]
                .as_u64()
                .is_some_and(|ty| ty >= 0x21 && (ty - 0x21) % 0x1f == 0)
            && data["frame"]["raw"]["payload_length"] == 4
    };
    let request_side: [&dyn Fn(&Value) -> bool; 4] = [
        &reserved,
        &headers_with(":method", "POST"),
        &data_frame(0, REQUEST_BODY.len()),
        &headers_with("x-trailer", "end"),
    ];
    let response_side: [&dyn Fn(&Value) -> bool; 4] = [
        &reserved,
        &headers_with(":status", "200"),
        &data_frame(0, RESPONSE_BODY.len()),
        &headers_with("x-reply-trailer", "end"),
    ];
    for (sender, receiver, frames) in [
        (&client, &server, &request_side),
        (&server, &client, &response_side),
    ] {
        let created: Vec<Expected<'_>> = frames
            .iter()
            .map(|check| ("http3:frame_created", *check))
            .collect();
        let parsed: Vec<Expected<'_>> = frames
            .iter()
            .map(|check| ("http3:frame_parsed", *check))
            .collect();
        assert_in_order(sender, &created);
        assert_in_order(receiver, &parsed);
    }
    // Every request's body, each way: one DATA frame per request stream.
    for (events, name) in [
        (&client, "http3:frame_created"),
        (&server, "http3:frame_parsed"),
    ] {
        let data: Vec<_> = events
            .iter()
            .filter(|e| e["name"] == name && e["data"]["frame"]["frame_type"] == "data")
            .map(|e| e["data"]["stream_id"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..rounds).map(|i| i * 4).collect();
        assert_eq!(data, expected, "{name}");
    }
    // The GREASE frame after each side's SETTINGS on its control stream, and the server's
    // GOAWAY naming the first request it did not accept (RFC 9114 §5.2).
    let control_reserved = |data: &Value| {
        data["frame"]["frame_type"] == "reserved" && data["stream_id"].as_u64() != Some(0)
    };
    let goaway =
        |data: &Value| data["frame"]["frame_type"] == "goaway" && data["frame"]["id"] == rounds * 4;
    let settings = |data: &Value| data["frame"]["frame_type"] == "settings";
    for (sender, receiver) in [(&client, &server), (&server, &client)] {
        assert_in_order(
            sender,
            &[
                ("http3:frame_created", &settings),
                ("http3:frame_created", &control_reserved),
            ],
        );
        assert_in_order(
            receiver,
            &[
                ("http3:frame_parsed", &settings),
                ("http3:frame_parsed", &control_reserved),
            ],
        );
    }
    assert_in_order(&server, &[("http3:frame_created", &goaway)]);
    assert_in_order(&client, &[("http3:frame_parsed", &goaway)]);
    // The client encoder's table changes: the capacity first (RFC 9204 §3.2.3), inserts of
    // `x-token` and an eviction, by absolute index (§3.2.4). The server's decoder applies the
    // same instructions, so it logs the same changes in the same order (up to the ones still
    // on the way at the close).
    let encoder = table_events(&client, "encoder");
    let decoder = table_events(&server, "decoder");
    assert_eq!(
        encoder.first(),
        Some(&(
            "quay-qpack:table_capacity".to_owned(),
            serde_json::json!({"capacity": 160})
        ))
    );
    assert!(
        encoder
            .iter()
            .any(|(name, data)| name == "quay-qpack:table_insert"
                && data["name"] == "x-token"
                && data["value"].as_str().is_some_and(|v| v.len() == 40)),
        "{encoder:?}"
    );
    let evictions = |table: &[(String, Value)]| {
        table
            .iter()
            .filter(|(name, _)| name == "quay-qpack:table_evict")
            .count()
    };
    assert!(
        evictions(&encoder) > 0 && evictions(&decoder) > 0,
        "{decoder:?}"
    );
    assert!(encoder.starts_with(&decoder), "{encoder:?}\n{decoder:?}");
    // Each eviction is of the oldest entry, in order (§3.2.2).
    let evicted: Vec<u64> = encoder
        .iter()
        .filter(|(name, _)| name == "quay-qpack:table_evict")
        .map(|(_, data)| data["index"].as_u64().unwrap())
        .collect();
    assert_eq!(evicted, (0..evicted.len() as u64).collect::<Vec<_>>());
}

/// A client on an endpoint of its own making (`ClientBuilder::build`, shared by its
/// connections) opens each connection through the builder's `Connector` and hands the qlog it
/// returns to `Client::with_qlog`: the file holds the session's events next to quinn's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_from_a_connector_logs_through_with_qlog() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::self_signed(["localhost"]).expect("a certificate");
    let hash = identity.certificate_hash();
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), identity, Config::default()).unwrap();
    let addr = server.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        let request = server.accept().await.expect("a session request");
        let session = request.ok().await.expect("accepting");
        let _ = session.closed().await;
        server.endpoint().wait_idle().await;
    });

    let builder = ClientBuilder::new()
        .trust(Trust::CertificateHashes(vec![hash]))
        .qlog_dir(dir.path());
    let endpoint = builder.build().unwrap();
    let connector = builder.connector().unwrap();
    let (connecting, qlog) = connector.connect(&endpoint, addr, "localhost").unwrap();
    assert!(qlog.is_some());
    let connection = bounded(connecting).await.expect("the handshake");
    let client = Client::with_qlog(connection, qlog, Config::default());
    let url = format!("https://localhost:{}/session", addr.port());
    let session = bounded(client.open(&url, &SessionOptions::default()))
        .await
        .expect("opening the session");
    bounded(session.close(7, "done")).await;
    drop(session);
    client.h3().close(quay_h3::Code::H3_NO_ERROR, b"");
    bounded(endpoint.wait_idle()).await;
    bounded(serving).await.unwrap();

    let events = events(&file_ending(dir.path(), "_client.sqlog"));
    assert_in_order(
        &events,
        &[
            ("transport:packet_sent", &any),
            ("http3:frame_created", &headers_with(":method", "CONNECT")),
            ("quay-webtransport:session_opened", &initiator("local")),
            ("quay-webtransport:session_closed", &closed_with("local")),
        ],
    );
}
