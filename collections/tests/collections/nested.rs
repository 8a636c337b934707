//! Nested collections: `PVec<PString>`, `PHashMap<u64, PVec<u64>>` and a depth-2
//! `PVec<PHashMap<u64, PString>>` against std models (across reopen), exact leak checks with
//! reachability through the nested handles, drain counts, crash images, and stale references.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{assert_reachable_only, crash_step, drains, opts, run, shm_dir, ModelRoot, POOL_SIZE};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PHashMap, PString, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    v: PVec<PString>,
    m: PHashMap<u64, PVec<u64>>,
    /// Depth 2: a vector of maps of strings.
    d: PVec<PHashMap<u64, PString>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    v: Vec<String>,
    m: BTreeMap<u64, Vec<u64>>,
    d: Vec<BTreeMap<u64, String>>,
}

#[derive(Clone, Debug)]
enum Op {
    /// `push_new`, then `push_str` into the new string.
    VPushNew(String),
    /// `push_str` into string `i % len`.
    VAppend(u64, String),
    VPopFree,
    VTruncate(u64),
    VClear,
    /// `get_or_insert_new(k)`, then push `x` into it.
    MPush(u64, u64),
    /// Pop from the vector of `k`, if present.
    MInnerPop(u64),
    MRemoveFree(u64),
    MClear,
    /// `push_new` a map into `d`, then put `(k, s)` in it.
    DPushNew(u64, String),
    /// Set `(k, s)` in map `i % len` of `d` (`get_or_insert_new` then `set`).
    DSet(u64, u64, String),
    /// `remove_free(k)` in map `i % len` of `d`.
    DRemove(u64, u64),
    DPopFree,
    DClear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => "[a-zé]{0,12}".prop_map(Op::VPushNew),
        4 => (any::<u64>(), "[a-z€]{1,20}").prop_map(|(i, s)| Op::VAppend(i, s)),
        2 => Just(Op::VPopFree),
        1 => (0u64..12).prop_map(Op::VTruncate),
        1 => Just(Op::VClear),
        8 => (0u64..40, any::<u64>()).prop_map(|(k, x)| Op::MPush(k, x)),
        2 => (0u64..40).prop_map(Op::MInnerPop),
        4 => (0u64..40).prop_map(Op::MRemoveFree),
        1 => Just(Op::MClear),
        2 => (0u64..16, "[a-z]{0,8}").prop_map(|(k, s)| Op::DPushNew(k, s)),
        4 => (any::<u64>(), 0u64..16, "[a-z]{1,8}").prop_map(|(i, k, s)| Op::DSet(i, k, s)),
        2 => (any::<u64>(), 0u64..16).prop_map(|(i, k)| Op::DRemove(i, k)),
        1 => Just(Op::DPopFree),
        1 => Just(Op::DClear),
    ]
}

/// Applies `op` to the pool inside `tx`, checking returned values against `model` (the state
/// before `op`).
fn apply(tx: &Transaction<'_>, r: &Root, op: &Op, model: &Model) -> Result<(), Error> {
    match op {
        Op::VPushNew(s) => r.v.push_new(tx)?.push_str(tx, s)?,
        Op::VAppend(i, s) => {
            let n = r.v.len(tx);
            if n > 0 {
                r.v.get_ref(tx, i % n)?.expect("i < len").push_str(tx, s)?;
            }
        }
        Op::VPopFree => assert_eq!(r.v.pop_free(tx)?, !model.v.is_empty()),
        Op::VTruncate(n) => r.v.truncate(tx, *n)?,
        Op::VClear => r.v.clear(tx)?,
        Op::MPush(k, x) => r.m.get_or_insert_new(tx, *k)?.push(tx, *x)?,
        Op::MInnerPop(k) => {
            let got = match r.m.get_ref(tx, k)? {
                Some(inner) => inner.pop(tx)?,
                None => None,
            };
            assert_eq!(got, model.m.get(k).and_then(|v| v.last().copied()));
        }
        Op::MRemoveFree(k) => assert_eq!(r.m.remove_free(tx, k)?, model.m.contains_key(k)),
        Op::MClear => r.m.clear(tx)?,
        Op::DPushNew(k, s) => r.d.push_new(tx)?.get_or_insert_new(tx, *k)?.set(tx, s)?,
        Op::DSet(i, k, s) => {
            let n = r.d.len(tx);
            if n > 0 {
                let inner = r.d.get_ref(tx, i % n)?.expect("i < len");
                inner.get_or_insert_new(tx, *k)?.set(tx, s)?;
            }
        }
        Op::DRemove(i, k) => {
            let n = r.d.len(tx);
            if n > 0 {
                let inner = r.d.get_ref(tx, i % n)?.expect("i < len");
                let had = model.d[(i % n) as usize].contains_key(k);
                assert_eq!(inner.remove_free(tx, k)?, had);
            }
        }
        Op::DPopFree => assert_eq!(r.d.pop_free(tx)?, !model.d.is_empty()),
        Op::DClear => r.d.clear(tx)?,
    }
    Ok(())
}

