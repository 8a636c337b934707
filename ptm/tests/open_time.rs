//! Guards that opening a pool does not scan its heap or data: a 4 GiB pool (sparse, on tmpfs)
//! opens about as fast as a 64 MiB one, and its first allocation builds the index lazily.

mod common;

use std::time::{Duration, Instant};

use ptm::{PCell, PPtr, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    p: PCell<PPtr<u64>>,
}

fn fastest_open(path: &std::path::Path) -> Duration {
    (0..7)
        .map(|_| {
            let t = Instant::now();
            let pool = Pool::<Root>::open(path, &common::pmem()).unwrap();
            let d = t.elapsed();
            drop(pool);
            d
        })
        .min()
        .unwrap()
}

#[test]
fn a_4_gib_pool_opens_as_fast_as_a_64_mib_pool() {
    let dir = common::shm_dir();
    let small = common::path(&dir, "small.pool");
    let large = common::path(&dir, "large.pool");
    for (path, size) in [(&small, 64u64 << 20), (&large, 4u64 << 30)] {
        let pool = Pool::<Root>::create(path, size, &common::pmem()).unwrap();
        // Something in the heap, so the large pool's table is not trivially empty.
        pool.transaction(|tx, r| {
            let p = tx.alloc(7u64)?;
            r.p.set(tx, p)
        })
        .unwrap();
    }
    let t_small = fastest_open(&small);
    let t_large = fastest_open(&large);
    println!("open 64 MiB: {t_small:?}, open 4 GiB: {t_large:?}");
    // Within 2x, with 2 ms of slack for a noisy shared machine.
    assert!(
        t_large <= t_small * 2 + Duration::from_millis(2),
        "64 MiB: {t_small:?}, 4 GiB: {t_large:?}"
    );
    // The lazily built index still finds the existing allocation and all free space.
    let pool = Pool::<Root>::open(&large, &common::pmem()).unwrap();
    let v = pool
        .transaction(|tx, r| {
            let p = tx.alloc(8u64)?;
            assert_ne!(p, r.p.get(tx));
            // SAFETY: allocated by the create transaction above and never freed.
            Ok::<_, ptm::Error>(*unsafe { tx.deref(r.p.get(tx))? })
        })
        .unwrap();
    assert_eq!(v, 7);
}
