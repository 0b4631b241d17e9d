//! The replicated address list: a last-writer-wins map on a hybrid logical clock.
//!
//! Every node keeps a copy of the list of managed addresses. Operators add and
//! remove addresses on any node; the writes spread by gossip and anti-entropy,
//! and every copy converges to the same list without coordination.
//!
//! # Clock
//!
//! Writes are versioned by a [`Stamp`]: a hybrid logical clock reading
//! ([`Hlc`], Kulkarni et al., "Logical Physical Clocks", 2014) plus the id of
//! the node that made the write. An HLC stays close to wall-clock time (so "the
//! last write" means what an operator expects when clocks are roughly in sync)
//! while still respecting causality: a node that has seen a write always
//! stamps its own later writes higher, even if its wall clock lags. The origin
//! breaks ties between writes made at the same HLC reading on two nodes, so
//! stamps are totally ordered and every node picks the same winner.
//!
//! A peer whose clock runs far ahead could drag every clock forward with it
//! (and win every conflict for as long as it runs ahead), so
//! [`Hlc::observe`] refuses remote readings more than a caller-given skew
//! ahead of local time. The I/O shell observes a remote entry's stamp into its
//! clock *before* applying the entry and drops the entry if that fails.
//!
//! # The map
//!
//! [`AddressList`] maps an IP address to an [`AddressEntry`]. The key is the IP
//! alone, not the whole [`AddrSpec`]: one IP can be managed only once, whatever
//! its interface or prefix, because two specs for one IP would allocate that IP
//! to two holders (possibly on two interfaces of two machines), which is
//! exactly the duplicate address fechter exists to prevent. Changing an
//! address's interface or prefix is a remove followed by an add.
//!
//! Removing an address does not delete it: the entry stays as a
//! [`AddressState::DoNotAssign`] tombstone, so a replica that has not yet heard
//! of the removal cannot resurrect the address by merging its older copy.
//! Tombstones are never collected; they cost a few dozen bytes per IP ever
//! managed.
//!
//! Each entry records, besides the stamp of its latest write, the stamp of the
//! add that created its current assignable incarnation (`added`). The
//! assignable addresses sorted by `added` are "the order in which addresses
//! were added", the input of [`crate::alloc::allocate`]. Re-adding a removed
//! address is a new incarnation and goes to the end of that order.
//!
//! # Convergence
//!
//! [`AddressList::apply`] keeps, per IP, the entry that is greatest in the
//! total order (stamp, state, added, spec). Stamps are unique in a correct
//! cluster (each node's HLC strictly increases, and the origin is part of the
//! stamp), so in practice this is "the latest write wins"; the remaining
//! fields only make the order total so that even two different entries with
//! the same stamp (a bug or a replayed id) resolve the same way everywhere,
//! with the tombstone winning. Taking a per-key maximum of a total order makes
//! [`AddressList::merge`] commutative, associative and idempotent: replicas
//! that have seen the same writes, in any order and with any duplication,
//! hold identical lists.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::node::fnv1a64;
use crate::{AddrSpec, NodeId};

/// A hybrid logical clock reading: milliseconds of wall-clock time plus a
/// logical counter that orders events within one millisecond.
///
/// Ordered by `wall_ms`, then `logical`. All methods are pure: they take the
/// current reading by value and return the next one; the caller stores it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Physical component: the highest wall-clock time (ms since the Unix
    /// epoch) seen by this clock or any clock it observed.
    pub wall_ms: u64,
    /// Logical component: counts events that happened at the same `wall_ms`.
    pub logical: u32,
}

/// [`Hlc::observe`] refused a remote reading that is too far in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "remote clock reads {remote_wall_ms} ms, more than {max_skew_ms} ms ahead of the local \
     clock ({now_ms} ms); the remote reading was ignored. Check time synchronisation (NTP) on \
     the peer that sent it"
)]
pub struct ClockSkewError {
    /// The refused remote reading's wall time.
    pub remote_wall_ms: u64,
    /// Local wall time when it was refused.
    pub now_ms: u64,
    /// The skew limit in force.
    pub max_skew_ms: u64,
}

