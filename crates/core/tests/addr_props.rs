//! Property tests for `AddrSpec` parsing, printing and ordering.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fechter_core::AddrSpec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// An independent model of what is valid, written from the rules in the brief
// (not by calling the implementation).

fn model_iface_ok(iface: &str) -> bool {
    (1..=15).contains(&iface.len())
        && iface != "."
        && iface != ".."
        && !iface
            .chars()
            .any(|c| matches!(c, '/' | ':' | '\0') || c.is_whitespace())
}

fn model_v4_ok(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let n = u32::from(ip);
    n != 0 // 0.0.0.0
        && a != 127 // loopback 127/8
        && !(224..=239).contains(&a) // multicast 224/4
        && !(a == 169 && b == 254) // link-local 169.254/16
        && n != u32::MAX // broadcast
}

fn model_v6_ok(ip: Ipv6Addr) -> bool {
    let n = u128::from(ip);
    n != 0 // ::
        && n != 1 // ::1
        && (n >> 120) != 0xff // multicast ff00::/8
        && (n >> 118) != (0xfe80 >> 6) // link-local fe80::/10
        && (n >> 32) != 0xffff // IPv4-mapped ::ffff:0:0/96
}

fn model_ip_ok(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => model_v4_ok(v4),
        IpAddr::V6(v6) => model_v6_ok(v6),
    }
}

/// The printed form `iface:ip` must not itself read as one IPv6 address
/// (an interface named only with hex digits before an IPv6 address).
fn model_unambiguous(iface: &str, ip: IpAddr) -> bool {
    format!("{iface}:{ip}").parse::<Ipv6Addr>().is_err()
}

fn host_prefix(ip: IpAddr) -> u32 {
    if ip.is_ipv4() { 32 } else { 128 }
}

// ---------------------------------------------------------------------------
// Strategies.

/// Interface names Linux accepts, including non-ASCII ones.
fn valid_iface() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.@#%+=é-]{1,15}",
        // Hex-only names, which can collide with IPv6 syntax.
        "[0-9a-f]{1,5}",
    ]
    .prop_filter("Linux-valid name", |s| model_iface_ok(s))
}

/// Addresses from anywhere in the space, biased towards the reserved
/// ranges and their neighbours.
fn any_ip() -> impl Strategy<Value = IpAddr> {
    let v4_special = prop_oneof![
        Just(0u32),
        Just(127u32 << 24),
        Just(224u32 << 24),
        Just(239u32 << 24),
        Just(240u32 << 24),
        Just(169u32 << 24 | 254 << 16),
        Just(169u32 << 24 | 253 << 16),
        Just(0xffff_0000u32),
        Just(126u32 << 24),
    ];
    let v6_special = prop_oneof![
        Just(0u128),
        Just(0xffu128 << 120),
        Just(0xfe80u128 << 112),
        Just(0xfec0u128 << 112),
        Just(0xfe40u128 << 112),
        Just(0xffffu128 << 32),
        Just(0xfffeu128 << 32),
        Just(0x2001_0db8u128 << 96),
    ];
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        (v4_special, 0u32..=0xffff).prop_map(|(base, low)| IpAddr::V4(Ipv4Addr::from(base | low))),
        (v6_special, 0u128..=0xffff_ffff)
            .prop_map(|(base, low)| IpAddr::V6(Ipv6Addr::from(base | low))),
    ]
}

fn valid_spec() -> impl Strategy<Value = AddrSpec> {
    (
        valid_iface(),
        any_ip().prop_filter("valid address", |ip| model_ip_ok(*ip)),
    )
        .prop_filter("unambiguous", |(iface, ip)| model_unambiguous(iface, *ip))
        .prop_flat_map(|(iface, ip)| (Just(iface), Just(ip), 0..=host_prefix(ip) as u8))
        .prop_map(|(iface, ip, prefix)| AddrSpec { iface, ip, prefix })
}

/// Interface names, valid or not.
fn any_iface() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => valid_iface(),
        1 => Just(String::new()),
        1 => Just(".".to_owned()),
        1 => Just("..".to_owned()),
        1 => "[a-z0-9]{16,20}",
        1 => "[a-z]{1,5}[/ \t\0\u{a0}][a-z0-9]{0,5}",
    ]
}

