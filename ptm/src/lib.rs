//! # ptm
//!
//! Pools of persistent memory with **failure-atomic transactions**: after a crash (power loss,
//! `kill -9`) a pool reopens with every committed transaction present and every uncommitted one
//! rolled back.
//!
//! - [`Pool<R>`]: create/open a pool (a file, a DAX file, device-DAX, or tmpfs forced to act as
//!   pmem) with a typed root object `R`; recovery runs at open.
//! - [`Pool::transaction`]: a closure transaction; `Ok` commits (2 drains: the undo log, then the
//!   data and commit record), `Err` or a panic rolls back. Nested transactions join the outer one.
//! - [`PCell`], [`PMutex`], [`PRwLock`], [`PSharedLock`]: the only ways to change pool data. They
//!   take the transaction as a witness and log the old bytes before any store. Locks are held until the
//!   transaction ends and reset when the pool is reopened.
//! - [`Transaction::snapshot`]: log many ranges behind one drain.
//!
//! ## What the types prevent
//!
//! | bug | prevented by |
//! |---|---|
//! | a store to pool memory that the undo log does not cover | mutation only via cells/locks, which log first |
//! | a reference into the pool outliving its transaction | the closure's higher-ranked lifetime |
//! | two threads changing the same data | `PCell` is `!Sync`; `PMutex`/`PRwLock` are held to the end of the transaction |
//! | a volatile pointer stored in the pool | `Persistent` (compile-time) |
//! | a stale lock after a crash | lock words carry the open generation |
//!
//! ## Example
//!
//! ```
//! use ptm::{PMutex, PCell, Persistent, Pool, PoolOptions};
//!
//! #[derive(Persistent)]
//! #[persistent(crate = "ptm::pmem_core")]
//! #[repr(C)]
//! struct Account {
//!     balance: PCell<u64>,
//! }
//!
//! #[derive(Persistent)]
//! #[persistent(crate = "ptm::pmem_core")]
//! #[repr(C)]
//! struct Bank {
//!     accounts: [PMutex<Account>; 2],
//! }
//!
//! # fn main() -> Result<(), ptm::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("bank.pool");
//! let pool = Pool::<Bank>::create(&path, 8 << 20, &PoolOptions::new().layout("bank"))?;
//! pool.transaction(|tx, bank| bank.accounts[0].lock(tx)?.balance.set(tx, 100))?;
//! pool.transaction(|tx, bank| {
//!     let a = bank.accounts[0].lock(tx)?;
//!     let b = bank.accounts[1].lock(tx)?;
//!     a.balance.set(tx, a.balance.get(tx) - 30)?;
//!     b.balance.set(tx, b.balance.get(tx) + 30)
//! })?;
//! drop(pool);
//!
//! let pool = Pool::<Bank>::open(&path, &PoolOptions::new().layout("bank"))?;
//! let total = pool.transaction(|tx, bank| {
//!     Ok::<_, ptm::Error>(bank.accounts.iter().map(|a| a.lock(tx).map(|a| a.balance.get(tx))).sum::<Result<u64, _>>()?)
//! })?;
//! assert_eq!(total, 100);
//! # Ok(()) }
//! ```
//!
//! ## Schemas
//!
//! A pool records its root type's schema when it is created: every field's name and type,
//! recursively through nested structs, cells, locks, `PPtr`s and the element, key and value
//! types of collections ([`pmem_core::schema`]; `#[derive(Persistent)]` writes the description).
//! [`Pool::open`] with a root type of another schema fails with [`Error::SchemaMismatch`],
//! naming the first difference (`Root.tasks<V>.due: the pool stores nothing (the field is new)`);
//! `ptm info` prints the recorded schema. Renaming a field or a type is a schema change too.
//! A pool created before schemas were recorded (or by [`Pool::create_any`]) opens as any root of
//! the right size and records that type's schema: later opens are checked.
//!
//! Enums, `bool` and `Option` are stored through [`Checked<T>`] (`PCell<Checked<State>>`,
//! [`PBool`], [`POption<T>`]): a stored value that is not a valid `T` reads as
//! [`Error::CorruptData`], never as an invalid value.
//!
//! ## Migrating a pool
//!
//! A pool never changes schema in place. To move data to a new schema, open the old pool with
//! the old type, create a new pool with the new type, copy inside a transaction of the new pool
//! (which commits durably as a whole), close both, and replace the old file with the new one
//! (a `rename` is atomic: a crash leaves either file whole). Keep the old type in a module of
//! its own (`mod v1`), as below; types and fields keep their names, so the schemas differ
//! exactly where the types do. On the journaled engine (a plain file on a disk) close both pools
//! first and remove their `<pool>.journal` files before the rename: a cleanly closed pool's file
//! holds everything.
//!
//! ```
//! use ptm::{PCell, Persistent, Pool, PoolOptions};
//!
//! mod v1 {
//!     #[derive(ptm::Persistent)]
//!     #[repr(C)]
//!     pub struct Root {
//!         pub count: ptm::PCell<u64>,
//!     }
//! }
//!
//! /// Version 2 adds a field.
//! #[derive(Persistent)]
//! #[repr(C)]
//! struct Root {
//!     count: PCell<u64>,
//!     limit: PCell<u64>,
//! }
//!
//! # fn main() -> Result<(), ptm::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("app.pool");
//! let opts = PoolOptions::new();
//! # Pool::<v1::Root>::create(&path, 8 << 20, &opts)?.transaction(|tx, r| r.count.set(tx, 41))?;
//! // The new program sees the old pool ...
//! assert!(matches!(Pool::<Root>::open(&path, &opts), Err(ptm::Error::SchemaMismatch { .. })));
//!
//! // ... and migrates it: read with the old type, write a new pool with the new one.
//! let old = Pool::<v1::Root>::open(&path, &opts)?;
//! let count = old.transaction(|tx, r| Ok::<_, ptm::Error>(r.count.get(tx)))?;
//! let next = dir.path().join("app.pool.v2");
//! let new = Pool::<Root>::create(&next, 8 << 20, &opts)?;
//! new.transaction(|tx, r| {
//!     r.count.set(tx, count)?;
//!     r.limit.set(tx, 100)
//! })?;
//! new.close()?;
//! old.close()?;
//! // A cleanly closed pool's file holds all of it: the journals of the journaled engine (on a
//! // plain file) are not needed any more, and would not match the renamed pool.
//! for p in [&path, &next] {
//!     let _ = std::fs::remove_file(p.with_extension(format!("{}.journal", p.extension().unwrap().to_str().unwrap())));
//! }
//! std::fs::rename(&next, &path).expect("rename");
//!
//! let pool = Pool::<Root>::open(&path, &opts)?;
//! assert_eq!(pool.transaction(|tx, r| Ok::<_, ptm::Error>((r.count.get(tx), r.limit.get(tx))))?, (41, 100));
//! # Ok(()) }
//! ```
//!
//! For large pools copy in several transactions of the new pool (each durable), and rename only
//! after the last; collections copy element by element (`iter` on the old, `push`/`insert` on
//! the new).
//!
//! ## Where things live
//!
//! The public front is what this page lists: [`Pool`], [`Transaction`], the cells and locks
//! ([`PLock`] with its aliases), errors and statistics. Below it, in a private `engine` module,
//! sits the transaction engine: the state of an open pool (`Shared`, the lanes and their
//! volatile state), the on-media layout, the heap, the lock words and the log. The engine never
//! imports the front (a test checks the layering; see docs/design.md §1).
//!
//! The workspace's tools (the `ptm` CLI, the fuzzers, the crash harness, white-box tests) reach
//! the engine's `heap`, `lanes`, `layout` and `lockword` modules through the hidden
//! `ptm::internals` module. **`internals` is not covered by semver**: it changes with the engine,
//! in any release; applications should not use it.
#![deny(unsafe_op_in_unsafe_fn)]

