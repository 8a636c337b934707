//! Cost of a page fault in each fault mode, measured in the same run (rounds interleaved; the
//! median and the minimum over the rounds, and their ratios userfaultfd / signal: on a loaded
//! machine the minimum is the least disturbed run).
//!
//! `cargo run --release -p nvme-backing --example fault_cost [pages] [rounds]`
//!
//! Cases, each touching one byte of every page of a fresh region over a file in the page cache
//! (`/dev/shm` when present):
//! - `read` / `write`: first touch, no eviction (resident limit = page count);
//! - `read+evict` / `write+evict`: resident limit 64, so each fault also evicts a clean page
//!   (read) or a dirty one (write: one 1 KiB block written back);
//! - `read, 2 threads`: two threads fault disjoint halves at once (time per fault over both).

use std::time::Instant;

use nvme_backing::{FaultMode, PagedRegion, PAGE_SIZE};

#[derive(Clone, Copy)]
enum Case {
    Read,
    Write,
    ReadEvict,
    WriteEvict,
    ReadTwoThreads,
}

impl Case {
    const ALL: [Case; 5] = [
        Case::Read,
        Case::Write,
        Case::ReadEvict,
        Case::WriteEvict,
        Case::ReadTwoThreads,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Read => "read",
            Case::Write => "write",
            Case::ReadEvict => "read+evict",
            Case::WriteEvict => "write+evict",
            Case::ReadTwoThreads => "read, 2 threads",
        }
    }
}

/// Touches every page of `[first, first + count)`; returns a value depending on what was read.
fn touch(base: usize, first: usize, count: usize, write: bool) -> u64 {
    let mut sum = 0u64;
    for p in first..first + count {
        let at = (base + p * PAGE_SIZE + 8) as *mut u8;
        if write {
            // SAFETY: inside the region; the fault handler loads the page.
            unsafe { at.write_volatile(p as u8 | 1) };
        } else {
            // SAFETY: as above.
            sum += u64::from(unsafe { at.read_volatile() });
        }
    }
    sum
}

/// Microseconds per fault of one run of `case` in `mode`.
fn run(path: &std::path::Path, pages: usize, mode: FaultMode, case: Case) -> f64 {
    let limit = match case {
        Case::ReadEvict | Case::WriteEvict => 64,
        _ => pages,
    };
    let r = PagedRegion::open_with_mode(path, pages * PAGE_SIZE, limit, mode).expect("open");
    let base = r.as_ptr() as usize;
    let write = matches!(case, Case::Write | Case::WriteEvict);
    let start = Instant::now();
    let sum = match case {
        Case::ReadTwoThreads => std::thread::scope(|s| {
            let half = pages / 2;
            let a = s.spawn(move || touch(base, 0, half, false));
            let b = touch(base, half, pages - half, false);
            a.join().unwrap() + b
        }),
        _ => touch(base, 0, pages, write),
    };
    let elapsed = start.elapsed();
    std::hint::black_box(sum);
    assert_eq!(r.stats().pages_faulted, pages as u64);
    // Do not time or keep the write-back of the no-eviction write case.
    r.abandon();
    elapsed.as_secs_f64() * 1e6 / pages as f64
}

/// (median, minimum)
fn summary(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pages: usize = args.next().map_or(1024, |a| a.parse().expect("pages"));
    let rounds: usize = args.next().map_or(31, |a| a.parse().expect("rounds"));
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let path = dir.path().join("backing");
    let contents: Vec<u8> = (0..pages * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &contents).expect("write the backing file");

    let modes = [FaultMode::Signal, FaultMode::Userfaultfd];
    println!("{pages} pages per run, {rounds} rounds; microseconds per fault, median | minimum");
    println!(
        "{:<16} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "case", "signal", "uffd", "ratio", "signal", "uffd", "ratio"
    );
    for case in Case::ALL {
        let mut times = [vec![], vec![]];
        // One warm-up run of each mode, then interleaved rounds.
        for mode in modes {
            run(&path, pages, mode, case);
        }
        for _ in 0..rounds {
            for (i, mode) in modes.into_iter().enumerate() {
                times[i].push(run(&path, pages, mode, case));
            }
        }
        let (signal, signal_min) = summary(&mut times[0]);
        let (uffd, uffd_min) = summary(&mut times[1]);
        println!(
            "{:<16} {:>8.2} {:>8.2} {:>8.2} | {:>8.2} {:>8.2} {:>8.2}",
            case.name(),
            signal,
            uffd,
            uffd / signal,
            signal_min,
            uffd_min,
            uffd_min / signal_min
        );
    }
}
