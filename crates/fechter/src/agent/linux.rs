//! The real machine: addresses through netlink under a kernel lease,
//! takeover bursts of gratuitous ARP / unsolicited neighbour advertisements,
//! and the wire as the lock (probes, claims and received frames, one
//! [`WireWatch`] per interface).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fechter_core::AddrSpec;
use fechter_core::reconcile::Action;
use fechter_linux::netlink::{NetEvent, Netlink, watch};
use fechter_linux::wire::{ClaimKind, WireWatch};
use fechter_linux::{Announcer, PlatformError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::platform::{Platform, PlatformEvent, WireClaim};

/// Linux, in the network namespace of the thread that created it.
pub struct LinuxPlatform {
    nl: Netlink,
    announcer: Arc<Announcer>,
    lease: Duration,
    burst: Vec<Duration>,
    bursts: BTreeMap<AddrSpec, JoinHandle<()>>,
    events: Option<mpsc::Receiver<PlatformEvent>>,
    promoted: BTreeSet<String>,
    /// Packet sockets per interface, opened on first use and dropped when
    /// they fail (a recreated interface is found again by name).
    watches: BTreeMap<String, WireWatch>,
    claims: Vec<fechter_linux::wire::Claim>,
}

impl LinuxPlatform {
    /// Opens netlink and the packet socket and starts watching the links and
    /// addresses. Fails with a clear message without CAP_NET_ADMIN / CAP_NET_RAW.
    pub async fn new(
        lease: Duration,
        burst: Vec<Duration>,
    ) -> Result<LinuxPlatform, PlatformError> {
        fechter_linux::netlink::check_privileges()?;
        let nl = Netlink::connect().await?;
        let announcer = Arc::new(Announcer::new()?);
        let mut raw = watch().await?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(ev) = raw.recv().await {
                let ev = match ev {
                    NetEvent::AddressRemoved { iface, ip, prefix } => {
                        PlatformEvent::AddressRemoved(AddrSpec { iface, ip, prefix })
                    }
                    NetEvent::LinkChanged { iface, up, carrier } => PlatformEvent::Link {
                        iface,
                        usable: up && carrier,
                    },
                    NetEvent::LinkRemoved { iface } => PlatformEvent::Link {
                        iface,
                        usable: false,
                    },
                    NetEvent::Overrun => PlatformEvent::Resync,
                };
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
        });
        Ok(LinuxPlatform {
            nl,
            announcer,
            lease,
            burst,
            bursts: BTreeMap::new(),
            events: Some(rx),
            promoted: BTreeSet::new(),
            watches: BTreeMap::new(),
            claims: Vec::new(),
        })
    }

    /// The interface's wire watch, opened if need be.
    fn watch(&mut self, iface: &str) -> Result<&mut WireWatch, String> {
        if !self.watches.contains_key(iface) {
            let w = WireWatch::open(iface).map_err(|e| e.to_string())?;
            self.watches.insert(iface.to_owned(), w);
        }
        Ok(self.watches.get_mut(iface).expect("just inserted"))
    }

    /// Linux deletes every secondary address of a subnet when its primary
    /// goes, unless promote_secondaries is set: a floating address must never
    /// take another with it.
    fn promote_secondaries(&mut self, iface: &str) {
        if self.promoted.insert(iface.to_owned()) {
            let path = format!("/proc/sys/net/ipv4/conf/{iface}/promote_secondaries");
            if let Err(e) = std::fs::write(&path, "1") {
                tracing::warn!(%iface, "cannot set promote_secondaries ({e}); removing one address may remove others of its subnet");
            }
        }
    }
}

impl Platform for LinuxPlatform {
    async fn observe(&mut self) -> Result<BTreeSet<AddrSpec>, String> {
        let list = self.nl.list().await.map_err(|e| e.to_string())?;
        Ok(list.iter().map(|o| o.spec()).collect())
    }

