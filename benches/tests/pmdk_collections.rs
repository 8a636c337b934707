//! The PMDK peers of the collections benchmark (`csrc/pmdk_collections.c`) against a std model:
//! every operation's result, the full contents and the structure's invariants, through growth
//! (hash map resizes, tree splits several levels deep), removals, batches, and transactions
//! aborted at every snapshot (fault injection) or by a full pool, which must leave the map
//! unchanged.
//!
//! The pools go to `/dev/shm` without `PMEM_IS_PMEM_FORCE` (setting the environment in a
//! multi-threaded test binary is a data race), so PMDK persists with `msync` here: slower, same
//! results.
#![cfg(feature = "pmdk")]

use std::collections::BTreeMap;

use ptm_benches::pmdk_collections::{fail_at_snapshot, PmdkMap, PmdkMapKind};
use ptm_benches::{pmem_pool_dir, XorShift as Rng};

/// `ECANCELED` on Linux: the error of a transaction aborted by fault injection.
const ECANCELED: i32 = 125;

const KINDS: [PmdkMapKind; 2] = [PmdkMapKind::Hash, PmdkMapKind::BTree];

/// Checks the map's structure and that its entries are exactly the model's.
fn assert_same(m: &PmdkMap, model: &BTreeMap<u64, u64>) {
    let mut got = m.check().unwrap_or_else(|e| panic!("{e}"));
    got.sort_unstable();
    let want: Vec<(u64, u64)> = model.iter().map(|(&k, &v)| (k, v)).collect();
    assert_eq!(m.len(), model.len() as u64, "{}: count", m.kind().name());
    assert!(got == want, "{}: contents differ from the model", m.kind().name());
}

/// Random single-key operations over a key space that makes both maps grow (hash map resizes
/// past 1024 buckets, a tree four levels deep), shrink and regrow; every result is compared
/// with the model's, the structure every 2000 operations.
#[test]
fn random_operations_match_a_std_model() {
    for kind in KINDS {
        let m = PmdkMap::create(kind, &pmem_pool_dir(), 64 << 20).expect("create the map");
        let mut model = BTreeMap::new();
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        // Keys spread over u64 (for the hash) but from a small set (so updates and removals of
        // present keys happen), with a few extreme keys.
        let space: Vec<u64> = (0..6000u64)
            .map(|i| i.wrapping_mul(0xD6E8_FEB8_6659_FD93))
            .chain([0, 1, u64::MAX, u64::MAX - 1])
            .collect();
        for step in 0..40_000u64 {
            let k = space[rng.below(space.len() as u64) as usize];
            // Grow for the first half, then mostly remove, then regrow.
            let phase = step / 10_000;
            let r = rng.below(10);
            let insert_share = [7, 8, 2, 7][phase as usize];
            if r < insert_share {
                let v = rng.next_u64();
                assert_eq!(m.insert(k, v).expect("insert"), model.insert(k, v), "insert {k}");
            } else if r < 9 {
                assert_eq!(m.remove(k).expect("remove"), model.remove(&k), "remove {k}");
            } else {
                assert_eq!(m.get(k), model.get(&k).copied(), "get {k}");
            }
            if step % 2000 == 1999 {
                assert_same(&m, &model);
            }
        }
        assert_same(&m, &model);
        // Every key of the space, present or not.
        for &k in &space {
            assert_eq!(m.get(k), model.get(&k).copied(), "{}: get {k}", kind.name());
        }
    }
}

/// Keys inserted in increasing and in decreasing order (the tree's worst split patterns), then
/// removed until empty, then reinserted.
#[test]
fn sequential_keys_fill_empty_and_refill() {
    for kind in KINDS {
        let m = PmdkMap::create(kind, &pmem_pool_dir(), 64 << 20).expect("create the map");
        let mut model = BTreeMap::new();
        for k in (0..3000u64).chain((10_000..13_000).rev()) {
            assert_eq!(m.insert(k, k * 3).expect("insert"), None);
            model.insert(k, k * 3);
        }
        assert_same(&m, &model);
        for k in (0..3000u64).chain(10_000..13_000) {
            assert_eq!(m.remove(k).expect("remove"), Some(k * 3));
            assert_eq!(m.remove(k).expect("remove again"), None);
        }
        model.clear();
        assert!(m.is_empty());
        assert_same(&m, &model);
        for k in (0..3000u64).rev() {
            assert_eq!(m.insert(k, k).expect("reinsert"), None);
            model.insert(k, k);
        }
        assert_same(&m, &model);
    }
}

/// Batches: one transaction of many inserts (with duplicates and updates), one of many removes
/// (with absent keys).
#[test]
fn batches_match_a_std_model() {
    for kind in KINDS {
        let m = PmdkMap::create(kind, &pmem_pool_dir(), 64 << 20).expect("create the map");
        let mut model = BTreeMap::new();
        let mut rng = Rng::new(42);
        for round in 0..6u64 {
            let entries: Vec<(u64, u64)> = (0..1500).map(|_| (rng.below(5000), rng.next_u64())).collect();
            m.insert_batch(&entries).expect("batch insert");
            model.extend(entries.iter().copied());
            assert_same(&m, &model);
            let keys: Vec<u64> = (0..1000 + 200 * round).map(|_| rng.below(6000)).collect();
            m.remove_batch(&keys).expect("batch remove");
            for k in &keys {
                model.remove(k);
            }
            assert_same(&m, &model);
        }
    }
}

