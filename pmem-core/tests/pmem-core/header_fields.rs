//! Guards the pool header's byte format field by field (docs/design.md §2.1): a pool's header
//! read at the documented offsets, header bytes written at those offsets parsed back, and each
//! field damaged in a pool file (with a correct checksum, so only the field's own check can
//! notice) giving its own named error, the backup intact and the repair restoring the pool.
//! The edge values the checks must accept (the smallest and largest pool, every known flag, a
//! 63-byte layout name) are accepted.

use crate::common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pmem_core::internals::header::{
    ParseFailure, FLAG_GROWING, FLAG_JOURNAL, MAX_POOL_SIZE, SHUTDOWN_COUNT_KNOWN, SHUTDOWN_DIRTY,
};
use pmem_core::{repair_headers, Error, HeaderProblem, HeaderRepair, Region, RegionOptions};
use pmem_core::{PoolHeader, FORMAT_VERSION, HEADER_SIZE, MIN_POOL_SIZE};

const SIZE: u64 = 64 * 1024;
const HS: u64 = HEADER_SIZE as u64;
const LAYOUT: &str = "fields";
const PAYLOAD: &[u8] = b"field-by-field";

fn make_pool(dir: &tempfile::TempDir, name: &str, size: u64) -> PathBuf {
    let path = common::pool_path(dir, name);
    let mut r = RegionOptions::new().layout(LAYOUT).create(&path, size).unwrap();
    let off = r.data_range().start;
    r.write_at(off, PAYLOAD).unwrap();
    r.persist(off, PAYLOAD.len() as u64).unwrap();
    path
}

