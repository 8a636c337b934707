//! Guards relaxed durability under the crash harness: a relaxed commit may be lost until it is
//! settled (completed, dropped, synced, or followed by this thread's next transaction), never
//! torn, and never lost after that; crashes inside recovery included.

use std::cell::Cell;

use ptm::{PCell, Persistent, Pool, PoolOptions};
use ptm_crashtest::{ensure, BoxError, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    b: PCell<u64>,
}

/// What the workload has done: values up to `durable` must survive, values up to `returned`
/// (and the one in flight) may.
#[derive(Default)]
struct Progress {
    returned: Cell<u64>,
    durable: Cell<u64>,
}

impl Progress {
    fn returned(&self, v: u64) {
        self.returned.set(v);
    }

    fn durable(&self, v: u64) {
        self.durable.set(v);
    }
}

fn set(tx: &ptm::Transaction<'_>, r: &Root, v: u64) -> ptm::Result<()> {
    r.a.set(tx, v)?;
    r.b.set(tx, v)
}

fn workload(pool: &Pool<Root>, p: &Progress) -> Result<(), BoxError> {
    // Completed explicitly.
    let ((), c1) = pool.transaction_relaxed(|tx, r| set(tx, r, 1))?;
    p.returned(1);
    c1.complete()?;
    p.durable(1);
    // Group commit: each relaxed transaction settles the previous one before it starts.
    let ((), c2) = pool.transaction_relaxed(|tx, r| set(tx, r, 2))?;
    p.returned(2);
    let ((), c3) = pool.transaction_relaxed(|tx, r| set(tx, r, 3))?;
    p.returned(3);
    p.durable(2);
    let ((), c4) = pool.transaction_relaxed(|tx, r| set(tx, r, 4))?;
    p.returned(4);
    p.durable(3);
    pool.sync()?;
    p.durable(4);
    assert!(c2.is_settled() && c3.is_settled() && c4.is_settled());
    drop((c2, c3, c4));
    // Completed by drop.
    let ((), c5) = pool.transaction_relaxed(|tx, r| set(tx, r, 5))?;
    p.returned(5);
    drop(c5);
    p.durable(5);
    // Settled by a strict transaction that follows it.
    let ((), c6) = pool.transaction_relaxed(|tx, r| set(tx, r, 6))?;
    p.returned(6);
    pool.transaction(|tx, r| set(tx, r, 7))?;
    p.returned(7);
    p.durable(7);
    assert!(c6.is_settled());
    drop(c6);
    Ok(())
}

#[test]
fn relaxed_commits_are_atomic_always_and_durable_once_settled() {
    let progress = Progress::default();
    let report = Explorer::new()
        .seed(5)
        .double_crash(true)
        // Pending commits keep their lanes: three are outstanding at once.
        .pool_options(PoolOptions::new().layout("relaxed").lanes(4))
        .run::<Root>(
            |_| Ok(()),
            |pool| workload(pool, &progress),
            |pool| {
                let (a, b) = pool.transaction(|tx, r| Ok::<_, ptm::Error>((r.a.get(tx), r.b.get(tx))))?;
                ensure!(a == b, "torn: a = {a}, b = {b}");
                let (durable, returned) = (progress.durable.get(), progress.returned.get());
                ensure!(a >= durable, "value {a} lost: {durable} was settled");
                ensure!(
                    a <= returned + 1,
                    "value {a} before it was written ({returned} returned)"
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
