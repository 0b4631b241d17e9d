//! Unit tests of [`super`]: parsing, display, ordering and serde of address specs.

use super::*;
use serde::de::IntoDeserializer;
use serde::de::value::{Error as ValueError, StrDeserializer};

fn err(s: &str) -> AddrSpecError {
    match AddrSpec::parse(s) {
        Ok(spec) => panic!("{s:?} parsed as {spec}, expected an error"),
        Err(e) => e,
    }
}

/// Asserts the message quotes the input and contains every hint.
fn assert_msg(e: &AddrSpecError, input: &str, hints: &[&str]) {
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{input:?}")),
        "message {msg:?} does not quote input {input:?}"
    );
    for hint in hints {
        assert!(msg.contains(hint), "message {msg:?} lacks {hint:?}");
    }
}

fn spec(iface: &str, ip: &str, prefix: u8) -> AddrSpec {
    AddrSpec {
        iface: iface.into(),
        ip: ip.parse().unwrap(),
        prefix,
    }
}

#[test]
fn parses_v4_and_v6_with_and_without_prefix() {
    assert_eq!(
        AddrSpec::parse("eth0:198.51.100.10/24").unwrap(),
        spec("eth0", "198.51.100.10", 24)
    );
    assert_eq!(
        AddrSpec::parse("eth0:2001:db8::10/64").unwrap(),
        spec("eth0", "2001:db8::10", 64)
    );
    assert_eq!(
        AddrSpec::parse("eth0:198.51.100.10").unwrap(),
        spec("eth0", "198.51.100.10", 32)
    );
    assert_eq!(
        AddrSpec::parse("bond0.100:2001:db8::10").unwrap(),
        spec("bond0.100", "2001:db8::10", 128)
    );
    assert_eq!(
        AddrSpec::parse("eth0:10.0.0.1/0").unwrap(),
        spec("eth0", "10.0.0.1", 0)
    );
    // Exactly 15 bytes is allowed.
    assert_eq!(
        AddrSpec::parse("abcdefghijklmno:10.0.0.1/8").unwrap().iface,
        "abcdefghijklmno"
    );
}

#[test]
fn display_always_prints_prefix() {
    let s = AddrSpec::parse("eth0:2001:db8::10").unwrap();
    assert_eq!(s.to_string(), "eth0:2001:db8::10/128");
    assert_eq!(format!("{s:?}"), "eth0:2001:db8::10/128");
}

#[test]
fn missing_iface() {
    for input in ["eth0198.51.100.10", "198.51.100.10/24", ""] {
        let e = err(input);
        assert!(
            matches!(e, AddrSpecError::MissingIface { .. }),
            "{input:?}: {e:?}"
        );
        assert_msg(
            &e,
            input,
            &["missing interface", "IFACE:IP[/PREFIX]", "eth0:"],
        );
    }
}

#[test]
fn bare_ipv6_is_missing_iface_not_a_short_iface() {
    // Split at the first colon these would read as iface "2001" etc.
    for input in ["2001:db8::10/64", "2001:db8::10", "::1", "abc:1::5/64"] {
        let e = err(input);
        assert!(
            matches!(e, AddrSpecError::BareIpv6 { .. }),
            "{input:?}: {e:?}"
        );
        assert_msg(
            &e,
            input,
            &["missing interface", "bare IPv6", "eth0:2001:db8::10/64"],
        );
    }
}

#[test]
fn hex_iface_that_would_not_round_trip_is_rejected_by_new() {
    let e = AddrSpec::new("abc", "1::5".parse().unwrap(), 64).unwrap_err();
    assert!(matches!(e, AddrSpecError::AmbiguousIface { .. }), "{e:?}");
    assert_msg(
        &e,
        "abc:1::5/64",
        &["reads as one IPv6 address", "rename the interface"],
    );
    // Unambiguous combinations with a hex-only name are fine.
    for (iface, ip) in [("abc", "198.51.100.10"), ("abc", "::5"), ("abcde", "1::5")] {
        let s = AddrSpec::new(iface, ip.parse().unwrap(), 32).unwrap();
        assert_eq!(AddrSpec::parse(&s.to_string()).unwrap(), s);
    }
}

