//! `Pool<R>`: create/open/close a transactional pool with a typed root object, run recovery, and
//! start transactions.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pmem_core::{DomainKind, Durability, PPtr, Persistent, Region, RegionOptions};

use crate::engine::completions::CompletionMarks;
use crate::engine::heap::{slab_geom, Desc, HeapStats};

use crate::engine::lane_state::LaneVolatile;
use crate::engine::lanes::LaneMap;
use crate::engine::layout::RootSchema;
use crate::engine::layout::{self, CommitRecord, DataHasher, Geometry, Verdict};
use crate::engine::log::scan_lane;
use crate::engine::shared::{LaneSlot, Shared};
use crate::error::{Error, Result};
use crate::tx::{PendingCommit, Transaction};

pub use crate::engine::shared::RecoveryReport;

/// Default number of lanes (concurrent transactions).
pub const DEFAULT_LANES: u32 = 64;
/// Default bytes per lane (larger transactions overflow into heap extents).
pub const DEFAULT_LANE_SIZE: u64 = 64 * 1024;
/// Default time a transaction waits for a persistent lock before failing with `LockTimeout`.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Options for creating and opening pools (builder).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    layout: String,
    lanes: u32,
    lane_size: u64,
    force_pmem: Option<bool>,
    eadr: Option<bool>,
    lock_timeout: Duration,
    #[cfg(feature = "simulate")]
    simulation: Option<pmem_core::Simulation>,
    external: Option<pmem_core::ExternalMemorySource>,
    engine: pmem_core::Engine,
    journal: pmem_core::JournalOptions,
    sysfs_root: Option<std::path::PathBuf>,
    ignore_unsafe_shutdown: bool,
    reserve: u64,
    max_size: Option<u64>,
    auto_grow: Option<u64>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            layout: String::new(),
            lanes: DEFAULT_LANES,
            lane_size: DEFAULT_LANE_SIZE,
            force_pmem: None,
            eadr: None,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            #[cfg(feature = "simulate")]
            simulation: None,
            external: None,
            engine: pmem_core::Engine::Auto,
            journal: pmem_core::JournalOptions::new(),
            sysfs_root: None,
            ignore_unsafe_shutdown: false,
            reserve: 0,
            max_size: None,
            auto_grow: None,
        }
    }
}

impl PoolOptions {
    /// Defaults: empty layout name, 64 lanes of 64 KiB, domain from the file and environment
    /// (`PTM_FORCE_PMEM`, `PTM_EADR`), 5 s lock timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Layout name, written at create and required to match at open (at most 63 bytes).
    pub fn layout(mut self, name: &str) -> Self {
        self.layout = name.to_owned();
        self
    }

    /// Number of lanes, 1..=1024 (create only).
    pub fn lanes(mut self, n: u32) -> Self {
        self.lanes = n;
        self
    }

    /// Bytes per lane, a multiple of 4096, at least 8 KiB (create only).
    pub fn lane_size(mut self, bytes: u64) -> Self {
        self.lane_size = bytes;
        self
    }

    /// Treat the file as persistent memory (cache-flush domain), e.g. on tmpfs.
    pub fn force_pmem(mut self, yes: bool) -> Self {
        self.force_pmem = Some(yes);
        self
    }

    /// Declare the platform eADR (`true`: no cache flushes, drains stay) or not (`false`).
    /// Without it, `PTM_EADR` decides, and without that the platform's `persistence_domain`
    /// in sysfs (see [`RegionOptions::eadr`]).
    pub fn eadr(mut self, yes: bool) -> Self {
        self.eadr = Some(yes);
        self
    }

    /// How long a transaction waits for a persistent lock before `Error::LockTimeout`.
    pub fn lock_timeout(mut self, t: Duration) -> Self {
        self.lock_timeout = t;
        self
    }

    /// Run the pool in the simulated persistence domain driven by `sim` (feature `simulate`;
    /// see `pmem_core::sim`): the crash-recovery harness observes every drain as a crash point.
    /// Overrides `force_pmem` and `eadr`.
    #[cfg(feature = "simulate")]
    pub fn simulation(mut self, sim: pmem_core::Simulation) -> Self {
        self.simulation = Some(sim);
        self
    }

    /// Opens the pool even though its device counted an unsafe shutdown while the pool was in
    /// use ([`pmem_core::Error::UnsafeShutdown`]), so the application can verify its data; the
    /// refusal stands for later opens until
    /// [`accept_unsafe_shutdown`](pmem_core::accept_unsafe_shutdown) (or
    /// `ptm check --accept-unsafe-shutdown`). See
    /// [`RegionOptions::ignore_unsafe_shutdown`].
    pub fn ignore_unsafe_shutdown(mut self, yes: bool) -> Self {
        self.ignore_unsafe_shutdown = yes;
        self
    }

