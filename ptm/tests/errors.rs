//! Guards the errors of opening pools: wrong layout, wrong root type, damaged or missing
//! transaction metadata, bad options, a locked pool — each clear, none a panic.

mod common;

use std::os::unix::fs::FileExt;

use ptm::{Error, PCell, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
}

fn make(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = common::path(dir, "e.pool");
    Pool::<Root>::create(&p, 8 << 20, &common::pmem()).unwrap();
    p
}

#[test]
fn wrong_layout() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let e = Pool::<Root>::open(&p, &common::pmem().layout("other")).unwrap_err();
    assert!(
        matches!(e, Error::Core(ptm::pmem_core::Error::LayoutMismatch { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("layout mismatch"), "{e}");
}

#[test]
fn wrong_root_type() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let e = Pool::<[u64; 4]>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::RootMismatch {
                expected: 32,
                found: 8
            }
        ),
        "{e:?}"
    );
}

#[test]
fn damaged_superblock() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xff], 4096 + 20).unwrap();
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CorruptMetadata {
                what: "superblock checksum mismatch",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_bare_region_is_not_a_transaction_pool() {
    let dir = common::shm_dir();
    let p = common::path(&dir, "bare.pool");
    drop(
        ptm::pmem_core::RegionOptions::new()
            .layout("test")
            .create(&p, 1 << 20)
            .unwrap(),
    );
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(matches!(e, Error::CorruptMetadata { .. }), "{e:?}");
    assert!(e.to_string().contains("not a ptm transaction pool"), "{e}");
}

#[test]
fn locked_pool() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let _held = Pool::<Root>::open(&p, &common::pmem()).unwrap();
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(e, Error::Core(ptm::pmem_core::Error::PoolLocked { .. })),
        "{e:?}"
    );
}

#[test]
fn bad_options_and_too_small_pools() {
    let dir = common::shm_dir();
    let o = PoolOptions::new();
    assert!(matches!(
        Pool::<Root>::create(common::path(&dir, "a"), 8 << 20, &o.clone().lanes(0)),
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        Pool::<Root>::create(common::path(&dir, "b"), 8 << 20, &o.clone().lanes(5000)),
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        Pool::<Root>::create(common::path(&dir, "c"), 8 << 20, &o.clone().lane_size(5000)),
        Err(Error::InvalidOptions(_))
    ));
    let small = common::path(&dir, "d");
    assert!(matches!(
        Pool::<Root>::create(&small, 1 << 20, &o),
        Err(Error::InvalidOptions(_))
    ));
    assert!(!small.exists(), "a refused create leaves no file");
    assert!(matches!(
        Pool::<[u8; 1 << 20]>::create(common::path(&dir, "e"), 1 << 20, &o.clone().lanes(1)),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn not_a_pool_at_all() {
    let dir = common::shm_dir();
    let p = common::path(&dir, "text");
    std::fs::write(&p, "hello").unwrap();
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(e, Error::Core(ptm::pmem_core::Error::NotAPool { .. })),
        "{e:?}"
    );
}

#[test]
fn any_root_opens_for_tools() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let mut pool = Pool::<()>::open_any(&p, &common::pmem()).unwrap();
    assert_eq!(pool.geometry().root_size, 8);
    pool.check_heap().unwrap();
    drop(pool);
    Pool::<Root>::open(&p, &common::pmem()).unwrap();
}
