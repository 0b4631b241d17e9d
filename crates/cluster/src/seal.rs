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

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use fechter_core::NodeId;
use serde::{Deserialize, Serialize};

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

const WINDOW_WORDS: usize = (WINDOW_BITS / 64) as usize;

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

/// A datagram that passed authentication and the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// [`NodeId::stable_hash`] of the sender, as sealed by it.
    pub sender_hash: u64,
    pub incarnation: u64,
    pub sequence: u64,
    pub payload: Vec<u8>,
}

/// One sender's sliding window over sequence numbers, within one
/// incarnation: the highest sequence seen and which of the
/// [`WINDOW_BITS`] sequences up to it were seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    incarnation: u64,
    highest: u64,
    /// Ring bitmap: bit `seq % WINDOW_BITS` is set when `seq` (within the
    /// window) was seen.
    seen: [u64; WINDOW_WORDS],
}

impl ReplayWindow {
    /// A window that has seen exactly `sequence` of `incarnation`.
    pub fn new(incarnation: u64, sequence: u64) -> Self {
        let mut w = ReplayWindow {
            incarnation,
            highest: sequence,
            seen: [0; WINDOW_WORDS],
        };
        w.set(sequence);
        w
    }

    /// The incarnation this window tracks.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The highest sequence accepted in this incarnation.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `(incarnation, sequence)` would be accepted. Changes nothing.
    pub fn check(&self, incarnation: u64, sequence: u64) -> Result<(), DropReason> {
        if incarnation < self.incarnation {
            return Err(DropReason::StaleIncarnation);
        }
        if incarnation > self.incarnation || sequence > self.highest {
            return Ok(());
        }
        if self.highest - sequence >= WINDOW_BITS {
            return Err(DropReason::TooOld);
        }
        if self.is_set(sequence) {
            return Err(DropReason::Replay);
        }
        Ok(())
    }

    /// Checks and, if accepted, records `(incarnation, sequence)`. A
    /// rejected pair leaves the window unchanged.
    pub fn accept(&mut self, incarnation: u64, sequence: u64) -> Result<(), DropReason> {
        self.check(incarnation, sequence)?;
        if incarnation > self.incarnation {
            *self = ReplayWindow::new(incarnation, sequence);
            return Ok(());
        }
        if sequence > self.highest {
            let advance = sequence - self.highest;
            if advance >= WINDOW_BITS {
                self.seen = [0; WINDOW_WORDS];
            } else {
                for s in self.highest + 1..sequence {
                    self.clear(s);
                }
            }
            self.highest = sequence;
        }
        self.set(sequence);
        Ok(())
    }

    fn pos(sequence: u64) -> (usize, u64) {
        let bit = sequence % WINDOW_BITS;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn is_set(&self, sequence: u64) -> bool {
        let (w, m) = Self::pos(sequence);
        self.seen[w] & m != 0
    }

    fn set(&mut self, sequence: u64) {
        let (w, m) = Self::pos(sequence);
        self.seen[w] |= m;
    }

    fn clear(&mut self, sequence: u64) {
        let (w, m) = Self::pos(sequence);
        self.seen[w] &= !m;
    }
}

/// Replay windows of all senders, keyed by sender hash, holding at most a
/// fixed number of senders: inserting one more evicts the sender whose last
/// accepted datagram is the oldest (deterministically: by a logical clock
/// that ticks once per accepted datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayTable {
    capacity: usize,
    tick: u64,
    senders: HashMap<u64, (ReplayWindow, u64)>,
    /// last-seen tick → sender hash; ticks are unique.
    by_last_seen: BTreeMap<u64, u64>,
}

impl Default for ReplayTable {
    fn default() -> Self {
        Self::new(MAX_SENDERS)
    }
}

impl ReplayTable {
    /// A table tracking at most `capacity` senders (at least 1).
    pub fn new(capacity: usize) -> Self {
        ReplayTable {
            capacity: capacity.max(1),
            tick: 0,
            senders: HashMap::new(),
            by_last_seen: BTreeMap::new(),
        }
    }

    /// How many senders are tracked.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Whether no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// The window of `sender_hash`, if tracked.
    pub fn window(&self, sender_hash: u64) -> Option<&ReplayWindow> {
        self.senders.get(&sender_hash).map(|(w, _)| w)
    }

