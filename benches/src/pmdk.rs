//! A minimal binding to PMDK's libpmemobj, for comparison benchmarks (feature `pmdk`).
//!
//! Hand-written FFI (no bindgen) to the few pool functions needed for setup
//! (`pmemobj_create`, `pmemobj_root`, `pmemobj_close`, `pmemobj_errormsg`), plus a C shim
//! (`csrc/pmdk_shim.c`, compiled by `build.rs`) that wraps what the headers only provide inline
//! (`pmemobj_direct`) and runs each benchmarked transaction entirely in C, as a C user of
//! libpmemobj writes it: `pmemobj_tx_begin`, `pmemobj_tx_add_range` per range, the stores,
//! `pmemobj_tx_commit`, `pmemobj_tx_end`. One FFI call per transaction.
//!
//! For the allocator benchmarks (`benches/alloc.rs`) the shim also runs transactions that
//! `pmemobj_tx_alloc` and `pmemobj_tx_free` blocks ([`PmdkPool::tx_alloc_free`], usable from
//! several threads through [`PmdkPool::alloc_handle`]) and push/pop nodes of a list whose head
//! is in the root object ([`PmdkPool::tx_push`], [`PmdkPool::tx_pop`]).
//!
//! PMDK decides between cache flushes and `msync` with `pmem_is_pmem`; on tmpfs it answers
//! "no" unless the environment variable `PMEM_IS_PMEM_FORCE=1` is set before its first call.
//! Call [`force_pmem_env`] at the start of `main` to put PMDK in the same persistence domain as
//! a ptm pool created with `force_pmem(true)`, and check [`PmdkPool::is_pmem`].

use std::error::Error;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;
use std::marker::{PhantomData, PhantomPinned};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// Words (`u64`) in the benchmark root object: 64 cache lines of 8 words.
pub const ROOT_WORDS: u64 = 512;
/// Bytes requested for the root object: the words plus slack to align them to 64 bytes (PMDK
/// aligns objects to 16 bytes only).
const ROOT_ALLOC: usize = ROOT_WORDS as usize * 8 + 64;
/// The environment variable that makes libpmem's `pmem_is_pmem` always answer "yes".
pub const FORCE_ENV: &str = "PMEM_IS_PMEM_FORCE";
/// Most blocks one [`PmdkPool::tx_alloc_free`] transaction allocates (`SHIM_MAX_BATCH` in the
/// shim).
pub const MAX_BATCH: u64 = 64;
/// Bytes of a list node of [`PmdkPool::tx_push`]: a `PMEMoid` next pointer and 48 bytes of
/// payload (`struct shim_node` in the shim).
pub const NODE_SIZE: u64 = 64;
/// What the shim's pop returns for an empty list (not an error number).
const EMPTY: c_int = -1;
/// Layout name of the benchmark pools.
const LAYOUT: &CStr = c"ptm-bench";

