//! String keys in `PHashMap` (`PHashMap<PString, u64>`, `PHashMap<PString, PVec<u64>>`, byte
//! keys `PHashMap<PVec<u8>, u64>`, and depth 2 in a box), and handles inside `PQueue` and
//! `PBox`: std models across reopens and aborts, exact leak checks with reachability through
//! key buffers and nested handles, drain counts, crash images, the key hash format, and stale
//! references.

use crate::common;

use std::collections::{BTreeSet, HashMap, VecDeque};

use common::{
    add_block, assert_allocated_exactly, assert_reachable_only, check_abort, check_crash_steps, check_steps,
    crash_step, drains, opts, run, shm_dir, string_key_blocks, ModelRoot, POOL_SIZE as SIZE,
};
use proptest::prelude::*;
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PBox, PHashMap, PQueue, PString, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// String keys, `Copy` values.
    s: PHashMap<PString, u64>,
    /// String keys, nested values.
    n: PHashMap<PString, PVec<u64>>,
    /// Byte-vector keys.
    v: PHashMap<PVec<u8>, u64>,
    /// Handles in a queue.
    q: PQueue<PString>,
    /// A handle in a box.
    b: PBox<PVec<u64>>,
    /// Depth 2 with string keys and values, in a box.
    d: PBox<PHashMap<PString, PString>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    s: HashMap<String, u64>,
    n: HashMap<String, Vec<u64>>,
    v: HashMap<Vec<u8>, u64>,
    q: VecDeque<String>,
    b: Option<Vec<u64>>,
    d: Option<HashMap<String, String>>,
}

/// Size of the key universe.
const KEYS: u8 = 48;

/// Key `i`: the empty string, short and long ones (up to 47 bytes, across the 8-byte chunk
/// boundaries of the hash), ASCII and multi-byte UTF-8.
fn key(i: u8) -> String {
    match i % 4 {
        0 if i == 0 => String::new(),
        0 => i.to_string(),
        1 => "x".repeat(i as usize),
        2 => format!("key/€/{i:03}/😀"),
        _ => format!("{i}é"),
    }
}

/// Byte key `i`: several `i` give the same key (every ninth one is empty).
fn bkey(i: u8) -> Vec<u8> {
    vec![i % 9; usize::from(i % 9) * 3]
}

#[derive(Clone, Debug)]
enum Op {
    SInsert(u8, u64),
    SRemove(u8),
    SGetOrInsert(u8, u64),
    SClear,
    /// `get_or_insert_new(key)`, then push into the vector.
    NPush(u8, u64),
    NPop(u8),
    NRemoveFree(u8),
    NClear,
    VInsert(u8, u64),
    VRemove(u8),
    /// `push_new`, then `push_str` into the new string.
    QPushNew(String),
    /// `push_str` into string `i % len`.
    QAppend(u64, String),
    QPopFree,
    QClear,
    /// `get_or_init_new`, then push.
    BPush(u64),
    BFree,
    /// `get_or_init_new` the boxed map, `get_or_insert_new(key)`, then `set` the string.
    DSet(u8, String),
    DRemove(u8),
    DFree,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..KEYS, any::<u64>()).prop_map(|(k, x)| Op::SInsert(k, x)),
        4 => (0..KEYS).prop_map(Op::SRemove),
        2 => (0..KEYS, any::<u64>()).prop_map(|(k, x)| Op::SGetOrInsert(k, x)),
        1 => Just(Op::SClear),
        6 => (0..KEYS, any::<u64>()).prop_map(|(k, x)| Op::NPush(k, x)),
        2 => (0..KEYS).prop_map(Op::NPop),
        3 => (0..KEYS).prop_map(Op::NRemoveFree),
        1 => Just(Op::NClear),
        3 => (0..KEYS, any::<u64>()).prop_map(|(k, x)| Op::VInsert(k, x)),
        2 => (0..KEYS).prop_map(Op::VRemove),
        3 => "[a-zé]{0,12}".prop_map(Op::QPushNew),
        2 => (any::<u64>(), "[a-z€]{1,10}").prop_map(|(i, s)| Op::QAppend(i, s)),
        2 => Just(Op::QPopFree),
        1 => Just(Op::QClear),
        2 => any::<u64>().prop_map(Op::BPush),
        1 => Just(Op::BFree),
        3 => (0..KEYS, "[a-z]{0,9}").prop_map(|(k, s)| Op::DSet(k, s)),
        2 => (0..KEYS).prop_map(Op::DRemove),
        1 => Just(Op::DFree),
    ]
}

