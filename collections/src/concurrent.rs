//! [`PConcurrentMap`]: a hash map split into independently locked shards.

use std::fmt;
use std::mem::size_of;

use ptm::{Nested, PSharedLock, Persistent, Result, Transaction};

use crate::map::PHashMap;
use crate::{AsKey, PHandle, PKey, PToOwned, PValue};

/// A persistent hash map for many threads: `SHARDS` [`PHashMap`]s, each under its own
/// reader-writer lock ([`PSharedLock`]), a key living in the shard chosen by its hash. Unlike a
/// bare collection it is `Sync`, so it can sit directly in a shared root (`Pool<Root>: Sync`).
/// Each shard takes one 64-byte cache line (the type is 64-byte aligned), so the map is
/// `64 × SHARDS` bytes.
///
/// **What scales.** Each operation locks only its key's shard, until the transaction ends
/// (two-phase locking). Reads ([`get`](PConcurrentMap::get),
/// [`contains_key`](PConcurrentMap::contains_key), [`len`](PConcurrentMap::len),
/// [`to_vec`](PConcurrentMap::to_vec)) take the shard **shared**: any number of transactions
/// read one shard at once. Writes ([`insert`](PConcurrentMap::insert),
/// [`remove`](PConcurrentMap::remove), [`get_or_insert_with`](PConcurrentMap::get_or_insert_with),
/// [`clear`](PConcurrentMap::clear), [`lock_shard`](PConcurrentMap::lock_shard)) take it
/// **exclusively**: transactions writing keys of different shards run in parallel, those on the
/// same shard take turns, and readers of a shard wait for its writer (and, once a writer waits,
/// new readers wait for it, so readers cannot starve writers). A shared hold writes the shard's
/// lock word only (one compare-exchange to take it, one to drop it): readers of the same shard
/// share that cache line, readers of different shards share nothing.
///
/// **Read, then write.** A transaction that reads a key and then writes to the same shard
/// upgrades its shared hold to the exclusive one, waiting for the other readers to finish. Two
/// transactions doing that on one shard at the same time would wait for each other forever, so
/// the second fails at once with [`Error::LockUpgrade`](ptm::Error::LockUpgrade) and rolls back
/// (retry it). Read-modify-write transactions that may run concurrently should read with
/// [`get_for_update`](PConcurrentMap::get_for_update), which takes the shard exclusively from
/// the start.
///
/// **Removed entries.** Memory is reclaimed under the locks, not by epochs: a shard's table is
/// only replaced or freed (growth, [`clear`](PConcurrentMap::clear)) by a transaction holding the
/// shard exclusively, and the freed block returns to the allocator when that transaction ends,
/// after its locks are released — by then no reader can be inside: a reader's references into a
/// shard live no longer than its transaction, whose shared hold kept the writer out. (`remove`
/// itself only marks the entry's slot deleted; the slot is reused by later inserts.)
///
/// Drains as [`PHashMap`]: `insert` and `remove` cost **2** (locks are volatile words: taking
/// one costs no drain), reads cost 0.
///
/// **Locking order.** A transaction touching several keys locks their shards in the order it
/// touches them; two transactions locking two shards in opposite orders (one of them
/// exclusively) wait for each other until the pool's lock timeout, and one of them fails with
/// [`Error::LockTimeout`](ptm::Error::LockTimeout) and rolls back. Multi-key transactions should
/// touch keys in ascending [`shard_index`](PConcurrentMap::shard_index) order. The whole-map
/// methods ([`len`](PConcurrentMap::len), [`to_vec`](PConcurrentMap::to_vec),
/// [`clear`](PConcurrentMap::clear)) lock every shard in ascending order.
///
/// Keys and values are those of [`PHashMap`]: any [`PKey`] (`Copy` keys by their bytes,
/// [`PString`](crate::PString) keys looked up by `&str`) and `Copy` values or nested handles
/// ([`get_or_insert_new`](PConcurrentMap::get_or_insert_new), [`get_ref`](PConcurrentMap::get_ref)
/// and [`remove_free`](PConcurrentMap::remove_free), under the exclusive hold). Shared reads
/// never hand out a reference into a shard (a `&PString` or a nested handle could be written
/// through by a reader while others read it): `get` copies the value out, `to_vec` is for
/// `Copy` keys, and [`to_vec_owned`](PConcurrentMap::to_vec_owned) copies out any keys and
/// values ([`PToOwned`](crate::PToOwned): `PString`s as `String`s).
///
/// **Shard routing.** A key's shard comes from a hash keyed by a secret of the pool and the
/// map's place in it ([`shard_index`](PConcurrentMap::shard_index)), so keys cannot be chosen
/// to all land in one shard by anyone who does not have the pool file. Maps in pools made
/// before pools had a routing secret keep the fixed hash they were written with. The shard
/// function and `SHARDS` are part of the on-media format (design §13.5): open a pool with the
/// same `SHARDS` it was created with (the root type fixes it). A map stays where it was
/// created (it is not a [`PHandle`]: no collection moves it); copying its bytes elsewhere is
/// not supported (its keys would be looked for in other shards). A shard's lock word is
/// volatile state, reset on reopen; its layout is a [`PMutex`](ptm::PMutex)'s, so pools
/// written when the shards were mutexes open unchanged.
#[repr(transparent)]
pub struct PConcurrentMap<K, V, const SHARDS: usize = 16> {
    shards: [Shard<K, V>; SHARDS],
}

