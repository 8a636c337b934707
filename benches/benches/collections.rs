//! ptm-collections maps side by side with std's maps and SQLite.
//!
//! Per-operation time of `insert`, `get` and `remove` of `u64 -> u64` entries, on maps holding
//! up to [`N`] = 100 000 keys (kept modest so the whole run stays around three minutes):
//!
//! - `PHashMap`, `PBTreeMap`: one durable ptm transaction per operation (2 drains per insert
//!   and remove, 0 per get; printed at startup), pool on [`pmem_pool_dir`] (`/dev/shm`) forced
//!   into the cache-flush domain (`force_pmem(true)`).
//! - `std::collections::HashMap` / `BTreeMap`: the volatile bound (nothing durable).
//! - SQLite (bundled, via `rusqlite`): one autocommit statement per operation, i.e. a durable
//!   commit each, `journal_mode=WAL` and `synchronous=FULL`, table
//!   `kv(k INTEGER PRIMARY KEY, v INTEGER)`, database file in the same directory as the ptm
//!   pools. On tmpfs its `fsync` costs next to nothing, so this is SQLite's CPU cost of a durable
//!   commit, as ptm's `clwb` + `sfence` on DRAM is ptm's.
//! - `PConcurrentMap<u64, u64, 16>` with 1 and 2 threads (disjoint keys): wall time per
//!   operation over all threads, so perfect scaling halves it.
//!
//! Keys are `i * 0x9E37_79B9_7F4A_7C15` (a bijection on `u64`), so both hash and tree maps
//! see them in scattered order. `insert` inserts fresh keys into a map that is cleared (untimed)
//! whenever it reaches `N` keys; `get` reads keys of a full map (all hits); `remove` removes
//! keys of a map refilled (untimed) when empty. LMDB and PMDK's hashmap example are not
//! included.
//!
//! Run with `cargo bench -p ptm-benches --bench collections`.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ptm::{Error, Persistent, Pool, PoolOptions, Transaction};
use ptm_benches::pmem_pool_dir;
use ptm_collections::{PBTreeMap, PConcurrentMap, PHashMap};
use rusqlite::Connection;

/// Keys per map.
const N: u64 = 100_000;
/// Entries written per transaction when (re)filling a ptm map outside the timed part.
const FILL_CHUNK: u64 = 1000;
/// Size of each ptm pool.
const POOL_SIZE: u64 = 256 << 20;
/// Shards of the concurrent map.
const SHARDS: usize = 16;

/// The `i`-th key.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct HashRoot {
    m: PHashMap<u64, u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct TreeRoot {
    m: PBTreeMap<u64, u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct ConcRoot {
    m: PConcurrentMap<u64, u64, SHARDS>,
}

/// The maps under test, behind one interface: `insert`, `get`, `remove` of one key (durable
/// for the persistent ones), and untimed `clear` / `fill`.
trait Map {
    fn insert(&mut self, k: u64, v: u64);
    fn get(&mut self, k: u64) -> Option<u64>;
    fn remove(&mut self, k: u64) -> Option<u64>;
    fn clear(&mut self);
    /// Inserts keys `key(0..n)`.
    fn fill(&mut self, n: u64);
}

/// The ptm collection maps: one transaction per operation.
trait PMap: Persistent {
    fn p_insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>>;
    fn p_get(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>>;
    fn p_remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>>;
    fn p_clear(&self, tx: &Transaction<'_>) -> ptm::Result<()>;
}

impl PMap for HashRoot {
    fn p_insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>> {
        self.m.insert(tx, k, v)
    }
    fn p_get(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.get(tx, &k)
    }
    fn p_remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.remove(tx, &k)
    }
    fn p_clear(&self, tx: &Transaction<'_>) -> ptm::Result<()> {
        self.m.clear(tx)
    }
}

impl PMap for TreeRoot {
    fn p_insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>> {
        self.m.insert(tx, k, v)
    }
    fn p_get(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.get(tx, &k)
    }
    fn p_remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.remove(tx, &k)
    }
    fn p_clear(&self, tx: &Transaction<'_>) -> ptm::Result<()> {
        self.m.clear(tx)
    }
}

impl PMap for ConcRoot {
    fn p_insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>> {
        self.m.insert(tx, k, v)
    }
    fn p_get(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.get(tx, &k)
    }
    fn p_remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.remove(tx, &k)
    }
    fn p_clear(&self, tx: &Transaction<'_>) -> ptm::Result<()> {
        self.m.clear(tx)
    }
}

