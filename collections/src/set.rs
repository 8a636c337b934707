//! [`PHashSet`] and [`PBTreeSet`]: the persistent `HashSet` and `BTreeSet`, thin wrappers over
//! [`PHashMap`] and [`PBTreeMap`] whose every value is one zero byte.

use std::fmt;
use std::mem::size_of;
use std::ops::RangeBounds;

use ptm::{Persistent, Result, Transaction};

use crate::btree::{PBTreeMap, Range};
use crate::map::{MapIter, PHashMap};
use crate::{AsKey, PHandle, PKey, POrdKey, PValue};

/// What a set stores as each entry's value: one byte, always 0 (a map's values must not be
/// zero-sized: their arrays are laid out by size).
type Unit = u8;

/// A persistent hash set (a pool's `HashSet<K>`): a [`PHashMap<K, u8>`](PHashMap) whose values
/// are never read, so it has the map's layout (a 32-byte handle; §13.4 of the design, one value
/// byte per slot), its seeded hashing, its costs and its drains: `insert` and `remove` cost
/// **2** drains, `contains`, `len` and iteration 0.
///
/// Keys are [`PKey`]s: `Copy` types, [`PString`](crate::PString) (looked up by `&str`) and
/// `PVec<T>` (by `&[T]`). Iteration is in table order, as `HashSet`'s (no order promised).
///
/// ```
/// use ptm::{Persistent, Pool};
/// use ptm_collections::{PHashSet, PString};
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     seen: PHashSet<PString>,
/// }
///
/// # fn main() -> ptm::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let pool = Pool::<Root>::create(dir.path().join("s.pool"), 8 << 20, &Default::default())?;
/// pool.transaction(|tx, r| {
///     assert!(r.seen.insert(tx, "ada")?);
///     assert!(!r.seen.insert(tx, "ada")?);
///     assert!(r.seen.contains(tx, "ada")?);
///     assert!(r.seen.remove(tx, "ada")?);
///     assert!(r.seen.is_empty(tx));
///     Ok::<_, ptm::Error>(())
/// })?;
/// # Ok(()) }
/// ```
///
/// A map with a zero-sized value (`PHashMap<K, ()>`) is rejected when the root type is
/// checked (`cargo check` already fails, naming this type):
///
/// ```compile_fail
/// use ptm::Persistent;
/// use ptm_collections::PHashMap;
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     seen: PHashMap<u64, ()>,
/// }
/// ```
#[repr(transparent)]
pub struct PHashSet<K> {
    map: PHashMap<K, Unit>,
}

const _: () = assert!(size_of::<PHashSet<u64>>() == 32);

// SAFETY: `repr(transparent)` over a `PHashMap<K, u8>`, which is `Persistent` (its layout check,
// rejecting a zero-sized `K`, is forwarded).
unsafe impl<K: Persistent> Persistent for PHashSet<K> {
    const __LAYOUT_CHECK: () = <PHashMap<K, Unit> as Persistent>::__LAYOUT_CHECK;
}

impl<K: PKey> PHashSet<K> {
    /// Number of keys.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.map.len(tx)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.map.is_empty(tx)
    }

    /// Number of slots over all segments (0 before the first insert).
    pub fn capacity(&self, tx: &Transaction<'_>) -> u64 {
        self.map.capacity(tx)
    }

    /// Whether `k` is present (`&7` for a `u64` key, `"ada"` for a `PString` key). 0 drains.
    ///
    /// # Errors
    ///
    /// As [`PHashMap::contains_key`].
    pub fn contains(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        self.map.contains_key(tx, k)
    }

    /// Adds `k`; `true` when it was absent (as `HashSet::insert`). 2 drains when it adds, 0
    /// when present (nothing is written).
    ///
    /// # Errors
    ///
    /// As [`PHashMap::insert`].
    pub fn insert(&self, tx: &Transaction<'_>, k: impl AsKey<K>) -> Result<bool> {
        if self.map.contains_key(tx, k.as_key())? {
            return Ok(false);
        }
        self.map.insert(tx, k, 0)?;
        Ok(true)
    }

    /// Adds every key of `items` (`HashSet::extend`): one [`insert`](PHashSet::insert) each, so
    /// a key already present (or met earlier in `items`) writes nothing.
    ///
    /// # Errors
    ///
    /// As [`insert`](PHashSet::insert). On an error, the keys before the failing one are in the
    /// set, none after it.
    pub fn extend<A: AsKey<K>>(
        &self,
        tx: &Transaction<'_>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<()> {
        items.into_iter().try_for_each(|k| self.insert(tx, k).map(drop))
    }

    /// Removes `k`, freeing what it owns; `true` when it was present. 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// As [`PHashMap::remove`].
    pub fn remove(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        Ok(self.map.remove(tx, k)?.is_some())
    }

    /// The keys, in table order (copies of `Copy` keys, references to `PString` keys).
    ///
    /// # Errors
    ///
    /// As [`PHashMap::keys`].
    pub fn to_vec<'a>(&'a self, tx: &'a Transaction<'_>) -> Result<Vec<K::Ref<'a>>> {
        self.map.keys(tx)
    }

    /// Iterates over the keys in table order; see [`PHashMap::iter`] for changes while
    /// iterating.
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> SetIter<'a, K> {
        SetIter(self.map.iter(tx))
    }

    /// Removes every key and frees the table and what the keys own (at commit). 2 drains.
    ///
    /// # Errors
    ///
    /// As [`PHashMap::clear`].
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        self.map.clear(tx)
    }

    /// Frees everything the set owns (the same as [`clear`](PHashSet::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PHashSet::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        self.map.free(tx)
    }

    /// The pool offsets of the set's table blocks, as [`PHashMap::block_offsets`].
    ///
    /// # Errors
    ///
    /// As [`PHashMap::block_offsets`].
    pub fn block_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        self.map.block_offsets(tx)
    }

    /// Verifies the set's table, as [`PHashMap::check_invariants`].
    ///
    /// # Errors
    ///
    /// As [`PHashMap::check_invariants`].
    pub fn check_invariants(&self, tx: &Transaction<'_>) -> Result<()> {
        self.map.check_invariants(tx)
    }

    /// The table's hash seed, as [`PHashMap::hash_seed`].
    #[doc(hidden)]
    pub fn hash_seed(&self, tx: &Transaction<'_>) -> u64 {
        self.map.hash_seed(tx)
    }

    /// Sets the hash seed of an empty set, as [`PHashMap::set_hash_seed`].
    ///
    /// # Errors
    ///
    /// As [`PHashMap::set_hash_seed`].
    #[doc(hidden)]
    pub fn set_hash_seed(&self, tx: &Transaction<'_>, seed: u64) -> Result<()> {
        self.map.set_hash_seed(tx, seed)
    }
}

