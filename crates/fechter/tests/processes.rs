//! Real `fechter agent` processes on 127.0.0.1 with real UDP sockets and
//! control sockets, driven through the CLI as an operator would.
//!
//! Every agent is owned by an [`Agent`] guard that kills and reaps it on
//! drop, also when a test panics. Waits poll `fechter status` in bounded
//! loops.
//!
//! Agents run with `--dry-run` (decisions are made and logged, interfaces
//! are never touched, so no privilege is needed) and an empty `--config`
//! (so a `/etc/fechter/fechter.toml` on the test machine does not leak in).
//! Their addresses also name an interface no machine has.

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use fechter::control::StatusReport;

const BIN: &str = env!("CARGO_BIN_EXE_fechter");
/// How often a waiting test asks for `status`.
const POLL: Duration = Duration::from_millis(50);
/// An interface no test machine has.
const NO_IFACE: &str = "fch-none0";

/// `NO_IFACE:ip/24`.
fn addr(ip: &str) -> String {
    format!("{NO_IFACE}:{ip}/24")
}

/// Free UDP ports on 127.0.0.1: bound together (so they differ), then released.
fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

fn keygen(path: &Path) {
    let out = Command::new(BIN)
        .arg("keygen")
        .arg(path)
        .output()
        .expect("run fechter keygen");
    assert!(out.status.success(), "keygen: {out:?}");
}

/// One node's files: data directory, control socket, log.
struct NodeFiles {
    name: String,
    port: u16,
    /// An empty config file.
    config: PathBuf,
    data_dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl NodeFiles {
    fn new(root: &Path, name: &str, port: u16) -> NodeFiles {
        let config = root.join("fechter.toml");
        fs::write(&config, "").expect("write an empty config file");
        NodeFiles {
            config,
            name: name.to_string(),
            port,
            data_dir: root.join(format!("{name}-data")),
            socket: root.join(format!("{name}.sock")),
            log: root.join(format!("{name}.log")),
        }
    }

    fn listen(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A running agent; killed (SIGKILL) and reaped on drop.
struct Agent {
    child: Child,
    name: String,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts `fechter agent` with `extra` flags; its stderr goes to its log file.
    fn start(node: &NodeFiles, attach: &[&NodeFiles], extra: &[&str]) -> Agent {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .arg("--config")
            .arg(&node.config)
            .args(["--node-id", &node.name, "--listen", &node.listen()])
            .arg("--dry-run")
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--control-socket")
            .arg(&node.socket)
            .args(extra)
            .env("FECHTER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for a in attach {
            cmd.args(["--attach", &a.listen()]);
        }
        Agent {
            child: cmd.spawn().expect("spawn fechter agent"),
            name: node.name.clone(),
            socket: node.socket.clone(),
            log: node.log.clone(),
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `fechter status --json`; `None` while the agent does not answer.
    fn status(&self) -> Option<StatusReport> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: unreadable status ({e}): {}",
                self.name,
                String::from_utf8_lossy(&out.stdout)
            )
        }))
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--control-socket")
            .arg(&self.socket)
            .output()
            .expect("run the fechter CLI")
    }

    fn ok(&self, args: &[&str]) {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}: fechter {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(
                start.elapsed() < limit,
                "{} did not exit within {limit:?}; log:\n{}",
                self.name,
                self.log()
            );
            sleep(Duration::from_millis(20));
        }
    }
}

/// Polls until `cond` holds for the statuses of `agents`; panics after
/// `limit` with the last statuses and the logs. Returns the time taken.
fn wait_for(
    what: &str,
    agents: &[&Agent],
    limit: Duration,
    cond: impl Fn(&[Option<StatusReport>]) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let statuses: Vec<Option<StatusReport>> = agents.iter().map(|a| a.status()).collect();
        if cond(&statuses) {
            return start.elapsed();
        }
        if start.elapsed() > limit {
            let logs: Vec<String> = agents
                .iter()
                .map(|a| format!("--- {} ---\n{}", a.name, a.log()))
                .collect();
            panic!(
                "{what}: not within {limit:?}\nstatuses: {statuses:#?}\n{}",
                logs.join("\n")
            );
        }
        sleep(POLL);
    }
}

/// Whether `st` lists every one of `alive` as alive and `dead` as dead.
fn sees(st: &Option<StatusReport>, alive: &[&str], dead: &[&str]) -> bool {
    let Some(st) = st else { return false };
    let is = |id: &str, l: &str| st.members.iter().any(|m| m.id == id && m.liveness == l);
    alive.iter().all(|n| is(n, "alive")) && dead.iter().all(|n| is(n, "dead"))
}

fn lists(st: &Option<StatusReport>, addrs: &[String]) -> bool {
    let Some(st) = st else { return false };
    let mut have: Vec<&str> = st.addresses.iter().map(|a| a.spec.as_str()).collect();
    let mut want: Vec<&str> = addrs.iter().map(String::as_str).collect();
    have.sort_unstable();
    want.sort_unstable();
    have == want
}

const NAMES: [&str; 3] = ["n0", "n1", "n2"];

/// Three nodes' files and a shared key, in `root`.
fn three(root: &Path) -> (Vec<NodeFiles>, PathBuf) {
    let key = root.join("cluster.key");
    keygen(&key);
    let ports = free_ports(3);
    let nodes = NAMES
        .iter()
        .zip(ports)
        .map(|(n, p)| NodeFiles::new(root, n, p))
        .collect();
    (nodes, key)
}

fn start_all(nodes: &[NodeFiles], key: &Path) -> Vec<Agent> {
    let key = key.to_str().expect("utf-8 path");
    nodes
        .iter()
        .map(|n| {
            let others: Vec<&NodeFiles> = nodes.iter().filter(|o| o.name != n.name).collect();
            Agent::start(n, &others, &["--key-file", key])
        })
        .collect()
}

