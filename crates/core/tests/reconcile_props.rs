//! Property tests for the reconciliation plan.
//!
//! Every property is checked against an independent model of the rules:
//! `held` (this node is the holder), `given` (this node is the hand-off
//! giver and not the holder), `wanted = held ∪ given`.

use std::collections::{BTreeMap, BTreeSet};

use fechter_core::reconcile::{Action, LocalView, installed_after, plan};
use fechter_core::{AddrSpec, Allocation, NodeId, Placement};
use proptest::prelude::*;
use proptest::sample::subsequence;

const NODES: usize = 5;

fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i}"))
}

/// Small pool: a few from 198.18.0.0/24 and 2001:db8::/64, on two
/// interfaces and with two prefixes, so specs sharing an IP occur.
fn pool() -> Vec<AddrSpec> {
    let mut v = Vec::new();
    for i in 1..=5 {
        v.push(AddrSpec::parse(&format!("eth0:198.18.0.{i}/24")).unwrap());
        v.push(AddrSpec::parse(&format!("eth0:2001:db8::{i}/64")).unwrap());
    }
    v.push(AddrSpec::parse("eth1:198.18.0.1/24").unwrap());
    v.push(AddrSpec::parse("eth0:198.18.0.1/32").unwrap());
    v.push(AddrSpec::parse("eth1:2001:db8::1/128").unwrap());
    v
}

fn node_idx() -> impl Strategy<Value = usize> {
    0..NODES
}

fn placement() -> impl Strategy<Value = Placement> {
    (
        node_idx(),
        proptest::option::of(node_idx()),
        proptest::option::weighted(0.4, node_idx()),
    )
        .prop_map(|(h, s, g)| Placement {
            holder: node(h),
            standby: s.map(node),
            handoff_from: g.map(node),
        })
}

fn allocation() -> impl Strategy<Value = Allocation> {
    let specs = pool();
    let len = specs.len();
    (
        subsequence(specs, 0..=len),
        proptest::collection::vec(placement(), len),
    )
        .prop_map(|(specs, placements)| Allocation {
            placements: specs
                .into_iter()
                .zip(placements)
                .collect::<BTreeMap<_, _>>(),
        })
}

fn spec_set() -> impl Strategy<Value = BTreeSet<AddrSpec>> {
    let specs = pool();
    let len = specs.len();
    subsequence(specs, 0..=len).prop_map(|v| v.into_iter().collect())
}

fn local_view() -> impl Strategy<Value = LocalView> {
    (spec_set(), spec_set(), spec_set()).prop_map(|(observed, installed, announced)| LocalView {
        observed,
        installed,
        announced,
        ..LocalView::default()
    })
}

/// The view after executing `p` on `local`: what is present, recorded and
/// announced then.
fn after(p: &[Action], local: &LocalView) -> Result<LocalView, TestCaseError> {
    let mut announced = local.announced.clone();
    announced.extend(p.iter().filter_map(|a| match a {
        Action::Announce(s) => Some(s.clone()),
        _ => None,
    }));
    Ok(LocalView {
        observed: execute(p, &local.observed).map_err(TestCaseError::fail)?,
        installed: installed_after(p, &local.installed),
        announced,
        ..LocalView::default()
    })
}

struct Model {
    held: BTreeSet<AddrSpec>,
    given: BTreeSet<AddrSpec>,
    wanted: BTreeSet<AddrSpec>,
}

fn model(me: &NodeId, alloc: &Allocation) -> Model {
    let held: BTreeSet<AddrSpec> = alloc
        .placements
        .iter()
        .filter(|(_, p)| &p.holder == me)
        .map(|(s, _)| s.clone())
        .collect();
    let given: BTreeSet<AddrSpec> = alloc
        .placements
        .iter()
        .filter(|(_, p)| &p.holder != me && p.handoff_from.as_ref() == Some(me))
        .map(|(s, _)| s.clone())
        .collect();
    let wanted = held.union(&given).cloned().collect();
    Model {
        held,
        given,
        wanted,
    }
}

/// Executes a plan on a simulated interface, checking each step is
/// sensible: Install only what is absent, Announce and Renew only what is
/// present. Remove of a missing address is success.
fn execute(plan: &[Action], observed: &BTreeSet<AddrSpec>) -> Result<BTreeSet<AddrSpec>, String> {
    let mut iface = observed.clone();
    for a in plan {
        match a {
            Action::Install(s) => {
                if !iface.insert(s.clone()) {
                    return Err(format!("{a}: already present"));
                }
            }
            Action::Announce(s) | Action::Renew(s) => {
                if !iface.contains(s) {
                    return Err(format!("{a}: not present"));
                }
            }
            Action::Remove(s) => {
                iface.remove(s);
            }
        }
    }
    Ok(iface)
}

