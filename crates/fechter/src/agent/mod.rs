//! The agent: the I/O shell around the cluster [`Node`] (and its engine).
//!
//! One loop owns the node and does every effect it asks for: it reads
//! datagrams, opens them ([`Opener`]: wrong key, tampering and replays are
//! dropped and counted here) and hands the plaintext to the node; it seals
//! and sends what the engine wants sent; it sleeps until the engine's next
//! deadline; it answers control requests; it reconciles the machine's
//! interfaces with the allocation through a [`Platform`]; it persists the
//! address list, this node's admin status and the addresses it installed.
//! The loop is generic over the socket, the clock and the platform, so the
//! same code runs on turmoil's simulated network with a recording platform.
//!
//! ## Where things are
//! - [`run`] (here): starts a `shell::Shell` and hands it to the driver.
//! - `driver.rs`: the loop, what wakes it (tick, control request, machine
//!   event, health check, witness answer, shutdown) and the work that falls
//!   due (links, reconcile, renewal).
//! - `shell.rs`: the state beside the node (the seal, what was saved, the
//!   observer) and the effects: hearing and sending datagrams, the node's
//!   events, reconcile (the node plans, the platform executes), renewal,
//!   shutdown.
//! - `wire.rs`: the wire as the lock on the platform's side (claims read
//!   and the node's answers executed, probes sent, signs of life).
//! - `requests.rs`: the control requests, reload and `status`.
//! - [`reason`] (the node's): why an address was acquired or released;
//!   [`events`]: the history, fed with those reasons, which also fires the
//!   [`hooks`] and counts the [`metrics`].
//! - `settings.rs`: what the agent runs with, and what reloads live.
//! - [`platform`] and [`linux`]: the machine (addresses, links, the wire);
//!   [`net`]: the cluster socket and its inbox; [`clock`]: the two clocks; [`health`]: checks; [`server`]: the
//!   control socket; `crate::files`: the state files, written off the
//!   loop.
//! - [`limits`]: the control socket and `/metrics` each on a thread of its
//!   own, off this loop, with connection caps and deadlines; the open files
//!   limit.
//!
//! [`Node`]: fechter_cluster::node::Node
//! [`Opener`]: fechter_cluster::seal::Opener
//! [`Platform`]: platform::Platform

pub mod child;
pub mod clock;
mod driver;
pub mod events;
pub mod health;
pub mod hooks;
pub mod limits;
pub mod linux;
pub mod metrics;
pub mod net;
pub mod platform;
pub use fechter_cluster::node::reason;
mod requests;
pub mod server;
mod settings;
mod shell;
mod wire;

use std::time::Duration;

use crate::files::persist::PersistError;
use clock::{WallClock, mono, now};
use driver::Driver;
use fechter_cluster::engine::Now;
use net::Datagram;
use platform::Platform;
pub use settings::{Reloader, Settings};
use shell::Shell;
use tokio::sync::{mpsc, oneshot};

use crate::control::{Request, Response};

/// A control request with the channel its answer goes back on.
pub type ControlCall = (Request, oneshot::Sender<Response>);

/// Why the agent stopped with an error. Each names the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("cluster socket: {0}")]
    Net(std::io::Error),
    #[error("cannot start the thread that writes state files: {0}")]
    Disk(std::io::Error),
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

/// Runs the agent until `shutdown` completes, then hands its addresses off
/// (bounded by `drain_timeout`), removes what is left and leaves the cluster.
pub async fn run<S: Datagram, C: WallClock, P: Platform>(
    settings: Settings,
    socket: S,
    clock: C,
    platform: P,
    control: mpsc::Receiver<ControlCall>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let listen = socket.local_addr().map_err(AgentError::Net)?;
    let shell = Shell::start(&settings, listen, now(&clock)).await?;
    let mut driver = Driver::new(settings, socket, clock, platform, control, shell);
    driver.run(shutdown).await?;
    driver.stop().await
}
