//! The files under dist/ that the Debian package ships: the systemd unit, the
//! example config, and the generated man pages and completions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fechter::agent::Settings;
use fechter_cluster::engine::Timings;
use fechter_core::NodeId;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dist() -> PathBuf {
    repo().join("dist")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn generate_into(dir: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_fechter"))
        .arg("generate")
        .arg("--out")
        .arg(dir)
        .output()
        .expect("runs the binary");
    assert!(
        o.status.success(),
        "fechter generate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["man", "completions"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = format!("{sub}/{}", p.file_name().unwrap().to_string_lossy());
            out.insert(name, std::fs::read(&p).unwrap());
        }
    }
    out
}

/// The visible commands, e.g. `agent`, `add-address`.
fn commands() -> Vec<String> {
    fechter::cli::public_command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[test]
fn generate_writes_a_page_for_every_command_and_completions() {
    let tmp = tempfile::tempdir().unwrap();
    generate_into(tmp.path());
    let man = tmp.path().join("man");
    let completions = tmp.path().join("completions");
    let main_page = read(&man.join("fechter.1"));
    let cmds = commands();
    assert!(cmds.len() >= 10, "{cmds:?}");
    for cmd in &cmds {
        let page = read(&man.join(format!("fechter-{cmd}.1")));
        let escaped = cmd.replace('-', "\\-");
        assert!(
            page.contains(&format!("fechter\\-{escaped}")),
            "fechter-{cmd}.1 does not name its command"
        );
        assert!(
            main_page.contains(&format!("fechter\\-{escaped}(1)")),
            "fechter.1 does not point to fechter-{cmd}(1)"
        );
    }
    for name in ["fechter.bash", "_fechter", "fechter.fish"] {
        let text = read(&completions.join(name));
        for cmd in &cmds {
            assert!(
                text.contains(cmd.as_str()),
                "{name} does not complete {cmd}"
            );
        }
        assert!(
            !text.contains("generate"),
            "{name} offers the hidden generate command"
        );
    }
    let all = files(tmp.path());
    assert_eq!(all.len(), cmds.len() + 1 + 3, "{:?}", all.keys());
    assert!(
        all.keys()
            .all(|f| !f.contains("generate") && !f.contains("help"))
    );
}

#[test]
fn committed_man_pages_and_completions_are_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    generate_into(tmp.path());
    let fresh = files(tmp.path());
    let committed = files(&dist());
    let stale: Vec<&String> = fresh
        .iter()
        .filter(|(name, text)| committed.get(*name) != Some(*text))
        .map(|(name, _)| name)
        .chain(committed.keys().filter(|name| !fresh.contains_key(*name)))
        .collect();
    assert!(
        stale.is_empty(),
        "dist/ is out of date with the CLI ({stale:?}); regenerate it: \
         rm -r dist/man dist/completions && cargo run -p fechter -- generate --out dist"
    );
}

/// The unit's `Key=value` settings (a key may repeat).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn the(settings: &[(String, String)], key: &str) -> String {
    let v: Vec<&String> = settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(v.len(), 1, "{key} should be set once in fechter.service");
    v[0].clone()
}

#[test]
fn the_unit_is_a_hardened_notify_service() {
    let s = unit_settings(&read(&dist().join("fechter.service")));
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/bin/fechter agent --config /etc/fechter/fechter.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "always"),
        ("RestartSec", "1"),
        ("KillSignal", "SIGTERM"),
        ("CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"),
        ("AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_RAW"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("StateDirectory", "fechter"),
        ("RuntimeDirectory", "fechter"),
        ("After", "network-online.target"),
        ("Wants", "network-online.target"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(the(&s, key), value, "fechter.service {key}");
    }
    // The directories systemd makes writable are the agent's defaults.
    let defaults = fechter::config::resolve(&agent_args(&["--listen", "127.0.0.1"]), || {
        Ok(NodeId::new("host"))
    })
    .unwrap();
    assert_eq!(defaults.settings.data_dir, Path::new("/var/lib/fechter"));
    assert_eq!(
        defaults.control_socket.parent(),
        Some(Path::new("/run/fechter"))
    );
    // Stopping waits for the drain, with some time to spare.
    let stop: u64 = the(&s, "TimeoutStopSec").parse().unwrap();
    let drain = defaults.settings.drain_timeout.as_secs();
    assert!(
        stop > drain && stop <= drain + 10,
        "TimeoutStopSec={stop} should be a little above the {drain} s drain"
    );
    // The agent writes promote_secondaries under /proc/sys.
    assert!(s.iter().all(|(k, _)| k != "ProtectKernelTunables"));
}

