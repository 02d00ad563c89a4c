//! A restart without a lost connection, with real processes: an `h3-server` serves WebTransport
//! sessions and HTTP/3 requests; a second one joins its port (`--handover`) and takes every new
//! connection; the first, sent SIGTERM, drains (GOAWAY, WT_DRAIN_SESSION) and exits. The 100
//! sessions and 1,000 requests opened before the switch send their second halves after it, and
//! every one must come back whole from the first server; everything opened after must reach
//! the second. Misrouted packets would strand the old connections (the new process does not
//! know them) or have the old process refuse new ones, and fail the test.
//!
//! Loopback only; every wait has a deadline. Needs root (eBPF, and a BPF file system mounted
//! for the test), as CI has.
#![cfg(target_os = "linux")]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use quay_h3::{Code, StreamError};
use quay_transport::{ClientBuilder, Endpoint, Identity, Trust};
use quay_webtransport::{Client, Config, Session, SessionOptions};
use tokio::task::JoinSet;

const SERVER: &str = env!("CARGO_BIN_EXE_h3-server");
/// How long a server may take to start, and any one wait of the test.
const WAIT: Duration = Duration::from_secs(15);
/// Sessions and requests in flight across the switch.
const SESSIONS: usize = 100;
const REQUESTS: usize = 1000;
/// Connections that carry the requests (50 each), and client ports the connections use.
const REQUEST_CONNECTIONS: usize = 20;
const CLIENT_PORTS: usize = 20;
/// Each body: half before the switch, half after.
const HALF: usize = 600;

/// A BPF file system on a temporary directory, unmounted on drop.
struct BpfFs {
    dir: tempfile::TempDir,
}

impl BpfFs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a BPF file system needs root");
        Self { dir }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A running `h3-server`, killed on drop; its stdout lines are kept.
struct ServerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(name: &'static str, listen: SocketAddr, handover: &Path, pem: &Path) -> Self {
        let handover = [OsStr::new("--handover"), handover.as_os_str()];
        Self::start_with(name, listen, &handover, "10", pem)
    }

    /// Starts a server with `extra` arguments and a drain timeout of `drain_timeout` seconds.
    fn start_with(
        name: &'static str,
        listen: SocketAddr,
        extra: &[&OsStr],
        drain_timeout: &str,
        pem: &Path,
    ) -> Self {
        let mut child = Command::new(SERVER)
            .arg("--listen")
            .arg(listen.to_string())
            .args(["--workers", "2", "--drain-timeout", drain_timeout])
            .args(extra)
            .arg("--cert")
            .arg(pem.join("cert.pem"))
            .arg("--key")
            .arg(pem.join("key.pem"))
            .arg(pem)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("h3-server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if !line.contains(" /echo") {
                    println!("{name}: {line}");
                }
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut server = Self {
            child,
            lines,
            log,
            addr: listen,
        };
        // `listening on` comes once the server takes new connections.
        let line = server.wait_for(name, "listening on ");
        server.addr = line["listening on ".len()..].parse().unwrap();
        server
    }

    /// Waits for a stdout line starting with `prefix` and returns it.
    fn wait_for(&mut self, name: &str, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(error) => panic!("{name}: no `{prefix}` line: {error}"),
            }
        }
    }

    /// Sends SIGTERM: drain.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit successfully.
    fn wait_exit(&mut self, name: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{name} exited with {status}");
                return;
            }
            // std's `Child` has no wait with a deadline: poll its exit, bounded by WAIT.
            thread::sleep(Duration::from_millis(20));
        }
        panic!("{name} did not exit within {WAIT:?}");
    }

    /// How many logged lines contain `text`.
    fn count(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|line| line.contains(text)).count()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `future`, or a panic after [`WAIT`].
async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out"))
}

/// The body of request or stream `number`: its number, then filler.
fn body(number: usize) -> Vec<u8> {
    let mut body = format!("{number:08}").into_bytes();
    body.resize(2 * HALF, b'a' + (number % 26) as u8);
    body
}

async fn connect(endpoint: &Endpoint, addr: SocketAddr) -> Client {
    let url = format!("https://127.0.0.1:{}/", addr.port());
    bounded(
        "connect",
        Client::connect_on(endpoint, &url, Config::default()),
    )
    .await
    .expect("connects")
}

async fn open_session(endpoint: &Endpoint, addr: SocketAddr) -> (Client, Session) {
    let client = connect(endpoint, addr).await;
    let url = format!("https://127.0.0.1:{}/echo", addr.port());
    let session = bounded("session", client.open(&url, &SessionOptions::default()))
        .await
        .expect("the session opens");
    (client, session)
}

