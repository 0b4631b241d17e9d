//! Support for the end-to-end tests: a namespace lab with three real agents
//! (this crate's binary, run inside the node namespaces), and observers that
//! see what a client and the kernels see.
//!
//! The agents are started by `fechter::lab_agent` and the client's pinger
//! is `fechter_linux::lab::Pinger`, as in `fechter demo` and the failover
//! benchmark; what is here adds the tests' waits and assertions.
//!
//! Safety: everything runs inside the lab's namespaces (198.18.0.0/24 and
//! 2001:db8::/64 only); the CLI runs in the test's own namespace because it
//! only talks to a Unix socket. Every child is killed and reaped on drop,
//! also while unwinding from a panic, and gets `PR_SET_PDEATHSIG` so that it
//! dies with the test thread that started it even if the test is killed.
//! Every wait is bounded in rounds and in time.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fechter::control::StatusReport;
use fechter::lab_agent::AgentLauncher;
use fechter_core::AddrSpec;
use fechter_linux::lab::{self, Lab, PingOptions};
use fechter_linux::netlink::Netlink;

/// One running (or stopped) agent of a [`Cluster`].
pub use fechter::lab_agent::LabAgent as Agent;
pub use fechter_linux::lab::{PingReport, guard_child, poll};

/// The kernel lease the agents install addresses with (`Settings::lease`).
pub const LEASE: Duration = Duration::from_secs(2);
/// How often the sampler looks at the nodes' kernels.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// The longest two holders may overlap in a make-before-break hand-off
/// (a heal, a planned move): the taker installs and confirms at once, the
/// giver reads the confirmation on its next tick (up to one heartbeat
/// interval, 15 ms) and removes its copy; a sampler that looks every
/// [`SAMPLE_EVERY`] can see that as up to two more periods, and a loaded
/// 2-core machine adds scheduling delay. Crash takeovers are held to
/// 20 ms: there the overlap is the sampler's alone.
pub const HANDOFF_OVERLAP: Duration = Duration::from_millis(50);
/// The longest a sampler runs.
const SAMPLER_LIMIT: Duration = Duration::from_secs(90);
/// The client's pinger: `ping -D -i 0.01`, for at most 90 s (`-w`).
const PING: PingOptions = PingOptions {
    interval: Duration::from_millis(10),
    deadline_secs: 90,
    unix_times: true,
};
/// Nodes of every test cluster.
pub const NODES: usize = 3;

/// The fechter binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fechter"))
}

/// The namespace tests run one at a time: each has three agents whose
/// failure detector gives up on a peer after 65 ms of silence, and a loaded
/// two-core machine must not turn one test's load into another's failover.
static SERIAL: Mutex<()> = Mutex::new(());

/// Takes this test's turn (see [`SERIAL`]).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The IP of an address spec such as `eth0:198.18.0.50/24`.
pub fn ip_of(spec: &str) -> IpAddr {
    spec.parse::<AddrSpec>()
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
        .ip
}

/// `nK` -> K.
pub fn node_of(id: &str) -> usize {
    id.strip_prefix('n')
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{id:?} is not a lab node id"))
}

/// Node K's id: `nK`.
pub fn id_of(node: usize) -> String {
    format!("n{node}")
}

/// Formats a MAC address.
pub fn mac(m: [u8; 6]) -> String {
    lab::format_mac(m)
}

