//! End to end, the wire as the lock: real agents in the namespace lab
//! through faults that leave no majority, a firewall that cuts only the
//! cluster port, and a machine that is no fechter node claiming a managed
//! address. Needs root, `ip netns`, `nft` and `ping` (skipped with the
//! reason printed otherwise; a failure under CI=true; `scripts/setup`
//! installs them).

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{Cluster, HANDOFF_OVERLAP, LEASE, Pinger, Sampler, all_but, bit, ip_of, poll};
use fechter_linux::announce::Announcer;
use fechter_linux::lab::run_in_ns;

const A: &str = "eth0:198.18.0.60/24";

const SEC: Duration = Duration::from_secs(1);

/// The machines of `nodes` die: off the switch, agent frozen, link down.
fn machines_die(c: &mut Cluster, nodes: &[usize]) {
    for &n in nodes {
        c.lab.detach(n).unwrap();
        c.stop(n);
        c.lab.set_link(n, false).unwrap();
    }
}

/// The nodes other than `a` and `b`.
fn the_other(a: usize, b: usize) -> usize {
    (0..3).find(|&n| n != a && n != b).expect("three nodes")
}

/// Two of three agents are SIGKILLed at once, the holder among them. Their
/// kernels keep the address until its lease ends and answer for it; the
/// survivor, hearing no majority but answers on its segment, waits for the
/// wire to fall silent and then serves. The client is answered throughout
/// (by the dead agent's kernel, then by the survivor), and never by two.
#[test]
fn two_agents_killed_at_once_the_survivor_serves_once_the_lease_ends() {
    let Some((mut c, holders)) = Cluster::start_serving("two_killed", &[A]) else {
        return;
    };
    let ip = ip_of(A);
    let h = holders[0];
    let other = (h + 1) % 3;
    let survivor = the_other(h, other);
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    c.kill(h);
    c.kill(other);
    c.wait_kernel(ip, &[survivor], LEASE + 3 * SEC);
    let served = t.elapsed();
    c.assert_serving(ip, survivor, 5 * SEC);
    let report = pinger.stop();
    let tl = sampler.stop().since(t);
    let overlap = tl.longest_overlap(all_but(&[]));
    eprintln!(
        "two_killed: n{h} (holder) and n{other} killed; n{survivor} serves after {served:?}; \
         client outage {:?}; two holders {overlap:?}; {}",
        report.longest_gap(),
        tl.describe()
    );
    assert!(
        served >= LEASE / 2,
        "taken while the killed holder still had it"
    );
    assert!(
        overlap <= Duration::from_millis(20),
        "two machines had {A} for {overlap:?}: {}",
        tl.describe()
    );
    assert!(
        report.longest_gap() < Duration::from_millis(500),
        "the client went unanswered for {:?}",
        report.longest_gap()
    );
    assert!(
        c.status(survivor)
            .notes
            .iter()
            .any(|n| n.contains("minority"))
    );
    c.finish();
}

/// Two of three machines die (frozen, off the switch, link down): the
/// survivor hears no majority, but the client's frames still reach it, so
/// it serves as the last machine standing.
#[test]
fn two_machines_die_the_last_one_standing_serves() {
    let Some((mut c, holders)) = Cluster::start_serving("two_die", &[A]) else {
        return;
    };
    let ip = ip_of(A);
    let h = holders[0];
    let other = (h + 1) % 3;
    let survivor = the_other(h, other);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    machines_die(&mut c, &[h, other]);
    // (The frozen holder's kernel keeps its copy until the lease ends, but
    // nothing reaches it any more.)
    let served = poll(5 * SEC, Duration::from_millis(5), || {
        c.kernel_holders(ip)
            .contains(&survivor)
            .then(|| t.elapsed())
    })
    .expect("the survivor serves");
    c.assert_serving(ip, survivor, 5 * SEC);
    let report = pinger.stop();
    eprintln!(
        "two_die: n{h} (holder) and n{other} died; n{survivor} serves after {served:?}; \
         client outage {:?}",
        report.longest_gap()
    );
    if std::env::var_os("FECHTER_E2E_VERBOSE").is_some() {
        eprintln!("{}", c.agent(survivor).log_tail(30));
    }
    assert!(served < SEC, "the survivor took {served:?}");
    // They come back: a majority again, one holder, nothing left behind.
    for n in [h, other] {
        c.lab.reattach(n).unwrap();
        c.cont(n);
        c.lab.set_link(n, true).unwrap();
    }
    c.wait_members_alive(&[0, 1, 2], 10 * SEC);
    let holder = c.wait_converged(A, &[0, 1, 2], 10 * SEC);
    c.assert_serving(ip, holder, 5 * SEC);
    c.finish();
}

/// Whether `nft` runs here (a failure under CI=true: scripts/setup
/// installs it); else the test is skipped with the reason printed.
fn have_nft(test: &str) -> bool {
    let have = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "nft is missing (scripts/setup installs it)"
        );
        eprintln!("skipping {test}: `nft` not found (scripts/setup installs nftables)");
    }
    have
}

