//! The wire as the lock (RFC 5227 / RFC 4862 duplicate address detection).
//!
//! Before a node installs an address it does not hold, it asks the segment
//! whether anyone else serves it ([`WireWatch::probe`]); while it holds one,
//! it notices other machines claiming it ([`WireWatch::drain`] yields a
//! [`Claim`]); and it can tell whether its segment shows any sign of life at
//! all ([`WireWatch::request`] to a neighbour, [`WireWatch::rx_frames`]).
//!
//! * IPv4: an ARP probe is a broadcast request with sender IP `0.0.0.0` and
//!   target IP the address; whoever holds the address answers with an ARP
//!   reply. Any ARP frame whose sender IP is an address says "this address is
//!   at this MAC".
//! * IPv6: a DAD neighbour solicitation comes from `::` to the address's
//!   solicited-node group; the holder answers with a neighbour advertisement
//!   to all nodes (`ff02::1`), which every host receives.
//!
//! [`WireWatch`] owns two non-blocking `AF_PACKET` sockets bound to one
//! interface: one for ARP (ethertype 0x0806) and one for IPv6 whose classic
//! BPF filter passes only ICMPv6 neighbour solicitations (135) and
//! advertisements (136) without extension headers (NDP never carries any).
//! Protocol-bound packet sockets do not see the frames this host sends.
//! Parsing ([`parse_frame`]) and frame building ([`build_arp_probe`],
//! [`build_arp_request`], [`build_dad_ns`]) are pure functions.
//!
//! Like every socket, the watch belongs to the network namespace of the
//! thread that opens it, and to the interface as it was then: reopen it when
//! the interface is recreated.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, IpNumber, LinkSlice, NetSlice,
    PacketBuilder, SlicedPacket, TransportSlice,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};

use crate::announce::{Announcer, BROADCAST_MAC};
use crate::error::PlatformError;
use crate::sys;

/// Minimum Ethernet frame length without FCS; shorter frames are zero-padded.
const ETH_ZLEN: usize = 60;
/// ICMPv6 types of neighbour solicitations and advertisements.
const ND_NS: u8 = 135;
const ND_NA: u8 = 136;
/// NDP option types: source / target link-layer address.
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// Most frames one [`WireWatch::drain`] reads from each socket, so that a
/// flood cannot hold the caller.
const DRAIN_LIMIT: usize = 4096;
/// Receive buffer: any frame up to a 9000-byte jumbo MTU fits.
const FRAME_BUF: usize = 16 * 1024;

/// Something a frame on the wire says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    /// The address claimed.
    pub ip: IpAddr,
    /// The MAC address of the claimant.
    pub mac: [u8; 6],
    /// Answer (someone has it) or probe (someone wants it).
    pub kind: ClaimKind,
}

/// What kind of claim a frame makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimKind {
    /// "`ip` is at `mac`": an ARP reply or request whose sender IP is `ip`
    /// (a gratuitous ARP counts); an IPv6 neighbour advertisement for target
    /// `ip` (MAC from its target link-layer address option, else the Ethernet
    /// source); or a neighbour solicitation sent *from* `ip` (MAC from its
    /// source link-layer address option, else the Ethernet source), the IPv6
    /// twin of an ARP request.
    Answer,
    /// Someone probes `ip` (ARP with sender IP 0.0.0.0, or a DAD neighbour
    /// solicitation from `::`): they want to take it.
    Probe,
}

/// The solicited-node multicast group of `ip`: `ff02::1:ffXX:XXXX` with the
/// low 24 bits of `ip`.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    let mut group = [0u8; 16];
    group[..2].copy_from_slice(&[0xff, 0x02]);
    group[11..13].copy_from_slice(&[0x01, 0xff]);
    group[13..].copy_from_slice(&o[13..]);
    Ipv6Addr::from(group)
}

/// The Ethernet address of IPv6 multicast group `group`: `33:33` + its low
/// 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn arp_frame(op: ArpOperation, mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &mac,
        &sender_ip.octets(),
        &[0; 6],
        &target_ip.octets(),
    )
    .expect("Ethernet/IPv4 ARP address lengths are fixed and valid");
    let mut frame = Vec::with_capacity(ETH_ZLEN);
    PacketBuilder::ethernet2(mac, BROADCAST_MAC)
        .arp(arp)
        .write(&mut frame)
        .expect("writing to a Vec cannot fail");
    frame.resize(frame.len().max(ETH_ZLEN), 0);
    frame
}

