//! The socket filter: cheap rejection in the kernel, and a sample of
//! strangers' datagrams under a flood.

use super::*;

/// The classic BPF socket filter the kernel runs on every datagram before
/// it queues it. On a UDP socket it sees the UDP header (8 bytes) at
/// offset 0, then the payload; the IP header at `SKF_NET_OFF`.
///
/// It drops what is too short to be sealed or lacks [`seal::MAGIC`]: junk
/// costs neither a wake-up nor a copy. With `sample` (a flood, IPv4), a
/// datagram from any of `members` passes, and one from anyone else with a
/// chance of 1 in [`STRANGER_SAMPLE`]: the reader keeps up, and the kernel's
/// queue never fills with a stranger's junk and drops a member's datagram.
/// What passes is checked again ([`seal::precheck`]).
pub fn program(members: &[Ipv4Addr], sample: bool) -> Vec<libc::sock_filter> {
    const UDP_HEADER: u32 = 8;
    const ACCEPT: u32 = u32::MAX;
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld, jmp, ret) = (libc::BPF_LD, libc::BPF_JMP, libc::BPF_RET | libc::BPF_K);
    let mut p = vec![
        // A = length of UDP header and payload; shorter than sealed: drop
        op(ld | libc::BPF_W | libc::BPF_LEN, 0, 0, 0),
        op(
            jmp | libc::BPF_JGE | libc::BPF_K,
            1,
            0,
            UDP_HEADER + seal::OVERHEAD as u32,
        ),
        op(ret, 0, 0, 0),
        // A = the payload's first two bytes; not the magic: drop
        op(ld | libc::BPF_H | libc::BPF_ABS, 0, 0, UDP_HEADER),
        op(
            jmp | libc::BPF_JEQ | libc::BPF_K,
            1,
            0,
            u32::from(u16::from_be_bytes(seal::MAGIC)),
        ),
        op(ret, 0, 0, 0),
    ];
    if sample {
        // A = the IPv4 source address; a member's: accept
        p.push(op(
            ld | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            (libc::SKF_NET_OFF + 12) as u32,
        ));
        for m in members.iter().take(MAX_FILTERED) {
            p.push(op(jmp | libc::BPF_JEQ | libc::BPF_K, 0, 1, u32::from(*m)));
            p.push(op(ret, 0, 0, ACCEPT));
        }
        // A stranger's: kept when a random number's low bits are zero
        p.push(op(
            ld | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
        ));
        p.push(op(
            jmp | libc::BPF_JSET | libc::BPF_K,
            0,
            1,
            STRANGER_SAMPLE - 1,
        ));
        p.push(op(ret, 0, 0, 0));
    }
    p.push(op(ret, 0, 0, ACCEPT));
    p
}

/// Attaches (or replaces, atomically) the socket's filter.
pub fn attach(socket: &UdpSocket, mut prog: Vec<libc::sock_filter>) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: attaches a program the kernel copies and verifies.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
