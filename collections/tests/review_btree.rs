//! Review findings on `PBTreeMap`: each test failed before its fix.

mod common;

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
