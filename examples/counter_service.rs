//! A multi-threaded counter service: worker threads share one pool (`Arc<Pool<Root>>` moves
//! into `thread::spawn`) and count events in a `PConcurrentMap` (one lock per shard, so
//! transactions on different shards run in parallel) plus a grand total under a `PMutex`.
//! Each event is one transaction that updates both, so after any crash the per-key counts
//! always add up to the total. Counts accumulate across runs.
//!
//! ```text
//! counter-service POOL [THREADS] [EVENTS_PER_THREAD]
//! ```

use std::{env, path::Path, process::ExitCode, sync::Arc, thread};

use ptm::{PCell, PMutex, Persistent, Pool, PoolOptions};
use ptm_collections::PConcurrentMap;

const KEYS: u64 = 64;

#[derive(Persistent)]
#[repr(C)]
struct Root {
    counts: PConcurrentMap<u64, u64, 16>,
    total: PMutex<PCell<u64>>,
    /// The map is 64-byte aligned, so the root's size is a multiple of 64: every byte must be
    /// a field.
    _pad: [u8; 48],
}

fn serve(pool: Arc<Pool<Root>>, threads: u64, events: u64) -> ptm::Result<()> {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let pool = Arc::clone(&pool);
            thread::spawn(move || -> ptm::Result<()> {
                let mut x = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                for _ in 0..events {
                    x ^= x << 13; // xorshift: which key this event counts
                    x ^= x >> 7;
                    x ^= x << 17;
                    pool.transaction(|tx, r| {
                        let n = r.counts.get_for_update(tx, &(x % KEYS))?.unwrap_or(0);
                        r.counts.insert(tx, x % KEYS, n + 1)?;
                        let total = r.total.lock(tx)?;
                        total.set(tx, total.get(tx) + 1)
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    pool.transaction(|tx, r| {
        let counts = r.counts.to_vec(tx)?;
        let sum: u64 = counts.iter().map(|&(_, n)| n).sum();
        let total = r.total.lock(tx)?.get(tx);
        println!("{} keys, {sum} events counted, total {total}", counts.len());
        match sum == total {
            true => Ok(()),
            false => Err(ptm::Error::InvalidOptions("counts do not add up to the total")),
        }
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let num = |i: usize, default: u64| args.get(i).map_or(Ok(default), |a| a.parse::<u64>());
    let (Some(path), Ok(threads), Ok(events)) = (args.first(), num(1, 4), num(2, 1000)) else {
        eprintln!("usage: counter-service POOL [THREADS] [EVENTS_PER_THREAD]");
        return ExitCode::FAILURE;
    };
    let opts = PoolOptions::new().layout("counter-service");
    let pool = if Path::new(path).exists() {
        Pool::<Root>::open(path, &opts)
    } else {
        Pool::<Root>::create(path, 8 << 20, &opts)
    };
    match pool.and_then(|pool| serve(Arc::new(pool), threads, events)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counter-service: {e}");
            ExitCode::FAILURE
        }
    }
}
