//! Addresses through rtnetlink, under a kernel lease.
//!
//! fechter never forks `ip`: every address change is one rtnetlink request
//! on a socket owned by [`Netlink`]. Addresses are installed with a *finite*
//! valid and preferred lifetime equal to the lease, so if the agent dies (or
//! hangs, or loses its netlink socket) the kernel itself removes the address
//! when the lease runs out; a live agent refreshes it with [`Netlink::renew`].
//!
//! IPv4 addresses carry the label `IFACE:fch` ([`AddrSpec::label`]) so that
//! `ip addr` shows which addresses fechter manages. IPv6 addresses get
//! `IFA_F_NODAD`, so they are usable at once instead of staying tentative for
//! duplicate address detection (the cluster, not DAD, decides who holds an
//! address).
//!
//! A netlink socket belongs to the network namespace of the thread that
//! created it: [`Netlink::connect`] and [`watch`] bind to the namespace of the
//! calling thread.
//!
//! Note on IPv4 secondaries: when the kernel removes a *primary* IPv4 address
//! (the first one of a subnet on an interface), it also removes the subnet's
//! secondaries unless `net.ipv4.conf.IFACE.promote_secondaries=1`. Floating
//! addresses in a subnet the interface does not otherwise have should use that
//! sysctl or host prefixes (`/32`).
//!
//! This file holds the types and the error mapping; `query.rs` lists links
//! and addresses, `addrs.rs` installs and removes them, `renew.rs` renews
//! leases in batches, `watcher.rs` watches for changes and `caps.rs` checks
//! capabilities.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use fechter_core::AddrSpec;
use rtnetlink::Handle;
use tokio::task::JoinHandle;

use crate::error::{PlatformError, errno_hint};
use crate::sys;

mod addrs;
mod caps;
mod query;
mod renew;
mod watcher;

pub use caps::{check_capabilities, check_privileges};
pub use renew::RENEW_BATCH;
pub use watcher::{drop_address_additions, watch};

/// The kernel's "forever" lifetime (`INFINITY_LIFE_TIME`).
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// Raw `IFA_F_*` address flag bits, as found in [`ObservedAddr::flags`].
pub mod addr_flags {
    /// `IFA_F_SECONDARY`: a secondary IPv4 address (or temporary IPv6).
    pub const SECONDARY: u32 = 0x01;
    /// `IFA_F_NODAD`: no duplicate address detection.
    pub const NODAD: u32 = 0x02;
    /// `IFA_F_DADFAILED`: duplicate address detection failed.
    pub const DADFAILED: u32 = 0x08;
    /// `IFA_F_DEPRECATED`: the preferred lifetime ran out.
    pub const DEPRECATED: u32 = 0x20;
    /// `IFA_F_TENTATIVE`: duplicate address detection still running.
    pub const TENTATIVE: u32 = 0x40;
    /// `IFA_F_PERMANENT`: no lifetime (configured without a lease).
    pub const PERMANENT: u32 = 0x80;
}

/// A handle on the kernel's address tables of one network namespace.
///
/// Owns an rtnetlink connection whose task runs on the tokio runtime that
/// called [`Netlink::connect`]; dropping the `Netlink` stops that task. Share
/// one `Netlink` by reference or `Arc`; all methods take `&self`.
pub struct Netlink {
    handle: Handle,
    conn_task: JoinHandle<()>,
    /// A datagram socket in the same namespace, for interface index lookups
    /// by ioctl (one syscall instead of a netlink round trip).
    lookup: OwnedFd,
    /// A plain netlink socket in the same namespace for batches of requests
    /// (renewals), handled by the kernel within the sending call.
    batch: OwnedFd,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

/// What [`Netlink::install`] or [`Netlink::renew`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The address was not on the interface and has been added.
    Created,
    /// The address was already there; its lifetimes were reset to the lease.
    Refreshed,
}

/// What [`Netlink::remove`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The address was on the interface and has been deleted.
    Deleted,
    /// The address (or its whole interface) was already gone.
    WasAbsent,
}

/// One address as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedAddr {
    /// Interface name (or `if{index}` if the link vanished meanwhile).
    pub iface: String,
    /// Interface index.
    pub index: u32,
    /// The address (IFA_LOCAL for IPv4, IFA_ADDRESS for IPv6).
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// IPv4 label (`eth0:fch` for addresses fechter installed); `None` for IPv6.
    pub label: Option<String>,
    /// `IFA_F_*` flag bits; see [`addr_flags`].
    pub flags: u32,
    /// Remaining valid lifetime; `None` = forever.
    pub valid_lifetime: Option<Duration>,
    /// Remaining preferred lifetime; `None` = forever.
    pub preferred_lifetime: Option<Duration>,
}

impl ObservedAddr {
    /// The address as an [`AddrSpec`] (unvalidated; built from kernel data).
    pub fn spec(&self) -> AddrSpec {
        AddrSpec {
            iface: self.iface.clone(),
            ip: self.ip,
            prefix: self.prefix,
        }
    }

