//! [`Verify`]: a typed consistency check of the collections, for a user's own `check` program.

use ptm::{Persistent, Pool, Result, Transaction};

use crate::{
    PBTreeMap, PBTreeSet, PConcurrentMap, PHashMap, PHashSet, PKey, POrdKey, PQueue, PString, PValue, PVec,
};

/// What a verification read: totals over the structures it checked (added up by
/// [`Verify::verify`] and returned by [`verify`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Collections checked.
    pub structures: u64,
    /// Entries (elements, keys, bytes of a string) they hold.
    pub entries: u64,
    /// Heap blocks of their own structure (buffers, segments, nodes, chunks, directories; not
    /// the blocks of nested handles or string keys).
    pub blocks: u64,
}

/// A structure whose consistency can be checked from its handle: every collection of this
/// crate. `verify` reads the whole structure (0 drains) and returns
/// [`Error::CorruptCollection`](ptm::Error::CorruptCollection) (`structure`, the pool offset of
/// the damaged block when known, `what`) for the first damage found; on success it adds what it
/// read to `report`.
///
/// `ptm check` verifies the pool format, the logs and the allocator of any pool, and walks your
/// collections from the root schema the pool records ([`walk_schema`](crate::walk_schema)), but
/// without your key types' code it cannot check the hashing or the order of keys of your own
/// types. To run the typed checks too, implement `Verify` for your root (call `verify` on each
/// field) and run [`verify`] from a small program of your own:
///
/// ```
/// # use ptm::{Error, Persistent, Pool, Transaction};
/// use ptm_collections::{verify, PBTreeMap, PQueue, Report, Verify};
///
/// #[derive(Persistent)]
/// #[repr(C)]
/// struct Root {
///     index: PBTreeMap<u64, u64>,
///     jobs: PQueue<u64>,
/// }
///
/// impl Verify for Root {
///     fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> ptm::Result<()> {
///         self.index.verify(tx, report)?;
///         self.jobs.verify(tx, report)
///     }
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// # let pool = Pool::<Root>::create(dir.path().join("v.pool"), 8 << 20, &Default::default())?;
/// pool.transaction(|tx, r| r.jobs.extend(tx, [1, 2, 3]))?;
/// let report = verify(&pool)?;
/// assert_eq!((report.structures, report.entries), (2, 3));
/// # Ok::<_, Error>(())
/// ```
///
/// What it does not check: nested collections (verify them through the references the outer
/// one hands out) and that a block is allocated and owned by one handle only (the allocator's
/// side, which [`walk_schema`](crate::walk_schema) and `ptm check` check: a block owned twice
/// is corruption, an allocated block nothing reaches is reported).
pub trait Verify {
    /// Checks this structure and adds what it read to `report`.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptCollection`](ptm::Error::CorruptCollection) or another error of reading
    /// a damaged structure (a pointer outside the pool).
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()>;
}

/// Runs [`Verify::verify`] on the root of `pool` in a read-only transaction (0 drains) and
/// returns the totals.
///
/// # Errors
///
/// As [`Verify::verify`], and those of starting a transaction.
pub fn verify<R: Persistent + Verify>(pool: &Pool<R>) -> Result<Report> {
    pool.transaction(|tx, r| {
        let mut report = Report::default();
        r.verify(tx, &mut report)?;
        Ok(report)
    })
}

impl Report {
    fn add(&mut self, entries: u64, blocks: usize) {
        self.structures += 1;
        self.entries += entries;
        self.blocks += blocks as u64;
    }
}

impl<K: PKey, V: PValue> Verify for PHashMap<K, V> {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        self.check_invariants(tx)?;
        report.add(self.len(tx), self.block_offsets(tx)?.len());
        Ok(())
    }
}

impl<K: PKey> Verify for PHashSet<K> {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        self.check_invariants(tx)?;
        report.add(self.len(tx), self.block_offsets(tx)?.len());
        Ok(())
    }
}

impl<K: POrdKey, V: PValue> Verify for PBTreeMap<K, V> {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        self.check(tx)?;
        report.add(self.len(tx), self.node_offsets(tx)?.len());
        Ok(())
    }
}

impl<K: POrdKey> Verify for PBTreeSet<K> {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        self.check_invariants(tx)?;
        report.add(self.len(tx), self.node_offsets(tx)?.len());
        Ok(())
    }
}

impl<T: PValue> Verify for PQueue<T> {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        self.check(tx)?;
        report.add(self.len(tx), self.block_offsets(tx)?.len());
        Ok(())
    }
}

impl<T: Persistent + Copy> Verify for PVec<T> {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        // Reads every element: a buffer pointer or length that does not fit the pool fails.
        let n = self.to_vec(tx)?.len() as u64;
        report.add(n, usize::from(self.buffer_offset(tx).is_some()));
        Ok(())
    }
}

impl Verify for PString {
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        let n = self.with_str(tx, str::len)? as u64;
        report.add(n, usize::from(self.buffer_offset(tx).is_some()));
        Ok(())
    }
}

impl<K: PKey, V: PValue, const SHARDS: usize> Verify for PConcurrentMap<K, V, SHARDS> {
    /// Locks every shard exclusively, in ascending order (as the whole-map methods do), and
    /// verifies each as a [`PHashMap`]; the shards count as one structure.
    fn verify(&self, tx: &Transaction<'_>, report: &mut Report) -> Result<()> {
        let mut shards = Report::default();
        for i in 0..SHARDS {
            self.lock_shard(tx, i)?.verify(tx, &mut shards)?;
        }
        report.add(shards.entries, shards.blocks as usize);
        Ok(())
    }
}
