//! Address specs: `IFACE:IP[/PREFIX]`.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One virtual address as the operator names it: `eth0:198.51.100.10/24`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddrSpec {
    /// Interface name, 1..=15 bytes (Linux IFNAMSIZ - 1).
    pub iface: String,
    pub ip: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

/// Why an address spec was rejected. Each message names the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrSpecError {
    #[error("TODO")]
    Todo,
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
