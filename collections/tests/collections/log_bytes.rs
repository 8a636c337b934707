//! Growth writes a collection's new buffer once: the fresh block is new memory of the
//! transaction (ptm flushes it at commit) and is never copied into the undo log. Measured as
//! cache lines flushed by the growth transaction, against the size of the new buffer.

use crate::common;

use common::*;
use ptm::{Error, Pool};

/// Cache lines flushed by one transaction on this thread.
fn tx_lines<T>(
    pool: &Pool<Root>,
    f: impl for<'t> FnOnce(&'t ptm::Transaction<'t>, &'t Root) -> Result<T, Error>,
) -> u64 {
    let before = ptm::thread_stats();
    pool.transaction(f).unwrap();
    ptm::thread_stats().since(&before).lines_flushed
}

/// Lines of `bytes` bytes, plus the fixed cost of a transaction that logs a handle: its undo
/// records, commit record, completion mark and allocator metadata.
fn bound(bytes: u64) -> u64 {
    bytes.div_ceil(64) + 64
}

#[test]
fn vec_growth_flushes_the_new_buffer_once() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "v.pool");
    pool.transaction(|tx, r| r.v.extend(tx, 0..4096)).unwrap();
    let cap = pool
        .transaction(|tx, r| Ok::<_, Error>(r.v.capacity(tx)))
        .unwrap();
    // Fill to capacity, then the next push doubles the buffer.
    pool.transaction(|tx, r| r.v.extend(tx, 4096..cap)).unwrap();
    let lines = tx_lines(&pool, |tx, r| r.v.push(tx, 1));
    let new_cap = pool
        .transaction(|tx, r| Ok::<_, Error>(r.v.capacity(tx)))
        .unwrap();
    assert!(new_cap > cap, "the push grew the vector");
    let new_bytes = new_cap * 8;
    assert!(
        lines >= (cap * 8) / 64,
        "the copied elements were flushed: {lines} lines"
    );
    assert!(
        lines <= bound(new_bytes),
        "{lines} lines for a {new_bytes}-byte buffer"
    );
}

#[test]
fn queue_growth_flushes_the_new_buffer_once() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "q.pool");
    // The ring doubles from 4 slots: 4096 elements fill it exactly, the next push grows it.
    pool.transaction(|tx, r| (0..4096).try_for_each(|i| r.q.push(tx, i)))
        .unwrap();
    let lines = tx_lines(&pool, |tx, r| r.q.push(tx, 7));
    let new_bytes = 8192 * 8;
    assert!(
        lines >= 4096 * 8 / 64,
        "the push grew the queue (copied elements flushed): {lines}"
    );
    assert!(
        lines <= bound(new_bytes),
        "{lines} lines for a {new_bytes}-byte buffer"
    );
}

/// Bytes of a full-size `PHashMap<u64, u64>` segment: a 32-byte header, then 2048 control
/// bytes and 2048 16-byte entries.
const SEGMENT: u64 = 32 + 2048 + 2048 * 16;

/// A map's growth is bounded by its segment size, not its size: no insert of 40,000 flushes
/// more than two fresh segments and a directory, while the map grows to many times that (a
/// table doubling whole would flush all of it in one insert).
#[test]
fn map_growth_flushes_at_most_two_segments() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "m.pool");
    let (mut worst, mut growths) = ((0, 0), 0);
    let cap = |pool: &Pool<Root>| {
        pool.transaction(|tx, r| Ok::<_, Error>(r.m.capacity(tx)))
            .unwrap()
    };
    for k in 0..40_000u64 {
        let before = cap(&pool);
        let lines = tx_lines(&pool, |tx, r| r.m.insert(tx, k, k));
        growths += u64::from(cap(&pool) != before);
        worst = worst.max((lines, k));
    }
    let (blocks, total) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.m.block_offsets(tx)?.len() as u64, r.m.capacity(tx) * 17)))
        .unwrap();
    // Two fresh segments and the directory (8 bytes per segment pointer, at most 2 per segment).
    let limit = bound(2 * SEGMENT + 16 * blocks);
    assert!(
        worst.0 <= limit,
        "insert {} flushed {} lines (limit {limit})",
        worst.1,
        worst.0
    );
    assert!(
        blocks > 16 && growths > 16,
        "{blocks} blocks, {growths} growth steps"
    );
    assert!(
        total / 64 > 10 * limit,
        "the map ({total} bytes) is many times the bound"
    );
}
