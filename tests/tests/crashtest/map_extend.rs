//! Guards `PHashMap::extend`'s staging and `PBTreeMap::extend`'s logged leaves under the crash
//! harness: each transaction extends both maps with new keys (logged up to 64 behind one
//! drain, then written), keys already present and keys repeated among its items, some after
//! removals (tombstones in the hash map, merges in the tree), while the hash map's first
//! segment grows from 8 slots and the tree's leaves split. After every crash both maps hold the
//! contents after a prefix of the transactions that includes every one that returned, their
//! structure checks, and the heap holds exactly their blocks.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{Persistent, Pool, PoolOptions};
use ptm_collections::{PBTreeMap, PHashMap};
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: PHashMap<u64, u64>,
    t: PBTreeMap<u64, u64>,
}

const TXS: u64 = 8;

/// Transaction `i`: the keys it removes first, then the items it extends the map with (new
/// keys, some present ones, one repeated).
fn ops(i: u64) -> (Vec<u64>, Vec<(u64, u64)>) {
    let removed = if i % 3 == 2 {
        (0..6).map(|j| (i - 1) * 20 + j * 3).collect()
    } else {
        vec![]
    };
    let mut items: Vec<(u64, u64)> = (0..20).map(|j| (i * 20 + j, i * 100 + j)).collect();
    if i > 0 {
        items.insert(7, ((i - 1) * 20 + 1, i * 100 + 50));
    }
    items.push((i * 20 + 4, i * 100 + 99));
    (removed, items)
}

fn states() -> Vec<BTreeMap<u64, u64>> {
    let mut s = BTreeMap::new();
    let mut out = vec![s.clone()];
    for i in 0..TXS {
        let (removed, items) = ops(i);
        for k in removed {
            s.remove(&k);
        }
        s.extend(items);
        out.push(s.clone());
    }
    out
}

fn apply(pool: &Pool<Root>, i: u64) -> Result<(), BoxError> {
    let (removed, items) = ops(i);
    pool.transaction(|tx, r| {
        if i == 0 {
            // A fixed hash seed: the same slots and growth, so the same crash points, every run.
            r.m.set_hash_seed(tx, 0x5eed_0031)?;
        }
        for k in &removed {
            r.m.remove(tx, k)?;
            r.t.remove(tx, k)?;
        }
        r.m.extend(tx, items.iter().copied())?;
        r.t.extend(tx, items)
    })?;
    Ok(())
}

fn check(pool: &mut Pool<Root>, expected: &[BTreeMap<u64, u64>], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (structure, s, owned) = pool.transaction(|tx, r| {
        let structure =
            r.m.check_invariants(tx)
                .map_err(|e| e.to_string())
                .and(r.t.check_invariants(tx));
        let s: BTreeMap<u64, u64> = r.m.iter(tx).collect();
        let t: BTreeMap<u64, u64> = r.t.iter(tx)?.collect();
        let mut owned: BTreeSet<u64> = r.m.block_offsets(tx)?.into_iter().collect();
        owned.extend(r.t.node_offsets(tx)?);
        Ok::<_, ptm::Error>((structure, (s, t), owned))
    })?;
    ensure!(structure.is_ok(), "map structure: {structure:?}");
    ensure!(s.0 == s.1, "the hash map and the tree differ");
    ensure_prefix(&s.0, expected, done)?;
    ensure_heap_owns(pool, &owned)
}

#[test]
fn staged_extends_survive_every_crash() {
    let expected = states();
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(31)
        .pool_size(8 << 20)
        .pool_options(PoolOptions::new().layout("map-extend").lanes(1))
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for i in 0..TXS {
                    apply(pool, i)?;
                    done.set(i as usize + 1);
                }
                Ok(())
            },
            |pool| check(pool, &expected, done.get()),
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
