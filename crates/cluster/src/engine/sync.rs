//! The replicated state between nodes: broadcasts, digests and
//! anti-entropy, and confirmations of what this node installed.

use super::*;

impl Engine {
    /// The shell installed and announced `installed` (its record after a
    /// reconcile): tells every member which addresses this node now holds,
    /// so that their givers (planned or implicit hand-offs) let go.
    pub fn confirm_installed(&mut self, now: Now, installed: &BTreeSet<AddrSpec>) {
        let me = self.cfg.me.node.clone();
        let fresh: Vec<AddrSpec> = self
            .duty
            .allocation()
            .placements
            .iter()
            .filter(|(s, p)| p.holder == me && installed.contains(*s))
            .filter(|(s, _)| !self.duty.confirmed().contains(*s))
            .map(|(s, _)| s.clone())
            .collect();
        if fresh.is_empty() {
            return;
        }
        for chunk in fresh.chunks(CONFIRM_CHUNK) {
            let payload = wire::encode(&Packet::HandoffDone {
                by: me.clone(),
                specs: chunk.to_vec(),
            });
            self.send_to_peers(&payload);
        }
        for s in fresh {
            self.duty.confirmed_holding(s, &me);
        }
        self.dirty = true;
        self.after_input(now);
    }

    /// Confirms to `to` every address this node confirmed holding.
    pub(super) fn confirm_to(&mut self, to: SocketAddr) {
        let me = self.cfg.me.node.clone();
        let held: Vec<AddrSpec> = self.duty.confirmed().iter().cloned().collect();
        for chunk in held.chunks(CONFIRM_CHUNK) {
            self.out.push_back(Transmit {
                to,
                payload: wire::encode(&Packet::HandoffDone {
                    by: me.clone(),
                    specs: chunk.to_vec(),
                }),
            });
        }
    }

    pub(super) fn stamp(&mut self, now: Now) -> Stamp {
        let s = &mut self.shared;
        s.hlc = s.hlc.next(now.wall_ms);
        Stamp::new(s.hlc, self.cfg.me.node.clone())
    }

    /// Applies a local item and disseminates it: sent at once to every live
    /// member (so an operator's next command on another node already sees
    /// it), and put on foca's broadcast backlog for redundancy.
    pub(super) fn broadcast(&mut self, item: Item) {
        let direct = wire::encode(&Packet::Items(vec![item.clone()]));
        if direct.len() <= self.cfg.max_packet {
            for m in self.members.values() {
                self.out.push_back(Transmit {
                    to: m.addr,
                    payload: direct.clone(),
                });
            }
        }
        let bytes = postcard::to_allocvec(&item).expect("items serialize");
        if self.add_broadcast(&bytes).is_err() {
            // Too big for a broadcast (a large table): apply locally; it
            // spreads by anti-entropy.
            self.shared.apply(item);
        }
    }

    pub(super) fn send_digest(&mut self, to: SocketAddr, answer: bool) {
        let s = &self.shared;
        let p = Packet::Digest {
            digest: s.replica.digest(),
            table: s.replica.table.as_ref().map(|t| t.meta.clone()),
            answer,
        };
        self.out.push_back(Transmit {
            to,
            payload: wire::encode(&p),
        });
    }

    pub(super) fn handle_digest(
        &mut self,
        from: SocketAddr,
        digest: fechter_core::replica::ReplicaDigest,
        table: Option<TableMeta>,
        answer: bool,
    ) {
        let s = &self.shared;
        let mine = s.replica.digest();
        if mine == digest {
            return;
        }
        let max = self.cfg.max_packet;
        let mut push = Vec::new();
        if mine.nodes != digest.nodes || mine.addresses != digest.addresses {
            let mut partial = Replica {
                table: None,
                ..Replica::default()
            };
            if mine.nodes != digest.nodes {
                partial.nodes = s.replica.nodes.clone();
            }
            if mine.addresses != digest.addresses {
                partial.addresses = s.replica.addresses.clone();
            }
            push.extend(wire::pack_replica(&partial, max));
        }
        // Push our table only if it is the one to prefer.
        if let Some(t) = &s.replica.table
            && table
                .as_ref()
                .is_none_or(|theirs| fechter_core::leader::prefer(&t.meta, theirs).is_gt())
        {
            push.extend(wire::pack_table(t, max));
        }
        for p in push {
            self.out.push_back(Transmit {
                to: from,
                payload: wire::encode(&p),
            });
        }
        if !answer {
            self.send_digest(from, true);
        }
    }
}
