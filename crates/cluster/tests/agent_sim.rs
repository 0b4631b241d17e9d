//! The agent's job in deterministic simulation, with the recording platform
//! of `Sim` (interfaces are sets; every executed action is logged): the
//! seed's walkthrough, leader death, standby takeover before any new table,
//! make-before-break on `down`, maturity, remove-address, fail-static.
//!
//! Invariant checked after every simulation step of every test: an address
//! is on two machines only during a make-before-break hand-off, and once the
//! cluster has settled every assignable address has a holder when an
//! eligible node exists.

use std::cell::RefCell;
use std::time::Duration;

use fechter_cluster::engine::{Event, Timings};
use fechter_cluster::sim::{Sim, addr_of};
use fechter_core::reconcile::Action;
use fechter_core::replica::Admin;
use fechter_core::{AddrSpec, NodeId};

const SEEDS: [u64; 3] = [3, 17, 2024];

fn spec(i: u32) -> AddrSpec {
    format!("eth0:198.18.0.{}/24", 10 + i).parse().unwrap()
}

fn id(s: &str) -> NodeId {
    NodeId::new(s)
}

/// How long after a hand-off was last visible anywhere (in a table or an
/// allocation) its giver may still hold the address: the time for the
/// receiver's confirmation to arrive, in simulated time.
const HANDOFF_GRACE: Duration = Duration::from_millis(20);

/// Runs until `done`, checking the no-duplicate invariant after every step.
fn run_checked(sim: &mut Sim, limit: Duration, done: impl Fn(&Sim) -> bool) -> Duration {
    run_checking(sim, limit, done)
        .unwrap_or_else(|| panic!("condition not reached within {limit:?}"))
}

/// Runs for `d`, checking the invariant after every step.
fn hold_checked(sim: &mut Sim, d: Duration) {
    assert!(run_checking(sim, d, |_| false).is_none());
}

fn run_checking(sim: &mut Sim, limit: Duration, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
    let violation = RefCell::new(None);
    let took = sim.run_until_cond(limit, |s| {
        let now = s.now - s.start;
        for (a, on) in s.duplicates() {
            if !s.is_handoff(&a, &on, HANDOFF_GRACE) && violation.borrow().is_none() {
                *violation.borrow_mut() =
                    Some(format!("{a} on {on:?} outside a hand-off at {now:?}"));
            }
        }
        violation.borrow().is_some() || done(s)
    });
    if let Some(v) = violation.into_inner() {
        panic!("{v}");
    }
    took
}

/// Whether every assignable address is on exactly one machine (settled).
fn settled(s: &Sim, expect: usize) -> bool {
    let h = s.holders();
    h.len() == expect && h.values().all(|v| v.len() == 1)
}

fn up(sim: &mut Sim, n: &str) {
    let now = sim.now();
    sim.engine_mut(n).update_own(now, |r| r.admin = Admin::Up);
}

fn cluster(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::cluster(seed, n, Timings::default());
    sim.run_until_cond(Duration::from_secs(10), |s| {
        s.converged_membership() && s.converged_state()
    })
    .expect("cluster formed");
    sim
}

/// A node of a three-node cluster that is not its leader.
fn not_the_leader(sim: &Sim) -> &'static str {
    let leader = sim.engine("n0").leader().cloned().expect("a leader");
    ["n0", "n1", "n2"]
        .into_iter()
        .find(|n| id(n) != leader)
        .expect("three nodes")
}

/// A formed three-node cluster serving `addrs` addresses: added on n0,
/// every node up, settled (checked).
fn serving(seed: u64, addrs: u32) -> Sim {
    let mut sim = cluster(seed, 3);
    let now = sim.now();
    for i in 0..addrs {
        sim.engine_mut("n0").add_address(now, spec(i)).unwrap();
    }
    for n in ["n0", "n1", "n2"] {
        up(&mut sim, n);
    }
    run_checked(&mut sim, Duration::from_secs(10), |s| {
        settled(s, addrs as usize)
    });
    sim
}

