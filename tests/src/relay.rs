//! An impairing UDP relay between one client and one server on loopback, for tests of quay
//! under a bad network (this machine's kernel has no `netem`).
//!
//! The client sends to [`Relay::local_addr`] instead of the server; the relay forwards each
//! packet to the server from a second socket, and the server's answers back to the client. On
//! the way, each direction applies its own [`Impairment`]:
//! - **loss**: a packet is dropped with probability [`Impairment::loss`];
//! - **duplication**: a packet that survives is sent twice, back to back, with probability
//!   [`Impairment::duplicate`];
//! - **delay and jitter**: every packet waits [`Impairment::delay`] plus an offset drawn
//!   uniformly from ±[`Impairment::jitter`], but never leaves before the packet ahead of it, as
//!   in a link's queue: jitter alone does not reorder;
//! - **reordering**: with probability [`Impairment::reorder`] a packet is held back until the
//!   next packet of the same direction has been scheduled, and is sent right after it, so
//!   exactly one packet overtakes it. Only one packet is held at a time (a packet drawn for
//!   reordering while another is held is not held: it is the one that overtakes). A held packet
//!   that no packet overtakes within [`Impairment::reorder_hold`] is sent anyway, in order, and
//!   is not counted as reordered.
//!
//! Decisions are deterministic from the seed: each direction draws from its own SplitMix64
//! generator, seeded from the relay's seed and the direction, and every packet takes exactly
//! four draws (loss, duplication, reordering, jitter) whatever happens to it. So the fate of the
//! n-th packet of a direction depends only on the seed, the direction and n; which packet of a
//! QUIC connection is the n-th still depends on timing.
//!
//! [`Relay::stats`] counts, per [`Direction`], the packets received, dropped, duplicated,
//! reordered and sent. The relay's tasks stop when the [`Relay`] is dropped.
//!
//! Not modelled: bandwidth limits and queue overflow (the queue is unbounded), MTU changes,
//! corruption (QUIC would discard a corrupted packet, as it does a lost one), correlated
//! (bursty) loss, path changes and NAT rebinding. The relay serves one client: the address
//! that sent to it last. It binds 127.0.0.1 only, and asks for the same 4 MiB socket buffers as
//! the endpoints of [`crate::setup`], so that the kernel does not add losses the counters do not
//! see.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::setup::loopback_any_port;

/// What the relay does to the packets of one direction. Build it from [`Impairment::NONE`] or
/// [`Impairment::BAD_NETWORK`] and the setters.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Impairment {
    /// The probability that a packet is dropped.
    pub loss: f64,
    /// The probability that a packet is held back and overtaken by the next one.
    pub reorder: f64,
    /// The probability that a packet is sent twice.
    pub duplicate: f64,
    /// The delay of every packet.
    pub delay: Duration,
    /// The largest deviation from [`Self::delay`], drawn uniformly from ±`jitter`.
    pub jitter: Duration,
    /// How long a packet held back for reordering waits for one to overtake it. Default: 10 ms.
    pub reorder_hold: Duration,
}

impl Impairment {
    /// Forwards every packet at once, as it came.
    pub const NONE: Self = Self {
        loss: 0.0,
        reorder: 0.0,
        duplicate: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        reorder_hold: Duration::from_millis(10),
    };

    /// The bad network of the loopback tests: 2% loss, 2% reordering, 1% duplication and
    /// 5 ms ± 2 ms of delay.
    pub const BAD_NETWORK: Self = Self::NONE
        .loss(0.02)
        .reorder(0.02)
        .duplicate(0.01)
        .delay(Duration::from_millis(5), Duration::from_millis(2));

    /// Sets [`Self::loss`].
    pub const fn loss(mut self, probability: f64) -> Self {
        self.loss = probability;
        self
    }

    /// Sets [`Self::reorder`].
    pub const fn reorder(mut self, probability: f64) -> Self {
        self.reorder = probability;
        self
    }

    /// Sets [`Self::duplicate`].
    pub const fn duplicate(mut self, probability: f64) -> Self {
        self.duplicate = probability;
        self
    }

