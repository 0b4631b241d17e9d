//! Who is alive: heartbeats (and the stall credit), live peers, standby
//! takeovers and their notices, and what a standby is about to take.

use super::*;

impl Engine {
    /// The incarnation `node` last sent a heartbeat with, however long ago.
    pub fn last_incarnation(&self, node: &NodeId) -> Option<u64> {
        self.heard.get(node).map(|(_, inc)| *inc)
    }

    /// The incarnation `node` last sent a heartbeat with, if it was heard
    /// within the heartbeat timeout.
    pub fn heard_recently(&self, now: Now, node: &NodeId) -> Option<u64> {
        let recent = self.duty.last_heard().get(node).is_some_and(|t| {
            now.at.saturating_duration_since(*t) <= self.cfg.timings.heartbeat_timeout
        });
        if !recent {
            return None;
        }
        self.heard.get(node).map(|(_, inc)| *inc)
    }

    /// Sends heartbeats to every live member and takes over from silent holders.
    pub(super) fn heartbeat(&mut self, now: Now) {
        let hb = wire::encode(&Packet::Heartbeat {
            from: self.cfg.me.node.clone(),
            incarnation: self.cfg.me.incarnation,
        });
        for to in self.live_peers(now).into_values() {
            self.out.push_back(Transmit {
                to,
                payload: hb.clone(),
            });
        }
        let t = self.cfg.timings.clone();
        let stall = now.at.saturating_duration_since(self.last_tick);
        self.last_tick = now.at;
        let late = stall.saturating_sub(t.heartbeat_interval);
        // Did the others run while this node did not? Then the silence of
        // a peer over that time is real.
        let world_ran = self.heard_since_tick.values().any(|n| *n >= 2);
        self.heard_since_tick.clear();
        if late > t.heartbeat_interval && !world_ran {
            // This node did not run for a while, and neither, it seems, did
            // its peers (a paused virtual machine, a host starved of CPU):
            // no peer was heard more than once over the whole stall, while
            // datagrams that queued meanwhile have been heard already (the
            // agent and the simulator read them before timers). Credit
            // every peer the lateness, so that neither the quorum check nor
            // the holder check judges them on a stall they shared. Where
            // the others kept running (they were heard again and again),
            // nothing is credited: a dead holder stays dead, however busy
            // this node is.
            self.duty.credit_stall(late, now.at);
        }
        if stall > t.stall_distrust() {
            // Long enough to distrust the view it woke up with: do not lead
            // on it.
            self.lead_after = now.at + t.lead_grace;
            if stall >= t.heartbeat_timeout {
                // Long enough for our standbys to have taken our addresses:
                // hold nothing until we have learned what happened, as
                // after a restart.
                let change = self.standing.stalled(now.at, stall, t.rejoin_hold);
                self.changed_standing(now, change);
            }
            return;
        }
        if self.wants_witness(now) {
            self.standing.witness.outstanding = true;
            self.events.push_back(Event::ProbeWitness);
        }
        self.check_quorum(now);
        if self.duty.end_hold(now.at) {
            self.dirty = true;
        }
        if !self.standing.fenced() {
            let me = self.cfg.me.node.clone();
            let new = {
                let s = &self.shared;
                self.duty.check_holders(
                    &me,
                    s.replica.table.as_ref(),
                    now.at,
                    self.cfg.timings.heartbeat_timeout,
                )
            };
            if !new.is_empty() {
                self.took_over(now, &new);
            }
        }
        if self.dirty {
            self.after_input(now);
        }
    }