/// One shard, alone on its 64-byte cache line: threads working on different shards never
/// write to the same line (the lock word and the map's length change on every write).
#[repr(C, align(64))]
struct Shard<K, V> {
    map: PSharedLock<PHashMap<K, V>>,
    _pad: [u64; 3],
}

const _: () = assert!(size_of::<Shard<u64, u64>>() == 64);
const _: () = assert!(size_of::<PSharedLock<PHashMap<u64, u64>>>() + size_of::<[u64; 3]>() == 64);
const _: () = assert!(size_of::<PConcurrentMap<u64, u64, 16>>() == 16 * 64);

// SAFETY: `repr(C)` of a `PSharedLock<PHashMap<K, V>>` (`Persistent`: an 8-byte lock word then a
// 32-byte handle of four 8-byte cells, whatever `K` and `V`) and 24 explicit pad bytes: 64 bytes
// at alignment 64, so no implicit padding; every bit pattern valid; no virtual address.
unsafe impl<K: Persistent, V: Persistent> Persistent for Shard<K, V> {
    const __LAYOUT_CHECK: () = {
        let () = <PSharedLock<PHashMap<K, V>> as Persistent>::__LAYOUT_CHECK;
        assert!(size_of::<Shard<K, V>>() == 64);
    };
}

// SAFETY: `repr(transparent)` over an array of `Shard<K, V>`, which is `Persistent` (above);
// the layout check is the array's.
unsafe impl<K: Persistent, V: Persistent, const SHARDS: usize> Persistent for PConcurrentMap<K, V, SHARDS> {
    const __LAYOUT_CHECK: () = <[Shard<K, V>; SHARDS] as Persistent>::__LAYOUT_CHECK;
}

impl<K: PKey, V: PValue, const SHARDS: usize> PConcurrentMap<K, V, SHARDS> {
    const SHARDS_OK: () = assert!(SHARDS > 0, "PConcurrentMap needs at least one shard");

