//! The cluster socket's inbox: what arrived, sorted before the agent's loop
//! reads it, so that junk at any rate never crowds the peers out.
//!
//! - **Drained.** A read of the loop when no member's datagram waits in
//!   the inbox drains the socket (`recvmmsg`, [`BATCH`] at a time, up to
//!   [`FLOOD_AT`]), so the kernel's queue (a large one: [`RECEIVE_BUFFER`])
//!   only holds what arrived since the last read.
//! - **Cheap rejection first.** A socket filter ([`program`]) has the
//!   kernel drop what is too short or lacks the magic before it is queued;
//!   under a flood it also keeps only a random sample of strangers'
//!   datagrams, all members'. Length, magic and version ([`seal::precheck`])
//!   are checked again as a datagram is read; what fails is dropped and
//!   counted ([`DROPS`]), never copied or decrypted.
//! - **Members first.** A datagram from an address this node sent to
//!   within [`KNOWN_FOR`] (its peers: heartbeats go to every live member
//!   every tick) goes to the members' lane, any other to the strangers'
//!   lane. Both are bounded, and bounded per source address; the members'
//!   lane is read first, so strangers never delay nor crowd out a member's
//!   datagram, and one stranger (a flooder, or a node joining) never
//!   crowds out another. Strangers' datagrams are handed out at a bounded
//!   rate ([`Limits::stranger_rate`]), so that junk that looks sealed
//!   costs a bounded number of decryptions.
//! - **A reader thread, only under a flood.** The loop reads on its ticks;
//!   when a read finds [`FLOOD_AT`] datagrams queued, a reader
//!   thread starts draining the socket as datagrams come, until a second
//!   passes with fewer than [`QUIET_BELOW`]. Idle, it sleeps on a condition
//!   variable and costs nothing (a thread waiting on the socket would wake
//!   for every heartbeat, and a wake-up costs more than reading one).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fechter_cluster::seal::{self, DropReason, MAX_DATAGRAM_LEN};

mod filter;
mod mmsg;

pub use filter::{attach, program};
pub(super) use mmsg::Batch;
use mmsg::{Read, recv, sender};

/// The receive buffer asked for (the kernel accounts twice this): what
/// arrives between two reads of a busy loop, at hundreds of thousands of
/// datagrams a second.
pub const RECEIVE_BUFFER: usize = 16 << 20;
/// Datagrams one `recvmmsg` reads.
pub const BATCH: usize = 64;
/// Bytes read of each datagram: more than [`MAX_DATAGRAM_LEN`], so that a
/// longer one is seen as such (and dropped as oversized).
const SLOT: usize = 2048;
/// At most this many datagrams are drained by one pass of the reader
/// thread before it looks at the time.
const MAX_DRAIN: usize = 1 << 16;
/// A read of the loop drains at most this many datagrams; one that finds
/// as many starts the reader thread (about 17,000 a second at a 15 ms
/// tick) and leaves the rest to it, so that a flood that comes faster than
/// a drain reads never holds the loop.
pub const FLOOD_AT: usize = 256;
/// The reader thread goes back to sleep after a second with fewer than
/// this many datagrams.
pub const QUIET_BELOW: usize = 2_000;
/// How long an address this node sent to counts as a member's.
pub const KNOWN_FOR: Duration = Duration::from_secs(60);
/// At most this many member addresses are remembered.
pub const MAX_KNOWN: usize = 4096;
/// Under a flood the socket filter keeps one strangers' datagram in this
/// many (a power of two), picked at random; members' all.
pub const STRANGER_SAMPLE: u32 = 16;
/// At most this many member addresses are matched by the socket filter.
const MAX_FILTERED: usize = 1024;

/// How many datagrams each lane holds, in all and from one source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub members: usize,
    pub per_member: usize,
    pub strangers: usize,
    pub per_stranger: usize,
    /// Strangers' datagrams handed out (to be opened) per second, at most
    /// [`Limits::stranger_burst`] at once: opening one costs a decryption.
    pub stranger_rate: u32,
    pub stranger_burst: u32,
}

