//! The simulated segment: frames that reach each machine's interface (its
//! sign of life), probes answered by every machine that has the address,
//! and conflicts seen when two machines on one segment have it. Each
//! node's wire lock runs here on the schedule the agent's shell runs it.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use fechter_core::claim::ConflictAction;
use fechter_core::reconcile::Action;
use fechter_core::{AddrSpec, NodeId};

use super::Sim;
use crate::engine::Now;
use crate::wire_lock;

impl Sim {
    /// Whether frames of `a`'s machine reach `b`'s.
    pub fn same_segment(&self, a: &NodeId, b: &NodeId) -> bool {
        !self.segment_cut.contains(&(a.clone(), b.clone()))
    }

    /// A datagram from `from` to `to` passes `to`'s interface (whether or
    /// not the cluster port is cut).
    pub(super) fn frame_seen(&mut self, from: SocketAddr, to: SocketAddr) {
        let name = |s: &Sim, a: SocketAddr| {
            s.nodes
                .iter()
                .find(|(_, n)| n.addr == a)
                .map(|(k, _)| k.clone())
        };
        let (Some(f), Some(t)) = (name(self, from), name(self, to)) else {
            return;
        };
        if self.same_segment(&f, &t)
            && let Some(n) = self.nodes.get_mut(&t)
        {
            n.rx += 1;
        }
    }

    /// Addresses present on two machines that share a segment (the
    /// invariant when a partition splits the segment too: each side's
    /// clients reach exactly one holder).
    pub fn duplicates_on_segment(&self) -> Vec<(AddrSpec, Vec<NodeId>)> {
        self.duplicates()
            .into_iter()
            .map(|(a, on)| {
                let shared: Vec<NodeId> = on
                    .iter()
                    .filter(|x| on.iter().any(|y| y != *x && self.same_segment(x, y)))
                    .cloned()
                    .collect();
                (a, shared)
            })
            .filter(|(_, shared)| !shared.is_empty())
            .collect()
    }

    /// One step of `name`'s wire lock, as the agent's shell does on each
    /// tick: background frames and the segment sample, answers to its
    /// probes, conflicts over what it holds. Returns whether an address
    /// became free (reconcile).
    pub(super) fn wire_step(&mut self, name: &NodeId, now: Now) -> bool {
        let background = self.background && !self.off_segment.contains(name);
        let Some(node) = self.nodes.get_mut(name) else {
            return false;
        };
        if node.engine.is_none() || node.stalled_until.is_some_and(|s| s > now.at) {
            return false;
        }
        if background {
            node.rx += 1;
        }
        let engine = node.engine.as_mut().expect("running");
        if engine.wants_segment(now) {
            engine.handle_segment(now, node.rx);
        }
        let standing = engine.standing();
        let alloc = engine.allocation().clone();
        let soon = engine.soon_taken(now);
        let wanted = wire_lock::wanted(name, &alloc, &node.iface, soon);
        let probes = node.lock.want(now.at, &wanted);
        let holding: Vec<AddrSpec> = node
            .iface
            .iter()
            .filter(|s| alloc.placements.get(*s).is_some_and(|p| &p.holder == name))
            .cloned()
            .collect();
        // Who else on this segment has what.
        let others: Vec<(NodeId, [u8; 6], BTreeSet<AddrSpec>)> = self
            .nodes
            .iter()
            .filter(|(k, _)| *k != name && self.same_segment(name, k))
            .map(|(k, n)| (k.clone(), n.mac, n.iface.clone()))
            .collect();
        let node = self.nodes.get_mut(name).expect("exists");
        for spec in &probes {
            for (_, mac, iface) in &others {
                if iface.contains(spec) {
                    node.lock.heard(now.at, spec.ip, *mac);
                }
            }
        }
        for spec in holding {
            for (_, mac, iface) in &others {
                if !iface.contains(&spec) {
                    continue;
                }
                node.lock.heard(now.at, spec.ip, *mac);
                if node.lock.conflict(now.at, &spec, standing) == ConflictAction::Yield {
                    node.iface.remove(&spec);
                    node.installed.remove(&spec);
                    self.actions.push((
                        now.at - self.start,
                        name.clone(),
                        Action::Remove(spec.clone()),
                    ));
                    break;
                }
            }
        }
        let node = self.nodes.get_mut(name).expect("exists");
        node.lock.newly_free(now.at)
    }
}
