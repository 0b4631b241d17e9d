//! Reconciliation: what this node must do to its interfaces.
//!
//! [`plan`] compares the allocation this node follows with what it sees on
//! its own interfaces and returns the [`Action`]s that close the gap, in the
//! order they must be executed. It decides; the shell executes.
//!
//! ## Inputs
//! - the [`Allocation`] (holder, standby and hand-off giver per address);
//! - a [`LocalView`]: `observed`, the addresses present on this node's
//!   interfaces now (from netlink), and `installed`, the addresses this node
//!   installed earlier and recorded as its own (persisted across restarts).
//!
//! ## The rules, and why
//! 1. **Wanted.** This node wants every address it is the *holder* of, plus
//!    every address whose placement names it as `handoff_from`: during a
//!    planned hand-off the giver keeps the address until the leader drops
//!    `handoff_from`, which it does once the receiver has confirmed install
//!    and announce. The receiver therefore installs and announces *before*
//!    the giver removes (make-before-break), so the address is never absent.
//! 2. **Install + Announce.** A held address that is not observed is
//!    installed and then announced (gratuitous ARP for IPv4, unsolicited
//!    neighbour advertisement for IPv6): peers must learn the new MAC at once
//!    rather than when their caches expire. Each `Install` is immediately
//!    followed by the `Announce` of the same address.
//!    Unless the wire has not shown it free yet (`unproven`): then nothing
//!    happens until probes for it go unanswered (see [`crate::claim`]).
//! 3. **Renew.** A wanted address that is observed is renewed (the kernel
//!    lease is refreshed). This also *adopts* an address that is present but
//!    was not recorded, e.g. after the record was lost. A held one that is
//!    not in `announced` is announced right after its renewal: this process
//!    may never have announced it (a restart adopted it, a hand-off to
//!    another node was undone), or the shell wants every held address
//!    announced again (clients across a healed partition may still point at
//!    a stale MAC).
//! 4. **The giver only renews.** A giver never announces (peers should learn
//!    the receiver's MAC, not be pulled back) and never re-installs an
//!    address that vanished (the receiver has, or is about to have, it).
//! 5. **Remove.** Every recorded address that is not wanted is removed,
//!    whether observed or not: the executor treats removing a missing address
//!    as success, and trying is cheaper than trusting a possibly stale
//!    `observed`.
//! 6. **Never touch foreign addresses.** An address that is observed but
//!    neither wanted nor recorded (the machine's own primary address, one an
//!    operator added by hand) gets no action at all.
//!
//! ## Order
//! All `Install`/`Announce` pairs first, then `Renew`s (each followed by
//! its `Announce` where rule 3 wants one), then `Remove`s; each group sorted
//! by [`AddrSpec`] order. Installing before removing means a
//! node never has a gap it created itself; and the order is deterministic,
//! so the same inputs always give the same plan.
//!
//! ## Recording what is installed
//! [`installed_after`] gives the record once the plan has run: `before` plus
//! everything installed or renewed, minus everything removed. For crash
//! safety the shell should persist `before ∪ installed_after(..)` *before*
//! executing (write-ahead), then `installed_after(..)` once the plan has run:
//! otherwise a crash between installing an address and recording it leaves
//! an address this node will later treat as foreign and never remove.
//!
//! ## Notes for the executor
//! Specs are compared as a whole (interface, IP, prefix). If the prefix or
//! interface of an address changes, the plan installs the new spec and
//! removes the old one, in that order. For IPv6 the kernel keys an address
//! by IP alone per interface, so install with create-or-replace semantics;
//! the later remove of the old prefix then finds nothing, which is success.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AddrSpec, Allocation, NodeId, Placement};

/// One effect on this node's interfaces, to be executed in plan order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Add the address to its interface.
    Install(AddrSpec),
    /// Tell the link about it: gratuitous ARP (IPv4) or unsolicited
    /// neighbour advertisement (IPv6).
    Announce(AddrSpec),
    /// The address is present and ours: refresh its kernel lease and record
    /// it as installed.
    Renew(AddrSpec),
    /// Delete the address from its interface; a missing address is success.
    Remove(AddrSpec),
}

impl Action {
    /// The address this action is about.
    pub fn spec(&self) -> &AddrSpec {
        match self {
            Action::Install(s) | Action::Announce(s) | Action::Renew(s) | Action::Remove(s) => s,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, spec) = match self {
            Action::Install(s) => ("install", s),
            Action::Announce(s) => ("announce", s),
            Action::Renew(s) => ("renew", s),
            Action::Remove(s) => ("remove", s),
        };
        write!(f, "{verb} {spec}")
    }
}

