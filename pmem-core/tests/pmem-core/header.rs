//! Guards pool-header validation: every kind of damage (magic, checksum, version, size, geometry,
//! truncation, a random non-pool file) gives its own error, the backup copy is found and used for
//! repair, and no byte flip is ever accepted silently or causes a panic.

use crate::common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use pmem_core::{repair_headers, Error, HeaderProblem, HeaderRepair, Region, RegionOptions};
use pmem_core::{PoolHeader, HEADER_SIZE};
use proptest::prelude::*;

const SIZE: u64 = 64 * 1024;

fn make_pool(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    let path = common::pool_path(dir, name);
    let mut r = RegionOptions::new()
        .layout("hdr-test")
        .create(&path, SIZE)
        .unwrap();
    let off = r.data_range().start;
    r.write_at(off, b"payload").unwrap();
    r.persist(off, 7).unwrap();
    path
}

fn read_header(path: &Path, offset: u64) -> PoolHeader {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; HEADER_SIZE];
    f.read_exact_at(&mut buf, offset).unwrap();
    pmem_core::read_from_bytes(&buf).unwrap()
}

fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Rewrites the primary header with `edit` applied and a correct checksum.
fn edit_primary(path: &Path, edit: impl FnOnce(&mut PoolHeader)) {
    let mut h = read_header(path, 0);
    edit(&mut h);
    h.checksum = h.compute_checksum();
    write_bytes(path, 0, h.as_bytes());
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset).unwrap();
}

#[test]
fn a_fresh_pool_has_two_equal_valid_copies() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "fresh.pool");
    let primary = read_header(&path, 0);
    let backup = read_header(&path, SIZE - HEADER_SIZE as u64);
    assert_eq!(primary.as_bytes(), backup.as_bytes());
    assert_eq!(primary.compute_checksum(), primary.checksum);
    assert_eq!(primary.layout_name(), "hdr-test");
    assert_eq!(primary.pool_size, SIZE);
    assert_ne!(primary.pptr_tag, 0);
    assert_eq!(&primary.magic, b"PTMPOOL\0");
}

#[test]
fn bad_magic_is_corruption_with_intact_backup() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "magic.pool");
    flip(&path, 0, 0x01);
    match Region::open(&path) {
        Err(Error::CorruptHeader {
            problem: HeaderProblem::BadMagic,
            backup_intact: true,
            ..
        }) => {}
        other => panic!("expected CorruptHeader(BadMagic), got {other:?}"),
    }
}

#[test]
fn checksum_mismatch_is_its_own_error() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "crc.pool");
    flip(&path, 1000, 0x80); // reserved area: only the checksum notices
    match Region::open(&path) {
        Err(Error::CorruptHeader {
            problem: HeaderProblem::ChecksumMismatch { stored, computed },
            backup_intact: true,
            ..
        }) => {
            assert_ne!(stored, computed)
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
}

#[test]
fn newer_version_is_unsupported_version() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "version.pool");
    edit_primary(&path, |h| h.version = 99);
    match Region::open(&path) {
        Err(Error::UnsupportedVersion {
            found: 99,
            supported: 1,
            ..
        }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    // A genuinely newer pool has a newer backup too. A newer format may have moved the
    // checksum: with no intact version-1 backup, a bad checksum is reported as the version.
    let newer = read_header(&path, 0);
    write_bytes(&path, SIZE - HEADER_SIZE as u64, newer.as_bytes());
    flip(&path, 2000, 1);
    assert!(matches!(
        Region::open(&path),
        Err(Error::UnsupportedVersion { found: 99, .. })
    ));
}

#[test]
fn recorded_size_differing_from_the_file_is_size_mismatch() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "size.pool");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(SIZE + 4096)
        .unwrap();
    match Region::open(&path) {
        Err(Error::SizeMismatch { header, file, .. }) => assert_eq!((header, file), (SIZE, SIZE + 4096)),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
}

