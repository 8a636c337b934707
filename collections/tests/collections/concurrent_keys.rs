//! `PConcurrentMap` with `PString` keys and nested `PVec` values: threads creating and growing
//! nested vectors under shared keys, drains, reopen, and exact block ownership after removals
//! and `clear`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{add_block, assert_allocated_exactly, drains, opts, shm_dir};
use ptm::{Error, Persistent, Pool};
use ptm_collections::{PConcurrentMap, PString, PVec};

const SHARDS: usize = 4;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    tags: PConcurrentMap<PString, PVec<u64>, SHARDS>,
    ages: PConcurrentMap<PString, u64, SHARDS>,
}

const THREADS: u64 = 2;
const ROUNDS: u64 = 150;
const NAMES: u64 = 40;

fn name(i: u64) -> String {
    format!("user-{i:03}-with-a-name-longer-than-a-word")
}

/// Every key's vector and the `ages` entries, read through the exclusive shard locks.
fn contents(pool: &Pool<Root>) -> (BTreeMap<String, Vec<u64>>, BTreeMap<String, u64>) {
    pool.transaction(|tx, r| {
        let (mut tags, mut ages) = (BTreeMap::new(), BTreeMap::new());
        for i in 0..SHARDS {
            for (k, v) in r.tags.lock_shard(tx, i)?.iter_refs(tx) {
                let k = k.as_string(tx)?;
                assert_eq!(r.tags.shard_index(tx, &k)?, i, "{k}");
                tags.insert(k, v.to_vec(tx)?);
            }
            for (k, v) in r.ages.lock_shard(tx, i)?.iter(tx) {
                ages.insert(k.as_string(tx)?, v);
            }
        }
        Ok::<_, Error>((tags, ages))
    })
    .unwrap()
}

/// Blocks reachable from the root: shard blocks, key buffers, nested buffers.
fn reachable(pool: &Pool<Root>) -> BTreeSet<u64> {
    pool.transaction(|tx, r| {
        let mut out = BTreeSet::new();
        for b in r
            .tags
            .block_offsets(tx)?
            .into_iter()
            .chain(r.ages.block_offsets(tx)?)
        {
            add_block(&mut out, Some(b));
        }
        for i in 0..SHARDS {
            for (k, v) in r.tags.lock_shard(tx, i)?.iter_refs(tx) {
                add_block(&mut out, k.buffer_offset(tx));
                add_block(&mut out, v.buffer_offset(tx));
            }
            for (k, _) in r.ages.lock_shard(tx, i)?.iter(tx) {
                add_block(&mut out, k.buffer_offset(tx));
            }
        }
        Ok::<_, Error>(out)
    })
    .unwrap()
}

