//! Transactions: the undo log writer, commit and abort.
//!
//! Protocol (2 drains per durable transaction when snapshots are batched; docs/design.md):
//! 1. *snapshot*: append undo records (old bytes) to the lane log, flush them, flush pending
//!    completion marks of other lanes, **drain 1**; only then store in place;
//! 2. *commit*: flush every logged range, write the commit record (seq, entry count, hash of the
//!    new contents), flush it, **drain 2**; then mark the lane's `completed` (made durable by the
//!    next drainer) and release locks and lane.
//! 3. *abort*: restore old bytes newest first, flush, drain; mark completed, flush, drain.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::engine::lane_state::{HeldKind, LaneVolatile, RECENT};
use crate::engine::lanes::preferred_lane;
use crate::engine::layout::{
    self, encode_rec, CommitRecord, DataHasher, KIND_JUMP, KIND_NEW, KIND_UNDO, REC_ALIGN, REC_HEADER,
};
use crate::engine::lockword::{self, Attempt};
use crate::engine::log::scan_lane;
use crate::engine::nested_refs::NestedRefs;
use crate::engine::shared::Shared;
use crate::error::{Error, Result};

/// Smallest log extent taken from the heap when a lane's log is full.
const MIN_EXTENT: u64 = 256 * 1024;
/// Largest log extent.
const MAX_EXTENT: u64 = 64 * 1024 * 1024;
/// Records with at least this much data are copied with non-temporal stores.
const NT_THRESHOLD: u64 = 1024;
/// Below this many logged ranges, coverage is checked by a linear scan.
const LINEAR_RANGES: usize = 16;
/// How many ranges [`SnapshotBatch::add_all`] reads ahead (their lines loading together).
const BATCH_AHEAD: usize = 8;

/// [`Transaction::lane`] before the transaction took one.
const NO_LANE: usize = usize::MAX;

/// Shared holds a transaction keeps before it takes a lane ([`Transaction::lane`]).
const EARLY_LOCKS: usize = 4;

/// A shared hold taken before the transaction took a lane: the kind and the lock word.
type EarlyHold = (HeldKind, *const AtomicU64);

/// The next seq of lane `lane` after `last`: seqs of a lane are `lane + k * MAX_LANES`, so no two
/// lanes ever share one and stale records of another lane never match.
pub(crate) fn next_seq_after(last: u64, lane: usize) -> u64 {
    let m = u64::from(layout::MAX_LANES);
    (last / m + 1) * m + lane as u64
}

/// An object whose bytes a transaction may log and then change.
///
/// # Safety
///
/// `log_range` returns the address and length of bytes inside `self` that are interior-mutable
/// (inside an `UnsafeCell`) and that only the thread holding `&self` can reach while its
/// transaction runs (the type is `!Sync`, or access is guarded by a lock held by that
/// transaction): rolling them back must not race with any other thread.
pub unsafe trait Loggable {
    /// `(address, length)` of the bytes to log.
    fn log_range(&self) -> (usize, usize);
}

/// The state of the lane a transaction holds, used in place in its slot (moving it in and out
/// of the slot cost a read-only transaction a third of its time).
/// No lifetime: a `RefCell` is invariant in its contents, and `Transaction<'p>` must stay
/// covariant in `'p`; the transaction's `&'p Shared` keeps the slot alive.
pub(crate) struct LaneState {
    st: std::ptr::NonNull<LaneVolatile>,
}

impl LaneState {
    /// # Safety
    ///
    /// - The caller holds `lane` in `shared`'s lane map, and keeps holding it for as long as the
    ///   returned value is dereferenced, and only while `shared` lives: no other thread touches
    ///   the slot meanwhile.
    /// - No other reference to the slot's state is used while this one is.
    unsafe fn new(shared: &Shared, lane: usize) -> Self {
        LaneState {
            st: std::ptr::NonNull::from(&shared.slots[lane].0).cast(),
        }
    }
}

impl std::ops::Deref for LaneState {
    type Target = LaneVolatile;

    fn deref(&self) -> &LaneVolatile {
        // SAFETY: `new`'s contract: the lane (and so the slot) is held by this transaction while
        // it dereferences its state; the `RefCell` around this value orders its borrows.
        unsafe { self.st.as_ref() }
    }
}

impl std::ops::DerefMut for LaneState {
    fn deref_mut(&mut self) -> &mut LaneVolatile {
        // SAFETY: as in `deref`; `&mut self` comes from the `RefCell`'s exclusive borrow.
        unsafe { self.st.as_mut() }
    }
}

/// A running transaction. Obtained from [`Pool::transaction`](crate::Pool::transaction); lives
/// until the closure returns, is tied to its thread (`!Send`, `!Sync`).
// `repr(C)`: the uninitialized `early_locks` lie between two fields set to values other than
// zero, so the compiler does not fill them in while it zeroes the fields around them.
#[repr(C)]
pub struct Transaction<'p> {
    shared: &'p Shared,
    /// Shared holds (`PRwLock` reads, `PSharedLock` shared holds: no owner lane in the word)
    /// taken before the transaction took a lane, in order; moved to the lane state's list when
    /// it takes one, released at the end otherwise. A fifth one takes the lane.
    /// The first `early_count` entries are set; the others are uninitialized, so a transaction
    /// starts without writing them (a read-only transaction's stores count: see
    /// `Pool::run`).
    early_locks: Cell<[MaybeUninit<EarlyHold>; EARLY_LOCKS]>,
    /// The lane, once taken ([`NO_LANE`] before).
    lane: Cell<usize>,
    /// The lane's state, in its slot: set up when first needed (a lane is taken by the first
    /// log record, allocation, lock or `lane()` call, so a read-only transaction takes none).
    /// Not dereferenced after `finish` frees the lane or a relaxed commit hands it to its
    /// `PendingCommit`.
    st: std::cell::OnceCell<RefCell<LaneState>>,
    /// How many of `early_locks` are set (the common case, none, reads nothing else).
    early_count: Cell<usize>,
    doomed: Cell<bool>,
    nested: NestedRefs,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for Transaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Transaction");
        match self.st.get().map(RefCell::try_borrow) {
            Some(Ok(st)) => d
                .field("lane", &self.lane.get())
                .field("seq", &st.seq)
                .field("entries", &st.entries),
            Some(Err(_)) => d.field("lane", &self.lane.get()),
            None => d.field("lane", &"none yet"),
        }
        .finish()
    }
}

/// A registered transaction: its pool's id and the transaction.
type Registered = (u64, *const Transaction<'static>);

thread_local! {
    /// This thread's running transactions, outermost first: the first in `FIRST`, any others
    /// (a transaction on another pool inside it) in `NESTED`; `REGISTERED` counts them. The
    /// plain cells (no destructor) are what every transaction touches: cheaper to reach than
    /// the list, which only a transaction inside another one uses.
    static REGISTERED: Cell<usize> = const { Cell::new(0) };
    static FIRST: Cell<Registered> = const { Cell::new((0, std::ptr::null())) };
    static NESTED: RefCell<Vec<Registered>> = const { RefCell::new(Vec::new()) };
}

/// The transaction this thread is running on pool `id`, if any.
#[inline]
pub(crate) fn current(id: u64) -> Option<*const Transaction<'static>> {
    let n = REGISTERED.with(Cell::get);
    if n == 0 {
        return None;
    }
    if n > 1 {
        let inner = NESTED.with(|c| c.borrow().iter().rev().find(|(p, _)| *p == id).map(|&(_, t)| t));
        if inner.is_some() {
            return inner;
        }
    }
    let (p, t) = FIRST.with(Cell::get);
    (p == id).then_some(t)
}

/// Registers a transaction as this thread's current one on its pool until dropped.
/// Registrations are dropped in the reverse order of their making (each lives in one
/// `Pool::run` call, and a nested one inside the closure of the outer one).
pub(crate) struct Registration(u64);

