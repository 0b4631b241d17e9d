//! One `recvmmsg`: its buffers, the read, and the sender's address.

use super::*;

/// Buffers for one `recvmmsg`.
pub(crate) struct Batch {
    pub(crate) bufs: Box<[[u8; SLOT]; BATCH]>,
    pub(crate) names: Box<[libc::sockaddr_storage; BATCH]>,
    /// Room for one `SO_RXQ_OVFL` control message each (aligned).
    pub(crate) ctrl: Box<[[u64; 4]; BATCH]>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batch")
    }
}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch {
            bufs: vec![[0u8; SLOT]; BATCH]
                .into_boxed_slice()
                .try_into()
                .expect("BATCH slots"),
            // SAFETY: an all-zero sockaddr_storage is valid.
            names: Box::new([unsafe { std::mem::zeroed() }; BATCH]),
            ctrl: Box::new([[0u64; 4]; BATCH]),
        }
    }
}

/// What one `recvmmsg` read: per datagram its length, whether it was
/// truncated, and its sender; and the kernel's drop count if it said.
pub(crate) struct Read {
    pub(crate) n: usize,
    pub(crate) len: [usize; BATCH],
    pub(crate) truncated: [bool; BATCH],
    pub(crate) kernel_drops: Option<u32>,
}

pub(crate) fn recv(fd: i32, b: &mut Batch) -> io::Result<Read> {
    // SAFETY: all-zero iovec and mmsghdr are valid; every pointer set
    // below points into `b`, which outlives the call.
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..BATCH {
        iov[i] = libc::iovec {
            iov_base: b.bufs[i].as_mut_ptr().cast(),
            iov_len: SLOT,
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&raw mut b.names[i]).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &raw mut iov[i];
        h.msg_iovlen = 1;
        h.msg_control = b.ctrl[i].as_mut_ptr().cast();
        h.msg_controllen = size_of::<[u64; 4]>() as _;
    }
    // SAFETY: `hdrs` describes BATCH valid buffers (see above).
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = rc as usize;
    let mut read = Read {
        n,
        len: [0; BATCH],
        truncated: [false; BATCH],
        kernel_drops: None,
    };
    for (i, h) in hdrs.iter().enumerate().take(n) {
        read.len[i] = (h.msg_len as usize).min(SLOT);
        read.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG
        // macros stay within them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>());
                    // A count that wraps: the last one read is the newest.
                    read.kernel_drops = Some(v);
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
    }
    Ok(read)
}

pub(crate) fn sender(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in, which fits.
            let a = unsafe { &*(&raw const *s).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6, which fits.
            let a = unsafe { &*(&raw const *s).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
