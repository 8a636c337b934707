//! `ptm bench`: the README's headline comparison in one run.
//!
//! Two durable updates, each measured on every system side by side:
//! - **1-word**: change one 8-byte word;
//! - **8-word**: change 8 words, each in its own cache line (64 bytes apart).
//!
//! Systems, all with their files in one fresh temporary directory (under `--dir`, default
//! `/dev/shm` when present, else the system temp dir):
//! - **ptm**: one transaction on a pool forced into the cache-flush domain (`force_pmem`): a
//!   `PCell::set` for 1 word, a batched snapshot of the 8 (`SnapshotBatch::add_all`) plus the
//!   stores for 8. Its drains per operation
//!   come from [`ptm::thread_stats`].
//! - **PMDK** (cli feature `pmdk`): the same transactions in C on libpmemobj
//!   (`ptm_benches::pmdk::PmdkPool::tx_set_words`), with `PMEM_IS_PMEM_FORCE=1`.
//! - **SQLite** (bundled): `journal_mode=WAL`, `synchronous=FULL`, one autocommit `UPDATE` per
//!   operation (of 1 row, or of 8 rows).
//! - **LMDB** (bundled, through `heed`): default durable settings (every commit syncs), one
//!   write transaction per operation that puts 1 key (or 8 keys) with a `u64` value, committed.
//! - **write+fsync**: `pwrite` of 8 bytes (1 or 8 of them, 64 bytes apart), then `fdatasync`.
//!
//! Time is measured in batches of a fixed number of operations; the batches of all cases are
//! interleaved (round-robin) so that noise on a shared machine spreads over all of them, and
//! each case reports the median batch. On tmpfs `fsync` is nearly free (there is no device), so
//! SQLite, LMDB and write+fsync are lower bounds there.
//!
//! `ptm bench --pauses` measures something else, the tail latency of inserts into growing
//! collections: see [`crate::pause`]; `ptm bench --disk DIR` compares ptm's disk engines with
//! SQLite, LMDB and redb on a real disk: see [`crate::disk_bench`].

use std::fmt::Write as _;
use std::fs::File;
use std::io::IsTerminal;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use heed::byteorder::{BigEndian, NativeEndian};
use heed::types::U64;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ptm::{PCell, Persistent, Pool, PoolOptions};
use rusqlite::Connection;
use serde_json::json;

use crate::Failure;

/// Size of the ptm (and PMDK) pool.
const POOL_SIZE: u64 = 32 << 20;
/// `u64` words in the ptm root object: 64 cache lines (as PMDK's benchmark root).
const ROOT_WORDS: usize = 512;
/// Distance, in words, between the words an 8-word update changes: one cache line.
const STRIDE: usize = 8;
/// Map size of the LMDB environment.
const LMDB_MAP_SIZE: usize = 64 << 20;
/// What to print instead of the PMDK rows when the feature is off.
const PMDK_NOT_BUILT: &str = "PMDK: not built (cargo run --release -p ptm-cli --features pmdk -- bench)";

/// Options of `ptm bench`.
#[derive(Debug)]
pub(crate) struct BenchArgs {
    pub(crate) quick: bool,
    pub(crate) json: bool,
    pub(crate) dir: Option<PathBuf>,
    /// Measure growth pauses instead (see [`crate::pause`]).
    pub(crate) pauses: bool,
    /// Operations per structure of `--pauses` (default: [`crate::pause::DEFAULT_OPS`]), or
    /// transactions per round of `--disk` (default: [`crate::disk_bench::DEFAULT_OPS`]).
    pub(crate) ops: Option<u64>,
    /// Run the disk engines' comparison in this directory instead (see [`crate::disk_bench`]).
    pub(crate) disk: Option<PathBuf>,
    /// Rounds of `--disk` (default: [`crate::disk_bench::DEFAULT_ROUNDS`]).
    pub(crate) rounds: Option<usize>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    words: [PCell<u64>; ROOT_WORDS],
}

/// The two operations: name and number of words changed.
const OPS: [(&str, usize); 2] = [("1-word", 1), ("8-word", 8)];