impl Registration {
    #[inline]
    pub(crate) fn new(id: u64, tx: &Transaction<'_>) -> Self {
        let p = (tx as *const Transaction<'_>).cast::<Transaction<'static>>();
        let n = REGISTERED.with(Cell::get);
        if n == 0 {
            FIRST.with(|f| f.set((id, p)));
        } else {
            Self::nest(id, p);
        }
        REGISTERED.with(|r| r.set(n + 1));
        Registration(id)
    }

    /// Registers a transaction started inside another one of this thread.
    #[inline(never)]
    fn nest(id: u64, p: *const Transaction<'static>) {
        NESTED.with(|c| c.borrow_mut().push((id, p)));
    }
}

impl Drop for Registration {
    #[inline]
    fn drop(&mut self) {
        let n = REGISTERED.with(Cell::get);
        if n > 1 {
            self.unnest();
        } else {
            debug_assert_eq!(FIRST.with(Cell::get).0, self.0, "registrations nest");
            FIRST.with(|f| f.set((0, std::ptr::null())));
        }
        REGISTERED.with(|r| r.set(n.saturating_sub(1)));
    }
}

impl Registration {
    /// Drops a registration made by [`nest`](Registration::nest).
    #[inline(never)]
    fn unnest(&self) {
        let popped = NESTED.with(|c| c.borrow_mut().pop());
        debug_assert_eq!(popped.map(|(p, _)| p), Some(self.0), "registrations nest");
    }
}

impl<'p> Transaction<'p> {
    /// A transaction on `shared`, holding no lane yet.
    pub(crate) fn begin(shared: &'p Shared) -> Self {
        Transaction {
            shared,
            lane: Cell::new(NO_LANE),
            st: std::cell::OnceCell::new(),
            // SAFETY: an array of `MaybeUninit` needs no initialization. (Not the repeat
            // expression `[MaybeUninit::uninit(); N]`, which the compiler fills with zeros.)
            early_locks: Cell::new(unsafe {
                MaybeUninit::<[MaybeUninit<EarlyHold>; EARLY_LOCKS]>::uninit().assume_init()
            }),
            early_count: Cell::new(0),
            doomed: Cell::new(false),
            nested: NestedRefs::default(),
            _not_send: PhantomData,
        }
    }

    /// The lane state, taking a lane and starting its transaction on first use.
    #[inline]
    fn state(&self) -> &RefCell<LaneState> {
        self.st.get_or_init(|| {
            let lane = self.shared.lanes.acquire(preferred_lane(self.shared.lanes.len()));
            self.lane.set(lane);
            let mut st = Self::start(self.shared, lane);
            // Shared holds taken before the lane: held from now on as if taken with it.
            st.locks.extend(self.take_early());
            RefCell::new(st)
        })
    }

    /// The lane state, if a lane was taken.
    #[inline]
    fn started(&self) -> Option<&RefCell<LaneState>> {
        self.st.get()
    }

    /// Ends a transaction that never took a lane: it logged, allocated and locked exclusively
    /// nothing, so all it has to give back are its early shared holds, newest first.
    #[inline]
    fn end_without_lane(&self) {
        if self.early_count.get() == 0 {
            return;
        }
        for (kind, w) in self.take_early().rev() {
            release_lock(self.shared, kind, w);
        }
    }

    /// The early shared holds, oldest first, leaving none.
    fn take_early(&self) -> impl DoubleEndedIterator<Item = EarlyHold> {
        let n = self.early_count.replace(0);
        Self::holds_of(self.early_locks.get(), n)
    }

    /// The early shared holds, oldest first (a copy; they stay held).
    fn early(&self) -> impl DoubleEndedIterator<Item = EarlyHold> {
        Self::holds_of(self.early_locks.get(), self.early_count.get())
    }

    /// The first `n` entries of `early`, a copy of `early_locks` with `n` its `early_count`.
    fn holds_of(
        early: [MaybeUninit<EarlyHold>; EARLY_LOCKS],
        n: usize,
    ) -> impl DoubleEndedIterator<Item = EarlyHold> {
        // SAFETY: the first `early_count` entries are set: `wait_for` writes entry `n` (below
        // `EARLY_LOCKS`) before it raises the count to `n + 1`, and the count otherwise only
        // falls to 0 (`take_early`); `take(n)` yields those entries only.
        early.into_iter().take(n).map(|e| unsafe { e.assume_init() })
    }

    /// The lane of a started transaction (see [`state`](Self::state)).
    #[inline]
    fn lane_id(&self) -> usize {
        debug_assert_ne!(self.lane.get(), NO_LANE, "the transaction holds a lane");
        self.lane.get()
    }

    /// Starts this transaction on `lane`, just taken: its seq, an empty log and lists.
    fn start(shared: &Shared, lane: usize) -> LaneState {
        // SAFETY: the caller took `lane` in the lane map for this transaction, which keeps it
        // until `finish` releases it or a relaxed commit hands it to its pending commit; after those the
        // transaction ends without touching its state again.
        let mut st = unsafe { LaneState::new(shared, lane) };
        st.seq = st.next_seq;
        st.next_seq = next_seq_after(st.seq, lane);
        (st.pos, st.end) = shared.geo.lane_log(lane);
        st.unflushed = st.pos;
        // Format 5: the log starts in the line of the lane's `completed` word (design §8.3).
        st.mark_line = if shared.geo.packed_log {
            shared.geo.lane(lane)
        } else {
            u64::MAX
        };
        st.mark_line_flushed = false;
        st.entries = 0;
        st.ranges.clear();
        clear_logical(&mut st);
        st.extents.clear();
        st.next_extent = MIN_EXTENT;
        st.undrained = false;
        st.unordered_undo.clear();
        st.area_start = st.pos;
        st.ordered_pos = st.pos;
        st.ordered_end = st.end;
        st.took_back = false;
        st.batch_depth = 0;
        st.locks.clear();
        st.heap.begin();
        st
    }

    pub(crate) fn nested_refs(&self) -> &NestedRefs {
        &self.nested
    }

    /// The lane this transaction runs on. A transaction takes its lane when it first needs one
    /// (its first snapshot, store, allocation or lock, or this call); until then it holds none,
    /// so a read-only transaction never waits for a lane.
    pub fn lane(&self) -> usize {
        self.state();
        self.lane_id()
    }

    pub(crate) fn shared(&self) -> &'p Shared {
        self.shared
    }

    /// For `ptm-collections` (not covered by semver): the pool's 128-bit routing secret
    /// (superblock offset 72, drawn at creation, design §8.1) and the pool offset of `obj`, so a
    /// structure can place keys by a hash keyed by both, which nobody outside the pool can
    /// predict and which never changes while `obj` stays where it is. `Ok(None)` for a pool
    /// without a secret (superblock format 3, made before it existed): such a structure keeps
    /// its fixed placement. The secret must not be printed, logged or stored anywhere else.
    ///
    /// # Errors
    ///
    /// [`Error::NotInPool`](crate::Error::NotInPool) when `obj` is not in this pool's root or
    /// heap.
    #[doc(hidden)]
    pub fn placement_secret<T>(&self, obj: &T) -> Result<Option<([u64; 2], u64)>> {
        let secret = self.shared.routing_secret;
        if secret == [0, 0] {
            return Ok(None);
        }
        let off = self
            .shared
            .offset_of(obj as *const T as usize, std::mem::size_of::<T>())?;
        Ok(Some((secret, off)))
    }

    /// Dooms the transaction: it rolls back when it ends, even if its closure returns `Ok`
    /// (then [`Pool::transaction`](crate::Pool::transaction) returns [`Error::Aborted`]); an
    /// inner transaction joined to it dooms the outer one. There is no way back: call it when
    /// the transaction's changes so far must never be committed, e.g. a library operation that
    /// failed after recording some of its frees (which would otherwise take effect at commit
    /// while the data still links the blocks). Stores and logging go on working until the end,
    /// and are undone then.
    ///
    /// ```
    /// # use ptm::{Error, PCell, Persistent, Pool};
    /// # #[derive(Persistent)]
    /// # #[persistent(crate = "ptm::pmem_core")]
    /// # #[repr(C)]
    /// # struct Root { n: PCell<u64> }
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let pool = Pool::<Root>::create(dir.path().join("d.pool"), 8 << 20, &Default::default())?;
    /// let r = pool.transaction(|tx, root| {
    ///     root.n.set(tx, 7)?;
    ///     tx.doom();
    ///     Ok::<_, Error>(())
    /// });
    /// assert!(matches!(r, Err(Error::Aborted)));
    /// pool.transaction(|tx, root| {
    ///     assert_eq!(root.n.get(tx), 0);
    ///     Ok::<_, Error>(())
    /// })?;
    /// # Ok::<_, Error>(())
    /// ```
    pub fn doom(&self) {
        self.doomed.set(true);
    }

    pub(crate) fn is_doomed(&self) -> bool {
        self.doomed.get()
    }

