//! Each userfaultfd-mode region has one fault-service thread, stopped when the region is dropped
//! or abandoned. (In the `serial` binary: it counts this
//! process's threads by name.)

use std::time::{Duration, Instant};

use nvme_backing::{FaultMode, PagedRegion, PAGE_SIZE};

/// Threads of this process named like the service thread (`comm` is cut to 15 bytes).
fn service_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == "nvme-backing-uf")
        .count()
}

/// Waits (up to 10 s) until exactly `n` service threads exist: a new thread names itself once it
/// runs, and an exited one may linger briefly in `/proc`.
fn expect_service_threads(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while service_threads() != n {
        assert!(
            Instant::now() < deadline,
            "{} service threads, expected {n}",
            service_threads()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn service_threads_stop_on_drop_and_abandon() {
    let _serial = crate::serial();
    let dir = tempfile::tempdir().unwrap();
    expect_service_threads(0);
    let regions: Vec<_> = (0..3)
        .map(|i| {
            let path = dir.path().join(format!("f{i}"));
            PagedRegion::create_with_mode(&path, 4 * PAGE_SIZE, 2, FaultMode::Userfaultfd).unwrap()
        })
        .collect();
    expect_service_threads(3);
    let mut regions = regions.into_iter();
    let mut first = regions.next().unwrap();
    first.write_at(3 * PAGE_SIZE, b"dropped").unwrap();
    drop(first);
    expect_service_threads(2);
    let mut second = regions.next().unwrap();
    second.write_at(0, b"abandoned").unwrap();
    second.abandon();
    expect_service_threads(1);
    drop(regions);
    expect_service_threads(0);
    // Drop wrote back, abandon did not.
    assert_eq!(
        &std::fs::read(dir.path().join("f0")).unwrap()[3 * PAGE_SIZE..][..7],
        b"dropped"
    );
    assert!(std::fs::read(dir.path().join("f1")).unwrap()[..9]
        .iter()
        .all(|&b| b == 0));
    // Signal mode starts no thread.
    let _signal = PagedRegion::create(dir.path().join("s"), 4 * PAGE_SIZE, 2).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(service_threads(), 0);
}
