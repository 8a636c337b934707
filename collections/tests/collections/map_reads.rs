//! `PHashMap` outside its structural updates and its verifier (issue 19, the mutation pass over
//! the rest of `map.rs`): the seeds fresh maps draw, and what lookups and iteration give.

use crate::common;

use std::collections::HashSet;

use common::{create, opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PHashMap, PVec};

/// Each map draws its own seed at its first insert: nonzero, below `2^56`, and different from
/// map to map (two maps of one root, and the same map in two pools), so that no two maps share
/// a hash function an attacker could learn from one of them (design §13.3).
#[test]
fn each_map_draws_its_own_seed() {
    let dir = shm_dir();
    let mut seeds = HashSet::new();
    for name in ["a.pool", "b.pool", "c.pool"] {
        let (pool, _) = create(&dir, name);
        let (m, m2) = pool
            .transaction(|tx, r| {
                r.m.insert(tx, 1, 1)?;
                r.m2.insert(tx, [1, 2, 3], 4)?;
                Ok::<_, Error>((r.m.hash_seed(tx), r.m2.hash_seed(tx)))
            })
            .unwrap();
        for s in [m, m2] {
            assert!(s != 0 && s >> 56 == 0, "seed {s:#x}");
            assert!(seeds.insert(s), "seed {s:#x} drawn twice");
        }
    }
}

/// 60-byte keys and 1-byte values (61-byte pairs, 62 bytes a slot with its control byte), and
/// 62-byte keys (64 bytes a slot).
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct WideRoot {
    m60: PHashMap<[u8; 60], u8>,
    m62: PHashMap<[u8; 62], u8>,
    /// Handle values, for `iter_refs`.
    h: PHashMap<u64, PVec<u64>>,
}

/// A map grows by rebuilding its one segment, doubling it, until the segment is full-size: the
/// largest power of two of slots whose segment, header and 128 bytes of alignment slack
/// counted, fits 64 KiB (design §13.4). For 62-byte slots that is 1024 (63,648 bytes), so 700
/// keys (under 3/4 of 1024) still live in one segment of 1024 slots, with no directory; for
/// 64-byte slots it is 512 (1024 would take 65,696 bytes), so the same 700 keys split it.
#[test]
fn full_size_segments_are_the_largest_that_fit_64_kib() {
    let dir = shm_dir();
    let pool = Pool::<WideRoot>::create(dir.path().join("w.pool"), POOL_SIZE, &opts()).unwrap();
    let key = |i: u64| {
        let mut k = [0u8; 62];
        k[..8].copy_from_slice(&i.to_le_bytes());
        k
    };
    for i in 0..700u64 {
        pool.transaction(|tx, r| {
            let k60: [u8; 60] = key(i)[..60].try_into().unwrap();
            r.m60.insert(tx, k60, 1)?;
            r.m62.insert(tx, key(i), 1).map(drop)
        })
        .unwrap();
    }
    let (m60, m62) = pool
        .transaction(|tx, r| {
            r.m60.check_invariants(tx)?;
            r.m62.check_invariants(tx)?;
            Ok::<_, Error>((
                (r.m60.capacity(tx), r.m60.block_offsets(tx)?.len()),
                (r.m62.capacity(tx), r.m62.block_offsets(tx)?.len()),
            ))
        })
        .unwrap();
    assert_eq!(m60, (1024, 1), "one segment of 1024 62-byte slots");
    assert!(
        m62.0 % 512 == 0 && m62.0 >= 1024 && m62.1 >= 3,
        "segments of 512 64-byte slots under a directory: {m62:?}"
    );
}

/// `is_empty` and `len` of a map before its first insert, with entries, and emptied again.
#[test]
fn is_empty_follows_the_entries() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "e.pool");
    pool.transaction(|tx, r| {
        assert!(r.m.is_empty(tx) && r.m.len(tx) == 0, "a new map");
        r.m.insert(tx, 7, 1)?;
        assert!(!r.m.is_empty(tx) && r.m.len(tx) == 1, "one entry");
        r.m.remove(tx, &7)?;
        assert!(r.m.is_empty(tx) && r.m.len(tx) == 0, "emptied");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Iteration reads each full slot once and nothing past the last control byte: in a 32-slot
/// segment of this build's layout the pairs start right after the control bytes, so the byte
/// after them is the first key's low byte. Keys whose low byte is 1 (`FULL`), one of them in
/// slot 0 (a seed is searched for that), are iterated, listed and copied out exactly.
#[test]
fn iteration_reads_nothing_past_the_control_bytes() {
    let dir = shm_dir();
    let keys: Vec<u64> = (0..20).map(|i| 1 + 256 * i).collect();
    for seed in 1..200u64 {
        let (pool, path) = create(&dir, &format!("i{seed}.pool"));
        let (seg, cap) = pool
            .transaction(|tx, r| {
                r.m.set_hash_seed(tx, seed)?;
                keys.iter().try_for_each(|&k| r.m.insert(tx, k, k).map(drop))?;
                Ok::<_, Error>((r.m.block_offsets(tx)?[0], r.m.capacity(tx)))
            })
            .unwrap();
        pool.close().unwrap();
        let img = std::fs::read(&path).unwrap();
        let (ctrl, first_key) = (img[seg as usize + 32], img[seg as usize + 64]);
        if cap != 32 || ctrl != 1 || first_key != 1 {
            continue;
        }
        let pool = ptm::Pool::<common::Root>::open(&path, &opts()).unwrap();
        pool.transaction(|tx, r| {
            let mut seen: Vec<u64> =
                r.m.iter(tx)
                    .map(|(k, v)| {
                        assert_eq!(k, v);
                        k
                    })
                    .collect();
            seen.sort_unstable();
            assert_eq!(seen, keys, "iter");
            let mut owned = r.m.to_vec_owned(tx)?;
            owned.sort_unstable();
            assert_eq!(
                owned,
                keys.iter().map(|&k| (k, k)).collect::<Vec<_>>(),
                "to_vec_owned"
            );
            Ok::<_, Error>(())
        })
        .unwrap();
        return;
    }
    panic!("no seed put a key in slot 0");
}

/// `Debug` names the map and its iterators without reading the pool: `PHashMap { .. }`, and
/// `MapIter`/`MapRefs` with their position.
#[test]
fn debug_names_the_map_and_its_iterators() {
    let dir = shm_dir();
    let pool = Pool::<WideRoot>::create(dir.path().join("d.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.h.get_or_insert_new(tx, 1u64)?.push(tx, 5)?;
        assert_eq!(format!("{:?}", r.h), "PHashMap { .. }");
        let it = r.m60.iter(tx);
        assert!(format!("{it:?}").starts_with("MapIter { at: "), "{it:?}");
        let refs = r.h.iter_refs(tx);
        assert!(format!("{refs:?}").starts_with("MapRefs { at: "), "{refs:?}");
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `MapIter::size_hint` counts down by one per entry handed out, to `(0, Some(0))`.
#[test]
fn iter_size_hint_counts_down() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "h.pool");
    pool.transaction(|tx, r| {
        (0..5u64).try_for_each(|k| r.m.insert(tx, k, k).map(drop))?;
        let mut it = r.m.iter(tx);
        for left in (0..=5usize).rev() {
            assert_eq!(it.size_hint(), (left, Some(left)));
            assert_eq!(it.next().is_some(), left > 0);
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}
