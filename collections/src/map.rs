//! [`PHashMap`]: an open-addressing hash table in the pool.

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;

use ptm::pmem_core::bytes_of;
use ptm::{PCell, PPtr, Persistent, Result, Transaction};

use crate::raw::{self, Span};
use crate::{AsKey, PHandle, PKey, PValue};

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
/// **Keys** are [`PKey`]s. A `Copy` key is compared and hashed by its bytes (they are
/// `Persistent`, so they have no padding): two keys are equal exactly when their bytes are
/// (for floats, `-0.0 != 0.0` and a NaN equals itself). A [`PString`](crate::PString) key (or a
/// `PVec<T>` key) is stored in its key slot as a handle owning a buffer of exactly its
/// contents, compared and hashed by those contents, and looked up by `&str` (`&[T]`):
/// `PHashMap<PString, u64>` is a persistent string-keyed store. The hash function is fixed and
/// part of the on-media format, so any build and any process finds the keys again.
///
/// Lookups take the borrowed form of the key (`get(tx, &7)`, `get(tx, "ada")`); inserting
/// methods take anything that is [`AsKey`] (`insert(tx, 7, x)`, `insert(tx, "ada", x)`).
///
/// Values are `Copy` (read and written by copy: [`get`](PHashMap::get),
/// [`insert`](PHashMap::insert), ...) or nested collection handles ([`PHandle`]s such as
/// [`PString`](crate::PString) or `PVec<u64>`, created in place by
/// [`get_or_insert_new`](PHashMap::get_or_insert_new) and reached by reference through
/// [`get_ref`](PHashMap::get_ref)); [`remove_free`](PHashMap::remove_free) and
/// [`clear`](PHashMap::clear) free what the values own. Removing an entry ([`remove`](PHashMap::remove)
/// too) frees what its key owns.
///
/// Drains: `insert` (new key or update), `remove`, `remove_free`, `get_or_insert_with` and
/// `get_or_insert_new` (when they insert) cost **2**, growth and string keys included (a new
/// key's buffer is fresh memory, allocated before the snapshot); `get`, `get_ref`,
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

impl<K: PKey, V: Persistent> PHashMap<K, V> {
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

    /// Byte offset of slot `i`'s key in the table.
    fn key_off(t: Table, i: u64) -> Result<u64> {
        Ok(t.ko + raw::elem_off::<K>(i)?)
    }

