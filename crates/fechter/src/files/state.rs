//! What the agent keeps on disk in its data directory.

use super::persist::{DataDir, PersistError};
use fechter_core::replica::Admin;
use fechter_core::state::AddressList;
use serde::{Deserialize, Serialize};

/// The state file's name inside the data directory.
pub const STATE_FILE: &str = "state.json";

/// Persisted across restarts: the cluster's address list (so that a
/// full-cluster restart loses no address), this node's admin status, and
/// the last incarnation (so the next one is higher).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    pub incarnation: u64,
    pub admin: Admin,
    pub addresses: AddressList,
}

pub fn load(dir: &DataDir) -> Result<Persisted, PersistError> {
    Ok(dir.load_json(STATE_FILE)?.unwrap_or_default())
}

pub fn save(dir: &DataDir, p: &Persisted) -> Result<(), PersistError> {
    dir.save_json(STATE_FILE, p)
}
