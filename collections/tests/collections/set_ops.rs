//! `PHashSet`'s and `PBTreeSet`'s small methods, which the std-model tests (`sets.rs`) leave
//! out: `len` and `is_empty` (no test read the B-tree set's length), the hash set's
//! `capacity` (its map's, exactly), `to_vec`, `hash_seed` and `set_hash_seed`; `free` (every
//! block of the sets and of their string keys released); a damaged set failing
//! `check_invariants` and ending its iteration with the cause kept in `error()` (the hash set's
//! front, the B-tree set's back end); and `Debug`, which names the types without reading the
//! sets (that needs a transaction); and `extend` (std's `Extend`).

use crate::common::{opts, shm_dir};

use ptm::{Error, PCell, Persistent, Pool};
use ptm_collections::{PBTreeSet, PHashMap, PHashSet, PString};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    h: PHashSet<u64>,
    b: PBTreeSet<u64>,
    hs: PHashSet<PString>,
    bs: PBTreeSet<PString>,
    /// The hash set's twin: the map it wraps, given the same keys.
    twin: PHashMap<u64, u8>,
}

fn create(name: &str) -> (tempfile::TempDir, Pool<Root>, std::path::PathBuf) {
    let dir = shm_dir();
    let path = dir.path().join(name);
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts()).unwrap();
    (dir, pool, path)
}

/// The hash set's handle as its map's four cells (the table pointer first).
fn hash_set_cells(s: &PHashSet<u64>) -> &[PCell<u64>; 4] {
    // SAFETY: `PHashSet` is `repr(transparent)` over a `PHashMap`, which is `repr(C)` of four
    // `PCell<u64>`-sized cells (`PPtr` and `u64` words, 32 bytes, asserted by the crate) and a
    // zero-sized marker.
    unsafe { &*(s as *const PHashSet<u64>).cast::<[PCell<u64>; 4]>() }
}

/// `p` (a pointer word: the pool's tag in the top 16 bits, the offset below) made to name
/// another pool (another nonzero tag): every read through it fails.
fn foreign(p: u64) -> u64 {
    let tag = if p >> 48 == 0xbeef { 0xbeee } else { 0xbeef };
    (tag << 48) | (p & ((1 << 48) - 1))
}

#[test]
fn len_is_empty_capacity_and_to_vec_follow_inserts_and_removes() {
    let (_dir, pool, _) = create("e.pool");
    let state = |pool: &Pool<Root>| {
        pool.transaction(|tx, r| {
            let mut keys = r.h.to_vec(tx)?;
            keys.sort_unstable();
            assert_eq!(r.h.len(tx), keys.len() as u64, "the hash set's length");
            assert_eq!(r.b.len(tx), keys.len() as u64, "the B-tree set's length");
            Ok::<_, Error>((
                r.h.is_empty(tx),
                r.b.is_empty(tx),
                r.h.capacity(tx),
                r.twin.capacity(tx),
                keys,
            ))
        })
        .unwrap()
    };
    assert_eq!(state(&pool), (true, true, 0, 0, vec![]), "new sets");
    let mut want = Vec::new();
    for k in [9u64, 2, 700, 41, 5, 1000, 3] {
        pool.transaction(|tx, r| {
            r.h.insert(tx, k)?;
            r.b.insert(tx, k)?;
            r.twin.insert(tx, k, 0)?;
            Ok::<_, Error>(())
        })
        .unwrap();
        want.push(k);
        want.sort_unstable();
        let (h_empty, b_empty, cap, twin_cap, keys) = state(&pool);
        assert!(!h_empty && !b_empty, "after inserting {k}");
        assert!(cap > 0, "a set with keys has slots");
        assert_eq!(cap, twin_cap, "the set's capacity is its map's");
        assert_eq!(keys, want, "to_vec after inserting {k}");
    }
    for &k in &want {
        pool.transaction(|tx, r| {
            assert!(r.h.remove(tx, &k)?);
            assert!(r.b.remove(tx, &k)?);
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    let (h_empty, b_empty, _, _, keys) = state(&pool);
    assert!(h_empty && b_empty && keys.is_empty(), "every key removed");
}

#[test]
fn hash_seed_set_on_an_empty_set_is_kept() {
    let (_dir, pool, _) = create("s.pool");
    let seed = 0x00ab_cdef_1234_5678;
    pool.transaction(|tx, r| r.h.set_hash_seed(tx, seed)).unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.h.hash_seed(tx), seed, "before the first insert");
        for k in 0..50 {
            r.h.insert(tx, k)?;
        }
        assert_eq!(r.h.hash_seed(tx), seed, "kept by the first insert");
        assert!((0..50).all(|k| r.h.contains(tx, &k).unwrap()));
        Ok::<_, Error>(())
    })
    .unwrap();
    let again = pool.transaction(|tx, r| r.h.set_hash_seed(tx, seed + 1));
    assert!(
        matches!(again, Err(Error::InvalidOptions(_))),
        "a set holding blocks keeps its seed: {again:?}"
    );
}

