//! The capabilities the agent needs, read from `/proc/self/status`.

use crate::error::PlatformError;

/// CAP_NET_ADMIN's bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;
/// CAP_NET_RAW's bit in the capability sets.
const CAP_NET_RAW: u32 = 13;

/// Checks that this process has CAP_NET_ADMIN (addresses) and CAP_NET_RAW
/// (announcements) in its effective set, read from `/proc/self/status`.
pub fn check_privileges() -> Result<(), PlatformError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| PlatformError::ProcStatus {
            detail: e.to_string(),
        })?;
    check_capabilities(&status)
}

/// [`check_privileges`] on the text of a `/proc/PID/status` file.
pub fn check_capabilities(status: &str) -> Result<(), PlatformError> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .ok_or_else(|| PlatformError::ProcStatus {
            detail: "no CapEff line".into(),
        })?
        .trim();
    let caps = u64::from_str_radix(hex, 16).map_err(|_| PlatformError::ProcStatus {
        detail: format!("CapEff value {hex:?} is not hexadecimal"),
    })?;
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if !has(CAP_NET_ADMIN) {
        return Err(PlatformError::MissingCapability {
            capability: "CAP_NET_ADMIN",
            needed_for: "add and remove IP addresses through netlink",
        });
    }
    if !has(CAP_NET_RAW) {
        return Err(PlatformError::MissingCapability {
            capability: "CAP_NET_RAW",
            needed_for: "send gratuitous ARP and neighbour advertisements on a raw packet socket",
        });
    }
    Ok(())
}