/// How many lines of each agent's log a failing test prints
/// (`FECHTER_E2E_LOG_LINES`, default 80).
fn log_lines() -> usize {
    std::env::var("FECHTER_E2E_LOG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80)
}

/// A lab of [`NODES`] nodes and a client with one agent per node.
pub struct Cluster {
    // Field order is drop order: agents first, then the lab's namespaces,
    // then the files, then the lock.
    agents: Vec<Agent>,
    pub lab: Lab,
    dir: tempfile::TempDir,
    launcher: AgentLauncher,
    test: String,
    netns_before: Vec<String>,
    /// Extra `fechter agent` arguments per node.
    extra: Vec<Vec<String>>,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // FECHTER_E2E_DUMP=1 prints the logs of passing tests too.
        if std::thread::panicking() || std::env::var_os("FECHTER_E2E_DUMP").is_some() {
            for a in &self.agents {
                eprintln!(
                    "---- {}: log of n{} ({}) ----\n{}",
                    self.test,
                    a.node,
                    a.log.display(),
                    a.log_tail(log_lines())
                );
            }
        }
        for a in &mut self.agents {
            a.kill();
        }
    }
}

impl Cluster {
    /// Builds the lab and starts the agents: n0 first, then n1 and n2
    /// attaching to it, and waits until every agent sees all three alive.
    /// Nodes are still down (`fechter up` not yet given). `None` when the lab
    /// cannot run here (printed; a failure under CI=true).
    pub fn start(test: &str) -> Option<Cluster> {
        Cluster::start_with(test, |_| Vec::new(), |_| {})
    }

    /// [`Cluster::start_with`] on a lab of `nodes` machines (not [`NODES`]).
    pub fn start_sized(
        test: &str,
        nodes: usize,
        extra: impl Fn(usize) -> Vec<String>,
        prepare: impl FnOnce(&Lab),
    ) -> Option<Cluster> {
        Cluster::start_inner(test, nodes, extra, prepare)
    }

    /// [`Cluster::start`] with extra agent arguments per node, and a hook
    /// that prepares the lab (e.g. a gateway address) before any agent runs.
    pub fn start_with(
        test: &str,
        extra: impl Fn(usize) -> Vec<String>,
        prepare: impl FnOnce(&Lab),
    ) -> Option<Cluster> {
        Cluster::start_inner(test, NODES, extra, prepare)
    }

    fn start_inner(
        test: &str,
        nodes: usize,
        extra: impl Fn(usize) -> Vec<String>,
        prepare: impl FnOnce(&Lab),
    ) -> Option<Cluster> {
        if !lab::require_lab(test) {
            return None;
        }
        let serial = serial();
        let netns_before = lab::netns_list().expect("ip netns list");
        let lab = Lab::new(nodes).expect("building the namespace lab");
        let dir = tempfile::Builder::new()
            .prefix("fechter-e2e-")
            .tempdir()
            .expect("temp dir");
        let key = dir.path().join("cluster.key");
        let out = Command::new(bin())
            .arg("keygen")
            .arg(&key)
            .output()
            .expect("fechter keygen");
        assert!(out.status.success(), "keygen: {out:?}");
        let mut launcher = AgentLauncher::new(bin(), key, dir.path());
        // FECHTER_E2E_LOG (e.g. `debug`) makes the agents' logs louder.
        launcher.log_level =
            Some(std::env::var("FECHTER_E2E_LOG").unwrap_or_else(|_| "info".into()));
        launcher.banner = Some(test.to_owned());
        let mut cluster = Cluster {
            agents: Vec::new(),
            lab,
            dir,
            launcher,
            test: test.to_owned(),
            netns_before,
            extra: (0..nodes).map(extra).collect(),
            _serial: serial,
        };
        prepare(&cluster.lab);
        let t0 = Instant::now();
        let seed = cluster.lab.node_ipv4(0);
        for node in 0..nodes {
            let attach = if node == 0 { vec![] } else { vec![seed] };
            let agent = cluster.spawn(node, &attach);
            cluster.agents.push(agent);
            cluster.wait_control(node, Duration::from_secs(10));
        }
        let all: Vec<usize> = (0..nodes).collect();
        cluster.wait_members_alive(&all, Duration::from_secs(15));
        eprintln!(
            "{test}: lab {} with {nodes} agents formed in {:?}",
            cluster.lab.prefix(),
            t0.elapsed()
        );
        Some(cluster)
    }

