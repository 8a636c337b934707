//! The recovery row of `ptm bench --disk`: how long a journaled pool takes to open after a crash
//! that left a full journal (just under the default 64 MiB bound) to replay.
//!
//! A pool's transactions fill its journal (buffered durability, then one `Pool::sync`, so filling
//! takes seconds, not thousands of `fdatasync`s); the pool and journal files are then copied as a
//! crash would leave them (the pool stays open: no checkpoint runs), the copies are synced and
//! dropped from the page cache (`posix_fadvise(DONTNEED)`, so replay reads the disk), and opening
//! the copy is timed: replay of every record onto the home file, its `fdatasync`, ptm's undo
//! recovery and the new journal epoch.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use ptm::{JournalOptions, PCell, Persistent, Pool, PoolOptions};

use crate::Failure;

/// Cells of the recovery pool's root (1 MiB): transactions rewrite windows of it.
const CELLS: usize = 128 << 10;
/// Cells the filling transactions rewrite: one (many small records over scattered pages) or
/// 8 Ki (64 KiB: few large records).
pub(crate) const WINDOWS: [usize; 2] = [1, 8 << 10];
/// Size of the recovery pool.
const POOL_SIZE: u64 = 64 << 20;
/// Stop filling once the journal holds this much (the default bound is 64 MiB; a sync past it
/// would checkpoint and empty the journal).
const FILL: u64 = 62 << 20;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Cells {
    cells: [PCell<u64>; CELLS],
}

/// What the recovery measurement saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recovery {
    /// Cells each filling transaction rewrote.
    pub(crate) window: usize,
    /// Journal bytes replayed (record headers included).
    pub(crate) journal_bytes: u64,
    /// Records replayed.
    pub(crate) records: u64,
    /// Milliseconds `Pool::open` took on the crash copy.
    pub(crate) open_ms: f64,
}

/// Fills a journal with transactions each rewriting `window` cells, copies the crash state and
/// times its recovery, in `dir`.
pub(crate) fn measure(dir: &Path, window: usize) -> Result<Recovery, Failure> {
    let path = dir.join(format!("recovery-{window}.pool"));
    let opts = PoolOptions::new()
        .layout("ptm-recovery-bench")
        .engine(ptm::Engine::Journaled)
        .journal(JournalOptions::new().buffered(std::time::Duration::from_secs(3600)));
    let pool =
        Pool::<Cells>::create(&path, POOL_SIZE, &opts).map_err(|e| Failure(format!("recovery pool: {e}")))?;
    let live = |pool: &Pool<Cells>| pool.region().journal_stats().map_or(0, |s| s.live_bytes);
    let mut round = 0u64;
    while live(&pool) < FILL {
        let start = place(round, window);
        pool.transaction(|tx, root| {
            let window = &root.cells[start..start + window];
            tx.snapshot(|b| window.iter().try_for_each(|c| b.add(c)))?;
            window.iter().try_for_each(|c| c.set(tx, round))
        })
        .map_err(|e| Failure(format!("recovery fill: {e}")))?;
        round += 1;
    }
    pool.sync().map_err(|e| Failure(format!("recovery sync: {e}")))?;

    // The crash: copy both files while the pool is open (its home file holds only what a
    // checkpoint wrote), then drop the pool normally (its own files, not the copies).
    let crash = dir.join(format!("recovery-{window}-crash.pool"));
    let journal = pmem_core::internals::journal::default_journal_path(&path);
    let crash_journal = pmem_core::internals::journal::default_journal_path(&crash);
    for (from, to) in [(&path, &crash), (&journal, &crash_journal)] {
        std::fs::copy(from, to).map_err(|e| Failure(format!("copying {}: {e}", from.display())))?;
        evict(to)?;
    }
    drop(pool);

    let t = Instant::now();
    let reopened = Pool::<Cells>::open(&crash, &PoolOptions::new().layout("ptm-recovery-bench"))
        .map_err(|e| Failure(format!("recovery open: {e}")))?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let report = reopened.region().replay_report();
    // The last filling transaction's values are there.
    let last = round - 1;
    let at = place(last, window);
    let got = reopened
        .transaction(|tx, root| Ok::<_, ptm::Error>(root.cells[at].get(tx)))
        .map_err(|e| Failure(format!("recovery read: {e}")))?;
    if got != last {
        return Err(Failure(format!(
            "recovery bench: cell {at} holds {got} after replay, expected {last}"
        )));
    }
    Ok(Recovery {
        window,
        journal_bytes: report.bytes,
        records: report.records,
        open_ms,
    })
}

/// The first cell transaction `round` rewrites: windows in turn, or a scattered cell.
fn place(round: u64, window: usize) -> usize {
    if window == 1 {
        (round.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize % CELLS
    } else {
        (round as usize * window) % CELLS
    }
}

/// Syncs `path` and drops its pages from the page cache, so the next reads come from the disk.
fn evict(path: &Path) -> Result<(), Failure> {
    let f = std::fs::File::open(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    f.sync_all()
        .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    // SAFETY: a valid open descriptor; POSIX_FADV_DONTNEED over the whole file only drops clean
    // cached pages.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        return Err(Failure(format!(
            "{}: posix_fadvise: {}",
            path.display(),
            std::io::Error::from_raw_os_error(r)
        )));
    }
    Ok(())
}
