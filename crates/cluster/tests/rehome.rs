//! Re-homing a crashed node's addresses ([`fechter_cluster::rehome`]), in
//! deterministic simulation: at a small size every address of the victim is
//! re-homed, never twice, within the standby fast path's time; and
//! [`measure`] reports what did not happen instead of hanging or panicking.
//!
//! The full size (100 nodes, 1,000 addresses) is `#[ignore]`d; run it with
//! `cargo test --release -p fechter-cluster --test rehome -- --ignored --nocapture`.

use std::time::Duration;

use fechter_cluster::engine::Timings;
use fechter_cluster::rehome::{Rehome, measure};

fn show(seed: u64, r: &Rehome) {
    eprintln!(
        "seed {seed}: {} nodes, {} addresses: victim held {}, first {:?}, median {:?}, \
         all re-homed {:?}, duplicates {}, wall {:.2?}",
        r.nodes,
        r.addresses,
        r.victim_held,
        r.first,
        r.median,
        r.rehomed_after,
        r.duplicates,
        r.wall
    );
}

#[test]
fn a_crashed_nodes_addresses_are_rehomed_once_within_the_heartbeat_timeout() {
    let t = Timings::default();
    // Takeover after `heartbeat_timeout` of silence, noticed on the next
    // heartbeat tick, plus a few hundred ms of slack (never a SWIM verdict
    // or a new table: those take longer).
    let bound = t.heartbeat_timeout + t.heartbeat_interval + Duration::from_millis(200);
    for seed in [1, 2] {
        let r = measure(seed, 5, 50, t.clone()).unwrap();
        show(seed, &r);
        assert_eq!((r.nodes, r.addresses), (5, 50));
        // Balanced: 10 each.
        assert_eq!(r.victim_held, 10, "seed {seed}");
        assert_eq!(r.duplicates, 0, "seed {seed}");
        assert!(r.first <= r.median && r.median <= r.rehomed_after);
        assert!(r.first >= t.heartbeat_timeout, "seed {seed}: {r:?}");
        assert!(
            r.rehomed_after < bound,
            "seed {seed}: {r:?} (bound {bound:?})"
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_figures() {
    let a = measure(7, 3, 10, Timings::default()).unwrap();
    let b = measure(7, 3, 10, Timings::default()).unwrap();
    assert_eq!(
        (a.victim_held, a.first, a.median, a.rehomed_after),
        (b.victim_held, b.first, b.median, b.rehomed_after)
    );
}

#[test]
fn what_cannot_happen_is_an_error() {
    // Nothing to crash but the leader.
    let e = measure(1, 1, 10, Timings::default()).unwrap_err();
    assert!(e.contains("at least 2"), "{e}");
    // A failover slower than the bound: no standby ever times out and SWIM
    // never declares the victim down.
    let slow = Timings {
        heartbeat_timeout: Duration::from_secs(3600),
        suspect_to_down: Duration::from_secs(3600),
        ..Timings::default()
    };
    let e = measure(1, 3, 6, slow).unwrap_err();
    assert!(e.contains("not held by exactly one running node"), "{e}");
}

#[test]
#[ignore = "100 nodes x 1,000 addresses: run in release"]
fn full_size() {
    for seed in 1..=3 {
        let r = measure(seed, 100, 1000, Timings::default()).unwrap();
        show(seed, &r);
        assert_eq!(r.duplicates, 0);
    }
}
