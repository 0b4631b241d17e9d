//! keepalived as a benchmark subject: three nodes (or as many as
//! [`Keepalived::start_sized`] is given) running keepalived 2.2.7
//! (Debian's `/usr/sbin/keepalived`), VRRP only, one instance for [`VIP`],
//! configured as an operator would for "one address, no surprise movement":
//!
//! - VRRP version 3 (the only version with sub-second `advert_int`; keepalived
//!   accepts 0.01 s to 255 s and rounds fractional intervals to whole
//!   seconds under version 2), unicast to the peers (no multicast
//!   needed on the lab's bridge), no authentication (VRRPv3 has none);
//! - every node starts as `BACKUP` with a different priority (150/100/50 on
//!   three nodes, 150/50 on two: [`priority`]) and
//!   `nopreempt`, so that a repaired node does not pull the address back;
//! - gratuitous ARP at the defaults (`garp_master_delay 5`, `garp_master_repeat 5`);
//! - a `vrrp_script` pinging [`GATEWAY`] tracked without a weight: a node
//!   that cannot reach the gateway goes to FAULT and gives the address up.
//!   keepalived's script `interval` is whole seconds (it rejects `0.25`), so
//!   gateway loss is seen within about a second however short `advert_int` is.
//!
//! Each daemon runs inside its node's namespace (`ip netns exec`, which execs
//! keepalived, so our child *is* the keepalived parent), in the foreground
//! (`--dont-fork`), logging to a file per node, with its own pid files in a
//! temporary directory so that the daemons on this machine do not see
//! each other's pid files (keepalived's defaults are `/run/keepalived*.pid`).
//! keepalived forks a VRRP child even in the foreground; both stay in the
//! process group we give the parent (`process_group(0)`), so a fault signals
//! the whole group at once (`kill(-pgid, sig)`), as a dying machine or
//! `kill -9` of the service's cgroup would.
//!
//! Safety: nothing runs in this machine's own network namespace but `ip`
//! (acting on the lab's namespaces) and `apt-get`; all addresses are in
//! 198.18.0.0/24 inside the lab. Every daemon gets `PR_SET_PDEATHSIG` and is
//! killed and reaped on drop (also while unwinding); every wait is bounded.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fechter_linux::lab::Lab;

use crate::e2e_support::{guard_child, poll};
use crate::fechter_subject::TWO_KILLED_WINDOW;
use crate::subject::{Fault, GATEWAY, Subject, VIP};

/// Where Debian's package installs the daemon.
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";
/// Nodes of the lab unless asked otherwise.
const NODES: usize = 3;
/// The VRRP priority of the first node; the last has [`LOWEST_PRIORITY`].
const HIGHEST_PRIORITY: u32 = 150;
/// The VRRP priority of the last node.
const LOWEST_PRIORITY: u32 = 50;
/// The VRRP router id of the one instance.
const VRID: u32 = 50;
/// The longest `settle` waits.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// How often `settle` looks.
const SETTLE_EVERY: Duration = Duration::from_millis(25);
/// The longest a stopping daemon gets before it is killed.
const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// The longest `apt-get` may take.
const APT_LIMIT: Duration = Duration::from_secs(600);
/// How long a gateway check started while a node was cut off can take to
/// report (`ping -W 1` plus keepalived's one-second script interval, and a
/// margin): `settle` waits this long after a network fault is repaired, so
/// that a late failure does not put the node in FAULT after it settled.
const SCRIPT_SETTLE: Duration = Duration::from_millis(2200);
/// Log lines quoted in errors.
const LOG_LINES: usize = 15;

/// The VRRP priority of `node` of `nodes`: from [`HIGHEST_PRIORITY`] down
/// to [`LOWEST_PRIORITY`] in even steps (150/100/50 on three nodes, 150/50
/// on two).
fn priority(node: usize, nodes: usize) -> u32 {
    let span = HIGHEST_PRIORITY - LOWEST_PRIORITY;
    let steps = nodes.saturating_sub(1).max(1) as u32;
    HIGHEST_PRIORITY - span * (node as u32).min(steps) / steps
}

