//! Deterministic simulation of whole agents on turmoil's simulated network.
//!
//! Every host runs the real agent loop ([`fechter::agent::run`]) over a
//! turmoil UDP socket, with the simulation's clock, its own data directory
//! and a control channel the test talks to. Time is virtual: every wait is
//! a bounded number of simulation steps, and every assertion reads `status`
//! as an operator would.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use fechter::agent::clock::WallClock;
use fechter::agent::net::{Datagram, queued};
use fechter::agent::platform::RecordingPlatform;
use fechter::agent::{ControlCall, Settings, run};
use fechter::control::{Request, Response, StatusReport};
use fechter_core::AddrSpec;
use tokio::sync::{mpsc, oneshot};

const PORT: u16 = 4573;
const SEEDS: [u64; 3] = [1, 2, 3];
const KEY: [u8; 32] = [7; 32];
const WRONG_KEY: [u8; 32] = [8; 32];
/// The least real time a request may take to be answered (commands wait
/// for the agent's writer thread, which runs in real time).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// turmoil's UDP socket as the agent's [`Datagram`]. Bound to the wildcard
/// address (turmoil binds nothing else); reports the host's own address,
/// which is the agent's identity.
struct SimSocket {
    inner: turmoil::net::UdpSocket,
    local: SocketAddr,
}

