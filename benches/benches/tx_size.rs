//! Time per insert against the size of the transaction: a large transaction must not cost more
//! per operation than a small one (issue 18).
//!
//! Each map starts with [`PREFILL`] `u64 -> u64` entries (keys scattered as in the
//! `collections` bench). A timed iteration is one transaction of `s` inserts of fresh keys,
//! for `s` in [`ALL_SIZES`]; its time is divided by `s`. Once [`RESET`] keys (or one
//! transaction's worth, if more) have been inserted, they are removed again, untimed, in
//! transactions of 1000, so every size sees about the same map.
//!
//! Systems (criterion group `insert_per_tx_size`, function `<system>/<s>`):
//!
//! - `PHashMap`, `PBTreeMap`: one ptm transaction of `s` inserts (a pool on `/dev/shm` forced
//!   into the cache-flush domain);
//! - `PHashMap_extend`: one ptm transaction running `PHashMap::extend` over the `s` entries
//!   (new keys staged, 64 behind one drain);
//! - `PMDK_HashMap`, `PMDK_BTree` (feature `pmdk`): the C maps of the `collections` bench, one
//!   libpmemobj transaction of `s` inserts (`pcol_*_insert_batch`), `PMEM_IS_PMEM_FORCE=1`.
//!
//! Before the criterion runs it prints ptm's drains per insert for each size (a deterministic
//! count). After them, an interleaved pass (every system and size in turn, [`ROUNDS`] rounds
//! of at least [`ROUND_INSERTS`] inserts) prints the median time per insert and its ratio to
//! the same system's 1-insert transactions: the figure to read across sizes, since all of it
//! comes from one stretch of the run.
//!
//! Run with `cargo bench -p ptm-benches --bench tx_size --features pmdk` (or without the
//! feature for the ptm rows only). `PTM_BENCH_ENGINE=journaled` or `msync` puts the ptm pools on
//! disk instead (`target/tx-size-bench` under the working directory, `benches/` under cargo;
//! that engine, no PMDK rows) and keeps the sizes up to
//! 1 000 (an `msync` engine's drain is a device flush).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use ptm::pmem_core::Engine;
use ptm::{Error, Persistent, Pool, PoolOptions, Transaction};
use ptm_benches::pmem_pool_dir;
use ptm_collections::{PBTreeMap, PHashMap};

/// Entries in each map before the timing.
const PREFILL: u64 = 100_000;
/// Transaction sizes (inserts per transaction).
const ALL_SIZES: [u64; 6] = [1, 10, 100, 1_000, 10_000, 100_000];
/// Environment variable: `journaled` or `msync` runs the ptm pools on disk with that engine.
const ENGINE_ENV: &str = "PTM_BENCH_ENGINE";

/// The engine [`ENGINE_ENV`] asks for (`None`: persistent memory on `/dev/shm`).
fn disk_engine() -> Option<Engine> {
    match std::env::var(ENGINE_ENV).as_deref() {
        Ok("journaled") => Some(Engine::Journaled),
        Ok("msync") => Some(Engine::Msync),
        Ok(other) => panic!("{ENGINE_ENV}={other:?}: expected journaled or msync"),
        Err(_) => None,
    }
}

/// The transaction sizes timed: all of them on persistent memory, up to 1 000 on disk.
fn sizes() -> Vec<u64> {
    let max = if disk_engine().is_some() { 1_000 } else { u64::MAX };
    ALL_SIZES.into_iter().filter(|&s| s <= max).collect()
}
/// Inserted keys are removed again (untimed) once this many are in (or one transaction's).
const RESET: u64 = 10_000;
/// Interleaved rounds per system and size.
const ROUNDS: usize = 5;
/// Least inserts per interleaved round.
const ROUND_INSERTS: u64 = 4_000;
/// Pool size, for ptm and PMDK alike.
const POOL_SIZE: u64 = 1 << 30;
/// Entries per transaction when filling or emptying outside the timing.
const CHUNK: u64 = 1_000;

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

/// A map that inserts and removes batches of keys, each batch one transaction.
trait BatchMap {
    /// Inserts `key(i) -> i` for `i` in `lo..hi`, in one transaction.
    fn insert_tx(&mut self, lo: u64, hi: u64);
    /// Removes `key(i)` for `i` in `lo..hi` (all present), in one transaction.
    fn remove_tx(&mut self, lo: u64, hi: u64);
}

/// A ptm pool on `/dev/shm` with its temporary directory (the pool first: closed before the
/// directory goes).
struct PtmMap<R: Persistent> {
    pool: Pool<R>,
    _dir: tempfile::TempDir,
}