impl<K: PKey> PValue for PHashSet<K> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract: the set, so its map, is being discarded.
        unsafe { self.map.free_owned(tx) }
    }
}

// SAFETY: a `PHashMap` handle (four `PCell`s): zero is the empty set.
unsafe impl<K: PKey> PHandle for PHashSet<K> {}

impl<K> fmt::Debug for PHashSet<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PHashSet { .. }")
    }
}

/// Iterator over a [`PHashSet`]'s keys; see [`PHashSet::iter`]. Stops at the first error (only
/// possible on a corrupted set), which dooms the transaction (see the crate docs, "Iteration
/// errors").
pub struct SetIter<'a, K>(MapIter<'a, K, Unit>);

impl<K> SetIter<'_, K> {
    /// The error that ended the iteration early, if any (only on a corrupted set).
    pub fn error(&self) -> Option<&ptm::Error> {
        self.0.error()
    }
}

impl<'a, K: PKey> Iterator for SetIter<'a, K> {
    type Item = K::Ref<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, _)| k)
    }
}

impl<K> fmt::Debug for SetIter<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SetIter").field(&self.0).finish()
    }
}

/// A persistent ordered set (a pool's `BTreeSet<K>`): a [`PBTreeMap<K, u8>`](PBTreeMap) whose
/// values are never read, with the map's layout (a 16-byte handle, §13.2), costs and drains:
/// `insert` and `remove` cost **2** drains, `contains`, `len`, iteration and ranges 0.
///
/// Keys are [`POrdKey`]s: `Copy + Ord` types, [`PString`](crate::PString) (ordered as `str`,
/// looked up by `&str`) and `PVec<u8>`. Iteration is in key order.
///
/// ```
/// use ptm::{Persistent, Pool};
/// use ptm_collections::PBTreeSet;
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     ids: PBTreeSet<u64>,
/// }
///
/// # fn main() -> ptm::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let pool = Pool::<Root>::create(dir.path().join("b.pool"), 8 << 20, &Default::default())?;
/// pool.transaction(|tx, r| {
///     for k in [5, 1, 3] {
///         r.ids.insert(tx, k)?;
///     }
///     assert_eq!(r.ids.iter(tx)?.collect::<Vec<_>>(), [1, 3, 5]);
///     assert_eq!(r.ids.range(tx, 2..)?.collect::<Vec<_>>(), [3, 5]);
///     Ok::<_, ptm::Error>(())
/// })?;
/// # Ok(()) }
/// ```
///
/// A map with a zero-sized value (the set a std user would write as `BTreeMap<K, ()>`) is
/// rejected when the root type is checked (`cargo check` already fails, naming this type):
///
/// ```compile_fail
/// use ptm::Persistent;
/// use ptm_collections::PBTreeMap;
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     ids: PBTreeMap<u64, ()>,
/// }
/// ```
#[repr(transparent)]
pub struct PBTreeSet<K> {
    map: PBTreeMap<K, Unit>,
}

const _: () = assert!(size_of::<PBTreeSet<u64>>() == 16);

