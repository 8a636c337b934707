//! Guards persistence-domain selection for each kind of file this machine can have, and the
//! persist → close → remap round trip in the journaled, msync and cache-flush domains.

use crate::common;

use pmem_core::{detected_flush_instruction, Backing, DomainKind, Engine, PPtr, RegionOptions};

#[test]
fn plain_file_on_disk_is_journaled_by_default() {
    let dir = common::disk_dir();
    let fs = common::fs_type(dir.path());
    let r = RegionOptions::new()
        .force_pmem(false)
        .create(common::pool_path(&dir, "disk.pool"), 1 << 20)
        .unwrap();
    assert_eq!(r.backing(), Backing::File);
    assert!(
        !r.map_sync(),
        "MAP_SYNC accepted on {fs}: the journaled engine maps privately"
    );
    let dax = {
        let probe = RegionOptions::new()
            .engine(Engine::Msync)
            .create(common::pool_path(&dir, "probe.pool"), 1 << 20)
            .unwrap();
        probe.map_sync()
    };
    if fs != "tmpfs" {
        // ext4/xfs without -o dax: the kernel refuses MAP_SYNC.
        assert!(!dax, "MAP_SYNC accepted on {fs}");
    }
    if !dax {
        assert_eq!(r.domain(), DomainKind::Journaled, "on {fs}");
        assert_eq!(
            r.journal_path(),
            Some(common::pool_path(&dir, "disk.pool.journal").as_path())
        );
    }
}

#[test]
fn the_msync_engine_is_chosen_by_name() {
    let dir = common::disk_dir();
    let r = RegionOptions::new()
        .engine(Engine::Msync)
        .create(common::pool_path(&dir, "m.pool"), 1 << 20)
        .unwrap();
    if !r.map_sync() {
        assert_eq!(r.domain(), DomainKind::Msync);
    }
    assert_eq!(r.journal_path(), None);
}

#[test]
fn tmpfs_file_is_journaled_unless_forced() {
    let dir = common::shm_dir();
    let r = RegionOptions::new()
        .force_pmem(false)
        .create(common::pool_path(&dir, "shm.pool"), 1 << 20)
        .unwrap();
    assert!(!r.map_sync(), "tmpfs does not support MAP_SYNC");
    assert_eq!(r.domain(), DomainKind::Journaled);
    drop(r);
    let r = RegionOptions::new()
        .force_pmem(true)
        .open(common::pool_path(&dir, "shm.pool"))
        .unwrap();
    let insn = detected_flush_instruction().expect("x86-64 always has clflush");
    assert_eq!(r.domain(), DomainKind::CacheFlush(insn));
    drop(r);
    let r = RegionOptions::new()
        .force_pmem(true)
        .eadr(true)
        .open(common::pool_path(&dir, "shm.pool"))
        .unwrap();
    assert_eq!(r.domain(), DomainKind::Eadr);
}

