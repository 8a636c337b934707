//! ptm-collections maps side by side with PMDK, std, LMDB and SQLite, on maps of 1 000 000
//! `u64 -> u64` entries.
//!
//! Systems (criterion group names), persistent ones all with their files in [`pmem_pool_dir`]
//! (`/dev/shm`, tmpfs):
//!
//! - `PHashMap`, `PBTreeMap`: one durable ptm transaction per operation (insert and remove 2
//!   drains, get 0; printed at startup), pools forced into the cache-flush domain
//!   (`force_pmem(true)`).
//! - `PMDK_HashMap`, `PMDK_BTree`: a chained hash map and a B+ tree (15 keys per node, removal
//!   without rebalancing, as `PBTreeMap`) written in C against libpmemobj in this crate
//!   (`csrc/pmdk_collections.c`, feature `pmdk`; without it these rows are skipped): one
//!   libpmemobj transaction per insert and remove, a plain read (no transaction) per get, as C
//!   users write it. `PMEM_IS_PMEM_FORCE=1`, so PMDK flushes caches as ptm does.
//! - `std_HashMap`, `std_BTreeMap`: the volatile bound (nothing durable).
//! - `LMDB` (bundled, `heed`): default durable flags (every commit syncs), one write transaction
//!   per insert and remove, one read transaction per get.
//! - `SQLite` (bundled, `rusqlite`): `journal_mode=WAL`, `synchronous=FULL`, one autocommit
//!   statement per operation (a durable commit each), table `kv(k INTEGER PRIMARY KEY, v)`.
//!   On tmpfs `fsync` costs next to nothing, so LMDB and SQLite are lower bounds: their CPU cost
//!   of a durable commit, as ptm's `clwb` + `sfence` on DRAM is ptm's.
//! - `PConcurrentMap_insert`, `PConcurrentMap_get` (functions `1_thread`, `2_threads`):
//!   `PConcurrentMap<u64, u64, 16>`, the operations split over 1 or 2 threads (disjoint key
//!   ranges for inserts); the time is wall time / total operations, so perfect scaling halves it.
//!   After the criterion runs, the 1- and 2-thread cases are also timed in interleaved rounds and
//!   the median throughput ratio printed.
//!
//! Method. The `i`-th key is `i * 0x9E37_79B9_7F4A_7C15` (a bijection on `u64`, so keys come in
//! scattered order) with value `i`. Each map is prefilled with keys `0..N` (`N` = 1 000 000, or
//! the environment variable `PTM_BENCH_KEYS`) in big transactions (1000 entries per ptm or PMDK
//! transaction, 100 000 per LMDB or SQLite transaction), outside the timing. Then, with
//! `C = N / 16` (at most `C` timed operations in a row):
//!
//! - `insert`: first an untimed settling round (insert `C` fresh keys, remove them), so growth
//!   that the first excursion above `N` entries triggers (the PMDK hash map doubles its buckets
//!   at 2^20 entries) is not charged to one sample. Then rounds of up to `C` timed inserts of
//!   fresh keys (indices `N, N + 1, ...`, never reused), each followed by the untimed removal of
//!   those keys (in big transactions), so the map holds between `N` and `N + C` entries. Costs a
//!   map pays later for that churn (rebuilding `PHashMap`'s table to purge the tombstones of the
//!   removals) fall into later timed inserts, as they would in use.
//! - `get`: keys drawn uniformly at random from the `N` present ones (xorshift), all hits
//!   (checked, outside the timing).
//! - `remove`: rounds of up to `C` timed removals of present keys (indices cycling through
//!   `0..N`), each followed by the untimed reinsertion of those entries, so the map holds
//!   between `N - C` and `N` entries.
//!
//! Every round is checked (outside the timing): inserted keys were new, gets and removals found
//! their keys, the entry count is back to `N`.
//!
//! All eight maps stay alive through their criterion runs, which come one after another. On a
//! shared machine load varies between them, so an interleaved pass follows: 15 timed rounds
//! (after an untimed one) that each run a batch of 2000 operations of every operation on every
//! map in turn, the same way as above; it prints each median time per operation and its ratio to
//! `PHashMap` and to `PBTreeMap` (ratios within one run are what to compare across runs).
//!
//! Run with `cargo bench -p ptm-benches --bench collections --features pmdk` (needs
//! libpmemobj-dev); `PTM_BENCH_KEYS=100000` for a quicker run, and `PTM_BENCH_ONLY=PBTreeMap,PMDK_BTree`
//! (comma-separated group names) to build and time only those systems;
//! `PTM_BENCH_LEGACY_SEGMENTS=1` to give `PHashMap` the segment layout of builds before the
//! pair layout (design §13.4), to compare the layouts in one build.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use heed::byteorder::{BigEndian, NativeEndian};
use heed::types::U64;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use ptm::{Error, Persistent, Pool, PoolOptions, Transaction};
use ptm_benches::{pmem_pool_dir, XorShift as Rng, SHM_DIR};
use ptm_collections::{PBTreeMap, PConcurrentMap, PHashMap};
use rusqlite::Connection;