#[test]
fn corrupted_size_field_is_bad_geometry() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "geom.pool");
    edit_primary(&path, |h| h.pool_size = SIZE + 4096);
    match Region::open(&path) {
        Err(Error::CorruptHeader {
            problem: HeaderProblem::BadGeometry { field },
            backup_intact: true,
            ..
        }) => {
            assert_eq!(field, "backup_offset")
        }
        other => panic!("expected BadGeometry, got {other:?}"),
    }
}

#[test]
fn unknown_flags_are_refused() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "flags.pool");
    edit_primary(&path, |h| h.flags = 4);
    assert!(matches!(
        Region::open(&path),
        Err(Error::CorruptHeader {
            problem: HeaderProblem::UnknownFlags { flags: 4 },
            ..
        })
    ));
}

#[test]
fn truncated_pool_is_truncated() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "trunc.pool");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(SIZE / 2)
        .unwrap();
    match Region::open(&path) {
        Err(Error::Truncated { len, expected, .. }) => assert_eq!((len, expected), (SIZE / 2, SIZE)),
        other => panic!("expected Truncated, got {other:?}"),
    }
    // Cut inside the header itself.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    match Region::open(&path) {
        Err(Error::Truncated {
            len: 100, expected, ..
        }) => assert_eq!(expected, SIZE),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn random_file_and_empty_file_are_not_a_pool() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "random.bin");
    let bytes: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        matches!(Region::open(&path), Err(Error::NotAPool { .. })),
        "{:?}",
        Region::open(&path).err()
    );
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(Region::open(&path), Err(Error::NotAPool { .. })));
    std::fs::write(&path, b"#!/bin/sh\necho not a pool\n").unwrap();
    assert!(matches!(Region::open(&path), Err(Error::NotAPool { .. })));
}

#[test]
fn a_directory_is_not_a_pool() {
    let dir = common::disk_dir();
    let err = Region::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::Io { .. } | Error::NotAPool { .. }),
        "{err:?}"
    );
}

#[test]
fn both_copies_damaged_reports_backup_damaged() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "both.pool");
    flip(&path, 1000, 1);
    flip(&path, SIZE - 1000, 1);
    assert!(matches!(
        Region::open(&path),
        Err(Error::CorruptHeader {
            backup_intact: false,
            ..
        })
    ));
    assert!(matches!(
        repair_headers(&path),
        Err(Error::CorruptHeader {
            backup_intact: false,
            ..
        })
    ));
}

#[test]
fn repair_restores_the_primary_from_the_backup_and_keeps_the_data() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "repair.pool");
    let original = read_header(&path, 0);
    write_bytes(&path, 0, &[0u8; 512]);
    assert!(Region::open(&path).is_err());
    assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::RestoredPrimary);
    assert_eq!(read_header(&path, 0).as_bytes(), original.as_bytes());
    let r = Region::open(&path).unwrap();
    let mut buf = [0u8; 7];
    r.read_at(r.data_range().start, &mut buf).unwrap();
    assert_eq!(&buf, b"payload");
    drop(r);
    assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::NothingToDo);
}

#[test]
fn open_rewrites_a_damaged_backup() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "backup.pool");
    flip(&path, SIZE - 10, 0xff);
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert!(report.primary.is_ok());
    assert!(report.backup.is_err());
    drop(Region::open(&path).unwrap());
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert!(report.backup.is_ok(), "{:?}", report.backup);
}

#[test]
fn layout_mismatch_names_both_layouts() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "layout.pool");
    match RegionOptions::new().layout("other").open(&path) {
        Err(Error::LayoutMismatch { expected, found, .. }) => {
            assert_eq!((expected.as_str(), found.as_str()), ("other", "hdr-test"))
        }
        other => panic!("expected LayoutMismatch, got {other:?}"),
    }
    RegionOptions::new().layout("hdr-test").open(&path).unwrap();
}

