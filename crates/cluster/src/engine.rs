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

/// The time, as the shell read it: a monotonic instant for timers and the
/// wall clock (ms since the Unix epoch) for the hybrid logical clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub wall_ms: u64,
}

/// A member's identity on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub node: NodeId,
    pub addr: SocketAddr,
    /// Grows on every start of the agent.
    pub incarnation: u64,
    /// Grows when foca renews the identity to rejoin after being declared down.
    pub bump: u16,
}

impl foca::Identity for Id {
    /// foca accepts an announce addressed to any identity with our `addr()`:
    /// the listen address is what a seed is known by before its id is.
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Id {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.bump) > (adversary.incarnation, adversary.bump)
    }
}

/// Every timing of the engine. Defaults are tuned for a LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timings {
    /// SWIM: how often a random member is probed.
    #[serde(with = "ms")]
    pub probe_period: Duration,
    /// SWIM: how long a direct probe waits for its ack before asking others.
    #[serde(with = "ms")]
    pub probe_rtt: Duration,
    /// SWIM: how long a suspect has to refute before it is declared down.
    #[serde(with = "ms")]
    pub suspect_to_down: Duration,
    /// SWIM: how often updates are gossiped to a few members.
    #[serde(with = "ms")]
    pub gossip_period: Duration,
    /// How often to announce to the seeds while not joined.
    #[serde(with = "ms")]
    pub join_retry: Duration,
    /// How often to announce to the seeds while joined (heals partitions).
    #[serde(with = "ms")]
    pub seed_announce: Duration,
    /// How often to run anti-entropy with one random member.
    #[serde(with = "ms")]
    pub anti_entropy: Duration,
    /// How long a down member is remembered (so it may rejoin with its old identity after).
    #[serde(with = "ms")]
    pub forget_down_after: Duration,
    /// Standby fast path: how often every node sends a heartbeat to every live member.
    #[serde(with = "ms")]
    pub heartbeat_interval: Duration,
    /// Standby fast path: silence after which a standby takes its holder's addresses.
    #[serde(with = "ms")]
    pub heartbeat_timeout: Duration,
    /// How long a node must be up, healthy and alive before it receives addresses.
    #[serde(with = "ms")]
    pub maturity: Duration,
    /// How long a holder whose addresses a standby took stays ineligible.
    #[serde(with = "ms")]
    pub quarantine: Duration,
    /// How long after start a node waits (to learn the cluster's table) before it may lead.
    #[serde(with = "ms")]
    pub lead_grace: Duration,
    /// How often the leader re-evaluates eligibility (maturity, quarantine).
    #[serde(with = "ms")]
    pub leader_tick: Duration,
    /// Quorum: how long a node may see no majority before it releases its
    /// addresses (self-fencing). Must be shorter than `heartbeat_timeout`, the
    /// time the majority side waits before taking them.
    #[serde(with = "ms")]
    pub fence_after: Duration,
    /// Quorum: after a fence longer than `heartbeat_timeout`, how long a node
    /// that sees a majority again waits (learning the current table and
    /// takeovers) before it holds addresses again.
    #[serde(with = "ms")]
    pub rejoin_hold: Duration,
    /// Quorum: after a loss longer than `heartbeat_timeout`, how long a
    /// fenced node that hears a majority again waits (asking for the current
    /// table and takeovers) before it serves again. Short: what it installs
    /// is checked on the wire first.
    #[serde(with = "ms")]
    pub resume_hold: Duration,
    /// Minority: how long a node without a majority keeps serving while its
    /// segment shows no sign of life, before it fences itself.
    #[serde(with = "ms")]
    pub isolation: Duration,
    /// The wire as the lock: how long probes for an address must go
    /// unanswered (two probes at least, one per heartbeat tick) before a node
    /// installs an address nobody handed to it.
    #[serde(with = "ms")]
    pub probe_window: Duration,
}

