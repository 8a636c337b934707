//! The nvme-backing benchmark report: page-fault cost against a kernel `mmap` of the same file,
//! CRC32C per page, and durable random writes with a working set larger than the resident limit.
//!
//! Run with `cargo bench -p nvme-backing --bench paging` (one run gives the whole report, about
//! two to three minutes). The backing files live in a temporary directory under
//! `CARGO_TARGET_TMPDIR` (the workspace's `target/tmp`, i.e. the disk `target/` is on), or under
//! `$NVME_BACKING_BENCH_DIR` if set: not tmpfs, so a cold page cache means reading the device.
//!
//! - `first_touch/{read,write}_{cold,warm}[_seq]/…`: time per page for the first access to
//!   [`BATCH`] distinct pages of a 16 MiB file, in random order (`_seq`: ascending), through a
//!   fresh paged region or a fresh kernel `mmap(MAP_SHARED)` per batch. `cold`: the file's page
//!   cache is dropped before each batch (wait for the device's reads in flight, `fdatasync`,
//!   `posix_fadvise(POSIX_FADV_DONTNEED)`, repeated until `mincore` sees no cached page; the
//!   setup printed first shows it works; `echo 1 > /proc/sys/vm/drop_caches` would drop every
//!   file's cache); `warm`: the whole file is in the page cache.
//!   `mmap` uses the kernel's default read-around (up to `read_ahead_kb` around a missing page)
//!   and fault-around (up to 16 cached neighbours mapped per read fault); `mmap_madv_random`
//!   disables read-around (`MADV_RANDOM`), so each fault reads one page like the paged region.
//!   `paged_*_evict64`: a 64-page resident limit, so every fault also evicts a clean page.
//!   After each case a count pass runs the sides' batches interleaved (same machine conditions)
//!   and prints per page: time, time relative to the first side and to `mmap`, minor and major
//!   faults, and bytes read from storage (`read_bytes` of `/proc/self/io`: shows the kernel's
//!   read-around).
//! - `crc32c/…`: CRC32C of one 4 KiB page, as the four 1 KiB blocks the region tracks and as one
//!   call: the `crc32c` crate (`page_as_…`) and `crc-fast` (`crc_fast_page_as_…`), which the
//!   region uses where the stack allows (see `src/checksum.rs`).
//! - `durable_write/…`: random writes over a 64 MiB file, each made durable: paged region with an
//!   8 MiB resident limit (`persist` of the written range, then `drain`) against a kernel
//!   mapping (`msync(MS_SYNC)` of the touched page). `x16`: 16 writes, then one drain / one
//!   `msync` of the whole mapping (the kernel writes only the dirty folios). Each side has its own
//!   file. `mmap_msync`'s file was written in 1 MiB `write`s, so its page cache holds large folios
//!   (as after readahead); `mmap_msync_4k_folios`' in 4 KiB `write`s. A store through a shared
//!   mapping dirties its whole folio and `msync` writes all of it. The kernel mappings have no
//!   resident limit, and the page cache holds every file, so the buffered paged region's faults
//!   read from the page cache; the direct one's file is dropped from the cache at setup and its
//!   faults read the device. After each variant a count pass runs the sides' rounds interleaved
//!   (same machine conditions) and prints per write: time, time relative to the first side and
//!   to `mmap_msync`, region faults, evictions, changed 1 KiB blocks written, bytes `pwrite`n,
//!   the bytes written to the block device holding the files (its sysfs `stat`: all processes,
//!   so other I/O shows up too), and how much of the side's file the page cache then holds.
//!
//! Paged sides are named `paged_<fault mode>_<io mode>`. Direct I/O (`IoMode::Direct`) is
//! measured, in the fault modes listed in [`DIRECT`], in the cold first-touch cases (no page cache
//! helps either side) and the durable writes (where buffered write-back dirties page-cache
//! folios). Every other paged side is buffered, so `warm` means a page-cache hit.
//!
//! Adding a fault mode: list it in [`MODES`] and construct it in [`paged`]; every paged
//! measurement goes through those two.

