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

/// The thread: coalesce, write, report, retry.
fn run(
    dir: &std::path::Path,
    rx: &mpsc::Receiver<Job>,
    saved: &tmpsc::UnboundedSender<Saved>,
    errors: &AtomicU64,
) {
    // The newest content not yet written, per file.
    let mut pending: BTreeMap<&'static str, (u64, Vec<u8>)> = BTreeMap::new();
    let mut retry_at: Option<Instant> = None;
    let mut closed = false;
    loop {
        // Wait for work (or the next retry), then take everything queued.
        let first = match (pending.is_empty(), retry_at) {
            (true, _) if closed => return,
            (true, _) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (false, Some(at)) if !closed => {
                rx.recv_timeout(at.saturating_duration_since(Instant::now()))
            }
            (false, _) => Err(RecvTimeoutError::Timeout),
        };
        match first {
            Ok(j) => {
                pending.insert(j.file, (j.seq, j.bytes));
            }
            Err(RecvTimeoutError::Disconnected) => closed = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        while let Ok(j) = rx.try_recv() {
            pending.insert(j.file, (j.seq, j.bytes));
        }
        if retry_at.is_some_and(|at| Instant::now() < at) && !closed {
            continue;
        }
        retry_at = None;
        let files: Vec<&'static str> = pending.keys().copied().collect();
        for file in files {
            let (seq, bytes) = &pending[file];
            let seq = *seq;
            let result = write_atomic(&dir.join(file), bytes).map_err(|e| e.to_string());
            if let Err(e) = &result {
                errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    file = %dir.join(file).display(),
                    "cannot write, retrying in {RETRY:?} (the agent keeps running on what it holds in memory): {e}"
                );
                retry_at = Some(Instant::now() + RETRY);
            } else {
                pending.remove(file);
            }
            let _ = saved.send(Saved { file, seq, result });
        }
        if closed && retry_at.is_some() {
            // Stopping: one more try after the retry interval, then give up
            // (the caller bounds the wait).
            std::thread::sleep(RETRY);
            retry_at = None;
        }
    }
}

#[cfg(test)]
mod tests;
