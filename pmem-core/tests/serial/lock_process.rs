//! Guards the pool lock across processes: while a pool is open, another process cannot take it.
//! (In the `serial` binary: spawning a child copies every open descriptor of this process until the
//! child execs, which would briefly hold other tests' pool locks.)

use crate::common;

use pmem_core::RegionOptions;

#[test]
fn another_process_cannot_lock_an_open_pool() {
    let _serial = crate::serial();
    let dir = common::shm_dir();
    let path = common::pool_path(&dir, "lock3.pool");
    let r = RegionOptions::new().create(&path, 1 << 20).unwrap();
    // util-linux flock(1): -n fails at once if the lock is held.
    let status = std::process::Command::new("flock")
        .arg("-n")
        .arg(&path)
        .arg("true")
        .status();
    let Ok(status) = status else {
        eprintln!("flock(1) not installed; skipping the cross-process half");
        return;
    };
    assert!(!status.success(), "another process took the lock of an open pool");
    drop(r);
    let status = std::process::Command::new("flock")
        .arg("-n")
        .arg(&path)
        .arg("true")
        .status()
        .unwrap();
    assert!(status.success(), "lock not released on close");
}
