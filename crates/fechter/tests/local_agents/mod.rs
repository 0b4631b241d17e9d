//! Real `fechter agent` processes on 127.0.0.1, for the tests that run
//! them (`processes.rs`, `hostile_clients.rs`): each node's files, the
//! [`Agent`] guard that kills and reaps its process on drop, the CLI and
//! `/metrics` as an operator reaches them, and bounded waits.
#![allow(dead_code)] // each test crate uses its own part

use std::fs;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use fechter::control::StatusReport;

pub const BIN: &str = env!("CARGO_BIN_EXE_fechter");
/// How often a waiting test asks for `status`.
pub const POLL: Duration = Duration::from_millis(50);
/// An interface no test machine has.
pub const NO_IFACE: &str = "fch-none0";

/// `NO_IFACE:ip/24`.
pub fn addr(ip: &str) -> String {
    format!("{NO_IFACE}:{ip}/24")
}

/// Free UDP ports on 127.0.0.1: bound together (so they differ), then released.
pub fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("local addr").port())
        .collect()
}

pub fn keygen(path: &Path) {
    let out = Command::new(BIN)
        .arg("keygen")
        .arg(path)
        .output()
        .expect("run fechter keygen");
    assert!(out.status.success(), "keygen: {out:?}");
}

/// One node's files: data directory, control socket, log.
pub struct NodeFiles {
    pub name: String,
    pub port: u16,
    /// An empty config file.
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl NodeFiles {
    pub fn new(root: &Path, name: &str, port: u16) -> NodeFiles {
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

    pub fn listen(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A running agent; killed (SIGKILL) and reaped on drop.
pub struct Agent {
    pub child: Child,
    pub name: String,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts `fechter agent` with `extra` flags; its stderr goes to its log file.
    pub fn start(node: &NodeFiles, attach: &[&NodeFiles], extra: &[&str]) -> Agent {
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

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `fechter status --json`; `None` while the agent does not answer.
    pub fn status(&self) -> Option<StatusReport> {
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

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--control-socket")
            .arg(&self.socket)
            .output()
            .expect("run the fechter CLI")
    }

    pub fn ok(&self, args: &[&str]) {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}: fechter {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
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
pub fn wait_for(
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
pub fn sees(st: &Option<StatusReport>, alive: &[&str], dead: &[&str]) -> bool {
    let Some(st) = st else { return false };
    let is = |id: &str, l: &str| st.members.iter().any(|m| m.id == id && m.liveness == l);
    alive.iter().all(|n| is(n, "alive")) && dead.iter().all(|n| is(n, "dead"))
}

/// `fechter events --json` of `a`: one object per line.
pub fn events(a: &Agent) -> Vec<serde_json::Value> {
    let out = a.cli(&["events", "--json"]);
    assert!(
        out.status.success(),
        "{}: fechter events: {}",
        a.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A free TCP port on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `GET /metrics` from 127.0.0.1:`port` (bounded).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read /metrics");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    out
}

/// The value of the sample `name` (with its labels) in a metrics text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
