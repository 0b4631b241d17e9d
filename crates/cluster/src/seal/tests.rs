//! Unit tests of [`super`]: sealing, opening, replay windows and drop counting.

use super::*;
use proptest::prelude::*;

const KEY: [u8; 32] = [7; 32];
const OTHER_KEY: [u8; 32] = [8; 32];

fn nonce(n: u64) -> [u8; NONCE_LEN] {
    let mut out = [0u8; NONCE_LEN];
    out[..8].copy_from_slice(&n.to_le_bytes());
    out[8] = 0xa5;
    out
}

fn sealer(incarnation: u64) -> Sealer {
    Sealer::new(&KEY, &NodeId::new("node-a"), incarnation)
}

/// Datagrams with sequences 0..n from one sender.
fn stream(incarnation: u64, n: u64) -> Vec<Vec<u8>> {
    let mut s = sealer(incarnation);
    (0..n)
        .map(|i| s.seal(format!("msg {i}").as_bytes(), nonce(i)).unwrap())
        .collect()
}

#[test]
fn round_trip() {
    let mut s = sealer(3);
    let mut o = Opener::new(&KEY);
    let d = s.seal(b"hello", nonce(1)).unwrap();
    assert_eq!(d.len(), OVERHEAD + 5);
    assert_eq!(&d[..HEADER_LEN], b"FE\x01");
    let opened = o.open(&d).unwrap();
    assert_eq!(
        opened,
        Opened {
            sender_hash: NodeId::new("node-a").stable_hash(),
            incarnation: 3,
            sequence: 0,
            payload: b"hello".to_vec(),
        }
    );
    let d2 = s.seal(b"", nonce(2)).unwrap();
    let opened = o.open(&d2).unwrap();
    assert_eq!((opened.sequence, opened.payload.len()), (1, 0));
    assert_eq!(o.accepted(), 2);
    assert_eq!(o.drops().total(), 0);
}

#[test]
fn ciphertext_hides_the_payload() {
    let mut s = sealer(1);
    let d = s.seal(b"secret-secret-secret", nonce(1)).unwrap();
    assert!(!d.windows(6).any(|w| w == b"secret"));
}

#[test]
fn os_rng_nonces_differ() {
    let mut s = sealer(1);
    let a = s.seal_with_os_rng(b"x").unwrap();
    let b = s.seal_with_os_rng(b"x").unwrap();
    assert_ne!(
        a[HEADER_LEN..HEADER_LEN + NONCE_LEN],
        b[HEADER_LEN..HEADER_LEN + NONCE_LEN]
    );
    let mut o = Opener::new(&KEY);
    assert_eq!(o.open(&a).unwrap().sequence, 0);
    assert_eq!(o.open(&b).unwrap().sequence, 1);
}

#[test]
fn wrong_key_is_bad_seal() {
    let d = sealer(1).seal(b"hello", nonce(1)).unwrap();
    let mut o = Opener::new(&OTHER_KEY);
    assert_eq!(o.open(&d), Err(DropReason::BadSeal));
    assert_eq!(o.drops().bad_seal, 1);
    assert!(o.replay_table().is_empty());
}

#[test]
fn max_payload_fits_and_one_more_byte_is_refused() {
    let mut s = sealer(1);
    let d = s.seal(&[0u8; MAX_PAYLOAD_LEN], nonce(1)).unwrap();
    assert_eq!(d.len(), MAX_DATAGRAM_LEN);
    assert_eq!(
        Opener::new(&KEY).open(&d).unwrap().payload.len(),
        MAX_PAYLOAD_LEN
    );
    assert_eq!(
        s.seal(&[0u8; MAX_PAYLOAD_LEN + 1], nonce(2)),
        Err(SealError::PayloadTooLarge {
            len: MAX_PAYLOAD_LEN + 1,
            max: MAX_PAYLOAD_LEN
        })
    );
    // A refused seal does not consume a sequence number.
    assert_eq!(s.next_sequence(), 1);
}

