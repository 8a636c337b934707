//! Guards growing a pool at the region level: `Region::grow` extends an open pool in place on
//! every engine that maps a file (base, data and offsets unchanged, new bytes zero, both header
//! copies at the new size after close), refuses what it cannot do, `grow_file` grows a closed
//! pool, and an open finishes or undoes a grow a crash interrupted.

use crate::common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use pmem_core::{grow_file, DomainKind, Engine, Error, PoolHeader, Region, RegionOptions, HEADER_SIZE};

const OLD: u64 = 64 << 10;
const NEW: u64 = 192 << 10;
const HS: u64 = HEADER_SIZE as u64;

fn header_at(path: &Path, off: u64) -> PoolHeader {
    let mut buf = vec![0u8; HEADER_SIZE];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, off)
        .unwrap();
    pmem_core::read_from_bytes(&buf).unwrap()
}

/// Grows an open pool of `engine` from `OLD` to `NEW`, writing before and after, then checks
/// the file after close and a reopen.
fn grow_open(dir: &tempfile::TempDir, engine: Engine, expect: fn(DomainKind) -> bool) {
    let path = common::pool_path(dir, "grow.pool");
    let opts = RegionOptions::new().engine(engine).grow_room(1 << 20);
    let mut r = opts.create(&path, OLD).unwrap();
    assert!(expect(r.domain()), "{:?}", r.domain());
    assert_eq!(r.grow_room(), 1 << 20, "{:?}", r.domain());
    let start = r.data_range().start;
    r.write_at(start, b"before the grow!").unwrap();
    r.persist(start, 16).unwrap();
    let base = r.base();
    r.grow(NEW).unwrap();
    assert_eq!((r.len(), r.base()), (NEW, base), "{:?}", r.domain());
    assert_eq!(r.data_range(), start..NEW - HS);
    let mut old = [0u8; 16];
    r.read_at(start, &mut old).unwrap();
    assert_eq!(&old, b"before the grow!");
    // The new data bytes are zero (the old backup's place keeps its bytes: data area now).
    let mut fresh = vec![1u8; (NEW - HS - OLD) as usize];
    r.read_at(OLD, &mut fresh).unwrap();
    assert!(fresh.iter().all(|&b| b == 0), "{:?}", r.domain());
    let last = NEW - HS - 16;
    r.write_at(last, b"after the grow!!").unwrap();
    r.persist(last, 16).unwrap();
    drop(r);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), NEW);
    let (primary, backup) = (header_at(&path, 0), header_at(&path, NEW - HS));
    assert_eq!(
        primary.as_bytes(),
        backup.as_bytes(),
        "both copies at the new size"
    );
    assert_eq!(
        (primary.pool_size, primary.data_size, primary.backup_offset),
        (NEW, NEW - 2 * HS, NEW - HS)
    );
    let r = opts.open(&path).unwrap();
    assert_eq!(r.len(), NEW);
    let mut back = [0u8; 16];
    r.read_at(last, &mut back).unwrap();
    assert_eq!(&back, b"after the grow!!");
    r.read_at(start, &mut back).unwrap();
    assert_eq!(&back, b"before the grow!");
}

#[test]
fn an_open_msync_pool_grows_in_place() {
    grow_open(&common::disk_dir(), Engine::Msync, |k| k == DomainKind::Msync);
}

#[test]
fn an_open_journaled_pool_grows_in_place() {
    grow_open(&common::disk_dir(), Engine::Journaled, |k| {
        k == DomainKind::Journaled
    });
}

#[test]
fn an_open_cache_flush_pool_grows_in_place() {
    grow_open(&common::shm_dir(), Engine::Pmem, |k| {
        matches!(k, DomainKind::CacheFlush(_) | DomainKind::Eadr)
    });
}

