//! `PHashSet` and `PBTreeSet` against std's `HashSet` and `BTreeSet`: random inserts, removals,
//! lookups, clears and aborted transactions, with `u64` and `PString` keys, across reopens of
//! the pool; the B-tree set's iteration and range order checked; drains 2 per change.

use crate::common;

use std::collections::{BTreeSet, HashSet};

use common::{drains, opts, shm_dir};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PBTreeSet, PHashSet, PString};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    h: PHashSet<u64>,
    b: PBTreeSet<u64>,
    hs: PHashSet<PString>,
    bs: PBTreeSet<PString>,
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u64),
    Remove(u64),
    Contains(u64),
    Clear,
    /// The next transaction's changes, rolled back.
    Abort(u64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..300).prop_map(Op::Insert),
        4 => (0u64..300).prop_map(Op::Remove),
        3 => (0u64..300).prop_map(Op::Contains),
        1 => Just(Op::Clear),
        1 => (0u64..300).prop_map(Op::Abort),
        1 => Just(Op::Reopen),
    ]
}

fn name(k: u64) -> String {
    format!("key-{k}")
}

#[derive(Default)]
struct Model {
    h: HashSet<u64>,
    b: BTreeSet<u64>,
    hs: HashSet<String>,
    bs: BTreeSet<String>,
}

/// Compares every set with the model, B-tree order and a range included.
fn check(pool: &Pool<Root>, m: &Model) {
    pool.transaction(|tx, r| {
        assert_eq!(r.h.len(tx), m.h.len() as u64);
        assert_eq!(r.hs.len(tx), m.hs.len() as u64);
        let h: HashSet<u64> = r.h.iter(tx).collect();
        assert_eq!(h, m.h, "PHashSet<u64>");
        let hs =
            r.hs.iter(tx)
                .map(|k| k.as_string(tx))
                .collect::<Result<HashSet<_>, _>>()?;
        assert_eq!(hs, m.hs, "PHashSet<PString>");
        assert_eq!(
            r.b.iter(tx)?.collect::<Vec<_>>(),
            m.b.iter().copied().collect::<Vec<_>>()
        );
        assert_eq!(r.bs.to_vec(tx)?, m.bs.iter().cloned().collect::<Vec<_>>());
        assert_eq!(
            r.b.range(tx, 100..200)?.collect::<Vec<_>>(),
            m.b.range(100..200).copied().collect::<Vec<_>>(),
            "range"
        );
        let (hi, lo) = (200, 100);
        let reversed: Vec<u64> = r.b.range(tx, hi..lo)?.collect();
        assert!(reversed.is_empty(), "a reversed range is empty");
        r.h.check_invariants(tx)?;
        r.hs.check_invariants(tx)?;
        r.b.check_invariants(tx)?;
        r.bs.check_invariants(tx)?;
        Ok::<_, Error>(())
    })
    .unwrap();
}

