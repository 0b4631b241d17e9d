//! The control socket: a Unix socket (mode 0600, owned by the agent's user)
//! where the CLI sends one JSON request per line and reads one JSON response
//! line. [`bind`] gives it mode 0600 before anyone can connect, and neither
//! follows nor removes anything at its path but a stale socket. Served on a thread of
//! its own within [`LIMITS`] (see [`super::limits`]): a request longer than
//! [`MAX_REQUEST`] or not JSON gets an error line; a client too slow to send
//! its request or take the answer is dropped; all are counted.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::ControlCall;
use super::limits::{self, Conn, Dropped, Gate, Limits};
use super::metrics::refuse;
use crate::control::{Request, Response};

/// Longest request line accepted.
pub const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another agent is already running with control socket {0}; stop it first, or give this one another --control-socket"
    )]
    InUse(PathBuf),
    #[error(
        "cannot create the control socket {path}: {source}; check that its directory exists and is writable (or give --control-socket)"
    )]
    Bind { path: PathBuf, source: io::Error },
    #[error(
        "control socket path {0} is a symbolic link, which fechter neither follows nor replaces: remove it (`rm {0}`) or give another --control-socket"
    )]
    Symlink(PathBuf),
    #[error(
        "control socket path {0} exists and is not a socket: move it away, or give another --control-socket"
    )]
    NotASocket(PathBuf),
}

/// The control socket's limits. The CLI opens one connection per command
/// and sends its request at once; 64 leaves room for scripts running many
/// at a time. The agent's answer is not under a deadline (it is the agent's
/// own work), only the client's part is.
pub const LIMITS: Limits = Limits {
    max_connections: 64,
    read_timeout: Duration::from_secs(5),
    write_timeout: Duration::from_secs(5),
};

/// Binds the control socket at `path`, replacing a stale socket file left
/// by a dead agent but never a live one, and never a symbolic link or
/// anything else that is not a socket (both are refused).
///
/// The socket has mode 0600 before anyone can connect: it is bound in a
/// private directory (mode 0700) beside `path`, given its mode there, and
/// renamed into place, which also replaces a stale socket atomically. (A
/// umask around `bind` would do the same but is process-wide: it would
/// apply to files other threads create meanwhile.)
pub fn bind(path: &Path) -> Result<StdUnixListener, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(bind_err)?;
            dir
        }
        _ => Path::new("."),
    };
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => return Err(ServerError::Symlink(path.to_owned())),
        Ok(m) if m.file_type().is_socket() => {
            if StdUnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse(path.to_owned()));
            }
            // Stale: the rename below replaces it.
        }
        Ok(_) => return Err(ServerError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let private = private_dir(dir).map_err(bind_err)?;
    // A short name: the private path must fit in sun_path (108 bytes) too.
    let temp = private.join("s");
    let bound = StdUnixListener::bind(&temp).and_then(|listener| {
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o600))?;
        fs::rename(&temp, path)?;
        Ok(listener)
    });
    let _ = fs::remove_file(&temp);
    let _ = fs::remove_dir(&private);
    let listener = bound.map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    limits::deepen_backlog(std::os::fd::AsFd::as_fd(&listener)).map_err(bind_err)?;
    Ok(listener)
}

/// A new directory `.fechter-<pid>.<n>` (mode 0700) in `dir`.
fn private_dir(dir: &Path) -> io::Result<PathBuf> {
    let mut n = 0u32;
    loop {
        let path = dir.join(format!(".fechter-{}.{n}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            // A leftover of an earlier process with the same pid (or a
            // concurrent bind in this one): the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Serves the control socket on a thread of its own (see
/// [`super::limits`]), passing each request to the agent on `calls`.
pub fn start(listener: StdUnixListener, calls: mpsc::Sender<ControlCall>) -> io::Result<()> {
    start_with(listener, calls, LIMITS)
}

/// [`start`] with other limits.
pub fn start_with(
    listener: StdUnixListener,
    calls: mpsc::Sender<ControlCall>,
    limits: Limits,
) -> io::Result<()> {
    limits::spawn_server("fechter-control", move || async move {
        match UnixListener::from_std(listener) {
            Ok(l) => serve(l, calls, limits).await,
            Err(e) => tracing::error!("control socket: {e}"),
        }
    })
}

/// Accepts connections, within `limits`, until the agent's request channel
/// closes.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<ControlCall>, limits: Limits) {
    let gate = Gate::new("control", limits);
    while !calls.is_closed() {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close.
                tracing::debug!("control socket: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(mut conn) = gate.admit() else {
            refuse(
                stream,
                &error_line(&format!(
                    "the agent is answering {} requests already; try again",
                    limits.max_connections
                )),
            );
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, calls, &mut conn).await {
                tracing::debug!("control connection: {e}");
            }
        });
        // Lets an evicted connection close before the next is accepted.
        tokio::task::yield_now().await;
    }
}

/// `response` as a line.
fn line(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).expect("serializes");
    out.push(b'\n');
    out
}

