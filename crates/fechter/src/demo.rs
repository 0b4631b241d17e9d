//! `fechter demo`: a live cluster in network namespaces on this machine.
//!
//! Builds a [`Lab`] (N machines and a client on one virtual switch), starts
//! one agent of this very binary in every machine's namespace, marks them
//! up, adds two addresses, shows where they went, then kills the machine
//! holding the first one while the client pings it every 10 ms, and prints
//! the outage the client saw and how its neighbour entry moved. Everything
//! (agents, pinger, namespaces, files) is removed at the end, also on an
//! error and on Ctrl-C (SIGINT, SIGTERM and SIGHUP set a flag that every
//! wait checks; the children run in their own process group so that a
//! Ctrl-C on the terminal reaches only the demo).
//!
//! Only 198.18.0.0/24 addresses, only inside the lab's namespaces.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fechter_linux::lab::{self, Lab, PingOptions, Pinger};

use crate::cli::DemoArgs;
use crate::control::{self, Request, Response, StatusReport};
use crate::lab_agent::{AgentLauncher, LabAgent};

/// The two addresses the demo adds.
const ADDRESSES: [&str; 2] = ["eth0:198.18.0.50/24", "eth0:198.18.0.51/24"];

/// The client's pinger: `ping -D -i 0.01`, stopping by itself after 120 s.
const PING: PingOptions = PingOptions {
    interval: Duration::from_millis(10),
    deadline_secs: 120,
    unix_times: true,
};

/// Set by SIGINT, SIGTERM or SIGHUP.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Runs the demo. Errors say exactly why it cannot run here.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    if let Some(euid) = effective_uid()
        && euid != 0
    {
        return Err(format!(
            "the demo cannot run here: not root (euid {euid}); it creates network namespaces, \
             which needs root: run `sudo fechter demo` (or `sudo scripts/demo`)"
        ));
    }
    lab::lab_available().map_err(|why| format!("the demo cannot run here: {why}"))?;
    catch_signals()?;
    let nodes = usize::from(args.nodes);
    let mut demo = Demo {
        agents: Vec::new(),
        pinger: None,
        lab: None,
        dir: None,
        nodes,
    };
    let result = demo.play();
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    if let Err(e) = &result
        && !interrupted
    {
        println!();
        println!("stopped: {e}");
        demo.print_logs();
    }
    demo.cleanup();
    match result {
        Ok(()) => Ok(()),
        Err(_) if interrupted => Err("the demo was interrupted (everything was removed)".into()),
        Err(e) => Err(format!("the demo failed: {e}")),
    }
}

/// The effective user id, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Catches SIGINT, SIGTERM and SIGHUP for the rest of the process's life:
/// each sets [`INTERRUPTED`], which every wait checks.
fn catch_signals() -> Result<(), String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("cannot start a runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let kinds = [
                    SignalKind::interrupt(),
                    SignalKind::terminate(),
                    SignalKind::hangup(),
                ];
                let mut streams = Vec::new();
                for k in kinds {
                    match signal(k) {
                        Ok(s) => streams.push(s),
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("cannot catch signals: {e}")));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let [int, term, hup] = &mut streams[..] else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                    if !INTERRUPTED.swap(true, Ordering::SeqCst) {
                        eprintln!("\ninterrupted: cleaning up ...");
                    }
                }
            });
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the signal thread did not start".to_string())?
}

fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Calls `check` every `every` until it returns `Some`, for at most
/// `limit`; stops early on Ctrl-C. `what` names the wait in the error.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    lab::poll(limit, every, || match check_interrupted() {
        Ok(()) => check().map(Ok),
        Err(e) => Some(Err(e)),
    })
    .unwrap_or_else(|| Err(format!("timed out after {limit:?} waiting for {what}")))
}

/// `84 ms` or `2.10 s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn step(text: &str) {
    print!("{text}");
    let _ = std::io::stdout().flush();
}

fn ip_of(spec: &str) -> IpAddr {
    spec.parse::<fechter_core::AddrSpec>()
        .expect("the demo's addresses are valid")
        .ip
}

struct Demo {
    // Cleaned up in this order: pinger, agents, lab, files.
    agents: Vec<LabAgent>,
    pinger: Option<Pinger>,
    lab: Option<Lab>,
    dir: Option<PathBuf>,
    nodes: usize,
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.cleanup();
    }
}

impl Demo {
    fn lab(&self) -> &Lab {
        self.lab
            .as_ref()
            .expect("the lab exists while the demo plays")
    }

