//! `ptm bench --pauses`: the tail latency of inserts into growing collections.
//!
//! Collections that grow by doubling make the insert that triggers growth pay for moving (or
//! rehashing) everything inserted so far. This workload makes that visible: for each structure,
//! `ops` inserts of fresh keys (distinct, scattered: a bijective mix of the operation index),
//! each timed on its own with [`Instant`], each its own durable transaction for the persistent
//! structures:
//!
//! - ptm: `PHashMap<u64, u64>::insert`, `PBTreeMap<u64, u64>::insert`, `PVec<u64>::push`,
//!   `PQueue<u64>::push`, one `Pool::transaction` per insert, each structure in its own pool
//!   forced into the cache-flush domain (as `ptm bench`);
//! - PMDK (cli feature `pmdk`): the chained hash map of the collections benchmark
//!   (`ptm_benches::pmdk_collections`), one libpmemobj transaction per insert;
//! - std (volatile peers): `HashMap<u64, u64>::insert`, `BTreeMap<u64, u64>::insert` and
//!   `Vec<u64>::push`; `HashMap` and `Vec` double too.
//!
//! Structures run one after the other in this process. Each reports its latency distribution
//! (mean, p50, p99, p99.9, max and the index of the slowest insert), the ratio of its max to
//! its own p50, and the ratios of its max and p99 to its std peer's in the same run. Where the
//! capacity is visible (`PHashMap::capacity`, `PVec::capacity`, `PQueue`'s block count,
//! PMDK's bucket count, std's `capacity`), it also counts the inserts after which it changed
//! ("growths", with their indices: deterministic, so tests can check that growth happened
//! without timing anything) and reports the slowest of them ("grow max"): on a shared machine
//! a preempted ordinary insert can be the overall max, the growing inserts are the pauses the
//! structure itself causes. For ptm it also reports the most cache lines one insert flushed
//! ("max lines", `ptm::thread_stats`): the deterministic size of the largest pause's work,
//! whatever the machine's load. Latencies are kept per run only (8 bytes each) and reduced to
//! the statistics before the next structure runs.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use indicatif::ProgressBar;
use ptm::{Persistent, Pool, PoolOptions, Transaction};
use ptm_collections::{PBTreeMap, PHashMap, PQueue, PVec};
use serde_json::json;

use crate::bench::{cpu_model, fs_type, progress, work_dir, BenchArgs};
use crate::Failure;

/// Inserts per structure by default.
pub(crate) const DEFAULT_OPS: u64 = 2_000_000;
/// Inserts per structure with `--quick`.
const QUICK_OPS: u64 = 20_000;
/// Most inserts per structure accepted by `--ops` (the latencies of a run take 8 bytes each).
pub(crate) const MAX_OPS: u64 = 100_000_000;
/// Pool size: a fixed part plus this many bytes per insert. The largest need is `PHashMap`'s:
/// a table of at most `8/3 * ops` slots of 17 bytes (control byte, key, value), plus the
/// previous tables (half, a quarter, ...) while they are rebuilt or not yet reused; PMDK's
/// hash map needs 16-byte buckets, a 32-byte object per entry and an undo log entry per entry
/// it relinks.
/// 2,000,000 inserts: 576 MiB pools (tmpfs pages are only used where touched).
const POOL_BASE: u64 = 64 << 20;
/// See [`POOL_BASE`].
const POOL_PER_OP: u64 = 256;
/// Inserts between progress-bar updates.
const PROGRESS_STEP: u64 = 1 << 14;
/// What to print instead of the PMDK row when the feature is off.
const PMDK_NOT_BUILT: &str =
    "PMDK: not built (cargo run --release -p ptm-cli --features pmdk -- bench --pauses)";

/// Names of the std peers.
const STD_HASHMAP: &str = "std HashMap";
const STD_BTREEMAP: &str = "std BTreeMap";
const STD_VEC: &str = "std Vec";