/// Default number of keys per map.
const DEFAULT_KEYS: u64 = 1_000_000;
/// Environment variable overriding [`DEFAULT_KEYS`].
const KEYS_ENV: &str = "PTM_BENCH_KEYS";
/// Environment variable restricting the systems benchmarked (see [`wanted`]).
const ONLY_ENV: &str = "PTM_BENCH_ONLY";
/// Environment variable: `1` makes every `PHashMap` segment the bench writes take the layout
/// of builds before the pair layout (design §13.4), to compare the two layouts in one build.
const LEGACY_ENV: &str = "PTM_BENCH_LEGACY_SEGMENTS";
/// Entries per ptm / PMDK transaction when filling or emptying outside the timed part.
const FILL_CHUNK: usize = 1000;
/// Entries per LMDB / SQLite transaction when filling or emptying outside the timed part.
const DB_CHUNK: usize = 100_000;
/// Size of each ptm and PMDK pool (allocated up front on tmpfs; 1M entries need under 200 MiB).
const POOL_SIZE: u64 = 512 << 20;
/// Map size of the LMDB environment (a sparse file).
const LMDB_MAP_SIZE: usize = 1 << 30;
/// Shards of the concurrent map.
const SHARDS: usize = 16;
/// Interleaved rounds per thread count of the concurrent map's scaling summary.
const SCALING_ROUNDS: usize = 7;
/// Timed rounds per system and operation of the interleaved pass.
const INTERLEAVED_ROUNDS: usize = 15;
/// Operations per round of the interleaved pass.
const INTERLEAVED_OPS: u64 = 2000;

/// The `i`-th key.
fn key(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The entries of indices `lo..hi`: `(key(i), i)`.
fn entries(lo: u64, hi: u64) -> Vec<(u64, u64)> {
    (lo..hi).map(|i| (key(i), i)).collect()
}

/// Map size and round length.
#[derive(Clone, Copy)]
struct Params {
    /// Keys in a full map.
    n: u64,
    /// Most timed operations in a row before an untimed reset.
    chunk: u64,
}

impl Params {
    fn from_env() -> Params {
        let n = match std::env::var(KEYS_ENV) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n >= 16)
                .unwrap_or_else(|| panic!("{KEYS_ENV}={s:?}: expected a whole number of keys >= 16")),
            Err(_) => DEFAULT_KEYS,
        };
        Params { n, chunk: n / 16 }
    }
}

// ---- The maps ----

