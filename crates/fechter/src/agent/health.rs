//! Health checks: the gateway (ICMP echo on a raw socket) and check scripts
//! (keepalived's `vrrp_script`). Each runs in its own task, never blocks the
//! agent, and reports only changes of state, after `rise` successes or `fall`
//! failures in a row. A check starts failing ("pending") until it has passed
//! `rise` times, so a node never serves before its checks have spoken.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::child;

/// Timing of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckTiming {
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row before a failing check passes.
    pub rise: u32,
    /// Failures in a row before a passing check fails.
    pub fall: u32,
}

impl CheckTiming {
    /// Gateway defaults: a lost gateway is noticed in about 0.75 s.
    pub const GATEWAY: CheckTiming = CheckTiming {
        interval: Duration::from_millis(250),
        timeout: Duration::from_millis(250),
        rise: 3,
        fall: 3,
    };
    /// Script defaults.
    pub const SCRIPT: CheckTiming = CheckTiming {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        rise: 2,
        fall: 2,
    };

    pub fn validate(&self, what: &str) -> Result<(), String> {
        if self.interval.is_zero() || self.timeout.is_zero() || self.rise == 0 || self.fall == 0 {
            return Err(format!(
                "{what}: interval_ms, timeout_ms, rise and fall must all be positive"
            ));
        }
        Ok(())
    }
}

/// What a check runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// ICMP echo to the gateway.
    Gateway(IpAddr),
    /// `sh -c COMMAND`; exit status 0 passes.
    Script(String),
}

/// One configured check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The reason shown when it fails: `gateway` or `check NAME`.
    pub name: String,
    pub probe: Probe,
    pub timing: CheckTiming,
}

/// A check changed state: `(name, passing)`.
pub type HealthChange = (String, bool);

/// Starts every check on the current tokio runtime. Each first reports
/// itself failing (pending), then every change.
pub fn spawn(checks: Vec<Check>) -> mpsc::Receiver<HealthChange> {
    let (tx, rx) = mpsc::channel(64);
    for c in checks {
        let tx = tx.clone();
        tokio::spawn(async move { run_check(c, tx).await });
    }
    rx
}

async fn run_check(c: Check, tx: mpsc::Sender<HealthChange>) {
    let mut pinger = match &c.probe {
        Probe::Gateway(gw) => match Pinger::new(*gw) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(check = %c.name, "cannot open an ICMP socket: {e}; the check fails");
                None
            }
        },
        Probe::Script(_) => None,
    };
    let mut state = Tracker::new(c.timing.rise, c.timing.fall);
    if tx.send((c.name.clone(), false)).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(c.timing.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u16 = 0;
    let mut why = String::new();
    loop {
        tick.tick().await;
        let ok = match (&c.probe, pinger.as_mut()) {
            (Probe::Gateway(_), Some(p)) => {
                seq = seq.wrapping_add(1);
                p.ping(seq, c.timing.timeout).await
            }
            (Probe::Gateway(_), None) => false,
            (Probe::Script(cmd), _) => match run_script(cmd, c.timing.timeout).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(check = %c.name, "check failed: {e}");
                    why = e;
                    false
                }
            },
        };
        if let Some(passing) = state.observe(ok) {
            if passing {
                tracing::info!(check = %c.name, "check passes");
            } else if why.is_empty() {
                tracing::warn!(check = %c.name, "check fails");
            } else {
                tracing::warn!(check = %c.name, "check fails: {why}");
            }
            if tx.send((c.name.clone(), passing)).await.is_err() {
                return;
            }
        }
    }
}

/// Runs a check script with a timeout: `Ok` when it exits 0 in time, else
/// why not, with the start of its output. A hung script is killed with its
/// process group; at most 64 KiB of its output is read (see
/// [`super::child`]).
async fn run_script(cmd: &str, timeout: Duration) -> Result<(), String> {
    let ran = child::run(cmd, &[], timeout)
        .await
        .map_err(|e| format!("cannot start the check: {e}"))?;
    let output = match ran.output_for_log() {
        o if o.is_empty() => String::new(),
        o => format!(": {o}"),
    };
    match ran.exit {
        _ if ran.success() => Ok(()),
        child::Exit::Status(status) => Err(format!("{status}{output}")),
        child::Exit::TimedOut => Err(format!(
            "timed out after {} ms, killed with its process group{output}",
            timeout.as_millis()
        )),
    }
}

/// One ICMP echo to `gateway` (the two-node witness probe): true when it
/// answers within `timeout`.
pub async fn ping_once(gateway: IpAddr, timeout: Duration) -> bool {
    match Pinger::new(gateway) {
        Ok(mut p) => p.ping(1, timeout).await,
        Err(e) => {
            tracing::warn!(%gateway, "cannot open an ICMP socket: {e}");
            false
        }
    }
}

