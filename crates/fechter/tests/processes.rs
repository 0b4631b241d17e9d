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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::thread::sleep;
use std::time::{Duration, Instant};

use fechter::control::StatusReport;

mod local_agents;
use local_agents::*;

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

/// The scheduling policy of a process (`/proc/PID/stat` field 41).
fn policy(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(38)?.parse().ok()
}

#[test]
fn realtime_runs_the_agent_at_real_time_priority_and_its_children_normal() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeFiles::new(root.path(), "n0", free_ports(1)[0]);
    let plain = Agent::start(&node, &[], &["--insecure"]);
    let refs = vec![&plain];
    wait_for("the agent answers", &refs, Duration::from_secs(10), |s| {
        s.iter().all(Option::is_some)
    });
    assert_eq!(policy(plain.child.id()), Some(libc::SCHED_OTHER as u32));
    drop(plain);
    // A check script records the policy it runs with.
    let seen = root.path().join("check-policy");
    fs::write(
        &node.config,
        format!(
            "realtime = true\n[[check]]\nname = \"policy\"\ncommand = \"cut -d' ' -f41 /proc/self/stat > {}\"\n",
            seen.display()
        ),
    )
    .unwrap();
    let rt = Agent::start(&node, &[], &["--insecure"]);
    let refs = vec![&rt];
    wait_for("the agent answers", &refs, Duration::from_secs(10), |s| {
        s.iter().all(Option::is_some)
    });
    if policy(rt.child.id()) != Some(libc::SCHED_RR as u32) {
        panic!("not SCHED_RR: {:?}\n{}", policy(rt.child.id()), rt.log());
    }
    wait_for("the check ran", &refs, Duration::from_secs(10), |_| {
        fs::read_to_string(&seen).is_ok_and(|t| !t.trim().is_empty())
    });
    let child_policy = fs::read_to_string(&seen).unwrap();
    assert_eq!(
        child_policy.trim(),
        "0",
        "check scripts must run at normal priority"
    );
    assert!(rt.log().contains("real-time priority"), "{}", rt.log());
}

// ---- Observability: `fechter events`, /metrics, notify hooks ----

/// Whether `evs` has `acquired` `spec` with a reason starting with `reason`.
fn acquired(evs: &[serde_json::Value], spec: &str, reason: &str) -> bool {
    evs.iter().any(|e| {
        e["event"] == "acquired"
            && e["address"] == spec
            && e["reason"].as_str().is_some_and(|r| r.starts_with(reason))
    })
}

/// Two agents (n0, n1) with `config` as their config file, both up and
/// eligible, then two addresses, one held by each. Returns the agents, the
/// addresses, and which agent holds the first one.
fn two_serving(
    root: &Path,
    config: &str,
    extra: &[&[&str]; 2],
) -> (Vec<Agent>, [String; 2], usize) {
    let key = root.join("cluster.key");
    keygen(&key);
    let key = key.to_str().unwrap();
    let ports = free_ports(2);
    let nodes: Vec<NodeFiles> = ["n0", "n1"]
        .iter()
        .zip(ports)
        .map(|(n, p)| NodeFiles::new(root, n, p))
        .collect();
    fs::write(&nodes[0].config, config).unwrap();
    let agents: Vec<Agent> = (0..2)
        .map(|i| {
            let mut flags = vec!["--key-file", key];
            flags.extend(extra[i]);
            Agent::start(&nodes[i], &[&nodes[1 - i]], &flags)
        })
        .collect();
    let refs: Vec<&Agent> = agents.iter().collect();
    wait_for(
        "n0 and n1 see each other",
        &refs,
        Duration::from_secs(10),
        |s| s.iter().all(|st| sees(st, &["n0", "n1"], &[])),
    );
    for a in &agents {
        a.ok(&["up"]);
    }
    // Both eligible (up and mature) before any address exists: each address
    // goes straight to its holder, with no hand-off in between.
    wait_for(
        "n0 and n1 are eligible",
        &refs,
        Duration::from_secs(10),
        |s| {
            s.iter().all(|st| {
                st.as_ref().is_some_and(|st| {
                    st.members.len() == 2
                        && st
                            .members
                            .iter()
                            .all(|m| m.admin == "up" && m.ineligible.is_empty())
                })
            })
        },
    );
    let want = [addr("198.51.100.10"), addr("198.51.100.11")];
    agents[0].ok(&["add-address", &want[0]]);
    agents[0].ok(&["add-address", &want[1]]);
    let placed = |st: &Option<StatusReport>| {
        st.as_ref().is_some_and(|st| {
            st.addresses.len() == 2
                && st
                    .addresses
                    .iter()
                    .all(|a| a.holder.is_some() && a.standby.is_some())
                && st.addresses[0].holder != st.addresses[1].holder
        })
    };
    wait_for(
        "each node holds one address",
        &refs,
        Duration::from_secs(10),
        |s| s.iter().all(placed),
    );
    // ...and has installed it.
    let start = Instant::now();
    let holder = loop {
        let st = agents[0].status().expect("n0 answers");
        let h = st.addresses[0].holder.clone().unwrap();
        let i = usize::from(h == "n1");
        let j = 1 - i;
        if acquired(&events(&agents[i]), &want[0], "assigned")
            && acquired(&events(&agents[j]), &want[1], "assigned")
        {
            break i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the addresses were not acquired: {:?} {:?}",
            events(&agents[0]),
            events(&agents[1])
        );
        sleep(POLL);
    };
    (agents, want, holder)
}

