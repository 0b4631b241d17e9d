//! The leading part of [`Duty`]: the election, maturity and quarantine, the
//! hold on publishing, and the leader's evaluation ([`Duty::lead`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fechter_core::failover::{self, Eligibility, NodeView};
use fechter_core::leader::{self, Candidate, TableMeta};
use fechter_core::replica::{Admin, Replica, Table};
use fechter_core::{AddrSpec, Allocation, NodeId};

use super::{Duty, DutyTimings};

/// Owns what the leader decides from besides the replica: who leads, since
/// when each node is a candidate, which holders are suspected, the hold on
/// publishing, and the last eligibility.
///
/// Invariants:
/// - `leader` and `eligibility` change only in [`Leading::lead`];
/// - `candidate_since` names only nodes that were alive, up, healthy and not
///   leaving at every evaluation since that instant;
/// - `suspected` keeps a holder for the quarantine only (dropped at the
///   next evaluation after it);
/// - `hold_publish_until` only moves later while set ([`Leading::suspect`])
///   and is cleared only once passed ([`Leading::end_hold`]).
#[derive(Debug, Default)]
pub(super) struct Leading {
    /// Who this node recognises as leader.
    leader: Option<NodeId>,
    /// Leader: after a takeover, wait until then before publishing, so the
    /// other standbys' takeover notices arrive and the next table builds on
    /// them (several holders may fail at once).
    hold_publish_until: Option<Instant>,
    /// Leader: since when each node is continuously alive, up and healthy.
    candidate_since: BTreeMap<NodeId, Instant>,
    /// Leader: when a standby last reported taking a holder's addresses.
    suspected: BTreeMap<NodeId, Instant>,
    /// The last eligibility the leader computed (for status).
    eligibility: Eligibility,
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

impl Leading {
    pub(super) fn leader(&self) -> Option<&NodeId> {
        self.leader.as_ref()
    }

    pub(super) fn eligibility(&self) -> &Eligibility {
        &self.eligibility
    }

    /// Keeps `holder` ineligible for the quarantine, and holds the leader's
    /// next publication for `settle` so that concurrent takeovers are known.
    fn suspect(&mut self, holder: NodeId, now: Instant, settle: Duration) {
        if self.suspected.insert(holder, now).is_none() {
            let until = now + settle;
            self.hold_publish_until = Some(self.hold_publish_until.map_or(until, |t| t.max(until)));
        }
    }

    /// Ends the hold on publishing if it has passed; whether it did.
    fn end_hold(&mut self, now: Instant) -> bool {
        let ended = self.hold_publish_until.is_some_and(|t| now >= t);
        if ended {
            self.hold_publish_until = None;
        }
        ended
    }

    /// Elects, and if this node leads, computes the allocation from
    /// `previous` (the allocation this node acts on) and decides whether to
    /// publish; `done` tells the hand-offs whose new holder confirmed.
    fn lead(
        &mut self,
        input: LeaderInput<'_>,
        previous: &Allocation,
        done: impl Fn(&AddrSpec, &NodeId) -> bool,
    ) -> LeaderDecision {
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
        let became_leader = self.elect(me, replica, &is_alive, i_can_lead);
        // A node that has just become leader decides even if eligibility
        // did not change since it last looked: it may have computed that
        // eligibility while another node led (or while it was not yet
        // allowed to lead), and nobody has published for it.
        let force = force || became_leader;
        self.observe_candidates(replica, &is_alive, now, timings.quarantine);
        let same = self.rate(replica, &is_alive, now, timings.maturity, previous);
        if self.leader.as_ref() != Some(me) || (same && !force) {
            return LeaderDecision { publish: None };
        }
        if self.hold_publish_until.is_some_and(|t| now < t) {
            // Re-evaluated when the hold ends (see the engine's heartbeat tick).
            return LeaderDecision { publish: None };
        }
        LeaderDecision {
            publish: self.next_table(me, replica, previous, &is_alive, done),
        }
    }

    /// Finds the leader this node recognises; whether this node has just
    /// become it.
    fn elect(
        &mut self,
        me: &NodeId,
        replica: &Replica,
        is_alive: &impl Fn(&NodeId) -> bool,
        i_can_lead: bool,
    ) -> bool {
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
        !was_leader && self.leader.as_ref() == Some(me)
    }

    /// Maturity, as this node observes it: since when each node is a
    /// candidate; and the end of quarantines that are over.
    fn observe_candidates(
        &mut self,
        replica: &Replica,
        is_alive: &impl Fn(&NodeId) -> bool,
        now: Instant,
        quarantine: Duration,
    ) {
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
            .retain(|_, at| now.saturating_duration_since(*at) < quarantine);
    }

    /// Computes the eligibility and keeps it; whether it is the same as
    /// before.
    fn rate(
        &mut self,
        replica: &Replica,
        is_alive: &impl Fn(&NodeId) -> bool,
        now: Instant,
        maturity: Duration,
        previous: &Allocation,
    ) -> bool {
        let views: Vec<NodeView<'_>> = replica
            .counted_nodes()
            .map(|r| NodeView {
                record: r,
                alive: is_alive(&r.id),
                mature: self
                    .candidate_since
                    .get(&r.id)
                    .is_some_and(|t| now.saturating_duration_since(*t) >= maturity),
                suspected: self.suspected.contains_key(&r.id),
            })
            .collect();
        let eligibility = failover::eligibility(&views, previous);
        // Node records (health, interfaces) changing forces an evaluation
        // through `force`; here only time-driven changes (maturity,
        // quarantine) matter.
        let same = eligibility == self.eligibility;
        self.eligibility = eligibility;
        same
    }

    /// The leader's next table: the allocation over the eligible nodes with
    /// its planned hand-offs, or `None` if it is what this node last
    /// published.
    fn next_table(
        &self,
        me: &NodeId,
        replica: &Replica,
        previous: &Allocation,
        is_alive: &impl Fn(&NodeId) -> bool,
        done: impl Fn(&AddrSpec, &NodeId) -> bool,
    ) -> Option<Table> {
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
        let next = failover::mark_handoffs(previous, next, is_alive, done);
        let current = replica.table.as_ref();
        let unchanged = current.is_some_and(|t| t.meta.leader == *me && t.allocation == next);
        if unchanged {
            return None;
        }
        let own = current.filter(|t| t.meta.leader == *me).map(|t| &t.meta);
        let meta = leader::next_meta(me, current.map(|t| &t.meta), own);
        Some(Table {
            meta,
            allocation: next,
        })
    }
}

impl Duty {
    /// Elects, and if this node leads, computes the allocation and decides
    /// whether to publish.
    pub fn lead(&mut self, input: LeaderInput<'_>) -> LeaderDecision {
        let handoffs = &self.handoffs;
        self.leading
            .lead(input, self.acting.allocation(), |spec, holder| {
                handoffs.is_done(spec, holder)
            })
    }

    /// Keeps `holder` ineligible for the quarantine, and holds the leader's
    /// next publication for `settle` so that concurrent takeovers are known.
    pub fn suspect(&mut self, holder: NodeId, now: Instant, settle: Duration) {
        self.leading.suspect(holder, now, settle);
    }

    /// Ends the hold on publishing once it has passed (the leader then
    /// evaluates again); whether it did.
    pub fn end_hold(&mut self, now: Instant) -> bool {
        self.leading.end_hold(now)
    }
}

#[cfg(test)]
#[path = "leading_tests.rs"]
mod tests;
