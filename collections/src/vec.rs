//! [`PVec`]: a growable array in the pool.

use std::fmt;
use std::mem::size_of;

use ptm::pmem_core::{bytes_of, read_from_bytes};
use ptm::{Error, Nested, PCell, PPtr, Persistent, Result, Transaction};

use crate::owned::{doom_on_err, or_free_fresh, Frees};
use crate::raw::{self, Span};
use crate::{PHandle, PValue};

/// A persistent growable array of `T` (a pool's `Vec<T>`): a 24-byte handle (buffer pointer,
/// length, capacity) stored in the root or in another persistent struct, and a buffer in the
/// pool's heap that the handle owns.
///
/// Elements are `Copy` values (read and written by copy: [`get`](PVec::get),
/// [`push`](PVec::push), ...) or nested collection handles ([`PHandle`]s such as
/// [`PString`](crate::PString) or `PVec<u64>`, created in place by [`push_new`](PVec::push_new)
/// and reached by reference through [`get_ref`](PVec::get_ref)); removing an element
/// ([`pop_free`](PVec::pop_free), [`truncate`](PVec::truncate), [`clear`](PVec::clear)) frees
/// what it owns.
///
/// Every change happens inside a transaction and is failure-atomic. Cost in drains: `push`,
/// `push_new`, `pop`, `pop_free`, `set`, `extend`, `clear` and `free` cost **2** per
/// transaction, growth included (allocate first, then one batched snapshot of every range
/// changed that records the frees last, then the stores); reads cost 0. Growth doubles the capacity; the new buffer is
/// never copied into the undo log (see the crate docs). The buffer is contiguous like std's
/// `Vec`, so a growth copies every element in one transaction: [`reserve`](PVec::reserve) a
/// known size ahead of time to avoid that pause at a busy moment.
///
/// Like [`PCell`], a `PVec` is `!Sync`: share it between threads by putting it under a
/// [`PMutex`](ptm::PMutex).
#[repr(C)]
pub struct PVec<T> {
    buf: PCell<PPtr<T>>,
    len: PCell<u64>,
    cap: PCell<u64>,
}

const _: () = assert!(size_of::<PVec<u64>>() == 24);

/// Byte offsets of a handle's buffer pointer, length and capacity words (for the schema-driven
/// walk, `walk.rs`; `PString` is a `PVec<u8>`).
pub(crate) const FIELDS: [usize; 3] = [
    std::mem::offset_of!(PVec<u8>, buf),
    std::mem::offset_of!(PVec<u8>, len),
    std::mem::offset_of!(PVec<u8>, cap),
];

// SAFETY: `repr(C)` of three 8-byte `PCell`s (`PCell<PPtr<T>>` is `repr(transparent)` over a
// `u64`), so there is no padding whatever `T` is; every field accepts every bit pattern (a wild
// buffer pointer is checked by `Transaction::deref`, a wild length is clamped to the capacity);
// no virtual address is stored.
unsafe impl<T: Persistent> Persistent for PVec<T> {}

impl<T: Persistent> PVec<T> {
    const ELEM_OK: () = assert!(size_of::<T>() > 0, "PVec<T> needs a non-zero-sized T");

    fn block(&self, tx: &Transaction<'_>) -> PPtr<u8> {
        self.buf.get(tx).cast()
    }

    /// Number of elements.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.len.get(tx).min(self.cap.get(tx))
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
    }

    /// Number of elements the buffer holds without growing.
    pub fn capacity(&self, tx: &Transaction<'_>) -> u64 {
        self.cap.get(tx)
    }

    /// The pool offset of the buffer, if any (for reachability checks).
    pub fn buffer_offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let b = self.buf.get(tx);
        (!b.is_null()).then(|| b.offset())
    }

    /// A reference to element `i < len` of the buffer `buf`.
    ///
    /// # Safety
    ///
    /// `buf` is this vector's buffer (live, or freed by this transaction), `i` is below its
    /// capacity, and `T` is a [`PHandle`] (all cells) or the element is being discarded.
    unsafe fn elem<'t>(tx: &'t Transaction<'_>, buf: PPtr<u8>, i: u64) -> Result<&'t T> {
        // SAFETY: forwarded contract; the vector is `!Sync` (or guarded by the caller's lock).
        unsafe { raw::at::<T>(tx, buf, raw::elem_off::<T>(i)?) }
    }
}