impl Datagram for SimSocket {
    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.inner.send_to(buf, to).await
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> Option<io::Result<(usize, SocketAddr)>> {
        queued(self.inner.try_recv_from(buf))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The simulation's wall clock: its epoch plus virtual time elapsed. Keeps
/// growing across crashes and restarts of a host.
struct SimClock;

impl WallClock for SimClock {
    fn wall_ms(&self) -> u64 {
        turmoil::since_epoch()
            .expect("called inside the simulation")
            .as_millis() as u64
    }
}

/// The control channel of a host's current run (replaced on every start).
type Slot = Rc<RefCell<Option<mpsc::Sender<ControlCall>>>>;

struct Node {
    name: &'static str,
    slot: Slot,
    data_dir: PathBuf,
    /// The machine of the host's current run.
    machine: Rc<RefCell<Option<RecordingPlatform>>>,
}

struct Cluster {
    sim: turmoil::Sim<'static>,
    nodes: Vec<Node>,
    dirs: tempfile::TempDir,
    seed: u64,
}

impl Cluster {
    /// Hosts `names` with `KEY`, each attaching to every other one.
    fn new(seed: u64, names: &[&'static str]) -> Cluster {
        Cluster::with(seed, names, |_, _| {})
    }

    /// [`Cluster::new`], with each host's settings changed by `tweak`.
    fn with(seed: u64, names: &[&'static str], tweak: fn(&str, &mut Settings)) -> Cluster {
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            // The epoch varies with the seed too: incarnations (and so the
            // engines' RNG seeds) derive from the wall clock.
            .epoch(UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seed * 86_400))
            .simulation_duration(Duration::from_secs(3600))
            .min_message_latency(Duration::from_micros(100))
            .max_message_latency(Duration::from_millis(5))
            .build();
        let dirs = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for &name in names {
            let seeds: Vec<&'static str> = names.iter().copied().filter(|n| *n != name).collect();
            nodes.push(add_host_with(&mut sim, &dirs, name, seeds, KEY, tweak));
        }
        Cluster {
            sim,
            nodes,
            dirs,
            seed,
        }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    fn step(&mut self) {
        self.sim.step().expect("simulation step");
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.sim.elapsed() + d;
        while self.sim.elapsed() < end {
            self.step();
        }
    }

    /// Sends a control request and steps until it is answered (bounded).
    fn call(&mut self, name: &str, req: Request) -> Response {
        // A host installs its control channel when its agent first runs.
        let mut tx = self.node(name).slot.borrow().clone();
        for _ in 0..100 {
            if tx.is_some() {
                break;
            }
            self.step();
            tx = self.node(name).slot.borrow().clone();
        }
        let tx = tx.unwrap_or_else(|| panic!("{name} is not running"));
        let (reply, mut answer) = oneshot::channel();
        tx.try_send((req, reply))
            .unwrap_or_else(|e| panic!("{name}: control channel: {e}"));
        // A command is answered once its state file is written, by the
        // agent's writer thread, in real time: bounded in steps and in real
        // time, whichever is longer.
        let real = std::time::Instant::now();
        for step in 0.. {
            self.step();
            match answer.try_recv() {
                Ok(r) => return r,
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => panic!("{name} dropped the request"),
            }
            if step >= 1000 && real.elapsed() > ANSWER_WITHIN {
                break;
            }
        }
        panic!("{name} did not answer within 1000 steps and {ANSWER_WITHIN:?}")
    }

    fn ok(&mut self, name: &str, req: Request) {
        match self.call(name, req.clone()) {
            Response::Ok { .. } => {}
            Response::Error { error } => panic!("{name}: {req:?} refused: {error}"),
        }
    }

    fn status(&mut self, name: &str) -> StatusReport {
        match self.call(name, Request::Status) {
            Response::Ok { body } => serde_json::from_value(body).expect("a status report"),
            Response::Error { error } => panic!("{name}: status refused: {error}"),
        }
    }

    /// Polls every 10 ms of virtual time until `cond` holds; panics with
    /// `what` and the last statuses after `limit`. Returns the time taken.
    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&mut Cluster) -> bool,
    ) -> Duration {
        let start = self.sim.elapsed();
        loop {
            if cond(self) {
                return self.sim.elapsed() - start;
            }
            if self.sim.elapsed() - start > limit {
                let names: Vec<&'static str> = self
                    .nodes
                    .iter()
                    .filter(|n| n.slot.borrow().is_some())
                    .map(|n| n.name)
                    .collect();
                let statuses: Vec<String> = names
                    .into_iter()
                    .map(|n| format!("{n}: {:?}", self.status(n)))
                    .collect();
                panic!(
                    "seed {}: {what}: not within {limit:?}\n{}",
                    self.seed,
                    statuses.join("\n")
                );
            }
            self.run_for(Duration::from_millis(10));
        }
    }

    fn crash(&mut self, name: &str) {
        self.sim.crash(name);
        *self.node(name).slot.borrow_mut() = None;
    }

    /// Starts a crashed host again (same data directory).
    fn restart(&mut self, name: &str) {
        self.sim.bounce(name);
    }
}

fn add_host(
    sim: &mut turmoil::Sim<'static>,
    dirs: &tempfile::TempDir,
    name: &'static str,
    seeds: Vec<&'static str>,
    key: [u8; 32],
) -> Node {
    add_host_with(sim, dirs, name, seeds, key, |_, _| {})
}

fn add_host_with(
    sim: &mut turmoil::Sim<'static>,
    dirs: &tempfile::TempDir,
    name: &'static str,
    seeds: Vec<&'static str>,
    key: [u8; 32],
    tweak: fn(&str, &mut Settings),
) -> Node {
    let slot: Slot = Rc::default();
    let machine: Rc<RefCell<Option<RecordingPlatform>>> = Rc::default();
    let data_dir = dirs.path().join(name);
    let (host_slot, host_dir, host_machine) = (slot.clone(), data_dir.clone(), machine.clone());
    sim.host(name, move || {
        let (slot, data_dir, seeds) = (host_slot.clone(), host_dir.clone(), seeds.clone());
        // A fresh machine on every start: nothing installed.
        let platform = RecordingPlatform::new();
        *host_machine.borrow_mut() = Some(platform.clone());
        async move {
            let inner = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?;
            let local = SocketAddr::new(turmoil::lookup(name), PORT);
            let seeds = seeds
                .iter()
                .map(|s| SocketAddr::new(turmoil::lookup(*s), PORT))
                .collect();
            let (tx, rx) = mpsc::channel(4);
            *slot.borrow_mut() = Some(tx);
            let mut settings =
                Settings::new(name.parse().expect("a node id"), seeds, data_dir, key);
            tweak(name, &mut settings);
            run(
                settings,
                SimSocket { inner, local },
                SimClock,
                platform,
                rx,
                std::future::pending(),
            )
            .await?;
            Ok(())
        }
    });
    Node {
        name,
        slot,
        data_dir,
        machine,
    }
}

fn spec(s: &str) -> AddrSpec {
    s.parse().expect("an address spec")
}

fn liveness(st: &StatusReport) -> BTreeMap<String, String> {
    st.members
        .iter()
        .map(|m| (m.id.clone(), m.liveness.clone()))
        .collect()
}

/// Whether `st` lists exactly `alive` as alive and `dead` as dead.
fn sees(st: &StatusReport, alive: &[&str], dead: &[&str]) -> bool {
    let l = liveness(st);
    alive
        .iter()
        .all(|n| l.get(*n).is_some_and(|v| v == "alive"))
        && dead.iter().all(|n| l.get(*n).is_some_and(|v| v == "dead"))
}

fn addresses(st: &StatusReport) -> Vec<String> {
    let mut a: Vec<String> = st.addresses.iter().map(|a| a.spec.clone()).collect();
    a.sort();
    a
}

fn all_see(c: &mut Cluster, who: &[&str], alive: &[&str], dead: &[&str]) -> bool {
    who.iter().all(|n| {
        let st = c.status(n);
        sees(&st, alive, dead)
    })
}

fn all_list(c: &mut Cluster, who: &[&str], addrs: &[&str]) -> bool {
    let mut want: Vec<String> = addrs.iter().map(|s| spec(s).to_string()).collect();
    want.sort();
    who.iter().all(|n| addresses(&c.status(n)) == want)
}

const ALL: [&str; 3] = ["n0", "n1", "n2"];

fn formed(seed: u64) -> Cluster {
    let mut c = Cluster::new(seed, &ALL);
    let took = c.wait_for(
        "3 nodes see each other alive",
        Duration::from_secs(10),
        |c| all_see(c, &ALL, &ALL, &[]),
    );
    eprintln!("seed {seed}: formed in {took:?} (virtual)");
    c
}

#[test]
fn three_nodes_form_a_cluster_and_an_address_reaches_all() {
    for seed in SEEDS {
        let mut c = formed(seed);
        for n in ALL {
            let st = c.status(n);
            assert_eq!(st.node, n);
            assert_eq!(st.members.len(), 3, "seed {seed}: {st:?}");
            assert!(st.addresses.is_empty(), "seed {seed}: {st:?}");
        }
        c.ok(
            "n1",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.10/24"),
            },
        );
        // Acknowledged means on n1's disk already.
        let saved = std::fs::read_to_string(c.node("n1").data_dir.join("state.json")).unwrap();
        assert!(saved.contains("198.51.100.10"), "{saved}");
        c.wait_for(
            "every node lists the address",
            Duration::from_secs(3),
            |c| all_list(c, &ALL, &["eth0:198.51.100.10/24"]),
        );
        // And it stays listed, with nobody declared dead.
        c.run_for(Duration::from_secs(5));
        assert!(
            all_see(&mut c, &ALL, &ALL, &[]),
            "seed {seed}: a false death"
        );
        assert!(all_list(&mut c, &ALL, &["eth0:198.51.100.10/24"]));
    }
}

#[test]
fn a_crashed_host_is_reported_dead_by_the_others() {
    for seed in SEEDS {
        let mut c = formed(seed);
        c.run_for(Duration::from_secs(1));
        c.crash("n2");
        let took = c.wait_for("n0 and n1 report n2 dead", Duration::from_secs(5), |c| {
            all_see(c, &["n0", "n1"], &["n0", "n1"], &["n2"])
        });
        eprintln!("seed {seed}: crash detected by both survivors in {took:?} (virtual)");
        assert!(took < Duration::from_secs(3), "seed {seed}: took {took:?}");
        // The survivors keep each other.
        c.run_for(Duration::from_secs(3));
        assert!(all_see(&mut c, &["n0", "n1"], &["n0", "n1"], &["n2"]));
    }
}

#[test]
fn a_partition_is_seen_by_both_sides_and_the_address_lists_merge_after_repair() {
    for seed in SEEDS {
        let mut c = formed(seed);
        c.sim.partition("n2", "n0");
        c.sim.partition("n2", "n1");
        c.wait_for("both sides see the split", Duration::from_secs(5), |c| {
            all_see(c, &["n0", "n1"], &["n0", "n1"], &["n2"])
                && all_see(c, &["n2"], &["n2"], &["n0", "n1"])
        });
        c.ok(
            "n0",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.1/24"),
            },
        );
        c.ok(
            "n2",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.2/24"),
            },
        );
        c.run_for(Duration::from_secs(2));
        assert!(all_list(&mut c, &["n0", "n1"], &["eth0:198.51.100.1/24"]));
        assert!(all_list(&mut c, &["n2"], &["eth0:198.51.100.2/24"]));
        c.sim.repair("n2", "n0");
        c.sim.repair("n2", "n1");
        let took = c.wait_for(
            "after repair all are alive and hold both addresses",
            Duration::from_secs(15),
            |c| {
                all_see(c, &ALL, &ALL, &[])
                    && all_list(c, &ALL, &["eth0:198.51.100.1/24", "eth0:198.51.100.2/24"])
            },
        );
        eprintln!("seed {seed}: healed in {took:?} (virtual)");
    }
}