/// What this node sees of its own interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalView {
    /// Addresses currently present on this node's interfaces (from netlink).
    pub observed: BTreeSet<AddrSpec>,
    /// Addresses this node previously installed and recorded as its own
    /// (persisted across restarts).
    pub installed: BTreeSet<AddrSpec>,
    /// Addresses the wire has not shown free yet (`crate::claim`): held
    /// here, not present, and no giver hands them over. Not installed until
    /// probes for them go unanswered; nothing else about them changes.
    #[serde(default)]
    pub unproven: BTreeSet<AddrSpec>,
    /// Addresses this node announced since it (last) became their holder.
    /// A held address that is present but not in here is announced after
    /// its renewal: after a restart, when a hand-off to another node was
    /// undone, or when the shell forgets them all to announce again (a
    /// member returned, quorum came back, the periodic refresh).
    #[serde(default)]
    pub announced: BTreeSet<AddrSpec>,
}

/// Why this node wants an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The placement's holder: install, announce, renew.
    Holder,
    /// The giver of a planned hand-off: keep (renew) until `handoff_from`
    /// is dropped, but never install or announce.
    Giver,
}

/// This node's role for one placement, if it keeps the address at all.
fn role(me: &NodeId, placement: &Placement) -> Option<Role> {
    if placement.holder == *me {
        Some(Role::Holder)
    } else if placement.handoff_from.as_ref() == Some(me) {
        Some(Role::Giver)
    } else {
        None
    }
}

/// The actions node `me` must take so its interfaces match `alloc`, in
/// execution order. See the [module docs](self) for the rules.
pub fn plan(me: &NodeId, alloc: &Allocation, local: &LocalView) -> Vec<Action> {
    let mut wanted: BTreeSet<&AddrSpec> = BTreeSet::new();
    let mut fresh: Vec<&AddrSpec> = Vec::new();
    let mut renew: Vec<(&AddrSpec, bool)> = Vec::new();
    // Placements iterate in AddrSpec order, so each group comes out sorted.
    for (spec, placement) in &alloc.placements {
        let Some(role) = role(me, placement) else {
            continue;
        };
        wanted.insert(spec);
        match (role, local.observed.contains(spec)) {
            (role, true) => {
                let announce = role == Role::Holder && !local.announced.contains(spec);
                renew.push((spec, announce));
            }
            // Someone may still serve it: probe first (the wire as the lock).
            (Role::Holder, false) if local.unproven.contains(spec) => {}
            (Role::Holder, false) => fresh.push(spec),
            // Vanished while handing off: the receiver takes it from here.
            (Role::Giver, false) => {}
        }
    }
    let remove = local.installed.iter().filter(|s| !wanted.contains(s));

    let mut actions = Vec::with_capacity(2 * fresh.len() + renew.len() + local.installed.len());
    for spec in fresh {
        actions.push(Action::Install(spec.clone()));
        actions.push(Action::Announce(spec.clone()));
    }
    for (spec, announce) in renew {
        actions.push(Action::Renew(spec.clone()));
        if announce {
            actions.push(Action::Announce(spec.clone()));
        }
    }
    actions.extend(remove.map(|s| Action::Remove(s.clone())));
    actions
}

/// Drops from `announced` what this node no longer holds: if it becomes
/// their holder again (a hand-off to another node undone, a table that
/// moves it back), [`plan`] announces them again.
pub fn keep_announced(me: &NodeId, alloc: &Allocation, announced: &mut BTreeSet<AddrSpec>) {
    announced.retain(|s| alloc.placements.get(s).is_some_and(|p| p.holder == *me));
}

/// The renewals [`plan`] would make if the interfaces held exactly what
/// this node installed: what a shell renews between plans without reading
/// the interfaces back (a renewal re-creates an address that vanished).
pub fn renewals(me: &NodeId, alloc: &Allocation, installed: &BTreeSet<AddrSpec>) -> Vec<Action> {
    installed
        .iter()
        .filter(|s| alloc.placements.get(*s).and_then(|p| role(me, p)).is_some())
        .map(|s| Action::Renew(s.clone()))
        .collect()
}

