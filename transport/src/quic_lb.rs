//! QUIC-LB connection IDs (draft-ietf-quic-load-balancers-21): routable IDs that carry a server
//! ID a load balancer can read, in plaintext or encrypted with AES-128.
//!
//! This module owns the ID layout and both of its directions:
//! - the server side, [`QuicLbGenerator`], a quinn [`ConnectionIdGenerator`] that writes
//!   `first octet ‖ server ID ‖ nonce`, encrypted when the configuration has a key;
//! - the load-balancer side, [`QuicLbConfig::server_id`] and [`QuicLbDecoder`], which read the
//!   server ID back and say why an ID is unroutable ([`Unroutable`]).
//!
//! A [`QuicLbConfig`] is what a configuration agent hands out (§5.3): a config rotation
//! codepoint ([`ConfigId`]), the server ID and nonce lengths, and an optional 16-octet key.
//! Every endpoint of one server uses the same config and its own [`ServerId`].
//!
//! Nonces (§5.4, §9.6): with a key, each generator counts up from a random start, so no nonce
//! repeats until the whole nonce space is used (the draft forbids reuse under one key); without a
//! key the nonce is visible, so a counter would link IDs to each other, and every nonce is drawn
//! at random instead. When a counter has gone all the way round, the generator issues
//! unroutable IDs (codepoint `0b111`, §3.2) rather than reuse a nonce.
//!
//! It does not route packets or parse QUIC headers; the caller hands [`QuicLbDecoder::decode`]
//! the destination connection ID.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::cipher::{
    AES_128, DecryptingKey, DecryptionContext, EncryptingKey, UnboundCipherKey,
};
use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};

/// The longest server ID: QUIC v1 allows 20-octet IDs, one is the first octet, four the
/// shortest nonce (§5.3).
pub const MAX_SERVER_ID_LEN: usize = 15;
/// The longest nonce: a one-octet server ID leaves 18 of the 19 octets (§5.3).
pub const MAX_NONCE_LEN: usize = 18;
/// The shortest nonce the draft allows (§5.3).
pub const MIN_NONCE_LEN: usize = 4;
/// Server ID and nonce together fit 19 octets, QUIC v1's 20-octet limit less the first octet
/// (§5.3).
const MAX_PLAINTEXT_LEN: usize = 19;
/// AES-128 takes one 16-octet block; when server ID and nonce fill exactly one, a single
/// encryption replaces the four-pass scheme (§5.4.1).
const BLOCK_LEN: usize = 16;
/// The five low bits of the first octet: the length self-description or free bits (§3.3).
const LOW_BITS: u8 = 0x1f;

/// Why a QUIC-LB configuration or server ID was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuicLbError {
    /// Config rotation codepoints are three bits, and `0b111` is reserved for IDs with no
    /// configuration (§3.1).
    #[error("config rotation codepoint {0:#05b} is not 0b000..=0b110")]
    ConfigId(u8),
    /// A server ID must be 1 to 15 octets (§5.3).
    #[error("server ID length {0} is not 1..=15 octets")]
    ServerIdLength(usize),
    /// A nonce must be 4 to 18 octets (§5.3).
    #[error("nonce length {0} is not 4..=18 octets")]
    NonceLength(usize),
    /// Server ID and nonce must fit 19 octets together (§5.3).
    #[error("server ID ({server_id}) and nonce ({nonce}) octets exceed 19")]
    TooLong {
        /// The server ID length asked for.
        server_id: usize,
        /// The nonce length asked for.
        nonce: usize,
    },
    /// The server ID given does not have the configuration's length.
    #[error("server ID of {got} octets for a configuration of {expected}")]
    ServerIdMismatch {
        /// The configuration's server ID length.
        expected: usize,
        /// The length of the server ID given.
        got: usize,
    },
    /// The nonce given does not have the configuration's length.
    #[error("nonce of {got} octets for a configuration of {expected}")]
    NonceMismatch {
        /// The configuration's nonce length.
        expected: usize,
        /// The length of the nonce given.
        got: usize,
    },
}

/// Why a load balancer cannot route a connection ID by its server ID (§4.1). It then falls back
/// to the 4-tuple (§4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unroutable {
    /// The ID has no first octet (a zero-length connection ID).
    #[error("empty connection ID")]
    Empty,
    /// No configuration is active for the ID's codepoint; `0b111` never has one (§3.2).
    #[error("no configuration for codepoint {0:#05b}")]
    UnknownConfig(u8),
    /// The ID is shorter than its configuration's first octet, server ID and nonce.
    #[error("connection ID of {got} octets, its configuration needs {needed}")]
    TooShort {
        /// Octets the configuration needs.
        needed: usize,
        /// Octets the ID has.
        got: usize,
    },
}

/// A config rotation codepoint: the three most significant bits of every QUIC-LB connection ID,
/// which tell a load balancer which configuration to decode it with (§3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfigId(u8);

impl ConfigId {
    /// `0b111`: issued by a server with no configuration; such IDs are always unroutable
    /// (§3.2). [`ConfigId::new`] refuses it.
    pub const UNROUTABLE: Self = Self(0b111);

    /// A codepoint for a configuration: `0b000` to `0b110`.
    pub fn new(codepoint: u8) -> Result<Self, QuicLbError> {
        match codepoint {
            0..=0b110 => Ok(Self(codepoint)),
            _ => Err(QuicLbError::ConfigId(codepoint)),
        }
    }

