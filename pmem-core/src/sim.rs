//! The simulated persistence domain (cargo feature `simulate`): the crash-recovery harness's view
//! of what would survive a power failure.
//!
//! A region opened with [`RegionOptions::simulate`](crate::RegionOptions::simulate) maps its file
//! as usual (the **working image**: what the program reads and writes) and gets
//! [`DomainKind::Simulated`](crate::DomainKind::Simulated). The [`Simulation`] keeps beside it a
//! **durable image**: a copy of the file taken at open, changed only by flush + drain:
//!
//! - `flush(range)` records the 64-byte lines `[align_down(p, 64), align_up(p + len, 64))` (the
//!   same arithmetic as the cache-flush domain, counted in `lines_flushed`) together with their
//!   contents at the time of the flush, as `clwb` writes back the line as it is then;
//! - `drain()` first calls the crash-point hook installed by this thread with
//!   [`Simulation::with_hook`] (a [`CrashPoint`]: the durable image, the working image, the lines
//!   flushed since the last drain, the drain's sequence number), then copies the recorded line
//!   contents into the durable image, forgets them and counts a drain;
//! - a non-temporal copy is a plain copy whose destination lines are recorded like a flush.
//!
//! A store made after a line's flush is therefore *not* made durable by the following drain: it
//! stays a difference between the two images until the line is flushed again.
//!
//! At a crash point, a crash image is the durable image plus any subset of the units in which the
//! working image differs from it: 8-byte words in the default [`FaultModel::Words`], whole lines in
//! [`FaultModel::Lines`] (x86). The helpers that compute this ([`diff_units`], [`apply_units`],
//! [`random_subset`], [`mask_subset`]) are plain functions over byte slices, tested under Miri.
//!
//! The simulated domain is meant for single-threaded workloads (the harness runs one): its flushes
//! read the lines they record, and a drain that calls a hook shows it the whole mapping, so no
//! other thread may store into those bytes meanwhile (the rule of [`Region::base`](crate::Region::base)).
//! A drain on another thread makes its recorded lines durable as well, but calls no hook.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::flush::{self, CACHE_LINE};

/// How a crash may tear the stores not yet made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FaultModel {
    /// Every 8-byte word written since it was last made durable independently survives with its
    /// old or its new value (the default: stricter than x86, so what passes here passes on
    /// platforms that only guarantee 8-byte failure atomicity).
    #[default]
    Words,
    /// Every 64-byte line survives whole, with its old or its new contents (x86 cache-line mode).
    Lines,
}

impl FaultModel {
    /// Bytes per unit of tearing: 8 (words) or 64 (lines).
    pub const fn unit(self) -> usize {
        match self {
            FaultModel::Words => 8,
            FaultModel::Lines => CACHE_LINE,
        }
    }

    /// `words` or `lines`.
    pub const fn name(self) -> &'static str {
        match self {
            FaultModel::Words => "words",
            FaultModel::Lines => "lines",
        }
    }
}

impl fmt::Display for FaultModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Offsets of the units (words or lines of `model`) in which `working` differs from `durable`,
/// ascending. Both slices must have the same length; a trailing partial unit counts as a unit.
///
/// # Panics
///
/// If the lengths differ.
pub fn diff_units(durable: &[u8], working: &[u8], model: FaultModel) -> Vec<u64> {
    assert_eq!(durable.len(), working.len(), "images of different sizes");
    const BLOCK: usize = 4096;
    let unit = model.unit();
    let mut out = Vec::new();
    for (b, (d, w)) in durable.chunks(BLOCK).zip(working.chunks(BLOCK)).enumerate() {
        // Whole-block comparison first (memcmp), words only inside blocks that differ.
        if d == w {
            continue;
        }
        for (u, (du, wu)) in d.chunks(unit).zip(w.chunks(unit)).enumerate() {
            if du != wu {
                out.push((b * BLOCK + u * unit) as u64);
            }
        }
    }
    out
}

/// Copies the units of `model` at `units` (offsets, as from [`diff_units`]) from `source` into
/// `image`: a crash image is `durable` with `apply_units(image, working, subset, model)`.
///
/// # Panics
///
/// If the lengths differ or an offset lies outside the images.
pub fn apply_units(image: &mut [u8], source: &[u8], units: &[u64], model: FaultModel) {
    assert_eq!(image.len(), source.len(), "images of different sizes");
    let unit = model.unit();
    for &off in units {
        let start = off as usize;
        let end = (start + unit).min(image.len());
        image[start..end].copy_from_slice(&source[start..end]);
    }
}

