//! Review findings on `PQueue` and `PVec::reserve`, each a damaged pool that must give a clean
//! error or keep its visible contents, never a panic.

use crate::common;

use std::path::Path;

use common::{opts, poke, shm_dir, POOL_SIZE};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PQueue, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct R {
    q: PQueue<u64>,
    v: PVec<u64>,
}

/// Offsets in the root: the queue's words, then the vector's.
const DCAP: u64 = 8;
const CCAP: u64 = 24;
const HEAD: u64 = 32;
const LEN: u64 = 40;
const V_LEN: u64 = 48 + 8;

/// A pool with 3 values in `q` (a ring of 4) and 3 in `v` (capacity 4); the root's offset.
fn make(path: &Path) -> u64 {
    let pool = Pool::<R>::create(path, POOL_SIZE, &opts()).unwrap();
    pool.transaction(|tx, r| {
        (0..3).try_for_each(|i| r.q.push(tx, i))?;
        r.v.extend(tx, 0..3)
    })
    .unwrap();
    let root = pool.geometry().root_offset;
    pool.close().unwrap();
    root
}

/// A handle whose (unvalidatable) `ccap` and `dcap` were damaged into a chunked queue of 2^51
/// chunks, with a `len` near `u64::MAX`: `shape` accepts it (`chunks <= dcap`), and a push
/// computed the room of the chunks in use as `chunks * ccap`, which overflows (a panic in
/// debug builds, as the fuzz targets and tests run; a wrapped room in release).
#[test]
fn push_on_a_handle_whose_room_overflows_is_an_error() {
    let dir = shm_dir();
    let path = dir.path().join("o.pool");
    let root = make(&path);
    poke(&path, root + CCAP, 8192);
    poke(&path, root + DCAP, 1 << 52);
    poke(&path, root + HEAD, 0);
    poke(&path, root + LEN, u64::MAX - 1);
    let pool = Pool::<R>::open(&path, &opts()).unwrap();
    let r = pool.transaction(|tx, r| r.q.push(tx, 7));
    assert!(r.is_err(), "push on a damaged handle: {r:?}");
    let r = pool.transaction(|tx, r| r.q.pop(tx));
    assert!(r.is_err(), "pop on a damaged handle: {r:?}");
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.q.len(tx))).unwrap(), 0);
    // The rest of the pool still works.
    let v = pool.transaction(|tx, r| r.v.to_vec(tx)).unwrap();
    assert_eq!(v, [0, 1, 2]);
}

/// `PVec::reserve` on a handle whose `len` word exceeds the capacity (a damaged length, read
/// clamped to the capacity) must keep the visible length, as every other growth path does by
/// storing the length it used: it left the damaged word in place, so the length jumped to the
/// new capacity and exposed slots the vector never wrote.
#[test]
fn reserve_keeps_the_visible_length_of_a_damaged_vector() {
    let dir = shm_dir();
    let path = dir.path().join("v.pool");
    let root = make(&path);
    poke(&path, root + V_LEN, 1000);
    let pool = Pool::<R>::open(&path, &opts()).unwrap();
    let (len, cap) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.v.len(tx), r.v.capacity(tx))))
        .unwrap();
    assert_eq!((len, cap), (4, 4), "the damaged length reads clamped");
    pool.transaction(|tx, r| r.v.reserve(tx, 10)).unwrap();
    let (after, cap) = pool
        .transaction(|tx, r| Ok::<_, Error>((r.v.len(tx), r.v.capacity(tx))))
        .unwrap();
    assert!(cap >= 14, "reserve grew: {cap}");
    assert_eq!(after, len, "reserve changed the visible length");
}

/// A 4 KiB element: full chunks of 16, so chunk boundaries, directory doublings and
/// wrap-arounds come every few dozen operations.
type Page = [u64; 512];

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct P {
    q: PQueue<Page>,
}

fn page(x: u64) -> Page {
    let mut p = [x; 512];
    p[511] = !x;
    p
}

/// Random runs of pushes and pops (some transactions aborted) against a `VecDeque`: after every
/// transaction `get(pos)` at every position, `get(len)`, and the queue's blocks (a directory and
/// `max(1, ⌈(head + len) / 16⌉)` chunks, `head` tracked by the model of the layout) match.
#[test]
fn get_at_every_position_and_chunk_count_match_the_model() {
    let dir = shm_dir();
    let pool = Pool::<P>::create(dir.path().join("p.pool"), 16 << 20, &opts()).unwrap();
    let mut model = std::collections::VecDeque::new();
    // The layout model: ring capacity (0: no chunk) and the front's slot.
    let (mut ccap, mut head) = (0u64, 0u64);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut next = 0u64;
    let (mut most_blocks, mut emptied) = (0, 0);
    for round in 0..400 {
        // Biased towards growth early, towards draining late.
        let ops: Vec<bool> = (0..rnd(40))
            .map(|_| rnd(100) < if round < 200 { 60 } else { 40 })
            .collect();
        let abort = rnd(8) == 0;
        let r: Result<(), Error> = pool.transaction(|tx, r| {
            let mut x = next;
            for &push in &ops {
                if push {
                    x += 1;
                    r.q.push(tx, page(x))?;
                } else {
                    r.q.pop(tx)?;
                }
            }
            if abort {
                return Err(ptm::pmem_core::Error::NullPointer.into());
            }
            Ok(())
        });
        if abort {
            assert!(r.is_err());
            continue;
        }
        r.unwrap();
        for &push in &ops {
            let len = model.len() as u64;
            if push {
                next += 1;
                model.push_back(next);
                if ccap == 0 {
                    (ccap, head) = (4, 0);
                } else if ccap < 16 && len == ccap {
                    (ccap, head) = (ccap * 2, 0);
                }
            } else if model.pop_front().is_some() {
                head = if len == 1 { 0 } else { (head + 1) % ccap };
            }
        }
        pool.transaction(|tx, r| {
            let len = r.q.len(tx);
            assert_eq!(len, model.len() as u64, "round {round}");
            for (pos, &x) in (0u64..).zip(&model) {
                assert_eq!(r.q.get(tx, pos)?, Some(page(x)), "round {round}: get({pos})");
            }
            assert_eq!(r.q.get(tx, len)?, None);
            let chunks = if ccap == 0 {
                0
            } else if ccap < 16 {
                1
            } else {
                (head + len).div_ceil(16).max(1)
            };
            let blocks = r.q.block_offsets(tx)?.len() as u64;
            assert_eq!(
                blocks,
                if chunks == 0 { 0 } else { 1 + chunks },
                "round {round}: blocks"
            );
            most_blocks = most_blocks.max(blocks);
            emptied += u64::from(chunks > 0 && len == 0);
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    // The walk went through many chunks (directory doublings) and emptied a chunked queue.
    assert!(
        most_blocks > 9 && emptied > 0,
        "{most_blocks} blocks at most, emptied {emptied}"
    );
    let mut pool = pool;
    let owned: std::collections::BTreeSet<u64> = pool
        .transaction(|tx, r| r.q.block_offsets(tx))
        .unwrap()
        .into_iter()
        .collect();
    common::assert_allocated_exactly(&mut pool, &owned, "end");
}
