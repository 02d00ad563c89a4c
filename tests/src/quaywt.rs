//! The same WebTransport echo server and client as [`crate::wtq`], on quay's own
//! `quay-webtransport`: inside a session, streams speak [`crate::raw`]'s protocol and datagrams
//! are echoed. Used by the interop tests (against web-transport-quinn, both ways) and by the
//! WebTransport benchmark's quay column.

use anyhow::bail;
use bytes::Bytes;
use quay_transport::{Acceptor, Qlog};
use quay_webtransport::{Client, Config, RecvStream, SendStream, Server, Session, SessionOptions};
use quinn::Endpoint;

use crate::raw::{MAX_REQUEST, OP_ECHO, Request, download_request, parse_request, zero_chunks};

/// Accepts every session on `endpoint` and serves each on its own task, until the endpoint is
/// closed.
pub async fn serve(endpoint: Endpoint) -> anyhow::Result<()> {
    serve_on(Server::from_endpoint(endpoint, Config::default())).await
}

/// As [`serve`], accepting connections through `acceptor` (a qlog file each when its builder
/// has a qlog directory).
pub async fn serve_with(endpoint: Endpoint, acceptor: Acceptor) -> anyhow::Result<()> {
    serve_on(Server::from_endpoint_with(
        endpoint,
        acceptor,
        Config::default(),
    ))
    .await
}

async fn serve_on(server: Server) -> anyhow::Result<()> {
    while let Some(request) = server.accept().await {
        tokio::spawn(async move {
            if let Ok(session) = request.ok().await {
                serve_session(session).await;
            }
        });
    }
    Ok(())
}

/// Serves one session: bidirectional streams carry [`crate::raw`] requests, datagrams are
/// echoed. Returns when the session ends.
pub async fn serve_session(session: Session) {
    let datagrams = session.clone();
    let echo = tokio::spawn(async move {
        while let Ok(datagram) = datagrams.read_datagram().await {
            let _ = datagrams.send_datagram(datagram);
        }
    });
    while let Ok(Some((send, recv))) = session.accept_bi().await {
        tokio::spawn(async move {
            let _ = answer(send, recv).await;
        });
    }
    echo.abort();
}

/// Reads one request from `recv` and writes its answer to `send`.
pub async fn answer(mut send: SendStream, mut recv: RecvStream) -> anyhow::Result<()> {
    let request = recv.read_to_end(MAX_REQUEST).await?;
    match parse_request(&request)? {
        Request::Download(size) => {
            for chunk in zero_chunks(size) {
                send.write_chunk(chunk).await?;
            }
        }
        Request::Echo(payload) => send.write_all(payload).await?,
    }
    send.finish()?;
    Ok(())
}

/// Opens a session on a fresh QUIC `connection` to the server listening on `port`.
pub async fn connect(connection: quinn::Connection, port: u16) -> anyhow::Result<Session> {
    open(Client::new(connection, Config::default()), port).await
}

/// As [`connect`], on a connection opened through a `quay_transport::Connector`, whose qlog
/// (what the connector returned beside it) gets the session's events.
pub async fn connect_with_qlog(
    connection: quinn::Connection,
    qlog: Option<Qlog>,
    port: u16,
) -> anyhow::Result<Session> {
    open(Client::with_qlog(connection, qlog, Config::default()), port).await
}

async fn open(client: Client, port: u16) -> anyhow::Result<Session> {
    let url = crate::wtq::url(port)?;
    Ok(client
        .open(url.as_str(), &SessionOptions::default())
        .await?)
}

/// Asks the server for `size` bytes on a new stream; returns how many arrived.
pub async fn download(session: &Session, size: u64) -> anyhow::Result<u64> {
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(&download_request(size)).await?;
    send.finish()?;
    let mut received = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX).await? {
        received += chunk.len() as u64;
    }
    if received != size {
        bail!("asked for {size} bytes, got {received}");
    }
    Ok(received)
}

/// Sends `payload` on a new stream and returns the server's echo.
pub async fn echo(session: &Session, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(&[OP_ECHO]).await?;
    send.write_all(payload).await?;
    send.finish()?;
    Ok(recv.read_to_end(MAX_REQUEST).await?)
}

/// Sends one datagram.
pub fn send_datagram(session: &Session, payload: Bytes) -> anyhow::Result<()> {
    Ok(session.send_datagram(payload)?)
}
