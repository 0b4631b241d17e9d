//! A network-namespace lab: N nodes and a client on one virtual switch.
//!
//! Used by the end-to-end tests and by `fechter demo`. [`Lab::new`] builds,
//! with a prefix unique to this run (`fch` + 5 hex digits, e.g. `fch3fa01`):
//!
//! ```text
//!  PREFIX-sw   bridge PREFIXbr, ports PREFIXp0 .. PREFIXp{N-1}, PREFIXpc
//!  PREFIX-n0   eth0 198.18.0.10/24  2001:db8::10/64  (veth to PREFIXp0)
//!  PREFIX-n1   eth0 198.18.0.11/24  2001:db8::11/64
//!  ...
//!  PREFIX-c    eth0 198.18.0.100/24 2001:db8::100/64 (the client)
//! ```
//!
//! Nodes are numbered from 0. Nothing is created in the caller's own network
//! namespace: every veth is created inside a lab namespace with its peer
//! placed directly in the switch namespace. All links (and `lo`) are up. The
//! addresses are TEST-NET benchmarking (198.18.0.0/15) and documentation
//! (2001:db8::/32) ranges; IPv6 addresses are `nodad` so they work at once.
//!
//! Dropping the lab deletes its namespaces (the veths go with them), also
//! while unwinding from a panic. The lab forks `ip` (iproute2) and `ping`
//! (iputils-ping); the fechter agent itself never does.
//!
//! The module is split by concern: this file holds the errors, the [`Lab`]
//! and its names, addresses and queries; `run.rs` the commands (`ip`,
//! [`lab_available`], [`guard_child`], [`poll`], [`run_in_ns`],
//! [`block_on_in_ns`]); `topology.rs` [`Lab::new`] and the link faults
//! ([`Lab::set_link`], [`Lab::set_carrier`], [`Lab::detach`],
//! [`Lab::reattach`]).
//!
//! [`Pinger`] (in `ping.rs`) is the client that pings an address in a lab
//! for the demo, the end-to-end tests and the failover benchmark; it is
//! built on [`LineReader`], a child whose output a thread reads, which is
//! killed and reaped on drop.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::Duration;

mod ping;
mod run;
mod topology;

pub use ping::{Echo, LineReader, PingOptions, PingReport, Pinger, interrupt_and_reap, unix_now};
pub use run::{
    block_on_in_ns, enter_netns, guard_child, lab_available, netns_list, poll, require_lab,
    run_in_ns,
};
use run::{check, command_line, find_in_path, ip, run};
#[cfg(test)]
use topology::unique_prefix;

/// Most nodes a lab can have (node addresses .10 to .99; .100 is the client).
pub const MAX_NODES: usize = 90;

/// Why the lab could not be built or used. Each message says why and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Not running as root.
    #[error(
        "not root (euid {euid}): the lab creates network namespaces, which needs root; run the tests as root (e.g. `sudo -E cargo test`)"
    )]
    NotRoot {
        /// The effective user id.
        euid: u32,
    },

    /// `ip netns` cannot be used.
    #[error(
        "`ip netns` is unavailable: {detail}; install iproute2 (`apt-get install iproute2`) and run on Linux with network namespaces (CONFIG_NET_NS)"
    )]
    NetnsUnavailable {
        /// What failed.
        detail: String,
    },

    /// `ping` is not installed.
    #[error(
        "`ping` not found in PATH or /usr/bin, /bin: the lab pings from inside its namespaces; install it with `apt-get install iputils-ping`"
    )]
    PingMissing,

    /// Too many nodes asked for.
    #[error("a lab has at most {MAX_NODES} nodes (addresses 198.18.0.10 to .99), not {nodes}")]
    TooManyNodes {
        /// The number asked for.
        nodes: usize,
    },

    /// A node index out of range.
    #[error("node {node} does not exist: this lab has nodes 0 to {} ({nodes} nodes)", nodes.saturating_sub(1))]
    NoSuchNode {
        /// The index asked for.
        node: usize,
        /// How many nodes the lab has.
        nodes: usize,
    },

    /// A command could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A command failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// Entering a namespace failed.
    #[error("cannot enter network namespace {ns:?}: {source}")]
    Setns {
        /// The namespace name.
        ns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Output of a command could not be understood.
    #[error("cannot read {what} from `{output}`")]
    Parse {
        /// What was looked for.
        what: String,
        /// The output.
        output: String,
    },
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC address as `02:fc:00:00:00:0a`.
pub fn format_mac(mac: [u8; 6]) -> String {
    fechter_core::claim::mac_text(mac)
}

/// A running lab. See the [module docs](self).
pub struct Lab {
    prefix: String,
    nodes: usize,
    /// Namespaces created so far, deleted on drop.
    namespaces: Vec<String>,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("nodes", &self.nodes)
            .finish()
    }
}

