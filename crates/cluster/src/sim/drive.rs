//! How the simulator drives each [`crate::node::Node`]: the same steps, in
//! the same order, as the agent's loop (`crates/fechter/src/agent/driver.rs`,
//! the order `crate::node` documents), with a recording platform for the
//! interface and the segment of `segment.rs` for the wire.

use std::collections::BTreeMap;
use std::time::Duration;

use fechter_core::reconcile::Action;
use fechter_core::{AddrSpec, NodeId};

use super::{Flight, Handing, Sim};
use crate::engine::Event;
use crate::node::NodeEvent;

impl Sim {
    /// The agent's tick for `name`: hear what queued, settle what the wire
    /// claims, sample the segment, run the timers, probe.
    pub(super) fn tick(&mut self, name: &NodeId) {
        let now = self.wall();
        let claims = self.claims(name);
        let background = self.background && !self.off_segment.contains(name);
        let t = now.at - self.start;
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        let Some(node) = n.node.as_mut() else {
            return;
        };
        for (from, payload) in std::mem::take(&mut n.socket) {
            node.handle_datagram(now, from, &payload);
        }
        for (ip, mac) in claims {
            if let Some(a) = node.handle_claim(now, ip, mac) {
                if let Action::Remove(s) = &a {
                    n.iface.remove(s);
                }
                node.claim_done(&a, true);
                self.actions.push((t, name.clone(), a));
            }
        }
        if background {
            n.rx += 1;
        }
        if node.wants_segment(now) {
            node.handle_segment(now, n.rx);
        }
        node.handle_timeout(now);
        n.probes = node.wire_tick(now);
    }

    /// What follows every wake-up of `name`: its events (the witness
    /// answered at once), a plan executed on its interface when one is
    /// due, and its datagrams into the network.
    pub(super) fn after_wake(&mut self, name: &NodeId) {
        let now = self.wall();
        let t = now.at - self.start;
        let gw_ok = self.gateway_ok.get(name).copied().unwrap_or(true);
        let Some(n) = self.nodes.get_mut(name) else {
            return;
        };
        let from = n.addr;
        let Some(node) = n.node.as_mut() else {
            return;
        };
        let handing = self.handoff_view.entry(name.clone()).or_insert(None);
        while let Some(ev) = node.poll_event() {
            let NodeEvent::Engine(ev) = ev else {
                self.history.push((t, name.clone(), ev));
                continue;
            };
            if ev == Event::AllocationChanged {
                *handing = None;
            }
            if ev == Event::ProbeWitness {
                node.engine_mut().witness_answer(now.at, gw_ok);
            }
            if matches!(ev, Event::Published(_))
                && let Some(tb) = &node.engine().replica().table
            {
                note_handoffs(t, &tb.allocation, &mut self.handoffs);
            }
            self.log.push((t, name.clone(), ev));
        }
        if handing.is_none() {
            *handing = Some(
                node.engine()
                    .allocation()
                    .placements
                    .iter()
                    .filter_map(|(spec, p)| {
                        let g = p.handoff_from.as_ref()?;
                        Some((spec.clone(), p.holder.clone(), g.clone()))
                    })
                    .collect::<Vec<Handing>>(),
            );
        }
        // Same as walking the allocation (the view is current).
        for (spec, holder, giver) in handing.iter().flatten() {
            self.handoffs
                .insert(spec.clone(), (t, holder.clone(), giver.clone()));
        }
        if node.plan_due() {
            // The recording platform: every action succeeds at once.
            let plan = node.plan(now, n.iface.clone());
            for (spec, giver) in node.implicit_handoffs() {
                self.handoffs
                    .insert(spec.clone(), (t, name.clone(), giver.clone()));
            }
            for a in &plan.actions {
                match a {
                    Action::Install(s) | Action::Renew(s) => {
                        n.iface.insert(s.clone());
                    }
                    Action::Remove(s) => {
                        n.iface.remove(s);
                    }
                    Action::Announce(_) => {}
                }
                self.actions.push((t, name.clone(), a.clone()));
            }
            let ok = vec![true; plan.actions.len()];
            node.executed(now, plan, &ok);
        }
        let (mut sent, mut transmits) = (0u64, 0usize);
        while let Some(out) = node.poll_transmit() {
            sent += out.payload.len() as u64;
            transmits += 1;
            self.seq += 1;
            self.flights.push(Flight {
                deliver_at: now.at + self.latency,
                seq: self.seq,
                from,
                to: out.to,
                payload: out.payload,
            });
        }
        if transmits > 0 {
            *self.sent_bytes.entry(name.clone()).or_insert(0) += sent;
        }
    }
}

/// Notes the hand-offs of `alloc` as seen at `t`.
fn note_handoffs(
    t: Duration,
    alloc: &fechter_core::Allocation,
    h: &mut BTreeMap<AddrSpec, (Duration, NodeId, NodeId)>,
) {
    for (spec, p) in &alloc.placements {
        if let Some(g) = &p.handoff_from {
            h.insert(spec.clone(), (t, p.holder.clone(), g.clone()));
        }
    }
}
