//! Health and partitions, end to end in the namespace lab: the gateway check,
//! a check script that fails on demand, and a holder detached from the switch
//! while its link stays up (quorum and self-fencing).
//!
//! Needs root, `ip netns` and `ping` (skipped with the reason otherwise; a
//! failure under CI=true).

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{Cluster, NODES, Pinger, Sampler, bit, id_of, ip_of};

const A: &str = "eth0:198.18.0.50/24";
const B: &str = "eth0:198.18.0.51/24";
const C: &str = "eth0:198.18.0.52/24";
const GATEWAY: &str = "198.18.0.254";
const SEC: Duration = Duration::from_secs(1);

/// Agent arguments: check the gateway (and use it as the two-node witness).
fn gateway_args(_node: usize) -> Vec<String> {
    vec!["--gateway".to_string(), GATEWAY.to_string()]
}

/// The client's namespace also plays the gateway.
fn client_is_gateway(lab: &fechter_linux::Lab) {
    lab.ip(
        &lab.client_ns(),
        &["addr", "add", &format!("{GATEWAY}/24"), "dev", "eth0"],
    )
    .expect("gateway address");
}

/// Waits until `node`'s status says member `who` is not eligible for a
/// reason containing `why`.
fn wait_ineligible(c: &Cluster, node: usize, who: usize, why: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let ok = e2e_support::poll(limit, Duration::from_millis(20), || {
        let r = c.try_status(node).ok()?;
        let m = r.members.iter().find(|m| m.id == id_of(who))?;
        m.ineligible.iter().any(|w| w.contains(why)).then_some(())
    });
    assert!(
        ok.is_some(),
        "n{who} never reported not eligible ({why}): {}",
        c.try_status(node).map(|r| r.render()).unwrap_or_default()
    );
    t0.elapsed()
}

/// Waits until `spec` is on exactly one node other than `not` (kernel and
/// status agree), returns it.
fn wait_moved_off(c: &Cluster, spec: &str, not: usize, limit: Duration) -> usize {
    let others: Vec<usize> = (0..NODES).filter(|&n| n != not).collect();
    e2e_support::poll(limit, Duration::from_millis(20), || {
        let on = c.kernel_holders(ip_of(spec));
        (on.len() == 1 && on[0] != not).then(|| on[0])
    })
    .unwrap_or_else(|| {
        panic!(
            "{spec} did not move off n{not}: on {:?}; {}",
            c.kernel_holders(ip_of(spec)),
            c.try_status(others[0])
                .map(|r| r.render())
                .unwrap_or_default()
        )
    })
}

#[test]
fn losing_the_gateway_moves_a_nodes_addresses_and_rise_brings_it_back() {
    let name = "losing_the_gateway";
    let (gw, prepare) = (gateway_args, client_is_gateway);
    let Some((c, holders)) = Cluster::start_serving_with(name, &[A, B, C], gw, prepare) else {
        return;
    };
    c.wait_all_eligible(10 * SEC);
    let h = holders[0];
    let cut = Instant::now();
    c.lab
        .ip(&c.ns(h), &["route", "add", "blackhole", "198.18.0.254/32"])
        .unwrap();
    let moved_to = wait_moved_off(&c, A, h, 5 * SEC);
    let took = cut.elapsed();
    wait_ineligible(&c, moved_to, h, "gateway", 5 * SEC);
    c.client_ping_until_ok(ip_of(A), 5 * SEC);
    eprintln!("{name}: A moved from n{h} to n{moved_to} {took:?} after its gateway went away");
    // The path comes back: after `rise` answers it is eligible again.
    let back = Instant::now();
    c.lab
        .ip(&c.ns(h), &["route", "del", "blackhole", "198.18.0.254/32"])
        .unwrap();
    let eligible = c.wait_all_eligible(10 * SEC);
    eprintln!("{name}: n{h} eligible again {eligible:?} after the gateway answered");
    assert!(
        back.elapsed() >= Duration::from_millis(500),
        "eligible before `rise` answers could have arrived"
    );
    c.finish();
}

#[test]
fn a_failing_check_script_moves_the_addresses_until_it_passes() {
    let name = "a_failing_check_script";
    let dir = tempfile::tempdir().unwrap();
    let flag = |n: usize| dir.path().join(format!("fail-n{n}"));
    let configs: Vec<std::path::PathBuf> = (0..NODES)
        .map(|n| {
            let p = dir.path().join(format!("n{n}.toml"));
            let toml = format!(
                "[[check]]\nname = \"app\"\ncommand = \"test ! -e {}\"\ninterval_ms = 100\ntimeout_ms = 1000\nrise = 2\nfall = 2\n",
                flag(n).display()
            );
            std::fs::write(&p, toml).unwrap();
            p
        })
        .collect();
    let extra = |n: usize| vec!["--config".to_string(), configs[n].display().to_string()];
    let Some((c, holders)) = Cluster::start_serving_with(name, &[A, B, C], extra, |_| {}) else {
        return;
    };
    c.wait_all_eligible(10 * SEC);
    let h = holders[1];
    std::fs::write(flag(h), "").unwrap();
    let t = Instant::now();
    let to = wait_moved_off(&c, B, h, 5 * SEC);
    wait_ineligible(&c, to, h, "check app", 5 * SEC);
    c.client_ping_until_ok(ip_of(B), 5 * SEC);
    eprintln!(
        "{name}: B moved from n{h} to n{to} {:?} after its check began failing",
        t.elapsed()
    );
    std::fs::remove_file(flag(h)).unwrap();
    c.wait_all_eligible(10 * SEC);
    c.finish();
}

