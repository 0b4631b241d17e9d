//! Node records with tombstones (`fechter forget`): the merge of node
//! records stays commutative, associative and idempotent; a tombstone wins
//! over everything its incarnation wrote and loses to a higher one; and a
//! forgotten node is never counted or eligible.

use std::collections::BTreeMap;

use fechter_core::failover::{NodeView, eligibility};
use fechter_core::replica::{Admin, Item, NodeRecord, Replica};
use fechter_core::{Allocation, NodeId};
use proptest::prelude::*;

const NODES: [&str; 3] = ["a", "b", "c"];

/// Records of three nodes in few incarnations and versions, with
/// tombstones, so that equal ranks and conflicts are common.
fn record() -> impl Strategy<Value = NodeRecord> {
    (
        0..NODES.len(),
        0u64..3,
        0u64..3,
        any::<bool>(),
        0u8..3,
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(n, inc, ver, up, prio, tomb, odd)| {
            let id = NodeId::new(NODES[n]);
            if tomb {
                return NodeRecord::tombstone(id, inc);
            }
            NodeRecord {
                version: ver,
                admin: if up { Admin::Up } else { Admin::Down },
                priority: prio,
                // Never written (a tombstone has version u64::MAX), but it
                // must merge like everything else.
                forgotten: odd,
                ..NodeRecord::new(id, inc)
            }
        })
}

fn replica() -> impl Strategy<Value = Replica> {
    prop::collection::vec(record(), 0..10).prop_map(|rs| {
        let mut r = Replica::default();
        for x in rs {
            r.apply(Item::Node(x));
        }
        r
    })
}

fn merged(a: &Replica, b: &Replica) -> Replica {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #[test]
    fn merge_is_commutative(a in replica(), b in replica()) {
        let (ab, ba) = (merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(ab.digest(), ba.digest());
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn merge_is_associative(a in replica(), b in replica(), c in replica()) {
        let (l, r) = (merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(l.digest(), r.digest());
        prop_assert_eq!(l, r);
    }

    #[test]
    fn merge_is_idempotent(a in replica(), b in replica()) {
        let mut same = a.clone();
        prop_assert!(!same.merge(&a));
        prop_assert_eq!(&same, &a);
        let once = merged(&a, &b);
        let mut twice = once.clone();
        prop_assert!(!twice.merge(&b));
        prop_assert_eq!(twice, once);
    }

    /// Digests tell replicas apart that differ only in the flag.
    #[test]
    fn the_digest_sees_the_flag(r in record()) {
        let mut a = Replica::default();
        a.apply(Item::Node(r.clone()));
        let mut b = Replica::default();
        b.apply(Item::Node(NodeRecord { forgotten: !r.forgotten, ..r }));
        prop_assert_ne!(a.digest(), b.digest());
    }

    /// A tombstone wins over every record of its incarnation, whatever the
    /// order, and a higher incarnation wins over the tombstone.
    #[test]
    fn a_tombstone_wins_over_its_incarnation_only(r in record(), first in any::<bool>()) {
        let tomb = NodeRecord::tombstone(r.id.clone(), r.incarnation);
        let mut x = Replica::default();
        let items = [Item::Node(r.clone()), Item::Node(tomb.clone())];
        for i in if first { items.iter().rev().collect::<Vec<_>>() } else { items.iter().collect() } {
            x.apply(i.clone());
        }
        prop_assert_eq!(&x.nodes[&r.id], &tomb);
        prop_assert_eq!(x.counted_nodes().count(), 0);
        let back = NodeRecord::new(r.id.clone(), r.incarnation + 1);
        prop_assert!(x.apply(Item::Node(back.clone())));
        prop_assert_eq!(&x.nodes[&r.id], &back);
        prop_assert_eq!(x.counted_nodes().count(), 1);
        // A late tombstone of the old incarnation changes nothing.
        prop_assert!(!x.is_news(&Item::Node(tomb.clone())));
        prop_assert!(!x.apply(Item::Node(tomb)));
    }
}

#[test]
fn tombstones_written_by_different_nodes_are_the_same_item() {
    let id = NodeId::new("ws-3");
    assert_eq!(
        NodeRecord::tombstone(id.clone(), 7),
        NodeRecord::tombstone(id.clone(), 7)
    );
    let t = NodeRecord::tombstone(id, 7);
    assert!(t.is_forgotten() && t.version == u64::MAX && t.admin == Admin::Down);
}

#[test]
fn a_forgotten_node_is_never_eligible() {
    let up = |id: &str, forgotten: bool| NodeRecord {
        admin: Admin::Up,
        priority: if forgotten { 9 } else { 0 },
        forgotten,
        ..NodeRecord::new(NodeId::new(id), 1)
    };
    let (a, z) = (up("a", false), up("z", true));
    let views: Vec<NodeView<'_>> = [&a, &z]
        .into_iter()
        .map(|r| NodeView {
            record: r,
            alive: true,
            mature: true,
            suspected: false,
        })
        .collect();
    let el = eligibility(&views, &Allocation::default());
    assert_eq!(el.eligible, vec![NodeId::new("a")]);
    assert_eq!(
        el.why_not,
        BTreeMap::from([(NodeId::new("z"), vec!["forgotten".to_string()])])
    );
}