fn apply_model(m: &mut Model, op: &Op) {
    match op {
        Op::VPushNew(s) => m.v.push(s.clone()),
        Op::VAppend(i, s) => {
            let n = m.v.len() as u64;
            if n > 0 {
                m.v[(i % n) as usize].push_str(s);
            }
        }
        Op::VPopFree => {
            m.v.pop();
        }
        Op::VTruncate(n) => m.v.truncate(*n as usize),
        Op::VClear => m.v.clear(),
        Op::MPush(k, x) => m.m.entry(*k).or_default().push(*x),
        Op::MInnerPop(k) => {
            if let Some(v) = m.m.get_mut(k) {
                v.pop();
            }
        }
        Op::MRemoveFree(k) => {
            m.m.remove(k);
        }
        Op::MClear => m.m.clear(),
        Op::DPushNew(k, s) => m.d.push(BTreeMap::from([(*k, s.clone())])),
        Op::DSet(i, k, s) => {
            let n = m.d.len() as u64;
            if n > 0 {
                m.d[(i % n) as usize].insert(*k, s.clone());
            }
        }
        Op::DRemove(i, k) => {
            let n = m.d.len() as u64;
            if n > 0 {
                m.d[(i % n) as usize].remove(k);
            }
        }
        Op::DPopFree => {
            m.d.pop();
        }
        Op::DClear => m.d.clear(),
    }
}

/// Reads the whole root into a model, checking lengths and lookups on the way.
fn read(pool: &Pool<Root>) -> Model {
    pool.transaction(|tx, r| {
        let mut v = Vec::new();
        for i in 0..r.v.len(tx) {
            v.push(r.v.get_ref(tx, i)?.expect("i < len").as_string(tx)?);
        }
        assert!(r.v.get_ref(tx, r.v.len(tx))?.is_none());
        let mut m = BTreeMap::new();
        for (k, inner) in r.m.iter_refs(tx) {
            assert!(m.insert(k, inner.to_vec(tx)?).is_none(), "key {k} twice");
        }
        assert_eq!(m.len() as u64, r.m.len(tx), "map len vs entries");
        let mut keys = r.m.keys(tx)?;
        keys.sort_unstable();
        assert_eq!(keys, m.keys().copied().collect::<Vec<_>>());
        for (k, x) in &m {
            assert_eq!(&r.m.get_ref(tx, k)?.expect("present").to_vec(tx)?, x);
        }
        let mut d = Vec::new();
        for i in 0..r.d.len(tx) {
            let inner = r.d.get_ref(tx, i)?.expect("i < len");
            let mut e = BTreeMap::new();
            for (k, s) in inner.iter_refs(tx) {
                e.insert(k, s.as_string(tx)?);
            }
            assert_eq!(e.len() as u64, inner.len(tx));
            d.push(e);
        }
        Ok::<_, Error>(Model { v, m, d })
    })
    .unwrap()
}

