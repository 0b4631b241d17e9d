//! The agent's shell around its [`Node`]: the seal, what it saved, the
//! observer (history, hooks, metrics), and the effects the node asks for,
//! done on the platform. The [`super::driver::Driver`] calls it in the
//! order `fechter_cluster::node` documents.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use fechter_cluster::engine::{Engine, EngineConfig, Event, Id, Now};
use fechter_cluster::node::{Node, NodeEvent, Plan, mac_text};
use fechter_cluster::seal::{MAX_PAYLOAD_LEN, Opener, Sealer};
use fechter_cluster::wire_lock::WireLock;
use fechter_core::replica::{Admin, NodeRecord, Replica};
use fechter_core::{AddrSpec, NodeId};

use super::events::{Observer, What};
use super::net::Datagram;
use super::platform::Platform;
use super::wire::{SignsOfLife, standing_text};
use super::{AgentError, INSTALLED_FILE, PERSIST_DELAY, Settings, hooks, metrics, mono};
use crate::files::persist::DataDir;
use crate::files::state::{self, Persisted};
use crate::files::writer::{Saved, Writer};

/// The engine's RNG seed: distinct per node and start, and never from the OS
/// inside the engine itself.
fn rng_seed(node: &NodeId, incarnation: u64) -> u64 {
    node.stable_hash() ^ incarnation.rotate_left(17)
}

/// What the node's events ask of the loop ([`Shell::drain_events`]),
/// besides a plan ([`Node::plan_due`]).
#[derive(Debug, Default)]
pub(super) struct Drained {
    /// This node joined the cluster (systemd readiness).
    pub(super) joined: bool,
    /// The engine wants a witness probe.
    pub(super) probe: bool,
}

