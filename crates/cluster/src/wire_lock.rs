//! The wire as the lock, sans I/O: which addresses to probe, what the
//! answers mean, and what to do when another machine answers for an
//! address this node holds. The rules are `fechter_core::claim`; this keeps
//! their bookkeeping (with time passed in) for [`crate::node::Node`], which
//! the agent and the simulator both drive.
//!
//! On every heartbeat tick the node (`node/wire.rs`):
//! 1. reports every claim read off the wire ([`WireLock::heard`]): an
//!    answer for an address this node holds is a conflict, settled by
//!    [`WireLock::conflict`];
//! 2. asks [`WireLock::want`] which probes to send for the addresses it is
//!    about to install ([`wanted`]);
//! 3. plans when [`WireLock::newly_free`] says an address became free; a
//!    plan installs only what [`WireLock::unproven`] does not list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use fechter_core::claim::{self, ConflictAction, Probing, Standing, Verdict, Window};
use fechter_core::{AddrSpec, Allocation, NodeId};

/// How often an address answered by another machine is probed again: a
/// killed agent's kernel answers until the address's lease ends, and the
/// standby should notice soon after.
const SERVED_REPROBE: Duration = Duration::from_millis(50);

/// At most this many probes per tick for addresses another machine answers
/// for (with many of them waiting, each is probed less often rather than the
/// segment flooded)...
const PROBES_PER_TICK: usize = 32;

/// ...and for the others (a takeover of hundreds of addresses probes them
/// all on every tick, so that none waits longer than the probe window).
const FRESH_PER_TICK: usize = 1024;

#[derive(Debug, Clone, Default)]
struct Entry {
    first_unanswered: Option<Instant>,
    unanswered: u32,
    last_sent: Option<Instant>,
    last_answer: Option<(Instant, [u8; 6])>,
    was_free: bool,
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireCounts {
    pub probes_sent: u64,
    pub answers: u64,
    pub conflicts: u64,
    pub defended: u64,
    pub yielded: u64,
}

/// Probe bookkeeping of one node.
#[derive(Debug, Clone)]
pub struct WireLock {
    window: Window,
    every: Duration,
    probing: BTreeMap<AddrSpec, Entry>,
    defended: BTreeMap<AddrSpec, Instant>,
    pub counts: WireCounts,
}

/// The addresses a node probes: those the allocation gives it that it does
/// not have and that no live giver hands to it (a planned hand-off's giver
/// keeps the address on purpose until the receiver has it), plus those it
/// is about to take as standby (`soon`).
pub fn wanted(
    me: &NodeId,
    alloc: &Allocation,
    observed: &BTreeSet<AddrSpec>,
    soon: impl IntoIterator<Item = AddrSpec>,
) -> BTreeSet<AddrSpec> {
    alloc
        .placements
        .iter()
        .filter(|(s, p)| &p.holder == me && p.handoff_from.is_none() && !observed.contains(*s))
        .map(|(s, _)| s.clone())
        .chain(soon.into_iter().filter(|s| !observed.contains(s)))
        .collect()
}

impl WireLock {
    /// `probe_window`: how long probes must go unanswered; `every`: one
    /// probe per heartbeat interval.
    pub fn new(probe_window: Duration, every: Duration) -> WireLock {
        WireLock {
            window: Window {
                quiet: probe_window,
                probes: 2,
                answer_holds: SERVED_REPROBE * 2,
            },
            every,
            probing: BTreeMap::new(),
            defended: BTreeMap::new(),
            counts: WireCounts::default(),
        }
    }