#[test]
fn a_restarted_host_keeps_its_state_and_catches_up() {
    for seed in SEEDS {
        let mut c = formed(seed);
        c.ok(
            "n0",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.1/24"),
            },
        );
        c.wait_for(
            "the first address reaches all",
            Duration::from_secs(3),
            |c| all_list(c, &ALL, &["eth0:198.51.100.1/24"]),
        );
        // n2 got it from the cluster: give its delayed write time to happen.
        c.run_for(Duration::from_secs(1));
        c.crash("n2");
        c.wait_for("n2 seen dead", Duration::from_secs(5), |c| {
            all_see(c, &["n0", "n1"], &["n0", "n1"], &["n2"])
        });
        c.ok(
            "n1",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.2/24"),
            },
        );
        // n2 comes back cut off: what it lists is what it kept on disk.
        c.sim.partition("n2", "n0");
        c.sim.partition("n2", "n1");
        c.restart("n2");
        c.run_for(Duration::from_secs(1));
        let st = c.status("n2");
        assert_eq!(
            addresses(&st),
            vec![spec("eth0:198.51.100.1/24").to_string()],
            "seed {seed}: n2 lost its state: {st:?}"
        );
        // It knows only itself from disk (no peer is alive to it).
        assert_eq!(
            liveness(&st),
            BTreeMap::from([("n2".to_string(), "alive".to_string())]),
            "seed {seed}: {st:?}"
        );
        c.sim.repair("n2", "n0");
        c.sim.repair("n2", "n1");
        let took = c.wait_for(
            "n2 rejoins and gets the address added while it was away",
            Duration::from_secs(10),
            |c| {
                all_see(c, &ALL, &ALL, &[])
                    && all_list(c, &ALL, &["eth0:198.51.100.1/24", "eth0:198.51.100.2/24"])
            },
        );
        eprintln!("seed {seed}: n2 rejoined in {took:?} (virtual)");
    }
}

