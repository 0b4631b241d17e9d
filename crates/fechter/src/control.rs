//! The control protocol between the CLI and the local agent: one JSON request
//! per line over a Unix socket, one JSON response line back.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fechter_core::{AddrSpec, NodeId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    AddAddress {
        spec: AddrSpec,
    },
    RemoveAddress {
        spec: AddrSpec,
    },
    Up,
    Down,
    Status,
    /// This node's history (`fechter events`): the entries after sequence
    /// number `after` (all kept with `None`).
    Events {
        #[serde(default)]
        after: Option<u64>,
    },
    /// Re-read the config file (`fechter reload`, SIGHUP): live changes
    /// apply, restart-only changes are refused, a bad file changes nothing.
    Reload,
    /// Forget a machine gone for good (`fechter forget`): its record and
    /// its vote. Refused for this node, an unknown node or a live one.
    Forget {
        node: NodeId,
    },
}

/// The answer to `status`: this node's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node that answered.
    pub node: String,
    pub leader: Option<String>,
    /// Every node this one knows, itself included (not the forgotten ones).
    pub members: Vec<MemberStatus>,
    /// Every managed address, in the order they were added.
    pub addresses: Vec<AddressStatus>,
    /// Notes for the operator (e.g. fail-static, no quorum).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Cluster datagrams dropped, by reason.
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: String,
    /// `alive` or `dead` (as this node's failure detector sees it).
    pub liveness: String,
    /// `up` or `down` (the operator's `fechter up` / `fechter down`).
    pub admin: String,
    /// Why it does not take addresses; empty when eligible.
    pub ineligible: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressStatus {
    pub spec: String,
    pub holder: Option<String>,
    pub standby: Option<String>,
    /// This node holds it by the allocation but has not installed it: why
    /// (another machine answers for it on the wire, or probes are pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl StatusReport {
    /// The members table.
    pub fn render_members(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "members (seen from {}; leader {}):",
            self.node,
            self.leader.as_deref().unwrap_or("none")
        );
        let w = self.members.iter().map(|m| m.id.len()).max().unwrap_or(0);
        for m in &self.members {
            let why = if m.ineligible.is_empty() {
                "eligible".to_string()
            } else {
                format!("not eligible: {}", m.ineligible.join(", "))
            };
            let _ = writeln!(out, "  {:w$}  {:5}  {:4}  {why}", m.id, m.liveness, m.admin);
        }
        out
    }

    /// The human form: the seed's `eth0:198.51.100.10 assigned to ws-2`
    /// lines, then the members.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let w = self
            .addresses
            .iter()
            .map(|a| a.spec.len())
            .max()
            .unwrap_or(0);
        for a in &self.addresses {
            let standby = a.standby.as_deref().unwrap_or("none");
            match &a.holder {
                Some(h) => {
                    let waiting = a
                        .waiting
                        .as_ref()
                        .map(|w| format!("  waiting: {w}"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "{:w$}  assigned to {h}  (standby {standby}){waiting}",
                        a.spec
                    );
                }
                None => {
                    let _ = writeln!(out, "{:w$}  not assigned", a.spec);
                }
            }
        }
        if self.addresses.is_empty() {
            out.push_str("no addresses (add one with `fechter add-address IFACE:IP/PREFIX`)\n");
        }
        out.push('\n');
        out.push_str(&self.render_members());
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
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