    /// Sets [`Self::delay`] and [`Self::jitter`].
    pub const fn delay(mut self, delay: Duration, jitter: Duration) -> Self {
        self.delay = delay;
        self.jitter = jitter;
        self
    }

    /// Sets [`Self::reorder_hold`].
    pub const fn reorder_hold(mut self, hold: Duration) -> Self {
        self.reorder_hold = hold;
        self
    }
}

/// One direction through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

impl Direction {
    const fn index(self) -> usize {
        match self {
            Self::ToServer => 0,
            Self::ToClient => 1,
        }
    }
}

/// What happened to the packets of one direction so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Packets that reached the relay.
    pub received: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets sent twice.
    pub duplicated: u64,
    /// Packets that a later packet overtook.
    pub reordered: u64,
    /// Packets sent on, duplicates included.
    pub sent: u64,
}

impl Stats {
    /// Whether every packet received has been dropped or sent on (none is waiting).
    pub fn settled(&self) -> bool {
        self.received - self.dropped + self.duplicated == self.sent
    }
}

/// A running relay. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    stats: watch::Receiver<[Stats; 2]>,
    tasks: [JoinHandle<()>; 2],
}

impl Relay {
    /// Starts a relay on 127.0.0.1 to the server at `server`, with `impairment` both ways.
    /// Must be called inside a tokio runtime.
    pub fn start(server: SocketAddr, impairment: Impairment, seed: u64) -> io::Result<Self> {
        Self::start_each_way(server, impairment, impairment, seed)
    }

    /// Starts a relay on 127.0.0.1 to the server at `server`, with `to_server` on the packets
    /// from the client and `to_client` on those from the server. Must be called inside a tokio
    /// runtime.
    pub fn start_each_way(
        server: SocketAddr,
        to_server: Impairment,
        to_client: Impairment,
        seed: u64,
    ) -> io::Result<Self> {
        let front = Arc::new(udp_socket()?);
        let back = Arc::new(udp_socket()?);
        let addr = front.local_addr()?;
        let (publish, stats) = watch::channel([Stats::default(); 2]);
        let ends = Ends {
            front,
            back,
            server,
            client: Arc::new(Mutex::new(None)),
            publish: Arc::new(publish),
        };
        let task = |direction, impairment| {
            let path = Path::new(impairment, Rng::new(seed, direction));
            tokio::spawn(ends.clone().run(direction, path))
        };
        let tasks = [
            task(Direction::ToServer, to_server),
            task(Direction::ToClient, to_client),
        ];
        Ok(Self { addr, stats, tasks })
    }

    /// The address clients connect to instead of the server's.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What happened so far to the packets going `direction`.
    pub fn stats(&self, direction: Direction) -> Stats {
        self.stats.borrow()[direction.index()]
    }