impl ModelRoot for Root {
    type Model = Model;
    type Op = Op;

    /// Applies `op` to the pool inside `tx`, checking returned values against `model` (the state
    /// before `op`).
    fn apply(tx: &Transaction<'_>, r: &Root, op: &Op, model: &Model) -> Result<(), Error> {
        match op {
            Op::SInsert(k, x) => assert_eq!(r.s.insert(tx, key(*k), *x)?, model.s.get(&key(*k)).copied()),
            Op::SRemove(k) => assert_eq!(r.s.remove(tx, &key(*k))?, model.s.get(&key(*k)).copied()),
            Op::SGetOrInsert(k, x) => {
                let want = *model.s.get(&key(*k)).unwrap_or(x);
                assert_eq!(r.s.get_or_insert_with(tx, &key(*k), || *x)?, want);
            }
            Op::SClear => r.s.clear(tx)?,
            Op::NPush(k, x) => r.n.get_or_insert_new(tx, key(*k).as_str())?.push(tx, *x)?,
            Op::NPop(k) => {
                let got = match r.n.get_ref(tx, &key(*k))? {
                    Some(e) => e.pop(tx)?,
                    None => None,
                };
                assert_eq!(got, model.n.get(&key(*k)).and_then(|e| e.last().copied()));
            }
            Op::NRemoveFree(k) => assert_eq!(r.n.remove_free(tx, &key(*k))?, model.n.contains_key(&key(*k))),
            Op::NClear => r.n.clear(tx)?,
            Op::VInsert(k, x) => assert_eq!(r.v.insert(tx, bkey(*k), *x)?, model.v.get(&bkey(*k)).copied()),
            Op::VRemove(k) => assert_eq!(r.v.remove(tx, &bkey(*k))?, model.v.get(&bkey(*k)).copied()),
            Op::QPushNew(s) => r.q.push_new(tx)?.push_str(tx, s)?,
            Op::QAppend(i, s) => {
                let n = r.q.len(tx);
                if n > 0 {
                    r.q.get_ref(tx, i % n)?.expect("i < len").push_str(tx, s)?;
                }
            }
            Op::QPopFree => assert_eq!(r.q.pop_free(tx)?, !model.q.is_empty()),
            Op::QClear => r.q.clear(tx)?,
            Op::BPush(x) => r.b.get_or_init_new(tx)?.push(tx, *x)?,
            Op::BFree => r.b.free(tx)?,
            Op::DSet(k, s) => {
                r.d.get_or_init_new(tx)?
                    .get_or_insert_new(tx, key(*k))?
                    .set(tx, s)?
            }
            Op::DRemove(k) => {
                let had = model.d.as_ref().is_some_and(|d| d.contains_key(&key(*k)));
                let got = match r.d.get_ref(tx)? {
                    Some(d) => d.remove_free(tx, &key(*k))?,
                    None => false,
                };
                assert_eq!(got, had);
            }
            Op::DFree => r.d.free(tx)?,
        }
        Ok(())
    }

    fn apply_model(m: &mut Model, op: &Op) {
        match op {
            Op::SInsert(k, x) => {
                m.s.insert(key(*k), *x);
            }
            Op::SRemove(k) => {
                m.s.remove(&key(*k));
            }
            Op::SGetOrInsert(k, x) => {
                m.s.entry(key(*k)).or_insert(*x);
            }
            Op::SClear => m.s.clear(),
            Op::NPush(k, x) => m.n.entry(key(*k)).or_default().push(*x),
            Op::NPop(k) => {
                if let Some(e) = m.n.get_mut(&key(*k)) {
                    e.pop();
                }
            }
            Op::NRemoveFree(k) => {
                m.n.remove(&key(*k));
            }
            Op::NClear => m.n.clear(),
            Op::VInsert(k, x) => {
                m.v.insert(bkey(*k), *x);
            }
            Op::VRemove(k) => {
                m.v.remove(&bkey(*k));
            }
            Op::QPushNew(s) => m.q.push_back(s.clone()),
            Op::QAppend(i, s) => {
                let n = m.q.len() as u64;
                if n > 0 {
                    m.q[(i % n) as usize].push_str(s);
                }
            }
            Op::QPopFree => {
                m.q.pop_front();
            }
            Op::QClear => m.q.clear(),
            Op::BPush(x) => m.b.get_or_insert_with(Vec::new).push(*x),
            Op::BFree => m.b = None,
            Op::DSet(k, s) => {
                m.d.get_or_insert_with(HashMap::new).insert(key(*k), s.clone());
            }
            Op::DRemove(k) => {
                if let Some(d) = m.d.as_mut() {
                    d.remove(&key(*k));
                }
            }
            Op::DFree => m.d = None,
        }
    }

