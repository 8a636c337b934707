//! Corrupted key and value handles in `PBTreeMap` nodes (a string key whose buffer pointer lies
//! outside the pool, one whose length is absurd, a vector value with a bad buffer) give clean
//! errors from every operation that reads them, never a panic, and leave the rest usable.

use crate::common;

use common::{opts, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PBTreeMap, PString, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    t: PBTreeMap<PString, PVec<u64>>,
}

fn key(i: u64) -> String {
    format!("key number {i:03}")
}

/// Offset of the first leaf's first key handle, and of its first value handle (a leaf of
/// `PBTreeMap<PString, PVec<u64>>`: keys at 16, 15 × 24 bytes, then the values).
const KEY0: u64 = 16;
const VAL0: u64 = 16 + 15 * 24;

/// A pool whose tree has two levels, corrupted by `f(image, first leaf offset)`.
fn corrupted(name: &str, f: impl FnOnce(&mut [u8], usize)) -> (tempfile::TempDir, Pool<Root>) {
    let dir = shm_dir();
    let path = dir.path().join(name);
    let pool = Pool::<Root>::create(&path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..40 {
            r.t.get_or_insert_new(tx, key(i))?.extend(tx, [i, i + 1])?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let leaf = pool
        .transaction(|tx, r| {
            let shape = r.t.check_invariants(tx).unwrap();
            assert_eq!(shape.len(), 2, "{shape:?}");
            Ok::<_, Error>(r.t.node_offsets(tx)?[1])
        })
        .unwrap();
    drop(pool);
    let mut img = std::fs::read(&path).unwrap();
    f(&mut img, leaf as usize);
    std::fs::write(&path, &img).unwrap();
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    (dir, pool)
}

fn word(img: &mut [u8], at: usize) -> &mut [u8] {
    &mut img[at..at + 8]
}

/// Replaces the offset of the pointer word at `at` (keeping its tag) by one past any pool.
fn wild_pointer(img: &mut [u8], at: usize) {
    let v = u64::from_le_bytes(word(img, at).try_into().unwrap());
    assert_ne!(v, 0, "a pointer to corrupt");
    let wild = (v & !((1 << 48) - 1)) | 0xffff_fff0;
    word(img, at).copy_from_slice(&wild.to_le_bytes());
}

#[test]
fn wild_key_pointer_gives_errors() {
    let (_dir, pool) = corrupted("k.pool", |img, leaf| wild_pointer(img, leaf + KEY0 as usize));
    // The smallest key is the corrupted one: finding it compares with it.
    let r = pool.transaction(|tx, r| r.t.get_ref(tx, key(0).as_str()).map(|v| v.is_some()));
    assert!(r.is_err(), "get_ref: {r:?}");
    let r = pool.transaction(|tx, r| r.t.remove_free(tx, key(0).as_str()));
    assert!(r.is_err(), "remove_free: {r:?}");
    let r = pool.transaction(|tx, r| r.t.get_or_insert_new(tx, key(0)).map(drop));
    assert!(r.is_err(), "get_or_insert_new: {r:?}");
    let r = pool.transaction(|tx, r| {
        r.t.range_refs(tx, ..)?
            .map(|(k, _)| k.as_string(tx))
            .collect::<Result<Vec<_>, _>>()
    });
    assert!(r.is_err(), "range: {r:?}");
    let r = pool.transaction(|tx, r| Ok::<_, Error>(r.t.check_invariants(tx)));
    assert!(r.unwrap().is_err(), "check_invariants");
    let r = pool.transaction(|tx, r| r.t.clear(tx));
    assert!(r.is_err(), "clear frees the wild buffer: {r:?}");
    // Keys in the other leaf are still found.
    let r =
        pool.transaction(|tx, r| Ok::<_, Error>(r.t.get_ref(tx, key(39).as_str())?.map(|v| v.to_vec(tx))));
    assert_eq!(r.unwrap().map(Result::unwrap), Some(vec![39, 40]));
}

#[test]
fn absurd_key_length_gives_errors() {
    let (_dir, pool) = corrupted("l.pool", |img, leaf| {
        let at = leaf + KEY0 as usize;
        // Length and capacity: 2^40 bytes.
        word(img, at + 8).copy_from_slice(&(1u64 << 40).to_le_bytes());
        word(img, at + 16).copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    // The stored contents start like the key: the comparison reads on past the buffer until
    // the words differ or the pool ends, without a panic.
    let r = pool.transaction(|tx, r| r.t.get_ref(tx, key(0).as_str()).map(|v| v.is_some()));
    assert!(matches!(r, Ok(false) | Err(_)), "get_ref: {r:?}");
    let r = pool.transaction(|tx, r| r.t.to_vec_keys(tx));
    assert!(r.is_err(), "reading the key's contents: {r:?}");
}

#[test]
fn wild_value_pointer_gives_errors() {
    let (_dir, pool) = corrupted("v.pool", |img, leaf| wild_pointer(img, leaf + VAL0 as usize));
    let r = pool.transaction(|tx, r| r.t.get_ref(tx, key(0).as_str())?.expect("present").to_vec(tx));
    assert!(r.is_err(), "reading the vector: {r:?}");
    let r = pool.transaction(|tx, r| r.t.remove_free(tx, key(0).as_str()));
    assert!(r.is_err(), "remove_free frees the wild buffer: {r:?}");
    // Other entries are intact and removable.
    let r = pool.transaction(|tx, r| r.t.remove_free(tx, key(1).as_str()));
    assert!(r.unwrap());
}

/// The keys' contents, read through the tree.
trait Keys {
    fn to_vec_keys(&self, tx: &ptm::Transaction<'_>) -> Result<Vec<String>, Error>;
}

impl Keys for PBTreeMap<PString, PVec<u64>> {
    fn to_vec_keys(&self, tx: &ptm::Transaction<'_>) -> Result<Vec<String>, Error> {
        self.iter_refs(tx)?.map(|(k, _)| k.as_string(tx)).collect()
    }
}