/// The key of insert `i`: the SplitMix64 finalizer of `i + 1`, a bijection of `u64`, so the
/// keys are distinct and scattered over the whole range.
fn key(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What [`measure`] keeps of one structure's run.
struct Measured {
    ops: u64,
    /// Sum of the latencies, ns.
    total_ns: u128,
    /// Indices of the inserts after which the capacity changed, when it is visible.
    growth_at: Option<Vec<u64>>,
    /// The most cache lines one insert flushed, and its index (ptm only).
    max_lines: Option<(u64, u64)>,
    st: Stats,
}

/// One timed insert: its latency, the capacity after it (or another value that changes exactly
/// when the structure grows; `None` when not visible) and, for ptm, the cache lines it flushed.
struct Sample {
    ns: u128,
    cap: Option<u64>,
    lines: Option<u64>,
}

/// Runs `f`, returning its result and how long it took, ns.
fn timed<T>(f: impl FnOnce() -> T) -> (T, u128) {
    let start = Instant::now();
    let t = f();
    (t, start.elapsed().as_nanos())
}

/// One structure's measurements.
struct Run {
    name: &'static str,
    operation: &'static str,
    /// The std structure its ratios are against.
    peer: &'static str,
    durable: bool,
    m: Measured,
}

/// A latency distribution, ns.
#[derive(Clone, Copy)]
struct Stats {
    mean: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    max_at: u64,
    /// The slowest insert that grew the structure, and its index (when growth is visible).
    growth_max: Option<(u64, u64)>,
}

/// The distribution of the latencies `lat` (non-empty; sorted in place), whose sum is
/// `total_ns`; `growth_at` are indices into `lat`.
fn stats(lat: &mut [u64], total_ns: u128, growth_at: Option<&[u64]>) -> Stats {
    // The first of the slowest, by index.
    let slowest = |lat: &[u64], at: &mut dyn Iterator<Item = u64>| {
        at.map(|i| (lat[i as usize], i))
            .fold(None, |best: Option<(u64, u64)>, (l, i)| match best {
                Some((bl, _)) if bl >= l => best,
                _ => Some((l, i)),
            })
    };
    let (max, max_at) = slowest(lat, &mut (0..lat.len() as u64)).unwrap_or((0, 0));
    let growth_max = growth_at.and_then(|g| slowest(lat, &mut g.iter().copied()));
    lat.sort_unstable();
    // Nearest rank: the smallest latency with at least a fraction `q` of them at or below it.
    let rank = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
    Stats {
        mean: total_ns as f64 / lat.len() as f64,
        p50: rank(0.50),
        p99: rank(0.99),
        p999: rank(0.999),
        max,
        max_at,
        growth_max,
    }
}

/// Runs `ops` calls of `insert(i)`, each timing its insert alone ([`timed`]) and returning a
/// [`Sample`].
fn measure(
    name: &'static str,
    ops: u64,
    bar: &ProgressBar,
    mut insert: impl FnMut(u64) -> Result<Sample, String>,
) -> Result<Measured, Failure> {
    bar.set_message(name);
    let mut lat: Vec<u64> = Vec::with_capacity(ops as usize);
    let mut total = 0u128;
    let mut growth_at = Vec::new();
    let mut tracked = true;
    let mut max_lines: Option<(u64, u64)> = None;
    // Every structure starts empty, with no storage.
    let mut capacity = 0u64;
    for i in 0..ops {
        let Sample { ns, cap, lines } = insert(i).map_err(|e| Failure(format!("{name}: insert {i}: {e}")))?;
        lat.push(u64::try_from(ns).unwrap_or(u64::MAX));
        total += ns;
        if let Some(l) = lines {
            if max_lines.is_none_or(|(m, _)| l > m) {
                max_lines = Some((l, i));
            }
        }
        match cap {
            Some(c) if c != capacity => {
                growth_at.push(i);
                capacity = c;
            }
            Some(_) => {}
            None => tracked = false,
        }
        if (i + 1).is_multiple_of(PROGRESS_STEP) {
            bar.inc(PROGRESS_STEP);
        }
    }
    bar.inc(ops % PROGRESS_STEP);
    let growth_at = tracked.then_some(growth_at);
    Ok(Measured {
        ops,
        total_ns: total,
        st: stats(&mut lat, total, growth_at.as_deref()),
        growth_at,
        max_lines,
    })
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
struct VecRoot {
    v: PVec<u64>,
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct QueueRoot {
    q: PQueue<u64>,
}

/// Where the pools go, how big they are, and the progress bar.
struct Setup<'a> {
    dir: &'a Path,
    pool_size: u64,
    ops: u64,
    bar: &'a ProgressBar,
}

impl Setup<'_> {
    /// Runs `ops` transactions of `insert` on a fresh ptm pool (removed afterwards); also
    /// returns the pool's persistence domain. `insert(tx, root, key)` returns the previous
    /// value of `key` (maps; an error if any: the keys are distinct); it alone is timed. Then
    /// `cap(tx, root)`, in a transaction of its own, gives the capacity (see [`Sample`]).
    fn ptm<R: Persistent>(
        &self,
        name: &'static str,
        insert: impl for<'t> Fn(&'t Transaction<'t>, &'t R, u64) -> ptm::Result<Option<u64>>,
        cap: impl for<'t> Fn(&'t Transaction<'t>, &'t R) -> ptm::Result<Option<u64>>,
    ) -> Result<(Measured, String), Failure> {
        let path = self.dir.join("pauses.pool");
        let pool = Pool::<R>::create(
            &path,
            self.pool_size,
            &PoolOptions::new().layout("ptm-bench-pauses").force_pmem(true),
        )
        .map_err(|e| Failure(format!("{name}: ptm pool of {} bytes: {e}", self.pool_size)))?;
        let domain = pool.domain().name().to_owned();
        let m = measure(name, self.ops, self.bar, |i| {
            let k = key(i);
            let before = ptm::thread_stats();
            let (r, ns) = timed(|| pool.transaction(|tx, root| insert(tx, root, k)));
            let lines = ptm::thread_stats().since(&before).lines_flushed;
            match r {
                Ok(None) => {}
                Ok(Some(_)) => return Err(format!("key {k} was already present")),
                Err(e) => return Err(e.to_string()),
            }
            let cap = pool
                .transaction(|tx, root| cap(tx, root))
                .map_err(|e| e.to_string())?;
            Ok(Sample {
                ns,
                cap,
                lines: Some(lines),
            })
        })?;
        drop(pool);
        std::fs::remove_file(&path).map_err(|e| Failure(format!("removing {}: {e}", path.display())))?;
        Ok((m, domain))
    }
}

