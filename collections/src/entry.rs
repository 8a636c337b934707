//! [`Entry`]: std's entry API for [`PHashMap`] and [`PBTreeMap`] with `Copy` values and `Copy`
//! or [`PString`] keys.

use std::fmt;

use ptm::{Persistent, Result, Transaction};

use crate::btree::PBTreeMap;
use crate::map::PHashMap;
use crate::{POrdKey, PString};

/// The operations an [`Entry`] needs from its map (implemented by [`PHashMap`] and
/// [`PBTreeMap`] for `Copy` values, with `Copy` keys or [`PString`] keys, whose entries hold
/// the key as a `String`; sealed).
pub trait EntryMap: sealed::Sealed {
    /// The key an entry holds: the key itself for `Copy` keys, a `String` for `PString` keys.
    type Key;
    /// The value type.
    type Value: Copy;

    /// A copy of the value for `k`.
    ///
    /// # Errors
    ///
    /// As the map's `get`.
    fn entry_get(&self, tx: &Transaction<'_>, k: &Self::Key) -> Result<Option<Self::Value>>;

    /// Inserts or updates `k`.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    fn entry_insert(
        &self,
        tx: &Transaction<'_>,
        k: &Self::Key,
        v: Self::Value,
    ) -> Result<Option<Self::Value>>;

    /// Removes `k`.
    ///
    /// # Errors
    ///
    /// As the map's `remove`.
    fn entry_remove(&self, tx: &Transaction<'_>, k: &Self::Key) -> Result<Option<Self::Value>>;
}

mod sealed {
    pub trait Sealed {}
    impl<K, V> Sealed for super::PHashMap<K, V> {}
    impl<K, V> Sealed for super::PBTreeMap<K, V> {}
}

/// `EntryMap` for a map type by its own `get`/`insert`/`remove` (the same for both maps).
macro_rules! entry_map {
    ($map:ident, $($bound:tt)+) => {
        impl<K: $($bound)+, V: Persistent + Copy> EntryMap for $map<K, V> {
            type Key = K;
            type Value = V;

            fn entry_get(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
                self.get(tx, k)
            }

            fn entry_insert(&self, tx: &Transaction<'_>, k: &K, v: V) -> Result<Option<V>> {
                self.insert(tx, *k, v)
            }

            fn entry_remove(&self, tx: &Transaction<'_>, k: &K) -> Result<Option<V>> {
                self.remove(tx, k)
            }
        }
    };
}

entry_map!(PHashMap, Persistent + Copy);
entry_map!(PBTreeMap, Persistent + Copy + Ord);

/// `EntryMap` for a map with `PString` keys: the entry holds the key as a `String`.
macro_rules! string_entry_map {
    ($map:ident) => {
        impl<V: Persistent + Copy> EntryMap for $map<PString, V> {
            type Key = String;
            type Value = V;

            fn entry_get(&self, tx: &Transaction<'_>, k: &String) -> Result<Option<V>> {
                self.get(tx, k.as_str())
            }

            fn entry_insert(&self, tx: &Transaction<'_>, k: &String, v: V) -> Result<Option<V>> {
                self.insert(tx, k.as_str(), v)
            }

            fn entry_remove(&self, tx: &Transaction<'_>, k: &String) -> Result<Option<V>> {
                self.remove(tx, k.as_str())
            }
        }
    };
}

string_entry_map!(PHashMap);
string_entry_map!(PBTreeMap);

/// One key of a map, present or absent, as std's `Entry`: made by [`PHashMap::entry`] or
/// [`PBTreeMap::entry`] (a lookup, 0 drains), then read or changed through the transaction it
/// was made in. Values are copies (the maps hold `Copy` values), so a change is a store:
/// [`and_modify`](Entry::and_modify), [`or_insert`](Entry::or_insert) on a vacant entry,
/// [`OccupiedEntry::insert`] and [`OccupiedEntry::remove`] cost the map's usual **2 drains**.
pub enum Entry<'a, 't, M: EntryMap> {
    /// The key is present.
    Occupied(OccupiedEntry<'a, 't, M>),
    /// The key is absent.
    Vacant(VacantEntry<'a, 't, M>),
}

/// A present key of an [`Entry`].
pub struct OccupiedEntry<'a, 't, M: EntryMap> {
    map: &'a M,
    tx: &'a Transaction<'t>,
    key: M::Key,
    value: M::Value,
}

/// An absent key of an [`Entry`].
pub struct VacantEntry<'a, 't, M: EntryMap> {
    map: &'a M,
    tx: &'a Transaction<'t>,
    key: M::Key,
}

impl<'a, 't, M: EntryMap> Entry<'a, 't, M> {
    /// Looks `key` up in `map`.
    pub(crate) fn new(map: &'a M, tx: &'a Transaction<'t>, key: M::Key) -> Result<Self> {
        Ok(match map.entry_get(tx, &key)? {
            Some(value) => Entry::Occupied(OccupiedEntry { map, tx, key, value }),
            None => Entry::Vacant(VacantEntry { map, tx, key }),
        })
    }

