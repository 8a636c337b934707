//! [`PagedRegion`] and the per-page state machine shared with the fault handler.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use pmem_core::journal::WriteAheadGate;

use crate::checksum::{self, StackRoom};
use crate::error::{Error, Result};
use crate::handler;
use crate::uffd;
use crate::{BLOCKS_PER_PAGE, BLOCK_SIZE, PAGE_SIZE};

/// How a [`PagedRegion`] learns about first accesses to its pages (and stops stores during
/// eviction). Both modes share the page state machine, CRC32C dirty tracking, clock eviction and
/// the persist/drain contract; they differ in who loads a page and how its mapping changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultMode {
    /// A process-wide SIGSEGV handler loads the page in the faulting thread and makes it
    /// accessible with `mprotect`; eviction makes it `PROT_NONE` again. The default.
    #[default]
    Signal,
    /// The range is registered with a userfaultfd (missing and write-protect faults); a
    /// per-region service thread loads pages with `UFFDIO_COPY` while the faulting thread sleeps
    /// in the kernel; eviction write-protects the page (`UFFDIO_WRITEPROTECT`), writes it back and
    /// drops it (`MADV_DONTNEED`). System calls given region memory work in this mode (the
    /// kernel waits for the page), unless only user-mode faults may be handled (an unprivileged
    /// process without `/dev/userfaultfd` access).
    Userfaultfd,
}

/// How a [`PagedRegion`] reads and writes its backing file. [`PagedRegion::io_mode`] tells which
/// of `Buffered` and `Direct` was chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoMode {
    /// `Direct` when the backing file allows it, else `Buffered`. The default.
    #[default]
    Auto,
    /// Plain `pread`/`pwrite` through the page cache: the file's pages are cached by the kernel
    /// as well as by the region, and a 1 KiB `pwrite` dirties (and later writes) whole cached
    /// folios.
    Buffered,
    /// `O_DIRECT`: page loads read 4 KiB straight into the page frame, write-back writes the
    /// changed 1 KiB blocks (widened to the device's alignment when that is larger) straight to
    /// the device, and the page cache holds nothing of the file. Opening fails with
    /// [`Error::DirectIoUnsupported`] if the file cannot do it: see [`PagedOptions::io_mode`].
    Direct,
}

/// How to open a [`PagedRegion`]: its [`FaultMode`] and [`IoMode`] (both default). Made by
/// [`PagedRegion::options`]:
///
/// ```no_run
/// use nvme_backing::{FaultMode, IoMode, PagedRegion};
/// let region = PagedRegion::options()
///     .fault_mode(FaultMode::Userfaultfd)
///     .io_mode(IoMode::Direct)
///     .create("/var/tmp/data", 1 << 20, 64)?;
/// assert_eq!(region.io_mode(), IoMode::Direct);
/// # Ok::<(), nvme_backing::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PagedOptions {
    fault_mode: FaultMode,
    io_mode: IoMode,
}

impl PagedOptions {
    /// The defaults: [`FaultMode::Signal`], [`IoMode::Auto`].
    pub fn new() -> Self {
        Self::default()
    }

    /// How faults are served.
    pub fn fault_mode(mut self, mode: FaultMode) -> Self {
        self.fault_mode = mode;
        self
    }

    /// How the backing file is read and written.
    ///
    /// Direct I/O is used when the kernel reports the file's direct-I/O alignment (a block
    /// device's logical block size, `ioctl(BLKSSZGET)`; a regular file's `statx`
    /// `STATX_DIOALIGN`, Linux 6.1 or later, which file systems without a direct path such as
    /// tmpfs leave at zero), that alignment is at most 4 KiB (in memory and on the file), the
    /// file opens with `O_DIRECT`, and a first direct 4 KiB read works. Otherwise
    /// [`IoMode::Auto`] uses buffered I/O and [`IoMode::Direct`] fails with
    /// [`Error::DirectIoUnsupported`] saying which condition failed.
    pub fn io_mode(mut self, mode: IoMode) -> Self {
        self.io_mode = mode;
        self
    }

