//! Property tests for the replicated address list and its hybrid logical clock.

use std::collections::BTreeMap;
use std::net::IpAddr;

use fechter_core::state::{
    AddError, AddressEntry, AddressList, AddressState, Hlc, RemoveError, Stamp,
};
use fechter_core::{AddrSpec, NodeId};
use proptest::prelude::*;

const IPS: [&str; 4] = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"];
const ORIGINS: [&str; 3] = ["a", "b", "c"];
const IFACES: [&str; 2] = ["eth0", "eth1"];

fn ip(i: usize) -> IpAddr {
    IPS[i].parse().unwrap()
}

fn spec(ip_idx: usize, iface_idx: usize, prefix: u8) -> AddrSpec {
    AddrSpec {
        iface: IFACES[iface_idx].to_string(),
        ip: ip(ip_idx),
        prefix,
    }
}

/// Logical counters near zero and near overflow.
fn logical() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..4, (u32::MAX - 2)..=u32::MAX]
}

fn hlc() -> impl Strategy<Value = Hlc> {
    (0u64..6, logical()).prop_map(|(w, l)| Hlc::new(w, l))
}

/// Small ranges so that equal stamps and conflicts are common.
fn stamp() -> impl Strategy<Value = Stamp> {
    (0u64..6, 0u32..3, 0..ORIGINS.len())
        .prop_map(|(w, l, o)| Stamp::new(Hlc::new(w, l), NodeId::new(ORIGINS[o])))
}

/// Mostly well-formed entries (`added <= stamp`), some malformed ones.
fn entry() -> impl Strategy<Value = AddressEntry> {
    (
        0..IPS.len(),
        0..IFACES.len(),
        0u8..=32,
        any::<bool>(),
        stamp(),
        stamp(),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(i, f, p, tomb, s1, s2, well_formed)| {
            let (added, stamp) = if well_formed && s1 > s2 {
                (s2, s1)
            } else {
                (s1, s2)
            };
            AddressEntry {
                spec: spec(i, f, p),
                state: if tomb {
                    AddressState::DoNotAssign
                } else {
                    AddressState::Assignable
                },
                stamp,
                added,
            }
        })
}

fn entries() -> impl Strategy<Value = Vec<AddressEntry>> {
    prop::collection::vec(entry(), 0..12)
}

fn list() -> impl Strategy<Value = AddressList> {
    entries().prop_map(AddressList::from)
}

fn merged(a: &AddressList, b: &AddressList) -> AddressList {
    let mut out = a.clone();
    out.merge(b);
    out
}