    /// Waits until `ready` holds for the stats of `direction`, and returns them.
    pub async fn wait_for(
        &self,
        direction: Direction,
        mut ready: impl FnMut(&Stats) -> bool,
    ) -> Stats {
        let mut stats = self.stats.clone();
        let seen = stats
            .wait_for(|all| ready(&all[direction.index()]))
            .await
            // The sender lives in the tasks, which only end when `self` is dropped.
            .expect("relay tasks stopped");
        seen[direction.index()]
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP socket on 127.0.0.1 with 4 MiB kernel buffers (best effort, as in quay-transport).
fn udp_socket() -> io::Result<UdpSocket> {
    const BUFFER: usize = 4 * 1024 * 1024;
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(BUFFER);
    let _ = socket.set_send_buffer_size(BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&loopback_any_port().into())?;
    UdpSocket::from_std(socket.into())
}

/// The relay's sockets and shared state, as each direction's task sees them.
#[derive(Clone, Debug)]
struct Ends {
    /// Faces the client.
    front: Arc<UdpSocket>,
    /// Faces the server.
    back: Arc<UdpSocket>,
    server: SocketAddr,
    /// The address the client last sent from.
    client: Arc<Mutex<Option<SocketAddr>>>,
    publish: Arc<watch::Sender<[Stats; 2]>>,
}

impl Ends {
    /// Forwards the packets going `direction` through `path` until aborted.
    async fn run(self, direction: Direction, mut path: Path) {
        let (input, output) = match direction {
            Direction::ToServer => (&self.front, &self.back),
            Direction::ToClient => (&self.back, &self.front),
        };
        let mut buffer = vec![0; u16::MAX as usize];
        loop {
            let wake = path.next_wake();
            tokio::select! {
                received = input.recv_from(&mut buffer) => {
                    // Unconnected sockets report no ICMP errors; any error is transient.
                    if let Ok((len, from)) = received
                        && self.accept_from(direction, from)
                    {
                        path.arrive(buffer[..len].to_vec(), Instant::now());
                    }
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)),
                    if wake.is_some() => {}
            }
            let to = match direction {
                Direction::ToServer => Some(self.server),
                Direction::ToClient => *self.client.lock().unwrap(),
            };
            while let Some(packet) = path.next_due(Instant::now()) {
                if let Some(to) = to {
                    // Best effort, as a link is: a send that fails is a packet lost.
                    let _ = output.send_to(&packet, to).await;
                }
            }
            self.publish
                .send_if_modified(|all| update(&mut all[direction.index()], path.stats));
        }
    }

    /// Whether a packet from `from` belongs to this direction; learns the client's address.
    fn accept_from(&self, direction: Direction, from: SocketAddr) -> bool {
        match direction {
            Direction::ToServer => {
                *self.client.lock().unwrap() = Some(from);
                true
            }
            Direction::ToClient => from == self.server,
        }
    }
}

/// Replaces `old` with `new`; whether they differed.
fn update(old: &mut Stats, new: Stats) -> bool {
    let changed = *old != new;
    *old = new;
    changed
}

/// One direction's impairment, without sockets or clocks: packets go in with
/// [`Path::arrive`] and come out of [`Path::next_due`] once their time has come; the caller
/// sleeps until [`Path::next_wake`].
#[derive(Debug)]
struct Path {
    impairment: Impairment,
    rng: Rng,
    /// Packets waiting to be sent, by due time (never decreasing) and then in order.
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// A packet held back for reordering: the packet, sent twice if `copies` is 2, and when it
    /// goes anyway.
    held: Option<Held>,
    /// The due time of the packet last scheduled.
    last_due: Option<Instant>,
    stats: Stats,
}

#[derive(Debug)]
struct Held {
    packet: Vec<u8>,
    copies: usize,
    deadline: Instant,
}

impl Path {
    fn new(impairment: Impairment, rng: Rng) -> Self {
        Self {
            impairment,
            rng,
            queue: VecDeque::new(),
            held: None,
            last_due: None,
            stats: Stats::default(),
        }
    }

    /// Decides the fate of `packet`, which arrived at `now`.
    fn arrive(&mut self, packet: Vec<u8>, now: Instant) {
        let imp = self.impairment;
        // Always four draws, so that the n-th packet's fate depends on n alone.
        let [lose, duplicate, reorder, jitter] = [(); 4].map(|()| self.rng.unit());
        self.stats.received += 1;
        if lose < imp.loss {
            self.stats.dropped += 1;
            return;
        }
        let copies = if duplicate < imp.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let due = self.schedule(now + jittered(imp.delay, imp.jitter, jitter));
        if reorder < imp.reorder && self.held.is_none() {
            let deadline = due + imp.reorder_hold;
            self.held = Some(Held {
                packet,
                copies,
                deadline,
            });
            return;
        }
        self.push(due, packet, copies);
        if let Some(held) = self.held.take() {
            self.stats.reordered += 1;
            self.push(due, held.packet, held.copies);
        }
    }

    /// When the next packet is due, or a held packet's wait ends; `None` when nothing waits.
    fn next_wake(&self) -> Option<Instant> {
        let queued = self.queue.front().map(|(due, _)| *due);
        let held = self.held.as_ref().map(|held| held.deadline);
        queued.into_iter().chain(held).min()
    }