/// An RFC 5227 ARP probe for `ip` from `mac`: a broadcast ARP request with
/// sender `mac`/`0.0.0.0` and target `00:00:00:00:00:00`/`ip`, zero-padded
/// to 60 bytes.
pub fn build_arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(ArpOperation::REQUEST, mac, Ipv4Addr::UNSPECIFIED, ip)
}

/// An ordinary broadcast ARP request "who has `ip`? tell `from`" with sender
/// `mac`/`from` and target `00:00:00:00:00:00`/`ip`, zero-padded to 60 bytes.
pub fn build_arp_request(mac: [u8; 6], from: Ipv4Addr, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(ArpOperation::REQUEST, mac, from, ip)
}

/// A duplicate address detection neighbour solicitation for `ip` from `mac`.
///
/// Ethernet: `mac` → the MAC of `ip`'s solicited-node group
/// (`33:33:ff:XX:XX:XX`). IPv6: `::` → [`solicited_node`]`(ip)`, hop limit
/// 255. ICMPv6 type 135, code 0, target `ip`, no options (a solicitation
/// from `::` must not carry a source link-layer address); checksum over the
/// IPv6 pseudo-header.
pub fn build_dad_ns(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(ip);
    let builder = PacketBuilder::ethernet2(mac, multicast_mac(group))
        .ipv6(Ipv6Addr::UNSPECIFIED.octets(), group.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborSolicitation);
    let target = ip.octets();
    let mut frame = Vec::with_capacity(builder.size(target.len()));
    builder
        .write(&mut frame, &target)
        .expect("an NS payload is far below the IPv6 payload limit");
    frame
}

/// What `frame` (a whole Ethernet II frame) claims, if anything.
///
/// `None` for frames that claim nothing, for claims by `own_mac` (our own
/// frames) and for malformed frames; [`WireWatch`] tells the last apart and
/// counts them. Never panics.
pub fn parse_frame(frame: &[u8], own_mac: [u8; 6]) -> Option<Claim> {
    parse(frame, own_mac).ok().flatten()
}

/// A frame that is not a well-formed ARP, NS or NA.
struct Malformed;

/// `Ok(None)`: well-formed but claims nothing (or only for `own_mac`).
fn parse(frame: &[u8], own_mac: [u8; 6]) -> Result<Option<Claim>, Malformed> {
    let packet = SlicedPacket::from_ethernet(frame).map_err(|_| Malformed)?;
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        return Err(Malformed);
    };
    if !packet.link_exts.is_empty() {
        return Err(Malformed);
    }
    let eth_src = eth.source();
    if eth_src == own_mac {
        return Ok(None);
    }
    let claim = match &packet.net {
        Some(NetSlice::Arp(arp)) => {
            let arp = arp.to_packet().try_eth_ipv4().map_err(|_| Malformed)?;
            if arp.operation != ArpOperation::REQUEST && arp.operation != ArpOperation::REPLY {
                return Err(Malformed);
            }
            let (sender, target) = (arp.sender_ipv4_addr(), arp.target_ipv4_addr());
            if !sender.is_unspecified() {
                Claim {
                    ip: sender.into(),
                    mac: arp.sender_mac,
                    kind: ClaimKind::Answer,
                }
            } else if !target.is_unspecified() {
                Claim {
                    ip: target.into(),
                    mac: arp.sender_mac,
                    kind: ClaimKind::Probe,
                }
            } else {
                return Ok(None);
            }
        }
        Some(NetSlice::Ipv6(ip6)) => {
            let header = ip6.header();
            let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
                return Err(Malformed);
            };
            let (src, dst) = (header.source_addr(), header.destination_addr());
            // RFC 4861 7.1.1 / 7.1.2: hop limit 255, code 0, valid checksum.
            if header.hop_limit() != 255
                || header.next_header() != IpNumber::IPV6_ICMP
                || !ip6.extensions().is_empty()
                || icmp.code_u8() != 0
                || !icmp.is_checksum_valid(src.octets(), dst.octets())
            {
                return Err(Malformed);
            }
            let payload = icmp.payload();
            let target: [u8; 16] = payload
                .get(..16)
                .and_then(|t| t.try_into().ok())
                .ok_or(Malformed)?;
            let target = Ipv6Addr::from(target);
            if target.is_multicast() {
                return Err(Malformed);
            }
            let options = &payload[16..];
            match icmp.type_u8() {
                ND_NA => Claim {
                    ip: target.into(),
                    mac: ll_option(options, OPT_TARGET_LL)?.unwrap_or(eth_src),
                    kind: ClaimKind::Answer,
                },
                ND_NS if src.is_unspecified() => Claim {
                    ip: target.into(),
                    mac: eth_src,
                    kind: ClaimKind::Probe,
                },
                ND_NS if src.is_multicast() => return Err(Malformed),
                ND_NS => Claim {
                    ip: src.into(),
                    mac: ll_option(options, OPT_SOURCE_LL)?.unwrap_or(eth_src),
                    kind: ClaimKind::Answer,
                },
                _ => return Err(Malformed),
            }
        }
        _ => return Err(Malformed),
    };
    Ok((claim.mac != own_mac).then_some(claim))
}

