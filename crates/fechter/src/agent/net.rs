//! The agent's view of a datagram socket, so that the same loop runs on a
//! real UDP socket and on turmoil's simulated one.

use std::io;
use std::net::SocketAddr;

/// A bound datagram socket. The agent reads it only on its ticks (see
/// `agent::run`), so reading never waits: what arrived meanwhile is queued.
pub trait Datagram {
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>>;
    /// The next datagram already queued, or `None` when there is none.
    /// Never waits.
    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A UDP socket that the kernel never wakes this process for: it is not
/// registered with the runtime's poller, only read (non-blocking) on the
/// agent's ticks. A socket in the poller wakes the process for every
/// datagram, whether anyone is waiting or not; on the machines measured, a
/// wake-up costs more than reading the datagram.
#[derive(Debug)]
pub struct TickedUdp(std::net::UdpSocket);

impl TickedUdp {
    pub fn bind(addr: SocketAddr) -> io::Result<TickedUdp> {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        Ok(TickedUdp(s))
    }
}

impl Datagram for TickedUdp {
    /// Non-blocking: a full send buffer fails the send (the datagram is
    /// lost, as on a congested network; anti-entropy repairs state).
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, to)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        match self.0.recv_from(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The wall clock, read by the shell only (the engine gets it as a number).
pub trait WallClock {
    /// Milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}
