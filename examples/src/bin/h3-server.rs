//! Serves a directory over HTTP/3.
//!
//! - `GET` and `HEAD` of a file answer with its `content-type` (guessed from the extension) and
//!   `content-length`; the body is read and sent in 64 KiB chunks, so files of any size are served
//!   without loading them into memory. A directory serves its `index.html`, or a listing.
//! - A missing file is 404; a path that tries to leave the directory (`..`, an encoded `/` or `\`
//!   in a segment, a symbolic link pointing outside) is 403.
//! - `POST /echo` answers 200 with the request body (up to 16 MiB, else 413) and its
//!   `content-type`.
//! - Anything else is 405.
//!
//! By default the server makes a fresh self-signed ECDSA certificate (valid 14 days, for
//! `localhost`, `127.0.0.1` and `::1`) and prints its SHA-256 hash, with the `h3-client` flag that
//! pins it. `--cert` and `--key` load a PEM certificate chain and key instead.
//!
//! It listens on `[::]:4433` (both IPv6 and IPv4), or on `0.0.0.0:4433` where IPv6 is missing;
//! `--listen` picks another address (port 0 picks a free port). The first lines on stdout are
//! `listening on ADDR` and, for a self-signed certificate, `certificate hash: HEX`, so scripts and
//! tests can read them. Each connection and each request runs in its own task.
//!
//! - A WebTransport session at `/echo` (extended CONNECT) sends back every bidirectional
//!   stream (up to 16 MiB); other session paths are refused with 404.
//!
//! `--workers N` (default: one per core) runs N endpoints on the port, each on its own thread;
//! on Linux the kernel steers every connection's packets to the endpoint that accepted it (see
//! `quay_transport::workers`). Elsewhere there is one.
//!
//! **Restarting without losing a connection** (Linux, root): start every server on the port
//! with `--handover DIR`, DIR a directory on a BPF file system (`/sys/fs/bpf/quay-4433`, say;
//! `mount -t bpf bpf /sys/fs/bpf` where none is mounted). A second server started with the same
//! port and DIR takes every new connection once it prints `listening on`; then send the old
//! one SIGTERM: it drains, that is it stops accepting, sends GOAWAY to its HTTP/3 connections
//! and WT_DRAIN_SESSION to its WebTransport sessions, serves what they have started, and exits
//! (printing `drained`) when they have closed, or after `--drain-timeout` seconds (default 30),
//! when it closes the rest. Ctrl-C (SIGINT) closes every connection at once, also mid-drain.
//! Give both the same `--cert` and `--key`, so clients that pin or verify it trust either.
//!
//! ```text
//! cargo run -p quay-examples --bin h3-server -- ./public
//! cargo run -p quay-examples --bin h3-server -- --listen 127.0.0.1:8443 --cert cert.pem --key key.pem .
//! # a restart: the new server joins, the old one drains
//! h3-server --handover /sys/fs/bpf/quay-4433 --cert cert.pem --key key.pem . &   # old
//! h3-server --handover /sys/fs/bpf/quay-4433 --cert cert.pem --key key.pem . &   # new
//! kill -TERM %1
//! ```

use std::error::Error;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use quay_examples::{default_workers, one_line};
use quay_h3::StreamError;
use quay_h3::server::{Connection, RequestStream};
use quay_transport::workers::{Handover, Worker, WorkerGroup};
use quay_transport::{EndpointError, Identity, ServerBuilder};
use quay_webtransport::server::Incoming;
use quay_webtransport::{Config, Session};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// `println!` that ignores a closed stdout: the log is for the operator, the server keeps serving
/// without it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Bytes read from a file and sent as one DATA frame.
const CHUNK: usize = 64 * 1024;
/// The largest body `POST /echo` accepts (it is buffered to answer with a content-length).
const MAX_ECHO: usize = 16 * 1024 * 1024;
/// The default port, as in the HTTP/3 examples of most implementations.
const DEFAULT_PORT: u16 = 4433;

