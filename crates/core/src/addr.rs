//! Address specs: `IFACE:IP[/PREFIX]`.
//!
//! An [`AddrSpec`] names one virtual address the way an operator writes it:
//! `eth0:198.51.100.10/24` or `eth0:2001:db8::10/64`. The string is split at
//! the *first* colon, so IPv6 addresses need no brackets (brackets are
//! rejected). Without `/PREFIX` the prefix is the host prefix: `/32` for IPv4,
//! `/128` for IPv6.
//!
//! Validation (shared by [`AddrSpec::parse`] and [`AddrSpec::new`]) follows
//! what Linux accepts for an interface name and refuses addresses that can
//! never be a useful floating address:
//!
//! * interface name: 1 to 15 bytes (`IFNAMSIZ - 1`), not `.` or `..`, no `/`,
//!   `:`, whitespace or NUL (the kernel's `dev_valid_name` rules);
//! * prefix: a decimal number, at most 32 (IPv4) or 128 (IPv6);
//! * address: not unspecified (`0.0.0.0`, `::`), loopback (`127.0.0.0/8`,
//!   `::1`), multicast (`224.0.0.0/4`, `ff00::/8`), link-local
//!   (`169.254.0.0/16`, `fe80::/10`), the IPv4 broadcast `255.255.255.255`,
//!   or IPv4-mapped IPv6 (`::ffff:a.b.c.d`; write the IPv4 form instead);
//! * unambiguous: text whose part before any `/` is one IPv6 address
//!   (`2001:db8::10/64`) is a missing interface, not interface `2001` with
//!   address `db8::10`. So an interface named only with 1-4 hex digits
//!   (`abc`) cannot be combined with an IPv6 address whose printed form
//!   would continue it into one address (`abc:1::5`); [`AddrSpec::new`]
//!   refuses that too, so every valid spec prints to text that parses back.
//!
//! Every [`AddrSpecError`] message quotes the offending input, names the
//! problem and says how to fix it.

use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest Linux interface name in bytes (`IFNAMSIZ - 1`).
pub const MAX_IFACE_LEN: usize = 15;

/// Suffix appended to the interface name to form the IPv4 address label.
const LABEL_SUFFIX: &str = ":fch";

const EXAMPLE: &str = "eth0:198.51.100.10/24";

/// One virtual address as the operator names it: `eth0:198.51.100.10/24`.
///
/// Printed as `iface:ip/prefix`, always with the prefix. Serialized as that
/// string in human-readable formats (JSON, TOML; it can be a map key), and
/// as the tuple `(iface, ip, prefix)` in compact binary ones (postcard);
/// both forms are validated when deserialized.
///
/// Ordered by IP first, then interface, then prefix, so sorted lists read by
/// address. Equality and hashing use all three fields, consistent with the
/// order.
///
/// The fields are public for convenience; a spec built by hand bypasses
/// validation, so prefer [`AddrSpec::new`] or [`AddrSpec::parse`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AddrSpec {
    /// Interface name, 1..=15 bytes (Linux IFNAMSIZ - 1).
    pub iface: String,
    /// The address itself.
    pub ip: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