#[test]
fn threads_grow_nested_vectors_under_string_keys() {
    let dir = shm_dir();
    let path = dir.path().join("c.pool");
    let pool = Pool::<Root>::create(&path, 16 << 20, &opts()).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let pool = &pool;
            s.spawn(move || {
                for round in 0..ROUNDS {
                    let k = name((round * 7 + t * 3) % NAMES);
                    let x = t * 1_000_000 + round;
                    loop {
                        let r = pool.transaction(|tx, r| {
                            r.tags.get_or_insert_new(tx, k.as_str())?.push(tx, x)?;
                            let n = r.ages.get_for_update(tx, &k)?.unwrap_or(0);
                            r.ages.insert(tx, k.as_str(), n + 1)?;
                            Ok::<_, Error>(())
                        });
                        match r {
                            Ok(()) => break,
                            Err(Error::LockTimeout { .. } | Error::LockUpgrade) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
        }
    });
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let (tags, ages) = contents(&pool);
    // Every push is there exactly once, in each thread's order, and the counts agree.
    let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for t in 0..THREADS {
        for round in 0..ROUNDS {
            want.entry(name((round * 7 + t * 3) % NAMES))
                .or_default()
                .push(t * 1_000_000 + round);
        }
    }
    for (k, v) in &tags {
        let mut got = v.clone();
        got.sort_unstable();
        assert_eq!(&got, &want[k], "{k}");
        assert_eq!(ages[k], v.len() as u64, "{k}");
        for t in 0..THREADS {
            let mine: Vec<u64> = v.iter().copied().filter(|x| x / 1_000_000 == t).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{k}: thread {t} order");
        }
    }
    assert_eq!(tags.len(), want.len());
    let owned = reachable(&pool);
    assert_allocated_exactly(&mut pool, &owned, "after the threads");
    // Removing frees keys and nested vectors; clear frees the rest.
    pool.transaction(|tx, r| {
        for i in (0..NAMES).step_by(2) {
            assert!(r.tags.remove_free(tx, &name(i))?);
            assert!(r.ages.remove(tx, &name(i))?.is_some());
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let owned = reachable(&pool);
    assert_allocated_exactly(&mut pool, &owned, "after removals");
    pool.transaction(|tx, r| {
        r.tags.clear(tx)?;
        r.ages.clear(tx)
    })
    .unwrap();
    assert_allocated_exactly(&mut pool, &BTreeSet::new(), "after clear");
}

#[test]
fn string_key_operations_cost_two_drains() {
    let dir = shm_dir();
    let pool = Pool::<Root>::create(dir.path().join("d.pool"), 16 << 20, &opts()).unwrap();
    for i in 0..300 {
        let k = name(i);
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.ages.insert(tx, k.as_str(), i))
                .unwrap()
        });
        assert_eq!(d, 2, "insert {k}");
        let (_, d) = drains(|| {
            pool.transaction(|tx, r| r.tags.get_or_insert_new(tx, k.as_str()).map(|_| ()))
                .unwrap()
        });
        assert_eq!(d, 2, "get_or_insert_new {k}");
    }
    let (v, d) = drains(|| pool.transaction(|tx, r| r.ages.get(tx, &name(7))).unwrap());
    assert_eq!((v, d), (Some(7), 0), "get");
    let (v, d) = drains(|| {
        pool.transaction(|tx, r| r.ages.contains_key(tx, "nobody"))
            .unwrap()
    });
    assert_eq!((v, d), (false, 0), "contains_key");
    let (v, d) = drains(|| pool.transaction(|tx, r| r.ages.remove(tx, &name(7))).unwrap());
    assert_eq!((v, d), (Some(7), 2), "remove");
    let (v, d) = drains(|| {
        pool.transaction(|tx, r| r.tags.remove_free(tx, &name(8)))
            .unwrap()
    });
    assert_eq!((v, d), (true, 2), "remove_free");
    let len = pool.transaction(|tx, r| r.ages.len(tx)).unwrap();
    assert_eq!(len, 299);
    // Every shard at once, nested vectors and key buffers freed: one snapshot batch.
    let (_, d) = drains(|| pool.transaction(|tx, r| r.tags.clear(tx)).unwrap());
    assert_eq!(d, 2, "clear");
    assert_eq!(pool.transaction(|tx, r| r.tags.len(tx)).unwrap(), 0);
}

/// `get_ref` against std's `BTreeMap<String, Vec<u64>>`: nested vectors made and grown through
/// `get_or_insert_new` are read back through `get_ref` (`None` for absent keys), also after a
/// reopen; `free` then frees the shards, the key buffers and the nested vectors.
#[test]
fn get_ref_reads_the_nested_vectors_as_std() {
    let dir = shm_dir();
    let path = dir.path().join("r.pool");
    let pool = Pool::<Root>::create(&path, 16 << 20, &opts()).unwrap();
    let mut want: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    pool.transaction(|tx, r| {
        for i in 0..60u64 {
            let k = name(i * 7 % 20);
            r.tags.get_or_insert_new(tx, k.as_str())?.push(tx, i)?;
            want.entry(k).or_default().push(i);
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    drop(pool);
    let mut pool = Pool::<Root>::open(&path, &opts()).unwrap();
    pool.transaction(|tx, r| {
        for i in 0..24 {
            let k = name(i);
            let got = r.tags.get_ref(tx, &k)?.map(|v| v.to_vec(tx)).transpose()?;
            assert_eq!(got.as_ref(), want.get(&k), "{k}");
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    pool.transaction(|tx, r| r.tags.free(tx)).unwrap();
    assert_allocated_exactly(&mut pool, &BTreeSet::new(), "after free");
}
