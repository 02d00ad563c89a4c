//! Helpers shared by the loopback tests: waits with a deadline, a pinned self-signed identity,
//! and a one-stream echo.

// Each test file uses some of these.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use quay_transport::{Connection, Identity, Trust};

/// The longest any single wait of a test may take.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// `future`, or a panic after [`TIMEOUT`].
pub(crate) async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("timed out")
}

/// A self-signed identity for `localhost` and the client trust that pins it.
pub(crate) fn identity_and_trust() -> (Identity, Trust) {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let trust = Trust::CertificateHashes(vec![identity.certificate_hash()]);
    (identity, trust)
}

/// The server's side of [`check_echo`]: answers one bidirectional stream with its own bytes,
/// then waits for the connection to close.
pub(crate) async fn echo_one_stream(connection: Connection) {
    let (mut send, mut recv) = bounded(connection.accept_bi()).await.unwrap();
    let data = bounded(recv.read_to_end(1024)).await.unwrap();
    send.write_all(&data).await.unwrap();
    send.finish().unwrap();
    bounded(connection.closed()).await;
}

/// Sends `data` on a new stream and checks that it comes back.
pub(crate) async fn check_echo(connection: &Connection, data: &[u8]) {
    let (mut send, mut recv) = bounded(connection.open_bi()).await.unwrap();
    send.write_all(data).await.unwrap();
    send.finish().unwrap();
    assert_eq!(bounded(recv.read_to_end(1024)).await.unwrap(), data);
}