#[test]
fn eadr_alone_does_not_make_a_plain_file_persistent_memory() {
    let dir = common::disk_dir();
    let r = RegionOptions::new()
        .force_pmem(false)
        .eadr(true)
        .create(common::pool_path(&dir, "eadr.pool"), 1 << 20)
        .unwrap();
    if !r.map_sync() {
        assert_eq!(r.domain(), DomainKind::Journaled);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_best_flush_instruction_is_chosen() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let expected = if flags.contains(&"clwb") {
        "clwb"
    } else if flags.contains(&"clflushopt") {
        "clflushopt"
    } else {
        "clflush"
    };
    assert_eq!(detected_flush_instruction().unwrap().name(), expected);
}

/// Writes a value, persists it, closes, reopens (a new mapping, usually at a new address) and
/// reads it back, through a `PPtr` stored in the pool itself.
fn round_trip(dir: &tempfile::TempDir, engine: Engine, expect: fn(DomainKind) -> bool) {
    let path = common::pool_path(dir, "rt.pool");
    let opts = RegionOptions::new().layout("rt").engine(engine);
    let mut r = opts.create(&path, 4 << 20).unwrap();
    assert!(expect(r.domain()), "{:?}", r.domain());
    let root_off = r.data_range().start;
    let value_off = root_off + 3 * 4096 + 24;
    let value: [u64; 4] = [1, 2, 3, 0xdead_beef];
    r.write_at(value_off, pmem_core::bytes_of(&value)).unwrap();
    let ptr: PPtr<[u64; 4]> = r.pptr_at(value_off).unwrap();
    r.write_at(root_off, pmem_core::bytes_of(&ptr)).unwrap();
    r.persist(value_off, 32).unwrap();
    r.persist(root_off, 8).unwrap();
    // Keep an unrelated mapping alive at the old address so the next map lands elsewhere.
    let squatter = RegionOptions::new()
        .engine(engine)
        .create(common::pool_path(dir, "squat.pool"), 4 << 20)
        .unwrap();
    drop(r);
    let r = opts.open(&path).unwrap();
    let mut raw = [0u8; 8];
    r.read_at(root_off, &mut raw).unwrap();
    let ptr: PPtr<[u64; 4]> = pmem_core::read_from_bytes(&raw).unwrap();
    let addr = r.resolve(ptr).unwrap();
    let mut back = [0u8; 32];
    r.read_at(ptr.offset(), &mut back).unwrap();
    assert_eq!(pmem_core::read_from_bytes::<[u64; 4]>(&back).unwrap(), value);
    assert_eq!(
        addr.as_ptr() as usize - r.base().as_ptr() as usize,
        value_off as usize
    );
    drop(squatter);
}

#[test]
fn persist_and_remap_round_trip_in_the_msync_domain() {
    round_trip(&common::disk_dir(), Engine::Msync, |k| k == DomainKind::Msync);
}

#[test]
fn persist_and_remap_round_trip_in_the_journaled_domain() {
    round_trip(&common::disk_dir(), Engine::Journaled, |k| {
        k == DomainKind::Journaled
    });
}

#[test]
fn persist_and_remap_round_trip_in_the_cache_flush_domain() {
    round_trip(&common::shm_dir(), Engine::Pmem, |k| {
        matches!(k, DomainKind::CacheFlush(_))
    });
}

#[test]
fn data_persisted_in_the_msync_domain_is_in_the_file() {
    // msync writes through the page cache to the file: a plain read() sees the bytes.
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "file.pool");
    let mut r = RegionOptions::new()
        .engine(Engine::Msync)
        .create(&path, 1 << 20)
        .unwrap();
    let off = r.data_range().start + 5000;
    r.write_at(off, b"durable bytes").unwrap();
    r.persist(off, 13).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[off as usize..off as usize + 13], b"durable bytes");
    drop(r);
}

#[test]
fn a_journaled_pool_closes_with_everything_home_and_nothing_to_replay() {
    // The journaled engine maps the pool privately: the file has the bytes only once a
    // checkpoint wrote them home, which a clean close does (and empties the journal).
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "closed.pool");
    let opts = RegionOptions::new().engine(Engine::Journaled);
    let mut r = opts.create(&path, 1 << 20).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    let off = r.data_range().start + 5000;
    r.write_at(off, b"home at close").unwrap();
    r.persist(off, 13).unwrap();
    drop(r);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[off as usize..off as usize + 13], b"home at close");
    let r = opts.open(&path).unwrap();
    assert_eq!(r.replay_report(), Default::default(), "nothing left to replay");
}

#[test]
fn nontemporal_writes_survive_a_reopen_in_the_journaled_domain() {
    // The journaled domain copies plainly and records the range: without the record the
    // private mapping's bytes never reach the journal or the file.
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "nt.pool");
    let opts = RegionOptions::new().engine(Engine::Journaled);
    let mut r = opts.create(&path, 1 << 20).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    let off = r.data_range().start + 4000;
    let data: Vec<u8> = (0..300u32).map(|i| i as u8 ^ 0x5a).collect();
    r.write_nontemporal_at(off, &data).unwrap();
    r.drain().unwrap();
    drop(r);
    let r = opts.open(&path).unwrap();
    let mut back = vec![0u8; data.len()];
    r.read_at(off, &mut back).unwrap();
    assert_eq!(back, data);
}

