//! The cluster engine: one node's protocol state machine, sans I/O.
//!
//! Shaped like quinn-proto: the shell feeds it with `handle_*` calls (a
//! datagram arrived, a timer expired, the operator asked for something) and
//! drains its effects with `poll_*` calls (datagrams to send, the next
//! deadline, events). It never reads a clock (time comes in as [`Now`]), never
//! touches a socket, and its randomness is a seeded [`StdRng`] chosen by the
//! caller, so a simulation with a fixed seed replays exactly.
//!
//! Inside:
//! - [foca] runs SWIM membership. Our identity [`Id`] is (node id, listen
//!   address, incarnation): a restarted agent has a higher incarnation and
//!   replaces its old self. foca does not retry a lost announce, so the engine
//!   re-announces to the seeds until it has joined, and keeps announcing to
//!   them at a slower pace so that partitions heal even after foca forgot the
//!   other side.
//! - The replicated state ([`Replica`]) travels two ways: every local change
//!   rides foca's custom broadcasts (fast, best effort), and anti-entropy
//!   repairs everything else: periodically, and at once when a member comes
//!   up, a node sends a [`Packet::Digest`] to a peer; parts that differ are
//!   pushed back as [`Packet::Items`] / [`Packet::TablePart`]s, and the peer
//!   answers with its own digest so the exchange runs both ways.
//!
//! The state it owns, by file:
//! - `timings.rs`: every interval, and the configuration;
//! - `swim.rs`: the foca adapter (identity, broadcasts, notifications,
//!   announcing to the seeds);
//! - `sync.rs`: the replicated state between nodes (broadcasts, digests,
//!   anti-entropy, hand-off confirmations);
//! - `liveness.rs`: heartbeats, who is alive, standby takeovers and what a
//!   standby is about to take;
//! - `quorum.rs`: the standing (quorate, minority or fenced, the witness,
//!   the segment's signs of life; rules in [`crate::standing`]);
//! - `commands.rs`: the operator's commands (addresses, this node's record,
//!   forgetting a node);
//! - this file: the engine itself, its inputs and outputs, and the
//!   leader's evaluation.
//!
//! Packets here are plaintext: the shell seals and opens them
//! ([`crate::seal`]). Undecodable packets are dropped and counted in
//! [`Engine::drops`]; they never change state.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::rc::Rc;
use std::time::{Duration, Instant};

use fechter_core::NodeId;
use fechter_core::failover::Eligibility;
use fechter_core::leader::TableMeta;
use fechter_core::replica::{Item, NodeRecord, Replica, Table};
use fechter_core::state::{AddError, Hlc, RemoveError, Stamp};
use fechter_core::wire::{self, MAX_PACKET, Packet, TableAssembler};
use fechter_core::{AddrSpec, Allocation};

use crate::duty::{Duty, DutyTimings, LeaderInput};
use crate::standing::{self, Change, Standing};
use fechter_core::claim::Standing as Kind;
use foca::{BroadcastHandler, Foca, Invalidates, Notification, PostcardCodec, Runtime, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

mod commands;
mod liveness;
mod quorum;
mod swim;
mod sync;
mod timings;

pub use swim::Id;
use swim::*;
use timings::{CONFIRM_CHUNK, TAKEOVER_RESEND};
pub use timings::{EngineConfig, Quorum, Timings};

/// The time, as the shell read it: a monotonic instant for timers and the
/// wall clock (ms since the Unix epoch) for the hybrid logical clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub wall_ms: u64,
}

/// A datagram to send (plaintext: the shell seals it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub payload: Vec<u8>,
}

/// What happened, for the shell (logging, persistence, the agent's decisions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    MemberUp(Id),
    MemberDown(Id),
    /// This node has at least one live peer.
    Joined,
    /// This node sees no live peer any more.
    Isolated,
    /// The replicated state changed (persist it).
    StateChanged,
    /// The allocation this node acts on changed: reconcile the interfaces.
    AllocationChanged,
    /// A new leader is recognised.
    LeaderChanged(Option<NodeId>),
    /// This node, as standby, took the addresses of an unheard holder.
    TookOver {
        holder: NodeId,
        /// How long the holder had been silent when this node took over (the
        /// detection time: a little over `heartbeat_timeout`); zero when the
        /// holder was heard restarting.
        silence: Duration,
    },
    /// This node published a table (it leads).
    Published(TableMeta),
    /// This node lost quorum and released its addresses.
    Fenced,
    /// This node sees a majority again and may hold addresses.
    Unfenced,
    /// This node hears no majority, but its segment shows life: it serves
    /// what the wire shows nobody else serves, and does not lead.
    Minority,
    /// Two-node cluster: probe the gateway once now and report with
    /// [`Engine::witness_answer`].
    ProbeWitness,
    /// Another machine, at `addr`, sends heartbeats with this node's id:
    /// two machines run with one node id (reported at most every
    /// [`DUPLICATE_REPORT_EVERY`]; its heartbeats are ignored).
    DuplicateId {
        addr: SocketAddr,
    },
}

