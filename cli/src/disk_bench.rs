//! `ptm bench --disk DIR`: ptm's disk engines against the embedded databases users would pick
//! instead, all in one fresh directory inside `DIR` (which must exist; put it on a real disk,
//! not tmpfs, where `fsync` is nearly free).
//!
//! Engines ([`ptm_engines`] lists ptm's: one more is one more line there):
//! - **ptm-journaled**: a pool on a plain file, the journaled engine (the default for plain files):
//!   one `fdatasync` per durable transaction, shared by concurrent committers;
//! - **ptm-buffered**: the journaled engine with buffered durability (a sync every 10 ms);
//! - **ptm-msync**: a pool on a plain file, msync persistence domain;
//! - **ptm-paged**: a pool on nvme-backing's paged memory (`nvme_backing::pool_memory`);
//! - **SQLite** (bundled): WAL, `synchronous=FULL`, one connection per thread;
//! - **LMDB** (bundled, through heed): default durable flags;
//! - **redb**: `Durability::Immediate` (its default).
//!
//! Every engine holds [`KEYS`] keys with `u64` values (ptm: a root of `PMutex<PCell<u64>>`, the
//! shape of a pool shared by threads). Workloads, each transaction durable before the next
//! starts:
//! - **1-word**: set key 0;
//! - **8-word**: set keys 0..8 in one transaction (ptm: the 8 cells in one snapshot batch);
//! - **4 threads**: thread `t` sets its own key `8 + t`, each transaction alone; the time is wall
//!   time over all threads' transactions (so the inverse of total throughput), and the row also
//!   gives that throughput over the engine's own 1-word throughput.
//!
//! Time is measured in rounds of `--ops` transactions; the rounds of all cases are interleaved
//! (round-robin) after one untimed warm-up round, and each case reports its median round.
//! Sync calls (`fsync`, `fdatasync`, `msync(MS_SYNC)`) are counted by [`crate::sync_count`]
//! over the timed rounds.
//!
//! A second section, **pool 8× its resident limit**, runs random durable 1-word updates over
//! [`OVERSIZE_CELLS`] cells (8 MiB, one word changed per transaction at a random cell) with the
//! same rounds, on: the journaled engine over nvme-backing's paged memory limited to
//! [`OVERSIZE_RESIDENT`] pages (1 MiB: the updated data is 8× it) with a journal bound of
//! [`OVERSIZE_JOURNAL_BOUND`] (so checkpoints run during the measurement), with direct I/O (the
//! default where the file allows it) and with buffered I/O; the write-through
//! paged engine with the same limit; and the msync engine on a plain file (`mmap` + `msync`,
//! the page cache holding the whole pool). It reports µs and syncs per transaction, the ratio
//! to msync, and for the journaled one the journal's live bytes (largest seen at the end of a
//! round), its checkpoints and the write-backs that waited for a journal sync.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use heed::byteorder::{BigEndian, NativeEndian};
use heed::types::U64;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use ptm::{PCell, PMutex, Persistent, Pool, PoolOptions};
use rusqlite::Connection;
use serde_json::json;

use crate::bench::{cpu_model, fs_type, median, progress};
use crate::sync_count::{self, SyncCounts};
use crate::Failure;

/// Keys (values) every engine holds.
const KEYS: usize = 64;
/// Size of each ptm pool.
const POOL_SIZE: u64 = 8 << 20;
/// Lanes of each ptm pool (at least [`THREADS`]).
const POOL_LANES: u32 = 8;
/// Resident 4 KiB pages of the paged engine: more than the pool, so nothing is evicted.
const PAGED_RESIDENT_PAGES: usize = 4096;
/// Map size of the LMDB environment.
const LMDB_MAP_SIZE: usize = 64 << 20;
/// Threads of the concurrent workload.
const THREADS: usize = 4;
/// Cells (`u64`) updated by the "pool 8× its resident limit" section: 8 MiB.
const OVERSIZE_CELLS: usize = 1 << 20;
/// Resident pages of that section's paged pools: 1 MiB, an eighth of the updated cells.
const OVERSIZE_RESIDENT: usize = (OVERSIZE_CELLS * 8 / 4096) / 8;
/// Size of that section's pools (the cells and ptm's own areas).
const OVERSIZE_POOL_SIZE: u64 = 16 << 20;
/// Journal bound of that section's journaled pool: small enough that checkpoints run.
const OVERSIZE_JOURNAL_BOUND: u64 = 256 << 10;
/// Default rounds (`--rounds`).
pub(crate) const DEFAULT_ROUNDS: usize = 9;
/// Default transactions per round (`--ops`).
pub(crate) const DEFAULT_OPS: u64 = 300;
/// The engine the "vs SQLite" column divides by.
const BASELINE: &str = "SQLite";

