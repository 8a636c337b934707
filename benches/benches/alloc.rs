//! ptm's transactional allocator side by side with PMDK's (`pmemobj_tx_alloc` /
//! `pmemobj_tx_free`) and with the system allocator, the volatile upper bound.
//!
//! Every group has the functions `ptm`, `pmdk` (with `--features pmdk`) and `system`; both
//! persistent pools live in [`pmem_pool_dir`] (`/dev/shm`) and are forced into the cache-flush
//! domain (ptm: `PoolOptions::force_pmem(true)`; PMDK: `PMEM_IS_PMEM_FORCE=1`):
//!
//! - `alloc_free_pairs/N` (64-byte blocks) and `alloc_free_pairs_1KiB/N`, N = 1 and 16: one
//!   transaction allocates N blocks, then frees them all, and commits (ptm: `alloc_bytes` /
//!   `free_bytes`; PMDK: `pmemobj_tx_alloc` / `pmemobj_tx_free`, contents uninitialised in both;
//!   system: `std::alloc::alloc` / `dealloc` of the same sizes). A block allocated and freed in
//!   the same transaction ends up never allocated. Time per transaction; the throughput is N
//!   allocations (each with its free).
//! - `alloc_link`: a transaction that allocates a 64-byte list node and links it into the list
//!   head in the root (ptm: `tx.alloc(node)` + `PCell::set`; PMDK: `pmemobj_tx_alloc` +
//!   `pmemobj_tx_add_range` of the head + store; system: `Box` pushed on an `Option<Box<_>>`
//!   list). `unlink_free`: the matching transaction that unlinks the first node and frees it;
//!   `ptm_free_first` does the same with the free before the unlink. Nodes are pushed in batches
//!   of [`LINK_BATCH`] and popped again, so the heap never fills up; each group times only its
//!   own half.
//! - `alloc_free_pairs_2threads`: two threads (criterion's and a helper) each run the 16-pair
//!   64-byte transaction `iters` times at once, on one shared pool; the time is the wall time for
//!   both to finish, so the throughput is the aggregate of both threads.
//!
//! At startup the benchmark prints the drains and lines flushed of each kind of ptm transaction;
//! at the end it checks that every block was freed in every pool.
//!
//! Run with `cargo bench -p ptm-benches --bench alloc --features pmdk` (needs libpmemobj-dev);
//! without the feature the PMDK functions are skipped.

use std::alloc::Layout;
use std::hint::black_box;
use std::path::Path;
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ptm::{DomainKind, PCell, PPtr, Persistent, Pool, PoolOptions};
use ptm_benches::{pmem_pool_dir, SHM_DIR};

/// Size of every pool.
const POOL_SIZE: u64 = 64 << 20;
/// Block sizes of the pair groups, with their group names.
const SIZES: [(&str, u64); 2] = [("alloc_free_pairs", 64), ("alloc_free_pairs_1KiB", 1024)];
/// Blocks allocated (then freed) per transaction in the pair groups.
const PAIRS: [usize; 2] = [1, 16];
/// Pairs per transaction of the two-thread group.
const THREAD_PAIRS: usize = 16;
/// Block size of the two-thread group.
const THREAD_SIZE: u64 = 64;
/// Most blocks per transaction (the block offsets live in an array on the stack).
const MAX_PAIRS: usize = 64;
/// Nodes pushed, then popped, per round of the list groups.
const LINK_BATCH: u64 = 256;

/// A 64-byte list node.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Node {
    next: PPtr<Node>,
    payload: [u64; 7],
}

/// Root of the single-threaded pool: a list head.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    head: PCell<PPtr<Node>>,
}

/// Root of the pool shared by two threads: no cells, so `Pool<SharedRoot>: Sync`. The two-thread
/// group only allocates and frees, so the root holds nothing of use.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct SharedRoot {
    reserved: [u64; 8],
}

/// A ptm pool in a fresh temporary directory. `pool` is declared first so it is closed before
/// the directory is removed.
struct PtmPool<R> {
    pool: Pool<R>,
    _dir: tempfile::TempDir,
}