impl Lab {
    fn check_node(&self, node: usize) -> Result<(), LabError> {
        if node >= self.nodes {
            return Err(LabError::NoSuchNode {
                node,
                nodes: self.nodes,
            });
        }
        Ok(())
    }

    /// The prefix unique to this lab, e.g. `fch3fa01`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many nodes the lab has.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Namespace of node `node` (0-based): `PREFIX-nK`.
    pub fn ns_name(&self, node: usize) -> String {
        format!("{}-n{node}", self.prefix)
    }

    /// Namespace of the client: `PREFIX-c`.
    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    /// Namespace of the switch: `PREFIX-sw`.
    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The bridge in the switch namespace.
    pub fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// The switch-side port of node `node`.
    fn port(&self, node: usize) -> String {
        format!("{}p{node}", self.prefix)
    }

    fn client_port(&self) -> String {
        format!("{}pc", self.prefix)
    }

    /// IPv4 address of node `node`: 198.18.0.(10+K).
    pub fn node_ipv4(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 10 + node as u8)
    }

    /// IPv6 address of node `node`: 2001:db8::(10+K), digits read as hex.
    pub fn node_ipv6(&self, node: usize) -> Ipv6Addr {
        format!("2001:db8::{}", 10 + node)
            .parse()
            .expect("2001:db8::NN is an IPv6 address")
    }

    /// The client's IPv4 address, 198.18.0.100.
    pub fn client_ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, 100)
    }

    /// The client's IPv6 address, 2001:db8::100.
    pub fn client_ipv6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100)
    }

    /// A `Command` running `program` inside namespace `ns` (`ip netns exec`).
    pub fn command(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }

    /// Runs `args` (program first) inside namespace `ns`; returns stdout.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let (program, rest) = args.split_first().ok_or_else(|| LabError::Parse {
            what: "a program to run".into(),
            output: String::new(),
        })?;
        run(self.command(ns, program).args(rest))
    }

    /// Runs `ip -n NS ARGS`; returns stdout.
    pub fn ip(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        ip(&all)
    }
    /// The MAC address namespace `ns` has in its neighbour cache for `ip`,
    /// or `None` if it has no entry with an address (none, INCOMPLETE, FAILED).
    pub fn neighbour_mac(&self, ns: &str, ip: IpAddr) -> Result<Option<[u8; 6]>, LabError> {
        let out = self.ip(ns, &["neigh", "show", "to", &ip.to_string(), "dev", "eth0"])?;
        Ok(out.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "lladdr")?;
            parse_mac(words.next()?)
        }))
    }

    fn mac_in(&self, ns: &str) -> Result<[u8; 6], LabError> {
        let out = self.ip(ns, &["-o", "link", "show", "eth0"])?;
        let mut words = out.split_whitespace();
        words
            .find(|w| *w == "link/ether")
            .and_then(|_| parse_mac(words.next()?))
            .ok_or_else(|| LabError::Parse {
                what: "the MAC address of eth0".into(),
                output: out.clone(),
            })
    }

    /// The MAC address of node `node`'s `eth0`.
    pub fn mac_of(&self, node: usize) -> Result<[u8; 6], LabError> {
        self.check_node(node)?;
        self.mac_in(&self.ns_name(node))
    }

    /// The MAC address of the client's `eth0`.
    pub fn client_mac(&self) -> Result<[u8; 6], LabError> {
        self.mac_in(&self.client_ns())
    }

    /// Whether node `node`'s `eth0` carries `ip` now (`ip -br addr show dev
    /// eth0`).
    pub fn carries(&self, node: usize, ip: IpAddr) -> Result<bool, LabError> {
        self.check_node(node)?;
        let out = self.ip(&self.ns_name(node), &["-br", "addr", "show", "dev", "eth0"])?;
        Ok(out
            .split_whitespace()
            .filter_map(|w| w.split('/').next()?.parse::<IpAddr>().ok())
            .any(|a| a == ip))
    }

    /// Sends one ping from namespace `from_ns` to `ip` and waits up to
    /// `timeout` (whole seconds, at least 1) for the answer: `Ok(true)` if it
    /// came, `Ok(false)` if not.
    pub fn ping_once(
        &self,
        from_ns: &str,
        ip: IpAddr,
        timeout: Duration,
    ) -> Result<bool, LabError> {
        if find_in_path("ping").is_none() {
            return Err(LabError::PingMissing);
        }
        let secs = timeout.as_secs().max(1).to_string();
        let mut cmd = self.command(from_ns, "ping");
        cmd.args(["-n", "-q", "-c", "1", "-W", &secs, &ip.to_string()]);
        let line = command_line(&cmd);
        let out = cmd.output().map_err(|source| LabError::Spawn {
            cmd: line.clone(),
            source,
        })?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => check(line, out).map(|_| false),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Nodes first, the switch last; the veths vanish with their namespaces.
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("fechter lab: cannot delete network namespace {ns}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
