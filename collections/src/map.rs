//! [`PHashMap`]: an open-addressing hash table in the pool.

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;

use ptm::pmem_core::bytes_of;
use ptm::{PCell, PPtr, Persistent, Result, Transaction};

use crate::raw::{self, Span};
use crate::{PHandle, PValue};

const EMPTY: u8 = 0;
const FULL: u8 = 1;
/// Any control byte other than `EMPTY` and `FULL` is a tombstone.
const TOMB: u8 = 2;
const MIN_CAP: u64 = 8;

/// A persistent hash map (a pool's `HashMap<K, V>`): linear probing over one heap block that
/// holds `cap` control bytes, then `cap` keys, then `cap` values; removals leave tombstones,
/// purged when the table is rebuilt. The table grows (doubling) when live entries plus
/// tombstones would exceed 3/4 of the capacity.
///
/// **Keys are compared and hashed by their bytes** (they are `Persistent`, so they have no
/// padding): two keys are equal exactly when their bytes are (for floats, `-0.0 != 0.0` and a NaN
/// equals itself). The hash function is fixed and part of the on-media format, so any build and
/// any process finds the keys again.
///
/// Values are `Copy` (read and written by copy: [`get`](PHashMap::get),
/// [`insert`](PHashMap::insert), ...) or nested collection handles ([`PHandle`]s such as
/// [`PString`](crate::PString) or `PVec<u64>`, created in place by
/// [`get_or_insert_new`](PHashMap::get_or_insert_new) and reached by reference through
/// [`get_ref`](PHashMap::get_ref)); [`remove_free`](PHashMap::remove_free) and
/// [`clear`](PHashMap::clear) free what the values own. Keys are `Copy`.
///
/// Drains: `insert` (new key or update), `remove`, `remove_free`, `get_or_insert_with` and
/// `get_or_insert_new` (when they insert) cost **2**, growth included; `get`, `get_ref`,
/// `contains_key`, `len` and iteration cost 0.
///
/// `!Sync` like [`PCell`]: share it between threads under a [`PMutex`](ptm::PMutex).
#[repr(C)]
pub struct PHashMap<K, V> {
    table: PCell<PPtr<u8>>,
    cap: PCell<u64>,
    len: PCell<u64>,
    /// Live entries plus tombstones.
    used: PCell<u64>,
    _kv: PhantomData<(K, V)>,
}

const _: () = assert!(size_of::<PHashMap<u64, u64>>() == 32);

// SAFETY: `repr(C)` of four 8-byte `PCell`s and a zero-sized marker: no padding whatever `K` and
// `V` are; every bit pattern is a valid handle (the capacity is checked to be a power of two and
// the table pointer is checked by `Transaction::deref` before any access); no virtual address.
unsafe impl<K: Persistent, V: Persistent> Persistent for PHashMap<K, V> {}

/// Byte offsets of the key and value arrays in a table of `cap` slots, and its total size.
fn geometry<K, V>(cap: u64) -> Result<(u64, u64, u64)> {
    let ko = raw::align_for::<K>(cap);
    let vo = raw::align_for::<V>(
        ko.checked_add(raw::array_bytes::<K>(cap)?)
            .ok_or_else(|| raw::out_of_bounds(ko, cap))?,
    );
    let end = vo
        .checked_add(raw::array_bytes::<V>(cap)?)
        .ok_or_else(|| raw::out_of_bounds(vo, cap))?;
    Ok((ko, vo, end))
}

/// A table and the cells of one of its slots.
#[derive(Clone, Copy)]
struct Table {
    block: PPtr<u8>,
    cap: u64,
    ko: u64,
    vo: u64,
}

/// Where a key is, or where it would go.
enum Probe {
    Found(u64),
    /// Not present; the slot to insert at and whether it was a tombstone.
    Vacant(u64, bool),
    /// Not present and no free slot (only in a table full of tombstones or corrupted).
    Full,
}

impl<K: Persistent + Copy, V: Persistent> PHashMap<K, V> {
    const SIZES_OK: () = assert!(
        size_of::<K>() > 0 && size_of::<V>() > 0,
        "PHashMap<K, V> needs non-zero-sized K and V (use u8 as a unit value)"
    );

