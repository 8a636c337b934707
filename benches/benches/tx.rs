//! ptm transactions side by side with PMDK's libpmemobj.
//!
//! Each group runs the same logical transaction on both libraries, as functions `ptm` and
//! `pmdk`, on pool files in the same directory ([`pmem_pool_dir`], `/dev/shm`), both forced into
//! the cache-flush domain (ptm: `PoolOptions::force_pmem(true)`; PMDK: `PMEM_IS_PMEM_FORCE=1`):
//!
//! - `tx_1word`: log one 8-byte word and store to it (ptm: `PCell::set`, which logs on its own;
//!   PMDK: one `pmemobj_tx_add_range`).
//! - `tx_8range`, `tx_64range`: log 8 / 64 distinct 8-byte words, each in its own cache line
//!   (stride 8 words), then store to all of them (ptm: one batched `Transaction::snapshot` of
//!   all of them, `SnapshotBatch::add_all`; PMDK: one `pmemobj_tx_add_range` per word, all
//!   before the stores).
//! - `tx_readonly`: a transaction that reads one word.
//!
//! Every iteration stores a new value, so the written lines are dirty each time. The PMDK side
//! is C (`csrc/pmdk_shim.c`): one FFI call per transaction. At startup the benchmark prints the
//! lines flushed and drains per ptm transaction, and whether libpmem treats the PMDK pool as
//! persistent memory.
//!
//! Run with `cargo bench -p ptm-benches --bench tx --features pmdk` (needs libpmemobj-dev);
//! without the feature only the ptm functions run.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::Criterion;
use ptm::{DomainKind, PCell, Persistent, Pool, PoolOptions};
use ptm_benches::{pmem_pool_dir, SHM_DIR};

/// Size of both pools.
const POOL_SIZE: u64 = 64 << 20;
/// `u64` words in the root object: 64 cache lines.
const ROOT_WORDS: usize = 512;
/// Distance, in words, between the words a transaction changes: one cache line.
const STRIDE: usize = 8;
/// The word read by `tx_readonly`.
const READ_WORD: usize = 3;
/// The writing benchmarks: group name and number of words changed.
const WRITE_CASES: [(&str, usize); 3] = [("tx_1word", 1), ("tx_8range", 8), ("tx_64range", 64)];

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    words: [PCell<u64>; ROOT_WORDS],
}

/// A ptm pool in a fresh temporary directory. `pool` is declared first so it is closed before
/// the directory is removed.
struct PtmPool {
    pool: Pool<Root>,
    _dir: tempfile::TempDir,
}

fn ptm_pool() -> PtmPool {
    let dir = tempfile::Builder::new()
        .prefix("ptm-bench-")
        .tempdir_in(pmem_pool_dir())
        .expect("create the ptm pool directory");
    let pool = Pool::<Root>::create(
        dir.path().join("ptm.pool"),
        POOL_SIZE,
        &PoolOptions::new().force_pmem(true),
    )
    .expect("create the ptm pool");
    PtmPool { pool, _dir: dir }
}

/// One ptm transaction setting words `0, STRIDE, 2 * STRIDE, ...` (`n` of them) to `val`: a
/// plain `set` for one word, a batched snapshot followed by the stores for more.
#[inline]
fn ptm_set_words(pool: &Pool<Root>, n: usize, val: u64) -> ptm::Result<()> {
    pool.transaction(|tx, root| {
        if n == 1 {
            return root.words[0].set(tx, val);
        }
        let words = || root.words.iter().step_by(STRIDE).take(n);
        tx.snapshot(|b| b.add_all(words()))?;
        for w in words() {
            w.set(tx, val)?;
        }
        Ok(())
    })
}

/// One read-only ptm transaction returning word `i`.
#[inline]
fn ptm_read_word(pool: &Pool<Root>, i: usize) -> ptm::Result<u64> {
    pool.transaction(|tx, root| Ok(root.words[i].get(tx)))
}

#[cfg(feature = "pmdk")]
use ptm_benches::pmdk::PmdkPool as Pmdk;

/// Stands for the PMDK pool when the `pmdk` feature is off: no value exists.
#[cfg(not(feature = "pmdk"))]
enum Pmdk {}

#[cfg(not(feature = "pmdk"))]
impl Pmdk {
    fn tx_set_words(&self, _n: u64, _stride: u64, _val: u64) -> Result<(), std::convert::Infallible> {
        match *self {}
    }

    fn tx_read_word(&self, _index: u64) -> Result<u64, std::convert::Infallible> {
        match *self {}
    }
}