/// A 64-bit mix of two values (SplitMix64 finaliser over their combination): derives independent
/// seeds, e.g. `mix(mix(seed, point), image)`.
pub const fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64, the generator behind [`random_subset`].
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the bias for huge `n` is irrelevant here).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// How a random subset was drawn (the strategy is chosen by the seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubsetStrategy {
    /// Each unit independently with probability 1/2.
    Half,
    /// Each unit with probability 1/8 (a few stores made it).
    Sparse,
    /// Each unit with probability 7/8 (a few stores were lost).
    Dense,
    /// Exactly one unit.
    One,
    /// All units but one.
    AllButOne,
    /// A contiguous run of units (in offset order): e.g. a whole record but not what follows.
    Run,
}

impl SubsetStrategy {
    /// A short name: `half`, `sparse`, `dense`, `one`, `all-but-one`, `run`.
    pub const fn name(self) -> &'static str {
        match self {
            SubsetStrategy::Half => "half",
            SubsetStrategy::Sparse => "sparse",
            SubsetStrategy::Dense => "dense",
            SubsetStrategy::One => "one",
            SubsetStrategy::AllButOne => "all-but-one",
            SubsetStrategy::Run => "run",
        }
    }
}

/// The strategy [`random_subset`] uses for `seed`.
pub fn subset_strategy(seed: u64) -> SubsetStrategy {
    match SplitMix(seed).next() % 6 {
        0 => SubsetStrategy::Half,
        1 => SubsetStrategy::Sparse,
        2 => SubsetStrategy::Dense,
        3 => SubsetStrategy::One,
        4 => SubsetStrategy::AllButOne,
        _ => SubsetStrategy::Run,
    }
}

/// A deterministic pseudo-random subset of `0..n` (ascending indices) drawn from `seed` with the
/// strategy [`subset_strategy(seed)`](subset_strategy): the same `(n, seed)` always gives the
/// same subset.
pub fn random_subset(n: usize, seed: u64) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let mut rng = SplitMix(seed);
    let _strategy_draw = rng.next();
    let with_probability = |rng: &mut SplitMix, eighths: u64| -> Vec<usize> {
        (0..n).filter(|_| rng.next() % 8 < eighths).collect()
    };
    match subset_strategy(seed) {
        SubsetStrategy::Half => with_probability(&mut rng, 4),
        SubsetStrategy::Sparse => with_probability(&mut rng, 1),
        SubsetStrategy::Dense => with_probability(&mut rng, 7),
        SubsetStrategy::One => vec![rng.below(n)],
        SubsetStrategy::AllButOne => {
            let skip = rng.below(n);
            (0..n).filter(|&i| i != skip).collect()
        }
        SubsetStrategy::Run => {
            let a = rng.below(n);
            let b = rng.below(n);
            (a.min(b)..=a.max(b)).collect()
        }
    }
}

/// The subset of `0..n` whose bits are set in `mask` (bit `i` ↔ index `i`; `n <= 64`): for
/// enumerating every subset of a few units.
///
/// # Panics
///
/// If `n > 64`.
pub fn mask_subset(n: usize, mask: u64) -> Vec<usize> {
    assert!(n <= 64, "mask_subset: at most 64 units");
    (0..n).filter(|&i| mask >> i & 1 == 1).collect()
}

/// What a crash-point hook sees at a drain of a simulated region: the state just before the
/// drain takes effect.
#[derive(Debug, Clone, Copy)]
pub struct CrashPoint<'a> {
    durable: &'a [u8],
    working: &'a [u8],
    flushed: &'a [u64],
    drain_seq: u64,
}

impl<'a> CrashPoint<'a> {
    /// A crash point over the given images (for testing hooks without a region).
    ///
    /// # Panics
    ///
    /// If the images differ in length.
    pub fn new(durable: &'a [u8], working: &'a [u8], flushed: &'a [u64], drain_seq: u64) -> Self {
        assert_eq!(durable.len(), working.len(), "images of different sizes");
        CrashPoint {
            durable,
            working,
            flushed,
            drain_seq,
        }
    }

    /// What would survive a crash now if nothing pending did: the whole pool, headers included.
    pub fn durable(&self) -> &'a [u8] {
        self.durable
    }

    /// The pool as the program sees it (the mapping).
    pub fn working(&self) -> &'a [u8] {
        self.working
    }

    /// Offsets of the lines flushed since the previous drain (ascending, distinct): they become
    /// durable when this drain completes.
    pub fn flushed_lines(&self) -> &'a [u64] {
        self.flushed
    }

    /// The drain's sequence number: 0 for the first drain of the region since it was opened.
    pub fn drain_seq(&self) -> u64 {
        self.drain_seq
    }

    /// The units in which the working image differs from the durable one (see [`diff_units`]).
    pub fn pending(&self, model: FaultModel) -> Vec<u64> {
        diff_units(self.durable, self.working, model)
    }

    /// Writes into `out` the crash image in which exactly the pending `units` (offsets from
    /// [`pending`](CrashPoint::pending)) reached the media.
    pub fn image_into(&self, model: FaultModel, units: &[u64], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.durable);
        apply_units(out, self.working, units, model);
    }
}