impl Timings {
    fn duty(&self) -> DutyTimings {
        DutyTimings {
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            maturity: self.maturity,
            quarantine: self.quarantine,
            lead_grace: self.lead_grace,
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            probe_period: Duration::from_millis(100),
            probe_rtt: Duration::from_millis(40),
            suspect_to_down: Duration::from_millis(200),
            gossip_period: Duration::from_millis(100),
            join_retry: Duration::from_millis(250),
            seed_announce: Duration::from_secs(5),
            anti_entropy: Duration::from_secs(1),
            forget_down_after: Duration::from_secs(30),
            heartbeat_interval: Duration::from_millis(15),
            heartbeat_timeout: Duration::from_millis(65),
            maturity: Duration::from_secs(2),
            quarantine: Duration::from_secs(5),
            lead_grace: Duration::from_secs(1),
            leader_tick: Duration::from_millis(100),
            fence_after: Duration::from_millis(35),
            rejoin_hold: Duration::from_secs(1),
            resume_hold: Duration::from_millis(100),
            isolation: Duration::from_millis(500),
            probe_window: Duration::from_millis(30),
        }
    }
}

mod ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// What the engine starts from.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub me: Id,
    /// `--attach` addresses.
    pub seeds: Vec<SocketAddr>,
    pub timings: Timings,
    /// Largest plaintext packet (the seal's payload limit).
    pub max_packet: usize,
    /// Whether a node must see a majority to hold addresses.
    pub quorum: Quorum,
}

/// The quorum rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quorum {
    /// A node leads and serves freely only while it hears (heartbeats) a
    /// strict majority of the nodes it counts, itself included; without
    /// one it serves as a minority (only what the wire shows free) while
    /// its segment shows life, and holds nothing otherwise (see
    /// [`crate::standing`]). In a two-node cluster a node alone keeps
    /// quorum while its gateway answers (see [`Engine::enable_witness`]).
    #[default]
    Majority,
    /// No quorum: every side of a partition serves (duplicates possible).
    Off,
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
}

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

/// Identifies a broadcast item for foca's dissemination backlog: a newer
/// item about the same thing replaces an older one.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ItemKey {
    Node(NodeId, (u64, u64)),
    Address(std::net::IpAddr, Stamp),
    Table(TableMeta),
}

impl Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (ItemKey::Node(a, ra), ItemKey::Node(b, rb)) => a == b && ra >= rb,
            (ItemKey::Address(a, sa), ItemKey::Address(b, sb)) => a == b && sa >= sb,
            (ItemKey::Table(a), ItemKey::Table(b)) => fechter_core::leader::prefer(a, b).is_ge(),
            _ => false,
        }
    }
}

/// Shared between the engine and foca's broadcast handler (foca owns the
/// handler and gives no access to it).
#[derive(Debug)]
struct Shared {
    me: NodeId,
    replica: Replica,
    changed: bool,
    hlc: Hlc,
    /// This node's own record, written again after a tombstone of it
    /// arrived (`fechter forget` on a node that did not hear this one):
    /// to be applied and disseminated (by `Engine::settle`).
    refuted: Option<NodeRecord>,
}

impl Shared {
    fn apply(&mut self, item: Item) -> bool {
        if let Item::Address(e) = &item {
            // Keep our clock ahead of every stamp we have seen, so that a
            // later local write wins over it.
            self.hlc = self.hlc.max(e.stamp.hlc);
        }
        let own_tombstone = match &item {
            Item::Node(r) if r.id == self.me && r.forgotten => {
                self.replica.nodes.get(&self.me).cloned()
            }
            _ => None,
        };
        let changed = self.replica.apply(item);
        self.changed |= changed;
        if changed && let Some(before) = own_tombstone {
            self.refute(before);
        }
        changed
    }

    /// This node was forgotten while it runs: it is not gone, so it writes
    /// its record again in a higher incarnation than the tombstone's (as a
    /// restart would), which replaces the tombstone everywhere.
    fn refute(&mut self, before: NodeRecord) {
        let tomb = &self.replica.nodes[&self.me];
        // Applied when the engine broadcasts it (foca disseminates only
        // what is news to this node).
        self.refuted = Some(NodeRecord {
            incarnation: tomb.incarnation.max(before.incarnation) + 1,
            version: 0,
            forgotten: false,
            ..before
        });
    }
}

struct Handler(Rc<RefCell<Shared>>);

#[derive(Debug, thiserror::Error)]
#[error("bad broadcast item: {0}")]
struct BadItem(String);

