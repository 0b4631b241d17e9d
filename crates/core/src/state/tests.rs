//! Unit tests of [`super`]: stamps, the HLC and the address list.

use super::*;

fn spec(iface: &str, ip: &str, prefix: u8) -> AddrSpec {
    AddrSpec {
        iface: iface.to_string(),
        ip: ip.parse().unwrap(),
        prefix,
    }
}

fn st(wall: u64, logical: u32, origin: &str) -> Stamp {
    Stamp::new(Hlc::new(wall, logical), NodeId::new(origin))
}

#[test]
fn next_uses_wall_clock_when_it_moves() {
    assert_eq!(Hlc::new(10, 5).next(20), Hlc::new(20, 0));
    assert_eq!(Hlc::new(10, 5).next(10), Hlc::new(10, 6));
    assert_eq!(Hlc::new(10, 5).next(3), Hlc::new(10, 6));
}

#[test]
fn logical_overflow_saturates_into_next_millisecond() {
    assert_eq!(Hlc::new(10, u32::MAX).next(10), Hlc::new(11, 0));
    let got = Hlc::new(10, u32::MAX)
        .observe(Hlc::new(10, 2), 5, 100)
        .unwrap();
    assert_eq!(got, Hlc::new(11, 0));
    // The unreachable top of the range stays put instead of panicking.
    let top = Hlc::new(u64::MAX, u32::MAX);
    assert_eq!(top.next(0), top);
}

#[test]
fn observe_follows_the_hlc_receive_rules() {
    // Remote ahead of local and of now: take its wall, bump its counter.
    assert_eq!(
        Hlc::new(10, 7).observe(Hlc::new(12, 3), 11, 100).unwrap(),
        Hlc::new(12, 4)
    );
    // Both at the same wall time: past both counters.
    assert_eq!(
        Hlc::new(12, 7).observe(Hlc::new(12, 3), 11, 100).unwrap(),
        Hlc::new(12, 8)
    );
    // Local ahead.
    assert_eq!(
        Hlc::new(13, 1).observe(Hlc::new(12, 3), 11, 100).unwrap(),
        Hlc::new(13, 2)
    );
    // Wall clock ahead of both: fresh millisecond.
    assert_eq!(
        Hlc::new(13, 1).observe(Hlc::new(12, 3), 20, 100).unwrap(),
        Hlc::new(20, 0)
    );
}

#[test]
fn observe_refuses_a_clock_too_far_ahead() {
    let local = Hlc::new(1_000, 3);
    let err = local.observe(Hlc::new(1_501, 0), 1_000, 500).unwrap_err();
    assert_eq!(
        err,
        ClockSkewError {
            remote_wall_ms: 1_501,
            now_ms: 1_000,
            max_skew_ms: 500
        }
    );
    // Exactly at the limit is accepted.
    assert_eq!(
        local.observe(Hlc::new(1_500, 0), 1_000, 500).unwrap(),
        Hlc::new(1_500, 1)
    );
    // No overflow when now + skew exceeds u64::MAX.
    assert!(local.observe(Hlc::new(u64::MAX, 0), 10, u64::MAX).is_ok());
}

#[test]
fn add_refuses_an_assignable_ip_under_any_spec() {
    let mut list = AddressList::new();
    list.add(spec("eth0", "192.0.2.1", 24), st(1, 0, "a"))
        .unwrap();
    let before = list.clone();
    let err = list
        .add(spec("eth1", "192.0.2.1", 32), st(2, 0, "a"))
        .unwrap_err();
    assert_eq!(
        err,
        AddError::AlreadyPresent {
            existing: spec("eth0", "192.0.2.1", 24)
        }
    );
    assert_eq!(list, before);
}

#[test]
fn stale_local_writes_change_nothing() {
    let mut list = AddressList::new();
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    list.add(spec("eth0", "192.0.2.1", 24), st(5, 0, "a"))
        .unwrap();
    let before = list.clone();
    assert_eq!(
        list.remove(ip, st(5, 0, "a")),
        Err(RemoveError::StaleStamp {
            stamp: st(5, 0, "a"),
            current: st(5, 0, "a")
        })
    );
    assert_eq!(list, before);
    list.remove(ip, st(6, 0, "a")).unwrap();
    let before = list.clone();
    assert!(matches!(
        list.add(spec("eth0", "192.0.2.1", 24), st(4, 0, "b")),
        Err(AddError::StaleStamp { .. })
    ));
    assert_eq!(list, before);
}

