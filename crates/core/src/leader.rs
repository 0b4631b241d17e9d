//! Who leads, terms, and which of two tables a node follows.
//!
//! The leader computes the allocation (which node holds which address) and
//! publishes it as a *table*; every node applies the table it follows. This
//! module holds the three pure rules that decide leadership:
//!
//! 1. [`elect`]: from a membership view, who should lead;
//! 2. [`next_meta`]: what a leader stamps on the table it publishes;
//! 3. [`prefer`]: which of two tables a node follows.
//!
//! # Election and stickiness
//!
//! Only candidates that are alive (per SWIM) and allowed to lead take part. If
//! the *incumbent*, the leader of the table this node follows, is among them,
//! it stays leader. Only otherwise is the leader the best candidate by the
//! order: highest `priority`, then lowest [`NodeId::tie_key`].
//!
//! Stickiness means there is no preemption: a node that joins (or comes back
//! after a reboot) never takes leadership away from a working leader, even if
//! it has a higher priority or a lower hash. Every change of leader costs a
//! new term, a recomputed allocation and possibly address moves, i.e. packet
//! loss for clients; doing that because a node *joined* would punish the
//! cluster for growing. Leadership moves only when the leader dies, stops
//! being allowed to lead (an operator drains it with `can_lead = false`, which
//! is also how to move leadership on purpose), or loses a term conflict after
//! a partition (below). The order is only the tie-break among nodes when no
//! leader is in place, and since every node computes it from the same view it
//! needs no vote.
//!
//! # Terms
//!
//! Views differ between nodes for a while (failure detection is not
//! instantaneous, and partitions happen), so two nodes may both believe they
//! lead. Every published table therefore carries a [`TableMeta`]: a [`Term`],
//! the leader's id, and a version. A node that becomes leader publishes with a
//! term one higher than any term it has seen, version 0, and bumps the version
//! on every republish within its term ([`next_meta`]). Tables compare by
//! [`prefer`]: higher term first, then, for two leaders elected concurrently
//! in the same term, the lower leader tie-key (so both sides pick the same
//! one), then the higher version (the newer table of the same leader). This is
//! a total order on metas, so every node that has seen the same tables follows
//! the same one.
//!
//! The incumbent is defined through tables, not through the view: it is the
//! leader of the most preferred table this node knows of whose leader is
//! still an eligible candidate ([`incumbent`]). [`recognised_leader`] combines
//! the two steps. A follower keeps the most preferred table it has seen
//! (`replica::Replica::apply` takes an incoming table only if [`prefer`]
//! ranks it above the one it follows), so the followed table only ever
//! moves forward and every node that has seen the same tables follows the
//! same one; a deposed or stale leader's tables rank lower and change
//! nothing.
//!
//! # After a partition heals
//!
//! Say `{a, b, c}` followed `a` in term 4, then the network split `{a}` from
//! `{b, c}`. `a` keeps leading its side in term 4 (sticky); `b` and `c` see
//! `a` die, elect the best of themselves, say `b`, which publishes term 5.
//! When the partition heals, both tables are exchanged. On every node,
//! including `a`, the incumbent becomes the leader of the most preferred known
//! table whose leader is alive: `b` (term 5 beats term 4). `elect` returns
//! `b`, `a` recognises `b`, follows its table and stops publishing: it has
//! stepped down. `b`'s tables keep being taken everywhere; `a`'s term-4
//! tables change nothing on any node because their term is lower. Had both
//! sides elected a new leader in the same
//! term, the lower tie-key would win the same way on both sides. Note that the
//! winning side is the one with the higher term, not necessarily the larger
//! one: this rule resolves the conflict deterministically, it does not
//! provide quorum.
//!
//! A node that joins without any table (fresh start) has no incumbent and
//! may briefly elect itself and publish a low-term table; nobody takes it
//! (everyone else follows a higher-term table) and as
//! soon as the newcomer receives the cluster's table, that table's leader
//! becomes its incumbent too. The I/O shell should still keep a newcomer from
//! leading until it has synchronised once (report `can_lead = false` for
//! itself until then), so that it never acts on such a table.

use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// One node as the membership view sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    /// The node.
    pub id: NodeId,
    /// Alive per the failure detector.
    pub alive: bool,
    /// Allowed to lead (configuration, or drained by the operator).
    pub can_lead: bool,
    /// Higher is preferred when a new leader is chosen. Never preempts an
    /// incumbent.
    pub priority: u8,
}

/// A leadership epoch. A new leader always starts a higher term than any it
/// has seen.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Term(pub u64);

impl Term {
    /// The following term (saturating at `u64::MAX`, which is unreachable).
    #[must_use]
    pub fn next(self) -> Term {
        Term(self.0.saturating_add(1))
    }
}

