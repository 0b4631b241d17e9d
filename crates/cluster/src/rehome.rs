//! How long a cluster takes to re-home every address of a crashed node,
//! measured in the deterministic simulator ([`Sim`]): virtual time, seeded,
//! with the recording platform's interfaces as the truth (an address is
//! *held* by a node when it is on that node's simulated interface, as
//! [`Sim::holders`] reports: what a client would reach).
//!
//! The crashed node is the one holding the most addresses among the nodes
//! that are **not the leader**, so the figure is the address failover path
//! (standby heartbeat timeout, takeover, install) alone, not a leader
//! failover as well.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use fechter_core::replica::Admin;
use fechter_core::{AddrSpec, NodeId};

use crate::engine::Timings;
use crate::sim::Sim;

/// The result of one [`measure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rehome {
    pub nodes: usize,
    pub addresses: usize,
    /// How many addresses the crashed node held.
    pub victim_held: usize,
    /// Virtual time from the crash until every address the victim held is
    /// held by exactly one running node.
    pub rehomed_after: Duration,
    /// Virtual time from the crash until the first of those addresses was
    /// held again.
    pub first: Duration,
    /// Virtual time from the crash until the median (the lower one for an
    /// even count) of those addresses was held again.
    pub median: Duration,
    /// Addresses (any, not only the victim's) held by two running nodes at
    /// once at any sampled moment after the crash, make-before-break
    /// hand-offs included (a crash moves only the victim's addresses, each
    /// to its standby, so none is expected). Should be 0.
    pub duplicates: usize,
    /// Real (wall) time the whole simulation took.
    pub wall: Duration,
}

/// Bound on cluster formation (membership and replicas converged), virtual.
pub const FORM_LIMIT: Duration = Duration::from_secs(60);
/// Bound on settling after every node is up, on top of `maturity` and
/// `lead_grace`, virtual.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// Bound on re-homing after the crash, virtual.
pub const REHOME_LIMIT: Duration = Duration::from_secs(30);
/// After re-homing, how long duplicates are still watched for (covers the
/// leader's post-crash table once SWIM has declared the victim down).
pub const WATCH_AFTER: Duration = Duration::from_secs(1);
/// The sampling step after the crash: duplicates are checked at this
/// interval; when each address is held again is recorded at every
/// simulation step (exact virtual time).
pub const STEP: Duration = Duration::from_millis(5);
/// Formation and settling are checked at this interval (the checks cost
/// O(nodes²) and O(nodes × addresses)).
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The first address used: 198.18.1.0 (benchmarking range 198.18.0.0/15).
const FIRST_ADDR: u32 = u32::from_be_bytes([198, 18, 1, 0]);
/// How many addresses fit from 198.18.1.0 to 198.19.255.255.
pub const MAX_ADDRESSES: usize =
    (u32::from_be_bytes([198, 19, 255, 255]) - FIRST_ADDR) as usize + 1;

/// Address number `i` (below [`MAX_ADDRESSES`]): `eth0:198.18.1.0/32`
/// onwards, consecutive.
pub fn spec(i: usize) -> AddrSpec {
    let ip = Ipv4Addr::from(FIRST_ADDR + i as u32);
    format!("eth0:{ip}/32")
        .parse()
        .expect("a valid address spec")
}

