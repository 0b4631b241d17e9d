//! Health checks: the gateway (ICMP echo on a raw socket connected to it,
//! each reply matched by a random identifier and cookie) and check scripts
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

/// ICMP echo over a raw socket (needs CAP_NET_RAW), made so that a
/// neighbour cannot answer for the gateway:
/// - the socket is connected to the gateway, so the kernel passes it only
///   ICMP whose source is the gateway's address (and the reply's source is
///   checked again here);
/// - each pinger has a random identifier, and each request carries a fresh
///   random 16-byte cookie that its reply must echo: a forged reply has to
///   have seen the request (a machine on the path, the gateway itself),
///   guessing is hopeless.
struct Pinger {
    fd: AsyncFd<OwnedFd>,
    dst: IpAddr,
    ident: u16,
}

/// Length of the random cookie in an echo request's payload.
const COOKIE_LEN: usize = 16;

/// What one echo request carried, and so what its reply must echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Echo {
    ident: u16,
    seq: u16,
    cookie: [u8; COOKIE_LEN],
}

/// Random bytes from the OS; zeros only if it has none to give (the
/// socket filter and the reply's source still hold).
fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::warn!("no randomness for the gateway check's echo: {e}");
    }
    bytes
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
        // Only ICMP from the gateway reaches this socket from now on.
        let sa = socket2_addr(SocketAddr::new(dst, 0));
        // SAFETY: the address is valid for the given length.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa.0 as *const libc::sockaddr_storage).cast(),
                sa.1,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid, open descriptor owned by the AsyncFd for
        // its whole life (it is closed only when the AsyncFd drops it).
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::other)?;
        Ok(Pinger {
            fd,
            dst,
            ident: u16::from_ne_bytes(random()),
        })
    }

    /// One echo request; true when its reply arrives in time.
    async fn ping(&mut self, seq: u16, timeout: Duration) -> bool {
        let echo = Echo {
            ident: self.ident,
            seq,
            cookie: random(),
        };
        let pkt = echo_request(self.dst.is_ipv6(), &echo);
        if self.send(&pkt).is_err() {
            return false;
        }
        tokio::time::timeout(timeout, self.wait_reply(&echo))
            .await
            .unwrap_or(false)
    }

    fn send(&self, pkt: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer is valid for the given length; the socket is
        // connected.
        let n = unsafe {
            libc::send(
                self.fd.get_ref().as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    async fn wait_reply(&mut self, echo: &Echo) -> bool {
        let mut buf = [0u8; 1500];
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return false;
            };
            let res = guard.try_io(|fd| {
                // SAFETY: all-zero is a valid sockaddr_storage.
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
                    Ok((n as usize, source_of(&from)))
                }
            });
            match res {
                Ok(Ok((n, Some(from)))) => {
                    if is_echo_reply(&buf[..n], from, self.dst, echo) {
                        return true;
                    }
                }
                Ok(Ok((_, None))) => {}
                // An error the gateway's ICMP reported (unreachable, ...).
                Ok(Err(_)) => return false,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The address in a `sockaddr_storage` that `recvfrom` filled in.
fn source_of(sa: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(sa.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it holds a sockaddr_in, which fits.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((sa as *const libc::sockaddr_storage).cast()) };
            Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it holds a sockaddr_in6, which fits.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((sa as *const libc::sockaddr_storage).cast()) };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
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

/// Tag after the cookie in an echo request's payload, for whoever reads a
/// packet capture.
const TAG: &[u8] = b"fechter-gateway-check";

/// An ICMP (or ICMPv6: the kernel fills in its checksum) echo request
/// carrying `echo`'s identifier, sequence number and cookie.
fn echo_request(v6: bool, echo: &Echo) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&echo.ident.to_be_bytes());
    p.extend_from_slice(&echo.seq.to_be_bytes());
    p.extend_from_slice(&echo.cookie);
    p.extend_from_slice(TAG);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether `buf` (an IPv4 packet with its header, or a bare ICMPv6
/// message), received from `from`, is the gateway's echo reply to `echo`:
/// from the gateway, an echo reply, with `echo`'s identifier, sequence
/// number and cookie.
fn is_echo_reply(buf: &[u8], from: IpAddr, gateway: IpAddr, echo: &Echo) -> bool {
    if from != gateway {
        return false;
    }
    let v6 = gateway.is_ipv6();
    let icmp = if v6 {
        buf
    } else {
        let ihl = usize::from(buf.first().map_or(0, |b| b & 0x0f)) * 4;
        if ihl < 20
            || buf.len() < ihl + 8
            || buf[9] != 1
            || IpAddr::from([buf[12], buf[13], buf[14], buf[15]]) != gateway
        {
            return false;
        }
        &buf[ihl..]
    };
    icmp.len() >= 8 + COOKIE_LEN
        && icmp[0] == if v6 { 129 } else { 0 }
        && icmp[1] == 0
        && icmp[4..6] == echo.ident.to_be_bytes()
        && icmp[6..8] == echo.seq.to_be_bytes()
        && icmp[8..8 + COOKIE_LEN] == echo.cookie
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
mod tests;
