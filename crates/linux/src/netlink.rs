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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use fechter_core::AddrSpec;
use futures_util::stream::{StreamExt, TryStreamExt};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{PlatformError, errno_hint};
use crate::sys;

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

fn ip_of(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => return Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    address
}

fn lifetime(secs: u32) -> Option<Duration> {
    (secs != INFINITY_LIFE_TIME).then(|| Duration::from_secs(u64::from(secs)))
}

fn observed(msg: &AddressMessage, names: &HashMap<u32, String>) -> Option<ObservedAddr> {
    let ip = ip_of(msg)?;
    let index = msg.header.index;
    let mut flags = u32::from(msg.header.flags.bits());
    let mut label = None;
    let mut valid = None;
    let mut preferred = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Flags(f) => flags = f.bits(),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            AddressAttribute::CacheInfo(ci) => {
                valid = lifetime(ci.ifa_valid);
                preferred = lifetime(ci.ifa_preferred);
            }
            _ => {}
        }
    }
    Some(ObservedAddr {
        iface: names
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}")),
        index,
        ip,
        prefix: msg.header.prefix_len,
        label,
        flags,
        valid_lifetime: valid,
        preferred_lifetime: preferred,
    })
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut iface = format!("if{}", msg.header.index);
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => iface = name.clone(),
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => {}
        }
    }
    LinkInfo {
        iface,
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        mac,
    }
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

async fn dump_links(handle: &Handle) -> Result<Vec<LinkInfo>, PlatformError> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| map_err(e, "listing links".into(), "", false))?;
    Ok(msgs.iter().map(link_info).collect())
}

async fn dump_addrs(handle: &Handle) -> Result<Vec<AddressMessage>, PlatformError> {
    handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| map_err(e, "listing addresses".into(), "", false))
}

