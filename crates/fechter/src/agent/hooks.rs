//! Notify hooks, like keepalived's notify scripts: a command run with
//! `sh -c` when this node acquires or releases an address, recognises a
//! new leader, or finds another machine answering for an address it holds. Hooks run one after another, in the order of the events, in
//! a task of their own: the agent loop only queues them and never waits, so
//! a slow or hanging hook never delays a failover. Each gets
//! `notify_timeout_ms`; then it (and its process group) is killed. Failures
//! and timeouts are logged with the start of the hook's output (at most
//! 64 KiB of it is read; see [`super::child`]). A hook that starts a
//! daemon is done when its shell exits, even if the daemon keeps its
//! output open: the next hook runs.
//!
//! Environment: `FECHTER_EVENT` (`acquire`, `release`, `leader`,
//! `conflict`; for a conflict `FECHTER_REASON` names the other machine's MAC),
//! `FECHTER_ADDRESS` (the spec, `eth0:198.51.100.10/24`), `FECHTER_IP`,
//! `FECHTER_INTERFACE`, `FECHTER_REASON`, `FECHTER_NODE` (this node),
//! `FECHTER_LEADER` (the leader this node recognises; empty if none). The
//! address variables are empty for `leader`.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::child;

/// The configured hooks (`notify_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub acquire: Option<String>,
    pub release: Option<String>,
    pub leader: Option<String>,
    pub conflict: Option<String>,
    /// How long one hook may run before it is killed.
    pub timeout: Duration,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            acquire: None,
            release: None,
            leader: None,
            conflict: None,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Notify {
    fn command(&self, event: &str) -> Option<&String> {
        match event {
            "acquire" => self.acquire.as_ref(),
            "release" => self.release.as_ref(),
            "leader" => self.leader.as_ref(),
            "conflict" => self.conflict.as_ref(),
            _ => None,
        }
    }

    fn any(&self) -> bool {
        self.acquire.is_some()
            || self.release.is_some()
            || self.leader.is_some()
            || self.conflict.is_some()
    }
}

/// What a hook is told (its environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub event: &'static str,
    pub address: String,
    pub ip: String,
    pub iface: String,
    pub reason: String,
    pub node: String,
    pub leader: String,
}

impl HookEvent {
    fn env(&self) -> [(&'static str, &str); 7] {
        [
            ("FECHTER_EVENT", self.event),
            ("FECHTER_ADDRESS", &self.address),
            ("FECHTER_IP", &self.ip),
            ("FECHTER_INTERFACE", &self.iface),
            ("FECHTER_REASON", &self.reason),
            ("FECHTER_NODE", &self.node),
            ("FECHTER_LEADER", &self.leader),
        ]
    }
}

/// Hooks waiting to run beyond this are dropped (and logged).
const QUEUE: usize = 1024;

/// The hook runner: queues hooks for its task.
pub struct Hooks {
    notify: Notify,
    queue: Option<mpsc::Sender<(String, HookEvent)>>,
    task: Option<JoinHandle<()>>,
}

impl Hooks {
    /// Starts the runner's task (on the current tokio runtime) if any hook
    /// is configured.
    pub fn start(notify: Notify) -> Self {
        if !notify.any() {
            return Hooks {
                notify,
                queue: None,
                task: None,
            };
        }
        let (tx, mut rx) = mpsc::channel::<(String, HookEvent)>(QUEUE);
        let timeout = notify.timeout;
        let task = tokio::spawn(async move {
            while let Some((command, ev)) = rx.recv().await {
                run(&command, &ev, timeout).await;
            }
        });
        Hooks {
            notify,
            queue: Some(tx),
            task: Some(task),
        }
    }

    /// Queues the hook for `ev`, if one is configured. Never waits.
    pub fn fire(&self, ev: HookEvent) {
        let (Some(queue), Some(command)) = (&self.queue, self.notify.command(ev.event)) else {
            return;
        };
        if let Err(e) = queue.try_send((command.clone(), ev)) {
            tracing::warn!(
                "notify hook not run: {} hooks are already waiting ({e})",
                QUEUE
            );
        }
    }