#[test]
fn oversized_and_short_datagrams_are_counted() {
    let mut o = Opener::new(&KEY);
    assert_eq!(
        o.open(&[0u8; MAX_DATAGRAM_LEN + 1]),
        Err(DropReason::Oversized)
    );
    assert_eq!(o.open(&[]), Err(DropReason::Malformed));
    let d = sealer(1).seal(b"", nonce(1)).unwrap();
    assert_eq!(o.open(&d[..d.len() - 1]), Err(DropReason::Malformed));
    let mut v2 = d.clone();
    v2[2] = 2;
    assert_eq!(o.open(&v2), Err(DropReason::UnsupportedVersion));
    let expected = DropCounters {
        oversized: 1,
        malformed: 2,
        unsupported_version: 1,
        ..DropCounters::default()
    };
    assert_eq!(*o.drops(), expected);
    assert_eq!(o.drops().total(), 4);
    assert!(o.replay_table().is_empty());
    // The precheck agrees, without an opener.
    assert_eq!(precheck(&v2), Err(DropReason::UnsupportedVersion));
    assert_eq!(precheck(&d[..d.len() - 1]), Err(DropReason::Malformed));
    assert_eq!(precheck(&d), Ok(()));
    // The untouched datagram still opens.
    assert!(o.open(&d).is_ok());
}

#[test]
fn identical_datagram_replayed_is_rejected() {
    let d = stream(1, 1).remove(0);
    let mut o = Opener::new(&KEY);
    assert!(o.open(&d).is_ok());
    assert_eq!(o.open(&d), Err(DropReason::Replay));
    assert_eq!(o.open(&d), Err(DropReason::Replay));
    assert_eq!(o.drops().replay, 2);
    assert_eq!(o.accepted(), 1);
}

#[test]
fn out_of_order_within_window_is_accepted_once() {
    let ds = stream(1, 10);
    let mut o = Opener::new(&KEY);
    for i in [9, 3, 0, 5, 1, 2, 8, 4, 7, 6] {
        assert_eq!(o.open(&ds[i]).unwrap().sequence, i as u64);
    }
    for d in &ds {
        assert_eq!(o.open(d), Err(DropReason::Replay));
    }
}

#[test]
fn too_old_sequence_is_rejected() {
    let mut o = Opener::new(&KEY);
    let mut s = sealer(1);
    let first = s.seal(b"0", nonce(0)).unwrap();
    let second = s.seal(b"1", nonce(1)).unwrap();
    assert!(o.open(&second).is_ok());
    // Skip ahead so that sequence 0 falls out of the window (1 is the
    // highest; sequence WINDOW_BITS puts 0 exactly WINDOW_BITS behind).
    let mut skip = Sealer::new(&KEY, &NodeId::new("node-a"), 1);
    skip.next_sequence = WINDOW_BITS;
    let ahead = skip.seal(b"ahead", nonce(2)).unwrap();
    assert!(o.open(&ahead).is_ok());
    let before = o.replay_table().clone();
    assert_eq!(o.open(&first), Err(DropReason::TooOld));
    assert_eq!(o.drops().too_old, 1);
    assert_eq!(*o.replay_table(), before);
}

#[test]
fn oldest_sequence_inside_the_window_is_still_accepted() {
    let mut w = ReplayWindow::new(1, WINDOW_BITS - 1);
    assert_eq!(w.accept(1, 0), Ok(()));
    assert_eq!(w.accept(1, 0), Err(DropReason::Replay));
    assert_eq!(w.accept(1, WINDOW_BITS), Ok(()));
    assert_eq!(w.check(1, 0), Err(DropReason::TooOld));
    assert_eq!(w.check(1, 1), Ok(()));
}

#[test]
fn window_slides_and_forgets_bits_it_reuses() {
    let mut w = ReplayWindow::new(1, 0);
    for s in 1..3 * WINDOW_BITS {
        if s % 3 != 0 {
            assert_eq!(w.accept(1, s), Ok(()), "seq {s}");
        }
    }
    let top = 3 * WINDOW_BITS - 1;
    assert_eq!(w.highest(), top);
    for s in (top - WINDOW_BITS + 1)..=top {
        let want = if s % 3 == 0 {
            Ok(())
        } else {
            Err(DropReason::Replay)
        };
        assert_eq!(w.check(1, s), want, "seq {s}");
    }
    assert_eq!(w.check(1, top - WINDOW_BITS), Err(DropReason::TooOld));
    // A jump beyond the whole window forgets everything in it.
    assert_eq!(w.accept(1, top + 5 * WINDOW_BITS), Ok(()));
    assert_eq!(w.check(1, top + 5 * WINDOW_BITS - 1), Ok(()));
}

