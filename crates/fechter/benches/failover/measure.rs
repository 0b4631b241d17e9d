//! What the client sees during a trial: echoes every 5 ms and its
//! neighbour cache; and the CPU and memory of a process.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use fechter_linux::lab::{Lab, LineReader, PingOptions, Pinger};

/// The client's pinger (issue 7: an echo every 5 ms, stamped when read),
/// stopping by itself after 120 s (`ping -w`) whatever happens to the bench.
const PING: PingOptions = PingOptions {
    interval: Duration::from_millis(5),
    deadline_secs: 120,
    unix_times: false,
};

/// The client pinging an address every 5 ms.
pub struct Probe {
    pinger: Pinger,
}

/// What the client's pings saw.
#[derive(Debug, Clone)]
pub struct Echoes {
    /// (icmp_seq, when the answer was read), duplicates left out.
    pub answers: Vec<(u32, Instant)>,
    /// Duplicate answers (two nodes answered the same echo).
    pub duplicates: usize,
    /// Echoes sent (ping's summary), if it printed one.
    pub transmitted: Option<u32>,
    pub stopped: Instant,
}

impl Probe {
    /// Starts pinging `ip` from the lab's client; returns once 20 answers
    /// (100 ms) came back, or an error after 3 s without them.
    pub fn start(lab: &Lab, ip: IpAddr) -> Result<Probe, String> {
        let pinger = Pinger::start(lab, &lab.client_ns(), ip, &PING).map_err(|e| e.to_string())?;
        if !pinger.wait_answers(20, Duration::from_secs(3)) {
            return Err(format!("the client got no answers from {ip}"));
        }
        Ok(Probe { pinger })
    }

    pub fn stop(self) -> Echoes {
        let report = self.pinger.finish();
        let stopped = Instant::now();
        let mut answers = Vec::new();
        let mut seen = BTreeSet::new();
        let mut duplicates = 0;
        for echo in report.echoes {
            let Some(seq) = echo.seq else { continue };
            if echo.duplicate || !seen.insert(seq) {
                duplicates += 1;
            } else {
                answers.push((seq, echo.read_at));
            }
        }
        Echoes {
            answers,
            duplicates,
            transmitted: report.transmitted,
            stopped,
        }
    }
}

impl Echoes {
    /// The longest time without an answer between `from` and the end: the
    /// outage the client saw (the time from the end of the last answer
    /// before a gap to the first answer after it; a gap still open when the
    /// probe stopped counts up to then).
    pub fn outage(&self, from: Instant) -> Duration {
        let mut times: Vec<Instant> = self.answers.iter().map(|a| a.1).collect();
        times.sort();
        let mut prev = times.iter().rev().find(|&&t| t <= from).copied();
        let mut longest = Duration::ZERO;
        for &t in times.iter().filter(|&&t| t > from) {
            let start = prev.unwrap_or(from);
            longest = longest.max(t - start);
            prev = Some(t);
        }
        let tail = self.stopped - prev.unwrap_or(from);
        longest.max(tail)
    }

    /// Echoes that got no answer, leaving out the ones still in flight when
    /// the probe stopped (sent after the last answer, within 50 ms of it).
    pub fn lost(&self) -> u32 {
        let Some(tx) = self.transmitted else {
            return 0;
        };
        let answered: BTreeSet<u32> = self.answers.iter().map(|a| a.0).collect();
        let last = self.answers.iter().max_by_key(|a| a.1);
        let in_flight_from = match last {
            Some(&(seq, at)) if self.stopped - at < Duration::from_millis(50) => seq + 1,
            _ => tx + 1,
        };
        (1..=tx)
            .filter(|s| *s < in_flight_from && !answered.contains(s))
            .count() as u32
    }
}

/// `ip monitor neigh` in the client's namespace: every change of its
/// neighbour entries, stamped when read.
pub struct NeighWatch {
    reader: LineReader<(Instant, String)>,
}

impl NeighWatch {
    pub fn start(lab: &Lab) -> Result<NeighWatch, String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &lab.client_ns(), "monitor", "neigh"]);
        let reader = LineReader::spawn(cmd, |at, l| {
            l.contains("lladdr").then(|| (at, l.to_owned()))
        })
        .map_err(|e| e.to_string())?;
        Ok(NeighWatch { reader })
    }

    /// When (after `from`) the entry for `ip` first named `mac`.
    pub fn stop(self, ip: IpAddr, mac: &str, from: Instant) -> Option<Duration> {
        let ip = format!("{ip} ");
        self.reader
            .stop()
            .into_iter()
            .filter(|(at, l)| *at >= from && l.starts_with(&ip) && !l.starts_with("Deleted"))
            .find(|(_, l)| {
                l.split_whitespace()
                    .skip_while(|w| *w != "lladdr")
                    .nth(1)
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            })
            .map(|(at, _)| at - from)
    }
}

/// CPU time a process has run (ns, `/proc/PID/schedstat`: exact, not
/// sampled by ticks), summed over its threads.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory of a process, kB.
pub fn rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU share (percent of one core) and RSS (kB) of each group of
/// processes (summed within a group) over the same `span`; `None` for a
/// group with a process that went away.
pub fn usage(groups: &[Vec<i32>], span: Duration) -> Vec<Option<(f64, u64)>> {
    let cpu = |g: &Vec<i32>| g.iter().map(|&p| cpu_ns(p)).sum::<Option<u64>>();
    let t0: Vec<Option<u64>> = groups.iter().map(cpu).collect();
    let w0 = Instant::now();
    std::thread::sleep(span);
    let t1: Vec<Option<u64>> = groups.iter().map(cpu).collect();
    let wall = w0.elapsed().as_nanos() as f64;
    groups
        .iter()
        .zip(t0.into_iter().zip(t1))
        .map(|(g, (a, b))| {
            let rss = g.iter().map(|&p| rss_kb(p)).sum::<Option<u64>>()?;
            Some(((b? - a?) as f64 / wall * 100.0, rss))
        })
        .collect()
}

/// The cost of one wake-up on this machine: an empty `epoll_wait` with a
/// timeout, `n` times; returns the CPU time per wake-up.
pub fn wakeup_cost(every: Duration, n: u32) -> Duration {
    // SAFETY: plain syscalls on a descriptor we own and close.
    unsafe {
        let ep = libc::epoll_create1(0);
        if ep < 0 {
            return Duration::ZERO;
        }
        let t0 = thread_cpu_ns().unwrap_or(0);
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        for _ in 0..n {
            libc::epoll_wait(ep, &mut ev, 1, every.as_millis() as i32);
        }
        let t1 = thread_cpu_ns().unwrap_or(0);
        libc::close(ep);
        Duration::from_nanos((t1 - t0) / u64::from(n.max(1)))
    }
}

/// This thread's CPU time as the scheduler accounts it.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
