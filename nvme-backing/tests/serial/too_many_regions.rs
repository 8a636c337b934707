//! The process-wide region table is bounded; a freed slot can be reused.

use nvme_backing::{Error, PagedRegion, MAX_REGIONS, PAGE_SIZE};

#[test]
fn region_table_is_bounded_and_slots_are_reused() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    let file = |i: usize| dir.path().join(format!("f{i}"));
    let mut open = Vec::new();
    let err = loop {
        match PagedRegion::create(file(open.len()), 2 * PAGE_SIZE, 2) {
            Ok(r) => open.push(r),
            Err(e) => break e,
        }
        assert!(open.len() <= MAX_REGIONS);
    };
    assert!(
        matches!(err, Error::TooManyRegions { max: MAX_REGIONS }),
        "{err:?}"
    );
    assert_eq!(open.len(), MAX_REGIONS);
    // Every region serves its own faults.
    for (i, r) in open.iter().enumerate() {
        // SAFETY: in bounds.
        unsafe { r.as_ptr().add(PAGE_SIZE + i).write_volatile(i as u8 + 1) };
    }
    let last = MAX_REGIONS - 1;
    open.truncate(last);
    let again = PagedRegion::open(file(last), 2 * PAGE_SIZE, 2).unwrap();
    let mut b = [0u8; 1];
    again.read_at(PAGE_SIZE + last, &mut b).unwrap();
    assert_eq!(b[0], last as u8 + 1, "the dropped region wrote back");
    drop(open);
    for i in 0..last {
        assert_eq!(std::fs::read(file(i)).unwrap()[PAGE_SIZE + i], i as u8 + 1);
    }
}
