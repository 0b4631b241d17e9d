//! The engine's duties beyond membership: leading (eligibility, allocation,
//! publishing tables), the standby fast path (heartbeats and takeovers) and
//! make-before-break hand-offs. Pure state and rules; the engine calls in
//! with `now` and sends what comes out.
//!
//! ## Standby fast path
//! SWIM needs a few hundred milliseconds to declare a node dead. So, as VRRP
//! and BFD do, every node also sends a tiny sealed heartbeat to every live
//! member every `heartbeat_interval`. A standby that has heard a holder
//! before and then hears nothing for `heartbeat_timeout` takes over, at once,
//! the addresses that holder held with it as standby, and tells everyone
//! ([`Packet::Takeover`]). Because the standby is defined as where
//! [`fechter_core::allocate`] puts an address when its holder fails, the
//! leader's next table agrees; the leader also keeps the unheard holder
//! ineligible for a quarantine period. A holder that learns its addresses
//! were taken (it was alive but unheard) releases them at once.
//! Heartbeats go to all live members rather than only to standbys so that a
//! standby never mistakes a holder that runs on an older table for a dead
//! one; this costs n·(n−1) small datagrams per interval and suits the
//! clusters of a few to a few dozen machines this tool is for.
//!
//! [`Packet::Takeover`]: fechter_core::wire::Packet::Takeover

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fechter_core::failover::{self, Eligibility, NodeView};
use fechter_core::leader::{self, Candidate, TableMeta};
use fechter_core::replica::{Admin, Replica, Table};
use fechter_core::{AddrSpec, Allocation, NodeId, Placement};

/// Timings of the duties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DutyTimings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub maturity: Duration,
    pub quarantine: Duration,
    pub lead_grace: Duration,
}

/// Duty state of one node.
#[derive(Debug, Default)]
pub struct Duty {
    /// `(holder, standby)`: the standby took the holder's addresses.
    /// Changed only through [`Duty::add_takeover`] (which forgets the
    /// settled inputs of [`Duty::refresh_effective`]) and its own walk.
    takeovers: BTreeSet<(NodeId, NodeId)>,
    /// When each peer's last heartbeat arrived.
    pub last_heard: BTreeMap<NodeId, Instant>,
    /// Leader: when a standby last reported taking a holder's addresses.
    pub suspected: BTreeMap<NodeId, Instant>,
    /// Leader: since when each node is continuously alive, up and healthy.
    pub candidate_since: BTreeMap<NodeId, Instant>,
    /// Addresses whose new holder confirmed it has them: spec → that holder.
    /// Changed only through [`Duty::handoff_confirmed`] and the walk.
    handoff_done: BTreeMap<AddrSpec, NodeId>,
    /// Addresses this node confirmed holding (not to resend every time).
    pub confirmed: BTreeSet<AddrSpec>,
    /// Implicit hand-offs this node is giving, since when.
    pub implicit: BTreeMap<AddrSpec, Instant>,
    /// What this node served as a minority when it heard a majority again:
    /// kept as implicit hand-offs even where a standby reported taking them
    /// (that standby waited on the wire, and installs now), until their new
    /// holder confirms.
    minority_held: BTreeSet<AddrSpec>,
    /// The allocation this node acts on: the table with takeovers and
    /// confirmed hand-offs applied.
    pub effective: Allocation,
    /// The last eligibility the leader computed (for status).
    pub eligibility: Eligibility,
    /// Who this node recognises as leader.
    pub leader: Option<NodeId>,
    /// Leader: after a takeover, wait until then before publishing, so the
    /// other standbys' takeover notices arrive and the next table builds on
    /// them (several holders may fail at once).
    pub hold_publish_until: Option<Instant>,
    /// The holders this node is standby for in the table it follows (by
    /// that table's identity): read on every heartbeat tick, so computed
    /// once per table, not once per tick over every placement.
    watched: Option<(TableMeta, Vec<NodeId>)>,
    /// The inputs of the last [`Duty::refresh_effective`] that changed
    /// nothing: called again with the same inputs it would change nothing
    /// again (a fixed point), so it returns at once. It runs on every leader
    /// tick, and with a thousand addresses the full walk is not free.
    settled_on: Option<RefreshInputs>,
}