#[cfg(feature = "pmdk")]
fn pmdk_hash_map(s: &Setup<'_>) -> Result<Option<(Run, bool)>, Failure> {
    use ptm_benches::pmdk_collections::{PmdkMap, PmdkMapKind};
    let name = "PMDK hash map";
    let m = PmdkMap::create(PmdkMapKind::Hash, s.dir, s.pool_size)
        .map_err(|e| Failure(format!("{name}: pool of {} bytes: {e}", s.pool_size)))?;
    let measured = measure(name, s.ops, s.bar, |i| {
        let k = key(i);
        let (r, ns) = timed(|| m.insert(k, k));
        match r {
            Ok(None) => Ok(Sample {
                ns,
                cap: m.buckets(),
                lines: None,
            }),
            Ok(Some(_)) => Err(format!("key {k} was already present")),
            Err(e) => Err(e.to_string()),
        }
    })?;
    let is_pmem = m.is_pmem();
    Ok(Some((
        Run {
            name,
            operation: "insert",
            peer: STD_HASHMAP,
            durable: true,
            m: measured,
        },
        is_pmem,
    )))
}

#[cfg(not(feature = "pmdk"))]
fn pmdk_hash_map(_s: &Setup<'_>) -> Result<Option<(Run, bool)>, Failure> {
    Ok(None)
}