    /// The codepoint of a connection ID, `None` for an empty one.
    pub fn of(cid: &[u8]) -> Option<Self> {
        cid.first().map(|first| Self(first >> 5))
    }

    /// The three-bit value.
    pub fn value(self) -> u8 {
        self.0
    }

    /// The first octet of an ID with this codepoint and `low` in its five other bits.
    fn first_octet(self, low: u8) -> u8 {
        self.0 << 5 | (low & LOW_BITS)
    }
}

/// The server ID a connection ID carries: which server a load balancer sends it to (§5.1).
/// One to [`MAX_SERVER_ID_LEN`] octets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId {
    bytes: [u8; MAX_SERVER_ID_LEN],
    len: u8,
}

impl ServerId {
    /// A server ID of these octets.
    pub fn new(bytes: &[u8]) -> Result<Self, QuicLbError> {
        if bytes.is_empty() || bytes.len() > MAX_SERVER_ID_LEN {
            return Err(QuicLbError::ServerIdLength(bytes.len()));
        }
        let mut id = Self {
            bytes: [0; MAX_SERVER_ID_LEN],
            len: bytes.len() as u8,
        };
        id.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(id)
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for ServerId {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerId(")?;
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// One QUIC-LB configuration (§5.3): codepoint, server ID and nonce lengths, and an optional
/// AES-128 key. Shared by servers (which encode with it) and load balancers (which decode).
///
/// ```
/// use quay_transport::quic_lb::{ConfigId, QuicLbConfig, ServerId};
///
/// let config = QuicLbConfig::encrypted(ConfigId::new(1)?, 3, 5, [0x42; 16])?;
/// let server = ServerId::new(&[0x0a, 0x0b, 0x0c])?;
/// let cid = config.encode(&server, &[0x01, 0x02, 0x03, 0x04, 0x05])?;
/// assert_eq!(cid.len(), 9);
/// assert_eq!(config.server_id(&cid), Ok(server));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct QuicLbConfig {
    id: ConfigId,
    server_id_len: u8,
    nonce_len: u8,
    cipher: Option<Arc<Aes>>,
}

impl QuicLbConfig {
    /// A configuration whose server IDs are readable by anyone on the path (§5.3 warns that
    /// this links a migrated connection's addresses).
    pub fn plaintext(
        id: ConfigId,
        server_id_len: usize,
        nonce_len: usize,
    ) -> Result<Self, QuicLbError> {
        Self::with_cipher(id, server_id_len, nonce_len, None)
    }

    /// A configuration whose server ID and nonce are encrypted with this AES-128 key: one
    /// block when they add up to 16 octets (§5.4.1), the four-pass scheme otherwise (§5.4.2).
    pub fn encrypted(
        id: ConfigId,
        server_id_len: usize,
        nonce_len: usize,
        key: [u8; 16],
    ) -> Result<Self, QuicLbError> {
        Self::with_cipher(id, server_id_len, nonce_len, Some(Arc::new(Aes::new(&key))))
    }

    fn with_cipher(
        id: ConfigId,
        server_id_len: usize,
        nonce_len: usize,
        cipher: Option<Arc<Aes>>,
    ) -> Result<Self, QuicLbError> {
        if !(1..=MAX_SERVER_ID_LEN).contains(&server_id_len) {
            return Err(QuicLbError::ServerIdLength(server_id_len));
        }
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce_len) {
            return Err(QuicLbError::NonceLength(nonce_len));
        }
        if server_id_len + nonce_len > MAX_PLAINTEXT_LEN {
            return Err(QuicLbError::TooLong {
                server_id: server_id_len,
                nonce: nonce_len,
            });
        }
        // Both lengths are at most 18 (checked above), so they fit a u8.
        Ok(Self {
            id,
            server_id_len: server_id_len as u8,
            nonce_len: nonce_len as u8,
            cipher,
        })
    }

    /// The config rotation codepoint.
    pub fn id(&self) -> ConfigId {
        self.id
    }

    /// Octets of server ID.
    pub fn server_id_len(&self) -> usize {
        usize::from(self.server_id_len)
    }

    /// Octets of nonce.
    pub fn nonce_len(&self) -> usize {
        usize::from(self.nonce_len)
    }

    /// Octets of every connection ID: the first octet, server ID and nonce.
    pub fn cid_len(&self) -> usize {
        1 + self.plaintext_len()
    }

    /// Whether IDs are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    fn plaintext_len(&self) -> usize {
        self.server_id_len() + self.nonce_len()
    }

    /// Octets that differ between any two configurations: codepoint, lengths and key. Keys
    /// derived for one configuration mix them in (§9.5 asks for a stateless-reset key per
    /// configuration).
    pub(crate) fn fingerprint(&self) -> Vec<u8> {
        let mut fingerprint = vec![self.id.value(), self.server_id_len, self.nonce_len];
        if let Some(aes) = &self.cipher {
            fingerprint.extend_from_slice(&aes.key);
        }
        fingerprint
    }

    /// The connection ID for `server_id` with this `nonce`, its first octet holding the
    /// codepoint and the ID's length less one (the length self-description, §3.3).
    ///
    /// Servers should not pick nonces by hand: [`QuicLbGenerator`] draws them as §9.6 asks.
    /// This is for tests and tools.
    pub fn encode(&self, server_id: &ServerId, nonce: &[u8]) -> Result<ConnectionId, QuicLbError> {
        self.check_server_id(server_id)?;
        if nonce.len() != self.nonce_len() {
            return Err(QuicLbError::NonceMismatch {
                expected: self.nonce_len(),
                got: nonce.len(),
            });
        }
        Ok(self.encode_unchecked(server_id, nonce, self.length_bits()))
    }

    /// The five low bits that self-describe the ID's length (§3.3): octets after the first.
    fn length_bits(&self) -> u8 {
        // At most 19 (checked in `with_cipher`), so it fits five bits.
        self.plaintext_len() as u8
    }

    fn check_server_id(&self, server_id: &ServerId) -> Result<(), QuicLbError> {
        match server_id.as_bytes().len() {
            len if len == self.server_id_len() => Ok(()),
            got => Err(QuicLbError::ServerIdMismatch {
                expected: self.server_id_len(),
                got,
            }),
        }
    }

    /// Encodes with lengths already checked against this configuration.
    fn encode_unchecked(&self, server_id: &ServerId, nonce: &[u8], low_bits: u8) -> ConnectionId {
        let mut cid = [0; 1 + MAX_PLAINTEXT_LEN];
        let len = self.plaintext_len();
        // §5.2: first octet, then server ID, then nonce.
        cid[0] = self.id.first_octet(low_bits);
        let (sid, rest) = cid[1..=len].split_at_mut(self.server_id_len());
        sid.copy_from_slice(server_id.as_bytes());
        rest.copy_from_slice(nonce);
        if let Some(aes) = &self.cipher {
            aes.encrypt(&mut cid[1..=len]);
        }
        ConnectionId::new(&cid[..=len])
    }

    /// The server ID in `cid`, as a load balancer reads it (§5.5): the octets after the first,
    /// decrypted when the configuration has a key.
    ///
    /// `cid` may run past the ID (a short header's bytes after its first octet, whose
    /// connection ID length a load balancer does not know): only the first
    /// [`QuicLbConfig::cid_len`] octets are read. The codepoint is not checked here; a load
    /// balancer with several configurations picks one with [`QuicLbDecoder`].
    pub fn server_id(&self, cid: &[u8]) -> Result<ServerId, Unroutable> {
        let len = self.plaintext_len();
        let Some(block) = cid.get(1..=len) else {
            return Err(Unroutable::TooShort {
                needed: self.cid_len(),
                got: cid.len(),
            });
        };
        let mut plaintext = [0; MAX_PLAINTEXT_LEN];
        plaintext[..len].copy_from_slice(block);
        if let Some(aes) = &self.cipher {
            aes.decrypt_server_id(&mut plaintext[..len], self.server_id_len());
        }
        Ok(ServerId::new(&plaintext[..self.server_id_len()])
            .expect("server_id_len was checked to be 1..=15 when the configuration was made"))
    }
}

impl fmt::Debug for QuicLbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("QuicLbConfig")
            .field("id", &self.id)
            .field("server_id_len", &self.server_id_len)
            .field("nonce_len", &self.nonce_len)
            .field("encrypted", &self.is_encrypted())
            .finish()
    }
}

