//! The kernel half of worker steering, and the only `unsafe` code of the crate: the system calls
//! that attach a steering program to a group of SO_REUSEPORT UDP sockets.
//!
//! Two programs, one per way of running:
//! - **one process** ([`attach_steering`]): a classic BPF program (`SO_ATTACH_REUSEPORT_CBPF`)
//!   that returns a socket *index* in the group;
//! - **processes that hand the port over** ([`steering_program`]): an eBPF program of type
//!   `BPF_PROG_TYPE_SK_REUSEPORT` (`SO_ATTACH_REUSEPORT_EBPF`) that picks a socket by *slot* in a
//!   `BPF_MAP_TYPE_REUSEPORT_SOCKARRAY` map, which survives other processes joining and leaving
//!   the group.
//!
//! ## Classic BPF
//!
//! The worker lives in the five low bits of the connection ID's first octet (see
//! [`crate::workers::WorkerGroup`]); the program returns those bits modulo the group's size, and
//! the kernel delivers the packet to the socket at that index (sockets are numbered in the order
//! they joined the group). The same function is applied to every packet:
//! - short header (RFC 9000 §17.3): the connection ID starts at octet 1;
//! - long header (RFC 9000 §17.2): the connection ID length is at octet 5 and the ID at octet 6.
//!   A client's first Initial carries an ID the client chose at random, whose bits then pick a
//!   worker at random; later packets carry the ID that worker issued, which names it;
//! - a long header with an empty connection ID gets an index past the group, and the kernel
//!   falls back to its hash of the 4-tuple.
//!
//! A datagram too short for the octet read makes classic BPF return 0: worker 0 gets it and
//! drops it as quinn would anywhere.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::{
    BPF_A, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JA, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD,
    BPF_MOD, BPF_RET, sock_filter, sock_fprog,
};

/// The first octet's bit that marks a long header (RFC 9000 §17.2).
const LONG_HEADER: u32 = 0x80;
/// Where a long header's destination connection ID length sits: after the first octet and the
/// 4-octet version (RFC 9000 §17.2).
const LONG_DCID_LEN_OFFSET: u32 = 5;
/// Where a short header's destination connection ID starts (RFC 9000 §17.3).
const SHORT_DCID_OFFSET: u32 = 1;
/// The five low bits of a connection ID's first octet, which carry the worker.
const WORKER_BITS: u32 = 0x1f;
/// An index past any group: the kernel then picks a socket by its 4-tuple hash.
const KERNEL_HASH: u32 = u32::MAX;

/// The steering program for a group of `workers` sockets (1 to 32).
pub(crate) fn program(workers: u32) -> [sock_filter; 11] {
    let op = |code: u32| code as u16;
    let stmt = |code: u32, k: u32| sock_filter {
        code: op(code),
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: op(code),
        jt,
        jf,
        k,
    };
    // Jumps are relative to the next instruction.
    [
        /* 0 */ stmt(BPF_LD | BPF_B | BPF_ABS, 0),
        /* 1 */
        jump(BPF_JMP | BPF_JSET | BPF_K, LONG_HEADER, 2, 0), // long: 4, short: 2
        /* 2 */ stmt(BPF_LD | BPF_B | BPF_ABS, SHORT_DCID_OFFSET),
        /* 3 */ stmt(BPF_JMP | BPF_JA, 3), // to 7
        /* 4 */ stmt(BPF_LD | BPF_B | BPF_ABS, LONG_DCID_LEN_OFFSET),
        /* 5 */ jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 4, 0), // empty: 10, else 6
        /* 6 */ stmt(BPF_LD | BPF_B | BPF_ABS, LONG_DCID_LEN_OFFSET + 1),
        /* 7 */ stmt(BPF_ALU | BPF_AND | BPF_K, WORKER_BITS),
        /* 8 */ stmt(BPF_ALU | BPF_MOD | BPF_K, workers),
        /* 9 */ stmt(BPF_RET | BPF_A, 0),
        /* 10 */ stmt(BPF_RET | BPF_K, KERNEL_HASH),
    ]
}

