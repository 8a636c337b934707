//! Guards what a transaction hands back when it releases its lane, in the same process (no
//! reopen rebuilds the allocator's index): chunk runs it freed and log extents it used are
//! reusable by the next transactions, so a loop that frees what it allocates never runs out.

use crate::common;

use ptm::{Error, PCell, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    lines: [PCell<[u64; 8]>; 64],
    run: PCell<u64>,
}

const RUN: u64 = 1 << 20;

/// A new 16 MiB pool in `dir` and its free heap bytes.
fn pool(dir: &tempfile::TempDir, name: &str, opts: &ptm::PoolOptions) -> (Pool<Root>, u64) {
    let pool = Pool::<Root>::create(common::path(dir, name), 16 << 20, opts).unwrap();
    let free = pool.heap_free();
    (pool, free)
}

/// Pool options whose 8 KiB lanes 64 line records overflow (the log goes on in heap extents).
fn small_lanes() -> ptm::PoolOptions {
    common::pmem().lane_size(8192)
}

/// Runs `f` in three transactions that then abort: after each, the heap's free bytes must be
/// `free` again.
fn aborts_give_everything_back(
    pool: &Pool<Root>,
    free: u64,
    f: impl Fn(&ptm::Transaction<'_>) -> Result<(), Error>,
) {
    for i in 0..3u64 {
        let r: Result<(), Error> = pool.transaction(|tx, _| {
            f(tx)?;
            Err(Error::InvalidOptions("abort on purpose"))
        });
        assert!(
            matches!(r, Err(Error::InvalidOptions(_))),
            "transaction {i}: {r:?}"
        );
        assert_eq!(pool.heap_free(), free, "after transaction {i}");
    }
}

#[test]
fn freed_runs_are_reusable_in_the_same_process() {
    let dir = common::shm_dir();
    let (pool, free) = pool(&dir, "runs.pool", &common::pmem());
    // Many times the heap's size in total, one run live at a time.
    for i in 0..3 * free / RUN {
        pool.transaction(|tx, r| r.run.set(tx, tx.alloc_bytes(RUN)?))
            .unwrap_or_else(|e| panic!("allocation {i}: {e}"));
        pool.transaction(|tx, r| {
            tx.free_bytes(r.run.get(tx))?;
            r.run.set(tx, 0)
        })
        .unwrap_or_else(|e| panic!("free {i}: {e}"));
    }
    assert_eq!(pool.heap_free(), free);
}

#[test]
fn log_extents_are_reusable_in_the_same_process() {
    let dir = common::shm_dir();
    let (pool, free) = pool(&dir, "extents.pool", &small_lanes());
    // Each transaction logs a fresh run's worth of undo records (more than a lane holds), so
    // its log continues in heap extents; then it aborts, so the run is not kept either.
    for i in 0..3 * free / RUN {
        let r: Result<(), Error> = pool.transaction(|tx, r| {
            let off = tx.alloc_bytes(RUN)?;
            r.run.set(tx, off)?;
            for (k, l) in r.lines.iter().enumerate() {
                l.set(tx, [i * 100 + k as u64; 8])?;
            }
            Err(Error::InvalidOptions("abort on purpose"))
        });
        assert!(
            matches!(r, Err(Error::InvalidOptions(_))),
            "transaction {i}: {r:?}"
        );
    }
    assert_eq!(pool.heap_free(), free);
    let v = pool.transaction(|tx, r| Ok::<_, Error>((r.run.get(tx), r.lines[5].get(tx)[0])));
    assert_eq!(v.unwrap(), (0, 0));
}

#[test]
fn log_extents_of_a_transaction_that_only_stores_are_given_back() {
    let dir = common::shm_dir();
    let (pool, free) = pool(&dir, "stores.pool", &small_lanes());
    // No allocation, no free: the log extents are the only thing this transaction hands back.
    for i in 0..3u64 {
        pool.transaction(|tx, r| r.lines.iter().try_for_each(|l| l.set(tx, [i; 8])))
            .unwrap();
        assert_eq!(pool.heap_free(), free, "after transaction {i}");
    }
    let v = pool.transaction(|tx, r| Ok::<_, Error>(r.lines[63].get(tx)[7]));
    assert_eq!(v.unwrap(), 2);
}

#[test]
fn a_run_reserved_by_an_aborted_transaction_is_given_back() {
    let dir = common::shm_dir();
    let (pool, free) = pool(&dir, "reserved.pool", &common::pmem());
    // The transaction's only trace is the run it reserved (no store, no log extent).
    aborts_give_everything_back(&pool, free, |tx| tx.alloc_bytes(RUN).map(drop));
}

#[test]
fn a_run_allocated_and_freed_by_an_aborted_transaction_is_given_back() {
    let dir = common::shm_dir();
    let (pool, free) = pool(&dir, "freed-new.pool", &common::pmem());
    // The transaction's only trace is a run it allocated and freed again (no store, no log
    // extent, nothing reserved any more).
    aborts_give_everything_back(&pool, free, |tx| tx.free_bytes(tx.alloc_bytes(RUN)?));
}

#[test]
fn a_slab_made_and_emptied_by_an_aborted_transaction_is_given_back() {
    let dir = common::shm_dir();
    // A pool with too few chunks to keep an empty slab per class (SCARCE_CHUNKS in alloc.rs).
    let pool = Pool::<Root>::create(common::path(&dir, "cancelled.pool"), 8 << 20, &common::pmem()).unwrap();
    let free = pool.heap_free();
    // One small block allocated and freed, then an abort: the slab made for it is cancelled,
    // and its chunk is the only thing the transaction hands back.
    aborts_give_everything_back(&pool, free, |tx| tx.free_bytes(tx.alloc_bytes(4096)?));
}

#[test]
fn a_block_freed_in_a_full_slab_is_the_next_allocation_of_its_class() {
    use ptm::internals::heap::{slab_geom, CHUNK, CLASSES};
    let dir = common::shm_dir();
    let (pool, _) = pool(&dir, "full-slab.pool", &common::pmem());
    let c = CLASSES.iter().position(|&b| b == 4096).unwrap();
    let g = slab_geom(c);
    // Two transactions each fill exactly one slab: the second finds the first full (and drops
    // it from the slabs with room) before it makes its own.
    let fill = || {
        pool.transaction(|tx, _| {
            (0..g.blocks)
                .map(|_| tx.alloc_bytes(4096))
                .collect::<Result<Vec<_>, Error>>()
        })
        .unwrap()
    };
    let (first, second) = (fill(), fill());
    for blocks in [&first, &second] {
        let span = blocks.iter().max().unwrap() - blocks.iter().min().unwrap();
        assert!(span < g.chunks * CHUNK, "one slab: {blocks:x?}");
    }
    let freed = first[first.len() / 2];
    pool.transaction(|tx, _| tx.free_bytes(freed)).unwrap();
    let free = pool.heap_free();
    // The free made room in the first slab, the only room of the class: the next block of the
    // class is the one freed, and no chunk goes to a new slab.
    let next = pool.transaction(|tx, _| tx.alloc_bytes(4096)).unwrap();
    assert_eq!(next, freed, "the next 4096-byte block");
    assert_eq!(pool.heap_free(), free);
}

#[test]
fn a_lane_keeps_its_slab_after_an_abort_and_after_a_commit_that_returns_another_slab() {
    use ptm::internals::heap::{slab_geom, CLASSES};
    let dir = common::shm_dir();
    let path = common::path(&dir, "hint.pool");
    // A small pool: too few free chunks to keep an emptied slab, so it is returned.
    let pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem()).unwrap();
    let (first, small) = pool
        .transaction(|tx, _| Ok::<_, Error>((tx.alloc_bytes(4096)?, tx.alloc_bytes(128)?)))
        .unwrap();
    // After a reopen the 4096-byte slab is found in the index (not made) by the next
    // allocation of its class, and stays this lane's current slab of the class.
    drop(pool);
    let pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let g = slab_geom(CLASSES.iter().position(|&b| b == 4096).unwrap());
    let in_first_slab =
        |off: u64| off >= first && (off - first).is_multiple_of(4096) && (off - first) / 4096 < g.blocks;
    let mut blocks = vec![pool.transaction(|tx, _| tx.alloc_bytes(4096)).unwrap()];
    // An aborted transaction that reserved a run of its own.
    let r: Result<(), Error> = pool.transaction(|tx, _| {
        tx.alloc_bytes(RUN)?;
        Err(Error::InvalidOptions("abort on purpose"))
    });
    assert!(matches!(r, Err(Error::InvalidOptions(_))), "{r:?}");
    blocks.push(pool.transaction(|tx, _| tx.alloc_bytes(4096)).unwrap());
    // A commit that empties (and so returns) the 128-byte slab.
    pool.transaction(|tx, _| tx.free_bytes(small)).unwrap();
    blocks.push(pool.transaction(|tx, _| tx.alloc_bytes(4096)).unwrap());
    // Each came from the slab the lane was using, not from a new one.
    for (i, &b) in blocks.iter().enumerate() {
        assert!(
            in_first_slab(b),
            "block {i} at {b:#x}: not in the slab at {first:#x}"
        );
    }
}

