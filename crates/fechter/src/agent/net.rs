//! The agent's view of a datagram socket, so that the same loop runs on a
//! real UDP socket and on turmoil's simulated one.

pub mod inbox;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

pub use inbox::{DROPS as INBOX_DROPS, RECEIVE_BUFFER};

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
///
/// Reading goes through an [`inbox::Inbox`]: each read of an empty inbox
/// drains the socket whole, drops junk before any copy or decryption,
/// and puts the datagrams of addresses this node sends to (its members)
/// before everyone else's, bounded per source; under a flood a reader
/// thread drains the socket between ticks (see [`inbox`]).
#[derive(Debug)]
pub struct TickedUdp {
    shared: Arc<inbox::Shared>,
    batch: Mutex<inbox::Batch>,
    reader: Option<JoinHandle<()>>,
}

/// The send buffer a [`TickedUdp`] asks for: a table of thousands of
/// addresses goes out in one burst of parts to every member, and a full
/// buffer drops datagrams instead of waiting.
pub const SEND_BUFFER: usize = 4 << 20;

impl TickedUdp {
    pub fn bind(addr: SocketAddr) -> io::Result<TickedUdp> {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        set_buffer(&s, [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF], SEND_BUFFER);
        set_buffer(&s, [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF], RECEIVE_BUFFER);
        // The kernel's own drops (the filter's, a full receive buffer's),
        // read with each datagram; a metric.
        set_int(&s, libc::SO_RXQ_OVFL, 1);
        let shared = Arc::new(inbox::Shared::new(s));
        shared.refilter();
        let for_reader = shared.clone();
        let reader = std::thread::Builder::new()
            .name("fechter-inbox".into())
            .spawn(move || inbox::reader(&for_reader))?;
        Ok(TickedUdp {
            shared,
            batch: Mutex::new(inbox::Batch::new()),
            reader: Some(reader),
        })
    }

    /// The send buffer the kernel granted, in bytes.
    pub fn send_buffer(&self) -> io::Result<usize> {
        self.get_int(libc::SO_SNDBUF)
    }

    /// The receive buffer the kernel granted, in bytes.
    pub fn receive_buffer(&self) -> io::Result<usize> {
        self.get_int(libc::SO_RCVBUF)
    }

    /// The length of the next datagram the kernel holds (0: none).
    #[cfg(test)]
    fn pending(&self) -> usize {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int.
        unsafe { libc::ioctl(self.shared.socket.as_raw_fd(), libc::FIONREAD, &raw mut v) };
        v as usize
    }