/// A `POST /echo` with the first half of its body sent.
async fn start_request(
    client: &Client,
    addr: SocketAddr,
    number: usize,
) -> Result<quay_h3::client::RequestStream, StreamError> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("https://127.0.0.1:{}/echo", addr.port()))
        .header("content-length", 2 * HALF)
        .body(())
        .unwrap();
    let mut stream = client.h3().send_request(request).await?;
    stream
        .send_data(Bytes::from(body(number)[..HALF].to_vec()))
        .await?;
    Ok(stream)
}

/// Sends the second half of request `number`, then reads the answer and checks it.
async fn finish_request(
    mut stream: quay_h3::client::RequestStream,
    number: usize,
) -> Result<(), StreamError> {
    stream
        .send_data(Bytes::from(body(number)[HALF..].to_vec()))
        .await?;
    stream.finish()?;
    let response = stream.recv_response().await?;
    assert_eq!(response.status(), StatusCode::OK, "request {number}");
    let mut echoed = Vec::new();
    while let Some(chunk) = stream.recv_data().await? {
        echoed.extend_from_slice(&chunk);
    }
    assert!(echoed == body(number), "request {number}: wrong echo");
    Ok(())
}

/// One whole request on a fresh connection.
async fn whole_request(endpoint: Endpoint, addr: SocketAddr, number: usize) {
    let client = connect(&endpoint, addr).await;
    let stream = bounded("request", start_request(&client, addr, number))
        .await
        .unwrap_or_else(|error| panic!("request {number}: {error}"));
    bounded("request", finish_request(stream, number))
        .await
        .unwrap_or_else(|error| panic!("request {number}: {error}"));
    client.h3().close(Code::H3_NO_ERROR, b"");
}

