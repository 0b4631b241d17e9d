//! The agent: the I/O shell around the cluster [`Engine`].
//!
//! One loop owns the engine and does every effect it asks for: it reads
//! datagrams, opens them ([`Opener`]: wrong key, tampering and replays are
//! dropped and counted here) and hands the plaintext to the engine; it seals
//! and sends what the engine wants sent; it sleeps until the engine's next
//! deadline; it answers control requests; it persists the address list and
//! this node's admin status. The loop is generic over the socket and the wall
//! clock so that the same code runs on turmoil's simulated network.

pub mod net;
pub mod server;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fechter_cluster::engine::{Engine, EngineConfig, Event, Id, Now, Timings};
use fechter_cluster::persist::{DataDir, PersistError};
use fechter_cluster::seal::{MAX_PAYLOAD_LEN, Opener, Sealer};
use fechter_core::NodeId;
use fechter_core::replica::{Admin, NodeRecord, Replica};
use fechter_core::state::{AddError, AddressState, RemoveError};
use net::{Datagram, WallClock};
use store::Persisted;
use tokio::sync::{mpsc, oneshot};

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
}

/// How long a state change from the cluster may wait before it is written
/// (local commands are written before they are acknowledged).
const PERSIST_DELAY: Duration = Duration::from_millis(100);

/// Runs the agent until `shutdown` completes. Leaves the cluster gracefully
/// on shutdown.
pub async fn run<S: Datagram, C: WallClock>(
    settings: Settings,
    socket: S,
    clock: C,
    mut control: mpsc::Receiver<ControlCall>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let dir = DataDir::open(&settings.data_dir)?;
    let mut saved = store::load(&dir)?;
    let listen = socket.local_addr().map_err(AgentError::Net)?;
    let wall = clock.wall_ms();
    // A new incarnation on every start, higher than any before.
    saved.incarnation = (saved.incarnation + 1).max(wall);
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
    let me = Id {
        node: settings.node_id.clone(),
        addr: listen,
        incarnation: saved.incarnation,
        bump: 0,
    };
    let cfg = EngineConfig {
        me,
        seeds: settings.seeds.clone(),
        timings: settings.timings.clone(),
        max_packet: MAX_PAYLOAD_LEN,
    };
    let now = |clock: &C| Now {
        at: tokio::time::Instant::now().into_std(),
        wall_ms: clock.wall_ms(),
    };
    let seed = rng_seed(&settings.node_id, saved.incarnation);
    let mut shell = Shell {
        engine: Engine::new(cfg, replica, seed, now(&clock)),
        sealer: Sealer::new(&settings.key, &settings.node_id, saved.incarnation),
        opener: Opener::new(&settings.key),
        dir,
        saved,
        save_due: None,
    };
    tracing::info!(node = %settings.node_id, %listen, incarnation = shell.saved.incarnation, "agent started");

    let mut buf = vec![0u8; 2048];
    tokio::pin!(shutdown);
    loop {
        shell.flush(&socket).await;
        let deadline = [shell.engine.poll_timeout(), shell.save_due]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    match shell.opener.open(&buf[..n]) {
                        Ok(opened) => shell.engine.handle_datagram(now(&clock), from, &opened.payload),
                        Err(reason) => tracing::debug!(%from, ?reason, "dropped a cluster datagram"),
                    }
                }
                // ICMP errors surface here on Linux (peer port closed): not fatal.
                Err(e) => tracing::debug!("recv: {e}"),
            },
            () = sleep => {
                shell.engine.handle_timeout(now(&clock));
                if shell.save_due.is_some_and(|d| d <= Instant::now()) {
                    shell.persist()?;
                }
            }
            Some((req, reply)) = control.recv() => {
                let resp = shell.handle_request(now(&clock), req);
                let _ = reply.send(resp);
            }
            () = &mut shutdown => break,
        }
        shell.drain_events();
    }
    tracing::info!("shutting down: leaving the cluster");
    shell.engine.leave(now(&clock));
    shell.flush(&socket).await;
    shell.persist()?;
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
}

impl Shell {
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

