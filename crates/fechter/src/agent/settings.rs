//! What the agent runs with ([`Settings`], resolved from flags and the
//! config file), and what a reload may change live.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fechter_cluster::engine::{Quorum, Timings};
use fechter_core::NodeId;
use fechter_core::allowed::Allowed;

use super::{health, hooks};
use crate::files::keyfile::ClusterKey;

/// Everything the agent needs to start, resolved from flags and config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: NodeId,
    /// `--attach` addresses.
    pub seeds: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    /// The 32-byte cluster key (all zeros with `--insecure`); zeroed on
    /// drop, never shown by `Debug`.
    pub key: ClusterKey,
    pub timings: Timings,
    /// Kernel lease of an installed address: the kernel removes it by itself
    /// this long after the last renewal (a dead agent leaves nothing behind).
    pub lease: Duration,
    /// How often held addresses are renewed (well within the lease).
    pub renew_every: Duration,
    /// On SIGTERM, how long to wait for the addresses to be handed off.
    pub drain_timeout: Duration,
    /// When a takeover's announcements go out, from the moment of install.
    pub announce_burst: Vec<Duration>,
    /// Announce every held address again this often (`None`: never).
    pub announce_refresh: Option<Duration>,
    /// Whether a node must see a majority to hold addresses.
    pub quorum: Quorum,
    /// Health checks (gateway, scripts); a failing one makes this node ineligible.
    pub checks: Vec<health::Check>,
    /// Notify hooks (acquire, release, leader).
    pub notify: hooks::Notify,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// What this machine may ever hold, whatever the replicated list says.
    pub allowed: Allowed,
    /// How to re-read the configuration (flags and file) on reload.
    pub reload: Reloader,
}

/// Re-resolves the settings from the same flags and config file.
#[derive(Clone, Default)]
pub struct Reloader(pub Option<std::sync::Arc<dyn Fn() -> Result<Settings, String> + Send + Sync>>);

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Reloader(config)"
        } else {
            "Reloader(none)"
        })
    }
}

impl Settings {
    /// What `new` changes compared with `self`: the keys that apply live,
    /// or an error naming the keys that need a restart. This is the one
    /// list of which key applies live (`true` below) and which needs a
    /// restart; the docs point here rather than repeat it.
    pub fn live_changes(&self, new: &Settings) -> Result<Vec<&'static str>, String> {
        let mut restart = Vec::new();
        let mut live = Vec::new();
        let mut cmp = |changed: bool, key: &'static str, is_live: bool| {
            if changed {
                if is_live {
                    live.push(key)
                } else {
                    restart.push(key)
                }
            }
        };
        cmp(self.node_id != new.node_id, "node_id", false);
        cmp(self.seeds != new.seeds, "attach", false);
        cmp(self.data_dir != new.data_dir, "data_dir", false);
        cmp(self.key != new.key, "key_file / insecure", false);
        cmp(self.timings != new.timings, "timings", false);
        cmp(self.lease != new.lease, "lease_ms", false);
        cmp(self.quorum != new.quorum, "quorum", false);
        cmp(
            self.checks != new.checks,
            "gateway / gateway_check / check",
            false,
        );
        cmp(
            self.metrics_listen != new.metrics_listen,
            "metrics_listen",
            false,
        );
        cmp(
            self.allowed != new.allowed,
            "allowed_prefixes / allowed_interfaces",
            false,
        );
        cmp(
            self.announce_burst != new.announce_burst,
            "announce_burst_ms",
            false,
        );
        cmp(self.renew_every != new.renew_every, "renew_ms", true);
        cmp(
            self.drain_timeout != new.drain_timeout,
            "drain_timeout_ms",
            true,
        );
        cmp(
            self.announce_refresh != new.announce_refresh,
            "announce_refresh_ms",
            true,
        );
        cmp(self.notify != new.notify, "notify_*", true);
        if restart.is_empty() {
            Ok(live)
        } else {
            Err(format!(
                "these settings need a restart of the agent: {}; nothing was changed",
                restart.join(", ")
            ))
        }
    }
}

impl Settings {
    /// Settings with the documented defaults.
    pub fn new(
        node_id: NodeId,
        seeds: Vec<SocketAddr>,
        data_dir: PathBuf,
        key: impl Into<ClusterKey>,
    ) -> Self {
        Settings {
            node_id,
            seeds,
            data_dir,
            key: key.into(),
            timings: Timings::default(),
            lease: Duration::from_secs(2),
            renew_every: Duration::from_millis(800),
            drain_timeout: Duration::from_secs(5),
            announce_burst: [0, 100, 500, 2000].map(Duration::from_millis).to_vec(),
            announce_refresh: None,
            quorum: Quorum::Majority,
            checks: Vec::new(),
            notify: hooks::Notify::default(),
            metrics_listen: None,
            allowed: Allowed::default(),
            reload: Reloader::default(),
        }
    }
}