/// Polls the survivor's events until it acquired `spec` by takeover;
/// returns the time since `since`.
fn wait_takeover(survivor: &Agent, spec: &str, victim: &str, since: Instant) -> Duration {
    loop {
        if acquired(&events(survivor), spec, &format!("takeover from {victim}")) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{} did not take {spec} over: {:#?}\n{}",
            survivor.name,
            events(survivor),
            survivor.log()
        );
        sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_takeover_shows_in_events_and_metrics() {
    let root = tempfile::tempdir().unwrap();
    let m = [free_tcp_port(), free_tcp_port()];
    let (m0, m1) = (format!("127.0.0.1:{}", m[0]), format!("127.0.0.1:{}", m[1]));
    let (mut agents, want, h) = two_serving(
        root.path(),
        "",
        &[&["--metrics-listen", &m0], &["--metrics-listen", &m1]],
    );
    let s = 1 - h;
    let before = scrape(m[s]);
    assert_eq!(
        sample(&before, "fechter_addresses_held"),
        Some(1.0),
        "{before}"
    );
    assert_eq!(
        sample(&before, "fechter_takeovers_total"),
        Some(0.0),
        "{before}"
    );

    let victim_name = agents[h].name.clone();
    agents[h].child.kill().expect("SIGKILL the holder");
    let killed = Instant::now();
    agents[h].wait_exit(Duration::from_secs(5));
    let took = wait_takeover(&agents[s], &want[0], &victim_name, killed);
    eprintln!(
        "{} took {} over {took:?} after the kill",
        agents[s].name, want[0]
    );

    let evs = events(&agents[s]);
    let seqs: Vec<u64> = evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(
        evs.iter()
            .all(|e| e["time_ms"].as_u64().unwrap() > 1_600_000_000_000)
    );
    let took_over = evs
        .iter()
        .find(|e| e["event"] == "took-over" && e["holder"] == victim_name.as_str())
        .unwrap_or_else(|| panic!("no took-over event: {evs:#?}"));
    let silence = took_over["silence_ms"].as_u64().unwrap();
    assert!((65..1000).contains(&silence), "silence {silence} ms");
    assert!(
        evs.iter().any(|e| e["event"] == "member-up"),
        "no member-up: {evs:#?}"
    );
    // `fechter events` after a sequence number, and the text form.
    let text = agents[s].cli(&["events"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines().any(|l| l.contains(&format!(
            "acquired {} (takeover from {victim_name})",
            want[0]
        ))),
        "{text}"
    );

    let after = scrape(m[s]);
    let n = |name| sample(&after, name).unwrap_or_else(|| panic!("no {name}:\n{after}"));
    assert!(n("fechter_takeovers_total") >= 1.0, "{after}");
    assert!(
        n("fechter_takeover_silence_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        n("fechter_takeover_silence_seconds_sum") >= 0.065,
        "{after}"
    );
    assert!(n("fechter_announcements_total") >= 1.0, "{after}");
    // Alone of two without a gateway, it serves as a minority (a dry run
    // assumes a live segment): no majority, so the quorum gauge is 0.
    assert_eq!(n("fechter_quorum"), 0.0, "{after}");
    // The gauges follow within a renewal (500 ms).
    let start = Instant::now();
    loop {
        let t = scrape(m[s]);
        if sample(&t, "fechter_addresses_held") == Some(2.0)
            && sample(&t, "fechter_members{state=\"dead\"}") == Some(1.0)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{t}");
        sleep(POLL);
    }
}

/// A config whose hooks append their environment to `out`.
fn recording_hooks(out: &Path, acquire_prefix: &str, timeout_ms: u64) -> String {
    let record = format!(
        "echo \"$FECHTER_EVENT|$FECHTER_NODE|$FECHTER_ADDRESS|$FECHTER_IP|$FECHTER_INTERFACE|$FECHTER_REASON|$FECHTER_LEADER\" >> {}",
        out.display()
    );
    format!(
        "notify_acquire = '{acquire_prefix}{record}'\nnotify_release = '{record}'\nnotify_leader = '{record}'\nnotify_timeout_ms = {timeout_ms}\n"
    )
}

/// The acquire/release lines of a hook record, without FECHTER_LEADER, sorted.
fn hook_calls(out: &Path) -> Vec<String> {
    let text = fs::read_to_string(out).unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("leader|"))
        .map(|l| l.rsplit_once('|').map_or(l, |(head, _)| head).to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn notify_hooks_see_exactly_the_acquires_and_releases_of_a_failover() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("hooks.log");
    let config = recording_hooks(&out, "", 5000);
    let (mut agents, want, h) = two_serving(root.path(), &config, &[&[], &[]]);
    let s = 1 - h;
    let (holder, survivor) = (agents[h].name.clone(), agents[s].name.clone());
    let ip = |spec: &str| {
        spec.split(':')
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let line = |event: &str, node: &str, spec: &str, reason: &str| {
        format!("{event}|{node}|{spec}|{}|{NO_IFACE}|{reason}", ip(spec))
    };
    let mut expected = vec![
        line("acquire", &holder, &want[0], "assigned"),
        line("acquire", &survivor, &want[1], "assigned"),
    ];
    expected.sort();
    let wait_calls = |expected: &Vec<String>| {
        let start = Instant::now();
        while hook_calls(&out) != *expected {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "hook calls {:#?}, expected {expected:#?}",
                hook_calls(&out)
            );
            sleep(POLL);
        }
    };
    wait_calls(&expected);

    agents[h].child.kill().expect("SIGKILL the holder");
    let killed = Instant::now();
    agents[h].wait_exit(Duration::from_secs(5));
    wait_takeover(&agents[s], &want[0], &holder, killed);
    expected.push(line(
        "acquire",
        &survivor,
        &want[0],
        &format!("takeover from {holder}"),
    ));
    expected.sort();
    wait_calls(&expected);
    // Nothing else follows (no release, no second acquire).
    sleep(Duration::from_secs(1));
    assert_eq!(hook_calls(&out), expected);
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with(&format!("leader|{survivor}||||leader changed|"))
                && !l.ends_with('|')
        ),
        "no leader hook with a leader:\n{text}"
    );
    // Every acquire saw a leader.
    assert!(
        text.lines()
            .filter(|l| l.starts_with("acquire|"))
            .all(|l| !l.ends_with('|')),
        "{text}"
    );

    // A graceful stop hands the addresses... nowhere (no peer): released.
    agents[s].signal(libc::SIGTERM);
    assert!(agents[s].wait_exit(Duration::from_secs(10)).success());
    let calls = hook_calls(&out);
    for spec in &want {
        let l = line("release", &survivor, spec, "shutdown");
        assert!(calls.contains(&l), "no {l} in {calls:#?}");
    }
}

#[test]
fn a_hanging_notify_hook_does_not_delay_a_takeover() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("hooks.log");
    // Every acquire hook sleeps 30 s first; each is killed after 300 ms.
    let config = recording_hooks(&out, "sleep 30; ", 300);
    let (mut agents, want, h) = two_serving(root.path(), &config, &[&[], &[]]);
    let s = 1 - h;
    let holder = agents[h].name.clone();
    agents[h].child.kill().expect("SIGKILL the holder");
    let killed = Instant::now();
    let took = wait_takeover(&agents[s], &want[0], &holder, killed);
    eprintln!("with a hanging acquire hook, the takeover came {took:?} after the kill");
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    // The hooks were killed at their timeout, and said so; none completed.
    let start = Instant::now();
    while !agents[s].log().contains("notify hook killed after 300 ms") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{}",
            agents[s].log()
        );
        sleep(POLL);
    }
    assert!(
        hook_calls(&out).iter().all(|l| !l.starts_with("acquire|")),
        "{:?}",
        hook_calls(&out)
    );
}