    /// Opens `path` (a file or block device of at least `len` bytes) read-write and maps its
    /// first `len` bytes as a paged region with at most `resident_limit` resident pages.
    ///
    /// `len` must be a non-zero multiple of 4 KiB; `resident_limit` must be at least 2 (an access
    /// may straddle two pages) and is capped at the page count. Forward progress is guaranteed
    /// when it is at least twice the number of threads faulting at once; below that, threads
    /// still progress in practice but may evict each other's pages repeatedly.
    ///
    /// [`FaultMode::Userfaultfd`] fails with [`Error::Userfaultfd`] if the kernel has no
    /// userfaultfd (`ENOSYS`), the process may not create one (`EPERM`), or it lacks
    /// write-protect support for anonymous memory.
    pub fn open(&self, path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<PagedRegion> {
        PagedRegion::open_impl(path.as_ref(), len, resident_limit, *self)
    }

    /// Creates (or extends) `path` to at least `len` bytes, then [`open`](Self::open)s it.
    pub fn create(&self, path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<PagedRegion> {
        let path = path.as_ref();
        let io_err = |op: &'static str, source: io::Error| Error::Io {
            path: path.to_owned(),
            op,
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err("open", e))?;
        let size = file.metadata().map_err(|e| io_err("stat", e))?.len();
        if size < len as u64 {
            file.set_len(len as u64).map_err(|e| io_err("ftruncate", e))?;
        }
        drop(file);
        self.open(path, len, resident_limit)
    }
}

/// A page-sized, page-aligned buffer: staging page of the userfaultfd service thread, snapshot of
/// `persist`, direct-I/O probe (any direct-I/O alignment the region accepts divides 4 KiB).
#[repr(C, align(4096))]
pub(crate) struct PageBuf(pub(crate) [u8; PAGE_SIZE]);

// Page state word: the state in the low byte, the clock reference bit above it.
const ABSENT: u32 = 0;
const LOADING: u32 = 1;
const RESIDENT: u32 = 2;
const WRITING: u32 = 3;
const EVICTING: u32 = 4;
const STATE_MASK: u32 = 0xff;
const REF: u32 = 0x100;

// Frame table entries: a page index, or one of these.
const FRAME_EMPTY: usize = usize::MAX;
const FRAME_CLAIMED: usize = usize::MAX - 1;

/// Counters of a [`PagedRegion`] since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PagedStats {
    /// Pages read from the backing file by the fault handler.
    pub pages_faulted: u64,
    /// Changed 1 KiB blocks written back (by persist or eviction).
    pub blocks_written: u64,
    /// Pages with at least one block written back, counted once per write-back.
    pub pages_written: u64,
    /// Pages evicted (by the clock on a fault, or by [`PagedRegion::evict_to`]).
    pub evictions: u64,
    /// Bytes written to the backing file: `blocks_written` × 1 KiB, more when direct writes are
    /// widened to an alignment above 1 KiB ([`PagedRegion::direct_io_alignment`]).
    pub writeback_bytes: u64,
}

/// State shared by the owning [`PagedRegion`] and the fault handler (the SIGSEGV handler or the
/// userfaultfd service thread). Only atomics are mutated.
pub(crate) struct Shared {
    /// The application's view: `PROT_NONE` except for resident pages (signal mode), or a
    /// userfaultfd-registered anonymous mapping where only resident pages are present.
    base: *mut u8,
    /// Signal mode: a second, always read-write mapping of the same memfd: the handler loads
    /// into it and write-back reads from it while the application's view of the page is
    /// inaccessible. Userfaultfd mode: `base` itself (write-back reads a write-protected page).
    alias: *mut u8,
    len: usize,
    fd: libc::c_int,
    /// The span a write is aligned to: `BLOCK_SIZE`, or the direct-I/O alignment if larger (a
    /// power of two, at most `PAGE_SIZE`).
    write_unit: usize,
    /// The memfd behind both views (signal mode), or -1.
    memfd: libc::c_int,
    /// The userfaultfd (userfaultfd mode), or -1.
    uffd: libc::c_int,
    states: Box<[AtomicU32]>,
    crcs: Box<[AtomicU32]>,
    frames: Box<[AtomicUsize]>,
    hand: AtomicUsize,
    resident: AtomicUsize,
    pages_faulted: AtomicU64,
    blocks_written: AtomicU64,
    pages_written: AtomicU64,
    evictions: AtomicU64,
    writeback_bytes: AtomicU64,
    /// A journal's write-ahead gate, or null: when set, a write-back of changed blocks first
    /// waits there until the journal is durable. Points into the `Arc` the owning
    /// [`PagedRegion`] keeps for its whole life (set once, never cleared).
    gate: AtomicPtr<WriteAheadGate>,
}