#[test]
fn grow_refuses_sizes_it_cannot_reach_and_leaves_the_pool() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "refuse.pool");
    let r = RegionOptions::new()
        .engine(Engine::Msync)
        .grow_room(256 << 10)
        .create(&path, OLD)
        .unwrap();
    assert_eq!(r.grow_room(), 256 << 10);
    for size in [OLD, OLD - 4096] {
        assert!(matches!(r.grow(size), Err(Error::CannotGrow { .. })), "{size}");
    }
    assert!(matches!(
        r.grow((256 << 10) + 4096),
        Err(Error::CannotGrow { .. })
    ));
    assert!(matches!(r.grow(OLD + 100), Err(Error::InvalidSize { .. })));
    assert_eq!(r.len(), OLD);
    // Exactly the reserved room is reachable.
    r.grow(256 << 10).unwrap();
    assert_eq!(r.len(), 256 << 10);
    drop(r);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 256 << 10);
}

#[cfg(feature = "simulate")]
#[test]
fn a_simulated_region_cannot_grow_while_open() {
    let dir = common::disk_dir();
    let r = RegionOptions::new()
        .simulate(pmem_core::Simulation::new())
        .create(common::pool_path(&dir, "sim.pool"), OLD)
        .unwrap();
    assert_eq!(r.grow_room(), OLD, "no room reserved");
    assert!(matches!(r.grow(NEW), Err(Error::CannotGrow { .. })));
    assert_eq!(r.len(), OLD);
}

#[test]
fn grow_file_grows_a_closed_pool() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "closed.pool");
    let mut r = RegionOptions::new()
        .engine(Engine::Msync)
        .create(&path, OLD)
        .unwrap();
    let start = r.data_range().start;
    r.write_at(start, &[7; 8]).unwrap();
    r.persist(start, 8).unwrap();
    drop(r);
    let before = pmem_core::thread_stats();
    let report = grow_file(&path, NEW).unwrap();
    // Each of the three header writes (the mark, the new backup, the new primary) is synced
    // before the next step.
    assert_eq!(pmem_core::thread_stats().since(&before).fsyncs, 3);
    // The new space is allocated (not a hole the first store into would have to find room
    // for, and fail to with SIGBUS on a full file system).
    let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
    assert!(blocks * 512 >= NEW - OLD, "{blocks} blocks");
    assert_eq!((report.old_size, report.new_size), (OLD, NEW));
    assert!(matches!(grow_file(&path, NEW), Err(Error::CannotGrow { .. })));
    let r = Region::open(&path).unwrap();
    assert_eq!(r.len(), NEW);
    let mut b = [0u8; 8];
    r.read_at(start, &mut b).unwrap();
    assert_eq!(b, [7; 8]);
}

/// `h` with a grow to `target` marked (flag bit 1, the target in bytes 176..184), checksummed.
fn marked(h: &PoolHeader, target: u64) -> PoolHeader {
    let mut bytes = h.as_bytes().to_vec();
    bytes[176..184].copy_from_slice(&target.to_le_bytes());
    let mut m: PoolHeader = pmem_core::read_from_bytes(&bytes).unwrap();
    m.flags |= pmem_core::internals::header::FLAG_GROWING;
    m.checksum = m.compute_checksum();
    assert_eq!(m.grow_target(), target);
    m
}

/// `h` at `size` bytes, as a finished grow writes it.
fn grown(h: &PoolHeader, size: u64) -> PoolHeader {
    let mut g = *h;
    g.pool_size = size;
    g.data_size = size - 2 * HS;
    g.backup_offset = size - HS;
    g.checksum = g.compute_checksum();
    g
}

/// A closed `OLD`-byte pool with 8 bytes of data; returns the path, its header and the
/// data's offset.
fn closed_pool(dir: &tempfile::TempDir, name: &str) -> (std::path::PathBuf, PoolHeader, u64) {
    let path = common::pool_path(dir, name);
    let mut r = RegionOptions::new()
        .engine(Engine::Msync)
        .create(&path, OLD)
        .unwrap();
    let start = r.data_range().start;
    r.write_at(start, &[5; 8]).unwrap();
    r.persist(start, 8).unwrap();
    drop(r);
    (path.clone(), header_at(&path, 0), start)
}

