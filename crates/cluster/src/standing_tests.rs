//! Transitions of [`Standing`]: each test drives one node's view of three
//! (or two) nodes tick by tick, as the engine does.

use super::*;

const I: Duration = Duration::from_millis(15);

struct View {
    nodes: BTreeMap<NodeId, NodeRecord>,
    heard: BTreeMap<NodeId, Instant>,
    timings: Timings,
    start: Instant,
    now: Instant,
    rx: u64,
    me: NodeId,
}

impl View {
    fn new(n: usize) -> View {
        let start = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let id = NodeId::new(format!("n{i}"));
                (id.clone(), NodeRecord::new(id, 1))
            })
            .collect();
        View {
            nodes,
            heard: BTreeMap::new(),
            timings: Timings::default(),
            start,
            now: start,
            rx: 0,
            me: NodeId::new("n0"),
        }
    }

    fn input(&self) -> Input<'_> {
        Input {
            me: &self.me,
            nodes: &self.nodes,
            last_heard: &self.heard,
            rule: Quorum::Majority,
            now: self.now,
            started: self.start,
            timings: &self.timings,
        }
    }

    /// One heartbeat tick: `peers` were heard, `frames` arrived on the
    /// segment; the shell samples when asked, then the standing is checked.
    fn tick(&mut self, s: &mut Standing, peers: &[usize], frames: u64) -> Option<Change> {
        self.now += I;
        for p in peers {
            self.heard.insert(NodeId::new(format!("n{p}")), self.now);
        }
        self.rx += frames;
        if s.wants_sample(&self.input()) {
            s.sample(self.now, self.rx, I);
        }
        s.check(&self.input()).0
    }
}

/// A node that has been quorate for a while (past its start hold).
fn settled(v: &mut View, peers: &[usize]) -> Standing {
    let mut s = Standing::starting(v.now, v.timings.rejoin_hold);
    for _ in 0..100 {
        v.tick(&mut s, peers, 2);
    }
    assert!(s.quorate());
    s
}

fn run(v: &mut View, s: &mut Standing, ticks: usize, peers: &[usize], frames: u64) -> Vec<Change> {
    (0..ticks)
        .filter_map(|_| v.tick(s, peers, frames))
        .collect()
}

#[test]
fn a_node_cut_off_from_its_segment_fences_itself_before_the_takeover_timeout() {
    let mut v = View::new(3);
    let mut s = settled(&mut v, &[1, 2]);
    let lost = v.now;
    // Nothing at all arrives any more.
    let changes = run(&mut v, &mut s, 3, &[], 0);
    assert_eq!(changes, vec![Change::Fenced]);
    assert!(v.now - lost < v.timings.heartbeat_timeout);
}

#[test]
fn a_node_whose_segment_still_carries_frames_becomes_a_minority_and_keeps_serving() {
    let mut v = View::new(3);
    let mut s = settled(&mut v, &[1, 2]);
    // The cluster port is cut, but frames (the peers' heartbeats, dropped
    // by a firewall, clients) still arrive on the interface.
    let changes = run(&mut v, &mut s, 4, &[], 3);
    assert_eq!(changes, vec![Change::Minority]);
    assert!(!s.fenced() && !s.quorate());
    // It stays one while frames keep coming.
    assert!(run(&mut v, &mut s, 100, &[], 1).is_empty());
    // A majority again: quorate at once.
    assert_eq!(run(&mut v, &mut s, 1, &[1, 2], 1), vec![Change::Quorate]);
}

#[test]
fn a_minority_whose_segment_falls_silent_fences_after_the_isolation_time() {
    let mut v = View::new(3);
    let mut s = settled(&mut v, &[1, 2]);
    run(&mut v, &mut s, 4, &[], 3);
    let silent = v.now;
    let mut fenced_at = None;
    for _ in 0..100 {
        if v.tick(&mut s, &[], 0) == Some(Change::Fenced) {
            fenced_at = Some(v.now);
            break;
        }
    }
    let after = fenced_at.expect("fenced") - silent;
    assert!(after >= v.timings.isolation - I * 2, "{after:?}");
    assert!(after <= v.timings.isolation + I * 2, "{after:?}");
    // Life again: a minority again.
    assert_eq!(run(&mut v, &mut s, 3, &[], 1), vec![Change::Minority]);
}

#[test]
fn the_last_heartbeats_are_not_a_sign_of_life() {
    // The majority's last heartbeats arrive together with the last frames:
    // growth up to the tick that heard them does not count.
    let mut v = View::new(3);
    let mut s = settled(&mut v, &[1, 2]);
    v.tick(&mut s, &[1, 2], 5);
    let changes = run(&mut v, &mut s, 4, &[], 0);
    assert_eq!(changes, vec![Change::Fenced]);
}

