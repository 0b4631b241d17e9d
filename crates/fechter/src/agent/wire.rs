//! The shell's side of the wire as the lock (`fechter_cluster::wire_lock`,
//! rules in `fechter_core::claim`): on every heartbeat tick it reads what
//! the wire claims, settles conflicts over what this node holds, samples
//! the segment's received frames for the engine's standing, asks its
//! neighbours for a sign of life while a majority is missing, and probes
//! the addresses this node is about to install.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use fechter_cluster::engine::Now;
use fechter_cluster::wire_lock::{self, WireLock};
use fechter_core::AddrSpec;
use fechter_core::claim::{ConflictAction, Standing};
use fechter_core::reconcile::Action;

use super::events::What;
use super::platform::{Platform, WireClaim};
use super::reason::Reason;
use super::{INSTALLED_FILE, Shell};

/// The shell's wire state.
#[derive(Debug)]
pub(super) struct WireState {
    pub lock: WireLock,
    /// What this node wants and does not have (probed every tick).
    pub base: BTreeSet<AddrSpec>,
    /// Where ARP requests for a sign of life come from (the listen
    /// address), and whom they ask besides the peers' machines.
    pub listen_v4: Option<Ipv4Addr>,
    pub gateway_v4: Option<Ipv4Addr>,
    pub peers_v4: BTreeSet<Ipv4Addr>,
    /// For each address that waits: its previous holder, and the
    /// incarnation it was heard with when the wait began.
    pub givers: std::collections::BTreeMap<AddrSpec, (fechter_core::NodeId, Option<u64>)>,
    /// Waiting addresses whose giver is heard again (planned once).
    pub givers_back: BTreeSet<AddrSpec>,
    /// When a minority last probed the addresses it holds (to find a
    /// duplicate that announces nothing).
    pub self_probed: Option<std::time::Instant>,
}

impl WireState {
    pub fn new(lock: WireLock, listen: IpAddr, gateway: Option<IpAddr>) -> WireState {
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(v4) if !v4.is_unspecified() && !v4.is_loopback() => Some(v4),
            _ => None,
        };
        WireState {
            lock,
            base: BTreeSet::new(),
            listen_v4: v4(listen),
            gateway_v4: gateway.and_then(v4),
            peers_v4: BTreeSet::new(),
            givers: std::collections::BTreeMap::new(),
            givers_back: BTreeSet::new(),
            self_probed: None,
        }
    }
}

/// How often a minority probes the addresses it holds.
const SELF_PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What the wire told the shell on one tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct WireTick {
    /// An address became free: reconcile (it may be installed now).
    pub free: bool,
}

