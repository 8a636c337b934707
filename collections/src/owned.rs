//! Values a collection can hold: [`PValue`] (anything `Persistent`, and what it owns),
//! [`PHandle`] (a collection handle stored inside another collection), the keys of a
//! [`PHashMap`]: [`PKey`] (`Copy` values, [`PString`], `PVec<T>`) and [`AsKey`] (what an
//! inserting method accepts as a key), and the ordered keys of a [`PBTreeMap`]: [`POrdKey`].

use std::borrow::Borrow;
use std::cmp::Ordering;

use ptm::pmem_core::bytes_of;
use ptm::{Persistent, Result, Transaction};

use crate::raw;
use crate::{PBTreeMap, PBTreeSet, PBox, PHashMap, PHashSet, PQueue, PString, PVec};

/// A value a collection can hold: every `Persistent + Copy` type (owning nothing), and the
/// collection handles of this crate ([`PString`], [`PVec`], [`PHashMap`], [`PQueue`],
/// [`PBox`], [`PBTreeMap`]), which own heap blocks.
///
/// A collection that discards a value (`pop_free`, `remove_free`, `truncate`, `clear`, `free`)
/// calls [`free_owned`](PValue::free_owned) on it first when [`OWNS`](PValue::OWNS) is true, so
/// dropping a `PVec<PString>` frees every string's buffer too.
///
/// For your own persistent struct of handles and cells, derive it (with [`PHandle`], so that
/// the struct can be stored in place as a `PVec` element or a `PHashMap` value): freeing the
/// struct frees every field, with no `unsafe` in your code. Every field must be a handle or a
/// `PCell<T>` of a `Copy` value (see the derive's documentation for why a plain `u64` cannot be);
/// a struct of plain `Copy` values needs no derive.
///
/// ```
/// use ptm::{Checked, PCell, Persistent};
/// use ptm_collections::{PString, PVec, PValue};
///
/// #[derive(Persistent, Clone, Copy, Debug, PartialEq)]
/// #[repr(u8)]
/// enum Level {
///     Guest,
///     Admin,
/// }
///
/// #[derive(Persistent, PValue)]
/// #[repr(C)]
/// struct User {
///     name: PString,
///     scores: PVec<u64>,
///     level: PCell<Checked<Level>>,
///     _pad: PCell<[u8; 7]>,
/// }
///
/// #[derive(Persistent)]
/// #[repr(C)]
/// struct Root {
///     users: PVec<User>,
/// }
///
/// # fn main() -> ptm::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let pool = ptm::Pool::<Root>::create(dir.path().join("u.pool"), 8 << 20, &Default::default())?;
/// pool.transaction(|tx, r| {
///     let u = r.users.push_new(tx)?;
///     u.name.set(tx, "ada")?;
///     u.scores.extend(tx, [3, 1, 4])?;
///     u.level.store(tx, Level::Admin)
/// })?;
/// pool.transaction(|tx, r| {
///     let u = r.users.get_ref(tx, 0)?.expect("pushed");
///     assert_eq!(u.name.as_string(tx)?, "ada");
///     assert_eq!(u.level.load(tx)?, Level::Admin);
///     // Frees the string's and the vector's buffers too.
///     r.users.pop_free(tx)
/// })?;
/// # Ok(()) }
/// ```
///
/// Implementing it by hand is `unsafe` (`free_owned` must free exactly what the value owns,
/// and `PHandle` has a contract of its own); the derive writes both from the fields.
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
    /// The collections call it as the **last** step of the discarding operation's snapshot
    /// batch, after every range is added, so that a batch that fails (e.g.
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace) when the undo log cannot grow) has freed
    /// nothing while the value is still linked.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidFree`](ptm::Error::InvalidFree) for a corrupted pointer, and the errors
    /// of walking corrupted collections. An error may arrive after part of the value was freed
    /// (a damaged nested collection): the implementations of this crate then
    /// [doom](ptm::Transaction::doom) the transaction, so that it cannot commit frees of
    /// blocks that stay linked. An implementation for your own struct that frees several fields
    /// gets this from the fields' own `free_owned`.
    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()>;
}

/// `r`, dooming `tx` first when it is an error: for the frees of a removal or clear (or a
/// nested value's [`PValue::free_owned`]) that may have recorded some frees before failing on
/// a damaged structure. Committing then would free blocks the data still links, so the
/// transaction must roll back ([`Error::Aborted`](ptm::Error::Aborted) at its end).
pub(crate) fn doom_on_err<T>(tx: &Transaction<'_>, r: Result<T>) -> Result<T> {
    if r.is_err() {
        tx.doom();
    }
    r
}