impl Limits {
    /// A member may send a table of thousands of addresses in one burst
    /// (hundreds of parts); a stranger that is a node joining sends a few
    /// datagrams before it is answered (and so known).
    pub const DEFAULT: Limits = Limits {
        members: 16_384,
        per_member: 4_096,
        strangers: 512,
        per_stranger: 32,
        stranger_rate: 500,
        stranger_burst: 64,
    };
}

/// One bounded first-in first-out lane, bounded per source too.
#[derive(Debug)]
struct Lane {
    queue: VecDeque<(SocketAddr, Box<[u8]>)>,
    per_source: HashMap<SocketAddr, usize>,
    cap: usize,
    per_source_cap: usize,
}

impl Lane {
    fn new(cap: usize, per_source_cap: usize) -> Lane {
        Lane {
            queue: VecDeque::new(),
            per_source: HashMap::new(),
            cap,
            per_source_cap,
        }
    }

    fn push(&mut self, from: SocketAddr, bytes: &[u8]) -> bool {
        if self.queue.len() >= self.cap {
            return false;
        }
        let n = self.per_source.entry(from).or_insert(0);
        if *n >= self.per_source_cap {
            return false;
        }
        *n += 1;
        self.queue.push_back((from, bytes.into()));
        true
    }

    fn pop(&mut self) -> Option<(SocketAddr, Box<[u8]>)> {
        let (from, bytes) = self.queue.pop_front()?;
        if let Entry::Occupied(mut e) = self.per_source.entry(from) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        Some((from, bytes))
    }
}

/// Which lane was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    Member,
    Stranger,
}

/// Datagrams that passed the precheck, waiting for the loop: members'
/// first.
#[derive(Debug)]
pub struct Inbox {
    members: Lane,
    strangers: Lane,
    /// Strangers' datagrams that may be handed out now, and when that was
    /// reckoned (a token bucket).
    tokens: f64,
    reckoned: Option<Instant>,
    rate: f64,
    burst: f64,
}

impl Inbox {
    pub fn new(limits: Limits) -> Inbox {
        Inbox {
            members: Lane::new(limits.members, limits.per_member),
            strangers: Lane::new(limits.strangers, limits.per_stranger),
            tokens: f64::from(limits.stranger_burst),
            reckoned: None,
            rate: f64::from(limits.stranger_rate),
            burst: f64::from(limits.stranger_burst),
        }
    }

    /// Queues a copy of `bytes` from `from` in the members' lane if
    /// `member`, else in the strangers'; refused when that lane, or that
    /// source's share of it, is full.
    pub fn push(&mut self, from: SocketAddr, bytes: &[u8], member: bool) -> Result<(), Crowded> {
        if member {
            self.members
                .push(from, bytes)
                .then_some(())
                .ok_or(Crowded::Member)
        } else {
            self.strangers
                .push(from, bytes)
                .then_some(())
                .ok_or(Crowded::Stranger)
        }
    }

    /// The oldest member's datagram, else the oldest stranger's if the
    /// strangers' rate allows one at `now`. A stranger's that waits
    /// for the rate keeps its place, and its source's share of the lane.
    pub fn pop(&mut self, now: Instant) -> Option<(SocketAddr, Box<[u8]>)> {
        if let Some(m) = self.members.pop() {
            return Some(m);
        }
        if self.strangers.queue.is_empty() {
            return None;
        }
        let since = self
            .reckoned
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.reckoned = Some(now);
        self.tokens = (self.tokens + since * self.rate).min(self.burst);
        if self.tokens < 1.0 {
            return None;
        }
        self.tokens -= 1.0;
        self.strangers.pop()
    }

    /// Whether a member's datagram waits.
    pub fn has_members(&self) -> bool {
        !self.members.queue.is_empty()
    }

