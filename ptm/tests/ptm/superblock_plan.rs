//! Guards the superblock a new pool gets (`Geometry::plan`, `with_room_to_grow`, `encode`,
//! design §8.1 and §10.5): every field at its documented offset with the documented value, for
//! several pool sizes, lane counts and sizes, root sizes and `max_size`s, computed here from
//! the definitions (lanes from pool offset 8192, the root after them, the heap from the next
//! page to the last page of the data area, a chunk table with room for `max_size`'s chunks
//! plus one, at least what the heap needs, at most 1/16 of the heap), and golden values for
//! the design's example. A later build reads these bytes: a field moved or computed otherwise
//! is a format change.

use ptm::internals::heap::HeapLayout;
use ptm::{Error, Pool, PoolOptions};

use crate::common::{self, SUPERBLOCK_HASHED};

const CHUNK: u64 = 64 * 1024;
const PAGE: u64 = 4096;

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

/// One pool to create: its file size, options and root size.
#[derive(Clone, Copy, Debug)]
struct Case {
    size: u64,
    lanes: u32,
    lane_size: u64,
    root_size: u64,
    /// `PoolOptions::max_size`, or `None` for the default (64 × the size, at least 1 GiB).
    max_size: Option<u64>,
}

/// The superblock fields a pool of `c` must have, from design §8.1 and §10.5 (not from the
/// code under test): `[lane_size, lanes_offset, root_offset, root_size, heap_offset,
/// heap_size, table_entries]`.
fn expected(c: Case) -> [u64; 7] {
    // The data area: after the 4 KiB pool header, before the 4 KiB backup header.
    let data_start = PAGE;
    let data_end = c.size - PAGE;
    let lanes_offset = data_start + PAGE;
    let root_offset = lanes_offset + u64::from(c.lanes) * c.lane_size;
    let heap_offset = align_up(root_offset + c.root_size.max(1));
    let heap_size = data_end / PAGE * PAGE - heap_offset;
    // The least table: as many entries as the heap has chunks (a table of whole pages).
    let least = HeapLayout::new(heap_offset, heap_size).table_entries();
    let max_size = c
        .max_size
        .unwrap_or_else(|| (c.size * 64).max(1 << 30))
        .min(1 << 48);
    let want = max_size / CHUNK + 1;
    let most = (heap_size / 16 / 8).max(least);
    let table_entries = want.clamp(least, most);
    [
        c.lane_size,
        lanes_offset,
        root_offset,
        c.root_size,
        heap_offset,
        heap_size,
        table_entries,
    ]
}

fn options(c: Case) -> PoolOptions {
    let o = common::pmem().lanes(c.lanes).lane_size(c.lane_size);
    match c.max_size {
        Some(m) => o.max_size(m),
        None => o,
    }
}

/// Creates the pool of `c` and returns its superblock's first 128 bytes.
fn create(dir: &tempfile::TempDir, c: Case) -> [u8; 128] {
    let path = common::path(dir, "plan.pool");
    let _ = std::fs::remove_file(&path);
    Pool::<()>::create_any(&path, c.size, c.root_size, &options(c))
        .unwrap()
        .close()
        .unwrap();
    let (_, sb) = common::superblock(&path);
    std::fs::remove_file(&path).unwrap();
    sb
}

/// The fields of superblock `b` in the order of [`expected`].
fn fields(b: &[u8; 128]) -> [u64; 7] {
    [16, 24, 32, 40, 48, 56, 64].map(|at| word(b, at))
}

/// Checks every byte of superblock `b` against design §8.1 for a pool of `c`.
fn check(b: &[u8; 128], c: Case) {
    assert_eq!(&b[0..8], b"PTMTXN5\0", "{c:?}: magic");
    assert_eq!(
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        c.lanes,
        "{c:?}: lane_count"
    );
    assert_eq!(&b[12..16], &[0; 4], "{c:?}: padding");
    assert_eq!(
        fields(b),
        expected(c),
        "{c:?}: lane_size, lanes_offset, root_offset, root_size, heap_offset, heap_size, table_entries"
    );
    assert_ne!(
        [word(b, 72), word(b, 80)],
        [0, 0],
        "{c:?}: a routing secret is drawn"
    );
    assert_eq!(&b[88..120], &[0; 32], "{c:?}: reserved");
    assert_eq!(
        word(b, SUPERBLOCK_HASHED),
        xxhash_rust::xxh3::xxh3_64(&b[..SUPERBLOCK_HASHED]),
        "{c:?}: meta_hash"
    );
}

