//! QUIC transport settings shared by clients and servers, with defaults for HTTP/3.
//!
//! [`TransportOptions`] is plain data; [`crate::ServerBuilder`] and [`crate::ClientBuilder`]
//! turn it into quinn's configuration and bound endpoints.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use quinn::congestion::{BbrConfig, CubicConfig, NewRenoConfig};
use quinn::udp::UdpSocketState;
use quinn::{Endpoint, EndpointConfig, IdleTimeout, TransportConfig, VarInt};

use crate::EndpointError;

/// The ALPN token of HTTP/3 (RFC 9114 §3.1).
pub const ALPN_H3: &[u8] = b"h3";

/// QUIC settings for an endpoint. Every default is documented on its field.
///
/// ```
/// use std::time::Duration;
/// use quay_transport::{CongestionController, TransportOptions};
///
/// let mut options = TransportOptions::default();
/// options.idle_timeout = Duration::from_secs(60);
/// options.congestion_controller = CongestionController::Bbr;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TransportOptions {
    /// ALPN protocols offered (client) or accepted (server), in order of preference.
    /// Default: `["h3"]`.
    pub alpn_protocols: Vec<Vec<u8>>,
    /// A connection with no traffic for this long is closed. Default: 30 s.
    pub idle_timeout: Duration,
    /// Send a PING after this long without traffic, so idle connections stay open (and NAT
    /// bindings alive). `None` sends none. Default: 10 s, a third of the idle timeout.
    pub keep_alive_interval: Option<Duration>,
    /// Bidirectional streams the peer may have open at once (HTTP/3 requests, WebTransport
    /// bidirectional streams). Default: 256.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once. HTTP/3 needs three (control,
    /// QPACK encoder and decoder); WebTransport uses the rest. Default: 100.
    pub max_concurrent_uni_streams: u32,
    /// Bytes the peer may send on one stream beyond what the application has read.
    /// Default: 6 MiB, enough for about 500 Mbit/s at 100 ms round trip.
    pub stream_receive_window: u32,
    /// Bytes the peer may send on all streams together beyond what was read; this bounds the
    /// memory one connection can make us buffer. Default: 15 MiB.
    pub receive_window: u32,
    /// Bytes we keep buffered for sending on all streams together. Default: 15 MiB.
    pub send_window: u64,
    /// QUIC datagrams (RFC 9221): `Some(n)` accepts them and buffers up to `n` received bytes
    /// that the application has not read yet (older ones are dropped); `None` turns datagrams
    /// off in both directions. HTTP/3 datagrams and WebTransport need them. Default: 1 MiB.
    pub datagram_receive_buffer: Option<usize>,
    /// Bytes of outgoing datagrams buffered before the oldest are dropped. Default: 1 MiB.
    pub datagram_send_buffer: usize,
    /// The congestion controller. Default: [`CongestionController::Cubic`].
    pub congestion_controller: CongestionController,
    /// Kernel receive and send buffer sizes asked for on the endpoint's UDP socket. Linux's
    /// default (208 KiB) overflows at a few Gbit/s and drops packets even on loopback; the
    /// kernel grants at most `net.core.rmem_max` / `wmem_max`, so raise those too on busy
    /// servers. `None` keeps the system's default. Default: 4 MiB.
    pub socket_buffer_size: Option<usize>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        const MIB: u32 = 1024 * 1024;
        Self {
            alpn_protocols: vec![ALPN_H3.to_vec()],
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            max_concurrent_bidi_streams: 256,
            max_concurrent_uni_streams: 100,
            stream_receive_window: 6 * MIB,
            receive_window: 15 * MIB,
            send_window: 15 * u64::from(MIB),
            datagram_receive_buffer: Some(MIB as usize),
            datagram_send_buffer: MIB as usize,
            congestion_controller: CongestionController::Cubic,
            socket_buffer_size: Some(4 * MIB as usize),
        }
    }
}

