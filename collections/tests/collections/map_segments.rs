//! `PHashMap` as an extendible hash table: maps with big values have small segments (64 slots
//! here), so a few hundred keys split segments and double the directory many times. Checked
//! against std's `HashMap` across reopens and aborts, for leaks, for drains (2 per insert and
//! remove, splits and directory doublings included) and with crash images inside splits.

use crate::common;

use std::collections::{BTreeSet, HashMap};

use common::{
    add_block, assert_reachable_only, check_abort, check_crash_steps, check_steps, drains, opts, run,
    shm_dir, ModelRoot, POOL_SIZE,
};
use proptest::prelude::*;
use ptm::{Error, PCell, Persistent, Pool, Result, Transaction};
use ptm_collections::{write_legacy_segments, PHandle, PHashMap, PString, PValue, PVec};

/// A 512-byte record owning a vector: 64-slot segments under a `PString` key.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Rec {
    tags: PVec<u64>,
    pad: [PCell<u64>; 61],
}

impl PValue for Rec {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: `self` is being discarded, so is its vector.
        unsafe { self.tags.free_owned(tx) }
    }
}

// SAFETY: a vector handle and cells: every byte is inside `PCell`s, all-zero is an empty
// vector owning nothing and zero padding, `!Sync` (cells), position-independent.
unsafe impl PHandle for Rec {}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    /// 515-byte slots: 64-slot segments.
    big: PHashMap<u16, [u64; 64]>,
    /// Owning keys and values, 537-byte slots: 64-slot segments.
    recs: PHashMap<PString, Rec>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    big: HashMap<u16, u64>,
    recs: HashMap<String, Vec<u64>>,
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u64),
    Remove(u16),
    /// Pushes onto the record's tags, creating the record if absent.
    Tag(u16, u64),
    /// Removes the record, freeing its key and tags.
    Untag(u16),
    Clear,
    /// From now on this thread writes segments in the layout of builds before the pair layout
    /// (`true`) or in this build's (design §13.4): a pool written by an older build.
    Legacy(bool),
}

fn name(k: u16) -> String {
    format!("record-{k:04}")
}

impl ModelRoot for Root {
    type Model = Model;
    type Op = Op;

    fn apply(tx: &Transaction<'_>, r: &Root, op: &Op, m: &Model) -> Result<()> {
        match *op {
            Op::Insert(k, x) => {
                let old = r.big.insert(tx, k, [x; 64])?;
                assert_eq!(old.map(|v| v[63]), m.big.get(&k).copied(), "insert {k}");
            }
            Op::Remove(k) => {
                let old = r.big.remove(tx, &k)?;
                assert_eq!(old.map(|v| v[0]), m.big.get(&k).copied(), "remove {k}");
            }
            Op::Tag(k, x) => r.recs.get_or_insert_new(tx, name(k))?.tags.push(tx, x)?,
            Op::Untag(k) => {
                let had = r.recs.remove_free(tx, &name(k))?;
                assert_eq!(had, m.recs.contains_key(&name(k)), "untag {k}");
            }
            Op::Clear => {
                r.big.clear(tx)?;
                r.recs.clear(tx)?;
            }
            Op::Legacy(on) => write_legacy_segments(on),
        }
        Ok(())
    }

    fn apply_model(m: &mut Model, op: &Op) {
        match *op {
            Op::Insert(k, x) => {
                m.big.insert(k, x);
            }
            Op::Remove(k) => {
                m.big.remove(&k);
            }
            Op::Tag(k, x) => m.recs.entry(name(k)).or_default().push(x),
            Op::Untag(k) => {
                m.recs.remove(&name(k));
            }
            Op::Clear => *m = Model::default(),
            Op::Legacy(_) => {}
        }
    }

