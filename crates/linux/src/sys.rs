//! Small libc helpers: sockets, socket options, interface lookups by ioctl.
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

/// Sets socket option `name` at `level` on `fd` to `value`.
pub(crate) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is valid for size_of::<T>() bytes during the call; the
    // kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `send(2)` of `buf` on `fd`: how many bytes went out.
pub(crate) fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: sends from a buffer valid for its length.
    let rc = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// `recvfrom(2)` of one datagram into `buf` with `flags`, retried on EINTR:
/// its length (the full length with `MSG_TRUNC`, which may exceed `buf`)
/// and the link-layer address it came from (meaningful on packet sockets).
pub(crate) fn recv_from(
    fd: &OwnedFd,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(usize, libc::sockaddr_ll)> {
    loop {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut from_len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
                (&raw mut from).cast(),
                &mut from_len,
            )
        };
        if n >= 0 {
            return Ok((n as usize, from));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Binds the packet socket `fd` to `protocol` (host order `ETH_P_*`) on
/// interface `index`.
pub(crate) fn bind_packet(fd: &OwnedFd, index: i32, protocol: libc::c_int) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (protocol as u16).to_be();
    addr.sll_ifindex = index;
    // SAFETY: addr is a valid sockaddr_ll of the length given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
