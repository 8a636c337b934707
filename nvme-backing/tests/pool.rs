//! Guards a ptm pool living on a paged region: transactions and reopen (paged and plain), a
//! working set larger than the resident limit, 2 drains per transaction, and crash images (the
//! file holds only what was written back) recovered to the committed state.

use std::path::Path;

#[macro_use]
mod common;

use nvme_backing::{pool_memory_with_mode, FaultMode};
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

fn paged(mode: FaultMode) -> PoolOptions {
    PoolOptions::new()
        .layout("paged")
        .lanes(4)
        .external_memory(pool_memory_with_mode(RESIDENT, mode))
}

fn plain() -> PoolOptions {
    PoolOptions::new().layout("paged")
}

fn dir() -> tempfile::TempDir {
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

fn a_pool_on_paged_memory_commits_and_reopens(mode: FaultMode) {
    let d = dir();
    let path = d.path().join("p.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &paged(mode)).unwrap();
    assert_eq!(pool.domain(), DomainKind::Paged);
    for k in 1..=3 {
        fill(&pool, k);
    }
    check(&pool, 3);
    let before = thread_stats();
    pool.transaction(|tx, r| r.a.set(tx, 4)).unwrap();
    assert_eq!(
        thread_stats().since(&before).drains,
        2,
        "1-word transaction on paged memory"
    );
    drop(pool);
    let pool = Pool::<Root>::open(&path, &paged(mode)).unwrap();
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

fn crash_images_of_a_paged_pool_recover_to_the_committed_state(mode: FaultMode) {
    let d = dir();
    let path = d.path().join("c.pool");
    let image = d.path().join("image.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &paged(mode)).unwrap();
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
    let pool = Pool::<Root>::open(&path, &paged(mode)).unwrap();
    check(&pool, 1);
    fill(&pool, 2);
    std::fs::copy(&path, &image).unwrap();
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &paged(mode)).unwrap();
    check(&recovered, 2);
}

in_both_modes!(
    a_pool_on_paged_memory_commits_and_reopens,
    crash_images_of_a_paged_pool_recover_to_the_committed_state
);
