//! Real browsers in the test suite: Debian's headless Chromium and Firefox ESR load a page from
//! a tiny HTTP server on 127.0.0.1, and the page's script reports its checks back by POSTing
//! JSON to it. Both browsers run the same page, so a check added once runs in both.
//!
//! Nothing is fetched from the network and no DevTools protocol or WebDriver is needed:
//! - [`Browser`] starts a [`BrowserKind`] (`/usr/bin/chromium` or `/usr/bin/firefox-esr`, or
//!   `$CHROMIUM` / `$FIREFOX`) headless, with a fresh profile in a temporary directory and its
//!   output in a log file whose tail goes into failure messages; it is killed when dropped;
//! - [`PageServer`] serves one HTML page on `http://127.0.0.1:PORT/` (a secure context, so the
//!   page may use WebTransport) with hyper, and collects the lines POSTed to `/result`, each
//!   `{"check": name, "ok": bool, "detail": string}` ([`CheckResult`]);
//! - [`run`] puts the two together: it serves a [`Page`], points the browser at it and waits,
//!   bounded, for the check named [`DONE`], failing loudly (with the checks seen so far and the
//!   tail of the browser's log) when it does not come or when the browser exits.
//!
//! # The WebTransport page
//!
//! [`Page::webtransport`] is the page of `tests/browser/webtransport.js` ([`WEBTRANSPORT_JS`]),
//! parameterised by the server's base URL and its certificate hash (the page connects with
//! `serverCertificateHashes`, so a self-signed certificate valid for at most 14 days is enough).
//! A server under test implements the other side of each check, by session path ([`paths`]):
//!
//! | path | the server | page checks |
//! | --- | --- | --- |
//! | [`paths::ECHO`] | echoes each bidi stream (read to FIN, write back, FIN); answers each uni stream with a uni stream of the same bytes; echoes datagrams | `bidi_echo_1k`, `bidi_echo_1m`, `bidi_100_concurrent`, `uni_both_ways`, `datagram_echo` |
//! | [`paths::SERVER_BIDI`] | opens a bidi stream, writes [`SERVER_BIDI_GREETING`] and FIN, reads the page's answer ([`SERVER_BIDI_REPLY`]) | `server_initiated_bidi` |
//! | [`paths::PAGE_CLOSE`] | waits for the session to end: the page closes it with [`PAGE_CLOSE_CODE`] and [`PAGE_CLOSE_REASON`] | `page_close` |
//! | [`paths::PAGE_CLOSE_MANY`] | the same, for each of [`PAGE_CLOSE_SESSIONS`] sessions the page opens and closes one after another | `page_close_many` |
//! | [`paths::SERVER_CLOSE`] | on the page's first uni stream closes the session with [`SERVER_CLOSE_CODE`] and [`SERVER_CLOSE_REASON`] | `server_close` |
//! | [`paths::REJECT`] | rejects the CONNECT with 403 | `rejected_403` |
//!
//! The page checks what it can see; what only the server sees (the page's close code, the
//! page's answer on a server-initiated stream) the server side of the test asserts.

use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use quay_transport::CertificateHash;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// The script of the WebTransport page (`tests/browser/webtransport.js`).
pub const WEBTRANSPORT_JS: &str = include_str!("../browser/webtransport.js");

/// The name of the check a page reports last, when all its checks have run.
pub const DONE: &str = "done";

/// How long one check of the WebTransport page may take before the page reports it failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// The close code the page's `close()` sends on [`paths::PAGE_CLOSE`].
pub const PAGE_CLOSE_CODE: u32 = 42;
/// The reason the page's `close()` sends on [`paths::PAGE_CLOSE`].
pub const PAGE_CLOSE_REASON: &str = "bye";
/// How many sessions the page opens and closes on [`paths::PAGE_CLOSE_MANY`].
pub const PAGE_CLOSE_SESSIONS: usize = 50;
/// The close code the server sends on [`paths::SERVER_CLOSE`].
pub const SERVER_CLOSE_CODE: u32 = 7;
/// The reason the server sends on [`paths::SERVER_CLOSE`].
pub const SERVER_CLOSE_REASON: &str = "bye from the server";
/// What the server writes on the stream it opens on [`paths::SERVER_BIDI`].
pub const SERVER_BIDI_GREETING: &str = "hello from the server";
/// What the page answers on that stream.
pub const SERVER_BIDI_REPLY: &str = "hello from the page";

