//! Guards nesting and rollback under the crash harness: inner transactions that join their outer
//! one, an inner failure that dooms the outer transaction, transactions that return `Err` or
//! panic; at every crash point (double crash included) the pool holds the state after the
//! committed steps that had returned, or also the one running.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ptm::{Error, PCell, PMutex, Persistent, Pool};
use ptm_crashtest::{ensure, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    b: PCell<u64>,
    c: PMutex<PCell<u64>>,
}

type State = (u64, u64, u64);

fn state(pool: &Pool<Root>) -> Result<State, Error> {
    pool.transaction(|tx, r| Ok((r.a.get(tx), r.b.get(tx), r.c.lock(tx)?.get(tx))))
}

/// Step `i` of the workload (the state after it is `EXPECTED[i + 1]`).
fn step(pool: &Pool<Root>, i: usize) -> Result<(), ptm_crashtest::BoxError> {
    match i {
        // An inner transaction joins the outer one: both commit together.
        0 => pool.transaction(|tx, r| {
            r.a.set(tx, 1)?;
            pool.transaction(|tx, r| r.b.set(tx, 1))?;
            r.c.lock(tx)?.set(tx, 1)
        })?,
        // An inner failure, swallowed by the outer closure, dooms the whole transaction.
        1 => {
            let r = pool.transaction(|tx, r| {
                r.a.set(tx, 2)?;
                let inner: Result<(), Error> = pool.transaction(|tx, r| {
                    r.b.set(tx, 2)?;
                    Err(Error::InvalidOptions("inner failure"))
                });
                ensure_err(inner)?;
                r.c.lock(tx)?.set(tx, 2)
            });
            assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
        }
        // `Err` rolls back.
        2 => {
            let r: Result<(), Error> = pool.transaction(|tx, r| {
                r.a.set(tx, 3)?;
                r.b.set(tx, 3)?;
                r.c.lock(tx)?.set(tx, 3)?;
                Err(Error::InvalidOptions("rolled back"))
            });
            assert!(r.is_err());
        }
        // A panic rolls back (and continues).
        3 => {
            let r = catch_unwind(AssertUnwindSafe(|| {
                let _ = pool.transaction(|tx, r| {
                    r.a.set(tx, 4)?;
                    r.c.lock(tx)?.set(tx, 4)?;
                    if r.a.get(tx) == 4 {
                        panic!("deliberate panic inside a transaction");
                    }
                    Ok::<_, Error>(())
                });
            }));
            assert!(r.is_err());
        }
        // Nested twice, batched snapshot inside, commits.
        4 => pool.transaction(|tx, r| {
            tx.snapshot(|b| {
                b.add(&r.a)?;
                b.add(&r.b)
            })?;
            r.a.set(tx, 5)?;
            pool.transaction(|tx, r| {
                r.b.set(tx, 5)?;
                pool.transaction(|tx, r| r.c.lock(tx)?.set(tx, 5))
            })
        })?,
        _ => unreachable!(),
    }
    Ok(())
}

fn ensure_err(r: Result<(), Error>) -> Result<(), Error> {
    assert!(r.is_err());
    Ok(())
}

/// State after `k` steps.
const EXPECTED: [State; 6] = [(0, 0, 0), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (5, 5, 5)];
const STEPS: usize = 5;

/// Keeps the deliberate panic of step 3 out of the test output.
fn quiet_deliberate_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"deliberate panic inside a transaction") {
            default(info);
        }
    }));
}

#[test]
fn nested_and_aborted_transactions_recover_to_committed_states() {
    quiet_deliberate_panics();
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(4)
        .double_crash(true)
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for i in 0..STEPS {
                    step(pool, i)?;
                    done.set(i + 1);
                }
                Ok(())
            },
            |pool| -> CheckResult {
                let s = state(pool)?;
                let k = done.get();
                ensure!(
                    s == EXPECTED[k] || (k < STEPS && s == EXPECTED[k + 1]),
                    "state {s:?} after {k} steps (expected {:?})",
                    EXPECTED[k]
                );
                Ok(())
            },
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
    assert!(report.crash_points >= 15, "{report}");
}
