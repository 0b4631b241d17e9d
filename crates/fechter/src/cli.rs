//! The command tree (clap derive). Every command of the seed is here:
//! `agent`, `add-address`, `remove-address`, `up`, `down`, `status`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use fechter_core::{AddrSpec, NodeId};

/// Default control socket of the local agent.
pub const DEFAULT_SOCKET: &str = "/run/fechter/fechter.sock";
/// Default cluster port (the seed's).
pub const DEFAULT_PORT: u16 = 4573;

/// fechter: keeps a set of virtual IP addresses alive on a cluster of machines.
///
/// Every machine runs `fechter agent`; the agents find each other, elect a
/// leader, and the leader spreads the addresses evenly over the machines that
/// are up and healthy. When a machine fails, its addresses move to the others.
#[derive(Debug, Parser)]
#[command(name = "fechter", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on this machine (one per machine, as root).
    Agent(AgentArgs),
    /// Add an address to the cluster, e.g. `eth0:198.51.100.10/24`.
    AddAddress {
        /// IFACE:IP[/PREFIX]; the prefix defaults to /32 (IPv4) or /128 (IPv6).
        spec: AddrSpec,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Stop assigning an address; its holder releases it (it is kept as do-not-assign).
    RemoveAddress {
        /// IFACE:IP[/PREFIX] as it was added.
        spec: AddrSpec,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Mark this machine up: it may receive addresses (a node starts down).
    Up {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Mark this machine down: its addresses are handed to the others first.
    Down {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Forget a machine that is gone for good: its record and its vote.
    ///
    /// Every node counts every machine it ever knew toward the majority, the
    /// dead ones too. Run on any one node, this spreads to all: NODE no
    /// longer counts, is not listed, and never receives addresses. Refused for this machine, for an unknown node and for a
    /// node this machine still hears. If NODE ever starts again, it comes
    /// back by itself.
    Forget {
        /// The node id of the dead machine, as `fechter members` lists it.
        node: NodeId,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show where every address is, and the cluster's members.
    Status {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show the cluster's members: liveness, admin status, eligibility.
    Members {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show this node's history: addresses acquired and released (and why),
    /// takeovers, members, leader, health checks, quorum.
    ///
    /// The agent keeps the last 1,000 events in memory (lost on restart).
    Events {
        /// Keep printing new events as they happen (until Ctrl-C).
        #[arg(long)]
        follow: bool,
        /// Print one JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Run a live three-node demo cluster in network namespaces on this
    /// machine (needs root): add addresses, kill the holder of one, show the
    /// failover a client saw; everything is removed at the end (also on Ctrl-C).
    Demo(DemoArgs),
    /// Make the agent re-read its configuration (as SIGHUP does): live
    /// changes apply without moving any address, restart-only ones are refused.
    Reload {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Check an agent config file: every error with its line and key.
    CheckConfig {
        /// The file to check (default /etc/fechter/fechter.toml).
        #[arg(default_value = "/etc/fechter/fechter.toml")]
        path: PathBuf,
    },
    /// Write a fresh random cluster key to PATH (mode 0600; never overwrites).
    ///
    /// Copy the same file to every node and start each agent with --key-file PATH.
    Keygen {
        /// Where to write the key, e.g. /etc/fechter/cluster.key.
        path: PathBuf,
    },
    /// Offline: print the allocation and standbys for given nodes and addresses.
    ///
    /// Uses exactly the rules the leader uses. Addresses are taken in the
    /// order given (their order of addition). With --fail, also prints where
    /// everything goes when those nodes fail, and what moved.
    Plan(PlanArgs),
    /// Packaging: write the man pages and shell completions into OUT.
    ///
    /// OUT/man/ gets fechter.1 and one page per command (fechter-agent.1,
    /// ...); OUT/completions/ gets fechter.bash, _fechter (zsh) and
    /// fechter.fish. `fechter generate --out dist` refreshes the committed ones.
    #[command(hide = true)]
    Generate {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where the local agent's control socket is.
#[derive(Debug, Args)]
pub struct SocketArg {
    /// The agent's control socket.
    #[arg(long = "control-socket", env = "FECHTER_SOCKET", default_value = DEFAULT_SOCKET)]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// A TOML file with any of these settings (flags override it). Default:
    /// /etc/fechter/fechter.toml when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (default: the host name).
    #[arg(long)]
    pub node_id: Option<NodeId>,
    /// This node's cluster address, IP[:PORT] (default port 4573): the address
    /// the other nodes reach it at (not 0.0.0.0). Required here or in the file.
    #[arg(long, value_parser = parse_endpoint)]
    pub listen: Option<SocketAddr>,
    /// A member of an existing cluster to join, ADDR[:PORT] (repeatable).
    #[arg(long, value_parser = parse_endpoint)]
    pub attach: Vec<SocketAddr>,
    /// Where the agent keeps its state (default /var/lib/fechter).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The 32-byte cluster key (create one with `fechter keygen`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Run without a cluster key: cluster traffic is neither authenticated nor encrypted.
    #[arg(long)]
    pub insecure: bool,
    /// Decide and log, but never touch the interfaces (no netlink, no packets).
    #[arg(long)]
    pub dry_run: bool,
    /// The gateway to check with ICMP echo: while it does not answer, this
    /// node takes no addresses (and in a two-node cluster it breaks ties).
    #[arg(long)]
    pub gateway: Option<std::net::IpAddr>,
    /// The control socket the CLI talks to (default /run/fechter/fechter.sock).
    #[arg(long)]
    pub control_socket: Option<PathBuf>,
    /// Log format: `text` (journald-friendly, the default) or `json` (one
    /// object per line, for log shippers).
    #[arg(long, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Run at real-time priority (SCHED_RR 10; check scripts and hooks
    /// still run at normal priority) with memory locked, so that a busy
    /// machine never delays a heartbeat: for short timings such as
    /// dist/profiles/fast.toml. Needs CAP_SYS_NICE and CAP_IPC_LOCK.
    #[arg(long)]
    pub realtime: bool,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (default: off).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many machines the demo cluster has.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=9))]
    pub nodes: u8,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// An eligible node (repeatable, or comma-separated).
    #[arg(long = "node", required = true, value_delimiter = ',')]
    pub nodes: Vec<NodeId>,
    /// A node to fail after the first allocation (repeatable, or comma-separated).
    #[arg(long = "fail", value_delimiter = ',')]
    pub fail: Vec<NodeId>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Addresses, IFACE:IP[/PREFIX], in the order they were added.
    #[arg(required = true)]
    pub addresses: Vec<AddrSpec>,
}

/// The shells `fechter generate` writes completions for.
pub const COMPLETION_SHELLS: [clap_complete::Shell; 3] = [
    clap_complete::Shell::Bash,
    clap_complete::Shell::Zsh,
    clap_complete::Shell::Fish,
];

/// `fechter generate`: writes OUT/man/*.1 (one page for `fechter`, one per
/// visible command) and OUT/completions/ for bash, zsh and fish, all from
/// the clap definitions above. Returns the files written. The output is
/// deterministic (no dates), so committed copies can be checked for drift.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>, String> {
    let man = out.join("man");
    let completions = out.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mut cmd = public_command();
    cmd.build();
    let source = format!("fechter {}", cmd.get_version().unwrap_or_default());
    let mut pages = vec![cmd.clone()];
    let mut i = 0;
    while i < pages.len() {
        let subs: Vec<_> = pages[i].get_subcommands().cloned().collect();
        pages.extend(subs);
        i += 1;
    }
    let mut written = Vec::new();
    for page in pages {
        let page = clap_mangen::Man::new(page)
            .source(source.clone())
            .manual("fechter manual");
        let path = page
            .generate_to(&man)
            .map_err(|e| format!("cannot write a man page into {}: {e}", man.display()))?;
        written.push(path);
    }
    for shell in COMPLETION_SHELLS {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), "fechter", &completions)
            .map_err(|e| {
                format!(
                    "cannot write the {shell} completions into {}: {e}",
                    completions.display()
                )
            })?;
        written.push(path);
    }
    Ok(written)
}

/// The command tree without its hidden commands (clap_complete would offer
/// them), and without the `help` command (each command has --help).
pub fn public_command() -> clap::Command {
    use clap::CommandFactory;
    let full = Cli::command();
    // Str only comes from &'static str here (clap without its `string` feature).
    let mut cmd = clap::Command::new("fechter")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(full.is_propagate_version_set())
        .subcommand_required(full.is_subcommand_required_set())
        .arg_required_else_help(full.is_arg_required_else_help_set())
        .disable_help_subcommand(true);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        cmd = cmd.long_about(about.clone());
    }
    cmd.args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// `IP[:PORT]` or `[IPv6]:PORT`; the port defaults to 4573.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, DEFAULT_PORT)),
        Err(_) => Err(format!(
            "{s:?} is not IP[:PORT]; write e.g. 198.51.100.1 or 198.51.100.1:{DEFAULT_PORT} or [2001:db8::1]:{DEFAULT_PORT}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_public_command_is_the_cli_without_hidden_commands() {
        let mut full = Cli::command().disable_help_subcommand(true);
        let mut public = public_command();
        public.clone().debug_assert();
        assert_eq!(
            full.render_long_help().to_string(),
            public.render_long_help().to_string()
        );
        assert_eq!(
            full.render_usage().to_string(),
            public.render_usage().to_string()
        );
        assert_eq!(full.get_name(), public.get_name());
        assert_eq!(full.get_version(), public.get_version());
        assert!(public.find_subcommand("generate").is_none());
        assert!(full.find_subcommand("generate").unwrap().is_hide_set());
        let visible = full.get_subcommands().filter(|s| !s.is_hide_set()).count();
        assert_eq!(public.get_subcommands().count(), visible);
    }

    #[test]
    fn endpoints_default_to_the_seed_port() {
        assert_eq!(parse_endpoint("127.0.0.1").unwrap().port(), DEFAULT_PORT);
        assert_eq!(parse_endpoint("127.0.0.1:9").unwrap().port(), 9);
        assert_eq!(parse_endpoint("::1").unwrap().port(), DEFAULT_PORT);
        assert!(
            parse_endpoint("nonsense")
                .unwrap_err()
                .contains("IP[:PORT]")
        );
    }
}