    /// The entry's key.
    pub fn key(&self) -> &M::Key {
        match self {
            Entry::Occupied(e) => &e.key,
            Entry::Vacant(e) => &e.key,
        }
    }

    /// The value, inserting `default` first if the key is absent.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    pub fn or_insert(self, default: M::Value) -> Result<M::Value> {
        self.or_insert_with(|| default)
    }

    /// The value, inserting `f()` first if the key is absent.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    pub fn or_insert_with(self, f: impl FnOnce() -> M::Value) -> Result<M::Value> {
        match self {
            Entry::Occupied(e) => Ok(e.value),
            Entry::Vacant(e) => e.insert(f()),
        }
    }

    /// The value, inserting `f(&key)` first if the key is absent.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    pub fn or_insert_with_key(self, f: impl FnOnce(&M::Key) -> M::Value) -> Result<M::Value> {
        match self {
            Entry::Occupied(e) => Ok(e.value),
            Entry::Vacant(e) => {
                let v = f(&e.key);
                e.insert(v)
            }
        }
    }

    /// The value, inserting `Default::default()` first if the key is absent.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    pub fn or_default(self) -> Result<M::Value>
    where
        M::Value: Default,
    {
        self.or_insert_with(Default::default)
    }

    /// If the key is present, applies `f` to its value and stores the result (2 drains);
    /// returns the entry for chaining, like std's.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    pub fn and_modify(self, f: impl FnOnce(&mut M::Value)) -> Result<Self> {
        Ok(match self {
            Entry::Occupied(mut e) => {
                f(&mut e.value);
                e.map.entry_insert(e.tx, &e.key, e.value)?;
                Entry::Occupied(e)
            }
            vacant => vacant,
        })
    }
}

impl<M: EntryMap> OccupiedEntry<'_, '_, M> {
    /// The key.
    pub fn key(&self) -> &M::Key {
        &self.key
    }

    /// A copy of the value (as read when the entry was made, or last stored through it).
    pub fn get(&self) -> M::Value {
        self.value
    }

    /// Stores `v` and returns the previous value. 2 drains.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    pub fn insert(&mut self, v: M::Value) -> Result<M::Value> {
        self.map.entry_insert(self.tx, &self.key, v)?;
        Ok(std::mem::replace(&mut self.value, v))
    }

    /// Removes the key and returns its value. 2 drains.
    ///
    /// # Errors
    ///
    /// As the map's `remove`.
    pub fn remove(self) -> Result<M::Value> {
        self.map.entry_remove(self.tx, &self.key)?;
        Ok(self.value)
    }
}

impl<M: EntryMap> VacantEntry<'_, '_, M> {
    /// The key.
    pub fn key(&self) -> &M::Key {
        &self.key
    }

    /// Inserts `v` under the key and returns it. 2 drains.
    ///
    /// # Errors
    ///
    /// As the map's `insert`.
    pub fn insert(self, v: M::Value) -> Result<M::Value> {
        self.map.entry_insert(self.tx, &self.key, v)?;
        Ok(v)
    }

    /// The key, taken back without inserting.
    pub fn into_key(self) -> M::Key {
        self.key
    }
}

impl<K: Persistent + Copy, V: Persistent + Copy> PHashMap<K, V> {
    /// The [`Entry`] for `key` (a lookup, 0 drains), as `HashMap::entry`; a store through it
    /// looks the key up again (it goes through [`insert`](PHashMap::insert)):
    /// `m.entry(tx, k)?.and_modify(|n| *n += 1)?.or_insert(1)?` counts `k`.
    ///
    /// # Errors
    ///
    /// As [`get`](PHashMap::get).
    pub fn entry<'a, 't>(&'a self, tx: &'a Transaction<'t>, key: K) -> Result<Entry<'a, 't, Self>> {
        Entry::new(self, tx, key)
    }
}