    /// Reads the hardware description under `root` instead of `/sys` (tests with fake trees).
    #[doc(hidden)]
    pub fn sysfs_root(mut self, root: impl Into<std::path::PathBuf>) -> Self {
        self.sysfs_root = Some(root.into());
        self
    }

    /// Keeps `bytes` of the heap (rounded up to whole 64 KiB chunks, at most half the heap
    /// with the metadata reserve) free for the operations the application names: ordinary
    /// allocations fail with [`Error::OutOfSpace`] before they touch it, and a transaction
    /// that calls [`Transaction::use_reserve`] may allocate from it (say, the node a move
    /// between two collections needs, or the bookkeeping of a cleanup job on a full pool).
    /// Default 0. Volatile: given at each open, not stored in the pool.
    ///
    /// Independently of it, removal-only transactions (no allocation) always find room for
    /// their undo log: a metadata reserve of 1 chunk per 62 (at least one) is kept for their
    /// log extents, enough to record every bitmap word and descriptor of the heap, so freeing
    /// blocks never fails for lack of space (see `docs/design.md` §10.4).
    ///
    /// # Examples
    ///
    /// ```
    /// use ptm::{Error, PCell, Persistent, Pool, PoolOptions};
    ///
    /// #[derive(Persistent)]
    /// #[persistent(crate = "ptm::pmem_core")]
    /// #[repr(C)]
    /// struct Root {
    ///     n: PCell<u64>,
    /// }
    ///
    /// # fn main() -> Result<(), Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let opts = PoolOptions::new().reserve(256 << 10);
    /// let pool = Pool::<Root>::create(dir.path().join("r.pool"), 8 << 20, &opts)?;
    /// // Fill the heap with ordinary allocations.
    /// while pool.transaction(|tx, _| tx.alloc_bytes(64 << 10)).is_ok() {}
    /// // A transaction entitled to the reserve still gets space.
    /// pool.transaction(|tx, _| {
    ///     tx.use_reserve();
    ///     tx.alloc_bytes(64 << 10)
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn reserve(mut self, bytes: u64) -> Self {
        self.reserve = bytes;
        self
    }

    /// The size the pool should be able to grow to. At create, its chunk table gets room for a
    /// heap that large (at most 1/16 of the heap at creation; 8 bytes per 64 KiB chunk); at
    /// every open, that much address space is reserved for [`Pool::grow`] while open. Default:
    /// 64 times the size (at creation, at open), at least 1 GiB.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// When the heap has no room for a request, grow the pool (while open, in place: see
    /// [`Pool::grow`]) instead of failing: to twice its size or what the request needs, at most
    /// `max` bytes (and at most what [`max_size`](PoolOptions::max_size) reserved). Only then
    /// does an allocation fail with [`Error::OutOfSpace`]. Default: off.
    pub fn auto_grow(mut self, max: u64) -> Self {
        self.auto_grow = Some(max);
        self
    }

    fn max_size_for(&self, size: u64) -> u64 {
        self.max_size
            .unwrap_or_else(|| size.saturating_mul(64).max(1 << 30))
            .min(1 << 48)
    }

    fn region_options(&self) -> RegionOptions {
        let mut o = RegionOptions::new()
            .layout(&self.layout)
            .ignore_unsafe_shutdown(self.ignore_unsafe_shutdown);
        if let Some(root) = &self.sysfs_root {
            o = o.sysfs_root(root);
        }
        if let Some(f) = self.force_pmem {
            o = o.force_pmem(f);
        }
        if let Some(e) = self.eadr {
            o = o.eadr(e);
        }
        #[cfg(feature = "simulate")]
        if let Some(sim) = &self.simulation {
            o = o.simulate(sim.clone());
        }
        if let Some(ext) = &self.external {
            o = o.external(ext.clone());
        }
        if let Some(max) = self.max_size {
            o = o.grow_room(max);
        }
        o.engine(self.engine).journal(self.journal.clone())
    }

