//! The replicated cluster state: what every node eventually agrees on.
//!
//! Three parts, each with its own merge rule, so that any item can be applied
//! in any order, any number of times (merge is commutative, associative and
//! idempotent, which anti-entropy relies on):
//!
//! | part | written by | merge rule |
//! |---|---|---|
//! | [`NodeRecord`] per node | that node (and any node's [`NodeRecord::tombstone`]) | higher `(incarnation, version)` wins |
//! | [`AddressList`] | any node (CLI) | last writer wins by HLC [`crate::state::Stamp`] |
//! | [`Table`] | the leader | [`crate::leader::prefer`]: higher term, then lower leader tie key, then higher version |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::leader::{TableMeta, prefer};
use crate::node::fnv1a64;
use crate::state::{AddressEntry, AddressList};
use crate::{Allocation, NodeId};

/// Operator's admin status of a node (seed: `fechter up` / `fechter down`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Admin {
    /// May receive addresses.
    Up,
    /// Holds nothing. A node starts down.
    #[default]
    Down,
}

/// One node's self-description, written only by that node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    /// Changes (grows) on every start of the agent.
    pub incarnation: u64,
    /// Grows on every change within an incarnation.
    pub version: u64,
    pub admin: Admin,
    /// Why this node does not want addresses (empty: healthy). Examples:
    /// `gateway`, `check web`, `link eth0`.
    pub unhealthy: Vec<String>,
    /// Higher is preferred when a new leader is chosen.
    pub priority: u8,
    /// Shutting down: hand my addresses off (not persisted; a restarted
    /// agent is not leaving).
    #[serde(default)]
    pub leaving: bool,
    /// Interfaces named by managed addresses that this node cannot use
    /// (missing, down, no carrier), with the reason: it is not eligible for
    /// the addresses on them.
    #[serde(default)]
    pub iface_trouble: BTreeMap<String, String>,
    /// Forgotten by the operator (`fechter forget`): the machine is gone for
    /// good. Set only in a [`NodeRecord::tombstone`], which any node may
    /// write; a forgotten node counts for nothing (no vote, never eligible,
    /// never leads) until it starts again with a higher incarnation.
    #[serde(default)]
    pub forgotten: bool,
}

impl NodeRecord {
    /// A fresh record: admin down, healthy, version 0.
    pub fn new(id: NodeId, incarnation: u64) -> Self {
        NodeRecord {
            id,
            incarnation,
            version: 0,
            admin: Admin::Down,
            unhealthy: Vec::new(),
            priority: 0,
            leaving: false,
            iface_trouble: BTreeMap::new(),
            forgotten: false,
        }
    }

    /// The record that forgets node `id` in `incarnation`: version
    /// `u64::MAX`, so it wins over everything that incarnation wrote, and a
    /// fixed content (admin down, healthy, priority 0), so that tombstones
    /// written by different nodes are the same item. A node that starts
    /// again has a higher incarnation and replaces it.
    pub fn tombstone(id: NodeId, incarnation: u64) -> Self {
        NodeRecord {
            version: u64::MAX,
            forgotten: true,
            ..NodeRecord::new(id, incarnation)
        }
    }

    /// Whether the operator forgot this node (see [`NodeRecord::tombstone`]):
    /// it counts for nothing.
    pub fn is_forgotten(&self) -> bool {
        self.forgotten
    }

    /// The merge order: incarnation, then version, then (only for two
    /// different records claiming the same version, which a correct node
    /// never writes) a tombstone first, then the record's content, so that
    /// every replica still picks the same one.
    #[allow(clippy::type_complexity)]
    fn rank(
        &self,
    ) -> (
        u64,
        u64,
        bool,
        Admin,
        &[String],
        u8,
        bool,
        &BTreeMap<String, String>,
    ) {
        (
            self.incarnation,
            self.version,
            self.forgotten,
            self.admin,
            &self.unhealthy,
            self.priority,
            self.leaving,
            &self.iface_trouble,
        )
    }
}

/// A published allocation: the leader's decision, with its term and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub meta: TableMeta,
    pub allocation: Allocation,
}

