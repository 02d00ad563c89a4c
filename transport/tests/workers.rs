//! Loopback tests of `ServerBuilder::bind_workers`: many connections over a group of workers on
//! one port, each connection served by exactly one worker, before and after the client moves to
//! a new port.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quay_transport::keys::ServiceKeys;
use quay_transport::quic_lb::{ConfigId, QuicLbConfig, ServerId};
use quay_transport::quinn::TokioRuntime;
use quay_transport::workers::{Handover, HandoverError, Worker, WorkerGroup};
use quay_transport::{
    ClientBuilder, Connection, Endpoint, EndpointError, Incoming, ServerBuilder, Trust,
};
use tokio::task::JoinSet;

mod common;
use common::{bounded, identity_and_trust};

/// What the workers saw: for each connection (numbered by the client), the workers that served
/// one of its streams, and how many connections each worker accepted.
#[derive(Default)]
struct Seen {
    served_by: Mutex<HashMap<u64, Vec<usize>>>,
    accepted: Mutex<HashMap<usize, usize>>,
}

/// Serves one worker: every stream of every connection gets its bytes back with the worker's
/// index appended, and the worker is recorded against the connection number in the first
/// 8 octets.
async fn serve(worker: Worker, seen: Arc<Seen>) {
    let index = worker.index;
    serve_as(worker, index, seen).await;
}

/// [`serve`], the worker answering as `index`.
async fn serve_as(worker: Worker, index: usize, seen: Arc<Seen>) {
    while let Some(incoming) = worker.endpoint.accept().await {
        *seen.accepted.lock().unwrap().entry(index).or_default() += 1;
        tokio::spawn(serve_connection(incoming, index, seen.clone()));
    }
}

async fn serve_connection(incoming: Incoming, index: usize, seen: Arc<Seen>) {
    let Ok(connection) = incoming.await else {
        return;
    };
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let Ok(mut data) = recv.read_to_end(1024).await else {
            return;
        };
        let Some(number) = data.get(..8) else { return };
        let number = u64::from_be_bytes(number.try_into().unwrap());
        seen.served_by
            .lock()
            .unwrap()
            .entry(number)
            .or_default()
            .push(index);
        data.push(index as u8);
        let _ = send.write_all(&data).await;
        let _ = send.finish();
    }
}

/// Sends connection `number`'s payload on a new stream and returns the worker that echoed it.
async fn echo(connection: &Connection, number: u64) -> Result<usize, String> {
    let mut payload = number.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0x5a; 100]);
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&payload).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply = recv.read_to_end(1024).await.map_err(|e| e.to_string())?;
    match reply.split_last() {
        Some((&worker, echoed)) if echoed == payload => Ok(usize::from(worker)),
        _ => Err(format!("connection {number}: wrong echo")),
    }
}

fn start(builder: &ServerBuilder, workers: usize, seen: &Arc<Seen>) -> WorkerGroup {
    let seen = seen.clone();
    builder
        .bind_workers("127.0.0.1:0".parse().unwrap(), workers, move |worker| {
            serve(worker, seen.clone())
        })
        .unwrap()
}

async fn stop(group: WorkerGroup) {
    for endpoint in group.endpoints() {
        endpoint.close(0u32.into(), b"done");
    }
    bounded(tokio::task::spawn_blocking(move || group.join()))
        .await
        .unwrap()
        .expect("a worker panicked");
}

/// Client endpoints (so client ports) the connections of a test are spread over: the kernel's
/// own hash gives every packet of one 4-tuple to one socket, so only distinct ports test the
/// steering.
const CLIENTS: usize = 20;

/// [`CLIENTS`] client endpoints on loopback.
fn clients(trust: &Trust) -> Vec<Endpoint> {
    (0..CLIENTS)
        .map(|_| {
            ClientBuilder::new()
                .trust(trust.clone())
                .bind("127.0.0.1:0".parse().unwrap())
                .unwrap()
        })
        .collect()
}

