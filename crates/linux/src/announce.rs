//! Announcements: gratuitous ARP (IPv4) and unsolicited neighbour
//! advertisements (IPv6), sent on a raw `AF_PACKET` socket.
//!
//! When an address moves to this node, the hosts on the link still map it to
//! the previous holder's MAC address. An announcement tells them the new
//! mapping at once:
//!
//! * IPv4: a broadcast ARP *request* with sender IP = target IP = the address
//!   ("gratuitous ARP"). Linux ignores ARP replies that arrive within
//!   `locktime` (1 s) of the last update of a neighbour entry, but always
//!   accepts a gratuitous request.
//! * IPv6: an ICMPv6 neighbour advertisement to all nodes (`ff02::1`) with the
//!   Override flag set and Solicited clear, carrying the Target Link-Layer
//!   Address option.
//!
//! Frames are built by the pure functions [`build_garp`] and
//! [`build_unsolicited_na`]; [`Announcer`] sends them, and [`burst_schedule`]
//! spaces a takeover burst so that a lost frame is repeated.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Icmpv6Type, PacketBuilder,
    icmpv6::NeighborAdvertisementHeader,
};

use crate::error::PlatformError;
use crate::sys;

/// Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// All-nodes multicast address `ff02::1`.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Ethernet address of `ff02::1` (`33:33` + the low 32 bits).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// Minimum Ethernet frame length without FCS; shorter frames are zero-padded.
const ETH_ZLEN: usize = 60;
/// NDP option type "Target Link-Layer Address".
const OPT_TARGET_LL_ADDR: u8 = 2;

/// A gratuitous ARP request announcing that `ip` is at `mac`.
///
/// Ethernet: `mac` → `ff:ff:ff:ff:ff:ff`, type ARP. ARP: Ethernet/IPv4,
/// opcode 1 (request), sender `mac`/`ip`, target `00:00:00:00:00:00`/`ip`.
/// Zero-padded to the 60-byte Ethernet minimum.
pub fn build_garp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &mac,
        &ip.octets(),
        &[0; 6],
        &ip.octets(),
    )
    .expect("Ethernet/IPv4 ARP address lengths are fixed and valid");
    let builder = PacketBuilder::ethernet2(mac, BROADCAST_MAC).arp(arp);
    let mut frame = Vec::with_capacity(ETH_ZLEN);
    builder
        .write(&mut frame)
        .expect("writing to a Vec cannot fail");
    frame.resize(frame.len().max(ETH_ZLEN), 0);
    frame
}

/// An unsolicited neighbour advertisement announcing that `ip` is at `mac`.
///
/// Ethernet: `mac` → `33:33:00:00:00:01`. IPv6: `ip` → `ff02::1`, hop limit
/// 255. ICMPv6 type 136, code 0, flags Override (Router and Solicited clear),
/// target `ip`, option Target Link-Layer Address = `mac`; checksum over the
/// IPv6 pseudo-header.
pub fn build_unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let header = NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    };
    let builder = PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(ip.octets(), ALL_NODES.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(header));
    // Target address, then the option: type, length in units of 8 bytes, MAC.
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&ip.octets());
    payload.extend_from_slice(&[OPT_TARGET_LL_ADDR, 1]);
    payload.extend_from_slice(&mac);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut frame, &payload)
        .expect("an NA payload is far below the IPv6 payload limit");
    frame
}

/// When to send announcements after taking over an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BurstConfig {
    /// Offsets from the takeover, in any order; duplicates are sent once.
    pub offsets: Vec<Duration>,
}

impl Default for BurstConfig {
    /// At once, then at 100 ms, 500 ms and 2 s.
    fn default() -> Self {
        BurstConfig {
            offsets: vec![
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(2),
            ],
        }
    }
}

/// The offsets of a takeover burst, sorted, without duplicates.
pub fn burst_schedule(config: &BurstConfig) -> Vec<Duration> {
    let mut offsets = config.offsets.clone();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// Sends announcement frames on a raw `AF_PACKET` socket.
///
/// The socket is opened by [`Announcer::new`] in the calling thread's network
/// namespace and only sends (protocol 0: it receives nothing). Each frame is
/// sent with `sendto` to a `sockaddr_ll` naming the interface index, which
/// binds that one frame to the interface, so one socket serves every
/// interface and an interface that is recreated is found again by name.
#[derive(Debug)]
pub struct Announcer {
    fd: OwnedFd,
}

/// An interface's index and MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iface {
    /// Interface index.
    pub index: i32,
    /// Ethernet address.
    pub mac: [u8; 6],
}

