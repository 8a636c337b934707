//! The persistence domain of a region: how a flushed range reaches durability.
//!
//! [`Domain`] is private; each variant owns the state only it needs (the msync domain its dirty
//! pages, the external domain its provider, the simulated domain its simulation). Its public
//! face is [`DomainKind`], and [`ExternalMemory`], the trait through which another crate supplies
//! a pool's memory.
//!
//! Every domain offers two points after a run of flushes:
//! - an **ordering point** ([`Domain::order`]): every range this thread flushed before it reaches
//!   the persistence domain before any range flushed after it. It need not wait for the device;
//! - a **durability point** ([`Domain::drain`]): every range flushed so far is durable when it
//!   returns.
//!
//! | domain      | `flush`                     | `order`               | `drain`                                 |
//! |-------------|-----------------------------|-----------------------|-----------------------------------------|
//! | cache flush | clwb/clflushopt/clflush     | sfence                | sfence                                  |
//! | eADR        | nothing                     | sfence                | sfence                                  |
//! | msync       | record the pages            | as drain              | `msync(MS_SYNC)` of the recorded pages   |
//! | external    | [`ExternalMemory::flush`]   | [`ExternalMemory::order`] | [`ExternalMemory::drain`]           |
//! | simulated   | record the lines            | as drain (a crash point) | crash point, then lines durable      |
//! | journaled   | record the lines            | append a journal record (no I/O) | append, then one shared `fdatasync` (group commit) |
//!
//! A shared file mapping offers no ordering cheaper than `msync`: the kernel writes dirty pages
//! back in any order, so the msync domain's ordering point is its durability point.

use std::io;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use super::PAGE;
use crate::error::{Error, Result};
use crate::flush::{self, FlushInstruction};
use crate::journal::{Journal, WriteAheadGate};

/// How stores reach durability in a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DomainKind {
    /// Persistent memory: flush lines (clwb/clflushopt/clflush), drain with sfence.
    CacheFlush(FlushInstruction),
    /// Persistent memory on an eADR platform: flush is a no-op, drain is sfence.
    Eadr,
    /// A plain file: flush records dirty pages, drain `msync(MS_SYNC)`s them.
    Msync,
    /// Memory supplied by an [`ExternalMemory`] (e.g. nvme-backing's paged region): flush,
    /// order and drain are delegated to it.
    Paged,
    /// A plain file mapped copy-on-write, made durable by a journal beside it (see
    /// [`JournalOptions`](crate::JournalOptions), docs/design.md §3.1): flush records lines, an ordering point appends a record (no I/O), a
    /// durability point waits for one `fdatasync` shared by concurrent committers; checkpoints
    /// write changed pages home.
    Journaled,
    /// The crash-recovery harness's simulated domain (feature `simulate`): flush records lines,
    /// drain calls the crash-point hook and then makes the recorded lines durable in the
    /// simulation's durable image (see docs/design.md §11.2).
    #[cfg(feature = "simulate")]
    Simulated,
}

impl DomainKind {
    /// A short name: `clwb`, `clflushopt`, `clflush`, `eadr`, `msync`, `paged` (or `simulated`).
    pub fn name(self) -> &'static str {
        match self {
            DomainKind::CacheFlush(i) => i.name(),
            DomainKind::Eadr => "eadr",
            DomainKind::Msync => "msync",
            DomainKind::Paged => "paged",
            DomainKind::Journaled => "journaled",
            #[cfg(feature = "simulate")]
            DomainKind::Simulated => "simulated",
        }
    }

    /// Whether a drain (and an ordering point) of this domain is just a store fence, or acts on
    /// everything flushed so far by any thread, so that once this thread has drained, every
    /// range it flushed before that drain is durable and no further drain is needed for it.
    ///
    /// True for the cache-flush and eADR domains (an `sfence` orders all earlier flushes of its
    /// thread) and for the simulated domain (its drain makes every recorded line durable).
    /// False for the msync and paged domains: their drains are I/O on what was recorded at the
    /// time, and a later-completed flush needs its own drain. Code that skips a drain because
    /// this thread's drain counter moved on (`PersistStats::drains`) may do so only when this
    /// is true.
    pub fn fence_is_drain(self) -> bool {
        match self {
            DomainKind::CacheFlush(_) | DomainKind::Eadr => true,
            DomainKind::Msync | DomainKind::Paged | DomainKind::Journaled => false,
            #[cfg(feature = "simulate")]
            DomainKind::Simulated => true,
        }
    }
}

