//! Helpers shared by the namespace tests.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use fechter_linux::lab::{self, Lab};

/// Checks that no namespace of `prefix` is left and that every namespace that
/// existed `before` (other than labs of concurrently running tests) is still
/// there and nothing else appeared.
pub fn assert_netns_restored(prefix: &str, before: &[String]) {
    let after = lab::netns_list().expect("ip netns list");
    let leftovers: Vec<&String> = after.iter().filter(|n| n.starts_with(prefix)).collect();
    assert!(
        leftovers.is_empty(),
        "lab {prefix} left namespaces: {leftovers:?}"
    );
    // Labs of tests running in parallel come and go; they all start with "fch"
    // and are checked by their own tests.
    let is_other_lab = |n: &String| n.starts_with("fch");
    for name in before.iter().filter(|n| !is_other_lab(n)) {
        assert!(after.contains(name), "namespace {name} disappeared");
    }
    for name in after.iter().filter(|n| !is_other_lab(n)) {
        assert!(before.contains(name), "namespace {name} appeared");
    }
}

/// Polls `check` every `every` until it returns true, at most `limit` long.
/// Returns how long it took, or `None` if it never became true.
pub async fn poll_until<F, Fut>(limit: Duration, every: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let rounds = limit.as_millis() / every.as_millis().max(1) + 1;
    for _ in 0..rounds {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            break;
        }
        tokio::time::sleep(every).await;
    }
    None
}

/// Blocking version of [`poll_until`] for code outside a runtime.
pub fn poll_until_blocking(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let rounds = limit.as_millis() / every.as_millis().max(1) + 1;
    for _ in 0..rounds {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            break;
        }
        std::thread::sleep(every);
    }
    None
}

/// A lab, or `None` when the test must be skipped (not root, no `ip netns`,
/// no `ping`; a failure under CI=true instead).
pub fn lab(test: &str, nodes: usize) -> Option<Lab> {
    if !lab::require_lab(test) {
        return None;
    }
    Some(Lab::new(nodes).expect("building the namespace lab"))
}