    fn read(pool: &Pool<Root>) -> Model {
        pool.transaction(|tx, r| {
            for m in [r.big.check_invariants(tx), r.recs.check_invariants(tx)] {
                if let Err(e) = m {
                    panic!("map structure: {e}");
                }
            }
            let mut big = HashMap::new();
            for (k, v) in r.big.iter(tx) {
                assert!(v.iter().all(|&w| w == v[0]), "value of {k} torn");
                assert!(big.insert(k, v[0]).is_none(), "key {k} twice");
                assert_eq!(r.big.get(tx, &k)?.map(|v| v[0]), Some(v[0]), "get {k}");
            }
            assert_eq!(big.len() as u64, r.big.len(tx), "big len");
            let mut recs = HashMap::new();
            for (k, rec) in r.recs.iter_refs(tx) {
                let k = k.as_string(tx)?;
                assert!(r.recs.get_ref(tx, &k)?.is_some(), "get_ref {k}");
                assert!(recs.insert(k, rec.tags.to_vec(tx)?).is_none(), "record twice");
            }
            assert_eq!(recs.len() as u64, r.recs.len(tx), "recs len");
            Ok::<_, Error>(Model { big, recs })
        })
        .unwrap()
    }

    fn reachable(pool: &Pool<Root>) -> BTreeSet<u64> {
        pool.transaction(|tx, r| {
            let mut out = BTreeSet::new();
            for b in r
                .big
                .block_offsets(tx)?
                .into_iter()
                .chain(r.recs.block_offsets(tx)?)
            {
                add_block(&mut out, Some(b));
            }
            for (k, rec) in r.recs.iter_refs(tx) {
                add_block(&mut out, k.buffer_offset(tx));
                add_block(&mut out, rec.tags.buffer_offset(tx));
            }
            Ok::<_, Error>(out)
        })
        .unwrap()
    }
}

/// The number of segments of a map, from its blocks (`blocks - 1` under a directory).
fn segments(pool: &Pool<Root>, recs: bool) -> usize {
    pool.transaction(|tx, r| {
        let b = if recs {
            r.recs.block_offsets(tx)?
        } else {
            r.big.block_offsets(tx)?
        };
        Ok::<_, Error>(if b.len() > 1 { b.len() - 1 } else { b.len() })
    })
    .unwrap()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..400u16, any::<u64>()).prop_map(|(k, x)| Op::Insert(k, x)),
        3 => (0..400u16).prop_map(Op::Remove),
        3 => (0..200u16, any::<u64>()).prop_map(|(k, x)| Op::Tag(k, x)),
        1 => (0..200u16).prop_map(Op::Untag),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random operations in transactions of up to 40, with reopens: equal to std's `HashMap`
    /// after every step, the structure checked, no leak.
    #[test]
    fn matches_std_across_reopen(steps in prop::collection::vec(
        (prop::collection::vec(op(), 1..40), any::<bool>()), 1..16)) {
        let dir = shm_dir();
        check_steps::<Root>(&dir.path().join("m.pool"), &steps);
    }

    /// A failed transaction of splits and removals changes nothing.
    #[test]
    fn aborts_change_nothing(before in prop::collection::vec(op(), 0..200),
                             ops in prop::collection::vec(op(), 1..100)) {
        let dir = shm_dir();
        check_abort::<Root>(&dir.path().join("a.pool"), &before, &ops);
    }
}

#[test]
fn clear_frees_every_segment_and_directory() {
    let dir = shm_dir();
    let steps = vec![
        ((0..300).map(|k| Op::Insert(k, u64::from(k))).collect(), false),
        ((0..120).map(|k| Op::Tag(k, 1)).collect(), true),
        (vec![Op::Clear], true),
        ((0..100).map(|k| Op::Insert(k * 3, 5)).collect(), false),
    ];
    let (mut pool, model) = check_steps::<Root>(&dir.path().join("c.pool"), &steps);
    assert_eq!(model.big.len(), 100);
    assert_reachable_only(&mut pool, "after clear and refill");
}

