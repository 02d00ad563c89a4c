//! The WebTransport benchmark (quay-webtransport issue, "Benchmark"): what a WebTransport stack
//! must do, the stacks measured so far, and the measurements.
//!
//! A stack is a type implementing [`WtStack`]; [`column()`] turns it into a table column. The
//! columns are raw quinn (the floor), web-transport-quinn (the reference) and quay; each one's
//! streams speak the tiny protocol of [`crate::raw`] and its datagrams are echoed. Two variants
//! of quay come on request: [`QuayWithMetrics`] ([`METRICS_COLUMN_VAR`]) and [`QuayWithQlog`]
//! ([`QLOG_COLUMN_VAR`]).
//!
//! Besides rates and memory, [`SESSION_COST`] (`-- cost`) counts what one session costs over
//! 2,000 of them, in one run per column: the server process's CPU time and the UDP datagrams
//! client and server send each other. The datagrams are read from `/proc/net/snmp`, which counts
//! every UDP socket of the network namespace: run it on a quiet machine or in a namespace of its
//! own (see [`super`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use quay_transport::{ClientBuilder, ServerBuilder};
use quinn::Endpoint;

use super::{
    ClientArgs, ClientEnd, Column, Kind, Measurement, bounded, cost_protocol, idle_protocol,
    report_runs, run_concurrently, seconds,
};
use crate::{quaywt, raw, setup, wtq};

/// Size of one stream's download.
pub const LARGE: u64 = 1 << 30;
/// Payload of the small request/response streams.
pub const SMALL_PAYLOAD: usize = 100;
/// Streams timed per run of [`STREAMS`].
pub const STREAM_COUNT: usize = 20_000;
/// Streams in flight at once.
pub const STREAM_CONCURRENCY: usize = 100;
/// Streams opened before the timed ones, on the same session.
pub const STREAM_WARMUP: usize = 2_000;
/// Size of one echoed datagram.
pub const DATAGRAM_SIZE: usize = 1_000;
/// Datagrams sent per run of [`DATAGRAMS`].
pub const DATAGRAM_COUNT: usize = 100_000;
/// Datagrams in flight at once at most.
pub const DATAGRAM_WINDOW: usize = 256;
/// After this long without an echo, the datagrams in flight count as lost.
pub const DATAGRAM_LOSS_TIMEOUT: Duration = Duration::from_millis(50);
/// Sessions timed per run of [`SESSIONS`].
pub const SESSION_COUNT: usize = 1_000;
/// Session set-ups in flight at once.
pub const SESSION_CONCURRENCY: usize = 10;

/// Throughput of one stream carrying 1 GiB from server to client, in Gbit/s.
pub const STREAM_THROUGHPUT: Measurement = Measurement {
    key: "throughput",
    label: "1 GiB on one stream (Gbit/s)",
    decimals: 2,
    kind: Kind::Rate,
};
/// Bidirectional streams per second, each a 100-byte request echoed back.
pub const STREAMS: Measurement = Measurement {
    key: "streams",
    label: "streams/s (100 B echo, 100 concurrent)",
    decimals: 0,
    kind: Kind::Rate,
};
/// Datagrams echoed per second, 1,000 bytes each, at most 256 in flight.
pub const DATAGRAMS: Measurement = Measurement {
    key: "datagrams",
    label: "datagram echoes/s (1,000 B, <= 256 in flight)",
    decimals: 0,
    kind: Kind::Rate,
};
/// New sessions per second: QUIC handshake, session set-up and one 100-byte stream echo.
pub const SESSIONS: Measurement = Measurement {
    key: "sessions",
    label: "sessions/s (set-up + 1 echo, 10 at once)",
    decimals: 0,
    kind: Kind::Rate,
};
/// What a session costs: the server's CPU time and the UDP datagrams both sides send, per
/// session, over [`COST_SESSIONS`](super::COST_SESSIONS) sessions of QUIC handshake, session
/// set-up, one 100-byte bidirectional stream echo, session close and connection close,
/// [`SESSION_CONCURRENCY`] at once; counted until every connection is closed. The datagrams are
/// counted system-wide (`OutDatagrams` of `/proc/net/snmp`, see [`super`]): run it on a quiet
/// machine.
pub const SESSION_COST: Measurement = Measurement {
    key: "cost",
    label: "server CPU µs per session (2,000: set-up, echo, close)",
    decimals: 0,
    kind: Kind::SessionCost {
        datagrams_label: "UDP datagrams per session (sent by both; same run)",
    },
};
/// Server memory per idle session (1,000 sessions, one per connection), in KiB.
pub const IDLE_MEMORY: Measurement = Measurement {
    key: "idle",
    label: "server KiB per idle session (1,000)",
    decimals: 1,
    kind: Kind::ServerMemory,
};

