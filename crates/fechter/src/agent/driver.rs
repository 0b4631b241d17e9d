//! The agent's loop: what wakes it, and what it does then.
//!
//! [`Driver`] owns the [`Shell`] and everything the loop waits on (the
//! socket, the control channel, the machine's events, the health checks,
//! the witness probes, the shutdown signal). Each pass does the work that
//! fell due ([`Due`]: links, a reconcile, a renewal), flushes what the
//! engine wants sent, and sleeps until the next wake-up ([`Wake`]), which
//! it then handles. The loop wakes on the engine's heartbeat tick and on
//! local events, not on every datagram: datagrams wait in the socket until
//! the tick, at most one heartbeat interval.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::clock::WallClock;
use super::events::What;
use super::net::Datagram;
use super::platform::{Platform, PlatformEvent};
use super::requests::reload;
use super::shell::Shell;
use super::{
    AgentError, ControlCall, QUEUED_BEFORE_TIMERS, RESYNC_EVERY, Settings, health, mono, now,
};
use crate::control::{Request, Response};
use crate::files::state::STATE_FILE;
use crate::files::writer::{RETRY, Saved};

/// How long a stopping agent waits for its last state files.
const STOP_WRITES: Duration = Duration::from_secs(5);

/// Work that fell due and runs at the top of the next pass.
#[derive(Debug)]
struct Due {
    /// Read which interfaces can hold addresses.
    links: bool,
    /// Bring the interfaces in line with the allocation (renews too).
    reconcile: bool,
    /// Renew the kernel lease of what this node installed.
    renew: bool,
    /// The last tick left datagrams in the socket: read on without sleeping.
    backlog: bool,
    next_renew: Instant,
    next_resync: Instant,
    last_refresh: Instant,
    /// Shutting down: stop handing off at this instant.
    draining: Option<Instant>,
    /// systemd readiness is due by then (if not sent yet).
    ready_by: Option<Instant>,
}

/// What woke the loop.
enum Wake {
    /// A deadline: the heartbeat tick or one of [`Due`]'s timers.
    Tick,
    Control(ControlCall),
    Machine(Option<PlatformEvent>),
    Health(Option<(String, bool)>),
    /// A witness probe's answer: when it was sent, whether it was answered.
    Witness(Instant, bool),
    /// A state file was written (or could not be).
    Saved(Saved),
    Shutdown,
}

pub(super) struct Driver<S, C, P> {
    pub(super) settings: Settings,
    pub(super) socket: S,
    pub(super) clock: C,
    pub(super) platform: P,
    pub(super) control: mpsc::Receiver<ControlCall>,
    pub(super) shell: Shell,
    machine: Option<mpsc::Receiver<PlatformEvent>>,
    health: Option<mpsc::Receiver<(String, bool)>>,
    /// The health checks failing now.
    failing: BTreeSet<String>,
    /// The gateway, which doubles as the two-node tie-breaker (witness).
    gateway: Option<IpAddr>,
    witness_tx: mpsc::Sender<(Instant, bool)>,
    witness_rx: mpsc::Receiver<(Instant, bool)>,
    buf: Vec<u8>,
    due: Due,
    /// The writer's outcomes.
    disk: mpsc::UnboundedReceiver<Saved>,
    /// Commands answered once the state file that holds them is written:
    /// (write, where the answer goes, the answer).
    unsaved: Vec<(u64, oneshot::Sender<Response>, Response)>,
}

impl<S: Datagram, C: WallClock, P: Platform> Driver<S, C, P> {
    pub(super) fn new(
        settings: Settings,
        socket: S,
        clock: C,
        mut platform: P,
        control: mpsc::Receiver<ControlCall>,
        mut shell: Shell,
    ) -> Self {
        let machine = platform.events();
        let health = (!settings.checks.is_empty()).then(|| health::spawn(settings.checks.clone()));
        let gateway = settings.checks.iter().find_map(|c| match c.probe {
            health::Probe::Gateway(ip) => Some(ip),
            health::Probe::Script(_) => None,
        });
        if gateway.is_some() {
            shell.node.engine_mut().enable_witness();
        }
        if let Some(IpAddr::V4(gw)) = gateway {
            shell.signs.gateway_v4 = Some(gw);
        }
        let (witness_tx, witness_rx) = mpsc::channel(4);
        let disk = shell
            .disk_outcomes
            .take()
            .expect("a new shell has the writer's outcomes");
        // systemd readiness: once joined, or at once for a node with no
        // seed (it forms the cluster), or after a while alone (a cold start
        // of the whole cluster must not fail the boot).
        let ready_by = Some(if settings.seeds.is_empty() {
            mono()
        } else {
            mono() + Duration::from_secs(10)
        });
        let due = Due {
            links: true,
            reconcile: true,
            renew: false,
            backlog: false,
            next_renew: mono() + settings.renew_every,
            next_resync: mono() + RESYNC_EVERY,
            last_refresh: mono(),
            draining: None,
            ready_by,
        };
        Driver {
            settings,
            socket,
            clock,
            platform,
            control,
            shell,
            machine,
            health,
            failing: BTreeSet::new(),
            gateway,
            witness_tx,
            witness_rx,
            buf: vec![0u8; 2048],
            due,
            disk,
            unsaved: Vec::new(),
        }
    }

