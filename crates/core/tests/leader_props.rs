//! Property tests for the leader rule, terms and table preference, plus a
//! small cluster simulation for partitions, heals and joins.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use fechter_core::NodeId;
use fechter_core::leader::{
    Candidate, TableMeta, Term, elect, incumbent, most_preferred, next_meta, prefer,
    recognised_leader,
};
use proptest::prelude::*;

const NAMES: [&str; 8] = ["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7"];

fn node(i: usize) -> NodeId {
    NodeId::new(NAMES[i])
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (0..NAMES.len(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(
        |(i, alive, can_lead, priority)| Candidate {
            id: node(i),
            alive,
            can_lead,
            priority,
        },
    )
}

/// A view in which every node appears at most once.
fn unique_view() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(candidate(), 0..8).prop_map(|v| {
        let mut by_id = BTreeMap::new();
        for c in v {
            by_id.entry(c.id.clone()).or_insert(c);
        }
        by_id.into_values().collect()
    })
}

/// A non-empty view of nodes `n0..n6`, each at most once, and an incumbent
/// that is eligible in it.
fn view_with_incumbent() -> impl Strategy<Value = (Vec<Candidate>, NodeId)> {
    (candidate(), unique_view(), any::<prop::sample::Index>()).prop_map(|(first, rest, pick)| {
        let mut by_id = BTreeMap::new();
        for c in std::iter::once(first).chain(rest) {
            if c.id != node(NAMES.len() - 1) {
                by_id.entry(c.id.clone()).or_insert(c);
            }
        }
        let mut view: Vec<Candidate> = by_id.into_values().collect();
        if view.is_empty() {
            view.push(Candidate {
                id: node(0),
                alive: true,
                can_lead: true,
                priority: 0,
            });
        }
        let i = pick.index(view.len());
        view[i].alive = true;
        view[i].can_lead = true;
        let inc = view[i].id.clone();
        (view, inc)
    })
}

fn eligible(c: &Candidate) -> bool {
    c.alive && c.can_lead
}

fn meta() -> impl Strategy<Value = TableMeta> {
    (0u64..4, 0..NAMES.len(), 0u64..3).prop_map(|(t, l, v)| TableMeta {
        term: Term(t),
        leader: node(l),
        version: v,
    })
}

proptest! {
    #[test]
    fn elect_ignores_view_order(
        (view, shuffled) in prop::collection::vec(candidate(), 0..10)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        inc in prop::option::of(0..NAMES.len()),
    ) {
        let inc = inc.map(node);
        prop_assert_eq!(elect(&view, inc.as_ref()), elect(&shuffled, inc.as_ref()));
    }

    #[test]
    fn the_leader_is_always_eligible(
        view in prop::collection::vec(candidate(), 0..10),
        inc in prop::option::of(0..NAMES.len()),
    ) {
        let inc = inc.map(node);
        match elect(&view, inc.as_ref()) {
            Some(l) => {
                let records: Vec<_> = view.iter().filter(|c| c.id == l).collect();
                prop_assert!(!records.is_empty());
                prop_assert!(records.iter().all(|c| eligible(c)));
            }
            None => {
                // Nobody is eligible in every one of their records.
                for c in &view {
                    prop_assert!(!view.iter().filter(|d| d.id == c.id).all(eligible));
                }
            }
        }
    }

    #[test]
    fn an_eligible_incumbent_stays((view, inc) in view_with_incumbent()) {
        prop_assert_eq!(elect(&view, Some(&inc)), Some(inc.clone()));
    }

    /// Without a usable incumbent (none, dead, drained or unknown), the leader
    /// is the best eligible candidate: highest priority, then lowest tie key.
    #[test]
    fn without_incumbent_the_order_decides(view in unique_view(), inc in prop::option::of(0..NAMES.len())) {
        let inc = inc.map(node);
        let usable = inc
            .as_ref()
            .is_some_and(|i| view.iter().any(|c| &c.id == i && eligible(c)));
        prop_assume!(!usable);
        let got = elect(&view, inc.as_ref());
        prop_assert_eq!(&got, &elect(&view, None));
        let pool: Vec<_> = view.iter().filter(|c| eligible(c)).collect();
        match got {
            None => prop_assert!(pool.is_empty()),
            Some(l) => {
                let winner = pool.iter().find(|c| c.id == l).unwrap();
                for c in &pool {
                    prop_assert!(c.priority <= winner.priority);
                    if c.priority == winner.priority {
                        prop_assert!(winner.id.tie_key() <= c.id.tie_key());
                    }
                }
            }
        }
    }

    /// A node joining (with any priority and hash) never displaces an
    /// eligible incumbent.
    #[test]
    fn a_joining_node_causes_no_churn(
        (view, inc) in view_with_incumbent(),
        joiner in candidate(),
        fresh in any::<prop::sample::Index>(),
    ) {
        // Give the joiner an id that is not in the view yet (`n7` never is).
        let free: Vec<NodeId> = (0..NAMES.len())
            .map(node)
            .filter(|id| view.iter().all(|c| &c.id != id))
            .collect();
        let joiner = Candidate { id: fresh.get(&free).clone(), ..joiner };
        let before = elect(&view, Some(&inc));
        prop_assert_eq!(&before, &Some(inc.clone()));
        let mut joined = view.clone();
        joined.push(joiner);
        prop_assert_eq!(elect(&joined, Some(&inc)), before);
    }

    #[test]
    fn prefer_is_antisymmetric(a in meta(), b in meta()) {
        prop_assert_eq!(prefer(&a, &b), prefer(&b, &a).reverse());
        prop_assert_eq!(prefer(&a, &b) == Ordering::Equal, a == b);
    }

    #[test]
    fn prefer_is_transitive(a in meta(), b in meta(), c in meta()) {
        if prefer(&a, &b) != Ordering::Less && prefer(&b, &c) != Ordering::Less {
            prop_assert_ne!(prefer(&a, &c), Ordering::Less);
        }
        if prefer(&a, &b) == Ordering::Greater && prefer(&b, &c) == Ordering::Greater {
            prop_assert_eq!(prefer(&a, &c), Ordering::Greater);
        }
    }

    #[test]
    fn prefer_ranks_term_first(a in meta(), b in meta()) {
        if a.term != b.term {
            prop_assert_eq!(prefer(&a, &b), a.term.cmp(&b.term));
        } else if a.leader != b.leader {
            prop_assert_eq!(prefer(&a, &b), b.leader.tie_key().cmp(&a.leader.tie_key()));
        } else {
            prop_assert_eq!(prefer(&a, &b), a.version.cmp(&b.version));
        }
    }

    /// The next meta beats every meta seen. A new term is above every term
    /// seen; the same term is kept only for a republish of `me`'s own, most
    /// preferred table.
    #[test]
    fn next_meta_beats_everything_seen(
        me in 0..NAMES.len(),
        seen in prop::collection::vec(meta(), 0..6),
        own in prop::option::of((0u64..4, 0u64..3)),
    ) {
        let me = node(me);
        let own = own.map(|(t, v)| TableMeta { term: Term(t), leader: me.clone(), version: v });
        let mut all = seen.clone();
        all.extend(own.iter().cloned());
        let highest = most_preferred(&all).cloned();
        let next = next_meta(&me, highest.as_ref(), own.as_ref());
        prop_assert_eq!(&next.leader, &me);
        for m in &all {
            prop_assert_eq!(prefer(&next, m), Ordering::Greater);
        }
        match own.as_ref().filter(|o| Some(*o) == highest.as_ref()) {
            Some(o) => {
                prop_assert_eq!(next.term, o.term);
                prop_assert_eq!(next.version, o.version + 1);
            }
            None => {
                prop_assert_eq!(next.version, 0);
                for m in &all {
                    prop_assert!(next.term > m.term);
                }
            }
        }
    }

    #[test]
    fn incumbent_is_the_best_table_with_an_eligible_leader(
        view in prop::collection::vec(candidate(), 0..10),
        tables in prop::collection::vec(meta(), 0..6),
    ) {
        let ok = |id: &NodeId| {
            let recs: Vec<_> = view.iter().filter(|c| &c.id == id).collect();
            !recs.is_empty() && recs.iter().all(|c| eligible(c))
        };
        match incumbent(&tables, &view) {
            None => prop_assert!(tables.iter().all(|t| !ok(&t.leader))),
            Some(l) => {
                prop_assert!(ok(l));
                let chosen = tables.iter().filter(|t| &t.leader == l).max_by(|a, b| prefer(a, b)).unwrap();
                for t in tables.iter().filter(|t| ok(&t.leader)) {
                    prop_assert_ne!(prefer(t, chosen), Ordering::Greater);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Cluster simulation

/// One node's leadership state, as the I/O shell would keep it.
#[derive(Debug, Clone)]
struct Node {
    id: NodeId,
    priority: u8,
    can_lead: bool,
    /// Until a node has received the cluster's tables once, it does not
    /// offer itself as leader (the start-up gate the shell must implement).
    synced: bool,
    followed: Option<TableMeta>,
    own: Option<TableMeta>,
    highest: Option<TableMeta>,
}

impl Node {
    fn new(id: NodeId, priority: u8, can_lead: bool) -> Node {
        Node {
            id,
            priority,
            can_lead,
            synced: false,
            followed: None,
            own: None,
            highest: None,
        }
    }

    fn see(&mut self, m: &TableMeta) {
        if self
            .highest
            .as_ref()
            .is_none_or(|h| prefer(m, h) == Ordering::Greater)
        {
            self.highest = Some(m.clone());
        }
    }

    /// Receive a table; returns whether it is followed now. The rule of
    /// `Replica::apply`: a table is taken only if preferred to the one
    /// followed.
    fn receive(&mut self, m: &TableMeta) -> bool {
        self.see(m);
        let ok = self
            .followed
            .as_ref()
            .is_none_or(|c| prefer(m, c) == Ordering::Greater);
        if ok {
            self.followed = Some(m.clone());
        }
        ok
    }
}

struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// The view of node `i` when it can reach exactly `group`.
    fn view(&self, i: usize, group: &BTreeSet<usize>) -> Vec<Candidate> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(j, n)| Candidate {
                id: n.id.clone(),
                alive: group.contains(&j),
                can_lead: n.can_lead && (j != i || n.synced),
                priority: n.priority,
            })
            .collect()
    }

    /// One round within each group: every node that recognises itself
    /// publishes, then every node receives every published table and every
    /// table followed within its group (followers relay what they follow).
    /// Returns the publishers.
    fn round(&mut self, groups: &[BTreeSet<usize>]) -> BTreeSet<usize> {
        let mut publishers = BTreeSet::new();
        for group in groups {
            let mut published = Vec::new();
            for &i in group {
                let view = self.view(i, group);
                let n = &mut self.nodes[i];
                if recognised_leader(&view, n.followed.iter()).as_ref() == Some(&n.id) {
                    let m = next_meta(&n.id, n.highest.as_ref(), n.own.as_ref());
                    assert!(n.receive(&m), "a leader follows its own table");
                    n.own = Some(m.clone());
                    published.push(m);
                    publishers.insert(i);
                }
            }
            let relayed: Vec<_> = group
                .iter()
                .filter_map(|&i| self.nodes[i].followed.clone())
                .collect();
            for &i in group {
                for m in published.iter().chain(&relayed) {
                    self.nodes[i].receive(m);
                }
                self.nodes[i].synced = true;
            }
        }
        publishers
    }

    /// Every node in `group` follows the same table and recognises the same
    /// leader, which is that table's leader unless it is gone (then nobody
    /// may lead and the last table stays in force), and only that leader
    /// publishes.
    fn assert_settled(&mut self, group: &BTreeSet<usize>) -> Option<NodeId> {
        let publishers = self.round(std::slice::from_ref(group));
        let first = *group.first().unwrap();
        let table = self.nodes[first].followed.clone();
        let leader = recognised_leader(&self.view(first, group), table.iter());
        if let Some(l) = &leader {
            assert_eq!(table.as_ref().map(|m| &m.leader), Some(l));
        }
        for &i in group {
            assert_eq!(
                self.nodes[i].followed, table,
                "node {i} follows another table"
            );
            let view = self.view(i, group);
            assert_eq!(
                recognised_leader(&view, self.nodes[i].followed.iter()),
                leader
            );
        }
        let expected: BTreeSet<usize> = group
            .iter()
            .copied()
            .filter(|&i| Some(&self.nodes[i].id) == leader.as_ref())
            .collect();
        assert_eq!(publishers, expected);
        leader
    }
}

fn cluster_spec() -> impl Strategy<Value = Vec<(u8, bool)>> {
    prop::collection::vec((0u8..3, prop::bool::weighted(0.8)), 2..7)
}

fn make(spec: &[(u8, bool)]) -> Cluster {
    Cluster {
        nodes: spec
            .iter()
            .enumerate()
            .map(|(i, &(p, l))| Node::new(node(i), p, l))
            .collect(),
    }
}

fn all(n: usize) -> BTreeSet<usize> {
    (0..n).collect()
}

proptest! {
    /// From a cold start the cluster settles on the order's best node.
    #[test]
    fn cold_start_settles_on_the_best(spec in cluster_spec()) {
        let mut c = make(&spec);
        let everyone = all(spec.len());
        for _ in 0..3 {
            c.round(std::slice::from_ref(&everyone));
        }
        let leader = c.assert_settled(&everyone);
        let full: Vec<Candidate> = c.nodes.iter().map(|n| Candidate {
            id: n.id.clone(), alive: true, can_lead: n.can_lead, priority: n.priority,
        }).collect();
        prop_assert_eq!(leader, elect(&full, None));
    }

    /// A partition, then a heal: each side settles; after the heal everyone
    /// follows one table and exactly one node publishes, the leader of the
    /// more preferred side's table.
    #[test]
    fn partition_heal_converges(
        spec in cluster_spec(),
        side in prop::collection::vec(any::<bool>(), 7),
        rounds_apart in 1usize..4,
    ) {
        let n = spec.len();
        let mut c = make(&spec);
        let everyone = all(n);
        for _ in 0..3 {
            c.round(std::slice::from_ref(&everyone));
        }
        c.assert_settled(&everyone);
        let left: BTreeSet<usize> = (0..n).filter(|&i| side[i]).collect();
        let right: BTreeSet<usize> = (0..n).filter(|&i| !side[i]).collect();
        let groups: Vec<_> = [left, right].into_iter().filter(|g| !g.is_empty()).collect();
        for _ in 0..rounds_apart {
            c.round(&groups);
        }
        let winning_table = most_preferred(
            groups
                .iter()
                .filter_map(|g| c.nodes[*g.first().unwrap()].followed.as_ref()),
        )
        .cloned();
        for _ in 0..2 {
            c.round(std::slice::from_ref(&everyone));
        }
        let leader = c.assert_settled(&everyone);
        prop_assert_eq!(leader, winning_table.map(|m| m.leader));
    }

    /// Nodes joining a settled cluster, whatever their priority or hash,
    /// never change who leads, in any round.
    #[test]
    fn joining_nodes_never_change_the_leader(
        spec in cluster_spec(),
        joiners in prop::collection::vec((0u8..3, any::<bool>()), 1..3),
    ) {
        let mut full_spec = spec.clone();
        full_spec.extend(joiners.iter().map(|&(p, l)| (p.saturating_add(3), l)));
        let mut c = make(&full_spec);
        let old = all(spec.len());
        for _ in 0..3 {
            c.round(std::slice::from_ref(&old));
        }
        let leader = c.assert_settled(&old);
        // Without a leader there is no incumbent to keep; joiners may lead.
        prop_assume!(leader.is_some());
        let everyone = all(full_spec.len());
        for _ in 0..3 {
            let publishers = c.round(std::slice::from_ref(&everyone));
            for &i in &old {
                prop_assert_eq!(c.nodes[i].followed.as_ref().map(|m| &m.leader), leader.as_ref());
            }
            for &p in &publishers {
                prop_assert_eq!(Some(&c.nodes[p].id), leader.as_ref());
            }
        }
        prop_assert_eq!(c.assert_settled(&everyone), leader);
    }

    /// When the leader dies, the survivors settle on the best survivor, with
    /// a higher term.
    #[test]
    fn leader_death_elects_the_best_survivor(spec in cluster_spec()) {
        let mut c = make(&spec);
        let everyone = all(spec.len());
        for _ in 0..3 {
            c.round(std::slice::from_ref(&everyone));
        }
        let Some(leader) = c.assert_settled(&everyone) else { return Ok(()); };
        let old_term = c.nodes[0].followed.as_ref().unwrap().term;
        let dead = c.nodes.iter().position(|n| n.id == leader).unwrap();
        let survivors: BTreeSet<usize> = everyone.iter().copied().filter(|&i| i != dead).collect();
        for _ in 0..2 {
            c.round(std::slice::from_ref(&survivors));
        }
        let new_leader = c.assert_settled(&survivors);
        let view = c.view(*survivors.first().unwrap(), &survivors);
        prop_assert_eq!(&new_leader, &elect(&view, None));
        if new_leader.is_some() {
            let first = *survivors.first().unwrap();
            prop_assert!(c.nodes[first].followed.as_ref().unwrap().term > old_term);
        }
    }
}

// ---------------------------------------------------------------------------
// The partition-heal scenarios of the module docs, spelled out.

fn meta_of(term: u64, leader: &NodeId, version: u64) -> TableMeta {
    TableMeta {
        term: Term(term),
        leader: leader.clone(),
        version,
    }
}

/// The follower's rule (`Replica::apply`): a table is taken only if it is
/// preferred to the one followed.
fn follows(current: &TableMeta, incoming: &TableMeta) -> bool {
    prefer(incoming, current) == Ordering::Greater
}

fn all_alive(ids: &[&NodeId]) -> Vec<Candidate> {
    ids.iter()
        .map(|id| Candidate {
            id: (*id).clone(),
            alive: true,
            can_lead: true,
            priority: 1,
        })
        .collect()
}

/// `a` kept leading its side in term 4; `b` was elected on the other side in
/// term 5. After the heal every node, `a` included, follows `b`.
#[test]
fn heal_higher_term_wins_and_old_leader_steps_down() {
    let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
    let view = all_alive(&[&a, &b, &c]);
    let t_a = meta_of(4, &a, 17);
    let t_b = meta_of(5, &b, 2);
    // `a` follows its own table and receives `b`'s.
    let leader_at_a = recognised_leader(&view, [&t_a, &t_b]);
    assert_eq!(leader_at_a, Some(b.clone()));
    assert!(follows(&t_a, &t_b));
    // `c` followed `b`; `a`'s old table arrives late and is ignored.
    let leader_at_c = recognised_leader(&view, [&t_b, &t_a]);
    assert_eq!(leader_at_c, Some(b.clone()));
    assert!(!follows(&t_b, &t_a));
    // Having stepped down, `a` no longer elects itself.
    assert_eq!(recognised_leader(&view, [&t_b]), Some(b));
}

/// Both sides elected a new leader in the same term: the lower tie key wins on
/// both sides.
#[test]
fn heal_equal_terms_resolve_by_tie_key() {
    let (x, y) = (NodeId::new("x"), NodeId::new("y"));
    let (lo, hi) = if x.tie_key() < y.tie_key() {
        (x, y)
    } else {
        (y, x)
    };
    let view = all_alive(&[&lo, &hi]);
    let t_lo = meta_of(6, &lo, 0);
    let t_hi = meta_of(6, &hi, 9);
    for (mine, theirs) in [(&t_lo, &t_hi), (&t_hi, &t_lo)] {
        let leader = recognised_leader(&view, [mine, theirs]);
        assert_eq!(leader.as_ref(), Some(&lo));
        assert_eq!(follows(mine, theirs), theirs.leader == lo);
    }
}

/// A higher-term table whose leader has died in the meantime does not make
/// its leader the incumbent: the incumbent is the best table with a live
/// leader, whose next table supersedes the dead leader's.
#[test]
fn heal_ignores_tables_of_dead_leaders() {
    let (a, b, c) = (NodeId::new("a"), NodeId::new("b"), NodeId::new("c"));
    let mut view = all_alive(&[&a, &b, &c]);
    view[1].alive = false;
    let t_a = meta_of(4, &a, 0);
    let t_b = meta_of(5, &b, 0);
    let leader = recognised_leader(&view, [&t_a, &t_b]);
    assert_eq!(leader, Some(a.clone()));
    // The table itself ranks higher, so it is followed until `a`'s next.
    assert!(follows(&t_a, &t_b));
    // `a`'s next table starts a term above `b`'s, so nodes that followed `b`
    // switch to it.
    let next = next_meta(&a, Some(&t_b), Some(&t_a));
    assert_eq!(next.term, Term(6));
    assert_eq!(recognised_leader(&view, [&t_b, &next]), Some(a));
    assert!(follows(&t_b, &next));
}
