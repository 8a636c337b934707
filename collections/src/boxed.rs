//! [`PBox`]: an owning pointer to one value in the pool's heap.

use std::fmt;

use ptm::{PCell, PPtr, Persistent, Result, Transaction};

/// An owning, nullable pointer to a `T` in the pool's heap (a pool's `Option<Box<T>>`): an
/// 8-byte handle stored in the root or another persistent struct, like the other collections.
/// It is neither `Copy` nor `Sync`, so the handle is the only way to reach its block, and a
/// freed block can never be reached through a stale copy.
///
/// Drains: [`set`](PBox::set) costs 2 (allocating on first use: allocate, then snapshot the
/// pointer), [`free`](PBox::free) 2, [`get`](PBox::get) 0.
#[repr(transparent)]
pub struct PBox<T> {
    ptr: PCell<PPtr<PCell<T>>>,
}

// SAFETY: `repr(transparent)` over a `PCell` of a `PPtr`, a `u64` offset: every bit pattern is
// valid (checked by `Transaction::deref` before use), no padding, no virtual address.
unsafe impl<T: Persistent> Persistent for PBox<T> {}

impl<T: Persistent + Copy> PBox<T> {
    fn cell<'t>(&self, tx: &'t Transaction<'_>) -> Result<Option<&'t PCell<T>>> {
        let p = self.ptr.get(tx);
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null handle owns a live block holding a `T` (freed only by `free`, which
        // nulls the handle in the same transaction); the handle is `!Sync` and not `Copy`, so
        // the block is reached only through it, by the thread running `tx`, through the cell.
        unsafe { tx.deref(p) }.map(Some)
    }

    /// Whether the box holds no value.
    pub fn is_null(&self, tx: &Transaction<'_>) -> bool {
        self.ptr.get(tx).is_null()
    }

    /// A copy of the value, or `None` for an empty box.
    ///
    /// # Errors
    ///
    /// Pointer checks, only for a corrupted handle.
    pub fn get(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        Ok(self.cell(tx)?.map(|c| c.get(tx)))
    }

    /// Stores `v`: in place when the box holds a value, else in a newly allocated block.
    /// 2 drains either way.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, pointer checks.
    pub fn set(&self, tx: &Transaction<'_>, v: T) -> Result<()> {
        match self.cell(tx)? {
            Some(c) => c.set(tx, v),
            None => {
                let p = tx.alloc(v)?;
                self.ptr.set(tx, p.cast())
            }
        }
    }

    /// Frees the block (at commit) and empties the box; nothing happens for an empty box.
    /// 2 drains.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted pointer; logging errors.
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        if self.ptr.get(tx).is_null() {
            return Ok(());
        }
        // SAFETY: the handle is nulled just below, in this transaction.
        unsafe { self.release(tx)? };
        self.ptr.set(tx, PPtr::null())
    }

    /// Frees the block without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`](crate::PValue::free_owned): the box is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        let p = self.ptr.get(tx);
        if !p.is_null() {
            tx.free(p)?;
        }
        Ok(())
    }

    /// Takes the value out and frees the block; `None` for an empty box. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`free`](PBox::free).
    pub fn take(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        let v = self.get(tx)?;
        self.free(tx)?;
        Ok(v)
    }

    /// The pool offset of the block, if any (for reachability checks).
    pub fn offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let p = self.ptr.get(tx);
        (!p.is_null()).then(|| p.offset())
    }
}

impl<T> fmt::Debug for PBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PBox { .. }")
    }
}
