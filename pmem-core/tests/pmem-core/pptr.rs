//! Guards `PPtr<T>`: 8 bytes, null, bit layout, bounds and alignment checks at resolve, and
//! cross-pool misuse (pointer tags; no two open pools share one).

use crate::common;

use pmem_core::{Error, PPtr, Persistent, Region, RegionOptions};

#[derive(Persistent, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Node {
    value: u64,
    next: PPtr<Node>,
}

#[test]
fn pptr_is_eight_bytes_and_null_is_zero() {
    assert_eq!(std::mem::size_of::<PPtr<Node>>(), 8);
    assert_eq!(
        std::mem::size_of::<Option<PPtr<Node>>>(),
        16,
        "no niche: every bit pattern is a PPtr"
    );
    let null = PPtr::<Node>::null();
    assert!(null.is_null());
    assert_eq!(null.to_raw(), 0);
    assert_eq!(PPtr::<Node>::default(), null);
    let p = PPtr::<Node>::from_parts(0xabcd, 0x1234_5678);
    assert_eq!((p.tag(), p.offset()), (0xabcd, 0x1234_5678));
    assert_eq!(p.to_raw(), 0xabcd_0000_1234_5678);
    assert_eq!(PPtr::<Node>::from_raw(p.to_raw()), p);
    assert_eq!(p.cast::<u64>().to_raw(), p.to_raw());
    assert_eq!(format!("{null:?}"), "PPtr(null)");
}

#[test]
fn resolve_checks_null_bounds_and_alignment() {
    let dir = common::shm_dir();
    let r = RegionOptions::new()
        .create(common::pool_path(&dir, "p.pool"), 1 << 20)
        .unwrap();
    let data = r.data_range();
    let tag = r.header().pptr_tag;
    assert!(matches!(r.resolve(PPtr::<Node>::null()), Err(Error::NullPointer)));
    // Inside the data area.
    let p: PPtr<Node> = r.pptr_at(data.start + 64).unwrap();
    assert_eq!(p.tag(), tag);
    let addr = r.resolve(p).unwrap();
    assert_eq!(
        addr.as_ptr() as usize,
        r.base().as_ptr() as usize + data.start as usize + 64
    );
    // The last Node that fits, and one byte past it.
    let last = data.end - 16;
    r.resolve(PPtr::<Node>::from_parts(tag, last)).unwrap();
    assert!(matches!(
        r.resolve(PPtr::<Node>::from_parts(tag, last + 8)),
        Err(Error::OutOfBounds { .. })
    ));
    // The header and the backup header are not data.
    assert!(matches!(
        r.resolve(PPtr::<Node>::from_parts(tag, 8)),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        r.resolve(PPtr::<Node>::from_parts(tag, data.end)),
        Err(Error::OutOfBounds { .. })
    ));
    // Far outside: the largest 48-bit offset.
    assert!(matches!(
        r.resolve(PPtr::<u8>::from_parts(tag, (1 << 48) - 1)),
        Err(Error::OutOfBounds { .. })
    ));
    // Misaligned.
    assert!(matches!(
        r.resolve(PPtr::<Node>::from_parts(tag, data.start + 4)),
        Err(Error::Misaligned { align: 8, .. })
    ));
    assert!(matches!(
        r.pptr_at::<u64>(data.start + 1),
        Err(Error::Misaligned { .. })
    ));
    r.pptr_at::<u8>(data.start + 1).unwrap();
}

#[test]
fn a_pointer_from_another_pool_is_caught() {
    let dir = common::shm_dir();
    let a = RegionOptions::new()
        .create(common::pool_path(&dir, "a.pool"), 1 << 20)
        .unwrap();
    let b = RegionOptions::new()
        .create(common::pool_path(&dir, "b.pool"), 1 << 20)
        .unwrap();
    assert_ne!(
        a.header().pptr_tag,
        b.header().pptr_tag,
        "open pools always get distinct tags"
    );
    let pa: PPtr<u64> = a.pptr_at(a.data_range().start).unwrap();
    match b.resolve(pa) {
        Err(Error::WrongPool { expected, found }) => {
            assert_eq!((expected, found), (b.header().pptr_tag, a.header().pptr_tag))
        }
        other => panic!("expected WrongPool, got {other:?}"),
    }
    a.resolve(pa).unwrap();
}

