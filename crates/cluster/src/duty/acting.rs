//! The acting part of [`Duty`]: the allocation this node acts on, and its
//! refresh from the followed table, the takeovers and the hand-offs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fechter_core::failover;
use fechter_core::leader::TableMeta;
use fechter_core::replica::Replica;
use fechter_core::{AddrSpec, Allocation, NodeId};

use super::Duty;
use super::handoff::Giver;

/// Owns the allocation this node acts on and the inputs of the last refresh
/// that changed nothing.
///
/// Invariants:
/// - `effective` is replaced only by a refresh ([`Duty::refresh_effective`],
///   [`Duty::refresh_minority`]) or forgotten ([`Duty::forget_effective`]);
/// - `settled_on` is set only after a full walk that changed nothing with no
///   implicit hand-off under way, and is forgotten ([`Acting::unsettle`])
///   on every change to an input it does not copy: the takeovers, the
///   confirmed hand-offs, what a minority held, the allocation itself.
#[derive(Debug, Default)]
pub(super) struct Acting {
    /// The allocation this node acts on: the table with takeovers and
    /// confirmed hand-offs applied.
    effective: Allocation,
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

impl Acting {
    pub(super) fn allocation(&self) -> &Allocation {
        &self.effective
    }

    /// Forgets the settled inputs: the next refresh walks the table.
    pub(super) fn unsettle(&mut self) {
        self.settled_on = None;
    }

    /// Acts on `eff` from now on (unsettled); whether it differs.
    fn replace(&mut self, eff: Allocation) -> bool {
        self.settled_on = None;
        let changed = eff != self.effective;
        self.effective = eff;
        changed
    }
}

impl Duty {
    /// Recomputes the allocation this node acts on. Returns whether it changed.
    ///
    /// - standby takeovers apply;
    /// - the hand-off rules apply (see `handoff.rs`): a hand-off whose new
    ///   holder confirmed ends, and an address this node serves and that the
    ///   table now gives to another live node stays here until that node
    ///   confirms (**implicit hand-off**), unless it was *taken* from this
    ///   node (then it goes at once);
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
        let same = self.acting.settled_on.as_ref().is_some_and(|k| {
            k.table.as_ref() == replica.table.as_ref().map(|t| &t.meta)
                && k.fenced == fenced
                && k.alive == *alive
        });
        if same && !self.handoffs.giving() {
            return false;
        }
        let changed = self.recompute_effective(replica, me, fenced, alive, now, implicit_limit);
        // (The walk drops takeovers and confirmations the table no longer
        // needs without forgetting these: the next call starts from them.)
        self.acting.settled_on = (!changed && !self.handoffs.giving()).then(|| RefreshInputs {
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
            self.standby.keep_placed(t);
            self.handoffs.keep_placed(t, me);
        }
        let takeovers = self.standby.takeovers();
        let mut eff = table.map_or_else(Allocation::default, |t| {
            failover::apply_takeovers(t, takeovers)
        });
        let giver = Giver {
            me,
            alive,
            takeovers,
            now,
            implicit_limit,
        };
        self.handoffs.apply(&mut eff, &self.acting.effective, giver);
        if fenced {
            eff.placements.retain(|_, p| p.holder != *me);
            for p in eff.placements.values_mut() {
                if p.handoff_from.as_ref() == Some(me) {
                    p.handoff_from = None;
                }
            }
        }
        let changed = eff != self.acting.effective;
        self.acting.effective = eff;
        changed
    }

    /// The allocation a node that hears no majority acts on
    /// (`fechter_core::claim::orphans_to_live`): the followed table, every
    /// address of a node it no longer hears given to that address's standby
    /// or else to the least loaded node it hears and that can hold it
    /// (`usable`). It installs only what the wire shows free. Returns
    /// whether the allocation changed.
    pub fn refresh_minority(
        &mut self,
        replica: &Replica,
        live: &BTreeSet<NodeId>,
        usable: impl Fn(&NodeId, &AddrSpec) -> bool,
    ) -> bool {
        let eff = minority_view(replica, live, usable);
        self.handoffs.stop_giving();
        self.acting.replace(eff)
    }

    /// Forgets the allocation this node acted on (after serving as a
    /// minority): the next refresh starts from the table alone, so nothing
    /// it served then is kept as an implicit hand-off.
    pub fn forget_effective(&mut self) {
        self.acting.replace(Allocation::default());
        self.handoffs.stop_giving();
    }
}

/// What [`Duty::refresh_minority`] would act on with `live` heard.
pub(super) fn minority_view(
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

#[cfg(test)]
#[path = "acting_tests.rs"]
mod tests;
