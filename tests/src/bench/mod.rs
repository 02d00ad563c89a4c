//! The benchmark harness: server and client as two processes, one core each, and a table.
//!
//! A bench binary (`benches/h3.rs`, `benches/webtransport.rs`) calls [`main`] with its
//! [`Column`]s (the implementations under test, the first one being the floor) and its
//! [`Measurement`]s. Without arguments it is the parent: for every measurement, run after run
//! ([`RUNS_VAR`], default [`DEFAULT_RUNS`]) and column after column in turn, it starts the
//! binary again (`std::env::current_exe()`) as a server pinned to core 0 and as a client pinned
//! to core 1 (`taskset`; without it, or with fewer than two cores, the processes run unpinned
//! and the output says so), reads the result the client prints, and at the end prints a table
//! of medians with ratios. Started with [`ROLE_FLAG`] it is one of the children.
//!
//! The numbers are only as good as the machine is quiet: the output shows the load average, and
//! every run's value next to the median.
//!
//! [`Kind::SessionCost`] counts what a number of sessions cost: the server process's CPU time
//! (user + system, `utime` + `stime` of `/proc/<pid>/stat`) and the UDP datagrams sent
//! (`OutDatagrams` of the `Udp:` line of `/proc/net/snmp`), read by the parent before and after
//! the client's sessions. On loopback every datagram that either side sends is counted once in
//! `OutDatagrams` (and once more in `InDatagrams` when it is received), so the `OutDatagrams`
//! delta is the number of datagrams client and server sent each other. `/proc/net/snmp` counts
//! every socket of the network namespace: other UDP traffic on the machine during the run lands
//! in the figure. Run it when the machine is quiet, or in a network namespace of its own, e.g.
//! as root `unshare -n sh -c 'ip link set lo up && cargo bench -p quay-tests --bench
//! webtransport -- cost'` (build first: the namespace has no network).
//!
//! Children talk to the parent in lines on stdout that start with `quay-bench`; the parent talks
//! to a client through its stdin (for the memory measurement). A server exits when its stdin
//! closes, so none outlives the parent. Every wait has a time limit.
//!
//! Server and client talk on 127.0.0.1 only, with the endpoints of [`crate::setup`].
//!
//! A column with [`Column::qlog`] writes a qlog file per connection on both sides: for each run
//! the parent makes a fresh directory under the system's temporary directory
//! (`std::env::temp_dir()`, `$TMPDIR` or `/tmp`) and names it to both children
//! ([`QLOG_DIR_VAR`]), which set it as their builders' `qlog_dir`; after the run it counts the
//! files, bytes and records written (a run that wrote no events fails), prints them, and
//! removes the directory. The writes go to a real file system, so what they cost depends on
//! which one (a tmpfs costs less than a disk) and on how busy it is.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use quay_transport::{CertificateHash, ClientBuilder, Connector, Endpoint, ServerBuilder};

use crate::setup;

pub mod h3;
pub mod webtransport;