    /// Makes sure the old contents of `[addr, addr + len)` are in the undo log and ordered
    /// before the caller stores there. Costs one drain unless the range is already logged and
    /// drained. Inside a [`snapshot`](Transaction::snapshot) batch too: the caller stores right
    /// after, so an entry the batch appended (this one or an earlier one) must not wait for the
    /// batch's drain.
    #[inline]
    pub(crate) fn log_addr(&self, addr: usize, len: usize) -> Result<()> {
        let off = self.shared.offset_of(addr, len)?;
        self.log_before_store(off, len as u64)
    }

    /// [`log_addr`](Self::log_addr) for a pool offset already checked by `Shared::offset_of`.
    #[inline]
    pub(crate) fn log_before_store(&self, off: u64, len: u64) -> Result<()> {
        self.log(off, len, true)
    }

    /// Logs `[off, off + len)` for a [`snapshot`](Transaction::snapshot) batch: inside one, the
    /// drain waits for the batch to close (the batch's caller stores only after that).
    pub(crate) fn log_range(&self, off: u64, len: u64) -> Result<()> {
        self.log(off, len, false)
    }

    /// Appends an undo entry for the range unless it is logged already; drains when it appended
    /// one and no batch is open, or, inside a batch, when `store_next` (the caller stores as soon
    /// as this returns) and the range overlaps an undo entry not yet ordered.
    #[inline]
    fn log(&self, off: u64, len: u64, store_next: bool) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if let Some(cell) = self.started() {
            // SAFETY: the reference lives only for this check, during which nothing borrows the
            // state mutably (single-threaded: `Transaction` is `!Send` and `!Sync`).
            if let Ok(st) = unsafe { cell.try_borrow_unguarded() } {
                if st.batch_depth == 0 && covered(st, off, len) {
                    return Ok(());
                }
            }
        }
        self.log_slow(off, len, store_next)
    }

    /// [`log`](Self::log) when the range is not simply covered outside a batch (or no lane is
    /// taken yet): appends, and drains where `log` says.
    #[inline(never)]
    fn log_slow(&self, off: u64, len: u64, store_next: bool) -> Result<()> {
        let mut st = self.st_mut();
        let appended = !covered(&st, off, len);
        if appended {
            self.append_undo(&mut st, off, len)?;
        }
        let must_order = if st.batch_depth == 0 {
            appended
        } else {
            // Inside a batch: only a store into a range whose undo entry is not yet ordered
            // (fresh memory and ranges logged before the batch need nothing).
            store_next
                && st
                    .unordered_undo
                    .iter()
                    .any(|&(o, l)| o < off + len && off < o + l)
        };
        if must_order {
            self.drain_log(&mut st)?;
        }
        Ok(())
    }

    /// Logs every range that `f` adds behind a single drain. Ranges already logged cost nothing.
    /// The drain happens when `f` returns, even on error or panic, so no logged range is ever
    /// stored to before its entry is durable.
    ///
    /// # Errors
    ///
    /// `f`'s error, [`Error::OutOfSpace`] when the log cannot grow, [`Error::NotInPool`].
    pub fn snapshot(&self, f: impl FnOnce(&mut SnapshotBatch<'_, 'p>) -> Result<()>) -> Result<()> {
        self.st_mut().batch_depth += 1;
        struct Close<'a, 'p>(&'a Transaction<'p>);
        impl Drop for Close<'_, '_> {
            fn drop(&mut self) {
                let mut st = self.0.st_mut();
                st.batch_depth -= 1;
                if st.batch_depth == 0 && st.undrained && self.0.drain_log(&mut st).is_err() {
                    self.0.doom();
                }
            }
        }
        let close = Close(self);
        let r = f(&mut SnapshotBatch { tx: self });
        drop(close);
        if self.is_doomed() && r.is_ok() {
            return Err(Error::Aborted);
        }
        r
    }

    #[inline(always)]
    fn append_undo(&self, st: &mut LaneVolatile, off: u64, len: u64) -> Result<()> {
        if !self.shared.loggable(off, len) {
            return Err(Error::NotInPool {
                addr: off as usize,
                len: len as usize,
            });
        }
        // The common case: one record, in the current area (keeping REC_ALIGN bytes at its end
        // for a jump record), copied with plain stores.
        if len < NT_THRESHOLD && st.end - st.pos >= REC_ALIGN + REC_HEADER + len {
            self.write_undo(st, off, len);
        } else {
            self.append_undo_split(st, off, len)?;
        }
        add_logical(st, off, len);
        st.unordered_undo.push((off, len));
        Ok(())
    }

    /// [`append_undo`](Self::append_undo)'s records for a loggable range that needs a jump to
    /// a fresh extent, several records, or a non-temporal copy.
    #[inline(never)]
    fn append_undo_split(&self, st: &mut LaneVolatile, off: u64, len: u64) -> Result<()> {
        let mut done = 0;
        while done < len {
            // Keep REC_ALIGN bytes at the end of every area for a jump record.
            let room = st.end - st.pos;
            let fits = room.saturating_sub(REC_ALIGN + REC_HEADER);
            let rest = len - done;
            // Split a range across areas only when it would not fit a fresh extent either.
            let fresh = st.next_extent - REC_ALIGN - REC_HEADER;
            if fits == 0 || fits < 64.min(rest) || (fits < rest && rest <= fresh) {
                self.jump(st)?;
                continue;
            }
            let n = fits.min(rest);
            self.write_undo(st, off + done, n);
            done += n;
        }
        Ok(())
    }

    /// Writes the undo record of `[target, target + n)` at the lane's log position, where the
    /// caller made room for it (and for a jump record after it).
    #[inline(always)]
    fn write_undo(&self, st: &mut LaneVolatile, target: u64, n: u64) {
        let s = self.shared;
        // SAFETY: `[target, target + n)` is loggable (the caller checked) and owned by this
        // transaction (cell / lock contract), so nothing writes it concurrently.
        let old = unsafe { std::slice::from_raw_parts(s.ptr(target), n as usize) };
        let header = encode_rec(s.log_key, st.seq, KIND_UNDO, n, target, old);
        let at = st.pos;
        note_header(st, at);
        // SAFETY: `[at, at + rec_total(n))` lies in this lane's current log area (the caller
        // made room), which only this transaction writes; it does not overlap the target (log
        // areas are lanes or extents reserved for this lane).
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), s.ptr(at), REC_HEADER as usize);
            if n >= NT_THRESHOLD {
                s.flush(st.unflushed, at + REC_HEADER - st.unflushed);
                s.region
                    .copy_nontemporal_ptr(s.ptr(at + REC_HEADER), old.as_ptr(), n as usize);
            } else if n == 8 {
                // A word, the most common range: one unaligned load and store, no `memcpy`.
                s.ptr(at + REC_HEADER)
                    .cast::<u64>()
                    .write_unaligned(old.as_ptr().cast::<u64>().read_unaligned());
            } else {
                // Flushed with the records around it at the next drain (`drain_log`):
                // packed records share lines, each flushed once.
                std::ptr::copy_nonoverlapping(old.as_ptr(), s.ptr(at + REC_HEADER), n as usize);
            }
        }
        st.pos += s.geo.rec_total(n);
        if n >= NT_THRESHOLD {
            // The copy flushed its own unaligned head and tail lines.
            st.unflushed = st.pos;
        }
        st.entries += 1;
        st.ranges.push((target, n));
        st.undrained = true;
    }

    /// Continues the log in a fresh heap extent.
    fn jump(&self, st: &mut LaneVolatile) -> Result<()> {
        // The preferred size, or smaller ones down to one chunk when the heap is fragmented.
        // Extents are volatile reservations of free heap chunks (never marked in the chunk table).
        let mut size = st.next_extent;
        let keep = self.chunks_to_keep(&st.heap, true);
        let ext = loop {
            let n = size / crate::engine::heap::CHUNK;
            if let Some(start) = self.take_chunks(n, keep)? {
                break self.shared.heap.layout().chunk_off(start);
            }
            if size <= crate::engine::heap::CHUNK {
                return Err(self.out_of_space_with(crate::engine::heap::CHUNK, &st.heap.bits, keep));
            }
            size /= 2;
        };
        st.extents.push((ext, size));
        st.next_extent = (size * 2).min(MAX_EXTENT);
        let header = encode_rec(self.shared.log_key, st.seq, KIND_JUMP, size, ext, &[]);
        note_header(st, st.pos);
        // SAFETY: every append keeps REC_ALIGN bytes free at the end of the area for this
        // record; the area belongs to this lane.
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.shared.ptr(st.pos), REC_HEADER as usize)
        };
        // The area's records not flushed yet, and the jump record.
        self.shared
            .flush(st.unflushed, st.pos + REC_HEADER - st.unflushed);
        st.pos = ext;
        st.unflushed = ext;
        st.end = ext + size;
        st.area_start = ext;
        st.undrained = true;
        Ok(())
    }

    /// This transaction's lane state.
    pub(crate) fn st_mut(&self) -> std::cell::RefMut<'_, LaneState> {
        self.state().borrow_mut()
    }

    /// This transaction's lane state, shared (taking a lane first if it holds none).
    fn st_ref(&self) -> std::cell::Ref<'_, LaneState> {
        self.state().borrow()
    }

    /// [`log_range`](Self::log_range) for each of `ranges` inside a batch (so none drains), under
    /// one borrow of the lane state, after prefetching the lane's next `bytes` of log (where
    /// their records go: lines an earlier transaction flushed too).
    fn log_group(&self, ranges: &[(u64, u64)], bytes: u64) -> Result<()> {
        let mut st = self.st_mut();
        debug_assert!(st.batch_depth > 0, "log_group outside a snapshot batch");
        self.shared.prefetch(st.pos, bytes);
        for &(off, len) in ranges {
            // (An empty range is covered.)
            if !covered(&st, off, len) {
                self.append_undo(&mut st, off, len)?;
            }
        }
        Ok(())
    }

    /// Logs `[off, off + len)` (if not yet covered) without draining: for metadata whose new
    /// value is stored only at commit, after the log is durable.
    pub(crate) fn log_deferred(&self, st: &mut LaneVolatile, off: u64, len: u64) -> Result<()> {
        if covered(st, off, len) {
            return Ok(());
        }
        self.append_undo(st, off, len)
    }

    /// Takes back the newest log record if it is a record of `kind` for `target` appended since
    /// the last drain (so not ordered before any in-place store, and not covered by a commit):
    /// its header is zeroed and flushed, and it no longer counts. Returns whether it did.
    ///
    /// A stale copy of the record may still reach the media. With other records left, the
    /// caller's commit runs the pre-commit drain (`undrained` is set), which orders the zeroed
    /// header before the commit record; with none left, the lane's completion mark is set at
    /// the end (`took_back`), which every later drainer makes durable before its in-place
    /// stores (§8.3), so recovery never replays the stale copy over newer data.
    pub(crate) fn take_back(&self, st: &mut LaneVolatile, kind: u8, target: u64) -> bool {
        // The newest record is the newest logged range's (jump records are not ranges, and a
        // jump starts a new area, checked below): its size tells where it starts.
        let Some(&(_, last_len)) = st.ranges.last() else {
            return false;
        };
        let total = self
            .shared
            .geo
            .rec_total(if kind == KIND_NEW { 0 } else { last_len });
        let Some(at) = st.pos.checked_sub(total) else {
            return false;
        };
        let unordered = st.end != st.ordered_end || at >= st.ordered_pos;
        if at < st.area_start || !unordered || !st.index.is_empty() {
            return false;
        }
        // SAFETY: `[at, at + total)` lies in this lane's current area (at least `area_start`,
        // checked above), which only this transaction writes.
        let header = unsafe { std::slice::from_raw_parts(self.shared.ptr(at), REC_HEADER as usize) };
        let r = layout::decode_rec(header);
        let len = r.len;
        if r.seq != st.seq
            || r.kind != kind
            || r.target != target
            || st.ranges.last() != Some(&(target, len))
            || st.logical.last() != Some(&(target, len))
        {
            return false;
        }
        // SAFETY: as above.
        unsafe { std::ptr::write_bytes(self.shared.ptr(at), 0, REC_HEADER as usize) };
        note_header(st, at);
        self.shared.flush(at, REC_HEADER);
        st.pos = at;
        st.unflushed = st.unflushed.min(at);
        st.entries -= 1;
        st.ranges.pop();
        pop_logical(st);
        st.undrained = true;
        st.took_back = true;
        true
    }

    /// Appends a new-range record for fresh memory `[off, off + len)`: no old bytes, but the
    /// commit flushes the range and includes it in its data hash.
    pub(crate) fn record_new(&self, off: u64, len: u64) -> Result<()> {
        self.record_new_in(&mut self.st_mut(), off, len)
    }

    /// [`record_new`](Self::record_new) with the lane state borrowed by the caller.
    pub(crate) fn record_new_in(&self, st: &mut LaneVolatile, off: u64, len: u64) -> Result<()> {
        let total = self.shared.geo.rec_total(0);
        if st.end - st.pos < REC_ALIGN + total {
            self.jump(st)?;
        }
        let header = encode_rec(self.shared.log_key, st.seq, KIND_NEW, len, off, &[]);
        note_header(st, st.pos);
        // SAFETY: room for this record and a later jump was checked; the area is this lane's.
        // Flushed at the next drain (`drain_log`).
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.shared.ptr(st.pos), REC_HEADER as usize)
        };
        st.pos += total;
        st.entries += 1;
        st.ranges.push((off, len));
        st.undrained = true;
        // Fresh memory has no old contents to restore: stores into it need no undo record.
        add_logical(st, off, len);
        Ok(())
    }

    /// Before the commit record: makes every appended record durable (one more drain only if
    /// something was logged after the last drain, e.g. an allocation not followed by any
    /// snapshot), then stores the deferred allocator metadata, whose old values are now durable
    /// in the log. The stored words are logged ranges, so commit flushes and hashes them.
    fn apply_deferred(&self) -> Result<()> {
        let mut st = self.st_mut();
        // Pending allocations' records (and kept slabs going back) first: the slabs they
        // empty are returned below.
        self.log_pending_allocations(&mut st)?;
        self.return_empty_slabs(&mut st);
        if !st.heap.has_deferred() && !st.undrained {
            return Ok(());
        }
        if st.undrained {
            self.drain_log(&mut st)?;
        }
        let s = self.shared;
        for (&word, &(set, clear)) in st.heap.bits.iter() {
            // SAFETY: `word` is a bitmap word of a slab whose metadata lock this transaction holds
            // (taken before the block was allocated or freed), 8-aligned inside the heap; its old value
            // is durable in the log.
            let v = (unsafe { s.read_u64(word) } | set) & !clear;
            // SAFETY: as above.
            unsafe { s.write_u64(word, v) };
        }
        for &(off, v) in &st.heap.lists.descs {
            // SAFETY: `off` is the chunk table word of a chunk whose metadata lock this transaction
            // holds (taken before it changed the descriptor), inside the heap; its old value is durable
            // in the log.
            unsafe { s.write_u64(off, v) };
        }
        Ok(())
    }

    /// Drain 1 (or a later snapshot drain): an ordering point that puts appended records and
    /// other lanes' completion marks before any in-place store that follows. It need not make
    /// them durable: a crash that loses them also loses every store flushed after them (the
    /// commit record, and a later transaction's writes into a freed or completed range), which
    /// is all the undo protocol and the completion marks need.
    fn drain_log(&self, st: &mut LaneVolatile) -> Result<()> {
        // Blocks allocated since the last drain get their log records now (alloc.rs).
        self.log_pending_allocations(st)?;
        // The records appended since the last drain, each line once.
        if st.pos > st.unflushed {
            self.shared.flush(st.unflushed, st.pos - st.unflushed);
            st.unflushed = st.pos;
        }
        // Marks an earlier drain flushed and ordered are settled now, not right after it.
        if !st.completions.is_empty() {
            self.shared.settle_completions(&st.completions);
        }
        let mut completions = std::mem::take(&mut st.completions);
        // This lane's own pending mark is in the line its first record was flushed with.
        let own = if st.mark_line_flushed {
            self.lane_id()
        } else {
            NO_LANE
        };
        self.shared.flush_pending_completions_but(&mut completions, own);
        let r = self.shared.order();
        if r.is_ok() {
            st.undrained = false;
            st.unordered_undo.clear();
            st.ordered_pos = st.pos;
            st.ordered_end = st.end;
        } else {
            completions.clear();
        }
        st.completions = completions;
        r
    }

    /// Takes the persistent mutex word `w` for this transaction (held until it ends).
    pub(crate) fn lock_mutex(&self, w: &AtomicU64) -> Result<()> {
        let lane = self.lane() as u32;
        let generation = self.shared.generation;
        self.wait_for(
            || lockword::mutex_try_lock(w, generation, lane),
            w,
            HeldKind::Mutex,
        )
    }

    /// Takes a shared hold of rwlock word `w` (no-op if this transaction holds it already).
    pub(crate) fn lock_read(&self, w: &AtomicU64) -> Result<()> {
        if self.holds(w).is_some() {
            return Ok(());
        }
        let generation = self.shared.generation;
        self.wait_for(|| lockword::rw_try_read(w, generation), w, HeldKind::Read)
    }

    /// Takes the exclusive hold of rwlock word `w`, upgrading this transaction's shared hold.
    pub(crate) fn lock_write(&self, w: &AtomicU64) -> Result<()> {
        let lane = self.lane() as u32;
        let generation = self.shared.generation;
        match self.holds(w) {
            Some(HeldKind::Write) => Ok(()),
            Some(_) => match lockword::rw_try_write(w, generation, lane, true) {
                Attempt::Acquired | Attempt::AlreadyHeld => {
                    self.set_held(w, HeldKind::Write);
                    Ok(())
                }
                Attempt::Busy => Err(Error::LockUpgrade),
            },
            None => self.wait_for(
                || lockword::rw_try_write(w, generation, lane, false),
                w,
                HeldKind::Write,
            ),
        }
    }

    /// Records that this transaction's hold of `w` is now of kind `kind` (after an upgrade).
    fn set_held(&self, w: &AtomicU64, kind: HeldKind) {
        let mut st = self.st_mut();
        if let Some(l) = st.locks.iter_mut().find(|(_, p)| std::ptr::eq(*p, w)) {
            l.0 = kind;
        }
    }

    fn holds(&self, w: &AtomicU64) -> Option<HeldKind> {
        if let Some((kind, _)) = self.early().find(|(_, p)| std::ptr::eq(*p, w)) {
            return Some(kind);
        }
        // Without a lane, a transaction holds only its early shared holds.
        self.started()?
            .borrow()
            .locks
            .iter()
            .find(|(_, p)| std::ptr::eq(*p, w))
            .map(|(k, _)| *k)
    }

    /// Takes a shared hold of shared/exclusive word `w` (no-op if this transaction holds it in
    /// either mode).
    pub(crate) fn lock_shared(&self, w: &AtomicU64) -> Result<()> {
        if self.holds(w).is_some() {
            return Ok(());
        }
        let generation = self.shared.generation;
        self.wait_for(|| lockword::sx_try_read(w, generation), w, HeldKind::SxRead)
    }

    /// Takes the exclusive hold of shared/exclusive word `w`, upgrading this transaction's
    /// shared hold if it has one.
    pub(crate) fn lock_exclusive(&self, w: &AtomicU64) -> Result<()> {
        let lane = self.lane() as u32;
        let generation = self.shared.generation;
        match self.holds(w) {
            Some(HeldKind::SxWrite) => Ok(()),
            Some(_) => {
                let r = self.backoff(|| match lockword::sx_try_upgrade(w, generation, lane) {
                    lockword::Upgrade::Acquired => Some(Ok(())),
                    lockword::Upgrade::Wait => None,
                    lockword::Upgrade::Conflict => Some(Err(Error::LockUpgrade)),
                });
                match r {
                    Ok(()) => {
                        self.set_held(w, HeldKind::SxWrite);
                        Ok(())
                    }
                    Err(e) => {
                        lockword::sx_abandon_upgrade(w, generation, lane);
                        Err(e)
                    }
                }
            }
            None => {
                let r = self.wait_for(
                    || lockword::sx_try_write(w, generation, lane),
                    w,
                    HeldKind::SxWrite,
                );
                if r.is_err() {
                    lockword::sx_abandon_write(w, generation);
                }
                r
            }
        }
    }

    fn wait_for(&self, mut attempt: impl FnMut() -> Attempt, w: &AtomicU64, kind: HeldKind) -> Result<()> {
        let took = self.backoff(|| match attempt() {
            Attempt::Acquired => Some(Ok(true)),
            Attempt::AlreadyHeld => Some(Ok(false)),
            Attempt::Busy => None,
        })?;
        if took {
            let hold = (kind, w as *const AtomicU64);
            let shared_hold = matches!(kind, HeldKind::Read | HeldKind::SxRead);
            if shared_hold && self.started().is_none() {
                // No lane yet: a shared hold needs none (the word records no owner).
                let n = self.early_count.get();
                if n < EARLY_LOCKS {
                    let mut early = self.early_locks.get();
                    early[n] = MaybeUninit::new(hold);
                    self.early_locks.set(early);
                    self.early_count.set(n + 1);
                    return Ok(());
                }
            }
            self.st_mut().locks.push(hold);
        }
        Ok(())
    }

    /// Repeats `attempt` (spinning, then yielding, then sleeping) until it returns a result, or
    /// fails with [`Error::LockTimeout`] after the pool's lock timeout.
    pub(crate) fn backoff<T>(&self, mut attempt: impl FnMut() -> Option<Result<T>>) -> Result<T> {
        let mut spins = 0u32;
        let mut started: Option<Instant> = None;
        loop {
            if let Some(r) = attempt() {
                return r;
            }
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
                continue;
            }
            let t0 = *started.get_or_insert_with(Instant::now);
            let waited = t0.elapsed();
            if waited >= self.shared.lock_timeout {
                return Err(Error::LockTimeout {
                    waited_ms: waited.as_millis() as u64,
                });
            }
            if spins < 200 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }

    /// Commits: drain 2 makes the new contents and the commit record durable.
    #[inline]
    pub(crate) fn commit(self) -> Result<()> {
        if self.started().is_none() {
            // Read only: no lane, nothing logged; at most early shared holds.
            self.end_without_lane();
            return Ok(());
        }
        self.commit_started()
    }

    /// [`commit`](Self::commit) of a transaction that took a lane.
    fn commit_started(self) -> Result<()> {
        let s = self.shared;
        let (seq, entries) = {
            let st = self.st_ref();
            (st.seq, st.entries + st.heap.pending.len() as u64)
        };
        if entries == 0 {
            self.finish(true);
            return Ok(());
        }
        let result = self.apply_deferred().and_then(|()| {
            // `apply_deferred` may have appended records (pending allocations, kept slabs).
            let entries = self.st_ref().entries;
            self.write_commit_record(seq, entries);
            s.drain()
        });
        match result {
            Ok(()) => {
                self.settle_flushed_marks_and_mark(seq);
                self.finish(true);
                Ok(())
            }
            Err(e) => {
                // The commit may or may not have reached the media; undo it in memory and on
                // the media so this process and a later recovery agree.
                let _ = self.abort_inner();
                Err(e)
            }
        }
    }

    /// After the commit's drain: settles the completion marks this transaction's last drain
    /// flushed (ordered since), then marks this transaction, `seq`, complete.
    fn settle_flushed_marks_and_mark(&self, seq: u64) {
        let mut st = self.st_mut();
        self.shared
            .settle_then_mark_complete(&st.completions, self.lane_id(), seq);
        st.completions.clear();
    }

    /// Rolls back everything this transaction logged and releases it.
    pub(crate) fn abort(self) -> Result<()> {
        self.abort_inner()
    }

    /// [`abort`](Self::abort) of a transaction whose closure is unwinding from a panic (the
    /// guard in `Pool::run` holds only a reference).
    pub(crate) fn abort_unwinding(&self) -> Result<()> {
        self.abort_inner()
    }

    fn abort_inner(&self) -> Result<()> {
        if self.started().is_none() {
            self.end_without_lane(); // nothing logged; at most early shared holds
            return Ok(());
        }
        let lane = self.lane_id();
        let (seq, entries) = {
            let st = self.st_ref();
            (st.seq, st.entries)
        };
        if entries > 0 {
            let res = scan_lane(self.shared, lane, Some(seq))
                .and_then(|scan| self.shared.roll_back(lane, seq, &scan.entries));
            if let Err(e) = res {
                // In-memory state may be half restored: refuse further transactions; reopening
                // runs recovery from the intact log.
                self.shared.poisoned.store(true, Ordering::SeqCst);
                self.release_locks();
                return Err(e);
            }
        }
        self.finish(false);
        Ok(())
    }

    fn release_locks(&self) {
        release_locks(self.shared, &mut self.st_mut());
    }

    /// Returns extents, releases locks, stores the lane state back and frees the lane (of a
    /// started transaction).
    fn finish(&self, committed: bool) {
        let lane = self.lane_id();
        {
            let st = self.st_ref();
            if st.took_back && st.entries == 0 {
                // Stale copies of taken-back records may be in the log with this seq: the
                // completion mark retires them (see `take_back`).
                self.shared.mark_complete(lane, st.seq);
            }
        }
        release_lane(self.shared, lane, &mut self.st_mut(), committed);
    }

    /// Relaxed commit: everything of [`commit`](Self::commit) except drain 2. The lane and the
    /// locks stay held by the returned [`PendingCommit`] until it completes.
    pub(crate) fn commit_relaxed(self) -> Result<PendingCommit<'p>> {
        let s = self.shared;
        if self.started().is_none() {
            self.end_without_lane(); // read only
            return Ok(PendingCommit::settled(s));
        }
        let (seq, entries) = {
            let st = self.st_ref();
            (st.seq, st.entries + st.heap.pending.len() as u64)
        };
        if entries == 0 {
            self.finish(true);
            return Ok(PendingCommit::settled(s));
        }
        if let Err(e) = self.apply_deferred() {
            let _ = self.abort_inner();
            return Err(e);
        }
        // `apply_deferred` may have appended records (pending allocations, kept slabs).
        let entries = self.st_ref().entries;
        self.write_commit_record(seq, entries);
        // The state stays in the lane slot, and the lane and its locks stay held: the pending
        // commit takes them over, and this transaction no longer touches the state.
        let drains_at_commit = pmem_core::thread_stats().drains;
        let settled = Rc::new(Cell::new(false));
        MAYBE_PENDING.with(|m| m.set(true));
        PENDING.with(|p| {
            p.borrow_mut().push(PendingEntry {
                pool: s.id,
                lane: self.lane_id(),
                seq,
                drains_at_commit,
                settled: settled.clone(),
            })
        });
        Ok(PendingCommit {
            shared: s,
            lane: Some(self.lane_id()),
            seq,
            drains_at_commit,
            settled,
            _not_send: PhantomData,
        })
    }

    /// Flushes every logged range and writes + flushes the commit record (no drain).
    fn write_commit_record(&self, seq: u64, entries: u64) {
        let s = self.shared;
        let mut guard = self.st_mut();
        let st: &mut LaneVolatile = &mut guard;
        let mut h = DataHasher::new(&mut st.hash_buf);
        for &(off, len) in &st.ranges {
            // SAFETY: logged ranges are loggable and owned by this transaction.
            let bytes = unsafe { std::slice::from_raw_parts(s.ptr(off), len as usize) };
            h.range(off, bytes);
        }
        let data_hash = h.finish();
        // Flush each cache line once, however many logged ranges share it.
        let span = |&(off, len): &(u64, u64)| {
            let (start, end) = pmem_core::internals::flush::line_span(off as usize, len as usize);
            (start as u64, end as u64)
        };
        let nonempty = |r: &&(u64, u64)| r.1 > 0;
        // Ranges are often logged in address order (a batch over an array, a node and its
        // sibling): then their lines merge as they come, with no list to build and sort.
        if st.ranges.iter().filter(nonempty).map(|r| r.0).is_sorted() {
            flush_runs(s, st.ranges.iter().filter(nonempty).map(span));
        } else {
            let lines = &mut st.commit_lines;
            lines.clear();
            lines.extend(st.ranges.iter().filter(nonempty).map(span));
            lines.sort_unstable();
            flush_runs(s, lines.iter().copied());
        }
        let rec = CommitRecord {
            seq,
            n_entries: entries,
            data_hash,
        }
        .encode();
        let at = s.geo.lane_commit(self.lane_id());
        // SAFETY: the commit line of our own lane, inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), s.ptr(at), rec.len()) };
        s.flush(at, 64);
    }
}

