//! Guards transactions far larger than a lane's log: a 64 MiB transaction overflows into heap
//! extents, commits, aborts, recovers from a crash image, and returns its extents.

use crate::common;

use ptm::{thread_stats, Error, PCell, Persistent, Pool};

const CELLS: usize = 16 * 1024; // 16 Ki cells of 4 KiB = 64 MiB

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    pages: [PCell<[u64; 512]>; CELLS],
}

fn fill(pool: &Pool<Root>, pattern: u64) -> Result<(), Error> {
    pool.transaction(|tx, r| {
        tx.snapshot(|b| r.pages.iter().try_for_each(|p| b.add(p)))?;
        for (i, p) in r.pages.iter().enumerate() {
            p.set(tx, [pattern ^ i as u64; 512])?;
        }
        Ok(())
    })
}

fn check(pool: &Pool<Root>, pattern: u64) {
    pool.transaction(|tx, r| {
        for (i, p) in r.pages.iter().enumerate() {
            let v = p.get(tx);
            assert!(
                v.iter().all(|&w| w == pattern ^ i as u64),
                "page {i}: {:#x} != {:#x}",
                v[0],
                pattern ^ i as u64
            );
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn a_64_mib_transaction_commits_aborts_and_recovers() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "big.pool");
    let pool = Pool::<Root>::create(&path, 256 << 20, &common::pmem()).unwrap();
    let free = pool.heap_free();

    let before = thread_stats();
    fill(&pool, 0xA000).unwrap();
    let d = thread_stats().since(&before);
    assert_eq!(d.drains, 2, "a batched 64 MiB transaction still costs 2 drains");
    // Records are packed at 8-byte alignment, so a record's data may start off a 16-byte
    // boundary: up to 15 head bytes of each record are copied with plain stores.
    assert!(
        d.nt_bytes >= (64 << 20) - 4096,
        "log copied with non-temporal stores: {}",
        d.nt_bytes
    );
    check(&pool, 0xA000);
    assert_eq!(pool.heap_free(), free, "log extents returned after commit");

    // Abort: everything back.
    let r: Result<(), Error> = pool.transaction(|tx, r| {
        for (i, p) in r.pages.iter().enumerate() {
            p.set(tx, [i as u64; 512])?;
        }
        Err(Error::InvalidOptions("abort 64 MiB"))
    });
    assert!(r.is_err());
    check(&pool, 0xA000);
    assert_eq!(pool.heap_free(), free, "log extents returned after abort");

    // Crash in the middle of a 64 MiB transaction: recovery rolls it back through the extents.
    let image = common::path(&dir, "image.pool");
    let _ = pool.transaction(|tx, r| {
        tx.snapshot(|b| r.pages.iter().try_for_each(|p| b.add(p)))?;
        for p in r.pages.iter() {
            p.set(tx, [0xDEAD; 512])?;
        }
        common::crash_image(&path, &image);
        Err::<(), _>(Error::InvalidOptions("crash"))
    });
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &common::pmem()).unwrap();
    assert_eq!(recovered.recovery_report().rolled_back, 1);
    check(&recovered, 0xA000);
}

#[test]
fn a_transaction_larger_than_the_heap_fails_cleanly() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "full.pool");
    // 64 MiB root, only a few MiB of heap for the log.
    let pool = Pool::<Root>::create(&path, 72 << 20, &common::pmem()).unwrap();
    let e = fill(&pool, 1).unwrap_err();
    assert!(matches!(e, Error::OutOfSpace { .. }), "{e:?}");
    pool.transaction(|tx, r| {
        assert!(
            r.pages.iter().all(|p| p.get(tx) == [0; 512]),
            "a failed transaction changed data"
        );
        Ok::<_, Error>(())
    })
    .unwrap();
    // The pool still works after running out of space.
    pool.transaction(|tx, r| r.pages[0].set(tx, [7; 512])).unwrap();
}