/// Attaches the steering program for `workers` sockets to the reuseport group of `socket`
/// (any member; the program applies to the whole group).
pub(crate) fn attach_steering(socket: &impl AsRawFd, workers: u32) -> io::Result<()> {
    let mut filter = program(workers);
    let prog = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, a live array of `prog.len` instructions, for the whole
    // call (the kernel copies the program before returning); the option length is the size of
    // the `sock_fprog` passed; the descriptor is borrowed from an open socket.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const prog).cast(),
            size_of::<sock_fprog>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ## eBPF steering across processes
//
// What follows is the raw material of `crate::workers::Handover`: maps, a program and the
// system calls that make and join them. The policy (which slots a process takes, when it takes
// over) lives in `workers`.

/// Slots of the socket map: one per value of the five worker bits of a connection ID.
pub(crate) const SLOTS: u32 = 32;
/// Slots of one generation: the worker bits' high bit names the generation, the other four the
/// worker within it.
pub(crate) const GENERATION_SLOTS: u32 = 16;

// bpf(2) commands, map and program types (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_REUSEPORT_SOCKARRAY: u32 = 20;
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
const BPF_SK_REUSEPORT_SELECT: u32 = 39;
/// Map update flag: fail if the key already has a value.
pub(crate) const BPF_NOEXIST: u64 = 1;
/// Map update flag: create or replace.
pub(crate) const BPF_ANY: u64 = 0;
/// `SO_ATTACH_REUSEPORT_EBPF` of asm-generic/socket.h, which x86, Arm and RISC-V use (libc
/// names only the CBPF option for them).
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52;
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = libc::SO_ATTACH_REUSEPORT_EBPF;
/// `statfs` type of a BPF file system (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `union bpf_attr` for `BPF_MAP_CREATE`, as far as it is used (the kernel zero-fills the rest).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_MAP_LOOKUP_ELEM` and `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to the expected attach type.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN` and `BPF_OBJ_GET`.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default)]
struct MapInfo {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
}

/// The attribute structs above: plain `repr(C)` data the kernel reads (and, for some commands,
/// writes) in place of `union bpf_attr`.
trait Attr {}
impl Attr for MapCreateAttr {}
impl Attr for MapElemAttr {}
impl Attr for ProgLoadAttr {}
impl Attr for ObjAttr {}
impl Attr for InfoAttr {}

/// bpf(2) with `attr`; returns the call's non-negative result.
///
/// # Safety
///
/// Every pointer in `attr` (the fields the kernel reads as user addresses for `cmd`) must point
/// at memory that is valid, for the length the kernel takes from `attr` or from the object
/// `attr` names, for reads and, where the command writes there, for writes.
unsafe fn sys_bpf<A: Attr>(cmd: libc::c_long, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `repr(C)` struct of `size_of::<A>()`
    // octets, a prefix of `union bpf_attr` for `cmd` (the kernel zero-fills the rest); the
    // caller vouches for the pointers inside it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut A).cast::<libc::c_void>(),
            size_of::<A>() as libc::c_uint,
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A file descriptor returned by bpf(2).
fn owned_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned `fd` as a new descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// A path for the kernel: a NUL-terminated copy of `path`.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL octet"))
}

/// A BPF map with 4-octet keys, as this module uses them.
#[derive(Debug)]
pub(crate) struct Map {
    fd: OwnedFd,
    value_size: usize,
}

impl Map {
    /// The map that holds each worker's socket at its slot. Its values are socket descriptors
    /// on update and socket cookies on lookup (8 octets).
    pub(crate) fn sockets() -> io::Result<Self> {
        Self::create(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 8, SLOTS, b"quay_sockets")
    }

    /// The map of one 4-octet value: which slots take new connections (see
    /// [`config_value`]).
    pub(crate) fn config() -> io::Result<Self> {
        Self::create(BPF_MAP_TYPE_ARRAY, 4, 1, b"quay_steering")
    }

    fn create(map_type: u32, value_size: u32, max_entries: u32, name: &[u8]) -> io::Result<Self> {
        let mut map_name = [0; 16];
        map_name[..name.len()].copy_from_slice(name);
        let mut attr = MapCreateAttr {
            map_type,
            key_size: 4,
            value_size,
            max_entries,
            map_flags: 0,
            inner_map_fd: 0,
            numa_node: 0,
            map_name,
        };
        // SAFETY: the attributes hold no pointers.
        let fd = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }?;
        Ok(Self {
            fd: owned_fd(fd),
            value_size: value_size as usize,
        })
    }

    /// The map pinned at `path`, which must be the kind [`Map::sockets`] (`sockets`) or
    /// [`Map::config`] makes: another map there is refused with `InvalidData`.
    pub(crate) fn open(path: &Path, sockets: bool) -> io::Result<Self> {
        let name = c_path(path)?;
        let mut attr = ObjAttr {
            pathname: name.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        };
        // SAFETY: `pathname` points at `name`, a NUL-terminated string alive for the call.
        let fd = owned_fd(unsafe { sys_bpf(BPF_OBJ_GET, &mut attr) }?);
        let mut info = MapInfo::default();
        let mut attr = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: size_of::<MapInfo>() as u32,
            info: (&raw mut info) as u64,
        };
        // SAFETY: `info` points at `info`, writable for `info_len` octets, alive for the call;
        // the kernel writes at most `info_len` octets.
        unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
        let expected = if sockets {
            (BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 8, SLOTS)
        } else {
            (BPF_MAP_TYPE_ARRAY, 4, 1)
        };
        if (info.map_type, info.value_size, info.max_entries) != expected || info.key_size != 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a map quay made", path.display()),
            ));
        }
        Ok(Self {
            fd,
            value_size: expected.1 as usize,
        })
    }

    /// Pins the map at `path` on a BPF file system, so other processes can open it.
    pub(crate) fn pin(&self, path: &Path) -> io::Result<()> {
        let name = c_path(path)?;
        let mut attr = ObjAttr {
            pathname: name.as_ptr() as u64,
            bpf_fd: self.fd.as_raw_fd() as u32,
            file_flags: 0,
        };
        // SAFETY: `pathname` points at `name`, a NUL-terminated string alive for the call.
        unsafe { sys_bpf(BPF_OBJ_PIN, &mut attr) }?;
        Ok(())
    }

    /// Sets `key` to `value`, which must have the map's value size (`InvalidInput` otherwise).
    pub(crate) fn update(&self, key: u32, value: &[u8], flags: u64) -> io::Result<()> {
        self.check_size(value.len())?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: value.as_ptr() as u64,
            flags,
        };
        // SAFETY: `key` points at a live u32 (the map's key size is 4, checked at creation or
        // opening) and `value` at `value.len()` octets, the map's value size, checked above.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }?;
        Ok(())
    }

    /// Reads `key` into `value` (the map's value size); false if the key has no value.
    pub(crate) fn lookup(&self, key: u32, value: &mut [u8]) -> io::Result<bool> {
        self.check_size(value.len())?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value: value.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `key` points at a live u32 and `value` at `value.len()` writable octets, the
        // map's value size, checked above; both outlive the call.
        match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn check_size(&self, len: usize) -> io::Result<()> {
        if len == self.value_size {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a value of {len} octets for a map of {}", self.value_size),
            ))
        }
    }
}