/// Flushes the cache lines of `spans` (line-aligned `(start, end)` pairs, by start), each
/// run of touching or overlapping spans with one call, so each line once.
#[inline]
fn flush_runs(s: &Shared, spans: impl Iterator<Item = (u64, u64)>) {
    let mut run: Option<(u64, u64)> = None;
    for (start, end) in spans {
        match &mut run {
            Some((_, e)) if start <= *e => *e = (*e).max(end),
            _ => {
                if let Some((rs, re)) = run.replace((start, end)) {
                    s.flush(rs, re - rs);
                }
            }
        }
    }
    if let Some((rs, re)) = run {
        s.flush(rs, re - rs);
    }
}

/// Releases the locks recorded in `st`.
fn release_locks(shared: &Shared, st: &mut LaneVolatile) {
    for (kind, w) in st.locks.drain(..).rev() {
        release_lock(shared, kind, w);
    }
}

/// Releases one hold of kind `kind` on lock word `w`.
fn release_lock(shared: &Shared, kind: HeldKind, w: *const AtomicU64) {
    let generation = shared.generation;
    // SAFETY: lock words were checked to lie inside the pool mapping when taken, and the
    // mapping outlives every transaction and pending commit.
    let w = unsafe { &*w };
    match kind {
        HeldKind::Mutex => lockword::mutex_unlock(w, generation),
        HeldKind::Read => lockword::rw_unlock_read(w, generation),
        HeldKind::Write => lockword::rw_unlock_write(w, generation),
        HeldKind::SxRead => lockword::sx_unlock_read(w, generation),
        HeldKind::SxWrite => lockword::sx_unlock_write(w, generation),
    }
}

