//! `wt-interop` against itself, run the way the QUIC interop runner runs a WebTransport client
//! and server: each side gets the runner's environment and its own `www`, `downloads` and
//! `certs` directories (temporary ones here), on loopback. Every test case of the runner is
//! covered, and every saved file is compared byte for byte with its source.
//!
//! Every wait has a deadline, and a process still running when its test ends is killed.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use quay_transport::{ClientBuilder, Identity, Trust};
use quay_webtransport::Session;
use tempfile::TempDir;

const PROGRAM: &str = env!("CARGO_BIN_EXE_wt-interop");
/// How long the server may take to print its address.
const STARTUP: Duration = Duration::from_secs(20);
/// How long one side may take to finish its part.
const RUN: Duration = Duration::from_secs(30);

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Files for the stream test cases, on two endpoints (one file in a subdirectory).
const STREAM_FILES: &[(&str, usize)] = &[
    ("webtransport1/1k.bin", KIB),
    ("webtransport1/1m.bin", MIB),
    ("webtransport2/dir/64k.bin", 64 * KIB),
];
/// [`STREAM_FILES`] and a 10 MiB one.
const LARGE_STREAM_FILES: &[(&str, usize)] = &[
    ("webtransport1/1k.bin", KIB),
    ("webtransport1/1m.bin", MIB),
    ("webtransport2/dir/64k.bin", 64 * KIB),
    ("webtransport2/10m.bin", 10 * MIB),
];
/// Files small enough for one datagram each.
const DATAGRAM_FILES: &[(&str, usize)] = &[
    ("webtransport1/100.bin", 100),
    ("webtransport1/1000.bin", 1000),
    ("webtransport2/dir/600.bin", 600),
];

#[test]
fn handshake_negotiates_the_clients_first_shared_protocol() {
    let mounts = Mounts::new();
    let mut server = Side::server(&mounts, "handshake", &[])
        .protocols("server-only-1 shared-b shared-a server-only-2")
        .start();
    let urls = server.urls(&["webtransport1", "webtransport2"]);
    let mut client = Side::client(&mounts, "handshake", &urls)
        .protocols("client-only shared-a shared-b")
        .start();
    assert_eq!(client.exit_code(), Some(0));
    // The runner asks for both sessions on one QUIC connection.
    let connections: BTreeSet<String> = (0..2)
        .map(|_| {
            let session = server.line_after("session /", RUN);
            let (_, rest) = session.split_once(" on connection ").expect("a connection");
            rest.split(',').next().expect("an ID").to_owned()
        })
        .collect();
    assert_eq!(connections.len(), 1, "{connections:?}");
    for downloads in [&mounts.client_downloads, &mounts.server_downloads] {
        let protocol = fs::read_to_string(downloads.join("negotiated_protocol.txt"))
            .expect("negotiated_protocol.txt is written");
        assert_eq!(protocol.trim(), "shared-a", "in {}", downloads.display());
    }
    assert_eq!(
        server.terminate(),
        Some(0),
        "a server stopped as the runner does"
    );
}

#[test]
fn transfer_unidirectional_receive() {
    receive("transfer-unidirectional-receive", LARGE_STREAM_FILES);
}

#[test]
fn transfer_bidirectional_receive() {
    receive("transfer-bidirectional-receive", STREAM_FILES);
}

#[test]
fn transfer_datagram_receive() {
    receive("transfer-datagram-receive", DATAGRAM_FILES);
}

#[test]
fn transfer_unidirectional_send() {
    send("transfer-unidirectional-send", STREAM_FILES);
}

#[test]
fn transfer_bidirectional_send() {
    send("transfer-bidirectional-send", LARGE_STREAM_FILES);
}

#[test]
fn transfer_datagram_send() {
    send("transfer-datagram-send", DATAGRAM_FILES);
}

#[test]
fn unknown_test_case_exits_127() {
    let mounts = Mounts::new();
    for side in [
        Side::server(&mounts, "zerortt", &[]),
        Side::client(
            &mounts,
            "zerortt",
            &["https://127.0.0.1:1/webtransport1/a".into()],
        ),
    ] {
        assert_eq!(side.start().exit_code(), Some(127));
    }
}

#[test]
fn a_path_out_of_the_directory_is_refused() {
    let mounts = Mounts::new();
    let escape = "https://127.0.0.1:1/webtransport1/../../etc/passwd".to_owned();
    let client = Side::client(&mounts, "transfer-bidirectional-receive", &[escape]);
    assert_eq!(client.start().exit_code(), Some(1));
}