impl BroadcastHandler<Id> for Handler {
    type Key = ItemKey;
    type Error = BadItem;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&Id>,
    ) -> Result<Option<ItemKey>, BadItem> {
        let item: Item = postcard::from_bytes(data).map_err(|e| BadItem(e.to_string()))?;
        let key = match &item {
            Item::Node(r) => ItemKey::Node(r.id.clone(), (r.incarnation, r.version)),
            Item::Address(e) => ItemKey::Address(e.ip(), e.stamp.clone()),
            Item::Table(t) => ItemKey::Table(t.meta.clone()),
        };
        Ok(self.0.borrow_mut().apply(item).then_some(key))
    }
}

type Swim = Foca<Id, PostcardCodec, StdRng, Handler>;

/// Collects foca's effects during one call.
struct Effects<'a> {
    now: Instant,
    timers: &'a mut BTreeMap<(Instant, u64), TimerKind>,
    seq: &'a mut u64,
    out: &'a mut VecDeque<Transmit>,
    notes: &'a mut Vec<Note>,
}

enum Note {
    Up(Id),
    Down(Id),
    Rename(Id, Id),
    Active,
    Idle,
}

impl Runtime<Id> for Effects<'_> {
    fn notify(&mut self, n: Notification<'_, Id>) {
        match n {
            Notification::MemberUp(id) => self.notes.push(Note::Up(id.clone())),
            Notification::MemberDown(id) => self.notes.push(Note::Down(id.clone())),
            Notification::Rename(a, b) => self.notes.push(Note::Rename(a.clone(), b.clone())),
            Notification::Active => self.notes.push(Note::Active),
            Notification::Idle => self.notes.push(Note::Idle),
            _ => {}
        }
    }

    fn send_to(&mut self, to: Id, data: &[u8]) {
        self.out.push_back(Transmit {
            to: to.addr,
            payload: wire::encode(&Packet::Swim(data.to_vec())),
        });
    }

    fn submit_after(&mut self, event: Timer<Id>, after: Duration) {
        *self.seq += 1;
        self.timers
            .insert((self.now + after, *self.seq), TimerKind::Swim(event));
    }
}

/// One node's cluster protocol. See the module docs.
pub struct Engine {
    cfg: EngineConfig,
    swim: Swim,
    shared: Rc<RefCell<Shared>>,
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
    pub fn new(cfg: EngineConfig, mut replica: Replica, rng_seed: u64, now: Now) -> Engine {
        let me = cfg.me.clone();
        let own = replica
            .nodes
            .get(&me.node)
            .cloned()
            .unwrap_or_else(|| NodeRecord::new(me.node.clone(), me.incarnation));
        replica.nodes.insert(
            me.node.clone(),
            NodeRecord {
                incarnation: me.incarnation,
                version: 0,
                forgotten: false,
                ..own
            },
        );
        // The clock starts past every stamp on disk, so a local write always
        // wins over what this node wrote before it restarted.
        let hlc = replica
            .addresses
            .max_stamp()
            .map_or(Hlc::default(), |s| s.hlc);
        let shared = Rc::new(RefCell::new(Shared {
            me: me.node.clone(),
            replica,
            changed: false,
            hlc,
            refuted: None,
        }));
        let swim = Foca::with_custom_broadcast(
            me,
            foca_config(&cfg),
            StdRng::seed_from_u64(rng_seed),
            PostcardCodec,
            Handler(shared.clone()),
        );
        let cfg_rejoin_hold = cfg.timings.rejoin_hold;
        let cfg_lead_grace = cfg.timings.lead_grace;
        let mut e = Engine {
            rng: StdRng::seed_from_u64(rng_seed ^ 0x5eed),
            cfg,
            swim,
            shared,
            timers: BTreeMap::new(),
            seq: 0,
            out: VecDeque::new(),
            events: VecDeque::new(),
            members: BTreeMap::new(),
            tables: TableAssembler::default(),
            drops: EngineDrops::default(),
            last_seed_announce: None,
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
        e.announce_to_seeds(now);
        e.schedule(now.at + e.cfg.timings.join_retry, TimerKind::Announce);
        e.schedule(now.at + e.cfg.timings.anti_entropy, TimerKind::AntiEntropy);
        e.schedule(
            now.at + e.cfg.timings.heartbeat_interval,
            TimerKind::Heartbeat,
        );
        e.schedule(now.at + e.cfg.timings.leader_tick, TimerKind::LeaderTick);
        // Put our own record on the broadcast backlog.
        let rec = e.shared.borrow().replica.nodes[&e.cfg.me.node].clone();
        e.broadcast(Item::Node(rec));
        e
    }

    pub fn id(&self) -> &Id {
        self.swim.identity()
    }

    /// The replicated state as this node knows it.
    pub fn replica(&self) -> std::cell::Ref<'_, Replica> {
        std::cell::Ref::map(self.shared.borrow(), |s| &s.replica)
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
        &self.duty.effective
    }

