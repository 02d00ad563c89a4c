//! HTTP/3 benchmark: `cargo bench -p quay-tests --bench h3 [-- <measurement>…]`.
//!
//! With `QUAY_BENCH_QLOG=1`, a column `quay + qlog` runs [`Quay`] writing a qlog file for every
//! connection on both sides, into a fresh directory under the system's temporary directory
//! (`$TMPDIR` or `/tmp`) for each run, removed after it; under the table, the files, bytes and
//! records written (a run that wrote no event fails). What the writes cost depends on the file
//! system (`TMPDIR=/dev/shm` for a tmpfs).
//!
//! Server and client run as two processes pinned to one core each; see
//! `quay_tests::bench` for the harness and `quay_tests::bench::h3` for the measurements and
//! for how to add a column.
//!
//! The columns: raw quinn (the floor), hyperium h3 (the reference), quay-h3 ([`Quay`],
//! defined here because quay-h3 is a dev-dependency of quay-tests), and an axum `Router` served
//! by `quay_h3::serve` ([`QuayAxum`]: what a tower service costs on top of quay-h3).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::bail;
use http::{Request, Response, StatusCode};
use quay_h3::client;
use quay_h3::server::{Connection, IncomingRequest};
use quay_h3::{Code, Config};
use quay_tests::bench::ClientEnd;
use quay_tests::bench::h3::{H3Stack, Hyperium, MEASUREMENTS, RawQuinn, column};
use quay_tests::bench::webtransport::QLOG_COLUMN_VAR;
use quay_tests::hyperium::{BYTES_PATH, url};
use quay_tests::raw::zero_chunks;
use quay_tests::setup;
use quay_transport::ServerBuilder;
use quinn::Endpoint;

fn main() -> ExitCode {
    // The floor first, then the reference; both are used as ratio bases.
    let mut columns = vec![
        column::<RawQuinn>(),
        column::<Hyperium>(),
        column::<Quay>(),
        column::<QuayAxum>(),
    ];
    // quay-h3 again writing qlog files: what qlog costs when it is on.
    if std::env::var(QLOG_COLUMN_VAR).is_ok_and(|value| value == "1") {
        columns.push(column::<QuayWithQlog>());
    }
    quay_tests::bench::main(
        "quay HTTP/3 benchmark (loopback, 127.0.0.1)",
        &columns,
        &MEASUREMENTS,
    )
}

/// quay-h3 with its default [`Config`], on the same endpoints as the other columns.
///
/// The server takes each request stream with `accept_stream` and reads its head in the
/// request's own task (as the hyperium server does with `resolve_request`), so one slow head
/// holds up nothing else.
#[derive(Debug)]
struct Quay;

impl H3Stack for Quay {
    const NAME: &'static str = "quay";
    type Client = client::Connection;

    async fn serve(endpoint: Endpoint, _builder: ServerBuilder) -> anyhow::Result<()> {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                if let Ok(connection) = incoming.await {
                    let connection = Connection::new(connection, Config::default());
                    let _ = serve_connection(connection).await;
                }
            });
        }
        Ok(())
    }

    async fn connect(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Client> {
        // Nothing to wait for: the client opens its control and QPACK streams in the background
        // and needs no SETTINGS from the server before a plain GET.
        Ok(client::Connection::new(
            setup::connect(&end.endpoint, server).await?,
            Config::default(),
        ))
    }

    async fn download(client: &Self::Client, size: u64) -> anyhow::Result<u64> {
        let request = Request::get(url(&format!("{BYTES_PATH}{size}"))).body(())?;
        let mut stream = client.send_request(request).await?;
        stream.finish()?;
        let response = stream.recv_response().await?;
        let mut length = 0;
        while let Some(chunk) = stream.recv_data().await? {
            length += chunk.len() as u64;
        }
        if response.status() != StatusCode::OK || length != size {
            bail!(
                "asked for {size} bytes, got {} with {length}",
                response.status()
            );
        }
        Ok(length)
    }

    fn close(client: Self::Client) {
        client.close(Code::H3_NO_ERROR, b"done");
    }
}