/// A ptm pool in a fresh temporary directory (`pool` first: closed before the directory goes).
struct PtmMap<R: Persistent> {
    pool: Pool<R>,
    _dir: tempfile::TempDir,
}

fn ptm_map<R: Persistent>(name: &str) -> PtmMap<R> {
    let dir = tempfile::Builder::new()
        .prefix("ptm-bench-")
        .tempdir_in(pmem_pool_dir())
        .expect("create the pool directory");
    let pool = Pool::<R>::create(
        dir.path().join(format!("{name}.pool")),
        POOL_SIZE,
        &PoolOptions::new().layout(name).force_pmem(true),
    )
    .expect("create the ptm pool");
    PtmMap { pool, _dir: dir }
}

/// Inserts `key(lo..hi)` into a ptm map, `FILL_CHUNK` per transaction.
fn ptm_fill<R: PMap>(pool: &Pool<R>, lo: u64, hi: u64) {
    let mut i = lo;
    while i < hi {
        let end = (i + FILL_CHUNK).min(hi);
        pool.transaction(|tx, r| {
            for j in i..end {
                r.p_insert(tx, key(j), j)?;
            }
            Ok::<_, Error>(())
        })
        .expect("fill");
        i = end;
    }
}

impl<R: PMap> Map for PtmMap<R> {
    fn insert(&mut self, k: u64, v: u64) {
        self.pool
            .transaction(|tx, r| r.p_insert(tx, k, v))
            .expect("insert");
    }
    fn get(&mut self, k: u64) -> Option<u64> {
        self.pool.transaction(|tx, r| r.p_get(tx, k)).expect("get")
    }
    fn remove(&mut self, k: u64) -> Option<u64> {
        self.pool.transaction(|tx, r| r.p_remove(tx, k)).expect("remove")
    }
    fn clear(&mut self) {
        self.pool.transaction(|tx, r| r.p_clear(tx)).expect("clear");
    }
    fn fill(&mut self, n: u64) {
        ptm_fill(&self.pool, 0, n);
    }
}

impl Map for HashMap<u64, u64> {
    fn insert(&mut self, k: u64, v: u64) {
        HashMap::insert(self, k, v);
    }
    fn get(&mut self, k: u64) -> Option<u64> {
        HashMap::get(self, &k).copied()
    }
    fn remove(&mut self, k: u64) -> Option<u64> {
        HashMap::remove(self, &k)
    }
    fn clear(&mut self) {
        HashMap::clear(self);
    }
    fn fill(&mut self, n: u64) {
        self.extend((0..n).map(|i| (key(i), i)));
    }
}

impl Map for BTreeMap<u64, u64> {
    fn insert(&mut self, k: u64, v: u64) {
        BTreeMap::insert(self, k, v);
    }
    fn get(&mut self, k: u64) -> Option<u64> {
        BTreeMap::get(self, &k).copied()
    }
    fn remove(&mut self, k: u64) -> Option<u64> {
        BTreeMap::remove(self, &k)
    }
    fn clear(&mut self) {
        BTreeMap::clear(self);
    }
    fn fill(&mut self, n: u64) {
        self.extend((0..n).map(|i| (key(i), i)));
    }
}

/// A SQLite database in a fresh temporary directory under [`pmem_pool_dir`].
struct Sqlite {
    conn: Connection,
    _dir: tempfile::TempDir,
}

fn sqlite() -> Sqlite {
    let dir = tempfile::Builder::new()
        .prefix("ptm-bench-sqlite-")
        .tempdir_in(pmem_pool_dir())
        .expect("create the SQLite directory");
    let conn = Connection::open(dir.path().join("kv.sqlite")).expect("open SQLite");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER NOT NULL);",
    )
    .expect("set up SQLite");
    Sqlite { conn, _dir: dir }
}

