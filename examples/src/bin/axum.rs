//! One axum `Router` over TCP and HTTP/3 on one port (`quay_examples::site`).
//!
//! The TCP side speaks HTTP/1.1 and HTTP/2 over TLS (hyper-util's automatic builder, with
//! tokio-rustls) and adds `Alt-Svc: h3=":PORT"` to each response; the UDP side is quay's
//! HTTP/3 server running the same router with `quay_h3::serve`, and WebTransport echo sessions
//! at `/wt` on the same connections. Both use the same certificate: `--cert` and `--key` (PEM),
//! or a fresh self-signed one for `localhost`, `127.0.0.1` and `::1`.
//!
//! It prints the URL and the certificate's SubjectPublicKeyInfo hash; Chromium trusts the
//! self-signed certificate with it, and goes straight to HTTP/3 when told to:
//!
//! ```text
//! cargo run -p quay-examples --bin axum -- --listen 127.0.0.1:4433
//! chromium --user-data-dir=/tmp/quay-profile \
//!     --ignore-certificate-errors-spki-list=HASH --origin-to-force-quic-on=127.0.0.1:4433 \
//!     https://127.0.0.1:4433/version
//! ```
//!
//! Ctrl-C stops it: no new connections, GOAWAY on the HTTP/3 ones, and the requests in flight
//! finish within 10 seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use quay_examples::one_line;
use quay_examples::site::{self, Counts};
use quay_transport::Identity;
use quay_webtransport::Config;
use tokio::sync::watch;

/// Serve an axum Router over HTTP/1.1, HTTP/2 and HTTP/3 on one port.
#[derive(Parser, Debug)]
struct Args {
    /// The address; TCP and UDP use the same port.
    #[arg(long, default_value = "127.0.0.1:4433")]
    listen: SocketAddr,
    /// A PEM certificate chain (with --key); a self-signed certificate by default.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The PEM private key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

/// How long requests in flight have to finish after Ctrl-C.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axum: {}", one_line(&*error));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let identity = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
        _ => Identity::self_signed(["localhost", "127.0.0.1", "::1"])?,
    };
    let spki = identity.spki_sha256_base64();
    let tls = site::tls_config(&identity)?;
    let config = Config::default();
    let (listener, server) = site::bind(args.listen, identity, &config)?;
    let addr = server.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    println!("listening on https://{addr}/ (TCP: HTTP/1.1 and HTTP/2; UDP: HTTP/3)");
    if let Some(spki) = spki {
        println!("certificate SPKI hash: {spki}");
    }

    let counts = Arc::new(Counts::default());
    let router = site::router(counts);
    let (stop, stopped) = watch::channel(false);
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let tcp = tokio::spawn(site::serve_tcp(
        listener,
        tls,
        site::with_alt_svc(router.clone(), addr.port()),
        signal(),
    ));
    let h3 = tokio::spawn(site::serve_h3(
        server,
        router,
        config,
        signal(),
        SHUTDOWN_TIMEOUT,
    ));
    tokio::signal::ctrl_c().await?;
    println!("shutting down");
    let _ = stop.send(true);
    let _ = tokio::join!(tcp, h3);
    Ok(())
}
