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
