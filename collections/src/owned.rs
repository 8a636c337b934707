//! Values a collection can hold: [`PValue`] (anything `Persistent`, and what it owns) and
//! [`PHandle`] (a collection handle stored inside another collection).

use ptm::{Persistent, Result, Transaction};

use crate::{PBTreeMap, PBox, PHashMap, PQueue, PString, PVec};

/// A value a collection can hold: every `Persistent + Copy` type (owning nothing), and the
/// collection handles of this crate ([`PString`], [`PVec`], [`PHashMap`], [`PQueue`],
/// [`PBox`], [`PBTreeMap`]), which own heap blocks.
///
/// A collection that discards a value (`pop_free`, `remove_free`, `truncate`, `clear`, `free`)
/// calls [`free_owned`](PValue::free_owned) on it first when [`OWNS`](PValue::OWNS) is true, so
/// dropping a `PVec<PString>` frees every string's buffer too.
///
/// Implement it for your own persistent struct of handles (and [`PHandle`] as well, to store it
/// in a `PVec` or as a `PHashMap` value):
///
/// ```
/// use ptm::{Persistent, Result, Transaction};
/// use ptm_collections::{PHandle, PString, PVec, PValue};
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct User {
///     name: PString,
///     scores: PVec<u64>,
/// }
///
/// impl PValue for User {
///     const OWNS: bool = true;
///     unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
///         // SAFETY: `self` is being discarded, so are its fields.
///         unsafe {
///             self.name.free_owned(tx)?;
///             self.scores.free_owned(tx)
///         }
///     }
/// }
///
/// // SAFETY: two handles: every byte is inside `PCell`s, all-zero is two empty handles
/// // owning nothing, `!Sync` (cells), and no block records where the handles are.
/// unsafe impl PHandle for User {}
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     users: PVec<User>,
/// }
///
/// # fn main() -> Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let pool = ptm::Pool::<Root>::create(dir.path().join("u.pool"), 8 << 20, &Default::default())?;
/// pool.transaction(|tx, r| {
///     let u = r.users.push_new(tx)?;
///     u.name.set(tx, "ada")?;
///     u.scores.extend(tx, [3, 1, 4])?;
///     Ok::<_, ptm::Error>(())
/// })?;
/// pool.transaction(|tx, r| {
///     let u = r.users.get_ref(tx, 0)?.expect("pushed");
///     assert_eq!(u.name.as_string(tx)?, "ada");
///     // Frees the string's and the vector's buffers too.
///     r.users.pop_free(tx)
/// })?;
/// # Ok(()) }
/// ```
pub trait PValue: Persistent {
    /// Whether values of this type may own heap blocks (when false, `free_owned` is a no-op and
    /// collections skip it).
    const OWNS: bool;

    /// Frees (at commit) every heap block this value owns, recursively, **without writing the
    /// value itself**: it is called on values their collection is discarding, so that removing
    /// or clearing an outer collection costs no drain per nested handle (frees only append
    /// deferred records, which the outer operation's single snapshot drain makes durable).
    ///
    /// To empty a handle that stays in use, call its own `clear` or `free` instead.
    ///
    /// # Safety
    ///
    /// The caller discards the value in this transaction: unless the transaction rolls back,
    /// its bytes are never used as a value again (they lie past a collection's length, in a
    /// vacated map slot, or in a freed block), because they still designate the freed blocks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted pointer, and the errors
    /// of walking corrupted collections.
    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()>;
}

impl<T: Persistent + Copy> PValue for T {
    const OWNS: bool = false;

    unsafe fn free_owned(&self, _tx: &Transaction<'_>) -> Result<()> {
        Ok(())
    }
}

/// A handle that a collection stores **in place**: [`PVec::push_new`], [`PVec::get_ref`],
/// [`PHashMap::get_or_insert_new`] and [`PHashMap::get_ref`] hand out `&T` into the pool, and
/// the collection moves it by copying its bytes (growth) and creates one by zeroing bytes.
///
/// # Safety
///
/// Implement it only for a type where:
/// - every byte is inside a [`PCell`](ptm::PCell) (so shared references to it may coexist with
///   the collection's writes through cells, and every change is logged);
/// - the all-zero bit pattern is a valid, empty value that owns nothing;
/// - it is `!Sync` (any type made of `PCell`s is), so a `&T` stays on the transaction's thread;
/// - it is position-independent: copying its bytes elsewhere and zeroing the original is a valid
///   move (no block it owns records where the handle is).
///
/// Collections of handles are `!Sync` themselves:
///
/// ```compile_fail,E0277
/// fn sync<T: Sync>() {}
/// sync::<ptm_collections::PVec<ptm_collections::PString>>();
/// ```
pub unsafe trait PHandle: PValue {}

impl PValue for PString {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.release(tx) }
    }
}

// SAFETY: `repr(transparent)` over a `PVec<u8>` (three `PCell`s); zero is the empty string.
unsafe impl PHandle for PString {}

impl<T: PValue> PValue for PVec<T> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.release(tx) }
    }
}

// SAFETY: three `PCell`s (buffer, length, capacity); zero is the empty vector; the buffer does
// not point back at the handle.
unsafe impl<T: PValue> PHandle for PVec<T> {}

impl<K: Persistent + Copy, V: PValue> PValue for PHashMap<K, V> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.release(tx) }
    }
}

// SAFETY: four `PCell`s and a zero-sized marker; zero is the empty map (null table).
unsafe impl<K: Persistent + Copy, V: PValue> PHandle for PHashMap<K, V> {}

impl<T: Persistent + Copy> PValue for PQueue<T> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.release(tx) }
    }
}

// SAFETY: four `PCell`s; zero is the empty queue (capacity 0).
unsafe impl<T: Persistent + Copy> PHandle for PQueue<T> {}

impl<T: Persistent + Copy> PValue for PBox<T> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.release(tx) }
    }
}

// SAFETY: one `PCell` of a pointer; zero is the empty box.
unsafe impl<T: Persistent + Copy> PHandle for PBox<T> {}

impl<K: Persistent + Copy + Ord, V: Persistent + Copy> PValue for PBTreeMap<K, V> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // The tree's values are `Copy` (they own nothing): freeing its nodes frees everything.
        for off in self.node_offsets(tx)? {
            tx.free_bytes(off)?;
        }
        Ok(())
    }
}

// SAFETY: two `PCell`s and a zero-sized marker; zero is the empty tree (null root).
unsafe impl<K: Persistent + Copy + Ord, V: Persistent + Copy> PHandle for PBTreeMap<K, V> {}