#[test]
fn create_refuses_bad_arguments() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "exists.pool");
    assert!(matches!(
        Region::create(&path, SIZE),
        Err(Error::AlreadyExists { .. })
    ));
    let p2 = common::pool_path(&dir, "small.pool");
    assert!(matches!(
        Region::create(&p2, 8192),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        Region::create(&p2, SIZE + 1),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        RegionOptions::new().layout(&"x".repeat(64)).create(&p2, SIZE),
        Err(Error::InvalidLayoutName { .. })
    ));
    assert!(matches!(
        RegionOptions::new().layout("a\0b").create(&p2, SIZE),
        Err(Error::InvalidLayoutName { .. })
    ));
}

#[test]
fn errors_print_one_clear_line() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "msg.pool");
    flip(&path, 0, 1);
    let msg = Region::open(&path).unwrap_err().to_string();
    assert!(
        msg.contains("corrupt") && msg.contains("magic") && msg.contains("backup copy is intact"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Any set of byte flips in the primary header is detected (never opened silently, never a
    /// panic) and, with the backup intact, repaired without losing data.
    #[test]
    fn flips_in_the_primary_header_are_always_caught(flips in prop::collection::vec((0u64..HEADER_SIZE as u64, 1u8..=255), 1..8)) {
        let dir = common::shm_dir();
        let path = make_pool(&dir, "prop.pool");
        let mut distinct = std::collections::BTreeMap::new();
        for (off, mask) in &flips {
            *distinct.entry(*off).or_insert(0u8) ^= mask;
        }
        let changed = distinct.values().any(|&m| m != 0);
        for (off, mask) in distinct {
            if mask != 0 { flip(&path, off, mask); }
        }
        let res = Region::open(&path);
        if changed {
            let accepted = matches!(res, Err(Error::CorruptHeader { backup_intact: true, .. }) | Err(Error::UnsupportedVersion { .. }));
            prop_assert!(accepted, "unexpected result {:?}", res.as_ref().err());
            drop(res);
            prop_assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::RestoredPrimary);
            let r = Region::open(&path).unwrap();
            let mut buf = [0u8; 7];
            r.read_at(r.data_range().start, &mut buf).unwrap();
            prop_assert_eq!(&buf, b"payload");
        } else {
            prop_assert!(res.is_ok());
        }
    }

    /// Flips anywhere in the file never panic; flips outside both headers never stop the open.
    #[test]
    fn flips_anywhere_never_panic(flips in prop::collection::vec((0u64..SIZE, 1u8..=255), 1..16)) {
        let dir = common::shm_dir();
        let path = make_pool(&dir, "prop2.pool");
        let mut touches_header = false;
        for (off, mask) in &flips {
            flip(&path, *off, *mask);
            touches_header |= *off < HEADER_SIZE as u64 || *off >= SIZE - HEADER_SIZE as u64;
        }
        let res = Region::open(&path);
        if !touches_header {
            prop_assert!(res.is_ok(), "{:?}", res.err());
        }
    }
}

#[test]
fn a_flipped_version_byte_is_corruption_when_the_backup_is_intact() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "vflip.pool");
    flip(&path, 9, 0x02); // version 1 -> 513, checksum now wrong
    match Region::open(&path) {
        Err(Error::CorruptHeader {
            problem: HeaderProblem::ChecksumMismatch { .. },
            backup_intact: true,
            ..
        }) => {}
        other => panic!("expected CorruptHeader(ChecksumMismatch), got {other:?}"),
    }
    assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::RestoredPrimary);
    Region::open(&path).unwrap();
}

#[test]
fn repair_refuses_a_truncated_or_extended_pool() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "rtrunc.pool");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(SIZE / 2).unwrap();
    assert!(matches!(repair_headers(&path), Err(Error::Truncated { .. })));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        SIZE / 2,
        "repair must not grow the file"
    );
    f.set_len(SIZE * 2).unwrap();
    assert!(matches!(repair_headers(&path), Err(Error::SizeMismatch { .. })));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE * 2);
}

