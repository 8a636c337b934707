//! Guards the pool lock: a second opener, in this process or another, gets `PoolLocked`, and
//! closing releases the lock.

use crate::common;

use pmem_core::{Error, Region, RegionOptions};

#[test]
fn second_open_in_process_is_pool_locked() {
    let dir = common::shm_dir();
    let path = common::pool_path(&dir, "lock.pool");
    let r = RegionOptions::new().create(&path, 1 << 20).unwrap();
    match Region::open(&path) {
        Err(Error::PoolLocked { path: p }) => assert_eq!(p, path),
        other => panic!("expected PoolLocked, got {other:?}"),
    }
    assert!(Region::open(&path).unwrap_err().to_string().contains("is locked"));
    drop(r);
    let r = Region::open(&path).unwrap();
    drop(r);
}

#[test]
fn create_on_a_locked_file_is_pool_locked() {
    let dir = common::shm_dir();
    let path = common::pool_path(&dir, "lock2.pool");
    let _r = RegionOptions::new().create(&path, 1 << 20).unwrap();
    assert!(matches!(
        Region::create(&path, 1 << 20),
        Err(Error::PoolLocked { .. })
    ));
}

#[test]
fn a_failed_open_releases_the_lock() {
    let dir = common::shm_dir();
    let path = common::pool_path(&dir, "lock4.pool");
    drop(RegionOptions::new().layout("a").create(&path, 1 << 20).unwrap());
    assert!(matches!(
        RegionOptions::new().layout("b").open(&path),
        Err(Error::LayoutMismatch { .. })
    ));
    drop(RegionOptions::new().layout("a").open(&path).unwrap());
}