/// Serves a directory over HTTP/3 (GET, HEAD, POST /echo).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The directory to serve.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Address to listen on. Default: port 4433 on every IPv6 and IPv4 address (IPv4 only where
    /// IPv6 is missing).
    #[arg(short, long)]
    listen: Option<SocketAddr>,
    /// PEM certificate chain (leaf first); needs --key. Default: a fresh self-signed certificate.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert (PKCS#8, SEC1 or PKCS#1).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Names of the self-signed certificate (repeatable).
    #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"], conflicts_with = "cert")]
    names: Vec<String>,
    /// Endpoints on the port, each on its own thread (more than one needs Linux). Default: one
    /// per core.
    #[arg(long, default_value_t = default_workers())]
    workers: usize,
    /// Share the port with other h3-server processes for a restart without lost connections:
    /// steering maps pinned in this directory on a BPF file system (Linux, root). A new process
    /// takes every new connection; SIGTERM drains the old one.
    #[arg(long, value_name = "DIR")]
    handover: Option<PathBuf>,
    /// How long a drain (SIGTERM) waits for connections to end before closing them.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    drain_timeout: u64,
    /// Write a qlog file per connection into this directory (`<odcid>_server.sqlog`, JSON-SEQ);
    /// without it, into `$QLOGDIR` when that is set.
    #[arg(long, value_name = "DIR")]
    qlog_dir: Option<PathBuf>,
}

/// What the workers are told by the main task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Accept and serve.
    Serve,
    /// Accept nothing more; GOAWAY and WT_DRAIN_SESSION to every connection and session; exit
    /// when they have ended or at the drain timeout.
    Drain,
    /// Close every connection now.
    Stop,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("h3-server: {}", one_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    let root = args
        .dir
        .canonicalize()
        .map_err(|error| format!("{}: {error}", args.dir.display()))?;
    if !root.is_dir() {
        return Err(format!("{} is not a directory", root.display()).into());
    }
    let self_signed = args.cert.is_none();
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
        _ => Identity::self_signed(args.names.iter().map(String::as_str))?,
    };
    let hash = identity.certificate_hash();
    let shown = root.display().to_string();
    let root = Arc::new(root);
    let (mode_tx, mode) = watch::channel(Mode::Serve);
    let drain_timeout = Duration::from_secs(args.drain_timeout);
    let serve =
        move |worker: Worker| serve_worker(worker, root.clone(), mode.clone(), drain_timeout);
    let mut builder = ServerBuilder::new(identity);
    if let Some(dir) = &args.handover {
        builder = builder.handover(Handover::new(dir));
    }
    if let Some(dir) = &args.qlog_dir {
        builder = builder.qlog_dir(dir);
    }
    let group = bind(args.listen, &builder, args.workers, serve)?;
    let addr = group.local_addr();
    say!("listening on {addr}");
    if self_signed {
        say!("certificate hash: {}", hash.to_hex());
        say!(
            "  try: h3-client --cert-hash {} https://localhost:{}/",
            hash.to_hex(),
            addr.port()
        );
    }
    say!("serving {shown} with {} workers", args.workers);

    // The workers serve; this task waits for Ctrl-C (stop) or SIGTERM (drain), then for them
    // to finish. A Ctrl-C during a drain stops at once.
    let drained = tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        () = terminated() => true,
    };
    if drained {
        say!("draining (up to {}s)", args.drain_timeout);
        let _ = mode_tx.send(Mode::Drain);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = mode_tx.send(Mode::Stop);
        });
    } else {
        say!("shutting down");
        let _ = mode_tx.send(Mode::Stop);
    }
    tokio::task::spawn_blocking(move || group.join())
        .await?
        .map_err(|_| "a worker panicked")?;
    if drained {
        say!("drained");
    }
    Ok(())
}

/// Returns when the process gets SIGTERM (never where there is no such signal).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                eprintln!("cannot wait for SIGTERM ({error}); Ctrl-C stops");
                std::future::pending::<()>().await;
            }
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}