    /// The leader this node recognises.
    pub fn leader(&self) -> Option<&NodeId> {
        self.duty.leader.as_ref()
    }

    /// The latest eligibility this node computed (why each node does or
    /// does not take addresses).
    pub fn eligibility(&self) -> &Eligibility {
        &self.duty.eligibility
    }

    /// The shell installed and announced `installed` (its record after a
    /// reconcile): tells every member which addresses this node now holds,
    /// so that their givers (planned or implicit hand-offs) let go.
    pub fn confirm_installed(&mut self, now: Now, installed: &BTreeSet<AddrSpec>) {
        let me = self.cfg.me.node.clone();
        let fresh: Vec<AddrSpec> = self
            .duty
            .effective
            .placements
            .iter()
            .filter(|(s, p)| p.holder == me && installed.contains(*s))
            .filter(|(s, _)| !self.duty.confirmed.contains(*s))
            .map(|(s, _)| s.clone())
            .collect();
        if fresh.is_empty() {
            return;
        }
        for chunk in fresh.chunks(32) {
            let payload = wire::encode(&Packet::HandoffDone {
                by: me.clone(),
                specs: chunk.to_vec(),
            });
            for to in self.peer_addrs() {
                self.out.push_back(Transmit {
                    to,
                    payload: payload.clone(),
                });
            }
        }
        for s in fresh {
            self.duty.confirmed.insert(s.clone());
            self.duty.handoff_confirmed(s, me.clone());
        }
        self.dirty = true;
        self.settle(now);
    }

    /// Confirms to `to` every address this node confirmed holding.
    fn confirm_to(&mut self, to: SocketAddr) {
        let me = self.cfg.me.node.clone();
        let held: Vec<AddrSpec> = self.duty.confirmed.iter().cloned().collect();
        for chunk in held.chunks(32) {
            self.out.push_back(Transmit {
                to,
                payload: wire::encode(&Packet::HandoffDone {
                    by: me.clone(),
                    specs: chunk.to_vec(),
                }),
            });
        }
    }

    /// The incarnation `node` last sent a heartbeat with, however long ago.
    pub fn last_incarnation(&self, node: &NodeId) -> Option<u64> {
        self.heard.get(node).map(|(_, inc)| *inc)
    }

