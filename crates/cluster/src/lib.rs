//! Cluster runtime of fechter (membership and state sync to come).
//!
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
pub mod seal;
pub mod sim;
