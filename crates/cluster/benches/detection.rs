//! Failure detection and idle bandwidth of the cluster protocol, measured
//! in the deterministic in-memory simulator ([`Sim`]) with the default
//! [`Timings`] (virtual time; 200 µs one-way latency, no loss).
//!
//! For each cluster size and a number of seeds: the cluster forms (every
//! node attaches to `n0`); on the first few seeds the bytes every node
//! sends over 10 s of idle are counted (plaintext, before sealing); one
//! node crashes, and the time until every survivor has dropped it from
//! `members()` is measured. A false death is a live node declared down by
//! someone (a `MemberDown` event about it), or missing from someone's
//! members at the end, counted once per (observer, subject) pair.
//!
//! Run with `cargo bench -p fechter-cluster --bench detection [SIZE...]`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fechter_cluster::engine::{Event, Timings};
use fechter_cluster::sim::Sim;
use fechter_core::NodeId;

/// (nodes, seeds). 100 nodes gets fewer seeds: with every node
/// heartbeating every live member, simulating it costs ~0.6 s of real time
/// per virtual second, and the whole run should stay within ~2 minutes.
const SIZES: [(usize, u64); 4] = [(3, 20), (10, 20), (50, 20), (100, 10)];
/// Seeds (the first ones) on which idle bandwidth is measured.
const IDLE_TRIALS: u64 = 3;
const IDLE: Duration = Duration::from_secs(10);
/// How long the survivors are watched after detection, for false deaths.
const AFTER: Duration = Duration::from_secs(2);

struct Trial {
    detect: Duration,
    /// Idle bytes per second: n0 (the seed every node attaches to), and
    /// every other node. Empty when not measured.
    seed_bps: Option<f64>,
    idle_bps: Vec<f64>,
    false_deaths: usize,
}

/// (observer, subject) pairs where a running subject is missing from the
/// observer's members.
fn missing_live(sim: &Sim) -> BTreeSet<(NodeId, NodeId)> {
    let running: BTreeSet<&NodeId> = sim
        .nodes
        .iter()
        .filter(|(_, n)| n.node.is_some())
        .map(|(k, _)| k)
        .collect();
    let mut out = BTreeSet::new();
    for (name, n) in &sim.nodes {
        let Some(e) = n.node.as_ref().map(|x| x.engine()) else {
            continue;
        };
        for r in &running {
            if *r != name && !e.members().contains_key(*r) {
                out.insert((name.clone(), (*r).clone()));
            }
        }
    }
    out
}

/// `MemberDown` events about anyone but `victim` logged since index `from`.
fn false_downs(sim: &Sim, from: usize, victim: Option<&NodeId>) -> BTreeSet<(NodeId, NodeId)> {
    sim.log[from..]
        .iter()
        .filter_map(|(_, observer, ev)| match ev {
            Event::MemberDown(id) if Some(&id.node) != victim => {
                Some((observer.clone(), id.node.clone()))
            }
            _ => None,
        })
        .collect()
}