/// Writes `msg` to stderr and aborts: the handler cannot report an error to the faulting code.
pub(crate) fn fatal(msg: &str) -> ! {
    // SAFETY: write(2) and abort(3) are async-signal-safe; `msg` is a valid buffer.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
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
unsafe fn pread_exact(fd: libc::c_int, buf: *mut u8, len: usize, off: u64) -> Result<(), i32> {
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

/// The calling thread's `errno` (`EIO` if none is set).
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Switches `fd` (the backing file, opened without it) to `O_DIRECT` if the file allows direct
/// I/O of whole pages, returning the alignment it needs (a power of two, at most `PAGE_SIZE`).
/// The same descriptor is kept, so the file checked at open is the file used. The alignment is what the kernel reports: `BLKSSZGET` for a block
/// device, `statx` `STATX_DIOALIGN` (offset and memory alignment) for a regular file. A first
/// direct read of page 0 must succeed. On failure, says why and leaves `fd` buffered.
fn enable_direct(fd: libc::c_int) -> Result<usize, String> {
    // SAFETY: `st` is plain data filled by the call; fd is open.
    let st = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(format!("fstat: {}", io::Error::last_os_error()));
        }
        st
    };
    let align = match st.st_mode & libc::S_IFMT {
        libc::S_IFBLK => {
            let mut size: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int.
            if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut size) } != 0 {
                return Err(format!("ioctl(BLKSSZGET): {}", io::Error::last_os_error()));
            }
            size as usize
        }
        libc::S_IFREG => {
            // SAFETY: `stx` is plain data filled by the call; an empty path with AT_EMPTY_PATH
            // names `fd` itself.
            let stx = unsafe {
                let mut stx: libc::statx = std::mem::zeroed();
                if libc::statx(
                    fd,
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH,
                    libc::STATX_DIOALIGN,
                    &mut stx,
                ) != 0
                {
                    return Err(format!("statx: {}", io::Error::last_os_error()));
                }
                stx
            };
            let (mem, off) = (stx.stx_dio_mem_align as usize, stx.stx_dio_offset_align as usize);
            if stx.stx_mask & libc::STATX_DIOALIGN == 0 || mem == 0 || off == 0 {
                return Err(
                    "the file system reports no direct-I/O alignment (statx STATX_DIOALIGN: \
                     no direct I/O, e.g. tmpfs, whose O_DIRECT is served from the page cache, or \
                     a kernel older than 6.1)"
                        .to_owned(),
                );
            }
            mem.max(off)
        }
        _ => return Err("not a regular file or block device".to_owned()),
    };
    if !align.is_power_of_two() || align > PAGE_SIZE {
        return Err(format!(
            "direct I/O needs {align}-byte alignment; pages are {PAGE_SIZE} bytes"
        ));
    }
    // SAFETY: fcntl on an open descriptor; F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(format!("fcntl(F_GETFL): {}", io::Error::last_os_error()));
    }
    // SAFETY: as above; F_SETFL takes the new status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) } != 0 {
        return Err(format!(
            "fcntl(F_SETFL, O_DIRECT): {}",
            io::Error::last_os_error()
        ));
    }
    let mut probe = Box::new(PageBuf([0; PAGE_SIZE]));
    // SAFETY: `probe` is a writable, page-aligned page.
    if let Err(e) = unsafe { pread_exact(fd, probe.0.as_mut_ptr(), PAGE_SIZE, 0) } {
        // SAFETY: as above: back to the flags the descriptor had.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
        return Err(format!(
            "a direct read of the first 4 KiB failed: {}",
            io::Error::from_raw_os_error(e)
        ));
    }
    Ok(align)
}

