//! Property tests for `alloc::allocate`: exactly one holder, balance,
//! minimal movement (against brute force), the seed's greedy rule, standby
//! consistency and determinism.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use fechter_core::{AddrSpec, Allocation, NodeId, Placement, allocate};
use proptest::prelude::*;

const POOL: usize = 6;

fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i}"))
}

fn spec(i: usize) -> AddrSpec {
    AddrSpec {
        iface: "eth0".into(),
        ip: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10 + i as u8)),
        prefix: 24,
    }
}

/// A scenario: addresses with addition keys, eligible nodes, a previous
/// allocation that may name ineligible nodes and need not be balanced.
#[derive(Debug, Clone)]
struct Case {
    addresses: Vec<(u32, AddrSpec)>,
    eligible: Vec<NodeId>,
    previous: Allocation,
}

fn previous_from(addresses: &[(u32, AddrSpec)], holders: &[Option<usize>]) -> Allocation {
    let placements = addresses
        .iter()
        .zip(holders)
        .filter_map(|((_, s), h)| {
            h.map(|h| {
                (
                    s.clone(),
                    Placement {
                        holder: node(h),
                        standby: None,
                        handoff_from: None,
                    },
                )
            })
        })
        .collect();
    Allocation { placements }
}

fn case(max_addrs: usize) -> impl Strategy<Value = Case> {
    (
        0..=max_addrs,
        proptest::sample::subsequence((0..POOL).collect::<Vec<_>>(), 0..=4),
    )
        .prop_flat_map(|(n, elig)| {
            let keys = proptest::collection::vec(0u32..1000, n);
            let holders = proptest::collection::vec(proptest::option::of(0..POOL), n);
            (Just(elig), keys, holders)
        })
        .prop_map(|(elig, keys, holders)| {
            let addresses: Vec<(u32, AddrSpec)> = keys
                .into_iter()
                .enumerate()
                .map(|(i, k)| (k, spec(i)))
                .collect();
            let previous = previous_from(&addresses, &holders);
            Case {
                addresses,
                eligible: elig.into_iter().map(node).collect(),
                previous,
            }
        })
}

fn in_order(addresses: &[(u32, AddrSpec)]) -> Vec<AddrSpec> {
    let mut v = addresses.to_vec();
    v.sort();
    v.into_iter().map(|(_, s)| s).collect()
}

/// The seed's algorithm, written the obvious O(n·k) way.
fn seed_greedy(order: &[AddrSpec], nodes: &[NodeId]) -> BTreeMap<AddrSpec, NodeId> {
    let mut count: BTreeMap<&NodeId, usize> = nodes.iter().map(|n| (n, 0)).collect();
    let mut out = BTreeMap::new();
    for s in order {
        let best = *count
            .iter()
            .min_by(|a, b| (a.1, a.0.tie_key()).cmp(&(b.1, b.0.tie_key())))
            .unwrap()
            .0;
        *count.get_mut(best).unwrap() += 1;
        out.insert(s.clone(), best.clone());
    }
    out
}

fn is_balanced(a: &Allocation, nodes: &[NodeId]) -> bool {
    let counts = a.counts();
    let per: Vec<usize> = nodes
        .iter()
        .map(|n| counts.get(n).copied().unwrap_or(0))
        .collect();
    per.iter().max().unwrap_or(&0) - per.iter().min().unwrap_or(&0) <= 1
}

/// Moves = addresses whose previous holder is eligible but whose holder changed.
fn moves(prev: &Allocation, next: &BTreeMap<AddrSpec, NodeId>, eligible: &[NodeId]) -> usize {
    next.iter()
        .filter(|(s, h)| {
            prev.holder(s)
                .is_some_and(|p| eligible.contains(p) && p != *h)
        })
        .count()
}

/// The minimum number of moves over every balanced allocation (brute force).
fn brute_force_min_moves(c: &Case) -> usize {
    let order = in_order(&c.addresses);
    let k = c.eligible.len();
    let n = order.len();
    let mut best = usize::MAX;
    let mut choice = vec![0usize; n];
    loop {
        let mut counts = vec![0usize; k];
        choice.iter().for_each(|&i| counts[i] += 1);
        if counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1 {
            let m: BTreeMap<AddrSpec, NodeId> = order
                .iter()
                .zip(&choice)
                .map(|(s, &i)| (s.clone(), c.eligible[i].clone()))
                .collect();
            best = best.min(moves(&c.previous, &m, &c.eligible));
        }
        // next assignment in base k
        let mut i = 0;
        while i < n && choice[i] == k - 1 {
            choice[i] = 0;
            i += 1;
        }
        if i == n {
            return best;
        }
        choice[i] += 1;
    }
}