/// `systemd-analyze verify`, on a copy of the unit that starts the binary
/// just built (it checks that ExecStart exists), with the generated man
/// pages on MANPATH (it checks the Documentation= links).
#[test]
fn systemd_analyze_verifies_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        let why = "systemd-analyze is not installed (Debian package: systemd)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}; CI must install it");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let man1 = tmp.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    for (name, text) in files(&dist()) {
        if let Some(page) = name.strip_prefix("man/") {
            std::fs::write(man1.join(page), text).unwrap();
        }
    }
    let have_man = Command::new("man").arg("--version").output().is_ok();
    if !have_man {
        eprintln!("note: `man` is not installed; Documentation= links are not checked");
    }
    let verify = |unit_text: &str| {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let unit = dir.path().join("fechter.service");
        std::fs::write(&unit, unit_text).unwrap();
        let mut cmd = Command::new("systemd-analyze");
        cmd.arg("verify");
        if !have_man {
            cmd.arg("--man=no");
        }
        let o = cmd
            .arg(&unit)
            .env("MANPATH", tmp.path().join("man"))
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), out)
    };
    let text = read(&dist().join("fechter.service"));
    let binary = env!("CARGO_BIN_EXE_fechter");
    assert!(text.contains("ExecStart=/usr/bin/fechter "));
    let (ok, out) = verify(&text.replace(
        "ExecStart=/usr/bin/fechter ",
        &format!("ExecStart={binary} "),
    ));
    assert!(ok, "systemd-analyze verify fechter.service:\n{out}");
    let problems: Vec<&str> = out.lines().filter(|l| l.contains("fechter")).collect();
    assert!(problems.is_empty(), "systemd-analyze verify:\n{out}");

    // The check can fail: a unit whose binary is missing is refused.
    if !Path::new("/usr/bin/fechter").exists() {
        let (ok, out) = verify(&text);
        assert!(!ok && out.contains("/usr/bin/fechter"), "{out}");
    }
}

fn agent_args(extra: &[&str]) -> fechter::cli::AgentArgs {
    use clap::Parser;
    let mut v = vec!["fechter", "agent"];
    v.extend(extra);
    match fechter::cli::Cli::parse_from(v).command {
        fechter::cli::Command::Agent(a) => a,
        _ => unreachable!(),
    }
}

/// dist/fechter.toml with every `#key = value` line (and `#[table]`) enabled.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fields of `AgentFile` in src/config/mod.rs: the keys the file may have.
fn config_keys() -> Vec<String> {
    let src = include_str!("../src/config/mod.rs");
    let start = src
        .find("pub struct AgentFile {")
        .expect("AgentFile in config.rs");
    let body = &src[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.contains(' '))
        .collect()
}

#[test]
fn the_example_config_is_valid_as_shipped_and_shows_every_default() {
    let path = dist().join("fechter.toml");
    let text = read(&path);
    // As shipped (everything commented out), it parses, and the agent asks
    // for `listen`.
    fechter::config::load(&path).unwrap();
    let e = fechter::config::resolve(&agent_args(&["--config", path.to_str().unwrap()]), || {
        Ok(NodeId::new("host"))
    })
    .unwrap_err();
    assert!(e.contains("listen"), "{e}");

    // Every key the agent reads is there.
    let enabled = uncommented(&text);
    let table: toml::Table = toml::from_str(&enabled).unwrap();
    for key in config_keys() {
        assert!(
            table.contains_key(&key),
            "dist/fechter.toml does not document `{key}`"
        );
    }
    let timings = table["timings"].as_table().expect("[timings]");
    let defaults = fechter::config::timings::keys(&Timings::default());
    for (key, value) in &defaults {
        let shown = timings
            .get(*key)
            .unwrap_or_else(|| panic!("dist/fechter.toml does not document timings.{key}"));
        assert_eq!(
            shown.as_integer().map(|v| v as u64),
            Some(*value),
            "dist/fechter.toml shows a wrong default for timings.{key}"
        );
    }
    assert_eq!(timings.len(), defaults.len(), "{timings:?}");

    // Enabled, it is a working config whose values are the defaults (bar
    // the examples for keys without a default).
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("fechter.toml");
    std::fs::write(&file, &enabled).unwrap();
    let r = fechter::config::resolve(&agent_args(&["--config", file.to_str().unwrap()]), || {
        Ok(NodeId::new("host"))
    })
    .unwrap();
    let d = Settings::new(
        NodeId::new("host"),
        vec![],
        "/var/lib/fechter".into(),
        [0; 32],
    );
    assert_eq!(r.settings.data_dir, d.data_dir);
    assert_eq!(r.settings.timings, d.timings);
    assert_eq!(r.settings.lease, d.lease);
    assert_eq!(r.settings.renew_every, d.renew_every);
    assert_eq!(r.settings.drain_timeout, d.drain_timeout);
    assert_eq!(r.settings.announce_burst, d.announce_burst);
    assert_eq!(r.settings.announce_refresh, d.announce_refresh);
    assert_eq!(r.control_socket, Path::new(fechter::cli::DEFAULT_SOCKET));
    assert!(!r.insecure && !r.dry_run);
    assert_eq!(
        r.key_file.as_deref(),
        Some(Path::new("/etc/fechter/cluster.key"))
    );
}