impl Map for Sqlite {
    fn insert(&mut self, k: u64, v: u64) {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute((k as i64, v as i64)))
            .expect("SQLite insert");
    }
    fn get(&mut self, k: u64) -> Option<u64> {
        let mut s = self
            .conn
            .prepare_cached("SELECT v FROM kv WHERE k = ?1")
            .expect("SQLite prepare");
        let mut rows = s.query([k as i64]).expect("SQLite get");
        rows.next()
            .expect("SQLite get")
            .map(|r| r.get::<_, i64>(0).expect("SQLite column") as u64)
    }
    fn remove(&mut self, k: u64) -> Option<u64> {
        let mut s = self
            .conn
            .prepare_cached("DELETE FROM kv WHERE k = ?1 RETURNING v")
            .expect("SQLite prepare");
        let mut rows = s.query([k as i64]).expect("SQLite remove");
        rows.next()
            .expect("SQLite remove")
            .map(|r| r.get::<_, i64>(0).expect("SQLite column") as u64)
    }
    fn clear(&mut self) {
        self.conn.execute("DELETE FROM kv", []).expect("SQLite clear");
    }
    fn fill(&mut self, n: u64) {
        let tx = self.conn.transaction().expect("SQLite begin");
        {
            let mut s = tx
                .prepare_cached("INSERT INTO kv(k, v) VALUES (?1, ?2)")
                .expect("SQLite prepare");
            for i in 0..n {
                s.execute((key(i) as i64, i as i64)).expect("SQLite fill");
            }
        }
        tx.commit().expect("SQLite commit");
    }
}

/// Runs `iters` timed operations on `m` in rounds of at most `N - *used` (operation indices
/// `*used..N`), calling the untimed `reset` whenever `*used` reaches `N`.
fn rounds<M: ?Sized>(
    iters: u64,
    used: &mut u64,
    m: &mut M,
    reset: impl Fn(&mut M),
    run: impl Fn(&mut M, u64, u64) -> Duration,
) -> Duration {
    let mut left = iters;
    let mut total = Duration::ZERO;
    while left > 0 {
        if *used == N {
            reset(m);
            *used = 0;
        }
        let n = left.min(N - *used);
        total += run(m, *used, n);
        *used += n;
        left -= n;
    }
    total
}

/// Timed loop over operation indices `lo..lo + n`.
fn timed(lo: u64, n: u64, mut op: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in lo..lo + n {
        op(i);
    }
    start.elapsed()
}

/// `insert`, `get`, `remove` benchmarks of one map: functions `insert`, `get`, `remove` in the
/// group `name`.
fn bench_map(c: &mut Criterion, name: &str, m: &mut dyn Map) {
    let mut g = c.benchmark_group(name);
    let mut used = 0u64;
    m.clear();
    g.bench_function("insert", |b| {
        b.iter_custom(|iters| {
            rounds(
                iters,
                &mut used,
                m,
                |m| m.clear(),
                |m, lo, n| timed(lo, n, |i| m.insert(black_box(key(i)), i)),
            )
        })
    });
    m.clear();
    m.fill(N);
    let mut used = 0u64;
    g.bench_function("get", |b| {
        b.iter_custom(|iters| {
            rounds(
                iters,
                &mut used,
                m,
                |_| {},
                |m, lo, n| {
                    timed(lo, n, |i| {
                        black_box(m.get(black_box(key(i))));
                    })
                },
            )
        })
    });
    let mut used = 0u64;
    g.bench_function("remove", |b| {
        b.iter_custom(|iters| {
            rounds(
                iters,
                &mut used,
                m,
                |m| m.fill(N),
                |m, lo, n| {
                    timed(lo, n, |i| {
                        black_box(m.remove(black_box(key(i))));
                    })
                },
            )
        })
    });
    g.finish();
    m.clear();
}