/// What a load balancer holds: the configurations active at each codepoint, to find the server
/// of any connection ID (§4.2, §5.5).
///
/// ```
/// use quay_transport::quic_lb::{ConfigId, QuicLbConfig, QuicLbDecoder, ServerId, Unroutable};
///
/// let config = QuicLbConfig::plaintext(ConfigId::new(0)?, 2, 4)?;
/// let decoder = QuicLbDecoder::new([config.clone()]);
/// let server = ServerId::new(&[0x12, 0x34])?;
/// let cid = config.encode(&server, &[0xaa, 0xbb, 0xcc, 0xdd])?;
/// assert_eq!(decoder.decode(&cid), Ok(server));
/// assert_eq!(decoder.decode(&[0xe7; 8]), Err(Unroutable::UnknownConfig(0b111)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct QuicLbDecoder {
    configs: [Option<QuicLbConfig>; 7],
}

impl QuicLbDecoder {
    /// A decoder for these configurations; a later one replaces an earlier one of the same
    /// codepoint.
    pub fn new(configs: impl IntoIterator<Item = QuicLbConfig>) -> Self {
        let mut decoder = Self::default();
        for config in configs {
            let slot = usize::from(config.id.value());
            decoder.configs[slot] = Some(config);
        }
        decoder
    }

    /// The server ID of `cid` (a destination connection ID, or a short header's bytes after
    /// its first octet), or why it is unroutable (§4.1). Whether the server ID belongs to an
    /// active server is for the caller's server table to say.
    pub fn decode(&self, cid: &[u8]) -> Result<ServerId, Unroutable> {
        let codepoint = ConfigId::of(cid).ok_or(Unroutable::Empty)?.value();
        // `0b111` is index 7, past the array: never a configuration (§3.2).
        let config = self
            .configs
            .get(usize::from(codepoint))
            .and_then(Option::as_ref)
            .ok_or(Unroutable::UnknownConfig(codepoint))?;
        config.server_id(cid)
    }
}