    fn current(&self, tx: &Transaction<'_>) -> Result<Option<Table>> {
        let () = Self::SIZES_OK;
        let block = self.table.get(tx);
        let cap = self.cap.get(tx);
        if block.is_null() || cap == 0 {
            return Ok(None);
        }
        if !cap.is_power_of_two() {
            return Err(raw::out_of_bounds(block.offset(), cap));
        }
        let (ko, vo, _) = geometry::<K, V>(cap)?;
        Ok(Some(Table { block, cap, ko, vo }))
    }

    // The accessors below share one contract: `t` is this map's current table (live: freed only
    // together with storing a new pointer into `table`, and then readable until commit), or a
    // fresh table of this transaction; `i < t.cap`; the map is `!Sync` (or guarded by a lock the
    // transaction holds), so the table is reached only by this thread, through cells.

    fn ctrl<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<&'t PCell<u8>> {
        // SAFETY: see the contract above.
        unsafe { raw::cell::<u8>(tx, t.block, i) }
    }

    fn key<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<&'t PCell<K>> {
        // SAFETY: see the contract above.
        unsafe { raw::cell::<K>(tx, t.block, t.ko + raw::elem_off::<K>(i)?) }
    }

    /// Byte offset of slot `i`'s value in the table.
    fn val_off(t: Table, i: u64) -> Result<u64> {
        Ok(t.vo + raw::elem_off::<V>(i)?)
    }

    fn val<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<&'t PCell<V>> {
        // SAFETY: see the contract above.
        unsafe { raw::cell::<V>(tx, t.block, Self::val_off(t, i)?) }
    }

    /// A reference to slot `i`'s value.
    ///
    /// # Safety
    ///
    /// The contract above, and `V` is a [`PHandle`] (all cells) or the value is being discarded.
    unsafe fn val_ref<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<&'t V> {
        // SAFETY: see the contract above and this function's.
        unsafe { raw::at::<V>(tx, t.block, Self::val_off(t, i)?) }
    }

    fn probe(tx: &Transaction<'_>, t: Table, k: &K) -> Result<Probe> {
        let kb = bytes_of(k);
        let mask = t.cap - 1;
        let mut i = raw::hash_bytes(kb) & mask;
        let mut tomb = None;
        for _ in 0..t.cap {
            match Self::ctrl(tx, t, i)?.get(tx) {
                EMPTY => {
                    return Ok(match tomb {
                        Some(s) => Probe::Vacant(s, true),
                        None => Probe::Vacant(i, false),
                    })
                }
                FULL => {
                    if bytes_of(&Self::key(tx, t, i)?.get(tx)) == kb {
                        return Ok(Probe::Found(i));
                    }
                }
                _ => {
                    tomb.get_or_insert(i);
                }
            }
            i = (i + 1) & mask;
        }
        Ok(match tomb {
            Some(s) => Probe::Vacant(s, true),
            None => Probe::Full,
        })
    }

    /// The slot holding `k`, if any.
    fn find(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<(Table, u64)>> {
        let Some(t) = self.current(tx)? else {
            return Ok(None);
        };
        match Self::probe(tx, t, k)? {
            Probe::Found(i) => Ok(Some((t, i))),
            _ => Ok(None),
        }
    }

    /// Number of entries.
    pub fn len(&self, tx: &Transaction<'_>) -> u64 {
        self.len.get(tx)
    }

    /// Whether the map is empty.
    pub fn is_empty(&self, tx: &Transaction<'_>) -> bool {
        self.len(tx) == 0
    }

    /// Number of slots of the table (0 before the first insert).
    pub fn capacity(&self, tx: &Transaction<'_>) -> u64 {
        self.cap.get(tx)
    }

    /// Whether `k` is present.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a table pointer outside the pool, a capacity that is not a
    /// power of two).
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K) -> Result<bool> {
        Ok(self.find(tx, k)?.is_some())
    }

    /// The keys, in table order.
    ///
    /// # Errors
    ///
    /// As [`contains_key`](PHashMap::contains_key).
    pub fn keys(&self, tx: &Transaction<'_>) -> Result<Vec<K>> {
        let (mut out, mut from) = (Vec::new(), 0);
        while let Some((t, i)) = self.next_full(tx, &mut from)? {
            out.push(Self::key(tx, t, i)?.get(tx));
        }
        Ok(out)
    }

    /// The first full slot at or after `*from` in the current table (advancing `*from` past
    /// it), with that table.
    fn next_full(&self, tx: &Transaction<'_>, from: &mut u64) -> Result<Option<(Table, u64)>> {
        let Some(t) = self.current(tx)? else {
            return Ok(None);
        };
        while *from < t.cap {
            let i = *from;
            *from += 1;
            if Self::ctrl(tx, t, i)?.get(tx) == FULL {
                return Ok(Some((t, i)));
            }
        }
        Ok(None)
    }

    /// The pool offset of the table, if any (for reachability checks).
    pub fn table_offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let b = self.table.get(tx);
        (!b.is_null()).then(|| b.offset())
    }

    /// Marks the full slot `i` of `t` vacant (the entry's value is dropped as is).
    fn vacate(&self, tx: &Transaction<'_>, t: Table, i: u64) -> Result<()> {
        let ctrl = Self::ctrl(tx, t, i)?;
        // If the next slot is empty, no probe sequence runs through this one: mark it empty.
        let next_empty = Self::ctrl(tx, t, (i + 1) & (t.cap - 1))?.get(tx) == EMPTY;
        tx.snapshot(|b| {
            b.add(ctrl)?;
            b.add(&self.len)?;
            b.add(&self.used)
        })?;
        self.len.set(tx, self.len.get(tx).saturating_sub(1))?;
        if next_empty {
            ctrl.set(tx, EMPTY)?;
            self.used.set(tx, self.used.get(tx).saturating_sub(1))
        } else {
            ctrl.set(tx, TOMB)
        }
    }
}

