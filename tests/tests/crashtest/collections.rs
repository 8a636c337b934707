//! Guards ptm-collections under the crash harness: a `PVec`, a `PHashMap` and a `PBTreeMap`
//! growing through reallocations and node splits (with pops and removes in between), one
//! operation on all three per transaction; after every crash (double crash included) they hold
//! the contents after a prefix of the operations that includes every one that returned, and the
//! heap holds exactly their buffers and nodes.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{Persistent, Pool, PoolOptions};
use ptm_collections::{PBTreeMap, PHashMap, PVec};
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    v: PVec<u64>,
    m: PHashMap<u64, u64>,
    t: PBTreeMap<u64, u64>,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Add(u64),
    Remove(u64),
}

fn ops() -> Vec<Op> {
    (0..30u64)
        .map(|i| if i % 6 == 5 { Op::Remove(i - 3) } else { Op::Add(i) })
        .collect()
}

type State = (Vec<u64>, BTreeMap<u64, u64>, BTreeMap<u64, u64>);

/// The B-tree key of operation `i`: scattered over the key space (25 inserts split the root).
fn tkey(i: u64) -> u64 {
    i * 37 % 101
}

/// `states[k]`: the contents after the first `k` operations.
fn states(ops: &[Op]) -> Vec<State> {
    let mut s: State = Default::default();
    let mut out = vec![s.clone()];
    for &op in ops {
        match op {
            Op::Add(i) => {
                s.0.push(i * 7);
                s.1.insert(i, i * i);
                s.2.insert(tkey(i), i);
            }
            Op::Remove(k) => {
                s.0.pop();
                s.1.remove(&k);
                s.2.remove(&tkey(k));
            }
        }
        out.push(s.clone());
    }
    out
}

fn apply(pool: &Pool<Root>, op: Op) -> Result<(), BoxError> {
    pool.transaction(|tx, r| {
        match op {
            Op::Add(i) => {
                r.v.push(tx, i * 7)?;
                r.m.insert(tx, i, i * i)?;
                r.t.insert(tx, tkey(i), i)?;
            }
            Op::Remove(k) => {
                r.v.pop(tx)?;
                r.m.remove(tx, &k)?;
                r.t.remove(tx, &tkey(k))?;
            }
        }
        Ok::<_, ptm::Error>(())
    })?;
    Ok(())
}

fn check(pool: &mut Pool<Root>, expected: &[State], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (s, buffers) = pool.transaction(|tx, r| {
        let m: BTreeMap<u64, u64> = r.m.iter(tx).collect();
        let t: BTreeMap<u64, u64> = r.t.iter(tx)?.collect();
        let mut buffers: BTreeSet<u64> =
            r.v.buffer_offset(tx)
                .into_iter()
                .chain(r.m.block_offsets(tx)?)
                .collect();
        buffers.extend(r.t.node_offsets(tx)?);
        Ok::<_, ptm::Error>(((r.v.to_vec(tx)?, m, t), buffers))
    })?;
    ensure_prefix(&s, expected, done)?;
    ensure_heap_owns(pool, &buffers)
}

#[test]
fn growing_collections_survive_every_crash() {
    let ops = ops();
    let expected = states(&ops);
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(12)
        .double_crash(true)
        // Every size class in use takes a slab of 64-256 KiB.
        .pool_size(4 << 20)
        .pool_options(PoolOptions::new().layout("collections").lanes(1))
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for (i, &op) in ops.iter().enumerate() {
                    apply(pool, op)?;
                    done.set(i + 1);
                }
                let nodes = pool.transaction(|tx, r| r.t.node_offsets(tx))?;
                ensure!(nodes.len() > 1, "the B-tree never split");
                Ok(())
            },
            |pool| check(pool, &expected, done.get()),
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
