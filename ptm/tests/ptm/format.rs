//! Guards the superblock format bump of heap format 3 (design §2.3): pools of formats 1 and 2
//! (256 KiB heap chunks) are refused with `UnsupportedFormat` before anything else is read,
//! and the file is left byte for byte as it was; new pools are format 5 (format 4's routing
//! secret, packed lane logs), and format 3 and 4 pools still open, format 4's logs written and
//! recovered in their own layout.

use crate::common::{self, superblock, SUPERBLOCK};

use std::os::unix::fs::FileExt;

use ptm::{Error, PCell, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    value: PCell<u64>,
}

/// `sb` as a build of another format wrote it: `magic`, and its checksum redone.
fn with_magic(sb: &[u8; 128], magic: &[u8; 8]) -> [u8; 128] {
    let mut old = *sb;
    old[..8].copy_from_slice(magic);
    common::rehash_superblock(&mut old);
    old
}

#[test]
fn pools_of_formats_1_and_2_are_refused_by_name_and_left_unchanged() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "old.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem()).unwrap();
    pool.transaction(|tx, r| r.value.set(tx, 7)).unwrap();
    drop(pool);
    let (f, sb) = superblock(&path);
    assert_eq!(&sb[..8], b"PTMTXN5\0", "new pools are format 5");
    for (magic, format) in [(b"PTMTXN1\0", 1u32), (b"PTMTXN2\0", 2)] {
        // The superblock as an older build wrote it: its magic, its checksum intact.
        f.write_all_at(&with_magic(&sb, magic), SUPERBLOCK).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        match Pool::<Root>::open(&path, &common::pmem()) {
            Err(Error::UnsupportedFormat {
                found, supported: 5, ..
            }) => assert_eq!(found, format),
            Err(e) => panic!("format {format}: {e}"),
            Ok(_) => panic!("format {format}: opened"),
        }
        let e = Pool::open_any(&path, &common::pmem()).map(drop).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("superblock format {format} is not supported")),
            "{e}"
        );
        let region = ptm::pmem_core::RegionOptions::new().open(&path).unwrap();
        assert!(matches!(
            ptm::inspect(&region),
            Err(Error::UnsupportedFormat { .. })
        ));
        drop(region);
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "format {format}: the file changed"
        );
    }
    // As a format 3 pool (made before the routing secret: magic 3, bytes 72..88 zero): it
    // opens, with its data.
    let mut no_secret = sb;
    no_secret[72..88].fill(0);
    f.write_all_at(&with_magic(&no_secret, b"PTMTXN3\0"), SUPERBLOCK)
        .unwrap();
    let pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    assert_eq!(
        pool.transaction(|tx, r| Ok::<_, Error>(r.value.get(tx))).unwrap(),
        7
    );
    drop(pool);
    assert_ne!(sb[72..88], [0u8; 16], "a new pool has a routing secret");
    // Back to format 5: it opens, with its data.
    f.write_all_at(&sb, SUPERBLOCK).unwrap();
    let pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    assert_eq!(
        pool.transaction(|tx, r| Ok::<_, Error>(r.value.get(tx))).unwrap(),
        7
    );
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Words {
    w: [PCell<u64>; 16],
}

/// Opens `path` (a pool of `Words`), sets every word to `to` in one transaction, and copies the
/// file inside it, after the stores (a crash image: the pool is mapped from its tmpfs file);
/// returns the image's bytes of lane 0 up to `upto`.
fn crash_mid_transaction(path: &std::path::Path, image: &std::path::Path, to: u64, upto: usize) -> Vec<u8> {
    let pool = Pool::<Words>::open(path, &common::pmem()).unwrap();
    let geo = pool.geometry();
    let r = pool.transaction(|tx, r| {
        for c in &r.w {
            c.set(tx, to)?;
        }
        common::crash_image(path, image);
        Err::<(), _>(Error::Aborted)
    });
    assert!(r.is_err());
    drop(pool);
    let mut lane = vec![0u8; upto];
    std::fs::File::open(image)
        .unwrap()
        .read_exact_at(&mut lane, geo.lanes_offset)
        .unwrap();
    lane
}

