//! The hand-off part of [`Duty`]: make-before-break. A hand-off ends when
//! its new holder confirms it has the address; until then the giver keeps
//! serving it, whether the table marks the hand-off or not (implicit).

use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;
use std::time::{Duration, Instant};

use fechter_core::{AddrSpec, Allocation, NodeId, Placement};

use super::Duty;

/// Owns the confirmed hand-offs, this node's own confirmations, the
/// implicit hand-offs this node is giving, and what it held as a minority.
///
/// Invariants:
/// - `done` changes only through [`Duty::handoff_confirmed`] (which forgets
///   the settled inputs of [`Duty::refresh_effective`]) and the refresh's
///   walk ([`Handoffs::keep_placed`]);
/// - after each walk ([`Handoffs::apply`]), `implicit` and `minority_held`
///   name only addresses this node is giving; `minority_held` is set only
///   when this node leaves a minority ([`Duty::left_minority`]), and
///   `implicit` is emptied whenever the allocation this node acts on is
///   replaced by a minority's or forgotten;
/// - an implicit hand-off is bounded: after `implicit_limit` it no longer
///   holds the address (a holder that confirmed before this node started
///   giving never confirms again).
#[derive(Debug, Default)]
pub(super) struct Handoffs {
    /// Addresses whose new holder confirmed it has them: spec → that holder.
    done: BTreeMap<AddrSpec, NodeId>,
    /// Addresses this node confirmed holding (not to resend every time).
    confirmed: BTreeSet<AddrSpec>,
    /// Implicit hand-offs this node is giving, since when.
    implicit: BTreeMap<AddrSpec, Instant>,
    /// What this node served as a minority when it heard a majority again:
    /// kept as implicit hand-offs even where a standby reported taking them
    /// (that standby waited on the wire, and installs now), until their new
    /// holder confirms.
    minority_held: BTreeSet<AddrSpec>,
}

/// This node as giver: what [`Handoffs::apply`] decides from besides the
/// allocations.
pub(super) struct Giver<'a> {
    pub(super) me: &'a NodeId,
    /// Live peers.
    pub(super) alive: &'a BTreeSet<NodeId>,
    /// `(holder, standby)`: the standby took the holder's addresses.
    pub(super) takeovers: &'a BTreeSet<(NodeId, NodeId)>,
    pub(super) now: Instant,
    pub(super) implicit_limit: Duration,
}

impl Handoffs {
    pub(super) fn confirmed(&self) -> &BTreeSet<AddrSpec> {
        &self.confirmed
    }

    /// Whether `holder` confirmed it holds `spec`.
    pub(super) fn is_done(&self, spec: &AddrSpec, holder: &NodeId) -> bool {
        self.done.get(spec) == Some(holder)
    }

    /// Whether an implicit hand-off is under way (the refresh then depends
    /// on the time).
    pub(super) fn giving(&self) -> bool {
        !self.implicit.is_empty()
    }

    /// Stops every implicit hand-off.
    pub(super) fn stop_giving(&mut self) {
        self.implicit.clear();
    }

    /// Drops the confirmations `table` no longer needs: a hand-off whose
    /// address it gives to another holder, an own confirmation of an
    /// address it gives to another node.
    pub(super) fn keep_placed(&mut self, table: &Allocation, me: &NodeId) {
        // Both sides are sorted by address and `retain` visits in
        // ascending order: a merge instead of a lookup per entry.
        let mut placed = table.placements.iter().peekable();
        self.done
            .retain(|spec, by| holder_at(&mut placed, spec) == Some(by));
        let mut placed = table.placements.iter().peekable();
        self.confirmed
            .retain(|spec| holder_at(&mut placed, spec) == Some(me));
    }

    /// Applies the hand-off rules to `eff` (the table with takeovers
    /// applied), given `before`, the allocation this node acted on:
    /// - a hand-off whose new holder confirmed ends;
    /// - **implicit hand-off**: an address this node serves and that `eff`
    ///   now gives to another live node stays here (as giver) until that
    ///   node confirms it has it, even if the table does not say so (the
    ///   leader may have decided on stale knowledge, e.g. two failures at
    ///   once), unless it was *taken* from this node (then it goes at once),
    ///   and for `implicit_limit` at most.
    pub(super) fn apply(&mut self, eff: &mut Allocation, before: &Allocation, giver: Giver<'_>) {
        let Giver {
            me,
            alive,
            takeovers,
            now,
            implicit_limit,
        } = giver;
        let mut giving: BTreeSet<AddrSpec> = BTreeSet::new();
        // `eff`, `done` and the previous allocation are all sorted by
        // address: walked together instead of a lookup per address.
        let mut done = self.done.iter().peekable();
        let mut before = before.placements.iter().peekable();
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
                && (!takeovers.contains(&(me.clone(), p.holder.clone()))
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
    }
}

impl Duty {
    /// Records that `by` confirmed it holds `spec` (a hand-off ends).
    pub fn handoff_confirmed(&mut self, spec: AddrSpec, by: NodeId) {
        if self.handoffs.done.get(&spec) != Some(&by) {
            self.handoffs.done.insert(spec, by);
            self.acting.unsettle();
        }
    }

    /// This node (`me`) confirmed to its peers that it holds `spec`: not to
    /// be confirmed again, and its own hand-off to it ends.
    pub fn confirmed_holding(&mut self, spec: AddrSpec, me: &NodeId) {
        self.handoffs.confirmed.insert(spec.clone());
        self.handoff_confirmed(spec, me.clone());
    }

    /// This node (`me`) hears a majority again after serving as a minority:
    /// what it holds stays until the holders the table names confirm they
    /// have it (make-before-break at the heal), bounded like any implicit
    /// hand-off.
    pub fn left_minority(&mut self, me: &NodeId) {
        self.handoffs.minority_held = self
            .acting
            .allocation()
            .placements
            .iter()
            .filter(|(_, p)| &p.holder == me)
            .map(|(s, _)| s.clone())
            .collect();
        self.handoffs.implicit.clear();
        self.acting.unsettle();
    }
}

/// Advances `it` (ascending by key) to `key` and returns its value there,
/// if `key` is present. Successive calls must ask for ascending keys.
fn entry_at<'a, K: Ord + 'a, V: 'a>(
    it: &mut Peekable<impl Iterator<Item = (&'a K, &'a V)>>,
    key: &K,
) -> Option<&'a V> {
    while it.next_if(|(k, _)| *k < key).is_some() {}
    it.next_if(|(k, _)| *k == key).map(|(_, v)| v)
}

/// [`entry_at`] in an allocation's placements: the holder of `spec`.
fn holder_at<'a>(
    it: &mut Peekable<impl Iterator<Item = (&'a AddrSpec, &'a Placement)>>,
    spec: &AddrSpec,
) -> Option<&'a NodeId> {
    entry_at(it, spec).map(|p| &p.holder)
}