impl<T: PValue> PVec<T> {
    /// Makes room for `n` elements after the first `keep` (clamped to `len`) and logs what the
    /// caller will write, in one batch: when the buffer is too small, allocates one of twice the
    /// capacity (at least 4 and at least what is needed), logs the header in one batch (the
    /// fresh buffer is new memory: never logged) which frees the old buffer (at commit) as its
    /// last step, then moves the kept elements over by bytes. One snapshot drain.
    ///
    /// Failure-atomic: a batch that fails (e.g. `OutOfSpace` growing the log) frees nothing,
    /// and the fresh buffer is freed again; an error after the old buffer's free was recorded
    /// (only in a corrupted pool) dooms the transaction.
    ///
    /// When `T` owns blocks, the moved elements' old copies are zeroed (and so logged in the
    /// same batch): a stale `&T` into the old buffer then sees an empty handle, never a second
    /// owner of the moved handle's blocks.
    ///
    /// Elements in `keep..len` are dropped without [`PValue::free_owned`]: callers pass
    /// `keep == len` when `T` owns blocks. Returns the buffer, `keep` and the new length; the
    /// caller writes elements `keep..keep + n` (already logged or fresh), then stores the length.
    fn reserve_tail(&self, tx: &Transaction<'_>, keep: u64, n: u64) -> Result<(PPtr<u8>, u64, u64)> {
        let () = Self::ELEM_OK;
        let (len, cap) = (self.len(tx), self.cap.get(tx));
        let keep = keep.min(len);
        debug_assert!(
            !T::OWNS || keep == len,
            "owning elements dropped without free_owned"
        );
        let need = keep.checked_add(n).ok_or_else(|| raw::out_of_bounds(keep, n))?;
        let old = self.block(tx);
        if need <= cap {
            tx.snapshot(|b| {
                b.add(&self.len)?;
                if n > 0 {
                    // SAFETY: `old` is this vector's live buffer of `cap >= keep + n` elements,
                    // reached only through cells by this thread.
                    b.add(&unsafe {
                        Span::new(tx, old, raw::elem_off::<T>(keep)?, raw::array_bytes::<T>(n)?)?
                    })?;
                }
                Ok(())
            })?;
            return Ok((old, keep, need));
        }
        let new_cap = need.max(cap.saturating_mul(2)).max(4);
        let size = raw::array_bytes::<T>(new_cap)?;
        let moved = raw::array_bytes::<T>(keep)?;
        // Allocate first; the batch's drain then makes its log records durable.
        let new = raw::alloc_block(tx, size)?;
        let logged = (|| {
            if T::OWNS {
                // Spare slots of a fresh buffer hold old bytes; zero them so that they never
                // read as a handle (fresh memory: no logging).
                // SAFETY: the fresh buffer of `new_cap` elements, reached only by this thread.
                unsafe { raw::zero_bytes(tx, new, 0, size)? };
            }
            tx.snapshot(|b| {
                b.add(&self.buf)?;
                b.add(&self.len)?;
                if T::OWNS && moved > 0 {
                    // SAFETY: `old` is this vector's buffer (freed at commit) of `cap > keep`
                    // elements, reached only through cells by this thread.
                    b.add(&unsafe { Span::new(tx, old, 0, moved)? })?;
                }
                // The fresh block needs no snapshot: ptm logged it as new memory at allocation.
                b.add(&self.cap)?;
                // Last, once everything is logged: the free's allocator record drains with the
                // batch (no extra drain), and a batch that failed above freed nothing.
                if !old.is_null() {
                    tx.free(old)?;
                }
                Ok(())
            })
        })();
        or_free_fresh(tx, &[new], logged)?;
        let moved_over = (|| {
            // SAFETY: `old` is this vector's buffer (its free takes effect at commit, so it is
            // still readable) holding `keep <= len <= cap` elements; `new` is the fresh buffer
            // of `new_cap > keep` elements; both reached only through cells by this thread.
            unsafe { raw::move_bytes(tx, (old, 0), (new, 0), moved, T::OWNS)? };
            self.buf.set(tx, new.cast())?;
            self.cap.set(tx, new_cap)
        })();
        // The old buffer's free is recorded: a failure now must not commit.
        doom_on_err(tx, moved_over)?;
        Ok((new, keep, need))
    }

