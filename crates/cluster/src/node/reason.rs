//! Why this node acquired or released an address: one typed [`Reason`],
//! decided where the agent acts ([`acquire`], [`release`], a conflict on
//! the wire) and carried as is to the history, the hooks and the metrics.
//! Its text (`Display`) is what `fechter events` prints and what a hook
//! reads in `FECHTER_REASON`; the history's JSON carries the same text, and
//! [`std::str::FromStr`] reads it back (the CLI's side of the control
//! socket), so the two never disagree.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use fechter_core::alloc::Allocation;
use fechter_core::{AddrSpec, NodeId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an address came or went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    // Acquired.
    /// The table gives it to this node (first placement).
    Assigned,
    /// The table moved it here from a live node.
    MovedFrom(NodeId),
    /// This node took it from a holder it no longer hears.
    TakeoverFrom(NodeId),
    /// A planned hand-off from the giver (make-before-break).
    HandOffFrom(NodeId),
    /// This node held it, and it vanished from the interface.
    Restored,
    // Released.
    /// A planned hand-off to the receiver, which confirmed it.
    HandOffTo(NodeId),
    /// The table names another holder and no standby: it took over.
    TakenOverBy(NodeId),
    /// The table moved it to another node.
    MovedTo(NodeId),
    /// This node is its holder, but the copy was not its own.
    StaleCopy,
    /// No node may hold it (none eligible).
    NoNodeMayHold,
    /// The operator removed the address.
    AddressRemoved,
    /// This node sees no majority and no sign of life on its segment.
    Fenced,
    /// The agent is stopping and hands it to nobody.
    Shutdown,
    /// Another machine (`mac`) answers for it and this node hears no
    /// majority: it yields.
    Conflict { mac: String },
}

impl Reason {
    /// Whether it is either side of a planned hand-off.
    pub fn is_handoff(&self) -> bool {
        matches!(self, Reason::HandOffFrom(_) | Reason::HandOffTo(_))
    }
}

const RESTORED: &str = "restored: it was missing from the interface";
const CONFLICT_HEAD: &str = "conflict: ";
const CONFLICT_TAIL: &str = " answers for it and this node hears no majority";

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Assigned => f.write_str("assigned"),
            Reason::MovedFrom(n) => write!(f, "moved from {n}"),
            Reason::TakeoverFrom(n) => write!(f, "takeover from {n}"),
            Reason::HandOffFrom(n) => write!(f, "hand-off from {n}"),
            Reason::Restored => f.write_str(RESTORED),
            Reason::HandOffTo(n) => write!(f, "hand-off to {n}"),
            Reason::TakenOverBy(n) => write!(f, "taken over by {n}"),
            Reason::MovedTo(n) => write!(f, "moved to {n}"),
            Reason::StaleCopy => f.write_str("stale copy"),
            Reason::NoNodeMayHold => f.write_str("no node may hold it"),
            Reason::AddressRemoved => f.write_str("address removed"),
            Reason::Fenced => f.write_str("fence: no quorum"),
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::Conflict { mac } => write!(f, "{CONFLICT_HEAD}{mac}{CONFLICT_TAIL}"),
        }
    }
}

/// A reason that names a node, by its constructor.
type Named = fn(NodeId) -> Reason;

/// The text is not one [`Reason`] prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a reason: {0:?}")]
pub struct UnknownReason(String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fixed = [
            Reason::Assigned,
            Reason::Restored,
            Reason::StaleCopy,
            Reason::NoNodeMayHold,
            Reason::AddressRemoved,
            Reason::Fenced,
            Reason::Shutdown,
        ];
        if let Some(r) = fixed.into_iter().find(|r| r.to_string() == s) {
            return Ok(r);
        }
        let node = |prefix: &str| {
            s.strip_prefix(prefix)
                .filter(|n| !n.is_empty())
                .map(NodeId::new)
        };
        let named: [(&str, Named); 6] = [
            ("moved from ", Reason::MovedFrom),
            ("takeover from ", Reason::TakeoverFrom),
            ("hand-off from ", Reason::HandOffFrom),
            ("hand-off to ", Reason::HandOffTo),
            ("taken over by ", Reason::TakenOverBy),
            ("moved to ", Reason::MovedTo),
        ];
        if let Some(r) = named
            .into_iter()
            .find_map(|(prefix, make)| node(prefix).map(make))
        {
            return Ok(r);
        }
        s.strip_prefix(CONFLICT_HEAD)
            .and_then(|r| r.strip_suffix(CONFLICT_TAIL))
            .map(|mac| Reason::Conflict { mac: mac.into() })
            .ok_or_else(|| UnknownReason(s.into()))
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why this node acquires `spec`: `prev` is the allocation of the previous
/// reconcile, `now` the current one, `took_over` the holders this node took
/// over from since then, `reinstall` whether it already held `spec`.
pub fn acquire(
    spec: &AddrSpec,
    me: &NodeId,
    prev: &Allocation,
    now: &Allocation,
    took_over: &BTreeSet<NodeId>,
    reinstall: bool,
) -> Reason {
    if reinstall {
        return Reason::Restored;
    }
    if let Some(g) = now
        .placements
        .get(spec)
        .and_then(|p| p.handoff_from.as_ref())
    {
        return Reason::HandOffFrom(g.clone());
    }
    match prev.placements.get(spec).map(|p| &p.holder) {
        Some(h) if h != me && took_over.contains(h) => Reason::TakeoverFrom(h.clone()),
        Some(h) if h != me => Reason::MovedFrom(h.clone()),
        _ => Reason::Assigned,
    }
}

/// What this node knows of itself when it releases an address.
#[derive(Debug, Clone, Copy, Default)]
pub struct Releasing {
    /// It sees no majority and fences.
    pub fenced: bool,
    /// The address is still managed.
    pub assignable: bool,
    /// It is shutting down (its record says leaving).
    pub leaving: bool,
}

/// Why this node releases `spec` (see [`acquire`]).
pub fn release(
    spec: &AddrSpec,
    me: &NodeId,
    prev: &Allocation,
    now: &Allocation,
    how: Releasing,
) -> Reason {
    if how.fenced {
        return Reason::Fenced;
    }
    if !how.assignable {
        return Reason::AddressRemoved;
    }
    let was = prev.placements.get(spec);
    let handing = was.is_some_and(|w| w.handoff_from.as_ref() == Some(me));
    let p = now.placements.get(spec);
    if how.leaving && !(handing && p.is_some()) {
        // Stopping with nobody to hand it to (a minority's last machine):
        // whatever the view names, the address goes nowhere.
        return Reason::Shutdown;
    }
    let Some(p) = p else {
        return Reason::NoNodeMayHold;
    };
    if p.holder == *me {
        return Reason::StaleCopy;
    }
    if handing {
        Reason::HandOffTo(p.holder.clone())
    } else if was.is_some_and(|w| w.holder == *me) && p.standby.is_none() {
        Reason::TakenOverBy(p.holder.clone())
    } else {
        Reason::MovedTo(p.holder.clone())
    }
}

#[cfg(test)]
mod tests;