/// Runs `nft` in `ns`; panics with its output on failure.
fn nft(c: &Cluster, ns: &str, args: &[&str]) {
    let out = c.lab.exec(ns, &[&["nft"][..], args].concat());
    if let Err(e) = out {
        panic!("nft {args:?} in {ns}: {e}");
    }
}

/// A firewall on the holder drops the cluster's datagrams (UDP 4573, both
/// ways); its segment is intact. It hears no majority but its interface
/// still receives frames: a minority, it keeps its address. The majority's
/// standby probes the address, hears the holder answer, and installs
/// nothing: the client loses nothing and nothing moves while the cut lasts.
/// At the heal the address goes to the holder the majority's table names,
/// make-before-break (never on no node).
#[test]
fn the_cluster_port_cut_off_the_holder_moves_nothing() {
    if !have_nft("port_cut") {
        return;
    }
    let Some((mut c, holders)) = Cluster::start_serving("port_cut", &[A]) else {
        return;
    };
    let ip = ip_of(A);
    let h = holders[0];
    let ns = c.ns(h);
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);
    nft(&c, &ns, &["add", "table", "inet", "cut"]);
    for hook in ["input", "output"] {
        nft(
            &c,
            &ns,
            &[
                "add",
                "chain",
                "inet",
                "cut",
                hook,
                &format!("{{ type filter hook {hook} priority 0; }}"),
            ],
        );
        nft(
            &c,
            &ns,
            &[
                "add", "rule", "inet", "cut", hook, "udp", "dport", "4573", "drop",
            ],
        );
    }
    let t = Instant::now();
    // Long enough for every timer: fence, takeover, SWIM's verdict, a new
    // table, the probes.
    let minority = poll(5 * SEC, Duration::from_millis(20), || {
        c.try_status(h)
            .ok()?
            .notes
            .iter()
            .any(|n| n.contains("minority"))
            .then_some(())
    });
    assert!(minority.is_some(), "n{h} never became a minority");
    std::thread::sleep(3 * SEC); // a window to watch, not an event to await
    let during = sampler.stop().since(t);
    let report = pinger.stop();
    eprintln!(
        "port_cut: n{h} cut off the cluster port; client outage {:?}; {}",
        report.longest_gap(),
        during.describe()
    );
    assert!(
        !during.any(|on| on != bit(h)),
        "{A} moved or was doubled: {}",
        during.describe()
    );
    assert!(
        report.longest_gap() < Duration::from_millis(100),
        "the client went unanswered for {:?}",
        report.longest_gap()
    );
    // The heal: one holder, the client's entry names it.
    let sampler = Sampler::start(&c.lab, ip);
    nft(&c, &ns, &["delete", "table", "inet", "cut"]);
    let healed = Instant::now();
    c.wait_members_alive(&[0, 1, 2], 10 * SEC);
    let holder = c.wait_converged(A, &[0, 1, 2], 10 * SEC);
    c.wait_client_neigh(ip, holder, 5 * SEC);
    let after = sampler.stop().since(healed);
    let overlap = after.longest_overlap(all_but(&[]));
    eprintln!(
        "port_cut: healed, {A} on n{holder}; two holders {overlap:?}; {}",
        after.describe()
    );
    if std::env::var_os("FECHTER_E2E_VERBOSE").is_some() {
        eprintln!(
            "{}\n{}",
            c.agent(h).log_tail(30),
            c.agent(holder).log_tail(30)
        );
    }
    assert!(overlap <= HANDOFF_OVERLAP, "{}", after.describe());
    // Make-before-break at the heal: the minority's copy stays until the
    // holder the table names has it.
    assert_eq!(after.zero_after_first(), 0, "{}", after.describe());
    c.finish();
}

/// A machine that is no fechter node (here the switch itself) takes a
/// managed address and announces it. The holder, which hears a majority,
/// reports the conflict, defends its address once and keeps serving.
#[test]
fn a_rogue_machine_is_reported_and_the_holder_keeps_its_address() {
    let Some((c, holders)) = Cluster::start_serving("rogue", &[A]) else {
        return;
    };
    let ip = ip_of(A);
    let h = holders[0];
    let sw = c.lab.switch_ns();
    let bridge = c.lab.bridge();
    c.lab
        .ip(&sw, &["addr", "add", "198.18.0.60/24", "dev", &bridge])
        .expect("the rogue takes the address");
    let t = Instant::now();
    run_in_ns(&sw, || {
        Announcer::new()
            .and_then(|a| a.send_garp(&bridge, "198.18.0.60".parse().unwrap()))
            .expect("the rogue announces")
    })
    .unwrap();
    let reported = poll(5 * SEC, Duration::from_millis(20), || {
        let out = c.cli(h, &["events", "--json"]).ok()?;
        out.lines()
            .any(|l| l.contains("\"conflict\"") && l.contains("\"kept\":true"))
            .then(|| t.elapsed())
    });
    let reported = reported.unwrap_or_else(|| panic!("n{h} reported no conflict"));
    eprintln!("rogue: n{h} reported the conflict after {reported:?}");
    assert!(reported < SEC, "reported after {reported:?}");
    // It keeps the address and answers for it; nothing moves.
    let sampler = Sampler::start(&c.lab, ip);
    std::thread::sleep(2 * SEC); // a window to watch, not an event to await
    let tl = sampler.stop();
    assert!(!tl.any(|on| on != bit(h)), "{}", tl.describe());
    assert_eq!(Cluster::status_holder(&c.status(0), A), Some(h));
    let metrics_like = c.cli_ok(h, &["events"]);
    assert!(metrics_like.contains("kept and defended"), "{metrics_like}");
    let _ = c
        .lab
        .ip(&sw, &["addr", "del", "198.18.0.60/24", "dev", &bridge]);
    c.wait_client_neigh(ip, h, 5 * SEC);
    c.finish();
}

