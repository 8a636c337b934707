//! [`PQueue`]: a FIFO ring buffer in the pool.

use std::fmt;
use std::mem::size_of;

use ptm::{PCell, PPtr, Persistent, Result, Transaction};

use crate::raw;

/// A persistent FIFO queue (a pool's `VecDeque<T>` used as a queue): a ring buffer of `cap`
/// elements starting at `head`. `push` appends at the back, `pop` takes from the front.
///
/// Drains: `push` and `pop` cost **2**, growth included (the ring is copied in order into a
/// buffer of twice the capacity); `peek`, `len` and iteration cost 0.
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

impl<T: Persistent + Copy> PQueue<T> {
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

    /// The cell of logical position `pos` (0 = front).
    fn slot<'t>(&self, tx: &'t Transaction<'_>, pos: u64) -> Result<&'t PCell<T>> {
        let (head, _, cap) = self.state(tx);
        let i = ring_index(head, pos, cap);
        // SAFETY: the buffer is this queue's live block of `cap` elements (freed only together
        // with storing a new pointer into `buf`) and `i < cap`; the queue is `!Sync` (or guarded
        // by the caller's lock), so it is reached only by this thread, through cells.
        unsafe { raw::cell::<T>(tx, self.block(tx), raw::elem_off::<T>(i)?) }
    }

    /// Number of elements.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.state(tx).1
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
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
        let () = Self::ELEM_OK;
        let (head, len, cap) = self.state(tx);
        if len < cap {
            let slot = self.slot(tx, len)?;
            tx.snapshot(|b| {
                b.add(slot)?;
                b.add(&self.len)
            })?;
            slot.set(tx, v)?;
            return self.len.set(tx, len + 1);
        }
        let new_cap = cap.saturating_mul(2).max(4);
        let old = self.block(tx);
        let size = raw::array_bytes::<T>(new_cap)?;
        let new = raw::alloc_block(tx, size)?;
        if !old.is_null() {
            tx.free(old)?;
        }
        tx.snapshot(|b| {
            b.add(&self.buf)?;
            b.add(&self.head)?;
            b.add(&self.len)?;
            // The fresh buffer needs no snapshot: ptm logged it as new memory at allocation.
            b.add(&self.cap)
        })?;
        for pos in 0..len {
            let i = ring_index(head, pos, cap);
            // SAFETY: `old` is this queue's buffer of `cap` elements (its free takes effect at
            // commit) and `i < cap`; `new` is the fresh buffer of `new_cap > len` elements; both
            // reached only through cells by this thread.
            unsafe { raw::write::<T>(tx, new, pos, raw::read::<T>(tx, old, i)?)? };
        }
        // SAFETY: as above, `len < new_cap`.
        unsafe { raw::write::<T>(tx, new, len, v)? };
        self.buf.set(tx, new.cast())?;
        self.head.set(tx, 0)?;
        self.cap.set(tx, new_cap)?;
        self.len.set(tx, len + 1)
    }

    /// Removes and returns the front element. 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// Logging errors; corrupted handles.
    pub fn pop(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        let (head, len, cap) = self.state(tx);
        if len == 0 {
            return Ok(None);
        }
        let v = self.slot(tx, 0)?.get(tx);
        tx.snapshot(|b| {
            b.add(&self.head)?;
            b.add(&self.len)
        })?;
        self.head.set(tx, ring_index(head, 1, cap))?;
        self.len.set(tx, len - 1)?;
        Ok(Some(v))
    }

    /// Removes every element and frees the buffer (at commit). 2 drains.
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

    /// Frees the buffer without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`](crate::PValue::free_owned): the queue is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
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

    /// The pool offset of the buffer, if any (for reachability checks).
    pub fn buffer_offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let b = self.buf.get(tx);
        (!b.is_null()).then(|| b.offset())
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