    /// The shard holding `k` (`0..SHARDS`; `&7` for a `u64` key, `"ada"` for a `PString` key):
    /// the high half of the key's hash under this map's routing seed
    /// ([`PKey::seeded_borrowed_hash`]), modulo `SHARDS`. 0 drains, no lock.
    ///
    /// The seed is a keyed mix of the pool's 128-bit routing secret `[s0, s1]` (drawn when the
    /// pool was created, kept in its superblock) and the map's pool offset `o`:
    /// `s0 ^ fmix64(o ^ s1)` (MurmurHash3's finaliser, a bijection: distinct maps of a pool get
    /// distinct seeds). Computed without any write or lock, the same for the map's whole life,
    /// different for every map and every pool, and unknown to anyone without the pool file,
    /// so keys cannot be crafted to share a shard. In a pool made before pools had a secret
    /// (superblock format 3) the seed is 0, the fixed hash the map was written with (keys
    /// crafted against it can all land in one shard; each shard is a seeded [`PHashMap`], so
    /// they stay correct and within proportional memory there, and only lose the parallelism
    /// of distinct shards).
    ///
    /// # Errors
    ///
    /// [`Error::NotInPool`](ptm::Error::NotInPool) if the map is not in `tx`'s pool.
    pub fn shard_index(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<usize> {
        Ok(Self::shard_of(self.routing_seed(tx)?, k))
    }

    /// The map's routing seed (see [`shard_index`](PConcurrentMap::shard_index)): 0 in a pool
    /// without a routing secret, else never 0.
    fn routing_seed(&self, tx: &Transaction<'_>) -> Result<u64> {
        Ok(match tx.placement_secret(self)? {
            None => 0,
            Some(([s0, s1], offset)) => (s0 ^ crate::raw::fmix64(offset ^ s1)).max(1),
        })
    }

    /// The shard of `k` under routing seed `seed`.
    fn shard_of(seed: u64, k: &K::Borrowed) -> usize {
        let () = Self::SHARDS_OK;
        ((K::seeded_borrowed_hash(k, seed) >> 32) % SHARDS as u64) as usize
    }

    /// Locks the shard of `k` exclusively for the rest of the transaction.
    fn shard<'t>(&'t self, tx: &'t Transaction<'_>, k: &K::Borrowed) -> Result<&'t PHashMap<K, V>> {
        self.shards[self.shard_index(tx, k)?].map.lock(tx)
    }

    /// Runs the read-only `f` on shard `i` under a shared hold (kept to the end of the
    /// transaction). `f` must only call reading methods of the map and must not let a reference
    /// into it escape (a `&PString` key or a `&V` handle could be written through): the safety
    /// of concurrent readers rests on that, which is why this is private.
    fn read<T>(&self, tx: &Transaction<'_>, i: usize, f: impl FnOnce(&PHashMap<K, V>) -> T) -> Result<T> {
        // SAFETY: every caller passes an `f` that only reads the map (`get`, `get_each`,
        // `contains_key`, `len`, `iter` of `Copy` entries, `block_offsets`: loads through
        // `PCell::get`, string keys compared by reading their buffers), and no reference into
        // the map escapes `f`.
        let m = unsafe { self.shards[i].map.read_unchecked(tx)? };
        Ok(f(m))
    }

    /// Locks shard `i` (`< SHARDS`) exclusively for the rest of the transaction and returns its
    /// map, for batch work on one shard.
    ///
    /// # Panics
    ///
    /// If `i >= SHARDS`.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), [`Error::LockUpgrade`](ptm::Error::LockUpgrade)
    /// (this transaction read the shard and another one is upgrading too; see the type docs).
    pub fn lock_shard<'t>(&'t self, tx: &'t Transaction<'_>, i: usize) -> Result<&'t PHashMap<K, V>> {
        self.shards[i].map.lock(tx)
    }

    /// Whether `k` is present. Locks `k`'s shard shared; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of [`PHashMap::contains_key`].
    pub fn contains_key(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        self.read(tx, self.shard_index(tx, k)?, |m| m.contains_key(tx, k))?
    }

    /// Removes `k`, freeing (at commit) everything its key and value own; `false` when absent.
    /// Locks `k`'s shard exclusively; 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), [`Error::LockUpgrade`](ptm::Error::LockUpgrade)
    /// (see the type docs), and those of [`PHashMap::remove_free`].
    pub fn remove_free(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<bool> {
        self.shard(tx, k)?.remove_free(tx, k)
    }

    /// Locks every shard exclusively, in ascending order, for the rest of the transaction.
    fn all<'t>(&'t self, tx: &'t Transaction<'_>) -> Result<Vec<&'t PHashMap<K, V>>> {
        self.shards.iter().map(|s| s.map.lock(tx)).collect()
    }

    /// Runs the read-only `f` on every shard in ascending order, each under a shared hold.
    fn read_all<T>(&self, tx: &Transaction<'_>, mut f: impl FnMut(&PHashMap<K, V>) -> T) -> Result<Vec<T>> {
        (0..SHARDS).map(|i| self.read(tx, i, &mut f)).collect()
    }

    /// Number of entries. Locks every shard shared; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn len(&self, tx: &Transaction<'_>) -> Result<u64> {
        // Saturating: a damaged shard length must not overflow (every handle bit pattern is valid).
        Ok(self
            .read_all(tx, |m| m.len(tx))?
            .into_iter()
            .fold(0, u64::saturating_add))
    }

    /// Whether the map is empty. Locks every shard shared; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn is_empty(&self, tx: &Transaction<'_>) -> Result<bool> {
        Ok(self.len(tx)? == 0)
    }

    /// Removes every entry and frees every shard's blocks and everything the keys and values
    /// own (at commit). Locks every shard exclusively; 2 drains (every shard's handle in one
    /// snapshot batch).
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), [`Error::LockUpgrade`](ptm::Error::LockUpgrade)
    /// (see the type docs), and those of [`PHashMap::clear`].
    pub fn clear(&self, tx: &Transaction<'_>) -> Result<()> {
        PHashMap::clear_all(tx, &self.all(tx)?)
    }

    /// Frees everything the map owns (the same as [`clear`](PConcurrentMap::clear)).
    ///
    /// # Errors
    ///
    /// As [`clear`](PConcurrentMap::clear).
    pub fn free(&self, tx: &Transaction<'_>) -> Result<()> {
        self.clear(tx)
    }

    /// The pool offsets of every shard's blocks (directories and segments, see
    /// [`PHashMap::block_offsets`]), for reachability checks; not the blocks the keys and values
    /// own. Locks every shard shared.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of
    /// [`PHashMap::block_offsets`].
    pub fn block_offsets(&self, tx: &Transaction<'_>) -> Result<Vec<u64>> {
        Ok(self
            .read_all(tx, |m| m.block_offsets(tx))?
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .concat())
    }
}

