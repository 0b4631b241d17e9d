//! The foca adapter: this node's SWIM identity, the broadcast handler that
//! merges items into the replica (lent to it for each foca call), foca's
//! runtime (timers, datagrams, notifications), and announcing to the seeds.

use super::*;

/// A member's identity on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub node: NodeId,
    pub addr: SocketAddr,
    /// Grows on every start of the agent.
    pub incarnation: u64,
    /// Grows when foca renews the identity to rejoin after being declared down.
    pub bump: u16,
}

impl foca::Identity for Id {
    /// foca accepts an announce addressed to any identity with our `addr()`:
    /// the listen address is what a seed is known by before its id is.
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Id {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.bump) > (adversary.incarnation, adversary.bump)
    }
}

/// Identifies a broadcast item for foca's dissemination backlog: a newer
/// item about the same thing replaces an older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ItemKey {
    Node(NodeId, (u64, u64)),
    Address(std::net::IpAddr, Stamp),
    Table(TableMeta),
}

impl Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (ItemKey::Node(a, ra), ItemKey::Node(b, rb)) => a == b && ra >= rb,
            (ItemKey::Address(a, sa), ItemKey::Address(b, sb)) => a == b && sa >= sb,
            (ItemKey::Table(a), ItemKey::Table(b)) => fechter_core::leader::prefer(a, b).is_ge(),
            _ => false,
        }
    }
}

/// The state foca's broadcast handler merges items into. The engine owns
/// it, and lends it to the handler for the length of each foca call that
/// may run the handler ([`Lending`]): foca owns the handler and gives no
/// access to it.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) me: NodeId,
    pub(super) replica: Replica,
    pub(super) changed: bool,
    pub(super) hlc: Hlc,
    /// This node's own record, written again after a tombstone of it
    /// arrived (`fechter forget` on a node that did not hear this one):
    /// to be applied and disseminated (by `Engine::after_input`).
    pub(super) refuted: Option<NodeRecord>,
}

impl Shared {
    /// The state of a node starting from its persisted replica (possibly
    /// empty): its own node record is (re)written with its new incarnation.
    pub(super) fn restarted(me: &Id, mut replica: Replica) -> Shared {
        let own = replica
            .nodes
            .get(&me.node)
            .cloned()
            .unwrap_or_else(|| NodeRecord::new(me.node.clone(), me.incarnation));
        replica.nodes.insert(
            me.node.clone(),
            NodeRecord {
                incarnation: me.incarnation,
                version: 0,
                forgotten: false,
                ..own
            },
        );
        // The clock starts past every stamp on disk, so a local write always
        // wins over what this node wrote before it restarted.
        let hlc = replica
            .addresses
            .max_stamp()
            .map_or(Hlc::default(), |s| s.hlc);
        Shared {
            me: me.node.clone(),
            replica,
            changed: false,
            hlc,
            refuted: None,
        }
    }

    /// What the engine keeps while its state is lent: nobody reads it.
    fn placeholder() -> Shared {
        Shared {
            me: NodeId::new(""),
            replica: Replica::default(),
            changed: false,
            hlc: Hlc::default(),
            refuted: None,
        }
    }

    pub(super) fn apply(&mut self, item: Item) -> bool {
        if let Item::Address(e) = &item {
            // Keep our clock ahead of every stamp we have seen, so that a
            // later local write wins over it.
            self.hlc = self.hlc.max(e.stamp.hlc);
        }
        let own_tombstone = match &item {
            Item::Node(r) if r.id == self.me && r.forgotten => {
                self.replica.nodes.get(&self.me).cloned()
            }
            _ => None,
        };
        let changed = self.replica.apply(item);
        self.changed |= changed;
        if changed && let Some(before) = own_tombstone {
            self.refute(before);
        }
        changed
    }

    /// This node was forgotten while it runs: it is not gone, so it writes
    /// its record again in a higher incarnation than the tombstone's (as a
    /// restart would), which replaces the tombstone everywhere.
    pub(super) fn refute(&mut self, before: NodeRecord) {
        let tomb = &self.replica.nodes[&self.me];
        // Applied when the engine broadcasts it (foca disseminates only
        // what is news to this node).
        self.refuted = Some(NodeRecord {
            incarnation: tomb.incarnation.max(before.incarnation) + 1,
            version: 0,
            forgotten: false,
            ..before
        });
    }
}

