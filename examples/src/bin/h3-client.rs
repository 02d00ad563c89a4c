//! A small curl-like HTTP/3 client.
//!
//! Sends a request to each `https://` URL given and writes the response bodies to stdout, in the
//! order of the URLs, or (one URL only) to a file with `-o`. Requests to one origin share a
//! connection (the pooled `quay_h3::Client`); `--parallel N` keeps up to N requests in flight
//! (default 1: one after the other), each body held in memory until the ones before it are
//! written. `-i` puts the status line and headers before the body on stdout, as curl does; `-v`
//! prints the request and response heads on stderr instead. While a long download runs and stderr
//! is a terminal, a progress bar is drawn on stderr.
//!
//! The request is GET, or POST when `-d` gives a body (`-d @FILE` streams a file), or HEAD with
//! `-I`; `-X` picks any method. `-H "name: value"` adds a header (repeatable).
//!
//! The server's certificate is checked against the system's roots, or against the roots of a PEM
//! file with `--ca`, or by its SHA-256 hash with `--cert-hash` (as `h3-server` prints it;
//! repeatable), or not at all with `--danger-insecure`.
//!
//! The exit code is 0 for 1xx-3xx responses, 22 for a response of 400 or more (the body is still
//! written), 1 when a request could not be made (the reason is then one line on stderr), and 2
//! for bad arguments.
//!
//! ```text
//! cargo run -p quay-examples --bin h3-client -- --cert-hash HEX https://localhost:4433/file.txt
//! cargo run -p quay-examples --bin h3-client -- --cert-hash HEX --parallel 4 https://localhost:4433/a https://localhost:4433/b
//! cargo run -p quay-examples --bin h3-client -- --ca ca.pem -d @photo.jpg -H "content-type: image/jpeg" https://example.test/echo
//! ```

use std::error::Error;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use indicatif::{ProgressBar, ProgressStyle};
use quay_examples::one_line;
use quay_h3::client::{Client, Options, RequestError, RequestStream};
use quay_h3::{Config, StreamError};
use quay_transport::{CertificateHash, ClientBuilder, Trust};
use tokio::io::AsyncReadExt;

/// Bytes read from a `-d @FILE` body and sent as one DATA frame.
const CHUNK: usize = 64 * 1024;
/// Responses at least this long (or of unknown length) get a progress bar.
const PROGRESS_MIN: u64 = 1024 * 1024;
/// Exit code for an HTTP error status, as `curl --fail` uses.
const EXIT_HTTP_ERROR: u8 = 22;

