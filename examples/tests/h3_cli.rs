//! `h3-server` and `h3-client` as a user runs them: the server serves a temporary directory on
//! loopback, the client pins its certificate hash and fetches, HEADs and posts. Every wait has a
//! deadline, and the server is killed when the test ends, pass or fail.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_h3-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_h3-client");
/// How long the server may take to print its address and hash.
const STARTUP: Duration = Duration::from_secs(30);
/// How long one client run may take.
const CLIENT_RUN: Duration = Duration::from_secs(60);

/// A running `h3-server`, killed on drop.
struct ServerProcess {
    child: Child,
    port: u16,
    hash: String,
    /// The server's log lines after those read at startup.
    lines: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Starts a server with a self-signed certificate and reads its port and hash.
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts a server with extra arguments; reads its port, and its hash unless `--cert` is
    /// among them.
    fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let self_signed = !extra.contains(&"--cert");
        let mut child = Command::new(SERVER)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("h3-server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines_tx, lines) = mpsc::channel();
        // Reads the server's log until it exits (a closed pipe would fail its prints); the test
        // only looks at the first lines, the rest is echoed for a failing test's output.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                println!("server: {line}");
                let _ = lines_tx.send(line);
            }
        });
        let mut server = Self {
            child,
            port: 0,
            hash: String::new(),
            lines,
        };
        let deadline = Instant::now() + STARTUP;
        while server.port == 0 || (self_signed && server.hash.is_empty()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = server
                .lines
                .recv_timeout(left)
                .expect("h3-server prints its address and hash in time");
            if let Some(addr) = line.strip_prefix("listening on ") {
                let addr: std::net::SocketAddr = addr.parse().expect("a socket address");
                assert!(addr.ip().is_loopback(), "{addr}");
                server.port = addr.port();
            } else if let Some(hash) = line.strip_prefix("certificate hash: ") {
                assert_eq!(hash.len(), 64, "{hash}");
                server.hash = hash.to_owned();
            }
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Reads the server's log until `enough` says so; returns the lines read.
    fn log_until(&self, mut enough: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + CLIENT_RUN;
        let mut seen = Vec::new();
        // Bounded by the deadline: each turn waits for one line until then.
        while !enough(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .expect("h3-server logs in time");
            seen.push(line);
        }
        seen
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client run left behind.
struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `h3-client` with the server's hash pinned, killing it if it takes too long.
fn client(server: &ServerProcess, args: &[&str]) -> Run {
    client_pinning(&server.hash, args)
}

/// Runs `h3-client` trusting the certificate with `hash`.
fn client_pinning(hash: &str, args: &[&str]) -> Run {
    let mut all = vec!["--cert-hash", hash];
    all.extend_from_slice(args);
    run_client(&all)
}

/// Runs `h3-client` with `args`, killing it if it takes too long.
fn run_client(args: &[&str]) -> Run {
    let mut child = Command::new(CLIENT)
        .args(["--max-time", "30"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("h3-client starts");
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + CLIENT_RUN;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for h3-client") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("h3-client {args:?} did not finish in {CLIENT_RUN:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The pipes close when the client exits, so these return promptly.
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    Run {
        code: status.code(),
        stdout,
        stderr: String::from_utf8(stderr).expect("stderr is UTF-8"),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Bytes that are not a repeating pattern, so a misplaced chunk shows up.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn client_and_server_over_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Several 64 KiB chunks, and not a multiple of the chunk size.
    let big = pseudo_random(3 * 1024 * 1024 + 12_345);
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello over HTTP/3\n").unwrap();
    let server = ServerProcess::start(dir.path());
    let out = tempfile::tempdir().expect("temp dir");

    // GET to stdout.
    let run = client(&server, &[&server.url("/hello.txt")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, b"hello over HTTP/3\n");
    assert_eq!(run.stderr, "");

    // GET of a big file to a file, byte for byte.
    let target = out.path().join("big.bin");
    let run = client(
        &server,
        &[&server.url("/big.bin"), "-o", target.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(run.stdout.is_empty());
    let got = std::fs::read(&target).unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "downloaded bytes differ");

    // HEAD: the head with type and length, no body.
    let run = client(&server, &["-I", &server.url("/hello.txt")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let head = String::from_utf8(run.stdout).unwrap();
    assert!(head.starts_with("HTTP/3 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: text/plain\r\n"), "{head}");
    assert!(head.contains("content-length: 18\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");

    // -i: head, then body.
    let run = client(&server, &["-i", &server.url("/hello.txt")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let text = String::from_utf8(run.stdout).unwrap();
    assert!(text.starts_with("HTTP/3 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello over HTTP/3\n"), "{text}");

    // 404: non-zero exit and one line saying why.
    let run = client(&server, &[&server.url("/missing.txt")]);
    assert_eq!(run.code, Some(22), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "h3-client: HTTP 404 Not Found\n");

    // A path out of the served directory is refused.
    let run = client(&server, &[&server.url("/..%2fsecret")]);
    assert_eq!(run.code, Some(22), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "h3-client: HTTP 403 Forbidden\n");

    // POST /echo with a file body: the same bytes back.
    let body = pseudo_random(200_000);
    let body_path = out.path().join("body.bin");
    std::fs::write(&body_path, &body).unwrap();
    let data = format!("@{}", body_path.display());
    let run = client(
        &server,
        &[
            "-d",
            &data,
            "-H",
            "content-type: application/x-test",
            "-v",
            &server.url("/echo"),
        ],
    );
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(run.stdout == body, "echoed bytes differ");
    assert!(run.stderr.contains("> POST /echo HTTP/3"), "{}", run.stderr);
    assert!(
        run.stderr.contains("< content-type: application/x-test"),
        "{}",
        run.stderr
    );

    // A body over the echo limit: the server answers 413 before reading it all.
    let too_big = out.path().join("too-big.bin");
    std::fs::write(&too_big, pseudo_random(16 * 1024 * 1024 + 1)).unwrap();
    let data = format!("@{}", too_big.display());
    let run = client(&server, &["-d", &data, &server.url("/echo")]);
    assert_eq!(run.code, Some(22), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "h3-client: HTTP 413 Payload Too Large\n");

    // POST /echo with an inline body.
    let run = client(&server, &["-d", "ping", &server.url("/echo")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, b"ping");
}

#[test]
fn client_reports_transport_errors_on_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::start(dir.path());

    // A pinned hash that is not the server's: the handshake fails.
    let run = client_pinning(&"00".repeat(32), &[&server.url("/")]);
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.starts_with("h3-client: "), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // Nobody listening: QUIC gets no answer, so --max-time ends it.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = client(
        &server,
        &["--max-time", "2", &format!("https://127.0.0.1:{port}/")],
    );
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    // The server's directory listing.
    std::fs::write(dir.path().join("a.txt"), "a").unwrap();
    let run = client(&server, &[&server.url("/")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let html = String::from_utf8(run.stdout).unwrap();
    assert!(html.contains("<a href=\"/a.txt\">a.txt</a>"), "{html}");
}

#[test]
fn server_with_pem_files_and_client_trust_options() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("index.html"), "<p>index</p>").unwrap();
    let pem = tempfile::tempdir().expect("temp dir");
    let identity = quay_transport::Identity::self_signed(["localhost", "127.0.0.1"]).unwrap();
    let cert = pem.path().join("cert.pem");
    let key = pem.path().join("key.pem");
    std::fs::write(&cert, identity.certificate_pem()).unwrap();
    std::fs::write(&key, identity.private_key_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server = ServerProcess::start_with(dir.path(), &["--cert", cert, "--key", key]);

    // The certificate as the only root; a directory serves its index.html.
    let run = run_client(&["--ca", cert, "-i", &server.url("/")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let text = String::from_utf8(run.stdout).unwrap();
    assert!(text.contains("content-type: text/html\r\n"), "{text}");
    assert!(text.ends_with("<p>index</p>"), "{text}");

    // Its hash, as pinned by a browser.
    let hash = identity.certificate_hash().to_hex();
    let run = client_pinning(&hash, &[&server.url("/index.html")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, b"<p>index</p>");

    // No check at all.
    let run = run_client(&["--danger-insecure", &server.url("/index.html")]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, b"<p>index</p>");

    // A method the server does not serve.
    let run = run_client(&["--ca", cert, "-X", "DELETE", &server.url("/index.html")]);
    assert_eq!(run.code, Some(22), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "h3-client: HTTP 405 Method Not Allowed\n");
}

#[test]
fn several_urls_in_parallel_share_one_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names = ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt"];
    for name in names {
        std::fs::write(dir.path().join(name), format!("this is {name}\n")).unwrap();
    }
    let big = pseudo_random(1024 * 1024 + 7);
    std::fs::write(dir.path().join("big.bin"), &big).unwrap();
    let server = ServerProcess::start(dir.path());

    let mut urls: Vec<String> = names
        .iter()
        .map(|name| server.url(&format!("/{name}")))
        .collect();
    urls.insert(2, server.url("/big.bin"));
    let mut args = vec!["--parallel", "3"];
    args.extend(urls.iter().map(String::as_str));
    let run = client(&server, &args);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "");
    // The bodies in the order of the URLs, whatever order they finished in.
    let mut expected = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if i == 2 {
            expected.extend_from_slice(&big);
        }
        expected.extend_from_slice(format!("this is {name}\n").as_bytes());
    }
    assert!(run.stdout == expected, "bodies differ or are out of order");

    // The server logged every request, and one connection for all of them.
    let log = server.log_until(|lines| {
        lines.iter().filter(|line| line.contains(" GET /")).count() == urls.len()
    });
    let connections = log
        .iter()
        .filter(|line| line.ends_with(" connected"))
        .count();
    assert_eq!(connections, 1, "{log:#?}");

    // A 404 among several: the others are still written, and the exit code says so.
    let run = client(
        &server,
        &[
            "--parallel",
            "2",
            &urls[0],
            &server.url("/missing"),
            &urls[1],
        ],
    );
    assert_eq!(run.code, Some(22), "stderr: {}", run.stderr);
    assert!(run.stdout.starts_with(b"this is a.txt\n"));
    assert!(run.stdout.ends_with(b"this is b.txt\n"));
}