/// Six addresses served by three nodes, settled for a second: the cluster,
/// a node that is not the leader (the one a test fails), and the table.
fn calm(seed: u64) -> (Sim, &'static str, fechter_core::Allocation) {
    let mut sim = serving(seed, 6);
    sim.run_for(Duration::from_secs(1));
    let victim = not_the_leader(&sim);
    let table = sim.engine("n0").allocation().clone();
    (sim, victim, table)
}

#[test]
fn the_seed_walkthrough() {
    for seed in SEEDS {
        // ws-1 starts; ws-2 attaches to it.
        let mut sim = Sim::new(seed, Timings::default());
        sim.start("ws-1", addr_of(0), vec![]);
        sim.start("ws-2", addr_of(1), vec![addr_of(0)]);
        run_checked(&mut sim, Duration::from_secs(5), Sim::converged_membership);
        let now = sim.now();
        sim.engine_mut("ws-1").add_address(now, spec(0)).unwrap();
        // Nobody is up: the address is not assigned.
        sim.run_for(Duration::from_secs(3));
        assert!(sim.holders().is_empty());
        up(&mut sim, "ws-1");
        up(&mut sim, "ws-2");
        run_checked(&mut sim, Duration::from_secs(5), |s| settled(s, 1));
        let now = sim.now();
        sim.engine_mut("ws-2").add_address(now, spec(1)).unwrap();
        run_checked(&mut sim, Duration::from_secs(5), |s| {
            settled(s, 2)
                && s.holders()
                    .values()
                    .flatten()
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
                    == 2
        });
        // Status (the table) agrees on both nodes: one address each.
        for n in ["ws-1", "ws-2"] {
            let a = sim.engine(n).allocation().clone();
            assert_eq!(a.counts().values().copied().collect::<Vec<_>>(), vec![1, 1]);
        }
        // Kill the second machine: ws-1 holds both.
        sim.crash("ws-2");
        run_checked(&mut sim, Duration::from_secs(5), |s| {
            s.nodes[&id("ws-1")].iface.len() == 2
        });
        let a = sim.engine("ws-1").allocation();
        assert!(a.placements.values().all(|p| p.holder == id("ws-1")));
    }
}

#[test]
fn a_holders_death_is_handled_by_its_standby_before_any_new_table() {
    for seed in SEEDS {
        // Kill a node that is not the leader, holding addresses.
        let (mut sim, victim, table) = calm(seed);
        let theirs: Vec<AddrSpec> = table
            .placements
            .iter()
            .filter(|(_, p)| p.holder == id(victim))
            .map(|(s, _)| s.clone())
            .collect();
        assert!(!theirs.is_empty());
        let crash_at = sim.now - sim.start;
        sim.crash(victim);
        let took = run_checked(&mut sim, Duration::from_secs(5), |s| settled(s, 6));
        // Each address went to the standby named before the failure.
        for a in &theirs {
            let standby = table.placements[a].standby.clone().unwrap();
            assert_eq!(sim.holders()[a], vec![standby.clone()], "{a}");
        }
        // The standbys acted on their own, before the leader published anything new.
        let first_takeover = sim
            .log
            .iter()
            .find(|(t, _, e)| *t >= crash_at && matches!(e, Event::TookOver { .. }))
            .map(|(t, _, _)| *t)
            .expect("a standby took over");
        let first_publish = sim
            .log
            .iter()
            .find(|(t, _, e)| *t >= crash_at && matches!(e, Event::Published(_)))
            .map(|(t, _, _)| *t);
        assert!(
            first_publish.is_none_or(|p| first_takeover <= p),
            "seed {seed}"
        );
        assert!(
            first_takeover - crash_at < Duration::from_millis(150),
            "seed {seed}: takeover after {:?}",
            first_takeover - crash_at
        );
        eprintln!(
            "seed {seed}: standby took over {:?} after the crash; settled after {took:?}",
            first_takeover - crash_at
        );
        // The leader's next table agrees: nothing moves again.
        let before = sim.holders();
        hold_checked(&mut sim, Duration::from_secs(3));
        assert_eq!(sim.holders(), before);
    }
}

