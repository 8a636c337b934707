//! A `PQueue` whose handle or directory was damaged: every method returns a clear error (or, for
//! `len`, 0), never panics, and `clear` frees nothing twice.

use crate::common;
use crate::queue_common;

use std::path::Path;

use common::*;
use ptm::{Error, Pool};
use queue_common::*;

/// Offset of `pages` in the root, and of its fields.
const PAGES: u64 = 48;
const DIR: u64 = 0;
const DCAP: u64 = 8;
const DHEAD: u64 = 16;
const CCAP: u64 = 24;
const HEAD: u64 = 32;
const LEN: u64 = 40;

/// A pool whose `pages` holds 40 pages (3 chunks of 16, a directory of 4 slots) and `small`
/// 3 values; returns the root's offset and the queue's blocks (directory first).
fn make(path: &Path) -> (u64, Vec<u64>) {
    let pool = Pool::<QRoot>::create(path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        (0..40).try_for_each(|i| r.pages.push(tx, page(i)))?;
        (0..3).try_for_each(|i| r.small.push(tx, i))
    })
    .unwrap();
    let blocks = pool.transaction(|tx, r| r.pages.block_offsets(tx)).unwrap();
    assert_eq!(blocks.len(), 4);
    let root = pool.geometry().root_offset;
    pool.close().unwrap();
    (root, blocks)
}

fn peek(path: &Path, at: u64) -> u64 {
    let img = std::fs::read(path).unwrap();
    u64::from_le_bytes(img[at as usize..at as usize + 8].try_into().unwrap())
}

/// Every method on the damaged queue fails cleanly; the other queue still works.
fn all_fail(pool: &Pool<QRoot>, what: &str) {
    pool.transaction(|tx, r| {
        assert_eq!(r.pages.len(tx), 0, "{what}: len of a damaged queue");
        let results = [
            r.pages.get(tx, 0).map(|_| ()),
            r.pages.get(tx, 39).map(|_| ()),
            r.pages.to_vec(tx).map(|_| ()),
            r.pages.block_offsets(tx).map(|_| ()),
            r.pages.push(tx, page(1)),
            r.pages.pop(tx).map(|_| ()),
            r.pages.clear(tx),
        ];
        for (i, res) in results.into_iter().enumerate() {
            let e = res.expect_err(&format!("{what}: method {i} succeeded"));
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(r.small.to_vec(tx)?, [0, 1, 2], "{what}: the other queue");
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn damaged_handles_are_errors() {
    let dir = shm_dir();
    let path = dir.path().join("x.pool");
    for (field, value, what) in [
        (DHEAD, 4, "dhead = dcap"),
        (DCAP, 0, "dcap = 0"),
        (DCAP, 2, "fewer directory slots than chunks"),
        (CCAP, 24, "ccap not a power of two"),
        (CCAP, 32, "ccap above the full chunk"),
        (CCAP, 2, "ccap below the first chunk"),
        (HEAD, 16, "head = ccap"),
        (LEN, u64::MAX, "len overflowing"),
        (LEN, 70, "len beyond the slots of the directory"),
    ] {
        let (root, _) = make(&path);
        poke(&path, root + PAGES + field, value);
        let pool = Pool::<QRoot>::open(&path, &opts()).unwrap();
        all_fail(&pool, what);
        drop(pool);
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn damaged_directory_is_an_error_and_nothing_is_freed_twice() {
    let dir = shm_dir();
    let path = dir.path().join("y.pool");
    // A chunk pointer copied over another: two slots designate one block.
    let (root, blocks) = make(&path);
    let d = blocks[0];
    poke(&path, d + 16, peek(&path, d + 8));
    let mut pool = Pool::<QRoot>::open(&path, &opts()).unwrap();
    let before = pool.allocated_blocks().unwrap();
    let r = pool.transaction(|tx, r| r.pages.clear(tx));
    assert!(
        matches!(r, Err(Error::InvalidFree { .. })),
        "clear of a directory with a duplicate: {r:?}"
    );
    assert_eq!(pool.allocated_blocks().unwrap(), before, "nothing freed");
    let r = pool.transaction(|tx, r| r.pages.block_offsets(tx));
    assert!(matches!(r, Err(Error::InvalidFree { .. })), "{r:?}");
    drop(pool);
    std::fs::remove_file(&path).unwrap();

    // A null chunk pointer.
    let (_, blocks) = make(&path);
    poke(&path, blocks[0] + 8, 0);
    let pool = Pool::<QRoot>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.pages.get(tx, 3)?, Some(page(3)), "the first chunk still reads");
        assert!(r.pages.get(tx, 20).is_err());
        assert!(r.pages.to_vec(tx).is_err());
        assert!(r.pages.block_offsets(tx).is_err());
        Ok::<_, Error>(())
    })
    .unwrap();
    assert!(pool.transaction(|tx, r| r.pages.clear(tx)).is_err());
    drop(pool);
    std::fs::remove_file(&path).unwrap();

    // No directory but a length: empty for `len`, an error for reads, and `clear` resets it.
    let (root2, _) = make(&path);
    assert_eq!(root2, root);
    poke(&path, root + PAGES + DIR, 0);
    let pool = Pool::<QRoot>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.pages.len(tx), 0);
        assert!(r.pages.get(tx, 0).is_err());
        assert!(r.pages.pop(tx).is_err());
        r.pages.clear(tx)?;
        assert_eq!(r.pages.to_vec(tx)?, Vec::<Page>::new());
        r.pages.push(tx, page(9))?;
        assert_eq!(r.pages.pop(tx)?, Some(page(9)));
        Ok::<_, Error>(())
    })
    .unwrap();
}