/// One worker: an HTTP/3 and WebTransport server on the worker's endpoint until `mode` changes.
/// On [`Mode::Stop`], a close that waits for the peers; on [`Mode::Drain`], no new connection,
/// and the worker returns when its connections have ended (each drains itself) or a little
/// after the drain timeout.
async fn serve_worker(
    worker: Worker,
    root: Arc<PathBuf>,
    mut mode: watch::Receiver<Mode>,
    drain_timeout: Duration,
) {
    let config = Config::default();
    let Worker {
        endpoint, acceptor, ..
    } = worker;
    let mut connections = JoinSet::new();
    // Handed to each connection; `mode` itself is watched here.
    let for_connections = mode.clone();
    loop {
        tokio::select! {
            // quinn's accept can be cancelled (by the other branches) without losing a
            // connection; the handshake runs in the connection's own task.
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    let (root, mode, config) =
                        (root.clone(), for_connections.clone(), config.clone());
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        let h3 = config.h3_config();
                        match Connection::accept_with(incoming, Some(&acceptor), h3).await {
                            Ok(connection) => {
                                serve_connection(connection, config, root, mode, drain_timeout)
                                    .await;
                            }
                            // A failed handshake concerns that client only.
                            Err(error) => eprintln!("handshake failed: {error}"),
                        }
                    });
                }
                None => return,
            },
            // Finished connections leave the set as they go.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = mode.wait_for(|mode| *mode != Mode::Serve) => {
                // An error: the main task is gone; stop.
                drop(changed);
                break;
            }
        }
    }
    if *mode.borrow() == Mode::Drain {
        // Refuse new connections, should any still come here (no other process took over).
        endpoint.set_server_config(None);
        let ended = async { while connections.join_next().await.is_some() {} };
        // Each connection closes itself by the drain timeout; the margin covers the close.
        tokio::select! {
            _ = tokio::time::timeout(drain_timeout + Duration::from_secs(1), ended) => {}
            _ = mode.wait_for(|mode| *mode == Mode::Stop) => {}
        }
    }
    endpoint.close(0u32.into(), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
}

/// Binds `workers` endpoints on `listen`, or on the default `[::]:4433` with a fallback to IPv4
/// only, and runs `serve` on each.
fn bind<F, Fut>(
    listen: Option<SocketAddr>,
    builder: &ServerBuilder,
    workers: usize,
    serve: F,
) -> Result<WorkerGroup, EndpointError>
where
    F: Fn(Worker) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    if let Some(addr) = listen {
        return builder.bind_workers(addr, workers, serve);
    }
    let any6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), DEFAULT_PORT);
    match builder.bind_workers(any6, workers, serve.clone()) {
        Ok(group) => Ok(group),
        Err(error) => {
            eprintln!("cannot listen on {any6} ({error}); trying IPv4 only");
            let any4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), DEFAULT_PORT);
            builder.bind_workers(any4, workers, serve)
        }
    }
}

/// Accepts the requests and sessions of one connection, each served in its own task, until the
/// connection ends; on a drain, sends GOAWAY and lets what was accepted finish (at most
/// `drain_timeout`).
async fn serve_connection(
    connection: Connection,
    config: Config,
    root: Arc<PathBuf>,
    mode: watch::Receiver<Mode>,
    drain_timeout: Duration,
) {
    let peer = connection.connection().remote_address();
    say!("{peer} connected");
    let connection = quay_webtransport::server::Connection::new(connection, config);
    let accept = async {
        while let Some(incoming) = connection.accept().await {
            match incoming {
                Incoming::Http(request, stream) => {
                    tokio::spawn(serve_request(*request, *stream, root.clone(), peer));
                }
                Incoming::Session(request) => {
                    tokio::spawn(open_session(request, peer, mode.clone()));
                }
                _ => {}
            }
        }
    };
    let drain = async {
        let mut mode = mode.clone();
        let _ = mode.wait_for(|mode| *mode != Mode::Serve).await;
        // RFC 9114 §5.2: GOAWAY, the accepted requests (sessions' CONNECT streams among them)
        // finish, then the close.
        connection.h3().shutdown(drain_timeout).await;
    };
    tokio::select! {
        () = accept => {}
        () = drain => {}
    }
}

/// Accepts a session at `/echo` and serves it; refuses other paths with 404.
async fn open_session(
    request: quay_webtransport::server::Request,
    peer: SocketAddr,
    mode: watch::Receiver<Mode>,
) {
    if request.path() != "/echo" {
        request.reject(StatusCode::NOT_FOUND).await;
        return;
    }
    match request.ok().await {
        Ok(session) => {
            say!("{peer} CONNECT /echo session");
            serve_session(session, mode).await;
        }
        Err(error) => eprintln!("{peer}: session not opened: {error}"),
    }
}

/// Sends back every bidirectional stream of an `/echo` session until it ends; on a drain, asks
/// the client to wind the session down (WT_DRAIN_SESSION) and goes on echoing.
async fn serve_session(session: Session, mut mode: watch::Receiver<Mode>) {
    let echo = async {
        while let Ok(Some((mut send, mut recv))) = session.accept_bi().await {
            tokio::spawn(async move {
                match recv.read_to_end(MAX_ECHO).await {
                    Ok(data) => {
                        if send.write_all(&data).await.is_ok() {
                            let _ = send.finish();
                        }
                    }
                    Err(error) => eprintln!("session stream not echoed: {error}"),
                }
            });
        }
    };
    let drain = async {
        let _ = mode.wait_for(|mode| *mode != Mode::Serve).await;
        session.drain();
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = echo => {}
        () = drain => {}
    }
}