/// The maps under test, behind one interface: `insert`, `get`, `remove` of one key (durable
/// for the persistent ones; timed), and untimed bulk operations and count.
trait Map {
    /// Inserts (or updates) `k -> v`.
    fn insert(&mut self, k: u64, v: u64);
    fn get(&mut self, k: u64) -> Option<u64>;
    /// Removes `k`; whether it was present.
    fn remove(&mut self, k: u64) -> bool;
    /// Inserts all of `entries`, in big transactions.
    fn insert_many(&mut self, entries: &[(u64, u64)]);
    /// Removes all of `keys`, in big transactions.
    fn remove_many(&mut self, keys: &[u64]);
    fn len(&mut self) -> u64;
    /// A fingerprint of the map's blocks, for maps that rebuild them (`PHashMap`: its directory
    /// and segments): changes on a growth step.
    fn table(&mut self) -> Option<u64> {
        None
    }
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

/// The ptm collection maps: one transaction per operation.
trait PMap: Persistent {
    fn p_insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>>;
    fn p_get(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>>;
    fn p_remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>>;
    fn p_len(&self, tx: &Transaction<'_>) -> ptm::Result<u64>;
    fn p_table(&self, _tx: &Transaction<'_>) -> Option<u64> {
        None
    }
}

/// Implements [`PMap`] for a root whose field `m` has the map methods.
macro_rules! pmap {
    ($root:ty, $len:expr $(, $table:expr)?) => {
        impl PMap for $root {
            fn p_insert(&self, tx: &Transaction<'_>, k: u64, v: u64) -> ptm::Result<Option<u64>> {
                self.m.insert(tx, k, v)
            }
            fn p_get(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
                self.m.get(tx, &k)
            }
            fn p_remove(&self, tx: &Transaction<'_>, k: u64) -> ptm::Result<Option<u64>> {
                self.m.remove(tx, &k)
            }
            fn p_len(&self, tx: &Transaction<'_>) -> ptm::Result<u64> {
                #[allow(clippy::redundant_closure_call)]
                ($len)(self, tx)
            }
            $(
                fn p_table(&self, tx: &Transaction<'_>) -> Option<u64> {
                    #[allow(clippy::redundant_closure_call)]
                    ($table)(self, tx)
                }
            )?
        }
    };
}

pmap!(
    HashRoot,
    |r: &HashRoot, tx| Ok(r.m.len(tx)),
    // A fingerprint of the directory and segments: changes when a growth step replaced one.
    |r: &HashRoot, tx| r
        .m
        .block_offsets(tx)
        .ok()
        .map(|b| b.iter().fold(b.len() as u64, |h, &o| h.rotate_left(7) ^ o))
);
pmap!(TreeRoot, |r: &TreeRoot, tx| Ok(r.m.len(tx)));
pmap!(ConcRoot, |r: &ConcRoot, tx| r.m.len(tx));

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

fn ptm_insert_many<R: PMap>(pool: &Pool<R>, entries: &[(u64, u64)]) {
    for c in entries.chunks(FILL_CHUNK) {
        pool.transaction(|tx, r| {
            for &(k, v) in c {
                r.p_insert(tx, k, v)?;
            }
            Ok::<_, Error>(())
        })
        .expect("ptm batch insert");
    }
}

fn ptm_remove_many<R: PMap>(pool: &Pool<R>, keys: &[u64]) {
    for c in keys.chunks(FILL_CHUNK) {
        pool.transaction(|tx, r| {
            for k in c {
                r.p_remove(tx, *k)?;
            }
            Ok::<_, Error>(())
        })
        .expect("ptm batch remove");
    }
}

impl<R: PMap> Map for PtmMap<R> {
    #[inline]
    fn insert(&mut self, k: u64, v: u64) {
        self.pool
            .transaction(|tx, r| r.p_insert(tx, k, v))
            .expect("insert");
    }
    #[inline]
    fn get(&mut self, k: u64) -> Option<u64> {
        self.pool.transaction(|tx, r| r.p_get(tx, k)).expect("get")
    }
    #[inline]
    fn remove(&mut self, k: u64) -> bool {
        self.pool
            .transaction(|tx, r| r.p_remove(tx, k))
            .expect("remove")
            .is_some()
    }
    fn insert_many(&mut self, entries: &[(u64, u64)]) {
        ptm_insert_many(&self.pool, entries);
    }
    fn remove_many(&mut self, keys: &[u64]) {
        ptm_remove_many(&self.pool, keys);
    }
    fn len(&mut self) -> u64 {
        self.pool.transaction(|tx, r| r.p_len(tx)).expect("len")
    }
    fn table(&mut self) -> Option<u64> {
        self.pool
            .transaction(|tx, r| Ok::<_, Error>(r.p_table(tx)))
            .expect("table")
    }
}

#[cfg(feature = "pmdk")]
use ptm_benches::pmdk_collections::{PmdkMap, PmdkMapKind};

#[cfg(feature = "pmdk")]
impl Map for PmdkMap {
    #[inline]
    fn insert(&mut self, k: u64, v: u64) {
        PmdkMap::insert(self, k, v).expect("PMDK insert");
    }
    #[inline]
    fn get(&mut self, k: u64) -> Option<u64> {
        PmdkMap::get(self, k)
    }
    #[inline]
    fn remove(&mut self, k: u64) -> bool {
        PmdkMap::remove(self, k).expect("PMDK remove").is_some()
    }
    fn insert_many(&mut self, entries: &[(u64, u64)]) {
        for c in entries.chunks(FILL_CHUNK) {
            self.insert_batch(c).expect("PMDK batch insert");
        }
    }
    fn remove_many(&mut self, keys: &[u64]) {
        for c in keys.chunks(FILL_CHUNK) {
            self.remove_batch(c).expect("PMDK batch remove");
        }
    }
    fn len(&mut self) -> u64 {
        PmdkMap::len(self)
    }
}

/// Implements [`Map`] for a std map type.
macro_rules! std_map {
    ($map:ident) => {
        impl Map for $map<u64, u64> {
            #[inline]
            fn insert(&mut self, k: u64, v: u64) {
                $map::insert(self, k, v);
            }
            #[inline]
            fn get(&mut self, k: u64) -> Option<u64> {
                $map::get(self, &k).copied()
            }
            #[inline]
            fn remove(&mut self, k: u64) -> bool {
                $map::remove(self, &k).is_some()
            }
            fn insert_many(&mut self, entries: &[(u64, u64)]) {
                self.extend(entries.iter().copied());
            }
            fn remove_many(&mut self, keys: &[u64]) {
                keys.iter().for_each(|k| {
                    $map::remove(self, k);
                });
            }
            fn len(&mut self) -> u64 {
                $map::len(self) as u64
            }
        }
    };
}

std_map!(HashMap);
std_map!(BTreeMap);

/// A fresh temporary directory under [`pmem_pool_dir`].
fn db_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(pmem_pool_dir())
        .expect("create a database directory")
}

/// A SQLite database in a fresh temporary directory.
struct Sqlite {
    conn: Connection,
    _dir: tempfile::TempDir,
}

fn sqlite() -> Sqlite {
    let dir = db_dir("ptm-bench-sqlite-");
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
    #[inline]
    fn insert(&mut self, k: u64, v: u64) {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute((k as i64, v as i64)))
            .expect("SQLite insert");
    }
    #[inline]
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
    #[inline]
    fn remove(&mut self, k: u64) -> bool {
        self.conn
            .prepare_cached("DELETE FROM kv WHERE k = ?1")
            .and_then(|mut s| s.execute([k as i64]))
            .expect("SQLite remove")
            == 1
    }
    fn insert_many(&mut self, entries: &[(u64, u64)]) {
        for c in entries.chunks(DB_CHUNK) {
            let tx = self.conn.transaction().expect("SQLite begin");
            {
                let mut s = tx
                    .prepare_cached("INSERT OR REPLACE INTO kv(k, v) VALUES (?1, ?2)")
                    .expect("SQLite prepare");
                for &(k, v) in c {
                    s.execute((k as i64, v as i64)).expect("SQLite fill");
                }
            }
            tx.commit().expect("SQLite commit");
        }
    }
    fn remove_many(&mut self, keys: &[u64]) {
        for c in keys.chunks(DB_CHUNK) {
            let tx = self.conn.transaction().expect("SQLite begin");
            {
                let mut s = tx
                    .prepare_cached("DELETE FROM kv WHERE k = ?1")
                    .expect("SQLite prepare");
                for &k in c {
                    s.execute([k as i64]).expect("SQLite delete");
                }
            }
            tx.commit().expect("SQLite commit");
        }
    }
    fn len(&mut self) -> u64 {
        self.conn
            .query_row("SELECT count(*) FROM kv", [], |r| r.get::<_, i64>(0))
            .expect("SQLite count") as u64
    }
}

/// The LMDB table: `u64` keys (big-endian, so they sort as numbers) to `u64` values.
type LmdbDb<'e> = Database<'e, U64<BigEndian>, U64<NativeEndian>>;

/// An LMDB environment in a fresh temporary directory, default (durable) flags: every commit
/// syncs. Drop the tables borrowing it first.
struct LmdbEnv {
    env: Env,
    _dir: tempfile::TempDir,
}

fn lmdb_env() -> LmdbEnv {
    let dir = db_dir("ptm-bench-lmdb-");
    // SAFETY: the environment is in a fresh private directory that nothing else opens or
    // modifies while it is mapped, and it is opened once.
    let env = unsafe { EnvOpenOptions::new().map_size(LMDB_MAP_SIZE).open(dir.path()) }
        .expect("open the LMDB environment");
    LmdbEnv { env, _dir: dir }
}

/// LMDB's unnamed database of an environment.
struct Lmdb<'e> {
    env: &'e Env,
    db: LmdbDb<'e>,
}