impl<R: Persistent> PtmMap<R> {
    fn create(name: &str) -> Self {
        let (parent, opts) = match disk_engine() {
            Some(engine) => {
                let parent = std::path::PathBuf::from("target/tx-size-bench");
                std::fs::create_dir_all(&parent).expect("create target/tx-size-bench");
                (parent, PoolOptions::new().layout(name).engine(engine))
            }
            None => (pmem_pool_dir(), PoolOptions::new().layout(name).force_pmem(true)),
        };
        let dir = tempfile::Builder::new()
            .prefix("ptm-bench-")
            .tempdir_in(parent)
            .expect("create the pool directory");
        let pool = Pool::<R>::create(dir.path().join(format!("{name}.pool")), POOL_SIZE, &opts)
            .expect("create the ptm pool");
        PtmMap { pool, _dir: dir }
    }
}

/// The insert and remove of a ptm root whose field `m` is a map.
trait PtmRoot: Persistent {
    fn insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>>;
    fn remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>>;
}

impl PtmRoot for HashRoot {
    fn insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>> {
        self.m.insert(tx, k, v)
    }
    fn remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.remove(tx, &k)
    }
}

impl PtmRoot for TreeRoot {
    fn insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>> {
        self.m.insert(tx, k, v)
    }
    fn remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
        self.m.remove(tx, &k)
    }
}

impl<R: PtmRoot> BatchMap for PtmMap<R> {
    fn insert_tx(&mut self, lo: u64, hi: u64) {
        self.pool
            .transaction(|tx, r| {
                for i in lo..hi {
                    let old = r.insert(tx, black_box(key(i)), i)?;
                    assert!(old.is_none(), "a fresh key");
                }
                Ok::<_, Error>(())
            })
            .expect("ptm insert transaction");
    }
    fn remove_tx(&mut self, lo: u64, hi: u64) {
        self.pool
            .transaction(|tx, r| {
                for i in lo..hi {
                    assert_eq!(r.remove(tx, key(i))?, Some(i), "a present key");
                }
                Ok::<_, Error>(())
            })
            .expect("ptm remove transaction");
    }
}

/// A ptm map filled by `extend` (one call per transaction) instead of one insert per entry.
struct ExtendMap<R: Persistent>(PtmMap<R>);

/// The `extend` of a ptm root whose field `m` is a map.
trait ExtendRoot: PtmRoot {
    fn extend(&self, tx: &Transaction<'_>, lo: u64, hi: u64) -> ptm::Result<()>;
}

impl ExtendRoot for HashRoot {
    fn extend(&self, tx: &Transaction<'_>, lo: u64, hi: u64) -> ptm::Result<()> {
        self.m.extend(tx, (lo..hi).map(|i| (black_box(key(i)), i)))
    }
}

impl<R: ExtendRoot> BatchMap for ExtendMap<R> {
    fn insert_tx(&mut self, lo: u64, hi: u64) {
        self.0
            .pool
            .transaction(|tx, r| r.extend(tx, lo, hi))
            .expect("ptm extend transaction");
    }
    fn remove_tx(&mut self, lo: u64, hi: u64) {
        self.0.remove_tx(lo, hi);
    }
}

#[cfg(feature = "pmdk")]
use ptm_benches::pmdk_collections::{PmdkMap, PmdkMapKind};

#[cfg(feature = "pmdk")]
impl BatchMap for PmdkMap {
    fn insert_tx(&mut self, lo: u64, hi: u64) {
        let entries: Vec<(u64, u64)> = (lo..hi).map(|i| (key(i), i)).collect();
        self.insert_batch(&entries).expect("PMDK insert transaction");
    }
    fn remove_tx(&mut self, lo: u64, hi: u64) {
        let keys: Vec<u64> = (lo..hi).map(key).collect();
        self.remove_batch(&keys).expect("PMDK remove transaction");
    }
}

/// One system: its map and the index of its next fresh key.
struct Subject {
    name: &'static str,
    map: Box<dyn BatchMap>,
    /// Keys `PREFILL..pending_lo` were inserted and removed again; `pending_lo..next` are in.
    pending_lo: u64,
    next: u64,
}

impl Subject {
    fn new(name: &'static str, mut map: Box<dyn BatchMap>) -> Subject {
        for lo in (0..PREFILL).step_by(CHUNK as usize) {
            map.insert_tx(lo, (lo + CHUNK).min(PREFILL));
        }
        Subject {
            name,
            map,
            pending_lo: PREFILL,
            next: PREFILL,
        }
    }