/// Runs `connections` connections to `server`, spread over [`CLIENTS`] client endpoints: each
/// echoes once; then, if `rebind`, every client moves to a new local port; then each echoes
/// again. Returns, per connection, the workers of its two echoes or the error that ended it.
async fn run_clients(
    server: SocketAddr,
    trust: Trust,
    connections: u64,
    rebind: bool,
) -> Vec<Result<(usize, usize), String>> {
    let clients = clients(&trust);
    let mut first_round = JoinSet::new();
    for number in 0..connections {
        let client = clients[number as usize % CLIENTS].clone();
        first_round.spawn(async move {
            let connection = bounded(client.connect(server, "localhost").unwrap())
                .await
                .unwrap();
            let worker = bounded(echo(&connection, number)).await.unwrap();
            (number, connection, worker)
        });
    }
    let mut open = Vec::new();
    while let Some(result) = first_round.join_next().await {
        open.push(result.unwrap());
    }
    if rebind {
        for client in &clients {
            let old_port = client.local_addr().unwrap().port();
            client
                .rebind(UdpSocket::bind("127.0.0.1:0").unwrap())
                .unwrap();
            assert_ne!(client.local_addr().unwrap().port(), old_port);
        }
    }
    let mut second_round = JoinSet::new();
    for (number, connection, first) in open {
        second_round.spawn(async move {
            let second = tokio::time::timeout(Duration::from_secs(5), echo(&connection, number))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            connection.close(0u32.into(), b"done");
            (number, second.map(|second| (first, second)))
        });
    }
    let mut results = vec![Err("not run".to_string()); connections as usize];
    while let Some(result) = second_round.join_next().await {
        let (number, result) = result.unwrap();
        results[number as usize] = result;
    }
    for client in clients {
        client.close(0u32.into(), b"done");
    }
    results
}

/// Checks that every connection was accepted once and served by one worker, and that each
/// worker had some of them.
fn check_one_worker_per_connection(
    results: &[Result<(usize, usize), String>],
    seen: &Seen,
    workers: usize,
) {
    for (number, result) in results.iter().enumerate() {
        let (first, second) = result
            .as_ref()
            .unwrap_or_else(|e| panic!("connection {number}: {e}"));
        assert_eq!(first, second, "connection {number} moved between workers");
    }
    let accepted = seen.accepted.lock().unwrap();
    assert_eq!(
        accepted.values().sum::<usize>(),
        results.len(),
        "each connection is accepted once: {accepted:?}"
    );
    assert_eq!(
        accepted.len(),
        workers,
        "every worker has connections: {accepted:?}"
    );
    let served_by = seen.served_by.lock().unwrap();
    assert_eq!(served_by.len(), results.len());
    for (number, workers) in served_by.iter() {
        assert_eq!(workers.len(), 2, "connection {number}");
        assert_eq!(
            workers[0], workers[1],
            "connection {number} was seen by two workers"
        );
    }
}

/// Serves `connections` connections (moving the clients halfway if `rebind`) with a group of
/// `workers` built by `builder`, and checks that each stayed on one worker.
async fn check_group(
    builder: ServerBuilder,
    trust: Trust,
    workers: usize,
    connections: u64,
    rebind: bool,
) {
    let seen = Arc::new(Seen::default());
    let group = start(&builder, workers, &seen);
    let results = run_clients(group.local_addr(), trust, connections, rebind).await;
    stop(group).await;
    check_one_worker_per_connection(&results, &seen, workers);
}

#[tokio::test]
async fn two_hundred_connections_stay_on_their_workers() {
    let (identity, trust) = identity_and_trust();
    check_group(ServerBuilder::new(identity), trust, 2, 200, false).await;
}

