//! End to end: real agents in a network-namespace lab (three nodes and a
//! client on one switch), driven through the CLI, observed from the client
//! (ping, its neighbour cache) and from the nodes' kernels.
//!
//! Needs root, `ip netns` and `ping`; without them every test is skipped
//! with the reason printed (a failure under CI=true). The tests take turns
//! (one lab at a time). Measured figures are printed with `--nocapture`.

mod e2e_support;

use std::process::Command;
use std::time::{Duration, Instant};

use e2e_support::{
    Cluster, LEASE, NODES, Pinger, Sampler, all_but, bin, bit, id_of, ip_of, mac, now, poll,
};
use fechter_linux::lab;

const A: &str = "eth0:198.18.0.50/24";
const B: &str = "eth0:198.18.0.51/24";
const C: &str = "eth0:198.18.0.52/24";
const V6: &str = "eth0:2001:db8::50/64";

const SEC: Duration = Duration::from_secs(1);

fn survivors(dead: usize) -> Vec<usize> {
    (0..NODES).filter(|&n| n != dead).collect()
}

/// The seed's walkthrough: attach, add-address, up, status, a second
/// address, and a machine dies: both addresses on the survivors.
#[test]
fn seed_walkthrough_then_a_machine_dies() {
    let name = "seed_walkthrough_then_a_machine_dies";
    let Some(mut c) = Cluster::start(name) else {
        return;
    };
    let (ip_a, ip_b) = (ip_of(A), ip_of(B));

    // `fechter add-address` on any machine, `fechter up` on each.
    c.cli_ok(0, &["add-address", A]);
    c.up_all();
    let t0 = Instant::now();
    let ha = c.wait_converged(A, &[0, 1, 2], 15 * SEC);
    eprintln!("{name}: {A} placed on n{ha} {:?} after `up`", t0.elapsed());
    c.assert_serving(ip_a, ha, 5 * SEC);
    let text = c.cli_ok(1, &["status"]);
    eprintln!("{name}: status after the first address:\n{text}");
    assert!(
        text.contains(&format!("{A}  assigned to n{ha}  (standby n")),
        "{text}"
    );

    // A second address, added through another machine: balanced.
    c.cli_ok(2, &["add-address", B]);
    let hb = c.wait_converged(B, &[0, 1, 2], 15 * SEC);
    assert_ne!(ha, hb, "two addresses on three nodes go to two nodes");
    c.assert_serving(ip_b, hb, 5 * SEC);
    let report = c.status(0);
    let standby_a = report
        .addresses
        .iter()
        .find(|a| a.spec == A)
        .and_then(|a| a.standby.clone())
        .expect("A has a standby");
    eprintln!("{name}: status with both:\n{}", report.render());

    // The machine holding A dies (agent killed, link down).
    let pinger = Pinger::start(&c.lab, ip_a);
    let t = Instant::now();
    c.kill_machine(ha);
    let event = now();
    let alive = survivors(ha);
    let new_a = wait_moved(&c, A, ha, 5 * SEC);
    let took_over = t.elapsed();
    assert_eq!(id_of(new_a), standby_a, "A moves to its standby");
    c.assert_serving(ip_a, new_a, 5 * SEC);
    let report = pinger.stop();
    // The dead machine's copy goes with its lease; then both converge.
    assert_eq!(c.wait_converged(A, &alive, LEASE + 2 * SEC), new_a);
    assert_eq!(c.wait_converged(B, &alive, 5 * SEC), hb);
    c.assert_serving(ip_b, hb, 5 * SEC);
    let st = c.status(new_a);
    let dead = st
        .members
        .iter()
        .find(|m| m.id == id_of(ha))
        .expect("the dead node is listed");
    assert_eq!(dead.liveness, "dead", "{}", st.render());
    eprintln!(
        "{name}: n{ha} died; {A} on n{new_a} after {:?}; client outage {:?} \
         (first answer {:?} after the death); neighbour {} -> {}",
        took_over,
        report.longest_gap(),
        report.answer_after(event),
        mac(c.lab.mac_of(ha).unwrap()),
        mac(c.lab.mac_of(new_a).unwrap()),
    );
    eprintln!("{name}: status after:\n{}", st.render());
    c.finish();
}

