//! An HTTP/3 server and client on hyperium's `h3` 0.0.8 and `h3-quinn` 0.0.10, over quinn
//! connections set up by quay-transport (see [`crate::setup`]).
//!
//! The benchmark uses them as the reference column; the interop tests point them at quay's
//! client and server. The server answers:
//! - `GET /bytes/<n>`: status 200 and n zero bytes;
//! - `<any method> /echo`: status 200, the request body as the response body, and the request
//!   trailers (if any) as the response trailers;
//! - anything else: 404 with an empty body.
//!
//! For the interop tests (quay-h3 issue, "Tests"), in `tests/tests/h3_interop.rs`:
//! - quay's client against this server: bind [`crate::setup::server_endpoint`], spawn
//!   [`serve`] on it, connect quay's client to its address with the certificate hash pinned (or
//!   hand it a connection from [`crate::setup::connect`]), then `GET /bytes/<n>` and
//!   `POST /echo` with a body and trailers and compare what comes back;
//! - this client against quay's server: serve `/bytes/<n>` and `/echo` the same way with quay,
//!   then [`Client::new`] on a connection from [`crate::setup::connect`] and call
//!   [`Client::download`] and [`Client::send`] (which returns body and trailers in an
//!   [`Exchange`]).
//!
//! Known quirks of h3 0.0.8 handled here: a stream with trailers still needs `finish()` (the
//! peer waits for FIN after the trailers), and every clone of a fresh `SendRequest` sends a
//! GREASE frame on its first request.

use std::future::poll_fn;

use anyhow::bail;
use bytes::{Buf, Bytes, BytesMut};
use h3::server::RequestStream;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use quinn::Endpoint;

use crate::raw::zero_chunks;
use crate::setup::SERVER_NAME;

/// The path prefix of the download route: `/bytes/<n>` answers with n bytes.
pub const BYTES_PATH: &str = "/bytes/";
/// The path of the echo route.
pub const ECHO_PATH: &str = "/echo";

/// The URL of `path` on the test server (`https://localhost<path>`).
pub fn url(path: &str) -> String {
    format!("https://{SERVER_NAME}{path}")
}

/// Accepts connections on `endpoint` and serves HTTP/3 on each with hyperium h3, until the
/// endpoint is closed. Connection errors end that connection only.
pub async fn serve(endpoint: Endpoint) -> anyhow::Result<()> {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                let _ = serve_connection(connection).await;
            }
        });
    }
    Ok(())
}

