//! An endpoint for the WebTransport mode of the QUIC interop runner: one program, client or
//! server, set up by environment variables the way the runner passes them. Its Docker image is
//! built from `examples/interop/`.
//!
//! The runner's file protocol: the first component of a request path names the WebTransport
//! endpoint (`/webtransport1`, one session each), the rest names a file under it.
//! - unidirectional streams: the requester sends `GET <file>` on a new stream and finishes it;
//!   the sender answers on a new stream of its own with `PUSH <file>\n` and the contents;
//! - bidirectional streams: `GET <file>` then FIN, and the contents come back on that stream;
//! - datagrams: `GET <file>` in one datagram, answered by `PUSH <file>\n` and the contents in
//!   one datagram (GETs still unanswered after a second are sent again, a bounded number of
//!   times, as datagrams may be lost).
//!
//! Files are served from `WWW/<endpoint>/<file>` and saved to `DOWNLOADS/<endpoint>/<file>`. A
//! requested path with `..`, `.`, an empty segment, `\` or NUL is refused, and the line of a
//! peer's request or push is read up to [`MAX_LINE`] bytes. Every session answers requests of
//! all three kinds, whatever the test case.
//!
//! Environment (all optional except `ROLE` and `TESTCASE`):
//! - `ROLE`: `client` or `server`;
//! - `TESTCASE`: `handshake`, `transfer`, or `transfer-<kind>-<direction>` (kind
//!   `unidirectional`, `bidirectional` or `datagram`; direction `receive` or `send`); anything
//!   else exits with 127. The runner gives the side that requests files the full name (the
//!   client `…-receive`, the server `…-send`) and the other side `transfer`. An endpoint given
//!   a kind requests its `REQUESTS` over that kind, whichever direction the name says;
//! - `REQUESTS`: space-separated. Client: URLs `https://host:port/<endpoint>[/<file>]`, one
//!   session per endpoint, opened in parallel on one QUIC connection; an URL without a file
//!   opens a session and requests nothing. Server: paths `<endpoint>/<file>`, requested from
//!   the client once it has opened a session on that endpoint;
//! - `PROTOCOLS`: space-separated WebTransport subprotocols, preferred first. The client offers
//!   them; the server picks the client's first one that it also lists. In `handshake` both
//!   sides write the one chosen (empty when none) to `DOWNLOADS/negotiated_protocol.txt`;
//! - `WWW` (default `/www`), `DOWNLOADS` (default `/downloads`; the older name `DOWNLOAD_DIR`
//!   is read too) and `CERTS` (default `/certs`): the runner's mounts;
//! - `LISTEN`: the server's address, default `[::]:443`; it prints `listening on ADDR` first;
//! - `SSLKEYLOGFILE`: TLS secrets are appended there (quay-transport does this).
//!
//! The server uses `CERTS/cert.pem` and `CERTS/priv.key`. The client trusts `CERTS/ca.pem`, or
//! the system's roots when that file is missing.
//!
//! When it is done:
//! - a client with files to fetch closes its sessions once it has them all;
//! - a client given `handshake` closes once every session is open;
//! - a client given `transfer` waits until the server has closed every session;
//! - a server with `REQUESTS` closes the connection once it has every file;
//! - any other server runs until SIGTERM or SIGINT.
//!
//! Exit codes: 0 success, 1 failure, 127 unknown test case.
//!
//! ```text
//! ROLE=server TESTCASE=transfer WWW=./www CERTS=./certs LISTEN=127.0.0.1:4433 wt-interop
//! ROLE=client TESTCASE=transfer-bidirectional-receive DOWNLOADS=./out CERTS=./certs \
//!   REQUESTS="https://localhost:4433/webtransport1/a.txt https://localhost:4433/webtransport2/b.txt" \
//!   wt-interop
//! ```

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Uri;
use quay_examples::one_line;
use quay_h3::Code;
use quay_transport::{ClientBuilder, Identity, Trust};
use quay_webtransport::server::Request;
use quay_webtransport::{Client, Config, RecvStream, SendStream, Server, Session, SessionOptions};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