    fn drain_events(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::MemberUp(id) => {
                    tracing::info!(member = %id.node, addr = %id.addr, "member up")
                }
                Event::MemberDown(id) => tracing::warn!(member = %id.node, "member down"),
                Event::Joined => tracing::info!("joined the cluster"),
                Event::Isolated => tracing::warn!("no live peer: isolated"),
                Event::StateChanged => {
                    if self.save_due.is_none() && self.wanted() != self.saved {
                        self.save_due = Some(Instant::now() + PERSIST_DELAY);
                    }
                }
            }
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

    fn handle_request(&mut self, now: Now, req: Request) -> Response {
        let result = match req {
            Request::AddAddress { spec } => self.engine.add_address(now, spec.clone()).map_err(|e| match e {
                AddError::AlreadyPresent { existing } if existing == spec => {
                    format!("{spec} is already present; nothing changed")
                }
                AddError::AlreadyPresent { existing } => format!(
                    "{} is already managed as {existing}; remove it first with `fechter remove-address {existing}`",
                    spec.ip
                ),
                AddError::StaleStamp { .. } => format!(
                    "{spec} was changed by another node at the same moment; try again"
                ),
            }),
            Request::RemoveAddress { spec } => {
                let existing = self.engine.replica().addresses.get(&spec.ip).cloned();
                match existing {
                    Some(e) if e.state == AddressState::Assignable && e.spec != spec => Err(format!(
                        "{} is managed as {}; remove it by that name",
                        spec.ip, e.spec
                    )),
                    _ => self.engine.remove_address(now, spec.ip).map_err(|e| match e {
                        RemoveError::UnknownAddress { .. } => format!(
                            "{spec} is not a managed address; `fechter status` lists them"
                        ),
                        RemoveError::StaleStamp { .. } => format!(
                            "{spec} was changed by another node at the same moment; try again"
                        ),
                    }),
                }
            }
            Request::Up => {
                self.engine.update_own(|r| r.admin = Admin::Up);
                Ok(())
            }
            Request::Down => {
                self.engine.update_own(|r| r.admin = Admin::Down);
                Ok(())
            }
            Request::Status => {
                let body = serde_json::to_value(self.status()).expect("serializes");
                return Response::Ok { body };
            }
        };
        // A command is acknowledged only once it is on disk.
        let result = result.and_then(|()| {
            self.persist()
                .map_err(|e| format!("the change was made but could not be saved: {e}"))
        });
        match result {
            Ok(()) => Response::Ok {
                body: serde_json::Value::Null,
            },
            Err(error) => Response::Error { error },
        }
    }

    fn status(&self) -> StatusReport {
        let r = self.engine.replica();
        let me = &self.engine.id().node;
        let alive = |id: &NodeId| id == me || self.engine.members().contains_key(id);
        let members = r
            .nodes
            .values()
            .map(|n| {
                let mut ineligible = Vec::new();
                if n.admin == Admin::Down {
                    ineligible.push("down".to_string());
                }
                ineligible.extend(n.unhealthy.iter().cloned());
                MemberStatus {
                    id: n.id.to_string(),
                    liveness: if alive(&n.id) { "alive" } else { "dead" }.into(),
                    admin: match n.admin {
                        Admin::Up => "up",
                        Admin::Down => "down",
                    }
                    .into(),
                    ineligible,
                }
            })
            .collect();
        let table = r.table.as_ref();
        let addresses = r
            .addresses
            .assignable()
            .into_iter()
            .map(|(_, spec)| {
                let p = table.and_then(|t| t.allocation.placements.get(&spec));
                AddressStatus {
                    spec: spec.to_string(),
                    holder: p.map(|p| p.holder.to_string()),
                    standby: p.and_then(|p| p.standby.as_ref()).map(ToString::to_string),
                }
            })
            .collect();
        let mut dropped = BTreeMap::new();
        let seal = self.opener.drops();
        for reason in fechter_cluster::seal::DropReason::ALL {
            let n = seal.get(reason);
            if n > 0 {
                dropped.insert(reason.as_str().to_string(), n);
            }
        }
        let e = self.engine.drops();
        for (k, v) in [
            ("malformed-packet", e.malformed),
            ("swim-rejected", e.swim_rejected),
        ] {
            if v > 0 {
                dropped.insert(k.to_string(), v);
            }
        }
        StatusReport {
            node: me.to_string(),
            leader: table.map(|t| t.meta.leader.to_string()),
            members,
            addresses,
            notes: Vec::new(),
            dropped,
        }
    }
}
