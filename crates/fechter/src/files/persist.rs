//! Atomic state files and the agent's locked data directory.
//!
//! [`write_atomic`] never leaves a half-written file behind: it writes a
//! temporary file in the same directory, syncs it, renames it over the
//! target and syncs the directory, so after a crash the target holds either
//! the old or the new content. [`load_json`] treats a missing file as "no
//! state yet" but never silently resets a corrupt one. [`DataDir`] holds an
//! exclusive `flock` on `fechter.lock` inside the directory for as long as
//! it lives, so two agents never share one data directory. It refuses a
//! data directory that is a symbolic link, owned by a user other than root
//! or the agent's, or writable by group or others: whoever could change the
//! directory could change the state the agent trusts.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Name of the lock file inside a [`DataDir`].
pub const LOCK_FILE: &str = "fechter.lock";

/// Why a state file or the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(
        "cannot read state file {}: {source}; check that the user running fechter can read it",
        .path.display()
    )]
    Read { path: PathBuf, source: io::Error },

    #[error(
        "state file {} is corrupt: {source}; fechter does not reset state on its own: repair the file, or move it away to start from empty state",
        .path.display()
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("cannot encode state for {}: {source}", .path.display())]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error(
        "cannot write state file {}: {source}; check free space and that its directory is writable",
        .path.display()
    )]
    Write { path: PathBuf, source: io::Error },

    #[error(
        "data directory {} exists but is not a directory: remove it or choose another data directory",
        .path.display()
    )]
    NotADirectory { path: PathBuf },

    #[error(
        "data directory {} is a symbolic link, which fechter does not follow: give the directory it points to (--data-dir or data_dir), or replace the link with a directory (mode 0700)",
        .path.display()
    )]
    Symlink { path: PathBuf },

    #[error(
        "data directory {} is owned by uid {uid}, neither root nor the user running fechter (uid {euid}): run `chown root {}` (or chown it to the user running fechter), or choose another data directory",
        .path.display(), .path.display()
    )]
    Owner { path: PathBuf, uid: u32, euid: u32 },

    #[error(
        "data directory {} has mode {mode:04o}, so group or other users can change the agent's state: run `chmod 700 {}`",
        .path.display(), .path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },

    #[error(
        "cannot create data directory {}: {source}; create it by hand (mode 0700) or choose another data directory",
        .path.display()
    )]
    CreateDir { path: PathBuf, source: io::Error },

    #[error(
        "data directory {} is not writable: {source}; fix its ownership and permissions or choose another data directory",
        .path.display()
    )]
    NotWritable { path: PathBuf, source: io::Error },

    #[error(
        "data directory {} is in use by another fechter agent{}: stop that agent, or give this one its own data directory",
        .path.display(),
        match .pid { Some(pid) => format!(" (pid {pid})"), None => String::new() }
    )]
    Locked { path: PathBuf, pid: Option<u32> },

    #[error("cannot lock data directory {}: {source}", .path.display())]
    Lock { path: PathBuf, source: io::Error },
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory `path` lives in; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces the file at `path` with `bytes`, atomically: after a crash the
/// file holds either its old or its new content, never a mix. The new
/// file has mode 0600.
///
/// The temporary file is `.<name>.tmp.<pid>.<counter>` in the same
/// directory; it is removed if writing fails. A leftover from a crash is
/// harmless and never read.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, bytes, &TEMP_COUNTER)
}

fn write_atomic_with(path: &Path, bytes: &[u8], counter: &AtomicU64) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let (tmp_path, mut tmp) = loop {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp.{}.{n}", std::process::id()));
        let tmp_path = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
        {
            Ok(f) => break (tmp_path, f),
            // A leftover of an earlier process with the same pid: next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = tmp
        .write_all(bytes)
        .and_then(|()| tmp.sync_all())
        .and_then(|()| fs::rename(&tmp_path, path));
    drop(tmp);
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Reads and decodes the JSON state file at `path`: `Ok(None)` if it does
/// not exist; an error naming the file if it cannot be read or decoded.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, PersistError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| PersistError::Corrupt {
            path: path.to_owned(),
            source,
        })
}

