//! Node identity and the stable hash used to break ties.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity: by default the machine's host name.
///
/// Ordering and equality are by the string. Tie-breaks between nodes use
/// [`NodeId::stable_hash`], never a `HashMap` iteration order, so every node
/// computes the same result from the same input.
///
/// An id read from the network or a file is validated like one given on
/// the command line ([`std::str::FromStr`]): no overlong, whitespace or
/// control-character ids, so that a peer cannot put a newline or an escape
/// sequence into logs, hook environments or status. (The empty id is read:
/// it stands for a seed whose identity is not known yet.)
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(NodeId(s));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl NodeId {
    pub fn new(id: impl Into<String>) -> Self {
        NodeId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// 64-bit FNV-1a of the id's UTF-8 bytes (offset basis
    /// `0xcbf29ce484222325`, prime `0x100000001b3`). Stable across
    /// platforms, versions and runs: it is part of the allocation rules.
    pub fn stable_hash(&self) -> u64 {
        fnv1a64(self.0.as_bytes())
    }

    /// The total order used wherever the seed says "lowest hash": by
    /// [`stable_hash`](Self::stable_hash), then by the id itself so that a
    /// hash collision still has one answer.
    pub fn tie_key(&self) -> (u64, &str) {
        (self.stable_hash(), self.as_str())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Longest accepted node id, in bytes (a DNS name is at most 253).
pub const MAX_NODE_ID_LEN: usize = 253;

impl std::str::FromStr for NodeId {
    type Err = String;

    /// Validates an operator-given id: 1 to 253 bytes, no whitespace or
    /// control characters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(
                "the node id is empty: give a name such as ws-1 (default: the host name)".into(),
            );
        }
        if s.len() > MAX_NODE_ID_LEN {
            return Err(format!(
                "the node id is {} bytes long; use at most {MAX_NODE_ID_LEN}",
                s.len()
            ));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "the node id {s:?} contains whitespace or control characters; use letters, digits, '-', '.' or '_'"
            ));
        }
        Ok(NodeId::new(s))
    }
}

impl From<&str> for NodeId {
    fn from(s: &str) -> Self {
        NodeId::new(s)
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn operator_ids_are_validated() {
        assert!("ws-1".parse::<NodeId>().is_ok());
        assert!("".parse::<NodeId>().unwrap_err().contains("empty"));
        assert!("a b".parse::<NodeId>().unwrap_err().contains("whitespace"));
        assert!(
            "x".repeat(254)
                .parse::<NodeId>()
                .unwrap_err()
                .contains("at most")
        );
    }

    #[test]
    fn tie_key_orders_by_hash_then_id() {
        let a = NodeId::new("ws-1");
        let b = NodeId::new("ws-2");
        assert_eq!(a.tie_key() < b.tie_key(), a.stable_hash() < b.stable_hash());
    }

    #[test]
    fn ids_from_the_wire_are_validated_like_the_command_lines() {
        for good in ["ws-1", "n0", "a.b_c"] {
            let bytes = postcard::to_allocvec(good).unwrap();
            assert_eq!(
                postcard::from_bytes::<NodeId>(&bytes).unwrap(),
                NodeId::new(good)
            );
        }
        let long = "x".repeat(MAX_NODE_ID_LEN + 1);
        for bad in ["a\nb", "a\u{1b}[31m", "a b", "nul\0", long.as_str()] {
            let bytes = postcard::to_allocvec(bad).unwrap();
            assert!(postcard::from_bytes::<NodeId>(&bytes).is_err(), "{bad:?}");
        }
    }
}