/// What a region's persistence domain promises about data made durable (flushed and drained,
/// or committed by a transaction on top): which failures it survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Survives power loss and the crash of the operating system, not only of the process:
    /// persistent memory mapped directly (a file with `MAP_SYNC` on a DAX file system, or a
    /// device-DAX node), or a file on a disk-backed file system made durable by `msync`, a
    /// journal's `fdatasync` or an external provider's write-back.
    PowerLoss,
    /// Survives the death of the process (`kill -9`, a panic) but not power loss or an
    /// operating-system crash: the pool (or its journal) lives on tmpfs or ramfs, which is
    /// memory (e.g. `/dev/shm` treated as persistent memory), or a file is only *treated* as
    /// persistent memory (`force_pmem` / `PTM_FORCE_PMEM=1` on a file that is not DAX: flushed
    /// lines reach the page cache, which nothing writes back in order), or the domain is the
    /// crash harness's simulation.
    ProcessCrash,
}

impl Durability {
    /// `power-loss` or `process-crash`.
    pub fn name(self) -> &'static str {
        match self {
            Durability::PowerLoss => "power-loss",
            Durability::ProcessCrash => "process-crash",
        }
    }

    /// What a domain promises, from its kind, whether the memory is persistent memory mapped
    /// directly (`MAP_SYNC` or device-DAX), and whether a file the pool's durable state lives in
    /// (the pool file, its journal) is on a memory file system (tmpfs, ramfs).
    pub(super) fn of(kind: DomainKind, direct: bool, on_memory_fs: bool) -> Durability {
        match kind {
            #[cfg(feature = "simulate")]
            DomainKind::Simulated => Durability::ProcessCrash,
            _ if on_memory_fs => Durability::ProcessCrash,
            DomainKind::CacheFlush(_) | DomainKind::Eadr if !direct => Durability::ProcessCrash,
            _ => Durability::PowerLoss,
        }
    }
}