/// The frees of one removal, clear or release: see [`Frees::walk`].
pub(crate) struct Frees<'a, 'p> {
    tx: &'a Transaction<'p>,
    any: bool,
}

impl<'a, 'p> Frees<'a, 'p> {
    /// Runs `body`, which frees blocks and values through the given `Frees` (and reads the
    /// structure it walks): an error after a free was recorded (or from a nested value's free,
    /// which may have freed part of the value) dooms the transaction; an error before any free
    /// recorded nothing and does not.
    pub(crate) fn walk(tx: &'a Transaction<'p>, body: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let mut f = Frees { tx, any: false };
        let r = body(&mut f);
        if r.is_err() && f.any {
            tx.doom();
        }
        r
    }

    /// Frees `p` (at commit).
    pub(crate) fn block<T>(&mut self, p: ptm::PPtr<T>) -> Result<()> {
        self.tx.free(p)?;
        self.any = true;
        Ok(())
    }

    /// Frees what `v` owns (at commit).
    ///
    /// # Safety
    ///
    /// As [`PValue::free_owned`].
    pub(crate) unsafe fn value<V: PValue>(&mut self, v: &V) -> Result<()> {
        if !V::OWNS {
            return Ok(());
        }
        self.any = true;
        // SAFETY: forwarded contract.
        unsafe { v.free_owned(self.tx) }
    }
}

/// `r`, freeing first, when it is an error, the blocks `fresh` that the failed operation
/// allocated in this transaction (so that a caller that goes on after the error leaks
/// nothing).
pub(crate) fn or_free_fresh<T>(tx: &Transaction<'_>, fresh: &[ptm::PPtr<u8>], r: Result<T>) -> Result<T> {
    if r.is_err() {
        for &b in fresh {
            // Blocks of this transaction: freeing them logs nothing and cannot fail unless the
            // allocator's state is broken, which the error returned already reports.
            let _ = tx.free(b);
        }
    }
    r
}

impl<T: Persistent + Copy> PValue for T {
    const OWNS: bool = false;

    unsafe fn free_owned(&self, _tx: &Transaction<'_>) -> Result<()> {
        Ok(())
    }
}

/// A handle that a collection stores **in place**: [`PVec::push_new`], [`PVec::get_ref`],
/// [`PHashMap::get_or_insert_new`], [`PHashMap::get_ref`], [`PQueue::push_new`],
/// [`PQueue::front_ref`], [`PBox::get_or_init_new`] and [`PBox::get_ref`] hand out `&T` into
/// the pool, and the collection moves it by copying its bytes (growth) and creates one by
/// zeroing bytes.
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
        doom_on_err(tx, unsafe { self.release(tx) })
    }
}

// SAFETY: `repr(transparent)` over a `PVec<u8>` (three `PCell`s); zero is the empty string.
unsafe impl PHandle for PString {}

impl<T: PValue> PValue for PVec<T> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        doom_on_err(tx, unsafe { self.release(tx) })
    }
}

// SAFETY: three `PCell`s (buffer, length, capacity); zero is the empty vector; the buffer does
// not point back at the handle.
unsafe impl<T: PValue> PHandle for PVec<T> {}

impl<K: PKey, V: PValue> PValue for PHashMap<K, V> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        doom_on_err(tx, unsafe { self.release(tx) })
    }
}

// SAFETY: four `PCell`s and a zero-sized marker; zero is the empty map (null table).
unsafe impl<K: PKey, V: PValue> PHandle for PHashMap<K, V> {}

impl<T: PValue> PValue for PQueue<T> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        doom_on_err(tx, unsafe { self.release(tx) })
    }
}

// SAFETY: six `PCell`s; zero is the empty queue (no directory); neither the directory nor the
// chunks point back at the handle.
unsafe impl<T: PValue> PHandle for PQueue<T> {}

impl<T: PValue> PValue for PBox<T> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        doom_on_err(tx, unsafe { self.release(tx) })
    }
}

// SAFETY: one `PCell` of a pointer; zero is the empty box; the block does not point back at
// the handle.
unsafe impl<T: PValue> PHandle for PBox<T> {}