use std::fs::File;
use std::hint::black_box;
use std::io::Write as _;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::os::unix::io::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use nvme_backing::{PagedRegion, BLOCK_SIZE, PAGE_SIZE};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};

use nvme_backing::{FaultMode as Mode, IoMode as Io};

/// Every fault mode measured with buffered I/O; each paged measurement runs once per entry.
const MODES: &[Mode] = &[Mode::Signal, Mode::Userfaultfd];
/// The fault modes also measured with direct I/O where no page cache is involved (cold first
/// touch, durable writes).
const DIRECT: &[Mode] = &[Mode::Signal];

/// The paged sides of a measurement: every mode buffered, and with `direct` the [`DIRECT`] modes
/// with direct I/O, each direct side right after its buffered twin.
fn paged_sides(direct: bool) -> Vec<(Mode, Io)> {
    let mut sides = Vec::new();
    for &mode in MODES {
        sides.push((mode, Io::Buffered));
        if direct && DIRECT.contains(&mode) {
            sides.push((mode, Io::Direct));
        }
    }
    sides
}

/// Opens the paged region every measurement uses (`path` exists and holds at least `len` bytes)
/// with exactly the I/O mode asked for (direct fails if the file system cannot do it).
fn paged(mode: Mode, io: Io, path: &Path, len: usize, limit: usize) -> PagedRegion {
    let r = PagedRegion::options()
        .fault_mode(mode)
        .io_mode(io)
        .open(path, len, limit)
        .expect("open the paged region");
    assert_eq!(r.io_mode(), io);
    r
}

fn mode_name(mode: Mode, io: Io) -> String {
    format!("paged_{mode:?}_{io:?}").to_lowercase()
}

/// Pages in the first-touch file (16 MiB).
const FAULT_PAGES: usize = 4096;
/// Distinct pages touched per fresh mapping.
const BATCH: usize = 256;
/// Batches per side in the first-touch count pass.
const PASS_BATCHES: usize = 8;
/// Resident limit of the evicting first-touch variant.
const EVICT_LIMIT: usize = 64;
/// The durable-write file (64 MiB) and the paged region's resident limit (8 MiB).
const DURABLE_LEN: usize = 64 << 20;
const DURABLE_LIMIT: usize = (8 << 20) / PAGE_SIZE;
/// Writes per drain in the batched variant.
const BATCHED: usize = 16;
/// Writes per variant in the count pass after each durable-write pair.
const COUNT_WRITES: usize = 400;

/// The benchmark filter given on the command line (criterion's positional `FILTER`), if any.
fn filter() -> Option<String> {
    // Criterion options that take a value (the value is not the filter).
    const WITH_VALUE: &[&str] = &[
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "-c",
        "--color",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
        "--format",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a.trim_start_matches('^').trim_end_matches('$').to_owned());
        }
    }
    None
}

/// Whether a count pass over benchmarks named `ids` should run: not in criterion's `--test` or
/// `--list` mode, and no filter or one of them contains it (the filter is read as a plain
/// substring, not criterion's regular expression).
fn wanted(ids: impl IntoIterator<Item = String>) -> bool {
    static FILTER: OnceLock<Option<String>> = OnceLock::new();
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return false;
    }
    match FILTER.get_or_init(filter) {
        None => true,
        Some(f) => ids.into_iter().any(|id| id.contains(f.as_str())),
    }
}

/// Times [`Backing::drop_cache`] waited 100 µs for device reads in flight.
static READ_WAITS: AtomicU64 = AtomicU64::new(0);
/// Times [`Backing::drop_cache`] had to try again.
static DROP_RETRIES: AtomicU64 = AtomicU64::new(0);

/// A deterministic generator (proptest's seeded ChaCha, a dev-dependency already).
struct Rng(TestRng);

