//! Shared test fixtures: a root holding one of each collection, the std model it must equal,
//! random operations on both, and a leak check.
#![allow(dead_code, unreachable_pub)]

pub mod user_root;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{PBTreeMap, PBox, PHashMap, PQueue, PString, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
pub struct Root {
    pub v: PVec<u64>,
    pub m: PHashMap<u64, u64>,
    pub s: PString,
    pub q: PQueue<u64>,
    pub b: PBox<u64>,
    /// Odd key and value sizes: 3-byte keys, 2-byte values (alignment inside the table).
    pub m2: PHashMap<[u8; 3], u16>,
    /// Ordered map with a signed key.
    pub t: PBTreeMap<i32, u64>,
}

/// What `Root` must hold, in std types.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub v: Vec<u64>,
    pub m: BTreeMap<u64, u64>,
    pub s: String,
    pub q: VecDeque<u64>,
    pub b: Option<u64>,
    pub m2: BTreeMap<[u8; 3], u16>,
    pub t: BTreeMap<i32, u64>,
}

#[derive(Clone, Debug)]
pub enum Op {
    VPush(u64),
    VPop,
    VSet(u64, u64),
    VExtend(Vec<u64>),
    VAssign(Vec<u64>),
    VClear,
    MInsert(u64, u64),
    MRemove(u64),
    MGetOrInsert(u64, u64),
    MClear,
    SPush(String),
    SSet(String),
    SClear,
    QPush(u64),
    QPop,
    BSet(u64),
    BFree,
    M2Insert(u8, u16),
    M2Remove(u8),
    TInsert(i32, u64),
    TRemove(i32),
    TClear,
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u64>().prop_map(Op::VPush),
        2 => Just(Op::VPop),
        2 => (0u64..40, any::<u64>()).prop_map(|(i, v)| Op::VSet(i, v)),
        1 => prop::collection::vec(any::<u64>(), 0..20).prop_map(Op::VExtend),
        1 => prop::collection::vec(any::<u64>(), 0..12).prop_map(Op::VAssign),
        1 => Just(Op::VClear),
        8 => (0u64..48, any::<u64>()).prop_map(|(k, v)| Op::MInsert(k, v)),
        4 => (0u64..48).prop_map(Op::MRemove),
        2 => (0u64..48, any::<u64>()).prop_map(|(k, v)| Op::MGetOrInsert(k, v)),
        1 => Just(Op::MClear),
        2 => "[a-zé€😀]{0,6}".prop_map(Op::SPush),
        1 => "[a-z]{0,9}".prop_map(Op::SSet),
        1 => Just(Op::SClear),
        4 => any::<u64>().prop_map(Op::QPush),
        3 => Just(Op::QPop),
        2 => any::<u64>().prop_map(Op::BSet),
        1 => Just(Op::BFree),
        3 => (0u8..24, any::<u16>()).prop_map(|(k, v)| Op::M2Insert(k, v)),
        2 => (0u8..24).prop_map(Op::M2Remove),
        8 => (-150i32..150, any::<u64>()).prop_map(|(k, v)| Op::TInsert(k, v)),
        3 => (-150i32..150).prop_map(Op::TRemove),
        1 => Just(Op::TClear),
    ]
}

pub fn key2(k: u8) -> [u8; 3] {
    [k, k ^ 0x55, 7]
}

/// Applies `op` to the pool inside `tx`, checking the returned values against the model's.
pub fn apply(tx: &Transaction<'_>, r: &Root, op: &Op, model: &Model) -> Result<(), Error> {
    match op {
        Op::VPush(x) => r.v.push(tx, *x)?,
        Op::VPop => assert_eq!(r.v.pop(tx)?, model.v.last().copied()),
        Op::VSet(i, x) => assert_eq!(r.v.set(tx, *i, *x)?, model.v.get(*i as usize).copied()),
        Op::VExtend(xs) => r.v.extend(tx, xs.iter().copied())?,
        Op::VAssign(xs) => r.v.assign(tx, xs.iter().copied())?,
        Op::VClear => r.v.clear(tx)?,
        Op::MInsert(k, x) => assert_eq!(r.m.insert(tx, *k, *x)?, model.m.get(k).copied()),
        Op::MRemove(k) => assert_eq!(r.m.remove(tx, k)?, model.m.get(k).copied()),
        Op::MGetOrInsert(k, x) => {
            assert_eq!(
                r.m.get_or_insert_with(tx, *k, || *x)?,
                *model.m.get(k).unwrap_or(x)
            )
        }
        Op::MClear => r.m.clear(tx)?,
        Op::SPush(s) => r.s.push_str(tx, s)?,
        Op::SSet(s) => r.s.set(tx, s)?,
        Op::SClear => r.s.clear(tx)?,
        Op::QPush(x) => r.q.push(tx, *x)?,
        Op::QPop => assert_eq!(r.q.pop(tx)?, model.q.front().copied()),
        Op::BSet(x) => r.b.set(tx, *x)?,
        Op::BFree => r.b.free(tx)?,
        Op::M2Insert(k, x) => assert_eq!(r.m2.insert(tx, key2(*k), *x)?, model.m2.get(&key2(*k)).copied()),
        Op::M2Remove(k) => assert_eq!(r.m2.remove(tx, &key2(*k))?, model.m2.get(&key2(*k)).copied()),
        Op::TInsert(k, x) => assert_eq!(r.t.insert(tx, *k, *x)?, model.t.get(k).copied()),
        Op::TRemove(k) => assert_eq!(r.t.remove(tx, k)?, model.t.get(k).copied()),
        Op::TClear => r.t.clear(tx)?,
    }
    Ok(())
}

