//! The per-page state machine shared by the owning [`PagedRegion`](crate::PagedRegion) and the
//! fault paths (the SIGSEGV handler, `handler.rs`; the userfaultfd service thread,
//! `service.rs`): loading, CRC32C dirty tracking, write-back and clock eviction of pages.
//! It imports only the leaves below it (`checksum`, `error`, `sys`, the `uffd` ioctls), never the
//! region or the fault paths that call it.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use pmem_core::WriteAheadGate;

use crate::checksum::{self, StackRoom};
use crate::error::Result;
use crate::sys::{errno, fatal};
use crate::uffd;
use crate::{BLOCKS_PER_PAGE, BLOCK_SIZE, PAGE_SIZE};

/// A page-sized, page-aligned buffer: staging page of the userfaultfd service thread, snapshot of
/// `persist`, direct-I/O probe (any direct-I/O alignment the region accepts divides 4 KiB).
#[repr(C, align(4096))]
pub(crate) struct PageBuf(pub(crate) [u8; PAGE_SIZE]);

// Page state word: the state in the low byte, the clock reference bit above it.
pub(crate) const ABSENT: u32 = 0;
const LOADING: u32 = 1;
const RESIDENT: u32 = 2;
const WRITING: u32 = 3;
const EVICTING: u32 = 4;
const STATE_MASK: u32 = 0xff;
const REF: u32 = 0x100;

// Frame table entries: a page index, or one of these.
pub(crate) const FRAME_EMPTY: usize = usize::MAX;
pub(crate) const FRAME_CLAIMED: usize = usize::MAX - 1;

/// State shared by the owning [`PagedRegion`] and the fault handler (the SIGSEGV handler or the
/// userfaultfd service thread). Only atomics are mutated.
pub(crate) struct Shared {
    /// The application's view: `PROT_NONE` except for resident pages (signal mode), or a
    /// userfaultfd-registered anonymous mapping where only resident pages are present.
    pub(crate) base: *mut u8,
    /// Signal mode: a second, always read-write mapping of the same memfd: the handler loads
    /// into it and write-back reads from it while the application's view of the page is
    /// inaccessible. Userfaultfd mode: `base` itself (write-back reads a write-protected page).
    pub(crate) alias: *mut u8,
    pub(crate) len: usize,
    pub(crate) fd: libc::c_int,
    /// The span a write is aligned to: `BLOCK_SIZE`, or the direct-I/O alignment if larger (a
    /// power of two, at most `PAGE_SIZE`).
    pub(crate) write_unit: usize,
    /// The memfd behind both views (signal mode), or -1.
    pub(crate) memfd: libc::c_int,
    /// The userfaultfd (userfaultfd mode), or -1.
    pub(crate) uffd: libc::c_int,
    pub(crate) states: Box<[AtomicU32]>,
    pub(crate) crcs: Box<[AtomicU32]>,
    pub(crate) frames: Box<[AtomicUsize]>,
    pub(crate) hand: AtomicUsize,
    pub(crate) resident: AtomicUsize,
    pub(crate) pages_faulted: AtomicU64,
    pub(crate) blocks_written: AtomicU64,
    pub(crate) pages_written: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) writeback_bytes: AtomicU64,
    /// A journal's write-ahead gate, or null: when set, a write-back of changed blocks first
    /// waits there until the journal is durable. Points into the `Arc` the owning
    /// [`PagedRegion`] keeps for its whole life (set once, never cleared).
    pub(crate) gate: AtomicPtr<WriteAheadGate>,
}