#[test]
fn a_node_with_the_wrong_key_is_never_admitted() {
    for seed in SEEDS {
        let mut c = Cluster::new(seed, &ALL);
        let intruder = add_host(&mut c.sim, &c.dirs, "intruder", ALL.to_vec(), WRONG_KEY);
        c.nodes.push(intruder);
        c.wait_for("the 3 good nodes form", Duration::from_secs(10), |c| {
            all_see(c, &ALL, &ALL, &[])
        });
        c.ok(
            "n0",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.1/24"),
            },
        );
        // Watch for a while: the intruder never shows up alive anywhere,
        // and sees nobody.
        let end = c.sim.elapsed() + Duration::from_secs(10);
        while c.sim.elapsed() < end {
            for n in ALL {
                let st = c.status(n);
                assert!(
                    !liveness(&st).contains_key("intruder"),
                    "seed {seed}: {n} knows the intruder: {st:?}"
                );
            }
            let st = c.status("intruder");
            assert_eq!(
                st.members.len(),
                1,
                "seed {seed}: the intruder knows others: {st:?}"
            );
            assert!(st.addresses.is_empty(), "seed {seed}: {st:?}");
            c.run_for(Duration::from_millis(500));
        }
        // The good nodes counted its packets as failing authentication.
        for n in ALL {
            let st = c.status(n);
            let bad = st
                .dropped
                .iter()
                .find(|(k, _)| k.replace('_', "-") == "bad-seal")
                .map_or(0, |(_, v)| *v);
            assert!(bad > 0, "seed {seed}: {n} counted no bad seal: {st:?}");
        }
    }
}

/// The same seed replays the same run: membership events and timing seen
/// through `status` are identical.
#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut c = Cluster::new(seed, &ALL);
        let mut trace = Vec::new();
        for _ in 0..40 {
            c.run_for(Duration::from_millis(50));
            let views: Vec<String> = ALL
                .iter()
                .map(|n| format!("{:?}", liveness(&c.status(n))))
                .collect();
            trace.push(format!("{:?} {}", c.sim.elapsed(), views.join(" ")));
        }
        trace
    };
    assert_eq!(run(5), run(5));
}