async fn link_by_index(handle: &Handle, index: u32) -> Option<LinkInfo> {
    let mut stream = handle.link().get().match_index(index).execute();
    let mut found = None;
    while let Ok(Some(msg)) = stream.try_next().await {
        found.get_or_insert_with(|| link_info(&msg));
    }
    found
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

    /// The link named `iface`, or [`PlatformError::InterfaceNotFound`].
    pub async fn link(&self, iface: &str) -> Result<LinkInfo, PlatformError> {
        let op = || format!("looking up interface {iface:?}");
        let mut stream = self.handle.link().get().match_name(iface).execute();
        let mut found = None;
        loop {
            match stream.try_next().await {
                Ok(Some(msg)) => {
                    found.get_or_insert_with(|| link_info(&msg));
                }
                Ok(None) => break,
                Err(e) if errno_of(&e) == Some(libc::EINVAL) && iface.len() > 15 => {
                    return Err(PlatformError::InterfaceNotFound(iface.to_owned()));
                }
                Err(e) => return Err(map_err(e, op(), iface, false)),
            }
        }
        found.ok_or_else(|| PlatformError::InterfaceNotFound(iface.to_owned()))
    }

    /// All links of this namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, PlatformError> {
        dump_links(&self.handle).await
    }

    /// Adds `spec` with valid and preferred lifetime `lease` (rounded up to
    /// whole seconds). If the address is already there, its lifetimes are
    /// reset instead, so installing is idempotent.
    pub async fn install(
        &self,
        spec: &AddrSpec,
        lease: Duration,
    ) -> Result<Applied, PlatformError> {
        self.apply(spec, lease).await
    }

    /// Resets the lifetimes of `spec` to `lease` (NLM_F_REPLACE). A missing
    /// address (expired, or deleted behind our back) is created again; the
    /// result says which happened.
    pub async fn renew(&self, spec: &AddrSpec, lease: Duration) -> Result<Applied, PlatformError> {
        self.apply(spec, lease).await
    }

    /// Installs every address of `specs` (as [`Netlink::install`]) with all
    /// requests in flight at once on the one netlink socket: a takeover of
    /// many addresses costs a few wake-ups instead of two round trips each.
    /// Results in the order of `specs`.
    pub async fn install_many(
        &self,
        specs: &[AddrSpec],
        lease: Duration,
    ) -> Vec<Result<Applied, PlatformError>> {
        futures_util::future::join_all(specs.iter().map(|s| self.apply(s, lease))).await
    }

    /// Renews the lease of every address of `specs` with one replace request
    /// each (created if missing), sent [`RENEW_BATCH`] at a time in one
    /// datagram on a plain netlink socket (the kernel handles them in the
    /// call and queues the acknowledgements). This is the periodic renewal
    /// of everything a node holds, so it must stay cheap with hundreds of
    /// addresses: one system call per batch instead of two per address.
    /// Results in the order of `specs`.
    pub async fn renew_many(
        &self,
        specs: &[AddrSpec],
        lease: Duration,
    ) -> Vec<Result<(), PlatformError>> {
        let secs = match lease_secs(lease) {
            Ok(secs) => secs,
            Err(_) => {
                return specs
                    .iter()
                    .map(|_| Err(PlatformError::InvalidLease { lease }))
                    .collect();
            }
        };
        let mut out: Vec<Result<(), PlatformError>> = Vec::with_capacity(specs.len());
        let mut batch: Vec<(usize, AddressMessage)> = Vec::new();
        // One lookup per interface, not per address (an ioctl each).
        let mut indexes: HashMap<&str, u32> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let index = match indexes.get(spec.iface.as_str()) {
                Some(index) => Ok(*index),
                None => self.index_of(&spec.iface).inspect(|index| {
                    indexes.insert(&spec.iface, *index);
                }),
            };
            match index {
                Ok(index) => {
                    let mut req = self.add_request(index, spec, secs, true);
                    batch.push((i, req.message_mut().clone()));
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        for chunk in batch.chunks(RENEW_BATCH) {
            let errnos = match send_batch(&self.batch, chunk.iter().map(|(_, m)| m)) {
                Ok(errnos) => errnos,
                Err(e) => vec![Some(e.raw_os_error().unwrap_or(libc::EIO)); chunk.len()],
            };
            for ((i, _), errno) in chunk.iter().zip(errnos) {
                if let Some(errno) = errno {
                    let spec = &specs[*i];
                    out[*i] = Err(map_errno(
                        Some(errno),
                        refresh_op(spec),
                        &spec.iface,
                        spec.ip.is_ipv6(),
                        String::new,
                    ));
                }
            }
        }
        out
    }

    /// One replace request: sets the lease of `spec` (created if missing).
    async fn refresh(&self, index: u32, spec: &AddrSpec, secs: u32) -> Result<(), PlatformError> {
        self.add_request(index, spec, secs, true)
            .execute()
            .await
            .map_err(|e| map_err(e, refresh_op(spec), &spec.iface, spec.ip.is_ipv6()))
    }

    /// Exclusive create first (tells us whether it was missing), then replace.
    async fn apply(&self, spec: &AddrSpec, lease: Duration) -> Result<Applied, PlatformError> {
        let secs = lease_secs(lease)?;
        let index = self.index_of(&spec.iface)?;
        match self.add_request(index, spec, secs, false).execute().await {
            Ok(()) => return Ok(Applied::Created),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(map_err(
                    e,
                    format!("adding {}/{} to {}", spec.ip, spec.prefix, spec.iface),
                    &spec.iface,
                    spec.ip.is_ipv6(),
                ));
            }
        }
        self.refresh(index, spec, secs).await?;
        Ok(Applied::Refreshed)
    }

    fn add_request(
        &self,
        index: u32,
        spec: &AddrSpec,
        secs: u32,
        replace: bool,
    ) -> rtnetlink::AddressAddRequest {
        let mut req = self.handle.address().add(index, spec.ip, spec.prefix);
        let msg = req.message_mut();
        let mut cache = CacheInfo::default();
        cache.ifa_valid = secs;
        cache.ifa_preferred = secs;
        msg.attributes.push(AddressAttribute::CacheInfo(cache));
        match spec.ip {
            IpAddr::V4(_) => {
                if let Some(label) = spec.label() {
                    msg.attributes.push(AddressAttribute::Label(label));
                }
            }
            IpAddr::V6(_) => {
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        if replace { req.replace() } else { req }
    }

    /// Deletes `spec`. An address that is not there (or whose interface is
    /// gone) counts as success: [`Removed::WasAbsent`].
    pub async fn remove(&self, spec: &AddrSpec) -> Result<Removed, PlatformError> {
        let index = match self.index_of(&spec.iface) {
            Ok(index) => index,
            Err(PlatformError::InterfaceNotFound(_)) => return Ok(Removed::WasAbsent),
            Err(e) => return Err(e),
        };
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(spec.ip);
        msg.header.prefix_len = spec.prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(spec.ip));
        if spec.ip.is_ipv4() {
            msg.attributes.push(AddressAttribute::Address(spec.ip));
        }
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(Removed::Deleted),
            Err(e)
                if matches!(
                    errno_of(&e),
                    Some(libc::EADDRNOTAVAIL | libc::ENODEV | libc::ENXIO)
                ) =>
            {
                Ok(Removed::WasAbsent)
            }
            Err(e) => Err(map_err(
                e,
                format!("deleting {}/{} from {}", spec.ip, spec.prefix, spec.iface),
                &spec.iface,
                false,
            )),
        }
    }

    /// All addresses on all links of this namespace.
    pub async fn list(&self) -> Result<Vec<ObservedAddr>, PlatformError> {
        let names: HashMap<u32, String> = dump_links(&self.handle)
            .await?
            .into_iter()
            .map(|l| (l.index, l.iface))
            .collect();
        let msgs = dump_addrs(&self.handle).await?;
        Ok(msgs.iter().filter_map(|m| observed(m, &names)).collect())
    }

    /// The kernel's view of `spec`, if it is on its interface.
    pub async fn find(&self, spec: &AddrSpec) -> Result<Option<ObservedAddr>, PlatformError> {
        Ok(self.list().await?.into_iter().find(|a| a.matches(spec)))
    }
}

