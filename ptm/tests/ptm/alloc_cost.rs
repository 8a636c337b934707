//! Guards what an allocation costs at commit: the new-range record of a small block covers the
//! bytes asked for, not the whole block of its class, so the commit flushes (and hashes) only
//! the lines the caller can have written; and what a free costs: the same on a scarce heap as
//! on a plentiful one while its slab stays in use.

use crate::common;

use ptm::internals::heap::class_of;
use ptm::{thread_stats, PCell, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    n: PCell<u64>,
}

/// Lines flushed by one committed transaction that allocates `size` bytes.
fn lines_flushed_by_an_allocation_of(pool: &Pool<Root>, size: u64) -> u64 {
    let before = thread_stats();
    pool.transaction(|tx, _| tx.alloc_bytes(size).map(|_| ()))
        .unwrap();
    thread_stats().since(&before).lines_flushed
}

#[test]
fn an_allocation_flushes_the_lines_it_asked_for_not_its_whole_block() {
    let (small, whole) = (1025u64, 1536u64);
    assert_eq!(class_of(small), class_of(whole), "one class, one block size");
    let dir = common::shm_dir();
    let pool = Pool::<Root>::create(common::path(&dir, "cost.pool"), 16 << 20, &common::pmem()).unwrap();
    // The class's slab exists before the measured transactions (no bitmap or descriptor
    // writes of a new slab in them); each measured one takes a block of it.
    pool.transaction(|tx, _| tx.alloc_bytes(whole).map(|_| ()))
        .unwrap();
    let for_small = lines_flushed_by_an_allocation_of(&pool, small);
    let for_whole = lines_flushed_by_an_allocation_of(&pool, whole);
    let again_small = lines_flushed_by_an_allocation_of(&pool, small);
    assert_eq!(
        for_small, again_small,
        "the same transaction flushes the same lines"
    );
    assert_eq!(
        for_whole - for_small,
        whole.div_ceil(64) - small.div_ceil(64),
        "a {small}-byte allocation flushed {for_small} lines, a {whole}-byte one {for_whole}"
    );
}

/// A free that leaves its slab in use logs its bitmap word and nothing else, however few free
/// chunks there are: freeing one block of three costs the same lines and drains with free
/// chunks plentiful and scarce (where an emptied slab's descriptor would be logged, to return
/// it).
#[test]
fn a_free_that_leaves_its_slab_in_use_costs_the_same_on_a_scarce_heap() {
    use ptm::internals::heap::{metadata_reserve, CHUNK};
    let dir = common::shm_dir();
    let mut pool = Pool::<Root>::create(common::path(&dir, "cost.pool"), 32 << 20, &common::pmem()).unwrap();
    let blocks = pool
        .transaction(|tx, _| {
            (0..3)
                .map(|_| tx.alloc_bytes(4096))
                .collect::<Result<Vec<u64>, _>>()
        })
        .unwrap();
    let cost_of_freeing = |pool: &Pool<Root>, off: u64| {
        let before = thread_stats();
        pool.transaction(|tx, _| tx.free_bytes(off)).unwrap();
        let d = thread_stats().since(&before);
        (d.lines_flushed, d.drains)
    };
    let plentiful = cost_of_freeing(&pool, blocks[0]);
    // Leave 10 free chunks beyond the metadata reserve: scarce.
    let st = pool.check_heap().unwrap();
    let big = (st.free_chunks - metadata_reserve(st.chunks) - 10) * CHUNK;
    pool.transaction(|tx, r| {
        let off = tx.alloc_bytes(big)?;
        r.n.set(tx, off)
    })
    .unwrap();
    let scarce = cost_of_freeing(&pool, blocks[1]);
    assert_eq!(scarce, plentiful, "(lines flushed, drains)");
}
