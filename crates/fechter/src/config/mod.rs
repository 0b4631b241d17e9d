//! The agent's settings: flags, then the TOML file, then defaults.
//!
//! Every flag has a key of the same name (with `_` for `-`; a few keys,
//! such as `allowed_prefixes`, have no flag); the engine's
//! timings live in a `[timings]` table in milliseconds. Unknown keys are
//! errors, so a typo never silently leaves a default in place.
//!
//! ```toml
//! node_id = "ws-1"
//! listen = "198.51.100.1:4573"
//! attach = ["198.51.100.2"]
//! data_dir = "/var/lib/fechter"
//! control_socket = "/run/fechter/fechter.sock"
//! key_file = "/etc/fechter/cluster.key"
//! lease_ms = 2000          # kernel lease of an installed address
//! renew_ms = 800           # how often held addresses are renewed
//! drain_timeout_ms = 5000  # SIGTERM: how long to wait for hand-offs
//! announce_burst_ms = [0, 100, 500, 2000]  # GARP/NA after a takeover
//! announce_refresh_ms = 0  # re-announce held addresses this often (0: never)
//! quorum = "majority"      # or "off": hold addresses only while seeing a majority
//! gateway = "198.51.100.254"  # ICMP-checked; unreachable: this node takes no addresses
//! metrics_listen = "127.0.0.1:9573"  # Prometheus: GET /metrics (default: off)
//! allowed_prefixes = ["198.51.100.0/24"]  # never hold anything else (default: any)
//! allowed_interfaces = ["eth0"]            # nor on any other interface
//! notify_acquire = "logger acquired $FECHTER_ADDRESS"  # hooks, run with sh -c
//! notify_release = "logger released $FECHTER_ADDRESS"
//! notify_leader = "logger leader $FECHTER_LEADER"
//! notify_timeout_ms = 5000 # a hook running longer is killed
//!
//! [gateway_check]          # defaults shown
//! interval_ms = 250
//! timeout_ms = 250
//! rise = 3
//! fall = 3
//!
//! [[check]]                # like keepalived's vrrp_script; exit 0 passes
//! name = "web"
//! command = "curl -fsS http://127.0.0.1/health"
//! interval_ms = 1000       # defaults: 1000, 2000, 2, 2
//! timeout_ms = 2000
//! rise = 2
//! fall = 2
//!
//! [timings]                # see fechter_cluster::engine::Timings and timings.rs
//! heartbeat_interval = 15
//! heartbeat_timeout = 65
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fechter_cluster::engine::Quorum;
use fechter_core::NodeId;
use serde::Deserialize;

use crate::agent::Settings;
use crate::agent::health::{Check, CheckTiming, Probe};
use crate::cli::{AgentArgs, DEFAULT_SOCKET, parse_endpoint};

pub mod timings;
use timings::TimingsFile;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/fechter/fechter.toml";

/// The agent's config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub node_id: Option<String>,
    pub listen: Option<String>,
    #[serde(default)]
    pub attach: Vec<String>,
    pub data_dir: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure: Option<bool>,
    pub dry_run: Option<bool>,
    pub lease_ms: Option<u64>,
    pub renew_ms: Option<u64>,
    pub drain_timeout_ms: Option<u64>,
    pub announce_burst_ms: Option<Vec<u64>>,
    pub announce_refresh_ms: Option<u64>,
    pub quorum: Option<Quorum>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Real-time scheduling (SCHED_RR) and locked memory.
    pub realtime: Option<bool>,
    pub gateway: Option<String>,
    /// `IP:PORT` for Prometheus metrics (`GET /metrics`).
    pub metrics_listen: Option<String>,
    /// The only prefixes this machine may ever hold an address in, and
    /// the only interfaces (file only; empty: no restriction).
    #[serde(default)]
    pub allowed_prefixes: Vec<String>,
    #[serde(default)]
    pub allowed_interfaces: Vec<String>,
    /// Hooks run with `sh -c` when this node acquires or releases an
    /// address, or sees a new leader.
    pub notify_acquire: Option<String>,
    pub notify_release: Option<String>,
    pub notify_leader: Option<String>,
    /// Another machine answers for an address this node holds.
    pub notify_conflict: Option<String>,
    pub notify_timeout_ms: Option<u64>,
    pub gateway_check: Option<TimingFile>,
    #[serde(default)]
    pub check: Vec<CheckFile>,
    pub timings: Option<TimingsFile>,
}