/// The standby of `spec` in `node`'s status.
fn standby_of(c: &Cluster, node: usize, spec: &str) -> usize {
    let r = c.status(node);
    let s = r
        .addresses
        .iter()
        .find(|a| ip_of(&a.spec) == ip_of(spec))
        .and_then(|a| a.standby.clone())
        .unwrap_or_else(|| panic!("{spec} has no standby:\n{}", r.render()));
    e2e_support::node_of(&s)
}

/// Waits until some node other than `old` carries `spec`'s address; returns it.
fn wait_moved(c: &Cluster, spec: &str, old: usize, limit: Duration) -> usize {
    let ip = ip_of(spec);
    poll(limit, Duration::from_millis(5), || {
        c.kernel_holders(ip).into_iter().find(|&n| n != old)
    })
    .unwrap_or_else(|| panic!("{spec} did not move off n{old} within {limit:?}"))
}

/// How a node fails in [`fail_and_come_back`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The machine dies: it drops off the switch, its agent is frozen
    /// (SIGSTOP) and its link goes down; it comes back on the switch with
    /// SIGCONT and the link up.
    Frozen,
    /// Its cable is pulled: the carrier goes, the link stays up and the
    /// agent keeps running; then the carrier comes back.
    Carrier,
}

/// The holder of A fails and comes back, in a cluster of three addresses
/// on three nodes (so the failing node is also the standby of another
/// address). While it is gone, A moves to its standby and the client
/// follows. When it is back, it rejoins without taking anything: until it
/// could be eligible again it installs no address (a stale copy of A it
/// still has must go within a lease and not return) and nothing moves; no
/// address is ever on no node; once all is stable the client reaches every
/// address at its holder.
fn fail_and_come_back(name: &str, how: Failure) {
    let specs = [A, B, C];
    let Some((mut c, holders)) = Cluster::start_serving(name, &specs) else {
        return;
    };
    let ips: Vec<_> = specs.iter().map(|s| ip_of(s)).collect();
    let f = holders[0];
    let standby = standby_of(&c, f, A);
    let watched: Vec<&str> = specs
        .iter()
        .copied()
        .filter(|s| standby_of(&c, 0, s) == f)
        .collect();
    eprintln!(
        "{name}: holders {holders:?}; n{f} fails ({how:?}); it is the standby of {watched:?}"
    );
    let samplers: Vec<Sampler> = ips.iter().map(|&ip| Sampler::start(&c.lab, ip)).collect();
    let pingers: Vec<Pinger> = ips.iter().map(|&ip| Pinger::start(&c.lab, ip)).collect();

    // It fails; A moves to its standby.
    let t = Instant::now();
    match how {
        Failure::Frozen => {
            // Off the switch first, so that nothing is left queued for the
            // frozen agent to read when it resumes; then frozen, link down.
            c.lab.detach(f).unwrap();
            c.stop(f);
            c.lab.set_link(f, false).unwrap();
        }
        Failure::Carrier => c.lab.set_carrier(f, false).unwrap(),
    }
    let new_a = wait_moved(&c, A, f, 5 * SEC);
    let took_over = t.elapsed();
    assert_eq!(new_a, standby, "A moves to its standby");
    c.assert_serving(ips[0], new_a, 5 * SEC);
    let note = match how {
        Failure::Frozen => {
            // Nobody renews the frozen machine's copy: the kernel removes it.
            c.wait_kernel(ips[0], &[new_a], LEASE + 2 * SEC);
            format!("the frozen copy expired after {:?}", t.elapsed())
        }
        Failure::Carrier => {
            // It knows why it must not hold addresses.
            let mut why = Vec::new();
            let reported = poll(5 * SEC, Duration::from_millis(20), || {
                let st = c.try_status(f).ok()?;
                let me = st.members.iter().find(|m| m.id == id_of(f))?;
                why.clone_from(&me.ineligible);
                me.ineligible
                    .iter()
                    .any(|w| w.contains("carrier"))
                    .then_some(())
            });
            assert!(
                reported.is_some(),
                "n{f} does not report its carrier loss: {why:?}"
            );
            format!("n{f} reports itself not eligible: {why:?}")
        }
    };
    // The survivors declare it dead and settle (its own kernel aside).
    let survivors = survivors(f);
    let dead_after = c.wait_seen_dead(f, &survivors, 5 * SEC);
    let placed: Vec<usize> = specs
        .iter()
        .map(|s| {
            poll(5 * SEC, Duration::from_millis(20), || {
                let h = Cluster::status_holder(&c.try_status(survivors[0]).ok()?, s)?;
                let on: Vec<usize> = c
                    .kernel_holders(ip_of(s))
                    .into_iter()
                    .filter(|&n| n != f)
                    .collect();
                (on == [h]).then_some(h)
            })
            .unwrap_or_else(|| panic!("{name}: {s} not settled on the survivors"))
        })
        .collect();

    // It comes back.
    let back = Instant::now();
    match how {
        Failure::Frozen => {
            c.lab.reattach(f).unwrap();
            c.cont(f);
            c.lab.set_link(f, true).unwrap();
        }
        Failure::Carrier => c.lab.set_carrier(f, true).unwrap(),
    }
    let rejoined = c.wait_members_alive(&[0, 1, 2], 10 * SEC);
    // Until n{f} has been back for the maturity period (2 s, counted from
    // when the others see it alive), no leader may give it anything: what
    // changes in this window changes because it came back.
    let window_end = back + rejoined + Duration::from_millis(1800);
    let watched_window = poll(5 * SEC, Duration::from_millis(20), || {
        (Instant::now() >= window_end).then_some(())
    });
    assert!(watched_window.is_some());
    // Then n{f} becomes eligible again (after its quarantine and maturity)
    // and everything settles (a make-before-break hand-off to it is allowed:
    // three addresses on three nodes).
    let eligible = back.elapsed() + c.wait_all_eligible(15 * SEC);
    let (settled, settle_time) = c.wait_stable(&specs, &[0, 1, 2], SEC, 20 * SEC);
    let reports: Vec<_> = pingers.into_iter().map(Pinger::stop).collect();
    let timelines: Vec<_> = samplers.into_iter().map(Sampler::stop).collect();
    eprintln!(
        "{name}: A on n{new_a} after {took_over:?}; {note}; client outage on A {:?}; \
         seen dead after {dead_after:?}; back: rejoined in {rejoined:?}, eligible after \
         {eligible:?}; holders {placed:?} before, {settled:?} once stable for 1 s, \
         {settle_time:?} later",
        reports[0].longest_gap(),
    );
    for ((spec, tl), r) in specs.iter().zip(&timelines).zip(&reports) {
        eprintln!(
            "  {spec}: client outage {:?}; {}",
            r.longest_gap(),
            tl.since(t).describe()
        );
    }
    for ((spec, tl), &holder) in specs.iter().zip(&timelines).zip(&placed) {
        let window = tl.between(back, window_end);
        // A stale copy it still has when it comes back must go (within a
        // lease) and never return; it installs nothing else.
        let stale = window
            .first(|on| on & bit(f) == 0)
            .unwrap_or_else(|| panic!("n{f} kept {spec}: {}", window.describe()));
        assert!(
            stale <= LEASE,
            "n{f} kept a stale copy of {spec} for {stale:?} after it came back: {}",
            window.describe()
        );
        assert!(
            !window.since(back + stale).any(|on| on & bit(f) != 0),
            "n{f} installed {spec} (held by n{holder}) after it came back: {}",
            window.describe()
        );
        assert_eq!(
            window.last_set(),
            bit(holder),
            "{spec} moved when n{f} came back: {}",
            window.describe()
        );
        let after = tl.since(back);
        assert_eq!(
            after.zero_after_first(),
            0,
            "{spec} was on no node after n{f} came back: {}",
            after.describe()
        );
    }
    for (spec, &holder) in specs.iter().zip(&settled) {
        c.assert_serving(ip_of(spec), holder, 5 * SEC);
    }
    c.finish();
}

