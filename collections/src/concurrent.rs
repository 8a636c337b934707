//! [`PConcurrentMap`]: a hash map split into independently locked shards.

use std::fmt;
use std::mem::size_of;

use ptm::pmem_core::bytes_of;
use ptm::{PMutex, Persistent, Result, Transaction};

use crate::map::PHashMap;
use crate::raw;

/// A persistent hash map for many threads: `SHARDS` [`PHashMap`]s, each under its own
/// [`PMutex`], a key living in the shard chosen by its hash. Unlike a bare collection it is
/// `Sync`, so it can sit directly in a shared root (`Pool<Root>: Sync`). Each shard takes one
/// 64-byte cache line (the type is 64-byte aligned), so the map is `64 × SHARDS` bytes.
///
/// **What scales.** Each operation locks only its key's shard, until the transaction ends
/// (two-phase locking): transactions on keys of different shards — reads and writes alike —
/// run in parallel; transactions on the same shard take turns, reads included. The shards are
/// mutexes, not reader-writer locks, because [`ptm::PRwLock`] only holds `Copy` values (a read
/// returns a copy, so it cannot hand out a `&PHashMap` shared by several readers). With the
/// default 16 shards and uniformly hashed keys, `t` threads collide on a shard with probability
/// about `t(t - 1) / 32` per operation pair.
///
/// Drains as [`PHashMap`]: `insert` and `remove` cost **2** (locks are volatile words: taking
/// one costs no drain), reads cost 0.
///
/// **Locking order.** A transaction touching several keys locks their shards in the order it
/// touches them; two transactions locking two shards in opposite orders wait for each other
/// until the pool's lock timeout, and one of them fails with
/// [`Error::LockTimeout`](ptm::Error::LockTimeout) and rolls back. Multi-key transactions should
/// touch keys in ascending [`shard_index`](PConcurrentMap::shard_index) order. The whole-map
/// methods ([`len`](PConcurrentMap::len), [`to_vec`](PConcurrentMap::to_vec),
/// [`clear`](PConcurrentMap::clear)) lock every shard in ascending order.
///
/// Keys are compared and hashed by their bytes, as in [`PHashMap`]. The shard function and
/// `SHARDS` are part of the on-media format: open a pool with the same `SHARDS` it was created
/// with (the root type fixes it).
#[repr(transparent)]
pub struct PConcurrentMap<K, V, const SHARDS: usize = 16> {
    shards: [Shard<K, V>; SHARDS],
}

/// One shard, alone on its 64-byte cache line: threads working on different shards never
/// write to the same line (the lock word and the map's length change on every write).
#[repr(C, align(64))]
struct Shard<K, V> {
    map: PMutex<PHashMap<K, V>>,
    _pad: [u64; 3],
}

const _: () = assert!(size_of::<Shard<u64, u64>>() == 64);
const _: () = assert!(size_of::<PConcurrentMap<u64, u64, 16>>() == 16 * 64);

// SAFETY: `repr(C)` of a `PMutex<PHashMap<K, V>>` (`Persistent`: an 8-byte lock word then a
// 32-byte handle of four 8-byte cells, whatever `K` and `V`) and 24 explicit pad bytes: 64 bytes
// at alignment 64, so no implicit padding; every bit pattern valid; no virtual address.
unsafe impl<K: Persistent, V: Persistent> Persistent for Shard<K, V> {
    const __LAYOUT_CHECK: () = {
        let () = <PMutex<PHashMap<K, V>> as Persistent>::__LAYOUT_CHECK;
        assert!(size_of::<Shard<K, V>>() == 64);
    };
}

// SAFETY: `repr(transparent)` over an array of `Shard<K, V>`, which is `Persistent` (above);
// the layout check is the array's.
unsafe impl<K: Persistent, V: Persistent, const SHARDS: usize> Persistent for PConcurrentMap<K, V, SHARDS> {
    const __LAYOUT_CHECK: () = <[Shard<K, V>; SHARDS] as Persistent>::__LAYOUT_CHECK;
}

impl<K: Persistent + Copy, V: Persistent + Copy, const SHARDS: usize> PConcurrentMap<K, V, SHARDS> {
    const SHARDS_OK: () = assert!(SHARDS > 0, "PConcurrentMap needs at least one shard");