    /// Runs until `shutdown` completes and the drain is over.
    pub(super) async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        tokio::pin!(shutdown);
        loop {
            self.do_due().await?;
            if let Some(deadline) = self.due.draining
                && (self.shell.drained() || mono() >= deadline)
            {
                return Ok(());
            }
            if self.due.ready_by.is_some_and(|t| mono() >= t) {
                self.due.ready_by = None;
                crate::systemd::ready("running; no peer answered yet");
            }
            let wake = self.wait(&mut shutdown).await;
            self.handle(wake).await?;
            self.after_wake();
        }
    }

    /// Links, reconcile, renewal as they fell due; then sends what the
    /// engine queued.
    async fn do_due(&mut self) -> Result<(), AgentError> {
        let now = now(&self.clock);
        if std::mem::take(&mut self.due.links) {
            self.shell.check_links(&mut self.platform, now).await;
        }
        if std::mem::take(&mut self.due.reconcile) {
            // (A reconcile renews what it keeps.)
            self.due.renew = false;
            self.shell.reconcile(&mut self.platform, now).await;
        }
        if std::mem::take(&mut self.due.renew) {
            // A failed renewal (an interface gone?) is looked at by a
            // reconcile at once.
            self.due.reconcile = !self.shell.renew(&mut self.platform).await;
        }
        self.shell.flush(&self.socket).await;
        Ok(())
    }

    /// Sleeps until the next wake-up. Paced: the engine always has a tick;
    /// the other deadlines are a fallback.
    async fn wait(&mut self, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> Wake {
        let deadline = if self.due.backlog {
            Some(mono())
        } else {
            let engine = self.shell.node.engine();
            engine.poll_tick().or_else(|| {
                [
                    engine.poll_timeout(),
                    self.shell.save_due,
                    Some(self.due.next_renew),
                    Some(self.due.next_resync),
                    self.due.draining,
                    self.due.ready_by,
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
        let (machine, health) = (&mut self.machine, &mut self.health);
        let machine = async move {
            match machine.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let health = async move {
            match health.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => Wake::Tick,
            Some(call) = self.control.recv() => Wake::Control(call),
            ev = machine => Wake::Machine(ev),
            change = health => Wake::Health(change),
            Some((sent, ok)) = self.witness_rx.recv() => Wake::Witness(sent, ok),
            Some(saved) = self.disk.recv() => Wake::Saved(saved),
            () = shutdown.as_mut(), if self.due.draining.is_none() => Wake::Shutdown,
        }
    }

    async fn handle(&mut self, wake: Wake) -> Result<(), AgentError> {
        match wake {
            Wake::Tick => self.on_tick().await?,
            Wake::Control((req, reply)) => self.on_control(req, reply),
            Wake::Saved(saved) => self.on_saved(saved),
            Wake::Machine(ev) => self.on_machine(ev),
            Wake::Health(Some((name, passing))) => {
                let t = self.clock.wall_ms();
                let check = name.clone();
                self.shell.obs.note(t, What::Health { check, passing });
                let changed = if passing {
                    self.failing.remove(&name)
                } else {
                    self.failing.insert(name)
                };
                if changed {
                    let reasons: Vec<String> = self.failing.iter().cloned().collect();
                    let now = now(&self.clock);
                    let engine = self.shell.node.engine_mut();
                    engine.update_own(now, |r| r.unhealthy = reasons);
                }
            }
            Wake::Health(None) => self.health = None,
            Wake::Witness(sent, ok) => self.shell.node.engine_mut().witness_answer(sent, ok),
            Wake::Shutdown => {
                tracing::info!("shutting down: handing addresses off first");
                crate::systemd::stopping("handing addresses off");
                self.shell.obs.note(self.clock.wall_ms(), What::Stopping);
                self.due.draining = Some(mono() + self.settings.drain_timeout);
                let now = now(&self.clock);
                let engine = self.shell.node.engine_mut();
                engine.update_own(now, |r| r.leaving = true);
            }
        }
        Ok(())
    }

    /// The heartbeat tick (or another timer): hear what queued, let the
    /// engine judge, persist, renew, resync and refresh as they fall due.
    async fn on_tick(&mut self) -> Result<(), AgentError> {
        // Datagrams that queued since the last tick (or while this process
        // did not run) are heard before the timers judge the peers'
        // silence: bounded, so that a flood cannot starve them; what is
        // left is read at once after.
        let mut heard = 0;
        while heard < QUEUED_BEFORE_TIMERS {
            let Some(r) = self.socket.try_recv_from(&mut self.buf) else {
                break;
            };
            self.shell.hear(now(&self.clock), r, &self.buf);
            heard += 1;
        }
        self.due.backlog = heard == QUEUED_BEFORE_TIMERS;
        let (shell, platform) = (&mut self.shell, &mut self.platform);
        shell.wire_before(platform, now(&self.clock)).await;
        shell.node.handle_timeout(now(&self.clock));
        shell.wire_after(platform, now(&self.clock));
        let t = mono();
        if self.shell.save_due.is_some_and(|d| d <= t) {
            self.shell.persist();
        }
        if self.due.next_renew <= t {
            self.due.next_renew = t + self.settings.renew_every;
            self.shell.refresh_metrics();
            self.due.renew = true;
        }
        if self.due.next_resync <= t {
            self.due.next_resync = t + RESYNC_EVERY;
            self.due.reconcile = true;
            self.due.links = true;
        }
        if let Some(every) = self.settings.announce_refresh
            && t.saturating_duration_since(self.due.last_refresh) >= every
        {
            // Periodic refresh: forget what was announced, so the next
            // reconcile announces every held address again.
            self.due.last_refresh = t;
            self.shell.node.forget_announced();
        }
        Ok(())
    }

    /// A control request. A command that changed something is answered
    /// once the state file that holds it is on disk ([`Driver::on_saved`]).
    fn on_control(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        let command = matches!(
            req,
            Request::AddAddress { .. }
                | Request::RemoveAddress { .. }
                | Request::Up
                | Request::Down
                | Request::Forget { .. }
        );
        let resp = match req {
            Request::Reload => reload(&mut self.settings, &mut self.shell),
            req => self.shell.handle_request(now(&self.clock), req),
        };
        self.due.links = true;
        let write = match (&resp, command) {
            (Response::Ok { .. }, true) => self.shell.persist(),
            _ => None,
        };
        match write {
            Some(seq) => self.unsaved.push((seq, reply, resp)),
            None => {
                let _ = reply.send(resp);
            }
        }
    }

    /// A state file was written, or could not be: the commands it holds
    /// are answered (a failure says so; the writer keeps retrying).
    fn on_saved(&mut self, saved: Saved) {
        self.shell.refresh_metrics();
        if saved.file != STATE_FILE {
            return;
        }
        let (done, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unsaved)
            .into_iter()
            .partition(|(seq, _, _)| *seq <= saved.seq);
        self.unsaved = rest;
        for (_, reply, resp) in done {
            let resp = match &saved.result {
                Ok(()) => resp,
                Err(e) => Response::Error {
                    error: format!(
                        "the change was made but could not be saved yet: {e}; fechter retries every {RETRY:?}"
                    ),
                },
            };
            let _ = reply.send(resp);
        }
    }

    fn on_machine(&mut self, ev: Option<PlatformEvent>) {
        match ev {
            Some(PlatformEvent::AddressRemoved(a)) => {
                if self.shell.node.vanished(&a) {
                    tracing::warn!(address = %a, "an address this node holds was removed behind its back; putting it back");
                }
            }
            Some(PlatformEvent::Link { iface, usable }) => {
                tracing::info!(%iface, usable, "link changed");
                self.due.links = true;
                self.due.reconcile = true;
            }
            Some(PlatformEvent::Resync) => self.due.reconcile = true,
            None => self.machine = None,
        }
    }

    /// What the engine reported while handling the wake-up.
    fn after_wake(&mut self) {
        let drained = self.shell.drain_events(now(&self.clock));
        if let (true, Some(gw)) = (drained.probe, self.gateway) {
            let tx = self.witness_tx.clone();
            let timeout = self.settings.timings.fence_after;
            tokio::spawn(async move {
                let sent = mono();
                let ok = health::ping_once(gw, timeout).await;
                let _ = tx.send((sent, ok)).await;
            });
        }
        self.due.reconcile |= self.shell.node.plan_due();
        if drained.joined && self.due.ready_by.take().is_some() {
            crate::systemd::ready("running; joined the cluster");
        }
    }

    /// Removes whatever is left (drain timed out, or nobody to hand to),
    /// leaves the cluster, persists, and lets the last hooks finish.
    pub(super) async fn stop(mut self) -> Result<(), AgentError> {
        self.shell
            .release_all(&mut self.platform, now(&self.clock))
            .await;
        tracing::info!("leaving the cluster");
        self.shell.node.engine_mut().leave(now(&self.clock));
        self.shell.flush(&self.socket).await;
        self.shell.persist();
        if !self.shell.disk.finish(STOP_WRITES) {
            tracing::warn!("state files not all written within {STOP_WRITES:?}: stopping anyway");
        }
        // Commands still waiting for their write are answered now.
        while let Ok(saved) = self.disk.try_recv() {
            self.on_saved(saved);
        }
        for (_, reply, _) in self.unsaved.drain(..) {
            let _ = reply.send(Response::Error {
                error: "the agent stopped before the change was saved".into(),
            });
        }
        // The last hooks (releases) may finish, within their timeout.
        let limit = self.settings.notify.timeout + Duration::from_secs(1);
        self.shell.obs.hooks.finish(limit).await;
        Ok(())
    }
}
