//! Sealed datagrams: every cluster packet is encrypted and authenticated
//! with XChaCha20-Poly1305 under the 32-byte cluster key, and checked
//! against a per-sender replay window.
//!
//! # Wire format (version 1)
//!
//! ```text
//! +-------+-----+------------------+-------------------------------------+
//! | magic | ver | nonce (24 bytes) | ciphertext + 16-byte Poly1305 tag   |
//! | "FE"  | 0x1 | random           |                                     |
//! +-------+-----+------------------+-------------------------------------+
//!  \___ header (3 bytes) ___/
//! ```
//!
//! The header is the AEAD associated data, so it is authenticated too; the
//! nonce is authenticated implicitly (XChaCha20 derives its subkey from it).
//! The plaintext is
//!
//! ```text
//! sender hash (u64 BE) | incarnation (u64 BE) | sequence (u64 BE) | payload
//! ```
//!
//! where the sender hash is [`NodeId::stable_hash`] of the sender. Every
//! field is fixed-size, so the overhead is always [`OVERHEAD`] bytes and a
//! payload of up to [`MAX_PAYLOAD_LEN`] bytes fits into one datagram of at
//! most [`MAX_DATAGRAM_LEN`] bytes.
//!
//! # Replay protection
//!
//! Each sender numbers its datagrams with a `sequence` that starts at 0 and
//! grows by one per sealed datagram, within an `incarnation` that must grow
//! strictly every time the sender restarts (a persisted counter bumped at
//! start-up, or the start time in nanoseconds). The receiver keeps one
//! [`ReplayWindow`] of [`WINDOW_BITS`] sequence numbers per sender (in a
//! [`ReplayTable`] capped at [`MAX_SENDERS`] senders) and rejects:
//!
//! - a sequence already seen ([`DropReason::Replay`]);
//! - a sequence more than [`WINDOW_BITS`] behind the highest one seen
//!   ([`DropReason::TooOld`]);
//! - an incarnation lower than the one it tracks ([`DropReason::StaleIncarnation`]).
//!
//! A higher incarnation resets that sender's window (the sender restarted).
//! A rejected datagram never changes the window.
//!
//! Known limits, by design: a receiver that has no window for a sender (it
//! just started, or the sender was evicted as the least recently seen of
//! more than [`MAX_SENDERS`]) accepts any authentic datagram of that sender
//! once; the membership protocol above this layer carries its own
//! incarnation numbers and discards stale content.

use std::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use fechter_core::NodeId;
use serde::{Deserialize, Serialize};

mod replay;

pub use replay::{ReplayTable, ReplayWindow};

/// The two magic bytes at the start of every sealed datagram.
pub const MAGIC: [u8; 2] = *b"FE";
/// The wire format version written after [`MAGIC`].
pub const VERSION: u8 = 1;
/// Length of the cleartext header (magic and version), the AEAD associated data.
pub const HEADER_LEN: usize = MAGIC.len() + 1;
/// Length of the random XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of the sealed inner header: sender hash, incarnation, sequence.
pub const INNER_LEN: usize = 3 * 8;
/// Bytes a sealed datagram adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + INNER_LEN + TAG_LEN;
/// Largest sealed datagram on the wire, in bytes.
///
/// 1400 bytes of UDP payload fit a 1500-byte Ethernet MTU under IPv4
/// (28 bytes of IP and UDP headers) and IPv6 (48 bytes), with room left
/// for a VLAN tag or a tunnel header, so cluster datagrams are never
/// fragmented on a LAN. Receivers should read into a larger buffer (e.g.
/// 2048 bytes) so that an oversized datagram is seen, counted as
/// [`DropReason::Oversized`] and not silently truncated.
pub const MAX_DATAGRAM_LEN: usize = 1400;
/// Largest payload [`Sealer::seal`] accepts: [`MAX_DATAGRAM_LEN`] minus
/// [`OVERHEAD`].
pub const MAX_PAYLOAD_LEN: usize = MAX_DATAGRAM_LEN - OVERHEAD;
/// Width of each sender's replay window, in sequence numbers.
pub const WINDOW_BITS: u64 = 1024;
/// Default cap on the number of senders a [`ReplayTable`] tracks.
pub const MAX_SENDERS: usize = 4096;