fn ptm_pool<R: Persistent>(name: &str) -> PtmPool<R> {
    let dir = tempfile::Builder::new()
        .prefix("ptm-bench-")
        .tempdir_in(pmem_pool_dir())
        .expect("create the ptm pool directory");
    let pool = Pool::<R>::create(
        dir.path().join(name),
        POOL_SIZE,
        &PoolOptions::new().force_pmem(true),
    )
    .expect("create the ptm pool");
    PtmPool { pool, _dir: dir }
}

/// One ptm transaction allocating `n` blocks of `size` bytes, then freeing them all.
#[inline]
fn ptm_alloc_free<R: Persistent>(pool: &Pool<R>, n: usize, size: u64) -> ptm::Result<()> {
    pool.transaction(|tx, _| {
        let mut offs = [0u64; MAX_PAIRS];
        for o in &mut offs[..n] {
            *o = tx.alloc_bytes(size)?;
        }
        for &o in &offs[..n] {
            tx.free_bytes(o)?;
        }
        Ok(())
    })
}

/// One ptm transaction allocating a node holding `val` and linking it at the list head.
#[inline]
fn ptm_push(pool: &Pool<Root>, val: u64) -> ptm::Result<()> {
    pool.transaction(|tx, root| {
        let next = root.head.get(tx);
        let p = tx.alloc(Node {
            next,
            payload: [val; 7],
        })?;
        root.head.set(tx, p)
    })
}

/// One ptm transaction unlinking the first node and freeing it (in that order, or with the free
/// first when `free_first`); returns the node's value, `None` if the list is empty.
#[inline]
fn ptm_pop(pool: &Pool<Root>, free_first: bool) -> ptm::Result<Option<u64>> {
    pool.transaction(|tx, root| {
        let p = root.head.get(tx);
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null head points to a live node pushed by `ptm_push`, and the pool is
        // used by one thread, so nothing else accesses the node during this transaction.
        let node = unsafe { tx.deref(p)? };
        let (next, val) = (node.next, node.payload[0]);
        if free_first {
            tx.free(p)?;
            root.head.set(tx, next)?;
        } else {
            root.head.set(tx, next)?;
            tx.free(p)?;
        }
        Ok(Some(val))
    })
}

/// The layout of a system-allocated block of `size` bytes (8-byte aligned: `malloc`'s path).
fn sys_layout(size: u64) -> Layout {
    Layout::from_size_align(size as usize, 8).expect("block layout")
}

/// Allocates `n` blocks of `layout` with the system allocator, then frees them all.
#[inline]
fn system_alloc_free(n: usize, layout: Layout) {
    let mut ptrs = [std::ptr::null_mut::<u8>(); MAX_PAIRS];
    for p in &mut ptrs[..n] {
        // SAFETY: `layout` has a non-zero size.
        let q = unsafe { std::alloc::alloc(layout) };
        if q.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // `black_box` keeps the compiler from eliding the allocation.
        *p = black_box(q);
    }
    for &p in &ptrs[..n] {
        // SAFETY: `p` was allocated above with `layout` and is freed once.
        unsafe { std::alloc::dealloc(p, layout) };
    }
}

/// A volatile list node, as [`Node`].
struct SysNode {
    next: Option<Box<SysNode>>,
    payload: [u64; 7],
}

#[inline]
fn system_push(head: &mut Option<Box<SysNode>>, val: u64) {
    let next = head.take();
    *head = Some(black_box(Box::new(SysNode {
        next,
        payload: [val; 7],
    })));
}

#[inline]
fn system_pop(head: &mut Option<Box<SysNode>>) -> Option<u64> {
    let node = black_box(head.take()?);
    *head = node.next;
    Some(node.payload[0])
}

#[cfg(feature = "pmdk")]
use ptm_benches::pmdk::PmdkPool as Pmdk;

/// Stands for the PMDK pool when the `pmdk` feature is off: no value exists.
#[cfg(not(feature = "pmdk"))]
enum Pmdk {}

/// Stands for the PMDK allocation handle when the `pmdk` feature is off: no value exists.
#[cfg(not(feature = "pmdk"))]
#[derive(Clone, Copy)]
enum PmdkAllocHandle {}

#[cfg(not(feature = "pmdk"))]
type Never = std::convert::Infallible;

#[cfg(not(feature = "pmdk"))]
impl Pmdk {
    fn tx_alloc_free(&self, _n: u64, _size: u64) -> Result<(), Never> {
        match *self {}
    }

    fn alloc_handle(&self) -> PmdkAllocHandle {
        match *self {}
    }

