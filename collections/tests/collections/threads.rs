//! Sharing collections between threads: under a `PMutex` the pool is `Sync`, and concurrent
//! transactions on the same collection serialise.

use crate::common;

use common::shm_dir;
use ptm::{Error, PMutex, Persistent, Pool, PoolOptions};
use ptm_collections::{PHashMap, PVec};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Shared {
    log: PMutex<PVec<u64>>,
    counts: PMutex<PHashMap<u64, u64>>,
}

fn assert_sync<T: Sync>(_: &T) {}

#[test]
fn collections_under_a_mutex() {
    let dir = shm_dir();
    let path = dir.path().join("threads.pool");
    let opts = PoolOptions::new().layout("threads").force_pmem(true).lanes(4);
    let pool = Pool::<Shared>::create(&path, 8 << 20, &opts).unwrap();
    assert_sync(&pool);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..200u64 {
                    pool.transaction(|tx, r| {
                        r.log.lock(tx)?.push(tx, t * 1000 + i)?;
                        let counts = r.counts.lock(tx)?;
                        let n = counts.get(tx, &(i % 10))?.unwrap_or(0);
                        counts.insert(tx, i % 10, n + 1)?;
                        Ok::<_, Error>(())
                    })
                    .unwrap();
                }
            });
        }
    });
    drop(pool);
    let pool = Pool::<Shared>::open(&path, &opts).unwrap();
    pool.transaction(|tx, r| {
        let mut log = r.log.lock(tx)?.to_vec(tx)?;
        assert_eq!(log.len(), 400);
        log.sort_unstable();
        let want: Vec<u64> = (0..200).chain(1000..1200).collect();
        assert_eq!(log, want);
        let counts = r.counts.lock(tx)?;
        for k in 0..10 {
            assert_eq!(counts.get(tx, &k)?, Some(40));
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}
