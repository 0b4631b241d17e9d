//! The agent: the I/O shell around the cluster [`Engine`].
//!
//! One loop owns the engine and does every effect it asks for: it reads
//! datagrams, opens them ([`Opener`]: wrong key, tampering and replays are
//! dropped and counted here) and hands the plaintext to the engine; it seals
//! and sends what the engine wants sent; it sleeps until the engine's next
//! deadline; it answers control requests; it reconciles the machine's
//! interfaces with the allocation through a [`Platform`]; it persists the
//! address list, this node's admin status and the addresses it installed.
//! The loop is generic over the socket, the clock and the platform, so the
//! same code runs on turmoil's simulated network with a recording platform.

pub mod events;
pub mod health;
pub mod hooks;
pub mod linux;
pub mod metrics;
pub mod net;
pub mod platform;
pub mod reason;
mod requests;
pub mod server;
pub mod store;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::{Observer, What};
use fechter_cluster::engine::{Engine, EngineConfig, Event, Id, Now, Quorum, Timings};
use fechter_cluster::persist::{DataDir, PersistError};
use fechter_cluster::seal::{MAX_PAYLOAD_LEN, Opener, Sealer};
use fechter_core::alloc::Allocation;
use fechter_core::claim::Standing;
use fechter_core::reconcile::{Action, LocalView, installed_after, keep_announced, plan, renewals};
use fechter_core::replica::{Admin, NodeRecord, Replica};
use fechter_core::state::{AddError, AddressState, RemoveError};
use fechter_core::{AddrSpec, NodeId};
use net::{Datagram, WallClock};
use platform::{Platform, PlatformEvent};
use requests::reload;
use store::Persisted;
use tokio::sync::{mpsc, oneshot};
use wire::WireState;

use crate::control::{AddressStatus, MemberStatus, Request, Response, StatusReport};

/// Everything the agent needs to start, resolved from flags and config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: NodeId,
    /// `--attach` addresses.
    pub seeds: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    /// The 32-byte cluster key (all zeros with `--insecure`).
    pub key: [u8; 32],
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
    /// or an error naming the keys that need a restart.
    pub fn reload_plan(&self, new: &Settings) -> Result<Vec<&'static str>, String> {
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
    pub fn new(node_id: NodeId, seeds: Vec<SocketAddr>, data_dir: PathBuf, key: [u8; 32]) -> Self {
        Settings {
            node_id,
            seeds,
            data_dir,
            key,
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
            reload: Reloader::default(),
        }
    }
}

/// A control request with the channel its answer goes back on.
pub type ControlCall = (Request, oneshot::Sender<Response>);

/// Why the agent stopped with an error. Each names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("cluster socket: {0}")]
    Net(std::io::Error),
    #[error("{0}")]
    Metrics(String),
}

/// How long a state change from the cluster may wait before it is written
/// (local commands are written before they are acknowledged).
const PERSIST_DELAY: Duration = Duration::from_millis(100);

/// The file recording the addresses this node installed.
const INSTALLED_FILE: &str = "installed.json";

/// How often the agent reads its interfaces back and reconciles them with
/// the allocation even though nothing told it to (every change it hears of,
/// from the cluster or the kernel, reconciles at once).
const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// At most this many datagrams already queued in the socket are heard
/// before a due timer fires.
const QUEUED_BEFORE_TIMERS: usize = 256;