    /// Lets the queued hooks run (shutdown), each within its timeout, for
    /// at most `limit` in all.
    pub async fn finish(&mut self, limit: Duration) {
        self.queue = None;
        if let Some(task) = self.task.take()
            && tokio::time::timeout(limit, task).await.is_err()
        {
            tracing::warn!("notify hooks still running at exit were stopped");
        }
    }
}

/// Runs one hook to completion or its timeout, logging failures (see
/// [`child`] for what is killed, kept and discarded).
async fn run(command: &str, ev: &HookEvent, timeout: Duration) {
    let ran = match child::run(command, &ev.env(), timeout).await {
        Ok(ran) => ran,
        Err(e) => {
            tracing::warn!(event = ev.event, %command, "cannot run the notify hook: {e}");
            return;
        }
    };
    match ran.exit {
        _ if ran.success() => {
            tracing::debug!(event = ev.event, address = %ev.address, "notify hook done");
        }
        child::Exit::Status(status) => {
            tracing::warn!(
                event = ev.event,
                address = %ev.address,
                %command,
                %status,
                output = %ran.output_for_log(),
                "notify hook failed"
            );
        }
        child::Exit::TimedOut => {
            tracing::warn!(
                event = ev.event,
                address = %ev.address,
                %command,
                output = %ran.output_for_log(),
                "notify hook killed after {} ms (notify_timeout_ms), with its process group",
                timeout.as_millis()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &'static str) -> HookEvent {
        HookEvent {
            event,
            address: "eth0:198.51.100.10/24".into(),
            ip: "198.51.100.10".into(),
            iface: "eth0".into(),
            reason: "assigned".into(),
            node: "ws-1".into(),
            leader: "ws-2".into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hooks_run_in_order_with_their_environment_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let record = format!(
            "echo \"$FECHTER_EVENT $FECHTER_ADDRESS $FECHTER_IP $FECHTER_INTERFACE $FECHTER_REASON $FECHTER_NODE $FECHTER_LEADER\" >> {}",
            out.display()
        );
        let mut hooks = Hooks::start(Notify {
            acquire: Some(record.clone()),
            release: Some(format!("sleep 30; {record}")),
            leader: Some(record),
            conflict: None,
            timeout: Duration::from_millis(200),
        });
        let t = std::time::Instant::now();
        hooks.fire(ev("acquire"));
        hooks.fire(ev("release")); // times out: never records
        hooks.fire(ev("leader"));
        assert!(t.elapsed() < Duration::from_millis(50), "fire waited");
        hooks.finish(Duration::from_secs(5)).await;
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "acquire eth0:198.51.100.10/24 198.51.100.10 eth0 assigned ws-1 ws-2\n\
             leader eth0:198.51.100.10/24 198.51.100.10 eth0 assigned ws-1 ws-2\n"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_hook_that_leaves_a_daemon_behind_does_not_hold_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (pidfile, out) = (dir.path().join("pid"), dir.path().join("out"));
        let mut hooks = Hooks::start(Notify {
            // The daemon holds the hook's stdout and stderr open.
            acquire: Some(format!("sleep 100 & echo $! > {}", pidfile.display())),
            release: Some(format!("echo \"$FECHTER_EVENT\" >> {}", out.display())),
            leader: None,
            conflict: None,
            timeout: Duration::from_secs(10),
        });
        let t = std::time::Instant::now();
        hooks.fire(ev("acquire"));
        hooks.fire(ev("release"));
        hooks.finish(Duration::from_secs(30)).await;
        let took = t.elapsed();
        let pid: libc::pid_t = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) on the test's own leftover daemon.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "release\n");
        assert!(
            took < Duration::from_secs(3),
            "the next hook waited {took:?} (timeout 10 s)"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_hooks_no_task() {
        let mut hooks = Hooks::start(Notify::default());
        assert!(hooks.task.is_none());
        hooks.fire(ev("acquire"));
        hooks.finish(Duration::from_secs(1)).await;
    }
}