/// `aa:bb:cc:dd:ee:ff`.
pub(super) fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
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
        if !self.engine.wants_segment(now) {
            return;
        }
        let ifaces = self.managed_ifaces();
        if let Some(rx) = platform.wire_frames(&ifaces) {
            self.engine.handle_segment(now, rx);
        }
        // Ask the neighbours that answer ARP whatever their agent does (the
        // gateway, the peers' machines) for a sign of life: the answers are
        // frames the next sample counts.
        let Some(from) = self.wire.listen_v4 else {
            return;
        };
        for p in self.engine.members().values() {
            if let IpAddr::V4(v4) = p.addr.ip() {
                self.wire.peers_v4.insert(v4);
            }
        }
        let targets: BTreeSet<Ipv4Addr> = self
            .wire
            .peers_v4
            .iter()
            .copied()
            .chain(self.wire.gateway_v4)
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

    /// After the engine's timers: probes for what this node is about to
    /// install. Returns whether an address became free.
    pub(super) fn wire_after<P: Platform>(&mut self, platform: &mut P, now: Now) -> WireTick {
        let soon = self.engine.soon_taken(now);
        let wanted: BTreeSet<AddrSpec> = self
            .wire
            .base
            .iter()
            .cloned()
            .chain(soon.into_iter().filter(|s| !self.installed.contains(s)))
            .collect();
        for spec in self.wire.lock.want(now.at, &wanted) {
            tracing::trace!(address = %spec, "probe");
            if let Err(e) = platform.wire_probe(&spec) {
                tracing::debug!(address = %spec, "cannot probe: {e}");
            }
        }
        self.probe_held(platform, now);
        let mut free = self.wire.lock.newly_free(now.at);
        if free {
            tracing::debug!("an address is free on the wire");
        }
        // A waiting address whose previous holder is heard again (the same
        // process) is handed over now: plan once.
        let engine = &self.engine;
        let quorate = engine.standing() == Standing::Quorate;
        let back: Vec<AddrSpec> = self
            .wire
            .givers
            .iter()
            .filter(|(s, (h, inc))| {
                quorate
                    && self.wire.base.contains(*s)
                    && !self.wire.givers_back.contains(*s)
                    && inc.is_some()
                    && engine.heard_recently(now, h) == *inc
            })
            .map(|(s, _)| s.clone())
            .collect();
        if !back.is_empty() {
            tracing::debug!(?back, "their previous holder is heard again: a hand-off");
            free = true;
        }
        self.wire.givers_back.extend(back);
        let base = &self.wire.base;
        self.wire.givers_back.retain(|s| base.contains(s));
        WireTick { free }
    }

    /// A minority probes what it holds every 500 ms (32 addresses at most
    /// per round): another machine's answer is a conflict, which it yields
    /// (the majority's copy may announce nothing this node would hear).
    fn probe_held<P: Platform>(&mut self, platform: &mut P, now: Now) {
        if self.engine.standing() != Standing::Minority
            || self
                .wire
                .self_probed
                .is_some_and(|t| now.at.saturating_duration_since(t) < SELF_PROBE_EVERY)
        {
            return;
        }
        self.wire.self_probed = Some(now.at);
        let me = self.engine.id().node.clone();
        let alloc = self.engine.allocation();
        let held: Vec<AddrSpec> = self
            .installed
            .iter()
            .filter(|s| alloc.placements.get(*s).is_some_and(|p| p.holder == me))
            .take(32)
            .cloned()
            .collect();
        for spec in held {
            if let Err(e) = platform.wire_probe(&spec) {
                tracing::debug!(address = %spec, "cannot probe: {e}");
            }
        }
    }

    /// The addresses a plan may not install yet, and (as the base of the
    /// next ticks' probes) those this node wants but does not have.
    pub(super) fn wire_unproven(
        &mut self,
        now: Now,
        observed: &BTreeSet<AddrSpec>,
    ) -> BTreeSet<AddrSpec> {
        let me = self.engine.id().node.clone();
        let wanted = wire_lock::wanted(&me, self.engine.allocation(), observed, []);
        // Its previous holder is heard again, the same process (it served
        // as a minority, or was cut off the cluster port): a hand-off, which
        // it lets go of once this node confirms. A restarted holder removes
        // what it had by itself: the wire decides then.
        self.wire.givers.retain(|s, _| wanted.contains(s));
        for s in &wanted {
            if !self.wire.givers.contains_key(s)
                && let Some(p) = self.last_alloc.placements.get(s)
                && p.holder != me
            {
                let inc = self.engine.last_incarnation(&p.holder);
                self.wire.givers.insert(s.clone(), (p.holder.clone(), inc));
            }
        }
        // Only a node that hears a majority: a minority's view (the nodes it
        // does not hear are orphans) may be the stale one.
        let quorate = self.engine.standing() == Standing::Quorate;
        let givers = &self.wire.givers;
        let engine = &self.engine;
        let giver_alive = |s: &AddrSpec| {
            quorate
                && givers
                    .get(s)
                    .is_some_and(|(h, inc)| inc.is_some() && engine.heard_recently(now, h) == *inc)
        };
        let unproven: BTreeSet<AddrSpec> = self
            .wire
            .lock
            .unproven(now.at, &wanted)
            .into_iter()
            .filter(|s| !giver_alive(s))
            .collect();
        if !unproven.is_empty() {
            tracing::debug!(?unproven, "not free on the wire yet");
        }
        self.wire.base = wanted;
        unproven
    }

    /// After a plan ran: keep probing only what is still missing.
    pub(super) fn wire_settled(&mut self) {
        let installed = &self.installed;
        self.wire.base.retain(|s| !installed.contains(s));
    }

    /// Another machine answers for `c.ip`: a conflict if this node holds it.
    async fn wire_claim<P: Platform>(&mut self, platform: &mut P, now: Now, c: WireClaim) {
        self.wire.lock.heard(now.at, c.ip, c.mac);
        let me = self.engine.id().node.clone();
        let held = self
            .installed
            .iter()
            .find(|s| {
                s.ip == c.ip
                    && self
                        .engine
                        .allocation()
                        .placements
                        .get(*s)
                        .is_some_and(|p| p.holder == me)
            })
            .cloned();
        let Some(spec) = held else {
            return;
        };
        let standing = self.engine.standing();
        let action = self.wire.lock.conflict(now.at, &spec, standing);
        let mac = mac_text(c.mac);
        let address = &spec;
        match action {
            ConflictAction::Keep => return,
            ConflictAction::Defend => {
                tracing::warn!(%address, %mac, "another machine answers for an address this node holds: defending it");
                if let Err(e) = platform.execute(&Action::Announce(spec.clone())).await {
                    tracing::warn!(%address, "cannot defend: {e}");
                }
            }
            ConflictAction::Yield => {
                tracing::warn!(%address, %mac, "another machine answers for an address this node holds without a majority: yielding it");
                if let Err(e) = platform.execute(&Action::Remove(spec.clone())).await {
                    tracing::warn!(%address, "cannot remove: {e}");
                    return;
                }
                self.installed.remove(&spec);
                self.announced.remove(&spec);
                self.wire.base.insert(spec.clone());
                if let Err(e) = self.dir.save_json(INSTALLED_FILE, &self.installed) {
                    tracing::warn!("cannot record the installed addresses: {e}");
                }
                self.obs.note(
                    now.wall_ms,
                    What::Released {
                        address: spec.clone(),
                        reason: Reason::Conflict { mac: mac.clone() },
                    },
                );
            }
        }
        let kept = action != ConflictAction::Yield;
        self.obs.note(
            now.wall_ms,
            What::Conflict {
                address: spec.clone(),
                mac,
                kept,
                standing: standing_text(standing).to_string(),
            },
        );
    }

    /// Why this node, holder of `spec` by its allocation, has not installed
    /// it (for status): another machine answers, or probes are pending.
    pub(super) fn wire_waiting(&self, spec: &AddrSpec) -> Option<String> {
        if !self.wire.base.contains(spec) || self.installed.contains(spec) {
            return None;
        }
        let now = std::time::Instant::now();
        Some(match self.wire.lock.served_by(now, spec) {
            Some(mac) => format!("{} answers for it on the wire", mac_text(mac)),
            None => "probing the wire".to_string(),
        })
    }

    /// The interfaces of the managed addresses.
    fn managed_ifaces(&self) -> BTreeSet<String> {
        self.engine
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