/// What [`Duty::refresh_effective`] depends on, when no implicit hand-off is
/// under way (those also depend on the time). Takeovers and confirmed
/// hand-offs are inputs too, but are not copied here: every change to them
/// forgets the settled inputs (with a thousand addresses, comparing the
/// confirmations on every leader tick cost more than the walk it saved).
#[derive(Debug, PartialEq)]
struct RefreshInputs {
    table: Option<TableMeta>,
    alive: BTreeSet<NodeId>,
    fenced: bool,
}

impl Duty {
    /// `(holder, standby)` pairs: the standby took the holder's addresses.
    pub fn takeovers(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.takeovers
    }

    /// Forgets every takeover `by` made (a minority's, when it is one no
    /// more).
    pub fn drop_takeovers_by(&mut self, by: &NodeId) {
        let before = self.takeovers.len();
        self.takeovers.retain(|(_, s)| s != by);
        if self.takeovers.len() != before {
            self.settled_on = None;
        }
    }

    /// Records that `by` took `holder`'s addresses; whether it is new.
    pub fn add_takeover(&mut self, holder: NodeId, by: NodeId) -> bool {
        let new = self.takeovers.insert((holder, by));
        if new {
            self.settled_on = None;
        }
        new
    }

    /// Records that `by` confirmed it holds `spec` (a hand-off ends).
    pub fn handoff_confirmed(&mut self, spec: AddrSpec, by: NodeId) {
        if self.handoff_done.get(&spec) != Some(&by) {
            self.handoff_done.insert(spec, by);
            self.settled_on = None;
        }
    }

    /// Recomputes the allocation this node acts on. Returns whether it changed.
    ///
    /// - standby takeovers apply;
    /// - a hand-off whose new holder confirmed ends;
    /// - **implicit hand-off**: an address this node serves and that the
    ///   table now gives to another live node stays here (as giver) until
    ///   that node confirms it has it, even if the table does not say so
    ///   (the leader may have decided on stale knowledge, e.g. two failures
    ///   at once), unless it was *taken* from this node (then it goes at once);
    /// - `fenced`: without quorum this node holds nothing.
    pub fn refresh_effective(
        &mut self,
        replica: &Replica,
        me: &NodeId,
        fenced: bool,
        alive: &BTreeSet<NodeId>,
        now: Instant,
        implicit_limit: Duration,
    ) -> bool {
        // Compared in place: no copy on the hot path (a copy is taken only
        // when a walk changed nothing).
        let same = self.settled_on.as_ref().is_some_and(|k| {
            k.table.as_ref() == replica.table.as_ref().map(|t| &t.meta)
                && k.fenced == fenced
                && k.alive == *alive
        });
        if same && self.implicit.is_empty() {
            return false;
        }
        let changed = self.recompute_effective(replica, me, fenced, alive, now, implicit_limit);
        // (The walk drops takeovers and confirmations the table no longer
        // needs without forgetting these: the next call starts from them.)
        self.settled_on = (!changed && self.implicit.is_empty()).then(|| RefreshInputs {
            table: replica.table.as_ref().map(|t| t.meta.clone()),
            alive: alive.clone(),
            fenced,
        });
        changed
    }

