//! Every file the agent and the CLI touch, in one place (the protocol
//! crates touch none):
//! - [`persist`]: atomic writes, JSON state files and the locked data
//!   directory;
//! - [`state`]: what the agent keeps in its data directory (the address
//!   list, this node's admin status, the last incarnation);
//! - [`writer`]: the thread that writes state files off the agent's loop;
//! - [`keyfile`]: the cluster key file (`fechter keygen`).

pub mod keyfile;
pub mod persist;
pub mod state;
pub mod writer;
