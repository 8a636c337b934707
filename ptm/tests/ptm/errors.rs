//! Guards the errors of opening pools: wrong layout, wrong root type, damaged or missing
//! transaction metadata, bad options, a locked pool — each clear, none a panic.

use crate::common;

use std::os::unix::fs::FileExt;

use ptm::{Error, PCell, Persistent, Pool, PoolOptions};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    a: PCell<u64>,
}

fn make(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = common::path(dir, "e.pool");
    Pool::<Root>::create(&p, 8 << 20, &common::pmem()).unwrap();
    p
}

#[test]
fn wrong_layout() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let e = Pool::<Root>::open(&p, &common::pmem().layout("other")).unwrap_err();
    assert!(
        matches!(e, Error::Core(ptm::pmem_core::Error::LayoutMismatch { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("layout mismatch"), "{e}");
}

#[test]
fn wrong_root_type() {
    let dir = common::shm_dir();
    let p = make(&dir);
    // The pool records its root's schema: another root type is named.
    let e = Pool::<[u64; 4]>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(&e, Error::SchemaMismatch { at, stored, .. } if at == "[u64; 4]" && stored == "Root (8 bytes)"),
        "{e:?}"
    );
    // A pool with no schema recorded (made before schemas were) is checked by size.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0u8; 8], 4096 + 1024).unwrap();
    drop(f);
    let e = Pool::<[u64; 4]>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::RootMismatch {
                expected: 32,
                found: 8
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_pool_without_a_schema_records_the_first_typed_root_and_refuses_the_unit_type() {
    let dir = common::shm_dir();
    let p = common::path(&dir, "any.pool");
    // No schema recorded (a tool's pool): `open` checks the root size. A zero-sized root
    // type is no wildcard (only `open_any` is), and must not record its schema either.
    Pool::<()>::create_any(&p, 8 << 20, 8, &common::pmem()).unwrap();
    let e = Pool::<()>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::RootMismatch {
                expected: 0,
                found: 8
            }
        ),
        "{e:?}"
    );
    let pool = Pool::<Root>::open(&p, &common::pmem()).unwrap();
    pool.transaction(|tx, r| r.a.set(tx, 7)).unwrap();
    drop(pool);
    let pool = Pool::<()>::open_any(&p, &common::pmem()).unwrap();
    drop(pool);
    // The first typed open recorded `Root`'s schema: a type of the same size is named.
    let e = Pool::<[u64; 1]>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(&e, Error::SchemaMismatch { at, stored, .. } if at == "[u64; 1]" && stored == "Root (8 bytes)"),
        "{e:?}"
    );
    let pool = Pool::<Root>::open(&p, &common::pmem()).unwrap();
    assert_eq!(pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap(), 7);
}

#[test]
fn damaged_superblock() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xff], 4096 + 20).unwrap();
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CorruptMetadata {
                what: "superblock checksum mismatch",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_bare_region_is_not_a_transaction_pool() {
    let dir = common::shm_dir();
    let p = common::path(&dir, "bare.pool");
    drop(
        ptm::pmem_core::RegionOptions::new()
            .layout("test")
            .create(&p, 1 << 20)
            .unwrap(),
    );
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(matches!(e, Error::CorruptMetadata { .. }), "{e:?}");
    assert!(e.to_string().contains("not a ptm transaction pool"), "{e}");
}

#[test]
fn locked_pool() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let _held = Pool::<Root>::open(&p, &common::pmem()).unwrap();
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(e, Error::Core(ptm::pmem_core::Error::PoolLocked { .. })),
        "{e:?}"
    );
}

