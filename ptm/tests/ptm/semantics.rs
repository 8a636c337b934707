//! Guards transaction semantics: commit on Ok, rollback on Err and on panic (which continues),
//! nested transactions flattening (an inner failure aborts the whole), values after reopen.

use crate::common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use ptm::{Error, PCell, PMutex, PRwLock, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    b: PCell<[u8; 24]>,
    m: PMutex<PCell<u64>>,
    rw: PRwLock<u64>,
}

fn get(pool: &Pool<Root>) -> (u64, [u8; 24], u64, u64) {
    pool.transaction(|tx, r| {
        Ok::<_, Error>((r.a.get(tx), r.b.get(tx), r.m.lock(tx)?.get(tx), r.rw.read(tx)?))
    })
    .unwrap()
}

fn setup(dir: &tempfile::TempDir) -> Pool<Root> {
    let pool = Pool::<Root>::create(common::path(dir, "sem.pool"), 8 << 20, &common::pmem()).unwrap();
    pool.transaction(|tx, r| {
        r.a.set(tx, 1)?;
        r.b.set(tx, [1; 24])?;
        r.m.lock(tx)?.set(tx, 1)?;
        r.rw.write(tx, 1)
    })
    .unwrap();
    pool
}

#[test]
fn a_fresh_root_is_zero() {
    let dir = common::shm_dir();
    let pool = Pool::<Root>::create(common::path(&dir, "zero.pool"), 8 << 20, &common::pmem()).unwrap();
    assert_eq!(get(&pool), (0, [0; 24], 0, 0));
}

#[test]
fn ok_commits_and_survives_reopen() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    pool.transaction(|tx, r| {
        r.a.set(tx, 2)?;
        r.b.update(tx, |mut b| {
            b[3] = 9;
            b
        })?;
        r.m.lock(tx)?.update(tx, |v| v + 10)?;
        r.rw.update(tx, |v| v * 7)
    })
    .unwrap();
    let mut b = [1u8; 24];
    b[3] = 9;
    assert_eq!(get(&pool), (2, b, 11, 7));
    drop(pool);
    let pool = Pool::<Root>::open(common::path(&dir, "sem.pool"), &common::pmem()).unwrap();
    assert_eq!(get(&pool), (2, b, 11, 7));
    assert!(pool.recovery_report().was_clean);
}

#[test]
fn err_rolls_back_everything() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        r.a.set(tx, 50)?;
        r.b.set(tx, [50; 24])?;
        r.m.lock(tx)?.set(tx, 50)?;
        r.rw.write(tx, 50)?;
        assert_eq!(r.a.get(tx), 50, "changes are visible inside the transaction");
        Err(Error::InvalidOptions("user abort"))
    });
    assert!(matches!(r, Err(Error::InvalidOptions("user abort"))));
    assert_eq!(get(&pool), (1, [1; 24], 1, 1));
}

#[test]
fn a_custom_error_type_works_and_rolls_back() {
    #[derive(Debug)]
    enum AppError {
        Ptm(#[allow(dead_code)] Error),
        Insufficient,
    }
    impl From<Error> for AppError {
        fn from(e: Error) -> Self {
            AppError::Ptm(e)
        }
    }
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let r = pool.transaction(|tx, r| {
        r.a.set(tx, 0)?;
        if r.a.get(tx) == 0 {
            return Err(AppError::Insufficient);
        }
        Ok(())
    });
    assert!(matches!(r, Err(AppError::Insufficient)));
    assert_eq!(get(&pool).0, 1);
}

#[test]
fn panic_rolls_back_and_continues_unwinding() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let _: Result<(), Error> = pool.transaction(|tx, r| {
            r.a.set(tx, 66)?;
            r.m.lock(tx)?.set(tx, 66)?;
            panic!("boom inside a transaction");
        });
    }));
    let payload = caught.expect_err("the panic must propagate");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom inside a transaction"));
    assert_eq!(get(&pool), (1, [1; 24], 1, 1));
    // The mutex was released by the rollback: a new transaction takes it at once.
    pool.transaction(|tx, r| r.m.lock(tx)?.set(tx, 2)).unwrap();
}