/// Serves HTTP/3 on one QUIC connection with hyperium h3; each request on its own task.
/// Returns when the peer closes the connection (an error unless it closed with H3_NO_ERROR).
pub async fn serve_connection(connection: quinn::Connection) -> anyhow::Result<()> {
    let mut h3 =
        h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(connection)).await?;
    loop {
        match h3.accept().await {
            Ok(Some(resolver)) => {
                tokio::spawn(async move {
                    if let Ok((request, stream)) = resolver.resolve_request().await {
                        let _ = respond(request, stream).await;
                    }
                });
            }
            Ok(None) => return Ok(()),
            Err(error) if error.is_h3_no_error() => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// Answers one request as the module docs describe.
pub async fn respond<S>(
    request: Request<()>,
    mut stream: RequestStream<S, Bytes>,
) -> anyhow::Result<()>
where
    S: h3::quic::BidiStream<Bytes>,
{
    let path = request.uri().path();
    if let (&Method::GET, Some(size)) = (request.method(), path.strip_prefix(BYTES_PATH)) {
        let Ok(size) = size.parse::<u64>() else {
            return respond_status(stream, StatusCode::BAD_REQUEST).await;
        };
        stream.send_response(Response::new(())).await?;
        for chunk in zero_chunks(size) {
            stream.send_data(chunk).await?;
        }
        stream.finish().await?;
    } else if path == ECHO_PATH {
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let trailers = stream.recv_trailers().await?;
        stream.send_response(Response::new(())).await?;
        if !body.is_empty() {
            stream.send_data(body.freeze()).await?;
        }
        if let Some(trailers) = trailers {
            stream.send_trailers(trailers).await?;
        }
        // h3 0.0.8 needs `finish` after trailers too, or the stream never ends.
        stream.finish().await?;
    } else {
        respond_status(stream, StatusCode::NOT_FOUND).await?;
    }
    Ok(())
}

async fn respond_status<S>(
    mut stream: RequestStream<S, Bytes>,
    status: StatusCode,
) -> anyhow::Result<()>
where
    S: h3::quic::BidiStream<Bytes>,
{
    let mut response = Response::new(());
    *response.status_mut() = status;
    stream.send_response(response).await?;
    stream.finish().await?;
    Ok(())
}

/// A whole response: head, body and trailers.
#[derive(Debug)]
#[non_exhaustive]
pub struct Exchange {
    /// Status and headers.
    pub response: Response<()>,
    /// The body, concatenated.
    pub body: Bytes,
    /// The trailers, if the server sent any.
    pub trailers: Option<HeaderMap>,
}

/// A hyperium h3 client on one QUIC connection. Its connection driver runs on a tokio task.
///
/// Requests go through one shared `SendRequest` rather than a clone each: h3 sends a GREASE
/// frame on the first request of a `SendRequest` and every clone of a fresh one would send
/// another, on every request.
pub struct Client {
    send_request: tokio::sync::Mutex<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>>,
    connection: quinn::Connection,
    driver: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts HTTP/3 on `connection`: opens the control and QPACK streams, sends SETTINGS and
    /// spawns the connection driver.
    pub async fn new(connection: quinn::Connection) -> anyhow::Result<Self> {
        let (mut driver, send_request) =
            h3::client::new(h3_quinn::Connection::new(connection.clone())).await?;
        let driver = tokio::spawn(async move {
            let _ = poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self {
            send_request: tokio::sync::Mutex::new(send_request),
            connection,
            driver,
        })
    }

    /// `GET <path>`; reads the body without keeping it and returns the head and the body's
    /// length.
    pub async fn get_discard(&self, path: &str) -> anyhow::Result<(Response<()>, u64)> {
        let request = Request::get(url(path)).body(())?;
        let mut stream = self.send_request.lock().await.send_request(request).await?;
        stream.finish().await?;
        let response = stream.recv_response().await?;
        let mut length = 0;
        while let Some(chunk) = stream.recv_data().await? {
            length += chunk.remaining() as u64;
        }
        Ok((response, length))
    }

    /// `GET /bytes/<size>`; checks the status and the length of the body.
    pub async fn download(&self, size: u64) -> anyhow::Result<u64> {
        let (response, length) = self.get_discard(&format!("{BYTES_PATH}{size}")).await?;
        if response.status() != StatusCode::OK || length != size {
            bail!(
                "asked for {size} bytes, got {} with {length}",
                response.status()
            );
        }
        Ok(length)
    }

    /// Sends `request` (its URI as the absolute `https://` URL) with `body` and optional
    /// `trailers`, and returns the whole response.
    pub async fn send(
        &self,
        request: Request<()>,
        body: Bytes,
        trailers: Option<HeaderMap>,
    ) -> anyhow::Result<Exchange> {
        let mut stream = self.send_request.lock().await.send_request(request).await?;
        if !body.is_empty() {
            stream.send_data(body).await?;
        }
        if let Some(trailers) = trailers {
            stream.send_trailers(trailers).await?;
        }
        // h3 0.0.8 needs `finish` after trailers too, or the stream never ends.
        stream.finish().await?;
        let response = stream.recv_response().await?;
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        let trailers = stream.recv_trailers().await?;
        Ok(Exchange {
            response,
            body: body.freeze(),
            trailers,
        })
    }

    /// The QUIC connection underneath.
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Closes the QUIC connection with H3_NO_ERROR (0x100) and stops the driver.
    pub fn close(self) {
        self.connection
            .close(quinn::VarInt::from_u32(0x100), b"done");
        self.driver.abort();
    }
}
