//! One agent's node, sans I/O: the [`Engine`] plus what this machine
//! installed and announced, the wire as the lock, and why each address came
//! or went. The agent's loop and the simulator drive the very same `Node`
//! in the same order; they differ only in how they do its I/O (a real
//! socket and netlink, or a simulated network and interface).
//!
//! ## A wake-up, in order
//! Every driver does this on each wake-up (the heartbeat tick, or a local
//! event such as a control request):
//! 1. [`Node::handle_datagram`] for every datagram that queued since the
//!    last wake-up (the agent reads them on its ticks, not as they arrive);
//! 2. [`Node::handle_claim`] for every claim read off the wire (an answer
//!    to a probe, a gratuitous ARP); the action it returns (defend or
//!    yield) is executed and reported back with [`Node::claim_done`];
//! 3. the segment's frame count, when [`Node::wants_segment`];
//! 4. [`Node::handle_timeout`]: the engine's timers;
//! 5. [`Node::wire_tick`]: the probes to send;
//! 6. [`Node::poll_event`] until `None`;
//! 7. when [`Node::plan_due`] (or the driver has its own reason: a link
//!    changed, a resync), [`Node::plan`] against the interfaces as read,
//!    record [`Plan::ahead`], execute the actions, report them with
//!    [`Node::executed`] and record what it returns;
//! 8. [`Node::poll_transmit`] until `None`: seal and send.
//!
//! Renewals between plans come from [`Node::renewals`]; a shutdown removes
//! what [`Node::release_all`] lists.
//!
//! ## Files
//! - `mod.rs` (here): the node, its inputs and outputs, its events.
//! - `apply.rs`: plans and what their execution changed.
//! - `wire.rs`: the wire as the lock, this node's side (probes, givers
//!   heard again, conflicts).
//! - [`reason`]: why an address was acquired or released.

mod apply;
pub mod reason;
mod wire;

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;

use fechter_core::alloc::Allocation;
use fechter_core::allowed::Allowed;
use fechter_core::claim::Standing;
use fechter_core::reconcile::{Action, renewals};
use fechter_core::{AddrSpec, NodeId};

pub use apply::Plan;
pub use fechter_core::claim::mac_text;
pub use reason::Reason;
pub use wire::Waiting;

use crate::engine::{Engine, Event, Now, Transmit};
use crate::wire_lock::WireLock;
use wire::Wire;

/// What a node reports, in order, through [`Node::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The engine's own event, as it reported it.
    Engine(Event),
    /// An address was installed on this machine.
    Acquired { address: AddrSpec, reason: Reason },
    /// An address was removed from this machine.
    Released { address: AddrSpec, reason: Reason },
    /// An address was announced (gratuitous ARP / unsolicited NA).
    Announced(AddrSpec),
    /// Another machine (`mac`) answers for an address this node holds.
    /// `kept`: this node defended it; otherwise it yielded it.
    Conflict {
        address: AddrSpec,
        mac: [u8; 6],
        kept: bool,
        standing: Standing,
    },
}

/// One node: the engine and this machine's side of the addresses.
pub struct Node {
    engine: Engine,
    /// Addresses this node installed (the driver records them, ahead).
    installed: BTreeSet<AddrSpec>,
    /// Addresses announced since this process began holding them.
    announced: BTreeSet<AddrSpec>,
    wire: Wire,
    /// The allocation of the last plan, and the holders taken over since:
    /// why an address is acquired or released.
    last_alloc: Allocation,
    took_over: BTreeSet<NodeId>,
    /// What this machine may ever hold (`allowed_prefixes`,
    /// `allowed_interfaces`): the rest of what the table gives it, it
    /// neither installs nor announces.
    allowed: Allowed,
    /// The allocation or the wire changed since the last plan.
    plan_due: bool,
    events: VecDeque<NodeEvent>,
}