/// Applies `op` to the model.
pub fn apply_model(m: &mut Model, op: &Op) {
    match op {
        Op::VPush(x) => m.v.push(*x),
        Op::VPop => {
            m.v.pop();
        }
        Op::VSet(i, x) => {
            if let Some(e) = m.v.get_mut(*i as usize) {
                *e = *x;
            }
        }
        Op::VExtend(xs) => m.v.extend(xs),
        Op::VAssign(xs) => m.v.clone_from(xs),
        Op::VClear => m.v.clear(),
        Op::MInsert(k, x) => {
            m.m.insert(*k, *x);
        }
        Op::MRemove(k) => {
            m.m.remove(k);
        }
        Op::MGetOrInsert(k, x) => {
            m.m.entry(*k).or_insert(*x);
        }
        Op::MClear => m.m.clear(),
        Op::SPush(s) => m.s.push_str(s),
        Op::SSet(s) => m.s = s.clone(),
        Op::SClear => m.s.clear(),
        Op::QPush(x) => m.q.push_back(*x),
        Op::QPop => {
            m.q.pop_front();
        }
        Op::BSet(x) => m.b = Some(*x),
        Op::BFree => m.b = None,
        Op::M2Insert(k, x) => {
            m.m2.insert(key2(*k), *x);
        }
        Op::M2Remove(k) => {
            m.m2.remove(&key2(*k));
        }
        Op::TInsert(k, x) => {
            m.t.insert(*k, *x);
        }
        Op::TRemove(k) => {
            m.t.remove(k);
        }
        Op::TClear => m.t.clear(),
    }
}

/// Reads the whole root into a model (checking the collections' own consistency on the way).
pub fn read(pool: &Pool<Root>) -> Model {
    pool.transaction(|tx, r| {
        let v = r.v.to_vec(tx)?;
        assert_eq!(r.v.iter(tx).collect::<Vec<_>>(), v);
        assert_eq!(r.v.len(tx), v.len() as u64);
        let m: BTreeMap<u64, u64> = r.m.iter(tx).collect();
        assert_eq!(m.len() as u64, r.m.len(tx), "map len vs entries");
        if let Err(e) = r.m.check_invariants(tx).and(r.m2.check_invariants(tx)) {
            panic!("map structure: {e}");
        }
        for (k, x) in &m {
            assert_eq!(r.m.get(tx, k)?, Some(*x));
        }
        let m2: BTreeMap<[u8; 3], u16> = r.m2.iter(tx).collect();
        assert_eq!(m2.len() as u64, r.m2.len(tx));
        let t = r.t.to_vec(tx)?;
        assert_eq!(t.len() as u64, r.t.len(tx), "btree len vs entries");
        assert!(
            t.windows(2).all(|w| w[0].0 < w[1].0),
            "btree entries in key order"
        );
        for (k, x) in &t {
            assert_eq!(r.t.get(tx, k)?, Some(*x));
        }
        let q = r.q.to_vec(tx)?;
        assert_eq!(r.q.peek(tx)?, q.first().copied());
        Ok::<_, Error>(Model {
            v,
            m,
            s: r.s.as_string(tx)?,
            q: q.into(),
            b: r.b.get(tx)?,
            m2,
            t: t.into_iter().collect(),
        })
    })
    .unwrap()
}

/// Asserts every allocated block of the heap is owned by one of the root's collections, and
/// every owned block is allocated.
pub fn assert_no_leak(pool: &mut Pool<Root>) {
    let owned: BTreeSet<u64> = pool
        .transaction(|tx, r| {
            let nodes = r.t.node_offsets(tx)?;
            let maps = [r.m.block_offsets(tx)?, r.m2.block_offsets(tx)?].concat();
            let queue = r.q.block_offsets(tx)?;
            Ok::<_, Error>(
                [r.v.buffer_offset(tx), r.s.buffer_offset(tx), r.b.offset(tx)]
                    .into_iter()
                    .flatten()
                    .chain(nodes)
                    .chain(maps)
                    .chain(queue)
                    .collect(),
            )
        })
        .unwrap();
    assert_allocated_exactly(pool, &owned, "blocks owned by the collections");
}

