//! `[timings]`: the user's spelling of the engine's [`Timings`], in
//! milliseconds. The engine's type knows nothing of TOML; this table maps
//! each key to the field it sets, so either can be renamed without the
//! other (a renamed field fails to compile here until its key is mapped).

use std::time::Duration;

use fechter_cluster::engine::Timings;
use serde::Deserialize;

macro_rules! timings_table {
    ($($key:ident => $field:ident),* $(,)?) => {
        /// `[timings]` as written: every key optional, in milliseconds;
        /// an unknown key is an error.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct TimingsFile {
            $(pub $key: Option<u64>,)*
        }

        impl TimingsFile {
            /// `base` with every key that is set.
            fn set(&self, mut base: Timings) -> Timings {
                $(if let Some(ms) = self.$key {
                    base.$field = Duration::from_millis(ms);
                })*
                base
            }
        }

        /// Every key of `[timings]` and its value in `t`, in milliseconds
        /// (what `dist/fechter.toml` documents).
        pub fn keys(t: &Timings) -> Vec<(&'static str, u64)> {
            vec![$((stringify!($key), t.$field.as_millis() as u64),)*]
        }
    };
}

timings_table! {
    probe_period => probe_period,
    probe_rtt => probe_rtt,
    suspect_to_down => suspect_to_down,
    gossip_period => gossip_period,
    join_retry => join_retry,
    seed_announce => seed_announce,
    anti_entropy => anti_entropy,
    forget_down_after => forget_down_after,
    heartbeat_interval => heartbeat_interval,
    heartbeat_timeout => heartbeat_timeout,
    maturity => maturity,
    quarantine => quarantine,
    lead_grace => lead_grace,
    leader_tick => leader_tick,
    fence_after => fence_after,
    rejoin_hold => rejoin_hold,
    resume_hold => resume_hold,
    isolation => isolation,
    probe_window => probe_window,
}

impl TimingsFile {
    /// The engine's timings: the defaults with every key that is set. The
    /// probe window follows the heartbeat interval unless it is set
    /// itself: two probes, one per heartbeat.
    pub fn timings(&self) -> Timings {
        let mut t = self.set(Timings::default());
        if self.probe_window.is_none() && self.heartbeat_interval.is_some() {
            t.probe_window = t.heartbeat_interval * 2;
        }
        t
    }
}