fn words(path: &std::path::Path) -> Vec<u64> {
    let pool = Pool::<Words>::open(path, &common::pmem()).unwrap();
    pool.transaction(|tx, r| Ok::<_, Error>(r.w.iter().map(|c| c.get(tx)).collect()))
        .unwrap()
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Pools of format 4 keep their lane layout (design §8.1): 64-byte-aligned records from lane
/// offset 128, the commit record at 64. This build writes and recovers them in that layout,
/// and new pools (format 5) pack their records from lane offset 8.
#[test]
fn a_format_4_pool_logs_and_recovers_in_its_own_layout() {
    let dir = common::shm_dir();
    for format in [4u8, 5] {
        let path = common::path(&dir, &format!("f{format}.pool"));
        let image = common::path(&dir, &format!("f{format}.image"));
        let opts = common::pmem().lanes(1);
        let pool = Pool::<Words>::create(&path, 8 << 20, &opts).unwrap();
        drop(pool);
        if format == 4 {
            // A pool that has never run a transaction is a valid format 4 pool under the
            // format 4 magic: creation zeroed both layouts' lane headers.
            let (f, sb) = superblock(&path);
            f.write_all_at(&with_magic(&sb, b"PTMTXN4\0"), SUPERBLOCK)
                .unwrap();
        }
        {
            let pool = Pool::<Words>::open(&path, &common::pmem()).unwrap();
            assert_eq!(pool.geometry().packed_log, format == 5);
            // A 1-word transaction after another on the lane: format 4 flushes the lane's
            // pending completion mark in a line of its own, then the record's line; format 5's
            // first record shares the mark's line, flushed once. Then the word and the commit
            // record.
            for i in 0..3 {
                let before = ptm::thread_stats();
                pool.transaction(|tx, r| r.w[0].set(tx, i)).unwrap();
                let lines = ptm::thread_stats().since(&before).lines_flushed;
                if i > 0 {
                    assert_eq!(
                        lines,
                        if format == 5 { 3 } else { 4 },
                        "format {format}, transaction {i}"
                    );
                }
            }
            pool.transaction(|tx, r| {
                for (i, c) in r.w.iter().enumerate() {
                    c.set(tx, 100 + i as u64)?;
                }
                Ok::<_, Error>(())
            })
            .unwrap();
        }
        let committed: Vec<u64> = (0..16).map(|i| 100 + i).collect();
        // Twice: the second crash runs on the pool recovered from the first.
        for round in 0..2u64 {
            let lane = crash_mid_transaction(&path, &image, 7 + round, 128 + 16 * 64);
            // The crashed transaction's first record: its seq is newer than `completed`.
            let completed = word(&lane, 0);
            let (first, step) = if format == 5 { (8, 40) } else { (128, 64) };
            for k in 0..16 {
                let at = first + k * step;
                assert!(
                    word(&lane, at) > completed,
                    "format {format}: no record at lane offset {at}"
                );
                assert_eq!(
                    word(&lane, at + 8) >> 56,
                    1,
                    "format {format}: an undo record at {at}"
                );
            }
            if format == 4 {
                assert_eq!(
                    &lane[8..64],
                    &[0u8; 56][..],
                    "format 4: nothing logged before offset 128"
                );
            }
            assert_eq!(
                words(&image),
                committed,
                "format {format}, round {round}: rolled back"
            );
            std::fs::copy(&image, &path).unwrap();
        }
        assert_eq!(words(&path), committed);
    }
}

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct ManyWords {
    w: [PCell<u64>; 160],
}

/// In format 4 (64-byte records from lane offset 128 to the lane's end), a transaction of many
/// small records fills its lane's log area until the last 64 bytes, the room kept for the jump
/// record, and writes its jump there: the scan reads a record that exactly fills the rest of
/// the area and follows that jump, so a crash rolls back the records in the extent too.
#[test]
fn a_format_4_jump_record_in_the_lanes_last_64_bytes_is_followed() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "f4.pool");
    let image = common::path(&dir, "f4.image");
    let opts = common::pmem().lanes(1).lane_size(8192);
    drop(Pool::<ManyWords>::create(&path, 8 << 20, &opts).unwrap());
    let (f, sb) = superblock(&path);
    f.write_all_at(&with_magic(&sb, b"PTMTXN4\0"), SUPERBLOCK)
        .unwrap();
    drop(f);
    let pool = Pool::<ManyWords>::open(&path, &opts).unwrap();
    let geo = pool.geometry();
    assert!(!geo.packed_log);
    let r = pool.transaction(|tx, r| {
        for c in &r.w {
            c.set(tx, 7)?;
        }
        common::crash_image(&path, &image);
        Err::<(), _>(Error::Aborted)
    });
    assert!(r.is_err());
    drop(pool);
    // The crashed transaction's jump record is the lane's last 64 bytes.
    let mut last = [0u8; 16];
    std::fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut last, geo.lane_log(0).1 - 64)
        .unwrap();
    assert_eq!(word(&last, 8) >> 56, 2, "a jump record in the last 64 bytes");
    let pool = Pool::<ManyWords>::open(&image, &opts).unwrap();
    let words: Vec<u64> = pool
        .transaction(|tx, r| Ok::<_, Error>(r.w.iter().map(|c| c.get(tx)).collect()))
        .unwrap();
    let kept: Vec<usize> = (0..words.len()).filter(|&i| words[i] != 0).collect();
    assert!(kept.is_empty(), "words not rolled back: {kept:?}");
}
