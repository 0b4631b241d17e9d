//! The benchmark's other rows: idle cost, false failovers with both cores
//! saturated, re-homing in simulation, 1,000 addresses, ten nodes, two
//! nodes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fechter_cluster::engine::Timings;
use fechter_linux::lab::{self, Lab};

use crate::e2e_support::{Cluster, Sampler, guard_child, poll};
use crate::fechter_subject::{Fechter, agent_args, client_is_gateway};
use crate::keepalived::Keepalived;
use crate::measure::usage;
use crate::subject::{Fault, Subject, vip};
use crate::{Options, print_table, run_faults, stats, stopping};

/// The fast profile shipped in `dist/profiles/fast.toml`.
pub fn fast_profile() -> Result<PathBuf, String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dist/profiles/fast.toml");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} is missing", p.display()))
    }
}

/// `| label | max / mean % | RSS |` over `span` of idle, every node.
pub fn idle(s: &mut dyn Subject, span: Duration) -> String {
    if let Err(e) = s.settle() {
        return format!("| {} | did not settle: {e} | |", s.label());
    }
    let groups: Vec<Vec<i32>> = (0..s.lab().nodes()).map(|n| s.pids(n)).collect();
    let used: Option<Vec<(f64, u64)>> = usage(&groups, span).into_iter().collect();
    let Some(used) = used else {
        return format!("| {} | a process went away while measuring | |", s.label());
    };
    let max = used.iter().map(|u| u.0).fold(0.0, f64::max);
    let mean = used.iter().map(|u| u.0).sum::<f64>() / used.len() as f64;
    let rss = used.iter().map(|u| u.1).max().unwrap_or(0);
    format!(
        "| {} | {max:.2} / {mean:.2} | {:.1} MB |",
        s.label(),
        rss as f64 / 1024.0
    )
}

/// Two busy loops (both cores), killed and reaped on drop; each is our
/// direct child with `PR_SET_PDEATHSIG`, so none outlives the benchmark.
struct Busy(Vec<Child>);