/// The configuration map's value: new connections go to the `count` slots from `base`.
pub(crate) fn config_value(base: u32, count: u32) -> [u8; 4] {
    (base << 8 | count).to_ne_bytes()
}

/// Reads a configuration value back: `(base, count)`.
pub(crate) fn parse_config_value(value: [u8; 4]) -> (u32, u32) {
    let value = u32::from_ne_bytes(value);
    (value >> 8, value & 0xff)
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// Destination and source registers, four bits each (see [`Asm::push`]).
    regs: u8,
    off: i16,
    imm: i32,
}

/// A loaded eBPF program.
#[derive(Debug)]
pub(crate) struct Program {
    fd: OwnedFd,
}

/// Why a program did not load.
#[derive(Debug)]
pub(crate) struct LoadError {
    /// What bpf(2) said.
    pub(crate) error: io::Error,
    /// The verifier's log, when it said more.
    pub(crate) log: String,
}

impl Program {
    /// Loads `insns` as an SK_REUSEPORT program; on failure, loads again with the verifier's
    /// log to say why.
    pub(crate) fn load_reuseport(insns: &[Insn]) -> Result<Self, LoadError> {
        match Self::load(insns, &mut []) {
            Ok(program) => Ok(program),
            Err(error) => {
                let mut log = vec![0u8; 64 * 1024];
                let _ = Self::load(insns, &mut log);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                Err(LoadError {
                    error,
                    log: String::from_utf8_lossy(&log[..end]).into_owned(),
                })
            }
        }
    }

