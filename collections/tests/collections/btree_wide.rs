//! Wide internal nodes (design §13.2): a tree of keys up to 32 bytes grows internal nodes of up
//! to 63 keys, one of larger keys keeps them at 15, and a tree whose internal nodes are narrow
//! (as every build before wide nodes grew them) keeps them narrow through growth and shrinking,
//! against a `BTreeMap` model. A length word with unknown high bits is a named error.

use crate::common;

use std::collections::BTreeMap;

use common::{opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{walk_pool, PBTreeMap, PString};

/// A 40-byte key: past the 32 bytes whose trees get wide internal nodes.
type Big = [u64; 5];

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    t: PBTreeMap<u64, u64>,
    b: PBTreeMap<Big, u64>,
}

/// The high half of a wide internal node's length word.
const WIDE_TAG: u64 = 0x5749_4445;

/// Scattered distinct keys: `i` times an odd constant (a bijection on `u64`).
fn scattered(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn big(k: u64) -> Big {
    [k, !k, k >> 3, 7, k]
}

/// Every internal node's key count (all levels but the last) and the depth.
fn internal_counts(shape: &[Vec<usize>]) -> (Vec<usize>, usize) {
    let inner = shape[..shape.len().saturating_sub(1)]
        .iter()
        .flatten()
        .copied()
        .collect();
    (inner, shape.len())
}

#[test]
fn small_keys_get_wide_internal_nodes_and_large_keys_narrow_ones() {
    let dir = shm_dir();
    let mut pool = Pool::<Root>::create(dir.path().join("w.pool"), POOL_SIZE, &opts()).unwrap();
    let (small, large) = pool
        .transaction(|tx, r| {
            for i in 0..3000 {
                r.t.insert(tx, scattered(i), i)?;
                r.b.insert(tx, big(scattered(i)), i)?;
            }
            Ok::<_, Error>((
                r.t.check_invariants(tx).unwrap(),
                r.b.check_invariants(tx).unwrap(),
            ))
        })
        .unwrap();
    let (inner, depth) = internal_counts(&small);
    // About 280 leaves: one wide level above them holds them all under a root.
    assert_eq!(depth, 3, "{small:?}");
    assert!(inner.iter().any(|&n| n > 15), "no wide node: {small:?}");
    assert!(inner.iter().all(|&n| n <= 63), "{small:?}");
    let (inner, depth) = internal_counts(&large);
    assert_eq!(depth, 4, "narrow internal nodes: {large:?}");
    assert!(inner.iter().all(|&n| n <= 15), "{large:?}");
    pool.transaction(|tx, r| {
        for i in (0..3000).step_by(7) {
            assert_eq!(r.t.get(tx, &scattered(i))?, Some(i));
            assert_eq!(r.b.get(tx, &big(scattered(i)))?, Some(i));
        }
        r.t.check(tx)?;
        r.b.check(tx)
    })
    .unwrap();
    // The schema-driven walk (`ptm check`) reads both kinds of node.
    let walked = walk_pool(&mut pool).unwrap();
    assert_eq!(walked.entries, 6000, "{walked:?}");
    assert!(walked.unreachable.is_empty(), "{walked:?}");
    let nodes = small.iter().chain(&large).map(Vec::len).sum::<usize>() as u64;
    assert_eq!(walked.blocks, nodes, "{walked:?}");
}

/// Rewrites the wide root node at `root` of the closed pool at `path` in place in the narrow
/// layout (`[len][0][keys: 15][values: 15][children: 16]`), as a build before wide nodes wrote
/// internal nodes.
fn narrow_root(path: &std::path::Path, root: u64) {
    let mut img = std::fs::read(path).unwrap();
    let at = root as usize;
    let word = |img: &[u8], i: usize| u64::from_le_bytes(img[at + 8 * i..at + 8 * i + 8].try_into().unwrap());
    let w0 = word(&img, 0);
    assert_eq!(w0 >> 32, WIDE_TAG, "a wide root");
    let len = (w0 & 0xffff_ffff) as usize;
    assert!(len <= 15, "{len} keys fit a narrow node");
    // Wide layout: keys from byte 16 (word 2), children from byte 520 (word 65).
    let keys: Vec<u64> = (0..len).map(|i| word(&img, 2 + i)).collect();
    let kids: Vec<u64> = (0..=len).map(|i| word(&img, 65 + i)).collect();
    img[at..at + 16 + 63 * 8 + 64 * 8].fill(0);
    let mut put = |i: usize, w: u64| img[at + 8 * i..at + 8 * i + 8].copy_from_slice(&w.to_le_bytes());
    put(0, len as u64);
    for (i, k) in keys.iter().enumerate() {
        put(2 + i, *k);
    }
    // Narrow layout: children from byte 256 (word 32).
    for (i, c) in kids.iter().enumerate() {
        put(32 + i, *c);
    }
    std::fs::write(path, &img).unwrap();
}

/// A tree whose root an older build wrote: the same 2-level tree with its root rewritten in
/// place in the narrow layout (`[len][0][keys: 15][values: 15][children: 16]`). Grown to 4
/// levels, every internal node it gets is narrow; emptied by removals, it collapses level by
/// level; regrown from nothing, its new root is wide.
#[test]
fn a_tree_with_narrow_internal_nodes_keeps_them_narrow() {
    let dir = shm_dir();
    let path = dir.path().join("narrow.pool");
    let mut model = BTreeMap::new();
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let root = pool
        .transaction(|tx, r| {
            for k in 0..100u64 {
                r.t.insert(tx, k * 2, k)?;
            }
            let shape = r.t.check_invariants(tx).unwrap();
            assert_eq!(shape.len(), 2, "{shape:?}");
            Ok::<_, Error>(r.t.node_offsets(tx)?[0])
        })
        .unwrap();
    model.extend((0..100u64).map(|k| (k * 2, k)));
    pool.close().unwrap();

    narrow_root(&path, root);

    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| r.t.check(tx)).unwrap();
    // Grow: scattered keys, in transactions of 100.
    for chunk in (0..3000u64).collect::<Vec<_>>().chunks(100) {
        pool.transaction(|tx, r| {
            for &i in chunk {
                let k = scattered(i) | 1;
                assert_eq!(r.t.insert(tx, k, i)?, model.insert(k, i));
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    let shape = pool
        .transaction(|tx, r| Ok::<_, Error>(r.t.check_invariants(tx).unwrap()))
        .unwrap();
    let (inner, depth) = internal_counts(&shape);
    assert_eq!(depth, 4, "narrow internal nodes make 4 levels: {shape:?}");
    assert!(inner.iter().all(|&n| n <= 15), "{shape:?}");
    let walked = walk_pool(&mut pool).unwrap();
    assert_eq!(walked.entries, model.len() as u64, "{walked:?}");
    assert!(walked.unreachable.is_empty(), "{walked:?}");
    // Shrink to nothing, checking against the model on the way.
    let keys: Vec<u64> = model.keys().copied().collect();
    let mut depths = vec![depth];
    for (n, chunk) in keys.chunks(50).enumerate() {
        let order: Vec<u64> = if n % 2 == 0 {
            chunk.to_vec()
        } else {
            chunk.iter().rev().copied().collect()
        };
        let shape = pool
            .transaction(|tx, r| {
                for k in &order {
                    assert_eq!(r.t.remove(tx, k)?, model.remove(k));
                }
                Ok::<_, Error>(r.t.check_invariants(tx).unwrap())
            })
            .unwrap();
        let (inner, d) = internal_counts(&shape);
        assert!(inner.iter().all(|&n| n <= 15), "{shape:?}");
        if depths.last() != Some(&d) {
            depths.push(d);
        }
        if n % 10 == 0 {
            let all = pool.transaction(|tx, r| r.t.to_vec(tx)).unwrap();
            assert_eq!(all, model.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
        }
    }
    // Level by level (a chunk may take the last two levels at once).
    assert_eq!(depths[..3], [4, 3, 2], "{depths:?}");
    assert_eq!(depths.last(), Some(&0), "{depths:?}");
    assert_eq!(pool.allocated_blocks().unwrap(), vec![], "every node freed");
    // Regrown from nothing: a wide root.
    let shape = pool
        .transaction(|tx, r| {
            for i in 0..3000 {
                r.t.insert(tx, scattered(i), i)?;
            }
            Ok::<_, Error>(r.t.check_invariants(tx).unwrap())
        })
        .unwrap();
    assert_eq!(internal_counts(&shape).1, 3, "wide again: {shape:?}");
}

/// A node length word whose high half is neither 0 nor the wide tag, or the wide tag on a leaf,
/// is `CorruptCollection` for lookups, updates and the verifier: never read as some length.
#[test]
fn a_length_word_with_unknown_high_bits_is_corrupt() {
    for (name, tag_on_leaf) in [("high.pool", false), ("leaf.pool", true)] {
        let dir = shm_dir();
        let path = dir.path().join(name);
        let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
        let (root, leaf) = pool
            .transaction(|tx, r| {
                for k in 0..200u64 {
                    r.t.insert(tx, k, k)?;
                }
                let n = r.t.node_offsets(tx)?;
                Ok::<_, Error>((n[0], n[1]))
            })
            .unwrap();
        pool.close().unwrap();
        let mut img = std::fs::read(&path).unwrap();
        let (at, high) = if tag_on_leaf {
            (leaf as usize, WIDE_TAG)
        } else {
            (root as usize, 0x1234)
        };
        let w0 = u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
        img[at..at + 8].copy_from_slice(&((w0 & 0xffff_ffff) | high << 32).to_le_bytes());
        std::fs::write(&path, &img).unwrap();
        let pool = Pool::<Root>::open(&path, &opts()).unwrap();
        let corrupt = |r: Result<(), Error>| {
            matches!(
                r,
                Err(Error::CorruptCollection {
                    structure: "PBTreeMap",
                    ..
                })
            )
        };
        // Key 0 lies in the first leaf, under the root.
        assert!(
            corrupt(pool.transaction(|tx, r| r.t.get(tx, &0).map(drop))),
            "{name}: get"
        );
        assert!(
            corrupt(pool.transaction(|tx, r| r.t.insert(tx, 0, 1).map(drop))),
            "{name}: insert"
        );
        assert!(
            corrupt(pool.transaction(|tx, r| r.t.remove(tx, &0).map(drop))),
            "{name}: remove"
        );
        assert!(corrupt(pool.transaction(|tx, r| r.t.check(tx))), "{name}: check");
        pool.transaction(|tx, r| r.b.check(tx)).unwrap();
    }
}

/// A narrow root above wide internal nodes (a tree no build makes): the verifier and the
/// schema-driven walk name the mix.
#[test]
fn wide_and_narrow_internal_nodes_in_one_tree_are_corrupt() {
    let dir = shm_dir();
    let path = dir.path().join("mixed.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let root = pool
        .transaction(|tx, r| {
            for i in 0..3000 {
                r.t.insert(tx, scattered(i), i)?;
            }
            assert_eq!(r.t.check_invariants(tx).unwrap().len(), 3);
            Ok::<_, Error>(r.t.node_offsets(tx)?[0])
        })
        .unwrap();
    pool.close().unwrap();
    narrow_root(&path, root);
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let err = pool.transaction(|tx, r| r.t.check(tx)).unwrap_err();
    assert!(
        err.to_string().contains("wide and narrow internal nodes"),
        "{err}"
    );
    let err = walk_pool(&mut pool).unwrap_err();
    assert!(
        err.to_string().contains("wide and narrow internal nodes"),
        "{err}"
    );
}

/// Keys of 32 and 33 bytes: the two sides of the wide-node key limit.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct EdgeRoot {
    at: PBTreeMap<[u64; 4], u64>,
    past: PBTreeMap<[u8; 33], u64>,
}

/// Keys of exactly 32 bytes (the limit) still get wide internal nodes; 33-byte keys do not.
/// The verifier and the schema-driven walk read both trees.
#[test]
fn keys_of_exactly_32_bytes_get_wide_internal_nodes_and_33_bytes_narrow_ones() {
    let dir = shm_dir();
    let mut pool = Pool::<EdgeRoot>::create(dir.path().join("edge.pool"), POOL_SIZE, &opts()).unwrap();
    let (at, past) = pool
        .transaction(|tx, r| {
            for i in 0..1000 {
                let k = scattered(i);
                r.at.insert(tx, [k, i, !k, 3], i)?;
                let mut b = [0u8; 33];
                b[..8].copy_from_slice(&k.to_be_bytes());
                b[32] = i as u8;
                r.past.insert(tx, b, i)?;
            }
            Ok::<_, Error>((
                r.at.check_invariants(tx).unwrap(),
                r.past.check_invariants(tx).unwrap(),
            ))
        })
        .unwrap();
    let (inner, depth) = internal_counts(&at);
    assert_eq!(depth, 3, "{at:?}");
    assert!(
        inner.iter().any(|&n| n > 15),
        "32-byte keys: no wide node: {at:?}"
    );
    let (inner, _) = internal_counts(&past);
    assert!(inner.iter().all(|&n| n <= 15), "33-byte keys: {past:?}");
    let walked = walk_pool(&mut pool).unwrap();
    assert_eq!(walked.entries, 2000, "{walked:?}");
    assert!(walked.unreachable.is_empty(), "{walked:?}");
}

/// Values that own blocks under wide internal nodes.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct OwnRoot {
    s: PBTreeMap<u64, PString>,
}

/// A tree whose values own blocks (strings) and whose internal nodes are wide: the
/// schema-driven walk checks the spare value slots of its leaves, and of no wide node (which
/// has no value array: its children lie where a leaf's values are). Clean, it walks; the end of
/// a leaf's spare value slots made non-zero in the pool file is named.
#[test]
fn the_walk_checks_spare_value_slots_of_leaves_only_under_wide_nodes() {
    let dir = shm_dir();
    let path = dir.path().join("own.pool");
    let mut pool = Pool::<OwnRoot>::create(&path, POOL_SIZE, &opts()).unwrap();
    let nodes = pool
        .transaction(|tx, r| {
            for k in 0..200u64 {
                r.s.get_or_insert_new(tx, k)?.push_str(tx, "x")?;
            }
            let shape = r.s.check_invariants(tx).unwrap();
            assert_eq!(shape.len(), 2, "a wide root over leaves: {shape:?}");
            assert!(shape[0][0] > 15, "{shape:?}");
            r.s.node_offsets(tx)
        })
        .unwrap();
    let walked = walk_pool(&mut pool).unwrap();
    // 200 map entries and the 200 strings' one byte each.
    assert_eq!(walked.entries, 400, "{:?}", walked.not_walked);
    assert!(walked.unreachable.is_empty(), "{:?}", walked.unreachable);
    pool.close().unwrap();

    // A leaf (`[len][1][keys: u64; 15][values: PString; 15][children: 16]`) with 12 keys or
    // fewer: the last word of its last value slot set (the end of the spare range: a check
    // over fewer bytes than the spare slots hold misses it).
    let mut img = std::fs::read(&path).unwrap();
    let word = |img: &[u8], at: usize| u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
    let vs = std::mem::size_of::<PString>();
    let leaf = nodes[1..]
        .iter()
        .map(|&n| n as usize)
        .find(|&n| word(&img, n) <= 12)
        .expect("a leaf with spare slots");
    assert_eq!(word(&img, leaf + 8), 1, "a leaf");
    let last = leaf + 16 + 15 * 8 + 15 * vs - 8;
    assert_eq!(word(&img, last), 0);
    img[last..last + 8].copy_from_slice(&1u64.to_le_bytes());
    std::fs::write(&path, &img).unwrap();
    let mut pool = Pool::<OwnRoot>::open(&path, &opts()).unwrap();
    let err = walk_pool(&mut pool).unwrap_err();
    assert!(
        err.to_string().contains("a spare value slot is not zero"),
        "{err}"
    );
}

/// A leaf below the root whose length word was damaged to 3 (a node under the root holds at
/// least half its capacity, 7 keys for a leaf): the schema-driven walk names the count and
/// the minimum, before it gets to the entry total.
#[test]
fn the_walk_reports_a_leaf_under_half_its_capacity() {
    let dir = shm_dir();
    let path = dir.path().join("few.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let nodes = pool
        .transaction(|tx, r| {
            for k in 0..200u64 {
                r.t.insert(tx, k, k)?;
            }
            r.t.node_offsets(tx)
        })
        .unwrap();
    pool.close().unwrap();
    let mut img = std::fs::read(&path).unwrap();
    let leaf = nodes[1] as usize;
    assert_eq!(img[leaf + 8], 1, "a leaf");
    img[leaf..leaf + 8].copy_from_slice(&3u64.to_le_bytes());
    std::fs::write(&path, &img).unwrap();
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let err = walk_pool(&mut pool).unwrap_err();
    assert!(err.to_string().contains("3 keys, fewer than 7"), "{err}");
}