impl Node {
    /// A node around `engine`, with what this machine recorded as
    /// installed by an earlier process (it is removed or kept by the first
    /// plan). `lock` is the wire lock's bookkeeping.
    pub fn new(engine: Engine, installed: BTreeSet<AddrSpec>, lock: WireLock) -> Node {
        Node {
            engine,
            installed,
            announced: BTreeSet::new(),
            wire: Wire::new(lock),
            last_alloc: Allocation::default(),
            took_over: BTreeSet::new(),
            allowed: Allowed::default(),
            plan_due: true,
            events: VecDeque::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine, for the operator's commands and local facts (health,
    /// links, admin status).
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn me(&self) -> &NodeId {
        &self.engine.id().node
    }

    /// What this node installed.
    pub fn installed(&self) -> &BTreeSet<AddrSpec> {
        &self.installed
    }

    /// What this node announced since it began holding it.
    pub fn announced(&self) -> &BTreeSet<AddrSpec> {
        &self.announced
    }

    /// Counters of the wire lock.
    pub fn wire_lock(&self) -> &WireLock {
        &self.wire.lock
    }

    /// How many addresses this node wants and waits for on the wire.
    pub fn waiting(&self) -> usize {
        self.wire.base.len()
    }

    pub fn handle_datagram(&mut self, now: Now, from: std::net::SocketAddr, payload: &[u8]) {
        self.engine.handle_datagram(now, from, payload);
    }

    pub fn handle_timeout(&mut self, now: Now) {
        self.engine.handle_timeout(now);
    }

    /// Whether the engine wants the segment's received-frame count now.
    pub fn wants_segment(&self, now: Now) -> bool {
        self.engine.wants_segment(now)
    }

    /// The count of frames received on the managed interfaces.
    pub fn handle_segment(&mut self, now: Now, rx_frames: u64) {
        self.engine.handle_segment(now, rx_frames);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.engine.poll_transmit()
    }

    /// Whether the allocation or the wire changed since the last plan.
    pub fn plan_due(&self) -> bool {
        self.plan_due
    }

    /// The driver could not plan now (the interfaces could not be read):
    /// not due again until something changes, rather than on every wake-up.
    pub fn plan_postponed(&mut self) {
        self.plan_due = false;
    }

    /// The next thing that happened. Draining the engine's events updates
    /// this node's side first: a member that came (back) or a regained
    /// quorum makes every held address announced again (clients on the
    /// other side may still point at a stale MAC); a takeover is remembered
    /// as the reason of the acquires it causes.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        if let Some(ev) = self.events.pop_front() {
            return Some(ev);
        }
        let ev = self.engine.poll_event()?;
        match &ev {
            Event::MemberUp(_) | Event::Unfenced => {
                self.announced.clear();
                self.plan_due = true;
            }
            Event::Minority | Event::AllocationChanged => self.plan_due = true,
            Event::TookOver { holder, .. } => {
                self.took_over.insert(holder.clone());
            }
            _ => {}
        }
        Some(NodeEvent::Engine(ev))
    }

    /// An address this node installed vanished from its interface (the
    /// kernel said so): announce it again when it is put back. Returns
    /// whether it was this node's.
    pub fn vanished(&mut self, spec: &AddrSpec) -> bool {
        if !self.installed.contains(spec) {
            return false;
        }
        self.announced.remove(spec);
        self.plan_due = true;
        true
    }

    /// Forgets what was announced, so that the next plan announces every
    /// held address again (the periodic refresh).
    pub fn forget_announced(&mut self) {
        self.announced.clear();
        self.plan_due = true;
    }

    /// The lease renewals due for what this node installed and still
    /// serves (holder, or giver in a hand-off), without a plan.
    pub fn renewals(&self) -> Vec<Action> {
        renewals(self.me(), &self.acting(), &self.installed)
    }

    /// What this machine may ever hold.
    pub fn allowed(&self) -> &Allowed {
        &self.allowed
    }

    /// Restricts what this machine may ever hold.
    pub fn set_allowed(&mut self, allowed: Allowed) {
        self.allowed = allowed;
        self.plan_due = true;
    }

    /// The addresses the table gives this node (as holder or giver) that it
    /// may not hold here: it leaves them unserved (status shows them).
    pub fn refused(&self) -> Vec<AddrSpec> {
        let me = self.me();
        self.engine
            .allocation()
            .placements
            .iter()
            .filter(|(s, p)| {
                (&p.holder == me || p.handoff_from.as_ref() == Some(me)) && !self.allowed.permits(s)
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// The allocation this node acts on: the engine's, without what the
    /// table gives it but it may not hold (borrowed when nothing is
    /// restricted).
    fn acting(&self) -> Cow<'_, Allocation> {
        let alloc = self.engine.allocation();
        if !self.allowed.restricts() {
            return Cow::Borrowed(alloc);
        }
        let me = self.me();
        let mut alloc = alloc.clone();
        alloc.placements.retain(|s, p| {
            self.allowed.permits(s) || (&p.holder != me && p.handoff_from.as_ref() != Some(me))
        });
        Cow::Owned(alloc)
    }

    /// The removals of a shutdown: everything installed. Report them with
    /// [`Node::executed`].
    pub fn release_all(&self) -> Plan {
        Plan::shutdown(&self.installed)
    }

    /// A claim heard on the wire: another machine (`mac`) answers for
    /// `ip`. Returns what to do about an address this node holds (announce
    /// to defend it, or remove to yield it); report it with
    /// [`Node::claim_done`].
    pub fn handle_claim(&mut self, now: Now, ip: IpAddr, mac: [u8; 6]) -> Option<Action> {
        let me = self.me().clone();
        let standing = self.engine.standing();
        let alloc = self.engine.allocation();
        let held = self
            .installed
            .iter()
            .find(|s| s.ip == ip && alloc.placements.get(*s).is_some_and(|p| p.holder == me))
            .cloned();
        self.wire
            .claim(now, ip, mac, held, standing, &mut self.events)
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests;
