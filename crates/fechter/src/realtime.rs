//! `realtime = true`: the agent runs at real-time priority with its memory
//! locked, as keepalived does with `vrrp_rt_priority` / `vrrp_lock_memory`
//! (keepalived.conf(5)). With short timings (dist/profiles/fast.toml: a
//! standby takes over after 25 ms of silence) a machine whose cores are all
//! busy would otherwise delay heartbeats long enough to move addresses.
//!
//! `SCHED_RR` at priority [`PRIORITY`] puts the agent ahead of every
//! ordinary process; the kernel's real-time throttling
//! (`kernel.sched_rt_runtime_us`, 95 % by default) still keeps a runaway
//! agent from starving the machine. `SCHED_RESET_ON_FORK` makes check
//! scripts and notify hooks run at normal priority.

/// The SCHED_RR priority (1-99): low, so that the kernel's own real-time
/// threads and other HA daemons configured higher still come first.
pub const PRIORITY: i32 = 10;

/// Switches the calling thread (and threads it starts) to `SCHED_RR` and
/// locks current and future memory. On error nothing has changed that
/// matters: the caller refuses to start, naming the fix.
pub fn enter() -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: PRIORITY,
    };
    // SAFETY: plain syscalls on the calling thread with a valid parameter.
    let r =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if r != 0 {
        return Err(format!(
            "realtime: cannot switch to real-time priority (SCHED_RR {PRIORITY}): {}; the agent needs CAP_SYS_NICE (systemd: RestrictRealtime=no and CAP_SYS_NICE in CapabilityBoundingSet and AmbientCapabilities), or set realtime = false",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: mlockall has no memory-safety preconditions.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        let err = std::io::Error::last_os_error();
        // Back to normal scheduling: refuse as a whole.
        let normal = libc::sched_param { sched_priority: 0 };
        // SAFETY: as above.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal) };
        return Err(format!(
            "realtime: cannot lock the agent's memory: {err}; the agent needs CAP_IPC_LOCK (systemd: add it to CapabilityBoundingSet and AmbientCapabilities), or set realtime = false"
        ));
    }
    Ok(())
}