/// A machine dies (agent frozen, link down) and comes back.
#[test]
fn frozen_machine_fails_over_then_rejoins_without_stealing() {
    fail_and_come_back(
        "frozen_machine_fails_over_then_rejoins_without_stealing",
        Failure::Frozen,
    );
}

/// The holder loses its carrier: it reports itself unhealthy, its address
/// moves; the carrier comes back.
#[test]
fn carrier_loss_moves_the_address_then_rejoins_without_stealing() {
    fail_and_come_back(
        "carrier_loss_moves_the_address_then_rejoins_without_stealing",
        Failure::Carrier,
    );
}

/// The agent is killed (SIGKILL) on a healthy machine: its kernel keeps
/// the address, and answers for it, until the lease ends; the standby takes
/// over once the wire falls silent (the wire as the lock). The address is
/// never on two machines, and on none only between the lease's end and the
/// standby's install (a reprobe, the probe window and a tick).
#[test]
fn killed_agent_leaves_nothing_behind_after_its_lease() {
    let name = "killed_agent_leaves_nothing_behind_after_its_lease";
    let Some((mut c, h)) = Cluster::start_serving(name, &[A]) else {
        return;
    };
    let ha = h[0];
    let ip = ip_of(A);
    let standby = standby_of(&c, ha, A);
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);

    let killed = Instant::now();
    c.kill(ha);
    c.wait_kernel(ip, &[standby], LEASE + 2 * SEC);
    let single = killed.elapsed();
    c.assert_serving(ip, standby, 5 * SEC);
    assert_eq!(c.wait_converged(A, &survivors(ha), 5 * SEC), standby);
    let ping = pinger.stop();
    let tl = sampler.stop().since(killed);
    let dark = tl
        .first(|on| on != 0 && on & bit(ha) == 0)
        .and_then(|in_| tl.first(|on| on == 0).map(|out| in_.saturating_sub(out)));
    eprintln!(
        "{name}: n{ha} killed; A on n{standby} alone after {single:?}; on two nodes for {:?}; \
         on none for {dark:?}; client outage {:?}\n  A: {}",
        tl.longest_overlap(all_but(&[])),
        ping.longest_gap(),
        tl.describe()
    );
    assert!(single <= LEASE + SEC, "{single:?}");
    assert!(
        tl.longest_overlap(all_but(&[])) <= Duration::from_millis(20),
        "A was on two machines: {}",
        tl.describe()
    );
    assert!(
        ping.longest_gap() < Duration::from_millis(500),
        "client outage {:?}: {}",
        ping.longest_gap(),
        tl.describe()
    );
    c.finish();
}