/// The byte spans `[lo, hi)` of a page to write for the blocks marked `dirty`: runs of dirty
/// blocks widened to multiples of `unit` (a power of two from `BLOCK_SIZE` to `PAGE_SIZE`), runs
/// whose widened spans touch or overlap merged. At most one span per block; no allocation.
fn write_spans(dirty: &[bool; BLOCKS_PER_PAGE], unit: usize) -> [Option<(usize, usize)>; BLOCKS_PER_PAGE] {
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
    fn try_evict(&self, f: usize, page: usize, clock: bool, room: StackRoom) -> Result<bool, i32> {
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
    fn persist_page(&self, page: usize) -> Result<(), i32> {
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

/// A range of virtual memory backed page by page by a file or block device.
///
/// Pages are read in on first access (by a SIGSEGV handler or a userfaultfd service thread, see
/// [`FaultMode`]), tracked by CRC32C per 1 KiB block, written back by
/// [`persist`](Self::persist) / [`flush_all`](Self::flush_all) (dirty blocks only) and made
/// durable by [`drain`](Self::drain). At most `resident_limit` pages are resident; a fault beyond
/// that evicts a victim chosen by the clock (written back first). See the crate documentation for
/// the concurrency rules.
#[derive(Debug)]
pub struct PagedRegion {
    shared: NonNull<Shared>,
    /// Signal mode: the handler-table slot.
    slot: Option<usize>,
    /// Userfaultfd mode: the fault-service thread.
    service: Option<uffd::Service>,
    mode: FaultMode,
    /// `Buffered` or `Direct`, as chosen at open.
    io: IoMode,
    /// The direct-I/O alignment (`Direct` only).
    dio_align: Option<usize>,
    path: PathBuf,
    len: usize,
    limit: usize,
    /// The write-ahead gate installed by [`hold_write_back_for`](Self::hold_write_back_for),
    /// kept alive for `Shared::gate`.
    write_ahead: OnceLock<Arc<WriteAheadGate>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("base", &self.base)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

// SAFETY: all state reachable from `Shared` is either immutable after open or atomic; the raw
// pointers name mappings owned by the region for its whole life.
unsafe impl Send for PagedRegion {}
// SAFETY: as above; every `&self` method synchronises through the page state words.
unsafe impl Sync for PagedRegion {}

/// Blocks asynchronous signals on this thread until dropped (an eviction in normal context owns a page
/// that a signal handler on this thread could otherwise fault on and wait for forever).
pub(crate) struct SignalBlock(libc::sigset_t);

impl SignalBlock {
    pub(crate) fn new() -> Self {
        // SAFETY: sigset_t is plain data; the calls get valid pointers.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            // Synchronous signals stay deliverable (blocking them would turn a crash into a
            // silent kill); this code does not touch the application's view of the region.
            for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE] {
                libc::sigdelset(&mut all, sig);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalBlock(old)
        }
    }
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

impl PagedRegion {
    /// Options to open a region with another [`FaultMode`] or [`IoMode`] than the defaults.
    pub fn options() -> PagedOptions {
        PagedOptions::new()
    }

    /// Opens `path` (a file or block device of at least `len` bytes) read-write and maps its first
    /// `len` bytes as a paged region with at most `resident_limit` resident pages.
    ///
    /// `len` must be a non-zero multiple of 4 KiB; `resident_limit` must be at least 2 (an access
    /// may straddle two pages) and is capped at the page count. Forward progress is guaranteed
    /// when it is at least twice the number of threads faulting at once; below that, threads
    /// still progress in practice but may evict each other's pages repeatedly.
    ///
    /// Faults are served in [`FaultMode::Signal`], I/O is [`IoMode::Auto`] (direct when the file
    /// allows it); see [`options`](Self::options) for others.
    pub fn open(path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<Self> {
        PagedOptions::new().open(path, len, resident_limit)
    }

    /// [`open`](Self::open) with the given fault mode ([`IoMode::Auto`]). [`FaultMode::Userfaultfd`]
    /// fails with [`Error::Userfaultfd`] if the kernel has no userfaultfd (`ENOSYS`), the process
    /// may not create one (`EPERM`), or it lacks write-protect support for anonymous memory.
    pub fn open_with_mode(
        path: impl AsRef<Path>,
        len: usize,
        resident_limit: usize,
        mode: FaultMode,
    ) -> Result<Self> {
        PagedOptions::new()
            .fault_mode(mode)
            .open(path, len, resident_limit)
    }

    fn open_impl(path: &Path, len: usize, resident_limit: usize, options: PagedOptions) -> Result<Self> {
        let mode = options.fault_mode;
        // SAFETY: sysconf has no preconditions.
        if unsafe { libc::sysconf(libc::_SC_PAGESIZE) } != PAGE_SIZE as libc::c_long {
            return Err(Error::InvalidArgument("the system page size is not 4 KiB"));
        }
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(Error::InvalidArgument(
                "length must be a non-zero multiple of 4 KiB",
            ));
        }
        let npages = len / PAGE_SIZE;
        // One instruction may touch two pages (an access straddling a page boundary): with a
        // single frame it would evict one to load the other forever.
        if resident_limit < 2 {
            return Err(Error::InvalidArgument(
                "resident limit must be at least two pages",
            ));
        }
        let limit = resident_limit.min(npages);
        let io_err = |op: &'static str, source: io::Error| Error::Io {
            path: path.to_owned(),
            op,
            source,
        };

        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidArgument("path contains a NUL byte"))?;
        // SAFETY: valid C string.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io_err("open", io::Error::last_os_error()));
        }
        let mut guard = Resources {
            fd,
            memfd: -1,
            uffd: -1,
            base: std::ptr::null_mut(),
            alias: std::ptr::null_mut(),
            len,
        };
        // lseek works for block devices too (fstat reports size 0 for them).
        // SAFETY: fd is open.
        let size = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
        if size < 0 {
            return Err(io_err("lseek", io::Error::last_os_error()));
        }
        if (size as u64) < len as u64 {
            return Err(Error::BackingTooSmall {
                path: path.to_owned(),
                actual: size as u64,
                required: len as u64,
            });
        }

        let (io, dio_align) = match options.io_mode {
            IoMode::Buffered => (IoMode::Buffered, None),
            wanted => match enable_direct(fd) {
                Ok(align) => (IoMode::Direct, Some(align)),
                Err(_) if wanted == IoMode::Auto => (IoMode::Buffered, None),
                Err(reason) => {
                    return Err(Error::DirectIoUnsupported {
                        path: path.to_owned(),
                        reason,
                    })
                }
            },
        };
        let fd = guard.fd;

        let addr_err = |source: io::Error| Error::AddressSpace { len, source };
        let uffd_mode = mode == FaultMode::Userfaultfd;
        // The application's range. Userfaultfd mode: read-write, and only pages installed by
        // UFFDIO_COPY are present. Signal mode: a reservation, replaced below by the memfd.
        let prot = if uffd_mode {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: a fresh anonymous mapping.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(addr_err(io::Error::last_os_error()));
        }
        guard.base = base.cast();
        if uffd_mode {
            // 4 KiB pages only (eviction drops single pages), and no copy in a forked child (it
            // would see zero pages where ours are not resident; with DONTFORK it faults).
            // Both are advice: failing them changes nothing about correctness here.
            // SAFETY: our own mapping.
            unsafe {
                libc::madvise(base, len, libc::MADV_NOHUGEPAGE);
                libc::madvise(base, len, libc::MADV_DONTFORK);
            }
            guard.uffd = uffd::open_registered(base as usize, len)?;
            guard.alias = base.cast();
        } else {
            // SAFETY: valid C string literal.
            let memfd = unsafe { libc::memfd_create(c"nvme-backing".as_ptr(), libc::MFD_CLOEXEC) };
            if memfd < 0 {
                return Err(io_err("memfd_create", io::Error::last_os_error()));
            }
            guard.memfd = memfd;
            // SAFETY: memfd is open.
            if unsafe { libc::ftruncate(memfd, len as libc::off_t) } != 0 {
                return Err(io_err("ftruncate(memfd)", io::Error::last_os_error()));
            }
            // Put the memfd under the reservation, still inaccessible.
            // SAFETY: replaces exactly the reservation we own.
            let view = unsafe {
                libc::mmap(
                    base,
                    len,
                    libc::PROT_NONE,
                    libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    memfd,
                    0,
                )
            };
            if view == libc::MAP_FAILED {
                return Err(addr_err(io::Error::last_os_error()));
            }
            // SAFETY: a fresh shared mapping of our memfd.
            let alias = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_NORESERVE,
                    memfd,
                    0,
                )
            };
            if alias == libc::MAP_FAILED {
                return Err(addr_err(io::Error::last_os_error()));
            }
            guard.alias = alias.cast();
        }

        // Choose the CRC32C implementation and prime its CPU-feature detection outside the
        // signal handler.
        checksum::prime();

        let shared = Box::new(Shared {
            base: guard.base,
            alias: guard.alias,
            len,
            fd,
            write_unit: dio_align.map_or(BLOCK_SIZE, |a| a.max(BLOCK_SIZE)),
            memfd: guard.memfd,
            uffd: guard.uffd,
            states: (0..npages).map(|_| AtomicU32::new(ABSENT)).collect(),
            crcs: (0..npages * BLOCKS_PER_PAGE).map(|_| AtomicU32::new(0)).collect(),
            frames: (0..limit).map(|_| AtomicUsize::new(FRAME_EMPTY)).collect(),
            hand: AtomicUsize::new(0),
            resident: AtomicUsize::new(0),
            pages_faulted: AtomicU64::new(0),
            blocks_written: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            writeback_bytes: AtomicU64::new(0),
            gate: AtomicPtr::new(std::ptr::null_mut()),
        });
        let shared = NonNull::from(Box::leak(shared));
        let (slot, service) = if uffd_mode {
            // SAFETY: `shared` lives until `close`, which stops the service first.
            match unsafe { uffd::Service::start(shared.as_ptr(), guard.uffd) } {
                Ok(service) => (None, Some(service)),
                Err(e) => {
                    // SAFETY: the thread was not started, so only we hold the pointer.
                    drop(unsafe { Box::from_raw(shared.as_ptr()) });
                    return Err(e);
                }
            }
        } else {
            match handler::register(shared.as_ptr(), guard.base as usize, len) {
                Ok(slot) => (Some(slot), None),
                Err(e) => {
                    // SAFETY: never registered, so only we hold the pointer.
                    drop(unsafe { Box::from_raw(shared.as_ptr()) });
                    return Err(e);
                }
            }
        };
        std::mem::forget(guard);
        Ok(PagedRegion {
            shared,
            slot,
            service,
            mode,
            io,
            dio_align,
            path: path.to_owned(),
            len,
            limit,
            write_ahead: OnceLock::new(),
        })
    }

    /// Creates (or extends) `path` to at least `len` bytes, then [`open`](Self::open)s it
    /// ([`FaultMode::Signal`], [`IoMode::Auto`]).
    pub fn create(path: impl AsRef<Path>, len: usize, resident_limit: usize) -> Result<Self> {
        PagedOptions::new().create(path, len, resident_limit)
    }

    /// Creates (or extends) `path` to at least `len` bytes, then
    /// [`open_with_mode`](Self::open_with_mode)s it ([`IoMode::Auto`]).
    pub fn create_with_mode(
        path: impl AsRef<Path>,
        len: usize,
        resident_limit: usize,
        mode: FaultMode,
    ) -> Result<Self> {
        PagedOptions::new()
            .fault_mode(mode)
            .create(path, len, resident_limit)
    }

    fn shared(&self) -> &Shared {
        // SAFETY: owned by `self` until drop.
        unsafe { self.shared.as_ref() }
    }

    /// Start of the region. Any access within `len()` bytes is valid (it faults the page in).
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared().base
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false (a region is at least one page); for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How faults are served.
    pub fn fault_mode(&self) -> FaultMode {
        self.mode
    }

    /// How the backing file is read and written: [`IoMode::Direct`] or [`IoMode::Buffered`]
    /// (what [`IoMode::Auto`] chose), never `Auto`.
    pub fn io_mode(&self) -> IoMode {
        self.io
    }

    /// With direct I/O, the alignment the backing file needs for buffer addresses, file offsets
    /// and lengths (the larger of the two the kernel reports; at most 4 KiB). Write-back writes
    /// the changed 1 KiB blocks alone when it is at most 1 KiB, else the aligned spans holding
    /// them. `None` with buffered I/O.
    pub fn direct_io_alignment(&self) -> Option<usize> {
        self.dio_align
    }

    /// The resident-set limit in pages.
    pub fn resident_limit(&self) -> usize {
        self.limit
    }

    /// Pages currently occupying a frame (resident, or being loaded).
    pub fn resident_pages(&self) -> usize {
        self.shared().resident.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> PagedStats {
        let s = self.shared();
        PagedStats {
            pages_faulted: s.pages_faulted.load(Ordering::Relaxed),
            blocks_written: s.blocks_written.load(Ordering::Relaxed),
            pages_written: s.pages_written.load(Ordering::Relaxed),
            evictions: s.evictions.load(Ordering::Relaxed),
            writeback_bytes: s.writeback_bytes.load(Ordering::Relaxed),
        }
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::InvalidArgument("range outside the region")),
        }
    }

    /// Copies `buf.len()` bytes at `offset` out of the region (faulting pages in as needed).
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: in bounds; the handler makes the pages accessible on first touch.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the region at `offset` (not durable until persisted and drained).
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        // SAFETY: in bounds; `&mut self` excludes other safe accessors.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len()) };
        Ok(())
    }

    /// Writes back the dirty 1 KiB blocks of the resident pages overlapping
    /// `[offset, offset + len)` (`pwrite`; durable after [`drain`](Self::drain)). Clean blocks and
    /// non-resident pages are not written.
    pub fn persist(&self, offset: usize, len: usize) -> Result<()> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let first = offset / PAGE_SIZE;
        let last = (offset + len - 1) / PAGE_SIZE;
        for page in first..=last {
            self.shared().persist_page(page).map_err(|e| Error::Io {
                path: self.path.clone(),
                op: "pwrite",
                source: io::Error::from_raw_os_error(e),
            })?;
        }
        Ok(())
    }

    /// [`persist`](Self::persist) of the whole region.
    pub fn flush_all(&self) -> Result<()> {
        self.persist(0, self.len)
    }

    /// Makes everything written back so far durable (`fdatasync` of the backing file).
    pub fn drain(&self) -> Result<()> {
        // SAFETY: fd is open for the region's life.
        if unsafe { libc::fdatasync(self.shared().fd) } != 0 {
            return Err(Error::Io {
                path: self.path.clone(),
                op: "fdatasync",
                source: io::Error::last_os_error(),
            });
        }
        pmem_core::flush::count_fsync();
        Ok(())
    }

    /// Evicts resident pages (writing dirty blocks back first) until at most `target` remain,
    /// ignoring reference bits; returns how many were evicted. Pages being loaded or written
    /// back by other threads are skipped, so fewer may be evicted. Safe to call while other
    /// threads access the region: they fault and reload.
    pub fn evict_to(&self, target: usize) -> Result<usize> {
        let _block = SignalBlock::new();
        let s = self.shared();
        let mut evicted = 0;
        for f in 0..s.frames.len() {
            if s.resident.load(Ordering::Relaxed) <= target {
                break;
            }
            let v = s.frames[f].load(Ordering::Acquire);
            if v == FRAME_EMPTY || v == FRAME_CLAIMED {
                continue;
            }
            match s.try_evict(f, v, false, StackRoom::Ample) {
                Ok(true) => {
                    s.resident.fetch_sub(1, Ordering::Relaxed);
                    s.frames[f].store(FRAME_EMPTY, Ordering::Release);
                    evicted += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        op: "evict (mprotect/pwrite)",
                        source: io::Error::from_raw_os_error(e),
                    })
                }
            }
        }
        Ok(evicted)
    }

    /// Makes every later write-back of changed blocks (eviction, [`persist`](Self::persist),
    /// the write-back at drop) first wait until `gate` says the journal is durable
    /// ([`WriteAheadGate::wait_durable`]); a write-back it refuses fails with `EIO` and writes
    /// nothing (in the fault handler: the process aborts, as for any write-back error).
    /// Clean pages are still dropped without I/O or waiting. Returns `false` if a gate was
    /// installed already (the first one stays).
    pub fn hold_write_back_for(&self, gate: Arc<WriteAheadGate>) -> bool {
        let ptr = Arc::as_ptr(&gate).cast_mut();
        if self.write_ahead.set(gate).is_err() {
            return false;
        }
        self.shared().gate.store(ptr, Ordering::Release);
        true
    }

    /// The write-ahead gate, if one was installed.
    pub fn write_ahead_gate(&self) -> Option<&Arc<WriteAheadGate>> {
        self.write_ahead.get()
    }

    /// Closes the region without writing anything back (as if the process had crashed): data not
    /// yet persisted is lost. Dropping the region writes everything back instead.
    pub fn abandon(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        this.close();
        // SAFETY: `this` is never used again; drop the remaining owned fields.
        unsafe {
            std::ptr::drop_in_place(&mut this.path);
            std::ptr::drop_in_place(&mut this.service);
            std::ptr::drop_in_place(&mut this.write_ahead);
        }
    }

    fn close(&mut self) {
        if let Some(slot) = self.slot {
            handler::unregister(slot);
        }
        if let Some(service) = &mut self.service {
            service.stop();
        }
        // SAFETY: unregistered / service stopped, so no handler uses `shared` any more; we are
        // its only owner.
        let shared = unsafe { Box::from_raw(self.shared.as_ptr()) };
        // Closing the userfaultfd (in `Resources::drop`) unregisters the range and wakes any
        // thread still waiting on it (a caller bug: see the crate documentation).
        drop(Resources {
            fd: shared.fd,
            memfd: shared.memfd,
            uffd: shared.uffd,
            base: shared.base,
            alias: shared.alias,
            len: shared.len,
        });
    }
}

