//! Every core on one port: a [`WorkerGroup`] of quinn endpoints on SO_REUSEPORT sockets bound to
//! one address, each driven by its own thread and single-threaded tokio runtime, with the
//! kernel steering each packet to the worker that owns its connection.
//!
//! One quinn endpoint is driven by one task, so one endpoint uses one core for all its packets.
//! A group runs `n` endpoints instead. Steering keeps a connection on one worker for its whole
//! life, even when the client's address changes:
//! - every connection ID a worker issues names that worker in the five low bits of its first
//!   octet (the bits QUIC-LB leaves to the server, draft-ietf-quic-load-balancers-21 §3.3): the
//!   worker's index plus a random multiple of the group size, so the bits modulo the group size
//!   are the index;
//! - a classic BPF program attached to the group (`SO_ATTACH_REUSEPORT_CBPF`) returns, for each
//!   datagram, `(first octet of the destination connection ID & 0x1f) % n`, and the kernel hands
//!   the datagram to the socket at that index, the worker's. The ID starts at octet 1 of a short
//!   header and at octet 6 of a long header (RFC 9000 §17); a long header with an empty ID gets
//!   an index past the group, and the kernel falls back to its own hash of the 4-tuple. A
//!   datagram too short to read goes to worker 0, which drops it as quinn would.
//!
//! A client's first Initial packets carry a connection ID the client chose; its bits pick a
//! worker at random, and that worker's IDs lead every later packet back to it.
//!
//! With a QUIC-LB configuration ([`crate::ServerBuilder::quic_lb`]) the IDs are QUIC-LB IDs of
//! the server's [`crate::quic_lb::ServerId`]; the worker bits sit outside the encrypted part, so
//! the kernel reads them whether or not the configuration has a key. The cost: the first octet
//! no longer self-describes the ID's length (§3.3, which load balancers may ignore), and anyone
//! who knows the group's size can tell which worker an ID belongs to (not which connection or
//! server): this departs from §3.3's advice that a server not describing lengths keep these
//! bits unrelated across a connection's IDs. With a key, workers count their nonces in disjoint residue classes, so they never
//! produce the same ciphertext. Without a QUIC-LB configuration the IDs are 8 random octets
//! apart from the worker bits.
//!
//! Limits: at most 32 workers (five bits), and [`MAX_WORKERS`] in all: 32 on Linux, 1 elsewhere
//! (the steering program is Linux's); the sockets must be the only ones bound to the port
//! (another process's socket joining the group would shift the kernel's numbering).

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use quinn::{ConnectionIdGenerator, Endpoint, EndpointConfig};
use quinn_proto::ConnectionId;
use socket2::{Domain, Protocol, Socket, Type};

use crate::EndpointError;
use crate::options::set_buffer_sizes;
use crate::quic_lb::{WorkerField, random};
#[cfg(target_os = "linux")]
use crate::reuseport::attach_steering;
use crate::server::ServerBuilder;

/// The most workers a group can have on this system: 32 on Linux, whose kernel steers packets
/// (five bits of the connection ID name the worker); 1 elsewhere.
pub const MAX_WORKERS: usize = if cfg!(target_os = "linux") { 32 } else { 1 };

/// One worker of a [`WorkerGroup`], handed to the group's serve function on the worker's own
/// thread.
#[derive(Debug)]
#[non_exhaustive]
pub struct Worker {
    /// Which worker this is: `0..count`.
    pub index: usize,
    /// How many workers the group has.
    pub count: usize,
    /// The worker's endpoint; it accepts the connections the kernel steers to this worker.
    pub endpoint: Endpoint,
}

