//! `PBTreeMap` with handle keys and handle values: `PBTreeMap<PString, u64>` against
//! `BTreeMap<String, u64>`, `PBTreeMap<u64, PVec<u64>>` against `BTreeMap<u64, Vec<u64>>`,
//! `PBTreeMap<PVec<u8>, PString>` (byte keys, string values) and a depth-2
//! `PBTreeMap<u64, PBTreeMap<PString, PVec<u64>>>`: random operations with range reads and
//! removals through splits, borrows, merges and root collapses, across reopens and aborted
//! transactions, with the tree invariants checked after every operation and the heap holding
//! exactly the reachable blocks (nodes, leaf key buffers, separator copies, nested values) after
//! every step; drain counts; crash images; stale references; corrupted key handles.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use common::{
    add_block, assert_reachable_only, check_abort, check_crash_steps, check_steps, crash_step, drains, opts,
    shm_dir, ModelRoot, POOL_SIZE,
};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PBTreeMap, PHandle, POrdKey, PString, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    s: PBTreeMap<PString, u64>,
    n: PBTreeMap<u64, PVec<u64>>,
    b: PBTreeMap<PVec<u8>, PString>,
    /// Depth 2: trees of vectors in a tree.
    d: PBTreeMap<u64, PBTreeMap<PString, PVec<u64>>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    s: BTreeMap<String, u64>,
    n: BTreeMap<u64, Vec<u64>>,
    b: BTreeMap<Vec<u8>, String>,
    d: BTreeMap<u64, BTreeMap<String, Vec<u64>>>,
}

/// Distinct keys of 1 to 23 bytes (some prefixes of others, some multibyte) whose order is not
/// the order of `i`.
fn key(i: u16) -> String {
    let base = format!("{:x}", (u32::from(i) * 7919) % 1000);
    match i % 5 {
        0 => base,
        1 => format!("{base}-a long suffix é"),
        2 => format!("pre/{base}"),
        3 => format!("{base}.{base}"),
        _ => format!("{base}\u{1F600}"),
    }
}

/// Byte keys: as [`key`], with a zero byte and a high byte in some.
fn bkey(i: u16) -> Vec<u8> {
    let mut k = key(i).into_bytes();
    match i % 3 {
        0 => k.push(0),
        1 => k.insert(0, 0xff),
        _ => {}
    }
    k
}

const KEYS: u16 = 400;
/// Keys of the 3-level trees: internal nodes of string keys are wide (64 children), so a tree
/// needs more than 64 leaves for a third level ([`key`] is distinct up to 1000).
const DEEP: u16 = 1000;

#[derive(Clone, Debug)]
enum Op {
    SInsert(u16, u64),
    SRemove(u16),
    /// Inserts keys `i..i + n` (by index) into `s`.
    SFill(u16, u16),
    /// Removes keys `i..i + n` (by index) from `s`.
    SRemoveMany(u16, u16),
    /// Compares `s.range` between keys `a` and `b` with std.
    SRange(u16, u16, u8),
    SClear,
    /// `n.get_or_insert_new(k)`, then pushes `x`.
    NPush(u64, u64),
    /// Pops from the vector of `k`.
    NInnerPop(u64),
    NRemoveFree(u64),
    /// Pushes `k` to the vectors of keys `k..k + n` (creating them).
    NFill(u64, u64),
    NRemoveMany(u64, u64),
    NClear,
    /// `b.get_or_insert_new(bkey(i))`, then `set(s)`.
    BSet(u16, String),
    BRemoveFree(u16),
    BRange(u16, u16),
    BClear,
    /// `d[k][key(i)].push(x)`, creating both levels.
    DPush(u64, u16, u64),
    /// `d[k].remove_free(key(i))`.
    DInnerRemove(u64, u16),
    DRemoveFree(u64),
    DFree,
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        6 => (k.clone(), any::<u64>()).prop_map(|(i, v)| Op::SInsert(i, v)),
        4 => k.clone().prop_map(Op::SRemove),
        2 => (k.clone(), 10u16..150).prop_map(|(i, n)| Op::SFill(i, n)),
        2 => (k.clone(), 10u16..200).prop_map(|(i, n)| Op::SRemoveMany(i, n)),
        2 => (k.clone(), k.clone(), 0u8..9).prop_map(|(a, b, m)| Op::SRange(a, b, m)),
        1 => Just(Op::SClear),
        5 => (0u64..300, any::<u64>()).prop_map(|(k, x)| Op::NPush(k, x)),
        2 => (0u64..300).prop_map(Op::NInnerPop),
        3 => (0u64..300).prop_map(Op::NRemoveFree),
        2 => (0u64..300, 10u64..120).prop_map(|(k, n)| Op::NFill(k, n)),
        2 => (0u64..300, 10u64..150).prop_map(|(k, n)| Op::NRemoveMany(k, n)),
        1 => Just(Op::NClear),
        3 => (k.clone(), "[a-zé]{0,20}").prop_map(|(i, s)| Op::BSet(i, s)),
        2 => k.clone().prop_map(Op::BRemoveFree),
        1 => (k.clone(), k.clone()).prop_map(|(a, b)| Op::BRange(a, b)),
        1 => Just(Op::BClear),
        3 => (0u64..20, 0u16..60, any::<u64>()).prop_map(|(k, i, x)| Op::DPush(k, i, x)),
        2 => (0u64..20, 0u16..60).prop_map(|(k, i)| Op::DInnerRemove(k, i)),
        1 => (0u64..20).prop_map(Op::DRemoveFree),
        1 => Just(Op::DFree),
    ]
}