type Hook<'a> = dyn FnMut(&CrashPoint<'_>) + 'a;

/// A hook installed by [`Simulation::with_hook`].
struct HookSlot {
    /// Unique per installation, to remove exactly this one.
    token: u64,
    /// The installing thread ([`thread_token`]): the only one that calls the hook.
    thread: u64,
    /// Lifetime-erased `&mut Hook`; valid while the installing `with_hook` call runs.
    hook: *mut Hook<'static>,
}

// SAFETY: the pointer is dereferenced only on the thread that installed it (`thread`), while
// its `with_hook` frame (which owns the borrow) is live; other threads only move the slot around.
unsafe impl Send for HookSlot {}

/// Persistence work that made nothing durable, counted by a [`Simulation`] while a region is
/// open with it ([`Simulation::redundancy`]): a performance finding, as every flush costs a
/// write-back and every drain a fence (or a sync on a disk engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedundantPersistence {
    /// Cache lines flushed ([`Region::flush`](crate::Region::flush), the head and tail of
    /// non-temporal copies).
    pub line_flushes: u64,
    /// Flushes of a line whose contents equal what the next drain would make durable without
    /// that flush: no store changed the line since it was last flushed or made durable.
    pub redundant_line_flushes: u64,
    /// Drains (ordering and durability points).
    pub drains: u64,
    /// Drains with nothing flushed or streamed since the previous drain.
    pub empty_drains: u64,
}

impl RedundantPersistence {
    /// Whether no redundant flush or empty drain was seen.
    pub fn is_none(&self) -> bool {
        self.redundant_line_flushes == 0 && self.empty_drains == 0
    }
}

impl fmt::Display for RedundantPersistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} line flushes redundant, {} of {} drains with nothing pending",
            self.redundant_line_flushes, self.line_flushes, self.empty_drains, self.drains
        )
    }
}

#[derive(Default)]
struct State {
    durable: Vec<u8>,
    /// What `durable` becomes at the next drain: `durable` with every span recorded since the
    /// last drain applied, in order (to tell a redundant flush).
    next: Vec<u8>,
    redundancy: RedundantPersistence,
    /// Offsets of lines flushed since the last drain, in flush order (repeats allowed).
    lines: Vec<u64>,
    /// What the next drain makes durable, in the order it was recorded: `(offset, len)` of
    /// each flushed span of whole lines and each span of streaming (non-temporal) stores, byte
    /// exact; their contents at that moment are `snaps`, one after the other.
    spans: Vec<(usize, usize)>,
    /// The contents of `spans`, concatenated.
    snaps: Vec<u8>,
    drains: u64,
    attached: bool,
}

struct Inner {
    state: Mutex<State>,
    hooks: Mutex<Vec<HookSlot>>,
    /// [`thread_token`] of the thread running a hook, 0 if none.
    in_hook: AtomicU64,
}

/// Handle to a simulated persistence domain (cheap to clone; clones share the simulation).
///
/// Give it to [`RegionOptions::simulate`](crate::RegionOptions::simulate) (or ptm's
/// `PoolOptions::simulation`); the region opened with it drives it until the region is dropped.
/// One region at a time: opening a second region with a simulation that is attached to an open
/// region fails with [`Error::Unsupported`](crate::Error::Unsupported).
///
/// # Examples
///
/// ```
/// use pmem_core::{FaultModel, Simulation};
/// use pmem_core::{DomainKind, RegionOptions};
///
/// # fn main() -> Result<(), pmem_core::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// let sim = Simulation::new();
/// let mut region = RegionOptions::new().simulate(sim.clone()).create(dir.path().join("p"), 1 << 16)?;
/// assert_eq!(region.domain(), DomainKind::Simulated);
/// let off = region.data_range().start;
/// region.write_at(off, &7u64.to_le_bytes())?;
/// region.flush(off, 8)?;
/// let mut pending = Vec::new();
/// sim.with_hook(&mut |cp| pending = cp.pending(FaultModel::Words), || region.drain())?;
/// assert_eq!(pending, [off]); // at the drain the word could have been lost
/// assert_eq!(sim.durable_image()[off as usize], 7); // after it, it is durable
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Simulation {
    inner: Arc<Inner>,
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("Simulation")
            .field("len", &st.durable.len())
            .field("drains", &st.drains)
            .field("pending_lines", &st.lines.len())
            .field("attached", &st.attached)
            .finish()
    }
}