mod alloc;
mod cell;
mod checked;
mod engine;
mod error;
mod grow;
mod inspect;
mod nested;
mod pool;
mod schema;
mod sync;
mod tx;

pub use cell::{MutexWord, PCell, PLock, PMutex, PRwLock, PSharedLock, RawLock, RwWord, SxWord};
pub use engine::heap::HeapStats;
pub use engine::layout::{read_root_schema, Geometry, RootSchema};
pub use error::{Error, Result};
pub use grow::{grow_pool, max_pool_size};
pub use inspect::{inspect, Summary};
pub use nested::Nested;
pub use pmem_core;
pub use pmem_core::schema::Schema;
pub use pmem_core::{
    thread_stats, DomainKind, Durability, Engine, JournalOptions, PPtr, PersistStats, Persistent,
};
pub use pmem_core::{Checked, Encoded, PBool, POption};
pub use pool::{Pool, PoolOptions, RecoveryReport, DEFAULT_LANES, DEFAULT_LANE_SIZE, DEFAULT_LOCK_TIMEOUT};
pub use tx::{Loggable, PendingCommit, SnapshotBatch, Transaction};

/// What the workspace's tools reach below the public API (the `ptm` CLI, the fuzzers, the
/// crash-recovery harness, the loom models, white-box tests): the engine's on-media layout, heap,
/// lanes and lock words. **Not covered by semver**: it changes with the engine, in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::engine::{completions, heap, lanes, layout, lockword};
}

/// The README's code examples, compiled and run as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