    fn recompute_effective(
        &mut self,
        replica: &Replica,
        me: &NodeId,
        fenced: bool,
        alive: &BTreeSet<NodeId>,
        now: Instant,
        implicit_limit: Duration,
    ) -> bool {
        let table = replica.table.as_ref().map(|t| &t.allocation);
        if let Some(t) = table {
            // Takeovers that the table no longer needs (the leader caught
            // up, or moved the addresses elsewhere) are dropped.
            self.takeovers.retain(|(h, s)| {
                t.placements
                    .values()
                    .any(|p| &p.holder == h && p.standby.as_ref() == Some(s))
            });
            // Both sides are sorted by address and `retain` visits in
            // ascending order: a merge instead of a lookup per entry.
            let mut placed = t.placements.iter().peekable();
            self.handoff_done
                .retain(|spec, by| holder_at(&mut placed, spec) == Some(by));
            let mut placed = t.placements.iter().peekable();
            self.confirmed
                .retain(|spec| holder_at(&mut placed, spec) == Some(me));
        }
        let mut eff = table.map_or_else(Allocation::default, |t| {
            failover::apply_takeovers(t, &self.takeovers)
        });
        let mut giving: BTreeSet<AddrSpec> = BTreeSet::new();
        // `eff`, `handoff_done` and the previous allocation are all sorted
        // by address: walked together instead of a lookup per address.
        let mut done = self.handoff_done.iter().peekable();
        let mut before = self.effective.placements.iter().peekable();
        for (spec, p) in eff.placements.iter_mut() {
            if entry_at(&mut done, spec) == Some(&p.holder) {
                p.handoff_from = None;
                continue;
            }
            let served_here = entry_at(&mut before, spec)
                .is_some_and(|q| q.holder == *me || q.handoff_from.as_ref() == Some(me));
            let wanted = p.holder != *me
                && p.handoff_from.is_none()
                && served_here
                && alive.contains(&p.holder)
                && (!self.takeovers.contains(&(me.clone(), p.holder.clone()))
                    || self.minority_held.contains(spec));
            // Bounded: a holder that confirmed before this node started
            // giving never confirms again.
            if wanted {
                giving.insert(spec.clone());
                let since = *self.implicit.entry(spec.clone()).or_insert(now);
                if now.saturating_duration_since(since) < implicit_limit {
                    p.handoff_from = Some(me.clone());
                }
            }
        }
        self.implicit.retain(|spec, _| giving.contains(spec));
        self.minority_held.retain(|spec| giving.contains(spec));
        if fenced {
            eff.placements.retain(|_, p| p.holder != *me);
            for p in eff.placements.values_mut() {
                if p.handoff_from.as_ref() == Some(me) {
                    p.handoff_from = None;
                }
            }
        }
        let changed = eff != self.effective;
        self.effective = eff;
        changed
    }

    /// The allocation a node that hears no majority acts on
    /// (`fechter_core::claim::orphans_to_live`): the followed table, every
    /// address of a node it no longer hears given to that address's standby or else to the least loaded node it hears and that
    /// can hold it (`usable`). It installs only what the wire shows free.
    /// Returns whether the allocation changed.
    pub fn refresh_minority(
        &mut self,
        replica: &Replica,
        live: &BTreeSet<NodeId>,
        usable: impl Fn(&NodeId, &AddrSpec) -> bool,
    ) -> bool {
        let eff = self.minority_view(replica, live, usable);
        self.settled_on = None;
        self.implicit.clear();
        let changed = eff != self.effective;
        self.effective = eff;
        changed
    }

    /// What [`Duty::refresh_minority`] would act on with `live` heard.
    pub fn minority_view(
        &self,
        replica: &Replica,
        live: &BTreeSet<NodeId>,
        usable: impl Fn(&NodeId, &AddrSpec) -> bool,
    ) -> Allocation {
        // The table alone, not this node's takeovers: every node of a
        // minority then computes the same view (a takeover gives an address
        // to its standby, which the orphan rule does too).
        let base = replica
            .table
            .as_ref()
            .map_or_else(Allocation::default, |t| t.allocation.clone());
        let unplaced: Vec<AddrSpec> = replica
            .addresses
            .assignable()
            .into_iter()
            .map(|(_, spec)| spec)
            .filter(|s| !base.placements.contains_key(s))
            .collect();
        fechter_core::claim::orphans_to_live(&base, unplaced, live, usable)
    }

    /// This node hears a majority again after serving as a minority: what
    /// it holds stays until the holders the table names confirm they have
    /// it (make-before-break at the heal), bounded like any implicit
    /// hand-off.
    pub fn left_minority(&mut self, me: &NodeId) {
        self.minority_held = self
            .effective
            .placements
            .iter()
            .filter(|(_, p)| &p.holder == me)
            .map(|(s, _)| s.clone())
            .collect();
        self.implicit.clear();
        self.settled_on = None;
    }

    /// Forgets the allocation this node acted on (after serving as a
    /// minority): the next refresh starts from the table alone, so nothing
    /// it served then is kept as an implicit hand-off.
    pub fn forget_effective(&mut self) {
        self.effective = Allocation::default();
        self.implicit.clear();
        self.settled_on = None;
    }

