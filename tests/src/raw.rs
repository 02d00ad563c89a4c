//! The floor of every benchmark: a minimal request/response protocol on bare quinn streams.
//!
//! A request is one bidirectional stream. The client writes the request and finishes its side;
//! the server reads it whole, answers and finishes:
//! - [`OP_DOWNLOAD`] followed by a big-endian `u64` n: the server answers with n bytes;
//! - [`OP_ECHO`] followed by any payload: the server answers with the payload.
//!
//! Datagrams are echoed as they are. There is no framing, no header compression and no control
//! stream, so the cost measured is quinn's (and rustls's) alone.

use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};

/// Request opcode: the server answers with as many bytes as the `u64` that follows asks for.
pub const OP_DOWNLOAD: u8 = b'D';
/// Request opcode: the server answers with the rest of the request.
pub const OP_ECHO: u8 = b'E';
/// The largest request a server reads.
pub const MAX_REQUEST: usize = 1 << 20;
/// Size of the chunks a large response is written in.
pub const CHUNK: usize = 64 * 1024;

/// A shared chunk of [`CHUNK`] zero bytes; slices of it are written without copying.
pub fn zero_chunk() -> Bytes {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    ZEROS.get_or_init(|| Bytes::from(vec![0; CHUNK])).clone()
}

/// Accepts connections on `endpoint` and serves each on its own task, until the endpoint is
/// closed.
pub async fn serve(endpoint: Endpoint) -> anyhow::Result<()> {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                serve_connection(connection).await;
            }
        });
    }
    Ok(())
}

/// Serves one connection: every bidirectional stream is a request, every datagram is echoed.
/// Returns when the connection is closed.
pub async fn serve_connection(connection: Connection) {
    let datagrams = connection.clone();
    let echo = tokio::spawn(async move {
        while let Ok(datagram) = datagrams.read_datagram().await {
            // A full send buffer drops old datagrams; an echo benchmark counts them as lost.
            let _ = datagrams.send_datagram(datagram);
        }
    });
    while let Ok((send, recv)) = connection.accept_bi().await {
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
        Request::Download(size) => send_zeros(&mut send, size).await?,
        Request::Echo(payload) => send.write_all(payload).await?,
    }
    send.finish()?;
    Ok(())
}

/// A request of the raw protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request<'a> {
    /// Answer with this many bytes.
    Download(u64),
    /// Answer with these bytes.
    Echo(&'a [u8]),
}

/// Parses a whole request.
pub fn parse_request(request: &[u8]) -> anyhow::Result<Request<'_>> {
    match request.split_first() {
        Some((&OP_DOWNLOAD, size)) => {
            let size: [u8; 8] = size.try_into().context("download size is not 8 bytes")?;
            Ok(Request::Download(u64::from_be_bytes(size)))
        }
        Some((&OP_ECHO, payload)) => Ok(Request::Echo(payload)),
        Some((op, _)) => bail!("unknown opcode {op:#x}"),
        None => bail!("empty request"),
    }
}

/// The bytes of a download request for `size` bytes.
pub fn download_request(size: u64) -> [u8; 9] {
    let mut request = [OP_DOWNLOAD; 9];
    request[1..].copy_from_slice(&size.to_be_bytes());
    request
}

/// `size` zero bytes as slices of one shared chunk of at most [`CHUNK`] bytes each.
pub fn zero_chunks(size: u64) -> impl Iterator<Item = Bytes> {
    let chunk = zero_chunk();
    let full = size / CHUNK as u64;
    let rest = (size % CHUNK as u64) as usize;
    let last = (rest > 0).then(|| chunk.slice(..rest));
    std::iter::repeat_n(chunk, full as usize).chain(last)
}

/// Writes `size` zero bytes to `send` in shared chunks ([`zero_chunks`]).
pub async fn send_zeros(send: &mut SendStream, size: u64) -> anyhow::Result<()> {
    for chunk in zero_chunks(size) {
        send.write_chunk(chunk).await?;
    }
    Ok(())
}

/// Reads `recv` to its end without keeping the bytes; returns how many there were.
pub async fn drain(recv: &mut RecvStream) -> anyhow::Result<u64> {
    let mut total = 0;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
    }
    Ok(total)
}

/// Asks the server on `connection` for `size` bytes; returns how many arrived.
pub async fn download(connection: &Connection, size: u64) -> anyhow::Result<u64> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&download_request(size)).await?;
    send.finish()?;
    let received = drain(&mut recv).await?;
    if received != size {
        bail!("asked for {size} bytes, got {received}");
    }
    Ok(received)
}

/// Sends `payload` on a new stream and returns the server's echo.
pub async fn echo(connection: &Connection, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(&[OP_ECHO]).await?;
    send.write_all(payload).await?;
    send.finish()?;
    Ok(recv.read_to_end(MAX_REQUEST).await?)
}
