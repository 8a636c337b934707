//! Cost of the pmem-core persistence primitives.
//!
//! - `persist/{64B,4KiB}`: `write_at` + `persist` (flush + drain) in the cache-flush domain, at a
//!   rotating offset so the flushed lines are dirty each iteration;
//!   `persist_only/{64B,4KiB}`: `persist` alone, i.e. flushing lines that are already clean.
//! - `copy_{4KiB,64KiB}`: non-temporal copy + drain against ordinary copy + flush + drain.
//! - `msync/persist_4KiB`: `write_at` + `persist` on an ordinary file (msync domain), to show
//!   the gap between the two domains.
//!
//! The persistent-memory pool lives on `/dev/shm` (forced cache-flush domain), falling back to
//! the temporary directory; the msync pool lives in the temporary directory.
//!
//! Run with `cargo bench -p ptm-benches --bench persist`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use pmem_core::{detected_flush_instruction, thread_stats, DomainKind};
use ptm_benches::{pmem_pool_dir, Rotor, TempPool, SHM_DIR};

/// Pool size: the 1 MiB window below plus the two header copies fit comfortably.
const POOL_SIZE: u64 = 4 << 20;
/// Bytes over which successive iterations rotate their offset.
const WINDOW: u64 = 1 << 20;
/// Sizes, with their display names.
const B64: (u64, &str) = (64, "64B");
const KIB4: (u64, &str) = (4 << 10, "4KiB");
const KIB64: (u64, &str) = (64 << 10, "64KiB");

fn pmem_pool() -> TempPool {
    TempPool::create(&pmem_pool_dir(), POOL_SIZE, true).expect("create the forced-pmem pool")
}

fn msync_pool() -> TempPool {
    TempPool::create(&std::env::temp_dir(), POOL_SIZE, false).expect("create the msync pool")
}

/// A rotor over the first [`WINDOW`] bytes of the pool's data area, page-aligned.
fn rotor(pool: &TempPool, stride: u64) -> Rotor {
    let start = pool.region.data_range().start.next_multiple_of(4096);
    assert!(
        start + WINDOW <= pool.region.data_range().end,
        "pool too small for the window"
    );
    Rotor::new(start, WINDOW, stride)
}

fn pattern(len: u64) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + 7) as u8).collect()
}

/// Prints where the pools live, the flush instruction and domains in use, and what one
/// operation of each benchmark costs in lines flushed and drains (a check that the benchmark
/// measures what it claims).
fn print_setup() {
    let dir = pmem_pool_dir();
    if dir == Path::new(SHM_DIR) {
        println!("pmem pool dir : {} (tmpfs, forced pmem)", dir.display());
    } else {
        println!(
            "pmem pool dir : {} ({SHM_DIR} missing: FALLBACK, forced pmem)",
            dir.display()
        );
    }
    println!("msync pool dir: {}", std::env::temp_dir().display());
    let insn = detected_flush_instruction().map_or("none", |i| i.name());
    println!("flush insn    : {insn}");

    let mut pmem = pmem_pool();
    let domain = pmem.region.domain();
    println!("pmem domain   : {}", domain.name());
    if !matches!(domain, DomainKind::CacheFlush(_)) {
        println!("WARNING: the forced-pmem pool is not in the cache-flush domain");
    }
    let msync = msync_pool();
    println!("msync domain  : {}", msync.region.domain().name());
    if msync.region.domain() != DomainKind::Msync {
        println!("WARNING: the temp-dir pool is not in the msync domain");
    }
    drop(msync);

    let off = rotor(&pmem, 64).next_offset();
    for (len, name) in [B64, KIB4, KIB64] {
        let data = pattern(len);
        let r = &mut pmem.region;
        let before = thread_stats();
        r.write_at(off, &data).expect("write_at");
        r.persist(off, len).expect("persist");
        let p = thread_stats().since(&before);
        let before = thread_stats();
        r.write_nontemporal_at(off, &data).expect("write_nontemporal_at");
        r.drain().expect("drain");
        let n = thread_stats().since(&before);
        println!(
            "per op {name:>5}: write+persist {} lines {} drain(s); nt copy+drain {} lines {} drain(s) {} nt bytes",
            p.lines_flushed, p.drains, n.lines_flushed, n.drains, n.nt_bytes
        );
    }
    println!();
}

fn bench_persist(c: &mut Criterion) {
    let mut pool = pmem_pool();
    let mut g = c.benchmark_group("persist");
    for (len, name) in [B64, KIB4] {
        let data = pattern(len);
        let mut rot = rotor(&pool, len);
        let region = &mut pool.region;
        g.throughput(Throughput::Bytes(len));
        g.bench_function(name, |b| {
            b.iter(|| {
                let off = rot.next_offset();
                region.write_at(off, black_box(&data)).expect("write_at");
                region.persist(off, len).expect("persist");
            })
        });
    }
    g.finish();

    // Flushing lines that are already clean: cheaper, and not what a transaction does.
    let mut g = c.benchmark_group("persist_only");
    for (len, name) in [B64, KIB4] {
        let mut rot = rotor(&pool, len);
        let region = &pool.region;
        g.throughput(Throughput::Bytes(len));
        g.bench_function(name, |b| {
            b.iter(|| {
                region
                    .persist(black_box(rot.next_offset()), len)
                    .expect("persist")
            })
        });
    }
    g.finish();
}

fn bench_copy(c: &mut Criterion) {
    let mut pool = pmem_pool();
    for (len, name) in [KIB4, KIB64] {
        let data = pattern(len);
        let mut g = c.benchmark_group(format!("copy_{name}"));
        g.throughput(Throughput::Bytes(len));

        let mut rot = rotor(&pool, len);
        let region = &mut pool.region;
        g.bench_function("nontemporal_drain", |b| {
            b.iter(|| {
                let off = rot.next_offset();
                region
                    .write_nontemporal_at(off, black_box(&data))
                    .expect("write_nontemporal_at");
                region.drain().expect("drain");
            })
        });

        let mut rot = rotor(&pool, len);
        let region = &mut pool.region;
        g.bench_function("write_persist", |b| {
            b.iter(|| {
                let off = rot.next_offset();
                region.write_at(off, black_box(&data)).expect("write_at");
                region.persist(off, len).expect("persist");
            })
        });
        g.finish();
    }
}

fn bench_msync(c: &mut Criterion) {
    let mut pool = msync_pool();
    let (len, _) = KIB4;
    let data = pattern(len);
    let mut rot = rotor(&pool, len);
    let region = &mut pool.region;

    let mut g = c.benchmark_group("msync");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(len));
    g.bench_function("persist_4KiB", |b| {
        b.iter(|| {
            let off = rot.next_offset();
            region.write_at(off, black_box(&data)).expect("write_at");
            region.persist(off, len).expect("persist");
        })
    });
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
    print_setup();
    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = config().configure_from_args();
    bench_persist(&mut c);
    bench_copy(&mut c);
    bench_msync(&mut c);
    c.final_summary();
}