/// `println!` that ignores a closed stdout: the log is for the operator.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The longest line of a peer's request (`GET <file>`) or push header (`PUSH <file>`).
const MAX_LINE: usize = 4096;
/// Bytes read from a file per write to a stream.
const CHUNK: usize = 64 * 1024;
/// How long GETs sent as datagrams wait for their PUSH before the missing ones are sent again.
const DATAGRAM_RETRY: Duration = Duration::from_secs(1);
/// How many times GETs are sent as datagrams before the files still missing are a failure.
const DATAGRAM_ROUNDS: u32 = 20;
/// How long the CONNECTION_CLOSE of a finished endpoint may take to go out.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The runner's exit code for a test case an endpoint does not support.
const EXIT_UNSUPPORTED: u8 = 127;
/// The stream error code of a GET that cannot be answered (missing file, bad path).
const NOT_SERVED: u32 = 0x1;

#[tokio::main]
async fn main() -> ExitCode {
    let setup = match Setup::from_env() {
        Ok(setup) => setup,
        Err(SetupError::UnknownTestCase(name)) => {
            eprintln!("wt-interop: unsupported test case {name:?}");
            return ExitCode::from(EXIT_UNSUPPORTED);
        }
        Err(SetupError::Invalid(message)) => {
            eprintln!("wt-interop: {message}");
            return ExitCode::FAILURE;
        }
    };
    let result = match setup.role {
        Role::Client => run_client(setup).await,
        Role::Server => run_server(setup).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wt-interop: {}", one_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Which side this process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

/// What a test case asks of this endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TestCase {
    /// Open the sessions (client) or accept them (server) and write the negotiated protocol.
    Handshake,
    /// Answer requests; make none.
    Transfer,
    /// Request every file of `REQUESTS` over this kind, and answer requests too.
    Request(Kind),
}

impl TestCase {
    /// The test case the runner names `name`; `None` for one this program does not know.
    fn parse(name: &str) -> Option<Self> {
        match name {
            "handshake" => return Some(Self::Handshake),
            "transfer" => return Some(Self::Transfer),
            _ => {}
        }
        let rest = name.strip_prefix("transfer-")?;
        let kind = rest
            .strip_suffix("-receive")
            .or_else(|| rest.strip_suffix("-send"))?;
        let kind = match kind {
            "unidirectional" => Kind::Uni,
            "bidirectional" => Kind::Bidi,
            "datagram" => Kind::Datagram,
            _ => return None,
        };
        Some(Self::Request(kind))
    }
}

/// How a file is requested and sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Uni,
    Bidi,
    Datagram,
}

/// Files to request, by endpoint (the first path component), in the order given.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    endpoints: BTreeMap<String, Vec<String>>,
}

impl Plan {
    /// Adds `path` (`<endpoint>[/<file>]`, leading and trailing `/` ignored).
    fn add(&mut self, path: &str) -> Result<(), String> {
        let path = path.trim_matches('/');
        let (endpoint, file) = path.split_once('/').unwrap_or((path, ""));
        if relative_path(endpoint).is_none_or(|p| p.components().count() != 1) {
            return Err(format!("{path:?}: not a plain endpoint name"));
        }
        let files = self.endpoints.entry(endpoint.to_owned()).or_default();
        if !file.is_empty() {
            if relative_path(file).is_none() {
                return Err(format!(
                    "{path:?}: the file's path must stay in its directory"
                ));
            }
            files.push(file.to_owned());
        }
        Ok(())
    }

    /// The server's plan from `REQUESTS` (`<endpoint>/<file>` each).
    fn for_server(requests: &[String]) -> Result<Self, String> {
        let mut plan = Self::default();
        for path in requests {
            plan.add(path)?;
        }
        Ok(plan)
    }

    /// The client's plan from `REQUESTS` (URLs), and the one authority they all name.
    fn for_client(requests: &[String]) -> Result<(String, Self), String> {
        let mut plan = Self::default();
        let mut authority = None;
        for url in requests {
            let uri: Uri = url.parse().map_err(|error| format!("{url}: {error}"))?;
            let (Some("https"), Some(this)) = (uri.scheme_str(), uri.authority()) else {
                return Err(format!("{url}: not an https URL with a host"));
            };
            match &authority {
                None => authority = Some(this.as_str().to_owned()),
                Some(first) if first == this.as_str() => {}
                Some(first) => {
                    return Err(format!(
                        "{url}: every request must go to {first}, on one connection"
                    ));
                }
            }
            plan.add(uri.path())?;
        }
        let authority = authority.ok_or("REQUESTS names no URL")?;
        Ok((authority, plan))
    }
}

/// Everything the environment says.
#[derive(Debug)]
struct Setup {
    role: Role,
    testcase: TestCase,
    requests: Vec<String>,
    protocols: Vec<String>,
    www: PathBuf,
    downloads: PathBuf,
    certs: PathBuf,
    listen: SocketAddr,
}

