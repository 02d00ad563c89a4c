//! What the packets of a WebTransport session carry: `cargo bench -p quay-tests --bench packets
//! [-- <sessions>]` (default 400).
//!
//! The WebTransport benchmark's `cost` measurement counts the UDP datagrams of a session (set-up,
//! one echo, close). This tool says what is in them, for the two stacks whose figures the table
//! compares, and for the two mixed pairs (a quay server with a web-transport-quinn client, and
//! the reverse), which tell whose behaviour a difference comes from. For each pair in turn, it
//! runs a server and a client in this process, on two threads with a single-threaded
//! runtime each (as the benchmark's two processes have), and has quinn's trace events sort every
//! 1-RTT and handshake packet either side builds by the frames it carries: `ACK` alone,
//! `ACK+STREAM`, `PADDING` (an MTU probe), and so on. It prints, per session:
//!
//! - sessions one after the other, by phase (`set-up`: the QUIC handshake and the session's,
//!   `echo`, `close`): a packet of either side counts in the phase the client is in when the
//!   packet is built, so a reply that comes after the client moved on (such as a second
//!   CONNECTION_CLOSE answering a packet that crossed the first) counts in the next phase;
//! - then 10 sessions at a time, as the `cost` measurement runs them, without phases.
//!
//! quinn's trace events cost time, so the counts are for comparing the stacks with each other,
//! not for the benchmark's figures. Counted are packets, not datagrams: during the handshake
//! quinn puts several packets in one datagram. Frames that quinn does not log as it writes them
//! (PING, HANDSHAKE_DONE, NEW_TOKEN, among others) are not named: a packet shows under the
//! frames it also carries (an MTU probe, PING and PADDING, as `PADDING`), or as `(none named)`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use quay_tests::bench::webtransport::{Quay, SMALL_PAYLOAD, WebTransportQuinn, WtStack};
use quay_tests::bench::{ClientEnd, run_concurrently};
use quay_tests::setup;
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Sessions per stack and way of running them, unless the first argument says otherwise.
const SESSIONS: usize = 400;
/// Sessions at a time in the second part, as the benchmark's `cost` runs them.
const CONCURRENCY: usize = 10;

/// What the client is doing now; only meaningful while sessions run one at a time.
static PHASE: Mutex<&str> = Mutex::new("set-up");
/// Packets counted, by (side, phase, frames).
type Counted = BTreeMap<(String, &'static str, String), u64>;
static PACKETS: Mutex<Counted> = Mutex::new(BTreeMap::new());

/// The frames of one packet being built: the first word of each event quinn logs inside its
/// `send` span.
struct Frames(Vec<&'static str>);

/// Sorts quinn's `send` spans by the frames their events name.
struct PacketSorter;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PacketSorter {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() == "send"
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Frames(Vec::new()));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(frames) = span.extensions_mut().get_mut::<Frames>() {
                let mut message = Message(None);
                event.record(&mut message);
                if let Some(frame) = message.0 {
                    frames.0.push(frame);
                }
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let extensions = span.extensions();
        let Some(Frames(frames)) = extensions.get::<Frames>() else {
            return;
        };
        let mut frames = frames.clone();
        frames.sort_unstable();
        frames.dedup();
        let side = std::thread::current().name().unwrap_or("?").to_owned();
        let phase = *PHASE.lock().unwrap();
        let frames = if frames.is_empty() {
            "(none named)".to_owned()
        } else {
            frames.join("+")
        };
        *PACKETS
            .lock()
            .unwrap()
            .entry((side, phase, frames))
            .or_default() += 1;
    }
}

/// The frame an event of quinn's `send` span names, from its message's first word.
struct Message(Option<&'static str>);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() != "message" {
            return;
        }
        let text = format!("{value:?}");
        let word = text.split([' ', '(', ':']).next().unwrap_or_default();
        self.0 = Some(match word {
            "sending" if text.contains("CONNECTION_CLOSE") => "CONNECTION_CLOSE",
            "ACK" => "ACK",
            "STREAM" => "STREAM",
            "CRYPTO" => "CRYPTO",
            "PADDING" => "PADDING",
            "NEW_CONNECTION_ID" => "NEW_CONNECTION_ID",
            "RETIRE_CONNECTION_ID" => "RETIRE_CONNECTION_ID",
            "STOP_SENDING" => "STOP_SENDING",
            "RESET_STREAM" => "RESET_STREAM",
            "DATAGRAM" => "DATAGRAM",
            "MAX_DATA" | "MAX_STREAM_DATA" | "MAX_STREAMS" => "MAX_*",
            // Not a frame (e.g. "write blocked").
            _ => return,
        });
    }
}

