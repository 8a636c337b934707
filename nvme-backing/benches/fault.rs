//! Fault cost of a paged region against a kernel `mmap` of the same file, and CRC32C per page.
//!
//! `cargo bench -p nvme-backing` (plain `harness = false` timing loop, no extra dependencies).
//! The backing file is in the page cache, so both sides measure fault handling, not the device.

use nvme_backing::{PagedRegion, BLOCK_SIZE, PAGE_SIZE};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PAGES: usize = 4096; // 16 MiB
const ROUNDS: usize = 5;

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..ROUNDS).map(|_| f()).min().unwrap()
}

fn touch_all(base: *const u8) -> u64 {
    let mut sum = 0u64;
    for p in 0..PAGES {
        // SAFETY: the caller maps PAGES pages at `base`.
        sum = sum.wrapping_add(unsafe { base.add(p * PAGE_SIZE).read_volatile() } as u64);
    }
    sum
}

fn per_page(d: Duration) -> f64 {
    d.as_nanos() as f64 / PAGES as f64
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let len = PAGES * PAGE_SIZE;
    std::fs::write(&path, (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();

    // Kernel mmap of the same file: a fresh mapping per round, so every page faults (minor).
    // Read faults map up to 16 neighbouring cached pages at once ("fault-around"); write faults
    // on a shared writable mapping map one page each, like the paged region.
    let kernel_write = best(|| {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // SAFETY: a fresh shared mapping of an open file, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::unix::io::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        let t = Instant::now();
        for p in 0..PAGES {
            // SAFETY: inside the mapping; writes back the value already there.
            unsafe {
                let a = base.add(p * PAGE_SIZE);
                a.write_volatile(a.read_volatile());
            }
        }
        let d = t.elapsed();
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base.cast(), len) };
        d
    });
    let kernel = best(|| {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a fresh shared read-only mapping of an open file, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::unix::io::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let t = Instant::now();
        black_box(touch_all(base.cast()));
        let d = t.elapsed();
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base, len) };
        d
    });

    // Paged region, every page fits: SIGSEGV + pread + 4 CRCs + mprotect per page.
    let paged = best(|| {
        let r = PagedRegion::open(&path, len, PAGES).unwrap();
        let t = Instant::now();
        black_box(touch_all(r.as_ptr()));
        let d = t.elapsed();
        r.abandon();
        d
    });

    // Paged region with a 64-page resident set: every fault also evicts a clean page.
    let evicting = best(|| {
        let r = PagedRegion::open(&path, len, 64).unwrap();
        let t = Instant::now();
        black_box(touch_all(r.as_ptr()));
        let d = t.elapsed();
        r.abandon();
        d
    });

    // CRC32C of one page as four 1 KiB blocks.
    let page = vec![0x5au8; PAGE_SIZE];
    let iters = 200_000;
    let crc = best(|| {
        let t = Instant::now();
        for _ in 0..iters {
            for b in 0..PAGE_SIZE / BLOCK_SIZE {
                black_box(crc32c::crc32c(black_box(
                    &page[b * BLOCK_SIZE..(b + 1) * BLOCK_SIZE],
                )));
            }
        }
        t.elapsed()
    });
    let crc_ns = crc.as_nanos() as f64 / iters as f64;

    println!(
        "fault, kernel mmap (read, fault-around) {:6.0} ns/page",
        per_page(kernel)
    );
    println!(
        "fault, kernel mmap (write, one page)  {:8.0} ns/page",
        per_page(kernel_write)
    );
    println!(
        "fault, paged region (no eviction)     {:8.0} ns/page",
        per_page(paged)
    );
    println!(
        "fault, paged region (clean eviction)  {:8.0} ns/page",
        per_page(evicting)
    );
    println!(
        "ratio paged / kernel write fault      {:8.1}x",
        per_page(paged) / per_page(kernel_write)
    );
    println!(
        "crc32c per 4 KiB page (4 blocks)      {:8.0} ns/page ({:.1} GB/s)",
        crc_ns,
        PAGE_SIZE as f64 / crc_ns
    );
}
