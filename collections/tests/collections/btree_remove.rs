//! `PBTreeMap` removal with rebalancing, against `std::collections::BTreeMap`: random inserts,
//! single and bulk removals (borrows, merges and root collapses), range reads, aborted
//! transactions and reopens; after every step the tree's structural invariants hold and the heap
//! holds exactly its nodes, and removing everything leaves the heap empty.

use crate::common;

use std::collections::BTreeMap;
use std::ops::Bound;

use common::*;
use proptest::prelude::*;
use ptm::{Error, Pool, Transaction};

#[derive(Clone, Debug)]
enum TreeOp {
    Insert(i32, u64),
    Remove(i32),
}

#[derive(Clone, Debug)]
enum Step {
    /// One operation, one transaction.
    One(TreeOp),
    /// Several operations in one transaction.
    Batch(Vec<TreeOp>),
    /// Inserts `n` consecutive keys from `start` in one transaction (half-full leaves).
    Fill(i32, i32),
    /// Removes every present key in `start..end` in one transaction.
    RemoveRange(i32, i32),
    /// Several operations, then the transaction fails: nothing changes.
    Abort(Vec<TreeOp>),
    /// Compares a range read with std.
    Range(Bound<i32>, Bound<i32>),
    /// Drop the pool and open it again.
    Reopen,
}

const KEYS: std::ops::Range<i32> = -300..300;

fn tree_op() -> impl Strategy<Value = TreeOp> {
    prop_oneof![
        2 => (KEYS, any::<u64>()).prop_map(|(k, v)| TreeOp::Insert(k, v)),
        3 => KEYS.prop_map(TreeOp::Remove),
    ]
}