impl Hlc {
    /// The zero reading, older than every other.
    pub const ZERO: Hlc = Hlc {
        wall_ms: 0,
        logical: 0,
    };

    /// A reading with the given components.
    pub const fn new(wall_ms: u64, logical: u32) -> Hlc {
        Hlc { wall_ms, logical }
    }

    /// The reading for a local event (a local write, or sending a message) at
    /// wall time `now_ms`. Always strictly greater than `self` (except at the
    /// unreachable saturation point `wall_ms == u64::MAX`,
    /// `logical == u32::MAX`, where it stays put).
    ///
    /// If the wall clock moved past `self.wall_ms`, the result is
    /// `(now_ms, 0)`; otherwise the logical counter is bumped.
    #[must_use]
    pub fn next(self, now_ms: u64) -> Hlc {
        if now_ms > self.wall_ms {
            Hlc::new(now_ms, 0)
        } else {
            self.bump()
        }
    }

    /// The reading after receiving a message stamped `remote` at local wall
    /// time `now_ms` (the HLC receive rule). When accepted, the result is
    /// strictly greater than both `self` and `remote` and its `wall_ms` is at
    /// least `now_ms`.
    ///
    /// # Errors
    ///
    /// [`ClockSkewError`] if `remote.wall_ms > now_ms + max_skew_ms`. Since
    /// the clock is passed by value, the caller's reading is unchanged; the
    /// caller should also drop whatever the remote reading stamped.
    pub fn observe(
        self,
        remote: Hlc,
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Result<Hlc, ClockSkewError> {
        if remote.wall_ms > now_ms.saturating_add(max_skew_ms) {
            return Err(ClockSkewError {
                remote_wall_ms: remote.wall_ms,
                now_ms,
                max_skew_ms,
            });
        }
        let wall = self.wall_ms.max(remote.wall_ms).max(now_ms);
        let next = match (wall == self.wall_ms, wall == remote.wall_ms) {
            // Both carry the maximal wall time: go past both counters.
            (true, true) => Hlc::new(wall, self.logical.max(remote.logical)).bump(),
            (true, false) => self.bump(),
            (false, true) => remote.bump(),
            // Local wall time is ahead of both: a fresh millisecond.
            (false, false) => Hlc::new(wall, 0),
        };
        Ok(next)
    }

    /// The next reading after `self` at the same wall time. If the logical
    /// counter is exhausted (`u32::MAX` events within one millisecond), the
    /// reading saturates into the next millisecond, `(wall_ms + 1, 0)`,
    /// instead of panicking or wrapping: the clock then runs at most 1 ms
    /// ahead of real time, which is harmless. At `wall_ms == u64::MAX` it
    /// stays put.
    fn bump(self) -> Hlc {
        match self.logical.checked_add(1) {
            Some(logical) => Hlc::new(self.wall_ms, logical),
            None => match self.wall_ms.checked_add(1) {
                Some(wall_ms) => Hlc::new(wall_ms, 0),
                None => self,
            },
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// The version of a write: when (HLC) and where (origin node) it was made.
///
/// Totally ordered by `(hlc, origin)`; the greater stamp is the later write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The origin's clock reading when it made the write.
    pub hlc: Hlc,
    /// The node that made the write; breaks ties between equal readings.
    pub origin: NodeId,
}

impl Stamp {
    /// A stamp for a write made by `origin` at `hlc`.
    pub fn new(hlc: Hlc, origin: NodeId) -> Stamp {
        Stamp { hlc, origin }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, self.origin)
    }
}

/// Whether an address is to be allocated.
///
/// Ordered `Assignable < DoNotAssign` so that, in the (buggy) case of two
/// different writes with the same stamp, the tombstone wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AddressState {
    /// Managed: the leader allocates it to a node.
    Assignable,
    /// Removed: a tombstone. Nobody may hold it; it is never allocated.
    DoNotAssign,
}

/// One address in the replicated list, with its version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AddressEntry {
    /// The address. Its `ip` is the entry's key.
    pub spec: AddrSpec,
    /// Assignable, or removed (tombstone).
    pub state: AddressState,
    /// The version of the latest write to this entry.
    pub stamp: Stamp,
    /// The stamp of the add that created the current assignable incarnation:
    /// assignable addresses are allocated in the order of this stamp. For a
    /// tombstone, the incarnation that was removed. Never greater than
    /// `stamp` in a well-formed entry.
    pub added: Stamp,
}