fn read_raw(path: &Path, offset: u64) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; HEADER_SIZE];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn write_raw(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Stores the CRC32C of bytes 0..4092 at 4092, computed here rather than by the crate.
fn seal(h: &mut [u8]) {
    let crc = crc32c::crc32c(&h[..4092]);
    h[4092..4096].copy_from_slice(&crc.to_le_bytes());
}

fn u64_at(h: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(h[off..off + 8].try_into().unwrap())
}

fn u32_at(h: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(h[off..off + 4].try_into().unwrap())
}

/// A valid header for a pool of `size` bytes, as bytes: a pool's own header with the geometry
/// fields rewritten at their documented offsets.
fn header_bytes_for(template: &[u8], size: u64) -> Vec<u8> {
    let mut h = template.to_vec();
    h[32..40].copy_from_slice(&size.to_le_bytes());
    h[48..56].copy_from_slice(&(size - 2 * HS).to_le_bytes());
    h[56..64].copy_from_slice(&(size - HS).to_le_bytes());
    seal(&mut h);
    h
}

fn geometry(field: &'static str) -> HeaderProblem {
    HeaderProblem::BadGeometry { field }
}

/// Rewrites the primary header of the pool at `path` with `bytes` at `offset`, sealed with a
/// correct checksum, and checks that open names `problem` with the backup intact, that the
/// repair restores the primary from the backup and that the pool then opens with its data.
fn damaged_field_is_named(path: &Path, offset: usize, bytes: &[u8], problem: HeaderProblem) {
    let good = read_raw(path, 0);
    let mut h = good.clone();
    h[offset..offset + bytes.len()].copy_from_slice(bytes);
    seal(&mut h);
    write_raw(path, 0, &h);
    match Region::open(path) {
        Err(Error::CorruptHeader {
            problem: p,
            backup_intact: true,
            ..
        }) => assert_eq!(p, problem, "bytes {bytes:02x?} at {offset}"),
        other => panic!("bytes {bytes:02x?} at {offset}: expected {problem:?}, got {other:?}"),
    }
    assert_eq!(
        PoolHeader::parse(&h).unwrap_err(),
        ParseFailure::Problem(problem),
        "bytes {bytes:02x?} at {offset}"
    );
    assert_eq!(repair_headers(path).unwrap(), HeaderRepair::RestoredPrimary);
    assert_eq!(
        read_raw(path, 0),
        good,
        "the repair restores the primary byte for byte"
    );
    let r = RegionOptions::new().layout(LAYOUT).open(path).unwrap();
    let mut back = vec![0u8; PAYLOAD.len()];
    r.read_at(r.data_range().start, &mut back).unwrap();
    assert_eq!(back, PAYLOAD);
}

#[test]
fn a_pool_header_sits_at_the_documented_offsets() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "offsets.pool", SIZE);
    let raw = read_raw(&path, 0);
    let h = PoolHeader::parse(&raw).unwrap();
    assert_eq!(&raw[0..8], b"PTMPOOL\0", "magic");
    assert_eq!(u32_at(&raw, 8), FORMAT_VERSION, "version");
    assert_eq!(FORMAT_VERSION, 1);
    assert_eq!(u32_at(&raw, 12), 4096, "header_size");
    assert_eq!(&raw[16..32], &h.uuid, "uuid");
    assert_ne!(h.uuid, [0; 16], "uuid: random");
    assert_eq!(u64_at(&raw, 32), SIZE, "pool_size");
    assert_eq!(u64_at(&raw, 40), 4096, "data_offset");
    assert_eq!(u64_at(&raw, 48), SIZE - 8192, "data_size");
    assert_eq!(u64_at(&raw, 56), SIZE - 4096, "backup_offset");
    assert_eq!(u64_at(&raw, 64), 0, "flags of a closed pool");
    let tag = u16::from_le_bytes([raw[72], raw[73]]);
    assert_eq!((tag, h.pptr_tag), (h.pptr_tag, tag), "pptr_tag");
    assert_ne!(tag, 0, "pptr_tag is non-zero");
    assert_eq!(&raw[74..80], &[0; 6], "_pad");
    assert_eq!(u64_at(&raw, 80), h.created_secs, "created_secs");
    assert!(
        h.created_secs > 1_600_000_000,
        "created_secs: now, in Unix seconds"
    );
    assert_eq!(&raw[88..88 + LAYOUT.len()], LAYOUT.as_bytes(), "layout");
    assert!(
        raw[88 + LAYOUT.len()..152].iter().all(|&b| b == 0),
        "layout: NUL-padded"
    );
    assert_eq!(u64_at(&raw, 152), h.shutdown_count, "shutdown_count");
    assert_eq!(u64_at(&raw, 160), h.shutdown_device, "shutdown_device");
    assert_eq!(u32_at(&raw, 168), h.shutdown_flags, "shutdown_flags");
    assert_eq!(&raw[172..176], &[0; 4], "_pad2");
    assert_eq!(u64_at(&raw, 176), 0, "grow_target without a grow");
    assert!(raw[184..4092].iter().all(|&b| b == 0), "reserved");
    assert_eq!(u32_at(&raw, 4092), crc32c::crc32c(&raw[..4092]), "checksum");
    assert_eq!(h.checksum, u32_at(&raw, 4092));
    assert_eq!(h.compute_checksum(), h.checksum);
    assert_eq!(h.as_bytes(), &raw[..], "as_bytes gives the stored bytes");
    assert_eq!(h.layout_name(), LAYOUT);
    // The backup copy is the same bytes at the documented place.
    assert_eq!(read_raw(&path, SIZE - HS), raw);
}