/// How often a machine that shares this node's id is reported again.
pub const DUPLICATE_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Why [`Engine::forget`] refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("{0} is not a node of this cluster; `fechter members` lists them")]
    Unknown(NodeId),
    #[error(
        "{0} is this node; run `fechter forget {0}` on another node after stopping this one for good"
    )]
    Myself(NodeId),
    #[error(
        "{0} is alive (this node hears it); stop it for good first, then forget it once it is dead here"
    )]
    Alive(NodeId),
}

/// Dropped packets, by reason. Drops never change state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineDrops {
    /// The plaintext did not decode as a [`Packet`].
    pub malformed: u64,
    /// foca refused the SWIM message inside (malformed, too big, from ourselves...).
    pub swim_rejected: u64,
}

#[derive(Debug, Clone)]
enum TimerKind {
    Swim(Timer<Id>),
    Announce,
    AntiEntropy,
    Heartbeat,
    LeaderTick,
}

/// One node's cluster protocol. See the module docs.
pub struct Engine {
    cfg: EngineConfig,
    swim: Swim,
    /// The replica and what goes with it; lent to foca's broadcast handler
    /// during foca calls only (through `lent`).
    shared: Shared,
    lent: Lent,
    rng: StdRng,
    timers: BTreeMap<(Instant, u64), TimerKind>,
    seq: u64,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Live members by node id (not including ourselves).
    members: BTreeMap<NodeId, Id>,
    tables: TableAssembler,
    drops: EngineDrops,
    last_seed_announce: Option<Instant>,
    /// When another machine with this node's id was last reported.
    duplicate_reported: Option<Instant>,
    duty: Duty,
    started: Instant,
    /// Something the leader decides on changed since its last evaluation.
    dirty: bool,
    last_takeover_notice: Option<Instant>,
    /// Quorate, minority or fenced, and what that is decided from.
    standing: Standing,
    /// Peers by heartbeat: where they sent from and their incarnation.
    heard: BTreeMap<NodeId, (SocketAddr, u64)>,
    /// When the heartbeat timer last ran (to notice this node's own stalls).
    last_tick: Instant,
    /// Heartbeats heard from each peer since the last heartbeat tick: a
    /// peer heard more than once during one late tick was running while
    /// this node was not.
    heard_since_tick: BTreeMap<NodeId, u32>,
    /// This node may lead only from then on: after its start, a stall, a
    /// fence or an isolation it first learns the cluster's current table.
    lead_after: Instant,
    was_isolated: bool,
}

impl Engine {
    /// Starts a node from its persisted replica (possibly empty). Its own
    /// node record is (re)written with its new incarnation.
    pub fn new(cfg: EngineConfig, replica: Replica, rng_seed: u64, now: Now) -> Engine {
        let me = cfg.me.clone();
        let shared = Shared::restarted(&me, replica);
        let lent = Lent::default();
        let swim = Foca::with_custom_broadcast(
            me,
            foca_config(&cfg),
            StdRng::seed_from_u64(rng_seed),
            PostcardCodec,
            Handler(lent.clone()),
        );
        let cfg_rejoin_hold = cfg.timings.rejoin_hold;
        let cfg_lead_grace = cfg.timings.lead_grace;
        let mut e = Engine {
            rng: StdRng::seed_from_u64(rng_seed ^ 0x5eed),
            cfg,
            swim,
            shared,
            lent,
            timers: BTreeMap::new(),
            seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            members: BTreeMap::new(),
            tables: TableAssembler::default(),
            drops: EngineDrops::default(),
            last_seed_announce: None,
            duplicate_reported: None,
            duty: Duty::default(),
            started: now.at,
            dirty: true,
            last_takeover_notice: None,
            // A (re)started node holds nothing until it has learned the
            // cluster's current table and takeovers: a table from before a
            // crash may still name it holder of addresses a standby took.
            standing: Standing::starting(now.at, cfg_rejoin_hold),
            heard: BTreeMap::new(),
            last_tick: now.at,
            heard_since_tick: BTreeMap::new(),
            lead_after: now.at + cfg_lead_grace,
            was_isolated: false,
        };
        e.start(now);
        e
    }

