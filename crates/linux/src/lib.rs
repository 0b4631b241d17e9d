//! # fechter-linux: the Linux platform of fechter
//!
//! | module | does |
//! |---|---|
//! | [`netlink`] | installs, renews and removes addresses through rtnetlink under a kernel lease; lists them; watches links and addresses; checks capabilities |
//! | [`announce`] | builds gratuitous ARP and unsolicited neighbour advertisements and sends them on a raw packet socket |
//! | [`wire`] | the wire as the lock: ARP probes / DAD solicitations before installing, claims of others heard on the link, the link's received-frame counter |
//! | [`lab`] | a network-namespace lab (switch, nodes, client) for tests and `fechter demo` |
//!
//! It decides nothing: the `fechter` crate's `LinuxPlatform` executes the
//! plans the cluster crate's node makes, through the types here.
//!
//! ## The data path
//! For a plan the platform reads the interfaces ([`Netlink::list`]), installs
//! the plan's addresses at once with the lease ([`Netlink::install_many`]),
//! announces each on a task of its own ([`Announcer::burst`], spaced by
//! [`burst_schedule`]), renews 64 addresses to a netlink datagram
//! ([`Netlink::renew_many`]) and removes ([`Netlink::remove`]); between
//! plans it only renews. [`watch`] streams the kernel's link and address
//! changes ([`NetEvent`]) that wake the agent. On the wire, one
//! [`WireWatch`] per interface sends the probes before an install
//! ([`WireWatch::probe`]), reads other machines' claims
//! ([`WireWatch::drain`] yields [`Claim`]s) and the link's received-frame
//! counter ([`WireWatch::rx_frames`]), the segment's sign of life.
//!
//! ## Who owns which state
//! - [`Netlink`]: the rtnetlink connection (its task on the caller's tokio
//!   runtime), an ioctl socket for interface lookups and a plain netlink
//!   socket for batches (`netlink/mod.rs`; `query.rs` dumps, `addrs.rs`
//!   install and remove, `renew.rs` batched renewals, `watcher.rs` the
//!   watch, `caps.rs` privileges).
//! - [`Announcer`]: one raw `AF_PACKET` socket for GARP / unsolicited NA.
//! - [`WireWatch`]: two packet sockets on one interface (ARP; ICMPv6
//!   neighbour discovery behind a BPF filter), a netlink socket for the
//!   link's counters, and the count of malformed frames.
//! - [`lab::Lab`]: the namespaces of one lab, deleted on drop (`lab/mod.rs`
//!   the lab and its queries, `lab/run.rs` commands and namespace entry,
//!   `lab/topology.rs` building and link faults, `lab/ping.rs` the pinger).
//! - The kernel keeps the addresses themselves: each is installed with a
//!   finite lifetime (the lease), so it expires if the agent stops renewing.
//!
//! Everything here binds to the network namespace of the thread that opens
//! the socket; [`lab::block_on_in_ns`] runs async code inside a lab node.

pub mod announce;
pub mod error;
pub mod lab;
pub mod netlink;
mod sys;
pub mod wire;

pub use announce::{Announcer, BurstConfig, build_garp, build_unsolicited_na, burst_schedule};
pub use error::PlatformError;
pub use lab::{Lab, LabError, lab_available};
pub use netlink::{
    Applied, LinkInfo, NetEvent, Netlink, ObservedAddr, Removed, check_privileges, watch,
};
pub use wire::{
    Claim, ClaimKind, WireWatch, build_arp_probe, build_arp_request, build_dad_ns, parse_frame,
};
