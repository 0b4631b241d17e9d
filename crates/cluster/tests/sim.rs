//! Deterministic simulation of the cluster protocol (seeded; every run of a
//! seed is identical): joining, failure detection, partitions, restarts and
//! state convergence.

use std::time::Duration;

use fechter_cluster::engine::{Event, Timings};
use fechter_cluster::sim::{Sim, addr_of};
use fechter_core::NodeId;
use fechter_core::replica::Admin;

const SEEDS: [u64; 3] = [1, 42, 7777];

fn spec(i: u32) -> fechter_core::AddrSpec {
    let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i);
    format!("eth0:{ip}/15").parse().unwrap()
}

#[test]
fn clusters_of_3_5_and_10_join_and_converge() {
    for n in [3, 5, 10] {
        for seed in SEEDS {
            let mut sim = Sim::cluster(seed, n, Timings::default());
            let took = sim.run_until_cond(Duration::from_secs(10), |s| {
                s.converged_membership() && s.converged_state()
            });
            assert!(took.is_some(), "n={n} seed={seed}: did not converge");
            // Everyone knows everyone's record.
            for i in 0..n {
                assert_eq!(sim.engine(&format!("n{i}")).replica().nodes.len(), n);
            }
        }
    }
}

#[test]
fn a_crash_is_detected_by_all() {
    for seed in SEEDS {
        let mut sim = Sim::cluster(seed, 5, Timings::default());
        sim.run_until_cond(Duration::from_secs(10), Sim::converged_membership)
            .expect("joined");
        sim.run_for(Duration::from_secs(1));
        sim.crash("n3");
        let took = sim
            .run_until_cond(Duration::from_secs(10), |s| {
                ["n0", "n1", "n2", "n4"]
                    .iter()
                    .all(|n| !s.engine(n).members().contains_key(&NodeId::new("n3")))
            })
            .expect("crash detected");
        assert!(took < Duration::from_secs(3), "seed {seed}: took {took:?}");
        // No false deaths among the survivors.
        assert!(sim.converged_membership(), "seed {seed}");
    }
}

#[test]
fn a_partition_is_seen_by_both_sides_and_heals_with_merged_state() {
    for seed in SEEDS {
        let mut sim = Sim::cluster(seed, 5, Timings::default());
        sim.run_until_cond(Duration::from_secs(10), |s| {
            s.converged_membership() && s.converged_state()
        })
        .expect("joined");
        let (a, b) = (["n0", "n1", "n2"], ["n3", "n4"]);
        sim.partition(&a, &b);
        sim.run_until_cond(Duration::from_secs(10), |s| {
            a.iter().all(|x| s.engine(x).members().len() == 2)
                && b.iter().all(|x| s.engine(x).members().len() == 1)
        })
        .expect("both sides see the split");
        // Each side changes state while apart.
        let now = sim.now();
        sim.engine_mut("n1").add_address(now, spec(1)).unwrap();
        sim.engine_mut("n4").add_address(now, spec(2)).unwrap();
        sim.engine_mut("n4")
            .update_own(now, |r| r.admin = Admin::Up);
        sim.run_for(Duration::from_secs(2));
        assert!(!sim.converged_state());
        sim.heal();
        sim.run_until_cond(Duration::from_secs(30), |s| {
            s.converged_membership() && s.converged_state()
        })
        .unwrap_or_else(|| panic!("seed {seed}: no convergence after heal"));
        let r = sim.engine("n0").replica().clone();
        assert_eq!(r.addresses.assignable().len(), 2);
        assert_eq!(r.nodes[&NodeId::new("n4")].admin, Admin::Up);
    }
}

#[test]
fn a_restarted_node_rejoins_and_receives_the_full_state() {
    for seed in SEEDS {
        let mut sim = Sim::cluster(seed, 3, Timings::default());
        sim.run_until_cond(Duration::from_secs(10), Sim::converged_membership)
            .expect("joined");
        let now = sim.now();
        for i in 0..20 {
            sim.engine_mut("n0").add_address(now, spec(i)).unwrap();
        }
        sim.run_until_cond(Duration::from_secs(10), Sim::converged_state)
            .expect("spread");
        sim.crash("n2");
        sim.run_for(Duration::from_secs(2));
        // Comes back with an empty disk (worst case) and a new incarnation.
        sim.start("n2", addr_of(2), vec![addr_of(0)]);
        sim.run_until_cond(Duration::from_secs(10), |s| {
            s.converged_membership() && s.converged_state()
        })
        .unwrap_or_else(|| panic!("seed {seed}: restarted node did not converge"));
        let r = sim.engine("n2").replica().clone();
        assert_eq!(r.addresses.assignable().len(), 20);
        assert_eq!(r.nodes[&NodeId::new("n2")].incarnation, 2);
        // Everyone sees the new incarnation.
        let seen = sim.engine("n0").members()[&NodeId::new("n2")].incarnation;
        assert_eq!(seen, 2);
    }
}

#[test]
fn concurrent_add_and_remove_on_different_nodes_converge() {
    for seed in SEEDS {
        let mut sim = Sim::cluster(seed, 3, Timings::default());
        sim.run_until_cond(Duration::from_secs(10), Sim::converged_membership)
            .expect("joined");
        let now = sim.now();
        sim.engine_mut("n0").add_address(now, spec(5)).unwrap();
        sim.run_until_cond(Duration::from_secs(5), Sim::converged_state)
            .expect("spread");
        // At the same instant: n1 removes it, n2 re-adds it under another spec... which
        // it cannot (already present), and n2 adds another.
        let now = sim.now();
        sim.engine_mut("n1")
            .remove_address(now, spec(5).ip)
            .unwrap();
        assert!(sim.engine_mut("n2").add_address(now, spec(5)).is_err());
        sim.engine_mut("n2").add_address(now, spec(6)).unwrap();
        sim.engine_mut("n0")
            .remove_address(now, spec(5).ip)
            .unwrap();
        sim.run_until_cond(Duration::from_secs(10), Sim::converged_state)
            .unwrap_or_else(|| panic!("seed {seed}: diverged"));
        let r = sim.engine("n2").replica().clone();
        let live: Vec<_> = r
            .addresses
            .assignable()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(live, vec![spec(6)]);
    }
}

#[test]
fn ten_thousand_addresses_sync_to_a_late_joiner() {
    let mut sim = Sim::cluster(3, 2, Timings::default());
    sim.run_until_cond(Duration::from_secs(10), Sim::converged_membership)
        .expect("joined");
    let now = sim.now();
    for i in 0..10_000 {
        sim.engine_mut("n0").add_address(now, spec(i)).unwrap();
    }
    sim.run_until_cond(Duration::from_secs(30), Sim::converged_state)
        .expect("n1 synced");
    sim.start("late", addr_of(9), vec![addr_of(1)]);
    let took = sim
        .run_until_cond(Duration::from_secs(30), |s| {
            s.converged_membership() && s.converged_state()
        })
        .expect("late joiner synced");
    assert_eq!(sim.engine("late").replica().addresses.len(), 10_000);
    eprintln!("10,000 addresses reached a late joiner in {took:?} (virtual)");
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut sim = Sim::cluster(seed, 4, Timings::default());
        sim.run_for(Duration::from_secs(2));
        sim.crash("n1");
        sim.run_for(Duration::from_secs(2));
        sim.log
            .iter()
            .filter(|(_, _, e)| !matches!(e, Event::StateChanged))
            .map(|(t, n, e)| format!("{t:?} {n} {e:?}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(99), run(99));
}