/// The header of a published allocation table: who published it, in which
/// term, and which republish within that term it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableMeta {
    /// The term in which the leader published this table.
    pub term: Term,
    /// The publishing leader.
    pub leader: NodeId,
    /// 0 for the first table of the term, +1 per republish.
    pub version: u64,
}

/// The nodes that may lead in `view`, each with its priority.
///
/// A node listed more than once is handled conservatively (and independently
/// of the order of `view`): it is eligible only if every record of it is
/// alive and can lead, and then with its lowest priority.
fn eligible(view: &[Candidate]) -> BTreeMap<&NodeId, Option<u8>> {
    let mut nodes: BTreeMap<&NodeId, Option<u8>> = BTreeMap::new();
    for c in view {
        let slot = nodes.entry(&c.id).or_insert(Some(c.priority));
        *slot = match *slot {
            Some(p) if c.alive && c.can_lead => Some(p.min(c.priority)),
            _ => None,
        };
    }
    nodes
}

fn is_eligible(view: &[Candidate], id: &NodeId) -> bool {
    // A linear pass: cheaper than building the map for one lookup.
    let mut seen = false;
    for c in view.iter().filter(|c| &c.id == id) {
        if !(c.alive && c.can_lead) {
            return false;
        }
        seen = true;
    }
    seen
}

/// The leader according to `view`, given the `incumbent` (the leader of the
/// table this node follows; see [`incumbent`]).
///
/// Among the candidates that are alive and can lead: the incumbent if it is
/// one of them (stickiness); otherwise the one with the highest priority,
/// then the lowest [`NodeId::tie_key`]. `None` if nobody is eligible.
/// Independent of the order of `view`; a node listed more than once is
/// eligible only if all its records are, with its lowest priority.
pub fn elect(view: &[Candidate], incumbent: Option<&NodeId>) -> Option<NodeId> {
    if let Some(inc) = incumbent
        && is_eligible(view, inc)
    {
        return Some(inc.clone());
    }
    eligible(view)
        .into_iter()
        .filter_map(|(id, p)| p.map(|p| (id, p)))
        .min_by(|(a, pa), (b, pb)| (Reverse(*pa), a.tie_key()).cmp(&(Reverse(*pb), b.tie_key())))
        .map(|(id, _)| id.clone())
}

/// Which of two tables a node follows: `Greater` if `a` is preferred.
///
/// Higher term first; within one term (leaders elected concurrently) the
/// leader with the lower [`NodeId::tie_key`]; then the higher version. A total
/// order: `Equal` only if `a == b`.
pub fn prefer(a: &TableMeta, b: &TableMeta) -> Ordering {
    a.term
        .cmp(&b.term)
        .then_with(|| b.leader.tie_key().cmp(&a.leader.tie_key()))
        .then_with(|| a.version.cmp(&b.version))
}

/// The most preferred of `metas` (by [`prefer`]), if any.
pub fn most_preferred<'a>(metas: impl IntoIterator<Item = &'a TableMeta>) -> Option<&'a TableMeta> {
    metas.into_iter().max_by(|a, b| prefer(a, b))
}

/// The incumbent to pass to [`elect`]: the leader of the most preferred of
/// `tables` whose leader is alive and can lead in `view`.
///
/// `tables` are the tables this node knows of right now: the one it follows,
/// its own if it leads, and any just received. Taking the most preferred one
/// is what makes leaders converge after a partition: once both sides' tables
/// have been exchanged, every node's incumbent is the same.
pub fn incumbent<'a>(
    tables: impl IntoIterator<Item = &'a TableMeta>,
    view: &[Candidate],
) -> Option<&'a NodeId> {
    most_preferred(tables.into_iter().filter(|t| is_eligible(view, &t.leader))).map(|t| &t.leader)
}

/// The leader this node recognises: [`elect`] with the [`incumbent`] of
/// `tables`.
pub fn recognised_leader<'a>(
    view: &[Candidate],
    tables: impl IntoIterator<Item = &'a TableMeta>,
) -> Option<NodeId> {
    elect(view, incumbent(tables, view))
}