    /// The persistence engine for a pool on a regular file (default
    /// [`Engine::Auto`](pmem_core::Engine::Auto): persistent memory where the file is, or was
    /// forced; the journaled disk engine on any other file). See [`Engine`](pmem_core::Engine).
    ///
    /// # Examples
    ///
    /// ```
    /// use ptm::{Engine, JournalOptions, PCell, Persistent, Pool, PoolOptions};
    ///
    /// #[derive(Persistent)]
    /// #[persistent(crate = "ptm::pmem_core")]
    /// #[repr(C)]
    /// struct Root {
    ///     n: PCell<u64>,
    /// }
    ///
    /// # fn main() -> Result<(), ptm::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let opts = PoolOptions::new().engine(Engine::Journaled);
    /// let pool = Pool::<Root>::create(dir.path().join("j.pool"), 8 << 20, &opts)?;
    /// let before = ptm::thread_stats();
    /// pool.transaction(|tx, root| root.n.set(tx, 1))?;
    /// assert_eq!(ptm::thread_stats().since(&before).fsyncs, 1); // one fdatasync per commit
    /// # Ok(()) }
    /// ```
    pub fn engine(mut self, engine: pmem_core::Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Options of the journaled engine: where the journal lives (default `<pool>.journal`),
    /// its bound before a checkpoint (64 MiB), and buffered durability
    /// ([`JournalOptions::buffered`](pmem_core::JournalOptions::buffered): commits return once
    /// journaled in memory; a sync every period or [`Pool::sync`] makes a prefix of them
    /// durable).
    pub fn journal(mut self, opts: pmem_core::JournalOptions) -> Self {
        self.journal = opts;
        self
    }

    /// Backs the pool with memory from another crate instead of a file mapping — e.g.
    /// `nvme_backing::pool_memory(resident_pages)`, paged memory with CRC dirty tracking. The
    /// domain is then [`DomainKind::Paged`](pmem_core::DomainKind::Paged) (write-through: each
    /// drain writes changed blocks home and syncs), or, with
    /// [`engine`](PoolOptions::engine)`(Engine::Journaled)`, the journaled engine on that memory
    /// (one `fdatasync` per durable transaction; a dirty page is written home only after the
    /// journal is durable).
    pub fn external_memory(mut self, source: pmem_core::ExternalMemorySource) -> Self {
        self.external = Some(source);
        self
    }
}

/// Process-unique pool ids (to find a thread's open transaction on this pool).
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// An open transactional pool whose root object is an `R`.
///
/// `Pool<R>` is `Sync` (usable from many threads) exactly when `R` is: put shared mutable state
/// under [`PMutex`](crate::PMutex) / [`PRwLock`](crate::PRwLock); [`PCell`](crate::PCell) is for
/// single-threaded pools. It is `Send` when `R` is, so an `Arc<Pool<R>>` of such a root goes to
/// `std::thread::spawn` and a `Pool<R>` into a `static OnceLock`.
pub struct Pool<R> {
    pub(crate) shared: Box<Shared>,
    /// Set by [`close`](Pool::close), so that drop does not close a second time.
    closed: bool,
    _root: PhantomData<R>,
}

impl<R> std::fmt::Debug for Pool<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("path", &self.shared.region.path())
            .field("domain", &self.shared.region.domain())
            .field("lanes", &self.shared.geo.lane_count)
            .finish_non_exhaustive()
    }
}

impl<R: Persistent> Pool<R> {
    /// Creates a pool of `size` bytes at `path` with a zeroed root `R`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] (lanes/lane size out of range, pool too small for lanes + root),
    /// and the pmem-core errors of [`RegionOptions::create`].
    pub fn create(path: impl AsRef<Path>, size: u64, opts: &PoolOptions) -> Result<Self> {
        let schema = pmem_core::schema::schema_of::<R>();
        Self::create_inner(
            path.as_ref(),
            size,
            opts,
            std::mem::size_of::<R>() as u64,
            Some(&schema),
        )
    }

    fn create_inner(
        path: &Path,
        size: u64,
        opts: &PoolOptions,
        root_size: u64,
        schema: Option<&pmem_core::schema::TypeSchema>,
    ) -> Result<Self> {
        if !(1..=layout::MAX_LANES).contains(&opts.lanes) {
            return Err(Error::InvalidOptions("lanes must be 1..=1024"));
        }
        if opts.lane_size < layout::MIN_LANE_SIZE || !opts.lane_size.is_multiple_of(4096) {
            return Err(Error::InvalidOptions(
                "lane size must be a multiple of 4096, at least 8 KiB",
            ));
        }
        let mut region = opts.region_options().create(path, size)?;
        let data = region.data_range();
        let planned = Geometry::plan(data.start, data.end, opts.lanes, opts.lane_size, root_size);
        let Some(geo) = planned.map(|g| g.with_room_to_grow(opts.max_size_for(size))) else {
            drop(region);
            let _ = std::fs::remove_file(path);
            return Err(Error::InvalidOptions(
                "pool too small for its lanes and root object",
            ));
        };
        // Lane headers, first log lines and commit records, and the root: zero (a device-DAX
        // node may hold old bytes).
        for i in 0..geo.lane_count as usize {
            let (log, _) = geo.lane_log(i);
            for (at, len) in [(geo.lane(i), log + 64 - geo.lane(i)), (geo.lane_commit(i), 64)] {
                region.write_at(at, &vec![0u8; len as usize])?;
                region.flush(at, len)?;
            }
        }
        zero_range(&mut region, geo.root_offset, geo.root_offset + root_size)?;
        // The chunk table: all chunks free.
        let heap = geo.heap_layout();
        zero_range(&mut region, heap.table, heap.chunks)?;
        let mut sb = [0u8; 256];
        let secret = layout::fresh_routing_secret();
        sb[..128].copy_from_slice(&geo.encode(secret));
        sb[layout::SB_GENERATION as usize..][..8].copy_from_slice(&1u64.to_le_bytes());
        region.write_at(data.start, &sb)?;
        // The root's schema record (all zero for `create_any`: nothing recorded). A device-DAX
        // node may hold old bytes there, so it is written either way.
        let record = schema.map(layout::encode_schema).unwrap_or_else(|| vec![0u8; 8]);
        region.write_at(data.start + layout::SB_SCHEMA, &record)?;
        region.flush(data.start + layout::SB_SCHEMA, record.len() as u64)?;
        region.persist(data.start, sb.len() as u64)?;
        Self::assemble(
            region,
            geo,
            secret,
            1,
            RecoveryReport {
                was_clean: true,
                ..Default::default()
            },
            opts,
        )
    }

