//! Every timing of the engine, and what it starts from.

use super::*;

/// Every timing of the engine. Defaults are tuned for a LAN.
///
/// The user's `[timings]` table maps onto it in the agent's config module;
/// this type has no serialized form of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timings {
    /// SWIM: how often a random member is probed.
    pub probe_period: Duration,
    /// SWIM: how long a direct probe waits for its ack before asking others.
    pub probe_rtt: Duration,
    /// SWIM: how long a suspect has to refute before it is declared down.
    pub suspect_to_down: Duration,
    /// SWIM: how often updates are gossiped to a few members.
    pub gossip_period: Duration,
    /// How often to announce to the seeds while not joined.
    pub join_retry: Duration,
    /// How often to announce to the seeds while joined (heals partitions).
    pub seed_announce: Duration,
    /// How often to run anti-entropy with one random member.
    pub anti_entropy: Duration,
    /// How long a down member is remembered (so it may rejoin with its old identity after).
    pub forget_down_after: Duration,
    /// Standby fast path: how often every node sends a heartbeat to every live member.
    pub heartbeat_interval: Duration,
    /// Standby fast path: silence after which a standby takes its holder's addresses.
    pub heartbeat_timeout: Duration,
    /// How long a node must be up, healthy and alive before it receives addresses.
    pub maturity: Duration,
    /// How long a holder whose addresses a standby took stays ineligible.
    pub quarantine: Duration,
    /// How long after start a node waits (to learn the cluster's table) before it may lead.
    pub lead_grace: Duration,
    /// How often the leader re-evaluates eligibility (maturity, quarantine).
    pub leader_tick: Duration,
    /// Quorum: how long a node may see no majority before it releases its
    /// addresses (self-fencing). Must be shorter than `heartbeat_timeout`, the
    /// time the majority side waits before taking them.
    pub fence_after: Duration,
    /// Quorum: after a fence longer than `heartbeat_timeout`, how long a node
    /// that sees a majority again waits (learning the current table and
    /// takeovers) before it holds addresses again.
    pub rejoin_hold: Duration,
    /// Quorum: after a loss longer than `heartbeat_timeout`, how long a
    /// fenced node that hears a majority again waits (asking for the current
    /// table and takeovers) before it serves again. Short: what it installs
    /// is checked on the wire first.
    pub resume_hold: Duration,
    /// Minority: how long a node without a majority keeps serving while its
    /// segment shows no sign of life, before it fences itself.
    pub isolation: Duration,
    /// The wire as the lock: how long probes for an address must go
    /// unanswered (two probes at least, one per heartbeat tick) before a node
    /// installs an address nobody handed to it.
    pub probe_window: Duration,
}

/// How often takeover notices are repeated while in force (one may be
/// lost).
pub(super) const TAKEOVER_RESEND: Duration = Duration::from_millis(500);

/// Addresses per hand-off confirmation datagram (well within the seal's
/// payload limit for the longest specs).
pub(super) const CONFIRM_CHUNK: usize = 32;

impl Timings {
    /// How long a takeover waits for the table that records it before a
    /// node that reported it is believed (two heartbeat ticks).
    pub(super) fn takeover_settle(&self) -> Duration {
        self.heartbeat_interval * 2
    }

    /// A stall longer than this (four heartbeat ticks) makes a node
    /// distrust the view it woke up with: it does not lead on it.
    pub(super) fn stall_distrust(&self) -> Duration {
        self.heartbeat_interval * 4
    }

    pub(crate) fn duty(&self) -> DutyTimings {
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