#[test]
fn a_buffered_journal_syncs_at_sync_not_at_drain() {
    use pmem_core::JournalOptions;
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "buffered.pool");
    // A period no test run reaches: only `sync` (and the close) make the journal durable.
    let opts = RegionOptions::new()
        .engine(Engine::Journaled)
        .journal(JournalOptions::new().buffered(std::time::Duration::from_secs(3600)));
    let mut r = opts.create(&path, 1 << 20).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    let off = r.data_range().start;
    r.write_at(off, &[9; 64]).unwrap();
    let syncs = r.journal_stats().unwrap().syncs;
    r.persist(off, 64).unwrap();
    assert_eq!(
        r.journal_stats().unwrap().syncs,
        syncs,
        "a buffered drain only appends"
    );
    r.sync().unwrap();
    let s = r.journal_stats().unwrap();
    assert_eq!(s.syncs, syncs + 1, "sync makes the journal durable");
    assert_eq!(s.durable_seq, s.records, "every record appended is durable");
}

#[test]
fn repair_journal_without_a_journal_file_follows_the_header_flag() {
    use pmem_core::{repair_journal, Error, JournalOptions};
    let dir = common::disk_dir();
    // A pool of another engine: no journal, nothing asked for, nothing to do.
    let plain = common::pool_path(&dir, "plain.pool");
    drop(
        RegionOptions::new()
            .engine(Engine::Msync)
            .create(&plain, 1 << 20)
            .unwrap(),
    );
    assert_eq!(repair_journal(&plain, &JournalOptions::new()).unwrap(), 0);
    // A journaled pool as a crash leaves it (the header says the journal may hold changes),
    // its journal gone.
    let live = common::pool_path(&dir, "live.pool");
    let lost = common::pool_path(&dir, "lost.pool");
    let r = RegionOptions::new()
        .engine(Engine::Journaled)
        .create(&live, 1 << 20)
        .unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    std::fs::copy(&live, &lost).unwrap();
    drop(r);
    assert!(matches!(
        repair_journal(&lost, &JournalOptions::new()),
        Err(Error::JournalMissing { .. })
    ));
}

/// A crashed copy of a journaled pool whose first 64 data bytes hold 1s, its journal ending in
/// one more record, in sequence and checksummed, naming the 8 bytes right after the data area
/// (the backup header's magic); `None` on a DAX file system (no journal). Returns the copy's
/// path and the data area's start.
fn copy_with_a_record_past_the_data_area(dir: &tempfile::TempDir) -> Option<(std::path::PathBuf, u64)> {
    use pmem_core::internals::journal::format::{begin_record, finish_record, push_range_header};
    use pmem_core::internals::journal::{default_journal_path, scan};
    let live = common::pool_path(dir, "live.pool");
    let copy = common::pool_path(dir, "copy.pool");
    let mut r = RegionOptions::new()
        .engine(Engine::Journaled)
        .create(&live, 1 << 20)
        .unwrap();
    if r.domain() != DomainKind::Journaled {
        return None; // a DAX file system: no journal here
    }
    let start = r.data_range().start;
    r.write_at(start, &[1; 64]).unwrap();
    r.persist(start, 64).unwrap();
    std::fs::copy(&live, &copy).unwrap();
    std::fs::copy(default_journal_path(&live), default_journal_path(&copy)).unwrap();
    let (uuid, data) = (r.header().uuid, r.data_range());
    drop(r);
    let jpath = default_journal_path(&copy);
    let mut bytes = std::fs::read(&jpath).unwrap();
    let s = scan(&bytes, &uuid, data.clone()).unwrap();
    let mut rec = Vec::new();
    let at = begin_record(&mut rec, s.header.unwrap().epoch, s.next_seq, s.next_seq - 1);
    push_range_header(&mut rec, data.end, 8);
    rec.extend_from_slice(&[0xaa; 8]);
    finish_record(&mut rec, at, 1);
    let end = s.end as usize;
    if bytes.len() < end + rec.len() {
        bytes.resize(end + rec.len(), 0);
    }
    bytes[end..end + rec.len()].copy_from_slice(&rec);
    std::fs::write(&jpath, &bytes).unwrap();
    Some((copy, start))
}

#[test]
fn repair_journal_never_applies_a_record_outside_the_data_area() {
    use pmem_core::{repair_journal, JournalOptions};
    let dir = common::disk_dir();
    let Some((copy, _)) = copy_with_a_record_past_the_data_area(&dir) else {
        return;
    };
    repair_journal(&copy, &JournalOptions::new()).unwrap();
    let report = pmem_core::inspect_headers(&copy).unwrap();
    assert!(
        report.backup.is_ok(),
        "the backup header was overwritten: {report:?}"
    );
}