/// Every timer of the agent runs on tokio's clock (virtual here). Before
/// dc8bbd9 the delayed write of cluster changes was scheduled on
/// `std::time::Instant`: under turmoil's paused clock the loop then spun on
/// an expired sleep until the *real* clock reached the deadline, with
/// virtual time standing still, so the write landed in the same virtual
/// millisecond as the change and runs depended on the host's speed. (The
/// write itself is done by the writer thread, in real time: the test only
/// bounds when it may land at the earliest.)
#[test]
fn cluster_changes_are_written_after_the_persist_delay_of_virtual_time() {
    for seed in SEEDS {
        let mut c = formed(seed);
        // Let virtual time run well ahead of real time.
        c.run_for(Duration::from_secs(5));
        // From the request on: n0 makes the change on its next step (its
        // answer then waits for its own write, while virtual time runs on).
        let start = c.sim.elapsed();
        c.ok(
            "n0",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.1/24"),
            },
        );
        let file = c.node("n2").data_dir.join("state.json");
        let has_it = || {
            std::fs::read_to_string(&file)
                .unwrap()
                .contains("198.51.100.1")
        };
        let written = loop {
            let took = c.sim.elapsed() - start;
            if has_it() {
                break took;
            }
            if took >= Duration::from_secs(2) {
                // The agent queued the write long ago (in virtual time);
                // its writer thread runs in real time, off the loop.
                let real = std::time::Instant::now();
                while !has_it() {
                    assert!(
                        real.elapsed() < Duration::from_secs(10),
                        "seed {seed}: never written"
                    );
                    std::thread::yield_now();
                }
                break took;
            }
            c.step();
        };
        // PERSIST_DELAY is 100 ms: the write is batched, not immediate.
        assert!(
            written >= Duration::from_millis(50),
            "seed {seed}: n2 wrote the change {written:?} (virtual) after it was made"
        );
    }
}

/// The disk fails under a running agent (here its data directory vanishes):
/// a command is made and answered with the error, the agent keeps running
/// and serving, and once the disk is back the writer's retry saves it with
/// no new command.
#[test]
fn a_failing_disk_is_reported_and_retried_never_fatal() {
    let mut c = formed(SEEDS[0]);
    let dir = c.node("n0").data_dir.clone();
    let away = dir.with_extension("away");
    std::fs::rename(&dir, &away).unwrap();
    let add = Request::AddAddress {
        spec: spec("eth0:198.51.100.7/24"),
    };
    let answer = concurrently(&mut c, &[("n0", add)]);
    match &answer[0] {
        Response::Error { error } => assert!(error.contains("could not be saved yet"), "{error}"),
        r => panic!("answered {r:?} without its state on disk"),
    }
    // Still running, and the change was made.
    let st = c.status("n0");
    assert!(
        st.addresses.iter().any(|a| a.spec.contains("198.51.100.7")),
        "{st:?}"
    );
    std::fs::rename(&away, &dir).unwrap();
    let file = dir.join("state.json");
    let real = std::time::Instant::now();
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("198.51.100.7")) {
        assert!(
            real.elapsed() < Duration::from_secs(10),
            "never saved after the disk came back"
        );
        c.step();
    }
}

/// Sends every request at the same virtual instant, then steps until all are
/// answered (bounded).
fn concurrently(c: &mut Cluster, reqs: &[(&str, Request)]) -> Vec<Response> {
    let mut answers = Vec::new();
    for (name, req) in reqs {
        let tx = c.node(name).slot.borrow().clone().expect("running");
        let (reply, answer) = oneshot::channel();
        tx.try_send((req.clone(), reply)).expect("control channel");
        answers.push(answer);
    }
    let mut out: Vec<Option<Response>> = vec![None; answers.len()];
    let real = std::time::Instant::now();
    for step in 0.. {
        c.step();
        for (i, a) in answers.iter_mut().enumerate() {
            if out[i].is_none()
                && let Ok(r) = a.try_recv()
            {
                out[i] = Some(r);
            }
        }
        if out.iter().all(Option::is_some) {
            return out.into_iter().flatten().collect();
        }
        if step >= 1000 && real.elapsed() > ANSWER_WITHIN {
            break;
        }
    }
    panic!("requests not answered within 1000 steps")
}

