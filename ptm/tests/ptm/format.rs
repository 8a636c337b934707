//! Guards the superblock format bump of heap format 3 (design §2.3): pools of formats 1 and 2
//! (256 KiB heap chunks) are refused with `UnsupportedFormat` before anything else is read,
//! and the file is left byte for byte as it was; new pools are format 4 (format 3 and the
//! routing secret), and format 3 pools still open.

use crate::common;

use std::os::unix::fs::FileExt;

use ptm::{Error, PCell, Persistent, Pool};

#[derive(Persistent)]
#[persistent(crate = "ptm::pmem_core")]
#[repr(C)]
struct Root {
    value: PCell<u64>,
}

/// Pool offset of the superblock.
const SUPERBLOCK: u64 = 4096;

#[test]
fn pools_of_formats_1_and_2_are_refused_by_name_and_left_unchanged() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "old.pool");
    let pool = Pool::<Root>::create(&path, 8 << 20, &common::pmem()).unwrap();
    pool.transaction(|tx, r| r.value.set(tx, 7)).unwrap();
    drop(pool);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut sb = [0u8; 128];
    f.read_exact_at(&mut sb, SUPERBLOCK).unwrap();
    assert_eq!(&sb[..8], b"PTMTXN4\0", "new pools are format 4");
    for (magic, format) in [(b"PTMTXN1\0", 1u32), (b"PTMTXN2\0", 2)] {
        // The superblock as an older build wrote it: its magic, its checksum intact.
        let mut old = sb;
        old[..8].copy_from_slice(magic);
        let hash = xxhash_rust::xxh3::xxh3_64(&old[..120]);
        old[120..128].copy_from_slice(&hash.to_le_bytes());
        f.write_all_at(&old, SUPERBLOCK).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        match Pool::<Root>::open(&path, &common::pmem()) {
            Err(Error::UnsupportedFormat {
                found, supported: 4, ..
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
    let mut v3 = sb;
    v3[..8].copy_from_slice(b"PTMTXN3\0");
    v3[72..88].fill(0);
    let hash = xxhash_rust::xxh3::xxh3_64(&v3[..120]);
    v3[120..128].copy_from_slice(&hash.to_le_bytes());
    f.write_all_at(&v3, SUPERBLOCK).unwrap();
    let pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    assert_eq!(
        pool.transaction(|tx, r| Ok::<_, Error>(r.value.get(tx))).unwrap(),
        7
    );
    drop(pool);
    assert_ne!(sb[72..88], [0u8; 16], "a new pool has a routing secret");
    // Back to format 4: it opens, with its data.
    f.write_all_at(&sb, SUPERBLOCK).unwrap();
    let pool = Pool::<Root>::open(&path, &common::pmem()).unwrap();
    assert_eq!(
        pool.transaction(|tx, r| Ok::<_, Error>(r.value.get(tx))).unwrap(),
        7
    );
}
