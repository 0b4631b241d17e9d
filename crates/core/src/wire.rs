//! The wire codec: what travels inside a sealed datagram.
//!
//! A datagram's plaintext is one [`Packet`], encoded with postcard (compact,
//! deterministic). Variants are only ever appended, never reordered: the
//! variant index is the packet type on the wire. Decoding is total: any byte
//! string either decodes or yields a [`WireError`], never a panic.
//!
//! Large state (10,000 addresses do not fit in a datagram) travels as many
//! packets: [`pack_replica`] splits a replica into [`Packet::Items`] (each
//! item independently mergeable, so a lost packet only delays convergence)
//! and [`Packet::TablePart`]s, which a [`TableAssembler`] puts back together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::leader::TableMeta;
use crate::replica::{Item, Replica, ReplicaDigest, Table};
use crate::{AddrSpec, Allocation, NodeId, Placement};

/// The largest plaintext a packet may have: the sealed datagram limit (1400
/// bytes) minus the seal's overhead (67 bytes).
pub const MAX_PACKET: usize = 1333;

/// Most parts a table may be split into (bounds the assembler's memory).
pub const MAX_TABLE_PARTS: u32 = 4096;

/// One datagram's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Packet {
    /// A SWIM message, opaque to us (foca's own encoding).
    Swim(Vec<u8>),
    /// Anti-entropy: a summary of the sender's state. The receiver pushes
    /// the parts that differ and, unless `answer`, replies with its own
    /// digest so that the sender pushes too.
    Digest {
        digest: ReplicaDigest,
        table: Option<TableMeta>,
        answer: bool,
    },
    /// Some node records and address entries.
    Items(Vec<Item>),
    /// One part of a published table.
    TablePart {
        meta: TableMeta,
        part: u32,
        parts: u32,
        placements: Vec<(AddrSpec, Placement)>,
    },
    /// A holder to its standbys, every heartbeat interval: "I am alive".
    Heartbeat { from: NodeId, incarnation: u64 },
    /// A standby to everyone: "`holder` was unheard, so I (`by`) took the
    /// addresses it held with me as standby in table `table`."
    Takeover {
        holder: NodeId,
        by: NodeId,
        table: TableMeta,
    },
    /// A holder to every member: "I installed and announced these
    /// addresses; whoever still serves them may let them go."
    HandoffDone { by: NodeId, specs: Vec<AddrSpec> },
}

/// Why a packet could not be decoded. The packet is dropped and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet of {0} bytes exceeds the {MAX_PACKET}-byte limit")]
    TooLarge(usize),
}

pub fn encode(p: &Packet) -> Vec<u8> {
    postcard::to_allocvec(p).expect("packets always serialize")
}