/// Runs operation indices `lo..lo + n` split into `threads` contiguous runs, one per thread;
/// returns the wall time.
fn parallel(threads: u64, lo: u64, n: u64, op: impl Fn(u64) + Sync) -> Duration {
    let op = &op;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (a, b) = (lo + n * t / threads, lo + n * (t + 1) / threads);
            s.spawn(move || (a..b).for_each(op));
        }
    });
    start.elapsed()
}

/// `PConcurrentMap` insert and get with `threads` threads: function `<threads>_threads` in
/// groups `PConcurrentMap_insert`, `PConcurrentMap_get`.
fn bench_concurrent(c: &mut Criterion, m: &PtmMap<ConcRoot>, threads: u64) {
    let pool = &m.pool;
    let clear = |p: &mut &Pool<ConcRoot>| p.transaction(|tx, r| r.m.clear(tx)).expect("clear");
    let name = format!("{threads}_threads");
    let mut p = pool;
    clear(&mut p);
    let mut used = 0u64;
    let mut g = c.benchmark_group("PConcurrentMap_insert");
    g.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            rounds(iters, &mut used, &mut p, clear, |p, lo, n| {
                let p = *p;
                parallel(threads, lo, n, |i| {
                    p.transaction(|tx, r| r.m.insert(tx, black_box(key(i)), i))
                        .expect("insert");
                })
            })
        })
    });
    clear(&mut p);
    ptm_fill(pool, 0, N);
    let mut used = 0u64;
    g.finish();
    let mut g = c.benchmark_group("PConcurrentMap_get");
    g.bench_function(&name, |b| {
        b.iter_custom(|iters| {
            rounds(
                iters,
                &mut used,
                &mut p,
                |_| {},
                |p, lo, n| {
                    let p = *p;
                    parallel(threads, lo, n, |i| {
                        black_box(
                            p.transaction(|tx, r| r.m.get(tx, &black_box(key(i))))
                                .expect("get"),
                        );
                    })
                },
            )
        })
    });
    g.finish();
    clear(&mut p);
}

/// Prints the drains per operation of each ptm map (and checks the values read back).
fn print_drains(h: &mut PtmMap<HashRoot>, t: &mut PtmMap<TreeRoot>, c: &mut PtmMap<ConcRoot>) {
    println!(
        "ptm-collections maps, N = {N} u64 keys, pools in {}",
        pmem_pool_dir().display()
    );
    const OPS: u64 = 1000;
    let maps: [(&str, &mut dyn Map); 3] = [("PHashMap", h), ("PBTreeMap", t), ("PConcurrentMap", c)];
    for (name, m) in maps {
        m.clear();
        let mut per_op = |f: &mut dyn FnMut(&mut dyn Map, u64)| {
            let before = ptm::thread_stats();
            for i in 0..OPS {
                f(m, i);
            }
            ptm::thread_stats().since(&before).drains as f64 / OPS as f64
        };
        let ins = per_op(&mut |m, i| m.insert(key(i), i));
        let get = per_op(&mut |m, i| assert_eq!(m.get(key(i)), Some(i)));
        let rem = per_op(&mut |m, i| assert_eq!(m.remove(key(i)), Some(i)));
        println!("{name:<15}: drains per op: insert {ins}, get {get}, remove {rem}");
        m.clear();
    }
    println!();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

fn main() {
    let mut h = ptm_map::<HashRoot>("phashmap");
    let mut t = ptm_map::<TreeRoot>("pbtreemap");
    let mut cm = ptm_map::<ConcRoot>("pconcurrentmap");
    print_drains(&mut h, &mut t, &mut cm);
    let mut sql = sqlite();
    assert!(Path::new(&pmem_pool_dir()).is_dir());
    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = config().configure_from_args();
    bench_map(&mut c, "PHashMap", &mut h);
    bench_map(&mut c, "std_HashMap", &mut HashMap::new());
    bench_map(&mut c, "PBTreeMap", &mut t);
    bench_map(&mut c, "std_BTreeMap", &mut BTreeMap::new());
    bench_map(&mut c, "SQLite", &mut sql);
    for threads in [1, 2] {
        bench_concurrent(&mut c, &cm, threads);
    }
    c.final_summary();
}
