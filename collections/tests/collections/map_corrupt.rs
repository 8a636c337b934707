//! A `PHashMap` whose handle or segment header was damaged reports
//! `Error::CorruptCollection` naming the structure, the damaged block and what is wrong, from
//! lookups and from `check_invariants`; an undamaged map passes `check_invariants`.

use crate::common;

use std::path::Path;

use common::{opts, shm_dir, Root, POOL_SIZE};
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

fn poke(path: &Path, at: u64, v: u64) {
    let mut img = std::fs::read(path).unwrap();
    img[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    std::fs::write(path, img).unwrap();
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