#[test]
fn empty_iface() {
    let e = err(":198.51.100.10/24");
    assert!(matches!(e, AddrSpecError::EmptyIface { .. }), "{e:?}");
    assert_msg(
        &e,
        ":198.51.100.10/24",
        &["empty interface", "eth0:198.51.100.10/24"],
    );
}

#[test]
fn iface_too_long() {
    let input = "abcdefghijklmnop:10.0.0.1";
    let e = err(input);
    assert!(
        matches!(e, AddrSpecError::IfaceTooLong { len: 16, .. }),
        "{e:?}"
    );
    assert_msg(
        &e,
        input,
        &["16 bytes", "at most 15", "IFNAMSIZ", "ip link"],
    );
}

#[test]
fn iface_bad_chars() {
    for (input, bad) in [
        ("et/h0:10.0.0.1", '/'),
        ("eth 0:10.0.0.1", ' '),
        ("eth\t0:10.0.0.1", '\t'),
        ("eth\x000:10.0.0.1", '\0'),
    ] {
        let e = err(input);
        assert!(
            matches!(e, AddrSpecError::IfaceBadChar { ch, .. } if ch == bad),
            "{input:?}: {e:?}"
        );
        assert_msg(&e, input, &["not allow", "ip link"]);
    }
    // ':' can only reach the iface through `new`, since parse splits at it.
    let e = AddrSpec::new("eth0:1", "10.0.0.1".parse().unwrap(), 24).unwrap_err();
    assert!(
        matches!(e, AddrSpecError::IfaceBadChar { ch: ':', .. }),
        "{e:?}"
    );
    assert_msg(&e, "eth0:1:10.0.0.1/24", &["':'", "ip link"]);
}

#[test]
fn iface_dots() {
    for input in [".:10.0.0.1", "..:10.0.0.1"] {
        let e = err(input);
        assert!(matches!(e, AddrSpecError::IfaceDots { .. }), "{e:?}");
        assert_msg(&e, input, &["\"..\"", "ip link"]);
    }
    // Dots inside a name are fine.
    assert!(AddrSpec::parse("...:10.0.0.1").is_ok());
}

#[test]
fn brackets() {
    for input in ["eth0:[2001:db8::10]/64", "eth0:[2001:db8::10]"] {
        let e = err(input);
        assert!(matches!(e, AddrSpecError::Brackets { .. }), "{e:?}");
        assert_msg(&e, input, &["without them", "eth0:2001:db8::10/64"]);
    }
}

#[test]
fn invalid_ip() {
    for (input, ip) in [
        ("eth0:198.51.100.300/24", "198.51.100.300"),
        ("eth0:", ""),
        ("eth0:/24", ""),
        ("eth0:fe80::1%eth0/64", "fe80::1%eth0"),
        ("eth0:010.0.0.1", "010.0.0.1"),
        ("eth0:host.example/24", "host.example"),
    ] {
        let e = err(input);
        assert_eq!(
            e,
            AddrSpecError::InvalidIp {
                input: input.into(),
                ip: ip.into()
            }
        );
        assert_msg(
            &e,
            input,
            &["not an IPv4 or IPv6 address", "IFACE:IP[/PREFIX]"],
        );
    }
}

#[test]
fn invalid_prefix() {
    for (input, prefix) in [
        ("eth0:10.0.0.1/", ""),
        ("eth0:10.0.0.1/abc", "abc"),
        ("eth0:10.0.0.1/-1", "-1"),
        ("eth0:10.0.0.1/+24", "+24"),
        ("eth0:10.0.0.1/24 ", "24 "),
        ("eth0:10.0.0.1/24/24", "24/24"),
    ] {
        let e = err(input);
        assert_eq!(
            e,
            AddrSpecError::InvalidPrefix {
                input: input.into(),
                prefix: prefix.into()
            }
        );
        assert_msg(&e, input, &["not a number", "decimal digits"]);
    }
}

