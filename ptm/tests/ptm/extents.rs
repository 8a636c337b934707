//! Guards the growth of a transaction's log extents (design §7): when the lane's area is full
//! the log goes on in heap extents of 256 KiB, each twice the last (up to 64 MiB), so a large
//! transaction takes a few extents, not one per megabyte.

use crate::common;

use ptm::{Error, PCell, Persistent, Pool};

const KIB: u64 = 1024;
/// 1280 cells of 4 KiB: 5 MiB of undo data in one transaction.
const PAGES: usize = 1280;

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    pages: [PCell<[u64; 512]>; PAGES],
}

/// A transaction logging 5 MiB (8 KiB lanes: the log is in heap extents almost at once) holds
/// extents of 256 KiB, 512 KiB, 1 MiB, 2 MiB and 4 MiB (3.75 MiB is not enough, 7.75 MiB is),
/// and hands them all back at commit. Extents capped at 1 MiB would hold 5.75 MiB here; a first
/// extent of less than a chunk would hold something else again.
#[test]
fn a_large_transactions_log_extents_double_from_256_kib() {
    let dir = common::shm_dir();
    let opts = common::pmem().lane_size(8192);
    let pool = Pool::<Root>::create(common::path(&dir, "extents.pool"), 32 << 20, &opts).unwrap();
    let free = pool.heap_free();
    let held = pool
        .transaction(|tx, r| {
            for (i, p) in r.pages.iter().enumerate() {
                p.set(tx, [i as u64; 512])?;
            }
            Ok::<_, Error>(free - pool.heap_free())
        })
        .unwrap();
    assert_eq!(
        held,
        (256 + 512 + 1024 + 2048 + 4096) * KIB,
        "extents held by a 5 MiB log: {} KiB",
        held / KIB
    );
    assert_eq!(pool.heap_free(), free, "extents handed back at commit");
    pool.transaction(|tx, r| {
        for (i, p) in r.pages.iter().enumerate() {
            assert_eq!(p.get(tx)[511], i as u64);
        }
        Ok::<_, Error>(())
    })
    .unwrap();
}
