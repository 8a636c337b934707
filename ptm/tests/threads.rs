//! Guards concurrency: threads transacting on disjoint data and on shared data under `PMutex`
//! (bank transfers keep the total), more threads than lanes, deadlock ending in `LockTimeout`,
//! and `PRwLock` readers sharing and upgrades.

mod common;

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