#[test]
fn prefix_out_of_range() {
    for (input, prefix, max) in [
        ("eth0:10.0.0.1/33", "33", 32),
        ("eth0:2001:db8::1/129", "129", 128),
        (
            "eth0:10.0.0.1/99999999999999999999",
            "99999999999999999999",
            32,
        ),
    ] {
        let e = err(input);
        assert!(
            matches!(&e, AddrSpecError::PrefixOutOfRange { prefix: p, max: m, .. } if p == prefix && *m == max),
            "{e:?}"
        );
        assert_msg(&e, input, &[&format!("from 0 to {max}")]);
    }
    let e = AddrSpec::new("eth0", "10.0.0.1".parse().unwrap(), 33).unwrap_err();
    assert!(matches!(e, AddrSpecError::PrefixOutOfRange { max: 32, .. }));
}

#[test]
fn reserved_addresses() {
    type Check = fn(&AddrSpecError) -> bool;
    let cases: &[(&str, Check, &str)] = &[
        (
            "eth0:0.0.0.0/24",
            |e| matches!(e, AddrSpecError::Unspecified { .. }),
            "unspecified",
        ),
        (
            "eth0:::/64",
            |e| matches!(e, AddrSpecError::Unspecified { .. }),
            "unspecified",
        ),
        (
            "eth0:127.0.0.1",
            |e| matches!(e, AddrSpecError::Loopback { .. }),
            "loopback",
        ),
        (
            "eth0:127.255.0.9/8",
            |e| matches!(e, AddrSpecError::Loopback { .. }),
            "loopback",
        ),
        (
            "eth0:::1",
            |e| matches!(e, AddrSpecError::Loopback { .. }),
            "loopback",
        ),
        (
            "eth0:224.0.0.18",
            |e| matches!(e, AddrSpecError::Multicast { .. }),
            "multicast",
        ),
        (
            "eth0:239.255.255.255",
            |e| matches!(e, AddrSpecError::Multicast { .. }),
            "multicast",
        ),
        (
            "eth0:ff02::1",
            |e| matches!(e, AddrSpecError::Multicast { .. }),
            "multicast",
        ),
        (
            "eth0:169.254.1.1/16",
            |e| matches!(e, AddrSpecError::LinkLocal { .. }),
            "link-local",
        ),
        (
            "eth0:fe80::1/64",
            |e| matches!(e, AddrSpecError::LinkLocal { .. }),
            "link-local",
        ),
        (
            "eth0:febf:ffff::1",
            |e| matches!(e, AddrSpecError::LinkLocal { .. }),
            "link-local",
        ),
        (
            "eth0:255.255.255.255",
            |e| matches!(e, AddrSpecError::Broadcast { .. }),
            "broadcast",
        ),
    ];
    for (input, is_variant, word) in cases {
        let e = err(input);
        assert!(is_variant(&e), "{input:?}: {e:?}");
        assert_msg(&e, input, &[word, "use ", "e.g. eth0:"]);
    }
    // Neighbours of the reserved ranges are accepted.
    for ok in [
        "eth0:1.0.0.0/8",
        "eth0:126.255.255.255/8",
        "eth0:128.0.0.1",
        "eth0:223.255.255.254",
        "eth0:240.0.0.1",
        "eth0:255.255.255.254",
        "eth0:169.253.255.255",
        "eth0:169.255.0.1",
        "eth0:::2",
        "eth0:fec0::1",
        "eth0:fe7f::1",
        "eth0:feff::1",
    ] {
        assert!(
            AddrSpec::parse(ok).is_ok(),
            "{ok:?}: {:?}",
            AddrSpec::parse(ok)
        );
    }
}

#[test]
fn ipv4_mapped_suggests_ipv4_form() {
    let e = err("eth0:::ffff:198.51.100.10/120");
    assert!(matches!(e, AddrSpecError::Ipv4Mapped { .. }), "{e:?}");
    assert_msg(
        &e,
        "eth0:::ffff:198.51.100.10/120",
        &["IPv4 form", "eth0:198.51.100.10/24"],
    );
    let e = err("eth0:::ffff:198.51.100.10");
    assert_msg(&e, "eth0:::ffff:198.51.100.10", &["eth0:198.51.100.10/32"]);
    let e = err("eth0:::ffff:198.51.100.10/64");
    assert_msg(
        &e,
        "eth0:::ffff:198.51.100.10/64",
        &["eth0:198.51.100.10/32"],
    );
}