/// One mergeable piece of state, as carried by broadcasts and anti-entropy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    Node(NodeRecord),
    Address(AddressEntry),
    Table(Table),
}

/// The whole replicated state of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    pub addresses: AddressList,
    pub table: Option<Table>,
}

/// A cheap summary of a [`Replica`]: equal digests mean (with overwhelming
/// probability) equal states, so anti-entropy can skip the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaDigest {
    pub nodes: u64,
    pub addresses: u64,
    pub table: u64,
}

impl Replica {
    /// Merges one item; returns whether anything changed. Stale or equal
    /// items change nothing.
    pub fn apply(&mut self, item: Item) -> bool {
        match item {
            Item::Node(rec) => match self.nodes.get(&rec.id) {
                Some(cur) if cur.rank() >= rec.rank() => false,
                _ => {
                    self.nodes.insert(rec.id.clone(), rec);
                    true
                }
            },
            Item::Address(entry) => self.addresses.apply(entry),
            Item::Table(t) => match &self.table {
                Some(cur) if prefer(&t.meta, &cur.meta).is_le() => false,
                _ => {
                    self.table = Some(t);
                    true
                }
            },
        }
    }

    /// Whether `item` would change this replica (without applying it).
    pub fn is_news(&self, item: &Item) -> bool {
        match item {
            Item::Node(rec) => self
                .nodes
                .get(&rec.id)
                .is_none_or(|c| c.rank() < rec.rank()),
            Item::Address(e) => self.addresses.would_change(e),
            Item::Table(t) => self
                .table
                .as_ref()
                .is_none_or(|c| prefer(&t.meta, &c.meta).is_gt()),
        }
    }