    async fn execute(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Install(a) => {
                if a.is_ipv4() {
                    self.promote_secondaries(&a.iface);
                }
                self.nl.install(a, self.lease).await.map(drop)
            }
            Action::Renew(a) => self.nl.renew(a, self.lease).await.map(drop),
            Action::Remove(a) => {
                if let Some(b) = self.bursts.remove(a) {
                    b.abort();
                }
                self.nl.remove(a).await.map(drop)
            }
            Action::Announce(a) => {
                // The first announcement goes out now; the rest of the burst
                // in the background (stopped if the address is released).
                self.announcer
                    .announce(&a.iface, a.ip)
                    .map_err(|e| e.to_string())?;
                let rest: Vec<Duration> = self
                    .burst
                    .iter()
                    .copied()
                    .filter(|d| !d.is_zero())
                    .collect();
                let ann = self.announcer.clone();
                let (iface, ip) = (a.iface.clone(), a.ip);
                let task = tokio::spawn(async move {
                    if let Err(e) = ann.burst(&iface, ip, &rest).await {
                        tracing::debug!(%iface, %ip, "announcement burst stopped: {e}");
                    }
                });
                if let Some(old) = self.bursts.insert(a.clone(), task) {
                    old.abort();
                }
                return Ok(());
            }
        }
        .map_err(|e: PlatformError| e.to_string())
    }

    /// Installs first, all requests in flight at once; then the
    /// announcements of what was installed; then every renewal at once;
    /// then the rest (removals) in order. With hundreds of addresses a
    /// takeover and the periodic renewal cost a few wake-ups, not two
    /// netlink round trips per address.
    async fn execute_plan(&mut self, plan: &[Action]) -> Vec<Result<(), String>> {
        let mut out: Vec<Option<Result<(), String>>> = vec![None; plan.len()];
        let pick = |want: fn(&Action) -> Option<&AddrSpec>| -> (Vec<usize>, Vec<AddrSpec>) {
            plan.iter()
                .enumerate()
                .filter_map(|(i, a)| want(a).map(|s| (i, s.clone())))
                .unzip()
        };
        let (at, specs) = pick(|a| match a {
            Action::Install(s) => Some(s),
            _ => None,
        });
        for s in specs.iter().filter(|s| s.is_ipv4()) {
            self.promote_secondaries(&s.iface);
        }
        let mut not_installed = BTreeSet::new();
        let results = self.nl.install_many(&specs, self.lease).await;
        for ((i, s), r) in at.into_iter().zip(&specs).zip(results) {
            if r.is_err() {
                not_installed.insert(s.clone());
            }
            out[i] = Some(r.map(drop).map_err(|e| e.to_string()));
        }
        for (i, a) in plan.iter().enumerate() {
            if let Action::Announce(s) = a {
                out[i] = Some(if not_installed.contains(s) {
                    Err("not announced: its install failed".into())
                } else {
                    self.execute(a).await
                });
            }
        }
        let (at, specs) = pick(|a| match a {
            Action::Renew(s) => Some(s),
            _ => None,
        });
        let results = self.nl.renew_many(&specs, self.lease).await;
        for (i, r) in at.into_iter().zip(results) {
            out[i] = Some(r.map_err(|e| e.to_string()));
        }
        for (i, a) in plan.iter().enumerate() {
            if out[i].is_none() {
                out[i] = Some(self.execute(a).await);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err("not executed".into())))
            .collect()
    }

    async fn unusable(&mut self, ifaces: &BTreeSet<String>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in ifaces {
            let why = match self.nl.link(i).await {
                Ok(l) if !l.up => "link down".to_string(),
                Ok(l) if !l.carrier => "no carrier".to_string(),
                Ok(_) => continue,
                Err(PlatformError::InterfaceNotFound(_)) => "no such interface".to_string(),
                Err(e) => e.to_string(),
            };
            out.push((i.clone(), why));
        }
        out
    }

    fn events(&mut self) -> Option<mpsc::Receiver<PlatformEvent>> {
        self.events.take()
    }

    fn wire_probe(&mut self, spec: &AddrSpec) -> Result<(), String> {
        let r = self.watch(&spec.iface)?.probe(spec.ip);
        r.map_err(|e| {
            self.watches.remove(&spec.iface);
            e.to_string()
        })
    }

    fn wire_request(
        &mut self,
        iface: &str,
        from: std::net::Ipv4Addr,
        ip: std::net::Ipv4Addr,
    ) -> Result<(), String> {
        let r = self.watch(iface)?.request(from, ip);
        r.map_err(|e| {
            self.watches.remove(iface);
            e.to_string()
        })
    }

    fn wire_claims(&mut self, out: &mut Vec<WireClaim>) {
        for w in self.watches.values_mut() {
            self.claims.clear();
            w.drain(&mut self.claims);
            out.extend(
                self.claims
                    .iter()
                    .filter(|c| c.kind == ClaimKind::Answer)
                    .map(|c| WireClaim {
                        ip: c.ip,
                        mac: c.mac,
                    }),
            );
        }
    }

    fn wire_frames(&mut self, ifaces: &BTreeSet<String>) -> Option<u64> {
        let mut total = None;
        for i in ifaces {
            let Ok(w) = self.watch(i) else { continue };
            match w.rx_frames() {
                Ok(n) => *total.get_or_insert(0) += n,
                Err(e) => {
                    tracing::debug!(iface = %i, "cannot read the received-frame counter: {e}");
                    self.watches.remove(i);
                }
            }
        }
        total
    }
}
