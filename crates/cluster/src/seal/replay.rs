//! Per-sender replay windows: [`ReplayWindow`] slides over one sender's
//! sequence numbers, [`ReplayTable`] holds the windows of all senders under
//! a cap. Re-exported by [`super`].

use std::collections::{BTreeMap, HashMap};

use super::{DropReason, MAX_SENDERS, WINDOW_BITS};

const WINDOW_WORDS: usize = (WINDOW_BITS / 64) as usize;

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
