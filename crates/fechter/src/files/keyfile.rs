//! Cluster key files: 32 random bytes, hex-encoded on one line, readable by
//! the owner only (mode 0600).
//!
//! Every node of a cluster loads the same key file; [`generate_key_file`]
//! makes one (behind `fechter keygen PATH`) and refuses to overwrite an
//! existing file, [`load_key_file`] refuses a file that group or other users
//! can access, one owned by a user other than root or the agent's, and
//! anything but a regular file (a FIFO is refused without waiting for a
//! writer). No error message ever contains key material, a [`ClusterKey`]
//! prints as `ClusterKey(..)` and is zeroed when dropped, and so are the
//! buffers the key passes through here.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

/// The 32-byte cluster key. Its bytes are zeroed when it is dropped, and
/// `Debug` never shows them. Dereferences to the bytes, for the seal.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl ClusterKey {
    /// The all-zero key of `--insecure`.
    pub fn insecure() -> ClusterKey {
        ClusterKey([0; KEY_LEN])
    }
}

impl From<[u8; KEY_LEN]> for ClusterKey {
    fn from(mut bytes: [u8; KEY_LEN]) -> ClusterKey {
        let key = ClusterKey(bytes);
        bytes.zeroize();
        key
    }
}

impl Deref for ClusterKey {
    type Target = [u8; KEY_LEN];
    fn deref(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for ClusterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a key file's content in hex characters, without the newline.
pub const KEY_HEX_LEN: usize = 2 * KEY_LEN;

/// Largest key file content read; anything longer is not a key file.
const MAX_FILE_LEN: u64 = 4096;

/// Why a key file could not be generated or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "refusing to overwrite existing file {}: remove it first or choose another path",
        .path.display()
    )]
    AlreadyExists { path: PathBuf },

    #[error(
        "cannot create key file {}: {source}; check that the directory exists and is writable",
        .path.display()
    )]
    Create { path: PathBuf, source: io::Error },

    #[error("cannot write key file {}: {source}; check the free space of its file system", .path.display())]
    Write { path: PathBuf, source: io::Error },

    #[error("the operating system could not provide randomness for a new key: {0}")]
    Randomness(String),

    #[error(
        "cluster key file {} does not exist: create one with `fechter keygen {}` and copy it to every node",
        .path.display(), .path.display()
    )]
    Missing { path: PathBuf },

    #[error(
        "cannot read cluster key file {}: {source}; check that the user running fechter can read it",
        .path.display()
    )]
    Read { path: PathBuf, source: io::Error },

    #[error("cluster key file {} is not a regular file: give the path of the key file itself", .path.display())]
    NotAFile { path: PathBuf },

    #[error(
        "cluster key file {} is owned by uid {uid}, neither root nor the user running fechter (uid {euid}): run `chown root {}` (or chown it to the user running fechter)",
        .path.display(), .path.display()
    )]
    Owner { path: PathBuf, uid: u32, euid: u32 },

    #[error(
        "cluster key file {} has mode {}, so group or other users can access it: run `chmod 600 {}`",
        .path.display(), Mode(*.mode), .path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },

    #[error(
        "cluster key file {} is not a valid key: {detail}; it must hold exactly {KEY_HEX_LEN} hex characters on one line; generate one with `fechter keygen PATH`",
        .path.display()
    )]
    BadContent { path: PathBuf, detail: String },
}

/// Permission bits, shown as in `ls -l` and in octal.
struct Mode(u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0 & 0o777;
        let mut s = String::with_capacity(9);
        for (i, c) in "rwxrwxrwx".chars().enumerate() {
            s.push(if m & (1 << (8 - i)) != 0 { c } else { '-' });
        }
        write!(f, "{m:04o} ({s})")
    }
}