/// Bounds `BTreeMap::range` accepts (start not after end, not both excluded at one key).
fn bounds() -> impl Strategy<Value = (Bound<i32>, Bound<i32>)> {
    (KEYS, KEYS, 0u8..3, 0u8..3).prop_map(|(a, b, x, y)| {
        let (lo, hi) = (a.min(b), a.max(b));
        let start = [Bound::Included(lo), Bound::Excluded(lo), Bound::Unbounded][x as usize];
        let end = match y {
            0 => Bound::Included(hi),
            1 if lo < hi => Bound::Excluded(hi),
            _ => Bound::Unbounded,
        };
        (start, end)
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => tree_op().prop_map(Step::One),
        2 => prop::collection::vec(tree_op(), 1..20).prop_map(Step::Batch),
        2 => (KEYS, 20i32..300).prop_map(|(s, n)| Step::Fill(s, n)),
        3 => (KEYS, 1i32..200).prop_map(|(s, n)| Step::RemoveRange(s, s + n)),
        1 => prop::collection::vec(tree_op(), 1..20).prop_map(Step::Abort),
        2 => bounds().prop_map(|(lo, hi)| Step::Range(lo, hi)),
        1 => Just(Step::Reopen),
    ]
}

/// Applies `op` to the tree and the model, checking the returned value.
fn apply(tx: &Transaction<'_>, r: &Root, op: &TreeOp, model: &mut BTreeMap<i32, u64>) -> Result<(), Error> {
    match *op {
        TreeOp::Insert(k, v) => assert_eq!(r.t.insert(tx, k, v)?, model.insert(k, v), "insert {k}"),
        TreeOp::Remove(k) => assert_eq!(r.t.remove(tx, &k)?, model.remove(&k), "remove {k}"),
    }
    Ok(())
}

/// Runs `ops` in one transaction; on success the model takes their effect.
fn run(pool: &Pool<Root>, model: &mut BTreeMap<i32, u64>, ops: &[TreeOp]) {
    let mut m = model.clone();
    pool.transaction(|tx, r| {
        for op in ops {
            apply(tx, r, op, &mut m)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    *model = m;
}

/// The tree's shape after checking its invariants, and its contents.
fn check(pool: &mut Pool<Root>, model: &BTreeMap<i32, u64>) -> Result<Vec<Vec<usize>>, TestCaseError> {
    let (shape, got) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.t.check_invariants(tx), r.t.to_vec(tx)?)))
        .unwrap();
    let shape = shape.map_err(|e| TestCaseError::fail(format!("B-tree invariant: {e}")))?;
    prop_assert_eq!(got, model.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
    assert_no_leak(pool);
    Ok(shape)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn removal_rebalances_like_std(
        steps in prop::collection::vec(step(), 1..60),
        order_seed in any::<u64>(),
    ) {
        let dir = shm_dir();
        let (mut pool, path) = create(&dir, "remove.pool");
        let mut model = BTreeMap::new();
        let mut depth_max = 0;
        for s in &steps {
            match s {
                Step::One(op) => run(&pool, &mut model, std::slice::from_ref(op)),
                Step::Batch(ops) => run(&pool, &mut model, ops),
                Step::Fill(start, n) => {
                    let ops: Vec<TreeOp> =
                        (*start..start + n).map(|k| TreeOp::Insert(k, (k as u64).wrapping_mul(3))).collect();
                    run(&pool, &mut model, &ops);
                }
                Step::RemoveRange(lo, hi) => {
                    let ops: Vec<TreeOp> = model.range(lo..hi).map(|(k, _)| TreeOp::Remove(*k)).collect();
                    run(&pool, &mut model, &ops);
                }
                Step::Abort(ops) => {
                    let mut m = model.clone();
                    let res = pool.transaction(|tx, r| {
                        for op in ops {
                            apply(tx, r, op, &mut m)?;
                        }
                        Err::<(), _>(Error::InvalidOptions("abort"))
                    });
                    prop_assert!(res.is_err());
                }
                Step::Range(lo, hi) => {
                    let got: Vec<(i32, u64)> = pool
                        .transaction(|tx, r| Ok::<_, Error>(r.t.range(tx, (*lo, *hi))?.collect()))
                        .unwrap();
                    let want: Vec<(i32, u64)> = model.range((*lo, *hi)).map(|(k, v)| (*k, *v)).collect();
                    prop_assert_eq!(got, want, "range {:?}..{:?}", lo, hi);
                }
                Step::Reopen => {
                    drop(pool);
                    pool = Pool::open(&path, &opts()).unwrap();
                }
            }
            depth_max = depth_max.max(check(&mut pool, &model)?.len());
        }
        drop(pool);
        pool = Pool::open(&path, &opts()).unwrap();
        check(&mut pool, &model)?;
        // Remove everything, in an order scattered by the seed, checking as it shrinks.
        let mut keys: Vec<i32> = model.keys().copied().collect();
        keys.sort_by_key(|k| (*k as u64 ^ order_seed).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for chunk in keys.chunks(7) {
            for k in chunk {
                run(&pool, &mut model, &[TreeOp::Remove(*k)]);
            }
            check(&mut pool, &model)?;
        }
        prop_assert!(model.is_empty());
        prop_assert!(check(&mut pool, &model)?.is_empty(), "no node left");
        prop_assert_eq!(pool.allocated_blocks().unwrap(), vec![], "the heap is empty");
        prop_assert!(depth_max <= 4, "depth {}", depth_max);
    }
}

/// A 3-level tree emptied by removals from the middle outwards: every level collapses, nothing
/// leaks, and the tree grows again from nothing.
#[test]
fn emptied_tree_shrinks_to_nothing_and_regrows() {
    let dir = shm_dir();
    let (mut pool, _) = create(&dir, "shrink.pool");
    let mut model = BTreeMap::new();
    // Ascending keys leave half-full leaves (8 keys) and half-full wide internal nodes (32
    // children): 1200 keys make 150 leaves under 5 internal nodes.
    let fill: Vec<TreeOp> = (0..1200).map(|k| TreeOp::Insert(k, !(k as u64))).collect();
    run(&pool, &mut model, &fill);
    let shape = check(&mut pool, &model).unwrap();
    assert_eq!(shape.len(), 3, "{shape:?}");
    let mut depths = vec![shape.len()];
    let mut nodes = vec![shape.iter().map(Vec::len).sum::<usize>()];
    for d in 0..600 {
        for k in [600 + d, 599 - d] {
            run(&pool, &mut model, &[TreeOp::Remove(k)]);
        }
        let shape = check(&mut pool, &model).unwrap();
        if depths.last() != Some(&shape.len()) {
            depths.push(shape.len());
        }
        nodes.push(shape.iter().map(Vec::len).sum());
    }
    assert_eq!(depths, [3, 2, 1, 0], "depth as the tree empties");
    assert!(nodes.windows(2).all(|w| w[1] <= w[0]), "removals never add nodes");
    assert_eq!(pool.allocated_blocks().unwrap(), vec![]);
    run(&pool, &mut model, &[TreeOp::Insert(5, 6)]);
    assert_eq!(check(&mut pool, &model).unwrap(), [[1]]);
}