/// Endpoints on one UDP port, one per thread, made by [`ServerBuilder::bind_workers`].
///
/// Dropping the group leaves the workers running; [`WorkerGroup::join`] waits for them.
#[derive(Debug)]
pub struct WorkerGroup {
    local_addr: SocketAddr,
    endpoints: Vec<Endpoint>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl WorkerGroup {
    /// The address every worker is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The workers' endpoints, in worker order: to close them all, or to read their state from
    /// outside the workers.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Waits until every worker's serve function has returned. Returns the panic of a worker
    /// that panicked, if any.
    pub fn join(self) -> thread::Result<()> {
        let mut result = Ok(());
        for thread in self.threads {
            if let Err(panic) = thread.join() {
                result = Err(panic);
            }
        }
        result
    }
}

impl ServerBuilder {
    /// Binds `workers` endpoints (1 to [`MAX_WORKERS`]) to `addr` and runs `serve` once for each, on its own
    /// thread with its own single-threaded tokio runtime. The kernel steers every packet of a
    /// connection to the worker that accepted it (see [the module](crate::workers)).
    ///
    /// `serve` typically accepts connections from [`Worker::endpoint`] and spawns a task per
    /// connection with `tokio::spawn` or a `LocalSet`; the worker's runtime, and with it the
    /// endpoint, stops when the future returns. Port 0 picks a free port for the group; read it
    /// with [`WorkerGroup::local_addr`]. Need not be called inside a tokio runtime.
    ///
    /// ```no_run
    /// # fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use quay_transport::{Identity, ServerBuilder};
    ///
    /// let server = ServerBuilder::new(Identity::self_signed(["localhost"])?);
    /// let group = server.bind_workers("[::]:4433".parse()?, 4, |worker| async move {
    ///     while let Some(incoming) = worker.endpoint.accept().await {
    ///         tokio::spawn(async move {
    ///             let Ok(connection) = incoming.await else { return };
    ///             // serve `connection`
    /// #           drop(connection);
    ///         });
    ///     }
    /// })?;
    /// group.join().expect("a worker panicked");
    /// # Ok(())
    /// # }
    /// ```
    pub fn bind_workers<F, Fut>(
        &self,
        addr: SocketAddr,
        workers: usize,
        serve: F,
    ) -> Result<WorkerGroup, EndpointError>
    where
        F: Fn(Worker) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(EndpointError::WorkerCount {
                workers,
                max: MAX_WORKERS,
            });
        }
        let server_config = self.server_config()?;
        let sockets = reuseport_group(addr, workers, self.options.socket_buffer_size)?;
        let local_addr = sockets[0]
            .local_addr()
            .map_err(|source| EndpointError::Bind { addr, source })?;
        let bind_error = |source| EndpointError::Bind {
            addr: local_addr,
            source,
        };

        // Every endpoint is made before any thread starts, so an error leaves nothing running.
        let mut started = Vec::with_capacity(workers);
        for (index, socket) in sockets.into_iter().enumerate() {
            let field = WorkerField::new(index, workers).expect("index < workers <= 32");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(bind_error)?;
            let endpoint = {
                let _entered = runtime.enter();
                Endpoint::new(
                    self.endpoint_config_for(Some(field)),
                    Some(server_config.clone()),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                )
                .map_err(bind_error)?
            };
            started.push((index, runtime, endpoint));
        }

        let serve = Arc::new(serve);
        let mut group = WorkerGroup {
            local_addr,
            endpoints: started.iter().map(|(_, _, e)| e.clone()).collect(),
            threads: Vec::with_capacity(workers),
        };
        for (index, runtime, endpoint) in started {
            let serve = serve.clone();
            let worker = Worker {
                index,
                count: workers,
                endpoint,
            };
            let spawned = thread::Builder::new()
                .name(format!("quay-worker-{index}"))
                .spawn(move || runtime.block_on(serve(worker)));
            match spawned {
                Ok(thread) => group.threads.push(thread),
                Err(error) => {
                    // Stop the workers already running: closed endpoints end their accept loops.
                    for endpoint in &group.endpoints {
                        endpoint.close(0u32.into(), b"server failed to start");
                    }
                    return Err(bind_error(error));
                }
            }
        }
        Ok(group)
    }
}

/// `workers` UDP sockets bound to `addr` with SO_REUSEPORT, in the order the kernel numbers
/// them, with the steering program attached to the group (Linux; elsewhere one plain socket).
fn reuseport_group(
    addr: SocketAddr,
    workers: usize,
    buffer_size: Option<usize>,
) -> Result<Vec<UdpSocket>, EndpointError> {
    let mut bound = addr;
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let at = bound;
        let bind_error = |source| EndpointError::Bind { addr: at, source };
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(bind_error)?;
        #[cfg(target_os = "linux")]
        socket.set_reuse_port(true).map_err(bind_error)?;
        socket.bind(&bound.into()).map_err(bind_error)?;
        let socket = UdpSocket::from(socket);
        // Port 0 picked a port for the first socket; the others join it there.
        bound = socket.local_addr().map_err(bind_error)?;
        set_buffer_sizes(&socket, buffer_size).map_err(bind_error)?;
        sockets.push(socket);
    }
    attach_steering(&sockets[0], workers as u32).map_err(|source| EndpointError::Bind {
        addr: bound,
        source,
    })?;
    Ok(sockets)
}

/// Connection IDs for a worker of a group without a QUIC-LB configuration: 8 random octets
/// whose first carries the worker in its low bits.
#[derive(Debug)]
pub(crate) struct WorkerCidGenerator {
    worker: WorkerField,
}

impl WorkerCidGenerator {
    const LEN: usize = 8;

    pub(crate) fn new(worker: WorkerField) -> Self {
        Self { worker }
    }
}

impl ConnectionIdGenerator for WorkerCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut cid = [0; Self::LEN];
        random(&mut cid);
        cid[0] = cid[0] & !0x1f | self.worker.bits();
        ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        Self::LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Sets the connection ID generator of `config` for a worker without QUIC-LB.
pub(crate) fn worker_cids(config: &mut EndpointConfig, worker: WorkerField) {
    config.cid_generator(move || Box::new(WorkerCidGenerator::new(worker)));
}
