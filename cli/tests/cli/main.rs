//! End-to-end tests of the `ptm` binary, as one test binary (one to link instead of one per
//! file). One file per concern (a subcommand or a failure), each a module opening with a `//!`
//! line: a new concern is a new file here and a `mod` line below.
//!
//! Every test spawns `ptm`, and a spawned child holds a copy of every open descriptor of this
//! process until it execs, with them the locks of pools open here (design §4). So a test that
//! opens a pool in this process takes [`exclusive`] for its whole body, and every other test
//! [`shared`]: no child is spawned while a pool of this process is open.

mod bench;
mod bench_disk;
mod bench_pause;
mod check_walk;
mod cli;
mod corrupt_log;
mod crashtest;
mod demo;
mod grow;
mod info_schema;

static POOLS_IN_PROCESS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Taken by a test that only spawns processes (opens no pool in this process).
fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    POOLS_IN_PROCESS.read().unwrap_or_else(|e| e.into_inner())
}

/// Taken by a test that opens a pool in this process: no other test spawns a child meanwhile.
fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    POOLS_IN_PROCESS.write().unwrap_or_else(|e| e.into_inner())
}