    /// Datagrams waiting, members' and strangers'.
    pub fn len(&self) -> (usize, usize) {
        (self.members.queue.len(), self.strangers.queue.len())
    }
}

/// The addresses this node sent to lately: its members'.
#[derive(Debug, Default)]
pub struct Known {
    at: HashMap<SocketAddr, Instant>,
}

impl Known {
    /// This node sent to `to` at `now`; whether `to` is new here.
    pub fn note(&mut self, to: SocketAddr, now: Instant) -> bool {
        if self.at.len() >= MAX_KNOWN && !self.at.contains_key(&to) {
            self.at
                .retain(|_, t| now.saturating_duration_since(*t) <= KNOWN_FOR);
            if self.at.len() >= MAX_KNOWN
                && let Some(oldest) = self.at.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a)
            {
                self.at.remove(&oldest);
            }
        }
        self.at.insert(to, now).is_none()
    }

    /// Whether this node sent to `from` within [`KNOWN_FOR`] of `now`.
    pub fn contains(&self, from: &SocketAddr, now: Instant) -> bool {
        self.at
            .get(from)
            .is_some_and(|t| now.saturating_duration_since(*t) <= KNOWN_FOR)
    }
}

/// Datagrams the inbox dropped, by reason, for every cluster socket of
/// this process (an agent has one). The prechecks' reasons are the
/// [`DropReason`]s the opener would have given.
#[derive(Debug, Default)]
pub struct InboxDrops {
    pub malformed: AtomicU64,
    pub unsupported_version: AtomicU64,
    pub oversized: AtomicU64,
    /// The members' lane, or that member's share, was full.
    pub crowded_member: AtomicU64,
    /// The strangers' lane, or that stranger's share, was full.
    pub crowded_stranger: AtomicU64,
    /// Dropped by the kernel (`SO_RXQ_OVFL`): by the socket filter (not
    /// a fechter datagram), or because the receive buffer was full.
    pub kernel: AtomicU64,
    /// The kernel's last raw count (a `u32` that wraps).
    kernel_raw: std::sync::atomic::AtomicU32,
}

/// The process's [`InboxDrops`].
pub static DROPS: InboxDrops = InboxDrops {
    malformed: AtomicU64::new(0),
    unsupported_version: AtomicU64::new(0),
    oversized: AtomicU64::new(0),
    crowded_member: AtomicU64::new(0),
    crowded_stranger: AtomicU64::new(0),
    kernel: AtomicU64::new(0),
    kernel_raw: std::sync::atomic::AtomicU32::new(0),
};