/// Every block reachable from the root, through the nested handles.
fn reachable(pool: &Pool<Root>) -> BTreeSet<u64> {
    pool.transaction(|tx, r| {
        let mut out = BTreeSet::new();
        let mut add = |o: Option<u64>| {
            if let Some(o) = o {
                assert!(out.insert(o), "block {o} reached twice");
            }
        };
        add(r.v.buffer_offset(tx));
        for i in 0..r.v.len(tx) {
            add(r.v.get_ref(tx, i)?.expect("i < len").buffer_offset(tx));
        }
        r.m.block_offsets(tx)?.into_iter().for_each(|b| add(Some(b)));
        for (_, inner) in r.m.iter_refs(tx) {
            add(inner.buffer_offset(tx));
        }
        add(r.d.buffer_offset(tx));
        for i in 0..r.d.len(tx) {
            let inner = r.d.get_ref(tx, i)?.expect("i < len");
            inner.block_offsets(tx)?.into_iter().for_each(|b| add(Some(b)));
            for (_, s) in inner.iter_refs(tx) {
                add(s.buffer_offset(tx));
            }
        }
        Ok::<_, Error>(out)
    })
    .unwrap()
}

impl ModelRoot for Root {
    type Model = Model;
    type Op = Op;

    fn apply(tx: &Transaction<'_>, r: &Root, op: &Op, m: &Model) -> Result<(), Error> {
        apply(tx, r, op, m)
    }

    fn apply_model(m: &mut Model, op: &Op) {
        apply_model(m, op)
    }

    fn read(pool: &Pool<Root>) -> Model {
        read(pool)
    }

    fn reachable(pool: &Pool<Root>) -> BTreeSet<u64> {
        reachable(pool)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random transactions of nested operations equal the std model, after every transaction
    /// and across reopens, with no block leaked or lost.
    #[test]
    fn nested_collections_match_the_model(
        steps in prop::collection::vec((prop::collection::vec(op(), 1..6), any::<bool>()), 1..24),
    ) {
        let dir = shm_dir();
        let path = dir.path().join("n.pool");
        let mut pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
        let mut model = Model::default();
        for (ops, reopen) in &steps {
            run::<Root>(&pool, &mut model, ops);
            if *reopen {
                drop(pool);
                pool = Pool::open(&path, &opts()).unwrap();
            }
            prop_assert_eq!(&read(&pool), &model);
            assert_reachable_only(&mut pool, &format!("after {ops:?}"));
        }
        // Freeing the outer collections frees everything nested.
        pool.transaction(|tx, r| {
            r.v.free(tx)?;
            r.m.free(tx)?;
            r.d.free(tx)
        })
        .unwrap();
        prop_assert_eq!(read(&pool), Model::default());
        prop_assert!(pool.allocated_blocks().unwrap().is_empty());
    }

    /// A transaction that fails after nested changes rolls all of them back, frees included.
    #[test]
    fn aborted_nested_transactions_change_nothing(
        before in prop::collection::vec(op(), 1..30),
        ops in prop::collection::vec(op(), 1..8),
    ) {
        let dir = shm_dir();
        let path = dir.path().join("a.pool");
        let mut pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
        let mut model = Model::default();
        run::<Root>(&pool, &mut model, &before);
        let blocks = pool.allocated_blocks().unwrap();
        let r = pool.transaction(|tx, r| {
            let mut m = model.clone();
            for op in &ops {
                apply(tx, r, op, &m)?;
                apply_model(&mut m, op);
            }
            Err::<(), _>(Error::Aborted)
        });
        prop_assert!(matches!(r, Err(Error::Aborted)));
        prop_assert_eq!(&read(&pool), &model);
        prop_assert_eq!(pool.allocated_blocks().unwrap(), blocks);
        assert_reachable_only(&mut pool, "after an abort");
    }
}

fn tx_drains<T>(
    pool: &Pool<Root>,
    f: impl for<'t> FnOnce(&'t Transaction<'t>, &'t Root) -> Result<T, Error>,
) -> u64 {
    drains(|| pool.transaction(f).unwrap()).1
}