fn write_at(path: &Path, off: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn set_len(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Opens the pool and checks it is `size` bytes, its header unmarked, its data intact.
fn opens_at(path: &Path, size: u64, start: u64) {
    let r = Region::open(path).unwrap();
    assert_eq!(r.len(), size);
    assert_eq!(std::fs::metadata(path).unwrap().len(), size);
    assert_eq!(r.header().grow_target(), 0);
    assert_eq!(r.header().pool_size, size);
    let mut b = [0u8; 8];
    r.read_at(start, &mut b).unwrap();
    assert_eq!(b, [5; 8]);
    drop(r);
    assert_eq!(
        header_at(path, 0).grow_target(),
        0,
        "the mark is gone from the file"
    );
}

#[test]
fn a_grow_interrupted_before_the_new_header_is_undone_at_open() {
    let dir = common::disk_dir();
    // Crash right after the mark: the file has its old length.
    let (path, h, start) = closed_pool(&dir, "marked.pool");
    write_at(&path, 0, marked(&h, NEW).as_bytes());
    opens_at(&path, OLD, start);
    // Crash after the file was extended.
    let (path, h, start) = closed_pool(&dir, "extended.pool");
    write_at(&path, 0, marked(&h, NEW).as_bytes());
    set_len(&path, NEW);
    opens_at(&path, OLD, start);
}

#[test]
fn a_grow_interrupted_after_the_new_backup_is_finished_at_open() {
    let dir = common::disk_dir();
    let (path, h, start) = closed_pool(&dir, "forward.pool");
    write_at(&path, 0, marked(&h, NEW).as_bytes());
    set_len(&path, NEW);
    write_at(&path, NEW - HS, grown(&h, NEW).as_bytes());
    opens_at(&path, NEW, start);
    assert_eq!(header_at(&path, 0).as_bytes(), grown(&h, NEW).as_bytes());
}

/// Makes a header from a pool's header.
type HeaderEdit = fn(&PoolHeader) -> PoolHeader;

#[test]
fn a_new_backup_that_does_not_fit_the_grow_is_not_finished() {
    let dir = common::disk_dir();
    // (the header found at the end of the file, the file length)
    let variants: [(HeaderEdit, u64); 4] = [
        // another pool's
        (
            |h| {
                let mut g = grown(h, NEW);
                g.uuid[0] ^= 1;
                g.checksum = g.compute_checksum();
                g
            },
            NEW,
        ),
        // still marked as growing
        (|h| marked(&grown(h, NEW), NEW), NEW),
        // of another size, at the new size's backup place
        (
            |h| {
                let mut g = grown(h, NEW);
                g.pool_size = NEW + 4096;
                g.checksum = g.compute_checksum();
                g
            },
            NEW,
        ),
        // a file longer than the target, a pool header of its length at its end
        (|h| grown(h, NEW + 4096), NEW + 4096),
    ];
    for (i, (backup, len)) in variants.into_iter().enumerate() {
        let (path, h, start) = closed_pool(&dir, &format!("v{i}.pool"));
        write_at(&path, 0, marked(&h, NEW).as_bytes());
        set_len(&path, len);
        write_at(&path, len - HS, backup(&h).as_bytes());
        opens_at(&path, OLD, start);
    }
}

#[test]
fn a_grown_journaled_pool_journals_only_its_new_data_area() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "journal-end.pool");
    let mut r = RegionOptions::new()
        .engine(Engine::Journaled)
        .grow_room(1 << 20)
        .create(&path, OLD)
        .unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    r.grow(NEW).unwrap();
    common::assert_backup_header_not_journaled(&mut r, NEW - HS - 8, "grown");
}

#[test]
fn a_journaled_pool_grown_past_256_kib_journals_and_checkpoints_its_new_pages() {
    // The journal's dirty-page bitmap is sized at open for the whole grow room: pages past the
    // first 64-page word of a 64 KiB pool are tracked once it grew to 1 MiB, and a checkpoint
    // (the close) writes them home.
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "bitmap.pool");
    let opts = RegionOptions::new().engine(Engine::Journaled).grow_room(1 << 20);
    let mut r = opts.create(&path, OLD).unwrap();
    if r.domain() != DomainKind::Journaled {
        return; // a DAX file system: no journal here
    }
    r.grow(1 << 20).unwrap();
    let last = (1 << 20) - HS - 4096;
    r.write_at(last, &[6; 64]).unwrap();
    r.persist(last, 64).unwrap();
    drop(r);
    let mut back = [0u8; 64];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut back, last)
        .unwrap();
    assert_eq!(back, [6; 64], "the checkpoint at close wrote the page home");
}
