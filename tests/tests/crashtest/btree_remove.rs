//! Guards `PBTreeMap` removal under the crash harness: removals that borrow from a sibling leaf,
//! merge leaves, make internal nodes borrow and merge, and collapse the root level by level down
//! to an empty tree (several of them in one transaction, too), and a transaction whose inserts
//! split nodes that its removals then merge and free. After every crash (double crash
//! included) each tree equals its contents before or after the transaction that was running,
//! satisfies the B-tree invariants, and the heap holds exactly the nodes of the two trees.
//!
//! The keys are 40 bytes (`[k, 0, 0, 0, 0]`, ordered as `k`), so the internal nodes are narrow
//! (15 keys, design §13.2), as in every tree of keys over 32 bytes and every tree grown by a
//! build before wide internal nodes: the shapes below are those of 15-key nodes. Wide internal
//! nodes go through the same under the crash harness in `btree_wide_remove.rs`.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{Persistent, Pool, PoolOptions};
use ptm_collections::PBTreeMap;
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// Three levels, every leaf at the minimum occupancy (7 keys).
    big: PBTreeMap<Key, u64>,
    /// Two levels: a root and two full-half leaves.
    small: PBTreeMap<Key, u64>,
}

/// A key of 40 bytes (narrow internal nodes), ordered as its first word.
type Key = [u64; 5];

fn key(k: u64) -> Key {
    [k, 0, 0, 0, 0]
}

/// The contents of a tree, by first key word.
fn contents(t: &PBTreeMap<Key, u64>, tx: &ptm::Transaction<'_>) -> ptm::Result<BTreeMap<u64, u64>> {
    Ok(t.iter(tx)?.map(|(k, v)| (k[0], v)).collect())
}

type Shape = Vec<Vec<usize>>;
type State = (BTreeMap<u64, u64>, BTreeMap<u64, u64>);

/// Ascending inserts fill leaves `[8i, 8i + 8)` of the big tree; keys past this make the right
/// child of the root hold 9 keys (10 leaves) beside the left's 8.
const BIG: u64 = 8 * 19 + 4;
const SMALL: std::ops::Range<u64> = 1000..1016;

/// Whether setup removes `k` from the big tree: one key of every leaf but the last (which holds
/// the keys from `8 * 18`), leaving them at 7 keys.
fn removed_in_setup(k: u64) -> bool {
    k % 8 == 1 && k < 8 * 18
}

/// The key of leaf `i` of the big tree (as built) that the workload removes.
fn in_leaf(i: u64) -> u64 {
    8 * i + 2
}

/// One transaction on one tree (`true`: the big one): keys it inserts (value `k + 1`), then keys
/// it removes, and a test of the tree's shape before and after it (checked in the workload, not
/// at the crash points).
type Txn = (bool, Vec<u64>, Vec<u64>, fn(&Shape, &Shape) -> bool);

fn nodes(s: &Shape) -> usize {
    s.iter().map(Vec::len).sum()
}

/// Whether exactly two leaves changed their key count, none appearing or going (a borrow).
fn two_leaves_changed(b: &Shape, a: &Shape) -> bool {
    match (b.last(), a.last()) {
        (Some(b), Some(a)) => b.len() == a.len() && b.iter().zip(a).filter(|(x, y)| x != y).count() == 2,
        _ => false,
    }
}

fn transactions() -> Vec<Txn> {
    vec![
        // Leaf 1 falls to 6 keys, its neighbours hold 7: it merges into leaf 0.
        (true, vec![], vec![in_leaf(1)], |b, a| {
            nodes(a) + 1 == nodes(b) && a[1] == [7, 9]
        }),
        // Leaf 2 falls to 6; its left neighbour (merged, 13 keys) lends it keys.
        (true, vec![], vec![in_leaf(2)], |b, a| {
            nodes(a) == nodes(b) && two_leaves_changed(b, a)
        }),
        // Leaves 3 and 4 merge; the left internal node falls to 6 keys and borrows from the right.
        (true, vec![], vec![in_leaf(4)], |_, a| {
            a.len() == 3 && a[1] == [8, 7]
        }),
        // Two merges in one transaction; the internal nodes merge and the root collapses.
        (true, vec![], vec![in_leaf(9), in_leaf(12)], |_, a| {
            a.len() == 2 && a[0].len() == 1
        }),
        // The small tree: a plain removal, a borrow, then a merge that collapses the root.
        (false, vec![], vec![1000], |_, a| a == &[vec![1], vec![7, 8]]),
        (false, vec![], vec![1001], |_, a| a == &[vec![1], vec![7, 7]]),
        (false, vec![], vec![1002], |_, a| a == &[vec![13]]),
        (false, vec![], (1003..1015).collect(), |_, a| a == &[vec![1]]),
        // The last key: the root leaf is freed, the tree has no node.
        (false, vec![], vec![1015], |_, a| a.is_empty()),
        // Nodes allocated by splits and freed by merges in the same transaction.
        (false, (0..40).collect(), (0..40).rev().collect(), |_, a| {
            a.is_empty()
        }),
    ]
}