fn error_line(error: &str) -> Vec<u8> {
    line(&Response::Error {
        error: error.into(),
    })
}

async fn connection(
    stream: UnixStream,
    calls: mpsc::Sender<ControlCall>,
    conn: &mut Conn,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut request = Vec::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST + 1));
    let Some(n) = conn.read(reader.read_until(b'\n', &mut request)).await else {
        return Ok(());
    };
    if n? == 0 {
        return Ok(());
    }
    let response = if request.len() as u64 > MAX_REQUEST {
        conn.gate().dropped(Dropped::Oversized);
        Response::Error {
            error: format!(
                "request longer than {} KiB; use the fechter CLI of the same version",
                MAX_REQUEST / 1024
            ),
        }
    } else {
        match serde_json::from_slice::<Request>(&request) {
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if calls.send((req, tx)).await.is_err() {
                    Response::Error {
                        error: "the agent is shutting down".into(),
                    }
                } else {
                    rx.await.unwrap_or(Response::Error {
                        error: "the agent is shutting down".into(),
                    })
                }
            }
            Err(e) => {
                conn.gate().dropped(Dropped::Malformed);
                Response::Error {
                    error: format!(
                        "malformed request ({e}); use the fechter CLI of the same version"
                    ),
                }
            }
        }
    };
    conn.write(write.write_all(&line(&response)))
        .await
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixStream as Client;
    use std::time::Instant;

    use super::*;

    /// A stand-in for the agent: answers every request with its debug form,
    /// or (`answer` false) never answers.
    fn agent(answer: bool) -> mpsc::Sender<ControlCall> {
        let (tx, mut rx) = mpsc::channel::<ControlCall>(64);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while let Some((req, reply)) = rx.blocking_recv() {
                if answer {
                    let _ = reply.send(Response::Ok {
                        body: serde_json::json!(format!("{req:?}")),
                    });
                } else {
                    held.push(reply);
                }
            }
        });
        tx
    }

    /// A control socket in `dir` served within `limits`.
    fn socket(dir: &Path, limits: Limits, answer: bool) -> PathBuf {
        let path = dir.join("fechter.sock");
        start_with(bind(&path).unwrap(), agent(answer), limits).unwrap();
        path
    }

    /// Sends `bytes` on a new connection; the answer line ("" if closed
    /// without one).
    fn ask(path: &Path, bytes: &[u8]) -> String {
        let mut s = Client::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // The server may close before taking all of an oversized request.
        let _ = s.write_all(bytes);
        let mut out = String::new();
        let _ = std::io::BufReader::new(s).read_line(&mut out);
        out
    }

    fn status() -> Vec<u8> {
        let mut req = serde_json::to_vec(&Request::Status).unwrap();
        req.push(b'\n');
        req
    }

    const QUICK: Limits = Limits {
        max_connections: 64,
        read_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(300),
    };

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn socket_has_mode_0600_replaces_a_stale_one_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fechter.sock");
        let first = bind(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        // Live: refused.
        assert!(matches!(bind(&path), Err(ServerError::InUse(_))));
        drop(first);
        // Stale (its agent is gone): replaced.
        let second = bind(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert!(Client::connect(&path).is_ok());
        drop(second);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["fechter.sock"], "no private directory left behind");
    }

    #[test]
    fn socket_is_0600_before_anyone_can_connect_whatever_the_umask() {
        // A plain bind creates the socket with the umask's mode (0777 under
        // umask 0) and a chmod fixes it only afterwards; here the socket
        // never appears at `path` before it is 0600, whatever the umask.
        // Watch the path while binding: whenever it exists it is 0600.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fechter.sock");
        let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let watcher = {
            let (path, watching) = (path.clone(), watching.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while watching.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(m) = fs::symlink_metadata(&path) {
                        seen.push(m.permissions().mode() & 0o777);
                    }
                }
                seen
            })
        };
        for _ in 0..50 {
            drop(bind(&path).unwrap());
            fs::remove_file(&path).unwrap();
        }
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert!(seen.iter().all(|&m| m == 0o600), "{seen:?}");
    }

    #[test]
    fn symlink_at_the_socket_path_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, b"keep me").unwrap();
        let path = dir.path().join("fechter.sock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, ServerError::Symlink(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("symbolic link"), "{msg}");
        assert!(msg.contains(&format!("rm {}", path.display())), "{msg}");
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"keep me");
        // A link to a live socket is refused too, not connected through.
        let real = dir.path().join("real.sock");
        let _live = bind(&real).unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(bind(&link), Err(ServerError::Symlink(_))));
    }

    #[test]
    fn a_file_at_the_socket_path_is_refused_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fechter.sock");
        fs::write(&path, b"not a socket").unwrap();
        let err = bind(&path).unwrap_err();
        assert!(matches!(err, ServerError::NotASocket(_)), "{err:?}");
        assert!(err.to_string().contains("move it away"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"not a socket");
    }

    #[test]
    fn hostile_requests_get_an_error_or_are_dropped_and_the_next_is_answered() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket(dir.path(), QUICK, true);
        let garbage = ask(&path, b"{\"Status\n");
        assert!(garbage.contains("malformed request"), "{garbage}");
        let binary = ask(&path, b"\xff\xfe\x00\n");
        assert!(binary.contains("malformed request"), "{binary}");
        let huge = ask(&path, &vec![b'a'; 200 * 1024]);
        assert!(huge.contains("request longer than 64 KiB"), "{huge}");
        // Half a line, then nothing: closed after the read deadline.
        let mut slow = Client::connect(&path).unwrap();
        slow.write_all(b"{\"Sta").unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = Instant::now();
        let mut buf = Vec::new();
        assert_eq!(slow.read_to_end(&mut buf).unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Nothing at all: the same.
        let mut silent = Client::connect(&path).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(silent.read_to_end(&mut buf).unwrap(), 0);
        let ok = ask(&path, &status());
        assert!(ok.contains("Status"), "{ok}");
    }

    #[test]
    fn when_every_slot_awaits_the_agent_a_new_connection_is_refused_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_connections: 2,
            ..QUICK
        };
        let path = socket(dir.path(), limits, false);
        let busy: Vec<Client> = (0..2)
            .map(|_| {
                let mut s = Client::connect(&path).unwrap();
                s.write_all(&status()).unwrap();
                s
            })
            .collect();
        // Both requests are in before the third connects.
        std::thread::sleep(Duration::from_millis(100));
        let refused = ask(&path, &status());
        assert!(
            refused.contains("answering 2 requests already"),
            "{refused}"
        );
        drop(busy);
    }

    #[test]
    fn two_thousand_idle_connections_leave_the_control_socket_answering() {
        limits::raise_nofile().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = socket(dir.path(), LIMITS, true);
        let idle: Vec<Client> = (0..2000).map(|_| Client::connect(&path).unwrap()).collect();
        let t = Instant::now();
        let ok = ask(&path, &status());
        let took = t.elapsed();
        assert!(ok.contains("Status"), "{ok}");
        // Well before any idle connection's deadline (5 s).
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
        let open = idle
            .iter()
            .filter(|s| !limits::tests::closed(*s, |d| s.set_read_timeout(Some(d)).unwrap()))
            .count();
        assert!(
            open < LIMITS.max_connections,
            "{open} idle connections still open"
        );
    }
}
