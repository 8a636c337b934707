//! Helpers shared by ptm's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// A temporary directory on tmpfs (`/dev/shm`) when present, else the system temp dir.
pub fn shm_dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// `dir/name`.
pub fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// Options for a pool on tmpfs treated as persistent memory.
pub fn pmem() -> ptm::PoolOptions {
    ptm::PoolOptions::new().layout("test").force_pmem(true)
}

/// A byte-for-byte copy of a pool file as it is now: a crash image in which every store made so
/// far reached the media (tmpfs holds the mapping's pages).
pub fn crash_image(src: &Path, dst: &Path) {
    std::fs::copy(src, dst).unwrap();
}

/// The pool offsets of the heap's allocated blocks, sorted.
pub fn allocated_offsets<R: ptm::Persistent>(pool: &mut ptm::Pool<R>) -> Vec<u64> {
    let mut out: Vec<u64> = pool
        .allocated_blocks()
        .unwrap()
        .into_iter()
        .map(|(o, _)| o)
        .collect();
    out.sort_unstable();
    out
}

/// Pool offset of the superblock.
pub const SUPERBLOCK: u64 = 4096;
/// Bytes of the superblock its checksum covers (the checksum is stored right after them).
pub const SUPERBLOCK_HASHED: usize = 120;

/// The closed pool at `path`, opened for reading and writing, and its superblock's first 128
/// bytes.
pub fn superblock(path: &Path) -> (std::fs::File, [u8; 128]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut sb = [0u8; 128];
    f.read_exact_at(&mut sb, SUPERBLOCK).unwrap();
    (f, sb)
}

/// Redoes the checksum of superblock bytes `sb` (xxh3-64 of the first 120), as a build that
/// wrote them would have: for forged or old-format superblocks that must pass the checksum.
pub fn rehash_superblock(sb: &mut [u8; 128]) {
    let h = xxhash_rust::xxh3::xxh3_64(&sb[..SUPERBLOCK_HASHED]);
    sb[SUPERBLOCK_HASHED..SUPERBLOCK_HASHED + 8].copy_from_slice(&h.to_le_bytes());
}
