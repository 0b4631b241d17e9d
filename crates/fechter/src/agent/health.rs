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

    const GW4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 254));
    const GW6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

    fn echo() -> Echo {
        Echo {
            ident: 0x1234,
            seq: 7,
            cookie: *b"0123456789abcdef",
        }
    }

    /// The reply the gateway would send to `req`: an IPv4 packet from
    /// `src`, or a bare ICMPv6 message.
    fn reply_to(req: &[u8], v6: bool, src: IpAddr) -> Vec<u8> {
        let mut icmp = req.to_vec();
        icmp[0] = if v6 { 129 } else { 0 };
        if v6 {
            return icmp;
        }
        let IpAddr::V4(src) = src else { unreachable!() };
        let mut ip = vec![0x45u8, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        ip.extend(src.octets());
        ip.extend([198, 18, 0, 1]);
        ip.extend(&icmp);
        ip
    }

    #[test]
    fn echo_request_checksum_verifies_and_carries_the_cookie() {
        let p = echo_request(false, &echo());
        assert_eq!(checksum(&p), 0, "a correct ICMP checksum sums to zero");
        assert_eq!(p[0], 8);
        assert_eq!(&p[8..24], b"0123456789abcdef");
        assert_eq!(echo_request(true, &echo())[0], 128);
    }

    #[test]
    fn only_the_reply_with_our_id_sequence_and_cookie_from_the_gateway_matches() {
        for (gw, v6) in [(GW4, false), (GW6, true)] {
            let req = echo_request(v6, &echo());
            let good = reply_to(&req, v6, gw);
            assert!(is_echo_reply(&good, gw, gw, &echo()), "{gw}");
            let at = if v6 { 0 } else { 20 };
            // Forgeries by a neighbour that did not see the request.
            let forge = |f: &dyn Fn(&mut Echo)| {
                let mut e = echo();
                f(&mut e);
                reply_to(&echo_request(v6, &e), v6, gw)
            };
            let wrong_id = forge(&|e| e.ident ^= 1);
            let wrong_seq = forge(&|e| e.seq += 1);
            let wrong_cookie = forge(&|e| e.cookie[15] ^= 1);
            let no_cookie = good[..at + 8].to_vec();
            for (what, bad) in [
                ("wrong id", wrong_id),
                ("wrong sequence", wrong_seq),
                ("wrong cookie", wrong_cookie),
                ("no cookie", no_cookie),
            ] {
                assert!(!is_echo_reply(&bad, gw, gw, &echo()), "{gw}: {what}");
            }
            // Our own request (a looped-back copy) is no reply.
            let mut request = good.clone();
            request[at] = if v6 { 128 } else { 8 };
            assert!(!is_echo_reply(&request, gw, gw, &echo()), "{gw}: request");
            // Right id, sequence and cookie, but not from the gateway.
            let other: IpAddr = if v6 {
                "2001:db8::66".parse().unwrap()
            } else {
                "198.18.0.66".parse().unwrap()
            };
            assert!(!is_echo_reply(&good, other, gw, &echo()), "{gw}: source");
            // Cut short.
            assert!(!is_echo_reply(&good[..at + 20], gw, gw, &echo()));
        }
        // IPv4: the header's source must be the gateway too, and the
        // packet ICMP.
        let req = echo_request(false, &echo());
        let spoofed = reply_to(&req, false, "198.18.0.66".parse().unwrap());
        assert!(!is_echo_reply(&spoofed, GW4, GW4, &echo()));
        let mut not_icmp = reply_to(&req, false, GW4);
        not_icmp[9] = 17;
        assert!(!is_echo_reply(&not_icmp, GW4, GW4, &echo()));
    }

    /// In the namespace lab (198.18.0.0/15 and 2001:db8::/32 only, never
    /// the host's namespace): a node pings the client as its gateway over
    /// the connected socket, and an address nobody has goes unanswered.
    #[test]
    fn the_gateway_answers_in_the_lab_and_a_silent_one_does_not() {
        if !fechter_linux::lab::require_lab("health::the_gateway_answers_in_the_lab") {
            return;
        }
        let lab = fechter_linux::Lab::new(1).expect("the lab");
        let (v4, v6) = (IpAddr::V4(lab.client_ipv4()), IpAddr::V6(lab.client_ipv6()));
        let silent: IpAddr = "198.18.0.253".parse().unwrap();
        let got = fechter_linux::lab::block_on_in_ns(&lab.ns_name(0), move || async move {
            let second = Duration::from_secs(1);
            // The first echo may wait for neighbour resolution.
            let v4_ok = ping_once(v4, second).await || ping_once(v4, second).await;
            let v6_ok = ping_once(v6, second).await || ping_once(v6, second).await;
            let mut p = Pinger::new(v4).unwrap();
            let sequence = [p.ping(1, second).await, p.ping(2, second).await];
            let silent_ok = ping_once(silent, Duration::from_millis(300)).await;
            (v4_ok, v6_ok, sequence, silent_ok)
        })
        .expect("running in the lab");
        assert_eq!(got, (true, true, [true, true], false));
    }

    #[test]
    fn identifiers_and_cookies_are_random() {
        let a: [u8; COOKIE_LEN] = random();
        let b: [u8; COOKIE_LEN] = random();
        assert_ne!(a, b);
    }

    #[test]
    fn sources_are_read_from_either_family() {
        let (st, _) = socket2_addr(SocketAddr::new(GW4, 0));
        assert_eq!(source_of(&st), Some(GW4));
        let (st, _) = socket2_addr(SocketAddr::new(GW6, 0));
        assert_eq!(source_of(&st), Some(GW6));
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