#[test]
fn free_releases_every_block_of_the_sets_and_their_keys() {
    let (_dir, mut pool, _) = create("f.pool");
    assert!(pool.allocated_blocks().unwrap().is_empty(), "a new pool");
    pool.transaction(|tx, r| {
        for k in 0..200u64 {
            r.h.insert(tx, k)?;
            r.b.insert(tx, k)?;
            r.hs.insert(tx, format!("key-{k}"))?;
            r.bs.insert(tx, format!("key-{k}").as_str())?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    assert!(
        pool.allocated_blocks().unwrap().len() > 400,
        "tables, nodes and key buffers"
    );
    pool.transaction(|tx, r| {
        r.h.free(tx)?;
        r.b.free(tx)?;
        r.hs.free(tx)?;
        r.bs.free(tx)
    })
    .unwrap();
    let lens = pool
        .transaction(|tx, r| Ok::<_, Error>([r.h.len(tx), r.b.len(tx), r.hs.len(tx), r.bs.len(tx)]))
        .unwrap();
    assert_eq!(lens, [0; 4], "freed sets are empty");
    assert_eq!(pool.allocated_blocks().unwrap(), vec![], "every block freed");
}

/// The hash set's table pointer damaged: `check_invariants` fails, and iteration stops at once
/// with the cause kept (and dooms the transaction).
#[test]
fn damaged_hash_set_fails_its_check_and_its_iteration() {
    let (_dir, pool, _) = create("h.pool");
    pool.transaction(|tx, r| (0..20u64).try_for_each(|k| r.h.insert(tx, k).map(drop)))
        .unwrap();
    pool.transaction(|tx, r| r.h.check_invariants(tx)).unwrap();
    pool.transaction(|tx, r| {
        let table = &hash_set_cells(&r.h)[0];
        table.set(tx, foreign(table.get(tx)))
    })
    .unwrap();
    let e = pool.transaction(|tx, r| r.h.check_invariants(tx));
    assert!(e.is_err(), "the check reads the table: {e:?}");
    let r = pool.transaction(|tx, r| {
        let mut it = r.h.iter(tx);
        assert_eq!(it.by_ref().count(), 0);
        assert!(it.error().is_some(), "the cause is kept");
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
}

/// A B-tree set of two levels whose root's last child pointer was damaged: `check_invariants`
/// fails naming the set; iteration from the front still starts (it descends to the first
/// leaf), and from the back stops at once with the cause kept (and dooms the transaction).
#[test]
fn damaged_btree_set_fails_its_check_and_its_iteration_from_the_back() {
    let (_dir, pool, path) = create("b.pool");
    pool.transaction(|tx, r| (0..60u64).try_for_each(|k| r.b.insert(tx, k).map(drop)))
        .unwrap();
    let nodes = pool
        .transaction(|tx, r| {
            r.b.check_invariants(tx)?;
            r.b.node_offsets(tx)
        })
        .unwrap();
    assert!(nodes.len() > 2, "a root and several leaves: {nodes:?}");
    pool.close().unwrap();

    // The root is a wide internal node (design §13.2): `[len | tag][0][keys: u64; 63][kids:
    // u64; 64]`, the kids at byte 520 for a `u64` key; the last child word naming a leaf is
    // replaced.
    let mut img = std::fs::read(&path).unwrap();
    let kids = nodes[0] as usize + 16 + 63 * 8;
    let word = |img: &[u8], w: usize| u64::from_le_bytes(img[w..w + 8].try_into().unwrap());
    let last = (kids..kids + 64 * 8)
        .step_by(8)
        .rev()
        .find(|&w| nodes[1..].contains(&(word(&img, w) & ((1 << 48) - 1))))
        .expect("the root's child words");
    let child = foreign(word(&img, last));
    img[last..last + 8].copy_from_slice(&child.to_le_bytes());
    std::fs::write(&path, &img).unwrap();

    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let e = pool.transaction(|tx, r| r.b.check_invariants(tx)).unwrap_err();
    match e {
        Error::CorruptCollection { structure, .. } => assert_eq!(structure, "PBTreeSet"),
        other => panic!("expected CorruptCollection, got {other:?}"),
    }
    let r = pool.transaction(|tx, r| {
        let mut it = r.b.iter(tx)?;
        assert_eq!(it.next(), Some(0), "the first leaf is intact");
        assert!(it.error().is_none());
        assert_eq!(it.next_back(), None, "the last leaf cannot be read");
        assert!(it.error().is_some(), "the cause is kept");
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
}

#[test]
fn debug_names_the_types_without_their_contents() {
    let (_dir, pool, _) = create("d.pool");
    pool.transaction(|tx, r| {
        r.h.insert(tx, 1)?;
        r.b.insert(tx, 1)?;
        Ok::<_, Error>(())
    })
    .unwrap();
    let printed = pool
        .transaction(|tx, r| {
            Ok::<_, Error>([
                format!("{:?}", r.h),
                format!("{:?}", r.b),
                format!("{:?}", r.h.iter(tx)),
                format!("{:?}", r.b.iter(tx)?),
            ])
        })
        .unwrap();
    assert_eq!(printed[0], "PHashSet { .. }");
    assert_eq!(printed[1], "PBTreeSet { .. }");
    assert!(printed[2].starts_with("SetIter(MapIter {"), "{}", printed[2]);
    assert!(printed[3].starts_with("SetRange(Range {"), "{}", printed[3]);
}

/// `extend` on both sets gives std's sets: repeated and present keys once, string keys taken as
/// `&str`; keys already present write nothing (no drain).
#[test]
fn extend_adds_each_key_once_as_std() {
    let (_dir, pool, _) = create("extend.pool");
    let items = [5u64, 1, 5, 9, 1, 3];
    pool.transaction(|tx, r| {
        r.h.insert(tx, 9)?;
        r.b.insert(tx, 9)?;
        r.h.extend(tx, items)?;
        r.b.extend(tx, items)?;
        r.hs.extend(tx, ["b", "a", "b"])?;
        r.bs.extend(tx, ["b", "a", "b"])?;
        let mut h = r.h.to_vec(tx)?;
        h.sort_unstable();
        assert_eq!(h, vec![1, 3, 5, 9]);
        assert_eq!(r.b.to_vec(tx)?, vec![1, 3, 5, 9]);
        assert_eq!(r.h.len(tx), 4);
        assert_eq!(r.b.len(tx), 4);
        assert!(r.hs.contains(tx, "a")? && r.hs.contains(tx, "b")? && r.hs.len(tx) == 2);
        assert!(r.bs.contains(tx, "a")? && r.bs.contains(tx, "b")? && r.bs.len(tx) == 2);
        Ok::<_, Error>(())
    })
    .unwrap();
    let before = ptm::thread_stats();
    pool.transaction(|tx, r| {
        r.h.extend(tx, [1u64, 3, 5])?;
        r.b.extend(tx, [1u64, 3, 5])
    })
    .unwrap();
    assert_eq!(
        ptm::thread_stats().since(&before).drains,
        0,
        "present keys write nothing"
    );
}
