//! The agent's state beside the engine: what this node installed and
//! announced, what it saved, the wire lock's probes, and the observer
//! (history, hooks, metrics). The [`super::driver::Driver`] calls it; it
//! calls the engine and the platform.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use fechter_cluster::engine::{Engine, EngineConfig, Event, Id, Now};
use fechter_cluster::persist::{DataDir, PersistError};
use fechter_cluster::seal::{MAX_PAYLOAD_LEN, Opener, Sealer};
use fechter_core::alloc::Allocation;
use fechter_core::reconcile::{Action, LocalView, installed_after, keep_announced, plan, renewals};
use fechter_core::replica::{Admin, NodeRecord, Replica};
use fechter_core::{AddrSpec, NodeId};

use super::events::{Observer, What};
use super::net::Datagram;
use super::platform::Platform;
use super::store::{self, Persisted};
use super::wire::WireState;
use super::{AgentError, INSTALLED_FILE, PERSIST_DELAY, Settings, hooks, metrics, mono, reason};

/// The engine's RNG seed: distinct per node and start, and never from the OS
/// inside the engine itself.
fn rng_seed(node: &NodeId, incarnation: u64) -> u64 {
    node.stable_hash() ^ incarnation.rotate_left(17)
}

/// What the engine's events ask of the loop ([`Shell::drain_events`]).
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// The allocation this node acts on changed: reconcile.
    pub(super) realloc: bool,
    /// This node joined the cluster (systemd readiness).
    pub(super) joined: bool,
    /// The engine wants a witness probe.
    pub(super) probe: bool,
}

pub(super) struct Shell {
    pub(super) engine: Engine,
    pub(super) sealer: Sealer,
    pub(super) opener: Opener,
    pub(super) dir: DataDir,
    pub(super) saved: Persisted,
    pub(super) save_due: Option<Instant>,
    /// Addresses this node installed (persisted, written ahead).
    pub(super) installed: BTreeSet<AddrSpec>,
    /// Addresses announced since this process started holding them.
    pub(super) announced: BTreeSet<AddrSpec>,
    /// History, hooks and metrics.
    pub(super) obs: Observer,
    /// The allocation of the last reconcile, and the holders taken over
    /// since: why an address is acquired or released.
    pub(super) last_alloc: Allocation,
    pub(super) took_over: BTreeSet<NodeId>,
    /// The wire as the lock: probes, conflicts, signs of life.
    pub(super) wire: WireState,
}