impl InboxDrops {
    /// The kernel's drop count (`SO_RXQ_OVFL`, a `u32` that wraps) as
    /// read with a datagram: what it grew by since the newest one seen is
    /// added. A count older than that (read by the other thread, out of
    /// order) adds nothing.
    pub fn kernel_count(&self, raw: u32) {
        let mut last = self.kernel_raw.load(Ordering::Relaxed);
        loop {
            let grew = raw.wrapping_sub(last);
            if grew == 0 || grew > u32::MAX / 2 {
                return;
            }
            match self.kernel_raw.compare_exchange_weak(
                last,
                raw,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.kernel.fetch_add(u64::from(grew), Ordering::Relaxed);
                    return;
                }
                Err(now) => last = now,
            }
        }
    }

    /// The count for a precheck's `reason`.
    pub fn precheck(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Malformed => self.malformed.load(Ordering::Relaxed),
            DropReason::UnsupportedVersion => self.unsupported_version.load(Ordering::Relaxed),
            DropReason::Oversized => self.oversized.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// The inbox's own reasons, as metric labels, and their counts.
    pub fn own(&self) -> [(&'static str, u64); 3] {
        [
            (
                "crowded-out-member",
                self.crowded_member.load(Ordering::Relaxed),
            ),
            (
                "crowded-out-stranger",
                self.crowded_stranger.load(Ordering::Relaxed),
            ),
            ("dropped-by-kernel", self.kernel.load(Ordering::Relaxed)),
        ]
    }

    fn count(&self, reason: DropReason) {
        let c = match reason {
            DropReason::UnsupportedVersion => &self.unsupported_version,
            DropReason::Oversized => &self.oversized,
            _ => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the loop and the reader thread share.
#[derive(Debug)]
pub(super) struct Shared {
    pub socket: UdpSocket,
    pub inbox: Mutex<Inbox>,
    pub known: Mutex<Known>,
    /// Whether the reader thread should drain (a flood was seen); read
    /// without the lock through `draining`.
    flooded: Mutex<bool>,
    draining: AtomicBool,
    wake: Condvar,
    stop: AtomicBool,
    /// Serialises the filter's updates.
    filter: Mutex<()>,
}

impl Shared {
    pub fn new(socket: UdpSocket) -> Shared {
        Shared {
            socket,
            inbox: Mutex::new(Inbox::new(Limits::DEFAULT)),
            known: Mutex::new(Known::default()),
            flooded: Mutex::new(false),
            draining: AtomicBool::new(false),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            filter: Mutex::new(()),
        }
    }

    /// Attaches the filter for the members known now and the flood state
    /// (best effort: without it, junk is dropped later, at more cost).
    pub fn refilter(&self) {
        let _serial = lock(&self.filter);
        let sample = self.is_flooded() && self.socket.local_addr().is_ok_and(|a| a.is_ipv4());
        let members: Vec<Ipv4Addr> = if sample {
            let mut v: Vec<Ipv4Addr> = lock(&self.known)
                .at
                .keys()
                .filter_map(|a| match a.ip() {
                    std::net::IpAddr::V4(ip) => Some(ip),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        } else {
            Vec::new()
        };
        if let Err(e) = attach(&self.socket, program(&members, sample)) {
            tracing::warn!("cannot attach the cluster socket's filter: {e}");
        }
    }

    /// This node sent to `to`: a member's address from now on.
    pub fn sent_to(&self, to: SocketAddr) {
        let new = lock(&self.known).note(to, Instant::now());
        if new && self.is_flooded() {
            self.refilter();
        }
    }

    /// Whether the reader thread drains the socket (so the loop need not).
    pub fn is_flooded(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Wakes the reader thread, if it sleeps.
    pub fn flooded(&self) {
        let mut f = lock(&self.flooded);
        if !*f {
            *f = true;
            self.draining.store(true, Ordering::Relaxed);
            tracing::debug!("cluster socket flooded: the reader thread drains it");
            self.wake.notify_one();
            drop(f);
            self.refilter();
        }
    }

    /// Stops the reader thread (within its poll timeout).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _f = lock(&self.flooded);
        self.wake.notify_all();
    }
}

/// Reads what the socket holds into the inbox, at most `max` datagrams
/// (rounded up to a whole [`BATCH`]); returns how many were read.
pub(super) fn drain(shared: &Shared, b: &mut Batch, max: usize) -> usize {
    let fd = shared.socket.as_raw_fd();
    let mut total = 0;
    let mut errors = 0;
    while total < max {
        let read = match recv(fd, b) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // ICMP errors (a peer's port closed) surface here on Linux;
            // reading them clears them.
            Err(e) => {
                tracing::debug!("recv: {e}");
                errors += 1;
                if errors > 8 {
                    break;
                }
                continue;
            }
        };
        if let Some(v) = read.kernel_drops {
            DROPS.kernel_count(v);
        }
        let keep = sort(shared, b, &read);
        if keep.iter().any(Option::is_some) {
            queue(shared, b, &read, &keep);
        }
        total += read.n;
        if read.n < BATCH {
            break;
        }
    }
    total
}

/// Checks each datagram of a read (length, magic, version) and says where
/// it goes: `(sender, from a member)`, or `None` (dropped and counted).
fn sort(shared: &Shared, b: &Batch, read: &Read) -> [Option<(SocketAddr, bool)>; BATCH] {
    let now = Instant::now();
    let mut keep: [Option<(SocketAddr, bool)>; BATCH] = [None; BATCH];
    {
        let known = lock(&shared.known);
        // A flood comes in runs from one source: look it up once a run.
        let mut last: Option<(SocketAddr, bool)> = None;
        for (i, keep) in keep.iter_mut().enumerate().take(read.n) {
            let len = read.len[i];
            let check = if read.truncated[i] || len > MAX_DATAGRAM_LEN {
                Err(DropReason::Oversized)
            } else {
                seal::precheck(&b.bufs[i][..len])
            };
            match (check, sender(&b.names[i])) {
                (Err(reason), _) => DROPS.count(reason),
                (Ok(()), None) => DROPS.count(DropReason::Malformed),
                (Ok(()), Some(from)) => {
                    let member = match last {
                        Some((a, m)) if a == from => m,
                        _ => known.contains(&from, now),
                    };
                    last = Some((from, member));
                    *keep = Some((from, member));
                }
            }
        }
    }
    keep
}

/// Puts the kept datagrams of a read in their lanes, counting what a full
/// lane refuses.
fn queue(shared: &Shared, b: &Batch, read: &Read, keep: &[Option<(SocketAddr, bool)>; BATCH]) {
    let mut inbox = lock(&shared.inbox);
    // Nothing is read while the lock is held: a source refused
    // once in this batch is refused again.
    let mut refused: Option<SocketAddr> = None;
    for (i, k) in keep.iter().enumerate().take(read.n) {
        let Some((from, member)) = *k else { continue };
        let pushed = if refused == Some(from) {
            Err(if member {
                Crowded::Member
            } else {
                Crowded::Stranger
            })
        } else {
            inbox.push(from, &b.bufs[i][..read.len[i]], member)
        };
        if pushed.is_err() {
            refused = Some(from);
        }
        match pushed {
            Ok(()) => {}
            Err(Crowded::Member) => {
                DROPS.crowded_member.fetch_add(1, Ordering::Relaxed);
            }
            Err(Crowded::Stranger) => {
                DROPS.crowded_stranger.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The reader thread: sleeps until the loop sees a flood, then drains the
/// socket as datagrams come until a quiet second.
pub(super) fn reader(shared: &Shared) {
    // A helper, never a rival: under `--realtime` the loop runs SCHED_RR
    // (inherited by this thread), and it must not be starved by a thread
    // draining junk.
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes the calling thread's own policy.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &raw const param) };
    let mut b = Batch::new();
    let fd = shared.socket.as_raw_fd();
    loop {
        {
            let mut f = lock(&shared.flooded);
            while !*f && !shared.stop.load(Ordering::Relaxed) {
                f = shared.wake.wait(f).unwrap_or_else(|p| p.into_inner());
            }
        }
        let mut window = Instant::now();
        let mut seen = 0;
        // What the filter dropped counts towards the flood's rate.
        let mut filtered = DROPS.kernel.load(Ordering::Relaxed);
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&raw mut p, 1, 100) };
            seen += drain(shared, &mut b, MAX_DRAIN);
            if window.elapsed() >= Duration::from_secs(1) {
                let k = DROPS.kernel.load(Ordering::Relaxed);
                let rate = seen as u64 + k.saturating_sub(filtered);
                if rate < QUIET_BELOW as u64 {
                    *lock(&shared.flooded) = false;
                    shared.draining.store(false, Ordering::Relaxed);
                    shared.refilter();
                    tracing::debug!("cluster socket quiet again: the reader thread sleeps");
                    break;
                }
                (window, seen, filtered) = (Instant::now(), 0, k);
            }
        }
    }
}

#[cfg(test)]
mod tests;
