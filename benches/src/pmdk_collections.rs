//! PMDK peers of ptm-collections' maps, for the collections benchmark (feature `pmdk`).
//!
//! Two `u64 -> u64` maps written in C against libpmemobj (`csrc/pmdk_collections.c`, compiled by
//! `build.rs`), each in its own pool (see [`PmdkMap::create`]):
//!
//! - [`PmdkMapKind::Hash`]: a chained hash map, one 32-byte object per entry, a bucket array of
//!   `PMEMoid` heads doubled (inside the inserting transaction, every entry relinked) when the
//!   entries would exceed the buckets (load factor 1); never shrunk.
//! - [`PmdkMapKind::BTree`]: a B+ tree of nodes with up to 15 keys (values in the leaves), full
//!   nodes split on the way down. Removal does not rebalance (ptm's `PBTreeMap` now does:
//!   it borrows, merges and collapses the root, so its remove does more work than this one):
//!   emptied leaves stay in the tree.
//!
//! [`PmdkMap::insert`] and [`PmdkMap::remove`] run one libpmemobj transaction each
//! (`pmemobj_tx_begin` .. `pmemobj_tx_end`), snapshotting with `pmemobj_tx_add_range_direct`
//! every range they change in existing objects; new objects come from `pmemobj_tx_alloc`.
//! [`PmdkMap::get`] reads without a transaction, as C users of libpmemobj do. One FFI call per
//! operation. The `_batch` methods put many operations in one transaction (for filling).
//!
//! Call [`force_pmem_env`](crate::pmdk::force_pmem_env) first thing in `main` so PMDK persists
//! with cache flushes on tmpfs.

use std::error::Error;
use std::ffi::c_int;
use std::path::Path;
use std::ptr::NonNull;

use crate::pmdk::{print_pool_info, OpenPool, PmdkError, PmemObjPool, PmemOid};

extern "C" {
    fn pcol_fail_at_snapshot(n: u64);

    fn pcol_hm_root_size() -> usize;
    fn pcol_hm_count(root: PmemOid) -> u64;
    fn pcol_hm_buckets(root: PmemOid) -> u64;
    fn pcol_hm_insert(
        pop: *mut PmemObjPool,
        root: PmemOid,
        key: u64,
        val: u64,
        old: *mut u64,
        found: *mut c_int,
    ) -> c_int;
    fn pcol_hm_remove(
        pop: *mut PmemObjPool,
        root: PmemOid,
        key: u64,
        old: *mut u64,
        found: *mut c_int,
    ) -> c_int;
    fn pcol_hm_get(root: PmemOid, key: u64, val: *mut u64) -> c_int;
    fn pcol_hm_insert_batch(
        pop: *mut PmemObjPool,
        root: PmemOid,
        keys: *const u64,
        vals: *const u64,
        n: u64,
    ) -> c_int;
    fn pcol_hm_remove_batch(pop: *mut PmemObjPool, root: PmemOid, keys: *const u64, n: u64) -> c_int;
    fn pcol_hm_check(root: PmemOid, keys: *mut u64, vals: *mut u64, cap: u64, n: *mut u64) -> c_int;

    fn pcol_bt_root_size() -> usize;
    fn pcol_bt_count(root: PmemOid) -> u64;
    fn pcol_bt_insert(
        pop: *mut PmemObjPool,
        root: PmemOid,
        key: u64,
        val: u64,
        old: *mut u64,
        found: *mut c_int,
    ) -> c_int;
    fn pcol_bt_remove(
        pop: *mut PmemObjPool,
        root: PmemOid,
        key: u64,
        old: *mut u64,
        found: *mut c_int,
    ) -> c_int;
    fn pcol_bt_get(root: PmemOid, key: u64, val: *mut u64) -> c_int;
    fn pcol_bt_insert_batch(
        pop: *mut PmemObjPool,
        root: PmemOid,
        keys: *const u64,
        vals: *const u64,
        n: u64,
    ) -> c_int;
    fn pcol_bt_remove_batch(pop: *mut PmemObjPool, root: PmemOid, keys: *const u64, n: u64) -> c_int;
    fn pcol_bt_check(root: PmemOid, keys: *mut u64, vals: *mut u64, cap: u64, n: *mut u64) -> c_int;
}