fn lmdb(e: &LmdbEnv) -> Lmdb<'_> {
    let wtxn = e.env.write_txn().expect("LMDB write transaction");
    let db = e
        .env
        .create_databases_and_commit(wtxn, |wdo, wtxn| -> heed::Result<_> {
            let db: LmdbDb<'_> = wdo.create_database(wtxn, None)?;
            Ok(CommitOrAbort::<_, ()>::Commit(db))
        })
        .map(CommitOrAbort::unwrap_commit)
        .expect("LMDB setup");
    Lmdb { env: &e.env, db }
}

impl Map for Lmdb<'_> {
    #[inline]
    fn insert(&mut self, k: u64, v: u64) {
        let mut wtxn = self.env.write_txn().expect("LMDB begin");
        self.db.put(&mut wtxn, &k, &v).expect("LMDB put");
        wtxn.commit().expect("LMDB commit");
    }
    #[inline]
    fn get(&mut self, k: u64) -> Option<u64> {
        let rtxn = self.env.read_txn().expect("LMDB read transaction");
        self.db.get(&rtxn, &k).expect("LMDB get")
    }
    #[inline]
    fn remove(&mut self, k: u64) -> bool {
        let mut wtxn = self.env.write_txn().expect("LMDB begin");
        let found = self.db.delete(&mut wtxn, &k).expect("LMDB delete");
        wtxn.commit().expect("LMDB commit");
        found
    }
    fn insert_many(&mut self, entries: &[(u64, u64)]) {
        for c in entries.chunks(DB_CHUNK) {
            let mut wtxn = self.env.write_txn().expect("LMDB begin");
            for (k, v) in c {
                self.db.put(&mut wtxn, k, v).expect("LMDB put");
            }
            wtxn.commit().expect("LMDB commit");
        }
    }
    fn remove_many(&mut self, keys: &[u64]) {
        for c in keys.chunks(DB_CHUNK) {
            let mut wtxn = self.env.write_txn().expect("LMDB begin");
            for k in c {
                self.db.delete(&mut wtxn, k).expect("LMDB delete");
            }
            wtxn.commit().expect("LMDB commit");
        }
    }
    fn len(&mut self) -> u64 {
        let rtxn = self.env.read_txn().expect("LMDB read transaction");
        self.db.len(&rtxn).expect("LMDB len")
    }
}

