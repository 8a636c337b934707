//! Transactional allocation: `Transaction::alloc` / `free`, built on `heap.rs`.
//!
//! Protocol (docs/design.md §10): metadata words (chunk descriptors, bitmap words) a
//! transaction changes are logged like any data, but their new values are stored only at commit,
//! after the log is durable. Fresh memory is recorded with a *new-range* record so the commit's
//! data hash covers it. In the usual pattern — allocate, then link the block from existing data —
//! the link's snapshot drain also makes the allocation's records durable: 2 drains in all.
//! Frees take effect at commit; a freed block is reusable only after that.

use pmem_core::{PPtr, Persistent};
use std::ptr::NonNull;

use crate::engine::heap::{class_of, slab_geom, Desc, CHUNK, CLASSES};
use crate::engine::tx_heap::{TxHeap, WordMasks};
use crate::error::{Error, Result};
use crate::tx::Transaction;

/// Below this many free chunks (beyond the reserves), a block whose class has no slab with room
/// may come from a slab of a larger class (at most twice the size) instead of a new slab
/// (80 chunks of 64 KiB: 5 MiB). The same bound decides whether an emptied slab is kept for its
/// class and when kept slabs go back. Tests pin the value at its boundary (ptm's `heap_reuse`
/// and `kept_slabs` modules): change them with it.
const SCARCE_CHUNKS: u64 = 80;

impl<'p> Transaction<'p> {
    /// Allocates a block for `value`, writes it there and returns a pointer to it. Undone by
    /// abort and by crash recovery.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`], [`Error::LockTimeout`] (a chunk's metadata held by another
    /// transaction for too long), [`Error::CorruptHeap`].
    pub fn alloc<T: Persistent>(&self, value: T) -> Result<PPtr<T>> {
        let off = self.alloc_bytes(std::mem::size_of::<T>() as u64)?;
        let bytes = pmem_core::bytes_of(&value);
        // SAFETY: `off` is a fresh block of at least `size_of::<T>()` bytes inside the heap (so
        // inside the mapping) reserved by this transaction: nobody else reads or writes it.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.shared().ptr(off), bytes.len()) };
        Ok(self.pptr(off))
    }

    /// Allocates a zero-filled `T` (for values too large for the stack).
    ///
    /// # Errors
    ///
    /// As [`alloc`](Transaction::alloc).
    pub fn alloc_zeroed<T: Persistent>(&self) -> Result<PPtr<T>> {
        let () = T::__LAYOUT_CHECK;
        let len = std::mem::size_of::<T>();
        let off = self.alloc_bytes(len as u64)?;
        // SAFETY: a fresh block of `len` bytes inside the heap, owned by this transaction.
        unsafe { std::ptr::write_bytes(self.shared().ptr(off), 0, len) };
        Ok(self.pptr(off))
    }

    /// Allocates `size` bytes (64-byte aligned; contents unspecified) and returns their pool
    /// offset.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Transaction::alloc).
    pub fn alloc_bytes(&self, size: u64) -> Result<u64> {
        let size = size.max(1);
        self.st_mut().heap.allocated = true;
        let off = match class_of(size) {
            Some(c) => {
                let off = self.alloc_small(c)?;
                // Its records wait for the next drain or the commit (`pending`); fresh memory
                // needs no undo record for stores into it.
                let mut st = self.st_mut();
                if let Some(p) = st.heap.pending.last_mut().filter(|p| p.1 == off) {
                    p.2 = size;
                }
                crate::tx::add_logical(&mut st, off, size);
                // When the log area could not hold the pending records (two per block), they
                // are written now: growing the log may fail, and that failure belongs to this
                // allocation (`OutOfSpace` here, not at a later snapshot's drain).
                let needed = (st.heap.pending.len() as u64 + 1) * 2 * crate::engine::layout::REC_ALIGN;
                if crate::tx::log_room(&st) < needed {
                    if let Err(e) = self.log_pending_allocations(&mut st) {
                        drop(st);
                        // Still pending, so forgotten: the block goes back at once.
                        let _ = self.free_bytes(off);
                        return Err(e);
                    }
                }
                return Ok(off);
            }
            None => self.alloc_run(size)?,
        };
        if let Err(e) = self.record_new(off, size) {
            // `OutOfSpace` when the log cannot grow: give the block back, or a caller that goes
            // on after the error and commits leaks it. Freeing a block of this transaction logs
            // nothing.
            let _ = self.free_bytes(off);
            return Err(e);
        }
        Ok(off)
    }

    /// Frees the block `p` points to, at commit (it stays readable, and unavailable to other
    /// allocations, until then).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`] if `p` is not the start of an allocated block of this pool (or was
    /// freed already), [`Error::WrongPool`](pmem_core::Error::WrongPool) via
    /// [`Error::Core`], [`Error::LockTimeout`].
    pub fn free<T>(&self, p: PPtr<T>) -> Result<()> {
        let tag = self.shared().region.header().pptr_tag;
        if p.tag() != tag {
            return Err(pmem_core::Error::WrongPool {
                expected: tag,
                found: p.tag(),
            }
            .into());
        }
        self.free_bytes(p.offset())
    }

