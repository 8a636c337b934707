//! Guards stores made inside a `Transaction::snapshot` closure: a `PCell::set` there must not
//! store before its undo entry is durable (the batch's single drain runs only when the closure
//! returns). At every crash point the pool holds the state after the steps that had returned, or
//! also the one running.

use std::cell::Cell;

use ptm::{Error, PCell, Persistent, Pool};
use ptm_crashtest::{ensure, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    b: PCell<u64>,
    c: PCell<u64>,
}

type State = (u64, u64, u64);

fn state(pool: &Pool<Root>) -> Result<State, Error> {
    pool.transaction(|tx, r| Ok((r.a.get(tx), r.b.get(tx), r.c.get(tx))))
}

/// Step `i`: every cell becomes `i + 1`, some of them set inside the snapshot closure.
fn step(pool: &Pool<Root>, i: u64) -> Result<(), Error> {
    let v = i + 1;
    pool.transaction(|tx, r| {
        tx.snapshot(|batch| {
            batch.add(&r.a)?;
            // Set inside the batch: a cell the batch already holds, then one it does not.
            r.a.set(tx, v)?;
            r.b.set(tx, v)?;
            batch.add(&r.c)
        })?;
        r.c.set(tx, v)
    })
}

const STEPS: u64 = 4;

#[test]
fn stores_inside_a_snapshot_batch_follow_their_undo_entries() {
    let done = Cell::new(0u64);
    let report = Explorer::new()
        .seed(11)
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
                    s == (k, k, k) || (k < STEPS && s == (k + 1, k + 1, k + 1)),
                    "state {s:?} after {k} steps"
                );
                Ok(())
            },
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