impl Default for Simulation {
    fn default() -> Self {
        Self::new()
    }
}

/// A small process-unique id of the calling thread (never 0).
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static TOKEN: Cell<u64> = const { Cell::new(0) });
    TOKEN.with(|t| {
        if t.get() == 0 {
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

impl Simulation {
    /// A simulation not attached to any region yet.
    pub fn new() -> Self {
        Simulation {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                hooks: Mutex::new(Vec::new()),
                in_hook: AtomicU64::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `body` with `hook` called at every drain of the simulated region made **on this
    /// thread** while `body` runs (drains of other threads call no hook). Hooks nest: the
    /// innermost one of this thread is called. Thread persistence counters
    /// ([`thread_stats`](crate::thread_stats)) are restored after each hook call, so what the
    /// hook does (e.g. opening and checking other pools) does not show in them.
    ///
    /// The hook must not flush or drain the region it observes (that panics).
    pub fn with_hook<T>(&self, hook: &mut dyn FnMut(&CrashPoint<'_>), body: impl FnOnce() -> T) -> T {
        static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        let ptr: *mut Hook<'_> = hook;
        // SAFETY: only the lifetime is changed (same fat-pointer layout). The pointer is
        // dereferenced in `drain` only on this thread, hence only while this frame runs `body`
        // (a hook call is nested inside a drain made by `body`), and `Remove` takes it out of the
        // list before this frame returns or unwinds, i.e. before the borrow of `hook` ends.
        let ptr: *mut Hook<'static> =
            unsafe { std::mem::transmute::<*mut Hook<'_>, *mut Hook<'static>>(ptr) };
        self.hooks().push(HookSlot {
            token,
            thread: thread_token(),
            hook: ptr,
        });
        struct Remove<'s>(&'s Simulation, u64);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                self.0.hooks().retain(|s| s.token != self.1);
            }
        }
        let _remove = Remove(self, token);
        body()
    }

    fn hooks(&self) -> MutexGuard<'_, Vec<HookSlot>> {
        self.inner.hooks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drains the region has made since it was opened with this simulation.
    pub fn drains(&self) -> u64 {
        self.state().drains
    }

    /// A copy of the durable image: what a crash now (between drains) would leave if no pending
    /// store made it.
    pub fn durable_image(&self) -> Vec<u8> {
        self.state().durable.clone()
    }

    /// Redundant persistence counted since a region was last opened with this simulation:
    /// flushes of lines no store had changed, drains with nothing pending.
    pub fn redundancy(&self) -> RedundantPersistence {
        self.state().redundancy
    }

    /// Whether a region is open with this simulation.
    pub fn is_attached(&self) -> bool {
        self.state().attached
    }

    fn check_not_in_hook(&self) {
        let t = self.inner.in_hook.load(Ordering::Relaxed);
        if t != 0 && t == thread_token() {
            panic!("a crash-point hook must not flush or drain the simulated region it observes");
        }
    }

    /// Attaches to a region of `len` bytes whose current contents `fill` copies into the buffer
    /// (the durable image starts as the file at open).
    pub(crate) fn attach(&self, len: usize, fill: impl FnOnce(&mut [u8])) -> Attachment {
        let mut st = self.state();
        if st.durable.len() != len {
            // `vec!` of zeros is a zeroed allocation: fast even unoptimised (unlike `resize`).
            st.durable = vec![0; len];
        }
        fill(&mut st.durable);
        let State { durable, next, .. } = &mut *st;
        next.clear();
        next.extend_from_slice(durable);
        st.redundancy = RedundantPersistence::default();
        st.lines.clear();
        st.spans.clear();
        st.snaps.clear();
        st.drains = 0;
        st.attached = true;
        Attachment(self.clone())
    }

    /// Records the lines of `[offset, offset + len)` of the mapping at `base`, with their
    /// current contents.
    ///
    /// # Safety
    ///
    /// - `base` is the start of a mapping of the attached region's length, and the lines of
    ///   `[offset, offset + len)` lie inside it;
    /// - no other thread writes those lines meanwhile.
    pub(crate) unsafe fn record(&self, base: *const u8, offset: usize, len: usize) {
        let (start, end) = flush::line_span(offset, len);
        if start == end {
            return;
        }
        self.check_not_in_hook();
        let mut st = self.state();
        debug_assert!(end <= st.durable.len(), "flush outside the simulated region");
        let end = end.min(st.durable.len());
        let mut line = start;
        while line < end {
            st.lines.push(line as u64);
            // SAFETY: the line lies in the mapping (caller), which no other thread writes.
            let now = unsafe { std::slice::from_raw_parts(base.add(line), CACHE_LINE) };
            if st.next[line..line + CACHE_LINE] == *now {
                st.redundancy.redundant_line_flushes += 1;
            }
            st.redundancy.line_flushes += 1;
            line += CACHE_LINE;
        }
        // SAFETY: `[start, end)` lies in the mapping (caller), which no other thread writes.
        unsafe { snap(&mut st, base, start, end - start) };
        flush::count(|s| s.lines_flushed += ((end - start) / CACHE_LINE) as u64);
    }

    /// Copies `len` bytes from `src` to `dst` in the mapping at `base` as the cache-flush domain
    /// does ([`flush::copy_nontemporal`], the same split): the streamed body becomes durable at
    /// the next drain byte for byte, the head and tail only through the lines their flushes
    /// record. So a copy that left a head or tail unflushed leaves those bytes not durable here.
    ///
    /// # Safety
    ///
    /// - `base` is the start of a mapping of the attached region's length, and
    ///   `[dst, dst + len)` lies inside it; `src` is valid for `len` reads, no overlap;
    /// - no other thread accesses `[dst, dst + len)` or writes its lines meanwhile.
    pub(crate) unsafe fn copy_nontemporal(&self, base: *const u8, dst: *mut u8, src: *const u8, len: usize) {
        /// Records into the simulation instead of streaming and flushing.
        struct Recorder<'s> {
            sim: &'s Simulation,
            base: *const u8,
        }
        impl flush::NontemporalSink for Recorder<'_> {
            unsafe fn stream(&mut self, dst: *mut u8, src: *const u8, len: usize) {
                // SAFETY: forwarded contract of `stream`.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
                if len == 0 {
                    return;
                }
                self.sim.check_not_in_hook();
                let offset = dst as usize - self.base as usize;
                let mut st = self.sim.state();
                // SAFETY: `dst` lies in the mapping at `base` (the caller of `copy_nontemporal`),
                // which no other thread writes meanwhile.
                unsafe { snap(&mut st, self.base, offset, len) };
            }
            unsafe fn flush(&mut self, ptr: *const u8, len: usize) {
                // SAFETY: the range lies in the copy's destination, inside the mapping at
                // `base`; no other thread writes its lines (caller of `copy_nontemporal`).
                unsafe { self.sim.record(self.base, ptr as usize - self.base as usize, len) }
            }
        }
        // SAFETY: forwarded caller contract; the recorder copies and records within it.
        unsafe { flush::copy_nontemporal_via(dst, src, len, &mut Recorder { sim: self, base }) }
    }

    /// A drain: calls this thread's hook (if any) with the crash point, then makes the recorded
    /// lines durable. Counts one drain.
    ///
    /// # Safety
    ///
    /// - `base` is the start of the attached region's mapping (of the durable image's length);
    /// - no other thread writes the mapping meanwhile if this thread has a hook installed.
    pub(crate) unsafe fn drain(&self, base: *const u8) {
        self.check_not_in_hook();
        let me = thread_token();
        let mut st = self.state();
        let hook = {
            let hooks = self.hooks();
            hooks.iter().rev().find(|s| s.thread == me).map(|s| s.hook)
        };
        if let Some(hook) = hook {
            let mut flushed = st.lines.clone();
            flushed.sort_unstable();
            flushed.dedup();
            // SAFETY: `base` maps the region, `durable.len()` bytes long (caller); no thread
            // writes it while the hook runs (caller), and this thread is inside the drain.
            let working = unsafe { std::slice::from_raw_parts(base, st.durable.len()) };
            let cp = CrashPoint::new(&st.durable, working, &flushed, st.drains);
            let saved = crate::thread_stats();
            self.inner.in_hook.store(me, Ordering::Relaxed);
            struct Leave<'a>(&'a AtomicU64, crate::PersistStats);
            impl Drop for Leave<'_> {
                fn drop(&mut self) {
                    self.0.store(0, Ordering::Relaxed);
                    let saved = self.1;
                    flush::count(|s| *s = saved);
                }
            }
            let leave = Leave(&self.inner.in_hook, saved);
            // SAFETY: the slot was installed by this thread (`thread == me`), so its
            // `with_hook` frame is live below us on this stack and the borrow is valid; no other
            // reference to the hook exists: other threads never call it, and a nested call on
            // this thread is refused by `check_not_in_hook` before reaching here.
            unsafe { (*hook)(&cp) };
            drop(leave);
        }
        st.redundancy.drains += 1;
        if st.spans.is_empty() {
            st.redundancy.empty_drains += 1;
        }
        let State {
            durable,
            lines,
            spans,
            snaps,
            ..
        } = &mut *st;
        let mut at = 0;
        for &(offset, len) in spans.iter() {
            durable[offset..offset + len].copy_from_slice(&snaps[at..at + len]);
            at += len;
        }
        lines.clear();
        spans.clear();
        snaps.clear();
        st.drains += 1;
        drop(st);
        flush::count(|s| s.drains += 1);
    }
}