#[test]
fn opening_a_crashed_journaled_pool_replays_its_journal_and_says_so() {
    use pmem_core::internals::journal::default_journal_path;
    let dir = common::disk_dir();
    let live = common::pool_path(&dir, "live.pool");
    let copy = common::pool_path(&dir, "crashed.pool");
    let opts = RegionOptions::new().engine(Engine::Journaled);
    let mut r = opts.create(&live, 1 << 20).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    let start = r.data_range().start;
    for i in 0..2u64 {
        r.write_at(start + i * 4096, &[i as u8 + 1; 64]).unwrap();
        r.persist(start + i * 4096, 64).unwrap();
    }
    // A crash: the pool file and its journal as they are while the region is open.
    std::fs::copy(&live, &copy).unwrap();
    std::fs::copy(default_journal_path(&live), default_journal_path(&copy)).unwrap();
    drop(r);
    let r = opts.open(&copy).unwrap();
    let report = r.replay_report();
    assert!(report.records >= 2 && report.bytes >= 128, "{report:?}");
    let mut b = [0u8; 64];
    r.read_at(start + 4096, &mut b).unwrap();
    assert_eq!(b, [2; 64]);
}

#[test]
fn repair_journal_drops_a_damaged_synced_record_and_the_pool_opens() {
    use pmem_core::internals::journal::{default_journal_path, format::RECORD_HEADER, scan};
    use pmem_core::{repair_journal, Error, JournalOptions};
    let dir = common::disk_dir();
    let live = common::pool_path(&dir, "live.pool");
    let copy = common::pool_path(&dir, "copy.pool");
    let opts = RegionOptions::new().engine(Engine::Journaled);
    let mut r = opts.create(&live, 1 << 20).unwrap();
    let base = r.data_range().start;
    for i in 0..3u64 {
        r.write_at(base + i * 4096, &[i as u8 + 1; 64]).unwrap();
        r.persist(base + i * 4096, 64).unwrap();
    }
    // A crash: the pool file and its journal as they are while the region is open.
    std::fs::copy(&live, &copy).unwrap();
    std::fs::copy(default_journal_path(&live), default_journal_path(&copy)).unwrap();
    let (uuid, data) = (r.header().uuid, r.data_range());
    drop(r);
    // Nothing to repair in an intact journal (its prefix is replayed, as an open would).
    let intact = common::pool_path(&dir, "intact.pool");
    std::fs::copy(&copy, &intact).unwrap();
    std::fs::copy(default_journal_path(&copy), default_journal_path(&intact)).unwrap();
    assert_eq!(repair_journal(&intact, &JournalOptions::new()).unwrap(), 0);

    let jpath = default_journal_path(&copy);
    let mut bytes = std::fs::read(&jpath).unwrap();
    let s = scan(&bytes, &uuid, data.clone()).unwrap();
    assert!(s.records.len() >= 3, "{s:?}");
    bytes[s.records[1].0 as usize + RECORD_HEADER] ^= 0xff;
    std::fs::write(&jpath, &bytes).unwrap();
    assert!(matches!(
        opts.open(&copy),
        Err(Error::CorruptJournal { seq, .. }) if seq > 0
    ));
    let dropped = repair_journal(&copy, &JournalOptions::new()).unwrap();
    assert_eq!(dropped, s.records.len() as u64 - 1);
    let r = opts.open(&copy).unwrap();
    let mut first = [0u8; 64];
    r.read_at(base, &mut first).unwrap();
    // The first record survives only if it is the first write's.
    assert!(first == [1; 64] || first == [0; 64], "{first:?}");
    drop(r);

    // Another pool's journal is not repaired.
    let other = common::pool_path(&dir, "other.pool");
    drop(opts.create(&other, 1 << 20).unwrap());
    std::fs::copy(default_journal_path(&live), default_journal_path(&other)).unwrap();
    assert!(matches!(
        repair_journal(&other, &JournalOptions::new()),
        Err(Error::JournalMismatch { .. })
    ));
}

