//! Guards concurrency: threads transacting on disjoint data and on shared data under `PMutex`
//! (bank transfers keep the total), more threads than lanes, deadlock ending in `LockTimeout`,
//! `PRwLock` readers sharing and upgrades, and no lane ever held by two threads at once (an
//! in-process race test beside the loom models).

use crate::common;

use std::sync::Barrier;
use std::time::Duration;

use ptm::{Error, PCell, PMutex, PRwLock, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Account {
    balance: PCell<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Bank {
    accounts: [PMutex<Account>; 16],
    counters: [PMutex<PCell<u64>>; 4],
    rw: PRwLock<u64>,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn bank(dir: &tempfile::TempDir, lanes: u32) -> Pool<Bank> {
    let opts = common::pmem()
        .lanes(lanes)
        .lock_timeout(Duration::from_millis(500));
    let pool = Pool::<Bank>::create(common::path(dir, "bank.pool"), 16 << 20, &opts).unwrap();
    pool.transaction(|tx, b| {
        b.accounts
            .iter()
            .try_for_each(|a| a.lock(tx)?.balance.set(tx, 1000))
    })
    .unwrap();
    pool
}

fn total(pool: &Pool<Bank>) -> u64 {
    pool.transaction(|tx, b| {
        b.accounts
            .iter()
            .map(|a| Ok(a.lock(tx)?.balance.get(tx)))
            .sum::<Result<u64, Error>>()
    })
    .unwrap()
}

fn transfer(pool: &Pool<Bank>, from: usize, to: usize, amount: u64) -> Result<bool, Error> {
    pool.transaction(|tx, b| {
        let (lo, hi) = (from.min(to), from.max(to));
        let first = b.accounts[lo].lock(tx)?; // ascending order: no deadlock
        let second = b.accounts[hi].lock(tx)?;
        let (src, dst) = if from < to {
            (first, second)
        } else {
            (second, first)
        };
        if src.balance.get(tx) < amount {
            return Ok(false);
        }
        src.balance.set(tx, src.balance.get(tx) - amount)?;
        dst.balance.set(tx, dst.balance.get(tx) + amount)?;
        Ok(true)
    })
}

#[test]
fn concurrent_transfers_preserve_the_total() {
    let dir = common::shm_dir();
    let pool = bank(&dir, 64);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let pool = &pool;
            s.spawn(move || {
                let mut rng = 0x9E37_79B9 ^ ((t + 1) * 0x1234_5678);
                for _ in 0..500 {
                    let from = (xorshift(&mut rng) % 16) as usize;
                    let to = (xorshift(&mut rng) % 16) as usize;
                    if from != to {
                        transfer(pool, from, to, xorshift(&mut rng) % 50).unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(total(&pool), 16_000);
    drop(pool);
    let pool = Pool::<Bank>::open(common::path(&dir, "bank.pool"), &common::pmem()).unwrap();
    assert_eq!(total(&pool), 16_000);
}

#[test]
fn threads_on_disjoint_data_do_not_interfere() {
    let dir = common::shm_dir();
    let pool = bank(&dir, 64);
    std::thread::scope(|s| {
        for t in 0..4 {
            let pool = &pool;
            s.spawn(move || {
                for _ in 0..1000 {
                    pool.transaction(|tx, b| b.counters[t].lock(tx)?.update(tx, |v| v + 1).map(|_| ()))
                        .unwrap();
                }
            });
        }
    });
    let counts = pool
        .transaction(|tx, b| {
            b.counters
                .iter()
                .map(|c| Ok(c.lock(tx)?.get(tx)))
                .collect::<Result<Vec<u64>, Error>>()
        })
        .unwrap();
    assert_eq!(counts, [1000; 4]);
}

#[test]
fn more_threads_than_lanes_wait_for_a_free_lane() {
    let dir = common::shm_dir();
    let pool = bank(&dir, 1);
    std::thread::scope(|s| {
        for t in 0..4 {
            let pool = &pool;
            s.spawn(move || {
                for _ in 0..200 {
                    pool.transaction(|tx, b| {
                        assert_eq!(tx.lane(), 0);
                        b.counters[t].lock(tx)?.update(tx, |v| v + 1).map(|_| ())
                    })
                    .unwrap();
                }
            });
        }
    });
    let n = pool.transaction(|tx, b| {
        b.counters
            .iter()
            .map(|c| Ok(c.lock(tx)?.get(tx)))
            .sum::<Result<u64, Error>>()
    });
    assert_eq!(n.unwrap(), 800);
}

#[test]
fn a_deadlock_ends_in_lock_timeout_and_rollback() {
    let dir = common::shm_dir();
    let pool = bank(&dir, 64);
    let barrier = Barrier::new(2);
    let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
        let hs: Vec<_> = [(0usize, 1usize), (1, 0)]
            .into_iter()
            .map(|(first, second)| {
                let (pool, barrier) = (&pool, &barrier);
                s.spawn(move || {
                    pool.transaction(|tx, b| {
                        let a = b.accounts[first].lock(tx)?;
                        a.balance.set(tx, 0)?;
                        barrier.wait();
                        b.accounts[second].lock(tx)?; // opposite order: deadlock
                        Ok(())
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(Error::LockTimeout { .. }))),
        "{results:?}"
    );
    // Whoever timed out rolled back; the total reflects at most the winner's change.
    let t = total(&pool);
    assert!(t == 16_000 || t == 15_000 || t == 14_000, "total {t}");
}

#[test]
fn rwlock_readers_share_writers_exclude_and_upgrades_need_sole_readership() {
    let dir = common::shm_dir();
    let pool = bank(&dir, 64);
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (pool, barrier) = (&pool, &barrier);
            s.spawn(move || {
                pool.transaction(|tx, b| {
                    b.rw.read(tx)?;
                    barrier.wait(); // both hold the read lock here at once
                    let up = b.rw.write(tx, 5);
                    barrier.wait();
                    assert!(matches!(up, Err(Error::LockUpgrade)), "{up:?}");
                    Ok::<_, Error>(())
                })
                .unwrap();
            });
        }
    });
    pool.transaction(|tx, b| {
        b.rw.read(tx)?;
        b.rw.write(tx, 6) // sole reader: upgrade succeeds
    })
    .unwrap();
    assert_eq!(pool.transaction(|tx, b| b.rw.read(tx)).unwrap(), 6);
}

/// Per lane: how many threads hold it now; how many takes; how many found it already held.
struct LaneOwners {
    now: Vec<std::sync::atomic::AtomicUsize>,
    taken: std::sync::atomic::AtomicUsize,
    shared: std::sync::atomic::AtomicUsize,
}

impl LaneOwners {
    fn new(lanes: usize) -> Self {
        LaneOwners {
            now: (0..lanes)
                .map(|_| std::sync::atomic::AtomicUsize::new(0))
                .collect(),
            taken: std::sync::atomic::AtomicUsize::new(0),
            shared: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Marks `lane` held by the caller for a moment, counting it when another thread holds it
    /// too (counted, not asserted: a panicking holder would never release its lane, and the
    /// other threads would wait for it forever).
    fn hold(&self, lane: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.now[lane].fetch_add(1, SeqCst) != 0 {
            self.shared.fetch_add(1, SeqCst);
        }
        // Stay a little, so an overlapping holder has time to show.
        for _ in 0..8 {
            std::hint::spin_loop();
        }
        self.now[lane].fetch_sub(1, SeqCst);
        self.taken.fetch_add(1, SeqCst);
    }

    /// Whether a sharing was seen (the threads stop early then).
    fn failed(&self) -> bool {
        self.shared.load(std::sync::atomic::Ordering::SeqCst) != 0
    }
}

/// The bug class "lane races" in-process, beside the loom models (which run only in their own
/// CI step): threads hammer lane acquisition, directly on a one-lane `LaneMap` (every take
/// contends) and through transactions of a pool with fewer lanes than threads; no lane is ever
/// held by two threads at once. A lane taken with a load and a plain store instead of one
/// read-modify-write fails this (see docs/mutation-notes.md). What is asserted is a count of
/// overlaps, zero, whatever the machine's speed; a faster or less loaded machine only makes a
/// broken build fail sooner.
#[test]
fn lane_race_two_threads_never_share_a_lane() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 200_000;
    let map = ptm::internals::lanes::LaneMap::new(1);
    let owners = LaneOwners::new(1);
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let (map, owners, start) = (&map, &owners, &start);
            s.spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    if owners.failed() {
                        break;
                    }
                    let lane = map.acquire(0);
                    owners.hold(lane);
                    map.release(lane);
                    // Let the waiters see the free lane together (the releaser would otherwise
                    // often take it straight back, its cache line still hot).
                    for _ in 0..32 {
                        std::hint::spin_loop();
                    }
                }
            });
        }
    });
    let (taken, shared) = (owners.taken.into_inner(), owners.shared.into_inner());
    assert_eq!(
        shared, 0,
        "a lane was held by two threads at once {shared} times in {taken} takes"
    );
    assert_eq!(taken, THREADS * ROUNDS);
    assert!(!map.is_busy(0));

    // The same through the pool: read-only transactions take and release a lane each.
    let dir = common::shm_dir();
    let pool = bank(&dir, 2);
    let owners = LaneOwners::new(2);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            let (pool, owners, start) = (&pool, &owners, &start);
            s.spawn(move || {
                start.wait();
                for _ in 0..ROUNDS / 20 {
                    if owners.failed() {
                        break;
                    }
                    pool.transaction(|tx, _| {
                        owners.hold(tx.lane());
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                }
            });
        }
    });
    let (taken, shared) = (owners.taken.into_inner(), owners.shared.into_inner());
    assert_eq!(
        shared, 0,
        "a pool lane was held by two transactions at once {shared} times in {taken}"
    );
    assert_eq!(taken, THREADS * ROUNDS / 20);
}