/// The session paths of the WebTransport page; see the [module documentation](self).
pub mod paths {
    /// Echo of bidi streams, uni streams and datagrams.
    pub const ECHO: &str = "/echo";
    /// A server-initiated bidi stream.
    pub const SERVER_BIDI: &str = "/server-bidi";
    /// The page closes the session.
    pub const PAGE_CLOSE: &str = "/page-close";
    /// The page opens and closes [`PAGE_CLOSE_SESSIONS`](super::PAGE_CLOSE_SESSIONS) sessions.
    pub const PAGE_CLOSE_MANY: &str = "/page-close-many";
    /// The server closes the session when asked.
    pub const SERVER_CLOSE: &str = "/server-close";
    /// The server rejects the session with 403.
    pub const REJECT: &str = "/reject";
}

/// The checks of the WebTransport page, in the order it runs them.
pub const WEBTRANSPORT_CHECKS: &[&str] = &[
    "bidi_echo_1k",
    "bidi_echo_1m",
    "bidi_100_concurrent",
    "uni_both_ways",
    "datagram_echo",
    "server_initiated_bidi",
    "page_close",
    "page_close_many",
    "server_close",
    "rejected_403",
];

/// A browser the tests can run: Debian's package of it, where the package puts it, and the
/// environment variable that names another binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowserKind {
    /// Debian's `chromium`: `/usr/bin/chromium`, or `$CHROMIUM`.
    Chromium,
    /// Debian's `firefox-esr`: `/usr/bin/firefox-esr`, or `$FIREFOX`.
    Firefox,
}

impl BrowserKind {
    /// Every browser the tests run, in the order they run.
    pub const ALL: [Self; 2] = [Self::Chromium, Self::Firefox];

    /// The browser's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chromium => "Chromium",
            Self::Firefox => "Firefox",
        }
    }

    /// The Debian package that installs the browser.
    pub fn package(self) -> &'static str {
        match self {
            Self::Chromium => "chromium",
            Self::Firefox => "firefox-esr",
        }
    }

    /// The environment variable that names the browser's binary, overriding
    /// [`BrowserKind::default_path`].
    pub fn env(self) -> &'static str {
        match self {
            Self::Chromium => "CHROMIUM",
            Self::Firefox => "FIREFOX",
        }
    }

    /// Where the Debian package puts the browser.
    pub fn default_path(self) -> &'static str {
        match self {
            Self::Chromium => "/usr/bin/chromium",
            Self::Firefox => "/usr/bin/firefox-esr",
        }
    }

    /// The browser to run: the variable's binary if set, else the package's. Fails, naming the
    /// Debian package to install, when it does not exist.
    pub fn binary(self) -> anyhow::Result<PathBuf> {
        let path = std::env::var_os(self.env())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(self.default_path()));
        if !path.is_file() {
            bail!(
                "no {} at {}: install it with `apt-get install {}` (scripts/test does), or set ${} \
                 to the browser",
                self.name(),
                path.display(),
                self.package(),
                self.env(),
            );
        }
        Ok(path)
    }
}

