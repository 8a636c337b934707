//! The task queue of `examples/task_queue.rs` as a benchmark: what one `add` costs on ptm (a
//! task in a `PBTreeMap`, its title and tags, a tag index in a `PHashMap` of `PVec`s, a pending
//! queue in a second `PBTreeMap`) against the same program on std collections in memory.
//!
//! At startup it prints the deterministic counts of one add, step by step: drains and cache lines
//! flushed, on a pool forced into the cache-flush domain (`/dev/shm`). Then the criterion groups:
//!
//! - `task_add/ptm`: one durable transaction per add; `task_add/std`: the same add on
//!   `BTreeMap`/`HashMap`/`Vec`/`String` (no persistence: the volatile lower bound);
//! - `task_add_batched/ptm_100`: 100 adds per transaction, time per add;
//! - `task_add_big_tx`: time per add of one transaction of 1 000 and of 20 000 adds (a large
//!   transaction must not cost more per add than a small one).
//!
//! Run with `cargo bench -p ptm-benches --bench task_queue`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use ptm::{Checked, PCell, Persistent, Pool, PoolOptions, Transaction};
use ptm_benches::pmem_pool_dir;
use ptm_collections::{PBTreeMap, PHashMap, PString, PValue, PVec};

/// Pool size: room for every add of one criterion group (tasks are never removed, so each group
/// has its own pool: one pool for the whole run filled up once criterion ran more iterations,
/// about a million adds, before the big transactions).
const POOL_SIZE: u64 = 1 << 30;
/// Tags per task, drawn from [`TAG_KINDS`] distinct tags.
const TAGS: usize = 2;
const TAG_KINDS: u64 = 64;

#[derive(Persistent, Clone, Copy, Debug, PartialEq)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(u64)]
enum State {
    Pending,
    Done,
}

#[derive(Persistent, PValue)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Task {
    title: PString,
    tags: PVec<PString>,
    state: PCell<Checked<State>>,
    prio: PCell<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    next_id: PCell<u64>,
    tasks: PBTreeMap<u64, Task>,
    pending: PBTreeMap<u128, u64>,
    by_tag: PHashMap<PString, PVec<u64>>,
}

fn queue_key(prio: u64, id: u64) -> u128 {
    (u128::from(u64::MAX - prio) << 64) | u128::from(id)
}

/// The inputs of add number `i`: priority, title, tags.
fn input(i: u64) -> (u64, String, [String; TAGS]) {
    let tag = |k: u64| {
        format!(
            "tag-{}",
            (i.wrapping_mul(2654435761) >> 7).wrapping_add(k) % TAG_KINDS
        )
    };
    (
        i % 10,
        format!("task number {i} of the benchmark"),
        [tag(0), tag(1)],
    )
}

/// One add, in the running transaction, calling `step` after each part (for the breakdown).
fn ptm_add(tx: &Transaction<'_>, r: &Root, i: u64, step: &mut dyn FnMut(&'static str)) -> ptm::Result<u64> {
    let (prio, title, tags) = input(i);
    let id = r.next_id.update(tx, |n| n + 1)?;
    step("next_id.update");
    let t = r.tasks.get_or_insert_new(tx, id)?;
    step("tasks.get_or_insert_new");
    t.title.set(tx, &title)?;
    step("title.set");
    for tag in &tags {
        t.tags.push_new(tx)?.set(tx, tag)?;
    }
    step("tags.push_new + set (x2)");
    t.prio.set(tx, prio)?;
    t.state.store(tx, State::Pending)?;
    step("prio.set + state.store");
    drop(t);
    for tag in &tags {
        r.by_tag.get_or_insert_new(tx, tag.as_str())?.push(tx, id)?;
    }
    step("by_tag.get_or_insert_new + push (x2)");
    r.pending.insert(tx, queue_key(prio, id), id)?;
    step("pending.insert");
    Ok(id)
}

/// The same program on std collections.
#[derive(Default)]
struct StdQueue {
    next_id: u64,
    tasks: BTreeMap<u64, (String, Vec<String>, State, u64)>,
    pending: BTreeMap<u128, u64>,
    by_tag: HashMap<String, Vec<u64>>,
}

impl StdQueue {
    fn add(&mut self, i: u64) -> u64 {
        let (prio, title, tags) = input(i);
        self.next_id += 1;
        let id = self.next_id;
        for tag in &tags {
            self.by_tag.entry(tag.clone()).or_default().push(id);
        }
        self.tasks
            .insert(id, (title, tags.to_vec(), State::Pending, prio));
        self.pending.insert(queue_key(prio, id), id);
        id
    }
}