/// Sends `msgs` as RTM_NEWADDR replace requests (created if missing) in one
/// netlink datagram on `fd`, and reads their acknowledgements, which the
/// kernel queued before the send returned. Returns each request's error
/// number (`None`: done), in order.
fn send_batch<'a>(
    fd: &OwnedFd,
    msgs: impl Iterator<Item = &'a AddressMessage>,
) -> std::io::Result<Vec<Option<i32>>> {
    use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
    let mut buf = Vec::new();
    let mut count = 0u32;
    for m in msgs {
        count += 1;
        let mut nl = NetlinkMessage::from(RouteNetlinkMessage::NewAddress(m.clone()));
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        nl.header.sequence_number = count;
        nl.finalize();
        let start = buf.len();
        buf.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut buf[start..]);
        // Every message starts 4-byte aligned (NLMSG_ALIGN).
        buf.resize(buf.len().next_multiple_of(4), 0);
    }
    let mut results = vec![None; count as usize];
    if count == 0 {
        return Ok(results);
    }
    let mut rx = vec![0u8; 64 * 1024];
    // Acknowledgements left over from a batch that failed half-way would
    // match this batch's sequence numbers: drop them first (bounded).
    for _ in 0..1024 {
        let n = recv_now(fd, &mut rx);
        if n < 0 {
            break;
        }
    }
    // SAFETY: sends a buffer this function owns on a socket the caller owns.
    let sent = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut acked = 0;
    // Bounded: every read consumes at least one queued acknowledgement.
    for _ in 0..=count {
        if acked == count {
            break;
        }
        let n = recv_now(fd, &mut rx);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut at = 0usize;
        while at < n as usize {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..n as usize])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let len = (msg.header.length as usize).next_multiple_of(4).max(16);
            let seq = msg.header.sequence_number;
            if let NetlinkPayload::Error(e) = msg.payload
                && (1..=count).contains(&seq)
            {
                results[seq as usize - 1] = e.code.map(|c| -c.get());
                acked += 1;
            }
            at += len;
        }
    }
    if acked < count {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{acked} of {count} renewals acknowledged"),
        ));
    }
    Ok(results)
}

/// What a renewal of `spec` is called in errors.
fn refresh_op(spec: &AddrSpec) -> String {
    format!(
        "refreshing the lease of {}/{} on {}",
        spec.ip, spec.prefix, spec.iface
    )
}

/// One datagram already queued on `fd` into `buf`: its length, or -1 (with
/// `errno` set; EAGAIN when none is queued). Never waits.
fn recv_now(fd: &OwnedFd, buf: &mut [u8]) -> isize {
    // SAFETY: reads into a buffer the caller owns, within its length.
    unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    }
}

/// Renewals per netlink datagram: the kernel queues one acknowledgement
/// (about 1 KiB of receive buffer) per request, and the default receive
/// buffer holds about 200.
pub const RENEW_BATCH: usize = 64;