    /// Frees the block starting at pool offset `off`, at commit.
    ///
    /// # Errors
    ///
    /// As [`free`](Transaction::free).
    pub fn free_bytes(&self, off: u64) -> Result<()> {
        let s = self.shared();
        let layout = s.heap.layout();
        let invalid = |what| Error::InvalidFree { offset: off, what };
        let mut chunk = layout.chunk_of(off).ok_or(invalid("not in the heap"))?;
        // The volatile index is built from the chunk table: build it before this transaction
        // changes a descriptor, or a chunk this free returns would be found free in the table
        // and given back to the index a second time at commit.
        s.ensure_heap_index()?;
        let held = self.st_mut().heap.locked.contains(&chunk);
        self.lock_chunk(chunk)?;
        // A block in a slab's second (third, fourth) chunk: the slab, its lock and its bitmap
        // are those of its first chunk, whose lock is taken and whose descriptor is read under
        // it (a slab's continuations change only with its first chunk, by that lock's holder).
        // The continuation chunk's own lock guards nothing then: it is let go at once, so two
        // transactions freeing blocks of one slab never wait for each other's locks.
        if let Desc::Cont(d) = self.effective_desc(chunk) {
            if d <= chunk {
                let start = chunk - d;
                if !held {
                    self.st_mut().heap.locked.retain(|&l| l != chunk);
                    s.heap.unlock_chunk(chunk);
                }
                self.lock_chunk(start)?;
                if matches!(self.effective_desc(start), Desc::Slab(c) if d < slab_geom(c).chunks) {
                    chunk = start;
                } else {
                    // Not a slab's continuation after all (a run's): the match below reads it
                    // as such, under its lock again.
                    self.lock_chunk(chunk)?;
                }
            }
        }
        match self.effective_desc(chunk) {
            Desc::Slab(c) => {
                let g = slab_geom(c);
                let rel = off
                    .checked_sub(layout.chunk_off(chunk) + g.first)
                    .ok_or(invalid("inside a slab's bitmap"))?;
                if rel % g.block != 0 || rel / g.block >= g.blocks {
                    return Err(invalid("not the start of a block"));
                }
                let b = rel / g.block;
                let word = layout.chunk_off(chunk) + (b / 64) * 8;
                let bit = 1u64 << (b % 64);
                // SAFETY: `word` is a bitmap word of slab `chunk` (`b < g.blocks`): 8-aligned, inside the
                // heap; this transaction holds the chunk's metadata lock (`lock_chunk` above).
                let cur = unsafe { s.read_u64(word) };
                let mut st = self.st_mut();
                let (set, clear) = st.heap.bits.get(&word).copied().unwrap_or((0, 0));
                if clear & bit != 0 {
                    return Err(invalid("freed twice"));
                }
                if set & bit != 0 {
                    if let Some(i) = st.heap.pending.iter().rposition(|p| p.1 == off) {
                        // Allocated since the last drain, records not written: forgotten, as
                        // a cancelled reservation. Free at once, never in a data hash.
                        let (_, _, size) = st.heap.pending.remove(i);
                        crate::tx::forget_newest_logical(&mut st, off, size);
                        if set & !bit == 0 && clear == 0 {
                            st.heap.bits.remove(&word);
                        } else {
                            st.heap.bits.insert(word, (set & !bit, clear));
                        }
                        self.cancel_new_slab(&mut st, chunk, c);
                        return Ok(());
                    }
                    // Allocated in this transaction: not allocated after all.
                    st.heap.bits.insert(word, (set & !bit, clear));
                    // Like a cancelled reservation when its records are the log's newest and
                    // not yet ordered by a drain: they are taken back, the block was never
                    // covered by this transaction's data hash, and it is free at once.
                    if self.take_back(&mut st, crate::engine::layout::KIND_NEW, off) {
                        if set & !bit == 0 && clear == 0 {
                            // The bitmap word changes no more: its undo record goes too.
                            st.heap.bits.remove(&word);
                            self.take_back(&mut st, crate::engine::layout::KIND_UNDO, word);
                        }
                        self.cancel_new_slab(&mut st, chunk, c);
                        return Ok(());
                    }
                    // Otherwise its bytes are in this transaction's data hash: it is
                    // quarantined after commit.
                    st.heap.lists.freed_new_blocks.push((word, bit));
                    return Ok(());
                }
                if cur & bit == 0 {
                    return Err(invalid("not allocated"));
                }
                self.log_deferred(&mut st, word, 8)?;
                st.heap.bits.insert(word, (set, clear | bit));
                st.heap.lists.freed_slabs.push((chunk, c));
                self.log_if_emptied(&mut st, chunk, c);
                Ok(())
            }
            Desc::Run(n) if chunk.checked_add(n).is_some_and(|end| end <= layout.n_chunks) => {
                if off != layout.chunk_off(chunk) {
                    return Err(invalid("not the start of a block"));
                }
                let mut st = self.st_mut();
                if let Some(i) = st.heap.lists.reserved.iter().position(|&(a, _)| a == chunk) {
                    // Allocated in this transaction: drop its descriptors, return the run at the end.
                    let (a, n) = st.heap.lists.reserved.remove(i);
                    let (lo, hi) = (layout.desc_off(a), layout.desc_off(a + n));
                    st.heap.lists.descs.retain(|&(d, _)| d < lo || d >= hi);
                    st.heap.lists.freed_new.push((a, n));
                    return Ok(());
                }
                if st.heap.lists.freed_runs.iter().any(|&(a, _)| a == chunk) {
                    return Err(invalid("freed twice"));
                }
                self.log_deferred(&mut st, layout.desc_off(chunk), n * 8)?;
                for k in 0..n {
                    st.heap.lists.descs.push((layout.desc_off(chunk + k), 0));
                }
                st.heap.lists.freed_runs.push((chunk, n));
                Ok(())
            }
            Desc::Free | Desc::Cont(_) => Err(invalid("not allocated")),
            Desc::Run(_) => Err(Error::CorruptHeap("chunk run past the end of the heap")),
            Desc::Invalid(_) => Err(Error::CorruptHeap("invalid chunk descriptor")),
        }
    }