#[test]
fn remove_leaves_a_tombstone_and_refuses_twice() {
    let mut list = AddressList::new();
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        list.remove(ip, st(1, 0, "a")),
        Err(RemoveError::UnknownAddress { ip })
    );
    list.add(spec("eth0", "2001:db8::1", 64), st(2, 0, "a"))
        .unwrap();
    list.remove(ip, st(3, 0, "b")).unwrap();
    let tomb = list.get(&ip).unwrap();
    assert_eq!(tomb.state, AddressState::DoNotAssign);
    assert_eq!(tomb.stamp, st(3, 0, "b"));
    assert_eq!(tomb.added, st(2, 0, "a"));
    assert_eq!(list.len(), 1);
    assert!(list.assignable().is_empty());
    let before = list.clone();
    assert_eq!(
        list.remove(ip, st(4, 0, "a")),
        Err(RemoveError::UnknownAddress { ip })
    );
    assert_eq!(list, before);
}

#[test]
fn readding_goes_to_the_end_of_the_order() {
    let mut list = AddressList::new();
    let first = spec("eth0", "192.0.2.1", 24);
    let second = spec("eth0", "192.0.2.2", 24);
    list.add(first.clone(), st(1, 0, "a")).unwrap();
    list.add(second.clone(), st(2, 0, "b")).unwrap();
    let order: Vec<_> = list.assignable().into_iter().map(|(_, s)| s).collect();
    assert_eq!(order, vec![first.clone(), second.clone()]);
    list.remove(first.ip, st(3, 0, "a")).unwrap();
    list.add(first.clone(), st(4, 0, "a")).unwrap();
    let order: Vec<_> = list.assignable().into_iter().map(|(_, s)| s).collect();
    assert_eq!(order, vec![second, first]);
}

#[test]
fn equal_stamps_resolve_to_the_tombstone() {
    let live = AddressEntry {
        spec: spec("eth0", "192.0.2.1", 24),
        state: AddressState::Assignable,
        stamp: st(3, 0, "a"),
        added: st(3, 0, "a"),
    };
    let tomb = AddressEntry {
        state: AddressState::DoNotAssign,
        ..live.clone()
    };
    let mut x = AddressList::new();
    assert!(x.apply(live.clone()));
    assert!(x.apply(tomb.clone()));
    let mut y = AddressList::new();
    assert!(y.apply(tomb.clone()));
    assert!(!y.apply(live));
    assert_eq!(x, y);
    assert_eq!(x.get(&tomb.ip()), Some(&tomb));
}

#[test]
fn malformed_entries_are_ignored() {
    let mut list = AddressList::new();
    let bad = AddressEntry {
        spec: spec("eth0", "192.0.2.1", 24),
        state: AddressState::Assignable,
        stamp: st(3, 0, "a"),
        added: st(4, 0, "a"),
    };
    assert!(!list.apply(bad.clone()));
    assert!(list.is_empty());
    assert!(AddressList::from(vec![bad]).is_empty());
}

#[test]
fn digest_tracks_content() {
    let mut a = AddressList::new();
    let empty = a.digest();
    assert_eq!(empty.entries, 0);
    a.add(spec("eth0", "192.0.2.1", 24), st(1, 0, "a")).unwrap();
    let one = a.digest();
    assert_ne!(one, empty);
    let mut b = AddressList::new();
    b.add(spec("eth0", "192.0.2.1", 24), st(1, 0, "a")).unwrap();
    assert_eq!(b.digest(), one);
    // Same ip and stamp, other prefix: different digest.
    let mut c = AddressList::new();
    c.add(spec("eth0", "192.0.2.1", 25), st(1, 0, "a")).unwrap();
    assert_ne!(c.digest(), one);
    a.remove("192.0.2.1".parse().unwrap(), st(2, 0, "a"))
        .unwrap();
    assert_ne!(a.digest(), one);
    assert_eq!(a.digest().entries, 1);
}

#[test]
fn max_stamp_is_the_newest_write() {
    let mut list = AddressList::new();
    assert_eq!(list.max_stamp(), None);
    list.add(spec("eth0", "192.0.2.2", 24), st(7, 1, "b"))
        .unwrap();
    list.add(spec("eth0", "192.0.2.1", 24), st(3, 0, "a"))
        .unwrap();
    assert_eq!(list.max_stamp(), Some(&st(7, 1, "b")));
    list.remove("192.0.2.1".parse().unwrap(), st(9, 0, "a"))
        .unwrap();
    assert_eq!(list.max_stamp(), Some(&st(9, 0, "a")));
}

#[test]
fn vec_round_trip_preserves_the_list() {
    let mut list = AddressList::new();
    list.add(spec("eth0", "192.0.2.1", 24), st(1, 0, "a"))
        .unwrap();
    list.add(spec("eth1", "2001:db8::5", 64), st(2, 0, "b"))
        .unwrap();
    list.remove("192.0.2.1".parse().unwrap(), st(3, 0, "b"))
        .unwrap();
    let entries: Vec<AddressEntry> = list.clone().into();
    assert_eq!(entries, list.entries());
    assert_eq!(AddressList::from(entries), list);
}