/// Whether the primary and the backup header copies on the file at `path` carry the journal
/// flag (read without the pool lock, so also while the pool is open).
fn journal_flags_on_file(path: &std::path::Path) -> (bool, bool) {
    use pmem_core::internals::header::{PoolHeader, FLAG_JOURNAL, HEADER_SIZE};
    let bytes = std::fs::read(path).unwrap();
    let flag = |b: &[u8]| PoolHeader::parse(b).unwrap().flags & FLAG_JOURNAL != 0;
    (
        flag(&bytes[..HEADER_SIZE]),
        flag(&bytes[bytes.len() - HEADER_SIZE..]),
    )
}

#[test]
fn switching_engines_at_open_sets_and_clears_the_journal_flag_and_hands_the_journal_over() {
    use pmem_core::internals::journal::default_journal_path;
    use pmem_core::Error;
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "switch.pool");
    let jpath = default_journal_path(&path);
    let msync = RegionOptions::new().engine(Engine::Msync);
    let journaled = RegionOptions::new().engine(Engine::Journaled);
    let r = msync.create(&path, 1 << 20).unwrap();
    if r.domain() != DomainKind::Msync {
        return; // a DAX file system: no disk engines here
    }
    drop(r);
    // An msync pool opened on the msync engine: no journal, and nothing written.
    let before = pmem_core::thread_stats();
    let r = msync.open(&path).unwrap();
    assert_eq!(
        pmem_core::thread_stats().since(&before).fsyncs,
        0,
        "a clean open wrote"
    );
    drop(r);
    assert!(!jpath.exists(), "the msync engine made a journal");
    // Opened on the journaled engine: both copies carry the flag while it is open, so a crash
    // copy without its journal is refused rather than opened without what the journal held.
    let mut r = journaled.open(&path).unwrap();
    assert_eq!(r.domain(), DomainKind::Journaled);
    assert_eq!(journal_flags_on_file(&path), (true, true));
    let start = r.data_range().start;
    r.write_at(start, &[5; 64]).unwrap();
    r.persist(start, 64).unwrap();
    let crashed = common::pool_path(&dir, "crashed.pool");
    std::fs::copy(&path, &crashed).unwrap();
    let e = msync.open(&crashed).unwrap_err();
    assert!(matches!(e, Error::JournalMissing { .. }), "{e}");
    // The same crash copy with its journal, opened on the msync engine: replayed, the journal
    // removed and the flag cleared on both copies before anything else can happen.
    std::fs::copy(&jpath, default_journal_path(&crashed)).unwrap();
    drop(r);
    let r = msync.open(&crashed).unwrap();
    assert_eq!(r.domain(), DomainKind::Msync);
    assert!(r.replay_report().records > 0);
    assert_eq!(journal_flags_on_file(&crashed), (false, false));
    assert!(
        !default_journal_path(&crashed).exists(),
        "the replayed journal stayed"
    );
    let mut back = [0u8; 64];
    r.read_at(start, &mut back).unwrap();
    assert_eq!(back, [5; 64]);
}

#[test]
fn a_record_outside_the_data_area_is_not_replayed_at_open() {
    let dir = common::disk_dir();
    let Some((copy, start)) = copy_with_a_record_past_the_data_area(&dir) else {
        return;
    };
    let opts = RegionOptions::new().engine(Engine::Journaled);
    let r = opts.open(&copy).unwrap();
    assert!(
        !r.backup_rewritten(),
        "the record was replayed over the backup header"
    );
    let mut back = [0u8; 64];
    r.read_at(start, &mut back).unwrap();
    assert_eq!(back, [1; 64]);
}

#[test]
fn a_journaled_pool_never_journals_its_backup_header() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "backup.pool");
    let opts = RegionOptions::new().engine(Engine::Journaled);
    // As created, then as opened: a flush reaching into the backup header journals only the
    // data bytes before it.
    for open in [false, true] {
        let mut r = if open {
            opts.open(&path).unwrap()
        } else {
            opts.create(&path, 1 << 20).unwrap()
        };
        if r.domain() != DomainKind::Journaled {
            return; // a DAX file system: no journal here
        }
        let last = r.data_range().end - 8;
        let what = if open { "opened" } else { "created" };
        common::assert_backup_header_not_journaled(&mut r, last, what);
    }
}