    /// Probes exactly `specs` from now on (others are forgotten once they
    /// have not been probed for three intervals) and
    /// returns those to probe now: every heartbeat interval, or every 50 ms
    /// for an address another machine answers for (at most 32 of those a
    /// tick, the longest waiting first; at most 1,024 of the others).
    pub fn want(&mut self, now: Instant, specs: &BTreeSet<AddrSpec>) -> Vec<AddrSpec> {
        // An address out of the set for a tick or two (between the early
        // probes of a standby and the plan that makes it holder) keeps what
        // its probes showed.
        let keep = self.every * 3;
        self.probing.retain(|s, e| {
            specs.contains(s)
                || e.last_sent
                    .is_some_and(|t| now.saturating_duration_since(t) < keep)
        });
        let mut due: Vec<(Option<Instant>, AddrSpec)> = Vec::new();
        let mut fresh: Vec<(Option<Instant>, AddrSpec)> = Vec::new();
        for s in specs {
            let e = self.probing.entry(s.clone()).or_default();
            // Answered, and no probe unanswered since: someone serves it.
            // (Not a time limit: with many such addresses each waits its
            // turn longer than any limit.)
            let served = e.last_answer.is_some() && e.unanswered == 0;
            let gap = if served { SERVED_REPROBE } else { self.every };
            if !served {
                if e.last_sent
                    .is_none_or(|t| now.saturating_duration_since(t) + gap / 8 >= gap)
                {
                    fresh.push((e.last_sent, s.clone()));
                }
                continue;
            }
            // (A little slack: ticks are never exactly one interval apart.)
            if e.last_sent
                .is_none_or(|t| now.saturating_duration_since(t) + gap / 8 >= gap)
            {
                due.push((e.last_sent, s.clone()));
            }
        }
        due.sort();
        due.truncate(PROBES_PER_TICK);
        fresh.sort();
        fresh.truncate(FRESH_PER_TICK);
        due.extend(fresh);
        for (_, s) in &due {
            let e = self.probing.get_mut(s).expect("present");
            e.last_sent = Some(now);
            e.unanswered += 1;
            e.first_unanswered.get_or_insert(now);
            self.counts.probes_sent += 1;
        }
        due.into_iter().map(|(_, s)| s).collect()
    }

    /// Another machine (`mac`) answered for, or announced, `ip`.
    pub fn heard(&mut self, now: Instant, ip: IpAddr, mac: [u8; 6]) {
        self.counts.answers += 1;
        for (s, e) in self.probing.iter_mut() {
            if s.ip == ip {
                e.unanswered = 0;
                e.first_unanswered = None;
                e.last_answer = Some((now, mac));
                e.was_free = false;
            }
        }
    }

    /// What the wire says of `spec` now.
    pub fn verdict(&self, now: Instant, spec: &AddrSpec) -> Verdict {
        let Some(e) = self.probing.get(spec) else {
            return Verdict::Unknown;
        };
        let ago = |t: Instant| now.saturating_duration_since(t);
        claim::verdict(
            &Probing {
                unanswered: e.unanswered,
                first_unanswered: e.first_unanswered.map(ago),
                last_sent: e.last_sent.map(ago),
                last_answer: e.last_answer.map(|(t, m)| (ago(t), m)),
            },
            &self.window,
        )
    }

    /// Whether an address became free since the last call (reconcile then).
    pub fn newly_free(&mut self, now: Instant) -> bool {
        let mut any = false;
        let free: Vec<AddrSpec> = self
            .probing
            .keys()
            .filter(|s| self.verdict(now, s) == Verdict::Free)
            .cloned()
            .collect();
        for s in free {
            let e = self.probing.get_mut(&s).expect("present");
            if !e.was_free {
                e.was_free = true;
                any = true;
            }
        }
        any
    }

    /// Of the addresses [`wanted`] gives, those the wire has not shown free:
    /// a plan must not install them yet.
    pub fn unproven(&self, now: Instant, wanted: &BTreeSet<AddrSpec>) -> BTreeSet<AddrSpec> {
        wanted
            .iter()
            .filter(|s| self.verdict(now, s) != Verdict::Free)
            .cloned()
            .collect()
    }

    /// Who answers for `spec`, if another machine does (for status).
    pub fn served_by(&self, now: Instant, spec: &AddrSpec) -> Option<[u8; 6]> {
        match self.verdict(now, spec) {
            Verdict::Served { by } => Some(by),
            _ => None,
        }
    }