    /// Makes room for at least `additional` more elements, so that the next `additional`
    /// elements pushed (or extended) never grow the buffer: one growth, to the larger of twice
    /// the capacity and what is needed (like `Vec::reserve`). 2 drains when it grows; nothing
    /// (0 drains) when they already fit.
    ///
    /// A `PVec` stays one contiguous buffer like std's `Vec`, so a push that finds it full
    /// copies every element into a buffer of twice the capacity, and that one transaction
    /// flushes the whole new buffer (a pause proportional to the length: ~14 ms at a million
    /// `u64`s). When the final size is known, `reserve` it up front (in a transaction of its
    /// own, at a quiet moment) and no later push pauses; for a FIFO of unbounded length use
    /// [`PQueue`](crate::PQueue), whose growth is one fixed-size chunk at a time.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), a length overflow, and logging errors.
    pub fn reserve(&self, tx: &Transaction<'_>, additional: u64) -> Result<()> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        let need = len
            .checked_add(additional)
            .ok_or_else(|| raw::out_of_bounds(len, additional))?;
        if need > self.cap.get(tx) {
            // Grows (moving the elements) and logs the header. The length is stored as read
            // (clamped to the old capacity; its cell is in the batch, so no drain): a damaged
            // length word above the capacity must not reach into the new buffer's spare slots.
            self.reserve_tail(tx, len, additional)?;
            self.len.set(tx, len)?;
        }
        Ok(())
    }

    /// Frees what elements `from..to` own (nothing unless `T` owns blocks), without writing them.
    ///
    /// # Safety
    ///
    /// `from <= to <= len`, and the caller discards those elements in this transaction.
    unsafe fn release_range(
        &self,
        f: &mut Frees<'_, '_>,
        tx: &Transaction<'_>,
        from: u64,
        to: u64,
    ) -> Result<()> {
        if T::OWNS {
            let buf = self.block(tx);
            for i in from..to {
                // SAFETY: `i < len <= cap` of this vector's live buffer; the element is being
                // discarded (this function's contract), so nothing else uses it.
                unsafe { f.value(Self::elem(tx, buf, i)?)? };
            }
        }
        Ok(())
    }

    /// Frees the buffer and everything the elements own, without writing the handle. An error
    /// after a free was recorded dooms the transaction.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`]: the vector is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        Frees::walk(tx, |f| {
            // SAFETY: the whole vector is being discarded.
            unsafe { self.release_range(f, tx, 0, self.len(tx))? };
            let buf = self.buf.get(tx);
            if !buf.is_null() {
                f.block(buf)?;
            }
            Ok(())
        })
    }

    /// Removes elements `from..len` (`from < len`), freeing (at commit) what they own. When `T`
    /// owns blocks the removed handles are zeroed, logged in the same batch as the length, so
    /// that no damaged length can bring back a second owner of blocks reused later: one
    /// snapshot drain. The frees are the batch's last step (a failed batch frees nothing); an
    /// error after one was recorded dooms the transaction.
    fn discard_tail(&self, tx: &Transaction<'_>, from: u64) -> Result<()> {
        let len = self.len(tx);
        let buf = self.block(tx);
        let (off, bytes) = (raw::elem_off::<T>(from)?, raw::array_bytes::<T>(len - from)?);
        tx.snapshot(|b| {
            if T::OWNS {
                // SAFETY: elements `from..len` of this vector's live buffer, reached only
                // through cells by this thread.
                b.add(&unsafe { Span::new(tx, buf, off, bytes)? })?;
            }
            b.add(&self.len)?;
            // SAFETY: elements `from..len` are removed below, in this transaction.
            Frees::walk(tx, |f| unsafe { self.release_range(f, tx, from, len) })
        })?;
        let stored = (|| {
            if T::OWNS {
                // SAFETY: as above; logged in the batch.
                unsafe { raw::zero_bytes(tx, buf, off, bytes)? };
            }
            self.len.set(tx, from)
        })();
        if T::OWNS {
            doom_on_err(tx, stored)
        } else {
            stored
        }
    }

    /// Removes the last element, freeing (at commit) everything it owns; `false` when empty.
    /// 2 drains (0 when empty), whatever the element owns.
    ///
    /// # Errors
    ///
    /// As [`clear`](PVec::clear).
    pub fn pop_free(&self, tx: &Transaction<'_>) -> Result<bool> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        if len == 0 {
            return Ok(false);
        }
        self.discard_tail(tx, len - 1)?;
        Ok(true)
    }

    /// Shortens the vector to `new_len` elements (keeping the buffer), freeing what the removed
    /// elements own; nothing happens if it is not longer. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`clear`](PVec::clear).
    pub fn truncate(&self, tx: &Transaction<'_>, new_len: u64) -> Result<()> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        if new_len < len {
            self.discard_tail(tx, new_len)?;
        }
        Ok(())
    }

    /// Removes every element and frees the buffer and everything the elements own (at commit).
    /// 2 drains, however deeply the elements nest.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted buffer pointer, and
    /// logging errors. An error after part of a damaged structure was freed
    /// dooms the transaction (see the crate docs).
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        tx.snapshot(|b| {
            b.add(&self.buf)?;
            b.add(&self.len)?;
            b.add(&self.cap)?;
            // Last, once the handle is logged: a failed batch frees nothing.
            // SAFETY: the handle is emptied below, in this transaction.
            unsafe { self.release(tx) }
        })?;
        // Logged in the batch: these stores cannot fail.
        self.buf.set(tx, PPtr::null())?;
        self.len.set(tx, 0)?;
        self.cap.set(tx, 0)
    }

    /// Frees everything the vector owns (the same as [`clear`](PVec::clear)): call it before
    /// dropping the struct that holds the handle, or the buffer leaks.
    ///
    /// # Errors
    ///
    /// As [`clear`](PVec::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.clear(tx)
    }
}