/// ptm's engines: a name and the pool options that select the engine. Every ptm engine is
/// measured on every workload; adding one (e.g. `PoolOptions::new().engine(Engine::Journaled)`)
/// is one line here.
fn ptm_engines() -> Vec<(&'static str, PoolOptions)> {
    vec![
        ("ptm-journaled", PoolOptions::new().engine(ptm::Engine::Journaled)),
        (
            "ptm-buffered",
            PoolOptions::new()
                .engine(ptm::Engine::Journaled)
                .journal(ptm::JournalOptions::new().buffered(std::time::Duration::from_millis(10))),
        ),
        ("ptm-msync", PoolOptions::new().engine(ptm::Engine::Msync)),
        (
            "ptm-paged",
            PoolOptions::new().external_memory(nvme_backing::pool_memory(PAGED_RESIDENT_PAGES)),
        ),
    ]
}

/// The workloads: name, the keys a single-threaded transaction sets, and whether it runs on
/// [`THREADS`] threads (each on its own key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    OneWord,
    EightWord,
    Threads,
}

const WORKLOADS: [Workload; 3] = [Workload::OneWord, Workload::EightWord, Workload::Threads];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::OneWord => "1-word",
            Workload::EightWord => "8-word",
            Workload::Threads => "4 threads",
        }
    }
}

/// Options of `ptm bench --disk`.
#[derive(Debug)]
pub(crate) struct DiskBenchArgs<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) ops: u64,
    pub(crate) rounds: usize,
    pub(crate) json: bool,
}

/// One engine's store, holding [`KEYS`] keys.
trait Store: Sync {
    /// A handle for one thread (SQLite: its own connection).
    fn session(&self) -> Result<Box<dyn Session + '_>, String>;
    /// What the table's notes say about the engine's settings.
    fn describe(&self) -> String;
}

/// One thread's handle on a [`Store`].
trait Session: Send {
    /// One durable transaction setting every key in `keys` to `val`; returns once committed.
    fn update(&mut self, keys: Range<usize>, val: u64) -> Result<(), String>;
}

/// The root of the ptm pools: one lock per key, so that threads on disjoint keys run their
/// transactions concurrently.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Keys {
    values: [PMutex<PCell<u64>>; KEYS],
}

struct PtmStore {
    pool: Pool<Keys>,
}

impl Store for PtmStore {
    fn session(&self) -> Result<Box<dyn Session + '_>, String> {
        Ok(Box::new(&self.pool))
    }

    fn describe(&self) -> String {
        format!("pool domain {}", self.pool.domain().name())
    }
}

impl Session for &Pool<Keys> {
    fn update(&mut self, keys: Range<usize>, val: u64) -> Result<(), String> {
        self.transaction(|tx, root| {
            // Ascending key order: no deadlock between transactions.
            let cells = keys
                .map(|k| root.values[k].lock(tx))
                .collect::<ptm::Result<Vec<_>>>()?;
            tx.snapshot(|batch| cells.iter().try_for_each(|c| batch.add(*c)))?;
            cells.iter().try_for_each(|c| c.set(tx, val))
        })
        .map_err(|e| e.to_string())
    }
}

struct SqliteStore {
    path: PathBuf,
}