type Step<'a> = Box<dyn FnMut(u64) -> Result<(), String> + 'a>;

/// One (operation, system) pair and its measurements.
struct Case<'a> {
    op: &'static str,
    system: &'static str,
    step: Step<'a>,
    /// ns per operation of each timed batch.
    batches: Vec<f64>,
    /// ptm drains over the timed batches.
    drains: u64,
}

/// Result of one case, for the output.
struct Row {
    op: &'static str,
    system: &'static str,
    ns: f64,
    ratio: f64,
    batches: Vec<f64>,
    drains: Option<f64>,
}

/// What the machine line says.
struct Machine {
    cpu: String,
    cores: usize,
    dir: PathBuf,
    fs: String,
    flush: &'static str,
    ptm_domain: String,
    pmdk_is_pmem: Option<bool>,
}

/// One ptm transaction setting words `0, STRIDE, 2 * STRIDE, ...` (`n` of them) to `val`.
fn ptm_set_words(pool: &Pool<Root>, n: usize, val: u64) -> ptm::Result<()> {
    pool.transaction(|tx, root| {
        if n == 1 {
            return root.words[0].set(tx, val);
        }
        let words = || root.words.iter().step_by(STRIDE).take(n);
        tx.snapshot(|b| b.add_all(words()))?;
        words().try_for_each(|w| w.set(tx, val))
    })
}

fn sqlite(dir: &Path) -> Result<Connection, String> {
    let conn = Connection::open(dir.join("bench.sqlite")).map_err(|e| format!("SQLite: {e}"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| format!("SQLite journal_mode: {e}"))?;
    if mode != "wal" {
        return Err(format!("SQLite: journal_mode is {mode}, not wal"));
    }
    conn.execute_batch(
        "PRAGMA synchronous=FULL;
         CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         INSERT INTO kv VALUES (0,0),(1,0),(2,0),(3,0),(4,0),(5,0),(6,0),(7,0);",
    )
    .map_err(|e| format!("SQLite setup: {e}"))?;
    Ok(conn)
}

fn sqlite_update(conn: &Connection, n: usize, val: u64) -> Result<(), String> {
    let sql = if n == 1 {
        "UPDATE kv SET v = ?1 WHERE k = 0"
    } else {
        "UPDATE kv SET v = ?1 WHERE k < 8"
    };
    let mut st = conn.prepare_cached(sql).map_err(|e| e.to_string())?;
    let changed = st.execute([val as i64]).map_err(|e| e.to_string())?;
    if changed != n {
        return Err(format!("SQLite updated {changed} rows, not {n}"));
    }
    Ok(())
}

/// The LMDB table: `u64` keys (big-endian, so they sort as numbers) to `u64` values.
type LmdbDb<'e> = Database<'e, U64<BigEndian>, U64<NativeEndian>>;

/// An LMDB environment in `dir/bench.lmdb`, with default (durable) flags: every commit syncs.
fn lmdb_env(dir: &Path) -> Result<Env, String> {
    let path = dir.join("bench.lmdb");
    std::fs::create_dir(&path).map_err(|e| format!("LMDB directory: {e}"))?;
    // SAFETY: the environment is in a fresh private directory that nothing else opens or
    // modifies while it is mapped, and it is opened once.
    unsafe { EnvOpenOptions::new().map_size(LMDB_MAP_SIZE).open(&path) }
        .map_err(|e| format!("LMDB environment: {e}"))
}

/// The unnamed database of `env`, with keys `0..8` present (so updates overwrite, as SQLite's).
fn lmdb_db(env: &Env) -> Result<LmdbDb<'_>, String> {
    let wtxn = env.write_txn().map_err(|e| format!("LMDB: {e}"))?;
    env.create_databases_and_commit(wtxn, |wdo, wtxn| -> heed::Result<_> {
        let db: LmdbDb<'_> = wdo.create_database(wtxn, None)?;
        for k in 0..8 {
            db.put(wtxn, &k, &0)?;
        }
        Ok(CommitOrAbort::<_, ()>::Commit(db))
    })
    .map(CommitOrAbort::unwrap_commit)
    .map_err(|e| format!("LMDB setup: {e}"))
}

