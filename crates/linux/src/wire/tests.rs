//! Unit tests of the pure parts of [`super`]: frame builders and parsing.

use super::*;
use crate::announce::{ALL_NODES, ALL_NODES_MAC, build_garp, build_unsolicited_na};
use etherparse::icmpv6::NeighborAdvertisementHeader;

const OURS: [u8; 6] = [0x02, 0xfc, 0, 0, 0, 0x0b];
const THEIRS: [u8; 6] = [0x02, 0xfc, 0, 0, 0, 0x0a];
const OTHER: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];

fn v4(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

fn arp_of(frame: &[u8]) -> etherparse::ArpEthIpv4Packet {
    let packet = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Arp(arp)) = &packet.net else {
        panic!("not ARP: {:?}", packet.net);
    };
    arp.to_packet().try_eth_ipv4().unwrap()
}

/// An ARP frame with every field chosen, built independently of `arp_frame`.
fn arp_raw(op: u16, eth_src: [u8; 6], sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&BROADCAST_MAC);
    f.extend_from_slice(&eth_src);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// A neighbour advertisement (`na`) or solicitation from `src` to `dst`
/// with target `target`, NDP options `options`, and a correct checksum.
fn nd_raw(
    na: bool,
    eth_src: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    target: Ipv6Addr,
    options: &[u8],
) -> Vec<u8> {
    let icmp = if na {
        Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
            router: false,
            solicited: false,
            r#override: true,
        })
    } else {
        Icmpv6Type::NeighborSolicitation
    };
    let builder = PacketBuilder::ethernet2(eth_src, multicast_mac(dst))
        .ipv6(src.octets(), dst.octets(), hop_limit)
        .icmpv6(icmp);
    let mut payload = target.octets().to_vec();
    payload.extend_from_slice(options);
    let mut frame = Vec::new();
    builder.write(&mut frame, &payload).unwrap();
    frame
}

fn ll_opt(kind: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![kind, 1];
    o.extend_from_slice(&mac);
    o
}

fn is_malformed(frame: &[u8]) -> bool {
    parse(frame, OURS).is_err()
}

#[test]
fn solicited_node_group_and_its_mac() {
    let ip = v6("2001:db8::1:2345:6789");
    assert_eq!(solicited_node(ip), v6("ff02::1:ff45:6789"));
    assert_eq!(
        multicast_mac(solicited_node(ip)),
        [0x33, 0x33, 0xff, 0x45, 0x67, 0x89]
    );
    assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
}

