//! Guards relaxed durability: a relaxed commit returns after one drain, becomes durable at this
//! thread's next drain (completion, its next transaction, `sync`), keeps its locks until it
//! completes, and survives a crash once settled.

use crate::common;

use std::time::Duration;

use ptm::{thread_stats, Error, PCell, PMutex, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    m: PMutex<PCell<u64>>,
}

fn pool(dir: &tempfile::TempDir) -> Pool<Root> {
    let opts = common::pmem().lock_timeout(Duration::from_millis(300));
    Pool::<Root>::create(common::path(dir, "relaxed.pool"), 8 << 20, &opts).unwrap()
}

#[test]
fn a_relaxed_commit_defers_the_second_drain() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let before = thread_stats();
    let ((), pending) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 1)).unwrap();
    assert_eq!(
        thread_stats().since(&before).drains,
        1,
        "only the snapshot drain before returning"
    );
    assert!(!pending.is_settled());
    pending.complete().unwrap();
    assert_eq!(
        thread_stats().since(&before).drains,
        2,
        "the deferred drain at completion"
    );
}

#[test]
fn the_next_transaction_settles_a_pending_commit() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let ((), pending) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 1)).unwrap();
    pool.transaction(|tx, r| r.a.set(tx, r.a.get(tx) + 1)).unwrap();
    assert!(
        pending.is_settled(),
        "settled before the next transaction touched the data"
    );
    let before = thread_stats();
    drop(pending);
    assert_eq!(
        thread_stats().since(&before).drains,
        0,
        "already durable: completing costs nothing"
    );
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 2);
}

#[test]
fn a_drain_of_the_same_thread_on_another_pool_makes_completing_free() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let other = Pool::<Root>::create(common::path(&dir, "other.pool"), 8 << 20, &common::pmem()).unwrap();
    let ((), pending) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 3)).unwrap();
    // A durable transaction on another pool: its drains are fences over everything this
    // thread flushed, the pending commit's lines included (a cache-flush domain), but it does
    // not settle a pending commit of another pool.
    other.transaction(|tx, r| r.a.set(tx, 4)).unwrap();
    assert!(!pending.is_settled());
    let before = thread_stats();
    pending.complete().unwrap();
    assert_eq!(
        thread_stats().since(&before).drains,
        0,
        "already durable: completing costs nothing"
    );
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 3);
}

#[test]
fn sync_settles_and_a_read_only_relaxed_transaction_has_nothing_pending() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let ((), pending) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 5)).unwrap();
    pool.sync().unwrap();
    assert!(pending.is_settled());
    drop(pending);
    let (v, p) = pool
        .transaction_relaxed(|tx, r| Ok::<_, Error>(r.a.get(tx)))
        .unwrap();
    assert_eq!(v, 5);
    assert!(p.is_settled());
}

/// A root shareable between threads: everything under a lock.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct SharedRoot {
    m: PMutex<PCell<u64>>,
}

#[test]
fn a_pending_commit_keeps_its_locks_until_it_completes() {
    let dir = common::shm_dir();
    let opts = common::pmem().lock_timeout(Duration::from_millis(300));
    let pool = Pool::<SharedRoot>::create(common::path(&dir, "shared.pool"), 8 << 20, &opts).unwrap();
    let ((), pending) = pool
        .transaction_relaxed(|tx, r| r.m.lock(tx)?.set(tx, 9))
        .unwrap();
    std::thread::scope(|s| {
        let waited = s
            .spawn(|| pool.transaction(|tx, r| r.m.lock(tx).map(|c| c.get(tx))))
            .join()
            .unwrap();
        assert!(matches!(waited, Err(Error::LockTimeout { .. })), "{waited:?}");
    });
    pending.complete().unwrap();
    std::thread::scope(|s| {
        let got = s
            .spawn(|| pool.transaction(|tx, r| r.m.lock(tx).map(|c| c.get(tx))))
            .join()
            .unwrap();
        assert_eq!(got.unwrap(), 9);
    });
}

#[test]
fn a_settled_relaxed_commit_survives_a_crash() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let ((), pending) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 42)).unwrap();
    pending.complete().unwrap();
    let image = common::path(&dir, "image.pool");
    common::crash_image(&common::path(&dir, "relaxed.pool"), &image);
    drop(pool);
    let p = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(p.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 42);
}

#[test]
fn completing_one_pending_commit_leaves_another_pools_to_its_next_transaction() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let other = Pool::<Root>::create(common::path(&dir, "other.pool"), 8 << 20, &common::pmem()).unwrap();
    let ((), here) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 1)).unwrap();
    let ((), there) = other.transaction_relaxed(|tx, r| r.a.set(tx, 2)).unwrap();
    here.complete().unwrap();
    assert!(!there.is_settled());
    // The other pool's next transaction must settle its pending commit before it stores.
    other.transaction(|tx, r| r.a.set(tx, 3)).unwrap();
    assert!(there.is_settled(), "settled by its pool's next transaction");
    drop(there);
    assert_eq!(other.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 3);
}

/// Pending commits on two pools: the next transaction on one settles that pool's only, and the
/// other pool's stays pending until a transaction on the other pool settles it (this thread's
/// record that something is still pending must survive the first settling).
#[test]
fn each_pools_next_transaction_settles_its_own_pending_commit() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let other = Pool::<Root>::create(common::path(&dir, "other.pool"), 8 << 20, &common::pmem()).unwrap();
    let ((), here) = pool.transaction_relaxed(|tx, r| r.a.set(tx, 1)).unwrap();
    let ((), there) = other.transaction_relaxed(|tx, r| r.a.set(tx, 2)).unwrap();
    pool.transaction(|tx, r| r.a.set(tx, 3)).unwrap();
    assert!(here.is_settled(), "settled by its pool's next transaction");
    assert!(
        !there.is_settled(),
        "another pool's transaction leaves it pending"
    );
    other.transaction(|tx, r| r.a.set(tx, 4)).unwrap();
    assert!(there.is_settled(), "settled by its own pool's next transaction");
    drop((here, there));
    assert_eq!(other.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 4);
}

#[test]
fn a_relaxed_transaction_that_allocates_after_its_last_store_commits_both() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "relaxed.pool");
    let pool = pool(&dir);
    // The class's slab made first (a new slab's records are written at once).
    pool.transaction(|tx, _| tx.alloc_bytes(64).map(drop)).unwrap();
    // The store's record is drained before the allocation, whose records are still pending
    // when the transaction commits (one record, one pending allocation).
    let (block, pending) = pool
        .transaction_relaxed(|tx, r| {
            r.a.set(tx, 7)?;
            tx.alloc_bytes(64)
        })
        .unwrap();
    pending.complete().unwrap();
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 7);
    assert!(
        common::allocated_offsets(&mut pool).contains(&block),
        "the block at {block:#x} allocated after a reopen"
    );
}