/// Makes sure [`KEEPALIVED`] exists: if not, installs Debian's `keepalived`
/// package with `apt-get install -y` (running `apt-get update` first only if
/// the install fails). Needs root.
pub fn ensure_installed() -> Result<(), String> {
    if Path::new(KEEPALIVED).is_file() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "{KEEPALIVED} is missing and installing it needs root: run `apt-get install keepalived` or run the benchmark as root"
        ));
    }
    let install = || apt(&["install", "-y", "keepalived"]);
    if let Err(first) = install() {
        eprintln!(
            "keepalived: `apt-get install` failed ({first}); running `apt-get update` and trying again"
        );
        apt(&["update"]).map_err(|e| format!("cannot install keepalived: {e}"))?;
        install().map_err(|e| format!("cannot install keepalived: {e}"))?;
    }
    if !Path::new(KEEPALIVED).is_file() {
        return Err(format!(
            "`apt-get install keepalived` succeeded but {KEEPALIVED} does not exist"
        ));
    }
    // Debian's service only starts with a non-empty
    // /etc/keepalived/keepalived.conf, which the package does not ship; say
    // so if one runs in this namespace anyway (it is not ours to stop).
    let own = own_netns();
    let host: Vec<i32> = proc_entries()
        .into_iter()
        .filter(|p| p.comm == "keepalived" && own.is_some() && netns_of(p.pid) == own)
        .map(|p| p.pid)
        .collect();
    if !host.is_empty() {
        eprintln!(
            "keepalived: note: installing started a keepalived service in this machine's namespace (pids {host:?}); \
             the benchmark does not use it (`systemctl disable --now keepalived` stops it)"
        );
    }
    Ok(())
}

