//! Agents of the fechter binary in a namespace lab, for `fechter demo`,
//! the end-to-end tests and the failover benchmark.
//!
//! It lives here, in the fechter library, rather than in
//! `fechter_linux::lab`: the lab knows namespaces, links and `ping`, not
//! fechter, while starting an agent is this crate's own command line
//! (`fechter agent --node-id ... --control-socket ...`). The demo is part of
//! this library and the tests and the benchmark already depend on it, so all
//! three reach it as `fechter::lab_agent` (not under `demo`, which the tests
//! do not run through).
//!
//! An [`AgentLauncher`] holds what every agent of one cluster shares (the
//! binary, the key, the directory and the logging); [`AgentLauncher::start`]
//! starts node K's agent in the lab's namespace `PREFIX-nK`, listening on
//! its address, with its files in `DIR/nK/` (`data/`, `control.sock`,
//! `agent.log`, which takes stdout and stderr). A [`LabAgent`] is killed
//! (SIGKILL) and reaped on drop; its child is guarded
//! ([`fechter_linux::lab::guard_child`]), so it also dies with the thread
//! that started it.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use fechter_linux::lab::{Lab, guard_child, poll};

/// How to start the agents of one lab cluster.
#[derive(Debug, Clone)]
pub struct AgentLauncher {
    /// The fechter binary.
    pub exe: PathBuf,
    /// The cluster key file (`--key-file`).
    pub key: PathBuf,
    /// The agents' files go to `dir/nK/`.
    pub dir: PathBuf,
    /// `FECHTER_LOG` for the agents; `None` leaves the environment's.
    pub log_level: Option<String>,
    /// When set, each start first appends
    /// `==== BANNER: starting agent nK ====` to the agent's log.
    pub banner: Option<String>,
}

impl AgentLauncher {
    /// Agents of `exe` with key `key`, files under `dir`, no log level or
    /// banner of their own.
    pub fn new(
        exe: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
    ) -> AgentLauncher {
        AgentLauncher {
            exe: exe.into(),
            key: key.into(),
            dir: dir.into(),
            log_level: None,
            banner: None,
        }
    }

    /// Starts node `node`'s agent in `lab`, attaching to `attach` and with
    /// `extra` arguments; its log is appended to (a restart keeps the old
    /// run's lines). Returns at once: the agent may not answer yet.
    pub fn start(
        &self,
        lab: &Lab,
        node: usize,
        attach: &[Ipv4Addr],
        extra: &[String],
    ) -> Result<LabAgent, String> {
        let base = self.dir.join(format!("n{node}"));
        std::fs::create_dir_all(&base)
            .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        let data_dir = base.join("data");
        let socket = base.join("control.sock");
        let log = base.join("agent.log");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        if let Some(banner) = &self.banner {
            let _ = writeln!(file, "==== {banner}: starting agent n{node} ====");
        }
        let err_file = file
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut cmd = lab.command(&lab.ns_name(node), &self.exe.to_string_lossy());
        cmd.arg("agent")
            .args(["--node-id", &format!("n{node}")])
            .args(["--listen", &lab.node_ipv4(node).to_string()])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--key-file")
            .arg(&self.key)
            .arg("--control-socket")
            .arg(&socket);
        for a in attach {
            cmd.args(["--attach", &a.to_string()]);
        }
        cmd.args(extra);
        if let Some(level) = &self.log_level {
            cmd.env("FECHTER_LOG", level);
        }
        cmd.env("NO_COLOR", "1")
            .env_remove("FECHTER_SOCKET")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err_file);
        guard_child(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start agent n{node}: {e}"))?;
        Ok(LabAgent {
            node,
            socket,
            data_dir,
            log,
            child: Some(child),
        })
    }
}

/// One running (or stopped, or exited) agent in a lab; killed and reaped on
/// drop.
#[derive(Debug)]
pub struct LabAgent {
    /// Its node: `nK` in namespace `PREFIX-nK`.
    pub node: usize,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

impl LabAgent {
    /// Its process id, while it has not been reaped.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends `sig` to the agent, which must not have exited.
    pub fn signal(&mut self, sig: i32) -> Result<(), String> {
        let node = self.node;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| format!("n{node} has no running agent"))?;
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(_)) => return Err(format!("n{node}: the agent already exited")),
            Err(e) => return Err(format!("n{node}: try_wait: {e}")),
        }
        // SAFETY: kill on the pid of our own unreaped child.
        if unsafe { libc::kill(child.id() as i32, sig) } != 0 {
            return Err(format!(
                "kill({}, {sig}): {}",
                child.id(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Waits (polling every 10 ms, at most `limit`) for the agent to exit;
    /// reaps it.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = poll(limit, Duration::from_millis(10), || {
            child.try_wait().ok().flatten()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Whether the agent process is still there (running or stopped).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL and reap. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last `n` lines of the agent's log.
    pub fn log_lines(&self, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    }

    /// [`LabAgent::log_lines`] as one text.
    pub fn log_tail(&self, n: usize) -> String {
        self.log_lines(n).join("\n")
    }
}

impl Drop for LabAgent {
    fn drop(&mut self) {
        self.kill();
    }
}
