//! References to handles nested inside other persistent structures, and how they go stale.
//!
//! A collection that stores handles (a `PVec<PString>`, a `PHashMap<u64, PVec<u64>>`, a user
//! struct of handles) stores them *in place*, and changes of that collection move them (growth
//! copies them to a new buffer, a B-tree split shifts them inside a node, a removal zeroes the
//! slot). Every method takes `&self`, so rustc cannot tell that a reference handed out before
//! such a change points at the wrong bytes afterwards. This module makes the library tell
//! instead: the reference is a [`Nested`] guard registered in the transaction, a collection
//! calls [`Transaction::invalidate_nested`] before any change that may move or discard its
//! nested handles, which marks every guard taken from it (and, transitively, every guard taken
//! through one of those) stale, and every write path checks [`Transaction::check_live`] first:
//! a write through a stale reference fails with [`Error::StaleReference`] instead of returning
//! `Ok` and being lost.
//!
//! The check is by address: a stale guard covers the bytes of the handle it referred to, and any
//! write to a handle (or a cell) inside those bytes is refused for as long as the stale guard is
//! alive (dropping it lifts the check). This is conservative: a *fresh* reference to a handle
//! that now sits at the same address is refused too while the stale one is still alive (take the
//! reference in a narrower scope, or drop the old one). With no nested reference alive, the
//! checks are one `Cell` read.

use std::fmt;
use std::ops::Deref;

use crate::engine::nested_refs::NestedRefs;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::tx::Transaction;

/// A reference to a handle stored inside another persistent structure (an element of a
/// `PVec<PString>`, a value of a `PHashMap<u64, PVec<u64>>`, ...), valid until that structure
/// changes. It dereferences to the handle (`&T`), so the handle's methods are called on it
/// directly.
///
/// Any change of the structure it was taken from may move or discard the handle; after one,
/// this reference is **stale**: every write through it (and through references taken through
/// it) fails with [`Error::StaleReference`], never returning `Ok` with the change lost. Take
/// the reference again after the change. A stale reference also makes writes to a handle that
/// now sits at the same address fail while it is alive: drop it (or let its scope end) first.
/// See [`Transaction::nested`].
pub struct Nested<'t, T: ?Sized> {
    value: &'t T,
    refs: &'t NestedRefs,
    id: u64,
}

impl<T: ?Sized> Deref for Nested<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: ?Sized> Drop for Nested<'_, T> {
    fn drop(&mut self) {
        self.refs.unpin(self.id);
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Nested<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<'t, T: ?Sized> Nested<'t, T> {
    /// The plain reference, no longer tracked: a write through it after its container changed
    /// is **not** detected. For passing to code that takes `&T` within one statement; prefer
    /// `&*nested`, which keeps the guard alive and tracked.
    pub fn untracked(this: &Self) -> &'t T {
        this.value
    }
}

impl<'p> Transaction<'p> {
    /// Registers `value`, a handle stored inside the persistent structure `container` (whose
    /// handle is at `container`'s address), as a reference handed out to the caller, and
    /// returns it as a [`Nested`] guard. A collection that stores handles returns these from its
    /// `get_ref`-style methods, and calls [`invalidate_nested`](Transaction::invalidate_nested)
    /// with itself before any change that may move or discard its nested handles.
    pub fn nested<'t, C: ?Sized, T: ?Sized>(&'t self, container: &C, value: &'t T) -> Nested<'t, T> {
        let refs = self.nested_refs();
        let id = refs.pin(
            value as *const T as *const u8 as usize,
            std::mem::size_of_val(value),
            container as *const C as *const u8 as usize,
        );
        Nested { value, refs, id }
    }

    /// Marks stale every [`Nested`] reference taken from `container` (and those taken through
    /// them): call it before a change of `container` that may move or discard the handles it
    /// stores. Costs nothing when no nested reference is alive.
    pub fn invalidate_nested<C: ?Sized>(&self, container: &C) {
        self.nested_refs()
            .invalidate(container as *const C as *const u8 as usize);
    }

    /// Fails with [`Error::StaleReference`] if `handle` lies inside the bytes of a stale
    /// [`Nested`] reference that is still alive: a write through `handle` would change a handle
    /// its container has moved or discarded. Every mutating method of ptm's cells and of the
    /// collections calls it first. One `Cell` read when no stale reference is alive.
    ///
    /// # Errors
    ///
    /// [`Error::StaleReference`].
    pub fn check_live<C: ?Sized>(&self, handle: &C) -> Result<()> {
        self.check_live_addr(handle as *const C as *const u8 as usize)
    }

    #[inline]
    pub(crate) fn check_live_addr(&self, addr: usize) -> Result<()> {
        self.nested_refs().check(addr)
    }
}
