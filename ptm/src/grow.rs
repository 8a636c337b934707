//! Growing a pool: more heap at the end of the data area, every offset unchanged.
//!
//! The heap's chunk table is made at creation with room for the chunks of a pool of
//! [`PoolOptions::max_size`](crate::PoolOptions::max_size) (stored in the superblock since
//! format 2). Growing adds chunks after the last one: they are free
//! (their descriptors were zeroed with the table), and no block moves.

use std::path::Path;

use crate::engine::heap::CHUNK;
use crate::engine::layout::Geometry;
use crate::error::{Error, Result};
use crate::pool::{Pool, PoolOptions};

/// The largest pool (bytes) the chunk table of a pool with geometry `geo` can describe.
pub fn max_pool_size(geo: &Geometry) -> u64 {
    let layout = geo.heap_layout();
    // The backup header follows the data area.
    (layout.chunks + geo.table_entries * CHUNK + pmem_core::HEADER_SIZE as u64).min(1 << 48)
}

/// Grows the closed pool at `path` to `new_size` bytes: opens it (recovery runs, a journal is
/// replayed), closes it cleanly, then extends the file and rewrites both headers (the crash-safe
/// protocol of [`pmem_core::grow_file`]: a crash leaves the old or the new size). The new bytes
/// are free heap chunks. `opts` are those the pool is opened with (layout, engine).
///
/// # Errors
///
/// The errors of [`Pool::open`]; [`pmem_core::Error::CannotGrow`] (through [`Error::Core`]) for
/// a device-DAX pool, a size not larger than the pool's, or one beyond what its chunk table can
/// describe ([`max_pool_size`]); [`pmem_core::Error::InvalidSize`]; an I/O error if the file
/// system refuses the space, the pool unchanged.
///
/// # Examples
///
/// ```
/// use ptm::{PCell, Persistent, Pool, PoolOptions};
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     n: PCell<u64>,
/// }
///
/// # fn main() -> Result<(), ptm::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("g.pool");
/// let opts = PoolOptions::new();
/// Pool::<Root>::create(&path, 8 << 20, &opts)?.close()?;
/// ptm::grow_pool(&path, 64 << 20, &opts)?;
/// let pool = Pool::<Root>::open(&path, &opts)?;
/// assert_eq!(pool.region().len(), 64 << 20);
/// # Ok(()) }
/// ```
pub fn grow_pool(path: impl AsRef<Path>, new_size: u64, opts: &PoolOptions) -> Result<pmem_core::GrowReport> {
    let path = path.as_ref();
    let pool = Pool::<()>::open_any(path, opts)?;
    let geo = pool.geometry();
    let device_dax = pool.region().backing() == pmem_core::Backing::DeviceDax;
    pool.close()?;
    let refuse = |why| {
        Error::Core(pmem_core::Error::CannotGrow {
            path: path.into(),
            why,
        })
    };
    if device_dax {
        return Err(refuse("a device-DAX pool is as large as its device"));
    }
    if new_size > max_pool_size(&geo) {
        return Err(refuse(
            "its chunk table has no room for a heap that large (see ptm::max_pool_size; \
             create pools with PoolOptions::max_size)",
        ));
    }
    Ok(pmem_core::grow_file(path, new_size)?)
}

impl<R> Pool<R> {
    /// Grows the pool to `new_size` bytes while it is open: the file is extended and the new
    /// part mapped in place after the old one (address space for it was reserved at open), so
    /// the base address, every `PPtr`, reference and guard stay valid and other threads' transactions go on
    /// meanwhile. The new bytes are free heap chunks, available to allocations as soon as this
    /// returns. Crash-safe: a crash leaves the old or the new size (see
    /// [`pmem_core::Region::grow`]).
    ///
    /// # Errors
    ///
    /// [`pmem_core::Error::CannotGrow`] (through [`Error::Core`]): device-DAX, paged or simulated
    /// pools; a size not larger than the pool's; one beyond the address space reserved at open
    /// ([`Region::grow_room`](pmem_core::Region::grow_room): reopen the pool, or grow it closed
    /// with [`grow_pool`]) or beyond the chunk table ([`max_pool_size`]).
    /// [`pmem_core::Error::InvalidSize`]; an I/O error if the file system refuses the space (the
    /// pool unchanged).
    ///
    /// # Examples
    ///
    /// ```
    /// use ptm::{PCell, Persistent, Pool, PoolOptions};
    ///
    /// #[derive(Persistent)]
    /// #[persistent(crate = "ptm::pmem_core")]
    /// #[repr(C)]
    /// struct Root {
    ///     n: PCell<u64>,
    /// }
    ///
    /// # fn main() -> Result<(), ptm::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let pool = Pool::<Root>::create(dir.path().join("g.pool"), 8 << 20, &PoolOptions::new())?;
    /// let base = pool.region().base();
    /// pool.grow(64 << 20)?;
    /// assert_eq!(pool.region().base(), base); // in place
    /// let big = pool.transaction(|tx, _| tx.alloc_bytes(32 << 20))?;
    /// assert!(big > 0);
    /// # Ok(()) }
    /// ```
    pub fn grow(&self, new_size: u64) -> Result<()> {
        let s = &*self.shared;
        if new_size > max_pool_size(&s.geo) {
            return Err(Error::Core(pmem_core::Error::CannotGrow {
                path: s.region.path().into(),
                why: "its chunk table has no room for a heap that large (see ptm::max_pool_size; \
                      create pools with PoolOptions::max_size)",
            }));
        }
        s.grow(new_size)
    }
}

impl crate::engine::shared::Shared {
    /// Grows the open pool to `new_size` (see [`Pool::grow`]); the caller checked the table.
    pub(crate) fn grow(&self, new_size: u64) -> Result<()> {
        self.region.grow(new_size)?;
        self.heap.grow_to(self.geometry().heap_layout().n_chunks);
        Ok(())
    }

    /// `PoolOptions::auto_grow`: grows the pool so that `chunks` more chunks are free (to twice
    /// its size at least, at most the configured maximum, the address space reserved at open
    /// and what the chunk table describes). Returns whether it grew.
    pub(crate) fn auto_grow(&self, chunks: u64) -> bool {
        let Some(max) = self.auto_grow else {
            return false;
        };
        let len = self.region.len();
        let limit = max.min(self.region.grow_room()).min(max_pool_size(&self.geo)) & !4095;
        let want = len.saturating_mul(2).max(len + (chunks + 1) * CHUNK);
        let target = want.min(limit);
        target > len && self.grow(target).is_ok()
    }
}