/// Where the engine lends its [`Shared`] state to the broadcast handler:
/// empty but during a foca call.
pub(super) type Lent = Rc<RefCell<Option<Shared>>>;

/// The engine's state lent to foca's broadcast handler until this is
/// dropped (at the end of the foca call, or by unwinding), when it returns
/// to the engine.
pub(super) struct Lending<'a> {
    home: &'a mut Shared,
    slot: &'a Lent,
}

impl<'a> Lending<'a> {
    pub(super) fn new(home: &'a mut Shared, slot: &'a Lent) -> Lending<'a> {
        let lent = std::mem::replace(home, Shared::placeholder());
        *slot.borrow_mut() = Some(lent);
        Lending { home, slot }
    }
}

impl Drop for Lending<'_> {
    fn drop(&mut self) {
        if let Some(shared) = self.slot.borrow_mut().take() {
            *self.home = shared;
        }
    }
}

pub(super) struct Handler(pub(super) Lent);

#[derive(Debug, thiserror::Error)]
#[error("bad broadcast item: {0}")]
pub(super) struct BadItem(String);

impl BroadcastHandler<Id> for Handler {
    type Key = ItemKey;
    type Error = BadItem;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&Id>,
    ) -> Result<Option<ItemKey>, BadItem> {
        let item: Item = postcard::from_bytes(data).map_err(|e| BadItem(e.to_string()))?;
        let key = match &item {
            Item::Node(r) => ItemKey::Node(r.id.clone(), (r.incarnation, r.version)),
            Item::Address(e) => ItemKey::Address(e.ip(), e.stamp.clone()),
            Item::Table(t) => ItemKey::Table(t.meta.clone()),
        };
        let mut lent = self.0.borrow_mut();
        let shared = lent
            .as_mut()
            .expect("the engine lends its state for every foca call");
        Ok(shared.apply(item).then_some(key))
    }
}

pub(super) type Swim = Foca<Id, PostcardCodec, StdRng, Handler>;

/// Collects foca's effects during one call.
pub(super) struct Effects<'a> {
    pub(super) now: Instant,
    pub(super) timers: &'a mut BTreeMap<(Instant, u64), TimerKind>,
    pub(super) seq: &'a mut u64,
    pub(super) out: &'a mut VecDeque<Transmit>,
    pub(super) notes: &'a mut Vec<Note>,
}

pub(super) enum Note {
    Up(Id),
    Down(Id),
    Rename(Id, Id),
    Active,
    Idle,
}

impl Runtime<Id> for Effects<'_> {
    fn notify(&mut self, n: Notification<'_, Id>) {
        match n {
            Notification::MemberUp(id) => self.notes.push(Note::Up(id.clone())),
            Notification::MemberDown(id) => self.notes.push(Note::Down(id.clone())),
            Notification::Rename(a, b) => self.notes.push(Note::Rename(a.clone(), b.clone())),
            Notification::Active => self.notes.push(Note::Active),
            Notification::Idle => self.notes.push(Note::Idle),
            _ => {}
        }
    }

    fn send_to(&mut self, to: Id, data: &[u8]) {
        self.out.push_back(Transmit {
            to: to.addr,
            payload: wire::encode(&Packet::Swim(data.to_vec())),
        });
    }

    fn submit_after(&mut self, event: Timer<Id>, after: Duration) {
        *self.seq += 1;
        self.timers
            .insert((self.now + after, *self.seq), TimerKind::Swim(event));
    }
}

