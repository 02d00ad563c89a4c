//! The HTTP/3 benchmark (quay-h3 issue, "Benchmark"): what an HTTP/3 stack must do, the
//! stacks measured so far, and the measurements.
//!
//! A stack is a type implementing [`H3Stack`]; [`column()`] turns it into a table column. The
//! columns are [`RawQuinn`] (the floor), [`Hyperium`] (the reference) and quay-h3, whose `Quay`
//! stack lives in `benches/h3.rs` (quay-h3 is a dev-dependency of this crate) and is listed after
//! the two anchors so that the table shows it against both.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::bail;
use quay_transport::{ClientBuilder, ServerBuilder};
use quinn::Endpoint;

use super::{
    ClientArgs, ClientEnd, Column, Kind, Measurement, bounded, idle_protocol, report_runs,
    run_concurrently, seconds,
};
use crate::{hyperium, raw, setup};

/// Size of the small responses.
pub const SMALL: u64 = 1024;
/// Requests timed per run of [`REQUESTS`].
pub const REQUEST_COUNT: usize = 20_000;
/// Requests in flight on the one connection.
pub const REQUEST_CONCURRENCY: usize = 100;
/// Requests sent before the timed ones, on the same connection.
pub const REQUEST_WARMUP: usize = 2_000;
/// Size of the one large response.
pub const LARGE: u64 = 1 << 30;
/// Connections timed per run of [`CONNECTIONS`].
pub const CONNECTION_COUNT: usize = 1_000;
/// Connection set-ups in flight at once.
pub const CONNECTION_CONCURRENCY: usize = 10;

/// Requests per second: 1 KiB GETs, 100 at a time on one connection.
pub const REQUESTS: Measurement = Measurement {
    key: "requests",
    label: "requests/s (1 KiB GET, 100 concurrent)",
    decimals: 0,
    kind: Kind::Rate,
};
/// Throughput of one 1 GiB response, in Gbit/s.
pub const LARGE_RESPONSE: Measurement = Measurement {
    key: "large",
    label: "1 GiB response (Gbit/s)",
    decimals: 2,
    kind: Kind::Rate,
};
/// New connections per second, each with its set-up (SETTINGS for HTTP/3) and one 1 KiB GET.
pub const CONNECTIONS: Measurement = Measurement {
    key: "connections",
    label: "connections/s (handshake + 1 GET, 10 at once)",
    decimals: 0,
    kind: Kind::Rate,
};
/// Server memory per idle connection (1,000 connections, each after one GET), in KiB.
pub const IDLE_MEMORY: Measurement = Measurement {
    key: "idle",
    label: "server KiB per idle connection (1,000)",
    decimals: 1,
    kind: Kind::ServerMemory,
};

/// Every measurement, in table order.
pub const MEASUREMENTS: [Measurement; 4] = [REQUESTS, LARGE_RESPONSE, CONNECTIONS, IDLE_MEMORY];

/// An HTTP/3 implementation (or the raw-quinn floor) as the benchmark drives it.
///
/// Everything runs on one single-threaded tokio runtime per process, so the futures need not be
/// `Send`; implementations may still `tokio::spawn` their own `Send` tasks.
#[allow(async_fn_in_trait)] // Only the harness calls these, on a current-thread runtime.
pub trait H3Stack {
    /// The column's name in the table.
    const NAME: &'static str;
    /// Whether the column writes a qlog file per connection ([`Column::qlog`]).
    const QLOG: bool = false;
    /// The column this one is a variant of ([`Column::variant_of`]).
    const VARIANT_OF: Option<&'static str> = None;
    /// A client connection, ready for requests.
    type Client;

    /// Serves connections accepted on `endpoint` (bound by `builder`) until it is closed:
    /// `GET /bytes/<n>` is answered with status 200 and n bytes of body.
    async fn serve(endpoint: Endpoint, builder: ServerBuilder) -> anyhow::Result<()>;

    /// Opens a connection to `server` from `end` (server name [`setup::SERVER_NAME`]) and
    /// does whatever the protocol needs before requests can be sent.
    async fn connect(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Client>;

    /// `GET /bytes/<size>` on `client`: reads the whole body (without keeping it) and returns
    /// its length. Many of these run at once on one client.
    async fn download(client: &Self::Client, size: u64) -> anyhow::Result<u64>;

    /// Closes the connection.
    fn close(client: Self::Client);
}

/// The floor: a request is a bare quinn bidirectional stream ([`raw`]).
#[derive(Debug)]
pub struct RawQuinn;

impl H3Stack for RawQuinn {
    const NAME: &'static str = "raw quinn";
    type Client = quinn::Connection;

