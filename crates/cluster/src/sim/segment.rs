//! The simulated segment: frames that reach each machine's interface (its
//! sign of life), probes answered by every machine that has the address,
//! and conflicts seen when two machines on one segment have it.

use std::net::{IpAddr, SocketAddr};

use fechter_core::{AddrSpec, NodeId};

use super::Sim;

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

    /// What `name` hears on the wire at its tick: answers to the probes it
    /// sent on its last tick, and every other machine on its segment that
    /// has an address it has too (a conflict), as (ip, mac).
    pub(super) fn claims(&self, name: &NodeId) -> Vec<(IpAddr, [u8; 6])> {
        let Some(node) = self.nodes.get(name) else {
            return Vec::new();
        };
        let mut claims = Vec::new();
        for (k, other) in &self.nodes {
            if k == name || !self.same_segment(name, k) {
                continue;
            }
            for spec in node.probes.iter().chain(&node.iface) {
                if other.iface.contains(spec) {
                    claims.push((spec.ip, other.mac));
                }
            }
        }
        claims
    }
}