pub(super) fn foca_config(cfg: &EngineConfig) -> foca::Config {
    let t = &cfg.timings;
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(16).expect("nonzero"));
    c.probe_period = t.probe_period;
    c.probe_rtt = t.probe_rtt;
    c.suspect_to_down_after = t.suspect_to_down;
    c.num_indirect_probes = NonZeroUsize::new(3).expect("nonzero");
    c.max_transmissions = NonZeroU8::new(8).expect("nonzero");
    c.remove_down_after = Some(t.forget_down_after);
    // Our packet is `Packet::Swim(bytes)`: one tag byte and a length varint.
    c.max_packet_size = NonZeroUsize::new(cfg.max_packet.min(MAX_PACKET) - 4).expect("nonzero");
    c.notify_down_members = true;
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: t.gossip_period,
        num_members: NonZeroUsize::new(3).expect("nonzero"),
    });
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: t.seed_announce,
        num_members: NonZeroUsize::new(1).expect("nonzero"),
    });
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(1),
        num_members: NonZeroUsize::new(2).expect("nonzero"),
    });
    c
}

impl Engine {
    /// Leaves the cluster gracefully (members see us down at once).
    pub fn leave(&mut self, now: Now) {
        let _ = self.with_swim(now, |swim, fx| swim.leave_cluster(fx));
    }

    /// Runs one foca call with this engine as its runtime (timers, datagrams
    /// and notifications are collected), then absorbs the notifications.
    pub(super) fn with_swim<R>(
        &mut self,
        now: Now,
        f: impl FnOnce(&mut Swim, &mut Effects<'_>) -> R,
    ) -> R {
        let mut notes = Vec::new();
        let r = {
            let _lent = Lending::new(&mut self.shared, &self.lent);
            let mut fx = Effects {
                now: now.at,
                timers: &mut self.timers,
                seq: &mut self.seq,
                out: &mut self.out,
                notes: &mut notes,
            };
            f(&mut self.swim, &mut fx)
        };
        self.absorb(now, notes);
        r
    }

    /// Puts `bytes` on foca's broadcast backlog (foca's handler applies it
    /// first, and refuses what is not news).
    pub(super) fn add_broadcast(&mut self, bytes: &[u8]) -> Result<bool, foca::Error> {
        let _lent = Lending::new(&mut self.shared, &self.lent);
        self.swim.add_broadcast(bytes)
    }

    pub(super) fn absorb(&mut self, now: Now, notes: Vec<Note>) {
        for n in notes {
            match n {
                Note::Up(id) => {
                    self.members.insert(id.node.clone(), id.clone());
                    // Anti-entropy at once with a newcomer (or a returning node).
                    self.send_digest(id.addr, false);
                    self.events.push_back(Event::MemberUp(id));
                }
                Note::Down(id) => {
                    if self.members.get(&id.node) == Some(&id) {
                        self.members.remove(&id.node);
                    }
                    self.events.push_back(Event::MemberDown(id));
                }
                Note::Rename(old, new) => {
                    self.members.remove(&old.node);
                    self.members.insert(new.node.clone(), new.clone());
                    if (old.incarnation, old.bump) != (new.incarnation, new.bump) {
                        self.send_digest(new.addr, false);
                    }
                }
                Note::Active => {
                    if std::mem::take(&mut self.was_isolated) {
                        // Back from isolation: learn the cluster's table
                        // before leading on a view that may be stale.
                        self.lead_after = now.at + self.cfg.timings.lead_grace;
                    }
                    self.events.push_back(Event::Joined)
                }
                Note::Idle => {
                    self.was_isolated = true;
                    self.events.push_back(Event::Isolated);
                    self.announce_to_seeds(now);
                }
            }
        }
    }

    pub(super) fn announce_to_seeds(&mut self, now: Now) {
        self.last_seed_announce = Some(now.at);
        // Seeds that are live members need no announce (it would only make
        // them send their whole member list again).
        let live: BTreeSet<SocketAddr> = self.members.values().map(|m| m.addr).collect();
        let seeds: Vec<SocketAddr> = self
            .cfg
            .seeds
            .iter()
            .copied()
            .filter(|s| *s != self.cfg.me.addr && !live.contains(s))
            .collect();
        for seed in seeds {
            // We do not know the seed's identity: foca only needs an
            // address to send to; the seed answers with its real identity.
            let placeholder = Id {
                node: NodeId::new(""),
                addr: seed,
                incarnation: 0,
                bump: 0,
            };
            let _ = self.with_swim(now, |swim, fx| swim.announce(placeholder, fx));
        }
    }
}
