//! A mapped pool region: create/open a pool file or device-DAX node, lock it, validate its
//! header, map it and pick its persistence domain.
//!
//! Domain selection at open (visible as [`Region::domain`]):
//!
//! | backing                                   | mapping                           | domain                 |
//! |-------------------------------------------|-----------------------------------|------------------------|
//! | device-DAX node (`/dev/daxX.Y`)           | `MAP_SHARED`, size/align from sysfs | cache flush (or eADR) |
//! | file on a DAX file system                 | `MAP_SHARED_VALIDATE \| MAP_SYNC`   | cache flush (or eADR) |
//! | any other file, forced (option or `PTM_FORCE_PMEM=1`) | `MAP_SHARED` (MAP_SYNC refused) | cache flush (or eADR) |
//! | any other file                            | `MAP_SHARED`                      | msync                  |
//! | regular file, with [`RegionOptions::external`] | the provider's memory (not mapped) | paged      |
//! | regular file, with [`RegionOptions::external`] and [`Engine::Journaled`] | the provider's memory | journaled (eviction held back until the journal is durable) |
//! | any file, with `RegionOptions::simulate` (feature `simulate`) | as above        | simulated              |
//!
//! Ordering and durability: [`Region::flush`] starts making a range durable;
//! [`Region::order`] is an *ordering point* (ranges this thread flushed before it reach the
//! persistence domain before any flushed after it) and [`Region::drain`] a *durability point*
//! (everything flushed so far is durable when it returns). On persistent memory both are one
//! `sfence`; they differ where durability costs I/O (see the table in `domain.rs`).
//!
//! The module is split by concern: `options` (the builder, create and open, the choice of
//! domain), `headers` (validating, inspecting and repairing the two header copies), `mapping`
//! (the memory, device-DAX geometry, file locking, pointer tags) and `domain` (the persistence
//! domain, which owns its state).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::header::PoolHeader;
use crate::persistent::Persistent;
use crate::pptr::PPtr;

mod domain;
mod grow;
mod headers;
mod mapping;
mod options;
mod sysfs;

use domain::Domain;
use mapping::{Mapping, TagRegistration};

pub use domain::{DomainKind, Durability, ExternalMemory};
pub use grow::{grow_file, GrowReport};
pub use headers::{
    accept_unsafe_shutdown, inspect_headers, repair_headers, repair_journal, HeaderFault, HeaderRepair,
    HeaderReport,
};
pub use mapping::Backing;
pub use options::Engine;
pub use options::{
    ExternalFactory, ExternalMemorySource, RegionOptions, ENV_EADR, ENV_FORCE_PMEM, ENV_SYSFS_ROOT,
};
pub use sysfs::{NvdimmRegion, PlatformDomain};

const PAGE: usize = 4096;
const HUGE_ALIGN: usize = 2 << 20;

/// An open, locked, mapped pool.
///
/// The region is the raw layer: it hands out offsets, [`PPtr`]s resolved to raw pointers, and
/// byte copies, and makes ranges durable with [`flush`](Region::flush) +
/// [`drain`](Region::drain) (or ordered with [`order`](Region::order)). Byte access through `&self` only reads and through `&mut self`
/// writes; code that writes through [`base`](Region::base) must itself rule out concurrent access
/// to the same bytes. Dropping the region unmaps and unlocks the pool; it does not drain.
#[derive(Debug)]
pub struct Region {
    /// The pool's memory (an external provider's is kept alive by `domain`).
    map: Mapping,
    /// The persistence domain chosen at open, with its state.
    domain: Domain,
    path: PathBuf,
    header: PoolHeader,
    backing: Backing,
    map_sync: bool,
    backup_rewritten: bool,
    /// What replaying a journal did at open.
    replay: crate::journal::ReplayReport,
    /// The libnvdimm region under the pool, as sysfs described it at open.
    platform: Option<sysfs::NvdimmRegion>,
    /// What the domain promises (decided at open).
    durability: Durability,
    /// Whether this open marked the pool dirty in its shutdown record (cleared at drop).
    shutdown_armed: bool,
    /// Serializes [`Region::grow`].
    grow_lock: std::sync::Mutex<()>,
    _tag: TagRegistration,
    // Declared last: dropped (closing the descriptor, releasing the lock) after the unmap.
    _file: File,
}