/// Appends `len` bytes at `offset` of the mapping at `base` to what the next drain makes durable.
///
/// # Safety
///
/// `[offset, offset + len)` lies in the mapping at `base`, which no other thread writes meanwhile.
unsafe fn snap(st: &mut State, base: *const u8, offset: usize, len: usize) {
    let at = st.snaps.len();
    st.snaps.resize(at + len, 0);
    st.spans.push((offset, len));
    // SAFETY: `[offset, offset + len)` lies in the mapping (caller) and `snaps[at..]` was just
    // sized to `len` bytes; the mapping and the Vec are distinct allocations.
    unsafe { std::ptr::copy_nonoverlapping(base.add(offset), st.snaps.as_mut_ptr().add(at), len) };
    let State { next, snaps, .. } = st;
    next[offset..offset + len].copy_from_slice(&snaps[at..at + len]);
}

/// Keeps a simulation attached while its region is open (detaches on drop).
pub(crate) struct Attachment(Simulation);

impl Attachment {
    pub(crate) fn sim(&self) -> &Simulation {
        &self.0
    }
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.attached = false;
        st.lines.clear();
        st.spans.clear();
        st.snaps.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_diff(d: &[u8], w: &[u8], unit: usize) -> Vec<u64> {
        (0..d.len())
            .step_by(unit)
            .filter(|&o| d[o..(o + unit).min(d.len())] != w[o..(o + unit).min(d.len())])
            .map(|o| o as u64)
            .collect()
    }

