//! `PHashMap`'s verifier (`check_invariants`, `block_offsets`, the directory walk) names each
//! kind of damage it exists to find (issue 19, the mutation pass over the rest of `map.rs`):
//! directory entries that point into another segment's range, a segment reached from two
//! ranges, keys outside their segment's range or cut off from their home slot, a handle whose
//! length or capacity disagrees with the segments.

use crate::common;

use std::path::Path;

use common::{opts, shm_dir, Root, POOL_SIZE};
use ptm::{Error, Pool};
use ptm_collections::PKey;

/// Offset of `m` (a `PHashMap<u64, u64>`) in the root, and of its `depth` word.
const M: u64 = 24;
const DEPTH: u64 = 8;
/// A fixed seed, so that the map's shape is the same on every run.
const SEED: u64 = 0x5eed_1234_abcd;
/// Keys for a directory of global depth 3 whose first three segments have local depth 2 (ranges
/// of two entries) and the last two local depth 3, under [`SEED`].
const WIDE: u64 = 6000;

/// A pool whose `m` holds `n` keys under the fixed seed; returns the root's offset and the
/// map's blocks (the directory first).
fn make(path: &Path, n: u64) -> (u64, Vec<u64>) {
    let pool = Pool::<Root>::create(path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.m.set_hash_seed(tx, SEED)?;
        (0..n).try_for_each(|k| r.m.insert(tx, k, k).map(drop))
    })
    .unwrap();
    let blocks = pool
        .transaction(|tx, r| {
            r.m.check_invariants(tx)?;
            r.m.block_offsets(tx)
        })
        .unwrap();
    let root = pool.geometry().root_offset;
    pool.close().unwrap();
    (root, blocks)
}

fn word(img: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap())
}

