//! Watching links and address removals: [`watch`].

use std::collections::HashMap;
use std::os::fd::AsRawFd;

use futures_util::stream::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::query::{dump_links, ip_of, link_by_index, link_info};
use super::{LinkInfo, NetEvent};
use crate::error::PlatformError;

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
///
/// [`Netlink::list`]: super::Netlink::list
/// [`Netlink::links`]: super::Netlink::links
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