fn trial(n: usize, seed: u64, measure_idle: bool) -> Trial {
    let mut sim = Sim::cluster(seed, n, Timings::default());
    // Form: checked every 100 ms (the full check is O(n²)).
    let mut formed = false;
    for _ in 0..600 {
        sim.run_for(Duration::from_millis(100));
        if sim.converged_membership() && sim.converged_state() {
            formed = true;
            break;
        }
    }
    assert!(formed, "n={n} seed={seed}: no convergence within 60 s");
    // Let the join traffic (broadcast backlog, anti-entropy) die down.
    let log_mark = sim.log.len();
    sim.run_for(Duration::from_secs(1));

    let seed_id = NodeId::new("n0");
    let (mut seed_bps, mut idle_bps) = (None, Vec::new());
    if measure_idle {
        let before = sim.sent_bytes.clone();
        sim.run_for(IDLE);
        let bps = |k: &NodeId| {
            (sim.sent_bytes[k] - before.get(k).copied().unwrap_or(0)) as f64 / IDLE.as_secs_f64()
        };
        seed_bps = Some(bps(&seed_id));
        idle_bps = sim
            .sent_bytes
            .keys()
            .filter(|k| **k != seed_id)
            .map(bps)
            .collect();
    }
    let mut false_pairs = false_downs(&sim, log_mark, None);

    // Crash one node (never the seed n0) and time its removal everywhere.
    let victim = format!("n{}", 1 + (seed as usize) % (n - 1));
    let victim_id = NodeId::new(&victim);
    let log_mark = sim.log.len();
    sim.crash(&victim);
    let survivors: Vec<String> = (0..n)
        .map(|i| format!("n{i}"))
        .filter(|s| *s != victim)
        .collect();
    let detect = sim
        .run_until_cond(Duration::from_secs(60), |s| {
            survivors
                .iter()
                .all(|x| !s.engine(x).members().contains_key(&victim_id))
        })
        .unwrap_or_else(|| panic!("n={n} seed={seed}: crash of {victim} not detected in 60 s"));
    sim.run_for(AFTER);
    false_pairs.extend(false_downs(&sim, log_mark, Some(&victim_id)));
    false_pairs.extend(missing_live(&sim));
    Trial {
        detect,
        seed_bps,
        idle_bps,
        false_deaths: false_pairs.len(),
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; numeric arguments select sizes.
    let filter: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let t = Timings::default();
    println!(
        "Failure detection in the simulator, default timings (probe {:?}, rtt {:?}, suspect->down {:?}, gossip {:?}, heartbeat {:?}).",
        t.probe_period, t.probe_rtt, t.suspect_to_down, t.gossip_period, t.heartbeat_interval
    );
    println!(
        "Idle: plaintext bytes/s sent per node over {IDLE:?}, first {IDLE_TRIALS} seeds; n0 is the seed every node attaches to."
    );
    println!(
        "{:>5} {:>6} | {:>30} | {:>6} | {:>26} | {:>8} | {:>7}",
        "nodes",
        "seeds",
        "crash -> removed by all (ms)",
        "false",
        "idle B/s, nodes but n0",
        "idle B/s",
        "run"
    );
    println!(
        "{:>5} {:>6} | {:>6} {:>7} {:>7} {:>7} | {:>6} | {:>8} {:>8} {:>8} | {:>8} | {:>7}",
        "", "", "min", "median", "p90", "max", "deaths", "mean", "min", "max", "n0", "time"
    );
    for (n, seeds) in SIZES {
        if !filter.is_empty() && !filter.contains(&n) {
            continue;
        }
        let started = Instant::now();
        let trials: Vec<Trial> = (1..=seeds)
            .map(|seed| trial(n, seed, seed <= IDLE_TRIALS))
            .collect();
        let mut detect: Vec<Duration> = trials.iter().map(|t| t.detect).collect();
        detect.sort();
        let bps: Vec<f64> = trials.iter().flat_map(|t| t.idle_bps.clone()).collect();
        let mean = bps.iter().sum::<f64>() / bps.len() as f64;
        let min = bps.iter().copied().fold(f64::INFINITY, f64::min);
        let max = bps.iter().copied().fold(0.0, f64::max);
        let seed_bps: Vec<f64> = trials.iter().filter_map(|t| t.seed_bps).collect();
        let seed_bps = seed_bps.iter().sum::<f64>() / seed_bps.len() as f64;
        let false_deaths: usize = trials.iter().map(|t| t.false_deaths).sum();
        println!(
            "{n:>5} {seeds:>6} | {:>6} {:>7} {:>7} {:>7} | {false_deaths:>6} | {mean:>8.0} {min:>8.0} {max:>8.0} | {seed_bps:>8.0} | {:>6.1}s",
            ms(detect[0]),
            ms(quantile(&detect, 0.5)),
            ms(quantile(&detect, 0.9)),
            ms(detect[detect.len() - 1]),
            started.elapsed().as_secs_f64(),
        );
    }
}