impl<K: PKey, V: Persistent + Copy, const SHARDS: usize> PConcurrentMap<K, V, SHARDS> {
    /// A copy of the value for `k` (`&7`, `"ada"`). Locks `k`'s shard shared; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of [`PHashMap::get`].
    pub fn get(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        self.read(tx, self.shard_index(tx, k)?, |m| m.get(tx, k))?
    }

    /// Copies of the values for `keys`, in order (`None` for an absent key), as
    /// [`get`](PConcurrentMap::get) for each: the keys are grouped by shard, each shard is
    /// locked shared once, and its keys are looked up together with
    /// [`PHashMap::get_many`] (their memory accesses overlapped). 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), and those of [`PHashMap::get`].
    pub fn get_many<Q: AsKey<K>>(&self, tx: &Transaction<'_>, keys: &[Q]) -> Result<Vec<Option<V>>> {
        let mut by_shard: Vec<(Vec<usize>, Vec<&K::Borrowed>)> =
            (0..SHARDS).map(|_| Default::default()).collect();
        for (i, k) in keys.iter().enumerate() {
            let (at, ks) = &mut by_shard[self.shard_index(tx, k.as_key())?];
            at.push(i);
            ks.push(k.as_key());
        }
        let mut out = vec![None; keys.len()];
        for (shard, (at, ks)) in by_shard.iter().enumerate().filter(|(_, (at, _))| !at.is_empty()) {
            let found = self.read(tx, shard, |m| m.get_each(tx, ks))??;
            for (&i, v) in at.iter().zip(found) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// A copy of the value for `k`, locking `k`'s shard exclusively: for read-modify-write
    /// transactions, which then never fail to upgrade (see the type docs). 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout),
    /// [`Error::LockUpgrade`](ptm::Error::LockUpgrade) if this transaction already read the
    /// shard shared and another one is upgrading too, and those of [`PHashMap::get`].
    pub fn get_for_update(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        self.shard(tx, k)?.get(tx, k)
    }

    /// Inserts or updates `k` (`7`; `"ada"` or a `String` for a `PString` key, whose buffer is
    /// allocated only when the key is new); returns the previous value. Locks `k`'s shard
    /// exclusively; 2 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), [`Error::LockUpgrade`](ptm::Error::LockUpgrade)
    /// (see the type docs), and those of [`PHashMap::insert`].
    pub fn insert(&self, tx: &Transaction<'_>, k: impl AsKey<K>, v: V) -> Result<Option<V>> {
        self.shard(tx, k.as_key())?.insert(tx, k, v)
    }

    /// The value for `k`, inserting `f()` first if absent. Locks `k`'s shard exclusively; 2
    /// drains when it inserts, 0 when not.
    ///
    /// # Errors
    ///
    /// As [`insert`](PConcurrentMap::insert).
    pub fn get_or_insert_with(
        &self,
        tx: &Transaction<'_>,
        k: impl AsKey<K>,
        f: impl FnOnce() -> V,
    ) -> Result<V> {
        self.shard(tx, k.as_key())?.get_or_insert_with(tx, k, f)
    }

    /// Removes `k` and returns its value, freeing what the key owns. Locks `k`'s shard
    /// exclusively; 2 drains (0 when absent).
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout), [`Error::LockUpgrade`](ptm::Error::LockUpgrade)
    /// (see the type docs), and those of [`PHashMap::remove`].
    pub fn remove(&self, tx: &Transaction<'_>, k: &K::Borrowed) -> Result<Option<V>> {
        self.shard(tx, k)?.remove(tx, k)
    }
}

impl<K: Persistent + Copy, V: Persistent + Copy, const SHARDS: usize> PConcurrentMap<K, V, SHARDS> {
    /// Copies every entry (shard by shard, in table order). Locks every shard shared; 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout).
    pub fn to_vec(&self, tx: &Transaction<'_>) -> Result<Vec<(K, V)>> {
        Ok(self.read_all(tx, |m| m.iter(tx).collect::<Vec<_>>())?.concat())
    }
}

impl<K: PKey + PToOwned, V: PToOwned, const SHARDS: usize> PConcurrentMap<K, V, SHARDS> {
    /// Owned copies of every entry (shard by shard, in table order), whatever the key and
    /// value types: `PString` keys and values as `String`s, `PVec<T>` values as `Vec<T>`s,
    /// `Copy` ones as themselves ([`PToOwned`]). Locks every shard shared (no reference into a
    /// shard is handed out, so concurrent readers stay sound); 0 drains.
    ///
    /// # Errors
    ///
    /// [`Error::LockTimeout`](ptm::Error::LockTimeout); a corrupted shard.
    pub fn to_vec_owned(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<(<K as PToOwned>::Owned, <V as PToOwned>::Owned)>> {
        let parts = self.read_all(tx, |m| m.to_vec_owned(tx))?;
        let mut out = Vec::new();
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }
}

/// Nested collections as values (`PConcurrentMap<PString, PVec<u64>>`): a reference to a
/// handle could be written through, so it is handed out only under the shard's **exclusive**
/// hold, kept to the end of the transaction; no other transaction reaches the shard meanwhile.
impl<K: PKey, V: PHandle, const SHARDS: usize> PConcurrentMap<K, V, SHARDS> {
    /// A reference to the value for `k`. Locks `k`'s shard exclusively; 0 drains.
    ///
    /// # Errors
    ///
    /// As [`get_for_update`](PConcurrentMap::get_for_update).
    pub fn get_ref<'t>(&'t self, tx: &'t Transaction<'_>, k: &K::Borrowed) -> Result<Option<Nested<'t, V>>> {
        self.shard(tx, k)?.get_ref(tx, k)
    }

    /// The value for `k`, inserting an empty handle first if absent: the way to create a nested
    /// collection. Locks `k`'s shard exclusively; 2 drains when it inserts, 0 when not.
    ///
    /// # Errors
    ///
    /// As [`insert`](PConcurrentMap::insert).
    pub fn get_or_insert_new<'t>(
        &'t self,
        tx: &'t Transaction<'_>,
        k: impl AsKey<K>,
    ) -> Result<Nested<'t, V>> {
        self.shard(tx, k.as_key())?.get_or_insert_new(tx, k)
    }
}

impl<K, V, const SHARDS: usize> fmt::Debug for PConcurrentMap<K, V, SHARDS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PConcurrentMap {{ shards: {SHARDS}, .. }}")
    }
}

impl<K: Persistent, V: Persistent> ptm::pmem_core::schema::Schema for Shard<K, V> {
    fn describe(d: &mut ptm::pmem_core::schema::Describer) -> ptm::pmem_core::schema::TypeSchema {
        ptm::pmem_core::schema::TypeSchema::generic(
            "Shard",
            size_of::<Self>(),
            vec![("K", d.of::<K>()), ("V", d.of::<V>())],
        )
    }
}
