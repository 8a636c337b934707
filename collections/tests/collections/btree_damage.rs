//! Review findings on `PBTreeMap`: the tests of damaged trees failed before their fix;
//! `byte_keys_order_like_slices` is a check of the byte order that passed as it was.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{assert_allocated_exactly, opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{PBTreeMap, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    t: PBTreeMap<u64, u64>,
    u: PBTreeMap<u64, u64>,
    w: PBTreeMap<u64, u64>,
    b: PBTreeMap<PVec<u8>, u64>,
}

/// Every node of the three `u64` trees.
fn nodes(tx: &Transaction<'_>, r: &Root) -> Result<BTreeSet<u64>, Error> {
    let mut out = BTreeSet::new();
    for t in [&r.t, &r.u, &r.w] {
        for n in t.node_offsets(tx)? {
            assert!(out.insert(n), "node {n:#x} reached twice");
        }
    }
    Ok(out)
}

/// Child pointers left behind in a node's child array (past `len + 1`) by a merge or a split
/// are links to nodes that were freed or now belong to another parent. A damaged node length
/// revives them: here the root's last child slot still pointed at the leaf a merge freed, whose
/// block another tree then reused, and `clear` of the damaged tree freed that tree's live node
/// (the same class of bug as a revived value handle, §13.1 "Discarded and spare slots are
/// zero"). Child slots past `len + 1` must be zero, so a revived one is a null child: an error.
#[test]
fn stale_child_pointer_is_not_revived_by_a_damaged_length() {
    let dir = shm_dir();
    let path = dir.path().join("kids.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in 0..40u64 {
            r.t.insert(tx, k, k)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    // Remove the largest keys one by one until the root loses a child (a merge of its last two
    // leaves, freeing the right one).
    let (root, freed, root_len) = pool
        .transaction(|tx, r| {
            let shape = r.t.check_invariants(tx).unwrap();
            assert_eq!(shape.len(), 2, "{shape:?}");
            let kids = shape[0][0] + 1;
            assert!(kids >= 3, "{shape:?}");
            let before: BTreeSet<u64> = r.t.node_offsets(tx)?.into_iter().collect();
            let mut k = 39;
            loop {
                r.t.remove(tx, &k)?;
                let shape = r.t.check_invariants(tx).unwrap();
                if shape[0][0] + 1 < kids {
                    break;
                }
                k -= 1;
            }
            let after: BTreeSet<u64> = r.t.node_offsets(tx)?.into_iter().collect();
            let freed: Vec<u64> = before.difference(&after).copied().collect();
            assert_eq!(freed.len(), 1);
            let shape = r.t.check_invariants(tx).unwrap();
            Ok::<_, Error>((r.t.node_offsets(tx)?[0], freed[0], shape[0][0] as u64))
        })
        .unwrap();
    // Another tree takes blocks until it holds the freed node's block.
    let mut expect_u = BTreeMap::new();
    let mut k = 0u64;
    loop {
        let reused = pool
            .transaction(|tx, r| {
                r.u.insert(tx, k, k * 3)?;
                Ok::<_, Error>(r.u.node_offsets(tx)?.contains(&freed))
            })
            .unwrap();
        expect_u.insert(k, k * 3);
        k += 1;
        if reused {
            break;
        }
        assert!(k < 5000, "the freed node's block was never reused");
    }
    let owned = pool.transaction(nodes).unwrap();
    drop(pool);
    // Damage: the root's length one higher.
    let mut img = std::fs::read(&path).unwrap();
    let at = root as usize;
    img[at..at + 8].copy_from_slice(&(root_len + 1).to_le_bytes());
    std::fs::write(&path, &img).unwrap();
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let cleared = pool.transaction(|tx, r| r.t.clear(tx));
    assert!(
        cleared.is_err(),
        "clear of the damaged tree reached a stale child (now a node of another tree) and freed it"
    );
    assert_allocated_exactly(&mut pool, &owned, "after the refused clear");
    // The other tree is intact, also after more allocations.
    pool.transaction(|tx, r| {
        for k in 0..200u64 {
            r.w.insert(tx, k, k)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| {
        r.u.check_invariants(tx).unwrap();
        assert_eq!(r.u.to_vec(tx)?, expect_u.into_iter().collect::<Vec<_>>());
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// Byte keys over `{0x00, 0x01, 0xff}`, lengths 0 to 6 and some of 7 to 17: many prefixes of
/// one another, zero bytes at and across 8-byte word boundaries (the padding `contents_cmp`
/// adds), the empty key (an all-zero handle). Order, lookups, ranges with borrowed bounds that
/// are not keys, and removals match `BTreeMap<Vec<u8>, u64>`.
#[test]
fn byte_keys_order_like_slices() {
    let mut keys: Vec<Vec<u8>> = vec![vec![]];
    let mut frontier = vec![vec![]];
    for _ in 0..6 {
        let mut next = Vec::new();
        for k in &frontier {
            for b in [0x00u8, 0x01, 0xff] {
                let mut k2: Vec<u8> = k.clone();
                k2.push(b);
                next.push(k2);
            }
        }
        keys.extend(next.iter().cloned());
        frontier = next;
    }
    for (i, k) in frontier.iter().enumerate().step_by(37) {
        let mut long = k.clone();
        long.extend(std::iter::repeat_n(if i % 2 == 0 { 0 } else { 0xff }, 1 + i % 11));
        keys.push(long);
    }
    // A fixed pseudo-random order.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..keys.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        keys.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("bytes.pool"), POOL_SIZE, &opts()).unwrap();
    let mut model = BTreeMap::new();
    let bounds: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 0, 0, 0, 0, 0, 0, 0],
        vec![0, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0xff, 0],
        vec![0xff; 20],
        vec![2],
    ];
    let check = |tx: &Transaction<'_>, r: &Root, model: &BTreeMap<Vec<u8>, u64>| -> Result<(), Error> {
        r.b.check_invariants(tx).unwrap();
        let got = r.b.to_vec(tx)?;
        assert_eq!(
            got,
            model.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>()
        );
        for lo in &bounds {
            for hi in &bounds {
                let got: Vec<Vec<u8>> =
                    r.b.range(tx, lo.as_slice()..=hi.as_slice())?
                        .map(|(k, _)| k.to_vec(tx))
                        .collect::<Result<_, _>>()?;
                let want: Vec<Vec<u8>> = if lo <= hi {
                    model
                        .range(lo.clone()..=hi.clone())
                        .map(|(k, _)| k.clone())
                        .collect()
                } else {
                    Vec::new()
                };
                assert_eq!(got, want, "range {lo:?}..={hi:?}");
                assert_eq!(r.b.get(tx, lo)?, model.get(lo).copied(), "get {lo:?}");
            }
        }
        Ok(())
    };
    pool.transaction(|tx, r| {
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(r.b.insert(tx, k.as_slice(), i as u64)?, None);
            model.insert(k.clone(), i as u64);
        }
        check(tx, r, &model)?;
        for k in keys.iter().step_by(2) {
            assert_eq!(r.b.remove(tx, k)?, model.remove(k));
        }
        check(tx, r, &model)
    })
    .unwrap();
}

/// Every node `t` links is allocated (when `t` can be walked at all); `r` is the removal's
/// result, for the message.
fn assert_links_no_free_node<T: std::fmt::Debug>(pool: &mut Pool<Root>, r: &Result<T, Error>) {
    let linked = pool.transaction(|tx, r| r.t.node_offsets(tx));
    let allocated = common::allocated_offsets(pool);
    if let Ok(linked) = linked {
        for n in linked {
            assert!(
                allocated.contains(&n),
                "node {n:#x} is linked but free (removal: {r:?})"
            );
        }
    }
}

/// A damaged internal node linking one child twice (`kids[1] == kids[2]`): a merge of its
/// first two children freed the second while the duplicate link stayed in the parent, so the
/// committed tree reached a free block (the check refused only a sibling equal to the node
/// itself). A merge must refuse to free a node still linked from the parent or above.
#[test]
fn merge_refuses_to_free_a_node_linked_twice() {
    let dir = shm_dir();
    let path = dir.path().join("dup.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let (root, kid1) = pool
        .transaction(|tx, r| {
            for k in 0..40u64 {
                r.t.insert(tx, k, k)?;
            }
            let shape = r.t.check_invariants(tx).unwrap();
            assert_eq!(shape.len(), 2, "{shape:?}");
            assert!(shape[0][0] >= 2 && shape[1][1] <= 8, "{shape:?}");
            let n = r.t.node_offsets(tx)?;
            Ok::<_, Error>((n[0], n[2]))
        })
        .unwrap();
    drop(pool);
    // Damage: the root's third child pointer replaced by its second (same tag). The root is a
    // wide internal node (design §13.2): 63 key slots from byte 16, children from byte 520.
    let mut img = std::fs::read(&path).unwrap();
    let co = 16 + 63 * 8 + root as usize;
    let second = u64::from_le_bytes(img[co + 8..co + 16].try_into().unwrap());
    assert_eq!(second & ((1 << 48) - 1), kid1);
    img[co + 16..co + 24].copy_from_slice(&second.to_le_bytes());
    std::fs::write(&path, &img).unwrap();
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    // Empty the first leaf: it borrows from the second, then merges with it.
    let r = pool.transaction(|tx, r| {
        for k in 0..8u64 {
            r.t.remove(tx, &k)?;
        }
        Ok::<_, Error>(())
    });
    // Either refused, or whatever committed links no free block.
    assert_links_no_free_node(&mut pool, &r);
    assert!(r.is_err(), "the merge freed a node still linked");
}

/// The nodes a merge frees in a tree whose keys own blocks (and whose values do not) have their
/// key and value slots zeroed in the merge's transaction (design §13.1, "Discarded and spare
/// slots are zero"): the keys the right leaf held now live in the left leaf, and a copy of
/// their handles left in the freed block would be a second owner of their buffers once the
/// block is reused and a damaged length revives it.
#[test]
fn a_leaf_freed_by_a_merge_keeps_no_key_handle() {
    let dir = shm_dir();
    let path = dir.path().join("zero.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let key = |i: u8| vec![b'k', i, i, i];
    let before = pool
        .transaction(|tx, r| {
            // 16 keys: two leaves of 8 under a root.
            for i in 0..16u8 {
                r.b.insert(tx, key(i).as_slice(), u64::from(i))?;
            }
            assert_eq!(r.b.check_invariants(tx).unwrap(), [vec![1], vec![8, 8]]);
            r.b.node_offsets(tx)
        })
        .unwrap();
    // The left leaf falls to 7 keys (the fewest a leaf keeps), the right one to 6: it cannot
    // borrow, so it merges into the left one and is freed; the root collapses onto the merged
    // leaf.
    pool.transaction(|tx, r| {
        for i in [0, 15, 14] {
            assert_eq!(r.b.remove(tx, key(i).as_slice())?, Some(u64::from(i)));
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let after = pool
        .transaction(|tx, r| {
            assert_eq!(r.b.check_invariants(tx).unwrap(), [vec![13]]);
            r.b.node_offsets(tx)
        })
        .unwrap();
    assert_eq!(after.len(), 1);
    let freed: Vec<u64> = before.iter().copied().filter(|n| !after.contains(n)).collect();
    assert_eq!(
        freed.len(),
        2,
        "the root and the right leaf: {before:?} -> {after:?}"
    );
    pool.close().unwrap();
    // Node layout (design §13.2): 16-byte header, 15 keys, 15 values, then the child array.
    let ksize = std::mem::size_of::<PVec<u8>>();
    let slots = 16..16 + 15 * ksize + 15 * 8;
    let img = std::fs::read(&path).unwrap();
    for n in freed {
        let at = n as usize;
        let words: Vec<u64> = img[at + slots.start..at + slots.end]
            .chunks(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
            .collect();
        assert!(
            words.iter().all(|&w| w == 0),
            "freed node {n:#x}: slots not zeroed"
        );
    }
}

/// A damaged root linking itself as its second child: when its first child (an internal node)
/// falls under the fewest keys and has no left sibling, its right sibling is the root itself,
/// which a merge would free while it stays the root (and the merged node would list it as a
/// child). A merge must refuse a right sibling that is the parent, also when no node above the
/// parent is involved (the parent is the root: the path above it is empty).
#[test]
fn merge_refuses_to_free_the_parent_linked_as_its_own_child() {
    let dir = shm_dir();
    let path = dir.path().join("self.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    let root = pool
        .transaction(|tx, r| {
            // Sequential inserts fill leaves of 8; 800 keys make 100 leaves under three wide
            // internal nodes (design §13.2) of 32, 32 and 33 keys, under a root of 2.
            for k in 0..800u64 {
                r.t.insert(tx, k, k)?;
            }
            let shape = r.t.check_invariants(tx).unwrap();
            assert_eq!(shape[..2], [vec![2], vec![32, 32, 33]], "{shape:?}");
            assert_eq!(shape[2][..33], [8; 33], "{shape:?}");
            // The first internal node's first two leaves down to 7 keys (the fewest), and one
            // merge of its last two leaves: the node down to 31 keys (the fewest) too.
            for k in [0, 8, 248, 256, 257] {
                assert_eq!(r.t.remove(tx, &k)?, Some(k));
            }
            let shape = r.t.check_invariants(tx).unwrap();
            assert_eq!(shape[..2], [vec![2], vec![31, 32, 33]], "{shape:?}");
            assert_eq!(shape[2][..2], [7, 7], "{shape:?}");
            Ok::<_, Error>(r.t.node_offsets(tx)?[0])
        })
        .unwrap();
    drop(pool);
    // Damage: the root's second child pointer replaced by the root itself (same tag). The
    // root is a wide node: its children from byte 520.
    let mut img = std::fs::read(&path).unwrap();
    let co = 16 + 63 * 8 + root as usize;
    let second = u64::from_le_bytes(img[co + 8..co + 16].try_into().unwrap());
    let mask = (1u64 << 48) - 1;
    assert_ne!(second & mask, root);
    let own = (second & !mask) | root;
    img[co + 8..co + 16].copy_from_slice(&own.to_le_bytes());
    std::fs::write(&path, &img).unwrap();
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    // The first leaf falls to 6 keys and merges with the second; the first internal node falls
    // to 30 keys, cannot borrow from its "right sibling" (the root, 2 keys) and would merge.
    let r = pool.transaction(|tx, r| r.t.remove(tx, &1));
    // Either refused, or whatever committed links no free block.
    assert_links_no_free_node(&mut pool, &r);
    assert!(r.is_err(), "the merge freed the root: {r:?}");
}