/// Runs `apt-get ARGS` non-interactively, bounded by [`APT_LIMIT`].
fn apt(args: &[&str]) -> Result<(), String> {
    let line = format!("apt-get {}", args.join(" "));
    let mut cmd = Command::new("apt-get");
    cmd.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    guard_child(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{line}`: {e}"))?;
    // Drain stderr on a thread so that a chatty apt-get cannot block.
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(s, &mut text);
        }
        text
    });
    let status = poll(APT_LIMIT, Duration::from_millis(100), || {
        child.try_wait().ok().flatten()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let err = reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("`{line}` failed ({s}): {}", tail(&err, 5))),
        None => Err(format!(
            "`{line}` took longer than {APT_LIMIT:?} and was killed"
        )),
    }
}

/// One line of `/proc/PID/stat`, the fields we need.
#[derive(Debug, Clone)]
struct ProcEntry {
    pid: i32,
    comm: String,
    state: char,
    pgrp: i32,
}

/// Every process `/proc` shows now.
fn proc_entries() -> Vec<ProcEntry> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // PID (COMM) STATE PPID PGRP ...; COMM may contain spaces and ')'.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_owned();
        let mut rest = stat.get(close + 1..)?.split_whitespace();
        let state = rest.next()?.chars().next()?;
        let _ppid = rest.next()?;
        let pgrp = rest.next()?.parse().ok()?;
        Some(ProcEntry {
            pid,
            comm,
            state,
            pgrp,
        })
    })
    .collect()
}

fn own_netns() -> Option<PathBuf> {
    std::fs::read_link("/proc/self/ns/net").ok()
}

fn netns_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the daemon of one node last logged about its VRRP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VrrpState {
    Init,
    Backup,
    Master,
    Fault,
    Stop,
}

/// The state in keepalived's last `(VIP) Entering X STATE` line.
fn last_state(log: &str) -> VrrpState {
    log.lines()
        .rev()
        .find_map(|line| {
            let at = line.find("Entering ")?;
            let word = line[at + "Entering ".len()..].split_whitespace().next()?;
            match word {
                "BACKUP" => Some(VrrpState::Backup),
                "MASTER" => Some(VrrpState::Master),
                "FAULT" => Some(VrrpState::Fault),
                "INIT" => Some(VrrpState::Init),
                "STOP" => Some(VrrpState::Stop),
                _ => None,
            }
        })
        .unwrap_or(VrrpState::Init)
}

/// One node's keepalived.
struct Daemon {
    node: usize,
    conf: PathBuf,
    log: PathBuf,
    pid_file: PathBuf,
    vrrp_pid_file: PathBuf,
    /// The keepalived parent (our direct child).
    child: Option<Child>,
    /// Its process group (its pid), until the group is gone.
    pgid: Option<i32>,
    /// When it was started.
    started: Instant,
    /// Where its current run's log starts (earlier runs are above).
    log_from: u64,
}

impl Daemon {
    /// Whether the keepalived parent has not exited (running or stopped).
    /// An exited parent is reaped here.
    fn parent_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Sends `sig` to every process of the daemon (parent, VRRP child and
    /// any script it runs) at once.
    fn signal_group(&mut self, sig: i32) -> Result<(), String> {
        let pgid = self
            .pgid
            .ok_or_else(|| format!("n{}: keepalived is not running", self.node))?;
        // The group id stays ours while its leader is unreaped (only
        // `parent_alive` reaps) or while any member lives.
        if !self.parent_alive() && self.group(false).is_empty() {
            return Err(format!("n{}: keepalived is not running", self.node));
        }
        // SAFETY: kill on the process group of our own child (see above).
        if unsafe { libc::kill(-pgid, sig) } != 0 {
            return Err(format!(
                "n{}: kill(-{pgid}, {sig}): {}",
                self.node,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Sends `sig` to the keepalived parent only.
    fn signal_parent(&mut self, sig: i32) -> Result<(), String> {
        if !self.parent_alive() {
            return Err(format!("n{}: keepalived is not running", self.node));
        }
        let pid = self.child.as_ref().map_or(0, |c| c.id() as i32);
        // SAFETY: kill on the pid of our own unreaped child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(format!(
                "n{}: kill({pid}, {sig}): {}",
                self.node,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// The live processes of the daemon's group (`keepalived` ones only
    /// when `daemon_only`).
    fn group(&self, daemon_only: bool) -> Vec<ProcEntry> {
        let Some(pgid) = self.pgid else {
            return Vec::new();
        };
        proc_entries()
            .into_iter()
            .filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
            .filter(|p| !daemon_only || p.comm == "keepalived")
            .collect()
    }

    /// Whether the parent runs (not exited, not stopped) and has forked its
    /// VRRP child.
    fn running(&mut self) -> bool {
        if !self.parent_alive() {
            return false;
        }
        let procs = self.group(true);
        procs.len() >= 2 && procs.iter().all(|p| p.state != 'T' && p.state != 't')
    }

    /// Waits (bounded) for the parent to exit on its own; reaps it.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        poll(limit, Duration::from_millis(10), || {
            (!self.parent_alive()).then_some(())
        })
        .is_some()
    }

    /// Kills the whole group with SIGKILL and reaps the parent; waits
    /// (bounded) until no process of the group is left (the VRRP child is
    /// reaped by whoever inherits it).
    fn kill(&mut self) {
        let Some(pgid) = self.pgid else {
            return;
        };
        // SIGKILL also ends stopped processes.
        let _ = self.signal_group(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            // SIGKILL cannot be caught: this wait ends.
            let _ = child.wait();
        }
        poll(Duration::from_secs(2), Duration::from_millis(10), || {
            let left = proc_entries()
                .iter()
                .any(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X');
            (!left).then_some(())
        });
        self.pgid = None;
    }

    /// The log of the current run.
    fn current_log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let from = (self.log_from as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    fn state(&self) -> VrrpState {
        last_state(&self.current_log())
    }

    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        tail(&text, n)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops every daemon: asks them first (SIGCONT, then SIGTERM to each
/// parent, which stops and reaps its VRRP child) and waits up to a second
/// and a half, then kills whatever is left ([`Daemon::kill`]). Asking first
/// means no VRRP child is left for init to reap.
fn stop_all(daemons: &mut [Daemon]) {
    for d in daemons.iter_mut() {
        if d.parent_alive() {
            let _ = d.signal_group(libc::SIGCONT);
            let _ = d.signal_parent(libc::SIGTERM);
        }
    }
    let limit = Duration::from_millis(1500);
    let t0 = Instant::now();
    for d in daemons.iter_mut() {
        d.wait_exit(limit.saturating_sub(t0.elapsed()));
        d.kill();
    }
}

/// keepalived on three (or `nodes`) nodes serving [`VIP`]. See the
/// [module docs](self).
pub struct Keepalived {
    // Field order is drop order: daemons first, then the lab's namespaces,
    // then the files.
    daemons: Vec<Daemon>,
    lab: Lab,
    dir: tempfile::TempDir,
    advert: Duration,
    /// Nodes of the lab.
    nodes: usize,
    /// `settle` does not return before this (see [`SCRIPT_SETTLE`]).
    quiet_until: Instant,
}

impl Keepalived {
    /// Installs keepalived if missing, builds a 3-node lab whose client also
    /// has the gateway address, writes the configurations and starts the
    /// daemons (it does not wait for them to elect a master: see
    /// [`Subject::settle`]). `advert` is `advert_int`: 0.01 s to 255 s in
    /// steps of 0.01 s (e.g. 1 s, 0.1 s, 0.01 s).
    pub fn start(advert: Duration) -> Result<Keepalived, String> {
        Keepalived::start_sized(advert, NODES)
    }

    /// [`Keepalived::start`] on a lab of `nodes` machines (at least two).
    pub fn start_sized(advert: Duration, nodes: usize) -> Result<Keepalived, String> {
        if nodes < 2 {
            return Err(format!("keepalived needs two nodes or more, not {nodes}"));
        }
        let centis = advert.as_millis() / 10;
        if !advert.as_micros().is_multiple_of(10_000) || !(1..=25_500).contains(&centis) {
            return Err(format!(
                "keepalived advert_int must be 0.01 s to 255 s in steps of 0.01 s (VRRPv3), not {advert:?}"
            ));
        }
        ensure_installed()?;
        let lab = Lab::new(nodes).map_err(|e| format!("building the namespace lab: {e}"))?;
        let dir = tempfile::Builder::new()
            .prefix("fechter-bench-ka-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        // From here on a `?` drops `ka`: daemons killed, lab deleted.
        let mut ka = Keepalived {
            daemons: Vec::new(),
            lab,
            dir,
            advert,
            nodes,
            quiet_until: Instant::now(),
        };
        let client = ka.lab.client_ns();
        ka.lab
            .ip(
                &client,
                &["addr", "add", &format!("{GATEWAY}/24"), "dev", "eth0"],
            )
            .map_err(|e| format!("gateway address on the client: {e}"))?;
        for node in 0..nodes {
            let base = ka.dir.path().join(format!("n{node}"));
            std::fs::create_dir_all(&base)
                .map_err(|e| format!("creating {}: {e}", base.display()))?;
            let conf = base.join("keepalived.conf");
            std::fs::write(&conf, ka.config(node))
                .map_err(|e| format!("writing {}: {e}", conf.display()))?;
            ka.daemons.push(Daemon {
                node,
                conf,
                log: base.join("keepalived.log"),
                pid_file: base.join("keepalived.pid"),
                vrrp_pid_file: base.join("vrrp.pid"),
                child: None,
                pgid: None,
                started: Instant::now(),
                log_from: 0,
            });
        }
        for node in 0..nodes {
            ka.spawn(node)?;
        }
        for node in 0..nodes {
            ka.wait_running(node)?;
        }
        Ok(ka)
    }

    /// `advert_int` as keepalived reads it (seconds, two decimals).
    fn advert_int(&self) -> String {
        let centis = self.advert.as_millis() / 10;
        format!("{}.{:02}", centis / 100, centis % 100)
    }

    /// The configuration of `node`.
    fn config(&self, node: usize) -> String {
        let peers: String = (0..self.nodes)
            .filter(|&k| k != node)
            .map(|k| format!("        {}\n", self.lab.node_ipv4(k)))
            .collect();
        format!(
            "\
# fechter failover benchmark: keepalived on lab node n{node}.
global_defs {{
    router_id n{node}
    # VRRPv3: sub-second advert_int (centiseconds on the wire).
    vrrp_version 3
    # The gateway check runs as root (ping needs no more than that), and
    # keepalived only runs root scripts with script security on.
    script_user root
    enable_script_security
}}

# Gateway reachability; keepalived's interval is whole seconds.
vrrp_script gateway {{
    script \"/usr/bin/ping -n -q -c 1 -W 1 {GATEWAY}\"
    interval 1
    timeout 2
    fall 1
    rise 1
}}

vrrp_instance VIP {{
    # Everyone starts as backup; nopreempt: a repaired node does not take
    # the address back (an operator who wants no surprise movement).
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id {VRID}
    priority {prio}
    advert_int {advert}
    unicast_src_ip {me}
    unicast_peer {{
{peers}    }}
    virtual_ipaddress {{
        {VIP}/24 dev eth0
    }}
    # No weight: a failing gateway check puts the node in FAULT.
    track_script {{
        gateway
    }}
}}
",
            prio = priority(node, self.nodes),
            advert = self.advert_int(),
            me = self.lab.node_ipv4(node),
        )
    }

    /// Starts (or restarts) `node`'s daemon. The previous one must be gone.
    fn spawn(&mut self, node: usize) -> Result<(), String> {
        let ns = self.lab.ns_name(node);
        let d = &mut self.daemons[node];
        d.kill();
        for f in [&d.pid_file, &d.vrrp_pid_file] {
            let _ = std::fs::remove_file(f);
        }
        let base = d.conf.parent().unwrap_or(Path::new("/"));
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&d.log)
            .map_err(|e| format!("opening {}: {e}", d.log.display()))?;
        let _ = writeln!(file, "==== starting keepalived on n{node} ====");
        d.log_from = file
            .metadata()
            .map_err(|e| format!("{}: {e}", d.log.display()))?
            .len();
        let err = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", d.log.display()))?;
        let mut cmd = self.lab.command(&ns, KEEPALIVED);
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
        ])
        .arg("--use-file")
        .arg(&d.conf)
        .arg("--pid")
        .arg(&d.pid_file)
        .arg("--vrrp_pid")
        .arg(&d.vrrp_pid_file)
        // Not started (--vrrp), but never the default /run paths either.
        .arg("--checkers_pid")
        .arg(base.join("checkers.pid"))
        .arg("--bfd_pid")
        .arg(base.join("bfd.pid"))
        .current_dir(base)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
        guard_child(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("n{node}: starting {KEEPALIVED}: {e}"))?;
        d.pgid = Some(child.id() as i32);
        d.child = Some(child);
        d.started = Instant::now();
        Ok(())
    }

    /// Waits (bounded) until `node`'s keepalived runs with its VRRP child.
    fn wait_running(&mut self, node: usize) -> Result<(), String> {
        let d = &mut self.daemons[node];
        poll(Duration::from_secs(10), Duration::from_millis(10), || {
            d.running().then_some(())
        })
        .ok_or_else(|| {
            format!(
                "n{node}: keepalived did not start (parent and VRRP child):\n{}",
                d.log_tail(LOG_LINES)
            )
        })
    }

    /// Restarts `node`'s daemon after it was killed or stopped.
    fn restart(&mut self, node: usize) -> Result<(), String> {
        self.daemons[node].kill();
        self.spawn(node)?;
        self.wait_running(node)
    }

    /// The nodes whose `eth0` carries [`VIP`] now.
    fn holders(&self) -> Result<Vec<usize>, String> {
        let mut on = Vec::new();
        for node in 0..self.nodes {
            if self.holds(node)? {
                on.push(node);
            }
        }
        Ok(on)
    }

    fn holds(&self, node: usize) -> Result<bool, String> {
        let out = self
            .lab
            .ip(
                &self.lab.ns_name(node),
                &["-o", "addr", "show", "dev", "eth0"],
            )
            .map_err(|e| format!("n{node}: {e}"))?;
        Ok(out
            .split_whitespace()
            .any(|w| w.split('/').next() == Some(VIP)))
    }

    /// Removes [`VIP`] from `node`'s `eth0` if it is there (left behind by a
    /// daemon that was killed).
    fn drop_vip(&self, node: usize) -> Result<(), String> {
        if self.holds(node)? {
            self.lab
                .ip(
                    &self.lab.ns_name(node),
                    &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"],
                )
                .map_err(|e| format!("n{node}: removing the address: {e}"))?;
        }
        Ok(())
    }

    /// One look at the cluster: `Ok(holder)` if exactly one node has the
    /// address in its kernel, every daemon runs, the holder is MASTER and
    /// the others BACKUP; otherwise why not.
    fn look(&mut self) -> Result<usize, String> {
        for d in &mut self.daemons {
            if !d.running() {
                return Err(format!("n{}: keepalived is not running", d.node));
            }
        }
        let on = self.holders()?;
        let [holder] = on[..] else {
            return Err(format!("the address is on nodes {on:?}"));
        };
        let states: Vec<VrrpState> = self.daemons.iter().map(Daemon::state).collect();
        let calm = states.iter().enumerate().all(|(k, &s)| {
            s == if k == holder {
                VrrpState::Master
            } else {
                VrrpState::Backup
            }
        });
        if !calm {
            return Err(format!(
                "the address is on n{holder}, the VRRP states are {states:?}"
            ));
        }
        Ok(holder)
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| {
                format!(
                    "---- n{} ({}) ----\n{}",
                    d.node,
                    d.log.display(),
                    d.log_tail(LOG_LINES)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The VRRP master-down interval (3 adverts plus the skew of the
    /// lowest priority), as a backup waits it before taking over.
    fn master_down(&self) -> Duration {
        let lowest = (0..self.nodes)
            .map(|n| priority(n, self.nodes))
            .min()
            .unwrap_or(1);
        self.advert * 3 + self.advert * (256 - lowest) / 256
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        stop_all(&mut self.daemons);
        // FECHTER_BENCH_DUMP=1 prints the logs when nothing went wrong too.
        if std::thread::panicking() || std::env::var_os("FECHTER_BENCH_DUMP").is_some() {
            eprintln!("{}", self.logs());
        }
        // Then the lab deletes its namespaces and the temp dir goes.
    }
}

impl Subject for Keepalived {
    fn label(&self) -> String {
        let secs = self.advert.as_secs_f64();
        if self.nodes == NODES {
            format!("keepalived {secs} s")
        } else {
            format!("keepalived {secs} s, {} nodes", self.nodes)
        }
    }

    fn lab(&self) -> &Lab {
        &self.lab
    }

    fn unsupported(&self, fault: Fault) -> Option<&'static str> {
        match fault {
            Fault::Down => Some(
                "keepalived has no way to give up an address and stay running; an operator stops the daemon (sigterm)",
            ),
            _ => None,
        }
    }

    /// Waits (at most 30 s) until exactly one node has the address, every
    /// daemon runs and has run for longer than the master-down interval
    /// (so a freshly started backup would have claimed the address by now
    /// if it were going to), the VRRP states agree (holder MASTER, others
    /// BACKUP), and all that has held still for two adverts (at least
    /// 300 ms).
    fn settle(&mut self) -> Result<usize, String> {
        let calm_for = (self.advert * 2).max(Duration::from_millis(300));
        let warm = self.master_down() + self.advert;
        let mut since: Option<(usize, Instant)> = None;
        let mut why = String::from("nothing seen yet");
        let holder = poll(SETTLE_LIMIT, SETTLE_EVERY, || {
            match self.look() {
                Ok(h) => {
                    let now = Instant::now();
                    let began = match since {
                        Some((was, t)) if was == h => t,
                        _ => {
                            since = Some((h, now));
                            now
                        }
                    };
                    let warm = self.daemons.iter().all(|d| d.started.elapsed() >= warm)
                        && now >= self.quiet_until;
                    if now - began >= calm_for && warm {
                        return Some(h);
                    }
                    why = format!("n{h} holds the address, not yet calm");
                }
                Err(e) => {
                    since = None;
                    why = e;
                }
            }
            None
        });
        holder.ok_or_else(|| {
            format!(
                "keepalived did not settle within {SETTLE_LIMIT:?}: {why}\n{}",
                self.logs()
            )
        })
    }

    fn inject(&mut self, fault: Fault, node: usize) -> Result<(), String> {
        if node >= self.nodes {
            return Err(format!("no node n{node}"));
        }
        let lab_err = |e: fechter_linux::lab::LabError| format!("n{node}: {e}");
        match fault {
            Fault::MachineDeath => {
                self.daemons[node].signal_group(libc::SIGSTOP)?;
                self.lab.set_link(node, false).map_err(lab_err)
            }
            Fault::Sigkill => self.daemons[node].signal_group(libc::SIGKILL),
            Fault::Sigterm => self.daemons[node].signal_parent(libc::SIGTERM),
            Fault::Down => Err(self.unsupported(fault).unwrap_or_default().to_owned()),
            Fault::CarrierLoss => self.lab.set_carrier(node, false).map_err(lab_err),
            Fault::GatewayLoss => self
                .lab
                .ip(
                    &self.lab.ns_name(node),
                    &["route", "add", "blackhole", &format!("{GATEWAY}/32")],
                )
                .map(drop)
                .map_err(lab_err),
            Fault::Partition => self.lab.detach(node).map_err(lab_err),
            Fault::TwoKilled => {
                // Both groups first, then report the first failure.
                let killed: Vec<Result<(), String>> = fault
                    .victims(node, self.nodes)
                    .into_iter()
                    .map(|v| self.daemons[v].signal_group(libc::SIGKILL))
                    .collect();
                killed.into_iter().collect()
            }
            Fault::TwoDead => {
                let victims = fault.victims(node, self.nodes);
                for &v in &victims {
                    self.daemons[v].signal_group(libc::SIGSTOP)?;
                }
                for &v in &victims {
                    self.lab
                        .set_link(v, false)
                        .map_err(|e| format!("n{v}: {e}"))?;
                }
                Ok(())
            }
        }
    }

    fn repair(&mut self, fault: Fault, node: usize) -> Result<(), String> {
        if node >= self.nodes {
            return Err(format!("no node n{node}"));
        }
        let lab_err = |e: fechter_linux::lab::LabError| format!("n{node}: {e}");
        if matches!(
            fault,
            Fault::CarrierLoss | Fault::GatewayLoss | Fault::Partition
        ) {
            self.quiet_until = Instant::now() + SCRIPT_SETTLE;
        }
        match fault {
            Fault::MachineDeath => {
                self.daemons[node].kill();
                self.lab.set_link(node, true).map_err(lab_err)?;
                self.drop_vip(node)?;
                self.restart(node)
            }
            Fault::Sigkill => {
                self.daemons[node].kill();
                self.drop_vip(node)?;
                self.restart(node)
            }
            Fault::TwoKilled => {
                for v in fault.victims(node, self.nodes) {
                    self.daemons[v].kill();
                    self.drop_vip(v)?;
                    self.restart(v)?;
                }
                Ok(())
            }
            Fault::TwoDead => {
                // As for machine death, both machines reboot.
                for v in fault.victims(node, self.nodes) {
                    self.daemons[v].kill();
                    self.lab
                        .set_link(v, true)
                        .map_err(|e| format!("n{v}: {e}"))?;
                    self.drop_vip(v)?;
                    self.restart(v)?;
                }
                Ok(())
            }
            Fault::Sigterm => {
                let exited = self.daemons[node].wait_exit(EXIT_LIMIT);
                self.daemons[node].kill();
                // A clean stop removes the address; a daemon that had to be
                // killed may have left it behind.
                self.drop_vip(node)?;
                self.restart(node)?;
                if exited {
                    Ok(())
                } else {
                    Err(format!(
                        "n{node}: keepalived did not exit within {EXIT_LIMIT:?} of SIGTERM (killed and restarted)"
                    ))
                }
            }
            Fault::Down => Ok(()),
            Fault::CarrierLoss => self.lab.set_carrier(node, true).map_err(lab_err),
            Fault::GatewayLoss => self
                .lab
                .ip(
                    &self.lab.ns_name(node),
                    &["route", "del", "blackhole", &format!("{GATEWAY}/32")],
                )
                .map(drop)
                .map_err(lab_err),
            Fault::Partition => self.lab.reattach(node).map_err(lab_err),
        }
    }

    /// The master-down interval (3 adverts plus skew) plus an advert and a
    /// second of margin. Gateway loss and partition add keepalived's
    /// one-second script interval and the ping's one-second timeout: a
    /// partitioned holder cannot reach the gateway either, so its gateway
    /// check ends the double holding within about two seconds. Two killed
    /// daemons: fechter's window ([`TWO_KILLED_WINDOW`]), or this base if
    /// longer (advert_int 1 s), so that both are watched alike.
    fn window(&self, fault: Fault) -> Duration {
        let base = self.master_down() + self.advert + Duration::from_secs(1);
        match fault {
            Fault::GatewayLoss | Fault::Partition => base + Duration::from_secs(2),
            Fault::TwoKilled => base.max(TWO_KILLED_WINDOW),
            _ => base,
        }
    }

    fn pids(&self, node: usize) -> Vec<i32> {
        self.daemons
            .get(node)
            .map(|d| d.group(true).into_iter().map(|p| p.pid).collect())
            .unwrap_or_default()
    }
}
