//! `Shared`: the state of one open pool that every handle and transaction shares (the mapping,
//! its geometry, the lanes and their volatile state, the heap), with the raw accessors to pool
//! memory and the completion marks.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pmem_core::Region;

use crate::engine::completions::CompletionMarks;
use crate::engine::lane_state::LaneVolatile;
use crate::engine::lanes::LaneMap;
use crate::engine::layout::Geometry;
use crate::error::{Error, Result};

/// The most cache lines [`Shared::prefetch`] loads ahead for one range: a longer range is
/// copied by streaming (non-temporal) loads and stores, which the hardware prefetcher follows.
pub(crate) const PREFETCH_LINES: u64 = 8;

/// What recovery did when a pool was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Whether the pool had been closed cleanly.
    pub was_clean: bool,
    /// Lanes whose last transaction had committed but was not yet marked complete.
    pub completed: usize,
    /// Lanes whose last transaction was rolled back.
    pub rolled_back: usize,
    /// Undo entries applied by the rollbacks.
    pub entries_undone: u64,
}

pub(crate) struct LaneSlot(pub(crate) UnsafeCell<LaneVolatile>);

// SAFETY: a slot is only touched by the thread that holds its lane in `LaneMap` (acquire/release
// give the happens-before edges), or by `Shared::new`/recovery before the pool is shared.
unsafe impl Sync for LaneSlot {}
// SAFETY: a slot's only non-`Send` parts are the pointers to the persistent lock words its
// transaction holds: `AtomicU64`s (which are `Sync`) inside the pool's own mapping, which lives
// as long as the `Shared` that owns the slots; nothing in a slot is tied to the thread that filled
// it (no thread-local data, no `Rc`). So moving the pool (and its slots) to another thread is
// sound; whether the *root* may be shared is still decided by `R` (`Pool<R>` is `Sync` only if
// `R` is: a root of `PCell`s, which are `!Sync`, keeps its pool on one thread at a time).
unsafe impl Send for LaneSlot {}

/// State shared by every handle and transaction of one open pool.
pub(crate) struct Shared {
    pub(crate) region: Region,
    pub(crate) geo: Geometry,
    /// The pool's routing secret (superblock offset 72, formats 4 and 5; `[0, 0]`: none). Never
    /// printed (not in `Debug`).
    pub(crate) routing_secret: [u64; 2],
    /// The key of this pool's log record hashes (`layout::log_key` of the secret; 0: none).
    pub(crate) log_key: u64,
    pub(crate) generation: u32,
    pub(crate) id: u64,
    pub(crate) lanes: LaneMap,
    pub(crate) slots: Box<[LaneSlot]>,
    /// Completion marks still to flush, and those known durable.
    pub(crate) marks: CompletionMarks,
    pub(crate) heap: crate::engine::heap::Heap,
    pub(crate) lock_timeout: Duration,
    /// `PoolOptions::auto_grow`: grow up to this size instead of failing with `OutOfSpace`.
    pub(crate) auto_grow: Option<u64>,
    pub(crate) poisoned: AtomicBool,
    pub(crate) recovery: RecoveryReport,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("path", &self.region.path())
            .field("geo", &self.geo)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Reads the u64 at pool offset `off`.
    ///
    /// # Safety
    ///
    /// - `off` is 8-aligned and `[off, off + 8)` lies inside the mapping;
    /// - no other thread stores to the word meanwhile: the caller holds the lock that guards it
    ///   (a chunk's metadata lock for descriptor and bitmap words) or the pool is not shared yet
    ///   (open, recovery, `&mut Pool`).
    pub(crate) unsafe fn read_u64(&self, off: u64) -> u64 {
        debug_assert!(off.is_multiple_of(8), "unaligned pool word {off:#x}");
        debug_assert!(
            off + 8 <= self.region.len(),
            "pool word {off:#x} past the mapping"
        );
        // SAFETY: the caller's contract: aligned, in bounds. The load is atomic (relaxed: a
        // plain load on every supported target), so a reader that the caller's lock does not
        // exclude (the heap index build, below) races no `write_u64` store.
        unsafe { AtomicU64::from_ptr(self.ptr(off).cast::<u64>()).load(Ordering::Relaxed) }
    }

    /// Writes the u64 at pool offset `off`.
    ///
    /// # Safety
    ///
    /// As [`read_u64`](Self::read_u64), and no other thread reads the word meanwhile either; in a
    /// transaction the old value is logged (or the word is fresh memory of this transaction).
    pub(crate) unsafe fn write_u64(&self, off: u64, v: u64) {
        debug_assert!(off.is_multiple_of(8), "unaligned pool word {off:#x}");
        debug_assert!(
            off + 8 <= self.region.len(),
            "pool word {off:#x} past the mapping"
        );
        // SAFETY: the caller's contract: aligned, in bounds, the word is the caller's alone among
        // writers; the store is atomic (relaxed), like `read_u64`'s load.
        unsafe { AtomicU64::from_ptr(self.ptr(off).cast::<u64>()).store(v, Ordering::Relaxed) }
    }