impl Rng {
    fn new(seed: u8) -> Rng {
        let mut seed32 = [0u8; 32];
        seed32[0] = seed;
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &seed32))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A random offset of a `size`-aligned `size`-byte range in `len` bytes.
    fn offset(&mut self, len: usize, size: usize) -> usize {
        (self.next() % (len / size) as u64) as usize * size
    }
}

/// Where the backing files go: on disk, not tmpfs.
fn bench_dir() -> PathBuf {
    std::env::var_os("NVME_BACKING_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

/// A backing file filled with a byte pattern (allocated on disk, not sparse).
struct Backing {
    _dir: tempfile::TempDir,
    path: PathBuf,
    file: File,
    len: usize,
}

impl Backing {
    /// A `len`-byte file written with `chunk`-byte `write`s (the page cache keeps the folio size
    /// of the writes: a store through a shared mapping dirties, and `msync` writes, a whole folio).
    fn new(name: &str, len: usize, chunk: usize) -> Backing {
        let root = bench_dir();
        std::fs::create_dir_all(&root).expect("create the bench directory");
        let dir = tempfile::Builder::new()
            .prefix("nvme-backing-bench")
            .tempdir_in(&root)
            .expect("create a temporary directory");
        let path = dir.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create the backing file");
        let chunk: Vec<u8> = (0..chunk).map(|i| (i % 251) as u8).collect();
        for _ in 0..len / chunk.len() {
            file.write_all(&chunk).expect("fill the backing file");
        }
        file.sync_all().expect("sync the backing file");
        Backing {
            _dir: dir,
            path,
            file,
            len,
        }
    }

    /// Writes back dirty pages and drops the file's page cache. Read-ahead still in flight would
    /// repopulate it (`mincore` does not see pages under read), so first wait (at most 100 ms)
    /// until the device has no read in flight; then retry until `mincore` finds no page cached.
    fn drop_cache(&self) {
        for _ in 0..1000 {
            match device_reads_in_flight(&self.path) {
                Some(n) if n > 0 => {
                    READ_WAITS.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(100));
                }
                _ => break,
            }
        }
        for _ in 0..1000 {
            self.file.sync_data().expect("fdatasync");
            // SAFETY: advice on an open descriptor; no memory is passed.
            let rc = unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0, "posix_fadvise(DONTNEED) failed");
            if self.cached_pages() == 0 {
                return;
            }
            DROP_RETRIES.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(100));
        }
        panic!("the page cache of {} could not be dropped", self.path.display());
    }

    /// Reads the whole file, so it is in the page cache.
    fn warm_cache(&self) {
        let mut buf = vec![0u8; 1 << 20];
        for off in (0..self.len).step_by(buf.len()) {
            self.file
                .read_exact_at(&mut buf, off as u64)
                .expect("read the backing file");
        }
    }

    /// Pages of the file in the page cache (`mincore` of a fresh mapping).
    fn cached_pages(&self) -> usize {
        let map = Mapping::new(&self.file, self.len, false, None);
        let mut vec = vec![0u8; self.len / PAGE_SIZE];
        // SAFETY: `map` covers `len` bytes; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(map.ptr.cast(), self.len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore failed");
        vec.iter().filter(|&&v| v & 1 != 0).count()
    }
}

