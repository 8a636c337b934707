//! `PHashMap` segments in both on-media layouts (design §13.4): the pair layout this build
//! writes (slot `i`'s key and value side by side) and the key-array/value-array layout of
//! builds before it. A pool written by an older build must keep working: its segments are
//! read as they are, updated in place, and rebuilt in the pair layout when they grow. The old
//! layout is produced with `write_legacy_segments(true)`, which makes this thread write
//! segments exactly as the older builds did.

use crate::common;

use std::collections::HashMap;

use common::{opts, shm_dir};
use proptest::prelude::*;
use ptm::{Persistent, Pool, Result, Transaction};
use ptm_collections::{
    verify, walk_pool, write_legacy_segments, PHashMap, PHashSet, PString, PVec, Report, Verify,
};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    nums: PHashMap<u64, u64>,
    /// Owning keys and values, and a pair with padding (24-byte key, 24-byte value).
    names: PHashMap<PString, PVec<u64>>,
    /// A 1-byte value: a pair padded from 9 to 16 bytes.
    set: PHashSet<u64>,
}

impl Verify for Root {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        self.nums.verify(tx, report)?;
        self.names.verify(tx, report)?;
        self.set.verify(tx, report)
    }
}

const POOL: u64 = 64 << 20;

#[derive(Default, Debug, PartialEq)]
struct Model {
    nums: HashMap<u64, u64>,
    names: HashMap<String, Vec<u64>>,
    set: std::collections::HashSet<u64>,
}

fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(23)
}

fn read(pool: &Pool<Root>) -> Model {
    pool.transaction(|tx, r| {
        let mut m = Model::default();
        for (k, v) in r.nums.iter(tx) {
            assert!(m.nums.insert(k, v).is_none(), "key {k} listed twice");
        }
        for (k, v) in r.names.iter_refs(tx) {
            m.names.insert(k.as_string(tx)?, v.to_vec(tx)?);
        }
        for k in r.set.iter(tx) {
            m.set.insert(k);
        }
        Ok::<_, ptm::Error>(m)
    })
    .unwrap()
}

/// Every model entry found by lookup (not only by iteration), and the counts right.
fn check(pool: &Pool<Root>, m: &Model) {
    assert_eq!(&read(pool), m);
    pool.transaction(|tx, r| {
        for (k, v) in &m.nums {
            assert_eq!(r.nums.get(tx, k)?, Some(*v), "nums[{k}]");
        }
        for (k, v) in &m.names {
            assert_eq!(
                r.names
                    .get_ref(tx, k.as_str())?
                    .map(|x| x.to_vec(tx))
                    .transpose()?,
                Some(v.clone())
            );
        }
        for k in &m.set {
            assert!(r.set.contains(tx, k)?, "set {k}");
        }
        assert_eq!(r.nums.len(tx), m.nums.len() as u64);
        assert_eq!(r.names.len(tx), m.names.len() as u64);
        assert_eq!(r.set.len(tx), m.set.len() as u64);
        Ok::<_, ptm::Error>(())
    })
    .unwrap();
}

/// The structure checks: `verify`, the schema walk (every allocated block reachable).
fn check_structure(pool: &mut Pool<Root>) {
    verify(pool).expect("verify");
    let w = walk_pool(pool).expect("walk");
    assert!(
        w.unreachable.is_empty(),
        "unreachable blocks: {:?}",
        w.unreachable
    );
}

fn layouts(pool: &Pool<Root>) -> [(u64, u64); 2] {
    pool.transaction(|tx, r| Ok::<_, ptm::Error>([r.nums.segment_layouts(tx)?, r.names.segment_layouts(tx)?]))
        .unwrap()
}