/// Why [`Sealer::seal`] refused to seal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The payload does not fit into one datagram.
    #[error(
        "payload of {len} bytes is larger than the {max} bytes that fit into one sealed datagram; split it or send less per datagram"
    )]
    PayloadTooLarge { len: usize, max: usize },
    /// The sender used up all 2^64 sequence numbers of its incarnation.
    #[error(
        "sequence numbers of incarnation {incarnation} are exhausted; restart the agent with a higher incarnation"
    )]
    SequenceExhausted { incarnation: u64 },
    /// The operating system could not provide randomness for the nonce.
    #[error("the operating system could not provide randomness for a nonce: {0}")]
    Randomness(String),
    /// The AEAD refused to encrypt (cannot happen for sizes within the limits).
    #[error("encryption failed")]
    Encrypt,
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Too short to be a sealed datagram, or without the magic bytes.
    #[error("malformed datagram (too short or not a fechter datagram)")]
    Malformed,
    /// Magic bytes right, but a wire format version this build does not know.
    #[error("unsupported datagram version (peer runs an incompatible fechter version)")]
    UnsupportedVersion,
    /// Longer than [`MAX_DATAGRAM_LEN`].
    #[error("oversized datagram")]
    Oversized,
    /// Authentication failed: another cluster key, or tampered in transit.
    #[error("authentication failed (wrong cluster key or tampered datagram)")]
    BadSeal,
    /// The sender's sequence number was already accepted.
    #[error("replayed datagram (sequence already seen)")]
    Replay,
    /// The sequence number is behind the sender's replay window.
    #[error("datagram too old (sequence behind the replay window)")]
    TooOld,
    /// The sender's incarnation is lower than one already seen from it.
    #[error("stale incarnation (datagram from before the sender restarted)")]
    StaleIncarnation,
}

impl DropReason {
    /// Every reason, in declaration order.
    pub const ALL: [DropReason; 7] = [
        DropReason::Malformed,
        DropReason::UnsupportedVersion,
        DropReason::Oversized,
        DropReason::BadSeal,
        DropReason::Replay,
        DropReason::TooOld,
        DropReason::StaleIncarnation,
    ];

    /// A short snake_case name, as used in [`DropCounters`]' fields.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnsupportedVersion => "unsupported-version",
            DropReason::Oversized => "oversized",
            DropReason::BadSeal => "bad-seal",
            DropReason::Replay => "replay",
            DropReason::TooOld => "too-old",
            DropReason::StaleIncarnation => "stale-incarnation",
        }
    }
}

/// How many received datagrams were dropped, per [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DropCounters {
    pub malformed: u64,
    pub unsupported_version: u64,
    pub oversized: u64,
    pub bad_seal: u64,
    pub replay: u64,
    pub too_old: u64,
    pub stale_incarnation: u64,
}

impl DropCounters {
    /// Counts one drop for `reason` (saturating).
    pub fn record(&mut self, reason: DropReason) {
        let c = self.slot(reason);
        *c = c.saturating_add(1);
    }

    /// The count for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Malformed => self.malformed,
            DropReason::UnsupportedVersion => self.unsupported_version,
            DropReason::Oversized => self.oversized,
            DropReason::BadSeal => self.bad_seal,
            DropReason::Replay => self.replay,
            DropReason::TooOld => self.too_old,
            DropReason::StaleIncarnation => self.stale_incarnation,
        }
    }

    /// All drops together (saturating).
    pub fn total(&self) -> u64 {
        DropReason::ALL
            .iter()
            .fold(0u64, |acc, &r| acc.saturating_add(self.get(r)))
    }

    fn slot(&mut self, reason: DropReason) -> &mut u64 {
        match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::UnsupportedVersion => &mut self.unsupported_version,
            DropReason::Oversized => &mut self.oversized,
            DropReason::BadSeal => &mut self.bad_seal,
            DropReason::Replay => &mut self.replay,
            DropReason::TooOld => &mut self.too_old,
            DropReason::StaleIncarnation => &mut self.stale_incarnation,
        }
    }
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&Key::from(*key))
}

fn header() -> [u8; HEADER_LEN] {
    [MAGIC[0], MAGIC[1], VERSION]
}