#[test]
fn nested_ok_commits_with_the_outer() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    pool.transaction(|tx, r| {
        r.a.set(tx, 3)?;
        pool.transaction(|tx, r| r.b.set(tx, [3; 24]))?;
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_eq!(get(&pool).0, 3);
    assert_eq!(get(&pool).1, [3; 24]);
}

#[test]
fn an_inner_failure_aborts_the_whole_even_if_swallowed() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        r.a.set(tx, 4)?;
        let inner: Result<(), Error> = pool.transaction(|tx, r| {
            r.b.set(tx, [4; 24])?;
            Err(Error::InvalidOptions("inner fails"))
        });
        assert!(inner.is_err());
        Ok(()) // swallowing the inner error does not save the outer transaction
    });
    assert!(matches!(r, Err(Error::Aborted)));
    assert_eq!(get(&pool), (1, [1; 24], 1, 1));
}

#[test]
fn a_cell_of_another_pool_is_refused() {
    let dir = common::shm_dir();
    let p1 = setup(&dir);
    let p2 = Pool::<Root>::create(common::path(&dir, "other.pool"), 8 << 20, &common::pmem()).unwrap();
    p1.transaction(|tx1, r1| {
        let r: Result<(), Error> = p2.transaction(|_tx2, r2| {
            // A cell of pool 2 changed with pool 1's transaction: refused, nothing written.
            assert!(matches!(r2.a.set(tx1, 9), Err(Error::NotInPool { .. })));
            assert!(matches!(r2.m.lock(tx1), Err(Error::NotInPool { .. })));
            Ok(())
        });
        r?;
        let _ = r1;
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_eq!(p2.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 0);
}

#[test]
fn a_stack_copy_of_a_mutex_is_refused() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let stack: PMutex<PCell<u64>> = ptm::pmem_core::read_from_bytes(&[0u8; 16]).unwrap();
    pool.transaction(|tx, _| {
        assert!(matches!(stack.lock(tx), Err(Error::NotInPool { .. })));
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn snapshot_batch_errors_still_drain_and_roll_back() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        let e = tx.snapshot(|b| {
            b.add(&r.a)?;
            Err(Error::InvalidOptions("batch failed"))
        });
        assert!(e.is_err());
        // Logged in the failed batch and drained at its end: safe to change.
        r.a.set(tx, 99)?;
        Err(Error::InvalidOptions("then abort"))
    });
    assert!(r.is_err());
    assert_eq!(get(&pool).0, 1);
}

/// Transactions on two pools nest: inside a transaction on pool B that runs inside one on pool
/// A, a transaction on either pool joins the one running on that pool (B's inner failure
/// dooms B's whole transaction, not A's; A's inner write commits with A), and after B ends, a
/// transaction on A still joins A's while a new one on B (inside one on a third pool) runs on
/// its own.
#[test]
fn transactions_on_two_pools_each_join_their_own_pool() {
    let dir = common::shm_dir();
    let pa = setup(&dir);
    let pb = Pool::<Root>::create(common::path(&dir, "b.pool"), 8 << 20, &common::pmem()).unwrap();
    let pc = Pool::<Root>::create(common::path(&dir, "c.pool"), 8 << 20, &common::pmem()).unwrap();
    let outer_a: Result<(), Error> = pa.transaction(|ta, ra| {
        ra.a.set(ta, 10)?;
        let outer_b: Result<(), Error> = pb.transaction(|tb, rb| {
            rb.a.set(tb, 20)?;
            // Joins A's transaction (and commits with it).
            pa.transaction(|tx, ra| ra.b.set(tx, [10; 24]))?;
            // Joins B's transaction: its failure dooms B even though it is swallowed.
            let inner: Result<(), Error> = pb.transaction(|tx, rb| {
                rb.b.set(tx, [20; 24])?;
                Err(Error::InvalidOptions("inner on B fails"))
            });
            assert!(inner.is_err());
            Ok(())
        });
        assert!(matches!(outer_b, Err(Error::Aborted)), "{outer_b:?}");
        // B is over: a transaction on A still joins A's, and one on B inside one on C (both
        // inside A) is a transaction of its own, not B's ended one.
        pa.transaction(|tx, ra| ra.m.lock(tx)?.set(tx, 10))?;
        pc.transaction(|tc, rc| {
            rc.a.set(tc, 30)?;
            pb.transaction(|tb, rb| rb.a.set(tb, 21))
        })?;
        Ok(())
    });
    outer_a.unwrap();
    assert_eq!(
        get(&pa),
        (10, [10; 24], 10, 1),
        "A committed with its inner writes"
    );
    assert_eq!(
        get(&pb),
        (21, [0; 24], 0, 0),
        "B's first transaction rolled back whole"
    );
    assert_eq!(get(&pc).0, 30);
}
