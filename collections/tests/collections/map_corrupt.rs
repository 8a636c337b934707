//! A `PHashMap` whose handle or segment header was damaged reports
//! `Error::CorruptCollection` naming the structure, the damaged block and what is wrong, from
//! lookups and from `check_invariants`; an undamaged map passes `check_invariants`.

use crate::common;

use std::path::Path;

use common::{opts, poke, shm_dir, Root, POOL_SIZE};
use ptm::{Error, Pool};

/// Offset of `m` (a `PHashMap<u64, u64>`) in the root, and of its `depth` word.
const M: u64 = 24;
const DEPTH: u64 = 8;

/// A pool whose `m` holds 3000 keys (several segments under a directory); returns the root's
/// offset and the map's blocks (the directory first).
fn make(path: &Path) -> (u64, Vec<u64>) {
    let pool = Pool::<Root>::create(path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| (0..3000u64).try_for_each(|k| r.m.insert(tx, k, k).map(drop)))
        .unwrap();
    let blocks = pool
        .transaction(|tx, r| {
            r.m.check_invariants(tx)?;
            r.m.block_offsets(tx)
        })
        .unwrap();
    assert!(blocks.len() >= 3, "a directory and segments: {blocks:?}");
    let root = pool.geometry().root_offset;
    pool.close().unwrap();
    (root, blocks)
}

/// The structure, offset and message of a `CorruptCollection` error, or a panic.
fn corrupt(e: Error) -> (&'static str, u64, String) {
    match e {
        Error::CorruptCollection {
            structure,
            offset,
            what,
        } => (structure, offset, what.into_owned()),
        other => panic!("expected CorruptCollection, got {other:?}"),
    }
}

#[test]
fn damaged_depth_capacity_and_counts_are_named() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    let (root, blocks) = make(&path);
    let seg = blocks[1];
    let img = std::fs::read(&path).unwrap();
    let word = |at: u64| u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap());
    let (depth_word, seg_cap, seg_len) = (word(root + M + DEPTH), word(seg), word(seg + 24));
    assert!(depth_word >> 8 != 0, "a seeded map");

    // A global depth above 32 (seed bits kept).
    poke(&path, root + M + DEPTH, (depth_word & !0xff) | 40);
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let (s, _, what) = corrupt(pool.transaction(|tx, r| r.m.get(tx, &7)).unwrap_err());
    assert_eq!(s, "PHashMap handle or directory");
    assert!(what.contains("global depth 40"), "{what}");
    let e = pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap_err();
    assert!(
        e.to_string().contains("corrupt PHashMap handle or directory"),
        "{e}"
    );
    pool.close().unwrap();
    poke(&path, root + M + DEPTH, depth_word);

    // A segment capacity that is not a power of two of at least 8.
    poke(&path, seg, 6);
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let e = pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap_err();
    let (s, off, what) = corrupt(e);
    assert_eq!((s, off), ("PHashMap segment", seg));
    assert!(what.contains("capacity 6"), "{what}");
    pool.close().unwrap();
    poke(&path, seg, seg_cap);

    // A segment length that does not match its full slots: only the verifier sees it.
    poke(&path, seg + 24, seg_len + 1);
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let found = pool.transaction(|tx, r| r.m.get(tx, &7)).unwrap();
    assert_eq!(found, Some(7), "lookups do not read the counts");
    let (s, off, what) = corrupt(pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap_err());
    assert_eq!((s, off), ("PHashMap segment", seg));
    assert!(what.contains("header len/used"), "{what}");
    pool.close().unwrap();
    poke(&path, seg + 24, seg_len);

    // Repaired: the verifier passes again.
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap();
}