    /// What a new engine does first: announces itself to the seeds,
    /// schedules its timers and puts its own record on the broadcast
    /// backlog.
    fn start(&mut self, now: Now) {
        self.announce_to_seeds(now);
        self.schedule(now.at + self.cfg.timings.join_retry, TimerKind::Announce);
        self.schedule(
            now.at + self.cfg.timings.anti_entropy,
            TimerKind::AntiEntropy,
        );
        self.schedule(
            now.at + self.cfg.timings.heartbeat_interval,
            TimerKind::Heartbeat,
        );
        self.schedule(now.at + self.cfg.timings.leader_tick, TimerKind::LeaderTick);
        // Put our own record on the broadcast backlog.
        let rec = self.shared.replica.nodes[&self.cfg.me.node].clone();
        self.broadcast(Item::Node(rec));
    }

    pub fn id(&self) -> &Id {
        self.swim.identity()
    }

    /// The replicated state as this node knows it.
    pub fn replica(&self) -> &Replica {
        &self.shared.replica
    }

    /// Live peers (not including this node).
    pub fn members(&self) -> &BTreeMap<NodeId, Id> {
        &self.members
    }

    pub fn drops(&self) -> EngineDrops {
        self.drops
    }

    /// The allocation this node acts on: the followed table with standby
    /// takeovers and confirmed hand-offs applied.
    pub fn allocation(&self) -> &Allocation {
        self.duty.allocation()
    }

    /// The leader this node recognises.
    pub fn leader(&self) -> Option<&NodeId> {
        self.duty.leader()
    }

    /// The latest eligibility this node computed (why each node does or
    /// does not take addresses).
    pub fn eligibility(&self) -> &Eligibility {
        self.duty.eligibility()
    }

