//! The control socket: a Unix socket (mode 0600) where the CLI sends one JSON
//! request per line and reads one JSON response line.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::ControlCall;
use crate::control::{Request, Response};

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

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

/// Binds the control socket at `path`, replacing a stale socket file left
/// by a dead agent but never a live one.
pub async fn bind(path: &Path) -> Result<UnixListener, ServerError> {
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
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Accepts connections until the agent's request channel closes.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<ControlCall>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, calls).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

async fn connection(stream: UnixStream, calls: mpsc::Sender<ControlCall>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
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
        Err(e) => Response::Error {
            error: format!("malformed request ({e}); use the fechter CLI of the same version"),
        },
    };
    let mut out = serde_json::to_string(&response).expect("serializes");
    out.push('\n');
    write.write_all(out.as_bytes()).await
}
