//! The generation an open writes is durable when the open returns: a crash at any later drain
//! of the session reopens with a newer generation than the crashed session's, so lock words the
//! session held (tagged with its generation) read as free after the crash. An open with nothing
//! to recover makes no drain that has nothing to make durable.

use std::cell::{Cell, RefCell};

use ptm::{Error, PCell, PMutex, Persistent, Pool, PoolOptions};
use ptm_crashtest::{FaultModel, Simulation};

#[derive(Persistent)]
#[repr(C)]
struct Root {
    m: PMutex<PCell<u64>>,
    a: PCell<u64>,
}

fn opts() -> PoolOptions {
    PoolOptions::new()
        .force_pmem(true)
        .lanes(2)
        .lock_timeout(std::time::Duration::from_millis(300))
}

#[test]
fn a_crash_after_open_reopens_with_a_newer_generation_and_free_locks() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("gen.pool");
    Pool::<Root>::create(&path, 8 << 20, &opts())
        .unwrap()
        .close()
        .unwrap();
    let image = dir.path().join("image.pool");
    // The session's generation once its open returned; 0 while opening.
    let session = Cell::new(0u32);
    let checked = RefCell::new(0u32);
    let sim = Simulation::new();
    let sim_opts = opts().simulation(sim.clone());
    let mut buf = Vec::new();
    sim.with_hook(
        &mut |cp| {
            let g = session.get();
            if g == 0 || std::thread::panicking() {
                return; // a drain of the open itself, or of the drop after a failed check
            }
            let model = FaultModel::Words;
            for units in [Vec::new(), cp.pending(model)] {
                cp.image_into(model, &units, &mut buf);
                std::fs::write(&image, &buf).unwrap();
                let pool = Pool::<Root>::open(&image, &opts()).expect("a crash image opens");
                assert!(
                    pool.generation() > g,
                    "crashed session {g}, reopened as {} ({} pending units kept)",
                    pool.generation(),
                    units.len()
                );
                // A hold of the crashed session is stale: no wait, no `LockTimeout`.
                pool.transaction(|tx, r| r.m.lock(tx)?.set(tx, 5))
                    .expect("the crashed session's lock is free");
                *checked.borrow_mut() += 1;
            }
        },
        || {
            let pool = Pool::<Root>::open(&path, &sim_opts).unwrap();
            session.set(pool.generation());
            pool.transaction(|tx, r| {
                let m = r.m.lock(tx)?; // held at every crash point below
                m.set(tx, 1)?;
                r.a.set(tx, 2)
            })
            .unwrap();
            drop(pool);
        },
    );
    assert!(*checked.borrow() >= 4, "{} images checked", checked.borrow());
    let pool = Pool::<Root>::open(&path, &opts()).unwrap();
    let v = pool.transaction(|tx, r| Ok::<_, Error>((r.m.lock(tx)?.get(tx), r.a.get(tx))));
    assert_eq!(v.unwrap(), (1, 2));
}

/// Opening a pool that recovery has nothing to do for (closed cleanly, or its last transaction
/// committed and completed) makes no drain with nothing to make durable: recovery drains only
/// after it completed or rolled back a lane.
#[test]
fn opening_a_pool_with_nothing_to_recover_makes_no_empty_drain() {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("open.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts()).unwrap();
    pool.transaction(|tx, r| r.a.set(tx, 5)).unwrap();
    pool.close().unwrap();
    let sim = Simulation::new();
    let pool = Pool::<Root>::open(&path, &opts().simulation(sim.clone())).unwrap();
    let report = pool.recovery_report();
    assert_eq!((report.completed, report.rolled_back), (0, 0), "{report:?}");
    let seen = sim.redundancy();
    assert!(seen.drains > 0, "{seen:?}");
    assert_eq!(seen.empty_drains, 0, "{seen:?}");
    drop(pool);
}