    fn tx_push(&self, _val: u64) -> Result<(), Never> {
        match *self {}
    }

    fn tx_pop(&self) -> Result<Option<u64>, Never> {
        match *self {}
    }
}

#[cfg(not(feature = "pmdk"))]
impl PmdkAllocHandle {
    fn tx_alloc_free(&self, _n: u64, _size: u64) -> Result<(), Never> {
        match *self {}
    }
}

#[cfg(feature = "pmdk")]
fn pmdk_pool() -> Option<Pmdk> {
    const _: () = assert!(ptm_benches::pmdk::MAX_BATCH >= MAX_PAIRS as u64);
    const _: () = assert!(ptm_benches::pmdk::NODE_SIZE == std::mem::size_of::<Node>() as u64);
    Some(Pmdk::create(&pmem_pool_dir(), POOL_SIZE).expect("create the PMDK pool"))
}

#[cfg(not(feature = "pmdk"))]
fn pmdk_pool() -> Option<Pmdk> {
    None
}

#[cfg(feature = "pmdk")]
fn print_pmdk(pool: Option<&Pmdk>) {
    pool.into_iter().for_each(Pmdk::print_info);
}

#[cfg(not(feature = "pmdk"))]
fn print_pmdk(_pool: Option<&Pmdk>) {
    ptm_benches::print_pmdk_skipped();
}

/// Drains and lines flushed per call of `f`, averaged over 16 calls after one warm-up call.
fn per_tx(mut f: impl FnMut()) -> (f64, f64) {
    const ROUNDS: u64 = 16;
    f();
    let before = ptm::thread_stats();
    for _ in 0..ROUNDS {
        f();
    }
    let d = ptm::thread_stats().since(&before);
    (
        d.drains as f64 / ROUNDS as f64,
        d.lines_flushed as f64 / ROUNDS as f64,
    )
}

/// Prints where the pools live and the drains and lines flushed of each kind of ptm
/// transaction, and checks that both libraries' lists return what was pushed.
fn print_setup(ptm: &PtmPool<Root>, shared: &PtmPool<SharedRoot>, pmdk: Option<&Pmdk>) {
    let dir = pmem_pool_dir();
    let note = if dir == Path::new(SHM_DIR) {
        "tmpfs"
    } else {
        "FALLBACK: /dev/shm missing"
    };
    println!("pool dir      : {} ({note}, forced pmem)", dir.display());
    let insn = ptm::pmem_core::detected_flush_instruction().map_or("none", |i| i.name());
    println!("flush insn    : {insn} (ptm's choice)");
    for domain in [ptm.pool.domain(), shared.pool.domain()] {
        if !matches!(domain, DomainKind::CacheFlush(_)) {
            println!(
                "WARNING: a ptm pool is not in the cache-flush domain: {}",
                domain.name()
            );
        }
    }
    println!("ptm domain    : {}", ptm.pool.domain().name());
    print_pmdk(pmdk);

    // The first transaction of a lane on a class also turns a fresh chunk into a slab.
    let before = ptm::thread_stats();
    ptm_alloc_free(&ptm.pool, 1, 64).expect("ptm transaction");
    let d = ptm::thread_stats().since(&before);
    println!(
        "ptm first alloc_free_pairs/1 (new slab): {} drain(s), {} line(s) flushed",
        d.drains, d.lines_flushed
    );
    for (name, size) in SIZES {
        for n in PAIRS {
            let (drains, lines) = per_tx(|| ptm_alloc_free(&ptm.pool, n, size).expect("ptm transaction"));
            println!("ptm {name}/{n}: {drains} drain(s)/tx, {lines} line(s) flushed/tx");
        }
    }
    let mut v = 0;
    let (drains, lines) = per_tx(|| {
        v += 1;
        ptm_push(&ptm.pool, v).expect("ptm push");
    });
    println!("ptm alloc_link: {drains} drain(s)/tx, {lines} line(s) flushed/tx");
    // `per_tx` made 17 pushes; each pop measurement below makes 17 pops.
    for v in 100..117 {
        ptm_push(&ptm.pool, v).expect("ptm push");
    }
    for (label, free_first) in [("unlink_free", false), ("unlink_free (free first)", true)] {
        let (drains, lines) = per_tx(|| {
            ptm_pop(&ptm.pool, free_first)
                .expect("ptm pop")
                .expect("list not empty");
        });
        println!("ptm {label}: {drains} drain(s)/tx, {lines} line(s) flushed/tx");
    }
    assert_eq!(
        ptm_pop(&ptm.pool, false).expect("ptm pop"),
        None,
        "ptm list not empty"
    );
    for v in 1..=3 {
        ptm_push(&ptm.pool, v).expect("ptm push");
    }
    let got: Vec<_> = (0..4)
        .map(|_| ptm_pop(&ptm.pool, false).expect("ptm pop"))
        .collect();
    assert_eq!(got, [Some(3), Some(2), Some(1), None], "ptm list order");
    if let Some(p) = pmdk {
        for v in 1..=3 {
            p.tx_push(v).expect("PMDK push");
        }
        let got: Vec<_> = (0..4).map(|_| p.tx_pop().expect("PMDK pop")).collect();
        assert_eq!(got, [Some(3), Some(2), Some(1), None], "PMDK list order");
        p.tx_alloc_free(16, 1024).expect("PMDK transaction");
    }
    let (drains, lines) =
        per_tx(|| ptm_alloc_free(&shared.pool, THREAD_PAIRS, THREAD_SIZE).expect("ptm transaction"));
    println!("ptm alloc_free_pairs_2threads (per thread): {drains} drain(s)/tx, {lines} line(s) flushed/tx");
    println!();
}

