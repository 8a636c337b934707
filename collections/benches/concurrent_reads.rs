//! Read scaling of [`PConcurrentMap`]: wall time per operation over all threads (so perfect
//! scaling with 2 threads halves it) for
//!
//! - `control`: a pure computation sharing nothing, to measure how much parallelism the machine
//!   really offers right now (on a loaded machine 2 threads may get less than 2 cores);
//! - `empty_tx`: `pool.transaction(|_, _| Ok(()))`, the begin/commit path of a read-only
//!   transaction alone;
//! - `get`: one `PConcurrentMap::get` per transaction, keys over all shards;
//! - `get_one_shard`: the same with every key in shard 0, so two threads always read the same
//!   shard at once;
//! - `get8_one_shard`: 8 gets of shard-0 keys per transaction (a longer read hold of one shard:
//!   readers overlap only if the shard lock is shared). Its times are per transaction.
//!
//! Each group has functions `1_thread` and `2_threads`; compare their ratio within one run.
//!
//! Before the criterion groups, a **paired** run (`PAIRED_ROUNDS`, default 40; 0 skips it)
//! prints, per workload, the median over rounds of the throughput ratio 2 threads / 1 thread, and
//! of that ratio divided by the `control` ratio of the same round (1.0: scales as well as the
//! machine allows right now), plus the CPU time per operation with 1 and 2 threads (CPU time
//! grows with 2 threads only through contention: cache-line transfers, lock spinning;
//! descheduling by other load does not count). Rounds are short and interleaved, and only rounds
//! in which no other process took the cores (CPU time / wall time near 1 with one thread and 2
//! with two, for the workload and the control) count, so the figures hold on a shared machine.
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

/// One workload in one round of the paired run.
#[derive(Clone, Copy)]
struct Round {
    /// Throughput with 2 threads / with 1 thread.
    ratio: f64,
    /// CPU ns per operation with 1 and with 2 threads.
    cpu1: f64,
    cpu2: f64,
    /// CPU time / wall time of the 1-thread and the 2-thread run: 1.0 and 2.0 when the threads
    /// were never descheduled.
    par1: f64,
    par2: f64,
}

impl Round {
    /// Whether nothing else took the cores during this run.
    fn undisturbed(&self) -> bool {
        self.par1 >= 0.9 && self.par2 >= 1.7
    }
}

/// The paired run (see the crate docs): `rounds` rounds of every workload with 1 then 2 threads,
/// `ops` operations each. The first workload is the control. Only rounds in which both the
/// workload's and the control's runs were undisturbed count.
fn paired(workloads: &[(&str, &(dyn Fn(u64) + Sync))], rounds: usize, ops: u64) {
    let per_op = |d: Duration| d.as_nanos() as f64 / ops as f64;
    let all: Vec<Vec<Round>> = (0..rounds)
        .map(|_| {
            workloads
                .iter()
                .map(|(_, op)| {
                    let (w1, c1) = parallel_cpu(1, ops, op);
                    let (w2, c2) = parallel_cpu(2, ops, op);
                    Round {
                        ratio: w1.as_secs_f64() / w2.as_secs_f64(),
                        cpu1: per_op(c1),
                        cpu2: per_op(c2),
                        par1: c1.as_secs_f64() / w1.as_secs_f64(),
                        par2: c2.as_secs_f64() / w2.as_secs_f64(),
                    }
                })
                .collect()
        })
        .collect();
    println!("paired run: {rounds} rounds x {ops} ops; medians over the undisturbed rounds (n)");
    println!(
        "{:<15} {:>4} {:>14} {:>16} {:>13} {:>13}",
        "workload", "n", "2t/1t thruput", "rel. to control", "cpu ns/op 1t", "cpu ns/op 2t"
    );
    for (w, (name, _)) in workloads.iter().enumerate() {
        let used: Vec<(Round, Round)> = all
            .iter()
            .map(|r| (r[w], r[0]))
            .filter(|(x, c)| x.undisturbed() && c.undisturbed())
            .collect();
        if used.is_empty() {
            let par = |f: fn(&Round) -> f64| median(&mut all.iter().map(|r| f(&r[w])).collect::<Vec<_>>());
            println!(
                "{name:<15} {:>4} (no undisturbed round: machine loaded; median CPU/wall {:.2} with 1 \
                 thread, {:.2} with 2)",
                0,
                par(|r| r.par1),
                par(|r| r.par2)
            );
            continue;
        }
        let med = |f: &dyn Fn(&(Round, Round)) -> f64| median(&mut used.iter().map(f).collect::<Vec<_>>());
        println!(
            "{name:<15} {:>4} {:>14.2} {:>16.2} {:>13.1} {:>13.1}",
            used.len(),
            med(&|(x, _)| x.ratio),
            med(&|(x, c)| x.ratio / c.ratio),
            med(&|(x, _)| x.cpu1),
            med(&|(x, _)| x.cpu2),
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
    let shard0: Vec<u64> = pool
        .transaction(|tx, r| {
            let mut keys = Vec::new();
            for k in (0..N).map(key) {
                if r.m.shard_index(tx, &k)? == 0 {
                    keys.push(k);
                }
            }
            Ok::<_, Error>(keys)
        })
        .expect("shard 0's keys");

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
    let get8_one_shard = |i: u64| {
        let r = pool
            .transaction(|tx, r| {
                let mut n = 0;
                for j in 0..8 {
                    let k = shard0[((i * 8 + j) % shard0.len() as u64) as usize];
                    n += u64::from(r.m.get(tx, black_box(&k))?.is_some());
                }
                Ok::<_, Error>(n)
            })
            .expect("get8");
        assert_eq!(r, 8);
    };
    let rounds = std::env::var("PAIRED_ROUNDS").map_or(40, |v| v.parse().expect("PAIRED_ROUNDS"));
    if rounds > 0 {
        paired(
            &[
                ("control", &control),
                ("empty_tx", &empty_tx),
                ("get", &get),
                ("get_one_shard", &get_one_shard),
                ("get8_one_shard", &get8_one_shard),
            ],
            rounds,
            50_000,
        );
    }
    scaling(c, "control", control);
    scaling(c, "empty_tx", empty_tx);
    scaling(c, "get", get);
    scaling(c, "get_one_shard", get_one_shard);
    scaling(c, "get8_one_shard", get8_one_shard);
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