/// Why the environment cannot be used.
#[derive(Debug)]
enum SetupError {
    UnknownTestCase(String),
    Invalid(String),
}

impl Setup {
    fn from_env() -> Result<Self, SetupError> {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let words = |name: &str| -> Vec<String> {
            var(name)
                .map(|value| value.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let dir =
            |name: &str, default: &str| PathBuf::from(var(name).as_deref().unwrap_or(default));
        let role = match var("ROLE").as_deref() {
            Some("client") => Role::Client,
            Some("server") => Role::Server,
            other => {
                return Err(SetupError::Invalid(format!(
                    "ROLE is {other:?}, not client or server"
                )));
            }
        };
        let name = var("TESTCASE").unwrap_or_default();
        let testcase = TestCase::parse(&name).ok_or(SetupError::UnknownTestCase(name))?;
        let listen = var("LISTEN")
            .as_deref()
            .unwrap_or("[::]:443")
            .parse()
            .map_err(|error| SetupError::Invalid(format!("LISTEN: {error}")))?;
        Ok(Self {
            role,
            testcase,
            requests: words("REQUESTS"),
            protocols: words("PROTOCOLS"),
            www: dir("WWW", "/www"),
            downloads: var("DOWNLOADS")
                .or_else(|| var("DOWNLOAD_DIR"))
                .map_or_else(|| PathBuf::from("/downloads"), PathBuf::from),
            certs: dir("CERTS", "/certs"),
            listen,
        })
    }

    /// Writes the negotiated subprotocol (empty for none) where the runner looks for it.
    async fn write_protocol(&self, protocol: Option<&str>) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.downloads).await?;
        let path = self.downloads.join("negotiated_protocol.txt");
        tokio::fs::write(path, protocol.unwrap_or_default()).await
    }
}

/// `path` as a relative path of plain names (`a/b.txt`), or `None` for anything that could
/// leave the directory it is joined to or name it: empty, `.` or `..` segments, a leading `/`,
/// `\`, NUL, or a segment the platform reads as a prefix (`C:`).
fn relative_path(path: &str) -> Option<PathBuf> {
    if path.is_empty() {
        return None;
    }
    let mut relative = PathBuf::new();
    for segment in path.split('/') {
        if segment.contains(['\\', '\0']) {
            return None;
        }
        let mut components = Path::new(segment).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(name)), None) if name == segment => relative.push(segment),
            _ => return None,
        }
    }
    Some(relative)
}

/// The file named by a request line, `GET <file>` (trailing whitespace ignored).
fn parse_get(line: &[u8]) -> Option<&str> {
    let file = std::str::from_utf8(line.strip_prefix(b"GET ")?).ok()?;
    Some(file.trim_end())
}

/// The file named by a push header line, `PUSH <file>` (without its `\n`).
fn parse_push(line: &[u8]) -> Option<&str> {
    let file = std::str::from_utf8(line.strip_prefix(b"PUSH ")?).ok()?;
    Some(file.trim_end_matches('\r'))
}

/// What a peer's datagram says.
#[derive(Debug, PartialEq, Eq)]
enum Datagram<'a> {
    Get(&'a str),
    Push { file: &'a str, contents: &'a [u8] },
}

impl<'a> Datagram<'a> {
    fn parse(datagram: &'a [u8]) -> Option<Self> {
        if let Some(file) = parse_get(datagram) {
            return Some(Self::Get(file));
        }
        let end = datagram.iter().position(|&byte| byte == b'\n')?;
        let file = parse_push(&datagram[..end])?;
        Some(Self::Push {
            file,
            contents: &datagram[end + 1..],
        })
    }
}

/// A stream's first line and what followed it: the bytes up to the first `\n` (which is
/// dropped), or all of them when the stream ends first (then `finished`).
struct Head {
    line: Bytes,
    rest: Bytes,
    finished: bool,
}

