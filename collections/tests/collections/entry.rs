//! The entry API of `PHashMap` and `PBTreeMap` against std's, and its drain counts.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use proptest::prelude::*;
use ptm::Error;
use ptm_collections::Entry;

#[derive(Clone, Debug)]
enum Op {
    /// `entry(k).and_modify(+d).or_insert(d)`.
    Count(u8, u64),
    /// `entry(k).or_default()`.
    Default(u8),
    /// Occupied: `insert(v)`; vacant: `insert(v)`.
    Set(u8, u64),
    /// Occupied: `remove()`.
    Remove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..24, 1u64..5).prop_map(|(k, d)| Op::Count(k, d)),
        (0u8..24).prop_map(Op::Default),
        (0u8..24, any::<u64>()).prop_map(|(k, v)| Op::Set(k, v)),
        (0u8..24).prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Every entry operation returns what std's returns and leaves the same maps, across
    /// transactions and a reopen.
    #[test]
    fn entries_match_std(ops in prop::collection::vec(op(), 1..60)) {
        let dir = shm_dir();
        let (mut pool, path) = create(&dir, "e.pool");
        let mut hm: HashMap<u64, u64> = HashMap::new();
        let mut bt: BTreeMap<i32, u64> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            let want = match op {
                Op::Count(k, d) => {
                    let e = hm.entry(u64::from(*k)).and_modify(|c| *c += d).or_insert(*d);
                    let v = *e;
                    bt.insert(i32::from(*k), v);
                    Some(v)
                }
                Op::Default(k) => {
                    let v = *hm.entry(u64::from(*k)).or_default();
                    bt.insert(i32::from(*k), v);
                    Some(v)
                }
                Op::Set(k, v) => {
                    let old = hm.insert(u64::from(*k), *v);
                    bt.insert(i32::from(*k), *v);
                    old
                }
                Op::Remove(k) => {
                    bt.remove(&i32::from(*k));
                    hm.remove(&u64::from(*k))
                }
            };
            let got = pool.transaction(|tx, r| {
                let (h, b) = match op {
                    Op::Count(k, d) => {
                        let h = r.m.entry(tx, u64::from(*k))?.and_modify(|c| *c += d)?.or_insert(*d)?;
                        let b = r.t.entry(tx, i32::from(*k))?.and_modify(|c| *c += d)?.or_insert(*d)?;
                        (Some(h), Some(b))
                    }
                    Op::Default(k) => (
                        Some(r.m.entry(tx, u64::from(*k))?.or_default()?),
                        Some(r.t.entry(tx, i32::from(*k))?.or_default()?),
                    ),
                    Op::Set(k, v) => {
                        let h = match r.m.entry(tx, u64::from(*k))? {
                            Entry::Occupied(mut e) => Some(e.insert(*v)?),
                            Entry::Vacant(e) => {
                                assert_eq!(*e.key(), u64::from(*k));
                                e.insert(*v)?;
                                None
                            }
                        };
                        let b = match r.t.entry(tx, i32::from(*k))? {
                            Entry::Occupied(mut e) => Some(e.insert(*v)?),
                            Entry::Vacant(e) => {
                                e.insert(*v)?;
                                None
                            }
                        };
                        (h, b)
                    }
                    Op::Remove(k) => {
                        let h = match r.m.entry(tx, u64::from(*k))? {
                            Entry::Occupied(e) => Some(e.remove()?),
                            Entry::Vacant(_) => None,
                        };
                        let b = match r.t.entry(tx, i32::from(*k))? {
                            Entry::Occupied(e) => Some(e.remove()?),
                            Entry::Vacant(_) => None,
                        };
                        (h, b)
                    }
                };
                Ok::<_, Error>((h, b))
            }).unwrap();
            prop_assert_eq!(got.0, want, "hash map, op {} {:?}", n, op);
            prop_assert_eq!(got.1, want, "B-tree, op {} {:?}", n, op);
            if n == ops.len() / 2 {
                drop(pool);
                pool = ptm::Pool::open(&path, &opts()).unwrap();
            }
        }
        let model = read(&pool);
        prop_assert!(same_as_hashmap(&model.m, &hm));
        prop_assert_eq!(model.t, bt);
        assert_no_leak(&mut pool);
    }
}

#[test]
fn entry_drains() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "d.pool");
    let d = |f: &dyn Fn(&ptm::Transaction<'_>, &Root) -> Result<(), Error>| {
        drains(|| pool.transaction(|tx, r| f(tx, r)).unwrap()).1
    };
    assert_eq!(d(&|tx, r| r.m.entry(tx, 1).map(drop)), 0, "lookup");
    assert_eq!(
        d(&|tx, r| r.m.entry(tx, 1)?.or_insert(5).map(drop)),
        2,
        "vacant or_insert"
    );
    assert_eq!(
        d(&|tx, r| r.m.entry(tx, 1)?.or_insert(6).map(drop)),
        0,
        "occupied or_insert"
    );
    assert_eq!(
        d(&|tx, r| r.m.entry(tx, 1)?.and_modify(|v| *v += 1).map(drop)),
        2,
        "and_modify"
    );
    assert_eq!(
        d(&|tx, r| r.t.entry(tx, 1)?.or_insert(5).map(drop)),
        2,
        "B-tree vacant"
    );
    assert_eq!(
        d(&|tx, r| r.t.entry(tx, 1)?.or_insert(5).map(drop)),
        0,
        "B-tree occupied"
    );
    let v = pool
        .transaction(|tx, r| Ok::<_, Error>((r.m.get(tx, &1)?, r.t.get(tx, &1)?)))
        .unwrap();
    assert_eq!(v, (Some(6), Some(5)));
}

/// `Debug` of the entries: the variant, the key and (present keys) the value, for both maps,
/// `Copy` and string keys, the `Entry` and the `OccupiedEntry`/`VacantEntry` inside it.
#[test]
fn entries_debug_print_their_key_and_value() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "dbg.pool");
    pool.transaction(|tx, r| {
        r.m.insert(tx, 1, 5)?;
        r.t.insert(tx, -1, 6)?;
        let h = (r.m.entry(tx, 1)?, r.m.entry(tx, 2)?);
        assert_eq!(format!("{:?}", h.0), "Occupied { key: 1, value: 5 }");
        assert_eq!(format!("{:?}", h.1), "Vacant { key: 2 }");
        let t = (r.t.entry(tx, -1)?, r.t.entry(tx, 3)?);
        assert_eq!(format!("{:?}", t.0), "Occupied { key: -1, value: 6 }");
        assert_eq!(format!("{:?}", t.1), "Vacant { key: 3 }");
        match (h.0, t.1) {
            (Entry::Occupied(o), Entry::Vacant(v)) => {
                assert_eq!(format!("{o:?}"), "OccupiedEntry { key: 1, value: 5 }");
                assert_eq!(format!("{v:?}"), "VacantEntry { key: 3 }");
            }
            other => panic!("{other:?}"),
        }
        let first = r.t.first_entry(tx)?.expect("an entry");
        assert_eq!(format!("{first:?}"), "OccupiedEntry { key: -1, value: 6 }");
        Ok::<_, Error>(())
    })
    .unwrap();
}
