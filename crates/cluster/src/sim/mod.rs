//! A deterministic, in-memory network of [`Node`]s for tests and
//! benchmarks: virtual time, seeded randomness, scripted partitions, crashes
//! and restarts (in the spirit of chitchat's simulator). No tokio, no sockets:
//! every run with the same seed is identical.
//!
//! Each node runs the agent's schedule (`drive.rs`): it wakes on its
//! heartbeat tick, hears what queued in its socket, settles what the wire
//! claims, runs its timers and sends its probes, then plans and executes
//! against its simulated interface (the recording platform) and sends what
//! its engine queued. `segment.rs` is the simulated segment.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use fechter_core::reconcile::Action;
use fechter_core::replica::Replica;
use fechter_core::wire::MAX_PACKET;
use fechter_core::{AddrSpec, NodeId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::engine::{Engine, EngineConfig, Event, Id, Now, Quorum, Timings};
use crate::node::{Node, NodeEvent};
use crate::wire_lock::WireLock;

mod drive;
mod segment;

/// One simulated datagram in flight.
#[derive(Debug, Clone)]
struct Flight {
    deliver_at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

/// An address in a hand-off: (address, holder, giver).
type Handing = (AddrSpec, NodeId, NodeId);

/// A simulated cluster.
pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    rng: StdRng,
    pub nodes: BTreeMap<NodeId, SimNode>,
    flights: Vec<Flight>,
    seq: u64,
    /// Pairs of addresses that cannot talk (both directions).
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    /// Pairs of nodes whose machines do not share a segment any more: no
    /// frame of one reaches the other, no probe is answered across.
    segment_cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes cut off from the rest of the segment's hosts (clients, the
    /// router): no background frames reach them.
    off_segment: BTreeSet<NodeId>,
    /// Whether other hosts on the segment (clients, a router) send frames
    /// that every attached node receives: its sign of life.
    pub background: bool,
    /// One-way latency of every datagram.
    pub latency: Duration,
    /// Probability (0..1) that a datagram is lost.
    pub loss: f64,
    pub timings: Timings,
    pub quorum: Quorum,
    /// Bytes sent per node, for bandwidth figures.
    pub sent_bytes: BTreeMap<NodeId, u64>,
    pub log: Vec<(Duration, NodeId, Event)>,
    /// Every other event of the nodes (acquired, released with their
    /// reasons, announced, conflicts), as the agent's history has them.
    pub history: Vec<(Duration, NodeId, NodeEvent)>,
    /// Every interface action executed, in order: the recording platform.
    pub actions: Vec<(Duration, NodeId, Action)>,
    /// Two-node witness: whether each node's gateway answers its probes
    /// (absent: it does).
    pub gateway_ok: BTreeMap<NodeId, bool>,
    /// The latest time each address was seen in a hand-off, anywhere (a
    /// published table or an allocation): (when, holder, giver).
    pub handoffs: BTreeMap<AddrSpec, (Duration, NodeId, NodeId)>,
    /// The hand-offs in each running node's allocation, as (address,
    /// holder, giver), so that [`Sim::handoffs`] is refreshed without
    /// walking every allocation on every step. `None`: to be read from the
    /// engine. Valid because an engine reports every change of its
    /// allocation with [`Event::AllocationChanged`], and only
    /// [`Sim::after_wake`] drains the nodes' events.
    handoff_view: BTreeMap<NodeId, Option<Vec<Handing>>>,
}

pub struct SimNode {
    pub addr: SocketAddr,
    /// The agent's node; `None` while crashed.
    pub node: Option<Node>,
    pub incarnation: u64,
    /// The simulated interfaces: addresses present on this machine. A crash
    /// takes the machine down with them.
    pub iface: BTreeSet<AddrSpec>,
    /// Datagrams queued in its socket, heard on its next tick.
    socket: Vec<(SocketAddr, Vec<u8>)>,
    /// The probes it sent on its last tick: answered by the next.
    probes: Vec<AddrSpec>,
    /// The node's process does not run until then (see [`Sim::stall`]).
    pub stalled_until: Option<Instant>,
    /// Frames received on its interface (whatever the firewall then drops).
    pub rx: u64,
    /// Its interface's MAC address (made up).
    pub mac: [u8; 6],
}

impl SimNode {
    /// When its process wakes next: its heartbeat tick (every other timer
    /// waits for a tick, as in the agent), not before a stall ends.
    fn wake_at(&self) -> Option<Instant> {
        let e = self.node.as_ref()?.engine();
        let t = e.poll_tick().or_else(|| e.poll_timeout())?;
        Some(self.stalled_until.map_or(t, |s| t.max(s)))
    }
}

/// The simulated address of node number `i`.
pub fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 10_000 + i as u16)
}