/// A kernel `mmap(MAP_SHARED)` of a file, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(file: &File, len: usize, writable: bool, advice: Option<libc::c_int>) -> Mapping {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of an open file, owned by the returned value.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap failed");
        if let Some(advice) = advice {
            // SAFETY: advice on the mapping made above.
            assert_eq!(unsafe { libc::madvise(ptr, len, advice) }, 0, "madvise failed");
        }
        Mapping { ptr: ptr.cast(), len }
    }

    /// `msync(MS_SYNC)` of `[offset, offset + len)` rounded out to pages.
    fn msync(&self, offset: usize, len: usize) {
        let start = offset / PAGE_SIZE * PAGE_SIZE;
        let end = (offset + len).next_multiple_of(PAGE_SIZE);
        // SAFETY: the range lies in the mapping and is page-aligned.
        let rc = unsafe { libc::msync(self.ptr.add(start).cast(), end - start, libc::MS_SYNC) };
        assert_eq!(rc, 0, "msync failed");
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Reads one byte of each page in `pages` (indices into the mapping at `base`).
fn touch_read(base: *const u8, pages: &[usize]) -> u64 {
    let mut sum = 0u64;
    for &p in pages {
        // SAFETY: the caller maps every listed page at `base`.
        sum = sum.wrapping_add(unsafe { base.add(p * PAGE_SIZE).read_volatile() } as u64);
    }
    sum
}

/// Stores one byte to each page in `pages`, without reading it first.
fn touch_write(base: *mut u8, pages: &[usize]) {
    for &p in pages {
        // SAFETY: the caller maps every listed page writable at `base`.
        unsafe { base.add(p * PAGE_SIZE).write_volatile(p as u8) };
    }
}

/// Touches exactly `iters` pages, [`BATCH`] at a time, and sums the times `batch` reports.
fn per_page(iters: u64, batches: &[Vec<usize>], mut batch: impl FnMut(&[usize]) -> Duration) -> Duration {
    let mut left = iters as usize;
    let mut total = Duration::ZERO;
    for pages in batches.iter().cycle() {
        if left == 0 {
            break;
        }
        let n = pages.len().min(left);
        total += batch(&pages[..n]);
        left -= n;
    }
    total
}

#[derive(Clone, Copy, PartialEq)]
enum Access {
    Read,
    Write,
}

/// One first-touch case: access, cache state, page order.
struct Case {
    access: Access,
    cold: bool,
    sequential: bool,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{}_{}{}",
            if self.access == Access::Read {
                "read"
            } else {
                "write"
            },
            if self.cold { "cold" } else { "warm" },
            if self.sequential { "_seq" } else { "" }
        )
    }
}

/// Page batches: a random permutation of the file's pages cut into [`BATCH`]-page chunks, or
/// ascending runs.
fn batches(sequential: bool) -> Vec<Vec<usize>> {
    let mut pages: Vec<usize> = (0..FAULT_PAGES).collect();
    if !sequential {
        let mut rng = Rng::new(7);
        for i in (1..pages.len()).rev() {
            pages.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
    }
    pages.chunks(BATCH).map(<[usize]>::to_vec).collect()
}

fn first_touch(c: &mut Criterion) {
    let b = Backing::new("fault", FAULT_PAGES * PAGE_SIZE, 1 << 20);
    let cases = [
        (Access::Read, true, false),
        (Access::Read, true, true),
        (Access::Read, false, false),
        (Access::Write, true, false),
        (Access::Write, false, false),
    ]
    .map(|(access, cold, sequential)| Case {
        access,
        cold,
        sequential,
    });
    let mut g = c.benchmark_group("first_touch");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for case in &cases {
        let batches = batches(case.sequential);
        if !case.cold {
            b.warm_cache();
        }
        let mut sides: Vec<(String, Batch<'_>)> = Vec::new();
        let mut limits = vec![("", FAULT_PAGES)];
        if !case.cold && case.access == Access::Read {
            limits.push(("_evict64", EVICT_LIMIT));
        }
        for (mode, io) in paged_sides(case.cold) {
            for &(suffix, limit) in &limits {
                let name = format!("{}{suffix}", mode_name(mode, io));
                sides.push((name, paged_batch(&b, case, mode, io, limit)));
            }
        }
        sides.push(("mmap".to_owned(), kernel_batch(&b, case, None)));
        if case.cold && !case.sequential {
            let advice = Some(libc::MADV_RANDOM);
            sides.push(("mmap_madv_random".to_owned(), kernel_batch(&b, case, advice)));
        }
        for (name, batch) in &mut sides {
            g.bench_function(BenchmarkId::new(case.name(), name.as_str()), |bench| {
                bench.iter_custom(|iters| per_page(iters, &batches, &mut *batch))
            });
        }
        if wanted(
            sides
                .iter()
                .map(|(n, _)| format!("first_touch/{}/{n}", case.name())),
        ) {
            touch_pass(case, &batches, &mut sides);
        }
    }
    g.finish();
}

/// One first-touch batch: set up, time touching the given pages, tear down; returns the time.
type Batch<'a> = Box<dyn FnMut(&[usize]) -> Duration + 'a>;

fn paged_batch<'a>(b: &'a Backing, case: &'a Case, mode: Mode, io: Io, limit: usize) -> Batch<'a> {
    Box::new(move |pages| {
        let r = paged(mode, io, &b.path, b.len, limit);
        if case.cold {
            b.drop_cache();
        }
        let t = Instant::now();
        match case.access {
            Access::Read => {
                black_box(touch_read(r.as_ptr(), pages));
            }
            Access::Write => touch_write(r.as_ptr(), pages),
        }
        let d = t.elapsed();
        assert_eq!(r.stats().pages_faulted, pages.len() as u64);
        r.abandon();
        d
    })
}

fn kernel_batch<'a>(b: &'a Backing, case: &'a Case, advice: Option<libc::c_int>) -> Batch<'a> {
    Box::new(move |pages| {
        let m = Mapping::new(&b.file, b.len, case.access == Access::Write, advice);
        if case.cold {
            b.drop_cache();
        }
        let t = Instant::now();
        match case.access {
            Access::Read => {
                black_box(touch_read(m.ptr, pages));
            }
            Access::Write => touch_write(m.ptr, pages),
        }
        let d = t.elapsed();
        drop(m);
        if case.access == Access::Write {
            // Do not let dirty pages pile up for background writeback.
            b.file.sync_data().expect("fdatasync");
        }
        d
    })
}

/// Minor and major page faults of this thread so far.
fn faults() -> (u64, u64) {
    // SAFETY: `ru` is plain data filled by the call.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(
            libc::getrusage(libc::RUSAGE_THREAD, &mut ru),
            0,
            "getrusage failed"
        );
        ru
    };
    (ru.ru_minflt as u64, ru.ru_majflt as u64)
}

