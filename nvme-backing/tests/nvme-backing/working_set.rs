//! A working set 8x the resident limit: eviction writes dirty pages back and reloads them intact.

use nvme_backing::{FaultMode, PagedRegion, PAGE_SIZE};

const LIMIT: usize = 8;
const PAGES: usize = 8 * LIMIT;

fn word(page: usize, i: usize, round: u64) -> u64 {
    (page as u64) << 32 | (i as u64) << 8 | round
}

fn working_set_eight_times_the_limit(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let len = PAGES * PAGE_SIZE;
    let r = PagedRegion::create_with_mode(&path, len, LIMIT, mode).unwrap();
    let base = r.as_ptr().cast::<u64>();
    for round in 1..=2u64 {
        for p in 0..PAGES {
            for i in 0..PAGE_SIZE / 8 {
                // SAFETY: in bounds and aligned; single-threaded.
                unsafe { base.add(p * PAGE_SIZE / 8 + i).write(word(p, i, round)) };
            }
            assert!(r.resident_pages() <= LIMIT);
        }
    }
    let s = r.stats();
    assert_eq!(s.pages_faulted, 2 * PAGES as u64);
    assert_eq!(s.evictions, 2 * PAGES as u64 - LIMIT as u64);
    // Every eviction wrote a dirty page back.
    assert_eq!(s.pages_written, s.evictions);

    // Reading back through the region (more faults and clean evictions).
    for p in (0..PAGES).rev() {
        for i in (0..PAGE_SIZE / 8).step_by(37) {
            // SAFETY: as above.
            assert_eq!(unsafe { base.add(p * PAGE_SIZE / 8 + i).read() }, word(p, i, 2));
        }
    }
    r.flush_all().unwrap();
    r.drain().unwrap();

    let file = std::fs::read(&path).unwrap();
    for p in 0..PAGES {
        for i in 0..PAGE_SIZE / 8 {
            let at = p * PAGE_SIZE + i * 8;
            assert_eq!(
                u64::from_ne_bytes(file[at..at + 8].try_into().unwrap()),
                word(p, i, 2)
            );
        }
    }
}

fn accesses_straddling_a_page_boundary_progress_with_two_frames(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let pages = 16;
    let r = PagedRegion::create_with_mode(&path, pages * PAGE_SIZE, 2, mode).unwrap();
    for p in 1..pages {
        let at = p * PAGE_SIZE - 4;
        // SAFETY: in bounds; an unaligned u64 spanning pages p - 1 and p.
        unsafe {
            r.as_ptr()
                .add(at)
                .cast::<u64>()
                .write_unaligned(p as u64 * 0x0101_0101_0101_0101)
        };
    }
    for p in 1..pages {
        let at = p * PAGE_SIZE - 4;
        // SAFETY: as above.
        let v = unsafe { r.as_ptr().add(at).cast::<u64>().read_unaligned() };
        assert_eq!(v, p as u64 * 0x0101_0101_0101_0101);
    }
    assert!(r.resident_pages() <= 2);
    r.flush_all().unwrap();
    let file = std::fs::read(&path).unwrap();
    for p in 1..pages {
        let at = p * PAGE_SIZE - 4;
        assert_eq!(
            u64::from_ne_bytes(file[at..at + 8].try_into().unwrap()),
            p as u64 * 0x0101_0101_0101_0101
        );
    }
}

in_both_modes!(
    working_set_eight_times_the_limit,
    accesses_straddling_a_page_boundary_progress_with_two_frames
);
