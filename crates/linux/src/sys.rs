//! Small libc helpers: interface lookups by ioctl on a socket.
//!
//! An ioctl answers for the network namespace of the socket it is made on,
//! so a socket opened next to a netlink socket looks up interfaces in the
//! same namespace as that netlink socket, whatever thread asks.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Opens a socket of `domain`/`ty` (close-on-exec), checking the result.
pub(crate) fn socket(
    domain: libc::c_int,
    ty: libc::c_int,
    protocol: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly opened descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `iface`, or `None` if the name cannot be an interface name.
pub(crate) fn ifreq_for(iface: &str) -> Option<libc::ifreq> {
    let bytes = iface.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Some(req)
}

/// Runs the interface ioctl `request` for `iface` on `fd`. `Ok(None)` if
/// there is no such interface.
pub(crate) fn if_ioctl(
    fd: &OwnedFd,
    iface: &str,
    request: libc::c_ulong,
) -> io::Result<Option<libc::ifreq>> {
    let Some(mut req) = ifreq_for(iface) else {
        return Ok(None);
    };
    // SAFETY: req is a valid ifreq with a NUL-terminated name; the interface
    // requests used here write only into it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut req) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODEV) => Ok(None),
            _ => Err(err),
        };
    }
    Ok(Some(req))
}

/// The index of `iface` in `fd`'s namespace; `Ok(None)` if there is none.
pub(crate) fn ifindex(fd: &OwnedFd, iface: &str) -> io::Result<Option<u32>> {
    Ok(if_ioctl(fd, iface, libc::SIOCGIFINDEX)?.map(|req| {
        // SAFETY: SIOCGIFINDEX filled in the ifindex member of the union.
        let index = unsafe { req.ifr_ifru.ifru_ifindex };
        index as u32
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_interface_names_are_not_interfaces() {
        for name in ["", "a-name-longer-than-15", "nul\0"] {
            assert!(ifreq_for(name).is_none(), "{name:?}");
        }
        assert!(ifreq_for("eth0").is_some());
    }

    #[test]
    fn loopback_has_an_index_and_nonsense_has_none() {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        assert!(ifindex(&fd, "lo").unwrap().is_some_and(|i| i > 0));
        assert_eq!(ifindex(&fd, "nosuchfch0").unwrap(), None);
        assert_eq!(ifindex(&fd, "").unwrap(), None);
    }
}
