//! The hardware as sysfs describes it, end to end through create and open, on fake sysfs trees:
//! the persistence domain chooses eADR, the unsafe-shutdown count is recorded in the header and
//! refuses a pool that was in use when it moved, and what each domain promises.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::sysfs::fake::{region, set_dimm, FakeDimm};
use super::*;
use crate::flush::detected_flush_instruction;
use crate::header::ShutdownRecord;

/// A directory on the disk the tests are built on (under `target/`), not tmpfs.
fn disk_dir() -> tempfile::TempDir {
    let exe = std::env::current_exe().unwrap();
    tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
}

/// A pool path in `dir` and a fake sysfs tree in which the file system holding `dir` is a
/// namespace of `region0` with `domain` and `dimms`.
struct Fixture {
    dir: tempfile::TempDir,
    sysfs: tempfile::TempDir,
    dimms: Vec<FakeDimm>,
}

impl Fixture {
    fn new(domain: Option<&str>, dimms: Vec<FakeDimm>) -> Fixture {
        let dir = disk_dir();
        let sysfs = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(dir.path()).unwrap().dev();
        region(sysfs.path(), "region0", domain, &dimms, "block", dev);
        Fixture { dir, sysfs, dimms }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Persistent-memory options reading this fixture's tree (eADR left to the tree).
    fn opts(&self) -> RegionOptions {
        RegionOptions::new()
            .engine(Engine::Pmem)
            .force_pmem(true)
            .sysfs_root(self.sysfs.path())
    }

    /// Sets DIMM `i`'s count file to `count` (`None`: removes it).
    fn set_count(&mut self, i: usize, count: Option<&str>) {
        self.dimms[i].count = count.map(str::to_owned);
        set_dimm(self.sysfs.path(), &self.dimms[i]);
    }
}

/// The primary and backup header copies on the file (read without the pool lock, so also while
/// the pool is open).
fn headers_on_file(path: &Path) -> (PoolHeader, PoolHeader) {
    let bytes = std::fs::read(path).unwrap();
    let hs = crate::header::HEADER_SIZE;
    let parse = |b: &[u8]| PoolHeader::parse(b).unwrap();
    (parse(&bytes[..hs]), parse(&bytes[bytes.len() - hs..]))
}

/// The shutdown record in the primary header on the file; the backup agrees.
fn record_on_file(path: &Path) -> ShutdownRecord {
    let (primary, backup) = headers_on_file(path);
    assert_eq!(
        primary.shutdown_record(),
        backup.shutdown_record(),
        "the copies disagree"
    );
    primary.shutdown_record()
}

/// A copy of the pool at `from`, as a crash would leave it while `from` is open: with the
/// header as it is now (the pool's own file is unlocked and cleaned at drop).
fn crash_copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

fn two_dimms(a: u64, b: u64) -> Vec<FakeDimm> {
    vec![FakeDimm::nfit("nmem0", a), FakeDimm::nfit("nmem1", b)]
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn the_persistence_domain_in_sysfs_chooses_eadr_unless_overridden() {
    let Some(insn) = detected_flush_instruction() else {
        return; // no flush instruction: the msync fallback, whatever sysfs says
    };
    let cases = [
        (Some("cpu_cache\n"), None, DomainKind::Eadr),
        (Some("memory_controller\n"), None, DomainKind::CacheFlush(insn)),
        (None, None, DomainKind::CacheFlush(insn)),
        (Some("garbage\u{1}\n"), None, DomainKind::CacheFlush(insn)),
        (Some("cpu_cache\n"), Some(false), DomainKind::CacheFlush(insn)),
        (Some("memory_controller\n"), Some(true), DomainKind::Eadr),
    ];
    for (i, (domain, eadr, want)) in cases.into_iter().enumerate() {
        let f = Fixture::new(domain, two_dimms(0, 0));
        let mut opts = f.opts();
        if let Some(e) = eadr {
            opts = opts.eadr(e);
        }
        let path = f.path(&format!("p{i}"));
        let r = opts.create(&path, 1 << 16).unwrap();
        assert_eq!(r.domain(), want, "case {i}: {domain:?}, eadr {eadr:?}");
        assert_eq!(r.nvdimm_region().unwrap().name, "region0");
        drop(r);
        assert_eq!(opts.open(&path).unwrap().domain(), want, "case {i} at open");
    }
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn the_count_is_recorded_dirty_while_open_and_clean_after_close() {
    let f = Fixture::new(Some("memory_controller\n"), two_dimms(3, 4));
    let path = f.path("p");
    let r = f.opts().create(&path, 1 << 16).unwrap();
    assert!(r.shutdown_tracked());
    let open_record = ShutdownRecord {
        count: Some(7),
        device_id: r.nvdimm_region().unwrap().device_id,
        dirty: true,
    };
    assert_eq!(r.header().shutdown_record(), open_record);
    assert_eq!(record_on_file(&path), open_record);
    drop(r);
    let closed = ShutdownRecord {
        dirty: false,
        ..open_record
    };
    assert_eq!(record_on_file(&path), closed);
    // Unchanged count: opens, dirty while open, clean after.
    let r = f.opts().open(&path).unwrap();
    assert_eq!(record_on_file(&path), open_record);
    drop(r);
    assert_eq!(record_on_file(&path), closed);
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn a_count_that_moved_while_the_pool_was_closed_is_recorded() {
    let mut f = Fixture::new(None, two_dimms(3, 4));
    let path = f.path("p");
    drop(f.opts().create(&path, 1 << 16).unwrap());
    f.set_count(1, Some("5\n"));
    let r = f.opts().open(&path).unwrap();
    assert_eq!(r.header().shutdown_record().count, Some(8));
    drop(r);
    assert_eq!(record_on_file(&path).count, Some(8));
    assert!(!record_on_file(&path).dirty);
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn a_count_that_moved_while_the_pool_was_in_use_refuses_it_until_accepted() {
    let mut f = Fixture::new(None, two_dimms(3, 4));
    let (path, crashed) = (f.path("p"), f.path("crashed"));
    let r = f.opts().create(&path, 1 << 16).unwrap();
    crash_copy(&path, &crashed);
    drop(r);
    // The process died, the platform did not: the count is the same, the pool opens.
    let same = f.path("same");
    std::fs::copy(&crashed, &same).unwrap();
    drop(f.opts().open(&same).unwrap());
    assert!(!record_on_file(&same).dirty);

    // The platform failed to drain at that power loss: the count moved.
    f.set_count(0, Some("0x4\n"));
    let e = f.opts().open(&crashed).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsafeShutdown {
                recorded: 7,
                now: 8,
                device_changed: false,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("ptm check --accept-unsafe-shutdown"),
        "{e}"
    );
    // The refusal wrote nothing.
    assert!(record_on_file(&crashed).dirty);
    // Opening to verify leaves the record as it is: still refused afterwards.
    let r = f.opts().ignore_unsafe_shutdown(true).open(&crashed).unwrap();
    assert!(!r.shutdown_tracked());
    drop(r);
    assert_eq!(record_on_file(&crashed).count, Some(7));
    assert!(f.opts().open(&crashed).is_err());
    // Accepting records the new count as the clean state; the pool opens again.
    let accepted = accept_unsafe_shutdown(&crashed, &f.opts()).unwrap();
    assert_eq!((accepted.count, accepted.dirty), (Some(8), false));
    assert_eq!(record_on_file(&crashed), accepted);
    let r = f.opts().open(&crashed).unwrap();
    assert!(r.shutdown_tracked());
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn other_dimms_under_a_pool_that_was_in_use_refuse_it() {
    let f = Fixture::new(None, two_dimms(3, 4));
    let (path, crashed) = (f.path("p"), f.path("crashed"));
    let r = f.opts().create(&path, 1 << 16).unwrap();
    crash_copy(&path, &crashed);
    drop(r);
    // Same total count on other DIMMs (the pool was moved, or the DIMMs replaced).
    let other = Fixture::new(None, vec![FakeDimm::nfit("nmem2", 7)]);
    let e = other.opts().open(&crashed).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsafeShutdown {
                device_changed: true,
                ..
            }
        ),
        "{e}"
    );
    // Closed cleanly, the pool just takes the new DIMMs' count.
    let r = other.opts().open(&path).unwrap();
    assert_eq!(
        r.header().shutdown_record().device_id,
        r.nvdimm_region().unwrap().device_id
    );
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn an_unreadable_count_leaves_the_record_alone_and_the_dirty_mark_waits() {
    let mut f = Fixture::new(None, two_dimms(3, 4));
    let (path, crashed) = (f.path("p"), f.path("crashed"));
    let r = f.opts().create(&path, 1 << 16).unwrap();
    crash_copy(&path, &crashed);
    drop(r);
    let before = record_on_file(&crashed);
    // A DIMM's count is garbage: unknown. The pool opens, untracked, and keeps its record.
    f.set_count(1, Some("not a number\n"));
    let r = f.opts().open(&crashed).unwrap();
    assert!(!r.shutdown_tracked());
    drop(r);
    assert_eq!(record_on_file(&crashed), before);
    // Missing: the same.
    f.set_count(1, None);
    drop(f.opts().open(&crashed).unwrap());
    assert_eq!(record_on_file(&crashed), before);
    // Readable again and moved: the dirty mark from the crash still refuses it.
    f.set_count(1, Some("5\n"));
    assert!(matches!(
        f.opts().open(&crashed),
        Err(Error::UnsafeShutdown {
            recorded: 7,
            now: 8,
            ..
        })
    ));
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn a_pool_from_before_the_record_opens_and_starts_one() {
    let f = Fixture::new(None, two_dimms(1, 1));
    let path = f.path("p");
    // Without a tree (this machine's /sys has no NVDIMM): nothing recorded, as in pools
    // written before the field existed (its bytes were reserved, zero).
    let r = RegionOptions::new()
        .force_pmem(true)
        .sysfs_root(f.dir.path().join("no-sysfs"))
        .create(&path, 1 << 16)
        .unwrap();
    assert!(r.nvdimm_region().is_none() && !r.shutdown_tracked());
    drop(r);
    assert_eq!(record_on_file(&path), ShutdownRecord::default());
    let r = f.opts().open(&path).unwrap();
    assert_eq!(r.header().shutdown_record().count, Some(2));
    drop(r);
    assert_eq!(record_on_file(&path).count, Some(2));
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn the_journaled_engine_records_and_clears_the_mark_too() {
    let f = Fixture::new(None, two_dimms(1, 2));
    let path = f.path("p");
    let opts = RegionOptions::new()
        .engine(Engine::Journaled)
        .sysfs_root(f.sysfs.path());
    let r = opts.create(&path, 1 << 16).unwrap();
    assert_eq!(r.domain(), DomainKind::Journaled);
    assert!(r.shutdown_tracked() && record_on_file(&path).dirty);
    drop(r);
    let (h, _) = headers_on_file(&path);
    assert_eq!(h.flags & crate::header::FLAG_JOURNAL, 0);
    assert_eq!(h.shutdown_record().count, Some(3));
    assert!(!h.shutdown_record().dirty);
}

#[test]
fn durability_follows_the_domain_and_the_file_system() {
    use DomainKind::*;
    let insn = crate::flush::FlushInstruction::Clflush;
    let d = Durability::of;
    assert_eq!(d(CacheFlush(insn), true, false), Durability::PowerLoss);
    assert_eq!(d(Eadr, true, false), Durability::PowerLoss);
    assert_eq!(
        d(CacheFlush(insn), false, false),
        Durability::ProcessCrash,
        "forced"
    );
    assert_eq!(d(Eadr, false, false), Durability::ProcessCrash, "forced");
    assert_eq!(
        d(CacheFlush(insn), false, true),
        Durability::ProcessCrash,
        "tmpfs"
    );
    for kind in [Msync, Journaled, Paged] {
        assert_eq!(d(kind, false, false), Durability::PowerLoss, "{kind:?}");
        assert_eq!(
            d(kind, false, true),
            Durability::ProcessCrash,
            "{kind:?} on tmpfs"
        );
    }
    #[cfg(feature = "simulate")]
    assert_eq!(d(Simulated, false, false), Durability::ProcessCrash);
}

#[test]
#[cfg_attr(miri, ignore = "file system access")]
fn regions_report_what_their_domain_promises() {
    let disk = disk_dir();
    let on_disk = |engine| {
        RegionOptions::new()
            .engine(engine)
            .create(disk.path().join(engine.name()), 1 << 16)
            .unwrap()
    };
    let journaled = on_disk(Engine::Journaled);
    if journaled.map_sync() {
        return; // a DAX file system: the disk engines do not apply
    }
    assert_eq!(journaled.durability(), Durability::PowerLoss);
    assert_eq!(on_disk(Engine::Msync).durability(), Durability::PowerLoss);
    // Treated as persistent memory on a disk file system: flushes reach the page cache only.
    assert_eq!(on_disk(Engine::Pmem).durability(), Durability::ProcessCrash);
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    let tmp = tempfile::tempdir_in(shm).unwrap();
    let emulated = RegionOptions::new()
        .force_pmem(true)
        .create(tmp.path().join("p"), 1 << 16)
        .unwrap();
    assert_eq!(emulated.durability(), Durability::ProcessCrash);
    // A pool file on disk whose journal is on tmpfs survives only what the journal survives.
    let split = RegionOptions::new()
        .engine(Engine::Journaled)
        .journal(crate::JournalOptions::new().path(tmp.path().join("j")))
        .create(disk.path().join("split"), 1 << 16)
        .unwrap();
    assert_eq!(split.durability(), Durability::ProcessCrash);
}

/// `/dev/zero` made to look like a device-DAX node: a character device that maps shared
/// (every mapping of it is fresh zeros, so a pool created on it cannot be reopened), reached
/// through a symlink in a temporary directory, and described as device-DAX (`subsystem` →
/// `dax`, `size`, `device/align`) by a fake sysfs tree in which it is a namespace of `region0`.
struct FakeDax {
    _dir: tempfile::TempDir,
    sysfs: tempfile::TempDir,
    node: PathBuf,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl FakeDax {
    /// `None` where `/dev/zero` is missing. Holds a lock to the fixture's end: the pool lock
    /// is an `flock` on the device, which every `FakeDax` shares.
    fn new(domain: Option<&str>, size: u64) -> Option<FakeDax> {
        static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let rdev = std::fs::metadata("/dev/zero").ok()?.rdev();
        let dir = tempfile::tempdir().unwrap();
        let sysfs = tempfile::tempdir().unwrap();
        let rdir = region(sysfs.path(), "region0", domain, &two_dimms(0, 0), "char", rdev);
        let node_dir = rdir.join("dax0.0/dax0.0");
        std::fs::create_dir_all(node_dir.join("device")).unwrap();
        std::fs::create_dir_all(sysfs.path().join("bus/dax")).unwrap();
        std::os::unix::fs::symlink(sysfs.path().join("bus/dax"), node_dir.join("subsystem")).unwrap();
        std::fs::write(node_dir.join("device/align"), "4096\n").unwrap();
        let node = dir.path().join("dax0.0");
        std::os::unix::fs::symlink("/dev/zero", &node).unwrap();
        let f = FakeDax {
            _dir: dir,
            sysfs,
            node,
            _serial: serial,
        };
        f.set_size(size);
        Some(f)
    }

    /// Sets the device size sysfs reports.
    fn set_size(&self, size: u64) {
        let node_dir = self
            .sysfs
            .path()
            .join("devices/platform/ndbus0/region0/dax0.0/dax0.0");
        std::fs::write(node_dir.join("size"), format!("{size}\n")).unwrap();
    }

    /// Options reading this fixture's tree, on the default engine, not forced.
    fn opts(&self) -> RegionOptions {
        RegionOptions::new()
            .force_pmem(false)
            .sysfs_root(self.sysfs.path())
    }
}

#[test]
#[cfg_attr(miri, ignore = "file system access and mmap of a device")]
fn a_device_dax_pool_takes_the_whole_device_as_persistent_memory() {
    let Some(dax) = FakeDax::new(Some("memory_controller\n"), (1 << 20) + 100) else {
        return;
    };
    let pmem = match detected_flush_instruction() {
        Some(insn) => DomainKind::CacheFlush(insn),
        None => DomainKind::Msync, // no flush instruction: the msync fallback
    };
    // Size 0 or the device's (whole pages): the pool is the device, persistent memory whatever
    // the engine says.
    for size in [0, 1 << 20] {
        let r = dax.opts().create(&dax.node, size).unwrap();
        assert_eq!(r.backing(), Backing::DeviceDax);
        assert_eq!(r.domain(), pmem, "size {size}");
        assert_eq!((r.header().pool_size, r.len()), (1 << 20, 1 << 20), "size {size}");
        assert_eq!(r.nvdimm_region().unwrap().name, "region0");
    }
    // Another size is refused, and the node is left where it is.
    let e = dax.opts().create(&dax.node, 1 << 16).unwrap_err();
    assert!(matches!(e, Error::InvalidSize { size: 65536, .. }), "{e}");
    assert!(
        std::fs::symlink_metadata(&dax.node).is_ok(),
        "the node was removed"
    );
    // A device too small for a pool.
    dax.set_size(3 * 4096 + 100);
    let e = dax.opts().create(&dax.node, 0).unwrap_err();
    assert!(matches!(e, Error::InvalidSize { size: 12288, .. }), "{e}");
    assert!(
        std::fs::symlink_metadata(&dax.node).is_ok(),
        "the node was removed"
    );
    drop(dax);
    // eADR from the region's persistence domain.
    let dax = FakeDax::new(Some("cpu_cache\n"), 1 << 20).unwrap();
    let r = dax.opts().create(&dax.node, 0).unwrap();
    if pmem != DomainKind::Msync {
        assert_eq!(r.domain(), DomainKind::Eadr);
    }
}

#[test]
#[cfg_attr(miri, ignore = "file system access and mmap of a device")]
fn opening_a_device_dax_node_checks_its_size_then_its_header() {
    let Some(dax) = FakeDax::new(None, 3 * 4096 + 100) else {
        return;
    };
    // Whole pages only, and at least a minimum pool.
    let e = dax.opts().open(&dax.node).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                len: 12288,
                expected: 16384,
                ..
            }
        ),
        "{e}"
    );
    // Exactly a minimum pool: read through the mapping, which holds no pool.
    dax.set_size(16384);
    let e = dax.opts().open(&dax.node).unwrap_err();
    assert!(matches!(e, Error::NotAPool { .. }), "{e}");
}