/// Firefox preferences for a test profile: no first-run pages, no update, telemetry or other
/// background traffic (the network is closed, and none of it is under test).
const FIREFOX_PREFS: &str = r#"user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("startup.homepage_welcome_url", "about:blank");
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.update.auto", false);
user_pref("app.update.enabled", false);
user_pref("app.normandy.enabled", false);
user_pref("extensions.update.enabled", false);
user_pref("browser.safebrowsing.malware.enabled", false);
user_pref("browser.safebrowsing.phishing.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
"#;

/// A headless browser, killed (and its profile directory removed) when dropped.
#[derive(Debug)]
pub struct Browser {
    kind: BrowserKind,
    child: Child,
    log: PathBuf,
    // Holds the profile and the log; removed on drop, after the browser is killed.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts the browser headless on `url`, with a fresh profile in a temporary directory and
    /// its output in a log file.
    ///
    /// Chromium runs with no GPU, no sandbox (tests run as root) and no background networking.
    /// Firefox runs as `firefox-esr --headless --no-remote --profile DIR URL`, with a profile
    /// whose preferences turn off first-run pages and background traffic (`FIREFOX_PREFS`, a
    /// private constant of this module); WebTransport with `serverCertificateHashes` needs no
    /// preference.
    pub fn launch(kind: BrowserKind, url: &str) -> anyhow::Result<Self> {
        Self::launch_with_args(kind, url, &[])
    }

    /// [`Browser::launch`], with `chromium_args` added to Chromium's command line (such as
    /// `--origin-to-force-quic-on=HOST:PORT` and `--ignore-certificate-errors-spki-list=HASH`,
    /// for HTTP/3 to a self-signed server); Firefox ignores them.
    pub fn launch_with_args(
        kind: BrowserKind,
        url: &str,
        chromium_args: &[String],
    ) -> anyhow::Result<Self> {
        let binary = kind.binary()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("quay-{}-", kind.package()))
            .tempdir()
            .with_context(|| format!("creating {}'s profile directory", kind.name()))?;
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).context("creating the profile")?;
        let log = dir.path().join("browser.log");
        let output = File::create(&log).context("creating the browser's log")?;
        let mut command = Command::new(&binary);
        match kind {
            BrowserKind::Chromium => {
                command
                    .args([
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--disable-extensions",
                        "--enable-logging=stderr",
                        "--v=0",
                    ])
                    .arg(format!("--user-data-dir={}", profile.display()))
                    .args(chromium_args);
            }
            BrowserKind::Firefox => {
                std::fs::write(profile.join("user.js"), FIREFOX_PREFS)
                    .context("writing Firefox's preferences")?;
                command
                    .args(["--headless", "--no-remote", "--profile"])
                    .arg(&profile)
                    // Firefox refuses to start as root under a user's X session; headless, it
                    // needs none.
                    .env_remove("DISPLAY")
                    .env_remove("XAUTHORITY");
            }
        }
        let child = command
            .arg(url)
            .stdin(Stdio::null())
            .stdout(output.try_clone().context("sharing the browser's log")?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            kind,
            child,
            log,
            dir,
        })
    }

    /// Which browser this is.
    pub fn kind(&self) -> BrowserKind {
        self.kind
    }

    /// The browser's exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the browser's log (its stdout and stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut file) = File::open(&self.log) else {
            return format!("(no log at {})", self.log.display());
        };
        // The tail is in the last 64 KiB unless lines are very long.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut text = Vec::new();
        let _ = file.read_to_end(&mut text);
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The directory holding the profile and the log (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line a page POSTs to `/result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// What the page saw (timings on success, the error on failure).
    pub detail: String,
}

impl CheckResult {
    /// Parses one JSON line `{"check": name, "ok": bool, "detail": string}`.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("result line {line:?}"))?;
        let check = value["check"].as_str();
        let ok = value["ok"].as_bool();
        let (Some(check), Some(ok)) = (check, ok) else {
            bail!("result line {line:?} lacks a string \"check\" or a boolean \"ok\"");
        };
        Ok(Self {
            check: check.to_owned(),
            ok,
            detail: value["detail"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// One HTML page: a configuration script then the test script.
#[derive(Clone, Debug)]
pub struct Page {
    html: Arc<str>,
}

impl Page {
    /// A page titled `title` that runs `config` (JavaScript, e.g. `const QUAY = {...};`) and
    /// then `script`.
    pub fn new(title: &str, config: &str, script: &str) -> Self {
        let html = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
             <body>\n<script>\n{config}\n</script>\n<script>\n{script}\n</script>\n</body></html>\n"
        );
        Self { html: html.into() }
    }

    /// A page of its own: `html` served as it is (e.g. an application's page with a checking
    /// script added, which reports to `/result` like the WebTransport page does).
    pub fn from_html(html: &str) -> Self {
        Self { html: html.into() }
    }

    /// The WebTransport page ([`WEBTRANSPORT_JS`]) against the server at `base` (e.g.
    /// `https://127.0.0.1:4433`, no trailing slash), whose certificate has the SHA-256 `hash`.
    pub fn webtransport(base: &str, hash: &CertificateHash) -> Self {
        let string = |s: &str| serde_json::Value::from(s).to_string();
        let close = |code: u32, reason: &str| {
            format!("{{ closeCode: {code}, reason: {} }}", string(reason))
        };
        let config = format!(
            "const QUAY = {{\n  base: {base},\n  hashes: [{{ algorithm: \"sha-256\", value: new Uint8Array({hash}) }}],\n  \
             paths: {{ echo: {echo}, serverBidi: {server_bidi}, pageClose: {page_close}, pageCloseMany: {page_close_many}, serverClose: {server_close}, reject: {reject} }},\n  \
             pageClose: {page_close_info},\n  pageCloseSessions: {page_close_sessions},\n  serverClose: {server_close_info},\n  \
             serverBidiGreeting: {greeting},\n  serverBidiReply: {reply},\n  checkTimeoutMs: {timeout},\n}};",
            base = string(base),
            hash = hash.to_js_array(),
            echo = string(paths::ECHO),
            server_bidi = string(paths::SERVER_BIDI),
            page_close = string(paths::PAGE_CLOSE),
            page_close_many = string(paths::PAGE_CLOSE_MANY),
            server_close = string(paths::SERVER_CLOSE),
            reject = string(paths::REJECT),
            page_close_info = close(PAGE_CLOSE_CODE, PAGE_CLOSE_REASON),
            page_close_sessions = PAGE_CLOSE_SESSIONS,
            server_close_info = close(SERVER_CLOSE_CODE, SERVER_CLOSE_REASON),
            greeting = string(SERVER_BIDI_GREETING),
            reply = string(SERVER_BIDI_REPLY),
            timeout = CHECK_TIMEOUT.as_millis(),
        );
        Self::new("quay WebTransport checks", &config, WEBTRANSPORT_JS)
    }

    /// The whole HTML text.
    pub fn html(&self) -> &str {
        &self.html
    }
}