/// The pair groups: `n` allocations and frees of `size` bytes per transaction.
fn bench_pairs(c: &mut Criterion, ptm: &PtmPool<Root>, pmdk: Option<&Pmdk>) {
    for (name, size) in SIZES {
        for n in PAIRS {
            let mut g = c.benchmark_group(format!("{name}/{n}"));
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function("ptm", |b| {
                b.iter(|| ptm_alloc_free(&ptm.pool, black_box(n), size).expect("ptm transaction"))
            });
            if let Some(p) = pmdk {
                g.bench_function("pmdk", |b| {
                    b.iter(|| {
                        p.tx_alloc_free(black_box(n as u64), size)
                            .expect("PMDK transaction")
                    })
                });
            }
            let layout = sys_layout(size);
            g.bench_function("system", |b| b.iter(|| system_alloc_free(black_box(n), layout)));
            g.finish();
        }
    }
}

/// Times `iters` pushes (`time_push`) or `iters` pops on the list `list`, in rounds of
/// [`LINK_BATCH`] pushes followed by as many pops; only the chosen half is timed.
fn push_pop_rounds<L>(
    iters: u64,
    time_push: bool,
    list: &mut L,
    mut push: impl FnMut(&mut L, u64),
    mut pop: impl FnMut(&mut L),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(LINK_BATCH);
        let t = Instant::now();
        for i in 0..k {
            push(list, i);
        }
        let pushed = t.elapsed();
        let t = Instant::now();
        for _ in 0..k {
            pop(list);
        }
        let popped = t.elapsed();
        total += if time_push { pushed } else { popped };
        left -= k;
    }
    total
}

/// `alloc_link` (time the pushes) and `unlink_free` (time the pops).
fn bench_link(c: &mut Criterion, ptm: &PtmPool<Root>, pmdk: Option<&Pmdk>) {
    for (name, time_push) in [("alloc_link", true), ("unlink_free", false)] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        let variants: &[(&str, bool)] = if time_push {
            &[("ptm", false)]
        } else {
            &[("ptm", false), ("ptm_free_first", true)]
        };
        for &(fname, free_first) in variants {
            g.bench_function(fname, |b| {
                b.iter_custom(|iters| {
                    push_pop_rounds(
                        iters,
                        time_push,
                        &mut (),
                        |_, v| ptm_push(&ptm.pool, v).expect("ptm push"),
                        |_| {
                            ptm_pop(&ptm.pool, free_first)
                                .expect("ptm pop")
                                .expect("list not empty");
                        },
                    )
                })
            });
        }
        if let Some(p) = pmdk {
            g.bench_function("pmdk", |b| {
                b.iter_custom(|iters| {
                    push_pop_rounds(
                        iters,
                        time_push,
                        &mut (),
                        |_, v| p.tx_push(v).expect("PMDK push"),
                        |_| {
                            p.tx_pop().expect("PMDK pop").expect("list not empty");
                        },
                    )
                })
            });
        }
        g.bench_function("system", |b| {
            let mut head = None;
            b.iter_custom(|iters| {
                push_pop_rounds(iters, time_push, &mut head, system_push, |h| {
                    system_pop(h).expect("list not empty");
                })
            })
        });
        g.finish();
    }
}