    /// A heartbeat from `node` (incarnation `incarnation`) at `from`: it is
    /// alive; a restart takes its addresses at once; a holder heard again
    /// after a silence is told of the takeover and of what this node holds.
    pub(super) fn heard_heartbeat(
        &mut self,
        now: Now,
        from: SocketAddr,
        node: NodeId,
        incarnation: u64,
    ) {
        let was_silent = self.duty.last_heard().get(&node).is_none_or(|t| {
            now.at.saturating_duration_since(*t) > self.cfg.timings.heartbeat_timeout
        });
        let restarted = self
            .heard
            .get(&node)
            .is_some_and(|(_, inc)| incarnation > *inc);
        self.heard.insert(node.clone(), (from, incarnation));
        self.duty.heard(node.clone(), now.at);
        *self.heard_since_tick.entry(node.clone()).or_insert(0) += 1;
        if restarted {
            // The holder restarted: whatever it held is gone with its
            // old process (or will be): take over at once.
            self.take_over_from(now, &[node]);
            return;
        }
        let me = &self.cfg.me.node;
        if was_silent && self.duty.takeovers().contains(&(node.clone(), me.clone())) {
            // A holder we took over from is heard again: tell it at
            // once, so it does not serve the addresses beside us.
            self.send_takeover_notices(now);
        }
        if was_silent {
            // It may have served some of our addresses meanwhile (as
            // a minority): confirm what we hold, so it lets go.
            self.confirm_to(from);
        }
    }

    /// A heartbeat with this node's own id came from `from`: reported,
    /// at most every [`DUPLICATE_REPORT_EVERY`], and otherwise ignored.
    pub(super) fn duplicate_id(&mut self, now: Now, from: SocketAddr) {
        if self
            .duplicate_reported
            .is_some_and(|t| now.at.saturating_duration_since(t) < DUPLICATE_REPORT_EVERY)
        {
            return;
        }
        self.duplicate_reported = Some(now.at);
        self.events.push_back(Event::DuplicateId { addr: from });
    }

    /// Queues `payload` for every live peer.
    pub(super) fn send_to_peers(&mut self, payload: &[u8]) {
        for to in self.peer_addrs() {
            self.out.push_back(Transmit {
                to,
                payload: payload.to_vec(),
            });
        }
    }

    /// This node and every live peer as of the last heartbeat tick: the
    /// liveness decisions use, for status and metrics to show.
    pub fn alive(&self) -> BTreeSet<NodeId> {
        let mut out: BTreeSet<NodeId> = self.live_at_last_tick().into_keys().collect();
        out.insert(self.cfg.me.node.clone());
        out
    }

