//! This node's side of the wire as the lock ([`crate::wire_lock`], rules
//! in `fechter_core::claim`): which addresses it probes before installing
//! them, which giver is heard again (a hand-off rather than a takeover), and
//! what it does when another machine answers for an address it holds.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use fechter_core::claim::{ConflictAction, Standing, mac_text};
use fechter_core::reconcile::Action;
use fechter_core::{AddrSpec, NodeId};

use super::{Node, NodeEvent, Reason};
use crate::engine::Now;
use crate::wire_lock::{self, WireLock};

/// How often a minority probes the addresses it holds.
const SELF_PROBE_EVERY: Duration = Duration::from_millis(500);

/// At most this many held addresses per self-probe round.
const SELF_PROBE_MAX: usize = 32;

/// The node's wire state.
#[derive(Debug)]
pub(super) struct Wire {
    pub(super) lock: WireLock,
    /// What this node wants and does not have (probed every tick).
    pub(super) base: BTreeSet<AddrSpec>,
    /// For each address that waits: its previous holder, and the
    /// incarnation it was heard with when the wait began.
    givers: BTreeMap<AddrSpec, (NodeId, Option<u64>)>,
    /// Waiting addresses whose giver is heard again (planned once).
    givers_back: BTreeSet<AddrSpec>,
    /// When a minority last probed the addresses it holds (to find a
    /// duplicate that announces nothing).
    self_probed: Option<Instant>,
    /// Addresses being yielded to another machine, with its MAC.
    yielding: BTreeMap<AddrSpec, [u8; 6]>,
    /// At the last plan: the addresses taken from a giver heard again (an
    /// implicit hand-off, make-before-break), with the giver.
    implicit: BTreeMap<AddrSpec, NodeId>,
}

/// Why an address this node should hold is not installed yet (status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Another machine answers for it.
    AnsweredBy([u8; 6]),
    /// Its probes are not all unanswered yet.
    Probing,
}

impl Wire {
    pub(super) fn new(lock: WireLock) -> Wire {
        Wire {
            lock,
            base: BTreeSet::new(),
            givers: BTreeMap::new(),
            givers_back: BTreeSet::new(),
            self_probed: None,
            yielding: BTreeMap::new(),
            implicit: BTreeMap::new(),
        }
    }

    /// Another machine answers for `ip`: a conflict if this node holds it
    /// (`held`). Defend is decided (and reported) here; a yield is
    /// reported once the removal succeeded.
    pub(super) fn claim(
        &mut self,
        now: Now,
        ip: IpAddr,
        mac: [u8; 6],
        held: Option<AddrSpec>,
        standing: Standing,
        events: &mut VecDeque<NodeEvent>,
    ) -> Option<Action> {
        self.lock.heard(now.at, ip, mac);
        let spec = held?;
        match self.lock.conflict(now.at, &spec, standing) {
            ConflictAction::Keep => None,
            ConflictAction::Defend => {
                events.push_back(NodeEvent::Conflict {
                    address: spec.clone(),
                    mac,
                    kept: true,
                    standing,
                });
                Some(Action::Announce(spec))
            }
            ConflictAction::Yield => {
                self.yielding.insert(spec.clone(), mac);
                Some(Action::Remove(spec))
            }
        }
    }
}

impl Node {
    /// What a claim's action did (`ok`: it succeeded). A yield that
    /// succeeded forgets the address (it is probed again, and wanted back
    /// once free) and returns what is installed now, to record.
    pub fn claim_done(&mut self, action: &Action, ok: bool) -> Option<BTreeSet<AddrSpec>> {
        let Action::Remove(spec) = action else {
            return None;
        };
        let mac = self.wire.yielding.remove(spec)?;
        if !ok {
            return None;
        }
        self.installed.remove(spec);
        self.announced.remove(spec);
        self.wire.base.insert(spec.clone());
        let standing = self.engine.standing();
        self.events.push_back(NodeEvent::Released {
            address: spec.clone(),
            reason: Reason::Conflict { mac: mac_text(mac) },
        });
        self.events.push_back(NodeEvent::Conflict {
            address: spec.clone(),
            mac,
            kept: false,
            standing,
        });
        Some(self.installed.clone())
    }