impl SqliteStore {
    fn create(dir: &Path) -> Result<Self, String> {
        let store = SqliteStore {
            path: dir.join("bench.sqlite"),
        };
        let conn = store.connect()?;
        let mut sql = String::from("CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER NOT NULL);");
        for k in 0..KEYS {
            let _ = write!(sql, "INSERT INTO kv VALUES ({k}, 0);");
        }
        conn.execute_batch(&sql)
            .map_err(|e| format!("SQLite setup: {e}"))?;
        Ok(store)
    }

    /// A connection in WAL mode with `synchronous=FULL`, waiting for the write lock.
    fn connect(&self) -> Result<Connection, String> {
        let conn = Connection::open(&self.path).map_err(|e| format!("SQLite: {e}"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| format!("SQLite journal_mode: {e}"))?;
        if mode != "wal" {
            return Err(format!("SQLite: journal_mode is {mode}, not wal"));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=60000;")
            .map_err(|e| format!("SQLite pragmas: {e}"))?;
        Ok(conn)
    }
}

impl Store for SqliteStore {
    fn session(&self) -> Result<Box<dyn Session + '_>, String> {
        Ok(Box::new(self.connect()?))
    }

    fn describe(&self) -> String {
        "WAL, synchronous=FULL, one connection per thread; BEGIN IMMEDIATE, UPDATE per key, COMMIT".to_owned()
    }
}

impl Session for Connection {
    fn update(&mut self, keys: Range<usize>, val: u64) -> Result<(), String> {
        // IMMEDIATE takes the write lock up front (waiting up to busy_timeout), so concurrent
        // writers queue instead of failing with SQLITE_BUSY_SNAPSHOT on upgrade.
        let tx = rusqlite::Transaction::new(self, rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        {
            let mut st = tx
                .prepare_cached("UPDATE kv SET v = ?1 WHERE k = ?2")
                .map_err(|e| e.to_string())?;
            for k in keys {
                let changed = st.execute([val as i64, k as i64]).map_err(|e| e.to_string())?;
                if changed != 1 {
                    return Err(format!("SQLite updated {changed} rows of key {k}"));
                }
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

/// The LMDB table: `u64` keys (big-endian, so they sort as numbers) to `u64` values.
type LmdbDb<'e> = Database<'e, U64<BigEndian>, U64<NativeEndian>>;

/// An LMDB environment in `dir/bench.lmdb` with default (durable) flags.
fn lmdb_env(dir: &Path) -> Result<Env, String> {
    let path = dir.join("bench.lmdb");
    std::fs::create_dir(&path).map_err(|e| format!("LMDB directory: {e}"))?;
    // SAFETY: the environment is in a fresh private directory that nothing else opens or
    // modifies while it is mapped, and it is opened once.
    unsafe { EnvOpenOptions::new().map_size(LMDB_MAP_SIZE).open(&path) }
        .map_err(|e| format!("LMDB environment: {e}"))
}

struct LmdbStore<'e> {
    env: &'e Env,
    db: LmdbDb<'e>,
}

impl<'e> LmdbStore<'e> {
    /// The unnamed database of `env`, with the keys present.
    fn create(env: &'e Env) -> Result<Self, String> {
        let wtxn = env.write_txn().map_err(|e| format!("LMDB: {e}"))?;
        let db = env
            .create_databases_and_commit(wtxn, |wdo, wtxn| -> heed::Result<_> {
                let db: LmdbDb<'_> = wdo.create_database(wtxn, None)?;
                for k in 0..KEYS as u64 {
                    db.put(wtxn, &k, &0)?;
                }
                Ok(CommitOrAbort::<_, ()>::Commit(db))
            })
            .map(CommitOrAbort::unwrap_commit)
            .map_err(|e| format!("LMDB setup: {e}"))?;
        Ok(LmdbStore { env, db })
    }
}

impl Store for LmdbStore<'_> {
    fn session(&self) -> Result<Box<dyn Session + '_>, String> {
        Ok(Box::new(self))
    }

    fn describe(&self) -> String {
        "default durable flags: fdatasync of the data pages, then the meta page written with O_DSYNC (not counted)"
            .to_owned()
    }
}

impl Session for &LmdbStore<'_> {
    fn update(&mut self, keys: Range<usize>, val: u64) -> Result<(), String> {
        let mut wtxn = self.env.write_txn().map_err(|e| e.to_string())?;
        for k in keys {
            self.db
                .put(&mut wtxn, &(k as u64), &val)
                .map_err(|e| e.to_string())?;
        }
        wtxn.commit().map_err(|e| e.to_string())
    }
}

const REDB_TABLE: redb::TableDefinition<'_, u64, u64> = redb::TableDefinition::new("kv");

struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    fn create(dir: &Path) -> Result<Self, String> {
        let db = redb::Database::create(dir.join("bench.redb")).map_err(|e| format!("redb: {e}"))?;
        let store = RedbStore { db };
        let mut session = &store;
        session
            .update(0..KEYS, 0)
            .map_err(|e| format!("redb setup: {e}"))?;
        Ok(store)
    }
}

impl Store for RedbStore {
    fn session(&self) -> Result<Box<dyn Session + '_>, String> {
        Ok(Box::new(self))
    }