/// Sends HTTP/3 requests and prints the responses.
#[derive(Debug, Parser)]
// As in curl, a repeated option takes its last value.
#[command(version, args_override_self = true)]
struct Args {
    /// The `https://` URLs to request.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Keep up to N requests in flight (with several URLs).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// The request method [default: GET, or POST with -d, or HEAD with -I].
    #[arg(short = 'X', long)]
    method: Option<Method>,
    /// The request body; `@FILE` sends the contents of FILE.
    #[arg(short, long)]
    data: Option<String>,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Send a HEAD request and print the response head.
    #[arg(short = 'I', long)]
    head: bool,
    /// Trust only the certificates in this PEM file (a private CA or a self-signed server).
    #[arg(long, value_name = "PEM", conflicts_with_all = ["cert_hashes", "danger_insecure"])]
    ca: Option<PathBuf>,
    /// Trust a certificate by its SHA-256 hash, 64 hex digits (repeatable). Browser rules apply:
    /// ECDSA key, valid for at most 14 days.
    #[arg(
        long = "cert-hash",
        value_name = "HEX",
        conflicts_with = "danger_insecure"
    )]
    cert_hashes: Vec<CertificateHash>,
    /// Accept any certificate: the connection is encrypted but the server is not authenticated.
    #[arg(long)]
    danger_insecure: bool,
    /// Write the body to this file instead of stdout (one URL only).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Include the status line and response headers on stdout, before the body.
    #[arg(short, long)]
    include: bool,
    /// Print the request and response heads on stderr.
    #[arg(short, long)]
    verbose: bool,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    max_time: Option<f64>,
    /// Write a qlog file per connection into this directory (`<odcid>_client.sqlog`, JSON-SEQ);
    /// without it, into `$QLOGDIR` when that is set.
    #[arg(long, value_name = "DIR")]
    qlog_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let max_time = args.max_time.map(Duration::from_secs_f64);
    let result = match max_time {
        Some(limit) => tokio::time::timeout(limit, run(args))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {} s", limit.as_secs_f64()).into())),
        None => run(args).await,
    };
    match result {
        Ok(status) if status.as_u16() >= 400 => {
            eprintln!(
                "h3-client: HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("error")
            );
            ExitCode::from(EXIT_HTTP_ERROR)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("h3-client: {}", one_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<StatusCode, Box<dyn Error>> {
    if args.urls.len() > 1 && (args.data.is_some() || args.output.is_some()) {
        return Err("-d and -o take one URL".into());
    }
    let trust = if let Some(ca) = &args.ca {
        Trust::roots_from_pem_file(ca)?
    } else if !args.cert_hashes.is_empty() {
        Trust::CertificateHashes(args.cert_hashes.clone())
    } else if args.danger_insecure {
        Trust::DangerAcceptAnyCertificate
    } else {
        Trust::SystemRoots
    };
    let mut builder = ClientBuilder::new().trust(trust);
    if let Some(dir) = &args.qlog_dir {
        builder = builder.qlog_dir(dir);
    }
    let client = Client::with_options(&builder, Config::default(), Options::default())?;
    let result = match args.urls.as_slice() {
        [url] => single(&args, &client, url).await,
        urls => several(&args, &client, urls).await,
    };
    // H3_NO_ERROR; wait until the CONNECTION_CLOSEs have left before the runtime (and the
    // endpoint with it) goes away, so the servers need not wait for their idle timeouts.
    client.close();
    client.wait_idle().await;
    result
}

/// One URL: the body streams to stdout or the `-o` file, with a progress bar.
async fn single(args: &Args, client: &Client, url: &str) -> Result<StatusCode, Box<dyn Error>> {
    let request = build_request(args, url)?;
    // Open the body file before connecting, so a typo fails fast.
    let body = match args.data.as_deref() {
        Some(data) => Some(Body::open(data).await?),
        None => None,
    };
    let request = match &body {
        Some(body) if !request.headers().contains_key(header::CONTENT_LENGTH) => {
            let mut request = request;
            request
                .headers_mut()
                .insert(header::CONTENT_LENGTH, body.len().into());
            request
        }
        _ => request,
    };
    if args.verbose {
        print_request_head(&request);
    }
    let stream = client
        .send_request(request)
        .await
        .map_err(|error| connect_error(url, error))?;
    exchange(args, stream, body).await
}

/// Several URLs: up to `--parallel` requests in flight on the pool's connections, the bodies
/// written to stdout in the order of the URLs. Returns the worst status, or the first error.
async fn several(
    args: &Args,
    client: &Client,
    urls: &[String],
) -> Result<StatusCode, Box<dyn Error>> {
    let requests = urls
        .iter()
        .map(|url| build_request(args, url))
        .collect::<Result<Vec<_>, _>>()?;
    let progress = if io::stderr().is_terminal() && !io::stdout().is_terminal() {
        ProgressBar::new(urls.len() as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .expect("the template is valid"),
        )
    } else {
        ProgressBar::hidden()
    };
    let mut fetches = tokio::task::JoinSet::new();
    let mut done: Vec<Option<Result<Fetched, String>>> = (0..urls.len()).map(|_| None).collect();
    let mut next_to_write = 0;
    let mut pending = requests.into_iter().enumerate();
    let mut worst = StatusCode::OK;
    let mut out = io::stdout().lock();
    // Each turn starts fetches up to the limit, then takes one finished fetch.
    loop {
        while fetches.len() < usize::from(args.parallel)
            && let Some((index, request)) = pending.next()
        {
            if args.verbose {
                print_request_head(&request);
            }
            let (client, url) = (client.clone(), urls[index].clone());
            fetches.spawn(async move {
                let fetched = fetch(&client, request)
                    .await
                    .map_err(|error| one_line(connect_error(&url, error).as_ref()));
                (index, fetched)
            });
        }
        let Some(finished) = fetches.join_next().await else {
            break;
        };
        let (index, fetched) = finished?;
        progress.inc(1);
        done[index] = Some(fetched);
        // Bodies go out in the order of the URLs.
        while let Some(Some(fetched)) = done.get_mut(next_to_write).map(Option::take) {
            let fetched = fetched?;
            if args.verbose {
                print_response_head(&mut io::stderr().lock(), &fetched.head, "< ")?;
            }
            if args.include || args.head {
                print_response_head(&mut out, &fetched.head, "")?;
            }
            out.write_all(&fetched.body)?;
            worst = worst.max(fetched.head.status());
            next_to_write += 1;
        }
    }
    progress.finish_and_clear();
    out.flush()?;
    Ok(worst)
}

/// A whole response.
struct Fetched {
    head: Response<()>,
    body: Bytes,
}

async fn fetch(client: &Client, request: Request<()>) -> Result<Fetched, RequestError> {
    let (parts, ()) = request.into_parts();
    let response = client
        .request(Request::from_parts(parts, Bytes::new()))
        .await?;
    let (head, body) = response.into_parts();
    Ok(Fetched {
        head: Response::from_parts(head, ()),
        body,
    })
}

/// A request error, with the URL when no connection could be made.
fn connect_error(url: &str, error: RequestError) -> Box<dyn Error> {
    match error {
        RequestError::Connect(_) | RequestError::ConnectTimeout(_) => {
            format!("cannot connect to {url}: {}", one_line(&error)).into()
        }
        error => error.into(),
    }
}

/// The request head from the arguments.
fn build_request(args: &Args, url: &str) -> Result<Request<()>, Box<dyn Error>> {
    let method = match (&args.method, args.head, &args.data) {
        (Some(method), _, _) => method.clone(),
        (None, true, _) => Method::HEAD,
        (None, false, Some(_)) => Method::POST,
        (None, false, None) => Method::GET,
    };
    if !url.starts_with("https://") {
        return Err(format!("{url}: only https:// URLs are supported").into());
    }
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .body(())
        .map_err(|error| format!("{url}: {error}"))?;
    for line in &args.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header {line:?} is not `name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|error| format!("header {line:?}: {error}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|error| format!("header {line:?}: {error}"))?;
        request.headers_mut().append(name, value);
    }
    request
        .headers_mut()
        .entry(header::USER_AGENT)
        .or_insert(HeaderValue::from_static(concat!(
            "quay-h3-client/",
            env!("CARGO_PKG_VERSION")
        )));
    Ok(request)
}

/// A request body: bytes from the command line or a file streamed from disk.
enum Body {
    Inline(Bytes),
    File { file: tokio::fs::File, length: u64 },
}

impl Body {
    async fn open(data: &str) -> Result<Self, Box<dyn Error>> {
        let Some(path) = data.strip_prefix('@') else {
            return Ok(Self::Inline(Bytes::copy_from_slice(data.as_bytes())));
        };
        let opened = async {
            let file = tokio::fs::File::open(path).await?;
            let length = file.metadata().await?.len();
            Ok::<_, io::Error>((file, length))
        };
        let (file, length) = opened.await.map_err(|error| format!("{path}: {error}"))?;
        Ok(Self::File { file, length })
    }

    fn len(&self) -> u64 {
        match self {
            Self::Inline(bytes) => bytes.len() as u64,
            Self::File { length, .. } => *length,
        }
    }

    /// Sends the body on `stream` in chunks.
    async fn send(self, stream: &mut RequestStream) -> Result<(), Box<dyn Error>> {
        match self {
            Self::Inline(bytes) => stream.send_data(bytes).await?,
            Self::File {
                mut file,
                mut length,
            } => {
                let mut buf = BytesMut::new();
                while length > 0 {
                    buf.reserve(CHUNK);
                    let read = file.read_buf(&mut buf).await?;
                    if read == 0 {
                        return Err("the body file shrank while it was being sent".into());
                    }
                    // Never more than the content-length we announced.
                    let take = read.min(usize::try_from(length).unwrap_or(usize::MAX));
                    length -= take as u64;
                    stream.send_data(buf.split_to(take).freeze()).await?;
                    buf.clear();
                }
            }
        }
        Ok(())
    }
}

/// Sends the request, then writes the response head and body where the arguments say.
async fn exchange(
    args: &Args,
    mut stream: RequestStream,
    body: Option<Body>,
) -> Result<StatusCode, Box<dyn Error>> {
    let sent = match body {
        Some(body) => body.send(&mut stream).await,
        None => Ok(()),
    };
    match sent {
        Ok(()) => stream.finish()?,
        // RFC 9114 §4.1: a server may answer before it has read the whole request (413, say)
        // and then stop reading it; its response still stands.
        Err(error) if matches!(error.downcast_ref(), Some(StreamError::Stopped(_))) => {}
        Err(error) => return Err(error),
    }
    let response = stream.recv_response().await?;
    let status = response.status();
    if args.verbose {
        print_response_head(&mut io::stderr().lock(), &response, "< ")?;
    }

    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(io::BufWriter::new(
            std::fs::File::create(path).map_err(|error| format!("{}: {error}", path.display()))?,
        )),
        None => Box::new(io::stdout().lock()),
    };
    if args.include || args.head {
        print_response_head(&mut out, &response, "")?;
    }
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let progress = progress_bar(args, length);
    while let Some(chunk) = stream.recv_data().await? {
        out.write_all(&chunk)?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    out.flush()?;
    if args.verbose
        && let Some(trailers) = stream.recv_trailers().await?
    {
        for (name, value) in &trailers {
            eprintln!("< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
        }
    }
    Ok(status)
}

/// A progress bar on stderr for a long body, hidden unless stderr is a terminal and the body is
/// not going to that same terminal.
fn progress_bar(args: &Args, length: Option<u64>) -> ProgressBar {
    let body_on_terminal = args.output.is_none() && io::stdout().is_terminal();
    let long = length.is_none_or(|length| length >= PROGRESS_MIN);
    if !io::stderr().is_terminal() || body_on_terminal || !long || args.head {
        return ProgressBar::hidden();
    }
    match length {
        Some(length) => ProgressBar::new(length).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("the template is valid"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .expect("the template is valid"),
        ),
    }
}

fn print_request_head(request: &Request<()>) {
    let uri = request.uri();
    eprintln!(
        "> {} {} HTTP/3",
        request.method(),
        uri.path_and_query().map_or("/", |path| path.as_str())
    );
    eprintln!(
        "> host: {}",
        uri.authority().map_or("", |host| host.as_str())
    );
    for (name, value) in request.headers() {
        eprintln!("> {name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    eprintln!(">");
}

fn print_response_head(
    out: &mut dyn Write,
    response: &Response<()>,
    prefix: &str,
) -> io::Result<()> {
    let status = response.status();
    write!(out, "{prefix}HTTP/3 {}", status.as_u16())?;
    if let Some(reason) = status.canonical_reason() {
        write!(out, " {reason}")?;
    }
    write!(out, "\r\n")?;
    for (name, value) in response.headers() {
        write!(
            out,
            "{prefix}{name}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        )?;
    }
    write!(out, "{prefix}\r\n")
}
