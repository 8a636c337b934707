//! Write-back is per 1 KiB block: clean pages are never written, one dirty block writes one block.

use nvme_backing::{FaultMode, PagedRegion, BLOCK_SIZE, PAGE_SIZE};
use std::io::Write;

fn setup(pages: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let contents: Vec<u8> = (0..pages * PAGE_SIZE).map(|i| (i % 253) as u8).collect();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&contents)
        .unwrap();
    (dir, path, contents)
}

fn clean_pages_are_never_written_back(mode: FaultMode) {
    let (_dir, path, contents) = setup(8);
    let r = PagedRegion::open_with_mode(&path, 8 * PAGE_SIZE, 3, mode).unwrap();
    let mut buf = vec![0u8; 8 * PAGE_SIZE];
    // Read everything twice with a resident limit of 3: pages are loaded and evicted clean.
    r.read_at(0, &mut buf).unwrap();
    r.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, contents);
    r.flush_all().unwrap();
    r.evict_to(0).unwrap();
    let s = r.stats();
    assert_eq!(s.pages_faulted, 16);
    assert!(s.evictions >= 13);
    assert_eq!(s.blocks_written, 0);
    assert_eq!(s.pages_written, 0);
    assert_eq!(s.writeback_bytes, 0);
}

fn rewriting_identical_bytes_is_clean(mode: FaultMode) {
    let (_dir, path, contents) = setup(2);
    let mut r = PagedRegion::open_with_mode(&path, 2 * PAGE_SIZE, 2, mode).unwrap();
    r.write_at(0, &contents[..PAGE_SIZE]).unwrap();
    r.flush_all().unwrap();
    assert_eq!(r.stats().blocks_written, 0);
}

fn one_dirty_block_writes_exactly_that_block(mode: FaultMode) {
    let (_dir, path, contents) = setup(4);
    let mut r = PagedRegion::open_with_mode(&path, 4 * PAGE_SIZE, 4, mode).unwrap();
    let mut buf = vec![0u8; 4 * PAGE_SIZE];
    r.read_at(0, &mut buf).unwrap();
    // Change 3 bytes inside block 2 of page 1.
    let off = PAGE_SIZE + 2 * BLOCK_SIZE + 10;
    r.write_at(off, b"xyz").unwrap();
    // Corrupt the file's copy of the *other* blocks of page 1 behind the region's back: a write
    // of anything but block 2 would restore them, which we would see.
    let mut file = std::fs::read(&path).unwrap();
    for (i, b) in file[PAGE_SIZE..2 * PAGE_SIZE].iter_mut().enumerate() {
        if !(2 * BLOCK_SIZE..3 * BLOCK_SIZE).contains(&i) {
            *b = 0xEE;
        }
    }
    std::fs::write(&path, &file).unwrap();

    r.persist(0, 4 * PAGE_SIZE).unwrap();
    r.drain().unwrap();
    let s = r.stats();
    assert_eq!(s.blocks_written, 1);
    assert_eq!(s.pages_written, 1);
    assert_eq!(s.writeback_bytes, BLOCK_SIZE as u64);

    let after = std::fs::read(&path).unwrap();
    let mut expected = file.clone();
    expected[off..off + 3].copy_from_slice(b"xyz");
    assert_eq!(after, expected);
    assert_eq!(&after[..PAGE_SIZE], &contents[..PAGE_SIZE]);

    // A second persist finds nothing dirty.
    r.flush_all().unwrap();
    assert_eq!(r.stats().blocks_written, 1);
}

fn adjacent_dirty_blocks_are_written_and_counted_per_block(mode: FaultMode) {
    let (_dir, path, _contents) = setup(1);
    let mut r = PagedRegion::open_with_mode(&path, PAGE_SIZE, 2, mode).unwrap();
    // Touch blocks 0, 1 and 3.
    r.write_at(BLOCK_SIZE - 1, &[0xAA, 0xBB]).unwrap();
    r.write_at(3 * BLOCK_SIZE, &[0xCC]).unwrap();
    r.persist(0, 1).unwrap();
    let s = r.stats();
    assert_eq!(s.blocks_written, 3);
    assert_eq!(s.pages_written, 1);
    assert_eq!(s.writeback_bytes, 3 * BLOCK_SIZE as u64);
    let file = std::fs::read(&path).unwrap();
    assert_eq!(file[BLOCK_SIZE - 1], 0xAA);
    assert_eq!(file[BLOCK_SIZE], 0xBB);
    assert_eq!(file[3 * BLOCK_SIZE], 0xCC);
}

in_both_modes!(
    clean_pages_are_never_written_back,
    rewriting_identical_bytes_is_clean,
    one_dirty_block_writes_exactly_that_block,
    adjacent_dirty_blocks_are_written_and_counted_per_block
);