/// One LMDB write transaction putting `val` at keys `0..n`, committed (and synced).
fn lmdb_put(env: &Env, db: &LmdbDb<'_>, n: usize, val: u64) -> Result<(), String> {
    let mut wtxn = env.write_txn().map_err(|e| e.to_string())?;
    for k in 0..n as u64 {
        db.put(&mut wtxn, &k, &val).map_err(|e| e.to_string())?;
    }
    wtxn.commit().map_err(|e| e.to_string())
}

fn write_fsync(f: &File, n: usize, val: u64) -> Result<(), String> {
    for i in 0..n {
        f.write_all_at(&val.to_le_bytes(), 64 * i as u64)
            .map_err(|e| format!("pwrite: {e}"))?;
    }
    f.sync_data().map_err(|e| format!("fdatasync: {e}"))
}

#[cfg(feature = "pmdk")]
type Pmdk = ptm_benches::pmdk::PmdkPool;

#[cfg(feature = "pmdk")]
fn pmdk_pool(dir: &Path) -> Result<Option<Pmdk>, Failure> {
    Pmdk::create(dir, POOL_SIZE)
        .map(Some)
        .map_err(|e| Failure(format!("PMDK pool: {e}")))
}

#[cfg(feature = "pmdk")]
fn pmdk_step(p: &Pmdk, n: usize, val: u64) -> Result<(), String> {
    p.tx_set_words(n as u64, STRIDE as u64, val)
        .map_err(|e| e.to_string())
}

#[cfg(feature = "pmdk")]
fn pmdk_is_pmem(p: Option<&Pmdk>) -> Option<bool> {
    p.map(Pmdk::is_pmem)
}

/// Stands for the PMDK pool when the `pmdk` feature is off: no value exists.
#[cfg(not(feature = "pmdk"))]
enum Pmdk {}

#[cfg(not(feature = "pmdk"))]
fn pmdk_pool(_dir: &Path) -> Result<Option<Pmdk>, Failure> {
    Ok(None)
}

#[cfg(not(feature = "pmdk"))]
fn pmdk_step(p: &Pmdk, _n: usize, _val: u64) -> Result<(), String> {
    match *p {}
}

#[cfg(not(feature = "pmdk"))]
fn pmdk_is_pmem(_p: Option<&Pmdk>) -> Option<bool> {
    None
}

