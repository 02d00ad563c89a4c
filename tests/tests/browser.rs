//! Debian's headless Chromium and Firefox ESR run the WebTransport page
//! (`tests/browser/webtransport.js`, see `quay_tests::browser`) against quay's own WebTransport
//! server (`quay_webtransport::Server`) with a self-signed certificate that the page pins by hash.
//!
//! Both browsers negotiate draft-02 here: this is the proof that quay's SETTINGS, CONNECT
//! handling, stream headers, datagram prefix and close capsules work with real browsers, with
//! the server's default configuration.
//!
//! The page runs once per browser per test binary ([`outcome`]), one browser at a time; each test
//! asserts one check, on the page's side and, where only the server can see it, on the server's
//! side. The same tests run in both browsers ([`browser_checks!`]). Needs Chromium and Firefox
//! ESR (`apt-get install chromium firefox-esr`, which `scripts/test` does): without one, its
//! tests fail and say so.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quay_tests::browser::{self, BrowserKind, CheckResult, Page, Report, paths};
use quay_tests::setup::loopback_any_port;
use quay_transport::{Identity, ServerBuilder};
use quay_webtransport::server::Request;
use quay_webtransport::{Config, Server, SessionError};
use tokio::sync::mpsc;

/// The whole browser run, from the browser's start to the page's last report.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server side of one session may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait, after the page is done, for the server side's last observations.
const SERVER_GRACE: Duration = Duration::from_secs(5);
/// The largest stream the echo server reads (the page sends at most 1 MiB).
const MAX_STREAM: usize = 2 << 20;

/// The checks the server side reports, beside the page's.
const SERVER_CHECKS: &[&str] = &[
    "uni_both_ways",
    "server_initiated_bidi",
    "page_close",
    "page_close_many",
    "server_close",
    "rejected_403",
];

/// What one run of the page produced.
struct Outcome {
    page: Report,
    server: Vec<CheckResult>,
}

/// Runs the page once per browser, on a runtime of its own, the first time a test asks; one
/// browser at a time, so that two never share this machine's cores.
fn outcome(browser: BrowserKind) -> &'static Result<Outcome, String> {
    static OUTCOMES: [OnceLock<Result<Outcome, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let cell = match browser {
        BrowserKind::Chromium => &OUTCOMES[0],
        BrowserKind::Firefox => &OUTCOMES[1],
    };
    cell.get_or_init(|| {
        let _running = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // Several threads, as servers run: the order in which woken tasks run is then the one
        // a deployed server sees (tokio runs the task woken last first on a worker).
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return Err(format!("building a runtime: {e}")),
        };
        let start = Instant::now();
        let outcome = runtime.block_on(run(browser)).map_err(|e| format!("{e:#}"));
        if let Ok(outcome) = &outcome {
            eprintln!(
                "{} run: page done in {:?}, all in {:?}",
                browser.name(),
                outcome.page.elapsed,
                start.elapsed()
            );
            for result in &outcome.page.results {
                eprintln!(
                    "  page   {:24} ok={} {}",
                    result.check, result.ok, result.detail
                );
            }
            for result in &outcome.server {
                eprintln!(
                    "  server {:24} ok={} {}",
                    result.check, result.ok, result.detail
                );
            }
        }
        outcome
    })
}

