//! Allocation: where every address goes.
//!
//! [`allocate`] is the seed's greedy algorithm made sticky. It is a pure
//! function of
//! - the assignable addresses, each with its *addition key* (the order in which
//!   the addresses were added to the cluster; the caller passes any `Ord` key,
//!   the agent passes the HLC stamp of the add),
//! - the eligible nodes (up, healthy, mature: the caller decides),
//! - the previous allocation,
//!
//! and returns a [`Placement`] (holder and standby) per address.
//!
//! ## The rules
//! Let `n` addresses and `k` eligible nodes, `q = n / k`, `r = n % k`. A
//! balanced allocation gives every node `q` or `q + 1` addresses, and exactly
//! `r` nodes `q + 1`.
//!
//! 1. **Keep.** Every address whose previous holder is still eligible stays,
//!    up to that node's fair share. A node's share is `q`; the `r` extra
//!    slots go to the nodes that previously held more than `q` (most held
//!    first, ties to the lowest [`NodeId::tie_key`]). A node over its share
//!    keeps its earliest-added addresses and releases the latest-added.
//! 2. **Place.** The remaining addresses, in addition order, each go to the
//!    least-loaded node; ties go to the lowest [`NodeId::tie_key`] (64-bit
//!    FNV-1a of the id, then the id). With no previous allocation this *is*
//!    the seed's algorithm.
//! 3. **Standby.** The standby of an address is the node rule 2 would give it
//!    if its holder failed: the holder's addresses, in addition order, placed
//!    greedily over the other nodes' final counts. Because a failure never
//!    forces any other address to move (see below), this is exactly what
//!    [`allocate`] computes when the holder is removed, so a standby can take
//!    over without waiting for a new table.
//!
//! ## Why the number of moves is minimal
//! Only addresses whose previous holder is still eligible can stay. A node can
//! keep at most its share, and at most `r` nodes can keep `q + 1`. Giving the
//! extra slots to nodes that held more than `q` keeps
//! `sum(min(c_i, q)) + min(r, #{i : c_i > q})` addresses, which is the
//! maximum any balanced allocation can keep. Rule 2 then only places
//! addresses that had to move (or were new), and it always ends balanced: the
//! least-loaded node has at most `q` while any address is left.
//!
//! Consequences (checked by property tests): adding an address moves nothing
//! else; marking one do-not-assign moves at most one other; a node's failure
//! moves only that node's addresses.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{AddrSpec, NodeId};

/// Holder and standby of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The node that installs and announces the address.
    pub holder: NodeId,
    /// The node that takes the address if the holder fails. `None` when the
    /// holder is the only eligible node.
    pub standby: Option<NodeId>,
    /// During a planned, make-before-break hand-off: the previous holder, which
    /// keeps the address until the new holder has installed and announced it.
    /// [`allocate`] never sets it; the leader does when it moves an address
    /// away from a node that is still alive.
    #[serde(default)]
    pub handoff_from: Option<NodeId>,
}

/// The result of [`allocate`]: a placement per assignable address. Addresses
/// without a placement have no holder (no node is eligible).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub placements: BTreeMap<AddrSpec, Placement>,
}

impl Allocation {
    /// The holder of `spec`, if any.
    pub fn holder(&self, spec: &AddrSpec) -> Option<&NodeId> {
        self.placements.get(spec).map(|p| &p.holder)
    }

    /// How many addresses each node holds (nodes holding none are absent).
    pub fn counts(&self) -> BTreeMap<&NodeId, usize> {
        let mut counts = BTreeMap::new();
        for p in self.placements.values() {
            *counts.entry(&p.holder).or_insert(0) += 1;
        }
        counts
    }

    /// The addresses `self` gives a different holder than `previous` did,
    /// counting only addresses that `previous` placed.
    pub fn moved_from<'a>(&'a self, previous: &Allocation) -> Vec<&'a AddrSpec> {
        self.placements
            .iter()
            .filter(|(spec, p)| previous.holder(spec).is_some_and(|h| *h != p.holder))
            .map(|(spec, _)| spec)
            .collect()
    }
}