/// Starts `nodes` engines (`n0`..; seeded with `seed`), adds `addresses`
/// addresses ([`spec`]) on `n0` before the others have joined, waits until
/// the cluster has formed (membership and replicas converged), brings every
/// node up (see [`off_tick`] for when), waits
/// (bounded) until the allocation is settled and every address held once,
/// crashes the non-leader holding the most addresses (ties: the lowest node
/// id) and steps the simulation until every address it held is held by
/// exactly one running node again, then watches [`WATCH_AFTER`] longer for
/// duplicates.
///
/// *Settled* means: every running node follows the same leader and acts on
/// the same allocation, with no hand-off in progress, every address placed
/// and on exactly its holder's interface, and the addresses spread over
/// `min(nodes, addresses)` holders (so every node had matured).
///
/// Every phase is bounded in virtual time ([`FORM_LIMIT`],
/// [`SETTLE_LIMIT`], [`REHOME_LIMIT`]); an `Err` names what did not happen.
pub fn measure(
    seed: u64,
    nodes: usize,
    addresses: usize,
    timings: Timings,
) -> Result<Rehome, String> {
    let wall = Instant::now();
    if nodes < 2 {
        return Err(format!(
            "{nodes} node(s): need at least 2 (one to crash, one to lead)"
        ));
    }
    if !(1..=MAX_ADDRESSES).contains(&addresses) {
        return Err(format!("{addresses} addresses: need 1..={MAX_ADDRESSES}"));
    }
    let settle_limit = timings.maturity + timings.lead_grace + SETTLE_LIMIT;
    let mut sim = Sim::cluster(seed, nodes, timings);
    let names: Vec<String> = (0..nodes).map(|i| format!("n{i}")).collect();

    // Add the addresses on n0 (as the CLI would) before the others have
    // joined: they reach everyone in bulk by anti-entropy, rather than as
    // one direct datagram per address to every member, each costing the
    // receiver an evaluation (about 100,000 of them at 100 nodes: a third
    // of the run). Then form.
    let now = sim.now();
    for i in 0..addresses {
        sim.engine_mut("n0")
            .add_address(now, spec(i))
            .map_err(|e| format!("adding {}: {e}", spec(i)))?;
    }
    run_checking(&mut sim, FORM_LIMIT, |s| {
        s.converged_membership() && s.converged_state()
    })
    .ok_or_else(|| {
        format!("seed {seed}: {nodes} nodes did not form a cluster within {FORM_LIMIT:?}")
    })?;

    // Bring every node up at once, timed so that all of them mature
    // between two leader ticks.
    let wait = off_tick(&sim);
    sim.run_for(wait);
    let now = sim.now();
    for n in &names {
        sim.engine_mut(n).update_own(now, |r| r.admin = Admin::Up);
    }
    run_checking(&mut sim, settle_limit, |s| settled(s, nodes, addresses)).ok_or_else(|| {
        format!(
            "seed {seed}: {nodes} nodes, {addresses} addresses: allocation not settled \
                 within {settle_limit:?} after every node was up"
        )
    })?;

    // The victim: the non-leader holding the most.
    let leader = sim
        .engine("n0")
        .leader()
        .cloned()
        .ok_or_else(|| format!("seed {seed}: no leader after settling"))?;
    let holders = sim.holders();
    let mut held: BTreeMap<&NodeId, Vec<&AddrSpec>> = BTreeMap::new();
    for (a, on) in &holders {
        held.entry(&on[0]).or_default().push(a);
    }
    let (victim, theirs) = held
        .iter()
        .filter(|(n, _)| ***n != leader)
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))
        .map(|(n, v)| {
            (
                (*n).clone(),
                v.iter().map(|a| (*a).clone()).collect::<Vec<_>>(),
            )
        })
        .ok_or_else(|| format!("seed {seed}: no node but the leader {leader} holds an address"))?;

    // Crash it and follow its addresses.
    let crash_at = sim.now;
    sim.crash(victim.as_str());
    let mut first_held: BTreeMap<AddrSpec, Duration> = BTreeMap::new();
    let mut dup: BTreeSet<AddrSpec> = BTreeSet::new();
    let mut rehomed_after = None;
    while rehomed_after.is_none() {
        if sim.now - crash_at >= REHOME_LIMIT {
            let missing: Vec<String> = theirs
                .iter()
                .filter(|a| once(&sim, a) != Some(true))
                .map(|a| a.to_string())
                .collect();
            return Err(format!(
                "seed {seed}: {} of the {} addresses of crashed {victim} not held by exactly \
                 one running node within {REHOME_LIMIT:?} (e.g. {})",
                missing.len(),
                theirs.len(),
                missing.first().map_or("-", |s| s.as_str()),
            ));
        }
        sim.run_until_cond(STEP, |s| {
            let t = s.now - crash_at;
            let mut all_once = true;
            for a in &theirs {
                match once(s, a) {
                    None => all_once = false,
                    Some(o) => {
                        first_held.entry(a.clone()).or_insert(t);
                        all_once &= o;
                    }
                }
            }
            if all_once && rehomed_after.is_none() {
                rehomed_after = Some(t);
            }
            false
        });
        dup.extend(sim.duplicates().into_iter().map(|(a, _)| a));
    }
    let watch_end = sim.now + WATCH_AFTER;
    while sim.now < watch_end {
        sim.run_for(STEP.min(watch_end - sim.now));
        dup.extend(sim.duplicates().into_iter().map(|(a, _)| a));
    }

    let mut times: Vec<Duration> = first_held.values().copied().collect();
    times.sort();
    Ok(Rehome {
        nodes,
        addresses,
        victim_held: theirs.len(),
        rehomed_after: rehomed_after.expect("loop ends only when re-homed"),
        first: times[0],
        median: times[(times.len() - 1) / 2],
        duplicates: dup.len(),
        wall: wall.elapsed(),
    })
}