fn mono() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs the agent until `shutdown` completes, then hands its addresses off
/// (bounded by `drain_timeout`), removes what is left and leaves the cluster.
pub async fn run<S: Datagram, C: WallClock, P: Platform>(
    mut settings: Settings,
    socket: S,
    clock: C,
    mut platform: P,
    mut control: mpsc::Receiver<ControlCall>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let dir = DataDir::open(&settings.data_dir)?;
    let mut saved = store::load(&dir)?;
    let installed: BTreeSet<AddrSpec> = dir.load_json(INSTALLED_FILE)?.unwrap_or_default();
    let listen = socket.local_addr().map_err(AgentError::Net)?;
    // A new incarnation on every start, higher than any before.
    saved.incarnation = (saved.incarnation + 1).max(clock.wall_ms());
    store::save(&dir, &saved)?;

    let mut replica = Replica {
        addresses: saved.addresses.clone(),
        ..Replica::default()
    };
    replica.nodes.insert(
        settings.node_id.clone(),
        NodeRecord {
            admin: saved.admin,
            ..NodeRecord::new(settings.node_id.clone(), saved.incarnation)
        },
    );
    let cfg = EngineConfig {
        me: Id {
            node: settings.node_id.clone(),
            addr: listen,
            incarnation: saved.incarnation,
            bump: 0,
        },
        seeds: settings.seeds.clone(),
        timings: settings.timings.clone(),
        max_packet: MAX_PAYLOAD_LEN,
        quorum: settings.quorum,
    };
    let now = |clock: &C| Now {
        at: mono(),
        wall_ms: clock.wall_ms(),
    };
    let seed = rng_seed(&settings.node_id, saved.incarnation);
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = settings.metrics_listen {
        let listener = metrics::bind(addr).await.map_err(AgentError::Metrics)?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(metrics::serve(listener, metrics.clone()));
    }
    let obs = Observer::new(
        settings.node_id.clone(),
        saved.incarnation,
        hooks::Hooks::start(settings.notify.clone()),
        metrics,
    );
    let mut shell = Shell {
        engine: Engine::new(cfg, replica, seed, now(&clock)),
        sealer: Sealer::new(&settings.key, &settings.node_id, saved.incarnation),
        opener: Opener::new(&settings.key),
        dir,
        saved,
        save_due: None,
        installed,
        announced: BTreeSet::new(),
        obs,
        last_alloc: Allocation::default(),
        took_over: BTreeSet::new(),
        wire: WireState::new(
            fechter_cluster::wire_lock::WireLock::new(
                settings.timings.probe_window,
                settings.timings.heartbeat_interval,
            ),
            listen.ip(),
            None,
        ),
    };
    let incarnation = shell.saved.incarnation;
    shell
        .obs
        .note(clock.wall_ms(), What::Started { incarnation });
    shell.refresh_metrics();
    tracing::info!(node = %settings.node_id, %listen, incarnation = shell.saved.incarnation, "agent started");

    let mut machine = platform.events();
    let mut health = (!settings.checks.is_empty()).then(|| health::spawn(settings.checks.clone()));
    let mut failing: BTreeSet<String> = BTreeSet::new();
    // The gateway doubles as the two-node tie-breaker (witness).
    let gateway = settings.checks.iter().find_map(|c| match c.probe {
        health::Probe::Gateway(ip) => Some(ip),
        health::Probe::Script(_) => None,
    });
    if gateway.is_some() {
        shell.engine.enable_witness();
    }
    if let Some(std::net::IpAddr::V4(gw)) = gateway {
        shell.wire.gateway_v4 = Some(gw);
    }
    let (witness_tx, mut witness_rx) = mpsc::channel::<(Instant, bool)>(4);
    // systemd readiness: once joined, or at once for a node with no seed
    // (it forms the cluster), or after a while alone (a cold start of the
    // whole cluster must not fail the boot).
    let mut ready_by = Some(if settings.seeds.is_empty() {
        mono()
    } else {
        mono() + Duration::from_secs(10)
    });
    let mut buf = vec![0u8; 2048];
    let mut reconcile_due = true;
    let mut links_due = true;
    let mut next_renew = mono() + settings.renew_every;
    let mut renew_due = false;
    // The last tick left datagrams in the socket: read on without sleeping.
    let mut backlog = false;
    let mut next_resync = mono() + RESYNC_EVERY;
    let mut last_refresh = mono();
    let mut draining: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        if links_due {
            links_due = false;
            shell.check_links(&mut platform, now(&clock)).await;
        }
        if reconcile_due {
            // (A reconcile renews what it keeps.)
            reconcile_due = false;
            renew_due = false;
            shell.reconcile(&mut platform, now(&clock)).await?;
        }
        if renew_due {
            renew_due = false;
            // A failed renewal (an interface gone?) is looked at by a
            // reconcile at once.
            reconcile_due = !shell.renew(&mut platform).await;
        }
        shell.flush(&socket).await;
        if let Some(deadline) = draining
            && (shell.drained() || mono() >= deadline)
        {
            break;
        }
        if ready_by.is_some_and(|t| mono() >= t) {
            ready_by = None;
            crate::notify::ready("running; no peer answered yet");
        }
        // Paced: the loop wakes on the engine's heartbeat tick (and on local
        // events), not on every datagram nor on every other timer: those
        // wait until the tick, at most one heartbeat interval. An idle agent
        // so wakes once per interval instead of once per datagram. (The
        // engine always has a tick; the other deadlines are a fallback.)
        let deadline = if backlog {
            Some(mono())
        } else {
            shell.engine.poll_tick().or_else(|| {
                [
                    shell.engine.poll_timeout(),
                    shell.save_due,
                    Some(next_renew),
                    Some(next_resync),
                    draining,
                    ready_by,
                ]
                .into_iter()
                .flatten()
                .min()
            })
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let machine_event = async {
            match machine.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                // Datagrams that queued since the last tick (or while this
                // process did not run) are heard before the timers judge the
                // peers' silence: bounded, so that a flood cannot starve
                // them; what is left is read at once after.
                let mut heard = 0;
                while heard < QUEUED_BEFORE_TIMERS {
                    let Some(r) = socket.try_recv_from(&mut buf) else {
                        break;
                    };
                    shell.hear(now(&clock), r, &buf);
                    heard += 1;
                }
                backlog = heard == QUEUED_BEFORE_TIMERS;
                shell.wire_before(&mut platform, now(&clock)).await;
                shell.engine.handle_timeout(now(&clock));
                reconcile_due |= shell.wire_after(&mut platform, now(&clock)).free;
                let t = mono();
                if shell.save_due.is_some_and(|d| d <= t) {
                    shell.persist()?;
                }
                if next_renew <= t {
                    next_renew = t + settings.renew_every;
                    shell.refresh_metrics();
                    renew_due = true;
                }
                if next_resync <= t {
                    next_resync = t + RESYNC_EVERY;
                    reconcile_due = true;
                    links_due = true;
                }
                if let Some(every) = settings.announce_refresh
                    && t.saturating_duration_since(last_refresh) >= every
                {
                    // Periodic refresh: forget what was announced, so the next
                    // reconcile announces every held address again.
                    last_refresh = t;
                    shell.announced.clear();
                    reconcile_due = true;
                }
            }
            Some((req, reply)) = control.recv() => {
                let resp = match req {
                    Request::Reload => reload(&mut settings, &mut shell),
                    req => shell.handle_request(now(&clock), req),
                };
                let _ = reply.send(resp);
                links_due = true;
            }
            ev = machine_event => match ev {
                Some(PlatformEvent::AddressRemoved(a)) => {
                    if shell.installed.contains(&a) {
                        tracing::warn!(address = %a, "an address this node holds was removed behind its back; putting it back");
                        shell.announced.remove(&a);
                        reconcile_due = true;
                    }
                }
                Some(PlatformEvent::Link { iface, usable }) => {
                    tracing::info!(%iface, usable, "link changed");
                    links_due = true;
                    reconcile_due = true;
                }
                Some(PlatformEvent::Resync) => reconcile_due = true,
                None => machine = None,
            },
            change = async {
                match health.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match change {
                Some((name, passing)) => {
                    shell.obs.note(clock.wall_ms(), What::Health { check: name.clone(), passing });
                    let changed = if passing { failing.remove(&name) } else { failing.insert(name) };
                    if changed {
                        let reasons: Vec<String> = failing.iter().cloned().collect();
                        shell.engine.update_own(now(&clock), |r| r.unhealthy = reasons);
                    }
                }
                None => health = None,
            },
            Some((sent, ok)) = witness_rx.recv() => {
                shell.engine.witness_answer(sent, ok);
            }
            () = &mut shutdown, if draining.is_none() => {
                tracing::info!("shutting down: handing addresses off first");
                crate::notify::stopping("handing addresses off");
                shell.obs.note(clock.wall_ms(), What::Stopping);
                draining = Some(mono() + settings.drain_timeout);
                shell.engine.update_own(now(&clock), |r| r.leaving = true);
            }
        }
        let (realloc, joined, probe) = shell.drain_events(now(&clock));
        if let (true, Some(gw)) = (probe, gateway) {
            let tx = witness_tx.clone();
            let timeout = settings.timings.fence_after;
            tokio::spawn(async move {
                let sent = mono();
                let ok = health::ping_once(gw, timeout).await;
                let _ = tx.send((sent, ok)).await;
            });
        }
        reconcile_due |= realloc;
        if joined && ready_by.take().is_some() {
            crate::notify::ready("running; joined the cluster");
        }
    }
    // Whatever is left (timeout, or nobody to hand to) is removed now.
    shell.release_all(&mut platform, clock.wall_ms()).await?;
    tracing::info!("leaving the cluster");
    shell.engine.leave(now(&clock));
    shell.flush(&socket).await;
    shell.persist()?;
    // The last hooks (releases) may finish, within their timeout.
    let limit = settings.notify.timeout + Duration::from_secs(1);
    shell.obs.hooks.finish(limit).await;
    Ok(())
}