/// Bytes this process has caused to be read from storage so far (`read_bytes` of
/// `/proc/self/io`: readahead and read-around included, page-cache hits not).
fn storage_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("read /proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("read_bytes in /proc/self/io")
}

/// Runs [`PASS_BATCHES`] batches per side, the sides interleaved batch by batch (so they share the
/// machine's conditions), and prints per touched page: time, time relative to the first side,
/// minor and major faults and bytes read from storage (these three include each batch's setup
/// and teardown).
fn touch_pass(case: &Case, batches: &[Vec<usize>], sides: &mut [(String, Batch<'_>)]) {
    let mut sums = vec![(Duration::ZERO, 0u64, 0u64, 0u64); sides.len()];
    for pages in batches.iter().cycle().take(PASS_BATCHES) {
        for ((_, batch), sum) in sides.iter_mut().zip(&mut sums) {
            let ((min0, maj0), rd0) = (faults(), storage_read());
            sum.0 += batch(pages);
            let (min1, maj1) = faults();
            sum.1 += min1 - min0;
            sum.2 += maj1 - maj0;
            sum.3 += storage_read() - rd0;
        }
    }
    let n = batches
        .iter()
        .cycle()
        .take(PASS_BATCHES)
        .map(Vec::len)
        .sum::<usize>() as f64;
    println!(
        "\nfirst_touch/{} count pass: {n} pages per side, interleaved; per page:\n\
         {:<24} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        case.name(),
        "",
        "us",
        "/ first",
        "/ mmap",
        "minflt",
        "majflt",
        "read B",
    );
    let first = sums[0].0.as_secs_f64();
    let mmap = sides
        .iter()
        .position(|(name, _)| name == "mmap")
        .map(|i| sums[i].0.as_secs_f64());
    for ((name, _), (t, min, maj, rd)) in sides.iter().zip(&sums) {
        println!(
            "{:<24} {:>8.2} {:>7.2}x {:>8} {:>8.2} {:>8.3} {:>10.0}",
            name,
            t.as_secs_f64() * 1e6 / n,
            t.as_secs_f64() / first,
            ratio(t.as_secs_f64(), mmap),
            *min as f64 / n,
            *maj as f64 / n,
            *rd as f64 / n,
        );
    }
    println!();
}

/// `t / reference` formatted as a ratio, or `-` without a reference.
fn ratio(t: f64, reference: Option<f64>) -> String {
    reference.map_or("-".to_owned(), |r| format!("{:.2}x", t / r))
}

fn crc(c: &mut Criterion) {
    let page: Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 31 + 7) as u8).collect();
    let mut g = c.benchmark_group("crc32c");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Bytes(PAGE_SIZE as u64));
    g.bench_function("page_as_4x1KiB_blocks", |bench| {
        bench.iter(|| {
            for block in black_box(&page[..]).chunks_exact(BLOCK_SIZE) {
                black_box(crc32c::crc32c(block));
            }
        })
    });
    g.bench_function("page_as_one_call", |bench| {
        bench.iter(|| black_box(crc32c::crc32c(black_box(&page[..]))))
    });
    // `crc-fast`, which the region uses where the stack allows (same values bit for bit).
    g.bench_function("crc_fast_page_as_4x1KiB_blocks", |bench| {
        bench.iter(|| {
            for block in black_box(&page[..]).chunks_exact(BLOCK_SIZE) {
                black_box(crc_fast::crc32_iscsi(block));
            }
        })
    });
    g.bench_function("crc_fast_page_as_one_call", |bench| {
        bench.iter(|| black_box(crc_fast::crc32_iscsi(black_box(&page[..]))))
    });
    g.finish();
}