#[test]
fn new_validates_like_parse() {
    let ip: IpAddr = "198.51.100.10".parse().unwrap();
    assert_eq!(
        AddrSpec::new("eth0", ip, 24).unwrap(),
        spec("eth0", "198.51.100.10", 24)
    );
    assert!(matches!(
        AddrSpec::new("", ip, 24),
        Err(AddrSpecError::EmptyIface { .. })
    ));
    let e = AddrSpec::new("eth0", "127.0.0.1".parse().unwrap(), 8).unwrap_err();
    assert_eq!(
        e,
        AddrSpecError::Loopback {
            input: "eth0:127.0.0.1/8".into(),
            ip: "127.0.0.1".parse().unwrap()
        }
    );
}

#[test]
fn label_starts_with_iface_and_fits() {
    let label = |iface: &str| spec(iface, "198.51.100.10", 24).label().unwrap();
    assert_eq!(label("eth0"), "eth0:fch");
    assert_eq!(label("abcdefghijk"), "abcdefghijk:fch"); // 11 + 4 = 15
    assert_eq!(label("abcdefghijkl"), "abcdefghijkl:fc");
    assert_eq!(label("abcdefghijklmn"), "abcdefghijklmn:");
    assert_eq!(label("abcdefghijklmno"), "abcdefghijklmno");
    for n in 1..=15 {
        let iface = "x".repeat(n);
        let l = label(&iface);
        assert!(l.starts_with(&iface) && l.len() <= 15, "{l:?}");
    }
    assert_eq!(spec("eth0", "2001:db8::1", 64).label(), None);
}

#[test]
fn family_helpers() {
    let v4 = spec("eth0", "198.51.100.10", 24);
    let v6 = spec("eth0", "2001:db8::1", 64);
    assert!(v4.is_ipv4() && !v4.is_ipv6() && v4.max_prefix() == 32);
    assert!(!v6.is_ipv4() && v6.is_ipv6() && v6.max_prefix() == 128);
}

#[test]
fn orders_by_ip_then_iface_then_prefix() {
    let mut v = [
        spec("eth1", "10.0.0.2", 24),
        spec("eth0", "10.0.0.10", 24),
        spec("eth0", "2001:db8::1", 64),
        spec("eth1", "10.0.0.1", 24),
        spec("eth0", "10.0.0.2", 32),
        spec("eth0", "10.0.0.2", 24),
    ];
    v.sort();
    let printed: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(
        printed,
        [
            "eth1:10.0.0.1/24",
            "eth0:10.0.0.2/24",
            "eth0:10.0.0.2/32",
            "eth1:10.0.0.2/24",
            "eth0:10.0.0.10/24",
            "eth0:2001:db8::1/64",
        ]
    );
}

#[test]
fn binary_serde_is_compact_and_validated() {
    let s = spec("eth0", "198.51.100.10", 24);
    let bytes = postcard::to_allocvec(&s).unwrap();
    // len + "eth0", variant + 4 octets, prefix.
    assert_eq!(bytes.len(), 5 + 5 + 1);
    assert_eq!(postcard::from_bytes::<AddrSpec>(&bytes).unwrap(), s);
    let v6 = spec("bond0.100", "2001:db8::10", 64);
    let bytes = postcard::to_allocvec(&v6).unwrap();
    assert_eq!(postcard::from_bytes::<AddrSpec>(&bytes).unwrap(), v6);
    // An invalid spec does not come back in through the binary form.
    let bad = spec("eth0", "127.0.0.1", 8);
    let bytes = postcard::to_allocvec(&bad).unwrap();
    assert!(postcard::from_bytes::<AddrSpec>(&bytes).is_err());
}

#[test]
fn serde_uses_the_string_form() {
    let de: StrDeserializer<'_, ValueError> = "eth0:2001:db8::10/64".into_deserializer();
    assert_eq!(
        AddrSpec::deserialize(de).unwrap(),
        spec("eth0", "2001:db8::10", 64)
    );
    let de: StrDeserializer<'_, ValueError> = "eth0:127.0.0.1".into_deserializer();
    let e = AddrSpec::deserialize(de).unwrap_err().to_string();
    assert!(e.contains("loopback"), "{e}");
    assert_eq!(
        String::from(spec("eth0", "198.51.100.10", 24)),
        "eth0:198.51.100.10/24"
    );
}
