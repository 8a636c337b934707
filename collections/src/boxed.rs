//! [`PBox`]: an owning pointer to one value in the pool's heap.

use std::fmt;

use ptm::{Nested, PCell, PPtr, Persistent, Result, Transaction};

use crate::owned::{or_free_fresh, Frees};
use crate::{raw, PHandle, PValue};

/// An owning, nullable pointer to a `T` in the pool's heap (a pool's `Option<Box<T>>`): an
/// 8-byte handle stored in the root or another persistent struct, like the other collections.
/// It is neither `Copy` nor `Sync`, so the handle is the only way to reach its block, and a
/// freed block can never be reached through a stale copy.
///
/// The value is a `Copy` value ([`get`](PBox::get), [`set`](PBox::set), [`take`](PBox::take))
/// or a nested collection handle ([`get_or_init_new`](PBox::get_or_init_new),
/// [`get_ref`](PBox::get_ref)); [`free`](PBox::free) frees what it owns too.
///
/// Drains: [`set`](PBox::set) and [`get_or_init_new`](PBox::get_or_init_new) cost 2
/// (allocating on first use: allocate, then snapshot the pointer), [`free`](PBox::free) and
/// [`take`](PBox::take) 2, [`get`](PBox::get) and [`get_ref`](PBox::get_ref) 0.
#[repr(transparent)]
pub struct PBox<T> {
    ptr: PCell<PPtr<PCell<T>>>,
}

// SAFETY: `repr(transparent)` over a `PCell` of a `PPtr`, a `u64` offset: every bit pattern is
// valid (checked by `Transaction::deref` before use), no padding, no virtual address.
unsafe impl<T: Persistent> Persistent for PBox<T> {}

impl<T: Persistent> PBox<T> {
    /// Whether the box holds no value.
    pub fn is_null(&self, tx: &Transaction<'_>) -> bool {
        self.ptr.get(tx).is_null()
    }

    /// The pool offset of the block, if any (for reachability checks).
    pub fn offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let p = self.ptr.get(tx);
        (!p.is_null()).then(|| p.offset())
    }

    /// A reference to the boxed value, if any.
    ///
    /// # Safety
    ///
    /// `T` is all cells ([`PHandle`]), or the value is being discarded.
    unsafe fn value<'t>(&self, tx: &'t Transaction<'_>) -> Result<Option<&'t T>> {
        let p = self.ptr.get(tx);
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: a non-null handle owns a live block holding a `T` (freed only by `free`, which
        // nulls the handle in the same transaction); the handle is `!Sync` and not `Copy`, so
        // the block is reached only through it, by the thread running `tx`; per this
        // function's contract, through cells or not at all after this use.
        unsafe { tx.deref(p.cast::<T>()) }.map(Some)
    }
}

impl<T: PValue> PBox<T> {
    /// Frees the block and everything the value owns (at commit) and empties the box; nothing
    /// happens for an empty box. 2 drains, however deeply the value nests.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted pointer; logging errors.
    /// An error after part of a damaged value was freed dooms the transaction.
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        raw::mutating(tx, self)?;
        if self.ptr.get(tx).is_null() {
            return Ok(());
        }
        tx.snapshot(|b| {
            b.add(&self.ptr)?;
            // Last, once the pointer is logged: a failed batch frees nothing.
            // SAFETY: the handle is nulled just below, in this transaction.
            unsafe { self.release(tx) }
        })?;
        // Logged in the batch: this store cannot fail.
        self.ptr.set(tx, PPtr::null())
    }

    /// Frees the block and what the value owns, without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`]: the box is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        let p = self.ptr.get(tx);
        if p.is_null() {
            return Ok(());
        }
        Frees::walk(tx, |f| {
            if T::OWNS {
                // SAFETY: the value is discarded with the box (this function's contract).
                if let Some(v) = unsafe { self.value(tx)? } {
                    // SAFETY: as above.
                    unsafe { f.value(v)? };
                }
            }
            f.block(p)
        })
    }
}

impl<T: Persistent + Copy> PBox<T> {
    fn cell<'t>(&self, tx: &'t Transaction<'_>) -> Result<Option<&'t PCell<T>>> {
        let p = self.ptr.get(tx);
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: as in `value`, through the cell.
        unsafe { tx.deref(p) }.map(Some)
    }

    /// A copy of the value, or `None` for an empty box.
    ///
    /// # Errors
    ///
    /// Pointer checks, only for a corrupted handle.
    pub fn get(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        tx.check_live(self)?;
        Ok(self.cell(tx)?.map(|c| c.get(tx)))
    }

    /// Stores `v`: in place when the box holds a value, else in a newly allocated block.
    /// 2 drains either way.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, pointer checks.
    pub fn set(&self, tx: &Transaction<'_>, v: T) -> Result<()> {
        raw::mutating(tx, self)?;
        match self.cell(tx)? {
            Some(c) => c.set(tx, v),
            None => {
                let p = tx.alloc(v)?;
                // A pointer that cannot be logged (`OutOfSpace`) leaves the fresh block unused.
                or_free_fresh(tx, &[p.cast()], self.ptr.set(tx, p.cast()))
            }
        }
    }

    /// Takes the value out and frees the block; `None` for an empty box. 2 drains.
    ///
    /// # Errors
    ///
    /// As [`free`](PBox::free).
    pub fn take(&self, tx: &Transaction<'_>) -> Result<Option<T>> {
        raw::mutating(tx, self)?;
        let v = self.get(tx)?;
        self.free(tx)?;
        Ok(v)
    }
}

/// A box of a nested collection ([`PString`](crate::PString), [`PVec`](crate::PVec), your own
/// [`PHandle`] struct): created empty in a fresh block by
/// [`get_or_init_new`](PBox::get_or_init_new), reached by [`get_ref`](PBox::get_ref), and
/// freed with everything it owns by [`free`](PBox::free). A reference taken before `free` (or
/// any other change of the box) is stale: writes through it fail with
/// [`Error::StaleReference`](ptm::Error::StaleReference).
impl<T: PHandle> PBox<T> {
    /// A reference to the boxed handle, or `None` for an empty box. 0 drains.
    ///
    /// # Errors
    ///
    /// Pointer checks, only for a corrupted handle.
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Option<Nested<'t, T>>> {
        tx.check_live(self)?;
        // SAFETY: `T` is all cells.
        Ok(unsafe { self.value(tx) }?.map(|v| tx.nested(self, v)))
    }

    /// The boxed handle, allocating a block holding an empty one (all-zero bytes) first when
    /// the box is empty. 2 drains when it allocates (the fresh block is new memory; only the
    /// pointer is logged), 0 when not.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, pointer checks.
    pub fn get_or_init_new<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Nested<'t, T>> {
        if let Some(v) = self.get_ref(tx)? {
            return Ok(v);
        }
        raw::mutating(tx, self)?;
        let p = tx.alloc_zeroed::<T>()?;
        // A pointer that cannot be logged (`OutOfSpace`) leaves the fresh block unused.
        or_free_fresh(tx, &[p.cast()], self.ptr.set(tx, p.cast()))?;
        // SAFETY: the block just allocated and linked; `T` is all cells.
        match unsafe { self.value(tx)? } {
            Some(v) => Ok(tx.nested(self, v)),
            None => Err(raw::out_of_bounds(p.offset(), std::mem::size_of::<T>() as u64)),
        }
    }
}

impl<T> fmt::Debug for PBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PBox { .. }")
    }
}
