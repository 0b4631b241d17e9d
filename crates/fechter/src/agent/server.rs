//! The control socket: a Unix socket (mode 0600) where the CLI sends one JSON
//! request per line and reads one JSON response line. Served on a thread of
//! its own within [`LIMITS`] (see [`super::limits`]): a request longer than
//! [`MAX_REQUEST`] or not JSON gets an error line; a client too slow to send
//! its request or take the answer is dropped; all are counted.

use std::io;
use std::os::unix::fs::PermissionsExt;
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
/// by a dead agent but never a live one.
pub fn bind(path: &Path) -> Result<StdUnixListener, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    if path.exists() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = StdUnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    limits::deepen_backlog(std::os::fd::AsFd::as_fd(&listener)).map_err(bind_err)?;
    Ok(listener)
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
