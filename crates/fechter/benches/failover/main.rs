//! The failover benchmark (issue 7): what a client sees when the machine
//! serving an address fails, for fechter and, in the same run and the same
//! kind of lab, keepalived (VRRP unicast) at three advert intervals.
//!
//! `cargo bench -p fechter --bench failover -- [OPTIONS]` (as root; builds
//! network namespaces with a unique prefix and removes them, also on
//! Ctrl-C or a panic). `--help` lists the options; docs/performance.md has
//! the figures and how they were taken.
//!
//! Per subject and fault, N trials: the subject settles (one holder,
//! everything calm), the client starts pinging the address every 5 ms and
//! watching its neighbour cache, a sampler reads every node's kernel every
//! 10 ms, the fault hits the holder, the run watches for the subject's
//! window, then repairs the fault. The double faults (two-killed,
//! two-dead) hit the holder and the next node at once; a two-node section
//! (`--rows pairs`) runs fechter and keepalived on two nodes.

#[path = "../../tests/e2e_support/mod.rs"]
mod e2e_support;
mod fechter_subject;
mod keepalived;
mod measure;
mod rows;
mod subject;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::e2e_support::{Sampler, bit};
use crate::fechter_subject::Fechter;
use crate::keepalived::Keepalived;
use crate::measure::{NeighWatch, Probe};
use crate::subject::{Fault, Subject, vip};

#[derive(Parser, Debug)]
#[command(about = "Failover benchmark: fechter beside keepalived in a namespace lab")]
pub struct Options {
    /// Trials per subject and fault.
    #[arg(long, default_value_t = 10)]
    trials: usize,
    /// Faults to run (comma-separated): machine-death, sigkill, sigterm,
    /// down, carrier-loss, gateway-loss, partition, two-killed (the holder's
    /// and the next node's daemons SIGKILLed at once), two-dead (the holder
    /// and the next node die at once); default all. The two-node section
    /// (`--rows pairs`) always runs machine-death, sigterm, down, partition.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Subjects (comma-separated): fechter, fast (fechter's fast profile),
    /// ka1, ka0.1, ka0.01 (keepalived at advert_int 1 / 0.1 / 0.01 s);
    /// default all.
    #[arg(long, value_delimiter = ',')]
    subjects: Vec<String>,
    /// Extra rows (comma-separated): idle, saturated, sim, scale, ten,
    /// pairs (two-node clusters: fechter with and without `--gateway` when
    /// `fechter` is among the subjects, keepalived 0.01 s when `ka0.01` is);
    /// default all. `none` for the fault table only.
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// Seconds of idle over which CPU and RSS are measured.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Seconds of both cores saturated for the false-failover count.
    #[arg(long, default_value_t = 60)]
    saturated_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Options {
    fn wants_row(&self, row: &str) -> bool {
        self.rows.is_empty() || self.rows.iter().any(|r| r == row)
    }

    fn wants_subject(&self, s: &str) -> bool {
        self.subjects.is_empty() || self.subjects.iter().any(|x| x == s)
    }
}

/// One trial's figures.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Longest gap between answered echoes from the fault on.
    pub outage: Duration,
    /// Echoes without an answer.
    pub lost: u32,
    /// Longest time two nodes had the address in their kernels (nodes cut
    /// off by the fault itself, whose link or carrier is down, left out:
    /// [`Fault::cuts_off`]).
    pub overlap: Duration,
    /// Until the client's neighbour entry named the new holder.
    pub neighbour: Option<Duration>,
    /// Duplicate echo answers.
    pub duplicates: usize,
    /// Two nodes still had the address when the window ended.
    pub overlap_open: bool,
}

/// Runs one trial of `fault` on `s`.
fn trial(s: &mut dyn Subject, fault: Fault) -> Result<Trial, String> {
    let holder = s.settle()?;
    let ip = vip();
    let (sampler, neigh, probe) = {
        let lab = s.lab();
        let sampler = Sampler::start(lab, ip);
        let neigh = NeighWatch::start(lab)?;
        let probe = Probe::start(lab, ip)?;
        (sampler, neigh, probe)
    };
    let t0 = Instant::now();
    let injected = s.inject(fault, holder);
    if injected.is_ok() {
        std::thread::sleep(s.window(fault));
    }
    let echoes = probe.stop();
    let timeline = sampler.stop().since(t0);
    let nodes = s.lab().nodes();
    let everyone = (0..nodes).fold(0, |m, n| m | bit(n));
    // Every node the fault hit: none of them can be where the address
    // moved to (a killed holder's kernel may still have its copy).
    let victims = fault
        .victims(holder, nodes)
        .into_iter()
        .fold(0, |m, n| m | bit(n));
    let among = if fault.cuts_off() {
        everyone & !victims
    } else {
        everyone
    };
    let moved_to = {
        let last = timeline.last_set() & !victims;
        (last.count_ones() == 1).then(|| last.trailing_zeros() as usize)
    };
    let neighbour = match moved_to {
        Some(n) => {
            let mac = s.lab().mac_of(n).map_err(|e| e.to_string())?;
            neigh.stop(ip, &e2e_support::mac(mac), t0)
        }
        None => None,
    };
    let repaired = s.repair(fault, holder);
    injected?;
    repaired?;
    Ok(Trial {
        outage: echoes.outage(t0),
        lost: echoes.lost(),
        overlap: timeline.longest_overlap(among),
        neighbour,
        duplicates: echoes.duplicates,
        overlap_open: (timeline.last_set() & among).count_ones() >= 2,
    })
}