/// Bounds between keys `a` and `b` (in key order), of kind `m`: `BTreeMap::range` bounds.
fn bounds(a: &str, b: &str, m: u8) -> (Bound<String>, Bound<String>) {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let start = match m % 3 {
        0 => Bound::Included(lo.to_owned()),
        1 => Bound::Excluded(lo.to_owned()),
        _ => Bound::Unbounded,
    };
    let end = match m / 3 {
        0 => Bound::Included(hi.to_owned()),
        1 if lo < hi => Bound::Excluded(hi.to_owned()),
        _ => Bound::Unbounded,
    };
    (start, end)
}

fn as_str(b: &Bound<String>) -> Bound<&str> {
    match b {
        Bound::Included(s) => Bound::Included(s.as_str()),
        Bound::Excluded(s) => Bound::Excluded(s.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Checks the invariants of every tree of the root (nested ones included).
fn check_all(tx: &Transaction<'_>, r: &Root) -> Result<(), Error> {
    let ok = |what: &str, c: Result<Vec<Vec<usize>>, String>| {
        if let Err(e) = c {
            panic!("{what}: B-tree invariant: {e}");
        }
    };
    ok("s", r.s.check_invariants(tx));
    ok("n", r.n.check_invariants(tx));
    ok("b", r.b.check_invariants(tx));
    ok("d", r.d.check_invariants(tx));
    for (k, inner) in r.d.iter_refs(tx)? {
        ok(&format!("d[{k}]"), inner.check_invariants(tx));
    }
    Ok(())
}

/// The string contents of a key reference.
fn text(tx: &Transaction<'_>, k: &PString) -> Result<String, Error> {
    k.as_string(tx)
}

impl ModelRoot for Root {
    type Model = Model;
    type Op = Op;

    fn apply(tx: &Transaction<'_>, r: &Self, op: &Op, m: &Model) -> Result<(), Error> {
        match op {
            Op::SInsert(i, v) => assert_eq!(r.s.insert(tx, key(*i), *v)?, m.s.get(&key(*i)).copied()),
            Op::SRemove(i) => assert_eq!(r.s.remove(tx, &key(*i))?, m.s.get(&key(*i)).copied()),
            Op::SFill(i, n) => {
                for j in *i..i + n {
                    r.s.insert(tx, key(j), u64::from(j))?;
                }
            }
            Op::SRemoveMany(i, n) => {
                for j in *i..i + n {
                    assert_eq!(r.s.remove(tx, &key(j))?, m.s.get(&key(j)).copied());
                }
            }
            Op::SRange(a, b, mode) => {
                let (lo, hi) = bounds(&key(*a), &key(*b), *mode);
                let want: Vec<(String, u64)> =
                    m.s.range((lo.clone(), hi.clone()))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect();
                let mut it = r.s.range(tx, (as_str(&lo), as_str(&hi)))?;
                let got = it
                    .by_ref()
                    .map(|(k, v)| Ok((text(tx, k)?, v)))
                    .collect::<Result<Vec<_>, Error>>()?;
                assert!(it.error().is_none());
                assert_eq!(got, want, "range {lo:?}..{hi:?}");
            }
            Op::SClear => r.s.clear(tx)?,
            Op::NPush(k, x) => r.n.get_or_insert_new(tx, *k)?.push(tx, *x)?,
            Op::NInnerPop(k) => {
                let got = match r.n.get_ref(tx, k)? {
                    Some(v) => v.pop(tx)?,
                    None => None,
                };
                assert_eq!(got, m.n.get(k).and_then(|v| v.last().copied()));
            }
            Op::NRemoveFree(k) => assert_eq!(r.n.remove_free(tx, k)?, m.n.contains_key(k)),
            Op::NFill(k, n) => {
                for j in *k..k + n {
                    r.n.get_or_insert_new(tx, j)?.push(tx, *k)?;
                }
            }
            Op::NRemoveMany(k, n) => {
                for j in *k..k + n {
                    assert_eq!(r.n.remove_free(tx, &j)?, m.n.contains_key(&j));
                }
            }
            Op::NClear => r.n.clear(tx)?,
            Op::BSet(i, x) => r.b.get_or_insert_new(tx, bkey(*i))?.set(tx, x)?,
            Op::BRemoveFree(i) => assert_eq!(r.b.remove_free(tx, &bkey(*i))?, m.b.contains_key(&bkey(*i))),
            Op::BRange(a, b) => {
                let (lo, hi) = (bkey(*a).min(bkey(*b)), bkey(*a).max(bkey(*b)));
                let want: Vec<(Vec<u8>, String)> =
                    m.b.range(lo.clone()..=hi.clone())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                let got =
                    r.b.range_refs(tx, lo.as_slice()..=hi.as_slice())?
                        .map(|(k, v)| Ok((k.to_vec(tx)?, v.as_string(tx)?)))
                        .collect::<Result<Vec<_>, Error>>()?;
                assert_eq!(got, want, "byte range");
            }
            Op::BClear => r.b.clear(tx)?,
            Op::DPush(k, i, x) => {
                r.d.get_or_insert_new(tx, *k)?
                    .get_or_insert_new(tx, key(*i))?
                    .push(tx, *x)?
            }
            Op::DInnerRemove(k, i) => {
                let removed = match r.d.get_ref(tx, k)? {
                    Some(inner) => inner.remove_free(tx, &key(*i))?,
                    None => false,
                };
                assert_eq!(removed, m.d.get(k).is_some_and(|t| t.contains_key(&key(*i))));
            }
            Op::DRemoveFree(k) => assert_eq!(r.d.remove_free(tx, k)?, m.d.contains_key(k)),
            Op::DFree => r.d.free(tx)?,
        }
        check_all(tx, r)
    }

    fn apply_model(m: &mut Model, op: &Op) {
        match op {
            Op::SInsert(i, v) => {
                m.s.insert(key(*i), *v);
            }
            Op::SRemove(i) => {
                m.s.remove(&key(*i));
            }
            Op::SFill(i, n) => m.s.extend((*i..i + n).map(|j| (key(j), u64::from(j)))),
            Op::SRemoveMany(i, n) => (*i..i + n).for_each(|j| {
                m.s.remove(&key(j));
            }),
            Op::SRange(..) | Op::BRange(..) => {}
            Op::SClear => m.s.clear(),
            Op::NPush(k, x) => m.n.entry(*k).or_default().push(*x),
            Op::NInnerPop(k) => {
                if let Some(v) = m.n.get_mut(k) {
                    v.pop();
                }
            }
            Op::NRemoveFree(k) => {
                m.n.remove(k);
            }
            Op::NFill(k, n) => (*k..k + n).for_each(|j| m.n.entry(j).or_default().push(*k)),
            Op::NRemoveMany(k, n) => (*k..k + n).for_each(|j| {
                m.n.remove(&j);
            }),
            Op::NClear => m.n.clear(),
            Op::BSet(i, x) => {
                m.b.insert(bkey(*i), x.clone());
            }
            Op::BRemoveFree(i) => {
                m.b.remove(&bkey(*i));
            }
            Op::BClear => m.b.clear(),
            Op::DPush(k, i, x) => m.d.entry(*k).or_default().entry(key(*i)).or_default().push(*x),
            Op::DInnerRemove(k, i) => {
                if let Some(t) = m.d.get_mut(k) {
                    t.remove(&key(*i));
                }
            }
            Op::DRemoveFree(k) => {
                m.d.remove(k);
            }
            Op::DFree => m.d.clear(),
        }
    }

    fn read(pool: &Pool<Self>) -> Model {
        pool.transaction(|tx, r| {
            check_all(tx, r)?;
            let s: BTreeMap<String, u64> = r.s.to_vec(tx)?.into_iter().collect();
            assert_eq!(s.len() as u64, r.s.len(tx));
            let it =
                r.s.iter(tx)?
                    .map(|(k, v)| Ok((text(tx, k)?, v)))
                    .collect::<Result<Vec<_>, Error>>()?;
            assert_eq!(it, s.clone().into_iter().collect::<Vec<_>>(), "iter in key order");
            for (k, v) in &s {
                assert_eq!(r.s.get(tx, k)?, Some(*v));
            }
            let mut n = BTreeMap::new();
            for (k, v) in r.n.iter_refs(tx)? {
                n.insert(k, v.to_vec(tx)?);
            }
            assert_eq!(n.len() as u64, r.n.len(tx));
            let mut b = BTreeMap::new();
            for (k, v) in r.b.iter_refs(tx)? {
                b.insert(k.to_vec(tx)?, v.as_string(tx)?);
            }
            assert_eq!(b.len() as u64, r.b.len(tx));
            let mut d = BTreeMap::new();
            for (k, inner) in r.d.iter_refs(tx)? {
                let mut t = BTreeMap::new();
                for (ik, v) in inner.iter_refs(tx)? {
                    t.insert(text(tx, ik)?, v.to_vec(tx)?);
                }
                d.insert(k, t);
            }
            Ok::<_, Error>(Model { s, n, b, d })
        })
        .unwrap()
    }

    fn reachable(pool: &Pool<Self>) -> BTreeSet<u64> {
        pool.transaction(|tx, r| {
            let mut out = BTreeSet::new();
            // `s` has `Copy` values: its nodes, separators and keys.
            for n in r.s.node_offsets(tx)? {
                add_block(&mut out, Some(n));
            }
            for k in
                r.s.separators(tx)?
                    .into_iter()
                    .chain(r.s.iter(tx)?.map(|(k, _)| k))
            {
                add_block(&mut out, k.buffer_offset(tx));
            }
            tree_blocks(
                tx,
                &r.n,
                &mut out,
                |_, _| {},
                |v, out| add_block(out, v.buffer_offset(tx)),
            )?;
            tree_blocks(
                tx,
                &r.b,
                &mut out,
                |k, out| add_block(out, k.buffer_offset(tx)),
                |v, out| add_block(out, v.buffer_offset(tx)),
            )?;
            let mut inner = Vec::new();
            tree_blocks(tx, &r.d, &mut out, |_, _| {}, |v, _| inner.push(v))?;
            for t in &inner {
                tree_blocks(
                    tx,
                    &**t,
                    &mut out,
                    |k, out| add_block(out, k.buffer_offset(tx)),
                    |v, out| add_block(out, v.buffer_offset(tx)),
                )?;
            }
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}

/// Adds the blocks `t` owns to `out`: its nodes, through `key` the blocks of every leaf key and
/// separator, through `val` those of every value (asserting no block is reached twice).
fn tree_blocks<'a, K: POrdKey + 'a, V: PHandle>(
    tx: &'a Transaction<'_>,
    t: &'a PBTreeMap<K, V>,
    out: &mut BTreeSet<u64>,
    mut key: impl FnMut(K::Ref<'a>, &mut BTreeSet<u64>),
    mut val: impl FnMut(ptm::Nested<'a, V>, &mut BTreeSet<u64>),
) -> Result<(), Error> {
    for n in t.node_offsets(tx)? {
        add_block(out, Some(n));
    }
    for k in t.separators(tx)? {
        key(k, out);
    }
    for (k, v) in t.iter_refs(tx)? {
        key(k, out);
        val(v, out);
    }
    Ok(())
}

fn step() -> impl Strategy<Value = (Vec<Op>, bool)> {
    (prop::collection::vec(op(), 1..6), prop::bool::weighted(0.15))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random transactions (several operations each) against std, reopening now and then:
    /// invariants after every operation, exact heap ownership after every transaction, and
    /// clearing everything leaves an empty heap.
    #[test]
    fn handle_keys_and_values_match_std(steps in prop::collection::vec(step(), 1..25)) {
        let dir = shm_dir();
        let (mut pool, _) = check_steps::<Root>(&dir.path().join("p.pool"), &steps);
        pool.transaction(|tx, r| {
            r.s.clear(tx)?;
            r.n.clear(tx)?;
            r.b.free(tx)?;
            r.d.free(tx)
        })
        .unwrap();
        prop_assert!(pool.allocated_blocks().unwrap().is_empty(), "everything freed");
    }

    /// A failed transaction changes nothing and leaks nothing (fresh key buffers, separator
    /// copies and nodes included).
    #[test]
    fn aborted_transactions_change_nothing(
        before in prop::collection::vec(op(), 0..12),
        ops in prop::collection::vec(op(), 1..12),
    ) {
        let dir = shm_dir();
        check_abort::<Root>(&dir.path().join("a.pool"), &before, &ops);
    }
}

/// Keys inserted in index order (not key order), so splits happen all over the tree.
fn fill_ops(from: u16, to: u16) -> Vec<Op> {
    vec![
        Op::SFill(from, to - from),
        Op::NFill(u64::from(from), u64::from(to - from)),
    ]
}

/// Three levels of string keys and of nested vectors, emptied from the middle out and from the
/// ends: every level collapses, and each separator copy is freed exactly once.
#[test]
fn deep_trees_collapse_and_free_everything() {
    let dir = shm_dir();
    let path = dir.path().join("deep.pool");
    let mut steps: Vec<(Vec<Op>, bool)> = vec![(fill_ops(0, DEEP), true)];
    for (i, j) in [(375, 250), (0, 150), (750, 250), (150, 225), (625, 125)] {
        steps.push((
            vec![Op::SRemoveMany(i, j), Op::NRemoveMany(u64::from(i), u64::from(j))],
            i == 750,
        ));
    }
    let (mut pool, model) = check_steps::<Root>(&path, &steps);
    assert!(model.s.is_empty() && model.n.is_empty(), "emptied");
    assert!(pool.allocated_blocks().unwrap().is_empty());
    drop(pool);

    // The depth the trees reach, and their collapse level by level.
    let mut pool = Pool::<Root>::create(dir.path().join("d2.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..DEEP {
            r.s.insert(tx, key(i), u64::from(i))?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let depth = |pool: &Pool<Root>| {
        pool.transaction(|tx, r| Ok::<_, Error>(r.s.check_invariants(tx).unwrap().len()))
            .unwrap()
    };
    let mut depths = vec![depth(&pool)];
    assert_eq!(depths, [3], "1000 keys make 3 levels");
    let mut order: Vec<u16> = (0..DEEP).collect();
    order.sort_by_key(|&i| (i * 37) % DEEP);
    for chunk in order.chunks(7) {
        pool.transaction(|tx, r| {
            for &i in chunk {
                assert_eq!(r.s.remove(tx, key(i).as_str())?, Some(u64::from(i)));
            }
            Ok::<_, Error>(())
        })
        .unwrap();
        let d = depth(&pool);
        if depths.last() != Some(&d) {
            depths.push(d);
        }
        assert_reachable_only(&mut pool, "while emptying");
    }
    assert_eq!(depths, [3, 2, 1, 0]);
    assert!(pool.allocated_blocks().unwrap().is_empty());
}

/// Drains: 2 per insert, removal and `get_or_insert_new` (splits, borrows, merges, collapses,
/// key buffers and separator copies included), 0 per get, `get_ref`, range and iteration, 2 for
/// clearing a depth-2 tree.
#[test]
fn handle_key_drains() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("dr.pool"), POOL_SIZE, &opts()).unwrap();
    let nodes = |pool: &Pool<Root>| {
        pool.transaction(|tx, r| Ok::<_, Error>((r.s.node_offsets(tx)?.len(), r.n.node_offsets(tx)?.len())))
            .unwrap()
    };
    let mut grew = 0;
    for i in 0..KEYS {
        let before = nodes(&pool);
        let (_, d) = drains(|| pool.transaction(|tx, r| r.s.insert(tx, key(i), 1)).unwrap());
        assert_eq!(d, 2, "insert {i}");
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.n.get_or_insert_new(tx, u64::from(i)).map(drop))
                .unwrap()
        });
        assert_eq!(d, 2, "get_or_insert_new {i}");
        grew += usize::from(nodes(&pool) != before);
    }
    assert!(grew > 40, "{grew} inserts split nodes");
    let (_, d) = drains(|| pool.transaction(|tx, r| r.s.insert(tx, key(3), 9)).unwrap());
    assert_eq!(d, 2, "update");
    let (_, d) = drains(|| {
        pool.transaction(|tx, r| {
            for i in 0..KEYS {
                assert_eq!(r.s.get(tx, key(i).as_str())?, Some(if i == 3 { 9 } else { 1 }));
                assert!(r.n.get_ref(tx, &u64::from(i))?.is_some());
                // Present: no insert.
                r.n.get_or_insert_new(tx, u64::from(i))?;
            }
            assert_eq!(
                r.s.range(tx, "1".."8")?.count(),
                r.s.iter(tx)?
                    .filter(|(k, _)| {
                        let k = k.as_string(tx).unwrap();
                        ("1".."8").contains(&k.as_str())
                    })
                    .count()
            );
            assert_eq!(r.n.range_refs(tx, 10..20)?.count(), 10);
            Ok::<_, Error>(())
        })
        .unwrap()
    });
    assert_eq!(d, 0, "reads");
    let mut shrank = 0;
    for i in (0..KEYS).rev() {
        let before = nodes(&pool);
        let (_, d) = drains(|| pool.transaction(|tx, r| r.s.remove(tx, key(i).as_str())).unwrap());
        assert_eq!(d, 2, "remove {i}");
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.n.remove_free(tx, &u64::from(i)))
                .unwrap()
        });
        assert_eq!(d, 2, "remove_free {i}");
        shrank += usize::from(nodes(&pool) != before);
    }
    assert!(shrank > 40, "{shrank} removals merged nodes");
    let (_, d) = drains(|| pool.transaction(|tx, r| r.s.remove(tx, "absent")).unwrap());
    assert_eq!(d, 0, "absent");

    // Depth 2: every insert into the inner tree and every push is one snapshot drain plus the
    // commit; clearing the whole outer tree is 2.
    for k in 0..30 {
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.d.get_or_insert_new(tx, k).map(drop))
                .unwrap()
        });
        assert_eq!(d, 2, "outer get_or_insert_new");
        for i in 0..40 {
            let (_, d) = drains(|| {
                pool.transaction(|tx, r| {
                    r.d.get_ref(tx, &k)?
                        .expect("made")
                        .get_or_insert_new(tx, key(i))
                        .map(drop)
                })
                .unwrap()
            });
            assert_eq!(d, 2, "inner get_or_insert_new");
        }
        pool.transaction(|tx, r| {
            for (_, v) in r.d.get_ref(tx, &k)?.expect("made").iter_refs(tx)? {
                v.extend(tx, [1, 2, 3])?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    let blocks = pool.allocated_blocks().unwrap().len();
    assert!(blocks > 30 * 40, "{blocks} blocks");
    let (_, d) = drains(|| pool.transaction(|tx, r| r.d.clear(tx)).unwrap());
    assert_eq!(d, 2, "clear at depth 2");
    assert!(pool.allocated_blocks().unwrap().is_empty());
}

/// Crash images after every operation of transactions that split, borrow, merge and collapse
/// string-keyed trees and trees of vectors (a separator copy made or freed in each), and clear
/// them: the state before or after, exactly the reachable blocks allocated.
#[test]
fn crash_images_of_handle_trees() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    let mut pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let mut model = Model::default();
    for chunk in (0..200u16).collect::<Vec<_>>().chunks(40) {
        let ops: Vec<Op> = chunk
            .chunks(10)
            .flat_map(|c| {
                [
                    Op::SFill(c[0], 10),
                    Op::NFill(u64::from(c[0]), 10),
                    Op::BSet(c[0], "x".repeat(usize::from(c[0] % 30))),
                    Op::DPush(u64::from(c[0] % 3), c[0] % 50, 7),
                ]
            })
            .collect();
        pool = crash_step(pool, &path, &mut model, &ops);
    }
    for i in (0..200u16).step_by(20) {
        let ops = [
            Op::SRemoveMany(i, 12),
            Op::SRemove(i + 15),
            Op::NRemoveMany(u64::from(i), 12),
            Op::BRemoveFree(i),
            Op::DInnerRemove(u64::from(i % 3), i % 50),
            Op::SInsert(i + 1, 5),
        ];
        pool = crash_step(pool, &path, &mut model, &ops);
    }
    let ops = [Op::SClear, Op::NClear, Op::BClear, Op::DRemoveFree(1), Op::DFree];
    pool = crash_step(pool, &path, &mut model, &ops);
    assert_eq!(model, Model::default());
    assert!(pool.allocated_blocks().unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Random transactions, crashed after every operation and after the commit.
    #[test]
    fn crash_images_of_random_transactions(
        steps in prop::collection::vec(prop::collection::vec(op(), 1..4), 1..8),
    ) {
        let dir = shm_dir();
        check_crash_steps::<Root>(&dir.path().join("r.pool"), &steps);
    }
}

/// References kept across a split or a merge that moves their entry are stale: writes (and
/// checked reads) through them fail with `StaleReference`, never reaching the moved entry or a
/// freed leaf; the moved entries are found intact through fresh references.
#[test]
fn stale_references_across_splits_and_merges_are_refused() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("s.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        // One full leaf: keys 0..15 (slots 0..15), each vector holding its key.
        for k in 0..15u64 {
            r.n.get_or_insert_new(tx, k)?.push(tx, k)?;
        }
        let last = r.n.get_ref(tx, &14)?.expect("present");
        assert_eq!(last.to_vec(tx)?, [14]);
        // The 16th key splits the leaf 8 + 8: slot 14 of the left leaf is vacated.
        r.n.get_or_insert_new(tx, 15)?;
        assert_eq!(r.n.check_invariants(tx).unwrap(), [vec![1], vec![8, 8]]);
        assert!(matches!(last.push(tx, 99), Err(Error::StaleReference)));
        assert!(matches!(last.to_vec(tx), Err(Error::StaleReference)));
        drop(last);
        assert_eq!(r.n.get_ref(tx, &14)?.expect("moved").to_vec(tx)?, [14]);
        Ok::<_, Error>(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_reachable_only(&mut pool, "after the split");
    pool.transaction(|tx, r| {
        let right = r.n.get_ref(tx, &12)?.expect("present");
        // The right leaf falls to 7 keys, then two removals from the left leaf leave it with 6:
        // it merges with the right one, which is freed (and zeroed), and the root collapses.
        assert!(r.n.remove_free(tx, &15)?);
        assert!(r.n.remove_free(tx, &0)?);
        assert!(r.n.remove_free(tx, &1)?);
        assert_eq!(r.n.check_invariants(tx).unwrap(), [vec![13]]);
        assert!(matches!(right.push(tx, 99), Err(Error::StaleReference)));
        assert!(matches!(right.free(tx), Err(Error::StaleReference)));
        drop(right);
        assert_eq!(r.n.get_ref(tx, &12)?.expect("moved").to_vec(tx)?, [12]);
        Ok::<_, Error>(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_reachable_only(&mut pool, "after the merge");
}