impl<K: POrdKey, V: PValue> PValue for PBTreeMap<K, V> {
    const OWNS: bool = true;

    unsafe fn free_owned(&self, tx: &Transaction<'_>) -> Result<()> {
        // SAFETY: forwarded contract.
        doom_on_err(tx, unsafe { self.release(tx) })
    }
}

// SAFETY: two `PCell`s and a zero-sized marker; zero is the empty tree (null root); no node
// points back at the handle.
unsafe impl<K: POrdKey, V: PValue> PHandle for PBTreeMap<K, V> {}

/// A key type of [`PHashMap`]: every `Persistent + Copy` type (compared and hashed by its
/// bytes, looked up by `&K`), [`PString`] (by its UTF-8 contents, looked up by `&str`) and
/// `PVec<T>` for a `Copy` `T` (by its elements' bytes, looked up by `&[T]`).
///
/// A key that owns memory (`PString`, `PVec`) is stored **in the table's key slot** as a
/// handle owning its own buffer: inserting a new key allocates that buffer (fresh memory,
/// never copied into the undo log), and removing the entry, `clear` and `free` free it, with
/// no drain beyond the operation's usual 2.
///
/// The hash of a stored key is [`key_hash`](PKey::key_hash), which must equal the
/// [`borrowed_hash`](PKey::borrowed_hash) of its borrowed form; both are part of the
/// on-media format. For `Copy` keys it is the byte hash the map always used; for a `PString` or
/// a `PVec<T>` it is the same function over the contents' bytes (so the string `"abc"` and
/// the array `*b"abc"` hash alike, as the same bytes should).
///
/// **Seeded hashing.** A map created by this build draws a random 56-bit seed at its first
/// insert (again after `clear`) and hashes keys with
/// [`seeded_borrowed_hash`](PKey::seeded_borrowed_hash) /
/// [`seeded_key_hash`](PKey::seeded_key_hash): SipHash-1-3 keyed by the seed over the same
/// bytes, so that nobody who does not know the seed can choose keys that collide. Seed 0 is
/// the fixed hash above (maps written before seeds). A key type implementing `PKey` itself gets
/// default seeded methods that key-hash its fixed 64-bit hash: keys whose fixed hashes collide
/// still collide, which the map survives (at a linear cost per operation, see [`PHashMap`])
/// but does not prevent; override both to hash the key's contents.
///
/// ```
/// use ptm::{Persistent, Pool};
/// use ptm_collections::{PHashMap, PString, PVec};
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     ages: PHashMap<PString, u64>,
///     tags: PHashMap<PString, PVec<u64>>,
/// }
///
/// # fn main() -> ptm::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let pool = Pool::<Root>::create(dir.path().join("k.pool"), 8 << 20, &Default::default())?;
/// pool.transaction(|tx, r| {
///     r.ages.insert(tx, "ada", 36)?;
///     r.tags.get_or_insert_new(tx, "ada")?.push(tx, 7)?;
///     assert_eq!(r.ages.get(tx, "ada")?, Some(36));
///     assert_eq!(r.tags.get_ref(tx, "ada")?.map(|v| v.len(tx)), Some(1));
///     for (name, age) in r.ages.iter(tx) {
///         assert_eq!((name.as_string(tx)?.as_str(), age), ("ada", 36));
///     }
///     // Frees the key's buffer too.
///     assert_eq!(r.ages.remove(tx, "ada")?, Some(36));
///     Ok::<_, ptm::Error>(())
/// })?;
/// # Ok(()) }
/// ```
///
/// # Safety
///
/// The map moves keys by copying their bytes (a rebuild) and reads them through `&Self`
/// references to their slot in the table. Implement it only for a type where:
/// - copying its bytes elsewhere is a valid move (no block it owns records where it is), and,
///   when it owns blocks ([`PValue::OWNS`]), the all-zero bit pattern is a valid value owning
///   nothing (the old copy is zeroed);
/// - a `&Self` into a table may coexist with the map's writes to other slots, and, when
///   [`Ref`](PKey::Ref) borrows the key or the key owns blocks, every byte of `Self` is inside a
///   [`PCell`](ptm::PCell) (like a [`PHandle`]);
/// - [`key_new`](PKey::key_new) returns a value owning only blocks allocated by `tx` for it, and
///   [`key_hash`](PKey::key_hash) of a stored key equals [`borrowed_hash`](PKey::borrowed_hash)
///   of every borrowed form it is [`key_eq`](PKey::key_eq) to (else entries are lost: a logic
///   error, not a safety one);
/// - [`key_hash`](PKey::key_hash) and [`key_eq`](PKey::key_eq) only read (through
///   [`PCell::get`](ptm::PCell::get)): [`PConcurrentMap`](crate::PConcurrentMap) calls them
///   under a shared lock, from several threads at once.
///
/// `Copy` types get it from a blanket implementation; [`PString`] and `PVec<T>` implement it.
pub unsafe trait PKey: PValue {
    /// The form a lookup takes: `Self` for `Copy` keys, `str` for [`PString`], `[T]` for
    /// `PVec<T>`.
    type Borrowed: ?Sized;

