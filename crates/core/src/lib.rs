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