    /// Opens a pool, checks its layout name and root type (its recorded schema, else its size),
    /// and runs recovery: committed transactions stay, uncommitted ones are rolled back.
    ///
    /// The pool records its root type's [schema](pmem_core::schema) when it is created; a root
    /// type with another schema (a field added, removed, renamed or retyped, an element type
    /// of a nested collection changed) is refused with [`Error::SchemaMismatch`], naming the
    /// first difference. A pool with no schema recorded (made before schemas were recorded, or
    /// by [`create_any`](Pool::create_any)) opens if the root size matches, and records `R`'s
    /// schema: later opens are checked.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedFormat`] (a pool made by a ptm with 256 KiB heap chunks),
    /// [`Error::SchemaMismatch`], [`Error::CorruptMetadata`] (also for a damaged schema
    /// record), [`Error::RootMismatch`], [`Error::CorruptLog`], and the pmem-core errors of
    /// [`RegionOptions::open`] (`PoolLocked`, `LayoutMismatch`, ...).
    pub fn open(path: impl AsRef<Path>, opts: &PoolOptions) -> Result<Self> {
        Self::open_inner(path, opts, false)
    }

    fn open_inner(path: impl AsRef<Path>, opts: &PoolOptions, any_root: bool) -> Result<Self> {
        let region = opts.region_options().open(path.as_ref())?;
        let data = region.data_range();
        let mut sb = [0u8; 256];
        region.read_at(data.start, &mut sb)?;
        if let Some(found) = crate::engine::layout::old_format(&sb) {
            return Err(Error::UnsupportedFormat {
                path: path.as_ref().to_owned(),
                found,
                supported: crate::engine::layout::SB_FORMAT,
            });
        }
        let geo = Geometry::decode(&sb, data.start, data.end).map_err(|what| Error::CorruptMetadata {
            path: path.as_ref().to_owned(),
            what,
        })?;
        let recorded = layout::read_root_schema(&region)?;
        let schema = (!any_root).then(pmem_core::schema::schema_of::<R>);
        if let Some(schema) = &schema {
            check_schema(path.as_ref(), &recorded, schema)?;
        }
        let expected = std::mem::size_of::<R>() as u64;
        if geo.root_size != expected && !(any_root && expected == 0) {
            return Err(Error::RootMismatch {
                expected,
                found: geo.root_size,
            });
        }
        let old_gen = layout::get(&sb, layout::SB_GENERATION as usize);
        let was_clean = layout::get(&sb, layout::SB_CLEAN as usize) == 1;
        let generation = (old_gen as u32).wrapping_add(1).max(1);
        let mut region = region;
        if let (RootSchema::NotRecorded, Some(schema)) = (&recorded, &schema) {
            // Record the schema of the type this pool is first opened as: everything but the
            // fingerprint, persisted; then the fingerprint word, persisted. A crash in between
            // leaves the fingerprint 0, "not recorded", whatever the other bytes hold.
            let record = layout::encode_schema(schema);
            let at = data.start + layout::SB_SCHEMA;
            region.write_at(at + 8, &record[8..])?;
            region.persist(at + 8, record.len() as u64 - 8)?;
            region.write_at(at, &record[..8])?;
            region.persist(at, 8)?;
        }
        let mut mutable = [0u8; 16];
        mutable[..8].copy_from_slice(&u64::from(generation).to_le_bytes());
        region.write_at(data.start + layout::SB_GENERATION, &mutable)?;
        region.persist(data.start + layout::SB_GENERATION, 16)?;
        let report = RecoveryReport {
            was_clean,
            ..Default::default()
        };
        let secret = layout::routing_secret(&sb);
        let pool = Self::assemble(region, geo, secret, generation, report, opts)?;
        Ok(pool)
    }