    /// Whether the datagram would be accepted. Changes nothing.
    pub fn check(
        &self,
        sender_hash: u64,
        incarnation: u64,
        sequence: u64,
    ) -> Result<(), DropReason> {
        match self.senders.get(&sender_hash) {
            Some((w, _)) => w.check(incarnation, sequence),
            None => Ok(()),
        }
    }

    /// Checks and, if accepted, records the datagram and marks the sender
    /// as most recently seen. A rejected datagram changes nothing.
    pub fn accept(
        &mut self,
        sender_hash: u64,
        incarnation: u64,
        sequence: u64,
    ) -> Result<(), DropReason> {
        self.check(sender_hash, incarnation, sequence)?;
        self.tick += 1;
        let tick = self.tick;
        match self.senders.get_mut(&sender_hash) {
            Some((w, last)) => {
                w.accept(incarnation, sequence)?;
                self.by_last_seen.remove(last);
                *last = tick;
            }
            None => {
                if self.senders.len() >= self.capacity
                    && let Some((_, evicted)) = self.by_last_seen.pop_first()
                {
                    self.senders.remove(&evicted);
                }
                self.senders.insert(
                    sender_hash,
                    (ReplayWindow::new(incarnation, sequence), tick),
                );
            }
        }
        self.by_last_seen.insert(tick, sender_hash);
        Ok(())
    }
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
        if datagram.len() > MAX_DATAGRAM_LEN {
            return Err(DropReason::Oversized);
        }
        if datagram.len() < OVERHEAD || datagram[..MAGIC.len()] != MAGIC {
            return Err(DropReason::Malformed);
        }
        if datagram[MAGIC.len()] != VERSION {
            return Err(DropReason::UnsupportedVersion);
        }
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];
    const OTHER_KEY: [u8; 32] = [8; 32];

    fn nonce(n: u64) -> [u8; NONCE_LEN] {
        let mut out = [0u8; NONCE_LEN];
        out[..8].copy_from_slice(&n.to_le_bytes());
        out[8] = 0xa5;
        out
    }

    fn sealer(incarnation: u64) -> Sealer {
        Sealer::new(&KEY, &NodeId::new("node-a"), incarnation)
    }

    /// Datagrams with sequences 0..n from one sender.
    fn stream(incarnation: u64, n: u64) -> Vec<Vec<u8>> {
        let mut s = sealer(incarnation);
        (0..n)
            .map(|i| s.seal(format!("msg {i}").as_bytes(), nonce(i)).unwrap())
            .collect()
    }

    #[test]
    fn round_trip() {
        let mut s = sealer(3);
        let mut o = Opener::new(&KEY);
        let d = s.seal(b"hello", nonce(1)).unwrap();
        assert_eq!(d.len(), OVERHEAD + 5);
        assert_eq!(&d[..HEADER_LEN], b"FE\x01");
        let opened = o.open(&d).unwrap();
        assert_eq!(
            opened,
            Opened {
                sender_hash: NodeId::new("node-a").stable_hash(),
                incarnation: 3,
                sequence: 0,
                payload: b"hello".to_vec(),
            }
        );
        let d2 = s.seal(b"", nonce(2)).unwrap();
        let opened = o.open(&d2).unwrap();
        assert_eq!((opened.sequence, opened.payload.len()), (1, 0));
        assert_eq!(o.accepted(), 2);
        assert_eq!(o.drops().total(), 0);
    }

    #[test]
    fn ciphertext_hides_the_payload() {
        let mut s = sealer(1);
        let d = s.seal(b"secret-secret-secret", nonce(1)).unwrap();
        assert!(!d.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn os_rng_nonces_differ() {
        let mut s = sealer(1);
        let a = s.seal_with_os_rng(b"x").unwrap();
        let b = s.seal_with_os_rng(b"x").unwrap();
        assert_ne!(
            a[HEADER_LEN..HEADER_LEN + NONCE_LEN],
            b[HEADER_LEN..HEADER_LEN + NONCE_LEN]
        );
        let mut o = Opener::new(&KEY);
        assert_eq!(o.open(&a).unwrap().sequence, 0);
        assert_eq!(o.open(&b).unwrap().sequence, 1);
    }

    #[test]
    fn wrong_key_is_bad_seal() {
        let d = sealer(1).seal(b"hello", nonce(1)).unwrap();
        let mut o = Opener::new(&OTHER_KEY);
        assert_eq!(o.open(&d), Err(DropReason::BadSeal));
        assert_eq!(o.drops().bad_seal, 1);
        assert!(o.replay_table().is_empty());
    }

    #[test]
    fn max_payload_fits_and_one_more_byte_is_refused() {
        let mut s = sealer(1);
        let d = s.seal(&[0u8; MAX_PAYLOAD_LEN], nonce(1)).unwrap();
        assert_eq!(d.len(), MAX_DATAGRAM_LEN);
        assert_eq!(
            Opener::new(&KEY).open(&d).unwrap().payload.len(),
            MAX_PAYLOAD_LEN
        );
        assert_eq!(
            s.seal(&[0u8; MAX_PAYLOAD_LEN + 1], nonce(2)),
            Err(SealError::PayloadTooLarge {
                len: MAX_PAYLOAD_LEN + 1,
                max: MAX_PAYLOAD_LEN
            })
        );
        // A refused seal does not consume a sequence number.
        assert_eq!(s.next_sequence(), 1);
    }

    #[test]
    fn oversized_and_short_datagrams_are_counted() {
        let mut o = Opener::new(&KEY);
        assert_eq!(
            o.open(&[0u8; MAX_DATAGRAM_LEN + 1]),
            Err(DropReason::Oversized)
        );
        assert_eq!(o.open(&[]), Err(DropReason::Malformed));
        let d = sealer(1).seal(b"", nonce(1)).unwrap();
        assert_eq!(o.open(&d[..d.len() - 1]), Err(DropReason::Malformed));
        let mut v2 = d.clone();
        v2[2] = 2;
        assert_eq!(o.open(&v2), Err(DropReason::UnsupportedVersion));
        let expected = DropCounters {
            oversized: 1,
            malformed: 2,
            unsupported_version: 1,
            ..DropCounters::default()
        };
        assert_eq!(*o.drops(), expected);
        assert_eq!(o.drops().total(), 4);
        assert!(o.replay_table().is_empty());
        // The untouched datagram still opens.
        assert!(o.open(&d).is_ok());
    }

    #[test]
    fn identical_datagram_replayed_is_rejected() {
        let d = stream(1, 1).remove(0);
        let mut o = Opener::new(&KEY);
        assert!(o.open(&d).is_ok());
        assert_eq!(o.open(&d), Err(DropReason::Replay));
        assert_eq!(o.open(&d), Err(DropReason::Replay));
        assert_eq!(o.drops().replay, 2);
        assert_eq!(o.accepted(), 1);
    }

    #[test]
    fn out_of_order_within_window_is_accepted_once() {
        let ds = stream(1, 10);
        let mut o = Opener::new(&KEY);
        for i in [9, 3, 0, 5, 1, 2, 8, 4, 7, 6] {
            assert_eq!(o.open(&ds[i]).unwrap().sequence, i as u64);
        }
        for d in &ds {
            assert_eq!(o.open(d), Err(DropReason::Replay));
        }
    }

    #[test]
    fn too_old_sequence_is_rejected() {
        let mut o = Opener::new(&KEY);
        let mut s = sealer(1);
        let first = s.seal(b"0", nonce(0)).unwrap();
        let second = s.seal(b"1", nonce(1)).unwrap();
        assert!(o.open(&second).is_ok());
        // Skip ahead so that sequence 0 falls out of the window (1 is the
        // highest; sequence WINDOW_BITS puts 0 exactly WINDOW_BITS behind).
        let mut skip = Sealer::new(&KEY, &NodeId::new("node-a"), 1);
        skip.next_sequence = WINDOW_BITS;
        let ahead = skip.seal(b"ahead", nonce(2)).unwrap();
        assert!(o.open(&ahead).is_ok());
        let before = o.replay_table().clone();
        assert_eq!(o.open(&first), Err(DropReason::TooOld));
        assert_eq!(o.drops().too_old, 1);
        assert_eq!(*o.replay_table(), before);
    }

    #[test]
    fn oldest_sequence_inside_the_window_is_still_accepted() {
        let mut w = ReplayWindow::new(1, WINDOW_BITS - 1);
        assert_eq!(w.accept(1, 0), Ok(()));
        assert_eq!(w.accept(1, 0), Err(DropReason::Replay));
        assert_eq!(w.accept(1, WINDOW_BITS), Ok(()));
        assert_eq!(w.check(1, 0), Err(DropReason::TooOld));
        assert_eq!(w.check(1, 1), Ok(()));
    }

    #[test]
    fn window_slides_and_forgets_bits_it_reuses() {
        let mut w = ReplayWindow::new(1, 0);
        for s in 1..3 * WINDOW_BITS {
            if s % 3 != 0 {
                assert_eq!(w.accept(1, s), Ok(()), "seq {s}");
            }
        }
        let top = 3 * WINDOW_BITS - 1;
        assert_eq!(w.highest(), top);
        for s in (top - WINDOW_BITS + 1)..=top {
            let want = if s % 3 == 0 {
                Ok(())
            } else {
                Err(DropReason::Replay)
            };
            assert_eq!(w.check(1, s), want, "seq {s}");
        }
        assert_eq!(w.check(1, top - WINDOW_BITS), Err(DropReason::TooOld));
        // A jump beyond the whole window forgets everything in it.
        assert_eq!(w.accept(1, top + 5 * WINDOW_BITS), Ok(()));
        assert_eq!(w.check(1, top + 5 * WINDOW_BITS - 1), Ok(()));
    }

    #[test]
    fn restart_with_higher_incarnation_resets_the_window() {
        let old = stream(1, 5);
        let new = stream(2, 3);
        let mut o = Opener::new(&KEY);
        for d in &old {
            assert!(o.open(d).is_ok());
        }
        // Sequences restart at 0 in the new incarnation.
        for d in &new {
            let opened = o.open(d).unwrap();
            assert_eq!(opened.incarnation, 2);
        }
        let w = o.replay_table().window(sealer(1).sender_hash()).unwrap();
        assert_eq!((w.incarnation(), w.highest()), (2, 2));
        // And the old incarnation is over.
        assert_eq!(o.open(&old[4]), Err(DropReason::StaleIncarnation));
    }

    #[test]
    fn lower_incarnation_is_rejected_and_changes_nothing() {
        let old = stream(4, 1);
        let new = stream(5, 1);
        let mut o = Opener::new(&KEY);
        assert!(o.open(&new[0]).is_ok());
        let before = o.replay_table().clone();
        assert_eq!(o.open(&old[0]), Err(DropReason::StaleIncarnation));
        assert_eq!(o.drops().stale_incarnation, 1);
        assert_eq!(*o.replay_table(), before);
    }

    #[test]
    fn rejected_datagrams_do_not_advance_the_window() {
        let ds = stream(1, 3);
        let mut o = Opener::new(&KEY);
        assert!(o.open(&ds[0]).is_ok());
        let before = o.replay_table().clone();
        // A tampered copy of sequence 2 is dropped ...
        let mut bad = ds[2].clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(o.open(&bad), Err(DropReason::BadSeal));
        // ... as is one under another key and a replay ...
        let foreign = Sealer::new(&OTHER_KEY, &NodeId::new("node-a"), 9)
            .seal(b"x", nonce(0))
            .unwrap();
        assert_eq!(o.open(&foreign), Err(DropReason::BadSeal));
        assert_eq!(o.open(&ds[0]), Err(DropReason::Replay));
        // ... and none of that moved the window:
        assert_eq!(*o.replay_table(), before);
        assert_eq!(o.open(&ds[2]).unwrap().sequence, 2);
        assert_eq!(o.open(&ds[1]).unwrap().sequence, 1);
    }

    #[test]
    fn senders_have_separate_windows() {
        let mut a = Sealer::new(&KEY, &NodeId::new("a"), 1);
        let mut b = Sealer::new(&KEY, &NodeId::new("b"), 1);
        let mut o = Opener::new(&KEY);
        let da = a.seal(b"a", nonce(1)).unwrap();
        let db = b.seal(b"b", nonce(2)).unwrap();
        assert_eq!(o.open(&da).unwrap().sequence, 0);
        assert_eq!(o.open(&db).unwrap().sequence, 0);
        assert_eq!(o.replay_table().len(), 2);
    }

    #[test]
    fn sender_cap_evicts_least_recently_seen() {
        let mut o = Opener::with_max_senders(&KEY, 2);
        let mut a = Sealer::with_sender_hash(&KEY, 1, 1);
        let mut b = Sealer::with_sender_hash(&KEY, 2, 1);
        let mut c = Sealer::with_sender_hash(&KEY, 3, 1);
        let a0 = a.seal(b"", nonce(1)).unwrap();
        assert!(o.open(&a0).is_ok());
        assert!(o.open(&b.seal(b"", nonce(2)).unwrap()).is_ok());
        // a is seen again, so b becomes the least recently seen.
        assert!(o.open(&a.seal(b"", nonce(3)).unwrap()).is_ok());
        assert!(o.open(&c.seal(b"", nonce(4)).unwrap()).is_ok());
        let t = o.replay_table();
        assert_eq!(t.len(), 2);
        assert!(t.window(1).is_some());
        assert!(t.window(2).is_none());
        assert!(t.window(3).is_some());
        // a's window survived: its first datagram is still a replay.
        assert_eq!(o.open(&a0), Err(DropReason::Replay));
    }

    #[test]
    fn exhausted_sequence_is_refused() {
        let mut s = sealer(1);
        s.next_sequence = u64::MAX;
        let d = s.seal(b"last", nonce(1)).unwrap();
        assert_eq!(
            s.seal(b"more", nonce(2)),
            Err(SealError::SequenceExhausted { incarnation: 1 })
        );
        assert_eq!(Opener::new(&KEY).open(&d).unwrap().sequence, u64::MAX);
    }

    #[test]
    fn drop_counters_serialize_with_named_fields() {
        let mut c = DropCounters::default();
        for r in DropReason::ALL {
            c.record(r);
        }
        c.record(DropReason::Replay);
        let v = serde_json::to_value(c).unwrap();
        for r in DropReason::ALL {
            let want = if r == DropReason::Replay { 2 } else { 1 };
            assert_eq!(v[r.as_str()], want, "{}", r.as_str());
            assert_eq!(c.get(r), want);
        }
        assert_eq!(c.total(), 8);
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_dropped(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut s = sealer(1);
            let d = s.seal(&payload, nonce(1)).unwrap();
            let mut flipped = d.clone();
            let i = pos.index(d.len());
            flipped[i] ^= 1 << bit;
            let mut o = Opener::new(&KEY);
            let err = o.open(&flipped).unwrap_err();
            prop_assert!(matches!(
                err,
                DropReason::Malformed | DropReason::UnsupportedVersion | DropReason::BadSeal
            ));
            prop_assert_eq!(o.drops().total(), 1);
            prop_assert!(o.replay_table().is_empty());
            // The original is unaffected by the dropped copy.
            prop_assert_eq!(o.open(&d).unwrap().payload, payload);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_are_counted(
            bytes in proptest::collection::vec(any::<u8>(), 0..2 * MAX_DATAGRAM_LEN),
            keep_header in any::<bool>(),
        ) {
            let mut bytes = bytes;
            if keep_header && bytes.len() >= HEADER_LEN {
                bytes[..HEADER_LEN].copy_from_slice(&header());
            }
            let mut o = Opener::new(&KEY);
            // Random bytes cannot carry a valid tag.
            prop_assert!(o.open(&bytes).is_err());
            prop_assert_eq!(o.drops().total(), 1);
            prop_assert!(o.replay_table().is_empty());
        }

        #[test]
        fn truncations_are_dropped(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let d = sealer(1).seal(&payload, nonce(1)).unwrap();
            let len = cut.index(d.len());
            let mut o = Opener::new(&KEY);
            prop_assert!(o.open(&d[..len]).is_err());
            prop_assert_eq!(o.drops().total(), 1);
        }

        /// The window agrees with a model that remembers every sequence.
        #[test]
        fn window_matches_model(seqs in proptest::collection::vec(0u64..3000, 1..300)) {
            let mut w: Option<ReplayWindow> = None;
            let mut seen = std::collections::BTreeSet::new();
            for s in seqs {
                let highest = seen.iter().next_back().copied();
                let want = match highest {
                    None => Ok(()),
                    Some(h) if s > h => Ok(()),
                    Some(h) if h - s >= WINDOW_BITS => Err(DropReason::TooOld),
                    Some(_) if seen.contains(&s) => Err(DropReason::Replay),
                    Some(_) => Ok(()),
                };
                let got = match &mut w {
                    None => {
                        w = Some(ReplayWindow::new(1, s));
                        Ok(())
                    }
                    Some(w) => w.accept(1, s),
                };
                prop_assert_eq!(got, want, "seq {}", s);
                if got.is_ok() {
                    seen.insert(s);
                }
            }
        }
    }
}
