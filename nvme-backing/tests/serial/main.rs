//! nvme-backing's integration tests that must not share this process with other tests running at
//! the same time, as one test binary whose tests run one at a time (each takes [`serial`] first):
//! they spawn processes (this binary re-executed, to be killed or to die of a signal), fill the
//! process-wide region table, or count this process's fault-service threads. One file per
//! concern, each a module opening with a `//!` line; a new concern is a new file here and a `mod`
//! line below. A test that re-executes this binary names itself `module::test` for `--exact`.

mod pool_kill;
mod signals;
mod too_many_regions;
mod uffd_service;

/// The lock every test of this binary takes first and holds to its end, so they run one at a
/// time. A poisoned lock (a test that failed) still serializes.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