impl Sim {
    pub fn new(seed: u64, timings: Timings) -> Sim {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            rng: StdRng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            flights: Vec::new(),
            seq: 0,
            cut: BTreeSet::new(),
            segment_cut: BTreeSet::new(),
            off_segment: BTreeSet::new(),
            background: true,
            latency: Duration::from_micros(200),
            loss: 0.0,
            timings,
            quorum: Quorum::default(),
            sent_bytes: BTreeMap::new(),
            log: Vec::new(),
            history: Vec::new(),
            actions: Vec::new(),
            handoffs: BTreeMap::new(),
            handoff_view: BTreeMap::new(),
            gateway_ok: BTreeMap::new(),
        }
    }

    fn wall(&self) -> Now {
        Now {
            at: self.now,
            wall_ms: 1_700_000_000_000 + (self.now - self.start).as_millis() as u64,
        }
    }

    /// Adds and starts node `name` at `addr`, attaching to `seeds`.
    pub fn start(&mut self, name: &str, addr: SocketAddr, seeds: Vec<SocketAddr>) {
        self.start_with(name, addr, seeds, Replica::default());
    }

    /// Starts (or restarts) a node with a given persisted replica.
    pub fn start_with(
        &mut self,
        name: &str,
        addr: SocketAddr,
        seeds: Vec<SocketAddr>,
        replica: Replica,
    ) {
        let id = NodeId::new(name);
        let incarnation = self.nodes.get(&id).map_or(1, |n| n.incarnation + 1);
        let cfg = EngineConfig {
            me: Id {
                node: id.clone(),
                addr,
                incarnation,
                bump: 0,
            },
            seeds,
            timings: self.timings.clone(),
            max_packet: MAX_PACKET,
            quorum: self.quorum,
        };
        let seed = self.rng.random::<u64>();
        let engine = Engine::new(cfg, replica, seed, self.wall());
        let lock = WireLock::new(self.timings.probe_window, self.timings.heartbeat_interval);
        self.handoff_view.insert(id.clone(), None);
        let port = addr.port().to_be_bytes();
        self.nodes.insert(
            id.clone(),
            SimNode {
                addr,
                node: Some(Node::new(engine, BTreeSet::new(), lock)),
                incarnation,
                iface: BTreeSet::new(),
                socket: Vec::new(),
                probes: Vec::new(),
                stalled_until: None,
                rx: 0,
                mac: [2, 0, 0, 0, port[0], port[1]],
            },
        );
        self.after_wake(&id);
    }

    /// Starts `n` nodes `n0..n{n-1}`, each attaching to `n0`.
    pub fn cluster(seed: u64, n: usize, timings: Timings) -> Sim {
        let mut sim = Sim::new(seed, timings);
        for i in 0..n {
            sim.start(&format!("n{i}"), addr_of(i), vec![addr_of(0)]);
        }
        sim
    }

    /// A formed cluster of `n` nodes serving `addrs` addresses
    /// (`eth0:198.18.0.10/24` on), added on `n0`, every node up, settled
    /// (each address on exactly one machine) and calm for a second.
    pub fn serving(seed: u64, n: usize, addrs: u32, timings: Timings) -> Sim {
        let mut sim = Sim::cluster(seed, n, timings);
        sim.run_until_cond(Duration::from_secs(10), |s| {
            s.converged_membership() && s.converged_state()
        })
        .expect("formed");
        let now = sim.now();
        for i in 0..addrs {
            let spec: AddrSpec = format!("eth0:198.18.0.{}/24", 10 + i)
                .parse()
                .expect("valid");
            sim.engine_mut("n0").add_address(now, spec).expect("added");
        }
        for i in 0..n {
            let now = sim.now();
            sim.engine_mut(&format!("n{i}"))
                .update_own(now, |r| r.admin = fechter_core::replica::Admin::Up);
        }
        sim.run_until_cond(Duration::from_secs(10), |s| s.settled(addrs as usize))
            .expect("settled");
        sim.run_for(Duration::from_secs(1));
        sim
    }

    /// Whether exactly `n` addresses are placed, each on one machine.
    pub fn settled(&self, n: usize) -> bool {
        let h = self.holders();
        h.len() == n && h.values().all(|v| v.len() == 1)
    }

    /// Stops a node abruptly (no goodbye). Returns its last replica (what
    /// it would have persisted).
    pub fn crash(&mut self, name: &str) -> Option<Replica> {
        let n = self.nodes.get_mut(&NodeId::new(name))?;
        n.iface.clear();
        n.socket.clear();
        n.probes.clear();
        n.node.take().map(|x| x.engine().replica().clone())
    }

    pub fn engine(&self, name: &str) -> &Engine {
        self.node(name).engine()
    }

    pub fn engine_mut(&mut self, name: &str) -> &mut Engine {
        self.nodes
            .get_mut(&NodeId::new(name))
            .and_then(|n| n.node.as_mut())
            .expect("running")
            .engine_mut()
    }

    /// The running node `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes[&NodeId::new(name)]
            .node
            .as_ref()
            .expect("running")
    }

    /// The time as engines see it.
    pub fn now(&self) -> Now {
        self.wall()
    }

    /// Cuts every link between the two groups (both directions), the
    /// segment included: as a switch split in two, or a node detached from
    /// it. The segment's other hosts (clients, the router) stay with the
    /// larger group (`b` on a tie).
    pub fn partition(&mut self, a: &[&str], b: &[&str]) {
        self.cut_cluster(a, b);
        for x in a {
            for y in b {
                let (x, y) = (NodeId::new(*x), NodeId::new(*y));
                self.segment_cut.insert((x.clone(), y.clone()));
                self.segment_cut.insert((y, x));
            }
        }
        let smaller = if a.len() <= b.len() { a } else { b };
        self.off_segment
            .extend(smaller.iter().map(|n| NodeId::new(*n)));
    }

    /// Cuts only the cluster's datagrams between the two groups (a firewall
    /// dropping the cluster port): their frames still reach each other's
    /// interfaces and probes are still answered across.
    pub fn cut_cluster(&mut self, a: &[&str], b: &[&str]) {
        for x in a {
            for y in b {
                let (ax, ay) = (self.addr(x), self.addr(y));
                self.cut.insert((ax, ay));
                self.cut.insert((ay, ax));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.segment_cut.clear();
        self.off_segment.clear();
    }

    /// The processes of `names` stop running for `d` (CPU starvation,
    /// SIGSTOP, a paused virtual machine) while their machines stay up:
    /// datagrams sent to them wait in their sockets, and on waking they hear
    /// those before their timers fire, as on every tick.
    pub fn stall(&mut self, names: &[&str], d: Duration) {
        let until = self.now + d;
        for n in names {
            let node = self.nodes.get_mut(&NodeId::new(*n)).expect("exists");
            node.stalled_until = Some(until);
        }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.nodes[&NodeId::new(name)].addr
    }

    /// Runs the simulation until `deadline` of virtual time from now.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end, |_| false);
    }

    /// Runs until `done(self)` holds (checked after every step) or `limit`
    /// of virtual time passes. Returns the virtual time it took, or `None`.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let t0 = self.now;
        let end = self.now + limit;
        if done(self) {
            return Some(Duration::ZERO);
        }
        self.run_until(end, |s| done(s)).then(|| self.now - t0)
    }

    fn run_until(&mut self, end: Instant, mut done: impl FnMut(&Sim) -> bool) -> bool {
        // Whatever a test did to an engine between runs (a command) is acted
        // on first, as the agent acts on a control request.
        let names: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for name in &names {
            self.after_wake(name);
        }
        // Bounded: every step advances virtual time or wakes a node.
        for _ in 0..50_000_000u64 {
            let next_flight = self.flights.iter().map(|f| f.deliver_at).min();
            let next_wake = self.nodes.values().filter_map(SimNode::wake_at).min();
            let next = match (next_flight, next_wake) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => end,
            };
            if next > end {
                self.now = end;
                return false;
            }
            self.now = self.now.max(next);
            self.deliver();
            let due: Vec<NodeId> = self
                .nodes
                .iter()
                .filter(|(_, n)| n.wake_at().is_some_and(|t| t <= self.now))
                .map(|(k, _)| k.clone())
                .collect();
            for name in &due {
                self.tick(name);
                self.after_wake(name);
            }
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Moves the datagrams due now into their receivers' sockets, in send
    /// order: heard on the receiver's next tick.
    fn deliver(&mut self) {
        let now = self.now;
        let mut due: Vec<Flight> = self
            .flights
            .extract_if(.., |f| f.deliver_at <= now)
            .collect();
        due.sort_by_key(|f| f.seq);
        for f in due {
            self.frame_seen(f.from, f.to);
            if self.cut.contains(&(f.from, f.to)) {
                continue;
            }
            if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
                continue;
            }
            if let Some(n) = self
                .nodes
                .values_mut()
                .find(|n| n.addr == f.to && n.node.is_some())
            {
                n.socket.push((f.from, f.payload));
            }
        }
    }

    /// Whether every running node sees exactly the other running nodes alive.
    pub fn converged_membership(&self) -> bool {
        let running: BTreeSet<&NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.node.is_some())
            .map(|(k, _)| k)
            .collect();
        self.nodes.iter().all(|(name, n)| {
            let Some(x) = &n.node else { return true };
            let seen: BTreeSet<&NodeId> = x.engine().members().keys().collect();
            let mut expect = running.clone();
            expect.remove(name);
            seen == expect
        })
    }

    /// Whether every running node holds the same replica.
    pub fn converged_state(&self) -> bool {
        let mut digests = self
            .nodes
            .values()
            .filter_map(|n| n.node.as_ref().map(|x| x.engine().replica().digest()));
        let Some(first) = digests.next() else {
            return true;
        };
        digests.all(|d| d == first)
    }
}

