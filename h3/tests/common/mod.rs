//! Loopback fixtures: a server on 127.0.0.1 with a self-signed certificate and a client that pins
//! its hash. Every await in the tests goes through [`t`], so nothing hangs.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use quay_h3::Config;
use quay_h3::client::Connection;
use quay_h3::server::{self, Server};
use quay_transport::{CertificateHash, ClientBuilder, Identity, ServerBuilder, Trust};

/// Awaits `future` for at most 30 seconds.
pub async fn t<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("timed out")
}

/// A bound server and what a client needs to reach it.
pub struct Fixture {
    pub server: Server,
    pub addr: SocketAddr,
    pub hash: CertificateHash,
}

pub fn server(config: Config) -> Fixture {
    let identity = Identity::self_signed(["localhost"]).unwrap();
    let hash = identity.certificate_hash();
    let endpoint = ServerBuilder::new(identity)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = endpoint.local_addr().unwrap();
    Fixture {
        server: Server::from_endpoint(endpoint, config),
        addr,
        hash,
    }
}

pub fn client_builder(hash: &CertificateHash) -> ClientBuilder {
    ClientBuilder::new().trust(Trust::CertificateHashes(vec![*hash]))
}

/// Where a client connects: the server's address and certificate hash.
#[derive(Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub hash: CertificateHash,
}

impl Fixture {
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            hash: self.hash,
        }
    }
}

/// A raw QUIC connection (ALPN h3) to the server, for tests that speak HTTP/3 by hand. The server
/// must be accepting.
pub async fn raw_connection(target: Target) -> quay_transport::Connection {
    let endpoint = client_builder(&target.hash)
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    t(endpoint.connect(target.addr, "localhost").unwrap())
        .await
        .unwrap()
}

/// A client of this crate. The server must be accepting.
pub async fn client(target: Target, config: Config) -> Connection {
    Connection::new(raw_connection(target).await, config)
}

pub mod origin;

/// Accepts one connection from the fixture.
pub async fn accept(fixture: &Fixture) -> server::Connection {
    t(fixture.server.accept()).await.unwrap()
}
