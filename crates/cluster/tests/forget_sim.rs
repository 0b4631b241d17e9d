//! `fechter forget` (deterministic simulation): forgetting machines gone for
//! good lowers the majority the survivors need; it is refused for a live
//! node, for the node itself and for an unknown one; and a forgotten node
//! that runs again (restarted, or only cut off when it was forgotten) comes
//! back and counts again.

use std::time::Duration;

use fechter_cluster::engine::{ForgetError, Timings};
use fechter_cluster::sim::{Sim, addr_of};
use fechter_core::NodeId;
use fechter_core::claim::Standing;
use fechter_core::replica::Admin;

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

/// Crashes `dead` and runs until every node in `alive` neither has them as
/// SWIM members nor heard them within the heartbeat timeout.
fn crash_for_good(sim: &mut Sim, dead: &[&str], alive: &[&str]) {
    for d in dead {
        sim.crash(d);
    }
    sim.run_until_cond(Duration::from_secs(10), |s| {
        alive.iter().all(|a| {
            let m = s.engine(a).members();
            dead.iter().all(|d| !m.contains_key(&id(d)))
        })
    })
    .expect("declared down");
    sim.run_for(Timings::default().heartbeat_timeout * 2);
}

/// How many node records `name` counts (not forgotten).
fn counted(sim: &Sim, name: &str) -> usize {
    sim.engine(name).replica().counted_nodes().count()
}

/// Five nodes; n3 and n4 die for good, then n2. The survivors n0 and n1
/// are two of five: a minority, which serves what the wire shows free but
/// never leads. With n3 and n4 forgotten first, they are two of three:
/// quorate, and one of them leads.
#[test]
fn forgetting_dead_machines_keeps_the_survivors_quorate() {
    for forget in [false, true] {
        let mut sim = serving(11, 5, 6);
        crash_for_good(&mut sim, &["n3", "n4"], &["n0", "n1", "n2"]);
        if forget {
            let now = sim.now();
            sim.engine_mut("n0").forget(now, &id("n3")).unwrap();
            sim.engine_mut("n1").forget(now, &id("n4")).unwrap();
            sim.run_until_cond(Duration::from_secs(5), |s| {
                ["n0", "n1", "n2"].iter().all(|n| counted(s, n) == 3) && s.converged_state()
            })
            .expect("the tombstones spread");
        }
        crash_for_good(&mut sim, &["n2"], &["n0", "n1"]);
        sim.run_until_cond(Duration::from_secs(10), |s| settled(s, 6))
            .expect("the survivors serve everything");
        sim.run_for(Duration::from_secs(2));
        for n in ["n0", "n1"] {
            let want = if forget {
                Standing::Quorate
            } else {
                Standing::Minority
            };
            assert_eq!(sim.engine(n).standing(), want, "{n}, forget {forget}");
        }
        let leader = sim.engine("n0").leader().cloned();
        if forget {
            assert!(
                leader == Some(id("n0")) || leader == Some(id("n1")),
                "{leader:?}"
            );
            assert_eq!(sim.engine("n1").leader().cloned(), leader);
            // Forgotten nodes are not listed as ineligible either.
            let el = sim.engine("n0").eligibility().clone();
            assert!(!el.why_not.contains_key(&id("n3")) && !el.why_not.contains_key(&id("n4")));
            assert!(el.eligible.contains(&id("n0")) && el.eligible.contains(&id("n1")));
        }
        assert!(settled(&sim, 6));
    }
}

#[test]
fn forget_is_refused_for_a_live_node_for_itself_and_for_a_stranger() {
    let mut sim = serving(12, 3, 2);
    let now = sim.now();
    let before = sim.engine("n0").replica().digest();
    let e = sim.engine_mut("n0");
    assert_eq!(e.forget(now, &id("n1")), Err(ForgetError::Alive(id("n1"))));
    assert_eq!(e.forget(now, &id("n0")), Err(ForgetError::Myself(id("n0"))));
    assert_eq!(
        e.forget(now, &id("nx")),
        Err(ForgetError::Unknown(id("nx")))
    );
    assert_eq!(e.replica().digest(), before, "a refusal changes nothing");
    let msg = ForgetError::Alive(id("n1")).to_string();
    assert!(msg.contains("n1 is alive"), "{msg}");
    sim.run_for(Duration::from_millis(500));
    assert_eq!(counted(&sim, "n0"), 3);
    assert_eq!(counted(&sim, "n1"), 3);
}

#[test]
fn a_forgotten_node_that_restarts_counts_again() {
    let mut sim = serving(13, 3, 3);
    crash_for_good(&mut sim, &["n2"], &["n0", "n1"]);
    let now = sim.now();
    sim.engine_mut("n0").forget(now, &id("n2")).unwrap();
    // Forgetting twice changes nothing.
    sim.engine_mut("n0").forget(now, &id("n2")).unwrap();
    sim.run_until_cond(Duration::from_secs(5), |s| {
        counted(s, "n0") == 2 && counted(s, "n1") == 2
    })
    .expect("forgotten everywhere");
    // n2 comes back after all: its new incarnation replaces the tombstone.
    sim.start("n2", addr_of(2), vec![addr_of(0)]);
    sim.run_until_cond(Duration::from_secs(10), |s| {
        ["n0", "n1", "n2"].iter().all(|n| counted(s, n) == 3)
            && s.converged_state()
            && s.converged_membership()
    })
    .expect("n2 counts again");
    let now = sim.now();
    sim.engine_mut("n2")
        .update_own(now, |r| r.admin = Admin::Up);
    sim.run_until_cond(Duration::from_secs(10), |s| {
        settled(s, 3) && s.holders().values().any(|h| h[0] == id("n2"))
    })
    .expect("n2 holds an address again");
    assert_eq!(sim.engine("n0").standing(), Standing::Quorate);
}

/// A node forgotten while it was only cut off from the node that forgot
/// it refutes the tombstone when it hears of it: it writes its record again
/// in a higher incarnation, and counts again everywhere.
#[test]
fn a_live_node_that_was_forgotten_refutes_it() {
    let mut sim = serving(14, 3, 3);
    sim.partition(&["n2"], &["n0", "n1"]);
    sim.run_until_cond(Duration::from_secs(10), |s| {
        !s.engine("n0").members().contains_key(&id("n2"))
    })
    .expect("n2 down for n0");
    sim.run_for(Timings::default().heartbeat_timeout * 2);
    let now = sim.now();
    sim.engine_mut("n0").forget(now, &id("n2")).unwrap();
    sim.run_for(Duration::from_secs(1));
    assert_eq!(counted(&sim, "n1"), 2);
    sim.heal();
    sim.run_until_cond(Duration::from_secs(15), |s| {
        ["n0", "n1", "n2"].iter().all(|n| counted(s, n) == 3)
            && s.converged_state()
            && s.converged_membership()
            && settled(s, 3)
    })
    .expect("n2 counts again");
    let r = sim.engine("n0").replica().nodes[&id("n2")].clone();
    assert!(!r.forgotten && r.incarnation > 1, "{r:?}");
    assert_eq!(r.admin, Admin::Up, "n2 keeps what it was");
    sim.run_for(Duration::from_secs(1));
    assert!(sim.engine("n2").standing() == Standing::Quorate);
}