/// A quinn [`ConnectionIdGenerator`] that issues QUIC-LB connection IDs for one server.
///
/// Set it with [`quinn::EndpointConfig::cid_generator`], one generator per endpoint (each
/// starts its nonce counter afresh), or let [`crate::ServerBuilder::quic_lb`] do it. The first
/// octet's low bits self-describe the length (§3.3), unless the endpoint is one worker of a
/// [`crate::workers::WorkerGroup`], where they carry the worker (see there).
///
/// ```
/// use quay_transport::quic_lb::{ConfigId, QuicLbConfig, QuicLbGenerator, ServerId};
/// use quay_transport::quinn;
///
/// let config = QuicLbConfig::encrypted(ConfigId::new(0)?, 2, 6, [0x42; 16])?;
/// let server = ServerId::new(&[0x00, 0x07])?;
/// QuicLbGenerator::new(config.clone(), server)?; // checks the server ID's length
/// let mut endpoint = quinn::EndpointConfig::default();
/// endpoint.cid_generator(move || {
///     Box::new(QuicLbGenerator::new(config.clone(), server).expect("checked above"))
/// });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct QuicLbGenerator {
    config: QuicLbConfig,
    server_id: ServerId,
    nonces: Nonces,
    low_bits: LowBits,
    lifetime: Option<Duration>,
}

impl QuicLbGenerator {
    /// A generator for `server_id`, which must have the configuration's server ID length.
    pub fn new(config: QuicLbConfig, server_id: ServerId) -> Result<Self, QuicLbError> {
        config.check_server_id(&server_id)?;
        Ok(Self::build(config, server_id, LowBits::Length))
    }

    /// A generator for a server ID whose length was checked against the configuration before
    /// (a mismatch gives IDs that decode to another server ID). With a `worker`, IDs carry it
    /// in the first octet's low bits, and encrypted nonces are those congruent to the worker
    /// modulo a power of two at least the group's size, so workers sharing a server ID never
    /// share a nonce (§7.2 asks the same of server processes).
    pub(crate) fn unchecked(
        config: QuicLbConfig,
        server_id: ServerId,
        worker: Option<WorkerField>,
    ) -> Self {
        debug_assert!(config.check_server_id(&server_id).is_ok());
        Self::build(
            config,
            server_id,
            worker.map_or(LowBits::Length, LowBits::Worker),
        )
    }

    fn build(config: QuicLbConfig, server_id: ServerId, low_bits: LowBits) -> Self {
        let nonces = match (&config.cipher, low_bits) {
            (None, _) => Nonces::Random,
            (Some(_), LowBits::Length) => Nonces::counter(config.nonce_len(), 0, 1),
            (Some(_), LowBits::Worker(worker)) => {
                let step = worker.nonce_step();
                Nonces::counter(config.nonce_len(), worker.index % step, step)
            }
        };
        Self {
            config,
            server_id,
            nonces,
            low_bits,
            lifetime: None,
        }
    }

    /// Retires every ID after `lifetime`, so the peer moves to fresh ones (quinn's
    /// [`ConnectionIdGenerator::cid_lifetime`]). Default: never.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    fn low_bits(&self) -> u8 {
        match self.low_bits {
            LowBits::Length => self.config.length_bits(),
            LowBits::Worker(worker) => worker.bits(),
        }
    }
}

impl ConnectionIdGenerator for QuicLbGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut nonce = [0; MAX_NONCE_LEN];
        let nonce = &mut nonce[..self.config.nonce_len()];
        if self.nonces.next(nonce) {
            return self
                .config
                .encode_unchecked(&self.server_id, nonce, self.low_bits());
        }
        // §9.6: a server out of nonces issues 4-tuple-routed IDs rather than reuse one.
        let mut cid = [0; 1 + MAX_PLAINTEXT_LEN];
        let cid = &mut cid[..self.config.cid_len()];
        random(cid);
        cid[0] = ConfigId::UNROUTABLE.first_octet(self.low_bits());
        ConnectionId::new(cid)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        // An ID of ours carries our codepoint and server ID, or is unroutable once we have run
        // out of nonces. Anything else is not ours to reset: sharing a reset key with other
        // servers is safe only because their IDs never pass here (RFC 9000 §21.9).
        match ConfigId::of(cid) {
            Some(id) if id == ConfigId::UNROUTABLE && self.nonces.exhausted() => Ok(()),
            Some(id) if id == self.config.id => match self.config.server_id(cid) {
                Ok(server_id) if server_id == self.server_id => Ok(()),
                _ => Err(InvalidCid),
            },
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        self.config.cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

impl fmt::Debug for QuicLbGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicLbGenerator")
            .field("config", &self.config)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

/// One worker of a group sharing a port: which (`index`) of how many (`count`, at most 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WorkerField {
    index: u8,
    count: u8,
}

impl WorkerField {
    /// Worker `index` of `count`; `None` unless `index < count <= 32`.
    pub(crate) fn new(index: usize, count: usize) -> Option<Self> {
        (index < count && count <= 32).then_some(Self {
            index: index as u8,
            count: count as u8,
        })
    }

    /// Workers share the nonce space by residue modulo this power of two (at least `count`),
    /// which survives the counter wrapping round.
    fn nonce_step(self) -> u8 {
        self.count.next_power_of_two()
    }

    /// Five bits that are `index` modulo `count`: `index + count * k` for a random `k` that
    /// keeps them below 32, so the bits say no more than the worker.
    pub(crate) fn bits(self) -> u8 {
        let choices = (LOW_BITS - self.index) / self.count + 1;
        let mut k = [0];
        random(&mut k);
        self.index + self.count * (k[0] % choices)
    }
}

/// What the first octet's five low bits carry (§3.3).
#[derive(Clone, Copy, Debug)]
enum LowBits {
    /// The ID's length less one.
    Length,
    /// A worker of a group sharing a port, for the kernel's packet steering.
    Worker(WorkerField),
}