fn apply(pool: &Pool<Root>, m: &mut Model, op: &Op) -> Result<()> {
    pool.transaction(|tx, r| match op {
        Op::Put(k, v) => {
            r.nums.insert(tx, *k, *v)?;
            let n = format!("name-{k}");
            r.names.get_or_insert_new(tx, n.as_str())?.push(tx, *v)?;
            r.set.insert(tx, *k)?;
            Ok::<_, ptm::Error>(())
        }
        Op::Del(k) => {
            r.nums.remove(tx, k)?;
            r.names.remove_free(tx, format!("name-{k}").as_str())?;
            r.set.remove(tx, k)?;
            Ok(())
        }
        Op::Legacy(_) => Ok(()),
    })?;
    match op {
        Op::Put(k, v) => {
            m.nums.insert(*k, *v);
            m.names.entry(format!("name-{k}")).or_default().push(*v);
            m.set.insert(*k);
        }
        Op::Del(k) => {
            m.nums.remove(k);
            m.names.remove(&format!("name-{k}"));
            m.set.remove(k);
        }
        Op::Legacy(on) => write_legacy_segments(*on),
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Put(u64, u64),
    Del(u64),
    /// Switches the layout this thread writes new segments in.
    Legacy(bool),
}

#[test]
fn a_map_written_in_the_old_layout_is_read_updated_and_regrown() {
    let dir = shm_dir();
    let path = dir.path().join("layout.pool");
    let mut m = Model::default();
    // An "older build": every segment in the old layout. 6,000 keys split the u64 map's
    // 2048-slot segments and the string map's smaller ones several times.
    write_legacy_segments(true);
    {
        let pool = Pool::<Root>::create(&path, POOL, &opts()).unwrap();
        for i in 0..6000 {
            apply(&pool, &mut m, &Op::Put(key(i), i)).unwrap();
        }
        let [nums, names] = layouts(&pool);
        assert!(nums.0 >= 4 && nums.1 == 0, "nums segments (old, pairs): {nums:?}");
        assert!(
            names.0 >= 4 && names.1 == 0,
            "names segments (old, pairs): {names:?}"
        );
        check(&pool, &m);
        pool.close().unwrap();
    }
    // This build: the old segments are read as they are.
    write_legacy_segments(false);
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    check(&pool, &m);
    check_structure(&mut pool);
    // Updates in place (no growth): removals and value updates of present keys.
    for i in (0..6000).step_by(3) {
        apply(&pool, &mut m, &Op::Del(key(i))).unwrap();
    }
    for i in (1..6000).step_by(3) {
        apply(&pool, &mut m, &Op::Put(key(i), i + 1)).unwrap();
    }
    check(&pool, &m);
    // Growth: segments that fill up are rebuilt or split in the pair layout.
    for i in 6000..20000 {
        apply(&pool, &mut m, &Op::Put(key(i), i)).unwrap();
    }
    let [nums, names] = layouts(&pool);
    assert!(
        nums.1 > 0 && names.1 > 0,
        "no segment was rebuilt in the pair layout: {nums:?} {names:?}"
    );
    check(&pool, &m);
    check_structure(&mut pool);
    pool.close().unwrap();
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    check(&pool, &m);
    check_structure(&mut pool);
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => (0u64..3000, any::<u64>()).prop_map(|(k, v)| Op::Put(key(k), v)),
            3 => (0u64..3000).prop_map(|k| Op::Del(key(k))),
            1 => any::<bool>().prop_map(Op::Legacy),
        ],
        1..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random inserts and removals while the layout new segments take flips back and forth:
    /// maps whose segments are of both layouts, against std's maps, across a reopen.
    #[test]
    fn mixed_layouts_match_the_std_model(ops in ops()) {
        let dir = shm_dir();
        let path = dir.path().join("mixed.pool");
        let mut m = Model::default();
        let pool = Pool::<Root>::create(&path, POOL, &opts()).unwrap();
        for op in &ops {
            apply(&pool, &mut m, op).unwrap();
        }
        write_legacy_segments(false);
        check(&pool, &m);
        pool.close().unwrap();
        let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
        check(&pool, &m);
        check_structure(&mut pool);
    }
}