    /// What iteration hands out for a stored key: a copy for `Copy` keys, a reference to the
    /// stored handle for `PString` and `PVec` (changing a key through it is a logic error, as
    /// for a std `HashMap` key changed through a `Cell`: the entry is then not found by its
    /// new contents; never undefined behaviour).
    type Ref<'a>
    where
        Self: 'a;

    /// The hash of a borrowed key (part of the on-media format).
    fn borrowed_hash(b: &Self::Borrowed) -> u64;

    /// The hash of this stored key: the [`borrowed_hash`](PKey::borrowed_hash) of its borrowed
    /// form.
    ///
    /// # Errors
    ///
    /// Only for a corrupted key handle.
    fn key_hash(&self, tx: &Transaction<'_>) -> Result<u64>;

    /// The hash of a borrowed key under a map's hash `seed` (part of the on-media format): the
    /// fixed [`borrowed_hash`](PKey::borrowed_hash) for seed 0; by default, for any other seed,
    /// SipHash-1-3 keyed by the seed over the 8 bytes of the fixed hash. The keys of this crate
    /// hash their bytes instead.
    fn seeded_borrowed_hash(b: &Self::Borrowed, seed: u64) -> u64 {
        if seed == 0 {
            Self::borrowed_hash(b)
        } else {
            raw::hash_bytes_seeded(seed, &Self::borrowed_hash(b).to_le_bytes())
        }
    }

    /// The hash of this stored key under a map's hash `seed`: the
    /// [`seeded_borrowed_hash`](PKey::seeded_borrowed_hash) of its borrowed form.
    ///
    /// # Errors
    ///
    /// Only for a corrupted key handle.
    fn seeded_key_hash(&self, tx: &Transaction<'_>, seed: u64) -> Result<u64> {
        let h = self.key_hash(tx)?;
        Ok(if seed == 0 {
            h
        } else {
            raw::hash_bytes_seeded(seed, &h.to_le_bytes())
        })
    }

    /// Whether this stored key equals `b`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted key handle.
    fn key_eq(&self, tx: &Transaction<'_>, b: &Self::Borrowed) -> Result<bool>;

    /// A new key equal to `b`, **by value**, owning fresh blocks of `tx` if any (a `PString` key
    /// allocates its buffer here, before the map's snapshot, so an insert still costs 2
    /// drains). The map stores it by copying its bytes into the key slot.
    ///
    /// # Safety
    ///
    /// The returned value is a handle outside the pool: the caller copies its bytes into a
    /// slot of a collection in the pool, or releases it with [`PValue::free_owned`], in this
    /// transaction, and never uses the value itself afterwards (a kept copy would be a second
    /// owner of the blocks, able to reach them after they are freed and reused).
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace).
    unsafe fn key_new(tx: &Transaction<'_>, b: &Self::Borrowed) -> Result<Self>;

    /// The iteration form of this stored key.
    fn key_ref(&self) -> Self::Ref<'_>;
}

// SAFETY: a `Copy` key owns nothing and is moved by its bytes; `Ref` is a copy, so `&Self` into
// the table is only held while the map reads it, never across a write.
unsafe impl<T: Persistent + Copy> PKey for T {
    type Borrowed = T;
    type Ref<'a> = T;

    fn borrowed_hash(b: &T) -> u64 {
        raw::hash_bytes(bytes_of(b))
    }

    fn key_hash(&self, _tx: &Transaction<'_>) -> Result<u64> {
        Ok(Self::borrowed_hash(self))
    }

    fn seeded_borrowed_hash(b: &T, seed: u64) -> u64 {
        raw::hash_bytes_seeded(seed, bytes_of(b))
    }

    fn seeded_key_hash(&self, _tx: &Transaction<'_>, seed: u64) -> Result<u64> {
        Ok(Self::seeded_borrowed_hash(self, seed))
    }

    fn key_eq(&self, _tx: &Transaction<'_>, b: &T) -> Result<bool> {
        Ok(bytes_of(self) == bytes_of(b))
    }

    unsafe fn key_new(_tx: &Transaction<'_>, b: &T) -> Result<T> {
        Ok(*b)
    }

    fn key_ref(&self) -> T {
        *self
    }
}

// SAFETY: three `PCell`s (all-zero is the empty vector owning nothing); the buffer does not
// point back at the handle; `key_new` allocates the buffer in `tx`.
unsafe impl<T: Persistent + Copy> PKey for PVec<T> {
    type Borrowed = [T];
    type Ref<'a> = &'a PVec<T>;

    fn borrowed_hash(b: &[T]) -> u64 {
        raw::hash_bytes(raw::slice_bytes(b))
    }

    fn key_hash(&self, tx: &Transaction<'_>) -> Result<u64> {
        self.contents_hash(tx, 0)
    }

    fn seeded_borrowed_hash(b: &[T], seed: u64) -> u64 {
        raw::hash_bytes_seeded(seed, raw::slice_bytes(b))
    }

    fn seeded_key_hash(&self, tx: &Transaction<'_>, seed: u64) -> Result<u64> {
        self.contents_hash(tx, seed)
    }

    fn key_eq(&self, tx: &Transaction<'_>, b: &[T]) -> Result<bool> {
        self.contents_eq(tx, raw::slice_bytes(b))
    }

    unsafe fn key_new(tx: &Transaction<'_>, b: &[T]) -> Result<Self> {
        PVec::new_exact(tx, b)
    }

    fn key_ref(&self) -> &Self {
        self
    }
}

// SAFETY: `repr(transparent)` over a `PVec<u8>`, a key as above.
unsafe impl PKey for PString {
    type Borrowed = str;
    type Ref<'a> = &'a PString;

    fn borrowed_hash(b: &str) -> u64 {
        raw::hash_bytes(b.as_bytes())
    }

    fn key_hash(&self, tx: &Transaction<'_>) -> Result<u64> {
        self.as_bytes_vec().contents_hash(tx, 0)
    }

    fn seeded_borrowed_hash(b: &str, seed: u64) -> u64 {
        raw::hash_bytes_seeded(seed, b.as_bytes())
    }

    fn seeded_key_hash(&self, tx: &Transaction<'_>, seed: u64) -> Result<u64> {
        self.as_bytes_vec().contents_hash(tx, seed)
    }

    fn key_eq(&self, tx: &Transaction<'_>, b: &str) -> Result<bool> {
        self.as_bytes_vec().contents_eq(tx, b.as_bytes())
    }

    unsafe fn key_new(tx: &Transaction<'_>, b: &str) -> Result<Self> {
        Ok(PString::from_bytes_vec(PVec::new_exact(tx, b.as_bytes())?))
    }

    fn key_ref(&self) -> &Self {
        self
    }
}

/// What the inserting methods of a [`PHashMap<K, V>`](PHashMap) accept as a key: the key
/// itself for a `Copy` key (`m.insert(tx, 7, x)`), `&str` or `String` for a [`PString`] key
/// (`m.insert(tx, "ada", x)`), `&[T]` or `Vec<T>` for a `PVec<T>` key.
pub trait AsKey<K: PKey> {
    /// The borrowed form of the key.
    fn as_key(&self) -> &K::Borrowed;
}

impl<K: Persistent + Copy> AsKey<K> for K {
    fn as_key(&self) -> &K {
        self
    }
}

impl AsKey<PString> for &str {
    fn as_key(&self) -> &str {
        self
    }
}

impl AsKey<PString> for String {
    fn as_key(&self) -> &str {
        self
    }
}

impl AsKey<PString> for &String {
    fn as_key(&self) -> &str {
        self
    }
}

impl<T: Persistent + Copy> AsKey<PVec<T>> for &[T] {
    fn as_key(&self) -> &[T] {
        self
    }
}

impl<T: Persistent + Copy> AsKey<PVec<T>> for Vec<T> {
    fn as_key(&self) -> &[T] {
        self
    }
}

impl<T: Persistent + Copy> AsKey<PVec<T>> for &Vec<T> {
    fn as_key(&self) -> &[T] {
        self
    }
}

/// A key type of [`PBTreeMap`]: a [`PKey`] whose borrowed form is ordered. Implemented by every
/// `Persistent + Copy + Ord` type (compared by its [`Ord`], as before: a comparison is the
/// type's own, with no pool read), [`PString`] (by its UTF-8 bytes, which is `str`'s order;
/// looked up and ranged by `&str`) and `PVec<u8>` (byte-lexicographic, `[u8]`'s order; by
/// `&[u8]`).
///
/// A [`PString`] or `PVec<u8>` key is stored in its node slot as a handle owning a buffer of
/// exactly its bytes. Separator keys of internal nodes are **copies that own their own
/// buffer** (made when a leaf split or a leaf borrow sets a separator, freed when a merge or
/// borrow drops it), so no buffer is reached twice (see the B-tree section of
/// `docs/design.md`).
///
/// The order must be the same in every build that opens the pool (it is part of the tree's
/// on-media invariants); an order that is not total, or that disagrees between
/// [`key_cmp`](POrdKey::key_cmp) and the borrowed form's [`Ord`], loses entries (a logic error,
/// not a safety one).
///
/// ```
/// use ptm::{Persistent, Pool};
/// use ptm_collections::{PBTreeMap, PString, PVec};
///
/// #[derive(Persistent)]
/// #[persistent(crate = "ptm::pmem_core")]
/// #[repr(C)]
/// struct Root {
///     ages: PBTreeMap<PString, u64>,
///     tags: PBTreeMap<PString, PVec<u64>>,
/// }
///
/// # fn main() -> ptm::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// let pool = Pool::<Root>::create(dir.path().join("b.pool"), 8 << 20, &Default::default())?;
/// pool.transaction(|tx, r| {
///     for (name, age) in [("bob", 41), ("ada", 36), ("cy", 7)] {
///         r.ages.insert(tx, name, age)?;
///     }
///     r.tags.get_or_insert_new(tx, "ada")?.push(tx, 7)?;
///     assert_eq!(r.ages.get(tx, "bob")?, Some(41));
///     let names: Vec<String> = r
///         .ages
///         .range(tx, "ada".."cy")?
///         .map(|(k, _)| k.as_string(tx))
///         .collect::<ptm::Result<_>>()?;
///     assert_eq!(names, ["ada", "bob"]);
///     assert_eq!(r.tags.get_ref(tx, "ada")?.map(|v| v.len(tx)), Some(1));
///     // Frees the key's buffer, the vector's buffer and the nodes.
///     r.tags.clear(tx)?;
///     Ok::<_, ptm::Error>(())
/// })?;
/// # Ok(()) }
/// ```
pub trait POrdKey: PKey<Borrowed: Ord> {
    /// What the bounds of a [`PBTreeMap::range`] are: `Self` for `Copy` keys (`range(tx, 3..7)`),
    /// `&str` for [`PString`] (`range(tx, "a".."m")`), `&[u8]` for `PVec<u8>`.
    type RangeKey<'b>;

    /// An owned copy of a key's contents: `Self` for `Copy` keys, `String` for [`PString`],
    /// `Vec<u8>` for `PVec<u8>` (what [`PBTreeMap::to_vec`] returns).
    type Owned: Borrow<Self::Borrowed> + Clone;

    /// The borrowed form of a range bound.
    fn range_key<'b>(b: &'b Self::RangeKey<'_>) -> &'b Self::Borrowed;

    /// An owned copy of a borrowed key.
    fn to_owned_key(b: &Self::Borrowed) -> Self::Owned;

    /// How this stored key compares with `b`.
    ///
    /// # Errors
    ///
    /// Only for a corrupted key handle.
    fn key_cmp(&self, tx: &Transaction<'_>, b: &Self::Borrowed) -> Result<Ordering>;

    /// An owned copy of this stored key's contents.
    ///
    /// # Errors
    ///
    /// Only for a corrupted key handle.
    fn key_owned(&self, tx: &Transaction<'_>) -> Result<Self::Owned>;

    /// A new key equal to this stored one, **by value**, owning fresh blocks of `tx` if any
    /// (a separator copy: the B-tree stores it by bytes into an internal node).
    ///
    /// # Safety
    ///
    /// As [`PKey::key_new`].
    ///
    /// # Errors
    ///
    /// [`Error::OutOfSpace`](ptm::Error::OutOfSpace), and a corrupted key handle.
    unsafe fn key_dup(&self, tx: &Transaction<'_>) -> Result<Self>;

    /// The iteration form of a key stored in a node, given `copy`, a copy of its bytes, and
    /// `stored`, which reaches the stored key in the pool: a `Copy` key returns the copy (no
    /// pool read), a handle key the reference.
    ///
    /// # Errors
    ///
    /// Those of `stored`.
    fn ref_from<'t>(copy: &Self, stored: impl FnOnce() -> Result<&'t Self>) -> Result<Self::Ref<'t>>
    where
        Self: 't;
}

impl<T: Persistent + Copy + Ord> POrdKey for T {
    type RangeKey<'b> = T;
    type Owned = T;

    #[inline]
    fn range_key(b: &T) -> &T {
        b
    }

    #[inline]
    fn to_owned_key(b: &T) -> T {
        *b
    }

    #[inline]
    fn key_cmp(&self, _tx: &Transaction<'_>, b: &T) -> Result<Ordering> {
        Ok(self.cmp(b))
    }

    #[inline]
    fn key_owned(&self, _tx: &Transaction<'_>) -> Result<T> {
        Ok(*self)
    }

    #[inline]
    unsafe fn key_dup(&self, _tx: &Transaction<'_>) -> Result<T> {
        Ok(*self)
    }

    #[inline]
    fn ref_from<'t>(copy: &T, _stored: impl FnOnce() -> Result<&'t T>) -> Result<T>
    where
        T: 't,
    {
        Ok(*copy)
    }
}

impl POrdKey for PVec<u8> {
    type RangeKey<'b> = &'b [u8];
    type Owned = Vec<u8>;

    fn range_key<'b>(b: &'b &[u8]) -> &'b [u8] {
        b
    }

    fn to_owned_key(b: &[u8]) -> Vec<u8> {
        b.to_vec()
    }

    fn key_cmp(&self, tx: &Transaction<'_>, b: &[u8]) -> Result<Ordering> {
        self.contents_cmp(tx, b)
    }

    fn key_owned(&self, tx: &Transaction<'_>) -> Result<Vec<u8>> {
        self.to_vec(tx)
    }

    unsafe fn key_dup(&self, tx: &Transaction<'_>) -> Result<Self> {
        PVec::new_exact(tx, &self.to_vec(tx)?)
    }

    fn ref_from<'t>(_copy: &Self, stored: impl FnOnce() -> Result<&'t Self>) -> Result<&'t Self> {
        stored()
    }
}

