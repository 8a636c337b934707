//! [`PQueue`]: a FIFO ring buffer in the pool.

use std::fmt;
use std::mem::size_of;

use ptm::{PCell, PPtr, Persistent, Result, Transaction};

use crate::raw::{self, Span};
use crate::{PHandle, PValue};

/// A persistent FIFO queue (a pool's `VecDeque<T>` used as a queue): a ring buffer of `cap`
/// elements starting at `head`. `push` appends at the back, `pop` takes from the front.
///
/// Elements are `Copy` values ([`push`](PQueue::push), [`pop`](PQueue::pop), ...) or nested
/// collection handles ([`push_new`](PQueue::push_new), [`front_ref`](PQueue::front_ref),
/// [`pop_free`](PQueue::pop_free)); `clear` and `free` free what the elements own.
///
/// Drains: `push`, `push_new`, `pop` and `pop_free` cost **2**, growth included (the ring is
/// moved in order, by bytes, into a buffer of twice the capacity); `peek`, `front_ref`, `len`
/// and iteration cost 0.
///
/// `!Sync`: share it under a [`PMutex`](ptm::PMutex).
#[repr(C)]
pub struct PQueue<T> {
    buf: PCell<PPtr<T>>,
    head: PCell<u64>,
    len: PCell<u64>,
    cap: PCell<u64>,
}

const _: () = assert!(size_of::<PQueue<u64>>() == 32);

// SAFETY: `repr(C)` of four 8-byte `PCell`s: no padding whatever `T` is; every bit pattern is
// valid (the length is clamped to the capacity, the head reduced modulo the capacity, the buffer
// pointer checked by `Transaction::deref`); no virtual address.
unsafe impl<T: Persistent> Persistent for PQueue<T> {}

impl<T: Persistent> PQueue<T> {
    const ELEM_OK: () = assert!(size_of::<T>() > 0, "PQueue<T> needs a non-zero-sized T");

    fn block(&self, tx: &Transaction<'_>) -> PPtr<u8> {
        self.buf.get(tx).cast()
    }

    /// `(head, len, cap)`, sanitised.
    fn state(&self, tx: &Transaction<'_>) -> (u64, u64, u64) {
        let cap = self.cap.get(tx);
        if cap == 0 || self.buf.get(tx).is_null() {
            return (0, 0, 0);
        }
        (self.head.get(tx) % cap, self.len.get(tx).min(cap), cap)
    }

    /// Byte offset in the buffer of logical position `pos < cap` (0 = front).
    fn slot_off(&self, tx: &Transaction<'_>, pos: u64) -> Result<u64> {
        let (head, _, cap) = self.state(tx);
        raw::elem_off::<T>(ring_index(head, pos, cap))
    }

    /// A reference to the element at position `pos < len`.
    ///
    /// # Safety
    ///
    /// `T` is all cells ([`PHandle`]), or the element is being discarded.
    unsafe fn elem<'t>(&self, tx: &'t Transaction<'_>, pos: u64) -> Result<&'t T> {
        // SAFETY: the buffer is this queue's live block of `cap` elements (freed only together
        // with storing a new pointer into `buf`) and the slot is below `cap`; the queue is
        // `!Sync` (or guarded by the caller's lock), so it is reached only by this thread;
        // through cells or not at all after this use (this function's contract).
        unsafe { raw::at::<T>(tx, self.block(tx), self.slot_off(tx, pos)?) }
    }

    /// Number of elements.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.state(tx).1
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
    }

    /// The pool offset of the buffer, if any (for reachability checks).
    pub fn buffer_offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let b = self.buf.get(tx);
        (!b.is_null()).then(|| b.offset())
    }

    /// Drops the front element (as is): logs and moves `head` and `len`. One snapshot drain.
    fn advance(&self, tx: &Transaction<'_>) -> Result<()>
    where
        T: PValue,
    {
        let (head, len, cap) = self.state(tx);
        let (buf, front) = (self.block(tx), self.slot_off(tx, 0)?);
        let size = size_of::<T>() as u64;
        tx.snapshot(|b| {
            if T::OWNS {
                // SAFETY: the front slot of this queue's live buffer, reached only through cells
                // by this thread.
                b.add(&unsafe { Span::new(tx, buf, front, size)? })?;
            }
            b.add(&self.head)?;
            b.add(&self.len)
        })?;
        if T::OWNS {
            // The popped handle's blocks are freed: zero it, so that no damaged `head`/`len` can
            // bring back a second owner of blocks reused later.
            // SAFETY: as above; logged in the batch.
            unsafe { raw::zero_bytes(tx, buf, front, size)? };
        }
        self.head.set(tx, ring_index(head, 1, cap))?;
        self.len.set(tx, len - 1)
    }
}