/// What [`watch`] remembers to turn notifications into changes.
#[derive(Default)]
struct WatchState {
    links: HashMap<u32, LinkInfo>,
}

impl WatchState {
    async fn seed(&mut self, handle: &Handle) -> Result<(), PlatformError> {
        self.links = dump_links(handle)
            .await?
            .into_iter()
            .map(|l| (l.index, l))
            .collect();
        Ok(())
    }

    async fn name_of(&mut self, handle: &Handle, index: u32) -> String {
        if let Some(link) = self.links.get(&index) {
            return link.iface.clone();
        }
        match link_by_index(handle, index).await {
            Some(link) => {
                let name = link.iface.clone();
                self.links.insert(index, link);
                name
            }
            None => format!("if{index}"),
        }
    }

    /// Translates one notification; `None` if it changes nothing we report.
    async fn translate(
        &mut self,
        handle: &Handle,
        msg: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Option<NetEvent> {
        let inner = match msg.payload {
            NetlinkPayload::InnerMessage(inner) => inner,
            NetlinkPayload::Overrun(_) => {
                // Re-read the state so later changes are judged correctly.
                let _ = self.seed(handle).await;
                return Some(NetEvent::Overrun);
            }
            _ => return None,
        };
        match inner {
            RouteNetlinkMessage::NewLink(m) => {
                let info = link_info(&m);
                let changed = self
                    .links
                    .get(&info.index)
                    .is_none_or(|old| (old.up, old.carrier) != (info.up, info.carrier));
                let event = NetEvent::LinkChanged {
                    iface: info.iface.clone(),
                    up: info.up,
                    carrier: info.carrier,
                };
                self.links.insert(info.index, info);
                changed.then_some(event)
            }
            RouteNetlinkMessage::DelLink(m) => {
                let info = link_info(&m);
                let iface = self
                    .links
                    .remove(&info.index)
                    .map_or(info.iface, |l| l.iface);
                Some(NetEvent::LinkRemoved { iface })
            }
            RouteNetlinkMessage::DelAddress(m) => {
                let ip = ip_of(&m)?;
                let (index, prefix) = (m.header.index, m.header.prefix_len);
                let iface = self.name_of(handle, index).await;
                Some(NetEvent::AddressRemoved { iface, ip, prefix })
            }
            _ => None,
        }
    }
}

/// Attaches a classic BPF filter to the netlink socket `fd` that drops every
/// RTM_NEWADDR message (notification or reply) and keeps everything else.
/// (Public for its test.)
pub fn drop_address_additions(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // nlmsg_type is the u16 at offset 4 of the header, in host byte order;
    // BPF_LD|BPF_H loads it as big-endian, so compare with that reading.
    let newaddr = u16::from_be_bytes(libc::RTM_NEWADDR.to_ne_bytes());
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let mut program = [
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 4),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            u32::from(newaddr),
        ),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `program`, both alive across the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Aborts the connection task when the watch task ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Subscribes to link changes and address removals (RTNLGRP_LINK,
/// RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR) in the calling thread's network
/// namespace.
///
/// Address additions are not reported: the kernel notifies every change of
/// an address, each lease renewal included (hundreds a second on a node
/// holding hundreds of addresses), and the agent needs only removals, so a
/// socket filter drops RTM_NEWADDR in the kernel before it reaches this
/// process.
///
/// The returned channel yields [`NetEvent`]s until it is dropped (which stops
/// the background tasks). Changes are judged against the state read when the
/// watch starts, so the first events are real changes, not the current
/// state: read that with [`Netlink::list`] / [`Netlink::links`] after
/// subscribing. Events can be lost only as reported by [`NetEvent::Overrun`].
///
/// # Panics
/// If called outside a tokio runtime.
pub async fn watch() -> Result<mpsc::Receiver<NetEvent>, PlatformError> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ];
    let (mut conn, handle, mut messages) = rtnetlink::new_multicast_connection(&groups)
        .map_err(|source| PlatformError::Connect { source })?;
    drop_address_additions(conn.socket_mut().as_raw_fd())
        .map_err(|source| PlatformError::Connect { source })?;
    let conn_task = AbortOnDrop(tokio::spawn(conn));
    let mut state = WatchState::default();
    state.seed(&handle).await?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let _conn_task = conn_task;
        loop {
            let msg = tokio::select! {
                () = tx.closed() => return,
                msg = messages.next() => match msg {
                    Some((msg, _addr)) => msg,
                    None => return,
                },
            };
            if let Some(event) = state.translate(&handle, msg).await
                && tx.send(event).await.is_err()
            {
                return;
            }
        }
    });
    Ok(rx)
}