/// `[gateway_check]`: timing of the gateway check (defaults: 250 ms, 250 ms, rise 3, fall 3).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingFile {
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// `[[check]]`: a check script, like keepalived's `vrrp_script`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    pub name: String,
    /// Run with `sh -c`; exit status 0 passes.
    pub command: String,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

fn timing(
    base: CheckTiming,
    interval: Option<u64>,
    timeout: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
) -> CheckTiming {
    CheckTiming {
        interval: interval.map_or(base.interval, Duration::from_millis),
        timeout: timeout.map_or(base.timeout, Duration::from_millis),
        rise: rise.unwrap_or(base.rise),
        fall: fall.unwrap_or(base.fall),
    }
}

/// Reads and parses a config file; errors name the file, the line and the key.
pub fn load(path: &Path) -> Result<AgentFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => format!("{}, line {l}: {}", path.display(), e.message()),
            None => format!("{}: {}", path.display(), e.message()),
        }
    })
}

/// Everything `fechter agent` needs, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub settings: Settings,
    pub listen: SocketAddr,
    pub control_socket: PathBuf,
    pub key_file: Option<PathBuf>,
    pub insecure: bool,
    pub dry_run: bool,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// Runs at real-time priority with its memory locked.
    pub realtime: bool,
}

/// Flags override the file; the file overrides defaults. `host_name` gives
/// the default node id.
pub fn resolve(
    args: &AgentArgs,
    host_name: impl FnOnce() -> Result<NodeId, String>,
) -> Result<Resolved, String> {
    let file = match &args.config {
        Some(p) => load(p)?,
        None if Path::new(DEFAULT_CONFIG).exists() => load(Path::new(DEFAULT_CONFIG))?,
        None => AgentFile::default(),
    };
    let log_json = match args.log_format.as_deref().or(file.log_format.as_deref()) {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(format!(
                "log_format {other:?} is unknown; use \"text\" or \"json\""
            ));
        }
    };
    let node_id = match (&args.node_id, &file.node_id) {
        (Some(id), _) => id.clone(),
        (None, Some(s)) => s.parse().map_err(|e| format!("config node_id: {e}"))?,
        (None, None) => host_name()?,
    };
    let listen = match (args.listen, &file.listen) {
        (Some(l), _) => l,
        (None, Some(s)) => parse_endpoint(s).map_err(|e| format!("config listen: {e}"))?,
        (None, None) => {
            return Err("no cluster address: give --listen IP[:PORT] (the address the other machines reach this one at), or `listen` in the config file".into());
        }
    };
    let attach = if args.attach.is_empty() {
        file.attach
            .iter()
            .map(|s| parse_endpoint(s).map_err(|e| format!("config attach: {e}")))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        args.attach.clone()
    };
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("/var/lib/fechter"));
    let control_socket = args
        .control_socket
        .clone()
        .or(file.control_socket)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let mut settings = Settings::new(node_id, attach, data_dir, [0; 32]);
    if let Some(t) = &file.timings {
        settings.timings = t.timings();
    }
    if let Some(ms) = file.lease_ms {
        settings.lease = Duration::from_millis(ms);
    }
    if let Some(ms) = file.renew_ms {
        settings.renew_every = Duration::from_millis(ms);
    }
    if let Some(ms) = file.drain_timeout_ms {
        settings.drain_timeout = Duration::from_millis(ms);
    }
    if let Some(v) = file.announce_burst_ms {
        if v.is_empty() {
            return Err(
                "announce_burst_ms must list at least one offset (0 announces at once)".into(),
            );
        }
        let mut v: Vec<Duration> = v.into_iter().map(Duration::from_millis).collect();
        v.sort();
        v.dedup();
        settings.announce_burst = v;
    }
    if let Some(q) = file.quorum {
        settings.quorum = q;
    }
    let gateway = match (&args.gateway, &file.gateway) {
        (Some(g), _) => Some(*g),
        (None, Some(g)) => Some(g.parse().map_err(|_| {
            format!("config gateway: {g:?} is not an IP address; write e.g. gateway = \"198.51.100.254\"")
        })?),
        (None, None) => None,
    };
    if let Some(gw) = gateway {
        let t = file.gateway_check.unwrap_or_default();
        let timing = timing(
            CheckTiming::GATEWAY,
            t.interval_ms,
            t.timeout_ms,
            t.rise,
            t.fall,
        );
        timing.validate("gateway_check")?;
        settings.checks.push(Check {
            name: "gateway".into(),
            probe: Probe::Gateway(gw),
            timing,
        });
    }
    for c in file.check {
        if c.name.is_empty() || c.command.trim().is_empty() {
            return Err("every [[check]] needs a name and a command".into());
        }
        let timing = timing(
            CheckTiming::SCRIPT,
            c.interval_ms,
            c.timeout_ms,
            c.rise,
            c.fall,
        );
        timing.validate(&format!("check {}", c.name))?;
        let name = format!("check {}", c.name);
        if settings.checks.iter().any(|x| x.name == name) {
            return Err(format!(
                "two checks are named {:?}; give each a different name",
                c.name
            ));
        }
        settings.checks.push(Check {
            name,
            probe: Probe::Script(c.command),
            timing,
        });
    }
    for p in &file.allowed_prefixes {
        let prefix = p
            .parse()
            .map_err(|e| format!("config allowed_prefixes: {e}"))?;
        settings.allowed.prefixes.push(prefix);
    }
    for i in &file.allowed_interfaces {
        if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', ':']) {
            return Err(format!(
                "config allowed_interfaces: {i:?} is not an interface name (1 to 15 characters, no '/', ':' or space)"
            ));
        }
        settings.allowed.interfaces.push(i.clone());
    }
    settings.metrics_listen = match (args.metrics_listen, &file.metrics_listen) {
        (Some(a), _) => Some(a),
        (None, Some(s)) => Some(s.parse().map_err(|_| {
            format!("config metrics_listen: {s:?} is not IP:PORT; write e.g. metrics_listen = \"127.0.0.1:9573\"")
        })?),
        (None, None) => None,
    };
    let hook = |key: &str, v: Option<String>| match v {
        Some(c) if c.trim().is_empty() => Err(format!(
            "{key} is empty; give a command (run with sh -c), or leave the key out"
        )),
        v => Ok(v),
    };
    settings.notify.acquire = hook("notify_acquire", file.notify_acquire)?;
    settings.notify.release = hook("notify_release", file.notify_release)?;
    settings.notify.leader = hook("notify_leader", file.notify_leader)?;
    settings.notify.conflict = hook("notify_conflict", file.notify_conflict)?;
    match file.notify_timeout_ms {
        Some(0) => return Err("notify_timeout_ms must be positive".into()),
        Some(ms) => settings.notify.timeout = Duration::from_millis(ms),
        None => {}
    }
    settings.announce_refresh = match file.announce_refresh_ms {
        None | Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    check(&settings)?;
    Ok(Resolved {
        settings,
        listen,
        control_socket,
        key_file: args.key_file.clone().or(file.key_file),
        insecure: args.insecure || file.insecure.unwrap_or(false),
        dry_run: args.dry_run || file.dry_run.unwrap_or(false),
        log_json,
        realtime: args.realtime || file.realtime.unwrap_or(false),
    })
}