/// Whether the file open at `fd` lives on a memory file system (tmpfs, ramfs), by `fstatfs`;
/// false if the call fails.
pub(super) fn on_memory_fs(fd: std::os::fd::RawFd) -> bool {
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `st` is writable memory of the size `fstatfs` fills; an invalid descriptor makes
    // it return -1 without writing.
    let rc = unsafe { libc::fstatfs(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: `fstatfs` returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // `f_type` is a signed word of platform width; the magics are 32-bit values.
    let magic = st.f_type as u64 as u32;
    magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
}

/// Memory for a pool supplied by another crate instead of a file mapping — for example
/// nvme-backing's paged region over the pool file. The region still opens, locks, sizes and
/// validates the pool file itself; the memory must present the file's contents.
///
/// # Safety
///
/// Implementers promise that:
/// - `base()` is valid for reads and writes of `len()` bytes for as long as the value lives,
///   and those bytes show the pool file's contents (loaded on demand is fine);
/// - bytes written there and passed to `flush` reach the file before a later `drain` returns
///   `Ok` (write-back of other bytes at any time is allowed, like a CPU cache's eviction);
/// - ranges passed to `flush` before an `order` call returns `Ok` reach the file before any
///   range passed to `flush` after it (a crash leaves the file as of a prefix of the ordering
///   points, plus any subset of what was flushed since the last one);
/// - `flush`, `order` and `drain` may be called from any thread at once;
/// - once [`install_write_ahead`](ExternalMemory::install_write_ahead) has returned `true`, no
///   byte that differs from the file's is written to the file (by eviction, by `flush`, or at
///   close) unless [`WriteAheadGate::wait_durable`] returned `true` after the bytes written
///   could no longer change and before the write was issued.
pub unsafe trait ExternalMemory: Send + Sync + std::fmt::Debug {
    /// Start of the memory.
    fn base(&self) -> NonNull<u8>;
    /// Its length in bytes (the pool size).
    fn len(&self) -> usize;
    /// Whether it is empty (never, for a pool).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Starts making `[offset, offset + len)` durable. Errors are reported by the next `drain`
    /// (or `order`).
    fn flush(&self, offset: usize, len: usize);
    /// An ordering point: every range flushed before this call reaches the file before any
    /// range flushed after it returns. It need not wait for the device; the provided method
    /// waits anyway (it calls [`drain`](ExternalMemory::drain)).
    ///
    /// # Errors
    ///
    /// The first error of the flushes or of the ordering itself.
    fn order(&self) -> io::Result<()> {
        self.drain()
    }
    /// Waits until every flushed range is durable.
    ///
    /// # Errors
    ///
    /// The first error of the flushes or of the drain itself.
    fn drain(&self) -> io::Result<()>;
    /// Asks the memory to obey the write-ahead rule of a journal from now on: every write of
    /// changed bytes to the file first waits at `gate` (see the trait's safety contract).
    /// Returns whether it will; the provided method returns `false` (such memory cannot carry
    /// the journaled engine). Called once, at open, before the pool's memory is written.
    fn install_write_ahead(&self, gate: &Arc<WriteAheadGate>) -> bool {
        let _ = gate;
        false
    }
}

/// The persistence domain of one region, owning the state its flushes and drains need.
///
/// Every method that takes `base` needs the start of the memory the domain was chosen for (the
/// region's mapping, or the external memory): a [`Region`](super::Region) holds both and passes
/// its own.
#[derive(Debug)]
pub(super) enum Domain {
    /// Flush lines with this instruction; order and drain with `sfence`.
    CacheFlush(FlushInstruction),
    /// No flush; order and drain with `sfence`.
    Eadr,
    /// Record flushed pages; order and drain `msync` them.
    Msync(DirtyPages),
    /// Delegate flush, order and drain to the memory's provider, which also keeps the memory
    /// alive (the region's mapping does not own it).
    External(Arc<dyn ExternalMemory>),
    /// Record flushed lines in the simulation; order and drain are crash points.
    #[cfg(feature = "simulate")]
    Simulated(crate::sim::Attachment),
    /// Record flushed lines; order appends a journal record, drain also syncs the journal.
    Journaled(JournalDomain),
}

/// The journaled domain's state: the journal, in buffered mode its sync thread, and over
/// external memory the write-ahead gate and the thread that serves it.
#[derive(Debug)]
pub(super) struct JournalDomain {
    pub(super) journal: Arc<Journal>,
    syncer: Option<std::thread::JoinHandle<()>>,
    /// External memory: the gate its write-back waits at, and the thread syncing for it.
    write_ahead: Option<(Arc<WriteAheadGate>, std::thread::JoinHandle<()>)>,
}

impl JournalDomain {
    /// Wraps a started journal; starts the sync thread if `buffered` has a period.
    pub(super) fn new(journal: Journal, buffered: Option<std::time::Duration>) -> JournalDomain {
        let journal = Arc::new(journal);
        let syncer = buffered.map(|p| journal.run_syncer(p));
        JournalDomain {
            journal,
            syncer,
            write_ahead: None,
        }
    }

    /// Wraps a journal over external memory whose write-back waits at `gate` (installed in
    /// the memory already): starts the write-ahead thread, which syncs the journal whenever a
    /// write-back asks, and the sync thread if `buffered` has a period.
    ///
    /// # Errors
    ///
    /// The thread could not be started.
    pub(super) fn over_external(
        journal: Journal,
        gate: Arc<WriteAheadGate>,
        buffered: Option<std::time::Duration>,
    ) -> io::Result<JournalDomain> {
        let mut domain = JournalDomain::new(journal, buffered);
        let journal = Arc::clone(&domain.journal);
        let thread = std::thread::Builder::new()
            .name("ptm-write-ahead".into())
            .spawn(move || journal.serve_write_ahead());
        match thread {
            Ok(t) => {
                domain.write_ahead = Some((gate, t));
                Ok(domain)
            }
            Err(e) => {
                gate.fail();
                Err(e)
            }
        }
    }

    /// Stops the sync thread, then checkpoints: afterwards the home file holds everything and
    /// the journal is empty. Then stops the write-ahead thread: a later write-back of changed
    /// data passes the gate only if the journal is durable (after a failed checkpoint it is
    /// refused, and the journal keeps the changes).
    ///
    /// # Errors
    ///
    /// The checkpoint's I/O error (the journal then still holds the changes: the next open
    /// replays them).
    pub(super) fn close(&mut self) -> io::Result<()> {
        if let Some(t) = self.syncer.take() {
            self.journal.stop_syncer();
            let _ = t.join();
        }
        let r = self.journal.checkpoint();
        self.stop_write_ahead();
        r
    }

    fn stop_write_ahead(&mut self) {
        if let Some((gate, t)) = self.write_ahead.take() {
            gate.close();
            let _ = t.join();
        }
    }

    /// The write-ahead gate (journaled external memory only).
    pub(super) fn gate(&self) -> Option<&Arc<WriteAheadGate>> {
        self.write_ahead.as_ref().map(|(g, _)| g)
    }
}

impl Drop for JournalDomain {
    fn drop(&mut self) {
        self.stop_write_ahead();
        if let Some(t) = self.syncer.take() {
            self.journal.stop_syncer();
            let _ = t.join();
        }
    }
}

impl Domain {
    /// The journal file's path (journaled domain only).
    pub(super) fn journal_path(&self) -> Option<&Path> {
        match self {
            Domain::Journaled(j) => Some(j.journal.path()),
            _ => None,
        }
    }

    /// The public name of this domain.
    pub(super) fn kind(&self) -> DomainKind {
        match self {
            Domain::CacheFlush(insn) => DomainKind::CacheFlush(*insn),
            Domain::Eadr => DomainKind::Eadr,
            Domain::Msync(_) => DomainKind::Msync,
            Domain::External(_) => DomainKind::Paged,
            Domain::Journaled(_) => DomainKind::Journaled,
            #[cfg(feature = "simulate")]
            Domain::Simulated(_) => DomainKind::Simulated,
        }
    }

    /// Starts making `[ptr, ptr + len)` durable.
    ///
    /// # Safety
    ///
    /// - `base` is the start of the memory this domain was chosen for, and `[ptr, ptr + len)`
    ///   lies inside that memory;
    /// - simulated domain: no other thread writes those lines meanwhile (the simulated domain's
    ///   single-thread rule, see `RegionOptions::simulate`).
    #[inline]
    pub(super) unsafe fn flush(&self, base: NonNull<u8>, ptr: *const u8, len: usize) {
        match self {
            // SAFETY: the range is mapped (caller); the cache lines containing it lie in the
            // same page-aligned mapping; `insn` was detected on this CPU.
            Domain::CacheFlush(insn) => unsafe { flush::flush_range(*insn, ptr, len) },
            Domain::Eadr => {}
            Domain::Msync(pages) => pages.record(ptr as usize - base.as_ptr() as usize, len),
            Domain::External(ext) => ext.flush(ptr as usize - base.as_ptr() as usize, len),
            Domain::Journaled(j) => j
                .journal
                .flush((ptr as usize - base.as_ptr() as usize) as u64, len as u64),
            #[cfg(feature = "simulate")]
            Domain::Simulated(att) => {
                let offset = ptr as usize - base.as_ptr() as usize;
                // SAFETY: `base` is the mapping the simulation was attached to at open and the
                // range lies in it, so do its lines (the mapping is page-aligned and
                // page-sized); the caller excludes concurrent writers of those lines.
                unsafe { att.sim().record(base.as_ptr(), offset, len) };
            }
        }
    }

    /// Copies `len` bytes from `src` to `dst` the way the domain wants bulk writes:
    /// non-temporal stores with partial head/tail lines flushed (cache flush, eADR, and the
    /// simulated domain, which models them), or a plain copy followed by a flush of the range
    /// (other domains). Durable after the next drain.
    ///
    /// # Safety
    ///
    /// - `base` is the start of the memory this domain was chosen for, and `[dst, dst + len)`
    ///   lies inside that memory; `src` is valid for `len` reads;
    /// - the ranges do not overlap and no other thread accesses `[dst, dst + len)` meanwhile.
    pub(super) unsafe fn copy_nontemporal(
        &self,
        base: NonNull<u8>,
        dst: *mut u8,
        src: *const u8,
        len: usize,
    ) {
        match self {
            // SAFETY: forwarded caller contract; `insn` was detected on this CPU.
            Domain::CacheFlush(insn) => unsafe { flush::copy_nontemporal(dst, src, len, Some(*insn)) },
            // SAFETY: forwarded caller contract; eADR needs no flush, the drain orders the stores.
            Domain::Eadr => unsafe { flush::copy_nontemporal(dst, src, len, None) },
            Domain::Msync(_) | Domain::External(_) | Domain::Journaled(_) => {
                // SAFETY: forwarded caller contract.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
                // SAFETY: the range lies in the domain's memory (caller).
                unsafe { self.flush(base, dst, len) };
            }
            // SAFETY: forwarded caller contract; `base` is the mapping the simulation was
            // attached to at open, and the caller excludes other threads' access to the range.
            // The simulation runs the cache-flush domain's split (streamed body, flushed head and
            // tail) and tracks what each piece makes durable.
            #[cfg(feature = "simulate")]
            Domain::Simulated(att) => unsafe { att.sim().copy_nontemporal(base.as_ptr(), dst, src, len) },
        }
    }

    /// The ordering point: every range this thread flushed before the call reaches the
    /// persistence domain before any range flushed after it. Counts one drain.
    ///
    /// # Safety
    ///
    /// - `base` is the start of the memory this domain was chosen for;
    /// - simulated domain: no other thread writes that memory meanwhile (single-thread rule).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (naming `path`) if the msync or the external provider fails.
    #[inline]
    pub(super) unsafe fn order(&self, base: NonNull<u8>, path: &Path) -> Result<()> {
        // SAFETY: forwarded caller contract.
        unsafe { self.point(base, path, Point::Order) }
    }

    /// The durability point: every range flushed so far (msync and external domains: by any
    /// thread; otherwise by this thread) is durable when it returns (the journaled engine's
    /// buffered mode: appended; see [`Point::Sync`]). Counts one drain.
    ///
    /// # Safety
    ///
    /// As [`order`](Domain::order).
    ///
    /// # Errors
    ///
    /// As [`order`](Domain::order).
    #[inline]
    pub(super) unsafe fn drain(&self, base: NonNull<u8>, path: &Path) -> Result<()> {
        // SAFETY: forwarded caller contract.
        unsafe { self.point(base, path, Point::Drain) }
    }

    /// An ordering, durability or sync point (one body for all three). Counts one drain.
    ///
    /// # Safety
    ///
    /// As [`order`](Domain::order).
    ///
    /// # Errors
    ///
    /// As [`order`](Domain::order).
    #[inline]
    pub(super) unsafe fn point(&self, base: NonNull<u8>, path: &Path, point: Point) -> Result<()> {
        if let Domain::CacheFlush(_) | Domain::Eadr = self {
            // Inlined into every transaction's two drains: one fence, no call.
            flush::drain_fence();
            return Ok(());
        }
        // SAFETY: forwarded caller contract.
        unsafe { self.point_io(base, path, point) }
    }

    /// [`point`](Domain::point) of the domains that do I/O (or simulate it).
    ///
    /// # Safety
    ///
    /// As [`order`](Domain::order).
    ///
    /// # Errors
    ///
    /// As [`order`](Domain::order).
    #[inline(never)]
    unsafe fn point_io(&self, base: NonNull<u8>, path: &Path, point: Point) -> Result<()> {
        match self {
            Domain::CacheFlush(_) | Domain::Eadr => {
                flush::drain_fence();
                Ok(())
            }
            // SAFETY: forwarded caller contract.
            Domain::Msync(pages) => unsafe { pages.sync(base, path) },
            Domain::External(ext) => {
                flush::count(|s| s.drains += 1);
                match point {
                    Point::Order => ext.order().map_err(|e| Error::io("order", path, e)),
                    Point::Drain | Point::Sync => ext.drain().map_err(|e| Error::io("drain", path, e)),
                }
            }
            Domain::Journaled(j) => {
                flush::count(|s| s.drains += 1);
                let journal = &j.journal;
                match point {
                    Point::Order => journal.order().map(|_| ()),
                    Point::Drain => journal.drain(),
                    Point::Sync => journal.sync(),
                }
                .map_err(|e| Error::io("sync journal", journal.path(), e))
            }
            #[cfg(feature = "simulate")]
            Domain::Simulated(att) => {
                // SAFETY: the simulation was attached to this memory at open (`base`, caller);
                // the caller excludes concurrent writers.
                unsafe { att.sim().drain(base.as_ptr()) };
                Ok(())
            }
        }
    }
}

/// Which point [`Domain::point`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Point {
    /// Ordering point.
    Order,
    /// Durability point (the journaled engine's buffered mode only appends).
    Drain,
    /// Durable whatever the mode (`Region::sync`).
    Sync,
}

/// The msync domain's state: page ranges `[start, end)` (byte offsets) flushed but not yet
/// msynced, from any thread.
#[derive(Debug, Default)]
pub(super) struct DirtyPages {
    pending: Mutex<Vec<(usize, usize)>>,
}

impl DirtyPages {
    /// Records the pages of `[offset, offset + len)`.
    fn record(&self, offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        let start = offset & !(PAGE - 1);
        let end = (offset + len + PAGE - 1) & !(PAGE - 1);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((start, end));
    }

    /// `msync(MS_SYNC)`s the recorded pages, coalesced, and forgets them. The lock is held
    /// through the syscalls, so a drain never returns while another thread's msync of the same
    /// pages is still in flight. Counts one drain, and one fsync if any msync was issued.
    ///
    /// # Safety
    ///
    /// `base` is the start of the mapping whose pages were recorded.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (naming `path`) for the first failed msync; the pages are forgotten anyway.
    unsafe fn sync(&self, base: NonNull<u8>, path: &Path) -> Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.sort_unstable();
        let mut pages = 0u64;
        let mut result = Ok(());
        let mut i = 0;
        while i < pending.len() {
            let (start, mut end) = pending[i];
            i += 1;
            while i < pending.len() && pending[i].0 <= end {
                end = end.max(pending[i].1);
                i += 1;
            }
            // SAFETY: `[start, end)` are page-aligned offsets recorded from in-bounds flushes of
            // the mapping at `base` (caller), so the range lies in it; msync does not modify
            // memory.
            let rc = unsafe { libc::msync(base.as_ptr().add(start).cast(), end - start, libc::MS_SYNC) };
            if rc != 0 && result.is_ok() {
                result = Err(Error::io("msync", path, io::Error::last_os_error()));
            }
            pages += ((end - start) / PAGE) as u64;
        }
        let synced = !pending.is_empty();
        pending.clear();
        flush::count(|s| {
            s.drains += 1;
            s.pages_synced += pages;
            s.fsyncs += u64::from(synced);
        });
        result
    }
}
