//! Starts a QUIC server with a fresh self-signed certificate on loopback, connects a client that
//! pins the certificate's hash (the way a browser's `serverCertificateHashes` does), and echoes a
//! message over a bidirectional stream and a datagram, printing each step.
//!
//! Run with `cargo run -p quay-examples --bin quic-echo`.

use std::error::Error;
use std::time::Duration;

use quay_transport::{ClientBuilder, Identity, ServerBuilder, Trust};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let identity = Identity::self_signed(["localhost", "127.0.0.1"])?;
    let hash = identity.certificate_hash();
    println!("generated a 14-day ECDSA P-256 certificate for localhost");
    println!("  SHA-256:    {hash}");
    println!("  JavaScript: {}", hash.to_js_array());

    let server = ServerBuilder::new(identity).bind("127.0.0.1:0".parse()?)?;
    let addr = server.local_addr()?;
    println!("server listening on udp://{addr} (ALPN h3, datagrams on)");
    let echo = tokio::spawn(async move {
        let incoming = server.accept().await.ok_or("server endpoint closed")?;
        let connection = incoming.await?;
        let (mut send, mut recv) = connection.accept_bi().await?;
        let message = recv.read_to_end(64 * 1024).await?;
        send.write_all(&message).await?;
        send.finish()?;
        let datagram = connection.read_datagram().await?;
        connection.send_datagram(datagram)?;
        connection.closed().await;
        Ok::<_, Box<dyn Error + Send + Sync>>(())
    });

    let client = ClientBuilder::new()
        .trust(Trust::CertificateHashes(vec![hash]))
        .build()?;
    let connection = client.connect(addr, "localhost")?.await?;
    println!("client connected, certificate accepted by hash pinning");

    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(b"hello over a stream").await?;
    send.finish()?;
    let reply = recv.read_to_end(64 * 1024).await?;
    println!("stream echo:   {:?}", String::from_utf8_lossy(&reply));

    connection.send_datagram("hello as a datagram".into())?;
    let reply = tokio::time::timeout(Duration::from_secs(5), connection.read_datagram()).await??;
    println!("datagram echo: {:?}", String::from_utf8_lossy(&reply));

    connection.close(0u32.into(), b"bye");
    echo.await?.map_err(|error| error.to_string())?;
    println!("closed");
    Ok(())
}
