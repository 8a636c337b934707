//! Review of the segmented `PHashMap` and `PConcurrentMap`: reproductions of what the review
//! found (a closure of `get_or_insert_with` that changes the map, a growth step that fails after
//! freeing the old segment, a damaged shard length summed with overflow) and checks of paths the
//! other tests do not single out (tombstone purges of deep segments, tombstone reuse).

use crate::common;

use std::collections::BTreeSet;

use common::{add_block, drains, opts, shm_dir};
use ptm::{Error, PCell, Persistent, Pool};
use ptm_collections::{PConcurrentMap, PHashMap, PString, PVec};

/// `raw::hash_bytes` (part of the on-media format, docs/design.md §13.3), to pick colliding keys.
fn hash(b: &[u8]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15 ^ b.len() as u64;
    for c in b.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 32;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn home(k: u64) -> u64 {
    hash(&k.to_ne_bytes()) & 7
}

fn shome(s: &str) -> u64 {
    hash(s.as_bytes()) & 7
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: PHashMap<u64, u64>,
    s: PHashMap<PString, u64>,
}

/// The allocated blocks of `pool`'s heap.
fn live<R: Persistent>(pool: &mut Pool<R>) -> BTreeSet<u64> {
    pool.allocated_blocks()
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect()
}

/// Blocks reachable from `s`: its segments and its keys' buffers.
fn string_map_blocks(pool: &Pool<Root>) -> BTreeSet<u64> {
    pool.transaction(|tx, r| {
        let mut out = BTreeSet::new();
        for b in r.s.block_offsets(tx)? {
            add_block(&mut out, Some(b));
        }
        for k in r.s.keys(tx)? {
            add_block(&mut out, k.buffer_offset(tx));
        }
        Ok::<_, Error>(out)
    })
    .unwrap()
}

/// `get_or_insert_with` looked the key up, then ran `f`, then inserted at the slot the lookup
/// found. A closure that inserts into the same map (it can: the map is `&self`) made that slot
/// stale: on an empty map the insert failed as "corrupted", and when the closure's key took the
/// same slot, the outer key overwrote it (an entry lost, `len` one too high, and for a string
/// key its buffer leaked).
#[test]
fn get_or_insert_with_closure_inserts_into_empty_map() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("r.pool"), 8 << 20, &opts()).unwrap();

    // An empty map: the lookup found no segment.
    let got = pool.transaction(|tx, r| {
        r.m.get_or_insert_with(tx, 5, || {
            r.m.insert(tx, 6, 60).unwrap();
            50
        })
    });
    assert_eq!(got.unwrap(), 50, "insert into an empty map from the closure");
    pool.transaction(|tx, r| {
        assert_eq!((r.m.get(tx, &5)?, r.m.get(tx, &6)?), (Some(50), Some(60)));
        r.m.check_invariants(tx).unwrap();
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// As above, the closure's key taking the slot the lookup found for the outer key.
#[test]
fn get_or_insert_with_closure_takes_the_slot() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("r.pool"), 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.m.insert(tx, 5, 50)?;
        r.m.insert(tx, 6, 60)
    })
    .unwrap();

    // Two absent keys with the same home slot (a free one) in the 8-slot segment.
    let (a, b) = {
        let taken = [home(5), home(6)];
        let free: Vec<u64> = (100..10_000u64)
            .filter(|&k| !taken.contains(&home(k)) && !taken.contains(&((home(k) + 7) & 7)))
            .collect();
        let a = free[0];
        let b = *free[1..].iter().find(|&&k| home(k) == home(a)).unwrap();
        (a, b)
    };
    pool.transaction(|tx, r| {
        let v = r.m.get_or_insert_with(tx, a, || {
            r.m.insert(tx, b, 2).unwrap();
            1
        })?;
        assert_eq!(v, 1);
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.m.get(tx, &a)?, Some(1), "the outer key");
        assert_eq!(r.m.get(tx, &b)?, Some(2), "the closure's key");
        assert_eq!(r.m.len(tx), 4);
        r.m.check_invariants(tx).unwrap();
        Ok::<_, Error>(())
    })
    .unwrap();

    // String keys: the same collision must not leak the closure's key buffer.
    pool.transaction(|tx, r| r.s.insert(tx, "first", 0).map(drop))
        .unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("name-{i}")).collect();
    let fh = shome("first");
    let sa = names
        .iter()
        .find(|n| shome(n) != fh && (shome(n) + 7) & 7 != fh)
        .unwrap();
    let sb = names.iter().find(|n| *n != sa && shome(n) == shome(sa)).unwrap();
    pool.transaction(|tx, r| {
        r.s.get_or_insert_with(tx, sa.as_str(), || {
            r.s.insert(tx, sb.as_str(), 2).unwrap();
            1
        })
        .map(drop)
    })
    .unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.s.get(tx, sa)?, Some(1));
        assert_eq!(r.s.get(tx, sb)?, Some(2), "the closure's string key");
        r.s.check_invariants(tx).unwrap();
        Ok::<_, Error>(())
    })
    .unwrap();
    let owned = string_map_blocks(&pool);
    let mut pool = pool;
    let m_blocks: BTreeSet<u64> = pool
        .transaction(|tx, r| Ok::<_, Error>(r.m.block_offsets(tx)?.into_iter().collect()))
        .unwrap();
    let allocated: BTreeSet<u64> = live(&mut pool)
        .into_iter()
        .filter(|o| !m_blocks.contains(o))
        .collect();
    assert_eq!(allocated, owned, "no key buffer leaked");
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct GRoot {
    m: PHashMap<u64, PVec<u64>>,
    c: PHashMap<u64, u64>,
}