    /// Holders this node is standby for that have been silent for longer
    /// than `after` (and were heard before).
    pub fn silent_watched(&self, now: Instant, after: Duration) -> Vec<&NodeId> {
        let watched = self.watched.as_ref().map_or(&[][..], |(_, h)| h);
        watched
            .iter()
            .filter(|h| {
                self.last_heard
                    .get(*h)
                    .is_some_and(|heard| now.saturating_duration_since(*heard) > after)
            })
            .collect()
    }

    /// Holders this node (as standby) has heard and now finds silent: it
    /// takes their addresses. Returns the new takeovers.
    pub fn check_holders(
        &mut self,
        me: &NodeId,
        table: Option<&Table>,
        now: Instant,
        timeout: Duration,
    ) -> Vec<NodeId> {
        let Some(t) = table else {
            return Vec::new();
        };
        if self
            .watched
            .as_ref()
            .is_none_or(|(meta, _)| *meta != t.meta)
        {
            let holders: BTreeSet<&NodeId> = t
                .allocation
                .placements
                .values()
                .filter(|p| p.standby.as_ref() == Some(me) && &p.holder != me)
                .map(|p| &p.holder)
                .collect();
            let holders = holders.into_iter().cloned().collect();
            self.watched = Some((t.meta.clone(), holders));
        }
        let watched = self.watched.as_ref().map_or(&[][..], |(_, h)| h);
        let silent: Vec<NodeId> = watched
            .iter()
            .filter(|h| {
                self.last_heard
                    .get(*h)
                    .is_some_and(|heard| now.saturating_duration_since(*heard) > timeout)
            })
            .cloned()
            .collect();
        silent
            .into_iter()
            .filter(|h| self.add_takeover(h.clone(), me.clone()))
            .collect()
    }

    /// Records a takeover reported by `by` (made against table `_meta`):
    /// it applies while the followed table still has `holder` holding
    /// addresses with `by` as standby.
    pub fn takeover_reported(
        &mut self,
        holder: NodeId,
        by: NodeId,
        _meta: &TableMeta,
        table: Option<&Table>,
        now: Instant,
        settle: Duration,
    ) {
        let applies = table.is_some_and(|t| {
            t.allocation
                .placements
                .values()
                .any(|p| p.holder == holder && p.standby.as_ref() == Some(&by))
        });
        if applies {
            self.add_takeover(holder.clone(), by);
        }
        self.suspect(holder, now, settle);
    }

    /// Keeps `holder` ineligible for the quarantine, and holds the leader's
    /// next publication for `settle` so that concurrent takeovers are known.
    pub fn suspect(&mut self, holder: NodeId, now: Instant, settle: Duration) {
        if self.suspected.insert(holder, now).is_none() {
            let until = now + settle;
            self.hold_publish_until = Some(self.hold_publish_until.map_or(until, |t| t.max(until)));
        }
    }
}

/// Advances `it` (ascending by key) to `key` and returns its value there,
/// if `key` is present. Successive calls must ask for ascending keys.
fn entry_at<'a, K: Ord + 'a, V: 'a>(
    it: &mut std::iter::Peekable<impl Iterator<Item = (&'a K, &'a V)>>,
    key: &K,
) -> Option<&'a V> {
    while it.next_if(|(k, _)| *k < key).is_some() {}
    it.next_if(|(k, _)| *k == key).map(|(_, v)| v)
}

/// [`entry_at`] in an allocation's placements: the holder of `spec`.
fn holder_at<'a>(
    it: &mut std::iter::Peekable<impl Iterator<Item = (&'a AddrSpec, &'a Placement)>>,
    spec: &AddrSpec,
) -> Option<&'a NodeId> {
    entry_at(it, spec).map(|p| &p.holder)
}

/// What the leader decides on one evaluation.
pub struct LeaderDecision {
    /// A new table to publish, if the allocation or the leader changed.
    pub publish: Option<Table>,
}

