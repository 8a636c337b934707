//! `PConcurrentMap` from several threads: disjoint and overlapping keys, inserts and removes,
//! then a model check after reopening the pool; 2 drains per insert/remove, 0 per read.

use crate::common;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashMap;

use common::{drains, shm_dir};
use ptm::{Error, Persistent, Pool, PoolOptions};
use ptm_collections::PConcurrentMap;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: PConcurrentMap<u64, u64, 8>,
}

fn assert_sync<T: Sync>(_: &T) {}

const THREADS: u64 = 4;
const OWN: u64 = 150;
const SHARED: u64 = 12;
const BUMPS: u64 = 60;

/// Keys owned by thread `t`: `(t + 1) << 32 | i`.
fn own_key(t: u64, i: u64) -> u64 {
    ((t + 1) << 32) | i
}

fn opts() -> PoolOptions {
    PoolOptions::new().layout("concurrent").force_pmem(true).lanes(4)
}

#[test]
fn threads_disjoint_and_overlapping_keys() {
    let dir = shm_dir();
    let path = dir.path().join("cm.pool");
    let mut pool = Pool::<Root>::create(&path, 8 << 20, &opts()).unwrap();
    assert_sync(&pool);
    // One cache line per shard.
    assert_eq!(std::mem::size_of::<PConcurrentMap<u64, u64, 8>>(), 8 * 64);
    assert_eq!(std::mem::align_of::<PConcurrentMap<u64, u64, 8>>(), 64);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let pool = &pool;
            s.spawn(move || {
                // Disjoint keys: insert, read, then remove the odd ones.
                for i in 0..OWN {
                    let (prev, d) = drains(|| {
                        pool.transaction(|tx, r| r.m.insert(tx, own_key(t, i), i))
                            .unwrap()
                    });
                    assert_eq!(prev, None);
                    assert_eq!(d, 2, "insert drains");
                }
                for i in 0..OWN {
                    let (v, d) = drains(|| pool.transaction(|tx, r| r.m.get(tx, &own_key(t, i))).unwrap());
                    assert_eq!(v, Some(i));
                    assert_eq!(d, 0, "get drains");
                }
                for i in (1..OWN).step_by(2) {
                    let (v, d) = drains(|| pool.transaction(|tx, r| r.m.remove(tx, &own_key(t, i))).unwrap());
                    assert_eq!(v, Some(i));
                    assert_eq!(d, 2, "remove drains");
                }
                // Overlapping keys: read-modify-write counters (atomic under the exclusive shard
                // lock, taken from the start by `get_for_update`, so no upgrade can fail), and a
                // key every thread inserts then removes.
                for b in 0..BUMPS {
                    let k = b % SHARED;
                    let d = drains(|| {
                        pool.transaction(|tx, r| {
                            let n = r.m.get_for_update(tx, &k)?.unwrap_or(0);
                            r.m.insert(tx, k, n + 1)
                        })
                        .unwrap()
                    })
                    .1;
                    assert_eq!(d, 2, "counter bump drains");
                    pool.transaction(|tx, r| {
                        r.m.insert(tx, 999, t)?;
                        r.m.remove(tx, &999)
                    })
                    .unwrap();
                }
            });
        }
    });
    let mut model = BTreeMap::new();
    for t in 0..THREADS {
        for i in (0..OWN).step_by(2) {
            model.insert(own_key(t, i), i);
        }
    }
    for k in 0..SHARED {
        model.insert(k, THREADS * BUMPS / SHARED);
    }
    // Nothing allocated outside the shards' tables.
    let tables: BTreeSet<u64> = pool
        .transaction(|tx, r| r.m.block_offsets(tx))
        .unwrap()
        .into_iter()
        .collect();
    let allocated: BTreeSet<u64> = pool
        .allocated_blocks()
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    assert_eq!(allocated, tables);
    drop(pool);

    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let (got, d) = drains(|| {
        pool.transaction(|tx, r| {
            assert_eq!(r.m.len(tx)?, model.len() as u64);
            for (k, v) in &model {
                assert_eq!(r.m.get(tx, k)?, Some(*v), "key {k:#x}");
            }
            assert!(!r.m.contains_key(tx, &999)?);
            Ok::<_, Error>(r.m.to_vec(tx)?.into_iter().collect::<BTreeMap<_, _>>())
        })
        .unwrap()
    });
    assert_eq!(got, model);
    assert_eq!(d, 0, "reads drain nothing");
    // Keys spread over every shard.
    let shards: BTreeSet<usize> = pool
        .transaction(|tx, r| model.keys().map(|k| r.m.shard_index(tx, k)).collect())
        .unwrap();
    assert_eq!(shards.len(), 8);

    pool.transaction(|tx, r| r.m.clear(tx)).unwrap();
    pool.transaction(|tx, r| {
        assert!(r.m.is_empty(tx)?);
        Ok::<_, Error>(())
    })
    .unwrap();
    assert!(pool.allocated_blocks().unwrap().is_empty());
}

