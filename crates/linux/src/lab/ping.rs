//! The lab's client pinging an address, and the child-output reader it is
//! built on.
//!
//! One pinger serves the demo (which prints the outage), the end-to-end
//! tests (which assert on replies and gaps) and the failover benchmark
//! (which stamps every echo and counts losses and duplicates): each picks
//! its [`PingOptions`] and reads the [`PingReport`] its own way.
//!
//! [`LineReader`] runs a child with its stdout read line by line on a
//! thread; the benchmark also watches `ip monitor neigh` with it. The
//! child is guarded ([`guard_child`]) and killed and reaped on drop, also
//! while unwinding from a panic; the reading thread is joined.

use std::io::{self, BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Lab, LabError, command_line, guard_child, poll};

/// The current UNIX time in seconds, comparable with [`Echo::unix`].
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Stops a child with SIGINT (so that, e.g., ping prints its summary),
/// waits up to 3 s for it, then kills it; reaps it either way.
pub fn interrupt_and_reap(mut child: Child) {
    // SAFETY: kill on the pid of our own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let exited = poll(Duration::from_secs(3), Duration::from_millis(5), || {
        child.try_wait().ok().flatten()
    });
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A child whose stdout a thread reads: of every line, it keeps what the
/// parser makes of it (given the monotonic time the line was read).
/// Killed, reaped and its thread joined on drop.
pub struct LineReader<T> {
    child: Option<Child>,
    thread: Option<JoinHandle<()>>,
    items: Arc<Mutex<Vec<T>>>,
}

impl<T: Send + 'static> LineReader<T> {
    /// Starts `cmd` (stdin and stderr to `/dev/null`, guarded by
    /// [`guard_child`]) and reads its stdout.
    pub fn spawn(
        mut cmd: Command,
        parse: impl Fn(Instant, &str) -> Option<T> + Send + 'static,
    ) -> Result<LineReader<T>, LabError> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        guard_child(&mut cmd);
        let line = command_line(&cmd);
        let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: line.clone(),
            source,
        })?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LabError::Spawn {
                cmd: line,
                source: io::Error::other("no stdout"),
            });
        };
        let items = Arc::new(Mutex::new(Vec::new()));
        let sink = items.clone();
        let thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = Instant::now();
                if let Some(item) = parse(at, &line) {
                    lock(&sink).push(item);
                }
            }
        });
        Ok(LineReader {
            child: Some(child),
            thread: Some(thread),
            items,
        })
    }
}

impl<T> LineReader<T> {
    /// Items kept so far.
    pub fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// Whether nothing was kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks at the items kept so far (the reader waits meanwhile).
    pub fn with<R>(&self, f: impl FnOnce(&[T]) -> R) -> R {
        f(&lock(&self.items))
    }

    /// Stops the child with SIGINT ([`interrupt_and_reap`]), waits for the
    /// rest of its output and returns every item kept.
    pub fn stop(mut self) -> Vec<T> {
        if let Some(child) = self.child.take() {
            interrupt_and_reap(child);
        }
        self.join();
        std::mem::take(&mut *lock(&self.items))
    }

    /// Kills (SIGKILL) and reaps the child, joins the reader. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join();
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T> Drop for LineReader<T> {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a [`Pinger`] pings: `ping -n [-D] -i INTERVAL -W 1 -w DEADLINE IP`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingOptions {
    /// Time between echoes (`-i`, e.g. 10 ms).
    pub interval: Duration,
    /// The longest ping runs, whatever happens to its parent (`-w`).
    pub deadline_secs: u32,
    /// Whether ping stamps each answer with the UNIX time it came (`-D`),
    /// for [`Echo::unix`] and the [`PingReport`] times.
    pub unix_times: bool,
}

/// One answer as the pinger read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Echo {
    /// When the line was read (monotonic).
    pub read_at: Instant,
    /// When it came, in UNIX seconds, as ping stamped it (`-D` only).
    pub unix: Option<f64>,
    /// Its `icmp_seq`.
    pub seq: Option<u32>,
    /// ping marked it `DUP!` (a second answer to the same echo).
    pub duplicate: bool,
}

/// A line of ping's output worth keeping.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PingLine {
    Echo(Echo),
    /// The summary's "N packets transmitted".
    Transmitted(u32),
}