impl POrdKey for PString {
    type RangeKey<'b> = &'b str;
    type Owned = String;

    fn range_key<'b>(b: &'b &str) -> &'b str {
        b
    }

    fn to_owned_key(b: &str) -> String {
        b.to_owned()
    }

    fn key_cmp(&self, tx: &Transaction<'_>, b: &str) -> Result<Ordering> {
        self.as_bytes_vec().contents_cmp(tx, b.as_bytes())
    }

    fn key_owned(&self, tx: &Transaction<'_>) -> Result<String> {
        self.as_string(tx)
    }

    unsafe fn key_dup(&self, tx: &Transaction<'_>) -> Result<Self> {
        // The bytes as stored (not through `as_string`, which would replace invalid UTF-8).
        let bytes = self.as_bytes_vec().to_vec(tx)?;
        Ok(PString::from_bytes_vec(PVec::new_exact(tx, &bytes)?))
    }

    fn ref_from<'t>(_copy: &Self, stored: impl FnOnce() -> Result<&'t Self>) -> Result<&'t Self> {
        stored()
    }
}

// Schemas (see `ptm::pmem_core::schema`): each collection handle is named with its element,
// key and value types, so that a pool is not opened with another element type.

use ptm::pmem_core::schema::{Describer, Schema, TypeSchema};

