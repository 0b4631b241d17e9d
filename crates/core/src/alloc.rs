//! Allocation: where every address goes.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AddrSpec, NodeId};

/// Holder and standby of one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub holder: NodeId,
    pub standby: Option<NodeId>,
}

/// The result of [`allocate`]: a placement per assignable address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub placements: BTreeMap<AddrSpec, Placement>,
}

pub fn allocate<K: Ord>(_addresses: &[(K, AddrSpec)], _eligible: &[NodeId], _previous: &Allocation) -> Allocation {
    Allocation::default()
}
