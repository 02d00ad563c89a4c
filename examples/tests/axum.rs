//! The `axum` example's site (`quay_examples::site`): one axum Router on TCP and HTTP/3 on one
//! port, with WebTransport beside it; served in-process on loopback.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use quay_examples::site::{self, Counts, WEBTRANSPORT_PATH};
use quay_tests::browser::{self, BrowserKind, Page};
use quay_transport::{ClientBuilder, Identity, Trust};
use quay_webtransport::Config;
use tokio::sync::watch;

/// Awaits `future` for at most 30 seconds.
async fn t<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("timed out")
}

/// The site on 127.0.0.1, TCP and UDP on one port; stops when the sender is dropped or sends.
struct Site {
    port: u16,
    identity_hash: quay_transport::CertificateHash,
    spki: String,
    counts: Arc<Counts>,
    _stop: watch::Sender<bool>,
}

/// Serves the site; `layer` wraps the router on both sides (the browser test's CORS headers).
fn start(layer: impl Fn(Router) -> Router) -> Site {
    let identity = Identity::self_signed(["localhost", "127.0.0.1"]).unwrap();
    let identity_hash = identity.certificate_hash();
    let spki = identity.spki_sha256_base64().unwrap();
    let tls = site::tls_config(&identity).unwrap();
    let config = Config::default();
    let (listener, server) = site::bind("127.0.0.1:0".parse().unwrap(), identity, &config).unwrap();
    let port = server.local_addr().unwrap().port();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let counts = Arc::new(Counts::default());
    let router = layer(site::router(counts.clone()));
    let (stop, stopped) = watch::channel(false);
    let signal = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let tcp_router = site::with_alt_svc(router.clone(), port);
    tokio::spawn(site::serve_tcp(listener, tls, tcp_router, signal()));
    let h3 = site::serve_h3(server, router, config, signal(), Duration::from_secs(1));
    tokio::spawn(h3);
    Site {
        port,
        identity_hash,
        spki,
        counts,
        _stop: stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_and_the_routes_share_a_connection() {
    let site = start(|router| router);
    let builder = ClientBuilder::new().trust(Trust::CertificateHashes(vec![site.identity_hash]));
    let base = format!("https://127.0.0.1:{}", site.port);
    let client = t(quay_webtransport::Client::connect(
        &base,
        &builder,
        Config::default(),
    ))
    .await
    .unwrap();

    // A route, over HTTP/3, on the connection that carries the session.
    let request = Request::get(format!("{base}/hello"))
        .body(Bytes::new())
        .unwrap();
    let response = t(client.h3().request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "hello from quay\n");
    let request = Request::post(format!("{base}/echo"))
        .body(Bytes::from_static(b"posted"))
        .unwrap();
    let response = t(client.h3().request(request)).await.unwrap();
    assert_eq!(response.body(), "posted");

    // A WebTransport session at /wt echoes a stream.
    let session = t(client.open(
        &format!("{base}{WEBTRANSPORT_PATH}"),
        &quay_webtransport::SessionOptions::default(),
    ))
    .await
    .unwrap();
    let (mut send, mut recv) = t(session.open_bi()).await.unwrap();
    t(send.write_all(b"over webtransport")).await.unwrap();
    send.finish().unwrap();
    let echoed = t(recv.read_to_end(1024)).await.unwrap();
    assert_eq!(echoed, b"over webtransport");

    // And the routes go on beside the session.
    let request = Request::get(format!("{base}/version"))
        .body(Bytes::new())
        .unwrap();
    let response = t(client.h3().request(request)).await.unwrap();
    assert_eq!(response.body(), "HTTP/3.0");
    assert_eq!(site.counts.http3.load(Ordering::Relaxed), 3);
    session.close(0, "done");
}

/// The page: fetches each path from the TCP origin, then from the HTTP/3 one, and reports the
/// status, the body and the protocol the browser used (`nextHopProtocol`).
const PAGE_JS: &str = r#""use strict";
async function report(check, ok, detail) {
  const line = JSON.stringify({ check, ok, detail: String(detail) }) + "\n";
  await fetch("/result", { method: "POST", headers: { "content-type": "application/json" }, body: line });
}
async function get(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.text();
  const entries = performance.getEntriesByName(response.url);
  const protocol = entries.length ? entries[entries.length - 1].nextHopProtocol : "";
  return { status: response.status, body, protocol };
}
(async () => {
  for (const [name, base] of [["tcp", QUAY.tcp], ["h3", QUAY.h3]]) {
    for (const path of QUAY.paths) {
      const check = `${name} ${path}`;
      try {
        await report(check, true, JSON.stringify(await get(base + path)));
      } catch (e) {
        await report(check, false, e);
      }
    }
  }
  await report("done", true, "");
})();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_gets_the_same_routes_over_tcp_and_http3() {
    // The page is on another origin: let it read the answers and their timing.
    let site = start(|router| {
        router.layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async move {
                let any = HeaderValue::from_static("*");
                response
                    .headers_mut()
                    .insert("access-control-allow-origin", any.clone());
                response.headers_mut().insert("timing-allow-origin", any);
                response
            },
        ))
    });
    let port = site.port;
    // `localhost` is reached over TCP; `127.0.0.1` is forced onto QUIC.
    let config = format!(
        "const QUAY = {{ tcp: \"https://localhost:{port}\", h3: \"https://127.0.0.1:{port}\", \
         paths: [\"/hello\", \"/version\"] }};"
    );
    let page = Page::new("quay axum over TCP and HTTP/3", &config, PAGE_JS);
    let args = [
        format!("--origin-to-force-quic-on=127.0.0.1:{port}"),
        format!("--ignore-certificate-errors-spki-list={}", site.spki),
    ];
    let report =
        browser::run_with_args(BrowserKind::Chromium, page, Duration::from_secs(60), &args)
            .await
            .unwrap();
    let seen = |check: &str| -> serde_json::Value {
        let detail = report.passed(check).unwrap();
        serde_json::from_str(detail).unwrap()
    };
    for path in ["/hello", "/version"] {
        let (tcp, h3) = (seen(&format!("tcp {path}")), seen(&format!("h3 {path}")));
        assert_eq!(tcp["status"], 200, "{tcp}");
        assert_eq!(h3["status"], 200, "{h3}");
        assert_eq!(tcp["protocol"], "h2", "{tcp}");
        assert_eq!(h3["protocol"], "h3", "{h3}");
        if path == "/hello" {
            assert_eq!(tcp["body"], h3["body"]);
            assert_eq!(h3["body"], "hello from quay\n");
        }
    }
    // What the server saw, beside what the page says.
    assert_eq!(seen("tcp /version")["body"], "HTTP/2.0");
    assert_eq!(seen("h3 /version")["body"], "HTTP/3.0");
    assert_eq!(site.counts.http3.load(Ordering::Relaxed), 2);
    assert_eq!(site.counts.http2.load(Ordering::Relaxed), 2);
}