#[test]
fn header_bytes_written_at_the_documented_offsets_parse_back() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "roundtrip.pool", SIZE);
    let mut raw = read_raw(&path, 0);
    let uuid: [u8; 16] = core::array::from_fn(|i| i as u8 + 0xa0);
    raw[16..32].copy_from_slice(&uuid);
    raw[72..74].copy_from_slice(&0xbeefu16.to_le_bytes());
    raw[80..88].copy_from_slice(&1_234_567u64.to_le_bytes());
    raw[88..152].fill(0);
    raw[88..88 + 9].copy_from_slice("ℓayout!".as_bytes());
    raw[152..160].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    raw[160..168].copy_from_slice(&0xdead_beefu64.to_le_bytes());
    raw[168..172].copy_from_slice(&(SHUTDOWN_COUNT_KNOWN | SHUTDOWN_DIRTY).to_le_bytes());
    raw[64..72].copy_from_slice(&(FLAG_JOURNAL | FLAG_GROWING).to_le_bytes());
    raw[176..184].copy_from_slice(&(2 * SIZE).to_le_bytes());
    seal(&mut raw);
    let h = PoolHeader::parse(&raw).unwrap();
    assert_eq!(h.uuid, uuid);
    assert_eq!(h.pptr_tag, 0xbeef);
    assert_eq!(h.created_secs, 1_234_567);
    assert_eq!(h.layout_name(), "ℓayout!");
    assert_eq!(h.flags, FLAG_JOURNAL | FLAG_GROWING);
    assert_eq!(h.grow_target(), 2 * SIZE);
    let s = h.shutdown_record();
    assert_eq!(
        (s.count, s.device_id, s.dirty),
        (Some(0x1122_3344_5566_7788), 0xdead_beef, true)
    );
    assert_eq!(h.as_bytes(), &raw[..]);
    assert_eq!(h.compute_checksum(), u32_at(&raw, 4092));

    // Bytes 176..184 are a grow target only with FLAG_GROWING; the journal flag alone keeps
    // them out (and a count only with SHUTDOWN_COUNT_KNOWN).
    raw[64..72].copy_from_slice(&FLAG_JOURNAL.to_le_bytes());
    raw[168..172].copy_from_slice(&SHUTDOWN_DIRTY.to_le_bytes());
    seal(&mut raw);
    let h = PoolHeader::parse(&raw).unwrap();
    assert_eq!(h.grow_target(), 0, "no FLAG_GROWING: no grow target");
    assert_eq!(
        h.shutdown_record().count,
        None,
        "no SHUTDOWN_COUNT_KNOWN: no count"
    );
    assert!(h.shutdown_record().dirty);
    raw[64..72].copy_from_slice(&FLAG_GROWING.to_le_bytes());
    raw[168..172].copy_from_slice(&SHUTDOWN_COUNT_KNOWN.to_le_bytes());
    seal(&mut raw);
    let h = PoolHeader::parse(&raw).unwrap();
    assert_eq!(h.grow_target(), 2 * SIZE, "FLAG_GROWING alone");
    assert_eq!(h.shutdown_record().count, Some(0x1122_3344_5566_7788));
    assert!(!h.shutdown_record().dirty);
}

