//! qlog files on loopback (quay-transport's `qlog` feature): a known exchange (a GET, a
//! WebTransport session with a stream, a datagram each way and a close with a code and reason)
//! with a qlog directory on both sides, then the files read back. Each must be JSON-SEQ
//! (RFC 7464: every record is 0x1E, JSON, newline), start with quinn's header record, hold only
//! events with the fields draft-ietf-quic-qlog-main-schema §6 requires (`time`, `name`,
//! `data`), and have the exchange's events in order. Without a qlog directory (and without
//! `$QLOGDIR`) no connection has a qlog.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
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