#[test]
fn a_peer_gets_nothing_outside_www_and_no_answer_to_an_endless_line() {
    let mounts = Mounts::new();
    write_files(&mounts.server_www, &[("webtransport1/a.bin", 100)]);
    fs::write(mounts.server_www.join("secret.bin"), b"secret").expect("a file outside");
    let mut server = Side::server(&mounts, "transfer", &[]).start();
    let url = server.urls(&["webtransport1"]).remove(0);
    let trust = Trust::roots_from_pem_file(mounts.certs.join("ca.pem")).expect("ca.pem");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let builder = ClientBuilder::new().trust(trust);
        let session = tokio::time::timeout(RUN, quay_webtransport::connect(&url, &builder))
            .await
            .expect("a session in time")
            .expect("a session");
        let served = get_bidi(&session, "GET a.bin".into()).await;
        assert_eq!(served.expect("a.bin is served"), contents(1, 100));
        for outside in [
            "../secret.bin",
            "/secret.bin",
            "dir/../../secret.bin",
            "./a.bin",
        ] {
            let refused = get_bidi(&session, format!("GET {outside}")).await;
            assert!(refused.is_err(), "{outside}: {refused:?}");
        }
        // The server reads a request line up to 4 KiB, then gives up on the stream.
        let endless = format!("GET {}", "a".repeat(64 * KIB));
        assert!(get_bidi(&session, endless).await.is_err());
        session.close(0, "done");
    });
    server.stop();
}

/// Sends `request` on a new bidirectional stream of `session` and reads the answer.
async fn get_bidi(session: &Session, request: String) -> Result<Vec<u8>, String> {
    let exchange = async {
        let (mut send, mut recv) = session.open_bi().await.map_err(|e| e.to_string())?;
        // The server may stop reading an endless request early.
        let _ = send.write_all(request.as_bytes()).await;
        let _ = send.finish();
        recv.read_to_end(MIB).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(RUN, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {RUN:?}")))
}

/// The runner's `transfer-*-receive`: the client requests `files` over the kind in `testcase`
/// from a server given `transfer`.
fn receive(testcase: &str, files: &[(&str, usize)]) {
    let mounts = Mounts::new();
    write_files(&mounts.server_www, files);
    let mut server = Side::server(&mounts, "transfer", &[])
        .protocols("interop")
        .start();
    let paths: Vec<&str> = files.iter().map(|(path, _)| *path).collect();
    let urls = server.urls(&paths);
    let mut client = Side::client(&mounts, testcase, &urls)
        .protocols("interop")
        .start();
    assert_eq!(client.exit_code(), Some(0), "{testcase}: client");
    server.stop();
    assert_same_files(&mounts.server_www, &mounts.client_downloads, files);
}

/// The runner's `transfer-*-send`: the server, given `REQUESTS`, requests `files` over the kind
/// in `testcase` from a client given `transfer`, which only opens the sessions.
fn send(testcase: &str, files: &[(&str, usize)]) {
    let mounts = Mounts::new();
    write_files(&mounts.client_www, files);
    let requests: Vec<String> = files.iter().map(|(path, _)| (*path).to_owned()).collect();
    let mut server = Side::server(&mounts, testcase, &requests)
        .protocols("interop")
        .start();
    let urls = server.urls(&["webtransport1", "webtransport2"]);
    let mut client = Side::client(&mounts, "transfer", &urls)
        .protocols("interop")
        .start();
    assert_eq!(server.exit_code(), Some(0), "{testcase}: server");
    assert_eq!(client.exit_code(), Some(0), "{testcase}: client");
    assert_same_files(&mounts.client_www, &mounts.server_downloads, files);
}

/// The runner's mounts for both sides, in one temporary directory. `certs` holds a self-signed
/// certificate for 127.0.0.1 as `cert.pem` and `priv.key`, and again as `ca.pem`: a self-signed
/// certificate is its own root.
struct Mounts {
    _root: TempDir,
    certs: PathBuf,
    server_www: PathBuf,
    server_downloads: PathBuf,
    client_www: PathBuf,
    client_downloads: PathBuf,
}

impl Mounts {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("a temporary directory");
        let dir = |name: &str| {
            let dir = root.path().join(name);
            fs::create_dir(&dir).expect("a directory in the temporary one");
            dir
        };
        let mounts = Self {
            certs: dir("certs"),
            server_www: dir("server_www"),
            server_downloads: dir("server_downloads"),
            client_www: dir("client_www"),
            client_downloads: dir("client_downloads"),
            _root: root,
        };
        let identity = Identity::self_signed(["127.0.0.1"]).expect("a self-signed certificate");
        let certificate = identity.certificate_pem();
        fs::write(mounts.certs.join("cert.pem"), &certificate).expect("cert.pem written");
        fs::write(mounts.certs.join("ca.pem"), &certificate).expect("ca.pem written");
        fs::write(mounts.certs.join("priv.key"), identity.private_key_pem())
            .expect("priv.key written");
        mounts
    }
}

/// One side's environment, before it starts.
struct Side {
    command: Command,
    name: &'static str,
}

impl Side {
    fn server(mounts: &Mounts, testcase: &str, requests: &[String]) -> Self {
        let mut side = Self::new("server", testcase, requests);
        side.command
            .env("WWW", &mounts.server_www)
            .env("DOWNLOADS", &mounts.server_downloads)
            .env("CERTS", &mounts.certs)
            .env("LISTEN", "127.0.0.1:0");
        side
    }

    fn client(mounts: &Mounts, testcase: &str, requests: &[String]) -> Self {
        let mut side = Self::new("client", testcase, requests);
        side.command
            .env("WWW", &mounts.client_www)
            .env("DOWNLOADS", &mounts.client_downloads)
            .env("CERTS", &mounts.certs);
        side
    }

    fn new(name: &'static str, testcase: &str, requests: &[String]) -> Self {
        let mut command = Command::new(PROGRAM);
        // Only what the runner sets: nothing from the test's environment (SSLKEYLOGFILE, ...).
        command
            .env_clear()
            .env("ROLE", name)
            .env("TESTCASE", testcase)
            .env("REQUESTS", requests.join(" "))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self { command, name }
    }

    fn protocols(mut self, protocols: &str) -> Self {
        self.command.env("PROTOCOLS", protocols);
        self
    }

    /// Starts the process; its stdout is echoed into the test's output.
    fn start(mut self) -> Process {
        let mut child = self.command.spawn().expect("wt-interop starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines_tx, lines) = mpsc::channel();
        let name = self.name;
        // Ends when the process exits and its stdout closes, which drops the sender: that is
        // how `exit_code` learns of the exit without polling.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                println!("{name}: {line}");
                let _ = lines_tx.send(line);
            }
        });
        Process {
            child,
            lines,
            name,
            port: 0,
        }
    }
}

