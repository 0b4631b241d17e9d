//! Cluster runtime of fechter.
//!
//! - [`engine`]: one node's protocol state machine, sans I/O (quinn-proto
//!   style: `handle_*` in, `poll_*` out, time passed in, seeded RNG): SWIM
//!   membership through foca, the replicated state with broadcasts and
//!   anti-entropy, [`duty`]: leading, heartbeats and standby takeovers,
//!   hand-offs, and [`standing`]: quorum, minority and fence, the two-node
//!   witness, the segment's signs of life.
//! - [`wire_lock`]: the wire as the lock, sans I/O: probe bookkeeping and
//!   conflicts, shared by the agent's shell and the simulator.
//! - [`sim`]: a deterministic in-memory network of engines with a recording
//!   platform and a simulated segment, for tests and benchmarks
//!   (partitions, cluster-port cuts, crashes, restarts).
//! - [`rehome`]: measures, in the simulator, how long re-homing every
//!   address of a crashed (non-leader) node takes.
//! - [`seal`]: every cluster datagram is encrypted and authenticated with
//!   XChaCha20-Poly1305 under the cluster key, and checked against a
//!   per-sender replay window; dropped datagrams are counted by reason.
//! - [`keyfile`]: generating and loading the cluster key file (hex, mode 0600).
//! - [`persist`]: atomic state files (write, fsync, rename, fsync the
//!   directory) and the agent's exclusively locked data directory.

pub mod duty;
pub mod engine;
pub mod keyfile;
pub mod persist;
pub mod rehome;
pub mod seal;
pub mod sim;
pub mod standing;
pub mod wire_lock;