    /// After the engine's timers: the probes to send for what this node is
    /// about to install (and, as a minority, for what it holds). A plan
    /// falls due when an address became free or its giver is heard again.
    pub fn wire_tick(&mut self, now: Now) -> Vec<AddrSpec> {
        let soon = self.engine.soon_taken(now);
        let allowed = &self.allowed;
        let wanted: BTreeSet<AddrSpec> = self
            .wire
            .base
            .iter()
            .cloned()
            .chain(
                soon.into_iter()
                    .filter(|s| !self.installed.contains(s) && allowed.permits(s)),
            )
            .collect();
        let mut probes = self.wire.lock.want(now.at, &wanted);
        probes.extend(self.held_probes(now));
        let mut free = self.wire.lock.newly_free(now.at);
        // A waiting address whose previous holder is heard again (the same
        // process) is handed over now: plan once.
        let quorate = self.engine.standing() == Standing::Quorate;
        let engine = &self.engine;
        let wire = &self.wire;
        let back: Vec<AddrSpec> = wire
            .givers
            .iter()
            .filter(|(s, (h, inc))| {
                quorate
                    && wire.base.contains(*s)
                    && !wire.givers_back.contains(*s)
                    && inc.is_some()
                    && engine.heard_recently(now, h) == *inc
            })
            .map(|(s, _)| s.clone())
            .collect();
        free |= !back.is_empty();
        self.wire.givers_back.extend(back);
        let base = &self.wire.base;
        self.wire.givers_back.retain(|s| base.contains(s));
        self.plan_due |= free;
        probes
    }

    /// A minority probes what it holds every 500 ms (32 addresses at most
    /// per round): another machine's answer is a conflict, which it yields
    /// (the majority's copy may announce nothing this node would hear).
    fn held_probes(&mut self, now: Now) -> Vec<AddrSpec> {
        if self.engine.standing() != Standing::Minority
            || self
                .wire
                .self_probed
                .is_some_and(|t| now.at.saturating_duration_since(t) < SELF_PROBE_EVERY)
        {
            return Vec::new();
        }
        self.wire.self_probed = Some(now.at);
        let me = self.me();
        let alloc = self.engine.allocation();
        self.installed
            .iter()
            .filter(|s| alloc.placements.get(*s).is_some_and(|p| &p.holder == me))
            .take(SELF_PROBE_MAX)
            .cloned()
            .collect()
    }

    /// The addresses a plan may not install yet, and (as the base of the
    /// next ticks' probes) those this node wants but does not have.
    pub(super) fn unproven(
        &mut self,
        now: Now,
        alloc: &fechter_core::Allocation,
        observed: &BTreeSet<AddrSpec>,
    ) -> BTreeSet<AddrSpec> {
        let me = self.me().clone();
        let wanted = wire_lock::wanted(&me, alloc, observed, []);
        // Its previous holder is heard again, the same process (it served
        // as a minority, or was cut off the cluster port): a hand-off, which
        // it lets go of once this node confirms. A restarted holder removes
        // what it had by itself: the wire decides then.
        self.wire.givers.retain(|s, _| wanted.contains(s));
        for s in &wanted {
            if !self.wire.givers.contains_key(s)
                && let Some(p) = self.last_alloc.placements.get(s)
                && p.holder != me
            {
                let inc = self.engine.last_incarnation(&p.holder);
                self.wire.givers.insert(s.clone(), (p.holder.clone(), inc));
            }
        }
        // Only a node that hears a majority: a minority's view (the nodes it
        // does not hear are orphans) may be the stale one.
        let quorate = self.engine.standing() == Standing::Quorate;
        let givers = &self.wire.givers;
        let engine = &self.engine;
        let giver_alive = |s: &AddrSpec| {
            quorate
                && givers
                    .get(s)
                    .is_some_and(|(h, inc)| inc.is_some() && engine.heard_recently(now, h) == *inc)
        };
        let implicit: BTreeMap<AddrSpec, NodeId> = wanted
            .iter()
            .filter(|s| giver_alive(s))
            .filter_map(|s| Some((s.clone(), givers.get(s)?.0.clone())))
            .collect();
        let unproven: BTreeSet<AddrSpec> = self
            .wire
            .lock
            .unproven(now.at, &wanted)
            .into_iter()
            .filter(|s| !implicit.contains_key(s))
            .collect();
        self.wire.implicit = implicit;
        self.wire.base = wanted;
        unproven
    }

    /// The addresses the last plan took from a giver heard again (an
    /// implicit hand-off: the giver lets go once this node confirms), with
    /// the giver.
    pub fn implicit_handoffs(&self) -> &BTreeMap<AddrSpec, NodeId> {
        &self.wire.implicit
    }

    /// Why `spec`, which this node should hold, is not installed (status);
    /// `None` when it is installed or not waited for.
    pub fn waiting_for(&self, now: Instant, spec: &AddrSpec) -> Option<Waiting> {
        if !self.wire.base.contains(spec) || self.installed.contains(spec) {
            return None;
        }
        Some(match self.wire.lock.served_by(now, spec) {
            Some(mac) => Waiting::AnsweredBy(mac),
            None => Waiting::Probing,
        })
    }
}