/// Each damaged word of a segment header that `open` or the directory walk checks is named
/// (`PHashMap segment`, the segment's offset, what is wrong) by a lookup and by the verifier,
/// whichever segment the lookup reaches: a capacity that is a power of two below 8 or at least
/// 8 but not a power of two, unknown layout flags in the depth word, a local depth above the
/// global one. The repaired map reads as before.
#[test]
fn damaged_segment_headers_are_named() {
    let dir = shm_dir();
    let path = dir.path().join("h.pool");
    let (root, blocks) = make(&path);
    let img = std::fs::read(&path).unwrap();
    let word = |at: u64| u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap());
    let global = word(root + M + DEPTH) & 0xff;
    // Damage every segment alike, so that any lookup reaches a damaged one.
    let segs = &blocks[1..];
    let (cap, depth) = (word(segs[0]), word(segs[0] + 8));
    assert!(segs.iter().all(|&s| word(s) == cap), "full-size segments");
    // (header field, damaged word, what the error says, whether a lookup reads it: a lookup
    // opens the segment but does not read its local depth).
    let cases: [(u64, u64, &str, bool); 5] = [
        (0, 4, "capacity 4", true),
        (0, 24, "capacity 24", true),
        (0, cap + 1, "is not a power of two", true),
        (8, depth | 1 << 9, "unknown layout flags", true),
        (8, (depth & !0xff) | (global + 1), "above the global depth", false),
    ];
    for (field, bad, what, looked_up) in cases {
        let saved: Vec<u64> = segs.iter().map(|&s| word(s + field)).collect();
        for &s in segs {
            poke(&path, s + field, bad);
        }
        let pool = Pool::<Root>::open(&path, &opts()).unwrap();
        // An insert reads the local depth when it grows the segment: make it grow.
        let e = if looked_up {
            pool.transaction(|tx, r| r.m.get(tx, &7)).unwrap_err()
        } else {
            pool.transaction(|tx, r| (3000..4000u64).try_for_each(|k| r.m.insert(tx, k, k).map(drop)))
                .unwrap_err()
        };
        let (s, off, msg) = corrupt(e);
        assert_eq!(s, "PHashMap segment", "{what}: {msg}");
        assert!(segs.contains(&off), "{what}: offset {off:#x}");
        assert!(msg.contains(what), "{what}: {msg}");
        let (s, _, msg) = corrupt(pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap_err());
        assert_eq!(s, "PHashMap segment", "{what}: {msg}");
        assert!(msg.contains(what), "verifier, {what}: {msg}");
        pool.close().unwrap();
        for (&s, &w) in segs.iter().zip(&saved) {
            poke(&path, s + field, w);
        }
    }
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.m.check_invariants(tx)?;
        (0..3000u64).try_for_each(|k| {
            assert_eq!(r.m.get(tx, &k)?, Some(k));
            Ok::<_, Error>(())
        })
    })
    .unwrap();
}

/// Segments whose control bytes were all damaged into tombstones (no empty slot left, which
/// the 3/4 load bound never lets a written map reach): a lookup probes each slot once and
/// answers (the keys are unreachable, so absent), instead of probing forever; the verifier
/// names the damaged counts.
#[test]
fn a_segment_without_an_empty_slot_ends_its_probe() {
    let dir = shm_dir();
    let path = dir.path().join("t.pool");
    let (_, blocks) = make(&path);
    let mut img = std::fs::read(&path).unwrap();
    for &s in &blocks[1..] {
        let cap = u64::from_le_bytes(img[s as usize..s as usize + 8].try_into().unwrap());
        let ctrl = s as usize + 32;
        img[ctrl..ctrl + cap as usize].fill(2);
    }
    std::fs::write(&path, &img).unwrap();
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    for k in [7u64, 2999, 5000] {
        assert_eq!(
            pool.transaction(|tx, r| r.m.get(tx, &k)).unwrap(),
            None,
            "get {k}"
        );
    }
    let (s, _, what) = corrupt(pool.transaction(|tx, r| r.m.check_invariants(tx)).unwrap_err());
    assert_eq!(s, "PHashMap segment");
    assert!(what.contains("header len/used"), "{what}");
}