/// The sysfs directory of the block device holding `path`, if it is one.
fn block_dev_dir(path: &Path) -> String {
    let dev = std::fs::metadata(path).expect("stat the backing file").dev();
    format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev))
}

/// Reads in flight on the block device holding `path` (all processes), if it is one.
fn device_reads_in_flight(path: &Path) -> Option<u64> {
    let inflight = std::fs::read_to_string(format!("{}/inflight", block_dev_dir(path))).ok()?;
    inflight.split_whitespace().next()?.parse().ok()
}

/// Bytes written to the block device holding `path` so far, by every process (field 7 of its
/// `stat`, sectors written), or `None` if it has no such statistics (not a block device).
fn device_written(path: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("{}/stat", block_dev_dir(path))).ok()?;
    Some(stat.split_whitespace().nth(6)?.parse::<u64>().ok()? * 512)
}

/// One durable-write variant: `size`-byte random writes, `k` per drain.
#[derive(Clone, Copy)]
struct Durable {
    size: usize,
    k: usize,
}

impl Durable {
    fn name(self) -> String {
        let size = if self.size >= 1024 {
            format!("{}KiB", self.size / 1024)
        } else {
            format!("{}B", self.size)
        };
        format!("{size}_x{}", self.k)
    }

    /// Writes `size` bytes at a random offset: a fresh counter first, so the bytes always change.
    fn write(self, base: *mut u8, rng: &mut Rng, counter: &mut u64) -> usize {
        let off = rng.offset(DURABLE_LEN, self.size);
        *counter += 1;
        // SAFETY: `off + size <= DURABLE_LEN`, the mapped length; `size >= 8` and offsets are
        // 8-aligned.
        unsafe {
            let p = base.add(off);
            std::ptr::write_bytes(p, *counter as u8, self.size);
            p.cast::<u64>().write(*counter);
        }
        off
    }
}

/// What one side of the durable-write comparison writes through.
enum Target {
    Paged(PagedRegion),
    Kernel(Mapping),
}

/// One side of the durable-write comparison, with its own file (a region needs one to itself).
struct Side {
    name: String,
    target: Target,
    backing: Backing,
    rng: Rng,
}

