//! Review findings on `PQueue` and `PVec::reserve`, each a damaged pool that must give a clean
//! error or keep its visible contents, never a panic.

mod common;

use std::path::Path;

use common::{opts, shm_dir, POOL_SIZE};
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

fn poke(path: &Path, at: u64, v: u64) {
    let mut img = std::fs::read(path).unwrap();
    img[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    std::fs::write(path, img).unwrap();
}

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