/// The engine's RNG seed: distinct per node and start, and never from the OS
/// inside the engine itself.
fn rng_seed(node: &NodeId, incarnation: u64) -> u64 {
    node.stable_hash() ^ incarnation.rotate_left(17)
}

struct Shell {
    engine: Engine,
    sealer: Sealer,
    opener: Opener,
    dir: DataDir,
    saved: Persisted,
    save_due: Option<Instant>,
    /// Addresses this node installed (persisted, written ahead).
    installed: BTreeSet<AddrSpec>,
    /// Addresses announced since this process started holding them.
    announced: BTreeSet<AddrSpec>,
    /// History, hooks and metrics.
    obs: Observer,
    /// The allocation of the last reconcile, and the holders taken over
    /// since: why an address is acquired or released.
    last_alloc: Allocation,
    took_over: BTreeSet<NodeId>,
    /// The wire as the lock: probes, conflicts, signs of life.
    wire: WireState,
}

impl Shell {
    /// One datagram from the cluster socket: opened and handed to the
    /// engine, or dropped (and counted by the opener).
    fn hear(&mut self, now: Now, r: std::io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        match r {
            Ok((n, from)) => match self.opener.open(&buf[..n]) {
                Ok(opened) => self.engine.handle_datagram(now, from, &opened.payload),
                Err(reason) => tracing::debug!(%from, ?reason, "dropped a cluster datagram"),
            },
            // ICMP errors surface here on Linux (peer port closed): not fatal.
            Err(e) => tracing::debug!("recv: {e}"),
        }
    }