/// A running `wt-interop`, killed on drop.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
    /// The server's port, once [`Process::urls`] has read it.
    port: u16,
}

impl Process {
    /// The rest of the next line that starts with `prefix`, waiting at most `within`.
    fn line_after(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        // Bounded by the deadline: each turn reads one line.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|error| {
                panic!(
                    "{}: no line {prefix:?} within {within:?}: {error}",
                    self.name
                )
            });
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// URLs of `paths` on this server, which is waited for until it prints its address.
    fn urls(&mut self, paths: &[&str]) -> Vec<String> {
        if self.port == 0 {
            let addr = self.line_after("listening on ", STARTUP);
            let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
            assert!(addr.ip().is_loopback(), "{addr}");
            self.port = addr.port();
        }
        paths
            .iter()
            .map(|path| format!("https://127.0.0.1:{}/{path}", self.port))
            .collect()
    }

    /// Waits (at most [`RUN`]) for the process to exit on its own; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + RUN;
        // Bounded by the deadline: each turn reads one line, until stdout closes at the exit.
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{} did not finish within {RUN:?}", self.name)
                }
            }
        }
        let status = self.child.wait().expect("the exit status");
        status.code()
    }

    /// Sends SIGTERM, as `docker compose` does to stop a container; the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|status| status.success()),
            "kill -TERM {pid}"
        );
        self.exit_code()
    }

    /// Stops a server that runs until told to (the runner stops it too).
    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes each of `files` (`<endpoint>/<file>` and a size) under `www`, with pseudo-random
/// contents that differ from file to file.
fn write_files(www: &Path, files: &[(&str, usize)]) {
    for (index, (path, size)) in files.iter().enumerate() {
        let path = www.join(path);
        fs::create_dir_all(path.parent().expect("a parent")).expect("directories made");
        fs::write(&path, contents(index as u64 + 1, *size)).expect("a source file written");
    }
}

/// `size` bytes of a xorshift sequence seeded with `seed`: cheap, and shifted or swapped
/// chunks show up as differences.
fn contents(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// Asserts that `downloads` holds exactly `files`, each equal to its source under `www`.
fn assert_same_files(www: &Path, downloads: &Path, files: &[(&str, usize)]) {
    let expected: BTreeSet<PathBuf> = files.iter().map(|(path, _)| PathBuf::from(path)).collect();
    assert_eq!(list(downloads, Path::new("")), expected, "the files saved");
    for (path, size) in files {
        let source = fs::read(www.join(path)).expect("the source file");
        let saved = fs::read(downloads.join(path)).expect("the saved file");
        assert_eq!(source.len(), *size);
        assert!(
            saved == source,
            "{path}: saved {} bytes that differ from the {size} sent",
            saved.len()
        );
    }
}

/// Every file under `dir`, relative to the directory `prefix` names.
fn list(dir: &Path, prefix: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for entry in fs::read_dir(dir).expect("a readable directory") {
        let entry = entry.expect("a directory entry");
        let relative = prefix.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            files.extend(list(&entry.path(), &relative));
        } else {
            files.insert(relative);
        }
    }
    files
}