impl<K: Persistent + Copy, V: PValue> PHashMap<K, V> {
    /// Inserts a key known to be absent: grows if needed, logs the slot (unless the table is
    /// fresh), lets `fill` write the value at the given byte offset of the table (logged or
    /// fresh), then marks the slot full. One snapshot drain. Returns the table and the slot.
    fn insert_new(
        &self,
        tx: &Transaction<'_>,
        k: K,
        fill: impl FnOnce(PPtr<u8>, u64) -> Result<()>,
    ) -> Result<(Table, u64)> {
        let (len, used, cap) = (self.len.get(tx), self.used.get(tx), self.cap.get(tx));
        let need_grow =
            self.current(tx)?.is_none() || used.saturating_add(1).saturating_mul(4) > cap.saturating_mul(3);
        let (t, rebuilt) = if need_grow {
            // Purge tombstones in place when the live entries leave room, else double.
            let mut new_cap = cap.max(MIN_CAP);
            while len.saturating_add(1).saturating_mul(2) > new_cap {
                new_cap = new_cap
                    .checked_mul(2)
                    .ok_or_else(|| raw::out_of_bounds(new_cap, 2))?;
            }
            (self.rebuild(tx, new_cap)?, true)
        } else {
            (self.current(tx)?.expect("checked above"), false)
        };
        let (slot, was_tomb) = match Self::probe(tx, t, &k)? {
            Probe::Vacant(i, tomb) => (i, tomb),
            Probe::Found(_) | Probe::Full => return Err(raw::out_of_bounds(t.block.offset(), t.cap)),
        };
        let (ctrl, key, val) = (
            Self::ctrl(tx, t, slot)?,
            Self::key(tx, t, slot)?,
            Self::val(tx, t, slot)?,
        );
        if !rebuilt {
            tx.snapshot(|b| {
                b.add(ctrl)?;
                b.add(key)?;
                b.add(val)?;
                b.add(&self.len)?;
                b.add(&self.used)
            })?;
        }
        fill(t.block, Self::val_off(t, slot)?)?;
        key.set(tx, k)?;
        ctrl.set(tx, FULL)?;
        self.len.set(tx, self.len.get(tx).saturating_add(1))?;
        if !was_tomb {
            self.used.set(tx, self.used.get(tx).saturating_add(1))?;
        }
        Ok((t, slot))
    }

