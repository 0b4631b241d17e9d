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
//! [`Pinger`] (in `ping.rs`) is the client that pings an address in a lab
//! for the demo, the end-to-end tests and the failover benchmark; it is
//! built on [`LineReader`], a child whose output a thread reads, which is
//! killed and reaped on drop.

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod ping;

pub use ping::{Echo, LineReader, PingOptions, PingReport, Pinger, interrupt_and_reap, unix_now};

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

/// Runs a command and returns its stdout, or an error quoting its stderr.
fn run(cmd: &mut Command) -> Result<String, LabError> {
    let line = command_line(cmd);
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    check(line, out)
}

fn check(line: String, out: Output) -> Result<String, LabError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(Into::into))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Names of the network namespaces `ip netns list` shows.
pub fn netns_list() -> Result<Vec<String>, LabError> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Whether the lab can run here: root, `ip netns` and `ping`. `Err` says why not.
pub fn lab_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(LabError::NotRoot { euid }.to_string());
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err(LabError::NetnsUnavailable {
            detail: "/proc/self/ns/net does not exist".into(),
        }
        .to_string());
    }
    if find_in_path("ip").is_none() {
        return Err(LabError::NetnsUnavailable {
            detail: "the `ip` command was not found".into(),
        }
        .to_string());
    }
    if let Err(e) = netns_list() {
        return Err(LabError::NetnsUnavailable {
            detail: e.to_string(),
        }
        .to_string());
    }
    if find_in_path("ping").is_none() {
        return Err(LabError::PingMissing.to_string());
    }
    Ok(())
}

/// For tests: `true` if the lab can run. Otherwise prints why `test` is
/// skipped and returns `false`, except under `CI=true`, where a missing lab
/// is a failure (panics with the reason).
pub fn require_lab(test: &str) -> bool {
    match lab_available() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: the namespace lab is required under CI=true: {reason}");
            }
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// Guards a child process of a lab user (test, demo, benchmark): it gets its
/// own process group (a Ctrl-C on the terminal reaches only the parent,
/// which then cleans up) and the kernel kills it when the thread that
/// started it dies (`PR_SET_PDEATHSIG`), so that nothing outlives a run that
/// was killed.
pub fn guard_child(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec here.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Calls `check` every `every` until it returns `Some`, for at most `limit`
/// (bounded in rounds as well as in time); `None` when it never did.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = std::time::Instant::now();
    let rounds = limit.as_millis() / every.as_millis().max(1) + 2;
    for _ in 0..rounds {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(every);
    }
    None
}

/// A prefix no existing namespace uses: `fch` + 5 hex digits.
fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let existing = netns_list().unwrap_or_default();
    let mut prefix = String::new();
    for _ in 0..256 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // FNV-1a over pid, time and a counter.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in std::process::id()
            .to_le_bytes()
            .into_iter()
            .chain(nanos.to_le_bytes())
            .chain(count.to_le_bytes())
        {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        prefix = format!("fch{:05x}", (h ^ (h >> 32)) & 0xf_ffff);
        if !existing.iter().any(|n| n.starts_with(&prefix)) {
            break;
        }
    }
    prefix
}

