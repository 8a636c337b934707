//! Guards the `Debug` output of ptm's public types: the cells and locks print their kind (not
//! their contents, which only a transaction may read), a transaction its lane and position,
//! a pending relaxed commit its lane and sequence number.

use crate::common;

use ptm::{Error, PCell, PMutex, PRwLock, PSharedLock, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    cell: PCell<u64>,
    mutex: PMutex<PCell<u64>>,
    rw: PRwLock<u64>,
    shared: PSharedLock<PCell<u64>>,
}

#[test]
fn cells_and_locks_print_their_kind() {
    let dir = common::shm_dir();
    let pool = Pool::<Root>::create(common::path(&dir, "debug.pool"), 8 << 20, &common::pmem()).unwrap();
    pool.transaction(|_, r| {
        assert_eq!(format!("{:?}", r.cell), "PCell { .. }");
        assert_eq!(format!("{:?}", r.mutex), "PMutex { .. }");
        assert_eq!(format!("{:?}", r.rw), "PRwLock { .. }");
        assert_eq!(format!("{:?}", r.shared), "PSharedLock { .. }");
        Ok::<_, Error>(())
    })
    .unwrap();
}

#[test]
fn a_transaction_prints_its_lane_once_it_has_one() {
    let dir = common::shm_dir();
    let pool = Pool::<Root>::create(common::path(&dir, "debug_tx.pool"), 8 << 20, &common::pmem()).unwrap();
    pool.transaction(|tx, r| {
        assert_eq!(format!("{tx:?}"), r#"Transaction { lane: "none yet" }"#);
        r.cell.set(tx, 7)?;
        let lane = tx.lane();
        let s = format!("{tx:?}");
        assert!(
            s.starts_with(&format!("Transaction {{ lane: {lane}, seq: ")) && s.contains("entries: "),
            "{s}"
        );
        Ok::<_, Error>(())
    })
    .unwrap();
    let ((), pending) = pool.transaction_relaxed(|tx, r| r.cell.set(tx, 8)).unwrap();
    let s = format!("{pending:?}");
    assert!(
        s.starts_with("PendingCommit { lane: Some(") && s.contains("seq: "),
        "{s}"
    );
    pending.complete().unwrap();
}
