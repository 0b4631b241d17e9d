//! Link and address queries, and decoding the kernel's link and address
//! messages into [`LinkInfo`] and [`ObservedAddr`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use fechter_core::AddrSpec;
use futures_util::stream::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::Handle;

use super::{INFINITY_LIFE_TIME, LinkInfo, Netlink, ObservedAddr, errno_of, map_err};
use crate::error::PlatformError;

pub(super) fn ip_of(msg: &AddressMessage) -> Option<IpAddr> {
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

pub(super) fn link_info(msg: &LinkMessage) -> LinkInfo {
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

pub(super) async fn dump_links(handle: &Handle) -> Result<Vec<LinkInfo>, PlatformError> {
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

pub(super) async fn link_by_index(handle: &Handle, index: u32) -> Option<LinkInfo> {
    let mut stream = handle.link().get().match_index(index).execute();
    let mut found = None;
    while let Ok(Some(msg)) = stream.try_next().await {
        found.get_or_insert_with(|| link_info(&msg));
    }
    found
}

impl Netlink {
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