#[test]
fn five_and_ten_nodes_converge_and_agree_on_concurrent_changes() {
    for (n, seed) in [(5usize, 11u64), (10, 12)] {
        let names: Vec<&'static str> = (0..n)
            .map(|i| &*Box::leak(format!("n{i}").into_boxed_str()))
            .collect();
        let mut c = Cluster::new(seed, &names);
        let took = c.wait_for("all see all alive", Duration::from_secs(15), |c| {
            all_see(c, &names, &names, &[])
        });
        eprintln!("{n} nodes formed in {took:?} (virtual)");
        c.ok(
            "n0",
            Request::AddAddress {
                spec: spec("eth0:198.51.100.10/24"),
            },
        );
        c.wait_for(
            "the first address everywhere",
            Duration::from_secs(5),
            |c| all_list(c, &names, &["eth0:198.51.100.10/24"]),
        );
        // At one instant: one node removes it, two others add new ones.
        let answers = concurrently(
            &mut c,
            &[
                (
                    "n1",
                    Request::RemoveAddress {
                        spec: spec("eth0:198.51.100.10/24"),
                    },
                ),
                (
                    "n2",
                    Request::AddAddress {
                        spec: spec("eth0:198.51.100.11/24"),
                    },
                ),
                (
                    "n3",
                    Request::AddAddress {
                        spec: spec("eth0:198.51.100.12/24"),
                    },
                ),
            ],
        );
        assert!(
            answers.iter().all(|a| matches!(a, Response::Ok { .. })),
            "{answers:?}"
        );
        c.wait_for("every node agrees", Duration::from_secs(5), |c| {
            all_list(
                c,
                &names,
                &["eth0:198.51.100.11/24", "eth0:198.51.100.12/24"],
            )
        });
    }
}

/// (More than a datagram holds, through the real agent loop; 10,000
/// addresses are synced in the engine simulation, crates/cluster/tests/sim.rs.)
#[test]
fn a_late_joiner_receives_every_address() {
    let mut c = formed(21);
    let all: Vec<String> = (0..400u32)
        .map(|i| {
            let ip =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + i);
            format!("eth0:{ip}/15")
        })
        .collect();
    for s in &all {
        c.ok("n0", Request::AddAddress { spec: spec(s) });
    }
    let node = add_host(&mut c.sim, &c.dirs, "late", vec!["n1"], KEY);
    c.nodes.push(node);
    let took = c.wait_for(
        "the late joiner has every address",
        Duration::from_secs(30),
        |c| c.status("late").addresses.len() == all.len(),
    );
    eprintln!(
        "{} addresses reached a late joiner in {took:?} (virtual)",
        all.len()
    );
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    assert!(all_list(&mut c, &["late", "n2"], &refs));
}

/// A holder renews the kernel lease of what it holds every renew period
/// (800 ms by default) without reading its interfaces back each time: an
/// idle agent re-reads them only every few seconds, so a thousand addresses
/// cost a thousand lease updates a period and not also a dump and a plan.
#[test]
fn an_idle_holder_renews_every_period_and_rarely_reads_its_interfaces_back() {
    let mut c = Cluster::new(5, &["n0"]);
    c.ok(
        "n0",
        Request::AddAddress {
            spec: spec("eth0:198.18.0.50/24"),
        },
    );
    c.ok("n0", Request::Up);
    let machine = c.node("n0").machine.borrow().clone().expect("running");
    c.wait_for("n0 holds the address", Duration::from_secs(10), |_| {
        !machine.addresses().is_empty()
    });
    c.run_for(Duration::from_secs(1));
    let counts = |m: &RecordingPlatform| {
        let s = m.state.lock().unwrap();
        let renewals = s
            .log
            .iter()
            .filter(|a| matches!(a, fechter_core::reconcile::Action::Renew(_)))
            .count();
        (renewals, s.observed)
    };
    let (r0, o0) = counts(&machine);
    c.run_for(Duration::from_secs(10));
    let (r1, o1) = counts(&machine);
    let (renewals, reads) = (r1 - r0, o1 - o0);
    eprintln!("10 s idle: {renewals} renewals, {reads} reads of the interfaces");
    let every = Settings::new(
        "n0".parse().unwrap(),
        Vec::new(),
        std::path::PathBuf::new(),
        [0; 32],
    )
    .renew_every;
    // One per period, plus one per resync (every 5 s: a reconcile renews
    // what it keeps) unless it falls on a period's tick.
    let periods = (10_000 / every.as_millis()) as usize;
    assert!(
        (periods..=periods + 3).contains(&renewals),
        "{renewals} renewals in 10 s, renewing every {every:?}"
    );
    assert!((1..=3).contains(&reads), "{reads} reads in 10 s");
}

