//! Clients that hold connections to a real agent's control socket and
//! `/metrics` by the thousand, and a metrics port already taken: the agent
//! runs, answers, and moves no address.
//!
//! Agents run as in `processes.rs`: on 127.0.0.1, `--dry-run`, `--insecure`,
//! an empty `--config`, killed and reaped on drop.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use fechter::control::StatusReport;

const BIN: &str = env!("CARGO_BIN_EXE_fechter");

struct Agent {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (TCP and UDP alike are free enough for a test).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Agent {
    fn start(root: &Path, name: &str, port: u16, extra: &[String]) -> Agent {
        let config = root.join("fechter.toml");
        fs::write(&config, "").unwrap();
        let log = root.join(format!("{name}.log"));
        let socket = root.join(format!("{name}.sock"));
        let child = Command::new(BIN)
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .args(["--node-id", name, "--listen", &format!("127.0.0.1:{port}")])
            .args(["--dry-run", "--insecure"])
            .arg("--data-dir")
            .arg(root.join(format!("{name}-data")))
            .arg("--control-socket")
            .arg(&socket)
            .args(extra)
            .env("FECHTER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn fechter agent");
        Agent { child, socket, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--control-socket")
            .arg(&self.socket)
            .output()
            .unwrap()
    }

    fn status(&self) -> Option<StatusReport> {
        let out = self.cli(&["status", "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// Polls `status` until `cond` holds (bounded).
    fn wait(&self, what: &str, cond: impl Fn(&StatusReport) -> bool) {
        let start = Instant::now();
        while !self.status().is_some_and(|s| cond(&s)) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{what}: not within 15 s; log:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// Its events, one JSON object each.
    fn events(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["events", "--json"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn sees_alive(st: &StatusReport, names: &[&str]) -> bool {
    names.iter().all(|n| {
        st.members
            .iter()
            .any(|m| m.id == *n && m.liveness == "alive")
    })
}

/// `GET /metrics` from 127.0.0.1:`port`.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Soft and hard "Max open files" of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut f = line["Max open files".len()..].split_whitespace();
    (f.next().unwrap().into(), f.next().unwrap().into())
}

#[test]
fn a_metrics_port_in_use_is_logged_and_the_agent_runs() {
    let root = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let a = Agent::start(
        root.path(),
        "n0",
        free_port(),
        &["--metrics-listen".into(), addr.clone()],
    );
    a.wait("the agent answers", |_| true);
    let log = a.log();
    assert!(
        log.contains(&format!("cannot serve metrics on {addr}"))
            && log.contains("without /metrics"),
        "{log}"
    );
    let (soft, hard) = open_files_limits(a.child.id());
    assert_eq!(soft, hard, "the open files limit is raised to the hard one");
}

#[test]
fn thousands_of_idle_connections_move_no_address() {
    fechter::agent::limits::raise_nofile().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (p0, p1, metrics) = (free_port(), free_port(), free_port());
    let n0 = Agent::start(
        root.path(),
        "n0",
        p0,
        &[
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics}"),
            "--attach".into(),
            format!("127.0.0.1:{p1}"),
        ],
    );
    let n1 = Agent::start(
        root.path(),
        "n1",
        p1,
        &["--attach".into(), format!("127.0.0.1:{p0}")],
    );
    for a in [&n0, &n1] {
        a.wait("n0 and n1 see each other", |s| sees_alive(s, &["n0", "n1"]));
        assert!(a.cli(&["up"]).status.success());
    }
    for a in [&n0, &n1] {
        a.wait("both eligible", |s| {
            s.members.len() == 2
                && s.members
                    .iter()
                    .all(|m| m.admin == "up" && m.ineligible.is_empty())
        });
    }
    let spec = "fch-none0:198.51.100.10/24";
    assert!(n0.cli(&["add-address", spec]).status.success());
    for a in [&n0, &n1] {
        a.wait("the address is placed", |s| {
            s.addresses
                .iter()
                .any(|x| x.holder.is_some() && x.standby.is_some())
        });
    }
    // ...and installed by its holder.
    let start = Instant::now();
    while ![&n0, &n1]
        .iter()
        .any(|a| a.events().iter().any(|e| e["event"] == "acquired"))
    {
        assert!(start.elapsed() < Duration::from_secs(15), "never acquired");
        sleep(Duration::from_millis(50));
    }
    sleep(Duration::from_millis(500));
    let placed = n0.status().unwrap().addresses;
    let before: Vec<usize> = [&n0, &n1].iter().map(|a| a.events().len()).collect();

    // 2,000 idle connections to each of n0's servers, held for 3 s.
    let idle_control: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(&n0.socket).unwrap())
        .collect();
    let idle_metrics: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(("127.0.0.1", metrics)).unwrap())
        .collect();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let st = n0.status().expect("n0 answers with 4,000 idle connections");
        slowest = slowest.max(t.elapsed());
        assert!(sees_alive(&st, &["n0", "n1"]), "{st:?}");
        assert!(sees_alive(&n1.status().unwrap(), &["n0", "n1"]));
        sleep(Duration::from_millis(100));
    }
    assert!(slowest < Duration::from_secs(2), "status took {slowest:?}");
    let text = scrape(metrics);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("fechter_takeovers_total 0"),
        "no takeover on n0:\n{text}"
    );
    for server in ["control", "metrics"] {
        let evicted = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "fechter_connections_dropped_total{{server=\"{server}\",reason=\"evicted\"}} "
                ))
            })
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no evicted count for {server}:\n{text}"));
        assert!(evicted > 1900, "{server}: {evicted} evicted");
    }
    drop((idle_control, idle_metrics));

    // Nothing moved, nobody was taken for dead.
    assert_eq!(n0.status().unwrap().addresses, placed);
    for (a, before) in [&n0, &n1].iter().zip(before) {
        let new = &a.events()[before..];
        assert!(
            new.iter().all(|e| ![
                "took-over",
                "member-down",
                "released",
                "acquired",
                "quorum-lost",
                "minority"
            ]
            .contains(&e["event"].as_str().unwrap_or(""))),
            "{new:#?}"
        );
    }
}