    /// The next packet due by `now`, counted as sent; a held packet whose wait has ended is
    /// queued first.
    fn next_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(held) = self.held.take_if(|held| held.deadline <= now) {
            let due = self.schedule(held.deadline);
            self.push(due, held.packet, held.copies);
        }
        let (due, _) = self.queue.front()?;
        if *due > now {
            return None;
        }
        self.stats.sent += 1;
        self.queue.pop_front().map(|(_, packet)| packet)
    }

    /// The due time of a packet ready at `ready`: not before the last one scheduled.
    fn schedule(&mut self, ready: Instant) -> Instant {
        let due = self.last_due.map_or(ready, |last| last.max(ready));
        self.last_due = Some(due);
        due
    }

    fn push(&mut self, due: Instant, packet: Vec<u8>, copies: usize) {
        if copies == 2 {
            self.queue.push_back((due, packet.clone()));
        }
        self.queue.push_back((due, packet));
    }
}

/// `delay` moved by `jitter` times `unit` scaled from [0, 1) to [-1, 1), at least zero.
fn jittered(delay: Duration, jitter: Duration, unit: f64) -> Duration {
    let offset = jitter.as_secs_f64() * (2.0 * unit - 1.0);
    Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0))
}

/// SplitMix64 (Steele, Lea and Flood, 2014): small, fast and good enough to draw packet fates.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// A generator for `direction` of a relay seeded with `seed`.
    fn new(seed: u64, direction: Direction) -> Self {
        let mut mix = Self(seed ^ (direction.index() as u64).wrapping_mul(0xa076_1d64_78bd_642f));
        Self(mix.next())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number drawn uniformly from [0, 1), from the top 53 bits of the next draw.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds packets `0..n` (each its index as 4 bytes) into a path at `at`, and returns the
    /// indices of what is due at `at` (nothing held counts).
    fn through(path: &mut Path, n: u32, at: Instant) -> Vec<u32> {
        for i in 0..n {
            path.arrive(i.to_be_bytes().to_vec(), at);
        }
        std::iter::from_fn(|| path.next_due(at))
            .map(|packet| u32::from_be_bytes(packet.try_into().unwrap()))
            .collect()
    }

    fn path(impairment: Impairment, seed: u64) -> Path {
        Path::new(impairment, Rng::new(seed, Direction::ToServer))
    }

    #[test]
    fn loss_drops_what_the_counters_say_and_repeats_with_the_seed() {
        let now = Instant::now();
        let mut lossy = path(Impairment::NONE.loss(0.5), 7);
        let arrived = through(&mut lossy, 1000, now);
        let stats = lossy.stats;
        assert_eq!(stats.received, 1000);
        assert_eq!(arrived.len() as u64, 1000 - stats.dropped);
        assert_eq!(stats.sent, arrived.len() as u64);
        assert!(stats.settled());
        // Order kept, nothing twice.
        assert!(arrived.windows(2).all(|w| w[0] < w[1]));
        // Binomial(1000, 0.5): mean 500, standard deviation 15.8; the seed fixes the draw.
        assert!((400..=600).contains(&stats.dropped), "{stats:?}");
        // The same seed drops the same packets; another seed, others.
        assert_eq!(
            through(&mut path(Impairment::NONE.loss(0.5), 7), 1000, now),
            arrived
        );
        assert_ne!(
            through(&mut path(Impairment::NONE.loss(0.5), 8), 1000, now),
            arrived
        );
        // The other direction draws from its own generator.
        let other = Path::new(Impairment::NONE.loss(0.5), Rng::new(7, Direction::ToClient));
        assert_ne!(through(&mut { other }, 1000, now), arrived);
    }

    #[test]
    fn duplication_sends_twice_back_to_back() {
        let mut twice = path(Impairment::NONE.duplicate(1.0), 1);
        let arrived = through(&mut twice, 5, Instant::now());
        assert_eq!(arrived, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(twice.stats.duplicated, 5);
        assert_eq!(twice.stats.sent, 10);
        assert!(twice.stats.settled());
    }

    #[test]
    fn reordering_lets_the_next_packet_overtake() {
        // Every packet drawn: each odd one is drawn while the one before is held, and overtakes.
        let mut swapped = path(Impairment::NONE.reorder(1.0), 1);
        let arrived = through(&mut swapped, 6, Instant::now());
        assert_eq!(arrived, [1, 0, 3, 2, 5, 4]);
        assert_eq!(swapped.stats.reordered, 3);
        // A held packet that nothing overtakes goes at the end of its hold, not counted.
        let now = Instant::now();
        let hold = Impairment::NONE.reorder(1.0).reorder_hold(10 * MS);
        let mut alone = path(hold, 1);
        assert_eq!(through(&mut alone, 1, now), [] as [u32; 0]);
        assert_eq!(alone.next_wake(), Some(now + 10 * MS));
        assert_eq!(
            alone.next_due(now + 10 * MS),
            Some(0u32.to_be_bytes().to_vec())
        );
        assert_eq!(alone.stats.reordered, 0);
        assert!(alone.stats.settled());
    }

    #[test]
    fn delay_and_jitter_keep_order() {
        let now = Instant::now();
        let slow = Impairment::NONE.delay(5 * MS, 2 * MS);
        let mut slow = path(slow, 3);
        assert_eq!(through(&mut slow, 100, now), [] as [u32; 0]);
        // Nothing before the shortest delay; everything, in order, by the longest.
        assert!(slow.next_wake().unwrap() >= now + 3 * MS);
        assert_eq!(slow.next_due(now + 3 * MS - Duration::from_nanos(1)), None);
        let arrived = through(&mut slow, 0, now + 7 * MS);
        assert_eq!(arrived, (0..100).collect::<Vec<_>>());
        assert_eq!(slow.next_wake(), None);
    }

    /// Through real sockets: what the relay says it dropped is what does not arrive, both ways.
    #[tokio::test]
    async fn relay_forwards_all_it_does_not_drop() {
        const N: u32 = 200;
        let impairment = Impairment::NONE.loss(0.5).duplicate(0.3).delay(MS, MS);
        let server = UdpSocket::bind(loopback_any_port()).await.unwrap();
        let relay = Relay::start(server.local_addr().unwrap(), impairment, 42).unwrap();
        let client = UdpSocket::bind(loopback_any_port()).await.unwrap();
        client.connect(relay.local_addr()).await.unwrap();
        for i in 0..N {
            client.send(&i.to_be_bytes()).await.unwrap();
        }
        // Client to server; the server echoes each packet it gets.
        let stats = bounded(relay.wait_for(Direction::ToServer, |s| {
            s.received == u64::from(N) && s.settled()
        }))
        .await;
        let up = receive(&server, stats.sent, true).await;
        assert_eq!(up.len() as u64, u64::from(N) - stats.dropped);
        // Server to client: the echoes, impaired again.
        let echoes = stats.sent;
        let stats =
            bounded(relay.wait_for(Direction::ToClient, |s| s.received == echoes && s.settled()))
                .await;
        // (Echoes of duplicates are duplicates: only the count and the set can be checked.)
        let down = receive(&client, stats.sent, false).await;
        assert!(stats.dropped > 0 && stats.duplicated > 0, "{stats:?}");
        assert!(down.is_subset(&up));
    }

    /// Receives `count` packets on `socket` (echoing each if `echo`), checks that no more
    /// are waiting, and returns the distinct indices.
    async fn receive(socket: &UdpSocket, count: u64, echo: bool) -> BTreeSet<u32> {
        let mut buffer = [0; 16];
        let mut seen = BTreeSet::new();
        for _ in 0..count {
            let (len, from) = bounded(socket.recv_from(&mut buffer)).await.unwrap();
            seen.insert(u32::from_be_bytes(buffer[..len].try_into().unwrap()));
            if echo {
                socket.send_to(&buffer[..len], from).await.unwrap();
            }
        }
        // Loopback delivers a datagram into the socket's buffer before `send_to` returns, and
        // the relay counted every one sent: anything more would be waiting already.
        let extra = socket.try_recv_from(&mut buffer);
        assert_eq!(extra.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        seen
    }

    async fn bounded<F: Future>(future: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("timed out")
    }
}