/// Releases locks, returns log extents, settles the allocator's lists and frees the lane (the
/// state stays in the lane's slot for its next transaction).
fn release_lane(shared: &Shared, lane: usize, st: &mut LaneVolatile, committed: bool) {
    if !st.locks.is_empty() {
        release_locks(shared, st);
    }
    if !st.heap.lists.changed() && st.extents.is_empty() {
        // Most transactions (reads, stores into existing data): no log extent, no chunk list,
        // so nothing for the heap index or the quarantine.
        free_lane(shared, lane, st);
        return;
    }
    let h = &mut st.heap;
    let extents = std::mem::take(&mut st.extents);
    let chunk = crate::engine::heap::CHUNK;
    let layout = shared.heap.layout();
    // Volatile index updates: extents always go back; a commit frees what it freed and offers
    // its new and emptied slabs; an abort returns what it reserved. Most transactions touch
    // none of this and skip the index lock.
    let touched = !extents.is_empty()
        || !h.lists.freed_new.is_empty()
        || !h.lists.freed_runs.is_empty()
        || !h.lists.new_slabs.is_empty()
        || !h.lists.freed_slabs.is_empty()
        || !h.lists.reserved.is_empty()
        || !h.lists.cancelled_chunks.is_empty();
    let _ = touched.then(|| {
        shared.heap_index(|idx| {
            for &(off, size) in &extents {
                if let Some(start) = layout.chunk_of(off) {
                    idx.give_run(start, size / chunk);
                }
            }
            for &(a, n) in &h.lists.cancelled_chunks {
                idx.give_run(a, n);
            }
            if !committed {
                for &(a, n) in &h.lists.freed_new {
                    idx.give_run(a, n);
                }
            }
            if committed {
                for &(a, n) in &h.lists.freed_runs {
                    idx.give_run(a, n);
                }
                for &(a, c) in h.lists.new_slabs.iter().chain(&h.lists.freed_slabs) {
                    if !idx.partial[c].contains(&a) && !h.lists.returned_slabs.contains(&(a, c)) {
                        idx.partial[c].push(a);
                    }
                }
                for &(a, c) in &h.lists.returned_slabs {
                    idx.drop_partial(c, a);
                }
            } else {
                for &(a, n) in &h.lists.reserved {
                    idx.give_run(a, n);
                }
                for c in h.hint.iter_mut() {
                    if c.is_some_and(|a| h.lists.reserved.iter().any(|&(r, _)| r == a)) {
                        *c = None;
                    }
                }
            }
        })
    });
    if committed && !h.lists.returned_slabs.is_empty() {
        for c in h.hint.iter_mut() {
            if c.is_some_and(|a| h.lists.returned_slabs.iter().any(|&(r, _)| r == a)) {
                *c = None;
            }
        }
    }
    if committed
        && (!h.lists.freed_new.is_empty()
            || !h.lists.freed_new_blocks.is_empty()
            || !h.lists.returned_slabs.is_empty())
    {
        use crate::engine::heap::{QuarantineKind, Quarantined};
        let mut q = shared.heap.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        for &(start, n) in &h.lists.freed_new {
            q.push(Quarantined {
                lane,
                seq: st.seq,
                kind: QuarantineKind::Run { start, n },
            });
        }
        // A returned slab's bitmap words are in this commit's data hash: no fresh store may
        // land there before the completion mark is durable.
        for &(start, c) in &h.lists.returned_slabs {
            q.push(Quarantined {
                lane,
                seq: st.seq,
                kind: QuarantineKind::Run {
                    start,
                    n: crate::engine::heap::slab_geom(c).chunks,
                },
            });
        }
        for &(word, mask) in &h.lists.freed_new_blocks {
            q.push(Quarantined {
                lane,
                seq: st.seq,
                kind: QuarantineKind::Block { word, mask },
            });
        }
        shared.heap.quarantined.store(q.len(), Ordering::Release);
    }
    free_lane(shared, lane, st);
}

