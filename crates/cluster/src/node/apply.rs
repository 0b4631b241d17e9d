//! Plans against this machine's interfaces (`fechter_core::reconcile`),
//! and what their execution changed: what is installed and announced, and
//! why each address came or went.

use std::collections::BTreeSet;

use fechter_core::alloc::Allocation;
use fechter_core::reconcile::{Action, LocalView, installed_after, keep_announced, plan};
use fechter_core::{AddrSpec, NodeId};

use super::reason::{self, Reason};
use super::{Node, NodeEvent};
use crate::engine::Now;

/// Actions to execute in order, with what to record before they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Write ahead: the installed set to record before executing, when the
    /// plan installs something, so that a restart removes what an earlier
    /// process left. (The agent queues it to its writer thread rather than
    /// wait on the disk: a record the disk lost costs an address left until
    /// its kernel lease ends.)
    pub ahead: Option<BTreeSet<AddrSpec>>,
    /// The allocation planned against; `None` for a shutdown.
    alloc: Option<Allocation>,
}

impl Plan {
    /// Removes everything in `installed`: the agent stops.
    pub(super) fn shutdown(installed: &BTreeSet<AddrSpec>) -> Plan {
        Plan {
            actions: installed.iter().cloned().map(Action::Remove).collect(),
            ahead: None,
            alloc: None,
        }
    }
}

impl Node {
    /// The plan that brings `observed` (the addresses on this machine's
    /// interfaces, as read now) in line with the allocation. Addresses
    /// another machine may still answer for on the wire are not installed
    /// yet; what is announced, and what no longer needs announcing, follow
    /// `fechter_core::reconcile::keep_announced`.
    pub fn plan(&mut self, now: Now, observed: BTreeSet<AddrSpec>) -> Plan {
        self.plan_due = false;
        let me = self.me().clone();
        let alloc = self.acting().into_owned();
        let unproven = self.unproven(now, &alloc, &observed);
        keep_announced(&me, &alloc, &mut self.announced);
        let view = LocalView {
            observed,
            installed: self.installed.clone(),
            unproven,
            announced: self.announced.clone(),
        };
        let actions = plan(&me, &alloc, &view);
        let ahead: BTreeSet<AddrSpec> = self
            .installed
            .iter()
            .cloned()
            .chain(actions.iter().filter_map(|a| match a {
                Action::Install(s) => Some(s.clone()),
                _ => None,
            }))
            .collect();
        Plan {
            actions,
            ahead: (ahead != self.installed).then_some(ahead),
            alloc: Some(alloc),
        }
    }

    /// What `plan` did: `ok[i]` says whether its `i`-th action succeeded.
    /// Reports every acquire and release with its reason, confirms what is
    /// installed to the givers of hand-offs, and returns the installed set
    /// to record when the record must change.
    pub fn executed(&mut self, now: Now, plan: Plan, ok: &[bool]) -> Option<BTreeSet<AddrSpec>> {
        let mut done = Vec::new();
        for (a, ok) in plan.actions.iter().zip(ok) {
            if !ok {
                continue;
            }
            let ev = match a {
                Action::Install(_) | Action::Remove(_) => Some(self.why(a, plan.alloc.as_ref())),
                Action::Announce(s) => {
                    self.announced.insert(s.clone());
                    Some(NodeEvent::Announced(s.clone()))
                }
                Action::Renew(_) => None,
            };
            self.events.extend(ev);
            done.push(a.clone());
        }
        let installed = installed_after(&done, &self.installed);
        let record = installed != self.installed
            || plan.ahead.as_ref().is_some_and(|ahead| *ahead != installed);
        self.installed = installed;
        if let Some(alloc) = plan.alloc {
            // Keep probing only what is still missing.
            let installed = &self.installed;
            self.wire.base.retain(|s| !installed.contains(s));
            self.engine.confirm_installed(now, &self.installed);
            self.remember(alloc);
        }
        record.then(|| self.installed.clone())
    }

    /// Keeps `alloc` as the allocation the next reasons compare with. What
    /// still waits on the wire keeps its previous placement and the
    /// takeover it came from: the reason it is acquired later.
    fn remember(&mut self, alloc: Allocation) {
        let mut next = alloc;
        for s in &self.wire.base {
            if let Some(p) = self.last_alloc.placements.get(s) {
                next.placements.insert(s.clone(), p.clone());
            }
        }
        let pending_from: BTreeSet<NodeId> = self
            .wire
            .base
            .iter()
            .filter_map(|s| next.placements.get(s).map(|p| p.holder.clone()))
            .collect();
        self.last_alloc = next;
        self.took_over.retain(|h| pending_from.contains(h));
    }

    /// The event for an install or a removal of a plan made against
    /// `alloc` (`None`: a shutdown, which hands to nobody).
    fn why(&self, action: &Action, alloc: Option<&Allocation>) -> NodeEvent {
        let me = self.me();
        let prev = &self.last_alloc;
        let address = action.spec().clone();
        let Some(alloc) = alloc else {
            let reason = Reason::Shutdown;
            return NodeEvent::Released { address, reason };
        };
        if let Action::Install(s) = action {
            let reinstall = self.installed.contains(s);
            let reason = reason::acquire(s, me, prev, alloc, &self.took_over, reinstall);
            return NodeEvent::Acquired { address, reason };
        }
        let assignable = self
            .engine
            .replica()
            .addresses
            .assignable()
            .into_iter()
            .any(|(_, x)| x == address);
        let how = reason::Releasing {
            fenced: self.engine.fenced(),
            assignable,
            leaving: self.engine.leaving(),
        };
        let reason = reason::release(&address, me, prev, alloc, how);
        NodeEvent::Released { address, reason }
    }
}
