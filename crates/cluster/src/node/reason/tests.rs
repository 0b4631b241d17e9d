//! Unit tests of [`super`]: every reason as decided, its text, and the
//! text read back.

use std::collections::BTreeSet;

use fechter_core::alloc::{Allocation, Placement};
use fechter_core::{AddrSpec, NodeId};

use super::*;

fn alloc(entries: &[(&AddrSpec, &str, Option<&str>, Option<&str>)]) -> Allocation {
    let mut a = Allocation::default();
    for (s, h, sb, from) in entries {
        a.placements.insert(
            (*s).clone(),
            Placement {
                holder: NodeId::new(*h),
                standby: sb.map(NodeId::new),
                handoff_from: from.map(NodeId::new),
            },
        );
    }
    a
}

#[test]
fn reasons_name_takeovers_hand_offs_and_fences() {
    let s: AddrSpec = "eth0:198.51.100.10/24".parse().unwrap();
    let me = NodeId::new("a");
    let none = BTreeSet::new();
    let b: BTreeSet<NodeId> = [NodeId::new("b")].into();
    let before = alloc(&[(&s, "b", Some("a"), None)]);
    let mine = alloc(&[(&s, "a", None, None)]);
    assert_eq!(
        acquire(&s, &me, &before, &mine, &b, false).to_string(),
        "takeover from b"
    );
    assert_eq!(
        acquire(&s, &me, &before, &mine, &none, false).to_string(),
        "moved from b"
    );
    let handed = alloc(&[(&s, "a", Some("b"), Some("b"))]);
    assert_eq!(
        acquire(&s, &me, &before, &handed, &none, false).to_string(),
        "hand-off from b"
    );
    let empty = Allocation::default();
    assert_eq!(
        acquire(&s, &me, &empty, &mine, &none, false).to_string(),
        "assigned"
    );
    assert!(
        acquire(&s, &me, &mine, &mine, &none, true)
            .to_string()
            .starts_with("restored")
    );

    let kept = Releasing {
        assignable: true,
        ..Releasing::default()
    };
    let giving = alloc(&[(&s, "b", Some("a"), Some("a"))]);
    let given = alloc(&[(&s, "b", Some("a"), None)]);
    assert_eq!(
        release(&s, &me, &giving, &given, kept).to_string(),
        "hand-off to b"
    );
    assert_eq!(
        release(
            &s,
            &me,
            &mine,
            &empty,
            Releasing {
                fenced: true,
                ..kept
            }
        )
        .to_string(),
        "fence: no quorum"
    );
    assert_eq!(
        release(&s, &me, &mine, &empty, Releasing::default()).to_string(),
        "address removed"
    );
    let taken = alloc(&[(&s, "b", None, None)]);
    assert_eq!(
        release(&s, &me, &mine, &taken, kept).to_string(),
        "taken over by b"
    );
    assert_eq!(
        release(&s, &me, &mine, &given, kept).to_string(),
        "moved to b"
    );
    let leaving = Releasing {
        leaving: true,
        ..kept
    };
    assert_eq!(
        release(&s, &me, &giving, &given, leaving).to_string(),
        "hand-off to b",
        "a leaving node that hands off says so"
    );
    let orphaned = alloc(&[(&s, "gone", None, None)]);
    assert_eq!(
        release(&s, &me, &mine, &orphaned, leaving).to_string(),
        "shutdown",
        "a leaving node that hands off to nobody says it stops"
    );
}

#[test]
fn every_reason_reads_back_from_its_text() {
    let b = || NodeId::new("b-1:x");
    let all = [
        Reason::Assigned,
        Reason::MovedFrom(b()),
        Reason::TakeoverFrom(b()),
        Reason::HandOffFrom(b()),
        Reason::Restored,
        Reason::HandOffTo(b()),
        Reason::TakenOverBy(b()),
        Reason::MovedTo(b()),
        Reason::StaleCopy,
        Reason::NoNodeMayHold,
        Reason::AddressRemoved,
        Reason::Fenced,
        Reason::Shutdown,
        Reason::Conflict {
            mac: "02:00:00:00:00:01".into(),
        },
    ];
    for r in all {
        let text = r.to_string();
        assert_eq!(text.parse::<Reason>(), Ok(r.clone()), "{text}");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, format!("{text:?}"));
        assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r);
    }
    for bad in ["", "moved to ", "takeover from", "whatever", "conflict: x"] {
        assert!(bad.parse::<Reason>().is_err(), "{bad:?}");
    }
    assert!(Reason::HandOffTo(b()).is_handoff() && Reason::HandOffFrom(b()).is_handoff());
    assert!(!Reason::MovedTo(b()).is_handoff());
}