/// The end of [`release_lane`]: unlocks the chunks whose metadata the transaction locked and
/// frees the lane.
fn free_lane(shared: &Shared, lane: usize, st: &LaneVolatile) {
    for &i in &st.heap.locked {
        shared.heap.unlock_chunk(i);
    }
    shared.lanes.release(lane);
}

/// A transaction committed with relaxed durability: its commit record and data are flushed but
/// not yet drained. It becomes durable at the next drain **of this thread** (any later
/// transaction's first snapshot, [`Pool::sync`](crate::Pool::sync), or
/// [`complete`](PendingCommit::complete)), and its lane and locks stay held until it completes
/// (explicitly or on drop). Completing N relaxed transactions in a row costs N + 1 drains
/// instead of 2N (group commit). `!Send`: a drain orders only its own thread's flushes.
#[must_use = "a pending commit holds its locks until completed or dropped"]
pub struct PendingCommit<'p> {
    shared: &'p Shared,
    lane: Option<usize>,
    seq: u64,
    drains_at_commit: u64,
    settled: Rc<Cell<bool>>,
    _not_send: PhantomData<*const ()>,
}

/// A relaxed commit of this thread not yet made durable and marked complete.
struct PendingEntry {
    pool: u64,
    lane: usize,
    seq: u64,
    drains_at_commit: u64,
    settled: Rc<Cell<bool>>,
}

