//! Unit tests of the data directory and atomic state files.

use super::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct State {
    incarnation: u64,
    leases: BTreeMap<String, String>,
}

fn sample(incarnation: u64) -> State {
    State {
        incarnation,
        leases: BTreeMap::from([("10.0.0.1".to_owned(), "node-a".to_owned())]),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn json_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    save_json(&path, &sample(1)).unwrap();
    assert_eq!(load_json::<State>(&path).unwrap(), Some(sample(1)));
    save_json(&path, &sample(2)).unwrap();
    assert_eq!(load_json::<State>(&path).unwrap(), Some(sample(2)));
    assert_eq!(mode_of(&path), 0o600);
    assert!(fs::read_to_string(&path).unwrap().ends_with("}\n"));
    // No temporary files stay behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
}

#[test]
fn missing_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let got: Option<State> = load_json(&dir.path().join("absent.json")).unwrap();
    assert_eq!(got, None);
}

#[test]
fn corrupt_json_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    fs::write(&path, b"{\"incarnation\": 3, \"leas").unwrap();
    let err = load_json::<State>(&path).unwrap_err();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("corrupt"), "{msg}");
    assert!(msg.contains("move it away"), "{msg}");
    // Valid JSON of the wrong shape is corrupt too.
    fs::write(&path, b"[1, 2]").unwrap();
    assert!(matches!(
        load_json::<State>(&path),
        Err(PersistError::Corrupt { .. })
    ));
}

#[test]
fn unreadable_path_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, even by root.
    let err = load_json::<State>(dir.path()).unwrap_err();
    assert!(matches!(err, PersistError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn leftover_temp_file_does_not_affect_load_or_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    save_json(&path, &sample(1)).unwrap();
    // A crash between creating and renaming the temporary file leaves
    // it behind, half-written; after a restart the same pid may come
    // round again. Simulate leftovers under the next names to be used.
    let counter = AtomicU64::new(0);
    let leftover = |n: u64| {
        dir.path()
            .join(format!(".state.json.tmp.{}.{n}", std::process::id()))
    };
    for n in 0..3 {
        fs::write(leftover(n), b"{\"incarnation\": 99, \"lea").unwrap();
    }
    assert_eq!(load_json::<State>(&path).unwrap(), Some(sample(1)));
    write_atomic_with(&path, &serde_json::to_vec(&sample(2)).unwrap(), &counter).unwrap();
    assert_eq!(load_json::<State>(&path).unwrap(), Some(sample(2)));
    // It skipped the three taken names and used (and renamed) the fourth.
    assert_eq!(counter.load(Ordering::Relaxed), 4);
    assert!(!leftover(3).exists());
    for n in 0..3 {
        assert!(leftover(n).exists());
    }
}

#[test]
fn write_atomic_replaces_content_and_sets_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    fs::write(&path, b"old old old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    write_atomic(&path, b"new").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(mode_of(&path), 0o600);
}

#[test]
fn write_atomic_into_missing_dir_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing/blob");
    assert!(write_atomic(&path, b"x").is_err());
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn data_dir_is_created_with_mode_0700() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/data");
    let data = DataDir::open(&path).unwrap();
    assert_eq!(data.path(), path);
    assert_eq!(mode_of(&path), 0o700);
    assert_eq!(mode_of(&path.join(LOCK_FILE)), 0o600);
    data.save_json("state.json", &sample(5)).unwrap();
    assert_eq!(
        data.load_json::<State>("state.json").unwrap(),
        Some(sample(5))
    );
    assert_eq!(data.file("x"), path.join("x"));
}

#[test]
fn second_open_fails_while_held_and_succeeds_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataDir::open(dir.path()).unwrap();
    let err = DataDir::open(dir.path()).unwrap_err();
    match &err {
        PersistError::Locked { path, pid } => {
            assert_eq!(path, dir.path());
            assert_eq!(*pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(first);
    let again = DataDir::open(dir.path()).unwrap();
    drop(again);
}

#[test]
fn locked_error_without_pid_still_names_the_dir() {
    let dir = tempfile::tempdir().unwrap();
    let first = DataDir::open(dir.path()).unwrap();
    // Another agent that crashed mid-write could leave no pid.
    fs::write(dir.path().join(LOCK_FILE), b"").unwrap();
    let err = DataDir::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, PersistError::Locked { pid: None, .. }),
        "{err:?}"
    );
    drop(first);
}

#[test]
fn file_in_place_of_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    fs::write(&path, b"").unwrap();
    let err = DataDir::open(&path).unwrap_err();
    assert!(matches!(err, PersistError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn symlinked_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    DataDir::open(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = DataDir::open(&link).unwrap_err();
    assert!(matches!(err, PersistError::Symlink { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&link.display().to_string()), "{msg}");
    assert!(msg.contains("symbolic link"), "{msg}");
    assert!(msg.contains("replace the link with a directory"), "{msg}");
    // A dangling link is not created through either.
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(
        DataDir::open(&dangling),
        Err(PersistError::Symlink { .. })
    ));
    assert!(!dir.path().join("nowhere").exists());
    // The check is on what was opened, too.
    assert!(matches!(
        check_dir(&link),
        Err(PersistError::Symlink { .. })
    ));
}

#[test]
fn data_dir_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    fs::create_dir(&path).unwrap();
    for mode in [0o777, 0o770, 0o702] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = DataDir::open(&path).unwrap_err();
        assert!(
            matches!(err, PersistError::Permissions { mode: m, .. } if m == mode),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod 700 {}", path.display())),
            "{msg}"
        );
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
    }
    // Readable by others is fine (what is inside is 0600); the fix works.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    DataDir::open(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    DataDir::open(&path).unwrap();
}

#[test]
fn data_dir_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    fs::create_dir(&path).unwrap();
    if std::os::unix::fs::chown(&path, Some(65534), None).is_err() {
        eprintln!("skipping: cannot chown (not root)");
        return;
    }
    let err = DataDir::open(&path).unwrap_err();
    assert!(
        matches!(err, PersistError::Owner { uid: 65534, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("uid 65534"), "{msg}");
    assert!(
        msg.contains(&format!("chown root {}", path.display())),
        "{msg}"
    );
    // Nothing was written into it.
    assert_eq!(fs::read_dir(&path).unwrap().count(), 0);
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    std::os::unix::fs::chown(&path, Some(euid), None).unwrap();
    DataDir::open(&path).unwrap();
}

#[test]
fn data_dir_that_cannot_be_created_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    // A path below a regular file cannot be created, even by root.
    let err = DataDir::open(file.join("data")).unwrap_err();
    assert!(matches!(err, PersistError::CreateDir { .. }), "{err:?}");
}