/// Seals outgoing datagrams for one sender and incarnation.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    sender_hash: u64,
    incarnation: u64,
    next_sequence: u64,
    exhausted: bool,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Sealer")
            .field("sender_hash", &format_args!("{:#018x}", self.sender_hash))
            .field("incarnation", &self.incarnation)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `sender` under the cluster `key`. `incarnation` must be
    /// higher than any incarnation this sender used before (see the module
    /// docs); sequences start at 0.
    pub fn new(key: &[u8; 32], sender: &NodeId, incarnation: u64) -> Self {
        Self::with_sender_hash(key, sender.stable_hash(), incarnation)
    }

    /// Like [`Sealer::new`], with the sender given by its hash.
    pub fn with_sender_hash(key: &[u8; 32], sender_hash: u64, incarnation: u64) -> Self {
        Sealer {
            cipher: cipher(key),
            sender_hash,
            incarnation,
            next_sequence: 0,
            exhausted: false,
        }
    }

    /// The sender hash written into every datagram.
    pub fn sender_hash(&self) -> u64 {
        self.sender_hash
    }

    /// The incarnation written into every datagram.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The sequence number the next sealed datagram will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Seals `payload` with the caller's `nonce`, which must never repeat
    /// under the same key: use 24 random bytes, as
    /// [`Sealer::seal_with_os_rng`] does. Consumes one sequence number on
    /// success only.
    pub fn seal(&mut self, payload: &[u8], nonce: [u8; NONCE_LEN]) -> Result<Vec<u8>, SealError> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(SealError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        if self.exhausted {
            return Err(SealError::SequenceExhausted {
                incarnation: self.incarnation,
            });
        }
        let sequence = self.next_sequence;
        let header = header();
        let mut out = Vec::with_capacity(OVERHEAD + payload.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        let body = out.len();
        out.extend_from_slice(&self.sender_hash.to_be_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(payload);
        let tag = self
            .cipher
            .encrypt_inout_detached(&XNonce::from(nonce), &header, (&mut out[body..]).into())
            .map_err(|_| SealError::Encrypt)?;
        out.extend_from_slice(tag.as_slice());
        debug_assert!(out.len() <= MAX_DATAGRAM_LEN);
        match sequence.checked_add(1) {
            Some(next) => self.next_sequence = next,
            None => self.exhausted = true,
        }
        Ok(out)
    }

    /// [`Sealer::seal`] with a nonce from the operating system's randomness.
    pub fn seal_with_os_rng(&mut self, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Randomness(e.to_string()))?;
        self.seal(payload, nonce)
    }
}

/// The checks [`Opener::open`] makes before it decrypts: length, magic and
/// version, nothing cryptographic. Cheap enough to run on every datagram
/// that arrives, junk included, before it is queued for opening (the
/// agent's socket reader does): what fails here would fail to open, for
/// the reason returned.
pub fn precheck(datagram: &[u8]) -> Result<(), DropReason> {
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(DropReason::Oversized);
    }
    if datagram.len() < OVERHEAD || datagram[..MAGIC.len()] != MAGIC {
        return Err(DropReason::Malformed);
    }
    if datagram[MAGIC.len()] != VERSION {
        return Err(DropReason::UnsupportedVersion);
    }
    Ok(())
}

/// A datagram that passed authentication and the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// [`NodeId::stable_hash`] of the sender, as sealed by it.
    pub sender_hash: u64,
    pub incarnation: u64,
    pub sequence: u64,
    pub payload: Vec<u8>,
}

/// Opens received datagrams: authenticates, decrypts, checks for replays
/// and counts every drop.
pub struct Opener {
    cipher: XChaCha20Poly1305,
    replay: ReplayTable,
    drops: DropCounters,
    accepted: u64,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Opener")
            .field("senders", &self.replay.len())
            .field("drops", &self.drops)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// An opener under the cluster `key`, tracking up to [`MAX_SENDERS`] senders.
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_max_senders(key, MAX_SENDERS)
    }

    /// An opener tracking up to `max_senders` senders (at least 1).
    pub fn with_max_senders(key: &[u8; 32], max_senders: usize) -> Self {
        Opener {
            cipher: cipher(key),
            replay: ReplayTable::new(max_senders),
            drops: DropCounters::default(),
            accepted: 0,
        }
    }

    /// Opens one datagram. On error the datagram is dropped: the reason is
    /// counted in [`Opener::drops`] and nothing else changes.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Opened, DropReason> {
        match self.try_open(datagram) {
            Ok(opened) => {
                self.accepted = self.accepted.saturating_add(1);
                Ok(opened)
            }
            Err(reason) => {
                self.drops.record(reason);
                Err(reason)
            }
        }
    }

    fn try_open(&mut self, datagram: &[u8]) -> Result<Opened, DropReason> {
        precheck(datagram)?;
        let (header, rest) = datagram.split_at(HEADER_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| DropReason::Malformed)?;
        let tag = chacha20poly1305::Tag::try_from(tag).map_err(|_| DropReason::Malformed)?;
        let mut plain = ciphertext.to_vec();
        self.cipher
            .decrypt_inout_detached(&nonce, header, plain.as_mut_slice().into(), &tag)
            .map_err(|_| DropReason::BadSeal)?;
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&plain[i * 8..i * 8 + 8]);
            u64::from_be_bytes(b)
        };
        let (sender_hash, incarnation, sequence) = (field(0), field(1), field(2));
        self.replay.accept(sender_hash, incarnation, sequence)?;
        plain.drain(..INNER_LEN);
        Ok(Opened {
            sender_hash,
            incarnation,
            sequence,
            payload: plain,
        })
    }

    /// Drops counted so far.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Datagrams accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// The replay windows of all tracked senders.
    pub fn replay_table(&self) -> &ReplayTable {
        &self.replay
    }
}

#[cfg(test)]
mod tests;