    fn assemble(
        region: Region,
        geo: Geometry,
        routing_secret: [u64; 2],
        generation: u32,
        report: RecoveryReport,
        opts: &PoolOptions,
    ) -> Result<Self> {
        let n = geo.lane_count as usize;
        let mut shared = Shared {
            region,
            geo,
            routing_secret,
            log_key: layout::log_key(routing_secret),
            generation,
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            lanes: LaneMap::new(n),
            slots: (0..n)
                .map(|_| LaneSlot(UnsafeCell::new(LaneVolatile::default())))
                .collect(),
            marks: CompletionMarks::new(n),
            heap: crate::engine::heap::Heap::new(geo.heap_layout(), opts.reserve),
            lock_timeout: opts.lock_timeout,
            auto_grow: opts.auto_grow,
            poisoned: AtomicBool::new(false),
            recovery: report,
        };
        shared.recovery = recover(&shared, report)?;
        Ok(Pool {
            shared: Box::new(shared),
            closed: false,
            _root: PhantomData,
        })
    }

    /// Runs `f` as one failure-atomic transaction: its changes commit (durably, 2 drains) when it
    /// returns `Ok`, and are rolled back when it returns `Err` or panics (the panic continues
    /// after the rollback). A transaction started inside another on the same pool and thread
    /// joins it: an inner `Err` rolls back the whole transaction.
    ///
    /// # Errors
    ///
    /// `f`'s error; [`Error::Aborted`] (converted into `E`) when an inner transaction failed, or
    /// the transaction was [doomed](crate::Transaction::doom), but `f` returned `Ok`; commit errors (I/O in the msync domain), [`Error::Poisoned`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ptm::{PCell, Persistent, Pool, PoolOptions};
    ///
    /// #[derive(Persistent)]
    /// #[persistent(crate = "ptm::pmem_core")]
    /// #[repr(C)]
    /// struct Root {
    ///     counter: PCell<u64>,
    /// }
    ///
    /// # fn main() -> Result<(), ptm::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let pool = Pool::<Root>::create(dir.path().join("c.pool"), 8 << 20, &PoolOptions::new())?;
    /// pool.transaction(|tx, root| root.counter.set(tx, root.counter.get(tx) + 1))?;
    /// let n = pool.transaction(|tx, root| Ok::<_, ptm::Error>(root.counter.get(tx)))?;
    /// assert_eq!(n, 1);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn transaction<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t Transaction<'t>, &'t R) -> Result<T, E>,
        E: From<Error>,
    {
        self.run(f, Transaction::commit).map(|(v, ())| v)
    }

    /// Like [`transaction`](Pool::transaction) with **relaxed durability**: the commit returns
    /// before drain 2. The returned [`PendingCommit`] holds the transaction's lane and locks
    /// until it completes (explicitly or on drop). It becomes durable at this thread's next
    /// drain: completing it, this thread's next transaction on the pool, or
    /// [`sync`](Pool::sync). Until then a crash may roll it back. Inside another transaction it
    /// joins the outer one.
    ///
    /// # Errors
    ///
    /// As [`transaction`](Pool::transaction).
    pub fn transaction_relaxed<T, E, F>(&self, f: F) -> Result<(T, PendingCommit<'_>), E>
    where
        F: for<'t> FnOnce(&'t Transaction<'t>, &'t R) -> Result<T, E>,
        E: From<Error>,
    {
        self.run(f, |tx| tx.commit_relaxed().map(Some))
            .map(|(v, p)| (v, p.unwrap_or_else(|| PendingCommit::settled(&self.shared))))
    }