/// CAP_NET_ADMIN's bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;
/// CAP_NET_RAW's bit in the capability sets.
const CAP_NET_RAW: u32 = 13;

/// Checks that this process has CAP_NET_ADMIN (addresses) and CAP_NET_RAW
/// (announcements) in its effective set, read from `/proc/self/status`.
pub fn check_privileges() -> Result<(), PlatformError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| PlatformError::ProcStatus {
            detail: e.to_string(),
        })?;
    check_capabilities(&status)
}

/// [`check_privileges`] on the text of a `/proc/PID/status` file.
pub fn check_capabilities(status: &str) -> Result<(), PlatformError> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| PlatformError::ProcStatus {
            detail: "no CapEff line".into(),
        })?
        .trim();
    let caps = u64::from_str_radix(hex, 16).map_err(|_| PlatformError::ProcStatus {
        detail: format!("CapEff value {hex:?} is not hexadecimal"),
    })?;
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if !has(CAP_NET_ADMIN) {
        return Err(PlatformError::MissingCapability {
            capability: "CAP_NET_ADMIN",
            needed_for: "add and remove IP addresses through netlink",
        });
    }
    if !has(CAP_NET_RAW) {
        return Err(PlatformError::MissingCapability {
            capability: "CAP_NET_RAW",
            needed_for: "send gratuitous ARP and neighbour advertisements on a raw packet socket",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_rounded_up_to_whole_seconds() {
        assert_eq!(lease_secs(Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(lease_secs(Duration::from_millis(1)).unwrap(), 1);
        assert_eq!(lease_secs(Duration::from_millis(2500)).unwrap(), 3);
        assert_eq!(
            lease_secs(Duration::from_secs(u64::from(u32::MAX) - 1)).unwrap(),
            u32::MAX - 1
        );
        for bad in [Duration::ZERO, Duration::from_secs(u64::from(u32::MAX))] {
            let e = lease_secs(bad).unwrap_err();
            assert!(matches!(e, PlatformError::InvalidLease { .. }));
            assert!(e.to_string().contains("at least 1 s"), "{e}");
        }
    }

    #[test]
    fn capabilities_from_status() {
        let status =
            |eff: &str| format!("Name:\tfechter\nCapInh:\t0\nCapEff:\t{eff}\nCapBnd:\t0\n");
        // Root: everything.
        check_capabilities(&status("000001ffffffffff")).unwrap();
        // Exactly NET_ADMIN (bit 12) and NET_RAW (bit 13).
        check_capabilities(&status("0000000000003000")).unwrap();
        // Only NET_RAW.
        let e = check_capabilities(&status("0000000000002000")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
        assert!(
            msg.contains("setcap") && msg.contains("AmbientCapabilities"),
            "{msg}"
        );
        // Only NET_ADMIN.
        let e = check_capabilities(&status("0000000000001000")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("CAP_NET_RAW") && msg.contains("root"), "{msg}");
        // Garbage.
        assert!(matches!(
            check_capabilities("Name:\tx\n"),
            Err(PlatformError::ProcStatus { .. })
        ));
        assert!(matches!(
            check_capabilities(&status("zz")),
            Err(PlatformError::ProcStatus { .. })
        ));
    }

    #[test]
    fn check_privileges_reads_proc() {
        // Whatever we are, reading our own status must work and agree with euid 0.
        let r = check_privileges();
        if unsafe { libc::geteuid() } == 0 {
            r.unwrap();
        } else if let Err(e) = r {
            assert!(matches!(e, PlatformError::MissingCapability { .. }), "{e}");
        }
    }

    #[test]
    fn errors_name_problem_and_fix() {
        let e = PlatformError::InterfaceNotFound("eth9".into());
        assert!(e.to_string().contains("\"eth9\"") && e.to_string().contains("ip link"));
        let e = map_err(
            rtnetlink::Error::RequestFailed,
            "adding x".into(),
            "eth0",
            false,
        );
        assert!(matches!(e, PlatformError::NetlinkProtocol { .. }));
    }
}