/// The Ethernet address in the first NDP option of type `wanted`, checking
/// that every option is well-formed (RFC 4861 4.6: no zero lengths).
fn ll_option(mut options: &[u8], wanted: u8) -> Result<Option<[u8; 6]>, Malformed> {
    let mut found = None;
    while !options.is_empty() {
        let len = usize::from(*options.get(1).ok_or(Malformed)?) * 8;
        if len == 0 || len > options.len() {
            return Err(Malformed);
        }
        if options[0] == wanted && found.is_none() {
            found = Some(options[2..8].try_into().map_err(|_| Malformed)?);
        }
        options = &options[len..];
    }
    Ok(found)
}

/// One interface's view of the wire: two non-blocking `AF_PACKET` sockets
/// (ARP; ICMPv6 NS/NA) bound to the interface, and a netlink socket for its
/// counters. See the [module docs](self).
#[derive(Debug)]
pub struct WireWatch {
    iface: String,
    index: i32,
    mac: [u8; 6],
    arp: OwnedFd,
    nd: OwnedFd,
    netlink: OwnedFd,
    seq: AtomicU32,
    buf: Vec<u8>,
    malformed: u64,
}

impl WireWatch {
    /// Opens the sockets on `iface` in the calling thread's network namespace
    /// (needs CAP_NET_RAW). `iface` must be Ethernet-like
    /// ([`PlatformError::NotEthernet`] otherwise).
    pub fn open(iface: &str) -> Result<WireWatch, PlatformError> {
        let info = Announcer::new()?.interface(iface)?;
        let io_err = |op: &str, source| PlatformError::Io {
            op: op.into(),
            iface: iface.to_owned(),
            source,
            hint: "",
        };
        let arp = packet_socket(info.index, libc::ETH_P_ARP, &arp_filter())
            .map_err(|e| io_err("open an ARP socket", e))?;
        let nd = packet_socket(info.index, libc::ETH_P_IPV6, &nd_filter())
            .map_err(|e| io_err("open a neighbour discovery socket", e))?;
        let netlink = sys::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)
            .map_err(|source| PlatformError::Connect { source })?;
        // rx_frames must not hang on a lost answer.
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        sys::setsockopt(&netlink, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
            .map_err(|source| PlatformError::Connect { source })?;
        Ok(WireWatch {
            iface: iface.to_owned(),
            index: info.index,
            mac: info.mac,
            arp,
            nd,
            netlink,
            seq: AtomicU32::new(0),
            buf: vec![0; FRAME_BUF],
            malformed: 0,
        })
    }