impl Busy {
    fn start() -> Busy {
        Busy(
            (0..2)
                .filter_map(|_| {
                    let mut cmd = Command::new("sh");
                    cmd.args(["-c", "while :; do :; done"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    guard_child(&mut cmd);
                    cmd.spawn().ok()
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Log lines of every agent that contain `what`.
fn log_count(f: &mut Fechter, what: &str) -> usize {
    let nodes = f.lab().nodes();
    (0..nodes)
        .map(|n| {
            let log = f.cluster_mut().agent(n).log.clone();
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(what))
                .count()
        })
        .sum()
}

/// `span` with both cores saturated by busy loops: members declared down,
/// standby takeovers and moves of the address (all false failovers).
pub fn saturated(f: &mut Fechter, span: Duration) -> String {
    let label = f.label();
    let holder = match f.settle() {
        Ok(h) => h,
        Err(e) => return format!("| {label} | did not settle: {e} | | |"),
    };
    let (down0, took0) = (log_count(f, "member down"), log_count(f, "took over"));
    let sampler = Sampler::start(f.lab(), vip());
    let busy = Busy::start();
    std::thread::sleep(span);
    drop(busy);
    let timeline = sampler.stop();
    let moves = timeline
        .samples
        .windows(2)
        .filter(|w| w[0].on != w[1].on)
        .count();
    let down = log_count(f, "member down") - down0;
    let took = log_count(f, "took over") - took0;
    let end = timeline.last_set();
    let at_end: Vec<String> = (0..f.lab().nodes())
        .filter(|&n| end & crate::e2e_support::bit(n) != 0)
        .map(|n| format!("n{n}"))
        .collect();
    format!(
        "| {label} | {down} | {took} | {moves} (n{holder} held it at the start, {{{}}} at the end) |",
        at_end.join(",")
    )
}

/// The extra sections: simulation, 1,000 addresses, ten nodes, two nodes.
pub fn extra(opts: &Options, saturated_rows: &[String]) {
    if !saturated_rows.is_empty() {
        println!();
        println!(
            "## False failovers, {} s with both cores saturated (3 nodes)",
            opts.saturated_secs
        );
        println!();
        println!("| subject | members declared down | standby takeovers | address moves |");
        println!("|---|---|---|---|");
        for r in saturated_rows {
            println!("{r}");
        }
    }
    if opts.wants_row("sim") {
        sim_rows();
    }
    if opts.wants_row("scale")
        && let Err(e) = thousand(opts)
    {
        println!("\n1,000 addresses: FAILED: {e}");
    }
    if opts.wants_row("ten") {
        ten(opts);
    }
    if opts.wants_row("pairs") && !stopping() {
        pairs(opts);
    }
}

/// The faults of the two-node section.
const PAIR_FAULTS: [Fault; 4] = [
    Fault::MachineDeath,
    Fault::Sigterm,
    Fault::Down,
    Fault::Partition,
];

/// Two-node clusters: fechter with and without `--gateway` (when `fechter`
/// is among the subjects), keepalived at `advert_int` 0.01 s (when `ka0.01`
/// is), each through [`PAIR_FAULTS`] `opts.trials` times.
fn pairs(opts: &Options) {
    const REFERENCE: &str = "fechter, 2 nodes";
    let mut lines = Vec::new();
    let mut broken = Vec::new();
    if opts.wants_subject("fechter") {
        for (label, gateway) in [(REFERENCE, true), ("fechter, 2 nodes, no gateway", false)] {
            if stopping() {
                break;
            }
            eprintln!("== {label}");
            match Fechter::start_custom(label, 2, None, gateway) {
                Ok(mut f) => lines.extend(run_faults(&mut f, &PAIR_FAULTS, opts.trials)),
                Err(e) => broken.push(format!("{label}: cannot start: {e}")),
            }
        }
    }
    if opts.wants_subject("ka0.01") && !stopping() {
        eprintln!("== ka0.01, 2 nodes");
        match Keepalived::start_sized(Duration::from_millis(10), 2) {
            Ok(mut k) => lines.extend(run_faults(&mut k, &PAIR_FAULTS, opts.trials)),
            Err(e) => broken.push(format!("keepalived 0.01 s, 2 nodes: cannot start: {e}")),
        }
    }
    println!();
    println!("## Two nodes (ms; median over trials)");
    println!();
    print_table(&lines, &PAIR_FAULTS, REFERENCE);
    for b in broken {
        println!("\n{b}");
    }
}

/// Re-homing every address of a crashed node, in the simulator.
fn sim_rows() {
    println!();
    println!("## Re-homing after a crash, simulated (100 nodes, 1,000 addresses, default timings)");
    println!();
    println!(
        "| seed | addresses the victim held | first / median / last re-homed (virtual ms) | two holders | wall time |"
    );
    println!("|---|---|---|---|---|");
    for seed in 1..=3 {
        match fechter_cluster::rehome::measure(seed, 100, 1000, Timings::default()) {
            Ok(r) => println!(
                "| {seed} | {} | {} / {} / {} | {} | {:.1} s |",
                r.victim_held,
                r.first.as_millis(),
                r.median.as_millis(),
                r.rehomed_after.as_millis(),
                r.duplicates,
                r.wall.as_secs_f64()
            ),
            Err(e) => println!("| {seed} | FAILED: {e} | | | |"),
        }
    }
}

/// Which node has which of `ips` in its kernel (one `ip addr` per node).
fn kernel_map(lab: &Lab) -> Result<BTreeMap<IpAddr, Vec<usize>>, String> {
    let mut map: BTreeMap<IpAddr, Vec<usize>> = BTreeMap::new();
    for n in 0..lab.nodes() {
        let out = lab
            .ip(&lab.ns_name(n), &["-o", "addr", "show", "dev", "eth0"])
            .map_err(|e| e.to_string())?;
        for line in out.lines() {
            let mut w = line.split_whitespace();
            if w.any(|x| x == "inet")
                && let Some(ip) = w.next().and_then(|a| a.split('/').next())
                && let Ok(ip) = ip.parse::<IpAddr>()
            {
                map.entry(ip).or_default().push(n);
            }
        }
    }
    Ok(map)
}

/// The k-th address of the 1,000: 198.18.1.1 .. 198.18.4.250, /32.
fn many(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1 + (k / 250) as u8, 1 + (k % 250) as u8)
}

/// The client reaches 198.18.0.0/15 directly, keeps many neighbour
/// entries, and plays the gateway.
fn client_for_many(lab: &Lab) {
    client_is_gateway(lab);
    lab.ip(
        &lab.client_ns(),
        &["route", "add", "198.18.0.0/15", "dev", "eth0"],
    )
    .expect("client route");
    for (k, v) in [
        ("gc_thresh1", "2048"),
        ("gc_thresh2", "4096"),
        ("gc_thresh3", "8192"),
    ] {
        let _ = lab.exec(
            &lab.client_ns(),
            &["sysctl", "-qw", &format!("net.ipv4.neigh.default.{k}={v}")],
        );
    }
}

/// 1,000 addresses on three nodes: idle cost per agent, then machine death
/// of the node with the most, and when each of its addresses answered the
/// client again.
fn thousand(opts: &Options) -> Result<(), String> {
    const N: usize = 1000;
    let mut c = Cluster::start_with("bench-1000", agent_args(None), client_for_many)
        .ok_or("the namespace lab cannot run here")?;
    let t0 = Instant::now();
    for k in 0..N {
        c.cli(0, &["add-address", &format!("eth0:{}/32", many(k))])?;
    }
    c.up_all();
    let added = t0.elapsed();
    let all: Vec<IpAddr> = (0..N).map(|k| IpAddr::V4(many(k))).collect();
    let placed = |c: &Cluster| -> Option<BTreeMap<IpAddr, Vec<usize>>> {
        let m = kernel_map(&c.lab).ok()?;
        all.iter()
            .all(|ip| m.get(ip).is_some_and(|h| h.len() == 1))
            .then_some(m)
    };
    poll(Duration::from_secs(60), Duration::from_millis(200), || {
        placed(&c)
    })
    .ok_or("the 1,000 addresses were not each on exactly one node within 60 s")?;
    let served = t0.elapsed();
    c.wait_all_eligible(Duration::from_secs(30));
    // A node that became eligible late receives its share by hand-offs:
    // measure only once the placement is even (the counts differ by at most
    // one) and has stopped moving (the same for 2 s), or the idle figures
    // include the hand-offs and the victim's list is stale.
    let even = |m: &BTreeMap<IpAddr, Vec<usize>>| {
        let mut counts = [0usize; 3];
        for h in m.values() {
            if let Some(c) = h.first().and_then(|n| counts.get_mut(*n)) {
                *c += 1;
            }
        }
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
    };
    let mut last: Option<BTreeMap<IpAddr, Vec<usize>>> = None;
    let map = poll(Duration::from_secs(60), Duration::from_secs(2), || {
        let now = placed(&c).filter(|m| even(m));
        let stable = now.is_some() && now == last;
        last = now;
        stable.then(|| last.clone()).flatten()
    })
    .ok_or("the 1,000 addresses were not spread evenly and still within 60 s")?;
    let mut per: BTreeMap<usize, Vec<Ipv4Addr>> = BTreeMap::new();
    for (ip, h) in &map {
        if let IpAddr::V4(v4) = ip
            && all.contains(ip)
        {
            per.entry(h[0]).or_default().push(*v4);
        }
    }
    let groups: Vec<Vec<i32>> = (0..3)
        .map(|n| c.agent_pid(n).into_iter().collect())
        .collect();
    let used = usage(&groups, Duration::from_secs(opts.idle_secs));
    let (victim, victim_ips) = per
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(n, v)| (*n, v.clone()))
        .ok_or("nobody holds anything")?;
    // Every address answers the client before the fault (and the client
    // has a neighbour entry for each).
    let ns = c.lab.client_ns();
    let mut unanswered = all_v4(N);
    for _ in 0..3 {
        let warm = probe_many(&ns, &unanswered, Instant::now(), Duration::from_secs(3))?;
        unanswered = unanswered
            .into_iter()
            .zip(warm)
            .filter_map(|(a, w)| w.is_none().then_some(a))
            .collect();
        if unanswered.is_empty() {
            break;
        }
    }
    let unanswered = unanswered.len();
    let fault = Instant::now();
    c.stop(victim);
    c.lab.set_link(victim, false).map_err(|e| e.to_string())?;
    let answers = probe_many(&ns, &victim_ips, fault, Duration::from_secs(5));
    let answers = answers?;
    c.kill(victim);
    let got: Vec<Duration> = answers.iter().flatten().copied().collect();
    println!();
    println!("## 1,000 addresses on 3 nodes");
    println!();
    println!(
        "Added through the CLI in {:.1} s, all served {:.1} s after the first add; {unanswered} of 1,000 did not answer the client before the fault.",
        added.as_secs_f64(),
        served.as_secs_f64()
    );
    println!();
    println!("| row | figure |");
    println!("|---|---|");
    for (n, u) in used.iter().enumerate() {
        match u {
            Some((cpu, rss)) => println!(
                "| idle agent n{n} ({} addresses) | {cpu:.2} % of a core, {:.1} MB RSS |",
                per.get(&n).map_or(0, Vec::len),
                *rss as f64 / 1024.0
            ),
            None => println!("| idle agent n{n} | went away |"),
        }
    }
    match stats(got.clone()) {
        Some((first, median, last)) => println!(
            "| machine death of n{victim}: its {} addresses answered again (first / median / last) | {} / {} / {} ms; {} never within 5 s |",
            victim_ips.len(),
            first.as_millis(),
            median.as_millis(),
            last.as_millis(),
            victim_ips.len() - got.len()
        ),
        None => {
            println!("| machine death of n{victim} | none of its addresses answered within 5 s |")
        }
    }
    Ok(())
}

fn all_v4(n: usize) -> Vec<Ipv4Addr> {
    (0..n).map(many).collect()
}

/// Ten nodes: machine death, `opts.trials` times.
fn ten(opts: &Options) {
    println!();
    println!("## Ten nodes, machine death");
    println!();
    match Fechter::start_sized("fechter, 10 nodes", 10, None) {
        Ok(mut f) => {
            let lines = run_faults(&mut f, &[Fault::MachineDeath], opts.trials);
            for l in lines {
                println!("{}", l.render(None));
            }
        }
        Err(e) => println!("ten nodes: cannot start: {e}"),
    }
}

/// Pings each of `targets` from namespace `ns` every 10 ms until it answers
/// (after `from`), for at most `limit`; returns for each target the time
/// from `from` to its first answer. A raw ICMP socket in a thread that
/// entered the client's namespace.
fn probe_many(
    ns: &str,
    targets: &[Ipv4Addr],
    from: Instant,
    limit: Duration,
) -> Result<Vec<Option<Duration>>, String> {
    let ns = ns.to_owned();
    let targets = targets.to_vec();
    std::thread::spawn(move || -> Result<Vec<Option<Duration>>, String> {
        lab::enter_netns(&ns).map_err(|e| e.to_string())?;
        icmp::probe(&targets, from, limit).map_err(|e| format!("ICMP probe: {e}"))
    })
    .join()
    .map_err(|_| "the ICMP prober panicked".to_string())?
}

mod icmp {
    //! A minimal ICMP echo prober on a raw socket.

    use std::collections::HashMap;
    use std::io;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    use fechter::agent::health::checksum;

    const ROUND: Duration = Duration::from_millis(10);

    struct Sock(i32);

    impl Drop for Sock {
        fn drop(&mut self) {
            // SAFETY: closing the descriptor this struct owns.
            unsafe { libc::close(self.0) };
        }
    }

    pub fn probe(
        targets: &[Ipv4Addr],
        from: Instant,
        limit: Duration,
    ) -> io::Result<Vec<Option<Duration>>> {
        // SAFETY: plain socket syscalls on a descriptor owned by `Sock`.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = Sock(fd);
        let index: HashMap<Ipv4Addr, usize> =
            targets.iter().enumerate().map(|(i, a)| (*a, i)).collect();
        let mut first: Vec<Option<Duration>> = vec![None; targets.len()];
        let mut pending = targets.len();
        let id = (std::process::id() & 0xffff) as u16;
        let mut seq: u16 = 0;
        let rounds = limit.as_millis() / ROUND.as_millis() + 1;
        for _ in 0..rounds {
            if pending == 0 || from.elapsed() > limit {
                break;
            }
            seq = seq.wrapping_add(1);
            for (i, a) in targets.iter().enumerate() {
                if first[i].is_some() {
                    continue;
                }
                let mut pkt = [8u8, 0, 0, 0, 0, 0, 0, 0];
                pkt[4..6].copy_from_slice(&id.to_be_bytes());
                pkt[6..8].copy_from_slice(&seq.to_be_bytes());
                let c = checksum(&pkt);
                pkt[2..4].copy_from_slice(&c.to_be_bytes());
                let sa = libc::sockaddr_in {
                    sin_family: libc::AF_INET as u16,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: valid buffer and address of the right length.
                unsafe {
                    libc::sendto(
                        sock.0,
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&raw const sa).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as u32,
                    )
                };
            }
            let end = Instant::now() + ROUND;
            let mut buf = [0u8; 1500];
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd: sock.0,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
                if r <= 0 {
                    continue;
                }
                loop {
                    // SAFETY: valid buffer.
                    let n = unsafe { libc::recv(sock.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n <= 0 {
                        break;
                    }
                    let pkt = &buf[..n as usize];
                    let ihl = usize::from(pkt[0] & 0x0f) * 4;
                    if pkt.len() < ihl + 8 || pkt[ihl] != 0 {
                        continue;
                    }
                    if u16::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5]]) != id {
                        continue;
                    }
                    let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
                    if let Some(&i) = index.get(&src)
                        && first[i].is_none()
                    {
                        first[i] = Some(from.elapsed());
                        pending -= 1;
                    }
                }
            }
        }
        Ok(first)
    }
}