    /// One timed transaction of `s` fresh inserts (removing earlier ones first, untimed, when
    /// [`RESET`] or `s` of them are in): its time.
    fn timed_tx(&mut self, s: u64) -> Duration {
        if self.next - self.pending_lo >= RESET.max(s) {
            self.reset();
        }
        let lo = self.next;
        self.next += s;
        let start = Instant::now();
        self.map.insert_tx(lo, lo + s);
        start.elapsed()
    }

    /// Removes every key inserted since the last reset, in transactions of [`CHUNK`].
    fn reset(&mut self) {
        let mut lo = self.pending_lo;
        while lo < self.next {
            let hi = (lo + CHUNK).min(self.next);
            self.map.remove_tx(lo, hi);
            lo = hi;
        }
        self.pending_lo = self.next;
    }
}

/// ptm's drains per insert in a transaction of `s` inserts, for each size (a fresh map).
fn print_drains() {
    let mut hash = PtmMap::<HashRoot>::create("drains-hash");
    let mut tree = PtmMap::<TreeRoot>::create("drains-tree");
    let mut hash_ext = ExtendMap(PtmMap::<HashRoot>::create("drains-hash-extend"));
    let maps: [(&str, &mut dyn BatchMap); 3] = [
        ("PHashMap", &mut hash),
        ("PBTreeMap", &mut tree),
        ("PHashMap_extend", &mut hash_ext),
    ];
    for (name, map) in maps {
        map.insert_tx(0, PREFILL);
        let mut next = PREFILL;
        let line: Vec<String> = sizes()
            .iter()
            .map(|&s| {
                let before = ptm::thread_stats();
                map.insert_tx(next, next + s);
                let d = ptm::thread_stats().since(&before);
                map.remove_tx(next, next + s);
                next += s;
                format!("{s}: {:.2}", d.drains as f64 / s as f64)
            })
            .collect();
        println!(
            "{name:<17} drains per insert, by inserts per transaction: {}",
            line.join(", ")
        );
    }
}

fn main() {
    // Before any libpmemobj call and while single-threaded (see `force_pmem_env`).
    #[cfg(feature = "pmdk")]
    ptm_benches::pmdk::force_pmem_env();
    print_drains();

    let sizes = sizes();
    let mut subjects = vec![
        Subject::new("PHashMap", Box::new(PtmMap::<HashRoot>::create("hash"))),
        Subject::new("PBTreeMap", Box::new(PtmMap::<TreeRoot>::create("tree"))),
        Subject::new(
            "PHashMap_extend",
            Box::new(ExtendMap(PtmMap::<HashRoot>::create("hash-extend"))),
        ),
    ];
    // PMDK's maps are persistent-memory only: not beside a disk engine.
    #[cfg(feature = "pmdk")]
    if disk_engine().is_none() {
        for (name, kind) in [
            ("PMDK_HashMap", PmdkMapKind::Hash),
            ("PMDK_BTree", PmdkMapKind::BTree),
        ] {
            let m = PmdkMap::create(kind, &pmem_pool_dir(), POOL_SIZE).expect("create the PMDK map");
            subjects.push(Subject::new(name, Box::new(m)));
        }
    }

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args();
    {
        let mut g = c.benchmark_group("insert_per_tx_size");
        // `iter_custom` returns each transaction's time / s: criterion's time is per insert.
        for subject in &mut subjects {
            for &s in &sizes {
                g.bench_function(format!("{}/{s}", subject.name), |b| {
                    b.iter_custom(|iters| (0..iters).map(|_| subject.timed_tx(s) / s as u32).sum())
                });
            }
        }
        g.finish();
    }

    // The interleaved pass: every system and size in turn, round after round.
    let mut per: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); sizes.len()]; subjects.len()];
    for _ in 0..ROUNDS {
        for (si, subject) in subjects.iter_mut().enumerate() {
            for (zi, &s) in sizes.iter().enumerate() {
                let txs = ROUND_INSERTS.div_ceil(s);
                let t: Duration = (0..txs).map(|_| subject.timed_tx(s)).sum();
                per[si][zi].push(t.as_nanos() as f64 / (txs * s) as f64);
            }
        }
    }
    println!("\ninterleaved pass: median ns per insert ({ROUNDS} rounds), and / the same system's 1-insert transactions");
    print!("{:<17}", "system");
    for &s in &sizes {
        print!(" {:>16}", format!("{s} per tx"));
    }
    println!();
    for (si, subject) in subjects.iter().enumerate() {
        let med: Vec<f64> = per[si]
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect();
        print!("{:<17}", subject.name);
        for m in &med {
            print!(" {:>16}", format!("{m:.0} ({:.2}x)", m / med[0]));
        }
        println!();
    }
    c.final_summary();
}