/// Input of a leader evaluation.
pub struct LeaderInput<'a> {
    pub me: &'a NodeId,
    pub replica: &'a Replica,
    /// Live peers (not including me).
    pub alive: &'a BTreeSet<NodeId>,
    /// Whether this node may lead now (synced, not leaving).
    pub i_can_lead: bool,
    pub now: Instant,
    pub timings: &'a DutyTimings,
    /// Something besides eligibility changed (addresses, table, hand-offs):
    /// recompute even if eligibility did not change.
    pub force: bool,
}

impl Duty {
    /// Elects, and if this node leads, computes the allocation and decides
    /// whether to publish.
    pub fn lead(&mut self, input: LeaderInput<'_>) -> LeaderDecision {
        let LeaderInput {
            me,
            replica,
            alive,
            i_can_lead,
            now,
            timings,
            force,
        } = input;
        let is_alive = |id: &NodeId| id == me || alive.contains(id);
        // Forgotten nodes (`fechter forget`) count for nothing: they never
        // lead, are never eligible, and are not listed as ineligible.
        let view: Vec<Candidate> = replica
            .counted_nodes()
            .map(|r| Candidate {
                id: r.id.clone(),
                alive: is_alive(&r.id),
                can_lead: if &r.id == me { i_can_lead } else { !r.leaving },
                priority: r.priority,
            })
            .collect();
        let tables: Vec<&TableMeta> = replica.table.iter().map(|t| &t.meta).collect();
        let was_leader = self.leader.as_ref() == Some(me);
        self.leader = leader::recognised_leader(&view, tables);
        // A node that has just become leader decides even if eligibility
        // did not change since it last looked: it may have computed that
        // eligibility while another node led (or while it was not yet
        // allowed to lead), and nobody has published for it.
        let force = force || (!was_leader && self.leader.as_ref() == Some(me));

        // Maturity, as this node observes it.
        for r in replica.nodes.values() {
            let candidate = !r.forgotten
                && is_alive(&r.id)
                && r.admin == Admin::Up
                && r.unhealthy.is_empty()
                && !r.leaving;
            if candidate {
                self.candidate_since.entry(r.id.clone()).or_insert(now);
            } else {
                self.candidate_since.remove(&r.id);
            }
        }
        self.suspected
            .retain(|_, at| now.saturating_duration_since(*at) < timings.quarantine);

        let previous = &self.effective;
        let views: Vec<NodeView<'_>> = replica
            .counted_nodes()
            .map(|r| NodeView {
                record: r,
                alive: is_alive(&r.id),
                mature: self
                    .candidate_since
                    .get(&r.id)
                    .is_some_and(|t| now.saturating_duration_since(*t) >= timings.maturity),
                suspected: self.suspected.contains_key(&r.id),
            })
            .collect();
        let eligibility = failover::eligibility(&views, previous);
        // Node records (health, interfaces) changing forces an evaluation
        // through `force`; here only time-driven changes (maturity,
        // quarantine) matter.
        let same = eligibility == self.eligibility;
        self.eligibility = eligibility;
        if self.leader.as_ref() != Some(me) || (same && !force) {
            return LeaderDecision { publish: None };
        }
        if self.hold_publish_until.is_some_and(|t| now < t) {
            // Re-evaluated when the hold ends (see the engine's heartbeat tick).
            return LeaderDecision { publish: None };
        }
        let assignable = replica.addresses.assignable();
        let usable = |n: &NodeId, iface: &str| {
            replica
                .nodes
                .get(n)
                .is_none_or(|r| !r.iface_trouble.contains_key(iface))
        };
        let next = failover::allocate_by_interface(
            &assignable,
            &self.eligibility.eligible,
            usable,
            previous,
        );
        let done = |spec: &AddrSpec, holder: &NodeId| self.handoff_done.get(spec) == Some(holder);
        let next = failover::mark_handoffs(previous, next, is_alive, done);
        let current = replica.table.as_ref();
        let unchanged = current.is_some_and(|t| t.meta.leader == *me && t.allocation == next);
        if unchanged {
            return LeaderDecision { publish: None };
        }
        let own = current.filter(|t| t.meta.leader == *me).map(|t| &t.meta);
        let meta = leader::next_meta(me, current.map(|t| &t.meta), own);
        LeaderDecision {
            publish: Some(Table {
                meta,
                allocation: next,
            }),
        }
    }
}

#[cfg(test)]
#[path = "duty_tests.rs"]
mod tests;
