//! Guards what an allocation costs at commit: the new-range record of a small block covers the
//! bytes asked for, not the whole block of its class, so the commit flushes (and hashes) only
//! the lines the caller can have written.

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
