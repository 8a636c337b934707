//! [`PHashMap`]: an open-addressing hash table in the pool.

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;

use ptm::pmem_core::bytes_of;
use ptm::{PCell, PPtr, Persistent, Result, Transaction};

use crate::raw;

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
/// Drains: `insert` (new key or update), `remove` and `get_or_insert_with` (when it inserts) cost
/// **2**, growth included; `get`, `contains_key`, `len` and iteration cost 0.
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

impl<K: Persistent + Copy, V: Persistent + Copy> PHashMap<K, V> {
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

    fn val<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<&'t PCell<V>> {
        // SAFETY: see the contract above.
        unsafe { raw::cell::<V>(tx, t.block, t.vo + raw::elem_off::<V>(i)?) }
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

    /// A copy of the value for `k`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a table pointer outside the pool, a capacity that is not a
    /// power of two).
    pub fn get(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        let Some(t) = self.current(tx)? else {
            return Ok(None);
        };
        match Self::probe(tx, t, k)? {
            Probe::Found(i) => Ok(Some(Self::val(tx, t, i)?.get(tx))),
            _ => Ok(None),
        }
    }

    /// Whether `k` is present.
    ///
    /// # Errors
    ///
    /// As [`get`](PHashMap::get).
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K) -> Result<bool> {
        Ok(self.get(tx, k)?.is_some())
    }

    /// Inserts or updates `k`; returns the previous value. 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, and those of
    /// [`get`](PHashMap::get).
    pub fn insert(&self, tx: &Transaction<'_>, k: K, v: V) -> Result<Option<V>> {
        if let Some(t) = self.current(tx)? {
            if let Probe::Found(i) = Self::probe(tx, t, &k)? {
                let cell = Self::val(tx, t, i)?;
                let old = cell.get(tx);
                cell.set(tx, v)?;
                return Ok(Some(old));
            }
        }
        self.insert_new(tx, k, v)?;
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
        self.insert_new(tx, k, v)?;
        Ok(v)
    }

    /// Inserts a key known to be absent.
    fn insert_new(&self, tx: &Transaction<'_>, k: K, v: V) -> Result<()> {
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
        ctrl.set(tx, FULL)?;
        key.set(tx, k)?;
        val.set(tx, v)?;
        self.len.set(tx, self.len.get(tx).saturating_add(1))?;
        if !was_tomb {
            self.used.set(tx, self.used.get(tx).saturating_add(1))?;
        }
        Ok(())
    }

    /// Moves every entry into a fresh table of `new_cap` slots (freeing the old one at commit).
    /// Logs the header in one batch; the fresh table is new memory, which ptm never logs, so
    /// after the batch every store of the current operation is covered.
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
            // The fresh table needs no snapshot: ptm logged it as new memory at allocation.
            b.add(&self.used)
        })?;
        // Control bytes: all empty (`new_cap` is a power of two >= 8, so whole u64 words).
        for w in 0..new_cap / 8 {
            // SAFETY: inside the fresh table (`ctrl` is its first `new_cap` bytes, and it starts
            // 64-byte aligned); reached only through cells by this thread.
            unsafe { raw::write::<u64>(tx, block, w, 0)? };
        }
        let mut n = 0;
        if let Some(o) = old {
            for i in 0..o.cap {
                if Self::ctrl(tx, o, i)?.get(tx) != FULL {
                    continue;
                }
                let (k, v) = (Self::key(tx, o, i)?.get(tx), Self::val(tx, o, i)?.get(tx));
                let Probe::Vacant(s, _) = Self::probe(tx, t, &k)? else {
                    // A duplicate or no room: only in a corrupted table.
                    return Err(raw::out_of_bounds(o.block.offset(), o.cap));
                };
                Self::ctrl(tx, t, s)?.set(tx, FULL)?;
                Self::key(tx, t, s)?.set(tx, k)?;
                Self::val(tx, t, s)?.set(tx, v)?;
                n += 1;
            }
        }
        self.table.set(tx, block)?;
        self.cap.set(tx, new_cap)?;
        self.len.set(tx, n)?;
        self.used.set(tx, n)?;
        Ok(t)
    }

    /// Removes `k` and returns its value. 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// Logging errors, and those of [`get`](PHashMap::get).
    pub fn remove(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        let Some(t) = self.current(tx)? else {
            return Ok(None);
        };
        let Probe::Found(i) = Self::probe(tx, t, k)? else {
            return Ok(None);
        };
        let v = Self::val(tx, t, i)?.get(tx);
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
            self.used.set(tx, self.used.get(tx).saturating_sub(1))?;
        } else {
            ctrl.set(tx, TOMB)?;
        }
        Ok(Some(v))
    }

    /// Removes every entry and frees the table (at commit). 2 drains.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted table pointer, and
    /// logging errors.
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        let block = self.table.get(tx);
        if !block.is_null() {
            tx.free(block)?;
        }
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

    /// Iterates over copies of the entries, in table order. Each step rereads the table, so
    /// changing the map while iterating is memory-safe (entries may then be missed or repeated).
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> MapIter<'a, K, V> {
        MapIter { map: self, tx, i: 0 }
    }

    /// The pool offset of the table, if any (for reachability checks).
    pub fn table_offset(&self, tx: &Transaction<'_>) -> Option<u64> {
        let b = self.table.get(tx);
        (!b.is_null()).then(|| b.offset())
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
        let t = self.map.current(self.tx).ok().flatten()?;
        while self.i < t.cap {
            let i = self.i;
            self.i += 1;
            if PHashMap::<K, V>::ctrl(self.tx, t, i).ok()?.get(self.tx) == FULL {
                let k = PHashMap::<K, V>::key(self.tx, t, i).ok()?.get(self.tx);
                let v = PHashMap::<K, V>::val(self.tx, t, i).ok()?.get(self.tx);
                return Some((k, v));
            }
        }
        None
    }
}

impl<K, V> fmt::Debug for MapIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter").field("slot", &self.i).finish()
    }
}
