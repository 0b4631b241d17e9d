//! # fechter-core: the pure decision core
//!
//! Everything fechter *decides* lives here; nothing here *does* anything.
//! There is no tokio, no socket, no netlink, no clock and no OS randomness in
//! this crate (its `Cargo.toml` does not even depend on them). Time is passed in
//! as numbers, and effects come out as data ([`reconcile::Action`]) that the
//! I/O shell in the `fechter` crate executes.
//!
//! | module | decides |
//! |---|---|
//! | [`node`] | node identity and the stable 64-bit FNV-1a hash used for tie-breaks |
//! | [`addr`] | address specs `IFACE:IP[/PREFIX]`: parse, validate, print |
//! | [`alloc`] | where every address goes: holder and standby per address |
//! | [`claim`] | the wire as the lock: when an address is free to take, what a node without a majority serves, who keeps an address two machines answer for |
//! | [`failover`] | who is eligible (maturity, fail-static), standby takeovers, make-before-break hand-offs |
//! | [`leader`] | who leads, terms, and which of two tables a node follows |
//! | [`state`] | the replicated address list: a last-writer-wins map on a hybrid logical clock |
//! | [`reconcile`] | what this node must do to its interfaces, as ordered [`reconcile::Action`]s |
//! | [`replica`] | the whole replicated state (node records, address list, table) and its merge |
//! | [`wire`] | the packets inside a sealed datagram, and splitting large state into packets |
//!
//! ## The data path
//! The cluster crate's engine decodes a datagram's plaintext with
//! [`wire::decode`] into a [`wire::Packet`]; node records, address entries
//! and tables ([`replica::Item`]) merge into the [`replica::Replica`] with
//! [`replica::Replica::apply`] (address entries last-writer-wins on their
//! [`state::Stamp`]), and table parts are put back together by
//! [`wire::TableAssembler`]. The leader is found by
//! [`leader::recognised_leader`]; it rates the nodes with
//! [`failover::eligibility`], places the addresses with
//! [`failover::allocate_by_interface`] (over [`alloc::allocate`]), marks
//! planned moves with [`failover::mark_handoffs`] and numbers the new table
//! with [`leader::next_meta`]. A standby applies takeovers to the followed
//! table with [`failover::apply_takeovers`]; a minority adds
//! [`claim::orphans_to_live`]. Before installing, [`claim::verdict`] says
//! whether probes showed an address free, and [`claim::on_conflict`] who
//! keeps an address two machines answer for. Finally
//! [`reconcile::plan`] turns the allocation and the machine's
//! [`reconcile::LocalView`] into [`reconcile::Action`]s, and
//! [`wire::encode`], [`wire::pack_replica`] and [`wire::pack_table`] turn
//! what goes out back into packets.
//!
//! ## Who owns which state
//! Nothing here keeps state between calls on its own; the types it defines
//! are held by the cluster crate's engine and node:
//! - [`replica::Replica`]: the replicated state: every node's
//!   [`replica::NodeRecord`], the [`state::AddressList`] (address entries
//!   stamped with a hybrid logical clock, [`state::Hlc`]) and the followed
//!   [`replica::Table`] ([`leader::TableMeta`]: term, leader, version, with
//!   an [`alloc::Allocation`]);
//! - [`wire::TableAssembler`]: the one table whose parts are still
//!   arriving;
//! - [`reconcile::LocalView`]: what the machine has (observed, installed,
//!   unproven, announced), built by the caller for each plan.

pub mod addr;
pub mod alloc;
pub mod allowed;
pub mod claim;
pub mod failover;
pub mod leader;
pub mod node;
pub mod reconcile;
pub mod replica;
pub mod state;
pub mod wire;

pub use addr::{AddrSpec, AddrSpecError};
pub use alloc::{Allocation, Placement, allocate};
pub use node::NodeId;