    async fn flush<S: Datagram>(&mut self, socket: &S) {
        while let Some(t) = self.engine.poll_transmit() {
            match self.sealer.seal_with_os_rng(&t.payload) {
                Ok(d) => {
                    if let Err(e) = socket.send_to(&d, t.to).await {
                        tracing::debug!(to = %t.to, "send: {e}");
                    }
                }
                Err(e) => tracing::warn!(to = %t.to, "cannot seal a datagram: {e}"),
            }
        }
    }

    /// Logs events and schedules persistence; returns whether the
    /// allocation this node acts on changed, whether it joined, and whether
    /// the engine wants a witness probe.
    fn drain_events(&mut self, now: Now) -> (bool, bool, bool) {
        let mut realloc = false;
        let mut joined = false;
        let mut probe = false;
        let mut any = false;
        while let Some(ev) = self.engine.poll_event() {
            any = true;
            let t = now.wall_ms;
            match ev {
                Event::MemberUp(id) => {
                    tracing::info!(member = %id.node, addr = %id.addr, "member up");
                    self.obs.note(t, What::MemberUp { member: id.node });
                    // A member came (back): after a partition heals, clients
                    // on the other side may still point at a stale MAC, so
                    // every held address is announced again.
                    self.announced.clear();
                    realloc = true;
                }
                Event::MemberDown(id) => {
                    tracing::warn!(member = %id.node, "member down");
                    self.obs.note(t, What::MemberDown { member: id.node });
                }
                Event::Joined => {
                    joined = true;
                    tracing::info!("joined the cluster")
                }
                Event::Isolated => tracing::warn!("no live peer: isolated"),
                Event::LeaderChanged(l) => {
                    tracing::info!(leader = l.as_ref().map(NodeId::as_str), "leader");
                    self.obs.note(t, What::LeaderChanged { leader: l });
                }
                Event::TookOver { holder, silence } => {
                    tracing::warn!(%holder, ?silence, "holder unheard: took over its addresses");
                    let silence_ms = silence.as_millis() as u64;
                    self.took_over.insert(holder.clone());
                    self.obs.note(t, What::TookOver { holder, silence_ms });
                }
                Event::Published(meta) => {
                    tracing::debug!(
                        term = meta.term.0,
                        version = meta.version,
                        "published a table"
                    )
                }
                Event::AllocationChanged => realloc = true,
                Event::Fenced => {
                    tracing::warn!("no quorum: released every address (self-fenced)");
                    self.obs.note(t, What::QuorumLost);
                }
                Event::ProbeWitness => probe = true,
                Event::Minority => {
                    tracing::warn!(
                        "no quorum, but the segment is alive: serving what nobody else on the wire answers for"
                    );
                    self.obs.note(t, What::Minority);
                    realloc = true;
                }
                Event::Unfenced => {
                    tracing::info!("quorum regained");
                    self.obs.note(t, What::QuorumRegained);
                    self.announced.clear();
                    realloc = true;
                }
                Event::StateChanged => {
                    if self.save_due.is_none() && self.wanted() != self.saved {
                        self.save_due = Some(mono() + PERSIST_DELAY);
                    }
                }
            }
        }
        if any {
            self.refresh_metrics();
        }
        (realloc, joined, probe)
    }

