//! Partitions with quorum (deterministic simulation, recording platform,
//! simulated segment): a node cut off from its segment releases before the
//! majority takes over, so the two sides never hold one address at once; a
//! minority whose segment is alive serves only what the wire shows nobody
//! else serves; and after the heal one holder remains with no manual action.

use std::cell::RefCell;
use std::time::Duration;

use fechter_cluster::engine::{Event, Timings};
use fechter_cluster::sim::{Sim, addr_of};
use fechter_core::claim::Standing;
use fechter_core::replica::Admin;
use fechter_core::{AddrSpec, NodeId};

fn spec(i: u32) -> AddrSpec {
    format!("eth0:198.18.0.{}/24", 10 + i).parse().unwrap()
}

fn id(s: &str) -> NodeId {
    NodeId::new(s)
}

/// A cluster of `n` up nodes holding `addrs` addresses, settled.
fn serving(seed: u64, n: usize, addrs: u32) -> Sim {
    Sim::serving(seed, n, addrs, Timings::default())
}

fn settled(s: &Sim, n: usize) -> bool {
    s.settled(n)
}

/// Runs, failing when an address is on machines of both sides of the
/// partition at once (`minority` vs the rest), or on two machines of one
/// side outside a make-before-break hand-off.
fn run_strict(
    sim: &mut Sim,
    minority: &[&str],
    limit: Duration,
    done: impl Fn(&Sim) -> bool,
) -> Option<Duration> {
    let bad = RefCell::new(None);
    let took = sim.run_until_cond(limit, |s| {
        for (a, on) in s.duplicates() {
            let small = on.iter().filter(|n| minority.contains(&n.as_str())).count();
            let both_sides = small > 0 && small < on.len();
            if both_sides || !s.is_handoff(&a, &on, Duration::from_millis(20)) {
                bad.borrow_mut()
                    .get_or_insert(format!("{a} on {on:?} at {:?}", s.now - s.start));
                return true;
            }
        }
        done(s)
    });
    if let Some(b) = bad.into_inner() {
        panic!("two holders at once: {b}");
    }
    took
}

#[test]
fn a_detached_holder_lets_go_before_the_majority_takes_over() {
    for seed in [1, 2, 3, 4, 5] {
        let mut sim = serving(seed, 3, 3);
        let victim = sim.holders()[&spec(0)][0].clone();
        let others: Vec<String> = ["n0", "n1", "n2"]
            .iter()
            .filter(|n| id(n) != victim)
            .map(|s| s.to_string())
            .collect();
        let other_refs: Vec<&str> = others.iter().map(String::as_str).collect();
        let t0 = sim.now;
        sim.partition(&[victim.as_str()], &other_refs);
        let took = run_strict(&mut sim, &[victim.as_str()], Duration::from_secs(5), |s| {
            settled(s, 3) && s.nodes[&victim].iface.is_empty()
        })
        .expect("the majority serves everything");
        // The majority side serves every address; the victim fenced itself.
        assert!(sim.engine(victim.as_str()).fenced());
        let fenced_at = sim
            .log
            .iter()
            .find(|(t, n, e)| *t >= t0 - sim.start && *n == victim && *e == Event::Fenced)
            .map(|(t, _, _)| *t)
            .unwrap();
        eprintln!(
            "seed {seed}: victim fenced {:?} after the split; majority serving after {took:?}",
            fenced_at - (t0 - sim.start)
        );
        // Hold the partition a while: still one holder each.
        run_strict(&mut sim, &[victim.as_str()], Duration::from_secs(3), |_| {
            false
        });
        // Heal: one holder per address, no manual action. (No sides any
        // more: moving addresses back is a hand-off.)
        sim.heal();
        let healed = sim.now - sim.start;
        run_strict(&mut sim, &[], Duration::from_secs(10), |s| {
            settled(s, 3) && !s.engine(victim.as_str()).fenced() && s.converged_membership()
        })
        .expect("healed");
        run_strict(&mut sim, &[], Duration::from_secs(3), |_| false);
        assert!(settled(&sim, 3));
        // Back among the majority, the returning node takes over nobody
        // the majority still hears (it heard them again a few ticks apart).
        // (As a minority on its way back it may: those stay its own.)
        let quorate = sim
            .log
            .iter()
            .find(|(t, n, e)| *t >= healed && *n == victim && *e == Event::Unfenced)
            .map(|(t, _, _)| *t)
            .expect("quorate again");
        let wrong: Vec<_> = sim
            .log
            .iter()
            .filter(|(t, n, e)| {
                *t >= quorate
                    && *n == victim
                    && matches!(e, Event::TookOver { holder, .. } if others.iter().any(|o| holder.as_str() == o))
            })
            .collect();
        assert!(wrong.is_empty(), "seed {seed}: {wrong:?}");
    }
}

