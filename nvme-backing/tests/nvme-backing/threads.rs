//! Several threads fault and write different pages at once, with clock eviction active.

use nvme_backing::{FaultMode, PagedRegion, PAGE_SIZE};
use std::sync::atomic::{AtomicBool, Ordering};

const THREADS: usize = 4;
const PAGES_PER_THREAD: usize = 32;
const PAGES: usize = THREADS * PAGES_PER_THREAD;

fn value(page: usize, i: usize, round: usize) -> u64 {
    ((page * 1_000_003 + i) * 7 + round) as u64
}

fn run(mode: FaultMode, limit: usize, evictor: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let r = PagedRegion::create_with_mode(&path, PAGES * PAGE_SIZE, limit, mode).unwrap();
    let base = r.as_ptr() as usize;
    let stop = AtomicBool::new(false);
    let rounds = 3;
    std::thread::scope(|s| {
        let ev = evictor.then(|| {
            s.spawn(|| {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += r.evict_to(limit / 2).unwrap();
                    r.flush_all().unwrap();
                }
                n
            })
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let base = base as *mut u64;
                    for round in 0..rounds {
                        // Interleave so that threads hit pages spread over the whole region.
                        for k in 0..PAGES_PER_THREAD {
                            let p = k * THREADS + t;
                            for i in (0..PAGE_SIZE / 8).step_by(8) {
                                // SAFETY: in bounds, aligned; each page belongs to one thread.
                                unsafe { base.add(p * PAGE_SIZE / 8 + i).write(value(p, i, round)) };
                            }
                        }
                        for k in 0..PAGES_PER_THREAD {
                            let p = k * THREADS + t;
                            for i in (0..PAGE_SIZE / 8).step_by(8) {
                                // SAFETY: as above.
                                let v = unsafe { base.add(p * PAGE_SIZE / 8 + i).read() };
                                assert_eq!(v, value(p, i, round), "page {p} word {i}");
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(ev) = ev {
            ev.join().unwrap();
        }
    });
    assert!(r.resident_pages() <= limit);
    let stats = r.stats();
    assert!(stats.evictions > 0 || limit >= PAGES);
    r.flush_all().unwrap();
    r.drain().unwrap();
    let file = std::fs::read(&path).unwrap();
    for p in 0..PAGES {
        for i in (0..PAGE_SIZE / 8).step_by(8) {
            let at = p * PAGE_SIZE + i * 8;
            assert_eq!(
                u64::from_ne_bytes(file[at..at + 8].try_into().unwrap()),
                value(p, i, rounds - 1)
            );
        }
    }
}

fn four_threads_without_eviction(mode: FaultMode) {
    run(mode, PAGES, false);
}

fn four_threads_with_clock_eviction(mode: FaultMode) {
    run(mode, 16, false);
}

fn four_threads_with_a_tiny_resident_set(mode: FaultMode) {
    // Fewer frames than threads: faulting threads wait for each other's frames.
    run(mode, 2, false);
}

fn four_threads_with_concurrent_explicit_eviction_and_persist(mode: FaultMode) {
    run(mode, 16, true);
}

fn four_threads_sharing_pages_lose_no_update_under_eviction(mode: FaultMode) {
    // Every thread writes its own words of every page (word i belongs to thread i % 4), while a
    // fifth thread evicts and persists: a store racing with an eviction must never be lost.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let pages = 32;
    let limit = 6;
    let r = PagedRegion::create_with_mode(&path, pages * PAGE_SIZE, limit, mode).unwrap();
    let base = r.as_ptr() as usize;
    let stop = AtomicBool::new(false);
    let words = pages * PAGE_SIZE / 8;
    std::thread::scope(|s| {
        let ev = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                r.evict_to(1).unwrap();
                r.persist(0, PAGE_SIZE * 4).unwrap();
            }
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let base = base as *mut u64;
                    for round in 1..=3u64 {
                        for i in (t..words).step_by(THREADS * 16) {
                            // SAFETY: in bounds, aligned; word i is only written by thread t.
                            unsafe { base.add(i).write(round << 32 | i as u64) };
                        }
                    }
                    for i in (t..words).step_by(THREADS * 16) {
                        // SAFETY: as above.
                        assert_eq!(unsafe { base.add(i).read() }, 3 << 32 | i as u64);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        ev.join().unwrap();
    });
    assert!(r.stats().evictions > 0);
    r.flush_all().unwrap();
    let file = std::fs::read(&path).unwrap();
    for t in 0..THREADS {
        for i in (t..words).step_by(THREADS * 16) {
            let v = u64::from_ne_bytes(file[i * 8..i * 8 + 8].try_into().unwrap());
            assert_eq!(v, 3 << 32 | i as u64, "word {i}");
        }
    }
}

in_both_modes!(
    four_threads_without_eviction,
    four_threads_with_clock_eviction,
    four_threads_with_a_tiny_resident_set,
    four_threads_with_concurrent_explicit_eviction_and_persist,
    four_threads_sharing_pages_lose_no_update_under_eviction
);
