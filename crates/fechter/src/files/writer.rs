//! State writes off the agent's loop. A slow or failing disk must never
//! delay a heartbeat: the loop hands each file's new content to
//! [`Writer::write`] and goes on; a thread of its own writes it
//! ([`super::persist::write_atomic`]: temporary file, fsync, rename, fsync
//! of the directory). Writes of one file coalesce (the newest content
//! wins). A write that fails (ENOSPC, EIO, EMFILE, ...) is logged, counted
//! and retried every [`RETRY`] with the newest content, never fatal: the
//! agent keeps running on what it has in memory, and the kernel lease
//! bounds what a record the disk lost can cost (an address installed but
//! not recorded expires with its lease).
//!
//! Each write gets a sequence number; the outcome of the newest write of a
//! file is reported on the channel [`Writer::spawn`] returns, so that a
//! command is acknowledged once it is on disk (or answered with the error).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tmpsc;

use super::persist::write_atomic;

/// How often a failed write is tried again.
pub const RETRY: Duration = Duration::from_secs(1);

/// The outcome of the newest write of `file` up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub file: &'static str,
    pub seq: u64,
    pub result: Result<(), String>,
}

struct Job {
    file: &'static str,
    bytes: Vec<u8>,
    seq: u64,
}

/// The handle of the writer thread.
pub struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    next: u64,
    thread: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
    errors: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread for files inside `dir`; the second value
    /// receives the outcome of each write.
    pub fn spawn(dir: PathBuf) -> std::io::Result<(Writer, tmpsc::UnboundedReceiver<Saved>)> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (saved_tx, saved_rx) = tmpsc::unbounded_channel();
        let (done_tx, done) = mpsc::channel();
        let errors = Arc::new(AtomicU64::new(0));
        let counted = errors.clone();
        let thread = std::thread::Builder::new()
            .name("fechter-disk".into())
            .spawn(move || {
                run(&dir, &rx, &saved_tx, &counted);
                let _ = done_tx.send(());
            })?;
        let w = Writer {
            tx: Some(tx),
            next: 0,
            thread: Some(thread),
            done,
            errors,
        };
        Ok((w, saved_rx))
    }

    /// Queues `bytes` as the new content of `file`; returns the write's
    /// sequence number. Never waits.
    pub fn write(&mut self, file: &'static str, bytes: Vec<u8>) -> u64 {
        self.next += 1;
        let seq = self.next;
        if let Some(tx) = &self.tx {
            // The thread only stops when this handle is dropped or finished.
            let _ = tx.send(Job { file, bytes, seq });
        }
        seq
    }

    /// [`Writer::write`] of `value` as JSON ([`super::persist::json_bytes`]);
    /// `None` (logged) if it cannot be encoded.
    pub fn write_json<T: serde::Serialize + ?Sized>(
        &mut self,
        file: &'static str,
        value: &T,
    ) -> Option<u64> {
        match super::persist::json_bytes(value) {
            Ok(bytes) => Some(self.write(file, bytes)),
            Err(e) => {
                tracing::warn!(file, "cannot encode, not written: {e}");
                None
            }
        }
    }

    /// Failed write attempts so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Lets the thread write what is queued, waiting at most `limit`;
    /// returns whether everything was written.
    pub fn finish(&mut self, limit: Duration) -> bool {
        self.tx = None;
        let ok = self.done.recv_timeout(limit).is_ok();
        if ok && let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        ok
    }
}

/// A file's newest content not yet written.
struct Pending {
    seq: u64,
    bytes: Vec<u8>,
    /// Not before then: its last write failed.
    retry_at: Option<Instant>,
}

/// How many more attempts each file gets once the handle is gone.
const TRIES_WHEN_STOPPING: u32 = 2;

/// The thread: coalesce, write, report, retry (each file on its own
/// schedule, so a failing file never holds the others back).
fn run(
    dir: &std::path::Path,
    rx: &mpsc::Receiver<Job>,
    saved: &tmpsc::UnboundedSender<Saved>,
    errors: &AtomicU64,
) {
    let mut pending: BTreeMap<&'static str, Pending> = BTreeMap::new();
    let mut closed = false;
    let mut tries_left = TRIES_WHEN_STOPPING;
    let take = |pending: &mut BTreeMap<&'static str, Pending>, j: Job| {
        let retry_at = pending.get(j.file).and_then(|p| p.retry_at);
        let (seq, bytes) = (j.seq, j.bytes);
        pending.insert(
            j.file,
            Pending {
                seq,
                bytes,
                retry_at,
            },
        );
    };
    loop {
        // Wait for work or the earliest retry, then take everything queued.
        let now = Instant::now();
        let due = pending.values().map(|p| p.retry_at.unwrap_or(now)).min();
        let first = match (due, closed) {
            (None, true) => return,
            (None, false) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (Some(at), false) => rx.recv_timeout(at.saturating_duration_since(now)),
            (Some(at), true) => {
                std::thread::sleep(at.saturating_duration_since(now));
                Err(RecvTimeoutError::Timeout)
            }
        };
        match first {
            Ok(j) => take(&mut pending, j),
            Err(RecvTimeoutError::Disconnected) => closed = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while let Ok(j) = rx.try_recv() {
            take(&mut pending, j);
        }
        let now = Instant::now();
        let ready: Vec<&'static str> = pending
            .iter()
            .filter(|(_, p)| p.retry_at.is_none_or(|at| at <= now))
            .map(|(f, _)| *f)
            .collect();
        if closed && !ready.is_empty() {
            if tries_left == 0 {
                // Stopping, and the disk still fails: give up (logged).
                return;
            }
            tries_left -= 1;
        }
        for file in ready {
            let p = pending.get_mut(file).expect("ready");
            let seq = p.seq;
            let result = write_atomic(&dir.join(file), &p.bytes).map_err(|e| e.to_string());
            if let Err(e) = &result {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    file = %dir.join(file).display(),
                    "cannot write, retrying in {RETRY:?} (the agent keeps running on what it holds in memory): {e}"
                );
                p.retry_at = Some(Instant::now() + RETRY);
            } else {
                pending.remove(file);
            }
            let _ = saved.send(Saved { file, seq, result });
        }
    }
}

#[cfg(test)]
mod tests;