// ---- Timing ----

/// The timed operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Insert,
    Get,
    Remove,
}

impl Op {
    const ALL: [Op; 3] = [Op::Insert, Op::Get, Op::Remove];

    fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Get => "get",
            Op::Remove => "remove",
        }
    }
}

/// Timed loop over operation indices `lo..lo + n`.
#[inline]
fn timed(lo: u64, n: u64, mut op: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in lo..lo + n {
        op(i);
    }
    start.elapsed()
}

/// One system under test: its prefilled map and where its operations are in the key space.
struct Subject<'a> {
    /// Criterion group name.
    name: &'static str,
    map: Box<dyn Map + 'a>,
    /// Next fresh index to insert (at or above `N`; never reused).
    fresh: u64,
    /// Next index (modulo `N`) to remove.
    cursor: u64,
    /// Source of the indices to get.
    rng: Rng,
    /// Timed insert rounds with a growth step (see [`Map::table`]).
    rebuilds: u64,
}

impl<'a> Subject<'a> {
    /// A subject for `map`, prefilled by [`prefill`].
    fn new(name: &'static str, map: Box<dyn Map + 'a>, p: Params) -> Subject<'a> {
        Subject {
            name,
            map,
            fresh: p.n + p.chunk,
            cursor: 0,
            rng: Rng::new(0x853C_49E6_748F_EA9B),
            rebuilds: 0,
        }
    }

    /// `k` timed operations `op` (at most `p.chunk`), then the untimed reset and checks: the
    /// time of the operations.
    fn round(&mut self, op: Op, k: u64, p: Params) -> Duration {
        let (name, n, m) = (self.name, p.n, &mut self.map);
        match op {
            Op::Insert => {
                let lo = self.fresh;
                self.fresh += k;
                let table = m.table();
                let t = timed(lo, k, |i| m.insert(black_box(key(i)), i));
                self.rebuilds += u64::from(m.table() != table);
                assert_eq!(m.len(), n + k, "{name}: an inserted key was not new");
                m.remove_many(&(lo..lo + k).map(key).collect::<Vec<_>>());
                assert_eq!(m.len(), n, "{name}: count after a round");
                t
            }
            Op::Get => {
                let (rng, mut hits) = (&mut self.rng, 0u64);
                let t = timed(0, k, |_| {
                    let i = rng.below(n);
                    hits += u64::from(black_box(m.get(black_box(key(i)))) == Some(i));
                });
                assert_eq!(hits, k, "{name}: get missed a present key");
                t
            }
            Op::Remove => {
                let lo = self.cursor;
                self.cursor += k;
                let mut found = 0u64;
                let t = timed(lo, k, |i| found += u64::from(m.remove(black_box(key(i % n)))));
                assert_eq!(found, k, "{name}: remove missed a present key");
                m.insert_many(&(lo..lo + k).map(|i| (key(i % n), i % n)).collect::<Vec<_>>());
                assert_eq!(m.len(), n, "{name}: count after refilling");
                t
            }
        }
    }
}

/// Fills `map` with keys `0..p.n`, checks the count, prints how long it took, then runs the
/// untimed settling round (insert `p.chunk` fresh indices `p.n..`, remove them).
fn prefill(name: &str, map: &mut dyn Map, p: Params) {
    let start = Instant::now();
    for lo in (0..p.n).step_by(DB_CHUNK) {
        map.insert_many(&entries(lo, (lo + DB_CHUNK as u64).min(p.n)));
    }
    assert_eq!(map.len(), p.n, "{name}: prefill count");
    println!("{name:<15}: prefilled {} keys in {:.2?}", p.n, start.elapsed());
    let settle = entries(p.n, p.n + p.chunk);
    map.insert_many(&settle);
    map.remove_many(&settle.iter().map(|e| e.0).collect::<Vec<_>>());
    assert_eq!(map.len(), p.n, "{name}: count after settling");
}