/// Runs, failing when an address is on two machines that share a segment
/// outside a make-before-break hand-off (each half of a split segment may
/// have its own holder: its clients reach exactly one).
fn run_segment_strict(
    sim: &mut Sim,
    limit: Duration,
    done: impl Fn(&Sim) -> bool,
) -> Option<Duration> {
    let bad = RefCell::new(None);
    let took = sim.run_until_cond(limit, |s| {
        for (a, on) in s.duplicates_on_segment() {
            if !s.is_handoff(&a, &on, Duration::from_millis(20)) {
                bad.borrow_mut()
                    .get_or_insert(format!("{a} on {on:?} at {:?}", s.now - s.start));
                return true;
            }
        }
        done(s)
    });
    if let Some(b) = bad.into_inner() {
        panic!("two holders on one segment: {b}");
    }
    took
}

/// Each address is held once within each of the two halves.
fn each_half_serves_all(s: &Sim, halves: [&[&str]; 2], n: usize) -> bool {
    halves.iter().all(|half| {
        let mut held: Vec<&AddrSpec> = half
            .iter()
            .flat_map(|m| s.nodes[&id(m)].iface.iter())
            .collect();
        held.sort();
        let len = held.len();
        held.dedup();
        len == n && held.len() == n
    })
}

#[test]
fn a_five_node_split_serves_each_half_of_the_segment_and_heals_to_one_holder() {
    // The switch splits in two: n0..n2 keep the clients and the router,
    // n3 and n4 are alone on their half. They hear each other but no
    // majority: a minority, which serves what its half of the wire shows
    // free (everything: nobody answers there), never leads, and never puts
    // an address twice on one half.
    for seed in [7, 8] {
        let mut sim = serving(seed, 5, 10);
        sim.partition(&["n0", "n1", "n2"], &["n3", "n4"]);
        let halves: [&[&str]; 2] = [&["n0", "n1", "n2"], &["n3", "n4"]];
        run_segment_strict(&mut sim, Duration::from_secs(5), |s| {
            each_half_serves_all(s, halves, 10)
        })
        .expect("each half serves everything");
        assert_eq!(sim.engine("n3").standing(), Standing::Minority);
        assert_eq!(sim.engine("n4").standing(), Standing::Minority);
        assert_eq!(sim.engine("n0").standing(), Standing::Quorate);
        run_segment_strict(&mut sim, Duration::from_secs(3), |_| false);
        // Heal: the two holders of each address see each other on the
        // wire; the minority's yields (or, once quorate, drops what the
        // table gives to another node): one holder each, nothing to do.
        sim.heal();
        // Both halves' holders now share one segment: the conflicts are
        // there at the heal, and settled by the wire at once.
        assert!(!sim.duplicates_on_segment().is_empty());
        let repaired = sim
            .run_until_cond(Duration::from_millis(100), |s| {
                s.duplicates_on_segment()
                    .iter()
                    .all(|(a, on)| s.is_handoff(a, on, Duration::from_millis(20)))
            })
            .expect("conflicts repaired");
        eprintln!("seed {seed}: conflicts repaired {repaired:?} after the heal");
        run_segment_strict(&mut sim, Duration::from_secs(15), |s| {
            settled(s, 10) && s.converged_membership() && !s.engine("n3").fenced()
        })
        .expect("healed");
        run_segment_strict(&mut sim, Duration::from_secs(3), |_| false);
        assert!(settled(&sim, 10));
    }
}