#[test]
fn nested_drains() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("d.pool"), POOL_SIZE, &opts()).unwrap();
    for i in 0..40u64 {
        let grows = pool
            .transaction(|tx, r| Ok::<_, Error>(r.v.len(tx) == r.v.capacity(tx)))
            .unwrap();
        // Strings with a buffer, so growth moves owning handles.
        assert_eq!(
            tx_drains(&pool, |tx, r| r.v.push_new(tx).map(|_| ())),
            2,
            "push_new {i} (growth: {grows})"
        );
        assert_eq!(
            tx_drains(&pool, |tx, r| r
                .v
                .last_ref(tx)?
                .expect("pushed")
                .push_str(tx, "abc")),
            2,
            "push_str into string {i}"
        );
    }
    assert_eq!(
        tx_drains(&pool, |tx, r| r.v.get_ref(tx, 3).map(|e| e.is_some())),
        0,
        "get_ref"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.v.pop_free(tx)), 2, "pop_free");
    assert_eq!(tx_drains(&pool, |tx, r| r.v.truncate(tx, 20)), 2, "truncate");

    let mut growths = 0;
    for k in 0..100u64 {
        let cap = pool
            .transaction(|tx, r| Ok::<_, Error>(r.m.capacity(tx)))
            .unwrap();
        assert_eq!(
            tx_drains(&pool, |tx, r| r.m.get_or_insert_new(tx, k).map(|_| ())),
            2,
            "get_or_insert_new {k} (capacity {cap})"
        );
        growths += u64::from(
            pool.transaction(|tx, r| Ok::<_, Error>(r.m.capacity(tx)))
                .unwrap()
                != cap,
        );
        for x in 0..3 {
            assert_eq!(
                tx_drains(&pool, |tx, r| r.m.get_ref(tx, &k)?.expect("inserted").push(tx, x)),
                2,
                "push into the vector of {k}"
            );
        }
    }
    assert!(growths >= 3, "{growths} growth steps measured");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.get_or_insert_new(tx, 7).map(|_| ())),
        0,
        "get_or_insert_new, present"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.get_ref(tx, &7).map(|e| e.is_some())),
        0,
        "get_ref"
    );
    for k in 0..60u64 {
        assert_eq!(
            tx_drains(&pool, |tx, r| r.m.remove_free(tx, &k)),
            2,
            "remove_free {k}"
        );
    }
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.remove_free(tx, &0)),
        0,
        "remove_free, absent"
    );
    // Tombstones: new keys rebuild the table in place, moving the owning values: still 2.
    for k in 1000..1100u64 {
        assert_eq!(
            tx_drains(&pool, |tx, r| r.m.get_or_insert_new(tx, k).map(|_| ())),
            2,
            "insert {k}"
        );
        // Two operations in one transaction: two snapshot drains and the commit.
        assert_eq!(
            tx_drains(&pool, |tx, r| {
                r.m.remove_free(tx, &k)?;
                r.m.get_or_insert_new(tx, k)?.push(tx, k)
            }),
            4,
            "remove, insert and push {k}"
        );
    }

    // Depth 2: clearing frees every nested block, still in 2 drains.
    for i in 0..10u64 {
        assert_eq!(
            tx_drains(&pool, |tx, r| r.d.push_new(tx).map(|_| ())),
            2,
            "d.push_new {i}"
        );
        for k in 0..12u64 {
            assert_eq!(
                tx_drains(&pool, |tx, r| {
                    r.d.last_ref(tx)?
                        .expect("pushed")
                        .get_or_insert_new(tx, k)?
                        .set(tx, "nested")
                }),
                // Insert (2) then set in the same transaction (one more snapshot drain).
                3,
                "d[{i}] entry {k}"
            );
        }
    }
    assert_reachable_only(&mut pool, "before the clears");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.d.pop_free(tx)),
        2,
        "pop_free of a map of strings"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.d.clear(tx)), 2, "clear at depth 2");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.m.clear(tx)),
        2,
        "clear of a map of vectors"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.v.clear(tx)),
        2,
        "clear of a vector of strings"
    );
    assert!(pool.allocated_blocks().unwrap().is_empty(), "everything freed");
}