/// After a partition heals, the node that took an address over announces
/// it again: its takeover's announcements reached only its own side, and
/// clients across the split may still point at the old holder's MAC.
#[test]
fn the_new_holder_announces_again_when_a_partition_heals() {
    let holds = |c: &Cluster, n: &str, s: &AddrSpec| {
        c.node(n)
            .machine
            .borrow()
            .as_ref()
            .is_some_and(|m| m.addresses().contains(s))
    };
    let announces = |c: &Cluster, n: &str, s: &AddrSpec| {
        c.node(n).machine.borrow().as_ref().map_or(0, |m| {
            m.log()
                .iter()
                .filter(|a| matches!(a, fechter_core::reconcile::Action::Announce(x) if x == s))
                .count()
        })
    };
    for seed in SEEDS {
        let mut c = formed(seed);
        let vip = spec("eth0:198.18.0.60/24");
        c.ok("n0", Request::AddAddress { spec: vip.clone() });
        for n in ALL {
            c.ok(n, Request::Up);
        }
        c.wait_for("one node holds the address", Duration::from_secs(10), |c| {
            ALL.iter().filter(|n| holds(c, n, &vip)).count() == 1
        });
        let old = *ALL.iter().find(|n| holds(&c, n, &vip)).unwrap();
        let others: Vec<&str> = ALL.iter().copied().filter(|n| *n != old).collect();
        for o in &others {
            c.sim.partition(old, *o);
        }
        c.wait_for(
            "the majority side took it over",
            Duration::from_secs(5),
            |c| !holds(c, old, &vip) && others.iter().any(|n| holds(c, n, &vip)),
        );
        let new = *others.iter().find(|n| holds(&c, n, &vip)).unwrap();
        // Long enough for the majority to declare the old holder dead, and
        // for the takeover's burst of announcements to end.
        c.run_for(Duration::from_secs(4));
        let before = announces(&c, new, &vip);
        for o in &others {
            c.sim.repair(old, *o);
        }
        c.wait_for(
            "everyone sees everyone again",
            Duration::from_secs(15),
            |c| all_see(c, &ALL, &ALL, &[]),
        );
        c.run_for(Duration::from_secs(1));
        let after = announces(&c, new, &vip);
        eprintln!(
            "seed {seed}: {old} -> {new}; {before} announcements before the heal, {after} after"
        );
        assert!(
            after > before,
            "seed {seed}: {new} did not announce again after the heal"
        );
        assert!(
            holds(&c, new, &vip) && !holds(&c, old, &vip),
            "seed {seed}: the address moved after the heal"
        );
    }
}

#[test]
fn forget_is_refused_for_a_live_node_and_removes_a_dead_one_from_every_status() {
    let mut c = formed(SEEDS[0]);
    let n1 = fechter_core::NodeId::new("n1");
    match c.call("n0", Request::Forget { node: n1 }) {
        Response::Error { error } => assert!(
            error.contains("n1 is alive") && error.contains("nothing changed"),
            "{error}"
        ),
        r => panic!("forgetting a live node: {r:?}"),
    }
    c.crash("n2");
    c.wait_for("n0 sees n2 dead", Duration::from_secs(5), |c| {
        all_see(c, &["n0"], &["n0", "n1"], &["n2"])
    });
    c.run_for(Duration::from_millis(200));
    let n2 = fechter_core::NodeId::new("n2");
    c.ok("n0", Request::Forget { node: n2 });
    c.wait_for("n2 is listed nowhere", Duration::from_secs(5), |c| {
        ["n0", "n1"]
            .iter()
            .all(|n| c.status(n).members.iter().all(|m| m.id != "n2"))
    });
    assert!(all_see(&mut c, &["n0", "n1"], &["n0", "n1"], &[]));
}