/// The first `model name` of /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// The file system type of `dir`: the longest mount point of /proc/mounts containing it.
pub(crate) fn fs_type(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".to_owned();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            // Mount points escape spaces and the like as octal (`\040`).
            let point = point.replace("\\040", " ");
            dir.starts_with(&point).then(|| (point.len(), kind.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, kind)| kind)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The base directory of the benchmark files (`dir`, else `/dev/shm` when present, else the
/// system temp dir) and a fresh temporary directory in it, removed on drop.
pub(crate) fn work_dir(dir: Option<&Path>) -> Result<(PathBuf, tempfile::TempDir), Failure> {
    let base = match dir {
        Some(d) => d.to_path_buf(),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let tmp = tempfile::Builder::new()
        .prefix("ptm-bench.")
        .tempdir_in(&base)
        .map_err(|e| Failure(format!("temporary directory in {}: {e}", base.display())))?;
    Ok((base, tmp))
}

/// A progress bar of `len` steps drawn with `template` on a terminal (stdout), unless the
/// output is JSON; hidden otherwise.
pub(crate) fn progress(json: bool, len: u64, template: &str) -> Result<ProgressBar, Failure> {
    let show = !json && std::io::stdout().is_terminal();
    let bar = if show {
        ProgressBar::new(len)
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template(template).map_err(|e| Failure(format!("progress style: {e}")))?,
    );
    if show {
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    Ok(bar)
}

/// Runs the benchmark and renders the table (or JSON).
pub(crate) fn run(a: &BenchArgs) -> Result<String, Failure> {
    // libpmem reads PMEM_IS_PMEM_FORCE once, on first use; the process has one thread here.
    #[cfg(feature = "pmdk")]
    ptm_benches::pmdk::force_pmem_env();

    if a.pauses {
        return crate::pause::run(a);
    }
    if let Some(dir) = &a.disk {
        return crate::disk_bench::run(&crate::disk_bench::DiskBenchArgs {
            dir,
            ops: a.ops.unwrap_or(crate::disk_bench::DEFAULT_OPS),
            rounds: a.rounds.unwrap_or(crate::disk_bench::DEFAULT_ROUNDS),
            json: a.json,
        });
    }
    let (batches, per_batch) = if a.quick { (7usize, 300u64) } else { (15, 2000) };
    let (base, tmp) = work_dir(a.dir.as_deref())?;
    let dir = tmp.path();

    let pool = Pool::<Root>::create(
        dir.join("bench.pool"),
        POOL_SIZE,
        &PoolOptions::new().layout("ptm-bench").force_pmem(true),
    )
    .map_err(|e| Failure(format!("ptm pool: {e}")))?;
    let pmdk = pmdk_pool(dir)?;
    let conn = sqlite(dir).map_err(Failure)?;
    let lmdb = lmdb_env(dir).map_err(Failure)?;
    let lmdb_table = lmdb_db(&lmdb).map_err(Failure)?;
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join("fsync.dat"))
        .map_err(|e| Failure(format!("fsync file: {e}")))?;
    file.write_all_at(&[0u8; 4096], 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| Failure(format!("fsync file: {e}")))?;

    let machine = Machine {
        cpu: cpu_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir: base.canonicalize().unwrap_or_else(|_| base.clone()),
        fs: fs_type(dir),
        flush: ptm::pmem_core::detected_flush_instruction().map_or("none", |i| i.name()),
        ptm_domain: pool.domain().name().to_owned(),
        pmdk_is_pmem: pmdk_is_pmem(pmdk.as_ref()),
    };

    let mut cases: Vec<Case<'_>> = Vec::new();
    for (op, n) in OPS {
        let (pool, conn, file) = (&pool, &conn, &file);
        let (lmdb, lmdb_table) = (&lmdb, &lmdb_table);
        let mut steps: Vec<(&'static str, Step<'_>)> = vec![(
            "ptm",
            Box::new(move |v| ptm_set_words(pool, n, v).map_err(|e| e.to_string())),
        )];
        if let Some(p) = &pmdk {
            steps.push(("PMDK", Box::new(move |v| pmdk_step(p, n, v))));
        }
        steps.push(("SQLite", Box::new(move |v| sqlite_update(conn, n, v))));
        steps.push(("LMDB", Box::new(move |v| lmdb_put(lmdb, lmdb_table, n, v))));
        steps.push(("write+fsync", Box::new(move |v| write_fsync(file, n, v))));
        cases.extend(steps.into_iter().map(|(system, step)| Case {
            op,
            system,
            step,
            batches: Vec::new(),
            drains: 0,
        }));
    }

    let bar = progress(
        a.json,
        (cases.len() * (batches + 1)) as u64,
        "{spinner} benchmarking {msg}: batch {pos}/{len} {elapsed}",
    )?;

    // Round 0 warms up (caches, SQLite's WAL, LMDB's free pages, ptm's pending completion mark) and is not timed.
    let mut val = 0u64;
    for round in 0..=batches {
        for c in &mut cases {
            bar.set_message(format!("{} {}", c.op, c.system));
            let before = ptm::thread_stats();
            let start = Instant::now();
            for _ in 0..per_batch {
                val += 1;
                (c.step)(val).map_err(|e| Failure(format!("{} {}: {e}", c.op, c.system)))?;
            }
            let elapsed = start.elapsed();
            if round > 0 {
                c.batches.push(elapsed.as_nanos() as f64 / per_batch as f64);
                c.drains += ptm::thread_stats().since(&before).drains;
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let timed_ops = (batches as u64 * per_batch) as f64;
    let rows: Vec<Row> = cases
        .iter()
        .map(|c| {
            let ns = median(&c.batches);
            let ptm_ns = cases
                .iter()
                .find(|p| p.op == c.op && p.system == "ptm")
                .map_or(f64::NAN, |p| median(&p.batches));
            Row {
                op: c.op,
                system: c.system,
                ns,
                ratio: ns / ptm_ns,
                batches: c.batches.clone(),
                drains: (c.system == "ptm").then(|| c.drains as f64 / timed_ops),
            }
        })
        .collect();

    if a.json {
        let v = json!({
            "quick": a.quick,
            "batches": batches,
            "ops_per_batch": per_batch,
            "statistic": "median of batches, ns per operation",
            "machine": {
                "cpu": machine.cpu,
                "cores": machine.cores,
                "dir": machine.dir.display().to_string(),
                "fs": machine.fs,
                "flush_instruction": machine.flush,
                "ptm_domain": machine.ptm_domain,
                "pmdk_is_pmem": machine.pmdk_is_pmem,
            },
            "pmdk": if pmdk.is_some() { "built" } else { PMDK_NOT_BUILT },
            "results": rows.iter().map(|r| json!({
                "operation": r.op,
                "system": r.system,
                "ns_per_op": r.ns,
                "ratio_to_ptm": r.ratio,
                "drains_per_op": r.drains,
                "batch_ns_per_op": r.batches,
            })).collect::<Vec<_>>(),
        });
        return serde_json::to_string_pretty(&v)
            .map(|s| s + "\n")
            .map_err(|e| Failure(format!("encoding JSON: {e}")));
    }
    Ok(table(&machine, &rows, batches, per_batch, pmdk.is_some()))
}

fn table(m: &Machine, rows: &[Row], batches: usize, per_batch: u64, pmdk: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "durable updates: median of {batches} batches of {per_batch} operations each (interleaved), ns per operation"
    );
    let _ = writeln!(
        s,
        "machine: {}, {} cores; dir {} ({}); ptm flush instruction {} (pool domain {})",
        m.cpu,
        m.cores,
        m.dir.display(),
        m.fs,
        m.flush,
        m.ptm_domain
    );
    let _ = writeln!(
        s,
        "{:<8} {:<12} {:>12} {:>10} {:>10}",
        "update", "system", "ns/op", "vs ptm", "drains/op"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<8} {:<12} {:>12.0} {:>9.2}x {:>10}",
            r.op,
            r.system,
            r.ns,
            r.ratio,
            r.drains.map_or_else(|| "-".to_owned(), |d| format!("{d:.2}"))
        );
    }
    let _ = writeln!(
        s,
        "(\"vs ptm\": time / ptm's time for the same update; 8-word = 8 words in 8 cache lines)"
    );
    let _ = writeln!(
        s,
        "ptm: transactions on a pool forced into the cache-flush domain (force_pmem), whatever the file system"
    );
    if pmdk {
        let forced = match m.pmdk_is_pmem {
            Some(true) => "cache flushes (PMEM_IS_PMEM_FORCE=1)",
            _ => "msync -- WARNING: PMEM_IS_PMEM_FORCE=1 was not honoured",
        };
        let _ = writeln!(s, "PMDK: libpmemobj transactions, persisting with {forced}");
    } else {
        let _ = writeln!(s, "{PMDK_NOT_BUILT}");
    }
    let _ = writeln!(
        s,
        "SQLite: WAL, synchronous=FULL, one UPDATE per transaction; write+fsync: pwrite 8 bytes (x8) + fdatasync"
    );
    let _ = writeln!(
        s,
        "LMDB: default durable flags (each commit syncs), one write transaction putting 1 (or 8) u64 keys"
    );
    if m.fs == "tmpfs" || m.fs == "ramfs" {
        let _ = writeln!(
            s,
            "note: {} is RAM-backed: fsync is nearly free, so SQLite, LMDB and write+fsync are lower bounds",
            m.fs
        );
    }
    s
}