impl<K: Persistent + Copy + Ord, V: Persistent + Copy> PBTreeMap<K, V> {
    /// The [`Entry`] for `key` (a lookup, 0 drains), as `BTreeMap::entry`; a store through it
    /// looks the key up again (it goes through [`insert`](PBTreeMap::insert)).
    ///
    /// # Errors
    ///
    /// As [`get`](PBTreeMap::get).
    pub fn entry<'a, 't>(&'a self, tx: &'a Transaction<'t>, key: K) -> Result<Entry<'a, 't, Self>> {
        Entry::new(self, tx, key)
    }
}

impl<V: Persistent + Copy> PHashMap<PString, V> {
    /// The [`Entry`] for a string key (a lookup, 0 drains), as `HashMap::entry`; the entry
    /// holds the key as a `String`, and a store through it goes through
    /// [`insert`](PHashMap::insert) (which allocates the key's buffer when the key is new).
    ///
    /// # Errors
    ///
    /// As [`get`](PHashMap::get).
    pub fn entry<'a, 't>(
        &'a self,
        tx: &'a Transaction<'t>,
        key: impl Into<String>,
    ) -> Result<Entry<'a, 't, Self>> {
        Entry::new(self, tx, key.into())
    }
}

impl<V: Persistent + Copy> PBTreeMap<PString, V> {
    /// The [`Entry`] for a string key (a lookup, 0 drains), as `BTreeMap::entry`; the entry
    /// holds the key as a `String`, and a store through it goes through
    /// [`insert`](PBTreeMap::insert).
    ///
    /// # Errors
    ///
    /// As [`get`](PBTreeMap::get).
    pub fn entry<'a, 't>(
        &'a self,
        tx: &'a Transaction<'t>,
        key: impl Into<String>,
    ) -> Result<Entry<'a, 't, Self>> {
        Entry::new(self, tx, key.into())
    }
}

impl<K: POrdKey, V: Persistent + Copy> PBTreeMap<K, V>
where
    Self: EntryMap<Key = K::Owned, Value = V>,
{
    /// The entry with the smallest key, if any (`BTreeMap::first_entry`): an
    /// [`OccupiedEntry`] holding a copy of the key and of the value, through which the value
    /// is changed ([`OccupiedEntry::insert`], 2 drains) or the entry removed
    /// ([`OccupiedEntry::remove`], 2 drains). 0 drains to make.
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn first_entry<'a, 't>(
        &'a self,
        tx: &'a Transaction<'t>,
    ) -> Result<Option<OccupiedEntry<'a, 't, Self>>> {
        self.edge_occupied(tx, false)
    }

    /// The entry with the largest key, if any (`BTreeMap::last_entry`); as
    /// [`first_entry`](PBTreeMap::first_entry).
    ///
    /// # Errors
    ///
    /// Corrupted trees.
    pub fn last_entry<'a, 't>(
        &'a self,
        tx: &'a Transaction<'t>,
    ) -> Result<Option<OccupiedEntry<'a, 't, Self>>> {
        self.edge_occupied(tx, true)
    }

    fn edge_occupied<'a, 't>(
        &'a self,
        tx: &'a Transaction<'t>,
        last: bool,
    ) -> Result<Option<OccupiedEntry<'a, 't, Self>>> {
        tx.check_live(self)?;
        Ok(self.edge_entry(tx, last)?.map(|(_, key, value)| OccupiedEntry {
            map: self,
            tx,
            key,
            value,
        }))
    }
}

impl<M: EntryMap> fmt::Debug for Entry<'_, '_, M>
where
    M::Key: fmt::Debug,
    M::Value: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Occupied(e) => f
                .debug_struct("Occupied")
                .field("key", &e.key)
                .field("value", &e.value)
                .finish(),
            Entry::Vacant(e) => f.debug_struct("Vacant").field("key", &e.key).finish(),
        }
    }
}

impl<M: EntryMap> fmt::Debug for OccupiedEntry<'_, '_, M>
where
    M::Key: fmt::Debug,
    M::Value: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OccupiedEntry")
            .field("key", &self.key)
            .field("value", &self.value)
            .finish()
    }
}

impl<M: EntryMap> fmt::Debug for VacantEntry<'_, '_, M>
where
    M::Key: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VacantEntry").field("key", &self.key).finish()
    }
}
