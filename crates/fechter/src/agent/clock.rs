//! The agent's two clocks: the monotonic one (tokio's, so that the same
//! loop runs on turmoil's virtual time) and the wall clock (for the hybrid
//! logical clock and the history), both passed to the node as [`Now`].

use std::time::Instant;

use fechter_cluster::engine::Now;

/// The wall clock, read by the shell only (the engine gets it as a number).
pub trait WallClock {
    /// Milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// The monotonic clock, as tokio (or turmoil) keeps it.
pub(super) fn mono() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The engine's notion of now: the monotonic clock and the wall clock.
pub(super) fn now<C: WallClock>(clock: &C) -> Now {
    Now {
        at: mono(),
        wall_ms: clock.wall_ms(),
    }
}