impl AddressEntry {
    /// The key of this entry.
    pub fn ip(&self) -> IpAddr {
        self.spec.ip
    }

    /// Whether the address is to be allocated.
    pub fn is_assignable(&self) -> bool {
        self.state == AddressState::Assignable
    }

    /// The total order in which entries for one IP supersede each other:
    /// by stamp, then (only for equal stamps, which a correct cluster never
    /// produces) by state with the tombstone greatest, then `added`, then spec.
    fn lww_cmp(&self, other: &AddressEntry) -> std::cmp::Ordering {
        (&self.stamp, self.state, &self.added, &self.spec).cmp(&(
            &other.stamp,
            other.state,
            &other.added,
            &other.spec,
        ))
    }

    /// Whether this entry would replace `other` (an entry for the same IP)
    /// under the last-writer-wins order used by [`AddressList::apply`].
    pub fn supersedes(&self, other: &AddressEntry) -> bool {
        self.is_well_formed() && self.lww_cmp(other).is_gt()
    }

    fn is_well_formed(&self) -> bool {
        self.added <= self.stamp
    }
}

/// [`AddressList::add`] refused the add; the list is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The IP is already assignable (under `existing`, which may differ from
    /// the requested spec in interface or prefix).
    #[error(
        "{} is already managed as {existing}; to change its interface or prefix, remove it and \
         add it again",
        existing.ip
    )]
    AlreadyPresent {
        /// The spec under which the IP is managed now.
        existing: AddrSpec,
    },
    /// The write's stamp is not newer than the entry it would replace, so it
    /// would lose to that entry on every other replica.
    #[error(
        "write stamp {stamp} is not newer than the current entry's {current}; observe the list's \
         newest stamp into the clock before taking the next reading"
    )]
    StaleStamp {
        /// The refused stamp.
        stamp: Stamp,
        /// The stamp of the entry it would have replaced.
        current: Stamp,
    },
}

/// [`AddressList::remove`] refused the removal; the list is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    /// The IP is not managed: never added, or already removed.
    #[error("{ip} is not a managed address (never added, or already removed)")]
    UnknownAddress {
        /// The IP that was to be removed.
        ip: IpAddr,
    },
    /// The write's stamp is not newer than the entry it would replace.
    #[error(
        "write stamp {stamp} is not newer than the current entry's {current}; observe the list's \
         newest stamp into the clock before taking the next reading"
    )]
    StaleStamp {
        /// The refused stamp.
        stamp: Stamp,
        /// The stamp of the entry it would have replaced.
        current: Stamp,
    },
}

/// A cheap summary of an [`AddressList`] for anti-entropy: two replicas with
/// equal digests hold (with overwhelming probability) identical lists, so
/// they need not exchange entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// Number of entries, tombstones included.
    pub entries: u64,
    /// 64-bit FNV-1a over every entry in IP order (layout: see
    /// [`AddressList::digest`]).
    pub hash: u64,
}

/// The replicated address list: a last-writer-wins map from IP address to
/// [`AddressEntry`], tombstones included. See the [module docs](self).
///
/// Serialized as a sequence of entries; deserializing re-applies them, so a
/// list read from disk or the wire always has each entry under its own IP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<AddressEntry>", into = "Vec<AddressEntry>")]
pub struct AddressList {
    entries: BTreeMap<IpAddr, AddressEntry>,
}