#[test]
fn each_damaged_field_is_named_and_repaired_from_the_backup() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "damage.pool", SIZE);
    let cases: Vec<(usize, Vec<u8>, HeaderProblem)> = vec![
        (0, b"PTMPOOL1".to_vec(), HeaderProblem::BadMagic),
        (12, 4095u32.to_le_bytes().to_vec(), geometry("header_size")),
        (12, 8192u32.to_le_bytes().to_vec(), geometry("header_size")),
        // pool_size: not a multiple of 4096, too small, zero, too large.
        (32, (SIZE + 1).to_le_bytes().to_vec(), geometry("pool_size")),
        (32, (SIZE - 1).to_le_bytes().to_vec(), geometry("pool_size")),
        (
            32,
            (MIN_POOL_SIZE - HS).to_le_bytes().to_vec(),
            geometry("pool_size"),
        ),
        (32, 8192u64.to_le_bytes().to_vec(), geometry("pool_size")),
        (32, 0u64.to_le_bytes().to_vec(), geometry("pool_size")),
        (
            32,
            (MAX_POOL_SIZE + HS).to_le_bytes().to_vec(),
            geometry("pool_size"),
        ),
        (32, u64::MAX.to_le_bytes().to_vec(), geometry("pool_size")),
        (40, 8192u64.to_le_bytes().to_vec(), geometry("data_offset")),
        (40, 0u64.to_le_bytes().to_vec(), geometry("data_offset")),
        (48, (SIZE - HS).to_le_bytes().to_vec(), geometry("data_size")),
        (48, (SIZE - 3 * HS).to_le_bytes().to_vec(), geometry("data_size")),
        (
            56,
            (SIZE - 2 * HS).to_le_bytes().to_vec(),
            geometry("backup_offset"),
        ),
        (56, SIZE.to_le_bytes().to_vec(), geometry("backup_offset")),
        (
            64,
            4u64.to_le_bytes().to_vec(),
            HeaderProblem::UnknownFlags { flags: 4 },
        ),
        (
            64,
            (FLAG_JOURNAL | 1 << 63).to_le_bytes().to_vec(),
            // Only the bits not understood are reported (the journal flag is known).
            HeaderProblem::UnknownFlags { flags: 1 << 63 },
        ),
        (72, 0u16.to_le_bytes().to_vec(), geometry("pptr_tag")),
        // layout: no NUL in its 64 bytes; not UTF-8 (at its start, after a valid prefix).
        (88, vec![b'a'; 64], geometry("layout")),
        (88, vec![0xff, 0xfe, 0], geometry("layout")),
        (88, b"ok\xc3(\0".to_vec(), geometry("layout")),
        (168, 4u32.to_le_bytes().to_vec(), geometry("shutdown_flags")),
        (
            168,
            (1u32 << 31 | SHUTDOWN_DIRTY).to_le_bytes().to_vec(),
            geometry("shutdown_flags"),
        ),
    ];
    for (offset, bytes, problem) in cases {
        damaged_field_is_named(&path, offset, &bytes, problem);
    }
}

#[test]
fn a_wrong_checksum_is_a_mismatch_whatever_the_version_below_ours() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "crc.pool", SIZE);
    let good = read_raw(&path, 0);
    for version in [FORMAT_VERSION, 0] {
        let mut h = good.clone();
        h[8..12].copy_from_slice(&version.to_le_bytes());
        seal(&mut h);
        let sealed = crc32c::crc32c(&h[..4092]);
        h[4092..4096].copy_from_slice(&(sealed ^ 1).to_le_bytes());
        let expected = HeaderProblem::ChecksumMismatch {
            stored: sealed ^ 1,
            computed: sealed,
        };
        assert_eq!(
            PoolHeader::parse(&h).unwrap_err(),
            ParseFailure::Problem(expected),
            "version {version}"
        );
        // Both copies damaged: still the checksum, not an unsupported version.
        write_raw(&path, 0, &h);
        write_raw(&path, SIZE - HS, &h);
        match Region::open(&path) {
            Err(Error::CorruptHeader {
                problem,
                backup_intact: false,
                ..
            }) => assert_eq!(problem, expected, "version {version}"),
            other => panic!("version {version}: expected ChecksumMismatch, got {other:?}"),
        }
    }
    // A version of ours with a valid checksum but another version number is the version.
    let mut h = good.clone();
    h[8..12].copy_from_slice(&0u32.to_le_bytes());
    seal(&mut h);
    assert_eq!(
        PoolHeader::parse(&h).unwrap_err(),
        ParseFailure::Version {
            found: 0,
            checksum_ok: true
        }
    );
    // A newer version with a bad checksum: reported as that version by the parse.
    h[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        PoolHeader::parse(&h).unwrap_err(),
        ParseFailure::Version {
            found: FORMAT_VERSION + 1,
            checksum_ok: false
        }
    );
}