async fn serve_request(
    request: Request<()>,
    mut stream: RequestStream,
    root: Arc<PathBuf>,
    peer: SocketAddr,
) {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match respond(&request, &mut stream, &root).await {
        Ok(status) => say!("{peer} {method} {path} {}", status.as_u16()),
        Err(error) => eprintln!("{peer} {method} {path}: {error}"),
    }
}

/// Answers one request; returns the status sent.
async fn respond(
    request: &Request<()>,
    stream: &mut RequestStream,
    root: &Path,
) -> Result<StatusCode, StreamError> {
    let method = request.method();
    let path = request.uri().path();
    if method == Method::POST && path == "/echo" {
        return echo(request, stream).await;
    }
    if method != Method::GET && method != Method::HEAD {
        let allow = if path == "/echo" { "POST" } else { "GET, HEAD" };
        return send_text(
            stream,
            StatusCode::METHOD_NOT_ALLOWED,
            &[(header::ALLOW, allow)],
        )
        .await;
    }
    let file = match resolve(root, path) {
        Ok(file) => file,
        Err(status) => return send_text(stream, status, &[]).await,
    };
    let metadata = match tokio::fs::metadata(&file).await {
        Ok(metadata) => metadata,
        Err(error) => return send_text(stream, io_status(&error), &[]).await,
    };
    if metadata.is_dir() {
        let index = file.join("index.html");
        if tokio::fs::metadata(&index)
            .await
            .is_ok_and(|index| index.is_file())
        {
            return send_file(stream, &index, method == Method::HEAD).await;
        }
        return send_listing(stream, &file, path).await;
    }
    send_file(stream, &file, method == Method::HEAD).await
}

/// Maps a request path to a file under `root`: each `/`-separated segment is percent-decoded on
/// its own, `.` and empty segments are dropped, and `..` or a decoded segment holding a path
/// separator is refused with 403. A path that leaves `root` through a symbolic link is 403 too.
fn resolve(root: &Path, path: &str) -> Result<PathBuf, StatusCode> {
    let mut file = root.to_path_buf();
    for segment in path.split('/') {
        let segment = percent_decode(segment).ok_or(StatusCode::BAD_REQUEST)?;
        match segment.as_str() {
            "" | "." => continue,
            ".." => return Err(StatusCode::FORBIDDEN),
            _ => {}
        }
        if segment.contains(['/', '\\', '\0']) {
            return Err(StatusCode::FORBIDDEN);
        }
        // A segment such as `C:` would replace the whole path on Windows.
        if !matches!(
            Path::new(&segment).components().next(),
            Some(Component::Normal(_))
        ) {
            return Err(StatusCode::FORBIDDEN);
        }
        file.push(segment);
    }
    match file.canonicalize() {
        Ok(real) if real.starts_with(root) => Ok(real),
        Ok(_) => Err(StatusCode::FORBIDDEN),
        Err(error) => Err(io_status(&error)),
    }
}

/// `%XX` decoding of one path segment; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn io_status(error: &io::Error) -> StatusCode {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => StatusCode::NOT_FOUND,
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Sends a file: head with type and length, then (unless `head_only`) the content in chunks.
async fn send_file(
    stream: &mut RequestStream,
    path: &Path,
    head_only: bool,
) -> Result<StatusCode, StreamError> {
    let opened = async {
        let file = tokio::fs::File::open(path).await?;
        let length = file.metadata().await?.len();
        Ok::<_, io::Error>((file, length))
    };
    let (mut file, length) = match opened.await {
        Ok(opened) => opened,
        Err(error) => return send_text(stream, io_status(&error), &[]).await,
    };
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, mime.as_ref())
        .header(header::CONTENT_LENGTH, length)
        .body(())
        .expect("status and header values are valid");
    stream.send_response(response).await?;
    // quay-h3 would drop the body of a HEAD response anyway; don't read the file for it.
    let mut left = if head_only { 0 } else { length };
    let mut buf = BytesMut::new();
    while left > 0 {
        buf.reserve(CHUNK);
        let read = match file.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) => {
                // The head is out: all we can do is cut the response short.
                eprintln!("{}: read failed: {error}", path.display());
                stream.reject(quay_h3::Code::H3_INTERNAL_ERROR);
                return Ok(StatusCode::INTERNAL_SERVER_ERROR);
            }
        };
        // The file may have grown since we sent its length: never send more than announced.
        let take = read.min(usize::try_from(left).unwrap_or(usize::MAX));
        let chunk = buf.split_to(take).freeze();
        buf.clear();
        left -= take as u64;
        stream.send_data(chunk).await?;
    }
    if left > 0 {
        // The file shrank: a short body would break content-length, so reset instead.
        stream.reject(quay_h3::Code::H3_INTERNAL_ERROR);
        return Ok(StatusCode::INTERNAL_SERVER_ERROR);
    }
    stream.finish()?;
    Ok(StatusCode::OK)
}

