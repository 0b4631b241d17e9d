//! The config's tests: flags over the file over defaults, and the checks.

use super::*;
use clap::Parser;

fn args(extra: &[&str]) -> AgentArgs {
    let mut v = vec!["fechter", "agent"];
    v.extend(extra);
    match crate::cli::Cli::parse_from(v).command {
        crate::cli::Command::Agent(a) => a,
        _ => unreachable!(),
    }
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("fechter.toml");
    std::fs::write(&p, text).unwrap();
    (d, p)
}

fn host() -> Result<NodeId, String> {
    Ok(NodeId::new("host"))
}

#[test]
fn every_key_is_read_and_flags_override_the_file() {
    let (_d, p) = file(
        r#"
node_id = "ws-1"
listen = "127.0.0.1:4000"
attach = ["127.0.0.2"]
data_dir = "/tmp/x"
control_socket = "/tmp/x.sock"
key_file = "/tmp/key"
insecure = true
dry_run = true
lease_ms = 3000
renew_ms = 700
drain_timeout_ms = 1000
announce_burst_ms = [0, 50]
announce_refresh_ms = 30000
quorum = "off"
gateway = "127.0.0.254"
metrics_listen = "127.0.0.1:9573"
notify_acquire = "echo acquire"
notify_release = "echo release"
notify_leader = "echo leader"
notify_timeout_ms = 300
[gateway_check]
interval_ms = 100
[[check]]
name = "web"
command = "true"
timeout_ms = 300
[timings]
heartbeat_interval = 20
heartbeat_timeout = 90
"#,
    );
    let p = p.to_str().unwrap();
    let r = resolve(&args(&["--config", p]), host).unwrap();
    assert_eq!(r.settings.node_id, NodeId::new("ws-1"));
    assert_eq!(r.listen, "127.0.0.1:4000".parse().unwrap());
    assert_eq!(r.settings.seeds, vec!["127.0.0.2:4573".parse().unwrap()]);
    assert_eq!(r.settings.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(r.control_socket, PathBuf::from("/tmp/x.sock"));
    assert_eq!(r.key_file, Some(PathBuf::from("/tmp/key")));
    assert!(r.insecure && r.dry_run);
    assert_eq!(r.settings.lease, Duration::from_secs(3));
    assert_eq!(r.settings.renew_every, Duration::from_millis(700));
    assert_eq!(r.settings.drain_timeout, Duration::from_secs(1));
    assert_eq!(
        r.settings.announce_burst,
        vec![Duration::ZERO, Duration::from_millis(50)]
    );
    assert_eq!(r.settings.announce_refresh, Some(Duration::from_secs(30)));
    assert_eq!(r.settings.quorum, Quorum::Off);
    assert_eq!(
        r.settings.metrics_listen,
        Some("127.0.0.1:9573".parse().unwrap())
    );
    assert_eq!(
        r.settings.notify,
        crate::agent::hooks::Notify {
            acquire: Some("echo acquire".into()),
            release: Some("echo release".into()),
            leader: Some("echo leader".into()),
            conflict: None,
            timeout: Duration::from_millis(300),
        }
    );
    assert_eq!(r.settings.checks.len(), 2);
    assert_eq!(r.settings.checks[0].name, "gateway");
    assert_eq!(
        r.settings.checks[0].timing.interval,
        Duration::from_millis(100)
    );
    assert_eq!(r.settings.checks[0].timing.rise, CheckTiming::GATEWAY.rise);
    assert_eq!(r.settings.checks[1].name, "check web");
    assert_eq!(r.settings.checks[1].probe, Probe::Script("true".into()));
    assert_eq!(
        r.settings.checks[1].timing.timeout,
        Duration::from_millis(300)
    );
    assert_eq!(
        r.settings.timings.heartbeat_interval,
        Duration::from_millis(20)
    );
    // Unset timings keep their defaults.
    assert_eq!(
        r.settings.timings.maturity,
        fechter_cluster::engine::Timings::default().maturity
    );

    let r = resolve(
        &args(&[
            "--config",
            p,
            "--node-id",
            "ws-9",
            "--listen",
            "127.0.0.9",
            "--data-dir",
            "/tmp/y",
            "--metrics-listen",
            "127.0.0.1:9999",
        ]),
        host,
    )
    .unwrap();
    assert_eq!(
        r.settings.metrics_listen,
        Some("127.0.0.1:9999".parse().unwrap())
    );
    assert_eq!(r.settings.node_id, NodeId::new("ws-9"));
    assert_eq!(r.listen.port(), 4573);
    assert_eq!(r.settings.data_dir, PathBuf::from("/tmp/y"));
}

#[test]
fn errors_name_the_line_and_the_key() {
    let (_d, p) = file("listen = \"127.0.0.1\"\nlistne = 3\n");
    let e = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap_err();
    assert!(e.contains("line 2") && e.contains("listne"), "{e}");
    let (_d, p) = file("[timings]\nheartbeat_interval = \"fast\"\n");
    let e = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap_err();
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn check_config_reports_valid_files_and_names_problems() {
    let (_d, p) = file("listen = \"127.0.0.1\"\nkey_file = \"/etc/fechter/cluster.key\"\n");
    let ok = check_file(&p).unwrap();
    assert!(
        ok.contains("is valid") && ok.contains("127.0.0.1:4573"),
        "{ok}"
    );
    let (_d, p) = file("listen = \"127.0.0.1\"\n");
    assert!(check_file(&p).unwrap_err().contains("key_file"));
    let (_d, p) = file("listen = \"127.0.0.1\"\nlog_format = \"xml\"\n");
    assert!(check_file(&p).unwrap_err().contains("log_format"));
    assert!(
        check_file(Path::new("/nonexistent/fechter.toml"))
            .unwrap_err()
            .contains("does not exist")
    );
}

#[test]
fn unworkable_settings_are_refused() {
    let (_d, p) = file("listen = \"127.0.0.1\"\nlease_ms = 2000\nrenew_ms = 1500\n");
    let e = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap_err();
    assert!(e.contains("renew_ms"), "{e}");
    let (_d, p) = file(
        "listen = \"127.0.0.1\"\n[timings]\nheartbeat_interval = 50\nheartbeat_timeout = 60\n",
    );
    let e = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap_err();
    assert!(e.contains("heartbeat_timeout"), "{e}");
    let e = resolve(&args(&[]), host).unwrap_err();
    assert!(e.contains("--listen"), "{e}");
    // A probe window too short for two probes, or too long to be over
    // by the takeover.
    for window in [10, 40] {
        let (_d, p) = file(&format!(
            "listen = \"127.0.0.1\"\n[timings]\nprobe_window = {window}\n"
        ));
        let e = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap_err();
        assert!(e.contains("probe_window"), "{e}");
    }
    // Unset, it follows the heartbeat interval.
    let (_d, p) = file(
        "listen = \"127.0.0.1\"\n[timings]\nheartbeat_interval = 20\nheartbeat_timeout = 90\nfence_after = 45\n",
    );
    let r = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap();
    assert_eq!(r.settings.timings.probe_window, Duration::from_millis(40));
    for (text, key) in [
        ("metrics_listen = \"127.0.0.1\"\n", "metrics_listen"),
        ("notify_timeout_ms = 0\n", "notify_timeout_ms"),
        ("notify_acquire = \" \"\n", "notify_acquire"),
        (
            "allowed_prefixes = [\"198.51.100.0\"]\n",
            "allowed_prefixes",
        ),
        (
            "allowed_prefixes = [\"198.51.100.0/33\"]\n",
            "allowed_prefixes",
        ),
        ("allowed_interfaces = [\"eth/0\"]\n", "allowed_interfaces"),
    ] {
        let (_d, p) = file(&format!("listen = \"127.0.0.1\"\n{text}"));
        let e = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap_err();
        assert!(e.contains(key), "{e}");
    }
}

#[test]
fn hooks_and_metrics_are_off_by_default() {
    let r = resolve(&args(&["--listen", "127.0.0.1"]), host).unwrap();
    assert_eq!(r.settings.metrics_listen, None);
    assert_eq!(r.settings.notify, crate::agent::hooks::Notify::default());
    assert_eq!(r.settings.notify.timeout, Duration::from_secs(5));
}

#[test]
fn allowed_prefixes_and_interfaces_are_read() {
    let (_d, p) = file(
        "listen = \"127.0.0.1\"\nallowed_prefixes = [\"198.51.100.0/24\", \"2001:db8::/64\"]\nallowed_interfaces = [\"eth0\"]\n",
    );
    let r = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap();
    let a = &r.settings.allowed;
    assert!(a.permits(&"eth0:198.51.100.7/24".parse().unwrap()));
    assert!(a.permits(&"eth0:2001:db8::7/64".parse().unwrap()));
    assert!(!a.permits(&"eth0:192.0.2.7/24".parse().unwrap()));
    assert!(!a.permits(&"eth1:198.51.100.7/24".parse().unwrap()));
    // Absent: anything.
    let (_d, p) = file("listen = \"127.0.0.1\"\n");
    let r = resolve(&args(&["--config", p.to_str().unwrap()]), host).unwrap();
    assert!(!r.settings.allowed.restricts());
}