/// Nested collections: a `PVec` of handles ([`PString`](crate::PString), `PVec`,
/// [`PHashMap`](crate::PHashMap), your own [`PHandle`] structs).
///
/// References handed out are [`Nested`](ptm::Nested) guards that live at most as long as the
/// transaction borrow. A growth of this vector (by `push_new`) moves the handles to a new
/// buffer, and `pop_free`, `truncate` or `clear` discard them: a reference taken before any
/// change of the vector is **stale**, like a std reference across a `push`, and every write
/// through it fails with [`Error::StaleReference`](ptm::Error::StaleReference) (see the crate
/// docs, "Nested references"). Take the reference again after the change.
impl<T: PHandle> PVec<T> {
    /// Appends an empty handle (all-zero bytes) and returns a reference to it, through which the
    /// new nested collection is filled. 2 drains, growth included (growth moves the existing
    /// handles by bytes, and zeroes and logs their old copies: `len × size_of::<T>()` bytes of
    /// undo log).
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push).
    pub fn push_new<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Nested<'t, T>> {
        raw::mutating(tx, self)?;
        let (buf, at, need) = self.reserve_tail(tx, self.len(tx), 1)?;
        let off = raw::elem_off::<T>(at)?;
        // SAFETY: element `at < need <= cap` of this vector's live buffer, logged in the batch
        // (or fresh); a `PHandle` is all cells, so zero bytes are the empty handle.
        unsafe { raw::zero_bytes(tx, buf, off, size_of::<T>() as u64)? };
        self.len.set(tx, need)?;
        // SAFETY: as above; `T` is all cells, so a shared reference may coexist with writes
        // through cells.
        unsafe { Self::elem(tx, buf, at) }.map(|v| tx.nested(self, v))
    }

    /// A reference to element `i`, or `None` if `i >= len`. 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a buffer pointer outside the pool).
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, i: u64) -> Result<Option<Nested<'t, T>>> {
        tx.check_live(self)?;
        if i >= self.len(tx) {
            return Ok(None);
        }
        // SAFETY: `i < len <= cap` of this vector's live buffer; `T` is all cells.
        unsafe { Self::elem(tx, self.block(tx), i) }.map(|v| Some(tx.nested(self, v)))
    }

    /// A reference to the last element, if any.
    ///
    /// # Errors
    ///
    /// As [`get_ref`](PVec::get_ref).
    pub fn last_ref<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Option<Nested<'t, T>>> {
        tx.check_live(self)?;
        match self.len(tx) {
            0 => Ok(None),
            n => self.get_ref(tx, n - 1),
        }
    }
}

impl<T: Persistent + Copy> PVec<T> {
    /// A copy of element `i`, or `None` if `i >= len`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a buffer pointer outside the pool).
    pub fn get(&self, tx: &Transaction<'_>, i: u64) -> Result<Option<T>> {
        tx.check_live(self)?;
        if i >= self.len(tx) {
            return Ok(None);
        }
        // SAFETY: the buffer is owned by this vector and live (freed only together with a new
        // pointer stored in `buf`); `i < len <= cap`; `PVec` is `!Sync` (or guarded by the
        // caller's lock), so its elements are reached only by this thread, through cells.
        unsafe { raw::read(tx, self.block(tx), i) }.map(Some)
    }