/// Runs the growth-pause workload and renders the table (or JSON).
pub(crate) fn run(a: &BenchArgs) -> Result<String, Failure> {
    let ops = a.ops.unwrap_or(if a.quick { QUICK_OPS } else { DEFAULT_OPS });
    let pool_size = (POOL_BASE + POOL_PER_OP * ops).next_multiple_of(4096);
    let (base, tmp) = work_dir(a.dir.as_deref())?;
    let dir = tmp.path();

    let structures = if cfg!(feature = "pmdk") { 8 } else { 7 };
    let bar = progress(
        a.json,
        ops * structures,
        "{spinner} growth pauses: {msg} {pos}/{len} {elapsed}",
    )?;
    let s = Setup {
        dir,
        pool_size,
        ops,
        bar: &bar,
    };
    let run = |name, operation, peer, durable, m| Run {
        name,
        operation,
        peer,
        durable,
        m,
    };
    let mut runs = Vec::new();

    // Hash maps.
    let (m, ptm_domain) = s.ptm(
        "PHashMap",
        |tx, r: &HashRoot, k| r.m.insert(tx, k, k),
        |tx, r| Ok(Some(r.m.capacity(tx))),
    )?;
    runs.push(run("PHashMap", "insert", STD_HASHMAP, true, m));
    let pmdk = pmdk_hash_map(&s)?;
    let pmdk_is_pmem = pmdk.as_ref().map(|(_, p)| *p);
    runs.extend(pmdk.map(|(r, _)| r));
    let mut hm = HashMap::new();
    let m = measure(STD_HASHMAP, ops, &bar, |i| {
        let k = key(i);
        match timed(|| hm.insert(k, k)) {
            (None, ns) => Ok(Sample {
                ns,
                cap: Some(hm.capacity() as u64),
                lines: None,
            }),
            (Some(_), _) => Err(format!("key {k} was already present")),
        }
    })?;
    drop(hm);
    runs.push(run(STD_HASHMAP, "insert", STD_HASHMAP, false, m));

    // Ordered maps (no doubling: node splits).
    let (m, _) = s.ptm(
        "PBTreeMap",
        |tx, r: &TreeRoot, k| r.m.insert(tx, k, k),
        |_, _| Ok(None),
    )?;
    runs.push(run("PBTreeMap", "insert", STD_BTREEMAP, true, m));
    let mut bt = BTreeMap::new();
    let m = measure(STD_BTREEMAP, ops, &bar, |i| {
        let k = key(i);
        match timed(|| bt.insert(k, k)) {
            (None, ns) => Ok(Sample {
                ns,
                cap: None,
                lines: None,
            }),
            (Some(_), _) => Err(format!("key {k} was already present")),
        }
    })?;
    drop(bt);
    runs.push(run(STD_BTREEMAP, "insert", STD_BTREEMAP, false, m));

    // Arrays.
    let (m, _) = s.ptm(
        "PVec",
        |tx, r: &VecRoot, k| r.v.push(tx, k).map(|()| None),
        |tx, r| Ok(Some(r.v.capacity(tx))),
    )?;
    runs.push(run("PVec", "push", STD_VEC, true, m));
    let (m, _) = s.ptm(
        "PQueue",
        |tx, r: &QueueRoot, k| r.q.push(tx, k).map(|()| None),
        // A grown small ring is a new block, a full-size queue gains a chunk: the blocks change.
        |tx, r| {
            let b = r.q.block_offsets(tx)?;
            Ok(Some(b.iter().fold(b.len() as u64, |h, &o| h.rotate_left(7) ^ o)))
        },
    )?;
    runs.push(run("PQueue", "push", STD_VEC, true, m));
    let mut v = Vec::new();
    let m = measure(STD_VEC, ops, &bar, |i| {
        let ((), ns) = timed(|| v.push(key(i)));
        Ok(Sample {
            ns,
            cap: Some(v.capacity() as u64),
            lines: None,
        })
    })?;
    drop(v);
    runs.push(run(STD_VEC, "push", STD_VEC, false, m));
    bar.finish_and_clear();

    let machine = Machine {
        cpu: cpu_model(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir: base.canonicalize().unwrap_or(base).display().to_string(),
        fs: fs_type(dir),
        flush: ptm::pmem_core::detected_flush_instruction().map_or("none", |i| i.name()),
        ptm_domain,
        pmdk_is_pmem,
    };
    let rows = rows(&runs);
    if a.json {
        return json_text(ops, pool_size, &machine, &rows);
    }
    Ok(table(ops, &machine, &rows))
}

/// What the machine line says.
struct Machine {
    cpu: String,
    cores: usize,
    dir: String,
    fs: String,
    flush: &'static str,
    ptm_domain: String,
    pmdk_is_pmem: Option<bool>,
}

/// One output row: a run, its statistics and its ratios.
struct Row<'a> {
    run: &'a Run,
    max_to_p50: f64,
    max_to_peer: f64,
    p99_to_peer: f64,
}

fn rows(runs: &[Run]) -> Vec<Row<'_>> {
    runs.iter()
        .map(|run| {
            let st = run.m.st;
            let peer = runs.iter().find(|p| p.name == run.peer).map(|p| p.m.st);
            let ratio = |a: u64, b: Option<u64>| b.map_or(f64::NAN, |b| a as f64 / b as f64);
            Row {
                run,
                max_to_p50: ratio(st.max, Some(st.p50)),
                max_to_peer: ratio(st.max, peer.map(|p| p.max)),
                p99_to_peer: ratio(st.p99, peer.map(|p| p.p99)),
            }
        })
        .collect()
}

