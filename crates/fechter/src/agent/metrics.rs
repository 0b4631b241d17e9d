//! Prometheus metrics (`prometheus-client`), served on `metrics_listen`
//! (`GET /metrics`) by a tiny HTTP/1.1 server: one request per connection.
//!
//! Counters and the takeover histogram are updated as things happen (see
//! [`super::events::Observer`]); the gauges that mirror the engine's state
//! (members, addresses held, leader term, drops) are refreshed by the agent
//! loop on every renewal tick and after every engine event.

use std::net::SocketAddr;
use std::sync::Arc;
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

type Labels = Vec<(&'static str, String)>;

/// Every metric of the agent.
pub struct Metrics {
    registry: Registry,
    members: Family<Labels, Gauge>,
    addresses_held: Gauge,
    addresses_waiting: Gauge,
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
        m.quorum.set(1);
        for state in ["alive", "dead"] {
            let _ = m.members.get_or_create(&vec![("state", state.to_string())]);
        }
        for d in ["received", "given"] {
            let _ = m
                .handoffs
                .get_or_create(&vec![("direction", d.to_string())]);
        }
        let r = &mut m.registry;
        r.register(
            "members",
            "Members this node knows (itself included), by liveness",
            m.members.clone(),
        );
        r.register(
            "addresses_held",
            "Addresses installed on this node",
            m.addresses_held.clone(),
        );
        r.register(
            "addresses_waiting",
            "Addresses this node should hold but has not installed: another machine answers for them on the wire, or probes are pending",
            m.addresses_waiting.clone(),
        );
        r.register(
            "leader_term",
            "Term of the table this node follows",
            m.leader_term.clone(),
        );
        r.register(
            "leader",
            "1 while this node is the leader it recognises",
            m.leader.clone(),
        );
        r.register(
            "takeovers",
            "Failovers: times this node, as standby, took the addresses of a silent holder",
            m.takeovers.clone(),
        );
        r.register(
            "handoffs",
            "Planned make-before-break hand-offs of addresses, received or given by this node",
            m.handoffs.clone(),
        );
        r.register_with_unit(
            "takeover_silence",
            "Silence of the holder when this node took over (holder loss to takeover)",
            Unit::Seconds,
            m.takeover_silence.clone(),
        );
        r.register(
            "announcements",
            "Gratuitous ARP / unsolicited NA bursts sent for held addresses",
            m.announcements.clone(),
        );
        r.register(
            "datagrams_dropped",
            "Cluster datagrams dropped, by reason",
            m.dropped.clone(),
        );
        r.register(
            "health_check",
            "Health checks: 1 passing, 0 failing (or pending)",
            m.health.clone(),
        );
        r.register(
            "quorum",
            "1 while this node sees a majority (or quorum is off), 0 while fenced or a minority",
            m.quorum.clone(),
        );
        for action in ["kept", "yielded"] {
            let _ = m
                .conflicts
                .get_or_create(&vec![("action", action.to_string())]);
        }
        r.register(
            "conflicts",
            "Another machine answered for an address this node held: kept (this node hears a majority) or yielded",
            m.conflicts.clone(),
        );
        m
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
        let seal = opener.drops();
        let e = engine.drops();
        // What the socket's inbox dropped before the opener saw it (junk,
        // a full lane, a full receive buffer) counts as well.
        let inbox = &super::net::INBOX_DROPS;
        let totals = DropReason::ALL
            .iter()
            .map(|r| (r.as_str(), seal.get(*r).saturating_add(inbox.precheck(*r))))
            .chain([
                ("malformed-packet", e.malformed),
                ("swim-rejected", e.swim_rejected),
            ])
            .chain(inbox.own());
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

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot serve metrics on {addr} ({e}); is the port free, and is it this machine's address? (metrics_listen / --metrics-listen)")
    })
}

/// Answers `GET /metrics` on `listener` forever.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &metrics).await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
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
    if tokio::time::timeout(READ_TIMEOUT, read).await.is_err() {
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
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric() {
        let m = Metrics::new();
        m.took_over(70);
        m.handoff("given");
        m.announced();
        m.health("gateway", true);
        let text = m.encode();
        for name in [
            "fechter_members{state=\"alive\"} 0",
            "fechter_addresses_held 0",
            "fechter_addresses_waiting 0",
            "fechter_leader_term 0",
            "fechter_takeovers_total 1",
            "fechter_handoffs_total{direction=\"given\"} 1",
            "fechter_handoffs_total{direction=\"received\"} 0",
            "fechter_takeover_silence_seconds_count 1",
            "fechter_takeover_silence_seconds_bucket{le=\"0.08\"} 1",
            "fechter_takeover_silence_seconds_bucket{le=\"0.065\"} 0",
            "fechter_announcements_total 1",
            "fechter_health_check{check=\"gateway\"} 1",
            "fechter_quorum 1",
        ] {
            assert!(text.contains(name), "no {name} in:\n{text}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn get_metrics_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Arc::new(Metrics::new());
        m.took_over(80);
        tokio::spawn(serve(listener, m));
        let get = |req: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("fechter_takeovers_total 1"), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let nf = get("GET / HTTP/1.1\r\n\r\n").await;
        assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
        let na = get("POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(na.starts_with("HTTP/1.1 405"), "{na}");
    }
}