/// `value` as a state file holds it: pretty JSON with a trailing newline.
pub fn json_bytes<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Encodes `value` with [`json_bytes`] and writes it to `path` with
/// [`write_atomic`].
pub fn save_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), PersistError> {
    let bytes = json_bytes(value).map_err(|source| PersistError::Encode {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes).map_err(|source| PersistError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The agent's data directory, exclusively locked while this value lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    /// Holds the `flock`; closing it (on drop) releases the lock.
    _lock: File,
}

impl DataDir {
    /// Opens the data directory at `path`, creating it (mode 0700) if
    /// missing, checks that it is writable and locks it. Fails if another
    /// agent (or another `DataDir` in this process) holds it, and refuses
    /// a directory that is a symbolic link (its last component: the
    /// directories above it are the administrator's), owned by a user other
    /// than root or the agent's, or writable by group or others. The checks
    /// are made on the directory as opened (`O_NOFOLLOW`), not on its path.
    pub fn open(path: impl AsRef<Path>) -> Result<DataDir, PersistError> {
        let path = path.as_ref().to_owned();
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Err(PersistError::Symlink { path }),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(PersistError::NotADirectory { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&path)
                    .map_err(|source| PersistError::CreateDir {
                        path: path.clone(),
                        source,
                    })?;
            }
            Err(source) => return Err(PersistError::CreateDir { path, source }),
        }
        check_dir(&path)?;

        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|source| PersistError::NotWritable {
                path: path.clone(),
                source,
            })?;
        // SAFETY: flock only reads the descriptor, which `lock` owns and
        // keeps open for the duration of the call.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let source = io::Error::last_os_error();
            if source.kind() == io::ErrorKind::WouldBlock {
                let pid = read_pid(&mut lock);
                return Err(PersistError::Locked { path, pid });
            }
            return Err(PersistError::Lock { path, source });
        }

        // Ours now: record our pid for the error message of the next one.
        let pid_written = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .and_then(|()| lock.sync_all());
        if let Err(source) = pid_written {
            return Err(PersistError::NotWritable { path, source });
        }

        // The lock file may predate a permission change: probe for real.
        let probe = path.join(format!(".write-probe.{}", std::process::id()));
        write_atomic(&probe, b"")
            .and_then(|()| fs::remove_file(&probe))
            .map_err(|source| PersistError::NotWritable {
                path: path.clone(),
                source,
            })?;

        Ok(DataDir { path, _lock: lock })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the file `name` inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// [`load_json`] of the file `name` inside the directory.
    pub fn load_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, PersistError> {
        load_json(&self.file(name))
    }

    /// [`save_json`] to the file `name` inside the directory.
    pub fn save_json<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), PersistError> {
        save_json(&self.file(name), value)
    }
}

/// Opens the directory at `path` without following a symbolic link and
/// checks, on what was opened, that it is a directory owned by root or by
/// this process's user, and not writable by group or others.
fn check_dir(path: &Path) -> Result<(), PersistError> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            // A symlink: ELOOP (with O_DIRECTORY, Linux says ENOTDIR);
            // anything else that is not a directory: ENOTDIR.
            Some(libc::ELOOP | libc::ENOTDIR) => {
                let link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
                if link || source.raw_os_error() == Some(libc::ELOOP) {
                    PersistError::Symlink {
                        path: path.to_owned(),
                    }
                } else {
                    PersistError::NotADirectory {
                        path: path.to_owned(),
                    }
                }
            }
            _ => PersistError::NotWritable {
                path: path.to_owned(),
                source,
            },
        })?;
    let meta = dir.metadata().map_err(|source| PersistError::NotWritable {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(PersistError::Owner {
            path: path.to_owned(),
            uid: meta.uid(),
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PersistError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The pid recorded in a lock file, if it holds one.
fn read_pid(lock: &mut File) -> Option<u32> {
    let mut text = String::new();
    lock.rewind().ok()?;
    lock.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests;