/// A temporary directory on tmpfs (`/dev/shm`) when present.
pub fn shm_dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Options for a small pool on tmpfs treated as persistent memory.
pub fn opts() -> PoolOptions {
    PoolOptions::new().layout("collections").force_pmem(true).lanes(2)
}

pub const POOL_SIZE: u64 = 8 << 20;

pub fn create(dir: &tempfile::TempDir, name: &str) -> (Pool<Root>, PathBuf) {
    let path = dir.path().join(name);
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    (pool, path)
}

/// Drains spent by `f` on this thread.
pub fn drains<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ptm::thread_stats();
    let t = f();
    (t, ptm::thread_stats().since(&before).drains)
}

/// A sanity check of the models against the real std twins (HashMap iteration order aside).
pub fn same_as_hashmap(m: &BTreeMap<u64, u64>, h: &HashMap<u64, u64>) -> bool {
    m.len() == h.len() && m.iter().all(|(k, v)| h.get(k) == Some(v))
}

/// The pool offsets of every allocated block of `pool`'s heap.
pub fn allocated_offsets<R: Persistent>(pool: &mut Pool<R>) -> BTreeSet<u64> {
    pool.allocated_blocks()
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

/// Asserts the allocated blocks of `pool`'s heap are exactly `owned` (the blocks reachable
/// from its root, nested collections included, as computed by the caller): nothing leaked,
/// nothing owned is free.
pub fn assert_allocated_exactly<R: Persistent>(pool: &mut Pool<R>, owned: &BTreeSet<u64>, what: &str) {
    let allocated = allocated_offsets(pool);
    assert_eq!(
        &allocated, owned,
        "{what}: allocated blocks vs blocks reachable from the root"
    );
}

/// Adds `block` (if any) to `out`, asserting no block is reached twice (two owners).
pub fn add_block(out: &mut BTreeSet<u64>, block: Option<u64>) {
    if let Some(o) = block {
        assert!(out.insert(o), "block {o} reached twice");
    }
}

/// Adds the blocks a string-keyed map owns apart from its values: its directory and segments
/// and every key's buffer.
pub fn string_key_blocks<V: Persistent>(
    tx: &Transaction<'_>,
    m: &PHashMap<PString, V>,
    out: &mut BTreeSet<u64>,
) -> Result<(), Error> {
    for b in m.block_offsets(tx)? {
        add_block(out, Some(b));
    }
    for k in m.keys(tx)? {
        add_block(out, k.buffer_offset(tx));
    }
    Ok(())
}

/// A root type with a std model, for the generic model, abort and crash-image checks below.
pub trait ModelRoot: Persistent {
    /// What the root must hold, in std types.
    type Model: Clone + Default + PartialEq + std::fmt::Debug;
    /// One operation on the root.
    type Op: std::fmt::Debug;

    /// Applies `op` inside `tx`, checking returned values against `m` (the model before `op`).
    fn apply(tx: &Transaction<'_>, r: &Self, op: &Self::Op, m: &Self::Model) -> Result<(), Error>;

    /// Applies `op` to the model.
    fn apply_model(m: &mut Self::Model, op: &Self::Op);

    /// Reads the whole root into a model (checking its consistency on the way).
    fn read(pool: &Pool<Self>) -> Self::Model;

    /// Every block reachable from the root (asserting none is reached twice).
    fn reachable(pool: &Pool<Self>) -> BTreeSet<u64>;
}

/// Asserts the allocated blocks are exactly those reachable from the root.
pub fn assert_reachable_only<R: ModelRoot>(pool: &mut Pool<R>, what: &str) {
    let owned = R::reachable(pool);
    assert_allocated_exactly(pool, &owned, what);
}

/// Runs `ops` in one transaction and advances `model`.
pub fn run<R: ModelRoot>(pool: &Pool<R>, model: &mut R::Model, ops: &[R::Op]) {
    let mut m = model.clone();
    pool.transaction(|tx, r| {
        for op in ops {
            R::apply(tx, r, op, &m)?;
            R::apply_model(&mut m, op);
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    *model = m;
}

/// Runs each step's operations in one transaction on a new pool at `path` (reopening it after
/// the steps marked `true`), checking the pool against the model and for leaks after each step.
/// Returns the pool and the final model.
pub fn check_steps<R: ModelRoot>(path: &Path, steps: &[(Vec<R::Op>, bool)]) -> (Pool<R>, R::Model) {
    let mut pool = Pool::<R>::create(path, POOL_SIZE, &opts()).unwrap();
    let mut model = R::Model::default();
    for (ops, reopen) in steps {
        run(&pool, &mut model, ops);
        if *reopen {
            drop(pool);
            pool = Pool::open(path, &opts()).unwrap();
        }
        assert_eq!(R::read(&pool), model);
        assert_reachable_only(&mut pool, &format!("after {ops:?}"));
    }
    (pool, model)
}

/// Runs `before` on a new pool at `path`, then `ops` in a transaction that fails: asserts it
/// changed nothing (model, allocated blocks).
pub fn check_abort<R: ModelRoot>(path: &Path, before: &[R::Op], ops: &[R::Op]) {
    let mut pool = Pool::<R>::create(path, POOL_SIZE, &opts()).unwrap();
    let mut model = R::Model::default();
    run(&pool, &mut model, before);
    let blocks = pool.allocated_blocks().unwrap();
    let r = pool.transaction(|tx, r| {
        let mut m = model.clone();
        for op in ops {
            R::apply(tx, r, op, &m)?;
            R::apply_model(&mut m, op);
        }
        Err::<(), _>(Error::Aborted)
    });
    assert!(matches!(r, Err(Error::Aborted)));
    assert_eq!(R::read(&pool), model);
    assert_eq!(pool.allocated_blocks().unwrap(), blocks);
    assert_reachable_only(&mut pool, "after an abort");
}

/// Opens the crash image `img`, asserts it was not closed cleanly, that it reads as `expected`
/// and that its allocated blocks are exactly the reachable ones, then deletes it.
pub fn check_image<R: ModelRoot>(img: &Path, expected: &R::Model, what: &str) {
    let mut pool = Pool::<R>::open(img, &opts()).unwrap();
    assert!(
        !pool.recovery_report().was_clean,
        "{what}: an image of an open pool is not clean"
    );
    assert_eq!(&R::read(&pool), expected, "{what}");
    assert_reachable_only(&mut pool, what);
    drop(pool);
    std::fs::remove_file(img).unwrap();
}

/// Runs `ops` in one transaction of `pool` (the file at `path`, on tmpfs), copying the file (a
/// crash image: it holds every store so far) after each operation, before the commit, and after
/// the commit; checks every image recovers to the model before the transaction (images before
/// the commit) or after it ([`check_image`]). Returns the pool, reopened.
pub fn crash_step<R: ModelRoot>(pool: Pool<R>, path: &Path, model: &mut R::Model, ops: &[R::Op]) -> Pool<R> {
    let mut m = model.clone();
    let mut images = Vec::new();
    pool.transaction(|tx, r| {
        for op in ops {
            R::apply(tx, r, op, &m)?;
            R::apply_model(&mut m, op);
            let img = path.with_extension(format!("mid{}", images.len()));
            std::fs::copy(path, &img).unwrap();
            images.push(img);
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let after = path.with_extension("after");
    std::fs::copy(path, &after).unwrap();
    drop(pool);
    for (i, img) in images.iter().enumerate() {
        check_image::<R>(
            img,
            model,
            &format!("image after op {i} of {ops:?}, before the commit"),
        );
    }
    *model = m;
    check_image::<R>(&after, model, &format!("image after committing {ops:?}"));
    Pool::open(path, &opts()).unwrap()
}

/// Runs each step's operations as one [`crash_step`] on a new pool at `path`, checking the pool
/// against the model at the end. Returns the pool and the final model.
pub fn check_crash_steps<R: ModelRoot>(path: &Path, steps: &[Vec<R::Op>]) -> (Pool<R>, R::Model) {
    let mut pool = Pool::<R>::create(path, POOL_SIZE, &opts()).unwrap();
    let mut model = R::Model::default();
    for ops in steps {
        pool = crash_step(pool, path, &mut model, ops);
    }
    assert_eq!(R::read(&pool), model);
    (pool, model)
}

/// Writes the 8-byte little-endian word `v` at byte `at` of the closed pool file `path`
/// (damage injected by hand).
pub fn poke(path: &Path, at: u64, v: u64) {
    patch(path, at, &v.to_le_bytes());
}

/// Writes `bytes` at byte `at` of the closed pool file `path`.
pub fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let mut img = std::fs::read(path).unwrap();
    img[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, img).unwrap();
}

/// The `CorruptCollection` a walk returned: its structure, offset and message.
pub fn corrupt(r: ptm::Result<ptm_collections::WalkReport>) -> (&'static str, u64, String) {
    match r {
        Err(Error::CorruptCollection {
            structure,
            offset,
            what,
        }) => (structure, offset, what.into_owned()),
        other => panic!("expected CorruptCollection, got {other:?}"),
    }
}
