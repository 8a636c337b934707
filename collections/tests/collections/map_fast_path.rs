//! `PHashMap`'s lookup fast path (design §13.4): a lookup in a full-size pair-layout segment
//! takes the segment's geometry from constants, and only other segments (smaller ones, those
//! of older builds' layout) go through the general checks. Counted with
//! `ptm_collections::general_segment_opens`, a per-thread count, not a time.

use std::collections::HashMap;

use crate::common;

use common::{create, shm_dir, Root};
use proptest::prelude::*;
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

/// Steps of a xorshift generator (the tests' own choices, reproducible from a seed).
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The fast path answers exactly as the model, and as `get_many` (which probes the general
    /// way, slot by slot), in maps of full-size segments holding tombstones: `n` keys, then
    /// about `removed_pct`% of them removed, then some of those put back with new values.
    /// Every key ever inserted and 500 never inserted are looked up with `get` and
    /// `contains_key`, all through the fast path (no general open). Lookups run through whole
    /// groups of tombstones and full slots, and wrap from a segment's last group to its first.
    #[test]
    #[cfg_attr(miri, ignore = "pools are files")]
    fn the_fast_path_answers_as_the_model(
        n in 3000..9000u64,
        removed_pct in 0..90u64,
        seed in 1..u64::MAX,
    ) {
        let dir = shm_dir();
        let (pool, _) = create(&dir, "model.pool");
        fill(&pool, n);
        let mut model: HashMap<u64, u64> = (0..n).map(|i| (key(i), i)).collect();
        let mut x = seed;
        let gone: Vec<u64> = (0..n).filter(|_| next(&mut x) % 100 < removed_pct).collect();
        for chunk in gone.chunks(1000) {
            pool.transaction(|tx, r| {
                for &i in chunk {
                    assert_eq!(r.m.remove(tx, &key(i))?, Some(i));
                    model.remove(&key(i));
                    if next(&mut x).is_multiple_of(4) {
                        r.m.insert(tx, key(i), i + n)?;
                        model.insert(key(i), i + n);
                    }
                }
                Ok::<_, Error>(())
            })
            .unwrap();
        }
        let keys: Vec<u64> = (0..n + 500).map(key).collect();
        let (many, opens) = general_opens(|| {
            pool.transaction(|tx, r| {
                for k in &keys {
                    let want = model.get(k).copied();
                    prop_assert_eq!(r.m.get(tx, k)?, want);
                    prop_assert_eq!(r.m.contains_key(tx, k)?, want.is_some());
                }
                Ok(r.m.get_many(tx, &keys)?)
            })
        });
        prop_assert_eq!(opens, 0, "general opens (the map must hold full-size segments only)");
        let many = many?;
        for (k, v) in keys.iter().zip(many) {
            prop_assert_eq!(v, model.get(k).copied());
        }
    }
}

/// A map whose pairs do not divide a cache line (3-byte keys, 2-byte values: 6-byte pairs,
/// some across two lines) answers through the fast path as its model does.
#[test]
fn odd_pairs_take_the_fast_path_and_answer_right() {
    let dir = shm_dir();
    let (pool, _) = create(&dir, "odd.pool");
    let k3 = |i: u64| -> [u8; 3] {
        let b = key(i).to_le_bytes();
        [b[5], b[6], b[7]]
    };
    let mut model: HashMap<[u8; 3], u16> = HashMap::new();
    let all: Vec<u64> = (0..12_000).collect();
    for chunk in all.chunks(1000) {
        pool.transaction(|tx, r| {
            for &i in chunk {
                r.m2.insert(tx, k3(i), i as u16)?;
                model.insert(k3(i), i as u16);
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    pool.transaction(|tx, r| {
        for i in (0..12_000).step_by(3) {
            r.m2.remove(tx, &k3(i))?;
            model.remove(&k3(i));
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let ((), opens) = general_opens(|| {
        pool.transaction(|tx, r| {
            for i in 0..13_000 {
                assert_eq!(r.m2.get(tx, &k3(i))?, model.get(&k3(i)).copied(), "key {i}");
            }
            Ok::<_, Error>(())
        })
        .unwrap()
    });
    assert_eq!(opens, 0);
}