/// An axum `Router` answering `GET /bytes/{n}` with a streamed body of n zero bytes, served by
/// `quay_h3::serve` with its default [`Config`]; the client is [`Quay`]'s.
#[derive(Debug)]
struct QuayAxum;

impl H3Stack for QuayAxum {
    const NAME: &'static str = "quay + axum";
    type Client = client::Connection;

    async fn serve(endpoint: Endpoint, _builder: ServerBuilder) -> anyhow::Result<()> {
        let router = axum::Router::new().route(
            &format!("{BYTES_PATH}{{size}}"),
            axum::routing::get(
                |axum::extract::Path(size): axum::extract::Path<u64>| async move {
                    let chunks = zero_chunks(size).map(Ok::<_, std::convert::Infallible>);
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                },
            ),
        );
        let server = quay_h3::Server::from_endpoint(endpoint, Config::default());
        quay_h3::serve(server, router).await;
        Ok(())
    }

    async fn connect(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Client> {
        Quay::connect(end, server).await
    }

    async fn download(client: &Self::Client, size: u64) -> anyhow::Result<u64> {
        Quay::download(client, size).await
    }

    fn close(client: Self::Client) {
        Quay::close(client);
    }
}

/// [`Quay`] writing a qlog file for every connection, server and client: the server accepts
/// through its builder's `Acceptor` (`server::Connection::accept_with`), the client connects
/// through its builder's `Connector` and hands the connection's qlog to
/// `client::Connection::with_qlog`. The harness names the directory and checks that events
/// were written (see `quay_tests::bench`).
#[derive(Debug)]
struct QuayWithQlog;

impl H3Stack for QuayWithQlog {
    const NAME: &'static str = "quay + qlog";
    const QLOG: bool = true;
    const VARIANT_OF: Option<&'static str> = Some(Quay::NAME);
    type Client = client::Connection;

    async fn serve(endpoint: Endpoint, builder: ServerBuilder) -> anyhow::Result<()> {
        let acceptor = builder.acceptor()?;
        while let Some(incoming) = endpoint.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let accepted =
                    Connection::accept_with(incoming, Some(&acceptor), Config::default()).await;
                if let Ok(connection) = accepted {
                    let _ = serve_connection(connection).await;
                }
            });
        }
        Ok(())
    }

    async fn connect(end: &ClientEnd, server: SocketAddr) -> anyhow::Result<Self::Client> {
        let (connecting, qlog) =
            end.connector
                .connect(&end.endpoint, server, setup::SERVER_NAME)?;
        anyhow::ensure!(qlog.is_some(), "the qlog column's connection has no qlog");
        Ok(client::Connection::with_qlog(
            connecting.await?,
            qlog,
            Config::default(),
        ))
    }

    async fn download(client: &Self::Client, size: u64) -> anyhow::Result<u64> {
        Quay::download(client, size).await
    }

    fn close(client: Self::Client) {
        Quay::close(client);
    }
}

/// Serves one connection until the client closes it; each request on its own task.
async fn serve_connection(connection: Connection) -> anyhow::Result<()> {
    while let Some(incoming) = connection.accept_stream().await? {
        tokio::spawn(async move {
            let _ = respond(incoming).await;
        });
    }
    Ok(())
}

/// Answers `GET /bytes/<n>` with n zero bytes, anything else with 404.
async fn respond(incoming: IncomingRequest) -> anyhow::Result<()> {
    let Some((request, mut stream)) = incoming.resolve().await? else {
        return Ok(());
    };
    let size = request
        .uri()
        .path()
        .strip_prefix(BYTES_PATH)
        .and_then(|size| size.parse::<u64>().ok());
    let Some(size) = size.filter(|_| request.method() == http::Method::GET) else {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NOT_FOUND;
        stream.send_response(response).await?;
        stream.finish()?;
        return Ok(());
    };
    stream.send_response(Response::new(())).await?;
    for chunk in zero_chunks(size) {
        stream.send_data(chunk).await?;
    }
    stream.finish()?;
    Ok(())
}