    /// Runs `f` on the heap's volatile index (built from the chunk table on first use).
    pub(crate) fn heap_index<T>(
        &self,
        f: impl FnOnce(&mut crate::engine::heap::HeapIndex) -> T,
    ) -> Result<T> {
        self.heap
            // SAFETY: `desc_off(i)` of a chunk `i < n_chunks` is a word of the chunk table,
            // 8-aligned and inside the heap, which lies inside the mapping. The index is built
            // once, under the index lock, and every path that changes a descriptor builds it
            // first (allocation goes through the index; a free calls `ensure_heap_index`), so
            // no committing transaction stores a descriptor during the build. Descriptor words
            // are read and written atomically (`read_u64`, `write_u64`) in any case.
            .with_index(|i| unsafe { self.read_u64(self.heap.layout().desc_off(i)) }, f)
    }

    /// Address of pool offset `off`.
    ///
    /// # Safety
    ///
    /// - `off` is at most the mapping's length (the pointer stays inside the mapping or one past
    ///   its end); what the caller then reads or writes through it must lie inside the mapping
    ///   too, and be data the caller may access (see [`read_u64`](Self::read_u64)).
    #[inline]
    pub(crate) unsafe fn ptr(&self, off: u64) -> *mut u8 {
        debug_assert!(off <= self.region.len(), "pool offset {off:#x} past the mapping");
        // SAFETY: the caller's contract: `off` is inside the mapping (or one past its end), so
        // the sum stays in the mapped allocation.
        unsafe { self.region.base().as_ptr().add(off as usize) }
    }

    /// Starts loading the first cache lines of `[off, off + len)`, at most
    /// [`PREFETCH_LINES`] (a hint: see [`prefetch`](pmem_core::internals::flush::prefetch)).
    /// Bytes past the mapping load nothing.
    ///
    /// A line a recent transaction flushed may be evicted (`clwb` may invalidate the line, and
    /// does on some processors): loading several at once overlaps their misses.
    #[inline]
    pub(crate) fn prefetch(&self, off: u64, len: u64) {
        let end = off
            .saturating_add(len)
            .min(self.region.len())
            .min(off.saturating_add(PREFETCH_LINES * 64));
        let mut at = off;
        while at < end {
            // SAFETY: `at < end <= len()`: inside the mapping; nothing is read or written
            // through the pointer (a prefetch only hints).
            pmem_core::internals::flush::prefetch(unsafe { self.ptr(at) });
            at = (at | 63) + 1;
        }
    }

    /// Flushes `[off, off + len)` (inside the mapping).
    #[inline]
    pub(crate) fn flush(&self, off: u64, len: u64) {
        // SAFETY: callers pass ranges inside the mapping.
        unsafe { self.region.flush_ptr(self.ptr(off), len as usize) };
    }

    /// An ordering point (see [`Region::order`]): what this thread flushed before reaches the
    /// persistence domain before anything it flushes after. For drain 1 and later snapshot
    /// drains, which only order the undo log before the in-place stores.
    pub(crate) fn order(&self) -> Result<()> {
        self.trusted(self.region.order())
    }

    /// A durability point (see [`Region::drain`]): everything flushed so far is durable. For
    /// commits (drain 2), completing relaxed commits, `Pool::sync`, roll-back and recovery.
    pub(crate) fn drain(&self) -> Result<()> {
        self.trusted(self.region.drain())
    }