/// `PMEMobjpool`: opaque.
#[repr(C)]
pub(crate) struct PmemObjPool {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `PMEMoid`: a persistent object id (pool uuid, offset in the pool).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PmemOid {
    pool_uuid_lo: u64,
    off: u64,
}

extern "C" {
    // libpmemobj (Linux signatures; `mode_t` is `unsigned int`).
    fn pmemobj_create(
        path: *const c_char,
        layout: *const c_char,
        poolsize: usize,
        mode: u32,
    ) -> *mut PmemObjPool;
    fn pmemobj_close(pop: *mut PmemObjPool);
    fn pmemobj_root(pop: *mut PmemObjPool, size: usize) -> PmemOid;
    fn pmemobj_errormsg() -> *const c_char;

    // csrc/pmdk_shim.c
    fn shim_direct(oid: PmemOid) -> *mut c_void;
    fn shim_is_pmem(addr: *const c_void, len: usize) -> c_int;
    fn shim_tx_set_words(
        pop: *mut PmemObjPool,
        root: PmemOid,
        base_off: u64,
        stride: u64,
        n: u64,
        val: u64,
    ) -> c_int;
    fn shim_tx_read_word(pop: *mut PmemObjPool, root: PmemOid, off: u64, out: *mut u64) -> c_int;
    fn shim_max_batch() -> u64;
    fn shim_node_size() -> u64;
    fn shim_tx_alloc_free(pop: *mut PmemObjPool, n: u64, size: u64) -> c_int;
    fn shim_tx_push(pop: *mut PmemObjPool, root: PmemOid, head_off: u64, val: u64) -> c_int;
    fn shim_tx_pop(pop: *mut PmemObjPool, root: PmemOid, head_off: u64, out: *mut u64) -> c_int;
    fn shim_count_alloc_objects(pop: *mut PmemObjPool) -> u64;
}

/// Sets `PMEM_IS_PMEM_FORCE=1` in this process's environment, so libpmem treats every mapping
/// (including tmpfs files) as persistent memory: cache-line flushes and a fence, no `msync`.
///
/// Call it first thing in `main`, while the process has a single thread and before any
/// libpmemobj/libpmem call: libpmem reads the variable once, on its first `pmem_is_pmem`, and
/// changing the environment while other threads may read it is a data race in libc.
pub fn force_pmem_env() {
    std::env::set_var(FORCE_ENV, "1");
}

/// A libpmemobj failure: the operation, the error number and PMDK's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmdkError {
    /// The failing call.
    pub op: &'static str,
    /// The error number (`errno` or the aborted transaction's error).
    pub errno: i32,
    /// `pmemobj_errormsg()` at the time of the failure.
    pub message: String,
}

impl PmdkError {
    pub(crate) fn last(op: &'static str, errno: i32) -> PmdkError {
        // SAFETY: `pmemobj_errormsg` takes no arguments and returns a pointer to a thread-local,
        // NUL-terminated buffer (never NULL in PMDK 1.x, checked anyway) that stays valid until
        // the next libpmemobj call on this thread; we copy it out at once.
        let message = unsafe {
            let p = pmemobj_errormsg();
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        PmdkError { op, errno, message }
    }
}

impl fmt::Display for PmdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed (error {}): {}", self.op, self.errno, self.message)
    }
}

impl Error for PmdkError {}