/// `[1700000000.123456] 64 bytes from 198.18.0.50: icmp_seq=1 ttl=64 ...`
/// (`[...]` with `-D` only, `(DUP!)` at the end for a duplicate), or the
/// summary's `250 packets transmitted, 240 received, ...`.
fn parse_line(at: Instant, line: &str) -> Option<PingLine> {
    if line.contains(" bytes from ") {
        let unix = line
            .strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .and_then(|t| t.parse::<f64>().ok());
        let seq = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("icmp_seq="))
            .and_then(|s| s.parse::<u32>().ok());
        return Some(PingLine::Echo(Echo {
            read_at: at,
            unix,
            seq,
            duplicate: line.contains("DUP!"),
        }));
    }
    let sent = line.split(" packets transmitted").next()?;
    line.contains("packets transmitted")
        .then(|| sent.trim().parse().ok())
        .flatten()
        .map(PingLine::Transmitted)
}

/// `ping` from a lab namespace to one address, its answers read as they
/// come. Killed and reaped on drop; [`Pinger::finish`] stops it gently.
pub struct Pinger {
    ip: IpAddr,
    reader: LineReader<PingLine>,
}

impl Pinger {
    /// Starts pinging `ip` from namespace `from_ns` of `lab`.
    pub fn start(
        lab: &Lab,
        from_ns: &str,
        ip: IpAddr,
        options: &PingOptions,
    ) -> Result<Pinger, LabError> {
        let mut cmd = lab.command(from_ns, "ping");
        cmd.arg("-n");
        if options.unix_times {
            cmd.arg("-D");
        }
        cmd.args(["-i", &options.interval.as_secs_f64().to_string(), "-W", "1"])
            .args(["-w", &options.deadline_secs.to_string()])
            .arg(ip.to_string());
        let reader = LineReader::spawn(cmd, parse_line)?;
        Ok(Pinger { ip, reader })
    }

    /// The address pinged.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Answers so far (duplicates included).
    pub fn count(&self) -> usize {
        self.reader.with(|lines| {
            lines
                .iter()
                .filter(|l| matches!(l, PingLine::Echo(_)))
                .count()
        })
    }

    /// Waits (polling every 5 ms, at most `limit`) for `n` answers; whether
    /// they came.
    pub fn wait_answers(&self, n: usize, limit: Duration) -> bool {
        poll(limit, Duration::from_millis(5), || {
            (self.count() >= n).then_some(())
        })
        .is_some()
    }

    /// The answers so far; ping keeps running.
    pub fn report(&self) -> PingReport {
        self.reader.with(|lines| PingReport::new(self.ip, lines))
    }

    /// Stops ping with SIGINT, so that it prints its summary
    /// ([`PingReport::transmitted`]), and returns every answer.
    pub fn finish(self) -> PingReport {
        let ip = self.ip;
        PingReport::new(ip, &self.reader.stop())
    }
}

/// The answers a [`Pinger`] got.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    /// The address pinged.
    pub ip: IpAddr,
    /// Every answer in the order read, duplicates included.
    pub echoes: Vec<Echo>,
    /// Echoes sent, from ping's summary (after [`Pinger::finish`]).
    pub transmitted: Option<u32>,
}

impl PingReport {
    fn new(ip: IpAddr, lines: &[PingLine]) -> PingReport {
        let mut report = PingReport {
            ip,
            echoes: Vec::new(),
            transmitted: None,
        };
        for line in lines {
            match *line {
                PingLine::Echo(e) => report.echoes.push(e),
                PingLine::Transmitted(n) => report.transmitted = Some(n),
            }
        }
        report
    }

    /// When the answers came, in UNIX seconds (with `-D`:
    /// [`PingOptions::unix_times`]; empty without).
    pub fn unix_times(&self) -> Vec<f64> {
        self.echoes.iter().filter_map(|e| e.unix).collect()
    }