/// One map implementation's C functions (same signatures for both kinds).
struct Ops {
    root_size: unsafe extern "C" fn() -> usize,
    count: unsafe extern "C" fn(PmemOid) -> u64,
    insert: unsafe extern "C" fn(*mut PmemObjPool, PmemOid, u64, u64, *mut u64, *mut c_int) -> c_int,
    remove: unsafe extern "C" fn(*mut PmemObjPool, PmemOid, u64, *mut u64, *mut c_int) -> c_int,
    get: unsafe extern "C" fn(PmemOid, u64, *mut u64) -> c_int,
    insert_batch: unsafe extern "C" fn(*mut PmemObjPool, PmemOid, *const u64, *const u64, u64) -> c_int,
    remove_batch: unsafe extern "C" fn(*mut PmemObjPool, PmemOid, *const u64, u64) -> c_int,
    check: unsafe extern "C" fn(PmemOid, *mut u64, *mut u64, u64, *mut u64) -> c_int,
}

static HASH_OPS: Ops = Ops {
    root_size: pcol_hm_root_size,
    count: pcol_hm_count,
    insert: pcol_hm_insert,
    remove: pcol_hm_remove,
    get: pcol_hm_get,
    insert_batch: pcol_hm_insert_batch,
    remove_batch: pcol_hm_remove_batch,
    check: pcol_hm_check,
};

static BTREE_OPS: Ops = Ops {
    root_size: pcol_bt_root_size,
    count: pcol_bt_count,
    insert: pcol_bt_insert,
    remove: pcol_bt_remove,
    get: pcol_bt_get,
    insert_batch: pcol_bt_insert_batch,
    remove_batch: pcol_bt_remove_batch,
    check: pcol_bt_check,
};

/// Fault injection for tests: on the calling thread, the `n`-th range snapshot from now on (in
/// any [`PmdkMap`] transaction) aborts its transaction with `ECANCELED` instead; `n = 0` turns
/// this off. The operation then fails like any aborted transaction and must leave its map
/// unchanged.
pub fn fail_at_snapshot(n: u64) {
    // SAFETY: sets a thread-local counter of the C code; no other effect.
    unsafe { pcol_fail_at_snapshot(n) }
}

/// Which PMDK map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmdkMapKind {
    /// The chained hash map.
    Hash,
    /// The B+ tree.
    BTree,
}

impl PmdkMapKind {
    fn ops(self) -> &'static Ops {
        match self {
            PmdkMapKind::Hash => &HASH_OPS,
            PmdkMapKind::BTree => &BTREE_OPS,
        }
    }

    /// A short name for output.
    pub fn name(self) -> &'static str {
        match self {
            PmdkMapKind::Hash => "PMDK hash map",
            PmdkMapKind::BTree => "PMDK B+ tree",
        }
    }
}

/// A `u64 -> u64` map in its own libpmemobj pool (in a fresh temporary directory, removed on
/// drop); its header is the pool's root object.
///
/// Not `Send`/`Sync`: the C code is not thread-safe and libpmemobj transactions are per thread.
pub struct PmdkMap {
    kind: PmdkMapKind,
    root: PmemOid,
    root_addr: NonNull<u8>,
    /// Declared last: closed after everything pointing into it.
    pool: OpenPool,
}

impl std::fmt::Debug for PmdkMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PmdkMap")
            .field("kind", &self.kind)
            .field("path", &self.pool.path())
            .finish_non_exhaustive()
    }
}

/// The result of a C operation: 0 is success, anything else the aborted transaction's error.
fn tx_result(op: &'static str, r: c_int) -> Result<(), PmdkError> {
    if r == 0 {
        Ok(())
    } else {
        Err(PmdkError::last(op, r))
    }
}

impl PmdkMap {
    /// Creates an empty map of `kind` in a new `size`-byte pool file in a new temporary
    /// directory under `dir`.
    ///
    /// # Errors
    ///
    /// The directory or pool cannot be created (e.g. `size` below PMDK's 8 MiB minimum).
    pub fn create(kind: PmdkMapKind, dir: &Path, size: u64) -> Result<PmdkMap, Box<dyn Error>> {
        let pool = OpenPool::create(dir, size)?;
        // SAFETY: a constant getter without arguments.
        let root_size = unsafe { (kind.ops().root_size)() };
        let (root, root_addr) = pool.root(root_size)?;
        Ok(PmdkMap {
            kind,
            root,
            root_addr,
            pool,
        })
    }

    /// Which map this is.
    pub fn kind(&self) -> PmdkMapKind {
        self.kind
    }

    /// Whether libpmem treats the pool as persistent memory (cache flushes + fence, not `msync`).
    pub fn is_pmem(&self) -> bool {
        // SAFETY: a constant getter without arguments.
        let len = unsafe { (self.kind.ops().root_size)() };
        self.pool.is_pmem(self.root_addr, len)
    }

