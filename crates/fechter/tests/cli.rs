//! The binary as an operator meets it: exit codes and messages.

use std::process::{Command, Output};

fn fechter(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fechter"))
        .args(args)
        .env_remove("FECHTER_SOCKET")
        .output()
        .expect("runs the binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn commands_that_need_an_agent_name_the_socket_when_there_is_none() {
    let dir = std::env::temp_dir().join(format!("fechter-cli-{}", std::process::id()));
    let sock = dir.join("agent.sock");
    let sock = sock.to_str().unwrap();
    for args in [
        vec!["status"],
        vec!["up"],
        vec!["down"],
        vec!["add-address", "eth0:198.18.0.10/24"],
        vec!["remove-address", "eth0:198.18.0.10/24"],
        vec!["forget", "n2"],
    ] {
        let mut a = args.clone();
        a.extend(["--control-socket", sock]);
        let o = fechter(&a);
        assert!(!o.status.success(), "{args:?} succeeded without an agent");
        let e = stderr(&o);
        assert!(
            e.contains("no agent at") && e.contains(sock),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn the_socket_can_come_from_the_environment() {
    let o = Command::new(env!("CARGO_BIN_EXE_fechter"))
        .arg("status")
        .env("FECHTER_SOCKET", "/nonexistent/fechter-env.sock")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/nonexistent/fechter-env.sock"));
}

#[test]
fn a_bad_address_is_refused_before_any_agent_is_asked() {
    let o = fechter(&[
        "add-address",
        "eth0:224.0.0.1",
        "--control-socket",
        "/nonexistent.sock",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("multicast") && !e.contains("no agent"), "{e}");
}

#[test]
fn plan_prints_holders_standbys_and_what_a_failure_moves() {
    let o = fechter(&[
        "plan",
        "--node",
        "ws-1,ws-2",
        "eth0:198.18.0.10/24",
        "eth0:198.18.0.11/24",
        "--fail",
        "ws-2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let (before, after) = out
        .split_once("after ws-2 failed")
        .expect("failure section");
    // Two nodes, two addresses: one each, each the other's standby.
    assert_eq!(before.matches("assigned to ws-1").count(), 1, "{out}");
    assert_eq!(before.matches("assigned to ws-2").count(), 1, "{out}");
    assert_eq!(before.matches("standby ws-").count(), 2, "{out}");
    assert_eq!(after.matches("assigned to ws-1").count(), 2, "{out}");
    assert!(after.contains("(1 of 2 addresses moved)"), "{out}");
}

#[test]
fn plan_refuses_to_fail_an_unknown_node() {
    let o = fechter(&[
        "plan",
        "--node",
        "ws-1",
        "eth0:198.18.0.10",
        "--fail",
        "ws-9",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--node ws-9"));
}

#[test]
fn plan_refuses_the_same_ip_twice() {
    let o = fechter(&[
        "plan",
        "--node",
        "ws-1",
        "eth0:198.18.0.10",
        "eth1:198.18.0.10/24",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("same IP address"));
}

#[test]
fn plan_json_is_machine_readable() {
    let o = fechter(&[
        "plan",
        "--json",
        "--node",
        "a,b,c",
        "eth0:198.18.0.10",
        "eth0:2001:db8::1/64",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let placements = v["allocation"]["placements"].as_object().unwrap();
    assert_eq!(placements.len(), 2);
}

#[test]
fn check_config_names_the_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1\"\nkey_file = \"/k\"\nquorom = \"off\"\n",
    )
    .unwrap();
    let o = fechter(&["check-config", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("line 3") && e.contains("quorom"), "{e}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1\"\nkey_file = \"/k\"\n").unwrap();
    let o = fechter(&["check-config", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("is valid"));
}