/// Runs `io(done)` (one `pread`/`pwrite` of the remaining bytes at `done`) until `len` bytes are
/// transferred, retrying on `EINTR`; async-signal-safe (no allocation, errors as errno values).
fn io_exact(len: usize, mut io: impl FnMut(usize) -> isize) -> Result<(), i32> {
    let mut done = 0;
    while done < len {
        let n = io(done);
        if n < 0 {
            // SAFETY: reading this thread's errno.
            let e = unsafe { *libc::__errno_location() };
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        done += n as usize;
    }
    Ok(())
}

/// `pread` of exactly `len` bytes; async-signal-safe.
///
/// # Safety
/// `buf` must be valid for `len` bytes of writes.
pub(crate) unsafe fn pread_exact(fd: libc::c_int, buf: *mut u8, len: usize, off: u64) -> Result<(), i32> {
    io_exact(len, |done| {
        // SAFETY: `buf + done .. buf + len` is writable per the contract.
        unsafe {
            libc::pread(
                fd,
                buf.add(done).cast(),
                len - done,
                (off + done as u64) as libc::off_t,
            )
        }
    })
}

/// `pwrite` of exactly `len` bytes; async-signal-safe.
///
/// # Safety
/// `buf` must be valid for `len` bytes of reads.
unsafe fn pwrite_exact(fd: libc::c_int, buf: *const u8, len: usize, off: u64) -> Result<(), i32> {
    io_exact(len, |done| {
        // SAFETY: `buf + done .. buf + len` is readable per the contract.
        unsafe {
            libc::pwrite(
                fd,
                buf.add(done).cast(),
                len - done,
                (off + done as u64) as libc::off_t,
            )
        }
    })
}

/// The byte spans `[lo, hi)` of a page to write for the blocks marked `dirty`: runs of dirty
/// blocks widened to multiples of `unit` (a power of two from `BLOCK_SIZE` to `PAGE_SIZE`), runs
/// whose widened spans touch or overlap merged. At most one span per block; no allocation.
pub(crate) fn write_spans(
    dirty: &[bool; BLOCKS_PER_PAGE],
    unit: usize,
) -> [Option<(usize, usize)>; BLOCKS_PER_PAGE] {
    let mut spans = [None; BLOCKS_PER_PAGE];
    let mut n = 0;
    for b in (0..BLOCKS_PER_PAGE).filter(|&b| dirty[b]) {
        let lo = b * BLOCK_SIZE / unit * unit;
        let hi = ((b + 1) * BLOCK_SIZE).next_multiple_of(unit);
        match &mut spans[..n] {
            [.., Some((_, last_hi))] if lo <= *last_hi => *last_hi = hi.max(*last_hi),
            _ => {
                spans[n] = Some((lo, hi));
                n += 1;
            }
        }
    }
    spans
}

impl Shared {
    fn page_ptr(&self, page: usize) -> *mut u8 {
        self.base.wrapping_add(page * PAGE_SIZE)
    }

    fn alias_ptr(&self, page: usize) -> *mut u8 {
        self.alias.wrapping_add(page * PAGE_SIZE)
    }

    /// Start address of the application's view.
    pub(crate) fn base_addr(&self) -> usize {
        self.base as usize
    }

    /// Serves a fault on `page` in the SIGSEGV handler, with `room` bytes of stack left:
    /// async-signal-safe; aborts with a message if the page cannot be loaded.
    pub(crate) fn handle_fault(&self, page: usize, room: StackRoom) {
        if let Err(msg) = self.serve_fault(page, self.alias_ptr(page), room) {
            fatal(msg);
        }
    }

    /// Makes `page` resident if it is `ABSENT` (loading it through `staging`, a writable page:
    /// the alias of the page in signal mode, the service thread's buffer in userfaultfd mode),
    /// or waits while another thread owns it (a fault on a page already present raced with its
    /// load and returns at once). On error the page is left `ABSENT`. Async-signal-safe; `room`
    /// is the caller's stack left (it chooses the CRC32C implementation).
    pub(crate) fn serve_fault(
        &self,
        page: usize,
        staging: *mut u8,
        room: StackRoom,
    ) -> Result<(), &'static str> {
        let Some(state) = self.states.get(page) else {
            return Err("nvme-backing: fault outside the page table\n");
        };
        loop {
            let s = state.load(Ordering::Acquire);
            match s & STATE_MASK {
                ABSENT => {
                    if state
                        .compare_exchange(s, LOADING, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return self.load_page(page, staging, room);
                    }
                }
                // Mapped already (a spurious or raced fault): retry the access.
                RESIDENT | WRITING => return Ok(()),
                // Another thread owns the page: wait for it.
                _ => {
                    // SAFETY: sched_yield is async-signal-safe.
                    unsafe { libc::sched_yield() };
                }
            }
        }
    }

    /// Waits (yielding) while `page` is being evicted (userfaultfd service thread: a store that
    /// hit the write-protected page may retry once the eviction is over).
    pub(crate) fn wait_not_evicting(&self, page: usize) {
        let Some(state) = self.states.get(page) else {
            return;
        };
        while state.load(Ordering::Acquire) & STATE_MASK == EVICTING {
            std::thread::yield_now();
        }
    }

    /// Loads `page` (state `LOADING`, owned by the caller) through `staging` and makes it
    /// accessible; on error releases its frame and leaves it `ABSENT`.
    fn load_page(&self, page: usize, staging: *mut u8, room: StackRoom) -> Result<(), &'static str> {
        let frame = match self.acquire_frame(room) {
            Ok(f) => f,
            Err(msg) => {
                self.states[page].store(ABSENT, Ordering::Release);
                return Err(msg);
            }
        };
        let fail = |msg| {
            self.frames[frame].store(FRAME_EMPTY, Ordering::Release);
            self.resident.fetch_sub(1, Ordering::Relaxed);
            self.states[page].store(ABSENT, Ordering::Release);
            Err(msg)
        };
        // SAFETY: `staging` is a writable page per the contract; in signal mode it is the alias
        // of a LOADING page, written only by its owner while the application view is PROT_NONE.
        if unsafe { pread_exact(self.fd, staging, PAGE_SIZE, (page * PAGE_SIZE) as u64) }.is_err() {
            return fail("nvme-backing: pread of the backing file failed while serving a fault\n");
        }
        for b in 0..BLOCKS_PER_PAGE {
            // SAFETY: the block lies inside the page just read; nobody else writes it.
            let block = unsafe { std::slice::from_raw_parts(staging.add(b * BLOCK_SIZE), BLOCK_SIZE) };
            self.crcs[page * BLOCKS_PER_PAGE + b].store(checksum::crc32c(block, room), Ordering::Relaxed);
        }
        if self.uffd >= 0 {
            // Maps the page atomically; the service thread wakes the waiters once it is RESIDENT.
            // SAFETY: `staging` holds the page.
            if unsafe { uffd::copy_page(self.uffd, self.page_ptr(page) as usize, staging) }.is_err() {
                return fail("nvme-backing: UFFDIO_COPY failed while serving a fault\n");
            }
        } else if self.set_access(page, libc::PROT_READ | libc::PROT_WRITE).is_err() {
            return fail("nvme-backing: mprotect failed in the fault handler (vm.max_map_count?)\n");
        }
        self.frames[frame].store(page, Ordering::Release);
        self.pages_faulted.fetch_add(1, Ordering::Relaxed);
        self.states[page].store(RESIDENT | REF, Ordering::Release);
        Ok(())
    }

    /// `mprotect` of the application's view of `page` (signal mode).
    fn set_access(&self, page: usize, prot: libc::c_int) -> Result<(), i32> {
        // SAFETY: the page lies inside our mapping of the memfd.
        if unsafe { libc::mprotect(self.page_ptr(page).cast(), PAGE_SIZE, prot) } != 0 {
            return Err(errno());
        }
        Ok(())
    }

    /// Stops all stores to a resident page about to be written back for eviction: `PROT_NONE`
    /// (signal mode) or write-protect (userfaultfd mode; readers continue). Once this returns
    /// (TLB shootdown done) no thread can modify the page.
    fn seal(&self, page: usize) -> Result<(), i32> {
        if self.uffd >= 0 {
            uffd::write_protect(self.uffd, self.page_ptr(page) as usize, true)
        } else {
            self.set_access(page, libc::PROT_NONE)
        }
    }

    /// Undoes [`seal`](Self::seal) after a failed eviction (waking blocked writers). A page that
    /// stays resident must be accessible, or its accessors would wait forever: abort otherwise.
    fn unseal(&self, page: usize) {
        let r = if self.uffd >= 0 {
            uffd::write_protect(self.uffd, self.page_ptr(page) as usize, false)
        } else {
            self.set_access(page, libc::PROT_READ | libc::PROT_WRITE)
        };
        if r.is_err() {
            fatal("nvme-backing: cannot restore access to a page after a failed eviction\n");
        }
    }

    /// Frees the memory of a sealed, written-back page. Signal mode: `MADV_REMOVE` of the memfd
    /// page (a failure only wastes memory: the next load overwrites it). Userfaultfd mode:
    /// `MADV_DONTNEED`, after which the next access is a missing fault; it must succeed.
    fn discard(&self, page: usize) -> Result<(), i32> {
        if self.uffd >= 0 {
            // SAFETY: the page lies inside our registered anonymous mapping; we own it (EVICTING).
            if unsafe { libc::madvise(self.page_ptr(page).cast(), PAGE_SIZE, libc::MADV_DONTNEED) } != 0 {
                return Err(errno());
            }
        } else {
            // SAFETY: the alias page lies inside the shared memfd mapping.
            unsafe { libc::madvise(self.alias_ptr(page).cast(), PAGE_SIZE, libc::MADV_REMOVE) };
        }
        Ok(())
    }

    /// Claims a frame for a page being loaded: an empty one, or the clock's victim (written back
    /// and unmapped first). Async-signal-safe; spins (yielding) while every frame is busy.
    fn acquire_frame(&self, room: StackRoom) -> Result<usize, &'static str> {
        let n = self.frames.len();
        let mut scanned = 0;
        loop {
            let f = self.hand.fetch_add(1, Ordering::Relaxed) % n;
            let v = self.frames[f].load(Ordering::Acquire);
            if v == FRAME_EMPTY {
                if self.frames[f]
                    .compare_exchange(v, FRAME_CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    self.resident.fetch_add(1, Ordering::Relaxed);
                    return Ok(f);
                }
            } else if v != FRAME_CLAIMED {
                match self.try_evict(f, v, true, room) {
                    Ok(true) => {
                        // The frame is ours (CLAIMED); the resident count is unchanged.
                        return Ok(f);
                    }
                    Ok(false) => {}
                    Err(_) => {
                        return Err(
                            "nvme-backing: write-back failed while evicting a page to serve a fault\n",
                        )
                    }
                }
            }
            scanned += 1;
            if scanned > 2 * n {
                scanned = 0;
                // SAFETY: sched_yield is async-signal-safe.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Tries to evict page `page` seen in frame `f`. With `clock`, a referenced page gets a second
    /// chance (its reference bit is cleared) instead. On success the frame is left `CLAIMED` and
    /// the page `ABSENT`. Async-signal-safe; `room` is the caller's stack left.
    pub(crate) fn try_evict(&self, f: usize, page: usize, clock: bool, room: StackRoom) -> Result<bool, i32> {
        let Some(state) = self.states.get(page) else {
            return Ok(false);
        };
        let s = state.load(Ordering::Acquire);
        if s & STATE_MASK != RESIDENT {
            return Ok(false);
        }
        if clock && s & REF != 0 {
            let _ = state.compare_exchange(s, s & !REF, Ordering::Relaxed, Ordering::Relaxed);
            return Ok(false);
        }
        if state
            .compare_exchange(s, EVICTING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Ok(false);
        }
        // We own the page now, so it cannot move: check that the frame entry we read still names
        // it (it may have been evicted from `f` and reloaded into another frame meanwhile).
        if self.frames[f].load(Ordering::Acquire) != page {
            state.store(s, Ordering::Release);
            return Ok(false);
        }
        // Seal the page first: concurrent writers fault and wait until it is ABSENT, and once
        // the seal returns (TLB shootdown done) nobody can modify it during the write-back.
        if let Err(e) = self.seal(page) {
            state.store(s, Ordering::Release);
            return Err(e);
        }
        // SAFETY: the alias page is mapped and stable (sealed, and we own the page).
        let written = unsafe { self.write_back(page, self.alias_ptr(page), room) };
        if let Err(e) = written.and_then(|()| self.discard(page)) {
            self.unseal(page);
            state.store(s, Ordering::Release);
            return Err(e);
        }
        self.frames[f].store(FRAME_CLAIMED, Ordering::Release);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        state.store(ABSENT, Ordering::Release);
        if self.uffd >= 0 {
            // Writers blocked on the write-protected page retry and take a missing fault.
            uffd::wake(self.uffd, self.page_ptr(page) as usize, PAGE_SIZE);
        }
        Ok(true)
    }

    /// Writes the 1 KiB blocks of `page` whose CRC32C differs from the stored one, taking the
    /// bytes from `src`, and updates the stored CRCs of the blocks written. Adjacent dirty blocks
    /// go in one `pwrite`. With a write unit above 1 KiB (direct I/O on a device that needs it)
    /// each run is widened to whole units (clean blocks inside them are written too, with the
    /// bytes the file already holds) and runs whose units touch are merged. Async-signal-safe;
    /// `room` is the caller's stack left.
    ///
    /// # Safety
    /// `src` must be valid for `PAGE_SIZE` reads, aligned to `write_unit`, and not modified
    /// during the call; the caller owns the page (state `WRITING` or `EVICTING`).
    unsafe fn write_back(&self, page: usize, src: *const u8, room: StackRoom) -> Result<(), i32> {
        let mut crc = [0u32; BLOCKS_PER_PAGE];
        let mut dirty = [false; BLOCKS_PER_PAGE];
        for b in 0..BLOCKS_PER_PAGE {
            // SAFETY: inside the `src` page per the contract.
            let block = unsafe { std::slice::from_raw_parts(src.add(b * BLOCK_SIZE), BLOCK_SIZE) };
            crc[b] = checksum::crc32c(block, room);
            dirty[b] = crc[b] != self.crcs[page * BLOCKS_PER_PAGE + b].load(Ordering::Relaxed);
        }
        if dirty.contains(&true) {
            let gate = self.gate.load(Ordering::Acquire);
            // SAFETY: a non-null gate points into the `Arc` the owning region holds until after
            // the last write-back (see `gate`). `wait_durable` is async-signal-safe.
            if !gate.is_null() && !unsafe { &*gate }.wait_durable() {
                // The journal cannot be made durable: writing the page home would break the
                // write-ahead rule. The page stays as it is; the journal keeps its records.
                return Err(libc::EIO);
            }
        }
        let mut any = false;
        for (lo, hi) in write_spans(&dirty, self.write_unit).into_iter().flatten() {
            // SAFETY: the span lies inside the `src` page; `lo` is a multiple of the write unit.
            unsafe { pwrite_exact(self.fd, src.add(lo), hi - lo, (page * PAGE_SIZE + lo) as u64) }?;
            let mut changed = 0;
            for b in lo / BLOCK_SIZE..hi / BLOCK_SIZE {
                if dirty[b] {
                    self.crcs[page * BLOCKS_PER_PAGE + b].store(crc[b], Ordering::Relaxed);
                    changed += 1;
                }
            }
            self.blocks_written.fetch_add(changed, Ordering::Relaxed);
            self.writeback_bytes
                .fetch_add((hi - lo) as u64, Ordering::Relaxed);
            any = true;
        }
        if any {
            self.pages_written.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes back the dirty blocks of `page` if it is resident (normal context).
    pub(crate) fn persist_page(&self, page: usize) -> Result<(), i32> {
        let state = &self.states[page];
        loop {
            let s = state.load(Ordering::Acquire);
            match s & STATE_MASK {
                // Not resident: clean.
                ABSENT => return Ok(()),
                RESIDENT => {
                    if state
                        .compare_exchange(s, WRITING | (s & REF), Ordering::Acquire, Ordering::Relaxed)
                        .is_err()
                    {
                        continue;
                    }
                    // Snapshot the page with word-sized atomic loads (other threads may keep
                    // writing it), so the CRC stored matches exactly the bytes written.
                    // The buffer is page-aligned, as direct I/O needs.
                    let mut buf = PageBuf([0; PAGE_SIZE]);
                    let src = self.alias_ptr(page).cast::<u64>();
                    for (i, w) in buf.0.chunks_exact_mut(8).enumerate() {
                        // SAFETY: the alias page is mapped read-write and 8-byte aligned;
                        // `AtomicU64` has the layout of `u64`.
                        let word = unsafe { AtomicU64::from_ptr(src.add(i)) }.load(Ordering::Relaxed);
                        w.copy_from_slice(&word.to_ne_bytes());
                    }
                    // SAFETY: `buf` is a stable, page-aligned page; we own the page (WRITING).
                    let r = unsafe { self.write_back(page, buf.0.as_ptr(), StackRoom::Ample) };
                    // Nobody else changes a WRITING page's state word.
                    state.store(s, Ordering::Release);
                    return r;
                }
                // Another persist may have snapshotted before our caller's writes (so wait and
                // redo); an eviction writes the page back before it becomes ABSENT; a page being
                // loaded may already be accessible (and written) before it becomes RESIDENT.
                _ => std::thread::yield_now(),
            }
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}
