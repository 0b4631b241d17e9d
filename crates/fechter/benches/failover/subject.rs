//! What the failover benchmark measures: a *subject* (fechter, or
//! keepalived at one advert interval) serving one address in a namespace
//! lab, and the faults it is put through.

use std::net::IpAddr;
use std::time::Duration;

use fechter_linux::lab::Lab;

/// The faults of issue 7, each applied to the node that holds the address;
/// the double faults also hit the next node ([`Fault::victims`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The holder's link goes down while its daemon is frozen (SIGSTOP).
    MachineDeath,
    /// The holder's daemon is killed with SIGKILL (the machine stays up).
    Sigkill,
    /// The holder's daemon is asked to stop (SIGTERM).
    Sigterm,
    /// The operator takes the holder down (`fechter down`).
    Down,
    /// The holder's cable loses its carrier (switch side down).
    CarrierLoss,
    /// The holder can no longer reach the gateway (blackhole route).
    GatewayLoss,
    /// The holder's port is taken off the bridge; link and carrier stay up.
    Partition,
    /// The daemons of the holder and of the next node are killed with
    /// SIGKILL at once (both machines stay up).
    TwoKilled,
    /// Two machines die at once, the holder and the next node: each daemon
    /// frozen (SIGSTOP), each link down.
    TwoDead,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::MachineDeath,
        Fault::Sigkill,
        Fault::Sigterm,
        Fault::Down,
        Fault::CarrierLoss,
        Fault::GatewayLoss,
        Fault::Partition,
        Fault::TwoKilled,
        Fault::TwoDead,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Fault::MachineDeath => "machine-death",
            Fault::Sigkill => "sigkill",
            Fault::Sigterm => "sigterm",
            Fault::Down => "down",
            Fault::CarrierLoss => "carrier-loss",
            Fault::GatewayLoss => "gateway-loss",
            Fault::Partition => "partition",
            Fault::TwoKilled => "two-killed",
            Fault::TwoDead => "two-dead",
        }
    }

    pub fn parse(s: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == s)
    }

    /// The nodes `self` hits when `holder` holds the address in a lab of
    /// `nodes`: the holder, and for the double faults also the next node
    /// (`(holder + 1) % nodes`, so that the choice is deterministic).
    pub fn victims(self, holder: usize, nodes: usize) -> Vec<usize> {
        let next = (holder + 1) % nodes.max(1);
        match self {
            Fault::TwoKilled | Fault::TwoDead if next != holder => vec![holder, next],
            _ => vec![holder],
        }
    }

    /// Whether the victims are cut off from the segment (link or carrier
    /// down): a copy of the address their kernels keep reaches nobody, so
    /// the two-holders figure leaves them out. A killed daemon's machine
    /// still answers with its copy, which counts.
    pub fn cuts_off(self) -> bool {
        matches!(
            self,
            Fault::MachineDeath | Fault::CarrierLoss | Fault::TwoDead
        )
    }
}

/// The gateway every subject's lab has: the client's namespace also plays
/// the gateway (an extra address on its `eth0`).
pub const GATEWAY: &str = "198.18.0.254";
/// The address under test.
pub const VIP: &str = "198.18.0.50";

/// A high-availability manager running in a lab, serving [`VIP`].
///
/// The runner calls `settle`, then starts its observers, then `inject`,
/// watches for [`Subject::window`], stops the observers and calls `repair`.
/// Every method is bounded in time and returns an error (never panics) when
/// the subject does not behave; the runner then records the trial as failed
/// and calls `settle` again.
pub trait Subject {
    /// A short label for the table, e.g. `fechter` or `keepalived 0.1 s`.
    fn label(&self) -> String;
    /// The lab the subject runs in (for observers: client, sampler).
    fn lab(&self) -> &Lab;
    /// Why `fault` cannot be applied to this subject, or `None`.
    fn unsupported(&self, fault: Fault) -> Option<&'static str>;
    /// Waits until the address is served by exactly one node (kernel),
    /// every daemon runs and the cluster is calm; returns that node.
    fn settle(&mut self) -> Result<usize, String>;
    /// Applies `fault` to `node` (the holder; for the double faults also to
    /// the other node of [`Fault::victims`]) and returns at once.
    fn inject(&mut self, fault: Fault, node: usize) -> Result<(), String>;
    /// Undoes `fault` on `node` (and the other victim of a double fault):
    /// link, carrier, route and bridge restored, daemons running again
    /// (restarted if they were killed or stopped).
    fn repair(&mut self, fault: Fault, node: usize) -> Result<(), String>;
    /// How long to watch after `inject` for the address to move and for
    /// any double holding to end (at least the failover time plus margin).
    fn window(&self, fault: Fault) -> Duration;
    /// Process ids of the daemon(s) running on `node` (for idle CPU / RSS).
    fn pids(&self, node: usize) -> Vec<i32>;
}

/// The IP of [`VIP`].
pub fn vip() -> IpAddr {
    VIP.parse().expect("VIP")
}