#[test]
fn restart_with_higher_incarnation_resets_the_window() {
    let old = stream(1, 5);
    let new = stream(2, 3);
    let mut o = Opener::new(&KEY);
    for d in &old {
        assert!(o.open(d).is_ok());
    }
    // Sequences restart at 0 in the new incarnation.
    for d in &new {
        let opened = o.open(d).unwrap();
        assert_eq!(opened.incarnation, 2);
    }
    let w = o.replay_table().window(sealer(1).sender_hash()).unwrap();
    assert_eq!((w.incarnation(), w.highest()), (2, 2));
    // And the old incarnation is over.
    assert_eq!(o.open(&old[4]), Err(DropReason::StaleIncarnation));
}

#[test]
fn lower_incarnation_is_rejected_and_changes_nothing() {
    let old = stream(4, 1);
    let new = stream(5, 1);
    let mut o = Opener::new(&KEY);
    assert!(o.open(&new[0]).is_ok());
    let before = o.replay_table().clone();
    assert_eq!(o.open(&old[0]), Err(DropReason::StaleIncarnation));
    assert_eq!(o.drops().stale_incarnation, 1);
    assert_eq!(*o.replay_table(), before);
}

#[test]
fn rejected_datagrams_do_not_advance_the_window() {
    let ds = stream(1, 3);
    let mut o = Opener::new(&KEY);
    assert!(o.open(&ds[0]).is_ok());
    let before = o.replay_table().clone();
    // A tampered copy of sequence 2 is dropped ...
    let mut bad = ds[2].clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(o.open(&bad), Err(DropReason::BadSeal));
    // ... as is one under another key and a replay ...
    let foreign = Sealer::new(&OTHER_KEY, &NodeId::new("node-a"), 9)
        .seal(b"x", nonce(0))
        .unwrap();
    assert_eq!(o.open(&foreign), Err(DropReason::BadSeal));
    assert_eq!(o.open(&ds[0]), Err(DropReason::Replay));
    // ... and none of that moved the window:
    assert_eq!(*o.replay_table(), before);
    assert_eq!(o.open(&ds[2]).unwrap().sequence, 2);
    assert_eq!(o.open(&ds[1]).unwrap().sequence, 1);
}

#[test]
fn senders_have_separate_windows() {
    let mut a = Sealer::new(&KEY, &NodeId::new("a"), 1);
    let mut b = Sealer::new(&KEY, &NodeId::new("b"), 1);
    let mut o = Opener::new(&KEY);
    let da = a.seal(b"a", nonce(1)).unwrap();
    let db = b.seal(b"b", nonce(2)).unwrap();
    assert_eq!(o.open(&da).unwrap().sequence, 0);
    assert_eq!(o.open(&db).unwrap().sequence, 0);
    assert_eq!(o.replay_table().len(), 2);
}

#[test]
fn sender_cap_evicts_least_recently_seen() {
    let mut o = Opener::with_max_senders(&KEY, 2);
    let mut a = Sealer::with_sender_hash(&KEY, 1, 1);
    let mut b = Sealer::with_sender_hash(&KEY, 2, 1);
    let mut c = Sealer::with_sender_hash(&KEY, 3, 1);
    let a0 = a.seal(b"", nonce(1)).unwrap();
    assert!(o.open(&a0).is_ok());
    assert!(o.open(&b.seal(b"", nonce(2)).unwrap()).is_ok());
    // a is seen again, so b becomes the least recently seen.
    assert!(o.open(&a.seal(b"", nonce(3)).unwrap()).is_ok());
    assert!(o.open(&c.seal(b"", nonce(4)).unwrap()).is_ok());
    let t = o.replay_table();
    assert_eq!(t.len(), 2);
    assert!(t.window(1).is_some());
    assert!(t.window(2).is_none());
    assert!(t.window(3).is_some());
    // a's window survived: its first datagram is still a replay.
    assert_eq!(o.open(&a0), Err(DropReason::Replay));
}

