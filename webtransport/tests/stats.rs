//! A session's stats (`Session::stats`, shaped like the W3C `getStats()`) on both ends of a
//! loopback session, and the session metrics read back with a debugging recorder (installed
//! for this test binary only).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use quay_webtransport::SessionError;
use quay_webtransport::proto::settings::Draft;

mod common;

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_streams_bytes_and_datagrams_and_metrics_count_sessions() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this binary");

    let (server, builder) = common::default_server();
    let url = format!(
        "https://localhost:{}/s?room=1",
        server.local_addr().unwrap().port()
    );
    let (stats_tx, stats_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let session = server.accept().await.unwrap().ok().await.unwrap();
        // The accepted session keeps its request.
        let request = session
            .request()
            .expect("a server session keeps its request");
        assert_eq!(request.uri().path(), "/s");
        assert_eq!(request.uri().query(), Some("room=1"));
        assert_eq!(session.draft(), Some(Draft::Draft15));
        let (mut send, mut recv) = session.accept_bi().await.unwrap().unwrap();
        let message = recv.read_to_end(1024).await.unwrap();
        send.write_all(&message).await.unwrap();
        send.finish().unwrap();
        let datagram = session.read_datagram().await.unwrap();
        session.send_datagram(datagram).unwrap();
        let ended = session.closed().await;
        let _ = stats_tx.send((session.stats(), ended));
    });
    let session = bounded(quay_webtransport::connect(&url, &builder))
        .await
        .unwrap();
    let (mut send, mut recv) = bounded(session.open_bi()).await.unwrap();
    send.write_all(b"twelve bytes").await.unwrap();
    send.finish().unwrap();
    assert_eq!(
        bounded(recv.read_to_end(1024)).await.unwrap(),
        b"twelve bytes"
    );
    // Datagrams may be lost: send one every 20 ms until one comes back (bounded).
    let echoed = bounded(async {
        loop {
            session.send_datagram(Bytes::from_static(b"dgram")).unwrap();
            let wait = Duration::from_millis(20);
            if let Ok(reply) = tokio::time::timeout(wait, session.read_datagram()).await {
                return reply.unwrap();
            }
        }
    })
    .await;
    assert_eq!(echoed, "dgram");

    // quay's client endpoint is dual-stack; the server is on 127.0.0.1.
    assert!(session.connection().remote_address().is_ipv6());
    assert!(
        session.remote_address().is_ipv4(),
        "{}",
        session.remote_address()
    );
    assert!(
        session.request().is_none(),
        "a client session has no request to keep"
    );
    let ours = session.stats();
    assert_eq!(ours.streams_opened_bidi, 1);
    assert_eq!(ours.streams_accepted_bidi, 0);
    assert_eq!(ours.bytes_sent, 12);
    assert_eq!(ours.bytes_received, 12);
    assert!(ours.datagrams_sent >= 1);
    assert_eq!(ours.datagrams_received, 1);
    assert_eq!(ours.datagrams_dropped_on_send, 0);
    assert_eq!(ours.draft, Some(Draft::Draft15));
    assert!(ours.rtt > Duration::ZERO);
    // quay's client and server both offer draft-16 flow control: credit each way.
    let flow = ours.flow.expect("flow control is on between quay's ends");
    // The default windows are 16 MiB and 100 streams each way; 12 bytes went each way on the
    // one bidirectional stream we opened.
    assert_eq!(flow.send_data, (16 << 20) - 12);
    assert_eq!(flow.receive_data, (16 << 20) - 12);
    assert_eq!((flow.send_streams_bidi, flow.send_streams_uni), (99, 100));
    assert_eq!(
        (flow.receive_streams_bidi, flow.receive_streams_uni),
        (100, 100)
    );

    session.close(7, "done").await;
    let (theirs, ended) = bounded(stats_rx).await.unwrap();
    assert!(
        matches!(ended, SessionError::PeerClosed { code: 7, .. }),
        "{ended:?}"
    );
    assert_eq!(theirs.streams_accepted_bidi, 1);
    assert_eq!(theirs.bytes_received, 12);
    assert_eq!(theirs.bytes_sent, 12);
    assert!(theirs.datagrams_received >= 1);
    assert_eq!(theirs.datagrams_sent, 1);

    // The metrics: counters and histograms are drained by each snapshot, so they are added up.
    let mut totals: HashMap<String, u64> = HashMap::new();
    let wanted = "quay_wt_sessions_ended_total{reason=peer_closed,side=server}";
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
                DebugValue::Gauge(g) => g.into_inner() as u64,
            };
        }
        if totals.contains_key(wanted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let value = |name: &str| {
        *totals
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {totals:?}"))
    };
    assert_eq!(
        value("quay_wt_sessions_total{draft=draft15,side=server}"),
        1
    );
    assert_eq!(
        value("quay_wt_sessions_total{draft=draft15,side=client}"),
        1
    );
    assert_eq!(value(wanted), 1);
    assert_eq!(
        value("quay_wt_sessions_ended_total{reason=locally_closed,side=client}"),
        1
    );
    assert_eq!(value("quay_wt_session_seconds{side=server}"), 1);
}