/// Writes a new random key to `path` as 64 lowercase hex characters and a
/// newline, in a file created with mode 0600. Refuses to overwrite an
/// existing file (or symlink).
pub fn generate_key_file(path: &Path) -> Result<(), KeyFileError> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(&mut *key).map_err(|e| KeyFileError::Randomness(e.to_string()))?;
    let mut text = encode_hex(&*key);
    text.push('\n');

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => KeyFileError::AlreadyExists {
                path: path.to_owned(),
            },
            _ => KeyFileError::Create {
                path: path.to_owned(),
                source,
            },
        })?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        // A half-written key file would only confuse later; we created it.
        let _ = fs::remove_file(path);
        return Err(KeyFileError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Reads the key in `path`. Refuses a file that is missing, not a regular
/// file (a FIFO, a device, a directory), owned by a user other than root or
/// the one running fechter, accessible by group or others, or not exactly
/// 64 hex characters (surrounding whitespace such as the trailing newline
/// is ignored). A symbolic link is followed: the file it names is checked.
pub fn load_key_file(path: &Path) -> Result<ClusterKey, KeyFileError> {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it is
    // refused below as not a regular file (on a regular file the flag does
    // nothing). O_NOCTTY: a terminal device never becomes ours.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => KeyFileError::Missing {
                path: path.to_owned(),
            },
            _ => KeyFileError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
    // Check the file actually opened, not the path again.
    let meta = file.metadata().map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyFileError::NotAFile {
            path: path.to_owned(),
        });
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(KeyFileError::Owner {
            path: path.to_owned(),
            uid: meta.uid(),
            euid,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    // Room for all that is read, so the buffer never moves (and leaves no
    // copy of the key behind); zeroed when dropped.
    let mut raw = Zeroizing::new(Vec::with_capacity(MAX_FILE_LEN as usize + 1));
    file.take(MAX_FILE_LEN + 1)
        .read_to_end(&mut raw)
        .map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    parse_key(&raw).map_err(|detail| KeyFileError::BadContent {
        path: path.to_owned(),
        detail,
    })
}

/// Parses 64 hex characters with optional surrounding ASCII whitespace.
/// The error detail never quotes the content.
fn parse_key(raw: &[u8]) -> Result<ClusterKey, String> {
    if raw.len() as u64 > MAX_FILE_LEN {
        return Err(format!("it is larger than {MAX_FILE_LEN} bytes"));
    }
    let text = raw.trim_ascii();
    if text.is_empty() {
        return Err("it is empty".to_owned());
    }
    if text.len() != KEY_HEX_LEN {
        return Err(format!("it holds {} characters", text.len()));
    }
    let mut key = ClusterKey::insecure();
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]);
        let lo = hex_value(pair[1]);
        match (hi, lo) {
            (Some(hi), Some(lo)) => key.0[i] = (hi << 4) | lo,
            _ => {
                let at = if hi.is_none() { 2 * i } else { 2 * i + 1 };
                return Err(format!("character {} is not a hex digit", at + 1));
            }
        }
    }
    Ok(key)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `bytes` in lowercase hex, with room for a newline; zeroed when dropped.