impl<T: PValue> PQueue<T> {
    /// Makes room for one element at the back and logs what the caller will write, in one
    /// batch: the back slot and `len`, or, when the ring is full, a fresh buffer of twice the
    /// capacity (at least 4) into which the ring is moved in order by bytes, the old one freed
    /// (at commit) and the header logged (the fresh buffer is new memory: never logged). When
    /// `T` owns blocks, the moved elements' old copies are zeroed (so logged in the same batch):
    /// a stale `&T` then sees an empty handle. One snapshot drain. Returns the buffer, the byte
    /// offset of the new back slot and the new length, which the caller stores after writing
    /// the slot.
    fn reserve_back(&self, tx: &Transaction<'_>) -> Result<(PPtr<u8>, u64, u64)> {
        let () = Self::ELEM_OK;
        let (head, len, cap) = self.state(tx);
        let old = self.block(tx);
        if len < cap {
            let off = self.slot_off(tx, len)?;
            tx.snapshot(|b| {
                // SAFETY: the back slot of this queue's live buffer, reached only through cells
                // by this thread.
                b.add(&unsafe { Span::new(tx, old, off, size_of::<T>() as u64)? })?;
                b.add(&self.len)
            })?;
            return Ok((old, off, len + 1));
        }
        let new_cap = cap.saturating_mul(2).max(4);
        let new = raw::alloc_block(tx, raw::array_bytes::<T>(new_cap)?)?;
        if T::OWNS {
            // Spare slots of a fresh buffer hold old bytes; zero them so that they never read
            // as a handle (fresh memory: no logging).
            // SAFETY: the fresh buffer of `new_cap` elements, reached only by this thread.
            unsafe { raw::zero_bytes(tx, new, 0, raw::array_bytes::<T>(new_cap)?)? };
        }
        if !old.is_null() {
            tx.free(old)?;
        }
        tx.snapshot(|b| {
            b.add(&self.buf)?;
            b.add(&self.head)?;
            b.add(&self.len)?;
            if T::OWNS && len > 0 {
                // SAFETY: this queue's buffer (freed at commit), all `cap` slots live, reached
                // only through cells by this thread.
                b.add(&unsafe { Span::new(tx, old, 0, raw::array_bytes::<T>(cap)?)? })?;
            }
            // The fresh buffer needs no snapshot: ptm logged it as new memory at allocation.
            b.add(&self.cap)
        })?;
        // The ring in order: positions `head..cap`, then `0..head`.
        let first = len.min(cap - head);
        let (first_bytes, rest_bytes) = (raw::array_bytes::<T>(first)?, raw::array_bytes::<T>(len - first)?);
        // SAFETY: `old` is this queue's buffer of `cap` elements (its free takes effect at
        // commit, so it is still readable; logged above when zeroed), `new` the fresh buffer of
        // `new_cap > len` elements; both reached only through cells by this thread.
        unsafe {
            let at = raw::elem_off::<T>(head)?;
            raw::move_bytes(tx, (old, at), (new, 0), first_bytes, T::OWNS)?;
            raw::move_bytes(tx, (old, 0), (new, first_bytes), rest_bytes, T::OWNS)?;
        }
        self.buf.set(tx, new.cast())?;
        self.head.set(tx, 0)?;
        self.cap.set(tx, new_cap)?;
        Ok((new, raw::elem_off::<T>(len)?, len + 1))
    }

    /// Removes the front element, freeing (at commit) everything it owns; `false` when empty.
    /// 2 drains (0 when empty), whatever the element owns.
    ///
    /// # Errors
    ///
    /// As [`clear`](PQueue::clear).
    pub fn pop_free(&self, tx: &Transaction<'_>) -> Result<bool> {
        if self.is_empty(tx) {
            return Ok(false);
        }
        if T::OWNS {
            // SAFETY: the front element is removed just below, in this transaction.
            unsafe { self.elem(tx, 0)?.free_owned(tx)? };
        }
        self.advance(tx)?;
        Ok(true)
    }