#[test]
fn a_detached_holder_never_serves_beside_the_majority() {
    let name = "a_detached_holder";
    let Some((mut c, holders)) = Cluster::start_serving(name, &[A, B, C]) else {
        return;
    };
    let h = holders[0];
    let sampler = Sampler::start(&c.lab, ip_of(A));
    let pinger = Pinger::start(&c.lab, ip_of(A));
    let t = Instant::now();
    // Off the switch; its own link (and carrier) stays up.
    c.lab.detach(h).unwrap();
    let to = wait_moved_off(&c, A, h, 5 * SEC);
    c.client_ping_until_ok(ip_of(A), 5 * SEC);
    let served = t.elapsed();
    std::thread::sleep(Duration::from_secs(2)); // the partition lasts (observed by the sampler)
    let during = sampler.stop();
    let outage = pinger.stop().longest_gap();
    // Never on both sides at once: the detached node and any other.
    let overlap = during.since(t).longest_overlap(bit(0) | bit(1) | bit(2));
    assert_eq!(
        overlap,
        Duration::ZERO,
        "A was on both sides: {}",
        during.since(t).describe()
    );
    eprintln!(
        "{name}: A moved from n{h} to n{to}; served again {served:?} after the split; client outage {outage:?}; {}",
        during.since(t).describe()
    );
    // Heal: one holder, no manual action.
    c.lab.reattach(h).unwrap();
    c.wait_members_alive(&[0, 1, 2], 15 * SEC);
    let (settled, _) = c.wait_stable(&[A, B, C], &[0, 1, 2], SEC, 20 * SEC);
    for (spec, holder) in [A, B, C].iter().zip(&settled) {
        assert_eq!(c.kernel_holders(ip_of(spec)), vec![*holder], "{spec}");
    }
    let _ = &mut c;
    c.finish();
}

#[test]
fn two_nodes_split_and_the_gateway_breaks_the_tie() {
    let name = "two_nodes_split";
    let (gw, prepare) = (gateway_args, client_is_gateway);
    let Some(c) = Cluster::start_sized(name, 2, gw, prepare) else {
        return;
    };
    for spec in [A, B] {
        c.cli_ok(0, &["add-address", spec]);
    }
    c.up_all();
    let (placed, _) = c.wait_stable(&[A, B], &[0, 1], SEC, 20 * SEC);
    assert_ne!(placed[0], placed[1], "one address each: {placed:?}");
    let n1_had = if placed[0] == 1 { A } else { B };
    let sampler = Sampler::start(&c.lab, ip_of(n1_had));
    let t = Instant::now();
    // n1 is cut off from the switch: from n0 and from the gateway.
    c.lab.detach(1).unwrap();
    let to = wait_moved_off(&c, n1_had, 1, 5 * SEC);
    assert_eq!(to, 0);
    c.client_ping_until_ok(ip_of(n1_had), 5 * SEC);
    let served = t.elapsed();
    std::thread::sleep(Duration::from_secs(2)); // the split lasts (observed by the sampler)
    let during = sampler.stop().since(t);
    assert_eq!(
        during.longest_overlap(bit(0) | bit(1)),
        Duration::ZERO,
        "{n1_had} on both sides: {}",
        during.describe()
    );
    let n1 = c.status(1);
    assert!(
        n1.notes.iter().any(|n| n.contains("no quorum")),
        "n1 should say it has no quorum: {}",
        n1.render()
    );
    eprintln!(
        "{name}: n0 (reaches the gateway) serves {n1_had} again after {served:?}; {}",
        during.describe()
    );
    c.lab.reattach(1).unwrap();
    c.wait_members_alive(&[0, 1], 15 * SEC);
    c.wait_stable(&[A, B], &[0, 1], SEC, 20 * SEC);
    c.finish();
}

/// `GET /metrics` from inside a node's namespace (bash's /dev/tcp).
fn scrape(c: &Cluster, node: usize) -> String {
    c.lab
        .exec(
            &c.ns(node),
            &[
                "bash",
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3",
            ],
        )
        .unwrap_or_else(|e| panic!("scraping n{node}: {e}"))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[test]
fn metrics_count_a_failover_after_a_machine_dies() {
    let name = "metrics_after_a_failover";
    let extra = |_| vec!["--metrics-listen".to_string(), "127.0.0.1:9464".to_string()];
    let Some((mut c, holders)) = Cluster::start_serving_with(name, &[A, B, C], extra, |_| {})
    else {
        return;
    };
    let h = holders[0];
    let standby = c
        .status(h)
        .addresses
        .iter()
        .find(|a| a.spec == A)
        .and_then(|a| a.standby.clone())
        .expect("A has a standby");
    let s = e2e_support::node_of(&standby);
    let before = metric(&scrape(&c, s), "fechter_takeovers_total");
    c.kill_machine(h);
    let to = wait_moved_off(&c, A, h, 5 * SEC);
    assert_eq!(to, s, "A went to its standby");
    let text = scrape(&c, s);
    assert!(
        metric(&text, "fechter_takeovers_total") >= before + 1.0,
        "{text}"
    );
    assert!(
        metric(&text, "fechter_takeover_silence_seconds_count") >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "fechter_addresses_held") >= 2.0, "{text}");
    eprintln!("{name}: n{s} counted the takeover of A from n{h}");
    c.finish();
}