/// Every measurement, in table order.
pub const MEASUREMENTS: [Measurement; 6] = [
    STREAM_THROUGHPUT,
    STREAMS,
    DATAGRAMS,
    SESSIONS,
    SESSION_COST,
    IDLE_MEMORY,
];

/// A WebTransport implementation (or the raw-quinn floor) as the benchmark drives it.
///
/// Everything runs on one single-threaded tokio runtime per process, so the futures need not be
/// `Send`.
#[allow(async_fn_in_trait)] // Only the harness calls these, on a current-thread runtime.
pub trait WtStack {
    /// The column's name in the table.
    const NAME: &'static str;
    /// Whether the column writes a qlog file per connection ([`Column::qlog`](super::Column::qlog)).
    const QLOG: bool = false;
    /// The column this one is a variant of ([`Column::variant_of`](super::Column::variant_of)).
    const VARIANT_OF: Option<&'static str> = None;
    /// A client session.
    type Session;

    /// Serves sessions on `endpoint` (bound by `builder`) until it is closed, accepting every
    /// one: bidirectional streams carry [`raw`] requests, datagrams are echoed.
    async fn serve(endpoint: Endpoint, builder: ServerBuilder) -> anyhow::Result<()>;

    /// Opens a connection and a session on it to the server at `server`.
    async fn connect(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Session>;

    /// Asks for `size` bytes on a new bidirectional stream; returns how many arrived.
    async fn download(session: &Self::Session, size: u64) -> anyhow::Result<u64>;

    /// Sends `payload` on a new bidirectional stream; returns the length of the echo.
    async fn echo(session: &Self::Session, payload: &[u8]) -> anyhow::Result<usize>;

    /// Sends one datagram without waiting.
    fn send_datagram(session: &Self::Session, payload: Bytes) -> anyhow::Result<()>;

    /// Waits for the next datagram.
    async fn read_datagram(session: &Self::Session) -> anyhow::Result<Bytes>;

    /// Closes the session and its connection.
    fn close(session: Self::Session);

    /// The QUIC connection under the session.
    fn connection(session: &Self::Session) -> quinn::Connection;
}

/// The floor: streams and datagrams straight on a quinn connection ([`raw`]).
#[derive(Debug)]
pub struct RawQuinn;

impl WtStack for RawQuinn {
    const NAME: &'static str = "raw quinn";
    type Session = quinn::Connection;

    async fn serve(endpoint: Endpoint, _builder: ServerBuilder) -> anyhow::Result<()> {
        raw::serve(endpoint).await
    }

    async fn connect(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Session> {
        setup::connect(&client.endpoint, server).await
    }

    async fn download(session: &Self::Session, size: u64) -> anyhow::Result<u64> {
        raw::download(session, size).await
    }

    async fn echo(session: &Self::Session, payload: &[u8]) -> anyhow::Result<usize> {
        Ok(raw::echo(session, payload).await?.len())
    }

    fn send_datagram(session: &Self::Session, payload: Bytes) -> anyhow::Result<()> {
        Ok(session.send_datagram(payload)?)
    }

    async fn read_datagram(session: &Self::Session) -> anyhow::Result<Bytes> {
        Ok(session.read_datagram().await?)
    }

    fn close(session: Self::Session) {
        session.close(0u32.into(), b"done");
    }

    fn connection(session: &Self::Session) -> quinn::Connection {
        session.clone()
    }
}

/// `web-transport-quinn` 0.13 ([`wtq`]).
#[derive(Debug)]
pub struct WebTransportQuinn;

impl WtStack for WebTransportQuinn {
    const NAME: &'static str = "web-transport-quinn";
    type Session = web_transport_quinn::Session;

