//! A WebTransport echo server and client on `web-transport-quinn` 0.13, over quinn endpoints
//! set up by quay-transport (see [`crate::setup`]).
//!
//! Inside a session the streams speak the protocol of [`crate::raw`] (download and echo
//! requests, one per bidirectional stream) and datagrams are echoed, so the WebTransport numbers
//! compare directly with raw quinn's.

use anyhow::bail;
use bytes::Bytes;
use quinn::Endpoint;
use web_transport_quinn::{RecvStream, SendStream, Session};

use crate::raw::{MAX_REQUEST, OP_ECHO, Request, download_request, parse_request, zero_chunks};
use crate::setup::SERVER_NAME;

/// The URL clients ask for, on the server's `port`.
pub fn url(port: u16) -> anyhow::Result<url::Url> {
    Ok(format!("https://{SERVER_NAME}:{port}/bench").parse()?)
}

/// Accepts WebTransport sessions on `endpoint` (every request is accepted) and serves each on
/// its own task, until the endpoint is closed.
pub async fn serve(endpoint: Endpoint) -> anyhow::Result<()> {
    let mut server = web_transport_quinn::Server::new(endpoint);
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
    while let Ok((send, recv)) = session.accept_bi().await {
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

/// Opens a session on a fresh QUIC `connection` to the server listening on `port`: SETTINGS
/// both ways, then the extended CONNECT request and its response.
pub async fn connect(connection: quinn::Connection, port: u16) -> anyhow::Result<Session> {
    Ok(Session::connect(connection, url(port)?).await?)
}

/// Asks the server for `size` bytes on a new stream; returns how many arrived.
pub async fn download(session: &Session, size: u64) -> anyhow::Result<u64> {
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(&download_request(size)).await?;
    send.finish()?;
    let mut received = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        received += chunk.bytes.len() as u64;
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

/// Sends one datagram (dropped silently by the transport if its buffer is full).
pub fn send_datagram(session: &Session, payload: Bytes) -> anyhow::Result<()> {
    Ok(session.send_datagram(payload)?)
}