// draft-ietf-quic-load-balancers-21 §7.2 (server process demultiplexing): after the client's
// port changes, the kernel would hash the new 4-tuple to any worker; the worker bits in the
// connection ID keep every packet on the worker that owns the connection.
#[tokio::test]
async fn connections_stay_on_their_workers_when_the_client_moves() {
    let (identity, trust) = identity_and_trust();
    check_group(ServerBuilder::new(identity), trust, 2, 100, true).await;
}

// The same with encrypted QUIC-LB connection IDs (§5.4.2) and three workers: the worker bits
// are outside the encrypted block, so steering works the same.
#[tokio::test]
async fn quic_lb_connections_stay_on_their_workers_when_the_client_moves() {
    let (identity, trust) = identity_and_trust();
    let config = QuicLbConfig::encrypted(ConfigId::new(2).unwrap(), 2, 6, [0x3c; 16]).unwrap();
    let builder = ServerBuilder::new(identity)
        .quic_lb(config, ServerId::new(&[0x0a, 0x0b]).unwrap())
        .unwrap();
    check_group(builder, trust, 3, 100, true).await;
}

// The control for the tests above: two reuseport endpoints without the steering program. After
// the move, the kernel hashes about half of the client ports to the other endpoint, which does
// not know their connections and (sharing the service keys) resets them. If steering were
// broken, the tests above would fail the same way; all 20 clients keeping their endpoint by
// chance has odds of 2^-20.
#[tokio::test]
async fn without_steering_moved_connections_break() {
    let (identity, trust) = identity_and_trust();
    let builder = ServerBuilder::new(identity).service_keys(ServiceKeys::generate());
    let seen = Arc::new(Seen::default());
    let (addr, endpoints, tasks) = unsteered_pair(&builder, &seen);
    let results = run_clients(addr, trust, 100, true).await;
    for endpoint in &endpoints {
        endpoint.close(0u32.into(), b"done");
    }
    tasks.join_all().await;
    let broken = results.iter().filter(|result| result.is_err()).count();
    assert!(
        broken > 0,
        "no connection broke, so the worker tests prove nothing"
    );
}

/// Two endpoints on one port with SO_REUSEPORT and no steering program, served like workers.
fn unsteered_pair(
    builder: &ServerBuilder,
    seen: &Arc<Seen>,
) -> (SocketAddr, Vec<Endpoint>, JoinSet<()>) {
    use socket2::{Domain, Protocol, Socket, Type};

    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut endpoints = Vec::new();
    let mut tasks = JoinSet::new();
    for _ in 0..2 {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&addr.into()).unwrap();
        let socket = UdpSocket::from(socket);
        addr = socket.local_addr().unwrap();
        let endpoint = Endpoint::new(
            builder.endpoint_config(),
            Some(builder.server_config().unwrap()),
            socket,
            Arc::new(TokioRuntime),
        )
        .unwrap();
        endpoints.push(endpoint);
    }
    for (index, endpoint) in endpoints.iter().enumerate() {
        let seen = seen.clone();
        let endpoint = endpoint.clone();
        tasks.spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(serve_connection(incoming, index, seen.clone()));
            }
        });
    }
    (addr, endpoints, tasks)
}

/// A BPF file system mounted on a fresh temporary directory, for one test's handover maps;
/// unmounted on drop. Needs root (CI runs as root).
struct BpfFs {
    dir: tempfile::TempDir,
}

