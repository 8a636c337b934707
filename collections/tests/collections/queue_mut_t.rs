//! Mutation-testing findings on `PQueue`'s shape check, front reservation and the side a
//! removal shifts (issue 19, mutT pass): each test pins a behaviour no other test observed.

use crate::common;

use std::path::Path;

use common::{opts, poke, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::PQueue;

use crate::queue_common::{page, seed_of, Page};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct R {
    q: PQueue<u64>,
    other: PQueue<u64>,
}

/// Offsets in the root of `q`'s words (`dir`, `dcap`, `dhead`, `ccap`, `head`, `len`).
const CCAP: u64 = 24;
const HEAD: u64 = 32;
const LEN: u64 = 40;

/// A pool with 3 values in `q` (a ring of 4 slots) and 2 in `other`; the root's offset.
fn make(path: &Path) -> u64 {
    let pool = Pool::<R>::create(path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        (0..3).try_for_each(|i| r.q.push(tx, i))?;
        (7..9).try_for_each(|i| r.other.push(tx, i))
    })
    .unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.q.capacity(tx), 4);
        Ok::<_, Error>(())
    })
    .unwrap();
    let root = pool.geometry().root_offset;
    pool.close().unwrap();
    root
}

/// A ring's `ccap` damaged into a value that every other check of the shape accepts (the
/// elements fit, `head` is below it, one chunk fits the directory) but that is not a power of
/// two, or is one below the first chunk's 4 slots: `check` and every read report an error.
/// (`queue_corrupt::damaged_handles_are_errors` damages `ccap` into 24, above the full chunk
/// of its pages, and 2, which its 40 pages overflow: other checks catch both.)
#[test]
fn a_ring_capacity_that_is_not_a_power_of_two_or_below_four_is_an_error() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    for (ccap, len, what) in [
        (6, 3, "ccap 6 (not a power of two)"),
        (12, 3, "ccap 12 (not a power of two)"),
        (2, 2, "ccap 2 (below the first chunk)"),
        (1, 1, "ccap 1 (below the first chunk)"),
    ] {
        let root = make(&path);
        poke(&path, root + CCAP, ccap);
        poke(&path, root + LEN, len);
        poke(&path, root + HEAD, 0);
        let pool = Pool::<R>::open(&path, &opts()).unwrap();
        pool.transaction(|tx, r| {
            assert_eq!(r.q.len(tx), 0, "{what}: len of a damaged queue");
            assert!(r.q.check(tx).is_err(), "{what}: check passed");
            assert!(r.q.get(tx, 0).is_err(), "{what}: get(0) succeeded");
            assert!(r.q.to_vec(tx).is_err(), "{what}: to_vec succeeded");
            assert!(r.q.push_front(tx, 9).is_err(), "{what}: push_front succeeded");
            assert_eq!(r.other.to_vec(tx)?, [7, 8], "{what}: the other queue");
            Ok::<_, Error>(())
        })
        .unwrap();
        drop(pool);
        std::fs::remove_file(&path).unwrap();
    }
}

