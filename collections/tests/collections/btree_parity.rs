//! `PBTreeMap` against `BTreeMap` for what it gained after std parity's first round: ranges and
//! `iter` run from both ends (`next`, `next_back`, `.rev()`, mixed until the ends meet),
//! `first_entry`/`last_entry`, `append`, `split_off`, the entry API for `PString` keys (here
//! and in `PHashMap`), and `PString::with_str`: random transactions with reopens, aborts and
//! crash images, exact leak checks, and the drains per operation.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use common::{
    add_block, check_abort, check_crash_steps, check_steps, drains, shm_dir, string_key_blocks, ModelRoot,
};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{Entry, PBTreeMap, PBTreeSet, PHashMap, PString};

#[derive(Persistent)]
#[repr(C)]
struct BRoot {
    t: PBTreeMap<u64, u64>,
    o: PBTreeMap<u64, u64>,
    ts: PBTreeMap<PString, u64>,
    hs: PHashMap<PString, u64>,
    set: PBTreeSet<u64>,
    s: PString,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct BModel {
    t: BTreeMap<u64, u64>,
    o: BTreeMap<u64, u64>,
    ts: BTreeMap<String, u64>,
    hs: HashMap<String, u64>,
    set: BTreeSet<u64>,
    s: String,
}

#[derive(Clone, Debug)]
enum BOp {
    /// Inserts into `t`, `ts` (under the key's decimal digits) and `set`.
    Extend(Vec<(u64, u64)>),
    Remove(u64),
    /// `range(a..b)` (`a..=b` when the flag is set) of `t`, `ts` and `set`, taking items from
    /// the back where the pattern says `true`, then the rest from the front.
    Range(u64, u64, bool, Vec<bool>),
    /// The first (`false`) or last entry: 0 reads it, 1 stores the value + 1, 2 removes it.
    EdgeEntry(bool, u8),
    /// Inserts the items into `o`, then appends `o` to `t`.
    Append(Vec<(u64, u64)>),
    SplitOff(u64),
    /// Counts a string key in `ts` and `hs` through their entries: `and_modify(+d)`,
    /// `or_insert(d)`.
    SEntry(u64, u64),
    /// Removes a string key through its occupied entry, if present.
    SEntryRemove(u64),
    SPush(String),
    WithStr,
}

fn b_op() -> impl Strategy<Value = BOp> {
    let k = 0..120u64;
    prop_oneof![
        2 => prop::collection::vec((k.clone(), 0..100u64), 0..40).prop_map(BOp::Extend),
        2 => k.clone().prop_map(BOp::Remove),
        3 => (k.clone(), k.clone(), any::<bool>(), prop::collection::vec(any::<bool>(), 0..12))
            .prop_map(|(a, b, i, p)| BOp::Range(a, b, i, p)),
        2 => (any::<bool>(), 0..3u8).prop_map(|(l, a)| BOp::EdgeEntry(l, a)),
        1 => prop::collection::vec((k.clone(), 0..100u64), 0..20).prop_map(BOp::Append),
        1 => k.clone().prop_map(BOp::SplitOff),
        3 => (0..40u64, 1..10u64).prop_map(|(k, d)| BOp::SEntry(k, d)),
        1 => (0..40u64).prop_map(BOp::SEntryRemove),
        1 => "[a-zé😀]{0,40}".prop_map(BOp::SPush),
        1 => Just(BOp::WithStr),
    ]
}

/// Takes every item of `it` and of `want` (a std double-ended iterator) in the same order:
/// from the back where `pattern` says so, then from the front; asserts they agree.
fn same_both_ends<T: PartialEq + std::fmt::Debug>(
    mut it: impl DoubleEndedIterator<Item = T>,
    mut want: impl DoubleEndedIterator<Item = T>,
    pattern: &[bool],
    what: &str,
) {
    for (step, &back) in pattern.iter().enumerate() {
        if back {
            assert_eq!(
                it.next_back(),
                want.next_back(),
                "{what}: next_back at step {step}"
            );
        } else {
            assert_eq!(it.next(), want.next(), "{what}: next at step {step}");
        }
    }
    assert_eq!(
        it.collect::<Vec<_>>(),
        want.collect::<Vec<_>>(),
        "{what}: the rest"
    );
}

impl ModelRoot for BRoot {
    type Model = BModel;
    type Op = BOp;

