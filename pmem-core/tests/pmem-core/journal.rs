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

#[test]
fn replay_onto_the_pool_file_keeps_the_rest_of_each_page_it_writes() {
    // Replay reads each page a record touches from the pool file, lays the record's bytes over
    // it and writes the page back: the page's other bytes must be the file's own.
    let dir = common::disk_dir();
    let live = common::pool_path(&dir, "live.pool");
    let copy = common::pool_path(&dir, "crashed.pool");
    let opts = RegionOptions::new().engine(Engine::Journaled);
    let mut r = opts.create(&live, 1 << 20).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    let page = (r.data_range().start + 8 * 4096) & !4095;
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 + 1).collect();
    r.write_at(page, &pattern).unwrap();
    r.persist(page, 4096).unwrap();
    drop(r); // the checkpoint at close writes the page home
    let mut r = opts.open(&live).unwrap();
    r.write_at(page + 1024, &[0xee; 64]).unwrap();
    r.persist(page + 1024, 64).unwrap();
    // A crash: the pool file and its journal as they are while the region is open.
    std::fs::copy(&live, &copy).unwrap();
    std::fs::copy(default_journal_path(&live), default_journal_path(&copy)).unwrap();
    drop(r);
    let r = opts.open(&copy).unwrap();
    assert!(r.replay_report().records >= 1);
    let mut expect = pattern.clone();
    expect[1024..1088].fill(0xee);
    let mut got = vec![0u8; 4096];
    r.read_at(page, &mut got).unwrap();
    assert!(got == expect, "the replayed page lost bytes outside the record");
}