/// A transaction whose every log record was taken back (a slab made for one block, the block
/// freed before any drain, on a heap too short of chunks to keep the emptied slab: the slab is
/// not made after all) commits without a drain, and still stores its completion mark, its seq
/// in the lane's `completed` word: stale copies of the taken-back records may reach the media,
/// and the mark retires them (design §8.3, `Transaction::take_back`).
#[test]
fn a_transaction_whose_records_were_all_taken_back_marks_itself_complete() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "taken-back.pool");
    let pool = Pool::<Root>::create(&path, 4 << 20, &common::pmem().lanes(1)).unwrap();
    let lane = pool.geometry().lane(0) as usize;
    // The pool file on tmpfs shows memory as it is now.
    let completed = || {
        let b = std::fs::read(&path).unwrap();
        u64::from_le_bytes(b[lane..lane + 8].try_into().unwrap())
    };
    let free = pool.heap_free();
    pool.transaction(|tx, r| r.run.set(tx, 1)).unwrap();
    let last = completed();
    assert_ne!(last, 0, "a committed transaction's mark");
    let before = ptm::thread_stats();
    pool.transaction(|tx, _| {
        let a = tx.alloc_bytes(4096)?;
        tx.free_bytes(a)
    })
    .unwrap();
    let d = ptm::thread_stats().since(&before);
    assert_eq!(d.drains, 0, "records taken back: nothing to commit");
    assert_eq!(pool.heap_free(), free, "the slab's chunk is free again");
    // Lane 0's seqs are 1024 apart (design §8.1).
    assert_eq!(completed(), last + 1024, "the lane's completed word");
}
