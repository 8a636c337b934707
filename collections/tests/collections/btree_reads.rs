//! `PBTreeMap`'s reads and iterators outside the model tests: what `Debug` prints for the map
//! and its two iterators, and the error a `RangeRefs` keeps when a damaged tree ends it early.

use crate::common;

use common::{opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PBTreeMap, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    t: PBTreeMap<u64, u64>,
    n: PBTreeMap<u64, PVec<u64>>,
}

/// A tree of two levels under both maps: 40 keys, a root over a few leaves.
fn fill(pool: &Pool<Root>) {
    pool.transaction(|tx, r| {
        for k in 0..40u64 {
            r.t.insert(tx, k, k * 10)?;
            r.n.get_or_insert_new(tx, k)?.push(tx, k)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

/// `Debug` names the map without its contents, and an iterator's position: its depth below
/// the root, the entry it is at in its leaf, whether it is done.
#[test]
fn debug_names_the_map_and_the_position_of_its_iterators() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("d.pool"), POOL_SIZE, &opts()).unwrap();
    fill(&pool);
    let printed = pool
        .transaction(|tx, r| {
            let mut it = r.t.range(tx, 3..)?;
            let at_start = format!("{it:?}");
            assert_eq!(it.next(), Some((3, 30)));
            let after_one = format!("{it:?}");
            let refs = r.n.range_refs(tx, 1..)?;
            let mut empty = r.t.range(tx, 100..)?;
            assert!(empty.next().is_none());
            Ok::<_, Error>([
                format!("{:?}", r.t),
                at_start,
                after_one,
                format!("{refs:?}"),
                format!("{empty:?}"),
            ])
        })
        .unwrap();
    assert_eq!(printed[0], "PBTreeMap { .. }");
    assert_eq!(printed[1], "Range { depth: 1, pos: 3, done: false }");
    assert_eq!(printed[2], "Range { depth: 1, pos: 4, done: false }");
    assert_eq!(
        printed[3],
        "RangeRefs { range: Range { depth: 1, pos: 1, done: false } }"
    );
    assert_eq!(printed[4], "Range { depth: 0, pos: 8, done: true }");
}

/// The root's last child pointer damaged (a pointer into no pool): a `RangeRefs` from the back
/// stops at once and keeps the cause (and dooms the transaction), as a `Range` does.
#[test]
fn range_refs_keeps_the_error_that_ended_it() {
    let dir = shm_dir();
    let path = dir.path().join("e.pool");
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    fill(&pool);
    let nodes = pool.transaction(|tx, r| r.n.node_offsets(tx)).unwrap();
    assert!(nodes.len() > 2, "a root and several leaves: {nodes:?}");
    pool.close().unwrap();
    let mut img = std::fs::read(&path).unwrap();
    let word = |img: &[u8], w: usize| u64::from_le_bytes(img[w..w + 8].try_into().unwrap());
    let root = nodes[0] as usize;
    let last = (root..root + 1024)
        .step_by(8)
        .rev()
        .find(|&w| nodes[1..].contains(&(word(&img, w) & ((1 << 48) - 1))))
        .expect("the root's child words");
    let v = word(&img, last);
    let tag = if v >> 48 == 0xbeef { 0xbeee } else { 0xbeef };
    img[last..last + 8].copy_from_slice(&((tag << 48) | (v & ((1 << 48) - 1))).to_le_bytes());
    std::fs::write(&path, &img).unwrap();

    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let r = pool.transaction(|tx, r| {
        let mut refs = r.n.range_refs(tx, ..)?;
        assert!(refs.error().is_none());
        let (k, v) = refs.next().expect("the first leaf is intact");
        assert_eq!((k, v.to_vec(tx)?), (0, vec![0]));
        assert!(refs.error().is_none());
        assert!(refs.next_back().is_none(), "the last leaf cannot be read");
        assert!(refs.error().is_some(), "the cause is kept");
        Ok::<_, Error>(())
    });
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
}