    async fn serve(endpoint: Endpoint, _builder: ServerBuilder) -> anyhow::Result<()> {
        raw::serve(endpoint).await
    }

    async fn connect(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Client> {
        setup::connect(&end.endpoint, server).await
    }

    async fn download(client: &Self::Client, size: u64) -> anyhow::Result<u64> {
        raw::download(client, size).await
    }

    fn close(client: Self::Client) {
        client.close(0u32.into(), b"done");
    }
}

/// hyperium `h3` 0.0.8 with `h3-quinn` 0.0.10 ([`hyperium`]).
#[derive(Debug)]
pub struct Hyperium;

impl H3Stack for Hyperium {
    const NAME: &'static str = "hyperium h3";
    type Client = hyperium::Client;

    async fn serve(endpoint: Endpoint, _builder: ServerBuilder) -> anyhow::Result<()> {
        hyperium::serve(endpoint).await
    }

    async fn connect(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Client> {
        hyperium::Client::new(setup::connect(&end.endpoint, server).await?).await
    }

    async fn download(client: &Self::Client, size: u64) -> anyhow::Result<u64> {
        client.download(size).await
    }

    fn close(client: Self::Client) {
        client.close();
    }
}

/// The table column of stack `S`.
pub fn column<S: H3Stack + 'static>() -> Column {
    Column {
        name: S::NAME,
        server: |endpoint, builder| Box::pin(S::serve(endpoint, builder)),
        client: |endpoint, builder, args| Box::pin(client::<S>(endpoint, builder, args)),
        qlog: S::QLOG,
        variant_of: S::VARIANT_OF,
    }
}

async fn client<S: H3Stack>(
    endpoint: Endpoint,
    builder: ClientBuilder,
    args: ClientArgs,
) -> anyhow::Result<()> {
    let end = &ClientEnd::new(endpoint, &builder)?;
    let server = args.server;
    match args.measurement.as_str() {
        "requests" => report_runs(args.runs, || requests::<S>(end, server)).await?,
        "large" => report_runs(args.runs, || large::<S>(end, server)).await?,
        "connections" => report_runs(args.runs, || connections::<S>(end, server)).await?,
        "idle" => {
            idle_protocol(|count| {
                bounded(run_concurrently(count, CONNECTION_CONCURRENCY, |_| {
                    connect_and_get::<S>(end, server)
                }))
            })
            .await?;
        }
        other => bail!("unknown measurement {other:?}"),
    }
    end.endpoint.close(0u32.into(), b"done");
    Ok(())
}

async fn requests<S: H3Stack>(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<f64> {
    let client = S::connect(end, server).await?;
    let get = |_| S::download(&client, SMALL);
    run_concurrently(REQUEST_WARMUP, REQUEST_CONCURRENCY, get).await?;
    let start = Instant::now();
    run_concurrently(REQUEST_COUNT, REQUEST_CONCURRENCY, get).await?;
    let rate = REQUEST_COUNT as f64 / seconds(start);
    S::close(client);
    Ok(rate)
}

async fn large<S: H3Stack>(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<f64> {
    let client = S::connect(end, server).await?;
    S::download(&client, SMALL).await?;
    let start = Instant::now();
    let bytes = S::download(&client, LARGE).await?;
    let gbits = bytes as f64 * 8.0 / seconds(start) / 1e9;
    S::close(client);
    Ok(gbits)
}

async fn connections<S: H3Stack>(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<f64> {
    let start = Instant::now();
    let clients = run_concurrently(CONNECTION_COUNT, CONNECTION_CONCURRENCY, |_| async {
        let client = connect_and_get::<S>(end, server).await?;
        S::close(client);
        Ok(())
    })
    .await?;
    Ok(clients.len() as f64 / seconds(start))
}

async fn connect_and_get<S: H3Stack>(
    end: &ClientEnd,
    server: SocketAddr,
) -> anyhow::Result<S::Client> {
    let client = S::connect(end, server).await?;
    S::download(&client, SMALL).await?;
    Ok(client)
}