/// Reads `recv` up to its first `\n` or its end, at most [`MAX_LINE`] bytes of line.
async fn read_head(recv: &mut RecvStream) -> Result<Head, Box<dyn Error + Send + Sync>> {
    let mut buffer = BytesMut::new();
    // Bounded: every turn adds at least one byte, and more than MAX_LINE is an error.
    loop {
        if let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
            let mut line = buffer.freeze();
            let rest = line.split_off(end + 1);
            line.truncate(end);
            return Ok(Head {
                line,
                rest,
                finished: false,
            });
        }
        if buffer.len() > MAX_LINE {
            return Err(format!("no line end in the first {MAX_LINE} bytes").into());
        }
        match recv.read_chunk(MAX_LINE + 1 - buffer.len()).await? {
            Some(chunk) => buffer.extend_from_slice(&chunk),
            None => {
                return Ok(Head {
                    line: buffer.freeze(),
                    rest: Bytes::new(),
                    finished: true,
                });
            }
        }
    }
}

/// One session: where its files are served from and saved to, and which of our requests wait
/// for a PUSH.
#[derive(Debug)]
struct Exchange {
    session: Session,
    /// `WWW/<endpoint>`.
    www: PathBuf,
    /// `DOWNLOADS/<endpoint>`.
    downloads: PathBuf,
    /// Files requested over unidirectional streams or datagrams and not pushed yet. A push of
    /// any other file is ignored, and a file is saved once.
    awaited: Mutex<HashSet<String>>,
    /// Tells the requester that an awaited file was saved (or why not). At most one message
    /// per awaited file, so the channel stays small.
    pushed: mpsc::UnboundedSender<Result<String, String>>,
}

impl Exchange {
    /// Starts answering the peer's requests on `session` for the endpoint `name`; returns the
    /// exchange and the receiver of its pushes, for [`fetch_all`].
    fn start(
        session: Session,
        name: &str,
        setup: &Setup,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Result<String, String>>) {
        let (pushed, pushes) = mpsc::unbounded_channel();
        let exchange = Arc::new(Self {
            session,
            www: setup.www.join(name),
            downloads: setup.downloads.join(name),
            awaited: Mutex::new(HashSet::new()),
            pushed,
        });
        tokio::spawn(exchange.clone().accept_uni());
        tokio::spawn(exchange.clone().accept_bi());
        tokio::spawn(exchange.clone().read_datagrams());
        (exchange, pushes)
    }

    /// Whether `file` is awaited; if so it is not any more.
    fn take_awaited(&self, file: &str) -> bool {
        let mut awaited = self.awaited.lock().unwrap_or_else(PoisonError::into_inner);
        awaited.remove(file)
    }

    /// The awaited files not pushed yet.
    fn still_awaited(&self) -> Vec<String> {
        let awaited = self.awaited.lock().unwrap_or_else(PoisonError::into_inner);
        awaited.iter().cloned().collect()
    }

    /// The file under `WWW/<endpoint>` that `file` names, if it is a safe relative path.
    fn served(&self, file: &str) -> Result<PathBuf, String> {
        relative_path(file)
            .map(|path| self.www.join(path))
            .ok_or_else(|| format!("refusing to serve {file:?}"))
    }

    /// Where `file` is saved, if it is a safe relative path.
    fn saved(&self, file: &str) -> Result<PathBuf, String> {
        relative_path(file)
            .map(|path| self.downloads.join(path))
            .ok_or_else(|| format!("refusing to save {file:?}"))
    }

    async fn accept_uni(self: Arc<Self>) {
        // Bounded by the session: each turn takes one of the peer's streams.
        while let Ok(Some(recv)) = self.session.accept_uni().await {
            let exchange = self.clone();
            tokio::spawn(async move {
                if let Err(error) = exchange.on_uni(recv).await {
                    eprintln!("unidirectional stream: {}", one_line(error.as_ref()));
                }
            });
        }
    }

    /// A peer's unidirectional stream: a GET to answer with a PUSH, or a PUSH to save.
    async fn on_uni(&self, mut recv: RecvStream) -> Result<(), Box<dyn Error + Send + Sync>> {
        let head = read_head(&mut recv).await?;
        if let Some(file) = parse_get(&head.line) {
            let path = self.served(file)?;
            let mut send = self.session.open_uni().await?;
            let header = Bytes::from(format!("PUSH {file}\n"));
            let sent = send_file(&path, &mut send, header).await;
            report_sent(Kind::Uni, file, &sent);
            return sent;
        }
        match parse_push(&head.line) {
            Some(file) if !head.finished && self.take_awaited(file) => {
                let saved = self.save(file, &head.rest, Some(&mut recv)).await;
                let _ = self.pushed.send(saved.map(|()| file.to_owned()));
                Ok(())
            }
            Some(file) => Err(format!("a PUSH of {file:?}, which was not requested").into()),
            None => Err("neither a GET nor a PUSH".into()),
        }
    }