    /// The shard holding `k` (`0..SHARDS`): the high half of the key's hash (the shard's table
    /// uses the low bits).
    pub fn shard_index(k: &K) -> usize {
        let () = Self::SHARDS_OK;
        ((raw::hash_bytes(bytes_of(k)) >> 32) % SHARDS as u64) as usize
    }

    /// Locks the shard of `k` for the rest of the transaction.
    fn shard<'t>(&'t self, tx: &'t Transaction<'_>, k: &K) -> Result<&'t PHashMap<K, V>> {
        self.shards[Self::shard_index(k)].map.lock(tx)
    }

    /// Locks shard `i` (`< SHARDS`) for the rest of the transaction and returns its map, for
    /// batch work on one shard.
    ///
    /// # Panics
    ///
    /// If `i >= SHARDS`.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn lock_shard<'t>(&'t self, tx: &'t Transaction<'_>, i: usize) -> Result<&'t PHashMap<K, V>> {
        self.shards[i].map.lock(tx)
    }

    /// A copy of the value for `k`. Locks `k`'s shard; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of [`PHashMap::get`].
    pub fn get(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        self.shard(tx, k)?.get(tx, k)
    }

    /// Whether `k` is present. Locks `k`'s shard; 0 drains.
    ///
    /// # Errors
    ///
    /// As [`get`](PConcurrentMap::get).
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K) -> Result<bool> {
        self.shard(tx, k)?.contains_key(tx, k)
    }

    /// Inserts or updates `k`; returns the previous value. Locks `k`'s shard; 2 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of [`PHashMap::insert`].
    pub fn insert(&self, tx: &Transaction<'_>, k: K, v: V) -> Result<Option<V>> {
        self.shard(tx, &k)?.insert(tx, k, v)
    }

    /// The value for `k`, inserting `f()` first if absent. Locks `k`'s shard; 2 drains when it
    /// inserts, 0 when not.
    ///
    /// # Errors
    ///
    /// As [`insert`](PConcurrentMap::insert).
    pub fn get_or_insert_with(&self, tx: &Transaction<'_>, k: K, f: impl FnOnce() -> V) -> Result<V> {
        self.shard(tx, &k)?.get_or_insert_with(tx, k, f)
    }

    /// Removes `k` and returns its value. Locks `k`'s shard; 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of [`PHashMap::remove`].
    pub fn remove(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
        self.shard(tx, k)?.remove(tx, k)
    }

    /// Locks every shard, in ascending order, for the rest of the transaction.
    fn all<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Vec<&'t PHashMap<K, V>>> {
        self.shards.iter().map(|s| s.map.lock(tx)).collect()
    }

    /// Number of entries. Locks every shard; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn len(&self, tx: &Transaction<'_>) -> Result<u64> {
        Ok(self.all(tx)?.iter().map(|m| m.len(tx)).sum())
    }

    /// Whether the map is empty. Locks every shard; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn is_empty(&self, tx: &Transaction<'_>) -> Result<bool> {
        Ok(self.len(tx)? == 0)
    }

    /// Copies every entry (shard by shard, in table order). Locks every shard; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<(K, V)>> {
        Ok(self.all(tx)?.iter().flat_map(|m| m.iter(tx)).collect())
    }

    /// Removes every entry and frees every shard's table (at commit). Locks every shard; one
    /// snapshot drain per non-empty shard plus the commit.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of [`PHashMap::clear`].
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        for m in self.all(tx)? {
            if m.table_offset(tx).is_some() || !m.is_empty(tx) {
                m.clear(tx)?;
            }
        }
        Ok(())
    }

    /// Frees everything the map owns (the same as [`clear`](PConcurrentMap::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PConcurrentMap::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        self.clear(tx)
    }

    /// The pool offsets of the shards' tables (for reachability checks). Locks every shard.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn table_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        Ok(self.all(tx)?.iter().filter_map(|m| m.table_offset(tx)).collect())
    }
}

impl<K, V, const SHARDS: usize> fmt::Debug for PConcurrentMap<K, V, SHARDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PConcurrentMap {{ shards: {SHARDS}, .. }}")
    }
}
