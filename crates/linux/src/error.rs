//! [`PlatformError`]: everything that can go wrong talking to the kernel.
//!
//! Every message names the problem and says how to fix it.

use std::io;
use std::time::Duration;

/// The fix for a missing capability, shared by several messages.
pub(crate) const CAP_FIX: &str = "run fechter as root, or grant the capabilities to the binary with \
     `setcap cap_net_admin,cap_net_raw+ep /path/to/fechter`, or in its systemd unit with \
     `AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW` (plus the same in `CapabilityBoundingSet=`)";

/// An error from the Linux platform layer (netlink, raw sockets, capabilities).
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The named interface does not exist in this network namespace.
    #[error(
        "interface {0:?} not found in this network namespace: check the interface name in the address spec against `ip link` (interface names are case-sensitive; a renamed or unplugged interface disappears)"
    )]
    InterfaceNotFound(String),

    /// The effective capability set lacks a capability fechter needs.
    #[error("missing capability {capability} (needed to {needed_for}): {CAP_FIX}")]
    MissingCapability {
        /// `CAP_NET_ADMIN` or `CAP_NET_RAW`.
        capability: &'static str,
        /// What the capability is needed for.
        needed_for: &'static str,
    },

    /// The kernel refused an operation with EPERM.
    #[error("permission denied while {op}: the kernel requires CAP_NET_ADMIN for this; {CAP_FIX}")]
    PermissionDenied {
        /// What was being done, e.g. `adding 198.51.100.10/24 to eth0`.
        op: String,
    },

    /// IPv6 is disabled on the interface, so no IPv6 address can be added.
    #[error(
        "cannot add an IPv6 address to {iface:?}: IPv6 is disabled on it; enable it with `sysctl -w net.ipv6.conf.{iface}.disable_ipv6=0` (and net.ipv6.conf.all.disable_ipv6=0), or remove the IPv6 address from the configuration"
    )]
    Ipv6Disabled {
        /// The interface.
        iface: String,
    },

    /// A lease that the kernel cannot express.
    #[error(
        "invalid lease {lease:?}: the kernel counts address lifetimes in whole seconds, so the lease must be at least 1 s and below 136 years; configure a lease of a few seconds"
    )]
    InvalidLease {
        /// The lease that was asked for.
        lease: Duration,
    },

    /// The netlink socket could not be opened.
    #[error(
        "cannot open a netlink route socket: {source}; fechter needs Linux with rtnetlink (a container may need --cap-add NET_ADMIN, or a seccomp profile that allows AF_NETLINK sockets)"
    )]
    Connect {
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The kernel answered a netlink request with an error.
    #[error("kernel refused {op}: {message} (errno {errno}){hint}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The positive errno.
        errno: i32,
        /// The OS's text for the errno.
        message: String,
        /// Extra advice for well-known errnos, empty or starting with `; `.
        hint: &'static str,
    },

    /// The netlink conversation itself failed (socket closed, unexpected answer).
    #[error(
        "netlink request failed while {op}: {detail}; this is a bug or the netlink connection was closed: restart fechter"
    )]
    NetlinkProtocol {
        /// What was being done.
        op: String,
        /// What went wrong.
        detail: String,
    },

    /// /proc/self/status could not be read or has no CapEff line.
    #[error(
        "cannot read the effective capabilities from /proc/self/status: {detail}; make sure /proc is mounted (fechter only runs on Linux)"
    )]
    ProcStatus {
        /// What went wrong.
        detail: String,
    },

    /// A raw packet socket (for ARP / neighbour advertisements) could not be opened.
    #[error(
        "cannot open a raw packet socket for announcements: {source}; this needs CAP_NET_RAW: {CAP_FIX}"
    )]
    PacketSocket {
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The interface is not an Ethernet interface, so ARP / NDP frames cannot be built.
    #[error(
        "interface {iface:?} is not an Ethernet interface (hardware type {hw_type}): fechter announces addresses with Ethernet ARP / neighbour advertisements, so put the address on an Ethernet (or veth, bridge, bond, VLAN) interface"
    )]
    NotEthernet {
        /// The interface.
        iface: String,
        /// The ARPHRD_* hardware type the kernel reported.
        hw_type: u16,
    },

    /// Sending or preparing an announcement frame failed.
    #[error("cannot {op} on interface {iface:?}: {source}{hint}")]
    Io {
        /// What was being done, e.g. `send a gratuitous ARP for 198.51.100.10`.
        op: String,
        /// The interface.
        iface: String,
        /// The OS error.
        #[source]
        source: io::Error,
        /// Extra advice, empty or starting with `; `.
        hint: &'static str,
    },
}

impl PlatformError {
    /// True if this error means "the interface does not exist".
    pub fn is_interface_not_found(&self) -> bool {
        matches!(self, PlatformError::InterfaceNotFound(_))
    }
}

/// Advice for errnos the kernel returns to address requests.
pub(crate) fn errno_hint(errno: i32) -> &'static str {
    match errno {
        libc::EEXIST => {
            "; the address already exists on the interface (possibly with another prefix length)"
        }
        libc::EINVAL => {
            "; the kernel rejected the request as invalid (check the prefix length and, for IPv4, that the interface name plus ':fch' label is valid)"
        }
        libc::EADDRNOTAVAIL => "; the address is not on the interface",
        libc::ENETDOWN => "; the interface is down: bring it up with `ip link set IFACE up`",
        libc::ENOBUFS | libc::ENOMEM => "; the kernel is out of memory, retry later",
        _ => "",
    }
}
