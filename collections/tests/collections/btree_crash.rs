//! Crash images of `PBTreeMap` removals that borrow, merge and collapse the root: the pool file
//! copied in the middle of a removing transaction (on tmpfs the copy holds every store made so
//! far, as if power failed there) reopens with the tree before the transaction; copied after the
//! commit, with the tree after it. Either way the tree's invariants hold and the heap holds
//! exactly its nodes (merged nodes are neither leaked nor freed while still linked).

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use ptm::{Error, Pool};

const SIZE: u64 = 4 << 20;

/// Opens the image (running recovery), checks it holds `expected` and a valid tree, then
/// deletes it; returns the tree's depth. `rollback`: whether recovery must have rolled a
/// transaction back (`None`: either way).
fn check_image(img: &Path, expected: &BTreeMap<i32, u64>, what: &str, rollback: Option<bool>) -> usize {
    let mut pool = Pool::<Root>::open(img, &opts()).unwrap();
    let report = pool.recovery_report();
    assert!(!report.was_clean, "{what}: an image of an open pool is not clean");
    if let Some(r) = rollback {
        assert_eq!(report.rolled_back, usize::from(r), "{what}: {report:?}");
    }
    let (shape, got) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.t.check_invariants(tx), r.t.to_vec(tx)?)))
        .unwrap();
    let shape = shape.unwrap_or_else(|e| panic!("{what}: B-tree invariant: {e}"));
    assert_eq!(
        got,
        expected.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
        "{what}"
    );
    assert_no_leak(&mut pool);
    drop(pool);
    std::fs::remove_file(img).unwrap();
    shape.len()
}

#[test]
fn removal_crash_images_roll_back_or_keep() {
    let dir = shm_dir();
    let path = dir.path().join("btree.pool");
    let mut pool = Pool::<Root>::create(&path, SIZE, &opts()).unwrap();
    let mut model: BTreeMap<i32, u64> = (0..300).map(|k| (k, k as u64 * 5)).collect();
    pool.transaction(|tx, r| {
        for (k, v) in &model {
            r.t.insert(tx, *k, *v)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    // Single removals of the even keys (borrows and merges of half-full leaves), then the odd
    // keys three, then seven, to a transaction (several merges and collapses in one).
    let evens: Vec<Vec<i32>> = (0..300).step_by(2).map(|k| vec![k]).collect();
    let odds: Vec<i32> = (1..300).step_by(2).collect();
    let (first, rest) = odds.split_at(60);
    let steps: Vec<Vec<i32>> = evens
        .into_iter()
        .chain(first.chunks(3).map(<[i32]>::to_vec))
        .chain(rest.chunks(7).map(<[i32]>::to_vec))
        .collect();
    let mut depths = vec![3];
    for (n, keys) in steps.iter().enumerate() {
        // The copy inside the transaction: after `cut` of its removals.
        let cut = n % (keys.len() + 1);
        let mid = path.with_extension("mid");
        let after = path.with_extension("after");
        pool.transaction(|tx, r| {
            for (i, k) in keys.iter().enumerate() {
                if i == cut {
                    std::fs::copy(&path, &mid).unwrap();
                }
                assert_eq!(r.t.remove(tx, k)?, model.get(k).copied(), "remove {k}");
            }
            if cut == keys.len() {
                std::fs::copy(&path, &mid).unwrap();
            }
            Ok::<_, Error>(())
        })
        .unwrap();
        std::fs::copy(&path, &after).unwrap();
        // An image has the pool's pointer tag: open it only while the pool is closed.
        drop(pool);
        let what = format!("inside removing {keys:?}, after {cut} of them");
        check_image(&mid, &model, &what, (cut == keys.len()).then_some(true));
        for k in keys {
            model.remove(k);
        }
        let depth = check_image(&after, &model, &format!("after removing {keys:?}"), Some(false));
        if depths.last() != Some(&depth) {
            depths.push(depth);
        }
        pool = Pool::open(&path, &opts()).unwrap();
    }
    assert!(model.is_empty());
    assert_eq!(
        depths,
        [3, 2, 1, 0],
        "every level collapsed, crash images checked around each"
    );
    assert_eq!(pool.allocated_blocks().unwrap(), vec![]);
}