    fn play(&mut self) -> Result<(), String> {
        let t0 = Instant::now();
        let n = self.nodes;

        // The files: a key, and per agent a data dir, a socket and a log.
        let dir = std::env::temp_dir().join(format!(
            "fechter-demo-{}-{:x}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
                & 0xffff_ffff
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        self.dir = Some(dir.clone());
        let key = dir.join("cluster.key");
        crate::files::keyfile::generate_key_file(&key).map_err(|e| e.to_string())?;

        step(&format!(
            "building the lab: {n} machines and a client on a virtual switch ... "
        ));
        let lab = Lab::new(n).map_err(|e| e.to_string())?;
        println!("done ({})", human(t0.elapsed()));
        let p = lab.prefix().to_owned();
        println!(
            "  machines n0..n{} in namespaces {p}-n0..{p}-n{} (198.18.0.10..{}), client {p}-c (198.18.0.100)",
            n - 1,
            n - 1,
            10 + n - 1
        );
        self.lab = Some(lab);

        // The agents: n0 first, the others attach to it.
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
        let t = Instant::now();
        step(&format!("starting {n} agents ({}) ... ", exe.display()));
        let launcher = AgentLauncher::new(&exe, &key, &dir);
        for node in 0..n {
            let attach = if node > 0 {
                vec![self.lab().node_ipv4(0)]
            } else {
                Vec::new()
            };
            let agent = launcher.start(self.lab(), node, &attach, &[])?;
            self.agents.push(agent);
            let socket = self.agents[node].socket.clone();
            wait_for(
                &format!("agent n{node} to answer on {}", socket.display()),
                Duration::from_secs(10),
                Duration::from_millis(20),
                || status(&socket).ok(),
            )?;
        }
        self.wait_all_alive(Duration::from_secs(15))?;
        println!("all joined ({})", human(t.elapsed()));

        // Addresses, then `up` everywhere.
        for spec in ADDRESSES {
            self.call(
                0,
                Request::AddAddress {
                    spec: spec.parse().map_err(|e| format!("{spec}: {e}"))?,
                },
            )?;
        }
        for node in 0..n {
            self.call(node, Request::Up)?;
        }
        let t = Instant::now();
        println!(
            "$ fechter add-address {}; fechter add-address {}; fechter up (on every machine)",
            ADDRESSES[0], ADDRESSES[1]
        );
        step("waiting for both addresses to be placed (a new machine proves itself for 2 s) ... ");
        let holders =
            self.wait_placed(&(0..n).collect::<Vec<_>>(), None, Duration::from_secs(20))?;
        println!("done ({})", human(t.elapsed()));
        println!();
        println!("$ fechter status");
        print!("{}", indent(&status(&self.agents[0].socket)?.render()));
        println!();

        // The client pings the first address; then its machine dies.
        let victim = holders[0];
        let vip = ip_of(ADDRESSES[0]);
        let client = self.lab().client_ns();
        let pinger = Pinger::start(self.lab(), &client, vip, &PING)
            .map_err(|e| format!("cannot start ping in the client: {e}"))?;
        self.pinger = Some(pinger);
        wait_for(
            &format!("the client's first answers from {vip}"),
            Duration::from_secs(5),
            Duration::from_millis(10),
            || (self.pinger.as_ref()?.count() >= 20).then_some(()),
        )?;
        let mac_before = self
            .lab()
            .neighbour_mac(&client, vip)
            .map_err(|e| e.to_string())?;
        println!(
            "the client (198.18.0.100) pings {vip} every 10 ms; it answers from n{victim} ({})",
            self.mac(victim)?
        );
        step(&format!(
            "killing machine n{victim}: its agent gets SIGKILL and its link goes down ... "
        ));
        self.agents[victim].kill();
        self.lab()
            .set_link(victim, false)
            .map_err(|e| e.to_string())?;
        let killed_at = lab::unix_now();
        println!("done");

        let back = wait_for(
            &format!("{vip} to answer again"),
            Duration::from_secs(10),
            Duration::from_millis(5),
            || self.pinger.as_ref()?.report().answer_after(killed_at),
        )?;
        let survivors: Vec<usize> = (0..n).filter(|&k| k != victim).collect();
        let new_holders = self.wait_placed(&survivors, Some(victim), Duration::from_secs(10))?;
        let new_holder = new_holders[0];
        let new_mac = self.lab().mac_of(new_holder).map_err(|e| e.to_string())?;
        let mac_after = wait_for(
            "the client's neighbour entry to change",
            Duration::from_secs(3),
            Duration::from_millis(10),
            || {
                let m = self.lab().neighbour_mac(&client, vip).ok()??;
                (m == new_mac).then_some(m)
            },
        )?;
        // Let the pinger see a little more, then stop it.
        let seen_until = Instant::now() + Duration::from_millis(200);
        wait_for(
            "the pinger",
            Duration::from_secs(1),
            Duration::from_millis(20),
            || (Instant::now() >= seen_until).then_some(()),
        )?;
        // The pinger is killed as it is dropped, after its report.
        let outage = self
            .pinger
            .take()
            .map_or(Duration::ZERO, |p| p.report().longest_gap());
        println!(
            "{vip} answers again, now from n{new_holder}: first answer {} after the kill",
            human(back)
        );
        println!(
            "  client-observed outage: {} (longest gap between answers, pinging every 10 ms)",
            human(outage)
        );
        println!(
            "  client's neighbour entry for {vip}: {} -> {} (n{new_holder})",
            mac_before.map_or_else(|| "none".into(), lab::format_mac),
            lab::format_mac(mac_after),
        );
        if new_holders[1] == holders[1] {
            println!(
                "  {} stayed on n{} throughout",
                ip_of(ADDRESSES[1]),
                holders[1]
            );
        } else {
            println!(
                "  {} moved from n{} to n{}",
                ip_of(ADDRESSES[1]),
                holders[1],
                new_holders[1]
            );
        }
        // The survivors declare n{victim} dead and agree on a leader.
        let _ = wait_for(
            &format!("the survivors to declare n{victim} dead"),
            Duration::from_secs(5),
            Duration::from_millis(20),
            || {
                survivors
                    .iter()
                    .all(|&k| {
                        status(&self.agents[k].socket).is_ok_and(|r| {
                            let dead = r
                                .members
                                .iter()
                                .any(|m| m.id == format!("n{victim}") && m.liveness == "dead");
                            dead && r.leader.is_some_and(|l| l != format!("n{victim}"))
                        })
                    })
                    .then_some(())
            },
        );
        check_interrupted()?;
        println!();
        println!("$ fechter status   (on n{new_holder})");
        print!(
            "{}",
            indent(&status(&self.agents[new_holder].socket)?.render())
        );
        println!();
        println!("total {}", human(t0.elapsed()));
        Ok(())
    }

    fn mac(&self, node: usize) -> Result<String, String> {
        let m = self.lab().mac_of(node).map_err(|e| e.to_string())?;
        Ok(lab::format_mac(m))
    }

    fn call(&self, node: usize, req: Request) -> Result<(), String> {
        match control::call(&self.agents[node].socket, &req).map_err(|e| e.to_string())? {
            Response::Ok { .. } => Ok(()),
            Response::Error { error } => Err(format!("n{node}: {error}")),
        }
    }

    fn wait_all_alive(&self, limit: Duration) -> Result<(), String> {
        let n = self.nodes;
        wait_for(
            "every agent to see all the others alive",
            limit,
            Duration::from_millis(50),
            || {
                self.agents
                    .iter()
                    .all(|a| {
                        status(&a.socket).is_ok_and(|r| {
                            r.members.iter().filter(|m| m.liveness == "alive").count() == n
                        })
                    })
                    .then_some(())
            },
        )
    }

    /// Waits until every node of `among` places every address on the same
    /// node (not `dead`), and that node's interface carries it; returns the
    /// holders in the order of [`ADDRESSES`].
    fn wait_placed(
        &self,
        among: &[usize],
        dead: Option<usize>,
        limit: Duration,
    ) -> Result<Vec<usize>, String> {
        wait_for(
            "the addresses to be placed",
            limit,
            Duration::from_millis(20),
            || {
                let reports: Vec<StatusReport> = among
                    .iter()
                    .map(|&k| status(&self.agents[k].socket).ok())
                    .collect::<Option<_>>()?;
                ADDRESSES
                    .iter()
                    .map(|spec| {
                        let ip = ip_of(spec);
                        let holder_in = |r: &StatusReport| {
                            r.addresses
                                .iter()
                                .find(|a| a.spec == *spec)
                                .and_then(|a| a.holder.as_deref())
                                .and_then(|h| h.strip_prefix('n'))
                                .and_then(|k| k.parse::<usize>().ok())
                        };
                        let h = holder_in(&reports[0])?;
                        let agree = reports.iter().all(|r| holder_in(r) == Some(h));
                        let carries = self.lab().carries(h, ip).unwrap_or(false);
                        (agree && Some(h) != dead && carries).then_some(h)
                    })
                    .collect()
            },
        )
    }

    /// The end of every agent's log (after an error).
    fn print_logs(&self) {
        for a in &self.agents {
            let tail = a.log_lines(8);
            if !tail.is_empty() {
                println!("last lines of agent n{}'s log:", a.node);
                for l in tail {
                    println!("  {l}");
                }
            }
        }
    }

    /// Stops the pinger and the agents, removes the lab and the files.
    /// Idempotent.
    fn cleanup(&mut self) {
        let had_something = self.lab.is_some() || !self.agents.is_empty() || self.dir.is_some();
        drop(self.pinger.take());
        let agents = self.agents.len();
        for a in &mut self.agents {
            a.kill();
        }
        self.agents.clear();
        let lab = self.lab.take();
        let prefix = lab.as_ref().map(|l| l.prefix().to_owned());
        drop(lab);
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        if had_something {
            let mut done = Vec::new();
            if agents > 0 {
                done.push(format!("{agents} agents stopped"));
            }
            if let Some(p) = prefix {
                let left: Vec<String> = lab::netns_list()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|ns| ns.starts_with(&p))
                    .collect();
                if left.is_empty() {
                    done.push(format!("namespaces {p}-* removed"));
                } else {
                    done.push(format!(
                        "could not remove namespaces {left:?} (remove them with `ip netns del NAME`)"
                    ));
                }
            }
            done.push("files removed".into());
            let msg = format!("cleaned up: {}", done.join(", "));
            println!("{msg}");
        }
    }
}

/// An agent's status over its control socket.
fn status(socket: &Path) -> Result<StatusReport, String> {
    match control::call(socket, &Request::Status).map_err(|e| e.to_string())? {
        Response::Ok { body } => serde_json::from_value(body).map_err(|e| e.to_string()),
        Response::Error { error } => Err(error),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}