/// Growth of the outer collections with owning handles inside, and removals that free nested
/// blocks, each crashed inside and after the transaction.
#[test]
fn crash_images_of_nested_growth_and_removal() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    let mut pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let mut model = Model::default();
    for i in 0..20u64 {
        // Each transaction grows `v` or `m` at some point (capacities 4, 8, 16, ... and map
        // rebuilds at 3/4 load).
        let ops = [
            Op::VPushNew(format!("s{i}")),
            Op::VAppend(i, "tail".into()),
            Op::MPush(i, i),
            Op::MPush(i + 100, !i),
            Op::DPushNew(i, "x".into()),
        ];
        pool = crash_step(pool, &path, &mut model, &ops);
    }
    for i in 0..8u64 {
        let ops = [
            Op::VPopFree,
            Op::MRemoveFree(i),
            Op::MRemoveFree(i + 100),
            Op::DRemove(i, i),
            Op::DPopFree,
        ];
        pool = crash_step(pool, &path, &mut model, &ops);
    }
    let ops = [Op::VTruncate(3), Op::MClear, Op::DClear, Op::VClear];
    pool = crash_step(pool, &path, &mut model, &ops);
    assert_eq!(read(&pool), model);
    assert_eq!(model, Model::default());
    assert!(pool.allocated_blocks().unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Random nested transactions, crashed after every operation and after the commit.
    #[test]
    fn crash_images_of_random_nested_transactions(
        steps in prop::collection::vec(prop::collection::vec(op(), 1..5), 1..12),
    ) {
        let dir = shm_dir();
        let path = dir.path().join("r.pool");
        let mut pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
        let mut model = Model::default();
        for ops in &steps {
            pool = crash_step(pool, &path, &mut model, ops);
        }
        prop_assert_eq!(&read(&pool), &model);
    }
}

fn is_stale<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::StaleReference))
}

/// A reference kept across a change of its collection (a growth that moves the handles, a
/// rebuild of a map's table, a removal) is stale: every write through it fails with
/// `StaleReference` (none returns `Ok` with the write lost), and so does a read that checks; a
/// reference taken again after the change works, and nothing is lost or leaked.
#[test]
fn stale_references_are_refused() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("s.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| r.v.push_new(tx)?.push_str(tx, "first"))
        .unwrap();
    let mut model = read(&pool);
    pool.transaction(|tx, r| {
        let a = r.v.get_ref(tx, 0)?.expect("pushed");
        assert_eq!(r.v.capacity(tx), 4);
        for _ in 0..4 {
            r.v.push_new(tx)?;
        }
        assert!(r.v.capacity(tx) > 4, "grew");
        assert!(
            is_stale(a.push_str(tx, " lost?")),
            "a write through the stale copy"
        );
        assert!(is_stale(a.as_string(tx)), "a read through the stale copy");
        drop(a);
        let a = r.v.get_ref(tx, 0)?.expect("moved");
        assert_eq!(a.as_string(tx)?, "first");
        a.push_str(tx, "!")?;
        Ok::<_, Error>(())
    })
    .unwrap();
    model.v[0].push('!');
    model.v.extend(std::iter::repeat_n(String::new(), 4));
    assert_eq!(read(&pool), model);
    // The same for a map value across a rebuild of the table (the scenario: a
    // `get_or_insert_new` reference, more inserts, then a push through the old reference).
    pool.transaction(|tx, r| {
        let e = r.m.get_or_insert_new(tx, 1)?;
        e.extend(tx, [7, 8])?;
        let cap = r.m.capacity(tx);
        for k in 2..10 {
            r.m.get_or_insert_new(tx, k)?;
        }
        assert!(r.m.capacity(tx) > cap, "rebuilt");
        assert!(is_stale(e.push(tx, 9)), "the push must not return Ok");
        assert!(is_stale(e.to_vec(tx)));
        drop(e);
        assert_eq!(r.m.get_ref(tx, &1)?.expect("moved").to_vec(tx)?, [7, 8]);
        Ok::<_, Error>(())
    })
    .unwrap();
    model.m = (1..10)
        .map(|k| (k, if k == 1 { vec![7, 8] } else { vec![] }))
        .collect();
    assert_eq!(read(&pool), model);
    assert_reachable_only(&mut pool, "after growth");

    // Removal: freeing through a stale reference is refused too (the removal freed the blocks
    // once), and a stale reference inside a transaction that commits changes nothing.
    pool.transaction(|tx, r| {
        let a = r.v.get_ref(tx, 0)?.expect("present");
        r.v.truncate(tx, 0)?;
        assert!(is_stale(a.free(tx)));
        Ok::<_, Error>(())
    })
    .unwrap();
    model.v.clear();
    pool.transaction(|tx, r| {
        let e = r.m.get_or_insert_new(tx, 1)?;
        e.extend(tx, 0..10)?;
        r.m.remove_free(tx, &1)?;
        assert!(is_stale(e.clear(tx)));
        assert!(is_stale(e.push(tx, 1)));
        Ok::<_, Error>(())
    })
    .unwrap();
    model.m.remove(&1);
    assert_eq!(read(&pool), model);
    assert_reachable_only(&mut pool, "after the removals");
}