    fn get_int(&self, opt: libc::c_int) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads an int option of a socket this value owns.
        let rc = unsafe {
            libc::getsockopt(
                self.shared.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
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

impl Drop for TickedUdp {
    fn drop(&mut self) {
        self.shared.stop();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Best effort: past the system's limit with CAP_NET_ADMIN (which the agent
/// has, through the first option), up to it otherwise (the second). A
/// smaller buffer only makes bursts lossier.
fn set_buffer(s: &std::net::UdpSocket, opts: [libc::c_int; 2], bytes: usize) {
    for opt in opts {
        if set_int(s, opt, bytes as libc::c_int) {
            return;
        }
    }
}

/// Sets an int option of the socket; whether the kernel took it.
fn set_int(s: &std::net::UdpSocket, opt: libc::c_int, v: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
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
    rc == 0
}

impl Datagram for TickedUdp {
    /// Non-blocking: a full send buffer fails the send (the datagram is
    /// lost, as on a congested network; anti-entropy repairs state). `to`
    /// counts as a member's address from then on (for [`inbox::KNOWN_FOR`]).
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.shared.sent_to(to);
        self.shared.socket.send_to(buf, to)
    }

    /// Members' datagrams first. Drains the socket into the inbox first
    /// when no member's datagram waits there, unless the reader thread
    /// does (a flood); a drain that finds a flood wakes the reader thread.
    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        if !self.shared.is_flooded() && !inbox_lock(&self.shared.inbox).has_members() {
            let n = inbox::drain(&self.shared, &mut inbox_lock(&self.batch), inbox::FLOOD_AT);
            if n >= inbox::FLOOD_AT {
                self.shared.flooded();
            }
        }
        let (from, bytes) = inbox_lock(&self.shared.inbox).pop(Instant::now())?;
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        Some(Ok((n, from)))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }
}

fn inbox_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    use fechter_cluster::seal::{MAGIC, OVERHEAD, VERSION};
    use std::sync::atomic::Ordering;

    /// A datagram that passes the precheck (not one that opens).
    fn plausible(tag: u8) -> Vec<u8> {
        let mut d = vec![tag; OVERHEAD + 1];
        d[..2].copy_from_slice(&MAGIC);
        d[2] = VERSION;
        d
    }

    /// Root (as CI runs) gets the whole buffers asked for (the kernel
    /// reports twice the value set); anyone else at least the default.
    /// Junk is dropped and counted before the loop sees it; a member's
    /// datagram (from an address this socket sent to) is read before a
    /// stranger's that came first.
    #[test]
    fn a_ticked_socket_gets_large_buffers_reads_members_first_and_never_waits() {
        let s = TickedUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (snd, rcv) = (s.send_buffer().unwrap(), s.receive_buffer().unwrap());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(snd >= SEND_BUFFER, "send buffer {snd}");
            assert!(rcv >= RECEIVE_BUFFER, "receive buffer {rcv}");
        } else {
            eprintln!("not root: buffers {snd}/{rcv} (SO_*BUFFORCE needs CAP_NET_ADMIN)");
        }
        let mut buf = [0u8; 2048];
        assert!(s.try_recv_from(&mut buf).is_none(), "nothing queued yet");
        let to = s.local_addr().unwrap();
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let member = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(s.send_to(b"hi", member.local_addr().unwrap()))
            .unwrap();
        stranger.send_to(b"hello", to).unwrap();
        stranger.send_to(&plausible(3)[..OVERHEAD - 1], to).unwrap();
        stranger.send_to(&plausible(1), to).unwrap();
        member.send_to(&plausible(2), to).unwrap();
        // Loopback delivery is synchronous: queued when send_to returns.
        let mut got = Vec::new();
        while let Some(r) = s.try_recv_from(&mut buf) {
            let (n, from) = r.unwrap();
            got.push((buf[..n].to_vec(), from));
        }
        assert_eq!(
            got,
            [
                (plausible(2), member.local_addr().unwrap()),
                (plausible(1), stranger.local_addr().unwrap()),
            ]
        );
        // The filter dropped the junk in the kernel, which says so.
        assert!(INBOX_DROPS.kernel.load(Ordering::Relaxed) >= 2);
    }

    /// Under a flood the socket filter keeps every member's datagram and a
    /// sample of a stranger's.
    #[test]
    fn under_a_flood_the_kernel_keeps_members_and_samples_strangers() {
        let s = TickedUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = s.local_addr().unwrap();
        // Another loopback address: the filter matches addresses, not ports.
        let Ok(stranger) = std::net::UdpSocket::bind("127.0.0.2:0") else {
            eprintln!("no 127.0.0.2 here: skipped");
            return;
        };
        let member = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(s.send_to(b"hi", member.local_addr().unwrap()))
            .unwrap();
        s.shared.flooded();
        for _ in 0..64 {
            stranger.send_to(&plausible(1), to).unwrap();
            member.send_to(&plausible(2), to).unwrap();
        }
        let mut buf = [0u8; 2048];
        let mut got = [0usize; 3];
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(200) {
            match s.try_recv_from(&mut buf) {
                Some(r) => got[usize::from(buf[r.unwrap().0 - 1])] += 1,
                None => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(got[2], 64, "every member's datagram");
        // 1 in 16 of 64 kept: 4 expected; without the filter, the
        // stranger's share of the inbox (32).
        assert!(got[1] < 20, "a sample of the stranger's: {}", got[1]);
    }

    /// A flood wakes the reader thread, which drains the socket between
    /// reads; dropping the socket stops it.
    #[test]
    fn a_flood_is_drained_between_reads() {
        let s = TickedUdp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = s.local_addr().unwrap();
        let flooder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Junk that gets past the socket filter: the drain reads it all.
        for _ in 0..inbox::FLOOD_AT {
            flooder.send_to(&plausible(9), to).unwrap();
        }
        let mut buf = [0u8; 2048];
        let read = std::iter::from_fn(|| s.try_recv_from(&mut buf)).count();
        assert_eq!(
            read,
            inbox::Limits::DEFAULT.per_stranger,
            "one stranger's share"
        );
        assert!(s.shared.is_flooded());
        // The reader thread drains what comes next without a read (from a
        // member's address, which the filter keeps).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(s.send_to(b"hi", flooder.local_addr().unwrap()))
            .unwrap();
        flooder.send_to(&plausible(9), to).unwrap();
        assert!(s.pending() > 0 || s.shared.inbox.lock().unwrap().len().0 > 0);
        let drained = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            s.pending() == 0
        });
        assert!(drained, "the reader thread did not drain the socket");
        drop(s);
    }
}