/// The first argument of a child process; the next one is `server` or `client`.
pub const ROLE_FLAG: &str = "--quay-bench-role";
/// How many times each rate is measured (the table shows the median); override with the
/// environment variable of this name.
pub const RUNS_VAR: &str = "QUAY_BENCH_RUNS";
/// Default for [`RUNS_VAR`].
pub const DEFAULT_RUNS: usize = 5;
/// How long the parent waits for any one line from a child before it gives up on it.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a client may spend on one run of a measurement.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections (or sessions) held open by the memory measurement.
pub const IDLE_CONNECTIONS: usize = 1_000;
/// Sessions counted by a [`Kind::SessionCost`] measurement, unless [`COST_SESSIONS_VAR`] says
/// otherwise.
pub const COST_SESSIONS: usize = 2_000;
/// Sessions a [`Kind::SessionCost`] measurement counts instead of [`COST_SESSIONS`] (1 to
/// 100,000), for a server wrapper so slow that 2,000 sessions outlast the client's timeouts
/// (callgrind with its cache simulation: 500). The rows' labels still say 2,000; the table says
/// the count above them.
pub const COST_SESSIONS_VAR: &str = "QUAY_BENCH_COST_SESSIONS";
/// Sessions a [`Kind::SessionCost`] client runs before the counted ones.
pub const COST_WARMUP: usize = 20;
/// How long a child may take to exit once its stdin is closed before it is killed: long
/// enough for a server wrapper such as valgrind to write its results.
const EXIT_GRACE: Duration = Duration::from_secs(30);
/// How long the parent lets the server settle before reading its memory.
const SETTLE: Duration = Duration::from_millis(500);
/// A command that server children run under, e.g. `heaptrack` or `valgrind --tool=massif`
/// (split at spaces), to profile a server role. Numbers read off a wrapped server (its memory
/// above all) describe the wrapper, not the server: use it to find where, not how much.
pub const SERVER_WRAPPER_VAR: &str = "QUAY_BENCH_SERVER_WRAPPER";
/// The start of every line a child prints for the parent.
const LINE_PREFIX: &str = "quay-bench";
/// The environment variable through which the parent names a [`Column::qlog`] column's qlog
/// directory to its children.
pub const QLOG_DIR_VAR: &str = "QUAY_BENCH_QLOG_DIR";

/// One implementation under test: a column of the table.
///
/// The two functions run the child roles; they are usually generic functions instantiated for a
/// stack type, e.g. [`h3::column`].
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// The column's name, also how the parent tells a child which implementation to run.
    pub name: &'static str,
    /// The server role: serves on the endpoint (bound to 127.0.0.1 with a fresh self-signed
    /// identity, by the builder given beside it) until the process is killed or its stdin
    /// closes.
    pub server: fn(Endpoint, ServerBuilder) -> LocalBoxFuture<'static, anyhow::Result<()>>,
    /// The client role: runs one measurement from the endpoint (which pins the server's
    /// certificate; bound by the builder given beside it) and prints its results with
    /// [`report_result`] or [`idle_protocol`].
    pub client:
        fn(Endpoint, ClientBuilder, ClientArgs) -> LocalBoxFuture<'static, anyhow::Result<()>>,
    /// Whether the column writes qlog files: its builders get a qlog directory, whose
    /// contents the parent counts after every run (see the module docs).
    pub qlog: bool,
    /// The name of the column this one is a variant of (e.g. quay with something switched
    /// on): the table adds the ratio of this column to that one.
    pub variant_of: Option<&'static str>,
}

/// A client process's means of connecting: the endpoint every connection leaves from, and the
/// connector of the builder that bound it (a qlog file per connection when the harness gave
/// the column a qlog directory, see [`Column::qlog`]).
#[derive(Debug)]
pub struct ClientEnd {
    /// The endpoint, pinning the server's certificate.
    pub endpoint: Endpoint,
    /// `ClientBuilder::connector` of the endpoint's builder.
    pub connector: Connector,
}

impl ClientEnd {
    /// The client end of `endpoint`, bound by `builder`.
    pub fn new(endpoint: Endpoint, builder: &ClientBuilder) -> anyhow::Result<Self> {
        Ok(Self {
            connector: builder.connector()?,
            endpoint,
        })
    }
}

/// How a measurement is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// The client prints one value per run with [`report_result`]; the table shows the median.
    /// Higher is better.
    Rate,
    /// The client opens [`IDLE_CONNECTIONS`] idle connections in two steps
    /// ([`idle_protocol`]); the parent reads the server's resident memory before and after.
    /// Lower is better.
    ServerMemory,
    /// The client runs a few sessions to warm up ([`cost_protocol`]), then [`COST_SESSIONS`]
    /// sessions (or [`COST_SESSIONS_VAR`]'s count) and waits until all their connections are
    /// closed; the parent reads the server's CPU time and the UDP datagrams sent, before and
    /// after (see the module docs). Two rows: server CPU µs per session (the measurement's
    /// `label` and `decimals`), and datagrams per session (`datagrams_label`, one decimal).
    /// Lower is better.
    SessionCost {
        /// The label of the datagram row.
        datagrams_label: &'static str,
    },
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// The name a client is told to run, and the filter matched against command-line arguments.
    pub key: &'static str,
    /// What the row says.
    pub label: &'static str,
    /// Digits after the decimal point in the table.
    pub decimals: usize,
    /// How it is taken.
    pub kind: Kind,
}

