//! The shell's side of the wire as the lock (the node's side is
//! `fechter_cluster::node`, rules in `fechter_core::claim`): on every
//! heartbeat tick it hands the node what the wire claims and executes what
//! the node decides about it, samples the segment's received frames for the
//! engine's standing, asks its neighbours for a sign of life while a
//! majority is missing, and sends the probes the node asks for.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use fechter_cluster::engine::Now;
use fechter_cluster::node::{Waiting, mac_text};
use fechter_core::AddrSpec;
use fechter_core::claim::Standing;

use super::Shell;
use super::platform::{Platform, WireClaim};

/// Whom the shell asks for a sign of life (ARP requests answered whatever
/// their agent does), and from which address.
#[derive(Debug)]
pub(super) struct SignsOfLife {
    /// Where ARP requests come from (the listen address).
    pub listen_v4: Option<Ipv4Addr>,
    pub gateway_v4: Option<Ipv4Addr>,
    /// The peers' machines, as learned from the members.
    pub peers_v4: BTreeSet<Ipv4Addr>,
}

impl SignsOfLife {
    pub fn new(listen: IpAddr, gateway: Option<IpAddr>) -> SignsOfLife {
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_loopback() => Some(v4),
            _ => None,
        };
        SignsOfLife {
            listen_v4: v4(listen),
            gateway_v4: gateway.and_then(v4),
            peers_v4: BTreeSet::new(),
        }
    }
}

impl Shell {
    /// Before the engine's timers: claims read off the wire (conflicts
    /// settled at once), and the segment sample the standing needs.
    pub(super) async fn wire_before<P: Platform>(&mut self, platform: &mut P, now: Now) {
        let mut claims: Vec<WireClaim> = Vec::new();
        platform.wire_claims(&mut claims);
        for c in claims {
            self.wire_claim(platform, now, c).await;
        }
        if !self.node.wants_segment(now) {
            return;
        }
        let ifaces = self.managed_ifaces();
        if let Some(rx) = platform.wire_frames(&ifaces) {
            self.node.handle_segment(now, rx);
        }
        // Ask the neighbours that answer ARP whatever their agent does (the
        // gateway, the peers' machines) for a sign of life: the answers are
        // frames the next sample counts.
        let Some(from) = self.signs.listen_v4 else {
            return;
        };
        for p in self.node.engine().members().values() {
            if let IpAddr::V4(v4) = p.addr.ip() {
                self.signs.peers_v4.insert(v4);
            }
        }
        let targets: BTreeSet<Ipv4Addr> = self
            .signs
            .peers_v4
            .iter()
            .copied()
            .chain(self.signs.gateway_v4)
            .filter(|t| *t != from)
            .collect();
        for iface in &ifaces {
            for t in &targets {
                if let Err(e) = platform.wire_request(iface, from, *t) {
                    tracing::debug!(%iface, target = %t, "cannot ask for a sign of life: {e}");
                }
            }
        }
    }

    /// After the engine's timers: the probes the node asks for (what it is
    /// about to install, and what a minority holds).
    pub(super) fn wire_after<P: Platform>(&mut self, platform: &mut P, now: Now) {
        for spec in self.node.wire_tick(now) {
            tracing::trace!(address = %spec, "probe");
            if let Err(e) = platform.wire_probe(&spec) {
                tracing::debug!(address = %spec, "cannot probe: {e}");
            }
        }
    }

    /// Another machine answers for `c.ip`: the node decides (defend, yield
    /// or nothing), the platform does it.
    async fn wire_claim<P: Platform>(&mut self, platform: &mut P, now: Now, c: WireClaim) {
        let Some(action) = self.node.handle_claim(now, c.ip, c.mac) else {
            return;
        };
        let result = platform.execute(&action).await;
        if let Err(e) = &result {
            tracing::warn!(address = %action.spec(), mac = %mac_text(c.mac), "cannot {action}: {e}");
        }
        if let Some(installed) = self.node.claim_done(&action, result.is_ok()) {
            self.record_installed(&installed);
        }
    }

    /// Why this node, holder of `spec` by its allocation, has not installed
    /// it (for status): another machine answers, or probes are pending.
    pub(super) fn wire_waiting(&self, spec: &AddrSpec) -> Option<String> {
        Some(
            match self.node.waiting_for(std::time::Instant::now(), spec)? {
                Waiting::AnsweredBy(mac) => format!("{} answers for it on the wire", mac_text(mac)),
                Waiting::Probing => "probing the wire".to_string(),
            },
        )
    }

    /// The interfaces of the managed addresses.
    fn managed_ifaces(&self) -> BTreeSet<String> {
        self.node
            .engine()
            .replica()
            .addresses
            .assignable()
            .into_iter()
            .map(|(_, s)| s.iface)
            .collect()
    }
}

/// How a standing reads in events and status.
pub(super) fn standing_text(s: Standing) -> &'static str {
    match s {
        Standing::Quorate => "quorate",
        Standing::Minority => "minority",
        Standing::Fenced => "fenced",
    }
}
