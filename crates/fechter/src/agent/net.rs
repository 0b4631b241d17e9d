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

/// A non-blocking read's result as [`Datagram::try_recv_from`] gives it:
/// `None` for "nothing queued" (`WouldBlock`).
pub fn queued<T>(r: io::Result<T>) -> Option<io::Result<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        r => Some(r),
    }
}

/// A UDP socket that the kernel never wakes this process for: it is not
/// registered with the runtime's poller, only read (non-blocking) on the
/// agent's ticks. A socket in the poller wakes the process for every
/// datagram, whether anyone is waiting or not; on the machines measured, a
/// wake-up costs more than reading the datagram.
#[derive(Debug)]
pub struct TickedUdp(std::net::UdpSocket);

/// The send buffer a [`TickedUdp`] asks for: a table of thousands of
/// addresses goes out in one burst of parts to every member, and a full
/// buffer drops datagrams instead of waiting.
pub const SEND_BUFFER: usize = 4 << 20;

impl TickedUdp {
    pub fn bind(addr: SocketAddr) -> io::Result<TickedUdp> {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        set_send_buffer(&s, SEND_BUFFER);
        Ok(TickedUdp(s))
    }

    /// The send buffer the kernel granted, in bytes.
    pub fn send_buffer(&self) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads an int option of a socket this value owns.
        let rc = unsafe {
            libc::getsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&raw mut v).cast(),
                &raw mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(v as usize)
    }
}

/// Best effort: past the system's limit with CAP_NET_ADMIN (which the agent
/// has), up to it otherwise. A smaller buffer only makes bursts lossier.
fn set_send_buffer(s: &std::net::UdpSocket, bytes: usize) {
    use std::os::fd::AsRawFd;
    let v = bytes as libc::c_int;
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: sets an int option of a socket the caller owns.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

impl Datagram for TickedUdp {
    /// Non-blocking: a full send buffer fails the send (the datagram is
    /// lost, as on a congested network; anti-entropy repairs state).
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.send_to(buf, to)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        queued(self.0.recv_from(buf))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Root (as CI runs) gets the whole send buffer asked for (the kernel
    /// reports twice the value set); anyone else at least the default.
    #[test]
    fn a_ticked_socket_gets_a_large_send_buffer_and_never_waits_to_read() {
        let s = TickedUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let got = s.send_buffer().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(got >= SEND_BUFFER, "send buffer {got}");
        } else {
            eprintln!("not root: send buffer {got} (SO_SNDBUFFORCE needs CAP_NET_ADMIN)");
        }
        let mut buf = [0u8; 64];
        assert!(s.try_recv_from(&mut buf).is_none(), "nothing queued yet");
        let to = s.local_addr().unwrap();
        let sent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sent.send_to(b"hello", to).unwrap();
        // Loopback delivery is synchronous: queued when send_to returns.
        let (n, from) = s.try_recv_from(&mut buf).expect("queued").unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"hello"[..], sent.local_addr().unwrap())
        );
    }
}
