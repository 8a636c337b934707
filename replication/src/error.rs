//! Errors of the replication layer.

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

/// Errors of `ptm-raft`: opening a replicated pool, and the storage operations behind openraft's
/// traits (which reach openraft as [`StorageError`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error of the pool underneath: I/O, [`ptm::Error::OutOfSpace`], a corrupt pool image
    /// (`CorruptMetadata`, `CorruptLog`, `CorruptHeap`), a root of another size
    /// (`RootMismatch`), a pool opened by another process (`PoolLocked`).
    #[error(transparent)]
    Pool(#[from] ptm::Error),
    /// The pool opened, but its root does not start with the ptm-raft magic: it belongs to
    /// another program.
    #[error("not a ptm-raft pool (magic {found:#018x}, expected {expected:#018x})")]
    NotRaftPool {
        /// The first word of the root.
        found: u64,
        /// [`crate::store::MAGIC`].
        expected: u64,
    },
    /// The pool was written by a ptm-raft whose format this build does not read.
    #[error("ptm-raft format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the pool.
        found: u64,
        /// [`crate::store::FORMAT_VERSION`].
        supported: u64,
    },
    /// A piece of the replicated state failed its check when read: a record whose checksum
    /// does not match, that does not decode, or a log whose shape is impossible. A node whose
    /// pool reports this refuses to start.
    #[error("corrupt raft state in the pool: {what}: {detail}")]
    Corrupt {
        /// Which record: `"vote"`, `"log entry"`, `"applied log id"`, `"snapshot data"`, ...
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// A value could not be encoded (an application type whose `Serialize` fails).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// openraft asked to append an entry that does not extend the log (a gap after the last
    /// entry): refused rather than stored out of order.
    #[error("log append out of order: entry {index} does not extend the log [{first}, {end})")]
    LogGap {
        /// The index of the refused entry.
        index: u64,
        /// First index present.
        first: u64,
        /// One past the last index present.
        end: u64,
    },
    /// The blocking task that ran a pool transaction panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// This error as the [`StorageError`] openraft expects, naming what was being read or
    /// written.
    pub fn into_storage(self, subject: ErrorSubject<u64>, verb: ErrorVerb) -> StorageError<u64> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}