pub fn decode(bytes: &[u8]) -> Result<Packet, WireError> {
    if bytes.len() > MAX_PACKET {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (p, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(p)
}

fn encoded_len<T: Serialize>(v: &T) -> usize {
    postcard::experimental::serialized_size(v).expect("serializes")
}

/// Room for a packet's framing: variant tag and a sequence length varint
/// (and, for table parts, the part numbers) with margin.
const FRAME: usize = 16;

/// Splits a replica into packets of at most `max` bytes: node records and
/// addresses first (in [`Packet::Items`]), then the table in parts.
pub fn pack_replica(replica: &Replica, max: usize) -> Vec<Packet> {
    let mut out = Vec::new();
    let items = replica.items().filter(|i| !matches!(i, Item::Table(_)));
    for batch in pack(items, max.saturating_sub(FRAME)) {
        out.push(Packet::Items(batch));
    }
    if let Some(t) = &replica.table {
        out.extend(pack_table(t, max));
    }
    out
}

/// Splits a table into [`Packet::TablePart`]s of at most `max` bytes.
pub fn pack_table(table: &Table, max: usize) -> Vec<Packet> {
    let budget = max.saturating_sub(FRAME + encoded_len(&table.meta));
    let batches = pack(
        table
            .allocation
            .placements
            .iter()
            .map(|(s, p)| (s.clone(), p.clone())),
        budget,
    );
    let parts = batches.len().max(1) as u32;
    let mut out: Vec<Packet> = batches
        .into_iter()
        .enumerate()
        .map(|(i, placements)| Packet::TablePart {
            meta: table.meta.clone(),
            part: i as u32,
            parts,
            placements,
        })
        .collect();
    if out.is_empty() {
        out.push(Packet::TablePart {
            meta: table.meta.clone(),
            part: 0,
            parts: 1,
            placements: Vec::new(),
        });
    }
    out
}

/// Greedy packing by encoded size. An element larger than the budget on its
/// own still travels, alone (the seal refuses it if it truly cannot fit,
/// which the caller counts).
fn pack<T: Serialize>(elems: impl Iterator<Item = T>, budget: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for e in elems {
        let n = encoded_len(&e);
        if !cur.is_empty() && size + n > budget {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += n;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Puts table parts back together. Keeps at most one table in progress: the
/// most preferred one seen; parts of others are ignored.
#[derive(Debug, Default)]
pub struct TableAssembler {
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    meta: TableMeta,
    parts: u32,
    got: BTreeMap<u32, Vec<(AddrSpec, Placement)>>,
}

impl TableAssembler {
    /// Takes one part; returns the whole table when this part completes it.
    /// Inconsistent parts (part ≥ parts, too many parts, a different part
    /// count for the same table) are ignored.
    pub fn add(
        &mut self,
        meta: TableMeta,
        part: u32,
        parts: u32,
        placements: Vec<(AddrSpec, Placement)>,
    ) -> Option<Table> {
        if parts == 0 || parts > MAX_TABLE_PARTS || part >= parts {
            return None;
        }
        if parts == 1 {
            return Some(Table {
                meta,
                allocation: Allocation {
                    placements: placements.into_iter().collect(),
                },
            });
        }
        let replace = match &self.pending {
            None => true,
            Some(p) if p.meta == meta => false,
            Some(p) => crate::leader::prefer(&meta, &p.meta).is_gt(),
        };
        if replace {
            self.pending = Some(Pending {
                meta: meta.clone(),
                parts,
                got: BTreeMap::new(),
            });
        }
        let p = self.pending.as_mut()?;
        if p.meta != meta || p.parts != parts {
            return None;
        }
        p.got.insert(part, placements);
        if p.got.len() as u32 == p.parts {
            let p = self.pending.take()?;
            let placements = p.got.into_values().flatten().collect();
            return Some(Table {
                meta: p.meta,
                allocation: Allocation { placements },
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::Term;
    use crate::replica::NodeRecord;
    use crate::state::{Hlc, Stamp};
    use proptest::prelude::*;

    fn big_replica(n: u32) -> Replica {
        let mut r = Replica::default();
        let nodes: Vec<NodeId> = (0..5).map(|i| NodeId::new(format!("node-{i}"))).collect();
        for (i, id) in nodes.iter().enumerate() {
            r.apply(Item::Node(NodeRecord::new(id.clone(), i as u64)));
        }
        let mut addrs = Vec::new();
        for i in 0..n {
            let ip =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i);
            let spec: AddrSpec = format!("eth0:{ip}/15").parse().unwrap();
            let stamp = Stamp::new(
                Hlc {
                    wall_ms: 1000 + u64::from(i),
                    logical: 0,
                },
                nodes[0].clone(),
            );
            r.addresses.add(spec.clone(), stamp.clone()).unwrap();
            addrs.push((stamp, spec));
        }
        let allocation = crate::allocate(&addrs, &nodes, &Allocation::default());
        r.table = Some(Table {
            meta: TableMeta {
                term: Term(1),
                leader: nodes[0].clone(),
                version: 3,
            },
            allocation,
        });
        r
    }

    #[test]
    fn ten_thousand_addresses_round_trip_through_packets() {
        let r = big_replica(10_000);
        let packets = pack_replica(&r, MAX_PACKET);
        let mut back = Replica::default();
        let mut asm = TableAssembler::default();
        // Deliver in reverse order: parts and items are order-independent.
        for p in packets.iter().rev() {
            let bytes = encode(p);
            assert!(bytes.len() <= MAX_PACKET, "{} bytes", bytes.len());
            match decode(&bytes).unwrap() {
                Packet::Items(items) => items.into_iter().for_each(|i| {
                    back.apply(i);
                }),
                Packet::TablePart {
                    meta,
                    part,
                    parts,
                    placements,
                } => {
                    if let Some(t) = asm.add(meta, part, parts, placements) {
                        back.apply(Item::Table(t));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(back, r);
        assert!(packets.len() > 100, "really split: {}", packets.len());
    }

    #[test]
    fn a_missing_part_leaves_the_table_incomplete() {
        let r = big_replica(500);
        let parts = pack_table(r.table.as_ref().unwrap(), MAX_PACKET);
        assert!(parts.len() > 2);
        let mut asm = TableAssembler::default();
        for p in parts.iter().skip(1) {
            if let Packet::TablePart {
                meta,
                part,
                parts,
                placements,
            } = p.clone()
            {
                assert!(asm.add(meta, part, parts, placements).is_none());
            }
        }
    }

    #[test]
    fn an_empty_table_is_one_part() {
        let t = Table {
            meta: TableMeta {
                term: Term(1),
                leader: NodeId::new("a"),
                version: 0,
            },
            allocation: Allocation::default(),
        };
        let parts = pack_table(&t, MAX_PACKET);
        assert_eq!(parts.len(), 1);
        let Packet::TablePart {
            meta,
            part,
            parts,
            placements,
        } = parts[0].clone()
        else {
            panic!()
        };
        assert_eq!(
            TableAssembler::default().add(meta, part, parts, placements),
            Some(t)
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn trailing_garbage_is_rejected(extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut b = encode(&Packet::Items(Vec::new()));
            b.extend(extra);
            prop_assert!(decode(&b).is_err());
        }
    }
}