impl Sim {
    /// Addresses present on more than one running machine, with the machines.
    pub fn duplicates(&self) -> Vec<(AddrSpec, Vec<NodeId>)> {
        let mut on: BTreeMap<&AddrSpec, Vec<NodeId>> = BTreeMap::new();
        for (name, n) in &self.nodes {
            for a in &n.iface {
                on.entry(a).or_default().push(name.clone());
            }
        }
        on.into_iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(a, v)| (a.clone(), v))
            .collect()
    }

    /// Whether a duplicate of `spec` on `nodes` is a make-before-break
    /// hand-off: within `grace`, some table or allocation named one of them
    /// holder and the other `handoff_from` (the giver keeps the address until
    /// the receiver's confirmation reaches it).
    pub fn is_handoff(&self, spec: &AddrSpec, nodes: &[NodeId], grace: Duration) -> bool {
        let now = self.now - self.start;
        self.handoffs.get(spec).is_some_and(|(t, h, g)| {
            now.saturating_sub(*t) <= grace
                && nodes.len() == 2
                && nodes.contains(h)
                && nodes.contains(g)
        })
    }

    /// Where each address is, by machine.
    pub fn holders(&self) -> BTreeMap<AddrSpec, Vec<NodeId>> {
        let mut on: BTreeMap<AddrSpec, Vec<NodeId>> = BTreeMap::new();
        for (name, n) in &self.nodes {
            for a in &n.iface {
                on.entry(a.clone()).or_default().push(name.clone());
            }
        }
        on
    }
}