    /// [`Cluster::start`], then `add-address` of every spec (through n0),
    /// `up` on every node, and waits until every address is served: on one
    /// node, answering the client, the client's neighbour entry naming the
    /// holder. Returns the holders.
    pub fn start_serving(test: &str, specs: &[&str]) -> Option<(Cluster, Vec<usize>)> {
        Cluster::start_serving_with(test, specs, |_| Vec::new(), |_| {})
    }

    /// [`Cluster::start_serving`] with [`Cluster::start_with`]'s arguments.
    pub fn start_serving_with(
        test: &str,
        specs: &[&str],
        extra: impl Fn(usize) -> Vec<String>,
        prepare: impl FnOnce(&Lab),
    ) -> Option<(Cluster, Vec<usize>)> {
        let cluster = Cluster::start_with(test, extra, prepare)?;
        for spec in specs {
            cluster.cli_ok(0, &["add-address", spec]);
        }
        cluster.up_all();
        for spec in specs {
            cluster.wait_converged(spec, &[0, 1, 2], Duration::from_secs(15));
        }
        // A calm start: the placement holds still for a second and every
        // node is eligible, so that what a scenario sees is its own doing.
        let (holders, _) = cluster.wait_stable(
            specs,
            &[0, 1, 2],
            Duration::from_secs(1),
            Duration::from_secs(15),
        );
        let report = cluster.status(0);
        let unfit: Vec<String> = report
            .members
            .iter()
            .filter(|m| m.liveness != "alive" || !m.ineligible.is_empty())
            .map(|m| format!("{} {} {:?}", m.id, m.liveness, m.ineligible))
            .collect();
        assert!(
            unfit.is_empty(),
            "{test}: the cluster is not healthy before the scenario starts: {unfit:?}\n{}",
            report.render()
        );
        for (spec, &h) in specs.iter().zip(&holders) {
            cluster.assert_serving(ip_of(spec), h, Duration::from_secs(5));
        }
        Some((cluster, holders))
    }

    fn spawn(&self, node: usize, attach: &[Ipv4Addr]) -> Agent {
        self.launcher
            .start(&self.lab, node, attach, &self.extra[node])
            .unwrap_or_else(|e| panic!("starting an agent: {e}"))
    }

    /// The agent of `node`.
    pub fn agent(&mut self, node: usize) -> &mut Agent {
        &mut self.agents[node]
    }

    /// The process id of `node`'s agent, if it runs.
    pub fn agent_pid(&self, node: usize) -> Option<i32> {
        self.agents[node].pid()
    }

    /// Namespace of `node`.
    pub fn ns(&self, node: usize) -> String {
        self.lab.ns_name(node)
    }

