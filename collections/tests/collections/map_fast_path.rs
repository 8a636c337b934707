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

/// Builds a map in `pool` (segments in the older layout when `legacy`): keys `0..n`, then the
/// keys `gone` removed, those of them in `back` put back with value `i + n`.
fn build(pool: &Pool<Root>, legacy: bool, n: u64, gone: &[u64], back: &[u64]) {
    write_legacy_segments(legacy);
    fill(pool, n);
    for chunk in gone.chunks(1000) {
        pool.transaction(|tx, r| {
            for &i in chunk {
                assert_eq!(r.m.remove(tx, &key(i))?, Some(i));
                if back.contains(&i) {
                    r.m.insert(tx, key(i), i + n)?;
                }
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    write_legacy_segments(false);
}

/// `get`, `contains_key` and `get_many` of every key in `keys`, with the general-path opens
/// they cost.
#[allow(clippy::type_complexity)]
fn look_up(pool: &Pool<Root>, keys: &[u64]) -> ((Vec<Option<u64>>, Vec<bool>, Vec<Option<u64>>), u64) {
    general_opens(|| {
        pool.transaction(|tx, r| {
            let mut got = Vec::new();
            let mut has = Vec::new();
            for k in keys {
                got.push(r.m.get(tx, k)?);
                has.push(r.m.contains_key(tx, k)?);
            }
            Ok::<_, Error>((got, has, r.m.get_many(tx, keys)?))
        })
        .unwrap()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The fast path answers exactly as the general one and as the model. Twin maps take the
    /// same operations: one in this build's layout (every lookup on the fast path: no general
    /// open), one in the older layout (every lookup on the general path, which probes slot by
    /// slot). `n` keys, then about `removed_pct`% of them removed, then a quarter of those put
    /// back with new values; every key ever inserted and 500 never inserted are looked up with
    /// `get`, `contains_key` and `get_many`. Lookups run through whole groups of tombstones and
    /// full slots, and wrap from a segment's last group to its first.
    #[test]
    #[cfg_attr(miri, ignore = "pools are files")]
    fn the_fast_path_answers_as_the_general_path_and_the_model(
        n in 3000..9000u64,
        removed_pct in 0..90u64,
        seed in 1..u64::MAX,
    ) {
        let mut x = seed;
        let gone: Vec<u64> = (0..n).filter(|_| next(&mut x) % 100 < removed_pct).collect();
        let back: Vec<u64> = gone.iter().copied().filter(|_| next(&mut x).is_multiple_of(4)).collect();
        let mut model: HashMap<u64, u64> = (0..n).map(|i| (key(i), i)).collect();
        for i in &gone {
            model.remove(&key(*i));
        }
        for i in &back {
            model.insert(key(*i), i + n);
        }
        let dir = shm_dir();
        let (fast, _) = create(&dir, "fast.pool");
        let (general, _) = create(&dir, "general.pool");
        build(&fast, false, n, &gone, &back);
        build(&general, true, n, &gone, &back);
        let keys: Vec<u64> = (0..n + 500).map(key).collect();
        let (on_fast, fast_opens) = look_up(&fast, &keys);
        let (on_general, general_opens) = look_up(&general, &keys);
        prop_assert_eq!(fast_opens, 0, "general opens (the map must hold full-size segments only)");
        prop_assert!(general_opens >= 2 * keys.len() as u64, "older-layout lookups take the general path");
        let want: Vec<Option<u64>> = keys.iter().map(|k| model.get(k).copied()).collect();
        prop_assert_eq!(&on_fast.0, &want);
        prop_assert_eq!(&on_fast.2, &want);
        prop_assert_eq!(&on_fast, &on_general);
        let present: Vec<bool> = want.iter().map(Option::is_some).collect();
        prop_assert_eq!(on_fast.1, present);
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