impl Measurement {
    /// The table rows it fills: label and digits after the decimal point.
    pub fn rows(&self) -> Vec<(&'static str, usize)> {
        let mut rows = vec![(self.label, self.decimals)];
        if let Kind::SessionCost { datagrams_label } = self.kind {
            rows.push((datagrams_label, 1));
        }
        rows
    }
}

/// What a client child is asked to do.
#[derive(Clone, Debug)]
pub struct ClientArgs {
    /// [`Measurement::key`].
    pub measurement: String,
    /// The server's address.
    pub server: SocketAddr,
    /// The server certificate's hash, pinned by the client.
    pub hash: CertificateHash,
    /// How many times to measure a rate.
    pub runs: usize,
}

/// Runs the bench binary: the parent without [`ROLE_FLAG`], a child with it.
///
/// `title` heads the output. Command-line arguments that do not start with `-` select the
/// measurements whose key contains one of them (cargo's own `--bench` is ignored).
pub fn main(title: &str, columns: &[Column], measurements: &[Measurement]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some(ROLE_FLAG) {
        child(&args[1..], columns)
    } else {
        parent(title, &args, columns, measurements)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quay bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a line for the parent: `quay-bench <key> <value>`.
pub fn report(key: &str, value: impl std::fmt::Display) {
    let mut stdout = std::io::stdout().lock();
    // The parent reads these lines; if it is gone there is nobody left to tell.
    let _ = writeln!(stdout, "{LINE_PREFIX} {key} {value}");
    let _ = stdout.flush();
}

/// Prints the value of one run of a [`Kind::Rate`] measurement.
pub fn report_result(value: f64) {
    report("result", value);
}

/// The client's side of [`Kind::ServerMemory`]: `open(1)`, report `warm`, wait for the
/// parent, `open(IDLE_CONNECTIONS)`, report `ready`, wait for the parent, return (the caller
/// keeps what `open` returned alive until then).
pub async fn idle_protocol<T, F, Fut>(open: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<T>>>,
{
    two_steps(1, IDLE_CONNECTIONS, open).await
}

/// The client's side of [`Kind::SessionCost`]: `run(COST_WARMUP)`, report `warm`, wait for
/// the parent, `run(COST_SESSIONS)`, report `ready`, wait for the parent. `run(n)` must return
/// only when the n sessions' connections are closed and their closes sent.
pub async fn cost_protocol<T, F, Fut>(run: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<T>>>,
{
    two_steps(COST_WARMUP, cost_sessions()?, run).await
}

/// The sessions a [`Kind::SessionCost`] measurement counts: [`COST_SESSIONS_VAR`] if set,
/// else [`COST_SESSIONS`].
pub fn cost_sessions() -> anyhow::Result<usize> {
    match std::env::var(COST_SESSIONS_VAR) {
        Err(_) => Ok(COST_SESSIONS),
        Ok(value) => {
            let count: usize = value.parse().context(COST_SESSIONS_VAR)?;
            if !(1..=100_000).contains(&count) {
                bail!("{COST_SESSIONS_VAR}={count}: between 1 and 100,000");
            }
            Ok(count)
        }
    }
}

/// `step(first)`, report `warm`, wait for the parent, `step(second)`, report `ready` with how
/// many it returned, wait for the parent, return (what the steps returned lives until then).
async fn two_steps<T, F, Fut>(first: usize, second: usize, mut step: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<T>>>,
{
    let warm = step(first).await?;
    report("warm", warm.len());
    wait_for_parent().await?;
    let done = step(second).await?;
    report("ready", done.len());
    wait_for_parent().await?;
    drop((warm, done));
    Ok(())
}

async fn wait_for_parent() -> anyhow::Result<()> {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    if line.is_empty() {
        bail!("parent went away");
    }
    Ok(())
}

/// Runs `total` futures made by `make(index)`, at most `in_flight` at a time, on the current
/// task; stops at the first error.
pub async fn run_concurrently<T, F, Fut>(
    total: usize,
    in_flight: usize,
    mut make: F,
) -> anyhow::Result<Vec<T>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut running = FuturesUnordered::new();
    let mut results = Vec::with_capacity(total);
    let mut started = 0;
    while started < total.min(in_flight) {
        running.push(make(started));
        started += 1;
    }
    while let Some(result) = running.next().await {
        results.push(result?);
        if started < total {
            running.push(make(started));
            started += 1;
        }
    }
    Ok(results)
}

/// Runs `measure` `runs` times, each bounded by [`RUN_TIMEOUT`], and reports each value with
/// [`report_result`].
pub async fn report_runs<F, Fut>(runs: usize, mut measure: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<f64>>,
{
    for _ in 0..runs {
        report_result(bounded(measure()).await?);
    }
    Ok(())
}

/// Awaits `future` for at most [`RUN_TIMEOUT`].
pub async fn bounded<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(RUN_TIMEOUT, future)
        .await
        .context("run took longer than its time limit")?
}

/// A single-threaded tokio runtime: each process under test uses one core.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Seconds since `start`, as a float.
pub fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

fn child(args: &[String], columns: &[Column]) -> anyhow::Result<()> {
    let [role, name, rest @ ..] = args else {
        bail!("usage: {ROLE_FLAG} server|client <column> …");
    };
    let column = columns
        .iter()
        .find(|column| column.name == name.as_str())
        .with_context(|| format!("no column named {name:?}"))?;
    match (role.as_str(), rest) {
        ("server", []) => server_role(column),
        ("client", [measurement, server, hash, runs]) => {
            let args = ClientArgs {
                measurement: measurement.clone(),
                server: server.parse()?,
                hash: hash.parse()?,
                runs: runs.parse()?,
            };
            let mut builder = setup::client_builder(args.hash);
            if let Some(dir) = std::env::var_os(QLOG_DIR_VAR) {
                builder = builder.qlog_dir(dir);
            }
            let runtime = runtime()?;
            let endpoint = {
                let _guard = runtime.enter();
                builder.bind(setup::loopback_any_port())?
            };
            runtime.block_on((column.client)(endpoint, builder, args))
        }
        _ => bail!("bad child arguments: {args:?}"),
    }
}

fn server_role(column: &Column) -> anyhow::Result<()> {
    // The parent holds our stdin; when it exits (or drops us) we go too.
    std::thread::spawn(|| {
        let mut sink = String::new();
        while matches!(std::io::stdin().read_line(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let identity = setup::identity()?;
    let hash = identity.certificate_hash();
    let mut builder = setup::server_builder(identity);
    if let Some(dir) = std::env::var_os(QLOG_DIR_VAR) {
        builder = builder.qlog_dir(dir);
    }
    let runtime = runtime()?;
    let endpoint = {
        let _guard = runtime.enter();
        builder.bind(setup::loopback_any_port())?
    };
    report("listening", format!("{} {hash}", endpoint.local_addr()?));
    runtime.block_on((column.server)(endpoint, builder))
}

/// Whether child processes are pinned to cores, and why not if they are not.
#[derive(Clone, Debug)]
pub struct Pinning {
    taskset: bool,
    note: String,
}

impl Pinning {
    /// Checks that `taskset -c 0` and `taskset -c 1` work here.
    pub fn detect() -> Self {
        let works = |core: &str| {
            Command::new("taskset")
                .args(["-c", core, "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        if works("0") && works("1") {
            Self {
                taskset: true,
                note: "server pinned to core 0, client to core 1 (taskset)".into(),
            }
        } else {
            Self {
                taskset: false,
                note: "NOT pinned: `taskset -c 0/1` failed (util-linux missing or fewer than \
                       two cores); server and client share the machine's cores"
                    .into(),
            }
        }
    }

    fn command(&self, core: usize, args: &[String]) -> anyhow::Result<Command> {
        let exe = std::env::current_exe()?;
        let wrapper = match std::env::var(SERVER_WRAPPER_VAR) {
            Ok(wrapper) if args.first().map(String::as_str) == Some("server") => wrapper,
            _ => String::new(),
        };
        let mut program: Vec<String> = wrapper.split_whitespace().map(String::from).collect();
        program.push(exe.to_string_lossy().into_owned());
        let mut command = if self.taskset {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).args(&program);
            command
        } else {
            let mut command = Command::new(&program[0]);
            command.args(&program[1..]);
            command
        };
        command.arg(ROLE_FLAG).args(args);
        Ok(command)
    }
}

/// A child process with its stdout read line by line on a thread. Told to exit when dropped
/// (its stdin closes), and killed if it has not after [`EXIT_GRACE`].
struct Child {
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Child {
    /// Starts a child with `args`, which writes its qlog files into `qlog_dir` if given and
    /// writes none otherwise (whatever `$QLOGDIR` says).
    fn spawn(
        pinning: &Pinning,
        core: usize,
        args: &[String],
        qlog_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let mut command = pinning.command(core, args)?;
        command.env_remove(quay_transport::qlog::QLOGDIR);
        match qlog_dir {
            Some(dir) => command.env(QLOG_DIR_VAR, dir),
            None => command.env_remove(QLOG_DIR_VAR),
        };
        let mut process = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a child process")?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().context("child without stdout")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            process,
            stdin,
            lines,
            what: args.join(" "),
        })
    }

    /// Waits for the line `quay-bench <key> <value>` and returns the value; other lines are
    /// passed through to our stdout.
    fn expect(&self, key: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("`{}` printed no {key:?} within {LINE_TIMEOUT:?}", self.what)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("`{}` exited before printing {key:?}", self.what)
                }
            };
            let mut words = line.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some(LINE_PREFIX), Some(found), Some(value)) if found == key => {
                    return Ok(value.to_string());
                }
                _ => println!("{line}"),
            }
        }
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("child stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// The resident set size of the process, in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.process.id())
    }
}

impl Child {
    /// The CPU time the process has used so far, user and system, in seconds (`utime` +
    /// `stime` of `/proc/<pid>/stat`, every thread included).
    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.id()))?;
        // The fields after the command name, which is in parentheses and may hold spaces:
        // state is field 3, utime field 14 and stime field 15 (proc(5)).
        let (_, rest) = stat
            .rsplit_once(')')
            .context("malformed /proc/<pid>/stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |field: usize| -> anyhow::Result<u64> {
            Ok(fields
                .get(field - 3)
                .context("short /proc/<pid>/stat")?
                .parse()?)
        };
        Ok((ticks(14)? + ticks(15)?) as f64 / clock_ticks_per_second())
    }
}

/// The unit of the CPU times in `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// UDP datagrams sent so far by every socket of this network namespace (`OutDatagrams` of
/// `/proc/net/snmp`).
fn udp_out_datagrams() -> anyhow::Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    // Two `Udp:` lines: the field names, then the values.
    let mut lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (names, values) = lines.next().zip(lines.next()).context("no Udp: lines")?;
    let column = names
        .split_whitespace()
        .position(|name| name == "OutDatagrams")
        .context("no OutDatagrams in /proc/net/snmp")?;
    Ok(values
        .split_whitespace()
        .nth(column)
        .context("short Udp: line")?
        .parse()?)
}