/// `states[k]`: the contents after the first `k` transactions.
fn states(start: &State, txns: &[Txn]) -> Vec<State> {
    let mut s = start.clone();
    let mut out = vec![s.clone()];
    for (big, inserts, removes, _) in txns {
        let t = if *big { &mut s.0 } else { &mut s.1 };
        t.extend(inserts.iter().map(|k| (*k, k + 1)));
        for k in removes {
            t.remove(k);
        }
        out.push(s.clone());
    }
    out
}

fn shapes(pool: &Pool<Root>) -> Result<(Shape, Shape), BoxError> {
    let (big, small) = pool.transaction(|tx, r| {
        Ok::<_, ptm::Error>((r.big.check_invariants(tx), r.small.check_invariants(tx)))
    })?;
    Ok((big?, small?))
}

/// The big tree with all leaves but the last at 7 keys, and the small one with 16 keys.
fn setup(pool: &Pool<Root>) -> CheckResult {
    pool.transaction(|tx, r| {
        for k in 0..BIG {
            r.big.insert(tx, key(k), k * 3)?;
        }
        for k in SMALL {
            r.small.insert(tx, key(k), k + 1)?;
        }
        Ok::<_, ptm::Error>(())
    })?;
    let (big, _) = shapes(pool)?;
    ensure!(big.len() == 3 && big[1] == [8, 9], "setup built {big:?}");
    ensure!(big[2].len() == 19, "setup built {big:?}");
    // Plain removals (8 keys to 7).
    pool.transaction(|tx, r| {
        for k in (0..BIG).filter(|&k| removed_in_setup(k)) {
            r.big.remove(tx, &key(k))?;
        }
        Ok::<_, ptm::Error>(())
    })?;
    let (big, small) = shapes(pool)?;
    ensure!(
        big[2][..big[2].len() - 1].iter().all(|&n| n == 7) && small == [vec![1], vec![8, 8]],
        "setup built {big:?} and {small:?}"
    );
    Ok(())
}

fn check(pool: &mut Pool<Root>, expected: &[State], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (s, nodes) = pool.transaction(|tx, r| {
        let s = (contents(&r.big, tx)?, contents(&r.small, tx)?);
        let mut nodes: BTreeSet<u64> = r.big.node_offsets(tx)?.into_iter().collect();
        nodes.extend(r.small.node_offsets(tx)?);
        Ok::<_, ptm::Error>((s, nodes))
    })?;
    ensure_prefix(&s, expected, done)?;
    shapes(pool)?;
    ensure_heap_owns(pool, &nodes)
}

#[test]
fn rebalancing_removals_survive_every_crash() {
    let txns = transactions();
    // The state after setup, rebuilt the same way.
    let start: State = (
        (0..BIG)
            .filter(|&k| !removed_in_setup(k))
            .map(|k| (k, k * 3))
            .collect(),
        SMALL.map(|k| (k, k + 1)).collect(),
    );
    let expected = states(&start, &txns);
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(6)
        .double_crash(true)
        .pool_size(2 << 20)
        .pool_options(PoolOptions::new().layout("btree-remove").lanes(1))
        .run::<Root>(
            setup,
            |pool| {
                let got = pool.transaction(|tx, r| {
                    Ok::<_, ptm::Error>((contents(&r.big, tx)?, contents(&r.small, tx)?))
                })?;
                ensure!(got == expected[0], "setup left {got:?}");
                for (i, (big, inserts, keys, shape_ok)) in txns.iter().enumerate() {
                    let before = shapes(pool)?;
                    pool.transaction(|tx, r| {
                        let t = if *big { &r.big } else { &r.small };
                        for k in inserts {
                            t.insert(tx, key(*k), k + 1)?;
                        }
                        for k in keys {
                            ensure!(t.remove(tx, &key(*k))?.is_some(), "key {k} missing");
                        }
                        Ok::<_, BoxError>(())
                    })?;
                    done.set(i + 1);
                    let after = shapes(pool)?;
                    let (b, a) = if *big {
                        (&before.0, &after.0)
                    } else {
                        (&before.1, &after.1)
                    };
                    ensure!(
                        shape_ok(b, a),
                        "transaction {i} ({keys:?}) reshaped {b:?} into {a:?}"
                    );
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