    async fn accept_bi(self: Arc<Self>) {
        // Bounded by the session: each turn takes one of the peer's streams.
        while let Ok(Some((send, recv))) = self.session.accept_bi().await {
            let exchange = self.clone();
            tokio::spawn(async move {
                if let Err(error) = exchange.on_bi(send, recv).await {
                    eprintln!("bidirectional stream: {}", one_line(error.as_ref()));
                }
            });
        }
    }

    /// A peer's bidirectional stream: a GET, answered on the same stream. A request that cannot
    /// be answered (too long, not a GET, a bad path, a missing file) gets the stream reset with
    /// [`NOT_SERVED`], so that it is not mistaken for an empty file.
    async fn on_bi(
        &self,
        mut send: SendStream,
        mut recv: RecvStream,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let answered = self.answer_bi(&mut send, &mut recv).await;
        if answered.is_err() {
            let _ = send.reset(NOT_SERVED);
        }
        answered
    }

    async fn answer_bi(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> Result<(), Box<dyn Error + Send + Sync>> {
        let request = recv.read_to_end(MAX_LINE).await?;
        let file = parse_get(&request).ok_or("not a GET")?;
        let sent = send_file(&self.served(file)?, send, Bytes::new()).await;
        report_sent(Kind::Bidi, file, &sent);
        sent
    }

    async fn read_datagrams(self: Arc<Self>) {
        // Bounded by the session: each turn takes one datagram.
        while let Ok(datagram) = self.session.read_datagram().await {
            let exchange = self.clone();
            tokio::spawn(async move {
                if let Err(error) = exchange.on_datagram(&datagram).await {
                    eprintln!("datagram: {}", one_line(error.as_ref()));
                }
            });
        }
    }

    /// A peer's datagram: a GET to answer with a PUSH datagram, or a PUSH to save.
    async fn on_datagram(&self, datagram: &[u8]) -> Result<(), Box<dyn Error + Send + Sync>> {
        match Datagram::parse(datagram) {
            Some(Datagram::Get(file)) => {
                let sent = self.push_datagram(file).await;
                report_sent(Kind::Datagram, file, &sent);
                sent
            }
            // A repeated PUSH (for a repeated GET) is not awaited any more: dropped quietly.
            Some(Datagram::Push { file, contents }) => {
                if self.take_awaited(file) {
                    let saved = self.save(file, contents, None).await;
                    let _ = self.pushed.send(saved.map(|()| file.to_owned()));
                }
                Ok(())
            }
            None => Err("neither a GET nor a PUSH".into()),
        }
    }

    async fn push_datagram(&self, file: &str) -> Result<(), Box<dyn Error + Send + Sync>> {
        let path = self.served(file)?;
        let header = format!("PUSH {file}\n");
        let room = self.session.max_datagram_size().unwrap_or(0);
        let size = tokio::fs::metadata(&path).await?.len();
        if usize::try_from(size).map_or(true, |size| header.len() + size > room) {
            return Err(format!("{size} bytes do not fit in a datagram of {room}").into());
        }
        let mut datagram = header.into_bytes();
        datagram.extend(tokio::fs::read(&path).await?);
        self.session.send_datagram(datagram.into())?;
        Ok(())
    }

    /// Saves `file`: `first`, then the rest of `recv` if given.
    async fn save(
        &self,
        file: &str,
        first: &[u8],
        recv: Option<&mut RecvStream>,
    ) -> Result<(), String> {
        let path = self.saved(file)?;
        let written = write_file(&path, first, recv).await;
        match written {
            Ok(bytes) => {
                say!("saved {} ({bytes} bytes)", path.display());
                Ok(())
            }
            Err(error) => Err(format!("{}: {error}", path.display())),
        }
    }
}

/// Sends `header` then the file at `path` on `send`, and finishes it.
async fn send_file(
    path: &Path,
    send: &mut SendStream,
    header: Bytes,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if !header.is_empty() {
        send.write_chunk(header).await?;
    }
    tokio::io::copy_buf(&mut BufReader::with_capacity(CHUNK, file), send).await?;
    send.finish()?;
    Ok(())
}

fn report_sent(kind: Kind, file: &str, sent: &Result<(), Box<dyn Error + Send + Sync>>) {
    if sent.is_ok() {
        say!("sent {file} ({kind:?})");
    }
}

/// Writes `first` and then what `recv` still has to the file at `path` (making its
/// directories); returns the bytes written.
async fn write_file(
    path: &Path,
    first: &[u8],
    recv: Option<&mut RecvStream>,
) -> std::io::Result<u64> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::fs::File::create(path).await?;
    file.write_all(first).await?;
    let mut bytes = first.len() as u64;
    if let Some(recv) = recv {
        bytes += tokio::io::copy(recv, &mut file).await?;
    }
    // tokio writes in the background; the file is complete only once flushed.
    file.flush().await?;
    Ok(bytes)
}

