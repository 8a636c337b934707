//! Guards the superblock's geometry checks (`Geometry::decode`, design §8.1): a superblock whose
//! checksum verifies but whose geometry is impossible (each rule broken alone, the other fields
//! laid out consistently around it) or whose chunk table cannot be (smaller than the heap needs,
//! larger than the heap) is refused at open with `CorruptMetadata` naming it, as a forged or
//! damaged-then-rehashed superblock must be: recovery would otherwise read lanes, root and heap
//! at offsets it made up.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ptm::internals::heap::HeapLayout;
use ptm::{Error, Pool, PoolOptions};

use crate::common::{self, SUPERBLOCK};

const IMPOSSIBLE: &str = "superblock geometry is impossible";
const TABLE: &str = "superblock chunk table capacity is impossible";

fn opts() -> PoolOptions {
    common::pmem().lanes(4).lane_size(8192)
}

/// The geometry fields of a superblock (bytes 8..72).
#[derive(Clone, Copy, Debug)]
struct Fields {
    lane_count: u32,
    lane_size: u64,
    lanes_offset: u64,
    root_offset: u64,
    root_size: u64,
    heap_offset: u64,
    heap_size: u64,
    table_entries: u64,
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn read_sb(path: &Path) -> [u8; 128] {
    common::superblock(path).1
}

fn fields(b: &[u8; 128]) -> Fields {
    Fields {
        lane_count: u32::from_le_bytes(b[8..12].try_into().unwrap()),
        lane_size: word(b, 16),
        lanes_offset: word(b, 24),
        root_offset: word(b, 32),
        root_size: word(b, 40),
        heap_offset: word(b, 48),
        heap_size: word(b, 56),
        table_entries: word(b, 64),
    }
}

/// Writes `f` into the superblock of `path` with a checksum that verifies.
fn write_sb(path: &Path, f: Fields) {
    let mut b = read_sb(path);
    b[8..12].copy_from_slice(&f.lane_count.to_le_bytes());
    for (at, v) in [
        (16, f.lane_size),
        (24, f.lanes_offset),
        (32, f.root_offset),
        (40, f.root_size),
        (48, f.heap_offset),
        (56, f.heap_size),
        (64, f.table_entries),
    ] {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    common::rehash_superblock(&mut b);
    let (f, _) = common::superblock(path);
    f.write_all_at(&b, SUPERBLOCK).unwrap();
}

/// A closed 16 MiB pool (4 lanes of 8 KiB, a 100-byte root) and its superblock's fields.
fn template(dir: &tempfile::TempDir) -> (PathBuf, Fields) {
    let path = common::path(dir, "template.pool");
    Pool::<()>::create_any(&path, 16 << 20, 100, &opts())
        .unwrap()
        .close()
        .unwrap();
    let f = fields(&read_sb(&path));
    (path, f)
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(4096) * 4096
}

/// `f` with its root and heap moved to follow `lane_count` lanes of `lane_size` from
/// `lanes_offset` as the rules require, the heap reaching the same end as before.
fn relayout(f: Fields, lane_count: u32, lane_size: u64, lanes_offset: u64) -> Fields {
    let end = f.heap_offset + f.heap_size;
    let root_offset = lanes_offset + u64::from(lane_count) * lane_size;
    let heap_offset = align_up(root_offset + f.root_size);
    Fields {
        lane_count,
        lane_size,
        lanes_offset,
        root_offset,
        heap_offset,
        heap_size: end - heap_offset,
        ..f
    }
}

/// Opens a copy of the template with the superblock's fields `f`: the `CorruptMetadata`
/// description, or `None` if the geometry was accepted (whatever opening did next).
fn refusal(dir: &tempfile::TempDir, template: &Path, f: Fields) -> Option<&'static str> {
    let path = common::path(dir, "forged.pool");
    std::fs::copy(template, &path).unwrap();
    write_sb(&path, f);
    match Pool::<()>::open_any(&path, &opts()) {
        Err(Error::CorruptMetadata { what, .. }) if what.starts_with("superblock") => Some(what),
        _ => None,
    }
}

#[test]
fn a_consistent_relayout_is_accepted_and_opens() {
    // Control for the cases below: the template rewritten through `relayout` unchanged opens.
    let dir = common::shm_dir();
    let (path, f) = template(&dir);
    let same = relayout(f, f.lane_count, f.lane_size, f.lanes_offset);
    assert_eq!(format!("{same:?}"), format!("{f:?}"));
    write_sb(&path, same);
    Pool::<()>::open_any(&path, &opts()).unwrap().close().unwrap();
    // More lanes, the root and heap moved after them: still a possible geometry.
    assert_eq!(refusal(&dir, &path, relayout(f, 8, 8192, f.lanes_offset)), None);
}

#[test]
fn a_superblock_breaking_one_geometry_rule_is_refused() {
    let dir = common::shm_dir();
    let (path, f) = template(&dir);
    let cases: [(&str, Fields); 10] = [
        ("no lanes", relayout(f, 0, 8192, f.lanes_offset)),
        ("1025 lanes", relayout(f, 1025, 8192, f.lanes_offset)),
        ("lanes of 4 KiB", relayout(f, 4, 4096, f.lanes_offset)),
        // 512 lanes of 8200 bytes end on a 4 KiB boundary: only the lane size is wrong.
        ("lanes of 8200 bytes", relayout(f, 512, 8200, f.lanes_offset)),
        ("lanes one page late", relayout(f, 4, 8192, f.lanes_offset + 4096)),
        ("a page between the lanes and the root", {
            let mut g = f;
            g.root_offset += 4096;
            g.heap_offset = align_up(g.root_offset + g.root_size);
            g.heap_size -= 4096;
            g
        }),
        (
            "a page between the root and the heap",
            Fields {
                heap_offset: f.heap_offset + 4096,
                heap_size: f.heap_size - 4096,
                ..f
            },
        ),
        (
            "a heap of whole pages less 8 bytes",
            Fields {
                heap_size: f.heap_size - 8,
                ..f
            },
        ),
        (
            "a heap past the end of the file",
            Fields {
                heap_size: f.heap_size + 4096,
                ..f
            },
        ),
        (
            "a heap past the end of the address space",
            Fields {
                heap_size: !4095,
                ..f
            },
        ),
    ];
    for (name, g) in cases {
        assert_eq!(refusal(&dir, &path, g), Some(IMPOSSIBLE), "{name}: {g:?}");
    }
}

#[test]
fn a_superblock_with_an_impossible_chunk_table_is_refused() {
    let dir = common::shm_dir();
    let (path, f) = template(&dir);
    let needed = HeapLayout::new(f.heap_offset, f.heap_size).table_entries();
    assert!(needed > 1 && f.table_entries >= needed);
    // Smaller than the heap needs.
    let small = Fields {
        table_entries: needed - 1,
        ..f
    };
    assert_eq!(refusal(&dir, &path, small), Some(TABLE));
    // Larger than the heap (its 8-byte entries alone take more than the heap by one entry).
    let large = Fields {
        table_entries: f.heap_size / 8 + 1,
        ..f
    };
    assert_eq!(refusal(&dir, &path, large), Some(TABLE));
    // As large as the heap: not refused as impossible by the superblock check.
    let full = Fields {
        table_entries: f.heap_size / 8,
        ..f
    };
    assert_eq!(refusal(&dir, &path, full), None);
}
