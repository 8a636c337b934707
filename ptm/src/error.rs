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
    /// The pool was made by an older ptm whose heap format this build does not read
    /// (superblock format 1 or 2: 256 KiB heap chunks; this build writes format 5 and reads
    /// formats 3 to 5, 64 KiB chunks). Nothing was read past the superblock's magic, and nothing was written.
    /// To move its data, open it with the older ptm and copy it into a pool made by this one
    /// (as in "Migrating a pool" in the crate documentation).
    #[error(
        "{}: pool superblock format {found} is not supported (this build reads formats 3 to {supported}); \
         copy its data with the ptm that made it into a new pool",
        path.display()
    )]
    UnsupportedFormat {
        /// The pool file.
        path: PathBuf,
        /// The superblock format found.
        found: u32,
        /// The format this build reads.
        supported: u32,
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
    /// The pool was created for a root type with another schema (a field added, removed,
    /// renamed or retyped, an element type changed, ...): reading it as this type would misread
    /// it. `at` names the first difference. To change a pool's schema, see "Migrating a pool"
    /// in the crate documentation.
    #[error(
        "{}: schema mismatch at `{at}`: the pool stores {stored}, the program expects {expected} \
         (schema fingerprints {stored_fingerprint:#018x} and {expected_fingerprint:#018x}; to \
         change a pool's schema, migrate it)",
        path.display()
    )]
    SchemaMismatch {
        /// The pool file.
        path: PathBuf,
        /// Where the schemas first differ, from the root type: `Root.tasks<V>.title`.
        at: String,
        /// What the pool's recorded schema has there.
        stored: String,
        /// What the root type given to `open` has there.
        expected: String,
        /// The recorded fingerprint.
        stored_fingerprint: u64,
        /// The fingerprint of the root type given to `open`.
        expected_fingerprint: u64,
    },
    /// A stored value is not a valid value of its type (an enum discriminant no variant has, a
    /// `bool` byte other than 0 and 1, a bad `Option` tag): damaged data, read through
    /// [`Checked`](pmem_core::Checked).
    #[error(transparent)]
    CorruptData(#[from] pmem_core::InvalidValue),
    /// Creation options are impossible (names which).
    #[error("invalid pool options: {0}")]
    InvalidOptions(&'static str),
    /// The heap has no room for what was asked (the transaction is rolled back, unless the
    /// caller goes on after the error). [`fragmented`](Error::OutOfSpace::fragmented) tells a
    /// full pool (free space in total below the request) from a fragmented one (enough free
    /// bytes, but no free run of chunks long enough, and free slab blocks serve only their own
    /// size class).
    #[error(
        "out of pool space: {} requested, {} free in total, largest free run {}: {}",
        fmt_bytes(*requested),
        fmt_bytes(*free_bytes),
        fmt_bytes(*largest_free_run),
        if *fragmented {
            "the heap is fragmented (enough bytes are free, but not in one piece this request can use)"
        } else {
            "the pool is full (free some data or grow the pool)"
        }
    )]
    OutOfSpace {
        /// Bytes requested (for a log extent: one chunk, the smallest extent).
        requested: u64,
        /// Bytes free in the heap when the request failed: free chunks and free slab blocks
        /// (slabs another transaction was changing at that moment are not counted).
        free_bytes: u64,
        /// Bytes in the longest run of free chunks (the largest block that could be allocated).
        largest_free_run: u64,
        /// True if `free_bytes >= requested`: the space exists but not in a usable shape.
        fragmented: bool,
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
    /// A collection's handle or blocks in the pool are damaged (a size, depth or count out of
    /// range, a directory or node that does not match its structure): reported by the
    /// collections of `ptm-collections` when they find it, and by their `check_invariants`.
    #[error("corrupt {structure} at pool offset {offset:#x}: {what}")]
    CorruptCollection {
        /// The damaged structure (`"PHashMap segment"`, `"collection"`, ...).
        structure: &'static str,
        /// The pool offset of the damaged block, or of the handle or value found wrong (0 when
        /// unknown).
        offset: u64,
        /// What is wrong.
        what: std::borrow::Cow<'static, str>,
    },
    /// `free` of something that is not an allocated block of this pool (or freed twice).
    #[error("invalid free of offset {offset:#x}: {what}")]
    InvalidFree {
        /// The offset passed to `free`.
        offset: u64,
        /// Why it is refused.
        what: &'static str,
    },
    /// A write through a reference to a nested handle ([`Nested`](crate::Nested)) taken before
    /// its collection changed: the change may have moved or discarded the handle, so the write
    /// is refused rather than lost. Take the reference again after the change.
    #[error(
        "stale reference: the collection this nested handle was taken from has changed since \
         (take the reference again after the change)"
    )]
    StaleReference,
    /// The transaction was doomed, so it was rolled back even though its closure returned `Ok`:
    /// an inner (nested) transaction failed, or something called
    /// [`Transaction::doom`](crate::Transaction::doom).
    #[error(
        "the transaction was doomed (an inner transaction failed, or doom was called); it was rolled back"
    )]
    Aborted,
    /// An ordering or durability point failed (an I/O error at a drain, a journal append or
    /// its `fdatasync`, or a rollback's drain): nothing flushed before it is known durable, so
    /// the pool refuses further transactions, syncs and durability points in this process;
    /// reopening it runs recovery from what reached the media.
    #[error("pool poisoned by a failed drain or sync; reopen it to recover")]
    Poisoned,
}

/// `n` bytes in the largest binary unit that keeps a readable number (`16 KiB`, `3.5 MiB`).
pub(crate) fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else if v.fract() == 0.0 {
        format!("{v} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_says_full_or_fragmented() {
        let full = Error::OutOfSpace {
            requested: 16384,
            free_bytes: 4096,
            largest_free_run: 0,
            fragmented: false,
        };
        assert_eq!(
            full.to_string(),
            "out of pool space: 16 KiB requested, 4 KiB free in total, largest free run 0 bytes: \
             the pool is full (free some data or grow the pool)"
        );
        let frag = Error::OutOfSpace {
            requested: 3 << 20,
            free_bytes: 5 << 19,
            largest_free_run: 1 << 20,
            fragmented: false,
        };
        assert!(frag
            .to_string()
            .contains("2.5 MiB free in total, largest free run 1 MiB: the pool is full"));
        let frag = Error::OutOfSpace {
            requested: 65536,
            free_bytes: 3 << 20,
            largest_free_run: 0,
            fragmented: true,
        };
        assert!(frag.to_string().ends_with(
            "64 KiB requested, 3 MiB free in total, largest free run 0 bytes: the heap is fragmented \
             (enough bytes are free, but not in one piece this request can use)"
        ));
        assert_eq!(fmt_bytes(100), "100 bytes");
    }
}