/// Where nonces come from (§9.6).
enum Nonces {
    /// Fresh random octets each time: plaintext nonces must not be linkable.
    Random,
    /// A big-endian counter from a random start, stepping by `step` so that generators with
    /// different residues never meet; `left` counts the steps before it comes back round
    /// (`None`: more than 2^64, never in practice).
    Counter {
        next: [u8; MAX_NONCE_LEN],
        len: usize,
        step: u8,
        left: Option<u64>,
    },
}

impl Nonces {
    /// A counter over nonces of `len` octets that are `residue` modulo `step`, a power of two
    /// (so that wrapping round keeps the residue).
    fn counter(len: usize, residue: u8, step: u8) -> Self {
        debug_assert!(step.is_power_of_two() && residue < step);
        let mut next = [0; MAX_NONCE_LEN];
        random(&mut next[..len]);
        // A random start in our residue class: the residue in the low bits.
        next[len - 1] = next[len - 1] & !(step - 1) | residue;
        let bits = 8 * len as u32;
        let left = (bits < 64).then(|| (1u64 << bits) / u64::from(step));
        Self::Counter {
            next,
            len,
            step,
            left,
        }
    }

    /// Whether the counter has come back round (never for random nonces).
    fn exhausted(&self) -> bool {
        matches!(self, Self::Counter { left: Some(0), .. })
    }

    /// Writes the next nonce into `out`; false once the counter has come back round.
    fn next(&mut self, out: &mut [u8]) -> bool {
        match self {
            Self::Random => {
                random(out);
                true
            }
            Self::Counter {
                next,
                len,
                step,
                left,
            } => {
                if let Some(left) = left {
                    if *left == 0 {
                        return false;
                    }
                    *left -= 1;
                }
                out.copy_from_slice(&next[..*len]);
                add_be(&mut next[..*len], *step);
                true
            }
        }
    }
}

/// Adds `n` to a big-endian number, wrapping.
fn add_be(number: &mut [u8], n: u8) {
    let mut carry = u16::from(n);
    for byte in number.iter_mut().rev() {
        let sum = u16::from(*byte) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
        if carry == 0 {
            break;
        }
    }
}

/// Fills `out` from the system's random generator.
pub(crate) fn random(out: &mut [u8]) {
    aws_lc_rs::rand::fill(out).expect("the system random generator failed");
}

/// AES-128-ECB with one key, both ways: the block cipher under QUIC-LB's two schemes.
struct Aes {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
    /// The key itself, for [`QuicLbConfig::fingerprint`].
    key: [u8; 16],
}

impl Aes {
    fn new(key: &[u8; 16]) -> Self {
        let unbound =
            || UnboundCipherKey::new(&AES_128, key).expect("a 16-octet key is an AES-128 key");
        Self {
            encrypt: EncryptingKey::ecb(unbound()).expect("AES-128 supports ECB"),
            decrypt: DecryptingKey::ecb(unbound()).expect("AES-128 supports ECB"),
            key: *key,
        }
    }

    fn encrypt_block(&self, block: &mut [u8; BLOCK_LEN]) {
        self.encrypt
            .encrypt(block)
            .expect("ECB encrypts one whole block");
    }

    /// Encrypts server ID and nonce in place (§5.4.1, §5.4.2).
    fn encrypt(&self, plaintext: &mut [u8]) {
        if let Ok(block) = <&mut [u8; BLOCK_LEN]>::try_from(&mut *plaintext) {
            return self.encrypt_block(block);
        }
        let mut halves = Halves::split(plaintext);
        halves.right_pass(self, 1);
        halves.left_pass(self, 2);
        halves.right_pass(self, 3);
        halves.left_pass(self, 4);
        halves.join(plaintext);
    }

    /// Decrypts `ciphertext` in place far enough that its first `server_id_len` octets are the
    /// server ID (§5.5.1, §5.5.2); the rest is left undefined.
    fn decrypt_server_id(&self, ciphertext: &mut [u8], server_id_len: usize) {
        if let Ok(block) = <&mut [u8; BLOCK_LEN]>::try_from(&mut *ciphertext) {
            self.decrypt
                .decrypt(block, DecryptionContext::None)
                .expect("ECB decrypts one whole block");
            return;
        }
        let mut halves = Halves::split(ciphertext);
        halves.left_pass(self, 4);
        halves.right_pass(self, 3);
        halves.left_pass(self, 2);
        // §5.5.2: the fourth pass only matters when the server ID reaches into the right half,
        // i.e. when it is longer than the nonce.
        if server_id_len > ciphertext.len() / 2 {
            halves.right_pass(self, 1);
        }
        halves.join(ciphertext);
    }
}

/// The two halves of the four-pass Feistel network (§5.4.2). With an odd length the middle
/// octet is split: its high nibble ends `left`, its low nibble starts `right`, and the other
/// nibble of each is kept zero.
struct Halves {
    left: [u8; MAX_PLAINTEXT_LEN.div_ceil(2)],
    right: [u8; MAX_PLAINTEXT_LEN.div_ceil(2)],
    /// Total length of server ID and nonce, in octets.
    len: usize,
}

impl Halves {
    fn half_len(&self) -> usize {
        self.len.div_ceil(2)
    }

    fn odd(&self) -> bool {
        self.len % 2 == 1
    }

    /// §5.4.2 step 2.
    fn split(bytes: &[u8]) -> Self {
        let len = bytes.len();
        let half = len.div_ceil(2);
        let mut halves = Self {
            left: [0; MAX_PLAINTEXT_LEN.div_ceil(2)],
            right: [0; MAX_PLAINTEXT_LEN.div_ceil(2)],
            len,
        };
        halves.left[..half].copy_from_slice(&bytes[..half]);
        halves.right[..half].copy_from_slice(&bytes[len - half..]);
        halves.clear_nibbles();
        halves
    }