    /// The descriptor chunk `i` has in this transaction (its own uncommitted changes included).
    fn effective_desc(&self, i: u64) -> Desc {
        let st = self.st_mut();
        if let Some(&(a, c)) = st
            .heap
            .lists
            .new_slabs
            .iter()
            .find(|&&(a, c)| (a..a + slab_geom(c).chunks).contains(&i))
        {
            return if a == i { Desc::Slab(c) } else { Desc::Cont(i - a) };
        }
        if let Some(&(_, n)) = st.heap.lists.reserved.iter().find(|&&(a, _)| a == i) {
            return Desc::Run(n);
        }
        drop(st);
        let s = self.shared();
        // SAFETY: `i` is a chunk of the heap (from `chunk_of` or the index), its descriptor a word of
        // the chunk table; every caller holds the chunk's metadata lock first.
        Desc::decode(unsafe { s.read_u64(s.heap.layout().desc_off(i)) })
    }

    /// The tag carried by every [`PPtr`] into this pool (to build pointers from offsets, e.g.
    /// those of [`alloc_bytes`](Transaction::alloc_bytes)).
    pub fn pptr_tag(&self) -> u16 {
        self.shared().region.header().pptr_tag
    }

    /// A pointer to the `T` at pool offset `off` of this pool (no check: checks happen at
    /// dereference).
    pub fn pptr<T>(&self, off: u64) -> PPtr<T> {
        PPtr::from_parts(self.pptr_tag(), off)
    }

    /// Turns `p` into a reference valid for this transaction.
    ///
    /// # Safety
    ///
    /// `p` points to a live `T` allocated in this pool (not freed, by this or any committed
    /// transaction, while the reference is used), and every other access to it during this
    /// transaction goes through `T`'s own synchronisation (its cells and locks).
    ///
    /// # Errors
    ///
    /// The checks of [`Region::resolve`](pmem_core::Region::resolve): null, other pool, out of
    /// bounds, misaligned.
    pub unsafe fn deref<T: Persistent>(&self, p: PPtr<T>) -> Result<&T> {
        let ptr = self.shared().region.resolve(p)?;
        // SAFETY: resolved inside the mapping, aligned, any bit pattern valid; liveness and
        // synchronisation per the caller's contract.
        Ok(unsafe { &*ptr.as_ptr() })
    }

    /// The address of the `len` bytes at `p`, checked once as [`deref`](Self::deref) checks a
    /// `T`: not null, this pool's, inside the pool's data area, and 8-byte aligned. For a
    /// structure that reads several fields of one block (a B-tree node, a hash segment): one
    /// check for the block instead of one per field. Using the address is the caller's unsafe
    /// business, under `deref`'s contract for every byte it reads.
    ///
    /// # Errors
    ///
    /// As [`deref`](Self::deref).
    #[inline]
    pub fn resolve_bytes(&self, p: PPtr<u8>, len: u64) -> Result<NonNull<u8>> {
        Ok(self.shared().region.resolve_block(p, len)?)
    }

    /// The address and pool offset of the `len` bytes at `p`, checked: not null, this pool's,
    /// inside the area transactions may change (the root and the heap).
    fn bytes_at(&self, p: PPtr<u8>, len: u64) -> Result<(*mut u8, u64)> {
        let ptr = self.shared().region.resolve(p)?.as_ptr();
        let len = usize::try_from(len).map_err(|_| Error::NotInPool {
            addr: ptr as usize,
            len: usize::MAX,
        })?;
        let off = self.shared().offset_of(ptr as usize, len)?;
        Ok((ptr, off))
    }

    /// Stores `src` at `dst` in one pass, logging the old bytes first unless the whole range is
    /// already covered (fresh memory of this transaction, or ranges logged earlier): one undo
    /// record and at most one drain for the whole range, where storing it through `PCell`s costs
    /// a check per word (and a record and a drain per word not yet logged). For collections that
    /// move keys, values and handles by bytes.
    ///
    /// Storing nothing (`src` empty) does nothing and succeeds, whatever `dst` is: no check, no
    /// record, no drain (as [`fill_bytes`](Self::fill_bytes) and
    /// [`copy_bytes`](Self::copy_bytes) of 0 bytes), so the empty key or value of a structure
    /// without a block can go through the same call.
    ///
    /// # Safety
    ///
    /// - `[dst, dst + src.len())` lies inside one live block of this pool (not freed by this or
    ///   any committed transaction) that the caller owns, or inside the root (nothing, when
    ///   `src` is empty);
    /// - every access to those bytes during this transaction goes through cells (or these
    ///   methods) by this thread: no reference to them is held across the call, and no other
    ///   thread reaches them (the structure is `!Sync`, or guarded by a lock this transaction
    ///   holds);
    /// - any bit pattern written there is valid for the types stored in that range.
    ///
    /// # Errors
    ///
    /// A null, foreign or out-of-bounds `dst` (the checks of
    /// [`Region::resolve`](pmem_core::Region::resolve)), a range outside the root and the heap
    /// ([`Error::NotInPool`]), and logging errors ([`Error::OutOfSpace`] when the log cannot
    /// grow).
    pub unsafe fn store_bytes(&self, dst: PPtr<u8>, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let (p, off) = self.bytes_at(dst, src.len() as u64)?;
        self.log_before_store(off, src.len() as u64)?;
        // SAFETY: `p` is valid for `src.len()` bytes (checked by `bytes_at`), logged and ordered
        // (`log_before_store` drains even inside a batch); the caller's contract excludes other
        // accesses; `copy` allows `src` to overlap (it may be read from the pool).
        unsafe { std::ptr::copy(src.as_ptr(), p, src.len()) };
        Ok(())
    }