impl Drop for PagedRegion {
    /// Writes back every dirty block and syncs (errors are ignored: call
    /// [`flush_all`](Self::flush_all) and [`drain`](Self::drain) first to see them), then unmaps.
    fn drop(&mut self) {
        let _ = self.flush_all();
        let _ = self.drain();
        self.close();
    }
}

/// Owned descriptors and mappings, released on drop (also on the error paths of `open`).
struct Resources {
    fd: libc::c_int,
    memfd: libc::c_int,
    uffd: libc::c_int,
    base: *mut u8,
    /// The alias mapping; equal to `base` in userfaultfd mode (then unmapped once).
    alias: *mut u8,
    len: usize,
}

impl Drop for Resources {
    fn drop(&mut self) {
        // SAFETY: each resource is owned and released once; null / negative means absent.
        unsafe {
            if !self.alias.is_null() && self.alias != self.base {
                libc::munmap(self.alias.cast(), self.len);
            }
            if !self.base.is_null() {
                libc::munmap(self.base.cast(), self.len);
            }
            // After the unmap: a thread still waiting on a fault (a caller bug) is woken by the
            // close and then finds no mapping (SIGSEGV) rather than a fresh zero page.
            if self.uffd >= 0 {
                libc::close(self.uffd);
            }
            if self.memfd >= 0 {
                libc::close(self.memfd);
            }
            if self.fd >= 0 {
                libc::close(self.fd);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd_bytes(r: &PagedRegion) -> u64 {
        // SAFETY: `st` is plain data; the memfd is open while `r` lives.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            assert_eq!(libc::fstat(r.shared().memfd, &mut st), 0);
            st.st_blocks as u64 * 512
        }
    }

    #[test]
    fn write_spans_cover_the_units_holding_dirty_blocks_merged() {
        for unit in [BLOCK_SIZE, 2 * BLOCK_SIZE, PAGE_SIZE] {
            for mask in 0u32..1 << BLOCKS_PER_PAGE {
                let dirty: [bool; BLOCKS_PER_PAGE] = std::array::from_fn(|b| mask & 1 << b != 0);
                // The model: which units hold a dirty block, as maximal runs of units.
                let per_unit = unit / BLOCK_SIZE;
                let hit: Vec<bool> = (0..PAGE_SIZE / unit)
                    .map(|u| dirty[u * per_unit..(u + 1) * per_unit].iter().any(|&d| d))
                    .collect();
                let mut expected = Vec::new();
                let mut u = 0;
                while u < hit.len() {
                    if hit[u] {
                        let start = u;
                        while u < hit.len() && hit[u] {
                            u += 1;
                        }
                        expected.push((start * unit, u * unit));
                    } else {
                        u += 1;
                    }
                }
                let got: Vec<_> = write_spans(&dirty, unit).into_iter().flatten().collect();
                assert_eq!(got, expected, "unit {unit}, dirty {dirty:?}");
            }
        }
    }

    /// Stack the fault handler uses on an alternate signal stack, above the kernel's signal
    /// frame: a painted 64 KiB alternate stack, faults that load (CRC of four blocks) and evict
    /// dirty pages (CRC again, `pwrite`), then the deepest byte changed. The room the handler
    /// requires before it uses `crc-fast` must cover it.
    #[test]
    fn handler_stack_use_is_small() {
        const ALT: usize = 64 << 10;
        const PAINT: u8 = 0xa5;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let used = std::thread::spawn(move || {
            let r = PagedRegion::create(&path, 64 * PAGE_SIZE, 4).unwrap();
            let mut alt = vec![PAINT; ALT];
            // SAFETY: `alt` outlives its use as the alternate stack (restored below); the
            // structs are plain data.
            let old = unsafe {
                let new = libc::stack_t {
                    ss_sp: alt.as_mut_ptr().cast(),
                    ss_flags: 0,
                    ss_size: ALT,
                };
                let mut old: libc::stack_t = std::mem::zeroed();
                assert_eq!(libc::sigaltstack(&new, &mut old), 0);
                old
            };
            for p in 0..64 {
                // SAFETY: inside the region; every fault runs the handler on `alt`.
                unsafe { r.as_ptr().add(p * PAGE_SIZE).write_volatile(p as u8 + 1) };
            }
            // SAFETY: restores the thread's previous alternate stack before `alt` is freed.
            assert_eq!(unsafe { libc::sigaltstack(&old, std::ptr::null_mut()) }, 0);
            assert!(r.stats().evictions >= 60 && r.stats().blocks_written >= 60);
            ALT - alt.iter().position(|&b| b != PAINT).unwrap()
        })
        .join()
        .unwrap();
        // SAFETY: getauxval has no preconditions; 0 if the kernel does not say.
        let frame = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        eprintln!("handler stack use: {used} bytes in all, kernel signal frame about {frame}");
        // The handler, crc-fast included, fits the room it requires before choosing crc-fast.
        if let Some(room) = checksum::fast_stack_room() {
            eprintln!("room required for crc-fast in the handler: {room} bytes");
            assert!(used.saturating_sub(frame) <= room, "{used} - {frame} > {room}");
        }
    }

    #[test]
    fn eviction_frees_the_memory_of_evicted_pages() {
        let dir = tempfile::tempdir().unwrap();
        let r = PagedRegion::create(dir.path().join("f"), 64 * PAGE_SIZE, 64).unwrap();
        let mut buf = vec![0u8; 64 * PAGE_SIZE];
        r.read_at(0, &mut buf).unwrap();
        // Keeps the copy (optimised builds may drop a copy into a buffer nobody reads).
        std::hint::black_box(&buf);
        assert_eq!(r.resident_pages(), 64);
        assert_eq!(memfd_bytes(&r), 64 * PAGE_SIZE as u64);
        assert_eq!(r.evict_to(4).unwrap(), 60);
        assert_eq!(r.resident_pages(), 4);
        assert_eq!(memfd_bytes(&r), 4 * PAGE_SIZE as u64);
    }
}