/// Checks a planned hand-off from `old`: the address was never on no node,
/// and went from {old} through (optionally) {old,new} to {new}.
fn assert_make_before_break(name: &str, tl: &e2e_support::Timeline, old: usize, new: usize) {
    assert_eq!(
        tl.zero_after_first(),
        0,
        "{name}: a gap in which no node had the address: {}",
        tl.describe()
    );
    let allowed = [bit(old), bit(old) | bit(new), bit(new)];
    let mut stage = 0;
    for s in &tl.samples {
        let Some(i) = allowed.iter().position(|&m| m == s.on) else {
            panic!(
                "{name}: unexpected holders during the hand-off: {}",
                tl.describe()
            );
        };
        assert!(
            i >= stage,
            "{name}: the hand-off went back: {}",
            tl.describe()
        );
        stage = i;
    }
    assert_eq!(tl.last_set(), bit(new), "{name}: {}", tl.describe());
}

/// SIGTERM on the holder: the address is handed off make-before-break
/// (never on no node), and the agent exits 0.
#[test]
fn sigterm_hands_off_make_before_break() {
    let name = "sigterm_hands_off_make_before_break";
    let Some((mut c, h)) = Cluster::start_serving(name, &[A]) else {
        return;
    };
    let ha = h[0];
    let ip = ip_of(A);
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    c.term(ha);
    let status = c
        .agent(ha)
        .wait_exit(10 * SEC)
        .expect("the agent exits after SIGTERM");
    let exited = t.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    let new = c.wait_converged(A, &survivors(ha), 5 * SEC);
    c.assert_serving(ip, new, 5 * SEC);
    let ping = pinger.stop();
    let tl = sampler.stop();
    eprintln!(
        "{name}: n{ha} exited 0 after {exited:?}; A on n{new}; both had it for {:?}; \
         client outage {:?} ({} answers)\n  A: {}",
        tl.longest_overlap(all_but(&[])),
        ping.longest_gap(),
        ping.count(),
        tl.describe()
    );
    assert_make_before_break(name, &tl, ha, new);
    c.finish();
}

