//! A corrupted B-tree whose internal node names one child several times (a DAG, not a tree) is
//! refused by every whole-tree walk (`to_vec`, `node_offsets`, `clear`) with a clean error:
//! without the check, such sharing multiplies node reads exponentially with depth, and `clear`
//! would free the shared node twice.

use crate::common;

use common::*;
use ptm::{Error, Pool};

#[test]
fn shared_child_is_refused() {
    let dir = shm_dir();
    let (pool, path) = create(&dir, "c.pool");
    // Two levels: a root and a few leaves.
    pool.transaction(|tx, r| (0..40).try_for_each(|k| r.t.insert(tx, k, k as u64).map(drop)))
        .unwrap();
    let (root, nodes) = pool
        .transaction(|tx, r| {
            let nodes = r.t.node_offsets(tx)?;
            Ok::<_, Error>((nodes[0], nodes))
        })
        .unwrap();
    assert!(nodes.len() > 2, "a root and several leaves: {nodes:?}");
    drop(pool);

    // Point every child word of the root at its first child.
    let mut img = std::fs::read(&path).unwrap();
    let at = root as usize;
    let mut first = None;
    let mut replaced = 0;
    for w in (at..at + 1024).step_by(8) {
        let v = u64::from_le_bytes(img[w..w + 8].try_into().unwrap());
        let off = v & ((1 << 48) - 1);
        if v != 0 && nodes[1..].contains(&off) {
            let f = *first.get_or_insert(v);
            img[w..w + 8].copy_from_slice(&f.to_le_bytes());
            replaced += 1;
        }
    }
    assert!(replaced > 2, "found the root's child words");
    std::fs::write(&path, &img).unwrap();

    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let r = pool.transaction(|tx, r| r.t.to_vec(tx));
    assert!(r.is_err(), "to_vec of a tree with a shared child: {r:?}");
    let r = pool.transaction(|tx, r| r.t.node_offsets(tx));
    assert!(r.is_err(), "node_offsets: {r:?}");
    let r = pool.transaction(|tx, r| r.t.clear(tx));
    assert!(r.is_err(), "clear must not free the shared leaf twice: {r:?}");
}

/// A root leaf whose stored length was damaged to 0 (a valid tree has no empty node: an empty
/// map has no root) has no first or last entry: `first_key_value`, `last_key_value`,
/// `pop_first` and `pop_last` return `None` or an error, never the stale entry left in slot 0
/// (a `u64` key owns nothing, so its slot is not zeroed) and never an index computed as
/// `len - 1` from a zero length.
#[test]
fn empty_root_leaf_has_no_edge_entry() {
    let dir = shm_dir();
    let (pool, path) = create(&dir, "e.pool");
    pool.transaction(|tx, r| r.t.insert(tx, 7, 70).map(drop)).unwrap();
    let root = pool
        .transaction(|tx, r| {
            let nodes = r.t.node_offsets(tx)?;
            assert_eq!(nodes.len(), 1, "one leaf: {nodes:?}");
            Ok::<_, Error>(nodes[0])
        })
        .unwrap();
    drop(pool);

    // The node's first word is its length.
    let mut img = std::fs::read(&path).unwrap();
    let at = root as usize;
    assert_eq!(
        u64::from_le_bytes(img[at..at + 8].try_into().unwrap()),
        1,
        "the root's length word"
    );
    img[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    std::fs::write(&path, &img).unwrap();

    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let first = pool.transaction(|tx, r| r.t.first_key_value(tx));
    assert!(
        matches!(first, Ok(None) | Err(_)),
        "first entry of an empty leaf: {first:?}"
    );
    let last = pool.transaction(|tx, r| r.t.last_key_value(tx));
    assert!(
        matches!(last, Ok(None) | Err(_)),
        "last entry of an empty leaf: {last:?}"
    );
    let popped = pool.transaction(|tx, r| r.t.pop_first(tx));
    assert!(
        matches!(popped, Ok(None) | Err(_)),
        "pop_first of an empty leaf: {popped:?}"
    );
    let popped = pool.transaction(|tx, r| r.t.pop_last(tx));
    assert!(
        matches!(popped, Ok(None) | Err(_)),
        "pop_last of an empty leaf: {popped:?}"
    );
}

/// A damaged tree whose nodes form one path deeper than `MAX_DEPTH` (48), every node distinct
/// (so the check for a node reached twice does not see it), is refused by the whole-tree walks
/// (`node_offsets`, `to_vec`, `clear`) by their depth limit.
#[test]
fn path_deeper_than_the_limit_is_refused() {
    let dir = shm_dir();
    let (pool, path) = create(&dir, "d.pool");
    pool.transaction(|tx, r| (0..1500).try_for_each(|k| r.t.insert(tx, k, k as u64).map(drop)))
        .unwrap();
    let nodes = pool.transaction(|tx, r| r.t.node_offsets(tx)).unwrap();
    assert!(nodes.len() > 60, "enough nodes for a path of 60: {}", nodes.len());
    drop(pool);

    let mut img = std::fs::read(&path).unwrap();
    let word = |img: &[u8], w: usize| u64::from_le_bytes(img[w..w + 8].try_into().unwrap());
    // The root (an internal node) names its first child in the first word of its child array.
    let mask = (1u64 << 48) - 1;
    let root = nodes[0] as usize;
    let co = (16..1024)
        .step_by(8)
        .find(|&o| nodes[1..].contains(&(word(&img, root + o) & mask)))
        .expect("the root's child array");
    let tag = word(&img, root + co) & !mask;
    // nodes[0] -> nodes[1] -> ... -> nodes[59]: internal nodes of no key (one child each), the
    // last an empty leaf.
    let path_len = 60;
    for (i, &n) in nodes[..path_len].iter().enumerate() {
        let at = n as usize;
        let last = i + 1 == path_len;
        img[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
        img[at + 8..at + 16].copy_from_slice(&u64::from(last).to_le_bytes());
        if !last {
            let child = tag | nodes[i + 1];
            img[at + co..at + co + 8].copy_from_slice(&child.to_le_bytes());
        }
    }
    std::fs::write(&path, &img).unwrap();

    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let r = pool.transaction(|tx, r| r.t.node_offsets(tx));
    assert!(r.is_err(), "node_offsets of a path of {path_len} nodes: {r:?}");
    let r = pool.transaction(|tx, r| r.t.to_vec(tx));
    assert!(r.is_err(), "to_vec: {r:?}");
    let r = pool.transaction(|tx, r| r.t.clear(tx));
    assert!(r.is_err(), "clear: {r:?}");
}
