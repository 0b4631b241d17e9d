//! This node's standing: may it lead, may it serve, and on what terms.
//!
//! Owns every piece of quorum state the engine used to keep loose: when a
//! majority was last heard, the fence and its hold, the two-node witness,
//! and the signs of life on this node's segment. Transitions are returned
//! as [`Change`]s, so the engine reports exactly what changed.
//!
//! - **Quorate**: hears (heartbeats) a strict majority of the nodes it
//!   counts (itself included; nodes that left gracefully and nodes the
//!   operator forgot, `fechter forget`, do not count).
//! - **Minority**: hears no majority for `fence_after`, but frames arrived
//!   on its segment *after* the majority fell silent: the segment is there,
//!   only the cluster is not. It keeps serving what it holds and may take
//!   what nobody on the wire answers for (the wire is the lock:
//!   `fechter_core::claim`), but it never leads.
//! - **Fenced**: hears no majority and nothing on its segment since: it may
//!   be the one cut off, so it holds nothing (it lets go after
//!   `fence_after`, before the majority's standbys act after
//!   `heartbeat_timeout`).
//!
//! Signs of life are the interface's received-frame counter, sampled by
//! the shell on each heartbeat tick while a majority is late (see
//! [`Standing::wants_sample`]). A frame counts only if it arrived after the
//! sample that followed the majority's last heartbeat: the heartbeats that
//! went silent are not themselves a sign of life.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fechter_core::NodeId;
use fechter_core::claim::Standing as Kind;
use fechter_core::replica::NodeRecord;

use crate::engine::{Quorum, Timings};

/// A transition of the standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Lost the majority and the segment looks dead: holds nothing.
    Fenced,
    /// Lost the majority but the segment is alive: serves what the wire
    /// shows free, never leads.
    Minority,
    /// Hears a majority again.
    Quorate,
}

/// The gateway as the two-node tie-breaker: a node that lost its only peer
/// keeps quorum only while the gateway answers probes sent after it lost it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Witness {
    pub configured: bool,
    /// When the newest probe that was answered was sent.
    ok_sent_at: Option<Instant>,
    pub outstanding: bool,
}

/// The received-frame counter of this node's segment, as sampled.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    /// The previous sample: when, and the counter.
    last: Option<(Instant, u64)>,
    /// A frame arrived after this instant (the sample before the growth).
    life_after: Option<Instant>,
}

/// What the standing is decided from, on each heartbeat tick.
pub struct Input<'a> {
    pub me: &'a NodeId,
    pub nodes: &'a BTreeMap<NodeId, NodeRecord>,
    pub last_heard: &'a BTreeMap<NodeId, Instant>,
    pub rule: Quorum,
    pub now: Instant,
    pub started: Instant,
    pub timings: &'a Timings,
}

/// This node's standing and the state it is decided from.
#[derive(Debug, Clone)]
pub struct Standing {
    kind: Kind,
    /// When a majority was last heard.
    last_quorate: Instant,
    /// When the majority was last heard before the current loss.
    lost_at: Instant,
    /// While fenced but quorate again: holds nothing until then.
    hold_until: Option<Instant>,
    pub witness: Witness,
    segment: Segment,
}

