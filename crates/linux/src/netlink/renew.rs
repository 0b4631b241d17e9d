//! The periodic lease renewal: replace requests for many addresses, sent
//! in batches on a plain netlink socket.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use fechter_core::AddrSpec;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};

use super::{Netlink, lease_secs, map_errno};
use crate::error::PlatformError;

/// Renewals per netlink datagram: the kernel queues one acknowledgement
/// (about 1 KiB of receive buffer) per request, and the default receive
/// buffer holds about 200.
pub const RENEW_BATCH: usize = 64;

impl Netlink {
    /// Renews the lease of every address of `specs` with one replace request
    /// each (created if missing), sent [`RENEW_BATCH`] at a time in one
    /// datagram on a plain netlink socket (the kernel handles them in the
    /// call and queues the acknowledgements). This is the periodic renewal
    /// of everything a node holds, so it must stay cheap with hundreds of
    /// addresses: one system call per batch instead of two per address.
    /// Results in the order of `specs`.
    pub async fn renew_many(
        &self,
        specs: &[AddrSpec],
        lease: Duration,
    ) -> Vec<Result<(), PlatformError>> {
        let secs = match lease_secs(lease) {
            Ok(secs) => secs,
            Err(_) => {
                return specs
                    .iter()
                    .map(|_| Err(PlatformError::InvalidLease { lease }))
                    .collect();
            }
        };
        let mut out: Vec<Result<(), PlatformError>> = Vec::with_capacity(specs.len());
        let mut batch: Vec<(usize, AddressMessage)> = Vec::new();
        // One lookup per interface, not per address (an ioctl each).
        let mut indexes: HashMap<&str, u32> = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            let index = match indexes.get(spec.iface.as_str()) {
                Some(index) => Ok(*index),
                None => self.index_of(&spec.iface).inspect(|index| {
                    indexes.insert(&spec.iface, *index);
                }),
            };
            match index {
                Ok(index) => {
                    let mut req = self.add_request(index, spec, secs, true);
                    batch.push((i, req.message_mut().clone()));
                    out.push(Ok(()));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        for chunk in batch.chunks(RENEW_BATCH) {
            let errnos = match send_batch(&self.batch, chunk.iter().map(|(_, m)| m)) {
                Ok(errnos) => errnos,
                Err(e) => vec![Some(e.raw_os_error().unwrap_or(libc::EIO)); chunk.len()],
            };
            for ((i, _), errno) in chunk.iter().zip(errnos) {
                if let Some(errno) = errno {
                    let spec = &specs[*i];
                    out[*i] = Err(map_errno(
                        Some(errno),
                        refresh_op(spec),
                        &spec.iface,
                        spec.ip.is_ipv6(),
                        String::new,
                    ));
                }
            }
        }
        out
    }
}

/// Sends `msgs` as RTM_NEWADDR replace requests (created if missing) in one
/// netlink datagram on `fd`, and reads their acknowledgements, which the
/// kernel queued before the send returned. Returns each request's error
/// number (`None`: done), in order.
fn send_batch<'a>(
    fd: &OwnedFd,
    msgs: impl Iterator<Item = &'a AddressMessage>,
) -> std::io::Result<Vec<Option<i32>>> {
    use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST};
    let mut buf = Vec::new();
    let mut count = 0u32;
    for m in msgs {
        count += 1;
        let mut nl = NetlinkMessage::from(RouteNetlinkMessage::NewAddress(m.clone()));
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        nl.header.sequence_number = count;
        nl.finalize();
        let start = buf.len();
        buf.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut buf[start..]);
        // Every message starts 4-byte aligned (NLMSG_ALIGN).
        buf.resize(buf.len().next_multiple_of(4), 0);
    }
    let mut results = vec![None; count as usize];
    if count == 0 {
        return Ok(results);
    }
    let mut rx = vec![0u8; 64 * 1024];
    // Acknowledgements left over from a batch that failed half-way would
    // match this batch's sequence numbers: drop them first (bounded).
    for _ in 0..1024 {
        let n = recv_now(fd, &mut rx);
        if n < 0 {
            break;
        }
    }
    // SAFETY: sends a buffer this function owns on a socket the caller owns.
    let sent = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut acked = 0;
    // Bounded: every read consumes at least one queued acknowledgement.
    for _ in 0..=count {
        if acked == count {
            break;
        }
        let n = recv_now(fd, &mut rx);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut at = 0usize;
        while at < n as usize {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..n as usize])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let len = (msg.header.length as usize).next_multiple_of(4).max(16);
            let seq = msg.header.sequence_number;
            if let NetlinkPayload::Error(e) = msg.payload
                && (1..=count).contains(&seq)
            {
                results[seq as usize - 1] = e.code.map(|c| -c.get());
                acked += 1;
            }
            at += len;
        }
    }
    if acked < count {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{acked} of {count} renewals acknowledged"),
        ));
    }
    Ok(results)
}

/// What a renewal of `spec` is called in errors.
pub(super) fn refresh_op(spec: &AddrSpec) -> String {
    format!(
        "refreshing the lease of {}/{} on {}",
        spec.ip, spec.prefix, spec.iface
    )
}

/// One datagram already queued on `fd` into `buf`: its length, or -1 (with
/// `errno` set; EAGAIN when none is queued). Never waits.
fn recv_now(fd: &OwnedFd, buf: &mut [u8]) -> isize {
    // SAFETY: reads into a buffer the caller owns, within its length.
    unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    }
}