    /// Where to reach every live peer, as of the last heartbeat tick.
    pub(super) fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.live_at_last_tick().into_values().collect()
    }

    /// [`Engine::live_peers`] as of the last heartbeat tick.
    fn live_at_last_tick(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.live_peers(Now {
            at: self.last_tick,
            wall_ms: 0,
        })
    }

    /// Live peers and where to reach them: SWIM members, plus nodes heard
    /// (heartbeats) within the heartbeat timeout, which SWIM may briefly
    /// believe dead after a partition heals.
    pub(super) fn live_peers(&self, now: Now) -> BTreeMap<NodeId, SocketAddr> {
        let mut out: BTreeMap<NodeId, SocketAddr> = self
            .members
            .iter()
            .map(|(n, id)| (n.clone(), id.addr))
            .collect();
        for (n, (addr, _)) in &self.heard {
            let recent = self.duty.last_heard().get(n).is_some_and(|t| {
                now.at.saturating_duration_since(*t) <= self.cfg.timings.heartbeat_timeout
            });
            if recent && *n != self.cfg.me.node {
                out.entry(n.clone()).or_insert(*addr);
            }
        }
        out
    }

    /// Takes, as standby, the addresses of `holders` (a restart seen in a
    /// heartbeat), unless fenced.
    pub(super) fn take_over_from(&mut self, now: Now, holders: &[NodeId]) {
        if self.standing.fenced() {
            return;
        }
        let me = self.cfg.me.node.clone();
        let new: Vec<NodeId> = {
            let s = &self.shared;
            let Some(t) = s.replica.table.as_ref() else {
                return;
            };
            holders
                .iter()
                .filter(|h| {
                    t.allocation
                        .placements
                        .values()
                        .any(|p| &p.holder == *h && p.standby.as_ref() == Some(&me))
                })
                .filter(|h| self.duty.add_takeover((*h).clone(), me.clone()))
                .cloned()
                .collect()
        };
        if !new.is_empty() {
            self.took_over(now, &new);
            self.after_input(now);
        }
    }

    pub(super) fn took_over(&mut self, now: Now, holders: &[NodeId]) {
        let settle = self.cfg.timings.takeover_settle();
        for h in holders {
            let silence = self
                .duty
                .last_heard()
                .get(h)
                .map_or(Duration::ZERO, |t| now.at.saturating_duration_since(*t));
            self.duty.suspect(h.clone(), now.at, settle);
            self.events.push_back(Event::TookOver {
                holder: h.clone(),
                silence,
            });
        }
        self.send_takeover_notices(now);
        self.dirty = true;
    }

    /// This node and the peers it heard within the heartbeat timeout.
    pub(super) fn heard_live(&self, now: Now) -> BTreeSet<NodeId> {
        let timeout = self.cfg.timings.heartbeat_timeout;
        self.duty
            .last_heard()
            .iter()
            .filter(|(_, t)| now.at.saturating_duration_since(**t) <= timeout)
            .map(|(n, _)| n.clone())
            .chain([self.cfg.me.node.clone()])
            .collect()
    }

    /// Addresses this node is about to take: as standby, their holder has
    /// been silent for a third of the takeover timeout; without a majority,
    /// what it would take as a minority from the nodes silent that long. The shell probes them early
    /// (the wire as the lock), so that the probe window does not delay the
    /// takeover.
    pub fn soon_taken(&self, now: Now) -> Vec<AddrSpec> {
        if self.standing.fenced() {
            return Vec::new();
        }
        // A third of the timeout: the first probe goes out a tick later, and
        // the window (at most half the timeout) is over by the takeover.
        let half = self.cfg.timings.heartbeat_timeout / 3;
        let me = &self.cfg.me.node;
        if !self.standing.quorate() || self.wants_segment(now) {
            // No majority (or it is late): what this node would take as a
            // minority once the silent are unheard for the whole timeout
            // (orphans whose standby is silent too included).
            let live: BTreeSet<NodeId> = self
                .duty
                .last_heard()
                .iter()
                .filter(|(_, t)| now.at.saturating_duration_since(**t) <= half)
                .map(|(n, _)| n.clone())
                .chain([me.clone()])
                .collect();
            let s = &self.shared;
            let nodes = &s.replica.nodes;
            let view = self
                .duty
                .minority_view(&s.replica, &live, |n, spec| serves(nodes.get(n), spec));
            let now_mine = self.duty.allocation();
            return view
                .placements
                .into_iter()
                .filter(|(spec, p)| {
                    &p.holder == me
                        && now_mine
                            .placements
                            .get(spec)
                            .is_none_or(|q| &q.holder != me)
                })
                .map(|(spec, _)| spec)
                .collect();
        }
        let silent = self.duty.silent_watched(now.at, half);
        if silent.is_empty() {
            return Vec::new();
        }
        let s = &self.shared;
        let Some(t) = s.replica.table.as_ref() else {
            return Vec::new();
        };
        t.allocation
            .placements
            .iter()
            .filter(|(_, p)| p.standby.as_ref() == Some(me) && silent.contains(&&p.holder))
            .map(|(spec, _)| spec.clone())
            .collect()
    }

    /// Tells every peer of this node's takeovers, if it is quorate: a
    /// minority takes over only for itself (the wire decides what it
    /// installs), and its notices would make a holder the majority still
    /// hears let go.
    pub(super) fn send_takeover_notices(&mut self, now: Now) {
        if !self.standing.quorate() {
            return;
        }
        let me = self.cfg.me.node.clone();
        let Some(meta) = self.shared.replica.table.as_ref().map(|t| t.meta.clone()) else {
            return;
        };
        self.last_takeover_notice = Some(now.at);
        let mine: Vec<NodeId> = self
            .duty
            .takeovers()
            .iter()
            .filter(|(_, by)| *by == me)
            .map(|(h, _)| h.clone())
            .collect();
        for holder in mine {
            let payload = wire::encode(&Packet::Takeover {
                holder,
                by: me.clone(),
                table: meta.clone(),
            });
            self.send_to_peers(&payload);
        }
    }

    /// Takeover notices are repeated while in force, in case one was lost.
    pub(super) fn resend_takeovers(&mut self, now: Now) {
        let due = self
            .last_takeover_notice
            .is_some_and(|t| now.at.saturating_duration_since(t) >= TAKEOVER_RESEND);
        if due {
            self.send_takeover_notices(now);
        }
    }
}