    /// §5.4.2 step 12: the halves back together, the middle nibbles merged when odd.
    fn join(&self, out: &mut [u8]) {
        let half = self.half_len();
        out[self.len - half..].copy_from_slice(&self.right[..half]);
        out[..half - usize::from(self.odd())]
            .copy_from_slice(&self.left[..half - usize::from(self.odd())]);
        if self.odd() {
            out[half - 1] = self.left[half - 1] | self.right[0];
        }
    }

    /// With an odd length, clears the last nibble of `left` and the first of `right`
    /// (§5.4.2 steps 2, 5, 7, 9 and 11).
    fn clear_nibbles(&mut self) {
        if self.odd() {
            let half = self.half_len();
            self.left[half - 1] &= 0xf0;
            self.right[0] &= 0x0f;
        }
    }

    /// right ^= truncate(AES(expand(len, pass, left)), half_len) (§5.4.2 steps 3-4 and 8).
    fn right_pass(&mut self, aes: &Aes, pass: u8) {
        let mask = self.round(aes, pass, &self.left);
        xor(&mut self.right, &mask);
        self.clear_nibbles();
    }

    /// left ^= truncate(AES(expand(len, pass, right)), half_len) (§5.4.2 steps 6 and 10).
    fn left_pass(&mut self, aes: &Aes, pass: u8) {
        let mask = self.round(aes, pass, &self.right);
        xor(&mut self.left, &mask);
        self.clear_nibbles();
    }

    /// AES of `expand(len, pass, input)`: the half, zeros, then the length and pass number in
    /// the last two octets (§5.4.2 "Useful functions").
    fn round(&self, aes: &Aes, pass: u8, input: &[u8]) -> [u8; BLOCK_LEN] {
        let half = self.half_len();
        let mut block = [0; BLOCK_LEN];
        block[..half].copy_from_slice(&input[..half]);
        // `len` is at most 19 (a checked configuration).
        block[BLOCK_LEN - 2] = self.len as u8;
        block[BLOCK_LEN - 1] = pass;
        aes.encrypt_block(&mut block);
        // Only the first half_len octets are used; zero the rest so `xor` can take them all.
        block[half..].fill(0);
        block
    }
}

