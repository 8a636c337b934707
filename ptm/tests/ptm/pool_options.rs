//! Guards `PoolOptions`: each option, set in a chain of builders, takes effect and shows in the
//! pool (layout name, lanes, lane size, `force_pmem`, `eadr`, the engine (`Journaled` with its
//! journal path, `Msync`), the simulation, the chunk table's room to grow (`max_size`, by
//! default 64 times the size and at least 1 GiB), the reserve, an external memory source, a
//! lock timeout longer than the default); and the pool's accessors report what the pool is
//! (generation, path, `Debug`).

use crate::common;

use ptm::pmem_core::{DomainKind, Durability, Engine, JournalOptions};
use ptm::{Error, PCell, PMutex, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    n: PCell<u64>,
}

#[test]
fn create_options_take_effect_and_the_accessors_report_them() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "opts.pool");
    let opts = PoolOptions::new()
        .layout("options")
        .lanes(3)
        .lane_size(16 << 10)
        .force_pmem(true)
        .eadr(false);
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts).unwrap();
    assert_eq!(pool.region().header().layout_name(), "options");
    let g = pool.geometry();
    assert_eq!((g.lane_count, g.lane_size), (3, 16 << 10));
    assert!(
        matches!(pool.domain(), DomainKind::CacheFlush(_)),
        "{:?}",
        pool.domain()
    );
    assert_eq!(pool.region().domain(), pool.domain());
    assert_eq!(pool.durability(), Durability::ProcessCrash);
    assert_eq!(pool.generation(), 1);
    assert_eq!(pool.region().path(), path.as_path());
    let shown = format!("{pool:?}");
    assert!(
        shown.starts_with("Pool {") && shown.contains("lanes: 3"),
        "{shown}"
    );
    assert!(shown.contains("opts.pool"), "{shown}");
    pool.transaction(|tx, root| root.n.set(tx, 7)).unwrap();
    drop(pool);

    // Reopened with eADR declared: the same geometry, the next generation.
    let eadr = PoolOptions::new().layout("options").force_pmem(true).eadr(true);
    let pool = Pool::<Root>::open(&path, &eadr).unwrap();
    assert_eq!(pool.domain(), DomainKind::Eadr);
    assert_eq!(pool.generation(), 2);
    assert_eq!(pool.geometry(), g);
    assert_eq!(
        pool.transaction(|tx, root| Ok::<_, ptm::Error>(root.n.get(tx)))
            .unwrap(),
        7
    );
    drop(pool);

    // With `force_pmem(false)`, a file on tmpfs is a plain file: the default engine journals it.
    let plain = PoolOptions::new().layout("options").force_pmem(false);
    let pool = Pool::<Root>::open(&path, &plain).unwrap();
    assert_eq!(pool.domain(), DomainKind::Journaled);
    assert_eq!(pool.generation(), 3);
}

/// The chunk table's entries: room for the heap of the pool size `max_size` names, or, by
/// default, 64 times the pool's size and at least 1 GiB (one entry per 64 KiB chunk, plus one).
#[test]
fn the_chunk_tables_room_to_grow_follows_max_size_and_its_default() {
    let dir = common::shm_dir();
    let entries = |name: &str, size: u64, opts: PoolOptions| {
        let pool = Pool::<Root>::create(common::path(&dir, name), size, &opts).unwrap();
        pool.geometry().table_entries
    };
    // 8 MiB: 64 times is 512 MiB, less than the 1 GiB floor.
    assert_eq!(
        entries("small.pool", 8 << 20, common::pmem()),
        (1 << 30) / (64 << 10) + 1
    );
    // 32 MiB: 64 times is 2 GiB.
    assert_eq!(
        entries("larger.pool", 32 << 20, common::pmem()),
        (2 << 30) / (64 << 10) + 1
    );
    // Named: 256 MiB.
    assert_eq!(
        entries("named.pool", 8 << 20, common::pmem().max_size(256 << 20)),
        (256 << 20) / (64 << 10) + 1
    );
}