/// `fechter down` on the holder: the same make-before-break hand-off; the
/// node stays a member, marked down.
#[test]
fn down_hands_off_make_before_break() {
    let name = "down_hands_off_make_before_break";
    let Some((c, h)) = Cluster::start_serving(name, &[A]) else {
        return;
    };
    let ha = h[0];
    let ip = ip_of(A);
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    c.cli_ok(ha, &["down"]);
    let new = c.wait_converged(A, &[0, 1, 2], 10 * SEC);
    let moved = t.elapsed();
    assert_ne!(new, ha);
    c.assert_serving(ip, new, 5 * SEC);
    let ping = pinger.stop();
    let tl = sampler.stop();
    let st = c.status(ha);
    let me = st.members.iter().find(|m| m.id == id_of(ha)).unwrap();
    assert_eq!((me.liveness.as_str(), me.admin.as_str()), ("alive", "down"));
    eprintln!(
        "{name}: n{ha} down; A on n{new} after {moved:?}; both had it for {:?}; \
         client outage {:?}\n  A: {}",
        tl.longest_overlap(all_but(&[])),
        ping.longest_gap(),
        tl.describe()
    );
    assert_make_before_break(name, &tl, ha, new);
    c.finish();
}

/// Somebody deletes the address on its holder behind the agent's back: the
/// agent puts it back within a second.
#[test]
fn address_removed_behind_the_agents_back_comes_back() {
    let name = "address_removed_behind_the_agents_back_comes_back";
    let Some((c, h)) = Cluster::start_serving(name, &[A]) else {
        return;
    };
    let ha = h[0];
    let ip = ip_of(A);
    let sampler = Sampler::start(&c.lab, ip);
    let t = Instant::now();
    c.lab
        .ip(&c.ns(ha), &["addr", "del", "198.18.0.50/24", "dev", "eth0"])
        .unwrap();
    let deleted = t.elapsed();
    c.wait_kernel(ip, &[ha], SEC);
    let back = t.elapsed();
    c.assert_serving(ip, ha, 5 * SEC);
    let tl = sampler.stop();
    let gap = tl
        .first(|on| on == 0)
        .and_then(|gone| tl.since(tl.start + gone).first(|on| on != 0));
    eprintln!(
        "{name}: deleted on n{ha} (took {deleted:?}); back after {back:?}; \
         the sampler saw it missing for {gap:?}\n  A: {}",
        tl.describe()
    );
    assert!(back <= SEC, "{back:?}");
    assert_eq!(c.wait_converged(A, &[0, 1, 2], 5 * SEC), ha);
    c.finish();
}