#[test]
fn arp_probe_fields_and_claim() {
    let ip = v4("198.18.0.60");
    let frame = build_arp_probe(THEIRS, ip);
    assert_eq!(frame.len(), 60);
    assert_eq!(&frame[..6], &BROADCAST_MAC);
    assert_eq!(&frame[6..12], &THEIRS);
    assert_eq!(&frame[12..14], &[0x08, 0x06]);
    assert_eq!(frame, arp_raw(1, THEIRS, THEIRS, Ipv4Addr::UNSPECIFIED, ip));
    let arp = arp_of(&frame);
    assert_eq!(arp.operation, ArpOperation::REQUEST);
    assert_eq!(arp.sender_mac, THEIRS);
    assert_eq!(arp.sender_ipv4_addr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(arp.target_mac, [0; 6]);
    assert_eq!(arp.target_ipv4_addr(), ip);
    assert_eq!(
        parse_frame(&frame, OURS),
        Some(Claim {
            ip: ip.into(),
            mac: THEIRS,
            kind: ClaimKind::Probe
        })
    );
    // Our own probe claims nothing.
    assert_eq!(parse_frame(&frame, THEIRS), None);
    assert!(parse(&frame, THEIRS).is_ok());
}

#[test]
fn arp_request_fields_and_claim() {
    let (from, ip) = (v4("198.18.0.11"), v4("198.18.0.1"));
    let frame = build_arp_request(THEIRS, from, ip);
    assert_eq!(frame, arp_raw(1, THEIRS, THEIRS, from, ip));
    let arp = arp_of(&frame);
    assert_eq!(arp.operation, ArpOperation::REQUEST);
    assert_eq!(arp.sender_ipv4_addr(), from);
    assert_eq!(arp.target_ipv4_addr(), ip);
    // A request says where its sender is.
    assert_eq!(
        parse_frame(&frame, OURS),
        Some(Claim {
            ip: from.into(),
            mac: THEIRS,
            kind: ClaimKind::Answer
        })
    );
}

#[test]
fn arp_reply_and_garp_are_answers() {
    let ip = v4("198.18.0.60");
    // A reply to our probe: sender is the holder, target IP 0.0.0.0.
    let reply = arp_raw(2, THEIRS, THEIRS, ip, Ipv4Addr::UNSPECIFIED);
    let answer = Claim {
        ip: ip.into(),
        mac: THEIRS,
        kind: ClaimKind::Answer,
    };
    assert_eq!(parse_frame(&reply, OURS), Some(answer));
    assert_eq!(parse_frame(&build_garp(THEIRS, ip), OURS), Some(answer));
    // The claimant is the ARP sender, not the Ethernet source (a proxy).
    let proxied = arp_raw(2, OTHER, THEIRS, ip, v4("198.18.0.11"));
    assert_eq!(parse_frame(&proxied, OURS), Some(answer));
    // Frames from our MAC (either field) claim nothing.
    assert_eq!(parse_frame(&build_garp(OURS, ip), OURS), None);
    assert_eq!(parse_frame(&arp_raw(2, OTHER, OURS, ip, ip), OURS), None);
    // Neither address: nothing, but well-formed.
    let empty = arp_raw(
        1,
        THEIRS,
        THEIRS,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
    );
    assert!(matches!(parse(&empty, OURS), Ok(None)));
    // RARP opcodes, non-Ethernet hardware: malformed.
    assert!(is_malformed(&arp_raw(3, THEIRS, THEIRS, ip, ip)));
    let mut token_ring = reply.clone();
    token_ring[15] = 6;
    assert!(is_malformed(&token_ring));
}

#[test]
fn dad_ns_fields_and_checksum() {
    let ip = v6("2001:db8::1:60");
    let frame = build_dad_ns(THEIRS, ip);
    assert_eq!(frame.len(), 14 + 40 + 8 + 16);
    let packet = SlicedPacket::from_ethernet(&frame).unwrap();
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        panic!("not Ethernet II");
    };
    assert_eq!(eth.destination(), [0x33, 0x33, 0xff, 0x01, 0x00, 0x60]);
    assert_eq!(eth.source(), THEIRS);
    assert_eq!(eth.ether_type(), EtherType::IPV6);
    let Some(NetSlice::Ipv6(ip6)) = &packet.net else {
        panic!("not IPv6");
    };
    let h = ip6.header();
    assert_eq!(h.source_addr(), Ipv6Addr::UNSPECIFIED);
    assert_eq!(h.destination_addr(), v6("ff02::1:ff01:60"));
    assert_eq!(h.hop_limit(), 255);
    assert_eq!(h.next_header(), IpNumber::IPV6_ICMP);
    assert_eq!(usize::from(h.payload_length()), 8 + 16);
    let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
        panic!("not ICMPv6");
    };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (135, 0));
    assert_eq!(icmp.bytes5to8(), [0; 4], "reserved");
    assert_eq!(icmp.payload(), &ip.octets(), "target, and no options");
    assert!(icmp.is_checksum_valid(Ipv6Addr::UNSPECIFIED.octets(), solicited_node(ip).octets()));
    // The offsets the socket filter reads.
    assert_eq!(&frame[12..14], &[0x86, 0xdd]);
    assert_eq!(frame[14 + 6], 58);
    assert_eq!(frame[14 + 40], ND_NS);
    assert_eq!(
        parse_frame(&frame, OURS),
        Some(Claim {
            ip: ip.into(),
            mac: THEIRS,
            kind: ClaimKind::Probe
        })
    );
    assert_eq!(parse_frame(&frame, THEIRS), None);
}

#[test]
fn na_with_and_without_target_link_layer_option() {
    let ip = v6("2001:db8::60");
    let answer = |mac| {
        Some(Claim {
            ip: ip.into(),
            mac,
            kind: ClaimKind::Answer,
        })
    };
    // announce's unsolicited NA.
    let frame = build_unsolicited_na(THEIRS, ip);
    assert_eq!(frame[14 + 40], ND_NA);
    assert_eq!(parse_frame(&frame, OURS), answer(THEIRS));
    // The option wins over the Ethernet source...
    let opt = ll_opt(OPT_TARGET_LL, THEIRS);
    let with = nd_raw(true, OTHER, ip, ALL_NODES, 255, ip, &opt);
    assert_eq!(parse_frame(&with, OURS), answer(THEIRS));
    // ... and without it the Ethernet source is the claimant.
    let without = nd_raw(true, OTHER, ip, ALL_NODES, 255, ip, &[]);
    assert_eq!(parse_frame(&without, OURS), answer(OTHER));
    // A source link-layer option is not a target one; unknown options skipped.
    let mut opts = vec![14, 1, 0, 0, 0, 0, 0, 0];
    opts.extend(ll_opt(OPT_SOURCE_LL, OURS));
    let other_opts = nd_raw(true, OTHER, ip, ALL_NODES, 255, ip, &opts);
    assert_eq!(parse_frame(&other_opts, OURS), answer(OTHER));
    // Our own NA claims nothing.
    assert_eq!(parse_frame(&build_unsolicited_na(OURS, ip), OURS), None);
    assert_eq!(
        parse_frame(
            &nd_raw(true, OTHER, ip, ALL_NODES, 255, ip, &ll_opt(2, OURS)),
            OURS
        ),
        None
    );
}

#[test]
fn ns_from_an_address_is_an_answer_for_it() {
    let (src, target) = (v6("2001:db8::60"), v6("2001:db8::1"));
    let opt = ll_opt(OPT_SOURCE_LL, THEIRS);
    let frame = nd_raw(false, OTHER, src, solicited_node(target), 255, target, &opt);
    assert_eq!(
        parse_frame(&frame, OURS),
        Some(Claim {
            ip: src.into(),
            mac: THEIRS,
            kind: ClaimKind::Answer
        })
    );
}

