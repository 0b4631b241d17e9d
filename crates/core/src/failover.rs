//! Who may hold addresses, and how a table is adjusted between the leader's
//! publications: eligibility (with maturity and fail-static), standby
//! takeovers, and make-before-break hand-offs.
//!
//! All pure: the engine feeds in what it observed (liveness, records,
//! timestamps turned into booleans) and gets decisions back.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::replica::{Admin, NodeRecord};
use crate::{AddrSpec, Allocation, NodeId};

/// What the leader knows about one node when it decides eligibility.
#[derive(Debug, Clone)]
pub struct NodeView<'a> {
    pub record: &'a NodeRecord,
    /// Alive per membership (SWIM), or this node itself.
    pub alive: bool,
    /// Up, healthy and alive without interruption for the maturity period.
    pub mature: bool,
    /// A standby took its addresses recently (it was unheard): kept out
    /// until the quarantine ends.
    pub suspected: bool,
}

/// The result of [`eligibility`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eligibility {
    /// The nodes that may hold addresses (the input of [`crate::allocate`]).
    pub eligible: Vec<NodeId>,
    /// No up node is healthy: addresses stay where they are rather than
    /// vanish (the unhealthy up nodes are used as they are).
    pub fail_static: bool,
    /// Why each other known node is not eligible.
    pub why_not: BTreeMap<NodeId, Vec<String>>,
}