impl Shell {
    /// Opens the data dir (a new incarnation, higher than any before),
    /// builds the engine from what was saved, starts the metrics server
    /// and the hooks.
    pub(super) async fn start(
        settings: &Settings,
        listen: SocketAddr,
        now: Now,
    ) -> Result<Shell, AgentError> {
        let dir = DataDir::open(&settings.data_dir)?;
        let mut saved = store::load(&dir)?;
        let installed: BTreeSet<AddrSpec> = dir.load_json(INSTALLED_FILE)?.unwrap_or_default();
        // A new incarnation on every start, higher than any before.
        saved.incarnation = (saved.incarnation + 1).max(now.wall_ms);
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
        let seed = rng_seed(&settings.node_id, saved.incarnation);
        let metrics = Arc::new(metrics::Metrics::new());
        metrics::start(settings.metrics_listen, metrics.clone());
        let obs = Observer::new(
            settings.node_id.clone(),
            saved.incarnation,
            hooks::Hooks::start(settings.notify.clone()),
            metrics,
        );
        let mut shell = Shell {
            engine: Engine::new(cfg, replica, seed, now),
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
        shell.obs.note(now.wall_ms, What::Started { incarnation });
        shell.refresh_metrics();
        tracing::info!(node = %settings.node_id, %listen, incarnation = shell.saved.incarnation, "agent started");
        Ok(shell)
    }

    /// One datagram from the cluster socket: opened and handed to the
    /// engine, or dropped (and counted by the opener).
    pub(super) fn hear(&mut self, now: Now, r: std::io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        match r {
            Ok((n, from)) => match self.opener.open(&buf[..n]) {
                Ok(opened) => self.engine.handle_datagram(now, from, &opened.payload),
                Err(reason) => tracing::debug!(%from, ?reason, "dropped a cluster datagram"),
            },
            // ICMP errors surface here on Linux (peer port closed): not fatal.
            Err(e) => tracing::debug!("recv: {e}"),
        }
    }

    pub(super) async fn flush<S: Datagram>(&mut self, socket: &S) {
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

    /// Logs the engine's events, notes them in the history and schedules
    /// persistence; returns what the loop must act on.
    pub(super) fn drain_events(&mut self, now: Now) -> Drained {
        let mut out = Drained::default();
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
                    out.realloc = true;
                }
                Event::MemberDown(id) => {
                    tracing::warn!(member = %id.node, "member down");
                    self.obs.note(t, What::MemberDown { member: id.node });
                }
                Event::Joined => {
                    out.joined = true;
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
                Event::AllocationChanged => out.realloc = true,
                Event::Fenced => {
                    tracing::warn!("no quorum: released every address (self-fenced)");
                    self.obs.note(t, What::QuorumLost);
                }
                Event::ProbeWitness => out.probe = true,
                Event::Minority => {
                    tracing::warn!(
                        "no quorum, but the segment is alive: serving what nobody else on the wire answers for"
                    );
                    self.obs.note(t, What::Minority);
                    out.realloc = true;
                }
                Event::Unfenced => {
                    tracing::info!("quorum regained");
                    self.obs.note(t, What::QuorumRegained);
                    self.announced.clear();
                    out.realloc = true;
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
        out
    }

    pub(super) fn refresh_metrics(&self) {
        let held = self.installed.len();
        self.obs.metrics.refresh(&self.engine, &self.opener, held);
        self.obs.metrics.waiting(self.wire.base.len());
    }

    /// Whether this node holds nothing any more (after a drain request), or
    /// nobody else can take what it holds.
    pub(super) fn drained(&self) -> bool {
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
    pub(super) async fn reconcile<P: Platform>(
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
        self.execute(platform, now, &actions, &alloc).await?;
        self.wire_settled();
        self.engine.confirm_installed(now, &self.installed);
        self.remember(alloc);
        self.refresh_metrics();
        Ok(())
    }

    /// Runs a plan: records ahead what it installs, notes every acquire and
    /// release with its reason, and records what is installed after.
    async fn execute<P: Platform>(
        &mut self,
        platform: &mut P,
        now: Now,
        actions: &[Action],
        alloc: &Allocation,
    ) -> Result<(), PersistError> {
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
        let results = platform.execute_plan(actions).await;
        for (a, result) in actions.iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(action = %a, "failed: {e}");
                continue;
            }
            match a {
                Action::Install(s) | Action::Remove(s) => {
                    let what = self.why(a, alloc);
                    if let What::Acquired { reason, .. } | What::Released { reason, .. } = &what {
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
        let installed = installed_after(&done, &self.installed);
        if installed != self.installed || ahead != installed {
            self.dir.save_json(INSTALLED_FILE, &installed)?;
        }
        self.installed = installed;
        Ok(())
    }

    /// Keeps `alloc` as the allocation the next reasons compare with. What
    /// still waits on the wire keeps its previous placement and the
    /// takeover it came from: the reason it is acquired later.
    fn remember(&mut self, alloc: Allocation) {
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
    }

    /// Renews the kernel lease of every address this node installed and
    /// still serves (as holder, or as giver in a hand-off), without reading
    /// the interfaces back: with hundreds of addresses, a dump and a plan on
    /// every renewal would cost more than the renewals. A renewal re-creates
    /// an address that vanished; the watch reports the removal, and the
    /// reconcile that follows announces it again. Returns whether every
    /// renewal succeeded.
    pub(super) async fn renew<P: Platform>(&mut self, platform: &mut P) -> bool {
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
    pub(super) fn why(&self, action: &Action, alloc: &Allocation) -> What {
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
    pub(super) async fn release_all<P: Platform>(
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
    pub(super) async fn check_links<P: Platform>(&mut self, platform: &mut P, now: Now) {
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
    pub(super) fn wanted(&self) -> Persisted {
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

    pub(super) fn persist(&mut self) -> Result<(), PersistError> {
        self.save_due = None;
        let wanted = self.wanted();
        if wanted != self.saved {
            store::save(&self.dir, &wanted)?;
            self.saved = wanted;
        }
        Ok(())
    }
}
