//! A connection's events carry its span (side, connection, peer address, original destination
//! connection ID), so a log filter can follow one connection. The subscriber is installed for
//! this test binary only.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{raw_connection, server, t};
use quay_h3::Config;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_error_is_logged_in_the_connection_span() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .with_env_filter("quay_h3=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let fixture = server(Config::default());
    let target = fixture.target();
    tokio::spawn(async move {
        let connection = t(fixture.server.accept()).await.unwrap();
        // Bounded by the connection, which the peer's error closes.
        while let Ok(Some(_)) = connection.accept().await {}
    });
    let connection = raw_connection(target).await;
    // RFC 9114 §6.2.1: a control stream whose first frame is not SETTINGS.
    let mut control = t(connection.open_uni()).await.unwrap();
    t(control.write_all(&[0x00, 0x07, 0x01, 0x00]))
        .await
        .unwrap();
    t(connection.closed()).await;

    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("closing the connection"))
        .unwrap_or_else(|| panic!("no close logged in:\n{logs}"));
    assert!(line.contains("h3{side=Server"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains("odcid="), "{line}");
    assert!(line.contains("conn="), "{line}");
}