    /// Stores `len` copies of `byte` at `dst`, logged as [`store_bytes`](Self::store_bytes) is.
    /// With `len` 0 it does nothing and succeeds, whatever `dst` is.
    ///
    /// # Safety
    ///
    /// As [`store_bytes`](Self::store_bytes), for `[dst, dst + len)`.
    ///
    /// # Errors
    ///
    /// As [`store_bytes`](Self::store_bytes).
    pub unsafe fn fill_bytes(&self, dst: PPtr<u8>, byte: u8, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (p, off) = self.bytes_at(dst, len)?;
        self.log_before_store(off, len)?;
        // SAFETY: as in `store_bytes`.
        unsafe { std::ptr::write_bytes(p, byte, len as usize) };
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` (the ranges may overlap, as in `memmove`), logging
    /// the destination as [`store_bytes`](Self::store_bytes) does. With `len` 0 it does nothing
    /// and succeeds, whatever `src` and `dst` are.
    ///
    /// # Safety
    ///
    /// As [`store_bytes`](Self::store_bytes) for `[dst, dst + len)`, and `[src, src + len)`
    /// lies in a live block of this pool that no other thread writes meanwhile.
    ///
    /// # Errors
    ///
    /// As [`store_bytes`](Self::store_bytes), for either range.
    pub unsafe fn copy_bytes(&self, src: PPtr<u8>, dst: PPtr<u8>, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (from, _) = self.bytes_at(src, len)?;
        let (to, off) = self.bytes_at(dst, len)?;
        self.log_before_store(off, len)?;
        // SAFETY: both ranges checked by `bytes_at`; the destination is logged and ordered; the
        // caller's contract excludes other writers; `copy` allows overlap.
        unsafe { std::ptr::copy(from, to, len as usize) };
        Ok(())
    }

    /// Asks the CPU to start loading the cache line `p` points into, so that a later read of it
    /// (typically one of several independent reads of a lookup) overlaps with others instead of
    /// waiting alone. A hint only: nothing is read or checked beyond the pool's bounds, and a
    /// pointer outside this pool (or a platform without a prefetch instruction) does nothing.
    #[inline]
    pub fn prefetch<T>(&self, p: PPtr<T>) {
        if let Ok(ptr) = self
            .shared()
            .region
            .resolve(PPtr::<u8>::from_parts(p.tag(), p.offset()))
        {
            pmem_core::internals::flush::prefetch(ptr.as_ptr());
        }
    }

    /// Takes chunk `i`'s metadata lock until the transaction ends.
    fn lock_chunk(&self, i: u64) -> Result<()> {
        let s = self.shared();
        self.backoff(|| match s.heap.try_lock_chunk(i, self.lane()) {
            Ok(true) => {
                self.st_mut().heap.locked.push(i);
                Some(Ok(()))
            }
            Ok(false) => Some(Ok(())),
            Err(()) => None,
        })
    }

    /// Allocates one block of class `c`.
    fn alloc_small(&self, c: usize) -> Result<u64> {
        let s = self.shared();
        s.release_quarantine();
        // 1. This lane's current slab of the class.
        let hint = self.st_mut().heap.hint[c];
        if let Some(chunk) = hint {
            if let Take::Block(off) = self.take_block(chunk, c)? {
                return Ok(off);
            }
        }
        // 2. Slabs of the class with room, from the index.
        if let Some(off) = self.take_from_slabs(c, true)? {
            return Ok(off);
        }
        let keep = self.chunks_to_keep(&self.st_mut().heap, false);
        // 2b. Few free chunks left: a block of a larger class, at most twice the size, from a
        // slab with room, rather than a whole chunk for this class.
        if s.heap_index(|idx| idx.free_total)? < keep + SCARCE_CHUNKS {
            let within_twice = CLASSES[c + 1..]
                .iter()
                .take_while(|&&block| block <= 2 * CLASSES[c])
                .count();
            for larger in c + 1..=c + within_twice {
                if let Some(off) = self.take_from_slabs(larger, false)? {
                    return Ok(off);
                }
            }
        }
        // 3. Fresh chunks (1, 2 or 4, as the class needs) become a slab of the class.
        let g = slab_geom(c);
        let Some(chunk) = self.take_chunks(g.chunks, keep)? else {
            // 4. No free chunk: a block of the smallest larger class that has one, rather
            // than a failure (the difference is internal fragmentation until it is freed; a
            // free finds the block's class from its slab's descriptor).
            for larger in c + 1..CLASSES.len() {
                if let Some(off) = self.take_from_slabs(larger, false)? {
                    return Ok(off);
                }
            }
            return Err(self.out_of_space(CLASSES[c]));
        };
        let layout = s.heap.layout();
        self.st_mut().heap.lists.reserved.push((chunk, g.chunks));
        self.lock_chunk(chunk)?;
        // The bitmap area is fresh memory: zero it, and cover it with a new-range record.
        // SAFETY: the bitmap area of heap chunk `chunk` (inside the mapping); the chunk was free
        // and is reserved by this transaction.
        unsafe { std::ptr::write_bytes(s.ptr(layout.chunk_off(chunk)), 0, g.first as usize) };
        self.record_new(layout.chunk_off(chunk), g.first)?;
        {
            let mut st = self.st_mut();
            // One undo record for the slab's descriptors (adjacent words).
            self.log_deferred(&mut st, layout.desc_off(chunk), 8 * g.chunks)?;
            st.heap
                .lists
                .descs
                .push((layout.desc_off(chunk), Desc::Slab(c).encode()));
            for k in 1..g.chunks {
                st.heap
                    .lists
                    .descs
                    .push((layout.desc_off(chunk + k), Desc::Cont(k).encode()));
            }
            st.heap.lists.new_slabs.push((chunk, c));
            st.heap.hint[c] = Some(chunk);
        }
        match self.take_block(chunk, c)? {
            Take::Block(off) => Ok(off),
            _ => Err(Error::CorruptHeap("fresh slab has no free block")),
        }
    }

    /// Takes a block from a slab of class `c` with room, from the index. A slab whose metadata
    /// another transaction holds is skipped and given back to the index (it may still have
    /// room); a full one leaves the index until a free makes room in it. With `hint`, the slab
    /// found becomes this lane's current slab of the class; without, it goes back to the index.
    fn take_from_slabs(&self, c: usize, hint: bool) -> Result<Option<u64>> {
        let s = self.shared();
        let mut back = Vec::new();
        let found = loop {
            let next = s.heap_index(|idx| idx.partial[c].pop())?;
            let Some(chunk) = next else { break None };
            match self.take_block(chunk, c)? {
                Take::Busy => back.push(chunk),
                Take::Full => {}
                Take::Block(off) => {
                    if hint {
                        self.st_mut().heap.hint[c] = Some(chunk);
                    } else {
                        back.push(chunk);
                    }
                    break Some(off);
                }
            }
        };
        if !back.is_empty() {
            s.heap_index(|idx| {
                for chunk in back {
                    if !idx.partial[c].contains(&chunk) {
                        idx.partial[c].push(chunk);
                    }
                }
            })?;
        }
        Ok(found)
    }

    /// Takes a free block of slab `chunk` (class `c`).
    fn take_block(&self, chunk: u64, c: usize) -> Result<Take> {
        let s = self.shared();
        let layout = s.heap.layout();
        let fresh = match s.heap.try_lock_chunk(chunk, self.lane()) {
            Ok(fresh) => fresh,
            Err(()) => return Ok(Take::Busy),
        };
        if self.effective_desc(chunk) != Desc::Slab(c) {
            // A stale hint or index entry: the chunk was returned to the free chunks (and may be
            // reserved by someone else now). Nothing was changed: let it go at once.
            if fresh {
                s.heap.unlock_chunk(chunk);
            }
            return Ok(Take::Full);
        }
        if fresh {
            self.st_mut().heap.locked.push(chunk);
        }
        let mut st = self.st_mut();
        let g = slab_geom(c);
        for w in 0..g.words {
            let word = layout.chunk_off(chunk) + w * 8;
            let (set, clear) = st.heap.bits.get(&word).copied().unwrap_or((0, 0));
            let valid = g.valid_mask(w);
            // SAFETY: `word` is a bitmap word of slab `chunk` (`w < g.words`), inside the heap; this
            // transaction holds the chunk's metadata lock (`try_lock_chunk` above).
            let free = !(unsafe { s.read_u64(word) } | set | clear | s.quarantined_bits(word)) & valid;
            if free != 0 {
                let b = free.trailing_zeros() as u64;
                let off = layout.chunk_off(chunk) + g.first + (w * 64 + b) * g.block;
                // The word's undo record is written with the block's new-range record, before
                // the next drain (`log_pending_allocations`).
                st.heap.bits.insert(word, (set | 1 << b, clear));
                st.heap.pending.push((word, off, g.block));
                return Ok(Take::Block(off));
            }
        }
        Ok(Take::Full)
    }

    /// Allocates a run of chunks for `size` bytes.
    fn alloc_run(&self, size: u64) -> Result<u64> {
        let s = self.shared();
        s.release_quarantine();
        let layout = s.heap.layout();
        let n = size.div_ceil(CHUNK);
        let keep = self.chunks_to_keep(&self.st_mut().heap, false);
        let start = self
            .take_chunks(n, keep)?
            .ok_or_else(|| self.out_of_space(size))?;
        let mut st = self.st_mut();
        st.heap.lists.reserved.push((start, n));
        drop(st);
        self.lock_chunk(start)?;
        let mut st = self.st_mut();
        self.log_deferred(&mut st, layout.desc_off(start), n * 8)?;
        st.heap
            .lists
            .descs
            .push((layout.desc_off(start), Desc::Run(n).encode()));
        for k in 1..n {
            st.heap
                .lists
                .descs
                .push((layout.desc_off(start + k), Desc::Cont(k).encode()));
        }
        Ok(layout.chunk_off(start))
    }
}

impl crate::engine::shared::Shared {
    /// Builds the heap's volatile index if it is not built yet (a load on the fast path).
    pub(crate) fn ensure_heap_index(&self) -> Result<()> {
        if self.heap.index_built.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        self.heap_index(|_| ())
    }
}

/// What [`Transaction::take_block`] found.
enum Take {
    /// A block, now allocated by this transaction.
    Block(u64),
    /// No free block (or the chunk is no longer a slab of the class).
    Full,
    /// Another transaction holds the chunk's metadata.
    Busy,
}

impl Transaction<'_> {
    /// Reserves `n` contiguous free chunks in the volatile index (for a new slab, a large block
    /// or a log extent). When none is free but some are quarantined, first makes the pending
    /// completion marks durable (one ordering point, only on this near-full path) so the
    /// quarantine can release them.
    pub(crate) fn take_chunks(&self, n: u64, keep: u64) -> Result<Option<u64>> {
        let s = self.shared();
        s.release_quarantine();
        if let Some(start) = s.heap_index(|idx| idx.take_run(n, keep))? {
            return Ok(Some(start));
        }
        if s.heap.quarantined.load(std::sync::atomic::Ordering::Acquire) != 0 {
            let mut flushed = Vec::new();
            s.flush_pending_completions(&mut flushed);
            s.order()?;
            s.settle_completions(&flushed);
            s.release_quarantine();
            if let Some(start) = s.heap_index(|idx| idx.take_run(n, keep))? {
                return Ok(Some(start));
            }
        }
        // `PoolOptions::auto_grow`: more heap, then once more.
        while s.auto_grow(n + keep) {
            if let Some(start) = s.heap_index(|idx| idx.take_run(n, keep))? {
                return Ok(Some(start));
            }
        }
        Ok(None)
    }

    /// How many free chunks a reservation of this transaction must leave free: the log of a
    /// removal-only transaction may use every free chunk; a transaction that called
    /// [`use_reserve`](Transaction::use_reserve) leaves the metadata reserve; any other one
    /// both reserves.
    pub(crate) fn chunks_to_keep(&self, heap: &TxHeap, for_log: bool) -> u64 {
        let r = self.shared().heap.reserve;
        if for_log && !heap.allocated {
            0
        } else if heap.use_reserve {
            r.metadata
        } else {
            r.metadata + r.app
        }
    }

    /// Lets this transaction allocate from the room kept by
    /// [`PoolOptions::reserve`](crate::PoolOptions::reserve), for the rest of it. Call it in
    /// the transactions that must succeed on a full pool (a move between collections, a cleanup
    /// job's bookkeeping). Transactions that only free never need it: their undo log has a
    /// reserve of its own.
    pub fn use_reserve(&self) {
        self.st_mut().heap.use_reserve = true;
    }

    /// Whether slab `chunk` (class `c`, metadata lock held) has no allocated block once this
    /// transaction's bitmap changes apply.
    ///
    /// Blocks quarantined by an earlier transaction T1 (allocated and freed in it) count as
    /// free: T1 released the chunk's lock before this transaction took it, so T1's completion
    /// mark was pending then and this transaction's first drain makes it durable; the chunk's
    /// own quarantine (this transaction's mark) therefore ends no earlier than T1's, and one
    /// pass of `release_quarantine` drops T1's entries no later than it frees the chunk.
    fn slab_is_empty(&self, st: &crate::engine::lane_state::LaneVolatile, chunk: u64, c: usize) -> bool {
        let s = self.shared();
        let layout = s.heap.layout();
        (0..slab_geom(c).words).all(|w| {
            let word = layout.chunk_off(chunk) + w * 8;
            let (set, clear) = st.heap.bits.get(&word).copied().unwrap_or((0, 0));
            // SAFETY: `word` is a bitmap word of slab `chunk` (`w < words`), inside the heap; the caller
            // holds the chunk's metadata lock (see above).
            (unsafe { s.read_u64(word) } | set) & !clear == 0
        })
    }

    /// After a free in slab `chunk`: if that emptied the slab (one this transaction did not
    /// create), logs its descriptor now, without a drain, so the drain that covers the free
    /// covers it too and returning the slab at commit costs no extra drain. If the log cannot
    /// grow, the slab simply stays a slab (nothing is lost but the chunk's reuse).
    fn log_if_emptied(&self, st: &mut crate::engine::lane_state::LaneVolatile, chunk: u64, c: usize) {
        if st.heap.lists.emptied_slabs.contains(&(chunk, c))
            || st.heap.lists.new_slabs.contains(&(chunk, c))
            || !self.slab_is_empty(st, chunk, c)
            || self.keep_empty_slab(st, chunk, c)
        {
            return;
        }
        let desc = self.shared().heap.layout().desc_off(chunk);
        if self.log_deferred(st, desc, 8 * slab_geom(c).chunks).is_ok() {
            st.heap.lists.emptied_slabs.push((chunk, c));
        }
    }

    /// After a cancelled allocation: if slab `chunk` (class `c`) was made by this transaction,
    /// holds no block now, and its making's records (the descriptor's undo record, newest, then
    /// the bitmap area's new-range record) are the log's newest, they are taken back too and the
    /// chunk goes straight back to the free chunks: the slab was never made. (Otherwise an
    /// alloc + free on a heap without a slab of the class would make and return a slab at every
    /// commit.)
    fn cancel_new_slab(&self, st: &mut crate::engine::lane_state::LaneVolatile, chunk: u64, c: usize) {
        if !st.heap.lists.new_slabs.contains(&(chunk, c))
            || !self.slab_is_empty(st, chunk, c)
            || self.keep_empty_slab(st, chunk, c)
        {
            return;
        }
        let s = self.shared();
        let layout = s.heap.layout();
        let desc = layout.desc_off(chunk);
        if !self.take_back(st, crate::engine::layout::KIND_UNDO, desc) {
            return;
        }
        if !self.take_back(st, crate::engine::layout::KIND_NEW, layout.chunk_off(chunk)) {
            // The slab stays made after all: its descriptor needs its undo record again (the
            // old value is still in place: descriptors are stored at commit).
            if self.log_deferred(st, desc, 8 * slab_geom(c).chunks).is_err() {
                self.doom();
            }
            return;
        }
        let h = &mut st.heap;
        let n = slab_geom(c).chunks;
        h.lists.new_slabs.retain(|&x| x != (chunk, c));
        h.lists.descs.retain(|&(d, _)| !(desc..desc + 8 * n).contains(&d));
        h.lists.reserved.retain(|&(a, _)| a != chunk);
        for w in 0..slab_geom(c).words {
            h.bits.remove(&(layout.chunk_off(chunk) + w * 8));
        }
        if h.hint[c] == Some(chunk) {
            h.hint[c] = None;
        }
        // Free again when this transaction ends, not before: until then a stale copy of the
        // taken-back descriptor record could be replayed by a recovery of this transaction,
        // and nobody else may have changed the descriptor meanwhile (the chunk stays locked).
        h.lists.cancelled_chunks.push((chunk, n));
    }

    /// At commit, before the deferred stores: every slab emptied by this transaction and still
    /// empty (an allocation later in the transaction may have taken a block again) becomes a free
    /// chunk: its descriptor, logged at the free that emptied it, is set to free with the other
    /// deferred stores (docs/design.md §10.3).
    ///
    /// A slab this transaction created and left empty (its blocks allocated and freed again)
    /// is not created after all: its pending descriptor store becomes 0 (the descriptor was
    /// logged when the slab was made), and it is quarantined like a returned slab.
    #[inline]
    pub(crate) fn return_empty_slabs(&self, st: &mut crate::engine::lane_state::LaneVolatile) {
        // Inlined check: no emptied or new slab (most transactions).
        if st.heap.lists.emptied_slabs.is_empty() && st.heap.lists.new_slabs.is_empty() {
            return;
        }
        self.return_slabs(st);
    }

    /// [`return_empty_slabs`](Self::return_empty_slabs) past its inlined check.
    fn return_slabs(&self, st: &mut crate::engine::lane_state::LaneVolatile) {
        let layout = self.shared().heap.layout();
        for i in 0..st.heap.lists.emptied_slabs.len() {
            let (chunk, c) = st.heap.lists.emptied_slabs[i];
            if self.slab_is_empty(st, chunk, c) {
                for k in 0..slab_geom(c).chunks {
                    st.heap
                        .lists
                        .descs
                        .push((layout.desc_off(chunk + k), Desc::Free.encode()));
                }
                st.heap.lists.returned_slabs.push((chunk, c));
            }
        }
        for i in 0..st.heap.lists.new_slabs.len() {
            let (chunk, c) = st.heap.lists.new_slabs[i];
            let kept = || {
                self.shared()
                    .heap_index(|idx| idx.kept[c] == Some(chunk))
                    .unwrap_or(false)
            };
            if self.slab_is_empty(st, chunk, c) && !kept() {
                let descs = layout.desc_off(chunk)..layout.desc_off(chunk + slab_geom(c).chunks);
                for d in st.heap.lists.descs.iter_mut().filter(|d| descs.contains(&d.0)) {
                    d.1 = Desc::Free.encode();
                }
                st.heap.lists.returned_slabs.push((chunk, c));
            }
        }
    }

    /// Writes the log records of the slab blocks allocated since the last drain (the bitmap
    /// word's undo record, unless logged already, and the block's new-range record), so the
    /// drain that follows orders them before the word's store at commit, and the commit's data
    /// hash covers the blocks. Called before every drain of the transaction and at commit.
    /// Records written stay written if a later one fails (the log cannot grow): the error
    /// aborts the transaction, or a retry goes on from there.
    #[inline]
    pub(crate) fn log_pending_allocations(
        &self,
        st: &mut crate::engine::lane_state::LaneVolatile,
    ) -> Result<()> {
        // Inlined check: a transaction that allocated nothing (most of them) has nothing here.
        if !st.heap.allocated && st.heap.pending.is_empty() {
            return Ok(());
        }
        self.log_allocations(st)
    }

    /// [`log_pending_allocations`](Self::log_pending_allocations) past its inlined check.
    fn log_allocations(&self, st: &mut crate::engine::lane_state::LaneVolatile) -> Result<()> {
        if st.heap.allocated && (st.undrained || !st.heap.pending.is_empty()) {
            // A drain follows: the kept slabs' descriptors ride on it (no extra drain).
            self.return_kept_slabs(st);
        }
        if st.heap.pending.is_empty() {
            return Ok(());
        }
        let mut done = 0;
        let mut result = Ok(());
        while done < st.heap.pending.len() {
            let (word, off, size) = st.heap.pending[done];
            result = self
                .log_deferred(st, word, 8)
                .and_then(|()| self.record_new_in(st, off, size));
            if result.is_err() {
                break;
            }
            done += 1;
        }
        st.heap.pending.drain(..done);
        result
    }

    /// Whether slab `chunk` (class `c`, emptied or made empty by this transaction) is kept as
    /// its class's empty slab instead of going back to the free chunks: only while free chunks
    /// are plentiful (at least [`SCARCE_CHUNKS`] beyond the reserves) and the class has no other
    /// empty slab kept. Then an allocation freed again in its own transaction (or a queue that
    /// empties and fills) finds the slab, rather than making and returning one each time.
    fn keep_empty_slab(&self, st: &crate::engine::lane_state::LaneVolatile, chunk: u64, c: usize) -> bool {
        let s = self.shared();
        let keep = self.chunks_to_keep(&st.heap, false);
        let Ok(Some(prev)) =
            s.heap_index(|idx| (idx.free_total >= keep + SCARCE_CHUNKS).then_some(idx.kept[c]))
        else {
            return false;
        };
        if prev.is_some_and(|p| p != chunk && self.still_kept(st, p, c)) {
            return false;
        }
        s.heap_index(|idx| idx.kept[c] = Some(chunk)).is_ok()
    }

    /// Whether chunk `p`, kept as class `c`'s empty slab, still is one. A chunk another
    /// transaction holds counts as kept (it is checked again later).
    fn still_kept(&self, st: &crate::engine::lane_state::LaneVolatile, p: u64, c: usize) -> bool {
        let s = self.shared();
        let layout = s.heap.layout();
        let is_empty_slab = |st: &crate::engine::lane_state::LaneVolatile| {
            (st.heap.lists.new_slabs.contains(&(p, c))
                // SAFETY: `p` is a chunk of the heap (kept in the index); the closure runs only with its
                // metadata lock held (the `Ok` arms below).
                || Desc::decode(unsafe { s.read_u64(layout.desc_off(p)) }) == Desc::Slab(c))
                && self.slab_is_empty(st, p, c)
        };
        match s.heap.try_lock_chunk(p, self.lane()) {
            Err(()) => true,
            Ok(false) => is_empty_slab(st),
            Ok(true) => {
                let kept = is_empty_slab(st);
                s.heap.unlock_chunk(p);
                kept
            }
        }
    }

    /// Before a drain of a transaction that allocated (with the pending allocations' records):
    /// once free chunks are scarce (fewer than [`SCARCE_CHUNKS`] beyond the reserves), the
    /// empty slabs kept for their classes go back to the free chunks like slabs this
    /// transaction emptied: descriptor logged now (so the drain that follows covers it, at no
    /// extra drain), stored free at commit if the slab is still empty then, quarantined after
    /// it. A kept slab that is in use again is dropped from the kept ones; one that another
    /// transaction holds stays kept, for a later transaction.
    fn return_kept_slabs(&self, st: &mut crate::engine::lane_state::LaneVolatile) {
        let s = self.shared();
        let keep = self.chunks_to_keep(&st.heap, false);
        // Plentiful as last seen: nothing to do, without taking the index lock (the next
        // index use that makes chunks scarce updates what is seen).
        if s.heap.free_chunks_seen.load(std::sync::atomic::Ordering::Relaxed) >= keep + SCARCE_CHUNKS {
            return;
        }
        let Ok((kept, sweep)) = s.heap_index(|idx| {
            if idx.free_total >= keep + SCARCE_CHUNKS {
                return (Vec::new(), Vec::new());
            }
            let kept: Vec<(u64, usize)> = idx
                .kept
                .iter_mut()
                .enumerate()
                .filter_map(|(c, k)| k.take().map(|chunk| (chunk, c)))
                .collect();
            // Once per index (so once after open): every slab is a candidate, since the kept
            // slabs of the process that wrote the pool are empty slabs nobody tracks now.
            let mut sweep = Vec::new();
            if !idx.swept {
                idx.swept = true;
                for (c, chunks) in idx.partial.iter().enumerate() {
                    sweep.extend(chunks.iter().map(|&chunk| (chunk, c)));
                }
                sweep.retain(|x| !kept.contains(x));
            }
            (kept, sweep)
        }) else {
            return;
        };
        let layout = s.heap.layout();
        let mut again = Vec::new();
        let n_kept = kept.len();
        for (i, (chunk, c)) in kept.into_iter().chain(sweep).enumerate() {
            let is_kept = i < n_kept;
            if st.heap.locked.contains(&chunk) {
                if is_kept {
                    again.push((chunk, c));
                }
                continue;
            }
            match s.heap.try_lock_chunk(chunk, self.lane()) {
                Ok(true) => {}
                _ => {
                    if is_kept {
                        again.push((chunk, c));
                    }
                    continue;
                }
            }
            let desc = layout.desc_off(chunk);
            // SAFETY: `desc` is the chunk table word of heap chunk `chunk`, whose metadata lock this
            // transaction holds (`try_lock_chunk` above).
            if Desc::decode(unsafe { s.read_u64(desc) }) == Desc::Slab(c)
                && self.slab_is_empty(st, chunk, c)
                && self.log_deferred(st, desc, 8 * slab_geom(c).chunks).is_ok()
            {
                st.heap.locked.push(chunk);
                st.heap.lists.emptied_slabs.push((chunk, c));
            } else {
                s.heap.unlock_chunk(chunk);
            }
        }
        if !again.is_empty() {
            let _ = s.heap_index(|idx| {
                for (chunk, c) in again {
                    idx.kept[c].get_or_insert(chunk);
                }
            });
        }
    }

    /// The `OutOfSpace` error for a request of `requested` bytes, with the heap's free bytes and
    /// longest free run as the volatile index sees them.
    pub(crate) fn out_of_space(&self, requested: u64) -> Error {
        let st = self.st_mut();
        let keep = self.chunks_to_keep(&st.heap, false);
        self.out_of_space_with(requested, &st.heap.bits, keep)
    }

    /// [`out_of_space`](Self::out_of_space) with this transaction's pending bitmap changes
    /// passed in (for callers that hold the lane state borrowed). `keep` free chunks are
    /// reserves this request may not use: they are not counted.
    pub(crate) fn out_of_space_with(&self, requested: u64, bits: &WordMasks, keep: u64) -> Error {
        let s = self.shared();
        let (free_chunks, largest) = s
            .heap_index(|idx| {
                let usable = idx.free_total.saturating_sub(keep);
                (usable, idx.largest_run().min(usable))
            })
            .unwrap_or((0, 0));
        let layout = s.heap.layout();
        let mut slab_free = 0;
        for chunk in 0..layout.n_chunks {
            // Only chunks whose metadata nobody else is changing are read.
            let Ok(fresh) = s.heap.try_lock_chunk(chunk, self.lane()) else {
                continue;
            };
            // SAFETY: the chunk table word of heap chunk `chunk`, whose metadata lock is held
            // (`try_lock_chunk` above).
            if let Desc::Slab(c) = Desc::decode(unsafe { s.read_u64(layout.desc_off(chunk)) }) {
                let g = slab_geom(c);
                for w in 0..g.words {
                    let word = layout.chunk_off(chunk) + w * 8;
                    let (set, clear) = bits.get(&word).copied().unwrap_or((0, 0));
                    let valid = g.valid_mask(w);
                    // SAFETY: a bitmap word of slab `chunk` (`w < g.words`), inside the heap; its metadata
                    // lock is held (above).
                    let used = unsafe { s.read_u64(word) } | set | clear | s.quarantined_bits(word);
                    slab_free += u64::from((!used & valid).count_ones()) * g.block;
                }
            }
            if fresh {
                s.heap.unlock_chunk(chunk);
            }
        }
        let free_bytes = free_chunks * CHUNK + slab_free;
        Error::OutOfSpace {
            requested,
            free_bytes,
            largest_free_run: largest * CHUNK,
            fragmented: free_bytes >= requested,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WordMasks;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// `WordMasks` behaves as a `BTreeMap`, below and beyond its vector's size.
        #[test]
        #[cfg_attr(miri, ignore = "proptest persists failures through the file system")]
        fn word_masks_match_a_map(ops in prop::collection::vec((0u8..3, 0u64..80, any::<u64>()), 0..300)) {
            let mut masks = WordMasks::default();
            let mut model = BTreeMap::new();
            for (op, word, v) in ops {
                match op {
                    0 | 1 => {
                        masks.insert(word, (v, !v));
                        model.insert(word, (v, !v));
                    }
                    _ => {
                        masks.remove(&word);
                        model.remove(&word);
                    }
                }
                prop_assert_eq!(masks.get(&word), model.get(&word));
                prop_assert_eq!(masks.is_empty(), model.is_empty());
            }
            let mut all: Vec<_> = masks.iter().map(|(&w, &m)| (w, m)).collect();
            all.sort_unstable();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
            masks.clear();
            prop_assert!(masks.is_empty());
        }
    }
}
