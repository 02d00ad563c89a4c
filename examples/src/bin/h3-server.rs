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
//! `--workers N` (default: one per core) runs N endpoints on the port, each on its own thread;
//! on Linux the kernel steers every connection's packets to the endpoint that accepted it (see
//! `quay_transport::workers`). Elsewhere there is one.
//!
//! ```text
//! cargo run -p quay-examples --bin h3-server -- ./public
//! cargo run -p quay-examples --bin h3-server -- --listen 127.0.0.1:8443 --cert cert.pem --key key.pem .
//! ```

use std::error::Error;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use quay_examples::{default_workers, one_line};
use quay_h3::server::{Connection, IncomingRequest, RequestStream, Server};
use quay_h3::{Config, StreamError};
use quay_transport::workers::{Worker, WorkerGroup};
use quay_transport::{EndpointError, Identity, ServerBuilder};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

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
    let (shutdown, stop) = watch::channel(false);
    let serve = move |worker: Worker| serve_worker(worker, root.clone(), stop.clone());
    let group = bind(
        args.listen,
        &ServerBuilder::new(identity),
        args.workers,
        serve,
    )?;
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

    // The workers serve; this thread waits for Ctrl-C, then for them to close.
    let _ = tokio::signal::ctrl_c().await;
    say!("shutting down");
    let _ = shutdown.send(true);
    tokio::task::spawn_blocking(move || group.join())
        .await?
        .map_err(|_| "a worker panicked")?;
    Ok(())
}

/// One worker: an HTTP/3 server on the worker's endpoint until `stop` turns true, then a close
/// that waits for the peers.
async fn serve_worker(worker: Worker, root: Arc<PathBuf>, mut stop: watch::Receiver<bool>) {
    let server = Server::from_endpoint(worker.endpoint, Config::default());
    loop {
        tokio::select! {
            accepted = server.accept() => match accepted {
                Some(Ok(connection)) => {
                    tokio::spawn(serve_connection(connection, root.clone()));
                }
                // A failed handshake concerns that client only.
                Some(Err(error)) => eprintln!("handshake failed: {error}"),
                None => return,
            },
            _ = stop.wait_for(|stop| *stop) => {
                server.endpoint().close(0u32.into(), b"server shutting down");
                server.endpoint().wait_idle().await;
                return;
            }
        }
    }
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

/// Accepts the requests of one connection, each answered in its own task.
async fn serve_connection(connection: Connection, root: Arc<PathBuf>) {
    let peer = connection.connection().remote_address();
    loop {
        match connection.accept_stream().await {
            Ok(Some(incoming)) => {
                tokio::spawn(serve_request(incoming, root.clone(), peer));
            }
            Ok(None) => return,
            Err(error) => {
                eprintln!("{peer}: connection ended: {error}");
                return;
            }
        }
    }
}

async fn serve_request(incoming: IncomingRequest, root: Arc<PathBuf>, peer: SocketAddr) {
    let (request, mut stream) = match incoming.resolve().await {
        Ok(Some(request)) => request,
        // Not a request (already answered by quay-h3 with a reset).
        Ok(None) => return,
        Err(error) => {
            eprintln!("{peer}: bad request: {error}");
            return;
        }
    };
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