    /// The last element, if any.
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get).
    pub fn last(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        tx.check_live(self)?;
        match self.len(tx) {
            0 => Ok(None),
            n => self.get(tx, n - 1),
        }
    }

    /// Replaces everything after the first `keep` elements with `items`, in one batch (see
    /// `reserve_tail`). One snapshot drain.
    pub(crate) fn write_tail(&self, tx: &Transaction<'_>, keep: u64, items: Vec<T>) -> Result<()> {
        let (buf, keep, need) = self.reserve_tail(tx, keep, items.len() as u64)?;
        if !items.is_empty() {
            // One pass over the bytes (a word per store where aligned), not a store per element.
            // SAFETY: `buf` is this vector's live buffer of at least `keep + n` elements; the
            // range was logged in the batch (or is fresh), and `mutating` checked this vector.
            unsafe { raw::write_bytes(tx, buf, raw::elem_off::<T>(keep)?, raw::slice_bytes(&items))? };
        }
        self.len.set(tx, need)
    }

    /// Appends `v`. 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace) and the other errors of allocation and
    /// logging; the transaction then rolls back if the closure returns the error.
    pub fn push(&self, tx: &Transaction<'_>, v: T) -> Result<()> {
        raw::mutating(tx, self)?;
        self.write_tail(tx, self.len(tx), vec![v])
    }

    /// Appends every element of `items`: one batch, 2 drains in all, growth included.
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push).
    pub fn extend(&self, tx: &Transaction<'_>, items: impl IntoIterator<Item = T>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.write_tail(tx, self.len(tx), items.into_iter().collect())
    }

    /// Replaces the contents with `items`, keeping the buffer when it is large enough:
    /// one batch, 2 drains in all.
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push).
    pub fn assign(&self, tx: &Transaction<'_>, items: impl IntoIterator<Item = T>) -> Result<()> {
        raw::mutating(tx, self)?;
        self.write_tail(tx, 0, items.into_iter().collect())
    }

    /// Removes and returns the last element. 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get), and logging errors.
    pub fn pop(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        if len == 0 {
            return Ok(None);
        }
        let v = self.get(tx, len - 1)?;
        self.len.set(tx, len - 1)?;
        Ok(v)
    }

    /// Replaces element `i` and returns the old value, or returns `None` and changes nothing if
    /// `i >= len`. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get), and logging errors.
    pub fn set(&self, tx: &Transaction<'_>, i: u64, v: T) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let Some(old) = self.get(tx, i)? else {
            return Ok(None);
        };
        // SAFETY: as in `get`: `i < len <= cap` of this vector's live buffer.
        unsafe { raw::write(tx, self.block(tx), i, v)? };
        Ok(Some(old))
    }

    /// Writes `slots` (each `(index < len, value)`) and stores the length `new_len <= len`, in
    /// one batch: one snapshot drain.
    fn write_slots(&self, tx: &Transaction<'_>, slots: &[(u64, T)], new_len: u64) -> Result<()> {
        let buf = self.block(tx);
        tx.snapshot(|b| {
            b.add(&self.len)?;
            for &(i, _) in slots {
                // SAFETY: `i < len <= cap` of this vector's live buffer (the caller's contract),
                // reached only through cells by this thread.
                b.add(&unsafe { Span::new(tx, buf, raw::elem_off::<T>(i)?, size_of::<T>() as u64)? })?;
            }
            Ok(())
        })?;
        for &(i, v) in slots {
            // SAFETY: as above; logged in the batch.
            unsafe { raw::write(tx, buf, i, v)? };
        }
        self.len.set(tx, new_len)
    }

    /// Copies of elements `from..to` (clamped to `len`).
    pub(crate) fn copy_range(&self, tx: &Transaction<'_>, from: u64, to: u64) -> Result<Vec<T>> {
        (from..to.min(self.len(tx)))
            .map(|i| self.get(tx, i).map(|v| v.expect("i < len")))
            .collect()
    }

    /// Inserts `v` at position `i`, shifting the elements after it up by one (`Vec::insert`);
    /// returns `false` and changes nothing if `i > len` (where std panics). 2 drains, growth
    /// included; the shifted elements are logged (`(len - i) × size_of::<T>()` bytes).
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push).
    pub fn insert(&self, tx: &Transaction<'_>, i: u64, v: T) -> Result<bool> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        if i > len {
            return Ok(false);
        }
        let mut tail = vec![v];
        tail.extend(self.copy_range(tx, i, len)?);
        self.write_tail(tx, i, tail)?;
        Ok(true)
    }

    /// Removes and returns element `i`, shifting the elements after it down by one
    /// (`Vec::remove`); `None` if `i >= len` (where std panics). 2 drains; the shifted elements
    /// are logged.
    ///
    /// # Errors
    ///
    /// As [`pop`](PVec::pop).
    pub fn remove(&self, tx: &Transaction<'_>, i: u64) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        if i >= len {
            return Ok(None);
        }
        let mut tail = self.copy_range(tx, i, len)?;
        let v = tail.remove(0);
        self.write_tail(tx, i, tail)?;
        Ok(Some(v))
    }

    /// Removes and returns element `i`, moving the last element into its place
    /// (`Vec::swap_remove`, O(1)); `None` if `i >= len`. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`pop`](PVec::pop).
    pub fn swap_remove(&self, tx: &Transaction<'_>, i: u64) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        let (Some(v), Some(last)) = (self.get(tx, i)?, self.last(tx)?) else {
            return Ok(None);
        };
        let slots = if i + 1 < len { vec![(i, last)] } else { Vec::new() };
        self.write_slots(tx, &slots, len - 1)?;
        Ok(Some(v))
    }

    /// Swaps elements `a` and `b` (`slice::swap`); returns `false` and changes nothing if either
    /// is out of bounds. 2 drains (0 when `a == b`).
    ///
    /// # Errors
    ///
    /// As [`set`](PVec::set).
    pub fn swap(&self, tx: &Transaction<'_>, a: u64, b: u64) -> Result<bool> {
        raw::mutating(tx, self)?;
        let (Some(va), Some(vb)) = (self.get(tx, a)?, self.get(tx, b)?) else {
            return Ok(false);
        };
        if a != b {
            self.write_slots(tx, &[(a, vb), (b, va)], self.len(tx))?;
        }
        Ok(true)
    }

    /// Keeps only the elements for which `keep` returns `true`, in order (`Vec::retain`; `keep`
    /// is called once per element, in order). 2 drains (0 when it keeps everything); the
    /// elements from the first one removed onwards are logged.
    ///
    /// # Errors
    ///
    /// As [`pop`](PVec::pop).
    pub fn retain(&self, tx: &Transaction<'_>, mut keep: impl FnMut(&T) -> bool) -> Result<()> {
        raw::mutating(tx, self)?;
        let all = self.to_vec(tx)?;
        let flags: Vec<bool> = all.iter().map(&mut keep).collect();
        let Some(first) = flags.iter().position(|k| !k) else {
            return Ok(());
        };
        let kept = all
            .into_iter()
            .zip(flags)
            .skip(first)
            .filter_map(|(v, k)| k.then_some(v));
        self.write_tail(tx, first as u64, kept.collect())
    }

    /// Removes the elements in `range` and returns them (`Vec::drain`, eagerly: the removal is
    /// done when this returns). Bounds past the end are clamped and a reversed range removes
    /// nothing (where std panics). 2 drains (0 when nothing is removed); the elements after
    /// the range are logged.
    ///
    /// # Errors
    ///
    /// As [`pop`](PVec::pop).
    pub fn drain(&self, tx: &Transaction<'_>, range: impl std::ops::RangeBounds<u64>) -> Result<Vec<T>> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        let (from, to) = raw::clamp_range(&range, len);
        if from >= to {
            return Ok(Vec::new());
        }
        let mut tail = self.copy_range(tx, from, len)?;
        let rest = tail.split_off((to - from) as usize);
        self.write_tail(tx, from, rest)?;
        Ok(tail)
    }

    /// Removes the elements from `at` on and returns them (`Vec::split_off`, returning a
    /// volatile `Vec`: a new persistent vector needs a home in the pool; `extend` one with the
    /// result); `None` if `at > len` (where std panics). 2 drains (0 when `at == len`); the
    /// buffer is kept.
    ///
    /// # Errors
    ///
    /// As [`pop`](PVec::pop).
    pub fn split_off(&self, tx: &Transaction<'_>, at: u64) -> Result<Option<Vec<T>>> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        if at > len {
            return Ok(None);
        }
        let tail = self.copy_range(tx, at, len)?;
        if at < len {
            self.len.set(tx, at)?;
        }
        Ok(Some(tail))
    }

    /// Moves every element of `other` to the end of this vector, leaving `other` empty with its
    /// buffer freed (`Vec::append`). 3 drains: one snapshot per vector, then the commit.
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push) and [`clear`](PVec::clear).
    pub fn append(&self, tx: &Transaction<'_>, other: &PVec<T>) -> Result<()> {
        raw::mutating(tx, self)?;
        if std::ptr::eq(self, other) {
            return Ok(());
        }
        let items = other.to_vec(tx)?;
        if items.is_empty() {
            return Ok(());
        }
        self.extend(tx, items)?;
        other.clear(tx)
    }

    /// Resizes to `new_len` elements (`Vec::resize`): truncates, or appends copies of `v`.
    /// 2 drains (0 when the length is already `new_len`).
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push).
    pub fn resize(&self, tx: &Transaction<'_>, new_len: u64, v: T) -> Result<()> {
        raw::mutating(tx, self)?;
        let len = self.len(tx);
        match new_len.cmp(&len) {
            std::cmp::Ordering::Less => self.truncate(tx, new_len),
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => {
                let n = usize::try_from(new_len - len).map_err(|_| raw::out_of_bounds(len, new_len))?;
                self.write_tail(tx, len, vec![v; n])
            }
        }
    }

    /// Whether some element equals `x` (`slice::contains`). 0 drains.
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get).
    pub fn contains(&self, tx: &Transaction<'_>, x: &T) -> Result<bool>
    where
        T: PartialEq,
    {
        tx.check_live(self)?;
        let mut it = self.iter(tx);
        let found = it.any(|v| v == *x);
        match it.error {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// Changes element `i` in place through `f` (the persistent `get_mut`: `f` gets a copy,
    /// which is stored back) and returns the new value; `None` if `i >= len`. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`set`](PVec::set).
    pub fn update(&self, tx: &Transaction<'_>, i: u64, f: impl FnOnce(&mut T)) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let Some(mut v) = self.get(tx, i)? else {
            return Ok(None);
        };
        f(&mut v);
        self.set(tx, i, v)?;
        Ok(Some(v))
    }

    /// A vector holding exactly `items`, in a buffer freshly allocated by `tx` (none when
    /// `items` is empty), returned **by value**: a handle not yet stored anywhere, which the
    /// caller copies into a slot of its own (a [`PHashMap`](crate::PHashMap) key slot) or
    /// releases.
    pub(crate) fn new_exact(tx: &Transaction<'_>, items: &[T]) -> Result<Self> {
        let () = Self::ELEM_OK;
        let n = items.len() as u64;
        let mut buf = PPtr::<u8>::null();
        if n > 0 {
            buf = raw::alloc_block(tx, raw::array_bytes::<T>(n)?)?;
            // SAFETY: the fresh block of `n` elements just allocated by `tx` (new memory: no
            // snapshot needed), reached only by this thread, through cells.
            unsafe { raw::write_bytes(tx, buf, 0, raw::slice_bytes(items))? };
        }
        // The handle's bytes: buffer pointer, length, capacity (`repr(C)`, three words).
        let words = [buf.to_raw(), n, n];
        read_from_bytes::<Self>(bytes_of(&words)).ok_or_else(|| raw::out_of_bounds(0, 24))
    }

    /// The hash of the elements' bytes under a map's hash seed (as `hash_bytes_seeded` of them
    /// in one slice). 0 drains.
    pub(crate) fn contents_hash(&self, tx: &Transaction<'_>, seed: u64) -> Result<u64> {
        let bytes = raw::array_bytes::<T>(self.len(tx))?;
        let mut h = raw::KeyHasher::new(seed, bytes);
        if bytes > 0 {
            // SAFETY: the first `len <= cap` elements of this vector's live buffer.
            unsafe {
                raw::read_chunks(tx, self.block(tx), 0, bytes, |w| {
                    h.chunk(w);
                    true
                })?
            };
        }
        Ok(h.finish())
    }

    /// Copies the elements' bytes into `out`, which must hold exactly as many. 0 drains.
    pub(crate) fn contents_into(&self, tx: &Transaction<'_>, out: &mut [u8]) -> Result<()> {
        let bytes = raw::array_bytes::<T>(self.len(tx))?;
        if bytes != out.len() as u64 {
            return Err(raw::out_of_bounds(bytes, out.len() as u64));
        }
        let mut pieces = out.chunks_mut(8);
        if bytes > 0 {
            // SAFETY: as in `contents_hash`.
            unsafe {
                raw::read_chunks(tx, self.block(tx), 0, bytes, |w| {
                    if let Some(piece) = pieces.next() {
                        let n = piece.len();
                        piece.copy_from_slice(&w.to_le_bytes()[..n]);
                    }
                    true
                })?
            };
        }
        Ok(())
    }

    /// Whether the elements' bytes are exactly `expected`. 0 drains; reads only the length when
    /// the sizes differ, and stops at the first differing word.
    pub(crate) fn contents_eq(&self, tx: &Transaction<'_>, expected: &[u8]) -> Result<bool> {
        let bytes = raw::array_bytes::<T>(self.len(tx))?;
        if bytes != expected.len() as u64 {
            return Ok(false);
        }
        let (mut eq, mut want) = (true, expected.chunks(8));
        if bytes > 0 {
            // SAFETY: as in `contents_hash`.
            unsafe {
                raw::read_chunks(tx, self.block(tx), 0, bytes, |w| {
                    let mut c = [0u8; 8];
                    let chunk = want.next().unwrap_or_default();
                    c[..chunk.len()].copy_from_slice(chunk);
                    eq = w == u64::from_le_bytes(c);
                    eq
                })?
            };
        }
        Ok(eq)
    }

    /// How the elements' bytes compare with `other` (byte-lexicographic, a prefix first, as
    /// `[u8]` and `str` order). 0 drains; stops at the first differing word.
    pub(crate) fn contents_cmp(&self, tx: &Transaction<'_>, other: &[u8]) -> Result<std::cmp::Ordering> {
        let bytes = raw::array_bytes::<T>(self.len(tx))?;
        let (mut ord, mut theirs) = (std::cmp::Ordering::Equal, other.chunks(8));
        if bytes > 0 {
            // SAFETY: as in `contents_hash`.
            unsafe {
                raw::read_chunks(tx, self.block(tx), 0, bytes, |w| {
                    // Both sides zero-padded: the first differing padded word orders the
                    // contents (a padding zero only meets a real byte that is greater, or
                    // the words would not differ there), equal words leave it to the lengths.
                    let mut c = [0u8; 8];
                    let chunk = theirs.next().unwrap_or_default();
                    c[..chunk.len()].copy_from_slice(chunk);
                    ord = w.swap_bytes().cmp(&u64::from_be_bytes(c));
                    ord.is_eq()
                })?
            };
        }
        Ok(ord.then(bytes.cmp(&(other.len() as u64))))
    }

    /// Iterates over copies of the elements, from either end (`rev()` works). The length is
    /// taken now; each step reads the current buffer, so changing the vector while iterating is
    /// allowed: changed elements are seen, elements pushed later are not, and a shortened vector
    /// ends the iteration early.
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> Iter<'a, T> {
        Iter {
            vec: self,
            tx,
            i: 0,
            end: self.len(tx),
            error: None,
        }
    }

    /// Copies the elements into a `Vec`.
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get).
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<T>> {
        tx.check_live(self)?;
        self.copy_range(tx, 0, u64::MAX)
    }
}