#[test]
fn the_edge_values_of_every_checked_field_are_accepted() {
    let dir = common::disk_dir();
    // The smallest pool is created, opened and keeps its data; one page less is refused.
    let path = make_pool(&dir, "min.pool", MIN_POOL_SIZE);
    let r = RegionOptions::new().layout(LAYOUT).open(&path).unwrap();
    assert_eq!(r.data_range().end - r.data_range().start, MIN_POOL_SIZE - 2 * HS);
    drop(r);
    let raw = read_raw(&path, 0);
    let min = PoolHeader::parse(&raw).unwrap();
    assert_eq!(min.pool_size, MIN_POOL_SIZE);
    assert_eq!(MIN_POOL_SIZE, 16 * 1024, "design.md §2: at least 16 KiB");
    assert_eq!(MAX_POOL_SIZE, 1 << 48, "design.md §2: at most 2^48 bytes");
    // The largest pool's header (no file of 256 TiB: the header alone).
    let max = PoolHeader::parse(&header_bytes_for(&raw, MAX_POOL_SIZE)).unwrap();
    assert_eq!(max.pool_size, MAX_POOL_SIZE);
    assert_eq!(max.backup_offset, MAX_POOL_SIZE - HS);
    for bad in [MAX_POOL_SIZE + HS, MIN_POOL_SIZE - HS, 2 * HS] {
        assert_eq!(
            PoolHeader::parse(&header_bytes_for(&raw, bad)).unwrap_err(),
            ParseFailure::Problem(geometry("pool_size")),
            "pool_size {bad}"
        );
    }
    // Every known flag and shutdown flag, alone and together.
    for flags in [0, FLAG_JOURNAL, FLAG_GROWING, FLAG_JOURNAL | FLAG_GROWING] {
        for sflags in [
            0,
            SHUTDOWN_COUNT_KNOWN,
            SHUTDOWN_DIRTY,
            SHUTDOWN_COUNT_KNOWN | SHUTDOWN_DIRTY,
        ] {
            let mut h = raw.clone();
            h[64..72].copy_from_slice(&flags.to_le_bytes());
            h[168..172].copy_from_slice(&sflags.to_le_bytes());
            seal(&mut h);
            let p = PoolHeader::parse(&h).unwrap_or_else(|e| panic!("flags {flags} {sflags}: {e:?}"));
            assert_eq!((p.flags, p.shutdown_flags), (flags, sflags));
        }
    }
    // The longest layout name: 63 bytes and the NUL, in a header and through create and open.
    let long = "L".repeat(63);
    let mut h = raw.clone();
    h[88..151].copy_from_slice(long.as_bytes());
    h[151] = 0;
    seal(&mut h);
    assert_eq!(PoolHeader::parse(&h).unwrap().layout_name(), long);
    let p2 = common::pool_path(&dir, "long.pool");
    RegionOptions::new().layout(&long).create(&p2, SIZE).unwrap();
    let r = RegionOptions::new().layout(&long).open(&p2).unwrap();
    assert_eq!(r.header().layout_name(), long);
}

#[test]
fn debug_shows_the_fields_and_the_uuid_in_its_usual_form() {
    let dir = common::disk_dir();
    let path = make_pool(&dir, "debug.pool", SIZE);
    let mut raw = read_raw(&path, 0);
    let uuid: [u8; 16] = core::array::from_fn(|i| i as u8);
    raw[16..32].copy_from_slice(&uuid);
    seal(&mut raw);
    let h = PoolHeader::parse(&raw).unwrap();
    assert_eq!(
        pmem_core::internals::header::format_uuid(&uuid),
        "00010203-0405-0607-0809-0a0b0c0d0e0f"
    );
    let dbg = format!("{h:?}");
    for part in [
        "PoolHeader",
        "uuid: \"00010203-0405-0607-0809-0a0b0c0d0e0f\"",
        &format!("pool_size: {SIZE}"),
        "layout: \"fields\"",
        &format!("pptr_tag: {}", h.pptr_tag),
        &format!("checksum: {}", h.checksum),
    ] {
        assert!(dbg.contains(part), "{part} missing from {dbg}");
    }
}
