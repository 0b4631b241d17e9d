//! What the local servers (the control socket and `/metrics`) may take from
//! the agent: each runs on a thread of its own ([`spawn_server`], ordinary
//! priority, its own small runtime), off the loop that detects failures; at
//! most [`Limits::max_connections`] connections are open at once; a client
//! has [`Limits::read_timeout`] to send its request and
//! [`Limits::write_timeout`] to take the answer; every connection dropped is
//! counted (`fechter_connections_dropped_total{server,reason}`). And
//! [`raise_nofile`]: the process may open as many files as the system lets it.
//!
//! When every slot is taken, the oldest connection that has not sent its
//! request yet is closed to make room (`evicted`): idle clients cannot lock
//! the operator out. Only when every slot is busy with a request already
//! read is a new connection refused (`full`), with a one-line answer.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::metrics;

/// A local server's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; more are evicted or refused.
    pub max_connections: usize,
    /// From accepting a connection to its complete request.
    pub read_timeout: Duration,
    /// To write the whole answer.
    pub write_timeout: Duration,
}

/// Why a connection was dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Every slot was busy answering a request: refused at once.
    Full,
    /// Closed before it sent its request, to make room for a new one.
    Evicted,
    /// Did not send its request, or take its answer, in time.
    Timeout,
    /// A request longer than the server reads.
    Oversized,
    /// Not a request (answered with an error).
    Malformed,
}

impl Dropped {
    pub const ALL: [Dropped; 5] = [
        Dropped::Full,
        Dropped::Evicted,
        Dropped::Timeout,
        Dropped::Oversized,
        Dropped::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Full => "full",
            Dropped::Evicted => "evicted",
            Dropped::Timeout => "timeout",
            Dropped::Oversized => "oversized",
            Dropped::Malformed => "malformed",
        }
    }
}