    /// The result of an ordering or durability point, as far as it can be trusted. A failed one
    /// poisons the pool: after a failed `fdatasync` or `msync` the kernel may have dropped the
    /// dirty pages and reports the loss once, so a later sync can succeed without them
    /// (PostgreSQL's "fsyncgate"), and nothing flushed before it is known durable. A point that
    /// completes while the pool is poisoned (failed by another thread meanwhile) is not trusted
    /// either: [`Error::Poisoned`], as is any failure after the first (which reports its I/O
    /// error). Reopening the pool recovers from what reached the media.
    fn trusted(&self, r: pmem_core::Result<()>) -> Result<()> {
        if let Err(e) = r {
            if self.poisoned.swap(true, Ordering::SeqCst) {
                return Err(Error::Poisoned);
            }
            return Err(e.into());
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// The `completed` word of lane `i`.
    pub(crate) fn completed_word(&self, lane: usize) -> &AtomicU64 {
        // SAFETY: the lane header is 8-byte aligned (lanes are 4 KiB-aligned) and inside the
        // mapping, which outlives `self`; it is only accessed atomically.
        unsafe { &*self.ptr(self.geo.lane(lane)).cast::<AtomicU64>() }
    }

    /// Records that lane `lane` completed `seq`: its `completed` word must reach the media
    /// before any later transaction overwrites that transaction's data (see docs/design.md).
    pub(crate) fn mark_complete(&self, lane: usize, seq: u64) {
        self.completed_word(lane).store(seq, Ordering::Release);
        self.marks.mark(lane, seq);
    }

    /// [`settle_completions`](Self::settle_completions)`(flushed)` then
    /// [`mark_complete`](Self::mark_complete)`(lane, seq)`, by the holder of `lane` (see
    /// `CompletionMarks::settle_then_mark`).
    pub(crate) fn settle_then_mark_complete(&self, flushed: &[(usize, u64)], lane: usize, seq: u64) {
        self.completed_word(lane).store(seq, Ordering::Release);
        self.marks.settle_then_mark(flushed, lane, seq);
    }

    /// Flushes the `completed` line of every lane with a pending completion; returns what was
    /// flushed, for [`Shared::settle_completions`] after the caller's drain.
    pub(crate) fn flush_pending_completions(&self, out: &mut Vec<(usize, u64)>) {
        self.flush_pending_completions_but(out, usize::MAX);
    }

    /// [`flush_pending_completions`](Self::flush_pending_completions), except that lane
    /// `flushed`'s line is not flushed again: its caller holds that lane and flushed the line
    /// after the lane's last mark was stored (format 5: the first log record shares it). The
    /// lane's mark is still returned, so the caller's drain settles it.
    pub(crate) fn flush_pending_completions_but(&self, out: &mut Vec<(usize, u64)>, flushed: usize) {
        self.marks.flush_pending(out, |lane| {
            if lane != flushed {
                self.flush(self.geo.lane(lane), 8);
            }
        });
    }

    /// After a drain: clears the pending marks that were made durable.
    pub(crate) fn settle_completions(&self, flushed: &[(usize, u64)]) {
        self.marks.settle(flushed);
    }

    /// Makes every pending completion durable (clean close, `Pool::sync`).
    pub(crate) fn sync(&self) -> Result<()> {
        let mut flushed = Vec::new();
        self.flush_pending_completions(&mut flushed);
        // `Region::sync`: durable even in the journaled engine's buffered mode.
        self.trusted(self.region.sync())?;
        self.settle_completions(&flushed);
        Ok(())
    }

    /// Whether `[off, off + len)` lies in the area transactions may log and modify: the root and
    /// the heap.
    #[inline]
    pub(crate) fn loggable(&self, off: u64, len: u64) -> bool {
        self.geometry().loggable(off, len)
    }

    /// The geometry with the heap as large as the pool is now (it grows with `Pool::grow`).
    #[inline]
    pub(crate) fn geometry(&self) -> Geometry {
        let mut g = self.geo;
        g.heap_size = (self.region.data_range().end & !4095) - g.heap_offset;
        g
    }

    /// The pool offset of `addr` if `[addr, addr + len)` is loggable.
    #[inline]
    pub(crate) fn offset_of(&self, addr: usize, len: usize) -> Result<u64> {
        let base = self.region.base().as_ptr() as usize;
        let off = addr.wrapping_sub(base) as u64;
        if addr >= base && self.loggable(off, len as u64) {
            Ok(off)
        } else {
            Err(Error::NotInPool { addr, len })
        }
    }

    /// Returns to the allocator the quarantined blocks and runs whose transaction's completion
    /// mark is now durable (see `heap::Quarantined`).
    pub(crate) fn release_quarantine(&self) {
        if self.heap.quarantined.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut q = self.heap.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        let mut runs = Vec::new();
        q.retain(|e| {
            let durable = self.marks.is_durable(e.lane, e.seq);
            if durable {
                if let crate::engine::heap::QuarantineKind::Run { start, n } = e.kind {
                    runs.push((start, n));
                }
            }
            !durable
        });
        self.heap.quarantined.store(q.len(), Ordering::Release);
        drop(q);
        if !runs.is_empty() {
            let _ = self.heap_index(|idx| runs.iter().for_each(|&(a, n)| idx.give_run(a, n)));
        }
    }

    /// Bits of bitmap word `word` that are quarantined (free in the bitmap, not yet reusable).
    pub(crate) fn quarantined_bits(&self, word: u64) -> u64 {
        if self.heap.quarantined.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let q = self.heap.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        q.iter()
            .filter_map(|e| match e.kind {
                crate::engine::heap::QuarantineKind::Block { word: w, mask } if w == word => Some(mask),
                _ => None,
            })
            .fold(0, |a, m| a | m)
    }
}
