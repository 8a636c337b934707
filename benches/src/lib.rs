//! Shared helpers for the ptm benchmarks.
//!
//! Benchmarks that want persistent-memory behaviour without real persistent memory put their
//! pool on a RAM-backed file system ([`pmem_pool_dir`], `/dev/shm` when present) and force the
//! cache-flush domain ([`TempPool::create`] with `force_pmem = true`): the cost measured is the
//! CPU's (clwb/clflushopt/clflush + sfence), not a device's. A pool in
//! [`std::env::temp_dir`] without forcing gets the msync domain of an ordinary file system.
//!
//! With the `pmdk` feature, the `pmdk` module binds PMDK's libpmemobj for side-by-side
//! transaction and allocator benchmarks (`benches/tx.rs`, `benches/alloc.rs`), and the
//! `pmdk_collections` module provides a hash map and a B+ tree written in C against libpmemobj
//! for the collections benchmark (`benches/collections.rs`).

use std::error::Error;
use std::path::{Path, PathBuf};

use pmem_core::{Region, RegionOptions};

#[cfg(feature = "pmdk")]
pub mod pmdk;
#[cfg(feature = "pmdk")]
pub mod pmdk_collections;

/// The RAM-backed directory preferred for emulated persistent-memory pools.
pub const SHM_DIR: &str = "/dev/shm";

/// The directory for a pool emulating persistent memory: [`SHM_DIR`] if it is a directory,
/// otherwise [`std::env::temp_dir`]. Compare the result with [`SHM_DIR`] to tell which.
pub fn pmem_pool_dir() -> PathBuf {
    let shm = Path::new(SHM_DIR);
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A pool file in a fresh temporary directory, removed (after the region is unmapped) on drop.
#[derive(Debug)]
pub struct TempPool {
    /// The mapped pool. Declared first so it is unmapped and unlocked before the directory goes.
    pub region: Region,
    _dir: tempfile::TempDir,
}

impl TempPool {
    /// Creates a `size`-byte pool named `bench.pool` in a new temporary directory under `dir`,
    /// forced into the cache-flush domain when `force_pmem` is true (otherwise the domain follows
    /// the file kind: msync on an ordinary file system).
    ///
    /// # Errors
    ///
    /// The temporary directory cannot be created, or [`RegionOptions::create`] fails.
    pub fn create(dir: &Path, size: u64, force_pmem: bool) -> Result<TempPool, Box<dyn Error>> {
        let tmp = tempfile::Builder::new().prefix("ptm-bench-").tempdir_in(dir)?;
        let region = RegionOptions::new()
            .force_pmem(force_pmem)
            .create(tmp.path().join("bench.pool"), size)?;
        Ok(TempPool { region, _dir: tmp })
    }
}

/// Hands out offsets `start, start + stride, start + 2 * stride, ...` within a window of
/// `window` bytes, wrapping around, so that each benchmark iteration touches fresh lines.
#[derive(Debug, Clone)]
pub struct Rotor {
    start: u64,
    stride: u64,
    slots: u64,
    next: u64,
}

impl Rotor {
    /// A rotor over `[start, start + window)` in steps of `stride` (at least one slot).
    ///
    /// # Panics
    ///
    /// If `stride` is 0.
    pub fn new(start: u64, window: u64, stride: u64) -> Rotor {
        assert!(stride > 0, "Rotor stride must be positive");
        Rotor {
            start,
            stride,
            slots: (window / stride).max(1),
            next: 0,
        }
    }

    /// The next offset.
    #[inline]
    pub fn next_offset(&mut self) -> u64 {
        let off = self.start + self.next * self.stride;
        self.next += 1;
        if self.next == self.slots {
            self.next = 0;
        }
        off
    }
}

/// xorshift64*: a small deterministic pseudo-random sequence (for picking benchmark keys and
/// test operations; not for anything that needs quality randomness).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// The sequence from `seed` (a zero seed, which xorshift cannot leave, is replaced by a fixed
    /// non-zero one).
    pub fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The next value.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `n` (modulo bias is negligible for the small `n` of the benchmarks).
    ///
    /// # Panics
    ///
    /// If `n` is 0.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Prints that the PMDK side of a benchmark is off (the `pmdk` feature is not enabled).
pub fn print_pmdk_skipped() {
    println!("pmdk          : SKIPPED (build with `--features pmdk` to compare with libpmemobj)");
}
