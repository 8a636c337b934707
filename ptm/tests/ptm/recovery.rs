//! Guards recovery: crash images taken mid-transaction roll back, committed transactions stay
//! (also when their completion mark was lost, verified by the data hash), partially persisted
//! commits roll back, recovery is idempotent, locks are free after reopen, and the clean-shutdown
//! flag is reported.

use crate::common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use ptm::{Error, PCell, PMutex, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
    b: PCell<[u64; 16]>,
    m: PMutex<PCell<u64>>,
}

fn values(pool: &Pool<Root>) -> (u64, [u64; 16], u64) {
    pool.transaction(|tx, r| Ok::<_, Error>((r.a.get(tx), r.b.get(tx), r.m.lock(tx)?.get(tx))))
        .unwrap()
}

fn opts() -> PoolOptions {
    common::pmem().lock_timeout(Duration::from_millis(300))
}

fn setup(dir: &tempfile::TempDir) -> Pool<Root> {
    let pool = Pool::<Root>::create(common::path(dir, "r.pool"), 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| {
        r.a.set(tx, 1)?;
        r.b.set(tx, [1; 16])?;
        r.m.lock(tx)?.set(tx, 1)
    })
    .unwrap();
    pool
}

fn write_u64(path: &Path, off: u64, v: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_le_bytes(), off).unwrap();
}

fn read_u64(path: &Path, off: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, off).unwrap();
    u64::from_le_bytes(b)
}

/// Pool offset of the root (cells are at fixed offsets inside it: a @0, b @8, m @136).
fn root_off(pool: &Pool<Root>) -> u64 {
    pool.geometry().root_offset
}

#[test]
fn an_uncommitted_transaction_is_rolled_back() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let image = common::path(&dir, "image.pool");
    let _ = pool.transaction(|tx, r| {
        r.a.set(tx, 2)?;
        r.b.set(tx, [2; 16])?;
        r.m.lock(tx)?.set(tx, 2)?;
        common::crash_image(&common::path(&dir, "r.pool"), &image); // crash between drains
        Err::<(), _>(Error::InvalidOptions("stop"))
    });
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &opts()).unwrap();
    let rep = recovered.recovery_report();
    assert!(!rep.was_clean);
    assert_eq!((rep.rolled_back, rep.entries_undone), (1, 3));
    assert_eq!(values(&recovered), (1, [1; 16], 1));
}

#[test]
fn a_committed_transaction_survives_a_crash() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    pool.transaction(|tx, r| r.a.set(tx, 3)).unwrap();
    let image = common::path(&dir, "image.pool");
    common::crash_image(&common::path(&dir, "r.pool"), &image);
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &opts()).unwrap();
    assert_eq!(values(&recovered).0, 3);
    assert!(!recovered.recovery_report().was_clean);
    assert_eq!(recovered.recovery_report().rolled_back, 0);
}

/// Takes an image right after a commit whose lane's `completed` mark had not reached the media.
fn image_with_lost_completion(dir: &tempfile::TempDir) -> (std::path::PathBuf, u64, u64) {
    let pool = setup(dir);
    let geo = pool.geometry();
    let lane = pool
        .transaction(|tx, r| {
            r.a.set(tx, 4)?;
            r.b.set(tx, [4; 16])?;
            Ok::<_, Error>(tx.lane())
        })
        .unwrap();
    let image = common::path(dir, "image.pool");
    common::crash_image(&common::path(dir, "r.pool"), &image);
    let completed_at = geo.lanes_offset + lane as u64 * geo.lane_size;
    let seq = read_u64(&image, completed_at);
    let root = root_off(&pool);
    drop(pool);
    // The mark of the previous transaction of that lane (or none).
    write_u64(
        &image,
        completed_at,
        seq.saturating_sub(u64::from(ptm::internals::layout::MAX_LANES)),
    );
    (image, root, seq)
}

#[test]
fn a_commit_whose_completion_mark_was_lost_is_kept_by_its_data_hash() {
    let dir = common::shm_dir();
    let (image, _, _) = image_with_lost_completion(&dir);
    let recovered = Pool::<Root>::open(&image, &opts()).unwrap();
    assert_eq!(recovered.recovery_report().completed, 1);
    assert_eq!(values(&recovered), (4, [4; 16], 1));
}