/// Why an address spec was rejected. Each message names the problem and the fix.
///
/// `input` is the text that was rejected: the string given to
/// [`AddrSpec::parse`], or `iface:ip/prefix` for [`AddrSpec::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrSpecError {
    /// No `IFACE:` part: there is no colon at all.
    #[error(
        "{input:?}: missing interface: write IFACE:IP[/PREFIX], e.g. {EXAMPLE} or eth0:2001:db8::10/64"
    )]
    MissingIface { input: String },

    /// The whole input (before any `/PREFIX`) reads as one IPv6 address, so
    /// the `IFACE:` part is missing.
    #[error(
        "{input:?}: missing interface: the text reads as a bare IPv6 address; write IFACE:IP[/PREFIX], e.g. eth0:2001:db8::10/64 (an interface named only with 1-4 hex digits, like \"abc\", cannot be combined with an IPv6 address here)"
    )]
    BareIpv6 { input: String },

    /// `IFACE:IP` would print as one IPv6 address (interface named only with
    /// hex digits), so the spec could not be parsed back.
    #[error(
        "{input:?}: interface name {iface:?} followed by ':' and this IPv6 address reads as one IPv6 address, so the spec cannot be written unambiguously: rename the interface to a name that is not only hex digits (e.g. with `ip link set {iface} name ...`)"
    )]
    AmbiguousIface { input: String, iface: String },

    /// Nothing before the first colon.
    #[error(
        "{input:?}: empty interface name before ':': put the interface name first, e.g. {EXAMPLE}"
    )]
    EmptyIface { input: String },

    /// Interface name longer than Linux allows.
    #[error(
        "{input:?}: interface name {iface:?} is {len} bytes, but Linux interface names have at most 15 bytes (IFNAMSIZ - 1): use the kernel's name for the interface as shown by `ip link`"
    )]
    IfaceTooLong {
        input: String,
        iface: String,
        len: usize,
    },

    /// Interface name contains a character Linux forbids in interface names.
    #[error(
        "{input:?}: interface name {iface:?} contains {ch:?}, which Linux does not allow in interface names ('/', ':', whitespace, NUL): use the kernel's name for the interface as shown by `ip link`"
    )]
    IfaceBadChar {
        input: String,
        iface: String,
        ch: char,
    },

    /// Interface name is `.` or `..`.
    #[error(
        "{input:?}: {iface:?} is not a valid interface name (Linux forbids \".\" and \"..\"): use the kernel's name for the interface as shown by `ip link`"
    )]
    IfaceDots { input: String, iface: String },

    /// Square brackets around an IPv6 address.
    #[error(
        "{input:?}: brackets are not used here: write the IPv6 address without them, e.g. eth0:2001:db8::10/64 (the spec is split at the first ':')"
    )]
    Brackets { input: String },

    /// The address part is not an IPv4 or IPv6 address.
    #[error(
        "{input:?}: {ip:?} is not an IPv4 or IPv6 address: write IFACE:IP[/PREFIX], e.g. {EXAMPLE} or eth0:2001:db8::10/64 (no zone id, no brackets)"
    )]
    InvalidIp { input: String, ip: String },

    /// The prefix is not a decimal number.
    #[error(
        "{input:?}: prefix {prefix:?} is not a number: write the prefix length as decimal digits after '/', e.g. {EXAMPLE}, or leave out '/PREFIX' for a host address"
    )]
    InvalidPrefix { input: String, prefix: String },

    /// The prefix is larger than the address family allows.
    #[error(
        "{input:?}: prefix /{prefix} is out of range for {family}: use a prefix length from 0 to {max}"
    )]
    PrefixOutOfRange {
        input: String,
        prefix: String,
        family: &'static str,
        max: u8,
    },

    /// `0.0.0.0` or `::`.
    #[error(
        "{input:?}: {ip} is the unspecified address and cannot be a virtual address: use a unicast address, e.g. {EXAMPLE}"
    )]
    Unspecified { input: String, ip: IpAddr },

    /// `127.0.0.0/8` or `::1`.
    #[error(
        "{input:?}: {ip} is a loopback address and never leaves this host: use an address reachable from the network, e.g. {EXAMPLE}"
    )]
    Loopback { input: String, ip: IpAddr },

    /// `224.0.0.0/4` or `ff00::/8`.
    #[error(
        "{input:?}: {ip} is a multicast address and cannot be assigned to one host: use a unicast address, e.g. {EXAMPLE}"
    )]
    Multicast { input: String, ip: IpAddr },

    /// `169.254.0.0/16` or `fe80::/10`.
    #[error(
        "{input:?}: {ip} is a link-local address, which the kernel manages per interface: use a routable unicast address, e.g. {EXAMPLE}"
    )]
    LinkLocal { input: String, ip: IpAddr },

    /// `255.255.255.255`.
    #[error(
        "{input:?}: 255.255.255.255 is the IPv4 limited broadcast address: use a unicast address, e.g. {EXAMPLE}"
    )]
    Broadcast { input: String },

    /// `::ffff:a.b.c.d`.
    #[error(
        "{input:?}: {ip} is an IPv4-mapped IPv6 address: write the IPv4 form instead, e.g. {suggestion}"
    )]
    Ipv4Mapped {
        input: String,
        ip: Ipv6Addr,
        suggestion: String,
    },
}

