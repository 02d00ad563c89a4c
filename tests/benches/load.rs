//! Load and soak for quay's WebTransport server, each with its own command (not part of the
//! test suite):
//!
//! ```text
//! cargo bench -p quay-tests --bench load -- idle  [seconds, default 60]
//! cargo bench -p quay-tests --bench load -- soak  [seconds, default 600]
//! cargo bench -p quay-tests --bench load -- flood [seconds, default 30]
//! ```
//!
//! The server (`quay_tests::quaywt::serve`: quay's `Server` with its default configuration,
//! echoing streams and datagrams) runs in a child process, this binary started again with
//! [`SERVER_FLAG`], so that its memory is its own; the parent reads the child's resident memory
//! (`VmRSS`) from `/proc`. Everything talks over 127.0.0.1.
//!
//! - **idle**: opens [`IDLE_SESSIONS`] sessions, one per QUIC connection, spread over
//!   [`IDLE_ENDPOINTS`] client endpoints, holds them for the given time (keep-alives every 10 s,
//!   idle timeout 30 s), then checks that every one still answers a stream echo. Prints the
//!   server's memory per session.
//! - **soak**: [`SOAK_WORKERS`] workers each open a session on a new connection, echo
//!   [`SOAK_ECHOES`] streams and send as many datagrams, close the session and the connection, and
//!   start again, paced to a steady rate; the server's memory is sampled every second. Prints the
//!   memory curve every 10 s and the error count; fails if anything failed or if the memory of
//!   the last minute is more than [`SOAK_GROWTH`] above that of the first minute after a minute
//!   of warm-up.
//! - **flood**: [`FLOOD_SESSIONS`] established sessions echo a stream one after another while,
//!   after a quiet baseline of [`FLOOD_BASELINE`], the client opens as many new connections as it
//!   can ([`FLOOD_CONCURRENCY`] handshakes in flight) for the given time. Prints the echo
//!   latency (p50, p99, max) before and during the flood and the handshakes completed; fails if
//!   an established session was lost.
//!
//! To keep other measurements on the machine clean (`/proc/net/snmp` is per network
//! namespace), run it in a namespace of its own:
//! `ip netns add load && ip netns exec load ip link set lo up && ip netns exec load cargo bench ...`.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use quay_tests::{quaywt, setup};
use quay_transport::CertificateHash;
use tokio::task::JoinSet;

/// The first argument of the server child.
const SERVER_FLAG: &str = "--load-server";
/// Sessions the idle run holds.
const IDLE_SESSIONS: usize = 10_000;
/// Client endpoints (UDP sockets) the idle run spreads its connections over.
const IDLE_ENDPOINTS: usize = 20;
/// Session set-ups in flight at once while the idle run opens its sessions.
const IDLE_OPENING: usize = 64;
/// Concurrent workers of the soak.
const SOAK_WORKERS: usize = 20;
/// Stream echoes (and datagrams) per soak session.
const SOAK_ECHOES: usize = 10;
/// The shortest time one soak session takes, which paces each worker.
const SOAK_SESSION_TIME: Duration = Duration::from_millis(200);
/// How much the soak's memory may grow between its first and last minute.
const SOAK_GROWTH: f64 = 0.10;
/// Established sessions that echo during the flood.
const FLOOD_SESSIONS: usize = 10;
/// The quiet time before the flood starts.
const FLOOD_BASELINE: Duration = Duration::from_secs(5);
/// Handshakes in flight at once during the flood.
const FLOOD_CONCURRENCY: usize = 64;
/// Any one step (a set-up, an echo) fails past this.
const STEP: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SERVER_FLAG) {
        return exit(server());
    }
    // cargo passes `--bench`; the mode and the seconds are the other arguments.
    let mut words = args.iter().filter(|arg| !arg.starts_with('-'));
    let mode = words
        .next()
        .map(String::as_str)
        .unwrap_or("idle")
        .to_owned();
    let seconds = words.next().map(|s| s.parse::<u64>());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    exit(runtime.block_on(async move {
        let default = match mode.as_str() {
            "idle" => 60,
            "soak" => 600,
            "flood" => 30,
            other => bail!("unknown mode {other:?}: idle, soak or flood"),
        };
        let duration = Duration::from_secs(seconds.transpose()?.unwrap_or(default));
        let server = ServerChild::start()?;
        match mode.as_str() {
            "idle" => idle(&server, duration).await,
            "soak" => soak(&server, duration).await,
            _ => flood(&server, duration).await,
        }
    }))
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server child: serves until its stdin closes (the parent is gone).
fn server() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let identity = setup::identity()?;
        let hash = identity.certificate_hash();
        let endpoint = setup::server_endpoint(identity)?;
        println!("quay-load {} {hash}", endpoint.local_addr()?);
        tokio::spawn(quaywt::serve(endpoint));
        // Bounded by the parent: its end closes our stdin.
        tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await??;
        Ok(())
    })
}