/// An open libpmemobj pool, file `pmdk.pool` in a fresh temporary directory: closed, then the
/// directory removed, on drop. Shared by [`PmdkPool`] and the maps of
/// [`pmdk_collections`](crate::pmdk_collections).
#[derive(Debug)]
pub(crate) struct OpenPool {
    pop: NonNull<PmemObjPool>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl OpenPool {
    /// Creates a `size`-byte pool file `pmdk.pool` in a new temporary directory under `dir`.
    ///
    /// # Errors
    ///
    /// The temporary directory cannot be created, the path is not a C string, or
    /// `pmemobj_create` fails (e.g. `size` below PMDK's 8 MiB minimum).
    pub(crate) fn create(dir: &Path, size: u64) -> Result<OpenPool, Box<dyn Error>> {
        let tmp = tempfile::Builder::new().prefix("pmdk-bench-").tempdir_in(dir)?;
        let path = tmp.path().join("pmdk.pool");
        let cpath = CString::new(path.as_os_str().as_bytes())?;
        let size = usize::try_from(size)?;
        // SAFETY: both strings are valid NUL-terminated C strings that outlive the call; the
        // file does not exist yet, so PMDK creates it with mode 0600.
        let pop = unsafe { pmemobj_create(cpath.as_ptr(), LAYOUT.as_ptr(), size, 0o600) };
        let Some(pop) = NonNull::new(pop) else {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(PmdkError::last("pmemobj_create", errno).into());
        };
        Ok(OpenPool { pop, path, _dir: tmp })
    }

    /// The pool handle, for the C functions.
    pub(crate) fn pop(&self) -> *mut PmemObjPool {
        self.pop.as_ptr()
    }

    /// The pool file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The root object of `size` bytes (allocated zeroed on the first call) and its address.
    ///
    /// # Errors
    ///
    /// `pmemobj_root` fails (e.g. out of space).
    pub(crate) fn root(&self, size: usize) -> Result<(PmemOid, NonNull<u8>), PmdkError> {
        // SAFETY: the pool is open; the root is allocated (zeroed) on first call.
        let root = unsafe { pmemobj_root(self.pop.as_ptr(), size) };
        // SAFETY: a by-value object id; returns NULL for OID_NULL or an unknown pool.
        let base = unsafe { shim_direct(root) }.cast::<u8>();
        match NonNull::new(base) {
            Some(base) if root.off != 0 => Ok((root, base)),
            _ => {
                let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                Err(PmdkError::last("pmemobj_root", errno))
            }
        }
    }

    /// Whether libpmem treats `len` bytes at `addr` as persistent memory (`pmem_is_pmem`).
    pub(crate) fn is_pmem(&self, addr: NonNull<u8>, len: usize) -> bool {
        // SAFETY: `pmem_is_pmem` only inspects the address range (callers pass a range of this
        // open pool's mapping).
        unsafe { shim_is_pmem(addr.as_ptr().cast(), len) != 0 }
    }
}

impl Drop for OpenPool {
    fn drop(&mut self) {
        // SAFETY: the pool is open, and no reference into it outlives its owner (the users of
        // the pool keep only addresses they dereference through `&self` methods). The directory
        // is removed after this, with `_dir`.
        unsafe { pmemobj_close(self.pop.as_ptr()) };
    }
}

/// Prints a pool's file and whether PMDK took it for persistent memory (benchmark setup output).
pub(crate) fn print_pool_info(path: &Path, is_pmem: bool) {
    println!("pmdk pool     : {}", path.display());
    if is_pmem {
        println!("pmdk is_pmem  : 1 (cache flushes + fence)");
    } else {
        println!("pmdk is_pmem  : 0 -- WARNING: PMDK uses msync here, {FORCE_ENV}=1 was not honoured");
    }
}

/// A libpmemobj pool in a fresh temporary directory, with a root object of [`ROOT_WORDS`]
/// 64-byte-aligned `u64` words. Closed, then removed, on drop.
///
/// Not `Send`/`Sync`: libpmemobj transactions are per thread, and the benchmarks use one. The
/// thread-safe allocation transactions are shared between threads through
/// [`PmdkPool::alloc_handle`].
#[derive(Debug)]
pub struct PmdkPool {
    root: PmemOid,
    /// Address of word 0 (64-byte aligned, inside the root object).
    words: NonNull<u64>,
    /// Offset of word 0 from the start of the root object.
    words_off: u64,
    /// Declared last: closed after everything pointing into it.
    pool: OpenPool,
}

impl PmdkPool {
    /// Creates a `size`-byte pool file `pmdk.pool` in a new temporary directory under `dir` and
    /// allocates its root object (zeroed by PMDK).
    ///
    /// # Errors
    ///
    /// The temporary directory cannot be created, the path is not a C string, or
    /// `pmemobj_create`/`pmemobj_root` fail (e.g. `size` below PMDK's 8 MiB minimum).
    pub fn create(dir: &Path, size: u64) -> Result<PmdkPool, Box<dyn Error>> {
        let pool = OpenPool::create(dir, size)?;
        let (root, base) = pool.root(ROOT_ALLOC)?;
        let base = base.as_ptr();
        let words_off = (base as usize).next_multiple_of(64) - base as usize;
        // SAFETY: `words_off < 64`, and the root object has `ROOT_ALLOC` bytes, 64 more than
        // the words need, so the result is inside the object; it is non-null as `base` is.
        let words = unsafe { NonNull::new_unchecked(base.add(words_off).cast::<u64>()) };
        // SAFETY: constant getters of the shim, no arguments.
        let (max_batch, node_size) = unsafe { (shim_max_batch(), shim_node_size()) };
        assert_eq!(
            (max_batch, node_size),
            (MAX_BATCH, NODE_SIZE),
            "the shim disagrees with MAX_BATCH/NODE_SIZE"
        );
        Ok(PmdkPool {
            root,
            words,
            words_off: words_off as u64,
            pool,
        })
    }