/// The meta for the next table `me` publishes as leader.
///
/// `highest_seen` is the most preferred meta this node has seen from anyone
/// (own tables included; its term is the highest term seen). `current_own` is
/// the meta of the last table `me` published, if any. If `current_own` is
/// `me`'s and nothing preferred to it has been seen, this is a republish in
/// the same term with the version bumped. Otherwise `me` starts a new term,
/// one above every term in the inputs, at version 0. Either way the result
/// is strictly preferred to both inputs.
pub fn next_meta(
    me: &NodeId,
    highest_seen: Option<&TableMeta>,
    current_own: Option<&TableMeta>,
) -> TableMeta {
    if let Some(own) = current_own
        && own.leader == *me
        && highest_seen.is_none_or(|h| prefer(own, h) != Ordering::Less)
        && let Some(version) = own.version.checked_add(1)
    {
        return TableMeta {
            term: own.term,
            leader: me.clone(),
            version,
        };
    }
    let top = [highest_seen, current_own]
        .into_iter()
        .flatten()
        .map(|m| m.term)
        .max()
        .unwrap_or_default();
    TableMeta {
        term: top.next(),
        leader: me.clone(),
        version: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, alive: bool, can_lead: bool, priority: u8) -> Candidate {
        Candidate {
            id: NodeId::new(id),
            alive,
            can_lead,
            priority,
        }
    }

    fn meta(term: u64, leader: &str, version: u64) -> TableMeta {
        TableMeta {
            term: Term(term),
            leader: NodeId::new(leader),
            version,
        }
    }

    #[test]
    fn empty_or_ineligible_view_has_no_leader() {
        assert_eq!(elect(&[], None), None);
        let view = [cand("a", false, true, 9), cand("b", true, false, 9)];
        assert_eq!(elect(&view, None), None);
        assert_eq!(elect(&view, Some(&NodeId::new("a"))), None);
    }

    #[test]
    fn priority_then_tie_key() {
        let ids = ["n1", "n2", "n3", "n4"];
        let view: Vec<_> = ids.iter().map(|i| cand(i, true, true, 1)).collect();
        let lowest = ids
            .iter()
            .map(|i| NodeId::new(*i))
            .min_by(|a, b| a.tie_key().cmp(&b.tie_key()))
            .unwrap();
        assert_eq!(elect(&view, None), Some(lowest.clone()));
        // A higher priority beats the hash order.
        let other = ids.iter().find(|i| **i != lowest.as_str()).unwrap();
        let mut view = view;
        for c in &mut view {
            if c.id.as_str() == *other {
                c.priority = 2;
            }
        }
        assert_eq!(elect(&view, None), Some(NodeId::new(*other)));
    }

    #[test]
    fn duplicates_are_conservative() {
        let dup = [
            cand("a", true, true, 9),
            cand("a", false, true, 9),
            cand("b", true, true, 1),
        ];
        assert_eq!(elect(&dup, None), Some(NodeId::new("b")));
        assert_eq!(elect(&dup, Some(&NodeId::new("a"))), Some(NodeId::new("b")));
        let low = [
            cand("a", true, true, 9),
            cand("a", true, true, 0),
            cand("b", true, true, 1),
        ];
        assert_eq!(elect(&low, None), Some(NodeId::new("b")));
    }

    #[test]
    fn prefer_orders_term_then_tie_key_then_version() {
        let (lo, hi) = {
            let x = NodeId::new("x");
            let y = NodeId::new("y");
            if x.tie_key() < y.tie_key() {
                ("x", "y")
            } else {
                ("y", "x")
            }
        };
        assert_eq!(prefer(&meta(2, hi, 0), &meta(1, lo, 9)), Ordering::Greater);
        assert_eq!(prefer(&meta(2, lo, 0), &meta(2, hi, 9)), Ordering::Greater);
        assert_eq!(prefer(&meta(2, lo, 3), &meta(2, lo, 2)), Ordering::Greater);
        assert_eq!(prefer(&meta(2, lo, 3), &meta(2, lo, 3)), Ordering::Equal);
    }

    #[test]
    fn next_meta_republishes_then_starts_new_terms() {
        let me = NodeId::new("me");
        assert_eq!(next_meta(&me, None, None), meta(1, "me", 0));
        let own = meta(4, "me", 2);
        assert_eq!(next_meta(&me, Some(&own), Some(&own)), meta(4, "me", 3));
        // Someone else's newer term seen: start above it.
        assert_eq!(
            next_meta(&me, Some(&meta(7, "other", 0)), Some(&own)),
            meta(8, "me", 0)
        );
        // An old own table from an earlier term: new term.
        assert_eq!(
            next_meta(&me, Some(&meta(5, "other", 0)), Some(&meta(3, "me", 9))),
            meta(6, "me", 0)
        );
        // Version exhausted: new term rather than overflow.
        let full = meta(4, "me", u64::MAX);
        assert_eq!(next_meta(&me, Some(&full), Some(&full)), meta(5, "me", 0));
    }

    #[test]
    fn incumbent_skips_dead_leaders() {
        let view = [cand("a", false, true, 1), cand("b", true, true, 1)];
        let t_a = meta(6, "a", 0);
        let t_b = meta(5, "b", 3);
        assert_eq!(incumbent([&t_a, &t_b], &view), Some(&NodeId::new("b")));
        assert_eq!(incumbent([&t_a], &view), None);
        assert_eq!(
            recognised_leader(&view, [&t_a, &t_b]),
            Some(NodeId::new("b"))
        );
    }
}
