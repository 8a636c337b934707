//! Guards `PBTreeMap` removal with **wide internal nodes** (63 keys, design §13.2) under the
//! crash harness: a leaf merge that leaves an internal node at its minimum (31 keys), a leaf
//! borrow, a merge that makes the internal node borrow from its sibling, then seven merges in
//! one transaction that merge the two internal nodes and collapse the root; last, one
//! transaction whose inserts split leaves that its removals merge and free again. After every
//! crash (double crash included) the tree equals its contents before or after the transaction
//! that was running, satisfies the B-tree invariants, and the heap holds exactly its nodes.
//! (`btree_remove.rs` does the same with narrow internal nodes.)

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{Persistent, Pool, PoolOptions};
use ptm_collections::PBTreeMap;
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// Three levels: a root, two wide internal nodes, leaves at the minimum (7 keys).
    t: PBTreeMap<u64, u64>,
}

type Shape = Vec<Vec<usize>>;
type State = BTreeMap<u64, u64>;

/// Leaves in the tree as built: ascending inserts fill leaves `[8i, 8i + 8)` (the last one
/// gets 12 keys); the root splits at the 65th leaf (32 + 31 keys), and the right internal node
/// gets the rest: `[[1], [32, 37], [8, .., 8, 12]]`.
const LEAVES: u64 = 71;
const BIG: u64 = 8 * LEAVES + 4;

/// Whether setup removes `k`: one key of every leaf but the last, leaving them at 7 keys.
fn removed_in_setup(k: u64) -> bool {
    k % 8 == 1 && k < 8 * (LEAVES - 1)
}

/// The key of leaf `i` (as built) that the workload removes.
fn in_leaf(i: u64) -> u64 {
    8 * i + 2
}

/// One transaction: keys it inserts (value `k + 1`), keys it removes, and a test of the tree's
/// shape before and after it (checked in the workload, not at the crash points).
type Txn = (Vec<u64>, Vec<u64>, fn(&Shape, &Shape) -> bool);

fn nodes(s: &Shape) -> usize {
    s.iter().map(Vec::len).sum()
}

fn transactions() -> Vec<Txn> {
    vec![
        // Leaf 1 falls to 6 keys beside leaves of 7: it merges into leaf 0, and the left
        // internal node falls to its minimum, 31 keys.
        (vec![], vec![in_leaf(1)], |b, a| {
            nodes(a) + 1 == nodes(b) && a[1][0] == 31 && a[1][1] == b[1][1]
        }),
        // Leaf 2 falls to 6; its left neighbour (merged, 13 keys) lends it keys.
        (vec![], vec![in_leaf(2)], |b, a| {
            nodes(a) == nodes(b) && a[1] == b[1]
        }),
        // Leaves 3 and 4 merge; the left internal node falls to 30 keys and the two internal
        // nodes share their keys evenly.
        (vec![], vec![in_leaf(4)], |b, a| {
            a.len() == 3
                && a[1].len() == 2
                && a[1][0] > 31
                && a[1][0].abs_diff(a[1][1]) <= 1
                && nodes(a) + 1 == nodes(b)
        }),
        // Three merges under the right internal node, then four under the left one: the left
        // one falls under 31 beside a sibling at 31, they merge, and the root collapses onto
        // the merged node.
        (
            vec![],
            vec![
                in_leaf(50),
                in_leaf(54),
                in_leaf(58),
                in_leaf(10),
                in_leaf(14),
                in_leaf(18),
                in_leaf(22),
            ],
            |_, a| a.len() == 2 && a[0].len() == 1 && a[0][0] > 31,
        ),
        // Nodes allocated by splits and freed by merges in the same transaction.
        (
            (10_000..10_040).collect(),
            (10_000..10_040).rev().collect(),
            |b, a| a.len() == 2 && nodes(a) == nodes(b),
        ),
    ]
}

/// `states[k]`: the contents after the first `k` transactions.
fn states(start: &State, txns: &[Txn]) -> Vec<State> {
    let mut s = start.clone();
    let mut out = vec![s.clone()];
    for (inserts, removes, _) in txns {
        s.extend(inserts.iter().map(|k| (*k, k + 1)));
        for k in removes {
            s.remove(k);
        }
        out.push(s.clone());
    }
    out
}

fn shape(pool: &Pool<Root>) -> Result<Shape, BoxError> {
    Ok(pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.t.check_invariants(tx)))??)
}

/// The tree with all leaves but the last at 7 keys.
fn setup(pool: &Pool<Root>) -> CheckResult {
    pool.transaction(|tx, r| {
        for k in 0..BIG {
            r.t.insert(tx, k, k * 3)?;
        }
        Ok::<_, ptm::Error>(())
    })?;
    let s = shape(pool)?;
    ensure!(
        s.len() == 3 && s[1].len() == 2 && s[1][0] == 32,
        "setup built {s:?}"
    );
    ensure!(
        s[2].len() as u64 == LEAVES && s[1] == [32, 37],
        "setup built {s:?}"
    );
    pool.transaction(|tx, r| {
        for k in (0..BIG).filter(|&k| removed_in_setup(k)) {
            r.t.remove(tx, &k)?;
        }
        Ok::<_, ptm::Error>(())
    })?;
    let s = shape(pool)?;
    ensure!(
        s[2][..s[2].len() - 1].iter().all(|&n| n == 7) && s[1][0] == 32,
        "setup built {s:?}"
    );
    Ok(())
}

fn check(pool: &mut Pool<Root>, expected: &[State], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (s, nodes) = pool.transaction(|tx, r| {
        let s = r.t.iter(tx)?.collect::<BTreeMap<_, _>>();
        let nodes: BTreeSet<u64> = r.t.node_offsets(tx)?.into_iter().collect();
        Ok::<_, ptm::Error>((s, nodes))
    })?;
    ensure_prefix(&s, expected, done)?;
    shape(pool)?;
    ensure_heap_owns(pool, &nodes)
}

#[test]
fn wide_internal_nodes_rebalance_and_collapse_under_every_crash() {
    let txns = transactions();
    let start: State = (0..BIG)
        .filter(|&k| !removed_in_setup(k))
        .map(|k| (k, k * 3))
        .collect();
    let expected = states(&start, &txns);
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(19)
        .double_crash(true)
        .pool_size(2 << 20)
        .pool_options(PoolOptions::new().layout("btree-wide-remove").lanes(1))
        .run::<Root>(
            setup,
            |pool| {
                let got = pool.transaction(|tx, r| Ok::<_, ptm::Error>(r.t.iter(tx)?.collect::<State>()))?;
                ensure!(got == expected[0], "setup left {got:?}");
                for (i, (inserts, keys, shape_ok)) in txns.iter().enumerate() {
                    let before = shape(pool)?;
                    pool.transaction(|tx, r| {
                        for k in inserts {
                            r.t.insert(tx, *k, k + 1)?;
                        }
                        for k in keys {
                            ensure!(r.t.remove(tx, k)?.is_some(), "key {k} missing");
                        }
                        Ok::<_, BoxError>(())
                    })?;
                    done.set(i + 1);
                    let after = shape(pool)?;
                    ensure!(
                        shape_ok(&before, &after),
                        "transaction {i} ({keys:?}) reshaped {before:?} into {after:?}"
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