#[test]
fn exhausted_sequence_is_refused() {
    let mut s = sealer(1);
    s.next_sequence = u64::MAX;
    let d = s.seal(b"last", nonce(1)).unwrap();
    assert_eq!(
        s.seal(b"more", nonce(2)),
        Err(SealError::SequenceExhausted { incarnation: 1 })
    );
    assert_eq!(Opener::new(&KEY).open(&d).unwrap().sequence, u64::MAX);
}

#[test]
fn drop_counters_serialize_with_named_fields() {
    let mut c = DropCounters::default();
    for r in DropReason::ALL {
        c.record(r);
    }
    c.record(DropReason::Replay);
    let v = serde_json::to_value(c).unwrap();
    for r in DropReason::ALL {
        let want = if r == DropReason::Replay { 2 } else { 1 };
        assert_eq!(v[r.as_str()], want, "{}", r.as_str());
        assert_eq!(c.get(r), want);
    }
    assert_eq!(c.total(), 8);
}

proptest! {
    #[test]
    fn any_single_bit_flip_is_dropped(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut s = sealer(1);
        let d = s.seal(&payload, nonce(1)).unwrap();
        let mut flipped = d.clone();
        let i = pos.index(d.len());
        flipped[i] ^= 1 << bit;
        let mut o = Opener::new(&KEY);
        let err = o.open(&flipped).unwrap_err();
        prop_assert!(matches!(
            err,
            DropReason::Malformed | DropReason::UnsupportedVersion | DropReason::BadSeal
        ));
        prop_assert_eq!(o.drops().total(), 1);
        prop_assert!(o.replay_table().is_empty());
        // The original is unaffected by the dropped copy.
        prop_assert_eq!(o.open(&d).unwrap().payload, payload);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_counted(
        bytes in proptest::collection::vec(any::<u8>(), 0..2 * MAX_DATAGRAM_LEN),
        keep_header in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if keep_header && bytes.len() >= HEADER_LEN {
            bytes[..HEADER_LEN].copy_from_slice(&header());
        }
        let mut o = Opener::new(&KEY);
        // Random bytes cannot carry a valid tag.
        let reason = o.open(&bytes).unwrap_err();
        // The precheck drops what fails before decryption, for the same
        // reason, and lets the rest through to fail the seal.
        match precheck(&bytes) {
            Ok(()) => prop_assert_eq!(reason, DropReason::BadSeal),
            Err(r) => prop_assert_eq!(r, reason),
        }
        prop_assert_eq!(o.drops().total(), 1);
        prop_assert!(o.replay_table().is_empty());
    }

    #[test]
    fn truncations_are_dropped(
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        cut in any::<prop::sample::Index>(),
    ) {
        let d = sealer(1).seal(&payload, nonce(1)).unwrap();
        let len = cut.index(d.len());
        let mut o = Opener::new(&KEY);
        prop_assert!(o.open(&d[..len]).is_err());
        prop_assert_eq!(o.drops().total(), 1);
    }

    /// The window agrees with a model that remembers every sequence.
    #[test]
    fn window_matches_model(seqs in proptest::collection::vec(0u64..3000, 1..300)) {
        let mut w: Option<ReplayWindow> = None;
        let mut seen = std::collections::BTreeSet::new();
        for s in seqs {
            let highest = seen.iter().next_back().copied();
            let want = match highest {
                None => Ok(()),
                Some(h) if s > h => Ok(()),
                Some(h) if h - s >= WINDOW_BITS => Err(DropReason::TooOld),
                Some(_) if seen.contains(&s) => Err(DropReason::Replay),
                Some(_) => Ok(()),
            };
            let got = match &mut w {
                None => {
                    w = Some(ReplayWindow::new(1, s));
                    Ok(())
                }
                Some(w) => w.accept(1, s),
            };
            prop_assert_eq!(got, want, "seq {}", s);
            if got.is_ok() {
                seen.insert(s);
            }
        }
    }
}