    async fn serve(endpoint: Endpoint, _builder: ServerBuilder) -> anyhow::Result<()> {
        wtq::serve(endpoint).await
    }

    async fn connect(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Session> {
        let connection = setup::connect(&client.endpoint, server).await?;
        wtq::connect(connection, server.port()).await
    }

    async fn download(session: &Self::Session, size: u64) -> anyhow::Result<u64> {
        wtq::download(session, size).await
    }

    async fn echo(session: &Self::Session, payload: &[u8]) -> anyhow::Result<usize> {
        Ok(wtq::echo(session, payload).await?.len())
    }

    fn send_datagram(session: &Self::Session, payload: Bytes) -> anyhow::Result<()> {
        wtq::send_datagram(session, payload)
    }

    async fn read_datagram(session: &Self::Session) -> anyhow::Result<Bytes> {
        Ok(session.read_datagram().await?)
    }

    fn close(session: Self::Session) {
        session.close(0, b"done");
    }

    fn connection(session: &Self::Session) -> quinn::Connection {
        (**session).clone()
    }
}

/// quay's own `quay-webtransport` ([`quaywt`]).
#[derive(Debug)]
pub struct Quay;

impl WtStack for Quay {
    const NAME: &'static str = "quay";
    type Session = quay_webtransport::Session;

    async fn serve(endpoint: Endpoint, _builder: ServerBuilder) -> anyhow::Result<()> {
        quaywt::serve(endpoint).await
    }

    async fn connect(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Session> {
        let connection = setup::connect(&client.endpoint, server).await?;
        quaywt::connect(connection, server.port()).await
    }

    async fn download(session: &Self::Session, size: u64) -> anyhow::Result<u64> {
        quaywt::download(session, size).await
    }

    async fn echo(session: &Self::Session, payload: &[u8]) -> anyhow::Result<usize> {
        Ok(quaywt::echo(session, payload).await?.len())
    }

    fn send_datagram(session: &Self::Session, payload: Bytes) -> anyhow::Result<()> {
        quaywt::send_datagram(session, payload)
    }

    async fn read_datagram(session: &Self::Session) -> anyhow::Result<Bytes> {
        Ok(session.read_datagram().await?)
    }

    fn close(session: Self::Session) {
        session.close(0, "done");
    }

    fn connection(session: &Self::Session) -> quinn::Connection {
        session.connection().clone()
    }
}

/// The session half of a [`WtStack`] impl for a variant of [`Quay`] (one that changes how it
/// serves or connects): the session type and everything done with a session are Quay's.
macro_rules! quay_sessions {
    () => {
        type Session = quay_webtransport::Session;

        async fn download(session: &Self::Session, size: u64) -> anyhow::Result<u64> {
            Quay::download(session, size).await
        }

        async fn echo(session: &Self::Session, payload: &[u8]) -> anyhow::Result<usize> {
            Quay::echo(session, payload).await
        }

        fn send_datagram(session: &Self::Session, payload: Bytes) -> anyhow::Result<()> {
            Quay::send_datagram(session, payload)
        }

        async fn read_datagram(session: &Self::Session) -> anyhow::Result<Bytes> {
            Quay::read_datagram(session).await
        }

        fn close(session: Self::Session) {
            Quay::close(session);
        }

        fn connection(session: &Self::Session) -> quinn::Connection {
            Quay::connection(session)
        }
    };
}

/// [`Quay`] with a metrics recorder installed in both processes (`metrics-exporter-prometheus`,
/// as the demo installs it, its upkeep every 5 s), where the other columns have none: the cost
/// of quay's metrics when someone records them. A column of its own only when
/// [`METRICS_COLUMN_VAR`] is set.
#[derive(Debug)]
pub struct QuayWithMetrics;

/// Set to `1` to add the [`QuayWithMetrics`] column to the WebTransport benchmark.
pub const METRICS_COLUMN_VAR: &str = "QUAY_BENCH_METRICS";

/// Installs the Prometheus recorder once per process, and its upkeep on the current runtime.
fn record_metrics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder of this process");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
    });
}

impl WtStack for QuayWithMetrics {
    const NAME: &'static str = "quay + metrics";
    const VARIANT_OF: Option<&'static str> = Some(Quay::NAME);

