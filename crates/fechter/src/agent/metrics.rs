//! Prometheus metrics (`prometheus-client`), served on `metrics_listen`
//! (`GET /metrics`) by a tiny HTTP/1.1 server: one request per connection,
//! on a thread of its own within [`LIMITS`] (see [`super::limits`]). A
//! port it cannot bind is logged; the agent runs on without `/metrics`.
//!
//! Counters and the takeover histogram are updated as things happen (see
//! [`super::events::Observer`]); the gauges that mirror the engine's state
//! (members, addresses held, leader term, drops) are refreshed by the agent
//! loop on every renewal tick and after every engine event.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fechter_cluster::engine::Engine;
use fechter_cluster::seal::{DropReason, Opener};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::limits::{self, Dropped, Gate, Limits};

type Labels = Vec<(&'static str, String)>;

/// Connections the local servers dropped, by server and reason. One count
/// per process, as the descriptors they save are the process's.
static CONNECTIONS_DROPPED: LazyLock<Family<Labels, Counter>> = LazyLock::new(|| {
    let f = Family::<Labels, Counter>::default();
    for server in ["control", "metrics"] {
        for why in Dropped::ALL {
            let _ = f.get_or_create(&drop_labels(server, why));
        }
    }
    f
});

fn drop_labels(server: &str, why: Dropped) -> Labels {
    vec![
        ("server", server.to_string()),
        ("reason", why.as_str().to_string()),
    ]
}

/// Counts a connection a local server dropped.
pub(super) fn connection_dropped(server: &str, why: Dropped) {
    CONNECTIONS_DROPPED
        .get_or_create(&drop_labels(server, why))
        .inc();
}

/// Every metric of the agent.
pub struct Metrics {
    registry: Registry,
    members: Family<Labels, Gauge>,
    addresses_held: Gauge,
    addresses_waiting: Gauge,
    disk_write_errors: Counter,
    leader_term: Gauge,
    leader: Gauge,
    takeovers: Counter,
    handoffs: Family<Labels, Counter>,
    takeover_silence: Histogram,
    announcements: Counter,
    dropped: Family<Labels, Counter>,
    health: Family<Labels, Gauge>,
    pub quorum: Gauge,
    conflicts: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Histogram buckets (seconds) for the silence before a takeover: the
/// default heartbeat timeout is 65 ms, checked every 15 ms.
const SILENCE_BUCKETS: [f64; 12] = [
    0.025, 0.05, 0.065, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("fechter"),
            members: Family::default(),
            addresses_held: Gauge::default(),
            addresses_waiting: Gauge::default(),
            disk_write_errors: Counter::default(),
            leader_term: Gauge::default(),
            leader: Gauge::default(),
            takeovers: Counter::default(),
            handoffs: Family::default(),
            takeover_silence: Histogram::new(SILENCE_BUCKETS),
            announcements: Counter::default(),
            dropped: Family::default(),
            health: Family::default(),
            quorum: Gauge::default(),
            conflicts: Family::default(),
        };
        m.seed_labels();
        m.register_state();
        m.register_moves();
        m.register_drops_and_health();
        m
    }

    /// Sets the quorum gauge to 1 and creates every label a family
    /// exports from the start, so each shows up as 0 before it counts.
    fn seed_labels(&mut self) {
        self.quorum.set(1);
        for state in ["alive", "dead"] {
            let _ = self
                .members
                .get_or_create(&vec![("state", state.to_string())]);
        }
        for d in ["received", "given"] {
            let _ = self
                .handoffs
                .get_or_create(&vec![("direction", d.to_string())]);
        }
        for action in ["kept", "yielded"] {
            let _ = self
                .conflicts
                .get_or_create(&vec![("action", action.to_string())]);
        }
    }

    /// Registers the members, addresses, disk errors and leader gauges.
    fn register_state(&mut self) {
        let r = &mut self.registry;
        r.register(
            "members",
            "Members this node knows (itself included), by liveness",
            self.members.clone(),
        );
        r.register(
            "addresses_held",
            "Addresses installed on this node",
            self.addresses_held.clone(),
        );
        r.register(
            "addresses_waiting",
            "Addresses this node should hold but has not installed: another machine answers for them on the wire, or probes are pending",
            self.addresses_waiting.clone(),
        );
        r.register(
            "disk_write_errors",
            "Failed attempts to write a state file (retried every second; the agent keeps running)",
            self.disk_write_errors.clone(),
        );
        r.register(
            "leader_term",
            "Term of the table this node follows",
            self.leader_term.clone(),
        );
        r.register(
            "leader",
            "1 while this node is the leader it recognises",
            self.leader.clone(),
        );
    }

    /// Registers takeovers, hand-offs, the takeover silence and announcements.
    fn register_moves(&mut self) {
        let r = &mut self.registry;
        r.register(
            "takeovers",
            "Failovers: times this node, as standby, took the addresses of a silent holder",
            self.takeovers.clone(),
        );
        r.register(
            "handoffs",
            "Planned make-before-break hand-offs of addresses, received or given by this node",
            self.handoffs.clone(),
        );
        r.register_with_unit(
            "takeover_silence",
            "Silence of the holder when this node took over (holder loss to takeover)",
            Unit::Seconds,
            self.takeover_silence.clone(),
        );
        r.register(
            "announcements",
            "Gratuitous ARP / unsolicited NA bursts sent for held addresses",
            self.announcements.clone(),
        );
    }

    /// Registers dropped datagrams, health checks, quorum, conflicts and
    /// dropped connections.
    fn register_drops_and_health(&mut self) {
        let r = &mut self.registry;
        r.register(
            "datagrams_dropped",
            "Cluster datagrams dropped, by reason",
            self.dropped.clone(),
        );
        r.register(
            "health_check",
            "Health checks: 1 passing, 0 failing (or pending)",
            self.health.clone(),
        );
        r.register(
            "quorum",
            "1 while this node sees a majority (or quorum is off), 0 while fenced or a minority",
            self.quorum.clone(),
        );
        r.register(
            "conflicts",
            "Another machine answered for an address this node held: kept (this node hears a majority) or yielded",
            self.conflicts.clone(),
        );
        r.register(
            "connections_dropped",
            "Connections to the control socket or /metrics dropped: full (every slot answering), evicted (idle while a new one needed its slot), timeout, oversized, malformed",
            CONNECTIONS_DROPPED.clone(),
        );
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    pub fn took_over(&self, silence_ms: u64) {
        self.takeovers.inc();
        self.takeover_silence.observe(silence_ms as f64 / 1000.0);
    }

    pub fn handoff(&self, direction: &str) {
        self.handoffs
            .get_or_create(&vec![("direction", direction.to_string())])
            .inc();
    }

    /// Another machine answered for an address this node holds.
    pub fn conflict(&self, kept: bool) {
        let action = if kept { "kept" } else { "yielded" };
        self.conflicts
            .get_or_create(&vec![("action", action.to_string())])
            .inc();
    }

    /// Addresses that wait on the wire (see `addresses_waiting`).
    pub fn waiting(&self, n: usize) {
        self.addresses_waiting.set(n as i64);
    }

    /// Failed state-file writes so far (the writer's own count).
    pub fn disk_write_errors(&self, total: u64) {
        let seen = self.disk_write_errors.get();
        if total > seen {
            self.disk_write_errors.inc_by(total - seen);
        }
    }

    pub fn announced(&self) {
        self.announcements.inc();
    }

    pub fn health(&self, check: &str, passing: bool) {
        self.health
            .get_or_create(&vec![("check", check.to_string())])
            .set(i64::from(passing));
    }

    /// Mirrors the engine's state into the gauges and drop counters.
    pub fn refresh(&self, engine: &Engine, opener: &Opener, held: usize) {
        let me = &engine.id().node;
        let live = engine.alive();
        let (mut alive, mut dead) = (0, 0);
        {
            let r = engine.replica();
            for n in r.counted_nodes().map(|n| &n.id) {
                if live.contains(n) {
                    alive += 1;
                } else {
                    dead += 1;
                }
            }
            let term = r.table.as_ref().map_or(0, |t| t.meta.term.0);
            self.leader_term
                .set(i64::try_from(term).unwrap_or(i64::MAX));
        }
        self.members
            .get_or_create(&vec![("state", "alive".to_string())])
            .set(alive);
        self.members
            .get_or_create(&vec![("state", "dead".to_string())])
            .set(dead);
        self.addresses_held.set(held as i64);
        self.leader.set(i64::from(engine.leader() == Some(me)));
        self.quorum.set(i64::from(
            engine.standing() == fechter_core::claim::Standing::Quorate,
        ));
        let totals = drop_totals(opener, engine);
        for (reason, total) in totals {
            if total == 0 {
                continue;
            }
            let c = self
                .dropped
                .get_or_create(&vec![("reason", reason.to_string())]);
            c.inc_by(total.saturating_sub(c.get()));
        }
    }
}

/// Every dropped datagram so far, by reason: the one table that status
/// and the metrics both show. What the socket's inbox dropped before the
/// opener saw it (junk, a full lane, a full receive buffer) counts as well.
pub fn drop_totals(opener: &Opener, engine: &Engine) -> Vec<(&'static str, u64)> {
    let seal = opener.drops();
    let e = engine.drops();
    let inbox = &super::net::INBOX_DROPS;
    DropReason::ALL
        .iter()
        .map(|r| (r.as_str(), seal.get(*r).saturating_add(inbox.precheck(*r))))
        .chain([
            ("malformed-packet", e.malformed),
            ("swim-rejected", e.swim_rejected),
        ])
        .chain(inbox.own())
        .collect()
}

/// `/metrics`'s limits: a scraper or two, each answered in microseconds;
/// a client that sends no request within 5 s is closed.
pub const LIMITS: Limits = Limits {
    max_connections: 16,
    read_timeout: Duration::from_secs(5),
    write_timeout: Duration::from_secs(5),
};
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves `metrics` at `GET /metrics` on `addr` (if any), on a thread of its
/// own. A port it cannot bind is logged, not fatal: the agent runs without
/// `/metrics`. Returns the address served.
pub fn start(addr: Option<SocketAddr>, metrics: Arc<Metrics>) -> Option<SocketAddr> {
    start_with(addr?, metrics, LIMITS)
}

/// [`start`] with other limits.
pub fn start_with(addr: SocketAddr, metrics: Arc<Metrics>, limits: Limits) -> Option<SocketAddr> {
    let bound = std::net::TcpListener::bind(addr).and_then(|l| {
        l.set_nonblocking(true)?;
        limits::deepen_backlog(std::os::fd::AsFd::as_fd(&l))?;
        Ok((l.local_addr()?, l))
    });
    let (local, listener) = match bound {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                "cannot serve metrics on {addr} ({e}); is the port free, and is it this machine's address? (metrics_listen / --metrics-listen); running without /metrics"
            );
            return None;
        }
    };
    let started = limits::spawn_server("fechter-metrics", move || async move {
        match TcpListener::from_std(listener) {
            Ok(l) => serve(l, metrics, limits).await,
            Err(e) => {
                tracing::error!("cannot serve metrics on {local} ({e}); running without /metrics")
            }
        }
    });
    if let Err(e) = started {
        tracing::error!("cannot start the metrics server ({e}); running without /metrics");
        return None;
    }
    tracing::info!(addr = %local, "serving metrics at /metrics");
    Some(local)
}