#[test]
fn the_cluster_port_cut_off_a_holder_moves_nothing() {
    // A firewall drops the cluster's datagrams to and from the holder; its
    // segment is intact. It becomes a minority and keeps its addresses; the
    // majority's standby probes them, hears the holder answer, and leaves
    // them where they are.
    for seed in [1, 2, 3] {
        let mut sim = serving(seed, 3, 3);
        let victim = sim.holders()[&spec(0)][0].clone();
        let before = sim.holders();
        let others: Vec<&str> = ["n0", "n1", "n2"]
            .into_iter()
            .filter(|n| id(n) != victim)
            .collect();
        sim.cut_cluster(&[victim.as_str()], &others);
        if let Some(t) =
            run_segment_strict(&mut sim, Duration::from_secs(3), |s| s.holders() != before)
        {
            panic!("an address moved after {t:?}: {:?}", sim.holders());
        }
        assert_eq!(sim.engine(victim.as_str()).standing(), Standing::Minority);
        assert_eq!(sim.holders(), before);
        sim.heal();
        run_segment_strict(&mut sim, Duration::from_secs(10), |s| {
            settled(s, 3)
                && s.converged_membership()
                && s.engine(victim.as_str()).standing() == Standing::Quorate
        })
        .expect("healed");
        run_segment_strict(&mut sim, Duration::from_secs(2), |_| false);
    }
}

#[test]
fn the_last_machine_standing_serves_everything() {
    // Two of three machines die at once: the survivor hears no majority,
    // but its segment is alive (clients): it takes every address once the
    // wire shows nobody answers for it.
    for seed in [4, 5, 6] {
        let mut sim = serving(seed, 3, 3);
        let t0 = sim.now;
        sim.crash("n1");
        sim.crash("n2");
        let took = run_segment_strict(&mut sim, Duration::from_secs(3), |s| {
            s.nodes[&id("n0")].iface.len() == 3
        })
        .expect("the survivor serves everything");
        eprintln!("seed {seed}: served after {took:?}");
        assert!(sim.now - t0 < Duration::from_millis(500), "{took:?}");
        assert_eq!(sim.engine("n0").standing(), Standing::Minority);
        // The dead come back: nothing moves twice, one holder each.
        sim.start("n1", addr_of(1), vec![addr_of(0)]);
        sim.start("n2", addr_of(2), vec![addr_of(0)]);
        run_segment_strict(&mut sim, Duration::from_secs(10), |s| {
            settled(s, 3)
                && s.converged_membership()
                && s.engine("n0").standing() == Standing::Quorate
        })
        .expect("back to a majority");
    }
}

#[test]
fn without_any_sign_of_life_a_lone_survivor_holds_nothing() {
    // No client, no router, nothing on the wire: a node alone cannot tell
    // a dead cluster from its own cable, so it holds nothing.
    let mut sim = serving(9, 3, 3);
    sim.background = false;
    sim.crash("n1");
    sim.crash("n2");
    sim.run_for(Duration::from_secs(2));
    assert!(sim.engine("n0").fenced());
    assert!(sim.nodes[&id("n0")].iface.is_empty());
}

#[test]
fn two_nodes_split_the_gateway_breaks_the_tie() {
    let mut sim = serving(21, 2, 2);
    // Both use the gateway as witness; after the split only n0 reaches it.
    sim.engine_mut("n0").enable_witness();
    sim.engine_mut("n1").enable_witness();
    sim.gateway_ok.insert(id("n1"), false);
    // (The clients and the router stay on n0's side.)
    sim.partition(&["n1"], &["n0"]);
    run_strict(&mut sim, &["n1"], Duration::from_secs(5), |s| {
        settled(s, 2) && s.nodes[&id("n0")].iface.len() == 2
    })
    .expect("n0 serves both");
    assert!(sim.engine("n1").fenced());
    sim.heal();
    run_strict(&mut sim, &[], Duration::from_secs(10), |s| {
        settled(s, 2) && !s.engine("n1").fenced() && s.converged_membership()
    })
    .expect("healed");
}