    /// Reads the whole root into a model, checking on the way that iteration, `len` and lookups by
    /// borrowed key (of every key of the universe, present or absent) agree.
    fn read(pool: &Pool<Root>) -> Model {
        pool.transaction(|tx, r| {
            let mut s = HashMap::new();
            for (k, x) in r.s.iter(tx) {
                assert!(s.insert(k.as_string(tx)?, x).is_none(), "a key twice");
            }
            assert_eq!(s.len() as u64, r.s.len(tx), "s: len vs entries");
            let mut n = HashMap::new();
            for (k, e) in r.n.iter_refs(tx) {
                assert!(n.insert(k.as_string(tx)?, e.to_vec(tx)?).is_none(), "a key twice");
            }
            assert_eq!(n.len() as u64, r.n.len(tx), "n: len vs entries");
            let mut v = HashMap::new();
            for (k, x) in r.v.iter(tx) {
                assert!(v.insert(k.to_vec(tx)?, x).is_none(), "a key twice");
            }
            assert_eq!(v.len() as u64, r.v.len(tx), "v: len vs entries");
            for i in 0..KEYS {
                let k = key(i);
                assert_eq!(r.s.get(tx, &k)?, s.get(&k).copied(), "s.get({k:?})");
                assert_eq!(r.s.contains_key(tx, &k)?, s.contains_key(&k));
                let e = r.n.get_ref(tx, &k)?.map(|e| e.to_vec(tx)).transpose()?;
                assert_eq!(e.as_ref(), n.get(&k), "n.get_ref({k:?})");
                assert_eq!(r.v.get(tx, &bkey(i))?, v.get(&bkey(i)).copied());
            }
            let q = (0..r.q.len(tx))
                .map(|i| r.q.get_ref(tx, i)?.expect("i < len").as_string(tx))
                .collect::<Result<VecDeque<_>, _>>()?;
            assert_eq!(
                r.q.front_ref(tx)?.map(|e| e.as_string(tx)).transpose()?.as_ref(),
                q.front()
            );
            let b = r.b.get_ref(tx)?.map(|e| e.to_vec(tx)).transpose()?;
            let d = match r.d.get_ref(tx)? {
                Some(m) => {
                    let mut d = HashMap::new();
                    for (k, x) in m.iter_refs(tx) {
                        d.insert(k.as_string(tx)?, x.as_string(tx)?);
                    }
                    assert_eq!(d.len() as u64, m.len(tx));
                    for (k, x) in &d {
                        assert_eq!(&m.get_ref(tx, k)?.expect("present").as_string(tx)?, x);
                    }
                    Some(d)
                }
                None => None,
            };
            Ok::<_, Error>(Model { s, n, v, q, b, d })
        })
        .unwrap()
    }