    /// Runs `f` in a transaction on this pool (or in the thread's running one, which it then
    /// joins: `P::default()` for the commit's result), ending it with `commit` when `f`
    /// returns `Ok` and the transaction is not doomed, else rolling it back. Generic in the
    /// commit, so a strict transaction's result is `f`'s value alone (`P = ()`), with nothing
    /// of the relaxed commit's to carry back; inlined, so a read-only transaction around a
    /// short closure is one straight piece of code (README, "The sixteenth session").
    #[inline]
    fn run<'s, T, E, F, P: Default>(
        &'s self,
        f: F,
        commit: impl FnOnce(Transaction<'s>) -> Result<P>,
    ) -> Result<(T, P), E>
    where
        F: for<'t> FnOnce(&'t Transaction<'t>, &'t R) -> Result<T, E>,
        E: From<Error>,
    {
        let shared = &*self.shared;
        if shared.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Poisoned.into());
        }
        if let Some(outer) = crate::tx::current(shared.id) {
            // SAFETY: the pointer was registered by the enclosing `transaction` call on this
            // thread, which is still running (it is our caller), so the transaction is alive and
            // outlives this call.
            let outer: &Transaction<'_> = unsafe { &*outer };
            let r = f(outer, self.root_ref());
            if r.is_err() {
                outer.doom();
            }
            return r.map(|v| (v, P::default()));
        }
        crate::tx::settle_thread(shared)?;
        // No lane yet: the transaction takes one when it first logs, allocates or locks.
        let tx = Transaction::begin(shared);
        // If `f` panics, the guard rolls the transaction back while the panic unwinds, after
        // the registration (declared later, dropped first). A guard rather than
        // `catch_unwind`, whose result is moved through its frame (5 stores): consecutive short
        // read-only transactions overlap their cache misses only while each stays within what
        // the CPU holds behind a pending miss, in instructions and in stores (README, "The
        // sixteenth session").
        let guard = AbortOnUnwind(&tx);
        let registration = crate::tx::Registration::new(shared.id, &tx);
        let outcome = f(&tx, self.root_ref());
        drop(registration);
        std::mem::forget(guard);
        match outcome {
            Ok(v) if !tx.is_doomed() => Ok((v, commit(tx)?)),
            Ok(_) => {
                tx.abort()?;
                Err(Error::Aborted.into())
            }
            Err(e) => {
                tx.abort()?;
                Err(e)
            }
        }
    }

    fn root_ref(&self) -> &R {
        let () = R::__LAYOUT_CHECK;
        // SAFETY: the root area holds `size_of::<R>()` bytes (checked at open), 4096-aligned;
        // every bit pattern is a valid `R` (`R: Persistent`); mutation happens only through
        // `UnsafeCell`s inside `R` (cells and locks), never through this reference.
        unsafe { &*self.shared.ptr(self.shared.geo.root_offset).cast::<R>() }
    }

    /// Makes this thread's relaxed commits on this pool durable, and every pending completion
    /// mark. Strict commits are already durable; for them this only shortens the next recovery.
    ///
    /// # Errors
    ///
    /// I/O errors of the persistence domain (the first poisons the pool), then
    /// [`Error::Poisoned`].
    pub fn sync(&self) -> Result<()> {
        crate::tx::settle_thread(&self.shared)?;
        self.shared.sync()
    }

    /// Closes the pool cleanly: makes completion marks durable and sets the clean-shutdown flag.
    /// Dropping the pool does the same but ignores errors.
    ///
    /// # Errors
    ///
    /// I/O errors of the persistence domain; [`Error::Poisoned`] if a drain or sync failed
    /// earlier (the pool is then not marked clean: the next open recovers).
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        self.close_inner()
    }

    /// The persistence domain of the pool.
    pub fn domain(&self) -> DomainKind {
        self.shared.region.domain()
    }

    /// What the pool's persistence domain promises about committed transactions: that they
    /// survive power loss ([`Durability::PowerLoss`]: persistent memory mapped directly, or a
    /// file on a disk made durable by the journal, msync or a paged provider), or only the
    /// death of the process ([`Durability::ProcessCrash`]: a pool on tmpfs such as `/dev/shm`,
    /// a file merely treated as persistent memory with `force_pmem`, the crash harness's
    /// simulation). See [`Region::durability`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ptm::{Durability, PCell, Persistent, Pool, PoolOptions};
    ///
    /// #[derive(Persistent)]
    /// #[persistent(crate = "ptm::pmem_core")]
    /// #[repr(C)]
    /// struct Root {
    ///     n: PCell<u64>,
    /// }
    ///
    /// # fn main() -> Result<(), ptm::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// // Emulated persistent memory: the flushes reach the page cache, not a device.
    /// let opts = PoolOptions::new().force_pmem(true);
    /// let pool = Pool::<Root>::create(dir.path().join("p.pool"), 8 << 20, &opts)?;
    /// assert_eq!(pool.durability(), Durability::ProcessCrash);
    /// # Ok(()) }
    /// ```
    pub fn durability(&self) -> Durability {
        self.shared.region.durability()
    }

    /// The pool's transaction-layer geometry.
    pub fn geometry(&self) -> Geometry {
        self.shared.geometry()
    }

    /// What recovery did when the pool was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.shared.recovery
    }

    /// The open generation (incremented at every open; persistent locks of older generations
    /// are free).
    pub fn generation(&self) -> u32 {
        self.shared.generation
    }

    /// The underlying mapped region (header, path, domain).
    pub fn region(&self) -> &Region {
        &self.shared.region
    }

    /// Heap bytes currently free for log extents.
    pub fn heap_free(&self) -> u64 {
        self.shared
            .heap_index(|idx| idx.free.values().sum::<u64>() * crate::engine::heap::CHUNK)
            .unwrap_or(0)
    }

    /// Heap usage scanned from the persistent metadata (chunk table and slab bitmaps). Takes
    /// `&mut self` so no transaction runs meanwhile.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptHeap`] if the metadata is malformed.
    pub fn heap_stats(&mut self) -> Result<HeapStats> {
        let s = &*self.shared;
        // SAFETY: `scan_stats` reads only chunk table words and bitmap words of slab chunks of
        // `layout`, 8-aligned and inside the heap; `&mut self`: no transaction runs.
        crate::engine::heap::scan_stats(&s.heap.layout(), |off| unsafe { s.read_u64(off) })
    }

    /// Every allocated block as `(pool offset, block size)`, from the persistent metadata: for
    /// leak checks and reachability tracing (`ptm check`).
    ///
    /// # Errors
    ///
    /// [`Error::CorruptHeap`] if the metadata is malformed.
    pub fn allocated_blocks(&mut self) -> Result<Vec<(u64, u64)>> {
        let s = &*self.shared;
        // SAFETY: `allocated_blocks` reads only chunk table words and bitmap words of slab
        // chunks of the layout, 8-aligned and inside the heap; `&mut self`: no transaction runs.
        crate::engine::heap::allocated_blocks(&s.heap.layout(), |off| unsafe { s.read_u64(off) })
    }

    /// Verifies the allocator metadata: descriptors well formed (runs complete, continuations
    /// pointing back), no bitmap bit set beyond a slab's last block. Returns the statistics.
    ///
    /// # Errors
    ///
    /// [`Error::CorruptHeap`] naming the first problem found.
    pub fn check_heap(&mut self) -> Result<HeapStats> {
        let l = self.shared.heap.layout();
        // SAFETY: `build_index` reads chunk table words of chunks `i < n_chunks`, inside the heap;
        // `&mut self`: no transaction runs.
        crate::engine::heap::build_index(&l, |i| unsafe { self.shared.read_u64(l.desc_off(i)) })?;
        for i in 0..l.n_chunks {
            // SAFETY: the chunk table word of chunk `i < n_chunks`; `&mut self`: no transaction runs.
            if let Desc::Slab(c) = Desc::decode(unsafe { self.shared.read_u64(l.desc_off(i)) }) {
                let g = slab_geom(c);
                // SAFETY: the last bitmap word of slab chunk `i`, inside the chunk; `&mut self`: no
                // transaction runs.
                let last = unsafe { self.shared.read_u64(l.chunk_off(i) + (g.words - 1) * 8) };
                let valid = if g.blocks.is_multiple_of(64) {
                    u64::MAX
                } else {
                    (1u64 << (g.blocks % 64)) - 1
                };
                if last & !valid != 0 {
                    return Err(Error::CorruptHeap("bitmap bit set beyond the slab's last block"));
                }
            }
        }
        self.heap_stats()
    }

    /// Allocates `value` and stores the pointer into `dest` in one transaction (2 drains):
    /// after a crash either both happened or neither.
    ///
    /// # Errors
    ///
    /// As [`Transaction::alloc`] and [`PCell::set`](crate::PCell::set).
    pub fn alloc_into<T: Persistent>(
        &self,
        dest: impl for<'t> FnOnce(&'t R) -> &'t crate::PCell<PPtr<T>>,
        value: T,
    ) -> Result<PPtr<T>> {
        self.transaction(|tx, root| {
            let p = tx.alloc(value)?;
            dest(root).set(tx, p)?;
            Ok(p)
        })
    }
}

