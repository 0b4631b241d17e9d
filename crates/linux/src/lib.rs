//! # fechter-linux: the Linux platform of fechter
//!
//! | module | does |
//! |---|---|
//! | [`netlink`] | installs, renews and removes addresses through rtnetlink under a kernel lease; lists them; watches links and addresses; checks capabilities |
//! | [`announce`] | builds gratuitous ARP and unsolicited neighbour advertisements and sends them on a raw packet socket |
//! | [`wire`] | the wire as the lock: ARP probes / DAD solicitations before installing, claims of others heard on the link, the link's received-frame counter |
//! | [`lab`] | a network-namespace lab (switch, nodes, client) for tests and `fechter demo` |
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
