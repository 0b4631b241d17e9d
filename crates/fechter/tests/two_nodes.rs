//! Two-node clusters (a pair of load balancers), end to end in the
//! namespace lab, with and without a gateway: the holder's machine dies,
//! it is stopped (SIGTERM), taken `down`, or detached from the switch. The
//! client is served at the three-node figures and never by both.
//!
//! Needs root, `ip netns` and `ping` (skipped with the reason printed
//! otherwise; a failure under CI=true).

mod e2e_support;

use std::time::{Duration, Instant};

use e2e_support::{Cluster, Pinger, Sampler, all_but, bit, ip_of, poll};

const A: &str = "eth0:198.18.0.70/24";
const GATEWAY: &str = "198.18.0.254";
const SEC: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The machine dies: agent killed, link down.
    MachineDeath,
    /// SIGTERM: the agent hands its address off and exits.
    Sigterm,
    /// `fechter down`.
    Down,
    /// Off the switch, carrier up: it hears nothing, and nothing hears it.
    Detached,
}

/// A pair serving A, with the client as the gateway when `gateway`.
fn pair(name: &str, gateway: bool) -> Option<(Cluster, usize)> {
    let args = move |_: usize| {
        if gateway {
            vec!["--gateway".to_string(), GATEWAY.to_string()]
        } else {
            Vec::new()
        }
    };
    let prepare = move |lab: &fechter_linux::Lab| {
        if gateway {
            lab.ip(
                &lab.client_ns(),
                &["addr", "add", &format!("{GATEWAY}/24"), "dev", "eth0"],
            )
            .expect("gateway address");
        }
    };
    let c = Cluster::start_sized(name, 2, args, prepare)?;
    c.cli_ok(0, &["add-address", A]);
    c.up_all();
    let (placed, _) = c.wait_stable(&[A], &[0, 1], SEC, 20 * SEC);
    c.assert_serving(ip_of(A), placed[0], 5 * SEC);
    Some((c, placed[0]))
}

fn run(fault: Fault, gateway: bool) {
    let name = format!(
        "pair_{}_{}",
        format!("{fault:?}").to_lowercase(),
        if gateway { "gw" } else { "nogw" }
    );
    let Some((mut c, h)) = pair(&name, gateway) else {
        return;
    };
    let peer = 1 - h;
    let ip = ip_of(A);
    let sampler = Sampler::start(&c.lab, ip);
    let pinger = Pinger::start(&c.lab, ip);
    let t = Instant::now();
    match fault {
        Fault::MachineDeath => c.kill_machine(h),
        Fault::Sigterm => c.term(h),
        Fault::Down => {
            c.cli_ok(h, &["down"]);
        }
        Fault::Detached => c.lab.detach(h).unwrap(),
    }
    // The peer serves (the dead or detached holder's kernel may keep its
    // copy until the lease ends, where nothing reaches it).
    let served = poll(10 * SEC, Duration::from_millis(5), || {
        c.kernel_holders(ip).contains(&peer).then(|| t.elapsed())
    })
    .unwrap_or_else(|| panic!("{name}: n{peer} never took {A}"));
    c.assert_serving(ip, peer, 5 * SEC);
    if fault == Fault::Detached {
        // The split lasts: a window to watch, not an event to await.
        std::thread::sleep(SEC);
    }
    let report = pinger.stop();
    let tl = sampler.stop().since(t);
    if std::env::var_os("FECHTER_E2E_VERBOSE").is_some() {
        eprintln!("{}", c.agent(peer).log_tail(30));
    }
    let overlap = tl.longest_overlap(all_but(&[]));
    eprintln!(
        "{name}: n{peer} serves after {served:?}; client outage {:?} ({} answers); \
         both had it for {overlap:?}\n  A: {}",
        report.longest_gap(),
        report.count(),
        tl.describe()
    );
    match fault {
        Fault::Sigterm | Fault::Down => {
            // Make-before-break: never on no node, the client loses nothing
            // but the odd echo in flight while its neighbour entry moves.
            assert_eq!(tl.zero_after_first(), 0, "{name}: {}", tl.describe());
            assert!(
                report.longest_gap() < Duration::from_millis(50),
                "{name}: client outage {:?}",
                report.longest_gap()
            );
        }
        Fault::MachineDeath | Fault::Detached => {
            assert!(
                report.longest_gap() < Duration::from_millis(500),
                "{name}: client outage {:?}",
                report.longest_gap()
            );
        }
    }
    if fault == Fault::Detached {
        // The detached holder let go before its peer took over.
        let both = tl.longest_overlap(bit(0) | bit(1));
        assert_eq!(both, Duration::ZERO, "{name}: {}", tl.describe());
        c.lab.reattach(h).unwrap();
        c.wait_members_alive(&[0, 1], 15 * SEC);
        let holder = c.wait_converged(A, &[0, 1], 10 * SEC);
        c.assert_serving(ip, holder, 5 * SEC);
    }
    c.finish();
}

#[test]
fn pair_machine_death_without_a_gateway() {
    run(Fault::MachineDeath, false);
}

#[test]
fn pair_machine_death_with_a_gateway() {
    run(Fault::MachineDeath, true);
}

#[test]
fn pair_sigterm_without_a_gateway() {
    run(Fault::Sigterm, false);
}

#[test]
fn pair_sigterm_with_a_gateway() {
    run(Fault::Sigterm, true);
}

#[test]
fn pair_down_without_a_gateway() {
    run(Fault::Down, false);
}

#[test]
fn pair_down_with_a_gateway() {
    run(Fault::Down, true);
}

#[test]
fn pair_detached_holder_without_a_gateway() {
    run(Fault::Detached, false);
}

#[test]
fn pair_detached_holder_with_a_gateway() {
    run(Fault::Detached, true);
}