    fn refresh_metrics(&self) {
        let held = self.installed.len();
        self.obs.metrics.refresh(&self.engine, &self.opener, held);
        self.obs.metrics.waiting(self.wire.base.len());
    }

    /// Whether this node holds nothing any more (after a drain request), or
    /// nobody else can take what it holds.
    fn drained(&self) -> bool {
        let me = &self.engine.id().node;
        let holds = self
            .engine
            .allocation()
            .placements
            .values()
            .any(|p| p.holder == *me || p.handoff_from.as_ref() == Some(me));
        !holds || self.engine.eligibility().eligible.is_empty()
    }

    /// Brings the interfaces in line with the allocation.
    async fn reconcile<P: Platform>(
        &mut self,
        platform: &mut P,
        now: Now,
    ) -> Result<(), PersistError> {
        let me = self.engine.id().node.clone();
        let observed = match platform.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("cannot read the interfaces' addresses: {e}");
                return Ok(());
            }
        };
        let alloc = self.engine.allocation().clone();
        let unproven = self.wire_unproven(now, &observed);
        keep_announced(&me, &alloc, &mut self.announced);
        let view = LocalView {
            observed,
            installed: self.installed.clone(),
            unproven,
            announced: self.announced.clone(),
        };
        let actions = plan(&me, &alloc, &view);
        // Write ahead: an address is recorded before it is installed, so a
        // crash in between never leaves an address this node forgets.
        let ahead: BTreeSet<AddrSpec> = self
            .installed
            .iter()
            .cloned()
            .chain(actions.iter().filter_map(|a| match a {
                Action::Install(s) => Some(s.clone()),
                _ => None,
            }))
            .collect();
        if ahead != self.installed {
            self.dir.save_json(INSTALLED_FILE, &ahead)?;
        }
        let mut done = Vec::new();
        let results = platform.execute_plan(&actions).await;
        for (a, result) in actions.iter().zip(results) {
            match result {
                Ok(()) => {
                    match a {
                        Action::Install(s) | Action::Remove(s) => {
                            let what = self.why(a, &alloc);
                            if let What::Acquired { reason, .. } | What::Released { reason, .. } =
                                &what
                            {
                                let verb = if matches!(a, Action::Install(_)) {
                                    "acquired"
                                } else {
                                    "released"
                                };
                                tracing::info!(address = %s, %reason, "{verb}");
                            }
                            self.obs.note(now.wall_ms, what);
                        }
                        Action::Announce(s) => {
                            self.obs.metrics.announced();
                            self.announced.insert(s.clone());
                        }
                        Action::Renew(_) => {}
                    }
                    done.push(a.clone());
                }
                Err(e) => tracing::warn!(action = %a, "failed: {e}"),
            }
        }
        let installed = installed_after(&done, &self.installed);
        if installed != self.installed || ahead != installed {
            self.dir.save_json(INSTALLED_FILE, &installed)?;
        }
        self.installed = installed;
        self.wire_settled();
        self.engine.confirm_installed(now, &self.installed);
        // What still waits on the wire keeps its previous placement and the
        // takeover it came from: the reason it is acquired later.
        let mut next = alloc;
        for s in &self.wire.base {
            if let Some(p) = self.last_alloc.placements.get(s) {
                next.placements.insert(s.clone(), p.clone());
            }
        }
        let pending_from: BTreeSet<NodeId> = self
            .wire
            .base
            .iter()
            .filter_map(|s| next.placements.get(s).map(|p| p.holder.clone()))
            .collect();
        self.last_alloc = next;
        self.took_over.retain(|h| pending_from.contains(h));
        self.refresh_metrics();
        Ok(())
    }

    /// Renews the kernel lease of every address this node installed and
    /// still serves (as holder, or as giver in a hand-off), without reading
    /// the interfaces back: with hundreds of addresses, a dump and a plan on
    /// every renewal would cost more than the renewals. A renewal re-creates
    /// an address that vanished; the watch reports the removal, and the
    /// reconcile that follows announces it again. Returns whether every
    /// renewal succeeded.
    async fn renew<P: Platform>(&mut self, platform: &mut P) -> bool {
        let me = &self.engine.id().node;
        let actions = renewals(me, self.engine.allocation(), &self.installed);
        if actions.is_empty() {
            return true;
        }
        let results = platform.execute_plan(&actions).await;
        let mut ok = true;
        for (a, result) in actions.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(action = %a, "failed: {e}");
                ok = false;
            }
        }
        ok
    }

    /// The history entry for an install or remove.
    fn why(&self, action: &Action, alloc: &Allocation) -> What {
        let me = &self.engine.id().node;
        let prev = &self.last_alloc;
        let address = action.spec().clone();
        if let Action::Install(s) = action {
            let reinstall = self.installed.contains(s);
            let reason = reason::acquire(s, me, prev, alloc, &self.took_over, reinstall);
            return What::Acquired { address, reason };
        }
        let assignable = self
            .engine
            .replica()
            .addresses
            .assignable()
            .into_iter()
            .any(|(_, x)| x == address);
        let how = reason::Releasing {
            fenced: self.engine.fenced(),
            assignable,
            leaving: self.engine.leaving(),
        };
        let reason = reason::release(&address, me, prev, alloc, how);
        What::Released { address, reason }
    }

    /// Removes every address this node installed (shutdown).
    async fn release_all<P: Platform>(
        &mut self,
        platform: &mut P,
        wall_ms: u64,
    ) -> Result<(), PersistError> {
        for a in std::mem::take(&mut self.installed) {
            let act = Action::Remove(a.clone());
            if let Err(e) = platform.execute(&act).await {
                tracing::warn!(address = %a, "cannot remove: {e}");
            } else {
                tracing::info!(address = %a, "released");
                let reason = reason::Reason::Shutdown;
                self.obs
                    .note(wall_ms, What::Released { address: a, reason });
            }
        }
        self.dir.save_json(INSTALLED_FILE, &self.installed)
    }

    /// Publishes which interfaces named by the managed addresses this
    /// machine cannot use (missing, down, no carrier): it is not eligible for
    /// the addresses on them, so they move.
    async fn check_links<P: Platform>(&mut self, platform: &mut P, now: Now) {
        let ifaces: BTreeSet<String> = self
            .engine
            .replica()
            .addresses
            .assignable()
            .into_iter()
            .map(|(_, s)| s.iface)
            .collect();
        let trouble: BTreeMap<String, String> =
            platform.unusable(&ifaces).await.into_iter().collect();
        let me = self.engine.id().node.clone();
        let current = self
            .engine
            .replica()
            .nodes
            .get(&me)
            .map(|r| r.iface_trouble.clone())
            .unwrap_or_default();
        if trouble != current {
            if !trouble.is_empty() {
                tracing::warn!(why = ?trouble, "this machine cannot hold the addresses on these interfaces");
            }
            self.engine.update_own(now, |r| r.iface_trouble = trouble);
        }
    }

    /// What should be on disk now.
    fn wanted(&self) -> Persisted {
        let r = self.engine.replica();
        Persisted {
            incarnation: self.saved.incarnation,
            admin: r
                .nodes
                .get(&self.engine.id().node)
                .map_or(Admin::Down, |n| n.admin),
            addresses: r.addresses.clone(),
        }
    }

    fn persist(&mut self) -> Result<(), PersistError> {
        self.save_due = None;
        let wanted = self.wanted();
        if wanted != self.saved {
            store::save(&self.dir, &wanted)?;
            self.saved = wanted;
        }
        Ok(())
    }
}
