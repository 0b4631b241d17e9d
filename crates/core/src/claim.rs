//! The wire as the lock: who may put an address on its segment.
//!
//! The kernel of every machine that has an address answers ARP probes (and
//! IPv6 duplicate-address-detection solicitations) for it, whether or not an
//! agent runs there. So the segment itself tells whether an address is
//! served: a probe (RFC 5227 §2.1.1: sender IP 0.0.0.0, target the address;
//! RFC 4862 §5.4.2 for IPv6) is answered by every machine that holds it, and
//! only by them. These are the pure rules built on that; the shell sends the
//! probes and reports what it heard, the engine decides whether this node
//! may serve at all (see [`Standing`]).
//!
//! 1. [`verdict`]: an address is **free** once probes have gone unanswered
//!    for a whole window; **served** while an answer from another machine is
//!    recent; **unknown** in between. A node installs an address it does not
//!    have only when it is free (a planned hand-off excepted: its giver keeps
//!    it on purpose until the receiver has it).
//! 2. [`orphans_to_live`]: a node that hears no majority may still serve
//!    (the last machine standing): the addresses of the nodes it no longer
//!    hears go to their standby, or, if that is unheard too, to the least
//!    loaded node it hears; nothing held by a heard node moves.
//! 3. [`on_conflict`]: while holding, another machine answering for the same
//!    address is a conflict. A node that hears a majority keeps the address
//!    and defends it once (RFC 5227 §2.4 (b): one announcement, at most once
//!    per defend interval, no war); a node that hears no majority yields at
//!    once. At most one side of a partition hears a majority, so at most one
//!    side keeps; a conflict with a machine that is no fechter node is
//!    reported and defended the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Allocation, NodeId};

/// RFC 5227 §1.1 `DEFEND_INTERVAL`: at most one defending announcement per
/// address in this time.
pub const DEFEND_INTERVAL: Duration = Duration::from_secs(10);

/// What the wire says of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Probes went unanswered for the whole window: nobody serves it.
    Free,
    /// Another machine answered recently (its MAC address).
    Served { by: [u8; 6] },
    /// Not enough probing yet to tell.
    Unknown,
}

/// What a node knows from probing one address. Times are durations before
/// *now*, so the rule needs no clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probing {
    /// Probes sent since the last answer (or since probing began).
    pub unanswered: u32,
    /// How long ago the first of those unanswered probes was sent.
    pub first_unanswered: Option<Duration>,
    /// How long ago the newest probe was sent.
    pub last_sent: Option<Duration>,
    /// The newest answer from another machine: how long ago, and its MAC.
    pub last_answer: Option<(Duration, [u8; 6])>,
}

/// The probing window: how long probes must go unanswered, and the least
/// number of them (one lost probe must not make an address look free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub quiet: Duration,
    pub probes: u32,
    /// How long an answer keeps an address served.
    pub answer_holds: Duration,
}

/// The verdict on an address from what probing it showed (rule 1).
pub fn verdict(p: &Probing, w: &Window) -> Verdict {
    match (p.first_unanswered, p.last_answer) {
        (Some(first), _) if first >= w.quiet && p.unanswered >= w.probes => Verdict::Free,
        (_, Some((ago, by))) if ago < w.answer_holds => Verdict::Served { by },
        _ => Verdict::Unknown,
    }
}

/// This node's standing in the cluster, as the engine decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// Hears a majority: leads, publishes, serves as the table says.
    Quorate,
    /// Hears no majority but its segment shows signs of life: serves what
    /// the last table (plus takeovers) gives it and what no heard node
    /// holds, only where the wire shows nobody else serves it; never leads.
    Minority,
    /// Hears no majority and nothing on its segment: it may be the one cut
    /// off, so it holds nothing.
    Fenced,
}

/// What to do about another machine answering for an address this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConflictAction {
    /// Keep it and announce once (at most once per [`DEFEND_INTERVAL`]).
    Defend,
    /// Keep it; a defence was sent less than a defend interval ago.
    Keep,
    /// Remove it at once and probe again before taking it back.
    Yield,
}

/// Rule 3: a node that hears a majority keeps and defends; any other yields.
/// `last_defence`: how long ago this node last defended this address.
pub fn on_conflict(standing: Standing, last_defence: Option<Duration>) -> ConflictAction {
    match standing {
        Standing::Quorate if last_defence.is_some_and(|d| d < DEFEND_INTERVAL) => {
            ConflictAction::Keep
        }
        Standing::Quorate => ConflictAction::Defend,
        Standing::Minority | Standing::Fenced => ConflictAction::Yield,
    }
}