impl BpfFs {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a BPF file system needs root");
        Self { dir }
    }

    fn handover(&self) -> Handover {
        Handover::new(self.dir.path().join("port"))
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// A handover group of two workers on `addr`, which answer with their slot rather than their
/// index, so a client can tell the generations apart.
fn start_handover(
    builder: &ServerBuilder,
    handover: Handover,
    addr: SocketAddr,
    seen: &Arc<Seen>,
) -> Result<WorkerGroup, EndpointError> {
    let seen = seen.clone();
    builder
        .clone()
        .handover(handover)
        .bind_workers(addr, 2, move |worker| {
            let slot = worker.slot.expect("a handover worker has a slot");
            serve_as(worker, slot, seen.clone())
        })
}

/// Connects `count` connections to `server` from `clients` and echoes once on each; returns
/// them with the worker (slot) that answered.
async fn connect_and_echo(
    clients: &[Endpoint],
    server: SocketAddr,
    first_number: u64,
    count: u64,
) -> Vec<(u64, Connection, usize)> {
    let mut tasks = JoinSet::new();
    for number in first_number..first_number + count {
        let client = clients[number as usize % clients.len()].clone();
        tasks.spawn(async move {
            let connection = bounded(client.connect(server, "localhost").unwrap())
                .await
                .unwrap();
            let worker = bounded(echo(&connection, number)).await.unwrap();
            (number, connection, worker)
        });
    }
    tasks.join_all().await
}

/// Echoes once more on every connection and checks it comes from the same worker as before.
async fn echo_again(open: &[(u64, Connection, usize)]) {
    let mut tasks = JoinSet::new();
    for (number, connection, worker) in open {
        let (number, connection, worker) = (*number, connection.clone(), *worker);
        tasks.spawn(async move {
            let again = bounded(echo(&connection, number)).await;
            assert_eq!(again, Ok(worker), "connection {number}");
        });
    }
    tasks.join_all().await;
}

// Several processes on one port (here, groups in one process, which the kernel tells apart no
// better): a second group takes every new connection, the first keeps its own even when their
// clients move, and the second keeps its own when the first closes its sockets (which would
// renumber a classic BPF group).
#[tokio::test]
async fn a_second_group_takes_new_connections_and_the_first_keeps_its_own() {
    let bpf = BpfFs::mount();
    let (identity, trust) = identity_and_trust();
    let builder = ServerBuilder::new(identity).service_keys(ServiceKeys::generate());
    let (seen_a, seen_b) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = start_handover(&builder, bpf.handover(), any, &seen_a).unwrap();
    assert_eq!(a.slots(), Some(0..2));
    let addr = a.local_addr();
    let clients = clients(&trust);

    let old = connect_and_echo(&clients, addr, 0, 60).await;
    assert!(old.iter().all(|(_, _, worker)| *worker < 2), "served by A");

    let b = start_handover(&builder, bpf.handover(), addr, &seen_b).unwrap();
    assert_eq!(b.slots(), Some(16..18));
    // A third process while A and B both hold the port is refused.
    let third = start_handover(&builder, bpf.handover(), addr, &Arc::default()).unwrap_err();
    assert!(
        matches!(third, EndpointError::Handover(HandoverError::Busy)),
        "{third}"
    );

    // Every client moves: the kernel's 4-tuple hash would now scatter A's connections.
    for client in &clients {
        client
            .rebind(UdpSocket::bind("127.0.0.1:0").unwrap())
            .unwrap();
    }
    echo_again(&old).await;
    let new = connect_and_echo(&clients, addr, 1000, 60).await;
    let on_b: Vec<usize> = new.iter().map(|(_, _, worker)| *worker).collect();
    assert!(on_b.iter().all(|w| (16..18).contains(w)), "{on_b:?}");
    assert!(on_b.contains(&16) && on_b.contains(&17), "{on_b:?}");

    // A leaves; B's connections stay put, and B takes every new one.
    for (_, connection, _) in &old {
        connection.close(0u32.into(), b"done");
    }
    stop(a).await;
    echo_again(&new).await;
    let newer = connect_and_echo(&clients, addr, 2000, 20).await;
    assert!(newer.iter().all(|(_, _, worker)| (16..18).contains(worker)));

    // With A gone, the next process takes A's generation.
    let c = start_handover(&builder, bpf.handover(), addr, &Arc::default()).unwrap();
    assert_eq!(c.slots(), Some(0..2));
    echo_again(&new).await;
    for (_, connection, _) in new.iter().chain(&newer) {
        connection.close(0u32.into(), b"done");
    }
    stop(b).await;
    stop(c).await;
    assert_eq!(seen_a.accepted.lock().unwrap().values().sum::<usize>(), 60);
    assert_eq!(seen_b.accepted.lock().unwrap().values().sum::<usize>(), 80);
}

#[test]
fn a_handover_directory_must_be_on_a_bpf_file_system() {
    let (identity, _) = identity_and_trust();
    let dir = tempfile::tempdir().unwrap();
    let error = ServerBuilder::new(identity)
        .handover(Handover::new(dir.path().join("port")))
        .bind_workers("127.0.0.1:0".parse().unwrap(), 2, |_| async {})
        .unwrap_err();
    assert!(
        error.to_string().contains("is not on a BPF file system"),
        "{error}"
    );
    let error = ServerBuilder::new(identity_and_trust().0)
        .handover(Handover::new(dir.path()))
        .bind_workers("127.0.0.1:0".parse().unwrap(), 17, |_| async {})
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "a worker group has 1 to 16 workers here, not 17"
    );
}

