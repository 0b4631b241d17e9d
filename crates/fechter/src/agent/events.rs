//! This node's history: a bounded in-memory ring of what happened to it
//! (addresses acquired and released and why, takeovers, members, leader,
//! health, quorum), each entry with the wall-clock time and a sequence
//! number that grows by one per entry. `fechter events` reads it through the
//! control socket ([`crate::control::Request::Events`]).
//!
//! The [`Observer`] is where the agent loop reports each of these: it keeps
//! the ring, fires the notify hooks ([`super::hooks`]) and counts what the
//! metrics count ([`super::metrics`]). It never blocks.

use std::collections::VecDeque;
use std::sync::Arc;

use fechter_core::{AddrSpec, NodeId};
use serde::{Deserialize, Serialize};

use super::hooks::{HookEvent, Hooks};
use super::metrics::Metrics;
use super::reason::Reason;

/// How many entries the ring keeps.
pub const CAPACITY: usize = 1000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum What {
    /// The agent started (a new incarnation).
    Started {
        incarnation: u64,
    },
    /// This node installed an address.
    Acquired {
        address: AddrSpec,
        reason: Reason,
    },
    /// This node removed an address.
    Released {
        address: AddrSpec,
        reason: Reason,
    },
    /// As standby, this node took the addresses of a silent holder.
    TookOver {
        holder: NodeId,
        silence_ms: u64,
    },
    MemberUp {
        member: NodeId,
    },
    MemberDown {
        member: NodeId,
    },
    /// This node recognises a new leader (`None`: none).
    LeaderChanged {
        leader: Option<NodeId>,
    },
    /// A health check changed state.
    Health {
        check: String,
        passing: bool,
    },
    /// This node sees no majority and released its addresses.
    QuorumLost,
    /// This node sees a majority again.
    QuorumRegained,
    /// This node sees no majority, but its segment is alive: it serves
    /// what the wire shows nobody else serves.
    Minority,
    /// Another machine (`mac`) answers for an address this node holds;
    /// `kept`: this node kept it (it hears a majority) or yielded it.
    Conflict {
        address: AddrSpec,
        mac: String,
        kept: bool,
        standing: String,
    },
    /// The agent is shutting down (handing its addresses off).
    Stopping,
    /// Another machine, at `addr`, runs with this node's id.
    DuplicateId {
        addr: String,
    },
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1 for the first entry after start, +1 per entry.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    #[serde(flatten)]
    pub what: What,
}

/// The answer to `events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsReport {
    pub node: String,
    /// Changes when the agent restarts (its sequence numbers start again).
    pub incarnation: u64,
    pub events: Vec<Entry>,
}

/// The last [`CAPACITY`] entries.
#[derive(Debug, Clone)]
pub struct Ring {
    entries: VecDeque<Entry>,
    capacity: usize,
    next_seq: u64,
}

impl Default for Ring {
    fn default() -> Self {
        Ring::with_capacity(CAPACITY)
    }
}

