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
#![deny(unsafe_op_in_unsafe_fn)]

mod alloc;
mod cell;
mod checked;
mod error;
mod grow;
pub mod heap;
mod inspect;
pub mod lanes;
pub mod layout;
pub mod lockword;
mod log;
mod pool;
mod schema;
mod sync;
mod tx;

pub use cell::{Loggable, PCell, PMutex, PRwLock, PSharedLock};
pub use error::{Error, Result};
pub use grow::{grow_pool, max_pool_size};
pub use heap::HeapStats;
pub use inspect::{inspect, Summary};
pub use layout::{read_root_schema, Geometry, RootSchema};
pub use pmem_core;
pub use pmem_core::{
    thread_stats, DomainKind, Durability, Engine, JournalOptions, PPtr, PersistStats, Persistent,
};
pub use pmem_core::{Checked, Encoded, PBool, POption, Schema};
pub use pool::{Pool, PoolOptions, RecoveryReport, DEFAULT_LANES, DEFAULT_LANE_SIZE, DEFAULT_LOCK_TIMEOUT};
pub use tx::{PendingCommit, SnapshotBatch, Transaction};

/// The README's code examples, compiled and run as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