    /// The interface watched.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface's MAC address (as it was when opened).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// How many received frames were malformed (since opening).
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Sends one probe for `ip`: IPv4 an ARP probe ([`build_arp_probe`]),
    /// IPv6 a DAD neighbour solicitation ([`build_dad_ns`]). For IPv6 the
    /// watch also joins `ip`'s solicited-node group at the link layer (for
    /// as long as it is open), so that others' DAD probes for `ip` reach it
    /// on interfaces that filter multicast.
    pub fn probe(&self, ip: IpAddr) -> Result<(), PlatformError> {
        match ip {
            IpAddr::V4(v4) => self.send(
                &self.arp,
                &build_arp_probe(self.mac, v4),
                &format!("send an ARP probe for {ip}"),
            ),
            IpAddr::V6(v6) => {
                let group = multicast_mac(solicited_node(v6));
                self.join(group).map_err(|source| PlatformError::Io {
                    op: format!("join the solicited-node group of {ip}"),
                    iface: self.iface.clone(),
                    source,
                    hint: "",
                })?;
                self.send(
                    &self.nd,
                    &build_dad_ns(self.mac, v6),
                    &format!("send a DAD neighbour solicitation for {ip}"),
                )
            }
        }
    }

    /// Sends an ordinary ARP request for `ip` from `from`
    /// ([`build_arp_request`]): its answer, from a neighbour (a peer, the
    /// gateway), is a sign of life of the segment.
    pub fn request(&self, from: Ipv4Addr, ip: Ipv4Addr) -> Result<(), PlatformError> {
        self.send(
            &self.arp,
            &build_arp_request(self.mac, from, ip),
            &format!("send an ARP request for {ip}"),
        )
    }

    /// Reads every frame queued now, without waiting (at most 4096 per
    /// socket and call), and appends what they claim to `out`. Returns how
    /// many frames were read. Frames this host sent and claims for our own
    /// MAC are skipped; malformed frames are skipped and counted
    /// ([`WireWatch::malformed`]). Receive errors (e.g. ENETDOWN once the
    /// link goes down) end the call; the next call reads on.
    pub fn drain(&mut self, out: &mut Vec<Claim>) -> usize {
        let mut frames = 0;
        for fd in [&self.arp, &self.nd] {
            for _ in 0..DRAIN_LIMIT {
                let Some((len, pkttype)) = recv_frame(fd, &mut self.buf) else {
                    break;
                };
                frames += 1;
                if pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let Some(frame) = self.buf.get(..len) else {
                    self.malformed += 1; // longer than the buffer
                    continue;
                };
                match parse(frame, self.mac) {
                    Ok(Some(claim)) => out.push(claim),
                    Ok(None) => {}
                    Err(Malformed) => self.malformed += 1,
                }
            }
        }
        frames
    }

    /// The interface's received-frame counter (`rx_packets` of the kernel's
    /// link statistics), read with an RTM_GETLINK request for this interface
    /// (`IFLA_STATS64`) on a netlink socket of the namespace the watch was
    /// opened in. One round trip to the kernel; waits at most 1 s.
    pub fn rx_frames(&self) -> Result<u64, PlatformError> {
        let op = || format!("reading the statistics of {:?}", self.iface);
        let protocol = |detail: String| PlatformError::NetlinkProtocol { op: op(), detail };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let mut msg = LinkMessage::default();
        msg.header.index = self.index as u32;
        let mut nl = NetlinkMessage::from(RouteNetlinkMessage::GetLink(msg));
        nl.header.flags = NLM_F_REQUEST;
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut req = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut req);
        sys::send(&self.netlink, &req).map_err(|e| protocol(e.to_string()))?;
        let mut rx = vec![0u8; 64 * 1024];
        // Bounded: replies to earlier requests that timed out are skipped.
        for _ in 0..64 {
            let (n, _) = sys::recv_from(&self.netlink, &mut rx, libc::MSG_TRUNC)
                .map_err(|e| protocol(e.to_string()))?;
            if n > rx.len() {
                return Err(protocol(format!("a {n}-byte answer did not fit")));
            }
            let mut at = 0;
            while at + 16 <= n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..n])
                    .map_err(|e| protocol(e.to_string()))?;
                at += (msg.header.length as usize).next_multiple_of(4).max(16);
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        return rx_packets(&link.attributes)
                            .ok_or_else(|| protocol("the answer has no statistics".into()));
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        let errno = e.code.map_or(0, |c| -c.get());
                        if errno == libc::ENODEV {
                            return Err(PlatformError::InterfaceNotFound(self.iface.clone()));
                        }
                        return Err(PlatformError::Netlink {
                            op: op(),
                            errno,
                            message: io::Error::from_raw_os_error(errno).to_string(),
                            hint: "",
                        });
                    }
                    _ => {}
                }
            }
        }
        Err(protocol("no answer to the request".into()))
    }

    /// Joins the link-layer multicast group `mac` on the ND socket.
    fn join(&self, mac: [u8; 6]) -> io::Result<()> {
        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = self.index;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&mac);
        sys::setsockopt(
            &self.nd,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        )
    }

    fn send(&self, fd: &OwnedFd, frame: &[u8], op: &str) -> Result<(), PlatformError> {
        // The socket is bound to the interface; the frame has its Ethernet header.
        let source = match sys::send(fd, frame) {
            Ok(n) if n == frame.len() => return Ok(()),
            Ok(n) => io::Error::other(format!("short send: {n} of {} bytes", frame.len())),
            Err(e) => e,
        };
        let hint = match source.raw_os_error() {
            Some(libc::ENETDOWN) => {
                "; the interface is down: bring it up with `ip link set IFACE up`"
            }
            Some(libc::ENXIO | libc::ENODEV) => "; the interface disappeared: reopen the watch",
            Some(libc::EAGAIN | libc::ENOBUFS) => "; the transmit queue is full, retry",
            _ => "",
        };
        Err(PlatformError::Io {
            op: op.to_owned(),
            iface: self.iface.clone(),
            source,
            hint,
        })
    }
}

