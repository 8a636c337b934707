//! pmem-core's integration tests that must not share this process with other tests running at
//! the same time, as one test binary whose tests run one at a time (each takes [`serial`] first):
//! they spawn processes (this binary re-executed, `flock(1)`, cargo for the UI tests), and a
//! spawned child holds a copy of every open descriptor of this process until it execs, with them
//! the pool locks of tests on other threads (design §4). One file per concern, each a module
//! opening with a `//!` line; a new concern is a new file here and a `mod` line below.

#[path = "../common/mod.rs"]
mod common;

mod derive;
mod domain_env;
#[cfg(target_arch = "x86_64")]
mod flush_lines;
mod lock_process;

/// The lock every test of this binary takes first and holds to its end, so they run one at a
/// time. A poisoned lock (a test that failed) still serializes.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
