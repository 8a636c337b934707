//! `Verify` and the typed checks (`PQueue::check`, `PBTreeMap::check`): a root of every kind
//! of collection verifies with the right totals, and damage that the structures' own methods
//! would trip over later (a stray chunk pointer in a queue's spare directory slot, a B-tree's
//! length off by one) is reported as `CorruptCollection` naming the structure.

use crate::common;
use crate::queue_common;

use std::path::Path;

use common::{opts, poke, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool, Transaction};
use ptm_collections::{
    verify, PBTreeMap, PBTreeSet, PHashMap, PHashSet, PQueue, PString, PVec, Report, Verify,
};
use queue_common::{page, Page};

#[derive(Persistent)]
#[repr(C)]
struct VRoot {
    pages: PQueue<Page>,
    t: PBTreeMap<u64, u64>,
    h: PHashMap<u64, u64>,
    s: PString,
    v: PVec<u64>,
    set: PBTreeSet<u64>,
    hs: PHashSet<u64>,
}

/// Offsets in the root: `pages` (48 bytes), then `t` (root pointer, len).
const T_LEN: u64 = 48 + 8;

impl Verify for VRoot {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> ptm::Result<()> {
        self.pages.verify(tx, report)?;
        self.t.verify(tx, report)?;
        self.h.verify(tx, report)?;
        self.s.verify(tx, report)?;
        self.v.verify(tx, report)?;
        self.set.verify(tx, report)?;
        self.hs.verify(tx, report)
    }
}

/// A pool with 40 pages (3 chunks of 16, a directory of 4 slots: one spare), 100 tree entries,
/// 50 map entries, a string, a vector and two sets; returns the root's offset and the queue's
/// blocks (directory first).
fn make(path: &Path) -> (u64, Vec<u64>) {
    let pool = Pool::<VRoot>::create(path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        (0..40).try_for_each(|i| r.pages.push(tx, page(i)))?;
        r.t.extend(tx, (0..100).map(|k| (k, k)))?;
        r.h.extend(tx, (0..50).map(|k| (k, k)))?;
        r.s.push_str(tx, "héllo")?;
        r.v.extend(tx, 0..7)?;
        (0..30).try_for_each(|k| r.set.insert(tx, k).map(drop))?;
        (0..20).try_for_each(|k| r.hs.insert(tx, k).map(drop))
    })
    .unwrap();
    let report = verify(&pool).unwrap();
    assert_eq!(report.structures, 7);
    assert_eq!(report.entries, 40 + 100 + 50 + "héllo".len() as u64 + 7 + 30 + 20);
    let blocks = pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap();
    assert_eq!(blocks.len(), 4, "a directory and 3 chunks");
    let root = pool.geometry().root_offset;
    pool.close().unwrap();
    (root, blocks)
}

fn corrupt_structure(e: &Error) -> &'static str {
    match e {
        Error::CorruptCollection { structure, .. } => structure,
        other => panic!("not a CorruptCollection: {other:?}"),
    }
}

#[test]
fn a_stray_pointer_in_a_spare_directory_slot_is_reported() {
    let dir = shm_dir();
    let path = dir.path().join("q.pool");
    let (_, blocks) = make(&path);
    // The directory's fourth slot is spare (3 chunks from slot 0): give it a chunk's pointer.
    let slot = blocks[0] + 3 * 8;
    poke(&path, slot, blocks[1]);
    let pool = Pool::<VRoot>::open(&path, &opts()).unwrap();
    let e = pool.transaction(|tx, r| r.pages.check(tx)).unwrap_err();
    assert_eq!(corrupt_structure(&e), "PQueue", "{e}");
    assert!(e.to_string().contains("slot 3"), "{e}");
    let e = verify(&pool).unwrap_err();
    assert_eq!(corrupt_structure(&e), "PQueue");
}

#[test]
fn a_btree_length_off_by_one_is_reported() {
    let dir = shm_dir();
    let path = dir.path().join("t.pool");
    let (root, _) = make(&path);
    poke(&path, root + T_LEN, 101);
    let pool = Pool::<VRoot>::open(&path, &opts()).unwrap();
    let e = pool.transaction(|tx, r| r.t.check(tx)).unwrap_err();
    assert_eq!(corrupt_structure(&e), "PBTreeMap", "{e}");
    assert!(matches!(
        verify(&pool),
        Err(Error::CorruptCollection {
            structure: "PBTreeMap",
            ..
        })
    ));
}

#[test]
fn clean_pools_verify_after_every_kind_of_change() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    make(&path);
    let pool = Pool::<VRoot>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        (100..120).try_for_each(|i| r.pages.push_front(tx, page(i)))?;
        r.pages.rotate_left(tx, 17)?;
        r.pages.truncate(tx, 30)?;
        r.t.split_off(tx, &50)?;
        r.h.retain(tx, |k, _| k % 2 == 0)
    })
    .unwrap();
    let report = verify(&pool).unwrap();
    assert_eq!(report.entries, 30 + 50 + 25 + "héllo".len() as u64 + 7 + 30 + 20);
}