/// `rx_packets` from `IFLA_STATS64`, else from the 32-bit `IFLA_STATS`.
fn rx_packets(attributes: &[LinkAttribute]) -> Option<u64> {
    let s64 = attributes.iter().find_map(|a| match a {
        LinkAttribute::Stats64(s) => Some(s.rx_packets),
        _ => None,
    });
    s64.or_else(|| {
        attributes.iter().find_map(|a| match a {
            LinkAttribute::Stats(s) => Some(u64::from(s.rx_packets)),
            _ => None,
        })
    })
}

/// A classic BPF instruction.
fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LDH: u32 = libc::BPF_LD | libc::BPF_H | libc::BPF_ABS;
const LDB: u32 = libc::BPF_LD | libc::BPF_B | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

/// Keeps Ethernet frames of type ARP. Offsets count from the Ethernet header.
fn arp_filter() -> Vec<libc::sock_filter> {
    vec![
        bpf(LDH, 0, 0, 12),
        bpf(JEQ, 0, 1, libc::ETH_P_ARP as u32),
        bpf(RET, 0, 0, u32::MAX),
        bpf(RET, 0, 0, 0),
    ]
}

/// Keeps IPv6 frames whose next header is ICMPv6 (58) of type 135 or 136.
fn nd_filter() -> Vec<libc::sock_filter> {
    vec![
        bpf(LDH, 0, 0, 12),
        bpf(JEQ, 0, 6, libc::ETH_P_IPV6 as u32),
        bpf(LDB, 0, 0, 14 + 6),
        bpf(JEQ, 0, 4, 58),
        bpf(LDB, 0, 0, 14 + 40),
        bpf(JEQ, 1, 0, u32::from(ND_NS)),
        bpf(JEQ, 0, 1, u32::from(ND_NA)),
        bpf(RET, 0, 0, u32::MAX),
        bpf(RET, 0, 0, 0),
    ]
}

/// A non-blocking raw packet socket receiving `protocol` on interface
/// `index` only, through `filter`. The filter is attached before the socket
/// is bound, so no unfiltered frame is ever queued.
fn packet_socket(
    index: i32,
    protocol: libc::c_int,
    filter: &[libc::sock_filter],
) -> io::Result<OwnedFd> {
    let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, 0)?;
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    sys::setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
    sys::bind_packet(&fd, index, protocol)?;
    Ok(fd)
}

/// One queued frame into `buf`: its full length (may exceed `buf`) and its
/// packet type (`PACKET_HOST`, `PACKET_OUTGOING`, ...). `None` when nothing
/// is queued or the socket reports an error.
fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, u8)> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
    let (len, from) = sys::recv_from(fd, buf, flags).ok()?;
    Some((len, from.sll_pkttype))
}

#[cfg(test)]
mod tests;
