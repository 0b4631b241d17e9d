//! What the agent needs from the machine: see and change the addresses on
//! its interfaces, announce them, and hear when the machine changes them.
//!
//! The real implementation is [`crate::agent::linux::LinuxPlatform`]
//! (netlink and raw packets); [`RecordingPlatform`] stands in for it in
//! tests and simulations.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use fechter_core::AddrSpec;
use fechter_core::reconcile::Action;
use tokio::sync::mpsc;

/// Something the machine did that the agent must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformEvent {
    /// An address disappeared (removed by another tool, or expired).
    AddressRemoved(AddrSpec),
    /// An interface lost its link or carrier, or came back.
    Link { iface: String, usable: bool },
    /// Notifications were lost: observe everything again.
    Resync,
}

/// Another machine answered for, or announced, `ip` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireClaim {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// The machine's interfaces.
pub trait Platform {
    /// The addresses on this machine's interfaces now.
    fn observe(&mut self) -> impl Future<Output = Result<BTreeSet<AddrSpec>, String>>;
    /// Executes one action of a reconciliation plan. Removing an absent
    /// address succeeds.
    fn execute(&mut self, action: &Action) -> impl Future<Output = Result<(), String>>;
    /// Executes a whole plan, in its order as far as it matters (an address
    /// is announced only after it was installed); one result per action.
    /// The machine may overlap independent actions (all installs, all
    /// renewals) to keep a plan of hundreds of addresses cheap.
    fn execute_plan(&mut self, plan: &[Action]) -> impl Future<Output = Vec<Result<(), String>>> {
        async move {
            let mut out = Vec::with_capacity(plan.len());
            for a in plan {
                out.push(self.execute(a).await);
            }
            out
        }
    }
    /// Which of `ifaces` this machine cannot use (missing, down, no
    /// carrier), each with the reason.
    fn unusable(
        &mut self,
        ifaces: &BTreeSet<String>,
    ) -> impl Future<Output = Vec<(String, String)>>;
    /// The stream of machine events (taken once).
    fn events(&mut self) -> Option<mpsc::Receiver<PlatformEvent>>;

    /// The wire as the lock: sends one probe for `spec` (an ARP probe, or
    /// a duplicate-address-detection solicitation). A machine without a
    /// wire answers nothing.
    fn wire_probe(&mut self, spec: &AddrSpec) -> Result<(), String> {
        let _ = spec;
        Ok(())
    }
    /// Sends an ARP request for `ip` on `iface` from `from`: an answer is
    /// a sign of life on the segment.
    fn wire_request(&mut self, iface: &str, from: Ipv4Addr, ip: Ipv4Addr) -> Result<(), String> {
        let _ = (iface, from, ip);
        Ok(())
    }
    /// Appends every claim read off the wire since the last call.
    fn wire_claims(&mut self, out: &mut Vec<WireClaim>) {
        let _ = out;
    }
    /// The frames received so far on `ifaces`, summed; `None` when the
    /// machine cannot tell (no sign of life is ever seen then).
    fn wire_frames(&mut self, ifaces: &BTreeSet<String>) -> Option<u64> {
        let _ = ifaces;
        None
    }
}

/// An in-memory machine: a set of addresses and a log of every action.
/// Clones share state, so a test keeps one and gives one to the agent.
#[derive(Debug, Clone, Default)]
pub struct RecordingPlatform {
    pub state: Arc<Mutex<Recorded>>,
    events: Arc<Mutex<Option<mpsc::Receiver<PlatformEvent>>>>,
    sender: Option<mpsc::Sender<PlatformEvent>>,
}

/// What a [`RecordingPlatform`] holds.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub addresses: BTreeSet<AddrSpec>,
    pub log: Vec<Action>,
    /// Interfaces this machine lacks or that are down.
    pub down_ifaces: BTreeSet<String>,
    /// How many times the agent read the addresses back ([`Platform::observe`]).
    pub observed: usize,
    /// A segment that always shows life (frames keep arriving) and where no
    /// probe is ever answered; `false`: a machine with no wire at all.
    pub live_segment: bool,
    /// Frames "received" so far on a live segment.
    pub frames: u64,
}

impl RecordingPlatform {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(64);
        RecordingPlatform {
            state: Arc::default(),
            events: Arc::new(Mutex::new(Some(rx))),
            sender: Some(tx),
        }
    }

    /// Simulates the machine doing something behind the agent's back.
    pub fn inject(&self, ev: PlatformEvent) {
        if let Some(tx) = &self.sender {
            let _ = tx.try_send(ev);
        }
    }

    /// A machine on a segment that always shows life and where nobody else
    /// answers for any address (what `--dry-run` assumes).
    pub fn with_live_segment(self) -> Self {
        self.state.lock().expect("lock").live_segment = true;
        self
    }

    pub fn addresses(&self) -> BTreeSet<AddrSpec> {
        self.state.lock().expect("lock").addresses.clone()
    }

    pub fn log(&self) -> Vec<Action> {
        self.state.lock().expect("lock").log.clone()
    }
}

impl Platform for RecordingPlatform {
    async fn observe(&mut self) -> Result<BTreeSet<AddrSpec>, String> {
        let mut s = self.state.lock().expect("lock");
        s.observed += 1;
        Ok(s.addresses.clone())
    }

    async fn execute(&mut self, action: &Action) -> Result<(), String> {
        let mut s = self.state.lock().expect("lock");
        match action {
            Action::Install(a) | Action::Renew(a) => {
                if s.down_ifaces.contains(&a.iface) {
                    return Err(format!("interface {} is not usable", a.iface));
                }
                s.addresses.insert(a.clone());
            }
            Action::Remove(a) => {
                s.addresses.remove(a);
            }
            Action::Announce(_) => {}
        }
        s.log.push(action.clone());
        Ok(())
    }

    async fn unusable(&mut self, ifaces: &BTreeSet<String>) -> Vec<(String, String)> {
        let s = self.state.lock().expect("lock");
        ifaces
            .iter()
            .filter(|i| s.down_ifaces.contains(*i))
            .map(|i| (i.clone(), "link down".to_string()))
            .collect()
    }

    fn events(&mut self) -> Option<mpsc::Receiver<PlatformEvent>> {
        self.events.lock().expect("lock").take()
    }

    fn wire_frames(&mut self, _ifaces: &BTreeSet<String>) -> Option<u64> {
        let mut s = self.state.lock().expect("lock");
        if !s.live_segment {
            return None;
        }
        s.frames += 1;
        Some(s.frames)
    }
}
