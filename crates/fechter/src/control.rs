//! The control protocol between the CLI and the local agent: one JSON request
//! per line over a Unix socket, one JSON response line back.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fechter_core::AddrSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    AddAddress { spec: AddrSpec },
    RemoveAddress { spec: AddrSpec },
    Up,
    Down,
    Status,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// Done; `body` is command-specific (the status document for `status`).
    Ok {
        #[serde(default)]
        body: serde_json::Value,
    },
    /// Refused; `error` names the problem and the fix. Nothing was changed.
    Error { error: String },
}

/// Why the CLI could not get an answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no agent at {0}: start one with `fechter agent`, or point --control-socket (or FECHTER_SOCKET) at its socket"
    )]
    NoAgent(PathBuf),
    #[error("permission denied on {0}: the control socket is root's; run this command as root")]
    PermissionDenied(PathBuf),
    #[error("talking to the agent at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "the agent at {path} sent an answer this CLI cannot read ({detail}); are the CLI and agent the same version?"
    )]
    BadResponse { path: PathBuf, detail: String },
}

/// Sends one request to the agent at `socket` and waits (bounded) for its answer.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let io_err = |source: io::Error| ClientError::Io {
        path: socket.to_owned(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NoAgent(socket.to_owned())
        }
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(socket.to_owned()),
        _ => io_err(e),
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io_err)?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    (&stream).write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(io_err)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::BadResponse {
        path: socket.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_names_the_path_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("fechter-test-{}", std::process::id()));
        let path = dir.join("nope.sock");
        let err = call(&path, &Request::Status).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ClientError::NoAgent(_)), "{msg}");
        assert!(msg.contains(&path.display().to_string()) && msg.contains("fechter agent"));
    }

    #[test]
    fn requests_round_trip_as_json() {
        let spec: AddrSpec = "eth0:198.51.100.10/24".parse().unwrap();
        let r = Request::AddAddress { spec };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }
}