    /// Every block reachable from the root: tables, key buffers, nested handles.
    fn reachable(pool: &Pool<Root>) -> BTreeSet<u64> {
        pool.transaction(|tx, r| {
            let mut out = BTreeSet::new();
            string_key_blocks(tx, &r.s, &mut out)?;
            string_key_blocks(tx, &r.n, &mut out)?;
            for (_, e) in r.n.iter_refs(tx) {
                add_block(&mut out, e.buffer_offset(tx));
            }
            for b in r.v.block_offsets(tx)? {
                add_block(&mut out, Some(b));
            }
            for k in r.v.keys(tx)? {
                add_block(&mut out, k.buffer_offset(tx));
            }
            for b in r.q.block_offsets(tx)? {
                add_block(&mut out, Some(b));
            }
            for i in 0..r.q.len(tx) {
                add_block(&mut out, r.q.get_ref(tx, i)?.expect("i < len").buffer_offset(tx));
            }
            add_block(&mut out, r.b.offset(tx));
            if let Some(b) = r.b.get_ref(tx)? {
                add_block(&mut out, b.buffer_offset(tx));
            }
            add_block(&mut out, r.d.offset(tx));
            if let Some(d) = r.d.get_ref(tx)? {
                string_key_blocks(tx, &d, &mut out)?;
                for (_, x) in d.iter_refs(tx) {
                    add_block(&mut out, x.buffer_offset(tx));
                }
            }
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random transactions on string-keyed maps, a queue and boxes of handles equal the std
    /// models after every transaction and across reopens, with no block leaked or lost; freeing
    /// the outer collections empties the heap.
    #[test]
    fn string_keys_and_handles_match_the_model(
        steps in prop::collection::vec((prop::collection::vec(op(), 1..8), any::<bool>()), 1..24),
    ) {
        let dir = shm_dir();
        let (mut pool, _) = check_steps::<Root>(&dir.path().join("k.pool"), &steps);
        pool.transaction(|tx, r| {
            r.s.free(tx)?;
            r.n.free(tx)?;
            r.v.free(tx)?;
            r.q.free(tx)?;
            r.b.free(tx)?;
            r.d.free(tx)
        })
        .unwrap();
        prop_assert_eq!(Root::read(&pool), Model::default());
        prop_assert!(pool.allocated_blocks().unwrap().is_empty());
    }

    /// A transaction that fails after string-key and handle changes rolls all of them back,
    /// key buffers and frees included.
    #[test]
    fn aborted_transactions_change_nothing(
        before in prop::collection::vec(op(), 1..40),
        ops in prop::collection::vec(op(), 1..10),
    ) {
        let dir = shm_dir();
        check_abort::<Root>(&dir.path().join("a.pool"), &before, &ops);
    }
}

fn tx_drains<T>(
    pool: &Pool<Root>,
    f: impl for<'t> FnOnce(&'t Transaction<'t>, &'t Root) -> Result<T, Error>,
) -> u64 {
    drains(|| pool.transaction(f).unwrap()).1
}

fn capacity(pool: &Pool<Root>) -> u64 {
    pool.transaction(|tx, r| Ok::<_, Error>(r.s.capacity(tx)))
        .unwrap()
}

#[test]
fn string_key_drains() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("d.pool"), SIZE, &opts()).unwrap();
    let name = |i: u64| format!("user/{i}/{}", "z".repeat(i as usize % 23));
    let mut growths = 0;
    for i in 0..100u64 {
        let k = name(i);
        let cap = capacity(&pool);
        assert_eq!(
            tx_drains(&pool, |tx, r| r.s.insert(tx, k.as_str(), i)),
            2,
            "insert of the new key {k:?} (capacity {cap})"
        );
        growths += u64::from(capacity(&pool) != cap);
        assert_eq!(
            tx_drains(&pool, |tx, r| r.s.insert(tx, &k, i + 1)),
            2,
            "update of {k:?}"
        );
        assert_eq!(tx_drains(&pool, |tx, r| r.s.get(tx, &k)), 0, "get");
        assert_eq!(
            tx_drains(&pool, |tx, r| r.s.contains_key(tx, &k)),
            0,
            "contains_key"
        );
        assert_eq!(
            tx_drains(&pool, |tx, r| r.s.get_or_insert_with(tx, &k, || 0)),
            0,
            "get_or_insert_with, present"
        );
        assert_eq!(
            tx_drains(&pool, |tx, r| r.n.get_or_insert_new(tx, &k).map(|_| ())),
            2,
            "get_or_insert_new of the new key {k:?}"
        );
        assert_eq!(
            tx_drains(&pool, |tx, r| r.n.get_ref(tx, &k)?.expect("inserted").push(tx, i)),
            2,
            "push into the vector of {k:?}"
        );
    }
    assert!(growths >= 3, "{growths} growth steps measured");
    assert_reachable_only(&mut pool, "after the inserts");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.n.get_or_insert_new(tx, name(7)).map(|_| ())),
        0,
        "get_or_insert_new, present"
    );
    // The empty key (no buffer) and a long one (a 4 KiB buffer).
    let long = "é".repeat(2048);
    for k in [String::new(), long.clone()] {
        assert_eq!(
            tx_drains(&pool, |tx, r| r.s.insert(tx, &k, 1)),
            2,
            "insert {}",
            k.len()
        );
        assert_eq!(tx_drains(&pool, |tx, r| r.s.get(tx, &k)), 0, "get {}", k.len());
    }
    assert_eq!(pool.transaction(|tx, r| r.s.get(tx, &long)).unwrap(), Some(1));
    assert_eq!(
        pool.transaction(|tx, r| r.s.get(tx, &long[..long.len() - 2]))
            .unwrap(),
        None,
        "a prefix is another key"
    );
    for i in 0..60u64 {
        let k = name(i);
        assert_eq!(tx_drains(&pool, |tx, r| r.s.remove(tx, &k)), 2, "remove {k:?}");
        assert_eq!(
            tx_drains(&pool, |tx, r| r.s.remove(tx, &k)),
            0,
            "remove absent {k:?}"
        );
        assert_eq!(
            tx_drains(&pool, |tx, r| r.n.remove_free(tx, &k)),
            2,
            "remove_free {k:?}"
        );
    }
    assert_reachable_only(&mut pool, "after the removals");
    // Tombstones: new keys rebuild the table in place, moving the owning keys: still 2.
    for i in 1000..1100u64 {
        let k = name(i);
        assert_eq!(tx_drains(&pool, |tx, r| r.s.insert(tx, &k, i)), 2, "insert {k:?}");
        assert_eq!(tx_drains(&pool, |tx, r| r.s.remove(tx, &k)), 2, "remove {k:?}");
    }
    assert_reachable_only(&mut pool, "after the tombstone rebuilds");
    assert_eq!(tx_drains(&pool, |tx, r| r.s.clear(tx)), 2, "clear of string keys");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.n.clear(tx)),
        2,
        "clear of string keys and vectors"
    );

    // A queue of strings: growth moves owning handles.
    for i in 0..40u64 {
        assert_eq!(
            tx_drains(&pool, |tx, r| r.q.push_new(tx).map(|_| ())),
            2,
            "push_new {i}"
        );
        let n = pool.transaction(|tx, r| Ok::<_, Error>(r.q.len(tx))).unwrap();
        assert_eq!(
            tx_drains(&pool, |tx, r| r
                .q
                .get_ref(tx, n - 1)?
                .expect("pushed")
                .push_str(tx, "abc")),
            2,
            "push_str into element {i}"
        );
        if i % 3 == 0 {
            // Keeps the ring wrapped around the end of the buffer.
            assert_eq!(tx_drains(&pool, |tx, r| r.q.pop_free(tx)), 2, "pop_free {i}");
        }
    }
    assert_eq!(
        tx_drains(&pool, |tx, r| r.q.front_ref(tx).map(|e| e.is_some())),
        0,
        "front_ref"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.q.pop_free(tx)), 2, "pop_free");
    assert_reachable_only(&mut pool, "queue");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.q.clear(tx)),
        2,
        "clear of a queue of strings"
    );
    assert_eq!(tx_drains(&pool, |tx, r| r.q.pop_free(tx)), 0, "pop_free, empty");

    // Boxes of handles.
    assert_eq!(
        tx_drains(&pool, |tx, r| r.b.get_or_init_new(tx).map(|_| ())),
        2,
        "get_or_init_new"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.b.get_or_init_new(tx).map(|_| ())),
        0,
        "present"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.b.get_ref(tx)?.expect("set").extend(tx, 0..9)),
        2,
        "extend"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.d.get_or_init_new(tx).map(|_| ())),
        2,
        "boxed map"
    );
    for i in 0..20u8 {
        assert_eq!(
            tx_drains(&pool, |tx, r| r
                .d
                .get_ref(tx)?
                .expect("set")
                .get_or_insert_new(tx, key(i))
                .map(|_| ())),
            2,
            "boxed map, new key {i}"
        );
    }
    assert_reachable_only(&mut pool, "boxes");
    assert_eq!(
        tx_drains(&pool, |tx, r| r.b.free(tx)),
        2,
        "free of a boxed vector"
    );
    assert_eq!(
        tx_drains(&pool, |tx, r| r.d.free(tx)),
        2,
        "free of a boxed map of strings"
    );
    assert!(pool.allocated_blocks().unwrap().is_empty(), "everything freed");
}