thread_local! {
    static PENDING: RefCell<Vec<PendingEntry>> = const { RefCell::new(Vec::new()) };
    /// False only while `PENDING` is known empty: set by every push, cleared when a settle
    /// leaves it empty. A plain flag (no destructor) is cheaper to read at every transaction's
    /// start than the list.
    static MAYBE_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Whether a drain is still needed to make flushes issued when this thread's drain counter was
/// `drains_at` durable.
fn needs_drain(s: &Shared, drains_at: u64) -> bool {
    // A later drain (or ordering point) of this thread covers these flushes only where it is a
    // fence over everything the thread flushed before; elsewhere (msync, paged) it is I/O on
    // what was recorded at the time and must run again.
    !s.region.domain().fence_is_drain() || pmem_core::thread_stats().drains <= drains_at
}

/// Makes this thread's pending relaxed commits on pool `s` durable (at most one drain for all of
/// them) and marks them complete. Called before this thread starts another transaction on the
/// pool (so it never overwrites data of a commit that recovery could still judge by its data
/// hash) and by `Pool::sync`. Their lanes and locks stay with their `PendingCommit`s.
#[inline]
pub(crate) fn settle_thread(s: &Shared) -> Result<()> {
    if !MAYBE_PENDING.with(Cell::get) {
        return Ok(()); // the common path: no relaxed commit of this thread is pending
    }
    settle_pending(s)
}

/// [`settle_thread`] when this thread may have pending relaxed commits.
fn settle_pending(s: &Shared) -> Result<()> {
    let mine: Vec<PendingEntry> = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_empty() {
            MAYBE_PENDING.with(|m| m.set(false));
            return Vec::new();
        }
        let (mine, rest): (Vec<_>, Vec<_>) = p.drain(..).partition(|e| e.pool == s.id);
        *p = rest;
        MAYBE_PENDING.with(|m| m.set(!p.is_empty()));
        mine
    });
    if mine.is_empty() {
        return Ok(());
    }
    if mine.iter().any(|e| needs_drain(s, e.drains_at_commit)) {
        if let Err(e) = s.drain() {
            s.poisoned.store(true, Ordering::SeqCst);
            return Err(e);
        }
    }
    for e in mine {
        s.mark_complete(e.lane, e.seq);
        e.settled.set(true);
    }
    Ok(())
}

impl std::fmt::Debug for PendingCommit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCommit")
            .field("lane", &self.lane)
            .field("seq", &self.seq)
            .finish()
    }
}

impl<'p> PendingCommit<'p> {
    /// A pending commit with nothing to do (a relaxed transaction that changed nothing, or one
    /// that joined an outer transaction).
    pub(crate) fn settled(shared: &'p Shared) -> Self {
        PendingCommit {
            shared,
            lane: None,
            seq: 0,
            drains_at_commit: 0,
            settled: Rc::new(Cell::new(true)),
            _not_send: PhantomData,
        }
    }

    /// Whether the transaction is known durable and marked complete.
    pub fn is_settled(&self) -> bool {
        self.settled.get()
    }

    /// Makes the transaction durable (one drain, unless this thread drained since the commit
    /// in a cache-flush domain), then releases its locks and lane.
    ///
    /// # Errors
    ///
    /// I/O errors of the msync domain; the transaction is then not known to be durable (a
    /// reopen decides by the commit record and the data hash).
    pub fn complete(mut self) -> Result<()> {
        self.complete_inner()
    }

    fn complete_inner(&mut self) -> Result<()> {
        let Some(lane) = self.lane.take() else {
            return Ok(());
        };
        let s = self.shared;
        let mut r = Ok(());
        if !self.settled.get() {
            PENDING.with(|p| p.borrow_mut().retain(|e| !Rc::ptr_eq(&e.settled, &self.settled)));
            if needs_drain(s, self.drains_at_commit) {
                r = s.drain();
            }
            match &r {
                Ok(()) => s.mark_complete(lane, self.seq),
                // Not known to be durable, and memory already holds the new values.
                Err(_) => s.poisoned.store(true, Ordering::SeqCst),
            }
            self.settled.set(true);
        }
        // SAFETY: the lane is still held by this pending commit (the transaction that parked
        // its state there ended), so its slot is ours until `release_lane` frees the lane.
        let st = unsafe { &mut *s.slots[lane].0.get() };
        release_lane(s, lane, st, r.is_ok());
        r
    }
}

impl Drop for PendingCommit<'_> {
    fn drop(&mut self) {
        let _ = self.complete_inner();
    }
}

/// Bytes left in the lane's current log area (before it would jump to a new extent).
pub(crate) fn log_room(st: &LaneVolatile) -> u64 {
    st.end - st.pos
}

/// Undoes the newest [`add_logical`] if it was `[off, off + len)` and the ranges are not
/// indexed yet (a cancelled allocation, so an older record can still be taken back).
pub(crate) fn forget_newest_logical(st: &mut LaneVolatile, off: u64, len: u64) {
    if st.index.is_empty() && st.logical.last() == Some(&(off, len)) {
        pop_logical(st);
    }
}

/// Empties the logged ranges (a transaction's start): the list, its index and its hints.
#[inline]
fn clear_logical(st: &mut LaneVolatile) {
    st.logical.clear();
    if !st.index.is_empty() {
        st.index.clear();
    }
    st.last_cover = (0, 0);
    st.logical_lo = u64::MAX;
    st.logical_hi = 0;
    st.recent = [(0, 0); RECENT];
}

/// The cache line slot of [`LaneVolatile::recent`] for a range starting at `off`.
#[inline]
fn recent_slot(off: u64) -> usize {
    (off >> 6) as usize & (RECENT - 1)
}

/// Removes the newest range of `logical` (only while there is no index), and from its
/// `recent` slot if it is there.
fn pop_logical(st: &mut LaneVolatile) {
    debug_assert!(st.index.is_empty());
    if let Some((o, l)) = st.logical.pop() {
        let slot = &mut st.recent[recent_slot(o)];
        if *slot == (o, o + l) {
            *slot = (0, 0);
        }
    }
}

