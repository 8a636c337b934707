//! Guards `PHashMap`'s overflow path under the crash harness: keys of a constant hash cannot be
//! split apart, so their segment is rebuilt alone past the full segment size (64 slots here,
//! big values) again and again, moving owning values and zeroing their old copies, with
//! removals leaving tombstones in between. After every crash the map holds the contents after a
//! prefix of the transactions that includes every one that returned, its structure checks, and
//! the heap holds exactly its segment and the values' buffers.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use ptm::{PCell, Persistent, Pool, PoolOptions, Result, Transaction};
use ptm_collections::{AsKey, PHashMap, PKey, PValue, PVec};
use ptm_crashtest::{ensure, ensure_heap_owns, ensure_prefix, BoxError, CheckResult, Explorer};

/// A `u16` key whose hash is always 7: every key collides with every other.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Same {
    v: u16,
}

impl PValue for Same {
    const OWNS: bool = false;

    unsafe fn free_owned(&self, _tx: &Transaction<'_>) -> Result<()> {
        Ok(())
    }
}

// SAFETY: a plain `u16` owning nothing, moved by its bytes; `Ref` is a copy taken at once;
// `key_hash`, `key_eq` and `key_new` only read.
unsafe impl PKey for Same {
    type Borrowed = u16;
    type Ref<'a> = u16;

    fn borrowed_hash(_: &u16) -> u64 {
        7
    }

    fn key_hash(&self, _tx: &Transaction<'_>) -> Result<u64> {
        Ok(7)
    }

    fn key_eq(&self, _tx: &Transaction<'_>, b: &u16) -> Result<bool> {
        Ok(self.v == *b)
    }

    unsafe fn key_new(_tx: &Transaction<'_>, b: &u16) -> Result<Same> {
        Ok(Same { v: *b })
    }

    fn key_ref(&self) -> u16 {
        self.v
    }
}

impl AsKey<Same> for u16 {
    fn as_key(&self) -> &u16 {
        self
    }
}

/// A 512-byte value owning a vector: 64-slot segments. `PValue` (derived) frees the vector.
#[derive(Persistent, PValue)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Rec {
    tags: PVec<u64>,
    pad: PCell<[u64; 61]>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    recs: PHashMap<Same, Rec>,
}

/// Transaction `i`: adds 4 keys; every third also removes 2 older ones.
fn keys(i: u16) -> (Vec<u16>, Vec<u16>) {
    let add = (0..4).map(|j| (i * 4 + j) * 7 % 251).collect();
    let del = if i % 3 == 2 {
        vec![(i * 4 - 5) * 7 % 251, (i * 4 - 7) * 7 % 251]
    } else {
        vec![]
    };
    (add, del)
}

const TXS: u16 = 36;

type State = BTreeMap<u16, Vec<u64>>;

fn states() -> Vec<State> {
    let mut s = State::new();
    let mut out = vec![s.clone()];
    for i in 0..TXS {
        let (add, del) = keys(i);
        for k in add {
            s.entry(k).or_default().push(u64::from(i));
        }
        for k in del {
            s.remove(&k);
        }
        out.push(s.clone());
    }
    out
}

fn apply(pool: &Pool<Root>, i: u16) -> std::result::Result<(), BoxError> {
    let (add, del) = keys(i);
    pool.transaction(|tx, r| {
        for &k in &add {
            r.recs.get_or_insert_new(tx, k)?.tags.push(tx, u64::from(i))?;
        }
        for k in &del {
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
        let structure = r.recs.check_invariants(tx);
        let mut recs = BTreeMap::new();
        for (k, rec) in r.recs.iter_refs(tx) {
            recs.insert(k, rec.tags.to_vec(tx)?);
            owned.extend(rec.tags.buffer_offset(tx));
        }
        owned.extend(r.recs.block_offsets(tx)?);
        Ok::<_, ptm::Error>(((structure, recs), owned))
    })?;
    let (structure, s) = s;
    ensure!(structure.is_ok(), "map structure: {structure:?}");
    ensure_prefix(&s, expected, done)?;
    ensure_heap_owns(pool, &owned)
}

#[test]
fn overflowed_segments_survive_every_crash() {
    let expected = states();
    let done = Cell::new(0usize);
    let report = Explorer::new()
        .seed(16)
        .double_crash(false)
        .pool_size(8 << 20)
        .pool_options(PoolOptions::new().layout("map-overflow").lanes(1))
        .run::<Root>(
            |_| Ok(()),
            |pool| {
                for i in 0..TXS {
                    apply(pool, i)?;
                    done.set(usize::from(i) + 1);
                }
                let (blocks, cap, len) = pool.transaction(|tx, r| {
                    Ok::<_, ptm::Error>((
                        r.recs.block_offsets(tx)?.len(),
                        r.recs.capacity(tx),
                        r.recs.len(tx),
                    ))
                })?;
                // One segment past the full size (64 slots), no directory: the keys overflowed.
                ensure!(
                    blocks == 1 && cap >= 128 && len > 48,
                    "no overflow: {blocks} blocks, {cap} slots, {len} keys"
                );
                Ok(())
            },
            |pool| check(pool, &expected, done.get()),
        )
        .unwrap();
    println!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.is_complete(), "{report}");
}