/// Echoes one stream of `session`, whole.
async fn echo_on(session: &Session, number: usize) {
    let (mut send, mut recv) = bounded("stream", session.open_bi()).await.unwrap();
    send.write_all(&body(number)).await.unwrap();
    send.finish().unwrap();
    let echoed = bounded("echo", recv.read_to_end(4 * HALF)).await.unwrap();
    assert!(echoed == body(number), "session {number}: wrong echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_over_and_the_old_one_drains_losing_nothing() {
    let started = Instant::now();
    let bpf = BpfFs::mount();
    let handover = bpf.dir.path().join("port");
    let pem = tempfile::tempdir().unwrap();
    let identity = Identity::self_signed(["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(pem.path().join("cert.pem"), identity.certificate_pem()).unwrap();
    std::fs::write(pem.path().join("key.pem"), identity.private_key_pem()).unwrap();
    let trust = Trust::CertificateHashes(vec![identity.certificate_hash()]);

    let mut old =
        ServerProcess::start("old", "127.0.0.1:0".parse().unwrap(), &handover, pem.path());
    let addr = old.addr;
    let endpoints: Vec<Endpoint> = (0..CLIENT_PORTS)
        .map(|_| {
            ClientBuilder::new()
                .trust(trust.clone())
                .bind("127.0.0.1:0".parse().unwrap())
                .unwrap()
        })
        .collect();

    // Before the switch: 100 sessions, each with a stream half sent; 1,000 requests over 20
    // connections, each with half its body sent.
    let mut opening = JoinSet::new();
    for number in 0..SESSIONS {
        let endpoint = endpoints[number % CLIENT_PORTS].clone();
        opening.spawn(async move {
            let (client, session) = open_session(&endpoint, addr).await;
            let (mut send, recv) = bounded("stream", session.open_bi()).await.unwrap();
            send.write_all(&body(number)[..HALF]).await.unwrap();
            (number, client, session, send, recv)
        });
    }
    let sessions = opening.join_all().await;
    let mut request_clients = Vec::new();
    for number in 0..REQUEST_CONNECTIONS {
        request_clients.push(connect(&endpoints[number % CLIENT_PORTS], addr).await);
    }
    let mut starting = JoinSet::new();
    for number in 0..REQUESTS {
        let client = request_clients[number % REQUEST_CONNECTIONS].clone();
        starting.spawn(async move {
            let stream = bounded("request", start_request(&client, addr, number)).await;
            (number, stream)
        });
    }
    let requests = starting.join_all().await;

    println!("before the switch: {:?}", started.elapsed());
    // The switch: the new process joins and takes new connections, the old one drains.
    let mut new = ServerProcess::start("new", addr, &handover, pem.path());
    assert_eq!(new.addr, addr);
    old.terminate();
    old.wait_for("old", "draining");

    // After it: every stream and request finishes; each session hears WT_DRAIN_SESSION.
    let mut finishing = JoinSet::new();
    for (number, client, session, mut send, mut recv) in sessions {
        finishing.spawn(async move {
            send.write_all(&body(number)[HALF..]).await.unwrap();
            send.finish().unwrap();
            let echoed = bounded("echo", recv.read_to_end(4 * HALF)).await.unwrap();
            assert!(echoed == body(number), "session {number}: wrong echo");
            bounded("WT_DRAIN_SESSION", session.drained()).await;
            bounded("session close", session.close(0, "drained")).await;
            client.h3().close(Code::H3_NO_ERROR, b"");
            0
        });
    }
    for (number, stream) in requests {
        let endpoint = endpoints[number % CLIENT_PORTS].clone();
        finishing.spawn(async move {
            let finished = match stream {
                Ok(stream) => bounded("request", finish_request(stream, number)).await,
                Err(error) => Err(error),
            };
            match finished {
                Ok(()) => 0,
                // Refused unprocessed by the draining server (RFC 9114 §4.1.1, §5.2; a stop
                // while the body was still going counts too): sent again, to the new one.
                Err(error) if error.is_retryable() => {
                    whole_request(endpoint, addr, number).await;
                    1
                }
                Err(error) => panic!("request {number} lost: {error}"),
            }
        });
    }
    // Meanwhile new sessions and requests, which must all reach the new process.
    for number in 0..10 {
        let endpoint = endpoints[number % CLIENT_PORTS].clone();
        finishing.spawn(async move {
            let (client, session) = open_session(&endpoint, addr).await;
            echo_on(&session, 5000 + number).await;
            bounded("session close", session.close(0, "done")).await;
            client.h3().close(Code::H3_NO_ERROR, b"");
            0
        });
    }
    for number in 0..100 {
        let endpoint = endpoints[number % CLIENT_PORTS].clone();
        finishing.spawn(async move {
            whole_request(endpoint, addr, 10_000 + number).await;
            0
        });
    }
    let retried: usize = bounded("the switch", finishing.join_all())
        .await
        .into_iter()
        .sum();
    for client in &request_clients {
        client.h3().close(Code::H3_NO_ERROR, b"");
    }

    // The old process ends by itself once its clients have closed.
    old.wait_exit("old");
    assert_eq!(old.count("drained"), 1);
    new.terminate();
    new.wait_exit("new");

    // Who served what: the old process every session and request from before the switch
    // (bar any it refused unprocessed), the new one everything after.
    let old_requests = old.count("POST /echo 200");
    let new_requests = new.count("POST /echo 200");
    println!(
        "old: {old_requests} requests, {} sessions; new: {new_requests} requests, {} sessions; \
         {retried} retried; {:?}",
        old.count("CONNECT /echo"),
        new.count("CONNECT /echo"),
        started.elapsed()
    );
    assert_eq!(old.count("CONNECT /echo"), SESSIONS);
    assert_eq!(new.count("CONNECT /echo"), 10);
    assert_eq!(old_requests, REQUESTS - retried);
    assert_eq!(new_requests, 100 + retried);
    assert!(retried < REQUESTS / 10, "{retried} requests retried");
    for endpoint in endpoints {
        endpoint.close(0u32.into(), b"done");
    }
}

// The drain is bounded: clients that neither finish nor close are closed at the drain timeout,
// and the process exits (here without a successor, and without --handover: draining needs no
// eBPF).
#[tokio::test]
async fn a_drain_ends_at_its_timeout_when_clients_linger() {
    let pem = tempfile::tempdir().unwrap();
    let identity = Identity::self_signed(["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(pem.path().join("cert.pem"), identity.certificate_pem()).unwrap();
    std::fs::write(pem.path().join("key.pem"), identity.private_key_pem()).unwrap();
    let trust = Trust::CertificateHashes(vec![identity.certificate_hash()]);
    let mut server = ServerProcess::start_with(
        "server",
        "127.0.0.1:0".parse().unwrap(),
        &[],
        "1",
        pem.path(),
    );
    let endpoint = ClientBuilder::new()
        .trust(trust)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let (client, session) = open_session(&endpoint, server.addr).await;
    // A request whose body never ends, and a session that never closes.
    let stream = bounded("request", start_request(&client, server.addr, 1))
        .await
        .unwrap();
    let started = Instant::now();
    server.terminate();
    server.wait_for("server", "draining");
    bounded("WT_DRAIN_SESSION", session.drained()).await;
    bounded("the close", session.closed()).await;
    server.wait_exit("server");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the drain took {took:?}");
    assert_eq!(server.count("drained"), 1);
    drop(stream);
}
