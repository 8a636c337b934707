//! Errors of the pmem-core layer.
//!
//! One `#[non_exhaustive]` enum; corruption of a pool header is its own variant naming what was
//! wrong ([`HeaderProblem`]) and whether the backup copy is intact.

use std::io;
use std::path::PathBuf;

/// Result alias for pmem-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with one copy of a pool header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The first 8 bytes are not the pool magic `PTMPOOL\0`.
    BadMagic,
    /// The stored CRC32C does not match the header bytes.
    ChecksumMismatch {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum computed over the header bytes.
        computed: u32,
    },
    /// The checksum is valid but a geometry field is impossible (names the field).
    BadGeometry {
        /// The offending field.
        field: &'static str,
    },
    /// The header sets flags this version does not understand.
    UnknownFlags {
        /// The flag bits that are not understood.
        flags: u64,
    },
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::BadMagic => write!(f, "bad magic (not `PTMPOOL`)"),
            HeaderProblem::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            HeaderProblem::BadGeometry { field } => write!(f, "impossible value in field `{field}`"),
            HeaderProblem::UnknownFlags { flags } => write!(f, "unknown flags {flags:#x}"),
        }
    }
}

/// Errors of the pmem-core layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`open`, `mmap`, `msync`, ...).
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Another open handle (this process or another) holds the pool's lock.
    #[error("pool {} is locked: another process or handle has it open", path.display())]
    PoolLocked {
        /// The pool file.
        path: PathBuf,
    },
    /// `create` was asked to make a pool where a non-empty file already exists.
    #[error("{} already exists and is not empty; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Neither header copy carries the pool magic: the file is not a ptm pool.
    #[error("{} is not a ptm pool (no pool header found)", path.display())]
    NotAPool {
        /// The file.
        path: PathBuf,
    },
    /// The file is shorter than its header says, or too short to hold a pool.
    #[error("{} is truncated: {len} bytes, expected {expected}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its actual length.
        len: u64,
        /// The length it should have.
        expected: u64,
    },
    /// The file is longer than the pool size recorded in its header.
    #[error("{}: file is {file} bytes but the header records a pool of {header} bytes", path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Pool size in the header.
        header: u64,
        /// File size.
        file: u64,
    },
    /// The pool was written by an incompatible format version.
    #[error("{}: pool format version {found} is not supported (this build reads version {supported})", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Version found in the header.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The primary header is damaged.
    #[error(
        "{}: pool header is corrupt: {problem}; {}",
        path.display(),
        if *backup_intact { "the backup copy is intact (repair restores it: `ptm check --repair`)" } else { "the backup copy is damaged too" }
    )]
    CorruptHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with the primary copy.
        problem: HeaderProblem,
        /// Whether the backup copy validates.
        backup_intact: bool,
    },
    /// The pool was created with a different layout name.
    #[error("{}: layout mismatch: pool has layout {found:?}, caller expected {expected:?}", path.display())]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// Layout the caller asked for.
        expected: String,
        /// Layout recorded in the pool.
        found: String,
    },
    /// A pool cannot grow as asked (names why).
    #[error("{}: cannot grow the pool: {why}", path.display())]
    CannotGrow {
        /// The pool.
        path: PathBuf,
        /// Why not.
        why: &'static str,
    },
    /// A requested pool size is impossible.
    #[error("invalid pool size {size}: {reason}")]
    InvalidSize {
        /// The requested size.
        size: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A layout name is too long or contains NUL.
    #[error("invalid layout name: {reason}")]
    InvalidLayoutName {
        /// Why it is refused.
        reason: &'static str,
    },
    /// Another pool open in this process has the same pointer tag, so cross-pool pointer misuse
    /// between the two could not be detected.
    #[error(
        "another open pool in this process has pointer tag {tag:#06x}; close it before opening this one"
    )]
    TagCollision {
        /// The colliding tag.
        tag: u16,
    },
    /// A null [`PPtr`](crate::PPtr) was dereferenced.
    #[error("null persistent pointer dereferenced")]
    NullPointer,
    /// An offset range lies outside the pool's data area.
    #[error("range {offset:#x}+{len:#x} is outside the pool data area {start:#x}..{end:#x}")]
    OutOfBounds {
        /// Start of the rejected range.
        offset: u64,
        /// Length of the rejected range.
        len: u64,
        /// Start of the allowed area.
        start: u64,
        /// End of the allowed area.
        end: u64,
    },
    /// An offset is not aligned for the type it was used as.
    #[error("offset {offset:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// The offset.
        offset: u64,
        /// Required alignment.
        align: u64,
    },
    /// A persistent pointer from another pool was used with this one.
    #[error(
        "persistent pointer belongs to another pool (tag {found:#06x}, this pool's tag {expected:#06x})"
    )]
    WrongPool {
        /// This pool's tag.
        expected: u16,
        /// The pointer's tag.
        found: u16,
    },
    /// The platform cannot do what was asked (names it).
    #[error("unsupported on this platform: {what}")]
    Unsupported {
        /// What is missing.
        what: &'static str,
    },
    /// The pool was last used with a journal (its header says so) and the journal is not where
    /// it was looked for: opening without it would lose committed changes.
    #[error(
        "{}: the pool's journal may hold committed changes but {} does not exist (pass the journal's path with the journal options)",
        pool.display(),
        journal.display()
    )]
    JournalMissing {
        /// The pool file.
        pool: PathBuf,
        /// Where the journal was looked for.
        journal: PathBuf,
    },
    /// The device under the pool counted an unsafe shutdown (the platform failed to make
    /// flushed data durable at a power loss) while the pool was open or not closed cleanly since:
    /// stores the pool had made durable may be lost. The pool stays refused until
    /// `ptm check --accept-unsafe-shutdown` (or [`accept_unsafe_shutdown`](crate::accept_unsafe_shutdown)
    /// after the application's own verification) records the new count.
    #[error(
        "{}: unsafe shutdown while the pool was in use: the device's unsafe-shutdown count is {now}, {recorded} when the pool was opened{}; data it made durable may be lost (verify the pool, then `ptm check --accept-unsafe-shutdown`)",
        path.display(),
        if *device_changed { " on other DIMMs" } else { "" }
    )]
    UnsafeShutdown {
        /// The pool file.
        path: PathBuf,
        /// The count recorded in the pool header when the pool was opened.
        recorded: u64,
        /// The count the device reports now.
        now: u64,
        /// Whether the DIMMs under the pool are not those the count was recorded on.
        device_changed: bool,
    },
    /// The journal beside the pool belongs to another pool.
    #[error("{}: journal belongs to another pool (UUID mismatch)", journal.display())]
    JournalMismatch {
        /// The journal file.
        journal: PathBuf,
    },
    /// The journal is damaged where it cannot be a torn tail: a synced record or both header
    /// slots.
    #[error("{}: journal is corrupt at offset {offset} (record {seq}): {what}", journal.display())]
    CorruptJournal {
        /// The journal file.
        journal: PathBuf,
        /// File offset of the damage.
        offset: u64,
        /// Sequence number of the damaged record (0 for the header).
        seq: u64,
        /// What is wrong.
        what: String,
    },
}

impl Error {
    pub(crate) fn from_replay(journal: &std::path::Path, e: crate::journal::ReplayError) -> Self {
        use crate::journal::ReplayError;
        match e {
            ReplayError::Io { journal: true, source } => Error::io("replay journal", journal, source),
            ReplayError::Io { journal: false, source } => Error::io("apply journal to the pool file of", journal, source),
            ReplayError::Mismatch => Error::JournalMismatch {
                journal: journal.to_owned(),
            },
            ReplayError::BadHeader(_) => Error::CorruptJournal {
                journal: journal.to_owned(),
                offset: 0,
                seq: 0,
                what: "both header slots are damaged".into(),
            },
            ReplayError::Corrupt {
                offset,
                seq,
                later_records,
            } => Error::CorruptJournal {
                journal: journal.to_owned(),
                offset,
                seq,
                what: format!(
                    "record {seq} was synced but is damaged ({later_records} valid records follow it; `ptm check --repair` drops them)"
                ),
            },
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
