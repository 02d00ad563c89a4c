//! The kernel half of worker steering: a classic BPF program, attached to a group of
//! SO_REUSEPORT UDP sockets, that hands each QUIC packet to the socket of the worker named in its
//! destination connection ID. The only `unsafe` code of the crate is here: one `setsockopt`.
//!
//! The worker lives in the five low bits of the connection ID's first octet (see
//! [`crate::server::WorkerGroup`]); the program returns those bits modulo the group's size, and
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

use std::io;
use std::os::fd::AsRawFd;

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

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use socket2::{Domain, Protocol, Socket, Type};

    use super::*;

    /// `workers` reuseport sockets on one loopback port, the steering program attached.
    fn group(workers: usize) -> Vec<UdpSocket> {
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
        attach_steering(&sockets[0], workers as u32).unwrap();
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
        for (index, socket) in group.iter().enumerate() {
            socket.set_nonblocking(true).unwrap();
            let got = socket.recv(&mut buf);
            socket.set_nonblocking(false).unwrap();
            assert!(got.is_err(), "socket {index} got a datagram too");
        }
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
        // RFC 9000 §17.2: 0b11xxxxxx, version 1, DCID length and DCID, SCID length and SCID.
        let mut packet = vec![0xc0, 0x00, 0x00, 0x00, 0x01, dcid.len() as u8];
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
}