/// The holder's agent crashes and is restarted at once with the same data
/// dir, long before the lease of the copy it installed runs out: it
/// removes that stale copy at once (it holds nothing until it has learned
/// the cluster's table), the standby, which probes the address, takes it
/// as soon as the wire falls silent, and the address is never on two
/// machines.
#[test]
fn restart_after_a_crash_removes_the_stale_copy() {
    let name = "restart_after_a_crash_removes_the_stale_copy";
    let Some((mut c, h)) = Cluster::start_serving(name, &[A]) else {
        return;
    };
    let ha = h[0];
    let ip = ip_of(A);
    let standby = standby_of(&c, ha, A);
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    c.kill(ha);
    c.restart(ha);
    let restarted = t.elapsed();
    c.wait_members_alive(&[0, 1, 2], 10 * SEC);
    let (placed, settle) = c.wait_stable(&[A], &[0, 1, 2], 2 * SEC, 15 * SEC);
    let holder = placed[0];
    c.assert_serving(ip, holder, 5 * SEC);
    let ping = pinger.stop();
    let tl = sampler.stop().since(t);
    let gone = tl.first(|on| on & bit(ha) == 0);
    eprintln!(
        "{name}: n{ha} killed and restarted after {restarted:?}; its stale copy gone {gone:?} \
         after the kill; A on n{standby} after {:?}; A on n{holder} (stable 2 s after \
         {settle:?}); on two nodes for {:?}; client outage {:?}\n  A: {}",
        tl.first(|on| on & bit(standby) != 0),
        tl.longest_overlap(all_but(&[])),
        ping.longest_gap(),
        tl.describe(),
    );
    assert_eq!(holder, standby, "A stays with the node that took it over");
    let gone = gone.expect("the stale copy is removed");
    // The lease alone would take at least 1.2 s after the kill (the last
    // renewal was up to 800 ms before it).
    assert!(
        gone < LEASE - Duration::from_millis(800),
        "the restarted agent did not remove its stale copy; the lease did, {gone:?} after the kill"
    );
    assert!(
        tl.longest_overlap(all_but(&[])) <= Duration::from_millis(20),
        "A was on two machines: {}",
        tl.describe()
    );
    c.finish();
}

/// IPv6: an address in 2001:db8::/64 moves the same way when its machine
/// dies; the client's neighbour entry (`ip -6 neigh`) follows.
#[test]
fn ipv6_address_moves_when_its_machine_dies() {
    let name = "ipv6_address_moves_when_its_machine_dies";
    let Some((mut c, h)) = Cluster::start_serving(name, &[V6]) else {
        return;
    };
    let ha = h[0];
    let ip = ip_of(V6);
    let standby = standby_of(&c, ha, V6);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    c.kill_machine(ha);
    let new = wait_moved(&c, V6, ha, 5 * SEC);
    let took_over = t.elapsed();
    assert_eq!(new, standby);
    c.assert_serving(ip, new, 5 * SEC);
    let ping = pinger.stop();
    assert_eq!(c.wait_converged(V6, &survivors(ha), LEASE + 2 * SEC), new);
    eprintln!(
        "{name}: n{ha} died; {V6} on n{new} after {took_over:?}; client outage {:?}; \
         neighbour {} -> {}",
        ping.longest_gap(),
        mac(c.lab.mac_of(ha).unwrap()),
        mac(c.lab.mac_of(new).unwrap()),
    );
    c.finish();
}

/// `fechter demo` (README command one) runs, prints the outage a client
/// saw, exits 0 and leaves no namespace behind.
#[test]
fn demo_runs_and_cleans_up() {
    let name = "demo_runs_and_cleans_up";
    if !lab::require_lab(name) {
        return;
    }
    let _turn = e2e_support::serial();
    let before = lab::netns_list().unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("demo").env_remove("FECHTER_SOCKET");
    let run = e2e_support::run_bounded(cmd, 90 * SEC);
    eprintln!(
        "{name}: `fechter demo` took {:?}:\n{}{}",
        run.took, run.stdout, run.stderr
    );
    let status = run.status.expect("the demo finishes within 90 s");
    assert!(status.success(), "fechter demo: {status}");
    // "client-observed outage: 84 ms (...)" or "... 1.20 s (...)".
    let outage = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("client-observed outage: "))
        .and_then(|rest| {
            let mut words = rest.split_whitespace();
            let value: f64 = words.next()?.parse().ok()?;
            match words.next()? {
                "ms" => Some(value),
                "s" => Some(value * 1000.0),
                _ => None,
            }
        })
        .expect("the demo prints the client-observed outage");
    eprintln!("{name}: the demo measured a client-observed outage of {outage} ms");
    assert!(outage < 2000.0, "an outage of {outage} ms");
    assert!(
        run.stdout.contains("assigned to n"),
        "the demo prints the status"
    );
    let prefix = run
        .stdout
        .lines()
        .find_map(|l| l.split("namespaces ").nth(1)?.split("-* removed").next())
        .expect("the demo reports the namespaces it removed")
        .to_owned();
    assert!(prefix.starts_with("fch"), "{prefix}");
    e2e_support::assert_netns_restored(&prefix, &before);
}