/// A machine that allows only some prefixes and interfaces
/// (`allowed_prefixes`, `allowed_interfaces`): it never installs nor
/// announces anything else, whatever the replicated list says (a stolen key
/// cannot plant the gateway's address there); the addresses of an interface
/// it may not use go to the others; one the table gives it but it may not
/// hold is named in its status.
#[test]
fn a_machine_never_holds_what_it_does_not_allow() {
    fn only_lower_half_on_eth0(name: &str, s: &mut Settings) {
        if name == "n0" {
            s.allowed = fechter_core::allowed::Allowed {
                prefixes: vec!["198.51.100.0/25".parse().unwrap()],
                interfaces: vec!["eth0".into()],
            };
        }
    }
    let inside: Vec<AddrSpec> = (1..=4)
        .map(|i| spec(&format!("eth0:198.51.100.{i}/24")))
        .collect();
    let outside: Vec<AddrSpec> = (1..=4)
        .map(|i| spec(&format!("eth0:198.51.100.{}/24", 200 + i)))
        .chain((1..=2).map(|i| spec(&format!("eth1:198.51.100.{}/24", 50 + i))))
        .collect();
    for seed in SEEDS {
        let mut c = Cluster::with(seed, &ALL, only_lower_half_on_eth0);
        c.wait_for("formed", Duration::from_secs(10), |c| {
            all_see(c, &ALL, &ALL, &[])
        });
        for s in inside.iter().chain(&outside) {
            c.ok("n1", Request::AddAddress { spec: s.clone() });
        }
        for n in ALL {
            c.ok(n, Request::Up);
        }
        let machine = |c: &Cluster, n: &str| c.node(n).machine.borrow().clone().expect("running");
        c.wait_for(
            "n0 serves a share of what it may hold",
            Duration::from_secs(15),
            |c| {
                inside
                    .iter()
                    .any(|s| machine(c, "n0").addresses().contains(s))
            },
        );
        c.run_for(Duration::from_secs(5));
        let log = machine(&c, "n0").log();
        for a in &log {
            assert!(
                !outside.contains(a.spec())
                    || matches!(a, fechter_core::reconcile::Action::Remove(_)),
                "seed {seed}: n0 did {a} though it may not hold it"
            );
        }
        // eth1 is not n0's: its addresses are placed on the others.
        for s in outside.iter().filter(|s| s.iface == "eth1") {
            assert!(
                ["n1", "n2"]
                    .iter()
                    .any(|n| machine(&c, n).addresses().contains(s)),
                "seed {seed}: {s} unserved"
            );
        }
        // What the table gives n0 outside its prefixes is unserved, and
        // said so.
        let st = c.status("n0");
        for a in st.addresses.iter().filter(|a| {
            a.holder.as_deref() == Some("n0") && outside.iter().any(|o| o.to_string() == a.spec)
        }) {
            assert!(
                st.notes
                    .iter()
                    .any(|n| n.contains(&a.spec) && n.contains("may not hold")),
                "seed {seed}: {st:?}"
            );
        }
    }
}

/// A second machine configured with n0's node id (and the cluster key)
/// sends heartbeats: n0 logs it, notes it in its history and names it in
/// its status; nothing moves.
#[test]
fn a_second_machine_with_the_same_node_id_is_named_in_status() {
    let mut c = formed(SEEDS[0]);
    let vip = spec("eth0:198.18.0.61/24");
    c.ok("n1", Request::AddAddress { spec: vip.clone() });
    for n in ALL {
        c.ok(n, Request::Up);
    }
    c.wait_for("the address is placed", Duration::from_secs(10), |c| {
        ALL.iter()
            .filter(|n| {
                c.node(n)
                    .machine
                    .borrow()
                    .as_ref()
                    .is_some_and(|m| m.addresses().contains(&vip))
            })
            .count()
            == 1
    });
    c.sim.client("imposter", async {
        let sock = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?;
        let me = fechter_core::NodeId::new("n0");
        let mut sealer = fechter_cluster::seal::Sealer::new(&KEY, &me, 1);
        let hb = fechter_core::wire::encode(&fechter_core::wire::Packet::Heartbeat {
            from: me,
            incarnation: 1,
        });
        for _ in 0..100 {
            let d = sealer.seal_with_os_rng(&hb).expect("sealed");
            sock.send_to(&d, (turmoil::lookup("n0"), PORT)).await?;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        Ok(())
    });
    c.wait_for("n0 names the imposter", Duration::from_secs(5), |c| {
        c.status("n0")
            .notes
            .iter()
            .any(|n| n.contains("runs with this node's id"))
    });
    let held: usize = ALL
        .iter()
        .map(|n| {
            c.node(n)
                .machine
                .borrow()
                .as_ref()
                .map_or(0, |m| usize::from(m.addresses().contains(&vip)))
        })
        .sum();
    assert_eq!(held, 1);
}