fn formed(agents: &[Agent]) -> Duration {
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_for(
        "all 3 agents see each other alive",
        &refs,
        Duration::from_secs(10),
        |s| s.iter().all(|st| sees(st, &NAMES, &[])),
    )
}

#[test]
fn three_agents_form_a_cluster_and_report_a_killed_one_dead() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, key) = three(root.path());
    let mut agents = start_all(&nodes, &key);
    let took = formed(&agents);
    eprintln!("3 agents formed a cluster in {took:?}");

    let mut victim = agents.pop().expect("n2");
    victim.child.kill().expect("SIGKILL n2");
    let killed = Instant::now();
    victim.wait_exit(Duration::from_secs(5));
    let survivors: Vec<&Agent> = agents.iter().collect();
    wait_for(
        "n0 and n1 report n2 dead",
        &survivors,
        Duration::from_secs(5),
        |s| s.iter().all(|st| sees(st, &["n0", "n1"], &["n2"])),
    );
    let detected = killed.elapsed();
    eprintln!("a SIGKILLed agent was reported dead by both survivors {detected:?} after the kill");
    // The survivors keep each other alive afterwards.
    sleep(Duration::from_secs(1));
    for a in &agents {
        let st = a.status();
        assert!(sees(&st, &["n0", "n1"], &["n2"]), "{}: {st:?}", a.name);
    }
}

#[test]
fn a_full_cluster_restart_loses_no_address() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, key) = three(root.path());
    let mut agents = start_all(&nodes, &key);
    formed(&agents);
    // Added on two different nodes, and everyone is stopped at once: each
    // acknowledged command is already on its node's disk.
    let want = [addr("198.51.100.10"), addr("198.51.100.11")];
    agents[0].ok(&["add-address", &want[0]]);
    agents[1].ok(&["add-address", &want[1]]);
    for a in &agents {
        a.signal(libc::SIGTERM);
    }
    for a in &mut agents {
        let st = a.wait_exit(Duration::from_secs(10));
        assert!(
            st.success(),
            "{} exited with {st}; log:\n{}",
            a.name,
            a.log()
        );
        assert!(!a.socket.exists(), "{} left its control socket", a.name);
    }
    drop(agents);

    let agents = start_all(&nodes, &key);
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_for(
        "after the restart all 3 are alive and list both addresses",
        &refs,
        Duration::from_secs(10),
        |s| s.iter().all(|st| sees(st, &NAMES, &[]) && lists(st, &want)),
    );
}

/// Starts one agent that is expected to fail; returns its exit status and log.
fn start_failing(node: &NodeFiles, extra: &[&str]) -> (ExitStatus, String) {
    let mut a = Agent::start(node, &[], extra);
    let st = a.wait_exit(Duration::from_secs(10));
    (st, a.log())
}

#[test]
fn a_corrupt_state_file_stops_the_agent_and_names_the_file() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeFiles::new(root.path(), "n0", free_ports(1)[0]);
    fs::create_dir(&node.data_dir).unwrap();
    let state = node.data_dir.join("state.json");
    fs::write(&state, "{\"incarnation\": 3, \"admin\": ").unwrap();
    let (st, log) = start_failing(&node, &["--insecure"]);
    assert!(!st.success(), "exited with {st}; log:\n{log}");
    assert!(
        log.contains(&state.display().to_string()) && log.contains("corrupt"),
        "the error does not name {}:\n{log}",
        state.display()
    );
    // The file is left for the operator to repair.
    assert_eq!(
        fs::read_to_string(&state).unwrap(),
        "{\"incarnation\": 3, \"admin\": "
    );
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("cluster.key");
    keygen(&key);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let node = NodeFiles::new(root.path(), "n0", free_ports(1)[0]);
    let (st, log) = start_failing(&node, &["--key-file", key.to_str().unwrap()]);
    assert!(!st.success(), "exited with {st}; log:\n{log}");
    assert!(
        log.contains(&format!("chmod 600 {}", key.display())),
        "no `chmod 600` advice:\n{log}"
    );
    assert!(!node.data_dir.exists(), "it started anyway");
}

#[test]
fn no_key_and_no_insecure_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeFiles::new(root.path(), "n0", free_ports(1)[0]);
    let (st, log) = start_failing(&node, &[]);
    assert!(!st.success(), "exited with {st}; log:\n{log}");
    assert!(
        log.contains("fechter keygen"),
        "no `fechter keygen` advice:\n{log}"
    );
    assert!(log.contains("--insecure"), "{log}");
    assert!(!node.data_dir.exists(), "it started anyway");
}

#[test]
fn sighup_does_not_stop_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let (nodes, key) = three(root.path());
    let mut agents = start_all(&nodes[..1], &key);
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_for("the agent answers", &refs, Duration::from_secs(10), |s| {
        s.iter().all(Option::is_some)
    });
    agents[0].signal(libc::SIGHUP);
    // It still answers, and says why nothing changed.
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_for(
        "the agent logged the SIGHUP",
        &refs,
        Duration::from_secs(5),
        |_| agents[0].log().contains("SIGHUP"),
    );
    assert!(agents[0].status().is_some(), "{}", agents[0].log());
    agents[0].signal(libc::SIGTERM);
    assert!(agents[0].wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeFiles::new(root.path(), "n0", free_ports(1)[0]);
    let mut agent = Agent::start(&node, &[], &["--insecure", "--log-format", "json"]);
    let refs = vec![&agent];
    wait_for("the agent answers", &refs, Duration::from_secs(10), |s| {
        s.iter().all(Option::is_some)
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
    let log = agent.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
}