impl Schema for PString {
    fn describe(_: &mut Describer) -> TypeSchema {
        TypeSchema::scalar("PString", size_of::<Self>())
    }
}

macro_rules! handle_schemas {
    ($($t:ident<$($p:ident),+>),* $(,)?) => {$(
        impl<$($p: Persistent),+> Schema for $t<$($p),+> {
            fn describe(d: &mut Describer) -> TypeSchema {
                TypeSchema::generic(
                    stringify!($t),
                    size_of::<Self>(),
                    vec![$((stringify!($p), d.of::<$p>())),+],
                )
            }
        }
    )*};
}

handle_schemas!(PVec<T>, PQueue<T>, PBox<T>, PHashMap<K, V>, PBTreeMap<K, V>, PHashSet<K>, PBTreeSet<K>);

impl<K: Persistent, V: Persistent, const SHARDS: usize> Schema for crate::PConcurrentMap<K, V, SHARDS> {
    fn describe(d: &mut Describer) -> TypeSchema {
        TypeSchema::generic(
            "PConcurrentMap",
            size_of::<Self>(),
            vec![("K", d.of::<K>()), ("V", d.of::<V>())],
        )
    }
}

/// Support for `#[derive(PValue)]`; not part of the public API.
#[doc(hidden)]
pub mod __derive {
    pub use ptm::{Result, Transaction};