// SAFETY: `repr(transparent)` over a `PBTreeMap<K, u8>`, which is `Persistent` (its layout
// check, rejecting a zero-sized `K`, is forwarded).
unsafe impl<K: Persistent> Persistent for PBTreeSet<K> {
    const __LAYOUT_CHECK: () = <PBTreeMap<K, Unit> as Persistent>::__LAYOUT_CHECK;
}

impl<K: POrdKey> PBTreeSet<K> {
    /// Number of keys.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.map.len(tx)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.map.is_empty(tx)
    }

    /// Whether `k` is present (`&7`, `"ada"`). 0 drains.
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::contains_key`].
    pub fn contains(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        self.map.contains_key(tx, k)
    }

    /// Adds `k`; `true` when it was absent (as `BTreeSet::insert`). 2 drains when it adds, 0
    /// when present (nothing is written).
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::insert`].
    pub fn insert(&self, tx: &Transaction<'_>, k: impl AsKey<K>) -> Result<bool> {
        if self.map.contains_key(tx, k.as_key())? {
            return Ok(false);
        }
        self.map.insert(tx, k, 0)?;
        Ok(true)
    }

    /// Adds every key of `items` (`BTreeSet::extend`): one [`insert`](PBTreeSet::insert) each, so
    /// a key already present (or met earlier in `items`) writes nothing.
    ///
    /// # Errors
    ///
    /// As [`insert`](PBTreeSet::insert). On an error, the keys before the failing one are in the
    /// set, none after it.
    pub fn extend<A: AsKey<K>>(
        &self,
        tx: &Transaction<'_>,
        items: impl IntoIterator<Item = A>,
    ) -> Result<()> {
        items.into_iter().try_for_each(|k| self.insert(tx, k).map(drop))
    }

    /// Removes `k`, freeing what it owns; `true` when it was present. 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::remove`].
    pub fn remove(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        Ok(self.map.remove(tx, k)?.is_some())
    }

    /// Copies every key, in order (`String` for a `PString` key).
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::to_vec`].
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<K::Owned>> {
        Ok(self.map.to_vec(tx)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Iterates lazily over the keys in order, from either end (as [`PBTreeMap::iter`]).
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::iter`].
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> Result<SetRange<'a, K>> {
        Ok(SetRange(self.map.iter(tx)?))
    }

    /// Iterates lazily over the keys in `range`, in order, as [`PBTreeMap::range`] (an empty
    /// range where std panics on reversed bounds).
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::range`].
    pub fn range<'a, 'q, R: RangeBounds<K::RangeKey<'q>>>(
        &'a self,
        tx: &'a Transaction<'a>,
        range: R,
    ) -> Result<SetRange<'a, K>> {
        Ok(SetRange(self.map.range(tx, range)?))
    }

    /// Removes every key and frees the nodes and what the keys own (at commit). 2 drains.
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::clear`].
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        self.map.clear(tx)
    }

    /// Frees everything the set owns (the same as [`clear`](PBTreeSet::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PBTreeSet::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        self.map.free(tx)
    }

    /// The pool offsets of the set's nodes, as [`PBTreeMap::node_offsets`].
    ///
    /// # Errors
    ///
    /// As [`PBTreeMap::node_offsets`].
    pub fn node_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        self.map.node_offsets(tx)
    }

    /// Verifies the tree (key order, node fill, depth, lengths), as the map's check.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptCollection`](ptm::Error::CorruptCollection) naming what is wrong.
    pub fn check_invariants(&self, tx: &Transaction<'_>) -> Result<()> {
        self.map
            .check_invariants(tx)
            .map(drop)
            .map_err(|what| crate::raw::corrupt("PBTreeSet", 0, what))
    }
}

impl<K: POrdKey> PValue for PBTreeSet<K> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract: the set, so its map, is being discarded.
        unsafe { self.map.free_owned(tx) }
    }
}

// SAFETY: a `PBTreeMap` handle (two `PCell`s): zero is the empty set.
unsafe impl<K: POrdKey> PHandle for PBTreeSet<K> {}

impl<K> fmt::Debug for PBTreeSet<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PBTreeSet { .. }")
    }
}

/// Iterator over the keys of a [`PBTreeSet`] in a range; see [`PBTreeSet::range`].
pub struct SetRange<'a, K: POrdKey>(Range<'a, K, Unit>);

impl<K: POrdKey> SetRange<'_, K> {
    /// The error that ended the iteration early, if any (only on a corrupted tree), as
    /// [`Range::error`].
    pub fn error(&self) -> Option<&ptm::Error> {
        self.0.error()
    }
}

impl<'a, K: POrdKey> Iterator for SetRange<'a, K> {
    type Item = K::Ref<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, _)| k)
    }
}

impl<K: POrdKey> DoubleEndedIterator for SetRange<'_, K> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, _)| k)
    }
}

impl<K: POrdKey> fmt::Debug for SetRange<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SetRange").field(&self.0).finish()
    }
}