impl AddressList {
    /// An empty list.
    pub fn new() -> AddressList {
        AddressList::default()
    }

    /// Local operation: start managing `spec`, as a write stamped `stamp`
    /// (a fresh stamp from this node's clock). Creates a new incarnation whose
    /// `added` is `stamp`: it goes to the end of the allocation order. Adding
    /// over a tombstone is a re-add.
    ///
    /// # Errors
    ///
    /// Change nothing. [`AddError::AlreadyPresent`] if the IP is assignable
    /// already; [`AddError::StaleStamp`] if `stamp` is not newer than the
    /// tombstone it would replace.
    pub fn add(&mut self, spec: AddrSpec, stamp: Stamp) -> Result<(), AddError> {
        let entry = self.add_entry(spec, stamp)?;
        self.entries.insert(entry.ip(), entry);
        Ok(())
    }

    /// The entry [`add`](Self::add) would write, without writing it (for a
    /// caller that disseminates the write before applying it). Same errors.
    pub fn add_entry(&self, spec: AddrSpec, stamp: Stamp) -> Result<AddressEntry, AddError> {
        if let Some(current) = self.entries.get(&spec.ip) {
            if current.is_assignable() {
                return Err(AddError::AlreadyPresent {
                    existing: current.spec.clone(),
                });
            }
            if stamp <= current.stamp {
                return Err(AddError::StaleStamp {
                    stamp,
                    current: current.stamp.clone(),
                });
            }
        }
        Ok(AddressEntry {
            spec,
            state: AddressState::Assignable,
            stamp: stamp.clone(),
            added: stamp,
        })
    }

    /// Local operation: stop managing `ip`, as a write stamped `stamp`. The
    /// entry becomes a tombstone that keeps its spec and `added`.
    ///
    /// # Errors
    ///
    /// Change nothing. [`RemoveError::UnknownAddress`] if `ip` is absent or
    /// already a tombstone; [`RemoveError::StaleStamp`] if `stamp` is not
    /// newer than the entry's.
    pub fn remove(&mut self, ip: IpAddr, stamp: Stamp) -> Result<(), RemoveError> {
        let entry = self.remove_entry(ip, stamp)?;
        self.entries.insert(ip, entry);
        Ok(())
    }

    /// The tombstone [`remove`](Self::remove) would write, without writing
    /// it. Same errors.
    pub fn remove_entry(&self, ip: IpAddr, stamp: Stamp) -> Result<AddressEntry, RemoveError> {
        let Some(current) = self.entries.get(&ip) else {
            return Err(RemoveError::UnknownAddress { ip });
        };
        if !current.is_assignable() {
            return Err(RemoveError::UnknownAddress { ip });
        }
        if stamp <= current.stamp {
            return Err(RemoveError::StaleStamp {
                stamp,
                current: current.stamp.clone(),
            });
        }
        Ok(AddressEntry {
            state: AddressState::DoNotAssign,
            stamp,
            ..current.clone()
        })
    }

    /// Remote write: keep `entry` if it supersedes the entry for its IP (a
    /// later stamp; see the [module docs](self) for the full order). Returns
    /// whether the list changed. Malformed entries (`added > stamp`) are
    /// ignored. The caller should first [`Hlc::observe`] `entry.stamp.hlc` and
    /// drop the entry if that fails.
    pub fn apply(&mut self, entry: AddressEntry) -> bool {
        if !self.would_change(&entry) {
            return false;
        }
        self.entries.insert(entry.ip(), entry);
        true
    }

    /// Whether [`apply`](Self::apply)ing `entry` would change the list,
    /// without applying it (to decide whether a gossiped entry is news).
    pub fn would_change(&self, entry: &AddressEntry) -> bool {
        entry.is_well_formed()
            && self
                .entries
                .get(&entry.ip())
                .is_none_or(|current| entry.supersedes(current))
    }

