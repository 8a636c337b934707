//! `PBTreeMap::range` against `BTreeMap::range`: random trees (several levels, reshaped by
//! removals) and random bounds (included, excluded, unbounded); range reads cost 0
//! drains.

use crate::common;

use std::collections::BTreeMap;
use std::ops::Bound;

use common::*;
use proptest::prelude::*;
use ptm::Error;

fn bound() -> impl Strategy<Value = Bound<i32>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        3 => (-320i32..320).prop_map(Bound::Included),
        3 => (-320i32..320).prop_map(Bound::Excluded),
    ]
}

/// Whether `BTreeMap::range` accepts these bounds (it panics on empty ranges).
fn std_accepts(lo: &Bound<i32>, hi: &Bound<i32>) -> bool {
    use Bound::*;
    match (lo, hi) {
        (Excluded(a), Excluded(b)) => a < b,
        (Included(a) | Excluded(a), Included(b) | Excluded(b)) => a <= b,
        _ => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn range_matches_std(
        inserts in prop::collection::vec((-300i32..300, any::<u64>()), 0..700),
        removes in prop::collection::vec(-300i32..300, 0..400),
        ranges in prop::collection::vec((bound(), bound()), 1..24),
    ) {
        let dir = shm_dir();
        let (pool, _) = create(&dir, "range.pool");
        let mut model = BTreeMap::new();
        // A few transactions of many operations each keep the test fast.
        for chunk in inserts.chunks(64) {
            pool.transaction(|tx, r| {
                for &(k, v) in chunk {
                    r.t.insert(tx, k, v)?;
                }
                Ok::<_, Error>(())
            }).unwrap();
            model.extend(chunk.iter().copied());
        }
        pool.transaction(|tx, r| {
            for k in &removes {
                r.t.remove(tx, k)?;
            }
            Ok::<_, Error>(())
        }).unwrap();
        for k in &removes {
            model.remove(k);
        }
        for (lo, hi) in &ranges {
            let want: Vec<(i32, u64)> = if std_accepts(lo, hi) {
                model.range((*lo, *hi)).map(|(k, v)| (*k, *v)).collect()
            } else {
                Vec::new()
            };
            let (got, d) = drains(|| {
                pool.transaction(|tx, r| {
                    let mut it = r.t.range(tx, (*lo, *hi))?;
                    let got: Vec<(i32, u64)> = it.by_ref().collect();
                    assert!(it.error().is_none());
                    assert_eq!(it.next(), None, "fused");
                    // The same range from the back.
                    let mut back = r.t.range(tx, (*lo, *hi))?;
                    let mut got_back: Vec<(i32, u64)> = back.by_ref().rev().collect();
                    assert!(back.error().is_none());
                    got_back.reverse();
                    Ok::<_, Error>((got, got_back))
                }).unwrap()
            });
            let (got, got_back) = got;
            prop_assert_eq!(&got_back, &want, "range {:?}..{:?} from the back", lo, hi);
            prop_assert_eq!(&got, &want, "range {:?}..{:?}", lo, hi);
            prop_assert_eq!(d, 0, "drains of a range read");
        }
    }
}

#[test]
fn range_forms_and_laziness() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "forms.pool");
    pool.transaction(|tx, r| {
        for k in 0..1000i32 {
            r.t.insert(tx, k * 2, k as u64)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        let keys = |it: ptm_collections::Range<'_, i32, u64>| it.map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(r.t.range(tx, 10..16)?), [10, 12, 14]);
        assert_eq!(keys(r.t.range(tx, 11..=16)?), [12, 14, 16]);
        assert_eq!(keys(r.t.range(tx, ..4)?), [0, 2]);
        assert_eq!(keys(r.t.range(tx, 1994..)?), [1994, 1996, 1998]);
        assert_eq!(r.t.range(tx, ..)?.count(), 1000);
        assert_eq!(keys(r.t.range(tx, 1999..)?), Vec::<i32>::new());
        assert_eq!(keys(r.t.range(tx, -5..0)?), Vec::<i32>::new());
        #[allow(clippy::reversed_empty_ranges)]
        let empty = r.t.range(tx, 20..10)?.count();
        assert_eq!(empty, 0, "start after end yields nothing");
        let first: Vec<(i32, u64)> = r.t.range(tx, 500..)?.take(2).collect();
        assert_eq!(first, [(500, 250), (502, 251)]);
        Ok::<_, Error>(())
    })
    .unwrap();
    // Remove everything in the middle: the leaves there merge away.
    pool.transaction(|tx, r| {
        for k in 100..1900i32 {
            r.t.remove(tx, &k)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        let got: Vec<i32> = r.t.range(tx, 90..1910)?.map(|(k, _)| k).collect();
        let want: Vec<i32> = (90..100).chain(1900..1910).filter(|k| k % 2 == 0).collect();
        assert_eq!(got, want);
        Ok::<_, Error>(())
    })
    .unwrap();
}