#[test]
fn a_group_has_1_to_32_workers() {
    let (identity, _) = identity_and_trust();
    let builder = ServerBuilder::new(identity);
    for workers in [0, 33] {
        let error = builder
            .bind_workers("127.0.0.1:0".parse().unwrap(), workers, |_| async {})
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("a worker group has 1 to 32 workers here, not {workers}")
        );
    }
}

/// Server CPU time per handshake, per request and per GiB, and handshakes/s and requests/s,
/// with 1 and 2 workers: classic BPF steering in one process, and the eBPF steering of a
/// handover group. CPU comes from the worker threads' own clocks
/// (`/proc/self/task/*/schedstat`), so the client's share of the machine does not count; for
/// the rates the client's threads (this test's runtime) are pinned to CPU 0 with `taskset`,
/// the workers left to the scheduler. A request is a 100-octet stream answered with 8 octets.
/// A measurement, not a check; the one command (README, "Scale-out"):
///
/// `cargo test --release -p quay-transport --test workers -- --ignored --nocapture measure_server_cpu`
///
/// The eBPF rows need root (a BPF file system is mounted for them); elsewhere they are skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; prints a table"]
async fn measure_server_cpu() {
    const HANDSHAKES: usize = 1000;
    const REQUESTS: usize = 20_000;
    const BULK: usize = 256 * 1024 * 1024;
    // At most this many handshakes or requests under way at once.
    const CONCURRENCY: usize = 64;
    pin_client_threads();
    let bpf = std::panic::catch_unwind(BpfFs::mount).ok();
    println!(
        "load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "| workers | steering | CPU per handshake | CPU per request | CPU per GiB | handshakes/s | requests/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut runs = vec![(1, "classic BPF", None), (2, "classic BPF", None)];
    if let Some(bpf) = &bpf {
        runs.push((1, "eBPF (handover)", Some(bpf.handover())));
        runs.push((2, "eBPF (handover)", Some(bpf.handover())));
    }
    for (workers, steering, handover) in runs {
        let (identity, trust) = identity_and_trust();
        let mut builder = ServerBuilder::new(identity);
        if let Some(handover) = handover {
            builder = builder.handover(handover);
        }
        let group = builder
            .bind_workers("127.0.0.1:0".parse().unwrap(), workers, sink)
            .unwrap();
        let server = group.local_addr();
        let clients = clients(&trust);

        let before = worker_cpu();
        let started = std::time::Instant::now();
        let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
        let mut tasks = JoinSet::new();
        for number in 0..HANDSHAKES {
            let client = clients[number % CLIENTS].clone();
            let permit = limit.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                let connection = bounded(client.connect(server, "localhost").unwrap())
                    .await
                    .unwrap();
                connection.close(0u32.into(), b"done");
                drop(permit);
            });
        }
        tasks.join_all().await;
        let handshakes_per_s = HANDSHAKES as f64 / started.elapsed().as_secs_f64();
        let handshake = (worker_cpu() - before) / HANDSHAKES as u32;

        let mut connections = Vec::new();
        for client in &clients {
            let connecting = client.connect(server, "localhost").unwrap();
            connections.push(bounded(connecting).await.unwrap());
        }
        let before = worker_cpu();
        let started = std::time::Instant::now();
        let mut tasks = JoinSet::new();
        for number in 0..REQUESTS {
            let connection = connections[number % CLIENTS].clone();
            let permit = limit.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                send(&connection, 100).await;
                drop(permit);
            });
        }
        tasks.join_all().await;
        let requests_per_s = REQUESTS as f64 / started.elapsed().as_secs_f64();
        let request = (worker_cpu() - before) / REQUESTS as u32;

        let before = worker_cpu();
        let mut tasks = JoinSet::new();
        for connection in connections.iter().take(4) {
            let connection = connection.clone();
            tasks.spawn(async move { send(&connection, BULK / 4).await });
        }
        tasks.join_all().await;
        let per_gib = (worker_cpu() - before) * (1 << 30) / BULK as u32;

        println!(
            "| {workers} | {steering} | {handshake:.0?} | {request:.1?} | {per_gib:.2?} | {handshakes_per_s:.0} | {requests_per_s:.0} |"
        );
        for connection in connections {
            connection.close(0u32.into(), b"done");
        }
        for client in clients {
            client.close(0u32.into(), b"done");
        }
        stop(group).await;
    }
    println!(
        "load average after: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

/// Pins this process's tokio runtime threads (the client's) to CPU 0 with `taskset`; the
/// workers, started later on threads of their own, are not pinned.
fn pin_client_threads() {
    // The test's own thread runs the runtime's main future.
    let this = std::fs::read_link("/proc/thread-self").unwrap();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        let tid = task.file_name().unwrap().to_string_lossy().into_owned();
        if !comm.starts_with("tokio-runtime") && !this.ends_with(&tid) {
            continue;
        }
        let status = std::process::Command::new("taskset")
            .args(["-p", "-c", "0", &tid])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("taskset runs");
        assert!(status.success(), "taskset -p -c 0 {tid}");
    }
}

