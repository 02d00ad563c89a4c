//! The metrics the glue pushes through the `metrics` facade, read back with a debugging
//! recorder installed for this test binary only.

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::{accept, client, server, t};
use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use quay_h3::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_responses_and_bytes_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let fixture = server(Config::default());
    let target = fixture.target();
    let served = tokio::spawn(async move {
        let connection = accept(&fixture).await;
        for status in [200, 404] {
            let (_, mut stream) = t(connection.accept()).await.unwrap().unwrap();
            let response = Response::builder().status(status).body(()).unwrap();
            stream.send_response(response).await.unwrap();
            stream.finish().unwrap();
        }
        t(connection.closed()).await
    });
    let client = client(target, Config::default()).await;
    for _ in 0..2 {
        let request = Request::get("https://localhost/")
            .body(Bytes::new())
            .unwrap();
        t(client.request(request)).await.unwrap();
    }
    client.close(quay_h3::Code::H3_NO_ERROR, b"");
    t(served).await.unwrap();
    drop(client);

    // The server's connection task records its bytes as it ends, just after the close that
    // `served` saw: wait for that (bounded), not for a fixed time. A snapshot drains counters
    // and histograms, so the values are added up across snapshots.
    let mut totals: HashMap<String, u64> = HashMap::new();
    let server_bytes = "quay_h3_bytes_total{direction=sent,side=server}";
    for _ in 0..2_000 {
        for (key, (_, _, value)) in snapshotter.snapshot().into_hashmap() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            *totals.entry(name).or_default() += match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
        }
        if totals.get(server_bytes).is_some_and(|sent| *sent > 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let value = |name: &str| {
        *totals
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {totals:?}"))
    };
    assert_eq!(value("quay_h3_connections_total{side=server}"), 1);
    assert_eq!(value("quay_h3_handshake_seconds{side=server}"), 1);
    assert_eq!(value("quay_h3_responses_total{class=2xx,side=server}"), 1);
    assert_eq!(value("quay_h3_responses_total{class=4xx,side=client}"), 1);
    // The server's connection task has ended with the close: its bytes are counted.
    assert!(value(server_bytes) > 0);
}