    /// A reference to slot `i`'s key.
    ///
    /// # Safety
    ///
    /// The contract above, and the reference is used only while the map writes no key slot,
    /// unless `K` is all cells (as [`PKey`] promises of a key whose `Ref` borrows it).
    unsafe fn key_ref<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<&'t K> {
        // SAFETY: see the contract above and this function's.
        unsafe { raw::at::<K>(tx, t.block, Self::key_off(t, i)?) }
    }

    /// Byte offset of slot `i`'s value in the table.
    fn val_off(t: Table, i: u64) -> Result<u64> {
        Ok(t.vo + raw::elem_off::<V>(i)?)
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

    /// Where `k` (of hash `h`) is in `t`, or where it would go.
    fn probe(tx: &Transaction<'_>, t: Table, h: u64, k: &K::Borrowed) -> Result<Probe> {
        let mask = t.cap - 1;
        let mut i = h & mask;
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
                    // SAFETY: a full slot; the reference is dropped before any write.
                    if unsafe { Self::key_ref(tx, t, i)? }.key_eq(tx, k)? {
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
    fn find(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<(Table, u64)>> {
        let Some(t) = self.current(tx)? else {
            return Ok(None);
        };
        match Self::probe(tx, t, K::borrowed_hash(k), k)? {
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

    /// Whether `k` is present (`&7` for a `u64` key, `"ada"` for a `PString` key).
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a table pointer outside the pool, a capacity that is not a
    /// power of two) or key.
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        Ok(self.find(tx, k)?.is_some())
    }

    /// The keys, in table order: copies of `Copy` keys, references to `PString` (`PVec`) keys.
    ///
    /// # Errors
    ///
    /// As [`contains_key`](PHashMap::contains_key).
    pub fn keys<'a>(&'a self, tx: &'a Transaction<'_>) -> Result<Vec<K::Ref<'a>>> {
        let (mut out, mut from) = (Vec::new(), 0);
        while let Some((t, i)) = self.next_full(tx, &mut from)? {
            out.push(Self::stored_key(tx, t, i)?);
        }
        Ok(out)
    }

    /// The iteration form of slot `i`'s key.
    fn stored_key<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<K::Ref<'t>> {
        // SAFETY: a full slot; `PKey` promises `K` is all cells when `Ref` borrows it, and a
        // `Ref` that does not is a copy taken at once.
        Ok(unsafe { Self::key_ref(tx, t, i)? }.key_ref())
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

    /// Marks the full slot `i` of `t` vacant, freeing (at commit) what its key owns (the value
    /// is dropped as is).
    fn vacate(&self, tx: &Transaction<'_>, t: Table, i: u64) -> Result<()>
    where
        V: PValue,
    {
        if K::OWNS {
            // SAFETY: the key is discarded below, in this transaction.
            unsafe { Self::key_ref(tx, t, i)?.free_owned(tx)? };
        }
        let ctrl = Self::ctrl(tx, t, i)?;
        // If the next slot is empty, no probe sequence runs through this one: mark it empty.
        let next_empty = Self::ctrl(tx, t, (i + 1) & (t.cap - 1))?.get(tx) == EMPTY;
        let (ko, vo) = (Self::key_off(t, i)?, Self::val_off(t, i)?);
        let (ks, vs) = (size_of::<K>() as u64, size_of::<V>() as u64);
        tx.snapshot(|b| {
            // SAFETY: the key and value of slot `i` of this map's live table, reached only
            // through cells by this thread.
            unsafe {
                if K::OWNS {
                    b.add(&Span::new(tx, t.block, ko, ks)?)?;
                }
                if V::OWNS {
                    b.add(&Span::new(tx, t.block, vo, vs)?)?;
                }
            }
            b.add(ctrl)?;
            b.add(&self.len)?;
            b.add(&self.used)
        })?;
        // A discarded handle's blocks are freed: zero it, so that no damaged control byte can
        // bring back a second owner of blocks reused later.
        // SAFETY: as above; logged in the batch.
        unsafe {
            if K::OWNS {
                raw::zero_bytes(tx, t.block, ko, ks)?;
            }
            if V::OWNS {
                raw::zero_bytes(tx, t.block, vo, vs)?;
            }
        }
        self.len.set(tx, self.len.get(tx).saturating_sub(1))?;
        if next_empty {
            ctrl.set(tx, EMPTY)?;
            self.used.set(tx, self.used.get(tx).saturating_sub(1))
        } else {
            ctrl.set(tx, TOMB)
        }
    }
}

impl<K: PKey, V: PValue> PHashMap<K, V> {
    /// Inserts `k`, known to be absent: makes the key ([`PKey::key_new`]: a `PString` key's
    /// buffer is allocated here, before any snapshot), grows if needed, logs the slot (unless
    /// the table is fresh), stores the key's bytes, lets `fill` write the value at the given
    /// byte offset of the table (logged or fresh), then marks the slot full. One snapshot
    /// drain. Returns the table and the slot.
    fn insert_new(
        &self,
        tx: &Transaction<'_>,
        k: &K::Borrowed,
        fill: impl FnOnce(PPtr<u8>, u64) -> Result<()>,
    ) -> Result<(Table, u64)> {
        // SAFETY: `key` is stored into a key slot by `place`, or freed below on failure, in
        // this transaction, and not used afterwards.
        let key = unsafe { K::key_new(tx, k)? };
        let r = self.place(tx, k, &key, fill);
        if r.is_err() && K::OWNS {
            // SAFETY: `key` is not in the table (its slot, if written, was not marked full):
            // it is discarded here. Freeing it keeps a caller that goes on after the error
            // from leaking its blocks.
            unsafe { key.free_owned(tx)? };
        }
        r
    }

    /// `insert_new` once the key is made.
    fn place(
        &self,
        tx: &Transaction<'_>,
        k: &K::Borrowed,
        key: &K,
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
        let (slot, was_tomb) = match Self::probe(tx, t, K::borrowed_hash(k), k)? {
            Probe::Vacant(i, tomb) => (i, tomb),
            Probe::Found(_) | Probe::Full => return Err(raw::out_of_bounds(t.block.offset(), t.cap)),
        };
        let ctrl = Self::ctrl(tx, t, slot)?;
        let (ko, vo) = (Self::key_off(t, slot)?, Self::val_off(t, slot)?);
        if !rebuilt {
            tx.snapshot(|b| {
                b.add(ctrl)?;
                // SAFETY: the slot's key and value, in this map's live table, reached only
                // through cells by this thread.
                unsafe {
                    b.add(&Span::new(tx, t.block, ko, size_of::<K>() as u64)?)?;
                    b.add(&Span::new(tx, t.block, vo, size_of::<V>() as u64)?)?;
                }
                b.add(&self.len)?;
                b.add(&self.used)
            })?;
        }
        fill(t.block, vo)?;
        // SAFETY: the slot's key, logged above or fresh, reached only through cells.
        unsafe { raw::write_bytes(tx, t.block, ko, bytes_of(key))? };
        ctrl.set(tx, FULL)?;
        self.len.set(tx, self.len.get(tx).saturating_add(1))?;
        if !was_tomb {
            self.used.set(tx, self.used.get(tx).saturating_add(1))?;
        }
        Ok((t, slot))
    }

    /// Moves every entry into a fresh table of `new_cap` slots (freeing the old one at commit),
    /// keys and values by bytes. Logs the header in one batch; the fresh table is new memory,
    /// which ptm never logs, so after the batch every store of the current operation is
    /// covered. When keys or values own blocks, the old table's key or value array is logged in
    /// the same batch and the moved copies are zeroed (a stale reference then sees an empty
    /// handle).
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
            if let Some(o) = old {
                // SAFETY: the old table's key and value arrays (freed at commit, readable until
                // then), reached only through cells by this thread.
                unsafe {
                    if K::OWNS {
                        b.add(&Span::new(tx, o.block, o.ko, raw::array_bytes::<K>(o.cap)?)?)?;
                    }
                    if V::OWNS {
                        b.add(&Span::new(tx, o.block, o.vo, raw::array_bytes::<V>(o.cap)?)?)?;
                    }
                }
            }
            // The fresh table needs no snapshot: ptm logged it as new memory at allocation.
            b.add(&self.used)
        })?;
        // Control bytes: all empty. When keys or values own blocks, the key and value arrays too:
        // spare slots of a fresh table hold old bytes, which must never read as a handle. Fresh
        // memory: no logging.
        let zeroed = if K::OWNS || V::OWNS { size } else { new_cap };
        // SAFETY: the start of the fresh table of `size >= new_cap` bytes (`ctrl` is its first
        // `new_cap` bytes), reached only through cells by this thread.
        unsafe { raw::zero_bytes(tx, block, 0, zeroed)? };
        let (ksize, vsize) = (size_of::<K>() as u64, size_of::<V>() as u64);
        let mut n = 0;
        if let Some(o) = old {
            for i in 0..o.cap {
                if Self::ctrl(tx, o, i)?.get(tx) != FULL {
                    continue;
                }
                // SAFETY: a full slot of the old table; the reference is dropped at once.
                let h = unsafe { Self::key_ref(tx, o, i)? }.key_hash(tx)?;
                // The fresh table has no tombstone and holds distinct keys: the first free slot.
                let Some(s) = Self::first_free(tx, t, h)? else {
                    // No room: only in a corrupted table.
                    return Err(raw::out_of_bounds(o.block.offset(), o.cap));
                };
                Self::ctrl(tx, t, s)?.set(tx, FULL)?;
                let (kf, kt) = (Self::key_off(o, i)?, Self::key_off(t, s)?);
                let (vf, vt) = (Self::val_off(o, i)?, Self::val_off(t, s)?);
                // SAFETY: key and value slots of the old table (logged above when zeroed) and of
                // the fresh one, reached only through cells by this thread.
                unsafe {
                    raw::move_bytes(tx, (o.block, kf), (block, kt), ksize, K::OWNS)?;
                    raw::move_bytes(tx, (o.block, vf), (block, vt), vsize, V::OWNS)?;
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

    /// The first slot at or after hash `h`'s home in `t` that is not full.
    fn first_free(tx: &Transaction<'_>, t: Table, h: u64) -> Result<Option<u64>> {
        let mask = t.cap - 1;
        let mut i = h & mask;
        for _ in 0..t.cap {
            if Self::ctrl(tx, t, i)?.get(tx) != FULL {
                return Ok(Some(i));
            }
            i = (i + 1) & mask;
        }
        Ok(None)
    }

    /// Removes `k`, freeing (at commit) everything its key and value own; `false` when absent.
    /// 2 drains (0 when absent), whatever the value owns.
    ///
    /// # Errors
    ///
    /// As [`clear`](PHashMap::clear), and those of [`contains_key`](PHashMap::contains_key).
    pub fn remove_free(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
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

    /// Frees the table and everything the keys and values own, without writing the handle.
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`]: the map is being discarded.
    pub(crate) unsafe fn release(&self, tx: &Transaction<'_>) -> Result<()> {
        let mut from = 0;
        if K::OWNS || V::OWNS {
            while let Some((t, i)) = self.next_full(tx, &mut from)? {
                // SAFETY: the whole map, so this entry, is being discarded.
                unsafe {
                    Self::key_ref(tx, t, i)?.free_owned(tx)?;
                    Self::val_ref(tx, t, i)?.free_owned(tx)?;
                }
            }
        }
        let block = self.table.get(tx);
        if !block.is_null() {
            tx.free(block)?;
        }
        Ok(())
    }

    /// Removes every entry and frees the table and everything the keys and values own (at
    /// commit). 2 drains, however deeply the values nest.
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

impl<K: PKey, V: Persistent + Copy> PHashMap<K, V> {
    /// A copy of the value for `k` (`&7` for a `u64` key, `"ada"` for a `PString` key).
    ///
    /// # Errors
    ///
    /// Only for a corrupted handle (a table pointer outside the pool, a capacity that is not a
    /// power of two) or key.
    pub fn get(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        match self.find(tx, k)? {
            Some((t, i)) => Ok(Some(Self::val(tx, t, i)?.get(tx))),
            None => Ok(None),
        }
    }

    fn val<'t>(tx: &'t Transaction<'_>, t: Table, i: u64) -> Result<&'t PCell<V>> {
        // SAFETY: the accessors' contract.
        unsafe { raw::cell::<V>(tx, t.block, Self::val_off(t, i)?) }
    }

    /// Inserts `k`, known to be absent, with value `v`.
    fn insert_copy(&self, tx: &Transaction<'_>, k: &K::Borrowed, v: V) -> Result<()> {
        self.insert_new(tx, k, |block, off| {
            // SAFETY: the value slot `insert_new` hands to its `fill`: inside this map's table,
            // logged or fresh, reached only through cells by this thread.
            unsafe { raw::cell::<V>(tx, block, off)? }.set(tx, v)
        })?;
        Ok(())
    }

    /// Inserts or updates `k` (`7` for a `u64` key; `"ada"` or a `String` for a `PString` key,
    /// whose buffer is allocated only when the key is new); returns the previous value.
    /// 2 drains, growth included.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), logging errors, and those of
    /// [`get`](PHashMap::get).
    pub fn insert(&self, tx: &Transaction<'_>, k: impl AsKey<K>, v: V) -> Result<Option<V>> {
        let k = k.as_key();
        if let Some((t, i)) = self.find(tx, k)? {
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
    pub fn get_or_insert_with(
        &self,
        tx: &Transaction<'_>,
        k: impl AsKey<K>,
        f: impl FnOnce() -> V,
    ) -> Result<V> {
        let k = k.as_key();
        if let Some(v) = self.get(tx, k)? {
            return Ok(v);
        }
        let v = f();
        self.insert_copy(tx, k, v)?;
        Ok(v)
    }

    /// Removes `k` and returns its value, freeing what the key owns. 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// Logging errors, and those of [`get`](PHashMap::get).
    pub fn remove(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        let Some((t, i)) = self.find(tx, k)? else {
            return Ok(None);
        };
        let v = Self::val(tx, t, i)?.get(tx);
        self.vacate(tx, t, i)?;
        Ok(Some(v))
    }

    /// Iterates over the entries as `(key, value copy)`, in table order (the key as
    /// [`keys`](PHashMap::keys) gives it). Each step rereads the table, so changing the map
    /// while iterating is memory-safe (entries may then be missed or repeated).
    pub fn iter<'a>(&'a self, tx: &'a Transaction<'a>) -> MapIter<'a, K, V> {
        MapIter { map: self, tx, i: 0 }
    }
}

/// Nested collections as values: a `PHashMap` whose values are handles
/// ([`PString`](crate::PString), [`PVec`](crate::PVec), your own [`PHandle`] structs).
///
/// References handed out (`&'t V`, and `&'t K` for `PString` keys) live at most as long as the
/// transaction borrow. An insert that rebuilds the table (growth, or purging tombstones) moves
/// every entry to a new table, and `remove_free` or `clear` discard them: a reference taken
/// before then is **stale**, like a std iterator after an insert. Using a stale reference is a
/// logic error, but never undefined behaviour: it points into memory that stays mapped and
/// readable until commit; after a rebuild the old copy reads as an empty handle and changes
/// through it are lost (blocks it allocates leak); after a removal it reads the zeroed slot
/// (an empty handle), so freeing through it frees nothing. Take the reference again instead.
impl<K: PKey, V: PHandle> PHashMap<K, V> {
    /// A reference to the value for `k`. 0 drains.
    ///
    /// # Errors
    ///
    /// As [`contains_key`](PHashMap::contains_key).
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, k: &K::Borrowed) -> Result<Option<&'t V>> {
        match self.find(tx, k)? {
            // SAFETY: a full slot of the current table; `V` is all cells.
            Some((t, i)) => unsafe { Self::val_ref(tx, t, i) }.map(Some),
            None => Ok(None),
        }
    }

    /// The value for `k`, inserting an empty handle (all-zero bytes) first if absent: the way to
    /// create a nested collection. 2 drains when it inserts (growth included: a rebuild moves the
    /// entries by bytes and zeroes and logs the old copies of owning keys and values), 0 when
    /// not.
    ///
    /// # Errors
    ///
    /// As [`insert`](PHashMap::insert).
    pub fn get_or_insert_new<'t>(&'t self, tx: &'t Transaction<'_>, k: impl AsKey<K>) -> Result<&'t V> {
        let k = k.as_key();
        if let Some(v) = self.get_ref(tx, k)? {
            return Ok(v);
        }
        let (t, slot) = self.insert_new(tx, k, |block, off| {
            // SAFETY: the value slot handed to `fill`: logged or fresh; zero is the empty handle.
            unsafe { raw::zero_bytes(tx, block, off, size_of::<V>() as u64) }
        })?;
        // SAFETY: the slot just filled, in the current table; `V` is all cells.
        unsafe { Self::val_ref(tx, t, slot) }
    }

    /// Iterates over the entries as `(key, value reference)`, in table order (the key as
    /// [`keys`](PHashMap::keys) gives it); see [`iter`](PHashMap::iter) for changes during
    /// iteration.
    pub fn iter_refs<'a>(&'a self, tx: &'a Transaction<'a>) -> MapRefs<'a, K, V> {
        MapRefs { map: self, tx, i: 0 }
    }
}

impl<K, V> fmt::Debug for PHashMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PHashMap { .. }")
    }
}

/// Iterator over a [`PHashMap`]'s entries as `(key, value copy)`; see [`PHashMap::iter`]. Stops at the
/// first error (only possible on a corrupted map).
pub struct MapIter<'a, K, V> {
    map: &'a PHashMap<K, V>,
    tx: &'a Transaction<'a>,
    i: u64,
}

impl<'a, K: PKey, V: Persistent + Copy> Iterator for MapIter<'a, K, V> {
    type Item = (K::Ref<'a>, V);

    fn next(&mut self) -> Option<Self::Item> {
        let (t, i) = self.map.next_full(self.tx, &mut self.i).ok().flatten()?;
        let k = PHashMap::<K, V>::stored_key(self.tx, t, i).ok()?;
        let v = PHashMap::<K, V>::val(self.tx, t, i).ok()?.get(self.tx);
        Some((k, v))
    }
}

impl<K, V> fmt::Debug for MapIter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter").field("slot", &self.i).finish()
    }
}

/// Iterator over a [`PHashMap`]'s entries as `(key, value reference)`; see
/// [`PHashMap::iter_refs`]. Stops at the first error (only possible on a corrupted map).
pub struct MapRefs<'a, K, V> {
    map: &'a PHashMap<K, V>,
    tx: &'a Transaction<'a>,
    i: u64,
}

impl<'a, K: PKey, V: PHandle> Iterator for MapRefs<'a, K, V> {
    type Item = (K::Ref<'a>, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let (t, i) = self.map.next_full(self.tx, &mut self.i).ok().flatten()?;
        let k = PHashMap::<K, V>::stored_key(self.tx, t, i).ok()?;
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