impl Standing {
    /// A (re)started node holds nothing until `hold` has passed with a
    /// majority heard: it first learns the cluster's table and takeovers.
    pub fn starting(now: Instant, hold: Duration) -> Standing {
        Standing {
            kind: Kind::Fenced,
            last_quorate: now,
            lost_at: now,
            hold_until: Some(now + hold),
            witness: Witness::default(),
            segment: Segment::default(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Holds nothing.
    pub fn fenced(&self) -> bool {
        self.kind == Kind::Fenced
    }

    /// Hears a majority (may lead and publish).
    pub fn quorate(&self) -> bool {
        self.kind == Kind::Quorate
    }

    /// This node's own loop stalled for `stall` (longer than the heartbeat
    /// timeout): its standbys may have taken its addresses, so it holds
    /// nothing until it has heard the cluster for `hold`, as after a start.
    pub fn stalled(&mut self, now: Instant, stall: Duration, hold: Duration) -> Option<Change> {
        if self.fenced() {
            return None;
        }
        self.kind = Kind::Fenced;
        self.lost_at = now - stall;
        self.hold_until = Some(now + hold);
        Some(Change::Fenced)
    }

    /// A sample of the segment's received-frame counter.
    pub fn sample(&mut self, now: Instant, rx_frames: u64, interval: Duration) {
        if let Some((at, before)) = self.segment.last
            && rx_frames > before
            && now.saturating_duration_since(at) <= interval * 3
        {
            self.segment.life_after = Some(at);
        }
        self.segment.last = Some((now, rx_frames));
    }

    /// Whether the shell should sample the segment on this tick: while the
    /// majority is late by a heartbeat interval, or while not quorate.
    pub fn wants_sample(&self, input: &Input<'_>) -> bool {
        if input.rule == Quorum::Off {
            return false;
        }
        !self.quorate()
            || self.majority_heard_at(input).is_none_or(|s| {
                input.now.saturating_duration_since(s) >= input.timings.heartbeat_interval
            })
    }

    /// Whether a frame arrived on the segment after `since`, and within the
    /// last `recent`.
    fn alive_since(&self, since: Instant, now: Instant, recent: Duration) -> bool {
        self.segment
            .life_after
            .is_some_and(|t| t >= since && now.saturating_duration_since(t) <= recent)
    }

    /// When this node last heard a strict majority of the nodes it counts
    /// (itself included; nodes that left gracefully or were forgotten are
    /// not counted): the
    /// latest instant at which enough peers had sent a heartbeat. `now` when
    /// no peer is needed.
    pub fn majority_heard_at(&self, input: &Input<'_>) -> Option<Instant> {
        if input.rule == Quorum::Off {
            return Some(input.now);
        }
        let me = input.me;
        let counted: Vec<&NodeId> = input
            .nodes
            .values()
            .filter(|r| &r.id == me || (!r.leaving && !r.forgotten))
            .map(|r| &r.id)
            .collect();
        let known = counted.len().max(1);
        if known == 2 {
            // Two nodes: alone, the gateway is the tie-breaker when one is
            // configured. Without one, the peer must be heard; a lone node
            // then serves only as a minority, where the wire shows nobody
            // else serves (and its segment shows life).
            let peer = counted
                .iter()
                .find(|n| **n != me)
                .and_then(|n| input.last_heard.get(*n).copied());
            if !self.witness.configured {
                return peer;
            }
            // The witness counts only for probes sent after the peer fell
            // silent: the node cut off from the gateway cannot get one.
            return match (self.witness.ok_sent_at, peer) {
                (Some(ok), Some(p)) => Some(ok.max(p)),
                (ok, p) => ok.or(p),
            };
        }
        let need = known / 2; // peers needed: (need + 1) * 2 > known
        if need == 0 {
            return Some(input.now);
        }
        let mut heard: Vec<Instant> = counted
            .iter()
            .filter(|n| **n != me)
            .filter_map(|n| input.last_heard.get(*n).copied())
            .collect();
        heard.sort_unstable_by(|a, b| b.cmp(a));
        heard.get(need - 1).copied()
    }

    /// Decides the standing on a heartbeat tick. Losing the majority for
    /// `fence_after` makes the node a minority if its segment showed life
    /// after the majority fell silent, else fences it. A majority heard
    /// again lifts a minority at once (it never stopped serving what the
    /// wire gave it), and a fence at once after a short loss, or after
    /// `resume_hold` after a long one (the node first asks for the current
    /// table and takeovers: `Some(true)` in the second value asks the engine
    /// to send digests).
    pub fn check(&mut self, input: &Input<'_>) -> (Option<Change>, bool) {
        let t = input.timings;
        let now = input.now;
        let seen = self.majority_heard_at(input);
        let quiet = seen.map_or(Duration::MAX, |s| now.saturating_duration_since(s));
        if quiet < t.fence_after {
            if let Some(s) = seen {
                self.last_quorate = s;
            }
            return match self.kind {
                Kind::Quorate => (None, false),
                Kind::Minority => {
                    self.kind = Kind::Quorate;
                    self.hold_until = None;
                    (Some(Change::Quorate), true)
                }
                Kind::Fenced => {
                    let silence = now.saturating_duration_since(self.lost_at);
                    match self.hold_until {
                        Some(h) if now >= h => self.lift(),
                        Some(_) => (None, false),
                        None if silence < t.heartbeat_timeout => self.lift(),
                        None => {
                            self.hold_until = Some(now + t.resume_hold);
                            (None, true)
                        }
                    }
                }
            };
        }
        // No majority for `fence_after`.
        let starting = now.saturating_duration_since(input.started) < t.lead_grace;
        let since = seen.unwrap_or(self.last_quorate);
        let target = match self.kind {
            // The first decision: life must have come after the majority's
            // last heartbeat, or this node may be the one cut off.
            Kind::Quorate => {
                if self.alive_since(since, now, t.fence_after) {
                    Kind::Minority
                } else {
                    Kind::Fenced
                }
            }
            // A minority stays one while its segment keeps showing life.
            Kind::Minority => {
                if self.alive_since(since, now, t.isolation) {
                    Kind::Minority
                } else {
                    Kind::Fenced
                }
            }
            // A fenced node becomes a minority on fresh life (not while it
            // is still starting: it first learns who the members are).
            Kind::Fenced => {
                if !starting && self.alive_since(since, now, t.fence_after) {
                    Kind::Minority
                } else {
                    Kind::Fenced
                }
            }
        };
        // Still no majority: any earlier resume countdown starts over.
        self.hold_until = None;
        if target == self.kind {
            return (None, false);
        }
        if self.kind == Kind::Quorate {
            if starting {
                return (None, false);
            }
            self.lost_at = since;
        }
        self.kind = target;
        let change = match target {
            Kind::Fenced => Change::Fenced,
            Kind::Minority => Change::Minority,
            Kind::Quorate => Change::Quorate,
        };
        (Some(change), false)
    }

    fn lift(&mut self) -> (Option<Change>, bool) {
        self.kind = Kind::Quorate;
        self.hold_until = None;
        (Some(Change::Quorate), false)
    }

    /// The answer to a witness probe sent at `sent_at`.
    pub fn witness_answer(&mut self, sent_at: Instant, ok: bool) {
        self.witness.outstanding = false;
        if ok {
            self.witness.ok_sent_at =
                Some(self.witness.ok_sent_at.map_or(sent_at, |t| t.max(sent_at)));
        }
    }

    /// Two-node cluster with a witness, peer quiet for more than one and a
    /// half heartbeat intervals: time to probe the gateway.
    pub fn wants_witness(&self, input: &Input<'_>) -> bool {
        if !self.witness.configured || self.witness.outstanding {
            return false;
        }
        let me = input.me;
        let counted: Vec<&NodeRecord> = input
            .nodes
            .values()
            .filter(|r| &r.id == me || (!r.leaving && !r.forgotten))
            .collect();
        if counted.len() != 2 {
            return false;
        }
        counted
            .iter()
            .find(|r| &r.id != me)
            .and_then(|r| input.last_heard.get(&r.id))
            .is_none_or(|t| {
                input.now.saturating_duration_since(*t) > input.timings.heartbeat_interval * 3 / 2
            })
    }
}

#[cfg(test)]
#[path = "standing_tests.rs"]
mod tests;