/// Rule 2: what a node that hears no majority serves. Every placement whose
/// holder is in `live` (this node and the peers it hears) stays; the others
/// go to their standby when that is live, else to the live node with the
/// fewest addresses so far (ties to the lowest tie key), in address order.
/// `usable(node, spec)` says whether a node can hold a spec at all (its
/// interface). `unplaced`: assignable addresses the table does not place
/// (added after it was published). Hand-offs are dropped: no giver is heard
/// to confirm.
pub fn orphans_to_live(
    alloc: &Allocation,
    unplaced: impl IntoIterator<Item = crate::AddrSpec>,
    live: &BTreeSet<NodeId>,
    usable: impl Fn(&NodeId, &crate::AddrSpec) -> bool,
) -> Allocation {
    let mut load: BTreeMap<&NodeId, usize> = live.iter().map(|n| (n, 0)).collect();
    for p in alloc.placements.values() {
        if let Some(c) = load.get_mut(&p.holder) {
            *c += 1;
        }
    }
    let mut out = alloc.clone();
    // Addresses the table does not place yet (added since it was
    // published): orphans with no standby.
    let nobody = NodeId::new("");
    for spec in unplaced {
        out.placements
            .entry(spec)
            .or_insert_with(|| crate::Placement {
                holder: nobody.clone(),
                standby: None,
                handoff_from: None,
            });
    }
    for (spec, p) in out.placements.iter_mut() {
        p.handoff_from = None;
        if live.contains(&p.holder) {
            continue;
        }
        let next = p
            .standby
            .clone()
            .filter(|s| live.contains(s) && usable(s, spec))
            .or_else(|| {
                load.iter()
                    .filter(|(n, _)| usable(n, spec))
                    .min_by(|(a, ca), (b, cb)| ca.cmp(cb).then(a.tie_key().cmp(&b.tie_key())))
                    .map(|(n, _)| (*n).clone())
            });
        match next {
            Some(n) => {
                if let Some(c) = load.get_mut(&n) {
                    *c += 1;
                }
                p.holder = n;
                p.standby = None;
            }
            None => {
                // Nobody heard can use it: it stays with its (unheard)
                // holder, which this node never acts on.
            }
        }
    }
    out.placements.retain(|_, p| p.holder != nobody);
    out
}

/// A MAC address as claims, logs and status show it: `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddrSpec, Placement};

    const W: Window = Window {
        quiet: Duration::from_millis(30),
        probes: 2,
        answer_holds: Duration::from_millis(200),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn free_only_after_the_whole_window_and_enough_probes() {
        let mut p = Probing {
            unanswered: 1,
            first_unanswered: Some(ms(40)),
            last_sent: Some(ms(40)),
            last_answer: None,
        };
        assert_eq!(verdict(&p, &W), Verdict::Unknown, "one probe is not enough");
        p.unanswered = 2;
        assert_eq!(verdict(&p, &W), Verdict::Free);
        p.first_unanswered = Some(ms(29));
        assert_eq!(verdict(&p, &W), Verdict::Unknown, "window not over");
    }

    #[test]
    fn a_recent_answer_means_served_until_the_window_passes_unanswered() {
        let mac = [2, 0, 0, 0, 0, 1];
        let mut p = Probing {
            unanswered: 1,
            first_unanswered: Some(ms(10)),
            last_sent: Some(ms(10)),
            last_answer: Some((ms(12), mac)),
        };
        assert_eq!(verdict(&p, &W), Verdict::Served { by: mac });
        // The holder went away: probes since its last answer go unanswered.
        p.unanswered = 3;
        p.first_unanswered = Some(ms(45));
        p.last_answer = Some((ms(47), mac));
        assert_eq!(verdict(&p, &W), Verdict::Free);
    }

    #[test]
    fn never_probed_is_unknown() {
        assert_eq!(verdict(&Probing::default(), &W), Verdict::Unknown);
    }

    #[test]
    fn the_quorate_side_defends_once_per_interval_and_the_minority_yields() {
        assert_eq!(on_conflict(Standing::Quorate, None), ConflictAction::Defend);
        assert_eq!(
            on_conflict(Standing::Quorate, Some(ms(500))),
            ConflictAction::Keep
        );
        assert_eq!(
            on_conflict(Standing::Quorate, Some(DEFEND_INTERVAL)),
            ConflictAction::Defend
        );
        assert_eq!(on_conflict(Standing::Minority, None), ConflictAction::Yield);
        assert_eq!(on_conflict(Standing::Fenced, None), ConflictAction::Yield);
    }

    fn spec(i: u8) -> AddrSpec {
        format!("eth0:198.18.0.{i}/24").parse().unwrap()
    }

    fn place(holder: &str, standby: Option<&str>) -> Placement {
        Placement {
            holder: NodeId::new(holder),
            standby: standby.map(NodeId::new),
            handoff_from: None,
        }
    }

    #[test]
    fn orphans_go_to_a_live_standby_else_the_least_loaded_live_node() {
        let alloc = Allocation {
            placements: [
                (spec(1), place("a", Some("b"))),
                (spec(2), place("b", Some("a"))),
                (spec(3), place("c", Some("a"))),
                (spec(4), place("a", Some("c"))),
            ]
            .into_iter()
            .collect(),
        };
        let live: BTreeSet<NodeId> = [NodeId::new("c")].into_iter().collect();
        let out = orphans_to_live(&alloc, [], &live, |_, _| true);
        for p in out.placements.values() {
            assert_eq!(p.holder, NodeId::new("c"));
        }
        let live: BTreeSet<NodeId> = ["b", "c"].into_iter().map(NodeId::new).collect();
        let out = orphans_to_live(&alloc, [], &live, |_, _| true);
        assert_eq!(out.placements[&spec(1)].holder, NodeId::new("b"));
        assert_eq!(out.placements[&spec(2)].holder, NodeId::new("b"));
        assert_eq!(out.placements[&spec(3)].holder, NodeId::new("c"));
        assert_eq!(out.placements[&spec(4)].holder, NodeId::new("c"));
        // Nobody live can use it: it stays where it was.
        let out = orphans_to_live(&alloc, [], &live, |n, s| {
            !(s == &spec(1) || n.as_str() == "x")
        });
        assert_eq!(out.placements[&spec(1)].holder, NodeId::new("a"));
    }
}