impl AddrSpec {
    /// Builds a validated spec from its parts (same rules as [`AddrSpec::parse`]).
    pub fn new(iface: impl Into<String>, ip: IpAddr, prefix: u8) -> Result<Self, AddrSpecError> {
        let iface = iface.into();
        let input = format!("{iface}:{ip}/{prefix}");
        validate(&input, &iface, ip, prefix)?;
        Ok(AddrSpec { iface, ip, prefix })
    }

    /// Parses `IFACE:IP[/PREFIX]`; same as [`str::parse`].
    pub fn parse(s: &str) -> Result<Self, AddrSpecError> {
        s.parse()
    }

    /// True for an IPv4 address.
    pub fn is_ipv4(&self) -> bool {
        self.ip.is_ipv4()
    }

    /// True for an IPv6 address.
    pub fn is_ipv6(&self) -> bool {
        self.ip.is_ipv6()
    }

    /// The IPv4 address label to put on the interface, or `None` for IPv6
    /// (IPv6 addresses have no label).
    ///
    /// Linux requires an IPv4 label to start with the interface name and to
    /// fit in 15 bytes. The label is `{iface}:fch`; when the interface name is
    /// too long for all of `:fch`, as much of `:fch` as fits is appended
    /// (`eth-0123456789:` for a 14-byte name), and a 15-byte name is used as
    /// the label unchanged.
    pub fn label(&self) -> Option<String> {
        if !self.is_ipv4() {
            return None;
        }
        let room = MAX_IFACE_LEN.saturating_sub(self.iface.len());
        let suffix = &LABEL_SUFFIX[..room.min(LABEL_SUFFIX.len())];
        Some(format!("{}{}", self.iface, suffix))
    }

    /// The host prefix of this spec's family: 32 for IPv4, 128 for IPv6.
    pub fn max_prefix(&self) -> u8 {
        max_prefix(self.ip)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

fn validate_iface(input: &str, iface: &str) -> Result<(), AddrSpecError> {
    let err_input = || input.to_owned();
    if iface.is_empty() {
        return Err(AddrSpecError::EmptyIface { input: err_input() });
    }
    if iface.len() > MAX_IFACE_LEN {
        return Err(AddrSpecError::IfaceTooLong {
            input: err_input(),
            iface: iface.to_owned(),
            len: iface.len(),
        });
    }
    if iface == "." || iface == ".." {
        return Err(AddrSpecError::IfaceDots {
            input: err_input(),
            iface: iface.to_owned(),
        });
    }
    if let Some(ch) = iface
        .chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(AddrSpecError::IfaceBadChar {
            input: err_input(),
            iface: iface.to_owned(),
            ch,
        });
    }
    Ok(())
}

fn validate_ip(input: &str, iface: &str, ip: IpAddr, prefix: u8) -> Result<(), AddrSpecError> {
    let input = input.to_owned();
    match ip {
        IpAddr::V4(v4) => validate_v4(input, v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                let v4_prefix = if prefix >= 96 { prefix - 96 } else { 32 };
                return Err(AddrSpecError::Ipv4Mapped {
                    input,
                    ip: v6,
                    suggestion: format!("{iface}:{v4}/{v4_prefix}"),
                });
            }
            let ip = IpAddr::V6(v6);
            if v6.is_unspecified() {
                Err(AddrSpecError::Unspecified { input, ip })
            } else if v6.is_loopback() {
                Err(AddrSpecError::Loopback { input, ip })
            } else if v6.is_multicast() {
                Err(AddrSpecError::Multicast { input, ip })
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Err(AddrSpecError::LinkLocal { input, ip })
            } else {
                Ok(())
            }
        }
    }
}

fn validate_v4(input: String, v4: Ipv4Addr) -> Result<(), AddrSpecError> {
    let ip = IpAddr::V4(v4);
    if v4.is_unspecified() {
        Err(AddrSpecError::Unspecified { input, ip })
    } else if v4.is_loopback() {
        Err(AddrSpecError::Loopback { input, ip })
    } else if v4.is_multicast() {
        Err(AddrSpecError::Multicast { input, ip })
    } else if v4.is_link_local() {
        Err(AddrSpecError::LinkLocal { input, ip })
    } else if v4.is_broadcast() {
        Err(AddrSpecError::Broadcast { input })
    } else {
        Ok(())
    }
}

