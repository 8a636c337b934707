//! Opening fails cleanly: backing file too small, nonexistent file, bad arguments.

use nvme_backing::{Error, FaultMode, PagedRegion, PAGE_SIZE};

fn backing_file_too_small(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small");
    std::fs::write(&path, vec![0u8; 3 * PAGE_SIZE]).unwrap();
    match PagedRegion::open_with_mode(&path, 4 * PAGE_SIZE, 2, mode) {
        Err(Error::BackingTooSmall {
            path: p,
            actual,
            required,
        }) => {
            assert_eq!(p, path);
            assert_eq!(actual, 3 * PAGE_SIZE as u64);
            assert_eq!(required, 4 * PAGE_SIZE as u64);
        }
        other => panic!("expected BackingTooSmall, got {other:?}"),
    }
    // The file itself is fine for a smaller region.
    let r = PagedRegion::open_with_mode(&path, 3 * PAGE_SIZE, 2, mode).unwrap();
    assert_eq!(r.len(), 3 * PAGE_SIZE);
}

fn nonexistent_file(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing");
    match PagedRegion::open_with_mode(&path, PAGE_SIZE, 2, mode) {
        Err(e @ Error::Io { .. }) => {
            let Error::Io { path: p, op, source } = &e else {
                unreachable!()
            };
            assert_eq!(p, &path);
            assert_eq!(*op, "open");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(e.to_string().contains("missing"), "{e}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

fn invalid_arguments(mode: FaultMode) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, vec![0u8; 2 * PAGE_SIZE]).unwrap();
    assert!(matches!(
        PagedRegion::open_with_mode(&path, 0, 1, mode),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        PagedRegion::open_with_mode(&path, 100, 1, mode),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        PagedRegion::open_with_mode(&path, 2 * PAGE_SIZE, 1, mode),
        Err(Error::InvalidArgument(_))
    ));
    let r = PagedRegion::open_with_mode(&path, 2 * PAGE_SIZE, 2, mode).unwrap();
    assert!(matches!(
        r.persist(PAGE_SIZE, PAGE_SIZE + 1),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        r.read_at(2 * PAGE_SIZE, &mut [0u8; 1]),
        Err(Error::InvalidArgument(_))
    ));
}

in_both_modes!(backing_file_too_small, nonexistent_file, invalid_arguments);