    /// Another machine answers for `spec`, which this node holds: keep and
    /// defend (at most once per defend interval) when this node hears a
    /// majority, else yield (`fechter_core::claim::on_conflict`).
    pub fn conflict(
        &mut self,
        now: Instant,
        spec: &AddrSpec,
        standing: Standing,
    ) -> ConflictAction {
        self.counts.conflicts += 1;
        let last = self
            .defended
            .get(spec)
            .map(|t| now.saturating_duration_since(*t));
        let action = claim::on_conflict(standing, last);
        match action {
            ConflictAction::Defend => {
                self.defended.insert(spec.clone(), now);
                self.counts.defended += 1;
            }
            ConflictAction::Yield => {
                self.counts.yielded += 1;
                // Probe again from scratch before taking it back.
                self.probing.remove(spec);
            }
            ConflictAction::Keep => {}
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(15);

    fn spec() -> AddrSpec {
        "eth0:198.18.0.10/24".parse().unwrap()
    }

    fn set(s: &[AddrSpec]) -> BTreeSet<AddrSpec> {
        s.iter().cloned().collect()
    }

    #[test]
    fn silence_over_the_window_makes_an_address_free_once() {
        let mut lock = WireLock::new(I * 2, I);
        let t0 = Instant::now();
        let mut free_at = None;
        for k in 0..10u32 {
            let now = t0 + I * k;
            assert_eq!(
                lock.want(now, &set(&[spec()])).len(),
                1,
                "one probe per tick"
            );
            if lock.newly_free(now) {
                assert!(free_at.is_none(), "reported once");
                free_at = Some(k);
            }
        }
        assert_eq!(free_at, Some(2));
        assert!(lock.unproven(t0 + I * 3, &set(&[spec()])).is_empty());
    }

    #[test]
    fn an_answer_keeps_it_served_and_slows_the_probes() {
        let mut lock = WireLock::new(I * 2, I);
        let t0 = Instant::now();
        let mac = [2, 0, 0, 0, 0, 9];
        let mut sent = 0;
        for k in 0..40u32 {
            let now = t0 + I * k;
            sent += lock.want(now, &set(&[spec()])).len();
            lock.heard(now, spec().ip, mac);
            assert!(!lock.newly_free(now));
            assert_eq!(lock.verdict(now, &spec()), Verdict::Served { by: mac });
        }
        // 600 ms: the first probe, then one every 50 ms.
        assert!((12..=14).contains(&sent), "{sent}");
        assert_eq!(lock.unproven(t0, &set(&[spec()])), set(&[spec()]));
    }

    #[test]
    fn many_waiting_addresses_are_probed_a_bounded_number_at_a_time() {
        let mut lock = WireLock::new(I * 2, I);
        let t0 = Instant::now();
        let specs: BTreeSet<AddrSpec> = (0..100u8)
            .map(|i| format!("eth0:198.18.1.{i}/24").parse().unwrap())
            .collect();
        // Nobody answers: every one is probed on every tick (a takeover of
        // many addresses waits no longer than one of them).
        for k in 0..3u32 {
            assert_eq!(lock.want(t0 + I * k, &specs).len(), 100);
        }
        assert!(lock.newly_free(t0 + I * 2));
        // Another machine answers for all of them: 32 a tick, the longest
        // waiting first, so within eight ticks every one had a turn.
        let t1 = t0 + I * 3;
        for s in &specs {
            lock.heard(t1, s.ip, [2, 0, 0, 0, 0, 7]);
        }
        let mut seen = BTreeSet::new();
        for k in 4..12u32 {
            let now = t0 + I * k;
            let due = lock.want(now, &specs);
            assert!(due.len() <= PROBES_PER_TICK, "{}", due.len());
            for s in &due {
                lock.heard(now, s.ip, [2, 0, 0, 0, 0, 7]);
            }
            seen.extend(due);
        }
        assert_eq!(seen.len(), 100);
    }

    #[test]
    fn the_majority_defends_once_the_minority_yields_and_probes_again() {
        let mut lock = WireLock::new(I * 2, I);
        let t0 = Instant::now();
        assert_eq!(
            lock.conflict(t0, &spec(), Standing::Quorate),
            ConflictAction::Defend
        );
        assert_eq!(
            lock.conflict(t0 + I, &spec(), Standing::Quorate),
            ConflictAction::Keep
        );
        lock.want(t0, &set(&[spec()]));
        assert_eq!(
            lock.conflict(t0, &spec(), Standing::Minority),
            ConflictAction::Yield
        );
        assert_eq!(lock.verdict(t0, &spec()), Verdict::Unknown);
    }

    #[test]
    fn wanted_skips_hand_offs_and_what_is_present() {
        let me = NodeId::new("a");
        let other: AddrSpec = "eth0:198.18.0.11/24".parse().unwrap();
        let given: AddrSpec = "eth0:198.18.0.12/24".parse().unwrap();
        let place = |h: &str, from: Option<&str>| fechter_core::Placement {
            holder: NodeId::new(h),
            standby: None,
            handoff_from: from.map(NodeId::new),
        };
        let alloc = Allocation {
            placements: [
                (spec(), place("a", None)),
                (other.clone(), place("a", None)),
                (given.clone(), place("a", Some("b"))),
            ]
            .into_iter()
            .collect(),
        };
        let soon: AddrSpec = "eth0:198.18.0.13/24".parse().unwrap();
        let w = wanted(&me, &alloc, &set(&[other]), [soon.clone()]);
        assert_eq!(w, set(&[spec(), soon]));
    }
}