#[cfg(feature = "pmdk")]
fn pmdk_pool() -> Option<Pmdk> {
    const _: () = assert!(ptm_benches::pmdk::ROOT_WORDS == ROOT_WORDS as u64);
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

/// Prints where the pools live and what one ptm transaction of each kind costs in lines flushed
/// and drains (deterministic), and checks that both libraries store what they are asked to.
fn print_setup(ptm: &PtmPool, pmdk: Option<&Pmdk>) {
    let dir = pmem_pool_dir();
    let note = if dir == Path::new(SHM_DIR) {
        "tmpfs"
    } else {
        "FALLBACK: /dev/shm missing"
    };
    println!("pool dir      : {} ({note}, forced pmem)", dir.display());
    let insn = ptm::pmem_core::detected_flush_instruction().map_or("none", |i| i.name());
    println!("flush insn    : {insn} (ptm's choice)");
    let domain = ptm.pool.domain();
    println!("ptm domain    : {}", domain.name());
    if !matches!(domain, DomainKind::CacheFlush(_)) {
        println!("WARNING: the ptm pool is not in the cache-flush domain");
    }
    print_pmdk(pmdk);

    const ROUNDS: u64 = 16;
    let per_tx = |f: &mut dyn FnMut(u64)| {
        f(0); // warm-up: the first transaction may also flush a pending completion mark
        let before = ptm::thread_stats();
        for v in 1..=ROUNDS {
            f(v);
        }
        let d = ptm::thread_stats().since(&before);
        (
            d.lines_flushed as f64 / ROUNDS as f64,
            d.drains as f64 / ROUNDS as f64,
        )
    };
    for (name, n) in WRITE_CASES {
        let (lines, drains) = per_tx(&mut |v| {
            ptm_set_words(&ptm.pool, n, 1000 + v).expect("ptm transaction");
        });
        println!("ptm {name:<11}: {drains} drain(s)/tx, {lines} line(s) flushed/tx");
    }
    let (lines, drains) = per_tx(&mut |_| {
        black_box(ptm_read_word(&ptm.pool, READ_WORD).expect("ptm read-only transaction"));
    });
    println!("ptm tx_readonly: {drains} drain(s)/tx, {lines} line(s) flushed/tx");

    // Both sides now hold 1000 + ROUNDS in the written words; check with a read transaction.
    let expect = 1000 + ROUNDS;
    let got = ptm_read_word(&ptm.pool, STRIDE).expect("ptm read-only transaction");
    assert_eq!(got, expect, "ptm stored the wrong value");
    if let Some(p) = pmdk {
        for (_, n) in WRITE_CASES {
            for v in 0..=ROUNDS {
                p.tx_set_words(n as u64, STRIDE as u64, 1000 + v)
                    .expect("PMDK transaction");
            }
        }
        let got = p.tx_read_word(STRIDE as u64).expect("PMDK read-only transaction");
        assert_eq!(got, expect, "PMDK stored the wrong value");
    }
    println!();
}

fn bench(c: &mut Criterion, ptm: &PtmPool, pmdk: Option<&Pmdk>) {
    for (name, n) in WRITE_CASES {
        let mut g = c.benchmark_group(name);
        let mut v = 0u64;
        g.bench_function("ptm", |b| {
            b.iter(|| {
                v += 1;
                ptm_set_words(&ptm.pool, n, black_box(v)).expect("ptm transaction")
            })
        });
        if let Some(p) = pmdk {
            let mut v = 0u64;
            g.bench_function("pmdk", |b| {
                b.iter(|| {
                    v += 1;
                    p.tx_set_words(n as u64, STRIDE as u64, black_box(v))
                        .expect("PMDK transaction")
                })
            });
        }
        g.finish();
    }

    let mut g = c.benchmark_group("tx_readonly");
    g.bench_function("ptm", |b| {
        b.iter(|| ptm_read_word(&ptm.pool, black_box(READ_WORD)).expect("ptm read-only transaction"))
    });
    if let Some(p) = pmdk {
        g.bench_function("pmdk", |b| {
            b.iter(|| {
                p.tx_read_word(black_box(READ_WORD as u64))
                    .expect("PMDK read-only transaction")
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

fn main() {
    // Before any libpmemobj call and while single-threaded (see `force_pmem_env`).
    #[cfg(feature = "pmdk")]
    ptm_benches::pmdk::force_pmem_env();
    let ptm = ptm_pool();
    let pmdk = pmdk_pool();
    print_setup(&ptm, pmdk.as_ref());
    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = config().configure_from_args();
    bench(&mut c, &ptm, pmdk.as_ref());
    c.final_summary();
}