/// The files `[package.metadata.deb]` packages exist.
#[test]
fn the_debian_package_assets_exist() {
    let manifest: toml::Table = toml::from_str(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    ))
    .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().unwrap();
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dests = Vec::new();
    for a in assets {
        let a = a.as_array().unwrap();
        let (src, dest) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
        dests.push(dest.to_owned());
        if src.starts_with("target/release/") {
            continue;
        }
        match src.strip_suffix("*.1") {
            Some(dir) => {
                let n = std::fs::read_dir(crate_dir.join(dir)).unwrap().count();
                assert_eq!(n, commands().len() + 1, "{src}");
            }
            None => assert!(crate_dir.join(src).is_file(), "{src} is missing"),
        }
    }
    for dest in [
        "usr/bin/",
        "etc/fechter/fechter.toml",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/fechter",
        "usr/share/zsh/vendor-completions/_fechter",
        "usr/share/fish/vendor_completions.d/fechter.fish",
    ] {
        assert!(dests.iter().any(|d| d == dest), "no asset goes to {dest}");
    }
    let units = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    assert!(crate_dir.join(units).join("fechter.service").is_file());
}

/// A dry-run agent started as systemd would start it (`NOTIFY_SOCKET`
/// set), killed and reaped on drop.
struct NotifiedAgent {
    child: std::process::Child,
    notify: std::os::unix::net::UnixDatagram,
    _dir: tempfile::TempDir,
}

impl NotifiedAgent {
    fn start() -> NotifiedAgent {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let config = dir.path().join("empty.toml");
        std::fs::write(&config, "").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fechter"))
            .args([
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--insecure",
                "--dry-run",
            ])
            .args(["--node-id", "notified"])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--control-socket")
            .arg(dir.path().join("agent.sock"))
            .env("NOTIFY_SOCKET", &path)
            .env("FECHTER_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        NotifiedAgent {
            child,
            notify,
            _dir: dir,
        }
    }

    /// The notifications received until one satisfies `done`, or 10 s.
    fn messages_until(&self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            self.notify
                .set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))))
                .unwrap();
            let Ok(n) = self.notify.recv(&mut buf) else {
                break;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = done(&msg);
            out.push(msg);
            if stop {
                break;
            }
        }
        out
    }
}

impl Drop for NotifiedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_reports_its_status_to_systemd() {
    let agent = NotifiedAgent::start();
    let msgs = agent.messages_until(|_| true);
    let first = msgs
        .first()
        .expect("the agent sent nothing to NOTIFY_SOCKET");
    assert!(
        first.starts_with("STATUS=listening on 127.0.0.1:"),
        "{msgs:?}"
    );
}

/// Type=notify: READY=1 at once for a node with no `attach` address (it
/// forms the cluster); STOPPING=1 when SIGTERM starts the hand-off.
#[test]
fn the_agent_tells_systemd_it_is_ready_and_when_it_stops() {
    let mut agent = NotifiedAgent::start();
    let has = |m: &str, line: &str| m.lines().any(|l| l == line);
    let msgs = agent.messages_until(|m| has(m, "READY=1"));
    assert!(
        msgs.iter().any(|m| has(m, "READY=1")),
        "no READY=1 within 10 s: {msgs:?}"
    );
    let pid = libc::pid_t::try_from(agent.child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let msgs = agent.messages_until(|m| has(m, "STOPPING=1"));
    assert!(
        msgs.iter().any(|m| has(m, "STOPPING=1")),
        "no STOPPING=1 after SIGTERM: {msgs:?}"
    );
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "the agent exited with {status}");
}

#[test]
fn the_fast_profile_is_a_valid_config_with_realtime_and_short_timings() {
    let path = dist().join("profiles/fast.toml");
    let p = path.to_str().expect("utf-8 path");
    let r = fechter::config::resolve(
        &agent_args(&["--listen", "127.0.0.1", "--config", p]),
        || Ok(NodeId::new("host")),
    )
    .unwrap_or_else(|e| panic!("{p}: {e}"));
    assert!(r.realtime, "the fast profile runs at real-time priority");
    let (fast, default) = (
        &r.settings.timings,
        fechter_cluster::engine::Timings::default(),
    );
    assert!(fast.heartbeat_timeout < default.heartbeat_timeout / 2);
    // A node without quorum lets go before the majority's standby takes
    // over, whatever the phase of the two heartbeat streams.
    assert!(fast.fence_after + fast.heartbeat_interval * 2 <= fast.heartbeat_timeout);
}