/// Runs `op` `iters` times on criterion's thread and on one helper thread at once, per sample;
/// the time is the wall time until both are done.
fn bench_two_threads(g: &mut BenchmarkGroup<'_, WallTime>, id: BenchmarkId, op: &(dyn Fn() + Sync)) {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        // Created inside the scope so that a panic here drops the sender (and the helper exits)
        // before the scope joins the helper.
        let (go_tx, go_rx) = mpsc::channel::<u64>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let barrier = &barrier;
        s.spawn(move || {
            while let Ok(iters) = go_rx.recv() {
                barrier.wait();
                for _ in 0..iters {
                    op();
                }
                if done_tx.send(()).is_err() {
                    break;
                }
            }
        });
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                go_tx.send(iters).expect("helper thread alive");
                barrier.wait();
                let t = Instant::now();
                for _ in 0..iters {
                    op();
                }
                done_rx.recv().expect("helper thread finished");
                t.elapsed()
            })
        });
        drop(go_tx);
    });
}

/// `alloc_free_pairs_2threads`: 16 pairs of 64 bytes per transaction on two threads at once.
fn bench_threads(c: &mut Criterion, shared: &PtmPool<SharedRoot>, pmdk: Option<&Pmdk>) {
    let mut g = c.benchmark_group("alloc_free_pairs_2threads");
    g.throughput(Throughput::Elements(2 * THREAD_PAIRS as u64));
    let n = THREAD_PAIRS;
    let pool = &shared.pool;
    bench_two_threads(&mut g, BenchmarkId::new("ptm", n), &|| {
        ptm_alloc_free(pool, black_box(n), THREAD_SIZE).expect("ptm transaction")
    });
    if let Some(h) = pmdk.map(Pmdk::alloc_handle) {
        bench_two_threads(&mut g, BenchmarkId::new("pmdk", n), &|| {
            h.tx_alloc_free(black_box(n as u64), THREAD_SIZE)
                .expect("PMDK transaction")
        });
    }
    let layout = sys_layout(THREAD_SIZE);
    bench_two_threads(&mut g, BenchmarkId::new("system", n), &|| {
        system_alloc_free(black_box(n), layout)
    });
    g.finish();
}

/// Checks that every block allocated by the benchmarks was freed again.
fn check_heaps(ptm: &mut PtmPool<Root>, shared: &mut PtmPool<SharedRoot>, pmdk: Option<&Pmdk>) {
    for (name, stats) in [
        ("ptm", ptm.pool.check_heap()),
        ("ptm (2 threads)", shared.pool.check_heap()),
    ] {
        let stats = stats.expect("ptm heap check");
        let blocks: u64 = stats.per_class.iter().sum();
        println!(
            "{name} heap after: {blocks} allocated block(s), {} slab chunk(s), {} run chunk(s)",
            stats.slab_chunks, stats.run_chunks
        );
    }
    #[cfg(feature = "pmdk")]
    if let Some(p) = pmdk {
        println!("pmdk heap after: {} allocated object(s)", p.count_alloc_objects());
    }
    #[cfg(not(feature = "pmdk"))]
    let _ = pmdk;
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_millis(2500))
        .without_plots()
}

fn main() {
    // Before any libpmemobj call and while single-threaded (see `force_pmem_env`).
    #[cfg(feature = "pmdk")]
    ptm_benches::pmdk::force_pmem_env();
    let mut ptm = ptm_pool::<Root>("ptm.pool");
    let mut shared = ptm_pool::<SharedRoot>("ptm-shared.pool");
    let pmdk = pmdk_pool();
    print_setup(&ptm, &shared, pmdk.as_ref());
    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = config().configure_from_args();
    bench_pairs(&mut c, &ptm, pmdk.as_ref());
    bench_link(&mut c, &ptm, pmdk.as_ref());
    bench_threads(&mut c, &shared, pmdk.as_ref());
    c.final_summary();
    check_heaps(&mut ptm, &mut shared, pmdk.as_ref());
}