    fn apply(tx: &Transaction<'_>, r: &Self, op: &BOp, m: &BModel) -> Result<(), Error> {
        match op {
            BOp::Extend(items) => {
                r.t.extend(tx, items.iter().copied())?;
                r.ts.extend(tx, items.iter().map(|&(k, v)| (k.to_string(), v)))?;
                for &(k, _) in items {
                    r.set.insert(tx, k)?;
                }
            }
            BOp::Remove(k) => {
                assert_eq!(r.t.remove(tx, k)?, m.t.get(k).copied());
                assert_eq!(
                    r.ts.remove(tx, &k.to_string())?,
                    m.ts.get(&k.to_string()).copied()
                );
                assert_eq!(r.set.remove(tx, k)?, m.set.contains(k));
            }
            BOp::Range(a, b, incl, pattern) => {
                let (lo, hi) = (
                    Bound::Included(*a),
                    if *incl {
                        Bound::Included(*b)
                    } else {
                        Bound::Excluded(*b)
                    },
                );
                let valid = a < b || (a == b && *incl);
                let want: Vec<(u64, u64)> = if valid {
                    m.t.range((lo, hi)).map(|(k, v)| (*k, *v)).collect()
                } else {
                    Vec::new()
                };
                same_both_ends(r.t.range(tx, (lo, hi))?, want.iter().copied(), pattern, "t range");
                let wset: Vec<u64> = if valid {
                    m.set.range((lo, hi)).copied().collect()
                } else {
                    Vec::new()
                };
                same_both_ends(
                    r.set.range(tx, (lo, hi))?,
                    wset.iter().copied(),
                    pattern,
                    "set range",
                );
                let (sa, sb) = (a.to_string(), b.to_string());
                let shi = if *incl {
                    Bound::Included(sb.as_str())
                } else {
                    Bound::Excluded(sb.as_str())
                };
                let svalid = sa < sb || (sa == sb && *incl);
                let swant: Vec<(String, u64)> = if svalid {
                    m.ts.range::<str, _>((Bound::Included(sa.as_str()), shi))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect()
                } else {
                    Vec::new()
                };
                let got = r.ts.range(tx, (Bound::Included(sa.as_str()), shi))?;
                let got = got.map(|(k, v)| (k.as_string(tx).unwrap(), v));
                same_both_ends(got, swant.into_iter(), pattern, "ts range");
                assert!(
                    r.t.iter(tx)?.rev().eq(m.t.iter().rev().map(|(k, v)| (*k, *v))),
                    "t iter rev"
                );
                assert!(
                    r.set.iter(tx)?.rev().eq(m.set.iter().rev().copied()),
                    "set iter rev"
                );
            }
            BOp::EdgeEntry(last, action) => {
                let e = if *last {
                    r.t.last_entry(tx)?
                } else {
                    r.t.first_entry(tx)?
                };
                let want = if *last {
                    m.t.last_key_value()
                } else {
                    m.t.first_key_value()
                };
                assert_eq!(
                    e.as_ref().map(|e| (*e.key(), e.get())),
                    want.map(|(k, v)| (*k, *v))
                );
                if let Some(mut e) = e {
                    match action {
                        1 => assert_eq!(e.insert(e.get() + 1)?, *want.unwrap().1),
                        2 => assert_eq!(e.remove()?, *want.unwrap().1),
                        _ => {}
                    }
                }
            }
            BOp::Append(items) => {
                r.o.extend(tx, items.iter().copied())?;
                r.t.append(tx, &r.o)?;
                assert!(
                    r.o.is_empty(tx) && r.o.node_offsets(tx)?.is_empty(),
                    "append empties and frees"
                );
            }
            BOp::SplitOff(k) => {
                let want: Vec<(u64, u64)> = m.t.range(k..).map(|(k, v)| (*k, *v)).collect();
                assert_eq!(r.t.split_off(tx, k)?, want);
            }
            BOp::SEntry(k, d) => {
                let key = format!("key {k}");
                let want = m.ts.get(&key).map_or(*d, |v| v + d);
                assert_eq!(
                    r.ts.entry(tx, key.as_str())?
                        .and_modify(|v| *v += d)?
                        .or_insert(*d)?,
                    want
                );
                let want = m.hs.get(&key).map_or(*d, |v| v + d);
                assert_eq!(
                    r.hs.entry(tx, key.clone())?
                        .and_modify(|v| *v += d)?
                        .or_insert(*d)?,
                    want
                );
            }
            BOp::SEntryRemove(k) => {
                let key = format!("key {k}");
                match r.ts.entry(tx, key.as_str())? {
                    Entry::Occupied(e) => {
                        assert_eq!(e.key(), &key);
                        assert_eq!(Some(e.remove()?), m.ts.get(&key).copied());
                    }
                    Entry::Vacant(e) => {
                        assert!(!m.ts.contains_key(&key));
                        assert_eq!(e.into_key(), key);
                    }
                }
                if let Entry::Occupied(e) = r.hs.entry(tx, key.as_str())? {
                    assert_eq!(Some(e.remove()?), m.hs.get(&key).copied());
                }
            }
            BOp::SPush(t) => r.s.push_str(tx, t)?,
            BOp::WithStr => {
                assert_eq!(r.s.with_str(tx, |s| s.to_owned())?, m.s);
                assert_eq!(r.s.with_str(tx, str::len)?, m.s.len());
            }
        }
        Ok(())
    }