    /// The node records that count (quorum, eligibility, leadership,
    /// status): every record but the forgotten ones.
    pub fn counted_nodes(&self) -> impl Iterator<Item = &NodeRecord> + '_ {
        self.nodes.values().filter(|r| !r.forgotten)
    }

    /// Merges a whole replica; returns whether anything changed.
    pub fn merge(&mut self, other: &Replica) -> bool {
        let mut changed = false;
        for item in other.items() {
            changed |= self.apply(item);
        }
        changed
    }

    /// Every item, for a full-state transfer: node records, then addresses,
    /// then the table.
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        self.nodes
            .values()
            .cloned()
            .map(Item::Node)
            .chain(self.addresses.iter().cloned().map(Item::Address))
            .chain(self.table.iter().cloned().map(Item::Table))
    }

    pub fn digest(&self) -> ReplicaDigest {
        let mut nodes = Vec::new();
        for r in self.nodes.values() {
            nodes.extend_from_slice(r.id.as_str().as_bytes());
            nodes.push(0);
            nodes.extend_from_slice(&r.incarnation.to_be_bytes());
            nodes.extend_from_slice(&r.version.to_be_bytes());
            nodes.push(r.admin as u8);
            nodes.push(r.priority);
            nodes.push(u8::from(r.leaving));
            nodes.push(u8::from(r.forgotten));
            for (i, why) in &r.iface_trouble {
                nodes.extend_from_slice(i.as_bytes());
                nodes.push(0);
                nodes.extend_from_slice(why.as_bytes());
                nodes.push(0);
            }
            for u in &r.unhealthy {
                nodes.extend_from_slice(u.as_bytes());
                nodes.push(0);
            }
        }
        let a = self.addresses.digest();
        let addresses = fnv1a64(&[a.hash.to_be_bytes(), a.entries.to_be_bytes()].concat());
        let table = self.table.as_ref().map_or(0, |t| {
            let mut b = t.meta.term.0.to_be_bytes().to_vec();
            b.extend_from_slice(t.meta.leader.as_str().as_bytes());
            b.push(0);
            b.extend_from_slice(&t.meta.version.to_be_bytes());
            fnv1a64(&b)
        });
        ReplicaDigest {
            nodes: fnv1a64(&nodes),
            addresses,
            table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::Term;
    use crate::state::{Hlc, Stamp};
    use proptest::prelude::*;

    fn rec(id: &str, inc: u64, ver: u64, up: bool) -> Item {
        Item::Node(NodeRecord {
            version: ver,
            admin: if up { Admin::Up } else { Admin::Down },
            ..NodeRecord::new(NodeId::new(id), inc)
        })
    }

    fn table(term: u64, leader: &str, ver: u64) -> Item {
        Item::Table(Table {
            meta: TableMeta {
                term: Term(term),
                leader: NodeId::new(leader),
                version: ver,
            },
            allocation: Allocation::default(),
        })
    }

    fn addr(i: u8, t: u64, origin: &str, remove: bool) -> Item {
        let spec: crate::AddrSpec = format!("eth0:198.18.0.{i}/24").parse().unwrap();
        let stamp = Stamp::new(
            Hlc {
                wall_ms: t,
                logical: 0,
            },
            NodeId::new(origin),
        );
        let mut l = AddressList::new();
        l.add(spec.clone(), stamp.clone()).unwrap();
        if remove {
            let later = Stamp::new(
                Hlc {
                    wall_ms: t + 1,
                    logical: 0,
                },
                NodeId::new(origin),
            );
            l.remove(spec.ip, later).unwrap();
        }
        Item::Address(l.iter().next().unwrap().clone())
    }

    fn item() -> impl Strategy<Value = Item> {
        prop_oneof![
            (0..3u8, 0..3u64, 0..3u64, any::<bool>()).prop_map(|(n, i, v, up)| rec(
                &format!("n{n}"),
                i,
                v,
                up
            )),
            // Tombstones (`fechter forget`), and forgotten records at an
            // ordinary version (never written, but they must merge too).
            (0..3u8, 0..3u64, 0..3u64, any::<bool>()).prop_map(|(n, i, v, tomb)| {
                let id = NodeId::new(format!("n{n}"));
                Item::Node(if tomb {
                    NodeRecord::tombstone(id, i)
                } else {
                    NodeRecord {
                        version: v,
                        forgotten: true,
                        ..NodeRecord::new(id, i)
                    }
                })
            }),
            (0..4u8, 0..4u64, 0..2u8, any::<bool>()).prop_map(|(i, t, o, r)| addr(
                i,
                t * 10,
                &format!("n{o}"),
                r
            )),
            (0..3u64, 0..3u8, 0..3u64).prop_map(|(t, l, v)| table(t, &format!("n{l}"), v)),
        ]
    }

    proptest! {
        #[test]
        fn any_order_any_repetition_converges(items in proptest::collection::vec(item(), 0..24), seed in any::<u64>()) {
            let mut a = Replica::default();
            for i in &items { a.apply(i.clone()); }
            let mut b = Replica::default();
            let mut shuffled = items.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for i in shuffled.iter().chain(items.iter().take(3)) { b.apply(i.clone()); }
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert_eq!(&a, &b);
        }

        #[test]
        fn is_news_predicts_apply(items in proptest::collection::vec(item(), 0..16), probe in item()) {
            let mut r = Replica::default();
            for i in items { r.apply(i); }
            let news = r.is_news(&probe);
            prop_assert_eq!(news, r.apply(probe));
        }

        #[test]
        fn merge_is_commutative(x in proptest::collection::vec(item(), 0..12), y in proptest::collection::vec(item(), 0..12)) {
            let (mut a, mut b) = (Replica::default(), Replica::default());
            for i in x { a.apply(i); }
            for i in y { b.apply(i); }
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(ab, ba);
        }
    }

    #[test]
    fn a_restarted_node_replaces_its_old_record() {
        let mut r = Replica::default();
        assert!(r.apply(rec("n1", 5, 9, true)));
        assert!(!r.apply(rec("n1", 5, 3, false)), "older version ignored");
        assert!(r.apply(rec("n1", 6, 0, false)), "new incarnation wins");
        assert_eq!(r.nodes[&NodeId::new("n1")].admin, Admin::Down);
    }

    #[test]
    fn a_stale_leaders_table_is_ignored() {
        let mut r = Replica::default();
        assert!(r.apply(table(3, "a", 0)));
        assert!(!r.apply(table(2, "b", 7)));
        assert!(r.apply(table(3, "a", 1)));
        assert_eq!(r.table.as_ref().unwrap().meta.version, 1);
    }
}
