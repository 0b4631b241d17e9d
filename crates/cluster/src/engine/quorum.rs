//! This node's standing as the engine reports it (rules in
//! [`crate::standing`]): quorate, minority or fenced, the two-node witness,
//! the segment's signs of life.

use super::*;

impl Engine {
    /// What the standing is decided from at `now`.
    pub(super) fn standing_input<'a>(
        &'a self,
        now: Now,
        nodes: &'a BTreeMap<NodeId, NodeRecord>,
    ) -> standing::Input<'a> {
        standing::Input {
            me: &self.cfg.me.node,
            nodes,
            last_heard: self.duty.last_heard(),
            rule: self.cfg.quorum,
            now: now.at,
            started: self.started,
            timings: &self.cfg.timings,
        }
    }

    /// Decides the standing (see [`crate::standing`]) and reports a change.
    pub(super) fn check_quorum(&mut self, now: Now) {
        let was = self.standing.kind();
        let (change, ask) = {
            let s = &self.shared;
            let input = self.standing_input(now, &s.replica.nodes);
            let mut standing = self.standing.clone();
            let out = standing.check(&input);
            self.standing = standing;
            out
        };
        if ask {
            // Learn the current table and takeovers quickly.
            let peers: Vec<SocketAddr> = self.members.values().map(|m| m.addr).collect();
            for p in peers {
                self.send_digest(p, false);
            }
        }
        if was == Kind::Minority && change.is_some() {
            // Its takeovers as a minority were for itself: the table (or
            // the fence) decides again.
            let me = self.cfg.me.node.clone();
            self.duty.drop_takeovers_by(&me);
        }
        if was == Kind::Minority && change == Some(Change::Quorate) {
            // What it served as a minority goes by hand-off to the holders
            // the table names (they confirm once they have it).
            let me = self.cfg.me.node.clone();
            self.duty.left_minority(&me);
        } else if change == Some(Change::Quorate) {
            self.duty.forget_effective();
        }
        if change == Some(Change::Quorate) {
            // Back among a majority after hearing none: the silence of the
            // peers it does not hear yet is its own doing (a peer resumes
            // heartbeats to it only once SWIM says it is back). Their
            // silence counts from now, so that it takes over nobody the
            // majority still hears (as for a stall, see `liveness.rs`).
            self.duty.restart_silences(now.at);
        }
        self.changed_standing(now, change);
    }

    /// Reports a change of standing and re-evaluates what this node serves.
    pub(super) fn changed_standing(&mut self, now: Now, change: Option<Change>) {
        let Some(change) = change else {
            return;
        };
        self.events.push_back(match change {
            Change::Fenced => Event::Fenced,
            Change::Minority => Event::Minority,
            Change::Quorate => Event::Unfenced,
        });
        // After a fence or a minority, learn the table before leading.
        self.lead_after = self.lead_after.max(now.at + self.cfg.timings.lead_grace);
        self.dirty = true;
        self.after_input(now);
    }

    /// A gateway is configured: in a two-node cluster it breaks ties. The
    /// engine then asks for probes ([`Event::ProbeWitness`]) while this
    /// node does not hear its peer.
    pub fn enable_witness(&mut self) {
        self.standing.witness.configured = true;
    }

    /// The answer to a witness probe sent at `sent_at`.
    pub fn witness_answer(&mut self, sent_at: Instant, ok: bool) {
        self.standing.witness_answer(sent_at, ok);
    }

    pub(super) fn wants_witness(&self, now: Now) -> bool {
        let s = &self.shared;
        self.standing
            .wants_witness(&self.standing_input(now, &s.replica.nodes))
    }

    /// Whether this node holds nothing (no majority, and no sign of life on
    /// its segment, or just (re)started).
    pub fn fenced(&self) -> bool {
        self.standing.fenced()
    }

    /// Quorate, minority or fenced.
    pub fn standing(&self) -> Kind {
        self.standing.kind()
    }

    /// Whether the shell should report the segment's received-frame counter
    /// ([`Engine::handle_segment`]) on this tick: only while a majority is
    /// late or missing.
    pub fn wants_segment(&self, now: Now) -> bool {
        let s = &self.shared;
        self.standing
            .wants_sample(&self.standing_input(now, &s.replica.nodes))
    }

    /// The received-frame counter of this node's segment (the sum over the
    /// interfaces of its addresses): frames that arrive after the majority
    /// fell silent tell a minority from a node that is cut off.
    pub fn handle_segment(&mut self, now: Now, rx_frames: u64) {
        self.standing
            .sample(now.at, rx_frames, self.cfg.timings.heartbeat_interval);
    }
}
