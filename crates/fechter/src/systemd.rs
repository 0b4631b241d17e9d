//! A minimal `sd_notify(3)`: tells systemd (`Type=notify`) that the agent
//! is ready, what it is doing, and that it is stopping.
//!
//! When systemd starts a `Type=notify` service it sets `NOTIFY_SOCKET` to a
//! Unix datagram socket: a path, or an abstract-namespace name written with
//! a leading `@`. A state is newline-separated `KEY=VALUE` lines in one
//! datagram (`READY=1`, `STATUS=...`, `STOPPING=1`). Without `NOTIFY_SOCKET`
//! (not under systemd, or another service type) every call is a no-op.
//! Nothing here panics: a failure to notify is logged and otherwise ignored,
//! since the agent must keep its addresses whatever systemd hears.
//!
//! The agent sends a [`status`] once its sockets are bound; [`ready`] when it
//! joins a cluster, at once when it has no `attach` address (it forms the
//! cluster), or after 10 s without an answering peer (a cold start of the
//! whole cluster must not fail the boot); and [`stopping`] when SIGTERM
//! starts the hand-off.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

static READY_SENT: AtomicBool = AtomicBool::new(false);

/// Tells systemd the agent is ready (`READY=1`) with a status line. Only the
/// first successful call in the process sends anything, so it may be called
/// on every event that implies readiness. Returns whether it was sent.
pub fn ready(status: &str) -> bool {
    if READY_SENT.load(Ordering::SeqCst) {
        return false;
    }
    let sent = notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    if sent {
        READY_SENT.store(true, Ordering::SeqCst);
    }
    sent
}

/// Updates the status line `systemctl status` shows.
pub fn status(status: &str) -> bool {
    notify(&format!("STATUS={}", one_line(status)))
}

/// Tells systemd the agent is shutting down (handing its addresses off).
pub fn stopping(status: &str) -> bool {
    notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
}

/// Sends `state` to `$NOTIFY_SOCKET`. Returns whether it was sent: false
/// when the variable is unset (not under systemd) or sending failed (logged).
pub fn notify(state: &str) -> bool {
    notify_to(std::env::var_os(NOTIFY_SOCKET).as_deref(), state)
}

/// [`notify`] with the socket given instead of read from the environment.
pub fn notify_to(socket: Option<&OsStr>, state: &str) -> bool {
    let Some(socket) = socket.filter(|s| !s.is_empty()) else {
        return false;
    };
    match send(socket, state) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(
                socket = %socket.to_string_lossy(),
                "cannot notify systemd: {e}"
            );
            false
        }
    }
}

/// Sends one datagram to the notification socket `socket` (a path, or
/// `@name` for the abstract namespace).
pub fn send(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sock = UnixDatagram::unbound()?;
    let n = sock.send_to_addr(state.as_bytes(), &addr)?;
    if n != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {n} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(socket),
        Some(b'@') => abstract_addr(&bytes[1..]),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{NOTIFY_SOCKET}={:?} is neither an absolute path nor @abstract",
                socket.to_string_lossy()
            ),
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract Unix sockets exist only on Linux",
    ))
}

/// A status is one line: a newline would start a new `KEY=VALUE`.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receiver(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a datagram arrives");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_the_state_to_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        assert!(notify_to(
            Some(path.as_os_str()),
            "READY=1\nSTATUS=joined the cluster"
        ));
        assert_eq!(receiver(&sock), "READY=1\nSTATUS=joined the cluster");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "fechter-notify-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let env = format!("@{name}");
        assert!(notify_to(Some(OsStr::new(&env)), "STATUS=x"));
        assert_eq!(receiver(&sock), "STATUS=x");
    }

    #[test]
    fn unset_or_unusable_sockets_are_no_ops() {
        assert!(!notify_to(None, "READY=1"));
        assert!(!notify_to(Some(OsStr::new("")), "READY=1"));
        assert!(!notify_to(Some(OsStr::new("relative/path")), "READY=1"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nobody-listens.sock");
        assert!(!notify_to(Some(missing.as_os_str()), "READY=1"));
        assert!(send(missing.as_os_str(), "READY=1").is_err());
        assert!(send(OsStr::new("vsock:2:1234"), "READY=1").is_err());
    }

    #[test]
    fn a_status_stays_on_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }
}