/// The group of `p[i]`: an Announce belongs to the action it follows.
fn group(p: &[Action], i: usize) -> u8 {
    match &p[i] {
        Action::Install(_) => 0,
        Action::Announce(_) if i > 0 => group(p, i - 1),
        Action::Announce(_) => 0,
        Action::Renew(_) => 1,
        Action::Remove(_) => 2,
    }
}

fn strictly_sorted<'a>(specs: impl Iterator<Item = &'a AddrSpec>) -> bool {
    let v: Vec<_> = specs.collect();
    v.windows(2).all(|w| w[0] < w[1])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// After executing the plan the interface holds exactly: every held
    /// address, the given addresses still present, and the foreign ones;
    /// our stale ones are gone.
    #[test]
    fn executing_the_plan_reaches_the_target(me in node_idx(), alloc in allocation(), local in local_view()) {
        let me = node(me);
        let m = model(&me, &alloc);
        let p = plan(&me, &alloc, &local);
        let after = execute(&p, &local.observed).map_err(TestCaseError::fail)?;

        let given_present: BTreeSet<_> = m.given.intersection(&local.observed).cloned().collect();
        let foreign: BTreeSet<_> = local
            .observed
            .iter()
            .filter(|s| !local.installed.contains(*s) && !m.wanted.contains(*s))
            .cloned()
            .collect();
        let expected: BTreeSet<_> = m.held.iter().chain(&given_present).chain(&foreign).cloned().collect();
        prop_assert_eq!(&after, &expected, "plan {:?}", p);

        // The record: what we kept of the old one, plus everything we now hold.
        let kept: BTreeSet<_> = local.installed.intersection(&m.wanted).cloned().collect();
        let expected_record: BTreeSet<_> = kept.iter().chain(&m.held).chain(&given_present).cloned().collect();
        prop_assert_eq!(installed_after(&p, &local.installed), expected_record);
    }

    /// Installs (each directly followed by its Announce) come first, then
    /// Renews (each followed by its Announce when the address was not
    /// announced yet), then Removes; each group sorted, no spec twice in a
    /// group.
    #[test]
    fn plan_order_is_safe_and_deterministic(me in node_idx(), alloc in allocation(), local in local_view()) {
        let me = node(me);
        let p = plan(&me, &alloc, &local);
        prop_assert!((1..p.len()).all(|i| group(&p, i - 1) <= group(&p, i)), "{:?}", p);
        for (i, a) in p.iter().enumerate() {
            match a {
                Action::Install(s) => {
                    prop_assert_eq!(p.get(i + 1), Some(&Action::Announce(s.clone())), "{:?}", p);
                }
                Action::Announce(s) => {
                    prop_assert!(
                        i > 0 && (p[i - 1] == Action::Install(s.clone()) || p[i - 1] == Action::Renew(s.clone())),
                        "{:?}", p
                    );
                }
                _ => {}
            }
        }
        let first_remove = p.iter().position(|a| matches!(a, Action::Remove(_))).unwrap_or(p.len());
        prop_assert!(!p[first_remove..].iter().any(|a| matches!(a, Action::Install(_))));
        let installs = p.iter().filter_map(|a| match a { Action::Install(s) => Some(s), _ => None });
        let renews = p.iter().filter_map(|a| match a { Action::Renew(s) => Some(s), _ => None });
        let removes = p.iter().filter_map(|a| match a { Action::Remove(s) => Some(s), _ => None });
        prop_assert!(strictly_sorted(installs));
        prop_assert!(strictly_sorted(renews));
        prop_assert!(strictly_sorted(removes));
        // An address is never both kept and removed.
        let removed: BTreeSet<_> = p.iter().filter(|a| matches!(a, Action::Remove(_))).map(Action::spec).collect();
        prop_assert!(p.iter().filter(|a| !matches!(a, Action::Remove(_))).all(|a| !removed.contains(a.spec())));
    }

    /// Only the holder announces or installs; a giver only renews. A holder
    /// announces what it installs, and what is present but not announced.
    #[test]
    fn only_the_holder_installs_and_announces(me in node_idx(), alloc in allocation(), local in local_view()) {
        let me = node(me);
        let m = model(&me, &alloc);
        let p = plan(&me, &alloc, &local);
        for a in &p {
            match a {
                Action::Install(s) => {
                    prop_assert_eq!(&alloc.placements[s].holder, &me, "{}", a);
                    prop_assert!(!local.observed.contains(s), "{}", a);
                }
                Action::Announce(s) => {
                    prop_assert_eq!(&alloc.placements[s].holder, &me, "{}", a);
                    prop_assert!(!local.observed.contains(s) || !local.announced.contains(s), "{}", a);
                }
                Action::Renew(s) => prop_assert!(m.wanted.contains(s) && local.observed.contains(s), "{}", a),
                Action::Remove(s) => prop_assert!(local.installed.contains(s) && !m.wanted.contains(s), "{}", a),
            }
        }
        // Every held address ends up announced.
        let next = after(&p, &local)?;
        prop_assert!(m.held.iter().all(|s| next.announced.contains(s)), "{:?}", p);
    }

    /// An address observed but neither wanted nor recorded is never touched.
    #[test]
    fn foreign_addresses_are_never_touched(me in node_idx(), alloc in allocation(), local in local_view()) {
        let me = node(me);
        let m = model(&me, &alloc);
        let p = plan(&me, &alloc, &local);
        for s in &local.observed {
            if !m.wanted.contains(s) && !local.installed.contains(s) {
                prop_assert!(p.iter().all(|a| a.spec() != s), "{} touched by {:?}", s, p);
            }
        }
    }

    /// Executing the plan and planning again yields only Renews, of exactly
    /// the wanted addresses that are present.
    #[test]
    fn plan_is_idempotent(me in node_idx(), alloc in allocation(), local in local_view()) {
        let me = node(me);
        let m = model(&me, &alloc);
        let p = plan(&me, &alloc, &local);
        let next = after(&p, &local)?;
        let again = plan(&me, &alloc, &next);
        let expected: Vec<Action> = m
            .wanted
            .iter()
            .filter(|s| next.observed.contains(*s))
            .map(|s| Action::Renew(s.clone()))
            .collect();
        prop_assert_eq!(&again, &expected);
        // And once more: a fixed point.
        let next2 = after(&again, &next)?;
        prop_assert_eq!(&next2, &next);
    }

    /// A node that keeps nothing and has recorded nothing does nothing,
    /// whatever it observes.
    #[test]
    fn idle_node_has_empty_plan(me in 0..=NODES, alloc in allocation(), observed in spec_set()) {
        // n5 is never generated as holder or giver; n0..n4 sometimes keep nothing.
        let me = node(me);
        let local = LocalView { observed, installed: BTreeSet::new(), ..LocalView::default() };
        let p = plan(&me, &alloc, &local);
        let m = model(&me, &alloc);
        if m.wanted.is_empty() {
            prop_assert_eq!(p, Vec::<Action>::new());
        } else if !m.held.is_empty() {
            // A holder always has something to do (install or renew).
            prop_assert!(!p.is_empty());
        }
    }

    /// Across the cluster, a hand-off never leaves the address unkept: for
    /// every placement, the holder either installs or renews it, and the
    /// giver never removes it while `handoff_from` names it.
    #[test]
    fn hand_off_keeps_the_address_on_both_sides(alloc in allocation(), views in proptest::collection::vec(local_view(), NODES)) {
        for (i, local) in views.iter().enumerate() {
            let me = node(i);
            let p = plan(&me, &alloc, local);
            for (s, pl) in &alloc.placements {
                let acts: Vec<_> = p.iter().filter(|a| a.spec() == s).collect();
                if pl.holder == me {
                    prop_assert!(
                        acts == [&Action::Renew(s.clone())]
                            || acts == [&Action::Renew(s.clone()), &Action::Announce(s.clone())]
                            || acts == [&Action::Install(s.clone()), &Action::Announce(s.clone())],
                        "holder {}: {} -> {:?}", me, s, acts
                    );
                } else if pl.handoff_from.as_ref() == Some(&me) {
                    prop_assert!(
                        acts.is_empty() || acts == [&Action::Renew(s.clone())],
                        "giver {}: {} -> {:?}", me, s, acts
                    );
                }
            }
        }
    }

    /// The wire as the lock: an unproven address (one that is absent) is
    /// never installed or announced, and the plan is otherwise exactly the
    /// plan without it.
    #[test]
    fn unproven_addresses_wait_and_change_nothing_else(
        me in node_idx(), alloc in allocation(), local in local_view(), unproven in spec_set(),
    ) {
        let me = node(me);
        let unproven: BTreeSet<AddrSpec> = unproven.difference(&local.observed).cloned().collect();
        let gated = LocalView { unproven: unproven.clone(), ..local.clone() };
        let with = plan(&me, &alloc, &gated);
        let without = plan(&me, &alloc, &local);
        for a in &with {
            if let Action::Install(s) | Action::Announce(s) = a {
                prop_assert!(!unproven.contains(s), "{a} is unproven");
            }
        }
        let expected: Vec<Action> = without
            .into_iter()
            .filter(|a| !matches!(a, Action::Install(s) | Action::Announce(s) if unproven.contains(s)))
            .collect();
        prop_assert_eq!(with, expected);
    }
}