/// A worker for [`measure_server_cpu`]: reads every stream to its end and answers with the
/// number of bytes read.
async fn sink(worker: Worker) {
    while let Some(incoming) = worker.endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(connection) = incoming.await else {
                return;
            };
            while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                tokio::spawn(async move {
                    let mut total = 0u64;
                    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX, true).await {
                        total += chunk.bytes.len() as u64;
                    }
                    let _ = send.write_all(&total.to_be_bytes()).await;
                    let _ = send.finish();
                });
            }
        });
    }
}

/// Sends `len` bytes on a new stream and checks the server's count.
async fn send(connection: &Connection, len: usize) {
    const CHUNK: usize = 64 * 1024;
    let (mut send, mut recv) = bounded(connection.open_bi()).await.unwrap();
    let chunk = vec![0x5a; CHUNK];
    let mut left = len;
    while left > 0 {
        let take = left.min(CHUNK);
        bounded(send.write_all(&chunk[..take])).await.unwrap();
        left -= take;
    }
    send.finish().unwrap();
    let count = bounded(recv.read_to_end(8)).await.unwrap();
    assert_eq!(count, (len as u64).to_be_bytes());
}

/// CPU time of this process's worker threads so far (`quay-worker-*`).
fn worker_cpu() -> Duration {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with("quay-worker-") {
            continue;
        }
        // schedstat: nanoseconds on a CPU, nanoseconds waiting, timeslices.
        let schedstat = std::fs::read_to_string(task.join("schedstat")).unwrap();
        let nanos: u64 = schedstat
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        total += Duration::from_nanos(nanos);
    }
    total
}