    async fn serve(endpoint: Endpoint, builder: ServerBuilder) -> anyhow::Result<()> {
        record_metrics();
        Quay::serve(endpoint, builder).await
    }

    async fn connect(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Session> {
        record_metrics();
        Quay::connect(client, server).await
    }

    quay_sessions!();
}

/// [`Quay`] writing a qlog file for every connection, server and client: the server accepts
/// through its builder's `Acceptor` (`Server::from_endpoint_with`), the client connects
/// through its builder's `Connector` and hands the connection's qlog to
/// `Client::with_qlog`. The harness names the directory (a fresh one under the system's
/// temporary directory for each run, see [`super`]) and checks that events were written. A
/// column of its own only when [`QLOG_COLUMN_VAR`] is set.
#[derive(Debug)]
pub struct QuayWithQlog;

/// Set to `1` to add the [`QuayWithQlog`] column to the WebTransport benchmark.
pub const QLOG_COLUMN_VAR: &str = "QUAY_BENCH_QLOG";

impl WtStack for QuayWithQlog {
    const NAME: &'static str = "quay + qlog";
    const QLOG: bool = true;
    const VARIANT_OF: Option<&'static str> = Some(Quay::NAME);

    async fn serve(endpoint: Endpoint, builder: ServerBuilder) -> anyhow::Result<()> {
        quaywt::serve_with(endpoint, builder.acceptor()?).await
    }

