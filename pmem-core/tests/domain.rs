//! Guards persistence-domain selection for each kind of file this machine can have, and the
//! persist → close → remap round trip in the msync and cache-flush domains.

mod common;

use pmem_core::{detected_flush_instruction, Backing, DomainKind, PPtr, RegionOptions};

#[test]
fn plain_file_on_disk_is_msync() {
    let dir = common::disk_dir();
    let fs = common::fs_type(dir.path());
    let r = RegionOptions::new()
        .force_pmem(false)
        .create(common::pool_path(&dir, "disk.pool"), 1 << 20)
        .unwrap();
    assert_eq!(r.backing(), Backing::File);
    if fs != "tmpfs" {
        // ext4/xfs without -o dax: the kernel refuses MAP_SYNC.
        assert!(!r.map_sync(), "MAP_SYNC accepted on {fs}");
    }
    if !r.map_sync() {
        assert_eq!(r.domain(), DomainKind::Msync, "on {fs}");
    }
}

#[test]
fn tmpfs_file_is_msync_unless_forced() {
    let dir = common::shm_dir();
    let r = RegionOptions::new()
        .force_pmem(false)
        .create(common::pool_path(&dir, "shm.pool"), 1 << 20)
        .unwrap();
    assert!(!r.map_sync(), "tmpfs does not support MAP_SYNC");
    assert_eq!(r.domain(), DomainKind::Msync);
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
        assert_eq!(r.domain(), DomainKind::Msync);
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
fn round_trip(dir: &tempfile::TempDir, force: bool, expect_msync: bool) {
    let path = common::pool_path(dir, "rt.pool");
    let opts = RegionOptions::new().layout("rt").force_pmem(force);
    let mut r = opts.create(&path, 4 << 20).unwrap();
    assert_eq!(r.domain() == DomainKind::Msync, expect_msync);
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
        .force_pmem(force)
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
    round_trip(&common::disk_dir(), false, true);
}

#[test]
fn persist_and_remap_round_trip_in_the_cache_flush_domain() {
    round_trip(&common::shm_dir(), true, false);
}

#[test]
fn data_persisted_in_the_msync_domain_is_in_the_file() {
    // msync writes through the page cache to the file: a plain read() sees the bytes.
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "file.pool");
    let mut r = RegionOptions::new()
        .force_pmem(false)
        .create(&path, 1 << 20)
        .unwrap();
    let off = r.data_range().start + 5000;
    r.write_at(off, b"durable bytes").unwrap();
    r.persist(off, 13).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[off as usize..off as usize + 13], b"durable bytes");
    drop(r);
}
