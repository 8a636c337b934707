//! Model-based tests: random operation sequences on every collection against their std twins
//! (`Vec`, `HashMap`, `String`, `VecDeque`, `Option<Box>`), with batches of operations in one
//! transaction, aborted transactions, and drop + reopen of the pool; no leak at the end.

use crate::common;

use common::*;
use proptest::prelude::*;
use ptm::{Error, Pool};

#[derive(Clone, Debug)]
enum Step {
    /// One operation, one transaction.
    One(Op),
    /// Several operations in one transaction.
    Batch(Vec<Op>),
    /// Several operations, then the transaction fails: nothing changes.
    Abort(Vec<Op>),
    /// Drop the pool and open it again.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => op().prop_map(Step::One),
        2 => prop::collection::vec(op(), 1..8).prop_map(Step::Batch),
        1 => prop::collection::vec(op(), 1..8).prop_map(Step::Abort),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn collections_match_std(steps in prop::collection::vec(step(), 1..80)) {
        let dir = shm_dir();
        let (mut pool, path) = create(&dir, "model.pool");
        let mut model = Model::default();
        for s in &steps {
            match s {
                Step::One(op) => {
                    pool.transaction(|tx, r| apply(tx, r, op, &model)).unwrap();
                    apply_model(&mut model, op);
                }
                Step::Batch(ops) => {
                    let mut m = model.clone();
                    pool.transaction(|tx, r| {
                        for op in ops {
                            apply(tx, r, op, &m)?;
                            apply_model(&mut m, op);
                        }
                        Ok::<_, Error>(())
                    }).unwrap();
                    model = m;
                }
                Step::Abort(ops) => {
                    let mut m = model.clone();
                    let res = pool.transaction(|tx, r| {
                        for op in ops {
                            apply(tx, r, op, &m)?;
                            apply_model(&mut m, op);
                        }
                        Err::<(), _>(Error::InvalidOptions("abort"))
                    });
                    prop_assert!(res.is_err());
                }
                Step::Reopen => {
                    drop(pool);
                    pool = Pool::open(&path, &opts()).unwrap();
                }
            }
            prop_assert_eq!(&read(&pool), &model);
        }
        assert_no_leak(&mut pool);
        drop(pool);
        let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
        prop_assert_eq!(&read(&pool), &model);
        assert_no_leak(&mut pool);
    }
}

/// Larger sizes than the proptest reaches: several growth steps of each collection.
#[test]
fn growth_many_elements() {
    let dir = shm_dir();
    let (mut pool, path) = create(&dir, "grow.pool");
    let mut model = Model::default();
    for i in 0..3000u64 {
        let ops = [
            Op::VPush(i * 3),
            Op::MInsert(i, i + 1),
            Op::QPush(i),
            Op::M2Insert((i % 200) as u8, i as u16),
            Op::TInsert(((i * 7919) % 5003) as i32 - 2500, i),
        ];
        pool.transaction(|tx, r| {
            let mut m = model.clone();
            for op in &ops {
                apply(tx, r, op, &m)?;
                apply_model(&mut m, op);
            }
            Ok::<_, Error>(())
        })
        .unwrap();
        for op in &ops {
            apply_model(&mut model, op);
        }
        if i % 3 == 0 {
            let op = Op::MRemove(i / 2);
            pool.transaction(|tx, r| apply(tx, r, &op, &model)).unwrap();
            apply_model(&mut model, &op);
            let op = Op::TRemove(((i * 31) % 5003) as i32 - 2500);
            pool.transaction(|tx, r| apply(tx, r, &op, &model)).unwrap();
            apply_model(&mut model, &op);
            let op = Op::QPop;
            pool.transaction(|tx, r| apply(tx, r, &op, &model)).unwrap();
            apply_model(&mut model, &op);
        }
    }
    assert_eq!(read(&pool), model);
    assert_no_leak(&mut pool);
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    assert_eq!(read(&pool), model);
    // Free everything: the heap is empty again.
    pool.transaction(|tx, r| {
        r.v.free(tx)?;
        r.m.free(tx)?;
        r.s.free(tx)?;
        r.q.free(tx)?;
        r.b.free(tx)?;
        r.t.free(tx)?;
        r.m2.free(tx)
    })
    .unwrap();
    assert_eq!(pool.allocated_blocks().unwrap(), vec![]);
    assert_eq!(read(&pool), Model::default());
}

/// A std `HashMap` fed the same operations agrees with the model (so the model is a faithful
/// twin), and iteration of the persistent map yields each entry once.
#[test]
fn map_against_std_hashmap() {
    let dir = shm_dir();
    let (pool, _path) = create(&dir, "hm.pool");
    let mut std_map = std::collections::HashMap::new();
    let mut model = Model::default();
    for i in 0..500u64 {
        let k = (i * 7919) % 97;
        let op = if i % 4 == 3 {
            Op::MRemove(k)
        } else {
            Op::MInsert(k, i)
        };
        pool.transaction(|tx, r| apply(tx, r, &op, &model)).unwrap();
        apply_model(&mut model, &op);
        match op {
            Op::MRemove(k) => {
                std_map.remove(&k);
            }
            Op::MInsert(k, v) => {
                std_map.insert(k, v);
            }
            _ => unreachable!(),
        }
    }
    let got = read(&pool);
    assert!(same_as_hashmap(&got.m, &std_map));
    let n = pool
        .transaction(|tx, r| Ok::<_, Error>(r.m.iter(tx).count()))
        .unwrap();
    assert_eq!(n, std_map.len());
}

fn tree_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-300i32..300, any::<u64>()).prop_map(|(k, v)| Op::TInsert(k, v)),
        2 => (-300i32..300).prop_map(Op::TRemove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Enough operations on the B+ tree alone to split leaves and internal nodes.
    #[test]
    fn btree_matches_std(steps in prop::collection::vec(prop::collection::vec(tree_op(), 1..12), 1..60)) {
        let dir = shm_dir();
        let (mut pool, path) = create(&dir, "tree.pool");
        let mut model = Model::default();
        for (n, ops) in steps.iter().enumerate() {
            let mut m = model.clone();
            pool.transaction(|tx, r| {
                for op in ops {
                    apply(tx, r, op, &m)?;
                    apply_model(&mut m, op);
                }
                Ok::<_, Error>(())
            })
            .unwrap();
            model = m;
            if n % 20 == 19 {
                drop(pool);
                pool = Pool::open(&path, &opts()).unwrap();
            }
        }
        prop_assert_eq!(&read(&pool), &model);
        assert_no_leak(&mut pool);
    }
}