impl Ring {
    pub fn with_capacity(capacity: usize) -> Self {
        Ring {
            entries: VecDeque::with_capacity(capacity.min(CAPACITY)),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Appends an entry (dropping the oldest when full); returns it.
    pub fn push(&mut self, time_ms: u64, what: What) -> &Entry {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry {
            seq: self.next_seq,
            time_ms,
            what,
        });
        self.next_seq += 1;
        self.entries.back().expect("just pushed")
    }

    /// The entries with a sequence number above `after` (all with `None`),
    /// oldest first.
    pub fn after(&self, after: Option<u64>) -> Vec<Entry> {
        let after = after.unwrap_or(0);
        // Sequence numbers are consecutive: find the start by arithmetic.
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let skip = after
            .saturating_sub(first - 1)
            .min(self.entries.len() as u64) as usize;
        self.entries.iter().skip(skip).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `2025-01-31T12:00:00.123Z` (UTC) for milliseconds since the Unix epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

impl Entry {
    /// One line: time, sequence number, what happened.
    pub fn render(&self) -> String {
        let what = match &self.what {
            What::Started { incarnation } => format!("agent started (incarnation {incarnation})"),
            What::Acquired { address, reason } => format!("acquired {address} ({reason})"),
            What::Released { address, reason } => format!("released {address} ({reason})"),
            What::TookOver { holder, silence_ms } => {
                format!("took over the addresses of {holder} (silent for {silence_ms} ms)")
            }
            What::MemberUp { member } => format!("member {member} up"),
            What::MemberDown { member } => format!("member {member} down"),
            What::LeaderChanged { leader } => match leader {
                Some(l) => format!("leader is now {l}"),
                None => "no leader".to_string(),
            },
            What::Health { check, passing } => {
                format!("{check} {}", if *passing { "passes" } else { "fails" })
            }
            What::QuorumLost => "quorum lost: released every address".to_string(),
            What::QuorumRegained => "quorum regained".to_string(),
            What::Minority => {
                "quorum lost, segment alive: serving what nobody else on the wire answers for"
                    .to_string()
            }
            What::Conflict {
                address,
                mac,
                kept,
                standing,
            } => format!(
                "conflict: {mac} answers for {address}; {} ({standing})",
                if *kept {
                    "kept and defended it"
                } else {
                    "yielded it"
                }
            ),
            What::Stopping => "agent stopping: handing addresses off".to_string(),
            What::DuplicateId { addr } => {
                format!("another machine ({addr}) runs with this node's id")
            }
        };
        format!("{}  #{}  {what}", utc(self.time_ms), self.seq)
    }
}

/// Where the agent loop reports what happened: the ring, the hooks, the
/// metrics.
pub struct Observer {
    pub node: NodeId,
    pub incarnation: u64,
    pub ring: Ring,
    pub hooks: Hooks,
    pub metrics: Arc<Metrics>,
    /// The leader as last reported (for the hooks' FECHTER_LEADER).
    leader: Option<NodeId>,
}

impl Observer {
    pub fn new(node: NodeId, incarnation: u64, hooks: Hooks, metrics: Arc<Metrics>) -> Self {
        Observer {
            node,
            incarnation,
            ring: Ring::default(),
            hooks,
            metrics,
            leader: None,
        }
    }

    /// Records `what` at `time_ms`; fires the matching hook; counts it.
    pub fn note(&mut self, time_ms: u64, what: What) {
        let leader = self.leader.as_ref().map(ToString::to_string);
        match &what {
            What::Acquired { address, reason } | What::Released { address, reason } => {
                let acquired = matches!(what, What::Acquired { .. });
                if reason.is_handoff() {
                    self.metrics
                        .handoff(if acquired { "received" } else { "given" });
                }
                self.hooks.fire(HookEvent {
                    event: if acquired { "acquire" } else { "release" },
                    address: address.to_string(),
                    ip: address.ip.to_string(),
                    iface: address.iface.clone(),
                    reason: reason.to_string(),
                    node: self.node.to_string(),
                    leader: leader.unwrap_or_default(),
                });
            }
            What::TookOver { silence_ms, .. } => self.metrics.took_over(*silence_ms),
            What::LeaderChanged { leader } => {
                self.leader = leader.clone();
                self.hooks.fire(HookEvent {
                    event: "leader",
                    address: String::new(),
                    ip: String::new(),
                    iface: String::new(),
                    reason: "leader changed".into(),
                    node: self.node.to_string(),
                    leader: leader.as_ref().map(ToString::to_string).unwrap_or_default(),
                });
            }
            What::Health { check, passing } => self.metrics.health(check, *passing),
            What::QuorumLost => {
                self.metrics.quorum.set(0);
            }
            What::QuorumRegained => {
                self.metrics.quorum.set(1);
            }
            What::Minority => {
                self.metrics.quorum.set(0);
            }
            What::Conflict {
                address, mac, kept, ..
            } => {
                self.metrics.conflict(*kept);
                self.hooks.fire(HookEvent {
                    event: "conflict",
                    address: address.to_string(),
                    ip: address.ip.to_string(),
                    iface: address.iface.clone(),
                    reason: format!(
                        "{mac} answers for it; {}",
                        if *kept { "kept" } else { "yielded" }
                    ),
                    node: self.node.to_string(),
                    leader: leader.unwrap_or_default(),
                });
            }
            What::Started { .. }
            | What::MemberUp { .. }
            | What::MemberDown { .. }
            | What::Stopping
            | What::DuplicateId { .. } => {}
        }
        self.ring.push(time_ms, what);
    }

    /// The answer to `events`.
    pub fn report(&self, after: Option<u64>) -> EventsReport {
        EventsReport {
            node: self.node.to_string(),
            incarnation: self.incarnation,
            events: self.ring.after(after),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: &str) -> What {
        What::MemberUp {
            member: NodeId::new(n),
        }
    }

    #[test]
    fn sequence_numbers_grow_by_one_and_after_skips_what_was_seen() {
        let mut r = Ring::with_capacity(10);
        assert!(r.after(None).is_empty());
        for i in 0..3 {
            let e = r.push(1000 + i, member("a"));
            assert_eq!(e.seq, i + 1);
        }
        assert_eq!(
            r.after(None).iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(r.after(Some(0)).len(), 3);
        assert_eq!(
            r.after(Some(1)).iter().map(|e| e.seq).collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(r.after(Some(3)).is_empty());
        // A number from the future (another incarnation) gives nothing.
        assert!(r.after(Some(99)).is_empty());
        assert_eq!(r.after(Some(2))[0].time_ms, 1002);
    }

    #[test]
    fn the_ring_keeps_only_the_newest_entries() {
        let mut r = Ring::with_capacity(CAPACITY);
        for i in 0..(CAPACITY as u64 + 250) {
            r.push(i, member("a"));
        }
        assert_eq!(r.len(), CAPACITY);
        let all = r.after(None);
        assert_eq!(all.first().unwrap().seq, 251);
        assert_eq!(all.last().unwrap().seq, CAPACITY as u64 + 250);
        // Asking from before the oldest kept entry gives everything kept.
        assert_eq!(r.after(Some(10)).len(), CAPACITY);
        assert_eq!(r.after(Some(1000)).len(), 250);
        assert_eq!(r.after(Some(1000))[0].seq, 1001);
    }

    #[test]
    fn entries_are_flat_json_objects_and_render_on_one_line() {
        let mut r = Ring::default();
        let e = r
            .push(
                1_700_000_000_123,
                What::Acquired {
                    address: "eth0:198.51.100.10/24".parse().unwrap(),
                    reason: Reason::TakeoverFrom(NodeId::new("ws-2")),
                },
            )
            .clone();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "acquired");
        assert_eq!(json["seq"], 1);
        assert_eq!(json["address"], "eth0:198.51.100.10/24");
        assert_eq!(serde_json::from_value::<Entry>(json).unwrap(), e);
        assert_eq!(
            e.render(),
            "2023-11-14T22:13:20.123Z  #1  acquired eth0:198.51.100.10/24 (takeover from ws-2)"
        );
        let q = serde_json::to_string(r.push(0, What::QuorumLost)).unwrap();
        assert_eq!(q, r#"{"seq":2,"time_ms":0,"event":"quorum-lost"}"#);
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