#[test]
fn new_superblocks_hold_the_documented_geometry() {
    let dir = common::shm_dir();
    let cases = [
        // The defaults (64 lanes of 64 KiB) and the default max_size (1 GiB here).
        Case {
            size: 8 << 20,
            lanes: 64,
            lane_size: 64 << 10,
            root_size: 8,
            max_size: None,
        },
        // A root of exactly a page, and of a page and a byte; a zero-sized root takes a byte.
        Case {
            size: 16 << 20,
            lanes: 4,
            lane_size: 8192,
            root_size: 4096,
            max_size: None,
        },
        Case {
            size: 16 << 20,
            lanes: 4,
            lane_size: 8192,
            root_size: 4097,
            max_size: Some(64 << 20),
        },
        Case {
            size: 4 << 20,
            lanes: 1,
            lane_size: 8192,
            root_size: 0,
            max_size: None,
        },
        // The default max_size of a large pool: 64 times its size.
        Case {
            size: 48 << 20,
            lanes: 8,
            lane_size: 65536,
            root_size: 100,
            max_size: None,
        },
        // A max_size no larger than the pool: the table the heap needs, no more.
        Case {
            size: 24 << 20,
            lanes: 3,
            lane_size: 12288,
            root_size: 100,
            max_size: Some(24 << 20),
        },
        // A max_size the table cannot have room for: 1/16 of the heap at creation.
        Case {
            size: 16 << 20,
            lanes: 2,
            lane_size: 8192,
            root_size: 100,
            max_size: Some(1 << 40),
        },
        // Many lanes: the root and heap after 1024 of them.
        Case {
            size: 12 << 20,
            lanes: 1024,
            lane_size: 8192,
            root_size: 24,
            max_size: Some(12 << 20),
        },
    ];
    for c in cases {
        let b = create(&dir, c);
        check(&b, c);
    }
}

/// The design's own example (§10.5): an 8 MiB pool with the default options gets 16385
/// entries (room for 1 GiB of 64 KiB chunks, plus one), a 132 KiB table; and the rest of its
/// geometry written out.
#[test]
fn an_8_mib_pool_has_the_geometry_the_design_gives() {
    let dir = common::shm_dir();
    let path = common::path(&dir, "design.pool");
    Pool::<()>::create_any(&path, 8 << 20, 8, &common::pmem())
        .unwrap()
        .close()
        .unwrap();
    let (_, b) = common::superblock(&path);
    // 64 lanes of 64 KiB from 8192: the root at 8192 + 4 MiB, the heap a page later, to the
    // start of the backup header (8 MiB - 4 KiB).
    assert_eq!(
        fields(&b),
        [
            65536,
            8192,
            8192 + (4 << 20),
            8,
            12288 + (4 << 20),
            (8 << 20) - 4096 - 12288 - (4 << 20),
            16385,
        ]
    );
    let pool = Pool::<()>::open_any(&path, &common::pmem()).unwrap();
    let layout = pool.geometry().heap_layout();
    // The table: 16385 descriptors of 8 bytes, in whole pages (132 KiB); the chunks after it.
    assert_eq!(layout.table, 12288 + (4 << 20));
    assert_eq!(layout.chunks - layout.table, 132 << 10);
    assert_eq!(layout.n_chunks, ((8 << 20) - 4096 - layout.chunks) / CHUNK);
}

/// A pool whose heap would start exactly at the end of its data area is made, with an empty
/// heap (the lanes and root fit); one page less is refused by name, its file removed.
#[test]
fn the_smallest_pool_for_its_lanes_and_root() {
    let dir = common::shm_dir();
    let o = common::pmem().lanes(4).lane_size(8192).max_size(1 << 20);
    // Header, superblock, 4 lanes of 8 KiB, a 100-byte root (a page), then the backup header.
    let smallest = 4096 + 4096 + 4 * 8192 + 4096 + 4096;
    let path = common::path(&dir, "small.pool");
    let made = Pool::<()>::create_any(&path, smallest, 100, &o);
    let path2 = common::path(&dir, "smaller.pool");
    let e = Pool::<()>::create_any(&path2, smallest - 4096, 100, &o).unwrap_err();
    assert!(
        matches!(e, Error::InvalidOptions(w) if w == "pool too small for its lanes and root object"),
        "{e:?}"
    );
    assert!(!path2.exists(), "a refused pool's file is removed");
    let pool = made.unwrap();
    let g = pool.geometry();
    assert_eq!((g.heap_offset, g.heap_size), (smallest - 4096, 0));
}
