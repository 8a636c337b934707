//! [`PVec`]: a growable array in the pool.

use std::fmt;
use std::mem::size_of;

use ptm::{PCell, PPtr, Persistent, Result, Transaction};

use crate::raw::{self, Span};

/// A persistent growable array of `T` (a pool's `Vec<T>`): a 24-byte handle (buffer pointer,
/// length, capacity) stored in the root or in another persistent struct, and a buffer in the
/// pool's heap that the handle owns.
///
/// Every change happens inside a transaction and is failure-atomic. Cost in drains: `push`,
/// `pop`, `set`, `extend`, `clear` and `free` cost **2** per transaction, growth included
/// (allocate and free first, then one batched snapshot of every range changed, then the stores);
/// reads cost 0. Growth doubles the capacity; the new buffer is never copied into the undo log (see the
/// crate docs).
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

// SAFETY: `repr(C)` of three 8-byte `PCell`s (`PCell<PPtr<T>>` is `repr(transparent)` over a
// `u64`), so there is no padding whatever `T` is; every field accepts every bit pattern (a wild
// buffer pointer is checked by `Transaction::deref`, a wild length is clamped to the capacity);
// no virtual address is stored.
unsafe impl<T: Persistent> Persistent for PVec<T> {}

impl<T: Persistent + Copy> PVec<T> {
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

    /// A copy of element `i`, or `None` if `i >= len`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a buffer pointer outside the pool).
    pub fn get(&self, tx: &Transaction<'_>, i: u64) -> Result<Option<T>> {
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
        match self.len(tx) {
            0 => Ok(None),
            n => self.get(tx, n - 1),
        }
    }

    /// Replaces everything after the first `keep` elements with `items`, in one batch: when the
    /// buffer is too small, allocates one of twice the capacity (at least 4 and at least what is
    /// needed), frees the old one (at commit), copies the kept elements over, and logs the header
    /// in the same batch as the written range (the fresh buffer is new memory: never logged). One snapshot drain.
    fn write_tail(&self, tx: &Transaction<'_>, keep: u64, items: Vec<T>) -> Result<()> {
        let () = Self::ELEM_OK;
        let (len, cap) = (self.len(tx), self.cap.get(tx));
        let keep = keep.min(len);
        let n = items.len() as u64;
        let need = keep.checked_add(n).ok_or_else(|| raw::out_of_bounds(keep, n))?;
        let old = self.block(tx);
        let buf = if need <= cap {
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
            old
        } else {
            let new_cap = need.max(cap.saturating_mul(2)).max(4);
            let size = raw::array_bytes::<T>(new_cap)?;
            // Allocate and free first: the batch's drain then makes their log records durable.
            let new = raw::alloc_block(tx, size)?;
            if !old.is_null() {
                tx.free(old)?;
            }
            tx.snapshot(|b| {
                b.add(&self.buf)?;
                b.add(&self.len)?;
                // The fresh block needs no snapshot: ptm logged it as new memory at allocation.
                b.add(&self.cap)
            })?;
            for i in 0..keep {
                // SAFETY: `old` is this vector's buffer (its free takes effect at commit, so it
                // is still readable) and `i < keep <= len <= cap`; `new` is the fresh buffer of
                // `new_cap > keep` elements; both reached only through cells by this thread.
                unsafe { raw::write::<T>(tx, new, i, raw::read::<T>(tx, old, i)?)? };
            }
            self.buf.set(tx, new.cast())?;
            self.cap.set(tx, new_cap)?;
            new
        };
        for (k, v) in (keep..).zip(items) {
            // SAFETY: `buf` is this vector's live buffer of at least `keep + n` elements; the
            // range was logged in the batch above.
            unsafe { raw::write(tx, buf, k, v)? };
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
        self.write_tail(tx, self.len(tx), vec![v])
    }

    /// Appends every element of `items`: one batch, 2 drains in all, growth included.
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push).
    pub fn extend(&self, tx: &Transaction<'_>, items: impl IntoIterator<Item = T>) -> Result<()> {
        self.write_tail(tx, self.len(tx), items.into_iter().collect())
    }

    /// Replaces the contents with `items`, keeping the buffer when it is large enough:
    /// one batch, 2 drains in all.
    ///
    /// # Errors
    ///
    /// As [`push`](PVec::push).
    pub fn assign(&self, tx: &Transaction<'_>, items: impl IntoIterator<Item = T>) -> Result<()> {
        self.write_tail(tx, 0, items.into_iter().collect())
    }

    /// Removes and returns the last element. 2 drains (0 when empty).
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get), and logging errors.
    pub fn pop(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        let len = self.len(tx);
        if len == 0 {
            return Ok(None);
        }
        let v = self.get(tx, len - 1)?;
        self.len.set(tx, len - 1)?;
        Ok(v)
    }

    /// Shortens the vector to `new_len` elements (keeping the buffer); nothing happens if it is
    /// not longer. 2 drains.
    ///
    /// # Errors
    ///
    /// Logging errors.
    pub fn truncate(&self, tx: &Transaction<'_>, new_len: u64) -> Result<()> {
        if new_len < self.len(tx) {
            self.len.set(tx, new_len)?;
        }
        Ok(())
    }

    /// Replaces element `i` and returns the old value, or returns `None` and changes nothing if
    /// `i >= len`. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get), and logging errors.
    pub fn set(&self, tx: &Transaction<'_>, i: u64, v: T) -> Result<Option<T>> {
        let Some(old) = self.get(tx, i)? else {
            return Ok(None);
        };
        // SAFETY: as in `get`: `i < len <= cap` of this vector's live buffer.
        unsafe { raw::write(tx, self.block(tx), i, v)? };
        Ok(Some(old))
    }

    /// Removes every element and frees the buffer (at commit). 2 drains.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted buffer pointer, and
    /// logging errors.
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        let buf = self.buf.get(tx);
        if !buf.is_null() {
            tx.free(buf)?;
        }
        tx.snapshot(|b| {
            b.add(&self.buf)?;
            b.add(&self.len)?;
            b.add(&self.cap)
        })?;
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
        self.clear(tx)
    }

    /// Iterates over copies of the elements. Each step reads the current length and buffer, so
    /// changing the vector while iterating is allowed (and seen).
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> Iter<'a, T> {
        Iter { vec: self, tx, i: 0 }
    }

    /// Copies the elements into a `Vec`.
    ///
    /// # Errors
    ///
    /// As [`get`](PVec::get).
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<T>> {
        (0..self.len(tx))
            .map(|i| self.get(tx, i).map(|v| v.expect("i < len")))
            .collect()
    }

    /// The pool offset of the buffer, if any (for reachability checks).
    pub fn buffer_offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let b = self.buf.get(tx);
        (!b.is_null()).then(|| b.offset())
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
}

impl<T: Persistent + Copy> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let v = self.vec.get(self.tx, self.i).ok().flatten()?;
        self.i += 1;
        Some(v)
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("i", &self.i).finish()
    }
}
