//! Data written through a paged region survives persist + drop + reopen, and reaches the file.

use nvme_backing::{FaultMode, PagedRegion, PAGE_SIZE};

const PAGES: usize = 16;

fn pattern(i: usize) -> u8 {
    (i * 31 % 251) as u8
}

fn persisted_data_survives_reopen(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let len = PAGES * PAGE_SIZE;
    {
        let mut r = PagedRegion::create_with_mode(&path, len, 4, mode).unwrap();
        // Fresh file reads as zeros.
        let mut buf = vec![1u8; 100];
        r.read_at(5 * PAGE_SIZE + 7, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        let data: Vec<u8> = (0..len).map(pattern).collect();
        r.write_at(0, &data).unwrap();
        r.persist(0, len).unwrap();
        r.drain().unwrap();
        assert!(r.stats().pages_faulted >= PAGES as u64);
    }
    let file = std::fs::read(&path).unwrap();
    assert_eq!(file.len(), len);
    assert!(file.iter().enumerate().all(|(i, &b)| b == pattern(i)));

    let r = PagedRegion::open_with_mode(&path, len, 4, mode).unwrap();
    let mut back = vec![0u8; len];
    r.read_at(0, &mut back).unwrap();
    assert!(back.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    // Reading only faults pages in; nothing is written back.
    r.flush_all().unwrap();
    assert_eq!(r.stats().blocks_written, 0);
}

fn raw_pointer_access_and_drop_writes_back(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let len = PAGES * PAGE_SIZE;
    {
        let r = PagedRegion::create_with_mode(&path, len, 2, mode).unwrap();
        for p in 0..PAGES {
            // SAFETY: in bounds; the handler maps the page on first touch.
            unsafe { r.as_ptr().add(p * PAGE_SIZE + 100).write(p as u8 + 1) };
        }
        // Dropped without an explicit persist: drop writes back.
    }
    let file = std::fs::read(&path).unwrap();
    for p in 0..PAGES {
        assert_eq!(file[p * PAGE_SIZE + 100], p as u8 + 1);
    }
}

fn abandon_loses_unpersisted_data_only(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing");
    let len = 4 * PAGE_SIZE;
    let mut r = PagedRegion::create_with_mode(&path, len, 4, mode).unwrap();
    r.write_at(0, b"durable").unwrap();
    r.persist(0, 7).unwrap();
    r.drain().unwrap();
    r.write_at(2 * PAGE_SIZE, b"volatile").unwrap();
    r.abandon();
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[..7], b"durable");
    assert!(file[2 * PAGE_SIZE..2 * PAGE_SIZE + 8].iter().all(|&b| b == 0));
}

in_both_modes!(
    persisted_data_survives_reopen,
    raw_pointer_access_and_drop_writes_back,
    abandon_loses_unpersisted_data_only
);