#[test]
fn a_fence_after_a_long_loss_lifts_within_the_resume_hold() {
    let mut v = View::new(3);
    let mut s = settled(&mut v, &[1, 2]);
    run(&mut v, &mut s, 40, &[], 0);
    assert!(s.fenced());
    let back = v.now;
    let mut lifted = None;
    for _ in 0..50 {
        if v.tick(&mut s, &[1, 2], 2) == Some(Change::Quorate) {
            lifted = Some(v.now);
            break;
        }
    }
    let after = lifted.expect("lifted") - back;
    assert!(after <= v.timings.resume_hold + I * 2, "{after:?}");
    assert!(after >= v.timings.resume_hold, "{after:?}");
}

#[test]
fn a_node_that_left_gracefully_does_not_count_toward_the_majority() {
    let mut v = View::new(3);
    let mut s = settled(&mut v, &[1, 2]);
    v.nodes.get_mut(&NodeId::new("n2")).unwrap().leaving = true;
    // n2 is gone; n0 and n1 are two of two counted nodes.
    assert!(run(&mut v, &mut s, 50, &[1], 0).is_empty());
    assert!(s.quorate());
    // Without n1 too, n0 alone is a minority of two (frames still come).
    assert_eq!(run(&mut v, &mut s, 4, &[], 1), vec![Change::Minority]);
}

#[test]
fn forgotten_nodes_do_not_count_toward_the_majority() {
    // Five nodes, n3 and n4 gone for good: hearing only n1, n0 is two of
    // five, a minority (frames still come).
    let mut v = View::new(5);
    let mut s = settled(&mut v, &[1, 2]);
    assert_eq!(run(&mut v, &mut s, 4, &[1], 1), vec![Change::Minority]);
    // Forgotten, they count for nothing: two of three is a majority.
    for n in ["n3", "n4"] {
        let id = NodeId::new(n);
        v.nodes.insert(id.clone(), NodeRecord::tombstone(id, 1));
    }
    assert_eq!(run(&mut v, &mut s, 1, &[1], 1), vec![Change::Quorate]);
    assert!(run(&mut v, &mut s, 50, &[1], 0).is_empty());
    // A node that comes back (a higher incarnation) counts again: two of
    // five once more (n2 has been silent for long: fenced at once, then a
    // minority on the frames that follow).
    let n4 = NodeId::new("n4");
    v.nodes.insert(n4.clone(), NodeRecord::new(n4, 2));
    let changes = run(&mut v, &mut s, 4, &[1], 1);
    assert_eq!(changes.first(), Some(&Change::Fenced), "{changes:?}");
    assert_eq!(s.kind(), Kind::Minority);
}

#[test]
fn a_forgotten_third_node_leaves_a_two_node_cluster_with_its_witness() {
    let mut v = View::new(3);
    let mut s = settled(&mut v, &[1, 2]);
    s.witness.configured = true;
    // Three counted nodes: no witness.
    v.now += I * 4;
    assert!(!s.wants_witness(&v.input()));
    let n2 = NodeId::new("n2");
    v.nodes.insert(n2.clone(), NodeRecord::tombstone(n2, 1));
    // Two counted nodes, the peer silent: probe the gateway.
    assert!(s.wants_witness(&v.input()));
}

#[test]
fn two_nodes_without_a_gateway_need_the_peer() {
    let mut v = View::new(2);
    let mut s = settled(&mut v, &[1]);
    assert_eq!(run(&mut v, &mut s, 4, &[], 0), vec![Change::Fenced]);
    let mut v = View::new(2);
    let mut s = settled(&mut v, &[1]);
    assert_eq!(run(&mut v, &mut s, 4, &[], 2), vec![Change::Minority]);
}

#[test]
fn a_starting_node_stays_fenced_for_the_lead_grace_even_with_life() {
    let mut v = View::new(3);
    let mut s = Standing::starting(v.now, v.timings.rejoin_hold);
    let changes = run(&mut v, &mut s, 30, &[], 2);
    assert!(changes.is_empty(), "{changes:?}");
    assert!(s.fenced());
    // Alone after its grace, with life on the segment: a minority.
    assert_eq!(run(&mut v, &mut s, 60, &[], 2), vec![Change::Minority]);
}

#[test]
fn samples_are_asked_for_only_while_the_majority_is_late() {
    let mut v = View::new(3);
    let s = settled(&mut v, &[1, 2]);
    v.now += I / 2;
    assert!(!s.wants_sample(&v.input()));
    v.now += I;
    assert!(s.wants_sample(&v.input()));
}