impl Announcer {
    /// Opens the raw packet socket (needs CAP_NET_RAW).
    pub fn new() -> Result<Announcer, PlatformError> {
        let fd = sys::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, 0)
            .map_err(|source| PlatformError::PacketSocket { source })?;
        Ok(Announcer { fd })
    }

    /// Index and MAC address of `iface` (which must be Ethernet-like).
    pub fn interface(&self, iface: &str) -> Result<Iface, PlatformError> {
        let ioctl = |request: libc::c_ulong| -> Result<libc::ifreq, PlatformError> {
            sys::if_ioctl(&self.fd, iface, request)
                .map_err(|source| PlatformError::Io {
                    op: "look up the interface".into(),
                    iface: iface.to_owned(),
                    source,
                    hint: "",
                })?
                .ok_or_else(|| PlatformError::InterfaceNotFound(iface.to_owned()))
        };
        let req = ioctl(libc::SIOCGIFINDEX)?;
        // SAFETY: SIOCGIFINDEX filled in the ifindex member of the union.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        let req = ioctl(libc::SIOCGIFHWADDR)?;
        // SAFETY: SIOCGIFHWADDR filled in the hwaddr member of the union.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        if hw.sa_family != libc::ARPHRD_ETHER {
            return Err(PlatformError::NotEthernet {
                iface: iface.to_owned(),
                hw_type: hw.sa_family,
            });
        }
        let mut mac = [0u8; 6];
        for (dst, src) in mac.iter_mut().zip(hw.sa_data.iter()) {
            *dst = *src as u8;
        }
        Ok(Iface { index, mac })
    }

    /// Sends one gratuitous ARP for `ip` on `iface`.
    pub fn send_garp(&self, iface: &str, ip: Ipv4Addr) -> Result<(), PlatformError> {
        let info = self.interface(iface)?;
        let frame = build_garp(info.mac, ip);
        self.send(info.index, libc::ETH_P_ARP, BROADCAST_MAC, &frame)
            .map_err(|(source, hint)| PlatformError::Io {
                op: format!("send a gratuitous ARP for {ip}"),
                iface: iface.to_owned(),
                source,
                hint,
            })
    }

    /// Sends one unsolicited neighbour advertisement for `ip` on `iface`.
    pub fn send_na(&self, iface: &str, ip: Ipv6Addr) -> Result<(), PlatformError> {
        let info = self.interface(iface)?;
        let frame = build_unsolicited_na(info.mac, ip);
        self.send(info.index, libc::ETH_P_IPV6, ALL_NODES_MAC, &frame)
            .map_err(|(source, hint)| PlatformError::Io {
                op: format!("send a neighbour advertisement for {ip}"),
                iface: iface.to_owned(),
                source,
                hint,
            })
    }

    /// Sends the announcement for `ip`'s family: GARP or NA.
    pub fn announce(&self, iface: &str, ip: IpAddr) -> Result<(), PlatformError> {
        match ip {
            IpAddr::V4(v4) => self.send_garp(iface, v4),
            IpAddr::V6(v6) => self.send_na(iface, v6),
        }
    }

    /// Sends a takeover burst: one announcement at each offset of `schedule`
    /// (from [`burst_schedule`]), measured from the call. Returns how many
    /// were sent. Stop the burst early by dropping the future (e.g. when the
    /// address is lost again). Needs a tokio runtime with timers.
    pub async fn burst(
        &self,
        iface: &str,
        ip: IpAddr,
        schedule: &[Duration],
    ) -> Result<usize, PlatformError> {
        let start = tokio::time::Instant::now();
        let mut sent = 0;
        for offset in schedule {
            tokio::time::sleep_until(start + *offset).await;
            self.announce(iface, ip)?;
            sent += 1;
        }
        Ok(sent)
    }

    fn send(
        &self,
        index: i32,
        protocol: libc::c_int,
        dst: [u8; 6],
        frame: &[u8],
    ) -> Result<(), (io::Error, &'static str)> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (protocol as u16).to_be();
        addr.sll_ifindex = index;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst);
        // SAFETY: frame and addr are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            let hint = match err.raw_os_error() {
                Some(libc::ENETDOWN) => {
                    "; the interface is down: bring it up with `ip link set IFACE up`"
                }
                Some(libc::ENXIO | libc::ENODEV) => "; the interface disappeared",
                Some(libc::EAGAIN) => {
                    "; the interface's transmit queue is full, the next announcement of the burst will retry"
                }
                Some(libc::EPERM | libc::EACCES) => {
                    "; this needs CAP_NET_RAW: run as root or grant it (setcap / systemd AmbientCapabilities)"
                }
                _ => "",
            };
            return Err((err, hint));
        }
        if rc as usize != frame.len() {
            return Err((
                io::Error::other(format!("short send: {rc} of {} bytes", frame.len())),
                "",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn garp_fields() {
        let ip = Ipv4Addr::new(198, 18, 0, 50);
        let frame = build_garp(MAC, ip);
        assert_eq!(frame.len(), 60, "padded to the Ethernet minimum");
        assert!(frame[42..].iter().all(|&b| b == 0), "padding is zeros");

        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
            panic!("not Ethernet II: {:?}", packet.link);
        };
        assert_eq!(eth.destination(), BROADCAST_MAC);
        assert_eq!(eth.source(), MAC);
        assert_eq!(eth.ether_type(), EtherType::ARP);

        let Some(NetSlice::Arp(arp)) = &packet.net else {
            panic!("not ARP: {:?}", packet.net);
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(arp.sender_mac, MAC);
        assert_eq!(arp.sender_ipv4_addr(), ip);
        assert_eq!(arp.target_mac, [0; 6]);
        assert_eq!(arp.target_ipv4_addr(), ip);

        // The raw bytes, independently of etherparse.
        assert_eq!(&frame[12..14], &[0x08, 0x06], "ethertype ARP");
        assert_eq!(&frame[14..16], &[0, 1], "hardware type Ethernet");
        assert_eq!(&frame[16..18], &[0x08, 0x00], "protocol type IPv4");
        assert_eq!(&frame[18..20], &[6, 4], "address lengths");
        assert_eq!(&frame[20..22], &[0, 1], "opcode request");
    }

    #[test]
    fn na_fields_and_checksum() {
        let ip: Ipv6Addr = "2001:db8::50".parse().unwrap();
        let frame = build_unsolicited_na(MAC, ip);
        assert_eq!(frame.len(), 14 + 40 + 8 + 16 + 8);

        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
            panic!("not Ethernet II: {:?}", packet.link);
        };
        assert_eq!(eth.destination(), ALL_NODES_MAC);
        assert_eq!(eth.source(), MAC);
        assert_eq!(eth.ether_type(), EtherType::IPV6);

        let Some(NetSlice::Ipv6(ip6)) = &packet.net else {
            panic!("not IPv6: {:?}", packet.net);
        };
        let h = ip6.header();
        assert_eq!(h.source_addr(), ip);
        assert_eq!(h.destination_addr(), ALL_NODES);
        assert_eq!(h.hop_limit(), 255);
        assert_eq!(h.next_header(), etherparse::IpNumber::IPV6_ICMP);
        assert_eq!(usize::from(h.payload_length()), 8 + 16 + 8);

        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("not ICMPv6: {:?}", packet.transport);
        };
        assert_eq!(icmp.type_u8(), 136);
        assert_eq!(icmp.code_u8(), 0);
        let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
            panic!("not an NA: {:?}", icmp.icmp_type());
        };
        assert!(flags.r#override && !flags.solicited && !flags.router);
        assert_eq!(
            icmp.bytes5to8(),
            [0x20, 0, 0, 0],
            "only O set, reserved zero"
        );
        assert!(icmp.is_checksum_valid(ip.octets(), ALL_NODES.octets()));

        let payload = icmp.payload();
        assert_eq!(&payload[..16], &ip.octets(), "target address");
        assert_eq!(payload[16], OPT_TARGET_LL_ADDR, "option type");
        assert_eq!(payload[17], 1, "option length in 8-byte units");
        assert_eq!(&payload[18..24], &MAC, "target link-layer address");

        // Independent checksum: RFC 4443 pseudo-header sum over the ICMPv6 part.
        let icmp_bytes = &frame[54..];
        assert_eq!(internet_checksum(ip, ALL_NODES, icmp_bytes), 0);

        // A single flipped bit breaks it.
        let mut bad = frame.clone();
        bad[60] ^= 0x01;
        let packet = SlicedPacket::from_ethernet(&bad).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!();
        };
        assert!(!icmp.is_checksum_valid(ip.octets(), ALL_NODES.octets()));
    }

    /// One's complement sum over the IPv6 pseudo-header and `data`; 0 when
    /// `data` carries a correct checksum.
    fn internet_checksum(src: Ipv6Addr, dst: Ipv6Addr, data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut add = |bytes: &[u8]| {
            for chunk in bytes.chunks(2) {
                let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
                sum += u32::from(word);
            }
        };
        add(&src.octets());
        add(&dst.octets());
        add(&(data.len() as u32).to_be_bytes());
        add(&[0, 0, 0, 58]);
        add(data);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn default_burst_is_now_100ms_500ms_2s() {
        assert_eq!(
            burst_schedule(&BurstConfig::default()),
            [
                Duration::ZERO,
                Duration::from_millis(100),
                Duration::from_millis(500),
                Duration::from_secs(2)
            ]
        );
    }

    #[test]
    fn burst_is_sorted_and_deduplicated() {
        let config = BurstConfig {
            offsets: vec![
                Duration::from_secs(1),
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_millis(10),
            ],
        };
        assert_eq!(
            burst_schedule(&config),
            [
                Duration::ZERO,
                Duration::from_millis(10),
                Duration::from_secs(1)
            ]
        );
        assert!(burst_schedule(&BurstConfig { offsets: vec![] }).is_empty());
    }
}