    use super::PHandle;
    use ptm::{PCell, Persistent};

    /// A field `#[derive(PValue)]` accepts: a handle, or a `PCell` of a `Copy` value.
    ///
    /// # Safety
    ///
    /// Implement it only for types that meet [`PHandle`]'s contract (every byte inside a
    /// `PCell`, all-zero empty and owning nothing, `!Sync`, position-independent), with
    /// `free_field` freeing exactly what the field owns.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a field of a `#[derive(PValue)]` struct",
        label = "not a collection handle or a `PCell`",
        note = "a struct stored in place inside a collection is moved and zeroed by it while references \
                to it may exist, so every byte must be inside a cell: use a handle (`PString`, `PVec<T>`, \
                `PHashMap<K, V>`, `PQueue<T>`, `PBox<T>`, `PBTreeMap<K, V>`, a `#[derive(PValue)]` struct) \
                or `PCell<T>` for a `Copy` value"
    )]
    pub unsafe trait HandleField {
        /// Whether the field may own heap blocks.
        const OWNS: bool;

        /// Frees what the field owns (as [`PValue::free_owned`](super::PValue::free_owned)).
        ///
        /// # Safety
        ///
        /// As [`PValue::free_owned`](super::PValue::free_owned): the field is being discarded.
        unsafe fn free_field(&self, tx: &Transaction<'_>) -> Result<()>;
    }

    // SAFETY: a `PHandle` meets the contract by its own; `free_field` is its `free_owned`.
    unsafe impl<T: PHandle> HandleField for T {
        const OWNS: bool = T::OWNS;

        unsafe fn free_field(&self, tx: &Transaction<'_>) -> Result<()> {
            if !T::OWNS {
                return Ok(());
            }
            // SAFETY: forwarded contract.
            unsafe { self.free_owned(tx) }
        }
    }

    // SAFETY: a `PCell` holds its value inside its `UnsafeCell` (every byte), is `!Sync`, owns
    // nothing (a `PPtr` in it is not followed), and all-zero is a valid `Copy` value of a
    // `Persistent` type; copying the bytes moves it.
    unsafe impl<T: Persistent + Copy> HandleField for PCell<T> {
        const OWNS: bool = false;

        unsafe fn free_field(&self, _tx: &Transaction<'_>) -> Result<()> {
            Ok(())
        }
    }
}

