//! Which addresses this machine may ever hold, whatever the replicated
//! list says: the operator's `allowed_prefixes` and `allowed_interfaces`.
//! A cluster key in the wrong hands can add any address to the list (the
//! gateway's, say); a machine that allows only its service prefixes never
//! installs or announces anything else.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::AddrSpec;

/// An IP prefix, `IP/LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prefix {
    pub ip: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// Whether `ip` is inside the prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.len)
    }
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a prefix: write IP/LEN, e.g. 198.51.100.0/24 or 2001:db8::/64")]
pub struct PrefixError(String);

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PrefixError(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(bad());
        }
        Ok(Prefix { ip, len })
    }
}

/// What this machine allows. Empty lists allow everything (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    pub prefixes: Vec<Prefix>,
    pub interfaces: Vec<String>,
}

impl Allowed {
    /// Whether this machine may hold `spec`.
    pub fn permits(&self, spec: &AddrSpec) -> bool {
        (self.prefixes.is_empty() || self.prefixes.iter().any(|p| p.contains(spec.ip)))
            && (self.interfaces.is_empty() || self.interfaces.contains(&spec.iface))
    }

    /// Whether anything is restricted.
    pub fn restricts(&self) -> bool {
        !self.prefixes.is_empty() || !self.interfaces.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> AddrSpec {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_contain_what_they_cover_and_nothing_across_families() {
        let p: Prefix = "198.51.100.0/24".parse().unwrap();
        assert!(p.contains("198.51.100.255".parse().unwrap()));
        assert!(!p.contains("198.51.101.1".parse().unwrap()));
        assert!(!p.contains("::ffff:198.51.100.1".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let host: Prefix = "2001:db8::1/128".parse().unwrap();
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
        let v6all: Prefix = "::/0".parse().unwrap();
        assert!(v6all.contains("2001:db8::2".parse().unwrap()));
        for bad in [
            "198.51.100.0",
            "198.51.100.0/33",
            "2001:db8::/129",
            "x/8",
            "1.2.3.4/-1",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_address_must_pass_both_lists() {
        let none = Allowed::default();
        assert!(none.permits(&spec("eth0:192.0.2.1/24")));
        let a = Allowed {
            prefixes: vec!["198.51.100.0/24".parse().unwrap()],
            interfaces: vec!["eth1".into()],
        };
        assert!(a.permits(&spec("eth1:198.51.100.7/24")));
        assert!(!a.permits(&spec("eth0:198.51.100.7/24")));
        assert!(!a.permits(&spec("eth1:192.0.2.1/24")));
    }
}