fn json_text(ops: u64, pool_size: u64, m: &Machine, rows: &[Row<'_>]) -> Result<String, Failure> {
    let v = json!({
        "workload": "pauses",
        "ops": ops,
        "pool_size": pool_size,
        "statistic": "latency of each operation (one durable transaction each for ptm and PMDK), ns",
        "machine": {
            "cpu": m.cpu,
            "cores": m.cores,
            "dir": m.dir,
            "fs": m.fs,
            "flush_instruction": m.flush,
            "ptm_domain": m.ptm_domain,
            "pmdk_is_pmem": m.pmdk_is_pmem,
        },
        "pmdk": if cfg!(feature = "pmdk") { "built" } else { PMDK_NOT_BUILT },
        "results": rows.iter().map(|r| json!({
            "structure": r.run.name,
            "operation": r.run.operation,
            "durable": r.run.durable,
            "peer": r.run.peer,
            "ops": r.run.m.ops,
            "total_ns": u64::try_from(r.run.m.total_ns).unwrap_or(u64::MAX),
            "mean_ns": r.run.m.st.mean,
            "p50_ns": r.run.m.st.p50,
            "p99_ns": r.run.m.st.p99,
            "p999_ns": r.run.m.st.p999,
            "max_ns": r.run.m.st.max,
            "max_at": r.run.m.st.max_at,
            "growth_max_ns": r.run.m.st.growth_max.map(|(l, _)| l),
            "growth_max_at": r.run.m.st.growth_max.map(|(_, i)| i),
            "growths": r.run.m.growth_at.as_ref().map(Vec::len),
            "max_lines": r.run.m.max_lines.map(|(l, _)| l),
            "max_lines_at": r.run.m.max_lines.map(|(_, i)| i),
            "growth_at": r.run.m.growth_at,
            "max_to_p50": r.max_to_p50,
            "max_to_peer": r.max_to_peer,
            "p99_to_peer": r.p99_to_peer,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v)
        .map(|s| s + "\n")
        .map_err(|e| Failure(format!("encoding JSON: {e}")))
}

fn table(ops: u64, m: &Machine, rows: &[Row<'_>]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "growth pauses: {ops} inserts per structure from empty, each timed alone (ptm, PMDK: one durable transaction each), ns"
    );
    let _ = writeln!(
        s,
        "machine: {}, {} cores; dir {} ({}); ptm flush instruction {} (pool domain {})",
        m.cpu, m.cores, m.dir, m.fs, m.flush, m.ptm_domain
    );
    let _ = writeln!(
        s,
        "{:<14} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>11} {:>9} {:>7} {:>11} {:>9} {:>9} {:>9} {:>12} {:>9} {:>9}",
        "structure",
        "ops",
        "total ms",
        "mean",
        "p50",
        "p99",
        "p99.9",
        "max",
        "max at",
        "growths",
        "grow max",
        "grow at",
        "max lines",
        "max/p50",
        "peer",
        "max/peer",
        "p99/peer"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<14} {:>9} {:>9.1} {:>8.0} {:>8} {:>8} {:>9} {:>11} {:>9} {:>7} {:>11} {:>9} {:>9} {:>8.0}x {:>12} {:>8.2}x {:>8.2}x",
            r.run.name,
            r.run.m.ops,
            r.run.m.total_ns as f64 / 1e6,
            r.run.m.st.mean,
            r.run.m.st.p50,
            r.run.m.st.p99,
            r.run.m.st.p999,
            r.run.m.st.max,
            r.run.m.st.max_at,
            r.run
                .m
                .growth_at
                .as_ref()
                .map_or_else(|| "-".to_owned(), |g| g.len().to_string()),
            r.run.m.st.growth_max.map_or_else(|| "-".to_owned(), |(l, _)| l.to_string()),
            r.run.m.st.growth_max.map_or_else(|| "-".to_owned(), |(_, i)| i.to_string()),
            r.run.m.max_lines.map_or_else(|| "-".to_owned(), |(l, _)| l.to_string()),
            r.max_to_p50,
            r.run.peer,
            r.max_to_peer,
            r.p99_to_peer
        );
    }
    let _ = writeln!(
        s,
        "(max at: index of the slowest insert; growths: inserts after which the capacity changed, - where not visible;"
    );
    let _ = writeln!(
        s,
        " grow max, grow at: the slowest of those growing inserts and its index: a max elsewhere is not a growth pause;\n max lines: the most cache lines one insert flushed (ptm; deterministic);"
    );
    let _ = writeln!(
        s,
        " peer: the std structure of the same kind, measured in this run; x/peer: ratio of the two)"
    );
    let _ = writeln!(
        s,
        "ptm: PHashMap<u64,u64>, PBTreeMap<u64,u64>, PVec<u64>, PQueue<u64>, each in its own pool forced into the cache-flush domain"
    );
    match m.pmdk_is_pmem {
        Some(true) => {
            let _ = writeln!(
                s,
                "PMDK: chained hash map in C on libpmemobj (doubles its buckets at load 1), cache flushes (PMEM_IS_PMEM_FORCE=1)"
            );
        }
        Some(false) => {
            let _ = writeln!(
                s,
                "PMDK: chained hash map in C on libpmemobj -- WARNING: PMEM_IS_PMEM_FORCE=1 was not honoured (msync)"
            );
        }
        None => {
            let _ = writeln!(s, "{PMDK_NOT_BUILT}");
        }
    }
    let _ = writeln!(
        s,
        "std: volatile, nothing durable; HashMap and Vec double their storage too"
    );
    s
}
