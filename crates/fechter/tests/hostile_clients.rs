//! Clients that hold connections to a real agent's control socket and
//! `/metrics` by the thousand, and a metrics port already taken: the agent
//! runs, answers, and moves no address.
//!
//! Agents run as in `processes.rs` (`local_agents`): on 127.0.0.1,
//! `--dry-run`, `--insecure`, an empty `--config`, killed and reaped on
//! drop.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use fechter::control::StatusReport;

mod local_agents;
use local_agents::*;

/// How long a wait may take.
const WAIT: Duration = Duration::from_secs(15);

/// Starts `name` on a free port with `--insecure` and `extra`, attached to
/// `attach`.
fn start(node: &NodeFiles, attach: &[&NodeFiles], extra: &[&str]) -> Agent {
    let mut args = vec!["--insecure"];
    args.extend(extra);
    Agent::start(node, attach, &args)
}

/// One node's files in `root`, on a free port.
fn node(root: &Path, name: &str) -> NodeFiles {
    NodeFiles::new(root, name, free_ports(1)[0])
}

/// Whether `st` answers and lists every one of `names` as alive.
fn all_alive(st: &Option<StatusReport>, names: &[&str]) -> bool {
    sees(st, names, &[])
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
    let a = start(&node(root.path(), "n0"), &[], &["--metrics-listen", &addr]);
    wait_for("the agent answers", &[&a], WAIT, |s| s[0].is_some());
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
    let ports = free_ports(2);
    let files = [
        NodeFiles::new(root.path(), "n0", ports[0]),
        NodeFiles::new(root.path(), "n1", ports[1]),
    ];
    let metrics = free_tcp_port();
    let listen = format!("127.0.0.1:{metrics}");
    let n0 = start(&files[0], &[&files[1]], &["--metrics-listen", &listen]);
    let n1 = start(&files[1], &[&files[0]], &[]);
    let both = [&n0, &n1];
    wait_for("n0 and n1 see each other", &both, WAIT, |s| {
        s.iter().all(|st| all_alive(st, &["n0", "n1"]))
    });
    for a in both {
        a.ok(&["up"]);
    }
    wait_for("both eligible", &both, WAIT, |s| {
        s.iter().flatten().count() == 2
            && s.iter().flatten().all(|s| {
                s.members.len() == 2
                    && s.members
                        .iter()
                        .all(|m| m.admin == "up" && m.ineligible.is_empty())
            })
    });
    let spec = addr("198.51.100.10");
    n0.ok(&["add-address", &spec]);
    wait_for("the address is placed", &both, WAIT, |s| {
        s.iter().flatten().count() == 2
            && s.iter().flatten().all(|s| {
                s.addresses
                    .iter()
                    .any(|x| x.holder.is_some() && x.standby.is_some())
            })
    });
    // ...and installed by its holder.
    let start = Instant::now();
    while !both
        .iter()
        .any(|a| events(a).iter().any(|e| e["event"] == "acquired"))
    {
        assert!(start.elapsed() < Duration::from_secs(15), "never acquired");
        sleep(Duration::from_millis(50));
    }
    sleep(Duration::from_millis(500));
    let placed = n0.status().unwrap().addresses;
    let before: Vec<usize> = both.iter().map(|a| events(a).len()).collect();

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
        assert!(all_alive(&Some(st.clone()), &["n0", "n1"]), "{st:?}");
        assert!(all_alive(&n1.status(), &["n0", "n1"]));
        sleep(Duration::from_millis(100));
    }
    assert!(slowest < Duration::from_secs(2), "status took {slowest:?}");
    let text = scrape(metrics);
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
    for (a, before) in both.iter().zip(before) {
        let new = &events(a)[before..];
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