#[test]
fn a_failed_create_leaves_no_file_behind() {
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "never.pool");
    assert!(matches!(
        Region::create(&path, 1000),
        Err(Error::InvalidSize { .. })
    ));
    assert!(!path.exists());
    assert!(matches!(
        RegionOptions::new().layout("\0").create(&path, SIZE),
        Err(Error::InvalidLayoutName { .. })
    ));
    assert!(!path.exists());
}

#[test]
fn open_reports_that_it_rewrote_the_backup() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "rew.pool");
    assert!(!Region::open(&path).unwrap().backup_rewritten());
    flip(&path, SIZE - 100, 1);
    assert!(Region::open(&path).unwrap().backup_rewritten());
    assert!(!Region::open(&path).unwrap().backup_rewritten());
}

#[test]
fn repair_refuses_to_downgrade_a_newer_primary() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "newer.pool");
    edit_primary(&path, |h| h.version = 2); // a newer pool's primary, valid checksum
    assert!(matches!(
        Region::open(&path),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    assert!(matches!(
        repair_headers(&path),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    assert_eq!(
        read_header(&path, 0).version,
        2,
        "repair must not overwrite a newer header"
    );
}

#[test]
fn repair_refuses_a_restore_that_would_not_open() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "odd.pool");
    flip(&path, 500, 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(SIZE + 1)
        .unwrap();
    assert!(matches!(
        Region::open(&path),
        Err(Error::CorruptHeader {
            backup_intact: true,
            ..
        })
    ));
    assert!(matches!(repair_headers(&path), Err(Error::SizeMismatch { .. })));
}

#[test]
fn repair_and_open_agree_on_short_files() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "short.pool");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(Region::open(&path), Err(Error::Truncated { .. })));
    assert!(matches!(repair_headers(&path), Err(Error::Truncated { .. })));
}

/// Cuts the file at `path` to `len` bytes.
fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn a_pool_of_an_odd_number_of_pages_finds_its_backup() {
    // 20 KiB: the backup sits at 16 KiB, an offset with bit 12 set.
    let dir = common::disk_dir();
    let path = common::pool_path(&dir, "odd.pool");
    drop(RegionOptions::new().create(&path, 20 << 10).unwrap());
    flip(&path, 0, 0x01);
    match Region::open(&path) {
        Err(Error::CorruptHeader {
            problem: HeaderProblem::BadMagic,
            backup_intact: true,
            ..
        }) => {}
        other => panic!("expected CorruptHeader(BadMagic) with the backup intact, got {other:?}"),
    }
    assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::RestoredPrimary);
    drop(Region::open(&path).unwrap());
}

#[test]
fn a_file_of_one_header_is_judged_by_that_header() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "one-header.pool");
    cut(&path, HEADER_SIZE as u64);
    match Region::open(&path) {
        Err(Error::Truncated { len, expected, .. }) => {
            assert_eq!((len, expected), (HEADER_SIZE as u64, SIZE));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert_eq!(
        report.primary.unwrap().pool_size,
        SIZE,
        "the whole primary is there"
    );
    assert_eq!(report.backup.unwrap_err(), pmem_core::HeaderFault::Missing);
    // A damaged primary is reported as damage, not as the file being short.
    flip(&path, 1000, 0x80);
    match Region::open(&path) {
        Err(Error::CorruptHeader {
            problem: HeaderProblem::ChecksumMismatch { .. },
            backup_intact: false,
            ..
        }) => {}
        other => panic!("expected CorruptHeader(ChecksumMismatch), got {other:?}"),
    }
}

#[test]
fn a_file_of_two_headers_has_its_second_read_as_the_backup() {
    // 8 KiB: room for a backup at 4 KiB. What is there has the magic but not the geometry of a
    // backup (it is a copy of the primary), so the file is a damaged pool, not a foreign file.
    let dir = common::disk_dir();
    let path = make_pool(&dir, "two-headers.pool");
    let primary = read_header(&path, 0);
    cut(&path, 2 * HEADER_SIZE as u64);
    write_bytes(&path, HEADER_SIZE as u64, primary.as_bytes());
    flip(&path, 0, 0x01);
    match Region::open(&path) {
        Err(Error::CorruptHeader {
            problem: HeaderProblem::BadMagic,
            backup_intact: false,
            ..
        }) => {}
        other => panic!("expected CorruptHeader(BadMagic) without a backup, got {other:?}"),
    }
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert!(
        matches!(
            report.backup,
            Err(pmem_core::HeaderFault::Damaged(HeaderProblem::BadGeometry { .. }))
        ),
        "{report:?}"
    );
}

#[test]
fn inspecting_short_files_reports_missing_copies() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "short-inspect.pool");
    cut(&path, HEADER_SIZE as u64 + 904);
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert!(report.primary.is_ok(), "{report:?}");
    assert_eq!(report.backup.unwrap_err(), pmem_core::HeaderFault::Missing);
    cut(&path, 100);
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert_eq!(report.file_len, 100);
    assert_eq!(report.primary.unwrap_err(), pmem_core::HeaderFault::Missing);
    assert_eq!(report.backup.unwrap_err(), pmem_core::HeaderFault::Missing);
}