#[test]
fn invalid_neighbour_discovery_is_malformed() {
    let ip = v6("2001:db8::60");
    let good = nd_raw(true, OTHER, ip, ALL_NODES, 255, ip, &ll_opt(2, THEIRS));
    assert!(!is_malformed(&good));
    // Hop limit below 255: forwarded, so not from the link.
    assert!(is_malformed(&nd_raw(
        true,
        OTHER,
        ip,
        ALL_NODES,
        254,
        ip,
        &[]
    )));
    // Zero-length option, option running past the end.
    assert!(is_malformed(&nd_raw(
        true,
        OTHER,
        ip,
        ALL_NODES,
        255,
        ip,
        &[2, 0, 0, 0, 0, 0, 0, 0]
    )));
    assert!(is_malformed(&nd_raw(
        true,
        OTHER,
        ip,
        ALL_NODES,
        255,
        ip,
        &[2, 2, 0, 0, 0, 0, 0, 0]
    )));
    // Multicast target, no room for a target.
    let group = solicited_node(ip);
    assert!(is_malformed(&nd_raw(
        true,
        OTHER,
        ip,
        ALL_NODES,
        255,
        group,
        &[]
    )));
    let mut short = nd_raw(true, OTHER, ip, ALL_NODES, 255, ip, &[]);
    short.truncate(14 + 40 + 8 + 8);
    short[18..20].copy_from_slice(&16u16.to_be_bytes());
    assert!(is_malformed(&short));
    // A flipped bit breaks the checksum; so does a changed code.
    for at in [14 + 40 + 20, 14 + 40 + 1] {
        let mut bad = good.clone();
        bad[at] ^= 1;
        assert!(is_malformed(&bad), "byte {at}");
    }
    // Other ICMPv6 and other ethertypes.
    let echo = PacketBuilder::ethernet2(OTHER, ALL_NODES_MAC)
        .ipv6(ip.octets(), ALL_NODES.octets(), 255)
        .icmpv6_echo_request(1, 1);
    let mut frame = Vec::new();
    echo.write(&mut frame, &[0; 8]).unwrap();
    assert!(is_malformed(&frame));
    let ipv4 = PacketBuilder::ethernet2(OTHER, OURS)
        .ipv4([198, 18, 0, 10], [198, 18, 0, 11], 64)
        .udp(1, 2);
    let mut frame = Vec::new();
    ipv4.write(&mut frame, &[1, 2, 3]).unwrap();
    assert!(is_malformed(&frame));
}

/// A fixed-seed linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u8
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    let (a4, a6) = (v4("198.18.0.60"), v6("2001:db8::60"));
    vec![
        build_arp_probe(THEIRS, a4),
        build_arp_request(THEIRS, a4, v4("198.18.0.1")),
        build_garp(THEIRS, a4),
        build_dad_ns(THEIRS, a6),
        build_unsolicited_na(THEIRS, a6),
        nd_raw(true, OTHER, a6, ALL_NODES, 255, a6, &[]),
    ]
}

#[test]
fn truncated_frames_are_malformed() {
    for frame in valid_frames() {
        assert!(parse_frame(&frame, OURS).is_some());
        // ARP needs 42 bytes, NDP the whole IPv6 payload.
        let needed = if frame[12..14] == [0x08, 0x06] {
            42
        } else {
            frame.len()
        };
        for len in 0..needed {
            assert!(is_malformed(&frame[..len]), "{len} of {}", frame.len());
        }
    }
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = Lcg(0x5eed_f00d);
    let mut buf = Vec::new();
    for _ in 0..50_000 {
        let len = usize::from(rng.next()) % 128;
        buf.clear();
        buf.extend((0..len).map(|_| rng.next()));
        // Steer a share of them into ARP / IPv6 / ICMPv6 parsing.
        if len >= 55 && rng.next().is_multiple_of(2) {
            let ty: &[u8] = if rng.next().is_multiple_of(2) {
                &[0x08, 0x06]
            } else {
                &[0x86, 0xdd]
            };
            buf[12..14].copy_from_slice(ty);
            buf[20] = 58;
        }
        let _ = parse_frame(&buf, OURS);
    }
    for frame in valid_frames() {
        for _ in 0..5_000 {
            let mut bad = frame.clone();
            for _ in 0..=rng.next() % 4 {
                let at = usize::from(rng.next()) % bad.len();
                bad[at] = rng.next();
            }
            bad.truncate(bad.len() - usize::from(rng.next()) % 4);
            let _ = parse_frame(&bad, OURS);
        }
    }
}

#[test]
fn filters_jump_inside_the_program() {
    for program in [arp_filter(), nd_filter()] {
        let last = program.len() - 1;
        assert_eq!(program[last].code as u32, RET);
        for (i, op) in program.iter().enumerate() {
            if op.code as u32 == JEQ {
                assert!(i + 1 + usize::from(op.jt.max(op.jf)) <= last, "{i}");
            }
        }
    }
}
