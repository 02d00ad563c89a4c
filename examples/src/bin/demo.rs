//! The quay demo: a WebTransport server and a web page that talks to it from the browser.
//!
//! - On UDP port 4433 an HTTP/3 endpoint takes WebTransport sessions, with a fresh self-signed
//!   ECDSA certificate (valid 14 days, for `localhost`, `127.0.0.1` and `::1`). Session `/echo`
//!   sends back every bidirectional stream (up to 64 KiB) and every datagram. Session `/chat`
//!   joins a chat room: each unidirectional stream it sends (up to 4 KiB) goes to every session
//!   in the room, the sender included, on a new unidirectional stream. Other paths are refused
//!   with 404.
//! - On TCP port 8080 a plain HTTP/1.1 server (hyper) serves one page, `examples/demo/index.html`,
//!   with the WebTransport URL and the certificate's SHA-256 hash filled in. `http://localhost` is
//!   a secure context, so the page may open WebTransport sessions that trust the certificate by
//!   its hash (`serverCertificateHashes`); no certificate needs installing. `/metrics` on the
//!   same port is quay's metrics in the Prometheus text format (`metrics-exporter-prometheus`).
//!
//! - Each session gets a live panel on the page: the server opens one bidirectional stream on it
//!   and sends the session's stats there about once a second, one JSON line each
//!   (`quay_examples::panel`); the page shows the latest and plots the last minute of RTT and
//!   throughput on a canvas of its own.
//!
//! Both listen on every IPv6 and IPv4 address, or on IPv4 only where IPv6 is missing.
//! `--wt-port` and `--http-port` pick other ports. The first lines on stdout are the page URL, the
//! WebTransport URL and `certificate hash: HEX`; the log goes to stderr (`RUST_LOG` filters it).
//! Ctrl-C closes every connection (the page then shows its sessions as disconnected) and exits.
//!
//! `--workers N` (default: one per core) runs N WebTransport endpoints on the UDP port, each on
//! its own thread; on Linux the kernel steers every connection's packets to the endpoint that
//! accepted it (see `quay_transport::workers`). The chat room spans all of them.
//!
//! ```text
//! cargo run --release -p quay-examples --bin demo
//! ```

use std::convert::Infallible;
use std::error::Error;
use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use quay_examples::{default_workers, one_line, panel};
use quay_transport::workers::Worker;
use quay_transport::{Identity, ServerBuilder};
use quay_webtransport::server::Request;
use quay_webtransport::{Config, RecvStream, SendStream, Server, Session};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tracing::{Instrument, debug, info, info_span, warn};