    async fn connect(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Session> {
        let (connecting, qlog) =
            client
                .connector
                .connect(&client.endpoint, server, setup::SERVER_NAME)?;
        anyhow::ensure!(qlog.is_some(), "the qlog column's connection has no qlog");
        quaywt::connect_with_qlog(connecting.await?, qlog, server.port()).await
    }

    quay_sessions!();
}

/// The table column of stack `S`.
pub fn column<S: WtStack + 'static>() -> Column {
    Column {
        name: S::NAME,
        server: |endpoint, builder| Box::pin(S::serve(endpoint, builder)),
        client: |endpoint, builder, args| Box::pin(client::<S>(endpoint, builder, args)),
        qlog: S::QLOG,
        variant_of: S::VARIANT_OF,
    }
}

async fn client<S: WtStack>(
    endpoint: Endpoint,
    builder: ClientBuilder,
    args: ClientArgs,
) -> anyhow::Result<()> {
    let client = &ClientEnd::new(endpoint, &builder)?;
    let server = args.server;
    match args.measurement.as_str() {
        "throughput" => report_runs(args.runs, || throughput::<S>(client, server)).await?,
        "streams" => report_runs(args.runs, || streams::<S>(client, server)).await?,
        "datagrams" => report_runs(args.runs, || datagrams::<S>(client, server)).await?,
        "sessions" => report_runs(args.runs, || sessions::<S>(client, server)).await?,
        "cost" => {
            cost_protocol(|count| closed_sessions::<S>(client, server, count)).await?;
        }
        "idle" => {
            idle_protocol(|count| {
                bounded(run_concurrently(count, SESSION_CONCURRENCY, |_| {
                    connect_and_echo::<S>(client, server)
                }))
            })
            .await?;
        }
        other => bail!("unknown measurement {other:?}"),
    }
    client.endpoint.close(0u32.into(), b"done");
    Ok(())
}

async fn throughput<S: WtStack>(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<f64> {
    let session = S::connect(client, server).await?;
    S::echo(&session, &[0; SMALL_PAYLOAD]).await?;
    let start = Instant::now();
    let bytes = S::download(&session, LARGE).await?;
    let gbits = bytes as f64 * 8.0 / seconds(start) / 1e9;
    S::close(session);
    Ok(gbits)
}

async fn streams<S: WtStack>(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<f64> {
    let session = S::connect(client, server).await?;
    let payload = [0x5a; SMALL_PAYLOAD];
    let echo = |_| async {
        let echoed = S::echo(&session, &payload).await?;
        if echoed != SMALL_PAYLOAD {
            bail!("sent {SMALL_PAYLOAD} bytes, got {echoed} back");
        }
        Ok(())
    };
    run_concurrently(STREAM_WARMUP, STREAM_CONCURRENCY, echo).await?;
    let start = Instant::now();
    run_concurrently(STREAM_COUNT, STREAM_CONCURRENCY, echo).await?;
    let rate = STREAM_COUNT as f64 / seconds(start);
    S::close(session);
    Ok(rate)
}

/// Sends [`DATAGRAM_COUNT`] datagrams keeping at most [`DATAGRAM_WINDOW`] in flight; a
/// datagram whose echo does not come within [`DATAGRAM_LOSS_TIMEOUT`] counts as lost. The rate
/// is echoes received per second.
async fn datagrams<S: WtStack>(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<f64> {
    let session = S::connect(client, server).await?;
    let payload = Bytes::from(vec![0xa5; DATAGRAM_SIZE]);
    // Wait for the session to be fully up: one echo round trip.
    S::echo(&session, &[0; SMALL_PAYLOAD]).await?;
    let (mut sent, mut received, mut lost, mut in_flight) = (0, 0, 0, 0);
    let start = Instant::now();
    while received + lost < DATAGRAM_COUNT {
        while in_flight < DATAGRAM_WINDOW && sent < DATAGRAM_COUNT {
            S::send_datagram(&session, payload.clone())?;
            sent += 1;
            in_flight += 1;
        }
        match tokio::time::timeout(DATAGRAM_LOSS_TIMEOUT, S::read_datagram(&session)).await {
            Ok(datagram) => {
                let datagram = datagram?;
                if datagram.len() != DATAGRAM_SIZE {
                    bail!("sent {DATAGRAM_SIZE} bytes, got {} back", datagram.len());
                }
                received += 1;
                in_flight = in_flight.saturating_sub(1);
            }
            Err(_elapsed) => {
                lost += in_flight;
                in_flight = 0;
            }
        }
    }
    let elapsed = seconds(start);
    if lost > DATAGRAM_COUNT / 100 {
        eprintln!("{}: {lost} of {DATAGRAM_COUNT} datagrams lost", S::NAME);
    }
    S::close(session);
    Ok(received as f64 / elapsed)
}

async fn sessions<S: WtStack>(client: &ClientEnd, server: SocketAddr) -> anyhow::Result<f64> {
    let start = Instant::now();
    let done = run_concurrently(SESSION_COUNT, SESSION_CONCURRENCY, |_| {
        session_and_close::<S>(client, server)
    })
    .await?;
    Ok(done.len() as f64 / seconds(start))
}

/// Runs `count` sessions ([`session_and_close`]) and waits until all their connections are
/// closed and drained, so that every packet of theirs has been sent.
async fn closed_sessions<S: WtStack>(
    client: &ClientEnd,
    server: SocketAddr,
    count: usize,
) -> anyhow::Result<Vec<()>> {
    let done = bounded(run_concurrently(count, SESSION_CONCURRENCY, |_| {
        session_and_close::<S>(client, server)
    }))
    .await?;
    bounded(async {
        client.endpoint.wait_idle().await;
        Ok(())
    })
    .await?;
    if std::env::var_os(FRAME_STATS_VAR).is_some() {
        print_frame_stats(S::NAME, &done);
    }
    Ok(done.iter().map(|_| ()).collect())
}

/// Set this environment variable to have a [`SESSION_COST`] client print, to stderr, the
/// client side's quinn statistics of its sessions' connections, averaged per session: datagrams
/// each way and QUIC frames by type each way (what the client received is what the server
/// sent). It tells which frames make up the datagram count.
pub const FRAME_STATS_VAR: &str = "QUAY_BENCH_FRAME_STATS";

/// Prints the averages of [`FRAME_STATS_VAR`] for the closed connections `conns`.
fn print_frame_stats(name: &str, conns: &[quinn::Connection]) {
    let stats: Vec<quinn::ConnectionStats> = conns.iter().map(|c| c.stats()).collect();
    let count = stats.len().max(1) as f64;
    macro_rules! line {
        ($($label:literal => $field:expr),* $(,)?) => {
            $(
                let total: u64 = stats.iter().map($field).sum();
                eprintln!("{name:<20} {:<28} {:8.3}", $label, total as f64 / count);
            )*
        };
    }
    line!(
        "client udp_tx" => |s| s.udp_tx.datagrams,
        "client udp_rx" => |s| s.udp_rx.datagrams,
        "client sent_packets" => |s| s.path.sent_packets,
        "client lost_packets" => |s| s.path.lost_packets,
        "client mtu probes" => |s| s.path.sent_plpmtud_probes,
        "tx acks" => |s| s.frame_tx.acks,
        "tx stream" => |s| s.frame_tx.stream,
        "tx crypto" => |s| s.frame_tx.crypto,
        "tx ping" => |s| s.frame_tx.ping,
        "tx max_stream_data" => |s| s.frame_tx.max_stream_data,
        "tx max_data" => |s| s.frame_tx.max_data,
        "tx max_streams_bidi" => |s| s.frame_tx.max_streams_bidi,
        "tx max_streams_uni" => |s| s.frame_tx.max_streams_uni,
        "tx new_connection_id" => |s| s.frame_tx.new_connection_id,
        "tx stop_sending" => |s| s.frame_tx.stop_sending,
        "tx reset_stream" => |s| s.frame_tx.reset_stream,
        "tx connection_close" => |s| s.frame_tx.connection_close,
        "tx datagram" => |s| s.frame_tx.datagram,
        "rx acks" => |s| s.frame_rx.acks,
        "rx stream" => |s| s.frame_rx.stream,
        "rx crypto" => |s| s.frame_rx.crypto,
        "rx ping" => |s| s.frame_rx.ping,
        "rx max_stream_data" => |s| s.frame_rx.max_stream_data,
        "rx max_data" => |s| s.frame_rx.max_data,
        "rx max_streams_bidi" => |s| s.frame_rx.max_streams_bidi,
        "rx max_streams_uni" => |s| s.frame_rx.max_streams_uni,
        "rx new_connection_id" => |s| s.frame_rx.new_connection_id,
        "rx retire_connection_id" => |s| s.frame_rx.retire_connection_id,
        "rx new_token" => |s| s.frame_rx.new_token,
        "rx stop_sending" => |s| s.frame_rx.stop_sending,
        "rx reset_stream" => |s| s.frame_rx.reset_stream,
        "rx connection_close" => |s| s.frame_rx.connection_close,
        "rx handshake_done" => |s| u64::from(s.frame_rx.handshake_done),
    );
}

/// A session's life in [`SESSIONS`] and [`SESSION_COST`]: connect, one echo, close. Returns
/// the session's QUIC connection, whose statistics stay readable after the close.
async fn session_and_close<S: WtStack>(
    client: &ClientEnd,
    server: SocketAddr,
) -> anyhow::Result<quinn::Connection> {
    let session = connect_and_echo::<S>(client, server).await?;
    let connection = S::connection(&session);
    S::close(session);
    Ok(connection)
}

async fn connect_and_echo<S: WtStack>(
    client: &ClientEnd,
    server: SocketAddr,
) -> anyhow::Result<S::Session> {
    let session = S::connect(client, server).await?;
    S::echo(&session, &[0; SMALL_PAYLOAD]).await?;
    Ok(session)
}