    /// Moves every entry into a fresh table of `new_cap` slots (freeing the old one at commit),
    /// values by bytes. Logs the header in one batch; the fresh table is new memory, which ptm
    /// never logs, so after the batch every store of the current operation is covered. When
    /// values own blocks, the old table's value array is logged in the same batch and the moved
    /// values' old copies are zeroed (a stale `&V` then sees an empty handle).
    fn rebuild(&self, tx: &Transaction<'_>, new_cap: u64) -> Result<Table> {
        let old = self.current(tx)?;
        let (ko, vo, size) = geometry::<K, V>(new_cap)?;
        let block = raw::alloc_block(tx, size)?;
        if let Some(o) = old {
            tx.free(o.block)?;
        }
        let t = Table {
            block,
            cap: new_cap,
            ko,
            vo,
        };
        tx.snapshot(|b| {
            b.add(&self.table)?;
            b.add(&self.cap)?;
            b.add(&self.len)?;
            if let (Some(o), true) = (old, V::OWNS) {
                // SAFETY: the old table's value array (freed at commit, readable until then),
                // reached only through cells by this thread.
                b.add(&unsafe { Span::new(tx, o.block, o.vo, raw::array_bytes::<V>(o.cap)?)? })?;
            }
            // The fresh table needs no snapshot: ptm logged it as new memory at allocation.
            b.add(&self.used)
        })?;
        // Control bytes: all empty (`new_cap` is a power of two >= 8, so whole u64 words).
        for w in 0..new_cap / 8 {
            // SAFETY: inside the fresh table (`ctrl` is its first `new_cap` bytes, and it starts
            // 64-byte aligned); reached only through cells by this thread.
            unsafe { raw::write::<u64>(tx, block, w, 0)? };
        }
        let vsize = size_of::<V>() as u64;
        let mut n = 0;
        if let Some(o) = old {
            for i in 0..o.cap {
                if Self::ctrl(tx, o, i)?.get(tx) != FULL {
                    continue;
                }
                let k = Self::key(tx, o, i)?.get(tx);
                let Probe::Vacant(s, _) = Self::probe(tx, t, &k)? else {
                    // A duplicate or no room: only in a corrupted table.
                    return Err(raw::out_of_bounds(o.block.offset(), o.cap));
                };
                Self::ctrl(tx, t, s)?.set(tx, FULL)?;
                Self::key(tx, t, s)?.set(tx, k)?;
                let (from, to) = (Self::val_off(o, i)?, Self::val_off(t, s)?);
                // SAFETY: value slots of the old table (logged above when zeroed) and of the
                // fresh one, reached only through cells by this thread.
                unsafe {
                    raw::copy_bytes(tx, (o.block, from), (block, to), vsize)?;
                    if V::OWNS {
                        raw::zero_bytes(tx, o.block, from, vsize)?;
                    }
                }
                n += 1;
            }
        }
        self.table.set(tx, block)?;
        self.cap.set(tx, new_cap)?;
        self.len.set(tx, n)?;
        self.used.set(tx, n)?;
        Ok(t)
    }

    /// Removes `k`, freeing (at commit) everything its value owns; `false` when absent.
    /// 2 drains (0 when absent), whatever the value owns.
    ///
    /// # Errors
    ///
    /// As [`clear`](PHashMap::clear), and those of [`contains_key`](PHashMap::contains_key).
    pub fn remove_free(&self, tx: &Transaction<'_>, k: &K) -> Result<bool> {
        let Some((t, i)) = self.find(tx, k)? else {
            return Ok(false);
        };
        if V::OWNS {
            // SAFETY: the slot's value is discarded just below, in this transaction.
            unsafe { Self::val_ref(tx, t, i)?.free_owned(tx)? };
        }
        self.vacate(tx, t, i)?;
        Ok(true)
    }