    /// The pool file.
    pub fn path(&self) -> &Path {
        self.pool.path()
    }

    /// Prints where the pool lives and whether PMDK took it for persistent memory (benchmark
    /// setup output).
    pub fn print_info(&self) {
        print_pool_info(self.path(), self.is_pmem());
    }

    /// Whether libpmem treats the root object's memory as persistent memory (`pmem_is_pmem`):
    /// true means PMDK persists with cache flushes + fence, false means `msync`.
    pub fn is_pmem(&self) -> bool {
        self.pool.is_pmem(self.words.cast(), ROOT_WORDS as usize * 8)
    }

    /// One transaction that logs (`pmemobj_tx_add_range`, 8 bytes each) and then sets to `val`
    /// the `n` words at indices `0, stride, 2 * stride, ...`.
    ///
    /// # Panics
    ///
    /// If `n` is 0 or a word index reaches [`ROOT_WORDS`].
    ///
    /// # Errors
    ///
    /// The transaction aborted (e.g. its undo log could not grow).
    #[inline]
    pub fn tx_set_words(&self, n: u64, stride: u64, val: u64) -> Result<(), PmdkError> {
        assert!(
            n > 0 && (n - 1) * stride < ROOT_WORDS,
            "word index out of the root"
        );
        // SAFETY: the pool is open; every range `[words_off + 8 * i * stride, +8)` lies in the
        // root object (checked above); this thread has no transaction open (each shim call
        // opens and ends its own), and the words are only accessed through the shim.
        let r = unsafe { shim_tx_set_words(self.pool.pop(), self.root, self.words_off, 8 * stride, n, val) };
        if r == 0 {
            Ok(())
        } else {
            Err(PmdkError::last("transaction", r))
        }
    }

    /// One read-only transaction returning word `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`ROOT_WORDS`].
    ///
    /// # Errors
    ///
    /// The transaction could not begin.
    #[inline]
    pub fn tx_read_word(&self, index: u64) -> Result<u64, PmdkError> {
        assert!(index < ROOT_WORDS, "word index out of the root");
        let mut out = 0u64;
        // SAFETY: the pool is open; the word lies in the root object (checked above); `out` is
        // a valid `u64` destination; no transaction is open on this thread.
        let r =
            unsafe { shim_tx_read_word(self.pool.pop(), self.root, self.words_off + 8 * index, &mut out) };
        if r == 0 {
            Ok(out)
        } else {
            Err(PmdkError::last("read-only transaction", r))
        }
    }
}

impl PmdkPool {
    /// Byte offset, in the root object, of the head (`PMEMoid`, 16 bytes) of the list of
    /// [`tx_push`](PmdkPool::tx_push): root words 0 and 1.
    fn head_off(&self) -> u64 {
        self.words_off
    }

    /// One transaction that allocates `n` blocks of `size` bytes with `pmemobj_tx_alloc`, then
    /// frees them all with `pmemobj_tx_free`, and commits (see [`PmdkAllocHandle::tx_alloc_free`]).
    ///
    /// # Panics
    ///
    /// If `n` is above [`MAX_BATCH`] or `size` is 0.
    ///
    /// # Errors
    ///
    /// The transaction aborted (e.g. out of space).
    #[inline]
    pub fn tx_alloc_free(&self, n: u64, size: u64) -> Result<(), PmdkError> {
        self.alloc_handle().tx_alloc_free(n, size)
    }

    /// A handle running [`tx_alloc_free`](PmdkPool::tx_alloc_free) transactions on this pool from
    /// any thread.
    pub fn alloc_handle(&self) -> PmdkAllocHandle<'_> {
        PmdkAllocHandle {
            pop: self.pool.pop,
            _pool: PhantomData,
        }
    }