#[test]
fn inspecting_a_backup_without_its_magic_reports_damage_not_absence() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "no-backup-magic.pool");
    flip(&path, SIZE - HEADER_SIZE as u64, 0x01);
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert!(report.primary.is_ok(), "{report:?}");
    assert_eq!(
        report.backup.unwrap_err(),
        pmem_core::HeaderFault::Damaged(HeaderProblem::BadMagic)
    );
    // The smallest file with room for a backup: 8 KiB, its second half no header.
    cut(&path, 2 * HEADER_SIZE as u64);
    write_bytes(&path, HEADER_SIZE as u64, &[0; HEADER_SIZE]);
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert_eq!(
        report.backup.unwrap_err(),
        pmem_core::HeaderFault::Damaged(HeaderProblem::BadMagic)
    );
}

#[test]
fn repair_restores_a_damaged_backup_from_the_primary() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "repair-backup.pool");
    let primary = read_header(&path, 0);
    flip(&path, SIZE - 10, 0xff);
    assert!(pmem_core::inspect_headers(&path).unwrap().backup.is_err());
    assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::RestoredBackup);
    let report = pmem_core::inspect_headers(&path).unwrap();
    assert_eq!(report.backup.unwrap().as_bytes(), primary.as_bytes());
    assert_eq!(
        read_header(&path, 0).as_bytes(),
        primary.as_bytes(),
        "the primary is kept"
    );
    assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::NothingToDo);
    // A backup that is valid but not the primary's copy is rewritten too.
    let backup_at = SIZE - HEADER_SIZE as u64;
    let mut other = read_header(&path, backup_at);
    other.uuid[0] ^= 1;
    other.checksum = other.compute_checksum();
    write_bytes(&path, backup_at, other.as_bytes());
    assert!(pmem_core::inspect_headers(&path).unwrap().backup.is_ok());
    assert_eq!(repair_headers(&path).unwrap(), HeaderRepair::RestoredBackup);
    assert_eq!(read_header(&path, backup_at).as_bytes(), primary.as_bytes());
}

#[test]
fn the_data_area_lies_between_the_header_copies() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "data-area.pool");
    let mut r = Region::open(&path).unwrap();
    assert!(!r.is_empty());
    assert_eq!(r.len(), SIZE);
    let data = r.data_range();
    assert_eq!(data, r.header().data_offset..SIZE - HEADER_SIZE as u64);
    assert_eq!(data.start, HEADER_SIZE as u64);
    // The last data byte is writable; the backup header's first is not.
    r.write_at(data.end - 1, &[1]).unwrap();
    assert!(matches!(
        r.write_at(data.end, &[1]),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        r.write_at(data.start - 1, &[1]),
        Err(Error::OutOfBounds { .. })
    ));
}
