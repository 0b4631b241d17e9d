//! # fechter: the agent, the control socket and the CLI
//!
//! The I/O shell around `fechter-core` (what is decided) and
//! `fechter-cluster` (one node's protocol, sans I/O), with `fechter-linux`
//! as the machine. `main.rs` parses the command line ([`cli`]); `fechter
//! agent` resolves its settings ([`config`]) and runs [`agent::run`]; the
//! other commands talk to a running agent ([`control`]) or work on their
//! own (e.g. `keygen`, `check-config`, `plan`, `demo`).
//!
//! | module | does |
//! |---|---|
//! | [`cli`] | the command tree (clap derive) |
//! | [`config`] | the agent's settings: flags over the TOML file over defaults; `config/timings.rs` maps `[timings]` onto the engine's `Timings` |
//! | [`agent`] | the loop around the cluster crate's `Node`: datagrams, the seal, the platform (addresses, links, the wire), health checks, control requests, events, hooks and metrics |
//! | [`control`] | the control protocol: one JSON request line and one response line over a Unix socket |
//! | [`files`] | every file the agent and the CLI touch: atomic writes, the locked data dir, the state file, the writer thread, the key file |
//! | [`systemd`] | readiness and status for systemd (`sd_notify`) |
//! | [`realtime`] | `SCHED_RR` and locked memory |
//! | [`plan`] | `fechter plan`: the allocation rules, offline |
//! | [`demo`] | `fechter demo`: a live cluster in a namespace lab |
//! | [`lab_agent`] | agents of this binary in a namespace lab, for the demo, the tests and the benchmark |
//!
//! ## The data path
//! The agent loop (`agent/driver.rs`) wakes on the engine's heartbeat tick
//! and reads the datagrams queued on its UDP socket ([`agent::net`]: a
//! kernel filter, members first, a reader thread under a flood); the
//! shell (`agent/shell.rs`) opens each with the cluster key
//! (`fechter_cluster::seal::Opener`) and hands it to the `Node`. The
//! node's plans are executed by the [`agent::platform::Platform`]
//! ([`agent::linux`] through `fechter_linux`; a recording stand-in in
//! tests); what was installed goes to the writer thread
//! ([`files::writer`]); every event goes to the
//! [`agent::events::Observer`]: the event ring, the [`agent::hooks`] and
//! the [`agent::metrics`]. Operator commands come in on the control socket
//! ([`agent::server`], on a thread of its own started by
//! [`agent::limits`]), reach the loop over a channel and are answered by
//! `agent/requests.rs`.
//!
//! ## Who owns which state
//! - The agent loop, alone on the main thread: the shell (`agent/shell.rs`)
//!   owns the `Node` (and through it the engine and the replica), the
//!   sealer and opener, the locked data dir, what was saved and the
//!   observer; `agent/settings.rs` what the agent runs with.
//! - The writer thread ([`files::writer`]): the newest content of each
//!   file still to be written, and failed writes to retry.
//! - The control and `/metrics` threads ([`agent::limits`]): their
//!   connections only; [`agent::metrics::Metrics`] is shared atomics.
//! - The cluster socket's reader thread (`agent/net/inbox.rs`, only under
//!   a flood) and the loop share the inbox: the members' and strangers'
//!   lanes, behind a lock.
//! - On disk, in the data dir: the state file ([`files::state`]: address
//!   list, admin status, last incarnation), the addresses this node
//!   installed (`installed.json`) and the lock file ([`files::persist`]).

pub mod agent;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod files;
pub mod lab_agent;
pub mod plan;
pub mod realtime;
pub mod systemd;
