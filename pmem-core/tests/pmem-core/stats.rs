//! Guards the per-thread persistence counters' bookkeeping entry points (killing the
//! cargo-mutants survivors of `flush.rs`: `count_fsync` and `reset_thread_stats` replaced by
//! no-ops, or the fsync count multiplied instead of added).

use pmem_core::internals::flush::count_fsync;
use pmem_core::{reset_thread_stats, thread_stats, PersistStats};

#[test]
fn count_fsync_counts_one_sync_per_call() {
    let before = thread_stats();
    count_fsync();
    count_fsync();
    let d = thread_stats().since(&before);
    assert_eq!(d.fsyncs, 2);
    assert_eq!(
        (d.lines_flushed, d.drains, d.pages_synced, d.nt_bytes),
        (0, 0, 0, 0)
    );
}

#[test]
fn reset_thread_stats_zeroes_every_counter() {
    count_fsync();
    assert_ne!(thread_stats(), PersistStats::default());
    reset_thread_stats();
    assert_eq!(thread_stats(), PersistStats::default());
}
