//! Unit tests of the inbox: lanes, rates, members, the filter, the reader.

use super::*;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([198, 18, 0, last], 4573))
}

const SMALL: Limits = Limits {
    members: 6,
    per_member: 3,
    strangers: 4,
    per_stranger: 2,
    stranger_rate: 1_000,
    stranger_burst: 100,
};

/// Members are read first whatever came before them; each lane is
/// bounded in all and per source, so one flooding stranger keeps room
/// for another, and strangers never take a member's room.
#[test]
fn members_first_bounded_in_all_and_per_source() {
    let mut inbox = Inbox::new(SMALL);
    let (m1, m2, s1, s2, s3) = (addr(10), addr(11), addr(100), addr(101), addr(102));
    // A flooding stranger gets its share, no more.
    assert_eq!(inbox.push(s1, b"s1a", false), Ok(()));
    assert_eq!(inbox.push(s1, b"s1b", false), Ok(()));
    for _ in 0..100 {
        assert_eq!(inbox.push(s1, b"junk", false), Err(Crowded::Stranger));
    }
    // Another stranger (a node joining) still gets in.
    assert_eq!(inbox.push(s2, b"s2", false), Ok(()));
    assert_eq!(inbox.push(s3, b"s3a", false), Ok(()));
    // The strangers' lane is full in all now.
    assert_eq!(inbox.push(s3, b"s3b", false), Err(Crowded::Stranger));
    // Members are not crowded out by any of that.
    assert_eq!(inbox.push(m1, b"m1a", true), Ok(()));
    assert_eq!(inbox.push(m2, b"m2a", true), Ok(()));
    assert_eq!(inbox.push(m1, b"m1b", true), Ok(()));
    assert_eq!(inbox.push(m1, b"m1c", true), Ok(()));
    assert_eq!(inbox.push(m1, b"m1d", true), Err(Crowded::Member));
    assert_eq!(inbox.len(), (4, 4));
    assert!(inbox.has_members());
    let t = Instant::now();
    let order: Vec<(SocketAddr, Vec<u8>)> = std::iter::from_fn(|| inbox.pop(t))
        .map(|(a, b)| (a, b.into_vec()))
        .collect();
    let want: Vec<(SocketAddr, Vec<u8>)> = [
        (m1, &b"m1a"[..]),
        (m2, b"m2a"),
        (m1, b"m1b"),
        (m1, b"m1c"),
        (s1, b"s1a"),
        (s1, b"s1b"),
        (s2, b"s2"),
        (s3, b"s3a"),
    ]
    .into_iter()
    .map(|(a, b)| (a, b.to_vec()))
    .collect();
    assert_eq!(order, want);
    // Read, the shares are free again.
    assert!(!inbox.has_members());
    assert_eq!(inbox.push(s1, b"again", false), Ok(()));
    assert_eq!(inbox.push(m1, b"again", true), Ok(()));
    assert_eq!(inbox.len(), (1, 1));
    assert!(inbox.strangers.per_source.len() == 1 && inbox.members.per_source.len() == 1);
}

/// Strangers' datagrams are handed out at the rate, members' at once;
/// what waits for the rate keeps its place.
#[test]
fn strangers_are_handed_out_at_a_bounded_rate() {
    let limits = Limits {
        stranger_rate: 100,
        stranger_burst: 2,
        ..Limits::DEFAULT
    };
    let mut inbox = Inbox::new(limits);
    let t = Instant::now();
    for i in 0..5u8 {
        inbox.push(addr(100 + i), &[i], false).unwrap();
    }
    let got = |inbox: &mut Inbox, at| inbox.pop(at).map(|(_, b)| b[0]);
    assert_eq!(got(&mut inbox, t), Some(0));
    assert_eq!(got(&mut inbox, t), Some(1));
    assert_eq!(got(&mut inbox, t), None, "the burst is spent");
    inbox.push(addr(10), b"\x63", true).unwrap();
    assert_eq!(got(&mut inbox, t), Some(0x63), "a member's is not held");
    let ms = |n| t + Duration::from_millis(n);
    assert_eq!(got(&mut inbox, ms(5)), None, "half a token");
    assert_eq!(got(&mut inbox, ms(10)), Some(2));
    // A long pause earns the burst, no more.
    assert_eq!(got(&mut inbox, ms(10_000)), Some(3));
    assert_eq!(got(&mut inbox, ms(10_000)), Some(4));
    inbox.push(addr(100), &[5], false).unwrap();
    assert_eq!(got(&mut inbox, ms(10_000)), None);
    assert_eq!(inbox.len(), (0, 1));
}

#[test]
fn an_address_sent_to_is_a_members_for_a_while() {
    let mut known = Known::default();
    let t = Instant::now();
    assert!(!known.contains(&addr(10), t));
    known.note(addr(10), t);
    assert!(known.contains(&addr(10), t + KNOWN_FOR));
    assert!(!known.contains(&addr(10), t + KNOWN_FOR + Duration::from_millis(1)));
    assert!(!known.contains(&addr(11), t));
    // Bounded: the oldest goes first.
    for i in 0..MAX_KNOWN as u32 + 10 {
        let a = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 + i), 1));
        known.note(a, t + Duration::from_micros(u64::from(i)));
    }
    assert_eq!(known.at.len(), MAX_KNOWN);
    assert!(!known.contains(&addr(10), t));
}

#[test]
fn the_kernels_drop_count_adds_up_across_its_wrap() {
    let d = InboxDrops::default();
    for raw in [10, 1_500_000_000, 3_000_000_000, u32::MAX - 5] {
        d.kernel_count(raw);
    }
    assert_eq!(d.kernel.load(Ordering::Relaxed), u64::from(u32::MAX - 5));
    // Wraps: 5 + 1 + 4 more.
    d.kernel_count(4);
    assert_eq!(d.kernel.load(Ordering::Relaxed), u64::from(u32::MAX) + 5);
    // An older count read out of order adds nothing.
    d.kernel_count(2);
    assert_eq!(d.kernel.load(Ordering::Relaxed), u64::from(u32::MAX) + 5);
}