/// How long to wait before bringing every node up so that they mature half
/// a leader tick away from the leader's ticks (every node of
/// [`Sim::cluster`] started at `sim.start`, so its ticks fall at multiples
/// of `leader_tick` from there).
///
/// Why: the leader sees its own record go up at once and the others' one
/// datagram (200 µs) later. Brought up on a tick, the leader alone is
/// mature at the tick two seconds later: it takes every address, at the
/// next tick hands almost all of them off, and republishes the whole table
/// on every hand-off confirmation (with 100 nodes and 1,000 addresses about
/// a hundred tables of 17 parts to 99 members within a millisecond), which
/// costs minutes of simulation and is not what is measured here.
pub fn off_tick(sim: &Sim) -> Duration {
    let tick = sim.timings.leader_tick.as_nanos();
    if tick == 0 {
        return Duration::ZERO;
    }
    let matures = (sim.now - sim.start + sim.timings.maturity).as_nanos() % tick;
    let wait = (tick / 2 + tick - matures) % tick;
    Duration::from_nanos(wait as u64)
}

/// Whether `spec` is on a running machine: `None` on none, `Some(true)` on
/// exactly one, `Some(false)` on more.
fn once(s: &Sim, spec: &AddrSpec) -> Option<bool> {
    let on = s
        .nodes
        .values()
        .filter(|n| n.node.is_some() && n.iface.contains(spec))
        .count();
    (on > 0).then_some(on == 1)
}

/// Runs in [`CHECK_EVERY`] slices until `done` or `limit` (virtual).
fn run_checking(sim: &mut Sim, limit: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
    let t0 = sim.now;
    loop {
        if done(sim) {
            return Some(sim.now - t0);
        }
        if sim.now - t0 >= limit {
            return None;
        }
        sim.run_for(CHECK_EVERY);
    }
}

/// See [`measure`].
fn settled(s: &Sim, nodes: usize, addresses: usize) -> bool {
    let mut engines = s
        .nodes
        .values()
        .filter_map(|n| n.node.as_ref().map(|x| x.engine()));
    let Some(first) = engines.next() else {
        return false;
    };
    let (Some(leader), alloc) = (first.leader(), first.allocation()) else {
        return false;
    };
    if alloc.placements.len() != addresses
        || alloc.placements.values().any(|p| p.handoff_from.is_some())
        || alloc.counts().len() != nodes.min(addresses)
    {
        return false;
    }
    if !engines.all(|e| e.leader() == Some(leader) && e.allocation() == alloc) {
        return false;
    }
    let holders = s.holders();
    holders.len() == addresses
        && holders
            .iter()
            .all(|(a, on)| on.len() == 1 && alloc.holder(a) == Some(&on[0]))
}