/// The page, with `__WT_URL__` and `__CERT_HASH__` to fill in.
const PAGE: &str = include_str!("../../demo/index.html");
/// The longest stream `/echo` sends back.
const MAX_ECHO: usize = 64 * 1024;
/// The longest chat message.
const MAX_CHAT: usize = 4 * 1024;
/// Chat messages kept for a session that reads slowly; it misses older ones.
const CHAT_BACKLOG: usize = 64;
/// The application code of a stream refused by `/echo` (too long).
const ECHO_REFUSED: u32 = 1;
/// How long the shutdown waits for peers to acknowledge the close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Serves the WebTransport demo: an echo and a chat, and a page to try them in a browser.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// UDP port of the WebTransport (HTTP/3) endpoint.
    #[arg(long, default_value_t = 4433)]
    wt_port: u16,
    /// TCP port of the page.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// WebTransport endpoints on the UDP port, each on its own thread (more than one needs
    /// Linux). Default: one per core.
    #[arg(long, default_value_t = default_workers())]
    workers: usize,
    /// Write a qlog file per connection into this directory (`<odcid>_server.sqlog`, JSON-SEQ);
    /// without it, into `$QLOGDIR` when that is set.
    #[arg(long, value_name = "DIR")]
    qlog_dir: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,demo=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(io::stderr(), "demo: {}", one_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    // Before anything is served: a connection counted before the recorder exists is lost.
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|error| format!("cannot record metrics: {error}"))?;
    let identity = Identity::self_signed(["localhost", "127.0.0.1", "::1"])?;
    let hash = identity.certificate_hash();
    let (room, _) = broadcast::channel(CHAT_BACKLOG);
    let (shutdown, stop) = watch::channel(false);
    let mut builder = ServerBuilder::new(identity);
    if let Some(dir) = &args.qlog_dir {
        builder = builder.qlog_dir(dir);
    }
    let group = bind_any("UDP", args.wt_port, |addr| {
        let (room, stop) = (room.clone(), stop.clone());
        builder.bind_workers(addr, args.workers, move |worker| {
            serve_worker(worker, room.clone(), stop.clone())
        })
    })?;
    let listener = bind_any("TCP", args.http_port, std::net::TcpListener::bind)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;

    let page_url = format!("http://localhost:{}", listener.local_addr()?.port());
    let wt_url = format!("https://localhost:{}", group.local_addr().port());
    let page = PAGE
        .replace("__WT_URL__", &wt_url)
        .replace("__CERT_HASH__", &hash.to_js_array());
    // Printed in one go; a closed stdout must not stop the server.
    let _ = write!(
        io::stdout().lock(),
        "page: {page_url}\n\
         WebTransport: {wt_url} (sessions /echo and /chat)\n\
         certificate hash: {hash}\n\
         Open {page_url} in Chrome, Edge or Firefox and try the echo and the chat; open it in a second \
         tab to chat with yourself.\n\
         The certificate is new on every start: reload the page after a restart. Ctrl-C stops.\n"
    );
    let upkeep = metrics.clone();
    // Histograms are summarised on upkeep; render() also runs it, this bounds the memory between
    // scrapes.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let pages = tokio::spawn(serve_page(listener, Bytes::from(page), metrics));

    // The workers serve sessions; this task waits for Ctrl-C, then for them to close.
    if let Err(error) = tokio::signal::ctrl_c().await {
        warn!(%error, "cannot wait for Ctrl-C; stopping");
    }
    info!("shutting down");
    pages.abort();
    let _ = shutdown.send(true);
    tokio::task::spawn_blocking(move || group.join())
        .await?
        .map_err(|_| "a worker panicked")?;
    Ok(())
}

/// One worker: a WebTransport server on the worker's endpoint until `stop` turns true, then a
/// close that waits a little for the peers.
async fn serve_worker(
    worker: Worker,
    room: broadcast::Sender<Bytes>,
    mut stop: watch::Receiver<bool>,
) {
    let server = Server::from_endpoint_with(worker.endpoint, worker.acceptor, Config::default());
    loop {
        tokio::select! {
            request = server.accept() => {
                let Some(request) = request else { return };
                let span = info_span!(
                    "session",
                    worker = worker.index,
                    peer = %request.connection().remote_address(),
                    path = request.path(),
                );
                tokio::spawn(serve_session(request, room.clone()).instrument(span));
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    server.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server.endpoint().wait_idle()).await;
}

/// Binds `bind` on port `port` of every IPv6 and IPv4 address (`[::]`), or of every IPv4
/// address where that fails; `what` names the port in the error.
fn bind_any<T, E: Display>(
    what: &str,
    port: u16,
    bind: impl Fn(SocketAddr) -> Result<T, E>,
) -> Result<T, String> {
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let any4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    bind(any6)
        .or_else(|error| {
            debug!(%error, "cannot bind {any6}; trying {any4}");
            bind(any4)
        })
        .map_err(|error| format!("cannot listen on {what} port {port}: {error}"))
}

/// Serves the page and the metrics over HTTP/1.1, each connection in its own task.
async fn serve_page(listener: TcpListener, page: Bytes, metrics: PrometheusHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: wait for some to close.
                warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (page, metrics) = (page.clone(), metrics.clone());
        let service = service_fn(move |request| answer(request, page.clone(), metrics.clone()));
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                debug!(%error, "HTTP connection failed");
            }
        });
    }
}

/// `GET /` is the page and `GET /metrics` the metrics; anything else is 404 or 405.
async fn answer(
    request: http::Request<Incoming>,
    page: Bytes,
    metrics: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const HTML: &str = "text/html; charset=utf-8";
    // The Prometheus text exposition format.
    const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
    let (status, body, content_type) = match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/" | "/index.html") => (StatusCode::OK, page, HTML),
        (&Method::GET | &Method::HEAD, "/metrics") => {
            (StatusCode::OK, Bytes::from(metrics.render()), METRICS)
        }
        (&Method::GET | &Method::HEAD, _) => (StatusCode::NOT_FOUND, Bytes::new(), HTML),
        _ => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new(), HTML),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The certificate hash changes on every start, so the page must not be cached.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Accepts `/echo` and `/chat` sessions, refuses the rest, and serves a session until it ends.