fn encode_hex(bytes: &[u8]) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = Zeroizing::new(String::with_capacity(2 * bytes.len() + 1));
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn generate_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        generate_key_file(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), KEY_HEX_LEN + 1);
        assert!(text.ends_with('\n'));
        let key = load_key_file(&path).unwrap();
        assert_eq!(encode_hex(&key[..]).as_str(), text.trim_end());
        assert_ne!(*key, [0u8; KEY_LEN]);
    }

    #[test]
    fn two_generated_keys_differ() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        generate_key_file(&a).unwrap();
        generate_key_file(&b).unwrap();
        assert_ne!(load_key_file(&a).unwrap(), load_key_file(&b).unwrap());
    }

    #[test]
    fn generated_file_has_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        generate_key_file(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn refuses_to_overwrite_and_leaves_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        generate_key_file(&path).unwrap();
        let before = fs::read(&path).unwrap();
        let err = generate_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("remove it first or choose another path"),
            "{msg}"
        );
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn refuses_file_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        generate_key_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_key_file(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Permissions { mode: 0o644, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("0644 (rw-r--r--)"), "{msg}");
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        // Group-writable alone is refused too.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o620)).unwrap();
        assert!(matches!(
            load_key_file(&path),
            Err(KeyFileError::Permissions { mode: 0o620, .. })
        ));
        // The fix works.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_key_file(&path).is_ok());
    }

    fn write_0600(path: &Path, content: &[u8]) {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .unwrap();
        f.write_all(content).unwrap();
    }

    #[test]
    fn refuses_garbage_content_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 5] = [
            ("empty", b"", "it is empty"),
            ("short", b"abcd\n", "it holds 4 characters"),
            ("long", &[b'a'; 66], "it holds 66 characters"),
            ("nothex", &[b'g'; 64], "character 1 is not a hex digit"),
            ("binary", &[0xff; 5000], "larger than 4096 bytes"),
        ];
        for (name, content, detail) in cases {
            let path = dir.path().join(name);
            write_0600(&path, content);
            let err = load_key_file(&path).unwrap_err();
            assert!(
                matches!(err, KeyFileError::BadContent { .. }),
                "{name}: {err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(detail), "{name}: {msg}");
            assert!(msg.contains("fechter keygen"), "{msg}");
            assert!(!msg.contains("gggg"), "{msg}");
        }
    }

    #[test]
    fn accepts_uppercase_and_surrounding_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let hex = "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff";
        write_0600(&path, format!("  {hex}\r\n").as_bytes());
        let key = load_key_file(&path).unwrap();
        assert_eq!(encode_hex(&key[..]).as_str(), hex.to_ascii_lowercase());
    }

    #[test]
    fn missing_file_suggests_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.key");
        let err = load_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Missing { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("fechter keygen {}", path.display())),
            "{err}"
        );
    }

    #[test]
    fn directory_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::DirBuilder::new().create(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        let err = load_key_file(&sub).unwrap_err();
        assert!(matches!(err, KeyFileError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        let err = load_key_file(&path).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(matches!(err, KeyFileError::NotAFile { .. }), "{err:?}");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn device_is_refused() {
        let err = load_key_file(Path::new("/dev/null")).unwrap_err();
        assert!(matches!(err, KeyFileError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn file_owned_by_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        generate_key_file(&path).unwrap();
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if std::os::unix::fs::chown(&path, Some(65534), None).is_err() {
            eprintln!("skipping: cannot chown (not root)");
            return;
        }
        assert_ne!(euid, 65534);
        let err = load_key_file(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Owner { uid: 65534, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("uid 65534"), "{msg}");
        assert!(
            msg.contains(&format!("chown root {}", path.display())),
            "{msg}"
        );
        // The fix works.
        std::os::unix::fs::chown(&path, Some(euid), None).unwrap();
        assert!(load_key_file(&path).is_ok());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = ClusterKey::from([0xab; KEY_LEN]);
        let shown = format!("{key:?} {:?}", Some(key.clone()));
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        assert_eq!(shown, "ClusterKey(..) Some(ClusterKey(..))");
    }

    #[test]
    fn drop_zeroes_the_key() {
        let mut slot = std::mem::MaybeUninit::new(ClusterKey::from([0xab; KEY_LEN]));
        let ptr = slot.as_mut_ptr();
        // SAFETY: `slot` holds an initialised key; it is dropped in place
        // once and its memory (still ours) read as plain bytes afterwards.
        let bytes = unsafe {
            std::ptr::drop_in_place(ptr);
            std::ptr::read(ptr.cast::<[u8; KEY_LEN]>())
        };
        assert_eq!(bytes, [0; KEY_LEN]);
    }

    #[test]
    fn generate_in_missing_directory_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/cluster.key");
        let err = generate_key_file(&path).unwrap_err();
        assert!(matches!(err, KeyFileError::Create { .. }), "{err:?}");
        assert!(err.to_string().contains("directory exists"), "{err}");
    }
}