    /// Frees the table and everything the values own, without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`]: the map is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        let mut from = 0;
        if V::OWNS {
            while let Some((t, i)) = self.next_full(tx, &mut from)? {
                // SAFETY: the whole map, so this value, is being discarded.
                unsafe { Self::val_ref(tx, t, i)?.free_owned(tx)? };
            }
        }
        let block = self.table.get(tx);
        if !block.is_null() {
            tx.free(block)?;
        }
        Ok(())
    }

    /// Removes every entry and frees the table and everything the values own (at commit).
    /// 2 drains, however deeply the values nest.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted table pointer, and
    /// logging errors.
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: the handle is emptied below, in this transaction.
        unsafe { self.release(tx)? };
        tx.snapshot(|b| {
            b.add(&self.table)?;
            b.add(&self.cap)?;
            b.add(&self.len)?;
            b.add(&self.used)
        })?;
        self.table.set(tx, PPtr::null())?;
        self.cap.set(tx, 0)?;
        self.len.set(tx, 0)?;
        self.used.set(tx, 0)
    }

    /// Frees everything the map owns (the same as [`clear`](PHashMap::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PHashMap::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        self.clear(tx)
    }
}

impl<K: Persistent + Copy, V: Persistent + Copy> PHashMap<K, V> {
    /// A copy of the value for `k`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a table pointer outside the pool, a capacity that is not a
    /// power of two).
    pub fn get(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        match self.find(tx, k)? {
            Some((t, i)) => Ok(Some(Self::val(tx, t, i)?.get(tx))),
            None => Ok(None),
        }
    }

    /// Inserts `k`, known to be absent, with value `v`.
    fn insert_copy(&self, tx: &Transaction<'_>, k: K, v: V) -> Result<()> {
        self.insert_new(tx, k, |block, off| {
            // SAFETY: the value slot `insert_new` hands to its `fill`: inside this map's table,
            // logged or fresh, reached only through cells by this thread.
            unsafe { raw::cell::<V>(tx, block, off)? }.set(tx, v)
        })?;
        Ok(())
    }

    /// Inserts or updates `k`; returns the previous value. 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, and those of
    /// [`get`](PHashMap::get).
    pub fn insert(&self, tx: &Transaction<'_>, k: K, v: V) -> Result<Option<V>> {
        if let Some((t, i)) = self.find(tx, &k)? {
            let cell = Self::val(tx, t, i)?;
            let old = cell.get(tx);
            cell.set(tx, v)?;
            return Ok(Some(old));
        }
        self.insert_copy(tx, k, v)?;
        Ok(None)
    }

    /// The value for `k`, inserting `f()` first if absent (2 drains when it inserts, 0 when not).
    ///
    /// # Errors
    ///
    /// As [`insert`](PHashMap::insert).
    pub fn get_or_insert_with(&self, tx: &Transaction<'_>, k: K, f: impl FnOnce() -> V) -> Result<V> {
        if let Some(v) = self.get(tx, &k)? {
            return Ok(v);
        }
        let v = f();
        self.insert_copy(tx, k, v)?;
        Ok(v)
    }

    /// Removes `k` and returns its value. 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// Logging errors, and those of [`get`](PHashMap::get).
    pub fn remove(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        let Some((t, i)) = self.find(tx, k)? else {
            return Ok(None);
        };
        let v = Self::val(tx, t, i)?.get(tx);
        self.vacate(tx, t, i)?;
        Ok(Some(v))
    }

    /// Iterates over copies of the entries, in table order. Each step rereads the table, so
    /// changing the map while iterating is memory-safe (entries may then be missed or repeated).
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> MapIter<'a, K, V> {
        MapIter { map: self, tx, i: 0 }
    }
}

