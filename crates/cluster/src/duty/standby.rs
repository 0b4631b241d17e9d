//! The standby part of [`Duty`]: heartbeats heard, takeovers, and the
//! holders this node stands by for.
//!
//! ## Standby fast path
//! SWIM needs a few hundred milliseconds to declare a node dead. So, as VRRP
//! and BFD do, every node also sends a tiny sealed heartbeat to every live
//! member every `heartbeat_interval`. A standby that has heard a holder
//! before and then hears nothing for `heartbeat_timeout` takes over, at once,
//! the addresses that holder held with it as standby, and tells everyone
//! ([`Packet::Takeover`]). Because the standby is defined as where
//! [`fechter_core::allocate`] puts an address when its holder fails, the
//! leader's next table agrees; the leader also keeps the unheard holder
//! ineligible for a quarantine period. A holder that learns its addresses
//! were taken (it was alive but unheard) releases them at once.
//! Heartbeats go to all live members rather than only to standbys so that a
//! standby never mistakes a holder that runs on an older table for a dead
//! one; this costs n·(n−1) small datagrams per interval and suits the
//! clusters of a few to a few dozen machines this tool is for.
//!
//! [`Packet::Takeover`]: fechter_core::wire::Packet::Takeover

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fechter_core::leader::TableMeta;
use fechter_core::replica::Table;
use fechter_core::{Allocation, NodeId};

use super::Duty;

/// Owns when each peer was last heard, the takeovers in force, and the
/// holders this node stands by for in the table it follows.
///
/// Invariants:
/// - a takeover is added or dropped only through the [`Duty`] methods of
///   this file (which forget the settled inputs of
///   [`Duty::refresh_effective`]), or by the refresh's own walk
///   ([`Standby::keep_placed`]), which starts again from them;
/// - `watched` is computed from the table whose identity it carries, and
///   recomputed when the followed table changes.
#[derive(Debug, Default)]
pub(super) struct Standby {
    /// When each peer's last heartbeat arrived.
    last_heard: BTreeMap<NodeId, Instant>,
    /// No holder's silence counts from before this instant: when this node
    /// regained quorum after hearing none, a silence it caused by being
    /// cut off is no reason to take over (see `Duty::restart_silences`).
    silence_from: Option<Instant>,
    /// `(holder, standby)`: the standby took the holder's addresses.
    takeovers: BTreeSet<(NodeId, NodeId)>,
    /// The holders this node is standby for in the table it follows (by
    /// that table's identity): read on every heartbeat tick, so computed
    /// once per table, not once per tick over every placement.
    watched: Option<(TableMeta, Vec<NodeId>)>,
}

impl Standby {
    pub(super) fn last_heard(&self) -> &BTreeMap<NodeId, Instant> {
        &self.last_heard
    }

    pub(super) fn takeovers(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.takeovers
    }

    /// Records that `by` took `holder`'s addresses; whether it is new.
    pub(super) fn add_takeover(&mut self, holder: NodeId, by: NodeId) -> bool {
        self.takeovers.insert((holder, by))
    }

    /// Forgets every takeover `by` made; whether any was.
    pub(super) fn drop_takeovers_by(&mut self, by: &NodeId) -> bool {
        let before = self.takeovers.len();
        self.takeovers.retain(|(_, s)| s != by);
        self.takeovers.len() != before
    }

    /// Drops the takeovers that `table` no longer needs (the leader caught
    /// up, or moved the addresses elsewhere).
    pub(super) fn keep_placed(&mut self, table: &Allocation) {
        self.takeovers.retain(|(h, s)| {
            table
                .placements
                .values()
                .any(|p| &p.holder == h && p.standby.as_ref() == Some(s))
        });
    }

    /// Holders this node is standby for that have been silent for longer
    /// than `after` (and were heard before).
    pub(super) fn silent_watched(&self, now: Instant, after: Duration) -> Vec<&NodeId> {
        let watched = self.watched.as_ref().map_or(&[][..], |(_, h)| h);
        watched
            .iter()
            .filter(|h| {
                self.last_heard.get(*h).is_some_and(|heard| {
                    let since = self.silence_from.map_or(*heard, |f| f.max(*heard));
                    now.saturating_duration_since(since) > after
                })
            })
            .collect()
    }

    /// Holders this node (as standby) has heard and now finds silent, with
    /// `watched` brought up to `table` first.
    fn silent_holders(
        &mut self,
        me: &NodeId,
        table: &Table,
        now: Instant,
        timeout: Duration,
    ) -> Vec<NodeId> {
        if self
            .watched
            .as_ref()
            .is_none_or(|(meta, _)| *meta != table.meta)
        {
            let holders: BTreeSet<&NodeId> = table
                .allocation
                .placements
                .values()
                .filter(|p| p.standby.as_ref() == Some(me) && &p.holder != me)
                .map(|p| &p.holder)
                .collect();
            let holders = holders.into_iter().cloned().collect();
            self.watched = Some((table.meta.clone(), holders));
        }
        self.silent_watched(now, timeout)
            .into_iter()
            .cloned()
            .collect()
    }
}

impl Duty {
    /// A heartbeat from `node` arrived `at`.
    pub fn heard(&mut self, node: NodeId, at: Instant) {
        self.standby.last_heard.insert(node, at);
    }

    /// This node stalled `late` past its tick, and so, it seems, did its
    /// peers: every peer is credited the lateness (never past `now`).
    pub fn credit_stall(&mut self, late: Duration, now: Instant) {
        for at in self.standby.last_heard.values_mut() {
            *at = (*at + late).min(now);
        }
    }

    /// Back among a majority after hearing none: every peer's silence
    /// counts from `now` (see `engine/quorum.rs`).
    /// Only the holder check reads it: liveness, quorum and "heard again"
    /// keep the real times.
    pub fn restart_silences(&mut self, now: Instant) {
        self.standby.silence_from = Some(now);
    }

    /// Forgets every takeover `by` made (a minority's, when it is one no
    /// more).
    pub fn drop_takeovers_by(&mut self, by: &NodeId) {
        if self.standby.drop_takeovers_by(by) {
            self.acting.unsettle();
        }
    }

    /// Records that `by` took `holder`'s addresses; whether it is new.
    pub fn add_takeover(&mut self, holder: NodeId, by: NodeId) -> bool {
        let new = self.standby.add_takeover(holder, by);
        if new {
            self.acting.unsettle();
        }
        new
    }

    /// Holders this node (as standby) has heard and now finds silent: it
    /// takes their addresses. Returns the new takeovers.
    pub fn check_holders(
        &mut self,
        me: &NodeId,
        table: Option<&Table>,
        now: Instant,
        timeout: Duration,
    ) -> Vec<NodeId> {
        let Some(t) = table else {
            return Vec::new();
        };
        let silent = self.standby.silent_holders(me, t, now, timeout);
        silent
            .into_iter()
            .filter(|h| self.add_takeover(h.clone(), me.clone()))
            .collect()
    }

    /// Records a takeover reported by `by` (made against table `_meta`):
    /// it applies while the followed table still has `holder` holding
    /// addresses with `by` as standby.
    pub fn takeover_reported(
        &mut self,
        holder: NodeId,
        by: NodeId,
        _meta: &TableMeta,
        table: Option<&Table>,
        now: Instant,
        settle: Duration,
    ) {
        let applies = table.is_some_and(|t| {
            t.allocation
                .placements
                .values()
                .any(|p| p.holder == holder && p.standby.as_ref() == Some(&by))
        });
        if applies {
            self.add_takeover(holder.clone(), by);
        }
        self.suspect(holder, now, settle);
    }
}
