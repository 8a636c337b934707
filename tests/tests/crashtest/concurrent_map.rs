//! Guards `PConcurrentMap` under the crash harness: transactions that read keys under shared
//! shard holds and then write them (upgrading to exclusive), inserts that grow shard tables,
//! multi-key transfers across shards, removals, and a whole-map clear. After every crash (double
//! crash included) the map equals its contents before or after the running transaction, the
//! values sum to the invariant total, no shard lock is left held, and the heap holds exactly the
//! shards' tables.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{Persistent, Pool, PoolOptions};
use ptm_collections::PConcurrentMap;
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: PConcurrentMap<u64, u64>,
}

type State = BTreeMap<u64, u64>;

/// Keys 0..KEYS start at VALUE each; transfers keep the sum.
const KEYS: u64 = 40;
const VALUE: u64 = 100;

/// One transaction.
#[derive(Clone, Debug)]
enum Txn {
    /// Inserts keys `from..to` with value `VALUE` (grows the shards' tables).
    Fill(u64, u64),
    /// Reads `a` and `b` (shared holds), then moves `amount` from `a` to `b` (upgrades).
    Transfer(u64, u64, u64),
    /// Removes `k` and adds its value to `into`.
    Fold(u64, u64),
    /// Removes every key and reinserts the total under key 0.
    Collapse,
}

fn txns() -> Vec<Txn> {
    vec![
        Txn::Fill(0, 20),
        Txn::Fill(20, KEYS),
        Txn::Transfer(3, 17, 40),
        Txn::Transfer(31, 2, 99),
        Txn::Fold(5, 6),
        Txn::Fold(33, 34),
        Txn::Transfer(6, 39, 150),
        Txn::Collapse,
    ]
}

fn apply_model(s: &mut State, t: &Txn) {
    match *t {
        Txn::Fill(from, to) => s.extend((from..to).map(|k| (k, VALUE))),
        Txn::Transfer(a, b, n) => {
            *s.get_mut(&a).unwrap() -= n;
            *s.get_mut(&b).unwrap() += n;
        }
        Txn::Fold(k, into) => {
            let v = s.remove(&k).unwrap();
            *s.get_mut(&into).unwrap() += v;
        }
        Txn::Collapse => {
            let total = s.values().sum();
            s.clear();
            s.insert(0, total);
        }
    }
}

fn apply(pool: &Pool<Root>, t: &Txn) -> CheckResult {
    pool.transaction(|tx, r| {
        match *t {
            Txn::Fill(from, to) => {
                for k in from..to {
                    r.m.insert(tx, k, VALUE)?;
                }
            }
            Txn::Transfer(a, b, n) => {
                let (Some(x), Some(y)) = (r.m.get_for_update(tx, &a)?, r.m.get_for_update(tx, &b)?) else {
                    return Err("transfer between missing keys".into());
                };
                r.m.insert(tx, a, x - n)?;
                r.m.insert(tx, b, y + n)?;
            }
            Txn::Fold(k, into) => {
                let v = r.m.remove(tx, &k)?.ok_or("fold of a missing key")?;
                let w = r.m.get_for_update(tx, &into)?.ok_or("fold into a missing key")?;
                r.m.insert(tx, into, w + v)?;
            }
            Txn::Collapse => {
                let total: u64 = r.m.to_vec(tx)?.iter().map(|&(_, v)| v).sum();
                r.m.clear(tx)?;
                r.m.insert(tx, 0, total)?;
            }
        }
        Ok::<_, BoxError>(())
    })
}

fn check(pool: &mut Pool<Root>, expected: &[State], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (s, tables) = pool.transaction(|tx, r| {
        let s: State = r.m.to_vec(tx)?.into_iter().collect();
        let tables: BTreeSet<u64> = r.m.block_offsets(tx)?.into_iter().collect();
        Ok::<_, ptm::Error>((s, tables))
    })?;
    ensure_prefix(&s, expected, done)?;
    if done >= 2 {
        let total: u64 = s.values().sum();
        ensure!(total == KEYS * VALUE, "total {total}, not {}", KEYS * VALUE);
    }
    ensure_heap_owns(pool, &tables)?;
    // Every shard can be locked exclusively at once: recovery left no hold behind.
    pool.transaction(|tx, r| (0..16).try_for_each(|i| r.m.lock_shard(tx, i).map(drop)))?;
    Ok(())
}

#[test]
fn concurrent_map_survives_every_crash() {
    let txns = txns();
    let mut expected = vec![State::new()];
    for t in &txns {
        let mut s = expected.last().unwrap().clone();
        apply_model(&mut s, t);
        expected.push(s);
    }
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(11)
        .double_crash(true)
        .pool_size(2 << 20)
        .pool_options(PoolOptions::new().layout("concurrent-map").lanes(1))
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for (i, t) in txns.iter().enumerate() {
                    apply(pool, t)?;
                    done.set(i + 1);
                }
                Ok(())
            },
            |pool| check(pool, &expected, done.get()),
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
    assert!(report.crash_points > 20, "{report}");
}