impl Side {
    fn paged(mode: Mode, io: Io) -> Side {
        let name = mode_name(mode, io);
        let backing = Backing::new(&name, DURABLE_LEN, 1 << 20);
        if io == Io::Direct {
            // Writing the file filled the page cache; direct I/O never uses (or refills) it.
            backing.drop_cache();
        }
        let r = paged(mode, io, &backing.path, DURABLE_LEN, DURABLE_LIMIT);
        // Start with a full resident set, so every measured fault also evicts.
        black_box(touch_read(r.as_ptr(), &(0..DURABLE_LIMIT).collect::<Vec<_>>()));
        Side {
            name,
            target: Target::Paged(r),
            backing,
            rng: Rng::new(1),
        }
    }

    fn kernel(name: &str, chunk: usize) -> Side {
        let backing = Backing::new(name, DURABLE_LEN, chunk);
        Side {
            name: name.to_owned(),
            target: Target::Kernel(Mapping::new(&backing.file, DURABLE_LEN, true, None)),
            backing,
            rng: Rng::new(1),
        }
    }

    /// `v.k` writes of `v.size` bytes, made durable.
    fn round(&mut self, v: Durable, counter: &mut u64) {
        match &self.target {
            Target::Paged(r) => {
                for _ in 0..v.k {
                    let off = v.write(r.as_ptr(), &mut self.rng, counter);
                    r.persist(off, v.size).expect("persist");
                }
                r.drain().expect("drain");
            }
            Target::Kernel(m) if v.k == 1 => {
                let off = v.write(m.ptr, &mut self.rng, counter);
                m.msync(off, v.size);
            }
            Target::Kernel(m) => {
                for _ in 0..v.k {
                    v.write(m.ptr, &mut self.rng, counter);
                }
                m.msync(0, m.len);
            }
        }
    }

    fn stats(&self) -> Option<nvme_backing::PagedStats> {
        match &self.target {
            Target::Paged(r) => Some(r.stats()),
            Target::Kernel(_) => None,
        }
    }
}

fn durable_write(c: &mut Criterion) {
    let mut sides: Vec<Side> = paged_sides(true)
        .into_iter()
        .map(|(m, io)| Side::paged(m, io))
        .collect();
    sides.push(Side::kernel("mmap_msync", 1 << 20));
    sides.push(Side::kernel("mmap_msync_4k_folios", PAGE_SIZE));
    let variants = [
        Durable { size: 8, k: 1 },
        Durable { size: 1024, k: 1 },
        Durable { size: 8, k: BATCHED },
    ];
    let mut g = c.benchmark_group("durable_write");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut counter = 0u64;
    for v in variants {
        g.throughput(Throughput::Elements(v.k as u64));
        for side in &mut sides {
            g.bench_function(BenchmarkId::new(v.name(), &side.name), |bench| {
                bench.iter(|| side.round(v, &mut counter))
            });
        }
        if wanted(
            sides
                .iter()
                .map(|side| format!("durable_write/{}/{}", v.name(), side.name)),
        ) {
            count_pass(&mut sides, v, &mut counter);
        }
    }
    g.finish();
}

