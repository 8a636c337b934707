//! `PHashMap`'s lookup fast path (design §13.4): a lookup in a full-size pair-layout segment
//! takes the segment's geometry from constants, and only other segments (smaller ones, those
//! of older builds' layout) go through the general checks. Counted with
//! `ptm_collections::general_segment_opens`, a per-thread count, not a time.

use crate::common;

use common::{create, shm_dir, Root};
use ptm::{Error, Pool};
use ptm_collections::{general_segment_opens, write_legacy_segments};

/// Key `i`, scattered as the benchmarks scatter theirs.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Inserts keys `0..n` (value `i` for key `i`), 1000 to a transaction.
fn fill(pool: &Pool<Root>, n: u64) {
    let all: Vec<u64> = (0..n).collect();
    for chunk in all.chunks(1000) {
        pool.transaction(|tx, r| {
            for &i in chunk {
                r.m.insert(tx, key(i), i)?;
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    }
}

/// General-path opens spent by `f` on this thread.
fn general_opens<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = general_segment_opens();
    let r = f();
    (r, general_segment_opens() - before)
}

/// A map of 20 000 `u64` keys holds only full-size segments (the first segment doubles to full
/// size before any split, and a split makes full-size halves): every get, hit or miss, and
/// every insert and removal takes the fast path.
#[test]
fn a_large_map_never_opens_a_segment_the_general_way() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "fast.pool");
    let n = 20_000;
    fill(&pool, n);
    let ((), opens) = general_opens(|| {
        pool.transaction(|tx, r| {
            for i in 0..n + 100 {
                let want = (i < n).then_some(i);
                assert_eq!(r.m.get(tx, &key(i))?, want, "key {i}");
            }
            assert_eq!(r.m.insert(tx, key(n), n)?, None);
            assert_eq!(r.m.remove(tx, &key(0))?, Some(0));
            Ok::<_, Error>(())
        })
        .unwrap()
    });
    assert_eq!(opens, 0, "general-path opens in a map of full-size segments");
}

/// A map of 10 keys lives in one small segment: each get opens it the general way, and still
/// finds its key.
#[test]
fn a_small_segment_is_opened_the_general_way() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "small.pool");
    pool.transaction(|tx, r| {
        for i in 0..10 {
            r.m.insert(tx, key(i), i)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let ((), opens) = general_opens(|| {
        pool.transaction(|tx, r| {
            for i in 0..10 {
                assert_eq!(r.m.get(tx, &key(i))?, Some(i));
            }
            Ok::<_, Error>(())
        })
        .unwrap()
    });
    assert_eq!(opens, 10);
}

/// Full-size segments in the layout of builds before the pair layout (separate key and value
/// arrays, no pair flag) are not what the fast path assumes: every get takes the general path
/// and reads them right.
#[test]
fn segments_of_the_older_layout_take_the_general_path() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "legacy.pool");
    let n = 10_000;
    write_legacy_segments(true);
    fill(&pool, n);
    write_legacy_segments(false);
    let ((), opens) = general_opens(|| {
        pool.transaction(|tx, r| {
            for i in 0..n {
                assert_eq!(r.m.get(tx, &key(i))?, Some(i), "key {i}");
            }
            Ok::<_, Error>(())
        })
        .unwrap()
    });
    assert_eq!(opens, n);
}