    fn load(insns: &[Insn], log: &mut [u8]) -> io::Result<Self> {
        // The program calls no GPL-only helper.
        let license = c"MIT OR Apache-2.0";
        let mut prog_name = [0; 16];
        prog_name[..10].copy_from_slice(b"quay_steer");
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_SK_REUSEPORT,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            // No log: a null pointer, as the kernel wants with log level 0.
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name,
            prog_ifindex: 0,
            expected_attach_type: BPF_SK_REUSEPORT_SELECT,
        };
        // SAFETY: `insns` points at `insn_cnt` instructions of `struct bpf_insn`'s layout,
        // `license` at a NUL-terminated string, `log_buf` at `log_size` writable octets (or
        // none with log level 0); all outlive the call, after which the kernel keeps no
        // pointer.
        let fd = unsafe { sys_bpf(BPF_PROG_LOAD, &mut attr) }?;
        Ok(Self { fd: owned_fd(fd) })
    }
}

/// Attaches `program` to the reuseport group of `socket` (any member; it replaces the group's
/// program, classic or eBPF, for every member, whichever process they belong to).
pub(crate) fn attach_program(socket: &impl AsRawFd, program: &Program) -> io::Result<()> {
    let fd: libc::c_int = program.fd.as_raw_fd();
    // SAFETY: the option value is `fd`, a live c_int, and its length is a c_int's; the socket
    // descriptor is borrowed from an open socket. The kernel takes its own reference to the
    // program.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_EBPF,
            (&raw const fd).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `path` is on a BPF file system (bpffs), where maps can be pinned.
pub(crate) fn is_bpf_fs(path: &Path) -> io::Result<bool> {
    let name = c_path(path)?;
    let mut stat = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `name` is a NUL-terminated path and `stat` a writable `struct statfs`, both alive
    // for the call.
    let result = unsafe { libc::statfs(name.as_ptr(), stat.as_mut_ptr()) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // `f_type`'s type differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// The eBPF steering program, over the configuration map `config` and the socket map
/// `sockets`. For each datagram it selects the socket of one slot (or leaves the choice to the
/// kernel's 4-tuple hash when it selects none); the QUIC packet starts after the 8-octet UDP
/// header, where the context's data begins:
/// - a short header (RFC 9000 §17.3), or a Handshake long header (§17.2.4): the slot named by
///   the five low bits of the destination connection ID's first octet. Only a server writes
///   these IDs: it is the worker that owns the connection, in whichever process;
/// - an Initial or 0-RTT long header: the ID is the client's random choice in its first flight
///   and the server's afterwards, so it can name a worker of a process that no longer takes
///   connections. The slot is `base + (low four bits % count)`, from the configuration: a
///   worker of the process taking connections, the one that issued the ID if it did;
/// - when that slot is empty (its worker is gone), or the packet is too short or has an empty
///   ID: `base + (4-tuple hash % count)`;
/// - no process taking connections (`count` 0), or that slot empty too: no selection, and the
///   kernel picks by its hash.
///
/// A draining process's connections that are still in their handshake lose only the client's
/// Initial acknowledgements, which the server stops needing once a Handshake packet arrives.
pub(crate) fn steering_program(config: &Map, sockets: &Map) -> Vec<Insn> {
    use Label::*;
    let config = config.fd.as_raw_fd();
    let sockets = sockets.fd.as_raw_fd();
    let mut asm = Asm::default();
    asm.mov(R6, R1);
    // The kernel's hash of the 4-tuple (`struct sk_reuseport_md`, `hash` at offset 32).
    asm.ldx(W, R9, R6, 32);
    // r7 = the configuration value.
    asm.st_w(R10, -4, 0);
    asm.ld_map(R1, config);
    asm.mov(R2, R10);
    asm.add(R2, -4);
    asm.call(HELPER_MAP_LOOKUP_ELEM);
    asm.jump(JEQ, R0, 0, Pass);
    asm.ldx(W, R7, R0, 0);
    // The first 7 octets of the QUIC packet go to fp-16..fp-10.
    asm.mov(R1, R6);
    asm.mov_imm(R2, 8);
    asm.mov(R3, R10);
    asm.add(R3, -16);
    asm.mov_imm(R4, 7);
    asm.call(HELPER_SKB_LOAD_BYTES);
    asm.jump(JNE, R0, 0, NewByHash);
    asm.ldx(B, R2, R10, -16);
    asm.jump(JSET, R2, 0x80, Long);
    // Short header: the ID's first octet is the packet's second.
    asm.ldx(B, R8, R10, -15);
    asm.and(R8, 0x1f);
    asm.jump(JA, R0, 0, Owned);
    asm.label(Long);
    // Long header: the ID's length at octet 5, its first octet at 6.
    asm.ldx(B, R3, R10, -11);
    asm.jump(JEQ, R3, 0, NewByHash);
    asm.ldx(B, R8, R10, -10);
    asm.and(R2, 0x30);
    asm.jump(JNE, R2, 0x20, NewById);
    asm.and(R8, 0x1f);
    asm.label(Owned);
    asm.select(sockets, R8);
    asm.jump(JEQ, R0, 0, Pass);
    asm.jump(JA, R0, 0, NewByHash);
    asm.label(NewById);
    asm.and(R8, 0x0f);
    asm.mov(R9, R8);
    asm.label(NewByHash);
    // r9 = base + r9 % count.
    asm.mov(R3, R7);
    asm.and(R3, 0xff);
    asm.jump(JEQ, R3, 0, Pass);
    asm.alu_reg(MOD, R9, R3);
    asm.mov(R2, R7);
    asm.alu_imm(RSH, R2, 8);
    asm.alu_reg(ADD, R9, R2);
    asm.select(sockets, R9);
    asm.label(Pass);
    asm.mov_imm(R0, SK_PASS);
    asm.exit();
    asm.finish()
}

// Instruction classes, sizes, sources, operations (include/uapi/linux/bpf_common.h, bpf.h).
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_JMP: u8 = 0x05;
const CLASS_ALU64: u8 = 0x07;
const W: u8 = 0x00;
const B: u8 = 0x10;
const DW: u8 = 0x18;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const ADD: u8 = 0x00;
const AND: u8 = 0x50;
const RSH: u8 = 0x70;
const MOD: u8 = 0x90;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JSET: u8 = 0x40;
const JNE: u8 = 0x50;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
/// `src_reg` of a 64-bit immediate load that names a map by descriptor.
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_SKB_LOAD_BYTES: i32 = 26;
const HELPER_SK_SELECT_REUSEPORT: i32 = 82;
/// The program's verdict that lets the packet through (to the selected socket, if any).
const SK_PASS: i32 = 1;
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;

/// Jump targets of [`steering_program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Long,
    Owned,
    NewById,
    NewByHash,
    Pass,
}

/// A forward-only assembler: jumps name a [`Label`], resolved by [`Asm::finish`].
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<(Label, usize)>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    fn push(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        // `struct bpf_insn` packs the registers in two 4-bit fields, `dst_reg` first: the low
        // nibble on little-endian machines, the high one on big-endian ones.
        let regs = if cfg!(target_endian = "little") {
            dst | src << 4
        } else {
            dst << 4 | src
        };
        self.insns.push(Insn {
            code,
            regs,
            off,
            imm,
        });
    }

    fn mov(&mut self, dst: u8, src: u8) {
        self.alu_reg(MOV, dst, src);
    }

    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.push(CLASS_ALU64 | MOV | SRC_K, dst, 0, 0, imm);
    }

    fn add(&mut self, dst: u8, imm: i32) {
        self.alu_imm(ADD, dst, imm);
    }

    fn and(&mut self, dst: u8, imm: i32) {
        self.alu_imm(AND, dst, imm);
    }

    fn alu_imm(&mut self, op: u8, dst: u8, imm: i32) {
        self.push(CLASS_ALU64 | op | SRC_K, dst, 0, 0, imm);
    }

    fn alu_reg(&mut self, op: u8, dst: u8, src: u8) {
        self.push(CLASS_ALU64 | op | SRC_X, dst, src, 0, 0);
    }

    fn ldx(&mut self, size: u8, dst: u8, src: u8, off: i16) {
        self.push(CLASS_LDX | MODE_MEM | size, dst, src, off, 0);
    }

    fn st_w(&mut self, dst: u8, off: i16, imm: i32) {
        self.push(CLASS_ST | MODE_MEM | W, dst, 0, off, imm);
    }

    fn stx_w(&mut self, dst: u8, off: i16, src: u8) {
        self.push(CLASS_STX | MODE_MEM | W, dst, src, off, 0);
    }

    /// A 64-bit immediate load of map `fd`: two instruction slots.
    fn ld_map(&mut self, dst: u8, fd: RawFd) {
        self.push(CLASS_LD | MODE_IMM | DW, dst, PSEUDO_MAP_FD, 0, fd);
        self.push(0, 0, 0, 0, 0);
    }

    fn call(&mut self, helper: i32) {
        self.push(CLASS_JMP | CALL, 0, 0, 0, helper);
    }

    fn exit(&mut self) {
        self.push(CLASS_JMP | EXIT, 0, 0, 0, 0);
    }

    /// `if reg <op> imm goto label` (`JA`: always).
    fn jump(&mut self, op: u8, reg: u8, imm: i32, label: Label) {
        self.jumps.push((self.insns.len(), label));
        self.push(CLASS_JMP | op | SRC_K, reg, 0, 0, imm);
    }

    /// `r0 = bpf_sk_select_reuseport(ctx = r6, sockets, &slot, 0)`, with `slot` from `reg`.
    fn select(&mut self, sockets: RawFd, reg: u8) {
        self.stx_w(R10, -4, reg);
        self.mov(R1, R6);
        self.ld_map(R2, sockets);
        self.mov(R3, R10);
        self.add(R3, -4);
        self.mov_imm(R4, 0);
        self.call(HELPER_SK_SELECT_REUSEPORT);
    }

    fn label(&mut self, label: Label) {
        self.labels.push((label, self.insns.len()));
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, label) in &self.jumps {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| l == label)
                .map(|(_, target)| *target)
                .expect("every label of the program is placed");
            assert!(target > *at, "jumps go forward");
            self.insns[*at].off = (target - at - 1) as i16;
        }
        self.insns
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use socket2::{Domain, Protocol, Socket, Type};

    use super::*;

    /// `workers` reuseport sockets on one loopback port, the classic steering program attached.
    fn group(workers: usize) -> Vec<UdpSocket> {
        let sockets = bare_group(workers);
        attach_steering(&sockets[0], workers as u32).unwrap();
        sockets
    }

    /// `workers` reuseport sockets on one loopback port, no program attached.
    fn bare_group(workers: usize) -> Vec<UdpSocket> {
        let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let sockets: Vec<UdpSocket> = (0..workers)
            .map(|_| {
                let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
                socket.set_reuse_port(true).unwrap();
                socket.bind(&addr.into()).unwrap();
                let socket = UdpSocket::from(socket);
                addr = socket.local_addr().unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                socket
            })
            .collect();
        sockets
    }

    /// Sends `datagram` to the group and checks that socket `expected` gets it (waiting 5 s at
    /// most: a misrouted datagram never comes) and that the others hold nothing, which would be
    /// an earlier case's datagram gone astray.
    #[track_caller]
    fn assert_received_by(group: &[UdpSocket], datagram: &[u8], expected: usize) {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(datagram, group[0].local_addr().unwrap())
            .unwrap();
        let mut buf = [0; 64];
        let len = group[expected]
            .recv(&mut buf)
            .unwrap_or_else(|error| panic!("socket {expected} got nothing: {error}"));
        assert_eq!(&buf[..len], datagram);
        assert_nothing_else(group);
    }

    /// Checks that no socket of `group` holds a datagram.
    #[track_caller]
    fn assert_nothing_else(group: &[UdpSocket]) {
        let mut buf = [0; 64];
        for (index, socket) in group.iter().enumerate() {
            socket.set_nonblocking(true).unwrap();
            let got = socket.recv(&mut buf);
            socket.set_nonblocking(false).unwrap();
            assert!(got.is_err(), "socket {index} got a datagram too");
        }
    }

    /// Sends `datagram` from a new port to the group and returns which socket got it, checking
    /// that no other did (waiting 5 s at most).
    #[track_caller]
    fn receiver(group: &[UdpSocket], datagram: &[u8]) -> usize {
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender
            .send_to(datagram, group[0].local_addr().unwrap())
            .unwrap();
        let mut buf = [0; 64];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            for (index, socket) in group.iter().enumerate() {
                socket.set_nonblocking(true).unwrap();
                let got = socket.recv(&mut buf);
                socket.set_nonblocking(false).unwrap();
                if let Ok(len) = got {
                    assert_eq!(&buf[..len], datagram);
                    assert_nothing_else(group);
                    return index;
                }
            }
            // Which socket of the group gets the datagram is the point of the test, so each
            // is polled without blocking; bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no socket got the datagram");
    }

    fn short_header(dcid_first_octet: u8) -> Vec<u8> {
        // RFC 9000 §17.3.1: 0b01xxxxxx, then the connection ID, then the packet number.
        vec![
            0x40,
            dcid_first_octet,
            0x11,
            0x22,
            0x33,
            0x44,
            0x55,
            0x66,
            0x77,
            0x01,
        ]
    }

    fn long_header(dcid: &[u8]) -> Vec<u8> {
        typed_long_header(0xc0, dcid)
    }

    /// A long header whose first octet is `first` (0xc0: Initial, 0xd0: 0-RTT, 0xe0:
    /// Handshake, RFC 9000 §17.2).
    fn typed_long_header(first: u8, dcid: &[u8]) -> Vec<u8> {
        // RFC 9000 §17.2: 0b11xxxxxx, version 1, DCID length and DCID, SCID length and SCID.
        let mut packet = vec![first, 0x00, 0x00, 0x00, 0x01, dcid.len() as u8];
        packet.extend_from_slice(dcid);
        packet.extend_from_slice(&[0x04, 0xaa, 0xbb, 0xcc, 0xdd]);
        packet
    }

    #[test]
    fn short_headers_go_to_the_worker_in_their_connection_id() {
        let group = group(3);
        for worker in 0..3u8 {
            // The worker bits, and the same plus a multiple of the group size.
            for bits in [worker, worker + 3, worker + 27] {
                // The high three bits (config rotation) do not matter.
                let first = 0xe0 | bits;
                assert_received_by(&group, &short_header(first), usize::from(worker));
            }
        }
        // Too short to hold a connection ID: classic BPF returns 0 on a read past the end.
        assert_received_by(&group, &[0x40], 0);
    }

    #[test]
    fn long_headers_go_by_their_connection_id() {
        let group = group(4);
        for first in [0x00, 0x01, 0x06, 0x1f, 0x2b, 0xf3] {
            let dcid = [first, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde];
            let expected = usize::from(first & 0x1f) % 4;
            assert_received_by(&group, &long_header(&dcid), expected);
        }
    }

    #[test]
    fn a_long_header_without_connection_id_falls_back_to_the_kernel() {
        // The program's index is past the group; the kernel then picks by its hash, here the
        // only socket, rather than dropping the datagram.
        let group = group(1);
        assert_received_by(&group, &long_header(&[]), 0);
    }

    /// Four sockets in slots 0 and 1 (an old generation) and 16 and 17 (the new one, taking new
    /// connections), the eBPF program attached, and the two maps.
    fn slotted_group() -> (Vec<UdpSocket>, Map, Map) {
        let config = Map::config().unwrap();
        let sockets = Map::sockets().unwrap();
        let group = bare_group(4);
        for (socket, slot) in group.iter().zip([0, 1, 16, 17]) {
            let fd = socket.as_raw_fd() as u64;
            sockets
                .update(slot, &fd.to_ne_bytes(), BPF_NOEXIST)
                .unwrap();
        }
        config.update(0, &config_value(16, 2), BPF_ANY).unwrap();
        let program = Program::load_reuseport(&steering_program(&config, &sockets))
            .unwrap_or_else(|e| panic!("the program does not load: {}\n{}", e.error, e.log));
        attach_program(&group[0], &program).unwrap();
        (group, config, sockets)
    }

    #[test]
    fn ebpf_steers_owned_packets_by_slot() {
        let (group, _config, _sockets) = slotted_group();
        for (bits, socket) in [(0x00, 0), (0x01, 1), (0x10, 2), (0x11, 3)] {
            // The config rotation bits do not matter.
            assert_received_by(&group, &short_header(0xe0 | bits), socket);
            assert_received_by(&group, &short_header(bits), socket);
            // Handshake packets carry the server's ID: they reach the old generation too.
            let dcid = [0x20 | bits, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde];
            assert_received_by(&group, &typed_long_header(0xe0, &dcid), socket);
        }
    }

    #[test]
    fn ebpf_sends_new_connections_to_the_accepting_slots() {
        let (group, config, _sockets) = slotted_group();
        // Initial and 0-RTT: base 16 + (low four bits % 2), whatever the generation bit says.
        for (bits, socket) in [(0x00, 2), (0x01, 3), (0x10, 2), (0x13, 3), (0x0e, 2)] {
            let dcid = [0x40 | bits, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde];
            assert_received_by(&group, &long_header(&dcid), socket);
            assert_received_by(&group, &typed_long_header(0xd0, &dcid), socket);
        }
        // Owned, but by an empty slot; no ID; too short: by the 4-tuple, to a new socket.
        for datagram in [short_header(0x05), long_header(&[]), vec![0x40, 0x01]] {
            for _ in 0..8 {
                let socket = receiver(&group, &datagram);
                assert!(socket >= 2, "{datagram:02x?} went to socket {socket}");
            }
        }
        // The other generation takes over: new connections go to slots 0 and 1.
        config.update(0, &config_value(0, 2), BPF_ANY).unwrap();
        assert_received_by(&group, &long_header(&[0x11, 0x22]), 1);
        assert_received_by(&group, &long_header(&[0x10, 0x22]), 0);
        // Nobody takes connections: the kernel picks by its hash, among all four.
        config.update(0, &config_value(0, 0), BPF_ANY).unwrap();
        receiver(&group, &long_header(&[0x11, 0x22]));
    }

    #[test]
    fn sockets_leave_their_slot_when_closed() {
        let (mut group, _config, sockets) = slotted_group();
        let mut cookie = [0; 8];
        assert!(sockets.lookup(1, &mut cookie).unwrap());
        assert!(!sockets.lookup(2, &mut cookie).unwrap());
        drop(group.remove(1));
        assert!(!sockets.lookup(1, &mut cookie).unwrap());
        // A slot can hold one socket, and a socket one slot.
        let fd = group[0].as_raw_fd() as u64;
        let busy = sockets
            .update(0, &fd.to_ne_bytes(), BPF_NOEXIST)
            .unwrap_err();
        assert_eq!(busy.raw_os_error(), Some(libc::EEXIST));
        let error = sockets.update(0, &[0; 4], BPF_ANY).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_program_the_verifier_refuses_comes_with_its_log() {
        // `exit` with r0 never written.
        let mut asm = Asm::default();
        asm.exit();
        let error = Program::load_reuseport(&asm.finish()).unwrap_err();
        assert_eq!(error.error.raw_os_error(), Some(libc::EACCES));
        assert!(error.log.contains("R0 !read_ok"), "{}", error.log);
    }

    #[test]
    fn only_bpf_file_systems_hold_pins() {
        assert!(!is_bpf_fs(Path::new("/")).unwrap());
        let error = is_bpf_fs(Path::new("/no/such/dir")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
