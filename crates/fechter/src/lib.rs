//! fechter: the I/O shell around `fechter-core` and `fechter-cluster`: the
//! agent loop, the control socket, and the CLI.

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