/// Median, min and max.
pub fn stats(mut v: Vec<Duration>) -> Option<(Duration, Duration, Duration)> {
    v.sort();
    Some((*v.first()?, v[v.len() / 2], *v.last()?))
}

fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

/// One line of the table for (subject, fault).
struct Line {
    fault: Fault,
    subject: String,
    trials: Vec<Trial>,
    failed: Vec<String>,
    unsupported: Option<&'static str>,
}

impl Line {
    fn median_outage(&self) -> Option<Duration> {
        stats(self.trials.iter().map(|t| t.outage).collect()).map(|s| s.1)
    }

    fn render(&self, reference: Option<Duration>) -> String {
        if let Some(why) = self.unsupported {
            return format!(
                "| {} | {} | n/a: {why} | | | | |",
                self.fault.name(),
                self.subject
            );
        }
        let Some((lo, med, hi)) = stats(self.trials.iter().map(|t| t.outage).collect()) else {
            return format!(
                "| {} | {} | every trial failed: {} | | | | |",
                self.fault.name(),
                self.subject,
                self.failed.join("; ")
            );
        };
        let mut lost: Vec<u32> = self.trials.iter().map(|t| t.lost).collect();
        lost.sort_unstable();
        let (_, ov_med, ov_max) =
            stats(self.trials.iter().map(|t| t.overlap).collect()).unwrap_or_default();
        let neigh: Vec<Duration> = self.trials.iter().filter_map(|t| t.neighbour).collect();
        let neigh = match stats(neigh.clone()) {
            Some((_, m, _)) => format!("{} ({}/{})", ms(m), neigh.len(), self.trials.len()),
            None => "never".into(),
        };
        let dups: usize = self.trials.iter().map(|t| t.duplicates).sum();
        let open = self.trials.iter().filter(|t| t.overlap_open).count();
        let open = if open > 0 {
            format!(
                "; still two at the end of the window in {open}/{}",
                self.trials.len()
            )
        } else {
            String::new()
        };
        let ratio = match reference {
            Some(r) if !r.is_zero() => format!("{:.1}×", med.as_secs_f64() / r.as_secs_f64()),
            _ => String::new(),
        };
        let failed = if self.failed.is_empty() {
            String::new()
        } else {
            format!(" ({} failed)", self.failed.len())
        };
        format!(
            "| {} | {}{} | {} / {} / {} | {} ({}) | {} ({}){} | {} | {}{} |",
            self.fault.name(),
            self.subject,
            failed,
            ms(lo),
            ms(med),
            ms(hi),
            lost[lost.len() / 2],
            lost[lost.len() - 1],
            ms(ov_med),
            ms(ov_max),
            open,
            neigh,
            ratio,
            if dups > 0 {
                format!("; {dups} duplicate answers")
            } else {
                String::new()
            },
        )
    }
}

/// The header and the lines of a faults table, grouped by fault in the
/// order of `faults`; the ratio is each median outage over `reference`'s
/// (the subject's label) for the same fault.
fn print_table(lines: &[Line], faults: &[Fault], reference: &str) {
    println!(
        "| fault | subject | outage min / median / max | lost probes median (max) | two holders median (max) | neighbour entry median (trials) | outage vs fechter |"
    );
    println!("|---|---|---|---|---|---|---|");
    for fault in faults {
        let median = lines
            .iter()
            .find(|l| l.fault == *fault && l.subject == reference)
            .and_then(Line::median_outage);
        for l in lines.iter().filter(|l| l.fault == *fault) {
            let r = if l.subject == reference { None } else { median };
            println!("{}", l.render(r));
        }
    }
}

