//! Guards shared holds taken before a transaction has a lane (a `PRwLock` read or a
//! `PSharedLock` shared hold needs none: docs/design.md §8.6): they are real holds until the
//! transaction ends, whether it commits, aborts or takes a lane later (a write, an upgrade, a
//! fifth hold), and they are released then, so writers get the lock afterwards.

use crate::common;

use std::sync::Barrier;
use std::time::Duration;

use ptm::{Error, PCell, PMutex, PRwLock, PSharedLock, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    rw: [PRwLock<u64>; 6],
    sx: PSharedLock<PCell<u64>>,
    m: PMutex<PCell<u64>>,
}

/// A pool whose lock waits end after 200 ms: a hold that is never released makes the next
/// writer fail with `LockTimeout` instead of waiting for ever.
fn pool(dir: &tempfile::TempDir) -> Pool<Root> {
    let opts = common::pmem().lanes(2).lock_timeout(Duration::from_millis(200));
    Pool::<Root>::create(common::path(dir, "early.pool"), 8 << 20, &opts).unwrap()
}

/// Every lock of the root can be taken exclusively by a new transaction on another thread:
/// no hold of an ended transaction is left.
fn all_free(pool: &Pool<Root>) {
    std::thread::scope(|s| {
        s.spawn(|| {
            pool.transaction(|tx, r| {
                for (i, l) in r.rw.iter().enumerate() {
                    l.write(tx, i as u64 + 100)?;
                }
                r.sx.lock(tx)?.set(tx, 7)?;
                r.m.lock(tx)?.set(tx, 8)
            })
            .expect("every lock is free again");
        })
        .join()
        .unwrap();
    });
}

#[test]
fn early_shared_holds_end_with_their_transaction() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    // Read only, committed: four reads (the early holds), nothing else.
    let sum = pool
        .transaction(|tx, r| r.rw[..4].iter().map(|l| l.read(tx)).sum::<Result<u64, Error>>())
        .unwrap();
    assert_eq!(sum, 0);
    all_free(&pool);
    // Read only, aborted by the closure's error.
    let r = pool.transaction(|tx, r| {
        r.rw[0].read(tx)?;
        // SAFETY: only read here.
        unsafe { r.sx.read_unchecked(tx) }?;
        Err::<(), _>(Error::Aborted)
    });
    assert!(matches!(r, Err(Error::Aborted)));
    all_free(&pool);
    // More holds than fit before a lane: the fifth and sixth go with the lane.
    let sum = pool
        .transaction(|tx, r| r.rw.iter().map(|l| l.read(tx)).sum::<Result<u64, Error>>())
        .unwrap();
    assert_eq!(sum, 100 + 101 + 102 + 103 + 104 + 105);
    all_free(&pool);
    // Shared holds, then a write elsewhere (the lane is taken), then an upgrade of an early
    // hold: committed together, all released.
    pool.transaction(|tx, r| {
        r.rw[1].read(tx)?;
        r.rw[2].read(tx)?;
        r.m.lock(tx)?.set(tx, 1)?;
        r.rw[1].write(tx, 11)
    })
    .unwrap();
    all_free(&pool);
    // A relaxed transaction that only read.
    let (v, pending) = pool.transaction_relaxed(|tx, r| r.rw[3].read(tx)).unwrap();
    assert_eq!(v, 103);
    assert!(pending.is_settled());
    all_free(&pool);
}

/// An early shared hold excludes writers while its transaction runs (it is a hold, not a
/// peek), and lets them in once it ends.
#[test]
fn an_early_shared_hold_keeps_writers_out_until_its_transaction_ends() {
    let dir = common::shm_dir();
    let pool = pool(&dir);
    let (held, tried) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            pool.transaction(|tx, r| {
                let v = r.rw[0].read(tx)?;
                // SAFETY: only read here.
                unsafe { r.sx.read_unchecked(tx) }?;
                held.wait();
                tried.wait(); // the other thread's writes failed meanwhile
                Ok::<_, Error>(v)
            })
            .unwrap();
        });
        held.wait();
        let w = pool.transaction(|tx, r| r.rw[0].write(tx, 5));
        assert!(matches!(w, Err(Error::LockTimeout { .. })), "{w:?}");
        let w = pool.transaction(|tx, r| r.sx.lock(tx)?.set(tx, 5));
        assert!(matches!(w, Err(Error::LockTimeout { .. })), "{w:?}");
        // A reader is not kept out.
        assert_eq!(pool.transaction(|tx, r| r.rw[0].read(tx)).unwrap(), 0);
        tried.wait();
    });
    pool.transaction(|tx, r| r.rw[0].write(tx, 5)).unwrap();
    assert_eq!(pool.transaction(|tx, r| r.rw[0].read(tx)).unwrap(), 5);
}

/// A transaction that reads again a `PSharedLock` it already holds shared (taken before it had
/// a lane) goes on at once, even while a writer waits for the lock: a new shared hold would be
/// refused behind the waiting writer (writer preference), which itself waits for this reader.
/// The writer is given 100 ms to start waiting; if it has not, the test checks less but still
/// passes.
#[test]
fn reading_a_held_shared_lock_again_does_not_wait_behind_a_writer() {
    let dir = common::shm_dir();
    let opts = common::pmem().lanes(4).lock_timeout(Duration::from_secs(10));
    let pool = Pool::<Root>::create(common::path(&dir, "again.pool"), 8 << 20, &opts).unwrap();
    let held = Barrier::new(2);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            held.wait();
            pool.transaction(|tx, r| r.sx.lock(tx)?.set(tx, 9))
        });
        pool.transaction(|tx, r| {
            // SAFETY: only read here.
            unsafe { r.sx.read_unchecked(tx) }?;
            held.wait();
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: as above.
            let again = unsafe { r.sx.read_unchecked(tx) }?.get(tx);
            assert_eq!(
                again, 0,
                "the writer cannot have written: this reader holds the lock"
            );
            Ok::<_, Error>(())
        })
        .expect("the second read of a held lock did not wait");
        writer
            .join()
            .unwrap()
            .expect("the writer got the lock after the reader ended");
    });
    // SAFETY: only read.
    let v = pool
        .transaction(|tx, r| Ok::<_, Error>(unsafe { r.sx.read_unchecked(tx) }?.get(tx)))
        .unwrap();
    assert_eq!(v, 9);
}