proptest! {
    #[test]
    fn merge_is_commutative(a in list(), b in list()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in list(), b in list(), c in list()) {
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent(a in list(), b in list()) {
        let mut self_merged = a.clone();
        prop_assert!(!self_merged.merge(&a));
        prop_assert_eq!(&self_merged, &a);
        let once = merged(&a, &b);
        let mut twice = once.clone();
        prop_assert!(!twice.merge(&b));
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn merge_reports_exactly_whether_it_changed(a in list(), b in list()) {
        let mut m = a.clone();
        let changed = m.merge(&b);
        prop_assert_eq!(changed, m != a);
    }

    /// Applying the same writes in any order (and with duplicates) gives the
    /// same list, the same allocation order and the same digest.
    #[test]
    fn apply_order_does_not_matter(
        (writes, shuffled) in entries().prop_flat_map(|w| {
            let mut doubled = w.clone();
            doubled.extend(w.iter().cloned());
            (Just(w), Just(doubled).prop_shuffle())
        })
    ) {
        let mut x = AddressList::new();
        for w in &writes {
            let news = x.would_change(w);
            let before = x.clone();
            prop_assert_eq!(x.apply(w.clone()), news);
            prop_assert_eq!(news, x != before);
        }
        let mut y = AddressList::new();
        for w in &shuffled {
            y.apply(w.clone());
        }
        prop_assert_eq!(x.assignable(), y.assignable());
        prop_assert_eq!(x.digest(), y.digest());
        prop_assert_eq!(x, y);
    }

    /// Each kept entry is one of the writes for its IP, with the newest stamp
    /// among the well-formed ones; no IP appears without a write.
    #[test]
    fn the_latest_write_wins(writes in entries()) {
        let result = AddressList::from(writes.clone());
        let mut newest: BTreeMap<IpAddr, &Stamp> = BTreeMap::new();
        for w in writes.iter().filter(|w| w.added <= w.stamp) {
            let slot = newest.entry(w.spec.ip).or_insert(&w.stamp);
            if w.stamp > **slot {
                *slot = &w.stamp;
            }
        }
        prop_assert_eq!(result.len(), newest.len());
        for (ip, stamp) in newest {
            let kept = result.get(&ip).unwrap();
            prop_assert_eq!(&kept.stamp, stamp);
            prop_assert!(writes.contains(kept));
        }
    }

    /// Merging never moves an entry to an older version; in particular a
    /// tombstone is never lost to an older entry.
    #[test]
    fn merge_never_goes_back(a in list(), b in list()) {
        let m = merged(&a, &b);
        for e in a.iter().chain(b.iter()) {
            let kept = m.get(&e.spec.ip).unwrap();
            prop_assert!(kept.stamp >= e.stamp);
            if kept.stamp == e.stamp && !e.is_assignable() {
                prop_assert!(!kept.is_assignable());
            }
        }
    }

    #[test]
    fn tombstone_survives_older_entries(
        tomb_stamp in stamp(),
        older in prop::collection::vec(entry(), 0..8),
        ip_idx in 0..IPS.len(),
    ) {
        let mut base = AddressList::new();
        let first = Stamp::new(Hlc::ZERO, NodeId::new("a"));
        let tomb_stamp = Stamp::new(tomb_stamp.hlc.next(1), tomb_stamp.origin);
        base.add(spec(ip_idx, 0, 24), first.clone()).unwrap();
        base.remove(ip(ip_idx), tomb_stamp.clone()).unwrap();
        let tomb = base.get(&ip(ip_idx)).unwrap().clone();
        let other: AddressList = older
            .into_iter()
            .map(|mut e| {
                e.spec.ip = ip(ip_idx);
                e
            })
            .filter(|e| e.stamp < tomb_stamp)
            .collect();
        let mut m = base.clone();
        prop_assert!(!m.merge(&other));
        prop_assert_eq!(m.get(&ip(ip_idx)), Some(&tomb));
        let m2 = merged(&other, &base);
        prop_assert_eq!(m2.get(&ip(ip_idx)), Some(&tomb));
    }

    /// `assignable()` lists exactly the assignable entries, sorted by `added`.
    #[test]
    fn assignable_is_sorted_by_addition(a in list()) {
        let order = a.assignable();
        prop_assert_eq!(order.len(), a.iter().filter(|e| e.is_assignable()).count());
        for pair in order.windows(2) {
            prop_assert!(pair[0] < pair[1]);
        }
        for (added, spec) in &order {
            let e = a.get(&spec.ip).unwrap();
            prop_assert!(e.is_assignable());
            prop_assert_eq!(&e.added, added);
            prop_assert_eq!(&e.spec, spec);
        }
    }

    #[test]
    fn vec_round_trip_is_lossless(a in list()) {
        let v: Vec<AddressEntry> = a.clone().into();
        let mut reversed = v.clone();
        reversed.reverse();
        prop_assert_eq!(AddressList::from(v), a.clone());
        prop_assert_eq!(AddressList::from(reversed), a);
    }

    #[test]
    fn digest_separates_different_lists(a in list(), b in list()) {
        prop_assert_eq!(a == b, a.digest() == b.digest());
        prop_assert_eq!(a.digest().entries, a.len() as u64);
    }
}

// ---------------------------------------------------------------------------
// Hybrid logical clock

proptest! {
    #[test]
    fn tick_moves_forward(h in hlc(), now in 0u64..8) {
        let next = h.next(now);
        prop_assert!(next > h);
        prop_assert!(next.wall_ms >= now);
        prop_assert!(next.wall_ms <= h.wall_ms.max(now) + 1);
    }

    #[test]
    fn observe_passes_both_inputs_or_changes_nothing(
        local in hlc(),
        remote in hlc(),
        now in 0u64..8,
        skew in 0u64..4,
    ) {
        match local.observe(remote, now, skew) {
            Ok(next) => {
                prop_assert!(remote.wall_ms <= now + skew);
                prop_assert!(next > local);
                prop_assert!(next > remote);
                prop_assert!(next.wall_ms >= now);
                let bound = local.wall_ms.max(remote.wall_ms).max(now);
                prop_assert!(next.wall_ms <= bound + 1);
                // Only a logical overflow may spill into the next millisecond.
                if next.wall_ms == bound + 1 {
                    prop_assert_eq!(next.logical, 0);
                    prop_assert!(local.logical == u32::MAX || remote.logical == u32::MAX);
                }
            }
            Err(e) => {
                prop_assert!(remote.wall_ms > now + skew);
                prop_assert_eq!(e.remote_wall_ms, remote.wall_ms);
                prop_assert_eq!(e.now_ms, now);
                prop_assert_eq!(e.max_skew_ms, skew);
            }
        }
    }

    /// Any interleaving of local events and receptions is strictly increasing,
    /// even when the wall clock goes backwards.
    #[test]
    fn clock_never_goes_backwards(
        start in hlc(),
        events in prop::collection::vec((any::<bool>(), hlc(), 0u64..8), 0..30),
    ) {
        let mut clock = start;
        for (receive, remote, now) in events {
            let next = if receive {
                match clock.observe(remote, now, 3) {
                    Ok(n) => n,
                    Err(_) => continue,
                }
            } else {
                clock.next(now)
            };
            prop_assert!(next > clock);
            clock = next;
        }
    }
}

// ---------------------------------------------------------------------------
// Replicas doing local writes concurrently

const MAX_SKEW: u64 = 1_000;

#[derive(Clone)]
struct Replica {
    id: NodeId,
    clock: Hlc,
    list: AddressList,
}

impl Replica {
    fn new(id: &str) -> Replica {
        Replica {
            id: NodeId::new(id),
            clock: Hlc::ZERO,
            list: AddressList::new(),
        }
    }

    fn stamp(&mut self, now: u64) -> Stamp {
        self.clock = self.clock.next(now);
        Stamp::new(self.clock, self.id.clone())
    }

    /// A local add; errors must leave the list unchanged.
    fn add(&mut self, s: AddrSpec, now: u64) -> Result<(), AddError> {
        let before = self.list.clone();
        let stamp = self.stamp(now);
        let r = self.list.add(s, stamp);
        if r.is_err() {
            assert_eq!(self.list, before);
        }
        r
    }

    fn remove(&mut self, ip: IpAddr, now: u64) -> Result<(), RemoveError> {
        let before = self.list.clone();
        let stamp = self.stamp(now);
        let r = self.list.remove(ip, stamp);
        if r.is_err() {
            assert_eq!(self.list, before);
        }
        r
    }

    /// Anti-entropy from `other`: observe its newest stamp, then merge.
    fn pull(&mut self, other: &Replica, now: u64) {
        if let Some(s) = other.list.max_stamp() {
            self.clock = self.clock.observe(s.hlc, now, MAX_SKEW).unwrap();
        }
        self.list.merge(&other.list);
    }
}

fn exchange(r: &mut [Replica; 2], now: u64) {
    let (x, y) = r.split_at_mut(1);
    x[0].pull(&y[0], now);
    y[0].pull(&x[0], now);
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        replica: usize,
        ip: usize,
        iface: usize,
        now: u64,
    },
    Remove {
        replica: usize,
        ip: usize,
        now: u64,
    },
    Sync {
        now: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..2usize, 0..IFACES.len(), 0u64..20)
            .prop_map(|(replica, ip, iface, now)| Op::Add { replica, ip, iface, now }),
        3 => (0..2usize, 0..2usize, 0u64..20)
            .prop_map(|(replica, ip, now)| Op::Remove { replica, ip, now }),
        1 => (0u64..20).prop_map(|now| Op::Sync { now }),
    ]
}