async fn run(browser: BrowserKind) -> anyhow::Result<Outcome> {
    let identity = Identity::self_signed(["localhost", "127.0.0.1"])?;
    let hash = identity.certificate_hash();
    let builder = ServerBuilder::new(identity);
    let endpoint = builder.bind(loopback_any_port())?;
    let port = endpoint.local_addr()?.port();
    let (events, mut server_results) = mpsc::unbounded_channel();
    // With quay-webtransport's `qlog` feature and $QLOGDIR set, each browser connection is
    // logged there.
    let acceptor = builder.acceptor()?;
    let server = Server::from_endpoint_with(endpoint.clone(), acceptor, Config::default());
    let server = tokio::spawn(serve(server, events));

    let page = Page::webtransport(&format!("https://127.0.0.1:{port}"), &hash);
    let report = browser::run(browser, page, RUN_TIMEOUT).await;

    // The server may see the last closes a little after the page reports them.
    let mut server_seen = Vec::new();
    // On failure the runtime, dropped by the caller, stops the server.
    let report = report?;
    let deadline = tokio::time::Instant::now() + SERVER_GRACE;
    while !SERVER_CHECKS
        .iter()
        .all(|check| server_seen.iter().any(|r: &CheckResult| r.check == *check))
    {
        match tokio::time::timeout_at(deadline, server_results.recv()).await {
            Ok(Some(result)) => server_seen.push(result),
            Ok(None) | Err(_) => break,
        }
    }
    while let Ok(result) = server_results.try_recv() {
        server_seen.push(result);
    }
    server.abort();
    endpoint.close(0u32.into(), b"test over");
    Ok(Outcome {
        page: report,
        server: server_seen,
    })
}

/// Accepts sessions and serves each by path, reporting what only the server sees to `events`.
async fn serve(server: Server, events: mpsc::UnboundedSender<CheckResult>) {
    let mut sessions = tokio::task::JoinSet::new();
    let many_closes = Arc::new(Mutex::new(ManyCloses::default()));
    while let Some(request) = server.accept().await {
        let events = events.clone();
        let many_closes = many_closes.clone();
        sessions.spawn(async move {
            let path = request.path().to_owned();
            let (check, result) =
                match tokio::time::timeout(SESSION_TIMEOUT, session(request, &path)).await {
                    Ok((check, result)) => (check, result),
                    Err(_) => (path.as_str(), Err(anyhow::anyhow!("timed out"))),
                };
            let (ok, detail) = match result {
                Ok(detail) => (true, detail),
                Err(e) => (false, format!("{path}: {e:#}")),
            };
            let result = CheckResult {
                check: check.to_owned(),
                ok,
                detail,
            };
            let result = if check == "page_close_many" {
                let mut many = many_closes
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                match many.count(result) {
                    Some(result) => result,
                    None => return,
                }
            } else {
                result
            };
            let _ = events.send(result);
        });
        while sessions.try_join_next().is_some() {}
    }
}

/// Serves one session; returns the name of the check it belongs to and what the server saw.
async fn session(request: Request, path: &str) -> (&'static str, anyhow::Result<String>) {
    match path {
        paths::ECHO => ("uni_both_ways", echo(request).await),
        paths::SERVER_BIDI => ("server_initiated_bidi", server_bidi(request).await),
        paths::PAGE_CLOSE => ("page_close", page_close(request).await),
        paths::PAGE_CLOSE_MANY => ("page_close_many", page_close(request).await),
        paths::SERVER_CLOSE => ("server_close", server_close(request).await),
        paths::REJECT => ("rejected_403", reject(request).await),
        _ => {
            request.reject(http::StatusCode::NOT_FOUND).await;
            ("unknown_path", Err(anyhow::anyhow!("no such path")))
        }
    }
}