    fn apply_model(m: &mut BModel, op: &BOp) {
        match op {
            BOp::Extend(items) => {
                m.t.extend(items.iter().copied());
                m.ts.extend(items.iter().map(|&(k, v)| (k.to_string(), v)));
                m.set.extend(items.iter().map(|&(k, _)| k));
            }
            BOp::Remove(k) => {
                m.t.remove(k);
                m.ts.remove(&k.to_string());
                m.set.remove(k);
            }
            BOp::EdgeEntry(last, action) => {
                let e = if *last {
                    m.t.last_entry()
                } else {
                    m.t.first_entry()
                };
                if let Some(mut e) = e {
                    match action {
                        1 => *e.get_mut() += 1,
                        2 => drop(e.remove()),
                        _ => {}
                    }
                }
            }
            BOp::Append(items) => {
                m.o.extend(items.iter().copied());
                m.t.append(&mut m.o);
            }
            BOp::SplitOff(k) => drop(m.t.split_off(k)),
            BOp::SEntry(k, d) => {
                let key = format!("key {k}");
                *m.ts.entry(key.clone()).or_insert(0) += d;
                *m.hs.entry(key).or_insert(0) += d;
            }
            BOp::SEntryRemove(k) => {
                let key = format!("key {k}");
                m.ts.remove(&key);
                m.hs.remove(&key);
            }
            BOp::SPush(t) => m.s.push_str(t),
            BOp::Range(..) | BOp::WithStr => {}
        }
    }

    fn read(pool: &Pool<Self>) -> BModel {
        pool.transaction(|tx, r| {
            r.t.check(tx)?;
            r.ts.check(tx)?;
            r.set.check_invariants(tx)?;
            let t: BTreeMap<u64, u64> = r.t.iter(tx)?.collect();
            assert_eq!(r.t.to_vec(tx)?.len(), t.len());
            Ok::<_, Error>(BModel {
                t,
                o: r.o.to_vec(tx)?.into_iter().collect(),
                ts: r.ts.to_vec(tx)?.into_iter().collect(),
                hs: r
                    .hs
                    .iter(tx)
                    .map(|(k, v)| (k.as_string(tx).unwrap(), v))
                    .collect(),
                set: r.set.iter(tx)?.collect(),
                s: r.s.with_str(tx, str::to_owned)?,
            })
        })
        .unwrap()
    }