/// Serves a [`Page`] at `http://127.0.0.1:PORT/` and collects what is POSTed to `/result`.
/// Stops serving (every connection) when dropped. Needs a tokio runtime.
#[derive(Debug)]
pub struct PageServer {
    addr: SocketAddr,
    results: mpsc::UnboundedReceiver<CheckResult>,
    task: JoinHandle<()>,
}

/// The largest body accepted on `/result`.
const MAX_RESULT_BODY: usize = 1 << 20;

impl PageServer {
    /// Binds 127.0.0.1 on a port chosen by the system and starts serving `page`.
    pub async fn start(page: Page) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the page server")?;
        let addr = listener.local_addr()?;
        let (sender, results) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // Owned here so that aborting the accept loop drops every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let page = page.clone();
                let sender = sender.clone();
                let service =
                    service_fn(move |request| handle(request, page.html.clone(), sender.clone()));
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set stays small.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            addr,
            results,
            task,
        })
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The next result the page POSTed, or `None` if the server stopped.
    pub async fn next(&mut self) -> Option<CheckResult> {
        self.results.recv().await
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    request: Request<Incoming>,
    html: Arc<str>,
    results: mpsc::UnboundedSender<CheckResult>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = |status: StatusCode, content_type: &str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
        if let Ok(value) = content_type.parse() {
            headers.insert(header::CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    Ok(match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::copy_from_slice(html.as_bytes()),
        ),
        (&Method::POST, "/result") => {
            match Limited::new(request.into_body(), MAX_RESULT_BODY)
                .collect()
                .await
            {
                Ok(body) => {
                    let body = body.to_bytes();
                    for line in String::from_utf8_lossy(&body).lines() {
                        if line.trim().is_empty() {
                            continue;
                        }
                        let result = CheckResult::parse(line).unwrap_or_else(|e| CheckResult {
                            check: "page-server".to_owned(),
                            ok: false,
                            detail: format!("{e:#}"),
                        });
                        let _ = results.send(result);
                    }
                    response(StatusCode::NO_CONTENT, text, Bytes::new())
                }
                Err(e) => response(StatusCode::BAD_REQUEST, text, e.to_string().into()),
            }
        }
        _ => response(
            StatusCode::NOT_FOUND,
            text,
            Bytes::from_static(b"not found"),
        ),
    })
}

