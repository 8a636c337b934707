//! # ptm-raft
//!
//! Replicated ptm pools: [openraft](https://docs.rs/openraft/0.9)'s log storage and state
//! machine on one ptm pool per node, and `ptm-kv`, a replicated key-value service built on it.
//! We do not implement consensus: openraft does (elections, replication, membership changes,
//! snapshots); this crate makes its storage durable and failure-atomic with ptm transactions.
//!
//! ## openraft version
//!
//! Pinned to **openraft `=0.9.25`** (features `serde`, `storage-v2`). 0.9 is openraft's stable
//! line (the one Databend's meta service ships); 0.10 is still published as `0.10.0-alpha.N`,
//! and its storage traits and type-config macro change between alphas. The pin is exact because
//! openraft's storage traits are sealed behind the `storage-v2` feature and its conformance
//! suite ([`openraft::testing::Suite`]) is what `tests/replication/conformance.rs` runs: a minor
//! release that changes either must be taken on purpose.
//!
//! ## Model
//!
//! | openraft asks | ptm does |
//! |---|---|
//! | `append(entries, flushed)` | one transaction inserting the batch into a `PBTreeMap<u64, PVec<u8>>` keyed by index; the callback fires after the commit returned (durable) |
//! | `truncate`, `purge` | one transaction each (entries removed, bounds and purged log id updated); a purge that runs ahead of a snapshot still being installed is finished by the install's transaction |
//! | `save_vote`, `save_committed` | one transaction each (a record in the log area) |
//! | `apply(entries)` | one transaction: [`Application::apply`] for each request, the applied log id and the membership |
//! | `build_snapshot` | one transaction under the state machine's lock (a consistent read), kept as the current snapshot |
//! | `install_snapshot` | one transaction: [`Application::restore`], applied log id, membership, current snapshot |
//!
//! So a node killed at any moment restarts from its pool with the log, vote and state machine of
//! its last committed transactions: an entry is applied exactly once (its effects and the applied
//! log id commit together), and no separate snapshot is needed for durability.
//!
//! Records (vote, log ids, membership, each log entry, snapshot data) carry a CRC32C. Opening a
//! store checks all of them and the log's shape: a damaged pool refuses to start with
//! [`Error::Corrupt`] (or ptm's own named error for damaged pool metadata) and never joins a
//! cluster with bad state. Every storage failure (ptm's `OutOfSpace`, I/O) reaches openraft as a
//! `StorageError`, which stops the node.
//!
//! | what could go wrong | what prevents it |
//! |---|---|
//! | entry applied twice or skipped after a crash | apply and applied log id in one transaction |
//! | flushed callback before the entries are durable | the callback runs after the strict commit returned |
//! | half-installed snapshot | restore and metadata in one transaction |
//! | log purged past a snapshot whose install a crash cut short (openraft then cannot restart) | the purge beyond the durable snapshot waits for the install's transaction |
//! | long transaction times out a concurrent one on allocator locks | one transaction per store at a time |
//! | a damaged record read as valid state | CRC32C per record, checked at open and at each read |
//! | storage error ignored | every ptm error becomes openraft's `StorageError` |
//!
//! ## Example
//!
//! ```
//! use ptm::PoolOptions;
//! use ptm_raft::kv::KvApp;
//! use ptm_raft::RaftStore;
//!
//! # fn main() -> Result<(), ptm_raft::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! let opts = PoolOptions::new().layout("ptm-kv");
//! let store = RaftStore::create(dir.path().join("node1.pool"), 16 << 20, &opts, KvApp)?;
//! let (_log, _machine) = (store.log_store(), store.state_machine());
//! // hand them to openraft::Raft::new(id, config, network, log, machine)
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod error;
pub mod kv;
pub mod store;

pub use error::{Error, Result};
pub use store::{Application, LogStore, RaftStore, StateMachine};