    fn describe(&self) -> String {
        "Durability::Immediate (the default)".to_owned()
    }
}

impl Session for &RedbStore {
    fn update(&mut self, keys: Range<usize>, val: u64) -> Result<(), String> {
        let wtxn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = wtxn.open_table(REDB_TABLE).map_err(|e| e.to_string())?;
            for k in keys {
                table.insert(k as u64, val).map_err(|e| e.to_string())?;
            }
        }
        wtxn.commit().map_err(|e| e.to_string())
    }
}

/// An engine under test: its store and one session per thread (session 0 runs the
/// single-threaded workloads).
struct Engine<'s> {
    name: &'static str,
    notes: String,
    sessions: Vec<Box<dyn Session + 's>>,
}

/// One (engine, workload) pair and its measurements.
struct Case {
    engine: usize,
    workload: Workload,
    /// µs per transaction of each timed round.
    rounds: Vec<f64>,
    /// Sync calls over the timed rounds.
    syncs: SyncCounts,
}

/// Runs the transactions of one round of `workload` on `engine`: `ops` in all (the threads
/// share them out). Returns the wall time.
fn run_round(engine: &mut Engine<'_>, workload: Workload, ops: u64, val: &mut u64) -> Result<f64, String> {
    let start = Instant::now();
    match workload {
        Workload::OneWord | Workload::EightWord => {
            let keys = if workload == Workload::OneWord { 0..1 } else { 0..8 };
            for _ in 0..ops {
                *val += 1;
                engine.sessions[0].update(keys.clone(), *val)?;
            }
        }
        Workload::Threads => {
            let per_thread = ops.div_ceil(THREADS as u64);
            let base = *val;
            *val += per_thread;
            let start_line = Arc::new(Barrier::new(THREADS));
            let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                let handles: Vec<_> = engine
                    .sessions
                    .iter_mut()
                    .enumerate()
                    .map(|(t, session)| {
                        let start_line = Arc::clone(&start_line);
                        s.spawn(move || {
                            start_line.wait();
                            let key = 8 + t;
                            (1..=per_thread).try_for_each(|i| session.update(key..key + 1, base + i))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".to_owned())))
                    .collect()
            });
            results.into_iter().collect::<Result<(), String>>()?;
            let elapsed = start.elapsed().as_secs_f64() * 1e6;
            return Ok(elapsed / (per_thread * THREADS as u64) as f64);
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / ops as f64)
}

/// Result of one case, for the output.
struct Row {
    engine: &'static str,
    workload: Workload,
    us: f64,
    rounds: Vec<f64>,
    /// Sync calls per transaction; `None` when none was seen (the interposer missed them).
    syncs_per_tx: Option<f64>,
    syncs: SyncCounts,
    vs_sqlite: f64,
    /// 4-thread throughput / the engine's own 1-word throughput.
    vs_one_thread: Option<f64>,
}

/// Runs `ptm bench --disk` and renders the table (or JSON).
pub(crate) fn run(a: &DiskBenchArgs<'_>) -> Result<String, Failure> {
    let tmp = tempfile::Builder::new()
        .prefix("ptm-disk-bench.")
        .tempdir_in(a.dir)
        .map_err(|e| Failure(format!("temporary directory in {}: {e}", a.dir.display())))?;
    let dir = tmp.path();
    let counting = sync_count::counting();

    let lmdb = lmdb_env(dir).map_err(Failure)?;
    let mut stores: Vec<(&'static str, Box<dyn Store + '_>)> = Vec::new();
    for (name, opts) in ptm_engines() {
        let opts = opts.layout("ptm-disk-bench").lanes(POOL_LANES);
        let pool = Pool::<Keys>::create(dir.join(format!("{name}.pool")), POOL_SIZE, &opts)
            .map_err(|e| Failure(format!("{name} pool: {e}")))?;
        stores.push((name, Box::new(PtmStore { pool })));
    }
    stores.push((BASELINE, Box::new(SqliteStore::create(dir).map_err(Failure)?)));
    stores.push(("LMDB", Box::new(LmdbStore::create(&lmdb).map_err(Failure)?)));
    stores.push(("redb", Box::new(RedbStore::create(dir).map_err(Failure)?)));

    let mut engines = Vec::new();
    for (name, store) in &stores {
        let sessions = (0..THREADS)
            .map(|_| store.session())
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| Failure(format!("{name}: {e}")))?;
        engines.push(Engine {
            name,
            notes: store.describe(),
            sessions,
        });
    }

    let mut cases: Vec<Case> = (0..engines.len())
        .flat_map(|engine| {
            WORKLOADS.map(|workload| Case {
                engine,
                workload,
                rounds: Vec::new(),
                syncs: SyncCounts::default(),
            })
        })
        .collect();

    let bar = progress(
        a.json,
        (cases.len() * (a.rounds + 1)) as u64,
        "{spinner} benchmarking {msg}: round {pos}/{len} {elapsed}",
    )?;
    let mut val = 0u64;
    // Round 0 warms up (page caches, SQLite's WAL, free pages, ptm's lanes) and is not timed.
    for round in 0..=a.rounds {
        for c in &mut cases {
            let engine = &mut engines[c.engine];
            bar.set_message(format!("{} {}", engine.name, c.workload.name()));
            let before = SyncCounts::now();
            let us = run_round(engine, c.workload, a.ops, &mut val)
                .map_err(|e| Failure(format!("{} {}: {e}", engine.name, c.workload.name())))?;
            if round > 0 {
                c.rounds.push(us);
                c.syncs = c.syncs.plus(&SyncCounts::now().since(&before));
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let oversize = oversize(dir, a)?;
    let recovery = crate::recovery_bench::WINDOWS
        .iter()
        .map(|&w| crate::recovery_bench::measure(dir, w))
        .collect::<Result<Vec<_>, _>>()?;

    let rows = rows(&cases, &engines, a);
    let fs = fs_type(dir);
    let base = a.dir.canonicalize().unwrap_or_else(|_| a.dir.to_path_buf());
    let notes: Vec<(&str, &str)> = engines.iter().map(|e| (e.name, e.notes.as_str())).collect();
    if a.json {
        let v = json!({
            "workload": "disk",
            "rounds": a.rounds,
            "ops_per_round": a.ops,
            "threads": THREADS,
            "statistic": "median of rounds, µs per transaction (wall time / transactions)",
            "sync_counting": counting,
            "machine": {
                "cpu": cpu_model(),
                "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
                "dir": base.display().to_string(),
                "fs": fs,
            },
            "engines": notes.iter().map(|(name, note)| json!({"engine": name, "notes": note})).collect::<Vec<_>>(),
            "results": rows.iter().map(|r| json!({
                "engine": r.engine,
                "workload": r.workload.name(),
                "us_per_tx": r.us,
                "round_us_per_tx": r.rounds,
                "syncs_per_tx": r.syncs_per_tx,
                "sync_calls": {
                    "fsync": r.syncs.fsync,
                    "fdatasync": r.syncs.fdatasync,
                    "msync": r.syncs.msync,
                },
                "ratio_to_sqlite": r.vs_sqlite,
                "throughput_vs_one_thread": r.vs_one_thread,
            })).collect::<Vec<_>>(),
            "oversize": {
                "what": "random durable 1-word updates over 8 MiB of cells; paged pools resident-limited to 1 MiB",
                "cells": OVERSIZE_CELLS,
                "resident_pages": OVERSIZE_RESIDENT,
                "journal_bound": OVERSIZE_JOURNAL_BOUND,
                "results": oversize.iter().map(|r| json!({
                    "engine": r.name,
                    "us_per_tx": r.us,
                    "round_us_per_tx": r.rounds,
                    "syncs_per_tx": r.syncs_per_tx,
                    "ratio_to_msync": r.vs_msync,
                    "journal_max_live_bytes": r.journal.map(|j| j.max_live),
                    "journal_checkpoints": r.journal.map(|j| j.checkpoints),
                    "write_backs_waiting_per_tx": r.journal.map(|j| j.waits_per_tx),
                })).collect::<Vec<_>>(),
            },
            "recovery": recovery.iter().map(|r| json!({
                "what": "Pool::open of a crash copy whose journal is full (just under the 64 MiB default bound), page cache dropped",
                "cells_per_tx": r.window,
                "journal_bytes": r.journal_bytes,
                "records": r.records,
                "open_ms": r.open_ms,
            })).collect::<Vec<_>>(),
        });
        return serde_json::to_string_pretty(&v)
            .map(|s| s + "\n")
            .map_err(|e| Failure(format!("encoding JSON: {e}")));
    }
    let mut out = table(a, &base, &fs, counting, &rows, &notes);
    oversize_table(&mut out, &oversize);
    for r in &recovery {
        let _ = writeln!(
            out,
            "recovery: Pool::open of a crash copy with a full journal ({:.1} MiB, {} records of {}-cell transactions; page cache dropped): {:.0} ms",
            r.journal_bytes as f64 / f64::from(1u32 << 20),
            r.records,
            r.window,
            r.open_ms
        );
    }
    Ok(out)
}

fn rows(cases: &[Case], engines: &[Engine<'_>], a: &DiskBenchArgs<'_>) -> Vec<Row> {
    let median_of = |engine: &str, workload: Workload| {
        cases
            .iter()
            .find(|c| engines[c.engine].name == engine && c.workload == workload)
            .map_or(f64::NAN, |c| median(&c.rounds))
    };
    cases
        .iter()
        .map(|c| {
            let engine = engines[c.engine].name;
            let us = median(&c.rounds);
            // The threaded workload rounds its transactions up to a multiple of THREADS.
            let per_round = match c.workload {
                Workload::Threads => a.ops.div_ceil(THREADS as u64) * THREADS as u64,
                _ => a.ops,
            };
            let txs = (per_round * a.rounds as u64) as f64;
            let total = c.syncs.total();
            Row {
                engine,
                workload: c.workload,
                us,
                rounds: c.rounds.clone(),
                syncs_per_tx: (total > 0).then(|| total as f64 / txs),
                syncs: c.syncs,
                vs_sqlite: us / median_of(BASELINE, c.workload),
                vs_one_thread: (c.workload == Workload::Threads)
                    .then(|| median_of(engine, Workload::OneWord) / us),
            }
        })
        .collect()
}

fn table(
    a: &DiskBenchArgs<'_>,
    base: &Path,
    fs: &str,
    counting: bool,
    rows: &[Row],
    notes: &[(&str, &str)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "durable transactions on disk: median of {} rounds of {} transactions each (interleaved), µs per transaction",
        a.rounds, a.ops
    );
    let _ = writeln!(
        s,
        "machine: {}, {} cores; dir {} ({fs})",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        base.display()
    );
    let _ = writeln!(
        s,
        "{:<10} {:<10} {:>10} {:>9} {:>10} {:>12}",
        "engine", "workload", "µs/tx", "syncs/tx", "vs SQLite", "vs 1 thread"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<10} {:<10} {:>10.1} {:>9} {:>9.2}x {:>12}",
            r.engine,
            r.workload.name(),
            r.us,
            r.syncs_per_tx
                .map_or_else(|| "n/a".to_owned(), |n| format!("{n:.2}")),
            r.vs_sqlite,
            r.vs_one_thread.map_or_else(String::new, |x| format!("{x:.2}x"))
        );
    }
    let _ = writeln!(
        s,
        "(syncs/tx: fsync + fdatasync + msync(MS_SYNC) calls per transaction, counted in-process; \
         \"vs SQLite\": time / SQLite's time for the same workload; \"vs 1 thread\": {THREADS}-thread \
         throughput / the engine's 1-word throughput)"
    );
    if !counting {
        let _ = writeln!(s, "WARNING: sync calls are not being counted in this build");
    }
    for (name, note) in notes {
        let _ = writeln!(s, "{name}: {note}");
    }
    if fs == "tmpfs" || fs == "ramfs" {
        let _ = writeln!(
            s,
            "note: {fs} is RAM-backed: fsync is nearly free; use a directory on a real disk"
        );
    }
    s
}

/// The cells of the "pool 8× its resident limit" section.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Oversize {
    cells: [PCell<u64>; OVERSIZE_CELLS],
}

/// Journal figures of the journaled engine in that section.
#[derive(Debug, Clone, Copy)]
struct OversizeJournal {
    /// Largest journal live bytes seen at the end of a round.
    max_live: u64,
    /// Checkpoints during the timed rounds.
    checkpoints: u64,
    /// Write-backs of dirty pages that waited for a journal sync, per transaction.
    waits_per_tx: f64,
}

/// One engine's result in that section.
#[derive(Debug)]
struct OversizeRow {
    name: &'static str,
    us: f64,
    rounds: Vec<f64>,
    syncs_per_tx: Option<f64>,
    vs_msync: f64,
    journal: Option<OversizeJournal>,
}

/// Runs the "pool 8× its resident limit" section in `dir`: random durable 1-word updates,
/// rounds interleaved across the engines as in the main table.
fn oversize(dir: &Path, a: &DiskBenchArgs<'_>) -> Result<Vec<OversizeRow>, Failure> {
    let journaled_paged = |io| {
        PoolOptions::new()
            .engine(ptm::Engine::Journaled)
            .journal(ptm::JournalOptions::new().max_bytes(OVERSIZE_JOURNAL_BOUND))
            .external_memory(nvme_backing::pool_memory_with_options(
                OVERSIZE_RESIDENT,
                nvme_backing::PagedOptions::new().io_mode(io),
            ))
    };
    let engines: [(&'static str, PoolOptions); 4] = [
        ("ptm-journaled-paged", journaled_paged(nvme_backing::IoMode::Auto)),
        ("  buffered I/O", journaled_paged(nvme_backing::IoMode::Buffered)),
        (
            "ptm-paged",
            PoolOptions::new().external_memory(nvme_backing::pool_memory(OVERSIZE_RESIDENT)),
        ),
        ("ptm-msync", PoolOptions::new().engine(ptm::Engine::Msync)),
    ];
    let mut pools = Vec::new();
    for (i, (name, opts)) in engines.into_iter().enumerate() {
        let opts = opts.layout("ptm-oversize-bench").lanes(2);
        let pool =
            Pool::<Oversize>::create(dir.join(format!("oversize-{i}.pool")), OVERSIZE_POOL_SIZE, &opts)
                .map_err(|e| Failure(format!("{name} pool (8x resident): {e}")))?;
        pools.push((name, pool));
    }
    let bar = progress(
        a.json,
        (pools.len() * (a.rounds + 1)) as u64,
        "{spinner} pool 8x its resident limit: {msg}: round {pos}/{len} {elapsed}",
    )?;
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); pools.len()];
    let mut syncs = vec![0u64; pools.len()];
    let mut max_live = vec![0u64; pools.len()];
    let mut journal_before = vec![None; pools.len()];
    // The same random cells for every engine (a xorshift stream per engine, one seed).
    let mut rngs = vec![0x9E37_79B9_7F4A_7C15u64; pools.len()];
    for round in 0..=a.rounds {
        for (i, (name, pool)) in pools.iter().enumerate() {
            bar.set_message(*name);
            if round == 1 {
                // Counted from the first timed round.
                if let (Some(st), Some(g)) = (pool.region().journal_stats(), pool.region().write_ahead_gate())
                {
                    journal_before[i] = Some((st.checkpoints, g.waits()));
                }
            }
            let before = SyncCounts::now();
            let start = Instant::now();
            for _ in 0..a.ops {
                let x = &mut rngs[i];
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                let cell = (*x % OVERSIZE_CELLS as u64) as usize;
                let v = *x;
                pool.transaction(|tx, r| r.cells[cell].set(tx, v))
                    .map_err(|e| Failure(format!("{name} (8x resident): {e}")))?;
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / a.ops as f64;
            if round > 0 {
                rounds[i].push(us);
                syncs[i] += SyncCounts::now().since(&before).total();
                if let Some(st) = pool.region().journal_stats() {
                    max_live[i] = max_live[i].max(st.live_bytes);
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let txs = (a.ops * a.rounds as u64) as f64;
    let msync_us = median(&rounds[pools.len() - 1]);
    Ok(pools
        .iter()
        .enumerate()
        .map(|(i, (name, pool))| {
            let journal = match (
                pool.region().journal_stats(),
                pool.region().write_ahead_gate(),
                journal_before[i],
            ) {
                (Some(st), Some(g), Some((checkpoints, waits))) => Some(OversizeJournal {
                    max_live: max_live[i],
                    checkpoints: st.checkpoints - checkpoints,
                    waits_per_tx: (g.waits() - waits) as f64 / txs,
                }),
                _ => None,
            };
            let us = median(&rounds[i]);
            OversizeRow {
                name,
                us,
                rounds: rounds[i].clone(),
                syncs_per_tx: (syncs[i] > 0).then(|| syncs[i] as f64 / txs),
                vs_msync: us / msync_us,
                journal,
            }
        })
        .collect())
}

/// Appends the "pool 8× its resident limit" section to the text report.
fn oversize_table(s: &mut String, rows: &[OversizeRow]) {
    let _ = writeln!(
        s,
        "pool 8x its resident limit: random durable 1-word updates over {} MiB of cells; paged pools \
         resident-limited to {} pages ({} MiB); journal bound {} KiB",
        (OVERSIZE_CELLS * 8) >> 20,
        OVERSIZE_RESIDENT,
        (OVERSIZE_RESIDENT * 4096) >> 20,
        OVERSIZE_JOURNAL_BOUND >> 10
    );
    let _ = writeln!(
        s,
        "{:<20} {:>10} {:>9} {:>9} {:>14} {:>12} {:>13}",
        "engine", "µs/tx", "syncs/tx", "vs msync", "journal live", "checkpoints", "WAL waits/tx"
    );
    for r in rows {
        let j = r.journal;
        let _ = writeln!(
            s,
            "{:<20} {:>10.1} {:>9} {:>8.2}x {:>14} {:>12} {:>13}",
            r.name,
            r.us,
            r.syncs_per_tx
                .map_or_else(|| "n/a".to_owned(), |n| format!("{n:.2}")),
            r.vs_msync,
            j.map_or_else(String::new, |j| format!("{:.0} KiB", j.max_live as f64 / 1024.0)),
            j.map_or_else(String::new, |j| j.checkpoints.to_string()),
            j.map_or_else(String::new, |j| format!("{:.2}", j.waits_per_tx)),
        );
    }
    let _ = writeln!(
        s,
        "(ptm-journaled-paged: Engine::Journaled on nvme_backing::pool_memory, a dirty page is evicted only \
         after a journal sync, direct I/O where the file allows it (faults read and evictions write the \
         device); buffered I/O: the same through the page cache (which then holds the file too); ptm-paged: write-through paged memory; ptm-msync: mmap + msync of a plain \
         file, no resident limit; journal live: largest at the end of a round; WAL waits: evictions that \
         waited for a journal sync)"
    );
}