/// Runs [`COUNT_WRITES`] writes per side, the sides' rounds interleaved (so they share the
/// machine's conditions), and prints time and counts per write.
fn count_pass(sides: &mut [Side], v: Durable, counter: &mut u64) {
    let rounds = COUNT_WRITES / v.k;
    let before: Vec<_> = sides.iter().map(Side::stats).collect();
    let mut time = vec![Duration::ZERO; sides.len()];
    let mut device = vec![Some(0u64); sides.len()];
    for _ in 0..rounds {
        for (i, side) in sides.iter_mut().enumerate() {
            let d0 = device_written(&side.backing.path);
            let t = Instant::now();
            side.round(v, counter);
            time[i] += t.elapsed();
            let d1 = device_written(&side.backing.path);
            device[i] = match (device[i], d0, d1) {
                (Some(sum), Some(d0), Some(d1)) => Some(sum + (d1 - d0)),
                _ => None,
            };
        }
    }
    let n = (rounds * v.k) as f64;
    let first = time[0].as_secs_f64();
    println!(
        "\ndurable_write/{} count pass: {} writes per side, interleaved; per write:\n\
         {:<22} {:>8} {:>8} {:>8} {:>7} {:>9} {:>7} {:>8} {:>9} {:>9}",
        v.name(),
        rounds * v.k,
        "",
        "us",
        "/ first",
        "/ mmap",
        "faults",
        "evictions",
        "blocks",
        "pwrite B",
        "device B",
        "cache MiB",
    );
    let mmap = sides
        .iter()
        .position(|side| side.name == "mmap_msync")
        .map(|i| time[i].as_secs_f64());
    for (i, side) in sides.iter().enumerate() {
        let per = |f: fn(&nvme_backing::PagedStats) -> u64| match (&before[i], side.stats()) {
            (Some(a), Some(b)) => format!("{:.3}", (f(&b) - f(a)) as f64 / n),
            _ => "-".to_owned(),
        };
        println!(
            "{:<22} {:>8.1} {:>7.2}x {:>8} {:>7} {:>9} {:>7} {:>8} {:>9} {:>9.1}",
            side.name,
            time[i].as_secs_f64() * 1e6 / n,
            time[i].as_secs_f64() / first,
            ratio(time[i].as_secs_f64(), mmap),
            per(|s| s.pages_faulted),
            per(|s| s.evictions),
            per(|s| s.blocks_written),
            per(|s| s.writeback_bytes),
            device[i].map_or("-".to_owned(), |d| format!("{:.0}", d as f64 / n)),
            (side.backing.cached_pages() * PAGE_SIZE) as f64 / (1 << 20) as f64,
        );
    }
    println!(
        "(device B: bytes written to the whole disk during the side's rounds, all processes; \
         cache MiB: the side's file in the page cache after the pass)\n"
    );
}

/// Prints where the files live and checks that dropping the page cache works here.
fn print_setup() {
    let dir = bench_dir();
    println!(
        "backing files under {} (override: NVME_BACKING_BENCH_DIR)",
        dir.display()
    );
    let b = Backing::new("check", FAULT_PAGES * PAGE_SIZE, 1 << 20);
    b.warm_cache();
    let warm = b.cached_pages();
    b.drop_cache();
    let cold = b.cached_pages();
    println!(
        "page cache of the {} MiB test file: {warm}/{FAULT_PAGES} pages after reading it, \
         {cold}/{FAULT_PAGES} after fdatasync + POSIX_FADV_DONTNEED",
        b.len >> 20
    );
    if cold > FAULT_PAGES / 100 {
        println!("warning: the page cache could not be dropped: the cold cases are not cold");
    }
    let sys = block_dev_dir(&b.path);
    // A partition's queue settings are its disk's.
    let ra = ["queue", "../queue"]
        .iter()
        .find_map(|q| std::fs::read_to_string(format!("{sys}/{q}/read_ahead_kb")).ok());
    match ra {
        Some(ra) => println!("read_ahead_kb of the device ({sys}): {}", ra.trim()),
        None => println!("read_ahead_kb: unknown (no block device at {sys})"),
    }
    println!(
        "paged region modes: {}",
        paged_sides(true)
            .into_iter()
            .map(|(m, io)| mode_name(m, io))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn config() -> Criterion {
    Criterion::default().without_plots()
}

fn main() {
    print_setup();
    // What `criterion_group!` + `criterion_main!` expand to, without the undocumented `pub fn`.
    let mut c = config().configure_from_args();
    first_touch(&mut c);
    crc(&mut c);
    durable_write(&mut c);
    c.final_summary();
    println!(
        "page-cache drops: {} waits of 100 us for device reads in flight, {} retries because pages \
         were still cached",
        READ_WAITS.load(Ordering::Relaxed),
        DROP_RETRIES.load(Ordering::Relaxed)
    );
}
