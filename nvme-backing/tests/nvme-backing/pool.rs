//! Guards a ptm pool living on a paged region: transactions and reopen (paged and plain), a
//! working set larger than the resident limit, 2 drains per transaction, and crash images (the
//! file holds only what was written back) recovered to the committed state. Each case runs on
//! tmpfs (buffered I/O) and with direct I/O on the disk under `target/`.

use std::path::Path;

use nvme_backing::{pool_memory_with_options, FaultMode, IoMode, PagedOptions};
use ptm::{thread_stats, DomainKind, Error, PCell, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    pad: [u64; 7],
    /// 64 pages of 4 KiB: larger than the resident limit used below.
    pages: [PCell<[u64; 512]>; 64],
}

const RESIDENT: usize = 16;

/// Where the pool file lives, and the region's I/O mode there.
#[derive(Clone, Copy)]
enum Storage {
    /// `/dev/shm` (else the default temporary directory), `IoMode::Auto`: buffered on tmpfs.
    Tmpfs,
    /// The disk under `target/`, `IoMode::Direct` (fails if the file system cannot do it).
    DiskDirect,
}

fn paged(mode: FaultMode, storage: Storage) -> PoolOptions {
    let io = match storage {
        Storage::Tmpfs => IoMode::Auto,
        Storage::DiskDirect => IoMode::Direct,
    };
    let options = PagedOptions::new().fault_mode(mode).io_mode(io);
    PoolOptions::new()
        .layout("paged")
        .lanes(4)
        .external_memory(pool_memory_with_options(RESIDENT, options))
}

fn plain() -> PoolOptions {
    PoolOptions::new().layout("paged")
}

fn dir(storage: Storage) -> tempfile::TempDir {
    if let Storage::DiskDirect = storage {
        return tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    }
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

fn fill(pool: &Pool<Root>, k: u64) {
    pool.transaction(|tx, r| {
        tx.snapshot(|b| r.pages.iter().try_for_each(|p| b.add(p)))?;
        for (i, p) in r.pages.iter().enumerate() {
            p.set(tx, [k * 1000 + i as u64; 512])?;
        }
        r.a.set(tx, k)
    })
    .unwrap();
}

fn check(pool: &Pool<Root>, k: u64) {
    pool.transaction(|tx, r| {
        assert_eq!(r.a.get(tx), k);
        for (i, p) in r.pages.iter().enumerate() {
            assert!(
                p.get(tx).iter().all(|&w| w == k * 1000 + i as u64),
                "page {i} after {k}"
            );
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

fn commits_and_reopens(mode: FaultMode, storage: Storage) {
    let d = dir(storage);
    let path = d.path().join("p.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &paged(mode, storage)).unwrap();
    assert_eq!(pool.domain(), DomainKind::Paged);
    for k in 1..=3 {
        fill(&pool, k);
    }
    check(&pool, 3);
    let before = thread_stats();
    pool.transaction(|tx, r| r.a.set(tx, 4)).unwrap();
    let spent = thread_stats().since(&before);
    assert_eq!(spent.drains, 2, "1-word transaction on paged memory");
    // The paged domain has no ordering point cheaper than its drain yet: both drains fdatasync.
    assert_eq!(spent.fsyncs, 2, "1-word transaction on paged memory");
    drop(pool);
    let pool = Pool::<Root>::open(&path, &paged(mode, storage)).unwrap();
    assert!(pool.recovery_report().was_clean);
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 4);
    drop(pool);
    // The file itself holds the pool: it opens as a plain file too.
    let pool = Pool::<Root>::open(&path, &plain()).unwrap();
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 4);
    pool.transaction(|tx, r| {
        assert!(r.pages[63].get(tx).iter().all(|&w| w == 3063));
        Ok::<_, Error>(())
    })
    .unwrap();
}

fn crash_images_recover_to_the_committed_state(mode: FaultMode, storage: Storage) {
    let d = dir(storage);
    let path = d.path().join("c.pool");
    let image = d.path().join("image.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &paged(mode, storage)).unwrap();
    fill(&pool, 1);
    // Mid-transaction: the file holds the log (written back at the snapshot drain) and whatever
    // data pages eviction wrote back since; recovery must restore the committed state.
    let _ = pool.transaction(|tx, r| {
        tx.snapshot(|b| r.pages.iter().try_for_each(|p| b.add(p)))?;
        for p in r.pages.iter() {
            p.set(tx, [0xDEAD; 512])?;
        }
        r.a.set(tx, 99)?;
        std::fs::copy(&path, &image).unwrap();
        Err::<(), _>(Error::InvalidOptions("crash"))
    });
    drop(pool); // a copy of an open pool has its pointer tag: close the original first
    let recovered = Pool::<Root>::open(&image, &plain()).unwrap();
    assert_eq!(recovered.recovery_report().rolled_back, 1);
    check(&recovered, 1);
    drop(recovered);
    // After a commit the file holds it.
    let pool = Pool::<Root>::open(&path, &paged(mode, storage)).unwrap();
    check(&pool, 1);
    fill(&pool, 2);
    std::fs::copy(&path, &image).unwrap();
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &paged(mode, storage)).unwrap();
    check(&recovered, 2);
}

fn a_pool_on_paged_memory_commits_and_reopens(mode: FaultMode) {
    commits_and_reopens(mode, Storage::Tmpfs)
}

fn a_pool_on_direct_io_paged_memory_commits_and_reopens(mode: FaultMode) {
    commits_and_reopens(mode, Storage::DiskDirect)
}

fn crash_images_of_a_paged_pool_recover_to_the_committed_state(mode: FaultMode) {
    crash_images_recover_to_the_committed_state(mode, Storage::Tmpfs)
}

fn crash_images_of_a_direct_io_paged_pool_recover_to_the_committed_state(mode: FaultMode) {
    crash_images_recover_to_the_committed_state(mode, Storage::DiskDirect)
}

in_both_modes!(
    a_pool_on_paged_memory_commits_and_reopens,
    a_pool_on_direct_io_paged_memory_commits_and_reopens,
    crash_images_of_a_paged_pool_recover_to_the_committed_state,
    crash_images_of_a_direct_io_paged_pool_recover_to_the_committed_state
);