fn xor(into: &mut [u8], mask: &[u8]) {
    for (byte, mask) in into.iter_mut().zip(mask) {
        *byte ^= mask;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Encodes with the vector's nonce, checks the exact bytes, and decodes the server ID back.
    #[track_caller]
    fn check_vector(config: &QuicLbConfig, sid: &str, nonce: &str, cid: &str) {
        let server_id = ServerId::new(&hex(sid)).unwrap();
        let encoded = config.encode(&server_id, &hex(nonce)).unwrap();
        assert_eq!(
            &encoded[..],
            &hex(cid)[..],
            "encoding sid {sid} nonce {nonce}"
        );
        assert_eq!(config.server_id(&hex(cid)), Ok(server_id), "decoding {cid}");
        let decoder = QuicLbDecoder::new([config.clone()]);
        assert_eq!(decoder.decode(&hex(cid)), Ok(server_id));
    }

    fn id(codepoint: u8) -> ConfigId {
        ConfigId::new(codepoint).unwrap()
    }

    // Appendix B.1 (Unencrypted CIDs), first row, exactly as printed.
    #[test]
    fn unencrypted_vector() {
        let config = QuicLbConfig::plaintext(id(0), 3, 4).unwrap();
        check_vector(&config, "c4605e", "4504cc4f", "07c4605e4504cc4f");
    }

    // Appendix B.1, second row. As printed it cannot hold: the nonce `3487d970b` has nine hex
    // digits, and the CID `20a350d28b4203487d970b` neither self-describes its length (B says
    // every vector does: 10 octets follow, so 0x2a) nor carries the server ID at octet 1. Read
    // as numbers whose leading zero was dropped, the row is codepoint 1, server ID
    // 350d28b420, nonce 03487d970b, and the CID 2a‖350d28b420‖03487d970b; the CID's last ten
    // digits as printed are that nonce.
    #[test]
    fn unencrypted_vector_with_its_typo_read_as_intended() {
        let config = QuicLbConfig::plaintext(id(1), 5, 5).unwrap();
        check_vector(
            &config,
            "350d28b420",
            "03487d970b",
            "2a350d28b42003487d970b",
        );
    }

    // Appendix B.2 (Encrypted CIDs), key 8f95f09245765f80256934e50c66207f.
    const VECTOR_KEY: [u8; 16] = [
        0x8f, 0x95, 0xf0, 0x92, 0x45, 0x76, 0x5f, 0x80, 0x25, 0x69, 0x34, 0xe5, 0x0c, 0x66, 0x20,
        0x7f,
    ];

    // B.2 row 1: 7 octets, odd, four passes with the split middle octet.
    #[test]
    fn encrypted_vector_four_pass_odd() {
        let config = QuicLbConfig::encrypted(id(0), 3, 4, VECTOR_KEY).unwrap();
        check_vector(&config, "ed793a", "ee080dbf", "0720b1d07b359d3c");
    }

    // B.2 row 2: a 10-octet server ID longer than its 5-octet nonce, so decoding needs the
    // fourth pass (§5.5.2).
    #[test]
    fn encrypted_vector_server_id_longer_than_nonce() {
        let config = QuicLbConfig::encrypted(id(1), 10, 5, VECTOR_KEY).unwrap();
        check_vector(
            &config,
            "ed793a51d49b8f5fab65",
            "ee080dbf48",
            "2fcc381bc74cb4fbad2823a3d1f8fed2",
        );
    }

    // B.2 row 3: 8 + 8 octets, the single-pass special case (§5.4.1).
    #[test]
    fn encrypted_vector_single_pass() {
        let config = QuicLbConfig::encrypted(id(2), 8, 8, VECTOR_KEY).unwrap();
        check_vector(
            &config,
            "ed793a51d49b8f5f",
            "ee080dbf48c0d1e5",
            "504dd2d05a7b0de9b2b9907afb5ecf8cc3",
        );
    }

    // B.2 row 4: 9 + 9 octets, even, four passes. The row's cr_bits column says 3, but its CID
    // starts 0x12: codepoint 0 and length 18. The first octet takes no part in the encryption,
    // so the rest of the CID is checked with both readings.
    #[test]
    fn encrypted_vector_four_pass_even() {
        let cid = "125779c9cc86beb3a3a4a3ca96fce4bfe0cdbc";
        let config = QuicLbConfig::encrypted(id(0), 9, 9, VECTOR_KEY).unwrap();
        check_vector(&config, "ed793a51d49b8f5fab", "ee080dbf48c0d1e55d", cid);
        let config = QuicLbConfig::encrypted(id(3), 9, 9, VECTOR_KEY).unwrap();
        let with_codepoint_3 = format!("72{}", &cid[2..]);
        check_vector(
            &config,
            "ed793a51d49b8f5fab",
            "ee080dbf48c0d1e55d",
            &with_codepoint_3,
        );
    }

    // §5.4.2.4, the worked example: server ID 31441a, nonce 9c69c275, its own key.
    #[test]
    fn four_pass_worked_example() {
        let key = [
            0xfd, 0xf7, 0x26, 0xa9, 0x89, 0x3e, 0xc0, 0x5c, 0x06, 0x32, 0xd3, 0x95, 0x66, 0x80,
            0xba, 0xf0,
        ];
        let config = QuicLbConfig::encrypted(id(0), 3, 4, key).unwrap();
        check_vector(&config, "31441a", "9c69c275", "0767947d29be054a");
    }

    // §3.1, §5.3: the limits on codepoints and lengths, each with its own error.
    #[test]
    fn invalid_configs_are_refused() {
        assert_eq!(ConfigId::new(0b111), Err(QuicLbError::ConfigId(0b111)));
        assert_eq!(ConfigId::new(0x08), Err(QuicLbError::ConfigId(0x08)));
        let plaintext = |sid, nonce| QuicLbConfig::plaintext(id(0), sid, nonce).map(|_| ());
        assert_eq!(plaintext(0, 4), Err(QuicLbError::ServerIdLength(0)));
        assert_eq!(plaintext(16, 4), Err(QuicLbError::ServerIdLength(16)));
        assert_eq!(plaintext(1, 3), Err(QuicLbError::NonceLength(3)));
        assert_eq!(plaintext(1, 19), Err(QuicLbError::NonceLength(19)));
        assert_eq!(
            plaintext(10, 10),
            Err(QuicLbError::TooLong {
                server_id: 10,
                nonce: 10
            })
        );
        assert_eq!(plaintext(15, 4), Ok(()));
        assert_eq!(plaintext(1, 18), Ok(()));
        assert_eq!(ServerId::new(&[]), Err(QuicLbError::ServerIdLength(0)));
        assert_eq!(
            ServerId::new(&[0; 16]),
            Err(QuicLbError::ServerIdLength(16))
        );

        let config = QuicLbConfig::plaintext(id(0), 2, 4).unwrap();
        let short = ServerId::new(&[0x01]).unwrap();
        let mismatch = QuicLbError::ServerIdMismatch {
            expected: 2,
            got: 1,
        };
        assert_eq!(config.encode(&short, &[0; 4]).err(), Some(mismatch.clone()));
        assert_eq!(
            QuicLbGenerator::new(config.clone(), short).err(),
            Some(mismatch)
        );
        let server = ServerId::new(&[0x01, 0x02]).unwrap();
        assert_eq!(
            config.encode(&server, &[0; 5]).err(),
            Some(QuicLbError::NonceMismatch {
                expected: 4,
                got: 5
            })
        );
    }

    // §4.1: the three ways an ID is unroutable to a load balancer.
    #[test]
    fn unroutable_ids() {
        let config = QuicLbConfig::encrypted(id(2), 3, 4, VECTOR_KEY).unwrap();
        let decoder = QuicLbDecoder::new([config]);
        assert_eq!(decoder.decode(&[]), Err(Unroutable::Empty));
        // No configuration at codepoint 0, and 0b111 never has one (§3.2).
        assert_eq!(
            decoder.decode(&hex("0720b1d07b359d3c")),
            Err(Unroutable::UnknownConfig(0))
        );
        assert_eq!(
            decoder.decode(&hex("e7000000000000ff")),
            Err(Unroutable::UnknownConfig(0b111))
        );
        // Codepoint 2 needs 1 + 3 + 4 octets.
        assert_eq!(
            decoder.decode(&hex("47aabbccddeeff")),
            Err(Unroutable::TooShort { needed: 8, got: 7 })
        );
        // Bytes past the ID (a short header's payload) are ignored.
        let server = ServerId::new(&[0x01, 0x02, 0x03]).unwrap();
        let cid = QuicLbConfig::encrypted(id(2), 3, 4, VECTOR_KEY)
            .unwrap()
            .encode(&server, &[0x09; 4])
            .unwrap();
        let mut packet = cid.to_vec();
        packet.extend_from_slice(&[0xff; 30]);
        assert_eq!(decoder.decode(&packet), Ok(server));
    }

    // §9.6: encrypted nonces count from a random start without repeating; a generator whose
    // counter has come round issues unroutable IDs (§3.2) of the same length.
    #[test]
    fn counter_nonces_do_not_repeat_and_run_out_into_unroutable_ids() {
        let mut nonces = Nonces::counter(1, 3, 8);
        let mut seen = Vec::new();
        let mut nonce = [0];
        while nonces.next(&mut nonce) {
            assert_eq!(nonce[0] % 8, 3);
            seen.push(nonce[0]);
            assert!(
                seen.len() <= 32,
                "a one-octet counter of step 8 has 32 values"
            );
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 32);

        let config = QuicLbConfig::encrypted(id(1), 2, 4, VECTOR_KEY).unwrap();
        let server = ServerId::new(&[0x01, 0x02]).unwrap();
        let mut generator = QuicLbGenerator::new(config.clone(), server).unwrap();
        generator.nonces = Nonces::Counter {
            next: [0; MAX_NONCE_LEN],
            len: 4,
            step: 1,
            left: Some(1),
        };
        let unroutable_of_another = ConnectionId::new(&[0xe6, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        assert!(
            generator.validate(&unroutable_of_another).is_err(),
            "a server with nonces left issued no unroutable ID"
        );
        let routable = generator.generate_cid();
        assert_eq!(config.server_id(&routable), Ok(server));
        let unroutable = generator.generate_cid();
        assert_eq!(unroutable.len(), 7);
        assert_eq!(unroutable[0], 0xe6, "codepoint 0b111, length 6");
        assert!(generator.validate(&unroutable).is_ok());
    }

    #[test]
    fn big_endian_arithmetic_wraps() {
        let mut number = [0x00, 0xff, 0xff];
        add_be(&mut number, 1);
        assert_eq!(number, [0x01, 0x00, 0x00]);
        let mut number = [0xff, 0xff];
        add_be(&mut number, 2);
        assert_eq!(number, [0x00, 0x01]);
    }

    #[test]
    fn worker_bits_are_the_worker_modulo_the_group() {
        for count in 1..=32 {
            for index in 0..count {
                let worker = WorkerField::new(index, count).unwrap();
                for _ in 0..8 {
                    let bits = worker.bits();
                    assert!(bits <= LOW_BITS);
                    assert_eq!(usize::from(bits) % count, index);
                }
            }
        }
        assert_eq!(WorkerField::new(2, 2), None);
        assert_eq!(WorkerField::new(0, 33), None);
    }

    fn any_config() -> impl Strategy<Value = (QuicLbConfig, Vec<u8>)> {
        (
            0u8..=6,
            1usize..=MAX_SERVER_ID_LEN,
            MIN_NONCE_LEN..=MAX_NONCE_LEN,
            proptest::option::of(any::<[u8; 16]>()),
        )
            .prop_filter("server ID and nonce fit 19 octets", |(_, sid, nonce, _)| {
                sid + nonce <= MAX_PLAINTEXT_LEN
            })
            .prop_flat_map(|(codepoint, sid_len, nonce_len, key)| {
                let config = match key {
                    Some(key) => QuicLbConfig::encrypted(id(codepoint), sid_len, nonce_len, key),
                    None => QuicLbConfig::plaintext(id(codepoint), sid_len, nonce_len),
                }
                .unwrap();
                (
                    Just(config),
                    proptest::collection::vec(any::<u8>(), sid_len),
                )
            })
    }

    proptest! {
        // §5.5: whatever the configuration, every ID a server's generator issues decodes to
        // that server, and to no other configuration's codepoint.
        #[test]
        fn generated_ids_decode_to_their_server(
            (config, sid) in any_config(),
            worker in proptest::option::of((0usize..32, 1usize..=32)),
        ) {
            let server = ServerId::new(&sid).unwrap();
            let worker = worker.and_then(|(index, count)| WorkerField::new(index % count, count));
            let mut generator = QuicLbGenerator::unchecked(config.clone(), server, worker);
            let decoder = QuicLbDecoder::new([config.clone()]);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..16 {
                let cid = generator.generate_cid();
                prop_assert_eq!(cid.len(), config.cid_len());
                prop_assert_eq!(ConfigId::of(&cid), Some(config.id()));
                prop_assert_eq!(decoder.decode(&cid), Ok(server));
                prop_assert!(generator.validate(&cid).is_ok());
                match worker {
                    Some(worker) => prop_assert_eq!((cid[0] & LOW_BITS) % worker.count, worker.index),
                    None => prop_assert_eq!(usize::from(cid[0] & LOW_BITS), config.cid_len() - 1),
                }
                if config.is_encrypted() {
                    prop_assert!(seen.insert(cid), "an encrypted ID repeated");
                }
            }
        }

        // Decoding any bytes never panics: either a server ID or an `Unroutable`.
        #[test]
        fn decoding_arbitrary_bytes_is_total(
            (config, _sid) in any_config(),
            bytes in proptest::collection::vec(any::<u8>(), 0..=24),
        ) {
            let decoder = QuicLbDecoder::new([config]);
            let _ = decoder.decode(&bytes);
        }
    }
}