/// Computes holder and standby for every address. See the module docs for the
/// rules. Deterministic: the result does not depend on the order of
/// `addresses` (they are ordered by their key, then spec) or of `eligible`;
/// duplicate specs keep their lowest key, duplicate nodes count once.
pub fn allocate<K: Ord>(
    addresses: &[(K, AddrSpec)],
    eligible: &[NodeId],
    previous: &Allocation,
) -> Allocation {
    let nodes = Nodes::new(eligible);
    if nodes.ids.is_empty() {
        return Allocation::default();
    }
    let order = addition_order(addresses);
    let k = nodes.ids.len();
    let (q, r) = (order.len() / k, order.len() % k);

    // Rule 1: keep what the previous holder may keep.
    let mut prev_held: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (a, spec) in order.iter().enumerate() {
        if let Some(n) = previous.holder(spec).and_then(|h| nodes.index(h)) {
            prev_held[n].push(a);
        }
    }
    let mut over: Vec<usize> = (0..k).filter(|&n| prev_held[n].len() > q).collect();
    over.sort_by_key(|&n| (std::cmp::Reverse(prev_held[n].len()), n));
    let mut cap = vec![q; k];
    for &n in over.iter().take(r) {
        cap[n] = q + 1;
    }
    let mut holder: Vec<Option<usize>> = vec![None; order.len()];
    let mut count = vec![0usize; k];
    for n in 0..k {
        for &a in prev_held[n].iter().take(cap[n]) {
            holder[a] = Some(n);
            count[n] += 1;
        }
    }

    // Rule 2: place the rest greedily, in addition order.
    let mut load: BTreeSet<(usize, usize)> = (0..k).map(|n| (count[n], n)).collect();
    for h in holder.iter_mut().filter(|h| h.is_none()) {
        let n = take_least_loaded(&mut load);
        *h = Some(n);
        count[n] += 1;
    }

    // Rule 3: standbys, by replaying rule 2 for each holder's addresses.
    let mut by_holder: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (a, h) in holder.iter().enumerate() {
        by_holder[h.expect("every address was placed")].push(a);
    }
    let mut standby: Vec<Option<usize>> = vec![None; order.len()];
    if k > 1 {
        for (h, held) in by_holder.iter().enumerate() {
            let mut extra: BTreeMap<usize, usize> = BTreeMap::new();
            load.remove(&(count[h], h));
            for &a in held {
                let n = take_least_loaded(&mut load);
                standby[a] = Some(n);
                *extra.entry(n).or_insert(0) += 1;
            }
            // Undo: give every node it touched its true count back.
            for (n, e) in extra {
                load.remove(&(count[n] + e, n));
                load.insert((count[n], n));
            }
            load.insert((count[h], h));
        }
    }

    let placements = order
        .iter()
        .enumerate()
        .map(|(a, spec)| {
            let placement = Placement {
                holder: nodes.ids[holder[a].expect("placed")].clone(),
                standby: standby[a].map(|n| nodes.ids[n].clone()),
                handoff_from: None,
            };
            ((*spec).clone(), placement)
        })
        .collect();
    Allocation { placements }
}

/// Pops the least-loaded node (ties: lowest index = lowest tie key) and puts it
/// back with one more address.
fn take_least_loaded(load: &mut BTreeSet<(usize, usize)>) -> usize {
    let (c, n) = load.pop_first().expect("at least one node");
    load.insert((c + 1, n));
    n
}

/// Specs in addition order (key, then spec), each once.
fn addition_order<K: Ord>(addresses: &[(K, AddrSpec)]) -> Vec<&AddrSpec> {
    let mut sorted: Vec<&(K, AddrSpec)> = addresses.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let mut seen = BTreeSet::new();
    sorted
        .into_iter()
        .filter(|(_, spec)| seen.insert(spec))
        .map(|(_, spec)| spec)
        .collect()
}

/// Eligible nodes sorted by tie key, so that a node's index is its rank in the
/// seed's tie-break order.
struct Nodes {
    ids: Vec<NodeId>,
    index: BTreeMap<NodeId, usize>,
}

impl Nodes {
    fn new(eligible: &[NodeId]) -> Self {
        let mut ids: Vec<NodeId> = eligible.to_vec();
        ids.sort_by(|a, b| a.tie_key().cmp(&b.tie_key()));
        ids.dedup();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Nodes { ids, index }
    }

    fn index(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }
}