/// Answers `GET /metrics` on `listener` forever, within `limits`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, limits: Limits) {
    let gate = Gate::new("metrics", limits);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close.
                tracing::debug!("metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(mut conn) = gate.admit() else {
            refuse(stream, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &mut conn, &metrics).await {
                tracing::debug!("metrics connection: {e}");
            }
        });
        // Lets an evicted connection close before the next is accepted.
        tokio::task::yield_now().await;
    }
}

/// Closes `stream` at once after `msg`, written only if it fits the
/// socket's buffer without waiting (it does, on a fresh connection).
pub(super) fn refuse<S: IntoStd>(stream: S, msg: &[u8]) {
    use std::io::Write;
    if let Ok(mut s) = stream.into_std_stream() {
        let _ = s.write(msg);
    }
}

/// A tokio stream as its (non-blocking) std stream.
pub(super) trait IntoStd {
    type Std: std::io::Write;
    fn into_std_stream(self) -> std::io::Result<Self::Std>;
}

impl IntoStd for TcpStream {
    type Std = std::net::TcpStream;
    fn into_std_stream(self) -> std::io::Result<Self::Std> {
        self.into_std()
    }
}

impl IntoStd for tokio::net::UnixStream {
    type Std = std::os::unix::net::UnixStream;
    fn into_std_stream(self) -> std::io::Result<Self::Std> {
        self.into_std()
    }
}

async fn answer(
    mut stream: TcpStream,
    conn: &mut limits::Conn,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    let Some(read) = conn.read(read).await else {
        return Ok(());
    };
    read?;
    if head.len() >= MAX_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        conn.gate().dropped(Dropped::Oversized);
        let out = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = conn.write(stream.write_all(out.as_bytes())).await;
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "fechter: the metrics are at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "use GET /metrics\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    let write = async {
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    };
    conn.write(write).await.unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests;