impl Pool<()> {
    /// Opens any transactional pool whatever its root type, with a unit root (for tools such as
    /// `ptm info` / `ptm check`): recovery runs, heap statistics and checks work; the root
    /// object is not accessible.
    ///
    /// # Errors
    ///
    /// As [`Pool::open`], except `RootMismatch`.
    pub fn open_any(path: impl AsRef<Path>, opts: &PoolOptions) -> Result<Self> {
        Self::open_inner(path, opts, true)
    }

    /// Creates a pool whose root area holds `root_size` zeroed bytes, for tools (`ptm create
    /// --root-size`): an application opens it with `Pool::<R>::open` where
    /// `size_of::<R>() == root_size`.
    ///
    /// # Errors
    ///
    /// As [`Pool::create`].
    pub fn create_any(path: impl AsRef<Path>, size: u64, root_size: u64, opts: &PoolOptions) -> Result<Self> {
        Self::create_inner(path.as_ref(), size, opts, root_size, None)
    }
}

/// Refuses to open a pool whose recorded root schema is not `expected`.
fn check_schema(path: &Path, recorded: &RootSchema, expected: &pmem_core::schema::TypeSchema) -> Result<()> {
    let expected_fingerprint = expected.fingerprint();
    let mismatch = |at: String, stored: String, expected: String, stored_fingerprint: u64| {
        Err(Error::SchemaMismatch {
            path: path.to_owned(),
            at,
            stored,
            expected,
            stored_fingerprint,
            expected_fingerprint,
        })
    };
    match recorded {
        RootSchema::NotRecorded => Ok(()),
        RootSchema::Fingerprint(f) if *f == expected_fingerprint => Ok(()),
        RootSchema::Fingerprint(f) => mismatch(
            expected.name.clone(),
            format!("another schema (too long to keep in the pool, fingerprint {f:#018x})"),
            expected.short(),
            *f,
        ),
        RootSchema::Described(stored) => match expected.first_difference(stored) {
            None => Ok(()),
            Some(d) => mismatch(d.at, d.stored, d.expected, stored.fingerprint()),
        },
    }
}

