//! Guards the cache-line arithmetic of flushes, the per-thread flush/drain counters and the
//! non-temporal copy.

use crate::common;

use pmem_core::internals::flush::{line_span, lines_in};
use pmem_core::{thread_stats, DomainKind, RegionOptions};

#[test]
fn line_span_covers_exactly_the_touched_lines() {
    // (addr, len) -> lines
    let cases = [
        (0, 0, 0),
        (0, 1, 1),
        (0, 64, 1),
        (0, 65, 2),
        (63, 1, 1),
        (63, 2, 2),
        (1, 63, 1),
        (1, 64, 2),
        (64, 64, 1),
        (100, 200, 4), // 64..320
        (4095, 2, 2),
        (4096 + 32, 4096, 65),
    ];
    for (addr, len, lines) in cases {
        assert_eq!(lines_in(addr, len), lines, "addr {addr} len {len}");
        let (s, e) = line_span(addr, len);
        assert_eq!(s % 64, 0);
        assert_eq!(e % 64, 0);
        if len > 0 {
            assert!(s <= addr && addr - s < 64, "start {s} for {addr}");
            assert!(
                e >= addr + len && e - (addr + len) < 64,
                "end {e} for {addr}+{len}"
            );
        }
    }
}

#[test]
fn line_span_matches_brute_force() {
    for addr in 0..200usize {
        for len in 0..200usize {
            let touched: std::collections::BTreeSet<usize> = (addr..addr + len).map(|b| b / 64).collect();
            assert_eq!(lines_in(addr, len), touched.len(), "addr {addr} len {len}");
        }
    }
}

#[test]
fn flush_counts_lines_of_unaligned_ranges() {
    let dir = common::shm_dir();
    let region = RegionOptions::new()
        .force_pmem(true)
        .create(common::pool_path(&dir, "flush.pool"), 1 << 20)
        .unwrap();
    let DomainKind::CacheFlush(_) = region.domain() else {
        panic!(
            "forced pool should be in the cache-flush domain, got {:?}",
            region.domain()
        );
    };
    let base = region.data_range().start; // 4096: line-aligned
    for (off, len, lines) in [
        (0u64, 8u64, 1u64),
        (60, 8, 2),
        (1, 127, 2),
        (1, 128, 3),
        (64, 4096, 64),
        (0, 0, 0),
    ] {
        let before = thread_stats();
        region.flush(base + off, len).unwrap();
        let d = thread_stats().since(&before);
        assert_eq!(d.lines_flushed, lines, "offset {off} len {len}");
        assert_eq!(d.drains, 0);
    }
    let before = thread_stats();
    region.persist(base + 10, 100).unwrap();
    let d = thread_stats().since(&before);
    assert_eq!((d.lines_flushed, d.drains), (2, 1));
}

#[test]
fn eadr_flushes_nothing_but_still_drains() {
    let dir = common::shm_dir();
    let region = RegionOptions::new()
        .force_pmem(true)
        .eadr(true)
        .create(common::pool_path(&dir, "eadr.pool"), 1 << 20)
        .unwrap();
    assert_eq!(region.domain(), DomainKind::Eadr);
    let before = thread_stats();
    region.persist(region.data_range().start, 4096).unwrap();
    let d = thread_stats().since(&before);
    assert_eq!((d.lines_flushed, d.drains), (0, 1));
}

#[test]
fn msync_domain_counts_pages_and_drains() {
    let dir = common::disk_dir();
    let region = RegionOptions::new()
        .engine(pmem_core::Engine::Msync)
        .create(common::pool_path(&dir, "msync.pool"), 1 << 20)
        .unwrap();
    assert_eq!(region.domain(), DomainKind::Msync);
    let start = region.data_range().start;
    region.flush(start + 4000, 200).unwrap(); // pages 1..3 of the data area's neighbourhood
    region.flush(start + 10 * 4096, 10).unwrap();
    let before = thread_stats();
    region.drain().unwrap();
    let d = thread_stats().since(&before);
    assert_eq!(d.drains, 1);
    assert_eq!(d.lines_flushed, 0);
    assert_eq!(
        d.pages_synced, 3,
        "two pages for the straddling range, one for the other"
    );
    // Nothing pending: a second drain syncs nothing.
    let before = thread_stats();
    region.drain().unwrap();
    assert_eq!(thread_stats().since(&before).pages_synced, 0);
}

#[test]
fn flush_out_of_the_mapping_is_an_error() {
    let dir = common::shm_dir();
    let region = RegionOptions::new()
        .force_pmem(true)
        .create(common::pool_path(&dir, "oob.pool"), 1 << 20)
        .unwrap();
    assert!(matches!(
        region.flush(region.len() - 8, 16),
        Err(pmem_core::Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        region.flush(u64::MAX - 4, 16),
        Err(pmem_core::Error::OutOfBounds { .. })
    ));
    region.flush(region.len() - 8, 8).unwrap();
}

#[test]
fn nontemporal_copy_writes_the_same_bytes_as_a_plain_copy() {
    let dir = common::shm_dir();
    let mut region = RegionOptions::new()
        .force_pmem(true)
        .create(common::pool_path(&dir, "nt.pool"), 1 << 20)
        .unwrap();
    let start = region.data_range().start;
    let src: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + 3) as u8).collect();
    for (dst_off, len) in [
        (0u64, 0usize),
        (0, 16),
        (1, 15),
        (3, 100),
        (17, 4096),
        (64, 8192),
        (5, 9999),
    ] {
        let off = start + 20_000 + dst_off;
        region.write_at(off - 1, &vec![0xAA; len + 2]).unwrap();
        let before = thread_stats();
        region.write_nontemporal_at(off, &src[..len]).unwrap();
        region.drain().unwrap();
        let d = thread_stats().since(&before);
        let mut back = vec![0u8; len + 2];
        region.read_at(off - 1, &mut back).unwrap();
        assert_eq!(back[0], 0xAA, "byte before clobbered ({dst_off}, {len})");
        assert_eq!(back[len + 1], 0xAA, "byte after clobbered ({dst_off}, {len})");
        assert_eq!(&back[1..=len], &src[..len], "({dst_off}, {len})");
        let head = ((16 - (off as usize & 15)) & 15).min(len);
        let body = (len - head) & !15;
        assert_eq!(d.nt_bytes, body as u64, "({dst_off}, {len})");
        assert_eq!(d.drains, 1);
    }
}

#[test]
fn stats_are_per_thread() {
    let dir = common::shm_dir();
    let region = RegionOptions::new()
        .force_pmem(true)
        .create(common::pool_path(&dir, "threads.pool"), 1 << 20)
        .unwrap();
    let start = region.data_range().start;
    let before = thread_stats();
    std::thread::scope(|s| {
        s.spawn(|| {
            let b = thread_stats();
            region.persist(start, 64 * 10).unwrap();
            let d = thread_stats().since(&b);
            assert_eq!((d.lines_flushed, d.drains), (10, 1));
        });
    });
    assert_eq!(thread_stats().since(&before), pmem_core::PersistStats::default());
}