/// The installed record once `plan` has been executed: `before`, plus every
/// installed or renewed address, minus every removed one.
pub fn installed_after(plan: &[Action], before: &BTreeSet<AddrSpec>) -> BTreeSet<AddrSpec> {
    let mut after = before.clone();
    for action in plan {
        match action {
            Action::Install(s) | Action::Renew(s) => {
                after.insert(s.clone());
            }
            Action::Remove(s) => {
                after.remove(s);
            }
            Action::Announce(_) => {}
        }
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> AddrSpec {
        s.parse().unwrap()
    }

    fn n(id: &str) -> NodeId {
        NodeId::new(id)
    }

    fn placed(holder: &str, handoff_from: Option<&str>) -> Placement {
        Placement {
            holder: n(holder),
            standby: None,
            handoff_from: handoff_from.map(n),
        }
    }

    fn alloc(entries: &[(&str, Placement)]) -> Allocation {
        Allocation {
            placements: entries.iter().map(|(s, p)| (spec(s), p.clone())).collect(),
        }
    }

    fn set(specs: &[&str]) -> BTreeSet<AddrSpec> {
        specs.iter().map(|s| spec(s)).collect()
    }

    /// A view where every present address was announced already.
    fn view(observed: &[&str], installed: &[&str]) -> LocalView {
        LocalView {
            observed: set(observed),
            installed: set(installed),
            announced: set(observed),
            ..LocalView::default()
        }
    }

    #[test]
    fn a_held_address_not_announced_is_announced_after_its_renewal() {
        // n0 holds A and B, gives C in a hand-off; all present, nothing
        // announced by this process yet (it just restarted), D is stale.
        let a = alloc(&[
            (A, placed("n0", None)),
            (B, placed("n0", None)),
            (C, placed("n1", Some("n0"))),
        ]);
        let mut local = LocalView {
            observed: set(&[A, B, C]),
            installed: set(&[A, B, C, PRIMARY]),
            ..LocalView::default()
        };
        local.installed.remove(&spec(PRIMARY));
        local.installed.insert(spec("eth0:198.18.0.9/24"));
        local.announced = set(&[B]);
        assert_eq!(
            plan(&n("n0"), &a, &local),
            vec![
                Action::Renew(spec(A)),
                Action::Announce(spec(A)),
                Action::Renew(spec(B)),
                // The giver renews C but never announces it.
                Action::Renew(spec(C)),
                Action::Remove(spec("eth0:198.18.0.9/24")),
            ],
            "A re-announced before any removal; B announced already; C given"
        );
    }

    const A: &str = "eth0:198.18.0.1/24";
    const B: &str = "eth0:198.18.0.2/24";
    const C: &str = "eth0:2001:db8::3/64";
    const PRIMARY: &str = "eth0:198.18.0.200/24";

    #[test]
    fn renewals_are_the_renewals_of_a_plan_on_what_was_installed() {
        // A held, B given in a hand-off, C moved away, PRIMARY not ours.
        let a = alloc(&[
            (A, placed("n0", None)),
            (B, placed("n1", Some("n0"))),
            (C, placed("n1", None)),
        ]);
        let installed = set(&[A, B, C, PRIMARY]);
        let local = LocalView {
            observed: installed.clone(),
            installed: installed.clone(),
            ..LocalView::default()
        };
        let from_plan: Vec<Action> = plan(&n("n0"), &a, &local)
            .into_iter()
            .filter(|x| matches!(x, Action::Renew(_)))
            .collect();
        let r = renewals(&n("n0"), &a, &installed);
        assert_eq!(r, [Action::Renew(spec(A)), Action::Renew(spec(B))]);
        assert_eq!(r, from_plan);
    }

    #[test]
    fn fresh_address_is_installed_then_announced() {
        let a = alloc(&[(A, placed("n0", None))]);
        let p = plan(&n("n0"), &a, &view(&[PRIMARY], &[]));
        assert_eq!(p, [Action::Install(spec(A)), Action::Announce(spec(A))]);
    }

    #[test]
    fn present_address_is_renewed_and_unrecorded_one_adopted() {
        let a = alloc(&[(A, placed("n0", None)), (B, placed("n0", None))]);
        // A recorded, B present but not recorded: both renewed, none announced.
        let local = view(&[A, B], &[A]);
        let p = plan(&n("n0"), &a, &local);
        assert_eq!(p, [Action::Renew(spec(A)), Action::Renew(spec(B))]);
        assert_eq!(installed_after(&p, &local.installed), set(&[A, B]));
    }

    #[test]
    fn stale_recorded_addresses_are_removed_observed_or_not() {
        let a = alloc(&[(A, placed("n1", None)), (B, placed("n1", None))]);
        let local = view(&[A, PRIMARY], &[A, B]);
        let p = plan(&n("n0"), &a, &local);
        assert_eq!(p, [Action::Remove(spec(A)), Action::Remove(spec(B))]);
        assert!(installed_after(&p, &local.installed).is_empty());
    }

    #[test]
    fn foreign_address_is_never_touched() {
        // PRIMARY is observed, not recorded and not in the allocation.
        let a = alloc(&[(A, placed("n0", None))]);
        let p = plan(&n("n0"), &a, &view(&[A, PRIMARY], &[A]));
        assert!(p.iter().all(|x| x.spec() != &spec(PRIMARY)), "{p:?}");
        // Even when it is placed on another node.
        let a = alloc(&[(PRIMARY, placed("n1", None))]);
        assert!(plan(&n("n0"), &a, &view(&[PRIMARY], &[])).is_empty());
    }

    #[test]
    fn nothing_held_nothing_recorded_means_empty_plan() {
        let a = alloc(&[(A, placed("n1", None)), (B, placed("n2", Some("n1")))]);
        assert!(plan(&n("n0"), &a, &view(&[A, B, PRIMARY], &[])).is_empty());
        assert!(plan(&n("n0"), &Allocation::default(), &LocalView::default()).is_empty());
    }

    #[test]
    fn order_is_installs_then_renews_then_removes() {
        let a = alloc(&[
            (C, placed("n0", None)),
            (A, placed("n0", None)),
            (B, placed("n0", None)),
        ]);
        let local = view(&[B], &[B, "eth1:198.18.0.9/24", "eth0:198.18.0.0/24"]);
        let p = plan(&n("n0"), &a, &local);
        assert_eq!(
            p,
            [
                Action::Install(spec(A)),
                Action::Announce(spec(A)),
                Action::Install(spec(C)),
                Action::Announce(spec(C)),
                Action::Renew(spec(B)),
                Action::Remove(spec("eth0:198.18.0.0/24")),
                Action::Remove(spec("eth1:198.18.0.9/24")),
            ]
        );
    }

    #[test]
    fn hand_off_is_make_before_break() {
        // Leader moves A from n0 to n1 and sets handoff_from = n0.
        let during = alloc(&[(A, placed("n1", Some("n0")))]);
        // Receiver n1 installs and announces.
        let recv = plan(&n("n1"), &during, &view(&[], &[]));
        assert_eq!(recv, [Action::Install(spec(A)), Action::Announce(spec(A))]);
        // Giver n0 keeps it (renew only), neither removes nor announces.
        let give = plan(&n("n0"), &during, &view(&[A], &[A]));
        assert_eq!(give, [Action::Renew(spec(A))]);
        // If it vanished on the giver, the giver does not put it back, and
        // keeps the record until the hand-off ends.
        let give = plan(&n("n0"), &during, &view(&[], &[A]));
        assert!(give.is_empty(), "{give:?}");
        // Once the leader drops handoff_from, the giver removes it.
        let after = alloc(&[(A, placed("n1", None))]);
        let give = plan(&n("n0"), &after, &view(&[A], &[A]));
        assert_eq!(give, [Action::Remove(spec(A))]);
        // And the receiver only renews.
        let recv = plan(&n("n1"), &after, &view(&[A], &[A]));
        assert_eq!(recv, [Action::Renew(spec(A))]);
    }

    #[test]
    fn holder_named_as_its_own_giver_acts_as_holder() {
        let a = alloc(&[(A, placed("n0", Some("n0")))]);
        let p = plan(&n("n0"), &a, &view(&[], &[]));
        assert_eq!(p, [Action::Install(spec(A)), Action::Announce(spec(A))]);
    }

    #[test]
    fn installed_after_applies_install_renew_remove() {
        let p = [
            Action::Install(spec(A)),
            Action::Announce(spec(A)),
            Action::Renew(spec(B)),
            Action::Remove(spec(C)),
        ];
        assert_eq!(
            installed_after(&p, &set(&[C, PRIMARY])),
            set(&[A, B, PRIMARY])
        );
        // Announce alone records nothing.
        assert!(installed_after(&[Action::Announce(spec(A))], &BTreeSet::new()).is_empty());
    }

    #[test]
    fn action_display_and_spec() {
        let a = Action::Install(spec(A));
        assert_eq!(a.to_string(), "install eth0:198.18.0.1/24");
        assert_eq!(
            Action::Announce(spec(C)).to_string(),
            "announce eth0:2001:db8::3/64"
        );
        assert_eq!(
            Action::Renew(spec(B)).to_string(),
            "renew eth0:198.18.0.2/24"
        );
        assert_eq!(
            Action::Remove(spec(B)).to_string(),
            "remove eth0:198.18.0.2/24"
        );
        assert_eq!(Action::Remove(spec(C)).spec(), &spec(C));
    }
}