async fn serve_session(request: Request, room: broadcast::Sender<Bytes>) {
    let origin = request.origin().unwrap_or("none").to_owned();
    match request.path() {
        "/echo" => match request.ok().await {
            Ok(session) => {
                info!(origin, "echo session open");
                stats_panel(&session);
                echo(&session).await;
            }
            Err(error) => warn!(%error, "cannot accept the session"),
        },
        "/chat" => {
            // Subscribed before the peer learns it is in: it gets every message sent after that.
            let messages = room.subscribe();
            match request.ok().await {
                Ok(session) => {
                    info!(origin, "chat session open");
                    stats_panel(&session);
                    chat(&session, messages, &room).await;
                }
                Err(error) => warn!(%error, "cannot accept the session"),
            }
        }
        _ => {
            info!(origin, "no such session; refused with 404");
            request.reject(StatusCode::NOT_FOUND).await;
        }
    }
}

/// Feeds the page's live panel with `session`'s stats (`quay_examples::panel`), on a task that
/// ends with the session.
fn stats_panel(session: &Session) {
    let feed = panel::feed(session.clone());
    let logged = async move {
        let end = feed.await;
        debug!(%end, "stats feed ended");
    };
    tokio::spawn(logged.in_current_span());
}

/// Sends back every bidirectional stream and every datagram of `session`, until it ends.
async fn echo(session: &Session) {
    let streams = async {
        loop {
            match session.accept_bi().await {
                Ok(Some((send, recv))) => {
                    tokio::spawn(echo_stream(send, recv).in_current_span());
                }
                Ok(None) => return session.closed().await,
                Err(reason) => return reason,
            }
        }
    };
    let datagrams = async {
        loop {
            match session.read_datagram().await {
                Ok(datagram) => {
                    if let Err(error) = session.send_datagram(datagram) {
                        debug!(%error, "datagram not sent back");
                    }
                }
                Err(reason) => return reason,
            }
        }
    };
    let reason = tokio::select! {
        reason = streams => reason,
        reason = datagrams => reason,
    };
    info!(%reason, "echo session ended");
}

/// Reads a stream to its end and writes it back; a stream too long is reset.
async fn echo_stream(mut send: SendStream, mut recv: RecvStream) {
    let echoed = async {
        let data = recv.read_to_end(MAX_ECHO).await?;
        send.write_all(&data).await?;
        send.finish()?;
        Ok::<_, Box<dyn Error + Send + Sync>>(())
    };
    if let Err(error) = echoed.await {
        warn!(%error, "stream not echoed");
        let _ = send.reset(ECHO_REFUSED);
    }
}

/// Posts every unidirectional stream of `session` to the room, and delivers the room's messages
/// to it, until it ends.
async fn chat(
    session: &Session,
    mut messages: broadcast::Receiver<Bytes>,
    room: &broadcast::Sender<Bytes>,
) {
    let posts = async {
        loop {
            match session.accept_uni().await {
                Ok(Some(recv)) => {
                    tokio::spawn(post(recv, room.clone()).in_current_span());
                }
                Ok(None) => return session.closed().await,
                Err(reason) => return reason,
            }
        }
    };
    // One message at a time: a peer that reads slowly misses messages instead of piling them up.
    let deliveries = async {
        loop {
            match messages.recv().await {
                Ok(message) => {
                    if let Err(error) = deliver(session, message).await {
                        debug!(%error, "chat message not delivered");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    warn!(missed, "slow chat session missed messages");
                }
                // Never: `room` is a sender and outlives this loop.
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    };
    tokio::select! {
        reason = posts => info!(%reason, "chat session ended"),
        () = deliveries => {}
    }
}

/// Reads one chat message and hands it to every session in the room.
async fn post(mut recv: RecvStream, room: broadcast::Sender<Bytes>) {
    match recv.read_to_end(MAX_CHAT).await {
        // Fails only when no session is left to read it.
        Ok(message) => drop(room.send(Bytes::from(message))),
        Err(error) => warn!(%error, "chat message dropped"),
    }
}

/// Sends `message` to `session` on a new unidirectional stream.
async fn deliver(session: &Session, message: Bytes) -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut send = session.open_uni().await?;
    send.write_chunk(message).await?;
    send.finish()?;
    Ok(())
}
