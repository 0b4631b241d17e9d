//! Unit tests of [`super::Node`]: what a plan's execution records and
//! reports, and the reasons the simulator (which drives nodes on the
//! agent's schedule) sees for takeovers and hand-offs.

use std::collections::BTreeSet;
use std::time::Duration;

use fechter_core::replica::Admin;
use fechter_core::{AddrSpec, NodeId};

use super::*;
use crate::engine::Timings;
use crate::sim::Sim;

fn spec(i: u32) -> AddrSpec {
    format!("eth0:198.18.0.{}/24", 10 + i).parse().unwrap()
}

fn id(s: &str) -> NodeId {
    NodeId::new(s)
}

/// The events (other than the engine's) `node` reported for `address`.
fn history_of(sim: &Sim, node: &str, address: &AddrSpec) -> Vec<NodeEvent> {
    sim.history
        .iter()
        .filter(|(_, n, e)| {
            *n == id(node)
                && match e {
                    NodeEvent::Acquired { address: a, .. }
                    | NodeEvent::Released { address: a, .. } => a == address,
                    _ => false,
                }
        })
        .map(|(_, _, e)| e.clone())
        .collect()
}

#[test]
fn a_failed_removal_stays_installed_and_is_not_reported() {
    let mut sim = Sim::serving(1, 1, 1, Timings::default());
    let now = sim.now();
    sim.engine_mut("n0")
        .remove_address(now, spec(0).ip)
        .unwrap();
    let mut node = sim.nodes.get_mut(&id("n0")).unwrap().node.take().unwrap();
    while node.poll_event().is_some() {}
    let on_iface = BTreeSet::from([spec(0)]);

    let plan = node.plan(now, on_iface.clone());
    assert_eq!(plan.actions, vec![Action::Remove(spec(0))]);
    assert_eq!(plan.ahead, None, "a removal records nothing ahead");
    assert_eq!(node.executed(now, plan, &[false]), None);
    assert!(node.installed().contains(&spec(0)));
    assert_eq!(node.poll_event(), None);

    let plan = node.plan(now, on_iface);
    assert_eq!(node.executed(now, plan, &[true]), Some(BTreeSet::new()));
    assert!(node.installed().is_empty());
    assert_eq!(
        node.poll_event(),
        Some(NodeEvent::Released {
            address: spec(0),
            reason: Reason::AddressRemoved
        })
    );
}

#[test]
fn an_install_is_recorded_ahead_and_restored_when_it_vanished() {
    let mut sim = Sim::serving(2, 1, 1, Timings::default());
    let now = sim.now();
    let mut node = sim.nodes.get_mut(&id("n0")).unwrap().node.take().unwrap();
    while node.poll_event().is_some() {}
    assert!(node.vanished(&spec(0)));
    assert!(node.plan_due());
    // The interface lost it: probed before it is put back (another machine
    // may have it now).
    let plan = node.plan(now, BTreeSet::new());
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(node.waiting(), 1, "probed");
    let mut t = now;
    let mut probes = 0;
    while !node.plan_due() {
        t.at += Duration::from_millis(15);
        t.wall_ms += 15;
        probes += node.wire_tick(t).len();
        assert!(t.at - now.at < Duration::from_secs(1), "never free");
    }
    assert!(probes >= 2, "{probes} probes");
    // Nobody answered: put back, recorded (unchanged) ahead, and announced
    // again.
    let plan = node.plan(t, BTreeSet::new());
    assert_eq!(
        plan.actions,
        vec![Action::Install(spec(0)), Action::Announce(spec(0))]
    );
    assert_eq!(plan.ahead, None, "already recorded as installed");
    assert_eq!(node.executed(t, plan, &[true, true]), None);
    assert_eq!(
        node.poll_event(),
        Some(NodeEvent::Acquired {
            address: spec(0),
            reason: Reason::Restored
        })
    );
    assert_eq!(node.poll_event(), Some(NodeEvent::Announced(spec(0))));
    assert!(!node.plan_due());
}

#[test]
fn a_dead_holders_standby_acquires_by_takeover() {
    let mut sim = Sim::serving(3, 3, 3, Timings::default());
    let victim = sim.holders()[&spec(0)][0].clone();
    let standby = sim.engine("n0").allocation().placements[&spec(0)]
        .standby
        .clone()
        .expect("a standby");
    sim.crash(victim.as_str());
    sim.run_until_cond(Duration::from_secs(3), |s| {
        s.holders()
            .get(&spec(0))
            .is_some_and(|h| h == std::slice::from_ref(&standby))
    })
    .expect("taken over");
    // Its history is drained on its next wake-up.
    sim.run_for(Duration::from_millis(50));
    let acquired = history_of(&sim, standby.as_str(), &spec(0));
    assert_eq!(
        acquired.last(),
        Some(&NodeEvent::Acquired {
            address: spec(0),
            reason: Reason::TakeoverFrom(victim)
        })
    );
}

#[test]
fn a_node_taken_down_hands_off_and_both_sides_say_so() {
    let mut sim = Sim::serving(4, 3, 3, Timings::default());
    let giver = sim.holders()[&spec(0)][0].clone();
    let now = sim.now();
    sim.engine_mut(giver.as_str())
        .update_own(now, |r| r.admin = Admin::Down);
    sim.run_until_cond(Duration::from_secs(5), |s| {
        s.holders()
            .get(&spec(0))
            .is_some_and(|h| h.len() == 1 && h[0] != giver)
    })
    .expect("moved");
    sim.run_for(Duration::from_millis(50));
    let taker = sim.holders()[&spec(0)][0].clone();
    assert_eq!(
        history_of(&sim, giver.as_str(), &spec(0)).last(),
        Some(&NodeEvent::Released {
            address: spec(0),
            reason: Reason::HandOffTo(taker.clone())
        })
    );
    assert_eq!(
        history_of(&sim, taker.as_str(), &spec(0)).last(),
        Some(&NodeEvent::Acquired {
            address: spec(0),
            reason: Reason::HandOffFrom(giver)
        })
    );
}

#[test]
fn what_this_machine_may_not_hold_is_removed_and_never_installed() {
    let mut sim = Sim::serving(5, 1, 2, Timings::default());
    let now = sim.now();
    let mut node = sim.nodes.get_mut(&id("n0")).unwrap().node.take().unwrap();
    while node.poll_event().is_some() {}
    let both = BTreeSet::from([spec(0), spec(1)]);
    assert_eq!(node.installed(), &both);
    node.set_allowed(fechter_core::allowed::Allowed {
        prefixes: vec![format!("{}/32", spec(0).ip).parse().unwrap()],
        interfaces: Vec::new(),
    });
    assert!(node.plan_due());
    assert_eq!(node.refused(), vec![spec(1)]);
    assert!(!node.renewals().contains(&Action::Renew(spec(1))));
    let plan = node.plan(now, both);
    assert!(plan.actions.contains(&Action::Remove(spec(1))), "{plan:?}");
    assert!(
        !plan
            .actions
            .iter()
            .any(|a| a.spec() == &spec(1) && !matches!(a, Action::Remove(_))),
        "{plan:?}"
    );
    let ok = vec![true; plan.actions.len()];
    assert_eq!(
        node.executed(now, plan, &ok),
        Some(BTreeSet::from([spec(0)]))
    );
    // Gone from the interface, it is not installed again.
    let plan = node.plan(now, BTreeSet::from([spec(0)]));
    assert!(
        plan.actions.iter().all(|a| a.spec() != &spec(1)),
        "{plan:?}"
    );
    assert_eq!(node.waiting(), 0, "not even probed");
}