impl<R> Pool<R> {
    /// Syncs relaxed commits, marks the pool clean and drains (at most once: see `closed`).
    fn close_inner(&self) -> Result<()> {
        let s = &*self.shared;
        if s.poisoned.load(Ordering::Relaxed) {
            // Not marked clean: the next open recovers from what reached the media.
            return Err(Error::Poisoned);
        }
        s.sync()?;
        let at = s.region.data_range().start + layout::SB_CLEAN;
        // SAFETY: the clean word lies in the superblock inside the mapping; no transaction is
        // running (we hold the only handle), so nothing else accesses it.
        unsafe { s.ptr(at).cast::<u64>().write(1) };
        s.flush(at, 8);
        s.drain()
    }
}

impl<R> Drop for Pool<R> {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.close_inner();
        }
    }
}

/// Writes zeros over `[from, to)` of `region` and flushes them (no drain), 64 KiB at a time.
fn zero_range(region: &mut Region, from: u64, to: u64) -> Result<()> {
    let zeros = vec![0u8; 1 << 16];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64);
        region.write_at(at, &zeros[..n as usize])?;
        region.flush(at, n)?;
        at += n;
    }
    Ok(())
}

/// Recovery at open (single-threaded, before the pool is shared): for each lane, decide the fate
/// of its last logged transaction (see [`layout::verdict`]) and act on it. Marks the pool
/// not-clean until the next close.
fn recover(s: &Shared, mut report: RecoveryReport) -> Result<RecoveryReport> {
    // The clean word is already 0 and durable: `create` writes the superblock with it 0, and
    // `open` persists the new generation together with a 0 clean word (the 16 bytes at
    // SB_GENERATION), so storing and flushing it here again would be redundant persistence.
    debug_assert_eq!(layout::SB_CLEAN, layout::SB_GENERATION + 8);
    for lane in 0..s.geo.lane_count as usize {
        let completed = s.completed_word(lane).load(Ordering::Acquire);
        let scan = scan_lane(s, lane, None)?;
        let mut cr_bytes = [0u8; 64];
        s.region.read_at(s.geo.lane_commit(lane), &mut cr_bytes)?;
        let commit = CommitRecord::decode(&cr_bytes);
        let verdict = layout::verdict(completed, scan.seq, scan.entries.len() as u64, commit, || {
            let mut buf = layout::HashBuf::default();
            let mut h = DataHasher::new(&mut buf);
            for e in &scan.entries {
                // SAFETY: the range was validated by the scan; no other thread runs yet.
                let bytes = unsafe { std::slice::from_raw_parts(s.ptr(e.target), e.len as usize) };
                h.range(e.target, bytes);
            }
            h.finish()
        });
        let last = scan
            .seq
            .unwrap_or(0)
            .max(completed)
            .max(commit.map_or(0, |c| c.seq));
        if last > u64::MAX / 2 {
            // Sequence numbers grow by `MAX_LANES` per transaction from 0: one this large is a
            // corrupted word, and the next sequence number computed from it would overflow.
            return Err(Error::CorruptLog {
                lane,
                what: "sequence number out of range",
            });
        }
        match verdict {
            Verdict::Clean => {}
            Verdict::Complete => {
                s.completed_word(lane)
                    .store(scan.seq.unwrap_or(0), Ordering::Release);
                s.flush(s.geo.lane(lane), 8);
                report.completed += 1;
            }
            Verdict::RollBack => {
                s.roll_back(lane, scan.seq.unwrap_or(0), &scan.entries)?;
                report.rolled_back += 1;
                report.entries_undone += scan.entries.len() as u64;
            }
        }
        s.marks
            .set_durable(lane, s.completed_word(lane).load(Ordering::Acquire));
        // SAFETY: single-threaded recovery: no lane is held yet.
        unsafe { (*s.slots[lane].0.get()).next_seq = crate::tx::next_seq_after(last, lane) };
    }
    // One drain makes every lane's completion mark and roll-back durable (none when recovery
    // changed nothing: that drain would have nothing to make durable).
    if report.completed + report.rolled_back > 0 {
        s.drain()?;
    }
    Ok(report)
}

/// Rolls a transaction back when dropped: held across a transaction's closure and forgotten
/// when the closure returns, so it is dropped only while a panic in the closure unwinds (the
/// panic then goes on; a roll-back that fails has poisoned the pool).
struct AbortOnUnwind<'a, 'p>(&'a Transaction<'p>);

impl Drop for AbortOnUnwind<'_, '_> {
    fn drop(&mut self) {
        let _ = self.0.abort_unwinding();
    }
}