fn main() -> ExitCode {
    let sessions = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(SESSIONS);
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("quinn_proto", tracing::Level::TRACE);
    let subscriber = tracing_subscriber::registry().with(PacketSorter.with_filter(filter));
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        eprintln!("a tracing subscriber is installed already");
        return ExitCode::FAILURE;
    }
    let mut tables = Vec::new();
    for (title, concurrency) in [
        ("one session at a time, by phase", 1),
        ("10 sessions at a time", CONCURRENCY),
    ] {
        let mut columns = Vec::new();
        for (name, run) in [
            (
                "web-transport-quinn",
                run::<WebTransportQuinn, WebTransportQuinn>
                    as fn(usize, usize) -> anyhow::Result<()>,
            ),
            ("quay server, wtq client", run::<Quay, WebTransportQuinn>),
            ("wtq server, quay client", run::<WebTransportQuinn, Quay>),
            ("quay", run::<Quay, Quay>),
        ] {
            PACKETS.lock().unwrap().clear();
            if let Err(error) = run(sessions, concurrency) {
                eprintln!("{name}: {error:#}");
                return ExitCode::FAILURE;
            }
            let mut counted = std::mem::take(&mut *PACKETS.lock().unwrap());
            if concurrency > 1 {
                // Phases overlap: one row per side and frames.
                let mut merged = BTreeMap::new();
                for ((side, _, frames), count) in std::mem::take(&mut counted) {
                    *merged.entry((side, "all", frames)).or_default() += count;
                }
                counted = merged;
            }
            columns.push((name, counted));
        }
        tables.push((title, columns));
    }
    for (title, columns) in tables {
        print_table(title, &columns, sessions);
    }
    ExitCode::SUCCESS
}

/// Runs `sessions` sessions of a client of `S`, `concurrency` at a time, against a server of
/// `Server` on its own thread; the threads are named `server` and `client`.
fn run<Server: WtStack, S: WtStack>(sessions: usize, concurrency: usize) -> anyhow::Result<()> {
    let identity = setup::identity()?;
    let hash = identity.certificate_hash();
    let builder = setup::server_builder(identity);
    let endpoint = {
        // The endpoint's driver needs a runtime from the start: it runs on the server's.
        let runtime = quay_tests::bench::runtime()?;
        let endpoint = runtime.block_on(async { builder.bind(setup::loopback_any_port()) })?;
        let addr = endpoint.local_addr()?;
        std::thread::Builder::new()
            .name("server".into())
            .spawn(move || {
                let _ = runtime.block_on(Server::serve(endpoint, builder));
            })?;
        addr
    };
    std::thread::Builder::new()
        .name("client".into())
        .spawn(move || -> anyhow::Result<()> {
            quay_tests::bench::runtime()?.block_on(async {
                let builder = setup::client_builder(hash);
                let client = ClientEnd::new(builder.bind(setup::loopback_any_port())?, &builder)?;
                let client = &client;
                run_concurrently(sessions, concurrency, |_| session::<S>(client, endpoint)).await?;
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), client.endpoint.wait_idle()).await;
                client.endpoint.close(0u32.into(), b"done");
                Ok(())
            })
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the client panicked"))?
}

/// One session: set-up, an echo, a close; returns once the connection is closed.
async fn session<S: WtStack>(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<()> {
    *PHASE.lock().unwrap() = "set-up";
    let session = S::connect(client, server).await?;
    *PHASE.lock().unwrap() = "echo";
    S::echo(&session, &[0; SMALL_PAYLOAD]).await?;
    *PHASE.lock().unwrap() = "close";
    let connection = S::connection(&session);
    S::close(session);
    connection.closed().await;
    Ok(())
}

/// Prints one row per (side, phase, frames) with packets per session for each column, and each
/// side's total.
fn print_table(title: &str, columns: &[(&str, Counted)], sessions: usize) {
    println!("\n{title}: packets per session ({sessions} sessions)");
    print!("{:<8} {:<10} {:<42}", "side", "phase", "frames");
    for (name, _) in columns {
        print!(" {name:>24}");
    }
    println!();
    let mut rows: Vec<_> = columns
        .iter()
        .flat_map(|(_, counted)| counted.keys().cloned())
        .collect();
    rows.sort_by_key(|(side, phase, frames)| (side.clone(), phase_order(phase), frames.clone()));
    rows.dedup();
    let per_session = |count: u64| count as f64 / sessions as f64;
    for row in &rows {
        print!("{:<8} {:<10} {:<42}", row.0, row.1, row.2);
        for (_, counted) in columns {
            print!(
                " {:>24.3}",
                per_session(counted.get(row).copied().unwrap_or(0))
            );
        }
        println!();
    }
    for side in ["client", "server"] {
        print!("{side:<8} {:<10} {:<42}", "total", "");
        for (_, counted) in columns {
            let total = counted
                .iter()
                .filter(|((s, _, _), _)| s == side)
                .map(|(_, count)| count)
                .sum();
            print!(" {:>24.3}", per_session(total));
        }
        println!();
    }
}

fn phase_order(phase: &str) -> usize {
    ["set-up", "echo", "close", "all"]
        .iter()
        .position(|p| *p == phase)
        .unwrap_or(usize::MAX)
}