fn open(name: &str) -> (tempfile::TempDir, Pool<Root>) {
    let dir = tempfile::Builder::new()
        .prefix(name)
        .tempdir_in(pmem_pool_dir())
        .expect("pool directory");
    let pool = Pool::<Root>::create(
        dir.path().join("tq.pool"),
        POOL_SIZE,
        &PoolOptions::new().force_pmem(true),
    )
    .expect("create pool");
    (dir, pool)
}

/// Prints the drains and lines of one add, step by step (after a warm-up so the maps exist).
fn print_breakdown(pool: &Pool<Root>) {
    for i in 0..1000 {
        pool.transaction(|tx, r| ptm_add(tx, r, i, &mut |_| ()))
            .expect("warm-up add");
    }
    let mut steps: Vec<(&'static str, u64, u64)> = Vec::new();
    let before = ptm::thread_stats();
    let mut last = before;
    pool.transaction(|tx, r| {
        ptm_add(tx, r, 1000, &mut |name| {
            let now = ptm::thread_stats();
            steps.push((
                name,
                now.drains - last.drains,
                now.lines_flushed - last.lines_flushed,
            ));
            last = now;
        })
    })
    .expect("add");
    let end = ptm::thread_stats();
    println!("one task add, step by step (drains, lines flushed):");
    for (name, d, l) in &steps {
        println!("  {name:<40} {d:>3} {l:>4}");
    }
    println!(
        "  {:<40} {:>3} {:>4}",
        "commit",
        end.drains - last.drains,
        end.lines_flushed - last.lines_flushed
    );
    println!(
        "  {:<40} {:>3} {:>4}",
        "total",
        end.drains - before.drains,
        end.lines_flushed - before.lines_flushed
    );
    for batch in [1u64, 10, 100, 1000] {
        let s = ptm::thread_stats();
        let base = 10_000 + batch * 1000;
        pool.transaction(|tx, r| {
            for i in 0..batch {
                ptm_add(tx, r, base + i, &mut |_| ())?;
            }
            Ok::<_, ptm::Error>(())
        })
        .expect("batch");
        let e = ptm::thread_stats();
        println!(
            "{batch:>5} adds in one transaction: {:.2} drains and {:.1} lines per add",
            (e.drains - s.drains) as f64 / batch as f64,
            (e.lines_flushed - s.lines_flushed) as f64 / batch as f64
        );
    }
    println!();
}

fn bench(c: &mut Criterion) {
    let (_dir, pool) = open("tq-bench");
    print_breakdown(&pool);
    let mut next = 1_000_000u64;
    let mut std_q = StdQueue::default();

    let mut g = c.benchmark_group("task_add");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ptm", |b| {
        b.iter(|| {
            next += 1;
            pool.transaction(|tx, r| ptm_add(tx, r, black_box(next), &mut |_| ()))
                .expect("add")
        })
    });
    g.bench_function("std", |b| b.iter(|| black_box(std_q.add(black_box(next)))));
    g.finish();

    drop(pool);
    let (_dir, pool) = open("tq-batched");
    let mut g = c.benchmark_group("task_add_batched");
    g.throughput(Throughput::Elements(100));
    g.bench_function("ptm_100", |b| {
        b.iter(|| {
            pool.transaction(|tx, r| {
                for _ in 0..100 {
                    next += 1;
                    ptm_add(tx, r, next, &mut |_| ())?;
                }
                Ok::<_, ptm::Error>(())
            })
            .expect("batch")
        })
    });
    g.finish();

    // Per-add time of one big transaction, against small ones: `iter_custom` runs whole
    // transactions of `n` adds and reports the time per add.
    drop(pool);
    let (_dir, pool) = open("tq-big");
    let mut g = c.benchmark_group("task_add_big_tx");
    g.sample_size(10);
    for n in [1_000u64, 20_000] {
        g.bench_function(format!("ptm_{n}_per_tx"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    pool.transaction(|tx, r| {
                        for _ in 0..n {
                            next += 1;
                            ptm_add(tx, r, next, &mut |_| ())?;
                        }
                        Ok::<_, ptm::Error>(())
                    })
                    .expect("big transaction");
                    total += start.elapsed() / n as u32;
                }
                total
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

fn main() {
    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = config().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
