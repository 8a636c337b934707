//! `PQueue` growth: every push and pop costs 2 drains whatever it allocates or frees (first
//! chunk, ring doubling, new chunk, directory doubling, chunk freed), and the cache lines any
//! one push flushes are bounded by one full chunk and the directory, independent of the
//! queue's length, where a contiguous doubling buffer (`PVec`, like the queue before chunks)
//! flushes its whole new buffer.

use crate::common;
use crate::queue_common;

use common::*;
use ptm::{Error, Pool, PoolOptions};
use queue_common::*;

/// Drains and the queue's blocks (directory first) around one transaction.
fn step(
    pool: &Pool<QRoot>,
    f: impl FnOnce(&ptm::Transaction<'_>, &QRoot) -> Result<(), Error>,
) -> (u64, Vec<u64>) {
    let (r, d) = drains(|| pool.transaction(f));
    r.unwrap();
    let blocks = pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap();
    (d, blocks)
}

#[test]
fn every_push_and_pop_costs_two_drains() {
    let dir = shm_dir();
    let pool = Pool::<QRoot>::create(dir.path().join("d.pool"), POOL_SIZE, &opts()).unwrap();
    let mut last = Vec::new();
    let mut events = Vec::new();
    // 100 pages: ring 4 → 8 → 16, then chunks of 16 (directory 1 → 2 → 4 → 8).
    for i in 0..100u64 {
        let (d, blocks) = step(&pool, |tx, r| r.pages.push(tx, page(i)));
        assert_eq!(d, 2, "push {i}");
        if blocks != last {
            let dir_moved = last.first() != blocks.first();
            events.push((i, blocks.len(), dir_moved));
        }
        last = blocks;
    }
    // (push index, blocks after it, whether the directory moved)
    assert_eq!(
        events,
        [
            (0, 2, true),   // directory of 1 and a chunk of 4
            (4, 2, false),  // the ring doubles to 8
            (8, 2, false),  // to 16: a full chunk
            (16, 3, true),  // a second chunk: directory of 2
            (32, 4, true),  // a third: directory of 4
            (48, 5, false), // a fourth
            (64, 6, true),  // a fifth: directory of 8
            (80, 7, false),
            (96, 8, false),
        ]
    );
    // Pops: the 16th frees the front chunk, in the same 2 drains.
    for i in 0..40u64 {
        let (d, blocks) = step(&pool, |tx, r| {
            assert_eq!(r.pages.pop(tx)?, Some(page(i)));
            Ok(())
        });
        assert_eq!(d, 2, "pop {i}");
        let expect = 8 - (i + 1) / 16;
        assert_eq!(blocks.len() as u64, expect, "blocks after pop {i}");
    }
    // Pushes until the directory wraps around, then doubles while wrapped.
    for i in 100..300u64 {
        assert_eq!(step(&pool, |tx, r| r.pages.push(tx, page(i))).0, 2, "push {i}");
    }
    // Nested handles: push_new and pop_free at chunk boundaries, 2 drains.
    for i in 0..40u64 {
        let (r, d) = drains(|| pool.transaction(|tx, r| r.named.push_new(tx).map(|_| ())));
        r.unwrap();
        assert_eq!(d, 2, "push_new {i}");
        pool.transaction(|tx, r| r.named.get_ref(tx, i)?.expect("pushed").name.push_str(tx, "x"))
            .unwrap();
    }
    for i in 0..40u64 {
        let (r, d) = drains(|| pool.transaction(|tx, r| r.named.pop_free(tx)));
        assert!(r.unwrap());
        assert_eq!(d, 2, "pop_free {i}");
    }
    let (r, d) = drains(|| pool.transaction(|tx, r| r.pages.get(tx, 150)));
    assert_eq!(r.unwrap(), Some(page(190)));
    assert_eq!(d, 0, "get");
    let (r, d) = drains(|| pool.transaction(|tx, r| r.pages.clear(tx)));
    r.unwrap();
    assert_eq!(d, 2, "clear of 260 pages in 17 chunks");
}

/// Cache lines flushed by one transaction on this thread.
fn lines<R: ptm::Persistent>(
    pool: &Pool<R>,
    f: impl FnOnce(&ptm::Transaction<'_>, &R) -> Result<(), Error>,
) -> u64 {
    let before = ptm::thread_stats();
    pool.transaction(f).unwrap();
    ptm::thread_stats().since(&before).lines_flushed
}

/// Pushes (each its own transaction); `PTM_QUEUE_PUSHES` overrides (the 1M report).
fn pushes() -> u64 {
    std::env::var("PTM_QUEUE_PUSHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300_000)
}

/// Runs `push(i)` for `i` in `0..n`, each in its own transaction: the most lines one flushed,
/// at which `i`, and the time of all.
fn worst_push(
    pool: &Pool<Root>,
    n: u64,
    push: impl Fn(&ptm::Transaction<'_>, &Root, u64) -> Result<(), Error>,
) -> (u64, u64, std::time::Duration) {
    let (mut max, mut at) = (0, 0);
    let t = std::time::Instant::now();
    for i in 0..n {
        let l = lines(pool, |tx, r| push(tx, r, i));
        if l > max {
            (max, at) = (l, i);
        }
    }
    (max, at, t.elapsed())
}

#[test]
fn push_flushes_are_bounded_by_one_chunk() {
    let n = pushes();
    let dir = shm_dir();
    let opts = PoolOptions::new().layout("collections").force_pmem(true).lanes(2);
    let size = (n * 8 * 4).max(8 << 20).next_power_of_two();
    let pool = Pool::<Root>::create(dir.path().join("g.pool"), size, &opts).unwrap();
    // The queue: the worst push.
    let (q_max, q_at, q_time) = worst_push(&pool, n, |tx, r, i| r.q.push(tx, i));
    let (len, blocks) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.q.len(tx), r.q.block_offsets(tx)?.len() as u64)))
        .unwrap();
    assert_eq!(len, n);
    // One full chunk (64 KiB: 1024 lines), the directory (8 bytes a chunk) and the fixed cost
    // of a transaction (undo records, commit record, completion mark, allocator metadata).
    let dir_lines = (blocks * 8).next_power_of_two().div_ceil(64);
    let bound = 1024 + dir_lines + 64;
    // The peer: a contiguous buffer that doubles (what the queue did before chunks).
    pool.transaction(|tx, r| r.q.clear(tx)).unwrap();
    let (v_max, v_at, v_time) = worst_push(&pool, n, |tx, r, i| r.v.push(tx, i));
    println!(
        "{n} pushes: PQueue max {q_max} lines (push {q_at}, {blocks} blocks, bound {bound}); \
         doubling buffer max {v_max} lines (push {v_at}): {:.1}x the bound; \
         time of the pushes, queue / doubling buffer: {:.2}",
        v_max as f64 / bound as f64,
        q_time.as_secs_f64() / v_time.as_secs_f64()
    );
    assert!(q_max >= 1024, "some push allocated a full chunk: {q_max}");
    assert!(q_max <= bound, "a push flushed {q_max} lines, bound {bound}");
    assert!(
        v_max > bound * 8,
        "the doubling buffer's last growth flushed {v_max} lines"
    );
}
