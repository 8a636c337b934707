//! `PHashMap::extend` stages new keys, up to 64 behind one drain. It must leave the map exactly
//! as one `insert` per item would: the same entries as std's `HashMap::extend` (a later item
//! of a key wins), and, in a twin map of the same hash seed filled one insert at a time, the
//! same slots, segments and capacity (compared as the iteration order, which walks segments
//! and slots in order). Through keys already present, keys repeated among the items,
//! tombstones and growth; and one drain per stage. `PBTreeMap::extend` (one insert per entry)
//! against std's, through leaf and internal splits.

use std::collections::HashMap;

use crate::common::*;
use proptest::prelude::*;
use ptm::{Error, Pool};

/// The map's entries in iteration order, with its capacity, its invariants checked.
fn contents(pool: &Pool<Root>) -> (Vec<(u64, u64)>, u64) {
    pool.transaction(|tx, r| {
        r.m.check_invariants(tx)?;
        let all: Vec<(u64, u64)> = r.m.iter(tx).collect();
        assert_eq!(all.len() as u64, r.m.len(tx), "len");
        for (k, v) in &all {
            assert_eq!(r.m.get(tx, k)?, Some(*v), "get {k}");
        }
        Ok::<_, Error>((all, r.m.capacity(tx)))
    })
    .unwrap()
}

/// Two maps of one hash seed: `pre` inserted and `removed` removed in both, then `items` in
/// one `extend` into the first and one `insert` each into the second. Checks them against each
/// other and against std; returns the first's contents.
fn twins(pre: &[(u64, u64)], removed: &[u64], items: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let dir = shm_dir();
    let (staged, _) = create(&dir, "staged.pool");
    let (single, _) = create(&dir, "single.pool");
    for (pool, one_by_one) in [(&staged, false), (&single, true)] {
        pool.transaction(|tx, r| {
            r.m.set_hash_seed(tx, 0x5eed_e7e0)?;
            for &(k, v) in pre {
                r.m.insert(tx, k, v)?;
            }
            for k in removed {
                r.m.remove(tx, k)?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
        pool.transaction(|tx, r| {
            if one_by_one {
                items
                    .iter()
                    .try_for_each(|&(k, v)| r.m.insert(tx, k, v).map(drop))
            } else {
                r.m.extend(tx, items.iter().copied())
            }
        })
        .unwrap();
    }
    let mut model: HashMap<u64, u64> = pre.iter().copied().collect();
    for k in removed {
        model.remove(k);
    }
    model.extend(items.iter().copied());
    let (got, cap) = contents(&staged);
    let (want, want_cap) = contents(&single);
    assert_eq!(got, want, "slots: extend against one insert each");
    assert_eq!(cap, want_cap, "capacity: extend against one insert each");
    assert_eq!(
        got.iter().copied().collect::<HashMap<_, _>>(),
        model,
        "entries: against std"
    );
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Inserts and removals first (present keys and tombstones), then one `extend` whose
    /// items repeat keys and hit present ones, in small segments that grow under it.
    #[test]
    #[cfg_attr(miri, ignore = "pools are files")]
    fn extend_matches_std(
        pre in prop::collection::vec((0..300u64, any::<u64>()), 0..150),
        removed in prop::collection::vec(0..300u64, 0..60),
        items in prop::collection::vec((0..400u64, any::<u64>()), 0..260),
    ) {
        twins(&pre, &removed, &items);
    }
}

/// A map of many segments (splits and directory doublings under `extend`), extended by items
/// of which a quarter are present keys and some repeat.
#[test]
fn extend_through_splits_matches_std() {
    let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let pre: Vec<(u64, u64)> = (0..3000).map(|i| (key(i), i)).collect();
    let removed: Vec<u64> = (0..3000).step_by(5).map(key).collect();
    let items: Vec<(u64, u64)> = (0..12_000u64)
        .map(|j| {
            let i = match j % 8 {
                // A key of the prefill (present or removed), or one repeated among the items.
                0 | 1 => j * 31 % 3000,
                2 => 3000 + j / 2,
                _ => 3000 + j,
            };
            (key(i), j)
        })
        .collect();
    let all = twins(&pre, &removed, &items);
    // Past 10 000 entries: several full-size segments (2048 slots each), so splits and
    // directory doublings happened under `extend`.
    assert!(all.len() > 10_000, "{} entries", all.len());
}

/// Drains of one transaction running `f`.
fn tx_drains(
    pool: &Pool<Root>,
    f: impl for<'t> FnOnce(&'t ptm::Transaction<'t>, &'t Root) -> Result<(), Error>,
) -> u64 {
    drains(|| pool.transaction(f).unwrap()).1
}

#[test]
fn extend_logs_each_stage_of_new_keys_behind_one_drain() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "extend-drains.pool");
    // One segment with room for all the keys below (no growth step in what is counted).
    pool.transaction(|tx, r| {
        r.m.reserve(tx, 1000)?;
        r.m.extend(tx, (0..100u64).map(|k| (k, k)))
    })
    .unwrap();
    let fresh = |lo: u64, n: u64| (lo..lo + n).map(|k| (k, k + 1));
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.extend(tx, fresh(1000, 64))),
        2,
        "one stage, the commit"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.extend(tx, fresh(2000, 65))),
        3,
        "two stages, the commit"
    );
    // A present key among new ones: the stage before it, its update, the stage after it.
    let mixed: Vec<(u64, u64)> = fresh(3000, 5).chain([(7, 70)]).chain(fresh(3100, 4)).collect();
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.extend(tx, mixed.iter().copied())),
        4,
        "split by a present key"
    );
    // A key twice: the stage before the repeat is written, then the update goes into a slot
    // that stage logged already (no drain of its own).
    let twice = [(4000, 1), (4001, 1), (4000, 2)];
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.extend(tx, twice)),
        2,
        "a repeated key"
    );
    // Against one insert each: a drain per insert, and the commit.
    assert_eq!(
        tx_drains(&pool, |tx, r| fresh(5000, 64)
            .try_for_each(|(k, v)| r.m.insert(tx, k, v).map(drop))),
        65,
        "one insert each"
    );
    let all: HashMap<u64, u64> = contents(&pool).0.into_iter().collect();
    assert_eq!(all.len(), 100 + 64 + 65 + 9 + 2 + 64);
    assert_eq!(all[&7], 70);
    assert_eq!(all[&4000], 2, "the later item of a key wins");
    assert_eq!(all[&2064], 2065);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// `PBTreeMap::extend` over present, repeated and new keys, through leaf and internal
    /// splits, against std's `BTreeMap::extend`.
    #[test]
    #[cfg_attr(miri, ignore = "pools are files")]
    fn btree_extend_matches_std(
        pre in prop::collection::vec((-500i32..500, any::<u64>()), 0..200),
        items in prop::collection::vec((-700i32..700, any::<u64>()), 0..400),
    ) {
        let dir = shm_dir();
        let (pool, _) = create(&dir, "extend-tree.pool");
        pool.transaction(|tx, r| {
            for &(k, v) in &pre {
                r.t.insert(tx, k, v)?;
            }
            r.t.extend(tx, items.iter().copied())
        })
        .unwrap();
        let mut model: std::collections::BTreeMap<i32, u64> = pre.iter().copied().collect();
        model.extend(items.iter().copied());
        let got = pool
            .transaction(|tx, r| {
                r.t.check_invariants(tx).unwrap();
                Ok::<_, Error>(r.t.iter(tx)?.collect::<Vec<_>>())
            })
            .unwrap();
        prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    }
}