/// What a page reported.
#[derive(Clone, Debug)]
pub struct Report {
    /// The browser that ran the page.
    pub browser: BrowserKind,
    /// The results in the order they arrived, [`DONE`] excluded.
    pub results: Vec<CheckResult>,
    /// From starting the browser to [`DONE`].
    pub elapsed: Duration,
    /// The tail of the browser's log, for failure messages.
    pub log_tail: String,
}

impl Report {
    /// The result of `check`, if the page reported it.
    pub fn get(&self, check: &str) -> Option<&CheckResult> {
        self.results.iter().find(|result| result.check == check)
    }

    /// Fails unless the page reported `check` as passed; the error holds the page's detail (or
    /// the checks it did report) and the tail of the browser's log. Returns the detail.
    pub fn passed(&self, check: &str) -> anyhow::Result<&str> {
        let browser = self.browser.name();
        match self.get(check) {
            Some(result) if result.ok => Ok(&result.detail),
            Some(result) => bail!(
                "{browser} check {check} failed: {}\n--- {browser} log (tail) ---\n{}",
                result.detail,
                self.log_tail
            ),
            None => bail!(
                "the page never reported {check} in {browser}; it reported {:?}\n\
                 --- {browser} log (tail) ---\n{}",
                self.results,
                self.log_tail
            ),
        }
    }
}

/// Serves `page`, runs `browser` on it and collects its results until [`DONE`], at most for
/// `timeout`. Fails, with the results so far and the tail of the browser's log, when the time
/// is up or the browser exits first. The browser is killed before this returns.
pub async fn run(browser: BrowserKind, page: Page, timeout: Duration) -> anyhow::Result<Report> {
    run_with_args(browser, page, timeout, &[]).await
}

/// [`run`], with `chromium_args` added to Chromium's command line (see
/// [`Browser::launch_with_args`]).
pub async fn run_with_args(
    browser: BrowserKind,
    page: Page,
    timeout: Duration,
    chromium_args: &[String],
) -> anyhow::Result<Report> {
    // Fail before serving anything when there is no browser.
    browser.binary()?;
    let name = browser.name();
    let mut server = PageServer::start(page).await?;
    let start = Instant::now();
    let mut running = Browser::launch_with_args(browser, &server.url(), chromium_args)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut results = Vec::new();
    loop {
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(250)),
            server.next(),
        )
        .await;
        match next {
            Ok(Some(result)) if result.check == DONE => break,
            Ok(Some(result)) => results.push(result),
            Ok(None) => bail!("the page server stopped"),
            Err(_) => {
                let why = if let Some(status) = running.exited() {
                    format!("{name} exited ({status}) before the page was done")
                } else if tokio::time::Instant::now() >= deadline {
                    format!("the page was not done in {name} after {timeout:?}")
                } else {
                    continue;
                };
                bail!(
                    "{why}; it reported {results:?}\n--- {name} log (tail) ---\n{}",
                    running.log_tail(40)
                );
            }
        }
    }
    let elapsed = start.elapsed();
    let log_tail = running.log_tail(40);
    drop(running);
    Ok(Report {
        browser,
        results,
        elapsed,
        log_tail,
    })
}