/// Runs every wanted fault `trials` times on `s`.
fn run_faults(s: &mut dyn Subject, faults: &[Fault], trials: usize) -> Vec<Line> {
    let mut lines = Vec::new();
    for &fault in faults {
        let mut line = Line {
            fault,
            subject: s.label(),
            trials: Vec::new(),
            failed: Vec::new(),
            unsupported: s.unsupported(fault),
        };
        if line.unsupported.is_none() {
            for k in 0..trials {
                if stopping() {
                    line.failed.push("interrupted".into());
                    break;
                }
                match trial(s, fault) {
                    Ok(t) => {
                        eprintln!(
                            "  {} {} #{k}: outage {} ms, lost {}, two holders {} ms, neighbour {:?}",
                            s.label(),
                            fault.name(),
                            t.outage.as_millis(),
                            t.lost,
                            t.overlap.as_millis(),
                            t.neighbour.map(|d| d.as_millis())
                        );
                        line.trials.push(t);
                    }
                    Err(e) => {
                        eprintln!("  {} {} #{k}: FAILED: {e}", s.label(), fault.name());
                        line.failed.push(e);
                    }
                }
            }
        }
        lines.push(line);
    }
    lines
}

/// A subject the run can start.
enum Kind {
    Fechter,
    Fast,
    Keepalived(Duration),
}

impl Kind {
    fn all() -> Vec<(&'static str, Kind)> {
        vec![
            ("fechter", Kind::Fechter),
            ("fast", Kind::Fast),
            ("ka1", Kind::Keepalived(Duration::from_secs(1))),
            ("ka0.1", Kind::Keepalived(Duration::from_millis(100))),
            ("ka0.01", Kind::Keepalived(Duration::from_millis(10))),
        ]
    }

    /// Starts the subject; fechter's also gets the saturated run.
    fn start(
        &self,
        opts: &Options,
        saturated: &mut Vec<String>,
    ) -> Result<Box<dyn Subject>, String> {
        let mut f = match self {
            Kind::Fechter => Fechter::start("fechter", None)?,
            Kind::Fast => Fechter::start("fechter fast", Some(rows::fast_profile()?))?,
            Kind::Keepalived(advert) => return Ok(Box::new(Keepalived::start(*advert)?)),
        };
        if opts.wants_row("saturated") {
            saturated.push(rows::saturated(
                &mut f,
                Duration::from_secs(opts.saturated_secs),
            ));
        }
        Ok(Box::new(f))
    }
}

/// Set by SIGINT/SIGTERM: the run stops after the current trial and
/// removes its labs.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

fn main() {
    let opts = Options::parse();
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    if !fechter_linux::lab::require_lab("failover bench") {
        eprintln!("the failover benchmark needs root and `ip netns` (see above)");
        std::process::exit(2);
    }
    let faults: Vec<Fault> = if opts.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        opts.faults
            .iter()
            .map(|f| {
                Fault::parse(f).unwrap_or_else(|| {
                    eprintln!("unknown fault {f:?}; see --help");
                    std::process::exit(2)
                })
            })
            .collect()
    };
    let started = Instant::now();
    println!("# fechter failover benchmark");
    println!();
    println!(
        "{} trials per fault; client echoes every 5 ms; kernels sampled every 10 ms; one wake-up costs {} µs of CPU on this machine (empty epoll_wait, 40 ms timeout).",
        opts.trials,
        measure::wakeup_cost(Duration::from_millis(40), 50).as_micros()
    );
    let mut lines: Vec<Line> = Vec::new();
    let mut idle: Vec<String> = Vec::new();
    let mut saturated: Vec<String> = Vec::new();
    for (name, kind) in Kind::all() {
        if !opts.wants_subject(name) || stopping() {
            continue;
        }
        eprintln!("== {name}");
        let mut s = match kind.start(&opts, &mut saturated) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{name}: cannot start: {e}");
                idle.push(format!("| {name} | cannot start: {e} | |"));
                continue;
            }
        };
        if opts.wants_row("idle") {
            idle.push(rows::idle(s.as_mut(), Duration::from_secs(opts.idle_secs)));
        }
        lines.extend(run_faults(s.as_mut(), &faults, opts.trials));
    }
    println!();
    println!("## Faults (3 nodes; ms; median over trials)");
    println!();
    print_table(&lines, &faults, "fechter");
    if !idle.is_empty() {
        println!();
        println!(
            "## Idle ({} s; every process of each node; max over the nodes)",
            opts.idle_secs
        );
        println!();
        println!("| subject | CPU % of a core (max node / mean) | RSS |");
        println!("|---|---|---|");
        for l in &idle {
            println!("{l}");
        }
    }
    if !stopping() {
        rows::extra(&opts, &saturated);
    }
    println!();
    println!("(run took {:?})", started.elapsed());
}