    /// Apply every entry of `other` (anti-entropy). Returns whether `self`
    /// changed. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &AddressList) -> bool {
        let mut changed = false;
        for entry in other.entries.values() {
            if self.would_change(entry) {
                changed |= self.apply(entry.clone());
            }
        }
        changed
    }

    /// The assignable addresses in the order they were added (by `added`,
    /// then spec), each with its addition key: the input of
    /// [`crate::alloc::allocate`].
    pub fn assignable(&self) -> Vec<(Stamp, AddrSpec)> {
        let mut out: Vec<(Stamp, AddrSpec)> = self
            .entries
            .values()
            .filter(|e| e.is_assignable())
            .map(|e| (e.added.clone(), e.spec.clone()))
            .collect();
        out.sort();
        out
    }

    /// The entry for `ip`, tombstone or not.
    pub fn get(&self, ip: &IpAddr) -> Option<&AddressEntry> {
        self.entries.get(ip)
    }

    /// All entries, tombstones included, in IP order.
    pub fn iter(&self) -> impl Iterator<Item = &AddressEntry> + '_ {
        self.entries.values()
    }

    /// All entries, tombstones included, in IP order, cloned (for sending).
    pub fn entries(&self) -> Vec<AddressEntry> {
        self.entries.values().cloned().collect()
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries at all (not even tombstones).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The newest stamp of any entry: observe its HLC into the local clock
    /// (after a merge, or at start-up from disk) so that local writes
    /// supersede everything seen.
    pub fn max_stamp(&self) -> Option<&Stamp> {
        self.entries.values().map(|e| &e.stamp).max()
    }

    /// A summary for anti-entropy: the entry count and a 64-bit FNV-1a over
    /// all entries in IP order. Stable across platforms and versions as long
    /// as this layout is; per entry, integers big-endian, strings as a `u32`
    /// byte length then UTF-8 bytes:
    ///
    /// `ip` (`4` + 4 octets or `6` + 16 octets), state (`0` assignable, `1`
    /// tombstone), `stamp` and `added` (each `wall_ms: u64`, `logical: u32`,
    /// origin string), interface string, `prefix: u8`.
    pub fn digest(&self) -> Digest {
        let mut buf = Vec::with_capacity(self.entries.len() * 96);
        for entry in self.entries.values() {
            match entry.spec.ip {
                IpAddr::V4(v4) => {
                    buf.push(4);
                    buf.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    buf.push(6);
                    buf.extend_from_slice(&v6.octets());
                }
            }
            buf.push(match entry.state {
                AddressState::Assignable => 0,
                AddressState::DoNotAssign => 1,
            });
            for stamp in [&entry.stamp, &entry.added] {
                buf.extend_from_slice(&stamp.hlc.wall_ms.to_be_bytes());
                buf.extend_from_slice(&stamp.hlc.logical.to_be_bytes());
                push_str(&mut buf, stamp.origin.as_str());
            }
            push_str(&mut buf, &entry.spec.iface);
            buf.push(entry.spec.prefix);
        }
        Digest {
            entries: self.entries.len() as u64,
            hash: fnv1a64(&buf),
        }
    }
}

fn push_str(buf: &mut Vec<u8>, s: &str) {
    // Interface names and host names are far below 4 GiB; saturate anyway.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

impl FromIterator<AddressEntry> for AddressList {
    /// Applies every entry, in any order: the result is the same.
    fn from_iter<I: IntoIterator<Item = AddressEntry>>(iter: I) -> AddressList {
        let mut list = AddressList::new();
        for entry in iter {
            list.apply(entry);
        }
        list
    }
}

impl From<Vec<AddressEntry>> for AddressList {
    /// Applies every entry (used when deserializing).
    fn from(entries: Vec<AddressEntry>) -> AddressList {
        entries.into_iter().collect()
    }
}

impl From<AddressList> for Vec<AddressEntry> {
    /// All entries in IP order (used when serializing).
    fn from(list: AddressList) -> Vec<AddressEntry> {
        list.entries.into_values().collect()
    }
}

#[cfg(test)]
mod tests;