#[test]
fn the_leaders_death_elects_another_without_reshuffling() {
    for seed in SEEDS {
        let mut sim = cluster(seed, 3);
        let now = sim.now();
        for i in 0..6 {
            sim.engine_mut("n1").add_address(now, spec(i)).unwrap();
        }
        for n in ["n0", "n1", "n2"] {
            up(&mut sim, n);
        }
        run_checked(&mut sim, Duration::from_secs(10), |s| settled(s, 6));
        sim.run_for(Duration::from_secs(1));
        let leader = sim.engine("n1").leader().cloned().unwrap();
        let before = sim.holders();
        sim.crash(leader.as_str());
        let survivors: Vec<&str> = ["n0", "n1", "n2"]
            .into_iter()
            .filter(|n| id(n) != leader)
            .collect();
        run_checked(&mut sim, Duration::from_secs(10), |s| {
            settled(s, 6)
                && survivors
                    .iter()
                    .all(|n| s.engine(n).leader().is_some_and(|l| *l != leader))
        });
        // Survivors kept what they had.
        for (a, on) in &before {
            if on[0] != leader {
                assert_eq!(&sim.holders()[a], on, "{a} moved");
            }
        }
        let new_leader = sim.engine(survivors[0]).leader().cloned();
        assert_eq!(sim.engine(survivors[1]).leader().cloned(), new_leader);
    }
}

#[test]
fn down_hands_off_make_before_break() {
    for seed in SEEDS {
        let mut sim = serving(seed, 6);
        let giving: Vec<AddrSpec> = sim.nodes[&id("n2")].iface.iter().cloned().collect();
        assert!(!giving.is_empty());
        let mark = sim.actions.len();
        let now = sim.now();
        sim.engine_mut("n2")
            .update_own(now, |r| r.admin = Admin::Down);
        run_checked(&mut sim, Duration::from_secs(5), |s| {
            settled(s, 6) && s.nodes[&id("n2")].iface.is_empty()
        });
        let acts = &sim.actions[mark..];
        for a in &giving {
            let installed = acts
                .iter()
                .position(|(_, n, x)| *n != id("n2") && *x == Action::Install(a.clone()));
            let announced = acts
                .iter()
                .position(|(_, n, x)| *n != id("n2") && *x == Action::Announce(a.clone()));
            let removed = acts
                .iter()
                .position(|(_, n, x)| *n == id("n2") && *x == Action::Remove(a.clone()));
            let (i, an, r) = (installed.unwrap(), announced.unwrap(), removed.unwrap());
            assert!(
                i < an && an < r,
                "{a}: install {i}, announce {an}, remove {r}"
            );
        }
    }
}

#[test]
fn a_node_that_comes_up_receives_addresses_only_once_mature() {
    for seed in SEEDS {
        let mut sim = cluster(seed, 3);
        let now = sim.now();
        for i in 0..6 {
            sim.engine_mut("n0").add_address(now, spec(i)).unwrap();
        }
        up(&mut sim, "n0");
        up(&mut sim, "n1");
        run_checked(&mut sim, Duration::from_secs(10), |s| settled(s, 6));
        sim.run_for(Duration::from_secs(1));
        let t_up = sim.now;
        up(&mut sim, "n2");
        let took = run_checked(&mut sim, Duration::from_secs(10), |s| {
            !s.nodes[&id("n2")].iface.is_empty()
        });
        assert!(
            took >= Timings::default().maturity,
            "n2 got addresses after {took:?}"
        );
        assert!(took < Timings::default().maturity + Duration::from_secs(1));
        let _ = t_up;
        // Balanced again, 2 each.
        run_checked(&mut sim, Duration::from_secs(5), |s| {
            settled(s, 6) && s.nodes.values().all(|n| n.iface.len() == 2)
        });
    }
}