/// Echoes bidi streams (each on its own task), answers each uni stream with a uni stream of the
/// same bytes and echoes datagrams, until the session ends; then reports the uni answers.
async fn echo(request: Request) -> anyhow::Result<String> {
    let negotiated = format!(
        "{:?}, :protocol {:?}",
        request.draft(),
        request.upgrade_token()
    );
    let session = request.ok().await?;
    let mut tasks = tokio::task::JoinSet::new();
    let datagrams = session.clone();
    tasks.spawn(async move {
        while let Ok(datagram) = datagrams.read_datagram().await {
            let _ = datagrams.send_datagram(datagram);
        }
    });
    let uni = session.clone();
    let uni_task = tokio::spawn(async move {
        let mut answers = Vec::new();
        while let Ok(Some(mut recv)) = uni.accept_uni().await {
            let answer = async {
                let data = recv.read_to_end(MAX_STREAM).await?;
                let mut send = uni.open_uni().await?;
                send.write_all(&data).await?;
                send.finish()?;
                anyhow::Ok(data.len())
            };
            answers.push(answer.await.map_err(|e| format!("{e:#}")));
        }
        answers
    });
    let mut streams = 0u64;
    while let Ok(Some((mut send, mut recv))) = session.accept_bi().await {
        streams += 1;
        tasks.spawn(async move {
            if let Ok(data) = recv.read_to_end(MAX_STREAM).await {
                let _ = send.write_all(&data).await;
                let _ = send.finish();
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    let answers = uni_task.await?;
    match answers.as_slice() {
        [Ok(len)] => Ok(format!(
            "answered a {len} byte uni stream with a uni stream; {streams} bidi streams echoed; \
             the browser speaks {negotiated}"
        )),
        _ => bail!("want one uni stream answered, got {answers:?}"),
    }
}

/// Opens a bidi stream, sends the greeting, and checks the page's answer.
async fn server_bidi(request: Request) -> anyhow::Result<String> {
    let session = request.ok().await?;
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(browser::SERVER_BIDI_GREETING.as_bytes())
        .await?;
    send.finish()?;
    let reply = recv.read_to_end(1024).await.context("reading the reply")?;
    if reply != browser::SERVER_BIDI_REPLY.as_bytes() {
        bail!(
            "the page answered {:?}, want {:?}",
            String::from_utf8_lossy(&reply),
            browser::SERVER_BIDI_REPLY
        );
    }
    Ok(format!(
        "the page answered {:?} on the server's stream",
        browser::SERVER_BIDI_REPLY
    ))
}

/// Waits for the page to close the session and checks its code and reason, as seen by
/// `closed` and by a task that waits for a datagram meanwhile (the one that notices the
/// connection's end first when the browser closes it right after the session).
async fn page_close(request: Request) -> anyhow::Result<String> {
    let session = request.ok().await?;
    let reader = session.clone();
    let datagram = tokio::spawn(async move { reader.read_datagram().await });
    let closed = session.closed().await;
    let read = datagram.await?;
    for (what, ended) in [("closed", Some(closed)), ("read_datagram", read.err())] {
        match ended {
            Some(SessionError::PeerClosed { code, reason })
                if code == browser::PAGE_CLOSE_CODE && reason == browser::PAGE_CLOSE_REASON => {}
            other => bail!(
                "{what}: the session ended with {other:?}, want code {} reason {:?}",
                browser::PAGE_CLOSE_CODE,
                browser::PAGE_CLOSE_REASON
            ),
        }
    }
    Ok(format!(
        "the page closed with code {}, reason {:?}",
        browser::PAGE_CLOSE_CODE,
        browser::PAGE_CLOSE_REASON
    ))
}

/// The server's tally of the page's sessions on [`paths::PAGE_CLOSE_MANY`].
#[derive(Default)]
struct ManyCloses {
    seen: usize,
    wrong: Vec<String>,
}

impl ManyCloses {
    /// Counts one session; the check's result once all have been seen.
    fn count(&mut self, session: CheckResult) -> Option<CheckResult> {
        self.seen += 1;
        if !session.ok {
            self.wrong.push(session.detail);
        }
        (self.seen == browser::PAGE_CLOSE_SESSIONS).then(|| CheckResult {
            check: session.check,
            ok: self.wrong.is_empty(),
            detail: format!(
                "{} of {} sessions ended with the page's code and reason; the first wrong ones: \
                 {:?}",
                self.seen - self.wrong.len(),
                self.seen,
                &self.wrong[..self.wrong.len().min(3)]
            ),
        })
    }
}

/// Closes the session with the server's code and reason once the page asks (a uni stream).
async fn server_close(request: Request) -> anyhow::Result<String> {
    let session = request.ok().await?;
    let mut recv = session.accept_uni().await?.context("no stream")?;
    let ask = recv.read_to_end(64).await?;
    session.close(browser::SERVER_CLOSE_CODE, browser::SERVER_CLOSE_REASON);
    let ended = session.closed().await;
    Ok(format!(
        "asked with {:?}, closed with code {}, reason {:?}; the session ended: {ended}",
        String::from_utf8_lossy(&ask),
        browser::SERVER_CLOSE_CODE,
        browser::SERVER_CLOSE_REASON
    ))
}

/// Rejects the session with 403.
async fn reject(request: Request) -> anyhow::Result<String> {
    request.reject(http::StatusCode::FORBIDDEN).await;
    Ok("rejected with 403".to_owned())
}

/// The page's detail for `check` in `browser`; panics with the reason when the check did not
/// pass.
fn page(browser: BrowserKind, check: &str) -> String {
    let outcome = outcome(browser).as_ref().unwrap_or_else(|e| panic!("{e}"));
    match outcome.page.passed(check) {
        Ok(detail) => detail.to_owned(),
        Err(e) => panic!("{e:#}"),
    }
}

/// The server's detail for `check` in `browser`'s run; panics when the server did not see it
/// pass.
fn server(browser: BrowserKind, check: &str) -> String {
    let outcome = outcome(browser).as_ref().unwrap_or_else(|e| panic!("{e}"));
    match outcome.server.iter().find(|result| result.check == check) {
        Some(result) if result.ok => result.detail.clone(),
        Some(result) => panic!(
            "server side of {check} failed in {}: {}",
            browser.name(),
            result.detail
        ),
        None => panic!(
            "the server side never reported {check} in {}; it reported {:?}",
            browser.name(),
            outcome.server
        ),
    }
}

/// The tests of one browser, in a module of their own: every check of the page, and the
/// server's side of those only the server sees.
macro_rules! browser_checks {
    ($module:ident, $browser:expr) => {
        mod $module {
            use super::*;

            const BROWSER: BrowserKind = $browser;

            #[test]
            fn bidi_echo_1k() {
                println!("{}", page(BROWSER, "bidi_echo_1k"));
            }

            #[test]
            fn bidi_echo_1m() {
                println!("{}", page(BROWSER, "bidi_echo_1m"));
            }

            #[test]
            fn bidi_100_concurrent_streams() {
                println!("{}", page(BROWSER, "bidi_100_concurrent"));
            }

            #[test]
            fn uni_streams_both_ways() {
                println!("page: {}", page(BROWSER, "uni_both_ways"));
                println!("server: {}", server(BROWSER, "uni_both_ways"));
            }

            #[test]
            fn datagram_echo() {
                println!("{}", page(BROWSER, "datagram_echo"));
            }

            #[test]
            fn server_initiated_bidi_stream() {
                println!("page: {}", page(BROWSER, "server_initiated_bidi"));
                println!("server: {}", server(BROWSER, "server_initiated_bidi"));
            }

            #[test]
            fn page_close_code_and_reason_reach_the_server() {
                println!("page: {}", page(BROWSER, "page_close"));
                println!("server: {}", server(BROWSER, "page_close"));
            }

            // draft-16 §6: the close capsule decides the end, even when the browser closes the
            // connection in the next packet (Firefox does).
            #[test]
            fn fifty_page_closes_each_reach_the_server_with_code_and_reason() {
                println!("page: {}", page(BROWSER, "page_close_many"));
                println!("server: {}", server(BROWSER, "page_close_many"));
            }

            #[test]
            fn server_close_code_and_reason_reach_the_page() {
                println!("page: {}", page(BROWSER, "server_close"));
                println!("server: {}", server(BROWSER, "server_close"));
            }

            #[test]
            fn rejected_session_fails_in_the_page() {
                println!("page: {}", page(BROWSER, "rejected_403"));
                println!("server: {}", server(BROWSER, "rejected_403"));
            }

            #[test]
            fn the_page_reports_exactly_the_known_checks() {
                let outcome = outcome(BROWSER).as_ref().unwrap_or_else(|e| panic!("{e}"));
                let reported: Vec<&str> = outcome
                    .page
                    .results
                    .iter()
                    .map(|result| result.check.as_str())
                    .collect();
                assert_eq!(reported, browser::WEBTRANSPORT_CHECKS);
            }
        }
    };
}

browser_checks!(chromium, BrowserKind::Chromium);
browser_checks!(firefox, BrowserKind::Firefox);