impl TransportOptions {
    /// Builds quinn's transport configuration from these options.
    pub fn transport_config(&self) -> TransportConfig {
        let mut config = TransportConfig::default();
        // An idle timeout above QUIC's limit (2^62 ms) is treated as "never".
        let idle_timeout = IdleTimeout::try_from(self.idle_timeout).ok();
        config
            .max_idle_timeout(idle_timeout)
            .keep_alive_interval(self.keep_alive_interval)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .datagram_receive_buffer_size(self.datagram_receive_buffer)
            .datagram_send_buffer_size(self.datagram_send_buffer);
        match self.congestion_controller {
            CongestionController::Cubic => {
                config.congestion_controller_factory(Arc::new(CubicConfig::default()))
            }
            CongestionController::Bbr => {
                config.congestion_controller_factory(Arc::new(BbrConfig::default()))
            }
            CongestionController::NewReno => {
                config.congestion_controller_factory(Arc::new(NewRenoConfig::default()))
            }
        };
        config
    }
}

/// Binds a UDP socket at `addr` and an endpoint on it, with the socket buffers of `options`.
/// `server` makes it accept connections. Must be called inside a tokio runtime.
pub(crate) fn bind_endpoint(
    addr: SocketAddr,
    options: &TransportOptions,
    config: EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> Result<Endpoint, EndpointError> {
    let bind_error = |source| EndpointError::Bind { addr, source };
    let socket = udp_socket(addr, options.socket_buffer_size).map_err(bind_error)?;
    let runtime = quinn::default_runtime().ok_or_else(|| {
        bind_error(io::Error::other(
            "no async runtime found (call inside tokio)",
        ))
    })?;
    Endpoint::new(config, server, socket, runtime).map_err(bind_error)
}

/// A UDP socket bound at `addr` whose kernel buffers were asked to be `buffer_size` bytes.
fn udp_socket(addr: SocketAddr, buffer_size: Option<usize>) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    set_buffer_sizes(&socket, buffer_size)?;
    Ok(socket)
}

/// Asks the kernel for receive and send buffers of `size` bytes on `socket`.
pub(crate) fn set_buffer_sizes(socket: &UdpSocket, size: Option<usize>) -> io::Result<()> {
    if let Some(size) = size {
        let state = UdpSocketState::new(socket.into())?;
        // Best effort: the kernel may grant less, which is not worth failing over.
        let _ = state.set_recv_buffer_size(socket.into(), size);
        let _ = state.set_send_buffer_size(socket.into(), size);
    }
    Ok(())
}

/// A congestion controller from quinn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CongestionController {
    /// CUBIC (RFC 9438), the default of Linux TCP and of most QUIC stacks.
    #[default]
    Cubic,
    /// BBR (quinn's experimental version): higher throughput on lossy long paths.
    Bbr,
    /// NewReno (RFC 9002 §7), the simplest.
    NewReno,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn socket_buffers_are_raised_up_to_the_kernel_limit() {
        const WANTED: usize = 1024 * 1024;
        let limit = |name: &str| -> usize {
            let path = format!("/proc/sys/net/core/{name}");
            std::fs::read_to_string(&path)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let socket = udp_socket("127.0.0.1:0".parse().unwrap(), Some(WANTED)).unwrap();
        let state = UdpSocketState::new((&socket).into()).unwrap();
        // Linux grants min(asked, limit) and reports twice that (its bookkeeping share).
        assert_eq!(
            state.recv_buffer_size((&socket).into()).unwrap(),
            2 * WANTED.min(limit("rmem_max"))
        );
        assert_eq!(
            state.send_buffer_size((&socket).into()).unwrap(),
            2 * WANTED.min(limit("wmem_max"))
        );
    }

    #[test]
    fn transport_config_accepts_every_controller() {
        for controller in [
            CongestionController::Cubic,
            CongestionController::Bbr,
            CongestionController::NewReno,
        ] {
            let options = TransportOptions {
                congestion_controller: controller,
                idle_timeout: Duration::MAX,
                ..TransportOptions::default()
            };
            // An idle timeout beyond QUIC's range means "no timeout", not a panic.
            let _ = options.transport_config();
        }
    }
}