#[test]
fn quorum_off_lets_both_sides_serve() {
    let mut sim = Sim::new(31, Timings::default());
    sim.quorum = fechter_cluster::engine::Quorum::Off;
    for i in 0..3 {
        sim.start(
            &format!("n{i}"),
            fechter_cluster::sim::addr_of(i),
            vec![fechter_cluster::sim::addr_of(0)],
        );
    }
    sim.run_until_cond(Duration::from_secs(10), |s| {
        s.converged_membership() && s.converged_state()
    })
    .unwrap();
    let now = sim.now();
    sim.engine_mut("n0").add_address(now, spec(0)).unwrap();
    for i in 0..3 {
        let now = sim.now();
        sim.engine_mut(&format!("n{i}"))
            .update_own(now, |r| r.admin = Admin::Up);
    }
    sim.run_until_cond(Duration::from_secs(10), |s| settled(s, 1))
        .unwrap();
    let victim = sim.holders()[&spec(0)][0].clone();
    let others: Vec<String> = ["n0", "n1", "n2"]
        .iter()
        .filter(|n| id(n) != victim)
        .map(|s| s.to_string())
        .collect();
    let refs: Vec<&str> = others.iter().map(String::as_str).collect();
    sim.partition(&[victim.as_str()], &refs);
    // Without quorum the isolated holder keeps it and the majority takes it too.
    sim.run_until_cond(Duration::from_secs(5), |s| !s.duplicates().is_empty())
        .expect("both sides serve without quorum");
}

#[test]
fn a_pair_without_a_gateway_survives_a_machine_death() {
    // Two nodes, no witness: the survivor hears no majority, but its
    // segment is alive (clients): a minority, it serves what the wire
    // shows free, at the three-node figure.
    for seed in [31, 32, 33] {
        let mut sim = serving(seed, 2, 2);
        let victim = sim.holders()[&spec(0)][0].clone();
        let survivor = if victim.as_str() == "n0" { "n1" } else { "n0" };
        let t0 = sim.now;
        sim.crash(victim.as_str());
        let took = run_segment_strict(&mut sim, Duration::from_secs(3), |s| {
            s.nodes[&id(survivor)].iface.len() == 2
        })
        .expect("the survivor serves both");
        eprintln!("seed {seed}: the survivor serves both after {took:?}");
        for (t, n, e) in sim
            .log
            .iter()
            .filter(|(t, n, _)| *t >= t0 - sim.start && n.as_str() == survivor)
        {
            eprintln!("  {t:?} {n} {e:?}");
        }
        assert!(took < Duration::from_millis(150), "{took:?}");
        assert_eq!(sim.engine(survivor).standing(), Standing::Minority);
    }
}

#[test]
fn a_fenced_survivor_serves_within_200_ms_of_a_majority_coming_back() {
    // Nothing on the wire (no client): the survivor of a double crash is
    // fenced. One of the dead restarts: from the moment the survivor hears
    // it (a majority again), it serves its address again within 200 ms.
    for seed in [41, 42] {
        let mut sim = serving(seed, 3, 3);
        sim.background = false;
        sim.crash("n1");
        sim.crash("n2");
        sim.run_for(Duration::from_secs(2));
        assert!(sim.engine("n0").fenced());
        assert!(sim.nodes[&id("n0")].iface.is_empty());
        let t0 = sim.now - sim.start;
        sim.start("n1", addr_of(1), vec![addr_of(0)]);
        run_strict(&mut sim, &[], Duration::from_secs(5), |s| {
            !s.nodes[&id("n0")].iface.is_empty()
        })
        .expect("n0 serves again");
        let served = sim.now - sim.start;
        let joined = sim
            .log
            .iter()
            .find(|(t, n, e)| {
                *t >= t0
                    && n.as_str() == "n0"
                    && matches!(e, Event::MemberUp(m) if m.node == id("n1"))
            })
            .map(|(t, _, _)| *t)
            .expect("n0 heard n1 join");
        eprintln!(
            "seed {seed}: n0 serves {:?} after n1 joined",
            served - joined
        );
        assert!(
            served - joined <= Duration::from_millis(200),
            "{:?}",
            served - joined
        );
    }
}
