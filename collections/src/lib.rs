//! # ptm-collections
//!
//! Persistent collections for [`ptm`] pools: each is a small fixed-size *handle* (a
//! `#[repr(C)]` struct of [`PCell`](ptm::PCell)s) that lives in the pool's root or in another
//! persistent struct, and owns blocks in the pool's heap.
//!
//! | type | std twin | handle |
//! |---|---|---|
//! | [`PVec<T>`] | `Vec<T>` | 24 bytes |
//! | [`PHashMap<K, V>`] | `HashMap<K, V>` | 32 bytes |
//! | [`PString`] | `String` | 24 bytes |
//! | [`PQueue<T>`] | `VecDeque<T>` | 48 bytes |
//! | [`PBox<T>`] | `Option<Box<T>>` | 8 bytes |
//! | [`PBTreeMap<K, V>`] | `BTreeMap<K, V>` | 16 bytes |
//! | [`PConcurrentMap<K, V, SHARDS>`] | `Mutex<HashMap<K, V>>` × `SHARDS` | 64 × `SHARDS` bytes |
//! | [`PHashSet<K>`] | `HashSet<K>` | 32 bytes (a `PHashMap<K, u8>`) |
//! | [`PBTreeSet<K>`] | `BTreeSet<K>` | 16 bytes (a `PBTreeMap<K, u8>`) |
//!
//! Every handle except [`PConcurrentMap`] is a [`PHandle`], so it can be an element of a
//! `PVec` or `PQueue`, a value of a `PHashMap` or a `PBTreeMap`, or the content of a `PBox`.
//!
//! Elements are `Persistent + Copy` values (integers, `PPtr`s, your own derived structs),
//! copied in and out, or, in a [`PVec`], a [`PQueue`], a [`PBox`] and as [`PHashMap`] and
//! [`PBTreeMap`] values, nested collections: `PVec<PString>`, `PHashMap<u64, PVec<u64>>`,
//! `PBTreeMap<PString, PVec<u64>>`, `PVec<PHashMap<u64, PString>>`, `PQueue<PString>`,
//! `PBox<PVec<u64>>`, or your own struct of handles (see [`PValue`] and [`PHandle`]). Nested
//! handles are created in place ([`PVec::push_new`], [`PHashMap::get_or_insert_new`],
//! [`PBTreeMap::get_or_insert_new`], [`PQueue::push_new`], [`PBox::get_or_init_new`]) and
//! reached by a reference that lives at most as long as the transaction borrow
//! ([`PVec::get_ref`], [`PHashMap::get_ref`], [`PBTreeMap::get_ref`], [`PQueue::front_ref`],
//! [`PBox::get_ref`]).
//!
//! ## Keys
//!
//! [`PHashMap`] keys are [`PKey`]s: any `Persistent + Copy` type (compared and hashed by its
//! bytes), [`PString`] (by its UTF-8 contents) and `PVec<T>` of a `Copy` `T` (by its elements'
//! bytes). `PHashMap<PString, V>` is the persistent string-keyed store: lookups take the
//! borrowed form (`get(tx, "ada")`, `remove(tx, "ada")`, `contains_key`; `get(tx, &7)` for a
//! `u64` key), inserting methods anything [`AsKey`] (`insert(tx, "ada", v)`, a `String`, or
//! the key itself for `Copy` keys), and iteration hands out `&PString` keys. A string key is
//! stored in its table slot as a `PString` handle owning a buffer of exactly its bytes,
//! allocated when the key is inserted and freed when its entry is removed, cleared or the map
//! freed, still at **2 drains** per insert or removal. The hash is the one byte hash
//! `Copy` keys use, over the contents: part of the on-media format.
//!
//! [`PBTreeMap`] keys are [`POrdKey`]s: any `Persistent + Copy + Ord` type (ordered by its
//! `Ord`), [`PString`] (ordered as `str`) and `PVec<u8>` (as `[u8]`). `PBTreeMap<PString, V>` is
//! the persistent ordered string-keyed store: `get(tx, "ada")`, `insert(tx, "ada", v)`,
//! `range(tx, "a".."m")`, iteration in key order with `&PString` keys. Leaf keys own a buffer
//! of exactly their bytes; separators in internal nodes are copies owning their own buffer
//! (made by leaf splits and borrows, freed by leaf merges and borrows), so a key buffer is never
//! shared; splits, borrows and merges move key and value handles by bytes and zero the slots
//! they leave, still at **2 drains** per insert or removal.
//!
//! ## Entries
//!
//! [`PHashMap::entry`] and [`PBTreeMap::entry`] (`Copy` values; `Copy` keys, or [`PString`]
//! keys, whose entry holds the key as a `String`: `m.entry(tx, "ada")?`) return an [`Entry`]
//! like std's: `m.entry(tx, k)?.and_modify(|n| *n += 1)?.or_insert(1)?` counts `k`: a lookup,
//! then, when it stores, the map's `insert` (a second lookup) at the usual 2 drains
//! (`tests/collections/entry.rs` and `tests/collections/btree_parity.rs` check it against std).
//! [`PBTreeMap::first_entry`] and [`PBTreeMap::last_entry`] return the [`OccupiedEntry`] of
//! either end.
//!
//! ## Transactions and drains
//!
//! Every method takes the running [`Transaction`](ptm::Transaction); changes are failure-atomic
//! with everything else the transaction does. Each change follows ptm's 2-drain pattern:
//! allocate first, then one batched snapshot of every range the operation changes whose last
//! step records the frees (one drain), then the stores; the commit is the second drain. So an insert, update, push,
//! pop or remove alone costs **2 drains**, reads cost **0**, and growth (a bigger buffer or
//! table, B-tree node splits) also costs 2: the fresh blocks are new memory of the
//! transaction, which ptm flushes at commit and never copies into the undo log, so only the
//! handle's few words are logged (asserted in `tests/collections/log_bytes.rs`).
//! Several operations in one transaction share the commit drain but each adds its own snapshot
//! drain. These counts are asserted in `tests/collections/drains.rs` (and, for
//! [`PConcurrentMap`], in `tests/collections/concurrent.rs`). Ordered reads go through
//! [`PBTreeMap::range`], a lazy walk over the leaves like `BTreeMap::range` (0 drains, asserted
//! in `tests/collections/range.rs`).
//!
//! ## Ownership
//!
//! A handle owns its heap blocks; handles are neither `Copy` nor `Clone`, so a block is reached
//! through one handle only. Dropping the Rust struct that holds a handle frees nothing (pool
//! memory is not dropped by Rust): call `free(tx)` (or `clear(tx)`) in the transaction that
//! unlinks the collection, or the blocks leak. `clear` frees everything the collection owns,
//! nested collections included: a collection of handles frees what each element owns when it
//! discards it ([`PVec::pop_free`], [`PVec::truncate`], [`PHashMap::remove_free`],
//! [`PQueue::pop_free`], [`PQueue::remove_free`], [`PQueue::retain_free`],
//! [`PBTreeMap::remove_free`], `clear`, `free`), and a map frees what its
//! keys own when it discards an entry ([`PHashMap::remove`], [`PBTreeMap::remove`] too),
//! still in **2 drains** however deep the nesting (nested blocks are freed without
//! writing the discarded handles: [`PValue::free_owned`]).
//!
//! ## Nested references
//!
//! A nested handle is stored in place, and changes of its collection move it (growth copies
//! the handles to a new buffer, a B-tree insert shifts them inside a leaf, a removal zeroes the
//! slot). So a reference to one ([`PVec::get_ref`], [`PHashMap::get_or_insert_new`], map and
//! range iteration by reference, ...) is a [`Nested`](ptm::Nested) guard, not a plain `&T`:
//! it dereferences to the handle, and is registered in the transaction. Any change of the
//! collection it came from makes it **stale**, and every write through a stale reference (a
//! method of the handle, a `PCell::set` on a field of your struct, and references taken
//! through it) fails with [`Error::StaleReference`](ptm::Error::StaleReference): it never
//! returns `Ok` with the write lost. Take the reference again after the change:
//!
//! ```
//! # use ptm::{Error, Persistent, Pool};
//! # use ptm_collections::{PHashMap, PVec};
//! # #[derive(Persistent)]
//! # #[repr(C)]
//! # struct Root { m: PHashMap<u64, PVec<u64>> }
//! # let dir = tempfile::tempdir().unwrap();
//! # let pool = Pool::<Root>::create(dir.path().join("n.pool"), 8 << 20, &Default::default())?;
//! pool.transaction(|tx, r| {
//!     let v = r.m.get_or_insert_new(tx, 1)?;
//!     v.push(tx, 7)?; // fine: the map has not changed since
//!     for k in 2..100 {
//!         r.m.get_or_insert_new(tx, k)?; // may move `v`'s handle (a table rebuild)
//!     }
//!     assert!(matches!(v.push(tx, 8), Err(Error::StaleReference)));
//!     drop(v);
//!     r.m.get_ref(tx, &1)?.expect("present").push(tx, 8)?; // taken again: fine
//!     Ok::<_, Error>(())
//! })?;
//! # Ok::<_, Error>(())
//! ```
//!
//! This is std's borrow rule (no reference into a collection across a change of it), checked
//! when the transaction runs instead of by rustc, since every method takes `&self`. It is
//! conservative in one way: while a stale reference is alive, writes to a handle that now sits
//! at the same address are refused too, so drop old references (or keep them in a narrow
//! scope) before taking new ones. With no nested reference alive the checks cost one `Cell`
//! read.
//! [`PBTreeMap::remove`] merges underfull nodes and frees the nodes it empties, in the same 2
//! drains (a map emptied by removals owns no block).
//!
//! ## Differences from std
//!
//! The collections use std's method names and semantics where they apply. Where persistence
//! forces a difference, it is one of these:
//!
//! | std | here | why |
//! |---|---|---|
//! | `&mut self` methods; the borrow checker forbids a reference into a collection across a change of it | every method takes `&self` and the transaction; references to nested handles are [`Nested`](ptm::Nested) guards, and a write through one taken before a change fails with `StaleReference` | pool data is reached through shared references from the root; see "Nested references" |
//! | an index or position out of range panics (`Vec::insert`, `remove`, `swap`, `split_off`, `String::insert`, `truncate` off a char boundary) | returns `None` or `false` and changes nothing | a panic inside a transaction rolls it back but still unwinds the caller; a checkable result fits a storage API |
//! | a reversed range panics (`Vec::drain`, `BTreeMap::range`) | yields or removes nothing | as above |
//! | `clear` keeps the capacity | `clear` frees the buffer (and everything nested) | pool memory is shared by every collection of the pool; `reserve` again if needed |
//! | `drain`, `keys`, `values` are lazy | `drain` removes at once and returns a `Vec`; `keys` and `values` return `Vec`s | a lazy drain would hold a half-changed collection across other calls of the transaction |
//! | `split_off` returns a new collection | returns a `Vec` of the removed elements | a new persistent collection needs a home in the pool: `extend` one with the result |
//! | `get_mut`, `entry().and_modify` | `update(tx, key_or_index, f)`: `f` changes a copy, which is stored back | stores must go through the undo log |
//! | iteration cannot fail | an iterator that meets a corrupted structure stops and dooms the transaction | see "Iteration errors" |
//! | `String::as_str`; `String` keys borrow as `&str` | [`PString::with_str`] lends a `&str` to a closure (a copy of the bytes, on the stack up to 256 bytes); `PString` keys are handed out as `&PString` | the bytes live in the pool; a `&str` into them could alias a later write of the same transaction |
//! | `VecDeque::rotate_left`/`rotate_right` move `min(n, len - n)` elements | [`PQueue::rotate_left`] rewrites (and logs) every element, still 2 drains | the chunks are not one ring whose start can move |
//! | `VecDeque::reserve` and `HashMap::reserve` guarantee room for `len + additional` | [`PQueue::reserve`] grows a queue's first, ring-shaped chunk up to the full chunk size, [`PHashMap::reserve`] a map's lone segment up to the full segment size, and no further; past that both grow one chunk or segment at a time | growth is bounded per operation by design; chunks past a queue's last element are not part of its format (their number follows from `head + len`), and a map's segments split by the hashes of the keys they hold |
//! | `Vec::append`; `retain`, `extend`, `append` and `split_off` of a `BTreeMap` | `PVec::append` costs 3 drains (one snapshot per vector); `PBTreeMap::retain`, `extend`, `append` and `split_off` at most one snapshot per entry removed or inserted (none for an entry whose leaf this transaction logged already), plus the commit | each changes several structures or entries, each logged before its stores |
//!
//! ## Iteration errors
//!
//! Every iterator here ([`Iter`], [`MapIter`], [`MapRefs`], [`Range`], [`RangeRefs`],
//! [`QueueIter`], and the sets') yields
//! plain items, and follows one pattern for the errors only a corrupted pool can produce (a
//! pointer outside the pool, a damaged node): the iterator stops, keeps the error for its
//! `error()` method, and **dooms the transaction**. So a shortened iteration can never pass
//! for a complete one: unless the closure returns an error of its own, `Pool::transaction`
//! returns [`Error::Aborted`](ptm::Error::Aborted) and nothing the transaction did is
//! committed. Check `error()` to report the cause:
//!
//! ```
//! # use ptm::{Error, Persistent, Pool};
//! # use ptm_collections::PHashMap;
//! # #[derive(Persistent)]
//! # #[repr(C)]
//! # struct Root { m: PHashMap<u64, u64> }
//! # let dir = tempfile::tempdir().unwrap();
//! # let pool = Pool::<Root>::create(dir.path().join("i.pool"), 8 << 20, &Default::default())?;
//! let sum = pool.transaction(|tx, r| {
//!     let mut it = r.m.iter(tx);
//!     let sum: u64 = it.by_ref().map(|(_, v)| v).sum();
//!     if let Some(e) = it.error() {
//!         eprintln!("the map is damaged: {e}"); // and the transaction returns Error::Aborted
//!     }
//!     Ok::<_, Error>(sum)
//! })?;
//! # assert_eq!(sum, 0);
//! # Ok::<_, Error>(())
//! ```
//!
//! Methods that return a whole result at once (`to_vec`, `keys`) return the error directly,
//! and so do [`PBTreeMap::iter`] and [`PBTreeMap::range`] for damage met on the way to their
//! first leaf (they are lazy [`Range`]s, double-ended, from there on).
//!
//! ## Failed operations
//!
//! An operation that returns an error has changed nothing the caller can commit by mistake: a
//! caller may go on after an error (an insert's or a push's
//! [`Error::OutOfSpace`](ptm::Error::OutOfSpace) when the heap or the undo log is full, for
//! instance) and commit, without leaking and without dangling pointers. Frees (at commit) are
//! recorded as the last step of the operation's snapshot batch, so a batch that fails frees
//! nothing; blocks the operation allocated are freed again when it fails.
//!
//! One exception: **an error from a removal or clear that had already freed part of a damaged
//! structure dooms the transaction** ([`Transaction::doom`](ptm::Transaction::doom)): a
//! corrupted nested handle failing with [`Error::InvalidFree`](ptm::Error::InvalidFree) in
//! the middle of a recursive release, or the log running out between two of the frees. The
//! transaction then rolls back at its end even if the closure returns `Ok`
//! ([`Error::Aborted`](ptm::Error::Aborted)), since committing would free blocks the
//! structure still links. Every [`PValue::free_owned`] that fails dooms the transaction.
//!
//! ## Threads
//!
//! Handles are made of `PCell`s and so are `!Sync`: a root holding a bare `PVec` (or any other
//! collection here) makes `Pool<Root>` `!Sync`, i.e. the pool is used from one thread. To share a
//! collection between threads, put it under a lock: `PMutex<PVec<T>>` in the root (or a struct of
//! collections under one `PMutex`); [`PMutex::lock`](ptm::PMutex::lock) returns `&PVec<T>` for
//! the rest of the transaction, and every method then runs under that lock.
//! [`PConcurrentMap`] is the map that does this for you, one lock per shard: it is `Sync`, and
//! transactions on keys of different shards proceed in parallel. Its shared reads never lend a
//! reference into a shard; [`PConcurrentMap::to_vec_owned`] (and [`PHashMap::to_vec_owned`])
//! read a whole map of any keys and values out as owned copies ([`PToOwned`]: `PString`s as
//! `String`s, `PVec`s as `Vec`s).
//!
//! ## Corrupted pools
//!
//! Every bit pattern of a handle is a valid handle: lengths are clamped to capacities and
//! pointers are checked (`Transaction::deref`: null, foreign, out of bounds, misaligned) before
//! use. Damage found is reported as [`Error::CorruptCollection`](ptm::Error::CorruptCollection)
//! (the structure, the pool offset of the damaged block when known, and what is wrong);
//! every collection implements [`Verify`] (a typed check of the whole structure:
//! [`PHashMap::check_invariants`], [`PBTreeMap::check`], [`PQueue::check`], ...), and
//! [`verify`] runs it over a root you implement `Verify` for, from a `check` program of your
//! own. [`walk_schema`] walks any pool's root from the schema the pool records, without its
//! type (what `ptm check` runs): the structural checks of every collection it reaches, every
//! pointer inside the heap, no block owned twice, and the allocated blocks nothing reaches.
//! Within a transaction, what cannot be checked with ptm's public API is that a buffer pointer
//! designates a live block of the right size owned by this handle alone: a corrupted pool in
//! which two handles share a block, or a handle points at freed memory, breaks the contract of
//! `Transaction::deref` (run `ptm check`, whose walk checks exactly that, on a pool you doubt).
//!
//! ## Example
//!
//! ```
//! use ptm::{Persistent, Pool, PoolOptions};
//! use ptm_collections::{PHashMap, PVec};
//!
//! #[derive(Persistent)]
//! #[persistent(crate = "ptm::pmem_core")]
//! #[repr(C)]
//! struct Root {
//!     log: PVec<u64>,
//!     index: PHashMap<u64, u64>,
//! }
//!
//! # fn main() -> Result<(), ptm::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("c.pool");
//! let opts = PoolOptions::new().layout("example");
//! let pool = Pool::<Root>::create(&path, 8 << 20, &opts)?;
//! pool.transaction(|tx, r| {
//!     r.log.push(tx, 7)?;
//!     r.index.insert(tx, 7, 0)?;
//!     Ok::<_, ptm::Error>(())
//! })?;
//! drop(pool);
//! let pool = Pool::<Root>::open(&path, &opts)?;
//! pool.transaction(|tx, r| {
//!     assert_eq!(r.log.to_vec(tx)?, [7]);
//!     assert_eq!(r.index.get(tx, &7)?, Some(0));
//!     Ok::<_, ptm::Error>(())
//! })?;
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