fn poke(img: &mut [u8], at: u64, v: u64) {
    img[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// The structure and message of a `CorruptCollection` error, or a panic.
fn corrupt(e: Error) -> (&'static str, String) {
    match e {
        Error::CorruptCollection { structure, what, .. } => (structure, what.into_owned()),
        other => panic!("expected CorruptCollection, got {other:?}"),
    }
}

/// The directory's raw entries (global depth `g` from the handle).
fn directory(img: &[u8], root: u64, dir: u64) -> Vec<u64> {
    let g = word(img, root + M + DEPTH) & 0xff;
    (0..1u64 << g).map(|d| word(img, dir + 8 * d)).collect()
}

/// Writes `img` to `path`, opens it and expects `block_offsets` and `check_invariants` to
/// report the handle or directory as corrupt with a message containing `what`.
fn expect_directory_damage(path: &Path, img: &[u8], what: &str) {
    std::fs::write(path, img).unwrap();
    let pool = Pool::<Root>::open(path, &opts()).unwrap();
    let (s, msg) = corrupt(pool.transaction(|tx, r| r.m.block_offsets(tx)).unwrap_err());
    assert_eq!(s, "PHashMap handle or directory", "{msg}");
    assert!(msg.contains(what), "block_offsets: {msg}");
    let (s, msg) = corrupt(pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap_err());
    assert_eq!(s, "PHashMap handle or directory", "{msg}");
    assert!(msg.contains(what), "check_invariants: {msg}");
    pool.close().unwrap();
}

/// A directory entry inside a segment's range (not its first) that points at another segment,
/// and a whole range pointing at a segment already reached from its own: the directory walk
/// names both ("does not own exactly its range"), where the lookups would silently miss keys.
#[test]
fn directory_entries_pointing_outside_their_segment_are_named() {
    let dir = shm_dir();
    let path = dir.path().join("d.pool");
    let (root, blocks) = make(&path, WIDE);
    let clean = std::fs::read(&path).unwrap();
    let entries = directory(&clean, root, blocks[0]);
    // A range of two or more entries (a segment shallower than the directory).
    let start = (0..entries.len() - 1)
        .find(|&d| entries[d] == entries[d + 1])
        .expect("a segment of local depth below the global one");
    let other = *entries.iter().find(|&&e| e != entries[start]).unwrap();

    // A stray pointer inside the range: the range's first entry still points at its segment.
    let mut img = clean.clone();
    poke(&mut img, blocks[0] + 8 * (start as u64 + 1), other);
    expect_directory_damage(&path, &img, "does not own exactly its range");

    // Another segment's whole range pointed at a segment of the smallest range, so that the
    // walk meets it again at an aligned index, over a range that points only at it: reached
    // twice, no entry foreign.
    let size = |p: u64| entries.iter().filter(|&&e| e == p).count();
    let small = *entries.iter().min_by_key(|&&e| size(e)).unwrap();
    let victim = *entries
        .iter()
        .find(|&&e| e != small && size(e) >= size(small))
        .unwrap();
    let mut img = clean.clone();
    for (d, &e) in entries.iter().enumerate() {
        if e == victim {
            poke(&mut img, blocks[0] + 8 * d as u64, small);
        }
    }
    expect_directory_damage(&path, &img, "does not own exactly its range");

    // Repaired: verifies again.
    std::fs::write(&path, &clean).unwrap();
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap();
}

/// `segment_layouts` counts every segment once, by layout: this build's map of five segments
/// is `(0, 5)`, the same keys written in the old layout `(5, 0)` (`block_offsets` lists the
/// same five segments after the directory).
#[test]
fn segment_layouts_count_each_segment_once() {
    let dir = shm_dir();
    for legacy in [false, true] {
        let path = dir.path().join(format!("l{legacy}.pool"));
        ptm_collections::write_legacy_segments(legacy);
        let (_, blocks) = make(&path, WIDE);
        ptm_collections::write_legacy_segments(false);
        assert_eq!(blocks.len(), 6, "a directory and five segments");
        let pool = Pool::<Root>::open(&path, &opts()).unwrap();
        let layouts = pool.transaction(|tx, r| r.m.segment_layouts(tx)).unwrap();
        assert_eq!(layouts, if legacy { (5, 0) } else { (0, 5) });
    }
}

/// A segment's capacity, control bytes' offset and pairs' offset (this build's pair layout of a
/// `PHashMap<u64, u64>`: 16-byte pairs a cache line after the control bytes).
fn geometry(img: &[u8], seg: u64) -> (u64, u64, u64) {
    let cap = word(img, seg);
    (cap, seg + 32, (seg + 32 + cap).next_multiple_of(64))
}

/// The full slots of the segment at `seg`.
fn full_slots(img: &[u8], seg: u64) -> Vec<u64> {
    let (cap, ctrl, _) = geometry(img, seg);
    (0..cap).filter(|&i| img[(ctrl + i) as usize] == 1).collect()
}

/// Expects `check_invariants` to name the segment `seg` with a message containing `what`.
fn expect_segment_damage(path: &Path, img: &[u8], seg: u64, what: &str) {
    std::fs::write(path, img).unwrap();
    let pool = Pool::<Root>::open(path, &opts()).unwrap();
    match pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap_err() {
        Error::CorruptCollection {
            structure,
            offset,
            what: msg,
        } => {
            assert_eq!((structure, offset), ("PHashMap segment", seg), "{msg}");
            assert!(msg.contains(what), "{msg}");
        }
        other => panic!("expected CorruptCollection, got {other:?}"),
    }
    pool.close().unwrap();
}

/// A key written over a key of another segment (the map's five segments own the directory
/// ranges 0..2, 2..4, 4..6, 6 and 7): the verifier names the segment that holds a key outside
/// its range, whether the key's index is below the range (a key of 4..6 in the segment of 6),
/// just past it (a key of 6 in the segment of 4..6) or further past it (a key of 7 in the
/// segment of 0..2).
#[test]
fn a_key_outside_its_segments_range_is_named() {
    let dir = shm_dir();
    let path = dir.path().join("k.pool");
    let (root, blocks) = make(&path, WIDE);
    let clean = std::fs::read(&path).unwrap();
    let entries = directory(&clean, root, blocks[0]);
    let runs: Vec<usize> = (0..entries.len())
        .filter(|&d| d == 0 || entries[d] != entries[d - 1])
        .collect();
    assert_eq!(runs, [0, 2, 4, 6, 7], "the shape this test expects");
    let seg_at = |d: usize| entries[d] & ((1 << 48) - 1);
    // (the segment whose key is copied, the segment it is written into)
    for (from, into) in [(4, 6), (6, 4), (7, 0)] {
        let (src, dst) = (seg_at(from), seg_at(into));
        let (_, _, src_pairs) = geometry(&clean, src);
        let (_, _, dst_pairs) = geometry(&clean, dst);
        let key = word(&clean, src_pairs + 16 * full_slots(&clean, src)[0]);
        let mut img = clean.clone();
        poke(&mut img, dst_pairs + 16 * full_slots(&clean, dst)[0], key);
        expect_segment_damage(&path, &img, dst, "outside");
    }
}

/// An entry moved from its home slot (a full slot between two empty ones) to the next slot,
/// its home left empty: the verifier names the slot cut off from its home, in every segment.
#[test]
fn a_key_cut_off_from_its_home_slot_is_named() {
    let dir = shm_dir();
    let path = dir.path().join("p.pool");
    let (_, blocks) = make(&path, WIDE);
    let clean = std::fs::read(&path).unwrap();
    for &seg in &blocks[1..] {
        let (cap, ctrl, pairs) = geometry(&clean, seg);
        let at = |i: u64| clean[(ctrl + (i & (cap - 1))) as usize];
        // A key at its home: full, after an empty slot (linear probing never passes one), with
        // an empty slot after it.
        let home = (1..cap - 1)
            .find(|&i| at(i) == 1 && at(i - 1) == 0 && at(i + 1) == 0)
            .unwrap();
        let to = home + 1;
        let mut img = clean.clone();
        img[(ctrl + home) as usize] = 0;
        img[(ctrl + to) as usize] = 1;
        let pair = |i: u64| (pairs + 16 * i) as usize;
        img.copy_within(pair(home)..pair(home) + 16, pair(to));
        expect_segment_damage(
            &path,
            &img,
            seg,
            &format!("slot {to} unreachable from its home slot {home}"),
        );
    }
}

/// The directory index of `k` in the map at global depth `g` (the top `g` bits of its hash
/// under [`SEED`]).
fn dir_index(k: u64, g: u32) -> usize {
    (<u64 as PKey>::seeded_borrowed_hash(&k, SEED) >> (64 - g)) as usize
}

/// A segment whose local depth was damaged into another valid depth (its directory range then
/// seems one entry, or two, where the directory gives it two, or one), or whose directory
/// range was widened past what its depth gives: the growth step checks
/// the directory range it is about to rewrite and refuses it (`CorruptCollection` naming the
/// directory), whichever end of the true range the inserted keys reach (the entry before the
/// computed range still pointing at the segment, the entry after it, or an entry inside it
/// pointing elsewhere). Lookups do not read the local depth, so only a growth step sees it.
#[test]
fn a_growth_step_refuses_a_directory_range_its_local_depth_does_not_match() {
    let dir = shm_dir();
    let path = dir.path().join("r.pool");
    let (root, blocks) = make(&path, WIDE);
    let clean = std::fs::read(&path).unwrap();
    let entries = directory(&clean, root, blocks[0]);
    let seg_at = |d: usize| entries[d] & ((1 << 48) - 1);
    assert_eq!(word(&clean, root + M + DEPTH) & 0xff, 3);
    // (directory index of the keys inserted, the damaged local depth of their segment): the
    // segment of 2..4 (local depth 2) read as depth 3 is one entry, 2..3 or 3..4, with the
    // other entry after or before it; the segment of 6 (depth 3) read as depth 2 is 6..8, whose
    // entry 7 is another segment's.
    // Last, the depth left alone and the directory damaged instead: entries 6 and 7 pointed at
    // the segment of 4..6, so that the entry after its range (6) is its own, in the directory's
    // second half (where `base * n`, not `base + n`, would pass the directory's end).
    for (d, bad) in [(2usize, Some(3u64)), (3, Some(3)), (6, Some(2)), (4, None)] {
        let seg = seg_at(d);
        let mut img = clean.clone();
        match bad {
            Some(bad) => poke(&mut img, seg + 8, (word(&clean, seg + 8) & !0xff) | bad),
            None => {
                for e in [6, 7] {
                    poke(&mut img, blocks[0] + 8 * e, entries[d]);
                }
            }
        }
        std::fs::write(&path, &img).unwrap();
        let pool = Pool::<Root>::open(&path, &opts()).unwrap();
        let keys: Vec<u64> = (WIDE..).filter(|&k| dir_index(k, 3) == d).take(5000).collect();
        let e = pool
            .transaction(|tx, r| keys.iter().try_for_each(|&k| r.m.insert(tx, k, k).map(drop)))
            .unwrap_err();
        let (s, msg) = corrupt(e);
        assert_eq!(s, "PHashMap handle or directory", "index {d}: {msg}");
        assert!(msg.contains("does not match its local depth"), "index {d}: {msg}");
        pool.close().unwrap();
    }
}