fn run(ops: &[Op]) {
    let dir = shm_dir();
    let path = dir.path().join("s.pool");
    let mut pool = Pool::<Root>::create(&path, 16 << 20, &opts()).unwrap();
    let mut m = Model::default();
    for op in ops {
        match *op {
            Op::Insert(k) => {
                let (added, d) = drains(|| {
                    pool.transaction(|tx, r| {
                        let added = [
                            r.h.insert(tx, k)?,
                            r.b.insert(tx, k)?,
                            r.hs.insert(tx, name(k))?,
                            r.bs.insert(tx, name(k).as_str())?,
                        ];
                        Ok::<_, Error>(added)
                    })
                    .unwrap()
                });
                let new = m.h.insert(k);
                m.b.insert(k);
                m.hs.insert(name(k));
                m.bs.insert(name(k));
                assert_eq!(added, [new; 4], "insert {k}");
                // One snapshot drain per set that changed, and the commit.
                assert_eq!(d, if new { 5 } else { 0 }, "insert drains");
            }
            Op::Remove(k) => {
                let (gone, d) = drains(|| {
                    pool.transaction(|tx, r| {
                        Ok::<_, Error>([
                            r.h.remove(tx, &k)?,
                            r.b.remove(tx, &k)?,
                            r.hs.remove(tx, &name(k))?,
                            r.bs.remove(tx, &name(k))?,
                        ])
                    })
                    .unwrap()
                });
                let was = m.h.remove(&k);
                m.b.remove(&k);
                m.hs.remove(&name(k));
                m.bs.remove(&name(k));
                assert_eq!(gone, [was; 4], "remove {k}");
                assert_eq!(d, if was { 5 } else { 0 }, "remove drains");
            }
            Op::Contains(k) => {
                let got = pool
                    .transaction(|tx, r| {
                        Ok::<_, Error>([
                            r.h.contains(tx, &k)?,
                            r.b.contains(tx, &k)?,
                            r.hs.contains(tx, &name(k))?,
                            r.bs.contains(tx, &name(k))?,
                        ])
                    })
                    .unwrap();
                assert_eq!(got, [m.h.contains(&k); 4], "contains {k}");
            }
            Op::Clear => {
                pool.transaction(|tx, r| {
                    r.h.clear(tx)?;
                    r.b.clear(tx)?;
                    r.hs.clear(tx)?;
                    r.bs.clear(tx)
                })
                .unwrap();
                m = Model::default();
            }
            Op::Abort(k) => {
                let e = pool.transaction(|tx, r| {
                    r.h.insert(tx, k)?;
                    r.b.remove(tx, &k)?;
                    r.hs.insert(tx, name(k))?;
                    r.bs.clear(tx)?;
                    Err::<(), _>(Error::InvalidOptions("abort"))
                });
                assert!(e.is_err());
            }
            Op::Reopen => {
                drop(pool);
                pool = Pool::<Root>::open(&path, &opts()).unwrap();
            }
        }
        check(&pool, &m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sets_match_std(ops in prop::collection::vec(op(), 1..120)) {
        run(&ops);
    }
}

/// Enough keys for the hash sets to split segments and the B-tree sets to grow levels.
#[test]
fn many_keys_then_reopen() {
    // A `PHashSet<u64>` segment holds up to 3072 keys (4096 10-byte slots): 8000 split it.
    let ops: Vec<Op> = (0..8000u64)
        .map(|i| Op::Insert(i * 7 % 8009))
        .chain([Op::Reopen])
        .chain((0..8000u64).step_by(3).map(Op::Remove))
        .chain([Op::Reopen, Op::Contains(3)])
        .collect();
    // Checking after every op would be quadratic: check at the reopens only.
    run_checked_sparsely(&ops);
}

/// `run`, checking the model only at reopens and at the end.
fn run_checked_sparsely(ops: &[Op]) {
    let dir = shm_dir();
    let path = dir.path().join("m.pool");
    let mut pool = Pool::<Root>::create(&path, 32 << 20, &opts()).unwrap();
    let mut m = Model::default();
    for chunk in ops.split(|o| matches!(o, Op::Reopen)) {
        pool.transaction(|tx, r| {
            for op in chunk {
                match *op {
                    Op::Insert(k) => {
                        r.h.insert(tx, k)?;
                        r.b.insert(tx, k)?;
                        r.hs.insert(tx, name(k))?;
                        r.bs.insert(tx, name(k).as_str())?;
                    }
                    Op::Remove(k) => {
                        r.h.remove(tx, &k)?;
                        r.b.remove(tx, &k)?;
                        r.hs.remove(tx, &name(k))?;
                        r.bs.remove(tx, &name(k))?;
                    }
                    _ => {}
                }
            }
            Ok::<_, Error>(())
        })
        .unwrap();
        for op in chunk {
            match *op {
                Op::Insert(k) => {
                    m.h.insert(k);
                    m.b.insert(k);
                    m.hs.insert(name(k));
                    m.bs.insert(name(k));
                }
                Op::Remove(k) => {
                    m.h.remove(&k);
                    m.b.remove(&k);
                    m.hs.remove(&name(k));
                    m.bs.remove(&name(k));
                }
                _ => {}
            }
        }
        drop(pool);
        pool = Pool::<Root>::open(&path, &opts()).unwrap();
        check(&pool, &m);
    }
    assert!(m.h.len() > 5000);
    pool.transaction(|tx, r| {
        assert!(r.h.block_offsets(tx)?.len() > 2, "the hash set split");
        assert!(r.b.node_offsets(tx)?.len() > 16, "the B-tree set grew");
        Ok::<_, Error>(())
    })
    .unwrap();
}