/// Records `[off, len)` as covered by the log (undo records or fresh memory), indexing the
/// ranges once there are more than `LINEAR_RANGES`.
#[inline]
pub(crate) fn add_logical(st: &mut LaneVolatile, off: u64, len: u64) {
    let end = off + len;
    st.logical_lo = st.logical_lo.min(off);
    st.logical_hi = st.logical_hi.max(end);
    st.recent[recent_slot(off)] = (off, end);
    st.logical.push((off, len));
    if st.logical.len() > LINEAR_RANGES {
        index_logical(st, off, len);
    }
}

/// [`add_logical`] past `LINEAR_RANGES` ranges: indexes them (all of them, the first time).
#[inline(never)]
fn index_logical(st: &mut LaneVolatile, off: u64, len: u64) {
    let LaneVolatile { logical, index, .. } = st;
    if index.is_empty() {
        for &(o, l) in logical.iter() {
            index.insert(o, l);
        }
    } else {
        index.insert(off, len);
    }
    st.last_cover = (off, len);
}

/// Notes a record header written (or zeroed) at pool offset `at` and flushed by the caller: if
/// it lies in the line of the lane's `completed` word (format 5), that flush also carries the
/// lane's own pending completion mark, which the next drain then need not flush again.
#[inline]
fn note_header(st: &mut LaneVolatile, at: u64) {
    if at.wrapping_sub(st.mark_line) < 64 {
        st.mark_line_flushed = true;
    }
}

/// Whether every byte of `[off, off + len)` lies in some already-logged range (one range, or
/// several that overlap or touch: a bulk store over a fresh part and a logged part needs no new
/// record).
#[inline(always)]
fn covered(st: &LaneVolatile, off: u64, len: u64) -> bool {
    let end = off.saturating_add(len);
    if end > off {
        // Outside every logged range, or inside the one logged at its start (both cheap, and
        // the common cases: new ranges logged in address order, stores after a snapshot).
        if off >= st.logical_hi || end <= st.logical_lo {
            return false;
        }
        let (ro, re) = st.recent[recent_slot(off)];
        if ro <= off && end <= re {
            return true;
        }
    }
    covered_by_search(st, off, end)
}

/// [`covered`] by searching the logged ranges (the list, or its index past `LINEAR_RANGES`).
#[inline(never)]
fn covered_by_search(st: &LaneVolatile, off: u64, end: u64) -> bool {
    if !st.index.is_empty() {
        // The range added last first: a store usually follows the snapshot of its own range.
        let (o, l) = st.last_cover;
        if o <= off && end <= o + l {
            return true;
        }
        return st.index.covers(off, end);
    }
    let mut at = off;
    while at < end {
        // The farthest end of a logged range holding byte `at`, newest first (a store usually
        // follows the snapshot of its own range), stopping at a range that holds the rest:
        // then the farthest end no longer matters.
        let mut best: Option<u64> = None;
        for &(o, l) in st.logical.iter().rev() {
            if o <= at && at < o + l {
                best = Some(best.map_or(o + l, |b| b.max(o + l)));
                if o + l >= end {
                    break;
                }
            }
        }
        match best {
            Some(r) => at = r,
            None => return false,
        }
    }
    true
}

/// Collects ranges to log behind one drain; see [`Transaction::snapshot`].
#[derive(Debug)]
pub struct SnapshotBatch<'a, 'p> {
    tx: &'a Transaction<'p>,
}

impl SnapshotBatch<'_, '_> {
    /// Logs the current value of a persistent object (a [`PCell`](crate::PCell), a field of a
    /// locked value, ...) so it can be changed later in this transaction without another drain.
    ///
    /// # Errors
    ///
    /// [`Error::NotInPool`] if the object is not in this transaction's pool,
    /// [`Error::OutOfSpace`] when the log cannot grow.
    pub fn add<T: Loggable + ?Sized>(&mut self, obj: &T) -> Result<()> {
        let (addr, len) = obj.log_range();
        let off = self.tx.shared.offset_of(addr, len)?;
        self.tx.log_range(off, len as u64)
    }

    /// [`add`](Self::add)s every object of `objs`, in order, faster than one by one when their
    /// lines are not in the cache: the objects are taken 8 at a time, and the lines of all 8
    /// (and of their log records) start loading before the first is read. A line the last flush
    /// of a range wrote back may have been evicted (`clwb` may invalidate it, and does on some
    /// processors), so one `add` after another waits for one miss after another.
    ///
    /// ```
    /// # use ptm::{Error, PCell, Persistent, Pool};
    /// # #[derive(Persistent)]
    /// # #[persistent(crate = "ptm::pmem_core")]
    /// # #[repr(C)]
    /// # struct Root { words: [PCell<u64>; 64] }
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let pool = Pool::<Root>::create(dir.path().join("a.pool"), 8 << 20, &Default::default())?;
    /// pool.transaction(|tx, root| {
    ///     let every_8th = || root.words.iter().step_by(8);
    ///     tx.snapshot(|b| b.add_all(every_8th()))?; // one drain for the 8 words
    ///     every_8th().try_for_each(|w| w.set(tx, 7)) // no drain: logged
    /// })?;
    /// # Ok::<_, Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`add`](Self::add): the first failing object's error. The objects before it are
    /// logged, those after it are not.
    pub fn add_all<'o, T: Loggable + ?Sized + 'o>(
        &mut self,
        objs: impl IntoIterator<Item = &'o T>,
    ) -> Result<()> {
        let s = self.tx.shared;
        let mut objs = objs.into_iter();
        loop {
            let mut group = [(0u64, 0u64); BATCH_AHEAD];
            let mut n = 0;
            let mut bytes = 0;
            let mut refused = Ok(());
            for obj in objs.by_ref().take(BATCH_AHEAD) {
                let (addr, len) = obj.log_range();
                match s.offset_of(addr, len) {
                    Ok(off) => {
                        s.prefetch(off, len as u64);
                        group[n] = (off, len as u64);
                        bytes += s.geo.rec_total(len as u64);
                        n += 1;
                    }
                    Err(e) => {
                        // The objects before it are logged, as by `add` one by one.
                        refused = Err(e);
                        break;
                    }
                }
            }
            if n > 0 {
                self.tx.log_group(&group[..n], bytes)?;
            }
            refused?;
            if n < BATCH_AHEAD {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `covered` must answer: every byte of `[off, off + len)` in some recorded range.
    fn covered_model(ranges: &[(u64, u64)], off: u64, len: u64) -> bool {
        (off..off + len).all(|b| ranges.iter().any(|&(o, l)| o <= b && b < o + l))
    }

    #[derive(Debug, Clone)]
    enum Step {
        Add(u64, u64),
        /// The newest range leaves (`forget_newest_logical`: a cancelled allocation).
        Forget,
        /// Every range leaves (the next transaction starts).
        Clear,
        Query(u64, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u64..512, 1u64..48).prop_map(|(o, l)| Step::Add(o, l)),
            1 => Just(Step::Forget),
            1 => Just(Step::Clear),
            6 => (0u64..560, 1u64..64).prop_map(|(o, l)| Step::Query(o, l)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// `covered` (its bounds check, its slots of recent ranges, its linear scan and, past
        /// `LINEAR_RANGES` ranges, its index and cached range) answers as the byte-by-byte
        /// model, also after ranges leave the list or all of them do (a transaction's start),
        /// and for queries in the order ranges were added.
        #[test]
        #[cfg_attr(miri, ignore = "proptest persists failures through the file system")]
        fn covered_matches_a_byte_model(steps in prop::collection::vec(step(), 1..80)) {
            let mut st = LaneVolatile::default();
            clear_logical(&mut st);
            let mut model: Vec<(u64, u64)> = Vec::new();
            for s in steps {
                match s {
                    Step::Clear => {
                        clear_logical(&mut st);
                        model.clear();
                    }
                    Step::Add(o, l) => {
                        add_logical(&mut st, o, l);
                        model.push((o, l));
                    }
                    Step::Forget => {
                        if let Some(&(o, l)) = model.last() {
                            let indexed = !st.index.is_empty();
                            forget_newest_logical(&mut st, o, l);
                            if !indexed {
                                model.pop();
                            }
                        }
                    }
                    Step::Query(o, l) => {
                        prop_assert_eq!(covered(&st, o, l), covered_model(&model, o, l), "{:?}", (o, l));
                        // Then every recorded range in order, as stores follow their snapshots.
                        for &(o, l) in &model {
                            prop_assert!(covered(&st, o, l));
                            prop_assert_eq!(covered(&st, o + 1, l), covered_model(&model, o + 1, l));
                        }
                    }
                }
            }
        }
    }
}