    /// Removes every element and frees the buffer and everything the elements own (at commit).
    /// 2 drains, however deeply the elements nest.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted pointer; logging errors.
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: the handle is emptied below, in this transaction.
        unsafe { self.release(tx)? };
        tx.snapshot(|b| {
            b.add(&self.buf)?;
            b.add(&self.head)?;
            b.add(&self.len)?;
            b.add(&self.cap)
        })?;
        self.buf.set(tx, PPtr::null())?;
        self.head.set(tx, 0)?;
        self.len.set(tx, 0)?;
        self.cap.set(tx, 0)
    }

    /// Frees the buffer and everything the elements own, without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`](crate::PValue::free_owned): the queue is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        if T::OWNS {
            for pos in 0..self.len(tx) {
                // SAFETY: the whole queue, so this element, is being discarded.
                unsafe { self.elem(tx, pos)?.free_owned(tx)? };
            }
        }
        let buf = self.buf.get(tx);
        if !buf.is_null() {
            tx.free(buf)?;
        }
        Ok(())
    }

    /// Frees everything the queue owns (the same as [`clear`](PQueue::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PQueue::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        self.clear(tx)
    }
}

impl<T: Persistent + Copy> PQueue<T> {
    /// The cell of logical position `pos < cap` (0 = front).
    fn slot<'t>(&self, tx: &'t Transaction<'_>, pos: u64) -> Result<&'t PCell<T>> {
        // SAFETY: as in `elem`; a `PCell` is a cell.
        unsafe { raw::cell::<T>(tx, self.block(tx), self.slot_off(tx, pos)?) }
    }

    /// A copy of the front element.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn peek(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        self.get(tx, 0)
    }

    /// A copy of the element at position `pos` from the front.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn get(&self, tx: &Transaction<'_>, pos: u64) -> Result<Option<T>> {
        if pos >= self.len(tx) {
            return Ok(None);
        }
        Ok(Some(self.slot(tx, pos)?.get(tx)))
    }

    /// Appends `v` at the back. 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace) and logging errors.
    pub fn push(&self, tx: &Transaction<'_>, v: T) -> Result<()> {
        let (buf, off, len) = self.reserve_back(tx)?;
        // SAFETY: the back slot `reserve_back` logged (or fresh), reached only through cells.
        unsafe { raw::cell::<T>(tx, buf, off)? }.set(tx, v)?;
        self.len.set(tx, len)
    }

    /// Removes and returns the front element. 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn pop(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        let Some(v) = self.peek(tx)? else {
            return Ok(None);
        };
        self.advance(tx)?;
        Ok(Some(v))
    }

    /// Copies the elements, front to back, into a `Vec`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<T>> {
        (0..self.len(tx))
            .map(|p| self.slot(tx, p).map(|c| c.get(tx)))
            .collect()
    }
}

/// A queue of nested collections ([`PString`](crate::PString), [`PVec`](crate::PVec), your
/// own [`PHandle`] structs): created in place at the back by [`push_new`](PQueue::push_new),
/// reached by [`front_ref`](PQueue::front_ref) and [`get_ref`](PQueue::get_ref), removed with
/// everything they own by [`pop_free`](PQueue::pop_free) and [`clear`](PQueue::clear).
///
/// As for [`PVec`](crate::PVec)'s handle methods, a reference taken before a growth (by
/// `push_new`) or a removal is **stale**: a logic error, never undefined behaviour (after a
/// growth it reads an empty handle; after a removal it reads the zeroed slot, an empty handle).
impl<T: PHandle> PQueue<T> {
    /// Appends an empty handle (all-zero bytes) at the back and returns a reference to it.
    /// 2 drains, growth included (growth moves the handles by bytes and zeroes and logs their
    /// old copies).
    ///
    /// # Errors
    ///
    /// As [`push`](PQueue::push).
    pub fn push_new<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<&'t T> {
        let (buf, off, len) = self.reserve_back(tx)?;
        // SAFETY: the back slot `reserve_back` logged (or fresh); zero is the empty handle.
        unsafe { raw::zero_bytes(tx, buf, off, size_of::<T>() as u64)? };
        self.len.set(tx, len)?;
        // SAFETY: the back element now; `T` is all cells.
        unsafe { self.elem(tx, len - 1) }
    }

    /// A reference to the front element, if any. 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn front_ref<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Option<&'t T>> {
        self.get_ref(tx, 0)
    }

    /// A reference to the element at position `pos` from the front, if any. 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle.
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, pos: u64) -> Result<Option<&'t T>> {
        if pos >= self.len(tx) {
            return Ok(None);
        }
        // SAFETY: `pos < len`; `T` is all cells.
        unsafe { self.elem(tx, pos) }.map(Some)
    }
}

/// `(head + pos) % cap` for `head, pos < cap` (or `cap == 0`), without overflow.
fn ring_index(head: u64, pos: u64, cap: u64) -> u64 {
    if pos < cap - head {
        head + pos
    } else {
        pos - (cap - head)
    }
}

impl<T> fmt::Debug for PQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PQueue { .. }")
    }
}