/// All checks on already-split parts; `input` is quoted in errors.
fn validate(input: &str, iface: &str, ip: IpAddr, prefix: u8) -> Result<(), AddrSpecError> {
    validate_iface(input, iface)?;
    check_prefix_range(input, ip, u32::from(prefix), &prefix.to_string())?;
    validate_ip(input, iface, ip, prefix)?;
    // The printed form must parse back to this spec: "abc" + "1::5" would
    // print as "abc:1::5", which is one IPv6 address.
    if ip.is_ipv6() && format!("{iface}:{ip}").parse::<IpAddr>().is_ok() {
        return Err(AddrSpecError::AmbiguousIface {
            input: input.to_owned(),
            iface: iface.to_owned(),
        });
    }
    Ok(())
}

fn check_prefix_range(
    input: &str,
    ip: IpAddr,
    prefix: u32,
    text: &str,
) -> Result<(), AddrSpecError> {
    let max = max_prefix(ip);
    if prefix > u32::from(max) {
        return Err(AddrSpecError::PrefixOutOfRange {
            input: input.to_owned(),
            prefix: text.to_owned(),
            family: family(ip),
            max,
        });
    }
    Ok(())
}

/// True if `s` (with an optional `/PREFIX`) is a bare IPv6 address. This
/// catches `2001:db8::10/64`, which split at the first colon would otherwise
/// read as interface `2001` with address `db8::10`.
fn looks_like_bare_ipv6(s: &str) -> bool {
    let ip_part = s.split_once('/').map_or(s, |(ip, _)| ip);
    ip_part.parse::<Ipv6Addr>().is_ok()
}

impl FromStr for AddrSpec {
    type Err = AddrSpecError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_owned();
        if looks_like_bare_ipv6(input) {
            return Err(AddrSpecError::BareIpv6 { input: owned() });
        }
        let Some((iface, rest)) = input.split_once(':') else {
            return Err(AddrSpecError::MissingIface { input: owned() });
        };
        validate_iface(input, iface)?;
        if rest.contains(['[', ']']) {
            return Err(AddrSpecError::Brackets { input: owned() });
        }
        let (ip_text, prefix_text) = match rest.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (rest, None),
        };
        let ip: IpAddr = ip_text.parse().map_err(|_| AddrSpecError::InvalidIp {
            input: owned(),
            ip: ip_text.to_owned(),
        })?;
        let prefix = match prefix_text {
            None => max_prefix(ip),
            Some(text) => {
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(AddrSpecError::InvalidPrefix {
                        input: owned(),
                        prefix: text.to_owned(),
                    });
                }
                // All digits: a parse failure can only be overflow.
                let value = text.parse::<u32>().unwrap_or(u32::MAX);
                check_prefix_range(input, ip, value, text)?;
                // In range, so at most 128.
                value as u8
            }
        };
        validate(input, iface, ip, prefix)?;
        Ok(AddrSpec {
            iface: iface.to_owned(),
            ip,
            prefix,
        })
    }
}

impl TryFrom<String> for AddrSpec {
    type Error = AddrSpecError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<&str> for AddrSpec {
    type Error = AddrSpecError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AddrSpec> for String {
    fn from(spec: AddrSpec) -> String {
        spec.to_string()
    }
}

impl Serialize for AddrSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            (&self.iface, self.ip, self.prefix).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for AddrSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(D::Error::custom)
        } else {
            let (iface, ip, prefix) = <(String, IpAddr, u8)>::deserialize(deserializer)?;
            AddrSpec::new(iface, ip, prefix).map_err(D::Error::custom)
        }
    }
}

impl Ord for AddrSpec {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ip, &self.iface, self.prefix).cmp(&(other.ip, &other.iface, other.prefix))
    }
}

impl PartialOrd for AddrSpec {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.iface, self.ip, self.prefix)
    }
}

impl fmt::Debug for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests;