/// Requests every file of `files` over `kind` on `exchange`'s session, all at once, and waits
/// until each is saved.
async fn fetch_all(
    exchange: Arc<Exchange>,
    kind: Kind,
    files: Vec<String>,
    mut pushes: mpsc::UnboundedReceiver<Result<String, String>>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    if files.is_empty() {
        return Ok(());
    }
    if kind == Kind::Bidi {
        let mut fetches = JoinSet::new();
        for file in files {
            fetches.spawn(fetch_bidi(exchange.clone(), file));
        }
        // Bounded: each turn joins one fetch.
        while let Some(fetched) = fetches.join_next().await {
            fetched??;
        }
        return Ok(());
    }
    exchange
        .awaited
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(files.iter().cloned());
    let mut left = files.len();
    if kind == Kind::Uni {
        let mut gets = JoinSet::new();
        for file in files {
            let session = exchange.session.clone();
            gets.spawn(async move {
                let mut send = session.open_uni().await?;
                send.write_chunk(Bytes::from(format!("GET {file}"))).await?;
                send.finish()?;
                Ok::<_, Box<dyn Error + Send + Sync>>(())
            });
        }
        // Bounded: each turn joins one GET.
        while let Some(sent) = gets.join_next().await {
            sent??;
        }
        return wait_for_pushes(&exchange, &mut pushes, &mut left, None).await;
    }
    for _ in 0..DATAGRAM_ROUNDS {
        for file in exchange.still_awaited() {
            exchange
                .session
                .send_datagram(Bytes::from(format!("GET {file}")))?;
        }
        let deadline = Instant::now() + DATAGRAM_RETRY;
        wait_for_pushes(&exchange, &mut pushes, &mut left, Some(deadline)).await?;
        if left == 0 {
            return Ok(());
        }
    }
    Err(
        format!("{left} files still missing after {DATAGRAM_ROUNDS} rounds of GET datagrams")
            .into(),
    )
}

/// Waits until `left` awaited files are saved (counting them down), the session ends (an
/// error), or `deadline` passes (then `left` says how many are missing).
async fn wait_for_pushes(
    exchange: &Exchange,
    pushes: &mut mpsc::UnboundedReceiver<Result<String, String>>,
    left: &mut usize,
    deadline: Option<Instant>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    // Bounded: each turn counts one file down or returns.
    while *left > 0 {
        let push = async {
            match deadline {
                Some(deadline) => timeout_at(deadline, pushes.recv()).await.ok(),
                None => Some(pushes.recv().await),
            }
        };
        tokio::select! {
            push = push => match push {
                Some(Some(Ok(_file))) => *left -= 1,
                Some(Some(Err(error))) => return Err(error.into()),
                // The exchange holds the sender, so the channel does not close first.
                Some(None) => return Err("no more pushes".into()),
                None => return Ok(()),
            },
            reason = exchange.session.closed() => {
                return Err(format!("session ended with {} files missing: {reason}", *left).into());
            }
        }
    }
    Ok(())
}

/// Fetches `file` on a bidirectional stream and saves it.
async fn fetch_bidi(
    exchange: Arc<Exchange>,
    file: String,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let (mut send, mut recv) = exchange.session.open_bi().await?;
    send.write_chunk(Bytes::from(format!("GET {file}"))).await?;
    send.finish()?;
    exchange.save(&file, &[], Some(&mut recv)).await?;
    Ok(())
}