/// Decides which nodes may hold addresses.
///
/// A node is eligible when it is alive, admin up, not leaving, not
/// forgotten, not suspected, healthy, and either mature or already holding an address in
/// `previous` (a node that serves now is not made to wait, e.g. after a
/// leader change). If no alive, up node is healthy, the cluster is
/// *fail-static*: the unhealthy up nodes stay eligible so that addresses stay
/// where they are instead of vanishing.
pub fn eligibility(nodes: &[NodeView<'_>], previous: &Allocation) -> Eligibility {
    // Who holds something: looked up only for a candidate not yet mature
    // (rare), not collected from every placement on every leader tick.
    let holds = |id: &NodeId| previous.placements.values().any(|p| &p.holder == id);
    let mut why_not: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();
    let mut candidates = Vec::new();
    for v in nodes {
        let id = &v.record.id;
        let mut why = Vec::new();
        if !v.alive {
            why.push("dead".to_string());
        }
        if v.record.admin == Admin::Down {
            why.push("down".to_string());
        }
        if v.record.leaving {
            why.push("leaving".to_string());
        }
        if v.record.forgotten {
            why.push("forgotten".to_string());
        }
        if v.suspected {
            why.push("unheard by its standby".to_string());
        }
        if why.is_empty() {
            candidates.push(v);
        } else {
            why_not.insert(id.clone(), why);
        }
    }
    let ready = |v: &&NodeView<'_>| v.mature || holds(&v.record.id);
    let healthy: Vec<&&NodeView<'_>> = candidates
        .iter()
        .filter(|v| v.record.unhealthy.is_empty())
        .collect();
    let fail_static = healthy.is_empty() && !candidates.is_empty();
    let mut eligible = Vec::new();
    for v in &candidates {
        let id = &v.record.id;
        let mut why = Vec::new();
        if !fail_static {
            why.extend(v.record.unhealthy.iter().cloned());
        }
        if why.is_empty() && !ready(v) {
            why.push("maturing".to_string());
        }
        if why.is_empty() {
            eligible.push(id.clone());
        } else {
            why_not.insert(id.clone(), why);
        }
    }
    eligible.sort();
    Eligibility {
        eligible,
        fail_static,
        why_not,
    }
}

/// [`crate::allocate`] per interface: the addresses on each interface are
/// spread over the eligible nodes that can use that interface (`usable`).
/// Balance, stickiness and the standby rule hold within each interface's
/// group; a node that lacks an interface simply takes no address on it.
pub fn allocate_by_interface<K: Ord + Clone>(
    addresses: &[(K, AddrSpec)],
    eligible: &[NodeId],
    usable: impl Fn(&NodeId, &str) -> bool,
    previous: &Allocation,
) -> Allocation {
    let mut groups: BTreeMap<&str, Vec<(K, AddrSpec)>> = BTreeMap::new();
    for (k, s) in addresses {
        groups
            .entry(s.iface.as_str())
            .or_default()
            .push((k.clone(), s.clone()));
    }
    let mut out = Allocation::default();
    for (iface, addrs) in groups {
        let nodes: Vec<NodeId> = eligible
            .iter()
            .filter(|n| usable(n, iface))
            .cloned()
            .collect();
        out.placements
            .extend(crate::allocate(&addrs, &nodes, previous).placements);
    }
    out
}

/// Applies standby takeovers to a table: for every `(holder, standby)` in
/// `taken`, the addresses that `holder` holds with `standby` as standby are
/// held by `standby` instead. This is exactly what [`crate::allocate`] gives
/// when `holder` fails (see its standby rule), so the leader's next table
/// agrees with it.
pub fn apply_takeovers(alloc: &Allocation, taken: &BTreeSet<(NodeId, NodeId)>) -> Allocation {
    if taken.is_empty() {
        return alloc.clone();
    }
    let mut out = alloc.clone();
    for p in out.placements.values_mut() {
        if let Some(s) = &p.standby
            && taken.contains(&(p.holder.clone(), s.clone()))
        {
            p.holder = s.clone();
            p.standby = None;
            p.handoff_from = None;
        }
    }
    out
}

/// Marks planned moves for make-before-break: an address whose holder
/// changes from a node that is still `alive` gets `handoff_from` = that node,
/// which keeps it until the receiver confirmed. A pending hand-off in
/// `previous` to the same receiver is kept while its giver is alive and the
/// receiver has not confirmed (`done(spec, receiver)`).
pub fn mark_handoffs(
    previous: &Allocation,
    mut next: Allocation,
    alive: impl Fn(&NodeId) -> bool,
    done: impl Fn(&AddrSpec, &NodeId) -> bool,
) -> Allocation {
    for (spec, p) in next.placements.iter_mut() {
        let Some(prev) = previous.placements.get(spec) else {
            continue;
        };
        let giver = if prev.holder != p.holder {
            Some(prev.holder.clone())
        } else {
            prev.handoff_from.clone()
        };
        p.handoff_from = giver.filter(|g| *g != p.holder && alive(g) && !done(spec, &p.holder));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocate;

    fn rec(id: &str, up: bool, unhealthy: &[&str]) -> NodeRecord {
        NodeRecord {
            admin: if up { Admin::Up } else { Admin::Down },
            unhealthy: unhealthy.iter().map(|s| s.to_string()).collect(),
            ..NodeRecord::new(NodeId::new(id), 1)
        }
    }

    fn view(r: &NodeRecord, alive: bool, mature: bool) -> NodeView<'_> {
        NodeView {
            record: r,
            alive,
            mature,
            suspected: false,
        }
    }

    fn spec(i: u8) -> AddrSpec {
        format!("eth0:198.18.0.{i}/24").parse().unwrap()
    }

    #[test]
    fn only_alive_up_healthy_mature_nodes_are_eligible() {
        let a = rec("a", true, &[]);
        let b = rec("b", false, &[]);
        let c = rec("c", true, &["gateway"]);
        let d = rec("d", true, &[]);
        let e = rec("e", true, &[]);
        let el = eligibility(
            &[
                view(&a, true, true),
                view(&b, true, true),
                view(&c, true, true),
                view(&d, false, true),
                view(&e, true, false),
            ],
            &Allocation::default(),
        );
        assert_eq!(el.eligible, vec![NodeId::new("a")]);
        assert!(!el.fail_static);
        assert_eq!(el.why_not[&NodeId::new("b")], vec!["down"]);
        assert_eq!(el.why_not[&NodeId::new("c")], vec!["gateway"]);
        assert_eq!(el.why_not[&NodeId::new("d")], vec!["dead"]);
        assert_eq!(el.why_not[&NodeId::new("e")], vec!["maturing"]);
    }

    #[test]
    fn a_node_already_holding_need_not_mature() {
        let a = rec("a", true, &[]);
        let prev = allocate(&[(0, spec(1))], &[NodeId::new("a")], &Allocation::default());
        let el = eligibility(&[view(&a, true, false)], &prev);
        assert_eq!(el.eligible, vec![NodeId::new("a")]);
    }

    #[test]
    fn fail_static_when_no_up_node_is_healthy() {
        let a = rec("a", true, &["gateway"]);
        let b = rec("b", true, &["check web"]);
        let c = rec("c", false, &[]);
        let el = eligibility(
            &[
                view(&a, true, true),
                view(&b, true, true),
                view(&c, true, true),
            ],
            &Allocation::default(),
        );
        assert!(el.fail_static);
        assert_eq!(el.eligible, vec![NodeId::new("a"), NodeId::new("b")]);
    }

    #[test]
    fn each_interface_goes_only_to_nodes_that_can_use_it() {
        let nodes: Vec<NodeId> = ["a", "b", "c"].iter().map(|n| NodeId::new(*n)).collect();
        let mut addrs: Vec<(u32, AddrSpec)> = (0..4).map(|i| (i as u32, spec(10 + i))).collect();
        for i in 0..3u8 {
            addrs.push((
                10 + u32::from(i),
                format!("eth1:198.18.1.{i}/24").parse().unwrap(),
            ));
        }
        // `c` has no eth1.
        let usable = |n: &NodeId, i: &str| !(n.as_str() == "c" && i == "eth1");
        let a = allocate_by_interface(&addrs, &nodes, usable, &Allocation::default());
        assert_eq!(a.placements.len(), 7);
        for (s, p) in &a.placements {
            assert!(usable(&p.holder, &s.iface), "{s} on {}", p.holder);
            if let Some(sb) = &p.standby {
                assert!(usable(sb, &s.iface), "{s} standby {sb}");
            }
        }
        // eth0 is balanced over three nodes, eth1 over two.
        let on = |iface: &str, n: &str| {
            a.placements
                .iter()
                .filter(|(s, p)| s.iface == iface && p.holder.as_str() == n)
                .count()
        };
        assert_eq!(on("eth1", "c"), 0);
        assert!(on("eth1", "a").abs_diff(on("eth1", "b")) <= 1);
        assert!(
            ["a", "b", "c"]
                .iter()
                .all(|n| (1..=2).contains(&on("eth0", n)))
        );
    }

    #[test]
    fn takeovers_match_what_the_leader_computes_after_the_failure() {
        let nodes: Vec<NodeId> = ["a", "b", "c"].iter().map(|n| NodeId::new(*n)).collect();
        let addrs: Vec<(u32, AddrSpec)> = (0..7).map(|i| (i as u32, spec(10 + i))).collect();
        let t = allocate(&addrs, &nodes, &Allocation::default());
        for dead in &nodes {
            // Every standby of the dead node's addresses takes over its share.
            let taken: BTreeSet<(NodeId, NodeId)> = t
                .placements
                .values()
                .filter(|p| &p.holder == dead)
                .filter_map(|p| Some((dead.clone(), p.standby.clone()?)))
                .collect();
            let fast = apply_takeovers(&t, &taken);
            let survivors: Vec<NodeId> = nodes.iter().filter(|n| *n != dead).cloned().collect();
            let slow = allocate(&addrs, &survivors, &t);
            for (s, p) in &slow.placements {
                assert_eq!(fast.holder(s), Some(&p.holder), "{s} after {dead} died");
            }
        }
    }

    #[test]
    fn planned_moves_are_make_before_break() {
        let nodes: Vec<NodeId> = ["a", "b"].iter().map(|n| NodeId::new(*n)).collect();
        let addrs: Vec<(u32, AddrSpec)> = (0..4).map(|i| (i as u32, spec(10 + i))).collect();
        let before = allocate(&addrs, &nodes, &Allocation::default());
        // `a` goes down (alive): its addresses move to b with a as giver.
        let after = allocate(&addrs, &nodes[1..], &before);
        let none = |_: &AddrSpec, _: &NodeId| false;
        let marked = mark_handoffs(&before, after.clone(), |_| true, none);
        for (s, p) in &marked.placements {
            let was = before.holder(s).unwrap();
            if *was == nodes[0] {
                assert_eq!(p.handoff_from.as_ref(), Some(&nodes[0]));
            } else {
                assert_eq!(p.handoff_from, None);
            }
        }
        // A dead giver is not waited for.
        let dead = mark_handoffs(&before, after.clone(), |n| *n != nodes[0], none);
        assert!(dead.placements.values().all(|p| p.handoff_from.is_none()));
        // Confirmed hand-offs are dropped; pending ones are kept on republish.
        let done: BTreeSet<AddrSpec> = marked
            .placements
            .iter()
            .filter(|(_, p)| p.handoff_from.is_some())
            .map(|(s, _)| s.clone())
            .take(1)
            .collect();
        // Confirmed by its receiver (b); a confirmation by another node does not count.
        let by_b = |s: &AddrSpec, h: &NodeId| done.contains(s) && *h == nodes[1];
        let again = mark_handoffs(&marked, after.clone(), |_| true, by_b);
        let pending = again
            .placements
            .values()
            .filter(|p| p.handoff_from.is_some())
            .count();
        let was_pending = marked
            .placements
            .values()
            .filter(|p| p.handoff_from.is_some())
            .count();
        assert_eq!(pending, was_pending - 1);
        let by_a = |s: &AddrSpec, h: &NodeId| done.contains(s) && *h == nodes[0];
        let still = mark_handoffs(&marked, after, |_| true, by_a);
        let still_pending = still
            .placements
            .values()
            .filter(|p| p.handoff_from.is_some())
            .count();
        assert_eq!(still_pending, was_pending);
    }
}
