//! Guards `PHashMap`'s extendible hashing under the crash harness. Big values make 64-slot
//! segments, so a few dozen transactions double the first segment, split segments (moving
//! owning values and zeroing their old copies) and double the directory, with removals in
//! between. After every crash both maps hold the contents after a prefix
//! of the transactions that includes every one that returned, their structure checks, and the
//! heap holds exactly their directories, segments and the values' buffers.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{PCell, Persistent, Pool, PoolOptions, Result, Transaction};
use ptm_collections::{PHandle, PHashMap, PValue, PVec};
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

/// A 512-byte value owning a vector.
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
// vector owning nothing, `!Sync` (cells), position-independent.
unsafe impl PHandle for Rec {}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    big: PHashMap<u16, [u64; 64]>,
    recs: PHashMap<u16, Rec>,
}

/// Transaction `i`: inserts 3 keys into each map; every fourth also removes 2 older ones.
fn keys(i: u16) -> (Vec<u16>, Vec<u16>) {
    let add = (0..3).map(|j| (i * 3 + j) * 7 % 211).collect();
    let del = if i % 4 == 3 {
        vec![(i * 3 - 6) * 7 % 211, (i * 3 - 8) * 7 % 211]
    } else {
        vec![]
    };
    (add, del)
}

const TXS: u16 = 40;

type State = (BTreeMap<u16, u64>, BTreeMap<u16, Vec<u64>>);

fn states() -> Vec<State> {
    let mut s: State = Default::default();
    let mut out = vec![s.clone()];
    for i in 0..TXS {
        let (add, del) = keys(i);
        for k in add {
            s.0.insert(k, u64::from(i));
            s.1.entry(k).or_default().push(u64::from(k));
        }
        for k in del {
            s.0.remove(&k);
            s.1.remove(&k);
        }
        out.push(s.clone());
    }
    out
}

fn apply(pool: &Pool<Root>, i: u16) -> std::result::Result<(), BoxError> {
    let (add, del) = keys(i);
    pool.transaction(|tx, r| {
        if i == 0 {
            // Fixed hash seeds: the same splits, so the same crash points, in every run.
            r.big.set_hash_seed(tx, 0x5eed_0021)?;
            r.recs.set_hash_seed(tx, 0x5eed_0022)?;
        }
        for &k in &add {
            r.big.insert(tx, k, [u64::from(i); 64])?;
            r.recs.get_or_insert_new(tx, k)?.tags.push(tx, u64::from(k))?;
        }
        for k in &del {
            r.big.remove(tx, k)?;
            r.recs.remove_free(tx, k)?;
        }
        Ok::<_, ptm::Error>(())
    })?;
    Ok(())
}

fn check(pool: &mut Pool<Root>, expected: &[State], done: usize) -> CheckResult {
    pool.check_heap()?;
    let (s, owned) = pool.transaction(|tx, r| {
        let mut owned = BTreeSet::new();
        let structure = r.big.check_invariants(tx).and(r.recs.check_invariants(tx));
        let mut big = BTreeMap::new();
        for (k, v) in r.big.iter(tx) {
            big.insert(
                k,
                if v.iter().all(|&w| w == v[0]) {
                    v[0]
                } else {
                    u64::MAX
                },
            );
        }
        let mut recs = BTreeMap::new();
        for (k, rec) in r.recs.iter_refs(tx) {
            recs.insert(k, rec.tags.to_vec(tx)?);
            owned.extend(rec.tags.buffer_offset(tx));
        }
        owned.extend(r.big.block_offsets(tx)?);
        owned.extend(r.recs.block_offsets(tx)?);
        Ok::<_, ptm::Error>(((structure, (big, recs)), owned))
    })?;
    let (structure, s) = s;
    ensure!(structure.is_ok(), "map structure: {structure:?}");
    ensure_prefix(&s, expected, done)?;
    ensure_heap_owns(pool, &owned)
}

#[test]
fn splits_and_directory_doublings_survive_every_crash() {
    let expected = states();
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(21)
        // Recovery of a split is long: crashes inside it are left to the smaller workloads.
        .double_crash(false)
        .pool_size(8 << 20)
        .pool_options(PoolOptions::new().layout("map-segments").lanes(1))
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for i in 0..TXS {
                    apply(pool, i)?;
                    done.set(usize::from(i) + 1);
                }
                let blocks = pool.transaction(|tx, r| {
                    Ok::<_, ptm::Error>((r.big.block_offsets(tx)?.len(), r.recs.block_offsets(tx)?.len()))
                })?;
                // A directory and at least 3 segments each: two splits, two directory doublings.
                ensure!(blocks.0 >= 4 && blocks.1 >= 4, "too few splits: {blocks:?}");
                Ok(())
            },
            |pool| check(pool, &expected, done.get()),
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