fn holders(a: &Allocation) -> BTreeMap<AddrSpec, NodeId> {
    a.placements
        .iter()
        .map(|(s, p)| (s.clone(), p.holder.clone()))
        .collect()
}

fn without(nodes: &[NodeId], gone: &NodeId) -> Vec<NodeId> {
    nodes.iter().filter(|n| *n != gone).cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_holder_each_balanced_and_eligible(c in case(12)) {
        let a = allocate(&c.addresses, &c.eligible, &c.previous);
        if c.eligible.is_empty() {
            prop_assert!(a.placements.is_empty());
        } else {
            prop_assert_eq!(a.placements.len(), c.addresses.len());
            prop_assert!(is_balanced(&a, &c.eligible));
            for p in a.placements.values() {
                prop_assert!(c.eligible.contains(&p.holder));
                if let Some(s) = &p.standby {
                    prop_assert!(c.eligible.contains(s));
                    prop_assert_ne!(s, &p.holder);
                } else {
                    prop_assert_eq!(c.eligible.len(), 1);
                }
            }
        }
    }

    #[test]
    fn moves_are_the_brute_force_minimum(c in case(6)) {
        prop_assume!(!c.eligible.is_empty());
        let a = allocate(&c.addresses, &c.eligible, &c.previous);
        prop_assert_eq!(moves(&c.previous, &holders(&a), &c.eligible), brute_force_min_moves(&c));
    }

    #[test]
    fn without_history_it_is_the_seed_greedy(c in case(20)) {
        prop_assume!(!c.eligible.is_empty());
        let a = allocate(&c.addresses, &c.eligible, &Allocation::default());
        prop_assert_eq!(holders(&a), seed_greedy(&in_order(&c.addresses), &c.eligible));
    }

    #[test]
    fn an_allocation_is_its_own_fixed_point(c in case(20)) {
        let a = allocate(&c.addresses, &c.eligible, &c.previous);
        let b = allocate(&c.addresses, &c.eligible, &a);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn adding_an_address_moves_nothing_else(c in case(20)) {
        let a = allocate(&c.addresses, &c.eligible, &c.previous);
        let mut more = c.addresses.clone();
        more.push((u32::MAX, spec(100)));
        let b = allocate(&more, &c.eligible, &a);
        prop_assert!(b.moved_from(&a).is_empty());
    }

    #[test]
    fn removing_an_address_moves_at_most_one_other(c in case(20), pick in any::<prop::sample::Index>()) {
        prop_assume!(!c.addresses.is_empty());
        let a = allocate(&c.addresses, &c.eligible, &c.previous);
        let mut fewer = c.addresses.clone();
        fewer.remove(pick.index(fewer.len()));
        let b = allocate(&fewer, &c.eligible, &a);
        prop_assert!(b.moved_from(&a).len() <= 1);
    }

    #[test]
    fn a_failure_moves_only_the_failed_nodes_addresses_to_its_standbys(c in case(20)) {
        prop_assume!(!c.eligible.is_empty());
        let a = allocate(&c.addresses, &c.eligible, &c.previous);
        for gone in &c.eligible {
            let b = allocate(&c.addresses, &without(&c.eligible, gone), &a);
            for (s, p) in &a.placements {
                let now = b.holder(s);
                if &p.holder == gone {
                    // The standby named before the failure is the new holder.
                    prop_assert_eq!(now, p.standby.as_ref());
                } else {
                    prop_assert_eq!(now, Some(&p.holder));
                }
            }
        }
    }

    #[test]
    fn independent_of_input_order(
        c in case(20),
        seed in any::<u64>(),
    ) {
        let a = allocate(&c.addresses, &c.eligible, &c.previous);
        let mut addrs = c.addresses.clone();
        let mut nodes = c.eligible.clone();
        // A seeded Fisher-Yates shuffle of both inputs.
        let mut x = seed | 1;
        let mut next = |m: usize| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x % m as u64) as usize };
        for i in (1..addrs.len()).rev() { let j = next(i + 1); addrs.swap(i, j); }
        for i in (1..nodes.len()).rev() { let j = next(i + 1); nodes.swap(i, j); }
        nodes.extend(c.eligible.first().cloned()); // a duplicate counts once
        prop_assert_eq!(a, allocate(&addrs, &nodes, &c.previous));
    }
}

#[test]
fn the_seed_walkthrough() {
    // Two machines, two addresses: one each; kill ws-2 and ws-1 holds both.
    let ws = [NodeId::new("ws-1"), NodeId::new("ws-2")];
    let addrs = vec![(1, spec(0)), (2, spec(1))];
    let a = allocate(&addrs, &ws, &Allocation::default());
    let counts = a.counts();
    assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![1, 1]);
    let b = allocate(&addrs, &ws[..1], &a);
    assert!(
        b.placements
            .values()
            .all(|p| p.holder == ws[0] && p.standby.is_none())
    );
}
