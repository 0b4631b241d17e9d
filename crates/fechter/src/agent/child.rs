//! Commands the agent runs: check scripts and notify hooks, each `sh -c
//! COMMAND` in a process group of its own, with a deadline.
//!
//! Nothing a command does can hold the agent up or exhaust its memory:
//! - at the deadline the whole process group is killed (SIGKILL), so what
//!   the command started dies with it (unless it left the group with
//!   `setsid`), and the shell is reaped;
//! - its output (stdout and stderr, one pipe) is read as it comes, at most
//!   [`MAX_OUTPUT`] bytes are kept and the rest is read and discarded, so a
//!   command printing without end neither blocks on a full pipe nor grows
//!   the agent;
//! - once the shell has exited, its output is awaited for at most
//!   [`OUTPUT_GRACE`]: a daemon it left behind may hold the pipe open for
//!   ever, and is left running (the command is done), its end of the pipe
//!   closed.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// Output kept of one run; the rest is read and discarded.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// How long output may still come after the shell exited.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// Output shown in a log line, at most.
const LOGGED: usize = 1024;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shell exited (or was killed by a signal not of ours).
    Status(ExitStatus),
    /// The deadline passed; the process group was killed.
    TimedOut,
}

/// One finished run.
#[derive(Debug)]
pub struct Ran {
    pub exit: Exit,
    /// The first [`MAX_OUTPUT`] bytes of its output.
    pub output: Vec<u8>,
    /// Output bytes read beyond those and thrown away.
    pub discarded: u64,
}

impl Ran {
    /// Whether the command exited with status 0 in time.
    pub fn success(&self) -> bool {
        matches!(self.exit, Exit::Status(s) if s.success())
    }

    /// The start of the output for a log line: trimmed, at most 1 KiB,
    /// with how much more there was.
    pub fn output_for_log(&self) -> String {
        let shown = &self.output[..self.output.len().min(LOGGED)];
        let mut text = String::from_utf8_lossy(shown).trim().to_owned();
        let more = (self.output.len() - shown.len()) as u64 + self.discarded;
        if more > 0 {
            text.push_str(&format!(" ... ({more} more bytes)"));
        }
        text
    }
}

/// Kills the process group on drop unless disarmed: a run dropped before
/// its end (its task cancelled) leaves nothing running.
struct Group(Option<libc::pid_t>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) on the process group of a child we spawned and
            // have not reaped yet: its pid, which is the group's id, cannot
            // have been reused.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sh -c command` with `env` added to the agent's environment, until
/// it exits or `timeout` passes (see the module docs).
pub async fn run(command: &str, env: &[(&str, &str)], timeout: Duration) -> io::Result<Ran> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .kill_on_drop(true)
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0);
    let spawned = cmd.spawn();
    // The command holds our copies of the pipe's write end: close them, so
    // that the pipe ends when the child's copies do.
    drop(cmd);
    let mut child = spawned?;
    let mut group = Group(child.id().and_then(|p| libc::pid_t::try_from(p).ok()));
    let mut output = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;

    let mut kept = Vec::new();
    let mut discarded = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    let mut status = None;
    let mut eof = false;
    let mut wake = deadline;
    loop {
        tokio::select! {
            read = output.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    let keep = n.min(MAX_OUTPUT - kept.len());
                    kept.extend_from_slice(&buf[..keep]);
                    discarded += (n - keep) as u64;
                }
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited?);
                // The shell is reaped: its pid may be reused now.
                group.0 = None;
                wake = tokio::time::Instant::now() + OUTPUT_GRACE;
            },
            () = tokio::time::sleep_until(wake) => break,
        }
        if eof && status.is_some() {
            break;
        }
    }
    let exit = match status {
        Some(s) => Exit::Status(s),
        None => {
            group.kill();
            child.wait().await?;
            Exit::TimedOut
        }
    };
    Ok(Ran {
        exit,
        output: kept,
        discarded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Whether process `pid` is gone (or a zombie no one has reaped yet).
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // "pid (comm) S ...": the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    fn wait_gone(pid: u32) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            if gone(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn read_pid(path: &std::path::Path) -> u32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn status_output_and_environment() {
        let ran = run(
            "echo out; echo err >&2; echo \"$A\"; exit 3",
            &[("A", "from env")],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(matches!(ran.exit, Exit::Status(s) if s.code() == Some(3)));
        assert!(!ran.success());
        assert_eq!(ran.output, b"out\nerr\nfrom env\n");
        assert_eq!(ran.discarded, 0);
        assert_eq!(ran.output_for_log(), "out\nerr\nfrom env");
        assert!(
            run("true", &[], Duration::from_secs(5))
                .await
                .unwrap()
                .success()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn ten_megabytes_of_output_are_read_capped_and_discarded() {
        let t = Instant::now();
        let ran = run(
            "head -c 10000000 /dev/zero | tr '\\0' x",
            &[],
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        assert!(ran.success(), "{:?}", ran.exit);
        assert_eq!(ran.output.len(), MAX_OUTPUT);
        assert_eq!(ran.discarded, 10_000_000 - MAX_OUTPUT as u64);
        assert!(ran.output.iter().all(|&b| b == b'x'));
        let log = ran.output_for_log();
        assert!(log.len() < 2 * LOGGED, "{}", log.len());
        assert!(
            log.ends_with(&format!("({} more bytes)", 10_000_000 - LOGGED)),
            "{}",
            &log[LOGGED..]
        );
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let t = Instant::now();
        let ran = run(
            &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
            &[],
            Duration::from_millis(300),
        )
        .await
        .unwrap();
        assert_eq!(ran.exit, Exit::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let pid = read_pid(&pidfile);
        assert!(wait_gone(pid), "the background sleep {pid} survived");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_daemon_holding_the_output_does_not_hold_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let t = Instant::now();
        let ran = run(
            &format!("sleep 100 & echo $! > {}; echo started", pidfile.display()),
            &[],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let took = t.elapsed();
        let pid = read_pid(&pidfile);
        // Not ours to kill: the command is done, its daemon runs on.
        assert!(!gone(pid));
        // SAFETY: kill(2) on the test's own leftover.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        assert!(ran.success(), "{:?}", ran.exit);
        assert_eq!(ran.output, b"started\n");
        assert!(
            took < Duration::from_secs(2),
            "waited {took:?} for the daemon"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_run_kills_its_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let cut = tokio::time::timeout(
            Duration::from_millis(300),
            run(&cmd, &[], Duration::from_secs(30)),
        )
        .await;
        assert!(cut.is_err());
        let pid = read_pid(&pidfile);
        assert!(wait_gone(pid), "the background sleep {pid} survived");
    }
}