    /// The incarnation `node` last sent a heartbeat with, if it was heard
    /// within the heartbeat timeout.
    pub fn heard_recently(&self, now: Now, node: &NodeId) -> Option<u64> {
        let recent = self.duty.last_heard.get(node).is_some_and(|t| {
            now.at.saturating_duration_since(*t) <= self.cfg.timings.heartbeat_timeout
        });
        if !recent {
            return None;
        }
        self.heard.get(node).map(|(_, inc)| *inc)
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
                let mut s = self.shared.borrow_mut();
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
                    self.shared.borrow_mut().apply(Item::Table(t));
                }
            }
            Packet::Heartbeat {
                from: node,
                incarnation,
            } => {
                let was_silent = self.duty.last_heard.get(&node).is_none_or(|t| {
                    now.at.saturating_duration_since(*t) > self.cfg.timings.heartbeat_timeout
                });
                let restarted = self
                    .heard
                    .get(&node)
                    .is_some_and(|(_, inc)| incarnation > *inc);
                self.heard.insert(node.clone(), (from, incarnation));
                self.duty.last_heard.insert(node.clone(), now.at);
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
                return; // the hot path: nothing else to settle
            }
            Packet::Takeover { holder, by, table } => {
                let s = self.shared.borrow();
                let settle = self.cfg.timings.heartbeat_interval * 2;
                self.duty.takeover_reported(
                    holder,
                    by,
                    &table,
                    s.replica.table.as_ref(),
                    now.at,
                    settle,
                );
                drop(s);
                self.dirty = true;
            }
            Packet::HandoffDone { by, specs } => {
                for s in specs {
                    self.duty.handoff_confirmed(s, by.clone());
                }
                self.dirty = true;
            }
        }
        self.settle(now);
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
        self.settle(now);
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

    /// Adds an address (operator command). On error nothing changes.
    pub fn add_address(&mut self, now: Now, spec: fechter_core::AddrSpec) -> Result<(), AddError> {
        self.write_address(now, |list, stamp| list.add_entry(spec, stamp))
    }

    /// Marks an address do-not-assign (operator command). On error nothing changes.
    pub fn remove_address(&mut self, now: Now, ip: std::net::IpAddr) -> Result<(), RemoveError> {
        self.write_address(now, |list, stamp| list.remove_entry(ip, stamp))
    }

    /// A local write to the address list: stamped, disseminated, settled.
    fn write_address<E>(
        &mut self,
        now: Now,
        write: impl FnOnce(
            &fechter_core::state::AddressList,
            Stamp,
        ) -> Result<fechter_core::state::AddressEntry, E>,
    ) -> Result<(), E> {
        let stamp = self.tick(now);
        let entry = write(&self.shared.borrow().replica.addresses, stamp)?;
        self.broadcast(Item::Address(entry));
        self.settle(now);
        Ok(())
    }

    /// Changes this node's own record (admin status, health, priority); the
    /// version is bumped and the record disseminated. Returns the new record.
    pub fn update_own(&mut self, now: Now, f: impl FnOnce(&mut NodeRecord)) -> NodeRecord {
        let mut rec = self.shared.borrow().replica.nodes[&self.cfg.me.node].clone();
        let before = rec.clone();
        f(&mut rec);
        if rec == before {
            return rec;
        }
        rec.id = self.cfg.me.node.clone();
        // Higher than the agent's own only after a refuted tombstone.
        rec.incarnation = before.incarnation.max(self.cfg.me.incarnation);
        rec.forgotten = false;
        rec.version = before.version + 1;
        self.broadcast(Item::Node(rec.clone()));
        self.settle(now);
        rec
    }

    /// Forgets `node`, a machine gone for good (operator command, `fechter
    /// forget`): a [`NodeRecord::tombstone`] of its current incarnation is
    /// applied and disseminated, after which no node counts it toward the
    /// majority, and it is never eligible and never leads. A node that
    /// starts again (a higher incarnation) replaces the tombstone and counts
    /// again; a running node that did not hear of it in time refutes it the
    /// same way.
    ///
    /// Refused, changing nothing, when `node` is not a node this one knows
    /// ([`ForgetError::Unknown`]), is this node ([`ForgetError::Myself`]),
    /// or is alive here: a SWIM member, or heard within the heartbeat
    /// timeout ([`ForgetError::Alive`]). Forgetting a node already
    /// forgotten changes nothing and succeeds.
    ///
    /// Forgetting lowers the majority: a node that does not hear the others
    /// (a minority) and forgets them becomes quorate on its own. The wire
    /// still keeps it from installing what another machine answers for.
    pub fn forget(&mut self, now: Now, node: &NodeId) -> Result<(), ForgetError> {
        if *node == self.cfg.me.node {
            return Err(ForgetError::Myself(node.clone()));
        }
        let Some(rec) = self.replica().nodes.get(node).cloned() else {
            return Err(ForgetError::Unknown(node.clone()));
        };
        if self.live_peers(now).contains_key(node) {
            return Err(ForgetError::Alive(node.clone()));
        }
        if rec.forgotten {
            return Ok(());
        }
        self.broadcast(Item::Node(NodeRecord::tombstone(
            node.clone(),
            rec.incarnation,
        )));
        self.settle(now);
        Ok(())
    }

    /// Leaves the cluster gracefully (members see us down at once).
    pub fn leave(&mut self, now: Now) {
        let _ = self.with_swim(now, |swim, fx| swim.leave_cluster(fx));
    }

    /// Runs one foca call with this engine as its runtime (timers, datagrams
    /// and notifications are collected), then absorbs the notifications.
    fn with_swim<R>(&mut self, now: Now, f: impl FnOnce(&mut Swim, &mut Effects<'_>) -> R) -> R {
        let mut notes = Vec::new();
        let r = {
            let mut fx = Effects {
                now: now.at,
                timers: &mut self.timers,
                seq: &mut self.seq,
                out: &mut self.out,
                notes: &mut notes,
            };
            f(&mut self.swim, &mut fx)
        };
        self.absorb(now, notes);
        r
    }

    fn tick(&mut self, now: Now) -> Stamp {
        let mut s = self.shared.borrow_mut();
        s.hlc = s.hlc.tick(now.wall_ms);
        Stamp::new(s.hlc, self.cfg.me.node.clone())
    }

    /// Applies a local item and disseminates it: sent at once to every live
    /// member (so an operator's next command on another node already sees
    /// it), and put on foca's broadcast backlog for redundancy.
    fn broadcast(&mut self, item: Item) {
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
        if self.swim.add_broadcast(&bytes).is_err() {
            // Too big for a broadcast (a large table): apply locally; it
            // spreads by anti-entropy.
            self.shared.borrow_mut().apply(item);
        }
    }

    /// After every input: report state changes, let the leader decide, and
    /// recompute what this node acts on.
    fn settle(&mut self, now: Now) {
        let refuted = self.shared.borrow_mut().refuted.take();
        if let Some(rec) = refuted {
            self.broadcast(Item::Node(rec));
        }
        let changed = std::mem::take(&mut self.shared.borrow_mut().changed);
        if changed {
            self.events.push_back(Event::StateChanged);
            self.dirty = true;
        }
        if self.dirty {
            self.evaluate(now, true);
        }
    }

    /// Elects, leads if elected, and refreshes the effective allocation.
    fn evaluate(&mut self, now: Now, force: bool) {
        self.dirty = false;
        let me = self.cfg.me.node.clone();
        let live = self.live_peers(now);
        let alive: BTreeSet<NodeId> = live.keys().cloned().collect();
        let leaving = self
            .shared
            .borrow()
            .replica
            .nodes
            .get(&me)
            .is_some_and(|r| r.leaving);
        let synced = now.at >= self.lead_after;
        let timings = self.cfg.timings.duty();
        let before = self.duty.leader.clone();
        let decision = {
            let s = self.shared.borrow();
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
        if self.duty.leader != before {
            self.events
                .push_back(Event::LeaderChanged(self.duty.leader.clone()));
        }
        if let Some(table) = decision.publish {
            self.publish(table);
        }
        let changed = if self.standing.kind() == Kind::Minority {
            let live = self.heard_live(now);
            let s = self.shared.borrow();
            let nodes = &s.replica.nodes;
            self.duty
                .refresh_minority(&s.replica, &live, |n, spec| serves(nodes.get(n), spec))
        } else {
            let s = self.shared.borrow();
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
        if std::mem::take(&mut self.shared.borrow_mut().changed) {
            self.events.push_back(Event::StateChanged);
        }
    }

    /// Publishes a table: applied here, sent in parts to every live member
    /// at once, and repaired by anti-entropy where a part is lost.
    fn publish(&mut self, table: Table) {
        let meta = table.meta.clone();
        for p in wire::pack_table(&table, self.cfg.max_packet) {
            let payload = wire::encode(&p);
            for to in self.peer_addrs() {
                self.out.push_back(Transmit {
                    to,
                    payload: payload.clone(),
                });
            }
        }
        self.shared.borrow_mut().apply(Item::Table(table));
        self.events.push_back(Event::Published(meta));
    }

    /// Sends heartbeats to every live member and takes over from silent holders.
    fn heartbeat(&mut self, now: Now) {
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
            // shell and the simulator deliver them before timers). Credit
            // every peer the lateness, so that neither the quorum check nor
            // the holder check judges them on a stall they shared. Where
            // the others kept running (they were heard again and again),
            // nothing is credited: a dead holder stays dead, however busy
            // this node is.
            for at in self.duty.last_heard.values_mut() {
                *at = (*at + late).min(now.at);
            }
        }
        if stall > t.heartbeat_interval * 4 {
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
        if self.duty.hold_publish_until.is_some_and(|t| now.at >= t) {
            self.duty.hold_publish_until = None;
            self.dirty = true;
        }
        if !self.standing.fenced() {
            let me = self.cfg.me.node.clone();
            let new = {
                let s = self.shared.borrow();
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
            self.settle(now);
        }
    }

    /// Where to reach every live peer, as of the last heartbeat tick.
    fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.live_peers(Now {
            at: self.last_tick,
            wall_ms: 0,
        })
        .into_values()
        .collect()
    }

    /// Live peers and where to reach them: SWIM members, plus nodes heard
    /// (heartbeats) within the heartbeat timeout, which SWIM may briefly
    /// believe dead after a partition heals.
    fn live_peers(&self, now: Now) -> BTreeMap<NodeId, SocketAddr> {
        let mut out: BTreeMap<NodeId, SocketAddr> = self
            .members
            .iter()
            .map(|(n, id)| (n.clone(), id.addr))
            .collect();
        for (n, (addr, _)) in &self.heard {
            let recent = self.duty.last_heard.get(n).is_some_and(|t| {
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
    fn take_over_from(&mut self, now: Now, holders: &[NodeId]) {
        if self.standing.fenced() {
            return;
        }
        let me = self.cfg.me.node.clone();
        let new: Vec<NodeId> = {
            let s = self.shared.borrow();
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
            self.settle(now);
        }
    }

    fn took_over(&mut self, now: Now, holders: &[NodeId]) {
        let settle = self.cfg.timings.heartbeat_interval * 2;
        for h in holders {
            let silence = self
                .duty
                .last_heard
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

    /// What the standing is decided from at `now`.
    fn standing_input<'a>(
        &'a self,
        now: Now,
        nodes: &'a BTreeMap<NodeId, NodeRecord>,
    ) -> standing::Input<'a> {
        standing::Input {
            me: &self.cfg.me.node,
            nodes,
            last_heard: &self.duty.last_heard,
            rule: self.cfg.quorum,
            now: now.at,
            started: self.started,
            timings: &self.cfg.timings,
        }
    }

    /// Decides the standing (see [`crate::standing`]) and reports a change.
    fn check_quorum(&mut self, now: Now) {
        let was = self.standing.kind();
        let (change, ask) = {
            let s = self.shared.borrow();
            let input = self.standing_input(now, &s.replica.nodes);
            let mut standing = self.standing.clone();
            let out = standing.check(&input);
            drop(s);
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
        if was == Kind::Minority && change == Some(Change::Quorate) {
            // What it served as a minority goes by hand-off to the holders
            // the table names (they confirm once they have it).
            let me = self.cfg.me.node.clone();
            self.duty.left_minority(&me);
        } else if change == Some(Change::Quorate) {
            self.duty.forget_effective();
        }
        self.changed_standing(now, change);
    }

    /// Reports a change of standing and re-evaluates what this node serves.
    fn changed_standing(&mut self, now: Now, change: Option<Change>) {
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
        self.settle(now);
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

    fn wants_witness(&self, now: Now) -> bool {
        let s = self.shared.borrow();
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
        let s = self.shared.borrow();
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

    /// This node and the peers it heard within the heartbeat timeout.
    fn heard_live(&self, now: Now) -> BTreeSet<NodeId> {
        let timeout = self.cfg.timings.heartbeat_timeout;
        self.duty
            .last_heard
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
                .last_heard
                .iter()
                .filter(|(_, t)| now.at.saturating_duration_since(**t) <= half)
                .map(|(n, _)| n.clone())
                .chain([me.clone()])
                .collect();
            let s = self.shared.borrow();
            let nodes = &s.replica.nodes;
            let view = self
                .duty
                .minority_view(&s.replica, &live, |n, spec| serves(nodes.get(n), spec));
            let now_mine = &self.duty.effective;
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
        let s = self.shared.borrow();
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

    fn send_takeover_notices(&mut self, now: Now) {
        let me = self.cfg.me.node.clone();
        let Some(meta) = self
            .shared
            .borrow()
            .replica
            .table
            .as_ref()
            .map(|t| t.meta.clone())
        else {
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
            for to in self.peer_addrs() {
                self.out.push_back(Transmit {
                    to,
                    payload: payload.clone(),
                });
            }
        }
    }

    /// Takeover notices are repeated while in force, in case one was lost.
    fn resend_takeovers(&mut self, now: Now) {
        let due = self
            .last_takeover_notice
            .is_some_and(|t| now.at.saturating_duration_since(t) >= Duration::from_millis(500));
        if due {
            self.send_takeover_notices(now);
        }
    }

    fn absorb(&mut self, now: Now, notes: Vec<Note>) {
        for n in notes {
            match n {
                Note::Up(id) => {
                    self.members.insert(id.node.clone(), id.clone());
                    // Anti-entropy at once with a newcomer (or a returning node).
                    self.send_digest(id.addr, false);
                    self.events.push_back(Event::MemberUp(id));
                }
                Note::Down(id) => {
                    if self.members.get(&id.node) == Some(&id) {
                        self.members.remove(&id.node);
                    }
                    self.events.push_back(Event::MemberDown(id));
                }
                Note::Rename(old, new) => {
                    self.members.remove(&old.node);
                    self.members.insert(new.node.clone(), new.clone());
                    if (old.incarnation, old.bump) != (new.incarnation, new.bump) {
                        self.send_digest(new.addr, false);
                    }
                }
                Note::Active => {
                    if std::mem::take(&mut self.was_isolated) {
                        // Back from isolation: learn the cluster's table
                        // before leading on a view that may be stale.
                        self.lead_after = now.at + self.cfg.timings.lead_grace;
                    }
                    self.events.push_back(Event::Joined)
                }
                Note::Idle => {
                    self.was_isolated = true;
                    self.events.push_back(Event::Isolated);
                    self.announce_to_seeds(now);
                }
            }
        }
    }

    fn announce_to_seeds(&mut self, now: Now) {
        self.last_seed_announce = Some(now.at);
        // Seeds that are live members need no announce (it would only make
        // them send their whole member list again).
        let live: BTreeSet<SocketAddr> = self.members.values().map(|m| m.addr).collect();
        let seeds: Vec<SocketAddr> = self
            .cfg
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != self.cfg.me.addr && !live.contains(s))
            .collect();
        for seed in seeds {
            // We do not know the seed's identity: foca only needs an
            // address to send to; the seed answers with its real identity.
            let placeholder = Id {
                node: NodeId::new(""),
                addr: seed,
                incarnation: 0,
                bump: 0,
            };
            let _ = self.with_swim(now, |swim, fx| swim.announce(placeholder, fx));
        }
    }

    fn send_digest(&mut self, to: SocketAddr, answer: bool) {
        let s = self.shared.borrow();
        let p = Packet::Digest {
            digest: s.replica.digest(),
            table: s.replica.table.as_ref().map(|t| t.meta.clone()),
            answer,
        };
        drop(s);
        self.out.push_back(Transmit {
            to,
            payload: wire::encode(&p),
        });
    }

    fn handle_digest(
        &mut self,
        from: SocketAddr,
        digest: fechter_core::replica::ReplicaDigest,
        table: Option<TableMeta>,
        answer: bool,
    ) {
        let s = self.shared.borrow();
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
        drop(s);
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

    fn schedule(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        self.timers.insert((at, self.seq), kind);
    }
}

fn foca_config(cfg: &EngineConfig) -> foca::Config {
    let t = &cfg.timings;
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(16).expect("nonzero"));
    c.probe_period = t.probe_period;
    c.probe_rtt = t.probe_rtt;
    c.suspect_to_down_after = t.suspect_to_down;
    c.num_indirect_probes = NonZeroUsize::new(3).expect("nonzero");
    c.max_transmissions = NonZeroU8::new(8).expect("nonzero");
    c.remove_down_after = Some(t.forget_down_after);
    // Our packet is `Packet::Swim(bytes)`: one tag byte and a length varint.
    c.max_packet_size = NonZeroUsize::new(cfg.max_packet.min(MAX_PACKET) - 4).expect("nonzero");
    c.notify_down_members = true;
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: t.gossip_period,
        num_members: NonZeroUsize::new(3).expect("nonzero"),
    });
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: t.seed_announce,
        num_members: NonZeroUsize::new(1).expect("nonzero"),
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(1),
        num_members: NonZeroUsize::new(2).expect("nonzero"),
    });
    c
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
