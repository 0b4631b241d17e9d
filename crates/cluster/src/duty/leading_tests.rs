//! Unit tests of [`super`]: leading.

use super::*;
use crate::duty::Duty;
use fechter_core::replica::{Item, NodeRecord};
use fechter_core::state::{Hlc, Stamp};

/// A node that becomes leader on a plain tick (its lead grace ended),
/// with eligibility unchanged since it last looked, still publishes:
/// nobody else will.
#[test]
fn a_node_that_just_became_leader_publishes_without_a_forced_evaluation() {
    let me = NodeId::new("n0");
    let mut replica = Replica::default();
    let rec = NodeRecord {
        admin: Admin::Up,
        ..NodeRecord::new(me.clone(), 1)
    };
    replica.apply(Item::Node(rec));
    let stamp = Stamp::new(
        Hlc {
            wall_ms: 1,
            logical: 0,
        },
        me.clone(),
    );
    let entry = replica
        .addresses
        .add_entry("eth0:198.18.0.50/24".parse().unwrap(), stamp)
        .unwrap();
    replica.apply(Item::Address(entry));
    let timings = DutyTimings {
        heartbeat_interval: Duration::from_millis(15),
        heartbeat_timeout: Duration::from_millis(65),
        maturity: Duration::ZERO,
        quarantine: Duration::from_secs(5),
        lead_grace: Duration::from_secs(1),
    };
    let alive = BTreeSet::new();
    let t0 = Instant::now();
    let mut duty = Duty::default();
    let input = |i_can_lead, now| LeaderInput {
        me: &me,
        replica: &replica,
        alive: &alive,
        i_can_lead,
        now,
        timings: &timings,
        force: false,
    };
    // Not yet allowed to lead (lead grace): nobody leads, nothing published,
    // but eligibility has been computed.
    assert!(duty.lead(input(false, t0)).publish.is_none());
    assert_eq!(duty.leader(), None);
    // The grace ends on a leader tick: it leads, and must publish.
    let later = t0 + Duration::from_millis(100);
    let decision = duty.lead(input(true, later));
    assert_eq!(duty.leader(), Some(&me));
    let table = decision.publish.expect("the new leader published a table");
    assert_eq!(table.allocation.placements.len(), 1);
}