/// The server process, killed when dropped.
struct ServerChild {
    child: Child,
    addr: SocketAddr,
    hash: CertificateHash,
}

impl ServerChild {
    fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SERVER_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the server")?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let mut words = line.split_whitespace().skip(1);
        let (Some(addr), Some(hash)) = (words.next(), words.next()) else {
            bail!("the server said {line:?}");
        };
        Ok(Self {
            addr: addr.parse()?,
            hash: hash.parse()?,
            child,
        })
    }

    /// The server's resident memory, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        quay_tests::bench::rss_kib(self.child.id())
    }

    /// Opens a session on a new connection from `endpoint`.
    async fn session(
        &self,
        endpoint: &quinn::Endpoint,
    ) -> anyhow::Result<quay_webtransport::Session> {
        let setup = async {
            let connection = setup::connect(endpoint, self.addr).await?;
            quaywt::connect(connection, self.addr.port()).await
        };
        tokio::time::timeout(STEP, setup)
            .await
            .context("session set-up timed out")?
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stream echo of `payload`, bounded.
async fn echo(session: &quay_webtransport::Session, payload: &[u8]) -> anyhow::Result<()> {
    let answer = tokio::time::timeout(STEP, quaywt::echo(session, payload))
        .await
        .context("echo timed out")??;
    if answer != payload {
        bail!("the echo differs");
    }
    Ok(())
}

async fn idle(server: &ServerChild, hold: Duration) -> anyhow::Result<()> {
    let before = server.rss_kib()?;
    let endpoints: Vec<quinn::Endpoint> = (0..IDLE_ENDPOINTS)
        .map(|_| setup::client_endpoint(server.hash))
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    let mut sessions = Vec::with_capacity(IDLE_SESSIONS);
    let mut opening = JoinSet::new();
    for i in 0..IDLE_SESSIONS {
        if opening.len() >= IDLE_OPENING {
            sessions.push(opening.join_next().await.context("opening")???);
        }
        let endpoint = endpoints[i % IDLE_ENDPOINTS].clone();
        let (addr, port) = (server.addr, server.addr.port());
        opening.spawn(async move {
            let setup = async {
                let connection = setup::connect(&endpoint, addr).await?;
                quaywt::connect(connection, port).await
            };
            tokio::time::timeout(STEP, setup)
                .await
                .context("session set-up timed out")?
        });
    }
    while let Some(session) = opening.join_next().await {
        sessions.push(session??);
    }
    let opened = start.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kib()?;
    println!(
        "{} sessions on as many connections from {IDLE_ENDPOINTS} client endpoints, opened in {:.1} s",
        sessions.len(),
        opened.as_secs_f64()
    );
    println!(
        "server memory: {before} KiB before, {after} KiB with the sessions: {:.1} KiB per session",
        (after - before) as f64 / sessions.len() as f64
    );
    let start = Instant::now();
    while start.elapsed() < hold {
        tokio::time::sleep(Duration::from_secs(10).min(hold - start.elapsed())).await;
        let ended = sessions
            .iter()
            .filter(|s| s.close_reason().is_some())
            .count();
        println!(
            "  {:>4.0} s: {} KiB, {ended} sessions ended",
            start.elapsed().as_secs_f64(),
            server.rss_kib()?
        );
    }
    let sessions = Arc::new(sessions);
    let failed = Arc::new(AtomicU64::new(0));
    let mut echoes = JoinSet::new();
    for worker in 0..IDLE_OPENING {
        let (sessions, failed) = (sessions.clone(), failed.clone());
        echoes.spawn(async move {
            for session in sessions.iter().skip(worker).step_by(IDLE_OPENING) {
                if echo(session, b"still there?").await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    echoes.join_all().await;
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "after {:.0} s held: {} of {} sessions answered an echo",
        hold.as_secs_f64(),
        sessions.len() as u64 - failed,
        sessions.len()
    );
    if failed > 0 {
        bail!("{failed} sessions were lost");
    }
    Ok(())
}

/// What the soak's workers count.
#[derive(Default)]
struct SoakCounts {
    sessions: AtomicU64,
    echoes: AtomicU64,
    datagrams_sent: AtomicU64,
    datagrams_echoed: AtomicU64,
    errors: AtomicU64,
}

async fn soak(server: &ServerChild, duration: Duration) -> anyhow::Result<()> {
    let counts = Arc::new(SoakCounts::default());
    let endpoint = setup::client_endpoint(server.hash)?;
    let deadline = Instant::now() + duration;
    let mut workers = JoinSet::new();
    for _ in 0..SOAK_WORKERS {
        let (counts, endpoint) = (counts.clone(), endpoint.clone());
        let (addr, port) = (server.addr, server.addr.port());
        workers.spawn(async move {
            while Instant::now() < deadline {
                let paced = tokio::time::sleep(SOAK_SESSION_TIME);
                if let Err(error) = soak_session(&endpoint, addr, port, &counts).await {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak error: {error:#}");
                }
                paced.await;
            }
        });
    }
    let start = Instant::now();
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = start.elapsed().as_secs_f64();
        samples.push((t, server.rss_kib()?));
        if samples.len().is_multiple_of(10) {
            println!(
                "  {t:>5.0} s: server {:>7} KiB; {} sessions, {} echoes, {} of {} datagrams echoed, {} errors",
                samples[samples.len() - 1].1,
                counts.sessions.load(Ordering::Relaxed),
                counts.echoes.load(Ordering::Relaxed),
                counts.datagrams_echoed.load(Ordering::Relaxed),
                counts.datagrams_sent.load(Ordering::Relaxed),
                counts.errors.load(Ordering::Relaxed),
            );
        }
    }
    workers.join_all().await;
    let errors = counts.errors.load(Ordering::Relaxed);
    let mean = |from: f64, to: f64| {
        let window: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, rss)| *rss)
            .collect();
        window.iter().sum::<u64>() as f64 / window.len().max(1) as f64
    };
    let total = duration.as_secs_f64();
    println!(
        "{} sessions, {} stream echoes, {} of {} datagrams echoed, {errors} errors in {total:.0} s",
        counts.sessions.load(Ordering::Relaxed),
        counts.echoes.load(Ordering::Relaxed),
        counts.datagrams_echoed.load(Ordering::Relaxed),
        counts.datagrams_sent.load(Ordering::Relaxed),
    );
    if total >= 180.0 {
        let (first, last) = (mean(60.0, 120.0), mean(total - 60.0, total));
        println!(
            "server memory: {first:.0} KiB in the minute after warm-up, {last:.0} KiB in the last minute ({:+.1}%)",
            (last / first - 1.0) * 100.0
        );
        if last > first * (1.0 + SOAK_GROWTH) {
            bail!("the server's memory grew");
        }
    }
    if errors > 0 {
        bail!("{errors} errors");
    }
    Ok(())
}

/// One soak session: set up, echoes, datagrams, close (awaited), connection close.
async fn soak_session(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    port: u16,
    counts: &SoakCounts,
) -> anyhow::Result<()> {
    let setup = async {
        let connection = setup::connect(endpoint, addr).await?;
        quaywt::connect(connection, port).await
    };
    let session = tokio::time::timeout(STEP, setup)
        .await
        .context("session set-up timed out")??;
    counts.sessions.fetch_add(1, Ordering::Relaxed);
    for i in 0..SOAK_ECHOES {
        echo(&session, format!("soak echo {i}").as_bytes()).await?;
        counts.echoes.fetch_add(1, Ordering::Relaxed);
        quaywt::send_datagram(&session, Bytes::from(format!("soak datagram {i}")))?;
        counts.datagrams_sent.fetch_add(1, Ordering::Relaxed);
    }
    // Datagrams may be lost: count the echoes that came back within a moment.
    let echoed = async {
        while session.read_datagram().await.is_ok() {
            counts.datagrams_echoed.fetch_add(1, Ordering::Relaxed);
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(20), echoed).await;
    tokio::time::timeout(STEP, session.close(0, "soak")).await?;
    session.connection().close(0u32.into(), b"");
    Ok(())
}

async fn flood(server: &ServerChild, duration: Duration) -> anyhow::Result<()> {
    let endpoint = setup::client_endpoint(server.hash)?;
    let mut sessions = Vec::new();
    for _ in 0..FLOOD_SESSIONS {
        sessions.push(server.session(&endpoint).await?);
    }
    let flood_start = Instant::now() + FLOOD_BASELINE;
    let end = flood_start + duration;
    // Each established session echoes one stream after another and notes each latency, and
    // whether the flood was on.
    let mut echoing = JoinSet::new();
    for session in sessions.clone() {
        echoing.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < end {
                let start = Instant::now();
                echo(&session, b"latency").await?;
                latencies.push((start >= flood_start, start.elapsed()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(latencies)
        });
    }
    tokio::time::sleep_until(flood_start.into()).await;
    let handshakes = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut flooding = JoinSet::new();
    for _ in 0..FLOOD_CONCURRENCY {
        let (handshakes, refused) = (handshakes.clone(), refused.clone());
        let (addr, hash) = (server.addr, server.hash);
        flooding.spawn(async move {
            let Ok(endpoint) = setup::client_endpoint(hash) else {
                return;
            };
            while Instant::now() < end {
                match tokio::time::timeout(STEP, setup::connect(&endpoint, addr)).await {
                    Ok(Ok(connection)) => {
                        handshakes.fetch_add(1, Ordering::Relaxed);
                        connection.close(0u32.into(), b"");
                    }
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    flooding.join_all().await;
    let mut before = Vec::new();
    let mut during = Vec::new();
    for latencies in echoing.join_all().await {
        for (flooding, latency) in latencies? {
            if flooding {
                during.push(latency);
            } else {
                before.push(latency);
            }
        }
    }
    let lost = sessions
        .iter()
        .filter(|s| s.close_reason().is_some())
        .count();
    let handshakes = handshakes.load(Ordering::Relaxed);
    println!(
        "flood: {handshakes} handshakes in {:.0} s ({:.0}/s), {} failed; {FLOOD_SESSIONS} sessions echoing, {lost} lost",
        duration.as_secs_f64(),
        handshakes as f64 / duration.as_secs_f64(),
        refused.load(Ordering::Relaxed)
    );
    for (what, latencies) in [
        ("before the flood", &mut before),
        ("during the flood", &mut during),
    ] {
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        if latencies.is_empty() {
            bail!("no echo {what}");
        }
        println!(
            "echo latency {what}: p50 {:?}, p99 {:?}, max {:?} ({} echoes)",
            at(0.5),
            at(0.99),
            at(1.0),
            latencies.len()
        );
    }
    if lost > 0 {
        bail!("{lost} established sessions were lost during the flood");
    }
    Ok(())
}