/// `push_front` into a ring with a free slot takes the slot before the front: the ring keeps
/// its chunk and its 4 slots (it doubles only when full), and the values read in order.
#[test]
fn push_front_into_a_ring_with_room_keeps_its_chunk() {
    let dir = shm_dir();
    let pool = Pool::<R>::create(dir.path().join("f.pool"), POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| (0..2).try_for_each(|i| r.q.push(tx, i)))
        .unwrap();
    let before = pool.transaction(|tx, r| r.q.block_offsets(tx)).unwrap();
    for (x, len) in [(10, 3), (11, 4)] {
        pool.transaction(|tx, r| r.q.push_front(tx, x)).unwrap();
        pool.transaction(|tx, r| {
            assert_eq!(r.q.len(tx), len);
            assert_eq!(r.q.capacity(tx), 4, "a ring with room grew");
            assert_eq!(r.q.block_offsets(tx)?, before, "a ring with room moved");
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    // Full now: the next one doubles the ring.
    pool.transaction(|tx, r| r.q.push_front(tx, 12)).unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(r.q.capacity(tx), 8);
        assert_eq!(r.q.to_vec(tx)?, [12, 11, 10, 0, 1]);
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct PR {
    pages: PQueue<Page>,
}

/// Pages `0..to` pushed, then the first `pop` of them popped: with full chunks of 16 pages the
/// front is at slot `pop % 16` of the front chunk.
fn pages_pool(path: &Path, to: u64, pop: u64) -> Pool<PR> {
    let pool = Pool::<PR>::create(path, 16 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| (0..to).try_for_each(|i| r.pages.push(tx, page(i))))
        .unwrap();
    pool.transaction(|tx, r| (0..pop).try_for_each(|_| r.pages.pop(tx).map(drop)))
        .unwrap();
    pool
}

fn seeds(pool: &Pool<PR>) -> Vec<u64> {
    pool.transaction(|tx, r| r.pages.to_vec(tx))
        .unwrap()
        .iter()
        .map(|p| seed_of(p).expect("a page as written"))
        .collect()
}

/// `remove` shifts the shorter side: removing the front chunk's only element of a queue with
/// 9 more behind it moves nothing (the front side is empty) and frees the emptied front chunk;
/// removing next to the back moves the back side and frees an emptied back chunk. Either way
/// the capacity shows which side moved.
#[test]
fn remove_shifts_the_shorter_side_and_frees_the_chunk_it_empties() {
    let dir = shm_dir();
    // Front chunk: page 15 in its last slot; second chunk: pages 16..25.
    let pool = pages_pool(&dir.path().join("a.pool"), 25, 15);
    let cap = |pool: &Pool<PR>| {
        pool.transaction(|tx, r| Ok::<_, Error>(r.pages.capacity(tx)))
            .unwrap()
    };
    assert_eq!(cap(&pool), 32);
    let got = pool.transaction(|tx, r| r.pages.remove(tx, 0)).unwrap();
    assert_eq!(got.as_ref().and_then(seed_of), Some(15));
    assert_eq!(seeds(&pool), (16..25).collect::<Vec<_>>());
    assert_eq!(cap(&pool), 16, "the emptied front chunk was not freed");
    // Position 1 of 9 (page 17): the front side (1 page) moves, into the front chunk.
    pool.transaction(|tx, r| r.pages.remove(tx, 1)).unwrap();
    assert_eq!(seeds(&pool), [16, 18, 19, 20, 21, 22, 23, 24]);
    drop(pool);

    // 17 pages from slot 0: the back chunk holds page 16 alone.
    let pool = pages_pool(&dir.path().join("b.pool"), 17, 0);
    assert_eq!(cap(&pool), 32);
    // Position 15 of 17 (page 15): the back side (page 16) moves, the back chunk empties.
    let got = pool.transaction(|tx, r| r.pages.remove(tx, 15)).unwrap();
    assert_eq!(got.as_ref().and_then(seed_of), Some(15));
    let mut want: Vec<u64> = (0..15).collect();
    want.push(16);
    assert_eq!(seeds(&pool), want);
    assert_eq!(cap(&pool), 16, "the emptied back chunk was not freed");
    drop(pool);

    // Page 15 alone in the front chunk, then 3 pages in the second. Removing position 2: the
    // back side is shorter (1 page against 2) and moves, which keeps page 15 in the front
    // chunk: 2 chunks stay. (On a tie either side is a correct choice of equal cost; nothing
    // here depends on which.)
    let n = 4;
    let pool = pages_pool(&dir.path().join("t4.pool"), 15 + n, 15);
    let got = pool.transaction(|tx, r| r.pages.remove(tx, n / 2)).unwrap();
    assert_eq!(got.as_ref().and_then(seed_of), Some(15 + n / 2));
    let want: Vec<u64> = (15..15 + n).filter(|&x| x != 15 + n / 2).collect();
    assert_eq!(seeds(&pool), want);
    assert_eq!(cap(&pool), 32, "the front side moved");
}
