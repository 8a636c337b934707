//! `PConcurrentMap`'s shard locks are reader-writer locks: readers of one shard hold it at the
//! same time, a writer is kept out while a reader holds it, readers and writers together keep
//! every transaction's view consistent, concurrent upgrades of one shard let exactly one through,
//! and holds (shared, exclusive, a waiting writer's mark) left in a crash image are free after
//! reopening.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::shm_dir;
use ptm::{Error, Persistent, Pool, PoolOptions};
use ptm_collections::PConcurrentMap;

const SHARDS: usize = 8;
type Map = PConcurrentMap<u64, u64, SHARDS>;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: Map,
}

fn opts(timeout: Duration) -> PoolOptions {
    PoolOptions::new()
        .layout("concurrent_rw")
        .force_pmem(true)
        .lanes(8)
        .lock_timeout(timeout)
}

fn create(dir: &tempfile::TempDir, timeout: Duration) -> Pool<Root> {
    Pool::<Root>::create(dir.path().join("rw.pool"), 8 << 20, &opts(timeout)).unwrap()
}

/// The shard of `k` in `pool`'s map (its routing depends on the pool and the map).
fn shard_of(pool: &Pool<Root>, k: u64) -> usize {
    pool.transaction(|tx, r| r.m.shard_index(tx, &k)).unwrap()
}

/// The first `n` keys (from 1 up) that live in shard `shard` of `pool`'s map.
fn keys_in(pool: &Pool<Root>, shard: usize, n: usize) -> Vec<u64> {
    (1..).filter(|&k| shard_of(pool, k) == shard).take(n).collect()
}

/// Waits until `count` reaches `n`, failing the test after 20 s (instead of hanging).
fn rendezvous(count: &AtomicUsize, n: usize, what: &str) {
    count.fetch_add(1, Ordering::SeqCst);
    let t0 = Instant::now();
    while count.load(Ordering::SeqCst) < n {
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}: never met");
        std::thread::yield_now();
    }
}

#[test]
fn two_readers_hold_one_shard_at_once() {
    let dir = shm_dir();
    // A short timeout: with exclusive reads the second reader would fail with LockTimeout
    // while the first waits for it at the rendezvous (which then fails too).
    let pool = create(&dir, Duration::from_millis(500));
    let ks = keys_in(&pool, 3, 2);
    pool.transaction(|tx, r| {
        r.m.insert(tx, ks[0], 10)?;
        r.m.insert(tx, ks[1], 11)
    })
    .unwrap();
    let met = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..2 {
            let (pool, met, ks) = (&pool, &met, &ks);
            s.spawn(move || {
                pool.transaction(|tx, r| {
                    assert_eq!(r.m.get(tx, &ks[t])?, Some(10 + t as u64));
                    // Both transactions hold shard 3 shared here.
                    rendezvous(met, 2, "readers of one shard");
                    assert_eq!(r.m.get(tx, &ks[1 - t])?, Some(11 - t as u64));
                    assert_eq!(r.m.len(tx)?, 2);
                    Ok::<_, Error>(())
                })
                .unwrap();
            });
        }
    });
}

#[test]
fn writer_waits_while_a_reader_holds_the_shard() {
    let dir = shm_dir();
    let pool = create(&dir, Duration::from_millis(200));
    let ks = keys_in(&pool, 5, 2);
    let other = keys_in(&pool, 6, 1)[0];
    pool.transaction(|tx, r| r.m.insert(tx, ks[0], 1)).unwrap();
    let holding = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            pool.transaction(|tx, r| {
                assert_eq!(r.m.get(tx, &ks[0])?, Some(1));
                rendezvous(&holding, 2, "reader holding");
                let t0 = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    assert!(t0.elapsed() < Duration::from_secs(20), "writer never gave up");
                    std::thread::yield_now();
                }
                // Still the value from before: the writer never got in.
                assert_eq!(r.m.get(tx, &ks[0])?, Some(1));
                Ok::<_, Error>(())
            })
            .unwrap();
        });
        rendezvous(&holding, 2, "reader holding");
        // Same shard, another key: excluded until the reader's transaction ends.
        let t0 = Instant::now();
        let r = pool.transaction(|tx, r| r.m.insert(tx, ks[1], 2));
        assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
        assert!(t0.elapsed() >= Duration::from_millis(200));
        // Another shard is free; reads of the held shard are too (the timed-out writer's
        // waiting mark was withdrawn).
        pool.transaction(|tx, r| r.m.insert(tx, other, 3)).unwrap();
        assert_eq!(pool.transaction(|tx, r| r.m.get(tx, &ks[0])).unwrap(), Some(1));
        done.store(true, Ordering::SeqCst);
    });
    pool.transaction(|tx, r| r.m.insert(tx, ks[1], 2)).unwrap();
    let all = pool.transaction(|tx, r| r.m.to_vec(tx)).unwrap();
    assert_eq!(all.len(), 3);
}

