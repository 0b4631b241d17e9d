//! The engine's duties beyond membership: leading (eligibility, allocation,
//! publishing tables), the standby fast path (heartbeats and takeovers) and
//! make-before-break hand-offs. Pure state and rules; the engine calls in
//! with `now` and sends what comes out.
//!
//! [`Duty`] is made of four parts, one file each, each owning its state
//! behind private fields. The engine calls methods of [`Duty`] only; it
//! never sees the parts.
//! - `leading.rs`: who leads, the maturity and quarantine clocks, the hold
//!   on publishing, the last eligibility; the leader's evaluation
//!   ([`Duty::lead`]);
//! - `standby.rs`: when each peer was last heard, the takeovers, the
//!   holders this node stands by for; the standby fast path (its rules are
//!   in that file's docs);
//! - `handoff.rs`: confirmed hand-offs, this node's own confirmations,
//!   implicit hand-offs and what a minority held; the hand-off rules of
//!   the allocation this node acts on;
//! - `acting.rs`: the allocation this node acts on, its refresh
//!   ([`Duty::refresh_effective`], [`Duty::refresh_minority`]) and the
//!   fixed point that lets a refresh return at once.
//!
//! One invariant spans parts: the refresh depends on the takeovers and the
//! confirmed hand-offs, so every change to them (but the refresh's own walk,
//! which starts from what it leaves) forgets the refresh's settled inputs.
//! The parts' mutators are private to this module, and the `Duty` methods
//! that call them (in the part's file) forget them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fechter_core::failover::Eligibility;
use fechter_core::replica::Replica;
use fechter_core::{AddrSpec, Allocation, NodeId};

mod acting;
mod handoff;
mod leading;
mod standby;

use acting::Acting;
use handoff::Handoffs;
use leading::Leading;
pub use leading::{LeaderDecision, LeaderInput};
use standby::Standby;

/// Timings of the duties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DutyTimings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub maturity: Duration,
    pub quarantine: Duration,
    pub lead_grace: Duration,
}

/// Duty state of one node: its parts (see the module docs).
#[derive(Debug, Default)]
pub struct Duty {
    leading: Leading,
    standby: Standby,
    handoffs: Handoffs,
    acting: Acting,
}

impl Duty {
    /// Who this node recognises as leader.
    pub fn leader(&self) -> Option<&NodeId> {
        self.leading.leader()
    }

    /// The last eligibility this node computed (for status).
    pub fn eligibility(&self) -> &Eligibility {
        self.leading.eligibility()
    }

    /// The allocation this node acts on: the table with takeovers and
    /// confirmed hand-offs applied.
    pub fn allocation(&self) -> &Allocation {
        self.acting.allocation()
    }

    /// When each peer's last heartbeat arrived.
    pub fn last_heard(&self) -> &BTreeMap<NodeId, Instant> {
        self.standby.last_heard()
    }

    /// `(holder, standby)` pairs: the standby took the holder's addresses.
    pub fn takeovers(&self) -> &BTreeSet<(NodeId, NodeId)> {
        self.standby.takeovers()
    }

    /// Addresses this node confirmed holding (not to resend every time).
    pub fn confirmed(&self) -> &BTreeSet<AddrSpec> {
        self.handoffs.confirmed()
    }

    /// Holders this node is standby for that have been silent for longer
    /// than `after` (and were heard before).
    pub fn silent_watched(&self, now: Instant, after: Duration) -> Vec<&NodeId> {
        self.standby.silent_watched(now, after)
    }

    /// What [`Duty::refresh_minority`] would act on with `live` heard.
    pub fn minority_view(
        &self,
        replica: &Replica,
        live: &BTreeSet<NodeId>,
        usable: impl Fn(&NodeId, &AddrSpec) -> bool,
    ) -> Allocation {
        acting::minority_view(replica, live, usable)
    }
}
