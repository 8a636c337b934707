//! Batched hash-map lookups: `PHashMap::get_many` (the lookups overlapped, each starting to load
//! the lines of the one 8 keys later) against one `get` at a time, on ptm and on PMDK's chained
//! hash map (`csrc/pmdk_collections.c`, feature `pmdk`).
//!
//! Both maps hold the same `N` `u64 -> u64` entries (1 000 000, or `PTM_BENCH_KEYS`), pools on
//! `/dev/shm` (ptm forced into the cache-flush domain, PMDK with `PMEM_IS_PMEM_FORCE=1`). Keys are
//! drawn uniformly at random from the present ones (all hits, checked outside the timing).
//! Criterion group `hash_get_batched`, times per key:
//!
//! - `PHashMap/get`: one read-only transaction per `get` (as the `collections` bench);
//! - `PHashMap/get_many_64`, `PHashMap/get_many_1024`: one read-only transaction per
//!   `get_many` call of 64 or 1024 keys;
//! - `PMDK_HashMap/get`: one plain read per key (no transaction, as C users write it).
//!
//! An interleaved pass follows (every row in turn, 15 rounds of 16 384 keys) and prints each
//! row's median time per key and PMDK's time over it.
//!
//! Run with `cargo bench -p ptm-benches --bench get_many --features pmdk`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ptm::{Persistent, Pool, PoolOptions};
use ptm_benches::{pmem_pool_dir, XorShift};
use ptm_collections::PHashMap;

/// Default number of entries.
const DEFAULT_KEYS: u64 = 1_000_000;
/// Keys per timed criterion iteration and per interleaved round.
const ROUND: usize = 16_384;
/// Interleaved rounds.
const ROUNDS: usize = 15;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: PHashMap<u64, u64>,
}

/// The `i`-th key (scattered); its value is `i`.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// One way of looking up a batch of keys: the sum of the values found (all keys present).
type Lookup<'a> = Box<dyn Fn(&[u64]) -> u64 + 'a>;

fn main() {
    #[cfg(feature = "pmdk")]
    ptm_benches::pmdk::force_pmem_env();
    let n: u64 = std::env::var("PTM_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_KEYS);
    let dir = tempfile::Builder::new()
        .prefix("ptm-bench-")
        .tempdir_in(pmem_pool_dir())
        .expect("a pool directory");
    let size = (n * 200).next_multiple_of(1 << 20).max(64 << 20);
    let pool = Pool::<Root>::create(
        dir.path().join("get-many.pool"),
        size,
        &PoolOptions::new().layout("get-many").force_pmem(true),
    )
    .expect("create the ptm pool");
    let entries: Vec<(u64, u64)> = (0..n).map(|i| (key(i), i)).collect();
    for c in entries.chunks(1000) {
        pool.transaction(|tx, r| r.m.extend(tx, c.iter().copied()))
            .expect("fill the ptm map");
    }

    #[cfg(feature = "pmdk")]
    let pmdk = {
        use ptm_benches::pmdk_collections::{PmdkMap, PmdkMapKind};
        let m = PmdkMap::create(PmdkMapKind::Hash, dir.path(), size).expect("create the PMDK map");
        for c in entries.chunks(1000) {
            m.insert_batch(c).expect("fill the PMDK map");
        }
        m
    };

    let get = |keys: &[u64]| -> u64 {
        keys.iter()
            .map(|k| {
                pool.transaction(|tx, r| r.m.get(tx, k))
                    .expect("get")
                    .expect("a present key")
            })
            .sum()
    };
    let get_many = |per_call: usize| {
        let pool = &pool;
        move |keys: &[u64]| -> u64 {
            keys.chunks(per_call)
                .map(|c| {
                    pool.transaction(|tx, r| r.m.get_many(tx, c))
                        .expect("get_many")
                        .into_iter()
                        .map(|v| v.expect("a present key"))
                        .sum::<u64>()
                })
                .sum()
        }
    };
    let mut rows: Vec<(&str, Lookup<'_>)> = vec![
        ("PHashMap/get", Box::new(get)),
        ("PHashMap/get_many_64", Box::new(get_many(64))),
        ("PHashMap/get_many_1024", Box::new(get_many(1024))),
    ];
    #[cfg(feature = "pmdk")]
    rows.push((
        "PMDK_HashMap/get",
        Box::new(|keys: &[u64]| keys.iter().map(|&k| pmdk.get(k).expect("a present key")).sum()),
    ));
    #[cfg(not(feature = "pmdk"))]
    ptm_benches::print_pmdk_skipped();

    // Random present keys, and what their values sum to.
    let mut rng = XorShift::new(7);
    let mut batch = || -> (Vec<u64>, u64) {
        let idx: Vec<u64> = (0..ROUND).map(|_| rng.below(n)).collect();
        (idx.iter().map(|&i| key(i)).collect(), idx.iter().sum())
    };

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args();
    {
        let mut g = c.benchmark_group("hash_get_batched");
        for (name, lookup) in &rows {
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (keys, want) = batch();
                        let start = Instant::now();
                        let got = lookup(black_box(&keys));
                        total += start.elapsed() / ROUND as u32;
                        assert_eq!(got, want, "{name}: wrong values");
                    }
                    total
                })
            });
        }
        g.finish();
    }

    let mut per: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..ROUNDS {
        let (keys, want) = batch();
        for ((name, lookup), t) in rows.iter_mut().zip(&mut per) {
            let start = Instant::now();
            let got = lookup(black_box(&keys));
            t.push(start.elapsed().as_nanos() as f64 / ROUND as f64);
            assert_eq!(got, want, "{name}: wrong values");
        }
    }
    let med: Vec<f64> = per
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    let pmdk_med = rows
        .iter()
        .zip(&med)
        .find(|((name, _), _)| name.starts_with("PMDK"))
        .map(|(_, &m)| m);
    println!("\ninterleaved pass ({n} keys, {ROUNDS} rounds of {ROUND} keys): median ns per key");
    for ((name, _), m) in rows.iter().zip(&med) {
        match pmdk_med {
            Some(p) => println!("  {name:<24} {m:7.1}   PMDK get / this: {:.2}x", p / m),
            None => println!("  {name:<24} {m:7.1}"),
        }
    }
    c.final_summary();
}