async fn run_server(setup: Setup) -> Result<(), Box<dyn Error + Send + Sync>> {
    let identity =
        Identity::from_pem_files(setup.certs.join("cert.pem"), setup.certs.join("priv.key"))?;
    let server = Server::bind(setup.listen, identity, Config::default())?;
    say!("listening on {}", server.local_addr()?);
    let (kind, mut plan) = match setup.testcase {
        TestCase::Request(kind) => (Some(kind), Plan::for_server(&setup.requests)?),
        _ => (None, Plan::default()),
    };
    let active = kind.is_some() && !plan.endpoints.is_empty();
    let mut sessions = Vec::new();
    let mut requests = JoinSet::new();
    let stop = stop_signal();
    tokio::pin!(stop);
    // Bounded by the endpoint: each turn accepts a session, joins a requester, or stops.
    loop {
        tokio::select! {
            request = server.accept() => {
                let Some(request) = request else { break };
                let Some((name, session)) = accept(request, &setup).await? else { continue };
                let (exchange, pushes) = Exchange::start(session.clone(), &name, &setup);
                sessions.push(session);
                if let (Some(kind), Some(files)) = (kind, plan.endpoints.remove(&name)) {
                    requests.spawn(fetch_all(exchange, kind, files, pushes));
                }
            }
            Some(done) = requests.join_next() => {
                done??;
                if active && plan.endpoints.is_empty() && requests.is_empty() {
                    say!("every file received");
                    break;
                }
            }
            stopped = &mut stop => {
                stopped?;
                break;
            }
        }
    }
    for session in &sessions {
        session.close(0, "done");
    }
    server.close();
    let _ = timeout(CLOSE_WAIT, server.endpoint().wait_idle()).await;
    Ok(())
}

/// Accepts a session on a plain endpoint name (refuses any other path with 404) with the
/// client's first subprotocol that we list too; returns the endpoint and the session, or `None`
/// when there is none. In `handshake`, writes the protocol first.
async fn accept(
    request: Request,
    setup: &Setup,
) -> Result<Option<(String, Session)>, Box<dyn Error + Send + Sync>> {
    let Some(name) = relative_path(request.path().trim_matches('/'))
        .filter(|path| path.components().count() == 1)
        .and_then(|path| Some(path.to_str()?.to_owned()))
    else {
        request.reject(http::StatusCode::NOT_FOUND).await;
        return Ok(None);
    };
    let offered = request.protocols();
    let chosen = offered.iter().find(|p| setup.protocols.contains(p));
    // Before the answer, so that the line is out before the client has its session.
    say!(
        "session /{name} on connection {}, protocol {chosen:?}",
        request.connection().stable_id()
    );
    if setup.testcase == TestCase::Handshake {
        setup.write_protocol(chosen.map(String::as_str)).await?;
    }
    let session = match chosen {
        Some(protocol) => request.ok_with_protocol(protocol).await,
        None => request.ok().await,
    };
    match session {
        Ok(session) => Ok(Some((name, session))),
        Err(error) => {
            eprintln!("session /{name}: {}", one_line(&error));
            Ok(None)
        }
    }
}

/// Waits for SIGTERM (how `docker compose` stops the runner's containers) or SIGINT.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => Ok(()),
            interrupted = tokio::signal::ctrl_c() => interrupted,
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

