//! Debian's headless Chromium runs the WebTransport page (`tests/browser/webtransport.js`, see
//! `quay_tests::browser`) against quay's own WebTransport server (`quay_webtransport::Server`)
//! with a self-signed certificate that the page pins by hash.
//!
//! Chromium negotiates draft-02 here: this is the proof that quay's SETTINGS, CONNECT handling,
//! stream headers, datagram prefix and close capsules work with a real browser.
//!
//! The page runs once per test binary ([`outcome`]); each test asserts one check, on the page's
//! side and, where only the server can see it, on the server's side. Needs Chromium
//! (`apt-get install chromium`, which `scripts/test` does): without it every test fails and
//! says so.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quay_tests::browser::{self, CheckResult, Page, Report, paths};
use quay_tests::setup::loopback_any_port;
use quay_transport::{Identity, ServerBuilder};
use quay_webtransport::server::Request;
use quay_webtransport::{Config, Server, SessionError};
use tokio::sync::mpsc;

/// The whole browser run, from Chromium's start to the page's last report.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
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
    "server_close",
    "rejected_403",
];

/// What one run of the page produced.
struct Outcome {
    page: Report,
    server: Vec<CheckResult>,
}

/// Runs the page once, on a runtime of its own, the first time a test asks.
fn outcome() -> &'static Result<Outcome, String> {
    static OUTCOME: OnceLock<Result<Outcome, String>> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return Err(format!("building a runtime: {e}")),
        };
        let start = Instant::now();
        let outcome = runtime.block_on(run()).map_err(|e| format!("{e:#}"));
        if let Ok(outcome) = &outcome {
            eprintln!(
                "browser run: page done in {:?}, all in {:?}",
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

async fn run() -> anyhow::Result<Outcome> {
    let identity = Identity::self_signed(["localhost", "127.0.0.1"])?;
    let hash = identity.certificate_hash();
    let endpoint = ServerBuilder::new(identity).bind(loopback_any_port())?;
    let port = endpoint.local_addr()?.port();
    let (events, mut server_results) = mpsc::unbounded_channel();
    let server = Server::from_endpoint(endpoint.clone(), Config::default());
    let server = tokio::spawn(serve(server, events));

    let page = Page::webtransport(&format!("https://127.0.0.1:{port}"), &hash);
    let report = browser::run(page, RUN_TIMEOUT).await;

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
    while let Some(request) = server.accept().await {
        let events = events.clone();
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
            let _ = events.send(CheckResult {
                check: check.to_owned(),
                ok,
                detail,
            });
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
        while let Ok(mut recv) = uni.accept_uni().await {
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
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
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
            "answered a {len} byte uni stream with a uni stream; {streams} bidi streams echoed"
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

/// Waits for the page to close the session and checks its code and reason.
async fn page_close(request: Request) -> anyhow::Result<String> {
    let session = request.ok().await?;
    match session.closed().await {
        SessionError::PeerClosed { code, reason }
            if code == browser::PAGE_CLOSE_CODE && reason == browser::PAGE_CLOSE_REASON =>
        {
            Ok(format!(
                "the page closed with code {code}, reason {reason:?}"
            ))
        }
        other => bail!(
            "the session ended with {other}, want code {} reason {:?}",
            browser::PAGE_CLOSE_CODE,
            browser::PAGE_CLOSE_REASON
        ),
    }
}

/// Closes the session with the server's code and reason once the page asks (a uni stream).
async fn server_close(request: Request) -> anyhow::Result<String> {
    let session = request.ok().await?;
    let mut recv = session.accept_uni().await?;
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

/// The page's detail for `check`; panics with the reason when the check did not pass.
fn page(check: &str) -> String {
    let outcome = outcome().as_ref().unwrap_or_else(|e| panic!("{e}"));
    match outcome.page.passed(check) {
        Ok(detail) => detail.to_owned(),
        Err(e) => panic!("{e:#}"),
    }
}

/// The server's detail for `check`; panics when the server did not see it pass.
fn server(check: &str) -> String {
    let outcome = outcome().as_ref().unwrap_or_else(|e| panic!("{e}"));
    match outcome.server.iter().find(|result| result.check == check) {
        Some(result) if result.ok => result.detail.clone(),
        Some(result) => panic!("server side of {check} failed: {}", result.detail),
        None => panic!(
            "the server side never reported {check}; it reported {:?}",
            outcome.server
        ),
    }
}

#[test]
fn bidi_echo_1k() {
    println!("{}", page("bidi_echo_1k"));
}

#[test]
fn bidi_echo_1m() {
    println!("{}", page("bidi_echo_1m"));
}

#[test]
fn bidi_100_concurrent_streams() {
    println!("{}", page("bidi_100_concurrent"));
}

#[test]
fn uni_streams_both_ways() {
    println!("page: {}", page("uni_both_ways"));
    println!("server: {}", server("uni_both_ways"));
}

#[test]
fn datagram_echo() {
    println!("{}", page("datagram_echo"));
}

#[test]
fn server_initiated_bidi_stream() {
    println!("page: {}", page("server_initiated_bidi"));
    println!("server: {}", server("server_initiated_bidi"));
}

#[test]
fn page_close_code_and_reason_reach_the_server() {
    println!("page: {}", page("page_close"));
    println!("server: {}", server("page_close"));
}

#[test]
fn server_close_code_and_reason_reach_the_page() {
    println!("page: {}", page("server_close"));
    println!("server: {}", server("server_close"));
}

#[test]
fn rejected_session_fails_in_the_page() {
    println!("page: {}", page("rejected_403"));
    println!("server: {}", server("rejected_403"));
}

#[test]
fn the_page_reports_exactly_the_known_checks() {
    let outcome = outcome().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let reported: Vec<&str> = outcome
        .page
        .results
        .iter()
        .map(|result| result.check.as_str())
        .collect();
    assert_eq!(reported, browser::WEBTRANSPORT_CHECKS);
}