#[test]
fn bad_options_and_too_small_pools() {
    let dir = common::shm_dir();
    let o = PoolOptions::new();
    assert!(matches!(
        Pool::<Root>::create(common::path(&dir, "a"), 8 << 20, &o.clone().lanes(0)),
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        Pool::<Root>::create(common::path(&dir, "b"), 8 << 20, &o.clone().lanes(5000)),
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        Pool::<Root>::create(common::path(&dir, "c"), 8 << 20, &o.clone().lane_size(5000)),
        Err(Error::InvalidOptions(_))
    ));
    // Each of the lane size's two conditions on its own: a multiple of 4096 below the
    // minimum, and a size above the minimum that is not a multiple. The error names the lane
    // size (not a geometry that does not fit).
    for (name, lane_size) in [("c1", 4096), ("c2", 9000)] {
        assert!(
            matches!(
                Pool::<Root>::create(common::path(&dir, name), 8 << 20, &o.clone().lane_size(lane_size)),
                Err(Error::InvalidOptions(what)) if what.contains("lane size")
            ),
            "lane size {lane_size}"
        );
    }
    let small = common::path(&dir, "d");
    assert!(matches!(
        Pool::<Root>::create(&small, 1 << 20, &o),
        Err(Error::InvalidOptions(_))
    ));
    assert!(!small.exists(), "a refused create leaves no file");
    assert!(matches!(
        Pool::<[u8; 1 << 20]>::create(common::path(&dir, "e"), 1 << 20, &o.clone().lanes(1)),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn not_a_pool_at_all() {
    let dir = common::shm_dir();
    let p = common::path(&dir, "text");
    std::fs::write(&p, "hello").unwrap();
    let e = Pool::<Root>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(e, Error::Core(ptm::pmem_core::Error::NotAPool { .. })),
        "{e:?}"
    );
}

#[test]
fn any_root_opens_for_tools() {
    let dir = common::shm_dir();
    let p = make(&dir);
    let mut pool = Pool::<()>::open_any(&p, &common::pmem()).unwrap();
    assert_eq!(pool.geometry().root_size, 8);
    pool.check_heap().unwrap();
    drop(pool);
    Pool::<Root>::open(&p, &common::pmem()).unwrap();
}

/// A fake sysfs tree in which the file system holding `dir` is a namespace of a libnvdimm
/// region on one DIMM whose unsafe-shutdown count is `count`.
fn fake_nvdimm(sysfs: &std::path::Path, dir: &std::path::Path, count: u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir).unwrap().dev();
    let region = sysfs.join("devices/ndbus0/region0");
    let ns = region.join("namespace0.0/block/pmem0");
    std::fs::create_dir_all(&ns).unwrap();
    std::fs::write(region.join("persistence_domain"), "memory_controller\n").unwrap();
    std::fs::write(region.join("mapping0"), "nmem0,0,1073741824,0\n").unwrap();
    let nfit = sysfs.join("bus/nd/devices/nmem0/nfit");
    std::fs::create_dir_all(&nfit).unwrap();
    std::fs::write(nfit.join("dirty_shutdown"), format!("{count}\n")).unwrap();
    let links = sysfs.join("dev/block");
    std::fs::create_dir_all(&links).unwrap();
    let link = links.join(format!("{}:{}", libc_major(dev), libc_minor(dev)));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&ns, link).unwrap();
}

/// `major(dev)` as glibc computes it.
fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

/// `minor(dev)` as glibc computes it.
fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}