/// Prefix suffixes, valid or not: `None` means no `/PREFIX`.
fn any_prefix_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        (0u32..=140).prop_map(|n| Some(n.to_string())),
        "[0-9]{3,25}".prop_map(Some),
        "[-+a-z /]{0,4}[0-9]{0,2}".prop_map(Some),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Printing a valid spec and parsing it back gives the same spec.
    #[test]
    fn print_then_parse_round_trips(spec in valid_spec()) {
        let printed = spec.to_string();
        prop_assert_eq!(AddrSpec::parse(&printed), Ok(spec.clone()));
        prop_assert_eq!(AddrSpec::new(spec.iface.clone(), spec.ip, spec.prefix), Ok(spec));
    }

    /// Leaving out the prefix means the host prefix.
    #[test]
    fn missing_prefix_is_host_prefix(spec in valid_spec()) {
        let parsed = AddrSpec::parse(&format!("{}:{}", spec.iface, spec.ip)).unwrap();
        prop_assert_eq!(u32::from(parsed.prefix), host_prefix(spec.ip));
        prop_assert_eq!(parsed.max_prefix(), parsed.prefix);
        prop_assert_eq!(parsed.is_ipv4(), spec.ip.is_ipv4());
    }

    /// Parse accepts exactly what the model says is valid, and the parts
    /// come out unchanged.
    #[test]
    fn parse_agrees_with_model(
        iface in any_iface(),
        ip in any_ip(),
        prefix in any_prefix_text(),
    ) {
        let input = match &prefix {
            Some(p) => format!("{iface}:{ip}/{p}"),
            None => format!("{iface}:{ip}"),
        };
        let prefix_value = match &prefix {
            None => Some(host_prefix(ip)),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u32>().unwrap_or(u32::MAX))
            }
            Some(_) => None,
        };
        let expect_ok = model_iface_ok(&iface)
            && model_ip_ok(ip)
            && model_unambiguous(&iface, ip)
            && prefix_value.is_some_and(|p| p <= host_prefix(ip));
        let result = AddrSpec::parse(&input);
        prop_assert_eq!(result.is_ok(), expect_ok, "{:?} -> {:?}", input, result);
        if let Ok(spec) = result {
            prop_assert_eq!(&spec.iface, &iface);
            prop_assert_eq!(spec.ip, ip);
            prop_assert_eq!(Some(u32::from(spec.prefix)), prefix_value);
        } else if let Err(e) = result {
            // Every message quotes the input.
            let msg = e.to_string();
            prop_assert!(msg.contains(&format!("{input:?}")), "{}", msg);
        }
    }

    /// `new` accepts exactly what the model says is valid.
    #[test]
    fn new_agrees_with_model(iface in any_iface(), ip in any_ip(), prefix in 0u8..=140) {
        let expect_ok = model_iface_ok(&iface)
            && model_ip_ok(ip)
            && model_unambiguous(&iface, ip)
            && u32::from(prefix) <= host_prefix(ip);
        let result = AddrSpec::new(iface, ip, prefix);
        prop_assert_eq!(result.is_ok(), expect_ok, "{:?}", result);
    }

    /// Parse never panics on arbitrary text; whatever it accepts is valid
    /// and survives print-then-parse.
    #[test]
    fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
        if let Ok(spec) = AddrSpec::parse(&s) {
            prop_assert!(model_iface_ok(&spec.iface) && model_ip_ok(spec.ip));
            prop_assert!(model_unambiguous(&spec.iface, spec.ip));
            prop_assert_eq!(AddrSpec::parse(&spec.to_string()), Ok(spec));
        }
    }

    /// Same, over an alphabet that often produces near-valid specs.
    #[test]
    fn parse_never_panics_on_spec_like_strings(s in "[a-f0-9:./\\[\\]% ]{0,40}") {
        if let Ok(spec) = AddrSpec::parse(&s) {
            prop_assert!(model_iface_ok(&spec.iface) && model_ip_ok(spec.ip));
            prop_assert!(model_unambiguous(&spec.iface, spec.ip));
            prop_assert!(u32::from(spec.prefix) <= host_prefix(spec.ip));
            let again = AddrSpec::parse(&spec.to_string());
            prop_assert_eq!(again, Ok(spec));
        }
    }

    /// The label starts with the interface name, fits in 15 bytes, and is
    /// only given for IPv4.
    #[test]
    fn label_fits(spec in valid_spec()) {
        match spec.label() {
            Some(label) => {
                prop_assert!(spec.is_ipv4());
                prop_assert!(label.starts_with(&spec.iface));
                prop_assert!(label.len() <= 15);
                prop_assert!(":fch".starts_with(&label[spec.iface.len()..]));
                // As much of ":fch" as fits.
                prop_assert_eq!(label.len(), (spec.iface.len() + 4).min(15));
            }
            None => prop_assert!(spec.is_ipv6()),
        }
    }

    /// Order is total, consistent with equality, and sorts by IP first.
    #[test]
    fn order_is_by_ip_and_consistent_with_eq(a in valid_spec(), b in valid_spec()) {
        prop_assert_eq!(a.cmp(&b) == Ordering::Equal, a == b);
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a.partial_cmp(&b), Some(a.cmp(&b)));
        if a.ip != b.ip {
            prop_assert_eq!(a.cmp(&b), a.ip.cmp(&b.ip));
        } else if a.iface != b.iface {
            prop_assert_eq!(a.cmp(&b), a.iface.cmp(&b.iface));
        } else {
            prop_assert_eq!(a.cmp(&b), a.prefix.cmp(&b.prefix));
        }
        // Same IP, other interface: still equal only if everything is.
        let mut c = a.clone();
        c.iface.push('x');
        prop_assert_ne!(a.cmp(&c), Ordering::Equal);
    }
}
