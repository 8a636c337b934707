//! Read scaling of [`PConcurrentMap`]: wall time per operation over all threads (so perfect
//! scaling with 2 threads halves it) for
//!
//! - `control`: a pure computation sharing nothing, to measure how much parallelism the machine
//!   really offers right now (on a loaded machine 2 threads may get less than 2 cores);
//! - `empty_tx`: `pool.transaction(|_, _| Ok(()))`, the begin/commit path of a read-only
//!   transaction alone;
//! - `get`: one `PConcurrentMap::get` per transaction, keys over all shards;
//! - `get_one_shard`: the same with every key in shard 0, so two threads always read the same
//!   shard at once.
//!
//! Each group has functions `1_thread` and `2_threads`; compare their ratio within one run.
//!
//! Before the criterion groups, a **paired** run prints, per workload, the median over rounds of
//! the throughput ratio 2 threads / 1 thread, and of that ratio divided by the `control` ratio of
//! the same round (1.0: scales as well as the machine allows right now), plus the CPU time per
//! operation with 1 and 2 threads (CPU time grows with 2 threads only through contention:
//! cache-line transfers, lock spinning; descheduling by other load does not count). Rounds are
//! short and interleaved, so load from other processes hits all workloads alike.
//! Pools live in `/dev/shm` (when present), treated as persistent memory.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ptm::{Error, Persistent, Pool, PoolOptions};
use ptm_collections::PConcurrentMap;

/// Keys in the map.
const N: u64 = 100_000;

type Map = PConcurrentMap<u64, u64, 16>;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    m: Map,
}

/// Spreads consecutive indices over the key space.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Runs `total` operations split evenly over `threads` threads (thread `t` gets indices
/// `t, t + threads, ...`); returns the wall time.
fn parallel(threads: u64, total: u64, op: impl Fn(u64) + Sync) -> Duration {
    let op = &op;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut i = t;
                while i < total {
                    op(i);
                    i += threads;
                }
            });
        }
    });
    start.elapsed()
}

/// CPU time consumed so far by the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// As [`parallel`], also returning the CPU time of all threads together.
fn parallel_cpu(threads: u64, total: u64, op: &(impl Fn(u64) + Sync)) -> (Duration, Duration) {
    let start = Instant::now();
    let cpu = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let c0 = thread_cpu();
                    let mut i = t;
                    while i < total {
                        op(i);
                        i += threads;
                    }
                    thread_cpu() - c0
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("worker"))
            .sum::<Duration>()
    });
    (start.elapsed(), cpu)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The paired run (see the crate docs): `rounds` rounds of every workload with 1 then 2 threads,
/// `ops` operations each.
fn paired(workloads: &[(&str, &(dyn Fn(u64) + Sync))], rounds: usize, ops: u64) {
    let per_op = |d: Duration| d.as_nanos() as f64 / ops as f64;
    // Per workload: ratios, relative ratios, cpu ns/op with 1 and 2 threads, parallelism of
    // the 2-thread run (CPU time / wall time: 2.0 when both threads ran all along).
    let mut stats = vec![(vec![], vec![], vec![], vec![], vec![]); workloads.len()];
    for _ in 0..rounds {
        let mut control = 1.0;
        for (w, (name, op)) in workloads.iter().enumerate() {
            let (w1, c1) = parallel_cpu(1, ops, op);
            let (w2, c2) = parallel_cpu(2, ops, op);
            let ratio = w1.as_secs_f64() / w2.as_secs_f64();
            if *name == "control" {
                control = ratio;
            }
            let s = &mut stats[w];
            s.0.push(ratio);
            s.1.push(ratio / control);
            s.2.push(per_op(c1));
            s.3.push(per_op(c2));
            s.4.push(c2.as_secs_f64() / w2.as_secs_f64());
        }
    }
    println!("paired run: {rounds} rounds x {ops} ops, medians over rounds");
    println!(
        "{:<15} {:>14} {:>16} {:>13} {:>13} {:>12}",
        "workload", "2t/1t thruput", "rel. to control", "cpu ns/op 1t", "cpu ns/op 2t", "cpu/wall 2t"
    );
    for ((name, _), s) in workloads.iter().zip(&mut stats) {
        println!(
            "{name:<15} {:>14.2} {:>16.2} {:>13.1} {:>13.1} {:>12.2}",
            median(&mut s.0),
            median(&mut s.1),
            median(&mut s.2),
            median(&mut s.3),
            median(&mut s.4)
        );
    }
    println!();
}

/// Groups `name` with `1_thread` and `2_threads`, each op indexed by its number.
fn scaling(c: &mut Criterion, name: &str, op: impl Fn(u64) + Sync) {
    let mut g = c.benchmark_group(name);
    for threads in [1u64, 2] {
        let f = if threads == 1 { "1_thread" } else { "2_threads" };
        g.bench_function(f, |b| b.iter_custom(|iters| parallel(threads, iters, &op)));
    }
    g.finish();
}

/// A few hundred nanoseconds of arithmetic on registers.
fn spin(i: u64) -> u64 {
    let mut x = i;
    for _ in 0..120 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

fn benches(c: &mut Criterion) {
    let dir = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("create the pool directory");
    let pool = Pool::<Root>::create(
        dir.path().join("reads.pool"),
        64 << 20,
        &PoolOptions::new().layout("concurrent_reads").force_pmem(true),
    )
    .expect("create the pool");
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        pool.transaction(|tx, r| {
            for &i in chunk {
                r.m.insert(tx, key(i), i)?;
            }
            Ok::<_, Error>(())
        })
        .expect("fill");
    }
    let shard0: Vec<u64> = (0..N).map(key).filter(|k| Map::shard_index(k) == 0).collect();

    let control = |i| {
        black_box(spin(black_box(i)));
    };
    let empty_tx = |_| {
        pool.transaction(|_, _| Ok::<_, Error>(())).expect("empty tx");
    };
    let get = |i| {
        let k = key(i % N);
        let v = pool.transaction(|tx, r| r.m.get(tx, black_box(&k))).expect("get");
        assert_eq!(v, Some(i % N));
    };
    let get_one_shard = |i| {
        let k = shard0[(i % shard0.len() as u64) as usize];
        let v = pool.transaction(|tx, r| r.m.get(tx, black_box(&k))).expect("get");
        assert!(v.is_some());
    };
    let rounds = std::env::var("PAIRED_ROUNDS").map_or(15, |v| v.parse().expect("PAIRED_ROUNDS"));
    if rounds > 0 {
        paired(
            &[
                ("control", &control),
                ("empty_tx", &empty_tx),
                ("get", &get),
                ("get_one_shard", &get_one_shard),
            ],
            rounds,
            100_000,
        );
    }
    scaling(c, "control", control);
    scaling(c, "empty_tx", empty_tx);
    scaling(c, "get", get);
    scaling(c, "get_one_shard", get_one_shard);
}

fn main() {
    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
}