proptest! {
    /// Two replicas add and remove the same few addresses concurrently, with
    /// occasional syncs and skewed clocks; after one exchange they agree, and
    /// every address is in the state of its last successful write.
    #[test]
    fn concurrent_replicas_converge(ops in prop::collection::vec(op(), 0..40)) {
        let mut r = [Replica::new("a"), Replica::new("b")];
        let mut last: BTreeMap<IpAddr, (Stamp, AddressState, AddrSpec)> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Add { replica, ip: i, iface, now } => {
                    let s = spec(i, iface, 24);
                    if r[replica].add(s.clone(), now).is_ok() {
                        let st = Stamp::new(r[replica].clock, r[replica].id.clone());
                        let slot = last.entry(ip(i)).or_insert((st.clone(), AddressState::Assignable, s.clone()));
                        if st >= slot.0 {
                            *slot = (st, AddressState::Assignable, s);
                        }
                    }
                }
                Op::Remove { replica, ip: i, now } => {
                    if r[replica].remove(ip(i), now).is_ok() {
                        let st = Stamp::new(r[replica].clock, r[replica].id.clone());
                        let kept = r[replica].list.get(&ip(i)).unwrap().spec.clone();
                        let slot = last.get_mut(&ip(i)).unwrap();
                        if st > slot.0 {
                            *slot = (st, AddressState::DoNotAssign, kept);
                        }
                    }
                }
                Op::Sync { now } => exchange(&mut r, now),
            }
        }
        exchange(&mut r, 20);
        prop_assert_eq!(&r[0].list, &r[1].list);
        prop_assert_eq!(r[0].list.assignable(), r[1].list.assignable());
        prop_assert_eq!(r[0].list.len(), last.len());
        for (ip, (stamp, state, spec)) in last {
            let e = r[0].list.get(&ip).unwrap();
            prop_assert_eq!(&e.stamp, &stamp);
            prop_assert_eq!(e.state, state);
            prop_assert_eq!(&e.spec, &spec);
        }
        // After the exchange, a new local write on either replica supersedes
        // everything (the clocks observed all stamps).
        let newest = r[0].list.max_stamp().cloned();
        let s = r[1].stamp(0);
        prop_assert!(newest.is_none_or(|n| s > n));
    }

    /// The classic conflict: both replicas know an address; one removes it
    /// while the other removes and re-adds it under another interface. Both
    /// end with the write of the higher stamp.
    #[test]
    fn concurrent_remove_and_readd_converge(
        base_now in 0u64..10,
        now_a in 0u64..20,
        now_b1 in 0u64..20,
        now_b2 in 0u64..20,
        a_first in any::<bool>(),
    ) {
        let mut r = [Replica::new("a"), Replica::new("b")];
        let ip0 = ip(0);
        r[0].add(spec(0, 0, 24), base_now).unwrap();
        exchange(&mut r, base_now);
        r[0].remove(ip0, now_a).unwrap();
        let a_stamp = r[0].list.get(&ip0).unwrap().stamp.clone();
        r[1].remove(ip0, now_b1).unwrap();
        r[1].add(spec(0, 1, 24), now_b2).unwrap();
        let b_stamp = r[1].list.get(&ip0).unwrap().stamp.clone();
        if a_first {
            exchange(&mut r, 20);
        } else {
            r.swap(0, 1);
            exchange(&mut r, 20);
        }
        prop_assert_eq!(&r[0].list, &r[1].list);
        let e = r[0].list.get(&ip0).unwrap();
        if a_stamp > b_stamp {
            prop_assert_eq!(e.state, AddressState::DoNotAssign);
            prop_assert_eq!(&e.stamp, &a_stamp);
        } else {
            prop_assert_eq!(e.state, AddressState::Assignable);
            prop_assert_eq!(&e.spec, &spec(0, 1, 24));
            prop_assert_eq!(&e.added, &b_stamp);
        }
    }

    /// Both replicas add the same IP concurrently under different interfaces:
    /// one spec wins everywhere, and it is the one with the higher stamp.
    #[test]
    fn concurrent_adds_of_one_ip_converge(now_a in 0u64..10, now_b in 0u64..10) {
        let mut r = [Replica::new("a"), Replica::new("b")];
        r[0].add(spec(1, 0, 24), now_a).unwrap();
        r[1].add(spec(1, 1, 32), now_b).unwrap();
        let sa = r[0].list.get(&ip(1)).unwrap().stamp.clone();
        let sb = r[1].list.get(&ip(1)).unwrap().stamp.clone();
        exchange(&mut r, 10);
        prop_assert_eq!(&r[0].list, &r[1].list);
        let winner = if sa > sb { spec(1, 0, 24) } else { spec(1, 1, 32) };
        prop_assert_eq!(&r[0].list.get(&ip(1)).unwrap().spec, &winner);
        prop_assert_eq!(r[0].list.assignable().len(), 1);
    }
}