impl Drop for Child {
    fn drop(&mut self) {
        // A child exits when its stdin closes. Give it [`EXIT_GRACE`] to do so, so that a
        // server wrapper that writes its results at exit (valgrind's tools) gets to write them;
        // an unwrapped child is gone within milliseconds. std's `Child` cannot wait with a
        // timeout, hence the bounded poll with a short sleep.
        drop(self.stdin.take());
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            match self.process.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        // Only this child, by its own handle; it may have exited already.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn parent(
    title: &str,
    args: &[String],
    columns: &[Column],
    measurements: &[Measurement],
) -> anyhow::Result<()> {
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with('-')).collect();
    let runs = match std::env::var(RUNS_VAR) {
        Ok(runs) => runs.parse().context(RUNS_VAR)?,
        Err(_) => DEFAULT_RUNS,
    };
    let cost_sessions = cost_sessions()?;
    let pinning = Pinning::detect();
    let profile = if cfg!(debug_assertions) {
        "DEBUG build: numbers are meaningless, use `cargo bench`"
    } else {
        "optimised build"
    };
    println!("{title}");
    println!(
        "{}; {profile}; median of {runs} runs for rates",
        pinning.note
    );
    let (asked, rmem_max, wmem_max) = setup::socket_buffers();
    let kib = |bytes: Option<usize>| bytes.map_or("?".to_owned(), |b| (b / 1024).to_string());
    println!(
        "UDP socket buffers: asked for {} KiB; kernel caps rmem_max {} KiB, wmem_max {} KiB",
        kib(asked),
        kib(rmem_max),
        kib(wmem_max)
    );
    if cost_sessions != COST_SESSIONS {
        println!(
            "{COST_SESSIONS_VAR}: the per-session cost rows count {cost_sessions} sessions, not \
             the 2,000 their labels say"
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    println!("load average before the run: {load} (other work on these cores skews the numbers)");
    let mut table = Table::new(columns);
    // What the qlog columns wrote, per measurement: a line each, printed under the table.
    let mut qlog_lines = Vec::new();
    for measurement in measurements {
        if !filters.is_empty() && !filters.iter().any(|f| measurement.key.contains(f.as_str())) {
            continue;
        }
        // Columns take turns run by run, so that a change in the machine's load over the
        // minutes of a measurement hits every column alike.
        let rounds = if measurement.kind == Kind::ServerMemory {
            1
        } else {
            runs
        };
        let labels = measurement.rows();
        let mut samples: Vec<anyhow::Result<Vec<Vec<f64>>>> =
            columns.iter().map(|_| Ok(Vec::new())).collect();
        let mut written: Vec<QlogWritten> =
            columns.iter().map(|_| QlogWritten::default()).collect();
        for _ in 0..rounds {
            for ((column, samples), written) in columns.iter().zip(&mut samples).zip(&mut written) {
                if let Ok(list) = samples {
                    match measure(&pinning, column, measurement) {
                        Ok((values, run)) => {
                            list.push(values);
                            if let Some(run) = run {
                                written.add(&run);
                            }
                        }
                        Err(error) => *samples = Err(error),
                    }
                }
            }
        }
        for (column, written) in columns.iter().zip(&written) {
            if written.runs > 0 {
                qlog_lines.push(format!(
                    "  {:<20} {:<12} {written}",
                    column.name, measurement.key
                ));
            }
        }
        let mut rows: Vec<Vec<Option<f64>>> = labels.iter().map(|_| Vec::new()).collect();
        for (column, samples) in columns.iter().zip(samples) {
            match samples {
                Ok(list) => {
                    for (row, &(label, decimals)) in labels.iter().enumerate() {
                        let mut values: Vec<f64> = list.iter().map(|run| run[row]).collect();
                        let runs: Vec<String> = values
                            .iter()
                            .map(|value| format!("{value:.decimals$}"))
                            .collect();
                        let median = median(&mut values);
                        if measurement.kind != Kind::ServerMemory {
                            println!(
                                "  {:<20} {label:<46} {median:.decimals$}  (runs: {})",
                                column.name,
                                runs.join(", ")
                            );
                        }
                        rows[row].push(Some(median));
                    }
                }
                Err(error) => {
                    println!(
                        "  {:<20} {:<46} failed: {error:#}",
                        column.name, measurement.label
                    );
                    rows.iter_mut().for_each(|row| row.push(None));
                }
            }
        }
        for ((label, decimals), values) in labels.into_iter().zip(rows) {
            table.rows.push((label, decimals, values));
        }
    }
    println!();
    print!("{}", table.render());
    if !qlog_lines.is_empty() {
        println!("qlog written (files, bytes and records on disk after each run, summed):");
        for line in qlog_lines {
            println!("{line}");
        }
    }
    Ok(())
}

/// What a [`Column::qlog`] column's runs wrote into their qlog directories.
#[derive(Clone, Copy, Debug, Default)]
struct QlogWritten {
    runs: u64,
    files: u64,
    bytes: u64,
    /// JSON-SEQ records (RFC 7464: each starts with 0x1E), the files' header records included.
    records: u64,
    /// Files holding their header record only, no event.
    without_events: u64,
}

impl QlogWritten {
    /// Counts the files of one run's qlog directory `dir`; an error if they hold no event.
    fn count(dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut written = Self {
            runs: 1,
            ..Self::default()
        };
        let mut buffer = vec![0; 1 << 20];
        for entry in std::fs::read_dir(dir)? {
            let mut file = std::fs::File::open(entry?.path())?;
            let mut records = 0;
            loop {
                let read = std::io::Read::read(&mut file, &mut buffer)?;
                if read == 0 {
                    break;
                }
                written.bytes += read as u64;
                records += buffer[..read].iter().filter(|&&b| b == 0x1e).count() as u64;
            }
            written.files += 1;
            written.records += records;
            if records < 2 {
                written.without_events += 1;
            }
        }
        if written.records <= written.files {
            bail!(
                "the qlog column wrote no qlog events ({} files, {} bytes in {})",
                written.files,
                written.bytes,
                dir.display()
            );
        }
        Ok(written)
    }

    fn add(&mut self, other: &Self) {
        self.runs += other.runs;
        self.files += other.files;
        self.bytes += other.bytes;
        self.records += other.records;
        self.without_events += other.without_events;
    }
}

impl std::fmt::Display for QlogWritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let runs = self.runs.max(1);
        write!(
            f,
            "{} runs: {} files, {:.1} MiB, {} records ({:.1} MiB and {} records a run)",
            self.runs,
            self.files,
            mib(self.bytes),
            self.records,
            mib(self.bytes / runs),
            self.records / runs
        )?;
        if self.without_events > 0 {
            write!(f, "; {} files without events", self.without_events)?;
        }
        Ok(())
    }
}