    /// True if this is the address `spec` names (same interface, IP and prefix).
    pub fn matches(&self, spec: &AddrSpec) -> bool {
        self.iface == spec.iface && self.ip == spec.ip && self.prefix == spec.prefix
    }

    /// IPv6 duplicate address detection is still running: not usable yet.
    pub fn is_tentative(&self) -> bool {
        self.flags & addr_flags::TENTATIVE != 0
    }

    /// Configured without a lifetime.
    pub fn is_permanent(&self) -> bool {
        self.flags & addr_flags::PERMANENT != 0
    }

    /// Installed with `IFA_F_NODAD`.
    pub fn is_nodad(&self) -> bool {
        self.flags & addr_flags::NODAD != 0
    }

    /// Duplicate address detection found another holder.
    pub fn is_dad_failed(&self) -> bool {
        self.flags & addr_flags::DADFAILED != 0
    }

    /// The preferred lifetime ran out (the address is only valid).
    pub fn is_deprecated(&self) -> bool {
        self.flags & addr_flags::DEPRECATED != 0
    }
}

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub index: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// Hardware address, if it is a 6-byte (Ethernet) one.
    pub mac: Option<[u8; 6]>,
}

/// A change of links or addresses, from [`watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// An address disappeared: deleted by someone, expired, or its link went away.
    AddressRemoved {
        /// Interface name.
        iface: String,
        /// The address.
        ip: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// A link appeared or its admin state or carrier changed.
    LinkChanged {
        /// Interface name.
        iface: String,
        /// Administratively up (`IFF_UP`).
        up: bool,
        /// Carrier present (`IFF_LOWER_UP`).
        carrier: bool,
    },
    /// A link was deleted (its addresses are reported removed before this).
    LinkRemoved {
        /// Interface name.
        iface: String,
    },
    /// The kernel dropped notifications because the reader fell behind:
    /// some changes were lost, so re-read the state with [`Netlink::list`].
    Overrun,
}

/// Converts a lease into the kernel's whole-second lifetime (rounded up).
fn lease_secs(lease: Duration) -> Result<u32, PlatformError> {
    let secs = lease
        .as_secs()
        .saturating_add(u64::from(lease.subsec_nanos() > 0));
    if secs == 0 || secs >= u64::from(INFINITY_LIFE_TIME) {
        return Err(PlatformError::InvalidLease { lease });
    }
    Ok(secs as u32)
}

/// The positive errno of a netlink error answer, if it is one.
fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Maps a failed request to a [`PlatformError`] naming what was being done.
fn map_err(err: rtnetlink::Error, op: String, iface: &str, ipv6_add: bool) -> PlatformError {
    map_errno(errno_of(&err), op, iface, ipv6_add, || err.to_string())
}

/// [`map_err`] for a kernel error number (`None`: a protocol error, told
/// by `detail`).
fn map_errno(
    errno: Option<i32>,
    op: String,
    iface: &str,
    ipv6_add: bool,
    detail: impl FnOnce() -> String,
) -> PlatformError {
    match errno {
        Some(libc::ENODEV) => PlatformError::InterfaceNotFound(iface.to_owned()),
        Some(libc::EPERM) => PlatformError::PermissionDenied { op },
        Some(libc::EACCES) if ipv6_add => PlatformError::Ipv6Disabled {
            iface: iface.to_owned(),
        },
        Some(errno) => PlatformError::Netlink {
            op,
            errno,
            message: std::io::Error::from_raw_os_error(errno).to_string(),
            hint: errno_hint(errno),
        },
        None => PlatformError::NetlinkProtocol {
            op,
            detail: detail(),
        },
    }
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace and
    /// spawns its connection task on the current tokio runtime.
    ///
    /// # Panics
    /// If called outside a tokio runtime.
    pub async fn connect() -> Result<Netlink, PlatformError> {
        let (conn, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| PlatformError::Connect { source })?;
        // Opened before spawning anything, on this thread: same namespace.
        let lookup = sys::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)
            .map_err(|source| PlatformError::Connect { source })?;
        let batch = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)
            .map_err(|source| PlatformError::Connect { source })?;
        let conn_task = tokio::spawn(conn);
        Ok(Netlink {
            handle,
            conn_task,
            lookup,
            batch,
        })
    }

    /// The index of `iface`, or [`PlatformError::InterfaceNotFound`].
    pub fn index_of(&self, iface: &str) -> Result<u32, PlatformError> {
        sys::ifindex(&self.lookup, iface)
            .map_err(|e| PlatformError::NetlinkProtocol {
                op: format!("looking up interface {iface:?}"),
                detail: e.to_string(),
            })?
            .ok_or_else(|| PlatformError::InterfaceNotFound(iface.to_owned()))
    }
}

#[cfg(test)]
mod tests;
