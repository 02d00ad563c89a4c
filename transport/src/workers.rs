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
//! (another process's socket joining the group would shift the kernel's numbering). To share
//! the port with other processes, use a [`Handover`].
//!
//! ## Handing the port to another process
//!
//! With [`ServerBuilder::handover`], a group steers with an eBPF program instead
//! (`SO_ATTACH_REUSEPORT_EBPF`, Linux 4.19 or later, root or CAP_BPF with CAP_NET_ADMIN), so
//! that a new process, a new version of the server say, can start beside a running one on the
//! same port, take every new connection, and leave the old process its own connections until
//! they end:
//! - the worker bits are a *slot* of a socket map (`BPF_MAP_TYPE_REUSEPORT_SOCKARRAY`) rather
//!   than an index in the group, so they keep naming the same socket when other processes'
//!   sockets join or leave. The high bit of the five is a *generation*: a process takes the
//!   sixteen slots of the generation the running process does not use, so at most 16 workers
//!   per process, and two processes on the port at once;
//! - a second map holds which slots take new connections; the newest process writes its own
//!   there once its endpoints are ready, and from then on new connections reach it only,
//!   while packets that name a worker of the old process still reach it (see the program's
//!   rules in `reuseport.rs`);
//! - the maps are pinned in a directory on a BPF file system ([`Handover::new`]), where the
//!   next process finds them. Every process on the port must use the same directory;
//! - the old process is told to drain by its operator (a signal, say): it stops accepting,
//!   sends HTTP/3 GOAWAY and WebTransport WT_DRAIN_SESSION (see
//!   `quay_h3::server::Connection::shutdown` and `quay_webtransport::Session::drain`), and
//!   exits when its connections end. The transport does not decide when; `h3-server` shows one
//!   way.
//!
//! Share [`crate::keys::ServiceKeys`] between the processes, so that either can validate the
//! other's address-validation tokens and reset a connection whose process is gone.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::{Path, PathBuf};
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
use crate::reuseport::{self, attach_steering};
use crate::server::ServerBuilder;

/// The most workers a group can have on this system: 32 on Linux, whose kernel steers packets
/// (five bits of the connection ID name the worker); 1 elsewhere.
pub const MAX_WORKERS: usize = if cfg!(target_os = "linux") { 32 } else { 1 };

/// The most workers a group can have with a [`Handover`]: 16, half the slots, since the old
/// process keeps the other half while it drains.
pub const MAX_HANDOVER_WORKERS: usize = 16;

/// Where the processes that hand one port over to each other meet: a directory on a BPF file
/// system (bpffs) that holds the steering maps. Set it with [`ServerBuilder::handover`]; see
/// [the module](crate::workers#handing-the-port-to-another-process).
///
/// Use one directory per port (per service): it records which process takes new
/// connections. The directory is created if its parent is on a BPF file system. On most
/// systems one is mounted at `/sys/fs/bpf`; where none is, root can mount one:
/// `mount -t bpf bpf /sys/fs/bpf`.
///
/// ```no_run
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use quay_transport::workers::Handover;
/// use quay_transport::{Identity, ServerBuilder};
///
/// let server = ServerBuilder::new(Identity::self_signed(["localhost"])?)
///     .handover(Handover::new("/sys/fs/bpf/quay-4433"));
/// // Started while another process serves the port, this group takes its new connections.
/// let group = server.bind_workers("[::]:4433".parse()?, 2, |worker| async move {
///     while let Some(incoming) = worker.endpoint.accept().await {
/// #       drop(incoming);
///         // serve it
///     }
/// })?;
/// # drop(group);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Handover {
    dir: PathBuf,
}

impl Handover {
    /// The meeting place in `dir`, a directory on a BPF file system (or to be made in one).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Why a group could not join a port with a [`Handover`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// The directory is not on a BPF file system, where the maps must be pinned.
    #[error(
        "{0} is not on a BPF file system; mount one (as root: mount -t bpf bpf /sys/fs/bpf) and use a directory in it"
    )]
    NotBpfFs(PathBuf),
    /// The kernel does not let this process use eBPF.
    #[error(
        "the kernel does not permit eBPF socket steering here ({0}); it needs root, or CAP_BPF and CAP_NET_ADMIN"
    )]
    NotPermitted(io::Error),
    /// Two processes hold the port already: one still drains. Wait until it exits.
    #[error(
        "two processes hold this port already (one is still draining); start another when the old one has exited"
    )]
    Busy,
    /// The kernel refused the steering program (too old a kernel, say: Linux 4.19 or later is
    /// needed).
    #[error("the kernel refused the steering program: {error}; verifier: {log}")]
    Program {
        /// What bpf(2) said.
        error: io::Error,
        /// The verifier's log.
        log: String,
    },
    /// Another system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// Hand-over needs Linux's eBPF.
    #[error("handing a port over between processes needs Linux")]
    Unsupported,
}