    fn reachable(pool: &Pool<Self>) -> BTreeSet<u64> {
        pool.transaction(|tx, r| {
            let mut out = BTreeSet::new();
            let nodes = [
                r.t.node_offsets(tx)?,
                r.o.node_offsets(tx)?,
                r.ts.node_offsets(tx)?,
            ];
            for n in nodes.into_iter().flatten() {
                add_block(&mut out, Some(n));
            }
            for n in r.set.node_offsets(tx)? {
                add_block(&mut out, Some(n));
            }
            for k in r.ts.separators(tx)?.into_iter().chain(r.ts.keys(tx)?) {
                add_block(&mut out, k.buffer_offset(tx));
            }
            string_key_blocks(tx, &r.hs, &mut out)?;
            add_block(&mut out, r.s.buffer_offset(tx));
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random transactions against the std twins, reopening after some, with exact leak
    /// checks after each.
    #[test]
    fn btree_matches_std_across_reopens(
        steps in prop::collection::vec((prop::collection::vec(b_op(), 1..6), any::<bool>()), 1..10),
    ) {
        let dir = shm_dir();
        check_steps::<BRoot>(&dir.path().join("b.pool"), &steps);
    }

    /// A failed transaction after any of the operations changes nothing and leaks nothing.
    #[test]
    fn btree_aborts_change_nothing(
        before in prop::collection::vec(b_op(), 0..8),
        ops in prop::collection::vec(b_op(), 1..5),
    ) {
        let dir = shm_dir();
        check_abort::<BRoot>(&dir.path().join("a.pool"), &before, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    /// Crash images after every operation and after the commit recover to the model before or
    /// after the transaction, with exactly the reachable blocks allocated.
    #[test]
    fn btree_crash_images_recover(steps in prop::collection::vec(prop::collection::vec(b_op(), 1..4), 1..5)) {
        let dir = shm_dir();
        check_crash_steps::<BRoot>(&dir.path().join("c.pool"), &steps);
    }
}

/// A tree of several levels read from both ends: `range(..).rev()` walks every leaf backwards,
/// ranges whose bounds fall between leaves and inside one, and a reversed range is empty.
#[test]
fn deep_tree_both_ends() {
    let dir = shm_dir();
    let pool = Pool::<BRoot>::create(dir.path().join("d.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    let model: BTreeMap<u64, u64> = (0..3000).map(|k| (k * 3, k)).collect();
    pool.transaction(|tx, r| r.t.extend(tx, model.iter().map(|(k, v)| (*k, *v))))
        .unwrap();
    pool.transaction(|tx, r| {
        assert!(r.t.iter(tx)?.rev().eq(model.iter().rev().map(|(k, v)| (*k, *v))));
        for (a, b) in [
            (0, 9000),
            (1, 8),
            (100, 101),
            (299, 3301),
            (4500, 4600),
            (8990, 9999),
        ] {
            let want = model.range(a..b).rev().map(|(k, v)| (*k, *v));
            assert!(r.t.range(tx, a..b)?.rev().eq(want), "{a}..{b}");
            let mut it = r.t.range(tx, a..=b)?;
            let mut want = model.range(a..=b);
            loop {
                let (x, y) = (it.next_back(), want.next_back().map(|(k, v)| (*k, *v)));
                assert_eq!(x, y);
                let (x, y) = (it.next(), want.next().map(|(k, v)| (*k, *v)));
                assert_eq!(x, y);
                if x.is_none() {
                    break;
                }
            }
        }
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = r.t.range(tx, 10..5)?;
        assert_eq!(reversed.rev().count(), 0);
        Ok::<_, Error>(())
    })
    .unwrap();
}

type Case = Box<dyn Fn(&Transaction<'_>, &BRoot) -> Result<(), Error>>;

/// Drains: an edge entry's store or removal 2, a string entry's insert 2, `split_off` and
/// `append` at most one snapshot per entry moved (entries of a leaf logged already add none)
/// and the commit; reads and `with_str` 0.
#[test]
fn drains_of_the_new_operations() {
    let dir = shm_dir();
    let pool = Pool::<BRoot>::create(dir.path().join("d.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    pool.transaction(|tx, r| {
        r.t.extend(tx, (0..100).map(|k| (k, k)))?;
        r.s.push_str(tx, "héllo")
    })
    .unwrap();
    let cases: Vec<(&str, u64, Case)> = vec![
        ("first_entry", 0, Box::new(|tx, r| r.t.first_entry(tx).map(drop))),
        (
            "last_entry insert",
            2,
            Box::new(|tx, r| r.t.last_entry(tx)?.expect("some").insert(7).map(drop)),
        ),
        (
            "first_entry remove",
            2,
            Box::new(|tx, r| r.t.first_entry(tx)?.expect("some").remove().map(drop)),
        ),
        (
            "string entry insert",
            2,
            Box::new(|tx, r| r.ts.entry(tx, "a")?.or_insert(1).map(drop)),
        ),
        (
            "string entry update",
            2,
            Box::new(|tx, r| r.ts.entry(tx, "a")?.and_modify(|v| *v += 1).map(drop)),
        ),
        (
            "hash string entry insert",
            2,
            Box::new(|tx, r| r.hs.entry(tx, "a")?.or_insert(1).map(drop)),
        ),
        // The three entries share a leaf: the removals after the first find it logged already
        // (no new range, no drain).
        (
            "split_off of 3 in one leaf",
            2,
            Box::new(|tx, r| r.t.split_off(tx, &97).map(drop)),
        ),
        // 2 inserts into an empty `o` (its fresh leaf: one snapshot, of the handle), 2 into
        // `t`'s last leaf (one snapshot), `o` emptied (its handle is logged already), commit.
        (
            "append of 2",
            3,
            Box::new(|tx, r| {
                r.o.extend(tx, [(500, 1), (501, 2)])?;
                r.t.append(tx, &r.o)
            }),
        ),
        (
            "range rev",
            0,
            Box::new(|tx, r| r.t.range(tx, 10..50).map(|it| assert_eq!(it.rev().count(), 40))),
        ),
        (
            "with_str",
            0,
            Box::new(|tx, r| r.s.with_str(tx, |s| assert_eq!(s, "héllo"))),
        ),
    ];
    for (name, want, f) in cases {
        let ((), n) = drains(|| pool.transaction(|tx, r| f(tx, r)).unwrap());
        assert_eq!(n, want, "{name}");
    }
}

/// `pop_first` and `pop_last` of a tree of several levels, alternating, return std's entries
/// until the map is empty (then `None`), and the tree stays valid on the way.
#[test]
fn pop_both_ends_until_empty() {
    let dir = shm_dir();
    let pool = Pool::<BRoot>::create(dir.path().join("p.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    let mut model: BTreeMap<u64, u64> = (0..400).map(|k| (k * 5, k)).collect();
    pool.transaction(|tx, r| r.t.extend(tx, model.iter().map(|(k, v)| (*k, *v))))
        .unwrap();
    for step in 0..model.len() + 2 {
        let last = step % 2 == 1;
        let got = pool
            .transaction(|tx, r| {
                let got = if last {
                    r.t.pop_last(tx)?
                } else {
                    r.t.pop_first(tx)?
                };
                r.t.check_invariants(tx).unwrap();
                Ok::<_, Error>(got)
            })
            .unwrap();
        let want = if last { model.pop_last() } else { model.pop_first() };
        assert_eq!(got, want, "step {step}");
    }
    pool.transaction(|tx, r| {
        assert_eq!(r.t.len(tx), 0);
        assert!(r.t.node_offsets(tx)?.is_empty(), "every node freed");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `len`, `is_empty`, `contains_key` and `remove_free`'s answer as std's `len`, `is_empty`,
/// `contains_key` and `remove(..).is_some()`, from an empty map through several levels and back
/// to empty.
#[test]
fn len_is_empty_contains_key_and_remove_free_follow_std() {
    let dir = shm_dir();
    let pool = Pool::<BRoot>::create(dir.path().join("l.pool"), common::POOL_SIZE, &common::opts()).unwrap();
    let mut model = BTreeMap::new();
    let same = |model: &BTreeMap<u64, u64>| {
        pool.transaction(|tx, r| {
            assert_eq!(r.t.len(tx), model.len() as u64);
            assert_eq!(r.t.is_empty(tx), model.is_empty());
            for k in [0, 1, 2, 3, 149, 150, 299, 300, 301] {
                assert_eq!(r.t.contains_key(tx, &k)?, model.contains_key(&k), "key {k}");
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    };
    same(&model);
    for k in (0..300).step_by(3) {
        pool.transaction(|tx, r| r.t.insert(tx, k, k).map(drop)).unwrap();
        model.insert(k, k);
        same(&model);
    }
    for k in 0..301 {
        let got = pool.transaction(|tx, r| r.t.remove_free(tx, &k)).unwrap();
        assert_eq!(got, model.remove(&k).is_some(), "key {k}");
        if k % 7 == 0 {
            same(&model);
        }
    }
    same(&model);
}