/// A prefilled subject.
fn subject<'a>(name: &'static str, mut map: Box<dyn Map + 'a>, p: Params) -> Subject<'a> {
    prefill(name, &mut *map, p);
    Subject::new(name, map, p)
}

/// Splits `iters` operations into rounds of at most `chunk`; the sum of `round(k)`'s times.
fn in_rounds(iters: u64, chunk: u64, mut round: impl FnMut(u64) -> Duration) -> Duration {
    let mut left = iters;
    let mut total = Duration::ZERO;
    while left > 0 {
        let k = left.min(chunk);
        total += round(k);
        left -= k;
    }
    total
}

/// The criterion benchmarks of one subject: functions `insert`, `get`, `remove` in its group.
fn bench_map(c: &mut Criterion, s: &mut Subject<'_>, p: Params) {
    let mut g = c.benchmark_group(s.name);
    for op in Op::ALL {
        g.bench_function(op.name(), |b| {
            b.iter_custom(|iters| in_rounds(iters, p.chunk, |k| s.round(op, k, p)))
        });
    }
    g.finish();
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times every subject and operation again in interleaved batches of [`INTERLEAVED_OPS`]
/// operations (round-robin over operations and subjects, [`INTERLEAVED_ROUNDS`] timed rounds
/// after an untimed one), so load from other processes spreads over all of them, and prints the
/// median time per operation with its ratio to `PHashMap` and `PBTreeMap` of the same run.
fn print_interleaved(subjects: &mut [Subject<'_>], p: Params) {
    let k = INTERLEAVED_OPS.min(p.chunk);
    let mut ns = vec![vec![Vec::new(); subjects.len()]; Op::ALL.len()];
    for round in 0..=INTERLEAVED_ROUNDS {
        for (o, op) in Op::ALL.into_iter().enumerate() {
            for (i, s) in subjects.iter_mut().enumerate() {
                let t = s.round(op, k, p);
                if round > 0 {
                    ns[o][i].push(t.as_nanos() as f64 / k as f64);
                }
            }
        }
    }
    println!(
        "\ninterleaved: median of {INTERLEAVED_ROUNDS} rounds of {k} operations per system and \
         operation (round-robin); ratio = system time / ptm map time"
    );
    println!(
        "{:<8} {:<14} {:>10} {:>12} {:>12}",
        "op", "system", "ns/op", "/ PHashMap", "/ PBTreeMap"
    );
    for s in subjects.iter().filter(|s| s.rebuilds > 0) {
        println!(
            "{}: {} insert rounds (criterion's and this pass's) included a growth step",
            s.name, s.rebuilds
        );
    }
    for (o, op) in Op::ALL.into_iter().enumerate() {
        let med: Vec<f64> = ns[o].iter().cloned().map(median).collect();
        let of = |name: &str| subjects.iter().position(|s| s.name == name).map(|i| med[i]);
        let (h, t) = (of("PHashMap"), of("PBTreeMap"));
        for (s, &v) in subjects.iter().zip(&med) {
            let ratio = |base: Option<f64>| base.map_or("-".to_owned(), |b| format!("{:.2}x", v / b));
            println!(
                "{:<8} {:<14} {v:>10.1} {:>12} {:>12}",
                op.name(),
                s.name,
                ratio(h),
                ratio(t)
            );
        }
    }
}

// ---- PConcurrentMap ----

/// Runs operation indices `lo..lo + n` split into `threads` contiguous runs, one per thread
/// (`op(thread, i)`); returns the wall time.
fn parallel(threads: u64, lo: u64, n: u64, op: impl Fn(u64, u64) + Sync) -> Duration {
    let op = &op;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (a, b) = (lo + n * t / threads, lo + n * (t + 1) / threads);
            s.spawn(move || (a..b).for_each(|i| op(t, i)));
        }
    });
    start.elapsed()
}

/// One round of `k` concurrent inserts of fresh indices `lo..lo + k` with `threads` threads:
/// the wall time; then, untimed, their removal.
fn conc_insert_round(pool: &Pool<ConcRoot>, threads: u64, lo: u64, k: u64, n: u64) -> Duration {
    let t = parallel(threads, lo, k, |_, i| {
        pool.transaction(|tx, r| r.m.insert(tx, black_box(key(i)), i))
            .expect("insert");
    });
    let len = |pool: &Pool<ConcRoot>| pool.transaction(|tx, r| r.m.len(tx)).expect("len");
    assert_eq!(len(pool), n + k, "PConcurrentMap: an inserted key was not new");
    ptm_remove_many(pool, &(lo..lo + k).map(key).collect::<Vec<_>>());
    assert_eq!(len(pool), n, "PConcurrentMap: count after a round");
    t
}