#[test]
fn aborted_transaction_rolls_back_and_unlocks() {
    let dir = shm_dir();
    let path = dir.path().join("abort.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| r.m.insert(tx, 1, 10)).unwrap();
    let res = pool.transaction(|tx, r| {
        r.m.insert(tx, 1, 11)?;
        r.m.insert(tx, 2, 20)?;
        Err::<(), _>(Error::Aborted)
    });
    assert!(res.is_err());
    // Another thread can take the shard locks again and sees the old state.
    std::thread::scope(|s| {
        s.spawn(|| {
            pool.transaction(|tx, r| {
                assert_eq!(r.m.get(tx, &1)?, Some(10));
                assert_eq!(r.m.get(tx, &2)?, None);
                assert_eq!(r.m.len(tx)?, 1);
                Ok::<_, Error>(())
            })
            .unwrap();
        });
    });
}

/// One thread's operations, each against std's `HashMap`: what every method returns (`insert`,
/// `remove`, `remove_free`, `get`, `get_for_update`, `get_or_insert_with`, `contains_key`, `len`,
/// `is_empty`, `to_vec`, `to_vec_owned`), then `free` leaves nothing allocated, and `Debug`
/// names the shard count.
#[test]
fn one_threads_operations_match_std() {
    let dir = shm_dir();
    let path = dir.path().join("std.pool");
    let mut pool = Pool::<Root>::create(&path, 8 << 20, &opts()).unwrap();
    let mut model: HashMap<u64, u64> = HashMap::new();
    // xorshift64: a fixed sequence of operations on 48 keys.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for n in 0..600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (k, v, op) = (x % 48, x >> 40, (x >> 8) % 9);
        pool.transaction(|tx, r| {
            match op {
                0 | 1 => assert_eq!(r.m.insert(tx, k, v)?, model.insert(k, v), "{n}: insert {k}"),
                2 => assert_eq!(r.m.remove(tx, &k)?, model.remove(&k), "{n}: remove {k}"),
                3 => assert_eq!(
                    r.m.remove_free(tx, &k)?,
                    model.remove(&k).is_some(),
                    "{n}: remove_free {k}"
                ),
                4 => assert_eq!(r.m.get(tx, &k)?, model.get(&k).copied(), "{n}: get {k}"),
                5 => assert_eq!(
                    r.m.get_for_update(tx, &k)?,
                    model.get(&k).copied(),
                    "{n}: get_for_update {k}"
                ),
                6 => assert_eq!(
                    r.m.get_or_insert_with(tx, k, || v)?,
                    *model.entry(k).or_insert(v),
                    "{n}: get_or_insert_with {k}"
                ),
                7 => assert_eq!(
                    r.m.contains_key(tx, &k)?,
                    model.contains_key(&k),
                    "{n}: contains_key {k}"
                ),
                _ => {
                    assert_eq!(r.m.len(tx)?, model.len() as u64, "{n}: len");
                    assert_eq!(r.m.is_empty(tx)?, model.is_empty(), "{n}: is_empty");
                }
            }
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    let want: BTreeMap<u64, u64> = model.into_iter().collect();
    assert!(!want.is_empty());
    pool.transaction(|tx, r| {
        let got = r.m.to_vec(tx)?;
        assert_eq!(got.len(), want.len());
        assert_eq!(got.into_iter().collect::<BTreeMap<_, _>>(), want, "to_vec");
        let owned = r.m.to_vec_owned(tx)?;
        assert_eq!(owned.len(), want.len());
        assert_eq!(
            owned.into_iter().collect::<BTreeMap<_, _>>(),
            want,
            "to_vec_owned"
        );
        assert!(!r.m.is_empty(tx)?);
        assert_eq!(format!("{:?}", r.m), "PConcurrentMap { shards: 8, .. }");
        Ok::<_, Error>(())
    })
    .unwrap();
    assert!(!pool.allocated_blocks().unwrap().is_empty());
    pool.transaction(|tx, r| r.m.free(tx)).unwrap();
    pool.transaction(|tx, r| {
        assert!(r.m.is_empty(tx)?);
        assert_eq!(r.m.len(tx)?, 0);
        Ok::<_, Error>(())
    })
    .unwrap();
    assert!(pool.allocated_blocks().unwrap().is_empty(), "free left blocks");
}

/// `get_many` answers as one `get` per key, in the keys' order, over keys spread across every
/// shard (present, absent and repeated), while another thread inserts into the same map; and it
/// takes no drain.
#[test]
fn get_many_answers_as_get_across_shards() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("gm.pool"), 32 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for k in (0..2000u64).filter(|k| k % 3 != 0) {
            r.m.insert(tx, k, k * 10)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let keys: Vec<u64> = (0..700u64).map(|i| (i * 7919) % 2100).chain([5, 5, 6]).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            for k in 10_000..10_200u64 {
                pool.transaction(|tx, r| r.m.insert(tx, k, k)).unwrap();
            }
        });
        for _ in 0..20 {
            let ((many, one), d) = drains(|| {
                pool.transaction(|tx, r| {
                    let many = r.m.get_many(tx, &keys)?;
                    let one = keys
                        .iter()
                        .map(|k| r.m.get(tx, k))
                        .collect::<ptm::Result<Vec<_>>>()?;
                    Ok::<_, Error>((many, one))
                })
                .unwrap()
            });
            assert_eq!(d, 0, "a read");
            assert_eq!(many, one);
            let want: Vec<Option<u64>> = keys
                .iter()
                .map(|&k| (k < 2000 && k % 3 != 0).then_some(k * 10))
                .collect();
            assert_eq!(many, want);
        }
    });
}