/// Fills a pool of PMDK's minimum size until a transaction fails for lack of space: the failed
/// insert (single or batch) must leave the map exactly as before, and the map must keep working
/// (removals succeed, and inserts succeed again after them).
#[test]
fn a_full_pool_aborts_without_changing_the_map() {
    for kind in KINDS {
        let m = PmdkMap::create(kind, &pmem_pool_dir(), 8 << 20).expect("create the map");
        let mut model = BTreeMap::new();
        let key = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Batches of 1000 until one fails.
        let mut i = 0u64;
        let batch_err = loop {
            let entries: Vec<(u64, u64)> = (i..i + 1000).map(|j| (key(j), j)).collect();
            match m.insert_batch(&entries) {
                Ok(()) => model.extend(entries),
                Err(e) => break e,
            }
            i += 1000;
            assert!(i < 10_000_000, "{}: an 8 MiB pool never filled", kind.name());
        };
        assert_ne!(batch_err.errno, 0, "{}: {batch_err}", kind.name());
        assert_same(&m, &model);
        // Then single inserts until one fails.
        let single_err = loop {
            match m.insert(key(i), i) {
                Ok(None) => model.insert(key(i), i),
                Ok(Some(_)) => panic!("{}: fresh key {i} was present", kind.name()),
                Err(e) => break e,
            };
            i += 1;
        };
        assert_ne!(single_err.errno, 0, "{}: {single_err}", kind.name());
        assert_eq!(
            m.get(key(i)),
            None,
            "{}: the failed insert left its key",
            kind.name()
        );
        assert_same(&m, &model);
        // Free some space, insert again.
        let gone: Vec<u64> = model.keys().copied().step_by(3).collect();
        for &k in &gone {
            assert_eq!(m.remove(k).expect("remove in a full pool"), model.remove(&k));
        }
        assert_eq!(m.insert(key(i), i).expect("insert after removals"), None);
        model.insert(key(i), i);
        assert_same(&m, &model);
    }
}

/// Runs `op` with the transaction aborted at its 1st, 2nd, ... snapshot until it succeeds; after
/// every abort, `after_abort` checks the map is as before. Returns `op`'s result and the number of
/// aborts (the operation's snapshots).
fn abort_everywhere<T>(
    m: &PmdkMap,
    mut op: impl FnMut(&PmdkMap) -> Result<T, ptm_benches::pmdk::PmdkError>,
    mut after_abort: impl FnMut(&PmdkMap),
) -> (T, u64) {
    for n in 1.. {
        fail_at_snapshot(n);
        let r = op(m);
        fail_at_snapshot(0);
        match r {
            Ok(v) => return (v, n - 1),
            Err(e) => {
                assert_eq!(e.errno, ECANCELED, "{}: {e}", m.kind().name());
                after_abort(m);
            }
        }
    }
    unreachable!()
}

/// Every insert and remove aborted at each of its snapshots in turn leaves the map unchanged:
/// inserts that resize the hash map (relinking every entry) or split tree nodes up to a new top,
/// updates, removals, and batches.
#[test]
fn an_abort_at_any_snapshot_leaves_the_map_unchanged() {
    for kind in KINDS {
        let m = PmdkMap::create(kind, &pmem_pool_dir(), 64 << 20).expect("create the map");
        let mut model = BTreeMap::new();
        let mut rng = Rng::new(7);
        let mut most = 0u64;
        // Up to 1100 entries: the hash map resizes at 1025 (1024 entries relinked).
        for step in 0..1500u64 {
            let k = if step < 1100 {
                step * 0x9E37_79B9
            } else {
                rng.below(1100) * 0x9E37_79B9
            };
            let v = rng.next_u64();
            let remove = step >= 1100 && step % 2 == 0;
            let before = (m.len(), m.get(k));
            let check = |m: &PmdkMap| {
                assert_eq!(
                    (m.len(), m.get(k)),
                    before,
                    "{}: step {step} aborted",
                    kind.name()
                );
                if step % 97 == 0 || step == 1024 {
                    assert_same(m, &model);
                }
            };
            let snaps = if remove {
                let (old, snaps) = abort_everywhere(&m, |m| m.remove(k), check);
                assert_eq!(old, model.remove(&k));
                snaps
            } else {
                let (old, snaps) = abort_everywhere(&m, |m| m.insert(k, v), check);
                assert_eq!(old, model.insert(k, v));
                snaps
            };
            most = most.max(snaps);
        }
        assert_same(&m, &model);
        if kind == PmdkMapKind::Hash {
            assert!(most > 1024, "the resize relinked {most} entries at most");
        } else {
            assert!(most >= 8, "no insert split a node ({most} snapshots at most)");
        }
        // A batch, aborted at a few points along the way.
        let entries: Vec<(u64, u64)> = (0..2000).map(|i| (i * 31, i)).collect();
        for n in [1, 2, 500, 1500, 3000] {
            fail_at_snapshot(n);
            let r = m.insert_batch(&entries);
            fail_at_snapshot(0);
            assert!(
                r.is_err(),
                "{}: the batch has more than {n} snapshots",
                kind.name()
            );
            assert_same(&m, &model);
        }
        m.insert_batch(&entries).expect("batch insert");
        model.extend(entries);
        assert_same(&m, &model);
    }
}