/// One run of `measurement` for `column`, each with a fresh server process: one value per row
/// ([`Measurement::rows`]), and for a [`Column::qlog`] column what it wrote (see the module
/// docs).
fn measure(
    pinning: &Pinning,
    column: &Column,
    measurement: &Measurement,
) -> anyhow::Result<(Vec<f64>, Option<QlogWritten>)> {
    let qlog_dir = if column.qlog {
        Some(
            tempfile::Builder::new()
                .prefix("quay-bench-qlog-")
                .tempdir()?,
        )
    } else {
        None
    };
    let values = run(
        pinning,
        column,
        measurement,
        qlog_dir.as_ref().map(|dir| dir.path()),
    )?;
    // Both children are gone (killed and waited for): every file is complete.
    let Some(dir) = qlog_dir else {
        return Ok((values, None));
    };
    let written = QlogWritten::count(dir.path())?;
    println!(
        "  {:<20} {:<46} qlog {} files, {:.1} MiB, {} records",
        column.name,
        measurement.key,
        written.files,
        written.bytes as f64 / f64::from(1 << 20),
        written.records
    );
    dir.close()?;
    Ok((values, Some(written)))
}

/// [`measure`] without the qlog directory's upkeep: the children of one run, writing their
/// qlog files into `qlog_dir` if given. Both children are killed and waited for before it
/// returns.
fn run(
    pinning: &Pinning,
    column: &Column,
    measurement: &Measurement,
    qlog_dir: Option<&std::path::Path>,
) -> anyhow::Result<Vec<f64>> {
    let server = Child::spawn(pinning, 0, &["server".into(), column.name.into()], qlog_dir)?;
    let listening = server.expect("listening")?;
    let (addr, hash) = listening
        .split_once(' ')
        .context("malformed listening line")?;
    let mut client = Child::spawn(
        pinning,
        1,
        &[
            "client".into(),
            column.name.into(),
            measurement.key.into(),
            addr.into(),
            hash.into(),
            "1".into(),
        ],
        qlog_dir,
    )?;
    match measurement.kind {
        Kind::Rate => Ok(vec![client.expect("result")?.parse()?]),
        Kind::ServerMemory => {
            client.expect("warm")?;
            std::thread::sleep(SETTLE);
            let before = server.rss_kib()?;
            client.send("go")?;
            let count: f64 = client.expect("ready")?.parse()?;
            std::thread::sleep(SETTLE);
            let after = server.rss_kib()?;
            client.send("exit")?;
            let per_connection = after.saturating_sub(before) as f64 / count;
            println!(
                "  {:<20} {:<46} {per_connection:.*}  (VmRSS {before} -> {after} KiB)",
                column.name, measurement.label, measurement.decimals
            );
            Ok(vec![per_connection])
        }
        Kind::SessionCost { .. } => {
            client.expect("warm")?;
            let (cpu, datagrams) = (server.cpu_seconds()?, udp_out_datagrams()?);
            client.send("go")?;
            let count: f64 = client.expect("ready")?.parse()?;
            // The server handles the last closes after the client saw them leave.
            std::thread::sleep(SETTLE);
            let cpu = server.cpu_seconds()? - cpu;
            let datagrams = udp_out_datagrams()? - datagrams;
            client.send("exit")?;
            Ok(vec![cpu * 1e6 / count, datagrams as f64 / count])
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The results table: one row per measurement, one column per implementation, then ratios of
/// every column to the first (the floor), of every column after the second to the second, and
/// of every variant to the column it is a variant of ([`Column::variant_of`]).
#[derive(Debug)]
struct Table {
    columns: Vec<&'static str>,
    /// Pairs (column, base) whose ratio is shown, as indices into `columns`.
    ratios: Vec<(usize, usize)>,
    /// Label, digits after the decimal point, and a median per column.
    rows: Vec<(&'static str, usize, Vec<Option<f64>>)>,
}

impl Table {
    fn new(columns: &[Column]) -> Self {
        let mut ratios = Vec::new();
        for base in 0..columns.len().min(2) {
            for column in base + 1..columns.len() {
                ratios.push((column, base));
            }
        }
        for (column, variant) in columns.iter().enumerate() {
            let base = variant
                .variant_of
                .and_then(|name| columns.iter().position(|c| c.name == name));
            if let Some(base) = base
                && !ratios.contains(&(column, base))
            {
                ratios.push((column, base));
            }
        }
        Self {
            columns: columns.iter().map(|column| column.name).collect(),
            ratios,
            rows: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let ratios = &self.ratios;
        let mut header = vec!["measurement".to_string()];
        header.extend(self.columns.iter().map(|name| name.to_string()));
        header.extend(
            ratios.iter().map(|&(column, base)| {
                format!("{} / {}", self.columns[column], self.columns[base])
            }),
        );
        let mut lines = vec![header];
        for (label, decimals, values) in &self.rows {
            let mut line = vec![label.to_string()];
            line.extend(values.iter().map(|value| match value {
                Some(value) => format!("{value:.decimals$}"),
                None => "failed".into(),
            }));
            line.extend(ratios.iter().map(|&(column, base)| {
                match (values[column], values[base]) {
                    (Some(value), Some(base)) if base > 0.0 => format!("{:.2}x", value / base),
                    _ => "-".into(),
                }
            }));
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|i| lines.iter().map(|line| line[i].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (n, line) in lines.iter().enumerate() {
            for (i, cell) in line.iter().enumerate() {
                let sep = if i == 0 { "" } else { "  " };
                if i == 0 {
                    let _ = write!(out, "{cell:<width$}", width = widths[i]);
                } else {
                    let _ = write!(out, "{sep}{cell:>width$}", width = widths[i]);
                }
            }
            out.push('\n');
            if n == 0 {
                let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        out.push_str(
            "rates: higher is better; memory, CPU and datagrams per connection or session: \
             lower is better\n",
        );
        out
    }
}

/// The resident set size of process `pid`, in KiB (VmRSS of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/<pid>/status")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS line")?
        .parse()?;
    Ok(kib)
}