/// Admits connections to one server within its [`Limits`].
#[derive(Clone)]
pub struct Gate {
    server: &'static str,
    limits: Limits,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    open: usize,
    next_id: u64,
    /// Connections still reading their request, oldest first; dropping the
    /// sender evicts the connection.
    reading: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Gate {
    pub fn new(server: &'static str, limits: Limits) -> Gate {
        Gate {
            server,
            limits,
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a dropped connection.
    pub fn dropped(&self, why: Dropped) {
        tracing::debug!(
            server = self.server,
            reason = why.as_str(),
            "connection dropped"
        );
        metrics::connection_dropped(self.server, why);
    }

    /// A slot for a connection just accepted, evicting the oldest one still
    /// reading its request if every slot is taken. `None` (counted): every
    /// slot is busy with a request; close the connection at once. After an
    /// eviction the accept loop should yield, so the evicted connection
    /// closes before the next is accepted.
    pub fn admit(&self) -> Option<Conn> {
        let mut s = self.state();
        // When full, the oldest connection still reading is evicted (its
        // sender dropped here; it counts itself when it sees that) or, if
        // none is, the new one is refused.
        if s.open >= self.limits.max_connections && s.reading.pop_front().is_none() {
            drop(s);
            self.dropped(Dropped::Full);
            return None;
        }
        s.open += 1;
        s.next_id += 1;
        let id = s.next_id;
        let (tx, evicted) = oneshot::channel();
        s.reading.push_back((id, tx));
        Some(Conn {
            id,
            gate: self.clone(),
            evicted,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.state().open
    }
}

/// One admitted connection; frees its slot when dropped.
pub struct Conn {
    id: u64,
    gate: Gate,
    evicted: oneshot::Receiver<()>,
}

impl Conn {
    /// Reads the request with `read`, within the read deadline. `None`
    /// (counted): the client was too slow, or was evicted; close it.
    pub async fn read<T>(&mut self, read: impl Future<Output = T>) -> Option<T> {
        let out = tokio::select! {
            r = read => Some(r),
            () = tokio::time::sleep(self.gate.limits.read_timeout) => {
                self.gate.dropped(Dropped::Timeout);
                None
            }
            _ = &mut self.evicted => {
                self.gate.dropped(Dropped::Evicted);
                None
            }
        };
        self.done_reading();
        out
    }

    /// Writes the answer with `write`, within the write deadline. `None`
    /// (counted): the client did not take it in time.
    pub async fn write<T>(&self, write: impl Future<Output = T>) -> Option<T> {
        let out = tokio::time::timeout(self.gate.limits.write_timeout, write)
            .await
            .ok();
        if out.is_none() {
            self.gate.dropped(Dropped::Timeout);
        }
        out
    }

    /// The request is in: this connection can no longer be evicted.
    fn done_reading(&self) {
        self.gate.state().reading.retain(|(id, _)| *id != self.id);
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut s = self.gate.state();
        s.open -= 1;
        s.reading.retain(|(id, _)| *id != self.id);
    }
}

/// Runs the server `serve` builds on a new thread named `name`, with a
/// single-threaded runtime of its own: whatever its clients do, the agent's
/// loop never waits for it. The thread is an ordinary one: with
/// `realtime = true` the agent's thread runs at real-time priority and
/// `SCHED_RESET_ON_FORK` puts threads it starts back to normal, so a busy
/// server never delays a heartbeat.
pub fn spawn_server<F, Fut>(name: &str, serve: F) -> std::io::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_string())
        // Small: with memory locked (realtime) every page of it is resident.
        .stack_size(512 * 1024)
        .spawn(move || rt.block_on(serve()))?;
    Ok(())
}

/// Connections the kernel queues for a local server before it accepts them
/// (the standard library asks for 128): a burst of connections then does
/// not make a real client's connection wait for a retransmission (1 s) of
/// its SYN. The kernel caps it at `net.core.somaxconn`.
const BACKLOG: libc::c_int = 4096;

/// Deepens the queue of the listening socket `listener` to `BACKLOG`
/// (`listen` on a listening socket updates its backlog).
pub fn deepen_backlog(listener: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a descriptor the caller keeps open.
    if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's soft limit on open files (RLIMIT_NOFILE) to its
/// hard limit, so that clients holding connections, check scripts and hook
/// pipes do not run the agent out of descriptors at the usual soft limit of
/// 1,024. Returns the limits before and after.
pub fn raise_nofile() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, lim.rlim_cur))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Whether the server closed `s` (end of file or reset, after any answer).
    pub(crate) fn closed(mut s: impl std::io::Read, set_timeout: impl Fn(Duration)) -> bool {
        set_timeout(Duration::from_millis(50));
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    }

    const L: Limits = Limits {
        max_connections: 2,
        read_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(60),
    };

    #[tokio::test(flavor = "current_thread")]
    async fn a_new_connection_evicts_the_oldest_idle_one_and_busy_ones_refuse() {
        let gate = Gate::new("test", L);
        let mut a = gate.admit().unwrap();
        let mut b = gate.admit().unwrap();
        // Full: `a`, the oldest still reading, is evicted.
        let mut c = gate.admit().unwrap();
        assert_eq!(a.read(std::future::pending::<()>()).await, None);
        drop(a);
        assert_eq!(gate.open(), 2);
        // `b` and `c` have their requests: nothing left to evict.
        assert_eq!(b.read(async { 1 }).await, Some(1));
        assert_eq!(c.read(async { 2 }).await, Some(2));
        assert!(gate.admit().is_none());
        drop(b);
        assert!(gate.admit().is_some());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_client_times_out() {
        let gate = Gate::new(
            "test",
            Limits {
                read_timeout: Duration::from_millis(20),
                write_timeout: Duration::from_millis(20),
                ..L
            },
        );
        let mut a = gate.admit().unwrap();
        assert_eq!(a.read(std::future::pending::<()>()).await, None);
        assert_eq!(a.write(std::future::pending::<()>()).await, None);
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let (_, now) = raise_nofile().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_nofile.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(now, lim.rlim_max);
    }
}