/// Asserts that every block of the maps is allocated and the maps are consistent.
fn assert_maps_allocated(pool: &mut Pool<GRoot>, what: &str) {
    let blocks: Vec<u64> = pool
        .transaction(|tx, r| {
            let mut b = r.m.block_offsets(tx)?;
            b.extend(r.c.block_offsets(tx)?);
            Ok::<_, Error>(b)
        })
        .unwrap();
    let live = live(pool);
    for b in blocks {
        assert!(
            live.contains(&b),
            "{what}: the map still reaches block {b:#x}, freed by the failed growth"
        );
    }
}

/// A growth step freed the old segment before its snapshot: when the snapshot then failed
/// (`OutOfSpace`: the undo log could not get a heap extent for the old segment's value array)
/// a caller that went on and committed (the crate promises such a caller leaks nothing) freed a
/// segment the directory still pointed at.
#[test]
fn growth_out_of_log_space_then_commit() {
    let dir = shm_dir();
    let opts = opts().lane_size(8192);
    let mut pool = Pool::<GRoot>::create(dir.path().join("g.pool"), 4 << 20, &opts).unwrap();
    // 384 empty vectors: a 512-slot segment at its load limit (the next key rebuilds it into a
    // 1024-slot segment, logging the old 12 KiB value array: more than an 8 KiB lane holds).
    pool.transaction(|tx, r| {
        for k in 0..384 {
            r.m.get_or_insert_new(tx, k)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        assert_eq!((r.m.len(tx), r.m.capacity(tx)), (384, 512));
        Ok::<_, Error>(())
    })
    .unwrap();
    // A slab with free 48 KiB blocks (where the 1024-slot segment goes), then every free chunk
    // taken: the segment can be allocated, but the log cannot grow.
    pool.transaction(|tx, _| {
        tx.alloc_bytes(40_000)?;
        // Runs of 4 and 2 chunks, then 12 KiB blocks (one-chunk slabs): no chunk is left.
        for size in [256 << 10, 128 << 10, 12288] {
            while tx.alloc_bytes(size).is_ok() {}
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let err = pool
        .transaction(|tx, r| Ok::<_, Error>(r.m.get_or_insert_new(tx, 384).err()))
        .unwrap();
    assert!(
        matches!(err, Some(Error::OutOfSpace { .. })),
        "the growth fails for want of log space: {err:?}"
    );
    assert_maps_allocated(&mut pool, "after OutOfSpace in a growth");
    pool.transaction(|tx, r| {
        assert_eq!(r.m.len(tx), 384);
        r.m.check_invariants(tx).unwrap();
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// The same hole reached by a damaged segment length (a word the map checks): a rebuild sized
/// from it could not hold the entries and failed after freeing the old segment (a caller that
/// then committed left the map on a freed block). The rebuild is now sized from the entries it
/// counts, so the insert succeeds and the map stays whole.
#[test]
fn growth_on_damaged_length() {
    let dir = shm_dir();
    let path = dir.path().join("d.pool");
    let pool = Pool::<GRoot>::create(&path, 4 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| (0..24).try_for_each(|k| r.c.insert(tx, k, k).map(drop)))
        .unwrap();
    let seg = pool
        .transaction(|tx, r| {
            assert_eq!(r.c.capacity(tx), 32);
            Ok::<_, Error>(r.c.block_offsets(tx)?[0])
        })
        .unwrap();
    pool.close().unwrap();
    let mut img = std::fs::read(&path).unwrap();
    let at = seg as usize + 24;
    assert_eq!(img[at..at + 8], 24u64.to_le_bytes(), "the segment's len word");
    img[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    std::fs::write(&path, &img).unwrap();
    let mut pool = Pool::<GRoot>::open(&path, &opts()).unwrap();
    let err = pool
        .transaction(|tx, r| Ok::<_, Error>(r.c.insert(tx, 24, 24).err()))
        .unwrap();
    assert_maps_allocated(&mut pool, "after a rebuild of a damaged segment");
    assert!(err.is_none(), "the rebuild holds the entries it counts: {err:?}");
    pool.transaction(|tx, r| {
        for k in 0..25 {
            assert_eq!(r.c.get(tx, &k)?, Some(k));
        }
        r.c.check_invariants(tx).unwrap();
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct CRoot {
    c: PConcurrentMap<u64, u64, 2>,
}

/// The handle's cells (`root`, `depth`, `len`, `cap`: docs/design.md §13), to damage them.
fn handle_cells<V>(m: &PHashMap<u64, V>) -> &[PCell<u64>; 4] {
    // SAFETY: `PHashMap` is `repr(C)` of four `PCell<u64>`-sized cells (`PPtr` and `u64`
    // words, 32 bytes, asserted by the crate) and a zero-sized marker, whatever its value type.
    unsafe { &*(m as *const PHashMap<u64, V>).cast::<[PCell<u64>; 4]>() }
}

/// `PConcurrentMap::len` summed the shards' lengths with `+`: damaged lengths (every bit
/// pattern of a handle is a valid handle) overflowed, a panic in debug builds.
#[test]
fn concurrent_len_of_damaged_shards() {
    let dir = shm_dir();
    let pool = Pool::<CRoot>::create(dir.path().join("c.pool"), 4 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..2 {
            handle_cells(r.c.lock_shard(tx, i)?)[2].set(tx, u64::MAX - 1)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    // Panicked with "attempt to add with overflow" in debug builds.
    let n = pool.transaction(|tx, r| r.c.len(tx)).unwrap();
    assert_eq!(n, u64::MAX);
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct BRoot {
    /// 515-byte slots: 64-slot segments, so a few hundred keys make deep segments.
    big: PHashMap<u16, [u64; 64]>,
    /// Owning values, 64-slot segments too.
    own: PHashMap<u16, PVec<u64>>,
}

/// Checked and correct: a full-size segment at local depth > 0, under a deeper directory, made
/// tombstone-heavy and then inserted into, is rebuilt alone (smaller), its whole directory
/// range repointed; inserting into a tombstone and the purge cost 2 drains; the structure and
/// every block stay exact.
#[test]
fn tombstone_purge_of_a_deep_segment() {
    let dir = shm_dir();
    let mut pool = Pool::<BRoot>::create(dir.path().join("b.pool"), 16 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..400u16 {
            r.big.insert(tx, k, [u64::from(k); 64])?;
            r.own.get_or_insert_new(tx, k)?.push(tx, u64::from(k))?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let cap0 = pool
        .transaction(|tx, r| Ok::<_, Error>((r.big.capacity(tx), r.own.capacity(tx))))
        .unwrap();
    // Remove most keys: every segment becomes tombstone-heavy.
    for k in (0..400u16).filter(|k| k % 8 != 0) {
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| {
                assert!(r.big.remove(tx, &k)?.is_some());
                assert!(r.own.remove_free(tx, &k)?);
                Ok::<_, Error>(())
            })
            .unwrap()
        });
        assert_eq!(
            d, 3,
            "two removals in one transaction: one snapshot each and the commit"
        );
    }
    // Reinsert other keys: tombstones are reused and segments purged, 2 drains each.
    for k in 1000..1300u16 {
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.big.insert(tx, k, [7; 64]).map(drop))
                .unwrap()
        });
        assert_eq!(d, 2, "insert {k}");
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.own.get_or_insert_new(tx, k).map(drop))
                .unwrap()
        });
        assert_eq!(d, 2, "get_or_insert_new {k}");
    }
    let cap1 = pool
        .transaction(|tx, r| {
            r.big.check_invariants(tx).unwrap();
            r.own.check_invariants(tx).unwrap();
            assert_eq!(r.big.len(tx), 50 + 300);
            for k in (0..400u16).step_by(8).chain(1000..1300) {
                assert!(r.big.get(tx, &k)?.is_some(), "{k}");
                assert!(r.own.get_ref(tx, &k)?.is_some(), "{k}");
            }
            Ok::<_, Error>((r.big.capacity(tx), r.own.capacity(tx)))
        })
        .unwrap();
    assert!(
        cap1.0 <= cap0.0 * 2 && cap1.1 <= cap0.1 * 2,
        "{cap0:?} -> {cap1:?}"
    );
    let owned = pool
        .transaction(|tx, r| {
            let mut out = BTreeSet::new();
            for b in r
                .big
                .block_offsets(tx)?
                .into_iter()
                .chain(r.own.block_offsets(tx)?)
            {
                add_block(&mut out, Some(b));
            }
            for (_, v) in r.own.iter_refs(tx) {
                add_block(&mut out, v.buffer_offset(tx));
            }
            Ok::<_, Error>(out)
        })
        .unwrap();
    common::assert_allocated_exactly(&mut pool, &owned, "after purges");
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct VRoot {
    s: PHashMap<PString, PVec<u64>>,
    c: PHashMap<u64, u64>,
}

fn vname(i: u64) -> String {
    format!("entry-{i:03}")
}

/// `remove_free` and `remove` freed the key's buffer (and the value's blocks) before their
/// snapshot: when that snapshot failed (`OutOfSpace`: the undo log needed a heap extent and the
/// heap had none) a caller that went on and committed left the entry in the map with its
/// blocks freed. Each trial fills the log a little more (updates of `c`) before the removal,
/// until the removal is the operation that runs out; that one is committed.
#[test]
fn removal_out_of_log_space_then_commit() {
    let dir = shm_dir();
    let opts = opts().lane_size(8192);
    let mut pool = Pool::<VRoot>::create(dir.path().join("v.pool"), 4 << 20, &opts).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..20 {
            r.s.get_or_insert_new(tx, vname(i))?.push(tx, i)?;
        }
        for k in 0..300 {
            r.c.insert(tx, k, 0)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, _| {
        // Runs of 4 and 2 chunks, then 12 KiB blocks (one-chunk slabs): no chunk is left.
        for size in [256 << 10, 128 << 10, 12288] {
            while tx.alloc_bytes(size).is_ok() {}
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let mut failed = 0;
    for (trial, j) in (0..300u64).enumerate() {
        let victim = vname(trial as u64 % 20);
        let r = pool.transaction(|tx, r| {
            // Removal-only transactions take log extents from the heap's metadata reserve and
            // never run out; an allocation attempt (failing on this full heap) makes this one
            // an ordinary transaction whose log cannot grow past its lane.
            assert!(matches!(tx.alloc_bytes(1 << 30), Err(Error::OutOfSpace { .. })));
            for k in 0..j {
                if r.c.insert(tx, k, j).is_err() {
                    // The updates alone ran out: nothing left to try.
                    return Ok(None);
                }
            }
            let e = if trial % 2 == 0 {
                r.s.remove_free(tx, &victim).err()
            } else {
                r.s.clear(tx).err()
            };
            match e {
                Some(Error::OutOfSpace { .. }) => Ok(Some(())),
                Some(e) => Err(e),
                None => Err(Error::Aborted),
            }
        });
        match r {
            Ok(Some(())) => failed += 1,
            Ok(None) => break,
            Err(Error::Aborted) => continue,
            Err(e) => panic!("trial {j}: {e}"),
        }
        // The failed removal was committed: whatever the map reaches must still be allocated.
        let reached = pool
            .transaction(|tx, r| {
                r.s.check_invariants(tx).unwrap();
                let mut out = r.s.block_offsets(tx)?;
                for (k, v) in r.s.iter_refs(tx) {
                    out.extend(k.buffer_offset(tx));
                    out.extend(v.buffer_offset(tx));
                }
                Ok::<_, Error>(out)
            })
            .unwrap();
        let live = live(&mut pool);
        for b in reached {
            assert!(live.contains(&b), "trial {j}: block {b:#x} reached but freed");
        }
    }
    assert!(
        failed > 0,
        "no removal ran out of log space: the test does not test"
    );
}

/// docs/design.md §13.4 says full segments of a `u64 → PVec<u64>` map have 512 slots; the rule
/// it gives (the largest power of two whose segment fits 64 KiB with 128 bytes of slack) gives
/// 1024 (33-byte slots: 33 824 bytes), and the map grows one segment to 1024 slots before it
/// first splits.
#[test]
fn full_segment_of_vector_values() {
    let dir = shm_dir();
    let pool = Pool::<GRoot>::create(dir.path().join("s.pool"), 8 << 20, &opts()).unwrap();
    let shape = |n: u64| {
        pool.transaction(|tx, r| {
            for k in 0..n {
                r.m.get_or_insert_new(tx, k)?;
            }
            Ok::<_, Error>((r.m.capacity(tx), r.m.block_offsets(tx)?.len()))
        })
        .unwrap()
    };
    assert_eq!(shape(385), (1024, 1), "one segment of 1024 slots");
    assert_eq!(
        shape(769),
        (2048, 3),
        "split: a directory and two 1024-slot segments"
    );
}

/// The same for a map of handle values read through `iter_refs` (`MapRefs`): on a damaged map
/// it yields nothing, keeps the cause in `error()` (a sound map's iteration has none) and dooms
/// the transaction.
#[test]
fn handle_iteration_errors_are_kept_and_doom_the_transaction() {
    let dir = shm_dir();
    let pool = Pool::<GRoot>::create(dir.path().join("r.pool"), 4 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..10 {
            r.m.get_or_insert_new(tx, k)?.push(tx, k)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let sum = pool.transaction(|tx, r| {
        let mut refs = r.m.iter_refs(tx);
        let mut sum = 0;
        for (_, v) in refs.by_ref() {
            sum += v.get(tx, 0)?.unwrap_or(0);
        }
        assert!(refs.error().is_none(), "a sound map's iteration has no error");
        Ok::<_, Error>(sum)
    });
    assert_eq!(sum.unwrap(), 45, "an intact map iterates fully");
    pool.transaction(|tx, r| handle_cells(&r.m)[0].set(tx, 0xbeef_0000_0000_1000))
        .unwrap();
    let r = pool.transaction(|tx, r| {
        r.c.insert(tx, 1, 1)?;
        let mut refs = r.m.iter_refs(tx);
        assert!(refs.next().is_none());
        assert!(refs.error().is_some(), "the cause is kept");
        assert!(refs.next().is_none(), "and the iterator stays finished");
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
    let n = pool.transaction(|tx, r| Ok::<_, Error>(r.c.len(tx))).unwrap();
    assert_eq!(n, 0, "the doomed transaction's insert was rolled back");
}

/// Iteration over a damaged map (a table pointer into another pool) stops, reports the error
/// through `error()`, and dooms the transaction: `Pool::transaction` cannot return `Ok` with a
/// silently shortened iteration, and nothing the transaction did commits.
#[test]
fn iteration_errors_doom_the_transaction() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("i.pool"), 4 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..10 {
            r.m.insert(tx, k, k)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let sum = pool.transaction(|tx, r| Ok::<_, Error>(r.m.iter(tx).map(|(_, v)| v).sum::<u64>()));
    assert_eq!(sum.unwrap(), 45, "an intact map iterates fully");
    pool.transaction(|tx, r| handle_cells(&r.m)[0].set(tx, 0xbeef_0000_0000_1000))
        .unwrap();
    let r = pool.transaction(|tx, r| {
        r.s.insert(tx, "written before the iteration", 1)?;
        let mut it = r.m.iter(tx);
        assert_eq!(it.by_ref().count(), 0);
        assert!(it.error().is_some(), "the cause is kept");
        assert!(it.next().is_none(), "and the iterator stays finished");
        let mut refs = r.m.iter(tx);
        assert!(refs.next().is_none() && refs.error().is_some());
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
    let n = pool.transaction(|tx, r| Ok::<_, Error>(r.s.len(tx))).unwrap();
    assert_eq!(n, 0, "the doomed transaction's insert was rolled back");
}