#[test]
fn remove_address_makes_its_holder_release_it() {
    let mut sim = serving(5, 3);
    let now = sim.now();
    sim.engine_mut("n2")
        .remove_address(now, spec(1).ip)
        .unwrap();
    run_checked(&mut sim, Duration::from_secs(5), |s| {
        settled(s, 2) && !s.holders().contains_key(&spec(1))
    });
    // The tombstone is kept everywhere.
    for n in ["n0", "n1", "n2"] {
        let r = sim.engine(n).replica();
        assert!(!r.addresses.get(&spec(1).ip).unwrap().is_assignable());
    }
}

#[test]
fn fail_static_when_every_up_node_is_unhealthy() {
    let mut sim = serving(9, 3);
    let before = sim.holders();
    // One unhealthy node: its address moves away.
    let now = sim.now();
    sim.engine_mut("n0")
        .update_own(now, |r| r.unhealthy = vec!["gateway".into()]);
    run_checked(&mut sim, Duration::from_secs(5), |s| {
        settled(s, 3) && s.nodes[&id("n0")].iface.is_empty()
    });
    // All unhealthy: the addresses do not vanish, and once every node is
    // unhealthy nothing moves any more (fail-static).
    for n in ["n1", "n2"] {
        let now = sim.now();
        sim.engine_mut(n)
            .update_own(now, |r| r.unhealthy = vec!["gateway".into()]);
    }
    run_checked(&mut sim, Duration::from_secs(5), |s| {
        settled(s, 3) && s.engine("n1").eligibility().fail_static
    });
    let during = sim.holders();
    hold_checked(&mut sim, Duration::from_secs(3));
    assert_eq!(sim.holders(), during);
    for n in ["n0", "n1", "n2"] {
        assert!(
            sim.engine(n).eligibility().fail_static,
            "{n} says fail-static"
        );
    }
    // n0 recovers: it is the only healthy node and takes everything.
    let now = sim.now();
    sim.engine_mut("n0")
        .update_own(now, |r| r.unhealthy.clear());
    run_checked(&mut sim, Duration::from_secs(5), |s| {
        settled(s, 3) && s.nodes[&id("n0")].iface.len() == 3
    });
    assert_ne!(before, sim.holders());
}

#[test]
fn losing_an_interface_moves_only_the_addresses_on_it() {
    let mut sim = cluster(11, 3);
    let now = sim.now();
    let eth1: AddrSpec = "eth1:198.18.1.10/24".parse().unwrap();
    for i in 0..3 {
        sim.engine_mut("n0").add_address(now, spec(i)).unwrap();
    }
    sim.engine_mut("n0").add_address(now, eth1.clone()).unwrap();
    for n in ["n0", "n1", "n2"] {
        up(&mut sim, n);
    }
    run_checked(&mut sim, Duration::from_secs(10), |s| settled(s, 4));
    let holder = sim.holders()[&eth1][0].clone();
    let before = sim.holders();
    // The eth1 holder loses carrier on eth1: only the eth1 address moves.
    let now = sim.now();
    sim.engine_mut(holder.as_str()).update_own(now, |r| {
        r.iface_trouble.insert("eth1".into(), "no carrier".into());
    });
    run_checked(&mut sim, Duration::from_secs(5), |s| {
        settled(s, 4) && s.holders()[&eth1][0] != holder
    });
    for (a, on) in &before {
        if *a != eth1 {
            assert_eq!(&sim.holders()[a], on, "{a} moved");
        }
    }
}