/// One worker of a [`WorkerGroup`], handed to the group's serve function on the worker's own
/// thread.
#[derive(Debug)]
#[non_exhaustive]
pub struct Worker {
    /// Which worker this is: `0..count`.
    pub index: usize,
    /// How many workers the group has.
    pub count: usize,
    /// With a [`Handover`], the worker's slot in the steering map (what its connection IDs
    /// carry): `index`, or `16 + index` in the second generation.
    pub slot: Option<usize>,
    /// The worker's endpoint; it accepts the connections the kernel steers to this worker.
    pub endpoint: Endpoint,
    /// Accepts the endpoint's connections with the builder's per-connection settings (qlog).
    pub acceptor: crate::Acceptor,
}

/// Endpoints on one UDP port, one per thread, made by [`ServerBuilder::bind_workers`].
///
/// Dropping the group leaves the workers running; [`WorkerGroup::join`] waits for them.
#[derive(Debug)]
pub struct WorkerGroup {
    local_addr: SocketAddr,
    endpoints: Vec<Endpoint>,
    threads: Vec<thread::JoinHandle<()>>,
    slots: Option<Range<usize>>,
}

impl WorkerGroup {
    /// The address every worker is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// With a [`Handover`], the slots of the steering map the workers hold, in worker order:
    /// `0..n` or `16..16 + n`, whichever generation the running process did not use.
    pub fn slots(&self) -> Option<Range<usize>> {
        self.slots.clone()
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
        if self.handover.is_some() && workers > MAX_HANDOVER_WORKERS {
            return Err(EndpointError::WorkerCount {
                workers,
                max: MAX_HANDOVER_WORKERS,
            });
        }
        let server_config = self.server_config()?;
        let acceptor = self.acceptor_with(|| Ok(server_config.clone()))?;
        let sockets = reuseport_group(addr, workers, self.options.socket_buffer_size)?;
        let local_addr = sockets[0]
            .local_addr()
            .map_err(|source| EndpointError::Bind { addr, source })?;
        let bind_error = |source| EndpointError::Bind {
            addr: local_addr,
            source,
        };
        // One process: classic BPF by index. Several: join the slots of the handover maps.
        let joined = match &self.handover {
            None => {
                #[cfg(target_os = "linux")]
                attach_steering(&sockets[0], workers as u32).map_err(bind_error)?;
                None
            }
            Some(handover) => Some(join(handover, &sockets)?),
        };

        // Every endpoint is made before any thread starts, so an error leaves nothing running.
        let mut started = Vec::with_capacity(workers);
        for (index, socket) in sockets.into_iter().enumerate() {
            let field = match &joined {
                None => WorkerField::new(index, workers),
                // The worker bits are the slot itself (32 choices of 32: no random multiple).
                Some(joined) => WorkerField::new(joined.base + index, 32),
            }
            .expect("index < workers <= 32, slot < 32");
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

        // Ready: from now on new connections come here, none to an older process.
        if let Some(joined) = &joined {
            joined.take_over(workers)?;
        }
        let serve = Arc::new(serve);
        let mut group = WorkerGroup {
            local_addr,
            endpoints: started.iter().map(|(_, _, e)| e.clone()).collect(),
            threads: Vec::with_capacity(workers),
            slots: joined.map(|joined| joined.base..joined.base + workers),
        };
        for (index, runtime, endpoint) in started {
            let serve = serve.clone();
            let worker = Worker {
                index,
                count: workers,
                slot: group.slots.as_ref().map(|slots| slots.start + index),
                endpoint,
                acceptor: acceptor.clone(),
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

    /// Steers with an eBPF program whose maps are pinned in `handover`'s directory, so that
    /// another process can take this port over, or this one take it over from another (see
    /// [the module](crate::workers#handing-the-port-to-another-process)). Applies to
    /// [`ServerBuilder::bind_workers`] (Linux only; at most [`MAX_HANDOVER_WORKERS`]).
    pub fn handover(mut self, handover: Handover) -> Self {
        self.handover = Some(handover);
        self
    }
}

/// A group's place in the handover maps: its slots start at `base`.
struct Joined {
    base: usize,
    #[cfg(target_os = "linux")]
    config: reuseport::Map,
}

impl Joined {
    /// Points new connections at this group's `workers` slots.
    fn take_over(&self, workers: usize) -> Result<(), HandoverError> {
        #[cfg(target_os = "linux")]
        {
            let value = reuseport::config_value(self.base as u32, workers as u32);
            self.config
                .update(0, &value, reuseport::BPF_ANY)
                .map_err(|source| io_error("cannot take new connections over", source))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = workers;
            Err(HandoverError::Unsupported)
        }
    }
}

/// `source` as the error of doing `what`; EPERM says eBPF is not permitted.
#[cfg(target_os = "linux")]
fn io_error(what: &str, source: io::Error) -> HandoverError {
    if source.raw_os_error() == Some(EPERM) {
        return HandoverError::NotPermitted(source);
    }
    HandoverError::Io {
        what: what.to_owned(),
        source,
    }
}

/// EPERM, which bpf(2) answers without the capabilities.
#[cfg(target_os = "linux")]
const EPERM: i32 = 1;

/// Joins the handover maps of `handover` (making and pinning them if this is the first
/// process): picks the generation the running process does not use, attaches the steering
/// program to the group, and puts `sockets` in that generation's slots, in order. New
/// connections keep going where they went until [`Joined::take_over`].
#[cfg(target_os = "linux")]
fn join(handover: &Handover, sockets: &[UdpSocket]) -> Result<Joined, HandoverError> {
    use reuseport::{BPF_NOEXIST, GENERATION_SLOTS, Map, Program};

    let dir = &handover.dir;
    // The directory, or the one it is to be made in, must be on bpffs.
    let existing = if dir.exists() {
        dir.as_path()
    } else {
        dir.parent().unwrap_or(Path::new("/"))
    };
    match reuseport::is_bpf_fs(existing) {
        Ok(true) => {}
        Ok(false) => return Err(HandoverError::NotBpfFs(dir.clone())),
        Err(source) => {
            return Err(io_error(
                &format!("cannot look at {}", existing.display()),
                source,
            ));
        }
    }
    if !dir.exists() {
        std::fs::create_dir(dir).or_else(|error| match error.kind() {
            // Another process made it first.
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(io_error(&format!("cannot make {}", dir.display()), error)),
        })?;
    }
    let open = |name: &str, sockets: bool| -> Result<Map, HandoverError> {
        let path = dir.join(name);
        let what = || format!("cannot open or pin {}", path.display());
        match Map::open(&path, sockets) {
            Ok(map) => return Ok(map),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&what(), error)),
        }
        let made = if sockets {
            Map::sockets()
        } else {
            Map::config()
        };
        let map = made.map_err(|error| io_error("cannot make a BPF map", error))?;
        match map.pin(&path) {
            Ok(()) => Ok(map),
            // Another process pinned its map first: use that one.
            Err(error) if error.raw_os_error() == Some(EEXIST) => {
                Map::open(&path, sockets).map_err(|error| io_error(&what(), error))
            }
            Err(error) => Err(io_error(&what(), error)),
        }
    };
    let slots = open("sockets", true)?;
    let config = open("config", false)?;

    // The generation to take: the other one than the process taking connections now, or the
    // first free one. Its slots must be empty (a process there is still draining).
    let mut value = [0; 4];
    config
        .lookup(0, &mut value)
        .map_err(|error| io_error("cannot read the steering configuration", error))?;
    let (base, count) = reuseport::parse_config_value(value);
    let free = |base: u32| -> Result<bool, HandoverError> {
        let mut cookie = [0; 8];
        for slot in base..base + GENERATION_SLOTS {
            let taken = slots
                .lookup(slot, &mut cookie)
                .map_err(|error| io_error("cannot read the socket map", error))?;
            if taken {
                return Ok(false);
            }
        }
        Ok(true)
    };
    // The running process's own generation is free only if that process is gone.
    let candidates = if count > 0 && base == GENERATION_SLOTS {
        [0, GENERATION_SLOTS]
    } else if count > 0 {
        [GENERATION_SLOTS, 0]
    } else {
        [0, GENERATION_SLOTS]
    };
    let mut chosen = None;
    for base in candidates {
        if free(base)? {
            chosen = Some(base);
            break;
        }
    }
    let base = chosen.ok_or(HandoverError::Busy)?;

    let program = Program::load_reuseport(&reuseport::steering_program(&config, &slots)).map_err(
        |error| match error.error.raw_os_error() {
            Some(EPERM) => HandoverError::NotPermitted(error.error),
            _ => HandoverError::Program {
                error: error.error,
                log: error.log,
            },
        },
    )?;
    // The same program as the running process's, on the same maps: replacing it changes
    // nothing until this group takes over.
    reuseport::attach_program(&sockets[0], &program)
        .map_err(|error| io_error("cannot attach the steering program", error))?;
    for (index, socket) in sockets.iter().enumerate() {
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket) as u64;
        slots
            .update(base + index as u32, &fd.to_ne_bytes(), BPF_NOEXIST)
            .map_err(|error| match error.raw_os_error() {
                // Another process took the slot meanwhile.
                Some(EEXIST) => HandoverError::Busy,
                _ => io_error("cannot put a socket in the socket map", error),
            })?;
    }
    Ok(Joined {
        base: base as usize,
        config,
    })
}

/// EEXIST: a pin or a slot taken already.
#[cfg(target_os = "linux")]
const EEXIST: i32 = 17;

#[cfg(not(target_os = "linux"))]
fn join(_: &Handover, _: &[UdpSocket]) -> Result<Joined, HandoverError> {
    Err(HandoverError::Unsupported)
}

/// `workers` UDP sockets bound to `addr` with SO_REUSEPORT, in the order the kernel numbers
/// them (Linux; elsewhere one plain socket).
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