    /// The longest time between two answers ([`PingReport::unix_times`]):
    /// the outage the client saw.
    pub fn longest_gap(&self) -> Duration {
        self.unix_times()
            .windows(2)
            .map(|w| Duration::from_secs_f64((w[1] - w[0]).max(0.0)))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// From `event` (UNIX seconds, [`unix_now`]) to the first answer after it.
    pub fn answer_after(&self, event: f64) -> Option<Duration> {
        self.unix_times()
            .into_iter()
            .find(|&t| t > event)
            .map(|t| Duration::from_secs_f64(t - event))
    }

    /// Answers received.
    pub fn count(&self) -> usize {
        self.echoes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_lines() {
        let at = Instant::now();
        let stamped =
            "[1700000000.250000] 64 bytes from 198.18.0.50: icmp_seq=7 ttl=64 time=0.05 ms";
        assert_eq!(
            parse_line(at, stamped),
            Some(PingLine::Echo(Echo {
                read_at: at,
                unix: Some(1_700_000_000.25),
                seq: Some(7),
                duplicate: false,
            }))
        );
        let dup = "64 bytes from 198.18.0.50: icmp_seq=8 ttl=64 time=0.05 ms (DUP!)";
        assert_eq!(
            parse_line(at, dup),
            Some(PingLine::Echo(Echo {
                read_at: at,
                unix: None,
                seq: Some(8),
                duplicate: true,
            }))
        );
        let summary = "250 packets transmitted, 240 received, 4% packet loss, time 1250ms";
        assert_eq!(parse_line(at, summary), Some(PingLine::Transmitted(250)));
        for other in [
            "PING 198.18.0.50 (198.18.0.50) 56(84) bytes of data.",
            "From 198.18.0.100 icmp_seq=3 Destination Host Unreachable",
            "--- 198.18.0.50 ping statistics ---",
            "rtt min/avg/max/mdev = 0.030/0.050/0.090/0.010 ms",
            "",
        ] {
            assert_eq!(parse_line(at, other), None, "{other:?}");
        }
    }

    #[test]
    fn report_gaps_and_first_answer() {
        let at = Instant::now();
        let echo = |unix: f64, seq: u32| {
            PingLine::Echo(Echo {
                read_at: at,
                unix: Some(unix),
                seq: Some(seq),
                duplicate: false,
            })
        };
        let ip: IpAddr = "198.18.0.50".parse().unwrap();
        let r = PingReport::new(
            ip,
            &[
                echo(100.0, 1),
                echo(100.01, 2),
                echo(100.5, 3),
                echo(100.51, 4),
                PingLine::Transmitted(60),
            ],
        );
        assert_eq!(r.count(), 4);
        assert_eq!(r.transmitted, Some(60));
        assert_eq!(r.longest_gap().as_millis(), 490);
        assert_eq!(r.answer_after(100.2).map(|d| d.as_millis()), Some(300));
        assert_eq!(r.answer_after(101.0), None);
        let empty = PingReport::new(ip, &[]);
        assert_eq!(empty.longest_gap(), Duration::ZERO);
    }

    #[test]
    fn line_reader_keeps_parsed_lines() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo skip; echo two"]);
        let reader = LineReader::spawn(cmd, |_, l| (l != "skip").then(|| l.to_owned())).unwrap();
        let mut seen = Vec::new();
        for _ in 0..400 {
            seen = reader.with(<[String]>::to_vec);
            if seen.len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(seen, ["one", "two"]);
        assert_eq!(reader.stop(), ["one", "two"]);
    }

    #[test]
    fn line_reader_stops_and_drops_a_running_child() {
        let t0 = Instant::now();
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let reader = LineReader::spawn(cmd, |_, l| Some(l.to_owned())).unwrap();
        assert!(reader.is_empty());
        assert!(reader.stop().is_empty());
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        drop(LineReader::spawn(cmd, |_, l| Some(l.to_owned())).unwrap());
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }
}
