//! A paged region as the memory of a ptm pool: [`pool_memory`] gives the
//! [`ExternalMemorySource`] that `ptm::PoolOptions::external_memory` (or
//! `pmem_core::RegionOptions::external`) takes. By default flushes write back the changed 1 KiB
//! blocks of the flushed pages (`pwrite`, direct when the file allows it: [`IoMode::Auto`]),
//! drains `fdatasync`; the pool's persistence domain is `Paged` (two syncs per transaction).
//!
//! With `Engine::Journaled` (`ptm::PoolOptions::engine`) the pool runs the journaled engine over
//! this memory instead: flushes and ordering points go to a journal beside the pool, a durable
//! transaction costs one `fdatasync`, and the region holds back the write-back of a changed page
//! (eviction) until the journal is durable ([`PagedRegion::hold_write_back_for`]); checkpoints
//! write the changed blocks of resident pages home. See docs/design.md §3.1.
//!
//! ```no_run
//! use ptm::pmem_core::Engine;
//! use ptm::{PCell, Pool, PoolOptions};
//! # #[derive(ptm::Persistent)]
//! # #[persistent(crate = "ptm::pmem_core")]
//! # #[repr(C)]
//! # struct Root { counter: PCell<u64> }
//! let opts = PoolOptions::new()
//!     .engine(Engine::Journaled)
//!     .external_memory(nvme_backing::pool_memory(256)); // at most 1 MiB resident
//! let pool = Pool::<Root>::create("/var/tmp/big.pool", 64 << 20, &opts)?;
//! pool.transaction(|tx, r| r.counter.set(tx, 1))?; // one fdatasync (of the journal)
//! # Ok::<(), ptm::Error>(())
//! ```

use std::io;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use pmem_core::WriteAheadGate;
use pmem_core::{ExternalMemory, ExternalMemorySource};

#[cfg(doc)]
use crate::region::IoMode;
use crate::region::{FaultMode, PagedOptions, PagedRegion};

/// The memory of one pool: a paged region over the pool file.
#[derive(Debug)]
pub struct PoolMemory {
    region: PagedRegion,
    /// The first write-back error since the last drain (flush cannot return errors).
    error: Mutex<Option<io::Error>>,
}

impl PoolMemory {
    /// The paged region (statistics, resident pages).
    pub fn region(&self) -> &PagedRegion {
        &self.region
    }
}

// SAFETY: `PagedRegion` maps `len()` bytes at `as_ptr()` for its whole life, showing the backing
// file's contents (pages are loaded on first touch); `persist` writes the flushed range's changed
// blocks back with `pwrite` before returning, and `drain` `fdatasync`s, so flushed bytes are in
// the file once `drain` returns `Ok`; both are safe from any thread (`PagedRegion: Sync`). Once
// a gate is installed, every write of changed blocks (`Shared::write_back`, the only place the
// region writes the file) waits at it after the bytes are sealed or snapshotted and before the
// first `pwrite`, and writes nothing if it refuses.
unsafe impl ExternalMemory for PoolMemory {
    fn base(&self) -> NonNull<u8> {
        NonNull::new(self.region.as_ptr()).expect("a mapped region is never at address 0")
    }

    fn len(&self) -> usize {
        self.region.len()
    }

    fn flush(&self, offset: usize, len: usize) {
        if let Err(e) = self.region.persist(offset, len) {
            let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| io::Error::other(e));
        }
    }

    fn drain(&self) -> io::Result<()> {
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        self.region.drain().map_err(io::Error::other)
    }

    fn install_write_ahead(&self, gate: &Arc<WriteAheadGate>) -> bool {
        self.region.hold_write_back_for(Arc::clone(gate))
    }
}

/// The memory source for pools on paged memory with at most `resident_limit` resident 4 KiB
/// pages (at least 2): each pool opened with it gets its own [`PagedRegion`] over the pool file,
/// with faults served in [`FaultMode::Signal`] and [`IoMode::Auto`] (direct I/O when the file
/// allows it).
pub fn pool_memory(resident_limit: usize) -> ExternalMemorySource {
    pool_memory_with_options(resident_limit, PagedOptions::new())
}

/// [`pool_memory`] with the given fault mode ([`IoMode::Auto`]; opening a pool fails with the
/// region's error, e.g. [`Error::Userfaultfd`](crate::Error::Userfaultfd), as an `io::Error`).
pub fn pool_memory_with_mode(resident_limit: usize, mode: FaultMode) -> ExternalMemorySource {
    pool_memory_with_options(resident_limit, PagedOptions::new().fault_mode(mode))
}

/// [`pool_memory`] with the given fault and I/O modes (opening a pool fails with the region's
/// error, e.g. [`Error::DirectIoUnsupported`](crate::Error::DirectIoUnsupported) for
/// [`IoMode::Direct`] on tmpfs, as an `io::Error`).
pub fn pool_memory_with_options(resident_limit: usize, options: PagedOptions) -> ExternalMemorySource {
    ExternalMemorySource(Arc::new(move |path: &Path, len: usize| {
        let region = options
            .open(path, len, resident_limit)
            .map_err(io::Error::other)?;
        Ok(Arc::new(PoolMemory {
            region,
            error: Mutex::new(None),
        }) as Arc<dyn ExternalMemory>)
    }))
}
