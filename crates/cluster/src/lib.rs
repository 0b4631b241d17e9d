//! Cluster runtime of fechter: one node's protocol, sans I/O, and the
//! pieces around it that the agent's shell and the simulator share.
//!
//! ## The data path
//! A sealed datagram is opened by [`seal::Opener`] and handed to
//! [`node::Node::handle_datagram`], which passes it to the [`engine`]; a
//! heartbeat lands in
//! `engine/liveness.rs`, a SWIM message in `engine/swim.rs` (foca), state
//! items and table parts in `engine/sync.rs`. On each tick
//! ([`engine::Engine::handle_timeout`]) `engine/quorum.rs` asks
//! [`standing`] whether this node is quorate, a minority or fenced, and
//! [`duty`] finds silent holders whose standby is this node; the leader rule
//! publishes tables. The result is [`engine::Engine::allocation`], which
//! [`node::Node::plan`] plans against (`fechter_core::reconcile`) after
//! [`wire_lock`] has probed what is about to be installed; the driver (the
//! agent's shell, or the simulator) executes the plan and reports it back with
//! [`node::Node::executed`].
//!
//! ## Who owns which state
//! - [`engine`] (`engine/mod.rs`): the replica, the followed table, the
//!   outgoing queue and events; `swim.rs` the foca instance and members;
//!   `sync.rs` broadcasts, digests, table assembly, hand-off confirmations;
//!   `liveness.rs` heartbeats heard, stall credit, the live peers that
//!   status, metrics and decisions share ([`engine::Engine::alive`]);
//!   `quorum.rs` the standing as the engine reports it; `commands.rs` the
//!   operator's commands; `timings.rs` every timing.
//! - [`duty`]: leading, takeovers, hand-offs and the effective allocation
//!   (a minority's view included), in parts whose state is private (the
//!   engine calls [`duty::Duty`]'s methods): `duty/leading.rs` who leads,
//!   maturity, quarantine and the hold on publishing; `duty/standby.rs`
//!   when each peer was last heard, the takeovers and the holders this node
//!   stands by for; `duty/handoff.rs` confirmed, own and implicit
//!   hand-offs; `duty/acting.rs` the allocation this node acts on and its
//!   refresh.
//! - [`standing`]: quorum, minority and fence as transitions, the two-node
//!   witness, the segment's signs of life.
//! - [`node`]: one agent's node, sans I/O, around the engine: what this
//!   machine installed and announced, the wire as the lock on its side
//!   (`node/wire.rs`), plans and what their execution changed
//!   (`node/apply.rs`), why each address came or went ([`node::reason`]).
//!   The agent and the simulator drive it in the order its doc gives.
//! - [`wire_lock`]: the wire as the lock: probe bookkeeping and conflicts.
//! - `sim` (behind the `sim` feature, for tests and benchmarks; the agent's
//!   binary has none of it): a deterministic in-memory network of nodes on
//!   the agent's schedule (`sim/drive.rs`), with a recording platform and a
//!   simulated segment (partitions, cluster-port cuts, crashes, restarts);
//!   `rehome` measures re-homing after a crash with it.
//! - [`seal`]: every cluster datagram is encrypted and authenticated with
//!   XChaCha20-Poly1305 under the cluster key, and checked against a
//!   per-sender replay window; dropped datagrams are counted by reason.
//! - No module touches files: the key file and the agent's state files
//!   are the `fechter` crate's (`files/`).

pub mod duty;
pub mod engine;
pub mod node;
#[cfg(feature = "sim")]
pub mod rehome;
pub mod seal;
#[cfg(feature = "sim")]
pub mod sim;
pub mod standing;
pub mod wire_lock;
