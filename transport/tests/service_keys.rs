//! Loopback tests of `ServerBuilder::service_keys`: two endpoints built with one set of keys
//! accept each other's address-validation tokens and reset each other's lost connections; with
//! different keys they do neither.

use std::net::SocketAddr;
use std::time::Duration;

use quay_transport::keys::ServiceKeys;
use quay_transport::quic_lb::{ConfigId, QuicLbConfig, ServerId};
use quay_transport::{
    ClientBuilder, Connection, ConnectionError, Endpoint, ServerBuilder, TransportOptions, Trust,
};

mod common;
use common::{TIMEOUT, bounded, check_echo, echo_one_stream, identity_and_trust};

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Connects `client` to `server`, which accepts in the background; returns the client's
/// connection and whether the server saw the client's address as already validated (RFC 9000
/// §8.1: a token from an earlier connection proves it).
async fn connect(client: &Endpoint, server: &Endpoint) -> (Connection, bool) {
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let incoming = bounded(server.accept()).await.unwrap();
            let validated = incoming.remote_address_validated();
            let connection = bounded(incoming.into_future()).await.unwrap();
            (connection, validated)
        })
    };
    let connection = bounded(
        client
            .connect(server.local_addr().unwrap(), "localhost")
            .unwrap(),
    )
    .await
    .unwrap();
    let (server_side, validated) = bounded(accept).await.unwrap();
    // A stream round trip, so the server's NEW_TOKEN frames (sent once the handshake is
    // confirmed) reach the client before anything is closed.
    let echo = tokio::spawn(echo_one_stream(server_side));
    check_echo(&connection, b"ping").await;
    drop(echo);
    (connection, validated)
}

// RFC 9000 §8.1.3: a NEW_TOKEN token from one endpoint validates the client's address at any
// endpoint holding the same token key.
#[tokio::test]
async fn a_token_from_one_endpoint_validates_the_client_at_another() {
    let (identity, trust) = identity_and_trust();
    let keys = ServiceKeys::from_secret(&[0x11; 32]).unwrap();
    let builder = ServerBuilder::new(identity);
    let first = builder
        .clone()
        .service_keys(keys.clone())
        .bind(localhost())
        .unwrap();
    let same_keys = builder
        .clone()
        .service_keys(keys)
        .bind(localhost())
        .unwrap();
    let other_keys = builder
        .service_keys(ServiceKeys::from_secret(&[0x22; 32]).unwrap())
        .bind(localhost())
        .unwrap();
    let client = ClientBuilder::new().trust(trust).build().unwrap();

    let (connection, validated) = connect(&client, &first).await;
    assert!(!validated, "a first contact has no token");
    connection.close(0u32.into(), b"done");
    // quinn sends two NEW_TOKEN tokens per connection; the client spends one per connection.
    let (connection, validated) = connect(&client, &same_keys).await;
    assert!(
        validated,
        "the token of `first` validates the client at `same_keys`"
    );
    connection.close(0u32.into(), b"done");
    let (connection, validated) = connect(&client, &other_keys).await;
    assert!(
        !validated,
        "the token of `first` means nothing under other keys"
    );
    connection.close(0u32.into(), b"done");
}

/// Runs a server with `keys` on its own runtime and thread, connects `client` to it, then stops
/// that runtime without a word to the client, as a crashed process would. Returns the server's
/// address and the client's connection, still open on the client's side.
async fn connect_then_crash(builder: ServerBuilder, client: &Endpoint) -> (SocketAddr, Connection) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let endpoint = builder.bind(localhost()).unwrap();
            addr_tx.send(endpoint.local_addr().unwrap()).unwrap();
            let connection = bounded(endpoint.accept()).await.unwrap().await.unwrap();
            let _ = bounded(crash_rx).await;
            // Returning drops the runtime with its drivers unpolled: nothing more is sent, and
            // the socket closes.
            drop(connection);
        });
    });
    let addr = addr_rx.recv_timeout(TIMEOUT).unwrap();
    let connection = bounded(client.connect(addr, "localhost").unwrap())
        .await
        .unwrap();
    crash_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || server.join().unwrap())
        .await
        .unwrap();
    (addr, connection)
}

/// How the client's connection ends once a server with `restarted_keys` took over the crashed
/// server's port and the client sent it a packet.
async fn end_after_restart(keys: ServiceKeys, restarted_keys: ServiceKeys) -> ConnectionError {
    let (identity, trust) = identity_and_trust();
    end_after_restart_of(ServerBuilder::new(identity), trust, keys, restarted_keys).await
}

/// [`end_after_restart`] for servers made by `builder`.
async fn end_after_restart_of(
    builder: ServerBuilder,
    trust: Trust,
    keys: ServiceKeys,
    restarted_keys: ServiceKeys,
) -> ConnectionError {
    let mut options = TransportOptions::default();
    // Short enough that the case without a reset ends quickly.
    options.idle_timeout = Duration::from_secs(1);
    options.keep_alive_interval = None;
    let client = ClientBuilder::new()
        .trust(trust)
        .options(options)
        .build()
        .unwrap();
    let (addr, connection) = connect_then_crash(builder.clone().service_keys(keys), &client).await;
    let _restarted = builder.service_keys(restarted_keys).bind(addr).unwrap();
    let mut send = bounded(connection.open_uni()).await.unwrap();
    send.write_all(b"anyone there?").await.unwrap();
    bounded(connection.closed()).await
}

// RFC 9000 §10.3: an endpoint that lost a connection's state resets it with a token only the
// issuer's key can make; with the service's shared key, any endpoint can.
#[tokio::test]
async fn an_endpoint_with_the_same_keys_resets_a_lost_connection() {
    let keys = ServiceKeys::from_secret(&[0x33; 32]).unwrap();
    let end = end_after_restart(keys.clone(), keys).await;
    assert!(matches!(end, ConnectionError::Reset), "{end:?}");
}

// The same for a server issuing QUIC-LB IDs, whose reset key is derived for its configuration
// (draft-ietf-quic-load-balancers-21 §9.5): the restarted server, with the same configuration
// and server ID, derives the same key.
#[tokio::test]
async fn a_restarted_quic_lb_server_resets_a_lost_connection() {
    let (identity, trust) = identity_and_trust();
    let config = QuicLbConfig::encrypted(ConfigId::new(3).unwrap(), 2, 6, [0x44; 16]).unwrap();
    let builder = ServerBuilder::new(identity)
        .quic_lb(config, ServerId::new(&[0x01, 0x02]).unwrap())
        .unwrap();
    let keys = ServiceKeys::from_secret(&[0x55; 32]).unwrap();
    let end = end_after_restart_of(builder, trust, keys.clone(), keys).await;
    assert!(matches!(end, ConnectionError::Reset), "{end:?}");
}

#[tokio::test]
async fn an_endpoint_with_other_keys_cannot_reset_it() {
    let end = end_after_restart(ServiceKeys::generate(), ServiceKeys::generate()).await;
    assert!(matches!(end, ConnectionError::TimedOut), "{end:?}");
}