#[test]
fn reload_applies_live_changes_and_refuses_restart_only_ones() {
    let root = tempfile::tempdir().unwrap();
    let node = NodeFiles::new(root.path(), "n0", free_ports(1)[0]);
    // The agent reads node.config (written empty by NodeFiles).
    let config = node.config.clone();
    fs::write(&config, "notify_acquire = \"true\"\n").unwrap();
    let mut agent = Agent::start(&node, &[], &["--insecure"]);
    let refs = vec![&agent];
    wait_for("the agent answers", &refs, Duration::from_secs(10), |s| {
        s.iter().all(Option::is_some)
    });
    // Unchanged: nothing to do.
    let out = agent.cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing changed"));
    // A live change applies.
    fs::write(
        &config,
        "notify_acquire = \"true\"\nnotify_release = \"true\"\nannounce_refresh_ms = 60000\n",
    )
    .unwrap();
    let out = agent.cli(&["reload"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("notify_*") && said.contains("announce_refresh_ms"),
        "{out:?}"
    );
    // A restart-only change is refused, naming the key.
    fs::write(&config, "quorum = \"off\"\n").unwrap();
    let out = agent.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("restart") && err.contains("quorum"), "{err}");
    // A broken file changes nothing and names the line.
    fs::write(&config, "notify_acquire = \"true\"\nquorum = \n").unwrap();
    let out = agent.cli(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("line 2") && err.contains("running configuration stays"),
        "{err}"
    );
    // SIGHUP re-reads too (and does not stop the agent).
    fs::write(&config, "notify_acquire = \"true\"\n").unwrap();
    agent.signal(libc::SIGHUP);
    let refs = vec![&agent];
    wait_for(
        "the SIGHUP reload is logged",
        &refs,
        Duration::from_secs(5),
        |_| agent.log().contains("reload: applied"),
    );
    assert!(agent.status().is_some());
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).success());
}