/// `fechter check-config`: resolves `path` as the agent would (without
/// flags) and returns a summary, or every problem found.
pub fn check_file(path: &Path) -> Result<String, String> {
    if !path.exists() {
        return Err(format!(
            "{} does not exist; give the path of the agent's config file",
            path.display()
        ));
    }
    let args = AgentArgs {
        config: Some(path.to_owned()),
        node_id: None,
        listen: None,
        attach: Vec::new(),
        data_dir: None,
        key_file: None,
        insecure: false,
        dry_run: false,
        gateway: None,
        control_socket: None,
        log_format: None,
        metrics_listen: None,
        realtime: false,
    };
    let r = resolve(&args, || Ok(NodeId::new("(host name)")))?;
    if r.key_file.is_none() && !r.insecure {
        return Err(format!(
            "{}: no key_file (and insecure is not set): the agent would refuse to start; create a key with `fechter keygen` and set key_file",
            path.display()
        ));
    }
    Ok(format!(
        "{} is valid: node {} listens on {}, attaches to {} seed(s), {} health check(s), quorum {:?}",
        path.display(),
        r.settings.node_id,
        r.listen,
        r.settings.seeds.len(),
        r.settings.checks.len(),
        r.settings.quorum
    ))
}

/// Rejects settings that cannot work, naming the keys.
fn check(s: &Settings) -> Result<(), String> {
    let t = &s.timings;
    if s.lease < Duration::from_secs(1) {
        return Err(
            "lease_ms must be at least 1000 (the kernel counts lifetimes in seconds)".into(),
        );
    }
    // The kernel removes an address up to 20 ms before its lifetime is
    // over (and a renewal may run a tick late): exactly half is too late.
    if s.renew_every.is_zero() || s.renew_every * 2 >= s.lease {
        return Err(format!(
            "renew_ms ({}) must be positive and less than half of lease_ms ({}), so one lost renewal never expires an address",
            s.renew_every.as_millis(),
            s.lease.as_millis()
        ));
    }
    if t.heartbeat_interval.is_zero() || t.heartbeat_timeout <= t.heartbeat_interval * 2 {
        return Err(format!(
            "timings.heartbeat_timeout ({}) must exceed twice timings.heartbeat_interval ({}), or one late heartbeat moves addresses",
            t.heartbeat_timeout.as_millis(),
            t.heartbeat_interval.as_millis()
        ));
    }
    for (name, d) in [
        ("probe_period", t.probe_period),
        ("probe_rtt", t.probe_rtt),
        ("suspect_to_down", t.suspect_to_down),
        ("gossip_period", t.gossip_period),
        ("join_retry", t.join_retry),
        ("anti_entropy", t.anti_entropy),
        ("leader_tick", t.leader_tick),
    ] {
        if d.is_zero() {
            return Err(format!("timings.{name} must be positive"));
        }
    }
    if t.fence_after.is_zero() || t.fence_after >= t.heartbeat_timeout {
        return Err(format!(
            "timings.fence_after ({}) must be positive and shorter than timings.heartbeat_timeout ({}), so a node without quorum lets go before the majority takes over",
            t.fence_after.as_millis(),
            t.heartbeat_timeout.as_millis()
        ));
    }
    if t.probe_rtt >= t.probe_period {
        return Err("timings.probe_rtt must be shorter than timings.probe_period".into());
    }
    if t.probe_window < t.heartbeat_interval * 2 || t.probe_window > t.heartbeat_timeout / 2 {
        return Err(format!(
            "timings.probe_window ({}) must be at least twice timings.heartbeat_interval ({}, one probe per heartbeat: two must go unanswered) and at most half timings.heartbeat_timeout ({}: a standby starts probing at a third of the timeout, so the window is over when it takes over)",
            t.probe_window.as_millis(),
            t.heartbeat_interval.as_millis(),
            t.heartbeat_timeout.as_millis()
        ));
    }
    for (name, d) in [("resume_hold", t.resume_hold), ("isolation", t.isolation)] {
        if d.is_zero() {
            return Err(format!("timings.{name} must be positive"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