/// Inserts of new string keys (through table growth and nested values), removals that free key
/// buffers, and queue and box growth and removal, each crashed after every operation and after
/// the commit: the state before or after, no block leaked or lost.
#[test]
fn crash_images_of_string_keys_and_handles() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    let mut pool = Pool::<Root>::create(&path, SIZE, &opts()).unwrap();
    let mut model = Model::default();
    for i in 0..KEYS / 2 {
        let ops = [
            Op::SInsert(i, u64::from(i)),
            Op::NPush(i + 1, u64::from(i)),
            Op::VInsert(i, 1),
            Op::QPushNew(format!("q{i}")),
            Op::BPush(u64::from(i)),
            Op::DSet(i, "x".into()),
        ];
        pool = crash_step(pool, &path, &mut model, &ops);
    }
    for i in 0..KEYS / 4 {
        let ops = [
            Op::SRemove(i),
            Op::NRemoveFree(i + 1),
            Op::VRemove(i),
            Op::QPopFree,
            Op::DRemove(i),
            Op::SInsert(i + KEYS / 2, 7),
        ];
        pool = crash_step(pool, &path, &mut model, &ops);
    }
    let ops = [Op::SClear, Op::NClear, Op::QClear, Op::BFree, Op::DFree];
    pool = crash_step(pool, &path, &mut model, &ops);
    let ops = [Op::VRemove(0)];
    pool = crash_step(pool, &path, &mut model, &ops);
    pool.transaction(|tx, r| r.v.clear(tx)).unwrap();
    model.v.clear();
    assert_eq!(Root::read(&pool), model);
    assert_eq!(model, Model::default());
    assert!(pool.allocated_blocks().unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Random transactions, crashed after every operation and after the commit.
    #[test]
    fn crash_images_of_random_transactions(
        steps in prop::collection::vec(prop::collection::vec(op(), 1..5), 1..12),
    ) {
        let dir = shm_dir();
        check_crash_steps::<Root>(&dir.path().join("r.pool"), &steps);
    }
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Bytes3 {
    a: PHashMap<[u8; 3], u64>,
    s: PHashMap<PString, u64>,
    v: PHashMap<PVec<u8>, u64>,
}

/// The hash of a string (or byte-vector) key is the byte hash of its contents, the one a `Copy`
/// key of the same bytes has (part of the on-media format): maps of the same hash seed fed the
/// same 3-byte keys in the same order lay them out in the same slots, through growth and
/// tombstones.
#[test]
fn string_keys_hash_as_their_bytes() {
    let dir = shm_dir();
    let pool = Pool::<Bytes3>::create(dir.path().join("h.pool"), SIZE, &opts()).unwrap();
    let k = |i: u64| <[u8; 3]>::try_from(format!("{:03}", i * 37 % 1000).as_bytes()).unwrap();
    pool.transaction(|tx, r| {
        let seed = 0x5eed_0fa1;
        r.a.set_hash_seed(tx, seed)?;
        r.s.set_hash_seed(tx, seed)?;
        r.v.set_hash_seed(tx, seed)?;
        for i in 0..200u64 {
            let b = k(i);
            r.a.insert(tx, b, i)?;
            r.s.insert(tx, std::str::from_utf8(&b).unwrap(), i)?;
            r.v.insert(tx, &b[..], i)?;
            if i % 3 == 0 {
                let old = k(i / 2);
                r.a.remove(tx, &old)?;
                r.s.remove(tx, std::str::from_utf8(&old).unwrap())?;
                r.v.remove(tx, &old[..])?;
            }
        }
        let a: Vec<Vec<u8>> = r.a.keys(tx)?.iter().map(|b| b.to_vec()).collect();
        let s =
            r.s.keys(tx)?
                .iter()
                .map(|k| k.as_string(tx).map(String::into_bytes))
                .collect::<Result<Vec<_>, _>>()?;
        let v =
            r.v.keys(tx)?
                .iter()
                .map(|k| k.to_vec(tx))
                .collect::<Result<Vec<_>, _>>()?;
        assert!(a.len() > 100, "{} keys", a.len());
        assert_eq!(s, a, "string keys in the slots of the array keys");
        assert_eq!(v, a, "byte-vector keys in the slots of the array keys");
        assert_eq!(
            [r.a.hash_seed(tx), r.s.hash_seed(tx), r.v.hash_seed(tx)],
            [seed; 3],
            "the seed set before the first insert is kept"
        );
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// A key reference kept across a rebuild of its table reads an empty string (its old copy was
/// zeroed) while the moved key is found; a queue element reference kept across pushes is stale:
/// writes and reads through it fail with `StaleReference`.
#[test]
fn stale_key_and_queue_references_read_empty() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("s.pool"), SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.s.insert(tx, "first key, long enough for three words", 1)?;
        let stale = r.s.keys(tx)?[0];
        let cap = r.s.capacity(tx);
        for i in 0..10 {
            r.s.insert(tx, format!("k{i}"), i)?;
        }
        assert!(r.s.capacity(tx) > cap, "rebuilt");
        assert!(stale.is_empty(tx), "the stale key copy is empty");
        assert_eq!(r.s.get(tx, "first key, long enough for three words")?, Some(1));

        let front = r.q.push_new(tx)?;
        front.push_str(tx, "front")?;
        for _ in 0..4 {
            r.q.push_new(tx)?;
        }
        assert!(matches!(front.push_str(tx, "lost?"), Err(Error::StaleReference)));
        assert!(matches!(front.as_string(tx), Err(Error::StaleReference)));
        drop(front);
        assert_eq!(r.q.front_ref(tx)?.expect("pushed").as_string(tx)?, "front");
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_reachable_only(&mut pool, "after the moves");

    // A box's handle freed through a reference kept across `free`: stale, refused.
    pool.transaction(|tx, r| r.b.get_or_init_new(tx)?.extend(tx, [1, 2]))
        .unwrap();
    let before = Root::read(&pool);
    let r = pool.transaction(|tx, r| {
        let e = r.b.get_ref(tx)?.expect("set");
        r.b.free(tx)?;
        e.free(tx)
    });
    assert!(matches!(r, Err(Error::StaleReference)), "{r:?}");
    assert_eq!(Root::read(&pool), before, "rolled back");
    assert_reachable_only(&mut pool, "after the failed transaction");
}

/// A queue of strings whose ring wraps around the end of its buffer when it grows: the
/// elements keep their order and contents, through several growths, and nothing leaks.
#[test]
fn wrapped_queue_of_strings_grows_in_order() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("w.pool"), SIZE, &opts()).unwrap();
    let mut model = Model::default();
    let mut n = 0;
    for round in 0..6 {
        // Fill the ring after a pop, so that it is full with its head past slot 0, then grow.
        let len = pool.transaction(|tx, r| Ok::<_, Error>(r.q.len(tx))).unwrap();
        let mut ops = vec![Op::QPopFree];
        for _ in 0..len + 3 {
            ops.push(Op::QPushNew(format!("s{n}")));
            ops.push(Op::QAppend(u64::MAX, format!("/{round}")));
            n += 1;
        }
        run(&pool, &mut model, &ops);
        assert_eq!(Root::read(&pool), model, "round {round}");
        assert_reachable_only(&mut pool, &format!("round {round}"));
    }
    assert!(model.q.len() > 20, "{} elements", model.q.len());
}

/// An insert that fails after making its key (the table cannot grow: no heap chunk left for it)
/// frees the key's buffer: a caller that goes on and commits leaks nothing.
#[test]
fn failed_insert_frees_the_new_key() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("f.pool"), SIZE, &opts()).unwrap();
    // Six keys: the seventh insert grows the 8-slot table to 16 slots (a larger slab class).
    pool.transaction(|tx, r| {
        for i in 0..6u8 {
            r.s.insert(tx, key(i * 4 + 2), 1)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    assert_eq!(capacity(&pool), 8);
    // Take every free chunk, so the growth has nowhere to go while small key buffers still fit
    // in the slab the keys use.
    let fillers = pool
        .transaction(|tx, _| {
            let mut out = Vec::new();
            // Runs of 4 chunks, then of 2: at most one chunk is left, too few for the table.
            for size in [256 << 10, 128 << 10] {
                while let Ok(off) = tx.alloc_bytes(size) {
                    out.push(off);
                }
            }
            Ok::<_, Error>(out)
        })
        .unwrap();
    assert!(!fillers.is_empty());
    let err = pool
        .transaction(|tx, r| Ok::<_, Error>(r.s.insert(tx, "seventh key", 7).err()))
        .unwrap();
    assert!(matches!(err, Some(Error::OutOfSpace { .. })), "{err:?}");
    let mut owned = Root::reachable(&pool);
    owned.extend(fillers);
    assert_allocated_exactly(&mut pool, &owned, "after the failed insert");
    assert_eq!(
        pool.transaction(|tx, r| r.s.get(tx, "seventh key")).unwrap(),
        None
    );
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.s.len(tx))).unwrap(), 6);
}