#[test]
fn a_commit_whose_data_did_not_all_persist_is_rolled_back() {
    let dir = common::shm_dir();
    let (image, root, _) = image_with_lost_completion(&dir);
    // One 8-byte word of the new data never reached the media: it still holds the old value.
    write_u64(&image, root + 8 + 5 * 8, 1);
    let recovered = Pool::<Root>::open(&image, &opts()).unwrap();
    assert_eq!(recovered.recovery_report().rolled_back, 1);
    assert_eq!(values(&recovered), (1, [1; 16], 1), "all or nothing");
}

#[test]
fn recovery_is_idempotent() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let image = common::path(&dir, "image.pool");
    let _ = pool.transaction(|tx, r| {
        r.a.set(tx, 5)?;
        r.b.set(tx, [5; 16])?;
        common::crash_image(&common::path(&dir, "r.pool"), &image);
        Err::<(), _>(Error::InvalidOptions("stop"))
    });
    drop(pool);
    // Recover a copy fully; in another copy, redo part of the rollback by hand (as if recovery
    // crashed after restoring some entries), then recover: both converge.
    let again = common::path(&dir, "again.pool");
    std::fs::copy(&image, &again).unwrap();
    let first = Pool::<Root>::open(&image, &opts()).unwrap();
    let expected = values(&first);
    drop(first);
    let reopened = Pool::<Root>::open(&image, &opts()).unwrap();
    assert_eq!(
        reopened.recovery_report().rolled_back,
        0,
        "second recovery has nothing to do"
    );
    assert_eq!(values(&reopened), expected);
    drop(reopened);
    let root = {
        let p = Pool::<Root>::open(common::path(&dir, "r.pool"), &opts()).unwrap();
        root_off(&p)
    };
    write_u64(&again, root, 1); // `a` already restored, `b` not yet
    let second = Pool::<Root>::open(&again, &opts()).unwrap();
    assert_eq!(values(&second), expected);
    assert_eq!(expected, (1, [1; 16], 1));
}

#[test]
fn locks_held_at_the_crash_are_free_after_reopen() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let image = common::path(&dir, "image.pool");
    let gen = pool.generation();
    let _ = pool.transaction(|tx, r| {
        r.m.lock(tx)?; // held, and its word is in the image
        common::crash_image(&common::path(&dir, "r.pool"), &image);
        Err::<(), _>(Error::InvalidOptions("stop"))
    });
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &opts()).unwrap();
    assert!(recovered.generation() > gen);
    // A stale hold would be waited for until the lock timeout (`opts`: 300 ms) and end in
    // `LockTimeout`: the `unwrap` is the check, with no wall-clock bound of its own.
    recovered
        .transaction(|tx, r| r.m.lock(tx)?.set(tx, 8))
        .expect("the stale lock was waited for");
}

#[test]
fn clean_close_is_reported() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    pool.close().unwrap();
    let pool = Pool::<Root>::open(common::path(&dir, "r.pool"), &opts()).unwrap();
    assert!(pool.recovery_report().was_clean);
    let image = common::path(&dir, "image.pool");
    common::crash_image(&common::path(&dir, "r.pool"), &image);
    drop(pool);
    assert!(
        !Pool::<Root>::open(&image, &opts())
            .unwrap()
            .recovery_report()
            .was_clean
    );
}

#[test]
fn many_committed_transactions_then_a_crash() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    for i in 0..200u64 {
        pool.transaction(|tx, r| {
            r.a.set(tx, i)?;
            r.b.update(tx, |mut b| {
                b[(i % 16) as usize] = i;
                b
            })?;
            Ok::<_, Error>(())
        })
        .unwrap();
    }
    let image = common::path(&dir, "image.pool");
    let _ = pool.transaction(|tx, r| {
        r.a.set(tx, 1000)?;
        common::crash_image(&common::path(&dir, "r.pool"), &image);
        Err::<(), _>(Error::InvalidOptions("stop"))
    });
    let want = values(&pool);
    drop(pool);
    let recovered = Pool::<Root>::open(&image, &opts()).unwrap();
    assert_eq!(values(&recovered), want);
    assert_eq!(want.0, 199);
}

/// A pool just created has nothing to recover: its report says clean, with nothing completed
/// or rolled back.
#[test]
fn a_new_pool_reports_a_clean_start() {
    let dir = common::shm_dir();
    let pool = setup(&dir);
    let rep = pool.recovery_report();
    assert!(rep.was_clean, "{rep:?}");
    assert_eq!((rep.completed, rep.rolled_back, rep.entries_undone), (0, 0, 0));
}