/// One round of `k` concurrent gets of random present keys with `threads` threads (seeded by
/// `seed`): the wall time. Checks every get hit.
fn conc_get_round(pool: &Pool<ConcRoot>, threads: u64, seed: u64, k: u64, n: u64) -> Duration {
    use std::sync::atomic::{AtomicU64, Ordering};
    let hits = AtomicU64::new(0);
    let rngs: Vec<std::sync::Mutex<Rng>> = (0..threads)
        .map(|t| std::sync::Mutex::new(Rng::new((seed + t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))))
        .collect();
    let per_thread = |t: u64, a: u64, b: u64| {
        let mut rng = rngs[t as usize].lock().expect("rng");
        let mut h = 0;
        for _ in a..b {
            let i = rng.below(n);
            let v = pool
                .transaction(|tx, r| r.m.get(tx, &black_box(key(i))))
                .expect("get");
            h += u64::from(black_box(v) == Some(i));
        }
        hits.fetch_add(h, Ordering::Relaxed);
    };
    let per_thread = &per_thread;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (a, b) = (k * t / threads, k * (t + 1) / threads);
            s.spawn(move || per_thread(t, a, b));
        }
    });
    let t = start.elapsed();
    assert_eq!(
        hits.load(Ordering::Relaxed),
        k,
        "PConcurrentMap: get missed a present key"
    );
    t
}

/// The thread-count function name.
fn threads_name(threads: u64) -> String {
    if threads == 1 {
        "1_thread".to_owned()
    } else {
        format!("{threads}_threads")
    }
}