#[test]
fn a_holder_restarted_right_after_a_crash_does_not_serve_beside_its_standby() {
    for seed in SEEDS {
        let mut sim = serving(seed, 3);
        sim.run_for(Duration::from_secs(1));
        let victim = not_the_leader(&sim);
        let idx: usize = victim[1..].parse().unwrap();
        sim.crash(victim);
        // The standby takes over, then the crashed agent is back at once,
        // before SWIM or the leader have reacted.
        run_checked(&mut sim, Duration::from_secs(2), |s| settled(s, 3));
        sim.start(victim, addr_of(idx), vec![addr_of(0)]);
        hold_checked(&mut sim, Duration::from_secs(6));
        assert!(settled(&sim, 3), "seed {seed}: {:?}", sim.holders());
    }
}

/// A stall shorter than the standbys' heartbeat timeout, of one process or
/// of every process at once (a paused virtual machine, a host starved of
/// CPU), moves no address: the stalled node's silence is below the
/// takeover timeout, and a node does not count the time it did not run as
/// its peers' silence (no self-fencing, no takeover on waking).
#[test]
fn a_stall_shorter_than_the_takeover_timeout_moves_nothing() {
    let t = Timings::default();
    // Beyond fence_after, below heartbeat_timeout: the window in which a
    // node judging its peers by the wall clock alone would fence itself.
    let stall = (t.fence_after + t.heartbeat_timeout) / 2;
    assert!(stall > t.fence_after && stall < t.heartbeat_timeout);
    for seed in SEEDS {
        let (mut sim, holder, _) = calm(seed);
        for who in [vec![holder], vec!["n0", "n1", "n2"]] {
            let before = sim.holders();
            let from = sim.now - sim.start;
            sim.stall(&who, stall);
            // Every address keeps exactly one holder throughout.
            let broke = run_checking(&mut sim, Duration::from_secs(2), |s| !settled(s, 6));
            assert!(
                broke.is_none(),
                "seed {seed}, {who:?} stalled: {:?}",
                sim.holders()
            );
            assert_eq!(sim.holders(), before, "seed {seed}, {who:?} stalled");
            let reacted: Vec<_> = sim
                .log
                .iter()
                .filter(|(at, _, e)| {
                    *at >= from && matches!(e, Event::Fenced | Event::TookOver { .. })
                })
                .collect();
            assert!(reacted.is_empty(), "seed {seed}, {who:?}: {reacted:?}");
        }
    }
}

/// A standby starved of CPU (its loop stalls again and again, 40 ms at a
/// time) while the rest of the cluster runs still takes over from a dead
/// holder promptly: its own stalls are credited to its peers only when they
/// seem to have stalled too, and here the live peer is heard again and
/// again over each stall.
#[test]
fn a_starved_standby_still_takes_over_from_a_dead_holder() {
    for seed in SEEDS {
        let (mut sim, victim, table) = calm(seed);
        let standby = table
            .placements
            .values()
            .find(|p| p.holder == id(victim))
            .and_then(|p| p.standby.clone())
            .expect("the victim holds an address with a standby");
        let starved: &'static str = ["n0", "n1", "n2"]
            .into_iter()
            .find(|n| id(n) == standby)
            .unwrap();
        let crash_at = sim.now - sim.start;
        sim.crash(victim);
        // When the starved standby took over, counted from the crash.
        let took = |s: &Sim| {
            s.log
                .iter()
                .find(|(t, n, e)| {
                    *t >= crash_at && *n == standby && matches!(e, Event::TookOver { .. })
                })
                .map(|(t, _, _)| *t - crash_at)
        };
        for _ in 0..25 {
            if took(&sim).is_some() {
                break;
            }
            sim.stall(&[starved], Duration::from_millis(40));
            sim.run_for(Duration::from_millis(41));
        }
        let at = took(&sim).expect("the starved standby took over");
        eprintln!("seed {seed}: starved standby {starved} took over {at:?} after the crash");
        assert!(at < Duration::from_millis(150), "seed {seed}: {at:?}");
    }
}