pub(super) struct Shell {
    /// The node, sans I/O: engine, installed and announced addresses, the
    /// wire lock, the reasons.
    pub(super) node: Node,
    pub(super) sealer: Sealer,
    pub(super) opener: Opener,
    /// The locked data directory (the lock lives as long as the shell).
    _dir: DataDir,
    /// Writes state files off the loop.
    pub(super) disk: Writer,
    /// The writer's outcomes, until the driver takes them.
    pub(super) disk_outcomes: Option<tokio::sync::mpsc::UnboundedReceiver<Saved>>,
    pub(super) saved: Persisted,
    pub(super) save_due: Option<Instant>,
    /// History, hooks and metrics.
    pub(super) obs: Observer,
    /// Whom to ask for a sign of life while a majority is missing.
    pub(super) signs: SignsOfLife,
    /// Another machine seen running with this node's id, and when
    /// (status names it while it is reported again within 30 s).
    pub(super) duplicate: Option<(SocketAddr, Instant)>,
    /// What events drained outside the loop's own drain (a reconcile's)
    /// asked for: handed over by the next [`Shell::drain_events`].
    carry: Drained,
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
        let mut saved = state::load(&dir)?;
        let installed: BTreeSet<AddrSpec> = dir.load_json(INSTALLED_FILE)?.unwrap_or_default();
        // A new incarnation on every start, higher than any before.
        saved.incarnation = (saved.incarnation + 1).max(now.wall_ms);
        state::save(&dir, &saved)?;
        let (disk, disk_outcomes) =
            Writer::spawn(dir.path().to_owned()).map_err(AgentError::Disk)?;

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
        let lock = WireLock::new(
            settings.timings.probe_window,
            settings.timings.heartbeat_interval,
        );
        let mut shell = Shell {
            node: Node::new(Engine::new(cfg, replica, seed, now), installed, lock),
            sealer: Sealer::new(&settings.key, &settings.node_id, saved.incarnation),
            opener: Opener::new(&settings.key),
            _dir: dir,
            disk,
            disk_outcomes: Some(disk_outcomes),
            saved,
            save_due: None,
            obs,
            signs: SignsOfLife::new(listen.ip(), None),
            duplicate: None,
            carry: Drained::default(),
        };
        shell.node.set_allowed(settings.allowed.clone());
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
                Ok(opened) => self.node.handle_datagram(now, from, &opened.payload),
                Err(reason) => tracing::debug!(%from, ?reason, "dropped a cluster datagram"),
            },
            // ICMP errors surface here on Linux (peer port closed): not fatal.
            Err(e) => tracing::debug!("recv: {e}"),
        }
    }

    pub(super) async fn flush<S: Datagram>(&mut self, socket: &S) {
        while let Some(t) = self.node.poll_transmit() {
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

    /// Logs the node's events, notes them in the history and schedules
    /// persistence; returns what the loop must act on.
    pub(super) fn drain_events(&mut self, now: Now) -> Drained {
        let mut out = std::mem::take(&mut self.carry);
        let mut any = false;
        while let Some(ev) = self.node.poll_event() {
            any = true;
            match ev {
                NodeEvent::Engine(ev) => self.engine_event(now, ev, &mut out),
                NodeEvent::Acquired { address, reason } => {
                    tracing::info!(%address, %reason, "acquired");
                    self.obs
                        .note(now.wall_ms, What::Acquired { address, reason });
                }
                NodeEvent::Released { address, reason } => {
                    tracing::info!(%address, %reason, "released");
                    self.obs
                        .note(now.wall_ms, What::Released { address, reason });
                }
                NodeEvent::Announced(_) => self.obs.metrics.announced(),
                NodeEvent::Conflict {
                    address,
                    mac,
                    kept,
                    standing,
                } => {
                    let mac = mac_text(mac);
                    if kept {
                        tracing::warn!(%address, %mac, "another machine answers for an address this node holds: defending it");
                    } else {
                        tracing::warn!(%address, %mac, "another machine answers for an address this node holds without a majority: yielded it");
                    }
                    let standing = standing_text(standing).to_string();
                    let what = What::Conflict {
                        address,
                        mac,
                        kept,
                        standing,
                    };
                    self.obs.note(now.wall_ms, what);
                }
            }
        }
        if any {
            self.refresh_metrics();
        }
        out
    }

    /// One of the engine's events: logged, noted, and what it asks of the
    /// loop.
    fn engine_event(&mut self, now: Now, ev: Event, out: &mut Drained) {
        let t = now.wall_ms;
        match ev {
            Event::MemberUp(id) => {
                tracing::info!(member = %id.node, addr = %id.addr, "member up");
                self.obs.note(t, What::MemberUp { member: id.node });
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
                self.obs.note(t, What::TookOver { holder, silence_ms });
            }
            Event::Published(meta) => {
                tracing::debug!(
                    term = meta.term.0,
                    version = meta.version,
                    "published a table"
                )
            }
            Event::AllocationChanged => {}
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
            }
            Event::DuplicateId { addr } => {
                tracing::error!(
                    %addr,
                    "another machine runs with this node's id: give each machine its own node_id (its heartbeats are ignored)"
                );
                self.duplicate = Some((addr, now.at));
                let addr = addr.to_string();
                self.obs.note(t, What::DuplicateId { addr });
            }
            Event::Unfenced => {
                tracing::info!("quorum regained");
                self.obs.note(t, What::QuorumRegained);
            }
            Event::StateChanged => {
                if self.save_due.is_none() && self.wanted() != self.saved {
                    self.save_due = Some(mono() + PERSIST_DELAY);
                }
            }
        }
    }

    pub(super) fn refresh_metrics(&self) {
        let held = self.node.installed().len();
        self.obs
            .metrics
            .refresh(self.node.engine(), &self.opener, held);
        self.obs.metrics.waiting(self.node.waiting());
        self.obs.metrics.disk_write_errors(self.disk.errors());
    }

    /// Whether this node holds nothing any more (after a drain request), or
    /// nobody else can take what it holds.
    pub(super) fn drained(&self) -> bool {
        let engine = self.node.engine();
        let me = &engine.id().node;
        let holds = engine
            .allocation()
            .placements
            .values()
            .any(|p| p.holder == *me || p.handoff_from.as_ref() == Some(me));
        !holds || engine.eligibility().eligible.is_empty()
    }

    /// Brings the interfaces in line with the allocation: the node plans
    /// against what the interfaces hold now, the plan is recorded ahead and
    /// executed, and the node is told what it did.
    pub(super) async fn reconcile<P: Platform>(&mut self, platform: &mut P, now: Now) {
        let observed = match platform.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(
                    "cannot read the interfaces' addresses (tried again at the next change or resync): {e}"
                );
                self.node.plan_postponed();
                return;
            }
        };
        let plan = self.node.plan(now, observed);
        self.execute(platform, now, plan).await;
        self.refresh_metrics();
    }

    /// Runs a plan: records ahead what it installs, executes it, records
    /// what is installed after, and logs and notes what the node reports.
    /// (The records go through the writer: a lost one costs at most an
    /// address left to its kernel lease.)
    async fn execute<P: Platform>(&mut self, platform: &mut P, now: Now, plan: Plan) {
        if let Some(ahead) = &plan.ahead {
            self.record_installed(ahead);
        }
        let results = platform.execute_plan(&plan.actions).await;
        let ok: Vec<bool> = plan
            .actions
            .iter()
            .zip(results)
            .map(|(a, r)| {
                r.inspect_err(|e| tracing::warn!(action = %a, "failed: {e}"))
                    .is_ok()
            })
            .collect();
        if let Some(installed) = self.node.executed(now, plan, &ok) {
            self.record_installed(&installed);
        }
        let drained = self.drain_events(now);
        self.carry.joined |= drained.joined;
        self.carry.probe |= drained.probe;
    }

    /// Records what this node installed (through the writer).
    pub(super) fn record_installed(&mut self, installed: &BTreeSet<AddrSpec>) {
        self.disk.write_json(INSTALLED_FILE, installed);
    }

    /// Renews the kernel lease of every address this node installed and
    /// still serves (as holder, or as giver in a hand-off), without reading
    /// the interfaces back: with hundreds of addresses, a dump and a plan on
    /// every renewal would cost more than the renewals. A renewal re-creates
    /// an address that vanished; the watch reports the removal, and the
    /// reconcile that follows announces it again. Returns whether every
    /// renewal succeeded.
    pub(super) async fn renew<P: Platform>(&mut self, platform: &mut P) -> bool {
        let actions = self.node.renewals();
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

    /// Removes every address this node installed (shutdown).
    pub(super) async fn release_all<P: Platform>(&mut self, platform: &mut P, now: Now) {
        let plan = self.node.release_all();
        let mut ok = Vec::new();
        for a in &plan.actions {
            let r = platform.execute(a).await;
            if let Err(e) = &r {
                tracing::warn!(address = %a.spec(), "cannot remove: {e}");
            }
            ok.push(r.is_ok());
        }
        self.node.executed(now, plan, &ok);
        self.drain_events(now);
        let installed = self.node.installed().clone();
        self.record_installed(&installed);
    }

    /// Publishes which interfaces named by the managed addresses this
    /// machine cannot use (missing, down, no carrier): it is not eligible for
    /// the addresses on them, so they move.
    pub(super) async fn check_links<P: Platform>(&mut self, platform: &mut P, now: Now) {
        let ifaces: BTreeSet<String> = self
            .node
            .engine()
            .replica()
            .addresses
            .assignable()
            .into_iter()
            .map(|(_, s)| s.iface)
            .collect();
        let mut trouble: BTreeMap<String, String> =
            platform.unusable(&ifaces).await.into_iter().collect();
        // An interface this machine may not use is as unusable as a missing
        // one: the leader places its addresses elsewhere.
        let allowed = &self.node.allowed().interfaces;
        for i in ifaces
            .iter()
            .filter(|i| !allowed.is_empty() && !allowed.contains(i))
        {
            trouble.insert(i.clone(), "not in allowed_interfaces".into());
        }
        let me = self.node.me().clone();
        let current = self
            .node
            .engine()
            .replica()
            .nodes
            .get(&me)
            .map(|r| r.iface_trouble.clone())
            .unwrap_or_default();
        if trouble != current {
            if !trouble.is_empty() {
                tracing::warn!(why = ?trouble, "this machine cannot hold the addresses on these interfaces");
            }
            self.node
                .engine_mut()
                .update_own(now, |r| r.iface_trouble = trouble);
        }
    }

    /// What should be on disk now.
    pub(super) fn wanted(&self) -> Persisted {
        let r = self.node.engine().replica();
        Persisted {
            incarnation: self.saved.incarnation,
            admin: r.nodes.get(self.node.me()).map_or(Admin::Down, |n| n.admin),
            addresses: r.addresses.clone(),
        }
    }

    /// Queues the state file when it differs from what was last queued;
    /// returns the write's sequence number (its outcome comes back to the
    /// driver), or `None` when nothing changed.
    pub(super) fn persist(&mut self) -> Option<u64> {
        self.save_due = None;
        let wanted = self.wanted();
        if wanted == self.saved {
            return None;
        }
        let seq = self.disk.write_json(state::STATE_FILE, &wanted)?;
        self.saved = wanted;
        Some(seq)
    }
}
