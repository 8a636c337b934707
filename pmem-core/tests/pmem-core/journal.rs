//! Guards the journaled engine's options as a region uses them (the bound, the journal's path,
//! buffered durability, injected faults) and the stickiness of a journal failure.

use std::path::Path;
use std::time::Duration;

use crate::common;

use pmem_core::internals::journal::{default_journal_path, DEFAULT_MAX_BYTES};
use pmem_core::{DomainKind, Engine, IoFault, IoFaults, JournalOptions, RegionOptions};

#[test]
fn journal_options_bound_path_and_buffering() {
    let o = JournalOptions::new();
    assert_eq!(DEFAULT_MAX_BYTES, 64 << 20);
    assert_eq!(o.bound(), 64 << 20, "the default bound");
    assert_eq!(o.clone().max_bytes(1000).bound(), 64 << 10, "at least 64 KiB");
    assert_eq!(o.clone().max_bytes(1 << 30).bound(), 1 << 30);
    assert_eq!(o.buffered_period(), None, "durable commits by default");
    let period = Duration::from_millis(250);
    assert_eq!(o.clone().buffered(period).buffered_period(), Some(period));
    let pool = Path::new("/pools/a.pool");
    assert_eq!(o.journal_path(pool), Path::new("/pools/a.pool.journal"));
    assert_eq!(default_journal_path(pool), Path::new("/pools/a.pool.journal"));
    assert_eq!(
        o.clone().path("/fast/a.journal").journal_path(pool),
        Path::new("/fast/a.journal")
    );
}

#[test]
fn a_journal_elsewhere_is_written_there_and_reopens_from_there() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "elsewhere.pool");
    let jpath = common::pool_path(&dir, "other-place.journal");
    let opts = RegionOptions::new()
        .engine(Engine::Journaled)
        .journal(JournalOptions::new().path(&jpath));
    let mut r = opts.create(&path, 1 << 20).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    let off = r.data_range().start;
    r.write_at(off, &[3; 64]).unwrap();
    r.persist(off, 64).unwrap();
    assert!(jpath.exists(), "the journal is at its configured path");
    assert!(!default_journal_path(&path).exists(), "and not beside the pool");
    drop(r);
    let r = opts.open(&path).unwrap();
    let mut b = [0u8; 64];
    r.read_at(off, &mut b).unwrap();
    assert_eq!(b, [3; 64]);
}

#[test]
fn an_injected_sync_fault_fails_the_durability_point_and_the_journal_stays_failed() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "faulty.pool");
    let faults = IoFaults::new();
    let opts = RegionOptions::new()
        .engine(Engine::Journaled)
        .journal(JournalOptions::new().faults(faults.clone()));
    let mut r = opts.create(&path, 1 << 20).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    let off = r.data_range().start;
    r.write_at(off, &[1; 64]).unwrap();
    r.persist(off, 64).unwrap();
    faults.arm(IoFault::Sync, 1);
    r.write_at(off, &[2; 64]).unwrap();
    assert!(r.persist(off, 64).is_err(), "the failed sync is reported");
    assert_eq!(faults.fired(), 1, "the fault reached the journal's files");
    r.write_at(off, &[3; 64]).unwrap();
    assert!(
        r.persist(off, 64).is_err(),
        "a failed journal refuses later durability points, though the next sync would succeed"
    );
}
