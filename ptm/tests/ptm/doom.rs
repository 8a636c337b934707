//! Guards `Transaction::doom`: a doomed transaction rolls back at its end even though its
//! closure returns `Ok` (stores, allocations and frees all undone), and says so with
//! `Error::Aborted`.

use crate::common;

use std::collections::BTreeSet;

use ptm::{Error, PCell, PPtr, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    p: PCell<PPtr<u64>>,
}

fn live(pool: &mut Pool<Root>) -> BTreeSet<u64> {
    pool.allocated_blocks()
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

#[test]
fn a_doomed_transaction_rolls_back() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "doom.pool");
    let mut pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem()).unwrap();
    pool.transaction(|tx, r| {
        r.a.set(tx, 1)?;
        r.p.set(tx, tx.alloc(5u64)?)
    })
    .unwrap();
    let before = live(&mut pool);
    assert_eq!(before.len(), 1);

    // Stores, an allocation and a free, then doom, then more work: all undone.
    let r = pool.transaction(|tx, r| {
        r.a.set(tx, 2)?;
        let fresh = tx.alloc(6u64)?;
        tx.free(r.p.get(tx))?;
        r.p.set(tx, fresh)?;
        tx.doom();
        r.a.set(tx, 3)?;
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
    assert_eq!(live(&mut pool), before, "the allocation and the free are undone");
    let (a, old) = pool
        .transaction(|tx, r| {
            // SAFETY: the block allocated by the first transaction, still live.
            let v = unsafe { tx.deref(r.p.get(tx))? }.to_owned();
            Ok::<_, Error>((r.a.get(tx), v))
        })
        .unwrap();
    assert_eq!((a, old), (1, 5));

    // The rollback is durable: reopening finds the committed state.
    drop(pool);
    let pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    let a = pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap();
    assert_eq!(a, 1);
}

/// Doomed inside a joined (inner) transaction that returns `Ok`: the outer one rolls back too,
/// and a snapshot batch after the doom reports it.
#[test]
fn doom_in_an_inner_transaction_dooms_the_outer() {
    let dir = common::shm_dir();
    let pool = Pool::<Root>::create(common::path(&dir, "inner.pool"), 8 << 20, &common::pmem()).unwrap();
    let mut batch = None;
    let r = pool.transaction(|tx, r| {
        r.a.set(tx, 9)?;
        pool.transaction(|tx, _| {
            tx.doom();
            Ok::<_, Error>(())
        })?;
        batch = Some(tx.snapshot(|b| b.add(&r.a)));
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
    assert!(matches!(batch, Some(Err(Error::Aborted))), "{batch:?}");
    let a = pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap();
    assert_eq!(a, 0);
}
