//! The `demo` server as a browser sees it: started on free ports, its page fetched over HTTP/1.1,
//! and its sessions driven by quay's WebTransport client, which trusts the printed certificate
//! hash as `serverCertificateHashes` does. Every wait has a deadline, and each test's server is
//! killed when the test ends, pass or fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use quay_tests::browser::{self, BrowserKind, Page};
use quay_transport::{CertificateHash, ClientBuilder, Trust};
use quay_webtransport::{ConnectError, ReadToEndError, Session, StreamError};

const DEMO: &str = env!("CARGO_BIN_EXE_demo");
/// How long the demo may take to print its banner.
const STARTUP: Duration = Duration::from_secs(20);
/// How long one network step (a connection, a reply, a page) may take.
const STEP: Duration = Duration::from_secs(10);

/// A running `demo`, killed on drop.
struct Demo {
    child: Child,
    wt_port: u16,
    http_port: u16,
    hash: CertificateHash,
}

impl Demo {
    /// Starts the demo on two free loopback-tested ports and reads its banner.
    fn start() -> Self {
        let wt_port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|socket| socket.local_addr())
            .expect("a free UDP port")
            .port();
        let http_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free TCP port")
            .port();
        let mut child = Command::new(DEMO)
            .args(["--wt-port", &wt_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("demo starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut demo = Self {
            child,
            wt_port,
            http_port,
            hash: CertificateHash::from_bytes([0; 32]),
        };
        // Drained until the demo exits, so that its prints never block; shown if a test fails.
        let (lines_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("demo: {line}");
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + STARTUP;
        let mut banner = Vec::new();
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the demo prints its certificate hash in time");
            if let Some(hex) = line.strip_prefix("certificate hash: ") {
                demo.hash = hex.parse().expect("64 hex digits");
                break;
            }
            banner.push(line);
        }
        let banner = banner.join("\n");
        assert!(
            banner.contains(&format!("http://localhost:{http_port}")),
            "{banner}"
        );
        assert!(
            banner.contains(&format!("https://localhost:{wt_port}")),
            "{banner}"
        );
        demo
    }

    /// Opens a session at `path`, trusting the demo's certificate by its hash.
    async fn connect(&self, path: &str) -> Result<Session, ConnectError> {
        let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![self.hash]));
        let url = format!("https://127.0.0.1:{}{path}", self.wt_port);
        within(
            "opening a session",
            quay_webtransport::connect(&url, &builder),
        )
        .await
    }

    /// The whole HTTP/1.1 response to `GET path`, head and body.
    fn get(&self, path: &str) -> String {
        let addr = (Ipv4Addr::LOCALHOST, self.http_port).into();
        let mut stream = TcpStream::connect_timeout(&addr, STEP).expect("the page server is up");
        stream.set_read_timeout(Some(STEP)).unwrap();
        stream.set_write_timeout(Some(STEP)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .expect("request sent");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("a whole UTF-8 response in time");
        response
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `future`'s output, or a panic naming `what` after [`STEP`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in {STEP:?}"))
}

/// Sends `message` on a new bidirectional stream and reads the whole answer.
async fn round_trip(session: &Session, message: &[u8]) -> Result<Vec<u8>, ReadToEndError> {
    let (mut send, mut recv) = within("opening a stream", session.open_bi()).await.unwrap();
    // A refused message may be stopped before it is all sent; the answer says what happened.
    if send.write_all(message).await.is_ok() {
        let _ = send.finish();
    }
    within("the echo", recv.read_to_end(1 << 20)).await
}

#[test]
fn page_carries_the_url_and_the_hash() {
    let demo = Demo::start();
    let page = demo.get("/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("cache-control: no-store\r\n"), "{page}");
    let server = format!("\"https://localhost:{}\"", demo.wt_port);
    assert!(page.contains(&server), "{page}");
    let hash = format!("new Uint8Array({})", demo.hash.to_js_array());
    assert!(page.contains(&hash), "{page}");
    assert!(!page.contains("__"), "a placeholder is left: {page}");

    let missing = demo.get("/favicon.ico");
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );
}

#[tokio::test]
async fn echo_answers_streams_and_datagrams() {
    let demo = Demo::start();
    let session = demo.connect("/echo").await.expect("/echo accepted");

    let reply = round_trip(&session, b"hello over a stream").await.unwrap();
    assert_eq!(reply, b"hello over a stream");

    // Over the 64 KiB limit: reset with code 1, and the session goes on.
    let refused = round_trip(&session, &vec![b'x'; 64 * 1024 + 1]).await;
    assert!(
        matches!(refused, Err(ReadToEndError::Stream(StreamError::Reset(1)))),
        "{refused:?}"
    );
    let reply = round_trip(&session, b"still here").await.unwrap();
    assert_eq!(reply, b"still here");

    // Datagrams may be lost: send one every 100 ms until one comes back.
    let echoed = within("a datagram echo", async {
        loop {
            session
                .send_datagram(Bytes::from_static(b"hello as a datagram"))
                .expect("datagram sent");
            let wait = Duration::from_millis(100);
            if let Ok(reply) = tokio::time::timeout(wait, session.read_datagram()).await {
                return reply.expect("the session is open");
            }
        }
    })
    .await;
    assert_eq!(echoed, "hello as a datagram");
    session.close(0, "done");
}

#[tokio::test]
async fn metrics_are_scraped_after_a_session() {
    // The demo exports quay's metrics at /metrics on its page port (Prometheus text format).
    let demo = Demo::start();
    let session = demo.connect("/echo").await.expect("/echo accepted");
    let reply = round_trip(&session, b"counted").await.unwrap();
    assert_eq!(reply, b"counted");
    let scrape = demo.get("/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert!(
        scrape.contains("content-type: text/plain; version=0.0.4"),
        "{scrape}"
    );
    assert!(
        scrape.contains("quay_h3_connections_total{side=\"server\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("quay_h3_connections_open{side=\"server\"} 1"),
        "{scrape}"
    );
    assert!(scrape.contains("quay_h3_handshake_seconds"), "{scrape}");
    // For the record (`--nocapture`): what an operator's scraper sees.
    println!("{scrape}");
    session.close(0, "done");
}

#[tokio::test]
async fn chat_reaches_every_session() {
    let demo = Demo::start();
    let alice = demo.connect("/chat").await.expect("/chat accepted");
    let bob = demo.connect("/chat").await.expect("/chat accepted");

    let mut send = within("opening a stream", alice.open_uni()).await.unwrap();
    within("writing", send.write_all(b"hi, all")).await.unwrap();
    send.finish().unwrap();

    for (name, session) in [("alice", &alice), ("bob", &bob)] {
        let mut recv = within(name, session.accept_uni()).await.unwrap().unwrap();
        let message = within(name, recv.read_to_end(4096)).await.unwrap();
        assert_eq!(message, b"hi, all", "{name}");
    }
}

#[tokio::test]
async fn other_paths_are_refused() {
    let demo = Demo::start();
    match demo.connect("/nope").await {
        Err(ConnectError::Rejected(status)) => assert_eq!(status, StatusCode::NOT_FOUND),
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[cfg(unix)]
#[tokio::test]
async fn ctrl_c_exits_cleanly() {
    let mut demo = Demo::start();
    // A refused session shows the accept loop running, and so listening for Ctrl-C too.
    assert!(demo.connect("/nope").await.is_err());
    let pid = demo.child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status();
    assert!(sent.is_ok_and(|status| status.success()), "kill -INT {pid}");
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = demo.child.try_wait().expect("waiting for the demo") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {STEP:?} after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

/// The checking script added to the demo's page for the live panel (`demo_panel.js`).
const PANEL_JS: &str = include_str!("demo_panel.js");
/// How long the page may take for all the panel's checks.
const PANEL_TIMEOUT: Duration = Duration::from_secs(20);
/// The whole browser run, from its start to the page's last report.
const BROWSER_RUN: Duration = Duration::from_secs(40);

/// The demo's page as the demo serves it, with [`PANEL_JS`] added at its end, run in `browser`
/// from a page server of the test's own (the page's script reports there); every check the
/// script reports must pass. The page still talks WebTransport to the demo.
async fn panel_in(browser: BrowserKind) {
    // One browser at a time, so that two never share this machine's cores.
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _running = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start();
    let response = demo.get("/");
    let (_, page) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    let script = format!(
        "<script>\nconst PANEL_TIMEOUT_MS = {};\n{PANEL_JS}</script>\n</body>",
        PANEL_TIMEOUT.as_millis()
    );
    assert!(page.contains("</body>"), "{page}");
    let page = Page::from_html(&page.replacen("</body>", &script, 1));
    let report = browser::run(browser, page, BROWSER_RUN)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for check in ["panel_echo", "panel_chat", "panel_plot"] {
        match report.passed(check) {
            Ok(detail) => println!("{} {check}: {detail}", browser.name()),
            Err(e) => panic!("{e:#}"),
        }
    }
}

// The page's live panel fills in from the server's stats feed (`quay_examples::panel`): RTT
// above 0, bytes and datagrams each way after an echo and none before it, further samples,
// and a plot drawn on each session's canvas.
#[tokio::test]
async fn panel_fills_in_and_updates_in_chromium() {
    panel_in(BrowserKind::Chromium).await;
}

#[tokio::test]
async fn panel_fills_in_and_updates_in_firefox() {
    panel_in(BrowserKind::Firefox).await;
}
