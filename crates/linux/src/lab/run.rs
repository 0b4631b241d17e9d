//! Running commands for the lab and its users: `ip` and its errors, whether
//! the lab can run here, guarding child processes, polling, and entering a
//! lab namespace on a thread of its own.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::LabError;

/// Runs a command and returns its stdout, or an error quoting its stderr.
pub(super) fn run(cmd: &mut Command) -> Result<String, LabError> {
    let line = command_line(cmd);
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    check(line, out)
}

pub(super) fn check(line: String, out: Output) -> Result<String, LabError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

pub(super) fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

pub(super) fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

pub(super) fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(Into::into))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Names of the network namespaces `ip netns list` shows.
pub fn netns_list() -> Result<Vec<String>, LabError> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Whether the lab can run here: root, `ip netns` and `ping`. `Err` says why not.
pub fn lab_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(LabError::NotRoot { euid }.to_string());
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err(LabError::NetnsUnavailable {
            detail: "/proc/self/ns/net does not exist".into(),
        }
        .to_string());
    }
    if find_in_path("ip").is_none() {
        return Err(LabError::NetnsUnavailable {
            detail: "the `ip` command was not found".into(),
        }
        .to_string());
    }
    if let Err(e) = netns_list() {
        return Err(LabError::NetnsUnavailable {
            detail: e.to_string(),
        }
        .to_string());
    }
    if find_in_path("ping").is_none() {
        return Err(LabError::PingMissing.to_string());
    }
    Ok(())
}

/// For tests: `true` if the lab can run. Otherwise prints why `test` is
/// skipped and returns `false`, except under `CI=true`, where a missing lab
/// is a failure (panics with the reason).
pub fn require_lab(test: &str) -> bool {
    match lab_available() {
        Ok(()) => true,
        Err(reason) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: the namespace lab is required under CI=true: {reason}");
            }
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// Guards a child process of a lab user (test, demo, benchmark): it gets its
/// own process group (a Ctrl-C on the terminal reaches only the parent,
/// which then cleans up) and the kernel kills it when the thread that
/// started it dies (`PR_SET_PDEATHSIG`), so that nothing outlives a run that
/// was killed.
pub fn guard_child(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec here.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Calls `check` every `every` until it returns `Some`, for at most `limit`
/// (bounded in rounds as well as in time); `None` when it never did.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = std::time::Instant::now();
    let rounds = limit.as_millis() / every.as_millis().max(1) + 2;
    for _ in 0..rounds {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(every);
    }
    None
}

/// Enters network namespace `ns` (by name, `/run/netns/NAME`) on the calling
/// thread only.
pub fn enter_netns(ns: &str) -> Result<(), LabError> {
    let err = |source| LabError::Setns {
        ns: ns.to_owned(),
        source,
    };
    let file = File::open(Path::new("/run/netns").join(ns)).map_err(err)?;
    // SAFETY: setns on an open namespace file descriptor; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its
/// result. A panic in `f` is resumed on the calling thread.
pub fn run_in_ns<T, F>(ns: &str, f: F) -> Result<T, LabError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter_netns(ns)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs the future made by `f` on a current-thread tokio runtime on a new
/// thread inside network namespace `ns`. Sockets the future opens (netlink,
/// packet) belong to `ns`.
pub fn block_on_in_ns<T, F, Fut>(ns: &str, f: F) -> Result<T, LabError>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
{
    run_in_ns(ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a current-thread tokio runtime");
        runtime.block_on(f())
    })
}