/// Enters network namespace `ns` (by name, `/run/netns/NAME`) on the calling
/// thread only.
pub fn enter_netns(ns: &str) -> Result<(), LabError> {
    let err = |source| LabError::Setns {
        ns: ns.to_owned(),
        source,
    };
    let file = File::open(Path::new("/run/netns").join(ns)).map_err(err)?;
    // SAFETY: setns on an open namespace file descriptor; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its
/// result. A panic in `f` is resumed on the calling thread.
pub fn run_in_ns<T, F>(ns: &str, f: F) -> Result<T, LabError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter_netns(ns)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs the future made by `f` on a current-thread tokio runtime on a new
/// thread inside network namespace `ns`. Sockets the future opens (netlink,
/// packet) belong to `ns`.
pub fn block_on_in_ns<T, F, Fut>(ns: &str, f: F) -> Result<T, LabError>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
{
    run_in_ns(ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a current-thread tokio runtime");
        runtime.block_on(f())
    })
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
    mac.map(|b| format!("{b:02x}")).join(":")
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
    /// Builds a lab with `nodes` nodes (at most [`MAX_NODES`]) and a client.
    /// On error, whatever was built is removed again.
    pub fn new(nodes: usize) -> Result<Lab, LabError> {
        if nodes > MAX_NODES {
            return Err(LabError::TooManyNodes { nodes });
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(LabError::NotRoot { euid });
        }
        let mut lab = Lab {
            prefix: unique_prefix(),
            nodes,
            namespaces: Vec::new(),
        };
        // Any `?` below drops `lab`, which deletes what exists so far.
        let sw = lab.switch_ns();
        lab.add_ns(&sw)?;
        // The switch only bridges: its ports get no IPv6 stack of their
        // own, whose link-local DAD and router solicitations would reach
        // a node even through a detached port (a false sign of life).
        run_in_ns(&sw, || {
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                if let Err(e) = std::fs::write(&path, "1") {
                    eprintln!("lab: cannot write {path}: {e}");
                }
            }
        })?;
        let bridge = lab.bridge();
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", &bridge, "up"])?;
        for node in 0..nodes {
            let (ns, port) = (lab.ns_name(node), lab.port(node));
            let last = 10 + node;
            lab.add_host(
                &ns,
                &port,
                &format!("02:fc:00:00:00:{last:02x}"),
                &format!("198.18.0.{last}/24"),
                &format!("2001:db8::{last}/64"),
            )?;
        }
        let (client, port) = (lab.client_ns(), lab.client_port());
        lab.add_host(
            &client,
            &port,
            "02:fc:00:00:01:00",
            "198.18.0.100/24",
            "2001:db8::100/64",
        )?;
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), LabError> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// One host namespace with `eth0` plugged into the bridge as `port`.
    fn add_host(
        &mut self,
        ns: &str,
        port: &str,
        mac: &str,
        v4: &str,
        v6: &str,
    ) -> Result<(), LabError> {
        let (sw, bridge) = (self.switch_ns(), self.bridge());
        self.add_ns(ns)?;
        // Created inside `ns`, the peer placed straight into the switch.
        ip(&[
            "-n", ns, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", port,
            "netns", &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", port, "master", &bridge, "up"])?;
        // Keep the static IPv6 addresses when a test sets the link down.
        let knob = "/proc/sys/net/ipv6/conf/eth0/keep_addr_on_down";
        run_in_ns(ns, || std::fs::write(knob, "1"))?.map_err(|source| LabError::Spawn {
            cmd: format!("echo 1 > {knob} (in {ns})"),
            source,
        })?;
        ip(&["-n", ns, "addr", "add", v4, "dev", "eth0"])?;
        ip(&["-n", ns, "addr", "add", v6, "dev", "eth0", "nodad"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

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

    /// Sets node `node`'s own `eth0` administratively up or down: the node
    /// sees its link go down (`up: false`).
    pub fn set_link(&self, node: usize, up: bool) -> Result<(), LabError> {
        self.check_node(node)?;
        let state = if up { "up" } else { "down" };
        self.ip(&self.ns_name(node), &["link", "set", "eth0", state])
            .map(drop)
    }

    /// Sets the switch side of node `node`'s cable up or down: the node's
    /// `eth0` stays up but loses its carrier (`carrier: false`).
    pub fn set_carrier(&self, node: usize, up: bool) -> Result<(), LabError> {
        self.check_node(node)?;
        let state = if up { "up" } else { "down" };
        self.ip(&self.switch_ns(), &["link", "set", &self.port(node), state])
            .map(drop)
    }

    /// Takes node `node`'s port off the bridge: a partition in which the
    /// node's link and carrier stay up.
    pub fn detach(&self, node: usize) -> Result<(), LabError> {
        self.check_node(node)?;
        self.ip(
            &self.switch_ns(),
            &["link", "set", &self.port(node), "nomaster"],
        )
        .map(drop)
    }

    /// Puts node `node`'s port back on the bridge.
    pub fn reattach(&self, node: usize) -> Result<(), LabError> {
        self.check_node(node)?;
        let (port, bridge) = (self.port(node), self.bridge());
        self.ip(
            &self.switch_ns(),
            &["link", "set", &port, "master", &bridge],
        )
        .map(drop)
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