/// Every insert and remove costs 2 drains, through segment doublings, splits and directory
/// doublings (counted, so the test fails if none happened).
#[test]
fn growth_costs_two_drains() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("d.pool"), POOL_SIZE, &opts()).unwrap();
    let mut model = Model::default();
    let (mut splits, mut doublings, mut final_segments) = (0, 0, 0);
    for k in 0..600u16 {
        let before = segments(&pool, false);
        let dir_before = pool
            .transaction(|tx, r| Ok::<_, Error>(r.big.block_offsets(tx)?.first().copied()))
            .unwrap();
        let op = Op::Insert(k, u64::from(k) * 3);
        let (_, d) = drains(|| run(&pool, &mut model, std::slice::from_ref(&op)));
        assert_eq!(d, 2, "insert {k}");
        let after = segments(&pool, false);
        splits += usize::from(after > before);
        let dir_after = pool
            .transaction(|tx, r| Ok::<_, Error>(r.big.block_offsets(tx)?.first().copied()))
            .unwrap();
        doublings += usize::from(after > 1 && dir_after != dir_before && after > before);
        final_segments = after;
    }
    assert!(splits >= 8, "{splits} splits");
    assert!(doublings >= 3, "{doublings} directory changes");
    for k in (0..600u16).step_by(3) {
        let (_, d) = drains(|| run(&pool, &mut model, &[Op::Remove(k)]));
        assert_eq!(d, 2, "remove {k}");
    }
    for k in 0..150u16 {
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.recs.get_or_insert_new(tx, name(k)).map(|_| ()))
                .unwrap()
        });
        assert_eq!(d, 2, "get_or_insert_new {k}");
        model.recs.entry(name(k)).or_default();
    }
    assert!(segments(&pool, true) >= 3, "the record map split");
    for k in (0..150u16).step_by(2) {
        let (_, d) = drains(|| run(&pool, &mut model, &[Op::Untag(k)]));
        assert_eq!(d, 2, "remove_free {k}");
    }
    assert_eq!(Root::read(&pool), model);
    assert!(final_segments > 8);
}

/// Crash images after each operation of transactions that split segments and double the
/// directory (with owning keys and values moved), before and after commit: each recovers to
/// the model before or after the transaction, with no leak.
#[test]
fn crash_images_inside_splits() {
    let dir = shm_dir();
    let steps = split_steps();
    let (pool, model) = check_crash_steps::<Root>(&dir.path().join("x.pool"), &steps);
    assert_split_steps(&pool, &model);
}

/// The same, on maps written by an older build (segments in the array layout) that this
/// build then grows: crash images inside the steps that rebuild and split old segments into
/// pair-layout ones, and after them (design §13.4).
#[test]
fn crash_images_while_old_layout_segments_are_regrown() {
    let dir = shm_dir();
    let mut steps = split_steps();
    steps[0].insert(0, Op::Legacy(true));
    steps[1].push(Op::Legacy(false));
    let (pool, model) = check_crash_steps::<Root>(&dir.path().join("x.pool"), &steps);
    write_legacy_segments(false);
    let (old, new) = pool
        .transaction(|tx, r| {
            let (a, b) = (r.big.segment_layouts(tx)?, r.recs.segment_layouts(tx)?);
            Ok::<_, Error>((a.0 + b.0, a.1 + b.1))
        })
        .unwrap();
    assert!(
        new >= 4,
        "old-layout segments rebuilt in the pair layout: {old} old, {new} new"
    );
    assert_split_steps(&pool, &model);
}

/// Fill to just below the first split, then insert across it in small transactions.
fn split_steps() -> Vec<Vec<Op>> {
    let mut steps: Vec<Vec<Op>> = Vec::new();
    steps.push((0..46).map(|k| Op::Insert(k, 1)).collect());
    steps.push((0..46).map(|k| Op::Tag(k, 2)).collect());
    for s in 0..12u16 {
        let mut ops: Vec<Op> = (0..6).map(|i| Op::Insert(46 + s * 6 + i, u64::from(s))).collect();
        // 6 records per step: over 96 records in the end, more than two 64-slot segments
        // hold (48 each, 3/4 full), so the record map splits twice whatever its hash seed.
        ops.extend((0..6).map(|i| Op::Tag(46 + s * 6 + i, u64::from(i))));
        ops.push(Op::Remove(s * 3));
        ops.push(Op::Untag(s * 2 + 1));
        steps.push(ops);
    }
    steps
}

fn assert_split_steps(pool: &Pool<Root>, model: &Model) {
    assert!(
        segments(pool, false) >= 3 && segments(pool, true) >= 3,
        "splits happened"
    );
    assert!(model.big.len() > 100);
}