    /// A datagram's plaintext arrived from `from`.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, payload: &[u8]) {
        let packet = match wire::decode(payload) {
            Ok(p) => p,
            Err(_) => {
                self.drops.malformed += 1;
                return;
            }
        };
        match packet {
            Packet::Swim(data) => {
                let res = self.with_swim(now, |swim, fx| swim.handle_data(&data, fx));
                if res.is_err() {
                    self.drops.swim_rejected += 1;
                }
            }
            Packet::Digest {
                digest,
                table,
                answer,
            } => self.handle_digest(from, digest, table, answer),
            Packet::Items(items) => {
                let s = &mut self.shared;
                for i in items {
                    s.apply(i);
                }
            }
            Packet::TablePart {
                meta,
                part,
                parts,
                placements,
            } => {
                if let Some(t) = self.tables.add(meta, part, parts, placements) {
                    self.shared.apply(Item::Table(t));
                }
            }
            Packet::Heartbeat {
                from: node,
                incarnation,
            } => {
                if node == self.cfg.me.node {
                    // Never our own: another machine runs with our id.
                    self.duplicate_id(now, from);
                    return;
                }
                // The hot path: nothing else to settle.
                self.heard_heartbeat(now, from, node, incarnation);
                return;
            }
            Packet::Takeover { holder, by, table } => {
                let s = &self.shared;
                let settle = self.cfg.timings.takeover_settle();
                self.duty.takeover_reported(
                    holder,
                    by,
                    &table,
                    s.replica.table.as_ref(),
                    now.at,
                    settle,
                );
                self.dirty = true;
            }
            Packet::HandoffDone { by, specs } => {
                for s in specs {
                    self.duty.handoff_confirmed(s, by.clone());
                }
                self.dirty = true;
            }
        }
        self.after_input(now);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now.at {
                break;
            }
            let kind = entry.remove();
            match kind {
                TimerKind::Swim(t) => {
                    // Errors here are foca telling us a timer is stale.
                    let _ = self.with_swim(now, |swim, fx| swim.handle_timer(t, fx));
                }
                TimerKind::Announce => {
                    let joined = !self.members.is_empty();
                    let due = self
                        .last_seed_announce
                        .is_none_or(|t| now.at >= t + self.cfg.timings.seed_announce);
                    if !joined || due {
                        self.announce_to_seeds(now);
                    }
                    self.schedule(now.at + self.cfg.timings.join_retry, TimerKind::Announce);
                }
                TimerKind::AntiEntropy => {
                    if !self.members.is_empty() {
                        let pick = self.rng.random_range(0..self.members.len());
                        let peer = self.members.values().nth(pick).expect("in range").addr;
                        self.send_digest(peer, false);
                    }
                    self.schedule(
                        now.at + self.cfg.timings.anti_entropy,
                        TimerKind::AntiEntropy,
                    );
                }
                TimerKind::Heartbeat => {
                    self.heartbeat(now);
                    self.schedule(
                        now.at + self.cfg.timings.heartbeat_interval,
                        TimerKind::Heartbeat,
                    );
                }
                TimerKind::LeaderTick => {
                    self.resend_takeovers(now);
                    self.evaluate(now, false);
                    self.schedule(now.at + self.cfg.timings.leader_tick, TimerKind::LeaderTick);
                }
            }
        }
        self.after_input(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// When the next heartbeat tick is due. A shell that wants few wake-ups
    /// may call in only then, with every datagram that arrived meanwhile
    /// first: every other timer of the engine tolerates running up to one
    /// heartbeat interval late, and the silence checks of the tick run after
    /// the datagrams are heard (a heartbeat then counts from the tick that
    /// heard it, up to one interval after it arrived, on holder and standby
    /// alike; see docs/algorithm.md, timing budget).
    pub fn poll_tick(&self) -> Option<Instant> {
        self.timers
            .iter()
            .find(|(_, k)| matches!(k, TimerKind::Heartbeat))
            .map(|((at, _), _)| *at)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// After every input: report state changes, let the leader decide, and
    /// recompute what this node acts on.
    fn after_input(&mut self, now: Now) {
        let refuted = self.shared.refuted.take();
        if let Some(rec) = refuted {
            self.broadcast(Item::Node(rec));
        }
        let changed = std::mem::take(&mut self.shared.changed);
        if changed {
            self.events.push_back(Event::StateChanged);
            self.dirty = true;
        }
        if self.dirty {
            self.evaluate(now, true);
        }
    }

    /// Whether this node's own record says it is shutting down.
    pub fn leaving(&self) -> bool {
        let me = &self.cfg.me.node;
        self.shared.replica.nodes.get(me).is_some_and(|r| r.leaving)
    }

    /// Elects, leads if elected, and refreshes the effective allocation.
    fn evaluate(&mut self, now: Now, force: bool) {
        self.dirty = false;
        let me = self.cfg.me.node.clone();
        let live = self.live_peers(now);
        let alive: BTreeSet<NodeId> = live.keys().cloned().collect();
        let leaving = self.leaving();
        let synced = now.at >= self.lead_after;
        let timings = self.cfg.timings.duty();
        let before = self.duty.leader().cloned();
        let decision = {
            let s = &self.shared;
            self.duty.lead(LeaderInput {
                me: &me,
                replica: &s.replica,
                alive: &alive,
                i_can_lead: synced && !leaving && self.standing.quorate(),
                now: now.at,
                timings: &timings,
                force,
            })
        };
        if self.duty.leader() != before.as_ref() {
            self.events
                .push_back(Event::LeaderChanged(self.duty.leader().cloned()));
        }
        if let Some(table) = decision.publish {
            self.publish(table);
        }
        let changed = if self.standing.kind() == Kind::Minority {
            let live = self.heard_live(now);
            let s = &self.shared;
            let nodes = &s.replica.nodes;
            self.duty
                .refresh_minority(&s.replica, &live, |n, spec| serves(nodes.get(n), spec))
        } else {
            let s = &self.shared;
            self.duty.refresh_effective(
                &s.replica,
                &me,
                self.standing.fenced(),
                &alive,
                now.at,
                self.cfg.timings.rejoin_hold,
            )
        };
        if changed {
            self.events.push_back(Event::AllocationChanged);
        }
        if std::mem::take(&mut self.shared.changed) {
            self.events.push_back(Event::StateChanged);
        }
    }

    /// Publishes a table: applied here, sent in parts to every live member
    /// at once, and repaired by anti-entropy where a part is lost.
    fn publish(&mut self, table: Table) {
        let meta = table.meta.clone();
        for p in wire::pack_table(&table, self.cfg.max_packet) {
            let payload = wire::encode(&p);
            self.send_to_peers(&payload);
        }
        self.shared.apply(Item::Table(table));
        self.events.push_back(Event::Published(meta));
    }

    fn schedule(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        self.timers.insert((at, self.seq), kind);
    }
}

/// Whether the node of `record` may hold `spec` while a minority serves on
/// its own (`fechter_core::claim::orphans_to_live`): up, not leaving,
/// healthy, and with the address's interface usable.
fn serves(record: Option<&NodeRecord>, spec: &AddrSpec) -> bool {
    record.is_some_and(|r| {
        r.admin == fechter_core::replica::Admin::Up
            && !r.leaving
            && r.unhealthy.is_empty()
            && !r.iface_trouble.contains_key(&spec.iface)
    })
}