/// Rise/fall hysteresis. Starts failing.
#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    passing: bool,
    streak: u32,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32) -> Self {
        Tracker {
            rise,
            fall,
            passing: false,
            streak: 0,
        }
    }

    /// Takes one result; returns the new state when it changes.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.passing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let need = if ok { self.rise } else { self.fall };
        if self.streak >= need {
            self.passing = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// ICMP echo over a raw socket (needs CAP_NET_RAW).
struct Pinger {
    fd: AsyncFd<OwnedFd>,
    dst: IpAddr,
    ident: u16,
}

impl Pinger {
    fn new(dst: IpAddr) -> io::Result<Pinger> {
        let (family, proto) = match dst {
            IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP),
            IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
        };
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is a valid, open descriptor owned by the AsyncFd for
        // its whole life (it is closed only when the AsyncFd drops it).
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::other)?;
        Ok(Pinger {
            fd,
            dst,
            ident: (std::process::id() as u16) ^ 0x5a5a,
        })
    }

    /// One echo request; true when the matching reply arrives in time.
    async fn ping(&mut self, seq: u16, timeout: Duration) -> bool {
        let pkt = echo_request(self.dst.is_ipv6(), self.ident, seq);
        if self.send(&pkt).is_err() {
            return false;
        }
        tokio::time::timeout(timeout, self.wait_reply(seq))
            .await
            .unwrap_or(false)
    }

    fn send(&self, pkt: &[u8]) -> io::Result<()> {
        let sa = socket2_addr(SocketAddr::new(self.dst, 0));
        // SAFETY: the buffer and address are valid for the given lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.get_ref().as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa.0 as *const libc::sockaddr_storage).cast(),
                sa.1,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    async fn wait_reply(&mut self, seq: u16) -> bool {
        let mut buf = [0u8; 1500];
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return false;
            };
            let res = guard.try_io(|fd| {
                let mut from: libc::sockaddr_storage = unsafe { mem::zeroed() };
                let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                // SAFETY: valid buffers and lengths.
                let n = unsafe {
                    libc::recvfrom(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_storage).cast(),
                        &mut len,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    if is_echo_reply(&buf[..n], self.dst.is_ipv6(), self.ident, seq) {
                        return true;
                    }
                }
                Ok(Err(_)) => return false,
                Err(_would_block) => continue,
            }
        }
    }
}

fn socket2_addr(sa: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
    match sa {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin) };
            (st, mem::size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut st as *mut libc::sockaddr_storage).cast(), sin6) };
            (st, mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// An ICMP (or ICMPv6: the kernel fills in its checksum) echo request.
fn echo_request(v6: bool, ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"fechter-gateway-check");
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether `buf` (an IPv4 packet with header, or a bare ICMPv6 message) is
/// the echo reply to our request.
fn is_echo_reply(buf: &[u8], v6: bool, ident: u16, seq: u16) -> bool {
    let icmp = if v6 {
        buf
    } else {
        let ihl = usize::from(buf.first().map_or(0, |b| b & 0x0f)) * 4;
        if ihl < 20 || buf.len() < ihl + 8 {
            return false;
        }
        &buf[ihl..]
    };
    icmp.len() >= 8
        && icmp[0] == if v6 { 129 } else { 0 }
        && icmp[4..6] == ident.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

/// The Internet checksum (RFC 1071) of an ICMP message.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_need_streaks() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(false), None, "a streak is broken by a failure");
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        for _ in 0..2 {
            assert_eq!(t.observe(false), None);
        }
        assert_eq!(t.observe(false), Some(false));
    }

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0, "a correct ICMP checksum sums to zero");
        assert_eq!(p[0], 8);
    }

    #[test]
    fn replies_are_matched_by_id_and_sequence() {
        let mut reply = echo_request(false, 0x1234, 7);
        reply[0] = 0;
        let mut ip = vec![0x45u8];
        ip.extend([0u8; 19]);
        ip.extend(&reply);
        assert!(is_echo_reply(&ip, false, 0x1234, 7));
        assert!(!is_echo_reply(&ip, false, 0x1234, 8));
        assert!(!is_echo_reply(&ip, false, 0x9999, 7));
        assert!(!is_echo_reply(&ip[..24], false, 0x1234, 7));
        let mut v6 = echo_request(true, 1, 2);
        v6[0] = 129;
        assert!(is_echo_reply(&v6, true, 1, 2));
    }

    #[tokio::test]
    async fn scripts_pass_fail_and_are_killed_at_their_timeout() {
        assert_eq!(run_script("exit 0", Duration::from_secs(5)).await, Ok(()));
        let failed = run_script("echo broken >&2; exit 3", Duration::from_secs(5)).await;
        assert_eq!(failed, Err("exit status: 3: broken".to_owned()));
        let t0 = std::time::Instant::now();
        let hung = run_script("sleep 30", Duration::from_millis(200)).await;
        assert!(hung.unwrap_err().starts_with("timed out after 200 ms"));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the hung script was killed"
        );
    }

    #[tokio::test]
    async fn a_timed_out_check_is_killed_with_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        assert!(run_script(&cmd, Duration::from_millis(300)).await.is_err());
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        };
        let t = std::time::Instant::now();
        while !gone() && t.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the check's background sleep {pid} survived");
    }

    #[tokio::test]
    async fn a_check_printing_ten_megabytes_is_read_capped() {
        let t0 = std::time::Instant::now();
        let cmd = "head -c 10000000 /dev/zero | tr '\\0' x; exit 1";
        let err = run_script(cmd, Duration::from_secs(20)).await.unwrap_err();
        assert!(err.starts_with("exit status: 1: xxxx"), "{}", &err[..40]);
        assert!(err.len() < 2048, "{} bytes", err.len());
        assert!(err.ends_with(" more bytes)"), "{}", &err[err.len() - 40..]);
        // Printing 10 MB is no failure by itself.
        let quiet = "head -c 10000000 /dev/zero";
        assert_eq!(run_script(quiet, Duration::from_secs(20)).await, Ok(()));
        assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    }
}