/// A stored value that can be copied out of the pool into an owned Rust value, for reads that
/// must not hand out references into a collection (the shared reads of a
/// [`PConcurrentMap`](crate::PConcurrentMap)): `Copy` types (as themselves), [`PString`] (as a
/// `String`) and `PVec<T>` of `Copy` elements (as a `Vec<T>`).
pub trait PToOwned: PValue {
    /// The owned copy.
    type Owned;

    /// An owned copy of this stored value. 0 drains.
    ///
    /// # Errors
    ///
    /// Only for a corrupted value (a damaged handle).
    fn to_owned_value(&self, tx: &Transaction<'_>) -> Result<Self::Owned>;
}

impl<T: Persistent + Copy> PToOwned for T {
    type Owned = T;

    fn to_owned_value(&self, _tx: &Transaction<'_>) -> Result<T> {
        Ok(*self)
    }
}

impl PToOwned for PString {
    type Owned = String;

    fn to_owned_value(&self, tx: &Transaction<'_>) -> Result<String> {
        self.as_string(tx)
    }
}

impl<T: Persistent + Copy> PToOwned for PVec<T> {
    type Owned = Vec<T>;

    fn to_owned_value(&self, tx: &Transaction<'_>) -> Result<Vec<T>> {
        self.to_vec(tx)
    }
}