#[test]
fn concurrent_upgrades_of_one_shard_let_exactly_one_through() {
    let dir = shm_dir();
    let pool = create(&dir, Duration::from_secs(10));
    let k = keys_in(&pool, 2, 1)[0];
    pool.transaction(|tx, r| r.m.insert(tx, k, 0)).unwrap();
    let met = AtomicUsize::new(0);
    let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (pool, met) = (&pool, &met);
                s.spawn(move || {
                    pool.transaction(|tx, r| {
                        let n = r.m.get(tx, &k)?.unwrap();
                        rendezvous(met, 2, "readers before upgrading");
                        r.m.insert(tx, k, n + 1)?; // upgrade
                        Ok::<_, Error>(())
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::LockUpgrade)))
        .count();
    assert_eq!((ok, refused), (1, 1), "{results:?}");
    assert_eq!(pool.transaction(|tx, r| r.m.get(tx, &k)).unwrap(), Some(1));
    // `get_for_update` takes the shard exclusively from the start: no upgrade, no refusal.
    std::thread::scope(|s| {
        for _ in 0..2 {
            let pool = &pool;
            s.spawn(move || {
                for _ in 0..50 {
                    pool.transaction(|tx, r| {
                        let n = r.m.get_for_update(tx, &k)?.unwrap();
                        r.m.insert(tx, k, n + 1)
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(pool.transaction(|tx, r| r.m.get(tx, &k)).unwrap(), Some(101));
}

/// Accounts spread over all shards; writers move amounts between two of them, readers check
/// that the total never changes.
const ACCOUNTS: u64 = 64;
const START: u64 = 1000;

#[test]
fn readers_and_writers_at_once_see_consistent_states() {
    let dir = shm_dir();
    let pool = create(&dir, Duration::from_secs(10));
    pool.transaction(|tx, r| {
        for a in 0..ACCOUNTS {
            r.m.insert(tx, a, START)?;
        }
        Ok::<_, Error>(())
    })
    .unwrap();
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let moves = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for w in 0..2u64 {
            let (pool, stop, moves) = (&pool, &stop, &moves);
            s.spawn(move || {
                let mut x = w + 1;
                for _ in 0..300 {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    let (a, b) = ((x >> 20) % ACCOUNTS, (x >> 40) % ACCOUNTS);
                    if a == b {
                        continue;
                    }
                    // Lock the two shards in ascending order (exclusively, so no upgrade).
                    let (first, second) = if shard_of(pool, a) <= shard_of(pool, b) {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    pool.transaction(|tx, r| {
                        let fa = r.m.get_for_update(tx, &first)?.unwrap();
                        let fb = r.m.get_for_update(tx, &second)?.unwrap();
                        let amount = (x & 7).min(fa);
                        r.m.insert(tx, first, fa - amount)?;
                        r.m.insert(tx, second, fb + amount)
                    })
                    .unwrap();
                    moves.fetch_add(1, Ordering::Relaxed);
                }
                stop.store(true, Ordering::SeqCst);
            });
        }
        for reader in 0..2 {
            let (pool, stop, reads) = (&pool, &stop, &reads);
            s.spawn(move || {
                while !stop.load(Ordering::SeqCst) || reads.load(Ordering::Relaxed) < 4 {
                    let total: u64 = pool
                        .transaction(|tx, r| {
                            if reader == 0 {
                                // Whole-map read: every shard shared, ascending.
                                Ok::<_, Error>(r.m.to_vec(tx)?.iter().map(|&(_, v)| v).sum())
                            } else {
                                // Key by key, in ascending shard order.
                                let mut ks = (0..ACCOUNTS)
                                    .map(|k| Ok((r.m.shard_index(tx, &k)?, k)))
                                    .collect::<Result<Vec<_>, Error>>()?;
                                ks.sort();
                                let mut t = 0;
                                for (_, k) in ks {
                                    t += r.m.get(tx, &k)?.unwrap();
                                }
                                Ok(t)
                            }
                        })
                        .unwrap();
                    assert_eq!(total, ACCOUNTS * START, "a reader saw a half-done move");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert!(moves.load(Ordering::Relaxed) > 0);
    let total: u64 = pool
        .transaction(|tx, r| Ok::<_, Error>(r.m.to_vec(tx)?.iter().map(|&(_, v)| v).sum()))
        .unwrap();
    assert_eq!(total, ACCOUNTS * START);
}

/// The lock word of shard `i` in a pool image: the map is the whole root, each shard one cache
/// line starting with its lock word.
fn shard_word(image: &[u8], pool: &Pool<Root>, i: usize) -> u64 {
    let off = pool.geometry().root_offset as usize + 64 * i;
    u64::from_le_bytes(image[off..off + 8].try_into().unwrap())
}

#[test]
fn holds_in_a_crash_image_are_free_after_reopen() {
    let dir = shm_dir();
    let path = dir.path().join("rw.pool");
    let image = dir.path().join("image.pool");
    let pool = create(&dir, Duration::from_secs(10));
    let (read_k, write_k) = (keys_in(&pool, 1, 1)[0], keys_in(&pool, 4, 1)[0]);
    pool.transaction(|tx, r| {
        r.m.insert(tx, read_k, 1)?;
        r.m.insert(tx, write_k, 2)
    })
    .unwrap();
    let generation = pool.generation();
    let holding = AtomicUsize::new(0);
    let copied = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Holds shard 1 shared and shard 4 exclusively while the image is taken.
        s.spawn(|| {
            pool.transaction(|tx, r| {
                r.m.get(tx, &read_k)?;
                r.m.insert(tx, write_k, 3)?;
                rendezvous(&holding, 2, "holder");
                while !copied.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                Ok::<_, Error>(())
            })
            .unwrap();
        });
        // Waits to write shard 1, marking it (no new readers).
        s.spawn(|| {
            rendezvous(&holding, 2, "writer");
            pool.transaction(|tx, r| r.m.insert(tx, read_k, 5)).unwrap();
        });
        let t0 = Instant::now();
        loop {
            std::fs::copy(&path, &image).unwrap();
            let bytes = std::fs::read(&image).unwrap();
            let words = [shard_word(&bytes, &pool, 1), shard_word(&bytes, &pool, 4)];
            // Both held in this open's generation, shard 1 also marked by the waiting writer
            // (its low bits then differ from a single reader's).
            let held = words
                .iter()
                .all(|w| (w >> 32) as u32 == generation && w & 0xFFFF_FFFF != 0);
            if held && words[0] & 0xFFFF_FFFF != 1 {
                // The copy that showed the holds read the lanes (before the root) perhaps before
                // the holder's transaction had logged: copy once more, wholly after its writes
                // (the holds stay until `copied`).
                std::fs::copy(&path, &image).unwrap();
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "holds never seen: {words:x?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        copied.store(true, Ordering::SeqCst);
    });
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &opts(Duration::from_millis(300))).unwrap();
    assert!(recovered.generation() > generation);
    // Shared, exclusive and upgraded holds on the formerly held shards: a stale hold waited for
    // would fail the transaction with `LockTimeout` (this pool's timeout is 300 ms), so the
    // `unwrap` is the check (no wall-clock bound, which a loaded machine could break).
    recovered
        .transaction(|tx, r| {
            assert_eq!(r.m.get(tx, &read_k)?, Some(1));
            r.m.insert(tx, read_k, 6)?;
            assert_eq!(r.m.get_for_update(tx, &write_k)?, Some(2), "rolled back");
            r.m.insert(tx, write_k, 7)
        })
        .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let v = recovered.transaction(|tx, r| r.m.to_vec(tx)).unwrap();
            assert_eq!(v.len(), 2);
        });
    });
}