/// `PConcurrentMap` insert and get with 1 and 2 threads: groups `PConcurrentMap_insert`,
/// `PConcurrentMap_get`, functions `1_thread`, `2_threads`.
fn bench_concurrent(c: &mut Criterion, pool: &Pool<ConcRoot>, p: Params, fresh: &mut u64) {
    let mut g = c.benchmark_group("PConcurrentMap_insert");
    for threads in [1, 2] {
        g.bench_function(threads_name(threads), |b| {
            b.iter_custom(|iters| {
                in_rounds(iters, p.chunk, |k| {
                    let lo = *fresh;
                    *fresh += k;
                    conc_insert_round(pool, threads, lo, k, p.n)
                })
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("PConcurrentMap_get");
    for threads in [1, 2] {
        let mut seed = 0u64;
        g.bench_function(threads_name(threads), |b| {
            b.iter_custom(|iters| {
                in_rounds(iters, p.chunk, |k| {
                    seed += 1;
                    conc_get_round(pool, threads, seed * 1000, k, p.n)
                })
            })
        });
    }
    g.finish();
}

/// Times `PConcurrentMap` insert and get with 1 and 2 threads in interleaved rounds of `chunk`
/// operations and prints the median time per operation and the throughput ratio.
fn print_scaling(pool: &Pool<ConcRoot>, p: Params, fresh: &mut u64) {
    println!(
        "\nPConcurrentMap scaling: {SCALING_ROUNDS} interleaved rounds of {} operations per case, \
         median wall time / operations",
        p.chunk
    );
    let mut ins = [Vec::new(), Vec::new()];
    let mut get = [Vec::new(), Vec::new()];
    for round in 0..SCALING_ROUNDS as u64 {
        for (slot, threads) in [1u64, 2].into_iter().enumerate() {
            let t = conc_insert_round(pool, threads, *fresh, p.chunk, p.n);
            *fresh += p.chunk;
            ins[slot].push(t.as_nanos() as f64 / p.chunk as f64);
            let t = conc_get_round(pool, threads, 1000 + round * 2 + slot as u64, p.chunk, p.n);
            get[slot].push(t.as_nanos() as f64 / p.chunk as f64);
        }
    }
    for (op, v) in [("insert", ins), ("get", get)] {
        let [one, two] = v.map(median);
        println!(
            "PConcurrentMap {op:<6}: 1 thread {one:8.0} ns/op, 2 threads {two:8.0} ns/op, \
             throughput 2 threads / 1 thread = {:.2}x",
            one / two
        );
    }
}

// ---- Setup and summary ----

/// Prints the drains per operation of a prefilled ptm map (1000 fresh inserts, 1000 gets, 1000
/// removals of those keys; checks the values read back).
fn print_drains<R: PMap>(name: &str, m: &mut PtmMap<R>, p: Params) {
    const OPS: u64 = 1000;
    let base = u64::MAX / 2;
    let mut per_op = |f: &mut dyn FnMut(&mut PtmMap<R>, u64)| {
        let before = ptm::thread_stats();
        for i in base..base + OPS {
            f(m, i);
        }
        let d = ptm::thread_stats().since(&before);
        (d.drains as f64 / OPS as f64, d.lines_flushed as f64 / OPS as f64)
    };
    let ins = per_op(&mut |m, i| m.insert(key(i), i));
    let get = per_op(&mut |m, i| assert_eq!(m.get(key(i)), Some(i)));
    let rem = per_op(&mut |m, i| assert!(m.remove(key(i))));
    assert_eq!(m.len(), p.n);
    println!(
        "{name:<15}: drains per op: insert {}, get {}, remove {}; lines flushed per op: insert {}, get {}, remove {}",
        ins.0, get.0, rem.0, ins.1, get.1, rem.1
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

#[cfg(feature = "pmdk")]
fn pmdk_map<'a>(kind: PmdkMapKind) -> Box<dyn Map + 'a> {
    let m = PmdkMap::create(kind, &pmem_pool_dir(), POOL_SIZE).expect("create the PMDK map");
    m.print_info();
    Box::new(m)
}

/// Whether the system (criterion group) `name` is benchmarked: all of them, unless
/// [`ONLY_ENV`] lists some (comma-separated group names, e.g. `PBTreeMap,PMDK_BTree`).
fn wanted(name: &str) -> bool {
    std::env::var(ONLY_ENV).map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

fn main() {
    // Before any libpmemobj call and while single-threaded (see `force_pmem_env`).
    #[cfg(feature = "pmdk")]
    ptm_benches::pmdk::force_pmem_env();
    let p = Params::from_env();
    let dir = pmem_pool_dir();
    let note = if dir == Path::new(SHM_DIR) {
        "tmpfs"
    } else {
        "FALLBACK: /dev/shm missing"
    };
    println!(
        "collections: N = {} u64 keys ({KEYS_ENV}), timed rounds of <= {} ops, files in {} ({note})",
        p.n,
        p.chunk,
        dir.display()
    );
    #[cfg(not(feature = "pmdk"))]
    ptm_benches::print_pmdk_skipped();

    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = config().configure_from_args();
    {
        // All maps stay alive until the interleaved pass; LMDB's table borrows its environment.
        let lmdb_env = lmdb_env();
        let mut subjects = Vec::new();
        if std::env::var_os(LEGACY_ENV).is_some_and(|v| v == "1") {
            // Same binary, the older segment layout: for an A/B of the layouts alone.
            ptm_collections::write_legacy_segments(true);
            println!("PHashMap segments: key and value arrays (the layout before pairs; {LEGACY_ENV}=1)");
        }
        if wanted("PHashMap") {
            let mut h = ptm_map::<HashRoot>("phashmap");
            prefill("PHashMap", &mut h, p);
            print_drains("PHashMap", &mut h, p);
            subjects.push(Subject::new("PHashMap", Box::new(h), p));
        }
        #[cfg(feature = "pmdk")]
        if wanted("PMDK_HashMap") {
            subjects.push(subject("PMDK_HashMap", pmdk_map(PmdkMapKind::Hash), p));
        }
        if wanted("std_HashMap") {
            subjects.push(subject("std_HashMap", Box::new(HashMap::new()), p));
        }
        if wanted("PBTreeMap") {
            let mut t = ptm_map::<TreeRoot>("pbtreemap");
            prefill("PBTreeMap", &mut t, p);
            print_drains("PBTreeMap", &mut t, p);
            subjects.push(Subject::new("PBTreeMap", Box::new(t), p));
        }
        #[cfg(feature = "pmdk")]
        if wanted("PMDK_BTree") {
            subjects.push(subject("PMDK_BTree", pmdk_map(PmdkMapKind::BTree), p));
        }
        if wanted("std_BTreeMap") {
            subjects.push(subject("std_BTreeMap", Box::new(BTreeMap::new()), p));
        }
        if wanted("LMDB") {
            subjects.push(subject("LMDB", Box::new(lmdb(&lmdb_env)), p));
        }
        if wanted("SQLite") {
            subjects.push(subject("SQLite", Box::new(sqlite()), p));
        }
        for s in &mut subjects {
            bench_map(&mut c, s, p);
        }
        print_interleaved(&mut subjects, p);
    }
    if wanted("PConcurrentMap") {
        let mut m = ptm_map::<ConcRoot>("pconcurrentmap");
        prefill("PConcurrentMap", &mut m, p);
        print_drains("PConcurrentMap", &mut m, p);
        let mut fresh = p.n + p.chunk;
        bench_concurrent(&mut c, &m.pool, p, &mut fresh);
        print_scaling(&m.pool, p, &mut fresh);
    }
    c.final_summary();
}
