//! Guards the end of a transaction whose durability point fails on the journaled engine (issue
//! 19, `tx.rs` mutation pass). A commit whose `fdatasync` fails rolls back, the roll-back's own
//! drains fail too (the journal's failure is sticky), and the pool is poisoned: the
//! transaction's persistent locks must still be released, so a thread already waiting for one
//! inside its own transaction gets it instead of waiting until `LockTimeout`. A relaxed
//! commit whose completion fails must report the error.

use std::sync::Barrier;
use std::time::Duration;

use ptm::pmem_core::{Engine, IoFault, IoFaults, JournalOptions};
use ptm::{Error, PCell, PMutex, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    counter: PMutex<PCell<u64>>,
}

/// A scratch directory, a fault plan, and options for a journaled pool that injects it.
fn journaled() -> (tempfile::TempDir, IoFaults, PoolOptions) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let faults = IoFaults::new();
    let opts = PoolOptions::new()
        .layout("failed-end")
        .lanes(4)
        .engine(Engine::Journaled)
        .journal(JournalOptions::new().faults(faults.clone()));
    (dir, faults, opts)
}

#[test]
fn a_transaction_whose_rollback_fails_still_releases_its_locks() {
    let (dir, faults, opts) = journaled();
    let opts = opts
        // Long enough that the waiter below cannot time out before the holder's commit fails
        // on a loaded machine; a lock never released makes it time out (the failure shown).
        .lock_timeout(Duration::from_secs(5));
    let pool = Pool::<Root>::create(dir.path().join("locks.pool"), 8 << 20, &opts).unwrap();
    let barrier = Barrier::new(2);
    let (holder, waiter) = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            pool.transaction(|tx, root| {
                root.counter.lock(tx)?.set(tx, 1)?;
                barrier.wait();
                // Give the waiter time to block on the lock (a late waiter only makes this
                // test show nothing: it then takes a free lock).
                std::thread::sleep(Duration::from_millis(200));
                // The commit's sync fails; so do the roll-back's (sticky journal failure).
                faults.arm(IoFault::Sync, 1);
                Ok(())
            })
        });
        let waiter = s.spawn(|| {
            pool.transaction(|tx, root| {
                barrier.wait();
                let got = root.counter.lock(tx).map(|c| c.get(tx));
                Ok::<_, Error>(got)
            })
        });
        (holder.join().unwrap(), waiter.join().unwrap())
    });
    assert!(
        matches!(holder, Err(Error::Core(ptm::pmem_core::Error::Io { .. }))),
        "the holder's commit: {holder:?}"
    );
    // The waiter's transaction began before the pool was poisoned: it takes the lock the
    // failed transaction held and reads the value from before it (the failed commit rolled
    // back in memory). Its own end may find the pool poisoned; its lock must not time out.
    match waiter {
        Ok(got) => assert!(matches!(got, Ok(0)), "the waiter's lock: {got:?}"),
        Err(e) => assert!(
            matches!(e, Error::Poisoned | Error::Core(_)),
            "the waiter's transaction: {e}"
        ),
    }
}

#[test]
fn a_relaxed_commit_whose_completion_fails_reports_the_error() {
    let (dir, faults, opts) = journaled();
    let pool = Pool::<Root>::create(dir.path().join("relaxed.pool"), 8 << 20, &opts).unwrap();
    let ((), pending) = pool
        .transaction_relaxed(|tx, root| root.counter.lock(tx)?.set(tx, 1))
        .unwrap();
    // The completion's sync fails: the commit is not known durable, and the caller must hear it.
    faults.arm(IoFault::Sync, 1);
    let r = pending.complete();
    assert!(faults.fired() > 0, "the fault fired");
    assert!(
        matches!(r, Err(Error::Core(ptm::pmem_core::Error::Io { .. }))),
        "the completion: {r:?}"
    );
    assert!(matches!(pool.sync(), Err(Error::Poisoned)));
}
