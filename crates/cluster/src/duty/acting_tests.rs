//! Unit tests of [`super`]: the refresh of the allocation this node acts on.

use super::*;
use fechter_core::Placement;
use fechter_core::replica::Table;

/// The shortcut of `refresh_effective` (return at once when its inputs
/// are those of a call that changed nothing) never changes its answer:
/// fed the same random changes, a duty that takes the shortcut and one
/// that always walks the table end with the same allocation every step.
mod refresh_shortcut {
    use super::*;
    use fechter_core::leader::Term;
    use proptest::prelude::*;

    fn node(i: u8) -> NodeId {
        NodeId::new(format!("n{}", i % 4))
    }

    fn table(version: u64, seats: &[(u8, u8, bool)]) -> Table {
        let placements = seats
            .iter()
            .enumerate()
            .map(|(k, &(h, s, handing))| {
                let spec: AddrSpec = format!("eth0:198.18.0.{}/24", 10 + k).parse().unwrap();
                let p = Placement {
                    holder: node(h),
                    standby: (s % 4 != h % 4).then(|| node(s)),
                    handoff_from: handing.then(|| node(h + 1)),
                };
                (spec, p)
            })
            .collect();
        Table {
            meta: TableMeta {
                term: Term(1),
                leader: node(0),
                version,
            },
            allocation: Allocation { placements },
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Table(Vec<(u8, u8, bool)>),
        Alive(Vec<u8>),
        Takeover(u8, u8),
        HandoffDone(u8, u8),
        Fenced(bool),
        Wait(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            prop::collection::vec((0u8..4, 0u8..4, prop::bool::weighted(0.2)), 0..6)
                .prop_map(Step::Table),
            prop::collection::vec(0u8..4, 0..4).prop_map(Step::Alive),
            (0u8..4, 0u8..4).prop_map(|(h, s)| Step::Takeover(h, s)),
            (0u8..6, 0u8..4).prop_map(|(a, n)| Step::HandoffDone(a, n)),
            any::<bool>().prop_map(Step::Fenced),
            (0u16..1500).prop_map(Step::Wait),
        ]
    }

    proptest! {
        #[test]
        fn gives_the_same_allocation_as_the_full_walk(steps in prop::collection::vec(step(), 1..40)) {
            let me = node(0);
            let limit = Duration::from_secs(1);
            let mut now = Instant::now();
            let mut replica = Replica::default();
            let mut version = 0;
            let mut alive: BTreeSet<NodeId> = BTreeSet::new();
            let mut fenced = false;
            let (mut short, mut full) = (Duty::default(), Duty::default());
            for s in steps {
                match s {
                    Step::Table(seats) => {
                        version += 1;
                        replica.table = Some(table(version, &seats));
                    }
                    Step::Alive(nodes) => alive = nodes.into_iter().map(node).collect(),
                    Step::Takeover(h, by) => {
                        for d in [&mut short, &mut full] {
                            d.add_takeover(node(h), node(by));
                        }
                    }
                    Step::HandoffDone(a, by) => {
                        let spec: AddrSpec = format!("eth0:198.18.0.{}/24", 10 + a).parse().unwrap();
                        for d in [&mut short, &mut full] {
                            d.handoff_confirmed(spec.clone(), node(by));
                        }
                    }
                    Step::Fenced(f) => fenced = f,
                    Step::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
                }
                let a = short.refresh_effective(&replica, &me, fenced, &alive, now, limit);
                let b = full.recompute_effective(&replica, &me, fenced, &alive, now, limit);
                prop_assert_eq!(a, b);
                prop_assert_eq!(short.allocation(), full.allocation());
                prop_assert_eq!(short.takeovers(), full.takeovers());
            }
        }
    }
}