#[test]
fn an_unsafe_shutdown_while_the_pool_was_in_use_is_refused_by_name() {
    let dir = common::shm_dir();
    let sysfs = tempfile::tempdir().unwrap();
    fake_nvdimm(sysfs.path(), dir.path(), 5);
    let opts = common::pmem().sysfs_root(sysfs.path());
    let p = common::path(&dir, "usc.pool");
    let crashed = common::path(&dir, "crashed.pool");
    let pool = Pool::<Root>::create(&p, 8 << 20, &opts).unwrap();
    pool.transaction(|tx, r| r.a.set(tx, 9)).unwrap();
    // The image a power loss leaves while the pool is open (dirty, count 5 recorded).
    common::crash_image(&p, &crashed);
    drop(pool);
    // The platform failed to drain: the device counted it.
    fake_nvdimm(sysfs.path(), dir.path(), 6);
    let e = Pool::<Root>::open(&crashed, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Core(ptm::pmem_core::Error::UnsafeShutdown {
                recorded: 5,
                now: 6,
                ..
            })
        ),
        "{e:?}"
    );
    // The application may open it to verify its data; the refusal stands until accepted.
    let pool = Pool::<Root>::open(&crashed, &opts.clone().ignore_unsafe_shutdown(true)).unwrap();
    let a = pool.transaction(|tx, r| Ok::<_, Error>(r.a.get(tx))).unwrap();
    assert_eq!(a, 9);
    drop(pool);
    assert!(Pool::<Root>::open(&crashed, &opts).is_err());
    let region_opts = ptm::pmem_core::RegionOptions::new()
        .force_pmem(true)
        .sysfs_root(sysfs.path());
    ptm::pmem_core::accept_unsafe_shutdown(&crashed, &region_opts).unwrap();
    drop(Pool::<Root>::open(&crashed, &opts).unwrap());
    // The pool closed cleanly before the count moved opens without a word.
    drop(Pool::<Root>::open(&p, &opts).unwrap());
}

/// Root types whose schemas are too long to keep in the pool (its fingerprint only is kept):
/// the same size, other field names.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct LongA {
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_00: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_01: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_02: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_03: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_04: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_05: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_06: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_07: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_08: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_09: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_10: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_11: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_12: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_13: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_14: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_15: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_16: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_17: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_18: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_19: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_20: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_21: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_22: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_23: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_24: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_25: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_26: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_27: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_28: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_29: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_30: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_31: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_32: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_33: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_34: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_35: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_36: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_37: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_38: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_39: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_40: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_41: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_42: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_43: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_44: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_45: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_46: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_47: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_48: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_49: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_50: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_51: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_52: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_53: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_54: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_55: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_56: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_57: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_58: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_59: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_60: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_61: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_62: PCell<u64>,
    a_field_whose_name_is_long_enough_to_fill_the_schema_record_63: PCell<u64>,
}

/// [`LongA`] with other field names.
#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct LongB {
    another_field_whose_name_is_long_enough_to_fill_the_record_00: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_01: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_02: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_03: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_04: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_05: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_06: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_07: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_08: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_09: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_10: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_11: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_12: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_13: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_14: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_15: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_16: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_17: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_18: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_19: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_20: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_21: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_22: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_23: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_24: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_25: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_26: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_27: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_28: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_29: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_30: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_31: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_32: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_33: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_34: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_35: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_36: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_37: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_38: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_39: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_40: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_41: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_42: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_43: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_44: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_45: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_46: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_47: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_48: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_49: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_50: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_51: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_52: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_53: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_54: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_55: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_56: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_57: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_58: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_59: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_60: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_61: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_62: PCell<u64>,
    another_field_whose_name_is_long_enough_to_fill_the_record_63: PCell<u64>,
}

#[test]
fn a_schema_kept_as_a_fingerprint_refuses_another_root_type() {
    let dir = common::shm_dir();
    let p = common::path(&dir, "long.pool");
    let pool = Pool::<LongA>::create(&p, 8 << 20, &common::pmem()).unwrap();
    let recorded = ptm::read_root_schema(pool.region()).unwrap();
    assert!(
        matches!(recorded, ptm::RootSchema::Fingerprint(_)),
        "{recorded:?}"
    );
    pool.transaction(|tx, r| {
        r.a_field_whose_name_is_long_enough_to_fill_the_schema_record_63
            .set(tx, 3)
    })
    .unwrap();
    drop(pool);
    let e = Pool::<LongB>::open(&p, &common::pmem()).unwrap_err();
    assert!(
        matches!(&e, Error::SchemaMismatch { stored, .. } if stored.starts_with("another schema")),
        "{e:?}"
    );
    let pool = Pool::<LongA>::open(&p, &common::pmem()).unwrap();
    let v = pool.transaction(|tx, r| {
        Ok::<_, Error>(
            r.a_field_whose_name_is_long_enough_to_fill_the_schema_record_63
                .get(tx),
        )
    });
    assert_eq!(v.unwrap(), 3);
}