#[test]
fn the_journaled_engine_and_its_journal_path_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.pool");
    let journal = dir.path().join("elsewhere.journal");
    let opts = PoolOptions::new()
        .layout("journaled")
        .engine(Engine::Journaled)
        .journal(JournalOptions::new().path(&journal));
    let pool = Pool::<Root>::create(&path, 8 << 20, &opts).unwrap();
    assert_eq!(pool.domain(), DomainKind::Journaled);
    assert_eq!(pool.durability(), Durability::PowerLoss);
    assert_eq!(pool.region().journal_path(), Some(journal.as_path()));
    pool.transaction(|tx, root| root.n.set(tx, 1)).unwrap();
    drop(pool);
    assert!(journal.exists());
}

/// An engine other than the default's choice: `Msync` on a file the default would journal.
#[test]
fn the_msync_engine_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let opts = PoolOptions::new().layout("msync").engine(Engine::Msync);
    let pool = Pool::<Root>::create(dir.path().join("m.pool"), 8 << 20, &opts).unwrap();
    assert_eq!(pool.domain(), DomainKind::Msync);
    drop(pool);
    let pool = Pool::<Root>::open(dir.path().join("m.pool"), &PoolOptions::new().layout("msync")).unwrap();
    assert_eq!(pool.domain(), DomainKind::Journaled);
}

#[cfg(feature = "simulate")]
#[test]
fn a_simulation_takes_effect() {
    let dir = common::shm_dir();
    let sim = ptm::pmem_core::Simulation::new();
    let opts = PoolOptions::new().layout("simulated").simulation(sim);
    let pool = Pool::<Root>::create(common::path(&dir, "sim.pool"), 8 << 20, &opts).unwrap();
    assert_eq!(pool.domain(), DomainKind::Simulated);
}

/// The external memory source is what the pool is built on: one that refuses fails the create
/// with its own error.
#[test]
fn an_external_memory_source_is_used() {
    let dir = common::shm_dir();
    let source = ptm::pmem_core::ExternalMemorySource(std::sync::Arc::new(|_: &std::path::Path, _| {
        Err(std::io::Error::other("no memory from this source"))
    }));
    let opts = common::pmem().external_memory(source);
    let err = Pool::<Root>::create(common::path(&dir, "ext.pool"), 8 << 20, &opts).unwrap_err();
    assert!(err.to_string().contains("no memory from this source"), "{err}");
}

/// A reserve keeps its chunks from ordinary allocations, and gives them to a transaction that
/// asks for it.
#[test]
fn the_reserve_is_kept_from_ordinary_allocations() {
    let dir = common::shm_dir();
    let reserve = 16 * (64 << 10);
    let mut pool = Pool::<Root>::create(
        common::path(&dir, "reserve.pool"),
        8 << 20,
        &common::pmem().reserve(reserve),
    )
    .unwrap();
    while pool.transaction(|tx, _| tx.alloc_bytes(64 << 10)).is_ok() {}
    let free = pool.heap_stats().unwrap().free_chunks;
    assert!(free >= 16, "{free} chunks free when ordinary allocations fail");
    pool.transaction(|tx, _| {
        tx.use_reserve();
        tx.alloc_bytes(64 << 10)
    })
    .unwrap();
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Locked {
    m: PMutex<PCell<u64>>,
}

/// A lock timeout longer than the default (5 s) is waited out: a transaction waits for a holder
/// that keeps the lock 6 s, then reads what the holder committed. (The pass does not depend on
/// timing: with the hour given, the waiter succeeds however slow the machine.)
#[test]
fn a_lock_timeout_longer_than_the_default_is_waited_out() {
    let dir = common::shm_dir();
    let opts = common::pmem().lock_timeout(std::time::Duration::from_secs(3600));
    let pool = Pool::<Locked>::create(common::path(&dir, "wait.pool"), 8 << 20, &opts).unwrap();
    let held = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let (pool, held) = (&pool, &held);
        let holder = s.spawn(move || {
            pool.transaction(|tx, r| {
                r.m.lock(tx)?.set(tx, 1)?;
                held.wait();
                std::thread::sleep(ptm::DEFAULT_LOCK_TIMEOUT + std::time::Duration::from_secs(1));
                Ok::<_, Error>(())
            })
        });
        held.wait();
        let seen = pool.transaction(|tx, r| Ok::<_, Error>(r.m.lock(tx)?.get(tx)));
        holder.join().unwrap().unwrap();
        assert_eq!(seen.unwrap(), 1);
    });
}