    #[test]
    fn diff_finds_exactly_the_differing_words_and_lines() {
        let d = vec![0u8; 3 * 4096 + 40];
        let mut w = d.clone();
        for &i in &[0usize, 7, 8, 63, 64, 4095, 4096, 8200, 3 * 4096 + 39] {
            w[i] = 1;
        }
        let words = diff_units(&d, &w, FaultModel::Words);
        assert_eq!(words, brute_diff(&d, &w, 8));
        assert_eq!(words, [0, 8, 56, 64, 4088, 4096, 8200, 3 * 4096 + 32]);
        let lines = diff_units(&d, &w, FaultModel::Lines);
        assert_eq!(lines, brute_diff(&d, &w, 64));
        assert_eq!(lines, [0, 64, 4032, 4096, 8192, 3 * 4096]);
        assert!(diff_units(&d, &d, FaultModel::Words).is_empty());
    }

    #[test]
    fn applying_all_units_gives_the_working_image_and_none_the_durable() {
        let d: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
        let mut w = d.clone();
        for i in (3..1024).step_by(37) {
            w[i] ^= 0x5a;
        }
        for model in [FaultModel::Words, FaultModel::Lines] {
            let units = diff_units(&d, &w, model);
            let mut img = d.clone();
            apply_units(&mut img, &w, &units, model);
            assert_eq!(img, w);
            let mut img = d.clone();
            apply_units(&mut img, &w, &[], model);
            assert_eq!(img, d);
            // A subset changes exactly its units.
            let some: Vec<u64> = units.iter().copied().step_by(2).collect();
            let mut img = d.clone();
            apply_units(&mut img, &w, &some, model);
            assert_eq!(diff_units(&d, &img, model), some);
            assert_eq!(
                diff_units(&img, &w, model),
                units.iter().copied().skip(1).step_by(2).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn random_subsets_are_deterministic_in_range_and_varied() {
        let mut strategies = std::collections::HashSet::new();
        let mut distinct = std::collections::HashSet::new();
        for seed in 0..200u64 {
            let s = random_subset(20, seed);
            assert_eq!(s, random_subset(20, seed));
            assert!(s.windows(2).all(|w| w[0] < w[1]), "ascending, distinct");
            assert!(s.iter().all(|&i| i < 20));
            strategies.insert(subset_strategy(seed));
            distinct.insert(s);
        }
        assert_eq!(strategies.len(), 6);
        assert!(distinct.len() > 100, "{}", distinct.len());
        assert!(random_subset(0, 1).is_empty());
        assert!(random_subset(1, 3).len() <= 1);
        for seed in 0..50 {
            match subset_strategy(seed) {
                SubsetStrategy::One => assert_eq!(random_subset(9, seed).len(), 1),
                SubsetStrategy::AllButOne => assert_eq!(random_subset(9, seed).len(), 8),
                SubsetStrategy::Run => {
                    let s = random_subset(9, seed);
                    assert!(s.windows(2).all(|w| w[1] == w[0] + 1));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn mask_subsets_enumerate_every_subset() {
        let all: std::collections::HashSet<Vec<usize>> = (0..16u64).map(|m| mask_subset(4, m)).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(mask_subset(4, 0b1010), [1, 3]);
        assert_eq!(mask_subset(4, 0), Vec::<usize>::new());
    }

    #[test]
    fn mix_separates_neighbouring_inputs() {
        let v: std::collections::HashSet<u64> =
            (0..1000u64).flat_map(|a| [mix(a, 0), mix(0, a + 1)]).collect();
        assert_eq!(v.len(), 2000);
    }

    #[test]
    fn crash_point_builds_images() {
        let d = [0u8; 128];
        let mut w = d;
        w[8] = 1;
        w[100] = 2;
        let cp = CrashPoint::new(&d, &w, &[64], 5);
        assert_eq!(cp.drain_seq(), 5);
        assert_eq!(cp.flushed_lines(), [64]);
        let p = cp.pending(FaultModel::Words);
        assert_eq!(p, [8, 96]);
        let mut img = Vec::new();
        cp.image_into(FaultModel::Words, &p[1..], &mut img);
        assert_eq!((img[8], img[100]), (0, 2));
    }

    /// A plain buffer standing in for a simulated region's mapping (single-threaded).
    struct Mem(Vec<u8>);

    impl Mem {
        fn record(&self, sim: &Simulation, offset: usize, len: usize) {
            assert!(crate::flush::line_span(offset, len).1 <= self.0.len());
            // SAFETY: the lines lie in the buffer (asserted); nothing else writes it.
            unsafe { sim.record(self.0.as_ptr(), offset, len) }
        }

        fn drain(&self, sim: &Simulation) {
            // SAFETY: the buffer has the attached length; nothing else writes it.
            unsafe { sim.drain(self.0.as_ptr()) }
        }
    }

    fn attached(len: usize) -> (Simulation, Attachment, Mem) {
        let sim = Simulation::new();
        let att = sim.attach(len, |_| {});
        (sim, att, Mem(vec![0; len]))
    }

    /// The simulation without a mapping: records, hooks and drains over a plain buffer.
    #[test]
    fn drain_calls_the_thread_hook_then_persists_flush_time_contents() {
        let (sim, _att, mut mem) = attached(256);
        mem.0[70] = 9;
        mem.record(&sim, 70, 1);
        mem.0[71] = 8; // stored after the flush: not made durable by the drain
        let mut seen = Vec::new();
        sim.with_hook(
            &mut |cp| {
                seen.push((
                    cp.drain_seq(),
                    cp.flushed_lines().to_vec(),
                    cp.pending(FaultModel::Words),
                ))
            },
            || mem.drain(&sim),
        );
        assert_eq!(seen, [(0, vec![64], vec![64])]);
        let durable = sim.durable_image();
        assert_eq!((durable[70], durable[71]), (9, 0));
        assert_eq!(sim.drains(), 1);
        // Outside `with_hook` no hook runs.
        mem.drain(&sim);
        assert_eq!(seen.len(), 1);
        assert_eq!(sim.drains(), 2);
    }

    #[test]
    fn hooks_nest_and_are_removed_on_unwind() {
        let (sim, _att, mem) = attached(64);
        let (mut outer, mut inner) = (0, 0);
        sim.with_hook(&mut |_| outer += 1, || {
            mem.drain(&sim);
            sim.with_hook(&mut |_| inner += 1, || mem.drain(&sim));
            mem.drain(&sim);
        });
        assert_eq!((outer, inner), (2, 1));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sim.with_hook(&mut |_| {}, || panic!("boom"))
        }));
        assert!(r.is_err());
        assert!(sim.hooks().is_empty());
    }

    #[test]
    fn hooks_of_other_threads_are_not_called() {
        let (sim, _att, mem) = attached(64);
        let mut calls = 0;
        sim.with_hook(&mut |_| calls += 1, || {
            std::thread::scope(|s| {
                s.spawn(|| mem.drain(&sim));
            });
        });
        assert_eq!((calls, sim.drains()), (0, 1));
    }

    #[test]
    fn the_hook_may_not_drain_its_own_region() {
        let (sim, _att, mem) = attached(64);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sim.with_hook(&mut |_| mem.record(&sim, 0, 8), || mem.drain(&sim))
        }));
        assert!(r.is_err());
        assert_eq!(sim.inner.in_hook.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn hook_work_does_not_show_in_thread_stats() {
        let (sim, _att, mem) = attached(64);
        let before = crate::thread_stats();
        sim.with_hook(&mut |_| flush::count(|s| s.drains += 100), || mem.drain(&sim));
        assert_eq!(crate::thread_stats().since(&before).drains, 1);
    }

    #[test]
    fn attachment_is_exclusive_until_dropped() {
        let (sim, att, _mem) = attached(64);
        assert!(sim.is_attached());
        drop(att);
        assert!(!sim.is_attached());
    }

    /// Region-level behaviour of the simulated domain (real files and mappings).
    mod region {
        use super::*;
        use crate::{DomainKind, RegionOptions};

        fn word(b: &[u8], off: u64) -> u64 {
            u64::from_le_bytes(b[off as usize..off as usize + 8].try_into().unwrap())
        }

        #[test]
        #[cfg_attr(miri, ignore = "file system access")]
        fn flush_and_drain_make_flush_time_contents_durable() {
            let dir = tempfile::tempdir().unwrap();
            let sim = Simulation::new();
            let mut r = RegionOptions::new()
                .simulate(sim.clone())
                .create(dir.path().join("p"), 1 << 16)
                .unwrap();
            assert_eq!(r.domain(), DomainKind::Simulated);
            assert_eq!(r.domain().name(), "simulated");
            let d0 = sim.durable_image();
            assert_eq!(&d0[..8], b"PTMPOOL\0", "the headers were persisted at create");
            let off = r.data_range().start;
            let before = crate::thread_stats();
            r.write_at(off, &1u64.to_le_bytes()).unwrap();
            r.write_at(off + 8, &2u64.to_le_bytes()).unwrap();
            r.flush(off, 16).unwrap();
            r.write_at(off + 8, &3u64.to_le_bytes()).unwrap(); // after the flush
            r.write_at(off + 64, &4u64.to_le_bytes()).unwrap(); // never flushed
            let mut seen = None;
            sim.with_hook(
                &mut |cp| {
                    seen = Some((
                        cp.drain_seq(),
                        cp.flushed_lines().to_vec(),
                        cp.pending(FaultModel::Words),
                    ))
                },
                || r.drain().unwrap(),
            );
            let (seq, flushed, pending) = seen.unwrap();
            assert_eq!(flushed, [off]);
            assert_eq!(pending, [off, off + 8, off + 64]);
            assert!(seq > 0, "create drained the headers first");
            let d = sim.durable_image();
            assert_eq!((word(&d, off), word(&d, off + 8), word(&d, off + 64)), (1, 2, 0));
            let st = crate::thread_stats().since(&before);
            assert_eq!((st.drains, st.lines_flushed), (1, 1));
            // A non-temporal copy is recorded like a flush of its lines.
            r.write_nontemporal_at(off + 128, &[5u8; 100]).unwrap();
            r.drain().unwrap();
            let d = sim.durable_image();
            assert!(d[off as usize + 128..off as usize + 228].iter().all(|&b| b == 5));
            assert_eq!(
                word(&d, off + 8),
                2,
                "a store after its line's flush waits for another flush"
            );
        }

        #[test]
        #[cfg_attr(miri, ignore = "file system access")]
        fn one_region_per_simulation_and_no_tag_claimed() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p");
            drop(RegionOptions::new().create(&path, 1 << 16).unwrap());
            std::fs::copy(&path, dir.path().join("copy")).unwrap();
            let sim = Simulation::new();
            let r = RegionOptions::new().simulate(sim.clone()).open(&path).unwrap();
            assert!(sim.is_attached());
            assert_eq!(sim.durable_image(), std::fs::read(&path).unwrap());
            let e = RegionOptions::new()
                .simulate(sim.clone())
                .open(dir.path().join("copy"));
            assert!(matches!(e, Err(crate::Error::Unsupported { .. })), "{e:?}");
            // The copy has the same pointer tag: it opens normally while the simulated region
            // is open (the harness opens crash images of open pools).
            let copy = RegionOptions::new().open(dir.path().join("copy")).unwrap();
            drop((r, copy));
            assert!(!sim.is_attached());
        }
    }
}