#[test]
fn opening_a_copy_of_an_open_pool_is_a_tag_collision() {
    let dir = common::shm_dir();
    let a_path = common::pool_path(&dir, "orig.pool");
    let copy_path = common::pool_path(&dir, "copy.pool");
    drop(RegionOptions::new().create(&a_path, 1 << 20).unwrap());
    std::fs::copy(&a_path, &copy_path).unwrap();
    let a = Region::open(&a_path).unwrap();
    match Region::open(&copy_path) {
        Err(Error::TagCollision { tag }) => assert_eq!(tag, a.header().pptr_tag),
        other => panic!("expected TagCollision, got {other:?}"),
    }
    drop(a);
    // Once the first is closed the copy opens, and pointers stay valid in it.
    let copy = Region::open(&copy_path).unwrap();
    let p: PPtr<u64> = copy.pptr_at(copy.data_range().start).unwrap();
    copy.resolve(p).unwrap();
}

#[test]
fn a_pointer_survives_reopen_at_a_different_address() {
    let dir = common::shm_dir();
    let path = common::pool_path(&dir, "node.pool");
    let mut r = RegionOptions::new().create(&path, 1 << 20).unwrap();
    let start = r.data_range().start;
    let second: PPtr<Node> = r.pptr_at(start + 128).unwrap();
    let first = Node {
        value: 1,
        next: second,
    };
    let tail = Node {
        value: 2,
        next: PPtr::null(),
    };
    r.write_at(start + 64, pmem_core::bytes_of(&first)).unwrap();
    r.write_at(start + 128, pmem_core::bytes_of(&tail)).unwrap();
    r.persist(start, 4096).unwrap();
    let _hold = RegionOptions::new()
        .create(common::pool_path(&dir, "hold.pool"), 1 << 20)
        .unwrap();
    drop(r);
    let r = Region::open(&path).unwrap();
    let mut cur: PPtr<Node> = r.pptr_at(start + 64).unwrap();
    let mut values = vec![];
    while !cur.is_null() {
        let mut buf = [0u8; 16];
        r.read_at(cur.offset(), &mut buf).unwrap();
        let node: Node = pmem_core::read_from_bytes(&buf).unwrap();
        r.resolve(cur).unwrap();
        values.push(node.value);
        cur = node.next;
    }
    assert_eq!(values, [1, 2]);
}

/// `resolve_block` answers exactly as `resolve` of a `u64` then `check_range` of the block,
/// error for error, over offsets around both ends of the data area, lengths 0 to 24 and beyond
/// the end, null, foreign tags and every misalignment.
#[test]
fn resolve_block_is_resolve_then_check_range() {
    let dir = common::shm_dir();
    let r = RegionOptions::new()
        .create(common::pool_path(&dir, "b.pool"), 1 << 20)
        .unwrap();
    let data = r.data_range();
    let tag = r.header().pptr_tag;
    let slow = |p: PPtr<u8>, len: u64| -> Result<usize, String> {
        r.resolve(PPtr::<u64>::from_parts(p.tag(), p.offset()))
            .and_then(|_| r.check_range(p.offset(), len))
            .map(|()| r.base().as_ptr() as usize + p.offset() as usize)
            .map_err(|e| format!("{e:?}"))
    };
    let mut offsets = vec![0, 8, data.start, data.end, 1 << 40, (1 << 48) - 8];
    for base in [data.start, data.end - 64, data.end] {
        offsets.extend((0..72).map(|d| base.saturating_sub(8) + d));
    }
    let mut checked = 0;
    for &off in &offsets {
        for t in [tag, tag ^ 1, 0] {
            for len in (0..=24).chain([64, 4096, data.end - data.start, u64::MAX - 3]) {
                let p = PPtr::<u8>::from_parts(t, off);
                let fast = r
                    .resolve_block(p, len)
                    .map(|a| a.as_ptr() as usize)
                    .map_err(|e| format!("{e:?}"));
                assert_eq!(fast, slow(p, len), "offset {off:#x}, tag {t:#x}, len {len}");
                checked += 1;
            }
        }
    }
    assert!(checked > 5000);
    assert!(r.resolve_block(PPtr::from_parts(tag, data.start), 64).is_ok());
}
