//! An origin for pooled-client tests: a server on 127.0.0.1 that reports each connection, request
//! and close as an [`Event`], so that tests count connections on the server.
//!
//! Paths: `/hold` answers once [`Origin::release`] was called; `/head-then-hold` sends the
//! response head at once and the body once released; `/echo` answers with the request
//! body and the request trailers as response trailers; anything else answers 200 with the path.
//! In [`Mode::GoawayAfterTwo`], the first connection takes two requests, sends GOAWAY, refuses
//! the one to `/refused` with H3_REQUEST_REJECTED and answers the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quay_h3::server::{self, RequestStream};
use quay_h3::{Code, Config, ConnectionError};
use quay_transport::{ClientBuilder, Identity, ServerBuilder, TransportOptions};
use tokio::sync::{mpsc, watch};

use super::{client_builder, t};

/// What the server saw; connections are numbered from 1 in the order accepted.
#[derive(Debug)]
pub enum Event {
    Connected(usize),
    Request { conn: usize, path: String },
    Closed { conn: usize, error: ConnectionError },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    GoawayAfterTwo,
}

pub struct Origin {
    pub url: String,
    pub builder: ClientBuilder,
    events: mpsc::UnboundedReceiver<Event>,
    release: watch::Sender<bool>,
    connections: Arc<AtomicUsize>,
}

impl Origin {
    /// A server allowing `max_streams` concurrent request streams per connection.
    pub fn start(max_streams: u32, mode: Mode) -> Self {
        let identity = Identity::self_signed(["localhost"]).unwrap();
        let hash = identity.certificate_hash();
        let mut options = TransportOptions::default();
        options.max_concurrent_bidi_streams = max_streams;
        let endpoint = ServerBuilder::new(identity)
            .options(options)
            .bind("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let port = endpoint.local_addr().unwrap().port();
        let server = server::Server::from_endpoint(endpoint, Config::default());
        let (events_tx, events) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Some(conn) = server.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = events_tx.send(Event::Connected(n));
                let events = events_tx.clone();
                let released = released.clone();
                let goaway = mode == Mode::GoawayAfterTwo && n == 1;
                tokio::spawn(serve(conn, n, events, released, goaway));
            }
        });
        Self {
            url: format!("https://localhost:{port}"),
            builder: client_builder(&hash),
            events,
            release,
            connections,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Lets `/hold` requests answer.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// The next event (30 s at most).
    pub async fn next(&mut self) -> Event {
        t(self.events.recv()).await.expect("server gone")
    }

    /// Waits for `n` request events and returns their connection numbers.
    pub async fn requests(&mut self, n: usize) -> Vec<usize> {
        let mut conns = Vec::new();
        // Bounded: each turn takes an event, within `next`'s timeout.
        while conns.len() < n {
            if let Event::Request { conn, .. } = self.next().await {
                conns.push(conn);
            }
        }
        conns
    }
}

async fn serve(
    conn: server::Connection,
    n: usize,
    events: mpsc::UnboundedSender<Event>,
    released: watch::Receiver<bool>,
    goaway: bool,
) {
    if goaway {
        let mut first = Vec::new();
        while first.len() < 2 {
            let Ok(Some((request, stream))) = conn.accept().await else {
                return;
            };
            let path = request.uri().path().to_owned();
            let _ = events.send(Event::Request {
                conn: n,
                path: path.clone(),
            });
            first.push((path, stream));
        }
        // RFC 9114 §5.2: GOAWAY first, then refuse one of the two unprocessed (§4.1.1).
        let work = async {
            for (path, mut stream) in first {
                if path == "/refused" {
                    stream.reject(Code::H3_REQUEST_REJECTED);
                } else {
                    let _ = answer(stream, path, released.clone()).await;
                }
            }
            // Refuses later requests; ends when the connection does.
            while let Ok(Some((_, mut stream))) = conn.accept().await {
                stream.reject(Code::H3_REQUEST_REJECTED);
            }
        };
        tokio::join!(conn.shutdown(Duration::from_secs(10)), work);
        let _ = events.send(Event::Closed {
            conn: n,
            error: conn.closed().await,
        });
        return;
    }
    while let Ok(Some((request, stream))) = conn.accept().await {
        let path = request.uri().path().to_owned();
        let _ = events.send(Event::Request {
            conn: n,
            path: path.clone(),
        });
        tokio::spawn(answer(stream, path, released.clone()));
    }
    let _ = events.send(Event::Closed {
        conn: n,
        error: conn.closed().await,
    });
}

async fn answer(
    mut stream: RequestStream,
    path: String,
    mut released: watch::Receiver<bool>,
) -> Result<(), quay_h3::StreamError> {
    let ok = http::Response::builder().status(200).body(()).unwrap();
    match path.as_str() {
        "/hold" => {
            let _ = released.wait_for(|released| *released).await;
            stream.send_response(ok).await?;
            stream.send_data(Bytes::from_static(b"held")).await?;
            stream.finish()
        }
        "/head-then-hold" => {
            stream.send_response(ok).await?;
            let _ = released.wait_for(|released| *released).await;
            stream.send_data(Bytes::from_static(b"held")).await?;
            stream.finish()
        }
        "/echo" => {
            let mut body = BytesMut::new();
            // Bounded by the request body.
            while let Some(chunk) = stream.recv_data().await? {
                body.extend_from_slice(&chunk);
            }
            let trailers = stream.recv_trailers().await?;
            stream.send_response(ok).await?;
            stream.send_data(body.freeze()).await?;
            match trailers {
                Some(trailers) => stream.send_trailers(trailers).await,
                None => stream.finish(),
            }
        }
        _ => {
            stream.send_response(ok).await?;
            stream.send_data(Bytes::from(path)).await?;
            stream.finish()
        }
    }
}