/// Nested collections as values: a `PHashMap` whose values are handles
/// ([`PString`](crate::PString), [`PVec`](crate::PVec), your own [`PHandle`] structs).
///
/// References handed out (`&'t V`) live at most as long as the transaction borrow. An insert
/// that rebuilds the table (growth, or purging tombstones) moves every value to a new table, and
/// `remove_free` or `clear` discard them: a reference taken before then is **stale**, like a std
/// iterator after an insert. Using a stale reference is a logic error, but never undefined
/// behaviour: it points into memory that stays mapped and readable until commit; after a
/// rebuild the old copy reads as an empty handle and changes through it are lost (blocks it
/// allocates leak); after a removal, freeing through it fails with
/// [`Error::InvalidFree`](ptm::Error::InvalidFree). Take the reference again instead.
impl<K: Persistent + Copy, V: PHandle> PHashMap<K, V> {
    /// A reference to the value for `k`. 0 drains.
    ///
    /// # Errors
    ///
    /// As [`contains_key`](PHashMap::contains_key).
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, k: &K) -> Result<Option<&'t V>> {
        match self.find(tx, k)? {
            // SAFETY: a full slot of the current table; `V` is all cells.
            Some((t, i)) => unsafe { Self::val_ref(tx, t, i) }.map(Some),
            None => Ok(None),
        }
    }

    /// The value for `k`, inserting an empty handle (all-zero bytes) first if absent: the way to
    /// create a nested collection. 2 drains when it inserts (growth included: a rebuild moves the
    /// values by bytes and zeroes and logs their old copies), 0 when not.
    ///
    /// # Errors
    ///
    /// As [`insert`](PHashMap::insert).
    pub fn get_or_insert_new<'t>(&'t self, tx: &'t Transaction<'_>, k: K) -> Result<&'t V> {
        if let Some(v) = self.get_ref(tx, &k)? {
            return Ok(v);
        }
        let (t, slot) = self.insert_new(tx, k, |block, off| {
            // SAFETY: the value slot handed to `fill`: logged or fresh; zero is the empty handle.
            unsafe { raw::zero_bytes(tx, block, off, size_of::<V>() as u64) }
        })?;
        // SAFETY: the slot just filled, in the current table; `V` is all cells.
        unsafe { Self::val_ref(tx, t, slot) }
    }

    /// Iterates over the entries as `(key copy, value reference)`, in table order; see
    /// [`iter`](PHashMap::iter) for changes during iteration.
    pub fn iter_refs<'a>(&'a self, tx: &'a Transaction<'a>) -> MapRefs<'a, K, V> {
        MapRefs { map: self, tx, i: 0 }
    }
}

impl<K, V> fmt::Debug for PHashMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PHashMap { .. }")
    }
}

/// Iterator over copies of a [`PHashMap`]'s entries; see [`PHashMap::iter`]. Stops at the
/// first error (only possible on a corrupted map).
pub struct MapIter<'a, K, V> {
    map: &'a PHashMap<K, V>,
    tx: &'a Transaction<'a>,
    i: u64,
}

impl<K: Persistent + Copy, V: Persistent + Copy> Iterator for MapIter<'_, K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        let (t, i) = self.map.next_full(self.tx, &mut self.i).ok().flatten()?;
        let k = PHashMap::<K, V>::key(self.tx, t, i).ok()?.get(self.tx);
        let v = PHashMap::<K, V>::val(self.tx, t, i).ok()?.get(self.tx);
        Some((k, v))
    }
}

impl<K, V> fmt::Debug for MapIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter").field("slot", &self.i).finish()
    }
}

/// Iterator over a [`PHashMap`]'s entries as `(key copy, value reference)`; see
/// [`PHashMap::iter_refs`]. Stops at the first error (only possible on a corrupted map).
pub struct MapRefs<'a, K, V> {
    map: &'a PHashMap<K, V>,
    tx: &'a Transaction<'a>,
    i: u64,
}

impl<'a, K: Persistent + Copy, V: PHandle> Iterator for MapRefs<'a, K, V> {
    type Item = (K, &'a V);

    fn next(&mut self) -> Option<(K, &'a V)> {
        let (t, i) = self.map.next_full(self.tx, &mut self.i).ok().flatten()?;
        let k = PHashMap::<K, V>::key(self.tx, t, i).ok()?.get(self.tx);
        // SAFETY: a full slot of the current table; `V` is all cells.
        let v = unsafe { PHashMap::<K, V>::val_ref(self.tx, t, i) }.ok()?;
        Some((k, v))
    }
}

impl<K, V> fmt::Debug for MapRefs<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapRefs").field("slot", &self.i).finish()
    }
}