    /// Runs the CLI against `node`'s agent: stdout, or stderr as the error.
    pub fn cli(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(bin())
            .args(args)
            .arg("--control-socket")
            .arg(&self.agents[node].socket)
            .env_remove("FECHTER_SOCKET")
            .output()
            .map_err(|e| format!("running the CLI: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`fechter {}` on n{node} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// [`Cluster::cli`], which must succeed.
    pub fn cli_ok(&self, node: usize, args: &[&str]) -> String {
        self.cli(node, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `fechter up` on every node.
    pub fn up_all(&self) {
        for node in 0..self.agents.len() {
            self.cli_ok(node, &["up"]);
        }
    }

    /// `fechter status --json` of `node`.
    pub fn try_status(&self, node: usize) -> Result<StatusReport, String> {
        let out = self.cli(node, &["status", "--json"])?;
        serde_json::from_str(&out).map_err(|e| format!("status of n{node}: {e}: {out}"))
    }

    /// [`Cluster::try_status`], which must succeed.
    pub fn status(&self, node: usize) -> StatusReport {
        self.try_status(node).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The holder of `spec` in `node`'s status.
    pub fn status_holder(report: &StatusReport, spec: &str) -> Option<usize> {
        let ip = ip_of(spec);
        report
            .addresses
            .iter()
            .find(|a| a.spec.parse::<AddrSpec>().is_ok_and(|s| s.ip == ip))
            .and_then(|a| a.holder.as_deref())
            .map(node_of)
    }

    fn wait_control(&self, node: usize, limit: Duration) {
        let mut last = String::new();
        let ok = poll(limit, Duration::from_millis(20), || {
            match self.try_status(node) {
                Ok(_) => Some(()),
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        if ok.is_none() {
            panic!(
                "n{node}'s agent did not answer on its control socket within {limit:?}: {last}\n{}",
                self.agents[node].log_tail(30)
            );
        }
    }

    /// Waits until each of `nodes` sees every one of `nodes` alive.
    pub fn wait_members_alive(&self, nodes: &[usize], limit: Duration) -> Duration {
        let t0 = Instant::now();
        let mut last = String::new();
        let done = poll(limit, Duration::from_millis(50), || {
            for &n in nodes {
                let r = match self.try_status(n) {
                    Ok(r) => r,
                    Err(e) => {
                        last = e;
                        return None;
                    }
                };
                for &m in nodes {
                    let alive = r
                        .members
                        .iter()
                        .any(|s| s.id == id_of(m) && s.liveness == "alive");
                    if !alive {
                        last = format!("n{n} does not see n{m} alive:\n{}", r.render());
                        return None;
                    }
                }
            }
            Some(())
        });
        assert!(
            done.is_some(),
            "{}: members not all alive within {limit:?}: {last}",
            self.test
        );
        t0.elapsed()
    }

    /// The nodes whose `eth0` carries `ip` now (`ip -br addr show dev eth0`).
    pub fn kernel_holders(&self, ip: IpAddr) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|&node| self.lab.carries(node, ip).expect("ip addr show"))
            .collect()
    }

    /// The one node whose kernel carries `spec`'s address, if exactly one does.
    pub fn holder_of(&self, spec: &str) -> Option<usize> {
        match self.kernel_holders(ip_of(spec))[..] {
            [h] => Some(h),
            _ => None,
        }
    }

    /// Waits until exactly the nodes `want` carry `ip`; returns how long it took.
    pub fn wait_kernel(&self, ip: IpAddr, want: &[usize], limit: Duration) -> Duration {
        let t0 = Instant::now();
        let mut last = Vec::new();
        let done = poll(limit, Duration::from_millis(10), || {
            last = self.kernel_holders(ip);
            (last == want).then_some(())
        });
        assert!(
            done.is_some(),
            "{}: {ip} is on nodes {last:?}, not {want:?}, after {limit:?}",
            self.test
        );
        t0.elapsed()
    }

    /// Waits until every node of `among` names the same holder H for `spec`
    /// and H's kernel is the only one carrying it; returns H.
    pub fn wait_converged(&self, spec: &str, among: &[usize], limit: Duration) -> usize {
        let ip = ip_of(spec);
        let mut last = String::new();
        let done = poll(limit, Duration::from_millis(20), || {
            let mut holder = None;
            for &n in among {
                let r = match self.try_status(n) {
                    Ok(r) => r,
                    Err(e) => {
                        last = e;
                        return None;
                    }
                };
                let h = Cluster::status_holder(&r, spec);
                if h.is_none() || (holder.is_some() && holder != h) {
                    last = format!("n{n} says {spec} is held by {h:?}:\n{}", r.render());
                    return None;
                }
                holder = h;
            }
            let h = holder?;
            let on = self.kernel_holders(ip);
            if on != [h] {
                last = format!("status says n{h} holds {spec}, the kernels have it on {on:?}");
                return None;
            }
            Some(h)
        });
        done.unwrap_or_else(|| {
            panic!(
                "{}: {spec} did not converge within {limit:?}: {last}",
                self.test
            )
        })
    }

    /// Where every one of `specs` is, if all nodes in `among` agree on its
    /// holder and exactly that node's kernel carries it.
    pub fn placement(&self, specs: &[&str], among: &[usize]) -> Option<Vec<usize>> {
        let reports: Vec<StatusReport> = among
            .iter()
            .map(|&n| self.try_status(n).ok())
            .collect::<Option<_>>()?;
        specs
            .iter()
            .map(|spec| {
                let h = Cluster::status_holder(&reports[0], spec)?;
                let agree = reports
                    .iter()
                    .all(|r| Cluster::status_holder(r, spec) == Some(h));
                (agree && self.kernel_holders(ip_of(spec)) == [h]).then_some(h)
            })
            .collect()
    }

    /// Waits until [`Cluster::placement`] has been the same for `stable_for`;
    /// returns it and how long that took (including `stable_for`).
    pub fn wait_stable(
        &self,
        specs: &[&str],
        among: &[usize],
        stable_for: Duration,
        limit: Duration,
    ) -> (Vec<usize>, Duration) {
        let t0 = Instant::now();
        let mut current: Option<(Vec<usize>, Instant)> = None;
        let done = poll(limit, Duration::from_millis(50), || {
            let now = self.placement(specs, among);
            match (now, &current) {
                (Some(p), Some((q, since))) if &p == q => {
                    (since.elapsed() >= stable_for).then(|| p.clone())
                }
                (Some(p), _) => {
                    current = Some((p, Instant::now()));
                    None
                }
                (None, _) => {
                    current = None;
                    None
                }
            }
        });
        let p = done.unwrap_or_else(|| {
            panic!(
                "{}: {specs:?} did not settle (stable for {stable_for:?}) within {limit:?}",
                self.test
            )
        });
        (p, t0.elapsed())
    }

    /// Waits until every node sees every node alive and eligible.
    pub fn wait_all_eligible(&self, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let mut last = String::new();
        let done = poll(limit, Duration::from_millis(50), || {
            for n in 0..self.agents.len() {
                let r = self.try_status(n).ok()?;
                let unfit: Vec<&str> = r
                    .members
                    .iter()
                    .filter(|m| m.liveness != "alive" || !m.ineligible.is_empty())
                    .map(|m| m.id.as_str())
                    .collect();
                if r.members.len() != self.agents.len() || !unfit.is_empty() {
                    last = format!("n{n} sees {unfit:?} unfit:\n{}", r.render());
                    return None;
                }
            }
            Some(())
        });
        assert!(
            done.is_some(),
            "{}: not every node eligible within {limit:?}: {last}",
            self.test
        );
        t0.elapsed()
    }

    /// Waits until every node of `observers` sees `node` as dead.
    pub fn wait_seen_dead(&self, node: usize, observers: &[usize], limit: Duration) -> Duration {
        let t0 = Instant::now();
        let done = poll(limit, Duration::from_millis(20), || {
            observers
                .iter()
                .all(|&o| {
                    self.try_status(o).is_ok_and(|r| {
                        r.members
                            .iter()
                            .any(|m| m.id == id_of(node) && m.liveness == "dead")
                    })
                })
                .then_some(())
        });
        assert!(
            done.is_some(),
            "{}: n{node} not seen dead by {observers:?} within {limit:?}",
            self.test
        );
        t0.elapsed()
    }

    /// Pings `ip` from the client (1 s per attempt) until it answers; returns
    /// how long that took.
    pub fn client_ping_until_ok(&self, ip: IpAddr, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let client = self.lab.client_ns();
        let done = poll(limit, Duration::from_millis(1), || {
            self.lab
                .ping_once(&client, ip, Duration::from_secs(1))
                .expect("ping")
                .then_some(())
        });
        assert!(
            done.is_some(),
            "{}: the client got no answer from {ip} within {limit:?}",
            self.test
        );
        t0.elapsed()
    }

    /// The MAC the client's neighbour cache has for `ip`.
    pub fn client_neigh_mac(&self, ip: IpAddr) -> Option<[u8; 6]> {
        self.lab
            .neighbour_mac(&self.lab.client_ns(), ip)
            .expect("ip neigh")
    }

    /// Waits until the client's neighbour entry for `ip` names `node`'s MAC.
    pub fn wait_client_neigh(&self, ip: IpAddr, node: usize, limit: Duration) -> Duration {
        let t0 = Instant::now();
        let want = self.lab.mac_of(node).expect("mac");
        let mut last = None;
        let done = poll(limit, Duration::from_millis(10), || {
            last = self.client_neigh_mac(ip);
            (last == Some(want)).then_some(())
        });
        assert!(
            done.is_some(),
            "{}: the client's neighbour entry for {ip} is {:?}, not n{node}'s {} after {limit:?}",
            self.test,
            last.map(mac),
            mac(want)
        );
        t0.elapsed()
    }

    /// The client reaches `ip` and its neighbour entry names `node`.
    pub fn assert_serving(&self, ip: IpAddr, node: usize, limit: Duration) {
        self.client_ping_until_ok(ip, limit);
        self.wait_client_neigh(ip, node, limit);
    }

    /// Freezes `node`'s agent (SIGSTOP).
    pub fn stop(&mut self, node: usize) {
        self.signal(node, libc::SIGSTOP);
    }

    /// Thaws `node`'s agent (SIGCONT).
    pub fn cont(&mut self, node: usize) {
        self.signal(node, libc::SIGCONT);
    }

    /// Asks `node`'s agent to stop (SIGTERM: it hands its addresses off).
    pub fn term(&mut self, node: usize) {
        self.signal(node, libc::SIGTERM);
    }

    fn signal(&mut self, node: usize, sig: i32) {
        self.agents[node]
            .signal(sig)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Kills `node`'s agent (SIGKILL) and reaps it.
    pub fn kill(&mut self, node: usize) {
        self.agents[node].kill();
    }

    /// The machine dies: its agent is killed and its link goes down.
    pub fn kill_machine(&mut self, node: usize) {
        self.agents[node].kill();
        self.lab.set_link(node, false).expect("link down");
    }

    /// Starts `node`'s agent again with the same data dir and socket,
    /// attaching to every other node. The old process must be gone.
    pub fn restart(&mut self, node: usize) {
        assert!(
            !self.agents[node].running(),
            "n{node}: restart while the agent still runs"
        );
        let attach: Vec<Ipv4Addr> = (0..self.agents.len())
            .filter(|&n| n != node)
            .map(|n| self.lab.node_ipv4(n))
            .collect();
        let agent = self.spawn(node, &attach);
        self.agents[node] = agent;
    }

    /// Stops the agents, removes the lab and checks that `ip netns list` is
    /// as it was.
    pub fn finish(mut self) {
        let prefix = self.lab.prefix().to_owned();
        let before = std::mem::take(&mut self.netns_before);
        drop(self);
        assert_netns_restored(&prefix, &before);
    }
}

/// No namespace of lab `prefix` is left, and no other namespace (other than
/// other labs) appeared or disappeared.
pub fn assert_netns_restored(prefix: &str, before: &[String]) {
    let after = lab::netns_list().expect("ip netns list");
    let leftovers: Vec<&String> = after.iter().filter(|n| n.starts_with(prefix)).collect();
    assert!(
        leftovers.is_empty(),
        "lab {prefix} left namespaces: {leftovers:?}"
    );
    let other_lab = |n: &&String| n.starts_with("fch");
    let a: Vec<&String> = after.iter().filter(|n| !other_lab(n)).collect();
    let b: Vec<&String> = before.iter().filter(|n| !other_lab(n)).collect();
    assert_eq!(a, b, "`ip netns list` changed");
}

/// One look at every node's kernel: bit K set when node K carries the address.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub on: u32,
}

/// Records every [`SAMPLE_EVERY`] on which nodes an address is present,
/// reading the kernels' address tables through rtnetlink sockets opened in
/// the node namespaces (cheap enough not to disturb the agents, unlike
/// forking `ip` a few hundred times a second on a small machine).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Sample>, String>>>,
    pub started: Instant,
    nodes: usize,
}

impl Sampler {
    /// Starts sampling `ip` on every node of `lab`; returns once the first
    /// sample is taken.
    pub fn start(lab: &Lab, ip: IpAddr) -> Sampler {
        let namespaces: Vec<String> = (0..lab.nodes()).map(|n| lab.ns_name(n)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || -> Result<Vec<Sample>, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut handles = Vec::new();
                for ns in &namespaces {
                    // Each socket belongs to the namespace the thread is in
                    // when it is opened.
                    lab::enter_netns(ns).map_err(|e| e.to_string())?;
                    handles.push(Netlink::connect().await.map_err(|e| e.to_string())?);
                }
                let t0 = Instant::now();
                let mut samples = Vec::new();
                let rounds = SAMPLER_LIMIT.as_millis() / SAMPLE_EVERY.as_millis();
                for _ in 0..rounds {
                    if stop2.load(Ordering::Relaxed) || t0.elapsed() > SAMPLER_LIMIT {
                        break;
                    }
                    let mut on = 0u32;
                    for (k, h) in handles.iter().enumerate() {
                        let list = h.list().await.map_err(|e| e.to_string())?;
                        if list.iter().any(|a| a.ip == ip) {
                            on |= 1 << k;
                        }
                    }
                    samples.push(Sample {
                        at: Instant::now(),
                        on,
                    });
                    if samples.len() == 1 {
                        let _ = ready_tx.send(());
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
                Ok(samples)
            })
        });
        let started = Instant::now();
        let mut sampler = Sampler {
            stop,
            thread: Some(thread),
            started,
            nodes: lab.nodes(),
        };
        if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            let err = sampler.finish_inner().err().unwrap_or_default();
            panic!("the sampler did not start: {err}");
        }
        sampler
    }

    fn finish_inner(&mut self) -> Result<Vec<Sample>, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "the sampler panicked".to_string())?,
            None => Err("the sampler was already stopped".into()),
        }
    }

    /// Stops sampling and returns what was seen.
    pub fn stop(mut self) -> Timeline {
        let samples = self
            .finish_inner()
            .unwrap_or_else(|e| panic!("sampler: {e}"));
        assert!(!samples.is_empty(), "the sampler took no samples");
        Timeline {
            start: self.started,
            samples,
            nodes: self.nodes,
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`Sampler`] saw.
#[derive(Debug)]
pub struct Timeline {
    pub start: Instant,
    pub samples: Vec<Sample>,
    nodes: usize,
}

fn set(mask: u32, nodes: usize) -> String {
    let names: Vec<String> = (0..nodes)
        .filter(|k| mask & (1 << k) != 0)
        .map(id_of)
        .collect();
    format!("{{{}}}", names.join(","))
}

impl Timeline {
    /// Samples at or after `t`.
    pub fn since(&self, t: Instant) -> Timeline {
        Timeline {
            start: t,
            samples: self.samples.iter().copied().filter(|s| s.at >= t).collect(),
            nodes: self.nodes,
        }
    }

    /// Samples at or after `from` and before `to`.
    pub fn between(&self, from: Instant, to: Instant) -> Timeline {
        Timeline {
            start: from,
            samples: self
                .samples
                .iter()
                .copied()
                .filter(|s| s.at >= from && s.at < to)
                .collect(),
            nodes: self.nodes,
        }
    }

    /// Samples in which nobody had the address, after somebody first had it.
    pub fn zero_after_first(&self) -> usize {
        self.samples
            .iter()
            .skip_while(|s| s.on == 0)
            .filter(|s| s.on == 0)
            .count()
    }

    /// The longest stretch in which two or more of the nodes in `among`
    /// (a bit mask) had the address: from the first such sample to the first
    /// sample after it.
    pub fn longest_overlap(&self, among: u32) -> Duration {
        let mut longest = Duration::ZERO;
        let mut began: Option<Instant> = None;
        for s in &self.samples {
            let many = (s.on & among).count_ones() >= 2;
            match (many, began) {
                (true, None) => began = Some(s.at),
                (false, Some(b)) => {
                    longest = longest.max(s.at - b);
                    began = None;
                }
                _ => {}
            }
        }
        if let (Some(b), Some(last)) = (began, self.samples.last()) {
            longest = longest.max(last.at - b);
        }
        longest
    }

    /// When (since the start) a sample first satisfied `pred`.
    pub fn first(&self, pred: impl Fn(u32) -> bool) -> Option<Duration> {
        self.samples
            .iter()
            .find(|s| pred(s.on))
            .map(|s| s.at.saturating_duration_since(self.start))
    }

    /// When (since the start) a sample last satisfied `pred`.
    pub fn last(&self, pred: impl Fn(u32) -> bool) -> Option<Duration> {
        self.samples
            .iter()
            .rev()
            .find(|s| pred(s.on))
            .map(|s| s.at.saturating_duration_since(self.start))
    }

    /// Whether any sample satisfied `pred`.
    pub fn any(&self, pred: impl Fn(u32) -> bool) -> bool {
        self.samples.iter().any(|s| pred(s.on))
    }

    /// The set in the last sample.
    pub fn last_set(&self) -> u32 {
        self.samples.last().map_or(0, |s| s.on)
    }

    /// The changes, e.g. `+0ms {n0}  +412ms {n0,n2}  +431ms {n2}`.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        let mut prev = None;
        for s in &self.samples {
            if prev != Some(s.on) {
                out.push(format!(
                    "+{}ms {}",
                    s.at.saturating_duration_since(self.start).as_millis(),
                    set(s.on, self.nodes)
                ));
                prev = Some(s.on);
            }
        }
        out.join("  ")
    }
}

/// The node bit for [`Timeline`] masks.
pub fn bit(node: usize) -> u32 {
    1 << node
}

/// All nodes but `except`, as a mask.
pub fn all_but(except: &[usize]) -> u32 {
    (0..NODES)
        .filter(|n| !except.contains(n))
        .fold(0, |m, n| m | bit(n))
}

/// A client that pings an address every 10 ms ([`PING`]) and records when
/// answers came.
pub struct Pinger(lab::Pinger);

impl Pinger {
    /// Starts pinging `ip` from the lab's client and waits (bounded) for the
    /// first few answers, so that the report has a baseline.
    pub fn start(lab: &Lab, ip: IpAddr) -> Pinger {
        let pinger = lab::Pinger::start(lab, &lab.client_ns(), ip, &PING)
            .unwrap_or_else(|e| panic!("starting ping in the client: {e}"));
        assert!(
            pinger.wait_answers(5, Duration::from_secs(3)),
            "the client's pinger got no answers from {ip}"
        );
        Pinger(pinger)
    }

    /// Answers so far.
    pub fn count(&self) -> usize {
        self.0.count()
    }

    /// Stops the pinger (SIGINT) and returns the answers.
    pub fn stop(self) -> PingReport {
        self.0.finish()
    }
}

/// The current UNIX time, comparable with [`PingReport`] times.
pub fn now() -> f64 {
    lab::unix_now()
}

/// What [`run_bounded`] saw.
#[derive(Debug)]
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `cmd` with its output in files, for at most `limit` (then it is
/// killed and `status` is `None`).
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    guard_child(&mut cmd);
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let status = poll(limit, Duration::from_millis(20), || {
        child.try_wait().expect("try_wait")
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Finished {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        took: t0.elapsed(),
    }
}