    /// Prints where the pool lives and whether PMDK took it for persistent memory.
    pub fn print_info(&self) {
        print_pool_info(self.pool.path(), self.is_pmem());
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        // SAFETY: the root is this open pool's map header, written only by the C code.
        unsafe { (self.kind.ops().count)(self.root) }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash map's number of buckets (0 before the first insert; doubled when the entries
    /// would exceed it), or `None` for the B+ tree. Changes exactly when the table grows.
    pub fn buckets(&self) -> Option<u64> {
        // SAFETY: the root is this open pool's hash-map header (checked kind), written only by
        // the C code, which no other thread runs on this map (`!Sync`).
        (self.kind == PmdkMapKind::Hash).then(|| unsafe { pcol_hm_buckets(self.root) })
    }

    /// One transaction inserting `key -> val`; returns the previous value of `key`.
    ///
    /// # Errors
    ///
    /// The transaction aborted (e.g. out of space); the map is unchanged.
    #[inline]
    pub fn insert(&self, key: u64, val: u64) -> Result<Option<u64>, PmdkError> {
        let (mut old, mut found) = (0u64, 0 as c_int);
        // SAFETY: the pool is open and the root is its map header; the out-pointers are valid;
        // this thread has no transaction open (each C call runs and ends its own), and `&self`
        // of a `!Sync` type means no other thread uses the map.
        let r =
            unsafe { (self.kind.ops().insert)(self.pool.pop(), self.root, key, val, &mut old, &mut found) };
        tx_result("insert transaction", r)?;
        Ok((found != 0).then_some(old))
    }

    /// The value of `key`, read without a transaction.
    #[inline]
    pub fn get(&self, key: u64) -> Option<u64> {
        let mut val = 0u64;
        // SAFETY: the pool is open and the root is its map header; `val` is a valid destination;
        // no other thread changes the map (`!Sync`).
        let found = unsafe { (self.kind.ops().get)(self.root, key, &mut val) };
        (found != 0).then_some(val)
    }

    /// One transaction removing `key`; returns its value.
    ///
    /// # Errors
    ///
    /// The transaction aborted; the map is unchanged.
    #[inline]
    pub fn remove(&self, key: u64) -> Result<Option<u64>, PmdkError> {
        let (mut old, mut found) = (0u64, 0 as c_int);
        // SAFETY: as in `insert`.
        let r = unsafe { (self.kind.ops().remove)(self.pool.pop(), self.root, key, &mut old, &mut found) };
        tx_result("remove transaction", r)?;
        Ok((found != 0).then_some(old))
    }

    /// One transaction inserting (or updating) every `(key, val)` of `entries`, in order.
    ///
    /// # Errors
    ///
    /// The transaction aborted (e.g. out of space); the map is unchanged.
    pub fn insert_batch(&self, entries: &[(u64, u64)]) -> Result<(), PmdkError> {
        let (keys, vals): (Vec<u64>, Vec<u64>) = entries.iter().copied().unzip();
        // SAFETY: as in `insert`; `keys` and `vals` hold `entries.len()` words each.
        let r = unsafe {
            (self.kind.ops().insert_batch)(
                self.pool.pop(),
                self.root,
                keys.as_ptr(),
                vals.as_ptr(),
                keys.len() as u64,
            )
        };
        tx_result("batch insert transaction", r)
    }

    /// One transaction removing every key of `keys` (absent ones are skipped).
    ///
    /// # Errors
    ///
    /// The transaction aborted; the map is unchanged.
    pub fn remove_batch(&self, keys: &[u64]) -> Result<(), PmdkError> {
        // SAFETY: as in `insert`; `keys` holds `keys.len()` words.
        let r = unsafe {
            (self.kind.ops().remove_batch)(self.pool.pop(), self.root, keys.as_ptr(), keys.len() as u64)
        };
        tx_result("batch remove transaction", r)
    }

    /// Checks the map's structure (see the C `pcol_*_check`: chains and bucket indices of the
    /// hash map; key order, separator bounds and leaf depth of the tree; the entry count) and
    /// returns every entry (in key order for the tree, in bucket order for the hash map).
    ///
    /// # Errors
    ///
    /// A description of the inconsistency.
    pub fn check(&self) -> Result<Vec<(u64, u64)>, String> {
        let ops = self.kind.ops();
        let cap = self.len();
        let mut keys = vec![0u64; cap as usize];
        let mut vals = vec![0u64; cap as usize];
        let mut n = 0u64;
        // SAFETY: the root is this open pool's map header; `keys` and `vals` hold `cap` words;
        // `n` is a valid destination; no other thread changes the map (`!Sync`).
        let r = unsafe { (ops.check)(self.root, keys.as_mut_ptr(), vals.as_mut_ptr(), cap, &mut n) };
        if r != 0 {
            return Err(format!(
                "{}: inconsistent structure ({n} entries seen, count {cap})",
                self.kind.name()
            ));
        }
        Ok(keys.into_iter().zip(vals).collect())
    }
}