impl<T> fmt::Debug for PVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PVec { .. }")
    }
}

/// Iterator over copies of a [`PVec`]'s elements; see [`PVec::iter`]. Stops at the first error
/// (only possible on a corrupted vector).
pub struct Iter<'a, T> {
    vec: &'a PVec<T>,
    tx: &'a Transaction<'a>,
    i: u64,
    /// One past the last element not yet returned from the back.
    end: u64,
    error: Option<Error>,
}

impl<T> Iter<'_, T> {
    /// The error that ended the iteration early, if any (only on a corrupted vector). Such an
    /// error also dooms the transaction (see the crate docs, "Iteration errors").
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }
}

impl<T: Persistent + Copy> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.error.is_some() || self.i >= self.end {
            return None;
        }
        let r = self.vec.get(self.tx, self.i);
        let v = raw::iteration(self.tx, r, &mut self.error)?;
        self.i += 1;
        Some(v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.end.saturating_sub(self.i)).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl<T: Persistent + Copy> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<T> {
        if self.error.is_some() || self.end <= self.i {
            return None;
        }
        let r = self.vec.get(self.tx, self.end - 1);
        let v = raw::iteration(self.tx, r, &mut self.error)?;
        self.end -= 1;
        Some(v)
    }
}

/// Exact as long as the vector is not shortened during the iteration (the length is taken when
/// the iterator is made; a shortened vector ends the iteration early).
impl<T: Persistent + Copy> ExactSizeIterator for Iter<'_, T> {}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("i", &self.i).finish()
    }
}