/// The survivor of a double fault that sees no sign of life at all (no
/// client traffic, no gateway, its peers' machines dead) cannot tell a dead
/// cluster from its own cable: it holds nothing. The first frame a client
/// sends (its ARP request for the address) is a sign of life: it serves.
#[test]
fn a_survivor_that_hears_nothing_holds_nothing_until_a_client_speaks() {
    let Some((mut c, holders)) = Cluster::start_serving("silent_survivor", &[A]) else {
        return;
    };
    let ip = ip_of(A);
    let h = holders[0];
    let other = (h + 1) % 3;
    let survivor = the_other(h, other);
    // The client forgets the holder's MAC and stays quiet (no IPv6 chatter
    // either: router solicitations would be a sign of life too).
    run_in_ns(&c.lab.client_ns(), || {
        std::fs::write("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")
    })
    .unwrap()
    .expect("quiet client");
    let _ = c
        .lab
        .ip(&c.lab.client_ns(), &["neigh", "flush", "dev", "eth0"]);
    machines_die(&mut c, &[h, other]);
    let fenced = poll(5 * SEC, Duration::from_millis(20), || {
        c.try_status(survivor)
            .ok()?
            .notes
            .iter()
            .any(|n| n.contains("no quorum"))
            .then_some(())
    });
    assert!(fenced.is_some(), "n{survivor} should fence itself");
    std::thread::sleep(SEC); // a window to watch, not an event to await
    assert!(
        !c.kernel_holders(ip).contains(&survivor),
        "n{survivor} took {A} with no sign of life"
    );
    // A client speaks: its ARP request reaches the survivor.
    let t = Instant::now();
    let served = c.client_ping_until_ok(ip, 5 * SEC);
    eprintln!(
        "silent_survivor: n{survivor} held nothing while nothing was heard; served {served:?} \
         after the client spoke"
    );
    assert!(c.kernel_holders(ip).contains(&survivor));
    assert!(t.elapsed() < 5 * SEC);
    c.finish();
}

/// Half the ARP replies of the holder's machine are lost (an nftables rule
/// in its namespace), and its agent is killed: the standby may find the
/// address free while the killed agent's kernel still has it. Any such
/// conflict is settled by the rule (the standby hears a majority and keeps
/// it; the dead copy ends with its lease), and the address never flaps: once
/// the standby has it, it keeps it.
#[test]
fn lost_arp_replies_cause_at_most_a_short_conflict_and_no_flapping() {
    if !have_nft("lost_replies") {
        return;
    }
    let Some((mut c, holders)) = Cluster::start_serving("lost_replies", &[A]) else {
        return;
    };
    let ip = ip_of(A);
    let h = holders[0];
    let ns = c.ns(h);
    nft(&c, &ns, &["add", "table", "arp", "lossy"]);
    nft(
        &c,
        &ns,
        &[
            "add",
            "chain",
            "arp",
            "lossy",
            "out",
            "{ type filter hook output priority 0; }",
        ],
    );
    nft(
        &c,
        &ns,
        &[
            "add",
            "rule",
            "arp",
            "lossy",
            "out",
            "arp",
            "operation",
            "reply",
            "numgen",
            "random",
            "mod",
            "2",
            "==",
            "0",
            "drop",
        ],
    );
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    c.kill(h);
    let standby = poll(5 * SEC, Duration::from_millis(5), || {
        c.kernel_holders(ip).into_iter().find(|&n| n != h)
    })
    .expect("the standby takes over");
    c.wait_kernel(ip, &[standby], LEASE + 2 * SEC);
    let report = pinger.stop();
    let tl = sampler.stop().since(t);
    let overlap = tl.longest_overlap(all_but(&[]));
    let first = tl.first(|on| on & bit(standby) != 0).expect("taken");
    let after = tl.since(t + first);
    eprintln!(
        "lost_replies: n{h} killed, half its ARP replies lost; n{standby} took {A} after \
         {first:?}; both had it for {overlap:?}; client outage {:?}; {}",
        report.longest_gap(),
        tl.describe()
    );
    // No flapping: from its first install on, the standby keeps it.
    assert!(
        !after.any(|on| on & bit(standby) == 0),
        "{A} left n{standby}: {}",
        tl.describe()
    );
    // A conflict, if any, lasts no longer than the dead copy's lease.
    assert!(overlap <= LEASE, "{}", tl.describe());
    c.finish();
}
