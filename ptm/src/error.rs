//! Errors of the transaction layer.

use std::path::PathBuf;

/// Result alias for ptm.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of pools and transactions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the mapping / header layer (locked, not a pool, corrupt header, I/O, an
    /// unsafe shutdown of the device while the pool was in use, ...).
    #[error(transparent)]
    Core(#[from] pmem_core::Error),
    /// The pool's transaction metadata (superblock) is damaged or not ptm's.
    #[error("{}: corrupt pool metadata: {what}", path.display())]
    CorruptMetadata {
        /// The pool file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A lane's undo log holds a record that cannot have been written by ptm.
    #[error("corrupt undo log in lane {lane}: {what}")]
    CorruptLog {
        /// The lane.
        lane: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The pool's root object has another size than the type it is opened with.
    #[error("root type mismatch: the pool's root is {found} bytes, the requested type is {expected}")]
    RootMismatch {
        /// `size_of` of the requested root type.
        expected: u64,
        /// Root size recorded in the pool.
        found: u64,
    },
    /// Creation options are impossible (names which).
    #[error("invalid pool options: {0}")]
    InvalidOptions(&'static str),
    /// The heap has no room for what was asked (the transaction is rolled back).
    #[error("out of pool space: {requested} bytes requested")]
    OutOfSpace {
        /// Bytes requested.
        requested: u64,
    },
    /// A persistent lock was not acquired within the pool's lock timeout (possible deadlock).
    #[error("lock not acquired within {waited_ms} ms (deadlock?); the transaction is rolled back")]
    LockTimeout {
        /// How long it waited.
        waited_ms: u64,
    },
    /// A read lock held by this transaction could not be upgraded to a write lock because
    /// others hold read locks too.
    #[error("cannot upgrade a shared lock while other transactions hold it")]
    LockUpgrade,
    /// A persistent object or range does not lie inside this transaction's pool.
    #[error("object at {addr:#x} (+{len}) is not inside this pool's data")]
    NotInPool {
        /// Its address.
        addr: usize,
        /// Its length.
        len: usize,
    },
    /// The heap's metadata (chunk table, bitmaps) is malformed.
    #[error("corrupt heap metadata: {0}")]
    CorruptHeap(&'static str),
    /// `free` of something that is not an allocated block of this pool (or freed twice).
    #[error("invalid free of offset {offset:#x}: {what}")]
    InvalidFree {
        /// The offset passed to `free`.
        offset: u64,
        /// Why it is refused.
        what: &'static str,
    },
    /// The transaction was doomed, so it was rolled back even though its closure returned `Ok`:
    /// an inner (nested) transaction failed, or something called
    /// [`Transaction::doom`](crate::Transaction::doom).
    #[error(
        "the transaction was doomed (an inner transaction failed, or doom was called); it was rolled back"
    )]
    Aborted,
    /// A rollback could not be made durable (I/O error): the pool refuses further transactions
    /// in this process; reopening it runs recovery.
    #[error("pool poisoned by a failed rollback; reopen it to recover")]
    Poisoned,
}
