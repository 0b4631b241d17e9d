//! Unit tests of [`super::Writer`]: coalesced writes, outcomes reported,
//! failures retried until the disk is back, queued writes finished.

use std::time::Duration;

use super::*;

/// Waits for the outcome of `file` at `seq` (or later).
fn outcome(rx: &mut tmpsc::UnboundedReceiver<Saved>, file: &str, seq: u64) -> Saved {
    loop {
        let s = rx.blocking_recv().expect("the writer reports");
        if s.file == file && s.seq >= seq {
            return s;
        }
    }
}

#[test]
fn the_newest_content_is_written_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, mut rx) = Writer::spawn(dir.path().to_owned()).unwrap();
    for i in 0..50 {
        w.write("a.json", format!("{i}").into_bytes());
    }
    let last = w.write("a.json", b"last".to_vec());
    let s = outcome(&mut rx, "a.json", last);
    assert_eq!(s.result, Ok(()));
    assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"last");
    assert_eq!(w.errors(), 0);
    assert!(w.finish(Duration::from_secs(5)));
}

#[test]
fn a_failed_write_is_reported_then_retried_until_it_succeeds() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("gone");
    let (mut w, mut rx) = Writer::spawn(dir.clone()).unwrap();
    let seq = w.write("state.json", b"one".to_vec());
    let s = outcome(&mut rx, "state.json", seq);
    assert!(s.result.is_err(), "{s:?}");
    assert!(w.errors() >= 1);
    // The disk comes back: the same content lands without a new write.
    std::fs::create_dir(&dir).unwrap();
    let s = outcome(&mut rx, "state.json", seq);
    assert_eq!(s.result, Ok(()), "{s:?}");
    assert_eq!(std::fs::read(dir.join("state.json")).unwrap(), b"one");
    assert!(w.finish(Duration::from_secs(5)));
}

#[test]
fn finish_writes_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, _rx) = Writer::spawn(dir.path().to_owned()).unwrap();
    w.write("a.json", b"a".to_vec());
    w.write("b.json", b"b".to_vec());
    assert!(w.finish(Duration::from_secs(5)));
    assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"a");
    assert_eq!(std::fs::read(dir.path().join("b.json")).unwrap(), b"b");
}

#[test]
fn a_failing_file_holds_no_other_back_and_stopping_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should be: every write of it fails.
    std::fs::create_dir(dir.path().join("bad.json")).unwrap();
    let (mut w, mut rx) = Writer::spawn(dir.path().to_owned()).unwrap();
    let bad = w.write("bad.json", b"x".to_vec());
    assert!(outcome(&mut rx, "bad.json", bad).result.is_err());
    // Within the bad file's retry interval, another file is written at once.
    let t = std::time::Instant::now();
    let good = w.write("good.json", b"y".to_vec());
    assert_eq!(outcome(&mut rx, "good.json", good).result, Ok(()));
    assert!(t.elapsed() < RETRY, "waited {:?}", t.elapsed());
    // Stopping: a few more tries, then the thread gives up by itself.
    assert!(!w.finish(Duration::from_secs(1)), "nothing failed?");
    let t = std::time::Instant::now();
    while rx.blocking_recv().is_some() {}
    assert!(
        t.elapsed() < RETRY * (TRIES_WHEN_STOPPING + 2),
        "the thread went on for {:?}",
        t.elapsed()
    );
}
