//! Installing and removing addresses: one request (or two) per address.

use std::net::IpAddr;
use std::time::Duration;

use fechter_core::AddrSpec;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo,
};

use super::renew::refresh_op;
use super::{Applied, Netlink, Removed, errno_of, lease_secs, map_err};
use crate::error::PlatformError;

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

impl Netlink {
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

    pub(super) fn add_request(
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
}
