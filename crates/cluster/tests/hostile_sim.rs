//! Hostile input to a running cluster, in deterministic simulation: what
//! reaches `Engine::handle_datagram` after the seal (any bytes at all, and
//! well-formed packets with extreme values from an address that is no
//! member) never panics, and bytes that are no packet move nothing.

use std::net::SocketAddr;
use std::time::Duration;

use fechter_cluster::engine::Timings;
use fechter_cluster::sim::Sim;
use fechter_core::alloc::Placement;
use fechter_core::leader::{TableMeta, Term};
use fechter_core::wire::{Packet, encode};
use fechter_core::{AddrSpec, NodeId};
use proptest::prelude::*;

const NODES: [&str; 3] = ["n0", "n1", "n2"];

/// An address that is no member's.
fn stranger() -> SocketAddr {
    "127.0.0.9:4000".parse().unwrap()
}

fn serving() -> Sim {
    Sim::serving(11, 3, 3, Timings::default())
}

fn name() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        prop::sample::select(NODES.to_vec()).prop_map(NodeId::new),
        "[a-z0-9]{1,12}".prop_map(|s| NodeId::new(&s)),
    ]
}

fn meta() -> impl Strategy<Value = TableMeta> {
    (any::<u64>(), name(), any::<u64>()).prop_map(|(t, leader, version)| TableMeta {
        term: Term(t),
        leader,
        version,
    })
}

fn spec() -> impl Strategy<Value = AddrSpec> {
    (0u8..=255).prop_map(|i| format!("eth0:198.18.1.{i}/24").parse().unwrap())
}

/// Well-formed packets with extreme values: terms and incarnations near
/// `u64::MAX`, thousands of table parts, unknown nodes.
fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Packet::Swim),
        (name(), any::<u64>())
            .prop_map(|(from, incarnation)| Packet::Heartbeat { from, incarnation }),
        (
            meta(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec((spec(), name()), 0..20)
        )
            .prop_map(|(meta, part, parts, v)| Packet::TablePart {
                meta,
                part,
                parts,
                placements: v
                    .into_iter()
                    .map(|(s, h)| (
                        s,
                        Placement {
                            holder: h,
                            standby: None,
                            handoff_from: None,
                        }
                    ))
                    .collect(),
            }),
        (name(), prop::collection::vec(spec(), 0..50))
            .prop_map(|(by, specs)| Packet::HandoffDone { by, specs }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any bytes: dropped (counted as malformed), nothing moves.
    #[test]
    fn bytes_that_are_no_packet_move_nothing(
        junk in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 1..40),
    ) {
        let mut sim = serving();
        let before = sim.holders();
        let now = sim.now();
        for (i, bytes) in junk.iter().enumerate() {
            let to = NODES[i % NODES.len()];
            sim.engine_mut(to).handle_datagram(now, stranger(), bytes);
        }
        sim.run_for(Duration::from_secs(2));
        prop_assert_eq!(sim.holders(), before);
        prop_assert!(sim.duplicates().is_empty());
    }

    /// Well-formed packets with extreme values from a stranger: no panic,
    /// and the cluster goes on (every address on exactly one machine).
    #[test]
    fn extreme_packets_never_panic(packets in prop::collection::vec(packet(), 1..30)) {
        let mut sim = serving();
        let now = sim.now();
        for (i, p) in packets.iter().enumerate() {
            let to = NODES[i % NODES.len()];
            sim.engine_mut(to).handle_datagram(now, stranger(), &encode(p));
        }
        sim.run_for(Duration::from_secs(3));
        prop_assert!(sim.duplicates().is_empty(), "{:?}", sim.duplicates());
    }
}

/// A node id with a newline or an escape sequence is refused as it is
/// decoded (counted as malformed): it never reaches a log, a hook or status.
#[test]
fn node_ids_with_control_characters_are_dropped_as_malformed() {
    let mut sim = serving();
    let now = sim.now();
    let before = sim.engine("n0").drops().malformed;
    for from in ["evil\nFECHTER_REASON=x", "\u{1b}[2J", "a b"] {
        let p = Packet::Heartbeat {
            from: NodeId::new(from),
            incarnation: 1,
        };
        sim.engine_mut("n0")
            .handle_datagram(now, stranger(), &encode(&p));
    }
    assert_eq!(sim.engine("n0").drops().malformed, before + 3);
}

/// Heartbeats with a node's own id from another address (a second machine
/// configured with the same node id) are reported, at most every
/// `DUPLICATE_REPORT_EVERY`, and change nothing.
#[test]
fn a_second_machine_with_this_nodes_id_is_reported_and_ignored() {
    use fechter_cluster::engine::{DUPLICATE_REPORT_EVERY, Event};
    let mut sim = serving();
    let before = sim.holders();
    let t0 = sim.now - sim.start;
    let imposter: SocketAddr = "127.0.0.7:4573".parse().unwrap();
    let hb = encode(&Packet::Heartbeat {
        from: NodeId::new("n0"),
        incarnation: u64::MAX,
    });
    // Every tick for longer than two report intervals.
    let ticks = (2 * DUPLICATE_REPORT_EVERY.as_millis() / 15 + 10) as usize;
    for _ in 0..ticks {
        let now = sim.now();
        sim.engine_mut("n0").handle_datagram(now, imposter, &hb);
        sim.run_for(Duration::from_millis(15));
    }
    let reports: Vec<_> = sim
        .log
        .iter()
        .filter(|(t, n, e)| {
            *t >= t0 && n.as_str() == "n0" && *e == Event::DuplicateId { addr: imposter }
        })
        .collect();
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert_eq!(sim.holders(), before);
    assert!(sim.engine("n0").standing() == fechter_core::claim::Standing::Quorate);
}