async fn run_client(setup: Setup) -> Result<(), Box<dyn Error + Send + Sync>> {
    let (authority, plan) = Plan::for_client(&setup.requests)?;
    let ca = setup.certs.join("ca.pem");
    let trust = if ca.exists() {
        Trust::roots_from_pem_file(&ca)?
    } else {
        Trust::SystemRoots
    };
    // Our own endpoint rather than `Client::connect`'s, so that we can wait for the
    // CONNECTION_CLOSE to go out before exiting.
    let endpoint = ClientBuilder::new().trust(trust).build()?;
    let uri: Uri = format!("https://{authority}/").parse()?;
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let connection = endpoint.connect(addr, host)?.await?;
    say!("connected to {addr}");
    let client = Client::new(connection, Config::default());

    // One session per endpoint, all opened at once on this one connection.
    let mut options = SessionOptions::default();
    options.protocols = setup.protocols.clone();
    let mut opening = JoinSet::new();
    for (name, files) in plan.endpoints {
        let (client, options) = (client.clone(), options.clone());
        let url = format!("https://{authority}/{name}");
        opening.spawn(async move {
            let session = client.open(&url, &options).await;
            (name, files, session)
        });
    }
    let mut sessions = Vec::new();
    // Bounded: each turn joins one opening.
    while let Some(opened) = opening.join_next().await {
        let (name, files, session) = opened?;
        let session = session.map_err(|error| format!("session /{name}: {}", one_line(&error)))?;
        say!("session /{name} (protocol {:?})", session.protocol());
        sessions.push((name, files, session));
    }

    let result = match setup.testcase {
        TestCase::Handshake => {
            let protocol = sessions.first().and_then(|(_, _, s)| s.protocol());
            setup.write_protocol(protocol).await.map_err(Into::into)
        }
        TestCase::Transfer => {
            for (name, _, session) in &sessions {
                Exchange::start(session.clone(), name, &setup);
            }
            // Until the server has closed every session (the runner stops us otherwise).
            for (name, _, session) in &sessions {
                say!("session /{name} ended: {}", session.closed().await);
            }
            Ok(())
        }
        TestCase::Request(kind) => {
            let mut requests = JoinSet::new();
            for (name, files, session) in &sessions {
                let (exchange, pushes) = Exchange::start(session.clone(), name, &setup);
                requests.spawn(fetch_all(exchange, kind, files.clone(), pushes));
            }
            let mut result = Ok(());
            // Bounded: each turn joins one session's requests.
            while let Some(done) = requests.join_next().await {
                if let Err(error) = done.map_err(Into::into).and_then(|done| done) {
                    result = Err(error);
                }
            }
            result
        }
    };
    for (_, _, session) in &sessions {
        session.close(0, "done");
    }
    client.h3().close(Code::H3_NO_ERROR, b"done");
    let _ = timeout(CLOSE_WAIT, endpoint.wait_idle()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cases_by_name() {
        assert_eq!(TestCase::parse("handshake"), Some(TestCase::Handshake));
        assert_eq!(TestCase::parse("transfer"), Some(TestCase::Transfer));
        assert_eq!(
            TestCase::parse("transfer-unidirectional-send"),
            Some(TestCase::Request(Kind::Uni))
        );
        assert_eq!(
            TestCase::parse("transfer-bidirectional-receive"),
            Some(TestCase::Request(Kind::Bidi))
        );
        assert_eq!(
            TestCase::parse("transfer-datagram-send"),
            Some(TestCase::Request(Kind::Datagram))
        );
        for unknown in ["", "retry", "transfer-datagram", "transfer-stream-send"] {
            assert_eq!(TestCase::parse(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn paths_stay_inside() {
        assert_eq!(relative_path("a.txt"), Some(PathBuf::from("a.txt")));
        assert_eq!(relative_path("d/a.txt"), Some(PathBuf::from("d/a.txt")));
        for bad in [
            "",
            "..",
            "../a",
            "d/../../a",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a\0",
        ] {
            assert_eq!(relative_path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn client_plan_groups_by_endpoint() {
        let requests = [
            "https://server4:443/webtransport1/a.txt",
            "https://server4:443/webtransport2",
            "https://server4:443/webtransport1/d/b.txt",
        ]
        .map(String::from);
        let (authority, plan) = Plan::for_client(&requests).unwrap();
        assert_eq!(authority, "server4:443");
        assert_eq!(plan.endpoints["webtransport1"], ["a.txt", "d/b.txt"]);
        assert!(plan.endpoints["webtransport2"].is_empty());

        let escape = ["https://server4:443/webtransport1/../secret".to_owned()];
        assert!(Plan::for_client(&escape).is_err());
        let two_hosts = ["https://a/x/1", "https://b/x/2"].map(String::from);
        assert!(Plan::for_client(&two_hosts).is_err());
    }

    #[test]
    fn server_plan_takes_paths() {
        let requests = ["webtransport1/a.txt", "webtransport2/b.txt"].map(String::from);
        let plan = Plan::for_server(&requests).unwrap();
        assert_eq!(plan.endpoints["webtransport1"], ["a.txt"]);
        assert_eq!(plan.endpoints["webtransport2"], ["b.txt"]);
        assert!(Plan::for_server(&["../x/a".to_owned()]).is_err());
    }

    #[test]
    fn request_lines() {
        assert_eq!(parse_get(b"GET a.txt"), Some("a.txt"));
        assert_eq!(parse_get(b"GET a.txt\r\n"), Some("a.txt"));
        assert_eq!(parse_get(b"PUT a.txt"), None);
        assert_eq!(parse_push(b"PUSH a.txt"), Some("a.txt"));
        assert_eq!(
            Datagram::parse(b"PUSH a.txt\nhello\n"),
            Some(Datagram::Push {
                file: "a.txt",
                contents: b"hello\n"
            })
        );
        assert_eq!(Datagram::parse(b"GET b"), Some(Datagram::Get("b")));
        assert_eq!(Datagram::parse(b"PUSH no line end"), None);
    }
}