impl Region {
    /// Puts a region together from what `RegionOptions::create`/`open` prepared.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        file: File,
        path: &Path,
        map: Mapping,
        domain: Domain,
        map_sync: bool,
        backing: Backing,
        header: PoolHeader,
        tag: TagRegistration,
    ) -> Region {
        let direct = map_sync || backing == Backing::DeviceDax;
        #[cfg(feature = "simulate")]
        let simulated = matches!(domain, Domain::Simulated(_));
        #[cfg(not(feature = "simulate"))]
        let simulated = false;
        // A device-DAX node sits on devtmpfs, but its memory is the device's. (A simulated
        // region promises process death only whatever the file: the harness opens thousands,
        // so it skips the system calls.)
        let memory_fs = backing == Backing::File
            && !simulated
            && (domain::on_memory_fs(file.as_raw_fd())
                || domain
                    .journal_path()
                    .and_then(|j| File::open(j).ok())
                    .is_some_and(|j| domain::on_memory_fs(j.as_raw_fd())));
        let durability = Durability::of(domain.kind(), direct, memory_fs);
        Region {
            map,
            domain,
            path: path.to_owned(),
            header,
            backing,
            map_sync,
            backup_rewritten: false,
            replay: Default::default(),
            platform: None,
            durability,
            shutdown_armed: false,
            grow_lock: std::sync::Mutex::new(()),
            _tag: tag,
            _file: file,
        }
    }

    /// Creates a pool with default options (see [`RegionOptions::create`]).
    ///
    /// # Errors
    ///
    /// As [`RegionOptions::create`].
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<Region> {
        RegionOptions::new().create(path, size)
    }

    /// Opens a pool with default options (see [`RegionOptions::open`]).
    ///
    /// # Errors
    ///
    /// As [`RegionOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Region> {
        RegionOptions::new().open(path)
    }

    /// The persistence domain chosen at open.
    pub fn domain(&self) -> DomainKind {
        self.domain.kind()
    }

    /// What the persistence domain promises about durable data: that it survives power loss,
    /// or only the death of the process (a pool on tmpfs or ramfs, a file merely treated as
    /// persistent memory, the crash harness's simulation). See [`Durability`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pmem_core::{Durability, RegionOptions};
    ///
    /// # fn main() -> Result<(), pmem_core::Error> {
    /// let dir = tempfile::tempdir().unwrap();
    /// // A plain file treated as persistent memory: flushes reach only the page cache.
    /// let region = RegionOptions::new().force_pmem(true).create(dir.path().join("p"), 1 << 20)?;
    /// assert_eq!(region.durability(), Durability::ProcessCrash);
    /// # Ok(()) }
    /// ```
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The libnvdimm region (NVDIMM or CXL persistent memory) the pool's device belongs to, as
    /// sysfs described it at open: its persistence domain (which chose eADR unless overridden)
    /// and its DIMMs' unsafe-shutdown count. `None` when the pool is not on one.
    pub fn nvdimm_region(&self) -> Option<&NvdimmRegion> {
        self.platform.as_ref()
    }

    /// Whether this open recorded the device's unsafe-shutdown count in the pool header and
    /// marked the pool in use (cleared at a clean close; see
    /// [`ShutdownRecord`](crate::header::ShutdownRecord)). False when the device reports no
    /// count, or with [`RegionOptions::ignore_unsafe_shutdown`].
    pub fn shutdown_tracked(&self) -> bool {
        self.shutdown_armed
    }

    /// What the pool lives on.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Whether the kernel accepted `MAP_SYNC` (the file is on a DAX file system).
    pub fn map_sync(&self) -> bool {
        self.map_sync
    }

    /// Whether open found the backup header differing from the valid primary and rewrote it.
    pub fn backup_rewritten(&self) -> bool {
        self.backup_rewritten
    }

    /// The pool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pool header as validated at open (its size fields are the size at open; after a
    /// [`grow`](Region::grow) the pool is [`len`](Region::len) bytes).
    #[inline]
    pub fn header(&self) -> &PoolHeader {
        &self.header
    }

    /// Total mapped bytes (the pool size, which [`grow`](Region::grow) raises).
    #[inline]
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The header as it is in the file now: the one read at open with the current size.
    fn current_header(&self) -> PoolHeader {
        let mut h = self.header;
        let len = self.len();
        if h.pool_size != len {
            let hs = crate::header::HEADER_SIZE as u64;
            h.pool_size = len;
            h.data_size = len - 2 * hs;
            h.backup_offset = len - hs;
            h.checksum = h.compute_checksum();
        }
        h
    }

    /// The largest size [`grow`](Region::grow) can reach while the pool is open: the address
    /// space reserved after the mapping at open (see
    /// [`RegionOptions::grow_room`](RegionOptions::grow_room)); the pool size if it cannot grow
    /// in place.
    pub fn grow_room(&self) -> u64 {
        if self.grows_in_place() {
            self.map.reserved() as u64
        } else {
            self.len()
        }
    }

    /// Whether the pool is a file mapped by this region (not device-DAX, paged or simulated).
    fn grows_in_place(&self) -> bool {
        self.backing == Backing::File
            && matches!(
                self.domain.kind(),
                DomainKind::CacheFlush(_) | DomainKind::Eadr | DomainKind::Msync | DomainKind::Journaled
            )
    }

    /// Grows the open pool to `new_size` bytes in place: the file is extended and the new part
    /// mapped right after the old one, so the base address, every offset, pointer and reference
    /// stay valid, and other threads go on using the pool meanwhile (they see the new size only
    /// once it is mapped and durable). Crash-safe: a crash leaves the old or the new size (the
    /// protocol of [`grow_file`], finished or undone at the next open). The new bytes are zero.
    ///
    /// # Errors
    ///
    /// [`Error::CannotGrow`] for a device-DAX pool, a paged (external) or simulated region, a
    /// size not larger than the pool's, or one beyond [`grow_room`](Region::grow_room);
    /// [`Error::InvalidSize`]; [`Error::Io`] if the file system refuses the space (the pool is
    /// unchanged then).
    pub fn grow(&self, new_size: u64) -> Result<()> {
        let _serial = self.grow_lock.lock().unwrap_or_else(|p| p.into_inner());
        let refuse = |why| Error::CannotGrow {
            path: self.path.clone(),
            why,
        };
        if self.backing == Backing::DeviceDax {
            return Err(refuse("a device-DAX pool is as large as its device"));
        }
        if !self.grows_in_place() {
            return Err(refuse("paged and simulated regions cannot grow while open"));
        }
        if new_size > self.grow_room() {
            return Err(refuse(
                "beyond the address space reserved at open (reopen it, or grow it while closed)",
            ));
        }
        let hdr = self.current_header();
        grow::grow_locked(&self._file, &self.path, &hdr, new_size, |len| {
            self.map.extend(&self._file, &self.path, len as usize)
        })?;
        self.map.publish(new_size as usize);
        if let Domain::Journaled(j) = &self.domain {
            let hs = crate::header::HEADER_SIZE as u64;
            // SAFETY: the mapping now has `new_size` bytes at the same base, kept for the
            // journal's life (the region drops the domain before the mapping), within the
            // capacity given at start (`grow_room`).
            unsafe { j.journal.grow(new_size, new_size - hs) };
        }
        Ok(())
    }

    /// Always false: a pool is at least 16 KiB.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The data area `[start, end)` available to upper layers (between the two header copies).
    #[inline]
    pub fn data_range(&self) -> std::ops::Range<u64> {
        self.header.data_offset..self.len() - crate::header::HEADER_SIZE as u64
    }

    /// Base address of the mapping.
    ///
    /// Writing through it is the caller's responsibility: no other access to the same bytes
    /// may run concurrently, and the bytes of both header copies must not be written.
    pub fn base(&self) -> NonNull<u8> {
        self.map.base
    }

    /// Checks that `[offset, offset + len)` lies in the data area.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    #[inline]
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let r = self.data_range();
        match offset.checked_add(len) {
            Some(end) if offset >= r.start && end <= r.end => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                start: r.start,
                end: r.end,
            }),
        }
    }

    /// A [`PPtr`] to the `T` at `offset`, checked for bounds and alignment.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`], [`Error::Misaligned`].
    #[inline]
    pub fn pptr_at<T: Persistent>(&self, offset: u64) -> Result<PPtr<T>> {
        let () = T::__LAYOUT_CHECK;
        self.check_range(offset, core::mem::size_of::<T>() as u64)?;
        let align = core::mem::align_of::<T>() as u64;
        if !offset.is_multiple_of(align) {
            return Err(Error::Misaligned { offset, align });
        }
        Ok(PPtr::from_parts(self.header.pptr_tag, offset))
    }

    /// Turns a [`PPtr`] into an address in this mapping, checking null, the pool tag, bounds
    /// and alignment.
    ///
    /// # Errors
    ///
    /// [`Error::NullPointer`], [`Error::WrongPool`], [`Error::OutOfBounds`], [`Error::Misaligned`].
    #[inline]
    pub fn resolve<T: Persistent>(&self, p: PPtr<T>) -> Result<NonNull<T>> {
        if p.is_null() {
            return Err(Error::NullPointer);
        }
        if p.tag() != self.header.pptr_tag {
            return Err(Error::WrongPool {
                expected: self.header.pptr_tag,
                found: p.tag(),
            });
        }
        let offset = p.offset();
        self.pptr_at::<T>(offset)?;
        // SAFETY: `offset + size_of::<T>()` lies within the mapping (checked just above).
        Ok(unsafe { self.resolve_unchecked(p) })
    }

    /// The address of the `len` bytes at `p`, a block that starts 8-aligned: what
    /// [`resolve`](Region::resolve) checks of a `u64` at `p`, then
    /// [`check_range`](Region::check_range) of the `len` bytes, with the same errors, in one
    /// pass when everything holds (the lookup paths resolve a block per node or segment).
    ///
    /// # Errors
    ///
    /// [`Error::NullPointer`], [`Error::WrongPool`], [`Error::OutOfBounds`], [`Error::Misaligned`].
    #[inline]
    pub fn resolve_block(&self, p: PPtr<u8>, len: u64) -> Result<NonNull<u8>> {
        let off = p.offset();
        let r = self.data_range();
        let fits = off >= r.start && off.checked_add(len.max(8)).is_some_and(|end| end <= r.end);
        if fits && !p.is_null() && p.tag() == self.header.pptr_tag && off.is_multiple_of(8) {
            // SAFETY: `[off, off + len)` lies in the data area, inside the mapping.
            return Ok(unsafe { self.resolve_unchecked(p) });
        }
        self.resolve(PPtr::<u64>::from_parts(p.tag(), off))?;
        self.check_range(off, len)?;
        // SAFETY: as above (both checks passed).
        Ok(unsafe { self.resolve_unchecked(p) })
    }

    /// Turns a [`PPtr`] into an address without any check.
    ///
    /// # Safety
    ///
    /// `p` must belong to this pool and `p.offset() + size_of::<T>()` must not exceed
    /// [`len`](Region::len); the result is only as aligned as the offset.
    #[inline]
    pub unsafe fn resolve_unchecked<T>(&self, p: PPtr<T>) -> NonNull<T> {
        // SAFETY: the caller guarantees the offset lies inside the mapping, so the sum stays
        // within the mapped allocation and is non-null.
        unsafe { self.map.base.add(p.offset() as usize).cast() }
    }

    fn check_mapped(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset,
                len,
                start: 0,
                end: self.len(),
            }),
        }
    }

    /// Copies bytes at `offset` (anywhere in the pool, headers included) into `buf`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_mapped(offset, buf.len() as u64)?;
        // SAFETY: in bounds (checked); writers need `&mut self` or uphold `base`'s contract.
        unsafe { self.map.read_bytes(offset, buf) };
        Ok(())
    }

    /// Copies `data` into the data area at `offset` (not yet durable: flush and drain).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        // SAFETY: in bounds of the data area (checked); `&mut self` excludes other access.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.base.as_ptr().add(offset as usize),
                data.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the data area at `offset` with non-temporal stores and flushes its
    /// partial head and tail lines: durable after the next [`drain`](Region::drain).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`].
    pub fn write_nontemporal_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        // SAFETY: in bounds of the data area (checked); `&mut self` excludes other access, and
        // `data` is a distinct allocation.
        unsafe {
            self.copy_nontemporal_ptr(
                self.map.base.as_ptr().add(offset as usize),
                data.as_ptr(),
                data.len(),
            )
        };
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` inside the mapping the way the domain wants bulk
    /// writes: non-temporal stores with partial head/tail lines flushed (cache-flush, eADR; the
    /// simulated domain models them, byte exact), or a plain copy with the range flushed (msync,
    /// paged, journaled). Durable after the next
    /// [`drain`](Region::drain).
    ///
    /// # Safety
    ///
    /// - `[dst, dst + len)` lies inside this region's mapping and `src` is valid for `len` reads;
    /// - the ranges do not overlap and no other thread accesses `[dst, dst + len)` meanwhile.
    pub unsafe fn copy_nontemporal_ptr(&self, dst: *mut u8, src: *const u8, len: usize) {
        // SAFETY: forwarded caller contract; `map.base` is the start of the memory the domain
        // was chosen for.
        unsafe { self.domain.copy_nontemporal(self.map.base, dst, src, len) }
    }

    /// Starts making `[offset, offset + len)` durable: writes back its cache lines (cache-flush
    /// domain), nothing (eADR), records its pages (msync) or hands it to the external memory
    /// (paged). Durable after [`drain`](Region::drain); ordered by [`order`](Region::order).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfBounds`] if the range leaves the mapping.
    #[inline]
    pub fn flush(&self, offset: u64, len: u64) -> Result<()> {
        self.check_mapped(offset, len)?;
        // SAFETY: the range lies inside the mapping (checked).
        unsafe { self.flush_ptr(self.map.base.as_ptr().add(offset as usize), len as usize) };
        Ok(())
    }

    /// [`flush`](Region::flush) by address, without the bounds check.
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` lies inside this region's mapping.
    #[inline]
    pub unsafe fn flush_ptr(&self, ptr: *const u8, len: usize) {
        // SAFETY: the caller guarantees the range is mapped; `map.base` is the start of the
        // memory the domain was chosen for; the simulated domain's single-thread rule (see
        // `RegionOptions::simulate`) excludes concurrent writers.
        unsafe { self.domain.flush(self.map.base, ptr, len) }
    }

    /// An **ordering point**: every range this thread flushed before the call reaches the
    /// persistence domain before any range flushed after it. It need not wait for the device,
    /// so nothing is known durable when it returns; a crash leaves the pool as if some prefix
    /// of this thread's ordering points had completed, plus any subset of the flushes after
    /// the last of them. Use it where only the order matters (an undo log before the in-place
    /// stores it protects) and [`drain`](Region::drain) where durability is promised.
    ///
    /// Cache-flush and eADR domains: one `sfence`, as [`drain`](Region::drain). Msync domain:
    /// as `drain` (a shared file mapping offers no cheaper ordering than `msync`). Paged domain:
    /// [`ExternalMemory::order`]. Simulated domain: a crash point, as `drain`. Counted as one
    /// drain in [`PersistStats::drains`](crate::PersistStats::drains).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `msync` or the external memory fails (msync and paged domains only).
    #[inline]
    pub fn order(&self) -> Result<()> {
        // SAFETY: `map.base` is the start of the memory the domain was chosen for; the
        // simulated domain's single-thread rule excludes concurrent writers.
        unsafe { self.domain.order(self.map.base, &self.path) }
    }

    /// A **durability point**: waits until every range flushed so far by this thread (msync
    /// and paged: by any thread) is durable.
    ///
    /// Cache-flush and eADR domains: one `sfence`. Msync domain: `msync(MS_SYNC)` of the
    /// recorded pages, coalesced; drains are serialized so a drain never returns while another
    /// thread's msync of the same pages is still in flight. Paged domain:
    /// [`ExternalMemory::drain`]. Simulated domain: a crash point, then the recorded lines
    /// become durable. Counted as one drain in
    /// [`PersistStats::drains`](crate::PersistStats::drains).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `msync` or the external memory fails (msync and paged domains only).
    #[inline]
    pub fn drain(&self) -> Result<()> {
        // SAFETY: `map.base` is the start of the memory the domain was chosen for; the
        // simulated domain's single-thread rule excludes concurrent writers.
        unsafe { self.domain.drain(self.map.base, &self.path) }
    }

    /// [`flush`](Region::flush) then [`drain`](Region::drain).
    ///
    /// # Errors
    ///
    /// As both.
    pub fn persist(&self, offset: u64, len: u64) -> Result<()> {
        self.flush(offset, len)?;
        self.drain()
    }

    /// Makes everything flushed so far durable, whatever the durability mode: in the journaled
    /// engine's buffered mode a [`drain`](Region::drain) only appends, and this syncs the
    /// journal. Elsewhere the same as `drain`.
    ///
    /// # Errors
    ///
    /// As [`drain`](Region::drain).
    pub fn sync(&self) -> Result<()> {
        // SAFETY: `map.base` is the start of the memory the domain was chosen for; the
        // simulated domain's single-thread rule excludes concurrent writers.
        unsafe { self.domain.point(self.map.base, &self.path, domain::Point::Sync) }
    }

    /// Journaled engine: writes every page changed since the last checkpoint home, syncs the
    /// pool file and empties the journal (as when the journal passes its bound, and at close).
    /// Other engines: nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] on the journal or the pool file.
    pub fn checkpoint(&self) -> Result<()> {
        match &self.domain {
            Domain::Journaled(j) => j
                .journal
                .checkpoint()
                .map_err(|e| Error::io("checkpoint", j.journal.path(), e)),
            _ => Ok(()),
        }
    }

    /// Journaled engine: the journal's counters and state since open.
    pub fn journal_stats(&self) -> Option<crate::journal::JournalStats> {
        match &self.domain {
            Domain::Journaled(j) => Some(j.journal.stats()),
            _ => None,
        }
    }

    /// Journaled engine: the journal file's path.
    pub fn journal_path(&self) -> Option<&Path> {
        self.domain.journal_path()
    }

    /// The write-ahead gate of a journaled pool on external memory (see
    /// [`RegionOptions::external`]): its counters tell how many write-backs of changed data
    /// were checked and how many waited for a journal sync. `None` for other domains.
    pub fn write_ahead_gate(&self) -> Option<&std::sync::Arc<crate::journal::WriteAheadGate>> {
        match &self.domain {
            Domain::Journaled(j) => j.gate(),
            _ => None,
        }
    }

    /// What replaying a journal at open did (all zero if there was none).
    pub fn replay_report(&self) -> crate::journal::ReplayReport {
        self.replay
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // The header as of now (a pool grown while open has a new size).
        let mut h = self.current_header();
        if let Domain::Journaled(j) = &mut self.domain {
            // A clean close leaves the pool file holding everything and an empty journal; if the
            // checkpoint fails, the journal keeps the changes and the flag (and the dirty mark)
            // stay for the next open to replay them.
            if j.close().is_err() {
                return;
            }
            h.flags &= !crate::header::FLAG_JOURNAL;
        }
        if self.shutdown_armed {
            // Everything committed is durable (drained) by now: the pool is no longer in use.
            h.set_shutdown_record(crate::header::ShutdownRecord {
                dirty: false,
                ..h.shutdown_record()
            });
        }
        h.checksum = h.compute_checksum();
        if h.as_bytes() == self.header.as_bytes() {
            return;
        }
        if matches!(&self.domain, Domain::Journaled(j) if j.gate().is_none()) {
            let _ = headers::write_headers_to_file(&self._file, &self.path, &h);
        } else {
            // (Journaled external memory too: the header is written to its memory as well as
            // to the file, or the memory's write-back at close would put the old one back.)
            // Backup first: a crash between the two leaves the primary, still dirty, in charge.
            let _ = self
                .write_header_copy(h.backup_offset, &h)
                .and_then(|()| self.write_header_copy(0, &h));
        }
    }
}

#[cfg(test)]
mod platform_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flush::{detected_flush_instruction, thread_stats};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A directory on the disk the tests are built on (under `target/`), not tmpfs.
    fn disk_dir() -> tempfile::TempDir {
        let exe = std::env::current_exe().unwrap();
        tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
    }

    /// A 1 MiB region in `dir` on the msync engine; `None` on a DAX file system (`MAP_SYNC`
    /// took: no msync domain there).
    fn msync_region(dir: &tempfile::TempDir) -> Option<Region> {
        let r = RegionOptions::new()
            .engine(super::Engine::Msync)
            .eadr(false)
            .create(dir.path().join("p"), 1 << 20)
            .unwrap();
        (!r.map_sync()).then_some(r)
    }

    fn forced(dir: &tempfile::TempDir, name: &str) -> Region {
        RegionOptions::new()
            .force_pmem(true)
            .eadr(false)
            .create(dir.path().join(name), 1 << 16)
            .unwrap()
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn order_and_drain_each_count_one_drain() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = disk_dir();
        let msync = RegionOptions::new()
            .force_pmem(false)
            .create(on_disk.path().join("m"), 1 << 16)
            .unwrap();
        for r in [forced(&dir, "f"), msync] {
            let off = r.data_range().start;
            r.flush(off, 8).unwrap();
            let before = thread_stats();
            r.order().unwrap();
            assert_eq!(
                thread_stats().since(&before).drains,
                1,
                "order in {:?}",
                r.domain()
            );
            r.flush(off, 8).unwrap();
            let before = thread_stats();
            r.drain().unwrap();
            assert_eq!(
                thread_stats().since(&before).drains,
                1,
                "drain in {:?}",
                r.domain()
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn msync_persist_counts_one_fsync() {
        let dir = disk_dir();
        let Some(mut r) = msync_region(&dir) else {
            return; // a DAX file system: no msync domain here
        };
        assert_eq!(r.domain(), DomainKind::Msync);
        let off = r.data_range().start;
        r.write_at(off, &[7; 100]).unwrap();
        r.write_at(off + 3 * PAGE as u64, &[8; 100]).unwrap();
        let before = thread_stats();
        r.flush(off, 100).unwrap();
        r.persist(off + 3 * PAGE as u64, 100).unwrap();
        let d = thread_stats().since(&before);
        assert_eq!((d.fsyncs, d.drains, d.pages_synced), (1, 1, 2));
        // A round with nothing recorded issues no msync.
        let before = thread_stats();
        r.order().unwrap();
        r.drain().unwrap();
        let d = thread_stats().since(&before);
        assert_eq!((d.fsyncs, d.drains), (0, 2));
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn msync_syncs_exactly_the_pages_a_range_touches() {
        let dir = disk_dir();
        let Some(r) = msync_region(&dir) else {
            return; // a DAX file system: no msync domain here
        };
        assert_eq!(r.domain(), DomainKind::Msync);
        let page = PAGE as u64;
        let first = r.data_range().start.next_multiple_of(page);
        // (offset from `first`, length, pages synced)
        for (at, len, pages) in [
            (0, page, 1),        // one whole page: ends on a page boundary
            (page - 1, 2, 2),    // straddles a boundary
            (page + 1, 10, 1),   // inside one page
            (0, 3 * page, 3),    // whole pages
            (page / 2, page, 2), // a page's length, not aligned
        ] {
            let before = thread_stats();
            r.persist(first + at, len).unwrap();
            let d = thread_stats().since(&before);
            assert_eq!(d.pages_synced, pages, "persist({at}, {len})");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn msync_syncs_overlapping_ranges_once_and_whole() {
        let dir = disk_dir();
        let Some(r) = msync_region(&dir) else {
            return; // a DAX file system: no msync domain here
        };
        let page = PAGE as u64;
        let first = r.data_range().start.next_multiple_of(page);
        // The same page twice: synced once.
        let before = thread_stats();
        r.flush(first, 8).unwrap();
        r.flush(first + 8, 8).unwrap();
        r.drain().unwrap();
        assert_eq!(thread_stats().since(&before).pages_synced, 1);
        // Pages [0, 2) and [1, 3): one run of 3 pages, its end the later range's.
        let before = thread_stats();
        r.flush(first, 2 * page).unwrap();
        r.flush(first + page, 2 * page).unwrap();
        r.drain().unwrap();
        assert_eq!(thread_stats().since(&before).pages_synced, 3);
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn cache_flush_nontemporal_write_flushes_its_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = forced(&dir, "p");
        if detected_flush_instruction().is_none() {
            return; // no flush instruction: msync fallback
        }
        let line = crate::flush::CACHE_LINE as u64;
        let off = r.data_range().start.next_multiple_of(line) + 8;
        let before = thread_stats();
        // A partial head line, one whole line, a partial tail line.
        r.write_nontemporal_at(off, &[3; 128]).unwrap();
        let d = thread_stats().since(&before);
        assert_eq!(d.lines_flushed, 2, "head and tail lines");
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn cache_flush_persist_counts_no_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let r = forced(&dir, "p");
        let Some(insn) = detected_flush_instruction() else {
            return; // no flush instruction: msync fallback
        };
        assert_eq!(r.domain(), DomainKind::CacheFlush(insn));
        assert!(r.domain().fence_is_drain());
        let off = r.data_range().start;
        let before = thread_stats();
        r.persist(off, 200).unwrap();
        r.order().unwrap();
        let d = thread_stats().since(&before);
        assert_eq!((d.fsyncs, d.drains, d.lines_flushed), (0, 2, 4));
    }

    /// Page-aligned heap memory showing a pool file, counting flushes and drains.
    #[derive(Debug)]
    struct HeapMemory {
        base: NonNull<u8>,
        len: usize,
        flushes: AtomicU64,
        drains: AtomicU64,
    }

    impl HeapMemory {
        fn layout(len: usize) -> std::alloc::Layout {
            std::alloc::Layout::from_size_align(len, PAGE).unwrap()
        }

        fn load(path: &Path, len: usize) -> std::io::Result<HeapMemory> {
            Self::load_into(path, len, len)
        }

        /// `cap` bytes (at least `len`) holding the file's first `len` bytes, then zeros.
        fn load_into(path: &Path, len: usize, cap: usize) -> std::io::Result<HeapMemory> {
            use std::os::unix::fs::FileExt;
            assert!(cap >= len);
            // SAFETY: the layout has a non-zero size (a pool is at least 16 KiB).
            let p = unsafe { std::alloc::alloc_zeroed(Self::layout(cap)) };
            let base = NonNull::new(p).expect("allocation failed");
            // SAFETY: `base` was just allocated with `cap >= len` bytes and is used by nothing
            // else.
            let buf = unsafe { std::slice::from_raw_parts_mut(base.as_ptr(), len) };
            File::open(path)?.read_exact_at(buf, 0)?;
            Ok(HeapMemory {
                base,
                len: cap,
                flushes: AtomicU64::new(0),
                drains: AtomicU64::new(0),
            })
        }
    }

    impl Drop for HeapMemory {
        fn drop(&mut self) {
            // SAFETY: allocated in `load` with this layout; the region using it is gone (it
            // held the last `Arc`).
            unsafe { std::alloc::dealloc(self.base.as_ptr(), Self::layout(self.len)) };
        }
    }

    // SAFETY: the heap memory is plain memory; access is governed by the region using it.
    unsafe impl Send for HeapMemory {}
    // SAFETY: as above; the counters are atomic.
    unsafe impl Sync for HeapMemory {}

    // SAFETY: `base` is valid for `len` bytes until drop and shows the file as loaded. It never
    // writes anything back, which the tests below accept: they check only the delegation.
    unsafe impl ExternalMemory for HeapMemory {
        fn base(&self) -> NonNull<u8> {
            self.base
        }
        fn len(&self) -> usize {
            self.len
        }
        fn flush(&self, _offset: usize, _len: usize) {
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        fn drain(&self) -> std::io::Result<()> {
            self.drains.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn external_order_defaults_to_its_drain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        drop(Region::create(&path, 1 << 16).unwrap());
        let memory: Arc<std::sync::Mutex<Option<Arc<HeapMemory>>>> = Arc::default();
        let keep = memory.clone();
        let source = ExternalMemorySource(Arc::new(move |path: &Path, len| {
            let m = Arc::new(HeapMemory::load(path, len)?);
            *keep.lock().unwrap() = Some(m.clone());
            Ok(m as Arc<dyn ExternalMemory>)
        }));
        let r = RegionOptions::new().external(source).open(&path).unwrap();
        assert_eq!(r.domain(), DomainKind::Paged);
        assert!(!r.domain().fence_is_drain());
        let m = memory.lock().unwrap().clone().unwrap();
        let off = r.data_range().start;
        let before = thread_stats();
        r.flush(off, 8).unwrap();
        r.order().unwrap();
        r.persist(off, 8).unwrap();
        let d = thread_stats().since(&before);
        assert_eq!(d.drains, 2);
        assert_eq!(m.flushes.load(Ordering::Relaxed), 2);
        assert_eq!(m.drains.load(Ordering::Relaxed), 2, "order delegated to drain");
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn external_memory_larger_than_the_pool_is_used_and_smaller_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        drop(Region::create(&path, 1 << 16).unwrap());
        let sized = |cap: fn(usize) -> usize| {
            ExternalMemorySource(Arc::new(move |path: &Path, len| {
                let cap = cap(len);
                Ok(Arc::new(HeapMemory::load_into(path, len.min(cap), cap)?) as Arc<dyn ExternalMemory>)
            }))
        };
        let r = RegionOptions::new()
            .external(sized(|len| len + PAGE))
            .open(&path)
            .unwrap();
        assert_eq!((r.domain(), r.len()), (DomainKind::Paged, 1 << 16));
        drop(r);
        let e = RegionOptions::new()
            .external(sized(|len| len - PAGE))
            .open(&path)
            .unwrap_err();
        assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    }

    /// External memory of no bytes: only its length matters.
    #[derive(Debug)]
    struct NoMemory;

    // SAFETY: `base` is valid for reads and writes of `len() == 0` bytes (a dangling, aligned
    // pointer is); nothing is ever written.
    unsafe impl ExternalMemory for NoMemory {
        fn base(&self) -> NonNull<u8> {
            NonNull::dangling()
        }
        fn len(&self) -> usize {
            0
        }
        fn flush(&self, _offset: usize, _len: usize) {}
        fn drain(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn external_memory_is_empty_by_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        drop(Region::create(&path, 1 << 16).unwrap());
        let pool = HeapMemory::load(&path, 1 << 16).unwrap();
        assert!(!pool.is_empty(), "a pool's memory is not empty");
        assert!(NoMemory.is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn journaled_external_memory_must_accept_the_write_ahead_gate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        drop(Region::create(&path, 1 << 16).unwrap());
        let source = ExternalMemorySource(Arc::new(|path: &Path, len| {
            Ok(Arc::new(HeapMemory::load(path, len)?) as Arc<dyn ExternalMemory>)
        }));
        let e = RegionOptions::new()
            .engine(Engine::Journaled)
            .external(source)
            .open(&path)
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }

    /// Heap memory that writes flushed ranges home, each only after the write-ahead gate allows.
    #[derive(Debug)]
    struct GatedHeap {
        heap: HeapMemory,
        file: File,
        gate: std::sync::OnceLock<Arc<crate::journal::WriteAheadGate>>,
        /// Journal records known durable at each write home.
        durable_at_writes: std::sync::Mutex<Vec<u64>>,
    }

    impl GatedHeap {
        /// Writes `[offset, offset + len)` home, as an eviction would (after the gate).
        fn write_home(&self, offset: usize, len: usize) -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            if let Some(g) = self.gate.get() {
                if !g.wait_durable() {
                    return Err(std::io::Error::other("refused by the gate"));
                }
                self.durable_at_writes.lock().unwrap().push(g.durable_seq());
            }
            // SAFETY: the range lies inside the heap memory (callers pass pool ranges).
            let bytes = unsafe { std::slice::from_raw_parts(self.heap.base.as_ptr().add(offset), len) };
            self.file.write_all_at(bytes, offset as u64)
        }
    }

    // SAFETY: as `HeapMemory`; every write to the file waits at the gate once installed (after
    // the caller stopped changing the range: the tests are single-threaded).
    unsafe impl ExternalMemory for GatedHeap {
        fn base(&self) -> NonNull<u8> {
            self.heap.base
        }
        fn len(&self) -> usize {
            self.heap.len
        }
        fn flush(&self, offset: usize, len: usize) {
            self.heap.flushes.fetch_add(1, Ordering::Relaxed);
            self.write_home(offset, len).unwrap();
        }
        fn drain(&self) -> std::io::Result<()> {
            self.heap.drains.fetch_add(1, Ordering::Relaxed);
            self.file.sync_data()
        }
        fn install_write_ahead(&self, gate: &Arc<crate::journal::WriteAheadGate>) -> bool {
            self.gate.set(gate.clone()).is_ok()
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn journaled_external_memory_writes_home_only_after_the_journal_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        drop(Region::create(&path, 1 << 16).unwrap());
        let memory: Arc<std::sync::Mutex<Option<Arc<GatedHeap>>>> = Arc::default();
        let keep = memory.clone();
        let source = ExternalMemorySource(Arc::new(move |path: &Path, len| {
            let m = Arc::new(GatedHeap {
                heap: HeapMemory::load(path, len)?,
                file: std::fs::OpenOptions::new().write(true).open(path)?,
                gate: Default::default(),
                durable_at_writes: Default::default(),
            });
            *keep.lock().unwrap() = Some(m.clone());
            Ok(m as Arc<dyn ExternalMemory>)
        }));
        let mut r = RegionOptions::new()
            .engine(Engine::Journaled)
            .external(source)
            .open(&path)
            .unwrap();
        assert_eq!(r.domain(), DomainKind::Journaled);
        let m = memory.lock().unwrap().clone().unwrap();
        let gate = r.write_ahead_gate().unwrap().clone();
        let off = r.data_range().start;
        r.write_at(off, &7u64.to_le_bytes()).unwrap();
        r.flush(off, 8).unwrap();
        r.order().unwrap();
        // Appended, not durable: an eviction now must wait for a sync.
        let appended = gate.appended_seq();
        assert!(gate.durable_seq() < appended);
        let syncs = r.journal_stats().unwrap().syncs;
        let flushes = m.heap.flushes.load(Ordering::Relaxed);
        m.write_home(off as usize & !(PAGE - 1), PAGE).unwrap();
        assert_eq!(gate.waits(), 1);
        assert_eq!(
            r.journal_stats().unwrap().syncs,
            syncs + 1,
            "the write-ahead thread synced"
        );
        assert!(m.durable_at_writes.lock().unwrap()[0] >= appended);
        // A write when everything is durable does not wait.
        m.write_home(off as usize & !(PAGE - 1), PAGE).unwrap();
        assert_eq!(gate.waits(), 1);
        // A checkpoint writes the journal's dirty pages through the memory, then drains it.
        r.checkpoint().unwrap();
        assert!(m.heap.flushes.load(Ordering::Relaxed) > flushes);
        assert!(m.heap.drains.load(Ordering::Relaxed) >= 1);
        assert_eq!(r.journal_stats().unwrap().live_bytes, 0);
        drop(r);
        let mut word = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&File::open(&path).unwrap(), &mut word, off).unwrap();
        assert_eq!(u64::from_le_bytes(word), 7);
        // Closed: a write of changed data is refused unless the journal is durable (it is).
        assert!(m.write_home(off as usize & !(PAGE - 1), PAGE).is_ok());
        // The close stopped the write-ahead thread (it held the journal, and the journal the
        // gate): only this test and the memory hold the gate now.
        assert_eq!(Arc::strong_count(&gate), 2, "the write-ahead thread still runs");
    }

    #[cfg(feature = "simulate")]
    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn simulated_order_is_a_crash_point() {
        let dir = tempfile::tempdir().unwrap();
        let sim = crate::sim::Simulation::new();
        let mut r = RegionOptions::new()
            .simulate(sim.clone())
            .create(dir.path().join("p"), 1 << 16)
            .unwrap();
        assert!(r.domain().fence_is_drain());
        let off = r.data_range().start;
        r.write_at(off, &5u64.to_le_bytes()).unwrap();
        r.flush(off, 8).unwrap();
        let (drains, before) = (sim.drains(), thread_stats());
        let mut points = 0;
        sim.with_hook(&mut |_| points += 1, || r.order()).unwrap();
        assert_eq!((points, sim.drains() - drains), (1, 1));
        assert_eq!(thread_stats().since(&before).drains, 1);
        assert_eq!(sim.durable_image()[off as usize], 5);
    }

    #[cfg(feature = "simulate")]
    #[test]
    #[cfg_attr(miri, ignore = "file system access")]
    fn a_simulation_over_external_memory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        drop(Region::create(&path, 1 << 16).unwrap());
        let source = ExternalMemorySource(Arc::new(|_: &Path, _| Err(std::io::Error::other("unused"))));
        let e = RegionOptions::new()
            .simulate(crate::sim::Simulation::new())
            .external(source)
            .open(&path)
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e}");
    }
}