// `#[derive(PValue)]` names this crate `::ptm_collections`, in its own tests and doctests too.
extern crate self as ptm_collections;

mod boxed;
mod btree;
mod concurrent;
mod entry;
mod map;
mod owned;
mod queue;
mod raw;
mod set;
mod string;
mod vec;
mod verify;
mod walk;

pub use boxed::PBox;
pub use btree::{PBTreeMap, Range, RangeRefs};
pub use concurrent::PConcurrentMap;
pub use entry::{Entry, EntryMap, OccupiedEntry, VacantEntry};
#[doc(hidden)]
pub use map::{general_segment_opens, write_legacy_segments};
pub use map::{MapIter, MapRefs, PHashMap};
#[doc(hidden)]
pub use owned::__derive;
pub use owned::{AsKey, PHandle, PKey, POrdKey, PToOwned, PValue};
/// `#[derive(PValue)]`: ownership (and in-place storage) for a struct of handles and cells,
/// with no `unsafe` in user code. See [`PValue`](trait@PValue).
pub use ptm::pmem_core::PValue;
pub use queue::{PQueue, QueueIter};
pub use set::{PBTreeSet, PHashSet, SetIter, SetRange};
pub use string::PString;
pub use vec::{Iter, PVec};
pub use verify::{verify, Report, Verify};
pub use walk::{walk_pool, walk_schema, WalkReport};