    /// One transaction that allocates a [`NODE_SIZE`]-byte node (`pmemobj_tx_alloc`), fills it
    /// with the current list head and `val`, snapshots the head in the root
    /// (`pmemobj_tx_add_range`, 16 bytes) and links the node there.
    ///
    /// # Errors
    ///
    /// The transaction aborted (e.g. out of space).
    #[inline]
    pub fn tx_push(&self, val: u64) -> Result<(), PmdkError> {
        // SAFETY: the pool is open; the 16-byte head lies in the root's words (word 0 and 1, of
        // ROOT_WORDS); it holds OID_NULL or a node pushed by this method (the root is zeroed at
        // creation and only changed by push/pop); no transaction is open on this thread.
        let r = unsafe { shim_tx_push(self.pool.pop(), self.root, self.head_off(), val) };
        if r == 0 {
            Ok(())
        } else {
            Err(PmdkError::last("push transaction", r))
        }
    }

    /// One transaction that unlinks the first node of the list of [`tx_push`](PmdkPool::tx_push)
    /// (snapshot of the head, store of the node's next pointer) and frees it
    /// (`pmemobj_tx_free`). Returns the node's value, or `None` (no transaction) if the list is
    /// empty.
    ///
    /// # Errors
    ///
    /// The transaction aborted.
    #[inline]
    pub fn tx_pop(&self) -> Result<Option<u64>, PmdkError> {
        let mut out = 0u64;
        // SAFETY: as in `tx_push`: the head is OID_NULL or a live node of this pool, whose next
        // pointer is OID_NULL or another live node; `out` is a valid destination.
        let r = unsafe { shim_tx_pop(self.pool.pop(), self.root, self.head_off(), &mut out) };
        match r {
            0 => Ok(Some(out)),
            EMPTY => Ok(None),
            _ => Err(PmdkError::last("pop transaction", r)),
        }
    }

    /// The number of allocated blocks of [`tx_alloc_free`](PmdkPool::tx_alloc_free) and nodes of
    /// [`tx_push`](PmdkPool::tx_push) (a walk over every object of the pool): 0 when everything
    /// allocated was freed again.
    pub fn count_alloc_objects(&self) -> u64 {
        // SAFETY: the pool is open and no transaction of this thread is running.
        unsafe { shim_count_alloc_objects(self.pool.pop()) }
    }
}

/// Runs the allocation transactions of [`PmdkPool::tx_alloc_free`] on a pool from any thread
/// (`Send + Sync + Copy`); borrows the pool, so it cannot outlive it.
#[derive(Debug, Clone, Copy)]
pub struct PmdkAllocHandle<'a> {
    pop: NonNull<PmemObjPool>,
    _pool: PhantomData<&'a PmdkPool>,
}

// SAFETY: the handle only calls `shim_tx_alloc_free`, which uses libpmemobj's thread-safe API
// (each thread runs its own transaction on its own lane) and touches only the blocks it
// allocates; the pool stays open while the handle exists (it borrows the `PmdkPool`).
unsafe impl Send for PmdkAllocHandle<'_> {}
// SAFETY: as for `Send`: every method takes `&self` and is safe to call concurrently.
unsafe impl Sync for PmdkAllocHandle<'_> {}

impl PmdkAllocHandle<'_> {
    /// One transaction on the calling thread that allocates `n` blocks of `size` bytes
    /// (`pmemobj_tx_alloc`, contents uninitialised), then frees them all (`pmemobj_tx_free`), and
    /// commits: a block allocated and freed in the same transaction is never allocated.
    ///
    /// # Panics
    ///
    /// If `n` is above [`MAX_BATCH`] or `size` is 0.
    ///
    /// # Errors
    ///
    /// The transaction aborted (e.g. out of space).
    #[inline]
    pub fn tx_alloc_free(&self, n: u64, size: u64) -> Result<(), PmdkError> {
        assert!(n <= MAX_BATCH, "at most MAX_BATCH blocks per transaction");
        assert!(size > 0, "zero-sized pmemobj_tx_alloc");
        // SAFETY: the pool is open (borrowed); `n` fits the shim's array (checked above); the
        // calling thread has no transaction open (each shim call runs and ends its own).
        let r = unsafe { shim_tx_alloc_free(self.pop.as_ptr(), n, size) };
        if r == 0 {
            Ok(())
        } else {
            Err(PmdkError::last("alloc/free transaction", r))
        }
    }
}