/// References that stay valid: a change of *another* collection, or of the nested collection
/// itself, leaves a reference live; a change of the container after the reference is dropped
/// does not affect the next one.
#[test]
fn references_stay_live_across_unrelated_changes() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("l.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        let e = r.m.get_or_insert_new(tx, 1)?;
        for i in 0..100 {
            e.push(tx, i)?; // grows e's own buffer: e itself does not move
            r.v.push_new(tx)?.push_str(tx, "x")?; // another collection
        }
        assert_eq!(e.len(tx), 100);
        // Taken through a live reference, and the inner collection changed: still live.
        let v0 = r.v.get_ref(tx, 0)?.expect("pushed");
        v0.push_str(tx, "y")?;
        assert_eq!(v0.as_string(tx)?, "xy");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// A user struct of handles and cells, stored as a map value.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Task {
    title: PString,
    prio: ptm::PCell<u64>,
}

impl ptm_collections::PValue for Task {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> ptm::Result<()> {
        // SAFETY: `self` is being discarded, so is its title.
        unsafe { self.title.free_owned(tx) }
    }
}

// SAFETY: a string handle and a cell: every byte is inside `PCell`s, all-zero is an empty title
// and priority 0, `!Sync` (cells), position-independent.
unsafe impl ptm_collections::PHandle for Task {}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Tasks {
    by_id: PHashMap<u64, Task>,
    by_name: ptm_collections::PBTreeMap<u64, Task>,
}

/// The fields of a user struct reached through a stale reference: the cell's `set` and the
/// string's methods fail with `StaleReference` for a hash map value moved by a table rebuild and
/// for a B-tree value shifted by an insert into its leaf, and nothing is written anywhere.
#[test]
fn stale_struct_fields_are_refused() {
    let dir = shm_dir();
    let pool = Pool::<Tasks>::create(dir.path().join("t.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        let t = r.by_id.get_or_insert_new(tx, 1)?;
        t.title.push_str(tx, "one")?;
        t.prio.set(tx, 1)?;
        let cap = r.by_id.capacity(tx);
        let mut k = 2;
        while r.by_id.capacity(tx) == cap {
            r.by_id.get_or_insert_new(tx, k)?.prio.set(tx, k)?;
            k += 1;
        }
        assert!(matches!(t.prio.set(tx, 99), Err(Error::StaleReference)));
        assert!(matches!(t.title.push_str(tx, "!"), Err(Error::StaleReference)));
        drop(t);
        for i in 1..k {
            let t = r.by_id.get_ref(tx, &i)?.expect("present");
            assert_eq!(t.prio.get(tx), i, "no write landed on another entry");
        }
        assert_eq!(
            r.by_id.get_ref(tx, &1)?.expect("present").title.as_string(tx)?,
            "one"
        );

        // B-tree: key 10's value, then key 5 is inserted before it in the same leaf.
        r.by_name.get_or_insert_new(tx, 10)?.prio.set(tx, 10)?;
        let ten = r.by_name.get_ref(tx, &10)?.expect("present");
        r.by_name.get_or_insert_new(tx, 5)?;
        assert!(matches!(ten.prio.set(tx, 99), Err(Error::StaleReference)));
        drop(ten);
        assert_eq!(r.by_name.get_ref(tx, &5)?.expect("present").prio.get(tx), 0);
        assert_eq!(r.by_name.get_ref(tx, &10)?.expect("present").prio.get(tx), 10);
        Ok::<_, Error>(())
    })
    .unwrap();
}