/// A small HTML listing of a directory without `index.html`.
async fn send_listing(
    stream: &mut RequestStream,
    dir: &Path,
    path: &str,
) -> Result<StatusCode, StreamError> {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let mut name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().await.is_ok_and(|kind| kind.is_dir()) {
                name.push('/');
            }
            names.push(name);
        }
    }
    names.sort();
    let base = if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    };
    let mut html = format!(
        "<!DOCTYPE html>\n<title>{0}</title>\n<h1>{0}</h1>\n<ul>\n",
        escape_html(&base)
    );
    for name in names {
        let name = escape_html(&name);
        html.push_str(&format!("<li><a href=\"{base}{name}\">{name}</a></li>\n"));
    }
    html.push_str("</ul>\n");
    send_body(
        stream,
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from(html),
    )
    .await
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `POST /echo`: the request body back, with its content-type.
async fn echo(
    request: &Request<()>,
    stream: &mut RequestStream,
) -> Result<StatusCode, StreamError> {
    // Buffered rather than streamed back as it arrives: a client that sends its whole body
    // before reading the response would otherwise stall both sides once flow control fills up.
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.recv_data().await? {
        if body.len() + chunk.len() > MAX_ECHO {
            return send_text(stream, StatusCode::PAYLOAD_TOO_LARGE, &[]).await;
        }
        body.extend_from_slice(&chunk);
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(())
        .expect("status and header values are valid");
    stream.send_response(response).await?;
    stream.send_data(body.freeze()).await?;
    stream.finish()?;
    Ok(StatusCode::OK)
}

/// An error status with a one-line text body naming it.
async fn send_text(
    stream: &mut RequestStream,
    status: StatusCode,
    headers: &[(header::HeaderName, &'static str)],
) -> Result<StatusCode, StreamError> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, text.len());
    for (name, value) in headers {
        response = response.header(name, *value);
    }
    let response = response
        .body(())
        .expect("status and header values are valid");
    stream.send_response(response).await?;
    stream.send_data(Bytes::from(text)).await?;
    stream.finish()?;
    Ok(status)
}

async fn send_body(
    stream: &mut RequestStream,
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Result<StatusCode, StreamError> {
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(())
        .expect("status and header values are valid");
    stream.send_response(response).await?;
    stream.send_data(body).await?;
    stream.finish()?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a b.txt"), "x").unwrap();
        assert_eq!(
            resolve(&root, "/sub/a%20b.txt"),
            Ok(root.join("sub/a b.txt"))
        );
        assert_eq!(
            resolve(&root, "/./sub//a%20b.txt"),
            Ok(root.join("sub/a b.txt"))
        );
        assert_eq!(resolve(&root, "/"), Ok(root.clone()));
        assert_eq!(resolve(&root, "/missing"), Err(StatusCode::NOT_FOUND));
        assert_eq!(resolve(&root, "/../etc/passwd"), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            resolve(&root, "/sub/%2e%2e/%2e%2e/x"),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(resolve(&root, "/..%2fx"), Err(StatusCode::FORBIDDEN));
        assert_eq!(resolve(&root, "/..%5cx"), Err(StatusCode::FORBIDDEN));
        assert_eq!(resolve(&root, "/%zz"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(resolve(&root, "/%"), Err(StatusCode::BAD_REQUEST));
    }

    #[cfg(unix)]
    #[test]
    fn resolve_refuses_links_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("out")).unwrap();
        assert_eq!(resolve(&root, "/out"), Err(StatusCode::FORBIDDEN));
    }

    #[test]
    fn percent_decode_handles_escapes() {
        assert_eq!(percent_decode("a%41%2f").as_deref(), Some("aA/"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
