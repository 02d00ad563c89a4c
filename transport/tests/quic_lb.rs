//! QUIC-LB connection IDs on the wire: a UDP relay between client and server plays the load
//! balancer, reads the destination connection ID of every client packet and decodes it with
//! `QuicLbDecoder`, as draft-ietf-quic-load-balancers-21 §5.5 describes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use quay_transport::quic_lb::{ConfigId, QuicLbConfig, QuicLbDecoder, ServerId};
use quay_transport::{ClientBuilder, Connection, Endpoint, ServerBuilder, Trust};
use tokio::net::UdpSocket;

mod common;
use common::{bounded, check_echo, echo_one_stream, identity_and_trust};

/// The destination connection IDs of the client's datagrams (of the first packet in each), as
/// a load balancer finds them: after a long header's length octet (RFC 9000 §17.2), or
/// everything after a short header's first octet, whose ID length it does not know (§17.3).
#[derive(Default)]
struct Seen {
    long: Vec<Vec<u8>>,
    short: Vec<Vec<u8>>,
}

/// Notes the destination connection ID of the first packet of `datagram`.
fn record(seen: &mut Seen, datagram: &[u8]) {
    match datagram.first() {
        Some(first) if first & 0x80 != 0 => {
            if let Some(&dcid_len) = datagram.get(5)
                && let Some(dcid) = datagram.get(6..6 + usize::from(dcid_len))
            {
                seen.long.push(dcid.to_vec());
            }
        }
        Some(_) => seen.short.push(datagram[1..].to_vec()),
        None => {}
    }
}

/// Relays datagrams between one client and `server`, recording what the client sent.
async fn relay(server: SocketAddr) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = Arc::new(Mutex::new(None));
    {
        let (front, back, seen, client) =
            (front.clone(), back.clone(), seen.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0; 65536];
            while let Ok((len, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                let datagram = &buf[..len];
                record(&mut seen.lock().unwrap(), datagram);
                let _ = back.send(datagram).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0; 65536];
        while let Ok(len) = back.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..len], to).await;
            }
        }
    });
    (addr, seen)
}

/// Connects through `relay_addr` and echoes one stream with a server on `server`.
async fn echo_through(relay_addr: SocketAddr, server: &Endpoint, trust: Trust) -> Connection {
    let accept = {
        let server = server.clone();
        tokio::spawn(async move {
            let connection = bounded(server.accept()).await.unwrap().await.unwrap();
            echo_one_stream(connection).await;
        })
    };
    let client = ClientBuilder::new().trust(trust).build().unwrap();
    let connection = bounded(client.connect(relay_addr, "localhost").unwrap())
        .await
        .unwrap();
    check_echo(&connection, b"through the balancer").await;
    drop(accept);
    connection
}

/// Every ID the client sends once it has heard from the server is one of the server's, and
/// decodes to `server_id`; only the client's first Initials carry its own random ID.
async fn check_ids_on_the_wire(config: QuicLbConfig) {
    let (identity, trust) = identity_and_trust();
    let server_id = ServerId::new(&[0x5e, 0x4f, 0x07][..config.server_id_len()]).unwrap();
    let server = ServerBuilder::new(identity)
        .quic_lb(config.clone(), server_id)
        .unwrap()
        .bind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    let (relay_addr, seen) = relay(server.local_addr().unwrap()).await;
    let connection = echo_through(relay_addr, &server, trust).await;
    connection.close(0u32.into(), b"done");

    let decoder = QuicLbDecoder::new([config.clone()]);
    let seen = seen.lock().unwrap();
    assert!(!seen.short.is_empty(), "the echo went over 1-RTT packets");
    for dcid in &seen.short {
        assert_eq!(
            decoder.decode(dcid),
            Ok(server_id),
            "short header {dcid:02x?}"
        );
    }
    // The client's first Initial names an ID of its own; from the server's first answer on,
    // the client uses the server's IDs (RFC 9000 §7.2).
    let original = &seen.long[0];
    for dcid in seen.long.iter().filter(|dcid| *dcid != original) {
        assert_eq!(dcid.len(), config.cid_len());
        assert_eq!(
            decoder.decode(dcid),
            Ok(server_id),
            "long header {dcid:02x?}"
        );
        // §3.3: the first octet's low bits self-describe the length.
        assert_eq!(usize::from(dcid[0] & 0x1f), config.cid_len() - 1);
    }
}

// §5.4.1: server ID and nonce of 16 octets, one AES block.
#[tokio::test]
async fn single_pass_ids_route_to_their_server() {
    let config = QuicLbConfig::encrypted(ConfigId::new(1).unwrap(), 2, 14, [0x77; 16]).unwrap();
    check_ids_on_the_wire(config).await;
}

// §5.4.2: any other length, the four-pass scheme.
#[tokio::test]
async fn four_pass_ids_route_to_their_server() {
    let config = QuicLbConfig::encrypted(ConfigId::new(5).unwrap(), 3, 6, [0x78; 16]).unwrap();
    check_ids_on_the_wire(config).await;
}

// §5.3: without a key the server ID is in clear.
#[tokio::test]
async fn plaintext_ids_route_to_their_server() {
    let config = QuicLbConfig::plaintext(ConfigId::new(0).unwrap(), 1, 4).unwrap();
    check_ids_on_the_wire(config).await;
}
